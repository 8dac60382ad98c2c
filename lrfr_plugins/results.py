"""Results tables: one Markdown table per protocol, the same text in the terminal and in results.md."""

from __future__ import annotations

from typing import Any, Iterable


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: Iterable[str] | None = None) -> str:
    if not rows:
        return "(no rows)"
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    body = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(columns)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in body]
    return "\n".join(out)


def _before_and_after(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of both evaluations interleaved (each row of the starting model above the fine-tuned one)."""
    rows = []
    for i, row in enumerate(after):
        if i < len(before):
            rows.append({"model": "before fine-tuning", **before[i]})
        rows.append({"model": "fine-tuned", **row})
    return rows


def results_markdown(run_name: str, evaluations: list[dict[str, Any]], train: dict[str, Any] | None = None, *,
                     before_finetune: list[dict[str, Any]] | None = None) -> str:
    """The run's results.md: a table per protocol, with the settings that produced the numbers under it; with
    ``before_finetune`` (the same protocols on the starting model), both models' rows in each table."""
    before = {ev["protocol"]: ev for ev in before_finetune or []}
    parts = [f"# Results: {run_name}", ""]
    if train and not train.get("steps"):
        parts += ["No margin training (train.epochs: 0): the backbone came from its weights.", ""]
    elif train:
        parts += [f"Trained {train.get('steps')} steps ({train.get('epochs')} epochs) in "
                  f"{train.get('train_seconds')} s; final loss {_cell(train.get('final_loss'))}."
                  + (f" Skipped {train['skipped_images']} corrupt images (see run.log)." if train.get("skipped_images")
                     else ""), ""]
    for ev in evaluations:
        rows = _before_and_after(before[ev["protocol"]]["rows"], ev["rows"]) if ev["protocol"] in before else ev["rows"]
        parts += [f"## {ev['protocol']}", "", markdown_table(rows), ""]
        settings = ev.get("settings") or {}
        if settings:
            parts.append("Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
            parts.append("")
    return "\n".join(parts)
