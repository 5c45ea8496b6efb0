"""What every warehouse has in common, and the portable defaults a warehouse we know nothing about gets.

A `Dialect` holds everything that differs between warehouses: the reading session (UTC), how each column
is read exactly, the SQL of the in-warehouse diff (a row's hash, its key, a partition's bucket), how the
state tables are written, the lock of a sync, and memory bounds. Adding a warehouse means adding one
subclass in a module of its own (and its tests); nothing else branches on the warehouse's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa

from dagster_cdp.sync.locks import Lease, Lock
from dagster_cdp.sync.reading import SourceShape, declared_shape


class Dialect:
    """A warehouse we have no rules for: read by URL through SQLAlchemy, diffed in the portable work file."""

    names: ClassVar[tuple[str, ...]] = ()  # SQLAlchemy dialect names this class serves
    text_type: ClassVar[str] = "VARCHAR"  # how a text cast is spelled in SQL
    in_warehouse_diff: ClassVar[bool] = False  # whether `row_hash`, `json_part` and `bucket` exist here
    keyed_state: ClassVar[bool] = True  # whether the state table has a primary key (see `state`)
    full_outer_join: ClassVar[bool] = True
    multi_table_delete: ClassVar[bool] = False  # DELETE ... USING / DELETE t FROM t JOIN ...
    array_parameter: ClassVar[str | None] = None  # the placeholder of a driver binding a list as an SQL array

    case_folding: ClassVar[str] = ""  # how unquoted names change case, for the hint on a missing table

    def session(self, connection: sa.Connection) -> AbstractContextManager[None]:
        """Reads in UTC on this connection for the block (and whatever else makes values come back exactly)."""
        return nullcontext()

    def named(self, engine: sa.Engine, sql: str) -> str:
        """`sql` (a source: a table's SELECT or the user's query) with each column under the name a sync's mapping
        calls it by, the name every later SQL quotes exactly; the source itself where those are its own names."""
        return sql

    def shape(
        self, columns: list[str], description: Sequence[Sequence[Any]], declared: dict[str, sa.types.TypeEngine]
    ) -> SourceShape:
        """How to read each column so that no value can fail the fetch (`reading`)."""
        return declared_shape(columns, [d[1] for d in description], declared)

    def declared_types(
        self, connection: sa.Connection, table: str, schema: str | None
    ) -> dict[str, sa.types.TypeEngine]:
        """Column types a table declares that SQLAlchemy's reflection misses (`shape` gets them as `declared`)."""
        return {}

    # The in-warehouse diff (`pushdown`); only where `in_warehouse_diff`.

    def diff_session(self, connection: sa.Connection) -> AbstractContextManager[None]:
        """The session the in-warehouse diff's query runs in: the reading `session`, plus whatever planner
        settings that one query needs (set for it alone, not for the other reads)."""
        return self.session(connection)

    def exact_key_type(self, kind: Any) -> bool:
        """Whether a key column of this driver type reads in SQL as exactly the string Python sends."""
        return False

    def key_text(self, expression: str) -> str:
        """SQL of a key part as text that compares, groups and joins byte for byte."""
        return f"CAST({expression} AS {self.text_type})"

    def key_part(self, text: str) -> str:
        """What `key_text` makes of a key part whose text is `text`, computed in Python (where it abridges)."""
        return text

    def concat(self, parts: Sequence[str]) -> str:
        """SQL joining text parts into one string (NULL if any part is NULL)."""
        return " || ".join(parts)

    def distinct(self, left: str, right: str) -> str:
        """SQL that is true when two values differ, NULLs included."""
        return f"{left} IS DISTINCT FROM {right}"

    def row_hash(self, names: str, columns: Sequence[str]) -> str:
        """SQL of the md5 hex of `names` (a quoted literal) followed by the JSON array of the quoted `columns`."""
        raise NotImplementedError

    def json_part(self, expression: str, index: int) -> str:
        """SQL of string element `index` of the JSON array text `expression`."""
        raise NotImplementedError

    def bucket(self, expression: str) -> str | None:
        """SQL of the first 28 bits of the md5 of the text `expression`, as a non-negative integer (None: no md5)."""
        return None

    def row_check(self, columns: Sequence[str]) -> str | None:
        """SQL of an integer checking the quoted `columns` of a row (summed below a cursor mark, see `cursor`);
        None where the warehouse has no md5, which leaves the count alone to verify the mark."""
        texts = [f"coalesce({self.key_text(c)}, '')" for c in columns]
        return self.bucket(self.concat([part for text in texts for part in (text, "'|'")][:-1]))

    # The state tables (`state`) and the lock of a sync (`locks`).

    def delete_acknowledged(self, state: sa.Table, acks: sa.Table, sync: str) -> sa.Delete:
        """Deletes the state rows of a sync's acknowledged keys (before `settle` inserts their new state): as a
        join where the database has a multi-table DELETE (MariaDB drives it from the few acknowledgements; its
        `IN (SELECT ...)` scanned them once per state row), else with `IN`, which every database has."""
        a, s = acks.c, state.c
        if self.multi_table_delete:
            return sa.delete(state).where(s.sync == sync, a.sync == sync, s.key_hash == a.key_hash)
        return sa.delete(state).where(s.sync == sync, s.key_hash.in_(sa.select(a.key_hash).where(a.sync == sync)))

    def sync_name_type(self) -> sa.types.TypeEngine:
        """The type of the state tables' `sync` columns: names compare byte for byte."""
        return sa.String(200)

    def precise_moment_type(self) -> sa.types.TypeEngine:
        """The type of the history tables' moments (`history`): to the microsecond, as a sync's runs are ordered by
        them."""
        return sa.DateTime()

    def upgrade(self, engine: sa.Engine, tables: Sequence[sa.Table]) -> None:
        """Brings state tables an earlier version created on this warehouse up to date, keeping their rows."""

    def lock(self, engine: sa.Engine, locks: sa.Table, name: str, sync: str) -> Lock:
        """The lock of one sync: a lease row in `{prefix}locks`, where the database has no lock of its own."""
        return Lease(engine, locks, name, sync)

    def single_process_file(self, engine: sa.Engine) -> Path | None:
        """The database's file when only one process at a time may open it (see `locks.database_turns`)."""
        return None

    def bounded(self, engine: sa.Engine) -> AbstractContextManager[None]:
        """Bounds the memory a sync may take in an embedded database for the block."""
        return nullcontext()
