"""Metadata filters with the operators Chroma users know, compiled to SQL.

``{"year": {"$gte": 2020}, "lang": "en"}`` (several keys mean AND),
``{"$or": [{"tag": {"$in": ["a", "b"]}}, {"score": {"$lt": 0.5}}]}``.

Operators: ``$eq $ne $gt $gte $lt $lte $in $nin $and $or``. As in Chroma,
``$ne`` and ``$nin`` match only records that have the key. Values keep their
JSON type: ``1`` does not match ``"1"`` or ``true``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engram.errors import InvalidFilterError

_COMPARE = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_RANGE = {"$gt", "$gte", "$lt", "$lte"}
_OPERATORS = ", ".join([*_COMPARE, "$in", "$nin"])


def _path(key: str) -> str:
    if (
        not isinstance(key, str)
        or not key
        or key.startswith("$")
        or '"' in key
        or not key.isprintable()
    ):
        raise InvalidFilterError(
            f"filter key {key!r} must be a metadata field name (no leading $, no double quote)"
        )
    return '$."' + key + '"'


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


def _compare(key: str, op: str, value: Any) -> tuple[str, list[Any]]:
    path = _path(key)
    value = _scalar(value, f"{key} {op}")
    if op in _RANGE and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise InvalidFilterError(f"{key} {op} needs a number, got {value!r}")
    sql_op = _COMPARE[op]
    if value is None:
        test = "IS" if op == "$eq" else "IS NOT"
        if op not in ("$eq", "$ne"):
            raise InvalidFilterError(f"{key} {op} cannot compare with null")
        return f"(json_type(metadata, ?) IS NOT NULL AND json_type(metadata, ?) {test} 'null')", [
            path,
            path,
        ]
    if isinstance(value, bool):
        json_type = "true" if value else "false"
        test = "=" if op == "$eq" else "!="
        return f"json_type(metadata, ?) {test} '{json_type}'", [path]
    if isinstance(value, str):
        return f"(json_type(metadata, ?) = 'text' AND json_extract(metadata, ?) {sql_op} ?)", [
            path,
            path,
            value,
        ]
    return (
        f"(json_type(metadata, ?) IN ('integer', 'real') AND json_extract(metadata, ?) {sql_op} ?)",
        [path, path, value],
    )


def _membership(key: str, op: str, values: Any) -> tuple[str, list[Any]]:
    if not isinstance(values, list) or not values:
        raise InvalidFilterError(f"{key} {op} needs a non-empty list")
    parts = [_compare(key, "$eq", v) for v in values]
    sql = "(" + " OR ".join(p[0] for p in parts) + ")"
    params = [x for p in parts for x in p[1]]
    if op == "$nin":
        sql = f"(json_type(metadata, ?) IS NOT NULL AND NOT {sql})"
        params = [_path(key), *params]
    return sql, params


def _field(key: str, condition: Any) -> tuple[str, list[Any]]:
    if not isinstance(condition, Mapping):
        return _compare(key, "$eq", condition)
    if not condition:
        raise InvalidFilterError(f"filter on {key!r} is empty")
    parts = []
    for op, value in condition.items():
        if op in _COMPARE:
            parts.append(_compare(key, op, value))
        elif op in ("$in", "$nin"):
            parts.append(_membership(key, op, value))
        else:
            raise InvalidFilterError(f"unknown operator {op!r} on {key!r}; use one of {_OPERATORS}")
    return _join(parts, "AND")


def _join(parts: list[tuple[str, list[Any]]], word: str) -> tuple[str, list[Any]]:
    if len(parts) == 1:
        return parts[0]
    return "(" + f" {word} ".join(p[0] for p in parts) + ")", [x for p in parts for x in p[1]]


def compile_filter(flt: Mapping[str, Any], _depth: int = 0) -> tuple[str, list[Any]]:
    """SQL condition over the ``metadata`` JSON column and its parameters."""
    if not isinstance(flt, Mapping) or not flt:
        raise InvalidFilterError("filter must be a non-empty JSON object")
    if _depth > 16:
        raise InvalidFilterError("filter is nested too deeply")
    parts = []
    for key, value in flt.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise InvalidFilterError(f"{key} needs a non-empty list of filters")
            parts.append(_join([compile_filter(sub, _depth + 1) for sub in value], key[1:].upper()))
        elif isinstance(key, str) and key.startswith("$"):
            raise InvalidFilterError(f"unknown top-level operator {key!r}; use $and or $or")
        else:
            parts.append(_field(key, value))
    return _join(parts, "AND")
