"""The only place hooks are declared: one registration hook per plugin kind.

Each hook receives ``register(name, cls)``. The host owns names, duplicates and provenance, so a hook only says
what it provides. pluggy never passes hookimpl arguments that have defaults: declare ``register`` without one.

Example (a third-party package's module, listed under the ``lrfr`` entry-point group)::

    from lrfr_plugins import hookimpl

    @hookimpl
    def lrfr_register_heads(register):
        register("curricularface", CurricularFace)
"""

from __future__ import annotations

from typing import Callable

import pluggy

PROJECT = "lrfr"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[str, type], None]


@hookspec
def lrfr_register_backbones(register: Register) -> None:
    """Register backbones: ``torch.nn.Module`` mapping (N, 3, 112, 112) float images to (N, D) embeddings."""


@hookspec
def lrfr_register_heads(register: Register) -> None:
    """Register margin heads: ``head(cosine, labels, quality=None)`` -> scaled logits (N, C)."""


@hookspec
def lrfr_register_quality(register: Register) -> None:
    """Register quality estimators: uint8 images (N, 3, H, W) -> per-sample quality (N,)."""


@hookspec
def lrfr_register_degradations(register: Register) -> None:
    """Register degradations: uint8 batch -> DegradedBatch (images, lr_mask: made low-resolution, changed)."""


@hookspec
def lrfr_register_finetuners(register: Register) -> None:
    """Register finetuners that continue training a backbone with their own loss."""


@hookspec
def lrfr_register_datasets(register: Register) -> None:
    """Register datasets: map-style, items (uint8 3x112x112 RGB tensor, int label), with ``num_classes``."""


@hookspec
def lrfr_register_protocols(register: Register) -> None:
    """Register evaluation protocols: ``protocol.evaluate(embedder)`` -> results."""


#: kind -> hook name. The kind strings are public (recipes, ``lrfr plugins``, ``create``).
KIND_HOOKS: dict[str, str] = {
    "backbone": "lrfr_register_backbones",
    "head": "lrfr_register_heads",
    "quality": "lrfr_register_quality",
    "degradation": "lrfr_register_degradations",
    "finetuner": "lrfr_register_finetuners",
    "dataset": "lrfr_register_datasets",
    "protocol": "lrfr_register_protocols",
}
KINDS: tuple[str, ...] = tuple(KIND_HOOKS)
