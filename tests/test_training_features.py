"""Training options: schedules, mixed precision, periodic evaluation, one message for every missing input."""

import json
import math
import textwrap

import pytest
import torch

from lrfr_plugins.engine.samplers import ShuffledBatchSampler
from lrfr_plugins.engine.optim import lr_factor
from lrfr_plugins.errors import DataError
from lrfr_plugins.engine.config import TrainConfig
from lrfr_plugins.recipe import load_recipe
from lrfr_plugins.runner import execute, prepare_run_dir

RECIPE = """
lrfr: 1
name: features
seed: 1
data: {{name: synthetic, params: {{num_identities: 6, images_per_identity: 4}}}}
backbone: {{name: tiny, params: {{embedding_size: 16, widths: [4, 8, 8, 16]}}}}
head: {{name: arcface, params: {{scale: 16.0, margin: 0.2}}}}
degradations: [{{name: cross-resolution}}]
train: {{epochs: 2, batch_size: 8, threads: 1, log_every: 1, {train}}}
eval: [{{name: synthetic, params: {{num_identities: 4, images_per_identity: 2, num_pairs: 20, sizes: [112, 7]}}}}]
export: {{onnx: false}}
"""


def run(tmp_path, registry, train="", name="run"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(RECIPE.format(train=train)))
    prepare_run_dir(tmp_path / name, overwrite=False, resume=False)
    return execute(load_recipe(path, registry=registry), registry, tmp_path / name, progress=False)


def test_schedules_follow_their_formulas():
    poly = TrainConfig(schedule="polynomial", warmup_steps=10)
    assert lr_factor(4, 0, 110, poly) == pytest.approx(0.5)  # warm-up: (step + 1) / 10
    assert lr_factor(60, 0, 110, poly) == pytest.approx(0.5)  # 1 - (60 - 10) / 100, arcface_torch's power 1
    assert lr_factor(110, 0, 110, poly) == 0.0
    cosine = TrainConfig(schedule="cosine")
    assert lr_factor(50, 0, 100, cosine) == pytest.approx(0.5)
    steps = TrainConfig(milestones=[5, 10, 15], gamma=0.1)  # the founding study's epochs
    assert [lr_factor(0, e, 100, steps) for e in (4, 5, 10, 15)] == pytest.approx([1, 0.1, 0.01, 0.001])


def test_the_batch_order_is_a_function_of_seed_and_epoch_and_resumes_mid_epoch():
    full = list(ShuffledBatchSampler(50, 8, seed=3, epoch=2))
    assert len(full) == 6 and len({i for b in full for i in b}) == 48
    assert list(ShuffledBatchSampler(50, 8, seed=3, epoch=2, start_batch=4)) == full[4:]
    assert list(ShuffledBatchSampler(50, 8, seed=3, epoch=3)) != full
    ranks = [list(ShuffledBatchSampler(50, 8, seed=3, epoch=2, rank=r, world_size=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 3
    assert not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}  # disjoint shards


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_with_finite_losses(tmp_path, registry, amp):
    result = run(tmp_path, registry, f"amp: {amp}, channels_last: true, eval_every: null")
    assert result.metrics["train"]["amp"] == amp and math.isfinite(result.metrics["train"]["final_loss"])
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert bool(state["scaler"]) == (amp == "fp16")  # the fp16 gradient scaler's state is checkpointed
    if amp == "fp16":
        assert state["scaler"]["scale"] > 0 and "growth_interval" in state["scaler"]


def test_periodic_evaluation_is_logged_each_epoch(tmp_path, registry):
    run(tmp_path, registry, "eval_every: 1")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if any(k.startswith("eval/") for k in r)]
    assert [r["epoch"] for r in evals] == [1, 2]
    assert 0.0 <= evals[-1]["eval/synthetic/7/accuracy"] <= 1.0


def test_every_missing_input_is_reported_at_once_before_training(tmp_path, registry):
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(RECIPE.format(train="")).replace(
        "data: {name: synthetic, params: {num_identities: 6, images_per_identity: 4}}",
        f"data: {{name: insightface-rec, params: {{root: {tmp_path / 'casia'}}}}}").replace(
        "eval: [", f"eval: [{{name: qmul-survface, params: {{root: {tmp_path / 'qmul'}}}}}, "))
    prepare_run_dir(tmp_path / "run", overwrite=False, resume=False)
    with pytest.raises(DataError) as info:
        execute(load_recipe(path, registry=registry), registry, tmp_path / "run", progress=False)
    message = str(info.value)
    assert message.startswith("2 input(s) of recipe 'features' are missing; nothing was trained")
    assert "casia/train.rec: RecordIO file not found" in message and "--set data.params.root=" in message
    assert "eval.0 (qmul-survface)" in message and "--set eval.0.params.root=" in message
    assert not (tmp_path / "run" / "recipe.resolved.yaml").exists()  # a failed start leaves no run to resume


def test_a_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, registry, monkeypatch):
    from lrfr_plugins.builtin.heads.arcface import ArcFace
    from lrfr_plugins.errors import NonFiniteLossError

    calls = {"n": 0}
    original = ArcFace.forward

    def poisoned(self, cosine, labels, quality=None):
        calls["n"] += 1
        logits = original(self, cosine, labels, quality)
        return logits * float("nan") if calls["n"] == 3 else logits

    monkeypatch.setattr(ArcFace, "forward", poisoned)
    with pytest.raises(NonFiniteLossError,
                       match=r"training stopped at step 3 \(epoch 1\): the loss is nan.*last good checkpoint"):
        run(tmp_path, registry, "checkpoint_every: 2, eval_every: null")
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 2


def test_the_quality_cache_computes_only_degraded_images_after_the_first_sight_and_changes_nothing(
        tmp_path, registry, monkeypatch):
    from lrfr_plugins.builtin.datasets.synthetic import SyntheticDataset
    from lrfr_plugins.builtin.quality.laplacian import Laplacian

    seen = []
    original = Laplacian.__call__

    def counting(self, images, *, lr_mask=None):
        seen.append(images.shape[0])
        return original(self, images, lr_mask=lr_mask)

    monkeypatch.setattr(Laplacian, "__call__", counting)
    text = textwrap.dedent(RECIPE.format(train="eval_every: null")).replace(
        "{name: arcface, params: {scale: 16.0, margin: 0.2}}", "{name: approach2, params: {scale: 16.0}}").replace(
        "epochs: 2", "epochs: 3")

    def train(name):
        (tmp_path / f"{name}.yaml").write_text(text)
        prepare_run_dir(tmp_path / name, overwrite=False, resume=False)
        execute(load_recipe(tmp_path / f"{name}.yaml", registry=registry), registry, tmp_path / name, progress=False)
        return torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)

    cached = train("cached")
    cached_counts = list(seen)
    monkeypatch.setattr(SyntheticDataset, "fixed_items", False)  # no cache: every image at every step
    seen.clear()
    plain = train("plain")
    assert seen == [8] * 9  # 3 epochs x 3 steps of 8 images
    assert cached_counts[:3] == [8, 8, 8]  # first epoch: every image is new
    # later: the degraded half of each batch, plus undegraded images never seen undegraded before
    assert all(4 <= n <= 8 for n in cached_counts[3:]) and sum(cached_counts) < sum(seen)
    for key, value in cached["backbone"].items():  # exact values, so the training is unchanged
        assert torch.equal(value, plain["backbone"][key]), key
