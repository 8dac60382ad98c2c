"""Reproduce the founding study's comparison table: eight methods trained, fine-tuned and evaluated by one command.

The study (Lozhkina, EPFL 2023) compares CosFace, SphereFace, ArcFace, Octuplet, DeriveNet, AdaFace, Approach 1 and
Approach 2 on LFW at 112..7 px, QMUL-SurvFace and SCface. Both suites run the study's own recipes
(``recipes/<method>.yaml``: its heads, margins, quality estimators and fine-tuners; Octuplet and DeriveNet fine-tune
the ArcFace run, as in the study) and end with ``lrfr report --merge-seeds`` in the study's layout:

* ``--suite synthetic`` (CPU, about 45 minutes for the default two seeds on 2 cores): the study's heads, quality
  estimators and fine-tuners on the embedded default's data, network and schedule (``recipes/demo.yaml``: built-in synthetic faces,
  the tiny CPU network, cross-resolution batches) and its three benchmark stand-ins (LFW-style pairs at 112..7 px,
  SurvFace-style native captures, SCface-style mugshots against probes at three distances). The fine-tuners keep
  the study's ratio of fine-tuning to training (6 epochs against 18: a third of the training images). ``--quick``
  runs a few steps of each on smaller test sets: it checks that every method runs and fills every cell.
* ``--suite paper --data-root DIR`` (GPU, days): the recipes as they are, with their ``/data`` folders moved to DIR:
  DIR/faces_webface_112x112 (InsightFace CASIA-WebFace pack), DIR/lfw_crop + DIR/lfw/pairs.txt, DIR/QMUL-SurvFace,
  DIR/SCface. ``--max-steps N`` caps every training and fine-tuning (a smoke test of the whole pipeline).

Beyond the study, both suites add ``arcface-hr`` (ArcFace without cross-resolution batches) and ``lr-distill``
(``recipes/lr-distill.yaml``: arcface-hr distilled label-free at 7/14/16/28 px, 470 steps), so the table shows what
cross-resolution training buys and what distillation of a full-resolution model buys instead.

Each run is ``lrfr run`` in its own process, in RUNS/<method>/seed<k> (its printed table in seed<k>.stdout.txt); the
synthetic suite runs two at a time on one thread each (``--jobs``). A finished run (metrics.json) is kept and a
started one resumed, so the command can be stopped and run again. ``--set PATH=VALUE`` is passed to every run after
the suite's own settings. The report goes to OUT: report.md/.csv/.tex and plots, ``gains.md`` and
``gain_over_arcface.png`` (each method minus ArcFace, paired by seed), and ``suite.json`` (the commands, seeds,
machine and the time each run took).

    python eval/reproduce.py --suite synthetic                      # two seeds
    python eval/reproduce.py --suite synthetic --seeds 0 1 2        # the table in eval/README.md
    python eval/reproduce.py --suite synthetic --quick --seeds 0    # CI: every method, every cell, minutes
    python eval/reproduce.py --suite paper --data-root /data --seeds 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import time
from typing import Any

import numpy as np
import yaml
from tqdm.auto import tqdm

from lrfr_plugins import get_registry
from lrfr_plugins.atomic import atomic_write_text
from lrfr_plugins.plots import plot_gain_series
from lrfr_plugins.recipe import load_recipe_data
from lrfr_plugins.report import FORMATS, Row, load_runs, make_report

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
#: The study's columns, in its order.
METHODS = ("cosface", "sphereface", "arcface", "octuplet", "derivenet", "adaface", "approach1", "approach2")
#: Variants that are not in the study's table: name -> (study recipe, changes as dotted recipe paths, applied last).
#: The report's proposed fix of Approach 2: margins bounded to [0.35, 0.5] instead of 1/q (REFERENCE.md §7.3).
#: ArcFace without cross-resolution batches: what those batches buy, and the teacher that lr-distill starts from.
VARIANTS = {"approach2-bounded": ("approach2", {"head.params.mapping": "bounded"}),
            "arcface-hr": ("arcface", {"degradations": []})}
#: Beyond the study: label-free cross-resolution distillation (recipes/lr-distill.yaml) of the ArcFace trained
#: without cross-resolution batches, the usual way to make a strong full-resolution model hold up at low resolution.
EXTENSIONS = ("lr-distill",)
ALL_METHODS = (*METHODS, *VARIANTS, *EXTENSIONS)
#: Fine-tuning methods start from another method's run of the same seed (the study fine-tuned its ArcFace).
STARTS_FROM = {"octuplet": "arcface", "derivenet": "arcface", "lr-distill": "arcface-hr"}
#: The study's fine-tuning length relative to its training: 6 epochs against 18 (REFERENCE.md §11.1).
FINETUNE_SHARE = 6 / 18
#: The recipes' convention for where the real data sets live; --data-root replaces it.
PAPER_DATA = "/data"
#: --quick: smaller held-out sets, a few steps; enough to fill every cell of the table.
QUICK_STEPS = 12
QUICK_EVAL = [
    {"name": "synthetic", "params": {"num_identities": 20, "images_per_identity": 4, "num_pairs": 200,
                                     "sizes": [112, 56, 28, 14, 7]}},
    {"name": "synthetic-survface", "params": {"num_identities": 20, "images_per_identity": 3, "num_pairs": 100}},
    {"name": "synthetic-scface", "params": {"num_identities": 10, "cameras": 2}},
]


def images_per_step(slot: dict[str, Any]) -> int:
    """Images a fine-tuner draws per step: P x K for the octuplet sampler, else its batch size."""
    params = slot.get("params") or {}
    if "p" in params and "k" in params:
        return int(params["p"]) * int(params["k"])
    if "batch_size" in params:
        return int(params["batch_size"])
    raise SystemExit(f"fine-tuner {slot.get('name')!r}: cannot tell how many images it draws per step (no p x k or "
                     "batch_size); give its steps with --set finetune.0.params.steps=N")


def with_seed(slot: dict[str, Any], seed: int, steps: int | None) -> dict[str, Any]:
    """A fine-tuner slot with the run's seed (when the fine-tuner has one) and ``steps`` (when given)."""
    fields = {f.name for f in dataclasses.fields(get_registry().get("finetuner", slot["name"]).params_cls)}
    params = {**(slot.get("params") or {}), **({"seed": seed} if "seed" in fields else {}),
              **({"steps": steps} if steps is not None else {})}
    return {**slot, "params": params}


def study_recipe(method: str) -> dict[str, Any]:
    """recipes/<method>.yaml with its extends chain resolved (a variant's: its source recipe's)."""
    source = VARIANTS.get(method, (method, {}))[0]
    recipe, _ = load_recipe_data(RECIPES / f"{source}.yaml")
    recipe.pop("extends", None)
    recipe["name"] = method
    return recipe


def apply_changes(recipe: dict[str, Any], method: str) -> dict[str, Any]:
    """A variant's changes (``{"head.params.mapping": "bounded"}``) set into ``recipe``, after the suite's own."""
    for dotted, value in VARIANTS.get(method, (method, {}))[1].items():
        *parents, leaf = dotted.split(".")
        node = recipe
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return recipe


def synthetic_recipe(method: str, seed: int, start: pathlib.Path | None, quick: bool) -> dict[str, Any]:
    """The study's recipe for ``method`` with the demo's data, network, schedule and synthetic benchmarks."""
    base, _ = load_recipe_data(RECIPES / "demo.yaml")
    study = study_recipe(method)
    recipe = {k: v for k, v in base.items() if k not in ("head", "quality", "finetune", "extends")}
    recipe.update(name=method, seed=seed, head=study["head"])
    if study.get("quality"):
        recipe["quality"] = study["quality"]
    recipe["export"] = {"onnx": False}  # the table needs no ONNX file; `lrfr run` on any recipe still exports
    train = recipe["train"]
    if quick:
        train["max_steps"] = QUICK_STEPS
        recipe["eval"] = QUICK_EVAL
    if study.get("finetune"):
        assert start is not None
        train_images = train["epochs"] * base["data"]["params"]["num_identities"] * \
            base["data"]["params"]["images_per_identity"]
        recipe["backbone"] = {**recipe["backbone"], "params": {**recipe["backbone"].get("params", {}),
                                                               "weights": str(start / "checkpoint.pt")}}
        recipe["train"] = {**train, "epochs": 0}
        recipe["finetune"] = []
        for slot in study["finetune"]:
            if quick:
                steps = QUICK_STEPS
            elif method in EXTENSIONS:  # not the study's: the recipe's own length (lr-distill: 470 steps of 128)
                steps = None
            else:
                steps = math.ceil(FINETUNE_SHARE * train_images / images_per_step(slot))
            recipe["finetune"].append(with_seed(slot, seed, steps))
    return apply_changes(recipe, method)


def paper_recipe(method: str, seed: int, start: pathlib.Path | None, data_root: pathlib.Path,
                 max_steps: int | None) -> dict[str, Any]:
    """The study's recipe as it is, its /data folders moved to ``data_root``."""
    recipe = study_recipe(method)
    if method in STARTS_FROM:  # data, network and benchmarks of the run it fine-tunes
        start_recipe = study_recipe(STARTS_FROM[method])
        recipe.update({k: start_recipe[k] for k in ("data", "backbone", "eval")})
    recipe["seed"] = seed

    def moved(value: Any) -> Any:
        if isinstance(value, str) and (value == PAPER_DATA or value.startswith(PAPER_DATA + "/")):
            return str(data_root / value[len(PAPER_DATA):].lstrip("/"))
        return value

    for slot in [recipe["data"], *recipe.get("eval", [])]:
        slot["params"] = {k: moved(v) for k, v in (slot.get("params") or {}).items()}
    if max_steps is not None:
        recipe["train"]["max_steps"] = max_steps
    if recipe.get("finetune"):
        assert start is not None
        recipe["backbone"]["params"] = {**recipe["backbone"].get("params", {}), "weights": str(start / "checkpoint.pt")}
        recipe["finetune"] = [with_seed(slot, seed, max_steps) for slot in recipe["finetune"]]
    return apply_changes(recipe, method)


def lrfr_command() -> list[str]:
    exe = shutil.which("lrfr")
    return [exe] if exe else [sys.executable, "-m", "lrfr_plugins.cli"]


class Job:
    """One ``lrfr run`` of the suite: started when the run it fine-tunes (``after``) has finished."""

    def __init__(self, key: str, recipe: dict[str, Any], run_dir: pathlib.Path, after: str | None):
        self.key, self.recipe, self.run_dir, self.after = key, recipe, run_dir, after
        self.process: subprocess.Popen | None = None
        self.started = 0.0
        self.seconds = 0.0

    def command(self, overrides: list[str]) -> list[str]:
        """``lrfr run`` of the recipe into ``run_dir``; ``--resume`` for a run that had started training."""
        self.run_dir.parent.mkdir(parents=True, exist_ok=True)
        recipe_file = self.run_dir.parent / f"{self.run_dir.name}.recipe.yaml"
        atomic_write_text(recipe_file, yaml.safe_dump(self.recipe, sort_keys=False))
        if (self.run_dir / "recipe.resolved.yaml").is_file():  # the saved recipe already holds the overrides
            command = [*lrfr_command(), "run", "--resume", str(self.run_dir)]
        else:  # a start that failed its checks left no run there (lrfr writes the recipe once they pass)
            command = [*lrfr_command(), "run", str(recipe_file), "--out", str(self.run_dir)]
            for assignment in overrides:
                command += ["--set", assignment]
        return [*command, "--no-progress"]  # its output goes to a file; the suite shows one bar over the runs


def run_jobs(jobs: list[Job], parallel: int, overrides: list[str], progress: bool) -> dict[str, float]:
    """Run the jobs, ``parallel`` at a time (each on one CPU thread when more than one), in order as their
    dependencies allow; finished runs (metrics.json) are kept. Seconds per job."""
    done = {j.key for j in jobs if (j.run_dir / "metrics.json").is_file()}
    bar = tqdm(total=len(jobs), initial=len(done), desc="reproduce", unit="run", disable=not progress)

    def say(text: str) -> None:  # on stderr, like the bar: stdout carries only the table
        if progress:
            bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    for key in [j.key for j in jobs if j.key in done]:
        say(f"reproduce: {key} is finished; kept")
    waiting = [j for j in jobs if j.key not in done]
    running: list[Job] = []
    while waiting or running:
        for job in [j for j in waiting if j.after is None or j.after in done][: parallel - len(running)]:
            if parallel > 1:
                job.recipe["train"] = {**job.recipe["train"], "threads": 1}
            command = job.command(overrides)
            say(f"reproduce: {job.key}: {' '.join(command)}")
            job.started = time.perf_counter()
            with open(job.run_dir.parent / f"{job.run_dir.name}.stdout.txt", "w", encoding="utf-8") as log:
                job.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            waiting.remove(job)
            running.append(job)
        time.sleep(0.5)
        for job in [j for j in running if j.process.poll() is not None]:
            running.remove(job)
            job.seconds = round(time.perf_counter() - job.started, 1)
            if job.process.returncode != 0:
                for other in running:
                    other.process.terminate()
                bar.close()
                output = job.run_dir.parent / f"{job.run_dir.name}.stdout.txt"
                tail = output.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
                advice = (f"reproduce: {job.key} failed (exit {job.process.returncode}); its output is in {output}. "
                          "Fix the cause and run the same command again: finished runs are kept, started ones resume.")
                raise SystemExit("\n".join([*tail, advice]))
            done.add(job.key)
            bar.update(1)
            say(f"reproduce: {job.key} finished in {job.seconds:.0f} s")
    bar.close()
    return {j.key: j.seconds for j in jobs}


def paired_gains(paths: dict[str, list[pathlib.Path]], rows: list[Row], reference: str = "arcface"
                 ) -> dict[str, dict[str, tuple[float, float, int]]]:
    """Each method's difference from ``reference`` per report row, paired by seed (same initial weights and batch
    order): {method: {row label: (mean, sample std, seeds)}}. Pairing removes the seed-to-seed swing both share."""
    evaluations = {path: load_runs([path])[0].evaluations for runs in paths.values() for path in runs}  # read once

    def value(path: pathlib.Path, row: Row) -> float | None:
        return evaluations[path].get(row.protocol, {}).get("results", {}).get(row.key, {}).get(row.metric)

    gains: dict[str, dict[str, tuple[float, float, int]]] = {}
    for method, runs in paths.items():
        if method == reference:
            continue
        gains[method] = {}
        for row in rows:
            pairs = [(value(run, row), value(ref, row)) for run, ref in zip(runs, paths[reference])]
            diffs = [a - b for a, b in pairs if a is not None and b is not None]
            if diffs:
                gains[method][row.label] = (float(np.mean(diffs)), float(np.std(diffs, ddof=1)) if len(diffs) > 1
                                            else 0.0, len(diffs))
    return gains


def gains_markdown(gains: dict[str, dict[str, tuple[float, float, int]]], rows: list[Row], reference: str) -> str:
    methods = list(gains)
    lines = [f"| minus {reference}, paired by seed | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for row in rows:
        cells = [f"{gains[m][row.label][0]:+.4f} ± {gains[m][row.label][1]:.4f}" if row.label in gains[m] else "-"
                 for m in methods]
        lines.append(f"| {row.label} ({row.metric}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--suite", choices=("synthetic", "paper"), required=True)
    parser.add_argument("--data-root", type=pathlib.Path, help="paper suite: folder holding the data sets")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                        help="run seeds (default: 0 1; each seed adds about 22 minutes of the synthetic suite on 2 cores: "
                             "16 measured for the study's nine columns, about 6 estimated for arcface-hr and "
                             "lr-distill)")
    parser.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=list(ALL_METHODS),
                        help="a subset, in any order (a fine-tuner also runs the method it starts from); default: the "
                             "study's eight, approach2-bounded (its report's proposed fix), arcface-hr (ArcFace "
                             "without cross-resolution batches) and lr-distill (arcface-hr distilled)")
    parser.add_argument("--quick", action="store_true", help="synthetic suite: a few steps, small test sets (CI)")
    parser.add_argument("--max-steps", type=int, help="paper suite: cap every training and fine-tuning at N steps")
    parser.add_argument("--runs", type=pathlib.Path, help="where the runs go (default: runs/reproduce-SUITE)")
    parser.add_argument("--out", type=pathlib.Path, help="where the report goes (default: RUNS/report)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs at a time, each on one CPU thread when more than one (default: 2 for the synthetic "
                             "suite on 2+ cores: on 2 cores two one-thread demo runs finished in 59 s where one "
                             "two-thread run took 39 s, 1.3x the throughput; 1 for the paper suite, whose runs each "
                             "want the whole GPU)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                        help="passed to every 'lrfr run' after the suite's settings; repeatable")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar over the runs (each run's own output goes to RUNS/<method>/seed<k>.stdout.txt)")
    args = parser.parse_args(argv)
    if args.suite == "paper":
        if args.data_root is None:
            parser.error("--suite paper needs --data-root DIR (the folder with faces_webface_112x112, lfw_crop, "
                         "lfw/pairs.txt, QMUL-SurvFace and SCface)")
        if args.quick:
            parser.error("--quick is for the synthetic suite; cap a paper run with --max-steps N")
    elif args.data_root is not None or args.max_steps is not None:
        parser.error("--data-root and --max-steps belong to --suite paper")
    if args.jobs is None:
        args.jobs = 1 if args.suite == "paper" else min(2, os.cpu_count() or 1)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs_root = args.runs or ROOT / "runs" / f"reproduce-{args.suite}{'-quick' if args.quick else ''}"
    out = args.out or runs_root / "report"
    wanted = set(args.methods) | {STARTS_FROM[m] for m in args.methods if m in STARTS_FROM}
    methods = [m for m in ALL_METHODS if m in wanted]
    # Fine-tuners last within a seed: their starting run must exist first.
    order = [m for m in methods if m not in STARTS_FROM] + [m for m in methods if m in STARTS_FROM]
    jobs = []
    for seed in args.seeds:
        for method in order:
            run_dir = runs_root / method / f"seed{seed}"
            start = runs_root / STARTS_FROM[method] / f"seed{seed}" if method in STARTS_FROM else None
            if args.suite == "synthetic":
                recipe = synthetic_recipe(method, seed, start, args.quick)
            else:
                recipe = paper_recipe(method, seed, start, args.data_root.resolve(), args.max_steps)
            after = f"{STARTS_FROM[method]}/seed{seed}" if method in STARTS_FROM else None
            jobs.append(Job(f"{method}/seed{seed}", recipe, run_dir, after))
    started = time.perf_counter()
    timings = run_jobs(jobs, max(1, args.jobs), args.overrides, args.progress)
    paths = [runs_root / m / f"seed{s}" for m in methods for s in args.seeds]
    runs, rows, written = make_report(paths, out, merge=True)
    if "arcface" in methods and len(methods) > 1:
        gains = paired_gains({m: [runs_root / m / f"seed{s}" for s in args.seeds] for m in methods}, rows)
        atomic_write_text(out / "gains.md", gains_markdown(gains, rows, "arcface"))
        written.append("gains.md")
        resolution_rows = [r for r in rows if r.key.isdigit()]
        series = [(method, [(int(r.key), *by_row[r.label][:2]) for r in resolution_rows if r.label in by_row])
                  for method, by_row in gains.items()]
        title = f"{resolution_rows[0].protocol if resolution_rows else ''}: gain over arcface, mean ± std over seeds"
        if plot_gain_series(series, out / "gain_over_arcface.png", title, "arcface"):
            written.append("gain_over_arcface.png")
    command = " ".join(["python eval/reproduce.py", *(argv if argv is not None else sys.argv[1:])])
    invocations = [{"command": command, "runs_trained": sum(1 for v in timings.values() if v),
                    "seconds": round(time.perf_counter() - started, 1)}]
    previous = out / "suite.json"  # a kept run keeps the time it took when it ran; every invocation is listed
    if previous.is_file():
        earlier = json.loads(previous.read_text(encoding="utf-8"))
        timings = {k: v or earlier.get("seconds", {}).get(k, 0.0) for k, v in timings.items()}
        invocations = [*earlier.get("invocations", []), *invocations]
    summary = {"suite": args.suite, "quick": args.quick, "seeds": args.seeds, "methods": methods,
               "command": command,
               "overrides": args.overrides, "jobs": args.jobs, "seconds": timings,
               "total_seconds": round(time.perf_counter() - started, 1), "invocations": invocations,
               "machine": {"platform": platform.platform(), "python": platform.python_version(),
                           "cpus": os.cpu_count()},
               "runs": [str(p) for p in paths]}
    atomic_write_text(out / "suite.json", json.dumps(summary, indent=2) + "\n")
    print(FORMATS["md"](runs, rows))
    print(f"reproduce: wrote {', '.join([*written, 'suite.json'])} to {out} in {summary['total_seconds']:.0f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
