"""The per-kind contracts the host keeps: a stochastic head's generator (seeded, checkpointed, resumed), quality
units (a head calibrated for one estimator warns with another), and a quality no head reads (warned, never run)."""

from __future__ import annotations

import dataclasses
import textwrap
import warnings

import pytest
import torch

from lrfr_plugins.api import Head, Quality, param
from lrfr_plugins.builtin.quality.laplacian import Laplacian
from lrfr_plugins.engine.checkpoint import load_checkpoint
from lrfr_plugins.engine.trainer import Trainer
from lrfr_plugins.manager import Provider
from lrfr_plugins.recipe import RecipeWarning, load_recipe
from lrfr_plugins.runner import execute, prepare_run_dir, resume_recipe

TESTS = Provider("lrfr-plugins-tests", "0", __name__)


@dataclasses.dataclass(frozen=True)
class NoisyParams:
    scale: float = param(16.0, "feature scale", gt=0)
    margin: float = param(0.3, "mean margin", ge=0)
    sigma: float = param(0.2, "std of the per-sample margin", ge=0)


class NoisyMargin(Head):
    """CosFace whose per-sample margin is drawn from N(margin, sigma), as ElasticFace-Cos."""

    Params = NoisyParams
    stochastic = True
    seen_devices: list = []

    def forward(self, cosine, labels, quality=None, *, generator):
        p = self.params
        NoisyMargin.seen_devices.append((generator.device, cosine.device))
        margin = p.margin + p.sigma * torch.randn(cosine.shape[0], generator=generator, device=generator.device)
        hot = torch.zeros_like(cosine)
        rows = torch.nonzero(labels >= 0).squeeze(1)
        hot[rows, labels[rows]] = margin.to(cosine.device)[rows]
        return p.scale * (cosine - hot)


class Tenengrad(Quality):
    """A stand-in sharpness estimator with its own units (squared gradients: hundreds, not Laplacian's ~2..16)."""

    cacheable = True

    def __call__(self, images, *, lr_mask=None):
        x = images.float()
        return ((x[..., 1:, :] - x[..., :-1, :]) ** 2).mean(dim=(1, 2, 3))


class HighResFlag(Quality):
    """Another estimator with the resolution flag's meaning, which says so."""

    units = "resolution-flag"

    def __call__(self, images, *, lr_mask=None):
        return (~lr_mask).float() if lr_mask is not None else torch.ones(images.shape[0])


@pytest.fixture
def plugins(registry):
    registry.add("head", "noisy-margin", NoisyMargin, TESTS)
    registry.add("quality", "tenengrad", Tenengrad, TESTS)
    registry.add("quality", "hr-flag", HighResFlag, TESTS)
    return registry


BASE = """
lrfr: 1
name: contract
seed: 11
data: {name: synthetic, params: {num_identities: 6, images_per_identity: 4}}
backbone: {name: tiny, params: {embedding_size: 8, widths: [4, 4, 4, 4]}}
degradations: [{name: cross-resolution}]
train: {epochs: 2, batch_size: 6, threads: 1, log_every: 1, checkpoint_every: 1, tensorboard: false}
eval: []
export: {onnx: false}
"""


def recipe_file(tmp_path, extra: str, name: str = "r.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(BASE) + textwrap.dedent(extra))
    return path


def recipe_warnings(path, registry, overrides=()):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recipe = load_recipe(path, overrides, registry=registry)
    shown = [str(w.message) for w in caught if issubclass(w.category, RecipeWarning)]
    assert shown == recipe.warnings
    return shown


# ------------------------------------------------------------------------------------------ stochastic heads


def run(recipe, registry, run_dir, **kw):
    prepare_run_dir(run_dir, overwrite=False, resume=kw.get("resume", False))
    return execute(recipe, registry, run_dir, progress=False, **kw)


def test_a_stochastic_head_gets_a_seeded_generator_on_the_device_and_repeats_exactly(tmp_path, plugins):
    recipe = load_recipe(recipe_file(tmp_path, "head: {name: noisy-margin}"), registry=plugins)
    NoisyMargin.seen_devices.clear()
    run(recipe, plugins, tmp_path / "a")
    assert NoisyMargin.seen_devices and all(g == c for g, c in NoisyMargin.seen_devices)
    run(recipe, plugins, tmp_path / "b")
    a, b = load_checkpoint(tmp_path / "a" / "checkpoint.pt"), load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert a["head_generator"] is not None and torch.equal(a["head_generator"], b["head_generator"])
    for key, value in a["backbone"].items():
        assert torch.equal(value, b["backbone"][key]), key
    assert torch.equal(a["classifier"]["weight"], b["classifier"]["weight"])

    other = load_recipe(recipe_file(tmp_path, "head: {name: noisy-margin}"), ["seed=12"], registry=plugins)
    run(other, plugins, tmp_path / "c")
    c = load_checkpoint(tmp_path / "c" / "checkpoint.pt")
    assert not torch.equal(a["head_generator"], c["head_generator"])  # seeded from the run seed


def test_a_stochastic_head_resumes_exactly_where_it_stopped(tmp_path, plugins, monkeypatch):
    recipe = load_recipe(recipe_file(tmp_path, "head: {name: noisy-margin}"), registry=plugins)
    run(recipe, plugins, tmp_path / "straight")

    original = Trainer.train_step

    def crash(self, images, labels, indices=None):
        if self.step == 6:  # the third batch of the second epoch: after a mid-epoch checkpoint
            raise KeyboardInterrupt
        return original(self, images, labels, indices)

    monkeypatch.setattr(Trainer, "train_step", crash)
    with pytest.raises(KeyboardInterrupt):
        run(recipe, plugins, tmp_path / "stopped")
    monkeypatch.setattr(Trainer, "train_step", original)
    stopped = tmp_path / "stopped"
    assert load_checkpoint(stopped / "checkpoint.pt")["step"] == 6
    execute(resume_recipe(stopped, plugins), plugins, stopped, resume=True, progress=False)

    a, b = load_checkpoint(tmp_path / "straight" / "checkpoint.pt"), load_checkpoint(stopped / "checkpoint.pt")
    assert a["step"] == b["step"] == 8
    assert torch.equal(a["head_generator"], b["head_generator"])
    for key, value in a["backbone"].items():
        assert torch.equal(value, b["backbone"][key]), key
    assert torch.equal(a["classifier"]["weight"], b["classifier"]["weight"])


def test_a_checkpoint_without_a_head_generator_still_loads(tmp_path, plugins):
    recipe = load_recipe(recipe_file(tmp_path, "head: {name: noisy-margin}"), registry=plugins)
    run(recipe, plugins, tmp_path / "a")
    state = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    del state["head_generator"]  # written before heads had generators
    from lrfr_plugins.engine.trainer import TrainComponents

    parts = TrainComponents(plugins.create("backbone", "tiny", embedding_size=8, widths=[4, 4, 4, 4]),
                            plugins.create("head", "noisy-margin"), plugins.create("dataset", "synthetic",
                            num_identities=6, images_per_identity=4), [], None)
    trainer = Trainer(parts, recipe.train, recipe.optimizer, torch.device("cpu"), 11)
    seeded = trainer.head_generator.get_state()
    trainer.load_state_dict(state)
    assert trainer.step == state["step"] and torch.equal(trainer.head_generator.get_state(), seeded)


# ---------------------------------------------------------------------------------------------- quality units


def test_approach2_warns_when_paired_with_a_quality_of_other_units(tmp_path, plugins):
    path = recipe_file(tmp_path, "head: {name: approach2, params: {mapping: bounded}}\nquality: {name: tenengrad}")
    shown = recipe_warnings(path, plugins)
    assert len(shown) == 1
    assert "head approach2's q_ref=6.035 is calibrated for the laplacian quality" in shown[0]
    assert "with tenengrad its margin stays at m_min=0.35" in shown[0]
    assert "set head.params.q_ref to a typical tenengrad value of your data" in shown[0].lower()
    assert "r.yaml" in shown[0].split(": quality:")[0]


def test_no_calibration_warning_when_q_ref_is_set_or_the_quality_is_the_calibrated_one(tmp_path, plugins):
    explicit = recipe_file(tmp_path, "head: {name: approach2, params: {mapping: bounded, q_ref: 300.0}}\n"
                                     "quality: {name: tenengrad}")
    assert recipe_warnings(explicit, plugins) == []
    by_set = recipe_file(tmp_path, "head: {name: approach2, params: {mapping: bounded}}\nquality: {name: tenengrad}")
    assert recipe_warnings(by_set, plugins, ["head.params.q_ref=250"]) == []
    calibrated = recipe_file(tmp_path, "head: {name: approach2, params: {mapping: bounded}}\n"
                                       "quality: {name: laplacian}")
    assert recipe_warnings(calibrated, plugins) == []
    defaulted = recipe_file(tmp_path, "head: {name: approach2}")  # the head's default estimator
    assert recipe_warnings(defaulted, plugins) == []


def test_units_decide_not_names(tmp_path, plugins):
    reciprocal = recipe_file(tmp_path, "head: {name: approach2, params: {q_ref: 300.0}}\nquality: {name: tenengrad}")
    (text,) = recipe_warnings(reciprocal, plugins)  # 1/q ignores q_ref: setting it recalibrates nothing
    assert "m = 1/q (mapping: reciprocal)" in text and "head.params.mapping=bounded" in text
    variance = recipe_file(tmp_path, "head: {name: approach2, params: {mapping: bounded}}\n"
                                     "quality: {name: laplacian, params: {reduce: var}}")
    (text,) = recipe_warnings(variance, plugins)
    assert "with laplacian (in laplacian-var units)" in text
    flag = recipe_file(tmp_path, "head: {name: approach1}\nquality: {name: tenengrad}")
    (text,) = recipe_warnings(flag, plugins)
    assert "head approach1 reads quality >= 0.5 as full resolution" in text
    same_units = recipe_file(tmp_path, "head: {name: approach1}\nquality: {name: hr-flag}")
    assert recipe_warnings(same_units, plugins) == []
    magface = recipe_file(tmp_path, "head: {name: magface}\nquality: {name: tenengrad}")
    (text,) = recipe_warnings(magface, plugins)
    assert "head magface's l_a=10.0, u_a=110.0 are calibrated for the feature-norm quality" in text
    assert recipe_warnings(magface, plugins, ["head.params.u_a=500"]) == []


def test_lrfr_validate_shows_the_calibration_warning(lrfr):
    result = lrfr("validate", "recipes/approach2.yaml", "-q", "--set", "quality.params.reduce=var")
    assert result.returncode == 0, result.stderr
    assert "head approach2's margin m = 1/q" in result.stderr
    assert "laplacian (in laplacian-var units)" in result.stderr
    assert result.stderr.startswith("Warning: ") and "RecipeWarning" not in result.stderr  # one line, no source


# ---------------------------------------------------------------------------------------------- unused quality


def test_a_quality_the_head_does_not_read_is_warned_about_and_never_computed(tmp_path, plugins, monkeypatch):
    path = recipe_file(tmp_path, "head: {name: arcface, params: {scale: 16.0}}\nquality: {name: laplacian}")
    (text,) = recipe_warnings(path, plugins)
    assert "head 'arcface' reads no per-sample quality, so quality 'laplacian' is ignored" in text
    assert "--set quality=null" in text and "approach2" in text
    calls = []

    def spy(self, images, *, lr_mask=None):
        calls.append(images.shape[0])
        raise AssertionError("an unused quality was computed")

    monkeypatch.setattr(Laplacian, "__call__", spy)
    with pytest.warns(RecipeWarning, match="reads no per-sample quality"):
        recipe = load_recipe(path, ["train.epochs=1"], registry=plugins)
    run(recipe, plugins, tmp_path / "run")
    assert calls == []
    assert text in (tmp_path / "run" / "run.log").read_text()
    assert recipe_warnings(path, plugins, ["quality=null"]) == []
