"""JSON encoding of API calls: datetimes as ISO-8601 UTC, Decimal as a number, and no silent NaN.

orjson writes NaN and Infinity as `null`, which would silently clear an attribute at Customer.io,
so every float is checked before encoding and a non-finite one is refused with the field's path.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

import orjson

from dagster_cdp.errors import InvalidMessageError

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


def utc_iso(value: dt.datetime) -> str:
    """A datetime as ISO-8601 in UTC (`2024-05-01T10:30:00Z`); a naive one is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def decimal_number(value: Decimal) -> int | float:
    """A finite Decimal as a JSON number: an int when integral, so `7` stays `7`."""
    return int(value) if value == value.to_integral_value() else float(value)


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return utc_iso(value)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidMessageError(f"{value} is not a number the API accepts")
        return decimal_number(value)
    raise TypeError(f"values of type {type(value).__name__} cannot be sent to Customer.io")


def _check_finite(value: Any, path: str) -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMessageError(
                f"{path} is {value}, which JSON cannot carry; send null or a finite number instead"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (float, dict, list, tuple)):
                _check_finite(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_finite(item, f"{path}[{index}]")


def encode(value: Any, *, path: str = "call") -> bytes:
    """Encode a call (or any JSON-able value) the way the API expects it.

    Raises InvalidMessageError for NaN/Infinity and for values JSON cannot represent.
    """
    try:
        encoded = orjson.dumps(value, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        raise InvalidMessageError(f"{path} cannot be encoded as JSON: {cause}") from None
    if b"null" in encoded:  # orjson writes NaN/Infinity as null: only then is the walk needed
        _check_finite(value, path)
    return encoded
