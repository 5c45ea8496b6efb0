"""JSON encoding of API calls: datetimes as ISO-8601 UTC, decimals with every digit, and no silent NaN.

orjson writes NaN and Infinity as `null`, which would silently clear an attribute at Customer.io,
so every float is checked before encoding and a non-finite one is refused with the field's path.
A Decimal (and an integer beyond 64 bits) is written as a JSON number with exactly its digits, never
through a float; `exact_loads` reads such JSON back without losing them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from decimal import Decimal
from typing import Any

import orjson

from dagster_cdp.errors import InvalidMessageError

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


def utc_iso(value: dt.datetime) -> str:
    """A datetime as ISO-8601 in UTC (`2024-05-01T10:30:00Z`); a naive one is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


ORJSON_INTEGERS = range(-(2**63), 2**64)  # the integers orjson writes itself; others go through Decimal
_LONG_NUMBER = re.compile(r"[0-9][0-9.]{15,}")  # 16+ digits: a double might not carry them


def decimal_text(value: Decimal) -> str:
    """A finite Decimal in plain notation with no trailing zeros: `1.50` -> `1.5`, `1E+3` -> `1000`."""
    text = format(value, "f")  # exact: normalize() would round to the context's 28 digits
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def exact_number(value: Decimal | int) -> Decimal | int:
    """A number JSON carries exactly: small integers as int, everything else as Decimal (written digit for digit)."""
    if isinstance(value, int):
        return value if value in ORJSON_INTEGERS else Decimal(value)
    if value == value.to_integral_value() and int(value) in ORJSON_INTEGERS:
        return int(value)
    return value


def _exact_float(text: str) -> float | Decimal:
    number = float(text)
    return number if orjson.dumps(number) == text.encode() else Decimal(text)


def exact_loads(data: str | bytes) -> Any:
    """`orjson.loads`, except that numbers with more digits than a double holds come back as Decimal (or int)."""
    text = data if isinstance(data, str) else data.decode()
    if _LONG_NUMBER.search(text) is None:
        return orjson.loads(text)
    return json.loads(
        text, parse_float=_exact_float, parse_int=lambda text: exact_number(int(text)), parse_constant=_not_json
    )


def _not_json(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return utc_iso(value)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidMessageError(f"{value} is not a number the API accepts")
        return orjson.Fragment(decimal_text(value))
    raise TypeError(f"values of type {type(value).__name__} cannot be sent to Customer.io")


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """orjson.dumps with this module's types (Decimal digit for digit, datetimes as UTC); NaN is not checked."""
    return orjson.dumps(value, default=_default, option=_OPTIONS | (orjson.OPT_SORT_KEYS if sort_keys else 0))


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
