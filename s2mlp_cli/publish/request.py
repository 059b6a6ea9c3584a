"""A push request and the evidence it carries: the rows of the given eval / bench result files that are
about the pushed variant, with their conditions, all checked before any weights are read (no torch)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2mlp_cli.errors import ProblemsError, S2MLPError
from s2mlp_cli.schema import read_json
from s2mlp_cli.sources.places import HEX40, REPO_ID
from s2mlp_cli.zoo import Card, get_card

# a branch name git accepts (not a commit: one pushes to a branch); repository ids follow REPO_ID
_BRANCH = re.compile(r"^(?!.*\.\.)(?!.*//)[A-Za-z0-9][\w./-]{0,99}$")


@dataclass(frozen=True)
class PushOptions:
    variant: str
    weights: str | Path
    repo: str
    revision: str | None = None  # a branch; created from main when missing
    private: bool = False  # for a repository that does not exist yet
    eval_result: str | Path | None = None  # `s2mlp eval --output X.json`
    bench_result: str | Path | None = None  # `s2mlp bench --output X.json`
    progress: bool = True


@dataclass(frozen=True)
class Evidence:
    """The rows of the given result files that are about the pushed variant, with their conditions."""

    eval_rows: list[dict[str, Any]]
    eval_env: dict[str, Any]
    bench_rows: list[dict[str, Any]]
    bench_env: dict[str, Any]


def check(opts: PushOptions) -> tuple[Card, Evidence]:
    """Everything wrong with the request, before any weights are read or the network is asked (no torch)."""
    card = get_card(opts.variant)
    problems: list[S2MLPError] = []
    if not Path(opts.weights).expanduser().is_file():
        problems.append(S2MLPError(f"{opts.weights}: no such file", param="weights"))
    if not REPO_ID.match(opts.repo or ""):
        problems.append(
            S2MLPError(f"expected OWNER/NAME (letters, digits, - _ .), got {opts.repo!r}", param="repo")
        )
    if opts.revision is not None and (HEX40.match(opts.revision) or not _BRANCH.match(opts.revision)):
        problems.append(
            S2MLPError(f"expected a branch name to commit to, got {opts.revision!r}", param="revision")
        )
    eval_doc = _result(opts.eval_result, "eval_result", card, problems)
    bench_doc = _result(opts.bench_result, "bench_result", card, problems)
    if problems:
        raise ProblemsError(problems)
    evidence = Evidence(
        eval_rows=_rows(eval_doc, card),
        eval_env=(eval_doc or {}).get("env", {}),
        bench_rows=_rows(bench_doc, card),
        bench_env=(bench_doc or {}).get("env", {}),
    )
    return card, evidence


def _result(path: str | Path | None, param: str, card: Card, problems: list[S2MLPError]) -> dict | None:
    """A result file written by `s2mlp eval/bench --output X.json`, with an ok row for the variant."""
    if path is None:
        return None
    try:
        doc = read_json(Path(path).expanduser(), "result file", EVIDENCE_MAX_BYTES, param=param)
    except S2MLPError as e:
        step = (
            {"next_step": "json_result", "advice": "write the result as .json"} if "JSON" in e.message else {}
        )
        problems.append(S2MLPError(e.message, param=param, **step))
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list) or "env" not in doc:
        problems.append(S2MLPError(f"{path}: not an s2mlp result file (no env and results)", param=param))
        return None
    if doc.get("partial"):
        problems.append(S2MLPError(f"{path}: an interrupted run; give a complete one", param=param))
        return None
    if not _rows(doc, card):
        problems.append(S2MLPError(f"{path}: has no finished result for {card.name}", param=param))
        return None
    if (
        wrong := _wrong_types(doc, card, EVAL_FIELDS if param == "eval_result" else BENCH_FIELDS)
    ) is not None:
        problems.append(S2MLPError(f"{path}: not as s2mlp writes it ({wrong})", param=param))
        return None
    return doc


EVIDENCE_MAX_BYTES = 64 * 2**20


def _number(v: Any, lo: float = 0.0, hi: float = math.inf) -> bool:
    """A finite number in [lo, hi]: a NaN, an infinity or a top-1 of 150% is no evidence."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _pct(v: Any) -> bool:
    return _number(v, 0.0, 100.0)


def _pair(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(map(_number, v))


# what the model card reads from each row, and the type it must have (None allowed where a run leaves it)
EVAL_FIELDS: dict[str, Any] = {
    "top1": _pct,
    "top5": _pct,
    "loss": _number,
    "images": _count,
    "skipped": _count,
    "weights_sha256": lambda v: isinstance(v, str) and bool(re.fullmatch(r"[0-9a-f]{64}", v)),
    "set": lambda v: v is None or isinstance(v, str),
    "dtype": lambda v: v is None or isinstance(v, str),
}
BENCH_FIELDS: dict[str, Any] = {
    "batch_size": lambda v: _count(v) and v >= 1,
    "throughput": lambda v: _number(v) and v > 0,
    "throughput_iqr": lambda v: v is None or _pair(v),
    "latency_bs1_ms": lambda v: v is None or (isinstance(v, dict) and _number(v.get("p50"))),
    "peak_memory_mib": lambda v: v is None or _number(v),
}


def _wrong_types(doc: dict, card: Card, fields: dict[str, Any]) -> str | None:
    """The first field of the environment or of the variant's rows that is not what s2mlp writes."""
    env = doc["env"]
    if not isinstance(env, dict):
        return f"env is a {type(env).__name__}, not a mapping"
    for key in ("device", "device_name", "dtype", "date"):
        if env.get(key) is not None and not isinstance(env[key], str):
            return f"env.{key} is {env[key]!r}"
    for row in _rows(doc, card):
        for key, fits in fields.items():
            if key not in row and key == "weights_sha256":
                return "no weights_sha256: which weights were evaluated is not recorded"
            if not fits(row.get(key)):
                return f"{key} of {card.name} is {row.get(key)!r}"
    return None


def _rows(doc: dict | None, card: Card) -> list[dict[str, Any]]:
    if doc is None:
        return []
    return [
        r
        for r in doc["results"]
        if isinstance(r, dict) and r.get("model") == card.name and r.get("status", "ok") == "ok"
    ]
