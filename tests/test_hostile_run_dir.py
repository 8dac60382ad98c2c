"""What the toolkit survives around a run directory: ``--overwrite`` that fails or is interrupted loses nothing,
two writers of one directory are refused, a lock left by a killed process is taken over, and a checkpoint that does
not fit its recipe is one clear error (issue 14, items 1 and 3 and part of 6)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner

from lrfr_plugins.cli import main
from lrfr_plugins.engine.trainer import Trainer
from lrfr_plugins.run_dir import RunLock, finish_replacement, is_run_file, prepare_run_dir, staging_dir

RECIPE = """
lrfr: 1
name: r
seed: {seed}
data: {data}
backbone: {{name: tiny, params: {{embedding_size: 16, widths: [4, 8, 8, 16]}}}}
head: {{name: arcface}}
train: {{epochs: 2, batch_size: 4, threads: 1}}
eval: []
export: {{onnx: {onnx}}}
"""
SYNTHETIC = "{name: synthetic, params: {num_identities: 4, images_per_identity: 2}}"


def write_recipe(tmp_path, name="r.yaml", seed=0, data=SYNTHETIC, onnx="false"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(RECIPE.format(seed=seed, data=data, onnx=onnx)))
    return path


def lrfr(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def old_run(tmp_path):
    """A finished run (with model.onnx) and a file of the user's beside it."""
    out = tmp_path / "runs" / "r"
    result = lrfr("run", write_recipe(tmp_path, "old.yaml", onnx="true"), "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    (out / "notes.txt").write_text("my notes\n")
    return out


def test_an_overwrite_whose_checks_fail_leaves_the_old_run_and_other_files_as_they_were(tmp_path, old_run):
    before = snapshot(old_run)
    bad = write_recipe(tmp_path, "bad.yaml", data="{name: image-folder, params: {root: %s}}" % (tmp_path / "nowhere"))
    result = lrfr("run", bad, "--out", old_run, "--overwrite", "--no-progress")
    assert result.exit_code == 1 and "nothing was trained" in result.output
    assert snapshot(old_run) == before  # checkpoint, model.onnx, metrics and notes.txt all still there
    assert not staging_dir(old_run).exists() and sorted(os.listdir(old_run.parent)) == ["r"]


def test_an_overwrite_replaces_the_run_when_it_finishes_and_keeps_the_users_files(tmp_path, old_run):
    before = snapshot(old_run)
    result = lrfr("run", write_recipe(tmp_path, "new.yaml", seed=7), "--out", old_run, "--overwrite", "--no-progress")
    assert result.exit_code == 0, result.output
    after = snapshot(old_run)
    assert after["notes.txt"] == b"my notes\n"
    assert "model.onnx" not in after  # the old run's export would not belong to the new checkpoint
    assert b"seed: 7" in after["recipe.resolved.yaml"] and after["checkpoint.pt"] != before["checkpoint.pt"]
    assert sorted(os.listdir(old_run.parent)) == ["r"]  # no r.new, no .r.replaced, no lock left


def test_an_interrupted_overwrite_keeps_the_old_run_and_resumes_into_its_place(tmp_path, old_run, monkeypatch):
    before = snapshot(old_run)
    original = Trainer.train_step

    def interrupt_in_second_epoch(self, *args, **kwargs):
        if self.step == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", interrupt_in_second_epoch)
    result = lrfr("run", write_recipe(tmp_path, "new.yaml", seed=7), "--out", old_run, "--overwrite", "--no-progress")
    pending = staging_dir(old_run)
    assert result.exit_code == 130 and f"lrfr run --resume {pending}" in result.output
    assert f"It replaces {old_run} when it finishes" in result.output
    assert snapshot(old_run) == before and (pending / "checkpoint.pt").exists()
    monkeypatch.setattr(Trainer, "train_step", original)

    refused = lrfr("run", "--resume", old_run, "--no-progress")  # the old run is not what the user was training
    assert refused.exit_code == 1 and f"an unfinished replacement of this run waits in {pending}" in refused.output

    resumed = lrfr("run", "--resume", pending, "--no-progress")
    assert resumed.exit_code == 0, resumed.output
    assert f"Run directory: {old_run}" in resumed.output
    after = snapshot(old_run)
    assert b"seed: 7" in after["recipe.resolved.yaml"] and after["notes.txt"] == b"my notes\n"
    assert not pending.exists()


def test_a_second_writer_of_a_run_directory_is_refused_and_changes_nothing(tmp_path, old_run):
    before = snapshot(old_run)
    with RunLock(old_run):  # another lrfr run holds it
        for args in (["--resume", old_run], [write_recipe(tmp_path, "new.yaml"), "--out", old_run, "--overwrite"]):
            result = lrfr("run", *args, "--no-progress")
            assert result.exit_code == 1, result.output
            assert f"in use by another lrfr run (process {os.getpid()} on " in result.output
    assert snapshot(old_run) == before and not staging_dir(old_run).exists()


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_message(tmp_path):
    out = tmp_path / "runs" / "r"
    holder = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, pathlib, signal
        from lrfr_plugins.run_dir import RunLock
        RunLock(pathlib.Path({str(out)!r})).acquire()
        os.kill(os.getpid(), signal.SIGKILL)
        """)], capture_output=True)
    assert holder.returncode == -signal.SIGKILL
    assert (out.parent / ".r.lock").exists()
    result = lrfr("run", write_recipe(tmp_path), "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "took over the lock of" in result.output and "which is no longer running" in result.output
    assert not (out.parent / ".r.lock").exists()


def test_resuming_a_checkpoint_that_does_not_fit_its_recipe_is_one_error(tmp_path, old_run):
    resolved = old_run / "recipe.resolved.yaml"
    resolved.write_text(resolved.read_text().replace("embedding_size: 16", "embedding_size: 32"))
    result = lrfr("run", "--resume", old_run, "--no-progress")
    assert result.exit_code == 1
    assert "checkpoint.pt: does not fit the recipe in" in result.output and "Traceback" not in result.output


def test_a_replacement_interrupted_between_its_two_renames_completes_on_the_next_try(tmp_path):
    target = tmp_path / "r"
    target.mkdir()
    (target / "checkpoint.pt").write_bytes(b"old")
    (target / "notes.txt").write_text("mine")
    new = prepare_run_dir(target, overwrite=True, resume=False)
    (new / "checkpoint.pt").write_bytes(b"new")
    os.rename(target, tmp_path / ".r.replaced")  # the crash came right after the first rename
    assert finish_replacement(new) == target
    assert (target / "checkpoint.pt").read_bytes() == b"new" and (target / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["r"]


def test_run_files_are_told_apart_from_the_users_files():
    for name in ("checkpoint.pt", "checkpoint-rank3.pt", "run-rank1.log", ".checkpoint.pt.k2j3h_", ".metrics.json.x1",
                 "tensorboard", "model.onnx"):
        assert is_run_file(name), name
    for name in ("notes.txt", ".notes", "model.onnx.backup", "my.checkpoint.pt", ".hidden.txt.bak"):
        assert not is_run_file(name), name


def test_two_real_runs_into_one_directory_one_is_refused_and_the_other_finishes_whole(tmp_path):
    out = tmp_path / "runs" / "r"
    slow = write_recipe(tmp_path, "slow.yaml").read_text().replace("epochs: 2", "epochs: 40")
    (tmp_path / "slow.yaml").write_text(slow)
    first = subprocess.Popen([sys.executable, "-m", "lrfr_plugins.cli", "run", str(tmp_path / "slow.yaml"), "--out",
                              str(out), "--overwrite", "--no-progress"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lock = out.parent / ".r.lock"
    try:
        for _ in range(600):  # wait (up to a minute) until the first run holds the directory
            if lock.exists() and lock.read_text().startswith(f"process {first.pid} "):
                break
            assert first.poll() is None, first.communicate()
            time.sleep(0.1)
        second = lrfr("run", write_recipe(tmp_path, "new.yaml", seed=9), "--out", out, "--overwrite", "--no-progress")
        assert second.exit_code == 1 and f"in use by another lrfr run (process {first.pid} on " in second.output
    finally:
        stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    assert b"seed: 0" in (out / "recipe.resolved.yaml").read_bytes()  # the first run's recipe, with its checkpoint
    assert (out / "run.log").read_text().count("lrfr-plugins ") == 1  # one run logged, not two interleaved


def dead_pid():
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_resume_after_a_kill_mid_write_drops_the_cut_log_line_and_the_dead_writers_temp_file(tmp_path, old_run):
    from lrfr_plugins.atomic import temp_prefix

    with open(old_run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 9, "loss": 1.2')  # the append a kill -9 cut short
    leftover = old_run / (temp_prefix(old_run / "checkpoint.pt").replace(f"-{os.getpid()}-", f"-{dead_pid()}-")
                          + "abc123")
    leftover.write_bytes(b"half a checkpoint")
    result = lrfr("run", "--resume", old_run, "--no-progress")
    assert result.exit_code == 0, result.output
    assert f"removed 1 temporary file(s) of an earlier run that was killed while writing: {leftover.name}" \
        in result.output
    assert not leftover.exists() and (old_run / "notes.txt").exists()
    lines = (old_run / "metrics.jsonl").read_text().splitlines()
    assert lines and all(__import__("json").loads(line)["step"] <= 4 for line in lines)


def test_a_run_log_that_can_no_longer_be_written_stops_with_one_line(capsys):
    from lrfr_plugins.runner import _RunLog, log

    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full for a real 'no space left on device'")
    handler = _RunLog("/dev/full", encoding="utf-8")
    log.addHandler(handler)
    try:
        log.warning("first")
        log.warning("second")
    finally:
        log.removeHandler(handler)
        handler.close()
    err = capsys.readouterr().err
    assert err.count("cannot write /dev/full any more") == 1 and "No space left on device" in err
    assert "Traceback" not in err and "Logging error" not in err
