"""`s2mlp bench` on the terminal and in files: its columns, table, progress lines and conditions."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from s2mlp_cli.report.cells import Column, lat, num, rate, span
from s2mlp_cli.report.tables import table


def bench_note(r: dict[str, Any]) -> str:
    parts = [] if r["status"] == "ok" else [r["status"]]
    if r["detail"]:
        parts.append(r["detail"])
    if r.get("compile_s") is not None:
        bs1 = (r.get("extra") or {}).get("compile_bs1_s")
        parts.append(
            f"compile {r['compile_s']:.1f} s" + (f" (+{bs1:.1f} s for batch 1)" if bs1 is not None else "")
        )
    if r.get("train_throughput") is not None:
        parts.append(f"train {r['train_throughput']:.1f} img/s, {r['train_peak_memory_mib']:.0f} MiB")
    return "; ".join(parts)


def bench_model(r: dict[str, Any]) -> str:
    """The model, and what ran it when not PyTorch eager: `vip_s7 (onnxruntime)`."""
    runtime = r.get("runtime") or "torch"
    return r["model"] if runtime == "torch" else f"{r['model']} ({runtime})"


BENCH_COLUMNS: list[Column] = [
    ("model", bench_model),
    ("params (M)", lambda r: num(r["params_m"], ".2f")),
    ("GMACs", lambda r: num(r["gmacs"], ".2f")),
    ("batch", lambda r: num(r["batch_size"] or r["requested_batch_size"], "d")),
    ("images/s", lambda r: num(r["throughput"], ".1f")),
    ("IQR", lambda r: span(r["throughput_iqr"], ".1f")),
    ("× ref", lambda r: num(r.get("throughput_ratio"), ".2f")),
    ("× ref range", lambda r: span(r.get("throughput_ratio_range"), ".2f")),
    ("ref", lambda r: r.get("reference") or "-"),
    ("ms/batch p50 / p90", lambda r: lat(r["latency_ms"], "p50", "p90")),
    ("ms bs1 p50 / p99", lambda r: lat(r["latency_bs1_ms"], "p50", "p99")),
    ("peak MiB", lambda r: num(r["peak_memory_mib"], ".0f")),
    ("mem × ref", lambda r: num(r.get("memory_ratio"), ".2f")),
    ("paper top-1", lambda r: "-" if r["paper_top1"] is None else f"{r['paper_top1']:.1f}%"),
    ("notes", bench_note),
]
# what the terminal shows, under shorter headers (within 100 columns), and the cells it writes tersely
_BENCH_TERMINAL = {
    "model": "model",
    "params (M)": "params M",
    "GMACs": "GMACs",
    "batch": "batch",
    "images/s": "img/s",
    "IQR": "IQR",
    "× ref": "× ref",
    "ms bs1 p50 / p99": "bs1 ms",
    "peak MiB": "MiB",
    "paper top-1": "top-1",
}
_TERSE_CELLS = {
    "images/s": lambda r: rate(r["throughput"]),
    "IQR": lambda r: "-" if not r["throughput_iqr"] else "–".join(map(rate, r["throughput_iqr"])),
    "ms bs1 p50 / p99": lambda r: "-" if not r["latency_bs1_ms"] else f"{r['latency_bs1_ms']['p50']:.1f}",
}


def bench_tables(doc: dict[str, Any]) -> list[Any]:
    """The bench table (the terminal's columns), a note per row that has one, and the conditions."""
    env, rows = doc["env"], doc["results"]
    columns = [
        (_BENCH_TERMINAL[h], _TERSE_CELLS.get(h, cell)) for h, cell in BENCH_COLUMNS if h in _BENCH_TERMINAL
    ]
    styles = [{"ok": "", "oom": "yellow", "unsupported": "dim", "error": "red"}[r["status"]] for r in rows]
    title = f"s2mlp bench on {env['device_name']} ({env['device']})" + (
        " (partial: interrupted)" if doc.get("partial") else ""
    )
    parts: list[Any] = [table(title, columns, rows, styles)]
    for r in rows:
        if note := bench_note(r):
            parts.append(Text(f"{r['model']} (batch {r['requested_batch_size']}): {note}"))
    parts.append(Text(bench_conditions(doc)))
    return parts


def bench_progress(r: dict[str, Any]) -> str:
    if r["status"] != "ok":
        return f"{bench_model(r)} at batch {r['requested_batch_size']}: {r['status']}: {r['detail']}"
    return f"{bench_model(r)}: {r['throughput']:.1f} images/s at batch {r['batch_size']}"


def bench_conditions(doc: dict[str, Any]) -> str:
    """The lines under the bench table: versions, math mode, timing, what the ratios and memory mean."""
    env, rows = doc["env"], doc["results"]
    keys = (
        "torch",
        "timm",
        "cuda",
        "driver",
        "cpu_threads",
        "dtype",
        "math_mode",
        "warmup",
        "iters",
        "rounds",
    )
    parts = [f"{k} {env[k]}" for k in keys if env.get(k) is not None]
    parts.append(f"channels_last {env.get('channels_last')}, compile {env.get('compile')}")
    if env.get("dtype", "float32") != "float32":
        parts.append("autocast casts the weights on every call, batch-1 latency included")
    parts.append("× ref: images/s over the S²-MLPv2 variant of the model's size class (`ref` in --json)")
    if env["device"] == "cuda":
        parts.append("memory: torch.cuda.max_memory_allocated")
    else:
        base = [
            r["extra"].get("baseline_rss_mib") for r in rows if r.get("extra", {}).get("baseline_rss_mib")
        ]
        parts.append(
            "memory: peak RSS of each worker process"
            + (f", of which ~{min(base):.0f} MiB is Python, torch and timm before the model" if base else "")
        )
    if "load_before" in env:
        parts.append(
            f"load average {env['load_before']} before, {env['load_after']} after; "
            f"CPU steal {env.get('cpu_steal_pct', '-')}%"
        )
    return "; ".join(parts)
