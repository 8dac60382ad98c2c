"""Benchmark: cost of the Laplacian quality estimator per batch and its share of one demo training step (CPU).

    python eval/bench_laplacian.py [--batch 128] [--repeats 7] [--threads 2]

The step it is compared with is the demo's real training step, ``Trainer.train_step`` as ``eval/bench_train.py``
times it (tiny backbone at the demo's size, approach2 head with this estimator, cross-resolution batches, 128
images: uint8 batch, flip, degradation, quality, forward, backward, optimizer); for reference also the bare
backbone step (forward + backward through TinyNet, a 300-class linear classifier, cross-entropy, SGD). The estimator runs on the raw uint8 batch, as in training. It is timed side by
side with the straightforward implementation it replaced (``reference_quality`` below: float32, ``F.pad`` reflect
and a sum of shifted slices), interleaved round by round so that load from other jobs hits both alike; the new
results are checked to equal the reference's. Reports medians in milliseconds, the old/new ratio and each one's
share of the step as JSON. ``cached_*`` is the estimator on half a batch: what the trainer computes per step once
its quality cache holds the undegraded images (after the first epoch; only the degraded half is new).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from lrfr_plugins.builtin.backbones.tiny import TinyNet, TinyParams
from lrfr_plugins.builtin.quality.laplacian import Laplacian, LaplacianParams, rgb_to_grey

from bench_train import measure  # eval/bench_train.py, beside this script
from timing import median_seconds  # eval/timing.py, beside this script

REDUCES = ("mean_abs", "var")


def median_ms(fn, repeats: int) -> float:
    return 1e3 * median_seconds(fn, repeats)


def interleaved_median_ms(fns: dict, repeats: int) -> dict:
    """Median ms of each function, timed in turn within each round (one warm-up call each first)."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def reference_quality(images: torch.Tensor, reduce: str) -> torch.Tensor:
    """The estimator as it was first written: float32, reflect pad, sum of shifted slices (kept for comparison)."""
    x = images.to(torch.float32) if reduce == "mean_abs" else rgb_to_grey(images)
    p = F.pad(x, (1, 1, 1, 1), mode="reflect")
    lap = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:] - 4 * p[..., 1:-1, 1:-1]
    q = lap.abs().mean(dim=(1, 2, 3)) if reduce == "mean_abs" else lap.flatten(1).var(dim=1, correction=0)
    return q.to(torch.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 3, 112, 112), dtype=torch.uint8)
    labels = torch.randint(0, 300, (args.batch,))

    fns, max_rel_diff = {}, {}
    for reduce in REDUCES:
        new, old = Laplacian(LaplacianParams(reduce)), (lambda r=reduce: reference_quality(images, r))
        fns[f"new/{reduce}"], fns[f"old/{reduce}"] = (lambda q=new: q(images)), old
        fns[f"cached/{reduce}"] = lambda q=new: q(images[: args.batch // 2])  # the trainer's steady state
        ref = old()
        max_rel_diff[reduce] = ((new(images) - ref).abs() / ref.abs().clamp_min(1e-12)).max().item()
    quality_ms = interleaved_median_ms(fns, args.repeats)

    backbone = TinyNet(TinyParams())
    classifier = nn.Linear(backbone.embedding_size, 300)
    params = list(backbone.parameters()) + list(classifier.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    inputs = (images.float() - 127.5) / 128.0  # normalisation kept out of the step, as the estimator's input is raw

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(classifier(backbone(inputs)), labels)
        loss.backward()
        opt.step()

    backbone_step_ms = median_ms(step, args.repeats)
    step_ms = measure(argparse.Namespace(device="cpu", backbone="tiny", head="approach2", quality="laplacian",
                                         batch=args.batch, amp="none", channels_last=False, compile=False,
                                         steps=args.repeats, warmup=2, peak_tflops=0))["ms_per_step"]
    new_ms = {r: quality_ms[f"new/{r}"] for r in REDUCES}
    old_ms = {r: quality_ms[f"old/{r}"] for r in REDUCES}
    cached_ms = {r: quality_ms[f"cached/{r}"] for r in REDUCES}
    print(json.dumps({
        "batch": args.batch, "size": 112, "threads": args.threads, "repeats": args.repeats,
        "torch": torch.__version__,
        "quality_ms": {k: round(v, 2) for k, v in new_ms.items()},
        "step_ms": round(step_ms, 2),
        "share_of_step": {k: round(v / step_ms, 4) for k, v in new_ms.items()},
        "cached_ms": {k: round(v, 2) for k, v in cached_ms.items()},
        "cached_share_of_step": {k: round(v / step_ms, 4) for k, v in cached_ms.items()},
        "backbone_step_ms": round(backbone_step_ms, 2),
        "share_of_backbone_step": {k: round(v / backbone_step_ms, 4) for k, v in new_ms.items()},
        "reference_ms": {k: round(v, 2) for k, v in old_ms.items()},
        "reference_share_of_step": {k: round(v / step_ms, 4) for k, v in old_ms.items()},
        "speedup": {k: round(old_ms[k] / new_ms[k], 2) for k in REDUCES},
        "max_rel_diff_vs_reference": max_rel_diff,
    }, indent=2))


if __name__ == "__main__":
    main()
