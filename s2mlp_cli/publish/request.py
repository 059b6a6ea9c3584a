"""A push request and the evidence it carries: the rows of the given eval / bench result files that are
about the pushed variant, with their conditions, all checked before any weights are read (no torch)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2mlp_cli.errors import ProblemsError, S2MLPError
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
        doc = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as e:
        problems.append(S2MLPError(f"{path}: cannot read it ({e.strerror})", param=param))
        return None
    except ValueError:
        problems.append(
            S2MLPError(
                f"{path}: not JSON", param=param, next_step="json_result", advice="write the result as .json"
            )
        )
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
    return doc


def _rows(doc: dict | None, card: Card) -> list[dict[str, Any]]:
    if doc is None:
        return []
    return [
        r
        for r in doc["results"]
        if isinstance(r, dict) and r.get("model") == card.name and r.get("status", "ok") == "ok"
    ]
