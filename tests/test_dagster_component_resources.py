"""A defs.yaml that configures its own resources: it loads and materializes alone, secrets stay out of what Dagster
shows and stores, and resources given in Python win over it."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from tests.components import dg_cli, dg_project, load_defs_yaml, load_error

from dagster_cdp import CustomerIOResource, CustomerIOWarehouseResource
from dagster_cdp.dagster.component import CustomerIOSyncComponent
from dagster_cdp import Emulator

SELF_CONTAINED_YAML = """\
type: dagster_cdp.CustomerIOSyncComponent
attributes:
  customerio:
    api_key: "{{ env.CDP_API_KEY }}"
    base_url: "{{ env.CDP_BASE_URL }}"
  warehouse:
    url: "{{ env.WAREHOUSE_URL }}"
  syncs:
    - {name: people, kind: people, table: people, id: user_id}
    - {name: accounts, kind: objects, table: accounts, id: account_id, object_type: 1}
"""

SECRET_KEY = "sk-secret-4f9c2e7a"


def _duckdb_warehouse(path: Path) -> str:
    with duckdb.connect(str(path)) as con:
        con.execute("create table people (user_id integer, email varchar, plan varchar)")
        con.execute("insert into people values (1, 'ada@example.com', 'pro'), (2, 'alan@example.com', null)")
        con.execute("create table accounts (account_id varchar, name varchar, seats integer)")
        con.execute("insert into accounts values ('acme', 'Acme', 12)")
    return f"duckdb:///{path}"


EXPECTED = {
    "people": {
        "1": {"traits": {"email": "ada@example.com", "plan": "pro"}, "active": False},
        "2": {"traits": {"email": "alan@example.com"}, "active": False},  # a null trait is not kept
    },
    "objects": {"1": {"acme": {"name": "Acme", "seats": 12}}},
}


def _people_and_objects(emulator: Emulator) -> dict[str, object]:
    snapshot = emulator.snapshot()
    return {"people": snapshot["people"], "objects": snapshot["objects"]}


def test_a_defs_yaml_alone_loads_and_materializes_with_dg(tmp_path: Path, emulator: Emulator) -> None:
    (tmp_path / "project").mkdir()
    project = dg_project(tmp_path / "project", SELF_CONTAINED_YAML)
    env = {
        "CDP_API_KEY": SECRET_KEY,
        "CDP_BASE_URL": emulator.url,
        "WAREHOUSE_URL": _duckdb_warehouse(tmp_path / "warehouse.duckdb"),
    }
    assert dg_cli(project, "check", "yaml").returncode == 0
    # In one process: a caller's DuckDB engine (the resource's) closes the file only after the run ends its turn
    # (see README, Guarantees), so two processes could collide in between.
    in_process = '{"execution": {"config": {"in_process": {}}}}'
    launched = dg_cli(project, "launch", "--assets", "*", "--config-json", in_process, env=env)
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    assert _people_and_objects(emulator) == EXPECTED
    assert emulator.stats()["requests"] > 0
    stored = [p for p in project.rglob("*") if p.is_file()]  # run storage, event logs, compute logs
    assert SECRET_KEY not in launched.stdout + launched.stderr
    assert not [p for p in stored if SECRET_KEY.encode() in p.read_bytes()]


def test_base_url_and_region_are_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDP_API_KEY", SECRET_KEY)
    monkeypatch.delenv("CDP_BASE_URL", raising=False)
    monkeypatch.setenv("WAREHOUSE_URL", "duckdb:///warehouse.duckdb")
    component = _component(SELF_CONTAINED_YAML)
    assert component.customerio == CustomerIOResource(api_key=SECRET_KEY)
    assert component.warehouse == CustomerIOWarehouseResource(url="duckdb:///warehouse.duckdb")
    assert SECRET_KEY not in repr(component)
    people = next(a for a in load_defs_yaml(SELF_CONTAINED_YAML).assets if a.key == dg.AssetKey("cdp_people"))
    assert people.specs_by_key[people.key].kinds == {"customerio", "duckdb"}  # from warehouse.url
    assert people.required_resource_keys - {"io_manager"} == set()


def test_resources_given_in_python_win_over_the_defs_yaml(
    tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDP_API_KEY", "key-in-yaml")
    monkeypatch.setenv("CDP_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WAREHOUSE_URL", f"duckdb:///{tmp_path / 'missing' / 'no.duckdb'}")
    monkeypatch.setenv("PYTHON_WAREHOUSE_URL", _duckdb_warehouse(tmp_path / "warehouse.duckdb"))
    defs = dg.Definitions.merge(
        load_defs_yaml(SELF_CONTAINED_YAML),
        dg.Definitions(
            resources={
                "customerio": CustomerIOResource(api_key="key-in-python", base_url=emulator.url),
                "warehouse": CustomerIOWarehouseResource(url=dg.EnvVar("PYTHON_WAREHOUSE_URL")),
            }
        ),
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
        logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert result.success
    assert _people_and_objects(emulator) == EXPECTED
    assert any("customerio: using the CustomerIOResource given in Python" in m for m in logged)


def test_a_defs_yaml_without_resources_still_needs_them_from_python() -> None:
    yaml = "type: dagster_cdp.CustomerIOSyncComponent\nattributes:\n  syncs:\n    - {name: people, kind: people, table: people, id: user_id}\n"  # noqa: E501
    [people] = load_defs_yaml(yaml).assets
    assert people.required_resource_keys - {"io_manager"} == {"customerio", "warehouse"}


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ("  customerio:\n    base_url: http://127.0.0.1:1\n",
         "customerio.CustomerIOResourceYaml.api_key at {path}:3`\n  Field required"),
        ("  customerio:\n    api_key: k\n    base_url: ftp://emulator\n",
         "customerio (CustomerIOResource): base_url: Value error, base_url must start with http:// or https://"),
        ("  warehouse:\n    url: duckdb:///w.duckdb\n    schema: x\n",
         "warehouse.CustomerIOWarehouseResourceYaml.schema at {path}:3`\n  Extra inputs are not permitted"),
    ],
)
def test_a_wrong_resource_field_is_named(resources: str, message: str) -> None:
    yaml = SELF_CONTAINED_YAML.replace(SELF_CONTAINED_YAML[SELF_CONTAINED_YAML.index("  customerio"):
                                                          SELF_CONTAINED_YAML.index("  syncs")], resources)
    error = load_error(yaml)
    located = re.search(r"at (\S+/defs\.yaml):", error)
    assert message.format(path=located[1] if located else "") in error, error


def test_an_unset_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CDP_API_KEY", raising=False)
    monkeypatch.setenv("WAREHOUSE_URL", "duckdb:///warehouse.duckdb")
    assert ("customerio (CustomerIOResource): api_key: '{{ env.CDP_API_KEY }}' rendered to nothing; is the "
            "environment variable it reads set?") in load_error(SELF_CONTAINED_YAML)


def test_a_rendered_value_is_masked_in_a_resource_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDP_API_KEY", SECRET_KEY)
    monkeypatch.setenv("CDP_BASE_URL", SECRET_KEY)  # a secret pasted into the wrong variable
    monkeypatch.setenv("WAREHOUSE_URL", "duckdb:///warehouse.duckdb")
    error = load_error(SELF_CONTAINED_YAML)
    assert "base_url: Value error, base_url must start with http:// or https://, got '***'" in error, error
    assert SECRET_KEY not in error


def test_the_schema_lists_the_resources_fields() -> None:
    schema = CustomerIOSyncComponent.get_model_cls().model_json_schema()
    text = str(schema)
    for field in ("api_key", "region", "base_url", "rate_limit", "state_url", "state_schema"):
        assert f"'{field}'" in text
    assert "a resource given in Python under `customerio` wins" in text


def _component(defs_yaml: str) -> CustomerIOSyncComponent:
    """The component a defs.yaml's attributes resolve to (what `build_defs` sees)."""
    return CustomerIOSyncComponent.resolve_from_yaml(textwrap.dedent(defs_yaml.split("attributes:\n", 1)[1]))


def test_yaml_secrets_do_not_show_in_the_error_of_a_bad_warehouse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDP_API_KEY", SECRET_KEY)
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql+psycopg://cdp:hunter2-secret@127.0.0.1:9/db")
    monkeypatch.delenv("CDP_BASE_URL", raising=False)
    defs = load_defs_yaml(SELF_CONTAINED_YAML)
    result = dg.materialize(list(defs.assets), selection=["cdp_people"], raise_on_error=False)
    assert not result.success
    shown = "\n".join(str(e.event_specific_data) + (e.message or "") for e in result.all_events)
    assert "hunter2-secret" not in shown and SECRET_KEY not in shown

