"""Warehouse URLs made into engines, and a database's own failures reported by their cause, never with a password.

A URL whose dialect or driver is not installed names the extra that installs it; a database that cannot be
reached says so, with its URL and the driver's reason, before a sync starts instead of deep inside it.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from dagster_cdp.sync.sync_errors import SourceError

# backend -> (extra of dagster-cdp installing its driver, the URL scheme that driver takes)
_EXTRAS = {
    "postgresql": ("postgres", "postgresql+psycopg"),
    "mysql": ("mysql", "mysql+pymysql"),
    "mariadb": ("mysql", "mariadb+pymysql"),
    "duckdb": ("duckdb", "duckdb"),
    "snowflake": ("snowflake", "snowflake"),
}
# Connector arguments snowflake-sqlalchemy refuses in a URL's query (they change where it connects or which local files
# it reads): a warehouse URL is the operator's own configuration, so they go to the connector as connect_args instead,
# with `port` (which the dialect would only honour with the host in the URL's authority) and the booleans typed.
_SNOWFLAKE_CONNECT_ARGS = frozenset(
    {
        "host",
        "port",
        "protocol",
        "token_file_path",
        "private_key_file",
        "ocsp_response_cache_filename",
        "connection_diag_log_path",
        "crl_cache_dir",
        "unsafe_file_write",
        "unsafe_skip_file_permissions_check",
        "unsafe_skip_config_file_permissions_check",
        "crl_unsafe_skip_file_permissions_check",
    }
)
_MISSPELT = {"postgres": "postgresql+psycopg", "postgres+psycopg": "postgresql+psycopg"}  # Heroku and libpq spell it so


def as_engine(warehouse: str | sa.Engine) -> sa.Engine:
    """An engine for a SQLAlchemy URL (the caller disposes of it), or the engine given."""
    if not isinstance(warehouse, str):
        return warehouse
    try:
        url = sa.make_url(warehouse)
    except sa.exc.ArgumentError:
        raise SourceError(
            "The warehouse URL is not a SQLAlchemy URL; write it as "
            "dialect+driver://user:password@host/database, e.g. postgresql+psycopg://..."
        ) from None
    url, connect_args = _connect_args(url)
    try:
        return sa.create_engine(url, connect_args=connect_args) if connect_args else sa.create_engine(url)
    except (sa.exc.NoSuchModuleError, ImportError) as e:
        raise SourceError(_not_installed(url, e)) from None


def _connect_args(url: sa.URL) -> tuple[sa.URL, dict[str, object]]:
    """The URL without the query parameters its dialect refuses there, and those parameters as connector arguments.

    snowflake://user:password@account/database/schema?warehouse=wh&host=127.0.0.1&port=8765&protocol=http connects
    to 127.0.0.1:8765 over HTTP (a local Snowflake such as fakesnow) as account `account`.
    """
    if url.get_backend_name() != "snowflake":
        return url, {}
    moved = {name: value for name, value in url.query.items() if name in _SNOWFLAKE_CONNECT_ARGS}
    args: dict[str, object] = {}
    for name, value in moved.items():
        if isinstance(value, tuple):
            raise SourceError(f"{url.render_as_string(hide_password=True)} gives {name!r} more than once")
        if name == "port":
            if not value.isdigit():
                raise SourceError(f"{url.render_as_string(hide_password=True)}: port={value!r} is not a number")
            args[name] = int(value)
        elif name.startswith(("unsafe_", "crl_unsafe_")):
            if value.lower() not in ("true", "false", "1", "0"):
                raise SourceError(f"{url.render_as_string(hide_password=True)}: {name}={value!r} is not true or false")
            args[name] = value.lower() in ("true", "1")
        else:
            args[name] = value
    # Sessions read in UTC from the start (`SnowflakeDialect.session` then needs no ALTER SESSION).
    args["session_parameters"] = {"TIMEZONE": "UTC"}
    return url.difference_update_query(moved), args


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
    return SourceError(
        f"cannot connect to {engine.url.render_as_string(hide_password=True)}: {driver_reason(error, engine)}"
    )


def driver_reason(error: sa.exc.DBAPIError, engine: sa.Engine) -> str:
    """The driver's own message on one line, without the statement SQLAlchemy appends, or the password."""
    reason = " ".join(str(error.orig).split())
    password = engine.url.password
    return reason.replace(password, "***") if password else reason


def utc_now() -> dt.datetime:
    """Now, as the state and history tables store moments: UTC, without a time zone."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def abridged(text: str) -> str:
    """An error or a rejection's reason at the length the state and history tables keep."""
    return text[:2000]
