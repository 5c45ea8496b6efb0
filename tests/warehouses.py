"""Real warehouses for the sync tests: SQLite and DuckDB files, a fresh PostgreSQL schema, a fresh MariaDB database,
and a fresh schema on the local fakesnow server scripts/test starts.

The `warehouse` fixture (tests/conftest.py) gives each test an empty place of each kind, dropped after.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dagster_cdp import StateStore
from dagster_cdp.sync.database import as_engine

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MARIADB = "mysql+pymysql://root@127.0.0.1:3306"
# The fakesnow server scripts/test starts (a Snowflake speaking the wire protocol, the SQL run in DuckDB); the URL's
# host/port/protocol query parameters reach the connector as connect_args (dagster_cdp.sync.database.as_engine).
SNOWFLAKE = os.environ.get("CDP_TEST_SNOWFLAKE_URL",
                           "snowflake://fake:snow@fakesnow?host=127.0.0.1&port=8765&protocol=http")
SNOWFLAKE_DATABASE = "cdp_test"
KINDS = ("sqlite", "duckdb", "postgresql", "mariadb", "snowflake")


class Warehouse:
    """An empty database of one kind, with helpers to create and change source tables portably."""

    def __init__(self, kind: str, url: str, schema: str) -> None:
        self.kind = kind
        self.url = url
        self.schema = schema  # the schema (MariaDB: database) unqualified names land in
        self.engine = as_engine(url)

    def create(self, name: str, columns: Mapping[str, sa.types.TypeEngine], rows: Sequence[Mapping[str, Any]] = (),
               primary_key: str | None = None) -> sa.Table:
        """(Re)creates table `name` with the given columns and rows."""
        table = sa.Table(name, sa.MetaData(), *(
            sa.Column(column, kind, primary_key=column == primary_key, quote=True) for column, kind in columns.items()))
        table.drop(self.engine, checkfirst=True)
        table.create(self.engine)
        self.insert(table, rows)
        return table

    def insert(self, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            with self.engine.begin() as connection:
                connection.execute(sa.insert(table), [dict(r) for r in rows])

    def replace(self, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """Makes `rows` the table's whole content."""
        with self.engine.begin() as connection:
            connection.execute(sa.delete(table))
        self.insert(table, rows)

    def rows(self, table: sa.Table) -> list[dict[str, Any]]:
        if self.kind == "snowflake":  # fakesnow fails a fetch holding a NULL timestamp: read them as text
            moments = [c.name for c in table.columns if isinstance(c.type, sa.DateTime)]
            select = sa.select(*[sa.cast(c, sa.String).label(c.name) if c.name in moments else c for c in table.columns])
            with self.engine.connect() as connection:
                rows = [dict(r._mapping) for r in connection.execute(select)]
            return [{k: dt.datetime.fromisoformat(v) if k in moments and v is not None else v for k, v in r.items()}
                    for r in rows]
        with self.engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(sa.select(table))]

    def accepted_keys(self, sync: str) -> set[str]:
        """Keys whose state in this warehouse records a call the API accepted (pending acknowledgements folded
        in first, as the next run would)."""
        store = StateStore(self.engine)
        store.settle(sync)
        return {row[1] for row in store.iter_rows(sync, chunk_rows=1000) if row[2] is not None}

    def release(self) -> None:
        """Closes pooled connections (DuckDB allows one writing process per file)."""
        self.engine.dispose()


def execute(url: str, *statements: str) -> None:
    """Runs SQL statements in one transaction on the database at `url` (setting up or editing a source)."""
    engine = as_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def sqlite_warehouse(tmp_path: Path, *statements: str) -> str:
    """The URL of a new SQLite file in `tmp_path` set up by `statements`: the small warehouse of the Dagster tests."""
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    execute(url, *statements)
    return url


@contextmanager
def snowflake_schema(name: str) -> Iterator[str]:
    """The URL of a fresh schema `name` (unquoted: upper case) on the fakesnow server, dropped after. A schema in
    one database: fakesnow runs CREATE DATABASE but not DROP DATABASE (DuckDB's parser rejects it), so a
    database each would pile up in the server's memory."""
    admin = as_engine(SNOWFLAKE)
    with admin.begin() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS {SNOWFLAKE_DATABASE}")
        connection.exec_driver_sql(f"CREATE SCHEMA {SNOWFLAKE_DATABASE}.{name}")
    try:
        yield sa.make_url(SNOWFLAKE).set(database=f"{SNOWFLAKE_DATABASE}/{name}").render_as_string(False)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {SNOWFLAKE_DATABASE}.{name} CASCADE")
        admin.dispose()
