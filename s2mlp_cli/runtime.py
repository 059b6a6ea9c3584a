"""Where and how models run, shared by `eval` and `bench`: device choice, math mode, autocast, and the
environment block every result carries."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

from s2mlp_cli.errors import ProblemsError, S2MLPError

DEVICES = ("auto", "cuda", "cpu")
AMP = ("none", "bf16", "fp16")  # autocast dtypes
DECODE = ("cpu", "gpu")  # where eval decodes JPEGs: PIL on the CPU (exact), or nvJPEG on the GPU
COMPILE_BACKEND_ENV = "S2MLP_COMPILE_BACKEND"
# torch.compile backends `--compile` may use: inductor (the default, what a user measures), and two that
# trace the same graphs without generating kernels (for checking the compiled path cheaply on a CPU).
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")


def compile_backend() -> str:
    """The backend `--compile` uses: `S2MLP_COMPILE_BACKEND`, default inductor; anything else is an error."""
    backend = os.environ.get(COMPILE_BACKEND_ENV, "") or "inductor"
    if backend not in COMPILE_BACKENDS:
        raise S2MLPError(
            f"{COMPILE_BACKEND_ENV}={backend[:40]!r} is not a backend s2mlp compiles with; "
            f"use one of {', '.join(COMPILE_BACKENDS)}"
        )
    return backend


def compiled(model: Any) -> Any:
    """`torch.compile(model)` with the backend every result names (`compile_backend` in env)."""
    import torch

    return torch.compile(model, backend=compile_backend())


def environment(device: str, amp: str, tf32: bool) -> dict[str, Any]:
    """The conditions a reader needs to trust or reproduce the numbers."""
    import platform
    from datetime import datetime, timezone

    import torch

    from s2mlp_cli.version import __version__

    env: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "s2mlp": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "device": device,
        "dtype": dtype_label(amp),
        "math_mode": math_mode(device, amp, tf32),
    }
    if os.environ.get(COMPILE_BACKEND_ENV):
        env["compile_backend"] = compile_backend()
    try:
        import timm

        env["timm"] = timm.__version__
    except ImportError:
        pass
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(
            device_name=props.name,
            device_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            driver=nvidia_driver(),
        )
    else:
        env["device_name"] = env["cpu"]
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def nvidia_driver() -> str | None:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def dtype_label(amp: str) -> str:
    return {"none": "float32", "bf16": "bfloat16 (autocast)", "fp16": "float16 (autocast)"}[amp]


def math_mode(device: str, amp: str, tf32: bool) -> str:
    if amp != "none":
        return f"{amp} autocast, fp32 elsewhere" + (" with TF32" if tf32 and device == "cuda" else "")
    if device == "cuda":
        return "fp32, TF32 on" if tf32 else "fp32, TF32 off (full precision)"
    return "fp32"


def resolve_device(device: str) -> str:
    """auto -> cuda when present; cuda on a machine without one is an error pointing at the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise S2MLPError("no CUDA device is available here", next_step="use_cpu", advice="run on the CPU")
    return device


def set_math_mode(device: str, tf32: bool) -> None:
    """Full fp32 matmuls unless TF32 is asked for; `math_mode` says which in every result."""
    import torch

    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def amp_problem(device: str, amp: str) -> S2MLPError | None:
    """fp16 autocast on the CPU is a usage problem, caught before any model is built."""
    if amp == "fp16" and device == "cpu":
        return S2MLPError("fp16 autocast is for the GPU; use bf16 or none on the CPU", param="amp")
    return None


def device_for(device: str, amp: str) -> str:
    """`resolve_device`, then the autocast check for the device it resolved to (auto may mean cpu)."""
    resolved = resolve_device(device)
    if (problem := amp_problem(resolved, amp)) is not None:
        raise ProblemsError([problem])
    return resolved


def autocast(device: str, amp: str):
    """The autocast context of `amp` ("none", "bf16", "fp16") on `device`; a no-op for "none"."""
    import contextlib

    import torch

    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def cpu_threads(workers: int, processes: int = 1, override: int | None = None) -> tuple[int, str]:
    """Intra-op threads for a CPU job, and the rule's words for the conditions line. The cores are
    shared by the processes (torchrun) and, in each, by its decoding workers: threads = cores per process
    less the workers, at least 1, so that a default run never asks for more threads than there are cores
    (2 loader workers and 2 threads on 2 cores slowed runs 10-100x on a busy machine). `override`
    (`--threads`) is taken as it is."""
    cores = os.cpu_count() or 1
    if override is not None:
        return override, f"{override} (--threads)"
    per_process = max(1, cores // max(1, processes))
    threads = max(1, per_process - workers)
    return threads, (
        f"{threads}: {cores} cores / {processes} process{'es' if processes != 1 else ''}, less {workers} "
        f"loader worker{'s' if workers != 1 else ''}"
    )


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """How a job runs its model: the one declaration of these settings and their defaults. Every job's
    request (`EvalOptions`, `TrainOptions`, `BenchOptions`) and what a job hands down (eval's
    `feed.Options`, bench's `Settings`) is a RunSettings, so each takes them by keyword with one meaning."""

    device: str = "auto"  # auto: CUDA when there is one, else the CPU (`device_for`)
    amp: str = "none"  # none, bf16 or fp16 autocast
    channels_last: bool = False
    compile: bool = False  # torch.compile the model (backend: `compiled`)
    tf32: bool = False  # TF32 matmuls on the GPU
    threads: int | None = None  # CPU intra-op threads; None: `cpu_threads`'s rule

    def run_settings(self, **changes: Any) -> dict[str, Any]:
        """These settings as keywords (with `changes`), to hand to the next RunSettings."""
        return {**{f.name: getattr(self, f.name) for f in fields(RunSettings)}, **changes}


def default_batch(device: str) -> int:
    """The batch of an inference pass (eval, predict, train's validation) when none is given."""
    return 256 if device == "cuda" else 32


@contextmanager
def threads_kept() -> Iterator[None]:
    """A job sets its own intra-op threads (`use_cpu_threads`); the caller's come back when it ends."""
    import torch

    caller = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(caller)


def use_cpu_threads(device: str, workers: int, processes: int, override: int | None) -> str:
    """Set torch's intra-op threads by `cpu_threads` for a CPU job (a GPU job keeps torch's default);
    the rule as said in the results' env."""
    import torch

    if device != "cpu":
        return f"{torch.get_num_threads()} (torch's default; the work is on the GPU)"
    threads, why = cpu_threads(workers, processes, override)
    torch.set_num_threads(threads)
    return why
