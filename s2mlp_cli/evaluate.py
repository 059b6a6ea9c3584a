"""ImageNet-1k evaluation: top-1 / top-5 / loss of several models in as few passes over the data as possible.

`run(EvalOptions(...))` is everything `s2mlp eval` does, returning the result document `{"env",
"results"}`; the command only parses, calls and prints. `check(options)` finds every problem with a
request (names, paths, weight sources, output files) without importing torch, so a bad request fails
at once and says everything that is wrong in one message.

Models whose transforms share the geometry (size, crop_pct, filter) share one pass: each image is decoded
and cropped once, and each model normalises the batch with its own mean/std on the device.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s2mlp_cli import hub, report
from s2mlp_cli.console import info, warn
from s2mlp_cli.data import Dataset, EvalSet, Preprocess, collate_raw, decode_on_gpu, normalize
from s2mlp_cli.errors import ProblemsError, S2MLPError, UnknownModelError
from s2mlp_cli.runtime import amp_problem
from s2mlp_cli.zoo import Card, get_card, total_stride

PREDICTION_FORMATS = (".jsonl", ".csv")


@dataclass
class EvalOptions:
    """One evaluation request; None means the card's value or the device's default."""

    variants: Sequence[str]
    data: str | Path
    labels: str | Path | None = None
    devkit: str | Path | None = None
    weights: str | Path | None = None  # one variant only
    img_size: int | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    device: str = "auto"
    batch_size: int | None = None  # 256 on the GPU, 32 on the CPU
    workers: int | None = None  # CPU cores (per process under torchrun), at most 16
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    tf32: bool = False
    limit: int | None = None
    cache: bool = True  # read / build the decoded-crop cache (s2mlp_cli.cache) where the disk has room
    decode: str = "cpu"  # "gpu": torchvision's nvJPEG decode and antialiased resize on the device
    output: str | Path | None = None  # .json, .csv or .md, written atomically
    save_predictions: str | Path | None = None  # .jsonl or .csv
    progress: bool = True


def check(opts: EvalOptions) -> list[S2MLPError]:
    """Every problem with the request, each naming its argument (`param`); no torch, no network."""
    problems: list[S2MLPError] = []
    cards = _cards(opts.variants, problems)
    if not cards and not problems:
        problems.append(S2MLPError("name at least one variant", param="variants"))
    if opts.weights is not None and len(cards) > 1:
        problems.append(
            S2MLPError("a weights file loads into one model: evaluate a single variant", param="weights")
        )
    root = Path(opts.data).expanduser()
    if not root.exists():
        problems.append(S2MLPError(f"{root}: no such file or folder", param="data"))
    for name in ("labels", "devkit"):
        path = getattr(opts, name)
        if path is not None and not Path(path).expanduser().exists():
            problems.append(S2MLPError(f"{path}: no such file or folder", param=name))
    for name in ("mean", "std"):
        values = getattr(opts, name)
        if values is not None and not all(math.isfinite(v) and (name == "mean" or v > 0) for v in values):
            what = "finite numbers" if name == "mean" else "finite numbers above 0"
            problems.append(S2MLPError(f"{name} must be three {what}, got {tuple(values)}", param=name))
    if (problem := amp_problem(opts.device, opts.amp)) is not None:
        problems.append(problem)
    if opts.decode not in ("cpu", "gpu"):
        problems.append(S2MLPError(f"decode must be cpu or gpu, got {opts.decode!r}", param="decode"))
    elif opts.decode == "gpu" and opts.device == "cpu":
        problems.append(S2MLPError("GPU decoding needs the GPU: drop --device cpu", param="decode"))
    for card in cards:
        problems += _size_problems(card, opts.img_size)
    problems += _output_problems(opts.output, report.FORMATS, "output")
    problems += _output_problems(opts.save_predictions, PREDICTION_FORMATS, "save_predictions")
    for card in cards:
        if (problem := hub.precheck(card, opts.weights)) is not None:
            problems.append(problem)
    return problems


def _cards(names: Sequence[str], problems: list[S2MLPError]) -> list[Card]:
    cards: dict[str, Card] = {}
    for name in (n.strip() for n in names if n.strip()):
        try:
            card = get_card(name)
        except UnknownModelError as e:
            problems.append(S2MLPError(str(e), param="variants"))
            continue
        cards.setdefault(card.name, card)
    return list(cards.values())


def _size_problems(card: Card, img_size: int | None) -> list[S2MLPError]:
    """An input size the model cannot take: ViP runs at its card's size only; the others need at least
    their stride (GFNet resizes its filters to any size)."""
    if img_size is None:
        return []
    if card.family == "vip" and img_size != card.preprocess.input_size:
        return [
            S2MLPError(
                f"{card.name} runs only at {card.preprocess.input_size} (segment_dim fixes its token grid)",
                param="img_size",
            )
        ]
    if (stride := total_stride(card)) is not None and img_size < stride:
        return [S2MLPError(f"{card.name} needs an input of at least {stride} (its stride)", param="img_size")]
    return []


def _output_problems(path: str | Path | None, formats: Sequence[str], param: str) -> list[S2MLPError]:
    if path is None:
        return []
    if not str(path).strip():
        return [S2MLPError("an empty file name; name a file, or leave the option out", param=param)]
    path = Path(path).expanduser()
    if path.suffix.lower() not in formats:
        return [S2MLPError(f"{path}: use a {' or '.join(formats)} file", param=param)]
    if path.is_dir():
        return [S2MLPError(f"{path} is a folder; name a file", param=param)]
    folder = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
    if not os.access(folder, os.W_OK | os.X_OK):
        return [S2MLPError(f"{path}: cannot write in {folder}", param=param)]
    return []


def run(opts: EvalOptions) -> dict[str, Any]:
    """Evaluate every variant; the document `{"env", "results"}`. Raises ProblemsError first if
    `check` finds anything, S2MLPError for what only shows later (unreadable data, weights that fail)."""
    if problems := check(opts):
        raise ProblemsError(problems)
    import torch

    from s2mlp_cli.api import load_pretrained
    from s2mlp_cli.data import find_dataset
    from s2mlp_cli.models import create_model
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
    info(f"data: {dataset.root}")
    info(f"layout: {dataset.layout}")
    for note in dataset.notes:
        info(f"  {note}")
    shape = dataset.shape()
    info(f"set: {shape}" + (f" (limit {opts.limit})" if opts.limit else ""))

    entries = []
    for card in _cards(opts.variants, []):
        prep = _preprocess(card, opts)
        model = create_model(card.name, img_size=prep.input_size)
        pulled = load_pretrained(model, card.name, opts.weights, progress=opts.progress)
        model = model.eval().to(device)
        if opts.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if opts.compile:
            model = torch.compile(model)
        entries.append(
            Entry(card.name, model, prep, pulled.source, card.paper.get("top1"), pulled.origin, pulled.sha256)
        )

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
    )
    results = evaluate(dataset, entries, loop, progress=opts.progress and shard.rank == 0)
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
        # a file that cannot be written (disk full, permissions changed) does not lose the results: the
        # document still comes back, with the failure, for the caller to print
        failures = []
        if opts.save_predictions:
            try:
                _write_predictions(opts.save_predictions, entries)
            except OSError as e:
                failures.append(f"could not write {opts.save_predictions}: {e.strerror or e}")
        if opts.output:
            try:
                report.write(str(opts.output), doc, report.EVAL_COLUMNS, "s2mlp eval")
            except OSError as e:
                failures.append(f"could not write {opts.output}: {e.strerror or e}")
        if failures:
            doc["write_errors"] = failures
    return doc


def _preprocess(card: Card, opts: EvalOptions) -> Preprocess:
    p = card.preprocess
    return Preprocess(
        input_size=opts.img_size or p.input_size,
        crop_pct=opts.crop_pct or p.crop_pct,
        interpolation=opts.interpolation or p.interpolation,
        mean=tuple(opts.mean or p.mean),
        std=tuple(opts.std or p.std),
    )


def _write_predictions(path: str | Path, entries: list[Entry]) -> None:
    rows = [{"model": e.name, **p} for e in entries for p in e.predictions]
    if str(path).endswith(".jsonl"):
        text = "".join(json.dumps(r) + "\n" for r in rows)
    else:
        text = report.to_csv({"results": rows})
    report.write_text_atomic(path, text)


CHANCE_TOP1 = 0.1  # percent, 1000 classes


@dataclass
class Entry:
    """One model to evaluate."""

    name: str
    model: Any  # torch.nn.Module, in eval mode on the device
    prep: Preprocess
    weights: str
    paper_top1: float | None = None
    weights_origin: str = "card"
    weights_sha256: str | None = None
    predictions: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Shard:
    """This process's slice of the images under torchrun (rank r of w takes images r, r + w, ...)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, device: str) -> Shard:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    def indices(self, n: int) -> list[int]:
        return list(range(self.rank, n, self.world))

    def sum(self, t: Any) -> Any:
        """All-reduce a tensor (sum) across the processes; itself when there is one."""
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t

    def gather(self, items: list) -> list:
        """Every process's list, concatenated in rank order (to every process)."""
        if self.world == 1:
            return items
        import torch.distributed as dist

        parts: list[list] = [[] for _ in range(self.world)]
        dist.all_gather_object(parts, items)
        return [x for part in parts for x in part]


@dataclass
class Options:
    device: str = "cpu"
    batch_size: int = 32
    workers: int = 2
    amp: str = "none"
    channels_last: bool = False
    save_predictions: bool = False
    cache: bool = False
    decode: str = "cpu"
    shard: Shard = field(default_factory=Shard)


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
    """Every model of `group` over this process's share of the images, in one pass.

    Counts and loss accumulate on the device and are read once at the end (no per-batch host sync);
    under torchrun they are summed across processes, so every process returns the whole set's numbers.
    """
    import torch
    from torch.nn import functional as F

    device = (
        torch.device("cuda", torch.cuda.current_device()) if opts.device == "cuda" else torch.device("cpu")
    )
    prep = group[0].prep
    indices = opts.shard.indices(len(dataset.samples))
    source = _source(dataset, prep, indices, opts)
    # per model: correct top-1, correct top-5, loss sum, images with non-finite logits
    totals = torch.zeros(len(group), 4, dtype=torch.float64, device=device)
    seen, skipped = 0, []
    autocast = (
        torch.autocast(device_type=opts.device, dtype=torch.bfloat16 if opts.amp == "bf16" else torch.float16)
        if opts.amp != "none"
        else None
    )
    bar = _Bar(label, len(dataset.samples), progress)
    start = time.perf_counter()
    try:
        with bar, torch.inference_mode():
            for x, y, idx, errors in _to_device(source.batches(), device):
                ok = [not e for e in errors]
                for j in (j for j, good in enumerate(ok) if not good):
                    key = dataset.samples[int(idx[j])].key
                    skipped.append({"index": int(idx[j]), "key": key, "error": errors[j]})
                    warn(f"skipped {key}: {errors[j]}")
                if not all(ok):
                    keep = torch.tensor(ok)
                    x, y, idx = x[keep.to(x.device)], y[keep.to(y.device)], idx[keep]
                if len(idx):
                    for k, e in enumerate(group):
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
                        totals[k, 0] += (top5[:, 0] == y).sum()
                        totals[k, 1] += (top5 == y[:, None]).any(dim=1).sum()
                        totals[k, 2] += F.cross_entropy(logits, y, reduction="none").double().sum()
                        totals[k, 3] += (~torch.isfinite(logits)).any(dim=1).sum()
                        if opts.save_predictions:
                            _keep_predictions(e, dataset, idx, y, logits, top5)
                seen += len(errors)
                bar.advance(len(errors) * opts.shard.world, seen / max(time.perf_counter() - start, 1e-9))
    except MemoryError as e:  # decoding (or the model on the CPU) ran out of host memory
        source.abort()
        raise S2MLPError(
            f"out of memory while decoding or evaluating images ({type(e).__name__}); no result was "
            "computed. Lower --batch-size or --workers, or free memory"
        ) from None
    except BaseException:
        source.abort()
        raise
    cache_note = source.finish()
    elapsed = time.perf_counter() - start
    counts = opts.shard.sum(torch.tensor([float(seen - len(skipped)), float(len(skipped))], device=device))
    totals = opts.shard.sum(totals).cpu()  # the pass's one host sync
    images, n_skipped = int(counts[0]), int(counts[1])
    skipped = sorted(opts.shard.gather(skipped), key=lambda r: r["index"])
    for e in group:
        e.predictions = sorted(opts.shard.gather(e.predictions), key=lambda r: r.pop("index"))
    results = []
    for e, (c1, c5, loss, nonfinite) in zip(group, totals.tolist(), strict=True):
        top1 = 100 * c1 / images if images and not nonfinite else None
        detail = ""
        if nonfinite:  # NaN or inf weights, or a normalisation that divides by zero: no number is honest
            detail = f"non-finite logits (NaN or inf) for {int(nonfinite):,} of {images:,} images"
            c5 = loss = float("nan")
        results.append(
            {
                "model": e.name,
                "status": "error" if nonfinite else "ok",
                "detail": detail,
                "top1": None if top1 is None else round(top1, 3),
                "top5": None if not images or nonfinite else round(100 * c5 / images, 3),
                "loss": None if not images or nonfinite else round(loss / images, 5),
                "images": images,
                "skipped": n_skipped,
                "images_per_s": round((images + n_skipped) / elapsed, 2) if elapsed > 0 else None,
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
        )
    return results


def _keep_predictions(e: Entry, dataset: Dataset, idx: Any, y: Any, logits: Any, top5: Any) -> None:
    probs = logits.softmax(dim=1).gather(1, top5)
    for k, label_, t5, p5 in zip(idx.tolist(), y.tolist(), top5.tolist(), probs.tolist(), strict=True):
        e.predictions.append(
            {
                "index": k,
                "key": dataset.samples[k].key,
                "label": label_,
                "top5": t5,
                "top5_prob": [round(p, 6) for p in p5],
            }
        )


def _to_device(batches: Any, device: Any) -> Any:
    """Batches with the images and labels on the device. On a GPU, the next batch is copied on a side
    stream (from pinned memory) while the current one computes; on the CPU they pass through."""
    import torch

    if device.type != "cuda":
        yield from batches
        return
    stream = torch.cuda.Stream(device)
    pending = None
    for x, y, idx, errors in batches:
        with torch.cuda.stream(stream):
            moved = (x.to(device, non_blocking=True), y.to(device, non_blocking=True), idx, errors)
        if pending is not None:
            yield pending
        torch.cuda.current_stream(device).wait_stream(stream)
        moved[0].record_stream(torch.cuda.current_stream(device))
        moved[1].record_stream(torch.cuda.current_stream(device))
        pending = moved
    if pending is not None:
        yield pending


class _Source:
    """Where a pass's uint8 crops come from: the cache, or decoding (which may fill the cache)."""

    def __init__(self, batches: Any, writer: Any = None, note: str = "off") -> None:
        self._batches, self.writer, self.note = batches, writer, note

    def batches(self) -> Any:
        for x, y, idx, errors in self._batches:
            if self.writer is not None:
                self.writer.put(idx, x if x.device.type == "cpu" else x.cpu(), list(errors))
            yield x, y, idx, list(errors)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()

    def finish(self) -> str:
        if self.writer is not None:
            folder = self.writer.commit()
            return f"built {folder.name}" if folder else "not built (incomplete pass)"
        return self.note


def _source(dataset: Dataset, prep: Preprocess, indices: list[int], opts: Options) -> _Source:
    """The cached crops when there are any for this set and geometry; else decoding, filling the cache
    on the way when it is on, this is the only process, and the disk has room."""
    import torch

    from s2mlp_cli import cache

    samples = dataset.samples
    whole = len(indices) == len(samples)
    if opts.cache and opts.decode == "cpu":
        fp = cache.fingerprint(samples, prep)
        if (hit := cache.lookup(samples, prep, fp)) is not None:
            info(f"crops: from the cache ({hit.path.name})")
            return _Source(_cached_batches(hit, samples, indices, opts, torch), note=f"read {hit.path.name}")
        writer = None
        if whole and cache.room_for(len(samples), prep):
            writer = cache.Writer(dataset.root, samples, prep, fp)
        note = "building" if writer else ("off under torchrun" if not whole else "off (not enough disk)")
        if writer is None:
            info(f"crops: not cached ({note})")
        return _Source(_decoded_batches(dataset, prep, indices, opts), writer, note)
    return _Source(_decoded_batches(dataset, prep, indices, opts), note="off")


def _decoded_batches(dataset: Dataset, prep: Preprocess, indices: list[int], opts: Options) -> Any:
    from torch.utils.data import DataLoader, Subset

    data = EvalSet(dataset.samples, prep, raw=opts.decode == "gpu")
    loader = DataLoader(
        data if len(indices) == len(data) else Subset(data, indices),
        batch_size=opts.batch_size,
        shuffle=False,
        num_workers=opts.workers,
        pin_memory=opts.device == "cuda" and opts.decode == "cpu",
        collate_fn=collate_raw if opts.decode == "gpu" else None,
        persistent_workers=False,
    )
    if opts.decode == "gpu":
        yield from decode_on_gpu(loader, prep)
        return
    yield from loader


def _cached_batches(hit: Any, samples: list, indices: list[int], opts: Options, torch: Any) -> Any:
    """Batches read straight from the memory map: contiguous slices when the indices are a range."""
    import numpy as np

    labels = torch.tensor([s.label for s in samples])
    pin = opts.device == "cuda"
    for start in range(0, len(indices), opts.batch_size):
        part = indices[start : start + opts.batch_size]
        if part[-1] - part[0] == len(part) - 1:
            x = torch.from_numpy(np.array(hit.crops[part[0] : part[-1] + 1]))
        else:
            x = torch.from_numpy(hit.crops[np.asarray(part)])
        idx = torch.tensor(part)
        yield (x.pin_memory() if pin else x), labels[idx], idx, [hit.errors.get(i, "") for i in part]


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
