"""snowflake:// URLs: the connector arguments snowflake-sqlalchemy refuses in a URL's query reach the connector as
connect_args, so a warehouse URL alone can point at any host (a local fakesnow, a private link); never a password
in an error."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import sqlalchemy as sa

from dagster_cdp import SourceError
from dagster_cdp.sync.database import as_engine


class _Stop(Exception):
    pass


def connector_kwargs(url: str) -> tuple[sa.URL, dict[str, Any]]:
    """The engine's URL and the keyword arguments it would give snowflake.connector.connect (without connecting)."""
    engine = as_engine(url)
    seen: dict[str, Any] = {}

    @sa.event.listens_for(engine, "do_connect")
    def capture(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        seen.update(cparams)
        raise _Stop

    try:
        with pytest.raises(_Stop):
            engine.connect()
        return engine.url, seen
    finally:
        engine.dispose()


def test_host_port_and_protocol_in_the_query_go_to_the_connector() -> None:
    url, kwargs = connector_kwargs(
        "snowflake://ada:s3cret@acme-prod/analytics/marts?warehouse=transforming&role=sync"
        "&host=127.0.0.1&port=8765&protocol=http")
    assert url.render_as_string(hide_password=True) == \
        "snowflake://ada:***@acme-prod/analytics/marts?role=sync&warehouse=transforming"
    assert {k: kwargs[k] for k in ("host", "port", "protocol", "account", "user", "password", "database", "schema",
                                   "warehouse", "role")} == {
        "host": "127.0.0.1", "port": 8765, "protocol": "http", "account": "acme-prod", "user": "ada",
        "password": "s3cret", "database": "analytics", "schema": "marts", "warehouse": "transforming", "role": "sync"}


def test_without_them_the_account_names_the_host() -> None:
    _, kwargs = connector_kwargs("snowflake://ada:s3cret@acme-prod/analytics?warehouse=transforming")
    assert (kwargs["account"], kwargs["host"], str(kwargs["port"])) == (
        "acme-prod", "acme-prod.snowflakecomputing.com", "443")
    assert "protocol" not in kwargs


def test_key_pair_files_and_booleans_are_typed() -> None:
    _, kwargs = connector_kwargs("snowflake://ada@acme-prod/analytics?private_key_file=/keys/rsa.p8"
                                 "&unsafe_skip_file_permissions_check=true&authenticator=SNOWFLAKE_JWT")
    assert kwargs["private_key_file"] == "/keys/rsa.p8"
    assert kwargs["unsafe_skip_file_permissions_check"] is True
    assert kwargs["authenticator"] == "SNOWFLAKE_JWT"


@pytest.mark.parametrize(("query", "expected"), [
    ("port=eighty", "port='eighty' is not a number"),
    ("port=1&port=2", "gives 'port' more than once"),
    ("unsafe_file_write=maybe", "unsafe_file_write='maybe' is not true or false"),
])
def test_a_bad_value_is_named_without_the_password(query: str, expected: str) -> None:
    with pytest.raises(SourceError) as raised:
        as_engine(f"snowflake://ada:s3cret@acme-prod/analytics?host=127.0.0.1&{query}")
    assert expected in str(raised.value)
    assert "s3cret" not in str(raised.value) and "ada:***@acme-prod" in str(raised.value)


def test_other_dialects_keep_their_query() -> None:
    engine = as_engine("postgresql+psycopg://ada:s3cret@/shop?host=/var/run/postgresql&port=5433")
    try:
        assert engine.url.query == {"host": "/var/run/postgresql", "port": "5433"}
    finally:
        engine.dispose()


def test_a_missing_driver_names_the_snowflake_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "snowflake" or m.startswith("snowflake.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "snowflake", None)  # as if snowflake-connector-python were not installed
    with pytest.raises(SourceError) as raised:
        as_engine("snowflake://ada:s3cret@acme-prod/analytics?host=127.0.0.1&port=8765&protocol=http")
    message = str(raised.value)
    assert "pip install 'dagster-cdp[snowflake]' installs the driver of snowflake:// URLs" in message
    assert "s3cret" not in message
