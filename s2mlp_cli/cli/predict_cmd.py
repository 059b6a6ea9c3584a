"""`s2mlp predict`: the top-k classes of each image, with the card's exact eval preprocessing."""

from __future__ import annotations

import click

from s2mlp_cli.cli._errors import to_click
from s2mlp_cli.cli._options import json_option, show
from s2mlp_cli.errors import ProblemsError
from s2mlp_cli.runtime import AMP, DEVICES


@click.command("predict")
@click.option("--variant", required=True, help="The model (a zoo name or alias).")
@click.option("--weights", help="Weights file; default: the variant's pulled weights.")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--topk", type=click.IntRange(1, 1000), default=5, show_default=True, help="Classes per image.")
@click.option("--batch-size", type=click.IntRange(1), help="Default: 256 on GPU, 32 on CPU.")
@click.option("--workers", type=click.IntRange(0), help="Decoding processes (default: CPU cores, at most 8).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--amp", type=click.Choice(AMP), default="none", show_default=True)
@click.option("--channels-last", is_flag=True, help="Channels-last memory format for model and input.")
@click.option(
    "--threads",
    type=click.IntRange(1, 1024),
    help="CPU intra-op threads (default: the cores less the decoding workers, at least 1).",
)
@click.option("--output", help="Also write the predictions (.json, .jsonl or .csv), atomically.")
@json_option
def predict_command(variant: str, paths: tuple[str, ...], as_json: bool, **options) -> None:
    """What is in these images: each PATH (an image, or a folder searched recursively) through the
    card's eval preprocessing exactly as `s2mlp eval` feeds it, batched; per image the top-k classes with
    names and probabilities. Names are ImageNet-1k's, or those of the classes your weights were trained
    on (`s2mlp train --num-classes`). Unreadable images are listed and skipped.

    \b
    Examples:
      s2mlp predict --variant mixer_b16_224 photos/
      s2mlp predict --variant small --weights runs/small/best.safetensors cat.jpg dog.png --topk 3
      s2mlp predict --variant small --weights runs/c/best.safetensors demo/colours/val --output preds.csv
    """
    from s2mlp_cli.predict import PredictOptions, check

    opts = PredictOptions(variant=variant, paths=list(paths), progress=not as_json, **options)
    if problems := check(opts):  # before torch is imported: every problem at once
        raise to_click(ProblemsError(problems), "predict")
    from s2mlp_cli.predict import run
    from s2mlp_cli.report import predict_tables

    doc = run(opts)
    show(doc, as_json, predict_tables)
    if doc.get("write_errors"):
        raise click.ClickException("; ".join(doc["write_errors"]))
    if not doc["results"]:
        raise click.ClickException("none of the images could be read (see the skipped list)")
