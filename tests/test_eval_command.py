"""`lrfr eval`: the same numbers from a run directory, its checkpoint, a bare state dict and its ONNX export."""

import json
import shutil
import textwrap

import pytest
import torch

from lrfr_plugins.engine.models import load_model
from lrfr_plugins.errors import LrfrError, ParamsError
from lrfr_plugins.evaluate import evaluate, protocol_params
from lrfr_plugins.recipe import load_recipe
from lrfr_plugins.runner import execute, prepare_run_dir

RECIPE = """
lrfr: 1
name: tiny-eval
data: {name: synthetic, params: {num_identities: 8, images_per_identity: 4}}
backbone: {name: tiny, params: {embedding_size: 16, widths: [4, 8, 8, 16]}}
head: {name: arcface, params: {scale: 16.0, margin: 0.2}}
train: {epochs: 1, batch_size: 16, threads: 1}
eval: []
export: {onnx: true}
"""
PROTOCOL = ["num_identities=6", "images_per_identity=3", "num_pairs=40", "sizes=[112,14]"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from lrfr_plugins.manager import get_plugin_manager
    from lrfr_plugins.registry import Registry

    registry = Registry.from_manager(get_plugin_manager(entry_points=False))
    root = tmp_path_factory.mktemp("eval")
    (root / "r.yaml").write_text(textwrap.dedent(RECIPE))
    prepare_run_dir(root / "run", overwrite=False, resume=False)
    execute(load_recipe(root / "r.yaml", registry=registry), registry, root / "run", progress=False)
    return root / "run"


def results_of(registry, model, **kw):
    return evaluate(model, "synthetic", PROTOCOL, registry=registry, progress=False, **kw)[1]["results"]


def test_run_checkpoint_state_dict_and_onnx_agree(run_dir, registry, tmp_path):
    by_run = results_of(registry, run_dir)
    assert set(by_run) == {"112", "14"} and set(by_run["112"]) == {"accuracy", "std", "threshold"}
    assert results_of(registry, run_dir / "checkpoint.pt") == by_run
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["backbone"]
    torch.save(state, tmp_path / "backbone.pth")
    with pytest.raises(LrfrError, match=r"backbone.pth: a bare state dict does not say its architecture.*--backbone"):
        results_of(registry, tmp_path / "backbone.pth")
    with pytest.raises(LrfrError, match=r"tiny: weights file .*backbone.pth does not match the model"):
        results_of(registry, tmp_path / "backbone.pth", backbone="tiny")  # default widths differ from the run's
    onnx = results_of(registry, run_dir / "model.onnx")
    for size in by_run:
        assert onnx[size]["accuracy"] == pytest.approx(by_run[size]["accuracy"], abs=1e-9)
        assert onnx[size]["threshold"] == pytest.approx(by_run[size]["threshold"], abs=1e-5)


def test_a_model_pack_folder_picks_its_recognition_model(run_dir, registry, tmp_path):
    pack = tmp_path / "buffalo_x"
    pack.mkdir()
    shutil.copy(run_dir / "model.onnx", pack / "w600k_tiny.onnx")
    detector = torch.nn.Conv2d(3, 2, 3)  # a stand-in detector: 640x640 input
    with pytest.warns(DeprecationWarning):  # the legacy exporter, as lrfr_plugins.export uses
        torch.onnx.export(detector, (torch.zeros(1, 3, 640, 640),), str(pack / "det_10g.onnx"), dynamo=False)
    model = load_model(pack, registry=registry)
    assert model.description["path"].endswith("w600k_tiny.onnx") and model.description["input_mean"] == 127.5
    with pytest.raises(LrfrError, match=r"det_10g.onnx: the model's input is \[1, 3, 640, 640\]; .*112x112"):
        load_model(pack / "det_10g.onnx", registry=registry)


def test_bad_models_and_parameters_are_named(run_dir, registry, tmp_path):
    with pytest.raises(LrfrError, match=r"nowhere: no such file or directory"):
        load_model(tmp_path / "nowhere", registry=registry)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LrfrError, match=r"empty: not a run directory \(no recipe.resolved.yaml\) and no .onnx"):
        load_model(tmp_path / "empty", registry=registry)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(LrfrError, match=r"junk.onnx: not a readable ONNX model"):
        load_model(tmp_path / "junk.onnx", registry=registry)
    with pytest.raises(ParamsError, match=r"num_pair: unknown parameter; did you mean 'num_pairs'"):
        evaluate(run_dir, "synthetic", ["num_pair=4"], registry=registry, progress=False)
    assert protocol_params(["root=/data/lfw", "sizes=[112, 7]", "a.b=1"]) == {
        "root": "/data/lfw", "sizes": [112, 7], "a": {"b": 1}}


def test_cli_json_contract_and_outputs(run_dir, lrfr, tmp_path):
    args = ["eval", str(run_dir), "-p", "synthetic", *[a for p in PROTOCOL for a in ("--set", p)]]
    result = lrfr(*args, "--json", "--out", str(tmp_path / "ev"))
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["protocol"] == "synthetic" and payload["preset"] == "lozhkina"
    assert set(payload["results"]) == {"112", "14"} and payload["model"]["kind"] == "run"
    saved = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert set(saved["curves"]) == {"roc:112", "roc:14"}
    assert (tmp_path / "ev" / "accuracy_vs_resolution.png").read_bytes()[:4] == b"\x89PNG"
    text = lrfr(*args, "--no-progress")
    assert text.returncode == 0 and "| 14px " in text.stdout and "model: run" in text.stdout
    missing = lrfr("eval", str(tmp_path / "nope.onnx"), "-p", "synthetic")
    assert missing.returncode == 1 and "nope.onnx: no such file or directory" in missing.stderr
