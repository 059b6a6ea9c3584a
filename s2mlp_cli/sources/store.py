"""Our local store of weights (`S2MLP_HOME/weights/<variant>/`): files imported by hand, converted and
recorded with their hash, and the Hub source the user chose for the variant.

An import is one atomic step as far as any reader sees: the converted file is written under its own
hash's name, then `source.json` is replaced to name it, then older files go. A kill at any point leaves
the previous import (or none) in use; concurrent imports take turns (a per-variant flock), and the last
one is the source. Readers take no lock: a file that vanished because an import replaced the record is
looked up again once. The conversion itself (reading a checkpoint into tensors) is the caller's: this
module writes no tensors and imports no torch.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from s2mlp_cli.errors import HubError
from s2mlp_cli.files import atomic_path, file_sha256, flock, scratch, sized_sha256
from s2mlp_cli.sources.choice import Source, gone_error, hub_source, imported_file, read_record
from s2mlp_cli.sources.places import discard, variant_dir
from s2mlp_cli.zoo import Card


@dataclass(frozen=True)
class Pulled:
    """A verified weights file on disk, and how we know it is the right one."""

    variant: str
    path: str
    source: str  # "ORG/NAME@REV/FILE" or "imported from FILE"
    sha256: str
    verified: str  # what the bytes were checked against
    size: int
    cached: bool  # True when no download was needed
    origin: str = "card"  # "given" (named by the caller), "pulled" (remembered from s2mlp pull), "card"
    pin: str = ""  # whether the card's sha256 pin held for a Hub file, and if not why not

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def variant_lock(card: Card) -> Iterator[None]:
    """Imports (and remembering a Hub source) of one variant, one at a time across processes."""
    folder = variant_dir(card.name)
    folder.mkdir(parents=True, exist_ok=True)
    with flock(folder / ".lock", wait=True):
        yield


def _collect(card: Card, keep: Path | None) -> None:
    """Under the variant's lock: delete imported files other than `keep` and temporary files left by a
    killed import."""
    for p in variant_dir(card.name).iterdir():
        stale_tmp = p.name.startswith(".") and p.name.endswith(".tmp")
        if (p.suffix == ".safetensors" and p != keep) or stale_tmp:
            discard(p)


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    with atomic_path(folder / "source.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


def remember(card: Card, src: Source) -> None:
    """A Hub source the user named becomes the variant's source; the card's own source clears it.
    Either way an imported file stops being the source and is deleted."""
    folder = variant_dir(card.name)
    own = hub_source(card)
    mine = own is not None and src.overrides() == own.overrides()
    if mine and not folder.is_dir():
        return
    folder.mkdir(parents=True, exist_ok=True)
    with variant_lock(card):
        if mine:
            discard(folder / "source.json")
        else:
            now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            _write_record(folder, {"kind": "hub", "variant": card.name, **src.overrides(), "pulled_at": now})
        _collect(card, keep=None)


def check_import_source(card: Card, source: Path, sha256: str | None) -> tuple[str, str | None]:
    """A hand-downloaded file's sha256, checked against `sha256` (or the card's pin for a variant with
    no Hub repository) when there is one; returns (its sha256, what it was checked against)."""
    if not source.is_file():
        raise HubError(f"{source}: no such file")
    source_sha = file_sha256(source)
    expected = sha256 or (card.weights.sha256 if not card.weights.repo else None)
    if expected and source_sha != expected.lower():
        raise HubError(
            f"{source} is not the expected {card.name} checkpoint: sha256 {source_sha[:16]}…, expected "
            f"{expected.lower()[:16]}…; download it again"
            + (f" from {card.weights.urls[0]}" if card.weights.urls else "")
        )
    return source_sha, ("given sha256" if sha256 else ("card sha256 pin" if expected else None))


def commit_import(
    card: Card, source: Path, source_sha: str, against: str | None, write: Callable[[Path], None]
) -> Pulled:
    """Store a converted import: `write(path)` writes the safetensors file at `path` (in a scratch folder
    of ours); then, under the variant's lock, it is copied in under its hash's name and recorded as the
    variant's source. The same checkpoint imported twice gives the same file and hash."""
    folder = variant_dir(card.name)
    meta = {"kind": "import", "variant": card.name, "source": source.name, "source_sha256": source_sha}
    with scratch("import") as work:
        converted = work / "converted.safetensors"
        write(converted)
        sha = file_sha256(converted)
        with variant_lock(card):
            target = folder / f"{sha[:16]}.safetensors"
            with atomic_path(target) as tmp:  # named by its content: replacing it changes nothing
                shutil.copyfile(converted, tmp)
            now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            _write_record(folder, {**meta, "sha256": sha, "file": target.name, "imported_at": now})
            _collect(card, keep=target)
    return Pulled(
        card.name,
        str(target),
        f"imported from {source.name}",
        sha,
        against or "strict load only",
        target.stat().st_size,
        cached=False,
        origin="given",
    )


def verify_imported(card: Card, retries: int = 3) -> Pulled:
    """The imported file, re-hashed against the hash recorded at import; one that changed is removed.
    Imports finishing meanwhile (each replaces the record and removes the file it named) are followed,
    `retries` times."""
    record_path = variant_dir(card.name) / "source.json"
    try:
        record = json.loads(record_path.read_text())
        expected = record["sha256"]
        target = imported_file(card, record)
        sha, size = sized_sha256(target)
    except FileNotFoundError:
        if retries:
            return verify_imported(card, retries - 1)
        raise gone_error(card) from None
    except (OSError, ValueError, KeyError, TypeError):
        with variant_lock(card):
            discard(record_path)
            _collect(card, keep=None)
        raise HubError(
            f"{card.name}: the imported weights had no readable record, so they were removed",
            next_step="import",
            variant=card.name,
            advice="import the file again",
        ) from None
    if sha != expected:
        with variant_lock(card):
            replaced = read_record(card) != record  # another import finished meanwhile
            if not replaced:
                discard(target, record_path)
        if replaced and retries:
            return verify_imported(card, retries - 1)  # check that one instead
        raise HubError(
            f"{card.name}: the imported weights changed on disk since they were imported "
            f"(sha256 {sha[:16]}…, recorded {expected[:16]}…) and were removed",
            next_step="import",
            variant=card.name,
            advice="import the file again",
        )
    return Pulled(
        card.name,
        str(target),
        f"imported from {record.get('source', '?')}",
        sha,
        "hash recorded at import",
        size,
        cached=True,
        origin="pulled",
    )
