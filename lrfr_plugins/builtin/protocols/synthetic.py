"""Verification on held-out synthetic identities at several resolutions (the demo's and CI's LFW stand-in)."""

from __future__ import annotations

import dataclasses

import numpy as np
from tqdm.auto import tqdm

from ...api import Embedder, Protocol, ProtocolResult, param
from ...metrics.verification import cosine_scores, lozhkina_10fold, roc_auc, roc_curve, thin_curve
from ...ops.resize import Mode, resize_down_up
from ...synthetic import draw_pairs
from ..datasets.synthetic import SyntheticDataset, SyntheticParams


@dataclasses.dataclass(frozen=True)
class SyntheticVerificationParams:
    num_identities: int = param(100, "held-out identities", ge=2)
    images_per_identity: int = param(10, "images per held-out identity", ge=2)
    num_pairs: int = param(3000, "pairs, half genuine and half impostor, in 10 balanced folds", ge=20)
    seed: int = param(0, "seed of the held-out identities and of the pair draw")
    sizes: list[int] = param([112, 56, 28, 14, 7], "resolutions in px; both images of a pair are degraded")
    down: Mode = param("bilinear", "down-sampling interpolation (founding study: bilinear, no anti-aliasing)")
    up: Mode = param("bilinear", "up-sampling interpolation back to 112 px")
    antialias: bool = param(False, "anti-alias when down-sampling")

    def __post_init__(self) -> None:
        if not self.sizes or any(s < 1 or s > 112 for s in self.sizes):
            raise ValueError(f"sizes must be a non-empty list of sizes in 1..112, got {self.sizes}")


class SyntheticVerification(Protocol):
    """LFW-style verification on held-out synthetic faces at 112..7 px (founding study's 10-fold procedure)."""

    Params = SyntheticVerificationParams

    def evaluate(self, embed: Embedder, *, progress: bool = True) -> ProtocolResult:
        p = self.params
        data = SyntheticDataset(SyntheticParams(num_identities=p.num_identities,
                                                images_per_identity=p.images_per_identity, seed=p.seed, split="test",
                                                cache=False))
        images = data.render(np.arange(len(data)))
        pairs, issame = draw_pairs(p.num_identities, p.images_per_identity, p.num_pairs, p.seed)
        rows, results, curves = [], {}, {}
        for size in tqdm(p.sizes, desc="eval synthetic", unit="res", disable=not progress):
            degraded = resize_down_up(images, size, down=p.down, up=p.up, antialias=p.antialias)
            emb = embed(degraded)
            scores = cosine_scores(emb[pairs[:, 0]], emb[pairs[:, 1]])
            folds = lozhkina_10fold(scores, issame)
            fpr, tpr, _ = roc_curve(scores, issame)
            rows.append({"resolution": f"{size}px", "accuracy": folds.accuracy, "sem": folds.std,
                         "auc": roc_auc(fpr, tpr)})
            results[str(size)] = {"accuracy": folds.accuracy, "std": folds.std,
                                  "threshold": float(np.mean(folds.thresholds))}
            curves[f"roc:{size}"] = dict(zip(("fpr", "tpr"), thin_curve(fpr, tpr)))
        settings = {"procedure": "lozhkina 10-fold (cosine, Youden threshold, std = SEM)", "degrade": "both",
                    "down": p.down, "up": p.up, "antialias": p.antialias, "pairs": int(len(issame)),
                    "identities": p.num_identities}
        return ProtocolResult("synthetic", rows, settings, results=results, curves=curves, preset="lozhkina")
