"""Running one sync inside a Dagster step: run config, resources, logs, and errors that say what to launch next."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import dagster as dg
from pydantic import Field

from dagster_cdp.dagster.asset_partitions import partition_run
from dagster_cdp.dagster.checks import REJECTION_CHECK_NAME, rejection_check_result
from dagster_cdp.dagster.metadata import sync_report_metadata
from dagster_cdp.dagster.resource import CustomerIOResource
from dagster_cdp.dagster.warehouse import CustomerIOWarehouseResource
from dagster_cdp.sync.definition import SyncDefinition
from dagster_cdp.sync.engine import run_sync
from dagster_cdp.sync.report import SyncReport
from dagster_cdp.sync.sync_errors import (
    DatabaseFileBusyError,
    MappingChangedError,
    SchemaChangedError,
    SyncAbortedError,
    SyncLockedError,
)


class CustomerIOSyncConfig(dg.Config):
    """Run config of a sync asset or op (Launchpad: `ops: {<op name>: {config: {dry_run: true}}}`)."""

    dry_run: bool = Field(
        False,
        description="Plan only: report what would be sent; send nothing, write no state (only the run's history row).",
    )
    full_resync: bool = Field(
        False,
        description="Resend every row (and deletions for keys gone from the source); needed after a mapping change.",
    )
    force: bool = Field(False, description="Send deletions even when they exceed the sync's max_delete_fraction guard.")


def sync_pool(definition: SyncDefinition) -> str:
    """The concurrency pool of a sync: with a pool limit of 1 the same sync never runs twice at once."""
    return f"cdp_sync/{definition.name}"


def execute_sync(
    context: dg.AssetExecutionContext | dg.OpExecutionContext,
    definition: SyncDefinition,
    *,
    customerio: CustomerIOResource,
    warehouse: CustomerIOWarehouseResource,
    config: CustomerIOSyncConfig,
) -> SyncReport:
    """Runs the sync; a guard, mapping change or held lock becomes a Failure saying what to change."""
    definition, customerio = partition_run(context, definition, customerio)
    with warehouse.connect() as (engine, state):
        client = None if config.dry_run else customerio.get_client()
        try:
            report = run_sync(
                definition,
                warehouse=engine,
                client=client,
                state=state,
                dry_run=config.dry_run,
                full_resync=config.full_resync,
                force=config.force,
                log=context.log,
                dagster_run_id=context.run_id,
            )
        except SyncAbortedError as e:
            raise dg.Failure(
                description=f"{e} In Dagster, launch this step with run config `force: true` to send them anyway.",
                allow_retries=False,
            ) from e
        except SchemaChangedError as e:
            raise dg.Failure(
                description=f"{e} In Dagster, set `on_schema_change` on the sync (YAML, or `meta.cdp` of the dbt "
                "model), or launch this step once with run config `full_resync: true`.",
                allow_retries=False,
            ) from e
        except MappingChangedError as e:
            raise dg.Failure(
                description=f"{e} In Dagster, launch this step with run config `full_resync: true`.",
                allow_retries=False,
            ) from e
        except DatabaseFileBusyError as e:
            raise dg.Failure(description=str(e)) from e  # it says what to do; a sync's pool would not help
        except SyncLockedError as e:
            raise dg.Failure(
                description=f"{e} In Dagster, give the sync a pool limit of 1 (pool {sync_pool(definition)!r}) so "
                f"its runs queue instead, or raise `lock_timeout` in its YAML or dbt `meta.cdp`.",
            ) from e
        finally:
            if client is not None:
                client.close()
    return report


def sync_step(
    context: dg.AssetExecutionContext, run: Callable[[], SyncReport]
) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
    """Runs the sync of the asset being computed (`run`) and yields what Dagster records of it: a materialization
    with the rejection check, or an observation for a dry run (nothing changed in Customer.io). Selected alone, the
    check runs nothing: it is evaluated by the sync."""
    if not context.selected_asset_keys:  # one asset per sync: selected, or only its check is
        checked = ", ".join(c.asset_key.to_user_string() for c in context.assets_def.check_specs)
        context.log.info(f"{checked} is not selected: the rejection check runs with the sync.")
        return
    [key] = context.selected_asset_keys
    report = run()
    fraction = None
    for check in context.assets_def.check_specs:
        if check.name == REJECTION_CHECK_NAME and check.key in context.selected_asset_check_keys:
            fraction = float(check.metadata["max_rejected_fraction"])
    yield from sync_events(key, report, fraction)


def sync_events(
    asset_key: dg.AssetKey, report: SyncReport, max_rejected_fraction: float | None
) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
    """A materialization (with the rejection check unless None) for a real run; an observation for a dry run."""
    metadata = sync_report_metadata(report)
    if report.dry_run:
        yield dg.AssetObservation(asset_key=asset_key, metadata=metadata)
    else:
        checks = (
            [] if max_rejected_fraction is None else [rejection_check_result(asset_key, report, max_rejected_fraction)]
        )
        yield dg.MaterializeResult(asset_key=asset_key, metadata=metadata, check_results=checks)
