"""Incremental reads of send-once syncs by a cursor column (e.g. occurred_at).

A run reads only rows whose cursor is >= (high-water mark - lookback); the keyed state still decides what
is new, so rows re-read inside the window are never resent. The mark advances only over settled rows: it
never passes the smallest cursor of a row that was read and not acknowledged (rejected, or in flight when
the run failed), so that row is read again. Rows that arrive later than the lookback window are missed by
incremental runs; a full read (no cursor, or `full_resync`) never misses any.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from dagster_cdp.sync.errors import SourceError

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICROSECOND = dt.timedelta(microseconds=1)
# How a cursor value is stored: timestamps (naive ones are UTC) and dates as epoch microseconds, integers as is.
KINDS = ("timestamp", "timestamptz", "date", "integer")


@dataclass(frozen=True)
class CursorMark:
    """The high-water mark of a sync: every row read with a smaller cursor was settled."""

    column: str
    kind: str
    value: int

    def lower_bound(self, lookback: float | dt.timedelta) -> Any:
        """The value to read from (`cursor >= it`), typed like the column's values."""
        seconds = lookback.total_seconds() if isinstance(lookback, dt.timedelta) else lookback
        if self.kind == "integer":
            return self.value - math.ceil(seconds)
        moment = _EPOCH + (self.value - math.ceil(seconds * 1_000_000)) * _MICROSECOND
        if self.kind == "date":
            return moment.date()
        return moment if self.kind == "timestamptz" else moment.replace(tzinfo=None)

    def bind_type(self) -> sa.types.TypeEngine:
        return {"timestamp": sa.DateTime(), "timestamptz": sa.DateTime(timezone=True), "date": sa.Date(),
                "integer": sa.BigInteger()}[self.kind]


def encode(value: Any, column: str) -> tuple[str, int] | None:
    """(kind, sortable integer) of a cursor value; None for NULL."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return "timestamp", (value.replace(tzinfo=dt.timezone.utc) - _EPOCH) // _MICROSECOND
        return "timestamptz", (value - _EPOCH) // _MICROSECOND
    if isinstance(value, dt.date):
        return "date", (dt.datetime.combine(value, dt.time(), dt.timezone.utc) - _EPOCH) // _MICROSECOND
    if isinstance(value, int) and not isinstance(value, bool):
        return "integer", value
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return "integer", int(value)
    raise SourceError(
        f"Cursor column {column!r} holds {type(value).__name__} values such as {value!r}; a cursor must be a "
        "timestamp, date or integer column (cast it in the query)."
    )


def next_mark(previous: CursorMark | None, column: str, kind: str | None, read_max: int | None,
              unsettled_min: int | None) -> CursorMark | None:
    """The mark after a run that read rows up to `read_max` and left rows from `unsettled_min` unacknowledged."""
    if kind is None or read_max is None:
        return previous
    if unsettled_min is not None:
        return CursorMark(column, kind, unsettled_min)  # read again from there, even if that is below the old mark
    if previous is not None and previous.column == column and previous.kind == kind:
        read_max = max(read_max, previous.value)  # a window with only older rows does not move it back
    return CursorMark(column, kind, read_max)
