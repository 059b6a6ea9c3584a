"""`run(EvalOptions(...))`: everything `s2mlp eval` does, returning the result document `{"env",
"results"}`; the command only parses, calls and prints."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from s2mlp_cli import report
from s2mlp_cli.console import info, warn
from s2mlp_cli.errors import ProblemsError, S2MLPError
from s2mlp_cli.evaluate.feed import Options
from s2mlp_cli.evaluate.loop import Entry, evaluate
from s2mlp_cli.evaluate.request import EvalOptions, cards_of, check, preprocess
from s2mlp_cli.evaluate.shard import Shard

CHANCE_TOP1 = 0.1  # percent, 1000 classes


def run(opts: EvalOptions) -> dict[str, Any]:
    """Evaluate every variant; the document `{"env", "results"}`. Raises ProblemsError first if
    `check` finds anything, S2MLPError for what only shows later (unreadable data, weights that fail)."""
    if problems := check(opts):
        raise ProblemsError(problems)
    import torch

    from s2mlp_cli import api, arch
    from s2mlp_cli.data import find_dataset
    from s2mlp_cli.runtime import device_for, dtype_label, environment, set_math_mode

    device = device_for(opts.device, opts.amp)
    if opts.decode == "gpu" and device != "cuda":
        raise S2MLPError("GPU decoding needs a CUDA device, and none is available here", param="decode")
    set_math_mode(device, opts.tf32)
    shard = Shard.from_env(device)  # torchrun: one process per GPU (or CPU share), each a slice of the set
    if shard.world > 1 and device == "cuda":
        torch.cuda.set_device(shard.local_rank)

    dataset = find_dataset(opts.data, opts.labels, opts.devkit)
    if opts.limit:
        dataset.samples = dataset.samples[: opts.limit]
    if shard.world > 1:  # before any work: every process must see the same images and labels
        from s2mlp_cli.data.samples import fingerprint

        shard.agree("data", fingerprint(dataset.samples))
    info(f"data: {dataset.root}")
    info(f"layout: {dataset.layout}")
    for note in dataset.notes:
        info(f"  {note}")
    shape = dataset.shape()
    info(f"set: {shape}" + (f" (limit {opts.limit})" if opts.limit else ""))

    entries = []
    for card in cards_of(opts.variants, []):
        prep = preprocess(card, opts)
        model = arch.create(card, img_size=prep.input_size)
        pulled = api.load_pretrained(model, card, opts.weights, progress=opts.progress)
        model = model.eval().to(device)
        if opts.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if opts.compile:
            model = torch.compile(model)
        top1 = card.paper.get("top1")
        entries.append(Entry(card.name, model, prep, pulled.source, top1, pulled.origin, pulled.sha256))

    batch_size = opts.batch_size or (256 if device == "cuda" else 32)
    cores = max(1, (os.cpu_count() or 1) // shard.world)
    workers = min(16, cores) if opts.workers is None else min(opts.workers, cores)  # no 1000 processes
    loop = Options(
        device,
        batch_size,
        workers,
        opts.amp,
        opts.channels_last,
        bool(opts.save_predictions),
        cache=opts.cache,
        decode=opts.decode,
        shard=shard,
        compiled=opts.compile,
    )
    results, predictions = evaluate(dataset, entries, loop, progress=opts.progress and shard.rank == 0)
    if results and results[0]["images"] == 0:
        raise S2MLPError(f"none of the {len(dataset.samples)} images could be read (see the warnings)")
    for r in results:
        if (message := chance_warning(r["top1"], r["images"])) is not None:
            warn(f"{r['model']}: {message}")
        r.update(layout=dataset.layout, set=shape, data=dataset.root, device=device)
        r.update(batch_size=batch_size, dtype=dtype_label(opts.amp))

    env = environment(device, opts.amp, opts.tf32)
    env.update(workers=workers, batch_size=batch_size, channels_last=opts.channels_last, compile=opts.compile)
    notes = list(dict.fromkeys(r.pop("cache") for r in results))  # one per pass: read, built or off
    env.update(processes=shard.world, decode=opts.decode, cache="; ".join(notes))
    doc = report.document(env, results)
    if shard.rank == 0:  # under torchrun, one process writes (every process returns the same document)
        _write(opts, doc, predictions)
    return doc


def _write(opts: EvalOptions, doc: dict[str, Any], predictions: dict[str, list[dict]]) -> None:
    """The files asked for. One that cannot be written (disk full, permissions changed) does not lose
    the results: the document still comes back, with the failure, for the caller to print."""
    failures = []
    if opts.save_predictions:
        try:
            write_predictions(opts.save_predictions, predictions)
        except OSError as e:
            failures.append(f"could not write {opts.save_predictions}: {e.strerror or e}")
    if opts.output:
        try:
            report.write(str(opts.output), doc, report.EVAL_COLUMNS, "s2mlp eval")
        except OSError as e:
            failures.append(f"could not write {opts.output}: {e.strerror or e}")
    if failures:
        doc["write_errors"] = failures


def write_predictions(path: str | Path, predictions: dict[str, list[dict]]) -> None:
    rows = [{"model": name, **p} for name, preds in predictions.items() for p in preds]
    if str(path).endswith(".jsonl"):
        text = "".join(json.dumps(r) + "\n" for r in rows)
    else:
        text = report.to_csv({"results": rows})
    report.write_text_atomic(path, text)


def chance_warning(top1: float, images: int) -> str | None:
    """A top-1 near 0.1% over many images is the signature of a label-mapping error, not a bad model."""
    if images >= 1000 and top1 < 10 * CHANCE_TOP1:
        return (
            f"top-1 {top1:.2f}% over {images:,} images is near chance (0.1%): the usual cause is a label "
            "mapping error (devkit IDs used as indices, or a flat folder read as class folders); check the "
            "layout line and the labels"
        )
    return None
