"""engram.sdk.langchain: LangChain's own standard suite, embedded and against a real miner,
then what the standard suite does not cover (the canonical model, hybrid search, filters,
relevance scores, ids across instances, the README's example).

The standard suite's async tests are plain ``async def``; pytest-asyncio runs them because
each suite class carries the asyncio mark (its sync tests ignore the mark, and the warning
pytest-asyncio gives for that is filtered on those classes only).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bittensor.sp_core import Keypair
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.indexing import IndexingResult, InMemoryRecordManager, index
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from engram import EngramClient
from engram.errors import ForbiddenError, InvalidFilterError, InvalidRequestError
from engram.sdk.langchain import ID_KEY, EngramEmbeddings, EngramRetriever, EngramVectorStore
from engram.security.sealing import SealKey
from tests.conftest import HashEmbedder
from tests.e2e.conftest import start_miner

ALICE = Keypair.create_from_uri("//Alice")
BOB = Keypair.create_from_uri("//Bob")
README = (Path(__file__).parents[2] / "README.md").read_text()

# A sync standard test under the suite class's asyncio mark: pytest-asyncio says so, harmlessly.
_SYNC_UNDER_ASYNCIO_MARK = (
    "ignore:The test <Function .*> is marked with '@pytest.mark.asyncio' "
    "but it is not an async function:pytest.PytestWarning"
)


def fresh_namespace() -> str:
    return f"lc-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def miner_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real miner process (``python -m engram miner`` on a free loopback port) for the
    module, its rate limits off: the standard suite sends requests as fast as it can."""
    root = tmp_path_factory.mktemp("langchain-miner")
    model_home = tmp_path_factory.getbasetemp() / "engram-home"  # the session's model cache
    model_home.mkdir(exist_ok=True)
    miner = start_miner(
        root / "home", root / "miner.log", model_home, env={"ENGRAM_RATE_LIMITS": "false"}
    )
    try:
        yield miner.url
    finally:
        # A clean stop: the store closed, then uvicorn's own re-raise of SIGTERM.
        assert miner.terminate() in (0, -signal.SIGTERM), miner.log()


# --- LangChain's standard suite ------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.filterwarnings(_SYNC_UNDER_ASYNCIO_MARK)
class TestEmbeddedStandard(VectorStoreIntegrationTests):
    """The standard suite, sync and async, on a fresh embedded store per test."""

    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> Iterator[VectorStore]:
        with EngramVectorStore(path=tmp_path / "store", embeddings=self.get_embeddings()) as store:
            yield store


@pytest.mark.asyncio
@pytest.mark.filterwarnings(_SYNC_UNDER_ASYNCIO_MARK)
class TestMinerStandard(VectorStoreIntegrationTests):
    """The standard suite, sync and async, over HTTP: a fresh namespace per test, signed by
    a hotkey (the first signed write makes the namespace its own, and lets it delete)."""

    @pytest.fixture
    def vectorstore(self, miner_url: str) -> Iterator[VectorStore]:
        store = EngramVectorStore(
            miner_url=miner_url,
            embeddings=self.get_embeddings(),
            namespace=fresh_namespace(),
            keypair=ALICE,
        )
        with store:
            yield store
            store.delete()


# --- Fixed vectors, so scores and diversity are known exactly ---------------------------------


class TableEmbeddings(Embeddings):
    """Each text's vector is looked up in a table (a query and a document alike)."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.table[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.table[text]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EngramVectorStore]:
    """An embedded store holding 3-d vectors from a table."""
    table = {
        "north": [0.0, 1.0, 0.0],
        "north-ish": [0.1, 1.0, 0.0],
        "also north": [0.0, 1.0, 0.1],
        "east": [1.0, 0.0, 0.0],
        "south": [0.0, -1.0, 0.0],
    }
    with EngramVectorStore(path=tmp_path / "store", embeddings=TableEmbeddings(table)) as store:
        yield store


def test_langchain_a_failed_item_keeps_its_old_version_and_reports(
    embedded: EngramVectorStore,
) -> None:
    embedded.add_texts(["east", "south"], ids=["n", "m"])
    too_long = "north " * 2_000  # over the 8,192 characters a record's text may have
    embedded.embeddings.table[too_long] = [0.0, 1.0, 0.0]  # type: ignore[attr-defined]
    with pytest.raises(InvalidRequestError, match=r"1 of 2 documents were not stored \('m'"):
        embedded.add_texts(["north", too_long], ids=["n", "m"])
    assert [d.page_content for d in embedded.get_by_ids(["n", "m"])] == ["north", "south"]
    assert embedded.client.count() == 2  # "n" was replaced, "m" kept its old version
    with pytest.raises(TypeError, match="by keyword"):
        EngramVectorStore(embedded.embeddings)  # type: ignore[arg-type]


def test_langchain_relevance_scores_are_in_zero_one(embedded: EngramVectorStore) -> None:
    embedded.add_texts(["north", "east", "south"], ids=["n", "e", "s"])
    scored = embedded.similarity_search_with_score("north", k=3)
    assert [(d.id, round(s, 5)) for d, s in scored] == [("n", 1.0), ("e", 0.0), ("s", -1.0)]
    relevant = embedded.similarity_search_with_relevance_scores("north", k=3)
    assert [(d.id, round(r, 5)) for d, r in relevant] == [("n", 1.0), ("e", 0.5), ("s", 0.0)]
    assert all(0.0 <= r <= 1.0 for _, r in relevant)
    assert asyncio.run(embedded.asimilarity_search_with_relevance_scores("north", k=3)) == relevant
    fn = embedded._select_relevance_score_fn()
    assert (fn(-1.0), fn(0.0), fn(1.0), fn(1.0000001), fn(-1.0000001)) == (0, 0.5, 1, 1, 0)
    above = embedded.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.4, "k": 3}
    ).invoke("north")
    assert [d.id for d in above] == ["n", "e"]


def test_langchain_mmr_prefers_diverse_documents(embedded: EngramVectorStore) -> None:
    embedded.add_texts(["north", "north-ish", "also north", "east"])
    assert [d.page_content for d in embedded.similarity_search("north", k=2)] == [
        "north",
        "north-ish",
    ]
    diverse = embedded.max_marginal_relevance_search("north", k=2, fetch_k=4, lambda_mult=0.3)
    assert [d.page_content for d in diverse] == ["north", "east"]
    by_vector = embedded.max_marginal_relevance_search_by_vector(
        [0.0, 1.0, 0.0], k=2, fetch_k=4, lambda_mult=0.3
    )
    assert by_vector == diverse
    retriever = embedded.as_retriever(
        search_type="mmr", search_kwargs={"k": 2, "fetch_k": 4, "lambda_mult": 0.3}
    )
    assert asyncio.run(retriever.ainvoke("north")) == diverse


def test_langchain_mmr_without_local_embeddings_matches_langchains(tmp_path: Path) -> None:
    """When the node embeds the query, MMR works from the similarities it returns; the choice
    is the one LangChain's own MMR makes from the query's vector."""
    hasher = HashEmbedder()
    with EngramVectorStore(path=tmp_path / "store", embedder=hasher) as store:
        store.add_texts([f"text {i}" for i in range(8)])
        by_node = store.max_marginal_relevance_search("text 3", k=4, fetch_k=8, lambda_mult=0.3)
        vector = hasher.encode(["text 3"])[0].tolist()
        by_vector = store.max_marginal_relevance_search_by_vector(
            vector, k=4, fetch_k=8, lambda_mult=0.3
        )
        assert [d.page_content for d in by_node] == [d.page_content for d in by_vector]
        assert by_node[0].page_content == "text 3" and len({d.id for d in by_node}) == 4


def test_langchain_filters_apply_to_every_search(embedded: EngramVectorStore) -> None:
    embedded.add_texts(
        ["north", "north-ish", "also north", "east"],
        [
            {"year": 2020, "lang": "en"},
            {"year": 2021},
            {"year": 2022, "lang": "en"},
            {"year": 2023},
        ],
        ids=["a", "b", "c", "d"],
    )
    recent = {"year": {"$gte": 2022}}
    assert [d.id for d in embedded.similarity_search("north", k=4, filter=recent)] == ["c", "d"]
    assert [d.id for d in embedded.similarity_search_by_vector([0, 1, 0], filter=recent)] == [
        "c",
        "d",
    ]
    both = {"$and": [{"lang": "en"}, {"year": {"$lt": 2021}}]}
    assert [d.id for d in embedded.max_marginal_relevance_search("north", filter=both)] == ["a"]
    assert [d.id for d in embedded.hybrid_search("north", filter={"lang": "en"})] == ["a", "c"]
    retriever = embedded.as_retriever(search_kwargs={"k": 5, "filter": {"year": 2021}})
    assert [d.id for d in retriever.invoke("east")] == ["b"]
    assert embedded.similarity_search("north", filter={ID_KEY: "d"})[0].id == "d"
    with pytest.raises(InvalidFilterError):
        embedded.similarity_search("north", filter={"year": {"$gt": "soon"}})
    with pytest.raises(TypeError, match="filters"):
        embedded.similarity_search("north", filters={"year": 2021})  # a typo is not ignored


def test_langchain_ids_metadata_and_records_written_without_langchain(
    embedded: EngramVectorStore,
) -> None:
    meta = {"topic": "compass"}
    ids = embedded.add_texts(["north", "east"], [meta, meta])
    assert meta == {"topic": "compass"}  # the caller's dict is not changed
    assert all(str(uuid.UUID(i, version=4)) == i for i in ids)
    (doc,) = embedded.get_by_ids(ids[:1])
    assert doc == Document(id=ids[0], page_content="north", metadata=meta)
    (record,) = embedded.client.list(filter={ID_KEY: ids[0]})
    assert record.metadata == {"topic": "compass", ID_KEY: ids[0]}  # kept in the record
    with pytest.raises(ValueError, match="reserved"):
        embedded.add_texts(["south"], [{ID_KEY: "mine"}])
    with pytest.raises(ValueError, match="unique"):
        embedded.add_texts(["south", "north"], ids=["x", "x"])

    # A record written by the plain client: its document's id is its CID, which works as an id.
    cid = embedded.client.ingest_embedding([0.0, -1.0, 0.0], {"by": "sdk"}, text="south")
    (south,) = embedded.similarity_search("south", k=1)
    assert south == Document(id=cid, page_content="south", metadata={"by": "sdk"})
    assert embedded.get_by_ids([cid, "missing"]) == [south]
    embedded.delete([cid])
    assert embedded.client.get(cid) is None
    plain = embedded.client.ingest_embedding([1.0, 0.0, 0.0], text="not LangChain's")
    embedded.delete()  # None: every document LangChain wrote here, and only those
    assert [r.cid for r in embedded.client.list()] == [plain]


def test_langchain_sealed_records_keep_their_ids_findable(tmp_path: Path) -> None:
    key = SealKey.generate()
    hasher = HashEmbedder()
    with EngramVectorStore(path=tmp_path / "s", seal_key=key, embedder=hasher) as store:
        store.add_texts(["a secret", "another"], [{"tag": "x"}, {}], ids=["1", "2"])
        store.add_texts(["a new secret"], [{"tag": "y"}], ids=["1"])
        assert store.get_by_ids(["1"]) == [
            Document(id="1", page_content="a new secret", metadata={"tag": "y"})
        ]
        assert store.client.count() == 2
        assert store.client.list(filter={"tag": "y"}) == []  # sealed: the store cannot see it
        sealed = EngramClient(path=tmp_path / "other", seal_key=key, embedder=hasher)
        with sealed, pytest.raises(ValueError, match="clear_fields"):
            EngramVectorStore(client=sealed)


def test_langchain_from_texts_and_afrom_texts(tmp_path: Path) -> None:
    table = TableEmbeddings({"north": [0.0, 1.0], "east": [1.0, 0.0]})
    with EngramVectorStore.from_texts(
        ["north", "east"], table, [{"i": 1}, {"i": 2}], ids=["n", "e"], path=tmp_path / "a"
    ) as store:
        assert [d.id for d in store.similarity_search("east", k=2)] == ["e", "n"]

    async def build() -> EngramVectorStore:
        return await EngramVectorStore.afrom_texts(
            ["north", "east"], table, ids=["n", "e"], path=tmp_path / "b"
        )

    with asyncio.run(build()) as store:
        assert [d.id for d in store.get_by_ids(["e", "n"])] == ["e", "n"]


def test_langchain_indexing_api_keeps_a_store_in_sync(tmp_path: Path) -> None:
    """LangChain's indexing API: ids from content hashes, add_documents with batch_size,
    delete of what a source no longer holds."""
    embeddings = DeterministicFakeEmbedding(size=6)
    with EngramVectorStore(path=tmp_path / "store", embeddings=embeddings) as store:
        manager = InMemoryRecordManager("engram")
        manager.create_schema()
        docs = [Document(page_content=f"chunk {i}", metadata={"source": "a.txt"}) for i in range(3)]

        def sync(source: list[Document], batch_size: int = 100) -> IndexingResult:
            return index(
                source,
                manager,
                store,
                batch_size=batch_size,
                cleanup="full",
                source_id_key="source",
                key_encoder="sha256",
            )

        first = sync(docs, batch_size=2)
        assert (first["num_added"], store.client.count()) == (3, 3)
        second = sync(docs[:2])
        assert (second["num_skipped"], second["num_deleted"]) == (2, 1)
        assert sorted(d.page_content for d in store.similarity_search("chunk", k=5)) == [
            "chunk 0",
            "chunk 1",
        ]


def test_langchain_constructor_modes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="one of"):
        EngramVectorStore(miner_url="http://127.0.0.1:1", path=tmp_path)
    with EngramClient(path=tmp_path / "shared", namespace="ns") as client:
        store = EngramVectorStore(client=client)
        assert store.client is client and store.namespace == "ns"
        with pytest.raises(ValueError, match="with client="):
            EngramVectorStore(client=client, keypair=ALICE)
        store.close()  # not this store's client: it stays open
        assert client.count() == 0

    seen: dict[str, Any] = {}

    def from_network(chain: str, **kwargs: Any) -> EngramClient:
        seen.update(kwargs, chain=chain)
        return EngramClient(path=tmp_path / "network", namespace=kwargs.get("namespace"))

    monkeypatch.setattr(EngramClient, "from_network", from_network)
    with EngramVectorStore(chain="local:/x", netuid=3, namespace="n", keypair=ALICE) as store:
        assert seen == {"chain": "local:/x", "netuid": 3, "namespace": "n", "keypair": ALICE}
        assert store.namespace == "n"
        assert isinstance(store.embeddings, EngramEmbeddings)


# --- A real miner and the real model --------------------------------------------------------


DOCS = [
    "Resetting the admin password on your home wifi router",
    "A recipe for slow-cooked lamb with rosemary and garlic",
    "The central bank raised interest rates by half a point",
    "Part QZX-7731 is the replacement gasket for the espresso machine's boiler",
    # Look-alike part numbers: to the model they mean the same; only the words tell them apart.
    "Part QZX-7713 is the steam wand tip for the espresso machine",
    "Part QXZ-1377 is the drip tray of the espresso machine",
    "Part ZQX-3177 is the portafilter handle of the espresso machine",
]
GASKET = 3


@pytest.mark.slow
def test_langchain_seed_snippet_retrieves_the_right_document(miner_url: str) -> None:
    # The original adapter's example, as written for it (default namespace, unsigned).
    store = EngramVectorStore(miner_url=miner_url, embeddings=EngramEmbeddings())
    ids = store.add_texts(DOCS)
    docs = store.as_retriever(search_kwargs={"k": 5}).invoke(
        "how do I change the login for my wireless modem?"
    )
    assert len(docs) == 5
    assert docs[0] == Document(id=ids[0], page_content=DOCS[0])
    assert store.health()
    store.close()


@pytest.mark.slow
def test_langchain_canonical_model_embeds_on_the_node(miner_url: str) -> None:
    ns = fresh_namespace()
    with EngramVectorStore(miner_url=miner_url, namespace=ns, keypair=ALICE) as store:
        assert isinstance(store.embeddings, EngramEmbeddings)
        ids = store.add_texts(DOCS, [{"i": i} for i in range(len(DOCS))])
        (record,) = store.client.list(filter={ID_KEY: ids[2]})
        here = np.asarray(store.embeddings.embed_query(DOCS[2]), dtype=np.float32)
        assert float(here @ record.embedding) > 0.9999  # the node's vector is the same model's
        hits = store.similarity_search_with_score("what did the central bank decide?", k=2)
        assert hits[0][0].id == ids[2] and -1.0 <= hits[1][1] < hits[0][1] <= 1.0
        mmr = store.max_marginal_relevance_search("money and markets", k=2, fetch_k=6)
        assert len(mmr) == 2 and len({d.id for d in mmr}) == 2

        # Another instance (another process, say) finds and overwrites the same ids.
        with EngramVectorStore(miner_url=miner_url, namespace=ns, keypair=ALICE) as other:
            assert [d.page_content for d in other.get_by_ids([ids[1]])] == [DOCS[1]]
            other.add_texts(["A recipe for braised lamb shanks"], ids=[ids[1]])
        (lamb,) = store.get_by_ids([ids[1]])
        assert lamb.page_content == "A recipe for braised lamb shanks" and lamb.metadata == {}
        assert store.client.count(ns) == len(DOCS)

        # The namespace is Alice's: Bob may neither read nor delete in it.
        bob = EngramVectorStore(miner_url=miner_url, namespace=ns, keypair=BOB)
        with bob, pytest.raises(ForbiddenError):
            bob.delete([ids[0]])


@pytest.mark.slow
@pytest.mark.parametrize("local_embeddings", [False, True], ids=["node-embeds", "embeds-here"])
def test_langchain_hybrid_retriever_finds_a_rare_word(
    miner_url: str, local_embeddings: bool
) -> None:
    embeddings = EngramEmbeddings() if local_embeddings else None
    with EngramVectorStore(
        miner_url=miner_url, embeddings=embeddings, namespace=fresh_namespace(), keypair=ALICE
    ) as store:
        ids = store.add_texts(DOCS)
        query = "QZX-7731"
        nearest = store.similarity_search(query, k=1)[0]
        assert nearest.id != ids[GASKET]  # meaning alone picks a look-alike part
        hybrid = store.as_retriever(search_type="hybrid", search_kwargs={"k": 1})
        assert isinstance(hybrid, EngramRetriever)
        assert [d.id for d in hybrid.invoke(query)] == [ids[GASKET]]
        assert [d.id for d in asyncio.run(hybrid.ainvoke(query))] == [ids[GASKET]]
        assert [d.id for d in store.search(query, "hybrid", k=1, mode="keyword")] == [ids[GASKET]]
        scored = store.hybrid_search_with_score(query, k=3)
        assert scored[0][0].id == ids[GASKET] and scored[0][1] >= scored[-1][1]


@pytest.mark.slow
def test_langchain_readme_section_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = README.split("\n## LangChain\n", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)  # the example's store is created in the working directory
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md#langchain", "exec"), {})
    printed = out.getvalue()
    assert printed.splitlines() == ["paris", "gasket"], printed
