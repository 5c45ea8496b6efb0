"""dagster-cdp: keep Customer.io in sync with your SQL warehouse, orchestrated by Dagster.

Importing `dagster_cdp.client`, `dagster_cdp.sync` or `dagster_cdp.emulator` never imports Dagster;
the Dagster names exported here are loaded on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"
