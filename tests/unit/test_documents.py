"""Files to passages: PDF pages, text and Markdown, and every way a file can be refused."""

from __future__ import annotations

import hashlib

import pytest

from engram.documents import file_kind, markdown_sections, split_document, split_text
from engram.errors import InvalidRequestError, PayloadTooLargeError
from tests.pdf import make_pdf


def test_documents_split_text_packs_paragraphs_up_to_the_limit() -> None:
    text = "First para.\n\nSecond para.\n\n\n   Third   one,\nbroken  across lines."
    assert split_text(text, 40) == [
        "First para.\n\nSecond para.",
        "Third one, broken across lines.",
    ]
    assert split_text(text, 1000) == [
        "First para.\n\nSecond para.\n\nThird one, broken across lines."
    ]
    assert split_text("  \n\n \n") == []


def test_documents_split_text_cuts_sentences_then_words_then_anything() -> None:
    sentences = "One two three. Four five six. Seven eight nine."
    assert split_text(sentences, 30) == ["One two three. Four five six.", "Seven eight nine."]
    assert split_text("alpha beta gamma delta", 11) == ["alpha beta", "gamma delta"]
    assert split_text("x" * 25 + " end", 10) == ["x" * 10, "x" * 10, "xxxxx end"]
    long_text = " ".join(f"word{i}." if i % 7 == 0 else f"word{i}" for i in range(2000))
    chunks = split_text(long_text, 800)
    assert all(len(c) <= 800 for c in chunks)
    assert " ".join(chunks).split() == long_text.split()  # nothing lost, nothing added


def test_documents_pdf_chunks_carry_page_numbers_and_the_file_hash() -> None:
    pages = ["Comets have tails.\nThey orbit the sun.", "", "Tide pools hold anemones."]
    data = make_pdf(pages)
    doc = split_document(data, "space.pdf", "application/pdf", {"shelf": 3})
    assert doc.kind == "pdf" and doc.pages == 3 and doc.filename == "space.pdf"
    assert doc.content_cid == hashlib.sha256(data).hexdigest()
    assert [c.text for c in doc.chunks] == [
        "Comets have tails. They orbit the sun.",
        "Tide pools hold anemones.",
    ]
    assert [c.metadata for c in doc.chunks] == [
        {
            "shelf": 3,
            "source": "space.pdf",
            "content_cid": doc.content_cid,
            "chunk": i,
            "chunks": 2,
            "page": page,
        }
        for i, page in ((0, 1), (1, 3))
    ]


def test_documents_pdf_chunks_never_cross_a_page() -> None:
    data = make_pdf(["a b c", "d e f"])
    doc = split_document(data, "two.pdf", max_chars=1000)
    assert [(c.text, c.metadata["page"]) for c in doc.chunks] == [("a b c", 1), ("d e f", 2)]


def test_documents_text_and_markdown_files() -> None:
    doc = split_document("\ufeffPlain words.\n\nMore words.".encode(), "notes.txt")
    assert doc.kind == "text" and doc.pages is None
    assert [c.text for c in doc.chunks] == ["Plain words.\n\nMore words."]
    assert "page" not in doc.chunks[0].metadata and "section" not in doc.chunks[0].metadata

    markdown = (
        "Intro line.\n\n# Setup\n\nInstall.\n\n```\n# not a heading\n```\n\n## Use ##\n\nRun."
    )
    doc = split_document(markdown.encode(), "guide.md", max_chars=1000)
    assert doc.kind == "markdown"
    assert [c.metadata.get("section") for c in doc.chunks] == [None, "Setup", "Use"]
    assert "# not a heading" in doc.chunks[1].text
    assert markdown_sections("# Only\n") == [("Only", "# Only")]


def test_documents_kind_comes_from_the_bytes_first() -> None:
    pdf = make_pdf(["x"])
    assert file_kind(pdf, "renamed.txt") == "pdf"
    assert file_kind(b"hi", "notes", "text/markdown; charset=utf-8") == "markdown"
    assert file_kind(b"hi", "NOTES.TXT") == "text"


@pytest.mark.parametrize(
    ("data", "name", "needle"),
    [
        (b"", "empty.txt", "empty"),
        (b"\n \n", "blank.md", "no text"),
        (b"\x89PNG\r\n\x1a\n", "image.png", "upload a PDF"),
        (b"words", "fake.pdf", "not a PDF"),
        (b"%PDF-1.7\ngarbage", "broken.pdf", "readable PDF"),
        (make_pdf([""]), "scan.pdf", "scanned"),
        ("caf\u00e9".encode("latin-1"), "latin1.txt", "not UTF-8"),
        (b"a\x00b", "binary.txt", "NUL"),
    ],
)
def test_documents_refuse_what_they_cannot_read(data: bytes, name: str, needle: str) -> None:
    with pytest.raises(InvalidRequestError, match=needle):
        split_document(data, name)


def test_documents_refuse_metadata_that_hides_the_files_own_keys() -> None:
    with pytest.raises(InvalidRequestError, match="'content_cid'"):
        split_document(b"text", "a.txt", metadata={"content_cid": "mine"})


def test_documents_refuse_too_many_chunks() -> None:
    text = "\n\n".join(f"paragraph {i} " + "x" * 50 for i in range(20))
    with pytest.raises(PayloadTooLargeError, match="20 chunks, the limit is 5"):
        split_document(text.encode(), "long.txt", max_chars=80, max_chunks=5)
