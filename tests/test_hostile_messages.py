"""Messages that tell the truth: an error names what really happened and where it really came from (issue 14, item 7).

A non-finite loss says whether a checkpoint exists; a bad ``--set`` value is blamed on that ``--set`` (and a value of an
``extends:`` base on the base file); ``lrfr eval`` says what a file it cannot use actually is; a recipe's list field
given as a mapping is an error; ``lrfr report`` names a metrics.json of the wrong shape instead of a traceback.
"""

import json
import textwrap
import zipfile

import pytest
import torch
import yaml

from lrfr_plugins.engine.models import load_model
from lrfr_plugins.errors import LrfrError, RecipeError, RunDirError
from lrfr_plugins.recipe import load_recipe
from lrfr_plugins.report import make_report

RECIPE = """
lrfr: 1
name: msg
data: {name: synthetic, params: {num_identities: 8, images_per_identity: 4}}
backbone: {name: tiny, params: {embedding_size: 16, widths: [4, 8, 8, 16]}}
head: {name: approach2, params: {scale: 16.0}}
degradations:
  - {name: cross-resolution, params: {sizes: [16]}}
train: {epochs: 3, batch_size: 16, threads: 1, tensorboard: false}
eval:
  - {name: synthetic, params: {num_identities: 6, images_per_identity: 3, num_pairs: 40, sizes: [112, 14]}}
export: {onnx: false}
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(path, overrides=(), registry=None):
    with pytest.raises(RecipeError) as info:
        load_recipe(path, list(overrides), registry=registry)
    return str(info.value)


# ------------------------------------------------------------------------------------ 1. non-finite loss
def test_a_loss_that_goes_nan_before_any_checkpoint_says_none_was_written(tmp_path, lrfr):
    recipe = write(tmp_path, "r.yaml", RECIPE)
    # lr 1e30 blows the weights up at the first step: the loss of step 2 is NaN, before the first checkpoint (epoch end)
    result = lrfr("run", str(recipe), "--out", str(tmp_path / "run"), "--no-progress",
                  "--set", "train.optimizer.lr=1e30", "--set", "eval=[]")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: training stopped at step 2 (epoch 1): the loss is nan")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert "No checkpoint was written" in line and "nothing to resume" in line
    assert "lower train.optimizer.lr (now 1e+30)" in line and "check the training data" in line
    assert "last good checkpoint is kept" not in line and "--resume" not in line


def test_a_loss_that_goes_nan_after_a_checkpoint_names_it_and_its_step(tmp_path, registry, monkeypatch):
    from lrfr_plugins.engine.partial_fc import PartialFC
    from lrfr_plugins.runner import execute, prepare_run_dir

    forward, calls = PartialFC.forward, []

    def nan_from_the_fourth_step(self, *args, **kwargs):  # 32 images / 16 = 2 steps per epoch: epoch 1 is clean
        calls.append(1)
        loss = forward(self, *args, **kwargs)
        return loss * float("nan") if len(calls) >= 4 else loss

    monkeypatch.setattr(PartialFC, "forward", nan_from_the_fourth_step)
    recipe = load_recipe(write(tmp_path, "r.yaml", RECIPE), ["eval=[]"], registry=registry)
    run_dir = prepare_run_dir(tmp_path / "run", overwrite=False, resume=False)
    with pytest.raises(LrfrError) as info:
        execute(recipe, registry, run_dir, progress=False)
    message = str(info.value)
    assert message.startswith("training stopped at step 4 (epoch 2): the loss is nan")
    assert f"The last good checkpoint, {run_dir / 'checkpoint.pt'} (step 2, epoch 1), is kept" in message
    assert f"lrfr run --resume {run_dir}" in message and "recipe.resolved.yaml" in message
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"] == 2


# ---------------------------------------------------------------------------- 2. blame the right source
@pytest.mark.parametrize("assignment, message", [
    ("train.epochs=-1", "train: 1 problem for 'train':\n  - epochs: must be >= 0, got -1"),
    ("train.epochs=abc", "train: 1 problem for 'train':\n  - epochs: must be an integer, got 'abc'"),
    ("head.name=arcfoo", "head.name: unknown head 'arcfoo'."),
    ("head.params.scale=x", "head.params: 1 problem for head 'approach2'"),
    ("data=null", "data: required: the dataset to use"),
])
def test_a_bad_set_value_is_blamed_on_that_set(tmp_path, registry, assignment, message):
    path = write(tmp_path, "r.yaml", RECIPE)
    text = problems(path, ["train.batch_size=16", assignment], registry)
    assert text.startswith(f"--set {assignment}: {message}"), text
    assert "r.yaml" not in text


def test_a_bad_set_value_is_blamed_on_the_set_in_the_cli_too(tmp_path, lrfr):
    result = lrfr("validate", str(write(tmp_path, "r.yaml", RECIPE)), "--set", "train.epochs=-1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: --set train.epochs=-1: train: 1 problem for 'train':\n"
                                    "  - epochs: must be >= 0, got -1")


def test_a_top_level_key_that_only_a_set_wrote_is_blamed_on_the_set(tmp_path, registry):
    text = problems(write(tmp_path, "r.yaml", RECIPE), ["trian.epochs=1"], registry)
    assert text.startswith("--set trian.epochs=1: trian: unknown top-level key. Did you mean 'train'?"), text


def test_a_list_field_that_only_a_set_wrote_is_blamed_on_the_set(tmp_path, registry):
    text = problems(write(tmp_path, "r.yaml", RECIPE), ["finetune.x=1"], registry)
    assert text.startswith("--set finetune.x=1: finetune: must be a list"), text


def test_a_negative_list_index_in_a_set_is_blamed_on_the_set(tmp_path, registry):
    text = problems(write(tmp_path, "r.yaml", RECIPE), ["eval.-1.params.num_identities=-5"], registry)
    assert text.startswith("--set eval.-1.params.num_identities=-5: eval.0.params: 1 problem for protocol 'synthetic'")


def test_two_bad_sets_in_one_section_are_each_blamed_on_their_own(tmp_path, registry):
    text = problems(write(tmp_path, "r.yaml", RECIPE), ["train.epochs=-1", "train.batch_size=1"], registry)
    assert "--set train.epochs=-1: train: 1 problem for 'train':\n  - epochs: must be >= 0, got -1" in text
    assert "--set train.batch_size=1: train: 1 problem for 'train':\n  - batch_size: must be >= 2, got 1" in text


def test_a_cross_field_problem_names_the_set_and_the_file_it_combines_with(tmp_path, registry):
    # m_min 0.6 is fine alone; it is wrong together with the file's m_max (approach2's default 0.5)
    path = write(tmp_path, "r.yaml", RECIPE)
    text = problems(path, ["head.params.m_min=0.6"], registry)
    assert text.startswith(f"--set head.params.m_min=0.6 with {path.resolve()}: head.params: 1 problem for head "
                           "'approach2'"), text
    assert "m_min (0.6) must not exceed m_max (0.5)" in text


def test_a_set_that_renames_a_slot_is_named_when_the_files_params_do_not_fit_the_new_plugin(tmp_path, registry):
    path = write(tmp_path, "r.yaml", RECIPE.replace("params: {scale: 16.0}", "params: {scale: 16.0, m_min: 0.3}"))
    text = problems(path, ["head.name=arcface"], registry)
    assert text.startswith(f"{path.resolve()} with --set head.name=arcface: head.params: 1 problem for head "
                           "'arcface'"), text
    assert "m_min: unknown parameter" in text


def test_problems_from_a_base_and_its_child_in_one_section_name_each_file(tmp_path, registry):
    write(tmp_path, "base.yaml", RECIPE.replace("batch_size: 16", "batch_size: 1"))
    child = write(tmp_path, "child.yaml", "extends: base.yaml\ntrain: {epochs: -1}\n")
    text = problems(child, registry=registry)
    assert "base.yaml: train: 1 problem for 'train':\n  - batch_size: must be >= 2, got 1" in text
    assert "child.yaml: train: 1 problem for 'train':\n  - epochs: must be >= 0, got -1" in text


def test_a_learning_rate_beyond_float32_is_a_recipe_error_not_an_optimizer_crash(tmp_path, registry):
    text = problems(write(tmp_path, "r.yaml", RECIPE), ["train.optimizer.lr=1e300"], registry)
    assert text.startswith("--set train.optimizer.lr=1e300: train.optimizer: 1 problem for 'train.optimizer':\n"
                           "  - lr: must be <= "), text


# ---------------------------------------------------------------------------- 3. lrfr eval: what the file is
@pytest.fixture
def tiny_state(registry):
    return registry.create("backbone", "tiny", embedding_size=16, widths=[4, 8, 8, 16]).state_dict()


def load(registry, path, **kw):
    with pytest.raises(LrfrError) as info:
        load_model(path, registry=registry, device="cpu", **kw)
    return str(info.value)


ACCEPTS = "lrfr eval takes a run directory of 'lrfr run'"


@pytest.mark.parametrize("backbone", [None, "tiny"])
def test_eval_of_a_text_file_says_it_is_text_not_a_state_dict(tmp_path, registry, backbone):
    (tmp_path / "notes.txt").write_text("hello, these are my notes\n")
    text = load(registry, tmp_path / "notes.txt", backbone=backbone)
    assert text.startswith(f"{tmp_path / 'notes.txt'}: not a model file lrfr knows: it is text, starting "
                           "'hello, these are my notes'"), text
    assert "bare state dict" not in text and ACCEPTS in text


def test_eval_of_random_bytes_shows_the_first_bytes(tmp_path, registry):
    (tmp_path / "blob.pt").write_bytes(bytes([0x3f, 0xa2, 0x00, 0x11]) + bytes(range(40)))
    text = load(registry, tmp_path / "blob.pt")
    assert "blob.pt: not a model file lrfr knows: its first bytes are 3f a2 00 11 00 01 02 03" in text
    assert "the start of neither a PyTorch file (zip or pickle) nor ONNX" in text and ACCEPTS in text


def test_eval_of_an_empty_file_says_it_is_empty(tmp_path, registry):
    (tmp_path / "backbone.pth").write_bytes(b"")
    assert "backbone.pth: not a model file lrfr knows: the file is empty (0 bytes)" in load(registry,
                                                                                          tmp_path / "backbone.pth")


def test_eval_of_a_json_file_says_it_is_json(tmp_path, registry):
    (tmp_path / "metrics.json").write_text(json.dumps({"run": "x", "eval": []}))
    assert "metrics.json: not a model file lrfr knows: it is a JSON file" in load(registry, tmp_path / "metrics.json")


def test_eval_of_a_zip_that_is_not_a_torch_file_lists_what_it_holds(tmp_path, registry):
    with zipfile.ZipFile(tmp_path / "model.zip", "w") as archive:
        archive.writestr("readme.txt", "hi")
        archive.writestr("weights/a.npy", "x")
    text = load(registry, tmp_path / "model.zip")
    assert ("model.zip: not a model file lrfr knows: a zip archive without a PyTorch file's data.pkl (it holds "
            "readme.txt, weights/a.npy)") in text


def test_eval_of_a_pickled_module_is_refused_without_running_it(tmp_path, registry):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "whole.pt")
    text = load(registry, tmp_path / "whole.pt")
    assert "whole.pt: a PyTorch file holding pickled Python objects" in text and "weights_only=True" in text
    assert "torch.save(model.state_dict()" in text


def test_eval_of_a_torch_file_holding_a_list_says_so(tmp_path, registry):
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    assert "list.pt: a PyTorch file holding a list, not a state dict" in load(registry, tmp_path / "list.pt")


def test_eval_of_a_bare_state_dict_asks_for_its_architecture(tmp_path, registry):
    torch.save(registry.create("backbone", "tiny").state_dict(), tmp_path / "backbone.pth")
    text = load(registry, tmp_path / "backbone.pth")
    assert text.startswith(f"{tmp_path / 'backbone.pth'}: a bare state dict does not say its architecture")
    model = load_model(tmp_path / "backbone.pth", registry=registry, device="cpu", backbone="tiny")
    assert model.description["kind"] == "state-dict"


def test_eval_of_an_lrfr_checkpoint_outside_its_run_directory_says_what_it_is(tmp_path, registry, tiny_state):
    torch.save({"backbone": tiny_state, "step": 7, "epoch": 1}, tmp_path / "checkpoint.pt")
    text = load(registry, tmp_path / "checkpoint.pt")
    assert "checkpoint.pt: an lrfr checkpoint (step 7) without its run directory" in text
    assert "recipe.resolved.yaml" in text and "--backbone" in text and "bare state dict" not in text


def make_run(tmp_path, state):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.resolved.yaml").write_text(yaml.safe_dump(
        {"name": "r", "backbone": {"name": "tiny", "params": {"embedding_size": 16, "widths": [4, 8, 8, 16]}}}))
    if state is not None:
        torch.save({"backbone": state, "step": 2, "epoch": 1}, run / "checkpoint.pt")
    return run


def test_eval_of_a_file_in_a_run_directory_that_is_not_its_checkpoint_says_what_it_is(tmp_path, registry, tiny_state):
    run = make_run(tmp_path, tiny_state)
    (run / "run.log").write_text("epoch 1/3: step 2, loss 4.1\n")
    assert "run.log: not a model file lrfr knows: it is text" in load(registry, run / "run.log")
    assert load_model(run / "checkpoint.pt", registry=registry, device="cpu").description["kind"] == "run"


def test_eval_of_a_run_directory_without_a_checkpoint_says_the_run_wrote_none(tmp_path, registry):
    text = load(registry, make_run(tmp_path, None))
    assert "run: a run directory without checkpoint.pt: the run stopped before its first checkpoint" in text


def test_eval_of_a_run_directory_with_a_damaged_checkpoint_says_what_it_holds(tmp_path, registry, tiny_state):
    run = make_run(tmp_path, None)
    (run / "checkpoint.pt").write_text("oops")
    assert "checkpoint.pt: not a model file lrfr knows: it is text, starting 'oops'" in load(registry, run)


def test_eval_of_an_onnx_model_without_the_onnx_suffix_is_measured_as_onnx(tmp_path, registry, tiny_state):
    from lrfr_plugins.export.onnx import export_onnx

    pytest.importorskip("onnxruntime")
    model = registry.create("backbone", "tiny", embedding_size=16, widths=[4, 8, 8, 16]).eval()
    export_onnx(model, tmp_path / "model.onnx")
    (tmp_path / "model.onnx").rename(tmp_path / "model.bin")
    assert load_model(tmp_path / "model.bin", registry=registry, device="cpu").description["kind"] == "onnx"


def test_eval_cli_of_a_text_file_is_one_error_line(tmp_path, lrfr):
    (tmp_path / "notes.txt").write_text("hello\n")
    result = lrfr("eval", str(tmp_path / "notes.txt"), "-p", "synthetic", "--no-progress")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"Error: {tmp_path / 'notes.txt'}: not a model file lrfr knows: it is text")
    assert len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------- 4. list fields as mappings
@pytest.mark.parametrize("section, skip", [("eval", "benchmarks"), ("degradations", "degradations"),
                                           ("finetune", "fine-tuning")])
def test_a_list_field_written_as_a_mapping_is_an_error_with_the_fix(tmp_path, registry, section, skip):
    text = RECIPE.split("degradations:")[0] + "train: {epochs: 1}\n" + f"{section}: {{}}\n"
    message = problems(write(tmp_path, "r.yaml", text), registry=registry)
    assert (f"r.yaml: {section}: must be a list of {{name: ..., params: {{...}}}} entries, got a mapping ({{}}). "
            f"Write '{section}: []' for no {skip}, or list them") in message


def test_a_single_slot_written_without_the_list_dash_is_told_to_add_it(tmp_path, registry):
    text = RECIPE.split("degradations:")[0] + "eval: {name: synthetic}\n"
    message = problems(write(tmp_path, "r.yaml", text), registry=registry)
    assert "r.yaml: eval: must be a list" in message and "'eval: [{name: synthetic, params: {...}}]'" in message


@pytest.mark.parametrize("value", ["''", "false", "0"])
def test_a_list_field_that_is_falsy_but_not_a_list_is_an_error(tmp_path, registry, value):
    text = RECIPE.split("degradations:")[0] + f"eval: {value}\n"
    assert "r.yaml: eval: must be a list" in problems(write(tmp_path, "r.yaml", text), registry=registry)


# ---------------------------------------------------------------------------- 5. lrfr report: metrics.json
def write_metrics(tmp_path, text, name="run"):
    run = tmp_path / name
    run.mkdir()
    (run / "metrics.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    return run


def report_error(run):
    with pytest.raises(RunDirError) as info:
        make_report([run], None)
    return str(info.value)


@pytest.mark.parametrize("text, found", [("[1, 2]", "a list"), ("3", "a number"), ('"done"', "a string"),
                                         ("NaN", "a number"), ("null", "null")])
def test_report_of_a_metrics_json_that_is_not_an_object_names_the_file(tmp_path, text, found):
    run = write_metrics(tmp_path, text)
    assert report_error(run) == (f"{run / 'metrics.json'}: not a metrics.json of 'lrfr run': it holds {found}, not a "
                                 "JSON object. Give the run directory of a finished run.")


def test_report_of_a_metrics_json_that_is_not_an_object_is_one_line_in_the_cli(tmp_path, lrfr):
    run = write_metrics(tmp_path, "[1, 2]")
    result = lrfr("report", str(run), "--out", str(tmp_path / "report"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"Error: {run / 'metrics.json'}: not a metrics.json of 'lrfr run'")


@pytest.mark.parametrize("data, problem", [
    ({"run": "x"}, "no 'eval' list"),
    ({"run": "x", "eval": {"protocol": "lfw"}}, "'eval' is a mapping, not a list"),
    ({"run": "x", "eval": [3]}, "eval[0] is a number, not an object"),
    ({"run": "x", "eval": [{"results": {}}]}, "eval[0] has no 'protocol' name"),
    ({"run": "x", "eval": [{"protocol": "lfw", "results": [1]}]}, "eval[0].results is a list, not an object"),
    ({"run": "x", "eval": [{"protocol": "lfw", "results": {"112": 0.9}}]},
     "eval[0].results['112'] is a number, not an object"),
    ({"run": "x", "eval": [{"protocol": "lfw", "results": {"112": {"accuracy": "high"}}}]},
     "eval[0].results['112'].accuracy is a string, not a number"),
    ({"run": "x", "eval": [{"protocol": "lfw", "rows": "none", "results": {}}]},
     "eval[0].rows is a string, not a list"),
    ({"run": ["x"], "eval": []}, "'run' is a list, not a string"),
])
def test_report_of_a_metrics_json_missing_or_mistyping_fields_names_the_field(tmp_path, data, problem):
    run = write_metrics(tmp_path, json.dumps(data))
    assert report_error(run) == f"{run / 'metrics.json'}: not a metrics.json of 'lrfr run': {problem}."


def test_report_of_a_metrics_json_that_is_not_utf8_names_the_byte(tmp_path):
    run = write_metrics(tmp_path, b'{"run": "\xff"}')
    assert report_error(run) == (f"{run / 'metrics.json'}: not UTF-8 text (byte 9 is 0xff), so not a metrics.json of "
                                 "'lrfr run'.")


def test_report_of_an_unreadable_metrics_json_says_why(tmp_path, monkeypatch):
    import pathlib

    run = write_metrics(tmp_path, "{}")
    read_bytes = pathlib.Path.read_bytes

    def denied(self):
        if self.name == "metrics.json":
            raise PermissionError(13, "Permission denied")
        return read_bytes(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", denied)
    assert report_error(run) == f"{run / 'metrics.json'}: cannot read it: Permission denied."


def test_report_of_a_null_metric_shows_a_missing_cell_instead_of_crashing(tmp_path):
    results = {"112": {"accuracy": None, "std": None}, "14": {"accuracy": 0.8, "std": 0.01}}
    run = write_metrics(tmp_path, json.dumps({"run": "x", "eval": [{"protocol": "lfw", "results": results}]}))
    _, rows, _ = make_report([run], None)
    assert [(r.key, r.cells) for r in rows] == [("112", {}), ("14", {"x": (0.8, 0.01)})]


def test_report_of_a_curve_without_its_lists_names_the_curve(tmp_path):
    ev = {"protocol": "lfw", "results": {"112": {"accuracy": 0.9}}, "curves": {"roc:112": {"fpr": [0, 1]}}}
    run = write_metrics(tmp_path, json.dumps({"run": "x", "eval": [ev]}))
    assert report_error(run) == (f"{run / 'metrics.json'}: not a metrics.json of 'lrfr run': eval[0].curves['roc:112'] "
                                 "is not an object of number lists (fpr and tpr).")


def test_eval_of_a_torchscript_archive_is_refused_without_running_it(tmp_path, registry):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "scripted.pt")
    text = load(registry, tmp_path / "scripted.pt")
    assert "scripted.pt: a TorchScript archive (torch.jit.save), which lrfr does not run" in text
    assert "truncated" not in text


def test_eval_of_a_truncated_torch_file_says_it_is_damaged(tmp_path, registry, tiny_state):
    torch.save(tiny_state, tmp_path / "whole.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:300])
    text = load(registry, tmp_path / "cut.pt")
    assert "cut.pt: a zip archive (as PyTorch files are) that is damaged or truncated" in text
    assert "Copy or download it again" in text
