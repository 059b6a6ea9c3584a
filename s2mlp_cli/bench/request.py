"""A benchmark request: what the user asked for (`BenchOptions`), every problem with it found without
importing torch (`check`), and what will run with a rough estimate of how long (`make_plan`)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from s2mlp_cli import families, report
from s2mlp_cli.bench.measurement import Settings
from s2mlp_cli.errors import ProblemsError, S2MLPError
from s2mlp_cli.runtime import AMP, RunSettings, amp_problem, device_for
from s2mlp_cli.zoo import Card, get_card, requested_card

DEFAULTS = {
    "cuda": {"batch": [256], "warmup": 10, "iters": 50, "rounds": 5},
    "cpu": {"batch": [8], "warmup": 2, "iters": 6, "rounds": 3},
}
MAX_TIMEOUT = 7 * 24 * 3600.0  # a week: past it, time.monotonic() + timeout stops meaning anything


@dataclass(frozen=True)
class BenchOptions(RunSettings):
    """One benchmark request; None means the device's default."""

    variants: Sequence[str] = ("s2mlpv2_small",)
    compare: Sequence[str] = ()  # family groups (vip, gfnet, ...) or variant names
    batch_sizes: Sequence[int] | None = None
    img_size: int | None = None
    warmup: int | None = None
    iters: int | None = None
    rounds: int | None = None
    train: bool = False
    auto_batch: bool = False
    weights: str | Path | None = None  # one model only; speed does not depend on it
    timeout: float | None = None  # seconds per worker
    output: str | Path | None = None  # .json, .csv or .md; written partial when interrupted
    plot: str | Path | None = None
    runtimes: Sequence[
        str
    ] = ()  # RUNTIMES, each measured beside the others; () : torch (compiled with compile)


# What runs the model: PyTorch eager, torch.compile, or onnxruntime on the CPU (the model exported by
# `s2mlp_cli.export` in the worker, the same batches timed the same way).
RUNTIMES = ("torch", "compiled", "onnxruntime")


def runtimes_of(opts: BenchOptions) -> list[str]:
    chosen = list(dict.fromkeys(r.strip() for r in opts.runtimes if r.strip()))
    return chosen or ["compiled" if opts.compile else "torch"]


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


def _runtime_problems(opts: BenchOptions) -> list[S2MLPError]:
    chosen = runtimes_of(opts)
    if unknown := [r for r in chosen if r not in RUNTIMES]:
        return [S2MLPError(f"unknown runtime {unknown[0]!r}; use {', '.join(RUNTIMES)}", param="runtimes")]
    if "onnxruntime" not in chosen:
        return []
    problems = []
    if opts.device == "cuda":
        problems.append(S2MLPError("onnxruntime is measured on the CPU: use --device cpu", param="runtimes"))
    if opts.amp != "none" or opts.channels_last or opts.train:
        what = "--amp" if opts.amp != "none" else "--channels-last" if opts.channels_last else "--train"
        problems.append(
            S2MLPError(f"onnxruntime runs the fp32 ONNX graph; {what} is torch's", param="runtimes")
        )
    from s2mlp_cli.export import missing_packages

    if missing := missing_packages():
        problems.append(
            S2MLPError(f"onnxruntime needs {', '.join(missing)}: pip install 's2mlp[onnx]'", param="runtimes")
        )
    return problems


def _card(name: str, param: str) -> Card:
    return requested_card(name, param)


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
    problems += _runtime_problems(opts)
    if opts.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            problems.append(
                S2MLPError("drawing a plot needs matplotlib", param="plot", next_step="install_plot")
            )
    return problems


@dataclass
class Plan:
    """What `run` will do: models, batch sizes, how each is measured, and a rough estimate of the time."""

    models: list[Card]
    batch_sizes: list[int]
    settings: Settings
    rounds: int
    estimate_s: float = 0.0  # without compiling
    runtimes: list[Settings] = field(default_factory=list)  # one per runtime measured; [settings] when empty
    compile_s: tuple[float, float] = (0.0, 0.0)  # what compiling adds, as a range (basis: COMPILE_S)

    @property
    def device(self) -> str:
        return self.settings.device

    @property
    def warmup(self) -> int:
        return self.settings.warmup

    @property
    def iters(self) -> int:
        return self.settings.iters

    def describe(self) -> str:
        names = ", ".join(c.name for c in self.models)
        sizes = ",".join(map(str, self.batch_sizes))
        jobs = len(self.models) * len(self.batch_sizes) * len(self.variants)
        when = f"~{_span(self.estimate_s)}"
        basis = ""
        if self.compile_s[1]:
            lo, hi = (self.estimate_s + c for c in self.compile_s)
            per = COMPILE_S[self.compile_backend if self.compile_backend != "inductor" else self.device]
            when = f"~{_span(lo)} to {_span(hi)}"
            basis = f"; compiling {self.graphs} graph(s) at {per[0]:.0f}-{per[1]:.0f} s each is most of it"
        return (
            f"will run {jobs} benchmark(s) on {self.device}: {names} at batch {sizes} "
            f"({self.warmup} warm-up, {self.iters} timed calls in {self.rounds} interleaved rounds); "
            f"estimate {when} (rough{basis})"
        )

    @property
    def variants(self) -> list[Settings]:
        return self.runtimes or [self.settings]

    @property
    def graphs(self) -> int:
        """Compiled graphs: one per model, compiled runtime and batch size, and batch 1's beside."""
        compiled = sum(1 for v in self.variants if v.compile)
        return compiled * len(self.models) * (len(self.batch_sizes) + (0 if 1 in self.batch_sizes else 1))

    @property
    def compile_backend(self) -> str:
        from s2mlp_cli.runtime import compile_backend

        return compile_backend()


# Seconds to compile one graph, a range: inductor on the CPU (measured here: a tiny S²-MLPv2 took 29 s at
# batch 2 and 12 s more at batch 1 on 2 cores; full-size models take longer), on a GPU (inductor with
# Triton: a similar range is usual), and the tracing-only backends, which generate no code.
COMPILE_S = {"cpu": (30.0, 120.0), "cuda": (20.0, 90.0), "aot_eager": (2.0, 15.0), "eager": (1.0, 10.0)}


# Seconds for a worker to export a model to ONNX and check it (measured here: S²-MLPv2-S 13-24 s and
# ViP-S/7 13 s on 2 cores).
ONNX_EXPORT_S = 20.0


def _span(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def make_plan(opts: BenchOptions) -> Plan:
    """Resolve the device and defaults, and estimate the time from a matmul probe of this device."""
    if problems := check(opts):
        raise ProblemsError(problems)
    device = device_for(opts.device, opts.amp)
    d = DEFAULTS[device]
    iters = opts.iters or d["iters"]
    settings = Settings(
        **opts.run_settings(device=device),
        warmup=d["warmup"] if opts.warmup is None else opts.warmup,
        iters=iters,
        img_size=opts.img_size,
        train=opts.train,
        auto_batch=opts.auto_batch,
        weights=None if opts.weights is None else str(opts.weights),
    )
    plan = Plan(
        models=expand_models(opts.variants, opts.compare),
        batch_sizes=list(opts.batch_sizes or d["batch"]),
        settings=settings,
        rounds=max(1, min(opts.rounds or d["rounds"], iters)),
    )
    plan.runtimes = [
        replace(settings, runtime="onnxruntime" if r == "onnxruntime" else "torch", compile=r == "compiled")
        for r in runtimes_of(opts)
    ]
    plan.estimate_s = _estimate(plan) * len(plan.runtimes)
    if any(v.runtime == "onnxruntime" for v in plan.runtimes):  # each worker exports and checks its graph
        plan.estimate_s += ONNX_EXPORT_S * len(plan.models) * len(plan.batch_sizes)
    if plan.graphs:
        per = COMPILE_S[plan.compile_backend if plan.compile_backend != "inductor" else device]
        plan.compile_s = (plan.graphs * per[0], plan.graphs * per[1])
    return plan


# The GPU estimate's rate, GMAC/s: no probe, so the parent makes no CUDA context before its workers do
# (a context costs ~500 MiB of the card and would be counted against the first worker). 10 TMAC/s is ~30%
# of a current datacenter GPU's fp32 rate; the live estimate takes over from the measured warm-ups.
GPU_NOMINAL_GMACS = 10_000.0


def _estimate(plan: Plan) -> float:
    """Worker start-up plus every call at the probe's rate. Models reach ~40% of a large matmul's rate on
    the CPU (measured here: S²-MLPv2-S 75 GMAC/s against a 190 GMAC/s matmul); on the GPU a nominal rate
    (`GPU_NOMINAL_GMACS`), not probed."""
    rate = _matmul_gmacs("cpu") * 0.4 if plan.device == "cpu" else GPU_NOMINAL_GMACS
    start = 8.0 if plan.device == "cpu" else 15.0  # import torch + timm, build, per worker
    parallel = max(1, min(len(plan.models), os.cpu_count() or 1))
    total = 0.0
    for b in plan.batch_sizes:
        total += start * len(plan.models) / parallel
        for card in plan.models:
            calls = plan.warmup + plan.iters + (3 * plan.iters if plan.settings.train else 0)
            total += calls * b * card.gmacs / rate
            if 1 not in plan.batch_sizes and b == plan.batch_sizes[0]:
                total += (max(plan.warmup, 1) + max(2 * plan.iters, 10)) * card.gmacs / rate
    return total


def _matmul_gmacs(device: str) -> float:
    import torch

    n = 1024
    a = torch.randn(n, n, device=device)
    a @ a  # warm
    reps, t0 = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - t0 < 0.2:
        a @ a
        reps += 1
    return reps * n**3 / (time.perf_counter() - t0) / 1e9
