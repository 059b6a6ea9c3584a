"""Our eval data pipeline against timm's, on the same generated JPEGs with the same worker count.

    python benchmarks/eval_loader.py [--images 400] [--workers 2] [--batch-size 32] [--repeats 3]

Four pipelines, each to the normalised float32 batch a model would take:
- timm: what timm's validate.py runs (below);
- ours, uncached: `s2mlp eval`'s decoding path (`EvalSet`, uint8 batches, batched `normalize`);
- ours, cached: `s2mlp eval`'s cache path, reading the crops the first pass stored (built once, untimed);
- ours, 2 processes: the uncached path under torchrun, each process taking every other image with half
  the workers, timed from a barrier to the slowest process's end (start-up not counted).

timm's side is what its validate.py runs: a dataset that opens each file with PIL, `.convert("RGB")`, and
applies `timm.data.create_transform(..., is_training=False)` (resize, centre crop, ToTensor, Normalize),
batched by a torch DataLoader. Ours: `s2mlp_cli.data.EvalSet` (same resize and crop, uint8 out of the
workers) and `normalize` on the whole batch, which `s2mlp eval` runs on the device. Both produce the same
float32 batch (tests/test_eval.py checks equality); this prints images/s of each and the ratio.
Runs alternate (timm, ours, timm, ours, ...) so machine noise hits both alike; the median is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from s2mlp_cli import distributed
from s2mlp_cli.data import EvalSet, cache, find_dataset, normalize, synsets
from s2mlp_cli.evaluate import Options
from s2mlp_cli.evaluate.feed import source as _source
from s2mlp_cli.zoo import Preprocess

SIZE, CROP, INTERP = 224, 0.9, "bicubic"  # S²-MLPv2's eval transform
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_jpegs(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        w, h = (500, 375) if i % 3 else (375, 500)  # ImageNet's most common shapes
        # smooth content compresses like a photo; pure noise would make decoding unrealistically slow
        small = rng.integers(0, 255, (h // 25, w // 25, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
        folder = root / synsets()[i % 1000]
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"ILSVRC2012_val_{i + 1:08d}.JPEG", quality=90)


class TimmStyle(torch.utils.data.Dataset):
    def __init__(self, samples, transform) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        return self.transform(Image.open(s.source.file).convert("RGB")), s.label


def run_timm(samples, workers: int, batch_size: int) -> float:
    from timm.data import create_transform

    tf = create_transform(input_size=SIZE, crop_pct=CROP, interpolation=INTERP, mean=MEAN, std=STD)
    loader = DataLoader(TimmStyle(samples, tf), batch_size=batch_size, num_workers=workers)
    start = time.perf_counter()
    n = sum(len(y) for _, y in loader)
    return n / (time.perf_counter() - start)


def run_ours(samples, workers: int, batch_size: int) -> float:
    prep = Preprocess(SIZE, CROP, INTERP, MEAN, STD)
    loader = DataLoader(EvalSet(samples, prep), batch_size=batch_size, num_workers=workers)
    start = time.perf_counter()
    n = 0
    for x, y, _, _ in loader:
        normalize(x, MEAN, STD)
        n += len(y)
    return n / (time.perf_counter() - start)


def run_cached(dataset, workers: int, batch_size: int) -> float:
    """`s2mlp eval`'s own source: the cache entry the first (untimed) pass built."""
    prep = Preprocess(SIZE, CROP, INTERP, MEAN, STD)
    opts = Options(device="cpu", batch_size=batch_size, workers=workers, cache=True)
    indices = list(range(len(dataset.samples)))
    source = _source(dataset, prep, indices, opts)
    if source.writer is not None:  # the first call builds the entry
        for _ in source.batches():
            pass
        source.finish()
        source = _source(dataset, prep, indices, opts)
    assert source.note.startswith("read"), source.note
    start = time.perf_counter()
    n = 0
    for x, y, _, _ in source.batches():
        normalize(x, MEAN, STD)
        n += len(y)
    return n / (time.perf_counter() - start)


def run_two_processes(root: str, workers: int, batch_size: int) -> float:
    """This script's --shard mode under torchrun, 2 processes; images/s of the slowest one's span."""
    args = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__,
        "--shard", root, "--workers", str(max(1, workers // 2)), "--batch-size", str(batch_size),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def shard_worker(root: str, workers: int, batch_size: int) -> None:
    """One torchrun process: its share of the images through the uncached path; rank 0 prints images/s."""
    prep = Preprocess(SIZE, CROP, INTERP, MEAN, STD)
    dataset = find_dataset(root)
    shard = distributed.start("cpu")
    opts = Options(device="cpu", batch_size=batch_size, workers=workers, cache=False, shard=shard)
    indices = shard.indices(len(dataset.samples))
    import torch.distributed as dist

    dist.barrier()
    start = time.perf_counter()
    for x, _, _, _ in _source(dataset, prep, indices, opts).batches():
        normalize(x, MEAN, STD)
    span = torch.tensor([time.perf_counter() - start])
    dist.all_reduce(span, op=dist.ReduceOp.MAX)
    if shard.rank == 0:
        print(len(dataset.samples) / float(span))
    dist.destroy_process_group()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shard", metavar="DIR", help=argparse.SUPPRESS)  # a torchrun process of ours
    args = parser.parse_args()
    if args.shard:
        shard_worker(args.shard, args.workers, args.batch_size)
        return 0
    rates: dict[str, list[float]] = {"timm": [], "ours": [], "cached": [], "two": []}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["S2MLP_CACHE"] = str(Path(tmp) / "cache")
        make_jpegs(Path(tmp) / "val", args.images)
        dataset = find_dataset(Path(tmp) / "val")
        samples = dataset.samples
        for _ in range(args.repeats):
            rates["timm"].append(run_timm(samples, args.workers, args.batch_size))
            rates["ours"].append(run_ours(samples, args.workers, args.batch_size))
            rates["cached"].append(run_cached(dataset, args.workers, args.batch_size))
            rates["two"].append(run_two_processes(str(Path(tmp) / "val"), args.workers, args.batch_size))
        entry = cache.entries()[0]
    median = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"{args.images} JPEGs (500x375 and 375x500), resize 248 bicubic + crop 224, {args.workers} workers, "
        f"batch {args.batch_size}, {args.repeats} alternating runs, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs; cache entry {entry['bytes'] / 2**20:.0f} MiB"
    )
    labels = {
        "timm": "timm validate.py-style (PIL, create_transform, DataLoader)",
        "ours": "s2mlp, uncached (EvalSet uint8 + batched normalize)",
        "cached": "s2mlp, cached (memory-mapped crops)",
        "two": "s2mlp, uncached, 2 processes (torchrun, gloo)",
    }
    for key, label in labels.items():
        runs = ", ".join(f"{r:.1f}" for r in rates[key])
        ratio = median[key] / median["timm"]
        print(f"{label:58s} {median[key]:9.1f} images/s  {ratio:6.2f}x timm  (runs: {runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
