"""How an ONNX recognizer is fed, read from its graph: small graphs of each shape, built with onnx.helper.

The case that motivated it (issue 13): OpenCV Zoo's SFace normalises its own input (Sub, Mul on the input tensor),
but its first nodes are DequantizeLinear of quantised weights, so InsightFace's first-8-node-names rule fed it
(x - 127.5) / 127.5 and it was normalised twice.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from lrfr_plugins.engine.models import load_model
from lrfr_plugins.errors import LrfrError
from lrfr_plugins.onnx_model.feeding import graph_normalisation, load_onnx, read_feeding, real_inputs
from lrfr_plugins.ops.preprocess import insightface_skips_normalisation, to_network_input

D = 4  # embedding size of the test models
WEIGHT = np.random.default_rng(0).normal(0, 0.05, (D, 3, 8, 8)).astype(np.float32)


def const(name: str, value, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def body(x: str, out: str = "emb", flatten: bool = True,
         weight: np.ndarray = WEIGHT) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """x -> Conv(8x8, stride 8) -> GlobalAveragePool [-> Flatten]: a 4-d embedding from a 112x112 face."""
    nodes = [helper.make_node("Conv", [x, "W"], ["conv_out"], strides=[8, 8], name="conv0"),
             helper.make_node("GlobalAveragePool", ["conv_out"], ["pooled" if flatten else out], name="pool0")]
    if flatten:
        nodes.append(helper.make_node("Flatten", ["pooled"], [out], name="flatten0"))
    return nodes, [const("W", weight)]


def make(nodes, initializers, *, inputs=None, outputs=None, opset: int = 13) -> onnx.ModelProto:
    inputs = inputs or [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 112, 112])]
    outputs = outputs or [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", D])]
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # what onnxruntime 1.16+ all read
    return model


def plain(weight: np.ndarray = WEIGHT) -> onnx.ModelProto:
    """No normalisation in the graph: Conv first."""
    return make(*body("data", weight=weight))


def normalised(sub_name: str = "_minus0", mul_name: str = "_mul0", std: float = 128.0) -> onnx.ModelProto:
    """(x - 127.5) * (1 / std) in the graph, then the same Conv as :func:`plain` (mxnet's node names by default)."""
    nodes, inits = body("scaled")
    nodes = [helper.make_node("Sub", ["data", "mean"], ["centred"], name=sub_name),
             helper.make_node("Mul", ["centred", "scale"], ["scaled"], name=mul_name), *nodes]
    return make(nodes, [*inits, const("mean", 127.5), const("scale", 1.0 / std)])


def quantised_blocks() -> list[tuple[np.ndarray, float]]:
    """WEIGHT as 4 int8 blocks with a scale each, as SFace stores its weights."""
    return [(np.round(block / (s := float(np.abs(block).max() / 127))), s) for block in np.split(WEIGHT, 4, axis=0)]


def dequantised_weight() -> np.ndarray:
    return np.concatenate([(q * np.float32(s)).astype(np.float32) for q, s in quantised_blocks()])


def sface_like() -> onnx.ModelProto:
    """SFace's shape: the first 8 nodes dequantise block-quantised Conv weights, then Sub/Mul on the input."""
    nodes, inits = [], []
    for i, (block, scale) in enumerate(quantised_blocks()):
        inits += [const(f"Wq{i}", block, np.int8), const(f"Ws{i}", scale), const(f"Wz{i}", 0, np.int8)]
        nodes.append(helper.make_node("DequantizeLinear", [f"Wq{i}", f"Ws{i}", f"Wz{i}"], [f"Wd{i}"],
                                      name=f"DequantizeLinear_{i}"))
    for i in range(4):  # more quantised constants, as SFace has: the names InsightFace sees are all DequantizeLinear
        inits += [const(f"Bq{i}", [1], np.int8), const(f"Bs{i}", 0.5)]
        nodes.append(helper.make_node("DequantizeLinear", [f"Bq{i}", f"Bs{i}"], [f"Bd{i}"],
                                      name=f"DequantizeLinear_b{i}"))
    nodes.append(helper.make_node("Concat", [f"Wd{i}" for i in range(4)], ["W"], axis=0, name="Concat_w"))
    nodes += [helper.make_node("Sub", ["data", "mean"], ["centred"], name="Sub_0"),
              helper.make_node("Mul", ["centred", "scale"], ["scaled"], name="Mul_1")]
    conv, _ = body("scaled")
    nodes += conv
    return make(nodes, [*inits, const("mean", 127.5), const("scale", 1 / 128)])


def test_sub_then_mul_on_the_input_is_fed_raw_pixels_like_insightface_does():
    feeding = read_feeding(normalised(), "m.onnx")
    assert (feeding.mean, feeding.std, feeding.inferred) == (0.0, 1.0, True)
    assert feeding.in_graph == ["Sub '_minus0'", "Mul '_mul0'"]
    assert "Sub 127.5 (node '_minus0'), Mul 0.0078125 (node '_mul0') before the first Conv" in feeding.reason
    assert feeding.insightface_feeds_same and feeding.insightface_warning() is None
    assert (feeding.input_name, feeding.output_name, feeding.batch) == ("data", "emb", None)
    assert feeding.describe().startswith("RGB (InsightFace's order; --bgr if the model was trained on BGR), "
                                         "raw 0..255, inferred: the input reaches Sub")


def test_sface_normalisation_behind_dequantize_nodes_is_found_where_insightface_misses_it():
    model = sface_like()
    assert [n.op_type for n in model.graph.node[:8]] == ["DequantizeLinear"] * 8
    assert not insightface_skips_normalisation(model)  # ArcFaceONNX would normalise it a second time
    feeding = read_feeding(model, "sface.onnx")
    assert (feeding.mean, feeding.std) == (0.0, 1.0) and feeding.in_graph == ["Sub 'Sub_0'", "Mul 'Mul_1'"]
    assert not feeding.insightface_feeds_same
    warning = feeding.insightface_warning()
    assert "would feed this model (x - 127.5) / 127.5 instead of raw 0..255" in warning
    assert "rec.input_mean = 0.0; rec.input_std = 1.0 after rec = insightface.model_zoo.get_model" in warning
    assert feeding.as_dict()["insightface_warning"] == warning and feeding.as_dict()["in_graph"] == feeding.in_graph


def test_conv_first_is_fed_the_insightface_convention():
    feeding = read_feeding(plain(), "plain.onnx")
    assert (feeding.mean, feeding.std, feeding.in_graph) == (127.5, 127.5, [])
    assert feeding.reason.startswith("inferred: no Sub/Add/Mul/Div with a constant nor BatchNormalization on the "
                                     "input before the first Conv ('conv0')")
    assert feeding.insightface_feeds_same and feeding.insightface_warning() is None
    images = torch.randint(0, 256, (2, 3, 112, 112), dtype=torch.uint8)
    np.testing.assert_array_equal(feeding.to_model_input(images), to_network_input(images).numpy())


def test_node_names_and_arithmetic_on_shapes_do_not_count():
    """A Shape branch off the input reaching a Mul by a constant is arithmetic on sizes, not on pixels; named Sub*/Mul*
    it fools ArcFaceONNX into feeding raw pixels."""
    model = plain()
    model.graph.node.extend([helper.make_node("Shape", ["data"], ["shape"], name="Sub_shape"),
                             helper.make_node("Mul", ["shape", "two"], ["shape2"], name="Mul_shape")])
    model.graph.initializer.append(const("two", [2], np.int64))
    feeding = read_feeding(model, "plain.onnx")
    assert (feeding.mean, feeding.std, feeding.in_graph) == (127.5, 127.5, [])
    assert insightface_skips_normalisation(model) and not feeding.insightface_feeds_same
    assert "would feed this model raw 0..255 instead of (x - 127.5) / 127.5" in feeding.insightface_warning()
    assert "rec.input_mean = 127.5; rec.input_std = 127.5" in feeding.insightface_warning()


def test_normalisation_after_the_first_conv_does_not_count():
    nodes, inits = body("data", out="raw")
    nodes.append(helper.make_node("Mul", ["raw", "k"], ["emb"], name="Mul_after"))
    feeding = read_feeding(make(nodes, [*inits, const("k", 0.5)]), "m.onnx")
    assert (feeding.mean, feeding.std, feeding.in_graph) == (127.5, 127.5, [])


def test_input_through_cast_and_transpose_with_constants_from_constant_and_dequantize_nodes():
    """Sub by a Constant node, Div by a dequantised constant, behind Cast and Transpose, nodes in reverse order."""
    conv, inits = body("scaled")
    nodes = [helper.make_node("Cast", ["data"], ["as_float"], to=TensorProto.FLOAT, name="cast_in"),
             helper.make_node("Transpose", ["as_float"], ["nchw"], perm=[0, 1, 2, 3], name="layout"),
             helper.make_node("Constant", [], ["mean"], value=const("m", [127.5]), name="mean_const"),
             helper.make_node("DequantizeLinear", ["std_q", "std_s"], ["std"], name="std_dq"),
             helper.make_node("Sub", ["nchw", "mean"], ["centred"], name="norm_sub"),
             helper.make_node("Div", ["centred", "std"], ["scaled"], name="norm_div"), *conv]
    model = make(list(reversed(nodes)), [*inits, const("std_q", 64, np.uint8), const("std_s", 2.0)])
    nodes_found, reason = graph_normalisation(model.graph, "data")
    assert [n.name for n in nodes_found] == ["norm_sub", "norm_div"]
    assert "Sub 127.5 (node 'norm_sub'), Div 128 (node 'norm_div')" in reason
    assert read_feeding(model, "m.onnx").mean == 0.0


def test_batch_normalization_on_the_input_is_in_graph_normalisation():
    conv, inits = body("bn_out")
    bn = helper.make_node("BatchNormalization", ["data", "g", "b", "mu", "var"], ["bn_out"], name="bn_data")
    model = make([bn, *conv], [*inits, const("g", [1, 1, 1]), const("b", [0, 0, 0]), const("mu", [127.5] * 3),
                               const("var", [128.0 ** 2] * 3)])
    feeding = read_feeding(model, "bn.onnx")
    assert (feeding.mean, feeding.std, feeding.in_graph) == (0.0, 1.0, ["BatchNormalization 'bn_data'"])
    assert not feeding.insightface_feeds_same


def test_mxnet_style_graph_listing_every_weight_as_an_input(tmp_path, registry):
    model = normalised()
    weights = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in model.graph.initializer]
    data = list(model.graph.input)
    del model.graph.input[:]
    model.graph.input.extend([*weights, *data])  # graph.input[0] is a weight, as in mxnet exports
    feeding = read_feeding(model, "mx.onnx")
    assert feeding.input_name == "data" and feeding.mean == 0.0
    onnx.save(model, tmp_path / "mx.onnx")
    images = torch.randint(0, 256, (3, 3, 112, 112), dtype=torch.uint8)
    got = load_model(tmp_path / "mx.onnx", registry=registry).embed(images)
    want = load_model(_saved(tmp_path, "plain.onnx", plain()), registry=registry, input_mean=127.5,
                      input_std=128).embed(images)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _saved(folder, name, model):
    onnx.save(model, folder / name)
    return folder / name


def test_in_graph_normalisation_gives_the_embeddings_of_the_same_model_fed_that_normalisation(tmp_path, registry):
    """The inference is numerically right: in-graph (x - 127.5) / 128 + Conv == Conv fed --input-mean 127.5 --input-std
    128, for the plain graph, the SFace-shaped one and a fixed batch of 2 with a last odd image."""
    images = torch.randint(0, 256, (5, 3, 112, 112), dtype=torch.uint8)
    want = load_model(_saved(tmp_path, "plain.onnx", plain()), registry=registry, input_mean=127.5,
                      input_std=128).embed(images)
    loaded = load_model(_saved(tmp_path, "in_graph.onnx", normalised("minus0", "mul0")), registry=registry)
    assert loaded.description["feeding"]["mean"] == 0.0
    np.testing.assert_allclose(loaded.embed(images), want, rtol=1e-4, atol=1e-5)
    sface = load_model(_saved(tmp_path, "sface.onnx", sface_like()), registry=registry).embed(images)
    sface_want = load_model(_saved(tmp_path, "dq.onnx", plain(dequantised_weight())), registry=registry,
                            input_mean=127.5, input_std=128).embed(images)
    np.testing.assert_allclose(sface, sface_want, rtol=1e-4, atol=1e-5)
    default = load_model(tmp_path / "plain.onnx", registry=registry).embed(images)
    assert np.abs(default - want).max() > 1e-4  # 127.5 vs 128 is visible, so the equality above means something
    fixed = normalised()
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    loaded = load_model(_saved(tmp_path, "fixed.onnx", fixed), registry=registry, batch_size=64)
    assert loaded.description["feeding"]["batch"] == 2
    np.testing.assert_allclose(loaded.embed(images), want, rtol=1e-4, atol=1e-5)


def test_given_values_override_the_inference_and_say_so():
    both = read_feeding(normalised(), "m.onnx", mean=127.5, std=128)
    assert (both.mean, both.std, both.inferred) == (127.5, 128.0, False)
    assert both.reason == ("given: --input-mean 127.5 --input-std 128 (the graph also normalises its own input: "
                           "Sub '_minus0', Mul '_mul0')")
    assert not both.insightface_feeds_same  # ArcFaceONNX skips for these names: it would feed raw pixels
    mean_only = read_feeding(plain(), "m.onnx", mean=120)
    assert (mean_only.mean, mean_only.std, mean_only.inferred) == (120.0, 127.5, False)
    assert mean_only.reason.startswith("given: --input-mean 120; std 127.5 kept from the graph (inferred: no Sub")
    bgr = read_feeding(plain(), "m.onnx", bgr=True)
    assert bgr.inferred and bgr.describe().startswith("BGR (given: --bgr), (x - 127.5) / 127.5, inferred:")
    images = torch.randint(0, 256, (2, 3, 112, 112), dtype=torch.uint8)
    np.testing.assert_array_equal(bgr.to_model_input(images), to_network_input(images.flip(1)).numpy())
    with pytest.raises(LrfrError, match=r"--input-std 0: "):
        read_feeding(plain(), "m.onnx", std=0.0)


def test_two_outputs_are_refused_unless_one_is_named():
    nodes, inits = body("data")
    nodes.append(helper.make_node("Identity", ["conv_out"], ["feature_map"], name="fm"))
    outputs = [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", D]),
               helper.make_tensor_value_info("feature_map", TensorProto.FLOAT, ["N", D, 14, 14])]
    model = make(nodes, inits, outputs=outputs)
    with pytest.raises(LrfrError, match=r"two.onnx: the model has 2 outputs \('emb', 'feature_map'\); name the "
                                        r"embedding with --output NAME"):
        read_feeding(model, "two.onnx")
    assert read_feeding(model, "two.onnx", output="emb").output_name == "emb"
    with pytest.raises(LrfrError, match=r"no output named 'embedding'; the model's outputs are 'emb', 'feature_map'"):
        read_feeding(model, "two.onnx", output="embedding")


@pytest.mark.parametrize("elem_type, shape, message", [
    (TensorProto.UINT8, ["N", 3, 112, 112], r"u8.onnx: the input 'data' is uint8; lrfr feeds float32 pixels"),
    (TensorProto.FLOAT, [1, 3, 640, 640], r"u8.onnx: the model's input is \[1, 3, 640, 640\]; .*aligned 112x112 RGB"),
    (TensorProto.FLOAT, ["N", 112, 112, 3], r"the model's input is \[N, 112, 112, 3\]; .*\(N, 3, 112, 112\)"),
    (TensorProto.FLOAT, ["N", 3, 112], r"the model's input is \[N, 3, 112\]"),
])
def test_inputs_a_recognizer_does_not_take_are_refused(elem_type, shape, message):
    model = make(*body("data"), inputs=[helper.make_tensor_value_info("data", elem_type, shape)])
    with pytest.raises(LrfrError, match=message):
        read_feeding(model, "u8.onnx")


def test_two_real_inputs_are_refused():
    extra = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1])
    model = make(*body("data"), inputs=[helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 112, 112]),
                                         extra])
    with pytest.raises(LrfrError, match=r"m.onnx: the graph takes 2 inputs \('data', 'mask'\); a recognition model"):
        read_feeding(model, "m.onnx")


def test_a_file_that_is_not_onnx_is_named(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(LrfrError, match=r"junk.onnx: not a readable ONNX model \(DecodeError: .*run directory"):
        load_onnx(tmp_path / "junk.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(LrfrError, match=r"empty.onnx: not a readable ONNX model \(it holds no graph nodes\)"):
        load_onnx(tmp_path / "empty.onnx")


def test_an_lrfr_export_declares_its_feeding_and_the_declaration_wins(tmp_path, registry):
    """An lrfr export states (x - 127.5) / 127.5 RGB in its metadata; even a graph whose input meets constant
    Mul/Add ops first (the adapter of an imported model that normalised its own input) is fed as declared."""
    import torch

    from lrfr_plugins.export.onnx import export_onnx
    from lrfr_plugins.ops.preprocess import FEEDING_METADATA

    class Rescaled(torch.nn.Module):  # [-1, 1] back to 0..255, then the model's own (x - 127.5) / 128
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=16)

        def forward(self, x):
            return self.conv(((x * 127.5 + 127.5) - 127.5) / 128.0).flatten(1)

    export_onnx(Rescaled(), tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert {p.key: p.value for p in model.metadata_props} == FEEDING_METADATA
    value = real_inputs(model.graph)[0]
    assert graph_normalisation(model.graph, value.name)[0]  # read from the graph alone: it would look normalised
    feeding = read_feeding(model, tmp_path / "m.onnx")
    assert (feeding.mean, feeding.std, feeding.bgr) == (127.5, 127.5, False)
    assert "declared in the model's metadata" in feeding.reason
    broken = onnx.load(str(tmp_path / "m.onnx"))
    onnx.helper.set_model_props(broken, {"lrfr.input_mean": "x", "lrfr.input_std": "127.5",
                                         "lrfr.channel_order": "RGB"})
    with pytest.raises(LrfrError, match="metadata declares lrfr feeding"):
        read_feeding(broken, "m.onnx")
