"""A Hugging Face Hub stand-in on loopback, for tests that run the real `huggingface_hub` client end to end.

It speaks the part of the Hub's HTTP API that `create_repo`, `upload_folder` / `create_commit`, `model_info`,
`list_repo_files`, `hf_hub_download`, `snapshot_download` and `from_pretrained` use, with the headers and JSON
fields the client (huggingface_hub 2.4) reads:

- `GET /api/whoami-v2`; `POST /api/repos/create` (409 with the repo `url` when it exists); `DELETE /api/repos/delete`;
  `PUT /api/models/{repo}/settings`; `POST /api/validate-yaml` (README front matter: model-index shape, license,
  pipeline tag and dataset ids against the Hub's lists, checked on every commit that changes README.md too)
- `GET /api/models/{repo}[/revision/{rev}]` (sha, private, siblings, cardData, config, safetensors), `tree`,
  `paths-info`, `refs`, `commits`, `branch`, `tag`
- `POST /api/collections` (409 with the existing `slug` for a title the namespace has), `GET /api/collections/{slug}`,
  `POST /api/collections/{slug}/items` (the repo must exist and be readable; 409 for an item already there)
- `POST /api/models/{repo}/preupload/{rev}`: "lfs" for files matching the repo's .gitattributes `filter=lfs` rules
  (*.safetensors, *.bin, *.png, ...), binary samples and files over 10 MiB; "regular" otherwise; the remote oid of
  unchanged files so the client skips them
- `POST /{repo}.git/info/lfs/objects/batch` ("basic" transfer): an upload href on this server (a signed URL, as S3's,
  so the PUT carries no token), sha256 and size checked on the PUT, then a `verify` action
- `POST /api/models/{repo}/commit/{rev}` (NDJSON: header, file, lfsFile, deletedFile, deletedFolder; parentCommit;
  create_pr): LFS files are stored as git-LFS pointers whose objects must have been uploaded
- `HEAD/GET /{repo}/resolve/{rev}/{path}`: regular files answer 200 with `ETag` (git blob sha1) and `X-Repo-Commit`;
  LFS files answer 302 to a second loopback port (the "CDN", another origin, so the client drops its token) with
  `X-Linked-Etag` (sha256), `X-Linked-Size` and `X-Repo-Commit`, as the Hub does. Range requests are honoured.

Spaces live beside the models, as on the Hub: the same routes under `/api/spaces/{repo}`, `/spaces/{repo}.git/...`
and `/spaces/{repo}/resolve/...` (stored under the key "spaces/{repo}"). Creating one needs an sdk; their cards are
validated against the Spaces configuration reference (sdk, colours, short_description, model ids); and a commit is
refused when the Space could not start: no app file for a gradio or streamlit sdk, or a `models` entry the server
does not hold. That last check is stricter than the Hub, which accepts such a commit and then fails the Space's
build: here the push is refused, so that a test sees at once what the Hub would show only on the Space's page.

No Xet: the server advertises no Xet headers, but huggingface_hub uploads through Xet whenever `hf_xet` is installed
(a client-side choice), so clients must run with `HF_HUB_DISABLE_XET=1`; `HubServer.env()` sets it, and the Xet token
routes answer a 400 that says so.

Errors are shaped as the Hub's so the client raises its own exceptions: `X-Error-Code: RepoNotFound` (401 anonymous /
404 authenticated) -> `RepositoryNotFoundError`, `RevisionNotFound` and `EntryNotFound` (404) -> their errors, 401
"Invalid credentials in Authorization header" for a wrong token (any request), 403 for writing to someone else's
namespace, 409 for an existing repo or branch, 412 for a stale parentCommit.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import importlib
import json
import os
import re
import secrets
import struct
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

SPACE_SDKS = ("gradio", "streamlit", "docker", "static")
SPACE_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
REPO_KINDS = ("api", "spaces", "datasets", "kernels")  # first path parts that are no namespace
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files over 10 MiB in LFS whatever their name
LFS_CONTENT_TYPE = "application/vnd.git-lfs+json"
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"  # the client tests this exact message
NAME_RE = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][A-Za-z0-9._-]{0,94}(?<![.-])$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

# The default .gitattributes of a new Hub model repo (abridged), plus images: what goes to LFS.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs.* *.mlmodel *.model *.msgpack *.npy *.npz"
        " *.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors saved_model/**/* *.tar.* *.tar"
        " *.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents* *.png *.jpg *.jpeg *.gif *.webp"
    ).split()
)

# Prepend to a `python -c` script (or exec in a client process) to make huggingface_hub retry without sleeping: its
# http_backoff sleeps 1+2+4+8+8 s before giving up on a dropped connection or a 5xx on an upload. In-process:
# `no_retry_sleep(monkeypatch)`.
NO_RETRY_SLEEP = """
import huggingface_hub.utils._http as _hf_http, time as _time
class _NoSleep:
    def __getattr__(self, name):
        return getattr(_time, name)
    def sleep(self, seconds):
        pass
_hf_http.time = _NoSleep()
"""


class _NoSleep:
    def __getattr__(self, name):
        return getattr(time, name)

    def sleep(self, seconds):
        pass


def no_retry_sleep(monkeypatch) -> None:
    """Make this process's huggingface_hub retry without sleeping (undone by `monkeypatch`)."""
    import huggingface_hub.utils._http as hf_http

    monkeypatch.setattr(hf_http, "time", _NoSleep())


def git_blob_id(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubError(Exception):
    """An HTTP error answered as the Hub answers it (JSON body, X-Error-Code / X-Error-Message headers)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, body=None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}
        self.body = body


@dataclass(frozen=True)
class FileEntry:
    """One file of a commit: a git blob (regular) or a git-LFS pointer blob."""

    size: int  # size of the content (for LFS: the object's size)
    blob_id: str  # git sha1 of the stored blob (for LFS: of the pointer)
    lfs_oid: str | None = None  # sha256 of the content for LFS files

    @property
    def is_lfs(self) -> bool:
        return self.lfs_oid is not None


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, FileEntry]
    title: str
    message: str
    author: str
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    created_at: str
    refs: dict[str, str] = field(default_factory=dict)  # "refs/heads/main" -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    lfs_oids: set[str] = field(default_factory=set)  # LFS objects uploaded to this repo
    pr_count: int = 0


@dataclass
class Fault:
    """Requests whose path (with its query) matches the regex `pattern` (and `method`) fail: answer `status`, or
    drop the connection (status None)."""

    pattern: str
    method: str | None
    times: int | None  # None: every matching request until cleared
    status: int | None  # None: drop the connection without a response
    message: str = "Internal Server Error (injected fault)"
    hits: int = 0

    def matches(self, method: str, target: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return (self.method is None or self.method == method) and re.search(self.pattern, target) is not None


@dataclass
class RequestRecord:
    method: str
    path: str  # raw path and query, as received
    user: str | None  # the authenticated user (None: anonymous, or a signed URL)
    authorization: bool = False  # whether an Authorization header was sent
    status: int | None = None  # None: dropped


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, hub: HubServer, role: str):
        self.hub, self.role = hub, role
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request, client_address):
        """A client that hangs up is not a server bug; anything else is kept for the test to see."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            with self.hub._lock:
                self.hub.server_errors.append(traceback.format_exc())


class HubServer:
    """The server and its state. Start with `HubServer().start()` or the `hub_server` fixture (tests/conftest.py).

    Accounts: the default user `.user` with its `.token`; `add_user(name, orgs=[...])` adds users (orgs are
    namespaces their members may write to). Every request resets the idle clock of the watchdog.
    """

    def __init__(self, user: str = "tester", token: str | None = None, idle_timeout: float = 600, lifetime=3600):
        self.user = user
        self.token = token or f"hf_test_{secrets.token_hex(16)}"
        self.tokens: dict[str, str] = {self.token: user}
        self.orgs: dict[str, set[str]] = {}  # user -> orgs
        self.repos: dict[str, Repo] = {}
        self.collections: dict[str, dict] = {}  # slug -> the collection as the API returns it
        self.blobs: dict[str, bytes] = {}  # git blob id -> content (regular files and LFS pointers)
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content
        self.lfs_puts: list[str] = []  # oids received through LFS upload PUTs, in order
        self.requests: list[RequestRecord] = []
        self.unhandled: list[str] = []  # "METHOD path" of requests no route knew
        self.server_errors: list[str] = []  # tracebacks of bugs in this server (a test can assert it is empty)
        self.faults: list[Fault] = []
        self.idle_timeout, self.lifetime = idle_timeout, lifetime
        self._lock = threading.RLock()
        self._secret = secrets.token_bytes(16)
        self._counter = 0
        self._last_activity = time.monotonic()
        self._closed = threading.Event()
        self._servers: list[_HTTPServer] = []
        self._threads: list[threading.Thread] = []
        self.endpoint = self.cdn_endpoint = ""
        self.hf_home = None  # set by patch_client: the in-process HF_HOME

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> HubServer:
        """Bind 127.0.0.1 on free ports (the API and the LFS "CDN") and serve from daemon threads."""
        for role in ("api", "cdn"):
            server = _HTTPServer(self, role)
            self._servers.append(server)
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.name = f"hub-server-{role}"
            thread.start()
            self._threads.append(thread)
        api, cdn = (f"http://127.0.0.1:{s.server_address[1]}" for s in self._servers)
        self.endpoint, self.cdn_endpoint = api, cdn
        watchdog = threading.Thread(target=self._watchdog, name="hub-server-watchdog", daemon=True)
        watchdog.start()
        return self

    def close(self) -> None:
        """Stop serving (idempotent). Also called by the watchdog after `idle_timeout` s idle or `lifetime` s."""
        if self._closed.is_set():
            return
        self._closed.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _watchdog(self) -> None:
        started = time.monotonic()
        while not self._closed.wait(1.0):
            now = time.monotonic()
            if now - self._last_activity > self.idle_timeout or now - started > self.lifetime:
                print(f"hub_server: stopping after {now - started:.0f} s (idle or lifetime limit)", file=sys.stderr)
                threading.Thread(target=self.close, daemon=True).start()
                return

    def __enter__(self) -> HubServer:
        return self.start() if not self._servers else self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ accounts and client configuration
    def add_user(self, name: str, orgs=(), token: str | None = None) -> str:
        """Register a user (and its org memberships); returns its token."""
        token = token or f"hf_test_{secrets.token_hex(16)}"
        with self._lock:
            self.tokens[token] = name
            self.orgs.setdefault(name, set()).update(orgs)
        return token

    def env(self, hf_home, token: str | None | bool = True, offline: bool = False, base: dict | None = None) -> dict:
        """Environment for a client subprocess: this endpoint, no Xet, HF_HOME (cache, token file) in `hf_home`.

        `token`: True -> the default user's token; a string -> that token (e.g. a wrong one); None/False -> none.
        `offline`: HF_HUB_OFFLINE=1 (serve from the cache in `hf_home`).
        """
        env = dict(os.environ if base is None else base)
        for var in (
            "HF_HUB_OFFLINE TRANSFORMERS_OFFLINE HF_DATASETS_OFFLINE HF_HUB_CACHE HUGGINGFACE_HUB_CACHE"
            " TRANSFORMERS_CACHE HF_MODULES_CACHE HF_XET_CACHE HF_ASSETS_CACHE HF_TOKEN HUGGING_FACE_HUB_TOKEN"
            " HF_TOKEN_PATH HF_OIDC_RESOURCE HF_HUB_ENABLE_HF_TRANSFER HF_DEBUG"
        ).split():
            env.pop(var, None)
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_HOME=str(hf_home),
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
        )
        if offline:
            env["HF_HUB_OFFLINE"] = "1"
        if token is True:
            env["HF_TOKEN"] = self.token
        elif token:
            env["HF_TOKEN"] = token
        return env

    def patch_client(self, monkeypatch, hf_home, token: str | None | bool = True) -> None:
        """Point this process's huggingface_hub at the server (undone by `monkeypatch`).

        Patches what huggingface_hub read at import (endpoint, offline flag, Xet switch, cache and token paths,
        progress bars off) and HF_TOKEN. Enough for `HfApi()`, `hf_hub_download` and `snapshot_download`
        in-process; transformers keeps copies of some of these, so run `from_pretrained` in a subprocess (`env()`).
        """
        from huggingface_hub import constants, hf_api

        home = str(hf_home)
        patches = {
            "ENDPOINT": self.endpoint,
            "HUGGINGFACE_CO_URL_TEMPLATE": self.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HUB_OFFLINE": False,
            "HF_HUB_DISABLE_XET": True,
            "HF_HUB_CACHE": os.path.join(home, "hub"),
            "HF_ASSETS_CACHE": os.path.join(home, "assets"),
            "HF_XET_CACHE": os.path.join(home, "xet"),
            "HF_TOKEN_PATH": os.path.join(home, "token"),
            "HF_STORED_TOKENS_PATH": os.path.join(home, "stored_tokens"),
        }
        # every other path under the real HF_HOME (the agent registry, update checks...) moves to `hf_home` too
        for name, value in vars(constants).items():
            if name not in patches and isinstance(value, str) and value.startswith(constants.HF_HOME):
                patches[name] = home + value[len(constants.HF_HOME) :]
        for name, value in patches.items():
            monkeypatch.setattr(constants, name, value)
        self.hf_home = hf_home
        monkeypatch.setattr(hf_api.api, "endpoint", self.endpoint)  # the module-level HfApi()
        monkeypatch.setattr(
            importlib.import_module("huggingface_hub.utils.tqdm"), "HF_HUB_DISABLE_PROGRESS_BARS", True
        )
        for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
            monkeypatch.delenv(var, raising=False)
        if token is True:
            monkeypatch.setenv("HF_TOKEN", self.token)
        elif token:
            monkeypatch.setenv("HF_TOKEN", token)

    def python(self, code: str, hf_home, token: str | None | bool = True, offline=False, timeout=300, check=True):
        """Run `python -c code` in a fresh process with `env(hf_home, token, offline)`; returns the CompletedProcess.

        With `check`, a failure raises AssertionError carrying the output (never the token: it is masked).
        """
        import subprocess

        result = subprocess.run(
            [sys.executable, "-c", code],
            env=self.env(hf_home, token=token, offline=offline),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            output = (result.stdout + result.stderr).replace(self.token, "<token>")
            raise AssertionError(f"client process failed ({result.returncode}):\n{output[-6000:]}")
        return result

    def api(self, token: str | None | bool = True):
        """An `HfApi` on this endpoint (token True: the default user's; None/False: anonymous)."""
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self.token if token is True else (token or False))

    # ------------------------------------------------------------------ fault injection
    def fail(self, pattern: str, status: int = 500, times: int | None = 1, method: str | None = None, message=None):
        """The next `times` requests (None: all) whose path (with query) matches the regex answer `status`."""
        fault = Fault(pattern, method, times, status, message or "Internal Server Error (injected fault)")
        with self._lock:
            self.faults.append(fault)
        return fault

    def drop(self, pattern: str, times: int | None = 1, method: str | None = None) -> Fault:
        """The next `times` matching requests (None: all) get their connection closed mid-body, no response."""
        fault = Fault(pattern, method, times, None)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    # ------------------------------------------------------------------ server-side inspection and seeding
    def repo(self, repo_id: str) -> Repo:
        with self._lock:
            if repo_id not in self.repos:
                raise KeyError(f"no repo {repo_id!r} on the test Hub (repos: {sorted(self.repos)})")
            return self.repos[repo_id]

    def head(self, repo_id: str, revision: str = "main") -> str:
        """The commit id a revision (branch, tag, refs/pr/N or commit id) points to."""
        with self._lock:
            return self._resolve(self.repo(repo_id), revision).oid

    def commits(self, repo_id: str, revision: str = "main") -> list[Commit]:
        """The history of a revision, newest first (the repo's initial commit last)."""
        with self._lock:
            repo = self.repo(repo_id)
            commit: Commit | None = self._resolve(repo, revision)
            history = []
            while commit is not None:
                history.append(commit)
                commit = repo.commits[commit.parent] if commit.parent else None
            return history

    def file_entries(self, repo_id: str, revision: str = "main") -> dict[str, FileEntry]:
        with self._lock:
            return dict(self._resolve(self.repo(repo_id), revision).files)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """path -> content (LFS objects resolved) at a revision."""
        with self._lock:
            return {path: self._content(entry) for path, entry in self.file_entries(repo_id, revision).items()}

    def stored_blob(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        """What git stores for a path: the content, or the LFS pointer of an LFS file."""
        with self._lock:
            return self.blobs[self.file_entries(repo_id, revision)[path].blob_id]

    def create_repo(self, repo_id: str, private: bool = False) -> Repo:
        """Create a repo server-side (no HTTP), with the Hub's initial commit of .gitattributes."""
        with self._lock:
            return self._create_repo(repo_id, private, author=_namespace(repo_id))

    def commit_files(self, repo_id: str, files: dict[str, bytes], message: str = "seed", deletions=()) -> str:
        """Commit files server-side (no HTTP) on main, LFS decided by the same rules as preupload; returns the id."""
        with self._lock:
            repo = self.repo(repo_id)
            head = self._resolve(repo, "main")
            tree = dict(head.files)
            for path in deletions:
                tree.pop(path)
            for path, data in files.items():
                if self._upload_mode(head, path, len(data), data[:512]) == "lfs":
                    oid = hashlib.sha256(data).hexdigest()
                    self.lfs_objects[oid] = data
                    repo.lfs_oids.add(oid)
                    tree[path] = self._store_lfs(oid, len(data))
                else:
                    tree[path] = self._store_regular(data)
            commit = self._new_commit(repo, head.oid, tree, message, "", _namespace(repo_id))
            repo.refs["refs/heads/main"] = commit.oid
            return commit.oid

    def requests_to(self, pattern: str, method: str | None = None) -> list[RequestRecord]:
        """Recorded requests whose "path?query" matches the regex (and method)."""
        with self._lock:
            return [r for r in self.requests if (method in (None, r.method)) and re.search(pattern, r.path)]

    # ------------------------------------------------------------------ state helpers (hold the lock)
    def _content(self, entry: FileEntry) -> bytes:
        return self.lfs_objects[entry.lfs_oid] if entry.is_lfs else self.blobs[entry.blob_id]

    def _store_regular(self, data: bytes) -> FileEntry:
        blob_id = git_blob_id(data)
        self.blobs[blob_id] = data
        return FileEntry(size=len(data), blob_id=blob_id)

    def _store_lfs(self, oid: str, size: int) -> FileEntry:
        pointer = lfs_pointer(oid, size)
        blob_id = git_blob_id(pointer)
        self.blobs[blob_id] = pointer
        return FileEntry(size=size, blob_id=blob_id, lfs_oid=oid)

    def _new_commit(self, repo: Repo, parent, tree: dict, title: str, message: str, author: str) -> Commit:
        self._counter += 1
        date = now_iso()
        listing = "".join(f"{path}\0{entry.blob_id}\n" for path, entry in sorted(tree.items()))
        header = f"tree {hashlib.sha1(listing.encode()).hexdigest()}\nparent {parent}\nauthor {author} {date}\n"
        oid = hashlib.sha1(f"{header}{self._counter}\n\n{title}\n\n{message}".encode()).hexdigest()
        commit = Commit(oid, parent, dict(tree), title, message, author, date)
        repo.commits[oid] = commit
        return commit

    def _create_repo(self, repo_id: str, private: bool, author: str) -> Repo:
        repo = Repo(repo_id, private, now_iso())
        first = self._new_commit(repo, None, {".gitattributes": self._store_regular(DEFAULT_GITATTRIBUTES.encode())},
                                 "initial commit", "", author)  # fmt: skip
        repo.refs["refs/heads/main"] = first.oid
        self.repos[repo_id] = repo
        return repo

    def _ref_name(self, repo: Repo, revision: str) -> str | None:
        for ref in (revision, f"refs/heads/{revision}", f"refs/tags/{revision}"):
            if ref in repo.refs:
                return ref
        return None

    def _resolve(self, repo: Repo, revision: str) -> Commit:
        ref = self._ref_name(repo, revision)
        if ref is not None:
            return repo.commits[repo.refs[ref]]
        if revision in repo.commits:
            return repo.commits[revision]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _lfs_patterns(self, commit: Commit) -> list[str]:
        entry = commit.files.get(".gitattributes")
        text = self._content(entry).decode(errors="replace") if entry else ""
        patterns = []
        for line in text.splitlines():
            parts = line.split()
            if parts and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
                patterns.append(parts[0])
        return patterns

    def _upload_mode(self, commit: Commit, path: str, size: int, sample: bytes) -> str:
        if size == 0:
            return "regular"
        if size > LFS_THRESHOLD or b"\0" in sample:
            return "lfs"
        name = path.rsplit("/", 1)[-1]
        for pattern in self._lfs_patterns(commit):
            target = path if "/" in pattern.strip("/") else name
            if fnmatch.fnmatchcase(target, pattern.lstrip("/")):
                return "lfs"
        return "regular"

    def _sign(self, *parts: str) -> str:
        return hmac.new(self._secret, "\0".join(parts).encode(), hashlib.sha256).hexdigest()[:32]


def _ignored(path: str, gitignore: str | None) -> bool:
    """A small .gitignore matcher (name and path globs, no negation): enough for the client's shouldIgnore."""
    if not gitignore:
        return False
    name = path.rsplit("/", 1)[-1]
    for line in gitignore.splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith(("#", "!")):
            continue
        pattern = pattern.rstrip("/")
        if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(path, pattern.lstrip("/")):
            return True
        if path.startswith(pattern.lstrip("/") + "/"):
            return True
    return False


# The values the Hub accepts (a subset of huggingface.js's lists, enough for what this project writes and its tests).
HUB_LICENSES = frozenset({"apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc-by-4.0", "cc-by-sa-4.0",
                          "cc-by-nc-4.0", "cc0-1.0", "gpl-3.0", "lgpl-3.0", "openrail", "bigscience-openrail-m",
                          "llama2", "unlicense", "other", "unknown"})  # fmt: skip
HUB_PIPELINE_TAGS = frozenset({"image-classification", "zero-shot-image-classification", "image-feature-extraction",
                               "object-detection", "image-segmentation", "text-classification",
                               "token-classification", "text-generation", "feature-extraction", "fill-mask",
                               "question-answering", "summarization", "translation", "tabular-classification",
                               "time-series-forecasting", "reinforcement-learning", "other"})  # fmt: skip


def _namespace(repo_key: str) -> str:
    """The owner of a repo: the first part of its id (a Space's key is "spaces/<id>")."""
    return repo_key.removeprefix("spaces/").split("/")[0]


def _space_tree_errors(tree: dict, hub) -> list[str]:
    """What keeps a Space of these files from starting: no README configuration, an sdk that runs an app file that
    is not there, models the card names that this server does not hold."""
    if "README.md" not in tree:
        return ["no README.md: a Space is configured by its front matter (sdk, app_file)"]
    data = _front_matter(hub._content(tree["README.md"]).decode("utf-8", "replace")) or {}
    errors = []
    app_file = data.get("app_file") or "app.py"
    if data.get("sdk") in ("gradio", "streamlit") and app_file not in tree:
        errors.append(f"app_file {app_file!r} is not in the Space")
    for model in data.get("models") or []:
        if model not in hub.repos:
            errors.append(f"the card's model {model!r} is not a model repo here")
    return errors


def _front_matter(content: str):
    match = re.match(r"^\s*---\s*\n(.*?)\n---\s*(\n|$)", content, flags=re.S)
    try:
        return yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError:
        return None


def _validate_space_card(data: dict) -> list[str]:
    """The Spaces configuration reference's rules (https://huggingface.co/docs/hub/spaces-config-reference)."""
    errors = []
    if data.get("sdk") not in SPACE_SDKS:
        errors.append(f'"sdk" must be one of {", ".join(SPACE_SDKS)}, not {data.get("sdk")!r}')
    for key in ("colorFrom", "colorTo"):
        if key in data and data[key] not in SPACE_COLORS:
            errors.append(f'"{key}" must be one of {", ".join(SPACE_COLORS)}, not {data[key]!r}')
    for key in ("title", "emoji", "sdk_version", "app_file", "python_version", "short_description"):
        if key in data and not isinstance(data[key], str):
            errors.append(f'"{key}" must be a string')
    if isinstance(data.get("short_description"), str) and len(data["short_description"]) > 60:
        errors.append('"short_description" must be at most 60 characters')
    for key in ("models", "datasets"):
        for ref in data.get(key) or []:
            if not isinstance(ref, str) or not re.fullmatch(r"[\w.-]+/[\w.-]+", ref):
                errors.append(f'"{key}" must hold Hub repo ids, not {ref!r}')
    return errors


def _validate_card(content: str, repo_type: str = "model") -> tuple[list[str], list[str]]:
    """Errors and warnings for a README's YAML front matter, as /api/validate-yaml reports them."""
    match = re.match(r"^\s*---\s*\n(.*?)\n---\s*(\n|$)", content, flags=re.S)
    if match is None:
        return [], ["empty or missing yaml metadata in repo card (https://huggingface.co/docs/hub/model-cards)"]
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        return [f"Invalid YAML in the README front matter: {err}"], []
    if data is None:
        return [], ["empty or missing yaml metadata in repo card (https://huggingface.co/docs/hub/model-cards)"]
    if not isinstance(data, dict):
        return ["The README front matter must be a YAML mapping"], []
    errors = []
    for key in ("license", "library_name", "pipeline_tag", "base_model"):
        value = data.get(key)
        if value is not None and not isinstance(value, str) and not (key == "base_model" and isinstance(value, list)):
            errors.append(f'"{key}" must be a string')
    for key in ("tags", "datasets", "metrics", "language"):
        value = data.get(key)
        if value is not None and not isinstance(value, (str, list)):
            errors.append(f'"{key}" must be a string or a list of strings')
    if isinstance(data.get("license"), str) and data["license"] not in HUB_LICENSES:
        errors.append(f'"license" must be one of the Hub\'s license identifiers, not {data["license"]!r}')
    if isinstance(data.get("pipeline_tag"), str) and data["pipeline_tag"] not in HUB_PIPELINE_TAGS:
        errors.append(f'"pipeline_tag" must be one of the Hub\'s tasks, not {data["pipeline_tag"]!r}')
    datasets = data.get("datasets")
    for dataset in [datasets] if isinstance(datasets, str) else datasets if isinstance(datasets, list) else []:
        if not isinstance(dataset, str) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", dataset):
            errors.append(f'"datasets" must hold Hub dataset ids, not {dataset!r}')
    index = data.get("model-index")
    if index is not None:
        errors += _validate_model_index(index)
    if repo_type == "space":
        errors += _validate_space_card(data)
    return errors, []


def _validate_model_index(index) -> list[str]:
    if not isinstance(index, list):
        return ['"model-index" must be an array']
    errors = []
    for i, model in enumerate(index):
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            errors.append(f'"model-index[{i}].name" is required and must be a string')
            continue
        results = model.get("results")
        if not isinstance(results, list):
            errors.append(f'"model-index[{i}].results" is required and must be an array')
            continue
        for j, result in enumerate(results):
            where = f"model-index[{i}].results[{j}]"
            if not isinstance(result, dict):
                errors.append(f'"{where}" must be an object')
                continue
            task, dataset, metrics = result.get("task"), result.get("dataset"), result.get("metrics")
            if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                errors.append(f'"{where}.task.type" is required')
            if not isinstance(dataset, dict) or not all(isinstance(dataset.get(k), str) for k in ("type", "name")):
                errors.append(f'"{where}.dataset.type" and "{where}.dataset.name" are required')
            if not isinstance(metrics, list) or not metrics:
                errors.append(f'"{where}.metrics" is required and must be a non-empty array')
                continue
            for k, metric in enumerate(metrics):
                if not isinstance(metric, dict) or not isinstance(metric.get("type"), str) or "value" not in metric:
                    errors.append(f'"{where}.metrics[{k}]" needs "type" and "value"')
    return errors


def _card_data(content: bytes) -> dict | None:
    match = re.match(r"^\s*---\s*\n(.*?)\n---\s*(\n|$)", content.decode(errors="replace"), flags=re.S)
    try:
        data = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def _safetensors_info(data: bytes) -> dict | None:
    try:
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + length])
    except (struct.error, ValueError):
        return None
    parameters: dict[str, int] = {}
    for name, tensor in header.items():
        if name != "__metadata__":
            count = 1
            for dim in tensor["shape"]:
                count *= dim
            parameters[tensor["dtype"]] = parameters.get(tensor["dtype"], 0) + count
    return {"parameters": parameters, "total": sum(parameters.values())}


class _DropConnection(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections end
    server: _HTTPServer

    def log_message(self, format, *args):  # noqa: A002  (quiet: tests read hub.requests instead)
        pass

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

    # ------------------------------------------------------------------ plumbing
    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def _dispatch(self, method: str) -> None:
        hub = self.hub
        if hub.closed:
            self.close_connection = True
            return
        hub._last_activity = time.monotonic()
        self._method, self._body, self._status = method, None, None
        record = RequestRecord(method, self.path, None, "Authorization" in self.headers)
        with hub._lock:
            hub.requests.append(record)
            fault = next((f for f in hub.faults if f.matches(method, self.path)), None)
            if fault is not None:
                fault.hits += 1
        try:
            if fault is not None and fault.status is None:
                raise _DropConnection
            if fault is not None:
                self._read_body()
                raise HubError(fault.status, fault.message)
            record.user = self._user()
            self._route(method)
        except _DropConnection:
            self._drop()
            return
        except (ConnectionError, TimeoutError):  # the client hung up: nothing to answer
            self.close_connection = True
            return
        except HubError as err:
            self._send_error(err)
        except Exception:  # a bug in this server: answer 500 and keep the traceback for the test to show
            trace = traceback.format_exc()
            with hub._lock:
                hub.server_errors.append(trace)
            self._send_error(HubError(500, "Internal error in the test Hub server: " + trace.splitlines()[-1]))
        record.status = self._status

    def _drop(self) -> None:
        """Read part of the request body, then close the socket without answering."""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(max(1, length // 2))
        self._status = None
        self.close_connection = True
        try:
            self.connection.shutdown(2)
        except OSError:
            pass

    def _read_body(self) -> bytes:
        if self._body is None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self._body = b"".join(chunks)
            else:
                self._body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._body

    def _json_body(self):
        try:
            return json.loads(self._read_body() or b"null")
        except ValueError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from err

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self._read_body()  # keep the connection in sync even when the route ignored the body
        self._status = status
        self.send_response(status)
        headers = {"Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("X-Request-Id", f"test-{secrets.token_hex(6)}")
        self.end_headers()
        if self._method != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, data, status: int = 200, headers: dict | None = None, content_type="application/json"):
        self._send(status, json.dumps(data).encode(), headers, content_type)

    def _send_error(self, err: HubError) -> None:
        message = err.message.splitlines()[0][:400].encode("ascii", "backslashreplace").decode()
        headers = {"X-Error-Message": message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        body = err.body if err.body is not None else {"error": err.message}
        self._send_json(body, err.status, headers)

    def _user(self) -> str | None:
        """The authenticated user; a token that is not ours is refused on every route (as the Hub does)."""
        auth = self.headers.get("Authorization")
        if auth is None or self.server.role == "cdn" or self.path.startswith("/lfs-upload/"):
            self._auth_user = None  # signed URLs carry their own authorization
            return None
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        with self.hub._lock:
            user = self.hub.tokens.get(token)
        if user is None:
            raise HubError(401, INVALID_CREDENTIALS)
        self._auth_user = user
        return user

    # ------------------------------------------------------------------ routing
    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        path, self._query = url.path, parse_qs(url.query, keep_blank_values=True)
        if self.server.role == "cdn":
            match = re.fullmatch(r"/lfs/([0-9a-f]{64})", path)
            if match and method in ("GET", "HEAD"):
                return self._cdn_get(match.group(1))
            return self._unhandled(method)

        if path == "/api/whoami-v2" and method == "GET":
            return self._whoami()
        if path == "/api/agent-harnesses" and method == "GET":  # the client's agent detection registry
            return self._send_json({"standardEnvVars": [], "harnesses": {}})
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo()
        if path == "/api/repos/delete" and method == "DELETE":
            return self._delete_repo()
        if path == "/api/validate-yaml" and method == "POST":
            return self._validate_yaml()
        if path == "/api/collections" and method == "POST":
            return self._create_collection()
        match = re.fullmatch(r"/api/collections/([^/]+/[^/]+?)(/items)?", path)
        if match and method == ("POST" if match.group(2) else "GET"):
            slug = unquote(match.group(1))
            return self._add_collection_item(slug) if match.group(2) else self._get_collection(slug)
        match = re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", path)
        if match and method == "PUT":
            return self._lfs_put(match.group(1))
        match = re.fullmatch(r"/api/(models|datasets|spaces|kernels)/([^/]+)/([^/]+)(/.*)?", path)
        if match:
            kind, ns, name, rest = match.groups()
            if kind not in ("models", "spaces"):
                raise HubError(400, f"The test Hub server only hosts model and Space repos, not {kind}")
            prefix = "spaces/" if kind == "spaces" else ""
            return self._repo_api(method, f"{prefix}{unquote(ns)}/{unquote(name)}", rest or "")
        match = re.fullmatch(r"/(spaces/)?([^/]+)/([^/]+)\.git/info/lfs/objects/(batch|verify)", path)
        if match and method == "POST":
            repo_id = f"{match.group(1) or ''}{unquote(match.group(2))}/{unquote(match.group(3))}"
            return self._lfs_batch(repo_id) if match.group(4) == "batch" else self._lfs_verify(repo_id)
        match = re.fullmatch(r"/(spaces/)?([^/]+)/([^/]+)/resolve/([^/]+)/(.+)", path)
        if match and method in ("GET", "HEAD") and not (match.group(1) is None and match.group(2) in REPO_KINDS):
            prefix = match.group(1) or ""
            ns, name, revision, file_path = (unquote(g) for g in match.groups()[1:])
            return self._resolve_file(f"{prefix}{ns}/{name}", revision, file_path)
        match = re.fullmatch(r"/(datasets|spaces|kernels)/.*", path)
        if match:
            raise HubError(400, f"The test Hub server only hosts model and Space repos, not {match.group(1)}")
        return self._unhandled(method)

    def _unhandled(self, method: str):
        with self.hub._lock:
            self.hub.unhandled.append(f"{method} {self.path}")
        raise HubError(404, f"Not implemented by the test Hub server: {method} {urlsplit(self.path).path}")

    def _repo_api(self, method: str, repo_id: str, rest: str) -> None:
        routes = [
            ("GET", r"", lambda: self._model_info(repo_id, "main")),
            ("GET", r"/revision/([^/]+)", lambda rev: self._model_info(repo_id, rev)),
            ("GET", r"/tree/([^/]+)(?:/(.*))?", lambda rev, sub=None: self._tree(repo_id, rev, sub)),
            ("POST", r"/paths-info/([^/]+)", lambda rev: self._paths_info(repo_id, rev)),
            ("POST", r"/preupload/([^/]+)", lambda rev: self._preupload(repo_id, rev)),
            ("POST", r"/commit/([^/]+)", lambda rev: self._commit(repo_id, rev)),
            ("GET", r"/refs", lambda: self._refs(repo_id)),
            ("GET", r"/commits/([^/]+)", lambda rev: self._commits(repo_id, rev)),
            ("POST", r"/branch/([^/]+)", lambda branch: self._create_branch(repo_id, branch)),
            ("DELETE", r"/branch/([^/]+)", lambda branch: self._delete_branch(repo_id, branch)),
            ("POST", r"/tag/([^/]+)", lambda rev: self._create_tag(repo_id, rev)),
            ("PUT", r"/settings", lambda: self._settings(repo_id)),
        ]
        for route_method, pattern, handler in routes:
            match = re.fullmatch(pattern, rest)
            if match and method == route_method:
                return handler(*(unquote(g) if g is not None else None for g in match.groups()))
        if re.fullmatch(r"/xet-(read|write)-token(/.*)?", rest):
            raise HubError(400, "The test Hub server does not speak Xet: run the client with HF_HUB_DISABLE_XET=1")
        return self._unhandled(method)

    # ------------------------------------------------------------------ access control (hold the lock)
    def _readable(self, repo_id: str) -> Repo:
        """The repo if this request may read it; else RepoNotFound as the Hub answers (401 anonymous, 404 else)."""
        repo = self.hub.repos.get(repo_id)
        user = self._auth_user
        if repo is None or (repo.private and not self._may_write_namespace(user, repo_id)):
            raise HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        return repo

    def _writable(self, repo_id: str) -> Repo:
        repo = self._readable(repo_id)
        user = self._auth_user
        if user is None:
            raise HubError(401, "You must be authenticated to write to a repo (Invalid username or password.)")
        if not self._may_write_namespace(user, repo_id):
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def _may_write_namespace(self, user: str | None, repo_id: str) -> bool:
        namespace = _namespace(repo_id)
        return user is not None and (namespace == user or namespace in self.hub.orgs.get(user, set()))

    # ------------------------------------------------------------------ account and repo management
    def _whoami(self) -> None:
        user = self._auth_user
        if user is None:
            raise HubError(401, "Invalid username or password.")
        orgs = sorted(self.hub.orgs.get(user, set()))
        self._send_json(
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user.title(),
                "email": f"{user}@example.invalid",
                "emailVerified": True,
                "isPro": False,
                "orgs": [{"type": "org", "name": org, "fullname": org, "roleInOrg": "write"} for org in orgs],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test token", "role": "write"}},
            }
        )

    def _create_repo(self) -> None:
        body = self._json_body() or {}
        user = self._auth_user
        if user is None:
            raise HubError(401, "Invalid username or password.")
        kind = body.get("type") or "model"
        if kind not in ("model", "space"):
            raise HubError(400, f"The test Hub server only hosts model and Space repos, not {kind!r}")
        if kind == "space" and body.get("sdk") not in SPACE_SDKS:
            raise HubError(400, f"A Space needs an sdk, one of {', '.join(SPACE_SDKS)} (got {body.get('sdk')!r})")
        name, namespace = body.get("name"), body.get("organization") or user
        for part in (name, namespace):
            if not isinstance(part, str) or not NAME_RE.match(part) or part.endswith(".git"):
                raise HubError(400, f"Invalid repo name {part!r}: use letters, digits, '-', '_', '.' (at most 96)")
        repo_id = f"{'spaces/' if kind == 'space' else ''}{namespace}/{name}"
        if not self._may_write_namespace(user, repo_id):
            raise HubError(403, f'You don\'t have the rights to create a {kind} under the namespace "{namespace}"')
        url = f"{self.hub.endpoint}/{repo_id}"
        with self.hub._lock:
            if repo_id in self.hub.repos:
                raise HubError(409, f"You already created this {kind} repo", body={"error": "You already created "
                               f"this {kind} repo", "url": url})  # fmt: skip
            private = body.get("private", body.get("visibility") == "private")
            self.hub._create_repo(repo_id, bool(private), author=user)
        self._send_json({"url": url, "name": repo_id.removeprefix("spaces/"), "id": repo_id.removeprefix("spaces/")},
                        200)  # fmt: skip

    def _delete_repo(self) -> None:
        body = self._json_body() or {}
        prefix = "spaces/" if body.get("type") == "space" else ""
        repo_id = f"{prefix}{body.get('organization') or self._auth_user}/{body.get('name')}"
        with self.hub._lock:
            self._writable(repo_id)
            del self.hub.repos[repo_id]
        self._send_json({})

    def _settings(self, repo_id: str) -> None:
        body = self._json_body() or {}
        with self.hub._lock:
            repo = self._writable(repo_id)
            if "private" in body:
                repo.private = bool(body["private"])
            if "visibility" in body:
                repo.private = body["visibility"] == "private"
        self._send_json({})

    def _validate_yaml(self) -> None:
        body = self._json_body() or {}
        errors, warnings = _validate_card(str(body.get("content", "")), body.get("repoType") or "model")
        payload = {"errors": [{"message": e} for e in errors], "warnings": [{"message": w} for w in warnings]}
        if errors:
            raise HubError(400, "Invalid metadata in README.md: " + "; ".join(errors), body=payload)
        self._send_json(payload)

    # ------------------------------------------------------------------ reading
    def _model_info(self, repo_id: str, revision: str) -> None:
        blobs = (self._query.get("blobs") or ["false"])[0].lower() in ("1", "true")
        with self.hub._lock:
            repo = self._readable(repo_id)
            commit = self.hub._resolve(repo, revision)
            siblings = []
            for path, entry in sorted(commit.files.items()):
                sibling = {"rfilename": path}
                if blobs:
                    sibling.update(size=entry.size, blobId=entry.blob_id)
                    if entry.is_lfs:
                        pointer_size = len(self.hub.blobs[entry.blob_id])
                        sibling["lfs"] = {"sha256": entry.lfs_oid, "size": entry.size, "pointerSize": pointer_size}
                siblings.append(sibling)
            card = _card_data(self.hub._content(commit.files["README.md"])) if "README.md" in commit.files else None
            config = None
            if "config.json" in commit.files:
                try:
                    full = json.loads(self.hub._content(commit.files["config.json"]))
                    config = {k: full[k] for k in ("architectures", "model_type", "auto_map") if k in full}
                except ValueError:
                    config = None
            safetensors = (
                _safetensors_info(self.hub._content(commit.files["model.safetensors"]))
                if "model.safetensors" in commit.files
                else None
            )
            info = {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id.removeprefix("spaces/"),
                "modelId": repo_id.removeprefix("spaces/"),
                "author": _namespace(repo_id),
                "sha": commit.oid,
                "lastModified": commit.date,
                "createdAt": repo.created_at,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [str(t) for t in card["tags"]] if card and isinstance(card.get("tags"), list) else [],
                "siblings": siblings,
                "usedStorage": sum(e.size for e in commit.files.values()),
            }
            if card is not None:
                info["cardData"] = card
                for key in ("library_name", "pipeline_tag"):
                    if isinstance(card.get(key), str):
                        info[key] = card[key]
                if "model-index" in card:
                    info["model-index"] = card["model-index"]
            if repo_id.startswith("spaces/"):  # a Space's info names its sdk (from its card, as the Hub reads it)
                info["sdk"] = (card or {}).get("sdk")
            if config is not None:
                info["config"] = config
            if safetensors is not None:
                info["safetensors"] = safetensors
        self._send_json(info)

    def _path_info(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict | None:
        entry = commit.files.get(path)
        if entry is not None:
            info = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": path}
            if entry.is_lfs:
                pointer_size = len(self.hub.blobs[entry.blob_id])
                info["lfs"] = {"oid": entry.lfs_oid, "size": entry.size, "pointerSize": pointer_size}
        elif any(p.startswith(path + "/") for p in commit.files):
            inside = sorted((p, e) for p, e in commit.files.items() if p.startswith(path + "/"))
            listing = "".join(f"{p}\0{e.blob_id}\n" for p, e in inside)
            info = {"type": "directory", "oid": hashlib.sha1(listing.encode()).hexdigest(), "size": 0, "path": path}
        else:
            return None
        if expand:
            last = commit
            while last.parent is not None:
                parent = repo.commits[last.parent]
                if self._path_info(repo, parent, path, False) != self._path_info(repo, last, path, False):
                    break
                last = parent
            info["lastCommit"] = {"id": last.oid, "title": last.title, "date": last.date}
        return info

    def _tree(self, repo_id: str, revision: str, sub: str | None) -> None:
        recursive = (self._query.get("recursive") or ["false"])[0].lower() in ("1", "true")
        expand = (self._query.get("expand") or ["false"])[0].lower() in ("1", "true")
        prefix = (sub or "").strip("/")
        with self.hub._lock:
            repo = self._readable(repo_id)
            commit = self.hub._resolve(repo, revision)
            if prefix and self._path_info(repo, commit, prefix, False) is None:
                raise HubError(404, f"Entry not found: {prefix}", "EntryNotFound")
            paths = set()
            for path in commit.files:
                if prefix and not path.startswith(prefix + "/"):
                    continue
                parts = path[len(prefix) + 1 if prefix else 0 :].split("/")
                base = prefix + "/" if prefix else ""
                depth = len(parts) if recursive else 1
                for i in range(1, min(depth, len(parts)) + 1):
                    paths.add(base + "/".join(parts[:i]))
            entries = [self._path_info(repo, commit, p, expand) for p in sorted(paths)]
        entries.sort(key=lambda e: (e["type"] != "directory", e["path"]))
        self._send_json(entries)

    def _paths_info(self, repo_id: str, revision: str) -> None:
        form = parse_qs(self._read_body().decode(), keep_blank_values=True)
        if self.headers.get("Content-Type", "").startswith("application/json"):
            data = self._json_body() or {}
            form = {"paths": data.get("paths", []), "expand": [str(data.get("expand", False))]}
        expand = (form.get("expand") or ["false"])[0].lower() in ("1", "true")
        with self.hub._lock:
            repo = self._readable(repo_id)
            commit = self.hub._resolve(repo, revision)
            infos = [self._path_info(repo, commit, p.strip("/"), expand) for p in form.get("paths", [])]
        self._send_json([info for info in infos if info is not None])

    def _refs(self, repo_id: str) -> None:
        with self.hub._lock:
            repo = self._readable(repo_id)
            refs = {"branches": [], "converts": [], "tags": [], "pullRequests": []}
            for ref, oid in sorted(repo.refs.items()):
                kind, name = (
                    ("branches", ref[11:])
                    if ref.startswith("refs/heads/")
                    else ("tags", ref[10:])
                    if ref.startswith("refs/tags/")
                    else ("pullRequests", ref)
                )
                refs[kind].append({"name": name, "ref": ref, "targetCommit": oid})
        if not self._query.get("include_prs"):
            refs.pop("pullRequests")
        self._send_json(refs)

    def _commits(self, repo_id: str, revision: str) -> None:
        with self.hub._lock:
            self._readable(repo_id)
            history = self.hub.commits(repo_id, revision)
        self._send_json(
            [
                {"id": c.oid, "title": c.title, "message": c.message, "date": c.date, "authors": [{"user": c.author}]}
                for c in history
            ]
        )

    def _resolve_file(self, repo_id: str, revision: str, path: str) -> None:
        with self.hub._lock:
            repo = self._readable(repo_id)
            commit = self.hub._resolve(repo, revision)
            entry = commit.files.get(path)
            if entry is None:
                raise HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": commit.oid})
            data = None if entry.is_lfs else self.hub.blobs[entry.blob_id]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{entry.blob_id}"', "Accept-Ranges": "bytes"}
        if entry.is_lfs:  # as the Hub: a redirect to the CDN (another origin), the object's sha256 and size
            location = f"{self.hub.cdn_endpoint}/lfs/{entry.lfs_oid}?filename={quote(path.rsplit('/', 1)[-1])}"
            location += f"&sig={self.hub._sign(entry.lfs_oid)}"
            headers.update(
                {"Location": location, "X-Linked-Etag": f'"{entry.lfs_oid}"', "X-Linked-Size": str(entry.size)}
            )
            return self._send(302, b"", headers, content_type="text/plain; charset=utf-8")
        self._send_content(data, headers)

    def _send_content(self, data: bytes, headers: dict) -> None:
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and (match.group(1) or match.group(2)):
            start, end = match.groups()
            if start:
                first, last = int(start), min(int(end) if end else len(data) - 1, len(data) - 1)
            else:
                first, last = max(0, len(data) - int(end)), len(data) - 1
            if first >= len(data) or first > last:
                raise HubError(416, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
            headers = {**headers, "Content-Range": f"bytes {first}-{last}/{len(data)}"}
            return self._send(206, data[first : last + 1], headers, content_type="application/octet-stream")
        self._send(200, data, headers, content_type="application/octet-stream")

    def _cdn_get(self, oid: str) -> None:
        sig = (self._query.get("sig") or [""])[0]
        if not hmac.compare_digest(sig, self.hub._sign(oid)):
            raise HubError(403, "Request has expired or the signature does not match")
        with self.hub._lock:
            data = self.hub.lfs_objects.get(oid)
        if data is None:
            raise HubError(404, "NoSuchKey")
        filename = (self._query.get("filename") or [oid])[0]
        headers = {
            "ETag": f'"{oid}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{filename}";',
        }
        self._send_content(data, headers)

    # ------------------------------------------------------------------ uploading
    def _preupload(self, repo_id: str, revision: str) -> None:
        body = self._json_body() or {}
        create_pr = bool(self._query.get("create_pr"))
        with self.hub._lock:
            repo = self._readable(repo_id) if create_pr else self._writable(repo_id)
            if create_pr and self._auth_user is None:
                raise HubError(401, "You must be authenticated to open a pull request")
            commit = self.hub._resolve(repo, revision)
            gitignore = body.get("gitIgnore")
            if gitignore is None and ".gitignore" in commit.files:
                gitignore = self.hub._content(commit.files[".gitignore"]).decode(errors="replace")
            files = []
            for item in body.get("files", []):
                path, size = item["path"], int(item["size"])
                sample = base64.b64decode(item.get("sample") or "")
                mode = self.hub._upload_mode(commit, path, size, sample)
                info = {"path": path, "uploadMode": mode, "shouldIgnore": _ignored(path, gitignore)}
                existing = commit.files.get(path)
                if existing is not None:  # lets the client skip unchanged files
                    info["oid"] = existing.lfs_oid if existing.is_lfs else existing.blob_id
                files.append(info)
        self._send_json({"files": files, "commitOid": commit.oid})

    def _lfs_batch(self, repo_id: str) -> None:
        body = self._json_body() or {}
        operation = body.get("operation")
        with self.hub._lock:
            repo = self._writable(repo_id) if operation == "upload" else self._readable(repo_id)
            if operation not in ("upload", "download"):
                raise HubError(400, f"Unknown LFS batch operation {operation!r}")
            if "basic" not in body.get("transfers", ["basic"]):
                raise HubError(400, "The test Hub server only offers the 'basic' LFS transfer")
            objects = []
            for obj in body.get("objects", []):
                oid, size = obj.get("oid"), obj.get("size")
                if not isinstance(oid, str) or not SHA256_RE.match(oid) or not isinstance(size, int) or size < 0:
                    objects.append({"oid": str(oid), "size": size if isinstance(size, int) else -1,
                                    "error": {"code": 422, "message": "Invalid oid or size"}})  # fmt: skip
                    continue
                stored = self.hub.lfs_objects.get(oid)
                result = {"oid": oid, "size": size, "authenticated": True}
                if operation == "download":
                    if stored is None or oid not in repo.lfs_oids:
                        result["error"] = {"code": 404, "message": "Object does not exist"}
                    else:
                        href = f"{self.hub.cdn_endpoint}/lfs/{oid}?sig={self.hub._sign(oid)}"
                        result["actions"] = {"download": {"href": href}}
                elif stored is not None and len(stored) == size:
                    repo.lfs_oids.add(oid)  # already in storage: no action, the client skips the upload
                else:
                    sig = self.hub._sign(repo_id, oid, str(size))
                    href = f"{self.hub.endpoint}/lfs-upload/{oid}?repo={quote(repo_id, safe='')}&size={size}&sig={sig}"
                    verify = f"{self.hub.endpoint}/{repo_id}.git/info/lfs/objects/verify"
                    result["actions"] = {"upload": {"href": href, "expires_in": 3600}, "verify": {"href": verify}}
                objects.append(result)
        self._send_json(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, content_type=LFS_CONTENT_TYPE
        )

    def _lfs_put(self, oid: str) -> None:
        repo_id = (self._query.get("repo") or [""])[0]
        size = int((self._query.get("size") or ["-1"])[0])
        sig = (self._query.get("sig") or [""])[0]
        if not hmac.compare_digest(sig, self.hub._sign(repo_id, oid, str(size))):
            raise HubError(403, "Request has expired or the signature does not match")
        data = self._read_body()
        if len(data) != size:
            raise HubError(400, f"Size mismatch: expected {size} bytes, received {len(data)}")
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, "sha256 mismatch: the content does not match the oid it was announced with")
        with self.hub._lock:
            self.hub.lfs_objects[oid] = data
            self.hub.lfs_puts.append(oid)
            if repo_id in self.hub.repos:
                self.hub.repos[repo_id].lfs_oids.add(oid)
        self._send(200, b"", {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    def _lfs_verify(self, repo_id: str) -> None:
        body = self._json_body() or {}
        with self.hub._lock:
            repo = self._writable(repo_id)
            oid, size = body.get("oid"), body.get("size")
            stored = self.hub.lfs_objects.get(oid)
            if stored is None or oid not in repo.lfs_oids or len(stored) != size:
                raise HubError(404, f"LFS object {oid} was not uploaded (or has another size)")
        self._send_json({"success": True})

    def _commit(self, repo_id: str, revision: str) -> None:
        lines = [json.loads(line) for line in self._read_body().splitlines() if line.strip()]
        create_pr = bool(self._query.get("create_pr"))
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "A commit payload starts with a header line")
        header = lines[0]["value"]
        title = header.get("summary") or ""
        if not title:
            raise HubError(400, "The commit summary (message) cannot be empty")
        hub = self.hub
        with hub._lock:
            repo = self._readable(repo_id) if create_pr else self._writable(repo_id)
            if create_pr and self._auth_user is None:
                raise HubError(401, "You must be authenticated to open a pull request")
            ref = hub._ref_name(repo, revision)
            if ref is None or not ref.startswith(("refs/heads/", "refs/pr/")):
                if ref is None and revision not in repo.commits:
                    raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
                raise HubError(400, f"Can only commit to a branch, not to {revision!r}")
            head = repo.commits[repo.refs[ref]]
            parent_commit = header.get("parentCommit")
            if parent_commit is not None and parent_commit != head.oid:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(head.files)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value") or {}
                path = str(value.get("path", "")).strip("/")
                if key in ("file", "lfsFile", "deletedFile", "deletedFolder") and (
                    not path or ".." in path.split("/") or path.split("/")[0] == ".git"
                ):
                    raise HubError(400, f"Invalid path {path!r}")
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                    data = base64.b64decode(value.get("content", ""))
                    if hub._upload_mode(head, path, len(data), data[:512]) == "lfs":
                        raise HubError(
                            400,
                            f"Your push was rejected because {path} must be stored with LFS (binary, over 10 MiB or "
                            "matched by .gitattributes): ask /preupload for the upload mode",
                        )
                    tree[path] = hub._store_regular(data)
                elif key == "lfsFile":
                    oid = value.get("oid")
                    stored = hub.lfs_objects.get(oid)
                    if value.get("algo", "sha256") != "sha256" or stored is None or oid not in repo.lfs_oids:
                        raise HubError(422, f"LFS object {oid} for {path} was not uploaded to this repo")
                    if value.get("size") is not None and value["size"] != len(stored):
                        raise HubError(
                            422, f"LFS object {oid} for {path} has {len(stored)} bytes, not {value['size']}"
                        )
                    tree[path] = hub._store_lfs(oid, len(stored))
                elif key == "deletedFile":
                    if tree.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif key == "deletedFolder":
                    inside = [p for p in tree if p.startswith(path + "/")]
                    if not inside:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in inside:
                        del tree[p]
                else:
                    raise HubError(400, f"Unknown commit operation {key!r}")
            kind = "space" if repo_id.startswith("spaces/") else "model"
            if "README.md" in tree and tree["README.md"] is not head.files.get("README.md"):
                card = hub._content(tree["README.md"]).decode("utf-8", "replace")
                errors, _ = _validate_card(card, kind)
                if errors:  # the Hub refuses a push whose card metadata it cannot index
                    raise HubError(400, "Invalid metadata in README.md: " + "; ".join(errors))
            if kind == "space":  # a Space that cannot start is refused here (the Hub would fail its build)
                errors = _space_tree_errors(tree, hub)
                if errors:
                    raise HubError(400, "This Space would not build: " + "; ".join(errors))
            pr_url = None
            if create_pr:
                repo.pr_count += 1
                ref = f"refs/pr/{repo.pr_count}"
                pr_url = f"{hub.endpoint}/{repo_id}/discussions/{repo.pr_count}"
            commit = hub._new_commit(repo, head.oid, tree, title, header.get("description") or "", self._auth_user)
            repo.refs[ref] = commit.oid
        self._send_json(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{hub.endpoint}/{repo_id}/commit/{commit.oid}",
                "hookOutput": "",
                "pullRequestUrl": pr_url,
            }
        )

    def _create_branch(self, repo_id: str, branch: str) -> None:
        body = self._json_body() or {}
        with self.hub._lock:
            repo = self._writable(repo_id)
            start = self.hub._resolve(repo, body.get("startingPoint") or "main")
            if f"refs/heads/{branch}" in repo.refs:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            if not NAME_RE.match(branch.replace("/", "-")):
                raise HubError(400, f"Invalid branch name {branch!r}")
            repo.refs[f"refs/heads/{branch}"] = start.oid
        self._send_json({})

    def _delete_branch(self, repo_id: str, branch: str) -> None:
        with self.hub._lock:
            repo = self._writable(repo_id)
            if branch == "main" or repo.refs.pop(f"refs/heads/{branch}", None) is None:
                raise HubError(400 if branch == "main" else 404, f"Cannot delete branch {branch!r}")
        self._send_json({})

    # ------------------------------------------------------------------ collections
    def _create_collection(self) -> None:
        body = self._json_body() or {}
        user = self._auth_user
        if user is None:
            raise HubError(401, "You must be authenticated to create a collection")
        title, namespace = body.get("title"), body.get("namespace") or user
        if not isinstance(title, str) or not title.strip():
            raise HubError(400, "A collection needs a title")
        if len(body.get("description") or "") > 150:
            raise HubError(400, "A collection's description holds at most 150 characters")
        if not self._may_write_namespace(user, f"{namespace}/x"):
            raise HubError(403, f"You don't have the rights to create a collection in {namespace}")
        with self.hub._lock:
            for slug, collection in self.hub.collections.items():
                if collection["owner"]["name"] == namespace and collection["title"] == title:
                    return self._send_json({"error": "Collection already exists", "slug": slug}, status=409)
            slug = f"{namespace}/{re.sub(r'[^a-z0-9]+', '-', title.lower()).strip('-')}-{secrets.token_hex(12)}"
            self.hub.collections[slug] = {
                "slug": slug, "title": title, "description": body.get("description"), "private": bool(body.get(
                    "private")), "owner": {"name": namespace, "type": "user" if namespace == user else "org"},
                "items": [], "lastUpdated": now_iso(), "position": 0, "theme": "indigo", "upvotes": 0,
            }  # fmt: skip
            collection = json.loads(json.dumps(self.hub.collections[slug]))
        self._send_json(collection)

    def _get_collection(self, slug: str) -> None:
        with self.hub._lock:
            collection = self.hub.collections.get(slug)
            if collection is None or (collection["private"] and self._auth_user is None):
                raise HubError(404, f"Collection {slug} not found")
            self._send_json(json.loads(json.dumps(collection)))

    def _add_collection_item(self, slug: str) -> None:
        body = self._json_body() or {}
        item = body.get("item") or {}
        with self.hub._lock:
            collection = self.hub.collections.get(slug)
            if collection is None:
                raise HubError(404, f"Collection {slug} not found")
            if not self._may_write_namespace(self._auth_user, f"{collection['owner']['name']}/x"):
                raise HubError(403, f"You don't have the rights to edit the collection {slug}")
            if item.get("type") != "model":
                raise HubError(400, "The test Hub server holds models only, not " + repr(item.get("type")))
            self._readable(item.get("id") or "")
            if any(entry["id"] == item["id"] for entry in collection["items"]):
                raise HubError(409, f"{item['id']} is already in the collection")
            entry = {"_id": secrets.token_hex(12), "id": item["id"], "type": "model",
                     "position": len(collection["items"])}  # fmt: skip
            if body.get("note"):
                entry["note"] = {"text": body["note"]}
            collection["items"].append(entry)
            collection["lastUpdated"] = now_iso()
            self._send_json(json.loads(json.dumps(collection)))

    def _create_tag(self, repo_id: str, revision: str) -> None:
        body = self._json_body() or {}
        with self.hub._lock:
            repo = self._writable(repo_id)
            commit = self.hub._resolve(repo, revision)
            tag = body.get("tag")
            if not isinstance(tag, str) or not tag:
                raise HubError(400, "A tag name is required")
            if f"refs/tags/{tag}" in repo.refs:
                raise HubError(409, f"Reference already exists: refs/tags/{tag}")
            repo.refs[f"refs/tags/{tag}"] = commit.oid
        self._send_json({})
