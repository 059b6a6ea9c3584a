"""`s2mlp bench`: throughput, latency, memory, params and GMACs of S²-MLPv2 and its peers, side by side."""

from __future__ import annotations

import click

from s2mlp_cli import families
from s2mlp_cli.cli._errors import to_click
from s2mlp_cli.cli._options import run_options, show, split
from s2mlp_cli.console import err, info
from s2mlp_cli.errors import ProblemsError


def _sizes(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    if any(not v.strip() for v in value.split(",")):
        raise click.BadParameter(f"an empty entry in {value!r}; expected integers like 8 or 1,8,32")
    try:
        sizes = [int(v) for v in split(value)]
    except ValueError:
        raise click.BadParameter(f"expected integers like 8 or 1,8,32, got {value!r}") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"batch sizes must be positive, got {value!r}")
    return sizes


@click.command("bench")
@click.option("--variant", default="small", show_default=True, help="S²-MLPv2 variants, comma-separated.")
@click.option("--compare", help=f"Peers: families ({', '.join(families.groups())}) or variant names.")
@click.option(
    "--batch-size",
    "batch_sizes",
    callback=_sizes,
    help="One size or a sweep (1,8,32). Default: 256 GPU, 8 CPU.",
)
@click.option("--img-size", type=click.IntRange(16, 2048), help="Input size (default: each card's).")
@click.option("--warmup", type=click.IntRange(0), help="Untimed calls first. Default: 10 on GPU, 2 on CPU.")
@click.option("--iters", type=click.IntRange(2), help="Timed calls per model. Default: 50 on GPU, 6 on CPU.")
@click.option(
    "--rounds", type=click.IntRange(1), help="Interleaved rounds the calls are split into (5 GPU, 3 CPU)."
)
@click.option("--train", is_flag=True, help="Also training throughput (forward, loss, backward, SGD step).")
@click.option("--auto-batch", is_flag=True, help="On out-of-memory, halve the batch until it fits.")
@click.option("--weights", help="Load this file (one model only).")
@click.option("--timeout", type=float, help="Seconds a worker may stay silent (1 to 604800).")
@click.option("--threads", type=click.IntRange(1, 1024), help="CPU threads per worker (default: torch's).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Draw throughput vs top-1 and params (.png).")
@click.option(
    "--runtime",
    "runtimes",
    help="What runs the models, comma-separated, each measured beside the others: torch (default), "
    "compiled (torch.compile), onnxruntime (CPU; pip install 's2mlp[onnx]').",
)
@run_options("results")
@click.pass_context
def bench_command(
    ctx: click.Context, variant: str, compare: str | None, compile_: bool, as_json: bool, **options
) -> None:
    """Benchmark S²-MLPv2 against its peers, each model in its own process, timed rounds interleaved.

    Reports params (M), GMACs (multiply-accumulates of one image, FFTs included for GFNet), throughput
    (images/s, median with interquartile range), latency at batch 1 (p50/p99, and per batch in --json),
    and peak memory (GPU: max_memory_allocated; CPU: peak RSS of the worker). Each peer's throughput is
    also given as a ratio to the S²-MLPv2 variant of its size class, with its range across rounds. The
    environment (device, versions, dtype, math mode, load before and after) is printed under the table,
    with a warning when the machine was busy or the spread is wide. Ctrl-C keeps the finished rows.
    --runtime torch,compiled,onnxruntime measures each model three ways in the same interleaved rounds
    (onnxruntime: the model exported to ONNX and checked against PyTorch in its worker).

    \b
    Examples:
      s2mlp bench --variant small --compare vip,gfnet
      s2mlp bench --variant small,medium --compare vip,gfnet,mixer --device cuda --amp bf16 --channels-last
      s2mlp bench --variant medium --batch-size 1,32,256 --auto-batch --output bench.md
      s2mlp bench --variant small --compare vip --device cpu --batch-size 1,8 --runtime torch,onnxruntime
    """
    from s2mlp_cli.bench import BenchOptions, check

    runtimes = split(options.pop("runtimes"))
    opts = BenchOptions(
        variants=split(variant), compare=split(compare), compile=compile_, runtimes=runtimes, **options
    )
    if problems := check(opts):  # before torch is imported: every problem at once
        raise to_click(ProblemsError(problems), "bench")

    from s2mlp_cli import report
    from s2mlp_cli.bench import BenchInterrupted, make_plan, run

    plan = make_plan(opts)
    info(plan.describe())
    done = []

    def on_row(row: dict) -> None:
        done.append(row)
        total = len(plan.models) * len(plan.batch_sizes) * len(plan.variants)
        info(f"[{len(done)}/{total}] {report.bench_progress(row)}")

    try:
        with err.status("measuring (Ctrl-C keeps the rows finished so far)"):
            doc = run(opts, plan, on_row, on_progress=info)
    except BenchInterrupted as e:
        show(e.doc, as_json, report.bench_tables)
        info(
            f"interrupted: {len(e.doc['results'])} row(s) kept"
            + (f", written to {opts.output}" if opts.output else "")
        )
        ctx.exit(128 + e.signum)  # 130 for Ctrl-C, 143 for SIGTERM
    show(doc, as_json, report.bench_tables)
    _outcome(doc, opts.plot)


def _outcome(doc: dict, plot: str | None) -> None:
    """The plot's path when it was drawn; exit 1 when nothing was measured, a row failed or a file could
    not be written."""
    if plot and not any(str(plot) in e for e in doc.get("write_errors", [])):
        info(f"plot: {plot}")
    rows = doc["results"]
    if not any(r["status"] == "ok" for r in rows):
        raise click.ClickException("nothing could be measured (see the rows' notes)")
    if failed := [r["model"] for r in rows if r["status"] == "error"]:
        raise click.ClickException(f"{len(failed)} benchmark(s) failed: {', '.join(failed)} (see the table)")
    if doc.get("write_errors"):
        raise click.ClickException("; ".join(doc["write_errors"]))
