"""`s2mlp doctor`: whether this machine can produce honest numbers, one check at a time, each with a
verdict ("ok", "warn", "fail") and, when it is not ok, the next step.

Versions (torch, CUDA, driver, cuDNN, NCCL, Triton), the devices with their memory and bf16 support, the
TF32 state, a C compiler and Python headers for `--compile`, CPU count, load and steal, the GPU's clocks,
power limit and other processes (nvidia-smi, when present), and a self-check of a few seconds: a tiny
model's output on the device equals the CPU's within tolerance, and the timing bench uses agrees with
the wall clock. `run` returns the document; any "fail" makes the command exit 1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import time
from typing import Any

from s2mlp_cli.runtime import nvidia_driver, resolve_device


def _check(name: str, verdict: str, value: Any, step: str = "") -> dict[str, Any]:
    return {"check": name, "verdict": verdict, "value": value, "next_step": step}


def run(device: str = "auto") -> dict[str, Any]:
    """Every check for `device` ("auto", "cpu" or "cuda"); the document `{"device", "checks", "failed"}`."""
    import torch

    checks = [_check("torch", "ok", torch.__version__)]
    checks += _versions(torch)
    try:
        resolved = resolve_device(device)
    except Exception as e:  # cuda asked for, none here
        checks.append(_check("device", "fail", device, str(e)))
        return _doc(device, checks)
    checks += _devices(torch, resolved)
    checks += _compiler()
    checks += _cpu()
    if resolved == "cuda":
        checks += _nvidia_smi()
    checks += _self_check(torch, resolved)
    return _doc(resolved, checks)


def _doc(device: str, checks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "device": device,
        "checks": checks,
        "failed": [c["check"] for c in checks if c["verdict"] == "fail"],
    }


def _versions(torch: Any) -> list[dict[str, Any]]:
    out = []
    cuda = torch.version.cuda
    out.append(_check("cuda (torch build)", "ok", cuda or "none (a CPU build)"))
    out.append(_check("nvidia driver", "ok", nvidia_driver() or "none"))
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    out.append(_check("cudnn", "ok", cudnn or "none"))
    try:
        nccl = ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else "none"
    except Exception:
        nccl = "none"
    out.append(_check("nccl", "ok", nccl))
    try:
        import triton

        out.append(_check("triton", "ok", triton.__version__))
    except ImportError:
        out.append(_check("triton", "warn", "missing", "torch.compile on the GPU needs Triton"))
    return out


def _devices(torch: Any, device: str) -> list[dict[str, Any]]:
    if device != "cuda":
        tf32 = torch.get_float32_matmul_precision()
        return [
            _check("device", "ok", "cpu"),
            _check("fp32 matmul precision", "ok" if tf32 == "highest" else "warn", tf32,
                   "" if tf32 == "highest" else "s2mlp sets it to 'highest' unless --tf32 is given"),
        ]  # fmt: skip
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        bf16 = torch.cuda.is_bf16_supported()
        value = f"{p.name}, {p.total_memory / 2**30:.1f} GiB, compute {p.major}.{p.minor}, bf16 {bf16}"
        out.append(_check(f"cuda:{i}", "ok", value))
    tf32 = torch.backends.cuda.matmul.allow_tf32
    out.append(_check("tf32 matmuls", "warn" if tf32 else "ok", "on" if tf32 else "off",
                      "TF32 is on: fp32 figures would not be full precision; s2mlp turns it off unless --tf32"
                      if tf32 else ""))  # fmt: skip
    return out


def _compiler() -> list[dict[str, Any]]:
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    header = os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
    out = [
        _check("c compiler", "ok" if cc else "warn", cc or "none", "" if cc else "install gcc for --compile")
    ]
    step = "" if header else "install the Python headers (python3-dev) for --compile"
    out.append(_check("python headers", "ok" if header else "warn", "found" if header else "missing", step))
    return out


def _cpu() -> list[dict[str, Any]]:
    cores = os.cpu_count() or 1
    out = [_check("cpu count", "ok", cores)]
    try:
        load = os.getloadavg()[0]
        busy = load > 0.5 * cores
        step = "other work is running: CPU figures will be low and noisy" if busy else ""
        out.append(_check("load average (1 min)", "warn" if busy else "ok", round(load, 2), step))
    except OSError:
        pass
    steal = _steal_pct()
    if steal is not None:
        step = "the hypervisor is taking CPU time: figures will be noisy" if steal > 2 else ""
        out.append(_check("cpu steal (0.25 s)", "warn" if steal > 2 else "ok", f"{steal:.1f}%", step))
    return out


def _steal_pct() -> float | None:
    def read() -> list[int] | None:
        try:
            with open("/proc/stat") as f:
                return [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None

    a = read()
    time.sleep(0.25)
    b = read()
    if not a or not b or len(a) < 8:
        return None
    total = sum(b[:8]) - sum(a[:8])
    return 100 * (b[7] - a[7]) / total if total > 0 else 0.0


def _nvidia_smi() -> list[dict[str, Any]]:
    query = "name,driver_version,clocks.sm,clocks.max.sm,power.limit,memory.used,memory.total"
    try:
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True,
            timeout=20,
        )  # fmt: skip
        procs = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return [_check("nvidia-smi", "warn", f"unavailable ({e})", "clocks and other processes unknown")]
    out = [_check("gpu (nvidia-smi)", "ok", done.stdout.strip())]
    others = [ln for ln in procs.stdout.strip().splitlines() if ln.strip() and str(os.getpid()) not in ln]
    step = "other processes use the GPU: figures will be shared with them" if others else ""
    out.append(_check("other gpu processes", "warn" if others else "ok", len(others), step))
    return out


def _self_check(torch: Any, device: str) -> list[dict[str, Any]]:
    """A tiny S²-MLPv2 on the device against the CPU, and bench's timing against the wall clock."""
    from s2mlp_cli.arch import build
    from s2mlp_cli.bench.measurement import timed
    from s2mlp_cli.runtime import set_math_mode

    set_math_mode(device, False)
    torch.manual_seed(0)
    arch = {
        "layers": [1, 1, 1, 1],
        "embed_dims": [32, 32, 64, 64],
        "transitions": [False, True, False, False],
    }
    model = build("s2mlpv2", **arch, img_size=56, num_classes=10).eval()
    x = torch.randn(8, 3, 56, 56)
    with torch.no_grad():
        expected = model(x)
        got = model.to(device)(x.to(device)).cpu()
    diff = float((got - expected).abs().max())
    step = "" if diff < 1e-3 else "this device computes other numbers: do not report its figures"
    out = [
        _check("device output = cpu output", "ok" if diff < 1e-3 else "fail", f"max |diff| {diff:.2e}", step)
    ]
    xd = x.to(device)

    def call() -> None:
        with torch.no_grad():
            model(xd)

    timed(call, 3, device)  # warm
    start = time.perf_counter()
    times = timed(call, 20, device)
    wall = time.perf_counter() - start
    ratio = sum(times) / wall if wall > 0 else 0.0
    out.append(_timing_check(ratio))
    return out


def _timing_check(ratio: float) -> dict[str, Any]:
    """The timed calls' share of the wall clock. Over it (beyond rounding) the clock counts time that did
    not pass: fail. Well under it, the host spends time between calls (a tiny model is host-bound: each
    call's launch and sync cost more than its work): the timings stay honest per call, so warn."""
    if ratio > 1.02:
        step = "timed calls and the wall clock disagree: timings would not be honest"
        return _check("timing = wall clock", "fail", f"{ratio:.3f} of the wall clock", step)
    if ratio < 0.8:
        step = "the host spends time between calls (normal for a tiny model); large models time as they run"
        return _check("timing = wall clock", "warn", f"{ratio:.3f} of the wall clock", step)
    return _check("timing = wall clock", "ok", f"{ratio:.3f} of the wall clock", "")
