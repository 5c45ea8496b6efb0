"""`CustomerIOWarehouseResource`: the SQL warehouse syncs read from, and where their state is kept."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from dagster_cdp.sync.database import as_engine
from dagster_cdp.sync.state import StateStore


class CustomerIOWarehouseResource(dg.ConfigurableResource):
    """A SQLAlchemy URL (any dialect installed: DuckDB, PostgreSQL, Snowflake, ...). Use dg.EnvVar when it holds a password.

    Sync state goes into the warehouse itself unless `state_url` names another database (for read-only warehouses).
    """  # noqa: E501  (Dagster shows this docstring as is as the resource's description)

    url: str = Field(description="SQLAlchemy URL of the warehouse, e.g. postgresql+psycopg://user@host/db.", repr=False)
    state_url: str | None = Field(
        None, description="SQLAlchemy URL of the database holding sync state; default: url.", repr=False
    )
    state_schema: str | None = Field(None, description="Schema for the state tables; default: the connection's.")

    @contextmanager
    def connect(self) -> Iterator[tuple[sa.Engine, StateStore]]:
        """An engine for the source and the state store, disposed afterwards (embedded databases lock their file)."""
        engine = as_engine(self.url)
        state_engine = as_engine(self.state_url) if self.state_url else engine
        try:
            yield engine, StateStore(state_engine, schema=self.state_schema)
        finally:
            engine.dispose()
            state_engine.dispose()


def warehouse_kind(url: str) -> str | None:
    """The Dagster kind tag of a SQLAlchemy URL's dialect, e.g. postgres for postgresql+psycopg://...; None for a
    URL that does not parse (the run that uses it says why)."""
    try:
        backend = sa.make_url(url).get_backend_name()
    except (sa.exc.ArgumentError, ValueError):
        return None
    return {"postgresql": "postgres"}.get(backend, backend)
