"""The iresnets are arcface_torch's IResNet tensor for tensor: its backbone.pth files load strict, or fail clearly."""

import pathlib

import pytest
import torch

from lrfr_plugins.builtin.backbones.iresnet import (
    ARCHS,
    IResNet18,
    IResNet34,
    IResNet50,
    IResNet100,
    IResNet200,
    IResNetParams,
)
from lrfr_plugins.errors import LrfrError

CLASSES = {"iresnet18": IResNet18, "iresnet34": IResNet34, "iresnet50": IResNet50, "iresnet100": IResNet100,
           "iresnet200": IResNet200}


def build(cls, **params):
    return cls(IResNetParams(**params))


def on_meta(cls, **params):
    """Build without allocating or initialising tensors: names and shapes only."""
    with torch.device("meta"):
        return build(cls, **params)


def arcface_torch_keys(blocks, embedding_size=512):
    """Every state-dict key and shape of arcface_torch's IResNet, in order, written out from its definition."""
    keys = {"conv1.weight": (64, 3, 3, 3)}

    def bn(prefix, c):
        keys.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                     f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()})

    bn("bn1", 64)
    keys["prelu.weight"] = (64,)
    cin = 64
    for stage, (width, n) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        for b in range(n):
            p = f"layer{stage}.{b}"
            bn(f"{p}.bn1", cin)
            keys[f"{p}.conv1.weight"] = (width, cin, 3, 3)
            bn(f"{p}.bn2", width)
            keys[f"{p}.prelu.weight"] = (width,)
            keys[f"{p}.conv2.weight"] = (width, width, 3, 3)
            bn(f"{p}.bn3", width)
            if b == 0:  # stride 2 in every stage's first block, so all four have a downsample
                keys[f"{p}.downsample.0.weight"] = (width, cin, 1, 1)
                bn(f"{p}.downsample.1", width)
            cin = width
    bn("bn2", 512)
    keys.update({"fc.weight": (embedding_size, 512 * 49), "fc.bias": (embedding_size,)})
    bn("features", embedding_size)
    return keys


def calibrate(model, seed=0):
    """Make it look trained: random BN affines (untrained blocks are the identity), running stats of one batch."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
            if m is not model.features:
                with torch.no_grad():
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
    with torch.no_grad():
        model.train()(torch.rand(4, 3, 112, 112) * 2 - 1)
    return model.eval()


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    return calibrate(build(IResNet18, embedding_size=8))


@pytest.fixture(scope="module")
def r18_file(r18, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "backbone.pth"
    torch.save(r18.state_dict(), path)
    return path


def x_batch(n=2, seed=1):
    return torch.rand(n, 3, 112, 112, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- structure (golden, from arcface_torch's definition) ------------------------------------------------------------

@pytest.mark.parametrize("name", list(CLASSES))
def test_state_dict_keys_and_shapes_are_arcface_torchs(name):
    model = on_meta(CLASSES[name])
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == list(arcface_torch_keys(ARCHS[name]).items())


def test_iresnet50_golden_keys_and_parameter_count():
    model = on_meta(IResNet50)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["layer3.13.conv2.weight"] == (256, 256, 3, 3)
    assert "layer3.14.conv1.weight" not in shapes
    assert shapes["layer1.0.downsample.0.weight"] == (64, 64, 1, 1)
    assert shapes["layer4.0.downsample.0.weight"] == (512, 256, 1, 1)
    assert shapes["fc.weight"] == (512, 25088) and shapes["features.weight"] == (512,)
    # stem 7 keys; 24 blocks of 18 (3 BNs of 5, 2 convs, 1 PReLU), 4 of them +6 for downsample; tail 12 (2 BNs, fc)
    assert len(shapes) == 7 + 24 * 18 + 4 * 6 + 12 == 475
    # arcface_torch's r50 with 512-d embeddings: 43,590,848 parameters (43.6M), 512 of them frozen (features.weight)
    assert sum(p.numel() for p in model.parameters()) == 43_590_848
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 43_590_848 - 512


def test_eps_frozen_features_and_init():
    model = build(IResNet18, embedding_size=16, dropout=0.2)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.eps == 1e-5 for m in norms)
    assert not model.features.weight.requires_grad and torch.equal(model.features.weight, torch.ones(16))
    assert model.dropout.p == 0.2 and model.embedding_size == 16
    assert 0.08 < float(model.layer2[1].conv1.weight.detach().std()) < 0.12  # N(0, 0.1) like theirs
    assert all(not b.bn3.weight.any() for b in model.modules() if hasattr(b, "bn3"))  # untrained block = identity


def test_an_untrained_model_is_finite_in_eval_mode():
    torch.manual_seed(0)
    with torch.no_grad():
        out = build(IResNet50, embedding_size=8).eval()(x_batch(1))
    assert torch.isfinite(out).all() and out.abs().max() < 1e4


# --- forward --------------------------------------------------------------------------------------------------------

def test_forward_shape_train_and_eval(r18):
    for mode in (True, False):
        out = r18.train(mode)(x_batch())
        assert out.shape == (2, 8) and out.dtype == torch.float32 and torch.isfinite(out).all()
    r18.eval()


def test_fp16_autocasts_the_body_and_keeps_fc_float32(r18):
    half = build(IResNet18, embedding_size=8, fp16=True).eval()
    half.load_state_dict(r18.state_dict())
    seen = {}
    half.fc.register_forward_hook(lambda m, inp, out: seen.update(inp=inp[0].dtype, out=out.dtype))
    half.layer4.register_forward_hook(lambda m, inp, out: seen.update(body=out.dtype))
    with torch.no_grad():
        got, want = half(x_batch()), r18(x_batch())
    assert seen == {"body": torch.bfloat16, "inp": torch.float32, "out": torch.float32}  # CPU autocasts to bf16
    assert got.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(got, want).min() > 0.98


# --- weights ----------------------------------------------------------------------------------------------------------

def test_weights_round_trip_gives_identical_outputs(r18, r18_file):
    loaded = build(IResNet18, embedding_size=8, weights=r18_file).eval()
    for k, v in r18.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with torch.no_grad():
        assert torch.equal(loaded(x_batch()), r18(x_batch()))
    assert not loaded.features.weight.requires_grad


def test_weights_accepts_a_wrapped_ddp_checkpoint(r18, tmp_path):
    path = tmp_path / "checkpoint_gpu_0.pt"
    state = {f"module.{k}": v for k, v in r18.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"epoch": 3, "global_step": 10, "state_dict_backbone": state}, path)
    loaded = build(IResNet18, embedding_size=8, weights=path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x_batch()), r18(x_batch()))


def test_weights_from_another_depth_names_the_architecture(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(build(IResNet34, embedding_size=8).state_dict(), path)
    with pytest.raises(LrfrError) as err:
        build(IResNet18, embedding_size=8, weights=path)
    msg = str(err.value)
    assert str(path) in msg and "unexpected keys: layer1.2." in msg
    assert "seems to be an arcface_torch iresnet34 checkpoint (blocks per stage [3, 4, 6, 3]): use backbone 'iresnet34'" in msg


def test_weights_with_another_embedding_size_says_which(r18_file):
    with pytest.raises(LrfrError, match=r"(?s)fc\.weight \(8, 25088\) \(model: \(16, 25088\)\).*embedding_size: 8"):
        build(IResNet18, embedding_size=16, weights=r18_file)


def test_missing_and_garbage_weight_files_are_named(tmp_path):
    with pytest.raises(LrfrError, match="nope.pth does not exist"):
        build(IResNet18, embedding_size=8, weights=tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(LrfrError, match="cannot read weights file .*garbage.pth"):
        build(IResNet18, embedding_size=8, weights=garbage)
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(LrfrError, match="tensor.pth holds a Tensor, not a state dict"):
        build(IResNet18, embedding_size=8, weights=tensor)


class Payload:
    """Pickles as a call that would create a file: weights_only loading must never make it."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def test_a_pickled_object_is_refused_without_running_it(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": Payload(marker)}, path)
    with pytest.raises(LrfrError, match=r"(?s)cannot read weights file .*evil\.pth: it holds pickled objects other"):
        build(IResNet18, embedding_size=8, weights=path)
    assert not marker.exists()


# --- registry and export ----------------------------------------------------------------------------------------------

def test_registered_under_arcface_torch_names(registry, r18_file):
    assert set(CLASSES) <= set(registry.names("backbone"))
    for name, cls in CLASSES.items():
        assert registry.get("backbone", name).cls is cls
    model = registry.create("backbone", "iresnet18", embedding_size=8, weights=str(r18_file))
    assert isinstance(model, IResNet18) and model.params.weights == r18_file


def test_onnx_export_matches_onnxruntime(r18, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from lrfr_plugins.export.onnx import export_onnx

    report = export_onnx(r18, tmp_path / "model.onnx")
    with torch.no_grad():
        scale = float(r18(x_batch()).abs().max())
    assert report["outputs"] == 1
    assert report["parity_max_abs_diff"] < 1e-4 * max(scale, 1.0)
