"""Benchmark: cost of the Laplacian quality estimator per batch and its share of one demo training step (CPU).

    python eval/bench_laplacian.py [--batch 128] [--repeats 7] [--threads 2]

One step = forward + backward of the batch through TinyNet (default params), a 300-class linear classifier
and cross-entropy, then an SGD step. Reports medians in milliseconds and the estimator/step ratio as JSON.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from lrfr_plugins.builtin.backbones.tiny import TinyNet, TinyParams
from lrfr_plugins.builtin.quality.laplacian import Laplacian, LaplacianParams

from timing import median_seconds  # eval/timing.py, beside this script


def median_ms(fn, repeats: int) -> float:
    return 1e3 * median_seconds(fn, repeats)


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

    quality_ms = {reduce: median_ms(lambda q=Laplacian(LaplacianParams(reduce)): q(images), args.repeats)
                  for reduce in ("mean_abs", "var")}

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

    step_ms = median_ms(step, args.repeats)
    print(json.dumps({
        "batch": args.batch, "size": 112, "threads": args.threads, "repeats": args.repeats,
        "torch": torch.__version__,
        "quality_ms": {k: round(v, 2) for k, v in quality_ms.items()},
        "step_ms": round(step_ms, 2),
        "share_of_step": {k: round(v / step_ms, 4) for k, v in quality_ms.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
