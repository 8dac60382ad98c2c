"""Benchmark: images per second of the built-in synthetic face generator and of the training input path.

Runs each measurement several times in one process and reports medians (these machines are noisy). Rendering
is numpy element-wise work, which runs on one core; pin it to make that explicit:

    taskset -c 0 python eval/bench_synthetic_faces.py [--batch 256] [--repeats 7]

Compared side by side: raw rendering (numpy), the dataset's batched path (render + to tensor) used by the
DataLoader, the single-item path (what a DataLoader without __getitems__ would pay), and reads from the
in-memory cache (``cache: true``, the default) that every epoch after the first uses.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from timing import median_seconds  # eval/timing.py, beside this script


def median_rate(fn, count: int, repeats: int) -> float:
    return count / median_seconds(fn, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256, help="images per measured call")
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions (the median is reported)")
    args = parser.parse_args()

    from lrfr_plugins.builtin.datasets.synthetic import SyntheticDataset, SyntheticParams
    from lrfr_plugins.synthetic import SyntheticFaceGenerator

    generator = SyntheticFaceGenerator(0, "train")
    dataset = SyntheticDataset(SyntheticParams(num_identities=1000, images_per_identity=50, cache=False))
    cached = SyntheticDataset(SyntheticParams(num_identities=100, images_per_identity=50, cache=True))
    cached.render(np.arange(1))  # fills the cache: what every epoch after the first reads
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, size=args.batch)
    samples = rng.integers(50, size=args.batch)
    indices = (ids * 50 + samples).tolist()
    torch.set_num_threads(1)
    row = {"render_numpy_img_per_s": median_rate(lambda: generator.render(ids, samples), args.batch, args.repeats),
           "dataset_getitems_img_per_s": median_rate(lambda: dataset.__getitems__(indices), args.batch, args.repeats),
           "dataset_getitem_img_per_s": median_rate(lambda: [dataset[i] for i in indices[:32]], 32, args.repeats),
           "cached_getitems_img_per_s": median_rate(lambda: cached.__getitems__([i % 5000 for i in indices]),
                                                    args.batch, args.repeats)}
    results = {k: round(v, 1) for k, v in row.items()}
    print(json.dumps({"batch": args.batch, "repeats": args.repeats, "results": results}, indent=2))


if __name__ == "__main__":
    main()
