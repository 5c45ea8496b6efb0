"""Crashes: the sync process is SIGKILLed at random moments while reading, diffing, sending or writing state.

Each trial edits the source at random, starts the three syncs in a child process, kills it soon after it
enters the phase aimed at, then runs the syncs again: Customer.io must then hold exactly what the warehouse
holds, one more run must send nothing, and only the calls that were in flight may come twice. Where the diff
runs inside the warehouse (DuckDB), reading and diffing are one phase, logged as diffing.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from dagster_cdp.client import PipelinesClient
from dagster_cdp import Emulator, FaultConfig
from tests.reliability import World, held, sync_all
from tests.warehouses import Warehouse

REPO = Path(__file__).resolve().parents[1]
PHASES = ("reading", "diffing", "sending", "writing state")
# How long after entering a phase the kill may come, in seconds: about as long as the phase lasts here.
KILL_WITHIN = {"reading": 0.005, "diffing": 0.03, "sending": 0.04, "writing state": 0.004}
TRIALS = {"sqlite": 10, "duckdb": 8, "postgresql": 6}
MARKER = re.compile(r"sync '(\w+)': (reading|diffing|sending|writing state)")

CHILD = """
import logging, sys
import sqlalchemy as sa
from dagster_cdp.client import PipelinesClient
from dagster_cdp import StateStore
from tests.reliability import sync_all

log = logging.getLogger("dagster_cdp.sync")
log.setLevel(logging.DEBUG)
log.addHandler(logging.StreamHandler(sys.stdout))


class MarkedStore(StateStore):
    def record(self, sync, keys):
        log.debug("sync %r: writing state", sync)
        super().record(sync, keys)


warehouse_url, api_url = sys.argv[1:]
engine = sa.create_engine(warehouse_url)
with PipelinesClient("test-key", base_url=api_url) as client:
    sync_all(engine, client, state=MarkedStore(engine))
print("finished", flush=True)
"""


def run_and_kill(warehouse: Warehouse, emulator: Emulator, rng: random.Random, sync: str, phase: str,
                 tmp: Path) -> str | None:
    """Runs the syncs in a child and SIGKILLs it once `sync` entered `phase`; the phase it died in, or None."""
    warehouse.release()  # DuckDB: one process may hold the file
    emulator.set_faults(FaultConfig(delay_rate=1.0, delay_seconds=0.05))  # so that sending takes a while
    child = subprocess.Popen([sys.executable, "-c", CHILD, warehouse.url, emulator.url], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "TMPDIR": str(tmp)})  # a killed run's work file lands in tmp
    try:
        for line in child.stdout:
            if (match := MARKER.search(line)) and match.groups() == (sync, phase):
                time.sleep(rng.uniform(0, KILL_WITHIN[phase]))
                child.send_signal(signal.SIGKILL)
                break
        output = child.stdout.read()
    finally:
        child.kill()
        child.wait()
        emulator.set_faults(FaultConfig())
    if child.returncode == 0:
        return None  # it finished before the kill
    assert child.returncode == -signal.SIGKILL, f"the sync failed by itself:\n{output[-3000:]}"
    markers = MARKER.findall(line + output)
    return markers[-1][1] if markers else phase


@pytest.mark.soak
@pytest.mark.parametrize("warehouse", list(TRIALS), indirect=True)
def test_killed_syncs_converge_on_the_next_run(warehouse: Warehouse, emulator: Emulator, tmp_path: Path) -> None:
    rng = random.Random(f"crash-{warehouse.kind}")
    world = World(warehouse, rng, people=1200, companies=300, memberships=1500, padding=1000)
    landed: Counter[str] = Counter()
    with PipelinesClient("test-key", base_url=emulator.url) as client:
        for trial in range(TRIALS[warehouse.kind]):
            if trial:
                world.mutate(0.1)
            sync, phase = rng.choice(("people", "companies", "memberships")), PHASES[trial % len(PHASES)]
            died_in = run_and_kill(warehouse, emulator, rng, sync, phase, tmp_path)
            if died_in is not None:
                landed[died_in] += 1
            before = emulator.stats()
            reports = sync_all(warehouse, client)
            assert [r.rejected for r in reports] == [[], [], []]
            assert held(emulator.snapshot()) == world.expected(), f"trial {trial}: killed in {sync} {died_in}"
            after = emulator.stats()
            # Only what was in flight at the kill came again: at most the client's 4 concurrent requests.
            assert after["repeats"] - before["repeats"] <= 4 * after["max_calls_per_request"]
            sync_all(warehouse, client)
            assert emulator.stats()["requests"] == after["requests"], "the state did not record every call"
    print(f"{warehouse.kind}: killed in {dict(landed)}")
    assert sum(landed.values()) >= TRIALS[warehouse.kind] - 1
    assert len(landed) >= 3, landed
