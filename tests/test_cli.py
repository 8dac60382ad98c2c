"""The lrfr command line as a user runs it: exit status 1 and one clear message for every bad input."""

import json
import textwrap

import pytest

import lrfr_plugins

from conftest import ROOT, run_lrfr

TINY = """
lrfr: 1
name: tiny
seed: 0
data: {name: synthetic, params: {num_identities: 12, images_per_identity: 8}}
backbone: {name: tiny, params: {embedding_size: 32, widths: [8, 8, 16, 16]}}
head: {name: arcface, params: {scale: 16.0, margin: 0.3}}
degradations: [{name: cross-resolution}]
train: {epochs: 2, batch_size: 16, optimizer: {lr: 0.05}, threads: 1}
eval: [{name: synthetic, params: {num_identities: 12, images_per_identity: 4, num_pairs: 60, sizes: [112, 14]}}]
export: {onnx: true}
"""


@pytest.fixture
def tiny_recipe(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(TINY))
    return path


def test_version():
    result = run_lrfr("--version")
    assert result.returncode == 0 and lrfr_plugins.__version__ in result.stdout


def test_help_explains_the_commands():
    result = run_lrfr("--help")
    assert result.returncode == 0
    for command in ("run", "validate", "plugins", "show"):
        assert command in result.stdout
    assert "lrfr run recipes/demo.yaml" in result.stdout


def test_plugins_json_lists_kind_name_provider_version():
    result = run_lrfr("plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {"kind": "head", "name": "arcface", "provider": "lrfr-plugins", "version": lrfr_plugins.__version__} \
        .items() <= next(r for r in rows if r["name"] == "arcface").items()
    assert {r["kind"] for r in rows} >= {"backbone", "head", "degradation", "dataset", "protocol"}


def test_show_prints_parameters_types_defaults_docs():
    result = run_lrfr("show", "head", "arcface")
    assert result.returncode == 0
    assert "head 'arcface' from lrfr-plugins" in result.stdout
    line = next(l for l in result.stdout.splitlines() if l.startswith("| margin"))
    assert "float" in line and "0.5" in line and "angular margin" in line


def test_show_unknown_name_is_a_clean_error():
    result = run_lrfr("show", "head", "arcfce")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: unknown head 'arcfce'.\n  Did you mean 'arcface'?")
    assert "Traceback" not in result.stderr


def test_validate_ok_prints_resolved_recipe(tiny_recipe):
    result = run_lrfr("validate", str(tiny_recipe), "--set", "head.params.margin=0.2")
    assert result.returncode == 0, result.stderr
    assert "margin: 0.2" in result.stdout and "provider:" in result.stdout
    assert "is a valid recipe" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--set", "head.name=arcfce"], "Error: --set head.name=arcfce: head.name: unknown head 'arcfce'."),
    (["--set", "head.params.margn=0.3"], "head.params: 1 problem for head 'arcface' (lrfr-plugins 0.1.0):\n"
                                         "  - margn: unknown parameter; did you mean 'margin'?"),
    (["--set", "train.epochs=two"], "--set train.epochs=two: train: 1 problem for 'train':\n"
                                    "  - epochs: must be an integer, got 'two'"),
    (["--set", "data=null"], "--set data=null: data: required: the dataset to use"),
    (["--set", "eval=5"], "eval: must be a list of {name: ..., params: {...}} entries, got 5."),
])
def test_validate_errors_exit_1_with_path_and_fix(tiny_recipe, args, message):
    result = run_lrfr("validate", str(tiny_recipe), *args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_base_recipe_and_traceback_flag(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\n")
    result = run_lrfr("validate", str(child))
    assert result.returncode == 1 and "extends: base recipe 'base.yaml' not found" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_lrfr("--traceback", "validate", str(child))
    assert result.returncode == 1 and "Traceback" in result.stderr


@pytest.mark.slow
def test_run_writes_a_complete_run_directory_and_refuses_to_clobber_it(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    result = run_lrfr("run", str(tiny_recipe), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    for name in ("recipe.resolved.yaml", "metrics.json", "metrics.jsonl", "checkpoint.pt", "model.onnx",
                 "results.md", "run.log", "accuracy_vs_resolution.png"):
        assert (out / name).is_file(), name
    assert (out / "accuracy_vs_resolution.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 112px" in result.stdout and "| 14px" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["resolution"] for r in metrics["eval"][0]["rows"]] == ["112px", "14px"]
    assert metrics["train"]["steps"] == 2 * (12 * 8 // 16)
    resolved = (out / "recipe.resolved.yaml").read_text()
    assert "distribution: lrfr-plugins" in resolved and "fallback: th_mm" in resolved

    again = run_lrfr("run", str(tiny_recipe), "--out", str(out))
    assert again.returncode == 1
    assert f"Error: {out}: this directory already holds a run. Pass --resume {out} to continue it, --overwrite " \
           "to replace it, or --out DIR to write elsewhere." in again.stderr
    assert (out / "model.onnx").is_file()  # nothing lost

    resumed = run_lrfr("run", "--resume", str(out), "--no-progress")  # all epochs done: evaluates and exports again
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "metrics.json").read_text())["train"]["steps"] == metrics["train"]["steps"]

    replaced = run_lrfr("run", str(tiny_recipe), "--out", str(out), "--overwrite", "--no-progress",
                        "--set", "train.epochs=1")
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads((out / "metrics.json").read_text())["train"]["steps"] == 12 * 8 // 16


def test_resume_needs_a_run(tmp_path):
    result = run_lrfr("run", "--resume", str(tmp_path))
    assert result.returncode == 1
    assert "nothing to resume: no run found there" in result.stderr


def test_run_without_recipe_says_what_to_do():
    result = run_lrfr("run")
    assert result.returncode == 1 and "missing RECIPE: e.g. 'lrfr run recipes/demo.yaml'" in result.stderr


def test_console_script_is_installed():
    import shutil

    assert shutil.which("lrfr"), "the 'lrfr' console script is not on PATH; run scripts/setup.sh"
    assert ROOT.joinpath("pyproject.toml").read_text().count('lrfr = "lrfr_plugins.cli:main"') == 1
