"""A partitioned sync as Dagster partitions: one static partition per hash bucket of the key.

Each partition is an independent sync of its keys (its own state and deletions), so Dagster's executors can
run them in parallel, on one machine or many. Each partition's client gets `rate_limit / partitions`, so all
partitions running at once stay within the API's limit.
"""

from __future__ import annotations

import dataclasses

import dagster as dg

from dagster_cdp.dagster.resource import CustomerIOResource
from dagster_cdp.sync.definition import SyncDefinition
from dagster_cdp.sync.partitions import rate_limit_share


def sync_partitions_def(definition: SyncDefinition) -> dg.StaticPartitionsDefinition | None:
    """Partition keys "0" to "N-1", or None for an unpartitioned sync."""
    if definition.partitions == 1:
        return None
    return dg.StaticPartitionsDefinition([str(i) for i in range(definition.partitions)])


def partition_run(
    context: dg.AssetExecutionContext | dg.OpExecutionContext,
    definition: SyncDefinition,
    customerio: CustomerIOResource,
) -> tuple[SyncDefinition, CustomerIOResource]:
    """The definition and resource for this run's partition; unchanged for an unpartitioned sync."""
    if definition.partitions == 1:
        return definition, customerio
    if not context.has_partition_key:
        raise dg.Failure(
            description=(
                f"Sync {definition.name!r} has {definition.partitions} partitions: "
                f"launch one partition per run (or a backfill of all {definition.partitions})."
            ),
            allow_retries=False,
        )
    share = rate_limit_share(customerio.rate_limit, definition.partitions)
    fields = {name: getattr(customerio, name) for name in CustomerIOResource.model_fields}
    return (
        dataclasses.replace(definition, partition=int(context.partition_key)),
        CustomerIOResource(**{**fields, "rate_limit": share}),
    )
