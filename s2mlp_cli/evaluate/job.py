"""`run(EvalOptions(...))`: everything `s2mlp eval` does, returning the result document `{"env",
"results"}`; the command only parses, calls and prints."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from s2mlp_cli import distributed, report
from s2mlp_cli.console import info, warn
from s2mlp_cli.errors import ProblemsError, S2MLPError
from s2mlp_cli.evaluate import sets as sets_
from s2mlp_cli.evaluate.feed import Options
from s2mlp_cli.evaluate.loop import Entry, evaluate
from s2mlp_cli.evaluate.request import EvalOptions, cards_of, check, data_specs, preprocess

CHANCE_TOP1 = 0.1  # percent, 1000 classes


def run(opts: EvalOptions) -> dict[str, Any]:
    """Evaluate every variant; the document `{"env", "results"}`. Raises ProblemsError first if
    `check` finds anything, S2MLPError for what only shows later (unreadable data, weights that fail)."""
    if problems := check(opts):
        raise ProblemsError(problems)
    from s2mlp_cli.runtime import device_for, set_math_mode

    device = device_for(opts.device, opts.amp)
    if opts.decode == "gpu" and device != "cuda":
        raise S2MLPError("GPU decoding needs a CUDA device, and none is available here", param="decode")
    set_math_mode(device, opts.tf32)
    shard = distributed.start(device)  # torchrun: one process per GPU (or CPU share), each a slice
    try:
        return _run(opts, device, shard)
    finally:
        distributed.teardown()


def _run(opts: EvalOptions, device: str, shard: distributed.Shard) -> dict[str, Any]:
    import torch

    from s2mlp_cli import api, arch
    from s2mlp_cli.runtime import compiled, environment

    sets = _find_sets(opts)
    if shard.world > 1:  # before any work: every process must see the same images and labels
        from s2mlp_cli.data.samples import fingerprint

        shard.agree("data", fingerprint([s for _, parts in sets for part in parts for s in part.samples]))
    for label, parts in sets:
        first = parts[0]
        root = first.root if first.part is None else str(Path(first.root).parents[1])  # ImageNet-C's root
        info(f"data{'' if len(sets) == 1 else f' {label}'}: {root}")
        info(f"layout: {first.layout}" + (f" ({len(parts)} parts)" if len(parts) > 1 else ""))
        for note in dict.fromkeys(n for part in parts for n in part.notes):
            info(f"  {note}")
        shapes = {part.shape() for part in parts}
        info(
            f"set: {shapes.pop() if len(shapes) == 1 else f'{len(parts)} parts'}"
            + (f" (limit {opts.limit})" if opts.limit else "")
        )

    entries = []
    for card in cards_of(opts.variants, []):
        prep = preprocess(card, opts)
        model = arch.create(card, img_size=prep.input_size)
        pulled = api.load_pretrained(model, card, opts.weights, progress=opts.progress)
        model = model.eval().to(device)
        if opts.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if opts.compile:
            model = compiled(model)
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
    saved = {}
    if opts.compare_with:
        labels = {label: {s.key: s.label for part in parts for s in part.samples} for label, parts in sets}
        saved = sets_.read_saved(opts.compare_with, labels)
    results, predictions, comparisons = [], {}, []
    for label, parts in sets:
        for part in parts:
            rows, preds, ranked = evaluate(part, entries, loop, progress=opts.progress)
            name = label if part.part is None else f"{label}/{part.part[0]}/{part.part[1]}"
            hits = {m: sets_.hits(part, r) for m, r in ranked.items()}  # per model: top-1, top-5 right
            real = {m: sets_.real_hits(part, r) for m, r in ranked.items()} if part.real is not None else {}
            results += _score(part, name, rows, hits, real, device, batch_size, opts.amp)
            for model, p in preds.items():
                predictions.setdefault(model, []).extend({**r, "set": name} for r in p)
            if part.part is None:
                idx = next(iter(ranked.values()))[0]
                keys = [part.samples[i].key for i in idx]
                correct = {m: h[0] for m, h in hits.items()}
                comparisons += sets_.compare(name, keys, correct, saved.get(name, {}))
                if real:
                    kept = [keys[k] for k in next(iter(real.values()))[0]]
                    real_correct = {m: r[1] for m, r in real.items()}
                    comparisons += sets_.compare("real", kept, real_correct, saved.get("real", {}))
    if all(r["images"] == 0 for r in results):
        raise S2MLPError("none of the images could be read (see the warnings)")
    for r in results:
        if r.get("set") == sets[0][0] and (message := chance_warning(r["top1"], r["images"])) is not None:
            warn(f"{r['model']}: {message}")

    env = environment(device, opts.amp, opts.tf32)
    env.update(workers=workers, batch_size=batch_size, channels_last=opts.channels_last, compile=opts.compile)
    notes = list(dict.fromkeys(r.pop("cache") for r in results))  # one per pass: read, built or off
    env.update(processes=shard.world, decode=opts.decode, cache="; ".join(notes))
    extra: dict[str, Any] = {"comparisons": comparisons}
    if any(r.get("corruption") for r in results):
        extra["corruption"] = sets_.corruption_summary(results)
    doc = report.document(env, results, **extra)
    if shard.rank == 0:  # under torchrun, one process writes (every process returns the same document)
        _write(opts, doc, predictions)
    return doc


def _find_sets(opts: EvalOptions) -> list[tuple[str, list]]:
    """Each set asked for, as (its name in the results, its datasets: ImageNet-C has one per part)."""
    from s2mlp_cli.data.testsets import find_sets

    sets: list[tuple[str, list]] = []
    for name, root in data_specs(opts.data):
        parts = find_sets(root, name, opts.labels, opts.devkit, opts.real_labels)
        for part in parts:
            if opts.limit:
                part.samples = part.samples[: opts.limit]
                if part.real is not None:
                    part.real = part.real[: opts.limit]
        label = name or parts[0].name
        taken = {s for s, _ in sets}
        label = (
            next(f"{label}-{k}" for k in range(2, 100) if f"{label}-{k}" not in taken)
            if label in taken
            else label
        )
        sets.append((label, parts))
    return sets


def _score(
    part: Any, name: str, rows: list[dict], hits: dict, real: dict, device: str, batch: int, amp: str
) -> list[dict]:
    """The pass's rows named by set, with intervals; the val pass also scored with ReaL labels."""
    from s2mlp_cli.data.testsets import SETS
    from s2mlp_cli.runtime import dtype_label

    out = []
    for r in rows:
        r.update(set=name, set_name=SETS[part.name], set_shape=part.shape(), layout=part.layout)
        r.update(data=part.root, device=device, batch_size=batch, dtype=dtype_label(amp))
        if part.part is not None:
            r.update(corruption=part.part[0], severity=part.part[1])
        if part.name != "val":  # papers' numbers are for the val set
            r.update(paper_top1=None, delta_top1=None)
        if part.valid is not None:
            r["classes"] = len(part.valid)
        top1, top5 = hits[r["model"]]
        sets_.with_intervals(r, top1, top5)
        out.append(r)
        if r["model"] in real:
            out.append(sets_.real_row(r, len(top1), real[r["model"]]))
    return out


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
