"""Local imitation of the Hugging Face Hub for the hf_upload tests (Python standard library only).

It speaks the endpoints huggingface_hub uses, faithfully enough to catch protocol mistakes:
  GET  /api/whoami-v2
  POST /api/repos/create                               (409 when the repo exists)
  POST /api/models/{repo}/preupload/{rev}              (upload mode per file)
  POST /{repo}.git/info/lfs/objects/batch              (git-lfs batch; basic or multipart)
  PUT  /_storage/basic/{oid}?sig=...                   (presigned single PUT; checks size and sha256)
  PUT  /_storage/part/{oid}/{n}?sig=...                (presigned part PUT; answers an ETag)
  POST /_storage/complete/{oid}?sig=...                (multipart completion: parts + ETags)
  POST /{repo}.git/info/lfs/objects/verify
  POST /api/models/{repo}/commit/{rev}                 (NDJSON: header line, file, lfsFile, deletedFile)
  GET  /api/models/{repo}/revision/{rev}               (sha + siblings)
  GET  /api/models/{repo}/tree/{rev}[/{path}]          (?recursive=; pages of tree_page_size entries
                                                        chained by a Link rel="next" header)
  HEAD/GET /{repo}/resolve/{rev}/{path}                (X-Repo-Commit, ETag, X-Linked-Etag/Size; LFS
                                                        files redirect to /_cdn, which redirects to
                                                        /_storage/object; Range everywhere; a missing
                                                        file is 404 EntryNotFound with X-Repo-Commit)
  GET  /api/datasets/{repo}/revision/{rev}, GET /api/datasets/{repo}/tree/{rev}[/{path}],
  HEAD/GET /datasets/{repo}/resolve/{rev}/{path}       (the same for dataset repos; a gated repo
                                                        answers 403 GatedRepo to users not granted)
Storage URLs refuse an Authorization header, as presigned S3 URLs do. Tests inject faults (a
status with headers, a connection dropped after N body bytes, or a body that stalls after N bytes
until the client goes away) with Hub.fault(...); Hub.throttle slows file bodies to bytes per second.

Run alone:  python3 hub_server.py [--port 0] [--token T]   (prints the port, serves until killed)
"""

import base64
import hashlib
import hmac
import json
import re
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth", ".npy", ".npz", ".ckpt", ".zip", ".h5",
                  ".msgpack", ".onnx", ".gguf", ".tar", ".gz", ".parquet")
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.pt filter=lfs diff=lfs merge=lfs -text\n"
LFS_JSON = "application/vnd.git-lfs+json"
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
REPO = rf"{NAME}(?:/{NAME})?"


def git_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(oid, size):
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


class HubError(Exception):
    def __init__(self, status, message, code=None, headers=None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class Fault:
    """One injected fault: the next `times` requests matching method and path regex get it."""

    def __init__(self, method, path, status=None, headers=None, times=1, drop_after=None, message=None,
                 stall_after=None):
        self.method, self.path = method, re.compile(path)
        self.status, self.headers, self.times = status, headers or {}, times
        self.drop_after, self.message = drop_after, message or "injected fault"
        self.stall_after = stall_after
        self.hits = 0


def repo_key(repo_id, repo_type="model"):
    """Hub.repos is keyed by id for models and by "datasets/<id>" for datasets."""
    return repo_id if repo_type == "model" else f"{repo_type}s/{repo_id}"


class Repo:
    def __init__(self, repo_id, owner, private, repo_type="model", gated=False):
        self.id, self.owner, self.private = repo_id, owner, private
        self.type, self.gated, self.granted = repo_type, gated, set()
        initial = {".gitattributes": {"data": GITATTRIBUTES, "lfs": None, "size": len(GITATTRIBUTES)}}
        oid = hashlib.sha1(f"initial {repo_id}".encode()).hexdigest()
        self.commits = {oid: {"parent": None, "files": initial, "summary": "initial commit"}}
        self.branches = {"main": oid}
        self.order = [oid]


class Hub:
    """The imitation's state plus the server. Methods without a leading underscore are for tests."""

    def __init__(self, lfs_threshold=10 * 1024 * 1024, multipart_threshold=None, chunk_size=5 * 1024 * 1024,
                 offer_verify=True, commit_max_bytes=None):
        self.lfs_threshold, self.multipart_threshold = lfs_threshold, multipart_threshold
        self.chunk_size, self.offer_verify, self.commit_max_bytes = chunk_size, offer_verify, commit_max_bytes
        self.tokens = {}        # token -> {"user": name, "write": bool}
        self.repos = {}         # repo_key(id, type) -> Repo
        self.tree_page_size = 1000
        self.throttle = None    # bytes per second for file bodies, None = as fast as possible
        self.renamed = {}       # old repo id -> new repo id
        self.objects = {}       # sha256 -> bytes
        self.pending = {}       # sha256 -> announced size
        self.parts = {}         # sha256 -> {part number: (bytes, etag)}
        self.faults = []
        self.log = []           # one dict per request: method, path, auth, range, status
        self.lock = threading.RLock()
        self.secret = secrets.token_bytes(16)
        self.httpd = None
        self.base = None

    # ---- test-facing API ----
    def start(self, port=0):
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self.httpd = _Server(("127.0.0.1", port), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def add_token(self, token, user, write=True):
        self.tokens[token] = {"user": user, "write": write}

    def create_repo(self, repo_id, private=False, repo_type="model", gated=False):
        with self.lock:
            key = repo_key(repo_id, repo_type)
            self.repos[key] = Repo(repo_id, repo_id.split("/")[0], private, repo_type, gated)
            return self.repos[key]

    def fault(self, method, path, **kw):
        f = Fault(method, path, **kw)
        with self.lock:
            self.faults.append(f)
        return f

    def clear_faults(self):
        with self.lock:
            self.faults = []

    def head(self, repo_id, branch="main", repo_type="model"):
        return self.repos[repo_key(repo_id, repo_type)].branches[branch]

    def commit_count(self, repo_id):
        return len(self.repos[repo_id].order) if repo_id in self.repos else 0

    def commit_info(self, repo_id, oid):
        return self.repos[repo_id].commits[oid]

    def files(self, repo_id, rev="main"):
        """path -> bytes of the files at a revision, LFS files resolved to their objects."""
        repo = self.repos[repo_id]
        files = repo.commits[repo.branches.get(rev, rev)]["files"]
        return {p: (self.objects[e["lfs"]] if e["lfs"] else e["data"]) for p, e in files.items()}

    def lfs_paths(self, repo_id, rev="main"):
        repo = self.repos[repo_id]
        files = repo.commits[repo.branches.get(rev, rev)]["files"]
        return {p for p, e in files.items() if e["lfs"]}

    def put_commit(self, repo_id, files, summary="seed", lfs=(), repo_type="model"):
        """Commit directly (test setup): files path -> bytes; paths in lfs become LFS files."""
        with self.lock:
            changes = {}
            for path, data in files.items():
                if path in lfs:
                    oid = hashlib.sha256(data).hexdigest()
                    self.objects[oid] = data
                    changes[path] = {"data": None, "lfs": oid, "size": len(data)}
                else:
                    changes[path] = {"data": data, "lfs": None, "size": len(data)}
            return self._new_commit(self.repos[repo_key(repo_id, repo_type)], "main", changes, [], summary)

    def requests(self, method=None, path=None):
        with self.lock:
            return [r for r in self.log if (method is None or r["method"] == method)
                    and (path is None or re.search(path, r["path"]))]

    def stored_bytes(self):
        """Every byte the Hub holds (objects and regular files), to grep for leaked secrets."""
        chunks = list(self.objects.values())
        for repo in self.repos.values():
            for c in repo.commits.values():
                chunks += [e["data"] for e in c["files"].values() if e["data"] is not None]
                chunks.append(c["summary"].encode())
        return chunks

    # ---- internals shared by the handler ----
    def _sign(self, kind, oid, n=0):
        return hmac.new(self.secret, f"{kind}:{oid}:{n}".encode(), hashlib.sha256).hexdigest()[:32]

    def _take_fault(self, method, path):
        with self.lock:
            for f in self.faults:
                if f.times > 0 and (f.method is None or f.method == method) and f.path.search(path):
                    f.times -= 1
                    f.hits += 1
                    return f
        return None

    def _new_commit(self, repo, branch, changes, deletions, summary):
        parent = repo.branches[branch]
        files = dict(repo.commits[parent]["files"])
        for p in deletions:
            files.pop(p, None)
        files.update(changes)
        body = json.dumps([parent, summary, len(repo.order), sorted((p, e["lfs"] or git_sha1(e["data"]))
                                                                   for p, e in files.items())])
        oid = hashlib.sha1(body.encode()).hexdigest()
        repo.commits[oid] = {"parent": parent, "files": files, "summary": summary}
        repo.branches[branch] = oid
        repo.order.append(oid)
        return oid


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # Dropped connections are part of the tests; anything else is worth a traceback.
        if not isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError, socket.timeout, OSError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub = None
    entry = None

    def log_message(self, fmt, *args):
        pass

    def send_response(self, code, message=None):
        if self.entry is not None:
            self.entry["status"] = code
        super().send_response(code, message)

    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")

    # ---- plumbing ----
    def _route(self, method):
        hub = self.hub
        path, _, query = self.path.partition("?")
        self.query = urllib.parse.parse_qs(query)
        self.entry = {"method": method, "path": path, "auth": "Authorization" in self.headers,
                      "range": self.headers.get("Range"), "status": None}
        with hub.lock:
            hub.log.append(self.entry)
        self.drop_after = self.stall_after = None
        self._drained = False
        fault = hub._take_fault(method, path)
        try:
            if fault is not None and fault.drop_after is not None and method in ("PUT", "POST"):
                self._drop_mid_body(fault.drop_after)
                return
            if fault is not None and fault.stall_after is not None:
                self.stall_after = fault.stall_after
            elif fault is not None and fault.drop_after is not None:
                self.drop_after = fault.drop_after
            elif fault is not None:
                self._drain()
                raise HubError(fault.status, fault.message, headers=fault.headers)
            self._dispatch(method, path)
        except HubError as e:
            self._drain()
            headers = dict(e.headers)
            if e.code:
                headers["X-Error-Code"] = e.code
            headers["X-Error-Message"] = e.message
            self._send(e.status, json.dumps({"error": e.message}).encode(), "application/json", headers)

    def _drop_mid_body(self, n):
        """Read n bytes of the request body, then cut the connection without answering."""
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(min(n, length))
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _drain(self):
        if self._drained:
            return
        self._drained = True
        length = int(self.headers.get("Content-Length") or 0)
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                break
            length -= len(chunk)

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise HubError(411, "Length Required")
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        self._drained = True
        if len(data) != length:
            raise HubError(400, "request body shorter than Content-Length")
        return data

    def _json_body(self):
        try:
            return json.loads(self._body())
        except ValueError:
            raise HubError(400, "body is not valid JSON")

    def _send(self, status, body=b"", content_type="application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, obj, status=200, content_type="application/json"):
        self._send(status, json.dumps(obj).encode(), content_type)

    def _send_bytes(self, data, headers):
        """Serve data with Range support; an injected drop cuts the body after drop_after bytes."""
        total = len(data)
        start, end, status = 0, total - 1, 200
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if not m:
                raise HubError(400, "bad Range header")
            start = int(m.group(1))
            end = min(int(m.group(2)), total - 1) if m.group(2) else total - 1
            if start >= total:
                raise HubError(416, "range not satisfiable", headers={"Content-Range": f"bytes */{total}"})
            status = 206
            headers = dict(headers, **{"Content-Range": f"bytes {start}-{end}/{total}"})
        body = data[start:end + 1]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        if self.drop_after is not None:
            self.wfile.write(body[:self.drop_after])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.stall_after is not None:
            # Send some bytes, then hold the connection open until the client goes away (killed).
            self.wfile.write(body[:self.stall_after])
            self.wfile.flush()
            self.close_connection = True
            self.connection.settimeout(0.1)
            for _ in range(600):
                try:
                    if self.connection.recv(1) == b"":
                        break
                except socket.timeout:
                    continue
                except OSError:
                    break
            return
        throttle = self.hub.throttle
        if throttle:
            chunk = max(1, throttle // 20)
            for i in range(0, len(body), chunk):
                self.wfile.write(body[i:i + chunk])
                self.wfile.flush()
                time.sleep(0.05)
            return
        self.wfile.write(body)

    # ---- auth ----
    def _token(self):
        """The token's record; None when no Authorization header was sent; 401 for a bad one."""
        auth = self.headers.get("Authorization")
        if auth is None:
            return None
        m = re.fullmatch(r"Bearer (\S+)", auth)
        if not m or m.group(1) not in self.hub.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.hub.tokens[m.group(1)]

    def _need_write(self, namespace):
        tok = self._token()
        if tok is None:
            raise HubError(401, "You must be authenticated to access this resource")
        if not tok["write"]:
            raise HubError(403, "You don't have the rights to write to this repository: the token is read-only")
        if tok["user"] != namespace:
            raise HubError(403, f"You don't have the rights to write under the namespace {namespace}")
        return tok

    def _repo(self, repo_id, write=False, repo_type="model"):
        hub = self.hub
        tok = None
        if write:
            self._need_write(repo_id.split("/")[0] if "/" in repo_id else "")
        else:
            tok = self._token()
        repo = hub.repos.get(repo_key(repo_id, repo_type))
        if repo is None:
            # Like the Hub: without a token an unknown repo looks like a private one.
            if not write and tok is None:
                raise HubError(401, "Repository not found", "RepoNotFound")
            raise HubError(404, "Repository not found", "RepoNotFound")
        if repo.private and not write and (tok is None or tok["user"] != repo.owner):
            raise HubError(401, "Repository not found", "RepoNotFound")
        if repo.gated and not write and (tok is None or tok["user"] not in repo.granted):
            raise HubError(403 if tok else 401, f"Access to {repo_type} {repo_id} is restricted. You must have access "
                                                "to it and be authenticated to access it. Please log in.", "GatedRepo")
        return repo

    @staticmethod
    def _commit_of(repo, rev):
        rev = urllib.parse.unquote(rev)
        if rev in repo.branches:
            return repo.branches[rev]
        if rev in repo.commits:
            return rev
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    # ---- endpoints ----
    def _dispatch(self, method, path):
        routes = [
            ("GET", r"/api/whoami-v2", self._whoami),
            ("POST", r"/api/repos/create", self._create),
            ("POST", rf"/api/models/(?P<repo>{REPO})/preupload/(?P<rev>[^/]+)", self._preupload),
            ("POST", rf"/api/models/(?P<repo>{REPO})/commit/(?P<rev>[^/]+)", self._commit),
            ("GET", rf"/api/models/(?P<repo>{REPO})/revision/(?P<rev>[^/]+)", self._revision),
            ("GET", rf"/api/datasets/(?P<repo>{REPO})/revision/(?P<rev>[^/]+)", self._revision_dataset),
            ("GET", rf"/api/models/(?P<repo>{REPO})/tree/(?P<rev>[^/]+)(?:/(?P<sub>.+))?", self._tree),
            ("GET", rf"/api/datasets/(?P<repo>{REPO})/tree/(?P<rev>[^/]+)(?:/(?P<sub>.+))?", self._tree_dataset),
            ("GET", rf"/datasets/(?P<repo>{REPO})/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve_dataset),
            ("HEAD", rf"/datasets/(?P<repo>{REPO})/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve_dataset),
            ("POST", rf"/(?P<repo>{REPO})\.git/info/lfs/objects/batch", self._batch),
            ("POST", rf"/(?P<repo>{REPO})\.git/info/lfs/objects/verify", self._verify),
            ("PUT", r"/_storage/basic/(?P<oid>[0-9a-f]{64})", self._put_basic),
            ("PUT", r"/_storage/part/(?P<oid>[0-9a-f]{64})/(?P<n>\d+)", self._put_part),
            ("POST", r"/_storage/complete/(?P<oid>[0-9a-f]{64})", self._complete),
            ("GET", r"/_cdn/(?P<oid>[0-9a-f]{64})", self._cdn),
            ("GET", r"/_storage/object/(?P<oid>[0-9a-f]{64})", self._object),
            ("HEAD", r"/_storage/object/(?P<oid>[0-9a-f]{64})", self._object),
            ("GET", rf"/(?P<repo>{REPO})/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
            ("HEAD", rf"/(?P<repo>{REPO})/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
        ]
        for m_, pattern, fn in routes:
            match = re.fullmatch(pattern, path)
            if match and m_ == method:
                with self.hub.lock if method != "PUT" else _nolock():
                    return fn(**match.groupdict())
        raise HubError(404, f"no route for {method} {path}")

    def _whoami(self):
        tok = self._token()
        if tok is None:
            raise HubError(401, "You must be authenticated to access this resource")
        self._send_json({"type": "user", "name": tok["user"], "orgs": [],
                         "auth": {"accessToken": {"role": "write" if tok["write"] else "read"}}})

    def _create(self):
        body = self._json_body()
        name, org = body.get("name"), body.get("organization")
        if not isinstance(name, str) or not re.fullmatch(NAME, name):
            raise HubError(400, "invalid repo name")
        if body.get("type", "model") != "model":
            raise HubError(400, "only model repos here")
        tok = self._token()
        if tok is None:
            raise HubError(401, "You must be authenticated to create a repo")
        namespace = org or tok["user"]
        self._need_write(namespace)
        repo_id = f"{namespace}/{name}"
        if repo_id in self.hub.repos:
            raise HubError(409, "You already created this model repo", headers={})
        self.hub.create_repo(repo_id, bool(body.get("private", False)))
        self._send_json({"url": f"{self.hub.base}/{repo_id}", "name": repo_id, "id": repo_id})

    def _preupload(self, repo, rev):
        r = self._repo(repo, write=True)
        head = self._commit_of(r, rev)
        body = self._json_body()
        files = body.get("files")
        if not isinstance(files, list):
            raise HubError(400, "files must be a list")
        out = []
        current = r.commits[head]["files"]
        for f in files:
            path, sample, size = f.get("path"), f.get("sample"), f.get("size")
            if not isinstance(path, str) or not isinstance(sample, str) or not isinstance(size, int):
                raise HubError(400, "each file needs path (str), sample (base64 str), size (int)")
            try:
                raw = base64.b64decode(sample, validate=True)
            except ValueError:
                raise HubError(400, f"sample of {path} is not base64")
            if len(raw) > 512 or len(raw) > size:
                raise HubError(400, f"sample of {path} is longer than 512 bytes or than the file")
            lfs = size >= self.hub.lfs_threshold or path.endswith(LFS_EXTENSIONS) or b"\0" in raw
            entry = {"path": path, "uploadMode": "lfs" if lfs else "regular",
                     "shouldIgnore": path.startswith(".git/")}
            if path in current:
                e = current[path]
                entry["oid"] = e["lfs"] or git_sha1(e["data"])
            out.append(entry)
        self._send_json({"files": out, "commitOid": head})

    def _batch(self, repo):
        if LFS_JSON not in (self.headers.get("Accept") or ""):
            raise HubError(406, f"Accept must be {LFS_JSON}")
        if LFS_JSON not in (self.headers.get("Content-Type") or ""):
            raise HubError(415, f"Content-Type must be {LFS_JSON}")
        self._repo(repo, write=True)
        body = self._json_body()
        if body.get("operation") != "upload":
            raise HubError(422, "only the upload operation is supported")
        if body.get("hash_algo", "sha256") != "sha256":
            raise HubError(422, "hash_algo must be sha256")
        transfers = body.get("transfers") or ["basic"]
        objects = body.get("objects")
        if not isinstance(objects, list) or not objects:
            raise HubError(422, "objects must be a non-empty list")
        hub, answer, used = self.hub, [], "basic"
        for o in objects:
            oid, size = o.get("oid"), o.get("size")
            if not isinstance(oid, str) or not re.fullmatch(r"[0-9a-f]{64}", oid) or not isinstance(size, int) or size < 0:
                answer.append({"oid": str(oid), "size": size, "error": {"code": 422, "message": "bad oid or size"}})
                continue
            if oid in hub.objects and len(hub.objects[oid]) == size:
                answer.append({"oid": oid, "size": size, "authenticated": True})
                continue
            hub.pending[oid] = size
            mp = hub.multipart_threshold is not None and size >= hub.multipart_threshold and "multipart" in transfers
            if mp:
                used = "multipart"
                n = max(1, -(-size // hub.chunk_size))
                header = {"chunk_size": str(hub.chunk_size)}
                for i in range(1, n + 1):
                    header[f"{i:05d}"] = f"{hub.base}/_storage/part/{oid}/{i}?sig={hub._sign('part', oid, i)}"
                upload = {"href": f"{hub.base}/_storage/complete/{oid}?sig={hub._sign('complete', oid)}",
                          "header": header, "expires_in": 86400}
            else:
                upload = {"href": f"{hub.base}/_storage/basic/{oid}?sig={hub._sign('basic', oid)}", "expires_in": 86400}
            actions = {"upload": upload}
            if hub.offer_verify:
                actions["verify"] = {"href": f"{hub.base}/{repo}.git/info/lfs/objects/verify", "header": {}}
            answer.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
        self._send_json({"transfer": used, "objects": answer}, content_type=LFS_JSON)

    def _storage_auth(self, kind, oid, n=0):
        if "Authorization" in self.headers:
            raise HubError(400, "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter "
                                "or the Authorization header should be specified")
        sig = (self.query.get("sig") or [""])[0]
        if not hmac.compare_digest(sig, self.hub._sign(kind, oid, n)):
            raise HubError(403, "SignatureDoesNotMatch")

    def _put_basic(self, oid):
        self._storage_auth("basic", oid)
        data = self._body()
        hub = self.hub
        with hub.lock:
            expected = hub.pending.get(oid)
            if expected is None and oid not in hub.objects:
                raise HubError(403, "no upload was announced for this object")
            if expected is not None and len(data) != expected:
                raise HubError(400, f"size {len(data)} differs from the announced {expected}")
            if hashlib.sha256(data).hexdigest() != oid:
                raise HubError(400, "BadDigest: sha256 of the body does not match the object id")
            hub.objects[oid] = data
            hub.pending.pop(oid, None)
        self._send(200, b"", "text/plain", {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    def _put_part(self, oid, n):
        n = int(n)
        self._storage_auth("part", oid, n)
        data = self._body()
        hub = self.hub
        with hub.lock:
            size = hub.pending.get(oid)
            if size is None:
                raise HubError(403, "no multipart upload was announced for this object")
            nparts = -(-size // hub.chunk_size)
            want = hub.chunk_size if n < nparts else size - hub.chunk_size * (nparts - 1)
            if not 1 <= n <= nparts or len(data) != want:
                raise HubError(400, f"part {n}: {len(data)} bytes, expected {want}")
            etag = f'"{hashlib.md5(data).hexdigest()}"'
            hub.parts.setdefault(oid, {})[n] = (data, etag)
        self._send(200, b"", "text/plain", {"ETag": etag})

    def _complete(self, oid):
        self._storage_auth("complete", oid)
        body = self._json_body()
        hub = self.hub
        with hub.lock:
            if oid in hub.objects and oid not in hub.pending:
                return self._send_json({"message": "already complete"})
            if body.get("oid") != oid:
                raise HubError(400, "completion oid does not match the URL")
            parts = body.get("parts")
            size = hub.pending.get(oid)
            stored = hub.parts.get(oid, {})
            nparts = -(-size // hub.chunk_size) if size is not None else 0
            if not isinstance(parts, list) or [p.get("partNumber") for p in parts] != list(range(1, nparts + 1)):
                raise HubError(400, f"parts must list partNumber 1..{nparts} in order")
            for p in parts:
                got = stored.get(p["partNumber"])
                if got is None:
                    raise HubError(400, f"part {p['partNumber']} was never uploaded")
                if str(p.get("etag", "")).strip('"') != got[1].strip('"'):
                    raise HubError(400, f"InvalidPart: ETag of part {p['partNumber']} does not match")
            data = b"".join(stored[i][0] for i in range(1, nparts + 1))
            if len(data) != size or hashlib.sha256(data).hexdigest() != oid:
                raise HubError(400, "BadDigest: assembled object does not match its sha256 or size")
            hub.objects[oid] = data
            hub.pending.pop(oid, None)
            hub.parts.pop(oid, None)
        self._send_json({"message": "completed"})

    def _verify(self, repo):
        self._repo(repo, write=True)
        body = self._json_body()
        oid, size = body.get("oid"), body.get("size")
        data = self.hub.objects.get(oid)
        if data is None or len(data) != size:
            raise HubError(404, f"object {oid} is not stored with size {size}")
        self._send_json({"message": "ok"}, content_type=LFS_JSON)

    def _commit(self, repo, rev):
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/x-ndjson":
            raise HubError(415, "Content-Type must be application/x-ndjson")
        r = self._repo(repo, write=True)
        branch = urllib.parse.unquote(rev)
        if branch not in r.branches:
            raise HubError(404, f"Invalid rev id: {branch} (commits go to a branch)", "RevisionNotFound")
        raw = self._body()
        if self.hub.commit_max_bytes is not None and len(raw) > self.hub.commit_max_bytes:
            raise HubError(413, "Payload Too Large: the commit exceeds the size limit")
        try:
            lines = [json.loads(line) for line in raw.decode("utf-8").split("\n") if line.strip()]
        except ValueError:
            raise HubError(400, "body is not NDJSON")
        if not lines or lines[0].get("key") != "header" or not isinstance(lines[0].get("value"), dict):
            raise HubError(400, "the first line must be the header")
        header = lines[0]["value"]
        summary = header.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            raise HubError(400, "the header needs a summary")
        if "parentCommit" in header and header["parentCommit"] != r.branches[branch]:
            raise HubError(409, "A commit has happened since. Please refresh and try again.")
        changes, deletions, seen = {}, [], set()
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value")
            if not isinstance(value, dict) or not isinstance(value.get("path"), str):
                raise HubError(400, f"line {key}: value.path missing")
            path = value["path"]
            if path.startswith("/") or ".." in path.split("/") or "" in path.split("/"):
                raise HubError(400, f"bad path {path}")
            if path in seen:
                raise HubError(400, f"{path} appears twice in the commit")
            seen.add(path)
            if key == "file":
                if value.get("encoding") != "base64" or not isinstance(value.get("content"), str):
                    raise HubError(400, f"{path}: file lines need base64 content")
                try:
                    data = base64.b64decode(value["content"], validate=True)
                except ValueError:
                    raise HubError(400, f"{path}: content is not valid base64")
                changes[path] = {"data": data, "lfs": None, "size": len(data)}
            elif key == "lfsFile":
                oid = value.get("oid")
                if value.get("algo") != "sha256" or not isinstance(oid, str):
                    raise HubError(400, f"{path}: lfsFile needs algo sha256 and an oid")
                data = self.hub.objects.get(oid)
                if data is None:
                    raise HubError(422, f"{path}: LFS object {oid} was never uploaded")
                if "size" in value and value["size"] != len(data):
                    raise HubError(422, f"{path}: size {value['size']} differs from the stored {len(data)}")
                if hashlib.sha256(data).hexdigest() != oid:
                    raise HubError(422, f"{path}: stored object does not match its oid")
                changes[path] = {"data": None, "lfs": oid, "size": len(data)}
            elif key == "deletedFile":
                if path not in r.commits[r.branches[branch]]["files"]:
                    raise HubError(404, f"{path} does not exist", "EntryNotFound")
                deletions.append(path)
            else:
                raise HubError(400, f"unknown line key {key!r}")
        oid = self.hub._new_commit(r, branch, changes, deletions, summary)
        self._send_json({"success": True, "commitOid": oid, "commitUrl": f"{self.hub.base}/{repo}/commit/{oid}",
                         "hookOutput": "", "pullRequestUrl": None})

    def _revision(self, repo, rev, repo_type="model"):
        r = self._repo(repo, repo_type=repo_type)
        oid = self._commit_of(r, rev)
        files = sorted(r.commits[oid]["files"])
        info = {"_id": oid[:24], "id": r.id, "sha": oid, "private": r.private, "gated": r.gated,
                "siblings": [{"rfilename": p} for p in files]}
        if repo_type == "model":
            info["modelId"] = r.id
        self._send_json(info)

    def _revision_dataset(self, repo, rev):
        self._revision(repo, rev, "dataset")

    def _tree(self, repo, rev, sub=None, repo_type="model"):
        """Files and folders under sub (recursive or one level), in pages linked by Link: rel="next"."""
        r = self._repo(repo, repo_type=repo_type)
        oid = self._commit_of(r, rev)
        recursive = (self.query.get("recursive") or ["false"])[0].lower() in ("1", "true")
        prefix = urllib.parse.unquote(sub).strip("/") + "/" if sub else ""
        entries = {}
        for path, e in r.commits[oid]["files"].items():
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):].split("/")
            depth = len(rest) if recursive else 1
            for i in range(1, min(depth, len(rest) - 1) + 1):
                d = prefix + "/".join(rest[:i])
                entries[d] = {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
            if recursive or len(rest) == 1:
                item = {"type": "file", "oid": git_sha1(lfs_pointer(e["lfs"], e["size"]) if e["lfs"] else e["data"]),
                        "size": e["size"], "path": path}
                if e["lfs"]:
                    item["lfs"] = {"oid": e["lfs"], "size": e["size"],
                                   "pointerSize": len(lfs_pointer(e["lfs"], e["size"]))}
                entries[path] = item
        if sub and not entries:
            raise HubError(404, f"Entry not found: {prefix}", "EntryNotFound")
        listing = [entries[k] for k in sorted(entries)]
        start = int((self.query.get("cursor") or ["0"])[0])
        page = listing[start:start + self.hub.tree_page_size]
        headers = {}
        if start + self.hub.tree_page_size < len(listing):
            kind = "datasets" if repo_type == "dataset" else "models"
            tail = f"/{sub}" if sub else ""
            nxt = (f"{self.hub.base}/api/{kind}/{repo}/tree/{rev}{tail}?recursive={str(recursive).lower()}"
                   f"&expand=false&cursor={start + self.hub.tree_page_size}")
            headers["Link"] = f'<{nxt}>; rel="next"'
        self._send(200, json.dumps(page).encode(), "application/json", headers)

    def _tree_dataset(self, repo, rev, sub=None):
        self._tree(repo, rev, sub, "dataset")

    def _resolve_dataset(self, repo, rev, file):
        self._resolve(repo, rev, file, "dataset")

    def _resolve(self, repo, rev, file, repo_type="model"):
        hub = self.hub
        prefix = "datasets/" if repo_type == "dataset" else ""
        if repo in hub.renamed and repo_key(repo, repo_type) not in hub.repos:
            # A renamed repo answers with a relative redirect, as the Hub does.
            raise HubError(307, "moved", headers={"Location": f"/{prefix}{hub.renamed[repo]}/resolve/{rev}/{file}"})
        r = self._repo(repo, repo_type=repo_type)
        oid = self._commit_of(r, rev)
        file = urllib.parse.unquote(file)
        entry = r.commits[oid]["files"].get(file)
        if entry is None:
            raise HubError(404, f"Entry not found: {file}", "EntryNotFound", headers={"X-Repo-Commit": oid})
        if entry["lfs"]:
            sha, size = entry["lfs"], entry["size"]
            headers = {"X-Repo-Commit": oid, "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(size),
                       "ETag": f'"{git_sha1(lfs_pointer(sha, size))}"',
                       "Location": f"{hub.base}/_cdn/{sha}?sig={hub._sign('cdn', sha)}"}
            return self._send(302, b"", "text/plain", headers)
        self._send_bytes(entry["data"], {"X-Repo-Commit": oid, "ETag": f'"{git_sha1(entry["data"])}"'})

    def _cdn(self, oid):
        self._storage_auth("cdn", oid)
        if oid not in self.hub.objects:
            raise HubError(404, "NoSuchKey")
        self._send(302, b"", "text/plain",
                   {"Location": f"{self.hub.base}/_storage/object/{oid}?sig={self.hub._sign('object', oid)}"})

    def _object(self, oid):
        self._storage_auth("object", oid)
        data = self.hub.objects.get(oid)
        if data is None:
            raise HubError(404, "NoSuchKey")
        self._send_bytes(data, {"ETag": f'"{oid}"'})


class _nolock:
    """PUT bodies are read outside the Hub lock so a slow upload does not stall other requests."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main():
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token", default=None, help="a write token for user 'alice'")
    ap.add_argument("--multipart-threshold", type=int, default=None)
    args = ap.parse_args()
    hub = Hub(multipart_threshold=args.multipart_threshold)
    if args.token:
        hub.add_token(args.token, "alice")
    hub.start(args.port)
    print(hub.httpd.server_address[1], flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    hub.stop()


if __name__ == "__main__":
    main()
