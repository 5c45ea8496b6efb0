"""One `Dialect` per warehouse, holding everything that differs between them; `dialect_of` finds an engine's."""

from __future__ import annotations

from contextlib import AbstractContextManager

import sqlalchemy as sa

from dagster_cdp.sync.dialects.base import Dialect
from dagster_cdp.sync.dialects.duckdb_dialect import DuckDBDialect
from dagster_cdp.sync.dialects.mysql_dialect import MySQLDialect
from dagster_cdp.sync.dialects.postgresql_dialect import PostgreSQLDialect
from dagster_cdp.sync.dialects.snowflake_dialect import SnowflakeDialect
from dagster_cdp.sync.dialects.sqlite_dialect import SQLiteDialect

_DIALECTS = {
    name: dialect()
    for dialect in (DuckDBDialect, PostgreSQLDialect, MySQLDialect, SQLiteDialect, SnowflakeDialect)
    for name in dialect.names
}
_PORTABLE = Dialect()


def dialect_of(engine: sa.Engine | sa.Connection) -> Dialect:
    """The rules of this engine's warehouse; the portable defaults for one we have none for."""
    return _DIALECTS.get(engine.dialect.name, _PORTABLE)


def reading_session(connection: sa.Connection) -> AbstractContextManager[None]:
    """Reads in UTC on this connection for the block (see `Dialect.session`)."""
    return dialect_of(connection).session(connection)


__all__ = ["Dialect", "dialect_of", "reading_session"]
