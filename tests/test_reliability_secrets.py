"""The API key never leaks: not in logs, Dagster's event log, materialization metadata, exceptions or CLI output.

Syncs run with known keys (one sent as HTTP Basic, one as a Bearer token) and succeed, are refused (401),
meet a failing API (503 until they give up) or an unreachable host. Every text they produce is scanned for
the key and for both forms of the Authorization header value.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from dagster_cdp import CustomerIOResource, CustomerIOWarehouseResource, build_customerio_sync_asset
from dagster_cdp.client import PipelinesClient
from dagster_cdp import Emulator, FaultConfig
from dagster_cdp.errors import CdpError
from dagster_cdp import People, SyncDefinition, run_sync
from tests.warehouses import sqlite_warehouse

REPO = Path(__file__).resolve().parents[1]
KEYS = {"basic": "cdp-secret-7f3a9c41e2d8", "bearer": "sk_us_cdpsecret7f3a9c41e2d8"}
SCENARIOS = ("accepted", "refused", "unavailable", "unreachable")
SYNC = SyncDefinition(name="people", table="people", mapping=People(id_column="id"))


def secrets(key: str) -> list[str]:
    """The key and the Authorization header values that carry it."""
    basic = base64.b64encode(f"{key}:".encode()).decode()
    return [key, basic, f"Basic {basic}", f"Bearer {key}"]


def assert_clean(text: str, key: str) -> None:
    assert text, "nothing was captured"
    for secret in secrets(key):
        assert secret not in text, f"{secret!r} leaked"


@pytest.fixture(scope="module")
def refusing_emulator() -> Iterator[Emulator]:
    """An emulator that knows one key only, so every key of these tests gets 401."""
    with Emulator(api_keys={"the-only-right-key"}) as emulator:
        yield emulator


@pytest.fixture
def base_url(request: pytest.FixtureRequest, emulator: Emulator, refusing_emulator: Emulator) -> str:
    scenario = request.param
    if scenario == "unreachable":
        return "http://127.0.0.1:9"
    if scenario == "refused":
        return refusing_emulator.url
    if scenario == "unavailable":
        emulator.set_faults(FaultConfig(error_rate=1.0, error_statuses=(503,)))
    return emulator.url


@pytest.fixture
def warehouse_url(tmp_path: Path) -> str:
    return sqlite_warehouse(tmp_path, "create table people (id integer, email text)",
                            "insert into people values " + ", ".join(f"({i}, 'p{i}@example.com')" for i in range(1, 31)))


def exception_text(error: BaseException) -> str:
    """Message, repr and the full traceback with every chained cause."""
    return "\n".join([str(error), repr(error), "".join(traceback.format_exception(error))])


@pytest.mark.parametrize("base_url", SCENARIOS, indirect=True)
@pytest.mark.parametrize("key", list(KEYS.values()), ids=list(KEYS))
def test_engine_runs_leak_no_key(key: str, base_url: str, warehouse_url: str, caplog: pytest.LogCaptureFixture) -> None:
    texts = []
    with caplog.at_level(logging.DEBUG):
        with PipelinesClient(key, base_url=base_url, max_attempts=2, max_retry_seconds=2) as client:
            texts.append(repr(client))
            try:
                report = run_sync(SYNC, warehouse=warehouse_url, client=client)
                texts.append(repr(report))
            except CdpError as error:
                texts.append(exception_text(error))
    texts.append(caplog.text)
    texts.extend(repr(record.__dict__) for record in caplog.records)
    assert_clean("\n".join(texts), key)


@pytest.mark.parametrize("base_url", SCENARIOS, indirect=True)
@pytest.mark.parametrize("key", list(KEYS.values()), ids=list(KEYS))
def test_dagster_runs_leak_no_key(key: str, base_url: str, warehouse_url: str, caplog: pytest.LogCaptureFixture,
                                  monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    monkeypatch.setenv("CDP_SECRET_TEST_KEY", key)
    customerio = CustomerIOResource(api_key=dg.EnvVar("CDP_SECRET_TEST_KEY"), base_url=base_url, max_retry_seconds=2)

    @dg.asset(required_resource_keys={"customerio"})
    def uses_the_resource(context) -> None:  # noqa: ANN001  (Dagster reads the annotation; none needed)
        resource = context.resources.customerio
        context.log.info(f"resource in use: {resource!r} / {resource}")  # what a user might log

    instance = dg.DagsterInstance.ephemeral()
    with caplog.at_level(logging.DEBUG):
        result = dg.materialize([build_customerio_sync_asset(SYNC), uses_the_resource], instance=instance, raise_on_error=False,
                                resources={"customerio": customerio, "warehouse": CustomerIOWarehouseResource(url=warehouse_url)})
    assert result.success == (request.node.callspec.params["base_url"] == "accepted")
    texts = [caplog.text, repr(instance.get_run_by_id(result.run_id))]
    texts += [repr(entry) for entry in instance.all_logs(result.run_id)]  # every event record of the run
    texts += [repr(event) for event in result.all_events]
    for event in result.get_asset_materialization_events():
        texts += [f"{name}: {value.value!r}" for name, value in event.materialization.metadata.items()]
    texts += [event.event_specific_data.error.to_string() for event in result.all_events
              if event.is_failure and getattr(event.event_specific_data, "error", None)]
    assert_clean("\n".join(texts), key)


CLI_DEFS = """
import dagster as dg
from dagster_cdp import CustomerIOResource, CustomerIOWarehouseResource, build_customerio_sync_asset
from dagster_cdp import People, SyncDefinition

defs = dg.Definitions(
    assets=[build_customerio_sync_asset(SyncDefinition(name="people", table="people", mapping=People(id_column="id")))],
    resources={
        "customerio": CustomerIOResource(api_key=dg.EnvVar("CDP_API_KEY"), base_url=dg.EnvVar("CDP_BASE_URL"),
                                         max_retry_seconds=2),
        "warehouse": CustomerIOWarehouseResource(url=dg.EnvVar("WAREHOUSE_URL")),
    },
)
"""


@pytest.mark.parametrize(("key", "scenario"), [(KEYS["bearer"], "refused"), (KEYS["basic"], "unavailable")],
                         ids=["bearer-refused", "basic-unavailable"])
def test_cli_output_and_dagster_home_leak_no_key(key: str, scenario: str, emulator: Emulator,
                                                 refusing_emulator: Emulator, warehouse_url: str,
                                                 tmp_path: Path) -> None:
    if scenario == "unavailable":
        emulator.set_faults(FaultConfig(error_rate=1.0, error_statuses=(503,)))
    api = refusing_emulator if scenario == "refused" else emulator
    (tmp_path / "defs.py").write_text(CLI_DEFS)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    run = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-f", str(tmp_path / "defs.py"),
         "--select", "cdp_people"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "DAGSTER_HOME": str(home), "CDP_API_KEY": key,
             "CDP_BASE_URL": api.url, "WAREHOUSE_URL": warehouse_url},
    )
    assert run.returncode != 0
    assert "refused the API key" in run.stderr if scenario == "refused" else "HTTP 503" in run.stderr
    stored = "\n".join(path.read_bytes().decode("utf-8", "replace") for path in home.rglob("*") if path.is_file())
    assert_clean(run.stdout + run.stderr + stored, key)
