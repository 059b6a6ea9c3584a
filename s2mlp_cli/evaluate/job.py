"""`run(EvalOptions(...))`: everything `s2mlp eval` does, returning the result document `{"env",
"results"}`; the command only parses, calls and prints."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from s2mlp_cli import distributed, report
from s2mlp_cli.console import info, warn
from s2mlp_cli.data.samples import PER_CLASS
from s2mlp_cli.errors import PartialResult, ProblemsError, S2MLPError, Terminated
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
    from s2mlp_cli.runtime import device_for, set_math_mode, threads_kept

    device = device_for(opts.device, opts.amp)
    if opts.decode == "gpu" and device != "cuda":
        raise S2MLPError("GPU decoding needs a CUDA device, and none is available here", param="decode")
    set_math_mode(device, opts.tf32)
    shard = distributed.start(device)  # torchrun: one process per GPU (or CPU share), each a slice
    try:
        with threads_kept():  # the run sets its own (runtime.cpu_threads)
            return _run(opts, device, shard)
    finally:
        distributed.teardown()


def _run(opts: EvalOptions, device: str, shard: distributed.Shard) -> dict[str, Any]:
    from s2mlp_cli.runtime import use_cpu_threads

    weights = _resolve(opts)
    own = _own_classes(weights)
    sets = _find_sets(opts, own)
    if shard.world > 1:  # before any work: every process must see the same images and labels
        from s2mlp_cli.data.samples import fingerprint

        shard.agree("data", fingerprint([s for _, parts in sets for part in parts for s in part.samples]))
    _say_sets(sets, opts)
    entries = _entries(opts, device, weights, own)
    loop = _loop(opts, device, shard)
    threads = use_cpu_threads(device, loop.workers, shard.world, opts.threads)
    saved = {}
    if opts.compare_with:
        labels = {label: {s.key: s.label for part in parts for s in part.samples} for label, parts in sets}
        saved = sets_.read_saved(opts.compare_with, labels)
    done = _Done()
    try:
        for label, parts in sets:
            for part in parts:
                _one_set(part, label, entries, loop, saved, done, opts)
    except (KeyboardInterrupt, Terminated) as e:  # what finished is kept: printed and written
        finished = getattr(e, "finished", None)
        if finished is not None and done.part is not None:
            done.add(done.part, done.name, *finished, saved, opts)
        if not done.results:
            raise
        doc = _document(opts, device, shard, loop, done, threads)
        doc["partial"] = True
        models = sorted({r["model"] for r in done.results})
        written = str(opts.output) if opts.output and not doc.get("write_errors") else ""
        raise PartialResult(doc, getattr(e, "signum", 2), f"{len(done.results)} row(s) of "
                            f"{', '.join(models)}", written) from None  # fmt: skip
    if all(r["images"] == 0 for r in done.results):
        raise S2MLPError("none of the images could be read (see the warnings)")
    chance = 100 / len(own) if own else CHANCE_TOP1
    for r in done.results:
        if r.get("set") == sets[0][0] and (message := chance_warning(r["top1"], r["images"], chance)):
            warn(f"{r['model']}: {message}")
    return _document(opts, device, shard, loop, done, threads)


class _Done:
    """The rows, predictions and comparisons of the passes finished so far."""

    def __init__(self) -> None:
        self.results: list[dict] = []
        self.predictions: dict[str, list[dict]] = {}
        self.comparisons: list[dict] = []
        self.part: Any = None
        self.name = ""

    def add(
        self, part: Any, name: str, rows: list, preds: dict, ranked: dict, saved: dict, opts: Any
    ) -> None:
        hits = {m: sets_.hits(part, r) for m, r in ranked.items()}  # per model: top-1, top-5 right
        real = {m: sets_.real_hits(part, r) for m, r in ranked.items()} if part.real is not None else {}
        self.results += _score(part, name, rows, hits, real)
        for model, p in preds.items():
            self.predictions.setdefault(model, []).extend({**r, "set": name} for r in _named(part, p))
        if part.part is None and ranked:
            idx = next(iter(ranked.values()))[0]
            keys = [part.samples[i].key for i in idx]
            correct = {m: h[0] for m, h in hits.items()}
            self.comparisons += sets_.compare(name, keys, correct, saved.get(name, {}))
            if real:
                kept = [keys[k] for k in next(iter(real.values()))[0]]
                real_correct = {m: r[1] for m, r in real.items()}
                self.comparisons += sets_.compare("real", kept, real_correct, saved.get("real", {}))


def _one_set(
    part: Any, label: str, entries: list, loop: Options, saved: dict, done: _Done, opts: Any
) -> None:
    done.part, done.name = part, label if part.part is None else f"{label}/{part.part[0]}/{part.part[1]}"
    rows, preds, ranked = evaluate(part, entries, loop, progress=opts.progress)
    done.add(part, done.name, rows, preds, ranked, saved, opts)
    done.part = None


def _say_sets(sets: list[tuple[str, list]], opts: EvalOptions) -> None:
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
        if (message := _training_split(first)) is not None:
            warn(message)


TRAIN_PER_CLASS = 200  # ImageNet's val split has 50 images per class, its train split ~1,300


def _training_split(ds: Any) -> str | None:
    """A set that looks like a training split: named train, or far more images per class than a val
    split has. Its numbers would say how well the model remembers, not how well it generalises."""
    root = Path(ds.root)
    per_class = len(ds.samples) / max(1, len({s.label for s in ds.samples}))
    if root.name.lower() in ("train", "training") or (ds.name == "val" and per_class > TRAIN_PER_CLASS):
        why = f"it is named {root.name}" if root.name.lower() in ("train", "training") else (
            f"it has {per_class:,.0f} images per class; a val split has {PER_CLASS}"
        )  # fmt: skip
        return f"{root} looks like a training split ({why}): its top-1 is not a validation score"
    return None


def _resolve(opts: EvalOptions) -> list[tuple[Any, Any]]:
    """Each variant's card with its verified weights file (the file given, pulled, or the card's)."""
    from s2mlp_cli import sources

    return [
        (c, sources.resolve(c, opts.weights, progress=opts.progress)) for c in cards_of(opts.variants, [])
    ]


def _own_classes(weights: list[tuple[Any, Any]]) -> list[str] | None:
    """The classes the weights were trained on when they are a run's own (their metadata names them);
    models evaluated together must share them."""
    from s2mlp_cli.classes import of_file

    found = {card.name: of_file(pulled.path) for card, pulled in weights}
    own = [c for c in found.values() if c is not None]
    if own and (len(own) < len(found) or any(c != own[0] for c in own)):
        raise S2MLPError(
            "models trained on different classes cannot be scored on one set: evaluate them one at a time",
            param="variants",
        )
    return own[0] if own else None


def _entries(opts: EvalOptions, device: str, weights: list, own: list[str] | None) -> list[Entry]:
    import torch

    from s2mlp_cli import api
    from s2mlp_cli.runtime import compiled

    entries = []
    for card, pulled in weights:
        prep = preprocess(card, opts)
        model = api.build_for(card, pulled, own, prep.input_size).eval().to(device)
        if opts.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if opts.compile:
            model = compiled(model)
        top1 = None if own else card.paper.get("top1")  # the paper's number is for ImageNet-1k's classes
        entries.append(Entry(card.name, model, prep, pulled.source, top1, pulled.origin, pulled.sha256))
    return entries


def _loop(opts: EvalOptions, device: str, shard: distributed.Shard) -> Options:
    from s2mlp_cli.runtime import default_batch

    cores = max(1, (os.cpu_count() or 1) // shard.world)
    workers = min(16, cores) if opts.workers is None else min(opts.workers, cores)  # no 1000 processes
    return Options(
        **opts.run_settings(device=device),
        batch_size=opts.batch_size or default_batch(device),
        workers=workers,
        save_predictions=bool(opts.save_predictions),
        cache=opts.cache,
        decode=opts.decode,
        shard=shard,
    )


def _document(
    opts: EvalOptions, device: str, shard: distributed.Shard, loop: Options, done: _Done, threads: str
) -> dict:
    import torch

    from s2mlp_cli.runtime import dtype_label, environment

    for r in done.results:
        r.update(device=device, batch_size=loop.batch_size, dtype=dtype_label(opts.amp))
    env = environment(device, opts.amp, opts.tf32)
    env.update(workers=loop.workers, batch_size=loop.batch_size, channels_last=opts.channels_last)
    env.update(compile=opts.compile, threads=torch.get_num_threads(), thread_rule=threads)
    notes = list(dict.fromkeys(r.pop("cache") for r in done.results if "cache" in r))  # one per pass
    env.update(processes=shard.world, decode=opts.decode, cache="; ".join(notes))
    extra: dict[str, Any] = {"comparisons": done.comparisons}
    if any(r.get("corruption") for r in done.results):
        extra["corruption"] = sets_.corruption_summary(done.results)
    doc = report.document(env, done.results, **extra)
    if shard.rank == 0:  # under torchrun, one process writes (every process returns the same document)
        _write(opts, doc, done.predictions)
    return doc


def _named(part: Any, preds: list[dict]) -> list[dict]:
    """Predictions of a set of the run's own classes also carry the classes' names."""
    if part.classes is None:
        return preds
    names = part.classes
    return [{**p, "top5_names": [names[k] for k in p.get("top5", [])]} for p in preds]


def _find_sets(opts: EvalOptions, own: list[str] | None = None) -> list[tuple[str, list]]:
    """Each set asked for, as (its name in the results, its datasets: ImageNet-C has one per part)."""
    from s2mlp_cli.data.testsets import find_sets

    sets: list[tuple[str, list]] = []
    for name, root in data_specs(opts.data):
        parts = find_sets(root, name, opts.labels, opts.devkit, opts.real_labels, classes=own)
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


def _score(part: Any, name: str, rows: list[dict], hits: dict, real: dict) -> list[dict]:
    """The pass's rows named by set, with intervals; the val pass also scored with ReaL labels."""
    from s2mlp_cli.data.testsets import SETS

    out = []
    for r in rows:
        r.update(set=name, set_name=SETS[part.name], set_shape=part.shape(), layout=part.layout)
        r.update(data=part.root)
        if part.part is not None:
            r.update(corruption=part.part[0], severity=part.part[1])
        if part.name != "val":  # papers' numbers are for ImageNet-1k's val set
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


def chance_warning(top1: float, images: int, chance: float = CHANCE_TOP1) -> str | None:
    """A top-1 near chance (0.1% for ImageNet-1k) over many images is the signature of a label-mapping
    error, not a bad model."""
    if images >= 1000 and top1 < min(10 * chance, 50):
        return (
            f"top-1 {top1:.2f}% over {images:,} images is near chance ({chance:.3g}%): the usual cause is "
            "a label mapping error (devkit IDs used as indices, or a flat folder read as class folders); "
            "check the layout line and the labels"
        )
    return None
