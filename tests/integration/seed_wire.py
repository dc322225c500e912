"""The original Engram network SDK's HTTP calls, as that SDK puts them on the wire.

Standard library only (``urllib`` and ``json``), like the original client: the
same routes, methods, JSON bodies and headers (``Content-Type:
application/json`` on a POST and nothing else; no body and no header on the
DELETE). Where the original would raise, these calls return what the server
answered instead, so a test can assert the status and the body of every reply.

The optional keypair is anything with ``ss58_address`` and ``sign(bytes) ->
bytes`` (a Bittensor keypair); with it, POST bodies carry the original's
``hotkey``/``nonce``/``signature`` fields and namespace requests its
``namespace_hotkey``/``namespace_sig``/``namespace_timestamp_ms`` fields.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Embed = Callable[[str], Sequence[float]]


class SeedOfflineError(Exception):
    """The node could not be reached (the original's ``MinerOfflineError``)."""


class SeedHTTPError(Exception):
    """A reply the original client would have raised on (its ``EngramError``)."""


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: its status and its JSON body (``None`` when it was not JSON)."""

    status: int
    body: Any
    raw: bytes

    @property
    def data(self) -> dict[str, Any]:
        assert isinstance(self.body, dict), (self.status, self.raw[:500])
        return self.body


def _reply(status: int, raw: bytes) -> Reply:
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return Reply(status, body, raw)


def _payload_hash(body: dict[str, Any]) -> str:
    """SHA-256 of the body without ``hotkey``/``nonce``/``signature``, keys sorted."""
    payload = {k: v for k, v in body.items() if k not in ("hotkey", "nonce", "signature")}
    serialised = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(serialised.encode()).hexdigest()


def sign_body(keypair: Any, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """The body with the original's request signature: ``{nonce}:{endpoint}:{body hash}``."""
    nonce = int(time.time() * 1000)
    with_hotkey = {**body, "hotkey": keypair.ss58_address, "nonce": nonce}
    message = f"{nonce}:{endpoint}:{_payload_hash(with_hotkey)}".encode()
    return {**with_hotkey, "signature": "0x" + bytes(keypair.sign(message)).hex()}


def sealed_blob(namespace: str, namespace_key: str, text: str, metadata: dict[str, Any]) -> str:
    """An opaque ``_enc`` value shaped like the original's (URL-safe base64 of iv, payload, tag).

    The server never opens it, so no cipher is needed to reproduce its wire form.
    """
    payload = json.dumps({"text": text, "metadata": metadata}).encode("utf-8")
    key = hashlib.sha256(f"{namespace}:{namespace_key}".encode()).digest()
    iv = hashlib.sha256(key + payload).digest()[:12]
    stream = hashlib.shake_256(key + iv).digest(len(payload))
    body = bytes(a ^ b for a, b in zip(payload, stream, strict=True))
    tag = hashlib.sha256(iv + body).digest()[:16]
    return base64.urlsafe_b64encode(iv + body + tag).decode("ascii")


class SeedWire:
    """One node, called exactly as the original ``EngramClient`` calls it.

    ``embed`` stands in for the original's local embedder, which it used only
    in a private namespace (it sent vectors, never text, there).
    """

    def __init__(
        self,
        url: str,
        timeout: float = 30.0,
        namespace: str | None = None,
        namespace_key: str | None = None,
        keypair: Any = None,
        embed: Embed | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.namespace = namespace
        self.namespace_key = namespace_key
        self.keypair = keypair
        self.embed = embed
        self.sealed = bool(namespace and namespace_key)
        self.sent: list[dict[str, Any]] = []  # every POST body, as sent

    def namespace_auth(self) -> dict[str, Any]:
        if not self.namespace:
            return {}
        if self.keypair is not None:
            ts = int(time.time() * 1000)
            sig = self.keypair.sign(f"engram-ns:{self.namespace}:{ts}".encode())
            return {
                "namespace": self.namespace,
                "namespace_hotkey": self.keypair.ss58_address,
                "namespace_sig": "0x" + bytes(sig).hex(),
                "namespace_timestamp_ms": ts,
            }
        return {"namespace": self.namespace, "namespace_key": self.namespace_key}

    def _vector(self, text: str) -> list[float]:
        assert self.embed is not None, "a private namespace needs an embedder on the client"
        return [float(x) for x in self.embed(text)]

    # --- the public API ------------------------------------------------------------------

    def ingest(self, text: str, metadata: dict[str, Any] | None = None) -> Reply:
        if self.sealed:
            assert self.namespace is not None and self.namespace_key is not None
            blob = sealed_blob(self.namespace, self.namespace_key, text, metadata or {})
            payload: dict[str, Any] = {
                "raw_embedding": self._vector(text),
                "metadata": {"_enc": blob},
                **self.namespace_auth(),
            }
        else:
            payload = {"text": text, "metadata": metadata or {}}
        return self.post("IngestSynapse", payload)

    def ingest_embedding(
        self, embedding: Sequence[float], metadata: dict[str, Any] | None = None
    ) -> Reply:
        payload = {
            "raw_embedding": list(embedding),
            "metadata": metadata or {},
            **self.namespace_auth(),
        }
        return self.post("IngestSynapse", payload)

    def query(self, text: str, top_k: int = 10, filter: dict[str, Any] | None = None) -> Reply:
        if self.sealed:
            payload: dict[str, Any] = {
                "query_vector": self._vector(text),
                "top_k": top_k,
                **self.namespace_auth(),
            }
        else:
            payload = {"query_text": text, "top_k": top_k}
        if filter:
            payload["filter"] = filter
        return self.post("QuerySynapse", payload)

    def query_by_vector(self, vector: Sequence[float], top_k: int = 10) -> Reply:
        return self.post("QuerySynapse", {"query_vector": list(vector), "top_k": top_k})

    def batch_ingest_file(self, path: str | Path) -> tuple[list[str], list[str], list[Reply]]:
        """CIDs, the original's per-line error messages, and every ingest reply."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"JSONL file not found: {path}")
        cids: list[str] = []
        errors: list[str] = []
        replies: list[Reply] = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                errors.append(f"line {lineno}: JSON parse error: {exc}")
                continue
            text = obj.get("text")
            if not text or not isinstance(text, str) or not text.strip():
                errors.append(f"line {lineno}: missing or empty 'text' field")
                continue
            reply = self.ingest(text, metadata=obj.get("metadata") or {})
            replies.append(reply)
            body = reply.body if isinstance(reply.body, dict) else {}
            if reply.status == 200 and body.get("cid") and not body.get("error"):
                cids.append(body["cid"])
            else:
                errors.append(f"line {lineno}: ingest error: {body.get('error') or reply.status}")
        return cids, errors, replies

    def get(self, cid: str) -> Reply:
        return self.fetch(f"retrieve/{urllib.parse.quote(cid, safe='')}")

    def delete(self, cid: str) -> Reply:
        url = f"{self.url}/retrieve/{urllib.parse.quote(cid, safe='')}"
        return self._send(urllib.request.Request(url, method="DELETE"))

    def list(self, filter: dict[str, Any] | None = None, limit: int = 50, offset: int = 0) -> Reply:
        payload: dict[str, Any] = {"limit": limit, "offset": offset}
        if filter:
            payload["filter"] = filter
        if self.namespace:
            payload["namespace"] = self.namespace
        return self.post("list", payload)

    def health(self) -> Reply:
        return self.fetch("health")

    def is_online(self) -> bool:
        """True when /health answers; an unreachable node is False, an HTTP error raises."""
        try:
            reply = self.health()
        except SeedOfflineError:
            return False
        if reply.status >= 400:
            raise SeedHTTPError(f"HTTP request failed: {reply.status} {reply.raw[:200]!r}")
        return True

    # --- the two ways it talks ------------------------------------------------------------

    def post(self, endpoint: str, payload: dict[str, Any]) -> Reply:
        if self.keypair is not None:
            payload = sign_body(self.keypair, endpoint, payload)
        self.sent.append(payload)
        request = urllib.request.Request(
            f"{self.url}/{endpoint}",
            data=json.dumps(payload).encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        return self._send(request)

    def fetch(self, endpoint: str) -> Reply:
        return self._send(f"{self.url}/{endpoint}")

    def _send(self, request: urllib.request.Request | str) -> Reply:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return _reply(resp.status, resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return _reply(exc.code, exc.read())
        except (TimeoutError, ConnectionRefusedError) as exc:
            raise SeedOfflineError(str(exc)) from exc
        except urllib.error.URLError as exc:
            raise SeedOfflineError(str(exc.reason)) from exc
