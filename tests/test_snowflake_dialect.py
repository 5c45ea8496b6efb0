"""What is particular to Snowflake (on the fakesnow server): the in-warehouse diff's SQL pieces against Python,
names folded to upper case, and the claim lease, whose protocol is checked statement by statement."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
import sqlalchemy as sa

from dagster_cdp import Emulator
from dagster_cdp import People, StateStore, SyncDefinition, run_sync
from dagster_cdp.sync.dialects import dialect_of
from dagster_cdp.sync.locks import ClaimLease, lease_table
from dagster_cdp.sync.partitions import partition_of
from tests.warehouses import KINDS, Warehouse

snowflake = pytest.mark.parametrize("warehouse", ["snowflake"], indirect=True)
KEYS = ["1", "42", "", "user@example.com", "héllo wörld", "日本語", "a'b", "x" * 300, "0" * 7, "ffffff"]


def _values(warehouse: Warehouse, sql: str) -> list:
    with warehouse.engine.connect() as connection:
        return [row[0] for row in connection.exec_driver_sql(sql)]


def _union(values: list[str], expression: str) -> str:
    rows = " UNION ALL ".join(f"SELECT {i} AS n, {_text(v)} AS v" for i, v in enumerate(values))
    return f"SELECT {expression} FROM ({rows}) AS t ORDER BY n"


@snowflake
def test_the_bucket_is_pythons_28_bit_md5_prefix(warehouse: Warehouse) -> None:
    dialect = dialect_of(warehouse.engine)
    buckets = _values(warehouse, _union(KEYS, dialect.bucket("t.v")))
    assert buckets == [int(hashlib.md5(k.encode()).hexdigest()[:7], 16) for k in KEYS]
    assert [b % 7 for b in buckets] == [partition_of(k, 7) for k in KEYS]


@snowflake
def test_the_row_hash_tells_null_from_empty_text_and_the_key_parts_read_back(warehouse: Warehouse) -> None:
    dialect = dialect_of(warehouse.engine)
    array = _text('["k1", null, "2"]')
    [row] = _rows(warehouse, ", ".join([dialect.row_hash(_text('["v"]'), ["NULL"]),
                                        *(dialect.row_hash(_text('["v"]'), [_text(v)]) for v in ("", "null", "x")),
                                        *(dialect.json_part(array, i) for i in range(3))]))
    assert len(set(row[:4])) == 4 and all(len(h) == 32 for h in row[:4])
    assert tuple(row[4:]) == ("k1", None, "2")


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _rows(warehouse: Warehouse, columns: str) -> list:
    with warehouse.engine.connect() as connection:
        return list(connection.exec_driver_sql(f"SELECT {columns}"))


@snowflake
def test_upper_case_and_mixed_case_columns_sync_by_their_names(warehouse: Warehouse, emulator: Emulator, client,
                                                               tmp_path: Path) -> None:
    """A table created with unquoted names (stored ID, EMAIL) is mapped as id, email; a quoted mixed-case
    "Plan" as Plan; both diffs agree."""
    with warehouse.engine.begin() as connection:
        connection.exec_driver_sql('CREATE TABLE people (id INTEGER, email VARCHAR, "Plan" VARCHAR, '
                                   'signed_up TIMESTAMP_NTZ)')
        connection.exec_driver_sql("INSERT INTO people VALUES (1, 'a@x', 'free', '2024-01-02 03:04:05'), "
                                   "(2, 'b@x', NULL, NULL)")
    mapping = People(id_column="id", traits=["email", "Plan", "signed_up"])
    in_warehouse = SyncDefinition(name="people", table="people", mapping=mapping)
    portable = SyncDefinition(name="people_portable", table="people", mapping=mapping)
    reports = [run_sync(in_warehouse, warehouse=warehouse.engine, client=client),
               run_sync(portable, warehouse=warehouse.engine, client=client,
                        state=StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}"))]
    assert [(r.inserted, r.diff) for r in reports] == [(2, "in-warehouse"), (2, "portable")]
    assert emulator.snapshot()["people"]["1"]["traits"] == {"email": "a@x", "Plan": "free",
                                                            "signed_up": "2024-01-02T03:04:05Z"}
    assert emulator.snapshot()["people"]["2"]["traits"] == {"email": "b@x"}
    with warehouse.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE people SET \"Plan\" = 'pro' WHERE id = 2")
    again = run_sync(in_warehouse, warehouse=warehouse.engine, client=client)
    assert (again.updated, again.unchanged) == (1, 1)
    assert emulator.snapshot()["people"]["2"]["traits"] == {"email": "b@x", "Plan": "pro"}


@pytest.mark.parametrize("warehouse", KINDS, indirect=True)
def test_a_claim_lease_is_held_by_one_claimant_whatever_the_interleaving(warehouse: Warehouse) -> None:
    """The claim lease takes no primary key, so it runs anywhere; its steps interleaved as two runs could."""
    table = lease_table(sa.MetaData(), "cdp_locks")
    with (ClaimLease(warehouse.engine, table, "cdp_state|people", "people") as a,
          ClaimLease(warehouse.engine, table, "cdp_state|people", "people") as b):
        assert a._take() and not b._take()  # one after the other: the second sees the first's claim
        assert _claims(warehouse, table) == [a._holder]  # and withdrew its own
        with warehouse.engine.begin() as connection:  # both claims committed before either reads
            connection.execute(sa.insert(a._table).values(lock_key=b._key, sync="people", holder=b._holder,
                                                          expires_at=dt.datetime(9999, 1, 1)))
        with warehouse.engine.begin() as connection:
            connection.execute(sa.delete(a._table).where(a._table.c.holder == a._holder))
        assert not a._take()  # a's fresh claim meets b's: a withdraws
        assert _claims(warehouse, table) == [b._holder]
        with warehouse.engine.begin() as connection:  # b's claim expired long ago: its run died
            connection.execute(sa.update(a._table).values(expires_at=dt.datetime(2000, 1, 1)))
        assert a.acquire(0)
        assert _claims(warehouse, table) == [a._holder]
        assert not b.acquire(0)
        a.release()
        assert _claims(warehouse, table) == []
        assert b.acquire(0)
        b.release()


def _claims(warehouse: Warehouse, table: sa.Table) -> list[str]:
    with warehouse.engine.connect() as connection:
        return list(connection.execute(sa.select(table.c.holder)).scalars())
