"""``lrfr report``: the founding study's comparison table (one column per run) and its plots, from run folders.

Rows follow the study: LFW at 112/56/28/14/7 px, QMUL-SurvFace, SCface distances 1-3 (1 is the farthest). Each
row family takes the first protocol a run has among its members, so the synthetic stand-ins fill the same rows
on built-in data (their row names say so). Other protocols get rows of their own at the end.

With ``merge=True`` runs that share a recipe name (one method trained with several seeds) become one column: each
cell is the mean over those runs and its +- the sample standard deviation across them, which is the spread that
matters when methods are compared (the protocol's own fold spread measures only the test set's sampling).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import pathlib
from typing import Any

import numpy as np

from .atomic import atomic_write_text
from .errors import RunDirError
from .plots import plot_curve_panels, plot_resolution_series, resolution_points

#: Row families in the study's order: (protocols in preference order, display name per protocol, metric).
FAMILIES = (
    (("lfw", "bin", "synthetic"), {"lfw": "LFW", "bin": "bin", "synthetic": "synthetic pairs"}, "accuracy"),
    (("qmul-survface", "synthetic-survface"), {"qmul-survface": "QMUL-SurvFace",
                                               "synthetic-survface": "synthetic surveillance"}, "accuracy"),
    (("scface", "synthetic-scface"), {"scface": "SCface", "synthetic-scface": "synthetic SCface"}, "rank1"),
)
METRICS = ("accuracy", "rank1", "auc")
#: Open-set identification's headline (QMUL-SurvFace's challenge): TPIR at rank 20 for three FPIRs, and the area.
OPEN_SET_METRICS = ("tpir@fpir=0.3", "tpir@fpir=0.2", "tpir@fpir=0.1", "auc_tpir_fpir")


@dataclasses.dataclass
class Run:
    name: str
    path: pathlib.Path
    evaluations: dict[str, dict[str, Any]]  # protocol name -> ProtocolResult dict


@dataclasses.dataclass
class Row:
    label: str
    protocol: str
    key: str
    metric: str
    cells: dict[str, tuple[float, float | None]]  # run name -> (value, std)


def load_runs(paths: list[pathlib.Path], *, merge: bool = False) -> list[Run]:
    """Runs of ``lrfr run`` (metrics.json) or folders of ``lrfr eval --out`` (eval.json); names made unique, or
    with ``merge`` the runs of one name averaged into one (see :func:`merge_runs`)."""
    runs: list[Run] = []
    for path in paths:
        path = pathlib.Path(path)
        metrics, single = path / "metrics.json", path / "eval.json"
        if metrics.is_file():
            data = _read_json(metrics, "a metrics.json of 'lrfr run'")
            _check_metrics(data, metrics)
            name, evaluations = data.get("run") or path.name, data["eval"]
        elif single.is_file():
            data = _read_json(single, "an eval.json of 'lrfr eval --out'")
            _check_eval_json(data, single)
            name, evaluations = (data.get("model") or {}).get("recipe") or path.name, [data]
        else:
            raise RunDirError(f"{path}: no metrics.json (from 'lrfr run') or eval.json (from 'lrfr eval --out'). "
                              "Give run directories.")
        if not evaluations:
            raise RunDirError(f"{path}: the run evaluated no protocol, so it has nothing to report. Add an 'eval' "
                              "section to its recipe or run 'lrfr eval' on it.")
        taken = {r.name for r in runs}
        if name in taken and not merge:
            name = f"{name} ({path.name})" if f"{name} ({path.name})" not in taken else str(path)
        by_protocol: dict[str, dict[str, Any]] = {}
        for ev in evaluations:  # several .bin sets in one run: bin, then bin:cfp_fp, ...
            key = ev["protocol"]
            if key in by_protocol:
                key = f"{key}:{(ev.get('settings') or {}).get('set') or len(by_protocol)}"
            by_protocol[key] = ev
        runs.append(Run(name, path, by_protocol))
    if merge:
        groups: dict[str, list[Run]] = {}
        for run in runs:
            groups.setdefault(run.name, []).append(run)
        return [merge_runs(group) if len(group) > 1 else group[0] for group in groups.values()]
    return runs


def merge_runs(runs: list[Run]) -> Run:
    """One run from several of the same method: every metric the mean over the runs that have it, ``std`` the sample
    standard deviation across them; resolution rows likewise; CMC curves averaged rank by rank and ROC curves
    averaged on the first run's false-accept rates (TPR interpolated on a log scale)."""
    merged: dict[str, dict[str, Any]] = {}
    for protocol in dict.fromkeys(p for r in runs for p in r.evaluations):
        evals = [r.evaluations[protocol] for r in runs if protocol in r.evaluations]
        results: dict[str, dict[str, Any]] = {}
        for key in dict.fromkeys(k for ev in evals for k in ev.get("results", {})):
            per_run = [ev["results"][key] for ev in evals if key in ev.get("results", {})]
            samples = {m: [float(r[m]) for r in per_run if _is_number(r.get(m))]
                       for m in dict.fromkeys(m for r in per_run for m, v in r.items() if _is_number(v) and m != "std")}
            values: dict[str, Any] = {m: float(np.mean(v)) for m, v in samples.items()}
            headline = next((m for m in METRICS if m in samples), None)  # the metric a report row shows
            if headline and len(samples[headline]) > 1:
                values["std"] = float(np.std(samples[headline], ddof=1))
            results[key] = {**values, "runs": len(per_run)}
        rows = []
        for row in evals[0].get("rows", []):
            same = [r for ev in evals for r in ev.get("rows", []) if r.get("resolution") == row.get("resolution")]
            if "resolution" in row and all(_is_number(r.get("accuracy")) for r in same):
                accuracy = [float(r["accuracy"]) for r in same]
                rows.append({"resolution": row["resolution"], "accuracy": float(np.mean(accuracy)),
                             "std": float(np.std(accuracy, ddof=1)) if len(accuracy) > 1 else 0.0})
        merged[protocol] = {**evals[0], "results": results, "rows": rows, "curves": _mean_curves(evals),
                            "runs": [str(r.path) for r in runs if protocol in r.evaluations]}
    return Run(runs[0].name, runs[0].path.parent, merged)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _mean_curves(evals: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    curves: dict[str, dict[str, list[float]]] = {}
    for name, first in evals[0].get("curves", {}).items():
        others = [ev["curves"][name] for ev in evals if name in ev.get("curves", {})]
        if name.startswith("cmc:"):
            length = min(len(c["rate"]) for c in others)
            curves[name] = {"rank": first["rank"][:length],
                            "rate": np.mean([c["rate"][:length] for c in others], axis=0).round(6).tolist()}
        elif name.startswith("roc:"):
            grid = np.log10(np.clip(first["fpr"], 1e-12, None))
            tpr = [np.interp(grid, np.log10(np.clip(c["fpr"], 1e-12, None)), c["tpr"]) for c in others]
            curves[name] = {"fpr": first["fpr"], "tpr": np.mean(tpr, axis=0).round(6).tolist()}
    return curves


def _read_json(path: pathlib.Path, what: str) -> dict[str, Any]:
    """The file's JSON object; anything else (unreadable, not UTF-8, not JSON, a list or number) is a RunDirError
    naming the file, never a traceback further on."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RunDirError(f"{path}: cannot read it: {exc.strerror or exc}.") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunDirError(f"{path}: not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x}), so not "
                          f"{what}.") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RunDirError(f"{path}: cannot read it as JSON ({exc}). The run may be unfinished.") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: not {what}: it holds {_kind(data)}, not a JSON object. Give the run directory of "
                          "a finished run.")
    return data


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _check_metrics(data: dict[str, Any], path: pathlib.Path) -> None:
    """The fields the report reads, with the types it reads them as (metrics.json of 'lrfr run')."""
    def bad(problem: str) -> RunDirError:
        return RunDirError(f"{path}: not a metrics.json of 'lrfr run': {problem}.")

    if data.get("run") is not None and not isinstance(data["run"], str):
        raise bad(f"'run' is {_kind(data['run'])}, not a string")
    evaluations = data.get("eval")
    if evaluations is None:
        raise bad("no 'eval' list")
    if not isinstance(evaluations, list):
        raise bad(f"'eval' is {_kind(evaluations)}, not a list")
    for i, ev in enumerate(evaluations):
        problem = _evaluation_problem(ev, f"eval[{i}]")
        if problem:
            raise bad(problem)


def _check_eval_json(data: dict[str, Any], path: pathlib.Path) -> None:
    problem = _evaluation_problem(data, "the file")
    model = data.get("model")
    if not problem and model is not None and not isinstance(model, dict):
        problem = f"'model' is {_kind(model)}, not an object"
    elif not problem and isinstance(model, dict) and model.get("recipe") is not None \
            and not isinstance(model["recipe"], str):
        problem = f"model.recipe is {_kind(model['recipe'])}, not a string"
    if problem:
        raise RunDirError(f"{path}: not an eval.json of 'lrfr eval --out': {problem}.")


def _evaluation_problem(ev: Any, where: str) -> str | None:
    """What is wrong with one protocol result (ProtocolResult.as_dict()) for the report, or None."""
    if not isinstance(ev, dict):
        return f"{where} is {_kind(ev)}, not an object"
    if not isinstance(ev.get("protocol"), str) or not ev["protocol"]:
        return f"{where} has no 'protocol' name"
    for field, kind in (("results", dict), ("rows", list), ("curves", dict), ("settings", dict)):
        if ev.get(field) is not None and not isinstance(ev[field], kind):
            return f"{where}.{field} is {_kind(ev[field])}, not {'an object' if kind is dict else 'a list'}"
    for key, metrics in (ev.get("results") or {}).items():
        if not isinstance(metrics, dict):
            return f"{where}.results[{key!r}] is {_kind(metrics)}, not an object"
        for metric in (*METRICS, "std"):
            value = metrics.get(metric)
            if value is not None and not _is_number(value):
                return f"{where}.results[{key!r}].{metric} is {_kind(value)}, not a number"
    for i, row in enumerate(ev.get("rows") or []):
        if not isinstance(row, dict):
            return f"{where}.rows[{i}] is {_kind(row)}, not an object"
        for metric in ("accuracy", "std", "sem"):
            if row.get(metric) is not None and not _is_number(row[metric]):
                return f"{where}.rows[{i}].{metric} is {_kind(row[metric])}, not a number"
    for name, curve in (ev.get("curves") or {}).items():
        needs = ("fpr", "tpr") if str(name).startswith("roc:") else ("rank", "rate") if str(name).startswith("cmc:") \
            else ()
        if not isinstance(curve, dict) or not all(isinstance(curve.get(k), list) for k in needs) or not all(
                isinstance(v, list) and all(_is_number(x) for x in v) for v in curve.values()):
            lists = f" ({' and '.join(needs)})" if needs else ""
            return f"{where}.curves[{name!r}] is not an object of number lists{lists}"
    return None


def _key_order(key: str) -> tuple:
    """Resolutions largest first, then plain keys (SCface's day distances d1-d3; QMUL-SurvFace's verification before
    its identification), then qualified ones (d1-night)."""
    return (0, -int(key), "") if key.isdigit() else (1 + ("-" in key), key != "verification", key)


def build_rows(runs: list[Run]) -> list[Row]:
    rows: list[Row] = []
    used: set[str] = set()
    for members, names, metric in FAMILIES:
        present = [p for p in members if any(p in r.evaluations for r in runs)]
        for protocol in present[:1]:
            used.add(protocol)
            rows += _rows_of(runs, protocol, names[protocol], metric)
    for protocol in sorted({p for r in runs for p in r.evaluations} - used):
        metric = next((m for m in METRICS if any(m in v for r in runs for v in
                                                 r.evaluations.get(protocol, {}).get("results", {}).values())),
                      "accuracy")
        rows += _rows_of(runs, protocol, protocol, metric)
    return rows


def _rows_of(runs: list[Run], protocol: str, display: str, metric: str) -> list[Row]:
    keys = sorted({k for r in runs for k in r.evaluations.get(protocol, {}).get("results", {})}, key=_key_order)
    out = []
    for key in keys:
        label = f"{display} {key}x{key}" if key.isdigit() else display if len(keys) == 1 else f"{display} {key}"
        for shown in _key_metrics(runs, protocol, key, metric):
            cells = {}
            for run in runs:
                metrics = run.evaluations.get(protocol, {}).get("results", {}).get(key)
                if metrics and _is_number(metrics.get(shown)):  # a null metric is a missing cell
                    cells[run.name] = (float(metrics[shown]), metrics.get("std") if shown == metric else None)
            out.append(Row(label, protocol, key, shown, cells))
    return out


def _key_metrics(runs: list[Run], protocol: str, key: str, metric: str) -> tuple[str, ...]:
    """The family's metric where a condition has it; else the condition's own headline: open-set identification
    (QMUL-SurvFace's watch list) shows TPIR at its three FPIRs and the TPIR-FPIR area, closed-set identification
    (TinyFace) its rank-1."""
    present = {m for r in runs for m in r.evaluations.get(protocol, {}).get("results", {}).get(key, {})}
    if metric in present:
        return (metric,)
    open_set = tuple(m for m in OPEN_SET_METRICS if m in present)
    return open_set or next(((m,) for m in METRICS if m in present), (metric,))


# ------------------------------------------------------------------------------------------------- formats
def _cells(row: Row, runs: list[Run], *, pm: str, bold: str, missing: str) -> list[str]:
    """One formatted cell per run: value (+- std), the row's best in ``bold`` (a format with one {}), or missing."""
    best = max((v for v, _ in row.cells.values()), default=None)
    cells = []
    for run in runs:
        if run.name not in row.cells:
            cells.append(missing)
            continue
        value, std = row.cells[run.name]
        text = f"{value:.4f}" + (f" {pm} {float(std):.4f}" if std is not None else "")
        cells.append(bold.format(text) if len(row.cells) > 1 and value == best else text)
    return cells


def to_markdown(runs: list[Run], rows: list[Row]) -> str:
    """Markdown table; the best value of each row in bold."""
    header = ["", *[r.name for r in runs]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for row in rows:
        cells = _cells(row, runs, pm="±", bold="**{}**", missing="-")
        lines.append(f"| {row.label} ({row.metric}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_csv(runs: list[Run], rows: list[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "protocol", "key", "metric", *[c for r in runs for c in (r.name, f"{r.name} std")]])
    for row in rows:
        values = []
        for run in runs:
            value, std = row.cells.get(run.name, (None, None))
            values += ["" if value is None else f"{value:.6f}", "" if std is None else f"{float(std):.6f}"]
        writer.writerow([row.label, row.protocol, row.key, row.metric, *values])
    return buffer.getvalue()


def to_latex(runs: list[Run], rows: list[Row]) -> str:
    def esc(text: str) -> str:
        return text.replace("\\", r"\textbackslash{}").replace("&", r"\&").replace("%", r"\%").replace("_", r"\_")

    lines = [r"\begin{tabular}{l" + "c" * len(runs) + "}", r"\toprule",
             " & ".join(["", *[esc(r.name) for r in runs]]) + r" \\", r"\midrule"]
    for row in rows:
        cells = _cells(row, runs, pm=r"$\pm$", bold=r"\textbf{{{}}}", missing="--")
        lines.append(" & ".join([esc(row.label), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


FORMATS = {"md": to_markdown, "csv": to_csv, "latex": to_latex}
SUFFIX = {"md": "md", "csv": "csv", "latex": "tex"}


# --------------------------------------------------------------------------------------------------- plots
def write_plots(runs: list[Run], rows: list[Row], out: pathlib.Path) -> list[str]:
    written = []
    resolution_protocol = next((r.protocol for r in rows if r.key.isdigit()), None)
    if resolution_protocol is not None:
        series = [(run.name, resolution_points(run.evaluations[resolution_protocol]))
                  for run in runs if resolution_protocol in run.evaluations]
        if plot_resolution_series(series, out / "accuracy_vs_resolution.png",
                                  f"{resolution_protocol}: accuracy against resolution"):
            written.append("accuracy_vs_resolution.png")
    for protocol in dict.fromkeys(r.protocol for r in rows):
        for kind in ("roc", "cmc"):
            keys = sorted({k.split(":", 1)[1] for run in runs for k in run.evaluations.get(protocol, {})
                           .get("curves", {}) if k.startswith(kind + ":")}, key=_key_order)
            panels = [(f"{k} px" if k.isdigit() else k,
                       [(run.name, run.evaluations[protocol]["curves"][f"{kind}:{k}"]) for run in runs
                        if f"{kind}:{k}" in run.evaluations.get(protocol, {}).get("curves", {})]) for k in keys]
            name = f"{kind}_{protocol}.png"
            title = f"{protocol}: {'ROC' if kind == 'roc' else 'CMC'}"
            if plot_curve_panels(panels, out / name, title, kind=kind):
                written.append(name)
    return written


def make_report(paths: list[pathlib.Path], out: pathlib.Path | None, *, merge: bool = False
                ) -> tuple[list[Run], list[Row], list[str]]:
    """Load the runs (``merge``: average runs of one name), build the rows, and (with ``out``) write
    report.md/.csv/.tex and the plots there."""
    runs = load_runs(paths, merge=merge)
    rows = build_rows(runs)
    if not rows:
        raise RunDirError("the runs hold no machine-readable results (runs of an older lrfr-plugins). Measure "
                          "them again with 'lrfr eval RUN -p PROTOCOL --out DIR' and report the DIRs.")
    written: list[str] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for fmt, render in FORMATS.items():
            atomic_write_text(out / f"report.{SUFFIX[fmt]}", render(runs, rows) + "\n")
            written.append(f"report.{SUFFIX[fmt]}")
        written += write_plots(runs, rows, out)
    return runs, rows, written
