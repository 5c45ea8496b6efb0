"""What a sync run reports to Dagster: counts, bytes, timing, a readable sample of rejections, and where its row of
the history table is."""

from __future__ import annotations

from typing import Any

import dagster as dg

from dagster_cdp.sync.report import SyncReport

REJECTION_SAMPLE_ROWS = 20


def sync_report_metadata(report: SyncReport) -> dict[str, Any]:
    """Metadata for the materialization (or the dry run's observation) of a sync."""
    metadata: dict[str, Any] = {
        "inserted": report.inserted,
        "updated": report.updated,
        "deleted": report.deleted,
        "unchanged": report.unchanged,
        "deferred": report.deferred,
        "rejected": len(report.rejected),
        "requests": report.requests,
        "bytes": report.bytes,
        "retries": report.retries,
        "duration_seconds": dg.MetadataValue.float(round(report.duration_seconds, 3)),
        "dagster/row_count": report.source_rows,
        "dry_run": report.dry_run,
        "diff": report.diff,
        "full_resync": report.full_resync,
    }
    if report.run_id is not None:
        metadata["cdp/history_run_id"] = report.run_id
        metadata["cdp/history"] = f"SELECT * FROM {report.history_table} WHERE run_id = '{report.run_id}'"
    if report.diff_reason:
        metadata["diff_reason"] = report.diff_reason
    if report.rejected:
        metadata["rejections"] = dg.MetadataValue.md(rejections_markdown(report))
    if report.dry_run and report.samples:  # a preview asked for; real runs keep row data out of the event log
        metadata["samples"] = dg.MetadataValue.json(report.samples)
    return metadata


def rejections_markdown(report: SyncReport) -> str:
    """A table of the first rejected rows with the reason each was refused."""
    lines = ["| key | operation | reason |", "| --- | --- | --- |"]
    for rejection in report.rejected[:REJECTION_SAMPLE_ROWS]:
        lines.append(f"| {_cell(rejection.key)} | {rejection.operation} | {_cell(rejection.reason)} |")
    more = len(report.rejected) - REJECTION_SAMPLE_ROWS
    if more > 0:
        lines.append(f"\n…and {more:,} more rejected rows.")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")[:300]
