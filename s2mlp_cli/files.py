"""Files we write: atomically (a failure never leaves a half-written one), hashed, locked, and only
inside the folders we own."""

from __future__ import annotations

import glob
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def umask() -> int:
    """The process's umask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """A temporary path beside `target`, moved over it only when the block succeeds. The file gets the
    mode a plain `open()` would give it (0666 less the umask), not mkstemp's private 0600. A symlink is
    written through (its target is replaced), never replaced by a regular file."""
    target = Path(target)
    if target.is_symlink():
        target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def sweep_atomic(folder: Path, names: Iterable[str]) -> list[Path]:
    """Remove what `atomic_path` leaves when a process is killed mid-write (`.NAME.xxxx.tmp`) for the
    files `names` of a folder we own; the caller holds the folder's lock. Returns what it removed."""
    removed = []
    for name in names:
        for leftover in folder.glob(f".{glob.escape(name)}.*.tmp"):
            if leftover.is_file() and not leftover.is_symlink():
                leftover.unlink(missing_ok=True)
                removed.append(leftover)
    return removed


def write_text_atomic(target: str | Path, text: str) -> None:
    """UTF-8; a name that is not (a path's undecodable bytes, kept as surrogates) is written back as the
    bytes it was, so a result about such a folder is never lost."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")


def s2mlp_home() -> Path:
    """Our own files (imported weights, the crop cache): `S2MLP_HOME`, default ~/.cache/s2mlp."""
    if env := os.environ.get("S2MLP_HOME"):
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "s2mlp"


def file_sha256(path: str | Path) -> str:
    return sized_sha256(path)[0]


def sized_sha256(path: str | Path) -> tuple[str, int]:
    """The file's sha256 and size, both from one open file (a rename or removal meanwhile cannot pair
    one file's hash with another's size, or fail between the two)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest(), size


def git_blob_sha1(data: bytes | Path) -> str:
    """git's hash of a blob (what the Hub sends as the ETag of a file not in LFS), of bytes or a file."""
    if isinstance(data, bytes):
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    h = hashlib.sha1(f"blob {data.stat().st_size}\0".encode())
    with open(data, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def inside(path: Path, root: Path) -> bool:
    """Whether `path`, every link followed, lies under `root`."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


@contextmanager
def flock(lock: Path, wait: bool) -> Iterator[bool]:
    """Hold an exclusive flock on `lock` for the block. `wait=True` creates the file and waits its turn;
    `wait=False` (huggingface_hub's per-blob lock, held while it downloads) never creates it and yields
    False when another process holds it. The kernel drops the lock of a killed process. Without flock
    (Windows) the block runs unlocked when it would wait, and is told False when it would not."""
    try:
        import fcntl
    except ImportError:
        yield wait
        return
    try:
        fd = os.open(lock, os.O_RDWR | (os.O_CREAT if wait else 0), 0o666)
    except FileNotFoundError:
        yield True  # nobody has ever locked it
        return
    except OSError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError:
        os.close(fd)
        yield False
        return
    try:
        yield True
    finally:
        os.close(fd)  # releases the lock


SCRATCH_MARK = ".s2mlp-scratch"  # names a folder of ours; only such folders are ever swept


@contextmanager
def scratch(kind: str) -> Iterator[Path]:
    """A private temporary folder under `S2MLP_HOME/tmp`, removed when the block ends however it ends.

    The folder holds a lock its process keeps for the block's life; a process killed with SIGKILL
    leaves its folder behind, and the next `scratch` (or `sweep_scratch`) of any run removes every folder
    whose lock nobody holds. Nothing we download or convert is ever written to /tmp."""
    import shutil
    import uuid

    root = s2mlp_home() / "tmp"
    sweep_scratch()
    folder = root / f"{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True, mode=0o700)
    fd = -1
    try:
        # the mark appears already locked (made under another name, locked, then renamed), so a sweep
        # running meanwhile never finds it free
        fd = os.open(folder / ".mark-making", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:
            pass
        os.replace(folder / ".mark-making", folder / SCRATCH_MARK)
        yield folder
    finally:
        if fd >= 0:
            os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)


def sweep_scratch() -> list[Path]:
    """Remove the scratch folders that killed runs left (marked by us, lock free); returns them."""
    import shutil

    removed = []
    root = s2mlp_home() / "tmp"
    try:
        folders = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return removed
    for folder in folders:
        mark = folder / SCRATCH_MARK
        if not mark.is_file():
            continue  # not ours, or still being made: never touched
        with flock(mark, wait=False) as free:
            if free:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """A .safetensors file's `__metadata__` (empty for other files or none); read from its header alone."""
    import json

    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 2 <= size <= 100_000_000:
                return {}
            header = json.loads(f.read(size))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
