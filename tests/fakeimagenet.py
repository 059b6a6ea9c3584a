"""Small ImageNet-shaped validation sets, written by the tests in every layout users have.

The same images and labels go into each layout, so each layout must give the same numbers. Images are
real-looking JPEGs of mixed sizes and aspect ratios, plus the odd ones the real set has: grayscale,
CMYK, and a PNG saved under a .JPEG name.
"""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from s2mlp_cli.data import synsets

SIZES = [(80, 64), (64, 96), (120, 70), (64, 64), (99, 131), (150, 100), (70, 200), (66, 65), (90, 90)]


def make_images(seed: int = 0) -> list[tuple[str, bytes]]:
    """(file name, encoded bytes) for ILSVRC2012_val_00000001.JPEG onwards."""
    rng = random.Random(seed)
    items = []
    for i, (w, h) in enumerate(SIZES + [(72, 80), (81, 77), (100, 60)]):
        base = np.random.default_rng(seed * 100 + i).integers(0, 255, (h, w, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h))
        draw = ImageDraw.Draw(img)
        for _ in range(4):
            x0, y0 = rng.randrange(w), rng.randrange(h)
            color = tuple(rng.randrange(256) for _ in range(3))
            draw.ellipse((x0, y0, x0 + rng.randrange(5, 40), y0 + rng.randrange(5, 40)), fill=color)
        buf = io.BytesIO()
        kind = i - len(SIZES)
        if kind == 0:
            img.convert("L").save(buf, "JPEG", quality=90)  # grayscale
        elif kind == 1:
            img.convert("CMYK").save(buf, "JPEG", quality=90)  # CMYK
        elif kind == 2:
            img.save(buf, "PNG")  # a PNG with a .JPEG name
        else:
            img.save(buf, "JPEG", quality=90)
        items.append((f"ILSVRC2012_val_{i + 1:08d}.JPEG", buf.getvalue()))
    return items


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def class_folders(root: Path, items: list[tuple[str, bytes]], labels: list[int]) -> Path:
    for (name, data), label in zip(items, labels, strict=True):
        folder = root / synsets()[label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return root


def flat_with_devkit(root: Path, items: list[tuple[str, bytes]], labels: list[int], seed: int = 0) -> Path:
    """Flat images and a devkit whose ILSVRC2012_IDs are a shuffled order of the synsets."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    for name, data in items:
        (root / name).write_bytes(data)
    wnids = list(synsets())
    random.Random(seed).shuffle(wnids)  # ID k is wnids[k - 1]: not the sorted order
    id_of = {w: k + 1 for k, w in enumerate(wnids)}
    records = [(k + 1, w, f"words {w}", 0) for k, w in enumerate(wnids)]
    records += [(1001, "n00001740", "entity", 5), (1002, "n00002137", "abstraction", 3)]  # not leaves
    arr = np.array(
        records, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    )
    devkit = root.parent / "ILSVRC2012_devkit_t12"
    (devkit / "data").mkdir(parents=True, exist_ok=True)
    savemat(str(devkit / "data" / "meta.mat"), {"synsets": arr})
    gt = [id_of[synsets()[label]] for label in labels]
    (devkit / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{g}\n" for g in gt))
    return root


def kaggle(root: Path, items: list[tuple[str, bytes]], labels: list[int]) -> Path:
    images = root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    images.mkdir(parents=True)
    lines = ["ImageId,PredictionString"]
    for (name, data), label in zip(items, labels, strict=True):
        (images / name).write_bytes(data)
        w = synsets()[label]
        lines.append(f"{Path(name).stem},{w} 10 20 30 40 {w} 1 2 3 4 ")
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    return root


def parquet(root: Path, items: list[tuple[str, bytes]], labels: list[int]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "data").mkdir(parents=True)
    half = len(items) // 2
    for shard, part in enumerate((slice(0, half), slice(half, None))):
        table = pa.table(
            {
                "image": [{"bytes": d, "path": n} for n, d in items[part]],
                "label": labels[part],
            }
        )
        pq.write_table(table, root / "data" / f"validation-{shard:05d}-of-00002.parquet", row_group_size=4)
    return root


def webdataset(root: Path, items: list[tuple[str, bytes]], labels: list[int]) -> Path:
    root.mkdir(parents=True)
    half = len(items) // 2
    for shard, part in enumerate((slice(0, half), slice(half, None))):
        with tarfile.open(root / f"imagenet1k-validation-{shard:04d}.tar", "w") as tar:
            for (name, data), label in zip(items[part], labels[part], strict=True):
                key = Path(name).stem
                for ext, payload in (("jpg", data), ("cls", str(label).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return root


def labels_file(root: Path, items: list[tuple[str, bytes]], labels: list[int], as_wnid: bool) -> Path:
    root.mkdir(parents=True)
    for name, data in items:
        (root / name).write_bytes(data)
    path = root.parent / "labels.csv"
    rows = ["filename,label"] + [
        f"{name},{synsets()[label] if as_wnid else label}"
        for (name, _), label in zip(items, labels, strict=True)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path
