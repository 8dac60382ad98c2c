"""The README's main job, exactly as a user runs it: `lrfr run recipes/demo.yaml`.

This is the slowest test (about 3 minutes on 2 cores). It pins the issue's promise: accuracy on held-out
synthetic identities is clearly above chance at 112 px and falls as resolution falls, and the run produces an
ONNX model and a results table.
"""

import json

import pytest

from conftest import ROOT, run_lrfr


@pytest.mark.slow
def test_demo_trains_evaluates_and_exports(tmp_path):
    out = tmp_path / "demo"
    result = run_lrfr("run", str(ROOT / "recipes" / "demo.yaml"), "--out", str(out), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train:" in result.stderr and "eval synthetic" in result.stderr  # progress bars were shown
    assert "| resolution | accuracy | sem" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    accuracy = {row["resolution"]: row["accuracy"] for row in metrics["eval"][0]["rows"]}
    assert list(accuracy) == ["112px", "56px", "28px", "14px", "7px"]
    assert accuracy["112px"] >= 0.80, accuracy
    values = list(accuracy.values())
    assert all(later <= earlier + 0.02 for earlier, later in zip(values, values[1:])), accuracy
    assert accuracy["7px"] < accuracy["28px"] < accuracy["112px"], accuracy
    assert [ev["protocol"] for ev in metrics["eval"]] == ["synthetic", "synthetic-survface", "synthetic-scface"]
    assert set(metrics["eval"][2]["results"]) == {"d1", "d2", "d3"}  # every protocol shape ran
    assert (out / "model.onnx").stat().st_size > 0
    assert metrics["export"]["parity_max_abs_diff"] < 1e-3
