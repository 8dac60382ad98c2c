"""QMUL-SurvFace face verification (``Face_Verification_Test_Set``): official TAR@FAR / AUC plus the study's accuracy.

The released test set (``PROTOCOLS.md`` §4.1) is ``verification_images/*.jpg`` (tiny, non-square surveillance faces
named ``<pid>_<cam>_<n>.jpg``) and two MATLAB files, ``positive_pairs_names.mat`` / ``negative_pairs_names.mat``,
each holding a cell array (5320, 2) of file names under the key of the same name.

Two kinds of number come out, and the output says which is which:

* **Official** (§4.3, §4.4): the ROC over *all* pairs at once, no folds; TAR at FAR = 0.3 / 0.1 / 0.01 / 0.001 read
  with a named rule (default ``conservative``: the largest TPR among ROC points with FPR <= FAR) and the AUC.
* **The founding study's "accuracy"** (§4.5): cosine scores, pairs stacked ``[positives; negatives]`` in ``.mat``
  order, :func:`~lrfr_plugins.metrics.verification.lozhkina_10fold` (Youden threshold on 1,000 steps of the other
  nine folds, std = SEM). With the ``lozhkina`` preset the folds are contiguous, hence class-pure (folds 1-5 only
  positives, 6-10 only negatives: each fold accuracy is a TPR or a TNR). The ``stratified`` preset interleaves the
  pairs first (:func:`interleaved_order`) so every fold is half positive, half negative.

Images are made 112 x 112 as the study's ``square_crop`` does (§4.6): keep the aspect ratio, the long side becomes
112 (the short one ``int(short / long * 112)``, truncated), bilinear without anti-aliasing (cv2 ``INTER_LINEAR``),
pasted at the **top-left** of a **black** canvas. ``square: stretch`` resizes straight to 112 x 112 instead. Each
unique image is decoded and embedded once; the embedder receives uint8 **RGB** (its own convention - e.g. the
study's BGR, ``(x - 127.5) / 128`` - is the embedder's business, see §0.3). No flip is applied (the study used none).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from ...api import Embedder, Protocol, ProtocolResult, param
from ...errors import DataError
from ...formats.recordio import decode_image
from ...metrics.verification import (
    FoldResult,
    cosine_scores,
    lozhkina_10fold,
    roc_auc,
    roc_curve,
    tar_at_far,
    thin_curve,
)
from ...ops.resize import Mode, pad_to_square, resize_to

TEST_SET = "Face_Verification_Test_Set"
IMAGES = "verification_images"
POSITIVE = "positive_pairs_names"
NEGATIVE = "negative_pairs_names"
FARS: tuple[float, ...] = (0.3, 0.1, 0.01, 0.001)
SIZE = 112
KEY = "verification"


@dataclasses.dataclass(frozen=True)
class QMULSurvFaceParams:
    root: str = param(doc="the unzipped QMUL-SurvFace folder, or its Face_Verification_Test_Set folder (holding "
                          "positive_pairs_names.mat, negative_pairs_names.mat and verification_images/)")
    preset: Literal["lozhkina", "stratified"] = param(
        "lozhkina", "10-fold accuracy folds: lozhkina = the founding study's contiguous, class-pure folds (positives "
                    "then negatives); stratified = positives and negatives interleaved, every fold balanced")
    square: Literal["pad", "stretch"] = param(
        "pad", "non-square faces: pad = the study's square_crop (aspect kept, top-left on a black 112x112 canvas); "
               "stretch = resize straight to 112x112")
    interpolation: Mode = param("bilinear", "resize to 112 px (the study: cv2 INTER_LINEAR = bilinear, no "
                                            "anti-aliasing)")
    antialias: bool = param(False, "anti-alias when an image is shrunk (the study: no; SurvFace faces are mostly "
                                   "enlarged, where it has no effect)")
    tar_rule: Literal["conservative", "interpolated"] = param(
        "conservative", "reading TAR@FAR off the ROC: conservative = largest TPR with FPR <= FAR; interpolated = "
                        "linear interpolation between ROC points")
    batch_size: int = param(512, "images decoded and handed to the embedder at a time", ge=1)


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------

def resolve_test_set(root: str | pathlib.Path) -> pathlib.Path:
    """The Face_Verification_Test_Set folder, given it or the QMUL-SurvFace folder above it; DataError otherwise."""
    base = pathlib.Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"{base}: folder not found. Set root to the unzipped QMUL-SurvFace folder (from "
                        f"QMUL-SurvFace-v1.zip) or to its {TEST_SET} folder.")
    if (base / TEST_SET).is_dir():
        return base / TEST_SET
    if any((base / name).exists() for name in (f"{POSITIVE}.mat", f"{NEGATIVE}.mat", IMAGES)):
        return base
    raise DataError(f"{base}: neither a QMUL-SurvFace folder (no {TEST_SET}/ inside) nor a {TEST_SET} folder (no "
                    f"{POSITIVE}.mat, {NEGATIVE}.mat or {IMAGES}/). Set root to the unzipped QMUL-SurvFace folder "
                    f"or to its {TEST_SET} folder.")


def _cell_name(cell: Any, where: str) -> str:
    """One file name from a cell: a str (``squeeze_me=True``) or a 1-element string array (``squeeze_me=False``)."""
    x = cell
    while isinstance(x, np.ndarray):
        if x.size != 1:
            raise DataError(f"{where}: expected one file name, got an array of shape {x.shape} "
                            f"({x.reshape(-1)[:3].tolist()!r}...). The pair file must be a cell array of strings.")
        x = x.reshape(-1)[0]
    if isinstance(x, bytes):
        x = x.decode("utf-8", "replace")
    if not isinstance(x, str) or not x.strip():
        raise DataError(f"{where}: expected a file name, got {type(x).__name__} {x!r}. The pair file must be a cell "
                        "array of non-empty strings (restore it from QMUL-SurvFace-v1.zip).")
    return str(x).strip()


def person_id(name: str) -> str:
    """The global person id: the file name's prefix before the first underscore (``<pid>_<cam>_<n>.jpg``)."""
    return pathlib.PurePath(name).name.split("_", 1)[0]


def read_pairs(mat_path: str | pathlib.Path, key: str, *, same: bool | None = None,
               squeeze_me: bool = True) -> list[tuple[str, str]]:
    """The (N, 2) cell array ``key`` of a pair ``.mat`` file as a list of file-name pairs, in file order.

    ``squeeze_me`` is passed to :func:`scipy.io.loadmat` (the study used True); both give the same list. ``same``
    True / False asserts every pair shares / does not share the person-id prefix (§4.1). Every problem is a
    :class:`DataError` naming the file (and the 1-based row).
    """
    try:
        import scipy.io
    except ImportError:  # pragma: no cover - scipy is a dependency; this keeps the package importable without it
        raise DataError("reading QMUL-SurvFace .mat pair files needs scipy: pip install scipy") from None
    path = pathlib.Path(mat_path)
    if not path.is_file():
        raise DataError(f"{path}: file not found. It is part of QMUL-SurvFace-v1.zip ({TEST_SET}/{path.name}); "
                        "restore it or point root at the complete folder.")
    try:
        data = scipy.io.loadmat(str(path), squeeze_me=squeeze_me)
    except NotImplementedError as exc:  # MATLAB v7.3 = HDF5
        raise DataError(f"{path}: cannot read it with scipy.io.loadmat ({exc}). The release uses MATLAB v5 files; "
                        "restore the original from QMUL-SurvFace-v1.zip.") from None
    except Exception as exc:
        raise DataError(f"{path}: not a readable MATLAB .mat file ({type(exc).__name__}: {exc}). The file may be "
                        "truncated or not a .mat file; restore it from QMUL-SurvFace-v1.zip.") from None
    if key not in data:
        found = sorted(k for k in data if not k.startswith("__")) or ["(none)"]
        raise DataError(f"{path}: no variable {key!r} (found: {', '.join(found)}). Expected the release's "
                        f"{key}.mat with a cell array {key} of shape (N, 2).")
    arr = data[key]
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{path}: {key} is a {type(arr).__name__}, expected a cell array of shape (N, 2).")
    if arr.ndim == 1 and arr.size == 2:  # squeeze_me squeezes a single pair to (2,)
        arr = arr.reshape(1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise DataError(f"{path}: {key} has shape {arr.shape}, expected a cell array of shape (N, 2) with N >= 1 "
                        "(one row per pair).")
    pairs = []
    for row in range(arr.shape[0]):
        where = f"{path} {key} row {row + 1}"
        a, b = _cell_name(arr[row, 0], where), _cell_name(arr[row, 1], where)
        if same is not None and (person_id(a) == person_id(b)) != same:
            kind, rule = ("positive", "share") if same else ("negative", "must not share")
            raise DataError(f"{where} (1-based): {kind} pair ({a!r}, {b!r}) has person ids {person_id(a)!r} and "
                            f"{person_id(b)!r}, but the two images of a {kind} pair {rule} the id prefix. "
                            "The file is corrupt or the positive/negative files are swapped; restore them from "
                            "QMUL-SurvFace-v1.zip.")
        pairs.append((a, b))
    return pairs


@dataclasses.dataclass(frozen=True)
class SurvFacePairs:
    """The verification set: unique image names, (N, 2) indices into them and labels, positives first."""

    folder: pathlib.Path
    names: list[str]
    pairs: np.ndarray
    issame: np.ndarray
    n_positive: int
    n_negative: int


def load_verification_set(root: str | pathlib.Path, *, squeeze_me: bool = True) -> SurvFacePairs:
    """Read both pair files and check every named image exists; pairs stacked [positives; negatives] (§4.5)."""
    folder = resolve_test_set(root)
    images = folder / IMAGES
    pos = read_pairs(folder / f"{POSITIVE}.mat", POSITIVE, same=True, squeeze_me=squeeze_me)
    neg = read_pairs(folder / f"{NEGATIVE}.mat", NEGATIVE, same=False, squeeze_me=squeeze_me)
    if not images.is_dir():
        raise DataError(f"{images}: folder not found. It is part of QMUL-SurvFace-v1.zip ({TEST_SET}/{IMAGES}/); "
                        "restore it or point root at the complete folder.")
    present = {p.name for p in images.iterdir()}
    index: dict[str, int] = {}
    rows = []
    for key, plist in ((POSITIVE, pos), (NEGATIVE, neg)):
        for row, pair in enumerate(plist):
            for name in pair:
                if name not in index:
                    if pathlib.PurePath(name).name != name or name not in present:
                        raise DataError(f"{folder / (key + '.mat')} {key} row {row + 1} (1-based) names {name!r}, "
                                        f"which is not in {images}. Restore {IMAGES}/ from QMUL-SurvFace-v1.zip "
                                        "(it holds 10,051 images).")
                    index[name] = len(index)
            rows.append((index[pair[0]], index[pair[1]]))
    issame = np.zeros(len(rows), bool)
    issame[:len(pos)] = True
    return SurvFacePairs(folder, list(index), np.asarray(rows, np.int64).reshape(-1, 2), issame, len(pos), len(neg))


# ---------------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------------

def to_square(images: torch.Tensor, square: str = "pad", *, mode: str = "bilinear",
              antialias: bool = False) -> torch.Tensor:
    """uint8 (N, 3, H, W) images of one size -> (N, 3, 112, 112); 112 x 112 input is returned unchanged.

    ``pad`` (the study's ``square_crop``, §4.6): aspect kept, pasted at the top-left of a zero (black) canvas.
    ``stretch``: resized to 112 x 112, aspect not kept.
    """
    _, c, h, w = images.shape
    if (h, w) == (SIZE, SIZE):
        return images
    if square == "stretch":
        return resize_to(images, (SIZE, SIZE), mode=mode, antialias=antialias)
    if square != "pad":
        raise ValueError(f"square must be 'pad' or 'stretch', got {square!r}")
    return pad_to_square(images, SIZE, mode=mode, antialias=antialias)


def _load_squares(folder: pathlib.Path, names: list[str], square: str, mode: str, antialias: bool) -> torch.Tensor:
    """Decode ``names`` and make them 112 x 112, resizing all images of one size in one call."""
    decoded = []
    for name in names:
        path = folder / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot read the image ({exc}). Restore {IMAGES}/ from QMUL-SurvFace-v1.zip.") \
                from None
        decoded.append(decode_image(data, str(path)))
    out = torch.empty((len(names), 3, SIZE, SIZE), dtype=torch.uint8)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, arr in enumerate(decoded):
        by_shape.setdefault(arr.shape[:2], []).append(i)
    for idx in by_shape.values():
        batch = torch.from_numpy(np.stack([decoded[i] for i in idx])).permute(0, 3, 1, 2).contiguous()
        out[idx] = to_square(batch, square, mode=mode, antialias=antialias)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Folds
# ---------------------------------------------------------------------------------------------------------------------

def interleaved_order(issame: np.ndarray) -> np.ndarray:
    """Pair indices that interleave positives and negatives, each class in its own order.

    With equal counts the order is p0, n0, p1, n1, ...; so any even contiguous block (a fold of 1,064 pairs in
    QMUL-SurvFace) is half positive, half negative. Unequal counts are spread in proportion (merge by
    ``(rank + 0.5) / count``, positives first on a tie).
    """
    labels = np.asarray(issame, bool)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    key = np.concatenate([(np.arange(pos.size) + 0.5) / max(pos.size, 1),
                          (np.arange(neg.size) + 0.5) / max(neg.size, 1)])
    return np.concatenate([pos, neg])[np.argsort(key, kind="stable")]


def stratified_10fold(scores: np.ndarray, issame: np.ndarray, *, n_folds: int = 10) -> FoldResult:
    """:func:`lozhkina_10fold` (same threshold rule, same SEM) on pairs reordered by :func:`interleaved_order`, so
    every contiguous fold is balanced instead of class-pure."""
    order = interleaved_order(issame)
    return lozhkina_10fold(np.asarray(scores)[order], np.asarray(issame, bool)[order], n_folds=n_folds)


# ---------------------------------------------------------------------------------------------------------------------
# Protocol
# ---------------------------------------------------------------------------------------------------------------------

FOLDS_TEXT = {
    "lozhkina": "contiguous [positives; negatives] blocks, class-pure: folds 1-5 positive only (accuracy = TPR), "
                "6-10 negative only (accuracy = TNR)",
    "stratified": "positives and negatives interleaved, every fold half positive and half negative",
}


def survface_metrics(scores: np.ndarray, issame: np.ndarray, preset: str, tar_rule: str
                     ) -> tuple[dict[str, float], FoldResult, tuple[np.ndarray, np.ndarray]]:
    """The official TAR@FAR (0.3/0.1/0.01/0.001) and AUC over all pairs, and the study's fold accuracy +- SEM with
    ``preset`` folds: the ``results`` entry of QMUL-SurvFace and of its synthetic stand-in, plus folds and ROC."""
    fpr, tpr, _ = roc_curve(scores, issame)
    folds = (lozhkina_10fold if preset == "lozhkina" else stratified_10fold)(scores, issame)
    metrics = {"accuracy": folds.accuracy, "std": folds.std, "auc": roc_auc(fpr, tpr)}
    for far in FARS:
        metrics[f"tar@far={far:g}"] = tar_at_far(fpr, tpr, far, rule=tar_rule)
    return metrics, folds, (fpr, tpr)


class QMULSurvFace(Protocol):
    """QMUL-SurvFace verification: official TAR@FAR (0.3/0.1/0.01/0.001) and AUC over all pairs, plus the founding
    study's 10-fold "mean accuracy +- SEM" (class-pure ``lozhkina`` folds or balanced ``stratified`` ones)."""

    Params = QMULSurvFaceParams

    def check(self) -> None:
        folder = resolve_test_set(self.params.root)
        for needed in (f"{POSITIVE}.mat", f"{NEGATIVE}.mat", IMAGES):
            if not (folder / needed).exists():
                raise DataError(f"{folder / needed}: missing. Restore it from QMUL-SurvFace-v1.zip.")

    def evaluate(self, embed: Embedder, *, progress: bool = True) -> ProtocolResult:
        p = self.params
        data = load_verification_set(p.root)
        images = data.folder / IMAGES
        n = len(data.names)
        chunks = []
        for start in tqdm(range(0, n, p.batch_size), desc="eval qmul-survface", unit="batch",
                          disable=not progress):
            batch = _load_squares(images, data.names[start:start + p.batch_size], p.square, p.interpolation,
                                  p.antialias)
            emb = np.asarray(embed(batch))
            if emb.ndim != 2 or emb.shape[0] != batch.shape[0]:
                raise ValueError(f"the embedder returned shape {emb.shape} for {batch.shape[0]} images; expected "
                                 "(images, dim)")
            chunks.append(emb)
        emb = np.concatenate(chunks)
        scores = cosine_scores(emb[data.pairs[:, 0]], emb[data.pairs[:, 1]])

        metrics, folds, (fpr, tpr) = survface_metrics(scores, data.issame, p.preset, p.tar_rule)

        row = {"set": "verification", "folds": p.preset, "accuracy": folds.accuracy, "sem": folds.std,
               "auc": metrics["auc"]}
        row.update({k: v for k, v in metrics.items() if k.startswith("tar@")})
        n_pairs = len(scores)
        used = (n_pairs // 10) * 10
        settings = {
            "preset": p.preset,
            "folds": FOLDS_TEXT[p.preset],
            "accuracy_procedure": "lozhkina 10-fold (cosine, Youden J threshold on 1000 steps of the other 9 folds, "
                                  "strict >, std = SEM = std(ddof=1)/sqrt(10))",
            "fold_accuracies": [round(a, 4) for a in folds.fold_accuracies],
            "official": f"TAR@FAR and AUC from one ROC over all {n_pairs} pairs, no folds",
            "tar_rule": ("conservative (largest TPR among ROC points with FPR <= FAR)" if p.tar_rule == "conservative"
                         else "interpolated (linear between ROC points)"),
            "pairs": f"{data.n_positive} positive + {data.n_negative} negative, positives first in .mat order",
            "images": n,
            "square": ("pad (aspect kept, top-left on a black 112x112 canvas, as the study's square_crop)"
                       if p.square == "pad" else "stretch (resized to 112x112, aspect not kept)"),
            "interpolation": p.interpolation,
            "antialias": p.antialias,
            "flip": False,
            "study_conventions": (p.preset == "lozhkina" and p.square == "pad" and p.interpolation == "bilinear"
                                  and not p.antialias),
        }
        if used != n_pairs:
            settings["fold_dropped_pairs"] = n_pairs - used
        curves = {f"roc:{KEY}": dict(zip(("fpr", "tpr"), thin_curve(fpr, tpr)))}
        return ProtocolResult("qmul-survface", [row], settings, results={KEY: metrics}, curves=curves,
                              preset=p.preset)
