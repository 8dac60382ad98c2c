"""Composes a validated recipe into a run: data -> train -> finetune -> evaluate -> export, in a run directory.

A run directory holds ``recipe.resolved.yaml`` (re-running it reproduces the run), ``checkpoint.pt``,
``metrics.jsonl`` / ``metrics.json``, ``results.md``, ``accuracy_vs_resolution.png``, ``model.onnx`` and
``run.log``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import sys
import time
from typing import Any

import torch

from ._version import __version__
from .api import FinetuneContext, Finetuner
from .atomic import atomic_write_text
from .engine import distributed as D
from .engine.checkpoint import load_checkpoint, save_checkpoint
from .engine.embed import make_embedder
from .engine.trainer import TrainComponents, Trainer, checkpoint_name
from .errors import DataError, LrfrError, ParamsError, RunDirError
from .export.onnx import export_onnx
from .plots import plot_accuracy_vs_resolution
from .recipe import Recipe, load_recipe_data, validate
from .registry import Registry
from .run_dir import launch_rank, prepare_run_dir  # noqa: F401  (prepare_run_dir: re-exported for callers of execute)
from .results import results_markdown

log = logging.getLogger("lrfr")


@dataclasses.dataclass
class RunResult:
    run_dir: pathlib.Path
    metrics: dict[str, Any]
    results_markdown: str


def _device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise LrfrError("train.device: 'cuda' was requested but torch sees no CUDA device. "
                        "Use train.device=auto or cpu, or install a CUDA build of torch.")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


class _RunLog(logging.FileHandler):
    """run.log. A write that fails (a full disk) stops the log with one line on stderr, not a traceback per record:
    the run itself goes on, and its checkpoint saves report a full disk properly."""

    def handleError(self, record: logging.LogRecord) -> None:
        log.removeHandler(self)
        print(f"lrfr: cannot write {self.baseFilename} any more ({sys.exc_info()[1]}); the run goes on without it.",
              file=sys.stderr)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the last flush of a full disk fails again: already reported
            super().close()


def _attach_log(run_dir: pathlib.Path) -> logging.Handler:
    name = "run.log" if launch_rank() == 0 else f"run-rank{launch_rank()}.log"
    handler = _RunLog(run_dir / name, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def _create(registry: Registry, kind: str, slot: dict[str, Any]) -> Any:
    return registry.create(kind, slot["name"], **slot["params"])


def _preflight(recipe: Recipe, registry: Registry) -> tuple[Any, list[Any]]:
    """Open the training data, look at every benchmark's folders and check every finetuner's parameters against the
    backbone before anything trains; everything missing is reported at once, each with the --set that points the
    recipe at it."""
    problems, dataset, protocols = [], None, []
    try:
        dataset = _create(registry, "dataset", recipe.slot("data"))
    except DataError as exc:
        keys = [k for k in ("root", "path") if k in recipe.data["data"]["params"]]
        fix = f"--set data.params.{keys[0]}=/path/to/your/copy" if keys else "fix data.params"
        problems.append(f"data ({recipe.data['data']['name']}): {exc}\n    Point the recipe at your copy with {fix}")
    for i, slot in enumerate(recipe.data["eval"]):
        protocol = _create(registry, "protocol", slot)
        try:
            protocol.check()
        except DataError as exc:
            keys = [k for k in ("root", "path") if k in slot["params"]]
            fix = f"--set eval.{i}.params.{keys[0]}=..." if keys else "fix its params"
            problems.append(f"eval.{i} ({slot['name']}): {exc}\n    Point it at your copy with {fix}, or drop it "
                            f"(--set eval=[] skips every benchmark).")
        protocols.append(protocol)
    if problems:
        raise DataError(f"{len(problems)} input(s) of recipe '{recipe.name}' are missing; nothing was trained:\n  - "
                        + "\n  - ".join(problems))
    finetuners = [_create(registry, "finetuner", slot) for slot in recipe.data["finetune"]]
    checking = [(i, f) for i, f in enumerate(finetuners) if getattr(type(f), "check", Finetuner.check)
                is not Finetuner.check]
    if checking:  # a backbone of its own (names are what count), built without moving the seeded global RNG
        with torch.random.fork_rng(devices=[]):
            backbone = _create(registry, "backbone", recipe.slot("backbone"))
        for i, finetuner in checking:
            slot = recipe.data["finetune"][i]
            try:
                finetuner.check(backbone)
            except ParamsError as exc:
                problems += [f"finetune.{i}.params{'' if name == '(params)' else '.' + name} ({slot['name']}): "
                             f"{problem}" for name, problem in exc.problems or [("(params)", str(exc))]]
        if problems:
            raise ParamsError(f"{len(problems)} finetune parameter(s) of recipe '{recipe.name}' do not fit the "
                              "backbone; nothing was trained:\n  - " + "\n  - ".join(problems))
    _check_labels(recipe, dataset, finetuners)
    return dataset, protocols


def _check_labels(recipe: Recipe, dataset: Any, finetuners: list[Any]) -> None:
    """Data without identities (an image folder of loose images) serves label-free fine-tuning only."""
    if dataset.num_classes > 0:
        return
    name = recipe.data["data"]["name"]
    if recipe.train.epochs > 0:
        raise DataError(f"data ({name}): the images have no identities (no identity sub-folders), so margin training "
                        "cannot run. Give root/<identity>/<image>, or set train.epochs: 0 and fine-tune label-free "
                        "(finetune: [{name: distill}]).")
    for i, (slot, finetuner) in enumerate(zip(recipe.data["finetune"], finetuners)):
        if finetuner.needs_labels():
            raise DataError(f"finetune.{i} ({slot['name']}): needs identity labels, but the images of data ({name}) "
                            "have none (no identity sub-folders). Use a label-free finetuner such as distill (with "
                            "head_weight: 0), or data with identities.")


def execute(recipe: Recipe, registry: Registry, run_dir: pathlib.Path, *, resume: bool = False,
            progress: bool = True) -> RunResult:
    """Run every stage of ``recipe`` in ``run_dir`` (which :func:`prepare_run_dir` made ready)."""
    handler = _attach_log(run_dir)
    try:
        return _execute(recipe, registry, run_dir, resume=resume, progress=progress)
    finally:
        log.removeHandler(handler)
        handler.close()


def _execute(recipe: Recipe, registry: Registry, run_dir: pathlib.Path, *, resume: bool, progress: bool) -> RunResult:
    started = time.perf_counter()
    config = recipe.train
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(recipe.data["seed"])  # the same on every rank: identical backbones before DDP syncs them
    distributed = D.init_distributed()  # under torchrun: one process per GPU (NCCL) or CPU process (gloo)
    main = D.is_main_process()
    device = D.device_for_rank() if distributed and config.device != "cpu" else _device(config.device)
    progress = progress and main
    log.info("lrfr-plugins %s, torch %s, device %s, rank %d/%d, run %s", __version__, torch.__version__, device,
             D.rank(), D.world_size(), run_dir)
    dataset, protocols = _preflight(recipe, registry)
    backbone = _create(registry, "backbone", recipe.slot("backbone"))  # may read (and check) a weights file
    head = _create(registry, "head", recipe.slot("head"))
    for text in recipe.warnings:  # validation showed them on stderr; run.log keeps them with the run
        log.warning(text)
    # an estimator the head does not read is not even built (validation warned): nothing computes it
    reads_quality = getattr(head, "needs_quality", False) and recipe.slot("quality")
    quality = _create(registry, "quality", recipe.slot("quality")) if reads_quality else None
    degradations = [_create(registry, "degradation", s) for s in recipe.data["degradations"]]
    if not resume and main:  # written once inputs and model are known good, so a failed start leaves no run behind
        atomic_write_text(run_dir / "recipe.resolved.yaml", recipe.dump())
    log.info("data: %d images of %d identities", len(dataset), dataset.num_classes)

    trainer = Trainer(TrainComponents(backbone, head, dataset, degradations, quality), config, recipe.optimizer,
                      device, recipe.data["seed"])
    own_checkpoint = run_dir / checkpoint_name(D.rank())
    finished_finetune = None
    if resume and own_checkpoint.exists():
        state = load_checkpoint(own_checkpoint)
        try:
            trainer.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RunDirError(f"{own_checkpoint}: does not fit the recipe in {run_dir / 'recipe.resolved.yaml'} "
                              f"({first}). They come from different runs, or one was edited: restore the matching "
                              "pair, or start afresh with 'lrfr run RECIPE --overwrite'.") from None
        finished_finetune = json.loads(state["finetune_done"]) if state.get("finetune_done") else None
        if main:
            _truncate_metrics(run_dir / "metrics.jsonl", trainer.step)
        log.info("resumed after epoch %d (step %d)", trainer.epoch, trainer.step)
    embed = make_embedder(backbone, device)

    def evaluate_now(epoch: int) -> dict[str, float]:
        """Periodic evaluation (train.eval_every): each protocol's headline numbers, logged with the epoch."""
        scalars = {}
        for protocol in protocols:
            result = protocol.evaluate(embed, progress=False)
            for key, metrics in result.results.items():
                for name in ("accuracy", "rank1"):
                    if name in metrics:
                        scalars[f"eval/{result.protocol}/{key}/{name}"] = float(metrics[name])
        log.info("evaluation after epoch %d: %s", epoch, ", ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
        return scalars

    train_summary = trainer.fit(run_dir, progress=progress, on_epoch_end=evaluate_now if protocols else None)
    if distributed:  # the other ranks' work ends with training: evaluation and export happen once, on rank 0
        D.barrier()
        if not main:
            D.cleanup()
            return RunResult(run_dir, {"run": recipe.name, "train": train_summary, "rank": D.rank()}, "")

    if finished_finetune is not None:  # the checkpoint already holds the fine-tuned backbone
        log.info("fine-tuning had finished before the run stopped: kept, not repeated")
        before_finetune, finetune_metrics = finished_finetune["before"], finished_finetune["metrics"]
    else:
        before_finetune, finetune_metrics = _finetune(recipe, registry, protocols, embed, progress, FinetuneContext(
            backbone, dataset, degradations, device, trainer.generator, progress, head=head,
            classifier=trainer.classifier, quality=quality, batch_size=config.batch_size))
        if recipe.data["finetune"] or not own_checkpoint.exists():  # what eval and --resume read is the final model
            done = json.dumps({"before": before_finetune, "metrics": finetune_metrics}, default=str)
            save_checkpoint(own_checkpoint, {**trainer.state_dict(), "finetune_done": done})

    evaluations = []
    for protocol in protocols:
        result = protocol.evaluate(embed, progress=progress)
        evaluations.append(result.as_dict())

    export_report = None
    if recipe.export.onnx:
        export_report = export_onnx(backbone, run_dir / "model.onnx", opset=recipe.export.opset)
        log.info("exported %s", export_report["path"])

    metrics = {"run": recipe.name, "lrfr_plugins": __version__, "torch": torch.__version__, "device": str(device),
               "train": train_summary, "finetune": finetune_metrics, "eval": evaluations, "export": export_report,
               "total_seconds": round(time.perf_counter() - started, 2)}
    if before_finetune:
        metrics["eval_before_finetune"] = before_finetune
    table = results_markdown(recipe.name, evaluations, train_summary, before_finetune=before_finetune)
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2, default=str) + "\n")
    atomic_write_text(run_dir / "results.md", table)
    stages = ([f"{recipe.slot('head')['name']} head"] if train_summary.get("steps") else []) + \
        [f"{slot['name']} fine-tuning" for slot in recipe.data["finetune"]]
    title = f"{recipe.name}: {', then '.join(stages) or recipe.slot('backbone')['name'] + ' as loaded'}"
    if plot_accuracy_vs_resolution(evaluations, run_dir / "accuracy_vs_resolution.png", title,
                                   before_finetune=before_finetune):
        log.info("plotted %s", run_dir / "accuracy_vs_resolution.png")
    if distributed:
        D.cleanup()
    return RunResult(run_dir, metrics, table)


def _finetune(recipe: Recipe, registry: Registry, protocols: list[Any], embed: Any, progress: bool,
              context: FinetuneContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Evaluate the starting model (for the before/after comparison), then run each finetuner on it in place."""
    before = []
    if recipe.data["finetune"] and protocols:
        log.info("evaluating the model before fine-tuning")
        before = [protocol.evaluate(embed, progress=progress).as_dict() for protocol in protocols]
    metrics = []
    for slot in recipe.data["finetune"]:
        finetuner = _create(registry, "finetuner", slot)
        started = time.perf_counter()
        metrics.append({"finetuner": slot["name"], **(finetuner.run(context) or {}),
                        "seconds": round(time.perf_counter() - started, 1)})
        log.info("fine-tuned with %s in %.0f s", slot["name"], metrics[-1]["seconds"])
    return before, metrics


def _truncate_metrics(path: pathlib.Path, last_step: int) -> None:
    """Drop log lines of steps after the checkpoint: they are trained again and would appear twice. A line cut short
    by a kill or a full disk is dropped too (it can only be the last one written)."""
    if path.is_file():
        keep = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                if json.loads(line)["step"] <= last_step:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        atomic_write_text(path, "".join(line + "\n" for line in keep))


def resume_recipe(run_dir: pathlib.Path, registry: Registry) -> Recipe:
    """The recipe a run directory was started with (its resolved form), validated again."""
    path = run_dir / "recipe.resolved.yaml"
    if not path.is_file():
        raise RunDirError(f"{run_dir}: nothing to resume: no recipe.resolved.yaml. "
                          "Start a run with 'lrfr run RECIPE --out DIR'.")
    data, origins = load_recipe_data(path)
    return validate(data, origins, registry, path)


