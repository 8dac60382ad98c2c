"""SCface's identification protocol on held-out synthetic identities: HR mugshots against surveillance probes at
three distances.

The gallery is one clean frontal mugshot per identity (no pose, expression or noise variation, soft lighting).
Each identity is seen by ``cameras`` surveillance cameras at three distances; a probe is a fresh image of the
identity (pose, expression, lighting vary) captured by :mod:`lrfr_plugins.synthetic.capture` at the face height
of its distance, then made 112 x 112 with the study's square_crop. Distance labels follow SCface: d1 is the
farthest (smallest faces), d3 the closest. Reported like ``scface``: rank-1 per distance and the CMC to rank 20.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ...api import Embedder, Protocol, ProtocolResult, param
from ...metrics.identification import closed_set
from ...synthetic import SyntheticFaceGenerator
from ...synthetic.capture import CaptureRange, capture
from .synthetic_survface import to_network_size

DISTANCES = (1, 2, 3)


@dataclasses.dataclass(frozen=True)
class SyntheticSCfaceParams:
    num_identities: int = param(100, "held-out identities (SCface: 130)", ge=2)
    cameras: int = param(5, "probes per identity and distance (SCface: 5 visible-light cameras)", ge=1)
    face_heights: list[int] = param([12, 20, 36], "face height in px at distance labels 1 (farthest), 2, 3; each "
                                                  "capture varies it by +-15%")
    seed: int = param(0, "seed of the identities and the captures")
    max_rank: int = param(20, "length of the CMC curve", ge=1)

    def __post_init__(self) -> None:
        if len(self.face_heights) != 3 or any(not 4 <= h <= 112 for h in self.face_heights):
            raise ValueError(f"face_heights must list 3 heights in 4..112 px (d1, d2, d3), got {self.face_heights}")


class SyntheticSCface(Protocol):
    """SCface-style rank-1 / CMC at three distances: synthetic HR mugshots vs surveillance-camera probes."""

    Params = SyntheticSCfaceParams

    def evaluate(self, embed: Embedder, *, progress: bool = True) -> ProtocolResult:
        p = self.params
        ids = np.arange(p.num_identities)
        mugshots = SyntheticFaceGenerator(p.seed, "test", pose=0.0, expression=0.0, illumination=0.3, noise=0.0)
        gallery = torch.from_numpy(np.ascontiguousarray(mugshots.render(ids, np.zeros_like(ids))
                                                        .transpose(0, 3, 1, 2)))
        scenes = SyntheticFaceGenerator(p.seed, "test")
        rng = np.random.default_rng(p.seed)
        probes, labels, keys = [], [], []
        for d, height in zip(DISTANCES, p.face_heights):
            pid = np.repeat(ids, p.cameras)
            sample = 1 + (d - 1) * p.cameras + np.tile(np.arange(p.cameras), p.num_identities)  # 0 is the mugshot's
            faces = torch.from_numpy(np.ascontiguousarray(scenes.render(pid, sample).transpose(0, 3, 1, 2)))
            lo, hi = max(4, round(height * 0.85)), min(112, round(height * 1.15))
            probes += capture(faces, CaptureRange(height=(lo, hi)), rng)
            labels.append(pid)
            keys += [f"d{d}"] * len(pid)
        emb = np.asarray(embed(torch.cat([gallery, to_network_size(probes, "pad")])))
        gallery_emb, probe_emb = emb[: len(ids)], emb[len(ids):]
        probe_labels, keys = np.concatenate(labels), np.array(keys)
        rows, results, curves = [], {}, {}
        for d, height in zip(DISTANCES, p.face_heights):
            key = f"d{d}"
            mask = keys == key
            found = closed_set(probe_emb[mask], probe_labels[mask], gallery_emb, ids, max_rank=p.max_rank)
            rows.append({"key": key, "face_height_px": height, "n_gallery": len(ids), "n_probes": int(mask.sum()),
                         "rank1": found["rank1"], "rank5": found["rank5"]})
            results[key] = {"rank1": found["rank1"], "n_probes": int(mask.sum())}
            curves[f"cmc:{key}"] = {"rank": list(range(1, p.max_rank + 1)),
                                    "rate": [round(float(r), 6) for r in found["cmc"]]}
        settings = {"procedure": "closed-set identification: cosine, rank of the true identity, ties pessimistic",
                    "gallery": "one clean frontal mugshot per identity at 112 px",
                    "probes": f"{p.cameras} per identity and distance; capture = area down-sampling to the "
                              "distance's face height +-15%, blur, noise, JPEG; square_crop pad back to 112",
                    "distances": {f"d{d}": f"{h} px high" + (" (farthest)" if d == 1 else " (closest)" if d == 3
                                                             else "") for d, h in zip(DISTANCES, p.face_heights)},
                    "identities": p.num_identities}
        return ProtocolResult("synthetic-scface", rows, settings, results=results, curves=curves)
