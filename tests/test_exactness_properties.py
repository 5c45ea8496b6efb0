"""Properties on generated tables of mixed types: what arrives equals the warehouse's values exactly, and
neither a column reorder, a session time-zone change nor a switch of diff path sends anything."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagster_cdp.client import PipelinesClient
from dagster_cdp import Emulator
from dagster_cdp import People, StateStore, SyncDefinition, run_sync
from tests.test_exactness import engine_in_zone
from tests.warehouses import KINDS as WAREHOUSE_KINDS
from tests.warehouses import Warehouse

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12)
MOMENTS = st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(2200, 1, 1)).map(lambda d: d.replace(microsecond=0))
# (SQLAlchemy type, values, exact on SQLite): each column kind a generated table may have.
KINDS: dict[str, tuple[Any, Any, bool]] = {
    "integer": (sa.BigInteger(), st.integers(-(2**63), 2**63 - 1), True),
    "decimal": (sa.Numeric(38, 18), st.decimals(Decimal("-1e19"), Decimal("1e19"), places=18,
                                                allow_nan=False, allow_infinity=False), False),
    "text": (sa.String(60), TEXT, True),
    "double": (sa.Float(53), st.integers(-(10**9), 10**9).map(lambda i: i / 64), True),
    "moment": (sa.DateTime(), MOMENTS, True),
    "flag": (sa.Boolean(), st.booleans(), True),
}
TABLES = st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=5, unique=True).flatmap(
    lambda kinds: st.tuples(st.just(kinds), st.lists(
        st.tuples(*(st.one_of(st.none(), KINDS[k][1]) for k in kinds)), min_size=1, max_size=6)))


def _expected(value: Any) -> Any:
    """What Customer.io should hold for a value, in the form `_received` gives: numbers as Decimal."""
    if isinstance(value, dt.datetime):
        return value.isoformat() + "Z"
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return Decimal(str(value)).normalize()
    return value


def _received(traits: dict[str, Any]) -> dict[str, Any]:
    return {k: Decimal(str(v)).normalize() if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool) else v
            for k, v in traits.items()}


def _create(warehouse: Warehouse, name: str, kinds: list[str], rows: list[tuple]) -> None:
    """The table with these rows; DuckDB's decimals bound as text (duckdb-engine binds a Decimal through a float)."""
    columns = {"id": sa.Integer(), **{f"c_{k}": KINDS[k][0] for k in kinds}}
    warehouse.create(name, columns)
    as_text = warehouse.kind == "duckdb" and "decimal" in kinds
    table = sa.table(name, *(sa.column(c, sa.String() if as_text and c == "c_decimal" else kind)
                             for c, kind in columns.items()))
    warehouse.insert(table, [{"id": i, **{f"c_{k}": str(v) if as_text and k == "decimal" and v is not None else v
                                          for k, v in zip(kinds, row)}} for i, row in enumerate(rows)])


@pytest.mark.parametrize("warehouse", [k for k in WAREHOUSE_KINDS if k != "snowflake"], indirect=True)
@settings(max_examples=12, deadline=None, derandomize=True,  # the same tables on every run: CI never flakes
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=TABLES)
def test_what_arrives_is_exact_and_only_payload_changes_are_sent(warehouse: Warehouse, emulator_session: Emulator,
                                                                 table: tuple[list[str], list[tuple]]) -> None:
    _exact_and_only_payload_changes(warehouse, emulator_session, table)


@pytest.mark.parametrize("warehouse", ["snowflake"], indirect=True)
@settings(max_examples=4, deadline=None, derandomize=True,  # a sync on fakesnow takes seconds
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=TABLES)
def test_what_arrives_on_snowflake_is_exact_and_only_payload_changes_are_sent(
        warehouse: Warehouse, emulator_session: Emulator, table: tuple[list[str], list[tuple]]) -> None:
    _exact_and_only_payload_changes(warehouse, emulator_session, table)


def _exact_and_only_payload_changes(warehouse: Warehouse, emulator_session: Emulator,
                                    table: tuple[list[str], list[tuple]]) -> None:
    kinds, rows = table
    if warehouse.kind == "sqlite":
        keep = [i for i, k in enumerate(kinds) if KINDS[k][2]]
        kinds, rows = [kinds[i] for i in keep], [tuple(r[i] for i in keep) for r in rows]
    emulator = emulator_session
    emulator.reset()
    name = f"t_{uuid.uuid4().hex[:8]}"
    sync = SyncDefinition(name=name, table=name, mapping=People(id_column="id"))
    _create(warehouse, name, kinds, rows)
    warehouse.release()
    with PipelinesClient("test-key", base_url=emulator.url, max_retry_seconds=20) as client:
        first = run_sync(sync, warehouse=warehouse.url, client=client)
        assert (first.inserted, first.rejected) == (len(rows), [])
        people = emulator.snapshot()["people"]
        for i, row in enumerate(rows):
            expected = {f"c_{k}": _expected(v) for k, v in zip(kinds, row) if v is not None}
            assert _received(people[str(i)]["traits"]) == expected

        _create(warehouse, name, list(reversed(kinds)), [tuple(reversed(r)) for r in rows])  # another column order
        warehouse.release()
        zones = (("Asia/Karachi", "+05:00"), ("America/Los_Angeles", "-08:00"))
        for zone in zones[:1] if warehouse.kind == "snowflake" else zones:  # fakesnow: always UTC, so one is enough
            engine = engine_in_zone(warehouse.url, warehouse.kind, *zone)
            try:
                again = run_sync(sync, warehouse=engine, client=client, state=StateStore(engine))
            finally:
                engine.dispose()
            assert (again.unchanged, again.rejected) == (len(rows), [])
        if warehouse.kind == "postgresql":  # the same state by another URL spelling: the portable diff
            portable = run_sync(sync, warehouse=warehouse.url, client=client,
                                state=StateStore(warehouse.url + "&application_name=cdp_state"))
            assert (portable.diff, portable.unchanged) == ("portable", len(rows))
    assert emulator.stats()["requests"] == 1

