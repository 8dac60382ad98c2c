"""Peak memory of fine-tuning steps (octuplet, derivenet) with the demo backbone on CPU, or iresnet50 on a GPU.

    python eval/bench_finetune_memory.py [--device cuda --backbone iresnet50]

Runs each finetuner for ``--steps`` steps of 128 images (octuplet: 32 identities x 4, each with its LR copy, so
256 images through the backbone; derivenet: batch 128) in a fresh process each, and reports the peak resident
memory of the process (CPU) or torch's peak allocated memory (GPU), next to the same process's peak before the
step (model and data set up), as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch


def one(finetuner: str, device: str, backbone: str, steps: int) -> dict:
    import lrfr_plugins
    from lrfr_plugins.api import FinetuneContext

    torch.manual_seed(0)
    dataset = lrfr_plugins.create("dataset", "synthetic", num_identities=48, images_per_identity=8, cache=False)
    params = {"embedding_size": 128} if backbone == "tiny" else {}
    net = lrfr_plugins.create("backbone", backbone, **params).to(device)
    settings = ({"steps": steps, "p": 32, "k": 4, "eval_identities": 8} if finetuner == "octuplet"
                else {"steps": steps, "batch_size": 128, "eval_images": 32})
    plugin = lrfr_plugins.create("finetuner", finetuner, **settings)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    plugin.run(FinetuneContext(net, dataset, [], torch.device(device), torch.Generator().manual_seed(0), False))
    report = {"finetuner": finetuner, "backbone": backbone, "device": device, "steps": steps,
              "images_per_step": 256 if finetuner == "octuplet" else 128,
              "peak_rss_mib_before": round(before), "peak_rss_mib": round(
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    if device == "cuda":
        report["peak_cuda_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backbone", default="tiny")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.device, args.backbone, args.steps)))
        return
    for name in ("octuplet", "derivenet"):  # one process each, so each peak is its own
        subprocess.run([sys.executable, __file__, "--one", name, "--device", args.device, "--backbone",
                        args.backbone, "--steps", str(args.steps)], check=True)


if __name__ == "__main__":
    main()
