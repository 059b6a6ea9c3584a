"""The one place that decides where a variant's weights come from and hands back a verified file, for
`create_model(pretrained=True)`, eval, bench and pull alike. Every result says which source it used
(`Pulled.origin`) and whether a pin held.

Every use re-checks the bytes: a Hub file against the card's sha256 pin, else against the ETag the Hub
sent (the blob's name in the cache: a sha256 for LFS files, a git blob sha1 otherwise); an imported file
against the hash recorded when it was imported. A download lands in a scratch folder of ours and is
verified there; only then do we place it in the Hugging Face cache layout ourselves (blob, snapshot
link, ref), under names we checked, so nothing a server says becomes a path. A cached snapshot that
points outside the cache is treated as absent: its link is removed and the file fetched again. Whether
the file fits the model is checked by the caller that reads it (`s2mlp_cli.api`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from s2mlp_cli.errors import HubError
from s2mlp_cli.files import file_sha256, git_blob_sha1, inside, scratch
from s2mlp_cli.sources.choice import Source, cached_path, choose, offline_error
from s2mlp_cli.sources.download import Fetched, Meta, fetch, head
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
    if found is not None and not inside(found, hub_cache()):
        discard(found)  # the snapshot link (inside the cache), never what it points at
        found = None
    if found is not None:
        pulled = _verify_cached(card, src, found)
    elif offline():
        raise offline_error(card, src, {"repo": repo, "revision": revision, "filename": filename})
    else:
        pulled = _download(card, src, progress)
    return replace(pulled, origin=choice.origin, pin=_pin(card, src))


def _pin(card: Card, src: Source) -> str:
    if src.sha256:
        return "card sha256 pin"
    if card.weights.sha256 and src.repo == card.weights.repo:
        return "none: another file than the card's pinned one"
    if src.repo != card.weights.repo:
        return "none: a repository the card does not pin"
    return "none: the card pins no sha256"


def _expected(src: Source, etag: str) -> tuple[str, str]:
    """What the bytes must hash to, and what that is."""
    if src.sha256:
        return src.sha256, "card sha256 pin"
    if HEX64.match(etag):
        return etag, "Hub ETag (sha256)"
    return etag, "Hub ETag (git blob sha1)"


def _download(card: Card, src: Source, progress: bool) -> Pulled:
    meta = head(src)  # one HEAD: its answer alone names the blob and the snapshot
    with scratch("download") as folder:
        fetched = fetch(src, meta, folder / "incoming", progress)
        expected, against = _expected(src, meta.etag)
        got = fetched.sha256 if HEX64.match(expected) else fetched.git_sha1
        if got != expected:
            raise HubError(
                f"{card.name}: {src} failed verification: its hash is {(got or fetched.sha256)[:16]}…, "
                f"{against} is {expected[:16]}…. The download was discarded and nothing entered the cache; "
                "run the command again to download it afresh"
            )
        path = _place(src, meta, fetched)
    return Pulled(card.name, str(path), str(src), fetched.sha256, against, fetched.size, cached=False)


def _place(src: Source, meta: Meta, fetched: Fetched) -> Path:
    """The verified file into the Hugging Face cache layout (blobs/ETag, snapshots/COMMIT/FILE, refs/REV),
    every name checked to stay inside the repository's folder."""
    repo_dir = hub_cache() / f"models--{src.repo.replace('/', '--')}"
    blob = repo_dir / "blobs" / meta.etag
    snapshot = repo_dir / "snapshots" / meta.commit / src.filename
    ref = repo_dir / "refs" / (src.revision or "main")
    for path in (blob, snapshot, ref):
        if not Path(os.path.normpath(path)).is_relative_to(repo_dir):
            raise HubError(f"{src}: refusing a cache path outside {repo_dir}: {path}")
    blob.parent.mkdir(parents=True, exist_ok=True)
    tmp = blob.with_name(f".{blob.name}.s2mlp-tmp")
    shutil.copyfile(fetched.path, tmp)  # the scratch folder may be on another disk than the cache
    os.replace(tmp, blob)
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    link = snapshot.with_name(f".{snapshot.name}.s2mlp-tmp")
    link.unlink(missing_ok=True)
    link.symlink_to(os.path.relpath(blob, snapshot.parent))
    os.replace(link, snapshot)
    if (src.revision or "main") != meta.commit:
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp_ref = ref.with_name(f".{ref.name}.s2mlp-tmp")
        tmp_ref.write_text(meta.commit)
        os.replace(tmp_ref, ref)
    return snapshot


def _verify_cached(card: Card, src: Source, path: Path) -> Pulled:
    blob = path.resolve()
    etag = blob.name
    if not (HEX64.match(etag) or HEX40.match(etag)):
        discard(path, blob)
        raise HubError(
            f"{src}: the cached file has no usable checksum (ETag {etag!r}), so it cannot be "
            "verified; it was removed from the cache"
        )
    expected, against = _expected(src, etag)
    sha = file_sha256(blob)
    got = sha if HEX64.match(expected) else git_blob_sha1(blob)
    if got != expected:
        discard(path, blob)
        raise HubError(
            f"{card.name}: {src} failed verification: its hash is {got[:16]}…, {against} is "
            f"{expected[:16]}…. The corrupt file was deleted from the cache; run the command again to "
            "download it afresh"
        )
    return Pulled(card.name, str(path), str(src), sha, against, blob.stat().st_size, cached=True)
