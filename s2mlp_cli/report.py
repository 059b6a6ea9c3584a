"""Result documents shared by `bench` and `eval`: `{"env": {...}, "results": [...]}` as JSON, CSV or
Markdown files, and as rich tables for the terminal.

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from s2mlp_cli.files import write_text_atomic

FORMATS = (".json", ".csv", ".md")
Column = tuple[str, Callable[[dict[str, Any]], str]]
__all__ = [
    "FORMATS",
    "document",
    "write",
    "write_text_atomic",
    "to_csv",
    "to_json",
    "bench_tables",
    "train_tables",
]


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
    """A Markdown table's lines: the header, the rule, one line per row (a `|` in a cell escaped)."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(cell(r).replace("|", "\\|") for _, cell in columns) + " |")
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


# --- columns ------------------------------------------------------------------------------------------


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


def _range(pair: Sequence[float] | None, fmt: str) -> str:
    return "-" if not pair else f"{format(pair[0], fmt)}–{format(pair[1], fmt)}"


def _rate(value: float | None) -> str:
    """Images/s: one decimal below 1000, none above (the terminal's width is worth more)."""
    return "-" if value is None else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def _lat(d: dict | None, a: str, b: str) -> str:
    return "-" if not d else f"{d[a]:.1f} / {d[b]:.1f}"


EVAL_COLUMNS: list[Column] = [
    ("model", lambda r: r["model"]),
    ("set", lambda r: str(r.get("set") or "val")),
    ("top-1", lambda r: _pct(r["top1"])),
    ("95% CI", lambda r: _range(r.get("top1_ci95"), ".2f")),
    ("top-5", lambda r: _pct(r["top5"])),
    ("loss", lambda r: _num(r["loss"], ".4f")),
    ("images", lambda r: f"{r['images']:,}"),
    ("skipped", lambda r: str(r["skipped"])),
    ("images/s", lambda r: _num(r["images_per_s"], ".1f")),
    ("paper", lambda r: _pct(r["paper_top1"])),
    ("Δ", lambda r: _num(r["delta_top1"], "+.2f") + ("*" if r.get("paper_in_ci95") else "")),
]


def bench_note(r: dict[str, Any]) -> str:
    parts = [] if r["status"] == "ok" else [r["status"]]
    if r["detail"]:
        parts.append(r["detail"])
    if r.get("compile_s") is not None:
        bs1 = (r.get("extra") or {}).get("compile_bs1_s")
        parts.append(
            f"compile {r['compile_s']:.1f} s" + (f" (+{bs1:.1f} s for batch 1)" if bs1 is not None else "")
        )
    if r.get("train_throughput") is not None:
        parts.append(f"train {r['train_throughput']:.1f} img/s, {r['train_peak_memory_mib']:.0f} MiB")
    return "; ".join(parts)


def bench_model(r: dict[str, Any]) -> str:
    """The model, and what ran it when not PyTorch eager: `vip_s7 (onnxruntime)`."""
    runtime = r.get("runtime") or "torch"
    return r["model"] if runtime == "torch" else f"{r['model']} ({runtime})"


BENCH_COLUMNS: list[Column] = [
    ("model", bench_model),
    ("params (M)", lambda r: _num(r["params_m"], ".2f")),
    ("GMACs", lambda r: _num(r["gmacs"], ".2f")),
    ("batch", lambda r: _num(r["batch_size"] or r["requested_batch_size"], "d")),
    ("images/s", lambda r: _num(r["throughput"], ".1f")),
    ("IQR", lambda r: _range(r["throughput_iqr"], ".1f")),
    ("× ref", lambda r: _num(r.get("throughput_ratio"), ".2f")),
    ("× ref range", lambda r: _range(r.get("throughput_ratio_range"), ".2f")),
    ("ref", lambda r: r.get("reference") or "-"),
    ("ms/batch p50 / p90", lambda r: _lat(r["latency_ms"], "p50", "p90")),
    ("ms bs1 p50 / p99", lambda r: _lat(r["latency_bs1_ms"], "p50", "p99")),
    ("peak MiB", lambda r: _num(r["peak_memory_mib"], ".0f")),
    ("mem × ref", lambda r: _num(r.get("memory_ratio"), ".2f")),
    ("paper top-1", lambda r: "-" if r["paper_top1"] is None else f"{r['paper_top1']:.1f}%"),
    ("notes", bench_note),
]
# what the terminal shows, under shorter headers (within 100 columns), and the cells it writes tersely
_BENCH_TERMINAL = {
    "model": "model",
    "params (M)": "params M",
    "GMACs": "GMACs",
    "batch": "batch",
    "images/s": "img/s",
    "IQR": "IQR",
    "× ref": "× ref",
    "ms bs1 p50 / p99": "bs1 ms",
    "peak MiB": "MiB",
    "paper top-1": "top-1",
}
_TERSE_CELLS = {
    "images/s": lambda r: _rate(r["throughput"]),
    "IQR": lambda r: "-" if not r["throughput_iqr"] else "–".join(map(_rate, r["throughput_iqr"])),
    "ms bs1 p50 / p99": lambda r: "-" if not r["latency_bs1_ms"] else f"{r['latency_bs1_ms']['p50']:.1f}",
}


# --- terminal tables ------------------------------------------------------------------------------------


WRAP_WIDTH = 40  # a folding column (a path, a note) is given at least this much before others are left out


class FitTable:
    """A table that fits the width it is printed at, with no cell cut: columns are left out from the
    right (never the `keep` ones, the first always kept) until it fits, and a line names them (`--json`
    has every field). `wrap` columns (free text: paths, notes) fold onto more lines instead.
    `align`: header -> "left" / "right" (default: the first column left, the rest right)."""

    def __init__(
        self,
        title: str,
        columns: Sequence[Column],
        rows: list[dict],
        styles: list[str] | None = None,
        keep: Sequence[str] = (),
        wrap: Sequence[str] = (),
        align: dict[str, str] | None = None,
    ) -> None:
        self.title, self.columns, self.rows = title, list(columns), rows
        self.styles = styles or [""] * len(rows)
        self.keep, self.wrap, self.align = set(keep) | {columns[0][0]}, set(wrap), align or {}
        self.cells = [[cell(r) for _, cell in self.columns] for r in rows]

    def table(self, shown: list[int]) -> Table:
        table = Table(
            title=self.title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
        )
        for i in shown:
            header = self.columns[i][0]
            justify = self.align.get(header, "left" if i == 0 else "right")
            folds = header in self.wrap
            table.add_column(header, justify=justify, no_wrap=not folds, overflow="fold")
        for k, row in enumerate(self.cells):
            table.add_row(*(Text(row[i]) for i in shown), style=self.styles[k])
        return table

    def fitting(self, width: int) -> tuple[list[int], list[str]]:
        """The columns shown at `width`, and the headers left out."""
        from rich.cells import cell_len

        need = [
            max([cell_len(h)] + [cell_len(c[i]) for c in self.cells])
            if h not in self.wrap
            else min(WRAP_WIDTH, max([cell_len(h)] + [cell_len(c[i]) for c in self.cells]))
            for i, (h, _) in enumerate(self.columns)
        ]
        shown = list(range(len(self.columns)))
        dropped: list[str] = []
        while sum(need[i] for i in shown) + 2 * (len(shown) - 1) + 2 > width:
            droppable = [i for i in shown if self.columns[i][0] not in self.keep]
            if not droppable:
                break
            shown.remove(droppable[-1])
            dropped.insert(0, self.columns[droppable[-1]][0])
        return shown, dropped

    def __rich_console__(self, console: Any, options: Any) -> Any:
        shown, dropped = self.fitting(options.max_width)
        yield self.table(shown)
        if dropped:
            yield Text(f"left out at this width: {', '.join(dropped)} (--json has every field)")


def _table(
    title: str, columns: Sequence[Column], rows: list[dict], styles: list[str] | None = None
) -> FitTable:
    return FitTable(title, columns, rows, styles, keep=("top-1", "img/s", "images/s", "model"))


TRAIN_COLUMNS: list[Column] = [
    ("model", lambda r: r["model"]),
    ("epochs", lambda r: str(r["epochs"])),
    ("best top-1", lambda r: _pct(r["best_top1"])),
    ("top-5", lambda r: _pct(r["best_top5"])),
    ("at epoch", lambda r: "-" if r["best_epoch"] is None else f"{r['best_epoch']} ({r['best_from']})"),
    ("last top-1", lambda r: _pct(r["last_top1"])),
]


def train_tables(doc: dict[str, Any]) -> list[Any]:
    """The run's best and last validation numbers, then where the weights are."""
    r = doc["results"][0]
    return [_table("s2mlp train", TRAIN_COLUMNS, doc["results"]), Text(f"best weights: {r['weights']}")]


_ORIGIN = {"given": "the file given", "pulled": "the source you pulled", "card": "the card's source"}


def bench_tables(doc: dict[str, Any]) -> list[Any]:
    """The bench table (the terminal's columns), a note per row that has one, and the conditions."""
    env, rows = doc["env"], doc["results"]
    columns = [
        (_BENCH_TERMINAL[h], _TERSE_CELLS.get(h, cell)) for h, cell in BENCH_COLUMNS if h in _BENCH_TERMINAL
    ]
    styles = [{"ok": "", "oom": "yellow", "unsupported": "dim", "error": "red"}[r["status"]] for r in rows]
    title = f"s2mlp bench on {env['device_name']} ({env['device']})" + (
        " (partial: interrupted)" if doc.get("partial") else ""
    )
    parts: list[Any] = [_table(title, columns, rows, styles)]
    for r in rows:
        if note := bench_note(r):
            parts.append(Text(f"{r['model']} (batch {r['requested_batch_size']}): {note}"))
    parts.append(Text(bench_conditions(doc)))
    return parts


def bench_progress(r: dict[str, Any]) -> str:
    if r["status"] != "ok":
        return f"{bench_model(r)} at batch {r['requested_batch_size']}: {r['status']}: {r['detail']}"
    return f"{bench_model(r)}: {r['throughput']:.1f} images/s at batch {r['batch_size']}"


def bench_conditions(doc: dict[str, Any]) -> str:
    """The lines under the bench table: versions, math mode, timing, what the ratios and memory mean."""
    env, rows = doc["env"], doc["results"]
    keys = (
        "torch",
        "timm",
        "cuda",
        "driver",
        "cpu_threads",
        "dtype",
        "math_mode",
        "warmup",
        "iters",
        "rounds",
    )
    parts = [f"{k} {env[k]}" for k in keys if env.get(k) is not None]
    parts.append(f"channels_last {env.get('channels_last')}, compile {env.get('compile')}")
    if env.get("dtype", "float32") != "float32":
        parts.append("autocast casts the weights on every call, batch-1 latency included")
    parts.append("× ref: images/s over the S²-MLPv2 variant of the model's size class (`ref` in --json)")
    if env["device"] == "cuda":
        parts.append("memory: torch.cuda.max_memory_allocated")
    else:
        base = [
            r["extra"].get("baseline_rss_mib") for r in rows if r.get("extra", {}).get("baseline_rss_mib")
        ]
        parts.append(
            "memory: peak RSS of each worker process"
            + (f", of which ~{min(base):.0f} MiB is Python, torch and timm before the model" if base else "")
        )
    if "load_before" in env:
        parts.append(
            f"load average {env['load_before']} before, {env['load_after']} after; "
            f"CPU steal {env.get('cpu_steal_pct', '-')}%"
        )
    return "; ".join(parts)


def pull_table(rows: list[dict[str, Any]]) -> FitTable:
    columns: list[Column] = [
        ("variant", lambda r: r["variant"]),
        ("status", lambda r: r["status"]),
        ("MiB", lambda r: f"{r['size'] / 2**20:.1f}" if "size" in r else ""),
        ("verified against", lambda r: r.get("verified", "")),
        ("source", lambda r: r.get("source", "")),
    ]
    if any(r.get("detail") for r in rows):  # the paths print whole below the table, not folded in it
        columns.append(("next step", lambda r: r.get("detail", "")))
    styles = {"pulled": "green", "cached": "green", "failed": "red", "skipped": "dim"}
    return FitTable(
        "s2mlp pull",
        columns,
        rows,
        [styles[r["status"]] for r in rows],
        keep=("status", "next step"),
        wrap=("source", "next step"),
        align={"status": "left", "verified against": "left", "source": "left", "next step": "left"},
    )


def predict_tables(doc: dict[str, Any]) -> list[Any]:
    """Each image's top class with its probability, then the rest of its top-k; the images skipped."""
    columns: list[Column] = [
        ("image", lambda r: r["image"]),
        ("class", lambda r: r["top"][0]["name"]),
        ("prob", lambda r: f"{100 * r['top'][0]['prob']:.1f}%"),
        ("then", lambda r: ", ".join(f"{t['name']} {100 * t['prob']:.1f}%" for t in r["top"][1:]) or "-"),
    ]
    env = doc["env"]
    parts: list[Any] = [
        FitTable(
            f"s2mlp predict: {env['variant']} ({env['classes']} classes)",
            columns,
            doc["results"],
            keep=("class", "prob"),
            wrap=("image", "then"),
            align={"class": "left", "then": "left", "image": "left"},
        )
    ]
    for s in doc.get("skipped", []):
        parts.append(Text(f"skipped {s['image']}: {s['error']}"))
    parts.append(Text(f"weights {env['weights']}; {env['device_name']} ({env['device']}), {env['dtype']}"))
    return parts
