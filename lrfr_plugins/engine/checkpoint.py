"""Checkpoints: written atomically (temp file + rename), read with ``weights_only=True``."""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from typing import Any, Iterator

import torch

from ..errors import RunDirError


@contextlib.contextmanager
def atomic_path(path: pathlib.Path) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed.

    A crash therefore leaves either the old file or the new one, never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield pathlib.Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: pathlib.Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(path: pathlib.Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: pathlib.Path) -> dict[str, Any]:
    """Load tensors and plain containers only: a checkpoint is never allowed to run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunDirError(f"{path}: checkpoint not found. Is this a run directory written by 'lrfr run'?") from None
    except Exception as exc:
        raise RunDirError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc}). "
                          "It may be truncated or not a lrfr checkpoint.") from None
