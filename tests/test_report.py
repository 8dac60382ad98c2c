"""`lrfr report`: the study's table layout from run folders, three formats, readable plots, clear errors."""

import csv
import io
import json

import pytest

from lrfr_plugins.errors import RunDirError
from lrfr_plugins.report import FORMATS, make_report


def lfw(acc):
    return {"protocol": "lfw", "preset": "lozhkina",
            "rows": [{"resolution": f"{s}px", "accuracy": a, "std": 0.01} for s, a in zip((112, 56, 28, 14, 7), acc)],
            "results": {str(s): {"accuracy": a, "std": 0.01, "threshold": 0.3} for s, a in zip((112, 56, 28, 14, 7), acc)},
            "curves": {"roc:112": {"fpr": [0, 0.1, 1], "tpr": [0, 0.8, 1]}, "roc:7": {"fpr": [0, 0.5, 1],
                                                                                   "tpr": [0, 0.6, 1]}}}


def qmul(acc):
    return {"protocol": "qmul-survface", "preset": "lozhkina", "rows": [{"accuracy": acc}],
            "results": {"verification": {"accuracy": acc, "std": 0.02, "auc": 0.7, "tar@far=0.1": 0.3}},
            "curves": {"roc:verification": {"fpr": [0, 0.3, 1], "tpr": [0, 0.6, 1]}}}


def scface(r1):
    return {"protocol": "scface", "rows": [],
            "results": {f"d{d}": {"rank1": r, "n_probes": 650} for d, r in zip((1, 2, 3), r1)},
            "curves": {f"cmc:d{d}": {"rank": [1, 2, 3], "rate": [r, min(1, r + 0.1), 1.0]} for d, r in zip((1, 2, 3), r1)}}


def write_run(path, name, evaluations):
    path.mkdir()
    (path / "metrics.json").write_text(json.dumps({"run": name, "eval": evaluations}))
    return path


def test_the_studys_rows_one_column_per_run_best_in_bold(tmp_path):
    a = write_run(tmp_path / "a", "arcface", [lfw([0.99, 0.98, 0.95, 0.80, 0.60]), qmul(0.60), scface([0.2, 0.5, 0.7])])
    b = write_run(tmp_path / "b", "approach2", [scface([0.3, 0.4, 0.8]), lfw([0.98, 0.97, 0.96, 0.90, 0.75]),
                                                qmul(0.70), {"protocol": "cfp", "results": {"x": {"auc": 0.9}}}])
    runs, rows, written = make_report([a, b], tmp_path / "out")
    assert [r.name for r in runs] == ["arcface", "approach2"]
    assert [row.label for row in rows] == ["LFW 112x112", "LFW 56x56", "LFW 28x28", "LFW 14x14", "LFW 7x7",
                                           "QMUL-SurvFace", "SCface d1", "SCface d2", "SCface d3", "cfp"]
    assert rows[4].cells == {"arcface": (0.60, 0.01), "approach2": (0.75, 0.01)}
    assert rows[-1].metric == "auc" and rows[-1].cells == {"approach2": (0.9, None)}
    md = FORMATS["md"](runs, rows)
    assert "| LFW 7x7 (accuracy) | 0.6000 ± 0.0100 | **0.7500 ± 0.0100** |" in md
    assert "| SCface d1 (rank1) | 0.2000 | **0.3000** |" in md and "| cfp (auc) | - | 0.9000 |" in md
    table = list(csv.reader(io.StringIO(FORMATS["csv"](runs, rows))))
    assert table[0] == ["row", "protocol", "key", "metric", "arcface", "arcface std", "approach2", "approach2 std"]
    assert table[6] == ["QMUL-SurvFace", "qmul-survface", "verification", "accuracy", "0.600000", "0.020000",
                        "0.700000", "0.020000"]
    assert r"\textbf{0.7500 $\pm$ 0.0100}" in FORMATS["latex"](runs, rows)
    assert written == ["report.md", "report.csv", "report.tex", "accuracy_vs_resolution.png", "roc_lfw.png",
                       "roc_qmul-survface.png", "cmc_scface.png"]
    for name in written[3:]:
        assert (tmp_path / "out" / name).read_bytes()[:4] == b"\x89PNG"


def test_synthetic_stand_ins_fill_the_same_rows_and_names_are_unique(tmp_path):
    synth = {**lfw([0.9] * 5), "protocol": "synthetic"}
    a = write_run(tmp_path / "a", "demo", [synth])
    b = write_run(tmp_path / "b", "demo", [synth])
    runs, rows, _ = make_report([a, b], None)
    assert [r.name for r in runs] == ["demo", "demo (b)"] and rows[0].label == "synthetic pairs 112x112"


def test_bad_run_folders_are_named(tmp_path, lrfr):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match=r"empty: no metrics.json .* or eval.json"):
        make_report([tmp_path / "empty"], None)
    write_run(tmp_path / "noeval", "x", [])
    with pytest.raises(RunDirError, match=r"noeval: the run evaluated no protocol"):
        make_report([tmp_path / "noeval"], None)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{")
    result = lrfr("report", str(tmp_path / "broken"))
    assert result.returncode == 1 and "broken/metrics.json: cannot read it as JSON" in result.stderr


def test_merge_seeds_gives_the_mean_and_the_spread_across_runs(tmp_path, lrfr):
    runs = [write_run(tmp_path / f"a{i}", "arcface", [lfw(acc), qmul(q), scface(r)]) for i, (acc, q, r) in
            enumerate([([0.90, 0.88, 0.80, 0.70, 0.60], 0.60, [0.2, 0.5, 0.7]),
                       ([0.94, 0.90, 0.84, 0.74, 0.62], 0.64, [0.4, 0.5, 0.9])])]
    other = write_run(tmp_path / "b", "approach2", [lfw([0.9, 0.9, 0.9, 0.9, 0.9]), qmul(0.7), scface([0.1, 0.1, 0.1])])
    merged, rows, written = make_report([*runs, other], tmp_path / "out", merge=True)
    assert [r.name for r in merged] == ["arcface", "approach2"]
    lfw112 = rows[0].cells["arcface"]
    assert lfw112[0] == pytest.approx(0.92) and lfw112[1] == pytest.approx(0.0282843, abs=1e-6)  # sample std
    assert rows[0].cells["approach2"] == (0.9, 0.01)  # a single run keeps its protocol's own spread
    assert rows[5].cells["arcface"][0] == pytest.approx(0.62)  # QMUL
    assert rows[6].cells["arcface"] == (pytest.approx(0.3), pytest.approx(0.1414214, abs=1e-6))  # SCface d1 rank-1
    assert merged[0].evaluations["scface"]["curves"]["cmc:d1"]["rate"] == pytest.approx([0.3, 0.4, 1.0])
    assert "accuracy_vs_resolution.png" in written
    # Without merging, the same name appears twice, told apart by folder.
    separate, _, _ = make_report([*runs, other], None)
    assert [r.name for r in separate] == ["arcface", "arcface (a1)", "approach2"]
    result = lrfr("report", *map(str, [*runs, other]), "--merge-seeds", "--out", str(tmp_path / "cli"))
    assert result.returncode == 0, result.stderr
    assert "| LFW 112x112 (accuracy) | **0.9200 ± 0.0283** | 0.9000 ± 0.0100 |" in result.stdout


def test_open_set_and_closed_set_identification_get_their_own_headline_rows(tmp_path):
    both = qmul(0.6)
    both["results"]["identification"] = {"tpir@fpir=0.3": 0.21, "tpir@fpir=0.2": 0.15, "tpir@fpir=0.1": 0.08,
                                         "auc_tpir_fpir": 0.12, "rank": 20, "n_mated": 5, "n_unmated": 9}
    tiny = {"protocol": "tinyface", "rows": [], "results": {"identification": {"rank1": 0.41, "rank5": 0.5,
                                                                               "map": 0.3}}}
    a = write_run(tmp_path / "a", "arcface", [both, tiny])
    runs, rows, _ = make_report([a], tmp_path / "out")
    assert [(row.label, row.metric) for row in rows] == [
        ("QMUL-SurvFace verification", "accuracy"),
        ("QMUL-SurvFace identification", "tpir@fpir=0.3"), ("QMUL-SurvFace identification", "tpir@fpir=0.2"),
        ("QMUL-SurvFace identification", "tpir@fpir=0.1"), ("QMUL-SurvFace identification", "auc_tpir_fpir"),
        ("tinyface", "rank1")]
    assert rows[1].cells == {"arcface": (0.21, None)} and rows[-1].cells == {"arcface": (0.41, None)}
    assert "| QMUL-SurvFace identification (tpir@fpir=0.1) | 0.0800 |" in FORMATS["md"](runs, rows)
