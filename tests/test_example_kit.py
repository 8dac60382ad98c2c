"""The second example third-party package, examples/lrfr-lowres-kit (one plugin of each kind, written against the
public API only): discovered for real, its own conformance tests pass, and its recipe runs all five end to end."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from plugin_factory import make_distribution

KIT = ROOT / "examples" / "lrfr-lowres-kit"
DIST, VERSION = "lrfr-lowres-kit", "0.1.0"
PLUGINS = {("head", "elasticface-arc"), ("quality", "tenengrad"), ("degradation", "blur-jpeg"),
           ("finetuner", "cross-res-triplet"), ("protocol", "pairs-csv")}


@pytest.fixture(scope="module")
def kit_env(tmp_path_factory):
    """The kit installed as pip would (a dist-info with its entry point) on PYTHONPATH; only it is loaded."""
    site = tmp_path_factory.mktemp("site")
    make_distribution(site, DIST, VERSION, {"lowres-kit": "lrfr_lowres_kit"}, {})
    assert 'lowres-kit = "lrfr_lowres_kit"' in (KIT / "pyproject.toml").read_text()  # mirrors the real pyproject
    env = {**os.environ, "LRFR_LOAD_PLUGINS": DIST,
           "PYTHONPATH": os.pathsep.join([str(site), str(KIT), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("LRFR_BLOCK_PLUGINS", None)
    return env


def run(env, *args, cwd=ROOT):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_plugins_lists_the_five_kit_plugins_with_their_provider(kit_env):
    result = run(kit_env, "-m", "lrfr_plugins.cli", "plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = [r for r in json.loads(result.stdout) if r["provider"] == DIST]
    assert {(r["kind"], r["name"]) for r in rows} == PLUGINS
    assert all(r["version"] == VERSION for r in rows)


def test_the_kits_own_conformance_tests_pass(kit_env):
    result = run(kit_env, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(KIT), str(KIT / "tests"),
                 cwd=KIT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout, result.stdout


@pytest.mark.slow
def test_the_kit_recipe_runs_all_five_plugins(kit_env, tmp_path):
    pairs = tmp_path / "pairs"
    made = run(kit_env, "-m", "lrfr_lowres_kit.demo_data", str(pairs), "--identities", "10", "--pairs", "60")
    assert made.returncode == 0, made.stderr
    out = tmp_path / "run"
    result = run(kit_env, "-m", "lrfr_plugins.cli", "run", str(KIT / "recipe.yaml"), "--out", str(out),
                 "--no-progress", "--set", f"eval.0.params.root={pairs}")
    assert result.returncode == 0, result.stderr
    resolved = (out / "recipe.resolved.yaml").read_text()
    assert resolved.count(f"distribution: {DIST}") == 5, resolved
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["steps"] > 0
    finetune = metrics["finetune"][0]
    assert finetune["finetuner"] == "cross-res-triplet" and finetune["steps"] == 5
    for evaluation in (metrics["eval"][0], metrics["eval_before_finetune"][0]):
        assert evaluation["protocol"] == "pairs-csv"
        assert [row["resolution"] for row in evaluation["rows"]] == ["112px", "14px"]
        assert set(evaluation["results"]) == {"112", "14"}
        assert all(0 <= row["accuracy"] <= 1 for row in evaluation["rows"])
        assert evaluation["settings"]["pairs"] == 60
    assert "pairs-csv" in (out / "results.md").read_text()
