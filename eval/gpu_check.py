"""GPU checks for a machine with one CUDA device (never needed by CI): training-step throughput of the study's
IR-50 setting per head, the Laplacian quality's share of a step, heads and iresnet under bf16 autocast, ONNX
parity of a CUDA-trained backbone.

    python eval/gpu_check.py --out gpu_check.json [--steps 30] [--batch 128]

Each training step is the real ``Trainer.train_step``: uint8 batch to the GPU, flip, cross-resolution degradation,
quality, iresnet50 forward/backward, classifier, head, SGD. Times are medians over ``--steps`` steps after warm-up,
synchronised with the device.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

import lrfr_plugins
from lrfr_plugins.engine.trainer import TrainComponents, Trainer
from lrfr_plugins.engine.config import OptimizerConfig, TrainConfig


DEVICE = "cuda"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def cuda_median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def training_step_ms(head: str, quality: str | None, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     steps: int, batch: int) -> float:
    create = lrfr_plugins.create
    dataset = create("dataset", "synthetic", num_identities=num_classes, images_per_identity=2, cache=False)
    parts = TrainComponents(create("backbone", "iresnet50"), create("head", head), dataset,
                            [create("degradation", "cross-resolution")],
                            create("quality", quality) if quality else None)
    config = TrainConfig(epochs=1, batch_size=batch, device=DEVICE, grad_clip=None)
    trainer = Trainer(parts, config, OptimizerConfig(lr=0.01, weight_decay=1e-4), torch.device(DEVICE), seed=0)
    position = iter(range(10 ** 9))

    def step() -> None:
        i = next(position) % (images.shape[0] // batch)
        trainer.train_step(images[i * batch:(i + 1) * batch], labels[i * batch:(i + 1) * batch])

    return cuda_median_ms(step, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script itself")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    torch.backends.cudnn.benchmark = True
    report: dict = {"device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu", "torch": torch.__version__, "batch": args.batch}
    num_classes = 1000
    data = lrfr_plugins.create("dataset", "synthetic", num_identities=num_classes, images_per_identity=4)
    idx = np.random.default_rng(0).permutation(len(data))[: 8 * args.batch]
    images = data.render(idx)  # uint8 (N, 3, 112, 112) on the CPU, as a DataLoader delivers them
    labels = torch.from_numpy(idx // 4)

    # 1. Training step per head (fp32), the study's IR-50 setting.
    report["train_step_ms"] = {}
    for head, quality in (("arcface", None), ("approach1", "resolution-flag"), ("approach2", "laplacian"),
                          ("adaface", "feature-norm"), ("magface", "feature-norm")):
        ms = training_step_ms(head, quality, images, labels, num_classes, args.steps, args.batch)
        report["train_step_ms"][head] = round(ms, 2)
        print(head, round(ms, 2), "ms/step", round(args.batch / ms * 1e3), "img/s", flush=True)

    # 2. Laplacian quality on the GPU vs the step.
    laplacian = lrfr_plugins.create("quality", "laplacian")
    gpu_batch = images[: args.batch].to(DEVICE)
    lap_ms = cuda_median_ms(lambda: laplacian(gpu_batch), 50)
    report["laplacian_ms"] = round(lap_ms, 3)
    report["laplacian_share_of_approach2_step"] = round(lap_ms / report["train_step_ms"]["approach2"], 5)

    # 3. bf16 autocast: every head finite with gradients at cosine = +-1; iresnet50 fp16 flag trains.
    finite = {}
    for name in lrfr_plugins.get_registry().names("head"):
        head = lrfr_plugins.create("head", name).to(DEVICE)
        cos = torch.tensor([[1.0, 0.2], [-1.0, 0.1], [0.3, 1.0]], device=DEVICE, requires_grad=True)
        quality = torch.tensor([1.0, 0.0, 5.0], device=DEVICE) if head.needs_quality else None
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            logits = head(cos.bfloat16(), torch.tensor([0, 0, -1], device=DEVICE), quality)
            loss = F.cross_entropy(logits, torch.tensor([0, 0, 1], device=DEVICE))
        loss.backward()
        finite[name] = bool(torch.isfinite(logits).all() and torch.isfinite(cos.grad).all())
    report["heads_finite_bf16_autocast"] = finite
    net = lrfr_plugins.create("backbone", "iresnet50", fp16=True).to(DEVICE)
    x = (gpu_batch.float() - 127.5) / 127.5
    out = net(x)
    out.float().pow(2).mean().backward()
    report["iresnet50_fp16_flag"] = {"output_dtype": str(out.dtype),
                                     "finite_grads": all(torch.isfinite(p.grad).all().item()
                                                         for p in net.parameters() if p.grad is not None),
                                     "forward_backward_ms": round(cuda_median_ms(
                                         lambda: net(x).float().pow(2).mean().backward(), 10), 2)}
    fp32 = lrfr_plugins.create("backbone", "iresnet50").to(DEVICE)
    report["iresnet50_fp32_forward_backward_ms"] = round(cuda_median_ms(
        lambda: fp32(x).pow(2).mean().backward(), 10), 2)

    # 4. ONNX parity: the exporter on a backbone that lives on the GPU (it exports a CPU copy).
    import pathlib
    import tempfile

    from lrfr_plugins.export.onnx import export_onnx
    net = lrfr_plugins.create("backbone", "iresnet18").to(DEVICE).eval()
    with tempfile.TemporaryDirectory() as tmp:
        export = export_onnx(net, pathlib.Path(tmp) / "model.onnx")
        import onnxruntime as ort
        session = ort.InferenceSession(str(pathlib.Path(tmp) / "model.onnx"), providers=ort.get_available_providers())
        with torch.no_grad():
            torch_out = net(x[:8]).float().cpu().numpy()
        onnx_out = session.run(None, {session.get_inputs()[0].name: x[:8].cpu().numpy()})[0]
    cos = (torch_out * onnx_out).sum(1) / np.linalg.norm(torch_out, axis=1) / np.linalg.norm(onnx_out, axis=1)
    report["onnx"] = {"providers": session.get_providers(), "max_abs_diff_vs_cuda_torch": float(
        np.abs(torch_out - onnx_out).max()), "min_cosine": float(cos.min()), "export": {
        k: v for k, v in export.items() if k != "path"}}
    print(json.dumps(report, indent=2))
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
