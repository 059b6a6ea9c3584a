"""Benchmarks: params, GMACs, throughput, latency and peak memory of S²-MLPv2 and its peers.

`run(BenchOptions(...))` is everything `s2mlp bench` does and returns the result document; `check` finds
every problem with a request without importing torch; `make_plan` says what will run and roughly how
long it takes.

Isolation: each (model, batch size) runs in its own `python -m s2mlp_cli.bench` worker, so one model's
allocations (peak RSS on the CPU, the caching allocator on the GPU) never bleed into another's numbers,
and an out-of-memory crash costs one row, not the run.

Interleaving: the workers of one batch size are alive together, and the parent asks each in turn for one
round of timed calls (A B C A B C ...), so a slow drift of the machine (thermal, another job, the
hypervisor) hits every model alike. Throughput is batch / the median of all timed calls; each round also
gives a throughput per model, so a ratio to the reference has a spread across rounds.

Timing within a round: each call finished before the clock stops (CUDA events on the GPU, perf_counter
around a finished call on the CPU). Warm-up calls first; with compile, the first call is timed apart as
compile time. TF32 is off unless asked for. Batch-1 latency is measured once per model: from the batch-1
row when the sweep has one, else in the first batch size's worker.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from s2mlp_cli import families, report
from s2mlp_cli.errors import ProblemsError, S2MLPError, UnknownModelError
from s2mlp_cli.runtime import amp_problem, device_for, dtype_label, set_math_mode
from s2mlp_cli.zoo import Card, get_card

AMP = ("none", "bf16", "fp16")
DEFAULTS = {
    "cuda": {"batch": [256], "warmup": 10, "iters": 50, "rounds": 5},
    "cpu": {"batch": [8], "warmup": 2, "iters": 6, "rounds": 3},
}
BUSY_LOAD = 0.5  # load average per core before the run above which the machine counts as busy
WIDE_SPREAD = 0.2  # IQR width, or ratio range, over the median above which a row gets a warning
# A test hook: pretend any batch above this size runs out of memory (exercises the OOM path on any machine).
FAKE_OOM_ENV = "S2MLP_BENCH_FAKE_OOM_ABOVE"
PARENT_ENV = "S2MLP_BENCH_PARENT"  # the pid a worker lives and dies with


# --- the request --------------------------------------------------------------------------------------


@dataclass
class BenchOptions:
    """One benchmark request; None means the device's default."""

    variants: Sequence[str] = ("s2mlpv2_small",)
    compare: Sequence[str] = ()  # family groups (vip, gfnet, ...) or variant names
    device: str = "auto"
    batch_sizes: Sequence[int] | None = None
    img_size: int | None = None
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    tf32: bool = False
    warmup: int | None = None
    iters: int | None = None
    rounds: int | None = None
    train: bool = False
    auto_batch: bool = False
    weights: str | Path | None = None  # one model only; speed does not depend on it
    timeout: float | None = None  # seconds per worker
    output: str | Path | None = None  # .json, .csv or .md; written partial when interrupted
    plot: str | Path | None = None


def expand_models(variants: Sequence[str], compare: Sequence[str]) -> list[Card]:
    """The variants, then each compare entry: a family group picks the variants' peers of that group."""
    base = [_card(v, "variants") for v in variants]
    chosen = list(base)
    for token in compare:
        group = token.lower()
        if group in families.groups():
            peers = [get_card(p) for card in base for p in card.peers]
            found = [p for p in peers if families.get(p.family).group == group]
            if not found:
                names = ", ".join(c.name for c in base)
                raise S2MLPError(
                    f"no {token} peers listed for {names}; name the variants instead", param="compare"
                )
            chosen += found
        else:
            try:
                chosen.append(_card(token, "compare"))
            except S2MLPError as e:
                raise S2MLPError(
                    f"{e} (or a family: {', '.join(families.groups())})", param="compare"
                ) from None
    return list({c.name: c for c in chosen}.values())


def _card(name: str, param: str) -> Card:
    try:
        return get_card(name)
    except UnknownModelError as e:
        raise S2MLPError(str(e), param=param) from None


MAX_TIMEOUT = 7 * 24 * 3600.0  # a week: past it, time.monotonic() + timeout stops meaning anything


def check(opts: BenchOptions) -> list[S2MLPError]:
    """Every problem with the request, each naming its argument; no torch."""
    problems: list[S2MLPError] = []
    if not [v for v in opts.variants if v.strip()]:
        problems.append(S2MLPError("name at least one variant", param="variants"))
    models: list[Card] = []
    try:
        models = expand_models(
            [v for v in opts.variants if v.strip()], [c for c in opts.compare if c.strip()]
        )
    except S2MLPError as e:
        problems.append(e)
    if opts.batch_sizes is not None and (not opts.batch_sizes or min(opts.batch_sizes) < 1):
        problems.append(
            S2MLPError(f"batch sizes must be positive, got {list(opts.batch_sizes)}", param="batch_sizes")
        )
    if opts.amp not in AMP:
        problems.append(S2MLPError(f"amp must be one of {', '.join(AMP)}", param="amp"))
    if (problem := amp_problem(opts.device, opts.amp)) is not None:
        problems.append(problem)
    if opts.weights is not None:
        if len(models) > 1:
            problems.append(
                S2MLPError("a weights file loads into one model: bench a single variant", param="weights")
            )
        elif not Path(opts.weights).expanduser().is_file():
            problems.append(S2MLPError(f"weights file {opts.weights} does not exist", param="weights"))
    if opts.output is not None:
        try:
            if not str(opts.output).strip():
                raise ValueError("an empty file name; name a file, or leave the option out")
            report.output_format(str(opts.output))
        except ValueError as e:
            problems.append(S2MLPError(str(e), param="output"))
    if opts.timeout is not None and not (1 <= opts.timeout <= MAX_TIMEOUT):  # also NaN and infinity
        problems.append(
            S2MLPError(f"timeout must be 1 to {MAX_TIMEOUT:.0f} seconds, got {opts.timeout}", param="timeout")
        )
    if opts.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            problems.append(S2MLPError("drawing a plot needs matplotlib: pip install 's2mlp[plot]'"))
    return problems


@dataclass
class Plan:
    """What `run` will do: models, batch sizes, settings, and a rough estimate of the time it takes."""

    models: list[Card]
    batch_sizes: list[int]
    device: str
    warmup: int
    iters: int
    rounds: int
    estimate_s: float

    def describe(self) -> str:
        names = ", ".join(c.name for c in self.models)
        sizes = ",".join(map(str, self.batch_sizes))
        jobs = len(self.models) * len(self.batch_sizes)
        minutes = self.estimate_s / 60
        when = f"~{minutes:.0f} min" if minutes >= 1.5 else f"~{self.estimate_s:.0f} s"
        return (
            f"will run {jobs} benchmark(s) on {self.device}: {names} at batch {sizes} "
            f"({self.warmup} warm-up, {self.iters} timed calls in {self.rounds} interleaved rounds); "
            f"estimate {when} (rough)"
        )


def make_plan(opts: BenchOptions) -> Plan:
    """Resolve the device and defaults, and estimate the time from a matmul probe of this device."""
    if problems := check(opts):
        raise ProblemsError(problems)
    device = device_for(opts.device, opts.amp)
    d = DEFAULTS[device]
    iters = opts.iters or d["iters"]
    plan = Plan(
        models=expand_models(opts.variants, opts.compare),
        batch_sizes=list(opts.batch_sizes or d["batch"]),
        device=device,
        warmup=d["warmup"] if opts.warmup is None else opts.warmup,
        iters=iters,
        rounds=max(1, min(opts.rounds or d["rounds"], iters)),
        estimate_s=0.0,
    )
    plan.estimate_s = _estimate(plan, opts)
    return plan


def _estimate(plan: Plan, opts: BenchOptions) -> float:
    """Worker start-up plus every call at the probe's rate. Models reach ~40% of a large matmul's rate on
    the CPU (measured here: S²-MLPv2-S 75 GMAC/s against a 190 GMAC/s matmul), ~30% on the GPU in fp32."""
    rate = _matmul_gmacs(plan.device) * (0.4 if plan.device == "cpu" else 0.3)
    start = 8.0 if plan.device == "cpu" else 15.0  # import torch + timm, build, per worker
    parallel = max(1, min(len(plan.models), os.cpu_count() or 1))
    total = 0.0
    for b in plan.batch_sizes:
        total += start * len(plan.models) / parallel
        for card in plan.models:
            calls = plan.warmup + plan.iters + (3 * plan.iters if opts.train else 0)
            total += calls * b * card.gmacs / rate
            if 1 not in plan.batch_sizes and b == plan.batch_sizes[0]:
                total += (max(plan.warmup, 1) + max(2 * plan.iters, 10)) * card.gmacs / rate
    return total


def _matmul_gmacs(device: str) -> float:
    import torch

    n = 1024 if device == "cpu" else 4096
    a = torch.randn(n, n, device=device)
    a @ a  # warm
    reps, t0 = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - t0 < 0.2:
        a @ a
        reps += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return reps * n**3 / (time.perf_counter() - t0) / 1e9


# --- one worker's measurement ---------------------------------------------------------------------------


@dataclass
class Spec:
    """What one worker measures: one model at one batch size."""

    model: str
    batch_size: int
    img_size: int | None = None  # None: the card's
    device: str = "cpu"
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    tf32: bool = False
    warmup: int = 2
    iters: int = 6  # for `measure`; `run` asks for rounds
    bs1_iters: int = 10
    bs1: bool = True  # also measure batch-1 latency in this worker
    train: bool = False
    auto_batch: bool = False
    weights: str | None = None


@dataclass
class Result:
    model: str
    status: str = "ok"  # ok | oom | unsupported | error
    detail: str = ""
    family: str = ""
    params_m: float | None = None
    gmacs: float | None = None
    batch_size: int | None = None
    requested_batch_size: int | None = None
    img_size: int | None = None
    device: str = ""
    dtype: str = ""
    channels_last: bool = False
    compile: bool = False
    compile_s: float | None = None
    throughput: float | None = None  # images/s at batch_size, from the median time
    throughput_iqr: list[float] | None = None  # images/s at the 75th and 25th percentile times
    round_throughputs: list[float] | None = None  # images/s of each interleaved round
    latency_ms: dict[str, float] | None = None  # per batch: p50, p90, mean, std, min, max, n
    latency_bs1_ms: dict[str, float] | None = None  # batch 1: p50, p99, mean, n, batch (where measured)
    peak_memory_mib: float | None = None
    memory_kind: str = ""
    train_throughput: float | None = None
    train_peak_memory_mib: float | None = None
    threads: int | None = None
    paper_top1: float | None = None
    weights: str = "random init (speed does not depend on the weights)"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Worker:
    """One model at one batch size, in this process: build, warm up, time rounds on demand, finish."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.net = self.x = self.x1 = None

    def build(self) -> Result | None:
        """Build the model and count it; a final row when it cannot run at all, else None."""
        import torch

        import s2mlp_cli.models  # noqa: F401  (torch and timm imported before the baseline is read)

        spec, card = self.spec, get_card(self.spec.model)
        self.img_size = spec.img_size or card.preprocess.input_size
        r = self.result = Result(
            card.name,
            family=card.family,
            requested_batch_size=spec.batch_size,
            img_size=self.img_size,
            device=spec.device,
            dtype=dtype_label(spec.amp),
            channels_last=spec.channels_last,
            compile=spec.compile,
            threads=torch.get_num_threads(),
            paper_top1=card.paper.get("top1"),
            memory_kind="max_memory_allocated" if spec.device == "cuda" else "peak RSS of the worker process",
        )
        set_math_mode(spec.device, spec.tf32)
        r.extra["baseline_rss_mib"] = _peak_memory("cpu")  # the interpreter, torch and timm, before the model
        try:
            self.model = _build(card, self.img_size)
        except (ValueError, S2MLPError) as e:  # e.g. ViP off 224, a size the stride does not divide
            r.status, r.detail = "unsupported", str(e).splitlines()[0]
            return r
        if spec.weights:
            from s2mlp_cli.api import load_pretrained

            r.weights = load_pretrained(self.model, card.name, spec.weights, progress=False).source

        from s2mlp_cli.stats import count_gmacs, count_params

        r.params_m = round(count_params(self.model) / 1e6, 3)
        with torch.device("meta"):
            meta = _build(card, self.img_size)
        # two decimals, as the cards (and `s2mlp list`) give them: 3 and then 2 rounded 8.5451 to 8.54
        r.gmacs = round(count_gmacs(meta, self.img_size), 2)
        return None

    def prepare(self) -> Result | None:
        """Place the model and warm up, halving the batch on out-of-memory when allowed; a final row if
        it cannot run, else None."""

        spec, batch = self.spec, self.spec.batch_size
        while True:
            try:
                self._warm(batch)
                break
            except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
                if not out_of_memory(e):
                    raise
                self.net = self.x = None
                _free(spec.device)
                if not spec.auto_batch or batch == 1:
                    self.result.status = "oom"
                    self.result.detail = f"out of memory at batch {batch}" + (
                        "" if spec.auto_batch else "; automatic batch halving would retry smaller batches"
                    )
                    self.result.extra["oom_message"] = str(e).splitlines()[0] if str(e) else ""
                    return self.result
                batch //= 2
        self.result.batch_size = batch
        if batch != spec.batch_size:
            self.result.detail = f"batch {spec.batch_size} ran out of memory; measured at {batch}"
        return None

    def _warm(self, batch: int) -> None:

        spec = self.spec
        _check_fake_oom(batch)
        self.net = _prepare(self.model.eval(), spec)
        self.x = _input(spec, batch, self.img_size)
        self.x1 = self.x[:1].clone()
        if spec.compile:
            t0 = time.perf_counter()
            self._call(self.x)
            _sync(spec.device)
            self.result.compile_s = round(time.perf_counter() - t0, 3)
        for _ in range(spec.warmup):
            self._call(self.x)
        if spec.bs1:
            for _ in range(max(spec.warmup, 1)):
                self._call(self.x1)
        _sync(spec.device)

    def _call(self, x) -> None:
        import torch

        with torch.inference_mode(), _autocast(self.spec):
            self.net(x)

    def time(self, n: int, bs1: bool = False) -> list[float]:
        """Seconds of each of `n` calls, at the batch size or at batch 1."""
        x = self.x1 if bs1 else self.x
        return _timed(lambda: self._call(x), n, self.spec.device)

    def peak_memory(self) -> float:
        return _peak_memory(self.spec.device)

    def finish(self) -> Result:
        """Peak memory of inference, then training throughput when asked."""

        self.result.peak_memory_mib = self.peak_memory()
        if self.spec.train:
            try:
                _train(self.model, self.result, self.spec, self.result.batch_size, self.img_size)
            except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
                if not out_of_memory(e):
                    raise
                _free(self.spec.device)
                detail = self.result.detail
                self.result.detail = (detail + "; " if detail else "") + "training ran out of memory"
        return self.result


def out_of_memory(e: BaseException) -> bool:
    """An allocation that failed: the GPU's OutOfMemoryError, or on the CPU the allocator's RuntimeError
    ("DefaultCPUAllocator: can't allocate memory") or Python's MemoryError."""
    import torch

    if isinstance(e, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(e, RuntimeError) and "can't allocate memory" in str(e)


def measure(spec: Spec) -> Result:
    """Everything for one model in this process, uninterleaved (tests, notebooks, quick looks)."""
    w = Worker(spec)
    if (final := w.build() or w.prepare()) is not None:
        return final
    times = w.time(spec.iters)
    bs1 = w.time(spec.bs1_iters, bs1=True) if spec.bs1 else None
    r = w.finish()
    summarize(r, [times], bs1)
    return r


def summarize(r: Result | dict, rounds: list[list[float]], bs1: list[float] | None = None) -> None:
    """Throughput, spread and latencies from the seconds of each round's calls (and of batch-1 calls)."""
    row = r if isinstance(r, dict) else r.__dict__
    batch = row["batch_size"]
    times = [t for round_ in rounds for t in round_]
    ms = [t * 1000 for t in times]
    row["throughput"] = round(batch / statistics.median(times), 2)
    row["throughput_iqr"] = [
        round(batch / _percentile(times, 0.75), 2),
        round(batch / _percentile(times, 0.25), 2),
    ]
    row["round_throughputs"] = [round(batch / statistics.median(t), 2) for t in rounds if t]
    row["latency_ms"] = {
        "p50": round(statistics.median(ms), 3),
        "p90": round(_percentile(ms, 0.9), 3),
        "mean": round(statistics.fmean(ms), 3),
        "std": round(statistics.stdev(ms), 3) if len(ms) > 1 else 0.0,
        "min": round(min(ms), 3),
        "max": round(max(ms), 3),
        "n": len(ms),
    }
    if batch == 1:
        bs1 = times
    if bs1:
        ms1 = [t * 1000 for t in bs1]
        row["latency_bs1_ms"] = {
            "p50": round(statistics.median(ms1), 3),
            "p99": round(_percentile(ms1, 0.99), 3),
            "mean": round(statistics.fmean(ms1), 3),
            "n": len(ms1),
            "measured_in_batch": batch,
        }


def _build(card: Card, img_size: int):
    from s2mlp_cli.models import create_model

    try:
        return create_model(card.name, img_size=img_size)
    except TypeError as e:  # a timm model without an img_size argument
        raise ValueError(f"{card.name} cannot be built at img_size {img_size} ({e})") from e


def _free(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _prepare(model, spec: Spec):
    """A clean slate for one measurement (memory freed, peak reset), then the model placed as asked."""
    import torch

    _free(spec.device)
    if spec.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = model.to(spec.device)
    if spec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if spec.compile else model


def _check_fake_oom(batch: int) -> None:
    import torch

    limit = os.environ.get(FAKE_OOM_ENV)
    if limit is not None and batch > int(limit):
        raise torch.OutOfMemoryError(f"simulated: batch {batch} > {limit} ({FAKE_OOM_ENV})")


def _input(spec: Spec, batch: int, img_size: int):
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, img_size, img_size, generator=g).to(spec.device)
    return x.contiguous(memory_format=torch.channels_last) if spec.channels_last else x


def _autocast(spec: Spec):
    import contextlib

    import torch

    if spec.amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if spec.amp == "bf16" else torch.float16
    return torch.autocast(device_type=spec.device, dtype=dtype)


def _timed(fn: Callable[[], None], iters: int, device: str) -> list[float]:
    """Seconds per call, each call finished before the clock stops."""
    import torch

    times = []
    for _ in range(iters):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _train(model, result: Result, spec: Spec, batch: int, img_size: int) -> None:
    import torch
    from torch.nn import functional as F

    net = _prepare(model.train(), spec)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(spec.device, enabled=spec.amp == "fp16" and spec.device == "cuda")
    x = _input(spec, batch, img_size)
    num_classes = getattr(model, "num_classes", 1000) or 1000
    y = torch.randint(0, num_classes, (batch,), generator=torch.Generator().manual_seed(0)).to(spec.device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with _autocast(spec):
            loss = F.cross_entropy(net(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(max(spec.warmup, 1)):
        step()
    _sync(spec.device)
    times = _timed(step, spec.iters, spec.device)
    result.train_throughput = round(batch / statistics.median(times), 2)
    result.train_peak_memory_mib = _peak_memory(spec.device)


def _peak_memory(device: str) -> float:
    import torch

    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def _worker() -> int:
    """`python -m s2mlp_cli.bench`: the spec on the first stdin line, then commands, one JSON line each.

    Replies: {"event": "built"} | {"event": "ready"} | {"event": "times", ...} | {"event": "done", "row"}.
    A "done" row at any point is final (unsupported, out of memory, an error, or the finished row).
    """
    _die_with_parent()
    spec = Spec(**json.loads(sys.stdin.readline()))

    def say(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    w = Worker(spec)
    try:
        if (final := w.build()) is not None:
            say({"event": "done", "row": final.to_dict()})
            return 0
        say({"event": "built"})
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["cmd"] == "prepare":
                if (final := w.prepare()) is not None:
                    say({"event": "done", "row": final.to_dict()})
                    return 0
                say({"event": "ready", "batch_size": w.result.batch_size})
            elif cmd["cmd"] == "time":
                times = w.time(cmd["n"], bs1=cmd.get("bs1", False))
                say({"event": "times", "times": times, "peak_memory_mib": w.peak_memory()})
            elif cmd["cmd"] == "finish":
                say({"event": "done", "row": w.finish().to_dict()})
                return 0
    except Exception as e:  # anything else still comes back as a row
        detail = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        say({"event": "done", "row": Result(spec.model, status="error", detail=detail).to_dict()})
    return 0


def _die_with_parent() -> None:
    """A worker must not outlive `s2mlp bench`, even one killed with SIGKILL: on Linux the kernel sends
    SIGKILL when the parent dies (PR_SET_PDEATHSIG); elsewhere, and as a backstop, a thread checks the
    parent every half second."""
    parent = int(os.environ.get(PARENT_ENV, os.getppid()))
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


# --- the parent: interleaved workers ----------------------------------------------------------------------


class _Proc:
    """One worker process, spoken to in JSON lines; a crash, a silence past the timeout or a kill becomes
    an error row."""

    def __init__(self, spec: Spec, timeout: float | None) -> None:
        self.spec, self.timeout, self.row = spec, timeout, None
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "s2mlp_cli.bench"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore", PARENT_ENV: str(os.getpid())},
        )
        self.send(asdict(spec))

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
                        self.row = reply["row"]
                        self.proc.wait()
                    return reply

    def _final(self, detail: str) -> dict:
        self.row = Result(self.spec.model, status="error", detail=detail).to_dict()
        return {"event": "done", "row": self.row}

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


def run(
    opts: BenchOptions, plan: Plan | None = None, on_row: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Measure the plan; the document `{"env", "results", "warnings"}` (also written to `opts.output`).

    `on_row` is called with each row as it finishes. Ctrl-C raises BenchInterrupted carrying the rows
    finished so far, written to `opts.output` marked partial.
    """
    from s2mlp_cli.runtime import environment

    plan = plan or make_plan(opts)
    env = environment(plan.device, opts.amp, opts.tf32)
    env.update(
        warmup=plan.warmup,
        iters=plan.iters,
        rounds=plan.rounds,
        channels_last=opts.channels_last,
        compile=opts.compile,
        isolation="one process per model and batch size; timed rounds interleaved across models",
    )
    before = _machine_state()
    rows: list[dict[str, Any]] = []
    interrupted, stop = False, _SigtermAsInterrupt()
    try:
        with stop:
            for b in plan.batch_sizes:
                bs1_here = 1 not in plan.batch_sizes and b == plan.batch_sizes[0]
                rows += _run_batch(opts, plan, b, bs1_here, on_row)
    except KeyboardInterrupt as e:
        interrupted = True
        rows += getattr(e, "rows", [])
    _share_bs1(rows)
    add_ratios(rows, plan.models)
    _record_machine(env, before, _machine_state())
    doc = report.document(env, rows, warnings=_warnings(env, rows))
    if interrupted:
        doc["partial"] = True
    if opts.output:
        report.write(str(opts.output), doc, report.BENCH_COLUMNS, "s2mlp bench")
    if opts.plot and not interrupted:
        draw_plot(rows, str(opts.plot))
    if interrupted:
        raise BenchInterrupted(doc, stop.signum)
    return doc


class _RoundsInterrupted(KeyboardInterrupt):
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__("interrupted")
        self.rows = rows


def _run_batch(
    opts: BenchOptions, plan: Plan, batch: int, bs1: bool, on_row: Callable[[dict], None] | None
) -> list[dict[str, Any]]:
    """All models at one batch size: start together, prepare one by one, interleave the timed rounds."""
    procs = [_Proc(_spec(opts, plan, card, batch, bs1), opts.timeout) for card in plan.models]
    times: dict[int, list[list[float]]] = {i: [] for i in range(len(procs))}
    bs1_times: dict[int, list[float]] = {i: [] for i in range(len(procs))}
    peaks: dict[int, float] = {}
    try:
        for p in procs:
            p.receive()  # "built", or a final row
        for p in procs:
            if p.row is None:
                p.send({"cmd": "prepare"})
                p.receive()
        per_round = _split(plan.iters, plan.rounds)
        bs1_rounds = _split(max(2 * plan.iters, 10), plan.rounds) if bs1 else []
        for n, n1 in zip(per_round, bs1_rounds or [0] * len(per_round), strict=True):
            for i, p in enumerate(procs):
                for count, is_bs1 in ((n, False), (n1, True)):
                    if count and p.row is None:
                        p.send({"cmd": "time", "n": count, "bs1": is_bs1})
                        reply = p.receive()
                        if reply["event"] == "times":
                            (bs1_times[i].extend if is_bs1 else times[i].append)(reply["times"])
                            peaks[i] = reply["peak_memory_mib"]
        rows = []
        for i, p in enumerate(procs):
            if p.row is None:
                p.send({"cmd": "finish"})
                p.receive()
            row = p.row
            if row["status"] == "ok" and times[i]:
                summarize(row, times[i], bs1_times[i] or None)
            rows.append(row)
            if on_row:
                on_row(row)
        return rows
    except KeyboardInterrupt:
        partial = []
        for i, p in enumerate(procs):  # rows whose rounds had started still say what they measured
            if p.row is not None and p.row["status"] != "ok":
                partial.append(p.row)
            elif times[i] and p.row is None:
                row = Result(p.spec.model, status="ok", detail=f"interrupted after {len(times[i])} round(s)")
                row = row.to_dict() | {"batch_size": batch, "requested_batch_size": batch}
                row["family"] = get_card(p.spec.model).family
                row["peak_memory_mib"] = peaks.get(i)
                summarize(row, times[i], bs1_times[i] or None)
                partial.append(row)
        raise _RoundsInterrupted(partial) from None
    finally:
        for p in procs:
            p.close()


def _split(total: int, parts: int) -> list[int]:
    """`total` calls over `parts` rounds, as evenly as possible (earlier rounds take the remainder)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _spec(opts: BenchOptions, plan: Plan, card: Card, batch: int, bs1: bool) -> Spec:
    return Spec(
        model=card.name,
        batch_size=batch,
        img_size=opts.img_size,
        device=plan.device,
        amp=opts.amp,
        channels_last=opts.channels_last,
        compile=opts.compile,
        tf32=opts.tf32,
        warmup=plan.warmup,
        iters=plan.iters,
        bs1=bs1,
        train=opts.train,
        auto_batch=opts.auto_batch,
        weights=None if opts.weights is None else str(opts.weights),
    )


def _share_bs1(rows: list[dict[str, Any]]) -> None:
    """Batch-1 latency is measured once per model; every row of the model shows that one figure."""
    measured = {r["model"]: r["latency_bs1_ms"] for r in rows if r.get("latency_bs1_ms")}
    for r in rows:
        if r["status"] == "ok" and r["model"] in measured:
            r["latency_bs1_ms"] = measured[r["model"]]


def reference_for(model: str, benched: Sequence[Card]) -> str | None:
    """The S²-MLPv2 variant a model is compared with: itself if it is one, else the benched variant that
    lists it as a peer (its size class), else the benched variant closest in GMACs."""
    ours = [c for c in benched if c.family == families.REFERENCE]
    if not ours:
        return None
    if any(c.name == model for c in ours):
        return model
    for c in ours:
        if model in c.peers:
            return c.name
    gmacs = get_card(model).gmacs
    return min(ours, key=lambda c: abs(c.gmacs - gmacs)).name


def add_ratios(rows: list[dict[str, Any]], benched: Sequence[Card]) -> None:
    """Throughput and memory relative to the reference of each row's size class at the same batch size;
    the throughput ratio's range over the interleaved rounds says how steady it was."""
    for r in rows:
        name = reference_for(r["model"], benched)
        ref = next(
            (
                x
                for x in rows
                if x["model"] == name and x["status"] == "ok" and x["batch_size"] == r["batch_size"]
            ),
            None,
        )
        ok = ref is not None and r["status"] == "ok" and r.get("throughput")
        r["reference"] = name if ok else None
        r["throughput_ratio"] = round(r["throughput"] / ref["throughput"], 3) if ok else None
        mem = ok and r.get("peak_memory_mib") and ref.get("peak_memory_mib")
        r["memory_ratio"] = round(r["peak_memory_mib"] / ref["peak_memory_mib"], 3) if mem else None
        mine, theirs = r.get("round_throughputs") or [], (ref or {}).get("round_throughputs") or []
        per_round = [a / b for a, b in zip(mine, theirs, strict=False) if b]
        r["throughput_ratio_range"] = (
            [round(min(per_round), 3), round(max(per_round), 3)] if ok and per_round else None
        )


def _machine_state() -> dict[str, Any]:
    state: dict[str, Any] = {"time": time.monotonic()}
    try:
        state["load"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        state["cpu_total"], state["cpu_steal"] = sum(fields[:8]), fields[7] if len(fields) > 7 else 0
    except (OSError, ValueError, IndexError):
        pass
    return state


def _record_machine(env: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> None:
    """Load average before and after, and the share of CPU time the hypervisor took (steal) meanwhile."""
    if "load" in before:
        env["load_before"], env["load_after"] = before["load"], after.get("load")
    if "cpu_total" in before and "cpu_total" in after and after["cpu_total"] > before["cpu_total"]:
        steal = after["cpu_steal"] - before["cpu_steal"]
        env["cpu_steal_pct"] = round(100 * steal / (after["cpu_total"] - before["cpu_total"]), 2)
    env["cpu_count"] = os.cpu_count()


def _warnings(env: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """When the numbers deserve less trust: a busy machine, a hypervisor taking time, a wide spread."""
    out = []
    cores = env.get("cpu_count") or 1
    if env.get("load_before") and env["load_before"][0] > BUSY_LOAD * cores:
        out.append(
            f"the machine was busy before the run (load average {env['load_before'][0]} on {cores} cores): "
            "the figures may be low and noisy; run again when it is idle"
        )
    if (env.get("cpu_steal_pct") or 0) > 2:
        out.append(f"the hypervisor took {env['cpu_steal_pct']}% of CPU time during the run (steal)")
    for r in rows:
        if r["status"] != "ok" or not r.get("throughput"):
            continue
        lo, hi = r["throughput_iqr"]
        spread = (hi - lo) / r["throughput"]
        ratio, rng = r.get("throughput_ratio"), r.get("throughput_ratio_range")
        ratio_spread = (rng[1] - rng[0]) / ratio if ratio and rng else 0.0
        if max(spread, ratio_spread) > WIDE_SPREAD:
            out.append(
                f"{r['model']} at batch {r['batch_size']}: wide spread (IQR {lo:.1f}–{hi:.1f} images/s"
                + (f", × ref {rng[0]:.2f}–{rng[1]:.2f} across rounds" if rng else "")
                + "); more iterations or an idle machine would narrow it"
            )
    return out


def draw_plot(results: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from s2mlp_cli.files import atomic_path

    ok = [r for r in results if r["status"] == "ok"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, label in (
        (axes[0], "paper_top1", "paper ImageNet top-1 (%)"),
        (axes[1], "params_m", "params (M)"),
    ):
        for r in ok:
            if r[key] is None:
                continue
            ax.scatter(r["throughput"], r[key], color="C0" if r["family"] == families.REFERENCE else "C1")
            ax.annotate(
                r["model"], (r["throughput"], r[key]), fontsize=8, xytext=(3, 3), textcoords="offset points"
            )
        ax.set_xlabel("throughput (images/s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(_worker())
