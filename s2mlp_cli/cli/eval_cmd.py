"""`s2mlp eval`: ImageNet-1k top-1 / top-5 with each model's published preprocessing."""

from __future__ import annotations

import math

import click

from s2mlp_cli.cli._errors import to_click
from s2mlp_cli.cli._options import run_options, show, split
from s2mlp_cli.errors import PartialResult, ProblemsError
from s2mlp_cli.runtime import DECODE
from s2mlp_cli.zoo import INTERPOLATIONS


def _triple(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise click.BadParameter(f"expected three comma-separated numbers, got {value!r}")
    return parts


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"expected a finite number, got {value}")
    return value


@click.command("eval")
@click.option(
    "--variant", required=True, help="Variants, comma-separated (models with the same crop share a pass)."
)
@click.option(
    "--data",
    required=True,
    multiple=True,
    metavar="[NAME=]PATH",
    help="A test set, its layout detected; repeat for several (NAME: val, v2, a, r, sketch, c, or yours).",
)
@click.option("--real-labels", help="ReaL's real.json: also score the val set as ImageNet-ReaL.")
@click.option("--compare-with", help="An earlier run's --save-predictions .jsonl: paired tests against it.")
@click.option("--labels", help="Labels file: Kaggle CSV, or name,label.")
@click.option("--devkit", help="ILSVRC2012_devkit_t12 folder (layout B).")
@click.option("--weights", help="Weights file (one variant only); default: the variant's pulled weights.")
@click.option("--img-size", type=click.IntRange(16, 2048), help="Override the card's input size.")
@click.option(
    "--crop-pct", type=click.FloatRange(0.1, 1.0), callback=_finite, help="Override the card's crop fraction."
)
@click.option("--interpolation", type=click.Choice(INTERPOLATIONS), help="Override the filter.")
@click.option("--mean", callback=_triple, help="Override normalisation mean, e.g. 0.5,0.5,0.5.")
@click.option("--std", callback=_triple, help="Override normalisation std.")
@click.option("--batch-size", type=click.IntRange(1), help="Default: 256 on GPU, 32 on CPU.")
@click.option(
    "--workers",
    type=click.IntRange(0),
    help="Decoding processes (default: CPU cores per process, at most 16).",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 1024),
    help="CPU intra-op threads (default: the cores per process less the decoding workers, at least 1).",
)
@click.option(
    "--cache/--no-cache",
    default=True,
    show_default=True,
    help="Keep each image's decoded crop for this geometry on disk; later evals of any model read it.",
)
@click.option(
    "--decode",
    type=click.Choice(DECODE),
    default="cpu",
    show_default=True,
    help="gpu: nvJPEG decode and antialiased resize on the GPU (close to, not equal to, the exact cpu path).",
)
@click.option("--limit", type=click.IntRange(1), help="Only the first N images, for a quick look.")
@click.option("--save-predictions", help="Per-image top-5 (.jsonl or .csv).")
@run_options("results")
def eval_command(variant: str, compile_: bool, as_json: bool, **options) -> None:
    """Evaluate on ImageNet-1k val and the other ImageNet test sets with each card's exact preprocessing.

    The layout is detected (class folders; flat ILSVRC2012_val_* with the devkit; Kaggle; Hugging Face
    parquet; WebDataset tars; or any folder with --labels) and printed, with whether the set is complete.
    Labels are the sorted-synset indices every pretrained head uses. Weights: --weights FILE, else what
    `s2mlp pull` fetched or imported for the variant, else the card's source. No S²-MLPv2 weights are
    published: evaluate your own with --weights FILE, or after `s2mlp pull medium --repo ORG/NAME`.
    Every argument, path and weight source is checked before anything is loaded.

    Other sets are detected from their layout, or named NAME=PATH: ImageNet-V2 (folders 0 ... 999),
    ImageNet-A and -R (200 wnid folders; logits restricted to their 200 classes), ImageNet-Sketch,
    ImageNet-C (<corruption>/<severity>/<wnid>/: error per corruption and severity, CE and mCE), and
    ImageNet-ReaL (the val set with --real-labels). Every top-1 and top-5 comes with a 95% Wilson
    interval; models evaluated together are compared pairwise on the same images (McNemar's exact
    test), and differences within noise are marked.

    Decoded crops are cached per geometry (`s2mlp cache list`), so a second eval reads them at memory
    speed with identical results. Under `torchrun --nproc-per-node N -m s2mlp_cli eval ...` each process
    takes every N-th image and the counts are summed: the numbers of one process, faster.

    \b
    Examples:
      s2mlp eval --variant mixer_b16_224 --data /imagenet/val
      s2mlp eval --variant vip_s7,gfnet_s --data /data/val_flat --devkit /data/ILSVRC2012_devkit_t12
      s2mlp eval --variant medium --weights my_run.safetensors --data /imagenet/val --limit 2000 --json
      s2mlp eval --variant vip_s7,gfnet_s --data /imagenet/val --real-labels real.json \
        --data v2=/data/imagenetv2-matched-frequency --data a=/data/imagenet-a --data r=/data/imagenet-r
      torchrun --nproc-per-node 8 -m s2mlp_cli eval --variant mixer_b16_224 --data /imagenet/val
    """
    from s2mlp_cli.evaluate import EvalOptions, check

    opts = EvalOptions(variants=split(variant), compile=compile_, progress=not as_json, **options)
    if problems := check(opts):  # before torch is imported: every problem at once
        raise to_click(ProblemsError(problems), "eval")

    from s2mlp_cli.console import speaking
    from s2mlp_cli.evaluate import run
    from s2mlp_cli.report import eval_tables

    try:
        doc = run(opts)
    except PartialResult as e:  # Ctrl-C or SIGTERM: the models and sets that finished, then the exit
        if speaking():
            show(e.doc, as_json, eval_tables)
        raise
    if not speaking():  # under torchrun, the first process speaks for all
        return
    show(doc, as_json, eval_tables)
    failed = [f"{r['model']}: {r['detail']}" for r in doc["results"] if r.get("status") == "error"]
    if failed or doc.get("write_errors"):
        raise click.ClickException("; ".join(failed + doc.get("write_errors", [])))
