"""eval/reproduce.py: the founding study's comparison in one command.

The synthetic suite's --quick variant must run every method and fill every cell of the study's table; the paper suite
must run the study's recipes on data in the real layouts (an InsightFace pack, LFW, QMUL-SurvFace, SCface), here tiny
copies with a 2-step budget.
"""

import csv
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import ROOT
from test_protocol_lfw import write_lfw
from test_protocol_qmul_survface import make_fixture as write_qmul
from test_protocol_scface import make_scface

from lrfr_plugins.formats.packing import pack_image_folder
from lrfr_plugins.formats.images import encode_image
from lrfr_plugins.synthetic import SyntheticFaceGenerator

SCRIPT = ROOT / "eval" / "reproduce.py"
COLUMNS = ["cosface", "sphereface", "arcface", "octuplet", "derivenet", "adaface", "approach1", "approach2",
           "approach2-bounded", "arcface-hr", "lr-distill"]


def reproduce(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), *args, "--no-progress"]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def read_table(report: pathlib.Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(report / "report.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [c for c in rows[0] if c not in ("row", "protocol", "key", "metric") and not c.endswith(" std")], rows


@pytest.mark.slow
def test_quick_synthetic_suite_runs_every_method_and_fills_every_cell(tmp_path):
    runs, report = tmp_path / "runs", tmp_path / "report"
    result = reproduce("--suite", "synthetic", "--quick", "--seeds", "0", "--runs", str(runs), "--out", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    columns, rows = read_table(report)
    assert columns == COLUMNS  # the study's order, then the variants and the extension
    assert [r["row"] for r in rows] == [f"synthetic pairs {s}x{s}" for s in (112, 56, 28, 14, 7)] + [
        "synthetic surveillance", "synthetic SCface d1", "synthetic SCface d2", "synthetic SCface d3"]
    for row in rows:
        assert all(0.0 <= float(row[c]) <= 1.0 for c in columns), row
    for name in ("report.md", "report.tex", "accuracy_vs_resolution.png", "cmc_synthetic-scface.png",
                 "gain_over_arcface.png", "suite.json"):
        assert (report / name).stat().st_size > 0, name
    gains = (report / "gains.md").read_text().splitlines()
    others = [c for c in COLUMNS if c != "arcface"]
    assert gains[0].split(" | ")[1:] == [*others[:-1], others[-1] + " |"]
    assert len(gains) == 2 + len(rows)
    summary = json.loads((report / "suite.json").read_text())
    assert set(summary["seconds"]) == {f"{m}/seed0" for m in COLUMNS}

    # The fine-tuners start from the ArcFace run of their seed, and train no margin head of their own.
    octuplet = yaml.safe_load((runs / "octuplet" / "seed0" / "recipe.resolved.yaml").read_text())
    assert octuplet["backbone"]["params"]["weights"] == str(runs / "arcface" / "seed0" / "checkpoint.pt")
    metrics = json.loads((runs / "derivenet" / "seed0" / "metrics.json").read_text(),
                         parse_constant=lambda name: pytest.fail(f"metrics.json holds {name}, which is not JSON"))
    assert metrics["train"]["steps"] == 0 and metrics["train"]["final_loss"] is None
    assert metrics["finetune"][0]["steps"] == 12
    # The study's heads at its settings; the variant differs from Approach 2 only in its margin mapping.
    heads = {m: yaml.safe_load((runs / m / "seed0" / "recipe.resolved.yaml").read_text())["head"]["params"]
             for m in ("arcface", "approach2", "approach2-bounded")}
    assert (heads["arcface"]["scale"], heads["arcface"]["margin"]) == (64.0, 0.35)
    assert (heads["approach2"]["mapping"], heads["approach2-bounded"]["mapping"]) == ("reciprocal", "bounded")
    # arcface-hr is ArcFace without cross-resolution batches; lr-distill distils it, label-free.
    hr = yaml.safe_load((runs / "arcface-hr" / "seed0" / "recipe.resolved.yaml").read_text())
    assert hr["degradations"] == [] and hr["head"]["params"] == heads["arcface"]
    distill = json.loads((runs / "lr-distill" / "seed0" / "metrics.json").read_text())
    assert distill["finetune"][0]["finetuner"] == "distill" and distill["finetune"][0]["steps"] == 12
    assert distill["eval_before_finetune"][0]["protocol"] == "synthetic"
    distill_recipe = yaml.safe_load((runs / "lr-distill" / "seed0" / "recipe.resolved.yaml").read_text())
    assert distill_recipe["backbone"]["params"]["weights"] == str(runs / "arcface-hr" / "seed0" / "checkpoint.pt")

    # Running the same command again keeps every finished run and only rewrites the report.
    again = reproduce("--suite", "synthetic", "--quick", "--seeds", "0", "--runs", str(runs), "--out", str(report),
                      timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("is finished; kept") == len(COLUMNS)


def write_insightface_pack(dst: pathlib.Path, identities: int = 10, per_identity: int = 8) -> None:
    """A small CASIA-WebFace stand-in in InsightFace's layout (train.rec/.idx/property), via `lrfr data pack`'s code."""
    folder = dst.parent / "faces_folder"
    faces = SyntheticFaceGenerator(0, "train").render(np.repeat(np.arange(identities), per_identity),
                                                      np.tile(np.arange(per_identity), identities))
    for i, face in enumerate(faces):
        path = folder / f"id{i // per_identity:03d}" / f"{i % per_identity}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_image(face, quality=95))
    pack_image_folder(folder, dst, progress=False)


@pytest.fixture(scope="module")
def paper_data(tmp_path_factory):
    """DIR with the layout the study's recipes expect under /data, each part tiny."""
    data = tmp_path_factory.mktemp("data")
    write_insightface_pack(data / "faces_webface_112x112")
    write_lfw(data, folds=10, per_kind=1)  # data/lfw_crop/<Name>/..., data/pairs.txt
    (data / "lfw").mkdir()
    shutil.move(data / "pairs.txt", data / "lfw" / "pairs.txt")
    write_qmul(data)
    make_scface(data / "SCface")
    return data


SMALL = ["--set", "backbone.name=tiny", "--set", "train.batch_size=8", "--set", "train.num_workers=0",
         "--set", "export.onnx=false"]


@pytest.mark.slow
def test_paper_suite_runs_the_study_recipes_on_the_real_layouts(tmp_path, paper_data):
    runs, report = tmp_path / "runs", tmp_path / "report"
    result = reproduce("--suite", "paper", "--data-root", str(paper_data), "--seeds", "0", "--max-steps", "2",
                       "--jobs", "2", "--runs", str(runs), "--out", str(report), *SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    columns, rows = read_table(report)
    assert columns == COLUMNS
    assert [r["row"] for r in rows] == [f"LFW {s}x{s}" for s in (112, 56, 28, 14, 7)] + [
        "QMUL-SurvFace", "SCface d1", "SCface d2", "SCface d3", "SCface d1-night", "SCface d2-night"]
    assert all(row[c] != "" for row in rows for c in columns)
    arcface = json.loads((runs / "arcface" / "seed0" / "metrics.json").read_text())
    assert arcface["train"]["steps"] == 2 and arcface["train"]["num_classes"] == 10  # from the pack's header
    resolved = yaml.safe_load((runs / "octuplet" / "seed0" / "recipe.resolved.yaml").read_text())
    assert resolved["data"]["params"]["root"] == str(paper_data / "faces_webface_112x112")
    assert resolved["finetune"][0]["params"]["steps"] == 2
    assert resolved["eval"][0]["params"]["pairs"] == str(paper_data / "lfw" / "pairs.txt")


@pytest.mark.slow
def test_paper_suite_names_what_is_missing_before_training(tmp_path, paper_data):
    data = tmp_path / "data"
    shutil.copytree(paper_data, data)
    shutil.rmtree(data / "SCface")
    result = reproduce("--suite", "paper", "--data-root", str(data), "--seeds", "0", "--max-steps", "2",
                       "--methods", "cosface", "--runs", str(tmp_path / "runs"), *SMALL, timeout=300)
    assert result.returncode != 0
    assert "SCface" in result.stderr and "eval.2.params.root" in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "runs" / "cosface" / "seed0" / "checkpoint.pt").exists()


def test_arguments_are_checked():
    result = reproduce("--suite", "paper")
    assert result.returncode == 2 and "--data-root" in result.stderr
    result = reproduce("--suite", "synthetic", "--max-steps", "3")
    assert result.returncode == 2 and "--suite paper" in result.stderr
