"""What `dg scaffold defs dagster_cdp.CustomerIOSyncComponent <path>` writes: a commented defs.yaml that loads."""

from typing import Any

import dagster as dg

STARTING_DEFS_YAML = """\
type: dagster_cdp.CustomerIOSyncComponent

# One asset per sync (cdp_<name>), sending Customer.io only what changed in the table since the last run.
# `dg check yaml` checks each kind's fields. Resources given in Python under the keys `customerio` and
# `warehouse` win over the two blocks below (README: "Declaring syncs").
attributes:
  customerio:
    api_key: "{{ env.CDP_API_KEY }}"     # a source's write key; read from the environment, never shown
    base_url: "{{ env.CDP_BASE_URL }}"   # optional: unset means Customer.io in the region (for an emulator)
    # region: eu                         # us or eu; default: the key's own region
  warehouse:
    url: "{{ env.WAREHOUSE_URL }}"       # a SQLAlchemy URL: duckdb:///..., postgresql+psycopg://..., snowflake://...
    # state_url: ...                     # keep sync state in another database (a read-only warehouse)
  syncs:
    - name: people                       # keys the stored state: renaming a sync starts it over
      kind: people                       # people, objects, relationships, devices, suppressions, events, pages,
                                         # screens, aliases or delivery_reports
      table: people                      # "schema.table", or `query: select ...` instead
      id: user_id                        # the userId column; every other column is sent as a trait
      # mode: mirror                     # mirror sends deletions too; upsert never deletes
      # deps: [people]                   # upstream asset keys, e.g. the dbt model the table comes from
"""


class CustomerIOSyncScaffolder(dg.Scaffolder[Any]):
    """Writes `STARTING_DEFS_YAML`; for `--format python`, Dagster's default scaffold."""

    def scaffold(self, request: dg.ScaffoldRequest[Any]) -> None:
        if request.scaffold_format != "yaml" or request.append:
            dg.scaffold_component(request, {})
            return
        (request.target_path / "defs.yaml").write_text(STARTING_DEFS_YAML)
