"""DuckDB: columnar and embedded, so the in-warehouse diff runs in the process, within a memory bound.

The in-warehouse diff, the appended acknowledgements and `settle` all run inside the warehouse's DuckDB
(and the work file is a DuckDB of its own), so without a bound a sync's peak memory would grow with the
table: `bounded` lowers DuckDB's default of 80% of the machine's RAM for the run (a lower limit the user
set is kept), and within it DuckDB spills to disk. Its state table has no primary key: per-request upserts
into a keyed 10M-row table were superlinear, its index living in memory (see `state`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa

from dagster_cdp.sync.dialects.base import Dialect
from dagster_cdp.sync.locks import Lock, file_lock, in_memory
from dagster_cdp.sync.reading import Fixer, SourceShape, finite_moment, json_value, session_setting, single_precision

WAREHOUSE_MEMORY_LIMIT = "320MB"  # plus WorkFile's 256MB: ~576MB of DuckDB memory for a sync of any size
_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_SIZE = re.compile(r"^\s*([\d.]+)\s*([a-z]*)\s*$", re.IGNORECASE)
_EXACT_KEYS = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "VARCHAR"}
)


class DuckDBDialect(Dialect):
    names: ClassVar[tuple[str, ...]] = ("duckdb",)
    in_warehouse_diff: ClassVar[bool] = True
    keyed_state: ClassVar[bool] = False
    multi_table_delete: ClassVar[bool] = True
    array_parameter: ClassVar[str | None] = "?"

    def session(self, connection: sa.Connection) -> AbstractContextManager[None]:
        return session_setting(connection, "SELECT current_setting('TimeZone')", "SET SESSION TimeZone = '{}'", "UTC")

    def shape(
        self, columns: list[str], description: Sequence[Sequence[Any]], declared: dict[str, sa.types.TypeEngine]
    ) -> SourceShape:
        types = [str(d[1]).upper() for d in description]
        fixers: dict[int, Fixer] = {}
        for index, kind in enumerate(types):
            if kind in ("FLOAT", "REAL", "FLOAT4"):
                fixers[index] = single_precision
            elif kind == "JSON":
                fixers[index] = json_value
            elif kind.startswith(("TIMESTAMP", "DATE")):
                fixers[index] = finite_moment  # DuckDB hands 'infinity' to Python as datetime.max
        return SourceShape(columns, types, {}, fixers)

    def exact_key_type(self, kind: Any) -> bool:
        return kind in _EXACT_KEYS

    def row_hash(self, names: str, columns: Sequence[str]) -> str:
        return f"md5({names} || CAST(json_array({', '.join(columns)}) AS VARCHAR))"

    def json_part(self, expression: str, index: int) -> str:
        return f"json_extract_string({expression}, '$[{int(index)}]')"

    def bucket(self, expression: str) -> str:
        return f"CAST(('0x' || substr(md5({expression}), 1, 7)) AS BIGINT)"

    def lock(self, engine: sa.Engine, locks: sa.Table, name: str, sync: str) -> Lock:
        return file_lock(engine, name)

    def single_process_file(self, engine: sa.Engine) -> Path | None:
        database = engine.url.database
        return Path(database).resolve() if database and not in_memory(database) else None  # one path per file

    @contextmanager
    def bounded(self, engine: sa.Engine) -> Iterator[None]:
        """Lowers the memory limit (a setting of the whole database) for the block, then restores it."""
        with engine.connect() as connection:
            before, order = (
                connection.exec_driver_sql(
                    "SELECT current_setting('memory_limit'), current_setting('preserve_insertion_order')"
                )
                .tuples()
                .one()
            )
            lowered = _bytes(before) > _bytes(WAREHOUSE_MEMORY_LIMIT)
            if lowered:
                connection.exec_driver_sql(f"SET memory_limit = '{WAREHOUSE_MEMORY_LIMIT}'")
            connection.exec_driver_sql("SET preserve_insertion_order = false")  # lets large joins stream and spill
        try:
            yield
        finally:
            with engine.connect() as connection:
                if lowered:
                    # The setting reads back rounded ("18.8 GiB"), so the default is restored by RESET, exactly.
                    connection.exec_driver_sql("RESET memory_limit")
                    if connection.exec_driver_sql("SELECT current_setting('memory_limit')").scalar_one() != before:
                        connection.exec_driver_sql(f"SET memory_limit = '{before}'")
                connection.exec_driver_sql(f"SET preserve_insertion_order = {'true' if order else 'false'}")


def _bytes(size: str) -> float:
    match = _SIZE.match(size)
    if match is None:
        return float("inf")
    number, unit = match.groups()
    return float(number) * _UNITS.get(unit.upper() or "B", 1)
