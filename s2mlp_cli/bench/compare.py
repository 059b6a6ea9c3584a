"""Comparisons and trust: each row against the S²-MLPv2 variant of its size class (throughput and
memory ratios, with the throughput ratio's range across interleaved rounds), the machine's state before
and after, and warnings when the numbers deserve less trust."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from s2mlp_cli import families
from s2mlp_cli.bench.measurement import Row
from s2mlp_cli.zoo import Card, get_card

BUSY_LOAD = 0.5  # load average per core before the run above which the machine counts as busy
WIDE_SPREAD = 0.2  # IQR width, or ratio range, over the median above which a row gets a warning


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


def add_ratios(rows: list[Row], benched: Sequence[Card]) -> None:
    """Throughput and memory relative to the reference of each row's size class at the same batch size;
    the throughput ratio's range over the interleaved rounds says how steady it was."""
    for r in rows:
        name = reference_for(r.model, benched)
        ref = next(
            (
                x
                for x in rows
                if x.model == name
                and x.status == "ok"
                and x.batch_size == r.batch_size
                and x.runtime == r.runtime
            ),
            None,
        )
        ok = ref is not None and r.status == "ok" and bool(r.throughput)
        r.reference = name if ok else None
        r.throughput_ratio = round(r.throughput / ref.throughput, 3) if ok else None
        mem = ok and r.peak_memory_mib and ref.peak_memory_mib
        r.memory_ratio = round(r.peak_memory_mib / ref.peak_memory_mib, 3) if mem else None
        mine, theirs = r.round_throughputs or [], (ref.round_throughputs if ref else None) or []
        per_round = [a / b for a, b in zip(mine, theirs, strict=False) if b]
        r.throughput_ratio_range = (
            [round(min(per_round), 3), round(max(per_round), 3)] if ok and per_round else None
        )


def machine_state() -> dict[str, Any]:
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


def record_machine(env: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> None:
    """Load average before and after, and the share of CPU time the hypervisor took (steal) meanwhile."""
    if "load" in before:
        env["load_before"], env["load_after"] = before["load"], after.get("load")
    if "cpu_total" in before and "cpu_total" in after and after["cpu_total"] > before["cpu_total"]:
        steal = after["cpu_steal"] - before["cpu_steal"]
        env["cpu_steal_pct"] = round(100 * steal / (after["cpu_total"] - before["cpu_total"]), 2)
    env["cpu_count"] = os.cpu_count()


def warnings(env: dict[str, Any], rows: list[Row]) -> list[str]:
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
        if r.status != "ok" or not r.throughput:
            continue
        lo, hi = r.throughput_iqr
        spread = (hi - lo) / r.throughput
        ratio, rng = r.throughput_ratio, r.throughput_ratio_range
        ratio_spread = (rng[1] - rng[0]) / ratio if ratio and rng else 0.0
        if max(spread, ratio_spread) > WIDE_SPREAD:
            out.append(
                f"{r.model} at batch {r.batch_size}: wide spread (IQR {span(lo, hi, 1)} images/s"
                + (
                    f", × ref {span(rng[0], rng[1], 2)} across rounds"
                    if rng and r.reference != r.model
                    else ""
                )
                + "); more iterations or an idle machine would narrow it"
            )
    return out


def span(lo: float, hi: float, digits: int) -> str:
    """`lo–hi` with as many decimals as it takes for the two to read differently (0.26–0.35, not
    0.3–0.3), and at least `digits`."""
    for d in range(digits, 7):
        a, b = f"{lo:.{d}f}", f"{hi:.{d}f}"
        if a != b or lo == hi:
            return f"{a}–{b}"
    return f"{lo:.3g}–{hi:.3g}"
