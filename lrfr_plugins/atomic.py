"""Every output file is written atomically: a temp file beside the target, renamed over it once complete.

Torch-free, so readers and writers of data (formats, plots, reports) can use it without loading torch; the
checkpoint writer (:mod:`lrfr_plugins.engine.checkpoint`) builds on it.

A temp file is named ``.<file>.lrfr-tmp-<host>-<pid>-<random>`` beside its target: a write that fails removes it, and
one left by a killed process (``kill -9``, power loss) is recognisable, by name, host and a pid that no longer runs,
so :func:`remove_stale_temp_files` can clear it without touching anyone else's files. A failed write (full disk,
read-only or forbidden folder) raises :class:`~lrfr_plugins.errors.WriteError` naming the target.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import socket
import tempfile
from collections.abc import Callable, Iterable
from typing import Iterator

from .write_errors import writing

TEMP_MARK = "lrfr-tmp"
_TEMP_RE = re.compile(rf"\.(?P<name>.+)\.{TEMP_MARK}-(?P<host>[A-Za-z0-9_-]*)-(?P<pid>\d+)-[a-z0-9_]+")


def _host() -> str:
    """This machine's short name, reduced to [A-Za-z0-9_-] (no dots: the temp name's last dot stays the one before
    the marker, which :func:`lrfr_plugins.run_dir.is_run_file` relies on)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0])[:32] or "host"


def temp_prefix(path: pathlib.Path) -> str:
    return f".{path.name}.{TEMP_MARK}-{_host()}-{os.getpid()}-"


@contextlib.contextmanager
def atomic_path(path: pathlib.Path) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed.

    A crash therefore leaves either the old file or the new one, never half of one. Failed writes inside the block
    (or of the temp file or the rename) become a WriteError naming ``path``.
    """
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
        os.close(fd)
        os.chmod(tmp, _file_mode(path))  # mkstemp makes it owner-only; a pack or model is meant to be shared
        try:
            yield pathlib.Path(tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):  # never hide the write's own error behind the clean-up's
                pathlib.Path(tmp).unlink(missing_ok=True)
            raise


def _file_mode(path: pathlib.Path) -> int:
    """The mode the replaced file had, or what open() would give a new one (0o666 less the umask)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: pathlib.Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _pid_running(pid: int) -> bool:
    if os.name == "nt":  # pragma: no cover - os.kill(pid, 0) would terminate it there: assume it runs
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, OSError):
        return False
    return True


def stale_temp_files(folder: pathlib.Path, names: Iterable[str] | Callable[[str], bool]
                     ) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    """Temp files of atomic writes of ``names`` (or of the names ``names(name)`` accepts) in ``folder`` whose
    writer is gone: (stale, kept).

    Stale: written on this machine by a process that no longer runs. Kept: another machine's (on a shared disk its
    writer may still run). Files that do not carry our temp mark, and live writers' temp files, are not listed.
    """
    wanted = names if callable(names) else set(names).__contains__
    stale: list[pathlib.Path] = []
    kept: list[pathlib.Path] = []
    if not folder.is_dir():
        return stale, kept
    host = _host()
    for entry in sorted(folder.iterdir()):
        m = _TEMP_RE.fullmatch(entry.name)
        if m is None or not wanted(m["name"]) or entry.is_symlink() or not entry.is_file():
            continue
        if m["host"] != host:
            kept.append(entry)
        elif int(m["pid"]) != os.getpid() and not _pid_running(int(m["pid"])):
            stale.append(entry)
    return stale, kept


def remove_stale_temp_files(folder: pathlib.Path, names: Iterable[str] | Callable[[str], bool]
                            ) -> tuple[list[str], list[str]]:
    """Remove the stale temp files of :func:`stale_temp_files`; return the names removed and the names kept."""
    stale, kept = stale_temp_files(folder, names)
    removed = []
    for entry in stale:
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
        removed.append(entry.name)
    return removed, [entry.name for entry in kept]
