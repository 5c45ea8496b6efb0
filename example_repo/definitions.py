"""Dagster definitions of the example: dbt models built into an embedded DuckDB, and the syncs declared on them.

Environment:
  WAREHOUSE_URL   SQLAlchemy URL the sync assets read (default: the DuckDB file dbt builds, example_repo/warehouse.duckdb)
  CDP_API_KEY     Customer.io Pipelines API key
  CDP_REGION      us | eu (default: the key's region, else us)
  CDP_BASE_URL    overrides the region's host, no /v1 suffix (e.g. the local emulator's URL)

    dagster dev                                   # from the repo root, via workspace.yaml
    dagster asset materialize -m example_repo.definitions --select cdp_people,cdp_accounts,cdp_memberships
    dagster asset materialize -m example_repo.definitions --select cdp_devices,cdp_suppressions,cdp_events,cdp_aliases
"""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets

from dagster_cdp import (
    CustomerIOResource,
    CustomerIOWarehouseResource,
    build_customerio_dbt_sync_assets,
    build_customerio_sync_schedule,
)
from dagster_cdp.dagster.warehouse import warehouse_kind

EXAMPLE_DIR = Path(__file__).resolve().parent
DBT_PROJECT_DIR = EXAMPLE_DIR / "dbt_project"
# dbt (profiles.yml) and the default WAREHOUSE_URL both use this file; dbt runs in a subprocess that inherits it.
os.environ.setdefault("EXAMPLE_DUCKDB_PATH", str(EXAMPLE_DIR / "warehouse.duckdb"))
DUCKDB_PATH = Path(os.environ["EXAMPLE_DUCKDB_PATH"])
DBT_EXECUTABLE = str(Path(sys.executable).with_name("dbt")) if Path(sys.executable).with_name("dbt").exists() else "dbt"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
if os.environ.get("DAGSTER_IS_DEV_CLI") or not dbt_project.manifest_path.exists():
    # A fresh clone has no manifest: parse the project (offline, a few seconds) so the models can be loaded.
    subprocess.run(
        [DBT_EXECUTABLE, "parse", "--quiet", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)],
        check=True,
        env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
    )


@dbt_assets(manifest=dbt_project.manifest_path, project=dbt_project)
def example_dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    """Seeds and models of example_repo/dbt_project, built into the embedded DuckDB."""
    yield from dbt.cli(["build"], context=context).stream()


def _warehouse() -> CustomerIOWarehouseResource:
    if os.environ.get("WAREHOUSE_URL"):
        return CustomerIOWarehouseResource(url=dg.EnvVar("WAREHOUSE_URL"))  # may hold a password: keep it out of the UI
    return CustomerIOWarehouseResource(url=f"duckdb:///{DUCKDB_PATH}")


def _customerio() -> CustomerIOResource:
    return CustomerIOResource(
        api_key=dg.EnvVar("CDP_API_KEY"),
        region=os.environ.get("CDP_REGION") or None,
        base_url=os.environ.get("CDP_BASE_URL") or None,
    )


# cdp_people, cdp_accounts, cdp_memberships, cdp_devices, cdp_suppressions (mirror mode) and cdp_events, cdp_aliases
# (each row sent once): declared in dbt_project/models/models.yml (`meta.cdp`).
sync_assets = build_customerio_dbt_sync_assets(
    example_dbt_models, warehouse_kind=warehouse_kind(os.environ.get("WAREHOUSE_URL") or f"duckdb:///{DUCKDB_PATH}")
)

defs = dg.Definitions(
    assets=[example_dbt_models, *sync_assets],
    schedules=[build_customerio_sync_schedule()],
    resources={
        "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE),
        "customerio": _customerio(),
        "warehouse": _warehouse(),
    },
    # An embedded DuckDB file takes one writer process at a time: run steps one after another in the run's process.
    executor=dg.in_process_executor,
)
