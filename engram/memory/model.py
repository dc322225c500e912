"""A memory: an ordinary record whose metadata carries reserved fields (docs/memory.md).

Because a CID covers the content, a memory never changes: an update is a new
memory that ``supersedes`` the old one, and what does change (archived,
forgotten, recalled) is kept beside the record (:class:`~engram.api.node.Lifecycle`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engram.errors import InvalidRequestError

KIND = "memory"  # metadata["kind"] of every memory: memories may share a namespace with records
_FIELDS = ("category", "importance", "tags", "source", "created_at", "expires_at", "supersedes")


class Memory(BaseModel):
    """One memory as the memory API returns it."""

    model_config = ConfigDict(frozen=True)

    cid: str
    content: str
    category: str | None = None
    importance: float = 0.5
    tags: list[str] = Field(default_factory=list)
    source: str | None = None
    created_at: float
    expires_at: float | None = None
    supersedes: str | None = None  # the CID of the version this one replaced
    links: list[str] = Field(default_factory=list)  # similar memories when it was stored
    state: str = "active"
    namespace: str | None = None
    # On a search: the fused relevance, FSRS retrievability and the final score.
    score: float | None = None
    relevance: float | None = None
    retrievability: float | None = None
    # On a store: the memory already holding this content (nothing new was stored).
    duplicate_of: str | None = None

    @classmethod
    def from_record(
        cls, cid: str, text: str | None, metadata: Mapping[str, Any], **extra: Any
    ) -> Memory:
        known = {k: metadata[k] for k in _FIELDS if metadata.get(k) is not None}
        links = metadata.get("links")
        return cls(
            cid=cid,
            content=text or "",
            links=list(links) if isinstance(links, list) else [],
            **known,
            **extra,
        )


class Context(BaseModel):
    """A prompt-ready block of memories within a token budget, and the memories it used."""

    context: str
    cids: list[str]
    tokens: int
    max_tokens: int


class Link(BaseModel):
    """A memory linked to another: ``similar`` (linked when one was stored), ``updates``
    (this one is the newer version) or ``updated_by`` (it has a newer version)."""

    cid: str
    type: str


def memory_metadata(
    content: Any,
    category: Any,
    importance: Any,
    tags: Any,
    source: Any,
    created_at: float,
    ttl_s: Any,
    supersedes: str | None = None,
    links: Sequence[str] = (),
) -> dict[str, Any]:
    """The record metadata of a new memory; bad input raises with what to fix."""
    if not isinstance(content, str) or not content.strip():
        raise InvalidRequestError("memory content must be non-empty text")
    if category is not None and (not isinstance(category, str) or not category):
        raise InvalidRequestError("category must be a non-empty string or null")
    if (
        isinstance(importance, bool)
        or not isinstance(importance, int | float)
        or not 0 <= importance <= 1
    ):
        raise InvalidRequestError(f"importance must be a number in [0, 1], got {importance!r}")
    if isinstance(tags, str) or not all(isinstance(t, str) and t for t in tags):
        raise InvalidRequestError("tags must be a list of non-empty strings")
    if source is not None and not isinstance(source, str):
        raise InvalidRequestError("source must be a string or null")
    metadata: dict[str, Any] = {
        "kind": KIND,
        "importance": float(importance),
        "tags": sorted(set(tags)),
        "created_at": created_at,
    }
    if ttl_s is not None:
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not ttl_s > 0:
            raise InvalidRequestError(
                f"ttl_s must be a positive number of seconds (an expiry in the future), "
                f"got {ttl_s!r}"
            )
        metadata["expires_at"] = created_at + float(ttl_s)
    optional = {"category": category, "source": source, "supersedes": supersedes}
    metadata.update({k: v for k, v in optional.items() if v is not None})
    if links:
        metadata["links"] = list(links)
    return metadata
