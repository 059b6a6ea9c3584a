"""One model at one batch size, measured in this process: build and count it, place it, warm up (halving
the batch on out-of-memory when allowed), time calls on demand, then peak memory and training speed.

Timing: each call is finished before the clock stops (CUDA events on the GPU, perf_counter around a
finished call on the CPU). With compile, the first call is timed apart as compile time. TF32 is off
unless asked for.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from s2mlp_cli.bench.summary import summarize
from s2mlp_cli.errors import S2MLPError
from s2mlp_cli.runtime import RunSettings, autocast, dtype_label, set_math_mode
from s2mlp_cli.zoo import Card, get_card


@dataclass(frozen=True)
class Settings(RunSettings):
    """How every model of a benchmark is measured (the device resolved)."""

    device: str = field(default="cpu", kw_only=True)
    warmup: int = 2
    iters: int = 6  # for `measure`; the runner asks for rounds
    img_size: int | None = None  # None: each card's
    train: bool = False
    auto_batch: bool = False
    weights: str | None = None
    runtime: str = "torch"  # or "onnxruntime": the model exported to ONNX in the worker, run on the CPU

    @property
    def label(self) -> str:
        """What ran the model, as rows name it: torch, torch compiled, onnxruntime."""
        return (
            "onnxruntime" if self.runtime == "onnxruntime" else "torch compiled" if self.compile else "torch"
        )


@dataclass(frozen=True)
class Spec:
    """What one worker measures: one model at one batch size."""

    model: str
    batch_size: int
    settings: Settings = Settings()
    bs1: bool = True  # also measure batch-1 latency in this worker
    bs1_iters: int = 10

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Spec:
        return cls(**{**d, "settings": Settings(**d["settings"])})


@dataclass
class Row:
    """One benchmark result: the one row type of the worker, the runner and the document."""

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
    runtime: str = "torch"  # torch, torch compiled or onnxruntime
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
    # set by the comparison with the reference model (`compare.add_ratios`)
    reference: str | None = None
    throughput_ratio: float | None = None
    throughput_ratio_range: list[float] | None = None
    memory_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class Worker:
    """One model at one batch size, in this process: build, warm up, time rounds on demand, finish."""

    def __init__(self, spec: Spec) -> None:
        self.spec, self.s = spec, spec.settings
        self.net = self.x = self.x1 = None

    def build(self) -> Row | None:
        """Build the model and count it; a final row when it cannot run at all, else None."""
        import torch

        from s2mlp_cli import arch  # noqa: F401  (torch and timm loaded before the baseline is read)

        spec, s, card = self.spec, self.s, get_card(self.spec.model)
        self.img_size = s.img_size or card.preprocess.input_size
        r = self.row = Row(
            card.name,
            family=card.family,
            requested_batch_size=spec.batch_size,
            img_size=self.img_size,
            device=s.device,
            dtype=dtype_label(s.amp),
            channels_last=s.channels_last,
            compile=s.compile,
            runtime=s.label,
            threads=torch.get_num_threads(),
            paper_top1=card.paper.get("top1"),
            memory_kind="max_memory_allocated" if s.device == "cuda" else "peak RSS of the worker process",
        )
        set_math_mode(s.device, s.tf32)
        if s.threads is not None:
            torch.set_num_threads(s.threads)
        r.extra["baseline_rss_mib"] = _peak_memory("cpu")  # the interpreter, torch and timm, before the model
        try:
            self.model = _build(card, self.img_size)
        except (ValueError, S2MLPError) as e:  # e.g. ViP off 224, a size the stride does not divide
            r.status, r.detail = "unsupported", str(e).splitlines()[0]
            return r
        if s.weights:
            from s2mlp_cli.api import load_pretrained

            r.weights = load_pretrained(self.model, card, s.weights, progress=False).source

        from s2mlp_cli.bench.stats import count_gmacs, count_params

        r.params_m = round(count_params(self.model) / 1e6, 3)
        # two decimals, as the cards (and `s2mlp list`) give them: 3 and then 2 rounded 8.5451 to 8.54
        r.gmacs = round(count_gmacs(_build(card, self.img_size, "meta"), self.img_size), 2)
        return None

    def prepare(self) -> Row | None:
        """Place the model and warm up, stepping the batch down on out-of-memory when allowed (timm's
        `decay_batch_step`: halving); a final row if it cannot run, else None."""
        from timm.utils import decay_batch_step

        batch = self.spec.batch_size
        while True:
            try:
                self._warm(batch)
                break
            except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
                if not out_of_memory(e):
                    raise
                self.net = self.x = self.x1 = None
                _free(self.s.device)
                if not self.s.auto_batch or batch == 1:
                    self.row.status = "oom"
                    self.row.detail = f"out of memory at batch {batch}" + (
                        "" if self.s.auto_batch else "; automatic batch halving would retry smaller batches"
                    )
                    self.row.extra["oom_message"] = str(e).splitlines()[0] if str(e) else ""
                    return self.row
                batch = decay_batch_step(batch, num_intra_steps=1)
        self.row.batch_size = batch
        if batch != self.spec.batch_size:
            self.row.detail = f"batch {self.spec.batch_size} ran out of memory; measured at {batch}"
        return None

    def _warm(self, batch: int) -> None:
        s = self.s
        if s.runtime == "onnxruntime":
            from s2mlp_cli.bench.ort import OrtNet

            self.net = OrtNet(self.model.eval(), self.img_size)
        else:
            self.net = _place(self.model.eval(), s)
        self.x = make_input(s, batch, self.img_size)
        self.x1 = self.x[:1].clone()
        if s.compile:
            t0 = time.perf_counter()
            self._call(self.x)
            _sync(s.device)
            self.row.compile_s = round(time.perf_counter() - t0, 3)
        # at least one untimed call at the batch size, even with no warm-up asked for: out-of-memory shows
        # here, where the batch can still be stepped down, not in the timed calls
        for _ in range(max(s.warmup, 0 if s.compile else 1)):
            self._call(self.x)
        if self.spec.bs1:
            if s.compile:  # batch 1 is a second graph: its compile is timed and reported apart too
                t0 = time.perf_counter()
                self._call(self.x1)
                _sync(s.device)
                self.row.extra["compile_bs1_s"] = round(time.perf_counter() - t0, 3)
            for _ in range(max(s.warmup, 1)):
                self._call(self.x1)
        _sync(s.device)

    def _call(self, x) -> None:
        import torch

        with torch.inference_mode(), autocast(self.s.device, self.s.amp):
            self.net(x)

    def time(self, n: int, bs1: bool = False) -> list[float]:
        """Seconds of each of `n` calls, at the batch size or at batch 1."""
        x = self.x1 if bs1 else self.x
        return timed(lambda: self._call(x), n, self.s.device)

    def peak_memory(self) -> float:
        return _peak_memory(self.s.device)

    def finish(self) -> Row:
        """Peak memory of inference, then training throughput when asked."""
        self.row.peak_memory_mib = self.peak_memory()
        if self.s.train:
            try:
                _train(self.model, self.row, self.s, self.row.batch_size, self.img_size)
            except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
                if not out_of_memory(e):
                    raise
                _free(self.s.device)
                detail = self.row.detail
                self.row.detail = (detail + "; " if detail else "") + "training ran out of memory"
        return self.row


def out_of_memory(e: BaseException) -> bool:
    """An allocation that failed: the GPU's OutOfMemoryError, or on the CPU the allocator's RuntimeError
    ("DefaultCPUAllocator: can't allocate memory") or Python's MemoryError."""
    import torch

    if isinstance(e, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(e, RuntimeError) and "can't allocate memory" in str(e)


def measure(spec: Spec) -> Row:
    """Everything for one model in this process, uninterleaved (tests, notebooks, quick looks)."""
    w = Worker(spec)
    if (final := w.build() or w.prepare()) is not None:
        return final
    times = w.time(spec.settings.iters)
    bs1 = w.time(spec.bs1_iters, bs1=True) if spec.bs1 else None
    r = w.finish()
    summarize(r, [times], bs1)
    return r


def _build(card: Card, img_size: int, device: str | None = None):
    from s2mlp_cli import arch

    try:
        return arch.create(card, img_size=img_size, device=device)
    except TypeError as e:  # a timm model without an img_size argument
        raise ValueError(f"{card.name} cannot be built at img_size {img_size} ({e})") from e


def _free(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _place(model, s: Settings):
    """A clean slate for one measurement (memory freed, peak reset), then the model placed as asked."""
    import torch

    _free(s.device)
    if s.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = model.to(s.device)
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    from s2mlp_cli.runtime import compiled

    return compiled(model) if s.compile else model


def make_input(s: Settings, batch: int, img_size: int):
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, img_size, img_size, generator=g).to(s.device)
    return x.contiguous(memory_format=torch.channels_last) if s.channels_last else x


def timed(fn: Callable[[], None], iters: int, device: str) -> list[float]:
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


def _train(model, row: Row, s: Settings, batch: int, img_size: int) -> None:
    import torch
    from torch.nn import functional as F

    net = _place(model.train(), s)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(s.device, enabled=s.amp == "fp16" and s.device == "cuda")
    x = make_input(s, batch, img_size)
    num_classes = getattr(model, "num_classes", 1000) or 1000
    y = torch.randint(0, num_classes, (batch,), generator=torch.Generator().manual_seed(0)).to(s.device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(s.device, s.amp):
            loss = F.cross_entropy(net(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(max(s.warmup, 1)):
        step()
    _sync(s.device)
    times = timed(step, s.iters, s.device)
    row.train_throughput = round(batch / statistics.median(times), 2)
    row.train_peak_memory_mib = _peak_memory(s.device)


def _peak_memory(device: str) -> float:
    import torch

    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    from s2mlp_cli.bench.ort import peak_rss_kib

    return round(peak_rss_kib() / 1024, 1)
