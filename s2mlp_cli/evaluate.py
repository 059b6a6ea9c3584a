"""ImageNet-1k evaluation: top-1 / top-5 / loss of several models in as few passes over the data as possible.

Models whose transforms share the geometry (size, crop_pct, filter) share one pass: each image is decoded
and cropped once, and each model normalises the batch with its own mean/std on the device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from s2mlp_cli.console import warn
from s2mlp_cli.data import Dataset, EvalSet, Preprocess, normalize

CHANCE_TOP1 = 0.1  # percent, 1000 classes


@dataclass
class Entry:
    """One model to evaluate."""

    name: str
    model: Any  # torch.nn.Module, in eval mode on the device
    prep: Preprocess
    weights: str
    paper_top1: float | None = None
    predictions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Options:
    device: str = "cpu"
    batch_size: int = 32
    workers: int = 2
    amp: str = "none"
    channels_last: bool = False
    save_predictions: bool = False


def chance_warning(top1: float, images: int) -> str | None:
    """A top-1 near 0.1% over many images is the signature of a label-mapping error, not a bad model."""
    if images >= 1000 and top1 < 10 * CHANCE_TOP1:
        return (
            f"top-1 {top1:.2f}% over {images:,} images is near chance (0.1%): the usual cause is a label "
            "mapping error (devkit IDs used as indices, or a flat folder read as class folders); check the "
            "layout line and the labels"
        )
    return None


def evaluate(
    dataset: Dataset, entries: list[Entry], opts: Options, progress: bool = True
) -> list[dict[str, Any]]:
    """One result per entry, in the entries' order."""
    groups: dict[tuple, list[Entry]] = {}
    for e in entries:
        groups.setdefault(e.prep.geometry, []).append(e)
    results: dict[str, dict[str, Any]] = {}
    for i, group in enumerate(groups.values(), 1):
        label = f"pass {i}/{len(groups)}: " + ", ".join(e.name for e in group)
        for e, r in zip(group, _one_pass(dataset, group, opts, label, progress), strict=True):
            results[e.name] = r
    return [results[e.name] for e in entries]


def _one_pass(dataset: Dataset, group: list[Entry], opts: Options, label: str, progress: bool) -> list[dict]:
    import torch
    from torch.nn import functional as F
    from torch.utils.data import DataLoader

    loader = DataLoader(
        EvalSet(dataset.samples, group[0].prep),
        batch_size=opts.batch_size,
        shuffle=False,
        num_workers=opts.workers,
        pin_memory=opts.device == "cuda",
        persistent_workers=False,
    )
    sums = [{"correct1": 0, "correct5": 0, "loss": 0.0} for _ in group]
    seen, skipped = 0, []
    autocast = (
        torch.autocast(device_type=opts.device, dtype=torch.bfloat16 if opts.amp == "bf16" else torch.float16)
        if opts.amp != "none"
        else None
    )
    bar = _Bar(label, len(dataset.samples), progress)
    start = time.perf_counter()
    with bar, torch.inference_mode():
        for x, y, idx, errors in loader:
            ok = torch.tensor([not e for e in errors])
            for j in (~ok).nonzero().flatten().tolist():
                key = dataset.samples[int(idx[j])].key
                skipped.append({"key": key, "error": errors[j]})
                warn(f"skipped {key}: {errors[j]}")
            if not ok.all():
                x, y, idx = x[ok], y[ok], idx[ok]
            if len(y):
                x = x.to(opts.device, non_blocking=True)
                y = y.to(opts.device, non_blocking=True)
                for e, s in zip(group, sums, strict=True):
                    xin = normalize(x, e.prep.mean, e.prep.std)
                    if opts.channels_last:
                        xin = xin.contiguous(memory_format=torch.channels_last)
                    if autocast is not None:
                        with autocast:
                            logits = e.model(xin)
                    else:
                        logits = e.model(xin)
                    logits = logits.float()
                    top5 = logits.topk(5, dim=1).indices
                    s["correct1"] += int((top5[:, 0] == y).sum())
                    s["correct5"] += int((top5 == y[:, None]).any(dim=1).sum())
                    s["loss"] += float(F.cross_entropy(logits, y, reduction="sum"))
                    if opts.save_predictions:
                        probs = logits.softmax(dim=1).gather(1, top5)
                        for k, label_, t5, p5 in zip(
                            idx.tolist(), y.tolist(), top5.tolist(), probs.tolist(), strict=True
                        ):
                            e.predictions.append(
                                {
                                    "key": dataset.samples[k].key,
                                    "label": label_,
                                    "top5": t5,
                                    "top5_prob": [round(p, 6) for p in p5],
                                }
                            )
            seen += len(y)
            bar.advance(len(errors), seen / max(time.perf_counter() - start, 1e-9))
    elapsed = time.perf_counter() - start
    results = []
    for e, s in zip(group, sums, strict=True):
        top1 = 100 * s["correct1"] / seen if seen else None
        results.append(
            {
                "model": e.name,
                "top1": None if top1 is None else round(top1, 3),
                "top5": None if not seen else round(100 * s["correct5"] / seen, 3),
                "loss": None if not seen else round(s["loss"] / seen, 5),
                "images": seen,
                "skipped": len(skipped),
                "images_per_s": round(seen / elapsed, 2) if elapsed > 0 else None,
                "paper_top1": e.paper_top1,
                "delta_top1": None if top1 is None or e.paper_top1 is None else round(top1 - e.paper_top1, 3),
                "weights": e.weights,
                "preprocess": e.prep.to_dict(),
                "shared_pass_with": [o.name for o in group if o is not e],
                "skipped_files": skipped,
            }
        )
    return results


class _Bar:
    """Rich progress on stderr with images/s; silent when not wanted."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.enabled = enabled
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            from s2mlp_cli.console import err

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.1f} img/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            )
            self.task = self.progress.add_task(label, total=total, rate=0.0)

    def __enter__(self) -> _Bar:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()

    def advance(self, n: int, rate: float) -> None:
        if self.enabled:
            self.progress.update(self.task, advance=n, rate=rate)
