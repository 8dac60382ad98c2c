"""The ``lrfr`` command line: run, validate, plugins, show.

Errors the user can fix print one message and exit with status 1; ``--traceback`` shows the Python traceback.
"""

from __future__ import annotations

import json
import pathlib
import sys
import traceback
import warnings
from typing import Any

import click

from ._version import __version__
from .data_commands import data
from .errors import LrfrError, LrfrWarning
from .hookspecs import KINDS

SET_HELP = "Override a recipe value: DOTTED.PATH=VALUE (YAML), e.g. --set train.epochs=2. Repeatable."


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    """lrfr's own warnings as one 'Warning: ...' line (no source line of lrfr's code); others as Python shows them."""
    if issubclass(category, LrfrWarning):
        click.echo(f"Warning: {message}", err=True)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


class LrfrGroup(click.Group):
    """Turns LrfrError, and an OSError of writing (full disk, read-only or forbidden folder), into 'Error: ...' and
    exit status 1, without a traceback unless --traceback."""

    #: How to write elsewhere, per command, in write-failure messages (a command may set ctx.meta's
    #: "lrfr.write_elsewhere" instead, as 'lrfr data pack' does).
    WRITE_ELSEWHERE = {"run": "run with --out DIR on another disk", "eval": "pass --out DIR on another disk",
                       "report": "pass --out DIR on another disk"}

    def invoke(self, ctx: click.Context) -> Any:
        from .errors import WriteError
        from .write_errors import is_write_failure

        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except LrfrError as exc:
            self._fail(ctx, self._write_message(ctx, exc) if isinstance(exc, WriteError) else str(exc))
        except OSError as exc:
            if not is_write_failure(exc):
                raise
            self._fail(ctx, self._write_message(ctx, exc, maybe_read=True))

    def _write_message(self, ctx: click.Context, exc: OSError, maybe_read: bool = False) -> str:
        """The write failure in words, with this command's way of writing elsewhere."""
        from .write_errors import message as write_message

        elsewhere = ctx.meta.get("lrfr.write_elsewhere") or self.WRITE_ELSEWHERE.get(ctx.invoked_subcommand or "")
        return write_message(exc.filename, exc.errno, exc.strerror or str(exc), elsewhere=elsewhere,
                             maybe_read=maybe_read, run=ctx.invoked_subcommand == "run")

    @staticmethod
    def _fail(ctx: click.Context, text: str) -> None:
        if ctx.meta.get("lrfr.traceback"):
            traceback.print_exc()
        click.echo(f"Error: {text}", err=True)
        ctx.exit(1)


@click.group(cls=LrfrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="lrfr (lrfr-plugins)")
@click.option("--traceback", is_flag=True, help="Show the Python traceback of errors (for bug reports).")
@click.pass_context
def main(ctx: click.Context, traceback: bool) -> None:
    """Low-resolution face recognition for InsightFace: train, evaluate and export from YAML recipes.

    \b
    Start here:
      lrfr run recipes/demo.yaml          train on built-in synthetic faces, evaluate at 112..7 px, export ONNX
      lrfr plugins                        what is installed (heads, datasets, protocols, ...)
      lrfr show head arcface              one plugin's parameters
      lrfr validate recipes/demo.yaml     check a recipe without running it
    """
    ctx.meta["lrfr.traceback"] = traceback


def _registry():
    from . import get_registry

    return get_registry()


@main.command()
@click.argument("recipe", required=False, type=click.Path(dir_okay=False, path_type=pathlib.Path))
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE", help=SET_HELP)
@click.option("--out", type=click.Path(file_okay=False, path_type=pathlib.Path),
              help="Run directory. Default: runs/<recipe name>.")
@click.option("--overwrite", is_flag=True, help="Replace the run in the run directory once the new one has finished "
              "(it trains in DIR.new; the old run stays until then; your other files stay).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, path_type=pathlib.Path), metavar="RUN_DIR",
              help="Continue the run in RUN_DIR from its last checkpoint (the recipe comes from RUN_DIR).")
@click.option("--progress/--no-progress", default=True, help="Show progress bars (default: on).")
def run(recipe: pathlib.Path | None, overrides: tuple[str, ...], out: pathlib.Path | None, overwrite: bool,
        resume_dir: pathlib.Path | None, progress: bool) -> None:
    """Train, finetune, evaluate and export as RECIPE says, into a run directory.

    The run directory gets recipe.resolved.yaml (every default filled, each plugin's provider and version),
    checkpoint.pt, metrics.json, results.md, accuracy_vs_resolution.png, model.onnx and run.log. The results
    table is printed at the end.
    """
    from .recipe import load_recipe
    from .run_dir import claim_run_dir, replaced_target
    from .runner import execute, resume_recipe

    registry = _registry()
    if resume_dir is not None:
        if recipe is not None or overrides or out is not None or overwrite:
            raise LrfrError("--resume RUN_DIR continues a run with the recipe saved in RUN_DIR; "
                            "do not pass RECIPE, --set, --out or --overwrite with it.")
        target = resume_dir
    else:
        if recipe is None:
            raise LrfrError("missing RECIPE: e.g. 'lrfr run recipes/demo.yaml' (or --resume RUN_DIR).")
        resolved = load_recipe(recipe, overrides, registry=registry)
        target = out if out is not None else pathlib.Path("runs") / resolved.name
    with claim_run_dir(target, overwrite=overwrite, resume=resume_dir is not None) as run_dir:
        if resume_dir is not None:
            resolved = resume_recipe(run_dir, registry)
        final = replaced_target(run_dir) or run_dir
        try:
            result = execute(resolved, registry, run_dir, resume=resume_dir is not None, progress=progress)
        except KeyboardInterrupt:
            replacing = f" It replaces {final} when it finishes; {final} is untouched until then." \
                if final != run_dir else ""
            click.echo(f"\nInterrupted. Continue from the last finished epoch with: lrfr run --resume {run_dir}."
                       f"{replacing}", err=True)
            sys.exit(130)
    run_dir = final
    click.echo(result.results_markdown)
    shown = [name for name in ("model.onnx", "results.md", "accuracy_vs_resolution.png", "metrics.json",
                               "recipe.resolved.yaml") if (run_dir / name).exists()]
    click.echo(f"Run directory: {run_dir}  ({', '.join(shown)})")


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=pathlib.Path))
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE", help=SET_HELP)
@click.option("--quiet", "-q", is_flag=True, help="Only report problems; do not print the resolved recipe.")
def validate(recipe: pathlib.Path, overrides: tuple[str, ...], quiet: bool) -> None:
    """Check RECIPE (and its 'extends' chain) without reading data or building a model.

    Every problem is reported at once, with the file and dotted path it comes from. On success the resolved
    recipe (all defaults filled in) is printed.
    """
    from .recipe import load_recipe

    resolved = load_recipe(recipe, overrides, registry=_registry())
    if not quiet:
        click.echo(resolved.dump(), nl=False)
    click.echo(f"OK: {recipe} is a valid recipe.", err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list of {kind, name, provider, version, flags, ...}.")
def plugins(as_json: bool) -> None:
    """List every registered plugin with the package that provides it.

    The flags column shows the contract flags that are set: for heads needs_quality, default_quality,
    calibrated_quality and stochastic; for quality estimators uses_embeddings and cacheable; for finetuners
    needs_labels (with default params). --json lists every flag with its value.

    Plugins come from the 'lrfr' entry-point group of installed packages. LRFR_LOAD_PLUGINS=a,b loads only
    those third-party plugins (empty: none); LRFR_BLOCK_PLUGINS=a,b never loads them.
    """
    from .results import markdown_table

    registry = _registry()
    rows = [info.as_dict() for info in registry]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(markdown_table([{**{k: r[k] for k in ("kind", "name", "provider", "version")},
                                    "flags": _compact_flags(r["flags"]), "doc": r["doc"]} for r in rows]))
    for err in registry.load_errors:
        click.echo(f"Warning: plugin not loaded: {err.source} from {err.provider}: {err.error}", err=True)


def _compact_flags(flags: dict[str, Any]) -> str:
    """The flags that are set, for a table column: true ones by name, values as name=value; false ones left out."""
    return ", ".join(key if value is True else f"{key}={value}" for key, value in flags.items()
                     if value is not False and value is not None)


@main.command()
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def show(kind: str, name: str, as_json: bool) -> None:
    """Show a plugin's parameters: type, default and what each one does."""
    from .params import describe
    from .results import markdown_table

    info = _registry().get(kind, name)
    rows = describe(info.params_cls)
    if as_json:
        click.echo(json.dumps({**info.as_dict(), "params": rows}, indent=2, default=str))
        return
    click.echo(f"{kind} '{name}' from {info.provider} ({info.cls.__module__}.{info.cls.__qualname__})")
    if info.doc:
        click.echo(f"  {info.doc}")
    flags = info.flags
    if flags:
        listed = ", ".join(f"{key}={value}" for key, value in flags.items())
        click.echo(f"  Flags: {listed}{' (with default params)' if kind == 'finetuner' else ''}")
    click.echo("")
    if rows:
        click.echo(markdown_table([{"parameter": r["name"], "type": r["type"], "default": json.dumps(r["default"], default=str),
                                    "bounds": r["bounds"], "doc": r["doc"]} for r in rows]))
    else:
        click.echo("(no parameters)")
    click.echo(f"\nIn a recipe: {{name: {name}, params: {{...}}}}")


@main.command("eval")
@click.argument("model", type=click.Path(path_type=pathlib.Path))
@click.option("--protocol", "-p", required=True, help="Protocol to run: lfw, bin, qmul-survface, scface, synthetic "
                                                        "('lrfr plugins' lists them).")
@click.option("--set", "assignments", multiple=True, metavar="PARAM=VALUE",
              help="A protocol parameter, e.g. --set root=/data/lfw_crop --set preset=insightface "
                   "--set sizes=[112,14,7] (YAML values; 'lrfr show protocol NAME' lists them).")
@click.option("--backbone", metavar="NAME", help="Architecture of a bare state dict such as arcface_torch's "
                                                  "backbone.pth, e.g. iresnet50; with an .onnx file, 'onnx' measures "
                                                  "it imported as the torch module a recipe would fine-tune.")
@click.option("--device", default="auto", type=click.Choice(["auto", "cpu", "cuda"]), show_default=True)
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object {protocol, preset, results, ...}.")
@click.option("--out", type=click.Path(file_okay=False, path_type=pathlib.Path),
              help="Also write eval.json (with ROC/CMC curves), results.md and plots into this folder.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars (default: on; off with --json).")
@click.option("--input-mean", type=float, metavar="FLOAT",
              help="ONNX models: feed (pixel - MEAN) / STD of 0..255 pixels. Default: inferred from the graph, 0 when "
                   "the input reaches a constant Sub/Add/Mul/Div or BatchNormalization before the first Conv (the "
                   "graph normalises its own input), else 127.5.")
@click.option("--input-std", type=float, metavar="FLOAT",
              help="ONNX models: the divisor STD (default: inferred, 1 or 127.5 as for --input-mean).")
@click.option("--bgr/--rgb", "bgr", default=None,
              help="ONNX models: channel order the model was trained on (default: RGB, InsightFace's; a graph does "
                   "not tell).")
@click.option("--output", "output_name", metavar="NAME",
              help="ONNX models: the output that is the embedding, for a model with several outputs.")
def eval_(model: pathlib.Path, protocol: str, assignments: tuple[str, ...], backbone: str | None, device: str,
          batch_size: int, as_json: bool, out: pathlib.Path | None, progress: bool, input_mean: float | None,
          input_std: float | None, bgr: bool | None, output_name: str | None) -> None:
    """Measure MODEL on one protocol at low resolution.

    MODEL is a run directory of 'lrfr run', a checkpoint, a bare state dict (with --backbone), an ONNX
    recognition model or an InsightFace model-pack folder (e.g. ~/.insightface/models/buffalo_l). ONNX models
    are fed as their graph says: raw 0..255 pixels when the graph normalises its own input (the input tensor
    reaches a constant Sub/Mul/... or a BatchNormalization before the first Conv), else RGB
    (x - 127.5) / 127.5; the 'input:' line says which and why. --input-mean/--input-std/--bgr override that.

    \b
      lrfr eval runs/approach2 -p lfw --set root=/data/lfw_crop --set pairs=/data/pairs.txt
      lrfr eval w600k_r50.onnx -p bin --set path=/data/faces_webface_112x112/lfw.bin --json
    """
    from . import evaluate as ev

    loaded, result = ev.evaluate(model, protocol, assignments, registry=_registry(), backbone=backbone,
                                 device=device, batch_size=batch_size, progress=progress and not as_json,
                                 input_mean=input_mean, input_std=input_std, bgr=bgr, output=output_name)
    if as_json and ev.feeding_warning(loaded):
        click.echo(ev.feeding_warning(loaded), err=True)  # the text form carries it itself
    click.echo(ev.as_json(loaded, result) if as_json else ev.as_text(loaded, result))
    if out is not None:
        written = ev.write_outputs(out, loaded, result)
        click.echo(f"Wrote {', '.join(written)} to {out}", err=as_json)


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=pathlib.Path))
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "latex"]), default="md", show_default=True,
              help="Format of the table printed (all three are written with --out).")
@click.option("--out", type=click.Path(file_okay=False, path_type=pathlib.Path), default=pathlib.Path("report"),
              show_default=True, help="Folder for report.md/.csv/.tex and the PNG plots.")
@click.option("--merge-seeds", is_flag=True,
              help="Runs with the same recipe name (one method, several seeds) become one column: the mean over them "
                   "± the standard deviation across them. Without it every run is a column and ± is the protocol's "
                   "own spread (e.g. over folds).")
def report(runs: tuple[pathlib.Path, ...], fmt: str, out: pathlib.Path, merge_seeds: bool) -> None:
    """The founding study's comparison table for RUNS (one column per run, named after its recipe).

    Rows: LFW 112/56/28/14/7, QMUL-SurvFace, SCface distances 1-3 (or their synthetic stand-ins), then any
    other protocol. Plots: accuracy against resolution per method, ROC curves, CMC curves.

    \b
      lrfr report runs/arcface runs/adaface runs/approach2 --out report/
      lrfr report runs/*/seed* --merge-seeds --out report/
    """
    from .report import FORMATS, make_report

    loaded, rows, written = make_report(list(runs), out, merge=merge_seeds)
    click.echo(FORMATS[fmt](loaded, rows))
    click.echo(f"Wrote {', '.join(written)} to {out}", err=True)


@main.command("import-config")
@click.argument("config", type=click.Path(dir_okay=False, path_type=pathlib.Path))
@click.option("--base", metavar="RECIPE", default=None,
              help="Write 'extends: RECIPE' and only the keys that differ from it. RECIPE is read from the "
                   "current folder and written as given, so save the output in the current folder.")
@click.option("--world-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="GPUs (processes) the arcface_torch run used: warm-up steps = num_image // (batch_size * "
                   "world_size) * warmup_epoch.")
def import_config(config: pathlib.Path, base: str | None, world_size: int) -> None:
    """Map an arcface_torch config file (configs/*.py) onto a recipe, printed as YAML.

    The file is never executed: it is parsed, and only 'config.<field> = <literal>' lines (plus arithmetic on
    earlier config fields, e.g. config.num_epoch // 10) are accepted. Its fields are merged over arcface_torch's
    configs/base.py defaults. Assumptions are written as comments at the top of the output.

    \b
    Mapping:
      network r18/r34/r50/r100/r200 -> iresnetN, mbf -> mobilefacenet (others refused)
      margin_list (1,m,0) -> arcface (scale 64, fallback none, gradient detached)
                  (1,0,m) -> cosface (scale 64); else combined {m1,m2,m3} (with a warning)
      embedding_size -> backbone.params.embedding_size
      sample_rate -> train.sample_rate    fp16 -> train.amp: fp16
      batch_size -> train.batch_size (per GPU)    num_epoch -> train.epochs
      optimizer/lr/weight_decay -> train.optimizer (SGD momentum 0.9, hard-coded in arcface_torch)
      warmup_epoch -> train.warmup_steps (needs --world-size); schedule: polynomial
      rec -> data: insightface-rec root    val_targets -> eval: bin <rec>/<target>.bin, preset insightface
      seed, num_workers -> seed, train.num_workers; degradations: [] (dali_aug is not mapped)

    \b
      lrfr import-config configs/ms1mv3_r50.py > my.yaml
    """
    from .import_config import import_config as convert

    text, warnings = convert(config, base=base, world_size=world_size)
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)
    click.echo(text, nl=False)


main.add_command(data)  # lrfr data pack / info

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
