"""HTTP client for one node's native API; every error comes back as the node's own exception class."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from ..errors import IollmError, Unavailable, error_from_json
from .manifest import PROTOCOL, Manifest, check_protocol, parse_manifest
from .service_calls import ServiceCalls

FRAME_HEADER = struct.Struct(">32sI")  # chunk digest, length; then the chunk's bytes
DEFAULT_ENDPOINT = "http://127.0.0.1:8700"


def encode_frames(chunks: Iterable[tuple[bytes, bytes]]) -> Iterator[bytes]:
    """The upload body: for each chunk, its digest and length, then its bytes."""
    for digest, data in chunks:
        yield FRAME_HEADER.pack(digest, len(data))
        yield data


class NodeClient(ServiceCalls):
    """Talks to one node. Thread-safe: one connection pool shared by parallel transfers.

    The sharing protocol's calls are here; the compute, mining and leaderboard calls come from
    ``ServiceCalls``. Transport and status errors are mapped in one place: ``stream``, which every
    request goes through, and ``_unreachable``/``_raise``, which the chunk fetch shares."""

    def __init__(
        self, endpoint: str = DEFAULT_ENDPOINT, token: str | None = None, timeout: float = 60.0
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        headers = {"User-Agent": "iollm-client/1", "X-Iollm-Protocol": PROTOCOL}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(
            base_url=self.endpoint,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )
        self._anonymous_fetch = False  # this node rejected the token for chunk fetches

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------

    def _raise(self, response: httpx.Response) -> None:
        """An error status as the exception class the node sent (the body must have been read)."""
        if response.is_success:
            return
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, httpx.ResponseNotRead):
            body = {"error": {"message": f"HTTP {response.status_code} from {self.endpoint}"}}
        raise error_from_json(response.status_code, body)

    def _unreachable(self, exc: httpx.TransportError) -> Unavailable:
        """A transport failure as the one error every call raises for it."""
        name = exc.__class__.__name__
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return Unavailable(
                f"cannot reach the node at {self.endpoint} ({name}): "
                "is `iollm up` running there? Set --endpoint or IOLLM_ENDPOINT."
            )
        return Unavailable(f"lost the connection to {self.endpoint} ({name}); the call did not complete")

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """Send a request and hand its response over unread, for bodies too large to hold in memory
        (``content`` may be an iterator, so the request streams too). An error status is raised as
        the node's own exception; a transport failure, whether before the response or while the
        block reads its body, as ``Unavailable``. ``request`` and every JSON call go through here."""
        try:
            with self.http.stream(method, path, **kwargs) as response:
                if not response.is_success:
                    response.read()
                    self._raise(response)
                yield response
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request whose response is read in full."""
        with self.stream(method, path, **kwargs) as response:
            response.read()
        return response

    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post_json(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs).json()

    def delete_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs).json()

    # -- node ------------------------------------------------------------------------------------

    def protocol(self) -> dict[str, Any]:
        info = self.get_json("/api/protocol")
        if PROTOCOL not in info.get("versions", []):
            check_protocol(None)
        return info

    def whoami(self) -> dict[str, Any]:
        return self.get_json("/api/whoami")

    def verify_store(self) -> dict[str, Any]:
        """Have the node re-hash every chunk in its store; the report names any damaged pack."""
        return self.post_json("/api/store/verify", {"protocol": PROTOCOL})

    def mirror(
        self, upstream: str, repo_id: str, repo_type: str = "model", token: str | None = None
    ) -> dict[str, Any]:
        """Have the node replicate a repository (all refs and history) from the node at ``upstream``."""
        return self.post_json(
            "/api/mirror", {"upstream": upstream, "repo": repo_id, "type": repo_type, "token": token}
        )

    # -- repositories ----------------------------------------------------------------------------

    @staticmethod
    def repo_path(repo_type: str, repo_id: str) -> str:
        return f"/api/repos/{repo_type}/{repo_id}"

    def list_repos(self, repo_type: str | None = None, search: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"type": repo_type, "search": search}.items() if v}
        return self.get_json("/api/repos", params=params)["repos"]

    def repo_info(self, repo_type: str, repo_id: str, revision: str | None = None) -> dict[str, Any]:
        params = {"revision": revision} if revision else {}
        return self.get_json(self.repo_path(repo_type, repo_id), params=params)

    def create_repo(self, repo_type: str, repo_id: str, private: bool = False, exist_ok: bool = True) -> dict:
        return self.post_json(
            "/api/repos", {"type": repo_type, "id": repo_id, "private": private, "exist_ok": exist_ok}
        )

    def refs(self, repo_type: str, repo_id: str) -> dict[str, dict[str, str]]:
        return self.get_json(self.repo_path(repo_type, repo_id) + "/refs")

    def manifest_raw(self, repo_type: str, repo_id: str, revision: str) -> tuple[str, bytes]:
        response = self.request("GET", f"{self.repo_path(repo_type, repo_id)}/manifest/{revision}")
        return response.headers["X-Iollm-Commit"], response.content

    def manifest(self, repo_type: str, repo_id: str, revision: str) -> Manifest:
        commit_id, raw = self.manifest_raw(repo_type, repo_id, revision)
        manifest = parse_manifest(raw)
        if manifest.commit_id != commit_id:
            raise IollmError(f"{self.endpoint} sent a manifest that does not hash to commit {commit_id}")
        return manifest

    def log(self, repo_type: str, repo_id: str, revision: str | None = None, limit: int = 100) -> list[dict]:
        params: dict[str, Any] = {"limit": limit}
        if revision:
            params["revision"] = revision
        return self.get_json(self.repo_path(repo_type, repo_id) + "/log", params=params)["commits"]

    def tag(self, repo_type: str, repo_id: str, revision: str, tag: str) -> dict[str, Any]:
        return self.post_json(
            self.repo_path(repo_type, repo_id) + "/tags", {"revision": revision, "tag": tag}
        )

    def commit(self, repo_type: str, repo_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.post_json(self.repo_path(repo_type, repo_id) + "/commits", {"protocol": PROTOCOL, **body})

    # -- chunks ----------------------------------------------------------------------------------

    def missing_chunks(self, digests: list[bytes]) -> list[bytes]:
        """Which of these chunks the node lacks (asked in batches of 50k)."""
        missing: list[bytes] = []
        for start in range(0, len(digests), 50_000):
            batch = [d.hex() for d in digests[start : start + 50_000]]
            reply = self.post_json("/api/chunks/missing", {"protocol": PROTOCOL, "chunks": batch})
            missing.extend(bytes.fromhex(h) for h in reply["missing"])
        return missing

    def upload_chunks(self, chunks: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        body = b"".join(encode_frames(chunks))
        return self.request(
            "POST", "/api/chunks", content=body, headers={"Content-Type": "application/x-iollm-chunks"}
        ).json()

    def open_chunk_stream(self, digests: list[bytes]) -> httpx.Response:
        """Start streaming chunk bytes, in the order asked; the caller must close the response.

        A peer that does not know this client's token (another node, given with ``--peer``) answers
        401: the fetch is then asked again anonymously, which serves public repositories' chunks."""
        body = {"protocol": PROTOCOL, "chunks": [d.hex() for d in digests]}
        response = self._send_fetch(body, anonymous=self._anonymous_fetch)
        if response.status_code == 401 and not self._anonymous_fetch and "Authorization" in self.http.headers:
            response.close()
            self._anonymous_fetch = True
            response = self._send_fetch(body, anonymous=True)
        if not response.is_success:
            response.read()
            response.close()
            self._raise(response)
        return response

    def _send_fetch(self, body: dict[str, Any], anonymous: bool) -> httpx.Response:
        try:
            request = self.http.build_request("POST", "/api/chunks/fetch", json=body)
            if anonymous:
                del request.headers["Authorization"]
            return self.http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
