"""Talking to the Hub: one download, and one line for each way it can fail. A download is refused unless
the Hub names the file's checksum (its ETag) as plain hex, is given up when it stalls, and leaves no
partial file behind; the caller verifies the bytes (`sources.resolve`).
"""

from __future__ import annotations

import inspect
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from s2mlp_cli.console import Bar
from s2mlp_cli.errors import HubError
from s2mlp_cli.files import flock, inside
from s2mlp_cli.sources.choice import Source
from s2mlp_cli.sources.places import HEX40, HEX64, endpoint, hub_cache

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def download(src: Source, progress: bool) -> Path:
    from huggingface_hub import hf_hub_download

    url = endpoint()
    check_reachable(url)
    kwargs: dict[str, Any] = {
        "revision": src.revision,
        "cache_dir": hub_cache(),
        "endpoint": url,
    }
    if progress and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
        kwargs["tqdm_class"] = Bar
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
    return path  # `resolve` checks where it resolves before anything reads it


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
    if not (HEX64.match(etag) or HEX40.match(etag)):
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
        if not (HEX64.match(name) or HEX40.match(name)) or (etag and name != etag):
            continue
        if not inside(partial, hub_cache()):
            continue
        with flock(locks / f"{name}.lock", wait=False) as free:
            if free:
                partial.unlink(missing_ok=True)


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
