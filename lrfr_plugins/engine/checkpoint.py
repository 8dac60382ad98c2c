"""Checkpoints: written atomically (:mod:`lrfr_plugins.atomic`), read with ``weights_only=True``."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import torch

from ..atomic import atomic_path
from ..errors import RunDirError
from ..write_errors import torch_write_error


def save_checkpoint(path: pathlib.Path, state: dict[str, Any]) -> None:
    """torch.save into a file we opened, so a full disk is an OSError with its errno (torch's own file writer turns
    it into a RuntimeError without one; that one is translated too)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        try:
            torch.save(state, fh)
        except RuntimeError as exc:
            error = torch_write_error(path, exc)
            if error is None:
                raise
            raise error from exc
        fh.flush()
        os.fsync(fh.fileno())


def load_checkpoint(path: pathlib.Path) -> dict[str, Any]:
    """Load tensors and plain containers only: a checkpoint is never allowed to run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunDirError(f"{path}: checkpoint not found. Is this a run directory written by 'lrfr run'?") from None
    except Exception as exc:
        raise RunDirError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc}). "
                          "It may be truncated or not a lrfr checkpoint.") from None
