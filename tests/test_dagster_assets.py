"""Sync assets materialized in process against the emulator: metadata, checks, run config, failures, ops, automation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from dagster_cdp import (
    CustomerIOResource,
    CustomerIOWarehouseResource,
    build_customerio_sync_asset,
    build_customerio_sync_assets,
    build_customerio_sync_job,
    build_customerio_sync_schedule,
    customerio_sync_asset_spec,
    customerio_sync_automation_condition,
)
from dagster_cdp.dagster.execution import sync_pool
from dagster_cdp import Emulator, FaultConfig
from dagster_cdp import Objects, People, StateStore, SyncDefinition
from tests.polling import until
from tests.warehouses import execute, sqlite_warehouse

PEOPLE = SyncDefinition(name="people", table="people", mapping=People(id_column="user_id"))


@pytest.fixture
def warehouse_url(tmp_path: Path) -> str:
    return sqlite_warehouse(tmp_path, "create table people (user_id integer, email text, plan text)",
                            "insert into people values " + ", ".join(f"({i}, 'p{i}@example.com', 'free')"
                                                                     for i in range(1, 21)))


def _resources(emulator: Emulator, warehouse_url: str, api_key: str = "test-key") -> dict:
    return {
        "customerio": CustomerIOResource(api_key=api_key, base_url=emulator.url, max_retry_seconds=2.0),
        "warehouse": CustomerIOWarehouseResource(url=warehouse_url),
    }


def _run_config(**config: bool) -> dict:
    return {"ops": {"cdp_people": {"config": config}}}


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = result.get_asset_materialization_events()
    return {key: value.value for key, value in event.materialization.metadata.items()}


def test_materialize_reports_what_was_sent_and_a_rerun_sends_nothing(emulator: Emulator, warehouse_url: str) -> None:
    asset = build_customerio_sync_asset(PEOPLE)
    first = dg.materialize([asset], resources=_resources(emulator, warehouse_url))
    metadata = _metadata(first)
    assert {k: metadata[k] for k in ("inserted", "updated", "deleted", "unchanged", "rejected", "dagster/row_count")} == {
        "inserted": 20, "updated": 0, "deleted": 0, "unchanged": 0, "rejected": 0, "dagster/row_count": 20,
    }
    assert metadata["requests"] == emulator.stats()["requests"] >= 1
    assert metadata["bytes"] > 0 and metadata["duration_seconds"] >= 0
    assert "rejections" not in metadata
    assert (metadata["diff"], metadata["diff_reason"]) == ("portable", "the in-warehouse diff is not available on sqlite")
    assert emulator.snapshot()["people"]["7"]["traits"] == {"email": "p7@example.com", "plan": "free"}
    [check] = first.get_asset_check_evaluations()
    assert check.passed

    execute(warehouse_url, "update people set plan = 'pro' where user_id = 3", "delete from people where user_id = 4")
    second = _metadata(dg.materialize([asset], resources=_resources(emulator, warehouse_url)))
    assert (second["inserted"], second["updated"], second["deleted"], second["unchanged"]) == (0, 1, 1, 18)
    assert emulator.snapshot()["people"]["3"]["traits"]["plan"] == "pro"
    assert "4" not in emulator.snapshot()["people"]

    requests = emulator.stats()["requests"]
    third = _metadata(dg.materialize([asset], resources=_resources(emulator, warehouse_url)))
    assert third["requests"] == 0 and emulator.stats()["requests"] == requests


def test_rejections_are_listed_and_fail_the_check_above_its_threshold(emulator: Emulator, warehouse_url: str) -> None:
    execute(warehouse_url, "insert into people values (5, 'twin@example.com', 'free')")  # user 5 twice
    result = dg.materialize([build_customerio_sync_asset(PEOPLE)], resources=_resources(emulator, warehouse_url))
    metadata = _metadata(result)
    assert metadata["rejected"] >= 1 and metadata["inserted"] == 19
    assert metadata["rejections"].startswith("| key | operation | reason |")
    assert "| 5 |" in metadata["rejections"]
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.metadata["rejected"].value == metadata["rejected"]

    lenient = build_customerio_sync_asset(PEOPLE, max_rejected_fraction=0.2)
    [check] = dg.materialize([lenient], resources=_resources(emulator, warehouse_url)).get_asset_check_evaluations()
    assert check.passed


def test_dry_run_observes_the_plan_and_sends_nothing(emulator: Emulator, warehouse_url: str) -> None:
    result = dg.materialize(
        [build_customerio_sync_asset(PEOPLE)], resources=_resources(emulator, warehouse_url), run_config=_run_config(dry_run=True)
    )
    assert result.success
    assert result.get_asset_materialization_events() == []
    [observation] = result.asset_observations_for_node("cdp_people")
    assert observation.metadata["inserted"].value == 20 and observation.metadata["dry_run"].value is True
    assert observation.metadata["samples"].value["insert"]
    assert emulator.stats()["requests"] == 0
    # Nothing was recorded either: the real run still sends everything.
    real = _metadata(dg.materialize([build_customerio_sync_asset(PEOPLE)], resources=_resources(emulator, warehouse_url)))
    assert real["inserted"] == 20


def test_full_resync_through_run_config_resends_every_row(emulator: Emulator, warehouse_url: str) -> None:
    asset = build_customerio_sync_asset(PEOPLE)
    dg.materialize([asset], resources=_resources(emulator, warehouse_url))
    received = emulator.stats()["calls_received"]
    result = dg.materialize([asset], resources=_resources(emulator, warehouse_url), run_config=_run_config(full_resync=True))
    metadata = _metadata(result)
    assert metadata["full_resync"] is True
    assert emulator.stats()["calls_received"] - received == 20


def test_mapping_change_fails_with_the_run_config_that_resends(emulator: Emulator, warehouse_url: str) -> None:
    dg.materialize([build_customerio_sync_asset(PEOPLE)], resources=_resources(emulator, warehouse_url))
    changed = SyncDefinition(name="people", table="people", mapping=People(id_column="user_id", traits=["email"]))
    result = dg.materialize(
        [build_customerio_sync_asset(changed)], resources=_resources(emulator, warehouse_url), raise_on_error=False
    )
    assert not result.success
    assert "full_resync: true" in _failure_text(result)
    resync = dg.materialize(
        [build_customerio_sync_asset(changed)], resources=_resources(emulator, warehouse_url), run_config=_run_config(full_resync=True)
    )
    assert _metadata(resync)["updated"] + _metadata(resync)["inserted"] == 20


def test_deletion_guard_fails_with_the_run_config_that_forces(emulator: Emulator, warehouse_url: str) -> None:
    asset = build_customerio_sync_asset(PEOPLE)
    dg.materialize([asset], resources=_resources(emulator, warehouse_url))
    execute(warehouse_url, "delete from people where user_id > 5")
    result = dg.materialize([asset], resources=_resources(emulator, warehouse_url), raise_on_error=False)
    assert not result.success and "force: true" in _failure_text(result)
    assert len(emulator.snapshot()["people"]) == 20
    forced = dg.materialize([asset], resources=_resources(emulator, warehouse_url), run_config=_run_config(force=True))
    assert _metadata(forced)["deleted"] == 15 and len(emulator.snapshot()["people"]) == 5


def test_undeliverable_run_fails_and_the_next_run_sends_everything_pending(emulator: Emulator, warehouse_url: str) -> None:
    asset = build_customerio_sync_asset(PEOPLE)
    emulator.set_faults(FaultConfig(error_rate=1.0, error_statuses=(503,)))
    result = dg.materialize([asset], resources=_resources(emulator, warehouse_url), raise_on_error=False)
    assert not result.success
    emulator.set_faults(FaultConfig())
    retried = _metadata(dg.materialize([asset], resources=_resources(emulator, warehouse_url)))
    assert retried["inserted"] == 20 and len(emulator.snapshot()["people"]) == 20


def test_the_api_key_never_shows_in_events_or_errors(warehouse_url: str) -> None:
    secret = "sk-do-not-leak-0123456789"
    with Emulator(api_keys={"the-right-key"}) as emulator:
        result = dg.materialize(
            [build_customerio_sync_asset(PEOPLE)], resources=_resources(emulator, warehouse_url, api_key=secret), raise_on_error=False
        )
    assert not result.success
    assert secret not in _failure_text(result)
    assert all(secret not in repr(event) for event in result.all_events)


def test_spec_has_kinds_group_deps_and_a_pool_per_sync() -> None:
    spec = customerio_sync_asset_spec(PEOPLE, deps=["people"], warehouse_kind="postgres")
    asset = build_customerio_sync_asset(PEOPLE, spec=spec)
    assert asset.key == dg.AssetKey("cdp_people")
    assert spec.kinds == {"customerio", "postgres"} and spec.group_name == "customerio"
    assert [dep.asset_key for dep in spec.deps] == [dg.AssetKey("people")]
    assert asset.op.pool == "cdp_sync/people"


def test_build_sync_assets_translation_sets_each_spec(emulator: Emulator, warehouse_url: str) -> None:
    accounts = SyncDefinition(name="accounts", table="people", mapping=Objects(id_column="user_id"))

    def translation(spec: dg.AssetSpec, sync: SyncDefinition) -> dg.AssetSpec:
        return spec.replace_attributes(key=["crm", sync.name], owners=["team:crm"], tags={"kind": sync.mapping.kind})

    assets = build_customerio_sync_assets([PEOPLE, accounts], group_name="growth", translation=translation)
    specs = {asset.key: asset.specs_by_key[asset.key] for asset in assets}
    assert set(specs) == {dg.AssetKey(["crm", "people"]), dg.AssetKey(["crm", "accounts"])}
    assert specs[dg.AssetKey(["crm", "accounts"])].tags["kind"] == "objects"
    assert all(spec.owners == ["team:crm"] and spec.group_name == "growth" for spec in specs.values())
    assert dg.materialize(assets, resources=_resources(emulator, warehouse_url), selection=["crm/people"]).success
    assert len(emulator.snapshot()["people"]) == 20


def test_sync_job_runs_each_sync_as_an_op(emulator: Emulator, warehouse_url: str) -> None:
    execute(warehouse_url, "create table accounts (account_id text, name text)", "insert into accounts values ('a1', 'Acme')")
    from dagster_cdp import Objects

    accounts = SyncDefinition(name="accounts", table="accounts", mapping=Objects(id_column="account_id"))
    job = build_customerio_sync_job([PEOPLE, accounts])
    result = job.execute_in_process(resources=_resources(emulator, warehouse_url))
    assert result.success
    assert result.output_for_node("cdp_sync_people").inserted == 20
    assert result.output_for_node("cdp_sync_accounts").inserted == 1
    assert emulator.snapshot()["objects"]["1"]["a1"] == {"name": "Acme"}
    dry = job.execute_in_process(
        resources=_resources(emulator, warehouse_url),
        run_config={"ops": {"cdp_sync_people": {"config": {"dry_run": True}}}},
    )
    assert dry.output_for_node("cdp_sync_people").dry_run


def test_schedule_targets_every_sync_and_automation_follows_upstream_updates() -> None:
    @dg.asset
    def people() -> None:
        pass

    sync = build_customerio_sync_asset(PEOPLE, spec=customerio_sync_asset_spec(PEOPLE, deps=[people], automation_condition=customerio_sync_automation_condition()))
    schedule = build_customerio_sync_schedule()
    unused = {"customerio": CustomerIOResource(api_key="unused"), "warehouse": CustomerIOWarehouseResource(url="sqlite://")}
    defs = dg.Definitions(assets=[people, sync], schedules=[schedule], resources=unused)
    assert defs.resolve_schedule_def("cdp_syncs_schedule").cron_schedule == "0 * * * *"
    job = defs.resolve_job_def(defs.resolve_schedule_def("cdp_syncs_schedule").job_name)
    assert set(job.asset_layer.selected_asset_keys) == {sync.key}

    instance = dg.DagsterInstance.ephemeral()
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert first.total_requested == 0  # a new sync does not start by itself
    dg.materialize([people], instance=instance)
    after_upstream = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert after_upstream.get_requested_partitions(sync.key) == {None}


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(
        str(event.event_specific_data) for event in result.all_events if event.is_failure
    )


def test_the_check_alone_sends_nothing_and_the_sync_runs_without_its_check(emulator: Emulator, warehouse_url: str) -> None:
    asset = build_customerio_sync_asset(PEOPLE)
    check_only = dg.AssetSelection.checks_for_assets(asset)
    result = dg.materialize([asset], resources=_resources(emulator, warehouse_url), selection=check_only)
    assert result.success and emulator.stats()["requests"] == 0

    without_check = dg.AssetSelection.assets(asset).without_checks()
    result = dg.materialize([asset], resources=_resources(emulator, warehouse_url), selection=without_check)
    assert _metadata(result)["inserted"] == 20 and result.get_asset_check_evaluations() == []


def test_a_held_lock_fails_the_step_saying_what_to_do(emulator: Emulator, warehouse_url: str) -> None:
    impatient = SyncDefinition(name="people", table="people", mapping=People(id_column="user_id"), lock_timeout=0)
    with StateStore(warehouse_url).lock("people", timeout=0):
        result = dg.materialize([build_customerio_sync_asset(impatient)], resources=_resources(emulator, warehouse_url),
                                raise_on_error=False)
    assert not result.success
    assert "Sync 'people' is already running" in _failure_text(result) and "lock_timeout" in _failure_text(result)
    assert emulator.stats()["requests"] == 0


def test_a_pool_limit_of_one_keeps_two_runs_of_a_sync_from_overlapping(emulator: Emulator, warehouse_url: str,
                                                                        tmp_path: Path) -> None:
    """Two processes run one sync on an instance whose pools hold 1: the second waits for the slot.

    Dagster claims a slot by reading, then writing (on SQLite storage without a row lock), so two steps that
    claim at the same instant can both get it. The test therefore starts the second run only once the first
    holds the slot, and keeps the first there by holding the sync's engine lock until the second is queued.
    """
    (tmp_path / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 1\n")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        with StateStore(warehouse_url).lock("people", timeout=0):  # the first run waits here, in its slot
            children = [_pool_child(emulator, warehouse_url, env)]
            [holder] = until(lambda: _pool(instance).active_run_ids)
            children.append(_pool_child(emulator, warehouse_url, env))
            [queued] = until(lambda: _pool(instance).pending_run_ids)
            assert queued != holder and _pool(instance).active_run_ids == {holder}
            assert not instance.get_records_for_run(queued, of_type=dg.DagsterEventType.STEP_START).records
        outputs = [child.communicate(timeout=120)[0] for child in children]
        assert [child.returncode for child in children] == [0, 0], "a run of the sync failed (see its log above)"
        runs = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
        assert [run["run_id"] for run in runs] == [holder, queued]
        spans = [(_step_time(instance, run["run_id"], dg.DagsterEventType.STEP_START),
                  _step_time(instance, run["run_id"], dg.DagsterEventType.STEP_SUCCESS)) for run in runs]
    assert spans[0][1] <= spans[1][0], f"the two runs of the sync overlapped: {spans}"
    assert [run["inserted"] for run in runs] == [20, 0]
    assert emulator.stats()["repeats"] == 0


def _pool_child(emulator: Emulator, warehouse_url: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", POOL_CHILD, emulator.url, warehouse_url], env=env,
                            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, text=True)


def _pool(instance: dg.DagsterInstance):
    return instance.event_log_storage.get_concurrency_info(sync_pool(PEOPLE))


POOL_CHILD = """
import json, sys, types
import dagster as dg
from tests.test_dagster_assets import PEOPLE, _metadata, _resources
from dagster_cdp import build_customerio_sync_asset

emulator = types.SimpleNamespace(url=sys.argv[1])  # _resources needs only its URL
with dg.DagsterInstance.get() as instance:
    result = dg.materialize([build_customerio_sync_asset(PEOPLE)], resources=_resources(emulator, sys.argv[2]), instance=instance)
print(json.dumps({"run_id": result.run_id, "inserted": _metadata(result)["inserted"]}))
"""


def _step_time(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> float:
    [record] = instance.get_records_for_run(run_id, of_type=event_type).records
    return record.event_log_entry.timestamp


def test_syncs_whose_names_differ_only_in_case_are_refused() -> None:
    shouting = SyncDefinition(name="PEOPLE", table="people", mapping=People(id_column="user_id"))
    for build in (build_customerio_sync_assets, build_customerio_sync_job):
        with pytest.raises(ValueError, match="sync names 'people' and 'PEOPLE' differ only in case"):
            build([PEOPLE, shouting])
