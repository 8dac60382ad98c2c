"""LFW verification (View 2, ``pairs.txt``) on an aligned 112 x 112 LFW folder, at several resolutions.

``root`` is an **aligned** copy of LFW that keeps the release's names, ``root/<Name>/<Name>_<NNNN>.<ext>``: FaceX-Zoo's
``lfw_crop`` (the founding study's) or an InsightFace-aligned folder (PROTOCOLS.md §3.3; the raw 250 x 250 release
is not aligned and gives meaningless numbers). The extension is found per image (``.jpg``, then ``.png``,
``.jpeg``). Images of another size are resized (anti-aliased bilinear) with one warning.

``pairs.txt`` (§3.2): a header ``<folds>\\t<pairs per kind>`` (``10\\t300``; spaces accepted; a single number ``N``
means one block of N + N, as View 1's files), then one pair per line: 3 fields ``name i j`` = same person, 4 fields
``name1 i name2 j`` = different people, indices 1-based. File order is kept: the folds are contiguous blocks of it.
Each image is loaded and embedded once however many pairs use it. The metrics, presets and result keys are those of
:mod:`lrfr_plugins.builtin.protocols.pairs`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ...api import Embedder, Protocol, ProtocolResult, param
from ...errors import DataError
from ...formats.images import decode_image
from .pairs import PRESET_DOC, PairProtocolParams, Preset, check_pair_labels, evaluate_pairs, stack_images

EXTENSIONS = (".jpg", ".png", ".jpeg")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LFWParams(PairProtocolParams):
    root: str = param(doc="aligned 112x112 LFW folder root/<Name>/<Name>_<NNNN>.jpg|png (e.g. FaceX-Zoo lfw_crop)")
    pairs: str | None = param(None, "pairs.txt (View 2); null: root/../pairs.txt")
    preset: Preset = param("lozhkina", PRESET_DOC)


@dataclasses.dataclass
class PairList:
    """Parsed ``pairs.txt``: image keys (name, number) in first-use order, pairs as indices into them."""

    keys: list[tuple[str, int]]
    lines: list[int]  # the pairs.txt line first naming each image (for error messages)
    pairs: np.ndarray  # (P, 2) int64
    issame: np.ndarray  # (P,) bool
    pair_lines: list[int]
    folds: int | None


def parse_pairs(path: pathlib.Path) -> PairList:
    """Parse an LFW ``pairs.txt`` (header, then 3-field same / 4-field different lines), keeping file order."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise DataError(f"{path}: pairs file not found. Give the path of LFW's pairs.txt (View 2) as 'pairs'; by "
                        "default it is looked for next to the image folder, at root/../pairs.txt.") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the pairs file ({exc.strerror}).") from None
    numbered = [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not numbered:
        raise DataError(f"{path}: the pairs file is empty; expected a header line such as '10\\t300' and pair lines.")
    n0, header = numbered[0]
    if not (1 <= len(header) <= 2 and all(f.isdigit() and int(f) > 0 for f in header)):
        raise DataError(f"{path}:{n0}: expected a header '<folds> <pairs of each kind per fold>' such as '10\\t300' "
                        f"(or a single count), got {' '.join(header)!r}.")
    folds, per_kind = (int(header[0]), int(header[1])) if len(header) == 2 else (None, int(header[0]))
    expected = 2 * per_kind * (folds or 1)

    index: dict[tuple[str, int], int] = {}
    keys, first_lines, pairs, issame, pair_lines = [], [], [], [], []

    def image(name: str, number: str, n: int) -> int:
        if not number.isdigit():
            raise DataError(f"{path}:{n}: the image number {number!r} is not a positive integer.")
        key = (name, int(number))
        if key not in index:
            index[key] = len(keys)
            keys.append(key)
            first_lines.append(n)
        return index[key]

    for n, fields in numbered[1:]:
        if len(fields) == 3:
            pairs.append((image(fields[0], fields[1], n), image(fields[0], fields[2], n)))
            issame.append(True)
        elif len(fields) == 4:
            pairs.append((image(fields[0], fields[1], n), image(fields[2], fields[3], n)))
            issame.append(False)
        else:
            raise DataError(f"{path}:{n}: expected 3 fields 'name i j' (same person) or 4 fields 'name1 i name2 j' "
                            f"(different people), got {len(fields)}: {' '.join(fields)!r}.")
        pair_lines.append(n)
    if len(pairs) != expected:
        shape = f"{folds} folds x {per_kind} + {per_kind} pairs" if folds else f"{per_kind} + {per_kind} pairs"
        raise DataError(f"{path}: the header (line {n0}) announces {shape} = {expected} pair lines, found "
                        f"{len(pairs)}. The file is truncated or not an LFW pairs file.")
    return PairList(keys, first_lines, np.asarray(pairs, np.int64).reshape(-1, 2), np.asarray(issame, bool),
                    pair_lines, folds)


def _find_image(root: pathlib.Path, name: str, number: int) -> pathlib.Path | None:
    stem = root / name / f"{name}_{number:04d}"
    for ext in EXTENSIONS:
        candidate = stem.with_name(stem.name + ext)
        if candidate.is_file():
            return candidate
    return None


class LFW(Protocol):
    """LFW View 2 verification (pairs.txt, 10 folds) on an aligned 112x112 folder at 112..7 px (presets lozhkina,
    insightface, knoche)."""

    Params = LFWParams

    def pairs_path(self) -> pathlib.Path:
        p = self.params
        return pathlib.Path(p.pairs) if p.pairs else pathlib.Path(p.root).parent / "pairs.txt"

    def check(self) -> None:
        root = pathlib.Path(self.params.root)
        if not root.is_dir():
            raise DataError(f"{root}: the LFW folder does not exist. Give an aligned 112x112 LFW folder "
                            "root/<Name>/<Name>_0001.jpg (e.g. FaceX-Zoo's lfw_crop) as 'root'.")
        plist = parse_pairs(self.pairs_path())
        check_pair_labels(plist.issame, self._folds(plist), self.params.procedure, str(self.pairs_path()),
                          "a pairs file")

    def _folds(self, plist: PairList) -> int:
        """The folds parameter, else the pairs file's header, else 10."""
        return self.params.folds or plist.folds or 10

    def load(self) -> tuple[torch.Tensor, PairList, pathlib.Path]:
        """The images the pairs use (uint8 (N, 3, 112, 112), in first-use order), the pair list and its path."""
        self.check()
        root = pathlib.Path(self.params.root)
        pairs_path = self.pairs_path()
        plist = parse_pairs(pairs_path)
        paths = []
        for (name, number), n in zip(plist.keys, plist.lines):
            found = _find_image(root, name, number)
            if found is None:
                raise DataError(f"{pairs_path}:{n}: the pair names {name} {number}, but "
                                f"{root / name / f'{name}_{number:04d}'}.jpg (or .png/.jpeg) does not exist. Is "
                                "'root' the aligned LFW folder that this pairs file belongs to?")
            paths.append(found)

        def read(path: pathlib.Path) -> np.ndarray:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise DataError(f"{path}: cannot read the image ({exc.strerror}).") from None
            return decode_image(data, where=str(path))

        with ThreadPoolExecutor(max_workers=8) as pool:
            decoded = list(pool.map(read, paths))
        images = stack_images(decoded, paths, "%s is %dx%d, not an aligned 112x112 face: resizing it (and any other "
                              "such image). LFW numbers are only comparable on faces aligned to 112x112.")
        return images, plist, pairs_path

    def evaluate(self, embed: Embedder, *, progress: bool = True) -> ProtocolResult:
        p = self.params
        images, plist, pairs_path = self.load()
        return evaluate_pairs(images, plist.pairs, plist.issame, embed, sizes=p.sizes, preset=p.preset,
                              folds=self._folds(plist), progress=progress, name="lfw", source=str(pairs_path),
                              extra_settings={"root": str(p.root), "pairs_file": str(pairs_path)}, **p.settings())
