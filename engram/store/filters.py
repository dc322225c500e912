"""Metadata filters with the operators Chroma users know, compiled to SQL.

``{"year": {"$gte": 2020}, "lang": "en"}`` (several keys mean AND),
``{"$or": [{"tag": {"$in": ["a", "b"]}}, {"score": {"$lt": 0.5}}]}``.

Operators: ``$eq $ne $gt $gte $lt $lte $in $nin $and $or`` on top-level
metadata keys. As in Chroma, ``$ne`` and ``$nin`` match only records that have
the key. On a list field, ``$eq`` and ``$in`` match when any item does
(``{"tags": "work"}`` finds ``["work", "home"]``), ``$ne`` and ``$nin`` when none does.

``{"$state": "active"}`` (or a list of states) keeps the memories in those
lifecycle states (see :data:`engram.config.MEMORY_STATES`): ``forgotten`` and
``archived`` as set on the node, else ``expired`` past their ``expires_at``,
else ``superseded`` once a record names them in ``supersedes``, else ``active``
(every record that is none of these). Typed values stay typed: ``1`` does not match ``"1"`` or ``true``. A
string also matches the number it spells in JSON (``"2024"`` matches ``2024``,
``"0.5"`` matches ``0.5``; ``"02024"`` and ``"1e3"`` match only strings): the
original network's clients send every filter value as a string.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any

from engram.config import MEMORY_STATES
from engram.errors import InvalidFilterError

_COMPARE = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_RANGE = {"$gt", "$gte", "$lt", "$lte"}
_OPERATORS = ", ".join([*_COMPARE, "$in", "$nin"])


def _key(key: Any) -> str:
    if not isinstance(key, str) or not key or key.startswith("$"):
        raise InvalidFilterError(
            f"filter key {key!r} must be a metadata field name (not empty, no leading $)"
        )
    _scalar(key, "filter key")
    return key


_INT64 = 2**63


def _scalar(value: Any, where: str) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
        raise InvalidFilterError(f"{where}: {value} does not fit a 64-bit integer")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidFilterError(f"{where}: the string is not valid Unicode") from exc
    if isinstance(value, bool) or value is None or isinstance(value, str | int | float):
        return value
    raise InvalidFilterError(f"{where}: {value!r} must be a string, number, boolean or null")


def spelled_number(text: str) -> int | float | None:
    """The number whose JSON spelling is exactly ``text`` (``"2024"`` → 2024), else ``None``."""
    try:
        number = json.loads(text)
    except ValueError:
        return None
    if isinstance(number, bool) or not isinstance(number, int | float):
        return None
    if not math.isfinite(number) or json.dumps(number) != text:
        return None
    return number


def _equals(value: Any) -> tuple[str, list[Any]]:
    """A test on one ``record_fields`` row (its ``kind`` and ``value``) for equality."""
    if value is None:
        return "kind = 'null'", []
    if isinstance(value, bool):
        return ("kind = 'true'" if value else "kind = 'false'"), []
    if isinstance(value, str):
        number = spelled_number(value)
        if number is not None:
            sql = "((kind = 'text' AND value = ?) OR (kind IN ('integer', 'real') AND value = ?))"
            return sql, [value, number]
        return "(kind = 'text' AND value = ?)", [value]
    return "(kind IN ('integer', 'real') AND value = ?)", [value]


def _one_of(values: list[Any]) -> tuple[str, list[Any]]:
    """Equality with any of ``values``, as ``value IN (...)`` per type so the index serves it."""
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    texts = [v for v in values if isinstance(v, str)]
    numbers += [n for n in map(spelled_number, texts) if n is not None]
    tests = [_equals(v) for v in values if isinstance(v, bool) or v is None]
    for kinds, group in (("'integer', 'real'", numbers), ("'text'", texts)):
        if group:
            marks = ", ".join("?" * len(group))
            tests.append((f"(kind IN ({kinds}) AND value IN ({marks}))", group))
    sql = "(" + " OR ".join(t[0] for t in tests) + ")"
    return sql, [x for t in tests for x in t[1]]


def _condition(key: str, op: str, value: Any, shown: str) -> tuple[str, list[Any]]:
    """A test on one ``record_fields`` row for a positive operator (not ``$ne``/``$nin``);
    errors name the operator as the user wrote it (``shown``)."""
    where = f"{key} {shown}"
    if op == "$in":
        if not isinstance(value, list) or not value:
            raise InvalidFilterError(f"{where} needs a non-empty list")
        return _one_of([_scalar(v, where) for v in value])
    if op not in _COMPARE:
        raise InvalidFilterError(f"unknown operator {shown!r} on {key!r}; use one of {_OPERATORS}")
    value = _scalar(value, where)
    if op in _RANGE:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidFilterError(f"{where} needs a number, got {value!r}")
        return f"(kind IN ('integer', 'real') AND value {_COMPARE[op]} ?)", [value]
    return _equals(value)


_NEGATED = {"$ne": "$eq", "$nin": "$in"}


def _field(namespace: str, key: str, condition: Any) -> tuple[str, list[Any]]:
    """Ids whose field ``key`` passes ``condition`` (a value, or ``{op: value, ...}``).

    ``$ne``/``$nin`` keep the records that have the key and no value (no list item) equal
    to the operand, so they are the exact opposites of ``$eq``/``$in`` on list fields too.
    """
    key = _key(key)
    if not isinstance(condition, Mapping):
        tests = [("$eq", condition)]
    elif not condition:
        raise InvalidFilterError(f"filter on {key!r} is empty")
    else:
        tests = list(condition.items())
    has_key = "SELECT id FROM record_fields WHERE namespace = ? AND key = ?"
    parts = []
    for op, value in tests:
        sql, params = _condition(key, _NEGATED.get(op, op), value, op)
        if op in _NEGATED:
            parts.append((f"{has_key} EXCEPT {has_key} AND {sql}", [namespace, key] * 2 + params))
        else:
            parts.append((f"{has_key} AND {sql}", [namespace, key, *params]))
    return _combine(parts, "INTERSECT")


def _marked(state: str) -> str:
    return (
        "SELECT r.id FROM records r JOIN memory_states m "
        "ON m.namespace = r.namespace AND m.cid = r.cid "
        f"WHERE r.namespace = ? AND m.state = '{state}'"
    )


_EXPIRED = (
    "SELECT id FROM record_fields WHERE namespace = ? AND key = 'expires_at' "
    "AND kind IN ('integer', 'real') AND value <= ?"
)
_SUPERSEDED = (
    "SELECT id FROM records WHERE namespace = ? AND cid IN (SELECT value FROM record_fields "
    "WHERE namespace = ? AND key = 'supersedes' AND kind = 'text')"
)


def _in_state(namespace: str, state: str, now: float) -> tuple[str, list[Any]]:
    """Ids of the records in one lifecycle state; each state excludes those before it in
    :data:`MEMORY_STATES`' order of precedence (forgotten, archived, expired, superseded)."""
    tests: dict[str, tuple[str, list[Any]]] = {
        "forgotten": (_marked("forgotten"), [namespace]),
        "archived": (_marked("archived"), [namespace]),
        "expired": (_EXPIRED, [namespace, now]),
        "superseded": (_SUPERSEDED, [namespace, namespace]),
    }
    order = ["forgotten", "archived", "expired", "superseded"]
    if state == "active":
        base: tuple[str, list[Any]] = ("SELECT id FROM records WHERE namespace = ?", [namespace])
        before = order
    else:
        base, before = tests[state], order[: order.index(state)]
    sql, params = base[0], list(base[1])
    for other in before:
        sql += f" EXCEPT {tests[other][0]}"
        params += tests[other][1]
    return sql, params


def _states(namespace: str, value: Any) -> tuple[str, list[Any]]:
    states = [value] if isinstance(value, str) else value
    if not isinstance(states, list) or not states or not all(s in MEMORY_STATES for s in states):
        raise InvalidFilterError(
            f"$state needs one of {', '.join(MEMORY_STATES)} or a non-empty list of them"
        )
    now = time.time()
    parts = [_in_state(namespace, s, now) for s in dict.fromkeys(states)]
    return _combine(parts, "UNION")


def _combine(parts: list[tuple[str, list[Any]]], word: str) -> tuple[str, list[Any]]:
    if len(parts) == 1:
        return parts[0]
    sql = f" {word} ".join(f"SELECT id FROM ({p[0]})" for p in parts)
    return sql, [x for p in parts for x in p[1]]


def compile_filter(
    flt: Mapping[str, Any], namespace: str, _depth: int = 0
) -> tuple[str, list[Any]]:
    """A SELECT of the matching record ids in ``namespace``, with its parameters.

    Each field test is an indexed lookup in ``record_fields`` (one row per
    top-level metadata key); ``$and`` and ``$or`` become INTERSECT and UNION.
    """
    if not isinstance(flt, Mapping) or not flt:
        raise InvalidFilterError("filter must be a non-empty JSON object")
    if _depth > 16:
        raise InvalidFilterError("filter is nested too deeply")
    parts = []
    for key, value in flt.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise InvalidFilterError(f"{key} needs a non-empty list of filters")
            children = [compile_filter(sub, namespace, _depth + 1) for sub in value]
            parts.append(_combine(children, "INTERSECT" if key == "$and" else "UNION"))
        elif key == "$state":
            parts.append(_states(namespace, value))
        elif isinstance(key, str) and key.startswith("$"):
            raise InvalidFilterError(f"unknown top-level operator {key!r}; use $and, $or or $state")
        else:
            parts.append(_field(namespace, key, value))
    return _combine(parts, "INTERSECT")
