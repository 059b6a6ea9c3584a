"""Writing result and weights files so that a failure never leaves a half-written one; where ours live."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
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
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def s2mlp_home() -> Path:
    """Our own files (imported weights, the crop cache): `S2MLP_HOME`, default ~/.cache/s2mlp."""
    if env := os.environ.get("S2MLP_HOME"):
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "s2mlp"
