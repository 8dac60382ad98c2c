"""``lrfr data``: pack an image folder into an InsightFace training pack, rebuild a pack's index, describe data on disk.

The logic lives in plain functions, :func:`~lrfr_plugins.formats.packing.pack_image_folder` and :func:`describe`;
the click commands only parse options and print. Heavy imports (numpy, PIL, torch, tqdm) happen inside them, so
that loading the CLI stays fast.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import tempfile
from collections import Counter
from typing import Any

import click

from .errors import DataError

ACCEPTED = ("'lrfr data info' accepts: an InsightFace pack folder (train.rec + train.idx + property), a RecordIO "
            ".rec file, a verification .bin file, or an image folder (root/<identity>/<image>).")
DEFAULT_SAMPLES = 5


# ---------------------------------------------------------------------------------------------------------------------
# describe
# ---------------------------------------------------------------------------------------------------------------------

def describe(path: str | os.PathLike, *, samples: int = DEFAULT_SAMPLES, progress: bool = False) -> dict[str, Any]:
    """Describe a pack folder, a ``.rec`` file, a verification ``.bin`` or an image folder as a JSON-ready dict.

    Counts come from the index (``.idx``), the ``property`` file, record 0, the pickle or the folder listing; only
    ``samples`` images, spread over the set, are opened (header only: size, format, mode). A ``.rec`` without
    ``.idx`` is scanned record header by record header, with a progress bar when ``progress``.

    Keys common to every format: ``path``, ``format`` (``insightface-pack``, ``recordio``, ``verification-bin``,
    ``image-folder``), ``images``, ``samples`` (list of dicts), ``sample_labels``, ``image_sizes`` (distinct
    ``WxH`` among the samples) and ``files`` (name -> bytes).
    """
    p = pathlib.Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder. {ACCEPTED}")
    if p.is_dir():
        if (p / "train.rec").is_file():
            return _describe_rec(p / "train.rec", samples, progress, pack_dir=True)
        return _describe_folder_or_fail(p, samples)
    head = _read_head(p)
    suffix = p.suffix.lower()
    if suffix == ".rec" or head[:4] == b"\x0a\x23\xd7\xce":
        return _describe_rec(p, samples, progress, pack_dir=False)
    if suffix == ".idx" and p.with_suffix(".rec").is_file():
        return _describe_rec(p.with_suffix(".rec"), samples, progress, pack_dir=False)
    if suffix == ".bin" or head[:1] == b"\x80":
        return _describe_bin(p, samples)
    if p.name == "property" and (p.parent / "train.rec").is_file():
        return _describe_rec(p.parent / "train.rec", samples, progress, pack_dir=True)
    raise DataError(f"{p}: not a recognised data file (suffix {p.suffix or 'none'}, first bytes "
                    f"{head[:4].hex(' ') or 'none'}). {ACCEPTED}")


def _read_head(p: pathlib.Path) -> bytes:
    try:
        with open(p, "rb") as fh:
            return fh.read(4)
    except OSError as exc:
        raise DataError(f"{p}: cannot read the file ({exc.strerror}).") from None


def _spread(n: int, k: int) -> list[int]:
    """Up to k indices spread evenly over range(n), first and last included."""
    if n <= 0 or k <= 0:
        return []
    if n <= k:
        return list(range(n))
    if k == 1:
        return [0]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _image_meta(data: bytes) -> dict[str, Any]:
    """Size, format and mode from the image header (nothing is decoded)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return {"width": im.width, "height": im.height, "format": im.format, "mode": im.mode, "bytes": len(data)}
    except Exception as exc:  # PIL raises many types for bad files
        return {"bytes": len(data), "error": f"cannot read the image: {type(exc).__name__}: {exc}"}


def _sizes(sample_list: list[dict[str, Any]]) -> list[str]:
    return sorted({f"{s['width']}x{s['height']}" for s in sample_list if "width" in s})


def _describe_rec(rec_path: pathlib.Path, samples: int, progress: bool, pack_dir: bool) -> dict[str, Any]:
    from .formats.recordio import TrainingSet, scan_index

    root = rec_path.parent
    idx_path = rec_path.with_suffix(".idx")
    if pack_dir:
        idx_path = root / "train.idx"
    with tempfile.TemporaryDirectory(prefix="lrfr-info-") as tmp:
        if idx_path.is_file():
            index_note = idx_path.name
        else:
            idx_path = pathlib.Path(tmp) / "scanned.idx"
            keys, offsets, how = scan_index(rec_path, progress=progress)
            idx_path.write_text("".join(f"{k}\t{o}\n" for k, o in zip(keys, offsets)), encoding="ascii")
            index_note = f"none: scanned {rec_path.name}, records keyed by {how}"
        ts = TrainingSet(root, rec=rec_path.name, idx=str(idx_path.resolve()), prop="property")
        try:
            out = _describe_training_set(ts, samples)
        finally:
            ts.close()
    files = {rec_path.name: rec_path.stat().st_size}
    for extra in (rec_path.with_suffix(".idx"), root / "property"):
        if extra.is_file():
            files[extra.name] = extra.stat().st_size
    return {"path": str(root if pack_dir else rec_path),
            "format": "insightface-pack" if pack_dir else "recordio",
            **out, "index": index_note, "files": files, "total_bytes": sum(files.values())}


def _describe_training_set(ts: Any, samples: int) -> dict[str, Any]:
    n = len(ts)
    sample_list = []
    for i in _spread(n, samples):
        key = int(ts.image_keys[i])
        header, img = ts.read(i)
        sample_list.append({"index": i, "key": key, "label": ts.label_of(header, key), "flag": header.flag,
                            **_image_meta(img)})
    identity_ranges = []
    if ts.identity_keys is not None:
        for k in _spread(len(ts.identity_keys), min(samples, 3)):
            a, b = ts.identity_range(k)
            identity_ranges.append({"identity": k, "start": a, "end": b})
    meta = None
    if ts.meta is not None:
        meta = {"flag": int(ts.meta.flag), "label": [float(v) for v in ts.meta.label]}
        meta["label"] = [int(v) if v == int(v) else v for v in meta["label"]]
    prop = None
    if ts.property is not None:
        prop = dict(zip(("num_classes", "height", "width"), ts.property))
    return {
        "layout": "face2rec2" if ts.meta is not None else "plain",
        "records": len(ts.reader),
        "images": n,
        "identities": ts.num_classes,
        "property": prop,
        "meta_header": meta,
        "identity_ranges": identity_ranges,
        "samples": sample_list,
        "sample_labels": [s["label"] for s in sample_list],
        "image_sizes": _sizes(sample_list),
    }


def _describe_bin(path: pathlib.Path, samples: int) -> dict[str, Any]:
    from .formats.verification_bin import load_verification_bin

    vb = load_verification_bin(path)
    encodings = Counter("JPEG" if b[:3] == b"\xff\xd8\xff" else "PNG" if b[:4] == b"\x89PNG" else "other"
                        for b in vb.bins)
    sample_list = [{"index": j, "pair": j // 2, **_image_meta(vb.bins[j])} for j in _spread(len(vb.bins), samples)]
    positives = sum(bool(s) for s in vb.issame)
    return {
        "path": str(path),
        "format": "verification-bin",
        "pairs": len(vb),
        "positives": positives,
        "negatives": len(vb) - positives,
        "images": len(vb.bins),
        "encodings": dict(sorted(encodings.items())),
        "samples": sample_list,
        "sample_labels": [bool(vb.issame[i]) for i in _spread(len(vb), samples)],
        "image_sizes": _sizes(sample_list),
        "files": {path.name: path.stat().st_size},
        "total_bytes": path.stat().st_size,
    }


def _describe_folder_or_fail(p: pathlib.Path, samples: int) -> dict[str, Any]:
    from .formats.image_folder import IMAGE_EXTENSIONS

    try:
        return _describe_folder(p, samples)
    except DataError:
        others = sorted(x.name for x in p.iterdir() if x.is_file() and x.suffix.lower() in (".rec", ".bin"))
        loose = [x.name for x in p.iterdir() if x.is_file() and x.suffix.lower() in IMAGE_EXTENSIONS]
        if others:
            hint = f" It holds {', '.join(others[:5])}: pass one of those files."
        elif loose:
            hint = (f" It holds {len(loose)} image(s) directly (e.g. {loose[0]}); an image folder needs one "
                    "sub-folder per identity.")
        elif not any(p.iterdir()):
            hint = " The folder is empty."
        else:
            hint = ""
        raise DataError(f"{p}: not a recognised data folder: no train.rec and no images in identity sub-folders."
                        f"{hint} {ACCEPTED}") from None


def _describe_folder(p: pathlib.Path, samples: int) -> dict[str, Any]:
    from .formats.image_folder import scan_image_folder

    index = scan_image_folder(p)
    per_id = Counter(index.labels)
    counts = sorted(per_id.get(k, 0) for k in range(index.num_classes))
    sample_list = []
    for i in _spread(len(index.paths), samples):
        path = index.paths[i]
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            meta = _image_meta(data)
        except OSError as exc:
            meta = {"error": f"cannot read: {exc.strerror}"}
        label = index.labels[i]
        sample_list.append({"index": i, "path": path.relative_to(p).as_posix(), "label": label,
                            "identity": index.class_names[label], **meta})
    total = sum(path.stat().st_size for path in index.paths)
    return {
        "path": str(p),
        "format": "image-folder",
        "images": len(index.paths),
        "identities": index.num_classes,
        "empty_identities": sum(1 for c in counts if c == 0),
        "images_per_identity": {"min": counts[0], "median": counts[len(counts) // 2], "max": counts[-1]},
        "extensions": dict(sorted(Counter(path.suffix.lower() for path in index.paths).items())),
        "samples": sample_list,
        "sample_labels": [s["label"] for s in sample_list],
        "image_sizes": _sizes(sample_list),
        "files": {"images": total},
        "total_bytes": total,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Text rendering
# ---------------------------------------------------------------------------------------------------------------------

FORMAT_NAMES = {
    "insightface-pack": "InsightFace training pack",
    "recordio": "RecordIO file",
    "verification-bin": "InsightFace verification .bin",
    "image-folder": "image folder (root/<identity>/<image>)",
}


def _sample_text(s: dict[str, Any]) -> str:
    if "error" in s:
        image = s["error"]
    else:
        image = f"{s['width']}x{s['height']} {s['format']} {s['mode']}, {s['bytes']:,} B"
    if "key" in s:
        return f"key {s['key']} (image {s['index']}): label {s['label']}, {image}"
    if "pair" in s:
        return f"image {s['index']} (pair {s['pair']}): {image}"
    return f"{s['path']}: label {s['label']}, {image}"


def format_description(d: dict[str, Any]) -> str:
    """Readable text for a :func:`describe` dict."""
    fmt = d["format"]
    title = FORMAT_NAMES.get(fmt, fmt)
    if "layout" in d:
        title += (", face2rec2 layout (record 0 is a meta-header)" if d["layout"] == "face2rec2"
                  else ", plain layout (every record is an image; no meta-header)")
    rows: list[tuple[str, str]] = [("format", title)]
    if fmt == "verification-bin":
        rows += [("pairs", f"{d['pairs']:,} ({d['positives']:,} same, {d['negatives']:,} different)"),
                 ("images", f"{d['images']:,} ({', '.join(f'{k} {v:,}' for k, v in d['encodings'].items())})")]
    else:
        rows.append(("images", f"{d['images']:,}"))
        if fmt == "image-folder":
            ipi = d["images_per_identity"]
            ids = f"{d['identities']:,} (images per identity: min {ipi['min']}, median {ipi['median']}, " \
                  f"max {ipi['max']}"
            ids += f"; {d['empty_identities']} empty)" if d["empty_identities"] else ")"
            rows += [("identities", ids),
                     ("extensions", ", ".join(f"{k} {v:,}" for k, v in d["extensions"].items()))]
        else:
            prop = d["property"]
            ids = "unknown (no property file and no meta-header)" if d["identities"] is None else f"{d['identities']:,}"
            ids += (f" (property {prop['num_classes']},{prop['height']},{prop['width']})" if prop
                    else " (no property file)")
            rows += [("identities", ids), ("records", f"{d['records']:,} (index: {d['index']})")]
            meta = d["meta_header"]
            if meta is not None:
                a, b = meta["label"]
                rows.append(("meta-header", (f"flag={meta['flag']} label=[{a}, {b}]: images are keys 1..{a - 1}, "
                                             f"identity ranges keys {a}..{b - 1}")))
            else:
                rows.append(("meta-header", "none"))
            if d["identity_ranges"]:
                rows.append(("identity ranges", ", ".join(f"{r['identity']}: [{r['start']}, {r['end']})"
                                                          for r in d["identity_ranges"])))
    rows.append(("image sizes", (", ".join(d["image_sizes"]) or "unknown") + f" (of {len(d['samples'])} samples)"))
    rows.append(("sample labels", ", ".join(str(x) for x in d["sample_labels"]) or "none"))
    for i, s in enumerate(d["samples"]):
        rows.append(("samples" if i == 0 else "", _sample_text(s)))
    rows.append(("files", ", ".join(f"{k} {v:,} B" for k, v in d["files"].items())
                 + (f" (total {d['total_bytes']:,} B)" if len(d["files"]) > 1 else "")))
    width = max(len(k) for k, _ in rows) + 2
    lines = [d["path"]] + [f"  {(k + ':') if k else '':<{width}}{v}" for k, v in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------------------

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Prepare and inspect face data: pack an image folder into an InsightFace .rec, describe a pack/.bin/folder.

    \b
      lrfr data pack faces/ packed/      image folder -> packed/train.rec, train.idx, property
      lrfr data index packed/train.rec   rebuild a missing or broken train.idx from train.rec
      lrfr data info packed/             counts, meta-header, a few samples, file sizes
      lrfr data info lfw.bin --json      machine-readable
    """


@data.command("pack")
@click.argument("src", type=click.Path(path_type=pathlib.Path))
@click.argument("dst", type=click.Path(path_type=pathlib.Path))
@click.option("--list", "list_file", type=click.Path(dir_okay=False, path_type=pathlib.Path), metavar="FILE",
              help="Pack only the images FILE lists, one '<path relative to SRC> [label]' per line.")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="JPEG quality for images that must be re-encoded (112x112 JPEG sources are stored as they are).")
@click.option("--overwrite", is_flag=True, help="Replace a pack that already exists in DST.")
@click.option("--skip-corrupt", is_flag=True, help="Leave images that cannot be decoded out (listed at the end) "
                                                   "instead of stopping at the first.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar (default: on).")
def pack_command(src: pathlib.Path, dst: pathlib.Path, list_file: pathlib.Path | None, quality: int, overwrite: bool,
                 skip_corrupt: bool, progress: bool) -> None:
    """Pack the image folder SRC (SRC/<identity>/<image>) into DST/train.rec, train.idx and property.

    The layout is InsightFace's face2rec2 one, which arcface_torch's MXFaceDataset reads: record 0 meta-header,
    images keyed 1..N grouped by identity (labels = sorted identity folder names), one identity-range record per
    identity. Faces should be aligned 112x112; other sizes are resized, with a warning. Temp files that an
    interrupted earlier pack left in DST are removed (and named).
    """
    from .formats.packing import pack_image_folder

    click.get_current_context().meta["lrfr.write_elsewhere"] = "pack into a folder on another disk"

    summary = pack_image_folder(src, dst, list_file=list_file, quality=quality, overwrite=overwrite,
                                skip_corrupt=skip_corrupt, progress=progress,
                                warn=lambda msg: click.echo(f"Warning: {msg}", err=True))
    click.echo(summary.line())


@data.command("index")
@click.argument("rec", type=click.Path(path_type=pathlib.Path))
@click.option("--idx", "idx_path", type=click.Path(dir_okay=False, path_type=pathlib.Path), metavar="PATH",
              help="Where to write the index. Default: REC with the suffix .idx (train.rec -> train.idx).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar (default: on).")
def index_command(rec: pathlib.Path, idx_path: pathlib.Path | None, progress: bool) -> None:
    """Rebuild the .idx of the RecordIO file REC (or of PACK_FOLDER/train.rec) by scanning it.

    The .idx says where each record starts; without it (or with a broken one) a pack cannot be read at random.
    Keys come from the records' IRHeader ids (as face2rec2, im2rec, RecBuilder and 'lrfr data pack' write them),
    else from file order. The index is written atomically: a failure leaves the old one as it was.

    \b
      lrfr data index faces_webface_112x112/train.rec
    """
    from .atomic import remove_stale_temp_files
    from .formats.recordio import rebuild_index

    if rec.is_dir():
        rec = rec / "train.rec"
    idx_path = idx_path if idx_path is not None else rec.with_suffix(".idx")
    click.get_current_context().meta["lrfr.write_elsewhere"] = "pass --idx PATH on another disk"
    if not rec.is_file():
        raise DataError(f"{rec}: no such RecordIO file. Pass the .rec file of the pack (e.g. packed/train.rec) or "
                        "the pack folder that holds train.rec.")
    if idx_path.resolve() == rec.resolve():
        raise DataError(f"--idx {idx_path}: is the .rec itself; the index must be another file (e.g. "
                        f"{rec.with_suffix('.idx')}).")
    removed, _ = remove_stale_temp_files(idx_path.parent, [idx_path.name])
    existed = idx_path.exists()
    records = rebuild_index(rec, idx_path, progress=progress)
    click.echo(f"{'Replaced' if existed else 'Wrote'} {idx_path}: {records:,} records of {rec} "
               f"({idx_path.stat().st_size:,} bytes)."
               + (f" Removed temp file(s) of an interrupted earlier index: {', '.join(removed)}." if removed else ""))


@data.command("info")
@click.argument("path", type=click.Path(path_type=pathlib.Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
@click.option("--samples", type=click.IntRange(0, 100), default=DEFAULT_SAMPLES, show_default=True,
              help="How many images to open for sizes and labels.")
@click.option("--progress/--no-progress", default=True,
              help="Show a progress bar when a .rec has no .idx and must be scanned (default: on).")
def info_command(path: pathlib.Path, as_json: bool, samples: int, progress: bool) -> None:
    """Describe PATH: a pack folder (train.rec/.idx/property), a .rec file, a verification .bin or an image folder.

    Prints the format, counts (images and identities; pairs and positives for a .bin), the meta-header, the sizes
    and labels of a few sample images and the file sizes. Only the samples are opened, so big packs are quick.
    """
    d = describe(path, samples=samples, progress=progress)
    click.echo(json.dumps(d, indent=2) if as_json else format_description(d))
