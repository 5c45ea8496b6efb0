"""A sync bounds the memory of an embedded DuckDB warehouse while it runs, and leaves the user's setting as it was."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from dagster_cdp.client import PipelinesClient
from dagster_cdp import Emulator
from dagster_cdp import People, SyncDefinition, run_sync


def memory_limit(engine: sa.Engine) -> str:
    with engine.connect() as connection:
        return connection.exec_driver_sql("SELECT current_setting('memory_limit')").scalar_one()


def test_duckdb_memory_is_bounded_during_the_sync_and_restored_after(tmp_path: Path, emulator: Emulator) -> None:
    engine = sa.create_engine(f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE people AS SELECT range AS id FROM range(1, 4)")
    # The source reports the limit in force while it is read, so the emulator shows what the sync ran with.
    sync = SyncDefinition(name="people", mapping=People(id_column="id"),
                          query="SELECT id, current_setting('memory_limit') AS seen_limit FROM people")
    default = memory_limit(engine)
    with PipelinesClient("test-key", base_url=emulator.url) as client:
        assert run_sync(sync, warehouse=engine, client=client).inserted == 3
        assert memory_limit(engine) == default
        assert emulator.snapshot()["people"]["1"]["traits"]["seen_limit"] == "305.1 MiB"  # 320MB

        with engine.connect() as connection:
            connection.exec_driver_sql("SET memory_limit = '100MB'")  # a lower limit of the user's is kept
        with engine.begin() as connection:
            connection.exec_driver_sql("UPDATE people SET id = id + 10")
        run_sync(sync, warehouse=engine, client=client, force=True)
    assert emulator.snapshot()["people"]["11"]["traits"]["seen_limit"] == "95.3 MiB"
    assert memory_limit(engine) == "95.3 MiB"
    engine.dispose()
