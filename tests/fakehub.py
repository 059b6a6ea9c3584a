"""A local stand-in for the Hugging Face Hub: the real huggingface_hub client talks to it over HTTP.

It speaks what huggingface_hub expects: HEAD /{repo}/resolve/{rev}/{file} answers X-Repo-Commit, an ETag
that is the file's sha256 (LFS) or git blob sha1, and Content-Length; GET sends the bytes and honours
`Range: bytes=N-`. Errors carry the X-Error-Code the client maps to its exceptions. Faults a test can
switch on: `corrupt` (GET sends other bytes of the same length), `break_after` (the first GET of a file
stops after that many bytes, so the client has to resume), `etags` (another ETag), `later_etags` (another
ETag on every HEAD of a file but the first), and `faults` (an HTTP
status, no ETag, a trickle, a truncated body or a hang: the fault matrix of tests/test_hardening.py).

Writes, as `HfApi.create_repo` / `create_branch` / `create_commit` (plain HTTP: HF_HUB_DISABLE_XET) use
them: POST /api/repos/create, /api/models/{repo}/branch/{b}, /api/validate-yaml, /api/models/{repo}/
preupload/{rev}, /{repo}.git/info/lfs/objects/batch, PUT of the LFS object to the href it answered (the
body must hash to its oid), and POST /api/models/{repo}/commit/{rev} (ndjson; every lfsFile must have
been uploaded). A commit is all or nothing. `tokens` maps a bearer token to its user, who may write to
repositories under their own name; `fail_commit` answers the next commit with that status instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_API_REPO = re.compile(
    r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<op>revision|preupload|commit|branch)/(?P<rev>.+))?$"
)
_LFS_BATCH = re.compile(r"^/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$")
_LFS_UPLOAD = re.compile(r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$")


def commit_of(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]  # at the head of main
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # older commits: commit -> files
    gated: bool = False
    lfs: bool = True  # ETag: sha256 (LFS) or git blob sha1
    private: bool = False  # readable only with the owner's token
    branches: dict[str, str] = field(default_factory=dict)  # branches other than main -> commit in `commits`

    def __post_init__(self) -> None:
        self.head = commit_of(repr(sorted(self.files)) + str(len(self.commits)))

    def at(self, rev: str) -> tuple[dict[str, bytes], str] | None:
        """(files, commit) at a branch, `main` or a commit; None when there is no such revision."""
        if rev in ("main", self.head):
            return self.files, self.head
        if rev in self.branches:
            return self.commits[self.branches[rev]], self.branches[rev]
        if rev in self.commits:
            return self.commits[rev], rev
        return None

    def commit(self, rev: str, files: dict[str, bytes]) -> str:
        new = commit_of(repr(sorted(files.items())) + rev + str(len(self.commits)))
        if rev == "main":
            self.commits[self.head] = self.files
            self.files, self.head = files, new
        else:
            self.commits[new] = files
            self.branches[rev] = new
        return new


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.corrupt: set[str] = set()  # file names whose GET bytes are wrong
        self.break_after: dict[str, int] = {}  # file name -> bytes sent before the first GET breaks
        self.etags: dict[str, str] = {}  # file name -> the ETag to send instead of the file's hash
        # file name -> the ETag to send on every HEAD after the first (an honest first answer, then a
        # path: what a client that asks twice would write to)
        self.later_etags: dict[str, str] = {}
        self._heads: dict[str, int] = {}
        # file name -> a fault of the server: ("status", code) answers HEAD and GET with that status;
        # ("no_etag",) leaves the ETag out; ("trickle", seconds) sends the body a byte at a time, that far
        # apart; ("truncate", n) sends n bytes of every GET, then closes; ("hang",) sends the headers of a
        # GET and then nothing
        self.faults: dict[str, tuple] = {}
        self.tokens: dict[str, str] = {}  # bearer token -> user
        self.lfs_objects: dict[str, bytes] = {}  # uploaded LFS objects by sha256
        self.fail_commit: int | None = None  # answer the next commit with this status
        self._stopped = threading.Event()
        self.commits_made: list[dict] = []  # the commits accepted: {"repo", "revision", "summary", "files"}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

            def do_GET(self) -> None:
                if self.path.startswith("/api/"):
                    return hub._api(self)
                hub._serve(self, body=True)

            def do_POST(self) -> None:
                hub._api(self)

            def do_PUT(self) -> None:
                hub._api(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self.server.shutdown()
        self.server.server_close()

    def add(self, repo: str, files: dict[str, bytes], **kwargs: object) -> Repo:
        self.repos[repo] = Repo(files, **kwargs)
        return self.repos[repo]

    def gets(self, filename: str) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET" and r[1].endswith("/" + filename)]

    def user(self, h: BaseHTTPRequestHandler) -> str | None:
        auth = h.headers.get("Authorization") or ""
        return self.tokens.get(auth.removeprefix("Bearer ").strip()) if auth.startswith("Bearer ") else None

    def _readable(self, h: BaseHTTPRequestHandler, name: str) -> Repo | None:
        repo = self.repos.get(name)
        if repo is None or (repo.private and self.user(h) != name.split("/")[0]):
            return None
        return repo

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        self.requests.append((h.command, h.path, h.headers.get("Range")))
        m = _RESOLVE.match(unquote(h.path.split("?")[0]))
        if not m:
            return _answer(h, 404, {})
        repo = self._readable(h, m["repo"])
        if repo is None:
            return _answer(h, 401, {"X-Error-Code": "RepoNotFound"})
        if repo.gated:
            return _answer(h, 403, {"X-Error-Code": "GatedRepo"})
        found = repo.at(m["rev"])
        if found is None:
            return _answer(h, 404, {"X-Error-Code": "RevisionNotFound"})
        files, commit = found
        data = files.get(m["file"])
        if data is None:
            return _answer(h, 404, {"X-Error-Code": "EntryNotFound"})
        if repo.lfs:
            etag = hashlib.sha256(data).hexdigest()
        else:
            etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        etag = self.etags.get(m["file"], etag)
        if not body:
            key = f"{m['repo']}/{m['file']}"
            self._heads[key] = self._heads.get(key, 0) + 1
            if self._heads[key] > 1 and m["file"] in self.later_etags:
                etag = self.later_etags[m["file"]]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        fault = self.faults.get(m["file"], ())
        if fault[:1] == ("status",):
            return _answer(h, fault[1], {"Retry-After": "0"} if fault[1] == 429 else {})
        if fault[:1] == ("no_etag",):
            del headers["ETag"]
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
        if fault[:1] == ("truncate",):
            cut = fault[1]
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
        if fault[:1] in (("trickle",), ("hang",)):
            self._trickle(h, payload, fault[1] if fault[0] == "trickle" else None)
            return
        h.wfile.write(payload)

    def _trickle(self, h: BaseHTTPRequestHandler, payload: bytes, gap: float | None) -> None:
        """A byte every `gap` seconds (or nothing: a hang) until the client gives up or the server stops."""
        h.close_connection = True
        try:
            for i in range(len(payload)):
                if self._stopped.wait(gap if gap is not None else 3600):
                    return
                h.wfile.write(payload[i : i + 1])
                h.wfile.flush()
        except OSError:
            pass  # the client hung up

    # --- the API the client's writes use -----------------------------------------------------------------

    def _api(self, h: BaseHTTPRequestHandler) -> None:
        path = unquote(h.path.split("?")[0])
        body = _read_body(h)
        self.requests.append((h.command, path, None))
        user = self.user(h)
        if path == "/api/validate-yaml":
            return _json(h, 200, {"errors": [], "warnings": []})
        if path == "/api/repos/create":
            request = json.loads(body)
            name = f"{request.get('organization') or user}/{request['name']}"
            if user is None:
                return _json(h, 401, {"error": "Invalid credentials"})
            if name.split("/")[0] != user:
                return _json(
                    h, 403, {"error": "You don't have the rights to create a model under this namespace"}
                )
            if name in self.repos:
                return _json(
                    h, 409, {"error": "You already created this model repo", "url": f"{self.url}/{name}"}
                )
            self.repos[name] = Repo(
                {}, private=request.get("visibility") == "private" or bool(request.get("private"))
            )
            return _json(h, 200, {"url": f"{self.url}/{name}"})
        if m := _LFS_UPLOAD.match(path):
            if hashlib.sha256(body).hexdigest() != m["oid"]:
                return _json(h, 400, {"error": "object does not match its oid"})
            self.lfs_objects[m["oid"]] = body
            return _json(h, 200, {})
        if m := _LFS_BATCH.match(path):
            if self._refused(h, m["repo"], user):
                return None
            objects = [
                {
                    "oid": o["oid"],
                    "size": o["size"],
                    "authenticated": True,
                    **(
                        {}
                        if o["oid"] in self.lfs_objects
                        else {"actions": {"upload": {"href": f"{self.url}/lfs-upload/{o['oid']}"}}}
                    ),
                }
                for o in json.loads(body)["objects"]
            ]
            return _json(h, 200, {"transfer": "basic", "objects": objects})
        m = _API_REPO.match(path)
        if not m:
            return _json(h, 404, {"error": "not found"})
        if m["op"] in (None, "revision"):
            repo = self._readable(h, m["repo"])
            if repo is None:
                return _answer(h, 401, {"X-Error-Code": "RepoNotFound"})
            found = repo.at(m["rev"] or "main")
            if found is None:
                return _answer(h, 404, {"X-Error-Code": "RevisionNotFound"})
            files, commit = found
            siblings = [{"rfilename": f} for f in sorted(files)]
            return _json(
                h, 200, {"id": m["repo"], "sha": commit, "private": repo.private, "siblings": siblings}
            )
        if self._refused(h, m["repo"], user):
            return None
        repo = self.repos[m["repo"]]
        if m["op"] == "branch":
            if m["rev"] in repo.branches or m["rev"] == "main":
                return _json(h, 409, {"error": "Reference already exists"})
            repo.commits.setdefault(repo.head, repo.files)
            repo.branches[m["rev"]] = repo.head
            return _json(h, 200, {})
        if m["op"] == "preupload":
            files = [
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if f["path"].endswith((".safetensors", ".bin")) else "regular",
                    "shouldIgnore": False,
                    "oid": None,
                }
                for f in json.loads(body)["files"]
            ]
            return _json(h, 200, {"files": files})
        return self._commit(h, repo, m["repo"], m["rev"], body)

    def _refused(self, h: BaseHTTPRequestHandler, name: str, user: str | None) -> bool:
        """Answers 401/403 and returns True unless `user` may write to `name`."""
        if user is None:
            _json(h, 401, {"error": "Invalid credentials"})
        elif name not in self.repos or name.split("/")[0] != user:
            _json(h, 403, {"error": "You don't have the rights to write to this repository"})
        else:
            return False
        return True

    def _commit(self, h: BaseHTTPRequestHandler, repo: Repo, name: str, rev: str, body: bytes) -> None:
        if self.fail_commit is not None:
            status, self.fail_commit = self.fail_commit, None
            return _json(h, status, {"error": "commit refused (fault switched on by the test)"})
        found = repo.at(rev)
        if found is None:
            return _answer(h, 404, {"X-Error-Code": "RevisionNotFound"})
        files = dict(found[0])
        summary = ""
        for line in body.splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                summary = value["summary"]
            elif item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                data = self.lfs_objects.get(value["oid"])
                if data is None or len(data) != value["size"]:
                    return _json(h, 422, {"error": f"LFS object {value['oid']} was never uploaded"})
                files[value["path"]] = data
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
        commit = repo.commit(rev, files)
        self.commits_made.append({"repo": name, "revision": rev, "summary": summary, "files": files})
        return _json(h, 200, {"commitOid": commit, "commitUrl": f"{self.url}/{name}/commit/{commit}"})


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while size := int(h.rfile.readline().split(b";")[0].strip() or b"0", 16):
            parts.append(h.rfile.read(size))
            h.rfile.readline()
        while h.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(parts)
    return h.rfile.read(int(h.headers.get("Content-Length") or 0))


def _json(h: BaseHTTPRequestHandler, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


def _answer(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str]) -> None:
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k, v)
    if "Content-Length" not in headers:
        h.send_header("Content-Length", "0")
    h.end_headers()
