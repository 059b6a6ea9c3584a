"""`s2mlp eval`: ImageNet-1k top-1 / top-5 with each model's published preprocessing."""

from __future__ import annotations

import json
import os
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from s2mlp_cli.cli._options import check_amp, json_option, resolve_card
from s2mlp_cli.console import info, out, print_json, warn


def _triple(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[float, float, float] | None:
    if value is None:
        return None
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise click.BadParameter(f"expected three comma-separated numbers, got {value!r}")
    return parts  # type: ignore[return-value]


def _columns() -> list[tuple[str, Any]]:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}%"

    return [
        ("model", lambda r: r["model"]),
        ("top-1", lambda r: pct(r["top1"])),
        ("top-5", lambda r: pct(r["top5"])),
        ("loss", lambda r: "-" if r["loss"] is None else f"{r['loss']:.4f}"),
        ("images", lambda r: f"{r['images']:,}"),
        ("skipped", lambda r: str(r["skipped"])),
        ("images/s", lambda r: "-" if r["images_per_s"] is None else f"{r['images_per_s']:.1f}"),
        ("paper top-1", lambda r: pct(r["paper_top1"])),
        ("Δ", lambda r: "-" if r["delta_top1"] is None else f"{r['delta_top1']:+.2f}"),
    ]


@click.command("eval")
@click.option(
    "--variant", required=True, help="Variants, comma-separated (models with the same crop share a pass)."
)
@click.option(
    "--data", required=True, type=click.Path(path_type=str), help="The validation set (layout detected)."
)
@click.option(
    "--labels", type=click.Path(exists=True, dir_okay=False), help="Labels file: Kaggle CSV, or name,label."
)
@click.option(
    "--devkit", type=click.Path(exists=True, file_okay=False), help="ILSVRC2012_devkit_t12 folder (layout B)."
)
@click.option(
    "--weights", type=click.Path(exists=True, dir_okay=False), help="Weights file (one variant only)."
)
@click.option("--img-size", type=click.IntRange(16, 2048), help="Override the card's input size.")
@click.option("--crop-pct", type=click.FloatRange(0.1, 1.0), help="Override the card's crop fraction.")
@click.option(
    "--interpolation", type=click.Choice(["bicubic", "bilinear", "nearest"]), help="Override the filter."
)
@click.option("--mean", callback=_triple, help="Override normalisation mean, e.g. 0.5,0.5,0.5.")
@click.option("--std", callback=_triple, help="Override normalisation std.")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(1), help="Default: 256 on GPU, 32 on CPU.")
@click.option("--workers", type=click.IntRange(0), help="Decoding processes (default: CPU cores, at most 8).")
@click.option("--amp", type=click.Choice(["none", "bf16", "fp16"]), default="none", show_default=True)
@click.option("--channels-last", is_flag=True)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile each model.")
@click.option("--tf32", is_flag=True, help="Allow TF32 matmuls on the GPU (off by default).")
@click.option("--limit", type=click.IntRange(1), help="Only the first N images, for a quick look.")
@click.option("--output", help="Also write the results (.json, .csv or .md), atomically.")
@click.option("--save-predictions", type=click.Path(dir_okay=False), help="Per-image top-5 (.jsonl or .csv).")
@json_option
def eval_command(
    variant: str,
    data: str,
    labels: str | None,
    devkit: str | None,
    weights: str | None,
    img_size: int | None,
    crop_pct: float | None,
    interpolation: str | None,
    mean: tuple | None,
    std: tuple | None,
    device: str,
    batch_size: int | None,
    workers: int | None,
    amp: str,
    channels_last: bool,
    compile_: bool,
    tf32: bool,
    limit: int | None,
    output: str | None,
    save_predictions: str | None,
    as_json: bool,
) -> None:
    """Evaluate on the ImageNet-1k validation set with each card's exact preprocessing.

    The layout is detected (class folders; flat ILSVRC2012_val_* with the devkit; Kaggle; Hugging Face
    parquet; WebDataset tars; or any folder with --labels) and printed, with whether the set is complete.
    Labels are the sorted-synset indices every pretrained head uses. Weights: --weights FILE, else the
    variant's pulled weights (`s2mlp pull`). Unreadable images are skipped, named and counted.

    \b
    Examples:
      s2mlp eval --variant medium --data /imagenet/val
      s2mlp eval --variant small,vip_s7,gfnet_s --data /data/val_flat --devkit /data/ILSVRC2012_devkit_t12
      s2mlp eval --variant mixer_b16_224 --data /data/imagenet-1k --limit 2000 --json
    """
    from s2mlp_cli import report

    cards = list(
        {c.name: c for c in (resolve_card(v, "--variant") for v in variant.split(",") if v.strip())}.values()
    )
    if not cards:
        raise click.BadParameter("name at least one variant", param_hint="--variant")
    if weights and len(cards) != 1:
        raise click.UsageError("--weights loads one file into one model: evaluate a single variant with it")
    if output:
        try:
            report.output_format(output)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--output") from None
    if save_predictions and not save_predictions.endswith((".jsonl", ".csv")):
        raise click.BadParameter("use a .jsonl or .csv file", param_hint="--save-predictions")

    import torch

    from s2mlp_cli import hub
    from s2mlp_cli.data import find_dataset
    from s2mlp_cli.evaluate import Entry, Options, chance_warning, evaluate
    from s2mlp_cli.models import create_model
    from s2mlp_cli.runtime import dtype_label, environment, resolve_device, set_math_mode
    from s2mlp_cli.weights import load_weights
    from s2mlp_cli.zoo import Preprocess

    device = resolve_device(device)
    check_amp(device, amp)
    set_math_mode(device, tf32)

    dataset = find_dataset(data, labels, devkit)
    if limit:
        dataset.samples = dataset.samples[:limit]
    info(f"data: {dataset.root}")
    info(f"layout: {dataset.layout}")
    for note in dataset.notes:
        info(f"  {note}")
    shape = dataset.shape()
    info(f"set: {shape}" + (f" (--limit {limit})" if limit else ""))

    entries = []
    for card in cards:
        p = card.preprocess
        prep = Preprocess(
            input_size=img_size or p.input_size,
            crop_pct=crop_pct or p.crop_pct,
            interpolation=interpolation or p.interpolation,
            mean=mean or p.mean,
            std=std or p.std,
        )
        overrides = {} if prep.input_size == p.input_size else {"img_size": prep.input_size}
        model = create_model(card.name, **overrides)
        if weights:
            load_weights(model, weights)
            source = weights
        else:
            pulled = hub.pull(card, check_fit=False)  # load_weights below is the strict check
            load_weights(model, pulled.path)
            source = pulled.source
        model = model.eval().to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if compile_:
            model = torch.compile(model)
        entries.append(Entry(card.name, model, prep, source, card.paper.get("top1")))

    opts = Options(
        device=device,
        batch_size=batch_size or (256 if device == "cuda" else 32),
        workers=min(8, os.cpu_count() or 1) if workers is None else workers,
        amp=amp,
        channels_last=channels_last,
        save_predictions=bool(save_predictions),
    )
    results = evaluate(dataset, entries, opts, progress=not as_json)
    if results and results[0]["images"] == 0:
        raise click.ClickException(
            f"none of the {len(dataset.samples)} images could be read (see the warnings)"
        )
    for r in results:
        if (message := chance_warning(r["top1"], r["images"])) is not None:
            warn(f"{r['model']}: {message}")
        r.update(
            layout=dataset.layout,
            set=shape,
            data=dataset.root,
            device=device,
            batch_size=opts.batch_size,
            dtype=dtype_label(amp),
        )

    env = environment(device, amp, tf32)
    env.update(
        workers=opts.workers, batch_size=opts.batch_size, channels_last=channels_last, compile=compile_
    )
    doc = report.document(env, results)
    if save_predictions:
        _write_predictions(save_predictions, entries)
    if output:
        report.write(output, doc, _columns(), "s2mlp eval")
    if as_json:
        print_json(doc)
    else:
        _print(doc)


def _print(doc: dict[str, Any]) -> None:
    table = Table(title="s2mlp eval: ImageNet-1k validation", title_justify="left")
    columns = _columns()
    for header, _ in columns:
        table.add_column(header, justify="left" if header == "model" else "right", no_wrap=True)
    for r in doc["results"]:
        table.add_row(*(Text(cell(r)) for _, cell in columns))
    out.print(table)
    env = doc["env"]
    for r in doc["results"]:
        p = r["preprocess"]
        out.print(
            Text(
                f"{r['model']}: resize {p['resize']} {p['interpolation']}, centre crop {p['input_size']} "
                f"(crop_pct {p['crop_pct']}), mean {tuple(p['mean'])}, std {tuple(p['std'])}; "
                f"weights {r['weights']}"
            )
        )
    out.print(
        Text(
            f"{doc['results'][0]['set']}; {env['device_name']} ({env['device']}), {env['math_mode']}, "
            f"batch {env['batch_size']}, {env['workers']} workers, torch {env['torch']}"
        )
    )


def _write_predictions(path: str, entries: list) -> None:
    from s2mlp_cli.files import write_text_atomic
    from s2mlp_cli.report import to_csv

    rows = [{"model": e.name, **p} for e in entries for p in e.predictions]
    if path.endswith(".jsonl"):
        text = "".join(json.dumps(r) + "\n" for r in rows)
    else:
        text = to_csv({"results": rows})
    write_text_atomic(path, text)
