"""A run stopped after an epoch continues from its checkpoint and ends with the same weights."""

import textwrap

import pytest
import torch

from lrfr_plugins.engine.checkpoint import load_checkpoint
from lrfr_plugins.engine.trainer import Trainer
from lrfr_plugins.recipe import load_recipe
from lrfr_plugins.runner import execute, prepare_run_dir, resume_recipe

RECIPE = """
lrfr: 1
name: resume
seed: 5
data: {name: synthetic, params: {num_identities: 8, images_per_identity: 6}}
backbone: {name: tiny, params: {embedding_size: 16, widths: [8, 8, 8, 8]}}
head: {name: arcface, params: {scale: 16.0, margin: 0.3}}
degradations: [{name: cross-resolution}]
train: {epochs: 3, batch_size: 8, threads: 1, milestones: [2], log_every: 1}
eval: []
export: {onnx: false}
"""


@pytest.mark.slow
def test_resume_after_an_interrupted_epoch_equals_an_uninterrupted_run(tmp_path, registry, monkeypatch):
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(RECIPE))
    recipe = load_recipe(path, registry=registry)

    straight = tmp_path / "straight"
    prepare_run_dir(straight, overwrite=False, resume=False)
    execute(recipe, registry, straight, progress=False)

    stopped = tmp_path / "stopped"
    prepare_run_dir(stopped, overwrite=False, resume=False)
    original = Trainer.train_step
    steps_per_epoch = 8 * 6 // 8

    def crash_in_second_epoch(self, images, labels):
        if self.step == steps_per_epoch + 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-epoch
        return original(self, images, labels)

    monkeypatch.setattr(Trainer, "train_step", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        execute(recipe, registry, stopped, progress=False)
    assert load_checkpoint(stopped / "checkpoint.pt")["epoch"] == 1
    monkeypatch.setattr(Trainer, "train_step", original)

    execute(resume_recipe(stopped, registry), registry, stopped, resume=True, progress=False)
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(stopped / "checkpoint.pt")
    assert a["step"] == b["step"] == 3 * steps_per_epoch
    for key, value in a["backbone"].items():
        assert torch.equal(value, b["backbone"][key]), key
    assert torch.equal(a["classifier"]["weight"], b["classifier"]["weight"])
    steps = [__import__("json").loads(line)["step"] for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # the steps trained again after the crash are logged once


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    from lrfr_plugins.engine.checkpoint import atomic_path, atomic_write_text

    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left behind
