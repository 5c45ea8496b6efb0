"""Failures: a flaky API (errors, resets, requests applied but answered with an error) and a killed process.

After every step the emulator must hold exactly what the source holds, and nothing may be lost.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from dagster_cdp.client import PipelinesClient
from dagster_cdp import Emulator, FaultConfig
from dagster_cdp.errors import DeliveryError
from dagster_cdp import People, SyncDefinition, run_sync
from tests.reliability import kill_after_requests
from tests.warehouses import Warehouse

COLUMNS = {"id": sa.Integer, "plan": sa.String(20), "padding": sa.Text}
SYNC = SyncDefinition(name="people", table="people", mapping=People(id_column="id"))


def rows(ids: range, plan: str = "free") -> list[dict[str, Any]]:
    """Rows of about 1 KB, so a few thousand make several batch requests."""
    return [{"id": i, "plan": plan, "padding": f"{i:04d}" * 250} for i in ids]


def expected(source: list[dict[str, Any]]) -> dict[str, Any]:
    return {str(r["id"]): {"traits": {"plan": r["plan"], "padding": r["padding"]}, "active": False} for r in source}


def sync_until_done(warehouse: Warehouse, emulator: Emulator) -> int:
    """Runs the sync again after each failed delivery, as a scheduler would; returns how many runs it took."""
    with PipelinesClient("test-key", base_url=emulator.url, max_attempts=3, max_retry_seconds=5) as client:
        for run in range(1, 40):
            try:
                report = run_sync(SYNC, warehouse=warehouse.engine, client=client)
            except DeliveryError:
                continue
            assert report.rejected == []
            return run
    raise AssertionError("the sync never completed under injected faults")


def test_flaky_api_loses_nothing(warehouse: Warehouse, emulator: Emulator) -> None:
    emulator.set_faults(FaultConfig(error_rate=0.2, error_statuses=(500, 502, 503), reset_rate=0.05,
                                    apply_then_error_rate=0.1, seed=7))
    source = rows(range(1, 1201))
    table = warehouse.create("people", COLUMNS, source)
    sync_until_done(warehouse, emulator)
    assert emulator.snapshot()["people"] == expected(source)

    source = [r for r in source if r["id"] % 10 != 0]  # 10% deleted
    source = [{**r, "plan": "pro"} if r["id"] % 3 == 0 else r for r in source]
    source += rows(range(2000, 2100))
    warehouse.replace(table, source)
    sync_until_done(warehouse, emulator)
    assert emulator.snapshot()["people"] == expected(source)
    assert emulator.stats()["faults_injected"]["apply_then_error"] > 0


CHILD = """
import sys
from dagster_cdp.client import PipelinesClient
from dagster_cdp import People, SyncDefinition, run_sync
warehouse_url, api_url = sys.argv[1:]
with PipelinesClient("test-key", base_url=api_url) as client:
    run_sync(SyncDefinition(name="people", table="people", mapping=People(id_column="id")),
             warehouse=warehouse_url, client=client, force=True)
"""


def test_killed_sync_resumes_and_resends_only_what_was_in_flight(warehouse: Warehouse, emulator: Emulator) -> None:
    source = rows(range(1, 4001))
    table = warehouse.create("people", COLUMNS, source)

    for step in ("first sync", "changes"):
        kill_after_requests(warehouse, emulator, CHILD, requests=6)
        acknowledged = warehouse.accepted_keys("people")
        applied = set(emulator.snapshot()["people"])
        stats = emulator.stats()
        assert step != "first sync" or 0 < len(acknowledged) < len(source), "kill landed outside the run"
        with PipelinesClient("test-key", base_url=emulator.url) as client:
            report = run_sync(SYNC, warehouse=warehouse.engine, client=client, force=True)
        assert report.rejected == []
        assert emulator.snapshot()["people"] == expected(source)
        if step == "first sync":
            # Exactly the calls that reached the API unacknowledged come again, recognisably (same messageId).
            assert emulator.stats()["repeats"] - stats["repeats"] == len(applied - acknowledged)
            assert report.inserted == len(source) - len(acknowledged)
        # At most the requests in flight at the kill came again: 4 (the client's concurrency). A request holds
        # ~480 of these rows' updates but a few thousand of the small deletion calls, so count its real size.
        after = emulator.stats()
        assert after["repeats"] - stats["repeats"] <= 4 * after["max_calls_per_request"], after

        source = [{**r, "plan": "pro"} for r in source if r["id"] % 10 != 0]  # every row changes or goes
        warehouse.replace(table, source)
