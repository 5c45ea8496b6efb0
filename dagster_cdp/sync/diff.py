"""The out-of-core diff: source rows and stored state meet in an embedded DuckDB work file that spills to disk.

Rows arrive in chunks as newline-delimited JSON (fast to load without Arrow), the join is on the key hash
(never on two databases agreeing on an ORDER BY), and the calls to send are streamed back out in chunks.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import orjson

from dagster_cdp.encoding import exact_loads
from dagster_cdp.sync.cursor import Tally
from dagster_cdp.sync.mapping import MappedRow, json_text
from dagster_cdp.sync.message_ids import check_message_ids, digest_sql, uuid_sql
from dagster_cdp.sync.state import STATE_FIELDS, KeyState, state_field_types

_SOURCE_COLUMNS = {
    "key_hash": "VARCHAR",
    "key": "VARCHAR",
    "payload_hash": "VARCHAR",
    "payload": "VARCHAR",
    "delete_call": "VARCHAR",
    "problem": "VARCHAR",
    "cursor": "BIGINT",
    "row_hash": "VARCHAR",
    "row_check": "BIGINT",
    "checked": "BOOLEAN",
}
_STATE_COLUMNS = state_field_types("VARCHAR")
# The plan's names of stored state fields whose own names its source row's fields have (the others keep theirs).
_ACCEPTED = {"payload_hash": "accepted_hash", "delete_call": "accepted_delete_call", "row_hash": "accepted_row_hash"}
LOAD_ROWS = 50_000
FETCH_ROWS = 5_000
DELETE_MARK = "delete"  # failed_hash of a key whose deletion was rejected
SOURCE_MARK = "source"  # failed_hash of a key whose row was rejected before sending (a bad value)

# Operations in the plan. 'resync' resends an unchanged row on a full resync; 'forget' drops state of a key
# that never reached the API; 'gone' is a deleted key whose state is kept as a tombstone (its version keeps
# later messageIds unique); 'problem', 'duplicate' and 'exhausted' rows are reported and not sent; 'deferred' calls
# are held back for a later run by the sync's max_changes_per_run (`defer`).
SENDING = ("insert", "update", "resync", "delete")


@dataclass
class PlannedCall:
    """A call to send, with the key's stored state so its acknowledgement can be recorded without a lookup."""

    operation: str
    key_hash: str
    key: str
    payload_hash: str  # of the call; for a deletion, the accepted hash being deleted
    payload: str  # the call as JSON, without its messageId
    delete_call: str | None  # the call that will delete this row later, as JSON
    version: int  # accepted calls so far for this key: part of the messageId, so no two sends share one
    accepted_hash: str | None
    accepted_delete_call: str | None
    attempts: int
    failed_hash: str | None
    row_hash: str | None  # the warehouse's hash of the row being sent, recorded when it is accepted
    accepted_row_hash: str | None
    checked: bool  # the call passed the client's checks when mapped (MappedRow.checked)
    message_id: str  # see message_ids

    @property
    def call(self) -> dict[str, Any]:
        return exact_loads(self.payload)


class WorkFile:
    """A throwaway DuckDB database in a temp dir holding this run's source rows, stored state and plan."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="cdp-sync-")
        self._db = duckdb.connect(os.path.join(self._dir.name, "work.duckdb"))
        spill = os.path.join(self._dir.name, "spill").replace("'", "''")
        self._db.execute(f"SET temp_directory = '{spill}'")
        self._db.execute("SET memory_limit = '256MB'")
        self._db.execute("SET preserve_insertion_order = false")
        check_message_ids(self._db)
        self._db.execute(f"CREATE TABLE source ({_ddl(_SOURCE_COLUMNS)})")
        self._db.execute(f"CREATE TABLE state ({_ddl(_STATE_COLUMNS)})")
        # Rows read but not diffed: without a key (`pins` them: they hold the cursor mark), or of another partition.
        self._db.execute("CREATE TABLE unmapped (cursor BIGINT, row_check BIGINT, pins BOOLEAN)")
        self._unchanged_elsewhere = 0
        self._previous_accepted: int | None = None

    def __enter__(self) -> WorkFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()

    def add_source(self, rows: Iterable[MappedRow]) -> None:
        self._load(
            "source",
            _SOURCE_COLUMNS,
            (
                (
                    r.key_hash,
                    r.key,
                    r.payload_hash,
                    json_text(r.payload),
                    json_text(r.delete_call),
                    r.problem,
                    r.cursor,
                    r.row_hash,
                    r.check,
                    r.checked,
                )
                for r in rows
            ),
        )

    def add_state(self, rows: Iterable[Sequence[Any]]) -> None:
        self._load("state", _STATE_COLUMNS, rows)

    def add_diffed(self, keys: Iterable[tuple[list[MappedRow], Sequence[Any] | None]]) -> None:
        """Source rows and stored state of keys already diffed in the warehouse, loaded side by side in one pass."""
        source: list[MappedRow] = []
        state: list[Sequence[Any]] = []
        for rows, stored in keys:
            source.extend(rows)
            if stored is not None:
                state.append(stored)
            if len(source) >= LOAD_ROWS or len(state) >= LOAD_ROWS:
                self.add_source(source)
                self.add_state(state)
                source, state = [], []
        self.add_source(source)
        self.add_state(state)

    def counted_elsewhere(self, *, unchanged: int, previous_accepted: int) -> None:
        """Figures of the keys that never entered this file because the warehouse found them unchanged."""
        self._unchanged_elsewhere = unchanged
        self._previous_accepted = previous_accepted

    def _load(self, table: str, columns: dict[str, str], rows: Iterable[Sequence[Any]]) -> None:
        path = os.path.join(self._dir.name, f"{table}.ndjson")
        names = list(columns)
        spec = ", ".join(f"{name}: '{kind}'" for name, kind in columns.items())
        quoted_path = path.replace("'", "''")
        sql = (
            f"INSERT INTO {table} SELECT {', '.join(names)} FROM read_json('{quoted_path}', "
            f"format='newline_delimited', columns={{{spec}}})"
        )
        pending = 0
        # Lines go straight to the file: holding orjson's bytes objects in a list costs ~4 KB each.
        file = open(path, "wb")
        try:
            for row in rows:
                file.write(orjson.dumps(dict(zip(names, row, strict=False))))
                file.write(b"\n")
                pending += 1
                if pending >= LOAD_ROWS:
                    file.close()
                    self._db.execute(sql)
                    file = open(path, "wb")
                    pending = 0
            file.close()
            if pending:
                self._db.execute(sql)
        finally:
            file.close()
            os.remove(path)

    def plan(self, *, mirror: bool, full_resync: bool, max_row_attempts: int, send_once: bool = False) -> None:
        """Classifies every source row and every stored key into one operation (table `plan`).

        With `send_once`, an accepted key is never sent again: a changed row (even one gone bad) is 'unchanged', a
        gone one 'kept'.
        """
        resend = "'resync'" if full_resync and not send_once else "'unchanged'"
        changed = "'unchanged'" if send_once else "'update'"
        deletion = "'delete'" if mirror and not send_once else "'kept'"
        self._db.execute(f"""
            CREATE TABLE plan AS
            WITH counted AS (
                SELECT key_hash, count(*) AS n, any_value(key) AS key FROM source GROUP BY key_hash
            ), single AS (
                SELECT s.* FROM source s JOIN counted c USING (key_hash) WHERE c.n = 1
            ), classified AS (
                SELECT s.key_hash, s.key, s.payload_hash, s.payload, s.delete_call, s.problem AS reason,
                       st.failed_hash = s.payload_hash AND st.attempts >= {int(max_row_attempts)} AS exhausted,
                       st.version, st.payload_hash AS accepted_hash, st.delete_call AS accepted_delete_call,
                       st.attempts, st.failed_hash, st.last_error, s.row_hash, st.row_hash AS accepted_row_hash,
                       s.checked,
                       CASE WHEN {"st.payload_hash IS NOT NULL" if send_once else "FALSE"} THEN 'unchanged'
                            WHEN s.problem IS NOT NULL THEN 'problem'
                            WHEN st.payload_hash IS NULL THEN 'insert'
                            WHEN st.payload_hash <> s.payload_hash THEN {changed}
                            ELSE {resend} END AS operation
                FROM single s LEFT JOIN state st USING (key_hash)
            )
            SELECT CASE WHEN exhausted AND operation IN ('insert', 'update', 'resync') THEN 'exhausted'
                        ELSE operation END AS operation,
                   key_hash, key, payload_hash, payload, delete_call,
                   CASE WHEN exhausted AND operation IN ('insert', 'update', 'resync')
                        THEN 'rejected ' || attempts || ' times, not retried: ' || last_error
                        ELSE reason END AS reason,
                   coalesce(version, 0) AS version, accepted_hash, accepted_delete_call,
                   coalesce(attempts, 0) AS attempts, failed_hash, operation AS intended, row_hash, accepted_row_hash,
                   checked
            FROM classified
            UNION ALL
            SELECT 'duplicate', key_hash, key, NULL, NULL, NULL, n || ' source rows share this key; none was sent',
                   0, NULL, NULL, 0, NULL, NULL, NULL, NULL, FALSE
            FROM counted WHERE n > 1
            UNION ALL
            SELECT CASE WHEN st.payload_hash IS NULL AND st.version = 0 THEN 'forget'
                        WHEN st.payload_hash IS NULL THEN 'gone'
                        WHEN st.failed_hash = '{DELETE_MARK}' AND st.attempts >= {int(max_row_attempts)}
                             THEN 'exhausted'
                        ELSE {deletion} END,
                   st.key_hash, st.key, st.payload_hash, st.delete_call, NULL,
                   CASE WHEN st.failed_hash = '{DELETE_MARK}'
                        THEN 'deletion rejected ' || st.attempts || ' times, not retried: ' || st.last_error END,
                   st.version, st.payload_hash, st.delete_call, st.attempts, st.failed_hash, 'delete',
                   NULL, st.row_hash, FALSE
            FROM state st ANTI JOIN counted c USING (key_hash)
        """)

    def _aggregate(self, sql: str, parameters: list[Any] | None = None) -> tuple[Any, ...]:
        """The one row of an aggregate query without GROUP BY (there always is one)."""
        row = self._db.execute(sql, parameters).fetchone()
        assert row is not None
        return row

    def defer(self, keep: int, *, by_cursor: bool) -> int:
        """Holds back the planned calls after the first `keep` as 'deferred' (for a later run); returns how many.

        First go real changes, before the resends of a full resync; then the keys sent fewest times (so full
        resyncs run again go on with the keys not resent yet); then, `by_cursor`, the rows of the lowest cursors (the
        cursor mark, held by the lowest deferred row, moves up over the calls sent); then by key hash.
        """
        sending = ", ".join(f"'{operation}'" for operation in SENDING)
        cursor = "s.cursor NULLS LAST, " if by_cursor else ""
        source = "LEFT JOIN source s USING (key_hash)" if by_cursor else ""  # one row: deletions have none
        self._db.execute(
            f"""
            UPDATE plan SET operation = 'deferred' WHERE operation IN ({sending}) AND key_hash NOT IN (
                SELECT p.key_hash FROM plan p {source} WHERE p.operation IN ({sending})
                ORDER BY p.operation = 'resync', coalesce(p.version, 0), {cursor}p.key_hash LIMIT ?
            )""",
            [keep],
        )
        return self._aggregate("SELECT count(*) FROM plan WHERE operation = 'deferred'")[0]

    def counts(self) -> dict[str, int]:
        counts = dict(self._db.execute("SELECT operation, count(*) FROM plan GROUP BY operation").fetchall())
        if self._unchanged_elsewhere:
            counts["unchanged"] = counts.get("unchanged", 0) + self._unchanged_elsewhere
        return counts

    def previous_accepted(self) -> int:
        if self._previous_accepted is not None:
            return self._previous_accepted
        return self._aggregate("SELECT count(*) FROM state WHERE payload_hash IS NOT NULL")[0]

    def reported(self) -> list[tuple[str, str, str, int | None]]:
        """(key, reason, operation, attempts) of rows reported instead of sent; operation 'source' when the row itself
        is bad, attempts the API's refusals of a row not retried any more (else None)."""
        return self._db.execute("""
            SELECT key, reason, CASE WHEN operation = 'exhausted' THEN replace(intended, 'resync', 'update')
                                     ELSE 'source' END,
                   CASE WHEN operation = 'exhausted' THEN attempts END
            FROM plan WHERE operation IN ('problem', 'duplicate', 'exhausted') ORDER BY key
        """).fetchall()

    def add_unmapped(self, rows: Sequence[tuple[int | None, int, bool]]) -> None:
        """(cursor, check, pins) of source rows read and not diffed: without a key (they pin the cursor mark like
        any unsent row), or of another partition (they only count in its tally)."""
        if rows:
            self._db.executemany("INSERT INTO unmapped VALUES (?, ?, ?)", [list(r) for r in rows])

    def cursor_extent(self, unsettled_key_hashes: Sequence[str]) -> tuple[int | None, int | None]:
        """(highest cursor read, lowest cursor of a row read and not settled) for the cursor mark.

        Not settled: sent and not acknowledged (the given keys), reported instead of sent (a bad value, a
        duplicate key, retries exhausted) or deferred while its key was never accepted, or without a key. Rows of other
        partitions count as read: the cursor and its tally cover the whole source.
        """
        highest = self._aggregate(
            "SELECT max(cursor) FROM (SELECT cursor FROM source UNION ALL SELECT cursor FROM unmapped)"
        )[0]
        lowest = self._aggregate(
            """
            SELECT min(cursor) FROM (
                SELECT cursor FROM source WHERE key_hash IN (SELECT unnest(?::VARCHAR[]))
                UNION ALL
                SELECT s.cursor FROM source s JOIN plan p USING (key_hash) LEFT JOIN state st USING (key_hash)
                WHERE p.operation IN ('problem', 'duplicate', 'exhausted', 'deferred') AND st.payload_hash IS NULL
                UNION ALL
                SELECT cursor FROM unmapped WHERE pins
            )""",
            [list(unsettled_key_hashes)],
        )[0]
        return highest, lowest

    def tally(self, low: int | None, high: int) -> Tally:
        """The rows read with low <= cursor < high (low None: every row below high)."""
        rows, check = self._aggregate(
            f"""
            SELECT count(*), coalesce(sum(row_check), 0)
            FROM (SELECT cursor, row_check FROM source UNION ALL SELECT cursor, row_check FROM unmapped)
            WHERE cursor < ?{"" if low is None else " AND cursor >= ?"}""",
            [high] + ([] if low is None else [low]),
        )
        return Tally(int(rows), int(check))

    def unsent_state(self) -> Iterator[list[KeyState]]:
        """New state of keys this run does not send: unchanged keys whose warehouse row hash moved (a column
        reorder, a session setting, a switch of diff path), so the next in-warehouse diff does not return them; and
        rows rejected before sending, so `cdp_state` shows why (`failed_hash` 'source')."""
        moved = _state_list(lambda f: f"st.{f}", row_hash="p.row_hash")
        rejected = _state_list(
            lambda f: _ACCEPTED.get(f, f),
            attempts=f"CASE WHEN failed_hash = '{SOURCE_MARK}' THEN attempts + 1 ELSE 1 END",
            failed_hash=f"'{SOURCE_MARK}'",
            last_error="reason",
        )
        cursor = self._db.cursor()
        try:
            cursor.execute(f"""
                SELECT {moved}
                FROM plan p JOIN state st USING (key_hash)
                WHERE p.operation = 'unchanged' AND p.row_hash IS NOT NULL AND p.row_hash IS DISTINCT FROM st.row_hash
                UNION ALL
                SELECT {rejected}
                FROM plan WHERE operation = 'problem'
            """)
            while chunk := cursor.fetchmany(FETCH_ROWS):
                yield [KeyState(*row) for row in chunk]
        finally:
            cursor.close()

    def forgotten(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT key_hash FROM plan WHERE operation = 'forget'").fetchall()]

    def calls(
        self, sync: str, *, send_once: bool, operations: Sequence[str] = SENDING, limit: int | None = None
    ) -> Iterator[PlannedCall]:
        """Streams the planned calls of sync `sync` with their messageIds; uses its own cursor so the client may pull
        from another thread."""
        cursor = self._db.cursor()
        try:
            placeholders = ", ".join("?" for _ in operations)
            sql = (
                f"SELECT operation, key_hash, key, payload_hash, payload, delete_call, version, accepted_hash, "
                f"accepted_delete_call, attempts, failed_hash, row_hash, accepted_row_hash, coalesce(checked, FALSE), "
                f"{uuid_sql('cdp_digest')} "
                f"FROM (SELECT *, {digest_sql(send_once=send_once)} AS cdp_digest "
                f"FROM plan WHERE operation IN ({placeholders})"
            )
            if limit is not None:
                sql += f" LIMIT {int(limit)}"
            cursor.execute(sql + ")", [sync, *operations])
            while chunk := cursor.fetchmany(FETCH_ROWS):
                for row in chunk:
                    if row[-1] is None:  # a NULL part of its name: never sent under a made-up id
                        raise RuntimeError(f"planned {row[0]} of key {row[2]!r} has no messageId; please report this")
                    yield PlannedCall(*row)
        finally:
            cursor.close()


def _state_list(column: Callable[[str], str], **given: str) -> str:
    """The state fields as a select list, in order: the SQL `given` for some, `column(name)` for the others."""
    return ", ".join(given.get(f, column(f)) for f in STATE_FIELDS)


def _ddl(columns: dict[str, str]) -> str:
    return ", ".join(f"{name} {kind}" for name, kind in columns.items())
