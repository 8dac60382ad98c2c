"""``lrfr eval``: one protocol on any model (run directory, checkpoint, backbone.pth, ONNX, InsightFace pack).

The JSON form is a contract other tools read: ``{"protocol", "preset", "results", "settings", "model"}`` with
``results`` as each protocol documents it (``lrfr_plugins.api.protocol.ProtocolResult.results``).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from .atomic import atomic_write_text
from .engine.models import LoadedModel, load_model
from .errors import RecipeError
from .recipe import parse_set
from .results import markdown_table


def protocol_params(assignments: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``--set root=/data/lfw --set sizes=[112,14]`` -> {"root": "/data/lfw", "sizes": [112, 14]} (YAML values)."""
    params: dict[str, Any] = {}
    for assignment in assignments:
        parts, value = parse_set(assignment)
        node = params
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError(f"--set {assignment!r}: {part} is already set to a value, not a mapping.")
            node = child
        node[parts[-1]] = value
    return params


def evaluate(model_path: str | pathlib.Path, protocol: str, assignments: tuple[str, ...] | list[str], *,
             registry: Any, backbone: str | None = None, device: str = "auto", batch_size: int = 256,
             progress: bool = True, input_mean: float | None = None, input_std: float | None = None,
             bgr: bool | None = None, output: str | None = None) -> tuple[LoadedModel, dict[str, Any]]:
    """Build the protocol first (so a wrong parameter fails before a model loads), then measure the model.

    ``input_mean``/``input_std``/``bgr``/``output`` apply to ONNX models (see ``lrfr_plugins.onnx_model.feeding``).
    """
    plugin = registry.create("protocol", protocol, **protocol_params(assignments))
    plugin.check()
    model = load_model(model_path, registry=registry, backbone=backbone, device=device, batch_size=batch_size,
                       input_mean=input_mean, input_std=input_std, bgr=bgr, output=output)
    result = plugin.evaluate(model.embed, progress=progress).as_dict()
    return model, result


def as_json(model: LoadedModel, result: dict[str, Any]) -> str:
    return json.dumps({"protocol": result["protocol"], "preset": result.get("preset"),
                       "results": result.get("results", {}), "settings": result.get("settings", {}),
                       "model": model.description})


def feeding_warning(model: LoadedModel) -> str | None:
    """The line telling an InsightFace user that ArcFaceONNX would feed this ONNX model differently, if it would."""
    return (model.description.get("feeding") or {}).get("insightface_warning")


def as_text(model: LoadedModel, result: dict[str, Any]) -> str:
    settings = result.get("settings") or {}
    feeding = model.description.get("feeding")
    lines = [f"# {result['protocol']}" + (f" (preset {result['preset']})" if result.get("preset") else ""),
             f"model: {model.description.get('kind')} {model.description.get('path')}"]
    if feeding:
        lines += [f"input: {feeding['summary']}", f"output: {feeding['output_name']}"]
    if feeding_warning(model):
        lines.append(feeding_warning(model))
    lines += ["", markdown_table(result["rows"]), ""]
    if settings:
        lines.append("Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    return "\n".join(lines)


def write_outputs(out: pathlib.Path, model: LoadedModel, result: dict[str, Any]) -> list[str]:
    """eval.json (with curves), results.md and the plots that apply, into ``out``."""
    from .plots import plot_accuracy_vs_resolution

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "eval.json", json.dumps({**result, "model": model.description}, indent=2))
    atomic_write_text(out / "results.md", as_text(model, result) + "\n")
    written = ["eval.json", "results.md"]
    if plot_accuracy_vs_resolution([result], out / "accuracy_vs_resolution.png",
                                   f"{result['protocol']}: {pathlib.Path(model.description['path']).name}"):
        written.append("accuracy_vs_resolution.png")
    return written
