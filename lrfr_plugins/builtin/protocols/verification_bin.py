"""Verification on an InsightFace ``.bin`` (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``) at several resolutions.

The file is read with the restricted unpickler of :mod:`lrfr_plugins.formats.verification_bin` (it never runs code
from the file); pair i is images ``(2i, 2i+1)`` with label ``issame[i]``, in file order, so the 10 contiguous folds
are the official ones (PROTOCOLS.md §2.1). Images of another size than 112 x 112 are resized (anti-aliased bilinear)
with one warning. The default preset is ``insightface``, since these files come from InsightFace: on the same
embeddings its 112 px accuracy equals arcface_torch's ``Accuracy-Flip``. Presets, metrics and result keys are those
of :mod:`lrfr_plugins.builtin.protocols.pairs`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ...api import Embedder, Protocol, ProtocolResult, param
from ...errors import DataError
from ...formats.verification_bin import load_verification_bin
from .pairs import PRESET_DOC, PairProtocolParams, Preset, check_pair_labels, evaluate_pairs, stack_images


@dataclasses.dataclass(frozen=True, kw_only=True)
class VerificationBinParams(PairProtocolParams):
    path: str = param(doc="an InsightFace verification .bin (lfw.bin, cfp_fp.bin, agedb_30.bin)")
    preset: Preset = param("insightface", PRESET_DOC)


class VerificationBin(Protocol):
    """Verification on an InsightFace .bin (lfw, cfp_fp, agedb_30) at 112..7 px (default preset insightface)."""

    Params = VerificationBinParams

    def check(self) -> None:
        """The file exists, loads, and has labels the folds can score (read, not decoded: about 0.1 s for a 60 MB
        lfw.bin), so a careless .bin stops a run before its training rather than after it."""
        if not pathlib.Path(self.params.path).is_file():
            raise DataError(f"{self.params.path}: the verification .bin does not exist. Give the path of an "
                            "InsightFace .bin such as faces_webface_112x112/lfw.bin.")
        self._checked_bin()

    def _checked_bin(self):
        """The loaded .bin, refused (DataError naming the file) when its labels cannot fill the folds."""
        p = self.params
        vb = load_verification_bin(p.path)
        check_pair_labels(vb.issame, p.folds or 10, p.procedure, str(p.path), "a .bin")
        return vb

    def load(self) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """All images (uint8 (2P, 3, 112, 112)), the pairs (P, 2) and their labels (checked before decoding)."""
        vb = self._checked_bin()
        with ThreadPoolExecutor(max_workers=8) as pool:
            decoded = list(pool.map(vb.decode, range(len(vb.bins))))
        where = [f"{self.params.path}: image {j}" for j in range(len(vb.bins))]
        images = stack_images(decoded, where, "%s is %dx%d, not 112x112: resizing it (and any other such image).")
        pairs = np.arange(len(vb.bins), dtype=np.int64).reshape(-1, 2)
        return images, pairs, np.asarray(vb.issame, bool)

    def evaluate(self, embed: Embedder, *, progress: bool = True) -> ProtocolResult:
        p = self.params
        images, pairs, issame = self.load()
        name = pathlib.Path(p.path).stem
        return evaluate_pairs(images, pairs, issame, embed, sizes=p.sizes, preset=p.preset, folds=p.folds or 10,
                              progress=progress, name="bin", source=str(p.path),
                              extra_settings={"set": name, "path": str(p.path)}, **p.settings())
