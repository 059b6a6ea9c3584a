"""Our eval data pipeline against timm's, on the same generated JPEGs with the same worker count.

    python benchmarks/eval_loader.py [--images 400] [--workers 2] [--batch-size 32] [--repeats 3]

timm's side is what its validate.py runs: a dataset that opens each file with PIL, `.convert("RGB")`, and
applies `timm.data.create_transform(..., is_training=False)` (resize, centre crop, ToTensor, Normalize),
batched by a torch DataLoader. Ours: `s2mlp_cli.data.EvalSet` (same resize and crop, uint8 out of the
workers) and `normalize` on the whole batch, which `s2mlp eval` runs on the device. Both produce the same
float32 batch (tests/test_eval.py checks equality); this prints images/s of each and the ratio.
Runs alternate (timm, ours, timm, ours, ...) so machine noise hits both alike; the median is reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from s2mlp_cli.data import EvalSet, find_dataset, normalize, synsets
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
        return self.transform(Image.open(s.source[1]).convert("RGB")), s.label


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        make_jpegs(Path(tmp), args.images)
        samples = find_dataset(tmp).samples
        timm_rates, our_rates = [], []
        for _ in range(args.repeats):
            timm_rates.append(run_timm(samples, args.workers, args.batch_size))
            our_rates.append(run_ours(samples, args.workers, args.batch_size))
    t, o = statistics.median(timm_rates), statistics.median(our_rates)
    print(
        f"{args.images} JPEGs (500x375), {args.workers} workers, batch {args.batch_size}, "
        f"{args.repeats} alternating runs, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    for label, rate, runs in (
        ("timm create_transform + DataLoader", t, timm_rates),
        ("s2mlp EvalSet + batched normalize ", o, our_rates),
    ):
        print(f"{label}: {rate:8.1f} images/s  (runs: {', '.join(f'{r:.1f}' for r in runs)})")
    print(f"ratio ours / timm: {o / t:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
