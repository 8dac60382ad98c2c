"""An ONNX recognizer imported as a backbone computes what onnxruntime computes, trains, and exports back.

Every model here is generated: our own exports (iresnet18, mobilefacenet, tiny) and small graphs written with
onnx.helper in the shapes real files have (in-graph normalisation, quantised weights, mxnet-style inputs).
"""

import os

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from lrfr_plugins.builtin.backbones.iresnet_import import identity_variance
from lrfr_plugins.errors import LrfrError
from lrfr_plugins.export.onnx import export_onnx
from lrfr_plugins.onnx_model import to_torch
from lrfr_plugins.onnx_model.feeding import load_onnx
from lrfr_plugins.ops.preprocess import to_network_input

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(0)


def faces(n=3, seed=1):
    """Network input in [-1, 1] (the project's convention)."""
    return torch.rand(n, 3, 112, 112, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def run_ort(path, feed):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(feed, dtype=np.float32)})[0]


def rel_diff(a, b):
    a, b = np.asarray(a, np.float64).reshape(len(a), -1), np.asarray(b, np.float64).reshape(len(b), -1)
    return float(np.abs(a - b).max() / np.abs(b).max())


def with_bn_statistics(model, seed=0):
    """Non-trivial BatchNorm statistics and affines, as after training (fresh ones make blocks identities)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                if m.weight.requires_grad:
                    m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def builtin_registry():
    """The built-in plugins only (module-scoped fixtures run before conftest's per-test isolation)."""
    from lrfr_plugins.manager import get_plugin_manager
    from lrfr_plugins.registry import Registry

    return Registry.from_manager(get_plugin_manager(entry_points=False))


def tiny_onnx(path):
    """A small exported tiny backbone (16-d) and the module: for any test that needs an ONNX recognizer file."""
    torch.manual_seed(0)
    model = with_bn_statistics(builtin_registry().create("backbone", "tiny", embedding_size=16))
    export_onnx(model, path, check_parity=False)
    return path, model


# --- graphs written with onnx.helper -----------------------------------------------------------------------------

def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def weights(*shape, scale=0.1):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def save(path, nodes, inits, *, opset=13, batch="N", out=16, inits_as_inputs=False):
    inputs = [helper.make_tensor_value_info("data", TensorProto.FLOAT, [batch, 3, 112, 112])]
    if inits_as_inputs:  # old mxnet exports list every weight as a graph input too
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("fc1", TensorProto.FLOAT,
                                                                                 [batch, out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 21 else 10
    onnx.save(model, str(path))
    return path


def bn_inits(prefix, c):
    return [init(f"{prefix}_gamma", RNG.uniform(0.5, 1.5, c).astype(np.float32)),
            init(f"{prefix}_beta", RNG.uniform(-0.2, 0.2, c).astype(np.float32)),
            init(f"{prefix}_mean", RNG.uniform(-0.2, 0.2, c).astype(np.float32)),
            init(f"{prefix}_var", RNG.uniform(0.5, 2.0, c).astype(np.float32))]


def bn(prefix, x, y):
    return helper.make_node("BatchNormalization", [x, *(f"{prefix}_{k}" for k in ("gamma", "beta", "mean", "var"))],
                            [y], name=prefix, epsilon=2e-5)


def normalising_model(path):
    """SFace-like: the graph normalises raw pixels itself (Sub 127.5, Mul 1/128), then Conv/BN/PRelu/Gemm."""
    nodes = [helper.make_node("Sub", ["data", "mean"], ["centred"], name="minus"),
             helper.make_node("Mul", ["centred", "scale"], ["x"], name="times"),
             helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", strides=[4, 4], pads=[1, 1, 1, 1],
                              kernel_shape=[3, 3]),
             bn("bn1", "c1", "n1"),
             helper.make_node("PRelu", ["n1", "slope"], ["p1"], name="relu1"),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], name="conv2", strides=[4, 4], pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["c2"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["fc1"], name="fc", transB=1)]
    inits = [init("mean", np.float32(127.5)), init("scale", np.float32(1 / 128)), init("w1", weights(8, 3, 3, 3)),
             init("b1", weights(8)), *bn_inits("bn1", 8),
             init("slope", RNG.uniform(0, 0.3, (8, 1, 1)).astype(np.float32)),
             init("w2", weights(8, 8, 3, 3)), init("fc_w", weights(16, 8 * 49)), init("fc_b", weights(16))]
    return save(path, nodes, inits)


def quantised(array, axis=None, block=None):
    """int8 values, scales and zero points of ``array``: per tensor, per ``axis``, or in blocks along ``axis``."""
    if axis is None:
        scale = np.float32(np.abs(array).max() / 100)
    elif block is None:
        scale = (np.abs(np.moveaxis(array, axis, 0)).reshape(array.shape[axis], -1).max(1) / 100).astype(np.float32)
    else:
        blocks = np.split(array, range(block, array.shape[axis], block), axis=axis)
        scale = np.concatenate([np.abs(b).max(axis=axis, keepdims=True) for b in blocks], axis=axis) / 100
        scale = scale.astype(np.float32)
    zero = np.zeros(np.shape(scale), np.int8) + np.int8(3)
    full = scale if block is None else np.repeat(scale, block, axis=axis).take(range(array.shape[axis]), axis=axis)
    shaped = full if axis is None or block is not None else full.reshape([-1 if i == axis else 1
                                                                          for i in range(array.ndim)])
    q = np.clip(np.round(array / shaped) + 3, -128, 127).astype(np.int8)
    return q, scale, zero


def quantised_model(path, blocked=False):
    """Quantised weights behind DequantizeLinear (per axis, per tensor; or blocked, opset 21), a QDQ-quantised input.

    The QDQ pair sits on the input, which both runtimes see bit for bit: deeper in a network, float rounding of the
    layers before it (1e-7) moves a few values across a rounding boundary, a whole quantisation step apart."""
    w1 = weights(8, 3, 3, 3)
    q1, s1, z1 = quantised(w1, axis=1, block=2) if blocked else quantised(w1, axis=0)
    q2, s2, z2 = quantised(weights(8, 8, 3, 3))
    attrs = {"axis": 1, "block_size": 2} if blocked else {"axis": 0}
    nodes = [helper.make_node("QuantizeLinear", ["data", "act_s", "act_z"], ["data_q"], name="act_q"),
             helper.make_node("DequantizeLinear", ["data_q", "act_s", "act_z"], ["data_dq"], name="act_dq"),
             helper.make_node("DequantizeLinear", ["w1_q", "w1_s", "w1_z"], ["w1"], name="w1_dq", **attrs),
             helper.make_node("Conv", ["data_dq", "w1", "b1"], ["c1"], name="conv1", strides=[4, 4],
                              pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["c1", "slope"], ["p1"], name="relu1"),
             helper.make_node("DequantizeLinear", ["w2_q", "w2_s", "w2_z"], ["w2"], name="w2_dq"),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], name="conv2", strides=[4, 4], pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["c2"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["fc1"], transB=1)]
    inits = [init("w1_q", q1), init("w1_s", s1), init("w1_z", z1), init("b1", weights(8)),
             init("slope", RNG.uniform(0, 0.3, (1, 8, 1, 1)).astype(np.float32)),
             init("act_s", np.float32(0.01)), init("act_z", np.uint8(128)),
             init("w2_q", q2), init("w2_s", s2), init("w2_z", z2), init("fc_w", weights(16, 8 * 49)),
             init("fc_b", weights(16))]
    return save(path, nodes, inits, opset=21 if blocked else 13), (q1, s1, z1)


def mxnet_style_model(path):
    """Weights listed as graph inputs, nodes out of order, a fixed batch of 1 baked into a Reshape [1, -1]."""
    nodes = [helper.make_node("Conv", ["data", "conv0_weight"], ["conv0"], name="conv0", strides=[4, 4],
                              pads=[1, 1, 1, 1]),
             bn("bn0", "conv0", "bn0_out"),
             helper.make_node("LeakyRelu", ["bn0_out"], ["relu0"], name="relu0", alpha=0.1),
             helper.make_node("Dropout", ["relu0"], ["drop0"], name="dropout0"),
             helper.make_node("Conv", ["drop0", "conv1_weight", "conv1_bias"], ["conv1"], name="conv1",
                              strides=[4, 4], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["conv1", "reshape0_shape"], ["flat"], name="reshape0"),
             helper.make_node("Gemm", ["flat", "fc1_weight", "fc1_bias"], ["fc1_pre"], name="fc1", transB=1),
             helper.make_node("Identity", ["fc1_pre"], ["fc1"], name="identity0")]
    inits = [init("conv0_weight", weights(8, 3, 3, 3)), *bn_inits("bn0", 8), init("conv1_weight", weights(8, 8, 3, 3)),
             init("conv1_bias", weights(8)), init("reshape0_shape", np.array([1, -1], np.int64)),
             init("fc1_weight", weights(16, 8 * 49)), init("fc1_bias", weights(16))]
    return save(path, nodes[::-1], inits, opset=9, batch=1, inits_as_inputs=True)


def kitchen_sink_model(path):
    """Most converted ops in one graph: padding modes, pools, shape arithmetic, slicing, reductions, Gemm options."""
    n = helper.make_node
    nodes = [
        n("Conv", ["data", "w1"], ["a"], auto_pad="SAME_UPPER", strides=[2, 2], kernel_shape=[3, 3]),
        n("MaxPool", ["a"], ["b"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]),
        n("AveragePool", ["b"], ["c"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 0, 0]),
        n("Pad", ["c", "pads", "pad_value"], ["d"]),
        n("Conv", ["d", "w2", "b2"], ["e0"], group=2, dilations=[2, 2], pads=[2, 2, 2, 2]),
        bn("bn", "e0", "e"),
        n("PRelu", ["e", "slope"], ["e1"]),
        n("LeakyRelu", ["e1"], ["f1"], alpha=0.2),
        n("Sigmoid", ["e1"], ["f2"]), n("Tanh", ["e1"], ["f3"]), n("Mul", ["f2", "f3"], ["f4"]),
        n("Add", ["f1", "f4"], ["g"]), n("Div", ["g", "two"], ["g2"]), n("Sub", ["g", "g2"], ["h0"]),
        n("Clip", ["h0", "lo", "hi"], ["h"]),
        n("Transpose", ["h"], ["i"], perm=[0, 1, 3, 2]),
        n("Slice", ["i", "starts", "ends", "axes"], ["j"]),
        n("Slice", ["j", "rev_start", "rev_end", "rev_axis", "rev_step"], ["j2"]),  # channels reversed
        n("GlobalAveragePool", ["j"], ["k"]), n("ReduceMean", ["j"], ["m"], axes=[2, 3], keepdims=1),
        n("Mean", ["k", "m"], ["km"]), n("Sum", ["km", "k", "m"], ["ksum"]),
        n("Squeeze", ["ksum", "squeeze_axes"], ["pooled"]),
        n("Shape", ["j2"], ["shape"]), n("Gather", ["shape", "zero"], ["batch"], axis=0),
        n("Unsqueeze", ["batch", "unsqueeze_axes"], ["batch1"]),
        n("Concat", ["batch1", "minus_one"], ["target"], axis=0),
        n("Reshape", ["j2", "target"], ["flat"]),
        n("Gemm", ["flat", "fc_w", "fc_b"], ["y1"], transB=1, alpha=0.5, beta=2.0),
        n("MatMul", ["pooled", "proj"], ["y2"]),
        n("Add", ["y1", "y2"], ["y3"]), n("Cast", ["y3"], ["y4"], to=TensorProto.FLOAT),
        n("Identity", ["y4"], ["fc1"]),
    ]
    inits = [init("w1", weights(8, 3, 3, 3)), init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
             init("pad_value", np.float32(0.5)), init("w2", weights(8, 4, 3, 3, scale=0.3)), init("b2", weights(8)),
             *bn_inits("bn", 8), init("slope", RNG.uniform(0, 0.3, (1, 8, 1, 1)).astype(np.float32)),
             init("two", np.float32(2.0)), init("lo", np.float32(-1.0)), init("hi", np.float32(1.0)),
             init("starts", np.array([1, 0], np.int64)), init("ends", np.array([15, 14], np.int64)),
             init("axes", np.array([2, 3], np.int64)), init("rev_start", np.array([-1], np.int64)),
             init("rev_end", np.array([-(2**63) + 1], np.int64)), init("rev_axis", np.array([1], np.int64)),
             init("rev_step", np.array([-1], np.int64)), init("squeeze_axes", np.array([2, 3], np.int64)),
             init("zero", np.array(0, np.int64)), init("unsqueeze_axes", np.array([0], np.int64)),
             init("minus_one", np.array([-1], np.int64)), init("fc_w", weights(16, 8 * 14 * 14)),
             init("fc_b", weights(16)), init("proj", weights(8, 16))]
    return save(path, nodes, inits, opset=13)


def activations_model(path):
    """The other converted ops: Split, hard activations, reductions, elementwise maths, LpNormalization, Softmax."""
    n = helper.make_node
    nodes = [
        n("Conv", ["data", "w"], ["c"], strides=[8, 8], pads=[1, 1, 1, 1]),
        n("Split", ["c", "split"], ["s1", "s2"], axis=1),
        n("HardSigmoid", ["s1"], ["h1"], alpha=0.3, beta=0.4), n("HardSwish", ["s2"], ["h2"]),
        n("Concat", ["h1", "h2"], ["cat"], axis=1), n("Elu", ["cat"], ["e"], alpha=0.7),
        n("GlobalMaxPool", ["e"], ["g"]), n("Flatten", ["g"], ["f"]),
        n("ReduceSum", ["e", "axes"], ["r1"], keepdims=0), n("ReduceMax", ["e"], ["r2"], axes=[2, 3], keepdims=0),
        n("ReduceMin", ["e"], ["r3"], axes=[2, 3], keepdims=0), n("ReduceL2", ["e"], ["r4"], axes=[2, 3], keepdims=0),
        n("Max", ["f", "r2"], ["mx"]), n("Min", ["r1", "r3"], ["mn"]),
        n("Abs", ["mn"], ["a"]), n("Add", ["a", "one"], ["a1"]), n("Sqrt", ["a1"], ["u"]),
        n("Neg", ["mx"], ["ng"]), n("Exp", ["ng"], ["ex"]), n("Add", ["ex", "one"], ["ex1"]), n("Log", ["ex1"], ["v"]),
        n("Add", ["r4", "one"], ["r41"]), n("Reciprocal", ["r41"], ["w1"]), n("Pow", ["u", "two"], ["pw"]),
        n("Floor", ["mx"], ["fl"]), n("Ceil", ["mn"], ["ce"]), n("Erf", ["mx"], ["er"]),
        n("Sum", ["u", "v", "w1", "pw", "fl", "ce", "er"], ["total"]),
        n("LpNormalization", ["total"], ["l"], axis=1, p=2),
        n("MatMul", ["l", "proj"], ["logits"]), n("Softmax", ["logits"], ["fc1"], axis=1),
    ]
    inits = [init("w", weights(8, 3, 3, 3, scale=0.5)), init("split", np.array([3, 5], np.int64)),
             init("axes", np.array([2, 3], np.int64)), init("one", np.float32(1.0)), init("two", np.float32(2.0)),
             init("proj", weights(8, 16, scale=3.0))]
    return save(path, nodes, inits, opset=14)  # HardSwish is opset 14


# --- fixtures ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    """A calibrated iresnet18 (8-d) and its export: what arcface_torch's torch2onnx writes, Conv+BN folded."""
    from test_backbone_iresnet import IResNet18, IResNetParams, calibrate

    torch.manual_seed(0)
    model = calibrate(IResNet18(IResNetParams(embedding_size=8)))
    path = tmp_path_factory.mktemp("r18") / "r18.onnx"
    export_onnx(model, path, check_parity=False)
    return model, path


@pytest.fixture(scope="module")
def r18_imported(r18):
    return create(r18[1])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_onnx(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


def create(path, **params):
    return builtin_registry().create("backbone", "onnx", path=str(path), **params)


# --- parity with onnxruntime -------------------------------------------------------------------------------------

def test_our_exports_import_with_onnxruntime_parity(r18, tiny, tmp_path, registry):
    torch.manual_seed(0)
    mbf = with_bn_statistics(registry.create("backbone", "mobilefacenet", embedding_size=8, scale=1,
                                             blocks=[1, 1, 1, 1]))
    export_onnx(mbf, tmp_path / "mbf.onnx", check_parity=False)
    x = faces()
    for (original, path), arch in (((r18[0], r18[1]), "graph"), ((mbf, tmp_path / "mbf.onnx"), "auto"),
                                   ((tiny[1], tiny[0]), "auto")):
        imported = create(path, arch=arch).eval()
        assert imported.imported_as == "graph" and imported.parity_max_diff < 1e-4
        with torch.no_grad():
            got, want = imported(x).numpy(), original(x).numpy()
        assert got.shape == want.shape == (3, original.embedding_size) == (3, imported.embedding_size)
        assert rel_diff(got, run_ort(path, x.numpy())) < 1e-4, path.name
        assert rel_diff(got, want) < 1e-4, path.name
        assert imported.adapter is None  # our exports take the project's input as it is


def test_kitchen_sink_of_ops_matches_onnxruntime_and_exports_with_a_dynamic_batch(tmp_path):
    path = kitchen_sink_model(tmp_path / "ops.onnx")
    imported = create(path).eval()
    graph = imported.net
    assert {"AveragePool", "Clip", "Concat", "Gather", "MaxPool", "Pad", "Reshape", "Shape", "Slice", "Squeeze",
            "Unsqueeze", "Transpose", "Mean", "Sum", "ReduceMean", "MatMul", "Gemm"} <= set(graph.ops)
    assert imported.adapter is None
    x = faces(3)
    with torch.no_grad():
        got = imported(x).numpy()
    assert rel_diff(got, run_ort(path, x.numpy())) < 1e-4
    report = export_onnx(imported, tmp_path / "back.onnx")
    assert report["parity_max_abs_diff"] < 1e-4 * np.abs(got).max()
    assert rel_diff(run_ort(tmp_path / "back.onnx", x.numpy()), got) < 1e-4  # batch 3 through a batch-1 trace


def test_activations_reductions_and_maths_match_onnxruntime(tmp_path):
    path = activations_model(tmp_path / "maths.onnx")
    imported = create(path).eval()
    assert {"Split", "HardSwish", "ReduceL2", "LpNormalization", "Softmax", "Erf"} <= set(imported.net.ops)
    x = faces()
    with torch.no_grad():
        got = imported(x).numpy()
    assert rel_diff(got, run_ort(path, x.numpy())) < 1e-4


def test_in_graph_normalisation_gets_raw_pixels_through_the_adapter(tmp_path):
    path = normalising_model(tmp_path / "sface_like.onnx")
    imported = create(path).eval()
    assert (imported.feeding.mean, imported.feeding.std) == (0.0, 1.0) and imported.adapter is not None
    x = faces()
    with torch.no_grad():
        got = imported(x).numpy()
    assert rel_diff(got, run_ort(path, (x * 127.5 + 127.5).numpy())) < 1e-4
    # the normalisation constants are fixed, not trainable (weight decay would drift them)
    names = {n for n, _ in imported.named_parameters()}
    assert not any(k.endswith(("mean", "scale")) and "weights" in k for k in names)
    assert {"net.weights.w1", "net.weights.fc_w", "net.weights.slope"} <= names


def test_given_mean_std_and_bgr_are_fed(tmp_path):
    """input_mean/input_std/bgr override what the graph says; the adapter computes exactly that."""
    path, _model = tiny_onnx(tmp_path / "tiny.onnx")
    imported = create(path, input_mean=120.0, input_std=60.0, bgr=True).eval()
    x = faces()
    with torch.no_grad():
        got = imported(x).numpy()
    pixels = (x * 127.5 + 127.5).numpy()
    assert rel_diff(got, run_ort(path, ((pixels - 120.0) / 60.0)[:, ::-1])) < 1e-4


@pytest.mark.parametrize("blocked", [False, True], ids=["per-axis", "blocked"])
def test_quantised_weights_fold_into_float_parameters(tmp_path, blocked):
    path, (q, scale, zero) = quantised_model(tmp_path / "q.onnx", blocked=blocked)
    imported = create(path).eval()
    x = faces()
    with torch.no_grad():
        got = imported(x).numpy()
    assert rel_diff(got, run_ort(path, x.numpy())) < 1e-4
    weight = dict(imported.named_parameters())["net.weights.w1"]
    if blocked:
        full = np.repeat(scale, 2, axis=1)[:, :3]
        expected = (q.astype(np.float32) - np.repeat(zero, 2, axis=1)[:, :3]) * full
    else:
        expected = (q.astype(np.float32) - zero.reshape(-1, 1, 1, 1)) * scale.reshape(-1, 1, 1, 1)
    np.testing.assert_array_equal(weight.detach().numpy(), expected)
    assert weight.requires_grad and "DequantizeLinear" in imported.net.ops  # the activation QDQ pair stays
    imported.train()
    imported(x).square().sum().backward()  # through the fake-quantised activations (straight-through)
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_mxnet_style_inputs_unsorted_nodes_and_a_baked_batch(tmp_path):
    path = mxnet_style_model(tmp_path / "mx.onnx")
    imported = create(path).eval()  # the parity check feeds the fixed-batch model one face at a time
    assert imported.feeding.batch == 1 and imported.feeding.input_name == "data"
    x = faces(3)
    with torch.no_grad():
        got = imported(x).numpy()
    assert got.shape == (3, 16)
    want = np.concatenate([run_ort(path, x[i:i + 1].numpy()) for i in range(3)])
    assert rel_diff(got, want) < 1e-4


# --- training ------------------------------------------------------------------------------------------------------

def test_gradients_reach_every_convolution(tiny):
    imported = create(tiny[0]).train()
    imported(faces(2)).square().sum().backward()
    convs = [(n, p) for n, p in imported.named_parameters() if p.ndim == 4]
    assert len(convs) == 4
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in convs), [n for n, p in convs]


def batch_norms(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_batchnorm_statistics_are_frozen_by_default_and_train_with_train_bn(tiny, r18_imported):
    for imported in (create(tiny[0]), r18_imported):
        norms = batch_norms(imported)
        before = [m.running_mean.clone() for m in norms]
        x = faces(2)
        with torch.no_grad():
            trained, evaluated = imported.train()(x), imported.eval()(x)
        assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))
        assert torch.equal(trained, evaluated)  # running statistics used in train mode too
    imported = create(tiny[0], train_bn=True).train()
    norms = batch_norms(imported)
    before = [m.running_mean.clone() for m in norms]
    with torch.no_grad():
        imported(faces(2))
    assert norms and all(not torch.equal(m.running_mean, b) for m, b in zip(norms, before))


def test_train_bn_leaves_the_batchnorms_an_export_folded_fixed(r18):
    """Batch statistics on an un-folded BN would normalise away the scale folded into its conv."""
    imported = create(r18[1], train_bn=True, check_parity=False).train()
    net = imported.net
    kept, folded = net.layer1[0].bn1, net.layer1[0].bn2
    assert "layer1.0.bn2" in imported.fixed_bn and "layer1.0.bn1" not in imported.fixed_bn
    before = kept.running_mean.clone(), folded.running_mean.clone()
    with torch.no_grad():
        imported(faces(2))
    assert not torch.equal(kept.running_mean, before[0]) and torch.equal(folded.running_mean, before[1])
    assert folded.training is False and kept.training is True


def test_an_n_d_1_1_output_is_flattened(tmp_path):
    nodes = [helper.make_node("Conv", ["data", "w"], ["c"], strides=[4, 4]),
             helper.make_node("GlobalAveragePool", ["c"], ["fc1"])]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "g", [value("data", TensorProto.FLOAT, ["N", 3, 112, 112])],
                              [value("fc1", TensorProto.FLOAT, ["N", 16, 1, 1])], [init("w", weights(16, 3, 3, 3))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "pooled.onnx"))
    imported = create(tmp_path / "pooled.onnx").eval()
    x = faces(2)
    with torch.no_grad():
        got = imported(x)
    assert imported.embedding_size == 16 and got.shape == (2, 16)
    assert rel_diff(got.numpy(), run_ort(tmp_path / "pooled.onnx", x.numpy())) < 1e-4


@pytest.mark.parametrize("train_bn", [False, True])
def test_the_converted_graph_itself_honours_train_bn(tiny, train_bn):
    """convert() used on its own (no backbone around it): a train-mode forward updates statistics only if asked."""
    model = load_onnx(tiny[0])
    graph = to_torch.convert(model, model.graph.output[0].name, where=str(tiny[0]), train_bn=train_bn).train()
    (norm,) = batch_norms(graph)
    before = norm.running_var.clone()
    with torch.no_grad():
        graph(faces(2))
    assert torch.equal(norm.running_var, before) is not train_bn


# --- errors --------------------------------------------------------------------------------------------------------

def test_an_unsupported_op_is_named_with_its_node_and_file_before_anything_runs(tmp_path, monkeypatch):
    nodes = [helper.make_node("Conv", ["data", "w"], ["c"], name="conv", strides=[16, 16]),
             helper.make_node("LRN", ["c"], ["l"], name="weird_norm", size=3),
             helper.make_node("Flatten", ["l"], ["f"]),
             helper.make_node("Gemm", ["f", "fc_w"], ["fc1"], transB=1)]
    path = save(tmp_path / "lrn.onnx", nodes, [init("w", weights(8, 3, 3, 3)), init("fc_w", weights(16, 8 * 49))])
    monkeypatch.setattr(to_torch.OnnxGraph, "forward", lambda *a: pytest.fail("ran before the op check"))
    with pytest.raises(LrfrError) as err:
        create(path)
    msg = str(err.value)
    assert str(path) in msg and "node 'weird_norm' (op LRN) cannot be converted; supported: " in msg
    assert "Conv" in msg.split("supported: ")[1]


def test_a_wrong_conversion_fails_the_parity_check(tiny, monkeypatch):
    """A converter bug (PRelu run as ReLU) must not pass silently: the construction-time check catches it."""
    monkeypatch.setitem(to_torch.OPS, "PRelu", lambda view: lambda ins, _: [torch.relu(ins[0])])
    with pytest.raises(LrfrError, match=r"(?s)tiny\.onnx .*differs from onnxruntime by .*more than tolerance 0\.0001"):
        create(tiny[0])
    assert create(tiny[0], check_parity=False).parity_max_diff is None  # unchecked on request


def test_arch_iresnet_on_another_graph_says_why(tiny):
    with pytest.raises(LrfrError, match=r"tiny\.onnx is not an arcface_torch iresnet \(conv1: expected a 3x3 conv"):
        create(tiny[0], arch="iresnet")


def test_a_missing_file_and_a_required_path(registry, tmp_path):
    from lrfr_plugins.errors import ParamsError

    with pytest.raises(LrfrError, match=r"nope\.onnx does not exist"):
        registry.create("backbone", "onnx", path=str(tmp_path / "nope.onnx"))
    with pytest.raises(ParamsError, match="path: required parameter is missing"):
        registry.create("backbone", "onnx")


# --- the native iresnet import -------------------------------------------------------------------------------------

def test_an_arcface_torch_iresnet_imports_as_our_iresnet(r18, r18_imported, tmp_path, registry):
    original, path = r18
    imported = r18_imported.eval()
    assert imported.imported_as == "iresnet" and type(imported.net).__name__ == "IResNet18"
    x = faces()
    with torch.no_grad():
        got, want = imported(x).numpy(), original(x).numpy()
    assert rel_diff(got, want) < 1e-4 and rel_diff(got, run_ort(path, x.numpy())) < 1e-4
    net, ref = imported.net.state_dict(), original.state_dict()
    for key in ("layer1.0.bn1.weight", "layer1.0.bn1.running_var", "bn2.running_mean", "fc.weight", "features.bias",
                "layer2.1.prelu.weight"):  # tensors the exporter keeps as they are
        assert torch.equal(net[key], ref[key]), key
    # a Conv+BN pair the exporter folded: the folded weight, and a BN that only adds the folded bias
    assert torch.equal(net["layer1.0.bn2.running_mean"], torch.zeros(64))
    assert torch.equal(net["layer1.0.bn2.running_var"], torch.full((64,), identity_variance()))
    assert torch.equal(net["layer1.0.bn2.weight"], torch.ones(64))
    # its state dict is an arcface_torch backbone.pth
    torch.save(imported.net.state_dict(), tmp_path / "backbone.pth")
    again = registry.create("backbone", "iresnet18", embedding_size=8, weights=str(tmp_path / "backbone.pth"))
    with torch.no_grad():
        assert torch.equal(again.eval()(x), imported.net(x))


def test_registry_creates_it_and_its_state_dict_round_trips(registry, tiny):
    a = registry.create("backbone", "onnx", path=str(tiny[0]))
    b = registry.create("backbone", "onnx", path=str(tiny[0]), check_parity=False)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.01)
    b.load_state_dict(a.state_dict())  # a run's checkpoint loads into the backbone rebuilt from its recipe
    x = faces(2)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))
    assert type(a).__name__ == "OnnxBackbone" and a.embedding_size == 16


# --- export back to InsightFace --------------------------------------------------------------------------------

@pytest.mark.insightface
def test_an_imported_model_exports_back_for_insightface(tmp_path):
    if os.environ.get("CI") == "true":  # CI installs insightface: there this test must run, never skip
        import insightface.model_zoo as model_zoo
    else:
        model_zoo = pytest.importorskip("insightface.model_zoo")
    from test_onnx_export import face_image

    imported = create(normalising_model(tmp_path / "sface_like.onnx")).eval()
    export_onnx(imported, tmp_path / "model.onnx")
    model = model_zoo.get_model(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert type(model).__name__ == "ArcFaceONNX" and (model.input_mean, model.input_std) == (127.5, 127.5)
    rgb = face_image()
    feat = model.get_feat(np.ascontiguousarray(rgb[:, :, ::-1])).ravel()  # InsightFace takes BGR images
    with torch.no_grad():
        want = imported(to_network_input(torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous()))[0].numpy()
    assert np.abs(feat - want).max() < 1e-4 * np.abs(want).max()
    assert load_onnx(tmp_path / "model.onnx").graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
