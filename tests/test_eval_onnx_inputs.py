"""`lrfr eval` on ONNX models: the feeding it reports and the options that change it, the output it scores, and
models whose embeddings cannot be scored (named, exit 1, no traceback)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from test_onnx_feeding import D, body, const, make, normalised, plain, sface_like

from lrfr_plugins.engine.models import load_model
from lrfr_plugins.errors import LrfrError

PROTOCOL = ["num_identities=6", "images_per_identity=3", "num_pairs=40", "sizes=[112,14]"]
IMAGES = torch.randint(0, 256, (3, 3, 112, 112), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def saved(folder, name, model):
    onnx.save(model, folder / name)
    return folder / name


def with_tail(op: str, value: float) -> onnx.ModelProto:
    """The plain Conv model with its embedding passed through ``op`` by a constant (Div by 0: inf/NaN; Mul by 0)."""
    nodes, inits = body("data", out="raw")
    nodes.append(helper.make_node(op, ["raw", "k"], ["emb"], name="tail"))
    return make(nodes, [*inits, const("k", value)])


def two_outputs() -> onnx.ModelProto:
    nodes, inits = body("data")
    nodes.append(helper.make_node("Identity", ["conv_out"], ["feature_map"], name="fm"))
    return make(nodes, inits, outputs=[helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", D]),
                                       helper.make_tensor_value_info("feature_map", TensorProto.FLOAT,
                                                                     ["N", D, 14, 14])])


def test_outputs_are_checked_and_the_named_one_is_run(tmp_path, registry):
    two = saved(tmp_path, "two.onnx", two_outputs())
    emb = load_model(two, registry=registry, output="emb")
    np.testing.assert_array_equal(emb.embed(IMAGES), load_model(saved(tmp_path, "p.onnx", plain()),
                                                                registry=registry).embed(IMAGES))
    assert emb.description["output"] == "emb" and emb.description["feeding"]["output_name"] == "emb"
    with pytest.raises(LrfrError, match=r"two.onnx: output 'feature_map' has shape \(3, 4, 14, 14\) for 3 images; "
                                        r"a recognition model gives one embedding per image, \(N, D\).*--output NAME"):
        load_model(two, registry=registry, output="feature_map").embed(IMAGES)
    nodes, inits = body("data", flatten=False)  # (N, D, 1, 1), as some exports end: flattened
    pooled = load_model(saved(tmp_path, "pooled.onnx", make(nodes, inits, outputs=[
        helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", D, 1, 1])])), registry=registry)
    np.testing.assert_array_equal(pooled.embed(IMAGES), emb.embed(IMAGES))


@pytest.mark.parametrize("op, value, what", [("Div", 0.0, "non-finite"), ("Mul", 0.0, "all-zero")])
def test_unscorable_embeddings_are_refused(tmp_path, registry, op, value, what):
    model = load_model(saved(tmp_path, "bad.onnx", with_tail(op, value)), registry=registry)
    with pytest.raises(LrfrError, match=rf"model .*bad.onnx gave {what} embeddings for 3 of 3 images \(fed RGB, "
                                        r"\(x - 127.5\) / 127.5\). Check its input normalisation \(--input-mean"):
        model.embed(IMAGES)


def test_onnxruntime_refusing_the_model_is_named(tmp_path, registry):
    model = plain()
    model.graph.node.insert(0, helper.make_node("Frobnicate", ["data"], ["unused"], domain="com.example", name="x"))
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(LrfrError, match=r"custom.onnx: onnxruntime cannot load the model: .*Frobnicate"):
        load_model(saved(tmp_path, "custom.onnx", model), registry=registry)


def test_options_for_a_pytorch_model_are_refused(tmp_path, registry):
    torch.save({}, tmp_path / "backbone.pth")
    with pytest.raises(LrfrError, match=r"backbone.pth: --input-mean, --output apply to ONNX models only"):
        load_model(tmp_path / "backbone.pth", registry=registry, backbone="tiny", input_mean=0.0, output="emb")


def test_a_model_pack_skips_junk_and_finds_an_mxnet_style_input(tmp_path, registry):
    pack = tmp_path / "pack"
    pack.mkdir()
    model = normalised()
    weights = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in model.graph.initializer]
    model.graph.input.insert(0, weights[0])  # graph.input[0] is a weight, as in mxnet exports
    saved(pack, "r50.onnx", model)
    (pack / "broken.onnx").write_bytes(b"\x00 not onnx")
    shutil.copy(saved(tmp_path, "two.onnx", two_outputs()), pack / "aux.onnx")  # two outputs: not the recognizer
    loaded = load_model(pack, registry=registry)
    assert loaded.description["path"].endswith("r50.onnx")
    assert loaded.description["feeding"]["input_name"] == "data" and loaded.description["feeding"]["mean"] == 0.0
    assert loaded.embed(IMAGES).shape == (3, D)


def eval_args(model, *extra):
    return ["eval", str(model), "-p", "synthetic", "--no-progress",
            *[a for p in PROTOCOL for a in ("--set", p)], *extra]


def test_cli_output_and_input_mean_reach_the_json_and_eval_json(lrfr, tmp_path):
    two = saved(tmp_path, "two.onnx", two_outputs())
    refused = lrfr(*eval_args(two))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "two.onnx: the model has 2 outputs ('emb', 'feature_map'); name the embedding with --output NAME" \
        in refused.stderr
    result = lrfr(*eval_args(two, "--output", "emb", "--input-mean", "100", "--json", "--out", str(tmp_path / "ev")))
    assert result.returncode == 0, result.stderr
    feeding = json.loads(result.stdout)["model"]["feeding"]
    assert (feeding["output_name"], feeding["mean"], feeding["std"]) == ("emb", 100.0, 127.5)
    assert not feeding["inferred"]
    assert feeding["reason"].startswith("given: --input-mean 100; std 127.5 kept from the graph")
    assert not feeding["insightface_feeds_same"] and "warning: InsightFace's ArcFaceONNX" in result.stderr
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["model"]["feeding"] == feeding


def test_cli_prints_the_input_line_and_the_insightface_warning(lrfr, tmp_path):
    result = lrfr(*eval_args(saved(tmp_path, "sface.onnx", sface_like())))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "input: RGB (InsightFace's order; --bgr if the model was trained on BGR), raw 0..255, inferred: the input " \
           "reaches Sub 127.5 (node 'Sub_0'), Mul 0.0078125 (node 'Mul_1') before the first Conv" in result.stdout
    assert "output: emb" in lines
    warning = "warning: InsightFace's ArcFaceONNX would feed this model (x - 127.5) / 127.5 instead of raw 0..255"
    assert any(line.startswith(warning) and "rec.input_mean = 0.0; rec.input_std = 1.0" in line for line in lines)


@pytest.mark.parametrize("name, content, message", [
    ("notes.onnx", b"this is text", "notes.onnx: not a readable ONNX model"),
    ("nan.onnx", with_tail("Div", 0.0), "nan.onnx gave non-finite embeddings for"),
    ("zero.onnx", with_tail("Mul", 0.0), "zero.onnx gave all-zero embeddings for"),
])
def test_cli_unusable_models_exit_1_without_a_traceback(lrfr, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.SerializeToString())
    result = lrfr(*eval_args(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert message in result.stderr and result.stderr.startswith("Error: ")
