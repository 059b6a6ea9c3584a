"""`s2mlp bench`: throughput, latency, memory, params and GMACs of S²-MLPv2 and its peers, side by side."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table
from rich.text import Text

from s2mlp_cli.cli._options import check_amp, json_option, resolve_card
from s2mlp_cli.console import err, info, out, print_json
from s2mlp_cli.zoo import Card

# --compare family names -> which peers of the benched variants they pick
FAMILY_FILTERS = {
    "vip": lambda c: c.family == "vip",
    "gfnet": lambda c: c.family in ("gfnet", "gfnet_pyramid"),
    "mixer": lambda c: c.name.startswith("mixer"),
    "resmlp": lambda c: c.name.startswith("resmlp"),
    "gmlp": lambda c: c.name.startswith("gmlp"),
    "s2mlp": lambda c: c.family == "s2mlp",
}
DEFAULTS = {
    "cuda": {"batch": [256], "warmup": 10, "iters": 50},
    "cpu": {"batch": [8], "warmup": 2, "iters": 6},
}


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def expand_models(variants: list[str], compare: list[str]) -> list[Card]:
    """The variants, then each --compare entry: a family name picks the variants' peers of that family."""
    from s2mlp_cli.zoo import get_card

    base = [resolve_card(v, "--variant") for v in variants]
    chosen = list(base)
    for token in compare:
        if token.lower() in FAMILY_FILTERS:
            keep = FAMILY_FILTERS[token.lower()]
            peers = [get_card(p) for card in base for p in card.peers]
            found = [p for p in peers if keep(p)]
            if not found:
                names = ", ".join(c.name for c in base)
                raise click.BadParameter(
                    f"no {token} peers listed for {names}; name the variants instead (see `s2mlp list`)",
                    param_hint="--compare",
                )
            chosen += found
        else:
            try:
                chosen.append(resolve_card(token, "--compare"))
            except click.BadParameter as e:
                e.message += f" (or a family: {', '.join(FAMILY_FILTERS)})"
                raise
    return list({c.name: c for c in chosen}.values())


def _batch_sizes(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        sizes = [int(v) for v in _split(value)]
    except ValueError:
        raise click.BadParameter(f"expected integers like 8 or 1,8,32, got {value!r}") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"batch sizes must be positive, got {value!r}")
    return sizes


@click.command("bench")
@click.option(
    "--variant", default="s2mlpv2_small,s2mlpv2_medium", show_default=True, help="Variants, comma-separated."
)
@click.option(
    "--compare", help="Peers to add: families (vip, gfnet, mixer, resmlp, gmlp, s2mlp) or variant names."
)
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True)
@click.option(
    "--batch-size", "batch_size", help="One size or a sweep (1,8,32). Default: 256 on GPU, 8 on CPU."
)
@click.option("--img-size", type=click.IntRange(16, 2048), help="Input size (default: each card's).")
@click.option("--amp", type=click.Choice(["none", "bf16", "fp16"]), default="none", show_default=True)
@click.option("--channels-last", is_flag=True, help="Channels-last memory format for model and input.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile; compile time reported apart.")
@click.option("--tf32", is_flag=True, help="Allow TF32 matmuls on the GPU (off by default, and said so).")
@click.option("--warmup", type=click.IntRange(0), help="Untimed calls first. Default: 10 on GPU, 2 on CPU.")
@click.option("--iters", type=click.IntRange(2), help="Timed calls. Default: 50 on GPU, 6 on CPU.")
@click.option("--train", is_flag=True, help="Also training throughput (forward, loss, backward, SGD step).")
@click.option("--auto-batch", is_flag=True, help="On out-of-memory, halve the batch until it fits.")
@click.option(
    "--weights", type=click.Path(exists=True, dir_okay=False), help="Load this file (one model only)."
)
@click.option("--timeout", type=click.FloatRange(1), help="Seconds allowed per model.")
@click.option("--output", "output", help="Also write the results: .json, .csv or .md.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Draw throughput vs top-1 and params (.png).")
@json_option
def bench_command(
    variant: str,
    compare: str | None,
    device: str,
    batch_size: str | None,
    img_size: int | None,
    amp: str,
    channels_last: bool,
    compile_: bool,
    tf32: bool,
    warmup: int | None,
    iters: int | None,
    train: bool,
    auto_batch: bool,
    weights: str | None,
    timeout: float | None,
    output: str | None,
    plot: str | None,
    as_json: bool,
) -> None:
    """Benchmark S²-MLPv2 against its peers, each model in its own process.

    Reports params (M), GMACs (multiply-accumulates of one image, FFTs included for GFNet), throughput
    (images/s, median with interquartile range), latency per batch (p50/p90) and at batch 1 (p50/p99),
    and peak memory (GPU: max_memory_allocated; CPU: peak RSS of the worker). Throughput and memory are
    also given as a ratio to the first S²-MLPv2 variant. The environment (device, versions, threads,
    dtype, math mode) is printed with the table. TF32 stays off unless --tf32.

    \b
    Examples:
      s2mlp bench --variant small --compare vip --batch-size 8
      s2mlp bench --compare vip,gfnet --device cuda --amp bf16 --channels-last
      s2mlp bench --variant medium --batch-size 1,32,256 --auto-batch --output bench.md
    """
    from s2mlp_cli import report

    variants = _split(variant)
    if not variants:
        raise click.BadParameter("name at least one variant", param_hint="--variant")
    models = expand_models(variants, _split(compare))
    sizes = _batch_sizes(batch_size)
    if output:
        try:
            report.output_format(output)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--output") from None
    if weights and len(models) != 1:
        raise click.UsageError("--weights loads one file into one model: bench a single variant with it")
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise click.ClickException("--plot needs matplotlib: pip install 's2mlp[plot]'") from None

    from s2mlp_cli.bench import Spec, run_isolated
    from s2mlp_cli.runtime import environment, resolve_device

    device = resolve_device(device)
    check_amp(device, amp)
    defaults = DEFAULTS[device]
    sizes = sizes or defaults["batch"]
    warmup = defaults["warmup"] if warmup is None else warmup
    iters = iters or defaults["iters"]
    env = environment(device, amp, tf32)
    env.update(
        warmup=warmup,
        iters=iters,
        channels_last=channels_last,
        compile=compile_,
        isolation="one process per model",
    )

    results: list[dict[str, Any]] = []
    jobs = [(card, b) for card in models for b in sizes]
    for i, (card, b) in enumerate(jobs, 1):
        spec = Spec(
            model=card.name,
            batch_size=b,
            img_size=img_size,
            device=device,
            amp=amp,
            channels_last=channels_last,
            compile=compile_,
            tf32=tf32,
            warmup=warmup,
            iters=iters,
            bs1_iters=max(2 * iters, 10),
            train=train,
            auto_batch=auto_batch,
            weights=weights,
        )
        with err.status(f"[{i}/{len(jobs)}] {card.name} at batch {b} on {device}"):
            row = run_isolated(spec, timeout).to_dict()
        info(f"[{i}/{len(jobs)}] {_progress_line(row)}")
        results.append(row)
    add_ratios(results)
    doc = report.document(env, results)

    if output:
        report.write(output, doc, MARKDOWN_COLUMNS, "s2mlp bench")
    if plot:
        draw_plot(results, plot)
    if as_json:
        print_json(doc)
    else:
        print_table(doc)
    failed = [r["model"] for r in results if r["status"] == "error"]
    if failed:
        raise click.ClickException(f"{len(failed)} benchmark(s) failed: {', '.join(failed)} (see the table)")


def _progress_line(r: dict[str, Any]) -> str:
    if r["status"] != "ok":
        return f"{r['model']}: {r['status']}: {r['detail']}"
    return f"{r['model']}: {r['throughput']:.1f} images/s at batch {r['batch_size']}"


def add_ratios(results: list[dict[str, Any]]) -> None:
    """Throughput and memory relative to the first S²-MLPv2 row at the same batch size that ran."""
    for r in results:
        ref = next(
            (
                x
                for x in results
                if x["family"] == "s2mlpv2" and x["status"] == "ok" and x["batch_size"] == r["batch_size"]
            ),
            None,
        )
        ok = ref is not None and r["status"] == "ok"
        r["reference"] = ref["model"] if ref else None
        r["throughput_ratio"] = round(r["throughput"] / ref["throughput"], 3) if ok else None
        r["memory_ratio"] = round(r["peak_memory_mib"] / ref["peak_memory_mib"], 3) if ok else None


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _lat(d: dict | None, a: str, b: str) -> str:
    return "-" if not d else f"{d[a]:.1f} / {d[b]:.1f}"


def _note(r: dict[str, Any]) -> str:
    parts = [] if r["status"] == "ok" else [r["status"]]
    if r["detail"]:
        parts.append(r["detail"])
    if r.get("compile_s") is not None:
        parts.append(f"compile {r['compile_s']:.1f} s")
    if r.get("train_throughput") is not None:
        parts.append(f"train {r['train_throughput']:.1f} img/s, {r['train_peak_memory_mib']:.0f} MiB")
    return "; ".join(parts)


MARKDOWN_COLUMNS = [
    ("model", lambda r: r["model"]),
    ("params (M)", lambda r: _num(r["params_m"], ".2f")),
    ("GMACs", lambda r: _num(r["gmacs"], ".2f")),
    ("batch", lambda r: _num(r["batch_size"] or r["requested_batch_size"], "d")),
    ("images/s", lambda r: _num(r["throughput"], ".1f")),
    (
        "IQR",
        lambda r: (
            "-" if not r["throughput_iqr"] else f"{r['throughput_iqr'][0]:.1f}–{r['throughput_iqr'][1]:.1f}"
        ),
    ),
    ("× ref", lambda r: _num(r["throughput_ratio"], ".2f")),
    ("ms/batch p50 / p90", lambda r: _lat(r["latency_ms"], "p50", "p90")),
    ("ms bs1 p50 / p99", lambda r: _lat(r["latency_bs1_ms"], "p50", "p99")),
    ("peak MiB", lambda r: _num(r["peak_memory_mib"], ".0f")),
    ("mem × ref", lambda r: _num(r["memory_ratio"], ".2f")),
    ("paper top-1", lambda r: "-" if r["paper_top1"] is None else f"{r['paper_top1']:.1f}%"),
    ("notes", _note),
]


def print_table(doc: dict[str, Any]) -> None:
    env, rows = doc["env"], doc["results"]
    columns = [c for c in MARKDOWN_COLUMNS if c[0] != "notes" or any(_note(r) for r in rows)]
    table = Table(title=f"s2mlp bench on {env['device_name']} ({env['device']})", title_justify="left")
    for header, _ in columns:
        table.add_column(
            header, justify="left" if header in ("model", "notes") else "right", no_wrap=header != "notes"
        )
    for r in rows:
        style = {"ok": "", "oom": "yellow", "unsupported": "dim", "error": "red"}[r["status"]]
        table.add_row(*(Text(cell(r)) for _, cell in columns), style=style)
    out.print(table)
    out.print(Text(conditions(doc)))


def conditions(doc: dict[str, Any]) -> str:
    """One line under the table: versions, math mode, timing settings, what the ratios and memory mean."""
    env, rows = doc["env"], doc["results"]
    ref = next((r["reference"] for r in rows if r.get("reference")), None)
    keys = ("torch", "timm", "cuda", "driver", "cpu_threads", "dtype", "math_mode", "warmup", "iters")
    parts = [f"{k} {env[k]}" for k in keys if env.get(k) is not None]
    parts.append(f"channels_last {env.get('channels_last')}, compile {env.get('compile')}")
    parts.append(f"ratios relative to {ref or '-'}")
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
    return "; ".join(parts)


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
            ax.scatter(r["throughput"], r[key], color="C0" if r["family"] == "s2mlpv2" else "C1")
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
