"""Benchmarks: params, GMACs, throughput, latency and peak memory, one model per subprocess.

Each model runs in a fresh `python -m s2mlp_cli.bench` process, so one model's allocations (peak RSS on
the CPU, the caching allocator on the GPU) never bleed into the next one's numbers, and an out-of-memory
crash costs one row, not the run. The parent passes a JSON spec on stdin and reads one JSON result.

Timing: `warmup` untimed calls first (with --compile the first call is timed apart as compile time), then
`iters` timed calls, each bracketed by CUDA events (GPU) or perf_counter around a finished call (CPU).
Throughput is batch / median time; the spread is the interquartile range. TF32 is off unless asked for.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from s2mlp_cli.errors import S2MLPError
from s2mlp_cli.runtime import dtype_label, set_math_mode

AMP = ("none", "bf16", "fp16")
# A test hook: pretend any batch above this size runs out of memory (exercises the OOM path on any machine).
FAKE_OOM_ENV = "S2MLP_BENCH_FAKE_OOM_ABOVE"


@dataclass
class Spec:
    """What one worker measures."""

    model: str
    batch_size: int
    img_size: int | None = None  # None: the card's
    device: str = "cpu"
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    tf32: bool = False
    warmup: int = 2
    iters: int = 6
    bs1_iters: int = 10
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
    latency_ms: dict[str, float] | None = None  # per batch: p50, p90, mean, std, min, max, n
    latency_bs1_ms: dict[str, float] | None = None  # batch 1: p50, p99, mean, n
    peak_memory_mib: float | None = None
    memory_kind: str = ""
    train_throughput: float | None = None
    train_peak_memory_mib: float | None = None
    threads: int | None = None
    paper_top1: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the parent side -------------------------------------------------------------------------------


def run_isolated(spec: Spec, timeout: float | None = None) -> Result:
    """Measure `spec` in a fresh interpreter; a crash or timeout becomes an error row."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "s2mlp_cli.bench"],
            input=json.dumps(asdict(spec)),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    except subprocess.TimeoutExpired:
        return Result(spec.model, status="error", detail=f"did not finish within {timeout:.0f} s")
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode == 0 and lines:
        return Result(**json.loads(lines[-1]))
    reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
    if done.returncode < 0:
        reason = f"killed by signal {-done.returncode}" + (
            " (out of memory?)" if done.returncode == -9 else ""
        )
    return Result(spec.model, status="error", detail=f"worker failed: {reason}")


# --- the worker side -------------------------------------------------------------------------------


def measure(spec: Spec) -> Result:
    """Everything for one model, in this process (the worker). Expected failures become rows."""
    import torch

    import s2mlp_cli.models  # noqa: F401  (torch and timm imported before the baseline is read)
    from s2mlp_cli.zoo import get_card

    card = get_card(spec.model)
    img_size = spec.img_size or card.preprocess.input_size
    result = Result(
        card.name,
        family=card.family,
        requested_batch_size=spec.batch_size,
        img_size=img_size,
        device=spec.device,
        dtype=dtype_label(spec.amp),
        channels_last=spec.channels_last,
        compile=spec.compile,
        threads=torch.get_num_threads(),
        paper_top1=card.paper.get("top1"),
        memory_kind="max_memory_allocated" if spec.device == "cuda" else "peak RSS of the worker process",
    )
    set_math_mode(spec.device, spec.tf32)
    result.extra["baseline_rss_mib"] = _peak_memory(
        "cpu"
    )  # the interpreter, torch and timm, before the model
    try:
        model = _build(card, img_size)
    except (ValueError, S2MLPError) as e:  # e.g. ViP off 224, a size the stride does not divide
        result.status, result.detail = "unsupported", str(e).splitlines()[0]
        return result
    if spec.weights:
        from s2mlp_cli.weights import load_weights

        load_weights(model, spec.weights)

    from s2mlp_cli.stats import count_gmacs, count_params

    result.params_m = round(count_params(model) / 1e6, 3)
    with torch.device("meta"):
        meta = _build(card, img_size)
    result.gmacs = round(count_gmacs(meta, img_size), 3)
    del meta

    batch = spec.batch_size
    while True:
        try:
            _infer(model, result, spec, batch, img_size)
            break
        except torch.OutOfMemoryError as e:
            _free(spec.device)
            if not spec.auto_batch or batch == 1:
                result.status = "oom"
                result.detail = f"out of memory at batch {batch}" + (
                    "" if spec.auto_batch else "; --auto-batch retries smaller batches"
                )
                result.extra["oom_message"] = str(e).splitlines()[0] if str(e) else ""
                return result
            batch //= 2
    result.batch_size = batch
    if batch != spec.batch_size:
        result.detail = f"batch {spec.batch_size} ran out of memory; measured at {batch}"
    if spec.train:
        try:
            _train(model, result, spec, batch, img_size)
        except torch.OutOfMemoryError:
            _free(spec.device)
            result.detail = (result.detail + "; " if result.detail else "") + f"training OOM at batch {batch}"
    return result


def _build(card, img_size: int):
    from s2mlp_cli.models import create_model

    overrides = {} if img_size == card.preprocess.input_size else {"img_size": img_size}
    try:
        model = create_model(card.name, **overrides)
    except TypeError as e:  # a timm model without an img_size argument
        raise ValueError(f"{card.name} cannot be built at img_size {img_size} ({e})") from e
    return model


def _free(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _check_fake_oom(batch: int) -> None:
    import torch

    limit = os.environ.get(FAKE_OOM_ENV)
    if limit is not None and batch > int(limit):
        raise torch.OutOfMemoryError(f"simulated: batch {batch} > {limit} ({FAKE_OOM_ENV})")


def _prepare(model, spec: Spec, batch: int):
    """A clean slate for one measurement (memory freed, peak reset), then the model placed as asked."""
    import torch

    _check_fake_oom(batch)
    _free(spec.device)
    if spec.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = model.to(spec.device)
    if spec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if spec.compile else model


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


def _timed(fn, iters: int, device: str) -> list[float]:
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


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _infer(model, result: Result, spec: Spec, batch: int, img_size: int) -> None:
    import torch

    net = _prepare(model.eval(), spec, batch)
    x = _input(spec, batch, img_size)

    def step() -> None:
        with torch.inference_mode(), _autocast(spec):
            net(x)

    if spec.compile:
        t0 = time.perf_counter()
        step()
        _sync(spec.device)
        result.compile_s = round(time.perf_counter() - t0, 3)
    for _ in range(spec.warmup):
        step()
    _sync(spec.device)
    times = _timed(step, spec.iters, spec.device)
    ms = [t * 1000 for t in times]
    result.throughput = round(batch / statistics.median(times), 2)
    result.throughput_iqr = [
        round(batch / _percentile(times, 0.75), 2),
        round(batch / _percentile(times, 0.25), 2),
    ]
    result.latency_ms = {
        "p50": round(statistics.median(ms), 3),
        "p90": round(_percentile(ms, 0.9), 3),
        "mean": round(statistics.fmean(ms), 3),
        "std": round(statistics.stdev(ms), 3) if len(ms) > 1 else 0.0,
        "min": round(min(ms), 3),
        "max": round(max(ms), 3),
        "n": len(ms),
    }
    result.peak_memory_mib = _peak_memory(spec.device)

    x1 = x[:1].clone()

    def step1() -> None:
        with torch.inference_mode(), _autocast(spec):
            net(x1)

    for _ in range(max(spec.warmup, 1)):
        step1()
    _sync(spec.device)
    ms1 = [t * 1000 for t in _timed(step1, spec.bs1_iters, spec.device)]
    result.latency_bs1_ms = {
        "p50": round(statistics.median(ms1), 3),
        "p99": round(_percentile(ms1, 0.99), 3),
        "mean": round(statistics.fmean(ms1), 3),
        "n": len(ms1),
    }


def _train(model, result: Result, spec: Spec, batch: int, img_size: int) -> None:
    import torch
    from torch.nn import functional as F

    net = _prepare(model.train(), spec, batch)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(spec.device, enabled=spec.amp == "fp16" and spec.device == "cuda")
    x = _input(spec, batch, img_size)
    y = torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(0)).to(spec.device)
    num_classes = getattr(model, "num_classes", 1000) or 1000
    y = y % num_classes

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
    spec = Spec(**json.loads(sys.stdin.read()))
    try:
        result = measure(spec)
    except Exception as e:  # anything else still comes back as a row
        result = Result(
            spec.model,
            status="error",
            detail=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
        )
    sys.stdout.write(json.dumps(result.to_dict()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
