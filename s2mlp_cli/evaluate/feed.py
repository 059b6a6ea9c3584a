"""Feeding a pass: where its uint8 crops come from (the cache, or decoding, which may fill the cache),
and onto the device (on a GPU, the next batch is copied on a side stream while the current one computes).
Every batch is (crops, labels, dataset indices, per-image errors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from s2mlp_cli.console import info, warn
from s2mlp_cli.data import Dataset, EvalSet, cache, collate_raw, decode_on_gpu
from s2mlp_cli.distributed import Shard
from s2mlp_cli.runtime import RunSettings
from s2mlp_cli.zoo import Preprocess


@dataclass(frozen=True)
class Options(RunSettings):
    """How a pass runs (the device resolved): batching, decoding processes and where crops come from.
    `compile`: the models are torch.compile'd, so short batches are padded and the first is not timed."""

    device: str = field(default="cpu", kw_only=True)
    batch_size: int = 32
    workers: int = 2
    save_predictions: bool = False
    cache: bool = False
    decode: str = "cpu"
    shard: Shard = Shard()


class Source:
    """A pass's batches, with the cache writer they fill (if any) and what the cache did (`note`)."""

    def __init__(self, batches: Any, writer: Any = None, note: str = "off") -> None:
        self._batches, self.writer, self.note = batches, writer, note

    def batches(self) -> Any:
        for x, y, idx, errors in self._batches:
            if self.writer is not None:
                try:
                    self.writer.put(idx, x if x.device.type == "cpu" else x.cpu(), list(errors))
                except OSError as e:  # a full disk, a folder removed: the pass goes on uncached
                    self._drop(f"writing it failed ({e.strerror or e})")
            yield x, y, idx, list(errors)

    def _drop(self, why: str) -> None:
        self.writer.abort()
        self.writer, self.note = None, f"off ({why})"
        warn(f"crop cache: {why}; this pass goes on without it")

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()

    def finish(self) -> str:
        if self.writer is not None:
            try:
                folder = self.writer.commit()
            except OSError as e:
                self._drop(f"finishing the entry failed ({e.strerror or e})")
                return self.note
            return f"built {folder.name}" if folder else "not built (incomplete pass)"
        return self.note


def source(dataset: Dataset, prep: Preprocess, indices: list[int], opts: Options) -> Source:
    """The cached crops when there are any for this set and geometry; else decoding, filling the cache
    on the way when it is on, this is the only process, and the disk has room. Any failure of the cache
    (an unusable folder, a damaged entry, a full disk) is a warning and an uncached pass."""
    if opts.cache and opts.decode == "cpu":
        try:
            return _cache_source(dataset, prep, indices, opts)
        except (OSError, ValueError, RuntimeError) as e:  # RuntimeError: `~nosuchuser` in S2MLP_CACHE
            why = getattr(e, "strerror", None) or str(e).splitlines()[0] or type(e).__name__
            warn(f"crop cache off ({why}: {cache.cache_root_text()}); decoding every image")
            return Source(_decoded_batches(dataset, prep, indices, opts), note=f"off ({why})")
    return Source(_decoded_batches(dataset, prep, indices, opts), note="off")


def _cache_source(dataset: Dataset, prep: Preprocess, indices: list[int], opts: Options) -> Source:
    samples = dataset.samples
    whole = len(indices) == len(samples)
    fp = cache.fingerprint(samples, prep)
    if (hit := cache.lookup(samples, prep, fp)) is not None:
        info(f"crops: from the cache ({hit.path.name})")
        return Source(_cached_batches(hit, samples, indices, opts), note=f"read {hit.path.name}")
    writer = None
    if whole and cache.room_for(len(samples), prep):
        writer = cache.Writer(dataset.root, samples, prep, fp)
    note = "building" if writer else ("off under torchrun" if not whole else "off (not enough disk)")
    if writer is None:
        info(f"crops: not cached ({note})")
    return Source(_decoded_batches(dataset, prep, indices, opts), writer, note)


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


def _cached_batches(hit: Any, samples: list, indices: list[int], opts: Options) -> Any:
    """Batches read straight from the memory map into the batch tensor (pinned for the GPU): one copy
    on the host, a contiguous slice when the indices are a range."""
    import numpy as np
    import torch

    labels = torch.tensor([s.label for s in samples])
    pin = opts.device == "cuda"
    for start in range(0, len(indices), opts.batch_size):
        part = indices[start : start + opts.batch_size]
        x = torch.empty((len(part), *hit.crops.shape[1:]), dtype=torch.uint8, pin_memory=pin)
        if part[-1] - part[0] == len(part) - 1:
            np.copyto(x.numpy(), hit.crops[part[0] : part[-1] + 1])
        else:
            np.take(hit.crops, np.asarray(part), axis=0, out=x.numpy())
        idx = torch.tensor(part)
        yield x, labels[idx], idx, [hit.errors.get(i, "") for i in part]


def to_device(batches: Any, device: Any, cuda: Any = None) -> Any:
    """Batches with the images and labels on the device. On a GPU, the next batch is copied on a side
    stream (from pinned memory) while the current one computes; on the CPU they pass through. `cuda` is
    `torch.cuda` (a stand-in in tests, which records the order of the stream operations)."""
    if device.type != "cuda":
        yield from batches
        return
    if cuda is None:
        import torch

        cuda = torch.cuda
    stream = cuda.Stream(device)
    pending = None
    for x, y, idx, errors in batches:
        with cuda.stream(stream):  # the copy is queued on the side stream
            moved = (x.to(device, non_blocking=True), y.to(device, non_blocking=True), idx, errors)
        if pending is not None:
            yield pending  # the previous batch computes while this one copies
        cuda.current_stream(device).wait_stream(stream)  # nothing reads the new batch before it arrived
        moved[0].record_stream(cuda.current_stream(device))  # nor is its memory reused too early
        moved[1].record_stream(cuda.current_stream(device))
        pending = moved
    if pending is not None:
        yield pending
