"""Files to records: text extracted from a PDF, plain-text or Markdown file, split into chunks.

Each chunk becomes one record, so a search finds the passage rather than the
whole file. Every chunk carries where it came from: the file's SHA-256
(``content_cid``, the same for every chunk of one file, so a filter finds
them all), its position, and its page (PDF) or section (Markdown). Chunks
never cross a page, so a page number is exact.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from engram.errors import InvalidRequestError, PayloadTooLargeError, UnavailableError

CHUNK_CHARS = 800  # about 200 tokens: inside all-MiniLM-L6-v2's 256-token window
DOCUMENT_KEYS = frozenset({"source", "content_cid", "chunk", "chunks", "page", "section"})
TEXT_SUFFIXES = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown"}
TEXT_TYPES = {"text/plain": "text", "text/markdown": "markdown", "text/x-markdown": "markdown"}
_PARAGRAPH = re.compile(r"\n\s*\n")
_BOUNDARIES = (re.compile(r"(?<=[.!?])\s+"), re.compile(r"\s+"))  # sentences, then words
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$")


@dataclass(frozen=True)
class Chunk:
    """One passage of a document and the metadata that says where it came from."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Document:
    """A file split into chunks; ``content_cid`` is the SHA-256 of the file's bytes."""

    filename: str
    kind: str  # "pdf", "text" or "markdown"
    content_cid: str
    chunks: list[Chunk]
    pages: int | None = None


def split_text(text: str, max_chars: int = CHUNK_CHARS) -> list[str]:
    """Pack paragraphs into chunks of at most ``max_chars``.

    A paragraph that is too long is cut between sentences, a sentence between
    words, and a word (rare: a URL, a hash) wherever it must. Whitespace
    inside a paragraph is collapsed, as PDF extraction breaks lines anywhere.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    pieces = [
        piece
        for paragraph in _PARAGRAPH.split(text)
        for piece in _fit(" ".join(paragraph.split()), max_chars)
    ]
    return list(_pack(pieces, "\n\n", max_chars))


def _fit(text: str, max_chars: int, level: int = 0) -> list[str]:
    """``text`` in pieces of at most ``max_chars``, cut at the gentlest boundary that works."""
    if len(text) <= max_chars:
        return [text] if text else []
    if level == len(_BOUNDARIES):
        return [text[i : i + max_chars] for i in range(0, len(text), max_chars)]
    units = [
        piece
        for unit in _BOUNDARIES[level].split(text)
        for piece in _fit(unit, max_chars, level + 1)
    ]
    return list(_pack(units, " ", max_chars))


def _pack(units: list[str], separator: str, max_chars: int) -> Iterator[str]:
    """Join consecutive ``units`` while they fit in ``max_chars``."""
    current = ""
    for unit in units:
        if current and len(current) + len(separator) + len(unit) <= max_chars:
            current += separator + unit
        else:
            if current:
                yield current
            current = unit
    if current:
        yield current


def markdown_sections(text: str) -> list[tuple[str | None, str]]:
    """``(heading, body)`` per section; the body keeps its heading line, so it is searchable."""
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        heading = None if fenced else _HEADING.match(line)
        if heading:
            sections.append((heading.group(1), []))
        sections[-1][1].append(line)
    return [(title, "\n".join(lines)) for title, lines in sections if "".join(lines).strip()]


def pdf_pages(data: bytes) -> list[str]:
    """The text of each page of a PDF; a file pypdf cannot read is an InvalidRequestError."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import FileNotDecryptedError
    except ImportError as exc:
        raise UnavailableError(
            "reading PDFs needs pypdf: pip install 'engram-subnet[server]'"
        ) from exc
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            reader.decrypt("")  # many PDFs are "encrypted" with an empty password
        return [page.extract_text() or "" for page in reader.pages]
    except FileNotDecryptedError as exc:
        raise InvalidRequestError(
            "the PDF is protected by a password; upload a copy without one"
        ) from exc
    except Exception as exc:  # pypdf raises many types (KeyError, ValueError, ...) on broken files
        raise InvalidRequestError(f"the file is not a readable PDF: {exc}") from exc


def file_kind(data: bytes, filename: str, content_type: str | None = None) -> str:
    """``pdf``, ``text`` or ``markdown``, from the bytes first and the name second."""
    suffix = PurePosixPath(filename).suffix.lower()
    if data.startswith(b"%PDF-"):
        return "pdf"
    if suffix == ".pdf" or (content_type or "").startswith("application/pdf"):
        raise InvalidRequestError(f"{filename} is not a PDF: it does not start with %PDF-")
    kind = TEXT_SUFFIXES.get(suffix) or TEXT_TYPES.get((content_type or "").split(";")[0].strip())
    if kind is None:
        raise InvalidRequestError(
            f"cannot read {filename}: upload a PDF (.pdf), plain text (.txt) or Markdown (.md)"
        )
    return kind


def _decode(data: bytes, filename: str) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"{filename} is not UTF-8 text (byte {exc.start} is not valid UTF-8)"
        ) from exc
    if "\x00" in text:
        raise InvalidRequestError(f"{filename} contains NUL bytes: it looks binary, not text")
    return text


def split_document(
    data: bytes,
    filename: str,
    content_type: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    max_chars: int = CHUNK_CHARS,
    max_chunks: int | None = None,
) -> Document:
    """Read a PDF, text or Markdown file and cut it into chunks ready to ingest.

    ``metadata`` is copied onto every chunk next to the document's own keys
    (``source``, ``content_cid``, ``chunk``, ``chunks``, and ``page`` or
    ``section``), which it may not override.
    """
    if not data:
        raise InvalidRequestError(f"{filename} is empty")
    metadata = dict(metadata or {})
    clash = sorted(DOCUMENT_KEYS.intersection(metadata))
    if clash:
        raise InvalidRequestError(
            f"metadata key {clash[0]!r} is set from the file; choose another name"
        )
    kind = file_kind(data, filename, content_type)
    content_cid = hashlib.sha256(data).hexdigest()
    parts: list[tuple[dict[str, Any], str]] = []  # (where, text)
    pages: int | None = None
    if kind == "pdf":
        texts = pdf_pages(data)
        pages = len(texts)
        parts = [({"page": n}, t) for n, t in enumerate(texts, start=1)]
    elif kind == "markdown":
        parts = [
            ({"section": title} if title else {}, body)
            for title, body in markdown_sections(_decode(data, filename))
        ]
    else:
        parts = [({}, _decode(data, filename))]
    pieces = [(where, piece) for where, text in parts for piece in split_text(text, max_chars)]
    if not pieces:
        hint = " (a scanned PDF has images, not text)" if kind == "pdf" else ""
        raise InvalidRequestError(f"{filename} has no text to store{hint}")
    if max_chunks is not None and len(pieces) > max_chunks:
        raise PayloadTooLargeError(
            f"{filename} gives {len(pieces)} chunks, the limit is {max_chunks}; split the file"
        )
    chunks = [
        Chunk(
            piece,
            {
                **metadata,
                "source": filename,
                "content_cid": content_cid,
                "chunk": i,
                "chunks": len(pieces),
                **where,
            },
        )
        for i, (where, piece) in enumerate(pieces)
    ]
    return Document(filename, kind, content_cid, chunks, pages)


__all__ = ["Chunk", "Document", "file_kind", "markdown_sections", "split_document", "split_text"]
