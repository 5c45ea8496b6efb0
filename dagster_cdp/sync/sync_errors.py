"""Errors the sync engine raises on purpose; each says what is wrong and what to do about it."""

from __future__ import annotations

from dagster_cdp.errors import CdpError


class SourceError(CdpError):
    """The source cannot be reached, read or synced as mapped (unreachable database, driver not installed,
    missing table or column, unsupported column type, bad definition)."""


class SyncAbortedError(CdpError):
    """A guard stopped the sync before anything was sent (too many deletions, or an empty source)."""


class MappingChangedError(CdpError):
    """The mapping differs from the one the stored state was built with; a full resync must be asked for."""


class SchemaChangedError(MappingChangedError):
    """The source's columns changed under a mapping that takes every column, and on_schema_change is 'fail'."""


class SyncLockedError(CdpError):
    """Another run of the same sync held its lock for longer than the run's `lock_timeout`; nothing was sent."""


class DatabaseFileBusyError(SyncLockedError):
    """Another process kept the DuckDB file open for longer than the run's `lock_timeout`; nothing was sent."""
