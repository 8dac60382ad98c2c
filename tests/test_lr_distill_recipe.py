"""The whole user story of recipes/lr-distill.yaml, small: an ONNX recognizer that normalises its own input (SFace's
shape) in, distilled label-free, evaluated before and after, exported back: InsightFace loads it, and lrfr eval on the
export gives the run's own numbers."""

import json
import os

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT
from test_onnx_import import normalising_model

from lrfr_plugins.engine.models import load_model
from lrfr_plugins.evaluate import evaluate
from lrfr_plugins.recipe import load_recipe
from lrfr_plugins.runner import execute, prepare_run_dir

EVAL = "[{name: synthetic, params: {num_identities: 6, images_per_identity: 3, num_pairs: 40, sizes: [112, 14]}}]"


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    from test_onnx_import import builtin_registry

    registry = builtin_registry()
    root = tmp_path_factory.mktemp("lr-distill")
    start = normalising_model(root / "sface_like.onnx")
    overrides = [f"backbone.params.path={start}", "data.params.num_identities=8", "data.params.images_per_identity=6",
                 "finetune.0.params.steps=4", "train.batch_size=16", "finetune.0.params.eval_images=8",
                 f"eval={EVAL}", "train.threads=1"]
    recipe = load_recipe(ROOT / "recipes" / "lr-distill.yaml", overrides, registry=registry)
    prepare_run_dir(root / "run", overwrite=False, resume=False)
    execute(recipe, registry, root / "run", progress=False)
    return root, registry


def test_the_recipe_as_shipped_validates_and_says_what_it_starts_from(registry):
    data = load_recipe(ROOT / "recipes" / "lr-distill.yaml", registry=registry).data  # every parameter checked
    assert data["backbone"]["name"] == "onnx" and data["backbone"]["params"]["path"] == "runs/demo/model.onnx"
    assert data["train"]["epochs"] == 0 and data["train"]["batch_size"] == 128
    assert data["finetune"][0]["name"] == "distill" and data["finetune"][0]["params"]["steps"] == 470
    assert data["export"]["onnx"] is True


def test_it_distils_and_reports_before_and_after(distilled):
    root, _ = distilled
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 0 and metrics["finetune"][0]["steps"] == 4
    assert [e["protocol"] for e in metrics["eval_before_finetune"]] == [e["protocol"] for e in metrics["eval"]]
    results = (root / "run" / "results.md").read_text()
    assert results.count("| before fine-tuning |") == 2 and results.count("| fine-tuned ") == 2
    resolved = yaml.safe_load((root / "run" / "recipe.resolved.yaml").read_text())
    assert resolved["backbone"]["name"] == "onnx" and resolved["backbone"]["params"]["train_bn"] is False
    assert metrics["export"]["parity_max_abs_diff"] < 1e-4


def test_the_export_loads_in_insightface_and_lrfr_eval_gives_the_runs_numbers(distilled):
    if os.environ.get("CI") == "true":  # CI installs insightface: there this test must run, never skip
        import insightface.model_zoo as model_zoo
    else:
        model_zoo = pytest.importorskip("insightface.model_zoo")
    from test_onnx_export import face_image

    root, registry = distilled
    exported = root / "run" / "model.onnx"
    rec = model_zoo.get_model(str(exported), providers=["CPUExecutionProvider"])
    assert type(rec).__name__ == "ArcFaceONNX" and (rec.input_mean, rec.input_std) == (127.5, 127.5)
    student = load_model(root / "run", registry=registry, device="cpu")  # the run's checkpoint, in torch
    rgb = face_image()
    feat = rec.get_feat(np.ascontiguousarray(rgb[:, :, ::-1])).ravel()
    want = student.embed(torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous())[0]
    assert np.abs(feat - want).max() < 1e-4 * np.abs(want).max()

    loaded, result = evaluate(exported, "synthetic", ["num_identities=6", "images_per_identity=3", "num_pairs=40",
                                                     "sizes=[112,14]"], registry=registry, progress=False)
    assert "declared in the model's metadata" in loaded.description["feeding"]["reason"]
    run_results = json.loads((root / "run" / "metrics.json").read_text())["eval"][0]["results"]
    for size in ("112", "14"):
        assert result["results"][size]["accuracy"] == pytest.approx(run_results[size]["accuracy"], abs=1e-9)


def test_lrfr_eval_backbone_onnx_measures_the_imported_module_as_onnxruntime_does(distilled, tmp_path):
    _, registry = distilled
    start = normalising_model(tmp_path / "start.onnx")
    protocol = ["num_identities=6", "images_per_identity=3", "num_pairs=40", "sizes=[112,14]"]
    by_ort = evaluate(start, "synthetic", protocol, registry=registry, progress=False)
    by_torch = evaluate(start, "synthetic", protocol, registry=registry, progress=False, backbone="onnx")
    assert by_torch[0].description["kind"] == "onnx-imported" and by_torch[0].description["imported_as"] == "graph"
    for size in ("112", "14"):
        assert by_torch[1]["results"][size]["accuracy"] == pytest.approx(by_ort[1]["results"][size]["accuracy"],
                                                                         abs=1e-9)


def test_a_file_that_is_not_onnx_is_one_line_and_leaves_no_run(lrfr, tmp_path):
    (tmp_path / "notes.onnx").write_text("not a model")
    for _ in range(2):  # the failed start left no run behind: the same command fails the same way, not "holds a run"
        result = lrfr("run", str(ROOT / "recipes" / "lr-distill.yaml"), "--out", str(tmp_path / "run"),
                      "--set", f"backbone.params.path={tmp_path / 'notes.onnx'}", "--no-progress")
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "notes.onnx: not a readable ONNX model" in result.stderr
    result = lrfr("eval", str(tmp_path / "notes.onnx"), "-p", "synthetic", "--backbone", "onnx")
    assert result.returncode == 1 and "not a readable ONNX model" in result.stderr and "Traceback" not in result.stderr
