"""Weights: fetched from the Hugging Face Hub or imported from a file, always verified before use.

Two places hold weights:
- the standard Hugging Face cache (`HF_HUB_CACHE`, else `HF_HOME/hub`), filled by `hf_hub_download`;
- our own folder (`S2MLP_HOME/weights/<variant>/`, default `~/.cache/s2mlp`) for official checkpoints that
  are not on the Hub (ViP on Google Drive, GFNet on Tsinghua Cloud). `import_file` checks such a file,
  converts it to safetensors and records its hash; from then on the variant counts as pulled.

`resolve` is the one place that decides where a variant's weights come from, for `create_model(
pretrained=True)`, eval, bench and pull alike: a file the caller names > the source the user last pulled
or imported for that variant (remembered in `S2MLP_HOME/weights/<variant>/source.json`) > the card's
own source. Every result says which (`Pulled.origin`).

Every use re-checks the bytes: a Hub file against the card's sha256 pin, else against the ETag the Hub
sent (the blob's name in the cache: a sha256 for LFS files, a git blob sha1 otherwise); an imported file
against the hash recorded when it was imported. A file that fails is deleted and never used.

No torch at import: `s2mlp list` asks `cached_path` whether a variant is pulled.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from s2mlp_cli.errors import S2MLPError, WeightsUnavailableError
from s2mlp_cli.files import atomic_path, s2mlp_home
from s2mlp_cli.zoo import Card

DEFAULT_ENDPOINT = "https://huggingface.co"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
HEX40 = re.compile(r"^[0-9a-f]{40}$")  # a full commit hash (or a git blob sha1)
# huggingface_hub's rule for a repository id: OWNER/NAME of letters, digits, - _ .
REPO_ID = re.compile(r"^[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?/[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?$")
_TRUE = {"1", "true", "yes", "on"}
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


class HubError(S2MLPError):
    """A download that failed, or a file that did not verify."""


@dataclass(frozen=True)
class Source:
    """Where a variant's weights come from on the Hub."""

    repo: str
    filename: str
    revision: str | None = None
    sha256: str | None = None  # the card's pin, when the repo is the card's own

    def __str__(self) -> str:
        return f"{self.repo}@{self.revision or 'main'}/{self.filename}"


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- where things live (read from the environment at call time, so tests and users can move them) ----


def hub_cache() -> Path:
    if env := os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env).expanduser()
    return _hf_home() / "hub"


def _hf_home() -> Path:
    if env := os.environ.get("HF_HOME"):
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "huggingface"


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


# --- sources -------------------------------------------------------------------------------------------


def hub_source(
    card: Card, repo: str | None = None, revision: str | None = None, filename: str | None = None
) -> Source | None:
    """The Hub file for `card` with any overrides; None when the card has no Hub weights and none is given."""
    for name, value in (("repo", repo), ("filename", filename), ("revision", revision)):
        if value is not None and not value.strip():
            raise S2MLPError(f"{name} is empty: name one, or leave it out for the card's", param=name)
    w = card.weights
    if repo is None and not (w.published and w.repo):
        return None
    own = repo is None or repo == w.repo
    pinned = own and revision in (None, w.revision) and filename in (None, w.filename)
    return Source(
        repo=repo or w.repo,
        filename=filename or w.filename or "model.safetensors",
        revision=revision or (w.revision if own else None),
        # the pin holds for the card's own file only
        sha256=w.sha256 if pinned else None,
    )


def no_weights_error(card: Card) -> WeightsUnavailableError:
    """Why `card` has no weights to use; the CLI adds the commands that fix it (`next_step`)."""
    w = card.weights
    if not w.published:
        why = f"no pretrained weights are published for {card.name}" + (f" ({w.note})" if w.note else "")
        return WeightsUnavailableError(
            why,
            next_step="own_weights",
            variant=card.name,
            advice="use your own: a Hub repository, a checkpoint file, or an imported file",
        )
    where = f" from {w.urls[0]}" if w.urls else ""
    return WeightsUnavailableError(
        f"{card.name}'s official weights are not on the Hugging Face Hub: download them by hand{where}",
        next_step="import",
        variant=card.name,
        advice="then import the file",
    )


# --- choosing the source -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """Where a variant's weights will come from, decided without reading them."""

    variant: str
    kind: str  # "file" (a path the caller gave), "import" (our converted copy), "hub"
    origin: str  # "given", "pulled" (remembered), "card"
    path: Path | None = None
    source: Source | None = None


def choose(
    card: Card,
    weights: str | Path | None = None,
    repo: str | None = None,
    revision: str | None = None,
    filename: str | None = None,
) -> Choice:
    """A file the caller names > the source the user pulled or imported > the card's. No I/O but a
    small JSON record; raises WeightsUnavailableError when there is nothing to use."""
    if weights is not None:
        return Choice(card.name, "file", "given", path=Path(weights).expanduser())
    if repo or revision or filename:
        src = hub_source(card, repo, revision, filename)
        if src is None:
            given = "revision" if revision else "filename"
            raise S2MLPError(
                f"{card.name} has no Hub repository of its own, so --{given} needs --repo OWNER/NAME too",
                param=given,
            )
        return Choice(card.name, "hub", "given", source=src)
    record = _record(card)
    if record.get("kind") == "import":
        return Choice(card.name, "import", "pulled", path=_imported_file(card))
    if record.get("kind") == "hub":
        src = hub_source(card, record["repo"], record.get("revision"), record.get("filename"))
        return Choice(card.name, "hub", "pulled", source=src)
    if (src := hub_source(card)) is not None:
        return Choice(card.name, "hub", "card", source=src)
    raise no_weights_error(card)


def precheck(card: Card, weights: str | Path | None = None) -> S2MLPError | None:
    """What would stop `resolve` before any download or read; None when nothing does. Reads no weights,
    imports no torch, asks no network: the CLI runs it before anything heavy."""
    try:
        choice = choose(card, weights)
    except WeightsUnavailableError as e:
        return e
    if choice.kind == "file" and not choice.path.is_file():
        return S2MLPError(f"weights file {choice.path} does not exist", param="weights")
    if choice.kind == "import" and not choice.path.is_file():
        return HubError(
            f"{card.name}: the imported weights are gone from {choice.path}",
            next_step="import",
            variant=card.name,
            advice="import the file again",
        )
    if choice.kind == "hub" and offline() and cached_path(card, **_overrides(choice.source)) is None:
        return HubError(
            f"{card.name}: {choice.source} is not in the cache and HF_HUB_OFFLINE is set",
            next_step="pull_online",
            variant=card.name,
            advice="pull it while online first",
        )
    return None


def _overrides(src: Source) -> dict[str, str | None]:
    return {"repo": src.repo, "revision": src.revision, "filename": src.filename}


def _record(card: Card) -> dict[str, Any]:
    """The remembered source: {"kind": "import", ...} or {"kind": "hub", "repo": ...}; {} when none."""
    try:
        record = json.loads((_imported_dir(card) / "source.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict):
        return {}
    if "kind" not in record and "sha256" in record:  # written before sources were remembered
        record["kind"] = "import"
    if record.get("kind") == "hub" and not isinstance(record.get("repo"), str):
        return {}
    return record


def _remember(card: Card, src: Source) -> None:
    """`s2mlp pull VARIANT --repo ...` makes that the variant's source; the card's own source clears it.
    Either way an imported file stops being the source and is deleted."""
    folder = _imported_dir(card)
    own = hub_source(card)
    mine = own is not None and _overrides(src) == _overrides(own)
    if mine and not folder.is_dir():
        return
    folder.mkdir(parents=True, exist_ok=True)
    with _variant_lock(card):
        if mine:
            _discard(folder / "source.json")
        else:
            record = {
                "kind": "hub",
                "variant": card.name,
                "repo": src.repo,
                "revision": src.revision,
                "filename": src.filename,
                "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            with atomic_path(folder / "source.json") as tmp:
                tmp.write_text(json.dumps(record, indent=2) + "\n")
        _collect(card, keep=None)


# --- the Hub -----------------------------------------------------------------------------------------


def cached_path(
    card: Card, repo: str | None = None, revision: str | None = None, filename: str | None = None
) -> Path | None:
    """The Hub file for the variant (with overrides) if it is in the cache, unverified; else None."""
    src = hub_source(card, repo, revision, filename)
    if src is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(src.repo, src.filename, cache_dir=hub_cache(), revision=src.revision)
    return Path(found) if isinstance(found, str) else None


def resolve(
    card: Card,
    weights: str | Path | None = None,
    repo: str | None = None,
    revision: str | None = None,
    filename: str | None = None,
    *,
    refresh: bool = False,
    progress: bool = True,
    check_fit: bool = True,
    remember: bool = False,
) -> Pulled:
    """The variant's verified weights file, from where `choose` says; downloaded when needed.

    A cached Hub file is used without asking the Hub (so a second run works with the Hub down);
    `refresh` asks whether the revision moved. `check_fit=False` skips the strict trial load, for callers
    that load the file strictly right away (reading it once instead of twice). `remember=True` (what
    `s2mlp pull` does) makes a Hub source the caller named the variant's source from then on.
    Raises HubError / WeightsUnavailableError / WeightsError.
    """
    choice = choose(card, weights, repo, revision, filename)
    if choice.kind == "file":
        return _verify_given_file(card, choice.path, check_fit)
    if choice.kind == "import":
        return _verify_imported(card)
    src = choice.source
    found = None if refresh else cached_path(card, **_overrides(src))
    if found is not None:
        pulled = _verify_hub_file(card, src, found, cached=True, check_fit=check_fit)
    elif offline():
        error = HubError(
            f"{card.name}: {src} is not in the cache ({hub_cache()}) and HF_HUB_OFFLINE is set",
            next_step="pull_online",
            variant=card.name,
            advice="pull it while online first",
        )
        error.pull_args = {"repo": repo, "revision": revision, "filename": filename}
        raise error
    else:
        path = _download(card, src, progress)
        pulled = _verify_hub_file(card, src, path, cached=False, check_fit=check_fit)
    if remember and choice.origin == "given":
        _remember(card, src)
    return replace(pulled, origin=choice.origin)


def pull(
    card: Card,
    repo: str | None = None,
    revision: str | None = None,
    filename: str | None = None,
    *,
    refresh: bool = False,
    progress: bool = True,
) -> Pulled:
    """What `s2mlp pull` does: resolve, check the fit, and remember a source the caller named."""
    return resolve(card, None, repo, revision, filename, refresh=refresh, progress=progress, remember=True)


def _verify_given_file(card: Card, path: Path, check_fit: bool) -> Pulled:
    if not path.is_file():
        raise HubError(f"{card.name}: weights file {path} does not exist")
    if check_fit:
        check_fits(card, path, path.name)
    return Pulled(
        card.name,
        str(path),
        str(path),
        file_sha256(path),
        "strict load" if check_fit else "loaded strictly by the caller",
        path.stat().st_size,
        cached=True,
        origin="given",
    )


def _download(card: Card, src: Source, progress: bool) -> Path:
    from huggingface_hub import hf_hub_download

    url = endpoint()
    check_reachable(url)
    kwargs: dict[str, Any] = {
        "revision": src.revision,
        "cache_dir": hub_cache(),
        "endpoint": url,
    }
    if progress and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
        kwargs["tqdm_class"] = _RichBar
    etag = None
    try:
        with quiet_hub_logger():
            etag = _check_etag(src, url)  # the client names the blob after the ETag: only plain hex may pass
            _drop_stale_partials(src)
            with _stall_guard(src, url):
                path = Path(hf_hub_download(src.repo, src.filename, **kwargs))
    except BaseException as e:
        if etag is not None:
            _drop_stale_partials(src, etag)  # this run's partial file too: nothing half-written stays
        if isinstance(e, Exception) and not isinstance(e, HubError):
            raise _download_error(e, src, url) from e
        raise
    return path  # `_verify_hub_file` checks where it resolves before anything reads it


def _download_error(e: Exception, src: Source, url: str) -> HubError:
    """One line for each way the client can fail."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(e, GatedRepoError):  # before RepositoryNotFoundError, its parent
        return HubError(
            f"{src.repo} is gated or private: accept its terms on the Hub, then log in "
            "(`hf auth login`) or set HF_TOKEN to a token that can read it"
        )
    if isinstance(e, RepositoryNotFoundError):
        return HubError(
            f"repository {src.repo} not found on {url} (if it is private, set HF_TOKEN; "
            "check the repository name)"
        )
    if isinstance(e, RevisionNotFoundError):
        return HubError(f"revision {src.revision!r} not found in {src.repo} (check the revision)")
    if isinstance(e, LocalEntryNotFoundError):  # before EntryNotFoundError, its parent: nothing reachable
        return HubError(f"could not reach the Hub at {url} to fetch {src}: {reason(e)}")
    if isinstance(e, EntryNotFoundError):
        return HubError(
            f"{src.filename} not found in {src.repo} at {src.revision or 'main'} (check the file name)"
        )
    if isinstance(e, HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status == 429:
            return HubError(
                f"the Hub at {url} is limiting requests (HTTP 429 Too Many Requests) for {src}; wait a few "
                "minutes and run it again (a token, HF_TOKEN, raises the limit)"
            )
        if isinstance(status, int) and status >= 500:
            return HubError(
                f"the Hub at {url} had a server error (HTTP {status}) serving {src}; nothing was kept, "
                "try again later"
            )
        return HubError(f"the Hub at {url} refused {src}: {reason(e)}")
    # transport errors after the client's retries, a short body, disk full, ...
    return HubError(
        f"downloading {src} failed ({type(e).__name__}: {reason(e)}); nothing was kept, run it again"
    )


def _check_etag(src: Source, url: str) -> str:
    """The file's ETag; refused unless a plain sha256 or git sha1: huggingface_hub uses the ETag as the
    blob's file name unchecked, so `../../x` would write (and our verification delete) outside the cache."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    meta = get_hf_file_metadata(hf_hub_url(src.repo, src.filename, revision=src.revision, endpoint=url))
    etag = meta.etag or ""
    if not etag:
        raise HubError(
            f"{src}: the Hub sent no ETag (the file's checksum), so the file could not be verified; refusing "
            "to download it (check HF_ENDPOINT)"
        )
    if not (_HEX64.match(etag) or HEX40.match(etag)):
        raise HubError(
            f"{src}: the Hub answered an ETag that is not a plain hex checksum ({etag[:48]!r}); refusing to "
            "download it (check HF_ENDPOINT)"
        )
    return etag


# A download that brings fewer than STALL_BYTES in any STALL_S seconds is given up: the client's read
# timeout catches silence, not a server that sends a byte every few seconds (days for a 100 MB file).
STALL_S = 30.0
STALL_BYTES = 64 * 1024


@contextmanager
def _stall_guard(src: Source, url: str) -> Iterator[None]:
    """Watch every response body the client reads while the block runs (httpx-based clients; older
    requests-based ones keep only their read timeout)."""
    try:
        from huggingface_hub.utils import get_session

        session = get_session()
        hooks = session.event_hooks["response"]
        base = sys.modules[type(session).__module__.partition(".")[0]].SyncByteStream
    except Exception:
        yield
        return

    class Guarded(base):
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __iter__(self) -> Iterator[bytes]:
            start, got = time.monotonic(), 0
            for chunk in self.inner:
                got += len(chunk)
                if (now := time.monotonic()) - start >= STALL_S:
                    if got < STALL_BYTES:
                        raise HubError(
                            f"the Hub at {url} sent {src} too slowly ({got:,} bytes in {now - start:.0f} s); "
                            "gave up and removed the partial file, run it again"
                        )
                    start, got = now, 0
                yield chunk

        def close(self) -> None:
            self.inner.close()

    def guard(response: Any) -> None:
        response.stream = Guarded(response.stream)

    hooks.append(guard)
    try:
        yield
    finally:
        hooks.remove(guard)


def _drop_stale_partials(src: Source, etag: str | None = None) -> None:
    """Delete the repository's half-downloaded blobs that no running download holds the lock of; with
    `etag`, that blob's only. A killed download leaves `<etag>.incomplete` (huggingface_hub 1.x, which
    resumes from it) or `<etag>.<random>.incomplete` (2.x, never reused); a later download starts afresh
    instead of resuming bytes of unknown provenance."""
    folder = hub_cache() / f"models--{src.repo.replace('/', '--')}"
    locks = hub_cache() / ".locks" / folder.name
    for partial in sorted((folder / "blobs").glob("*.incomplete")):
        name = partial.name.partition(".")[0]
        if not (_HEX64.match(name) or HEX40.match(name)) or (etag and name != etag):
            continue
        if not _inside(partial, hub_cache()):
            continue
        with _flock(locks / f"{name}.lock", wait=False) as free:
            if free:
                partial.unlink(missing_ok=True)


@contextmanager
def _flock(lock: Path, wait: bool) -> Iterator[bool]:
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


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def _check_inside_cache(src: Source, path: Path) -> None:
    """A cached file must resolve (through its snapshot symlink) to a blob inside the cache."""
    if not _inside(path, hub_cache()):
        raise HubError(
            f"{src}: the cached file resolves outside the cache ({path.resolve()}); it was not used or "
            "touched (check HF_ENDPOINT and the cache)"
        )


def reason(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def check_reachable(url: str) -> None:
    """Fail at once when nothing listens at the endpoint, instead of after the client's ~20 s of retries.

    Skipped behind a proxy, where a direct connection says nothing about reachability.
    """
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=10).close()
    except OSError as e:
        raise HubError(
            f"could not reach the Hub at {url} ({e.strerror or e}); check the connection or HF_ENDPOINT. "
            "Pulled variants work offline (HF_HUB_OFFLINE=1)"
        ) from e


class quiet_hub_logger:
    """huggingface_hub logs each retry as a warning; the progress bar and our errors say enough."""

    def __enter__(self) -> None:
        import logging

        self._logger = logging.getLogger("huggingface_hub")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)


class _RichBar:
    """The subset of tqdm that huggingface_hub drives, drawn as a rich progress bar on stderr."""

    def __init__(
        self, *args: Any, total: float | None = None, initial: float = 0, desc: str = "", **kwargs: Any
    ) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        from s2mlp_cli.console import err

        self.n = initial
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        )
        self._task = self._progress.add_task(desc or "download", total=total, completed=initial)
        self._progress.start()

    def update(self, n: float = 1) -> None:
        self.n += n
        self._progress.update(self._task, advance=n)

    def close(self) -> None:
        self._progress.stop()

    def __enter__(self) -> _RichBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self._progress.update(self._task, description=desc or "")

    def refresh(self) -> None:
        self._progress.refresh()


# --- verification --------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _verify_hub_file(card: Card, src: Source, path: Path, cached: bool, check_fit: bool = True) -> Pulled:
    _check_inside_cache(src, path)  # never read, and never delete, outside the cache
    blob = path.resolve()
    etag = blob.name
    sha = file_sha256(blob)
    if src.sha256:
        expected, against, got = src.sha256, "card sha256 pin", sha
    elif _HEX64.match(etag):
        expected, against, got = etag, "Hub ETag (sha256)", sha
    elif HEX40.match(etag):
        expected, against, got = etag, "Hub ETag (git blob sha1)", _git_blob_sha1(blob)
    else:
        _discard(path, blob)
        raise HubError(
            f"{src}: the Hub sent no usable checksum (ETag {etag!r}), so the file cannot be "
            "verified; it was removed from the cache"
        )
    if got != expected:
        _discard(path, blob)
        raise HubError(
            f"{card.name}: {src} failed verification: its hash is {got[:16]}…, {against} is "
            f"{expected[:16]}…. The corrupt file was deleted from the cache; run the command again to "
            "download it afresh"
        )
    if check_fit:
        check_fits(card, path, str(src))
    return Pulled(card.name, str(path), str(src), sha, against, blob.stat().st_size, cached)


def _discard(*paths: Path) -> None:
    """Delete files of ours: only inside the Hub cache or S2MLP_HOME, whatever a path resolves to."""
    for p in paths:
        if not (_inside(p, hub_cache()) or _inside(p, s2mlp_home())):
            continue
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def check_fits(card: Card, path: Path, what: str) -> dict:
    from s2mlp_cli.weights import check_fits as _check_fits  # torch, only when a file is checked

    return _check_fits(card, path, what)


# --- imported files --------------------------------------------------------------------------------------


def _imported_dir(card: Card) -> Path:
    return s2mlp_home() / "weights" / card.name


def _imported_file(card: Card, record: dict[str, Any] | None = None) -> Path:
    """The imported file the record names: `<sha256 prefix>.safetensors`, or `model.safetensors` for an
    import made before files were named by their hash."""
    record = _record(card) if record is None else record
    name = record.get("file")
    if not (isinstance(name, str) and re.fullmatch(r"[0-9a-f]{16,64}\.safetensors", name)):
        name = "model.safetensors"
    return _imported_dir(card) / name


@contextmanager
def _variant_lock(card: Card) -> Iterator[None]:
    """Imports (and `pull --repo`) of one variant, one at a time across processes."""
    folder = _imported_dir(card)
    folder.mkdir(parents=True, exist_ok=True)
    with _flock(folder / ".lock", wait=True):
        yield


def _collect(card: Card, keep: Path | None) -> None:
    """Under the variant's lock: delete imported files other than `keep` and temporary files left by a
    killed import."""
    for p in _imported_dir(card).iterdir():
        stale_tmp = p.name.startswith(".") and p.name.endswith(".tmp")
        if (p.suffix == ".safetensors" and p != keep) or stale_tmp:
            _discard(p)


def import_file(card: Card, source: str | Path, sha256: str | None = None) -> Pulled:
    """Check a checkpoint the user downloaded by hand, convert it to safetensors in our cache, record it.

    The file is read safely (`weights.read_state_dict`), must hash to `sha256` (or the card's pin for a
    variant without a Hub repo) when one is given, and must load strictly into the variant.

    One atomic step as far as any reader sees: the converted file is written under its own hash's name,
    then `source.json` is replaced to name it, then older files go. A kill at any point leaves the previous
    import (or none) in use; concurrent imports take turns, and the last one is the source.
    """
    from safetensors.torch import save_file

    source = Path(source).expanduser()
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
    state_dict = check_fits(card, source, source.name)
    # own storage for every tensor: safetensors refuses shared or strided ones
    state_dict = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}

    folder = _imported_dir(card)
    meta = {"kind": "import", "variant": card.name, "source": source.name, "source_sha256": source_sha}
    with _variant_lock(card):
        incoming = folder / ".incoming.safetensors"  # under the lock: one import at a time uses the name
        with atomic_path(incoming) as tmp:
            save_file(state_dict, str(tmp), metadata={k: str(v) for k, v in meta.items()} | {"format": "pt"})
        sha = file_sha256(incoming)
        target = folder / f"{sha[:16]}.safetensors"
        os.replace(incoming, target)  # named by its content: replacing a same-named file changes nothing
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        record = {**meta, "sha256": sha, "file": target.name, "imported_at": now}
        with atomic_path(folder / "source.json") as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n")
        _collect(card, keep=target)
    against = "given sha256" if sha256 else ("card sha256 pin" if expected else "strict load only")
    return Pulled(
        card.name,
        str(target),
        f"imported from {source.name}",
        sha,
        against,
        target.stat().st_size,
        cached=False,
        origin="given",
    )


def _verify_imported(card: Card, retry: bool = True) -> Pulled:
    record_path = _imported_dir(card) / "source.json"
    try:
        record = json.loads(record_path.read_text())
        expected = record["sha256"]
        target = _imported_file(card, record)
        sha = file_sha256(target)
    except FileNotFoundError:
        if retry:  # an import finishing meanwhile replaced the record and removed the file it named
            return _verify_imported(card, retry=False)
        raise HubError(
            f"{card.name}: the imported weights are gone from {_imported_dir(card)}",
            next_step="import",
            variant=card.name,
            advice="import the file again",
        ) from None
    except (OSError, ValueError, KeyError, TypeError):
        with _variant_lock(card):
            _discard(record_path)
            _collect(card, keep=None)
        raise HubError(
            f"{card.name}: the imported weights had no readable record, so they were removed",
            next_step="import",
            variant=card.name,
            advice="import the file again",
        ) from None
    if sha != expected:
        with _variant_lock(card):
            replaced = _record(card) != record  # another import finished meanwhile
            if not replaced:
                _discard(target, record_path)
        if replaced and retry:
            return _verify_imported(card, retry=False)  # check that one instead
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
        target.stat().st_size,
        cached=True,
        origin="pulled",
    )


def status(card: Card) -> str:
    """The weights column of `s2mlp list`: pulled when here (and from where, if not the card's source),
    else where they would come from."""
    try:
        choice = choose(card)
        if choice.kind == "import":
            return "pulled (imported)" if choice.path.is_file() else "import missing"
        here = cached_path(card, **_overrides(choice.source)) is not None
        if choice.origin == "pulled":
            return f"pulled ({choice.source.repo})" if here else f"{choice.source.repo} (not cached)"
        return "pulled" if here else card.weights.status
    except Exception:  # nothing to use, or an unreadable cache: never breaks `list`
        return card.weights.status
