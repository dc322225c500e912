"""The client's half of private records: seal before sending, open what comes back.

A client given a :class:`~engram.security.sealing.SealKey` never sends text: it
embeds texts and query texts itself with the canonical model (so CIDs and
search match every other mode), seals text and metadata to the namespace key,
and opens every record and hit it receives. Records that are not sealed pass
through unchanged.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

import numpy as np

from engram.config import DEFAULT_NAMESPACE, Limits
from engram.embed import Embedder, get_embedder
from engram.errors import EngramError, InvalidRequestError
from engram.records import IngestItem, QueryResult, Record, check_text
from engram.security.sealing import SealKey, add_noise, is_sealed, seal, unseal

_LIMITS = Limits()


class Sealer:
    """A namespace key, the metadata fields kept in clear, and optional embedding noise."""

    def __init__(
        self,
        key: SealKey,
        clear_fields: Collection[str] = (),
        noise_sigma: float = 0.0,
        embedder: Embedder | None = None,
    ) -> None:
        if isinstance(clear_fields, str):
            raise InvalidRequestError("clear_fields is a list of metadata keys, not one string")
        if not 0 <= noise_sigma < 10:
            raise InvalidRequestError(f"noise_sigma must be in [0, 10), got {noise_sigma!r}")
        self.key = key
        self.clear_fields = frozenset(clear_fields)
        self.noise_sigma = noise_sigma
        self._embedder = embedder

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embedder.encode(list(texts))

    def seal_items(self, items: Sequence[IngestItem]) -> list[IngestItem | EngramError]:
        """Each item as the vector and envelope a miner will store, or its error.

        Texts are embedded here in one batch; a bad item fails alone.
        """
        out: list[IngestItem | EngramError | None] = [None] * len(items)
        to_embed = []
        for i, item in enumerate(items):
            if item.embedding is None:
                try:
                    check_text(item.text, _LIMITS, required=True)
                    to_embed.append(i)
                except EngramError as exc:
                    out[i] = exc
        vectors = dict(
            zip(to_embed, self.embed([items[i].text or "" for i in to_embed]), strict=True)
        )
        for i, item in enumerate(items):
            if out[i] is not None:
                continue
            try:
                vector = np.asarray(vectors.get(i, item.embedding), dtype=np.float32)
                if self.noise_sigma:
                    vector = add_noise(vector, self.noise_sigma)
                _, metadata = seal(
                    item.text,
                    item.metadata,
                    namespace=item.namespace or DEFAULT_NAMESPACE,
                    embedding=vector,
                    public_key=self.key.public,
                    clear_fields=self.clear_fields,
                )
                out[i] = replace(item, text=None, embedding=vector.tolist(), metadata=metadata)
            except (EngramError, ValueError) as exc:
                out[i] = exc if isinstance(exc, EngramError) else InvalidRequestError(str(exc))
        return [o for o in out if o is not None]

    def open_record(self, record: Record) -> Record:
        if not is_sealed(record.metadata):
            return record
        text, metadata = unseal(
            record.text,
            record.metadata,
            namespace=record.namespace,
            embedding=record.embedding,
            key=self.key,
        )
        return replace(record, text=text, metadata=metadata)

    def open_hit(
        self, hit: QueryResult, namespace: str | None, keep_embedding: bool
    ) -> QueryResult:
        """A hit opened with the query's namespace; its embedding kept only if it was asked for."""
        if is_sealed(hit.metadata):
            if hit.embedding is None:
                raise InvalidRequestError("a sealed hit came back without its embedding")
            text, metadata = unseal(
                hit.text,
                hit.metadata,
                namespace=namespace or DEFAULT_NAMESPACE,
                embedding=hit.embedding,
                key=self.key,
            )
            hit = replace(hit, text=text, metadata=metadata)
        return hit if keep_embedding else replace(hit, embedding=None)


def sealer_for(
    key: SealKey | None,
    clear_fields: Collection[str],
    noise_sigma: float,
    embedder: Embedder | None,
) -> Sealer | None:
    """A client's sealer, or ``None`` when it has no key (and then no other sealing option)."""
    if key is None:
        if clear_fields or noise_sigma:
            raise InvalidRequestError("clear_fields and noise_sigma apply only with a seal_key")
        return None
    if not isinstance(key, SealKey):
        raise InvalidRequestError(
            f"seal_key must be a SealKey (SealKey.generate() or SealKey.load(path)), "
            f"not {type(key).__name__}"
        )
    return Sealer(key, clear_fields, noise_sigma, embedder)
