"""Hybrid search's pure parts: the keyword query and the fusion of ranked channels."""

from __future__ import annotations

import sqlite3

import pytest

from engram.errors import InvalidRequestError
from engram.store.fusion import (
    FUSIONS,
    RRF_K,
    STOP_WORDS,
    Fused,
    fuse,
    keyword_query,
    with_neighbours,
)

# --- fuse ---------------------------------------------------------------------------------


def rows(fused: list[Fused]) -> list[int]:
    return [f.row for f in fused]


@pytest.mark.parametrize("method", FUSIONS)
def test_one_channel_keeps_its_order(method: str) -> None:
    hits = [(7, 0.9), (3, 0.5), (5, 0.1)]
    assert rows(fuse({"vector": hits}, {"vector": 1.0}, method)) == [7, 3, 5]


@pytest.mark.parametrize("method", FUSIONS)
def test_a_hit_in_both_channels_wins(method: str) -> None:
    channels = {
        "vector": [(1, 0.9), (2, 0.85), (4, 0.1)],
        "keyword": [(3, 9.0), (2, 8.5), (5, 1.0)],
    }
    fused = fuse(channels, {"vector": 0.5, "keyword": 0.5}, method)
    assert fused[0].row == 2
    assert fused[0].channels == {"vector": (2, 0.85), "keyword": (2, 8.5)}
    assert set(rows(fused)) == {1, 2, 3, 4, 5}


def test_relative_keeps_a_far_lead_that_rrf_flattens() -> None:
    # Row 1 is far ahead in the vector channel and absent from keyword; row 2 is
    # barely second in both. Relative fusion keeps 1's lead, rrf prefers 2.
    channels = {
        "vector": [(1, 0.95), (2, 0.30), (3, 0.29)],
        "keyword": [(4, 10.0), (2, 1.1), (5, 1.0)],
    }
    weights = {"vector": 0.5, "keyword": 0.5}
    relative = fuse(channels, weights, "relative")
    rrf = fuse(channels, weights, "rrf")
    assert rows(relative)[:2] in ([1, 4], [4, 1])
    assert rows(rrf)[0] == 2
    assert rrf[0].score == pytest.approx(0.5 / (RRF_K + 2) * 2)


def test_relative_scores_are_weighted_min_max() -> None:
    channels = {"vector": [(1, 0.8), (2, 0.6), (3, 0.4)], "keyword": [(3, 4.0), (1, 2.0)]}
    fused = {f.row: f.score for f in fuse(channels, {"vector": 0.4, "keyword": 0.6})}
    assert fused[1] == pytest.approx(0.4 * 1.0 + 0.6 * 0.0)
    assert fused[2] == pytest.approx(0.4 * 0.5)
    assert fused[3] == pytest.approx(0.4 * 0.0 + 0.6 * 1.0)


def test_weights_decide_between_channels() -> None:
    channels = {"vector": [(1, 0.9), (2, 0.1)], "keyword": [(2, 5.0), (1, 1.0)]}
    assert fuse(channels, {"vector": 0.7, "keyword": 0.3})[0].row == 1
    assert fuse(channels, {"vector": 0.3, "keyword": 0.7})[0].row == 2
    assert fuse(channels, {"vector": 0.3, "keyword": 0.7}, "rrf")[0].row == 2


@pytest.mark.parametrize("method", FUSIONS)
def test_ties_are_broken_by_row_id(method: str) -> None:
    channels = {"vector": [(9, 0.5), (4, 0.5), (6, 0.5)]}
    fused = fuse(channels, {}, method)
    if method == "rrf":  # ranks differ, so rrf keeps the channel's order
        assert rows(fused) == [9, 4, 6]
    else:  # equal scores normalise to equal fused scores
        assert rows(fused) == [4, 6, 9]
    mirrored = {"vector": [(1, 0.9)], "keyword": [(2, 3.0)]}
    assert rows(fuse(mirrored, {"vector": 0.5, "keyword": 0.5}, method)) == [1, 2]


@pytest.mark.parametrize("method", FUSIONS)
def test_empty_channels_are_ignored(method: str) -> None:
    assert fuse({}, {}, method) == []
    assert fuse({"vector": [], "keyword": []}, {}, method) == []
    fused = fuse({"vector": [], "keyword": [(3, 2.0), (1, 1.0)]}, {}, method)
    assert rows(fused) == [3, 1]
    assert all(set(f.channels) == {"keyword"} for f in fused)


def test_a_single_hit_or_equal_scores_do_not_divide_by_zero() -> None:
    for method in ("relative", "dbsf"):
        (only,) = fuse({"keyword": [(5, 2.5)]}, {"keyword": 0.6}, method)
        assert only.score == pytest.approx(0.6)


def test_dbsf_scales_by_spread() -> None:
    hits = [(1, 1.0), (2, 0.0), (3, 0.0), (4, 0.0)]
    fused = {f.row: f.score for f in fuse({"vector": hits}, {"vector": 1.0}, "dbsf")}
    # mean 0.25, sd 0.433: scaled between 0.25 -/+ 1.299
    assert fused[1] == pytest.approx((1.0 + 1.049) / 2.598, abs=1e-3)
    assert fused[2] == pytest.approx(1.049 / 2.598, abs=1e-3)


def test_unknown_fusion_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="fusion must be one of"):
        fuse({"vector": [(1, 1.0)]}, {}, "max")


# --- keyword_query ------------------------------------------------------------------------


def test_drops_stop_words_and_keeps_the_rest_in_order() -> None:
    q = keyword_query("What did Caroline paint at the lake?")
    assert q == '"caroline" OR "paint" OR "lake"'


def test_stop_words_can_be_kept() -> None:
    q = keyword_query("What did Caroline paint?", stop_words=False)
    assert q == '"what" OR "did" OR "caroline" OR "paint"'


def test_a_query_of_only_stop_words_still_searches() -> None:
    assert keyword_query("what did she do") == '"what" OR "did" OR "she" OR "do"'
    assert keyword_query("Who?") == '"who"'


def test_contractions_split_like_the_index() -> None:
    # "didn't" is "didn" + "t" for the FTS5 tokenizer too: both are stop words.
    assert keyword_query("Why didn't Mel go?") == '"mel" OR "go"'
    assert {"didn", "t", "s", "what", "the"} <= STOP_WORDS


def test_words_are_lower_cased_and_deduplicated() -> None:
    assert keyword_query("Lake LAKE lake") == '"lake"'


def test_no_words_means_no_query() -> None:
    assert keyword_query("") is None
    assert keyword_query('  "*" -- :: ()  ') is None


@pytest.fixture()
def fts() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(text, tokenize='porter unicode61')")
    conn.executemany(
        "INSERT INTO t(rowid, text) VALUES (?, ?)",
        [
            (1, "Caroline: I went to a painting class"),
            (2, 'Mel: "NEAR" the lake, col:umn -minus AND OR NOT *star*'),
            (3, "Mel: the kids loved it"),
        ],
    )
    return conn


@pytest.mark.parametrize(
    "text",
    [
        'say "hi',
        "star*",
        "*",
        "NEAR(a b)",
        "a NEAR b",
        "-minus",
        "col:umn",
        "AND OR NOT",
        "^start",
        "(unbalanced",
        "{a b}: c",
        'he said ""quoted""',
        "+plus",
        "what?!",
    ],
)
def test_user_text_is_never_fts_syntax(fts: sqlite3.Connection, text: str) -> None:
    q = keyword_query(text)
    if q is not None:
        fts.execute("SELECT rowid FROM t WHERE t MATCH ?", (q,)).fetchall()


def test_operators_are_matched_as_words(fts: sqlite3.Connection) -> None:
    q = keyword_query("near AND umn")
    assert q == '"near" OR "and" OR "umn"' or q == '"near" OR "umn"'
    found = {r[0] for r in fts.execute("SELECT rowid FROM t WHERE t MATCH ?", (q,))}
    assert found == {2}


def test_a_stem_finds_other_inflections(fts: sqlite3.Connection) -> None:
    """The index and the query are stemmed alike (the store's Porter tokenizer)."""
    for text in ("Who paints?", "painted", "painters' classes"):
        q = keyword_query(text)
        assert {r[0] for r in fts.execute("SELECT rowid FROM t WHERE t MATCH ?", (q,))} == {1}


# --- neighbours -----------------------------------------------------------------------------


def test_neighbours_lift_a_hit_written_next_to_a_strong_one() -> None:
    fused = [Fused(10, 1.0), Fused(50, 0.6), Fused(11, 0.5)]
    lifted = with_neighbours(fused, 0.3)
    assert [f.row for f in lifted] == [10, 11, 50]  # 11 sits right after 10: 0.5 + 0.3
    assert lifted[0].score == pytest.approx(1.0 + 0.3 * 0.5)
    assert lifted[1].score == pytest.approx(0.5 + 0.3 * 1.0)
    assert lifted[2].score == pytest.approx(0.6)  # no neighbour among the hits


def test_neighbours_take_the_better_side_and_keep_channels() -> None:
    fused = [Fused(5, 0.2, {"keyword": (3, 1.5)}), Fused(4, 0.9), Fused(6, 0.4)]
    lifted = {f.row: f for f in with_neighbours(fused, 0.5)}
    assert lifted[5].score == pytest.approx(0.2 + 0.5 * 0.9)
    assert lifted[5].channels == {"keyword": (3, 1.5)}


def test_neighbours_of_weight_zero_change_nothing() -> None:
    fused = [Fused(1, 0.9), Fused(2, 0.5), Fused(7, 0.4)]
    assert with_neighbours(fused, 0.0) == fused
