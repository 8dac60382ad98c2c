"""MATLAB ``.mat`` lists of the benchmark releases (QMUL-SurvFace, TinyFace): one file name per cell."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError


def cell_name(cell: Any, where: str, restore: str) -> str:
    """One file name from a cell: a str (``squeeze_me=True``) or a 1-element string array (``squeeze_me=False``).
    ``restore`` says where a good copy of the list comes from, for the error."""
    x = cell
    while isinstance(x, np.ndarray):
        if x.size != 1:
            raise DataError(f"{where}: expected one file name, got an array of shape {x.shape} "
                            f"({x.reshape(-1)[:3].tolist()!r}...). The list must be a cell array of strings "
                            f"(restore it from {restore}).")
        x = x.reshape(-1)[0]
    if isinstance(x, bytes):
        x = x.decode("utf-8", "replace")
    if not isinstance(x, str) or not x.strip():
        raise DataError(f"{where}: expected a file name, got {type(x).__name__} {x!r}. The list must be a cell array "
                        f"of non-empty strings (restore it from {restore}).")
    return x.strip()
