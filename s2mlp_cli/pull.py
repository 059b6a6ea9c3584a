"""`run(PullOptions(...))`: everything `s2mlp pull` does: fetch, verify and fit-check each variant's
weights (or import a hand-downloaded file), remembering a source the caller named. One row per variant;
with several variants, one that fails is a row and the others go on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2mlp_cli import sources
from s2mlp_cli.errors import S2MLPError, WeightsUnavailableError
from s2mlp_cli.zoo import Card, cards


@dataclass(frozen=True)
class PullOptions:
    variants: Sequence[Card] = ()  # empty with every=True: every variant whose weights can be had
    every: bool = False
    repo: str | None = None
    revision: str | None = None
    filename: str | None = None
    from_file: str | Path | None = None  # import this file instead of fetching
    sha256: str | None = None  # with from_file: the hash it must have
    refresh: bool = False
    progress: bool = True


def run(opts: PullOptions, say: Callable[[S2MLPError], str] = str) -> dict[str, Any]:
    """`{"rows": [...], "failed": [names]}`; `say` words an error for a row (the CLI's flags). A single
    variant that fails raises."""
    from s2mlp_cli import api

    targets = list(cards().values()) if opts.every else list({c.name: c for c in opts.variants}.values())
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for card in targets:
        if opts.every:
            try:
                sources.choose(card)
            except WeightsUnavailableError as e:
                rows.append({"variant": card.name, "status": "skipped", "detail": say(e)})
                continue
        try:
            if opts.from_file:
                pulled = api.import_file(card, opts.from_file, opts.sha256)
            else:
                pulled = api.pull(
                    card,
                    opts.repo,
                    opts.revision,
                    opts.filename,
                    refresh=opts.refresh,
                    progress=opts.progress,
                )
        except S2MLPError as e:
            if len(targets) == 1:
                raise
            failed.append(card.name)
            rows.append({"variant": card.name, "status": "failed", "detail": say(e)})
            continue
        rows.append({"status": "cached" if pulled.cached else "pulled", **pulled.to_dict()})
    return {"rows": rows, "failed": failed, "total": len(targets)}
