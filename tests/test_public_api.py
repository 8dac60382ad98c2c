"""The modules documented as stable for plugin authors export the real functions, and nothing undeclared."""

import importlib
import subprocess
import sys

import pytest

import lrfr_plugins

PUBLIC_MODULES = ["lrfr_plugins", "lrfr_plugins.api", "lrfr_plugins.api.training", "lrfr_plugins.ops",
                  "lrfr_plugins.metrics", "lrfr_plugins.synthetic", "lrfr_plugins.testing"]


@pytest.mark.parametrize(("public", "name", "home"), [
    ("lrfr_plugins.metrics", "thin_curve", "lrfr_plugins.metrics.verification"),
    ("lrfr_plugins.metrics", "roc_curve", "lrfr_plugins.metrics.verification"),
    ("lrfr_plugins.metrics", "cmc", "lrfr_plugins.metrics.identification"),
    ("lrfr_plugins.metrics", "rank_of_true", "lrfr_plugins.metrics.identification"),
    ("lrfr_plugins.ops", "margin_logits", "lrfr_plugins.ops.margins"),
    ("lrfr_plugins.ops", "resize_down_up", "lrfr_plugins.ops.resize"),
    ("lrfr_plugins.synthetic", "draw_pairs", "lrfr_plugins.synthetic.pairs"),
    ("lrfr_plugins.synthetic", "SyntheticFaceGenerator", "lrfr_plugins.synthetic.faces"),
    ("lrfr_plugins.api.training", "load_batch", "lrfr_plugins.engine.batches"),
    ("lrfr_plugins.api.training", "optimise", "lrfr_plugins.engine.finetune_loop"),
    ("lrfr_plugins.api.training", "build_optimizer", "lrfr_plugins.engine.optim"),
])
def test_documented_names_are_the_real_functions(public, name, home):
    module = importlib.import_module(public)
    assert name in module.__all__
    assert getattr(module, name) is getattr(importlib.import_module(home), name)
    namespace: dict = {}
    exec(f"from {public} import {name}", namespace)
    assert namespace[name] is getattr(importlib.import_module(home), name)


@pytest.mark.parametrize("public", PUBLIC_MODULES[:-1])
def test_every_declared_name_resolves(public):
    module = importlib.import_module(public)
    assert module.__all__ and len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{public}.{name}"


def test_the_package_docstring_names_the_stable_modules():
    for name in PUBLIC_MODULES[1:]:
        assert f"``{name}``" in lrfr_plugins.__doc__, name
    api = importlib.import_module("lrfr_plugins.api")
    for name in PUBLIC_MODULES[2:] + ["margin_logits", "thin_curve", "draw_pairs"]:
        assert name in api.__doc__, name


def test_margin_logits_from_ops_is_arcface():
    import torch

    from lrfr_plugins.ops import margin_logits

    cosine = torch.tensor([[0.5, 0.1]])
    logits = margin_logits(cosine, torch.tensor([0]), scale=10.0, m2=0.5)
    expected = 10.0 * torch.cos(torch.acos(torch.tensor(0.5)) + 0.5)
    assert torch.allclose(logits[0, 0], expected) and torch.allclose(logits[0, 1], torch.tensor(1.0))


def test_draw_pairs_from_synthetic_draws_half_genuine_pairs():
    from lrfr_plugins.synthetic import draw_pairs

    pairs, issame = draw_pairs(10, 4, 100, seed=0)
    assert pairs.shape == (100, 2) and issame.sum() == 50
    assert ((pairs[issame] // 4)[:, 0] == (pairs[issame] // 4)[:, 1]).all()
    assert ((pairs[~issame] // 4)[:, 0] != (pairs[~issame] // 4)[:, 1]).all()


def test_metrics_and_synthetic_stay_numpy_only():
    """Re-exporting draw_pairs must not make 'import lrfr_plugins.metrics/.synthetic' load torch."""
    code = "import sys, lrfr_plugins.metrics, lrfr_plugins.synthetic; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
