"""Warehouse values to JSON values, the same way on every database, so hashes are stable across runs.

Numbers keep every digit (Decimal and integers beyond 64 bits are written digit for digit, see `encoding`);
datetimes become ISO-8601 UTC (a naive one is taken as UTC). A value that cannot be sent raises
BadValueError, which rejects its row only, naming the column and the reason.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any

from dagster_cdp.encoding import ORJSON_INTEGERS, decimal_text, exact_number, utc_iso


class BadValueError(ValueError):
    """A single row's value cannot be sent (NaN, Infinity, unreadable text); that row is rejected, the others
    proceed."""


class Unreadable:
    """A value the warehouse holds that could not be read as its column's type ('infinity', a malformed date)."""

    __slots__ = ("text", "reason")

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason

    def __repr__(self) -> str:
        return f"Unreadable({self.text!r}, {self.reason!r})"


def to_json_value(value: Any, column: str) -> Any:
    """Convert one column value; raises BadValueError for a value the API cannot carry."""
    kind = type(value)
    if value is None or kind is str or kind is bool:  # the common cases first: this runs for every value
        return value
    if kind is int:
        return value if value in ORJSON_INTEGERS else Decimal(value)
    if kind is dt.datetime and value.tzinfo is None:  # a naive one is UTC: utc_iso's text, without its conversions
        return value.isoformat() + "Z"
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return exact_number(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise BadValueError(f"column {column!r} holds {value}, which JSON cannot carry")
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise BadValueError(f"column {column!r} holds {value}, which JSON cannot carry")
        return exact_number(value)
    if isinstance(value, dt.datetime):
        try:
            return utc_iso(value)
        except OverflowError:  # an offset that moves it past year 9999 or before year 1 in UTC
            raise BadValueError(f"column {column!r} holds {value}, which is outside years 1 to 9999 in UTC") from None
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_json_value(v, column) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v, column) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            raise BadValueError(
                f"column {column!r} holds bytes that are not UTF-8 text; convert them in the query "
                "(e.g. to hex or base64 text)"
            ) from None
    if isinstance(value, Unreadable):
        raise BadValueError(f"column {column!r} holds {value.text[:40]!r}, {value.reason}")
    raise BadValueError(
        f"column {column!r} holds a {type(value).__name__} value, which cannot be sent to "
        "Customer.io; leave the column out of the mapping or convert it in the query"
    )


def to_key_part(value: Any, column: str) -> str | None:
    """A key column value as the string identifier the API gets (None stays None: a NULL key).

    Decimals keep every digit (`1.50` and `1.5` are one key, `1.000000000000000001` is not `1`).
    """
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    converted = to_json_value(value, column)
    if isinstance(converted, (dict, list)):
        raise BadValueError(f"key column {column!r} holds a {type(value).__name__} value; a key must be a scalar")
    if isinstance(converted, Decimal):
        return decimal_text(converted)
    return str(converted)
