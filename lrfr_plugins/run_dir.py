"""A run directory's life: one writer at a time, what a run writes there, and ``--overwrite`` that loses nothing.

* **One writer.** ``lrfr run`` holds ``.<name>.lock`` beside the run directory (an ``flock`` on a file holding its
  pid) from the first check to the last write, so a second ``--overwrite`` or ``--resume`` of the same directory is
  refused instead of mixing two runs. The kernel drops the lock when a process dies, so a lock left by ``kill -9``
  is taken over, with a message.
* **Overwrite is a replacement, not a deletion.** The new run trains in the sibling ``<name>.new`` and replaces the
  old run only when it has finished: a run that fails its checks, crashes or is interrupted leaves the old run as it
  was (and ``lrfr run --resume <name>.new`` continues the new one). On replacement, files that a run writes are
  replaced or removed; any other file in the folder stays.
* Under torchrun only rank 0 locks, judges and replaces; the other ranks only write into the same directory.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import pathlib
import shutil
import socket
import sys
import time
from collections.abc import Iterator

from .atomic import remove_stale_temp_files
from .errors import RunDirError

#: What ``lrfr run`` writes into a run directory (names or glob patterns); nothing else is ever removed from it.
RUN_FILES = ("recipe.resolved.yaml", "checkpoint.pt", "checkpoint-rank*.pt", "metrics.jsonl", "metrics.json",
             "results.md", "accuracy_vs_resolution.png", "model.onnx", "run.log", "run-rank*.log", "tensorboard")
RUN_MARKERS = ("recipe.resolved.yaml", "checkpoint.pt", "metrics.json")
#: In a replacement directory: the name of the run directory it replaces when it finishes.
REPLACES = ".lrfr-replaces"
STAGING_SUFFIX = ".new"


def holds_run(path: pathlib.Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in RUN_MARKERS)


def is_run_file(name: str) -> bool:
    """A file ``lrfr run`` writes, or the temporary file of one of its atomic writes (``.<file>.<random>``)."""
    if name == REPLACES:
        return True
    bare = name[1:].rsplit(".", 1)[0] if name.startswith(".") and name.count(".") >= 2 else name
    return any(fnmatch.fnmatchcase(n, pattern) for n in {name, bare} for pattern in RUN_FILES)


def staging_dir(target: pathlib.Path) -> pathlib.Path:
    return target.with_name(target.name + STAGING_SUFFIX)


def replaced_target(run_dir: pathlib.Path) -> pathlib.Path | None:
    """The run directory that ``run_dir`` (a replacement being trained) will replace, or None."""
    marker = run_dir / REPLACES
    return run_dir.with_name(marker.read_text(encoding="utf-8").strip()) if marker.is_file() else None


def launch_rank() -> int:
    """This process's rank as torchrun announced it (0 for a plain process), known before the group is joined."""
    return int(os.environ.get("RANK", "0"))


def _say(message: str) -> None:
    print(f"lrfr: {message}", file=sys.stderr)


class RunLock:
    """An exclusive, advisory lock on the run directory ``target`` (see the module docstring)."""

    def __init__(self, target: pathlib.Path):
        self.target = target
        self.path = target.with_name(f".{target.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no flock, an exclusive create instead
            self._acquire_without_flock()
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunDirError(
                    f"{self.target}: in use by another lrfr run ({holder or 'unknown process'}; lock {self.path}). "
                    "Two runs writing one directory would mix their files: wait for it to finish, stop it, or "
                    "write elsewhere with --out DIR.") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # else its holder removed the file between our open and our lock: lock the new one
                break
            os.close(fd)
        stale = _read_holder(fd)
        if stale:
            _say(f"took over the lock of {self.target} left by {stale}, which is no longer running.")
        os.ftruncate(fd, 0)
        os.write(fd, _holder_line().encode())
        self._fd = fd

    def _acquire_without_flock(self) -> None:  # pragma: no cover - Windows
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise RunDirError(f"{self.target}: in use by another lrfr run (lock {self.path}). If no run is active, "
                              f"delete {self.path} and run again.") from None
        os.write(fd, _holder_line().encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # before closing: whoever locks next locks a fresh file
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder_line() -> str:
    return f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"


def _read_holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 512).decode("utf-8", "replace").strip()


def prepare_run_dir(out: pathlib.Path, *, overwrite: bool, resume: bool) -> pathlib.Path:
    """Check the run directory ``out`` and return the directory to write into: ``out`` itself, or with
    ``overwrite`` the replacement ``out.new`` (emptied of an earlier attempt's run files), which
    :func:`finish_replacement` swaps in at the end. Nothing of ``out`` is touched."""
    if launch_rank() > 0:  # rank 0 judges; the others derive the same directory and only make sure it exists
        run_dir = staging_dir(out) if overwrite else out
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    if resume:
        if not holds_run(out):
            raise RunDirError(f"{out}: nothing to resume: no run found there (no recipe.resolved.yaml). "
                              "Start a run with 'lrfr run RECIPE --out DIR'.")
        pending = staging_dir(out)
        if replaced_target(pending) == out and holds_run(pending):
            raise RunDirError(f"{out}: an unfinished replacement of this run waits in {pending} (started with "
                              f"--overwrite). Continue it with 'lrfr run --resume {pending}' (it replaces {out} "
                              f"when it finishes), or delete {pending} to resume {out} itself.")
        return out
    if not overwrite:
        if holds_run(out):
            raise RunDirError(f"{out}: this directory already holds a run. Pass --resume {out} to continue it, "
                              "--overwrite to replace it, or --out DIR to write elsewhere.")
        out.mkdir(parents=True, exist_ok=True)
        return out
    run_dir = staging_dir(out)
    if run_dir.exists() and replaced_target(run_dir) != out and any(run_dir.iterdir()):
        raise RunDirError(f"{run_dir}: --overwrite trains the new run there before it replaces {out}, but that "
                          "folder is not an earlier lrfr replacement. Move it away, or write elsewhere with --out.")
    _remove_run_files(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / REPLACES).write_text(out.name + "\n", encoding="utf-8")
    return run_dir


def finish_replacement(run_dir: pathlib.Path) -> pathlib.Path:
    """Put the finished run in ``run_dir`` in place of the run it replaces (if it is a replacement) and return where
    the run now lives. The old directory's run files go; its other files move into the new one. Each step can be
    repeated after a crash: the next ``lrfr run --resume`` of the replacement completes it."""
    target = replaced_target(run_dir)
    if target is None:
        return run_dir
    old = target.with_name(f".{target.name}.replaced")
    if old.exists() and target.exists():  # left by a crash after an earlier swap: finish that one first
        _merge_leftovers(old, target)
    if target.exists():
        os.rename(target, old)
    os.rename(run_dir, target)
    (target / REPLACES).unlink()
    if old.exists():
        _merge_leftovers(old, target)
    return target


def _merge_leftovers(old: pathlib.Path, target: pathlib.Path) -> None:
    """Drop the replaced run's own files; move everything else (the user's files) into the new run directory."""
    kept = []
    for entry in sorted(old.iterdir()):
        if is_run_file(entry.name):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        elif not (target / entry.name).exists():
            os.rename(entry, target / entry.name)
        else:
            kept.append(entry.name)
    if kept:
        _say(f"kept {old}: its {', '.join(kept)} would overwrite files of the new run in {target}.")
    else:
        old.rmdir()


def _remove_run_files(run_dir: pathlib.Path) -> None:
    """Empty an earlier, unfinished replacement of what a run wrote there; anything else stays."""
    if not run_dir.is_dir():
        return
    for entry in run_dir.iterdir():
        if is_run_file(entry.name):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def _discard_if_empty(run_dir: pathlib.Path) -> None:
    """A replacement that failed before it held a run is of no use: remove what we made, so nothing is left."""
    if replaced_target(run_dir) is not None and not holds_run(run_dir):
        _remove_run_files(run_dir)
        with contextlib.suppress(OSError):
            run_dir.rmdir()


@contextlib.contextmanager
def claim_run_dir(target: pathlib.Path, *, overwrite: bool = False, resume: bool = False) -> Iterator[pathlib.Path]:
    """Lock ``target``, prepare it (:func:`prepare_run_dir`) and yield the directory to write into; on success a
    replacement is swapped in (:func:`finish_replacement`). ``target`` may be a replacement itself (``--resume
    out.new``): then ``out`` is what is locked."""
    if launch_rank() > 0:
        yield prepare_run_dir(target, overwrite=overwrite, resume=resume)
        return
    locked = (replaced_target(target) if resume else None) or target
    with RunLock(locked):
        run_dir = prepare_run_dir(target, overwrite=overwrite, resume=resume)
        removed, _ = remove_stale_temp_files(run_dir, is_run_file)
        if removed:
            _say(f"removed {len(removed)} temporary file(s) of an earlier run that was killed while writing: "
                 f"{', '.join(removed)}")
        try:
            yield run_dir
        except BaseException:
            _discard_if_empty(run_dir)
            raise
        finish_replacement(run_dir)
