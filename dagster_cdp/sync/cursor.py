"""Incremental reads of send-once syncs by a cursor column (e.g. occurred_at), verified so no row is missed.

Rows whose cursor is below the sync's mark were all read and settled by earlier runs, and the mark keeps a
tally of them: how many there were, and (where the warehouse has md5) a checksum of their keys. A run
first asks the warehouse for the tally of the rows below the mark now. If it is the same, no row was added
below the mark since (a late, backfilled or replayed row) and none was swapped for another, so reading the
rows at or above the mark (minus `lookback`, which only widens the read) and those with a NULL cursor
misses nothing. If it differs, the run reads the whole source. Either way the keyed state decides what
was already sent, so nothing is sent twice. The mark moves only over settled rows: it stops at the lowest
cursor of a row that was read and not acknowledged (rejected, in flight when the run failed, a bad value,
a duplicate or missing key), so that row is read again until it is sent.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from dagster_cdp.sync.sync_errors import SourceError

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
# How a cursor value is stored: timestamps (naive ones are UTC) and dates as epoch microseconds, integers as is.
KINDS = ("timestamp", "timestamptz", "date", "integer")


@dataclass(frozen=True)
class Tally:
    """The rows of a source below a cursor value: their count, and the sum of their keys' checks (0 without md5)."""

    rows: int
    check: int

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.rows + other.rows, self.check + other.check)

    def __sub__(self, other: Tally) -> Tally:
        return Tally(self.rows - other.rows, self.check - other.check)


@dataclass(frozen=True)
class CursorMark:
    """The mark of a sync: every source row with a smaller cursor was read and settled; `below` tallies them
    (None for a mark an earlier version saved, which is verified by one whole read)."""

    column: str
    kind: str
    value: int
    below: Tally | None = None

    def lower_bound(self, lookback: float | dt.timedelta) -> Any:
        """The value to read from (`cursor >= it`), typed like the column's values."""
        seconds = lookback.total_seconds() if isinstance(lookback, dt.timedelta) else lookback
        if self.kind == "integer":
            return self.value - math.ceil(seconds)
        return self.as_value(self.value - math.ceil(seconds * 1_000_000))

    def as_value(self, encoded: int) -> Any:
        """An encoded cursor as a value of the column's type."""
        if self.kind == "integer":
            return encoded
        moment = _EPOCH + encoded * _MICROSECOND
        if self.kind == "date":
            return moment.date()
        return moment if self.kind == "timestamptz" else moment.replace(tzinfo=None)

    def bind_type(self) -> sa.types.TypeEngine:
        types: dict[str, sa.types.TypeEngine] = {
            "timestamp": sa.DateTime(),
            "timestamptz": sa.DateTime(timezone=True),
            "date": sa.Date(),
            "integer": sa.BigInteger(),
        }
        return types[self.kind]


def encode(value: Any, column: str) -> tuple[str, int] | None:
    """(kind, sortable integer) of a cursor value; None for NULL."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return "timestamp", (value.replace(tzinfo=dt.UTC) - _EPOCH) // _MICROSECOND
        return "timestamptz", (value - _EPOCH) // _MICROSECOND
    if isinstance(value, dt.date):
        return "date", (dt.datetime.combine(value, dt.time(), dt.UTC) - _EPOCH) // _MICROSECOND
    if isinstance(value, int) and not isinstance(value, bool):
        return "integer", value
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return "integer", int(value)
    raise SourceError(
        f"Cursor column {column!r} holds {type(value).__name__} values such as {value!r}; a cursor must be a "
        "timestamp, date or integer column (cast it in the query)."
    )


def next_mark(
    previous: CursorMark | None,
    column: str,
    kind: str | None,
    read_max: int | None,
    pin: int | None,
    tally: Callable[[int | None, int], Tally],
) -> CursorMark | None:
    """The mark after a run that read from the verified mark `previous` (None: it read the whole source).

    `read_max` is the highest cursor read, `pin` the lowest cursor of a row read and not settled, and
    `tally(low, high)` tallies the rows read with low <= cursor < high (low None: from the lowest).
    """
    if kind is None or read_max is None:
        return previous  # no row with a cursor was read: nothing moves
    top = read_max if previous is None else max(read_max, previous.value)
    value = top if pin is None else min(pin, top)
    if previous is None or previous.below is None:
        return CursorMark(column, kind, value, tally(None, value))
    # Rows read between the old and the new mark join the tally; if the mark moved back (a row in the lookback
    # was not settled), the rows read between them leave it. Both ranges were read whole, at or above the window.
    below = previous.below + tally(previous.value, value) - tally(value, previous.value)
    return CursorMark(column, kind, value, below)
