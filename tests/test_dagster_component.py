"""CustomerIOSyncComponent loaded from defs.yaml: its assets run, its YAML errors point at the bad line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import dagster as dg
import pytest
from tests.components import load_defs_yaml as _load
from tests.components import dg_cli as _dg
from tests.components import dg_project as _dg_project
from tests.components import load_error as _load_error

from dagster_cdp import CustomerIOResource, CustomerIOSyncComponent, CustomerIOWarehouseResource
from dagster_cdp import Emulator
from tests.warehouses import sqlite_warehouse

REPO = Path(__file__).resolve().parents[1]

DEFS_YAML = """\
type: dagster_cdp.CustomerIOSyncComponent
attributes:
  warehouse_kind: sqlite
  syncs:
    - name: people
      kind: people
      table: people
      id: user_id
      deps: [raw/people]
    - name: accounts
      kind: objects
      table: accounts
      id: account_id
      object_type: "2"
    - name: memberships
      kind: relationships
      query: select user_id, account_id, role from memberships
      user_id: user_id
      object_id: account_id
      object_type: 2
      asset_key: customerio/memberships
"""


@pytest.fixture
def warehouse_url(tmp_path: Path) -> str:
    return sqlite_warehouse(
        tmp_path,
        "create table people (user_id integer, email text)",
        "insert into people values (1, 'ada@example.com'), (2, 'alan@example.com')",
        "create table accounts (account_id text, name text)",
        "insert into accounts values ('acme', 'Acme')",
        "create table memberships (user_id integer, account_id text, role text)",
        "insert into memberships values (1, 'acme', 'admin')",
    )


def test_component_from_yaml_builds_and_runs_sync_assets(emulator: Emulator, warehouse_url: str) -> None:
    defs = _load(DEFS_YAML)
    keys = {asset.key for asset in defs.assets}
    assert keys == {dg.AssetKey("cdp_people"), dg.AssetKey("cdp_accounts"), dg.AssetKey(["customerio", "memberships"])}
    people = next(asset for asset in defs.assets if asset.key == dg.AssetKey("cdp_people"))
    spec = people.specs_by_key[people.key]
    assert spec.kinds == {"customerio", "sqlite"} and spec.group_name == "customerio"
    assert [dep.asset_key for dep in spec.deps] == [dg.AssetKey(["raw", "people"])]

    resources = {
        "customerio": CustomerIOResource(api_key="test-key", base_url=emulator.url),
        "warehouse": CustomerIOWarehouseResource(url=warehouse_url),
    }
    result = dg.materialize(list(defs.assets), resources=resources)
    assert result.success
    snapshot = emulator.snapshot()
    assert set(snapshot["people"]) == {"1", "2"}
    assert snapshot["objects"] == {"2": {"acme": {"name": "Acme"}}}
    assert snapshot["relationships"] == [
        {"userId": "1", "objectTypeId": "2", "groupId": "acme", "attributes": {"role": "admin"}}
    ]


def test_malformed_yaml_points_at_the_bad_line() -> None:
    bad = DEFS_YAML.replace("      id: account_id\n", "      idd: account_id\n")
    error = _load_error(bad)
    assert "defs.yaml:13" in error
    assert "'idd' is not a field of objects syncs" in error


@pytest.mark.parametrize(
    ("replace", "by", "line", "message"),
    [
        ("kind: people", "kind: persons", 6, "kind must be one of people, objects, relationships"),
        ('object_type: "2"', "object_type: two", 14, "object_type must be an integer object type id"),
        ("name: accounts", "name: people", 10, "sync name 'people' is used twice"),
        ("name: accounts", "name: People", 10, "sync names 'people' and 'People' differ only in case"),
        ("      table: people\n", "", 5, "needs exactly one of `table` or `query`"),
        ("      id: user_id\n", "      id: user_id\n      on_schema_change: sometimes\n", 9,
         "'fail', 'append_new_columns' or 'sync_all_columns'"),
        # the engine's own checks of a sync, located like the model's
        ("      id: user_id\n", "      email: email\n", 5, "people identified only by email cannot be deleted"),
        ("      id: account_id\n", "      id: account_id\n      max_row_attempts: 0\n", 10,
         "max_row_attempts must be at least 1"),
    ],
)
def test_each_kind_of_yaml_mistake_is_located(replace: str, by: str, line: int, message: str) -> None:
    error = _load_error(DEFS_YAML.replace(replace, by, 1))
    assert f"defs.yaml:{line}" in error and message in error


class TaggedSyncs(CustomerIOSyncComponent):
    """A user's subclass: tags every sync asset and records each run."""

    ran: ClassVar[list[str]] = []

    def get_asset_spec(self, sync):
        return super().get_asset_spec(sync).replace_attributes(tags={"team": "growth"})

    def execute(self, context, sync, config, customerio, warehouse):
        TaggedSyncs.ran.append(sync.name)
        return super().execute(context, sync, config, customerio, warehouse)


def test_get_asset_spec_and_execute_can_be_overridden(emulator: Emulator, warehouse_url: str) -> None:
    defs = _load(DEFS_YAML.replace("dagster_cdp.CustomerIOSyncComponent", f"{__name__}.TaggedSyncs"))
    assert all(asset.specs_by_key[asset.key].tags["team"] == "growth" for asset in defs.assets)
    resources = {
        "customerio": CustomerIOResource(api_key="test-key", base_url=emulator.url),
        "warehouse": CustomerIOWarehouseResource(url=warehouse_url),
    }
    TaggedSyncs.ran.clear()
    dg.materialize(list(defs.assets), resources=resources, selection=["cdp_people"])
    assert TaggedSyncs.ran == ["people"]
    assert set(emulator.snapshot()["people"]) == {"1", "2"}


def test_dg_lists_the_component() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    listing = subprocess.run(
        [str(Path(sys.executable).with_name("dg")), "list", "components", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert listing.returncode == 0, listing.stderr
    assert "dagster_cdp.CustomerIOSyncComponent" in listing.stdout


def test_importing_the_client_and_engine_does_not_import_dagster() -> None:
    probe = "import sys, dagster_cdp, dagster_cdp.client, dagster_cdp.sync; assert 'dagster' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}).returncode == 0


def test_json_schema_lists_every_kind_with_its_fields() -> None:
    """What editors and `dg check yaml` read: for each kind, exactly the fields the component accepts for it."""
    syncs = CustomerIOSyncComponent.get_model_cls().model_json_schema()["properties"]["syncs"]
    branches = {b["then"]["properties"]["kind"]["const"]: b["then"] for b in syncs["items"]["allOf"]}
    assert set(branches) == {"people", "objects", "relationships", "devices", "suppressions", "events", "pages",
                             "screens", "aliases", "delivery_reports"}
    assert set(syncs["items"]["properties"]["kind"]["enum"]) == set(branches)
    for kind, branch in branches.items():
        assert branch["additionalProperties"] is False, kind
        assert "name" in branch["required"] and "kind" in branch["required"], kind
        for field, spec in branch["properties"].items():
            assert field == "kind" or spec.get("description"), (kind, field)
    assert {"user_id", "object_id", "object_type", "object_type_column", "attributes"} <= set(
        branches["relationships"]["properties"])
    assert {"id", "event", "cursor", "lookback"} <= set(branches["events"]["properties"])
    assert not {"mode", "max_delete_fraction"} & set(branches["events"]["properties"])  # refused when written
    assert "mode" in branches["people"]["properties"] and "user_id" not in branches["people"]["properties"]


@pytest.mark.parametrize(
    ("replace", "by", "line", "message"),
    [
        ("      id: account_id\n", "      idd: account_id\n", 13, "'idd' was unexpected"),
        ("kind: people", "kind: persons", 6, "'persons' is not one of"),
        ("      user_id: user_id\n", "      user: user_id\n", 18, "'user' was unexpected"),
    ],
)
def test_dg_check_yaml_reports_a_wrong_field_with_file_and_line(
    tmp_path: Path, replace: str, by: str, line: int, message: str
) -> None:
    project = _dg_project(tmp_path, DEFS_YAML.replace(replace, by, 1))
    checked = _dg(project, "check", "yaml")
    assert checked.returncode != 0
    output = checked.stdout + checked.stderr
    assert f"defs.yaml:{line}" in output and message in output, output[-2000:]


def test_dg_check_yaml_accepts_a_valid_defs_yaml(tmp_path: Path) -> None:
    checked = _dg(_dg_project(tmp_path, DEFS_YAML), "check", "yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dg_scaffold_defs_writes_a_defs_yaml_that_loads(tmp_path: Path, emulator: Emulator, warehouse_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDP_API_KEY", "test-key")
    monkeypatch.setenv("WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("CDP_BASE_URL", emulator.url)
    project = _dg_project(tmp_path)
    scaffolded = _dg(project, "scaffold", "defs", "dagster_cdp.CustomerIOSyncComponent", "customerio")
    assert scaffolded.returncode == 0, scaffolded.stdout + scaffolded.stderr
    defs_yaml = (project / "src" / "cdp_project" / "defs" / "customerio" / "defs.yaml").read_text()
    assert "# " in defs_yaml  # commented for a first-time user
    assert _dg(project, "check", "yaml").returncode == 0
    defs = _load(defs_yaml)
    assert {asset.key for asset in defs.assets} == {dg.AssetKey("cdp_people")}
    assert dg.materialize(list(defs.assets)).success  # with the resources it configures
    assert set(emulator.snapshot()["people"]) == {"1", "2"}


TRANSLATION_YAML = DEFS_YAML + """\
  translation:
    key: "crm/{{ sync.kind }}_{{ sync.name }}"
    group_name: growth
    description: "{{ sync.name }} kept in sync with Customer.io"
    tags: {team: lifecycle}
    owners: [team:lifecycle]
    kinds: [reverse_etl]
    automation_condition: "{{ automation_condition.on_cron('0 * * * *') }}"
post_processing:
  assets:
    - target: "key:crm/people_people"
      attributes:
        metadata: {tier: gold}
"""


PER_SYNC_YAML = TRANSLATION_YAML.replace("""      asset_key: customerio/memberships
""", """      asset_key: customerio/memberships
      translation:
        group_name: "{{ sync.kind }}_by_{{ sync.object_id }}"  # declared names, as in the YAML
        owners: [team:partnerships]
        tags: {tier: silver}
""")


def test_a_sync_translation_applies_after_the_component_translation() -> None:
    specs = {asset.key: asset.specs_by_key[asset.key] for asset in _load(PER_SYNC_YAML).assets}
    memberships = specs[dg.AssetKey(["crm", "relationships_memberships"])]
    assert (memberships.group_name, memberships.owners) == ("relationships_by_account_id", ["team:partnerships"])
    assert memberships.tags["tier"] == "silver" and memberships.tags["team"] == "lifecycle"  # tags merge
    assert memberships.description == "memberships kept in sync with Customer.io"  # from the component's
    people = specs[dg.AssetKey(["crm", "people_people"])]
    assert (people.group_name, people.owners) == ("growth", ["team:lifecycle"])


def test_translation_and_post_processing_set_the_asset_specs(emulator: Emulator, warehouse_url: str) -> None:
    defs = _load(TRANSLATION_YAML)
    specs = {asset.key: asset.specs_by_key[asset.key] for asset in defs.assets}
    assert set(specs) == {dg.AssetKey(["crm", "people_people"]), dg.AssetKey(["crm", "objects_accounts"]),
                          dg.AssetKey(["crm", "relationships_memberships"])}
    people = specs[dg.AssetKey(["crm", "people_people"])]
    assert people.group_name == "growth"
    assert people.description == "people kept in sync with Customer.io"
    assert people.tags["team"] == "lifecycle" and people.owners == ["team:lifecycle"]
    assert people.kinds == {"reverse_etl"}  # replaced, as Dagster's translation does (tags and metadata merge)
    assert people.automation_condition is not None
    assert people.metadata["tier"] == "gold"
    assert "tier" not in specs[dg.AssetKey(["crm", "objects_accounts"])].metadata
    assert [dep.asset_key for dep in people.deps] == [dg.AssetKey(["raw", "people"])]  # kept from the sync
    resources = {
        "customerio": CustomerIOResource(api_key="test-key", base_url=emulator.url),
        "warehouse": CustomerIOWarehouseResource(url=warehouse_url),
    }
    assert dg.materialize(list(defs.assets), resources=resources, selection=["crm/people_people"]).success
    assert set(emulator.snapshot()["people"]) == {"1", "2"}
