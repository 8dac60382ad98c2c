"""Image folders: ``root/<identity>/<image>``, optionally listed by a file (the founding study's ``train.txt``).

Without a list, identities are the sub-folders in sorted order (label k = the k-th name), as torchvision's
``ImageFolder`` and arcface_torch's fallback loader number them, so a model trained on the folder and on its
packed ``.rec`` sees the same labels. A list file has one image per line: ``<path relative to root>`` or
``<path> <label>`` (the study's ``<id>/<file>.jpg <id>``); a label column, when present, is used as is.

A folder of images with no identity sub-folders (``root/<image>``) is unlabelled: every label is -1 and there are no
classes. Only callers that say they can use such data (label-free fine-tuning) accept it.
"""

from __future__ import annotations

import dataclasses
import pathlib

from ..errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclasses.dataclass(frozen=True)
class FolderIndex:
    """Every image path (absolute) with its integer label, and the identity name of each label."""

    paths: list[pathlib.Path]
    labels: list[int]
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _images_in(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def scan_image_folder(root: str | pathlib.Path, list_file: str | pathlib.Path | None = None, *,
                      unlabelled_ok: bool = False) -> FolderIndex:
    """Index ``root`` (sorted identities, sorted images) or the images named by ``list_file``; with
    ``unlabelled_ok``, a folder of images without identity sub-folders gives labels -1 and no classes."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder. An image folder holds one sub-folder per identity "
                        "(root/<identity>/<image>.jpg).")
    if list_file is not None:
        return _read_list(root, pathlib.Path(list_file))
    identities = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths: list[pathlib.Path] = []
    labels: list[int] = []
    for label, name in enumerate(identities):
        images = _images_in(root / name)
        paths += images
        labels += [label] * len(images)
    if not paths and (flat := _images_in(root)):
        if unlabelled_ok:
            return FolderIndex(flat, [-1] * len(flat), [])
        raise DataError(f"{root}: {len(flat)} images lie directly in the folder, with no identity sub-folders; this "
                        "needs identities (root/<identity>/<image>). A folder without identities serves label-free "
                        "fine-tuning only (dataset image-folder with finetuner distill and train.epochs: 0).")
    if not paths:
        raise DataError(f"{root}: no images found. Expected root/<identity>/<image> with extensions "
                        f"{', '.join(IMAGE_EXTENSIONS)}.")
    return FolderIndex(paths, labels, identities)


def _read_list(root: pathlib.Path, list_file: pathlib.Path) -> FolderIndex:
    if not list_file.is_absolute() and not list_file.exists():
        list_file = root / list_file
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"{list_file}: cannot read the list file ({exc.strerror}). Give its path, absolute or "
                        "relative to the image folder.") from None
    rows = [(n, line.split()) for n, line in enumerate(lines, 1) if line.strip() and not line.startswith("#")]
    if not rows:
        raise DataError(f"{list_file}: the list is empty. Write one '<path relative to root> [label]' per line.")
    with_labels = len(rows[0][1]) >= 2
    paths, names = [], []
    for n, fields in rows:
        if len(fields) != (2 if with_labels else 1):
            raise DataError(f"{list_file}:{n}: expected {'<path> <label>' if with_labels else '<path>'} "
                            f"(as on line {rows[0][0]}), got {len(fields)} fields. Paths must not contain spaces.")
        if with_labels and not fields[1].lstrip("-").isdigit():
            raise DataError(f"{list_file}:{n}: the label {fields[1]!r} is not an integer.")
        path = root / fields[0]
        if not path.is_file():
            raise DataError(f"{list_file}:{n}: {path} does not exist. Paths are relative to {root}.")
        paths.append(path)
        names.append(fields[1] if with_labels else pathlib.PurePath(fields[0]).parent.as_posix())
    if with_labels:
        labels = [int(x) for x in names]
        if min(labels) < 0:
            raise DataError(f"{list_file}: labels must be >= 0, found {min(labels)}.")
        class_names = [str(k) for k in range(max(labels) + 1)]
    else:
        class_names = sorted(set(names))
        number = {name: k for k, name in enumerate(class_names)}
        labels = [number[name] for name in names]
    return FolderIndex(paths, labels, class_names)
