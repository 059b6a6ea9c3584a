"""Terminal tables that fit their width (`FitTable`), and the tables of train, pull and predict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from s2mlp_cli.report.cells import Column, pct

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


def table(
    title: str, columns: Sequence[Column], rows: list[dict], styles: list[str] | None = None
) -> FitTable:
    return FitTable(title, columns, rows, styles, keep=("top-1", "img/s", "images/s", "model"))


TRAIN_COLUMNS: list[Column] = [
    ("model", lambda r: r["model"]),
    ("epochs", lambda r: str(r["epochs"])),
    ("best top-1", lambda r: pct(r["best_top1"])),
    ("top-5", lambda r: pct(r["best_top5"])),
    ("at epoch", lambda r: "-" if r["best_epoch"] is None else f"{r['best_epoch']} ({r['best_from']})"),
    ("last top-1", lambda r: pct(r["last_top1"])),
]


def train_tables(doc: dict[str, Any]) -> list[Any]:
    """The run's best and last validation numbers, then where the weights are."""
    r = doc["results"][0]
    return [table("s2mlp train", TRAIN_COLUMNS, doc["results"]), Text(f"best weights: {r['weights']}")]


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
