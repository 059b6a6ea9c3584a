"""`run(BenchOptions(...))`: everything `s2mlp bench` does, returning the result document.

Isolation: each (model, batch size) runs in its own `python -m s2mlp_cli.bench.worker` process, so one
model's allocations (peak RSS on the CPU, the caching allocator on the GPU) never bleed into another's
numbers, and an out-of-memory crash costs one row, not the run.

Interleaving: the workers of one batch size are alive together, and the parent asks each in turn for one
round of timed calls (A B C A B C ...), so a slow drift of the machine (thermal, another job, the
hypervisor) hits every model alike. Throughput is batch / the median of all timed calls; each round also
gives a throughput per model, so a ratio to the reference has a spread across rounds. Batch-1 latency is
measured once per model: from the batch-1 row when the sweep has one, else in the first batch size's
worker.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from s2mlp_cli import report
from s2mlp_cli.bench import compare
from s2mlp_cli.bench.measurement import Row, Spec, summarize
from s2mlp_cli.bench.plot import draw_plot
from s2mlp_cli.bench.request import BenchOptions, Plan, make_plan
from s2mlp_cli.bench.worker import PARENT_ENV
from s2mlp_cli.console import duration
from s2mlp_cli.zoo import get_card


class _Proc:
    """One worker process, spoken to in JSON lines; a crash, a silence past the timeout or a kill becomes
    an error row."""

    def __init__(self, spec: Spec, timeout: float | None) -> None:
        self.spec, self.timeout, self.row = spec, timeout, None
        label = spec.settings.label
        self.name = spec.model if label == "torch" else f"{spec.model} ({label})"
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "s2mlp_cli.bench.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore", PARENT_ENV: str(os.getpid())},
        )
        self.send(spec.to_dict())

    def send(self, obj: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the worker died; receive() reports why

    def receive(self) -> dict:
        """The worker's next reply; a final row (and the process reaped) when it has no more to say."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    self.kill()
                    return self._final(f"did not answer within {self.timeout:.0f} s")
                if not sel.select(left):
                    continue
                line = self.proc.stdout.readline()
                if not line:
                    return self._final(self._death())
                if line.startswith("{"):
                    reply = json.loads(line)
                    if reply["event"] == "done":
                        self.row = Row.from_dict(reply["row"])
                        self.proc.wait()
                    return reply

    def _final(self, detail: str) -> dict:
        self.row = Row(self.spec.model, status="error", detail=detail, runtime=self.spec.settings.label)
        return {"event": "done"}

    def _death(self) -> str:
        code = self.proc.wait()
        if code < 0:
            return f"worker killed by signal {-code}" + (" (out of memory?)" if code == -9 else "")
        self.stderr.seek(0)
        lines = [ln for ln in self.stderr.read().strip().splitlines() if ln.strip()]
        return f"worker failed: {lines[-1] if lines else f'exit {code}, no output'}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        self.stderr.close()


class BenchInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during `run`: `doc` holds every finished row (marked partial), already written
    out; `signum` is the signal that stopped it."""

    def __init__(self, doc: dict[str, Any], signum: int = signal.SIGINT) -> None:
        super().__init__("interrupted")
        self.doc = doc
        self.signum = signum


class _SigtermAsInterrupt:
    """SIGTERM, handled as Ctrl-C is (the workers stopped, the finished rows kept); `signum` says which
    signal stopped the run. Only the main thread may set handlers: elsewhere SIGTERM keeps its default."""

    signum = signal.SIGINT

    def __enter__(self) -> _SigtermAsInterrupt:
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signal.SIGTERM
        raise KeyboardInterrupt("terminated")

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class _Clock:
    """What the run has measured of itself: the first model's warm-up and each round, so the estimate
    of what is left comes from this machine now, not from a probe. `says` gets the progress lines."""

    def __init__(self, plan: Plan, says: Callable[[str], None]) -> None:
        self.plan, self.says = plan, says
        self.start = time.monotonic()
        self.warmups: list[float] = []
        self.rounds: list[float] = []
        self.batches_done = 0

    def left_s(self, warmups_left: int, rounds_left: int) -> float | None:
        if not self.warmups or not self.rounds:
            return None
        warm = sum(self.warmups) / len(self.warmups)
        per_round = sum(self.rounds[-3:]) / len(self.rounds[-3:])
        later = len(self.plan.batch_sizes) - self.batches_done - 1  # batch sizes after this one
        models = len(self.plan.models)
        return (
            warmups_left * warm
            + rounds_left * per_round
            + later * (models * warm + self.plan.rounds * per_round)
        )

    def round_done(self, batch: int, k: int, seconds: float) -> None:
        self.rounds.append(seconds)
        left = self.left_s(0, self.plan.rounds - k)
        tail = f"; about {duration(left)} left" if left is not None else ""
        self.says(f"batch {batch}: round {k}/{self.plan.rounds} timed in {seconds:.1f} s{tail}")

    def finish(self) -> None:
        took = time.monotonic() - self.start
        first = self.plan.estimate_s + self.plan.compile_s[1]  # the longest compile the estimate allowed
        if first and took > 1.5 * first:
            self.says(
                f"took {duration(took)}, {took / first:.1f}x the first estimate (~{duration(first)}): "
                "the machine was slower than its probe said (see the load in the conditions)"
            )


@contextmanager
def _ticking(clock: _Clock, what: str, on: bool, every: float = 10.0) -> Iterator[None]:
    """While a model compiles (silent for minutes), a line every `every` seconds says it is still at it."""
    if not on:
        yield
        return
    done, began = threading.Event(), time.monotonic()

    def tick() -> None:
        while not done.wait(every):
            clock.says(f"{what}, {time.monotonic() - began:.0f} s")

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


class _RoundsInterrupted(KeyboardInterrupt):
    def __init__(self, rows: list[Row]) -> None:
        super().__init__("interrupted")
        self.rows = rows


def run(
    opts: BenchOptions,
    plan: Plan | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure the plan; the document `{"env", "results", "warnings"}` (also written to `opts.output`).

    `on_row` is called with each row as it finishes, `on_progress` with a line as each model is warmed
    up and each round is timed. Ctrl-C raises BenchInterrupted carrying the rows finished so far, written
    to `opts.output` marked partial.
    """
    from s2mlp_cli.runtime import environment

    plan = plan or make_plan(opts)
    s = plan.settings
    env = environment(s.device, s.amp, s.tf32)
    env.update(
        warmup=s.warmup,
        iters=s.iters,
        rounds=plan.rounds,
        channels_last=s.channels_last,
        compile=s.compile,
        isolation="one process per model and batch size; timed rounds interleaved across models",
    )
    before = compare.machine_state()
    rows: list[Row] = []
    interrupted, stop = False, _SigtermAsInterrupt()
    clock = _Clock(plan, on_progress or (lambda line: None))
    try:
        with stop:
            for b in plan.batch_sizes:
                bs1_here = 1 not in plan.batch_sizes and b == plan.batch_sizes[0]
                rows += _run_batch(opts, plan, b, bs1_here, on_row, clock)
                clock.batches_done += 1
        clock.finish()
    except KeyboardInterrupt as e:
        interrupted = True
        rows += getattr(e, "rows", [])
    _share_bs1(rows)
    compare.add_ratios(rows, plan.models)
    compare.record_machine(env, before, compare.machine_state())
    doc = report.document(env, [r.to_dict() for r in rows], warnings=compare.warnings(env, rows))
    if interrupted:
        doc["partial"] = True
    _write(opts, doc, rows, env, plot=not interrupted)
    if interrupted:
        raise BenchInterrupted(doc, stop.signum)
    return doc


def _write(opts: BenchOptions, doc: dict[str, Any], rows: list[Row], env: dict[str, Any], plot: bool) -> None:
    """The table file and the plot, if asked for. A file that cannot be written loses no row: the
    document still comes back, with `write_errors`."""
    failures = []
    if opts.output:
        try:
            report.write(str(opts.output), doc, report.BENCH_COLUMNS, "s2mlp bench")
        except OSError as e:
            failures.append(f"could not write {opts.output}: {e.strerror or e}")
    if opts.plot and plot:
        try:
            draw_plot(rows, str(opts.plot), env)
        except OSError as e:
            failures.append(f"could not write {opts.plot}: {e.strerror or e}")
    if failures:
        doc["write_errors"] = failures


def _run_batch(
    opts: BenchOptions,
    plan: Plan,
    batch: int,
    bs1: bool,
    on_row: Callable[[dict], None] | None,
    clock: _Clock,
) -> list[Row]:
    """All models at one batch size: start together, prepare one by one, interleave the timed rounds."""
    procs = [
        _Proc(Spec(card.name, batch, settings, bs1=bs1), opts.timeout)
        for card in plan.models
        for settings in plan.variants
    ]
    timed = _Timed(len(procs))
    try:
        for p in procs:
            p.receive()  # "built", or a final row
        for p in procs:
            if p.row is None:
                _prepare(p, plan, batch, clock)
        _rounds(procs, plan, batch, bs1, clock, timed)
        rows = []
        for i, p in enumerate(procs):
            if p.row is None:
                p.send({"cmd": "finish"})
                p.receive()
            row = p.row
            if row.status == "ok" and timed.times[i]:
                summarize(row, timed.times[i], timed.bs1[i] or None)
            rows.append(row)
            if on_row:
                on_row(row.to_dict())
        return rows
    except KeyboardInterrupt:
        raise _RoundsInterrupted(_partial_rows(procs, batch, timed)) from None
    finally:
        for p in procs:
            p.close()


class _Timed:
    """What each process of a batch size has measured so far: its rounds' call times, its batch-1
    latencies and its peak memory."""

    def __init__(self, n: int) -> None:
        self.times: dict[int, list[list[float]]] = {i: [] for i in range(n)}
        self.bs1: dict[int, list[float]] = {i: [] for i in range(n)}
        self.peaks: dict[int, float] = {}


def _prepare(p: _Proc, plan: Plan, batch: int, clock: _Clock) -> None:
    """One model's warm-up (and compile), said with its duration."""
    n = plan.settings.warmup
    clock.says(f"{p.name} at batch {batch}: warming up ({n} call{'s' if n != 1 else ''})")
    began = time.monotonic()
    p.send({"cmd": "prepare"})
    with _ticking(clock, f"{p.name} at batch {batch}: compiling", p.spec.settings.compile):
        reply = p.receive()
    if reply["event"] == "ready":
        clock.warmups.append(time.monotonic() - began)
        clock.says(f"{p.name} at batch {reply['batch_size']}: warmed up in {clock.warmups[-1]:.1f} s")


def _rounds(procs: list[_Proc], plan: Plan, batch: int, bs1: bool, clock: _Clock, timed: _Timed) -> None:
    """The timed rounds, every model in turn within each round (so machine noise falls on all alike)."""
    per_round = _split(plan.iters, plan.rounds)
    bs1_rounds = _split(max(2 * plan.iters, 10), plan.rounds) if bs1 else [0] * len(per_round)
    for k, (n, n1) in enumerate(zip(per_round, bs1_rounds, strict=True), 1):
        began = time.monotonic()
        for i, p in enumerate(procs):
            for count, is_bs1 in ((n, False), (n1, True)):
                if count and p.row is None:
                    p.send({"cmd": "time", "n": count, "bs1": is_bs1})
                    reply = p.receive()
                    if reply["event"] == "times":
                        (timed.bs1[i].extend if is_bs1 else timed.times[i].append)(reply["times"])
                        timed.peaks[i] = reply["peak_memory_mib"]
        clock.round_done(batch, k, time.monotonic() - began)


def _partial_rows(procs: list[_Proc], batch: int, timed: _Timed) -> list[Row]:
    """On Ctrl-C: the rows whose rounds had started, with what they measured, and the failed ones."""
    partial = []
    for i, p in enumerate(procs):
        if p.row is not None and p.row.status != "ok":
            partial.append(p.row)
        elif timed.times[i] and p.row is None:
            row = Row(
                p.spec.model,
                detail=f"interrupted after {len(timed.times[i])} round(s)",
                family=get_card(p.spec.model).family,
                batch_size=batch,
                requested_batch_size=batch,
                peak_memory_mib=timed.peaks.get(i),
                runtime=p.spec.settings.label,
            )
            summarize(row, timed.times[i], timed.bs1[i] or None)
            partial.append(row)
    return partial


def _split(total: int, parts: int) -> list[int]:
    """`total` calls over `parts` rounds, as evenly as possible (earlier rounds take the remainder)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _share_bs1(rows: list[Row]) -> None:
    """Batch-1 latency is measured once per model; every row of the model shows that one figure."""
    measured = {(r.model, r.runtime): r.latency_bs1_ms for r in rows if r.latency_bs1_ms}
    for r in rows:
        if r.status == "ok" and (r.model, r.runtime) in measured:
            r.latency_bs1_ms = measured[(r.model, r.runtime)]
