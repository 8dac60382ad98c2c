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

    def crash_in_second_epoch(self, images, labels, indices=None):
        if self.step == steps_per_epoch + 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-epoch
        return original(self, images, labels, indices)

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
    from lrfr_plugins.atomic import atomic_path, atomic_write_text

    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left behind


KILLED = """
lrfr: 1
name: killed
seed: 3
data: {name: synthetic, params: {num_identities: 20, images_per_identity: 8}}
backbone: {name: tiny, params: {embedding_size: 32}}
head: {name: approach2, params: {scale: 16.0, mapping: bounded}}
degradations: [{name: cross-resolution}]
train: {epochs: 3, batch_size: 8, threads: 1, log_every: 1, checkpoint_every: 7, schedule: polynomial,
        warmup_steps: 5, optimizer: {name: sgd, lr: 0.05}}
eval: []
export: {onnx: false}
"""


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path):
    """SIGKILL (no cleanup at all) after a mid-epoch checkpoint; --resume must end bit-identical to a straight run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "k.yaml"
    path.write_text(textwrap.dedent(KILLED))
    env = {**os.environ, "LRFR_LOAD_PLUGINS": ""}
    cmd = [sys.executable, "-m", "lrfr_plugins.cli", "run", str(path), "--no-progress"]
    straight = subprocess.run([*cmd, "--out", str(tmp_path / "straight")], env=env, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr

    run = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    steps_per_epoch = 20 * 8 // 8
    killed_at = None
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        checkpoint = run / "checkpoint.pt"
        if checkpoint.exists():
            state = torch.load(checkpoint, weights_only=True)
            if state["epoch"] == 1 and state["batch_in_epoch"] > 0:  # mid-way through the second epoch
                proc.send_signal(signal.SIGKILL)
                killed_at = state["step"]
                break
        time.sleep(0.01)
    proc.wait()
    assert killed_at is not None, "the run ended before a mid-epoch checkpoint could be caught"
    assert killed_at % steps_per_epoch != 0

    resumed = subprocess.run([sys.executable, "-m", "lrfr_plugins.cli", "run", "--resume", str(run), "--no-progress"],
                             env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(tmp_path / "straight" / "checkpoint.pt"), load_checkpoint(run / "checkpoint.pt")
    assert a["step"] == b["step"] == 3 * steps_per_epoch
    for key, value in a["backbone"].items():
        assert torch.equal(value, b["backbone"][key]), key
    assert torch.equal(a["classifier"]["weight"], b["classifier"]["weight"])
    assert torch.equal(a["optimizer"]["state"][0]["momentum_buffer"], b["optimizer"]["state"][0]["momentum_buffer"])
