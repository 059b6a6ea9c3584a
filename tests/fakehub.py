"""A local stand-in for the Hugging Face Hub: the real huggingface_hub client talks to it over HTTP.

It speaks what huggingface_hub expects: HEAD /{repo}/resolve/{rev}/{file} answers X-Repo-Commit, an ETag
that is the file's sha256 (LFS) or git blob sha1, and Content-Length; GET sends the bytes and honours
`Range: bytes=N-`. Errors carry the X-Error-Code the client maps to its exceptions. Faults a test can
switch on: `corrupt` (GET sends other bytes of the same length), `break_after` (the first GET of a file
stops after that many bytes, so the client has to resume).
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


def commit_of(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]  # at the head of main
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # older commits: commit -> files
    gated: bool = False
    lfs: bool = True  # ETag: sha256 (LFS) or git blob sha1

    def __post_init__(self) -> None:
        self.head = commit_of(repr(sorted(self.files)) + str(len(self.commits)))


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.corrupt: set[str] = set()  # file names whose GET bytes are wrong
        self.break_after: dict[str, int] = {}  # file name -> bytes sent before the first GET breaks
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

            def do_GET(self) -> None:
                hub._serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, repo: str, files: dict[str, bytes], **kwargs: object) -> Repo:
        self.repos[repo] = Repo(files, **kwargs)
        return self.repos[repo]

    def gets(self, filename: str) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET" and r[1].endswith("/" + filename)]

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        self.requests.append((h.command, h.path, h.headers.get("Range")))
        m = _RESOLVE.match(unquote(h.path.split("?")[0]))
        if not m:
            return _answer(h, 404, {})
        repo = self.repos.get(m["repo"])
        if repo is None:
            return _answer(h, 401, {"X-Error-Code": "RepoNotFound"})
        if repo.gated:
            return _answer(h, 403, {"X-Error-Code": "GatedRepo"})
        rev = m["rev"]
        if rev in ("main", repo.head):
            files, commit = repo.files, repo.head
        elif rev in repo.commits:
            files, commit = repo.commits[rev], rev
        else:
            return _answer(h, 404, {"X-Error-Code": "RevisionNotFound"})
        data = files.get(m["file"])
        if data is None:
            return _answer(h, 404, {"X-Error-Code": "EntryNotFound"})
        if repo.lfs:
            etag = hashlib.sha256(data).hexdigest()
        else:
            etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if not body:
            return _answer(h, 200, {**headers, "Content-Length": str(len(data))})
        name = m["file"]
        if name in self.corrupt:
            data = bytes(b ^ 0xFF for b in data)
        start = 0
        if (rng := h.headers.get("Range")) and (rm := re.match(r"bytes=(\d+)-$", rng)):
            start = int(rm[1])
        payload = data[start:]
        status = 206 if start else 200
        headers["Content-Length"] = str(len(payload))
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        cut = self.break_after.pop(name, None)
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if cut is not None:  # promise the whole body, send part of it, drop the connection
            h.wfile.write(payload[:cut])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)
            return
        h.wfile.write(payload)


def _answer(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str]) -> None:
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k, v)
    if "Content-Length" not in headers:
        h.send_header("Content-Length", "0")
    h.end_headers()
