"""When syncs run: a ready schedule, and an automation condition that follows upstream (e.g. dbt) updates."""

from __future__ import annotations

import dagster as dg


def customerio_sync_automation_condition() -> dg.AutomationCondition:
    """Runs a sync after any upstream asset updates, once they are all done; never on its own first appearance."""
    return (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("after upstream updates")


def build_customerio_sync_schedule(
    *,
    name: str = "cdp_syncs_schedule",
    cron_schedule: str = "0 * * * *",
    target: dg.AssetSelection | None = None,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
) -> dg.ScheduleDefinition:
    """A schedule for every sync asset (those of kind `customerio`), hourly unless told
    otherwise; start it in the UI."""
    return dg.ScheduleDefinition(
        name=name,
        cron_schedule=cron_schedule,
        target=target or dg.AssetSelection.kind("customerio"),
        default_status=default_status,
        description="Sends what changed in the warehouse to Customer.io.",
    )
