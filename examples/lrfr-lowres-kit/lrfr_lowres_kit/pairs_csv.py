"""Verification accuracy on your own image pairs: a folder of aligned 112x112 faces and a ``pairs.csv``.

``pairs.csv`` (UTF-8, comma-separated, a header line ``path_a,path_b,same``): one pair per line, the two image
paths relative to ``root`` (or absolute) and ``same`` 1/0 (or true/false). Every image the pairs name is read once
(PIL, converted to RGB; it must be 112x112: align and crop first), and at each of ``sizes`` both images of every
pair are down-sampled to size x size and restored to 112 with :func:`lrfr_plugins.ops.resize_down_up` (112: as
read). Scores are cosines of the embeddings; the accuracy is :func:`lrfr_plugins.metrics.lozhkina_10fold` over
``folds`` contiguous blocks of the pairs in file order (the Youden threshold of the other folds; ``std`` is the
standard error of the fold accuracies), so mix genuine and impostor pairs in the file. AUC from the exact ROC
(:func:`lrfr_plugins.metrics.roc_curve`, :func:`~lrfr_plugins.metrics.roc_auc`).

Result (:class:`lrfr_plugins.api.ProtocolResult`): ``results["<size>"] = {"accuracy", "std", "threshold"}`` (the
keys of the built-in verification protocols; threshold: the mean fold threshold, a cosine), ``rows`` one per size
(resolution, accuracy, std, auc, pairs), ``curves["roc:<size>"]`` (at most 200 points,
:func:`lrfr_plugins.metrics.thin_curve`), ``settings`` (data paths, counts, interpolation, procedure).
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from lrfr_plugins import DataError
from lrfr_plugins.api import Embedder, Protocol, ProtocolResult, param
from lrfr_plugins.metrics import cosine_scores, lozhkina_10fold, roc_auc, roc_curve, thin_curve
from lrfr_plugins.ops import resize_down_up

SIZE = 112
HEADER = ["path_a", "path_b", "same"]
TRUE, FALSE = {"1", "true", "yes"}, {"0", "false", "no"}
CHUNK = 256  # images per call of the embedder


@dataclasses.dataclass(frozen=True)
class PairsCsvParams:
    root: str = param(doc="folder of aligned 112x112 face images")
    pairs: str | None = param(None, "the pairs file (path_a,path_b,same); null: root/pairs.csv")
    sizes: list[int] = param([112, 14], "resolutions in px; both images of a pair are degraded (112: none)")
    folds: int = param(10, "folds of the k-fold accuracy (contiguous blocks in file order)", ge=2)
    down: Literal["bilinear", "bicubic", "area"] = param("bilinear", "down-sampling interpolation (no "
                                                                     "anti-aliasing: the founding study's op)")
    up: Literal["bilinear", "bicubic"] = param("bilinear", "up-sampling interpolation back to 112 px")

    def __post_init__(self) -> None:
        if not self.sizes or any(s < 1 or s > SIZE for s in self.sizes) or len(set(self.sizes)) != len(self.sizes):
            raise ValueError(f"sizes must be distinct sizes in 1..{SIZE}, got {self.sizes}")


class PairsCsv(Protocol):
    """Pair verification on a folder of aligned faces and a pairs.csv, at several resolutions (10-fold accuracy)."""

    Params = PairsCsvParams

    def __init__(self, params: PairsCsvParams):
        super().__init__(params)
        self._data: tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray] | None = None  # kept between evaluations

    @property
    def pairs_path(self) -> pathlib.Path:
        p = self.params
        return pathlib.Path(p.pairs) if p.pairs else pathlib.Path(p.root) / "pairs.csv"

    def check(self) -> None:
        root, path = pathlib.Path(self.params.root), self.pairs_path
        if not root.is_dir():
            raise DataError(f"{root}: the image folder of pairs-csv does not exist. Give a folder of aligned 112x112 "
                            "faces as 'root'.")
        if not path.is_file():
            raise DataError(f"{path}: the pairs file of pairs-csv does not exist. Write one (a header "
                            "'path_a,path_b,same', then one pair a line) or give its path as 'pairs'.")

    def _read_pairs(self) -> tuple[list[tuple[str, str]], np.ndarray]:
        path = self.pairs_path
        pairs, same = [], []
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            if header != HEADER:
                raise DataError(f"{path}:1: expected the header {','.join(HEADER)}, found "
                                f"{','.join(header) or '(empty)'}")
            for line, row in enumerate(reader, start=2):
                if not row or not "".join(row).strip():
                    continue
                if len(row) != 3:
                    raise DataError(f"{path}:{line}: expected 3 fields path_a,path_b,same, found {len(row)}")
                flag = row[2].strip().lower()
                if flag not in TRUE | FALSE:
                    raise DataError(f"{path}:{line}: same must be 1/0 or true/false, found {row[2]!r}")
                pairs.append((row[0].strip(), row[1].strip()))
                same.append(flag in TRUE)
        labels = np.asarray(same, dtype=bool)
        if len(labels) < self.params.folds:
            raise DataError(f"{path}: {len(labels)} pairs, fewer than the {self.params.folds} folds; add pairs or "
                            f"lower 'folds'.")
        if labels.all() or not labels.any():
            raise DataError(f"{path}: every pair is {'same' if labels.all() else 'different'}-identity; the accuracy "
                            "needs both kinds.")
        return pairs, labels

    def _read_images(self, names: list[str]) -> torch.Tensor:
        root = pathlib.Path(self.params.root)
        out = np.empty((len(names), SIZE, SIZE, 3), np.uint8)
        for i, name in enumerate(names):
            path = root / name
            try:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))
            except FileNotFoundError:
                raise DataError(f"{path}: named in {self.pairs_path} but does not exist.") from None
            except OSError as exc:
                raise DataError(f"{path}: cannot read the image ({exc}).") from None
            if pixels.shape[:2] != (SIZE, SIZE):
                raise DataError(f"{path}: is {pixels.shape[1]}x{pixels.shape[0]}; pairs-csv needs aligned 112x112 "
                                "faces.")
            out[i] = pixels
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()

    def evaluate(self, embed: Embedder, *, progress: bool = True) -> ProtocolResult:
        p = self.params
        if self._data is None:  # read once: the host evaluates the same instance before and after fine-tuning
            self.check()
            pairs, same = self._read_pairs()
            names = sorted({name for pair in pairs for name in pair})
            index = {name: i for i, name in enumerate(names)}
            a = np.array([index[x] for x, _ in pairs])
            b = np.array([index[y] for _, y in pairs])
            self._data = (self._read_images(names), a, b, same)
        images, a, b, same = self._data
        rows: list[dict[str, Any]] = []
        results: dict[str, dict[str, Any]] = {}
        curves: dict[str, dict[str, list[float]]] = {}
        for size in p.sizes:
            emb = []
            for start in range(0, images.shape[0], CHUNK):
                chunk = images[start:start + CHUNK]
                if size < SIZE:
                    chunk = resize_down_up(chunk, size, down=p.down, up=p.up, antialias=False)
                emb.append(np.asarray(embed(chunk), dtype=np.float64))
            table = np.concatenate(emb)
            scores = cosine_scores(table[a], table[b])
            folds = lozhkina_10fold(scores, same, n_folds=p.folds)
            fpr, tpr, _ = roc_curve(scores, same)
            rows.append({"resolution": f"{size}px", "accuracy": folds.accuracy, "std": folds.std,
                         "auc": roc_auc(fpr, tpr), "pairs": len(same)})
            results[str(size)] = {"accuracy": folds.accuracy, "std": folds.std,
                                  "threshold": float(np.mean(folds.thresholds))}
            curves[f"roc:{size}"] = dict(zip(("fpr", "tpr"), thin_curve(fpr, tpr, max_points=200)))
        settings = {"procedure": "lozhkina k-fold (cosine, Youden threshold of the other folds)", "std_kind": "sem",
                    "folds": p.folds, "degraded": "both", "down": p.down, "up": p.up, "antialias": False,
                    "root": str(p.root), "pairs_file": str(self.pairs_path), "pairs": len(same),
                    "same_pairs": int(same.sum()), "images": int(images.shape[0]), "sizes": list(p.sizes)}
        return ProtocolResult("pairs-csv", rows, settings, results=results, curves=curves)
