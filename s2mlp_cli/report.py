"""Result documents shared by `bench` and `eval`: `{"env": {...}, "results": [...]}` as JSON, CSV or Markdown.

Files are written atomically (a temporary file beside the target, renamed on success), so an interrupted
run never leaves a half-written result behind.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from s2mlp_cli.files import write_text_atomic

FORMATS = (".json", ".csv", ".md")


def output_format(path: str) -> str:
    """The format an --output path asks for; ValueError naming the accepted ones otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"unknown output format {suffix or '(none)'!r} for {path}; use {', '.join(FORMATS)}")
    return suffix


def document(env: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"env": env, "results": results}


def to_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, default=str) + "\n"


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
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


Column = tuple[str, Callable[[dict[str, Any]], str]]


def to_markdown(doc: dict[str, Any], columns: Sequence[Column], title: str) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(h for h, _ in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for r in doc["results"]:
        lines.append("| " + " | ".join(cell(r).replace("|", "\\|") for _, cell in columns) + " |")
    lines += ["", "Environment:", ""]
    lines += [f"- {k}: {v}" for k, v in doc["env"].items()]
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
