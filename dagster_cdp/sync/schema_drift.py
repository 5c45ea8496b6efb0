"""Schema drift of mappings that take every column, handled the dbt way (`on_schema_change`).

Such a sync records the column set it sent. When the source's columns change, `fail` (the default) stops
before anything is sent; `append_new_columns` sends the new columns and leaves removed ones alone at
Customer.io; `sync_all_columns` also clears removed ones by sending them as null. Cleared columns stay in
the recorded set (always null) so that rows sent afterwards hash the same and are not sent again for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster_cdp.sync.definition import SyncDefinition
from dagster_cdp.sync.mapping import ValueColumns, value_columns
from dagster_cdp.sync.sync_errors import SchemaChangedError


def resolve_columns(
    definition: SyncDefinition, columns: Sequence[str], recorded: dict[str, Any] | None, *, full_resync: bool
) -> ValueColumns:
    """The columns this run sends and clears, given the column set recorded by the last run (if any)."""
    current = value_columns(definition, columns)
    if not current.all_columns or recorded is None or "columns" not in recorded:
        return current  # a listed mapping, a first run, or state from before column sets were recorded
    before, cleared = recorded["columns"], recorded.get("cleared", [])
    added = [c for c in current.sent if c not in before]
    removed = [c for c in before if c not in current.sent]
    kept_cleared = [c for c in cleared if c not in current.sent]
    if full_resync or not (added or removed):
        return ValueColumns(current.sent, [] if full_resync else kept_cleared, all_columns=True)
    if definition.on_schema_change == "fail":
        raise SchemaChangedError(_message(definition.name, added, removed))
    if definition.on_schema_change == "append_new_columns":
        return ValueColumns(current.sent, kept_cleared, all_columns=True)
    return ValueColumns(current.sent, sorted({*kept_cleared, *removed}), all_columns=True)


def recorded_fields(values: ValueColumns) -> dict[str, Any]:
    """What a run records of its column set (nothing for a mapping that lists its columns)."""
    if not values.all_columns:
        return {}
    return {"columns": sorted(values.sent), "cleared": sorted(values.cleared)}


def _message(sync: str, added: list[str], removed: list[str]) -> str:
    changes = "; ".join(
        part
        for part in (
            f"added {', '.join(map(repr, added))}" if added else "",
            f"removed {', '.join(map(repr, removed))}" if removed else "",
        )
        if part
    )
    return (
        f"Sync {sync!r}: the source's columns changed since the last sync ({changes}), and its mapping sends every "
        f"column. on_schema_change is 'fail', so nothing was sent. Choose what to do and run again: "
        f"on_schema_change='append_new_columns' sends the new columns and leaves removed ones at Customer.io; "
        f"'sync_all_columns' also clears removed ones there (sends them as null once); or list the columns in the "
        f"mapping. (full_resync=True resends every row with the current columns and leaves removed ones.)"
    )
