"""Fault soak: rounds of random edits synced through an API that errors, resets, times out and loses answers.

After every round Customer.io must hold exactly what the warehouse holds, and calls may be repeated only
where an answer was lost after the request was applied (apply-then-500, or an answer slower than the timeout).
"""

from __future__ import annotations

import random

import pytest

from dagster_cdp.client import PipelinesClient
from dagster_cdp import Emulator, FaultConfig
from dagster_cdp.errors import DeliveryError
from dagster_cdp import SyncDefinition, run_sync
from tests.reliability import SYNCS, World, held
from tests.warehouses import Warehouse

ROUNDS = 5
PADDING = 8_000  # ~60 calls a request, so each sync takes several requests
FAULTS = FaultConfig(error_rate=0.2, error_statuses=(500, 502, 503, 429), reset_rate=0.05,
                     apply_then_error_rate=0.05, delay_rate=0.05, delay_seconds=1.5, seed=11)


def sync_until_done(definition: SyncDefinition, warehouse: Warehouse, client: PipelinesClient) -> int:
    """Re-runs the sync after each failed delivery, as a scheduler would; returns the runs it took."""
    for run in range(1, 21):
        try:
            report = run_sync(definition, warehouse=warehouse.engine, client=client, force=True)
        except DeliveryError:
            continue
        assert report.rejected == []
        return run
    raise AssertionError(f"sync {definition.name!r} never completed under injected faults")


@pytest.mark.soak
@pytest.mark.parametrize("warehouse", ["sqlite", "duckdb", "postgresql"], indirect=True)
def test_random_edits_under_faults_converge_every_round(warehouse: Warehouse, emulator: Emulator,
                                                        record_property: pytest.RecordProperty) -> None:
    world = World(warehouse, random.Random(f"soak-{warehouse.kind}"), people=600, companies=150, memberships=800,
                  padding=PADDING)
    emulator.set_faults(FAULTS)
    runs = 0
    with PipelinesClient("test-key", base_url=emulator.url, timeout=1.0, max_attempts=4,
                         max_retry_seconds=10) as client:
        for round_ in range(ROUNDS):
            if round_:
                world.mutate(0.15)
            runs += sum(sync_until_done(definition, warehouse, client) for definition in SYNCS)
            assert held(emulator.snapshot()) == world.expected(), f"round {round_}"

    stats = emulator.stats()
    faults = stats["faults_injected"]
    lost_answers = faults["apply_then_error"] + faults["delay"]
    calls_per_request = stats["max_calls_per_request"]
    record_property("repeated_calls", stats["repeats"])
    record_property("lost_answers", lost_answers)
    print(f"{warehouse.kind}: {stats['requests']} requests, {runs} sync runs, faults {faults}, "
          f"{stats['repeats']} calls repeated, at most {calls_per_request} calls a request")
    assert faults["error"] > 0 and lost_answers > 0, faults
    # A call comes again only when the request carrying it was applied and its answer lost.
    assert stats["repeats"] <= lost_answers * calls_per_request
