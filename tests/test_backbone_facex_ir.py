"""FaceX-Zoo's Resnet (mode 'ir') tensor for tensor: the study's Epoch_N.pt loads strict, or fails clearly."""

import pytest
import torch

from lrfr_plugins.builtin.backbones.facex_ir import DEPTHS, FaceXIR, FaceXIRParams
from lrfr_plugins.builtin.backbones.iresnet import IResNet50, IResNetParams
from lrfr_plugins.builtin.backbones.mobilefacenet import MobileFaceNet, MobileFaceNetParams
from lrfr_plugins.builtin.backbones.weights import guess_facex
from lrfr_plugins.errors import LrfrError, ParamsError
from lrfr_plugins.params import build_params

#: A test-only depth, registered by the fixture below: IR-50's structure (a MaxPool shortcut at stride 2 and 1, conv
#: shortcuts) at a fraction of its 2-core CPU time. IR-50 itself is checked on the meta device and by one forward.
TINY = 18


@pytest.fixture(scope="module", autouse=True)
def tiny_depth():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(DEPTHS, TINY, (1, 1, 2, 1))
        yield


def facex(**params):
    return FaceXIR(FaceXIRParams(**{"depth": TINY, **params}))


def on_meta(cls, params):
    """Build without allocating or initialising tensors: names and shapes only."""
    with torch.device("meta"):
        return cls(params)


def facex_zoo_keys(blocks, feat_dim=512):
    """Every state-dict key and shape of FaceX-Zoo's Resnet(mode='ir', out_h=7, out_w=7), in order, from its code."""
    keys = {"input_layer.0.weight": (64, 3, 3, 3)}

    def bn(prefix, c):
        keys.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                     f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()})

    bn("input_layer.1", 64)
    keys["input_layer.2.weight"] = (64,)
    bn("output_layer.0", 512)  # BatchNorm2d, Dropout, Flatten, Linear, BatchNorm1d; registered before body
    keys.update({"output_layer.3.weight": (feat_dim, 512 * 49), "output_layer.3.bias": (feat_dim,)})
    bn("output_layer.4", feat_dim)
    unit, cin = 0, 64
    for depth, n in zip((64, 128, 256, 512), blocks):
        for i in range(n):
            p = f"body.{unit}"
            if cin != depth:  # otherwise MaxPool2d(1, stride): no tensors
                keys[f"{p}.shortcut_layer.0.weight"] = (depth, cin, 1, 1)
                bn(f"{p}.shortcut_layer.1", depth)
            bn(f"{p}.res_layer.0", cin)
            keys[f"{p}.res_layer.1.weight"] = (depth, cin, 3, 3)
            keys[f"{p}.res_layer.2.weight"] = (depth,)
            keys[f"{p}.res_layer.3.weight"] = (depth, depth, 3, 3)
            bn(f"{p}.res_layer.4", depth)
            unit, cin = unit + 1, depth
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
def ir50(tiny_depth):
    """Not quite: the tiny depth, calibrated."""
    torch.manual_seed(0)
    return calibrate(facex(embedding_size=8))


@pytest.fixture(scope="module")
def epoch_file(ir50, tmp_path_factory):
    """A FaceX-Zoo training checkpoint: FaceModel's state dict (backbone.* and head.*) under 'state_dict'."""
    path = tmp_path_factory.mktemp("ckpt") / "Epoch_17.pt"
    state = {f"backbone.{k}": v for k, v in ir50.state_dict().items()}
    state["head.weight"] = torch.randn(8, 10)  # e.g. ArcFace's (feat_dim, num_class) weight
    torch.save({"state_dict": state, "epoch": 17, "batch_id": 7724}, path)
    return path


# --- structure (golden, from FaceX-Zoo's definition) -------------------------------------------------------------------

@pytest.mark.parametrize("depth", [50, 100, 152])
def test_state_dict_keys_and_shapes_are_facex_zoos(depth):
    got = [(k, tuple(v.shape)) for k, v in on_meta(FaceXIR, FaceXIRParams(depth=depth)).state_dict().items()]
    assert got == list(facex_zoo_keys(DEPTHS[depth]).items())


def test_ir50_golden_keys_and_parameter_count():
    model = on_meta(FaceXIR, FaceXIRParams())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert not any(k.startswith("body.0.shortcut_layer") for k in shapes)  # MaxPool2d(1, 2): 64 -> 64
    assert shapes["body.3.shortcut_layer.0.weight"] == (128, 64, 1, 1)
    assert shapes["body.21.shortcut_layer.0.weight"] == (512, 256, 1, 1)
    assert shapes["body.20.res_layer.3.weight"] == (256, 256, 3, 3) and "body.24.res_layer.0.weight" not in shapes
    assert "body.5.res_layer.5.weight" not in shapes  # no bn between conv1 and PReLU, no SE
    assert shapes["output_layer.3.weight"] == (512, 25088) and shapes["output_layer.3.bias"] == (512,)
    # stem 7; 24 units of 13 (2 BNs of 5, 2 convs, 1 PReLU), 3 of them +6 for the conv shortcut; tail 12 (2 BNs, fc)
    assert len(shapes) == 7 + 24 * 13 + 3 * 6 + 12 == 349
    # FaceX-Zoo Resnet(50, 0.4, 'ir', 512, 7, 7): 43,574,976 parameters, all trainable (arcface_torch r50: 43,590,848)
    assert sum(p.numel() for p in model.parameters()) == 43_574_976
    assert sum(p.numel() for p in on_meta(FaceXIR, FaceXIRParams(depth=100)).parameters()) == 65_129_792
    assert sum(p.numel() for p in on_meta(FaceXIR, FaceXIRParams(depth=152)).parameters()) == 70_737_600


def test_params_and_dropout():
    model = on_meta(FaceXIR, FaceXIRParams())
    assert model.output_layer[1].p == 0.4 and model.embedding_size == 512
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ParamsError, match="depth: must be one of 50, 100, 152, got 34"):
        build_params(FaceXIRParams, {"depth": 34}, owner="backbone 'facex-ir'")


# --- forward --------------------------------------------------------------------------------------------------------

def test_forward_shape_train_and_eval(ir50):
    for mode in (True, False):
        out = ir50.train(mode)(x_batch())
        assert out.shape == (2, 8) and out.dtype == torch.float32 and torch.isfinite(out).all()
    ir50.eval()
    norms = ir50(x_batch()).detach().norm(dim=1)
    assert not torch.allclose(norms, torch.ones(2))  # raw embeddings: FaceX-Zoo's l2_norm is left to the heads


def test_ir50_forward_eval_is_finite():
    torch.manual_seed(0)
    with torch.no_grad():  # PyTorch's default init, fresh running statistics
        out = FaceXIR(FaceXIRParams(embedding_size=8)).eval()(x_batch(1))
    assert out.shape == (1, 8) and torch.isfinite(out).all() and out.abs().max() < 1e3


# --- weights ----------------------------------------------------------------------------------------------------------

def test_a_facex_zoo_training_checkpoint_loads_and_gives_identical_outputs(ir50, epoch_file):
    loaded = facex(embedding_size=8, weights=epoch_file).eval()
    for k, v in ir50.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with torch.no_grad():
        assert torch.equal(loaded(x_batch()), ir50(x_batch()))


def test_a_plain_state_dict_loads(ir50, tmp_path):
    path = tmp_path / "backbone.pth"
    torch.save({k: v for k, v in ir50.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    with torch.no_grad():
        assert torch.equal(facex(embedding_size=8, weights=path).eval()(x_batch()), ir50(x_batch()))


def test_an_arcface_torch_iresnet50_file_names_it(tmp_path):
    path = tmp_path / "backbone.pth"
    torch.save(on_meta(IResNet50, IResNetParams()).state_dict(), path)  # shapes only
    with pytest.raises(LrfrError) as err:
        facex(weights=path)
    msg = str(err.value)
    assert f"backbone FaceX-Zoo IR-{TINY}: weights file {path} does not match the model." in msg
    assert "missing keys: input_layer.0.weight" in msg
    assert "an arcface_torch iresnet50 checkpoint (blocks per stage [3, 4, 14, 3]): use backbone 'iresnet50'" in msg


def test_other_depths_and_mobilefacenets_are_named(tmp_path):
    path = tmp_path / "mbf.pth"
    torch.save(on_meta(MobileFaceNet, MobileFaceNetParams()).state_dict(), path)
    with pytest.raises(LrfrError, match=r"(?s)mbf\.pth does not match.*MobileFaceNet checkpoint \(scale 2"):
        facex(weights=path)
    ir100 = on_meta(FaceXIR, FaceXIRParams(depth=100)).state_dict()
    assert guess_facex(ir100) == "depth 100, mode ir"
    path = tmp_path / "Epoch_3.pt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in ir100.items()}, "epoch": 3}, path)
    with pytest.raises(LrfrError, match=r"(?s)IR-18: weights file .*Epoch_3\.pt does not match.*"
                                        r"FaceX-Zoo Resnet checkpoint \(depth 100, mode ir\).*with depth: 100"):
        facex(weights=path)


def test_weights_with_another_embedding_size_says_which(epoch_file):
    with pytest.raises(LrfrError, match=r"(?s)output_layer\.3\.weight \(8, 25088\) \(model: \(16, 25088\)\)"
                                        r".*set embedding_size: 8"):
        facex(embedding_size=16, weights=epoch_file)


def test_missing_weight_file_is_named(tmp_path):
    with pytest.raises(LrfrError, match="FaceX-Zoo IR-18: weights file .*Epoch_9.pt does not exist"):
        facex(weights=tmp_path / "Epoch_9.pt")


# --- export -----------------------------------------------------------------------------------------------------------

def test_onnx_export_matches_onnxruntime(ir50, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from lrfr_plugins.export.onnx import export_onnx

    report = export_onnx(ir50, tmp_path / "model.onnx")
    with torch.no_grad():
        scale = float(ir50(x_batch()).abs().max())
    assert report["outputs"] == 1
    assert report["parity_max_abs_diff"] < 1e-4 * max(scale, 1.0)
