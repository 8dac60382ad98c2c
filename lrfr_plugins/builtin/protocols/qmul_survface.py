"""QMUL-SurvFace face verification (``Face_Verification_Test_Set``): official TAR@FAR / AUC plus the study's accuracy;
with ``task: identification`` / ``both`` also the challenge's open-set watch-list identification.

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

**Open-set identification** (``Face_Identification_Test_Set``, §4.1/§4.3): ``gallery/*.jpg`` with
``gallery_img_ID_pairs.mat`` (``gallery_set`` file names, ``gallery_ids`` 1-based ints), ``mated_probe/*.jpg`` with
``mated_probe_img_ID_pairs.mat`` (``mated_probe_set``, ``mated_probe_ids``) and ``unmated_probe/*.jpg`` (every image
file there, unlabelled, distractors included). The two ``.mat`` files are looked up in the test-set folder, then in
``Face_Identification_Evaluation/`` next to it. As the challenge's evaluation (its published Python ports) does: one
template per gallery identity (mean of the L2-normalised embeddings, re-normalised; ``id_gallery: max`` scores an
identity by its best image instead), cosine scores, a mated probe is identified at threshold t if its identity is
within the top 20 templates and scores >= t, FPIR(t) = fraction of unmated probes whose top-1 score is >= t, t on
the 1,000-step grid over the unmated top-1 scores, TPIR20 read at the FPIR nearest 0.3 / 0.2 / 0.1, AUC =
trapezoidal area under TPIR over FPIR (``id_rule: exact``: every distinct unmated score as a threshold, TPIR read
conservatively at FPIR <= target). The crops are the release's own; no face detector or aligner runs on them, they
are only made 112 x 112 as above.
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
from ...formats.matlab import cell_name
from ...formats.images import decode_image
from ...metrics.verification import (
    FoldResult,
    cosine_scores,
    lozhkina_10fold,
    roc_auc,
    roc_curve,
    tar_at_far,
    thin_curve,
)
from ...metrics.identification import open_set_identification, similarity_matrix, subject_templates
from ...ops.resize import Mode, pad_to_square, resize_to

RELEASE = "QMUL-SurvFace-v1.zip"
TEST_SET = "Face_Verification_Test_Set"
IMAGES = "verification_images"
POSITIVE = "positive_pairs_names"
NEGATIVE = "negative_pairs_names"
FARS: tuple[float, ...] = (0.3, 0.1, 0.01, 0.001)
SIZE = 112
KEY = "verification"
ID_SET = "Face_Identification_Test_Set"
ID_EVAL = "Face_Identification_Evaluation"
GALLERY, MATED, UNMATED = "gallery", "mated_probe", "unmated_probe"
GALLERY_MAT, MATED_MAT = "gallery_img_ID_pairs", "mated_probe_img_ID_pairs"
FPIRS: tuple[float, ...] = (0.3, 0.2, 0.1)
ID_KEY = "identification"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclasses.dataclass(frozen=True)
class QMULSurvFaceParams:
    root: str = param(doc="the unzipped QMUL-SurvFace folder, or its Face_Verification_Test_Set folder (holding "
                          "positive_pairs_names.mat, negative_pairs_names.mat and verification_images/); for task "
                          "identification also its Face_Identification_Test_Set folder")
    task: Literal["verification", "identification", "both"] = param(
        "verification", "verification = the pair protocol; identification = the challenge's open-set watch-list "
                        "protocol (TPIR20@FPIR 0.3/0.2/0.1, AUC); both = both, in one result")
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
    id_rank: int = param(20, "identification: a mated probe counts only if its identity is within this rank (the "
                             "challenge: 20)", ge=1)
    id_gallery: Literal["mean", "max"] = param(
        "mean", "identification gallery: mean = one template per identity (mean of L2-normalised embeddings, as the "
                "challenge's evaluation); max = an identity scores its best gallery image")
    id_rule: Literal["challenge", "exact"] = param(
        "challenge", "identification thresholds: challenge = 1000-step grid over the unmated top-1 scores, TPIR at the "
                     "nearest FPIR; exact = every distinct unmated score, TPIR at the largest FPIR <= target")


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------

def _resolve_part(root: str | pathlib.Path, part: str, markers: tuple[str, ...]) -> pathlib.Path:
    """The release's ``part`` folder, given it (it holds one of ``markers``) or the QMUL-SurvFace folder above it."""
    base = pathlib.Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"{base}: folder not found. Set root to the unzipped QMUL-SurvFace folder (from "
                        f"{RELEASE}) or to its {part} folder.")
    if (base / part).is_dir():
        return base / part
    if any((base / name).exists() for name in markers):
        return base
    raise DataError(f"{base}: neither a QMUL-SurvFace folder (no {part}/ inside) nor a {part} folder (no "
                    f"{', '.join(markers)}). Set root to the unzipped QMUL-SurvFace folder or to its {part} folder.")


def resolve_test_set(root: str | pathlib.Path) -> pathlib.Path:
    """The Face_Verification_Test_Set folder, given it or the QMUL-SurvFace folder above it; DataError otherwise."""
    return _resolve_part(root, TEST_SET, (f"{POSITIVE}.mat", f"{NEGATIVE}.mat", f"{IMAGES}/"))


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
        a, b = cell_name(arr[row, 0], where, RELEASE), cell_name(arr[row, 1], where, RELEASE)
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


@dataclasses.dataclass(frozen=True)
class SurvFaceIdentification:
    """The open-set identification set: file names (release order) and 1-based identity ids."""

    folder: pathlib.Path
    gallery: list[str]
    gallery_ids: np.ndarray
    mated: list[str]
    mated_ids: np.ndarray
    unmated: list[str]


def resolve_id_set(root: str | pathlib.Path) -> pathlib.Path:
    """The Face_Identification_Test_Set folder, given it or the QMUL-SurvFace folder above it; DataError otherwise."""
    return _resolve_part(root, ID_SET, (f"{GALLERY}/", f"{MATED}/", f"{UNMATED}/", f"{GALLERY_MAT}.mat",
                                        f"{MATED_MAT}.mat"))


def _id_mat(folder: pathlib.Path, stem: str) -> pathlib.Path | None:
    """``stem``.mat in the test-set folder, else in Face_Identification_Evaluation/ beside it; None if in neither."""
    for candidate in (folder / f"{stem}.mat", folder.parent / ID_EVAL / f"{stem}.mat"):
        if candidate.is_file():
            return candidate
    return None


def missing_id_parts(folder: pathlib.Path) -> list[str]:
    """The paths of the identification set's folders and .mat lists that are missing (empty when complete)."""
    missing = [str(folder / name) + "/" for name in (GALLERY, MATED, UNMATED) if not (folder / name).is_dir()]
    missing += [f"{folder / (stem + '.mat')} (or {folder.parent / ID_EVAL / (stem + '.mat')})"
                for stem in (GALLERY_MAT, MATED_MAT) if _id_mat(folder, stem) is None]
    return missing


def read_id_list(mat_path: str | pathlib.Path, names_key: str, ids_key: str) -> tuple[list[str], np.ndarray]:
    """A ``*_img_ID_pairs.mat`` file: (file names, int64 ids), in file order; DataError naming the file otherwise."""
    import scipy.io

    path = pathlib.Path(mat_path)
    try:
        data = scipy.io.loadmat(str(path), squeeze_me=True)
    except Exception as exc:
        raise DataError(f"{path}: not a readable MATLAB .mat file ({type(exc).__name__}: {exc}). Restore it from "
                        "QMUL-SurvFace-v1.zip.") from None
    for key in (names_key, ids_key):
        if key not in data:
            found = sorted(k for k in data if not k.startswith("__")) or ["(none)"]
            raise DataError(f"{path}: no variable {key!r} (found: {', '.join(found)}). Expected the release's "
                            f"{path.name} with {names_key} (cell array of file names) and {ids_key} (ids).")
    names_arr = np.atleast_1d(np.asarray(data[names_key], dtype=object)).reshape(-1)
    ids_arr = np.atleast_1d(np.asarray(data[ids_key])).reshape(-1)
    if names_arr.size == 0 or names_arr.size != ids_arr.size:
        raise DataError(f"{path}: {names_key} has {names_arr.size} names but {ids_key} has {ids_arr.size} ids; "
                        "expected one id per file name (N >= 1).")
    if ids_arr.dtype.kind not in "iuf" or not np.all(np.isfinite(ids_arr.astype(np.float64))) \
            or np.any(ids_arr != np.round(ids_arr)):
        raise DataError(f"{path}: {ids_key} must hold whole-number identity ids, got dtype {ids_arr.dtype}.")
    names = [cell_name(c, f"{path} {names_key} entry {i + 1}", RELEASE) for i, c in enumerate(names_arr)]
    return names, ids_arr.astype(np.int64)


def _image_files(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_identification_set(root: str | pathlib.Path) -> SurvFaceIdentification:
    """Read both id lists and the unmated folder; check every listed image exists and every mated id is in the
    gallery. Every problem is a :class:`DataError` naming the file or folder."""
    folder = resolve_id_set(root)
    missing = missing_id_parts(folder)
    if missing:
        raise DataError(f"{folder}: the identification set is incomplete, missing: {'; '.join(missing)}. Restore "
                        f"them from QMUL-SurvFace-v1.zip ({ID_SET}/).")
    lists = {}
    for sub, stem, names_key, ids_key in ((GALLERY, GALLERY_MAT, "gallery_set", "gallery_ids"),
                                          (MATED, MATED_MAT, "mated_probe_set", "mated_probe_ids")):
        mat = _id_mat(folder, stem)
        names, ids = read_id_list(mat, names_key, ids_key)
        present = set(_image_files(folder / sub))
        absent = [n for n in names if n not in present]
        if absent:
            raise DataError(f"{mat} names {len(absent)} image(s) not in {folder / sub} (e.g. {absent[0]!r}). "
                            f"Restore {sub}/ from QMUL-SurvFace-v1.zip.")
        lists[sub] = (names, ids)
    unmated = _image_files(folder / UNMATED)
    if not unmated:
        raise DataError(f"{folder / UNMATED}: no images. Restore {UNMATED}/ from QMUL-SurvFace-v1.zip.")
    gallery_ids, mated_ids = lists[GALLERY][1], lists[MATED][1]
    outside = np.setdiff1d(mated_ids, gallery_ids)
    if outside.size:
        raise DataError(f"{_id_mat(folder, MATED_MAT)}: {outside.size} mated probe id(s) have no gallery image "
                        f"(e.g. {int(outside[0])}); mated probes must be of gallery identities. The .mat files do "
                        "not belong together; restore them from QMUL-SurvFace-v1.zip.")
    return SurvFaceIdentification(folder, lists[GALLERY][0], gallery_ids, lists[MATED][0], mated_ids, unmated)


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


def _embed_names(folder: pathlib.Path, names: list[str], p: QMULSurvFaceParams, embed: Embedder, progress: bool,
                 what: str) -> np.ndarray:
    """Embeddings (N, D) of ``names`` in ``folder``, made 112 x 112 as the verification images, in batches."""
    chunks = []
    for start in tqdm(range(0, len(names), p.batch_size), desc=f"eval qmul-survface {what}", unit="batch",
                      disable=not progress):
        batch = _load_squares(folder, names[start:start + p.batch_size], p.square, p.interpolation, p.antialias)
        emb = np.asarray(embed(batch))
        if emb.ndim != 2 or emb.shape[0] != batch.shape[0]:
            raise ValueError(f"the embedder returned shape {emb.shape} for {batch.shape[0]} images; expected "
                             "(images, dim)")
        chunks.append(emb)
    return np.concatenate(chunks)


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
    study's 10-fold "mean accuracy +- SEM" (class-pure ``lozhkina`` folds or balanced ``stratified`` ones); with
    ``task`` identification / both the challenge's open-set TPIR20@FPIR (0.3/0.2/0.1) and TPIR-FPIR AUC."""

    Params = QMULSurvFaceParams

    def check(self) -> None:
        if self.params.task in ("verification", "both"):
            folder = resolve_test_set(self.params.root)
            for needed in (f"{POSITIVE}.mat", f"{NEGATIVE}.mat", IMAGES):
                if not (folder / needed).exists():
                    raise DataError(f"{folder / needed}: missing. Restore it from QMUL-SurvFace-v1.zip.")
        if self.params.task in ("identification", "both"):
            folder = resolve_id_set(self.params.root)
            missing = missing_id_parts(folder)
            if missing:
                raise DataError(f"{folder}: the identification set is incomplete, missing: {'; '.join(missing)}. "
                                f"Restore them from QMUL-SurvFace-v1.zip ({ID_SET}/).")

    def evaluate(self, embed: Embedder, *, progress: bool = True) -> ProtocolResult:
        p = self.params
        rows: list[dict[str, Any]] = []
        settings: dict[str, Any] = {"task": p.task}
        results: dict[str, dict[str, Any]] = {}
        curves: dict[str, dict[str, list[float]]] = {}
        if p.task in ("verification", "both"):
            row, metrics, v_settings, v_curves = self._verification(embed, progress)
            rows.append(row)
            settings.update(v_settings)
            results[KEY] = metrics
            curves.update(v_curves)
        if p.task in ("identification", "both"):
            row, metrics, i_settings, i_curves = self._identification(embed, progress)
            rows.append(row)
            settings.update(i_settings)
            results[ID_KEY] = metrics
            curves.update(i_curves)
        return ProtocolResult("qmul-survface", rows, settings, results=results, curves=curves, preset=p.preset)

    def _identification(self, embed: Embedder, progress: bool):
        p = self.params
        data = load_identification_set(p.root)
        f = data.folder
        gallery = _embed_names(f / GALLERY, data.gallery, p, embed, progress, "gallery")
        mated = _embed_names(f / MATED, data.mated, p, embed, progress, "mated probes")
        unmated = _embed_names(f / UNMATED, data.unmated, p, embed, progress, "unmated probes")
        if p.id_gallery == "mean":
            columns, column_ids = subject_templates(gallery, data.gallery_ids)
        else:
            columns, column_ids = gallery, data.gallery_ids
        thresholds, rule = ("grid", "nearest") if p.id_rule == "challenge" else ("exact", "conservative")
        res = open_set_identification(similarity_matrix(mated, columns), data.mated_ids, column_ids,
                                      similarity_matrix(unmated, columns), rank=p.id_rank, fpirs=FPIRS,
                                      thresholds=thresholds, rule=rule)
        n_subjects = int(np.unique(data.gallery_ids).size)
        metrics: dict[str, Any] = {k: v for k, v in res.items() if k.startswith(("tpir@", "realised_fpir@"))}
        metrics.update(auc_tpir_fpir=res["auc_tpir_fpir"], rank=p.id_rank, n_mated=res["n_mated"],
                       n_unmated=res["n_unmated"], n_gallery=len(data.gallery), n_gallery_ids=n_subjects)
        row: dict[str, Any] = {"set": ID_KEY, "rank": p.id_rank}
        row.update({k: v for k, v in metrics.items() if k.startswith("tpir@")})
        row["auc_tpir_fpir"] = metrics["auc_tpir_fpir"]
        settings = {
            "id_protocol": f"open-set watch list: gallery = {ID_SET}/{GALLERY} ({len(data.gallery)} images of "
                           f"{n_subjects} ids, {GALLERY_MAT}.mat order), {res['n_mated']} mated probes "
                           f"({MATED_MAT}.mat), {res['n_unmated']} unmated probes (every image in {UNMATED}/)",
            "id_gallery": ("mean (one template per id: mean of L2-normalised embeddings, re-normalised; cosine)"
                           if p.id_gallery == "mean" else "max (an id scores its best gallery image; cosine)"),
            "id_rank": p.id_rank,
            "id_ties": "pessimistic (an impostor id scoring equal to the mate ranks before it)",
            "id_rule": ("challenge (thresholds: 1000-step grid min + k(max-min)/1000 over the unmated top-1 scores, "
                        "FPIR = share of unmated top-1 >= t, TPIR read at the grid point with the FPIR nearest the "
                        "target)" if p.id_rule == "challenge" else
                        "exact (a threshold at every distinct unmated top-1 score and one above the largest; TPIR = "
                        "largest TPIR with FPIR <= target)"),
            "id_auc": "trapezoidal area under TPIR over FPIR on the same thresholds",
            "id_realised_fpir": {f"{x:g}": round(res[f"realised_fpir@{x:g}"], 6) for x in FPIRS},
            "id_preprocessing": "release crops only (no detection or alignment), made 112x112 as for verification",
        }
        curves = {f"tpir_fpir:{ID_KEY}": dict(zip(("fpir", "tpir"), thin_curve(res["fpir"], res["tpir"])))}
        return row, metrics, settings, curves

    def _verification(self, embed: Embedder, progress: bool):
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
        return row, metrics, settings, curves
