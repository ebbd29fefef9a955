"""A minimal Hugging Face Hub-compatible HTTP server for tests (loopback only, in memory).

It implements just the endpoints that ``huggingface_hub`` 2.x calls for ``create_repo``,
``create_branch``, ``upload_folder`` (README YAML validation, preupload, ndjson commit; regular files
only), ``model_info`` / ``repo_info``, ``list_repo_tree`` and ``hf_hub_download`` / ``snapshot_download`` (``resolve``).
Errors carry the ``X-Error-Code`` header the client maps to its exception types. ``tamper``
changes a stored file in place, as a compromised or corrupted server would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    private: bool = False
    refs: dict[str, str] = field(default_factory=dict)  # branch -> commit oid
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit oid -> {path: bytes}

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


class HubServer:
    """``with HubServer() as hub: hub.url`` — a Hub on 127.0.0.1 at a free port."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"hub": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def tamper(self, repo_id: str, path: str, data: bytes) -> None:
        """Serve ``data`` for ``path`` in every commit of ``repo_id`` from now on."""
        with self.lock:
            for files in self.repos[repo_id].commits.values():
                if path in files:
                    files[path] = data

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        oid = repo.resolve(revision)
        return dict(repo.commits[oid]) if oid else {}


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    # -- helpers ---------------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, data: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str, message: str, head: bool = False) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(
            status,
            body,
            {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message},
            head=head,
        )

    def _parts(self) -> tuple[list[str], dict[str, str]]:
        split = urlsplit(self.path)
        query = dict(p.split("=", 1) if "=" in p else (p, "") for p in split.query.split("&") if p)
        return [unquote(p) for p in split.path.strip("/").split("/")], query

    def _repo(self, repo_id: str, head: bool = False) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found", head=head)
        return repo

    # -- routes ----------------------------------------------------------------------------------------------
    def do_POST(self) -> None:
        parts, _ = self._parts()
        body = self._body()
        self.hub.requests.append(("POST", self.path))
        with self.hub.lock:
            if parts[:2] == ["api", "validate-yaml"]:
                return self._validate_yaml(json.loads(body)["content"])
            if parts[:3] == ["api", "repos", "create"]:
                return self._create_repo(json.loads(body))
            if len(parts) >= 6 and parts[:2] == ["api", "models"]:
                repo_id, action, rest = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
                repo = self._repo(repo_id)
                if repo is None:
                    return None
                if action == "preupload":
                    return self._preupload(repo, rest, json.loads(body))
                if action == "commit":
                    return self._commit(repo_id, repo, rest, body)
                if action == "branch":
                    return self._branch(repo, rest, json.loads(body) if body else {})
        return self._error(404, "NotFound", f"no route POST {self.path}")

    def do_GET(self) -> None:
        self._get(head=False)

    def do_HEAD(self) -> None:
        self._get(head=True)

    def _get(self, head: bool) -> None:
        parts, query = self._parts()
        self.hub.requests.append(("HEAD" if head else "GET", self.path))
        with self.hub.lock:
            if len(parts) >= 4 and parts[:2] == ["api", "models"]:
                repo = self._repo(f"{parts[2]}/{parts[3]}")
                if repo is None:
                    return None
                if len(parts) == 4:
                    return self._info(f"{parts[2]}/{parts[3]}", repo, "main")
                if parts[4] == "revision" and len(parts) >= 6:
                    return self._info(f"{parts[2]}/{parts[3]}", repo, "/".join(parts[5:]))
                if parts[4] == "tree" and len(parts) >= 6:
                    return self._tree(repo, parts[5], "/".join(parts[6:]))
            if len(parts) >= 5 and parts[2] == "resolve":
                repo = self._repo(f"{parts[0]}/{parts[1]}", head=head)
                if repo is None:
                    return None
                return self._resolve(repo, parts[3], "/".join(parts[4:]), head)
        return self._error(404, "NotFound", f"no route GET {self.path}", head=head)

    def _create_repo(self, payload: dict) -> None:
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        url = f"{self.hub.url}/{repo_id}"
        if repo_id in self.hub.repos:
            message = "You already created this model repo"
            return self._json(409, {"error": message, "url": url}, {"X-Error-Code": "RepoExists"})
        self.hub.repos[repo_id] = Repo(private=payload.get("visibility") == "private")
        return self._json(200, {"url": url, "name": repo_id})

    def _validate_yaml(self, content: str) -> None:
        """The README's YAML front matter must parse to a mapping (the real Hub checks much more)."""
        import yaml

        errors = []
        if content.startswith("---"):
            try:
                meta = yaml.safe_load(content.split("---", 2)[1])
                if not isinstance(meta, dict):
                    errors.append({"message": "metadata is not a mapping"})
            except yaml.YAMLError as exc:
                errors.append({"message": f"invalid YAML: {exc}"})
        return self._json(400 if errors else 200, {"errors": errors, "warnings": []})

    def _preupload(self, repo: Repo, revision: str, payload: dict) -> None:
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in payload["files"]]
        return self._json(200, {"files": files, "commitOid": repo.refs.get(revision)})

    def _commit(self, repo_id: str, repo: Repo, revision: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        parent = repo.refs.get(revision)
        if parent is None and revision != "main" and repo.refs:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        files = dict(repo.commits.get(parent, {})) if parent else {}
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "deletedFile":
                files.pop(value["path"], None)
            elif line["key"] == "lfsFile":
                return self._error(400, "BadRequest", "this test server stores regular files only")
        digest = hashlib.sha1((parent or "").encode() + header["summary"].encode())
        for path in sorted(files):
            digest.update(path.encode() + hashlib.sha256(files[path]).digest())
        oid = digest.hexdigest()
        repo.commits[oid] = files
        repo.refs[revision] = oid
        return self._json(200, {"commitOid": oid, "commitUrl": f"{self.hub.url}/{repo_id}/commit/{oid}"})

    def _branch(self, repo: Repo, branch: str, payload: dict) -> None:
        if branch in repo.refs:
            return self._error(409, "BranchExists", f"Reference already exists: refs/heads/{branch}")
        start = repo.resolve(payload.get("startingPoint") or "main")
        if start is None:  # an empty repo: the branch starts at an empty commit
            start = "0" * 40
            repo.commits.setdefault(start, {})
        repo.refs[branch] = start
        return self._json(200, {})

    def _info(self, repo_id: str, repo: Repo, revision: str) -> None:
        oid = repo.resolve(revision)
        if oid is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        siblings = [{"rfilename": path} for path in sorted(repo.commits[oid])]
        return self._json(
            200,
            {"id": repo_id, "modelId": repo_id, "sha": oid, "private": repo.private, "siblings": siblings, "tags": []},
        )

    def _tree(self, repo: Repo, revision: str, prefix: str) -> None:
        oid = repo.resolve(revision)
        if oid is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        entries = [
            {"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
            for path, data in sorted(repo.commits[oid].items())
            if path.startswith(prefix)
        ]
        return self._json(200, entries)

    def _resolve(self, repo: Repo, revision: str, path: str, head: bool) -> None:
        oid = repo.resolve(revision)
        if oid is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
        data = repo.commits[oid].get(path)
        if data is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist at {revision}", head=head)
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": oid,
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
        }
        status = 200
        range_header = self.headers.get("Range")
        if range_header and range_header.startswith("bytes=") and not head:
            start = int(range_header[6:].split("-")[0] or 0)
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            data, status = data[start:], 206
        return self._send(status, data, headers, head=head)


def _bench(backbone: str) -> None:
    """Time publish -> pull -> cached pull -> load of one encoder through the real client and this server."""
    import os
    import tempfile
    import time
    from pathlib import Path

    import torch

    torch.set_num_threads(1)
    os.environ["HF_HUB_OFFLINE"] = "0"
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = False
    from sslzoo.hub import load_encoder, sha256_file
    from sslzoo.hub.publish import publish
    from sslzoo.hub.pull import pull
    from sslzoo.models.encoders import EncoderConfig, create_encoder, save_encoder

    name = f"simclr-{backbone}-monuseg"
    with tempfile.TemporaryDirectory() as tmp, HubServer() as hub:
        root = Path(tmp)
        os.environ.update(
            HF_HUB_CACHE=str(root / "cache"),
            SSLZOO_HUB_REGISTRY=str(root / "registry.json"),
            HF_ENDPOINT=hub.url,
            SSLZOO_DEFAULTS_DIR=str(root / "none"),
        )
        folder = save_encoder(
            create_encoder(backbone), root / name, EncoderConfig(backbone=backbone, method="simclr", dataset="monuseg")
        )
        size_mb = (folder / "model.safetensors").stat().st_size / 2**20
        timings = {}
        start = time.perf_counter()
        sha256_file(folder / "model.safetensors")
        timings["sha256 of the weights"] = time.perf_counter() - start
        start = time.perf_counter()
        publish(folder, f"sslzoo/{name}", record=True)
        timings["publish (card + hashes + upload)"] = time.perf_counter() - start
        for label in ("pull (download + verify)", "pull (cached, verify only)"):
            start = time.perf_counter()
            pull(name)
            timings[label] = time.perf_counter() - start
        start = time.perf_counter()
        load_encoder(name)
        timings["load_encoder from the cache"] = time.perf_counter() - start
    print(f"{backbone}: model.safetensors {size_mb:.1f} MiB")
    for label, seconds in timings.items():
        print(f"  {label:34s} {seconds:6.2f} s")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Benchmark the zoo's publish/pull round trip on a local Hub.")
    parser.add_argument("--bench", default="resnet50", help="backbone of the encoder to round-trip")
    _bench(parser.parse_args().bench)
