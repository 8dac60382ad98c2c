"""QMUL-SurvFace's verification protocol on held-out synthetic identities captured as a surveillance camera would.

Both images of a pair are native low-resolution captures (:mod:`lrfr_plugins.synthetic.capture`: small, blurred,
noisy, JPEG-compressed, not square), made 112 x 112 as the study made QMUL-SurvFace images (``square``). Pairs are
listed positives first, as in QMUL's .mat files, and the same metrics are reported: the official TAR@FAR and AUC
over all pairs, and the study's fold accuracy (``lozhkina``: class-pure folds; ``stratified``: balanced folds).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import torch

from ...api import Embedder, Protocol, ProtocolResult, param
from ...metrics.verification import cosine_scores, thin_curve
from ...ops.resize import pad_to_square, resize_to
from ...synthetic import SyntheticFaceGenerator, draw_pairs
from ...synthetic.capture import CaptureRange, capture
from .qmul_survface import FOLDS_TEXT, KEY, survface_metrics

SIZE = 112


@dataclasses.dataclass(frozen=True)
class SyntheticSurvFaceParams:
    num_identities: int = param(200, "held-out identities", ge=2)
    images_per_identity: int = param(4, "captures per identity", ge=2)
    num_pairs: int = param(2000, "pairs, half genuine (listed first) and half impostor", ge=20)
    seed: int = param(0, "seed of the identities, the captures and the pair draw")
    face_height: list[int] = param([14, 28], "range of capture heights in px, inclusive (QMUL-SurvFace: mean 24)")
    preset: Literal["lozhkina", "stratified"] = param(
        "lozhkina", "fold accuracy: lozhkina = the study's contiguous, class-pure folds; stratified = balanced")
    square: Literal["pad", "stretch"] = param("pad", "to 112x112: pad = the study's square_crop; stretch = resize")
    tar_rule: Literal["conservative", "interpolated"] = param("conservative", "how TAR is read off the ROC")

    def __post_init__(self) -> None:
        if len(self.face_height) != 2 or not 4 <= self.face_height[0] <= self.face_height[1] <= SIZE:
            raise ValueError(f"face_height must be [lo, hi] with 4 <= lo <= hi <= 112, got {self.face_height}")


def to_network_size(captures: list[torch.Tensor], square: str) -> torch.Tensor:
    """Small captures of any sizes -> uint8 (N, 3, 112, 112), one resize per distinct size."""
    out = torch.empty((len(captures), 3, SIZE, SIZE), dtype=torch.uint8)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(captures):
        by_size.setdefault(tuple(image.shape[1:]), []).append(i)
    for _, idx in by_size.items():
        batch = torch.stack([captures[i] for i in idx])
        out[idx] = pad_to_square(batch, SIZE) if square == "pad" else resize_to(batch, (SIZE, SIZE),
                                                                                 antialias=False)
    return out


class SyntheticSurvFace(Protocol):
    """QMUL-SurvFace-style verification on synthetic surveillance captures (TAR@FAR, AUC, the study's folds)."""

    Params = SyntheticSurvFaceParams

    def evaluate(self, embed: Embedder, *, progress: bool = True) -> ProtocolResult:
        p = self.params
        per = p.images_per_identity
        n = p.num_identities * per
        faces = SyntheticFaceGenerator(p.seed, "test").render(np.arange(n) // per, np.arange(n) % per)
        images = torch.from_numpy(np.ascontiguousarray(faces.transpose(0, 3, 1, 2)))
        captures = capture(images, CaptureRange(height=tuple(p.face_height)), np.random.default_rng(p.seed))
        pairs, issame = draw_pairs(p.num_identities, per, p.num_pairs, p.seed)
        order = np.r_[np.flatnonzero(issame), np.flatnonzero(~issame)]  # positives first, as QMUL's .mat files
        pairs, issame = pairs[order], issame[order]
        emb = np.asarray(embed(to_network_size(captures, p.square)))
        scores = cosine_scores(emb[pairs[:, 0]], emb[pairs[:, 1]])
        metrics, folds, (fpr, tpr) = survface_metrics(scores, issame, p.preset, p.tar_rule)
        sizes = [c.shape[1] for c in captures]
        row = {"set": "verification", "folds": p.preset, "accuracy": folds.accuracy, "sem": folds.std,
               "auc": metrics["auc"], **{k: v for k, v in metrics.items() if k.startswith("tar@")}}
        settings = {"preset": p.preset, "folds": FOLDS_TEXT[p.preset], "pairs": f"{int(issame.sum())} positive + "
                    f"{int((~issame).sum())} negative, positives first", "identities": p.num_identities,
                    "capture": f"area down to {p.face_height[0]}-{p.face_height[1]} px high (mean "
                               f"{np.mean(sizes):.1f}), width 0.75-0.9 x height, Gaussian blur 0.3-1.0 px, noise "
                               "2-6 grey levels, JPEG quality 40-85",
                    "square": p.square, "tar_rule": p.tar_rule,
                    "fold_accuracies": [round(a, 4) for a in folds.fold_accuracies]}
        curves = {f"roc:{KEY}": dict(zip(("fpr", "tpr"), thin_curve(fpr, tpr)))}
        return ProtocolResult("synthetic-survface", [row], settings, results={KEY: metrics}, curves=curves,
                              preset=p.preset)
