"""Pack an image folder into an InsightFace training pack (``train.rec`` + ``train.idx`` + ``property``).

The layout is face2rec2's (``PROTOCOLS.md`` §1.4), which arcface_torch's ``MXFaceDataset``, DALI's mxnet reader and
:class:`~lrfr_plugins.formats.recordio.TrainingSet` all read:

* keys ``1..N``: one image each, grouped by identity (labels ascending), ``IRHeader(0, float(label), key, 0)``;
* keys ``N+1 .. N+num_ids``: one per identity k, ``IRHeader(2, [start, end), key, 0)``, empty payload (an identity
  whose every image was skipped gets an empty range, so labels keep matching the folder names);
* key ``0``: the meta-header ``IRHeader(2, [N+1, N+1+num_ids], 0, 0)``;
* ``property``: ``num_classes,112,112``.

The file order is face2rec2's (``deepinsight/insightface src/data/face2rec2.py``): images, then record 0 (N is only
known once every image has been read), then the identity records. Keys therefore do not follow file order; readers
go through ``train.idx``, as arcface_torch does.

Faces are expected aligned at 112 x 112. A source that is already a 112 x 112 JPEG (RGB or grey) is stored byte for
byte (no second JPEG generation loss); anything else is decoded, resized to 112 x 112 when needed
(:func:`~lrfr_plugins.ops.resize.resize_to`, anti-aliased bilinear) and encoded as JPEG at ``quality``.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import pathlib
import time
from collections.abc import Callable

import numpy as np

from ..atomic import remove_stale_temp_files
from ..errors import DataError
from .image_folder import scan_image_folder
from .images import encode_image
from .recordio import IRHeader, RecordWriter, pack, write_property

log = logging.getLogger("lrfr")

SIZE = (112, 112)
PACK_FILES = ("train.rec", "train.idx", "property")
JPEG_SIGNATURE = b"\xff\xd8\xff"


@dataclasses.dataclass
class PackSummary:
    """What :func:`pack_image_folder` wrote."""

    dst: pathlib.Path
    images: int
    identities: int
    resized: int = 0
    first_resized: str | None = None
    copied: int = 0  # 112 x 112 JPEG sources stored as they are
    skipped: list[str] = dataclasses.field(default_factory=list)
    bytes: int = 0  # train.rec + train.idx + property
    seconds: float = 0.0
    #: temp files of an earlier, interrupted pack into ``dst`` (its writer no longer runs) that were removed
    removed_temps: list[str] = dataclasses.field(default_factory=list)

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        text = (f"Packed {self.images} images of {self.identities} identities into {self.dst} "
                f"(train.rec, train.idx, property): {self.resized} resized, {len(self.skipped)} skipped, "
                f"{self.copied} JPEGs stored unchanged, {self.bytes:,} bytes, {self.seconds:.1f} s.")
        if self.removed_temps:
            text += (f" Removed {len(self.removed_temps)} temp file(s) left by an interrupted earlier pack: "
                     f"{', '.join(self.removed_temps)}.")
        return text

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["dst"] = str(self.dst)
        return d


def _load(data: bytes, path: pathlib.Path) -> tuple[np.ndarray, str, str]:
    """Decode image bytes to uint8 HWC RGB; also return the file format and the PIL mode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            fmt, mode = im.format or "?", im.mode
            rgb = np.array(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises many types for bad files
        head = bytes(data[:4]).hex(" ")
        why = ("not a known image format" if isinstance(exc, UnidentifiedImageError)
               else f"{type(exc).__name__}: {exc}")
        raise DataError(f"{path}: cannot decode the image ({len(data)} bytes starting {head or 'nothing'}): "
                        f"{why}.") from None
    return rgb, fmt, mode


def _existing_pack_files(dst: pathlib.Path) -> list[str]:
    return [name for name in PACK_FILES if (dst / name).exists()]


def pack_image_folder(src: str | os.PathLike, dst: str | os.PathLike, *, list_file: str | os.PathLike | None = None,
                      quality: int = 95, overwrite: bool = False, skip_corrupt: bool = False,
                      progress: bool = False, warn: Callable[[str], None] | None = None) -> PackSummary:
    """Pack ``src`` (``root/<identity>/<image>``, or the images ``list_file`` names) into ``dst``.

    ``dst`` gets ``train.rec``, ``train.idx`` (written atomically: a failure leaves any previous pack as it was) and
    ``property``. Temp files that an interrupted earlier pack (``kill -9``) left in ``dst`` are removed first and
    listed in ``PackSummary.removed_temps``; no other file is touched. An existing pack is refused unless
    ``overwrite``. A corrupt image raises a :class:`~lrfr_plugins.errors.DataError` naming it, unless
    ``skip_corrupt`` (then it is left out and listed in ``PackSummary.skipped``). ``warn`` receives the warnings
    (resized images, skipped images, temp files of another machine that are kept); default: the ``lrfr`` logger.
    """
    src, dst = pathlib.Path(src), pathlib.Path(dst)
    warn = warn or log.warning
    if not 1 <= int(quality) <= 100:
        raise DataError(f"JPEG quality must be between 1 and 100, got {quality}.")
    if not src.exists():
        raise DataError(f"{src}: no such folder. Pass an image folder (root/<identity>/<image>.jpg).")
    if dst.exists() and not dst.is_dir():
        raise DataError(f"{dst}: exists and is not a folder. The destination is a folder that will hold train.rec, "
                        "train.idx and property.")
    if list_file is None and src.is_dir():
        s, d = src.resolve(), dst.resolve()
        if d == s or s in d.parents:
            raise DataError(f"{dst}: the destination is inside the source folder {src}, where it would be read as "
                            "one more identity. Pack to a folder outside it.")
    existing = _existing_pack_files(dst) if dst.is_dir() else []
    if existing and not overwrite:
        raise DataError(f"{dst}: already holds a pack ({', '.join(existing)}). Pass --overwrite (overwrite=True) to "
                        "replace it, or choose another destination.")
    index = scan_image_folder(src, list_file)
    num_ids = index.num_classes
    order = sorted(range(len(index.paths)), key=lambda i: index.labels[i])  # stable: grouped by identity
    if len(order) + 1 + num_ids > 2 ** 24:
        raise DataError(f"{src}: {len(order)} images and {num_ids} identities need record keys above 2**24, where "
                        "the float32 key ranges of the face2rec2 layout stop being exact. Split the folder.")

    from tqdm.auto import tqdm

    start_time = time.perf_counter()
    summary = PackSummary(dst=dst, images=0, identities=num_ids)
    summary.removed_temps, foreign = remove_stale_temp_files(dst, PACK_FILES)
    if foreign:
        warn(f"kept {', '.join(foreign)} in {dst}: temp file(s) of a pack written on another machine, which may "
             "still be running there. Delete them once no pack into this folder runs anywhere.")
    created_dst = not dst.exists()
    counts = [0] * num_ids  # images written per identity
    try:
        with RecordWriter(dst / "train.rec", dst / "train.idx") as writer, \
                tqdm(total=len(order), desc="pack", unit="img", disable=not progress) as bar:
            key = 1
            for i in order:
                path, label = index.paths[i], index.labels[i]
                bar.update(1)
                try:
                    try:
                        data = path.read_bytes()
                    except OSError as exc:
                        raise DataError(f"{path}: cannot read the image ({exc.strerror}).") from None
                    rgb, fmt, mode = _load(data, path)
                except DataError as exc:
                    if not skip_corrupt:
                        raise DataError(f"{exc} Remove or replace the file, or pass --skip-corrupt "
                                        "(skip_corrupt=True) to leave corrupt images out of the pack.") from None
                    summary.skipped.append(str(path))
                    continue
                height, width = rgb.shape[:2]
                if (height, width) == SIZE and fmt == "JPEG" and mode in ("RGB", "L") \
                        and data[:3] == JPEG_SIGNATURE:
                    encoded = data
                    summary.copied += 1
                else:
                    if (height, width) != SIZE:
                        rgb = _resize(rgb)
                        if summary.first_resized is None:
                            summary.first_resized = f"{path} ({width}x{height})"
                        summary.resized += 1
                    encoded = encode_image(rgb, quality=quality)
                writer.write(pack(IRHeader(0, float(label), key, 0), encoded), key=key)
                counts[label] += 1
                key += 1
            n = key - 1
            if n == 0:
                raise DataError(f"{src}: none of its {len(order)} images could be decoded (all corrupt); nothing "
                                "to pack.")
            writer.write(pack(IRHeader(0, [float(n + 1), float(n + 1 + num_ids)], 0, 0)), key=0)
            start = 1
            for k, count in enumerate(counts):  # images are grouped by identity, in label order
                writer.write(pack(IRHeader(0, [float(start), float(start + count)], n + 1 + k, 0)), key=n + 1 + k)
                start += count
        write_property(dst / "property", num_ids, *SIZE)
    except BaseException:
        if created_dst and dst.is_dir() and not any(dst.iterdir()):
            dst.rmdir()
        raise
    summary.images = n
    summary.seconds = time.perf_counter() - start_time
    summary.bytes = sum((dst / name).stat().st_size for name in PACK_FILES)
    if summary.resized:
        warn(f"{summary.resized} of {len(order)} images were not {SIZE[1]}x{SIZE[0]} and were resized to it "
             f"(anti-aliased bilinear); the first: {summary.first_resized}. Align faces to InsightFace's 112x112 "
             "template for best accuracy.")
    if summary.skipped:
        shown = ", ".join(summary.skipped[:5]) + (", ..." if len(summary.skipped) > 5 else "")
        warn(f"skipped {len(summary.skipped)} corrupt image(s), left out of the pack: {shown}")
    return summary


def _resize(rgb: np.ndarray) -> np.ndarray:
    import torch

    from ..ops.resize import resize_to

    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
    return resize_to(image, SIZE)[0].permute(1, 2, 0).contiguous().numpy()
