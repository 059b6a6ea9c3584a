"""A measurement's numbers from its timed calls: throughput with its spread, latencies, percentiles."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def summarize(r: Any, rounds: list[list[float]], bs1: list[float] | None = None) -> None:
    """Throughput, spread and latencies from the seconds of each round's calls (and of batch-1 calls)."""
    batch = r.batch_size
    times = [t for round_ in rounds for t in round_]
    ms = [t * 1000 for t in times]
    r.throughput = round(batch / statistics.median(times), 2)
    r.throughput_iqr = [round(batch / percentile(times, 0.75), 2), round(batch / percentile(times, 0.25), 2)]
    r.round_throughputs = [round(batch / statistics.median(t), 2) for t in rounds if t]
    r.latency_ms = {
        "p50": round(statistics.median(ms), 3),
        "p90": round(percentile(ms, 0.9), 3),
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
        r.latency_bs1_ms = {
            "p50": round(statistics.median(ms1), 3),
            "p99": round(percentile(ms1, 0.99), 3),
            "mean": round(statistics.fmean(ms1), 3),
            "n": len(ms1),
            "measured_in_batch": batch,
        }


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
