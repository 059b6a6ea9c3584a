"""The one way structured input is read: JSON files bounded in size and depth, strict about NaN, and
values checked for type, range and finiteness, each problem one line naming the file, the place and the
value. What the user wrote (a recipe, `--set`) is a usage problem (`param`, exit 2); what a file or a
server sent is a runtime one (exit 1) unless the caller names the argument that pointed at it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from s2mlp_cli.errors import S2MLPError

MAX_DEPTH = 16


def read_json(
    path: str | Path, what: str, max_bytes: int, param: str | None = None, lines: bool = False
) -> Any:
    """`path` as JSON (`lines`: JSON Lines, a list of its lines' values), at most `max_bytes` read (a
    device or a pipe that never ends is cut off), no NaN or Infinity, nested at most MAX_DEPTH deep."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise S2MLPError(f"{path}: cannot read the {what} ({e.strerror or e})", param=param) from None
    if len(data) > max_bytes:
        raise S2MLPError(f"{path}: the {what} is larger than {max_bytes // 2**20} MiB", param=param)
    try:
        text = data.decode("utf-8")
        docs = [_loads(ln) for ln in text.splitlines() if ln.strip()] if lines else _loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        why = "nested too deep" if isinstance(e, RecursionError) else str(e).splitlines()[0][:120]
        raise S2MLPError(f"{path}: the {what} is not valid JSON ({why})", param=param) from None
    for doc in docs if lines else [docs]:
        if (depth := nesting(doc)) > MAX_DEPTH:
            raise S2MLPError(f"{path}: the {what} is nested {depth} deep (at most {MAX_DEPTH})", param=param)
    return docs


def _loads(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not a number JSON allows")

    return json.loads(text, parse_constant=refuse)


def nesting(value: Any) -> int:
    """How deep lists and objects nest in `value` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d + 1)
            if d + 1 <= MAX_DEPTH + 1:
                stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def number(
    value: Any,
    where: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    integer: bool = False,
    param: str | None = None,
) -> float:
    """`value` as a finite number within [lo, hi] (a whole one with `integer`); else one line."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and integer and isinstance(value, float):
        ok = value.is_integer()
    if not ok or not math.isfinite(value):
        want = "a whole number" if integer else "a finite number"
        raise S2MLPError(f"{where}: expected {want}, got {_shown(value)}", param=param)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = (
            f"{lo:g} to {hi:g}"
            if lo is not None and hi is not None
            else f"at least {lo:g}"
            if lo is not None
            else f"at most {hi:g}"
        )
        raise S2MLPError(f"{where}: expected {span}, got {_shown(value)}", param=param)
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
