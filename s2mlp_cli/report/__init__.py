"""Result documents of every command: `{"env": {...}, "results": [...]}` as JSON, CSV or Markdown
files (here), and as rich tables for the terminal (`tables`: the fitting table and each command's; `eval`
and `bench`: theirs; `cells`: how a value is written in a cell).

Files are written atomically (a temporary file beside the target, renamed on success), so an interrupted
run never leaves a half-written result behind. A document from an interrupted run says so
(`"partial": true`) in every format. Terminal tables keep to the columns that matter, so they stay whole
at 100 columns; everything else is in the files and in `--json`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from s2mlp_cli.files import write_text_atomic
from s2mlp_cli.report.cells import Column, md_escape

FORMATS = (".json", ".csv", ".md")


def output_format(path: str) -> str:
    """The format an output path asks for; ValueError naming the accepted ones otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"unknown output format {suffix or '(none)'!r} for {path}; use {', '.join(FORMATS)}")
    return suffix


def document(env: dict[str, Any], results: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"env": env, "results": results, **extra}


def finite(value: Any) -> Any:
    """The value with every NaN or infinity replaced by None, so the JSON is strict (no bare NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def to_json(doc: dict[str, Any]) -> str:
    return json.dumps(finite(doc), indent=2, default=str, allow_nan=False) + "\n"


def flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become `outer_inner` columns; lists become space-separated values."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}_"))
        elif isinstance(value, list | tuple):
            flat[name] = " ".join(map(str, value))
        else:
            flat[name] = value
    return flat


def to_csv(doc: dict[str, Any]) -> str:
    rows = [flatten(r) for r in doc["results"]]
    if doc.get("partial"):
        rows = [{**r, "partial": True} for r in rows]
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def markdown_table(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> list[str]:
    """A Markdown table's lines: the header, the rule, one line per row (each cell escaped: one line, no
    `|`, no markup or HTML from what a result file says)."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(md_escape(cell(r)) for _, cell in columns) + " |")
    return lines


def to_markdown(doc: dict[str, Any], columns: Sequence[Column], title: str) -> str:
    if doc.get("partial"):
        title += " (partial: interrupted)"
    lines = [f"### {title}", "", *markdown_table(columns, doc["results"])]
    models = [r for r in doc["results"] if r.get("preprocess")]  # eval: what each number was made with
    if models:
        lines += ["", "Preprocessing and weights:", ""]
    for r in {r["model"]: r for r in models}.values():
        p = r["preprocess"]
        lines.append(
            f"- {r['model']}: resize {p.get('resize')} {p['interpolation']}, centre crop {p['input_size']} "
            f"(crop_pct {p['crop_pct']}), mean {tuple(p['mean'])}, std {tuple(p['std'])}; weights "
            f"{r.get('weights')}, sha256 {r.get('weights_sha256') or 'not recorded'}"
        )
    lines += ["", "Environment:", ""]
    lines += [f"- {k}: {v}" for k, v in doc["env"].items()]
    lines += [f"- warning: {w}" for w in doc.get("warnings", [])]
    return "\n".join(lines) + "\n"


def write(path: str, doc: dict[str, Any], columns: Sequence[Column], title: str) -> None:
    fmt = output_format(path)
    if fmt == ".json":
        text = to_json(doc)
    elif fmt == ".csv":
        text = to_csv(doc)
    else:
        text = to_markdown(doc, columns, title)
    write_text_atomic(path, text)


from s2mlp_cli.report.bench import (  # noqa: E402  (the tables below the documents)
    BENCH_COLUMNS,
    bench_conditions,
    bench_model,
    bench_note,
    bench_progress,
    bench_tables,
)
from s2mlp_cli.report.eval import EVAL_COLUMNS, eval_tables  # noqa: E402
from s2mlp_cli.report.tables import FitTable, predict_tables, pull_table, train_tables  # noqa: E402

__all__ = [
    "BENCH_COLUMNS",
    "EVAL_COLUMNS",
    "FORMATS",
    "Column",
    "FitTable",
    "bench_conditions",
    "bench_model",
    "bench_note",
    "bench_progress",
    "bench_tables",
    "document",
    "eval_tables",
    "finite",
    "markdown_table",
    "output_format",
    "predict_tables",
    "pull_table",
    "to_csv",
    "to_json",
    "train_tables",
    "write",
    "write_text_atomic",
]
