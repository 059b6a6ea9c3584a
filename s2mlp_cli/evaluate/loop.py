"""The metric loop: top-1 / top-5 / loss of several models in as few passes over the data as possible.

Models whose transforms share the geometry (size, crop_pct, filter) share one pass: each image is decoded
and cropped once, and each model normalises the batch with its own mean/std on the device. Counts and
loss accumulate on the device and are read once per pass (no per-batch host sync); under torchrun they
are summed across processes, so every process returns the whole set's numbers. The loop returns its
numbers and predictions; it changes nothing it is given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from s2mlp_cli.console import Bar, warn
from s2mlp_cli.data import Dataset, Normalizer
from s2mlp_cli.errors import S2MLPError, Terminated
from s2mlp_cli.evaluate.feed import Options, source, to_device
from s2mlp_cli.runtime import autocast
from s2mlp_cli.zoo import Preprocess


@dataclass(frozen=True)
class Entry:
    """One model to evaluate, in eval mode on the device, with where its weights came from."""

    name: str
    model: Any  # torch.nn.Module
    prep: Preprocess
    weights: str
    paper_top1: float | None = None
    weights_origin: str = "card"
    weights_sha256: str | None = None


Ranked = tuple[Any, Any]  # (dataset indices, their top-5 classes): numpy arrays in index order


def evaluate(
    dataset: Dataset, entries: list[Entry], opts: Options, progress: bool = True
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]], dict[str, Ranked]]:
    """One result per entry, in the entries' order; when `opts.save_predictions`, each model's per-image
    top-5 with probabilities in dataset order (else empty lists); and each model's top-5 classes per image
    read (for paired tests and ReaL). With `dataset.valid`, logits outside those classes are masked."""
    groups: dict[tuple, list[Entry]] = {}
    for e in entries:
        groups.setdefault(e.prep.geometry, []).append(e)
    results: dict[str, dict[str, Any]] = {}
    predictions: dict[str, list[dict[str, Any]]] = {}
    ranked: dict[str, Ranked] = {}
    try:
        for i, group in enumerate(groups.values(), 1):
            label = f"pass {i}/{len(groups)}: " + ", ".join(e.name for e in group)
            rows, preds, ranks = _one_pass(dataset, group, opts, label, progress)
            for e, r, p, k in zip(group, rows, preds, ranks, strict=True):
                results[e.name], predictions[e.name], ranked[e.name] = r, p, k
    except (KeyboardInterrupt, Terminated) as stop:  # the passes that finished go with the signal
        done = [e.name for e in entries if e.name in results]
        stop.finished = (
            [results[n] for n in done],
            {n: predictions[n] for n in done},
            {n: ranked[n] for n in done},
        )
        raise
    names = [e.name for e in entries]
    return [results[n] for n in names], {n: predictions[n] for n in names}, {n: ranked[n] for n in names}


def _one_pass(
    dataset: Dataset, group: list[Entry], opts: Options, label: str, progress: bool
) -> tuple[list[dict], list[list[dict]]]:
    """Every model of `group` over this process's share of the images, in one pass."""
    import torch

    device = (
        torch.device("cuda", torch.cuda.current_device()) if opts.device == "cuda" else torch.device("cpu")
    )
    indices = opts.shard.indices(len(dataset.samples))
    feed = source(dataset, group[0].prep, indices, opts)
    # per model: correct top-1, correct top-5, loss sum, images with non-finite logits
    totals = torch.zeros(len(group), 4, dtype=torch.float64, device=device)
    norms = [Normalizer(e.prep.mean, e.prep.std, device) for e in group]  # on the device once, not per batch
    predictions: list[list[dict]] = [[] for _ in group]
    tops: list[list[Any]] = [[] for _ in group]  # each batch's top-5, on the device
    read: list[Any] = []  # each batch's dataset indices
    restrict = _restriction(dataset, group[0], device)
    seen, untimed, skipped = 0, 0, []
    bar = Bar(desc=label, total=len(dataset.samples), unit="img", enabled=progress)
    start = time.perf_counter()
    try:
        with bar, torch.inference_mode():
            for x, y, idx, errors in to_device(feed.batches(), device):
                x, y, idx = _drop_unreadable(dataset, x, y, idx, errors, skipped)
                if len(idx):
                    read.append(idx)
                    for k, e in enumerate(group):
                        top5, preds = _score(e, norms[k](x), y, idx, totals[k], restrict, dataset, opts)
                        tops[k].append(top5)
                        predictions[k] += preds
                seen += len(errors)
                if opts.compile and seen == len(errors):  # the first batch compiled the models: not timed
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    start, untimed = time.perf_counter(), seen
                bar.advance(
                    len(errors) * opts.shard.world, (seen - untimed) / max(time.perf_counter() - start, 1e-9)
                )
    except MemoryError as e:  # decoding (or the model on the CPU) ran out of host memory
        feed.abort()
        raise S2MLPError(
            f"out of memory while decoding or evaluating images ({type(e).__name__}); no result was computed",
            next_step="smaller_batch",
            advice="use a smaller batch or fewer decoding workers, or free memory",
        ) from None
    except BaseException:
        feed.abort()
        raise
    cache_note = feed.finish()
    counts = opts.shard.sum(torch.tensor([float(seen - len(skipped)), float(len(skipped))], device=device))
    totals = opts.shard.sum(totals).cpu()  # the pass's one host sync: the clock stops after it
    elapsed = time.perf_counter() - start
    rows, predictions = _gathered(
        group, totals, counts, skipped, predictions, elapsed, untimed, cache_note, opts
    )
    return rows, predictions, [_ranked(read, t, opts) for t in tops]


def _gathered(
    group: list[Entry],
    totals: Any,
    counts: Any,
    skipped: list,
    predictions: list,
    elapsed: float,
    untimed: int,
    cache_note: str,
    opts: Options,
) -> tuple[list[dict], list[list[dict]]]:
    """Every process's counts, skipped images and predictions as one pass's rows (in dataset order)."""
    images, n_skipped = int(counts[0]), int(counts[1])
    skipped = sorted(opts.shard.gather(skipped), key=lambda r: r["index"])
    predictions = [
        [{k: v for k, v in r.items() if k != "index"} for r in sorted(opts.shard.gather(p), key=_index)]
        for p in predictions
    ]
    rate = (images + n_skipped - untimed * opts.shard.world) / elapsed if elapsed > 0 else None
    rows = [
        _row(e, c1, c5, loss, nonfinite, images, n_skipped, rate, group, skipped, cache_note)
        for e, (c1, c5, loss, nonfinite) in zip(group, totals.tolist(), strict=True)
    ]
    return rows, predictions


def _restriction(dataset: Dataset, first: Entry, device: Any) -> tuple[Any, Any] | None:
    """ImageNet-A / -R: only their classes compete. Their global indices, and global -> position."""
    import torch

    if dataset.valid is None:
        return None
    sel = torch.tensor(dataset.valid, device=device)
    remap = torch.full((_num_classes(first),), -1, dtype=torch.long, device=device)
    remap[sel] = torch.arange(len(sel), device=device)
    return sel, remap


def _drop_unreadable(dataset: Dataset, x: Any, y: Any, idx: Any, errors: list[str], skipped: list) -> tuple:
    """The batch without the images that could not be read; those are said and kept in `skipped`."""
    import torch

    ok = [not e for e in errors]
    for j in (j for j, good in enumerate(ok) if not good):
        key = dataset.samples[int(idx[j])].key
        skipped.append({"index": int(idx[j]), "key": key, "error": errors[j]})
        warn(f"skipped {key}: {errors[j]}")
    if all(ok):
        return x, y, idx
    keep = torch.tensor(ok)
    return x[keep.to(x.device)], y[keep.to(y.device)], idx[keep]


def _score(
    e: Entry, x: Any, y: Any, idx: Any, totals: Any, restrict: Any, dataset: Dataset, opts: Options
) -> tuple[Any, list[dict]]:
    """One model on one normalised batch: counts into `totals` (on the device), its top-5 (global class
    indices) and, when asked, the batch's per-image predictions."""
    logits = _logits(e, x, opts)
    if restrict is None:
        top5 = ranks = _count(totals, logits, y)
    else:  # scored among the set's classes, named by their global index
        sel, remap = restrict
        logits = logits.index_select(1, sel)
        ranks = _count(totals, logits, remap[y])
        top5 = sel[ranks]
    if not opts.save_predictions:
        return top5, []
    probs = logits.softmax(dim=1).gather(1, ranks)
    return top5, _predictions(dataset, idx, y, probs, top5)


def _num_classes(e: Entry) -> int:
    return int(getattr(e.model, "num_classes", 1000))


def _ranked(read: list[Any], tops: list[Any], opts: Options) -> Ranked:
    """Every process's (index, top-5) rows, in index order, as numpy arrays."""
    import numpy as np
    import torch

    if not read:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 5), dtype=np.int64)
    idx = torch.cat([i.cpu() for i in read]).numpy()
    top = torch.cat(tops).cpu().numpy()
    if opts.shard.world > 1:
        rows = opts.shard.gather([(int(i), t.tolist()) for i, t in zip(idx, top, strict=True)])
        rows.sort(key=lambda r: r[0])
        idx, top = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    order = np.argsort(idx, kind="stable")
    return idx[order], top[order]


def _index(r: dict) -> int:
    return r["index"]


def _logits(e: Entry, xin: Any, opts: Options) -> Any:
    """The model's float32 logits for a normalised batch. A compiled model always sees full batches: a
    short last batch is padded (and the padding's logits dropped), so it is never compiled again."""
    import torch

    n = xin.shape[0]
    if opts.compile and n < opts.batch_size:
        xin = torch.cat([xin, xin.new_zeros((opts.batch_size - n, *xin.shape[1:]))])
    if opts.channels_last:
        xin = xin.contiguous(memory_format=torch.channels_last)
    with autocast(opts.device, opts.amp):
        return e.model(xin).float()[:n]


def _count(totals: Any, logits: Any, y: Any) -> Any:
    """Add a batch to one model's (top-1, top-5, loss sum, non-finite) totals, on the device; returns
    the batch's top-5 classes."""
    import torch
    from torch.nn import functional as F

    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices  # fewer classes: all of them
    totals[0] += (top5[:, 0] == y).sum()
    totals[1] += (top5 == y[:, None]).any(dim=1).sum()
    totals[2] += F.cross_entropy(logits, y, reduction="none").double().sum()
    totals[3] += (~torch.isfinite(logits)).any(dim=1).sum()
    return top5


def _predictions(dataset: Dataset, idx: Any, y: Any, probs: Any, top5: Any) -> list[dict[str, Any]]:
    return [
        {
            "index": k,
            "key": dataset.samples[k].key,
            "label": label,
            "top5": t5,
            "top5_prob": [round(p, 6) for p in p5],
        }
        for k, label, t5, p5 in zip(idx.tolist(), y.tolist(), top5.tolist(), probs.tolist(), strict=True)
    ]


def _row(
    e: Entry,
    c1: float,
    c5: float,
    loss: float,
    nonfinite: float,
    images: int,
    n_skipped: int,
    rate: float | None,
    group: list[Entry],
    skipped: list[dict],
    cache_note: str,
) -> dict[str, Any]:
    top1 = 100 * c1 / images if images and not nonfinite else None
    detail = ""
    if nonfinite:  # NaN or inf weights, or a normalisation that divides by zero: no number is honest
        detail = f"non-finite logits (NaN or inf) for {int(nonfinite):,} of {images:,} images"
        c5 = loss = float("nan")
    return {
        "model": e.name,
        "status": "error" if nonfinite else "ok",
        "detail": detail,
        "top1": None if top1 is None else round(top1, 3),
        "top5": None if not images or nonfinite else round(100 * c5 / images, 3),
        "loss": None if not images or nonfinite else round(loss / images, 5),
        "images": images,
        "skipped": n_skipped,
        "images_per_s": None if rate is None else round(rate, 2),
        "paper_top1": e.paper_top1,
        "delta_top1": None if top1 is None or e.paper_top1 is None else round(top1 - e.paper_top1, 3),
        "weights": e.weights,
        "weights_origin": e.weights_origin,
        "weights_sha256": e.weights_sha256,
        "preprocess": e.prep.to_dict(),
        "shared_pass_with": [o.name for o in group if o is not e],
        "skipped_files": [{"key": r["key"], "error": r["error"]} for r in skipped],
        "cache": cache_note,
    }
