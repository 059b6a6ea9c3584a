"""Decode once across runs: every image's uint8 centre crop for one geometry, memory-mapped on disk.

An eval pass decodes, resizes and crops each image (the slow part on a CPU); the crop depends only on the
file and the geometry (input size, crop_pct, filter), not on the model. The first uncached pass writes
the crops it makes into `crops.u8` (N x 3 x S x S uint8, in the dataset's order) under `S2MLP_CACHE`
(default `S2MLP_HOME/cache`); a later eval of any model with the same geometry reads them at memory
speed. The results are the uncached run's bit for bit.

Current: an entry is keyed by a fingerprint of the dataset (each sample's key, label and place, and each
file's size, mtime, inode and ctime: a file replaced with the timestamp kept still changes its ctime) and
of the geometry and the decoders (PIL, timm), so a changed file, label or library makes a new entry.
Whole: the crops' sha256 is recorded when an entry is made and checked whenever it is read; a damaged
entry is a miss, removed and rebuilt.
Ours: an entry's `meta.json` names our format and version; `entries` and `clear` see nothing else, so a
cache root shared with other files loses none of them. An entry is built in a hidden folder that its
builder holds a lock on, written with plain writes into space reserved up front (a disk that fills fails
the write, not the process), and renamed into place when the pass completes; `clear` never removes an
entry a live process is building, and a killed build's folder is swept.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2mlp_cli.data.samples import Sample
from s2mlp_cli.errors import S2MLPError
from s2mlp_cli.files import flock, s2mlp_home
from s2mlp_cli.zoo import Preprocess

FORMAT, VERSION = "s2mlp-crop-cache", 3  # 3: inode and ctime in the key, crops' sha256 in the entry
CROPS, META, BUILDING = "crops.u8", "meta.json", ".building"
MIN_FREE = 1 << 30  # leave at least 1 GiB free beyond the cache


def cache_root() -> Path:
    if env := os.environ.get("S2MLP_CACHE"):
        return Path(env).expanduser()
    return s2mlp_home() / "cache"


def cache_root_text() -> str:
    """The cache root as the user set it, for messages (even when it cannot be a path)."""
    return os.environ.get("S2MLP_CACHE") or str(s2mlp_home() / "cache")


def _decoders() -> dict[str, str]:
    import PIL
    import timm
    import torchvision

    return {"pillow": PIL.__version__, "timm": timm.__version__, "torchvision": torchvision.__version__}


def fingerprint(samples: list[Sample], prep: Preprocess) -> str:
    """What the crops depend on: every sample (key, label, place; its file's size, mtime, inode and
    ctime), the geometry and the decoders' versions."""
    h = hashlib.sha256(json.dumps({"v": VERSION, "geometry": prep.geometry, **_decoders()}).encode())
    stats: dict[str, tuple[int, ...]] = {}
    for s in samples:
        path = s.source.file
        if path not in stats:
            st = os.stat(path)
            stats[path] = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
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


def _meta(folder: Path) -> dict[str, Any] | None:
    """An entry's record if the folder is a complete entry of ours (this format and version), else None."""
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None
    ours = isinstance(meta, dict) and meta.get("format") == FORMAT and meta.get("version") == VERSION
    return meta if ours and isinstance(meta.get("geometry"), dict) else None


_ENTRY_NAME = re.compile(r"^\d+px-crop[0-9.e+-]+-(bicubic|bilinear|nearest)-[0-9a-f]{16}$")


def _damaged(folder: Path) -> bool:
    """An entry of ours whose record cannot be read (named as we name entries, holding only what we
    write): replaced by the next build, removed by `clear`."""
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError:
        return False
    return bool(_ENTRY_NAME.match(folder.name)) and _meta(folder) is None and names <= {CROPS, META}


def _crops_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Hit:
    """A complete, checked entry: the crops (read-only memory map) and the errors of the images that
    failed."""

    path: Path
    crops: Any  # numpy.memmap (N, 3, S, S) uint8
    errors: dict[int, str]


def lookup(samples: list[Sample], prep: Preprocess, fp: str | None = None) -> Hit | None:
    """The entry for these samples and geometry, whole; None when there is none. A damaged one (wrong
    size or checksum) is removed, so the pass rebuilds it."""
    import numpy as np

    fp = fp or fingerprint(samples, prep)
    folder = cache_root() / entry_name(fp, prep)
    meta = _meta(folder)
    if meta is None or meta.get("fingerprint") != fp or meta.get("images") != len(samples):
        return None
    path = folder / CROPS
    size = prep.input_size
    try:
        whole = path.stat().st_size == needed_bytes(len(samples), prep)
        whole = whole and _crops_sha256(path) == meta.get("crops_sha256")
    except OSError:
        whole = False
    if not whole:
        _remove(folder)
        return None
    crops = np.memmap(path, dtype=np.uint8, mode="r", shape=(len(samples), 3, size, size))
    errors = _errors(meta.get("errors"), crops)
    if errors is None:  # a map the checked crops do not bear out: not believed, the entry is rebuilt
        del crops
        _remove(folder)
        return None
    return Hit(folder, crops, errors)


def _errors(found: Any, crops: Any) -> dict[int, str] | None:
    """The entry's map of unreadable images, believed only where the crops (whose sha256 was checked)
    bear it out: each index in range and its crop the blank one a failed image gets. None otherwise."""
    if not isinstance(found, dict):
        return None
    errors: dict[int, str] = {}
    for k, v in found.items():
        if not (isinstance(k, str) and k.isdigit() and isinstance(v, str) and v and len(v) <= 1000):
            return None
        i = int(k)
        if i >= len(crops) or crops[i].any():
            return None
        errors[i] = v
    return errors


class Writer:
    """Builds an entry in a hidden, locked folder during a pass; `commit` renames it into place. Every
    failure is an OSError, which the caller turns into an uncached pass."""

    def __init__(self, dataset_root: str, samples: list[Sample], prep: Preprocess, fp: str) -> None:
        root = cache_root()
        sweep_builds()
        self.final = root / entry_name(fp, prep)
        self.tmp = root / f".{self.final.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir(parents=True)
        self._lock = self._fd = -1
        try:
            # the marker appears already locked (made under another name, locked, renamed)
            self._lock = os.open(self.tmp / ".building-making", os.O_RDWR | os.O_CREAT, 0o600)
            _lock_fd(self._lock)
            os.replace(self.tmp / ".building-making", self.tmp / BUILDING)
            self._fd = os.open(self.tmp / CROPS, os.O_RDWR | os.O_CREAT, 0o644)
            self.size = needed_bytes(len(samples), prep)
            self.row = 3 * prep.input_size * prep.input_size
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(self._fd, 0, self.size)  # the space, reserved now: ENOSPC here, not later
        except BaseException:
            self.abort()
            raise
        self.meta = {
            "format": FORMAT,
            "version": VERSION,
            "fingerprint": fp,
            "dataset": dataset_root,
            "images": len(samples),
            "geometry": {
                "input_size": prep.input_size,
                "crop_pct": prep.crop_pct,
                "interpolation": prep.interpolation,
            },
            "decoders": _decoders(),
        }
        self.errors: dict[int, str] = {}
        self.written = 0

    def put(self, idx: Any, x: Any, errors: list[str]) -> None:
        """A batch of crops (uint8 tensor, on the CPU) at their dataset indices, with their errors."""
        index = idx.tolist()
        data = x.contiguous().numpy()
        for k, i in enumerate(index):
            os.pwrite(self._fd, data[k].tobytes(), i * self.row)
            if errors[k]:
                self.errors[i] = errors[k]
        self.written += len(index)

    def commit(self) -> Path | None:
        """Into place if every image was written; the entry's folder, or None when it was incomplete."""
        if self.written != self.meta["images"]:
            self.abort()
            return None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        meta = {**self.meta, "errors": {str(k): v for k, v in sorted(self.errors.items())}}
        meta["crops_sha256"] = _crops_sha256(self.tmp / CROPS)
        meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        (self.tmp / META).write_text(json.dumps(meta, indent=1) + "\n")
        (self.tmp / BUILDING).unlink()
        theirs = _meta(self.final)
        if theirs is not None and theirs.get("crops_sha256") == meta["crops_sha256"]:
            self.abort()  # another run finished the same entry first, with the same crops: keep theirs
            return self.final
        _remove(self.final)  # a damaged or older entry of ours under this name, never anything else
        self.tmp.rename(self.final)
        self._close_lock()
        return self.final

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._close_lock()

    def _close_lock(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1


def _lock_fd(fd: int) -> None:
    try:
        import fcntl
    except ImportError:
        return
    fcntl.flock(fd, fcntl.LOCK_EX)


def _building(folder: Path) -> bool | None:
    """For a hidden build folder of ours: True while its builder lives, False once it died; None when
    the folder is not one of ours."""
    mark = folder / BUILDING
    if not (folder.name.startswith(".") and ".partial-" in folder.name and mark.is_file()):
        return None
    with flock(mark, wait=False) as free:
        return not free


def _remove(folder: Path) -> None:
    """Remove an entry folder of ours (complete, or a dead build); anything else is left alone."""
    if folder.is_symlink() or not folder.is_dir():
        return
    if _meta(folder) is not None or _building(folder) is False or _damaged(folder):
        shutil.rmtree(folder, ignore_errors=True)


def sweep_builds() -> None:
    """Remove the build folders that killed runs left behind."""
    try:
        folders = list(cache_root().iterdir())
    except OSError:
        return
    for folder in folders:
        if not folder.is_symlink() and folder.is_dir() and _building(folder) is False:
            shutil.rmtree(folder, ignore_errors=True)


# --- `s2mlp cache list / clear` ------------------------------------------------------------------------


def entries() -> list[dict[str, Any]]:
    """Every entry of ours, complete or being built, with its size on disk; other folders are not ours."""
    root = cache_root()
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.is_symlink() or not folder.is_dir():
            continue
        meta, building, damaged = _meta(folder), _building(folder), _damaged(folder)
        if meta is None and building is None and not damaged:
            continue
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        row: dict[str, Any] = {"name": folder.name, "path": str(folder), "bytes": size}
        if meta is not None:
            g = meta["geometry"]
            row.update(
                status="complete",
                dataset=meta.get("dataset"),
                images=meta.get("images"),
                geometry=f"{g.get('input_size')}px crop {g.get('crop_pct'):g} {g.get('interpolation')}",
                skipped=len(meta.get("errors") or {}),
                created=meta.get("created"),
            )
        else:
            status = "damaged (rebuilt when used)" if damaged else None
            status = status or ("building (another run)" if building else "interrupted build")
            row.update(status=status, dataset=None, images=None, geometry=None)
        found.append(row)
    return found


def clear(names: list[str] | None = None) -> list[dict[str, Any]]:
    """Remove the named entries (all when None); returns what was removed. Unknown names raise; an entry
    another run is building is never removed."""
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
    removed = []
    for e in chosen:
        folder = Path(e["path"])
        if _building(folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(e)
    return removed
