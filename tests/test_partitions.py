"""Hash-partitioned syncs: each partition syncs only its keys, with its own state and deletions; as Dagster partitions."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from dagster_cdp import CustomerIOResource, CustomerIOWarehouseResource, build_customerio_sync_asset
from dagster_cdp import Emulator
from dagster_cdp import People, SourceError, SyncDefinition, run_sync
from dagster_cdp.sync.partitions import partition_of
from tests.test_sync_engine import PEOPLE_COLUMNS, expected_people, people_rows
from tests.warehouses import Warehouse

PARTITIONS = 3


def partitioned(partition: int | None) -> SyncDefinition:
    return SyncDefinition(name="people", table="people", mapping=People(id_column="id"), partitions=PARTITIONS,
                          partition=partition)


def test_each_partition_syncs_only_its_keys_and_deletes_only_its_own(
    warehouse: Warehouse, emulator: Emulator, client
) -> None:
    rows = people_rows(range(1, 91))
    table = warehouse.create("people", PEOPLE_COLUMNS, rows)
    expected = [sum(partition_of(str(r["id"]), PARTITIONS) == p for r in rows) for p in range(PARTITIONS)]
    assert all(expected)  # every partition has keys, so the test means something

    reports = [run_sync(partitioned(p), warehouse=warehouse.engine, client=client) for p in range(PARTITIONS)]
    assert [r.inserted for r in reports] == expected  # the warehouse's buckets are Python's
    assert [r.source_rows for r in reports] == expected
    assert [r.sync for r in reports] == ["people[1/3]", "people[2/3]", "people[3/3]"]
    assert emulator.snapshot()["people"] == expected_people(rows)
    assert emulator.stats()["repeats"] == 0

    gone = {r["id"] for r in rows[:6]}  # a few keys in some partitions, under each one's delete guard
    rows = [r for r in rows if r["id"] not in gone]
    warehouse.replace(table, rows)
    again = [run_sync(partitioned(p), warehouse=warehouse.engine, client=client) for p in range(PARTITIONS)]
    assert [r.deleted for r in again] == [sum(partition_of(str(i), PARTITIONS) == p for i in gone)
                                          for p in range(PARTITIONS)]
    assert sum(r.unchanged for r in again) == len(rows)
    assert emulator.snapshot()["people"] == expected_people(rows)

    with pytest.raises(SourceError, match="has 3 partitions: run each one"):
        run_sync(partitioned(None), warehouse=warehouse.engine, client=client)


def test_rows_without_a_key_are_reported_once(warehouse: Warehouse, emulator: Emulator, client) -> None:
    rows = [*people_rows(range(1, 11)), {"id": None, "email": "nobody@example.com", "plan": "free", "seats": 1}]
    warehouse.create("people", PEOPLE_COLUMNS, rows)
    reports = [run_sync(partitioned(p), warehouse=warehouse.engine, client=client) for p in range(PARTITIONS)]
    assert [len(r.rejected) for r in reports] == [1, 0, 0]
    assert sum(r.inserted for r in reports) == 10


def test_dagster_partitions_materialize_one_bucket_each(tmp_path: Path, emulator: Emulator) -> None:
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    rows = people_rows(range(1, 41))
    engine = sa.create_engine(url)
    table = sa.Table("people", sa.MetaData(), *(sa.Column(c, t) for c, t in PEOPLE_COLUMNS.items()))
    table.create(engine)
    with engine.begin() as connection:
        connection.execute(sa.insert(table), rows)
    engine.dispose()
    definition = SyncDefinition(name="people", table="people", mapping=People(id_column="id"), partitions=2)
    asset = build_customerio_sync_asset(definition)
    resources = {"customerio": CustomerIOResource(api_key="test-key", base_url=emulator.url),
                 "warehouse": CustomerIOWarehouseResource(url=url)}
    assert asset.partitions_def.get_partition_keys() == ["0", "1"]

    for key in ("0", "1"):
        result = dg.materialize([asset], partition_key=key, resources=resources)
        assert result.success
        [materialization] = result.asset_materializations_for_node(asset.node_def.name)
        assert materialization.partition == key
    assert emulator.snapshot()["people"] == expected_people(rows)
    assert emulator.stats()["repeats"] == 0

    unpartitioned_run = dg.materialize([asset], resources=resources, raise_on_error=False)
    assert not unpartitioned_run.success
