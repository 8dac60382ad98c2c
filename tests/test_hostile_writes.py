"""What the toolkit survives when writing fails or is interrupted: a full disk or a read-only folder under
``lrfr run``, ``lrfr eval --out`` and ``lrfr data pack`` is one ``Error:`` line (exit 1, no traceback) that names the
file and the fix and leaves nothing half-written; a missing or broken ``.idx`` names ``lrfr data index``, which
rebuilds it; temp files left by a ``kill -9`` of a pack are removed by the next pack into that folder (issue 14,
parts of items 6, 7 and 8).

A full disk is the kernel's own: the temp file of an atomic write becomes a link to ``/dev/full``, where every write
fails with ENOSPC. A read-only folder is simulated (tests may run as root, for whom chmod stops nothing): every call
that would create or write a file under it fails with EROFS, as a read-only mount does; the real chmod variant runs
when the tests do not run as root.
"""

import builtins
import errno
import io
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import ROOT
from lrfr_plugins import atomic
from lrfr_plugins.cli import main
from lrfr_plugins.atomic import atomic_write_text
from lrfr_plugins.engine.checkpoint import save_checkpoint
from lrfr_plugins.errors import DataError, LrfrError, WriteError
from lrfr_plugins.formats.packing import pack_image_folder
from lrfr_plugins.formats.recordio import RecordReader, TrainingSet

RECIPE = """
lrfr: 1
name: tiny
seed: 0
data: {name: synthetic, params: {num_identities: 6, images_per_identity: 4}}
backbone: {name: tiny, params: {embedding_size: 16, widths: [4, 8, 8, 16]}}
head: {name: arcface}
train: {epochs: 1, batch_size: 8, threads: 1}
eval: [{name: synthetic, params: {num_identities: 4, images_per_identity: 2, num_pairs: 20, sizes: [112, 14]}}]
export: {onnx: true}
"""
EVAL = ["-p", "synthetic", "--set", "num_identities=4", "--set", "images_per_identity=2", "--set", "num_pairs=20",
        "--set", "sizes=[112,14]", "--no-progress"]
ENOSPC = os.strerror(errno.ENOSPC)  # "No space left on device"
EROFS = os.strerror(errno.EROFS)  # "Read-only file system"


def lrfr(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, starts):
    """Exit 1, an 'Error: ...' line that starts as given, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught exception
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"Error: {starts}"), result.output
    assert "Traceback" not in result.output
    return errors[0]


def temp_files(folder):
    """Hidden files: what an atomic write leaves if it does not clean up (a run directory has none of its own)."""
    return sorted(p.name for p in pathlib.Path(folder).rglob(".*"))


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(pathlib.Path(folder).iterdir())}


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(RECIPE))
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run: the model that 'lrfr eval' measures."""
    folder = tmp_path_factory.mktemp("run")
    (folder / "tiny.yaml").write_text(textwrap.dedent(RECIPE))
    result = lrfr("run", folder / "tiny.yaml", "--out", folder / "run", "--no-progress")
    assert result.exit_code == 0, result.output
    return folder / "run"


def _face(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:112, 0:112] / 112
    return np.stack([np.clip(128 + 90 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y)),
                             0, 255) for _ in range(3)], -1).astype(np.uint8)


def make_faces(root, identities=3, per_identity=2, size=112):
    for i in range(identities):
        (root / f"id{i}").mkdir(parents=True)
        for j in range(per_identity):
            image = Image.fromarray(_face(i * 100 + j))
            if size != 112:
                image = image.resize((size, size))
            image.save(root / f"id{i}" / f"{j}.png")
    return root


@pytest.fixture
def faces(tmp_path):
    return make_faces(tmp_path / "faces")


@pytest.fixture
def pack(tmp_path, faces):
    dst = tmp_path / "packed"
    pack_image_folder(faces, dst)
    return dst


@pytest.fixture
def full_disk(monkeypatch):
    """Names of files (e.g. {'checkpoint.pt'}) whose atomic writes land on a full disk: their temp file is a link to
    /dev/full, so the kernel itself fails every write with ENOSPC, whoever writes (Python or torch's C++ writer)."""
    if not os.access("/dev/full", os.W_OK):
        pytest.skip("needs /dev/full (Linux) for a real ENOSPC")
    names: set[str] = set()
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        fd, tmp = real(*args, **kwargs)
        if any(pathlib.Path(tmp).name.startswith(f".{name}.") for name in names):
            os.close(fd)
            os.unlink(tmp)
            os.symlink("/dev/full", tmp)
            fd = os.open(tmp, os.O_WRONLY)
        return fd, tmp

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return names


def make_read_only(monkeypatch, folder):
    """Every call that would create or write a file under ``folder`` fails with EROFS, as on a read-only mount."""
    folder = pathlib.Path(folder).resolve()

    def under(path):
        try:
            return pathlib.Path(os.path.abspath(os.fspath(path))).is_relative_to(folder)
        except TypeError:  # a file descriptor
            return False

    def refuse(path):
        raise OSError(errno.EROFS, EROFS, os.fspath(path))

    real_os_open, real_open, real_mkdir = os.open, builtins.open, os.mkdir
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def os_open(path, flags, *args, **kwargs):
        if flags & writes and under(path):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and under(file):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if under(path) and not os.path.isdir(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)
    monkeypatch.setattr(os, "mkdir", mkdir)


def chmod_read_only(folder):
    """chmod 0o555, or skip when that does not stop writes (root)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    try:
        (folder / ".probe").write_text("x")
    except PermissionError:
        return
    (folder / ".probe").unlink()
    folder.chmod(0o755)
    pytest.skip("running as root: chmod 0o555 does not stop writes (the simulated read-only test covers this; "
                "setpriv --bounding-set=-dac_override pytest ... runs this one as root)")


# ---------------------------------------------------------------------------------------------------------------------
# A. Failed writes are one line
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["checkpoint.pt", "metrics.json", "model.onnx"])
def test_run_on_a_full_disk_is_one_line_naming_the_file_and_the_resume_command(tmp_path, recipe, full_disk, name):
    full_disk.add(name)
    out = tmp_path / "run"
    line = assert_one_line_error(lrfr("run", recipe, "--out", out, "--no-progress"),
                                 f"cannot write {out / name}: {ENOSPC}. Free space on that disk, or write elsewhere "
                                 "(run with --out DIR on another disk)")
    assert line.endswith(f"; the run continues from its last checkpoint with: lrfr run --resume {out}.")
    assert not (out / name).exists() and temp_files(out) == []  # nothing half-written, no temp file


def test_run_whose_metrics_log_append_hits_a_full_disk_is_one_line(tmp_path, recipe, monkeypatch):
    """metrics.jsonl is appended to, not written atomically: the system names no file in that ENOSPC."""
    real = pathlib.Path.open

    def path_open(self, mode="r", *args, **kwargs):
        if self.name == "metrics.jsonl" and "a" in mode:
            return real(pathlib.Path("/dev/full"), mode, *args, **kwargs)
        return real(self, mode, *args, **kwargs)

    if not os.access("/dev/full", os.W_OK):
        pytest.skip("needs /dev/full (Linux) for a real ENOSPC")
    monkeypatch.setattr(pathlib.Path, "open", path_open)
    line = assert_one_line_error(lrfr("run", recipe, "--out", tmp_path / "run", "--no-progress"),
                                 f"cannot write a file (the system did not say which): {ENOSPC}.")
    assert "lrfr run --resume RUN_DIR" in line


def test_run_into_a_read_only_folder_is_one_line(tmp_path, recipe, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    make_read_only(monkeypatch, out)
    line = assert_one_line_error(lrfr("run", recipe, "--out", out, "--no-progress"),
                                 f"cannot write {out / 'run.log'}: {EROFS}. That file system is mounted read-only: "
                                 "write elsewhere (run with --out DIR on another disk).")
    assert "--resume" not in line  # nothing was started, so there is nothing to resume


def test_run_into_a_chmod_read_only_folder_is_one_line(tmp_path, recipe):
    out = tmp_path / "run"
    chmod_read_only(out)
    try:
        assert_one_line_error(lrfr("run", recipe, "--out", out, "--no-progress"), f"cannot write {out}")
    finally:
        out.chmod(0o755)


def test_eval_out_on_a_full_disk_is_one_line_and_writes_nothing(tmp_path, finished_run, full_disk):
    full_disk.add("eval.json")
    out = tmp_path / "eval"
    assert_one_line_error(lrfr("eval", finished_run, *EVAL, "--out", out),
                          f"cannot write {out / 'eval.json'}: {ENOSPC}. Free space on that disk, or write elsewhere "
                          "(pass --out DIR on another disk).")
    assert list(out.iterdir()) == []


def test_eval_out_into_a_read_only_folder_is_one_line(tmp_path, finished_run, monkeypatch):
    out = tmp_path / "eval"
    out.mkdir()
    make_read_only(monkeypatch, out)
    assert_one_line_error(lrfr("eval", finished_run, *EVAL, "--out", out),
                          f"cannot write {out / 'eval.json'}: {EROFS}. That file system is mounted read-only: write "
                          "elsewhere (pass --out DIR on another disk).")


def test_pack_onto_a_full_disk_keeps_the_old_pack_and_leaves_no_temp_file(tmp_path, faces, pack, full_disk):
    before = snapshot(pack)
    full_disk.add("train.rec")
    assert_one_line_error(lrfr("data", "pack", faces, pack, "--overwrite", "--no-progress"),
                          f"cannot write {pack / 'train.rec'}: {ENOSPC}. Free space on that disk, or write elsewhere "
                          "(pack into a folder on another disk).")
    assert snapshot(pack) == before  # the old pack as it was, and no temp file beside it


def test_pack_into_a_read_only_folder_is_one_line_and_leaves_nothing(tmp_path, faces, monkeypatch):
    dst = tmp_path / "packed"
    dst.mkdir()
    make_read_only(monkeypatch, dst)
    assert_one_line_error(lrfr("data", "pack", faces, dst, "--no-progress"),
                          f"cannot write {dst / 'train.rec'}: {EROFS}. That file system is mounted read-only: write "
                          "elsewhere (pack into a folder on another disk).")
    assert list(dst.iterdir()) == []


def test_pack_into_a_chmod_read_only_folder_is_one_line(tmp_path, faces):
    dst = tmp_path / "packed"
    chmod_read_only(dst)
    try:
        assert_one_line_error(lrfr("data", "pack", faces, dst, "--no-progress"),
                              f"cannot write {dst / 'train.rec'}: Permission denied. You may not write there")
    finally:
        dst.chmod(0o755)


def test_atomic_write_on_a_full_disk_raises_write_error_and_keeps_the_old_file(tmp_path, full_disk):
    target = tmp_path / "results.md"
    target.write_text("old\n")
    full_disk.add("results.md")
    with pytest.raises(WriteError) as info:
        atomic_write_text(target, "new\n" * 10_000)
    exc = info.value
    assert isinstance(exc, OSError) and isinstance(exc, LrfrError)  # callers catching OSError keep working
    assert (exc.errno, exc.filename) == (errno.ENOSPC, str(target))
    assert str(exc).startswith(f"cannot write {target}: {ENOSPC}.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.md"] and target.read_text() == "old\n"


def test_torch_save_reporting_a_failed_write_as_runtime_error_is_a_write_error(tmp_path, monkeypatch):
    """torch's own file writer says "unexpected pos ..." (seen on /dev/full), with no errno; other RuntimeErrors of
    torch.save are not disguised as write errors."""
    target = tmp_path / "checkpoint.pt"
    save_checkpoint(target, {"step": torch.tensor(1)})
    before = target.read_bytes()
    why = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"

    def failing_save(obj, f, *args, **kwargs):
        raise RuntimeError(why)

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100 << 30, 100 << 30, 0))
    with pytest.raises(WriteError, match=rf"^cannot write {target}: {ENOSPC} \(torch\.save: \[enforce fail at "
                                         r"inline_container\.cc:672\] \. unexpected pos 704 vs 598\)\. Free space"):
        save_checkpoint(target, {"step": torch.tensor(2)})
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]

    why = "cannot pickle a lambda"
    with pytest.raises(RuntimeError, match=why) as info:
        save_checkpoint(target, {})
    assert not isinstance(info.value, LrfrError) and target.read_bytes() == before


def test_permission_denied_reading_a_file_is_worded_as_reading_not_writing(tmp_path, monkeypatch):
    """EACCES also comes from reading: on an existing file we may not read, the CLI's message says so."""
    from lrfr_plugins.write_errors import message

    model = tmp_path / "model.onnx"
    model.write_bytes(b"x")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert message(model, errno.EACCES, "Permission denied", maybe_read=True) == (
        f"cannot read {model}: Permission denied. Fix its permissions, or run as a user who may read it.")
    assert message(tmp_path / "new.json", errno.EACCES, "Permission denied", maybe_read=True).startswith(
        f"cannot write {tmp_path / 'new.json'}: Permission denied. You may not write there")


# ---------------------------------------------------------------------------------------------------------------------
# B. A missing or broken .idx names 'lrfr data index', which fixes it
# ---------------------------------------------------------------------------------------------------------------------

def _delete(idx):
    idx.unlink()


def _garbage_line(idx):
    idx.write_text(idx.read_text() + "7\tnot-a-number\n")


def _non_ascii(idx):
    idx.write_bytes(b"\xff\xfe" + idx.read_bytes())


def _offset_past_the_end(idx):
    lines = idx.read_text().splitlines()
    key = lines[2].split("\t")[0]
    idx.write_text("\n".join(lines[:2] + [f"{key}\t{10 ** 9}"] + lines[3:]) + "\n")


def _duplicate_key(idx):
    lines = idx.read_text().splitlines()
    idx.write_text("\n".join(lines + [lines[0]]) + "\n")


def _truncated(idx):
    lines = idx.read_text().splitlines()  # keys 1..6, 0, 7..9: cut after record 0, which announces 7..9
    idx.write_text("\n".join(lines[:-2]) + "\n")


@pytest.mark.parametrize("damage", [_delete, _garbage_line, _non_ascii, _offset_past_the_end, _duplicate_key,
                                    _truncated], ids=lambda f: f.__name__.strip("_"))
def test_a_broken_idx_names_lrfr_data_index_which_rebuilds_it(pack, damage):
    rec, idx = pack / "train.rec", pack / "train.idx"
    good = idx.read_bytes()
    damage(idx)
    with pytest.raises(DataError) as info:
        TrainingSet(pack).close()
    assert f"lrfr data index {rec}" in str(info.value), str(info.value)
    assert "idx_path=None" not in str(info.value)

    result = lrfr("data", "index", rec, "--no-progress")
    assert result.exit_code == 0, result.output
    verb = "Wrote" if damage is _delete else "Replaced"
    assert result.output.startswith(f"{verb} {idx}: 10 records of {rec} ({len(good)} bytes).")
    assert idx.read_bytes() == good  # the same index the pack was written with
    ts = TrainingSet(pack)
    try:
        assert len(ts) == 6 and ts[5][1] == 2  # reads again, labels included
    finally:
        ts.close()
    assert sorted(p.name for p in pack.iterdir()) == ["property", "train.idx", "train.rec"]


def test_an_idx_elsewhere_is_named_with_idx_in_the_hint_and_the_command(pack, tmp_path):
    rec, other = pack / "train.rec", tmp_path / "indexes" / "mine.idx"
    with pytest.raises(DataError, match=rf"mine\.idx: index file not found .* Rebuild it with: lrfr data index {rec} "
                                        rf"--idx {other} "):
        RecordReader(rec, other)
    other.parent.mkdir()
    result = lrfr("data", "index", pack, "--idx", other, "--no-progress")  # the pack folder stands for its train.rec
    assert result.exit_code == 0 and result.output.startswith(f"Wrote {other}: 10 records of {rec}"), result.output
    assert other.read_bytes() == (pack / "train.idx").read_bytes()


def test_data_index_of_a_missing_rec_is_one_line(tmp_path):
    assert_one_line_error(lrfr("data", "index", tmp_path / "nope.rec"),
                          f"{tmp_path / 'nope.rec'}: no such RecordIO file")


# ---------------------------------------------------------------------------------------------------------------------
# C. Temp files of an interrupted pack
# ---------------------------------------------------------------------------------------------------------------------

def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_pack_removes_temp_files_left_by_a_killed_pack_and_keeps_other_hidden_files(tmp_path, faces):
    dst = tmp_path / "packed"
    dst.mkdir()
    dead, host = _dead_pid(), atomic._host()
    leftovers = [f".{name}.lrfr-tmp-{host}-{dead}-k{i}ll9xyz" for i, name in enumerate(("train.rec", "train.idx",
                                                                                        "property"))]
    others = [".train.rec.backup", ".hidden", "train.rec.lrfr-tmp-notes.txt",  # the user's files
              f".model.onnx.lrfr-tmp-{host}-{dead}-abcd1234",  # a temp name, but of a file pack never writes
              f".train.rec.lrfr-tmp-{host}-{os.getppid()}-live1234",  # its writer still runs
              f".train.rec.lrfr-tmp-otherbox-{dead}-abcd1234"]  # another machine's (a shared disk)
    for name in leftovers + others:
        (dst / name).write_bytes(b"partial")
    result = lrfr("data", "pack", faces, dst, "--no-progress")
    assert result.exit_code == 0, result.output
    assert f"Removed 3 temp file(s) left by an interrupted earlier pack: {', '.join(sorted(leftovers))}." \
        in result.output
    assert "Warning: kept .train.rec.lrfr-tmp-otherbox-" in result.output
    assert sorted(p.name for p in dst.iterdir()) == sorted(others + ["property", "train.idx", "train.rec"])


def test_data_index_removes_temp_files_of_an_interrupted_index(pack):
    stale = pack / f".train.idx.lrfr-tmp-{atomic._host()}-{_dead_pid()}-abcd1234"
    stale.write_text("0\t0\n")
    result = lrfr("data", "index", pack / "train.rec", "--no-progress")
    assert result.exit_code == 0, result.output
    assert f"Removed temp file(s) of an interrupted earlier index: {stale.name}." in result.output
    assert sorted(p.name for p in pack.iterdir()) == ["property", "train.idx", "train.rec"]


def test_kill_9_during_a_real_pack_leaves_only_its_temp_files_which_the_next_pack_removes(tmp_path):
    src = make_faces(tmp_path / "faces", identities=30, per_identity=40, size=100)  # 1,200 images: seconds of work
    dst = tmp_path / "packed"
    child = subprocess.Popen([sys.executable, "-m", "lrfr_plugins.cli", "data", "pack", str(src), str(dst),
                              "--no-progress"], cwd=ROOT, env={**os.environ, "LRFR_LOAD_PLUGINS": ""},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (dst.is_dir() and any(p.name.startswith(".train.rec.") and p.stat().st_size > 0
                                        for p in dst.iterdir())):  # killed as soon as images reach train.rec
            assert child.poll() is None and time.monotonic() < deadline, "the pack ended before it wrote anything"
            time.sleep(0.02)
        assert child.poll() is None, "the pack finished before it could be killed; give it more images"
    finally:
        child.kill()  # SIGKILL: no clean-up runs
        child.wait()
    left = sorted(p.name for p in dst.iterdir())
    assert [name.split(".lrfr-tmp-")[0] for name in left] == [".train.idx", ".train.rec"], left
    assert all(f".lrfr-tmp-{atomic._host()}-{child.pid}-" in name for name in left)
    assert (dst / left[1]).stat().st_size > 0

    summary = pack_image_folder(src, dst)
    assert sorted(summary.removed_temps) == left and summary.images == 1200
    assert sorted(p.name for p in dst.iterdir()) == ["property", "train.idx", "train.rec"]


def test_atomically_written_files_keep_the_mode_a_plain_write_would_give(tmp_path):
    """mkstemp makes its file owner-only; a pack, checkpoint or model.onnx others should read must not stay so."""
    from lrfr_plugins.atomic import atomic_write_text

    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.txt", "x")
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644
        (tmp_path / "private.txt").write_text("x")
        os.chmod(tmp_path / "private.txt", 0o600)
        atomic_write_text(tmp_path / "private.txt", "y")  # a replaced file keeps its own mode
        assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(umask)
