"""One place for terminal output: results to stdout, everything else (progress too) to stderr."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console

# Piped output is not cut to 80 columns: tables stay whole in files and logs.
_piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
out = Console(soft_wrap=True, width=160 if _piped else None)
err = Console(stderr=True, soft_wrap=True)


def print_json(data: Any) -> None:
    """Machine-readable result on stdout, with no rich markup or wrapping (strict JSON: no NaN)."""
    from s2mlp_cli.report import to_json

    sys.stdout.write(to_json(data))
    sys.stdout.flush()


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {message}", highlight=False)


def info(message: str) -> None:
    err.print(message, highlight=False)


class Bar:
    """The one progress bar (rich, on stderr, gone when done): images with their rate for eval, bytes
    for downloads. It also speaks the subset of tqdm that huggingface_hub drives (`tqdm_class=Bar`), so
    the Hub's downloads draw the same bar. Silent when `enabled` is false."""

    def __init__(
        self,
        *args: Any,
        desc: str = "",
        total: float | None = None,
        initial: float = 0,
        unit: str = "B",
        enabled: bool = True,
        **kwargs: Any,
    ) -> None:
        self.n = initial
        self.enabled = enabled and not kwargs.get("disable")
        if not self.enabled:
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        if unit == "B":
            columns = [DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
        else:
            rate = TextColumn("{task.fields[rate]:.1f} " + unit + "/s")
            columns = [MofNCompleteColumn(), rate, TimeElapsedColumn(), TimeRemainingColumn()]
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), *columns, console=err, transient=True
        )
        self._task = self._progress.add_task(desc or "download", total=total, completed=initial, rate=0.0)
        self._progress.start()

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.enabled:
            self._progress.update(self._task, advance=n)

    def advance(self, n: int, rate: float) -> None:
        """`n` more done, at `rate` per second."""
        self.n += n
        if self.enabled:
            self._progress.update(self._task, advance=n, rate=rate)

    def close(self) -> None:
        if self.enabled:
            self._progress.stop()

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        if self.enabled:
            self._progress.update(self._task, description=desc or "")

    def refresh(self) -> None:
        if self.enabled:
            self._progress.refresh()
