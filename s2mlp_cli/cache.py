"""Decode once across runs: every image's uint8 centre crop for one geometry, memory-mapped on disk.

An eval pass decodes, resizes and crops each image (the slow part on a CPU); the crop depends only on the
file and the geometry (input size, crop_pct, filter), not on the model. The first uncached pass writes
the crops it makes into `crops.u8` (N x 3 x S x S uint8, in the dataset's order) under
`S2MLP_CACHE` (default `S2MLP_HOME/cache`); a later eval of any model with the same geometry reads them
at memory speed. The results are the uncached run's bit for bit: the same bytes reach the model, and
the images that could not be read are recorded and skipped again.

An entry is keyed by a fingerprint of the dataset (each sample's key, label and source, and each file's
size and mtime) and of the geometry and the decoders (PIL, timm), so a changed file, label or library
makes a new entry instead of stale results. An entry is built in a hidden folder and renamed into place
when the pass completes; an interrupted pass leaves nothing a later run would read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2mlp_cli.data.samples import Sample
from s2mlp_cli.errors import S2MLPError
from s2mlp_cli.files import s2mlp_home
from s2mlp_cli.zoo import Preprocess

VERSION = 2  # 2: samples name their place as typed records, not tuples
CROPS, META = "crops.u8", "meta.json"
MIN_FREE = 1 << 30  # leave at least 1 GiB free beyond the cache


def cache_root() -> Path:
    if env := os.environ.get("S2MLP_CACHE"):
        return Path(env).expanduser()
    return s2mlp_home() / "cache"


def _decoders() -> dict[str, str]:
    import PIL
    import timm
    import torchvision

    return {"pillow": PIL.__version__, "timm": timm.__version__, "torchvision": torchvision.__version__}


def fingerprint(samples: list[Sample], prep: Preprocess) -> str:
    """What the crops depend on: every sample (key, label, source, file size and mtime), the geometry
    and the decoders' versions."""
    h = hashlib.sha256(json.dumps({"v": VERSION, "geometry": prep.geometry, **_decoders()}).encode())
    stats: dict[str, tuple[int, int]] = {}
    for s in samples:
        path = s.source.file
        if path not in stats:
            st = os.stat(path)
            stats[path] = (st.st_size, st.st_mtime_ns)
        h.update(repr((s.key, s.label, s.source, stats[path])).encode())
        h.update(b"\0")
    return h.hexdigest()


def entry_name(fp: str, prep: Preprocess) -> str:
    return f"{prep.input_size}px-crop{prep.crop_pct:g}-{prep.interpolation}-{fp[:16]}"


def needed_bytes(n: int, prep: Preprocess) -> int:
    return n * 3 * prep.input_size * prep.input_size


def room_for(n: int, prep: Preprocess) -> bool:
    """Whether the cache's disk can hold these crops and still keep MIN_FREE free."""
    root = cache_root()
    existing = next((p for p in [root, *root.parents] if p.exists()), Path("/"))
    return shutil.disk_usage(existing).free > needed_bytes(n, prep) + MIN_FREE


@dataclass
class Hit:
    """A complete entry: the crops (read-only memory map) and the errors of the images that failed."""

    path: Path
    crops: Any  # numpy.memmap (N, 3, S, S) uint8
    errors: dict[int, str]


def lookup(samples: list[Sample], prep: Preprocess, fp: str | None = None) -> Hit | None:
    import numpy as np

    fp = fp or fingerprint(samples, prep)
    folder = cache_root() / entry_name(fp, prep)
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None
    size = prep.input_size
    if meta.get("fingerprint") != fp or meta.get("images") != len(samples):
        return None
    path = folder / CROPS
    if not path.is_file() or path.stat().st_size != needed_bytes(len(samples), prep):
        return None
    crops = np.memmap(path, dtype=np.uint8, mode="r", shape=(len(samples), 3, size, size))
    return Hit(folder, crops, {int(k): v for k, v in meta.get("errors", {}).items()})


class Writer:
    """Builds an entry in a hidden folder during a pass; `commit` renames it into place."""

    def __init__(self, dataset_root: str, samples: list[Sample], prep: Preprocess, fp: str) -> None:
        import numpy as np

        self.final = cache_root() / entry_name(fp, prep)
        self.tmp = cache_root() / f".{self.final.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir(parents=True)
        size = prep.input_size
        self.crops = np.memmap(
            self.tmp / CROPS, dtype=np.uint8, mode="w+", shape=(len(samples), 3, size, size)
        )
        self.meta = {
            "version": VERSION,
            "fingerprint": fp,
            "dataset": dataset_root,
            "images": len(samples),
            "geometry": {"input_size": size, "crop_pct": prep.crop_pct, "interpolation": prep.interpolation},
            "decoders": _decoders(),
        }
        self.errors: dict[int, str] = {}
        self.written = 0

    def put(self, idx: Any, x: Any, errors: list[str]) -> None:
        """A batch of crops (uint8 tensor, on the CPU) at their dataset indices, with their errors."""
        index = idx.numpy()
        self.crops[index] = x.numpy()
        for i, e in zip(index.tolist(), errors, strict=True):
            if e:
                self.errors[i] = e
        self.written += len(index)

    def commit(self) -> Path | None:
        """Into place if every image was written; the entry's folder, or None when it was incomplete."""
        if self.written != self.meta["images"]:
            self.abort()
            return None
        self.crops.flush()
        del self.crops
        meta = {**self.meta, "errors": {str(k): v for k, v in sorted(self.errors.items())}}
        meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        (self.tmp / META).write_text(json.dumps(meta, indent=1) + "\n")
        try:
            self.tmp.rename(self.final)
        except OSError:  # another run finished the same entry first: keep theirs
            shutil.rmtree(self.tmp, ignore_errors=True)
        return self.final

    def abort(self) -> None:
        self.crops = None
        shutil.rmtree(self.tmp, ignore_errors=True)


# --- `s2mlp cache list / clear` ------------------------------------------------------------------------


def entries() -> list[dict[str, Any]]:
    """Every entry, complete or not, with its size on disk."""
    root = cache_root()
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir():
            continue
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        row: dict[str, Any] = {"name": folder.name, "path": str(folder), "bytes": size}
        try:
            meta = json.loads((folder / META).read_text())
            g = meta["geometry"]
            row.update(
                status="complete",
                dataset=meta.get("dataset"),
                images=meta.get("images"),
                geometry=f"{g['input_size']}px crop {g['crop_pct']:g} {g['interpolation']}",
                skipped=len(meta.get("errors", {})),
                created=meta.get("created"),
            )
        except (OSError, ValueError, KeyError, TypeError):
            row.update(
                status="partial (interrupted or in progress)", dataset=None, images=None, geometry=None
            )
        found.append(row)
    return found


def clear(names: list[str] | None = None) -> list[dict[str, Any]]:
    """Remove the named entries (all when None); returns what was removed. Unknown names raise."""
    present = {e["name"]: e for e in entries()}
    if names:
        unknown = [n for n in names if n not in present]
        if unknown:
            raise S2MLPError(
                f"no cache entry named {', '.join(unknown)}",
                param="names",
                next_step="cache_list",
                advice="the cache's listing names them",
            )
        chosen = [present[n] for n in names]
    else:
        chosen = list(present.values())
    for e in chosen:
        shutil.rmtree(e["path"], ignore_errors=True)
    return chosen
