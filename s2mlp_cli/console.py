"""One place for terminal output: results to stdout, everything else (progress too) to stderr."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console

PIPED_WIDTH = 100
out = Console()  # long lines wrap at word boundaries at its width
err = Console(stderr=True, soft_wrap=True)


def fit_width() -> None:
    """The width results are printed at: COLUMNS when set, else the terminal's; piped (files, logs),
    100 columns. Every table fits it by leaving columns out (`report.FitTable`), never by cutting cells."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        out.width = int(columns)
    elif not sys.stdout.isatty():
        out.width = PIPED_WIDTH
    else:
        out._width = None  # the terminal's, as it is now


def print_json(data: Any) -> None:
    """Machine-readable result on stdout, with no rich markup or wrapping (strict JSON: no NaN)."""
    from s2mlp_cli.report import to_json

    sys.stdout.write(to_json(data))
    sys.stdout.flush()


_speaks = {"info": True}


def speak(enabled: bool) -> None:
    """Whether this process prints `info`, progress and results: under torchrun only the first process
    speaks (`s2mlp_cli.distributed.start` sets it; warnings still come from every process)."""
    _speaks["info"] = enabled


def speaking() -> bool:
    """Whether this process prints results (false on every torchrun process but the first)."""
    return _speaks["info"]


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {message}", highlight=False)


def info(message: str) -> None:
    if _speaks["info"]:
        err.print(message, highlight=False)


class Bar:
    """The one progress bar, on stderr: images with their rate for eval and train, bytes for downloads.
    On a terminal it is a rich bar, gone when done; otherwise (a log, CI, `2> file`) a count of items
    prints a plain line every ~10% or 30 s, and one at the end (bytes print nothing). It also speaks the
    subset of tqdm that huggingface_hub drives (`tqdm_class=Bar`), so the Hub's downloads draw the same
    bar. Silent when `enabled` is false."""

    LINE_EVERY_S = 30.0

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
        self.enabled = enabled and not kwargs.get("disable") and _speaks["info"]
        self.desc, self.total, self.unit, self.rate = desc or "download", total, unit, 0.0
        self._progress = None
        if not self.enabled:
            return
        if not err.is_terminal:
            if unit == "B":  # downloads are quick or said by their own lines: no log lines for bytes
                self.enabled = False
                return
            import time

            self._clock = time.monotonic
            self._start = self._last_time = self._clock()
            self._last_n = initial
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
        self._task = self._progress.add_task(self.desc, total=total, completed=initial, rate=0.0)
        self._progress.start()

    def update(self, n: float = 1) -> None:
        self.n += n
        if self._progress is not None:
            self._progress.update(self._task, advance=n)
        elif self.enabled:
            self._maybe_line()

    def advance(self, n: int, rate: float) -> None:
        """`n` more done, at `rate` per second."""
        self.n += n
        self.rate = rate
        if self._progress is not None:
            self._progress.update(self._task, advance=n, rate=rate)
        elif self.enabled:
            self._maybe_line()

    def _maybe_line(self, last: bool = False) -> None:
        """A plain progress line off a terminal: every tenth of the total, or 30 s, and at the end."""
        now = self._clock()
        tenth = self.total and self.n - self._last_n >= self.total / 10
        if not (last or tenth or now - self._last_time >= self.LINE_EVERY_S) or self.n == self._last_n:
            return
        self._last_time, self._last_n = now, self.n
        err.print(self._line(now - self._start), highlight=False, soft_wrap=True)

    def _line(self, elapsed: float) -> str:
        done = f"{self.n:,.0f}" + (f"/{self.total:,.0f} {self.unit}" if self.total else f" {self.unit}")
        rate = f"{self.rate:,.1f} {self.unit}/s" if self.rate else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        left = ""
        if self.total and self.n and elapsed > 0 and self.n < self.total:
            left = f", about {duration(elapsed * (self.total - self.n) / self.n)} left"
        return f"{self.desc}: {done}{pct}" + (f", {rate}" if rate else "") + f", {duration(elapsed)}" + left

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        elif self.enabled:
            self._maybe_line(last=True)
            self.enabled = False

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is not None and self._progress is None:
            self.enabled = False  # failed or interrupted: the error says so, not a last progress line
        self.close()

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or self.desc
        if self._progress is not None:
            self._progress.update(self._task, description=desc or "")

    def refresh(self) -> None:
        if self._progress is not None:
            self._progress.refresh()


def duration(s: float) -> str:
    """Seconds as people read them: 42 s, 3 min 07 s, 2 h 05 min."""
    s = int(s)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
