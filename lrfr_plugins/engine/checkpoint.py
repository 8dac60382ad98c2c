"""Checkpoints: written atomically (temp file + rename), read with ``weights_only=True``."""

from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Any

import torch

from ..errors import RunDirError


def atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: pathlib.Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(path: pathlib.Path, state: dict[str, Any]) -> None:
    """Save to ``path`` so that a crash leaves either the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: pathlib.Path) -> dict[str, Any]:
    """Load tensors and plain containers only: a checkpoint is never allowed to run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunDirError(f"{path}: checkpoint not found. Is this a run directory written by 'lrfr run'?") from None
    except Exception as exc:
        raise RunDirError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc}). "
                          "It may be truncated or not a lrfr checkpoint.") from None
