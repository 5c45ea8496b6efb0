"""What `dg scaffold defs dagster_cdp.CustomerIOSyncComponent <path>` writes: a commented defs.yaml that loads."""

from typing import Any

import dagster as dg

STARTING_DEFS_YAML = """\
type: dagster_cdp.CustomerIOSyncComponent

# One asset per sync (cdp_<name>), sending Customer.io only what changed in the table since the last run.
# The assets use the resources `customerio` (CustomerIOResource) and `warehouse` (WarehouseResource),
# given in Python (README: "Declaring syncs"). `dg check yaml` checks each kind's fields.
attributes:
  # warehouse_kind: postgres       # kind tag shown on the assets (duckdb, snowflake, ...)
  syncs:
    - name: people                 # keys the stored state: renaming a sync starts it over
      kind: people                 # people, objects, relationships, devices, suppressions, events, pages,
                                   # screens, aliases or delivery_reports
      table: people                # "schema.table", or `query: select ...` instead
      id: user_id                  # the userId column; every other column is sent as a trait
      # mode: mirror               # mirror sends deletions too; upsert never deletes
      # deps: [people]             # upstream asset keys, e.g. the dbt model the table comes from
"""


class CustomerIOSyncScaffolder(dg.Scaffolder[Any]):
    """Writes `STARTING_DEFS_YAML`; for `--format python`, Dagster's default scaffold."""

    def scaffold(self, request: dg.ScaffoldRequest[Any]) -> None:
        if request.scaffold_format != "yaml" or request.append:
            dg.scaffold_component(request, {})
            return
        (request.target_path / "defs.yaml").write_text(STARTING_DEFS_YAML)
