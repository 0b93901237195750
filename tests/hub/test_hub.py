"""hub_* tests: drive the saefw binary against the local Hub imitation (hub_server.py).

  python3 test_hub.py CASE --bin path/to/saefw --tmp scratch/folder

Each case starts its own Hub on 127.0.0.1 (a free port), runs the client in subprocesses with a
private HF_HOME, checks what the Hub and the cache hold, greps every output and file for the
token, stops the Hub, and exits non-zero on the first failure.
"""

import argparse
import hashlib
import os
import random
import secrets
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # nothing may be written into the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hub_server import Hub, git_sha1  # noqa: E402

MB = 1024 * 1024
BIG = 10 * MB + 123457  # the LFS file: over 10 MB and not a multiple of any chunk size


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


class Ctx:
    def __init__(self, args):
        self.bin = os.path.abspath(args.bin)
        self.tmp = os.path.abspath(args.tmp)
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.makedirs(self.tmp)
        self.token = "hf_" + secrets.token_hex(20)
        self.read_token = "hf_" + secrets.token_hex(20)
        self.hf_home = os.path.join(self.tmp, "hfhome")
        self.outputs = []
        self.hubs = []
        self.token_files = set()  # files the tests wrote the token into on purpose

    def hub(self, **kw):
        hub = Hub(**kw).start(0)
        hub.add_token(self.token, "alice", write=True)
        hub.add_token(self.read_token, "alice", write=False)
        self.hubs.append(hub)
        return hub

    def env(self, hub, **over):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HF_", "HUGGING_FACE", "HUGGINGFACE", "SAEFW_HF_"))}
        env.update({"HF_ENDPOINT": hub.base if hub else "http://127.0.0.1:9", "HF_TOKEN": self.token,
                    "HF_HOME": self.hf_home, "SAEFW_HF_RETRY_BASE_MS": "20", "NO_PROXY": "*"})
        for k, v in over.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def run(self, argv, env, rc=0, timeout=60, cwd=None):
        t0 = time.monotonic()
        p = subprocess.run([self.bin] + argv, env=env, capture_output=True, timeout=timeout, cwd=cwd)
        p.elapsed = time.monotonic() - t0
        p.out, p.err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        self.outputs += [p.stdout, p.stderr]
        for secret in (self.token, self.read_token):
            check(secret.encode() not in p.stdout + p.stderr, f"token leaked in the output of {argv[:2]}")
        # Under -DSAEFW_SANITIZE=ON a report exits 1, which an expected failure would hide.
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            check(marker not in p.err, f"sanitizer report from {' '.join(argv[:4])}:\n{p.err}")
        if rc is not None and p.returncode != rc:
            raise Failure(f"{' '.join(argv[:4])}: exit {p.returncode}, expected {rc}\n--- stdout\n{p.out}--- stderr\n{p.err}")
        return p

    def error_line(self, p, cmd):
        """The one `saefw <cmd>: ...` line a failure prints, and that it is the last line."""
        lines = [ln for ln in p.err.splitlines() if ln.startswith(f"saefw {cmd}:")]
        check(len(lines) == 1, f"expected one 'saefw {cmd}:' line, got {lines!r}\n{p.err}")
        check(p.err.rstrip("\n").splitlines()[-1] == lines[0], f"the error is not the last line:\n{p.err}")
        return lines[0]

    def checkpoint(self, name, big=BIG, cfg=True, extra=None):
        d = os.path.join(self.tmp, name)
        os.makedirs(d, exist_ok=True)
        if cfg:
            write(os.path.join(d, "cfg.json"),
                  b'{"model_name": "gelu-1l", "hook_name": "blocks.0.mlp.hook_post", "d_in": 2048, '
                  b'"d_sae": 16384, "training_tokens": 2000000000, "l1_coeff": 0.0003, "lr": 0.0001, '
                  b'"seed": 49, "final_metrics": {"l0": 12.5, "explained_variance": 0.91, "dead_features": 3}}\n')
        write(os.path.join(d, "notes.txt"), b"trained on the seed recipe\n")
        if big:
            write(os.path.join(d, "sae_weights.safetensors"), random.Random(name).randbytes(big))
        for rel, data in (extra or {}).items():
            write(os.path.join(d, rel), data)
        return d

    def finish(self):
        """No file under the scratch folder and nothing the Hubs store contains a token."""
        secrets_ = (self.token.encode(), self.read_token.encode())
        for root, _dirs, files in os.walk(self.tmp):
            for f in files:
                path = os.path.join(root, f)
                if os.path.islink(path) or path in self.token_files:
                    continue
                with open(path, "rb") as fh:
                    data = fh.read()
                for s in secrets_:
                    check(s not in data, f"token found in {path}")
        for hub in self.hubs:
            for chunk in hub.stored_bytes():
                for s in secrets_:
                    check(s not in chunk, "token found in what the Hub stores")

    def stop(self):
        for hub in self.hubs:
            hub.stop()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def folder_files(d):
    out = {}
    for root, dirs, files in os.walk(d):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        for f in files:
            if f.startswith(".") or ".tmp." in f:
                continue
            out[os.path.relpath(os.path.join(root, f), d)] = read(os.path.join(root, f))
    return out


def upload_order(hub, start):
    """Kinds of requests made since log index start, in order."""
    kinds = []
    for r in hub.log[start:]:
        p = r["path"]
        kind = ("whoami" if "whoami" in p else "create" if p.endswith("/repos/create") else
                "preupload" if "/preupload/" in p else "batch" if p.endswith("/objects/batch") else
                "put" if p.startswith("/_storage/basic/") else "part" if p.startswith("/_storage/part/") else
                "complete" if p.startswith("/_storage/complete/") else "verify" if p.endswith("/objects/verify") else
                "commit" if "/commit/" in p else "other:" + p)
        if not kinds or kinds[-1] != kind:
            kinds.append(kind)
    return kinds


def check_uploaded(hub, repo, ckpt, readme_generated=True):
    files = hub.files(repo)
    local = folder_files(ckpt)
    for rel, data in local.items():
        check(rel in files, f"{rel} missing on the Hub")
        check(files[rel] == data, f"{rel} differs on the Hub")
    check("sae_weights.safetensors" in hub.lfs_paths(repo), "the weights were not stored through LFS")
    check("cfg.json" not in hub.lfs_paths(repo), "cfg.json should be a regular file")
    if readme_generated:
        card = files.get("README.md", b"").decode()
        for needle in ("gelu-1l", "blocks.0.mlp.hook_post", "2048", "16384", "2000000000", "explained_variance",
                       "0.91", "dead_features"):
            check(needle in card, f"model card lacks {needle!r}:\n{card}")
    return files


# ------------------------------------------------------------------------------------------------
def case_upload_basic(c):
    hub = c.hub()
    ckpt = c.checkpoint("ckpt")
    p = c.run(["upload", ckpt, "--repo", "alice/sae-basic", "--create", "--message", "first upload"], c.env(hub))
    head = hub.head("alice/sae-basic")
    check(p.out.strip() == f"{hub.base}/alice/sae-basic/commit/{head}", f"stdout is not the commit URL: {p.out!r}")
    check(hub.commit_info("alice/sae-basic", head)["summary"] == "first upload", "commit message lost")
    check_uploaded(hub, "alice/sae-basic", ckpt)
    order = upload_order(hub, 0)
    check(order == ["create", "preupload", "batch", "put", "verify", "commit"], f"request order {order}")
    puts = hub.requests("PUT")
    check(len(puts) == 1 and not puts[0]["auth"], "the storage PUT must be one request without the token")
    check(not hub.requests(path="/_storage/part/"), "basic transfer used multipart")
    check(hub.commit_count("alice/sae-basic") == 2, "expected the initial commit plus one")
    check("sae_weights.safetensors" in p.err, "no progress line for the LFS file")

    # Again, without --create: the object is already stored, so no PUT, but a new commit.
    n = len(hub.log)
    write(os.path.join(ckpt, "notes.txt"), b"second version\n")
    c.run(["upload", ckpt, "--repo", "alice/sae-basic"], c.env(hub))
    check(upload_order(hub, n) == ["preupload", "batch", "commit"], f"re-upload order {upload_order(hub, n)}")
    check(hub.files("alice/sae-basic")["notes.txt"] == b"second version\n", "second commit content")
    check(hub.commit_count("alice/sae-basic") == 3, "second commit missing")

    # --create on an existing repo: the 409 is fine. A bare name goes to the token owner's namespace.
    p = c.run(["upload", ckpt, "--repo", "sae-basic", "--create"], c.env(hub))
    check("already exists" in p.err, "409 on create not reported as a note")
    check(hub.commit_count("alice/sae-basic") == 4, "bare-name upload did not land in alice/")

    # A seed-style cfg.json (short site name, dict_mult, num_tokens) still gives a full card.
    seed = c.checkpoint("seedckpt", big=2000)
    write(os.path.join(seed, "cfg.json"), b'{"model": "gelu-1l", "site": "post", "layer": 0, "d_in": 2048, '
                                          b'"dict_mult": 8, "num_tokens": 2e9, "l1_coeff": 3e-4}')
    c.run(["upload", seed, "--repo", "alice/seed-sae", "--create"], c.env(hub))
    card = hub.files("alice/seed-sae")["README.md"].decode()
    for needle in ("gelu-1l", "blocks.0.mlp.hook_post", "| 16384 |", "| 2000000000 |", "0.0003"):
        check(needle in card, f"seed-style model card lacks {needle!r}:\n{card}")

    # The token may come from the token file instead of the environment.
    write(os.path.join(c.hf_home, "token"), (c.token + "\n").encode())
    c.token_files.add(os.path.join(c.hf_home, "token"))
    c.run(["upload", ckpt, "--repo", "alice/sae-basic"], c.env(hub, HF_TOKEN=None))
    alt = os.path.join(c.tmp, "elsewhere", "tok")
    write(alt, c.token.encode())
    c.token_files.add(alt)
    os.remove(os.path.join(c.hf_home, "token"))
    c.run(["upload", ckpt, "--repo", "alice/sae-basic"], c.env(hub, HF_TOKEN=None, HF_TOKEN_PATH=alt))
    c.run(["upload", ckpt, "--repo", "alice/sae-basic"], c.env(hub, HF_TOKEN=None, HUGGING_FACE_HUB_TOKEN=c.token))
    check(hub.commit_count("alice/sae-basic") == 7, "token file / HF_TOKEN_PATH / HUGGING_FACE_HUB_TOKEN uploads")


def case_upload_multipart(c):
    hub = c.hub(multipart_threshold=1 * MB, chunk_size=4 * MB)
    ckpt = c.checkpoint("ckpt", extra={"sub/extra.txt": b"nested\n", ".hidden": b"skip me\n",
                                       "sae_weights.safetensors.tmp.123": b"half-written\n",
                                       "README.md": b"# my own card\n"})
    p = c.run(["upload", ckpt + "/", "--repo", "alice/sae-mp", "--create", "--private"], c.env(hub))
    summary = hub.commit_info("alice/sae-mp", hub.head("alice/sae-mp"))["summary"]
    check(summary == "Upload ckpt with saefw", f"default commit message {summary!r}")
    check(p.out.strip().startswith(f"{hub.base}/alice/sae-mp/commit/"), f"stdout {p.out!r}")
    check(hub.repos["alice/sae-mp"].private, "--private ignored")
    files = check_uploaded(hub, "alice/sae-mp", ckpt, readme_generated=False)
    check(files["README.md"] == b"# my own card\n", "an existing README.md was replaced")
    check(".hidden" not in files and "sae_weights.safetensors.tmp.123" not in files, "hidden/temporary files uploaded")
    check(files["sub/extra.txt"] == b"nested\n", "nested file")
    parts = hub.requests("PUT", "/_storage/part/")
    check(len(parts) == 3, f"expected 3 parts (4 MB chunks of {BIG} bytes), got {len(parts)}")
    check(all(not r["auth"] for r in parts), "part PUTs must not carry the token")
    order = upload_order(hub, 0)
    check(order == ["create", "preupload", "batch", "part", "complete", "verify", "commit"], f"order {order}")
    check(not hub.requests("PUT", "/_storage/basic/"), "multipart upload used the basic PUT")

    # A small LFS file below the multipart threshold goes through basic in the same commit.
    write(os.path.join(ckpt, "small.safetensors"), random.Random(7).randbytes(4096))
    c.run(["upload", ckpt, "--repo", "alice/sae-mp"], c.env(hub))
    check("small.safetensors" in hub.lfs_paths("alice/sae-mp"), "small LFS file")
    check(len(hub.requests("PUT", "/_storage/basic/")) == 1, "small LFS file should use one basic PUT")


def seed_repo(c, hub, repo="alice/sae", private=False):
    hub.create_repo(repo, private=private)
    files = {"cfg.json": b'{"d_in": 2048}\n', "sub/notes.txt": b"nested notes\n",
             "sae_weights.safetensors": random.Random(repo).randbytes(BIG)}
    head = hub.put_commit(repo, files, lfs={"sae_weights.safetensors"})
    return head, files


def check_cache(c, repo, head, files, ref="main", lfs_suffixes=(".safetensors",), kind="models", hub_dir=None):
    """The huggingface_hub layout: refs, relative symlinks into blobs named by ETag, no leftovers."""
    hub_dir = hub_dir or os.path.join(c.hf_home, "hub")
    root = os.path.join(hub_dir, kind + "--" + repo.replace("/", "--"))
    if ref:
        check(read(os.path.join(root, "refs", ref)).decode() == head, f"refs/{ref} does not hold {head}")
    snap = os.path.join(root, "snapshots", head)
    for rel, data in files.items():
        p = os.path.join(snap, rel)
        check(os.path.islink(p), f"{rel} in the snapshot is not a symlink")
        target = os.readlink(p)
        etag = hashlib.sha256(data).hexdigest() if rel.endswith(lfs_suffixes) else git_sha1(data)
        want = "../" * (2 + rel.count("/")) + "blobs/" + etag
        check(target == want, f"{rel} links to {target}, expected {want}")
        check(read(p) == data, f"{rel} differs after download")
    blobs = os.listdir(os.path.join(root, "blobs"))
    check(not [b for b in blobs if b.endswith(".incomplete")], f"leftover .incomplete files: {blobs}")
    check(os.path.isdir(os.path.join(hub_dir, ".locks", os.path.basename(root))), "no .locks folder")
    check(read(os.path.join(hub_dir, "CACHEDIR.TAG")).startswith(b"Signature: 8a477f597d28d172789f06886806bc55\n"),
          "no CACHEDIR.TAG in the cache")
    return snap


def case_download(c):
    hub = c.hub()
    head, files = seed_repo(c, hub)
    hub_files = dict(files, **{".gitattributes": hub.files("alice/sae")[".gitattributes"]})

    p = c.run(["download", "alice/sae"], c.env(hub))
    snap = check_cache(c, "alice/sae", head, files)
    check(p.out.strip() == snap, f"stdout {p.out!r} is not the snapshot folder {snap}")
    listed = sorted(os.path.relpath(os.path.join(r, f), snap) for r, _d, fs in os.walk(snap) for f in fs)
    check(listed == sorted(hub_files), f"snapshot file list {listed}")
    cdn = hub.requests("GET", "/_cdn/")
    check(len(cdn) == 1 and not cdn[0]["auth"], "LFS bytes must come through the CDN redirect without the token")
    check(len(hub.requests("GET", "/_storage/object/")) == 1, "the CDN redirect was not followed")
    check(all(r["auth"] for r in hub.requests("HEAD")), "resolve HEADs should carry the token")

    # One file: stdout is its path; nothing is fetched again.
    n = len(hub.log)
    p = c.run(["download", "alice/sae", "sae_weights.safetensors"], c.env(hub))
    check(p.out.strip() == os.path.join(snap, "sae_weights.safetensors"), f"stdout {p.out!r}")
    check(not [r for r in hub.log[n:] if r["method"] == "GET"], "a cached file was downloaded again")

    # Offline: from the cache, no request at all; a missing file is a clear error.
    n = len(hub.log)
    p = c.run(["download", "alice/sae", "cfg.json"], c.env(hub, HF_HUB_OFFLINE="1"))
    check(p.out.strip() == os.path.join(snap, "cfg.json"), "offline lookup")
    c.run(["download", "alice/sae"], c.env(hub, HF_HUB_OFFLINE="1"))
    p = c.run(["download", "alice/sae", "missing.bin"], c.env(hub, HF_HUB_OFFLINE="1"), rc=1)
    check("HF_HUB_OFFLINE" in c.error_line(p, "download"), "offline miss message")
    check(len(hub.log) == n, "offline mode made requests")

    # Resume: a partial .incomplete blob is continued with a Range request.
    shutil.rmtree(os.path.join(c.hf_home, "hub"))
    sha = hashlib.sha256(files["sae_weights.safetensors"]).hexdigest()
    blobs = os.path.join(c.hf_home, "hub", "models--alice--sae", "blobs")
    write(os.path.join(blobs, sha + ".incomplete"), files["sae_weights.safetensors"][:3 * MB])
    n = len(hub.log)
    c.run(["download", "alice/sae", "sae_weights.safetensors"], c.env(hub))
    gets = [r for r in hub.log[n:] if r["path"].startswith("/_storage/object/")]
    check([r["range"] for r in gets] == [f"bytes={3 * MB}-"], f"resume ranges {[r['range'] for r in gets]}")
    check(read(os.path.join(blobs, sha)) == files["sae_weights.safetensors"], "resumed blob differs")

    # A connection dropped mid-download is resumed where it stopped.
    shutil.rmtree(os.path.join(c.hf_home, "hub"))
    hub.fault("GET", r"^/_storage/object/", drop_after=2 * MB)
    n = len(hub.log)
    c.run(["download", "alice/sae"], c.env(hub))
    ranges = [r["range"] for r in hub.log[n:] if r["path"].startswith("/_storage/object/")]
    check(len(ranges) == 2 and ranges[0] is None and ranges[1] is not None and int(ranges[1][6:-1]) > 0,
          f"drop then resume, got ranges {ranges}")
    check_cache(c, "alice/sae", head, files)

    # A commit hash as revision: no ref is written for it; a new commit moves refs/main.
    c.run(["download", "alice/sae", "cfg.json", "--revision", head], c.env(hub))
    check(not os.path.exists(os.path.join(c.hf_home, "hub", "models--alice--sae", "refs", head)), "ref for a hash")
    new_head = hub.put_commit("alice/sae", {"cfg.json": b'{"d_in": 512}\n'})
    n = len(hub.log)
    c.run(["download", "alice/sae"], c.env(hub))
    check_cache(c, "alice/sae", new_head, dict(files, **{"cfg.json": b'{"d_in": 512}\n'}))
    check(not [r for r in hub.log[n:] if r["path"].startswith(("/_cdn/", "/_storage/object/"))],
          "an unchanged LFS blob was fetched again")

    # Private repos need the token; a renamed repo is followed through its relative redirect.
    phead, pfiles = seed_repo(c, hub, "alice/private-sae", private=True)
    p = c.run(["download", "alice/private-sae", "cfg.json"], c.env(hub, HF_TOKEN=None), rc=1)
    line = c.error_line(p, "download")
    check("401" in line and "private" in line, f"private repo message: {line}")
    c.run(["download", "alice/private-sae", "cfg.json"], c.env(hub))
    hub.renamed["alice/old-name"] = "alice/sae"
    p = c.run(["download", "alice/old-name", "cfg.json"], c.env(hub))
    check(read(p.out.strip()) == b'{"d_in": 512}\n', "renamed repo download")

    # Unreachable endpoint with the file cached: the cache answers, with a note.
    p = c.run(["download", "alice/sae", "cfg.json"], c.env(None, HF_ENDPOINT=closed_port_url(),
                                                          SAEFW_HF_MAX_RETRIES="1"))
    check(read(p.out.strip()) == b'{"d_in": 512}\n' and "unreachable" in p.err, "cache fallback when unreachable")

    # Missing file and missing repo: one-line 404s.
    p = c.run(["download", "alice/sae", "nope.bin"], c.env(hub), rc=1)
    line = c.error_line(p, "download")
    check("404" in line and "nope.bin" in line, f"404 file message: {line}")
    p = c.run(["download", "alice/nothing-here"], c.env(hub), rc=1)
    line = c.error_line(p, "download")
    check("404" in line and "alice/nothing-here" in line, f"404 repo message: {line}")


def closed_port_url():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def case_faults_retry(c):
    hub = c.hub()
    ckpt = c.checkpoint("ckpt")
    hub.create_repo("alice/sae")

    hub.fault("POST", "/preupload/", status=429, headers={"Retry-After": "1"})
    hub.fault("PUT", "^/_storage/basic/", status=503, times=2)
    p = c.run(["upload", ckpt, "--repo", "alice/sae"], c.env(hub))
    check(p.elapsed >= 1.0, f"Retry-After: 1 not honoured (took {p.elapsed:.2f} s)")
    check(len(hub.requests("POST", "/preupload/")) == 2, "429 not retried exactly once")
    check(len(hub.requests("PUT")) == 3, "503 on the PUT not retried twice")
    check("429" in p.err and "503" in p.err, "retries not reported on stderr")
    check(hub.commit_count("alice/sae") == 2, "one commit expected")
    check_uploaded(hub, "alice/sae", ckpt)

    # The connection drops after 1 MB of the PUT: the PUT is sent again, whole.
    ckpt2 = c.checkpoint("ckpt2")
    hub.fault("PUT", "^/_storage/basic/", drop_after=1 * MB)
    n = len(hub.log)
    c.run(["upload", ckpt2, "--repo", "alice/sae"], c.env(hub))
    check(len([r for r in hub.log[n:] if r["method"] == "PUT"]) == 2, "dropped PUT not retried")
    check_uploaded(hub, "alice/sae", ckpt2)
    check(hub.commit_count("alice/sae") == 3, "one more commit expected")

    # Multipart: a part answered 503, the completion 502, the batch 500 and the commit 504 once each.
    hub.multipart_threshold, hub.chunk_size = 1 * MB, 4 * MB
    ckpt3 = c.checkpoint("ckpt3")
    hub.fault("PUT", "^/_storage/part/", status=503)
    hub.fault("PUT", "^/_storage/part/", drop_after=100000)
    hub.fault("POST", "^/_storage/complete/", status=502)
    hub.fault("POST", "/objects/batch$", status=500)
    hub.fault("POST", "/commit/", status=504)
    n = len(hub.log)
    c.run(["upload", ckpt3, "--repo", "alice/sae"], c.env(hub))
    check(hub.commit_count("alice/sae") == 4, "exactly one commit after retried 504")
    check(len([r for r in hub.log[n:] if r["path"].startswith("/_storage/part/")]) == 5, "3 parts + 2 retries")
    check_uploaded(hub, "alice/sae", ckpt3)

    # Download: 429 on the HEAD, 503 on the bytes.
    hub.fault("HEAD", "/resolve/", status=429, headers={"Retry-After": "0"})
    hub.fault("GET", "^/_storage/object/", status=503)
    p = c.run(["download", "alice/sae", "sae_weights.safetensors"], c.env(hub))
    check(read(p.out.strip()) == read(os.path.join(ckpt3, "sae_weights.safetensors")), "download after retries")

    # A fault that does not go away: bounded retries, then one line, and no commit.
    hub.clear_faults()
    hub.fault("POST", "/preupload/", status=503, times=100)
    before = hub.commit_count("alice/sae")
    p = c.run(["upload", ckpt, "--repo", "alice/sae"], c.env(hub, SAEFW_HF_MAX_RETRIES="2"), rc=1)
    line = c.error_line(p, "upload")
    check("503" in line and "3 attempts" in line, f"persistent 503 message: {line}")
    check(len(hub.requests("POST", "/preupload/")) >= 3, "retries")
    check(hub.commit_count("alice/sae") == before, "a failed upload left a commit")


def case_faults_errors(c):
    hub = c.hub()
    ckpt = c.checkpoint("ckpt")
    hub.create_repo("alice/sae")

    def fails(env, expect, argv=None, fault=None, folder=ckpt):
        if fault:
            hub.clear_faults()
            hub.fault(*fault[0], **fault[1])
        before = hub.commit_count("alice/sae")
        p = c.run(argv or ["upload", folder, "--repo", "alice/sae"], env, rc=1)
        line = c.error_line(p, "upload")
        for e in expect:
            check(e in line, f"expected {e!r} in: {line}")
        check(hub.commit_count("alice/sae") == before, f"a failed upload left a commit ({line})")
        hub.clear_faults()
        return line

    fails(c.env(hub, HF_TOKEN="hf_" + "0" * 40), ["401", "token was rejected"])
    fails(c.env(hub, HF_TOKEN=c.read_token), ["403", "write access"])
    fails(c.env(hub, HF_TOKEN=None), ["no Hugging Face token", "HF_TOKEN"])
    fails(c.env(hub), ["404", "alice/missing", "--create"], argv=["upload", ckpt, "--repo", "alice/missing"])
    fails(c.env(hub), ["403", "bob/sae"], argv=["upload", ckpt, "--repo", "bob/sae", "--create"])
    fails(c.env(hub), ["404", "revision"], argv=["upload", ckpt, "--repo", "alice/sae", "--revision", "nobranch"])
    fails(c.env(hub), ["409", "conflict", "A commit has happened since"],
          fault=(("POST", "/commit/"), {"status": 409, "message": "A commit has happened since. Please refresh."}))
    # The 409 attempt stored ckpt's LFS object already; a fresh one makes the 413 land on its PUT.
    fails(c.env(hub), ["413", "too large", "EntityTooLarge"], folder=c.checkpoint("ckpt413"),
          fault=(("PUT", "^/_storage/basic/"), {"status": 413, "message": "EntityTooLarge"}))
    fails(c.env(hub), ["401", "lfs batch"], folder=c.checkpoint("ckpt401"),
          fault=(("POST", "/objects/batch$"), {"status": 401, "message": "Invalid credentials"}))
    # The commit's connection drops: its fate is unknown, so it is not resent; the Hub holds no commit.
    sent = len(hub.requests("POST", "/commit/"))
    fails(c.env(hub), ["commit", "connection"], fault=(("POST", "/commit/"), {"drop_after": 10}))
    check(len(hub.requests("POST", "/commit/")) == sent + 1, "a dropped commit must not be resent")
    hub.commit_max_bytes = 100
    fails(c.env(hub), ["413", "commit"])
    hub.commit_max_bytes = None
    # The LFS object of the previous attempts is stored, yet still no commit was made; now it works.
    c.run(["upload", ckpt, "--repo", "alice/sae"], c.env(hub))
    check(hub.commit_count("alice/sae") == 2, "upload after the failures")
    # Download errors are one line too.
    p = c.run(["download", "alice/sae", "nope.txt"], c.env(hub), rc=1)
    check("404" in c.error_line(p, "download"), "download 404")
    p = c.run(["download", "alice/sae", "cfg.json"], c.env(hub, HF_TOKEN="hf_" + "1" * 40), rc=1)
    check("401" in c.error_line(p, "download"), "download with a bad token")


def case_bad_input(c):
    hub = c.hub()
    ckpt = c.checkpoint("ckpt", big=1000)
    for bad in ("a/b/c", "bad-", "a--b", "x" * 100, "a/", "/b", "a b", "../x", "org/na..me"):
        p = c.run(["upload", ckpt, "--repo", bad], c.env(hub), rc=1)
        check("bad repo id" in c.error_line(p, "upload"), f"repo id {bad!r} not refused")
        p = c.run(["download", bad], c.env(hub), rc=1)
        check("bad repo id" in c.error_line(p, "download"), f"repo id {bad!r} not refused by download")
    empty = os.path.join(c.tmp, "empty")
    write(os.path.join(empty, "notes.txt"), b"no checkpoint here\n")
    p = c.run(["upload", empty, "--repo", "alice/x"], c.env(hub), rc=1)
    check("no checkpoint" in c.error_line(p, "upload"), "folder without a checkpoint")
    p = c.run(["upload", os.path.join(c.tmp, "nowhere"), "--repo", "alice/x"], c.env(hub), rc=1)
    c.error_line(p, "upload")
    p = c.run(["download", "alice/x", "../etc/passwd"], c.env(hub), rc=1)
    check("bad file name" in c.error_line(p, "download"), "unsafe file name")
    leaky = c.checkpoint("leaky", big=0, extra={"log.txt": ("token=" + c.token).encode()})
    p = c.run(["upload", leaky, "--repo", "alice/x"], c.env(hub), rc=1)
    check("contains the Hugging Face token" in c.error_line(p, "upload"), "a file holding the token was not refused")
    os.remove(os.path.join(leaky, "log.txt"))
    # A symlink out of the folder (passwd.txt -> a file elsewhere) or a special file: refused.
    outside = os.path.join(c.tmp, "outside", "secret.txt")
    write(outside, b"not part of the checkpoint\n")
    linked = c.checkpoint("linked", big=0)
    os.symlink(outside, os.path.join(linked, "passwd.txt"))
    p = c.run(["upload", linked, "--repo", "alice/x"], c.env(hub), rc=1)
    check("symlink that leads outside" in c.error_line(p, "upload"), "a symlink out of the folder was not refused")
    os.remove(os.path.join(linked, "passwd.txt"))
    os.symlink("../outside/secret.txt", os.path.join(linked, "sub_link.txt"))
    p = c.run(["upload", linked, "--repo", "alice/x"], c.env(hub), rc=1)
    check("symlink that leads outside" in c.error_line(p, "upload"), "a relative symlink out of the folder was not refused")
    os.remove(os.path.join(linked, "sub_link.txt"))
    os.mkfifo(os.path.join(linked, "pipe"))
    p = c.run(["upload", linked, "--repo", "alice/x"], c.env(hub), rc=1)
    check("not a regular file" in c.error_line(p, "upload"), "a named pipe was not refused")
    os.remove(os.path.join(linked, "pipe"))
    p = c.run(["upload", ckpt, "--repo", "alice/x"], c.env(hub, HF_HUB_OFFLINE="1"), rc=1)
    check("HF_HUB_OFFLINE" in c.error_line(p, "upload"), "offline upload")
    p = c.run(["upload", ckpt, "--repo", "alice/x"], c.env(hub, HF_ENDPOINT="ftp://example"), rc=1)
    check("HF_ENDPOINT" in c.error_line(p, "upload"), "bad endpoint")
    check(hub.log == [], f"requests were made for bad input: {hub.log[:3]}")

    # Unreachable endpoint: bounded retries, then one line saying what to check.
    p = c.run(["upload", ckpt, "--repo", "alice/x"], c.env(None, HF_ENDPOINT=closed_port_url(),
                                                          SAEFW_HF_MAX_RETRIES="1"), rc=1)
    line = c.error_line(p, "upload")
    check("cannot reach" in line and "HF_ENDPOINT" in line, f"unreachable message: {line}")

    # Usage errors exit 2.
    for argv in (["upload", ckpt], ["upload", "--repo", "alice/x"], ["upload", ckpt, "--repo"],
                 ["upload", ckpt, "--repo", "alice/x", "--bogus"], ["upload", ckpt, "--repo", "alice/x", "--private"],
                 ["download"], ["fly"]):
        p = c.run(argv, c.env(hub), rc=2)
        check(p.err.strip(), f"no usage message for {argv}")
    p = c.run(["upload", "--help"], c.env(hub))
    check("usage: saefw upload" in p.out, "--help")


def case_lua(c):
    hub = c.hub()
    ckpt = c.checkpoint("ckpt", big=300000)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_lua_test.lua")
    p = c.run(["run", script, "--ckpt", ckpt], c.env(hub))
    check("lua ok" in p.out, f"Lua test did not finish:\n{p.out}\n{p.err}")
    repo = "alice/lua-sae"
    check(hub.commit_info(repo, hub.head(repo))["summary"] == "from lua", "Lua commit message")
    check_uploaded(hub, repo, ckpt)


def case_download_model(c):
    """saefw download puts a model where saefw.model finds it: gelu-1l's repo on the imitation holds
    a small model of the same family (tests/fixtures/model), downloaded, then loaded by name."""
    hub = c.hub()
    repo = "NeelNanda/GELU_1L512W_C4_Code"
    hub.add_token(c.token, "NeelNanda")
    hub.create_repo(repo)
    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "model")
    files = {"config.json": read(os.path.join(fixtures, "config.json")),
             "model_final.pth": read(os.path.join(fixtures, "model.pth"))}
    head = hub.put_commit(repo, files, lfs={"model_final.pth"})
    script = os.path.join(c.tmp, "load_gelu.lua")
    write(script, b'local m = require("saefw").model("gelu-1l")\n'
                  b'print(string.format("layers %d d_mlp %d d_vocab %d", m.n_layers, m.d_mlp, m.d_vocab))\n')
    p = c.run(["run", script], c.env(hub), rc=1)
    check("saefw download NeelNanda/GELU_1L512W_C4_Code config.json model_final.pth" in p.err,
          f"the missing-model message does not say how to download it:\n{p.err}")
    c.run(["download", repo, "config.json", "model_final.pth"], c.env(hub))
    check_cache(c, repo, head, files, lfs_suffixes=(".pth",))
    p = c.run(["run", script], c.env(hub, HF_HUB_OFFLINE="1"))
    check("layers 2 d_mlp 96 d_vocab 50" in p.out, f"saefw.model did not load the downloaded model:\n{p.out}\n{p.err}")


DS = "NeelNanda/c4-tiny-tokenized"
SHARD = 6 * MB + 4321  # the shard that is resumed after a kill: several MB, not a multiple of anything


def seed_dataset(hub, repo=DS, **kw):
    """A dataset repo shaped like the seed's: a README, Parquet shards under data/ (LFS), a JSON file."""
    hub.create_repo(repo, repo_type="dataset", **kw)
    rnd = random.Random(repo)
    files = {"README.md": b"---\nlicense: mit\n---\n# tokens\n", "data/info.json": b'{"rows": 3}\n',
             "data/train-00000-of-00003.parquet": b"PAR1" + rnd.randbytes(200000) + b"PAR1",
             "data/train-00001-of-00003.parquet": b"PAR1" + rnd.randbytes(SHARD) + b"PAR1",
             "data/train-00002-of-00003.parquet": b"PAR1" + rnd.randbytes(1000) + b"PAR1"}
    lfs = {p for p in files if p.endswith(".parquet")}
    head = hub.put_commit(repo, files, lfs=lfs, repo_type="dataset")
    files[".gitattributes"] = hub.files("datasets/" + repo)[".gitattributes"]
    return head, files


def dataset_cache(c, hub_dir=None):
    return os.path.join(hub_dir or os.path.join(c.hf_home, "hub"), "datasets--" + DS.replace("/", "--"))


def case_download_dataset(c):
    hub = c.hub()
    hub.tree_page_size = 2  # 7 tree entries (6 files, 1 folder): four pages linked by Link headers
    head, files = seed_dataset(hub)
    parquet = {p: d for p, d in files.items() if p.endswith(".parquet")}

    # The whole repo.
    p = c.run(["download", "--dataset", DS], c.env(hub))
    snap = check_cache(c, DS, head, files, lfs_suffixes=(".parquet",), kind="datasets")
    check(p.out.strip() == snap, f"stdout {p.out!r} is not the snapshot folder {snap}")
    listed = sorted(os.path.relpath(os.path.join(r, f), snap) for r, _d, fs in os.walk(snap) for f in fs)
    check(listed == sorted(files), f"snapshot file list {listed}")
    trees = hub.requests("GET", "/api/datasets/" + DS + "/tree/")
    check(len(trees) == 4, f"expected 4 tree pages, got {[r['path'] for r in trees]}")
    check(all(r["auth"] for r in trees), "tree pages on the endpoint should carry the token")
    check(hub.requests("GET", "/api/datasets/" + DS + "/revision/main"), "no repo info request")
    check(not hub.requests(path="^/api/models/"), "a dataset download asked the model API")
    check(all(r["path"].startswith("/datasets/") for r in hub.requests("HEAD")), "resolve URLs lack /datasets/")
    check("[4/6] data/train-00000-of-00003.parquet (195.3 kB)" in p.err, f"no per-file step lines:\n{p.err}")

    # Files by name: stdout is the file for one, the snapshot for several; nothing fetched twice.
    shutil.rmtree(os.path.join(c.hf_home, "hub"))
    one = "data/train-00002-of-00003.parquet"
    p = c.run(["download", "--dataset", DS, one], c.env(hub))
    check(p.out.strip() == os.path.join(snap, one) and read(p.out.strip()) == files[one], f"one file: {p.out!r}")
    p = c.run(["download", "--dataset=" + DS, one, "README.md", "--revision", "main"], c.env(hub))
    check(p.out.strip() == snap, "two files: stdout is the snapshot")
    check(sorted(os.listdir(os.path.join(snap, "data"))) == [one[5:]], "more than the named files arrived")
    n = len(hub.log)
    c.run(["download", "--repo-type", "dataset", DS, one], c.env(hub))
    check(not [r for r in hub.log[n:] if r["method"] == "GET"], "a cached file was downloaded again")

    # --include globs, as huggingface_hub's allow_patterns ('*' crosses '/').
    shutil.rmtree(os.path.join(c.hf_home, "hub"))
    p = c.run(["download", "--dataset", DS, "--include", "*.parquet"], c.env(hub))
    check(p.out.strip() == snap, "include: stdout is the snapshot")
    check_cache(c, DS, head, parquet, lfs_suffixes=(".parquet",), kind="datasets")
    got = sorted(os.path.relpath(os.path.join(r, f), snap) for r, _d, fs in os.walk(snap) for f in fs)
    check(got == sorted(parquet), f"--include '*.parquet' fetched {got}")
    c.run(["download", "--dataset", DS, "--include", "data/*.json", "--include", "READ?E.md"], c.env(hub))
    got = sorted(os.path.relpath(os.path.join(r, f), snap) for r, _d, fs in os.walk(snap) for f in fs)
    check(got == sorted(list(parquet) + ["README.md", "data/info.json"]), f"two --include: {got}")
    p = c.run(["download", "--dataset", DS, "--include", "*.arrow"], c.env(hub), rc=1)
    check("no file" in c.error_line(p, "download") and "*.arrow" in p.err, "include matching nothing")
    p = c.run(["download", "--dataset", DS, "README.md", "--include", "*.md"], c.env(hub), rc=2)

    # A 404 file: one line, and .no_exist/<commit>/<file> as huggingface_hub records it.
    p = c.run(["download", "--dataset", DS, "data/train-00009-of-00003.parquet"], c.env(hub), rc=1)
    line = c.error_line(p, "download")
    check("404" in line and "train-00009" in line, f"404 message: {line}")
    marker = os.path.join(dataset_cache(c), ".no_exist", head, "data", "train-00009-of-00003.parquet")
    check(os.path.isfile(marker) and os.path.getsize(marker) == 0, f"no .no_exist entry at {marker}")
    check(read(os.path.join(dataset_cache(c), "refs", "main")).decode() == head, "refs/main after the 404")
    n = len(hub.log)
    p = c.run(["download", "--dataset", DS, "data/train-00009-of-00003.parquet"], c.env(hub, HF_HUB_OFFLINE="1"), rc=1)
    check("does not exist" in c.error_line(p, "download") and ".no_exist" in p.err, f"offline .no_exist: {p.err}")
    check(len(hub.log) == n, "offline mode made requests")

    # Offline: what is cached answers, with no request; TRANSFORMERS_OFFLINE counts too.
    p = c.run(["download", "--dataset", DS], c.env(hub, HF_HUB_OFFLINE="1"))
    check(p.out.strip() == snap, "offline whole repo")
    p = c.run(["download", "--dataset", DS, one], c.env(hub, TRANSFORMERS_OFFLINE="1"))
    check(p.out.strip() == os.path.join(snap, one), "TRANSFORMERS_OFFLINE lookup")
    p = c.run(["download", "--dataset", DS, "nope.parquet"], c.env(hub, HF_HUB_OFFLINE="yes"), rc=1)
    check("HF_HUB_OFFLINE" in c.error_line(p, "download"), "offline miss message")
    p = c.run(["download", "--dataset", "org/never-fetched"], c.env(hub, HF_HUB_OFFLINE="1"), rc=1)
    check("HF_HUB_OFFLINE" in c.error_line(p, "download"), "offline repo miss")
    check(len(hub.log) == n, "offline mode made requests")
    # The model API knows no such model: a dataset is not found as a model.
    p = c.run(["download", DS, "README.md"], c.env(hub), rc=1)
    check("404" in c.error_line(p, "download"), "dataset id asked as a model")

    # Resume after a kill: the bytes stall after 3 MB, the process is killed, a rerun asks for the rest.
    shutil.rmtree(os.path.join(c.hf_home, "hub"))
    big = "data/train-00001-of-00003.parquet"
    sha = hashlib.sha256(files[big]).hexdigest()
    incomplete = os.path.join(dataset_cache(c), "blobs", sha + ".incomplete")
    hub.fault("GET", "^/_storage/object/", stall_after=3 * MB)
    proc = subprocess.Popen([c.bin, "download", "--dataset", DS, big], env=c.env(hub), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (os.path.exists(incomplete) and os.path.getsize(incomplete) >= 3 * MB):
        time.sleep(0.02)
    proc.kill()
    out, err = proc.communicate()
    c.outputs += [out, err]
    check(os.path.getsize(incomplete) == 3 * MB, f"partial file holds {os.path.getsize(incomplete)} bytes")
    n = len(hub.log)
    hub.throttle = 2 * MB  # about 1.5 s for the remaining 3 MB: several 0.2 s progress lines even on a loaded host
    p = c.run(["download", "--dataset", DS, big], c.env(hub, SAEFW_HF_PROGRESS_EVERY_S="0.2"))
    hub.throttle = None
    gets = [r["range"] for r in hub.log[n:] if r["path"].startswith("/_storage/object/")]
    check(gets == [f"bytes={3 * MB}-"], f"resume ranges {gets}")
    check(read(p.out.strip()) == files[big], "resumed shard differs")
    check(f"resuming {big} at byte {3 * MB}" in p.err, f"no resume note:\n{p.err}")
    check_cache(c, DS, head, {big: files[big]}, lfs_suffixes=(".parquet",), kind="datasets")
    # Off a terminal the progress is plain periodic lines: done / total, rate and ETA.
    lines = [ln for ln in p.err.splitlines() if ln.startswith("download: " + big + " ") and "%" in ln]
    check(lines and "\r" not in p.err and "\033" not in p.err, f"plain progress lines expected:\n{p.err}")
    check(any("MB/s" in ln and "ETA" in ln and " / 6.0 MB" in ln for ln in lines), f"progress lines lack rate/ETA: {lines}")

    # A gated dataset: 401 without a token, 403 for a user not granted, fine once granted.
    hub.create_repo("org/gated-ds", repo_type="dataset", gated=True)
    hub.put_commit("org/gated-ds", {"a.parquet": b"PAR1gatedPAR1"}, lfs={"a.parquet"}, repo_type="dataset")
    p = c.run(["download", "--dataset", "org/gated-ds", "a.parquet"], c.env(hub, HF_TOKEN=None), rc=1)
    check("401" in c.error_line(p, "download"), f"gated without a token: {p.err}")
    p = c.run(["download", "--dataset", "org/gated-ds"], c.env(hub), rc=1)
    line = c.error_line(p, "download")
    check("403" in line and "token" in line, f"gated, not granted: {line}")
    check(not os.path.exists(os.path.join(c.hf_home, "hub", "datasets--org--gated-ds", ".no_exist")),
          "a gated answer must not be recorded as absent")
    hub.repos["datasets/org/gated-ds"].granted.add("alice")
    p = c.run(["download", "--dataset", "org/gated-ds"], c.env(hub))
    check(read(os.path.join(p.out.strip(), "a.parquet")) == b"PAR1gatedPAR1", "gated after the grant")

    # From Lua: repo_type and include.
    script = os.path.join(c.tmp, "ds.lua")
    write(script, (
        'local hf = require "saefw.hf"\n'
        f'local snap = hf.download {{ repo = "{DS}", repo_type = "dataset", include = {{ "data/*.parquet" }} }}\n'
        'local f = assert(io.open(snap .. "/data/train-00000-of-00003.parquet", "rb")); f:close()\n'
        f'local one = hf.download {{ repo = "{DS}", repo_type = "dataset", files = "README.md" }}\n'
        'assert(one == snap .. "/README.md", one)\n'
        f'local ok, err = pcall(hf.download, {{ repo = "{DS}", repo_type = "space" }})\n'
        'assert(not ok and tostring(err):find("repo_type", 1, true), tostring(err))\n'
        f'ok, err = pcall(hf.download, {{ repo = "{DS}", repo_type = "dataset", files = "a", include = "b" }})\n'
        'assert(not ok and tostring(err):find("exclude", 1, true), tostring(err))\n'
        'print("lua dataset ok " .. snap)\n').encode())
    p = c.run(["run", script], c.env(hub))
    check("lua dataset ok " + snap in p.out, f"Lua dataset download:\n{p.out}\n{p.err}")


def case_cache_vars(c):
    """Every cache variable huggingface_hub honours, in its precedence, for `saefw download` (models
    and datasets) and for saefw.model(): a downloaded model is found under every combination."""
    hub = c.hub()
    repo = "NeelNanda/GELU_1L512W_C4_Code"
    hub.add_token(c.token, "NeelNanda")
    hub.create_repo(repo)
    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "model")
    files = {"config.json": read(os.path.join(fixtures, "config.json")),
             "model_final.pth": read(os.path.join(fixtures, "model.pth"))}
    head = hub.put_commit(repo, files, lfs={"model_final.pth"})
    dhead, dfiles = seed_dataset(hub)
    script = os.path.join(c.tmp, "load_gelu.lua")
    write(script, b'local m = require("saefw").model("gelu-1l")\nprint("layers " .. m.n_layers)\n')
    home = os.path.join(c.tmp, "home")
    values = {"HF_HUB_CACHE": os.path.join(c.tmp, "v_hub_cache"),
              "HUGGINGFACE_HUB_CACHE": os.path.join(c.tmp, "v_legacy"),
              "HF_HOME": os.path.join(c.tmp, "v_hf_home"),
              "XDG_CACHE_HOME": os.path.join(c.tmp, "v_xdg")}
    names = list(values)
    for mask in range(16):
        env_set = {k: values[k] for i, k in enumerate(names) if mask >> i & 1}
        if "HF_HUB_CACHE" in env_set:
            want = env_set["HF_HUB_CACHE"]
        elif "HUGGINGFACE_HUB_CACHE" in env_set:
            want = env_set["HUGGINGFACE_HUB_CACHE"]
        elif "HF_HOME" in env_set:
            want = os.path.join(env_set["HF_HOME"], "hub")
        elif "XDG_CACHE_HOME" in env_set:
            want = os.path.join(env_set["XDG_CACHE_HOME"], "huggingface", "hub")
        else:
            want = os.path.join(home, ".cache", "huggingface", "hub")
        env = c.env(hub, HOME=home, **{k: env_set.get(k) for k in names})
        for d in list(values.values()) + [home]:
            shutil.rmtree(d, ignore_errors=True)
        p = c.run(["run", script], dict(env, HF_HUB_OFFLINE="1"), rc=1)
        check(os.path.join(want, "models--NeelNanda--GELU_1L512W_C4_Code") in p.err,
              f"{sorted(env_set)}: the missing-model message does not name {want}:\n{p.err}")
        c.run(["download", repo, "config.json", "model_final.pth"], env)
        check_cache(c, repo, head, files, lfs_suffixes=(".pth",), hub_dir=want)
        p = c.run(["run", script], dict(env, HF_HUB_OFFLINE="1"))
        check("layers 2" in p.out, f"{sorted(env_set)}: saefw.model did not find the download in {want}:\n{p.err}")
        p = c.run(["download", "--dataset", DS, "--include", "data/*.json"], env)
        check(p.out.strip() == os.path.join(want, "datasets--" + DS.replace("/", "--"), "snapshots", dhead),
              f"{sorted(env_set)}: dataset snapshot {p.out.strip()} not under {want}")
        leftovers = [d for d in list(values.values()) + [home] if os.path.exists(d) and not want.startswith(d)]
        check(not leftovers, f"{sorted(env_set)}: something was written to {leftovers}")
    # "~" and "$VAR" in the variables are expanded as huggingface_hub expands them.
    env = c.env(hub, HOME=home, HF_HOME="~/tilde-home", HF_HUB_CACHE=None)
    c.run(["download", repo, "config.json", "model_final.pth"], env)
    check_cache(c, repo, head, files, lfs_suffixes=(".pth",), hub_dir=os.path.join(home, "tilde-home", "hub"))
    check("layers 2" in c.run(["run", script], dict(env, HF_HUB_OFFLINE="1")).out, "~ in HF_HOME for saefw.model")
    env = c.env(hub, HOME=home, SAEFW_T_ROOT=c.tmp, HF_HUB_CACHE="${SAEFW_T_ROOT}/var-cache")
    c.run(["download", repo, "config.json", "model_final.pth"], env)
    check_cache(c, repo, head, files, lfs_suffixes=(".pth",), hub_dir=os.path.join(c.tmp, "var-cache"))
    check("layers 2" in c.run(["run", script], dict(env, HF_HUB_OFFLINE="1")).out, "$VAR in HF_HUB_CACHE for saefw.model")
def npy_f32(rows):
    """A float32 .npy file of the given rows (no numpy needed)."""
    import struct
    n, d = len(rows), len(rows[0])
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (n, d)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    body = b"".join(struct.pack("<%df" % d, *r) for r in rows)
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + body


def case_sae_from_hub(c):
    """saefw.load_sae and saefw analyze take the seed's published SAEs by Hub path: a stand-in
    NeelNanda/sparse_autoencoder on the imitation holds 25.pt + 25_cfg.json in the seed's format
    (the committed seed-format fixture tests/fixtures/sae/seed_ckpt/3.pt, 16 -> 64)."""
    hub = c.hub()
    repo = "NeelNanda/sparse_autoencoder"
    hub.add_token(c.token, "NeelNanda")
    hub.create_repo(repo)
    seed = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "sae", "seed_ckpt")
    files = {"25.pt": read(os.path.join(seed, "3.pt")), "25_cfg.json": read(os.path.join(seed, "3_cfg.json"))}
    head = hub.put_commit(repo, files, lfs={"25.pt"})
    script = os.path.join(c.tmp, "load_hub_sae.lua")
    write(script, ("""
local saefw = require "saefw"
local spec = saefw.config { spec = "" }.spec
local sae, cfg, where = saefw.load_sae(spec)
local ref, ref_cfg = saefw.load_sae("%s/3.pt")
assert(sae.d_in == 16 and sae.d_sae == 64, "shape " .. sae.d_in .. " -> " .. sae.d_sae)
assert(cfg.act_name == "blocks.0.mlp.hook_post" and cfg.l1_coeff == ref_cfg.l1_coeff, "cfg")
for _, name in ipairs { "W_enc", "W_dec", "b_enc", "b_dec" } do
  local a, b = sae:tensor(name), ref:tensor(name)
  assert(#a == #b, name)
  for i = 1, #a do assert(a[i] == b[i], name .. " differs at " .. i) end
end
print("loaded from " .. where)
print("lua ok")
""" % seed).encode())
    # Not in the cache and offline: one line naming the download command.
    p = c.run(["run", script, "--spec", "NeelNanda/sparse_autoencoder/25.pt"], c.env(hub, HF_HUB_OFFLINE="1"), rc=1)
    check("saefw download NeelNanda/sparse_autoencoder 25.pt 25_cfg.json" in p.err,
          f"the missing-SAE message does not say how to download it:\n{p.err}")
    check(hub.log == [], "an offline load made requests")
    # Online: both files are fetched into the cache, then loaded.
    p = c.run(["run", script, "--spec", "NeelNanda/sparse_autoencoder/25.pt"], c.env(hub))
    check("lua ok" in p.out, f"load_sae from the Hub failed:\n{p.out}\n{p.err}")
    check_cache(c, repo, head, files, lfs_suffixes=(".pt",))
    snap = os.path.join(c.hf_home, "hub", "models--NeelNanda--sparse_autoencoder", "snapshots", head)
    check(f"loaded from {snap}/25.pt" in p.out, f"not loaded from the cache snapshot:\n{p.out}")
    # From the cache: offline works, and hf:// names the same file; no request is made.
    n = len(hub.log)
    p = c.run(["run", script, "--spec", "hf://NeelNanda/sparse_autoencoder/25.pt"], c.env(hub, HF_HUB_OFFLINE="1"))
    check("lua ok" in p.out, f"hf:// from the cache failed:\n{p.out}\n{p.err}")
    p = c.run(["run", script, "--spec", "NeelNanda/sparse_autoencoder/25.pt"], c.env(hub))
    check("lua ok" in p.out and len(hub.log) == n, "a cached SAE was fetched again")

    # saefw analyze on the Hub path, over activations of the SAE's width; the SVG lands in the
    # working folder, not in the cache.
    acts = os.path.join(c.tmp, "acts.npy")
    rng = random.Random(5)
    write(acts, npy_f32([[max(0.0, rng.gauss(0, 1)) for _ in range(16)] for _ in range(512)]))
    work = os.path.join(c.tmp, "work")
    os.makedirs(work)
    p = c.run(["analyze", "NeelNanda/sparse_autoencoder/25.pt", "--activations", acts, "--batches", "2",
               "--batch_size", "128"], c.env(hub, HF_HUB_OFFLINE="1"), cwd=work)
    check("d_in 16, d_sae 64" in p.out and "dead" in p.out, f"analyze output:\n{p.out}\n{p.err}")
    check(os.path.isfile(os.path.join(work, "25.freq_hist.svg")), f"no SVG in the working folder: {os.listdir(work)}")
    check(not [f for f in os.listdir(snap) if f.endswith(".svg")], "analyze wrote into the cache")

    # A file the repo does not hold, and malformed Hub paths: one line each.
    p = c.run(["analyze", "NeelNanda/sparse_autoencoder/26.pt", "--activations", acts], c.env(hub), rc=1)
    check("404" in p.err and "26.pt" in p.err and len(p.err.strip().splitlines()) <= 2, f"missing file:\n{p.err}")
    for bad in ("hf://NeelNanda/sparse_autoencoder", "hf://NeelNanda/../x/25.pt", "NeelNanda/sparse_autoencoder/../25.pt"):
        p = c.run(["analyze", bad, "--activations", acts], c.env(hub), rc=1)
        check(bad in p.err and "Traceback" not in p.err, f"bad Hub path {bad!r}:\n{p.err}")

    features_from_hub(c)


def seed_pt(prefix, tensors):
    """A checkpoint as the seed's torch.save(encoder.state_dict()) writes it (a zip holding a protocol 2
    pickle of an OrderedDict of float32 tensors and their storages), made without torch: tensors maps a
    name to (shape, flat values)."""
    import io
    import struct
    import zipfile

    def s(x):
        b = x.encode()
        return b"X" + struct.pack("<I", len(b)) + b

    def ints(xs):
        return b"(" + b"".join(b"J" + struct.pack("<i", x) for x in xs) + b"t"

    odict = b"ccollections\nOrderedDict\n)R"
    pkl = b"\x80\x02" + odict + b"("
    storages = []
    for key, (shape, values) in tensors.items():
        strides = [1] * len(shape)
        for i in range(len(shape) - 2, -1, -1):
            strides[i] = strides[i + 1] * shape[i + 1]
        pid = b"(" + s("storage") + b"ctorch\nFloatStorage\n" + s(str(len(storages))) + s("cpu") + \
            b"J" + struct.pack("<i", len(values)) + b"tQ"
        pkl += s(key) + b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + b"J\x00\x00\x00\x00" + ints(shape) + \
            ints(strides) + b"\x89" + odict + b"tR"
        storages.append(struct.pack("<%df" % len(values), *values))
    pkl += b"u."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(prefix + "/data.pkl", pkl)
        for i, data in enumerate(storages):
            z.writestr("%s/data/%d" % (prefix, i), data)
        z.writestr(prefix + "/version", b"3\n")
    return buf.getvalue()


def features_from_hub(c):
    """saefw features on the seed's published SAE by Hub path, with the model and tokens the seed's
    N_cfg.json does not name given on the command line: a stand-in NeelNanda/sparse_autoencoder whose
    25.pt reads the bundled tiny-1l's MLP (d_in 256, the seed's format and cfg keys), on a fresh cache."""
    hub = c.hub()
    repo = "NeelNanda/sparse_autoencoder"
    hub.add_token(c.token, "NeelNanda")
    hub.create_repo(repo)
    d_in, d_sae = 256, 512
    rng = random.Random(25)
    w_enc = [rng.gauss(0, 0.25) for _ in range(d_in * d_sae)]
    w_dec = [w_enc[i * d_sae + j] for j in range(d_sae) for i in range(d_in)]
    tensors = {"W_enc": ([d_in, d_sae], w_enc), "W_dec": ([d_sae, d_in], w_dec),
               "b_enc": ([d_sae], [-0.5] * d_sae), "b_dec": ([d_in], [0.0] * d_in)}
    cfg = {"seed": 49, "batch_size": 4096, "buffer_mult": 384, "lr": 0.0001, "num_tokens": 2000000000,
           "l1_coeff": 0.0003, "beta1": 0.9, "beta2": 0.99, "dict_mult": 2, "seq_len": 128, "enc_dtype": "fp32",
           "remove_rare_dir": False, "model_name": "gelu-1l", "site": "post", "layer": 0, "device": "cuda:0",
           "model_batch_size": 512, "buffer_size": 1572864, "buffer_batches": 12288,
           "act_name": "blocks.0.mlp.hook_post", "act_size": d_in, "dict_size": d_sae, "name": "gelu-1l_0_512_post"}
    import json
    files = {"25.pt": seed_pt("25", tensors), "25_cfg.json": json.dumps(cfg).encode()}
    head = hub.put_commit(repo, files, lfs={"25.pt"})
    env = c.env(hub, HF_HOME=os.path.join(c.tmp, "hfhome_features"))
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    tokens = os.path.join(root, "models", "tiny-1l", "tokens.npy")
    out = os.path.join(c.tmp, "hub_report")
    # Without --model the cfg's gelu-1l is wanted, which this cache does not hold: one line saying so.
    p = c.run(["features", "NeelNanda/sparse_autoencoder/25.pt", "--data", tokens, "--out", out], env, rc=1)
    line = c.error_line(p, "features")
    check("saefw download NeelNanda/GELU_1L512W_C4_Code" in line and not os.path.exists(out), f"no model: {line}")
    p = c.run(["features", "NeelNanda/sparse_autoencoder/25.pt", "--model", "tiny-1l", "--data", tokens,
               "--out", out, "--tokens", "8192", "--top-k", "4", "--threads", "2"], env, timeout=120)
    check(f"report: {out}/index.html" in p.out, f"no report:\n{p.out}\n{p.err}")
    check("(256 -> 512) on tiny-1l at blocks.0.mlp.hook_post" in p.err, f"what was analysed:\n{p.err}")
    snap = os.path.join(c.tmp, "hfhome_features", "hub", "models--NeelNanda--sparse_autoencoder", "snapshots", head)
    check(os.path.isfile(os.path.join(snap, "25.pt")) and os.path.isfile(os.path.join(snap, "25_cfg.json")),
          "the SAE was not fetched into the cache")
    summary = read(os.path.join(out, "data", "summary.js")).decode()
    body = json.loads(summary[summary.index("{"):summary.rindex(")")])
    check(body["sae"]["checkpoint"] == "NeelNanda/sparse_autoencoder/25.pt" and body["sae"]["d_sae"] == d_sae and
          body["tokens_analyzed"] == 8192 and body["tokenizer"] == "tokenizer.json", f"summary: {body['sae']}")
    check(os.path.isfile(os.path.join(out, "index.html")) and os.path.isfile(os.path.join(out, "features.jsonl")),
          f"report files: {os.listdir(out)}")
    lines = read(os.path.join(out, "features.jsonl")).decode().splitlines()
    check(len(lines) == d_sae, f"features.jsonl has {len(lines)} lines")
    # From the cache, offline, the same through hf:// and from Lua.
    n = len(hub.log)
    script = os.path.join(c.tmp, "features_hub.lua")
    write(script, ('local r = require("saefw").features { sae = "hf://NeelNanda/sparse_autoencoder/25.pt", '
                   'model = "tiny-1l", tokens = "%s", n_tokens = 2048, top_k = 2 }\n'
                   'print(string.format("lua: %%d features, %%d tokens, d_in %%d", #r.features, r.tokens_analyzed, '
                   'r.d_in))\n' % tokens).encode())
    p = c.run(["run", script], c.env(hub, HF_HOME=os.path.join(c.tmp, "hfhome_features"), HF_HUB_OFFLINE="1"))
    check("lua: 512 features, 2048 tokens, d_in 256" in p.out and len(hub.log) == n, f"Lua:\n{p.out}\n{p.err}")
    # The published cfg's own model (gelu-1l's 2048-wide MLP) is not this SAE's: a stand-in model of
    # the wrong width gives the one-line d_in error.
    p = c.run(["features", "NeelNanda/sparse_autoencoder/25.pt", "--model",
               os.path.join(root, "tests", "fixtures", "model"), "--data", tokens, "--out", out + "2"], env, rc=1)
    line = c.error_line(p, "features")
    check("d_in 256" in line and "--model" in line and not os.path.exists(out + "2"), f"d_in mismatch: {line}")


def train_toy(c, name, seed):
    """A real saefw final checkpoint (cfg.json, weights, sparsity.safetensors) from a short toy run."""
    run = os.path.join(c.tmp, name)
    toy = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "experiments", "toy.lua")
    c.run(["run", toy, "--steps", "40", "--d_in", "8", "--n_features", "16", "--batch_size", "64",
           "--buffer_mult", "4", "--eval_every", "20", "--checkpoint_every", "0", "--seed", str(seed),
           "--run_dir", run, "--log_every", "0"], c.env(None), timeout=120)
    final = os.path.join(run, "final")
    check(os.path.isfile(os.path.join(final, "sparsity.safetensors")), f"no sparsity file in {final}")
    return final


def case_upload_saes(c):
    """saefw upload --path-in-repo SAE_ID puts a checkpoint in the sub-folder SAE_ID, as SAELens
    releases are laid out, with one README.md at the root listing every SAE of the repo: merged into
    saefw's own card, rebuilt from the repo's */cfg.json when there is none, left alone when it is
    someone else's. The folder then loads back by Hub path."""
    hub = c.hub()
    a, b = train_toy(c, "run_a", 1), train_toy(c, "run_b", 2)
    repo = "alice/saes"
    p = c.run(["upload", a, "--repo", repo, "--create", "--path-in-repo", "blocks.0.mlp.hook_post/"], c.env(hub))
    files = hub.files(repo)
    for f in ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors"):
        check(files.get("blocks.0.mlp.hook_post/" + f) == read(os.path.join(a, f)), f"{f} not in the SAE's folder")
    check(not [f for f in files if f.startswith(("cfg.json", "sae_weights", "sparsity"))], "files at the repo root")
    check("blocks.0.mlp.hook_post/README.md" not in files, "a card in the SAE's folder")
    check(hub.commit_info(repo, hub.head(repo))["summary"] == "Upload SAE blocks.0.mlp.hook_post with saefw",
          "commit summary")
    card = files["README.md"].decode()
    for want in ("library_name: saelens", "- `blocks.0.mlp.hook_post`", 'SAE.from_pretrained("alice/saes", '
                 '"blocks.0.mlp.hook_post")', "SAE.load_from_disk(", 'saefw.load_sae("alice/saes/blocks.0.mlp.hook_post")'):
        check(want in card, f"card lacks {want!r}:\n{card}")

    # A second SAE, in a nested folder: the card lists both, the first one first.
    c.run(["upload", b, "--repo", repo, "--path-in-repo", "layer1/v2"], c.env(hub))
    card = hub.files(repo)["README.md"].decode()
    check(card.index("- `blocks.0.mlp.hook_post`") < card.index("- `layer1/v2`"), f"two SAEs:\n{card}")
    check("layer1/v2/cfg.json" in hub.files(repo), "nested folder")

    # Someone edits the card (a paragraph, a description on a line): both survive a re-upload,
    # and the re-uploaded SAE keeps one line.
    edited = card.replace("## SAEs in this repository", "Trained for the dictionary-size sweep.\n\n## SAEs in "
                          "this repository").replace("- `blocks.0.mlp.hook_post`", "- `blocks.0.mlp.hook_post` (the "
                          "baseline)").encode()
    hub.put_commit(repo, {"README.md": edited})
    c.run(["upload", b, "--repo", repo, "--path-in-repo", "layer1/v2"], c.env(hub))
    card = hub.files(repo)["README.md"].decode()
    check("Trained for the dictionary-size sweep." in card and "- `blocks.0.mlp.hook_post` (the baseline)" in card,
          f"edits lost:\n{card}")
    check(card.count("- `layer1/v2`") == 1, f"re-uploaded SAE listed twice:\n{card}")

    # No card yet, SAEs already there: the list is rebuilt from the repo's */cfg.json.
    hub.create_repo("alice/older")
    hub.put_commit("alice/older", {"old_sae/cfg.json": read(os.path.join(a, "cfg.json")),
                                   "old_sae/sae_weights.safetensors": read(os.path.join(a, "sae_weights.safetensors"))})
    c.run(["upload", a, "--repo", "alice/older", "--path-in-repo", "new_sae"], c.env(hub))
    card = hub.files("alice/older")["README.md"].decode()
    check("- `old_sae`" in card and "- `new_sae`" in card, f"listing not merged:\n{card}")

    # Without --path-in-repo a saefw checkpoint's own card says how SAELens loads it.
    c.run(["upload", a, "--repo", "alice/one-sae", "--create"], c.env(hub))
    card = hub.files("alice/one-sae")["README.md"].decode()
    check('SAE.load_from_disk(snapshot_download("alice/one-sae"))' in card, f"single-SAE card:\n{card}")

    # Someone else's card is theirs.
    hub.create_repo("alice/own-card")
    hub.put_commit("alice/own-card", {"README.md": b"# My card\n"})
    p = c.run(["upload", a, "--repo", "alice/own-card", "--path-in-repo", "s1"], c.env(hub))
    check(hub.files("alice/own-card")["README.md"] == b"# My card\n" and "left as it is" in p.err, "foreign card")

    # Bad sub-folders: one line, no request.
    n = len(hub.log)
    for bad in ("../x", "/abs", "a//b", ".", "a/./b", ".git", ".git/x", "a/../b", "/"):
        p = c.run(["upload", a, "--repo", repo, "--path-in-repo", bad], c.env(hub), rc=1)
        check("path-in-repo" in c.error_line(p, "upload"), f"--path-in-repo {bad!r} not refused")
    check(len(hub.log) == n, "requests made for a bad --path-in-repo")
    c.run(["upload", a, "--repo", repo, "--path-in-repo"], c.env(hub), rc=2)

    # From Lua, the same; then the folder loads back by Hub path (weights equal the local ones).
    script = os.path.join(c.tmp, "upload_saes.lua")
    write(script, ("""
local saefw, hf = require "saefw", require "saefw.hf"
local url = hf.upload { dir = "%s", repo = "alice/saes", path_in_repo = "from_lua" }
assert(url:find("/alice/saes/commit/"), url)
local ok, err = pcall(hf.upload, { dir = "%s", repo = "alice/saes", path_in_repo = 5 })
assert(not ok and tostring(err):find("path_in_repo", 1, true), tostring(err))
local sae, cfg, where = saefw.load_sae("alice/saes/from_lua")
local ref = saefw.load_sae("%s")
local x, y = sae:tensor("W_dec"), ref:tensor("W_dec")
assert(#x == #y and cfg.architecture == "standard", "shape")
for i = 1, #x do assert(x[i] == y[i], "W_dec differs") end
print("from " .. where)
print("lua ok")
""" % (a, a, a)).encode())
    p = c.run(["run", script], c.env(hub))
    check("lua ok" in p.out and "/snapshots/" in p.out, f"Lua upload/load:\n{p.out}\n{p.err}")
    check("from_lua/sparsity.safetensors" in hub.files(repo), "Lua upload into the folder")
    check("- `from_lua`: 8 -> 32 features\n" in hub.files(repo)["README.md"].decode(), "Lua upload not in the card")


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=sorted(CASES))
    ap.add_argument("--bin", required=True)
    ap.add_argument("--tmp", required=True)
    args = ap.parse_args()
    c = Ctx(args)
    t0 = time.monotonic()
    try:
        CASES[args.case](c)
        c.finish()
    except (Failure, subprocess.TimeoutExpired) as e:
        print(f"FAIL hub_{args.case}: {e}", file=sys.stderr)
        return 1
    finally:
        c.stop()
    print(f"ok hub_{args.case} ({time.monotonic() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
