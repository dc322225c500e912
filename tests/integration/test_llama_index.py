"""engram.sdk.llama_index: LlamaIndex's VectorStoreIndex on Engram, embedded and against a
real miner over HTTP, with the canonical model as its embedding and nothing downloaded.

Every test may connect to 127.0.0.1 only (pytest-socket's ``allow_hosts``): a tokenizer
cache or a model fetched at run time would fail here. The real model loads once for the
module; each test writes to a fresh namespace, and the HTTP client signs with //Alice, so
its deletes are allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bittensor.sp_core import Keypair
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from engram import EngramClient
from engram.config import MinerConfig, SecurityConfig
from engram.embed import MODEL_ID, get_embedder
from engram.errors import InvalidFilterError, InvalidRequestError
from engram.memory.tokens import count_tokens
from engram.miner.app import create_miner_app
from engram.sdk.llama_index import (
    NODE_ID_KEY,
    EngramEmbedding,
    EngramVectorStore,
    sentence_splitter,
    to_engram_filter,
)
from tests.conftest import ThreadedServer, free_port, serve_in_thread

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

ALICE = Keypair.create_from_uri("//Alice")
README = (Path(__file__).parents[2] / "README.md").read_text()

BIO = "Mitochondria are the powerhouse of the cell: they turn glucose and oxygen into ATP."
GEO = "Paris, on the river Seine, is the capital and largest city of France."
CODE = "Python's asyncio runs coroutines on an event loop, switching tasks while one awaits I/O."
RARE = "Ticket Zxqvort was closed after the nightly reboot."
FILLER = [
    "The physician prescribed antibiotics for her infection.",
    "Our team shipped the quarterly report two days late.",
    "A thunderstorm knocked out power across the valley last night.",
    "She planted tomatoes and basil in the raised garden bed.",
    "The orchestra rehearsed the second movement of the symphony.",
    "He replaced the bicycle chain and oiled the gears.",
]


def _docs() -> list[Document]:
    return [
        Document(text=BIO, doc_id="bio", metadata={"topic": "biology", "year": 2019}),
        Document(text=GEO, doc_id="geo", metadata={"topic": "geography", "year": 2021}),
        Document(text=CODE, doc_id="code", metadata={"topic": "programming", "year": 2023}),
    ]


# --- the model once, a miner and two clients for the module ---------------------------------


@pytest.fixture(scope="module")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's ENGRAM_HOME (tests/conftest.py's), set while module fixtures start, so
    the model's ONNX cache never lands in the developer's ~/.engram."""
    home = tmp_path_factory.getbasetemp() / "engram-home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ENGRAM_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def embed_model(session_home: Path) -> EngramEmbedding:
    model = EngramEmbedding()
    model.get_text_embedding("load the model once for the module")
    return model


@pytest.fixture(scope="module")
def miner(
    tmp_path_factory: pytest.TempPathFactory, embed_model: EngramEmbedding
) -> Iterator[ThreadedServer]:
    """A real miner app under uvicorn on a free loopback port, rate limits off, sharing the
    process's model."""
    app = create_miner_app(
        MinerConfig(home=tmp_path_factory.mktemp("llama-miner")),
        embedder=get_embedder(),
        security=SecurityConfig(rate_limits=False),
    )
    server = serve_in_thread(app, free_port(), "llama-miner")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def embedded_client(
    tmp_path_factory: pytest.TempPathFactory, embed_model: EngramEmbedding
) -> Iterator[EngramClient]:
    with EngramClient(path=tmp_path_factory.mktemp("llama-embedded")) as client:
        yield client


@pytest.fixture(scope="module")
def http_client(miner: ThreadedServer) -> Iterator[EngramClient]:
    with EngramClient(miner.url, keypair=ALICE) as client:
        yield client


@pytest.fixture(params=["embedded", "http"])
def store(request: pytest.FixtureRequest) -> EngramVectorStore:
    """A store on a fresh namespace, embedded or over HTTP."""
    client = request.getfixturevalue(f"{request.param}_client")
    return EngramVectorStore(client, namespace=f"li-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def index(store: EngramVectorStore, embed_model: EngramEmbedding) -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(
        _docs(),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
    )


def _texts(nodes: Any) -> list[str]:
    return [n.get_content() if hasattr(n, "get_content") else n.node.get_content() for n in nodes]


# --- VectorStoreIndex end to end ------------------------------------------------------------


def test_llama_index_from_documents_retrieves_the_right_node(
    index: VectorStoreIndex, store: EngramVectorStore
) -> None:
    retriever = index.as_retriever(similarity_top_k=1)
    for question, text, doc_id in [
        ("What produces energy inside cells?", BIO, "bio"),
        ("Which city is the capital of France?", GEO, "geo"),
        ("How does asynchronous programming work in Python?", CODE, "code"),
    ]:
        (hit,) = retriever.retrieve(question)
        assert hit.node.get_content() == text and hit.node.ref_doc_id == doc_id
        assert 0.3 < (hit.score or 0) <= 1.0  # cosine similarity
    (hit,) = retriever.retrieve("What produces energy inside cells?")
    assert hit.node.metadata == {"topic": "biology", "year": 2019}  # the node as it was written
    record = store.client.list(namespace=store.namespace, filter={"ref_doc_id": "bio"})[0]
    assert record.text == BIO and record.metadata["topic"] == "biology"  # flat: filterable
    assert record.metadata[NODE_ID_KEY] == hit.node.node_id
    assert len(record.embedding) == 384


def test_llama_index_filtered_queries(index: VectorStoreIndex) -> None:
    def retrieve(filters: MetadataFilters, question: str = "energy in cells") -> list[str]:
        return _texts(index.as_retriever(similarity_top_k=3, filters=filters).retrieve(question))

    recent = MetadataFilters(filters=[MetadataFilter(key="year", value=2021, operator=">=")])
    assert sorted(retrieve(recent)) == sorted([CODE, GEO])
    not_bio = MetadataFilters(
        filters=[MetadataFilter(key="topic", value="biology")], condition=FilterCondition.NOT
    )
    assert sorted(retrieve(not_bio)) == sorted([GEO, CODE])
    either = MetadataFilters(
        filters=[
            MetadataFilter(key="topic", value=["geography"], operator=FilterOperator.IN),
            MetadataFilters(
                filters=[
                    MetadataFilter(key="year", value=2020, operator=FilterOperator.LT),
                    MetadataFilter(key="topic", value="physics", operator=FilterOperator.NE),
                ]
            ),
        ],
        condition=FilterCondition.OR,
    )
    assert retrieve(either) == [BIO, GEO]  # the best by meaning first
    nothing = MetadataFilters(filters=[MetadataFilter(key="year", value=1900, operator="<")])
    assert retrieve(nothing) == []
    with pytest.raises(InvalidFilterError, match="text_match"):
        retrieve(
            MetadataFilters(
                filters=[MetadataFilter(key="topic", value="bio", operator="text_match")]
            )
        )


def test_llama_index_delete_by_ref_doc_id_removes_every_node(
    store: EngramVectorStore, embed_model: EngramEmbedding
) -> None:
    long = " ".join(
        f"Sentence {i} of the long document talks about rivers, bridges and ferries."
        for i in range(12)
    )
    docs = [Document(text=long, doc_id="long"), *_docs()]
    index = VectorStoreIndex.from_documents(
        docs,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
        transformations=[sentence_splitter(chunk_size=48, chunk_overlap=0)],
    )
    by_doc = MetadataFilters(filters=[MetadataFilter(key="ref_doc_id", value="long")])
    chunks = store.get_nodes(filters=by_doc)
    assert len(chunks) >= 3 and all(n.ref_doc_id == "long" for n in chunks)
    assert all(count_tokens(n.get_content(metadata_mode="embed")) <= 48 for n in chunks)

    index.delete_ref_doc("long")
    assert store.get_nodes(filters=by_doc) == []
    assert sorted(_texts(store.get_nodes())) == sorted([BIO, GEO, CODE])
    store.delete("no-such-document")  # nothing to delete is not an error
    assert store.client.count(store.namespace) == 3


def test_llama_index_get_nodes_delete_nodes_and_clear(
    index: VectorStoreIndex, store: EngramVectorStore
) -> None:
    nodes = store.get_nodes()
    assert sorted(_texts(nodes)) == sorted([BIO, GEO, CODE])
    by_text = {n.get_content(): n for n in nodes}
    ids = [by_text[CODE].node_id, by_text[BIO].node_id]
    got = store.get_nodes(ids)
    assert [n.node_id for n in got] == ids  # in the order asked for
    assert got[0].embedding is not None and len(got[0].embedding) == 384
    assert _texts(
        store.get_nodes(ids, MetadataFilters.from_dicts([{"key": "year", "value": 2019}]))
    ) == [BIO]
    assert store.get_nodes([]) == []

    store.delete_nodes([by_text[GEO].node_id])
    assert sorted(_texts(store.get_nodes())) == sorted([BIO, CODE])
    old = MetadataFilters(filters=[MetadataFilter(key="year", value=2020, operator="<")])
    store.delete_nodes(filters=old)
    assert _texts(store.get_nodes()) == [CODE]
    store.delete_nodes([])  # no ids: nothing
    assert store.client.count(store.namespace) == 1

    index.insert(Document(text=GEO, doc_id="geo-again"))
    assert store.client.count(store.namespace) == 2
    store.clear()
    assert store.client.count(store.namespace) == 0 and store.get_nodes() == []


def test_llama_index_add_replaces_a_node_and_reports_failures(
    store: EngramVectorStore, embed_model: EngramEmbedding
) -> None:
    node = TextNode(id_="n1", text=BIO, metadata={"v": 1})
    node.embedding = embed_model.get_text_embedding(BIO)
    assert store.add([node]) == ["n1"]
    assert store.add([node]) == ["n1"]  # the same content: the same record
    changed = TextNode(id_="n1", text=GEO, metadata={"v": 2}, embedding=node.embedding)
    store.add([changed])
    (got,) = store.get_nodes(["n1"])
    assert (got.get_content(), got.metadata) == (GEO, {"v": 2})
    assert store.client.count(store.namespace) == 1

    # Engram reserves model_version at the top level; the node keeps it all the same
    reserved = TextNode(id_="n2", text=CODE, metadata={"model_version": "mine"})
    reserved.embedding = node.embedding
    wrong_dim = TextNode(id_="n3", text=GEO, embedding=[1.0, 0.0])
    with pytest.raises(InvalidRequestError, match=r"stored 1 of 2 nodes; node n3: .*dimension"):
        store.add([reserved, wrong_dim])
    (got,) = store.get_nodes(["n2"])
    assert got.metadata == {"model_version": "mine"}
    assert store.get_nodes(["n3"]) == []


def test_llama_index_hybrid_query_finds_a_rare_word(
    store: EngramVectorStore, embed_model: EngramEmbedding
) -> None:
    texts = [RARE, BIO, GEO, CODE, *FILLER]
    vectors = embed_model.get_text_embedding_batch(texts)
    store.add([TextNode(text=t, embedding=v) for t, v in zip(texts, vectors, strict=True)])
    question = "Zxqvort status"
    embedding = embed_model.get_query_embedding(question)

    def top(**kwargs: Any) -> str:
        query = VectorStoreQuery(query_str=question, query_embedding=embedding, **kwargs)
        result = store.query(query)
        assert result.ids == [n.node_id for n in result.nodes or []]
        assert result.similarities is not None and len(result.similarities) == len(result.ids or [])
        return (result.nodes or [])[0].get_content()

    assert top(mode=VectorStoreQueryMode.HYBRID, similarity_top_k=1) == RARE
    assert top(mode=VectorStoreQueryMode.HYBRID, similarity_top_k=1, alpha=0.0) == RARE
    assert top(mode=VectorStoreQueryMode.HYBRID, similarity_top_k=1, alpha=0.3) == RARE
    assert top(mode=VectorStoreQueryMode.TEXT_SEARCH, similarity_top_k=1) == RARE
    assert top(mode=VectorStoreQueryMode.HYBRID, alpha=1.0, similarity_top_k=1) == top(
        similarity_top_k=1
    )  # alpha 1: the vector channel alone, as a plain query
    result = store.query(
        VectorStoreQuery(
            query_str=question, query_embedding=embedding, mode="hybrid", hybrid_top_k=4
        )
    )
    assert len(result.ids or []) == 4  # hybrid_top_k: how many hybrid results
    retriever = VectorStoreIndex.from_vector_store(store, embed_model=embed_model).as_retriever(
        vector_store_query_mode="hybrid", similarity_top_k=1
    )
    assert _texts(retriever.retrieve(question)) == [RARE]
    with pytest.raises(InvalidRequestError, match="not supported"):
        store.query(VectorStoreQuery(query_embedding=embedding, mode=VectorStoreQueryMode.SVM))


def test_llama_index_async_variants(store: EngramVectorStore, embed_model: EngramEmbedding) -> None:
    async def scenario() -> None:
        texts = [BIO, GEO, CODE]
        vectors = await embed_model.aget_text_embedding_batch(texts)
        nodes = [
            TextNode(text=t, embedding=v, metadata={"n": i})
            for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
        ]
        assert await store.async_add(nodes) == [n.node_id for n in nodes]
        question = await embed_model.aget_query_embedding("the capital of France")
        result = await store.aquery(VectorStoreQuery(query_embedding=question, similarity_top_k=1))
        assert _texts(result.nodes) == [GEO]
        assert _texts(await store.aget_nodes([nodes[2].node_id])) == [CODE]
        await store.adelete_nodes([nodes[2].node_id])
        one = MetadataFilters(filters=[MetadataFilter(key="n", value=1)])
        assert _texts(await store.aget_nodes(filters=one)) == [GEO]
        index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model)
        hits = await index.as_retriever(similarity_top_k=1).aretrieve("powerhouse of the cell")
        assert _texts(hits) == [BIO]
        await store.aclear()
        assert await store.aget_nodes() == []
        doc = Document(text=GEO, doc_id="d")
        index.insert(doc)
        await store.adelete("d")
        assert await store.aget_nodes() == []

    asyncio.run(scenario())


# --- the embedding model --------------------------------------------------------------------


def test_llama_index_embedding_is_the_canonical_model(embed_model: EngramEmbedding) -> None:
    assert embed_model.model_name == MODEL_ID == "sentence-transformers/all-MiniLM-L6-v2"
    vector = embed_model.get_text_embedding(BIO)
    expected = get_embedder().encode([BIO])[0]
    assert (
        len(vector) == 384 and max(abs(a - b) for a, b in zip(vector, expected, strict=True)) < 1e-6
    )
    assert embed_model.get_query_embedding(BIO) == vector  # the model has no query prefix
    batch = embed_model.get_text_embedding_batch([BIO, GEO, CODE])
    assert len(batch) == 3 and batch[0] == pytest.approx(vector, abs=1e-5)  # padded in a batch
    assert asyncio.run(embed_model.aget_text_embedding(BIO)) == vector


def test_llama_index_records_written_without_llama_index_are_nodes_too(
    store: EngramVectorStore,
) -> None:
    cid = store.client.ingest(BIO, {"topic": "biology"}, namespace=store.namespace)
    (node,) = store.get_nodes()
    assert (node.node_id, node.get_content(), node.metadata) == (cid, BIO, {"topic": "biology"})
    result = store.query(VectorStoreQuery(query_str="energy of the cell", similarity_top_k=1))
    assert result.ids == [cid]  # no embedding: the text is embedded by the canonical model
    assert [n.node_id for n in store.get_nodes([cid])] == [cid]
    store.delete_nodes([cid])
    assert store.get_nodes() == []


def test_llama_index_constructor_modes(tmp_path: Path, miner: ThreadedServer) -> None:
    with pytest.raises(InvalidRequestError, match="not both"):
        EngramVectorStore(EngramClient(path=tmp_path / "a"), path=tmp_path / "b")
    with pytest.raises(InvalidRequestError, match="namespace"):
        EngramVectorStore(path=tmp_path / "a", namespace="bad name!")
    embedded = EngramVectorStore(path=tmp_path / "a", namespace="docs")
    assert embedded.stores_text and embedded.client.target.path == tmp_path / "a"
    assert embedded.class_name() == "EngramVectorStore" and embedded.health()
    embedded.close()
    seed = EngramVectorStore(miner_url=miner.url, timeout=30.0)  # the original SDK's names
    assert seed.client.target.url == miner.url and seed.health()
    seed.close()
    signed = EngramVectorStore.from_documents(
        _docs(), url=miner.url, keypair=ALICE, namespace=f"li-{uuid.uuid4().hex[:12]}"
    )
    result = signed.query(VectorStoreQuery(query_str="capital of France", similarity_top_k=1))
    assert _texts(result.nodes) == [GEO] and (result.nodes or [])[0].ref_doc_id == "geo"
    signed.delete("geo")
    assert signed.client.count(signed.namespace) == 2
    signed.close()


# --- filters: the translation alone ---------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "value", "expected", "negated"),
    [
        ("==", "a", {"k": {"$eq": "a"}}, {"k": {"$ne": "a"}}),
        ("!=", "a", {"k": {"$ne": "a"}}, {"k": {"$eq": "a"}}),
        (">", 1, {"k": {"$gt": 1}}, {"k": {"$lte": 1}}),
        (">=", 1.5, {"k": {"$gte": 1.5}}, {"k": {"$lt": 1.5}}),
        ("<", 2, {"k": {"$lt": 2}}, {"k": {"$gte": 2}}),
        ("<=", 2, {"k": {"$lte": 2}}, {"k": {"$gt": 2}}),
        ("in", ["a", "b"], {"k": {"$in": ["a", "b"]}}, {"k": {"$nin": ["a", "b"]}}),
        ("nin", [1, 2], {"k": {"$nin": [1, 2]}}, {"k": {"$in": [1, 2]}}),
        ("in", "a", {"k": {"$in": ["a"]}}, {"k": {"$nin": ["a"]}}),  # one value: a list of one
    ],
)
def test_llama_index_filter_operators(
    operator: str, value: Any, expected: dict[str, Any], negated: dict[str, Any]
) -> None:
    leaf = MetadataFilter(key="k", value=value, operator=operator)
    assert to_engram_filter(MetadataFilters(filters=[leaf])) == expected
    assert to_engram_filter(MetadataFilters(filters=[leaf], condition="not")) == negated


@pytest.mark.parametrize(
    "operator", ["any", "all", "text_match", "text_match_insensitive", "contains", "is_empty"]
)
def test_llama_index_filter_unsupported_operators_are_refused(operator: str) -> None:
    flt = MetadataFilters(filters=[MetadataFilter(key="k", value="x", operator=operator)])
    with pytest.raises(InvalidFilterError, match=f"{operator!r} on 'k' has no Engram equivalent"):
        to_engram_filter(flt)


def test_llama_index_filter_conditions_and_de_morgan() -> None:
    a = MetadataFilter(key="a", value=1)
    b = MetadataFilter(key="b", value=[2, 3], operator="in")
    c = MetadataFilter(key="c", value=4, operator=">")
    assert to_engram_filter(None) is None
    assert to_engram_filter(MetadataFilters(filters=[])) is None
    assert to_engram_filter(MetadataFilters(filters=[a, b])) == {
        "$and": [{"a": {"$eq": 1}}, {"b": {"$in": [2, 3]}}]
    }
    assert to_engram_filter(MetadataFilters(filters=[a, b], condition=None)) == {
        "$and": [{"a": {"$eq": 1}}, {"b": {"$in": [2, 3]}}]
    }
    assert to_engram_filter(MetadataFilters(filters=[a, b], condition="or")) == {
        "$or": [{"a": {"$eq": 1}}, {"b": {"$in": [2, 3]}}]
    }
    # NOT: none of them matches
    assert to_engram_filter(MetadataFilters(filters=[a, b], condition="not")) == {
        "$and": [{"a": {"$ne": 1}}, {"b": {"$nin": [2, 3]}}]
    }
    nested_and = MetadataFilters(filters=[b, c])
    nested_or = MetadataFilters(filters=[b, c], condition="or")
    nested_not = MetadataFilters(filters=[b, c], condition="not")
    assert to_engram_filter(MetadataFilters(filters=[a, nested_or])) == {
        "$and": [{"a": {"$eq": 1}}, {"$or": [{"b": {"$in": [2, 3]}}, {"c": {"$gt": 4}}]}]
    }
    # not (a and (b or c)) ... each child negated: a ≠ 1 and not (b or c) = b ∉ and c ≤
    assert to_engram_filter(MetadataFilters(filters=[a, nested_or], condition="not")) == {
        "$and": [{"a": {"$ne": 1}}, {"$and": [{"b": {"$nin": [2, 3]}}, {"c": {"$lte": 4}}]}]
    }
    # not (b and c) = b ∉ or c ≤
    assert to_engram_filter(MetadataFilters(filters=[nested_and], condition="not")) == {
        "$or": [{"b": {"$nin": [2, 3]}}, {"c": {"$lte": 4}}]
    }
    # not (not (b or c)...) = b or c: a double negation is the original
    assert to_engram_filter(MetadataFilters(filters=[nested_not], condition="not")) == {
        "$or": [{"b": {"$in": [2, 3]}}, {"c": {"$gt": 4}}]
    }
    assert to_engram_filter(MetadataFilters(filters=[a, nested_not], condition="or")) == {
        "$or": [{"a": {"$eq": 1}}, {"$and": [{"b": {"$nin": [2, 3]}}, {"c": {"$lte": 4}}]}]
    }
    with pytest.raises(InvalidFilterError, match="no filters"):
        to_engram_filter(MetadataFilters(filters=[a, MetadataFilters(filters=[])]))


def test_llama_index_filter_translation_agrees_with_the_store(
    embedded_client: EngramClient,
) -> None:
    """Each translated filter selects what LlamaIndex's own semantics select, on records that
    all have the key (Engram's negations skip records without it)."""
    namespace = f"li-{uuid.uuid4().hex[:12]}"
    rows = [
        {"n": n, "tag": t, "tags": ts}
        for n, t, ts in [(1, "x", ["a"]), (2, "y", ["a", "b"]), (3, "x", ["b"]), (4, "z", ["c"])]
    ]
    embedded_client.batch_ingest(
        [{"embedding": [1.0, float(i)], "metadata": m} for i, m in enumerate(rows)], namespace
    )

    def selected(filters: MetadataFilters) -> list[int]:
        flt = to_engram_filter(filters)
        return sorted(
            r.metadata["n"] for r in embedded_client.list(namespace=namespace, filter=flt)
        )

    two = MetadataFilter(key="n", value=2, operator=">")
    x = MetadataFilter(key="tag", value="x")
    assert selected(MetadataFilters(filters=[two, x])) == [3]
    assert selected(MetadataFilters(filters=[two, x], condition="or")) == [1, 3, 4]
    assert selected(MetadataFilters(filters=[two, x], condition="not")) == [2]
    nested = MetadataFilters(filters=[two, x])
    assert selected(MetadataFilters(filters=[nested], condition="not")) == [1, 2, 4]
    y_or_z = MetadataFilter(key="tag", value=["y", "z"], operator="nin")
    assert selected(MetadataFilters(filters=[y_or_z])) == [1, 3]
    has_a = MetadataFilter(key="tags", value="a")  # a list field: any item
    assert selected(MetadataFilters(filters=[has_a])) == [1, 2]
    assert selected(MetadataFilters(filters=[has_a], condition="not")) == [3, 4]  # no item
    a_or_b = MetadataFilter(key="tags", value=["a", "b"], operator="in")
    assert selected(MetadataFilters(filters=[a_or_b], condition="not")) == [4]


# --- the README -----------------------------------------------------------------------------


def test_llama_index_readme_section_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embed_model: EngramEmbedding
) -> None:
    section = README.split("\n## LlamaIndex\n", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md#llamaindex", "exec"), {})
    assert out.getvalue().splitlines() == [
        "Mitochondria turn glucose and oxygen into ATP, the energy of the cell.",
        "Paris is the capital and largest city of France.",
        "1",
    ]
