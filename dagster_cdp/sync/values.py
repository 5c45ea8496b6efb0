"""Warehouse values to JSON values, the same way on every database, so hashes are stable across runs."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any

from dagster_cdp.encoding import decimal_number, utc_iso
from dagster_cdp.sync.errors import SourceError


class BadValueError(ValueError):
    """A single row's value cannot be sent (NaN, Infinity); that row is rejected and the others proceed."""


def to_json_value(value: Any, column: str) -> Any:
    """Convert one column value; raises SourceError for a type the API cannot carry (the whole column is wrong)."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise BadValueError(f"column {column!r} holds {value}, which JSON cannot carry")
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise BadValueError(f"column {column!r} holds {value}, which JSON cannot carry")
        return decimal_number(value)
    if isinstance(value, dt.datetime):
        return utc_iso(value)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_json_value(v, column) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v, column) for v in value]
    raise SourceError(
        f"Column {column!r} holds {type(value).__name__} values, which cannot be sent to Customer.io. "
        "Leave it out of the mapping or convert it in the query (e.g. to hex/base64 text)."
    )


def to_key_part(value: Any, column: str) -> str | None:
    """A key column value as the string identifier the API gets (None stays None: a NULL key)."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    converted = to_json_value(value, column)
    if isinstance(converted, (dict, list)):
        raise SourceError(f"Key column {column!r} holds {type(value).__name__} values; a key must be a scalar.")
    return str(converted)
