"""The rejection check: a sync whose rows keep being refused fails a check users see next to the asset."""

from __future__ import annotations

import dagster as dg

from dagster_cdp.sync.report import SyncReport

REJECTION_CHECK_NAME = "rejected_rows"


def rejection_check_spec(asset_key: dg.AssetKey, max_rejected_fraction: float) -> dg.AssetCheckSpec:
    """The check evaluated by every materialization of the sync asset."""
    return dg.AssetCheckSpec(
        name=REJECTION_CHECK_NAME,
        asset=asset_key,
        description=f"Fails when rejected rows exceed {max_rejected_fraction:.2%} of the source rows.",
        metadata={"max_rejected_fraction": max_rejected_fraction},
    )


def rejection_check_result(
    asset_key: dg.AssetKey, report: SyncReport, max_rejected_fraction: float
) -> dg.AssetCheckResult:
    """Passes while rejections stay within `max_rejected_fraction` of the rows read."""
    rejected = len(report.rejected)
    allowed = max_rejected_fraction * report.source_rows
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=REJECTION_CHECK_NAME,
        passed=rejected <= allowed,
        metadata={
            "rejected": rejected,
            "source_rows": report.source_rows,
            "max_rejected_fraction": max_rejected_fraction,
        },
        description=None if rejected <= allowed else f"{rejected:,} rows rejected, more than {allowed:,.1f} allowed.",
    )
