"""Benchmark: training throughput of the real ``Trainer.train_step`` (images/s), next to the device's FLOP limit.

    python eval/bench_train.py                                    # the demo backbone on CPU
    python eval/bench_train.py --device cuda --backbone iresnet50 --amp bf16 --channels-last [--compile]

A step is everything the trainer does per batch: uint8 batch to the device, flip, the study's cross-resolution
degradation, quality, backbone forward and backward, classifier, margin head, optimizer. Batches are pre-rendered
synthetic faces (so data loading is not measured; eval/bench_data.py measures that). Reports the median step time
over ``--steps`` steps after ``--warmup``, as JSON. For iresnet50 the FLOP limit uses 6.3 GFLOPs per 112x112 image
forward and 3x that for forward + backward; ``--peak-tflops`` is the device's dense bf16 peak (H200: about 790).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

import lrfr_plugins
from lrfr_plugins.engine.trainer import TrainComponents, Trainer
from lrfr_plugins.engine.config import OptimizerConfig, TrainConfig

GFLOPS_FORWARD = {"iresnet50": 6.3}


def measure(args: argparse.Namespace) -> dict:
    create = lrfr_plugins.create
    device = torch.device(args.device)
    per = 4
    data = create("dataset", "synthetic", num_identities=max(2, args.batch * 4 // per), images_per_identity=per)
    idx = np.random.default_rng(0).permutation(len(data))[: 4 * args.batch]
    images, labels = data.render(idx), torch.from_numpy(idx // per)
    backbone_params = {"embedding_size": 128} if args.backbone == "tiny" else {}
    parts = TrainComponents(create("backbone", args.backbone, **backbone_params), create("head", args.head), data,
                            [create("degradation", "cross-resolution")],
                            create("quality", args.quality) if args.quality else None)
    config = TrainConfig(epochs=1, batch_size=args.batch, device=args.device, amp=args.amp,
                         channels_last=args.channels_last, compile=args.compile, grad_clip=5.0)
    trainer = Trainer(parts, config, OptimizerConfig(lr=0.01), device, seed=0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for step in range(args.warmup + args.steps):
        i = step % 4
        sync()
        start = time.perf_counter()
        trainer.train_step(images[i * args.batch:(i + 1) * args.batch], labels[i * args.batch:(i + 1) * args.batch])
        sync()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    ms = 1e3 * statistics.median(times)
    report = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "threads": torch.get_num_threads(), "backbone": args.backbone, "head": args.head, "batch": args.batch,
              "amp": args.amp, "channels_last": args.channels_last, "compile": args.compile, "steps": args.steps,
              "ms_per_step": round(ms, 2), "images_per_second": round(args.batch / ms * 1e3, 1)}
    if args.backbone in GFLOPS_FORWARD and args.peak_tflops:
        limit = args.peak_tflops * 1e12 / (3 * GFLOPS_FORWARD[args.backbone] * 1e9)
        report.update({"flop_limit_images_per_second": round(limit), "fraction_of_limit":
                       round(report["images_per_second"] / limit, 4)})
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backbone", default="tiny")
    ap.add_argument("--head", default="approach2")
    ap.add_argument("--quality", default="laplacian", help="quality estimator ('' for none)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=790.0, help="dense bf16 peak of the device (H200: ~790)")
    args = ap.parse_args()
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    print(json.dumps(measure(args)))


if __name__ == "__main__":
    main()
