"""dagster-cdp: keep Customer.io in sync with your SQL warehouse, orchestrated by Dagster.

Importing `dagster_cdp.client`, `dagster_cdp.sync` or `dagster_cdp.emulator` never imports Dagster;
the Dagster names exported here are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_DAGSTER_NAMES = {
    "CustomerIOResource": "dagster_cdp.dagster",
    "CustomerIOSyncComponent": "dagster_cdp.dagster",
    "SyncRunConfig": "dagster_cdp.dagster",
    "WarehouseResource": "dagster_cdp.dagster",
    "build_sync_asset": "dagster_cdp.dagster",
    "build_sync_assets": "dagster_cdp.dagster",
    "build_sync_job": "dagster_cdp.dagster",
    "build_sync_op": "dagster_cdp.dagster",
    "build_sync_schedule": "dagster_cdp.dagster",
    "cdp_sync_asset": "dagster_cdp.dagster",
    "sync_asset_spec": "dagster_cdp.dagster",
    "sync_automation_condition": "dagster_cdp.dagster",
    "build_dbt_sync_assets": "dagster_cdp.dagster.dbt",
}

__all__ = ["__version__", *_DAGSTER_NAMES]


def __getattr__(name: str) -> Any:
    """Imports Dagster-layer names on first use (PEP 562), so the client and engine stay Dagster-free."""
    module = _DAGSTER_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'dagster_cdp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_DAGSTER_NAMES})
