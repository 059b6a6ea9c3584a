"""How a value is written in a table cell, and the column type every table shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Column = tuple[str, Callable[[dict[str, Any]], str]]
ORIGIN = {"given": "the file given", "pulled": "the source you pulled", "card": "the card's source"}


def num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


def span(pair: Sequence[float] | None, fmt: str) -> str:
    return "-" if not pair else f"{format(pair[0], fmt)}–{format(pair[1], fmt)}"


def rate(value: float | None) -> str:
    """Images/s: one decimal below 1000, none above (the terminal's width is worth more)."""
    return "-" if value is None else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def lat(d: dict | None, a: str, b: str) -> str:
    return "-" if not d else f"{d[a]:.1f} / {d[b]:.1f}"


def md_escape(text: str) -> str:
    """Text inside a Markdown table cell: one line, no cell break, no links, code or HTML (emphasis
    characters stay: they cannot reach outside the cell)."""
    flat = " ".join(str(text).splitlines())
    return "".join("\\" + ch if ch in "\\|`[]<>" else ch for ch in flat)
