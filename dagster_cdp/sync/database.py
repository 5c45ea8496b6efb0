"""Warehouse URLs made into engines, and a database's own failures reported by their cause, never with a password.

A URL whose dialect or driver is not installed names the extra that installs it; a database that cannot be
reached says so, with its URL and the driver's reason, before a sync starts instead of deep inside it.
"""

from __future__ import annotations

import sqlalchemy as sa

from dagster_cdp.sync.errors import SourceError

# backend -> (extra of dagster-cdp installing its driver, the URL scheme that driver takes)
_EXTRAS = {"postgresql": ("postgres", "postgresql+psycopg"), "mysql": ("mysql", "mysql+pymysql"),
           "mariadb": ("mysql", "mariadb+pymysql"), "duckdb": ("duckdb", "duckdb")}
_MISSPELT = {"postgres": "postgresql+psycopg", "postgres+psycopg": "postgresql+psycopg"}  # Heroku and libpq spell it so


def as_engine(warehouse: str | sa.Engine) -> sa.Engine:
    """An engine for a SQLAlchemy URL (the caller disposes of it), or the engine given."""
    if not isinstance(warehouse, str):
        return warehouse
    try:
        url = sa.make_url(warehouse)
    except sa.exc.ArgumentError:
        raise SourceError("The warehouse URL is not a SQLAlchemy URL; write it as "
                          "dialect+driver://user:password@host/database, e.g. postgresql+psycopg://...") from None
    try:
        return sa.create_engine(url)
    except (sa.exc.NoSuchModuleError, ImportError) as e:
        raise SourceError(_not_installed(url, e)) from None


def _not_installed(url: sa.URL, error: Exception) -> str:
    shown = url.render_as_string(hide_password=True)
    if url.drivername in _MISSPELT:
        fixed = url.set(drivername=_MISSPELT[url.drivername])
        return f"{shown} names no SQLAlchemy dialect: write {fixed.render_as_string(hide_password=True)}"
    backend = url.get_backend_name()
    reason = " ".join(str(error).split())
    if backend not in _EXTRAS:
        return f"cannot use {shown}: {reason}. Install the package that provides SQLAlchemy's {backend!r} dialect"
    extra, scheme = _EXTRAS[backend]
    return f"cannot use {shown}: {reason}. pip install 'dagster-cdp[{extra}]' installs the driver of {scheme}:// URLs"


def check_connects(*engines: sa.Engine) -> None:
    """Connects once to each engine, so that an unreachable database fails with its URL and the driver's reason."""
    for engine in dict.fromkeys(engines):
        try:
            with engine.connect():
                pass
        except sa.exc.DBAPIError as e:
            raise unreachable(engine, e) from None


def unreachable(engine: sa.Engine, error: sa.exc.DBAPIError) -> SourceError:
    """The error for a database that refused a connection: its URL (no password) and the driver's reason."""
    return SourceError(f"cannot connect to {engine.url.render_as_string(hide_password=True)}: "
                       f"{driver_reason(error, engine)}")


def driver_reason(error: sa.exc.DBAPIError, engine: sa.Engine) -> str:
    """The driver's own message on one line, without the statement SQLAlchemy appends, or the password."""
    reason = " ".join(str(error.orig).split())
    password = engine.url.password
    return reason.replace(password, "***") if password else reason
