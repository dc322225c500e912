"""The original network's namespace signature, honoured so its clients keep working.

Its SDK proves a namespace's owner by signing ``engram-ns:{namespace}:{timestamp_ms}``
with the owner's hotkey and sending ``namespace_hotkey``, ``namespace_sig`` and
``namespace_timestamp_ms`` in the body. It is weaker than a signed request (the
signature covers neither the body nor the route, and anyone who sees it may
reuse it for a minute), so a node takes it only when the request itself is
unsigned, and only for the namespace it names.
"""

from __future__ import annotations

import time

from bittensor.sp_core import Keypair

from engram.errors import UnauthorizedError


def namespace_signer(
    namespace: str, hotkey: str, signature: str, timestamp_ms: int | str, window_s: float
) -> str:
    """``hotkey``, once its signature over the namespace is valid and fresh; else a 401."""
    try:
        ts = int(timestamp_ms)
        sig = bytes.fromhex(signature.removeprefix("0x"))
    except ValueError as exc:
        raise UnauthorizedError(
            "namespace_sig must be hex and namespace_timestamp_ms an integer (unix ms)"
        ) from exc
    if abs(time.time() * 1000 - ts) > window_s * 1000:
        raise UnauthorizedError(
            f"namespace_timestamp_ms is more than {window_s:g} s from this node's clock"
        )
    message = f"engram-ns:{namespace}:{ts}".encode()
    try:
        valid = Keypair(ss58_address=hotkey).verify(message, sig)
    except (ValueError, TypeError) as exc:
        raise UnauthorizedError(f"namespace_hotkey {hotkey!r} is not an SS58 address") from exc
    if not valid:
        raise UnauthorizedError(
            f"namespace_sig is not {hotkey}'s signature of namespace {namespace!r}"
        )
    return hotkey
