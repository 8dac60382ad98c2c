"""Writes that fail (full disk, quota, read-only or forbidden folder) as one-line errors the user can act on.

One place words them all: the atomic-write helpers (:mod:`lrfr_plugins.atomic`), the RecordIO writer and
``save_checkpoint`` raise :class:`~lrfr_plugins.errors.WriteError` through :func:`writing`; the CLI
(``LrfrGroup.invoke``) words any other ``OSError`` of writing with :func:`message` too. A ``WriteError`` is still an
``OSError`` (same ``errno`` and ``filename``), so code that catches ``OSError`` keeps working.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import pathlib
import shutil
from collections.abc import Iterator

from .errors import WriteError

#: errno values that mean "this cannot be written here", which the user fixes by freeing space or writing elsewhere.
WRITE_ERRNOS = frozenset(getattr(_errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EACCES", "EPERM")
                         if hasattr(_errno, name))
_NO_SPACE = frozenset(getattr(_errno, name) for name in ("ENOSPC", "EDQUOT") if hasattr(_errno, name))
#: Words of torch's C++ file writer (torch.save to a path), which reports a failed write as a RuntimeError.
_TORCH_WRITE_WORDS = ("PytorchStreamWriter", "inline_container", "file write failed", "cannot be opened",
                      "Parent directory")
#: The run directory's own file: a folder holding it is a run that ``lrfr run --resume`` continues.
_RUN_MARKER = "recipe.resolved.yaml"


def is_write_failure(exc: BaseException) -> bool:
    """An OSError the user fixes by freeing space or writing elsewhere (not, say, a missing input file)."""
    return isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS


def _fix(code: int | None) -> str:
    if code in _NO_SPACE:
        what = "Free space (or raise your quota)" if code == getattr(_errno, "EDQUOT", None) else "Free space"
        return f"{what} on that disk, or write elsewhere"
    if code == getattr(_errno, "EFBIG", None):
        return "The file system cannot hold a file that large (FAT32 stops at 4 GiB): write to another disk"
    if code == _errno.EROFS:
        return "That file system is mounted read-only: write elsewhere"
    if code in (_errno.EACCES, _errno.EPERM):
        return "You may not write there: fix the folder's permissions, or write elsewhere"
    return "Free space on that disk, or write elsewhere"


def run_dir_of(path: str | os.PathLike | None) -> pathlib.Path | None:
    """The run directory a file belongs to (it or its folder holds recipe.resolved.yaml), if any."""
    if path is None:
        return None
    p = pathlib.Path(path)
    for folder in (p.parent, p.parent.parent):
        if (folder / _RUN_MARKER).is_file() and p.name != _RUN_MARKER:
            return folder
    return None


def message(path: str | os.PathLike | None, code: int | None, reason: str, *, elsewhere: str | None = None,
            maybe_read: bool = False, run: bool | None = None) -> str:
    """'cannot write PATH: REASON. FIX (ELSEWHERE); the run continues ... lrfr run --resume DIR'.

    ``run``: whether a run was writing (the CLI knows; None: guess from PATH). Then the resume hint names the run
    directory when PATH lies in one, in general words when the system did not name the file. ``maybe_read``: the
    error may come from reading (a bare OSError the CLI caught): EACCES on an existing file that cannot be read then
    says "cannot read"."""
    target = str(path) if path is not None else "a file (the system did not say which)"
    if maybe_read and _is_read_failure(path, code):
        return f"cannot read {target}: {reason}. Fix its permissions, or run as a user who may read it."
    text = f"cannot write {target}: {reason}. {_fix(code)}" + (f" ({elsewhere})" if elsewhere else "")
    run_dir = run_dir_of(path) if run is not False else None
    if run_dir is not None:
        text += f"; the run continues from its last checkpoint with: lrfr run --resume {run_dir}"
    elif path is None and run:
        text += "; a run continues from its last checkpoint with: lrfr run --resume RUN_DIR"
    return text + "."


def _is_read_failure(path: str | os.PathLike | None, code: int | None) -> bool:
    """EACCES/EPERM also come from reading: an existing file that we may not read was being read, not written."""
    if code not in (_errno.EACCES, _errno.EPERM) or path is None:
        return False
    p = pathlib.Path(path)
    return p.is_file() and not os.access(p, os.R_OK)


def write_error(path: str | os.PathLike, exc: OSError) -> WriteError:
    """The :class:`WriteError` for ``exc`` raised while writing ``path`` (the target, not a temp file)."""
    reason = exc.strerror or str(exc)
    return WriteError(path, exc.errno, reason, message(path, exc.errno, reason))


def torch_write_error(path: str | os.PathLike, exc: RuntimeError) -> WriteError | None:
    """A WriteError for torch's RuntimeError of a failed file write (it carries no errno), else None."""
    text = str(exc)
    if not any(word in text for word in _TORCH_WRITE_WORDS):
        return None
    folder = pathlib.Path(path).parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    code = _errno.ENOSPC if free is not None and free < 64 << 20 else None
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    reason = (f"No space left on device (torch.save: {first})" if code is not None
              else f"torch.save failed ({first})")
    return WriteError(path, code, reason, message(path, code, reason))


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError of writing inside the block into a :class:`WriteError` that names ``path``."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        if not is_write_failure(exc):
            raise
        raise write_error(path, exc) from exc
