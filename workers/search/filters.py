"""Structured metadata filters for search: (column, operator, value) triples checked against a whitelist of
columns and operators and rendered to SQL from typed literals, so user text is never pasted into a query."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from schemas.catalog import sql_string

OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "in")
_TEXT_PATTERN = re.compile(r"^\s*(\w+)\s*(<=|>=|!=|=|<|>|\s+in\s+)\s*(.*?)\s*$", re.IGNORECASE)


class FilterError(ValueError):
    """A filter names an unknown column or operator, or a value of the wrong type."""


@dataclass(frozen=True)
class Filter:
    """One condition on a metadata column; `value` is a list for `in`."""

    column: str
    op: str
    value: str | float | list[str] | list[float]


def parse_filter(text: str) -> Filter:
    """'split=val_1', 'duration_s>=30', 'dataset in anet,msrvtt' -> Filter (values stay strings until typed)."""
    match = _TEXT_PATTERN.match(text)
    if not match:
        raise FilterError(f"cannot read filter {text!r}: expected COLUMN OP VALUE with OP one of {OPERATORS}")
    column, op, value = match.group(1), match.group(2).strip().lower(), match.group(3)
    if op == "in":
        return Filter(column, op, [part.strip() for part in value.split(",") if part.strip()])
    return Filter(column, op, value)


def _literal(column: str, kind: pa.DataType, value: object) -> str:
    if pa.types.is_string(kind):
        if not isinstance(value, str):
            raise FilterError(f"filter on {column!r} needs a string, got {value!r}")
        return sql_string(value)
    if pa.types.is_floating(kind) or pa.types.is_integer(kind):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise FilterError(f"filter on {column!r} needs a number, got {value!r}") from None
        if not math.isfinite(number):
            raise FilterError(f"filter on {column!r} needs a finite number, got {value!r}")
        return repr(number)
    if pa.types.is_timestamp(kind):
        try:
            moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
            moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        except (ValueError, OverflowError):  # OverflowError: a zone offset that moves it out of years 1-9999
            raise FilterError(f"filter on {column!r} needs an ISO date or time, got {value!r}") from None
        return f"TIMESTAMP '{moment:%Y-%m-%d %H:%M:%S.%f}'"
    raise FilterError(f"column {column!r} cannot be filtered on")


def filters_sql(filters: list[Filter] | tuple[Filter, ...], schema: pa.Schema, columns: tuple[str, ...]) -> str | None:
    """The SQL condition of all filters (AND), or None; raises FilterError naming the bad column, op or value."""
    parts = []
    for item in filters:
        if item.column not in columns:
            raise FilterError(f"unknown filter column {item.column!r}; filterable columns: {', '.join(columns)}")
        if item.op not in OPERATORS:
            raise FilterError(f"unknown filter operator {item.op!r}; operators: {', '.join(OPERATORS)}")
        kind = schema.field(item.column).type
        if item.op == "in":
            values = item.value if isinstance(item.value, list) else [item.value]
            if not values:
                raise FilterError(f"filter {item.column!r} in (...) needs at least one value")
            parts.append(f"{item.column} IN ({', '.join(_literal(item.column, kind, v) for v in values)})")
        else:
            if isinstance(item.value, list):
                raise FilterError(f"operator {item.op!r} on {item.column!r} takes one value, got a list")
            parts.append(f"{item.column} {item.op} {_literal(item.column, kind, item.value)}")
    return " AND ".join(parts) or None
