"""The example third-party package under examples/ is discovered for real and its head trains in a recipe."""

import json
import os
import textwrap

import pytest

from conftest import ROOT, run_lrfr
from plugin_factory import make_distribution

EXAMPLE = ROOT / "examples" / "lrfr-curricularface"


@pytest.fixture
def installed_example(tmp_path):
    """Install the example as pip would (a dist-info with its entry points) into a folder on PYTHONPATH."""
    site = tmp_path / "site"
    make_distribution(site, "lrfr-curricularface", "0.1.0", {"curricularface": "lrfr_curricularface"}, {})
    entry = (EXAMPLE / "pyproject.toml").read_text()
    assert 'curricularface = "lrfr_curricularface"' in entry  # the dist-info mirrors the real pyproject
    pythonpath = os.pathsep.join([str(site), str(EXAMPLE), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": pythonpath}


def without_load_filter(env):
    full = {**os.environ, **env}
    full.pop("LRFR_LOAD_PLUGINS", None)
    return full


def lrfr_with(env, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "lrfr_plugins.cli", *args], cwd=ROOT, env=without_load_filter(env),
                          capture_output=True, text=True, timeout=600)


def test_plugins_lists_the_third_party_head_with_its_provider(installed_example):
    result = lrfr_with(installed_example, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    row = next(r for r in json.loads(result.stdout) if r["name"] == "curricularface")
    assert (row["kind"], row["provider"], row["version"]) == ("head", "lrfr-curricularface", "0.1.0")
    # ... and LRFR_LOAD_PLUGINS="" turns it off again.
    hidden = run_lrfr("plugins", "--json", env=installed_example)
    assert "curricularface" not in hidden.stdout


@pytest.mark.slow
def test_a_recipe_using_the_third_party_head_runs(installed_example, tmp_path):
    recipe = tmp_path / "curricular.yaml"
    recipe.write_text(textwrap.dedent("""
        lrfr: 1
        name: curricular
        data: {name: synthetic, params: {num_identities: 10, images_per_identity: 8}}
        backbone: {name: tiny, params: {embedding_size: 32, widths: [8, 8, 16, 16]}}
        head: {name: curricularface, params: {scale: 16.0}}
        train: {epochs: 1, batch_size: 16, threads: 1}
        eval: [{name: synthetic, params: {num_identities: 10, images_per_identity: 4, num_pairs: 40, sizes: [112]}}]
        export: {onnx: false}
    """))
    out = tmp_path / "run"
    result = lrfr_with(installed_example, "run", str(recipe), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    resolved = (out / "recipe.resolved.yaml").read_text()
    assert "distribution: lrfr-curricularface" in resolved and "momentum: 0.01" in resolved
    assert json.loads((out / "metrics.json").read_text())["train"]["steps"] == 5


def test_curricularface_head_behaves(installed_example):
    import sys

    sys.path.insert(0, str(EXAMPLE))
    try:
        import torch

        from lrfr_curricularface.head import CurricularFace, CurricularParams

        head = CurricularFace(CurricularParams(scale=1.0, margin=0.5))
        cos = torch.tensor([[0.6, 0.9, 0.1], [0.2, 0.3, 0.4]])
        out = head(cos, torch.tensor([0, -1]))
        assert out[0, 0].item() == pytest.approx(torch.cos(torch.acos(torch.tensor(0.6)) + 0.5).item(), abs=1e-6)
        # 0.9 > cos(theta_y + m): a hard negative, re-weighted by (t + cos) with t updated from 0 to 0.01*0.6.
        assert out[0, 1].item() == pytest.approx(0.9 * (0.006 + 0.9), abs=1e-6)
        assert out[0, 2].item() == pytest.approx(0.1, abs=1e-6)
        assert torch.allclose(out[1], cos[1])  # label -1: only scaled
        from lrfr_plugins.testing import check_head

        check_head(CurricularFace(CurricularParams()))  # the three-line conformance test plugin authors write
    finally:
        sys.path.remove(str(EXAMPLE))
        sys.modules.pop("lrfr_curricularface", None)
        sys.modules.pop("lrfr_curricularface.head", None)
