"""The pair-verification core shared by the ``lfw`` and ``bin`` protocols (and any protocol made of image pairs).

:func:`evaluate_pairs` takes the images once (uint8 (N, 3, 112, 112)), the pairs as indices into them and their
labels. For each size it degrades the images the preset says, embeds every image a pair needs **once** (an image
shared by many pairs is embedded once per size; the full-resolution embeddings are computed at most once per call and
reused by cross-resolution rows and by sizes >= 112), scores the pairs and runs the preset's 10-fold procedure from
:mod:`lrfr_plugins.metrics.verification` (no metric math lives here).

Presets (PROTOCOLS.md §3.4-3.5; every value recorded in ``ProtocolResult.settings``):

* ``lozhkina`` (the founding study, FaceX-Zoo's ``lfw_evaluator``): **both** images down-sampled with bilinear,
  no anti-aliasing, back to 112 (cv2 ``INTER_LINEAR`` semantics), LR intermediate and result rounded to uint8; no
  flip; cosine of L2-normalised embeddings; :func:`~lrfr_plugins.metrics.verification.lozhkina_10fold` (Youden
  threshold from the other folds on 1,000 evenly spaced values; "std" = the SEM).
* ``insightface`` (arcface_torch ``eval/verification.py``): the same degradation as ``lozhkina`` (InsightFace itself
  has no LR protocol); embeddings of the image and its horizontal flip summed, then L2-normalised; squared L2
  distance; :func:`~lrfr_plugins.metrics.verification.insightface_10fold` (best train accuracy on ``arange(0, 4,
  0.01)``, population std). On the same embeddings this equals arcface_torch's ``Accuracy-Flip``.
* ``knoche`` (Knoche et al. / Octuplet ``resizing.py``): down ``bicubic-pil`` with anti-aliasing, up ``bicubic-pil``
  (Keys a = -0.5, as TF and PIL), LR intermediate kept in float and the result truncated to uint8 (TF
  ``saturate_cast``) - the same pixels as the ``cross-resolution`` degradation's ``knoche`` preset; no flip; cosine
  with the ``lozhkina`` fold procedure (the authors' own fold procedure is not confirmed; override ``procedure``).
  Reports the LR-LR rows (both images degraded) **and** cross-resolution rows (first image at full resolution, second
  degraded), keyed ``"<size>-cross"``.

Every preset-driven parameter defaults to ``null`` = "from the preset"; an explicit value always overrides the preset
(the pattern of :mod:`lrfr_plugins.builtin.degradations.cross_resolution`).

Results: ``results["<size>"]`` (and ``results["<size>-cross"]``) = ``{"accuracy", "std", "threshold"}``, where
``threshold`` is the mean of the per-fold thresholds in the procedure's own units: a cosine similarity ("same" iff
``score > thr``) for ``lozhkina``, a squared L2 distance between unit vectors, 0..4 ("same" iff ``dist < thr``) for
``insightface``; ``settings["threshold_units"]`` says which. ``rows`` hold resolution, degraded images, accuracy,
std (``settings["std_kind"]``: ``sem`` or ``population-std``), AUC and the pair count. ``curves["roc:<key>"]`` is the
exact ROC thinned by :func:`~lrfr_plugins.metrics.verification.thin_curve`; the score is the cosine, or ``-dist`` for
the ``insightface`` procedure. Cross rows are not produced at sizes >= 112 (identical to the LR-LR row there).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from ...api import Embedder, ProtocolResult, param
from ...errors import DataError
from ...metrics.verification import cosine_scores, insightface_10fold, lozhkina_10fold, roc_auc, roc_curve, thin_curve
from ...ops.resize import Mode, Rounding, check_modes, resize_down_up, resize_to

log = logging.getLogger("lrfr")
Preset = Literal["lozhkina", "insightface", "knoche"]
Which = Literal["both", "first", "second"]
Procedure = Literal["lozhkina", "insightface"]

SIZE = 112
#: Images degraded and embedded per call of the embedder (bounds the memory of degraded copies).
CHUNK = 1024

#: The values each preset fills in for parameters left ``null``.
PRESETS: dict[str, dict[str, Any]] = {
    "lozhkina": {"which": "both", "cross_rows": False, "down": "bilinear", "up": "bilinear", "antialias": False,
                 "rounding": "round", "quantize_lr": True, "flip": False, "procedure": "lozhkina"},
    "insightface": {"which": "both", "cross_rows": False, "down": "bilinear", "up": "bilinear", "antialias": False,
                    "rounding": "round", "quantize_lr": True, "flip": True, "procedure": "insightface"},
    "knoche": {"which": "both", "cross_rows": True, "down": "bicubic-pil", "up": "bicubic-pil", "antialias": True,
               "rounding": "truncate", "quantize_lr": False, "flip": False, "procedure": "lozhkina"},
}
PRESET_KEYS = tuple(PRESETS["lozhkina"])

FROM_PRESET = "null: from the preset"
PRESET_DOC = ("fills every parameter left null: lozhkina (the founding study: both images, bilinear, no AA, cosine, "
              "Youden threshold, std = SEM), insightface (arcface_torch: flip-summed embeddings, squared L2, "
              "best-accuracy threshold on 0..4, population std; study's degradation), knoche (bicubic a=-0.5 with AA, "
              "float LR, truncated; cosine; LR-LR and cross rows); explicit parameters override it")

PROCEDURES: dict[str, dict[str, str]] = {
    "lozhkina": {"score": "cosine similarity of L2-normalised embeddings",
                 "threshold_units": "cosine similarity; same iff score > threshold",
                 "std_kind": "sem",
                 "description": "lozhkina 10-fold (FaceX-Zoo lfw_evaluator: contiguous blocks, Youden threshold on "
                                "1000 steps of the train scores, std = SEM)"},
    "insightface": {"score": "squared L2 distance of L2-normalised embeddings (ROC uses -distance)",
                    "threshold_units": "squared L2 distance (0..4); same iff distance < threshold",
                    "std_kind": "population-std",
                    "description": "insightface 10-fold (arcface_torch calculate_roc: KFold without shuffle, best "
                                   "train accuracy on arange(0, 4, 0.01), population std)"},
}


def resolve_preset(preset: str, **overrides: Any) -> dict[str, Any]:
    """The effective settings: each override that is not None, else the preset's value. Validates the result."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    unknown = set(overrides) - set(PRESET_KEYS)
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; accepted: {', '.join(PRESET_KEYS)}")
    out = {k: (overrides[k] if overrides.get(k) is not None else v) for k, v in PRESETS[preset].items()}
    if out["which"] not in ("both", "first", "second"):
        raise ValueError(f"which must be both, first or second, got {out['which']!r}")
    if out["procedure"] not in PROCEDURES:
        raise ValueError(f"procedure must be one of {', '.join(PROCEDURES)}, got {out['procedure']!r}")
    if out["cross_rows"] and out["which"] != "both":
        raise ValueError(f"cross_rows adds HR-vs-LR rows next to the rows where both images are degraded; with which "
                         f"= {out['which']!r} the rows are already cross-resolution: set cross_rows to false")
    check_modes(out["down"], out["up"], out["antialias"], out["rounding"])
    return out


def stack_images(decoded, where, warn: str) -> torch.Tensor:
    """uint8 (N, 3, 112, 112) from HWC RGB arrays; others are resized (anti-aliased bilinear) with one warning
    (``warn`` % (where[i], width, height))."""
    out = np.empty((len(decoded), SIZE, SIZE, 3), np.uint8)
    warned = False
    for i, pixels in enumerate(decoded):
        if pixels.shape[:2] != (SIZE, SIZE):
            if not warned:
                log.warning(warn, where[i], pixels.shape[1], pixels.shape[0])
                warned = True
            small = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].contiguous()
            pixels = resize_to(small, (SIZE, SIZE))[0].permute(1, 2, 0).numpy()
        out[i] = pixels
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def check_pair_labels(issame, folds: int, procedure: str, where: str, what: str = "a pair list") -> None:
    """Refuse, before anything is embedded, labels on which the k-fold accuracy is undefined, with a DataError
    naming ``where`` and the fix (the metrics' own ValueError would surface as a traceback deep in evaluation).
    ``what`` names the kind of data in the advice ("a .bin", "a pairs file")."""
    labels = np.asarray(issame, dtype=bool)
    n, same = len(labels), int(labels.sum())
    if n == 0:
        raise DataError(f"{where}: holds no pairs; there is nothing to verify. Use {what} with same and different "
                        "pairs.")
    if same in (0, n):
        kind = "same-identity" if same else "different-identity"
        raise DataError(f"{where}: all {n} pairs are {kind} pairs (issame is all {bool(same)}); accuracy thresholds "
                        "are undefined without both kinds, so verification accuracy cannot be measured. Use "
                        f"{what} with same and different pairs.")
    if procedure == "lozhkina" and folds < 2:
        raise DataError(f"{where}: {folds} fold with the lozhkina procedure, which scores each fold with a threshold "
                        "from the others and so needs at least 2: set the protocol parameter folds (lrfr eval: --set "
                        "folds=10), or procedure=insightface (one fold: train = test).")
    if n < folds:
        raise DataError(f"{where}: has {n} pairs, fewer than the {folds} folds (each fold needs at least one pair): "
                        f"set the protocol parameter folds to at most {n} (lrfr eval: --set folds={n}), or use {what} "
                        f"with at least {folds} pairs.")


def check_sizes(sizes: list[int]) -> None:
    if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 or s > SIZE for s in sizes):
        raise ValueError(f"sizes must be a non-empty list of sizes in 1..{SIZE}, got {sizes}")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"sizes must not repeat, got {sizes}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PairProtocolParams:
    """The parameters every pair protocol shares (the concrete protocol adds its data parameters)."""

    preset: Preset = param("lozhkina", PRESET_DOC)
    sizes: list[int] = param([112, 56, 28, 14, 7], "resolutions in px (112 = no degradation)")
    which: Which | None = param(None, f"images degraded: both, first or second of each pair ({FROM_PRESET})")
    cross_rows: bool | None = param(None, "also report cross-resolution rows (first image full resolution, second "
                                          f"degraded), keyed '<size>-cross' ({FROM_PRESET})")
    down: Mode | None = param(None, f"down-sampling interpolation ({FROM_PRESET})")
    up: Mode | None = param(None, f"up-sampling interpolation back to 112 px ({FROM_PRESET})")
    antialias: bool | None = param(None, f"anti-alias when down-sampling ({FROM_PRESET})")
    rounding: Rounding | None = param(None, f"to uint8: round or truncate (TF saturate_cast) ({FROM_PRESET})")
    quantize_lr: bool | None = param(None, f"round the LR intermediate to uint8 ({FROM_PRESET})")
    flip: bool | None = param(None, f"sum the embeddings of the image and its horizontal flip ({FROM_PRESET})")
    procedure: Procedure | None = param(None, "10-fold procedure: lozhkina (cosine, Youden, SEM) or insightface "
                                              f"(squared L2, best accuracy, population std) ({FROM_PRESET})")
    folds: int | None = param(None, "number of folds (contiguous blocks in file order); null: the data's own "
                                    "(pairs.txt header, else 10)", ge=1)

    def __post_init__(self) -> None:
        check_sizes(self.sizes)
        resolved = resolve_preset(self.preset, **{k: getattr(self, k) for k in PRESET_KEYS})
        for name, value in resolved.items():
            object.__setattr__(self, name, value)
        if self.folds == 1 and self.procedure == "lozhkina":
            raise ValueError("folds=1 needs procedure insightface (one fold: train = test = all pairs); the lozhkina "
                             "procedure scores each fold with a threshold from the others, so it needs folds >= 2")

    def settings(self) -> dict[str, Any]:
        """The preset-driven settings (already resolved), as keyword arguments of :func:`evaluate_pairs`."""
        return {k: getattr(self, k) for k in PRESET_KEYS}


def _fused_embeddings(embed: Embedder, images: torch.Tensor, flip: bool) -> np.ndarray:
    """L2-normalised float64 embeddings of ``images`` (flip-summed before normalising when ``flip``)."""
    n = images.shape[0]
    batch = torch.cat([images, images.flip(-1)]) if flip else images
    out = np.asarray(embed(batch), dtype=np.float64)
    if out.ndim != 2 or out.shape[0] != batch.shape[0]:
        raise ValueError(f"the embedder returned shape {out.shape} for {batch.shape[0]} images; expected "
                         f"({batch.shape[0]}, D)")
    if flip:
        out = out[:n] + out[n:]
    if not np.all(np.isfinite(out)):
        raise ValueError("the embedder returned NaN/inf embeddings")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("the embedder returned a zero embedding, which has no direction to compare")
    return out / norms


class _Embeddings:
    """Embeddings of the images a pair list needs, per size; full resolution computed once and shared."""

    def __init__(self, images: torch.Tensor, embed: Embedder, settings: dict[str, Any]):
        self.images, self.embed, self.s = images, embed, settings
        self.hr: np.ndarray | None = None
        self.hr_done = np.zeros(images.shape[0], bool)

    def _compute(self, idx: np.ndarray, size: int) -> np.ndarray:
        rows = []
        for start in range(0, len(idx), CHUNK):
            chunk = self.images[torch.from_numpy(idx[start:start + CHUNK])]
            if size < SIZE:
                s = self.s
                chunk = resize_down_up(chunk, size, down=s["down"], up=s["up"], antialias=s["antialias"],
                                       rounding=s["rounding"], quantize_lr=s["quantize_lr"])
            rows.append(_fused_embeddings(self.embed, chunk, self.s["flip"]))
        return np.concatenate(rows)

    def full(self, idx: np.ndarray) -> np.ndarray:
        """Full-resolution embeddings table (N, D); rows ``idx`` are filled (each image embedded at most once)."""
        todo = idx[~self.hr_done[idx]]
        if len(todo):
            emb = self._compute(todo, SIZE)
            if self.hr is None:
                self.hr = np.zeros((self.images.shape[0], emb.shape[1]))
            self.hr[todo] = emb
            self.hr_done[todo] = True
        return self.hr

    def at(self, idx: np.ndarray, size: int) -> np.ndarray:
        """Embeddings table (N, D) at ``size`` with rows ``idx`` filled."""
        if size >= SIZE:
            return self.full(idx)
        emb = self._compute(idx, size)
        table = np.zeros((self.images.shape[0], emb.shape[1]))
        table[idx] = emb
        return table


def _score(e1: np.ndarray, e2: np.ndarray, issame: np.ndarray, procedure: str, folds: int):
    """(FoldResult, ROC scores where higher = more alike) through the metrics module."""
    if procedure == "insightface":
        result = insightface_10fold(e1, e2, issame, n_folds=folds)
        roc_scores = -np.sum(np.square(e1 - e2), axis=1)
    else:
        roc_scores = cosine_scores(e1, e2)
        result = lozhkina_10fold(roc_scores, issame, n_folds=folds)
    return result, roc_scores


def evaluate_pairs(images: torch.Tensor, pairs: np.ndarray, issame: np.ndarray, embed: Embedder, *,
                   sizes: list[int], preset: str = "lozhkina", which: str | None = None,
                   cross_rows: bool | None = None, down: str | None = None, up: str | None = None,
                   antialias: bool | None = None, rounding: str | None = None, quantize_lr: bool | None = None,
                   flip: bool | None = None, procedure: str | None = None, folds: int = 10,
                   progress: bool = True, name: str = "pairs", source: str | None = None,
                   extra_settings: dict[str, Any] | None = None) -> ProtocolResult:
    """Verification accuracy of ``pairs`` (P, 2) of ``images`` (N, 3, 112, 112) uint8 at each of ``sizes``.

    ``None`` settings come from ``preset`` (see the module doc). Folds are ``folds`` contiguous blocks of the pairs
    in the given order. ``extra_settings`` (data source, counts) are added to ``settings``. Labels the folds cannot
    score (:func:`check_pair_labels`) raise a DataError naming ``source`` (default ``name``) before any embedding.
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 \
            or tuple(images.shape[1:]) != (3, SIZE, SIZE):
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a uint8 tensor (N, 3, {SIZE}, {SIZE}), got {got}")
    pairs = np.asarray(pairs, dtype=np.int64)
    issame = np.asarray(issame, dtype=bool)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or issame.shape != (pairs.shape[0],):
        raise ValueError(f"pairs must be (P, 2) and issame (P,), got {pairs.shape} and {issame.shape}")
    if pairs.size and (pairs.min() < 0 or pairs.max() >= images.shape[0]):
        raise ValueError(f"pair indices must lie in 0..{images.shape[0] - 1}")
    check_sizes(list(sizes))
    s = resolve_preset(preset, which=which, cross_rows=cross_rows, down=down, up=up, antialias=antialias,
                       rounding=rounding, quantize_lr=quantize_lr, flip=flip, procedure=procedure)
    check_pair_labels(issame, folds, s["procedure"], source or name)
    proc = PROCEDURES[s["procedure"]]
    first, second = np.unique(pairs[:, 0]), np.unique(pairs[:, 1])
    both = np.unique(pairs)
    emb = _Embeddings(images, embed, s)

    rows, results, curves = [], {}, {}

    def record(key: str, label: str, degraded: str, e1: np.ndarray, e2: np.ndarray) -> None:
        fold, roc_scores = _score(e1, e2, issame, s["procedure"], folds)
        fpr, tpr, _ = roc_curve(roc_scores, issame)
        rows.append({"resolution": label, "degraded": degraded, "accuracy": fold.accuracy, "std": fold.std,
                     "auc": roc_auc(fpr, tpr), "pairs": len(issame)})
        results[key] = {"accuracy": fold.accuracy, "std": fold.std, "threshold": float(np.mean(fold.thresholds))}
        curves[f"roc:{key}"] = dict(zip(("fpr", "tpr"), thin_curve(fpr, tpr)))

    for size in tqdm(list(sizes), desc=f"eval {name}", unit="res", disable=not progress):
        degraded = "none" if size >= SIZE else s["which"]
        if s["which"] == "both":
            table = emb.at(both, size)
            e1, e2 = table[pairs[:, 0]], table[pairs[:, 1]]
        elif s["which"] == "first":
            e1 = emb.at(first, size)[pairs[:, 0]]
            e2 = emb.full(second)[pairs[:, 1]]
        else:
            e1 = emb.full(first)[pairs[:, 0]]
            e2 = emb.at(second, size)[pairs[:, 1]]
        record(str(size), f"{size}px", degraded, e1, e2)
        if s["cross_rows"] and size < SIZE:
            # e2 holds the second images at this size (which == both); the first images at full resolution.
            record(f"{size}-cross", f"{size}px-cross", "second", emb.full(first)[pairs[:, 0]], e2)

    settings = {"procedure": s["procedure"], "procedure_description": proc["description"], "score": proc["score"],
                "threshold_units": proc["threshold_units"], "std_kind": proc["std_kind"], "folds": folds,
                "which": s["which"], "cross_rows": s["cross_rows"], "down": s["down"], "up": s["up"],
                "antialias": s["antialias"], "rounding": s["rounding"], "quantize_lr": s["quantize_lr"],
                "flip": s["flip"], "sizes": list(sizes), "pairs": len(issame),
                "same_pairs": int(issame.sum()), "images": len(both), **(extra_settings or {})}
    return ProtocolResult(name, rows, settings, results=results, curves=curves, preset=preset)
