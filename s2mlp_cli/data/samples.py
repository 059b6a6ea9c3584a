"""What a dataset is made of: samples (a key a user recognises, a label, and where the image's bytes
are), and the three kinds of place bytes can be: a file, a member of a tar shard, a row of a parquet
shard. Each place reads its own bytes and names the file on disk that holds them (`file`), which is what
the crop cache's key stats."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FULL_SIZE, PER_CLASS = 50_000, 50


@dataclass(frozen=True)
class ImageFile:
    file: str

    def read(self, state: dict[str, Any]) -> bytes:
        return Path(self.file).read_bytes()


@dataclass(frozen=True)
class TarMember:
    file: str  # the shard
    offset: int
    size: int

    def read(self, state: dict[str, Any]) -> bytes:
        with open(self.file, "rb") as f:
            f.seek(self.offset)
            return f.read(self.size)


@dataclass(frozen=True)
class ParquetRow:
    file: str  # the shard
    row_group: int
    row: int

    def read(self, state: dict[str, Any]) -> bytes:
        """`state` keeps the last row group decoded (samples come in order)."""
        if state.get("key") != (self.file, self.row_group):
            import pyarrow.parquet as pq

            state.clear()  # a row group that fails to read is read again for its next row, never half-kept
            group = pq.ParquetFile(self.file).read_row_group(self.row_group, columns=["image"])
            state.update(key=(self.file, self.row_group), images=group.column("image"))
        return state["images"][self.row].as_py()["bytes"]


Place = ImageFile | TarMember | ParquetRow


@dataclass(frozen=True)
class Sample:
    key: str  # what a user recognises: relative path, or shard:member
    label: int
    source: Place


def fingerprint(samples: list[Sample]) -> str:
    """What the set is, the same on every machine that holds the same files: each sample's key, label
    and place, and its file's size and mtime (not inodes, which differ between machines)."""
    import hashlib
    import os

    h = hashlib.sha256()
    stats: dict[str, tuple[int, int]] = {}
    for s in samples:
        if s.source.file not in stats:
            st = os.stat(s.source.file)
            stats[s.source.file] = (st.st_size, st.st_mtime_ns)
        h.update(repr((s.key, s.label, type(s.source).__name__, stats[s.source.file])).encode() + b"\0")
    return h.hexdigest()


@dataclass
class Dataset:
    """A labelled image set. `name` is which test set it is (val, v2, a, r, sketch, c); `valid` the class
    indices its logits are restricted to (ImageNet-A and -R: their 200); `real` each sample's ReaL labels
    (aligned with `samples`); `part` an ImageNet-C (corruption, severity); `classes` a training run's own
    classes (name "own")."""

    layout: str
    root: str
    samples: list[Sample]
    notes: list[str] = field(default_factory=list)
    name: str = "val"
    valid: tuple[int, ...] | None = None
    real: list[tuple[int, ...]] | None = None
    part: tuple[str, int] | None = None
    classes: tuple[str, ...] | None = None  # a run's own class names, in label order (None: ImageNet-1k's)

    def shape(self) -> str:
        """Whether this is the full validation set, and if not, what it is."""
        counts = Counter(s.label for s in self.samples)
        n, k = len(self.samples), len(counts)
        if self.name != "val":
            return f"{n:,} image{'s' if n != 1 else ''} in {k} class{'es' if k != 1 else ''}"
        if n == FULL_SIZE and k == 1000 and set(counts.values()) == {PER_CLASS}:
            return "the full validation set: 50,000 images, 50 per class"
        per = sorted(set(counts.values()))
        spread = f"{per[0]}" if len(per) == 1 else f"{per[0]}–{per[-1]}"
        images, classes = f"image{'s' if n != 1 else ''}", f"class{'es' if k != 1 else ''}"
        return f"a subset: {n:,} {images} in {k} {classes} ({spread} per class), not the full 50,000"
