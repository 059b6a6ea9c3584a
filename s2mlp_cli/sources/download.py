"""Talking to the Hub: one HEAD, whose answer alone names the file (its commit and checksum, each refused
unless plain hex), and one GET of its bytes into a file of ours; one line for each way that can fail.

huggingface_hub's client is used for what it knows (the URL, headers and token, the HEAD with its
redirects, its HTTP session), never to write: `hf_hub_download` asks the Hub a second time and names the
file on disk after that second answer, so a server could send a path for a name. Here the caller gets
the bytes in a file it chose and verifies them before anything is placed in the cache (`resolve`).
A GET that breaks off resumes from where it stopped, within the run; one that stalls, or whose average
rate stays too low to finish, is given up.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from s2mlp_cli.errors import HubError
from s2mlp_cli.files import git_blob_sha1
from s2mlp_cli.sources.choice import Source
from s2mlp_cli.sources.places import HEX40, HEX64, endpoint

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
# A GET that brings fewer than STALL_BYTES in any STALL_S seconds is given up (the client's read
# timeout catches silence, not a server that sends a byte every few seconds); so is one whose average
# rate, after MIN_RATE_AFTER_S, stays under MIN_RATE bytes/s (a trickle just above the stall bound would
# take days for a large file).
STALL_S = 30.0
STALL_BYTES = 64 * 1024
MIN_RATE = 100 * 1024
MIN_RATE_AFTER_S = 120.0
RESUMES = 5  # a GET that breaks off is resumed (Range) this many times within one run
DEADLINE_ENV = "S2MLP_DOWNLOAD_DEADLINE"  # seconds one download may take in all, resumes included
DEADLINE_S = 3 * 3600.0  # a 1 GB file at the slowest average allowed (100 KiB/s) takes 2.9 h


def deadline_s() -> float:
    """The overall deadline of one download: `S2MLP_DOWNLOAD_DEADLINE` seconds, else DEADLINE_S."""
    text = os.environ.get(DEADLINE_ENV, "").strip()
    if not text:
        return DEADLINE_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise HubError(f"{DEADLINE_ENV}={text[:30]!r}: expected a number of seconds above 0")
    return value


MAX_SMALL = 1 << 20  # `fetch_small` (config files) reads at most this much
_GAVE_UP = "gave up and removed the partial file, run it again"


@dataclass(frozen=True)
class Meta:
    """What the one HEAD said of a file: where its bytes are, its commit, checksum and size."""

    url: str
    location: str
    commit: str
    etag: str
    size: int | None


@dataclass(frozen=True)
class Fetched:
    """A file's bytes, written where the caller asked, with the two hashes a Hub ETag can be."""

    path: Path
    sha256: str
    git_sha1: str
    size: int


def head(src: Source) -> Meta:
    """The file's metadata from one HEAD; refused unless its ETag is a plain sha256 or git sha1 and its
    commit a full hash: these become names on disk."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = endpoint()
    check_reachable(url)
    file_url = hf_hub_url(src.repo, src.filename, revision=src.revision, endpoint=url)
    try:
        with quiet_hub_logger():
            meta = get_hf_file_metadata(file_url, token=_token())
    except Exception as e:
        raise _download_error(e, src, url) from e
    etag, commit = meta.etag or "", meta.commit_hash or ""
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
    if not HEX40.match(commit):
        raise HubError(
            f"{src}: the Hub answered a commit that is not a full hex hash ({commit[:48]!r}); refusing to "
            "download it (check HF_ENDPOINT)"
        )
    return Meta(file_url, meta.location or file_url, commit, etag, meta.size)


def fetch(src: Source, meta: Meta, dest: Path, progress: bool) -> Fetched:
    """The file's bytes into `dest` (a file of the caller's), hashed as they arrive."""
    from s2mlp_cli.console import Bar

    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(f"blob {meta.size}\0".encode()) if meta.size is not None else None
    with Bar(desc=src.filename, total=meta.size, enabled=progress) as bar, open(dest, "wb") as out:

        def take(chunk: bytes) -> None:
            out.write(chunk)
            sha256.update(chunk)
            if sha1 is not None:
                sha1.update(chunk)
            bar.update(len(chunk))

        got = _stream(src, meta, take)
    git_sha1 = sha1.hexdigest() if sha1 is not None and got == meta.size else ""
    return Fetched(dest, sha256.hexdigest(), git_sha1, got)


def fetch_small(src: Source) -> bytes:
    """A small file's bytes (a config), read into memory and never written anywhere."""
    meta = head(src)
    if meta.size is not None and meta.size > MAX_SMALL:
        raise HubError(f"{src} is {meta.size:,} bytes; a config file is at most {MAX_SMALL:,}")
    parts: list[bytes] = []
    got = _stream(src, meta, parts.append, limit=MAX_SMALL)
    data = b"".join(parts)[:got]
    expected = hashlib.sha256(data).hexdigest() if HEX64.match(meta.etag) else git_blob_sha1(data)
    if expected != meta.etag:
        raise HubError(
            f"{src} failed verification: its hash is {expected[:16]}…, the Hub ETag {meta.etag[:16]}…"
        )
    return data


def _stream(src: Source, meta: Meta, take: Callable[[bytes], Any], limit: int | None = None) -> int:
    """GET the bytes and hand each chunk to `take`; resume a GET that breaks off; returns the count."""
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers, get_session

    session = get_session()
    same_origin = urlsplit(meta.location)[:2] == urlsplit(meta.url)[:2]
    headers = build_hf_headers(token=_token() if same_origin else None)  # no token to another origin
    headers["Accept-Encoding"] = "identity"
    got, tries, start = 0, 0, time.monotonic()
    window_start, window_got = start, 0
    deadline = deadline_s()
    while True:
        if got:
            headers["Range"] = f"bytes={got}-"
        try:
            with session.stream(
                "GET", meta.location, headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
                follow_redirects=True,
            ) as response:  # fmt: skip
                if response.status_code >= 400:
                    response.read()
                    response.raise_for_status()
                if got and response.status_code != 206:
                    raise HubError(f"the Hub at {endpoint()} did not resume {src} where it stopped")
                for chunk in response.iter_bytes():  # as they arrive: the stall guard sees a trickle
                    take(chunk)
                    got += len(chunk)
                    window_got += len(chunk)
                    now = time.monotonic()
                    if limit is not None and got > limit:
                        raise HubError(f"{src} is larger than {limit:,} bytes")
                    if now - window_start >= STALL_S:
                        if window_got < STALL_BYTES:
                            took = f"{window_got:,} bytes in {now - window_start:.0f} s"
                            raise HubError(
                                f"the Hub at {endpoint()} sent {src} too slowly ({took}); {_GAVE_UP}"
                            )
                        window_start, window_got = now, 0
                    if now - start > deadline:
                        took = f"{got:,} bytes in {now - start:.0f} s; {DEADLINE_ENV} allows {deadline:.0f} s"
                        raise HubError(
                            f"the Hub at {endpoint()} did not finish sending {src} ({took}); {_GAVE_UP}"
                        )
                    if now - start >= MIN_RATE_AFTER_S and got / (now - start) < MIN_RATE:
                        took = f"on average {got / (now - start):,.0f} bytes/s over {now - start:.0f} s"
                        raise HubError(f"the Hub at {endpoint()} sent {src} too slowly ({took}); {_GAVE_UP}")
            if meta.size is None or got >= meta.size:
                return got
            raise _Short(f"the body ended at {got:,} of {meta.size:,} bytes")
        except HubError:
            raise
        except Exception as e:
            if not _transient(e) or tries >= RESUMES:
                raise _download_error(e, src, endpoint()) from e
            tries += 1


class _Short(Exception):
    """A response body that ended before the size the HEAD announced."""


def _transient(e: Exception) -> bool:
    """A break worth resuming: the connection dropped, a body ended short, a read timed out."""
    if isinstance(e, _Short | OSError | TimeoutError):
        return True
    name = type(e).__name__
    return any(k in name for k in ("Timeout", "RemoteProtocol", "ReadError", "ConnectError", "NetworkError"))


def _token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


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

    if isinstance(e, HubError):
        return e
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
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, HfHubHTTPError) or isinstance(status, int):
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
    # transport errors after the resumes, a short body, disk full, ...
    return HubError(
        f"downloading {src} failed ({type(e).__name__}: {reason(e)}); nothing was kept, run it again"
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
