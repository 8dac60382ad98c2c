"""MobileFaceNet is arcface_torch's mbf / mbf_large tensor for tensor: backbone.pth loads strict or fails clearly."""

import pytest
import torch

from lrfr_plugins.builtin.backbones.iresnet import IResNet18, IResNetParams
from lrfr_plugins.builtin.backbones.mobilefacenet import (
    MobileFaceNet,
    MobileFaceNetLarge,
    MobileFaceNetLargeParams,
    MobileFaceNetParams,
)
from lrfr_plugins.errors import LrfrError, ParamsError
from lrfr_plugins.params import build_params


def mbf(**params):
    return MobileFaceNet(MobileFaceNetParams(**params))


def on_meta(cls, params):
    """Build without allocating or initialising tensors: names and shapes only."""
    with torch.device("meta"):
        return cls(params)


def arcface_torch_keys(scale=2, blocks=(1, 4, 6, 2), embedding_size=512):
    """Every state-dict key and shape of arcface_torch's MobileFaceNet, in order, written out from its definition."""
    keys = {}

    def bn(prefix, c):
        keys.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                     f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()})

    def conv_block(prefix, cin, cout, k=1, groups=1):  # Conv2d, BatchNorm2d, PReLU under .layers
        keys[f"{prefix}.layers.0.weight"] = (cout, cin // groups, k, k)
        bn(f"{prefix}.layers.1", cout)
        keys[f"{prefix}.layers.2.weight"] = (cout,)

    def linear_block(prefix, cin, cout, k=1, groups=1):  # Conv2d, BatchNorm2d
        keys[f"{prefix}.layers.0.weight"] = (cout, cin // groups, k, k)
        bn(f"{prefix}.layers.1", cout)

    def depthwise(prefix, cin, cout, groups):
        conv_block(f"{prefix}.layers.0", cin, groups)
        conv_block(f"{prefix}.layers.1", groups, groups, 3, groups)
        linear_block(f"{prefix}.layers.2", groups, cout)

    def residual(prefix, c, n, groups):
        for i in range(n):
            depthwise(f"{prefix}.layers.{i}", c, c, groups)

    c1, c2 = 64 * scale, 128 * scale
    conv_block("layers.0", 3, c1, 3)
    if blocks[0] == 1:
        conv_block("layers.1", c1, c1, 3, 64)
    else:
        residual("layers.1", c1, blocks[0], 128)
    depthwise("layers.2", c1, c1, 128)
    residual("layers.3", c1, blocks[1], 128)
    depthwise("layers.4", c1, c2, 256)
    residual("layers.5", c2, blocks[2], 256)
    depthwise("layers.6", c2, c2, 512)
    residual("layers.7", c2, blocks[3], 256)
    conv_block("conv_sep", c2, 512)
    linear_block("features.layers.0", 512, 512, 7, 512)
    keys["features.layers.2.weight"] = (embedding_size, 512)
    bn("features.layers.3", embedding_size)
    return keys


def calibrate(model, seed=0):
    """Make it look trained: random BN affines, running stats of one batch."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    with torch.no_grad():
        model.train()(torch.rand(4, 3, 112, 112) * 2 - 1)
    return model.eval()


def x_batch(n=2, seed=1):
    return torch.rand(n, 3, 112, 112, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return calibrate(mbf(embedding_size=8))


@pytest.fixture(scope="module")
def small_file(small, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "backbone.pth"
    torch.save(small.state_dict(), path)
    return path


# --- structure (golden, from arcface_torch's definition) ------------------------------------------------------------

@pytest.mark.parametrize("cls, params, ref", [
    (MobileFaceNet, MobileFaceNetParams(), {}),
    (MobileFaceNetLarge, MobileFaceNetLargeParams(), {"scale": 4, "blocks": (2, 8, 12, 4)}),
    (MobileFaceNet, MobileFaceNetParams(embedding_size=128, scale=1, blocks=[3, 1, 2, 1]),
     {"scale": 1, "blocks": (3, 1, 2, 1), "embedding_size": 128}),
])
def test_state_dict_keys_and_shapes_are_arcface_torchs(cls, params, ref):
    got = [(k, tuple(v.shape)) for k, v in on_meta(cls, params).state_dict().items()]
    assert got == list(arcface_torch_keys(**ref).items())


def test_mbf_golden_keys_and_parameter_count():
    model = on_meta(MobileFaceNet, MobileFaceNetParams())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["layers.0.layers.0.weight"] == (128, 3, 3, 3)
    assert shapes["layers.1.layers.0.weight"] == (128, 2, 3, 3)  # 64 groups, not 64*scale
    assert shapes["layers.4.layers.0.layers.0.weight"] == (256, 128, 1, 1)
    assert shapes["layers.7.layers.1.layers.1.layers.0.weight"] == (256, 1, 3, 3)
    assert "layers.7.layers.2.layers.0.layers.0.weight" not in shapes
    assert shapes["conv_sep.layers.0.weight"] == (512, 256, 1, 1)
    assert shapes["features.layers.0.layers.0.weight"] == (512, 1, 7, 7)
    assert shapes["features.layers.2.weight"] == (512, 512) and "features.layers.2.bias" not in shapes
    # arcface_torch's mbf (get_mbf(False, 512)): 333 state-dict entries, 2,059,520 parameters, all trainable
    assert len(shapes) == 333
    assert sum(p.numel() for p in model.parameters()) == 2_059_520
    assert all(p.requires_grad for p in model.parameters())


def test_mbf_large_parameter_count():
    model = on_meta(MobileFaceNetLarge, MobileFaceNetLargeParams())
    assert model.params.scale == 4 and model.params.blocks == [2, 8, 12, 4]
    assert len(model.state_dict()) == 606
    assert sum(p.numel() for p in model.parameters()) == 6_314_880


def test_eps_and_init():
    model = mbf(embedding_size=16)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.eps == 1e-5 for m in norms)
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any() for m in norms)
    conv = model.conv_sep.layers[0].weight  # kaiming_normal_, fan_out, relu: std sqrt(2 / 512)
    assert 0.8 < float(conv.detach().std()) / (2 / 512) ** 0.5 < 1.2
    assert model.embedding_size == 16


def test_blocks_must_be_four_positive_counts():
    with pytest.raises(ParamsError, match=r"blocks must be 4 counts >= 1.*got \[1, 4, 6\]"):
        build_params(MobileFaceNetParams, {"blocks": [1, 4, 6]}, owner="backbone 'mobilefacenet'")
    assert build_params(MobileFaceNetParams, {"blocks": [2, 2, 2, 2]}, owner="x").blocks == [2, 2, 2, 2]


# --- forward --------------------------------------------------------------------------------------------------------

def test_forward_shape_train_and_eval(small):
    for mode in (True, False):
        out = small.train(mode)(x_batch())
        assert out.shape == (2, 8) and out.dtype == torch.float32 and torch.isfinite(out).all()
    small.eval()
    torch.manual_seed(0)
    with torch.no_grad():  # untrained, fresh running statistics: still finite; a Residual at layers.1 (blocks[0] > 1)
        out = mbf(embedding_size=8, scale=1, blocks=[2, 1, 1, 1]).eval()(x_batch(1))
    assert out.shape == (1, 8) and torch.isfinite(out).all()


def test_fp16_autocasts_layers_and_keeps_the_head_float32(small):
    half = mbf(embedding_size=8, fp16=True).eval()
    half.load_state_dict(small.state_dict())
    seen = {}
    half.conv_sep.register_forward_hook(lambda m, inp, out: seen.update(inp=inp[0].dtype, out=out.dtype))
    half.layers[7].register_forward_hook(lambda m, inp, out: seen.update(body=out.dtype))
    with torch.no_grad():
        got, want = half(x_batch()), small(x_batch())
    assert seen == {"body": torch.bfloat16, "inp": torch.float32, "out": torch.float32}  # CPU autocasts to bf16
    assert got.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(got, want).min() > 0.98


# --- weights ----------------------------------------------------------------------------------------------------------

def test_weights_round_trip_gives_identical_outputs(small, small_file):
    loaded = mbf(embedding_size=8, weights=small_file).eval()
    for k, v in small.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with torch.no_grad():
        assert torch.equal(loaded(x_batch()), small(x_batch()))


def test_weights_accepts_a_wrapped_ddp_checkpoint(small, tmp_path):
    path = tmp_path / "checkpoint_gpu_0.pt"
    state = {f"module.{k}": v for k, v in small.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"epoch": 3, "state_dict_backbone": state}, path)
    with torch.no_grad():
        assert torch.equal(mbf(embedding_size=8, weights=path).eval()(x_batch()), small(x_batch()))


def test_weights_of_mbf_large_name_its_scale_and_blocks(tmp_path):
    path = tmp_path / "mbf_large.pth"
    torch.save(on_meta(MobileFaceNetLarge, MobileFaceNetLargeParams()).state_dict(), path)  # shapes only
    with pytest.raises(LrfrError) as err:
        mbf(weights=path)
    msg = str(err.value)
    assert f"backbone 'mobilefacenet': weights file {path} does not match" in msg
    assert "shape mismatches: layers.0.layers.0.weight (256, 3, 3, 3) (model: (128, 3, 3, 3))" in msg
    assert ("an arcface_torch MobileFaceNet checkpoint (scale 4, blocks [2, 8, 12, 4]): use backbone 'mobilefacenet' "
            "with scale: 4 and blocks: [2, 8, 12, 4]") in msg


def test_weights_of_an_iresnet_name_it(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(on_meta(IResNet18, IResNetParams()).state_dict(), path)
    with pytest.raises(LrfrError, match=r"(?s)r18\.pth does not match.*missing keys: layers\.0\.layers\.0\.weight.*"
                                        r"an arcface_torch iresnet18 checkpoint \(blocks per stage \[2, 2, 2, 2\]\): "
                                        r"use backbone 'iresnet18'"):
        mbf(weights=path)


def test_weights_with_another_embedding_size_says_which(small_file):
    with pytest.raises(LrfrError, match=r"(?s)features\.layers\.2\.weight \(8, 512\) \(model: \(16, 512\)\)"
                                        r".*scale 2, blocks \[1, 4, 6, 2\].*set embedding_size: 8"):
        mbf(embedding_size=16, weights=small_file)


def test_missing_weight_file_is_named(tmp_path):
    with pytest.raises(LrfrError, match="backbone 'mobilefacenet-large': weights file .*nope.pth does not exist"):
        MobileFaceNetLarge(MobileFaceNetLargeParams(weights=tmp_path / "nope.pth"))


# --- export -----------------------------------------------------------------------------------------------------------

def test_onnx_export_matches_onnxruntime(small, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from lrfr_plugins.export.onnx import export_onnx

    report = export_onnx(small, tmp_path / "model.onnx")
    with torch.no_grad():
        scale = float(small(x_batch()).abs().max())
    assert report["outputs"] == 1
    assert report["parity_max_abs_diff"] < 1e-4 * max(scale, 1.0)
