"""A small Hub-compatible HTTP server on 127.0.0.1, for testing uploads and downloads without the network.

It implements the part of the Hugging Face Hub API that `huggingface_hub` uses to create a repo, commit a folder
(`upload_folder` / `create_commit`) and download it again (`repo_info`, `list_repo_tree`, `snapshot_download`,
`hf_hub_download`):

- `POST /api/repos/create`
- `POST /api/validate-yaml`
- `POST /api/{type}s/{owner}/{name}/preupload/{revision}`: every file is answered with upload mode "regular", so
  the client sends contents inline (base64) in the commit payload and never needs LFS or Xet storage.
- `POST /api/{type}s/{owner}/{name}/commit/{revision}` (NDJSON payload)
- `GET /api/{type}s/{owner}/{name}[/revision/{revision}]` (repo info, with siblings)
- `GET /api/{type}s/{owner}/{name}/tree/{revision}[/{path}]`
- `GET`/`HEAD` `/[{type}s/]{owner}/{name}/resolve/{revision}/{path}` (file download, with `ETag`,
  `X-Repo-Commit` and `Content-Length`)

The client opens a Xet (or LFS) upload only for files the preupload answer marks "lfs", so with every file
"regular" a push is four requests: create, validate-yaml (for README.md), preupload, commit.

Auth works like the Hub's: `Authorization: Bearer <token>` with `server.token` may write; `server.read_token` may only
read (writes answer 403); an unknown token answers 401 "Invalid credentials in Authorization header" on any request;
writes without a token answer 401; private repos are invisible (401, `RepoNotFound`) without a token.

Blobs live under a temporary folder, addressed by their git blob id; commits and branches are kept in memory and
mirrored to a `repos.json` file there. Every request is recorded (method, path, query, whether it was authenticated,
response status), never its headers, so tests can assert what was called without ever seeing a token.

```python
>>> server = FakeHub().start()
>>> HfApi(endpoint=server.endpoint, token=server.token).create_repo("alice/tiny")
>>> server.fail_next(1, status=500)  # the next request answers 500
>>> server.stop()                    # connections are now refused; `start()` serves again on the same port
```

The `fake_hub` fixture yields a started `FakeHub` and stops it afterwards; `hub_endpoint` yields
`(endpoint URL, token)` for tests that only need to point a client at it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest


REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
LAST_MODIFIED = "2024-01-01T00:00:00.000Z"

_API_REPO = re.compile(
    r"^/api/(models|datasets|spaces)/([^/]+/[^/]+?)(?:/(preupload|commit|revision|tree)/([^/]+)(/.*)?)?$"
)
_RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def git_blob_id(content: bytes) -> str:
    """The git object id of a blob: what the Hub reports as a regular file's `oid` and `ETag`."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server answered. Headers (and therefore tokens) are deliberately not kept."""

    method: str
    path: str
    query: str
    authenticated: bool
    status: int


class HubError(Exception):
    """An error answer: HTTP status, message, and the `X-Error-Code` the client uses to pick its exception."""

    def __init__(self, status: int, message: str, error_code: str | None = None, headers: dict | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = headers or {}
        self.extra = extra or {}  # more fields of the JSON error body


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    branches: dict  # branch name -> commit id
    commits: dict  # commit id -> {"parent", "title", "files": {path: blob id}}


class FakeHub:
    """A Hub-compatible server with one write token and one read-only token; see the module docstring."""

    def __init__(self, token: str | None = None, read_token: str | None = None):
        self.token = token or "hf_" + secrets.token_hex(16)
        self.read_token = read_token or "hf_read_" + secrets.token_hex(16)
        self.requests: list[RecordedRequest] = []
        self._storage = Path(tempfile.mkdtemp(prefix="fake_hub_"))
        (self._storage / "blobs").mkdir()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._lock = threading.RLock()
        self._failures: list[tuple[int, str | None]] = []  # (status, path substring or None), consumed in order
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # ------------------------------------------------------------------ lifecycle and switches

    @property
    def endpoint(self) -> str:
        """The base URL to hand to `HfApi(endpoint=...)` or `HF_ENDPOINT`."""
        if not self._port:
            raise RuntimeError("FakeHub has not been started yet: call start() first.")
        return f"http://127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> FakeHub:
        """Serve in a background thread: on a free port the first time, on the same port after a `stop()`."""
        if self._httpd is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket: new connections are refused. Stored repos are kept."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def close(self) -> None:
        """Stop serving and delete the stored repos."""
        self.stop()
        shutil.rmtree(self._storage, ignore_errors=True)

    def fail_next(self, count: int = 1, status: int = 500, path_contains: str | None = None) -> None:
        """Answer the next `count` requests (those whose path contains `path_contains`, if given) with `status`."""
        with self._lock:
            self._failures.extend([(status, path_contains)] * count)

    def clear_failures(self) -> None:
        """Forget the failures `fail_next` scheduled and that were not used yet."""
        with self._lock:
            self._failures.clear()

    def called(self, method: str | None = None, path_contains: str = "") -> list[RecordedRequest]:
        """The recorded requests matching a method and a path substring."""
        with self._lock:
            return [
                r for r in self.requests
                if (method is None or r.method == method) and path_contains in r.path
            ]

    # ------------------------------------------------------------------ repository state

    def repo_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """Path -> content of every file of a repo at a revision (branch name or commit id)."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = repo.commits[self._resolve_revision(repo, revision)]
            return {path: self._read_blob(blob) for path, blob in commit["files"].items()}

    def stored_files(self) -> list[Path]:
        """Every file the server keeps on disk (blobs and the repo index)."""
        return [path for path in self._storage.rglob("*") if path.is_file()]

    def commit_count(self, repo_id: str, repo_type: str = "model") -> int:
        with self._lock:
            return len(self._get_repo(repo_type, repo_id).commits)

    def _get_repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    @staticmethod
    def _resolve_revision(repo: _Repo, revision: str) -> str:
        if revision in repo.branches:
            return repo.branches[revision]
        if revision in repo.commits:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _write_blob(self, content: bytes) -> str:
        blob = git_blob_id(content)
        path = self._storage / "blobs" / blob
        if not path.exists():
            path.write_bytes(content)
        return blob

    def _read_blob(self, blob: str) -> bytes:
        return (self._storage / "blobs" / blob).read_bytes()

    def _add_commit(self, repo: _Repo, branch: str, title: str, files: dict) -> str:
        parent = repo.branches.get(branch)
        digest = hashlib.sha1(
            json.dumps({"parent": parent, "title": title, "files": files, "n": len(repo.commits)}, sort_keys=True)
            .encode()
        ).hexdigest()
        repo.commits[digest] = {"parent": parent, "title": title, "files": dict(files)}
        repo.branches[branch] = digest
        self._save_index()
        return digest

    def _save_index(self) -> None:
        index = {
            f"{repo_type}:{repo_id}": {"private": repo.private, "branches": repo.branches, "commits": repo.commits}
            for (repo_type, repo_id), repo in self._repos.items()
        }
        (self._storage / "repos.json").write_text(json.dumps(index, indent=1, sort_keys=True))

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.endpoint}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    # ------------------------------------------------------------------ request handling

    def _take_failure(self, path: str) -> int | None:
        with self._lock:
            for i, (status, needle) in enumerate(self._failures):
                if needle is None or needle in path:
                    del self._failures[i]
                    return status
        return None

    def _authenticate(self, authorization: str | None) -> str | None:
        """'write', 'read' or None (anonymous); a header carrying an unknown token is rejected like the Hub does."""
        if authorization is None:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value == self.token:
            return "write"
        if scheme.lower() == "bearer" and value == self.read_token:
            return "read"
        raise HubError(401, "Invalid credentials in Authorization header",
                       headers={"X-Error-Message": "Invalid credentials in Authorization header"})

    @staticmethod
    def _require_write(access: str | None, action: str) -> None:
        if access is None:
            raise HubError(401, f"You must be authenticated to {action}.")
        if access != "write":
            raise HubError(403, f"Your token does not have write access: you cannot {action}.")

    def _require_read(self, repo: _Repo, access: str | None) -> None:
        if repo.private and access is None:
            raise HubError(401, "Repository not found", "RepoNotFound")

    def handle(self, method: str, path: str, query: dict, headers, body: bytes):
        """Route one request; returns (status, headers, body bytes). Raises HubError for error answers."""
        access = self._authenticate(headers.get("Authorization"))
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(access, _json(body))
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(_json(body))
        match = _API_REPO.match(path)
        if match:
            repo_type, repo_id = REPO_TYPES[match.group(1)], match.group(2)
            action, revision, rest = match.group(3), unquote(match.group(4) or "main"), match.group(5) or ""
            if method == "POST" and action == "preupload":
                return self._preupload(access, repo_type, repo_id, revision, _json(body))
            if method == "POST" and action == "commit":
                return self._commit(access, repo_type, repo_id, revision, query, body)
            if method == "GET" and action in (None, "revision") and not rest:
                return self._repo_info(access, repo_type, repo_id, revision, query)
            if method == "GET" and action == "tree":
                return self._tree(access, repo_type, repo_id, revision, unquote(rest.lstrip("/")), query)
        match = _RESOLVE.match(path)
        if match and method in ("GET", "HEAD"):
            repo_type = REPO_TYPES.get(match.group(1) or "models")
            return self._resolve(access, repo_type, match.group(2), unquote(match.group(3)), unquote(match.group(4)),
                                 head=method == "HEAD")
        raise HubError(404, f"Sorry, we can't find the page you are looking for: {method} {path}")

    def _create_repo(self, access, payload):
        self._require_write(access, "create a repository")
        name, organization = payload.get("name"), payload.get("organization")
        if not name or not organization:
            raise HubError(400, "Repository name must be 'owner/name'.")
        repo_id = f"{organization}/{name}"
        if not _REPO_ID.match(repo_id):
            raise HubError(400, f"Invalid repository name: {repo_id}")
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        with self._lock:
            existing = self._repos.get((repo_type, repo_id))
            if existing is not None:
                # Like the Hub, the conflict answer carries the repo URL: `create_repo(exist_ok=True)` returns it.
                raise HubError(409, "You already created this model repo", extra={"url": self._repo_url(existing)})
            repo = _Repo(repo_type, repo_id, payload.get("visibility") == "private", {}, {})
            self._repos[(repo_type, repo_id)] = repo
            self._add_commit(repo, "main", "initial commit", {".gitattributes": self._write_blob(GITATTRIBUTES)})
            repo_hash = hashlib.md5(repo_id.encode()).hexdigest()
            return 200, {}, {"url": self._repo_url(repo), "name": repo_id, "id": repo_hash}

    @staticmethod
    def _validate_yaml(payload):
        content = payload.get("content") or ""
        lines = content.splitlines()
        if lines and lines[0].strip() == "---" and not any(line.strip() == "---" for line in lines[1:]):
            return 400, {}, {"errors": [{"message": "The metadata block at the top of README.md is not closed."}],
                             "warnings": []}
        return 200, {}, {"errors": [], "warnings": []}

    def _preupload(self, access, repo_type, repo_id, revision, payload):
        self._require_write(access, "upload files")
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            files = {}
            if revision in repo.branches or revision in repo.commits:
                files = repo.commits[self._resolve_revision(repo, revision)]["files"]
            answer = [
                {"path": item["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": files.get(item["path"])}
                for item in payload.get("files", [])
            ]
        return 200, {}, {"files": answer, "commitOid": repo.branches.get(revision)}

    def _commit(self, access, repo_type, repo_id, revision, query, body):
        self._require_write(access, "commit to this repository")
        if query.get("create_pr", ["0"])[0] == "1":
            raise HubError(400, "Pull requests are not supported by this server.")
        try:
            items = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise HubError(400, f"Invalid NDJSON commit payload: {err}")
        if not items or items[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a header line.")
        header = items[0]["value"]
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            if revision not in repo.branches:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            parent = header.get("parentCommit")
            if parent is not None and not repo.branches[revision].startswith(parent):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo.commits[repo.branches[revision]]["files"])
            for item in items[1:]:
                key, value = item.get("key"), item.get("value", {})
                path = value.get("path", "")
                if key == "file":
                    _check_path(path)
                    if value.get("encoding") != "base64":
                        raise HubError(400, f"Unsupported encoding for {path}: {value.get('encoding')}")
                    files[path] = self._write_blob(base64.b64decode(value["content"]))
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    files = {p: b for p, b in files.items() if not p.startswith(prefix)}
                elif key == "lfsFile":
                    raise HubError(400, f"{path} was sent as an LFS file, but this server only accepts regular files.")
                else:
                    raise HubError(400, f"Unknown commit operation: {key!r}")
            commit = self._add_commit(repo, revision, header.get("summary", ""), files)
            return 200, {}, {
                "success": True,
                "commitOid": commit,
                "commitUrl": f"{self._repo_url(repo)}/commit/{commit}",
                "pullRequestUrl": None,
                "hookOutput": "",
            }

    def _repo_info(self, access, repo_type, repo_id, revision, query):
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            self._require_read(repo, access)
            commit = self._resolve_revision(repo, revision)
            files = repo.commits[commit]["files"]
            with_blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
            siblings = []
            for path in sorted(files):
                sibling = {"rfilename": path}
                if with_blobs:
                    sibling.update(size=(self._storage / "blobs" / files[path]).stat().st_size, blobId=files[path])
                siblings.append(sibling)
            return 200, {}, {
                "_id": hashlib.md5(repo_id.encode()).hexdigest(),
                "id": repo_id,
                "author": repo_id.split("/")[0],
                "sha": commit,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "lastModified": LAST_MODIFIED,
                "createdAt": LAST_MODIFIED,
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "siblings": siblings,
            }

    def _tree(self, access, repo_type, repo_id, revision, prefix, query):
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            self._require_read(repo, access)
            files = repo.commits[self._resolve_revision(repo, revision)]["files"]
            base = prefix.strip("/") + "/" if prefix.strip("/") else ""
            entries, folders = [], set()
            for path in sorted(files):
                if not path.startswith(base):
                    continue
                relative = PurePosixPath(path[len(base):])
                parents = [str(PurePosixPath(base) / p) if base else str(p) for p in reversed(relative.parents[:-1])]
                for folder in parents if recursive else parents[:1]:
                    if folder not in folders:
                        folders.add(folder)
                        tree_id = hashlib.sha1(folder.encode()).hexdigest()
                        entries.append({"type": "directory", "path": folder, "oid": tree_id, "size": 0})
                if recursive or len(relative.parts) == 1:
                    size = (self._storage / "blobs" / files[path]).stat().st_size
                    entries.append({"type": "file", "path": path, "oid": files[path], "size": size})
            if base and not entries:
                raise HubError(404, f"{prefix} does not exist on {revision}", "EntryNotFound")
            return 200, {}, entries

    def _resolve(self, access, repo_type, repo_id, revision, path, head):
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            self._require_read(repo, access)
            commit = self._resolve_revision(repo, revision)
            blob = repo.commits[commit]["files"].get(path)
            if blob is None:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound", headers={"X-Repo-Commit": commit})
            content = self._read_blob(blob)
        headers = {
            "ETag": f'"{blob}"',
            "X-Repo-Commit": commit,
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(content)),
            "Content-Disposition": f'inline; filename="{quote(PurePosixPath(path).name)}"',
            "Accept-Ranges": "bytes",
        }
        return 200, headers, b"" if head else content


def _json(body: bytes) -> dict:
    try:
        value = json.loads(body or b"{}")
    except json.JSONDecodeError as err:
        raise HubError(400, f"Invalid JSON body: {err}")
    if not isinstance(value, dict):
        raise HubError(400, "The JSON body must be an object.")
    return value


def _check_path(path: str) -> None:
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or ".." in parts or ".git" in parts:
        raise HubError(400, f"Invalid path in repository: {path!r}")


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP requests into `FakeHub.handle` calls. One request per connection (HTTP/1.0), so a stopped server
    leaves no kept-alive connection behind that could still answer."""

    hub: FakeHub
    server_version = "FakeHub/1.0"

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self._read_body()
        authenticated = False
        try:
            status = self.hub._take_failure(url.path)
            if status is not None:
                raise HubError(status, "Internal Error - We're working hard to fix this as soon as possible!")
            authenticated = self.hub._authenticate(self.headers.get("Authorization")) is not None
            status, headers, payload = self.hub.handle(method, url.path, parse_qs(url.query), self.headers, body)
        except HubError as err:
            status, payload = err.status, {"error": err.message, **err.extra}
            headers = dict(err.headers)
            if err.error_code:
                headers["X-Error-Code"] = err.error_code
            headers.setdefault("X-Error-Message", err.message)
        with self.hub._lock:
            self.hub.requests.append(RecordedRequest(method, url.path, url.query, authenticated, status))
        if not isinstance(payload, bytes):
            payload = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json")
        headers.setdefault("Content-Length", str(len(payload)))
        headers["X-Request-Id"] = "fake-" + secrets.token_hex(4)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)


@pytest.fixture
def fake_hub():
    """A started `FakeHub`; stopped and its storage deleted after the test."""
    server = FakeHub().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def hub_endpoint(fake_hub):
    """`(endpoint URL, write token)` of a running `FakeHub`."""
    return fake_hub.endpoint, fake_hub.token
