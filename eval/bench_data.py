"""Benchmark: training-input throughput from an InsightFace .rec, ours against an arcface_torch-style per-image path.

Both paths read the same pack (>= 20,000 synthetic faces, JPEG quality 95, face2rec2 layout written by
``lrfr_plugins.formats.packing``) with the same DataLoader settings (workers, batch size, shuffle) and end with a
float batch (N, 3, 112, 112) in [-1, 1], horizontally flipped with p = 0.5 and half of it degraded to 16 px and back
(the founding study's cross-resolution batches):

* ``baseline``: arcface_torch's ``MXFaceDataset`` (PROTOCOLS.md §1.6) re-implemented without mxnet/torchvision: per
  item decode JPEG -> RGB, ToPILImage, RandomHorizontalFlip, the degradation done per image as a per-image pipeline
  does it (cv2.resize INTER_LINEAR to 16 and back with p = 0.5; PIL BILINEAR without cv2), ToTensor,
  Normalize(0.5, 0.5); default collate of float tensors.
* ``ours``: ``insightface-rec`` in the Trainer's own DataLoader (``Trainer._loader``: ``collate_readable``, batched
  ``__getitems__``), then, on the uint8 batch in the main process, ``Trainer._prepare`` itself (the flip, the
  ``cross-resolution`` degradation) and ``to_network_input``, as ``Trainer.train_step`` does them.

Also timed: ``ours_loader_only``, the loader alone (what the CPU does when train_step runs on a GPU).

Each run times ``--batches`` batches after ``--warmup`` batches (worker start-up excluded); the two paths alternate
(ABBA...) ``--repeats`` times; the JSON gives every run, the medians and the ratio of the medians. The pack is built
once into ``--root`` (default /tmp/lrfr-bench-data) and reused:

    python eval/bench_data.py [--workers 2] [--batch 256] [--repeats 3] [--thp] [--device cuda] [--pil]

``--device cuda`` runs ours' batch work on the GPU, as ``train_step`` does there; ``--pil`` decodes ours with PIL when
the optional simplejpeg is installed (an install without the ``[fast]`` extra); ``--thp`` sets torch's
THP_MEM_ALLOC_ENABLE (huge pages for large CPU tensors); ``profile_us_per_img`` times each stage in one process.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import platform
import shutil
import statistics
import sys
import time
import types

import numpy as np

if "--thp" in sys.argv:  # read once by torch's CPU allocator, so set before torch allocates anything
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"
import torch

try:
    import cv2  # only the baseline uses it (a per-image pipeline's resize); not a project dependency
except ImportError:  # pragma: no cover
    cv2 = None


# ---------------------------------------------------------------------------------------------------------- the pack

def build_pack(root: pathlib.Path, identities: int, per_identity: int) -> dict:
    """Render synthetic faces into an image folder (JPEG 95) and pack it with ``lrfr data pack``'s code; reuse a
    pack that already holds the requested number of images."""
    from lrfr_plugins import create
    from lrfr_plugins.formats.packing import pack_image_folder
    from lrfr_plugins.formats.images import encode_image
    from lrfr_plugins.formats.recordio import TrainingSet

    wanted = identities * per_identity
    if (root / "train.rec").exists() and (root / "property").exists():
        ts = TrainingSet(root)
        if len(ts) == wanted and ts.num_classes == identities:
            ts.close()
            return {"root": str(root), "images": wanted, "identities": identities, "built": False}
        ts.close()
    root.mkdir(parents=True, exist_ok=True)
    src = root / "_images"
    shutil.rmtree(src, ignore_errors=True)
    faces = create("dataset", "synthetic", num_identities=identities, images_per_identity=per_identity, cache=False)
    start = time.perf_counter()
    for lo in range(0, wanted, 1000):
        idx = np.arange(lo, min(lo + 1000, wanted))
        batch = faces.render(idx).permute(0, 2, 3, 1).contiguous().numpy()
        for i, rgb in zip(idx.tolist(), batch):
            folder = src / f"{i // per_identity:05d}"
            folder.mkdir(exist_ok=True, parents=True)
            (folder / f"{i % per_identity:04d}.jpg").write_bytes(encode_image(rgb, quality=95))
    summary = pack_image_folder(src, root, quality=95, overwrite=True)
    shutil.rmtree(src)
    return {"root": str(root), "images": summary.images, "identities": summary.identities, "built": True,
            "build_s": round(time.perf_counter() - start, 1), "rec_bytes": (root / "train.rec").stat().st_size}


# ------------------------------------------------------------------------------------------------------ the baseline

class MXFaceDatasetBaseline(torch.utils.data.Dataset):
    """arcface_torch ``MXFaceDataset`` + torchvision transforms, per image, plus the study's LR step per image.

    Record access goes through the project's RecordReader (in place of ``MXIndexedRecordIO``): the same bytes.
    """

    def __init__(self, root: str, lr_size: int = 16, size: int = 112):
        from lrfr_plugins.formats.recordio import TrainingSet

        self.pack = TrainingSet(root)
        self.lr_size, self.size = lr_size, size

    def __len__(self) -> int:
        return len(self.pack)

    def __getitem__(self, index: int):
        from PIL import Image

        header, img = self.pack.read(index)
        label = header.label if header.flag == 0 else header.label[0]
        label = torch.tensor(label, dtype=torch.long)
        sample = np.array(Image.open(io.BytesIO(img)).convert("RGB"))  # mx.image.imdecode(img).asnumpy(): RGB
        pic = Image.fromarray(sample)  # ToPILImage
        if torch.rand(1) < 0.5:  # RandomHorizontalFlip(p=0.5)
            pic = pic.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if torch.rand(1) < 0.5:  # the study's LR step, per image: down to 16 and back, bilinear without AA
            if cv2 is not None:
                arr = np.asarray(pic)
                small = cv2.resize(arr, (self.lr_size, self.lr_size), interpolation=cv2.INTER_LINEAR)
                pic = Image.fromarray(cv2.resize(small, (self.size, self.size), interpolation=cv2.INTER_LINEAR))
            else:  # pragma: no cover
                small = pic.resize((self.lr_size, self.lr_size), Image.Resampling.BILINEAR)
                pic = small.resize((self.size, self.size), Image.Resampling.BILINEAR)
        # ToTensor: HWC uint8 -> CHW float in [0, 1]
        tensor = torch.from_numpy(np.array(pic, np.uint8, copy=True))
        tensor = tensor.view(pic.size[1], pic.size[0], 3).permute(2, 0, 1).contiguous()
        tensor = tensor.to(dtype=torch.get_default_dtype()).div(255)
        # Normalize(mean=0.5, std=0.5), not in place (torchvision clones)
        mean = torch.as_tensor([0.5, 0.5, 0.5], dtype=tensor.dtype)
        std = torch.as_tensor([0.5, 0.5, 0.5], dtype=tensor.dtype)
        tensor = tensor.clone().sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))
        return tensor, label


def baseline_loader(root: str, batch: int, workers: int, seed: int) -> torch.utils.data.DataLoader:
    """arcface_torch's loader settings (shuffle, drop_last, default collate); no pin_memory on CPU."""
    return torch.utils.data.DataLoader(MXFaceDatasetBaseline(root), batch_size=batch, shuffle=True, drop_last=True,
                                       num_workers=workers, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------------- ours

DEVICE = torch.device("cpu")  # where train_step's batch work runs (--device)


def our_loader(root: str, batch: int, workers: int, seed: int) -> torch.utils.data.DataLoader:
    """The Trainer's own DataLoader (``Trainer._loader``, pin_memory on CUDA) over ``insightface-rec``."""
    from lrfr_plugins import create
    from lrfr_plugins.engine.trainer import Trainer

    stand_in = types.SimpleNamespace(
        parts=types.SimpleNamespace(dataset=create("dataset", "insightface-rec", root=root)),
        config=types.SimpleNamespace(batch_size=batch, num_workers=workers),
        seed=seed, epoch=0, batch_in_epoch=0, rank=0, world_size=1, device=DEVICE)
    return Trainer._loader(stand_in)


def our_batches(loader, seed: int):
    """What ``Trainer.train_step`` does before the backbone, by the Trainer's own code: ``Trainer._prepare`` (uint8
    batch to the device, flip, the recipe's degradations) on a stand-in holding the study's recipe parts, then
    ``to_network_input``."""
    from lrfr_plugins import create
    from lrfr_plugins.engine.trainer import Trainer
    from lrfr_plugins.ops.preprocess import to_network_input

    trainer = types.SimpleNamespace(
        parts=types.SimpleNamespace(degradations=[create("degradation", "cross-resolution")], quality=None),
        config=types.SimpleNamespace(hflip=0.5), generator=torch.Generator().manual_seed(seed), device=DEVICE,
        quality=None)  # the estimator Trainer._prepare reads (none: the demo-style batches compute no quality)
    for images, labels, _indices, _skipped in loader:
        images, labels, _lr_mask, _quality = Trainer._prepare(trainer, images, labels)
        yield to_network_input(images), labels


def our_loader_batches(loader, seed: int):
    """Only what the CPU does when ``train_step`` runs on a GPU: the loader (flip, degradation and network input
    then run on the device). ``.float()`` stands in for the host-side step, to return the same dtype."""
    for images, labels, _indices, _skipped in loader:
        yield images.float(), labels


def baseline_batches(loader, seed: int):
    yield from loader


# ------------------------------------------------------------------------------------------------------- timing

def measure(make_loader, batches_of, args, seed: int) -> float:
    """Images per second over ``args.batches`` batches, timed after ``args.warmup`` batches (workers started)."""
    loader = make_loader(str(args.root), args.batch, args.workers, seed)
    it = iter(batches_of(loader, seed))
    for _ in range(args.warmup):
        x, _ = next(it)
    assert x.dtype == torch.float32 and tuple(x.shape) == (args.batch, 3, 112, 112)
    start = time.perf_counter()
    for _ in range(args.batches):
        x, _ = next(it)
    if x.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    del it, loader  # stops the workers before the other path runs
    return args.batches * args.batch / seconds


def profile(root: str, batch: int, repeats: int = 5) -> dict:
    """Where the time goes: microseconds per image of each stage, in this process (the main process's torch
    threads), median over ``repeats`` random batches. Worker-side stages include the collate."""
    from lrfr_plugins import create
    from lrfr_plugins.engine.batches import collate_readable, hflip
    from lrfr_plugins.formats.images import decode_image
    from lrfr_plugins.ops.preprocess import to_network_input

    ours = create("dataset", "insightface-rec", root=root)
    base = MXFaceDatasetBaseline(root)
    degradation = create("degradation", "cross-resolution")
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {}

    def timed(name, fn, *fn_args):
        start = time.perf_counter()
        out = fn(*fn_args)
        times.setdefault(name, []).append((time.perf_counter() - start) / batch * 1e6)
        return out

    def decode_only(idx):  # the decoder ours uses (simplejpeg when installed and not --pil, else PIL)
        for i in idx:
            _, data = ours.pack.read(i)
            decode_image(data)

    for _ in range(repeats):
        idx = rng.permutation(len(ours))[:batch].tolist()
        timed("jpeg_read_and_decode_only", decode_only, idx)
        items = timed("worker_ours_getitems", ours.__getitems__, idx)
        images = timed("worker_ours_collate", collate_readable, items)[0]
        timed("worker_ours_per_item_and_collate", lambda ix: collate_readable([ours[i] for i in ix]), idx)
        timed("worker_baseline_per_item_and_collate",
              lambda ix: torch.utils.data.default_collate([base[i] for i in ix]), idx)
        flip = torch.rand(batch, generator=generator) < 0.5
        images = timed("main_flip", hflip, images, flip)
        images = timed("main_cross_resolution", lambda x: degradation(x, generator).images, images)
        timed("main_to_network_input", to_network_input, images)
    return {name: round(statistics.median(v), 1) for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=pathlib.Path, default=pathlib.Path("/tmp/lrfr-bench-data"),
                        help="pack cache folder (built once)")
    parser.add_argument("--identities", type=int, default=400)
    parser.add_argument("--per-identity", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (both paths)")
    parser.add_argument("--batch", type=int, default=256, help="batch size (both paths)")
    parser.add_argument("--batches", type=int, default=24, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches per run (worker start-up)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each path, alternating")
    parser.add_argument("--thp", action="store_true",
                        help="THP_MEM_ALLOC_ENABLE=1: torch backs large CPU tensors with huge pages (fewer page "
                             "faults for the fresh (256, 3, 112, 112) tensors of every batch)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the main process (the workers take the cores; 0: torch's default)")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the per-stage timing (in this process) printed as profile_us_per_img")
    parser.add_argument("--pil", action="store_true",
                        help="decode with PIL even when the optional simplejpeg ([fast] extra) is installed, as an "
                             "install without the extra does")
    parser.add_argument("--device", default="cpu",
                        help="where ours runs train_step's flip, degradation and network input (cuda: as on a GPU)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.identities * args.per_identity < 20000:
        parser.error("the pack must hold at least 20,000 images")
    if args.threads:
        torch.set_num_threads(args.threads)
    from lrfr_plugins.formats import images

    if args.pil:  # what decode_image finds when simplejpeg is not installed (workers fork and inherit it)
        images._SIMPLEJPEG = False
    fast = images._simplejpeg()
    decoder = f"simplejpeg {fast.__version__}" if fast else "PIL"

    load_before = os.getloadavg()
    pack = build_pack(args.root, args.identities, args.per_identity)
    stages = profile(str(args.root), args.batch) if args.profile else None
    paths = {"baseline": (baseline_loader, baseline_batches), "ours": (our_loader, our_batches),
             "ours_loader_only": (our_loader, our_loader_batches)}
    runs: dict[str, list[float]] = {name: [] for name in paths}
    for r in range(args.repeats):
        order = list(paths) if r % 2 == 0 else list(paths)[::-1]
        for name in order:
            runs[name].append(measure(*paths[name], args, seed=r))
            print(f"run {r + 1} {name}: {runs[name][-1]:.0f} img/s", file=sys.stderr)
    medians = {name: statistics.median(v) for name, v in runs.items()}
    print(json.dumps({
        "pack": pack, "workers": args.workers, "batch": args.batch, "timed_images_per_run": args.batch * args.batches,
        "device": str(DEVICE), "main_threads": torch.get_num_threads(),
        "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "0"),
        "cpus": os.cpu_count(), "resize": "cv2" if cv2 else "PIL", "ours_jpeg_decoder": decoder,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__, "python": platform.python_version(),
        "runs_img_per_s": {name: [round(v, 1) for v in vals] for name, vals in runs.items()},
        "median_img_per_s": {name: round(v, 1) for name, v in medians.items()},
        "ratio_ours_over_baseline": round(medians["ours"] / medians["baseline"], 2),
        "profile_us_per_img": stages,
        "ratio_ours_loader_only_over_baseline": round(medians["ours_loader_only"] / medians["baseline"], 2)},
        indent=2))


if __name__ == "__main__":
    main()
