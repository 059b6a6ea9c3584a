"""The one place that decides where a variant's weights come from and hands back a verified file, for
`create_model(pretrained=True)`, eval, bench and pull alike. Every result says which source it used
(`Pulled.origin`).

Every use re-checks the bytes: a Hub file against the card's sha256 pin, else against the ETag the Hub
sent (the blob's name in the cache: a sha256 for LFS files, a git blob sha1 otherwise); an imported file
against the hash recorded when it was imported. A file that fails is deleted and never used. Whether the
file fits the model is checked by the caller that reads it (`s2mlp_cli.api`).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from s2mlp_cli.errors import HubError
from s2mlp_cli.files import file_sha256, inside
from s2mlp_cli.sources.choice import Source, cached_path, choose, offline_error
from s2mlp_cli.sources.download import download
from s2mlp_cli.sources.places import HEX40, HEX64, discard, hub_cache, offline
from s2mlp_cli.sources.store import Pulled, verify_imported
from s2mlp_cli.zoo import Card


def resolve(
    card: Card,
    weights: str | Path | None = None,
    repo: str | None = None,
    revision: str | None = None,
    filename: str | None = None,
    *,
    refresh: bool = False,
    progress: bool = True,
) -> Pulled:
    """The variant's verified weights file, from where `choose` says; downloaded when needed.

    A cached Hub file is used without asking the Hub (so a second run works with the Hub down);
    `refresh` asks whether the revision moved. Raises HubError / WeightsUnavailableError.
    """
    choice = choose(card, weights, repo, revision, filename)
    if choice.kind == "file":
        path = choice.path
        if not path.is_file():
            raise HubError(f"{card.name}: weights file {path} does not exist")
        verified = "loaded strictly by the caller"
        return Pulled(
            card.name, str(path), str(path), file_sha256(path), verified, path.stat().st_size, True, "given"
        )
    if choice.kind == "import":
        return verify_imported(card)
    src = choice.source
    found = None if refresh else cached_path(card, **src.overrides())
    if found is not None:
        pulled = _verify_hub_file(card, src, found, cached=True)
    elif offline():
        raise offline_error(card, src, {"repo": repo, "revision": revision, "filename": filename})
    else:
        pulled = _verify_hub_file(card, src, download(src, progress), cached=False)
    return replace(pulled, origin=choice.origin)


def _git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _verify_hub_file(card: Card, src: Source, path: Path, cached: bool) -> Pulled:
    if not inside(path, hub_cache()):  # never read, and never delete, outside the cache
        raise HubError(
            f"{src}: the cached file resolves outside the cache ({path.resolve()}); it was not used or "
            "touched (check HF_ENDPOINT and the cache)"
        )
    blob = path.resolve()
    etag = blob.name
    sha = file_sha256(blob)
    if src.sha256:
        expected, against, got = src.sha256, "card sha256 pin", sha
    elif HEX64.match(etag):
        expected, against, got = etag, "Hub ETag (sha256)", sha
    elif HEX40.match(etag):
        expected, against, got = etag, "Hub ETag (git blob sha1)", _git_blob_sha1(blob)
    else:
        discard(path, blob)
        raise HubError(
            f"{src}: the Hub sent no usable checksum (ETag {etag!r}), so the file cannot be "
            "verified; it was removed from the cache"
        )
    if got != expected:
        discard(path, blob)
        raise HubError(
            f"{card.name}: {src} failed verification: its hash is {got[:16]}…, {against} is "
            f"{expected[:16]}…. The corrupt file was deleted from the cache; run the command again to "
            "download it afresh"
        )
    return Pulled(card.name, str(path), str(src), sha, against, blob.stat().st_size, cached)
