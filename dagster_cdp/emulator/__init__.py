"""A local emulator of Customer.io's Pipelines API, for tests and for trying dagster-cdp without an account.

Imports nothing from Dagster, so `dagster-cdp emulator` starts fast and anywhere.
"""

from dagster_cdp.emulator.faults import FaultConfig
from dagster_cdp.emulator.server import Emulator

__all__ = ["Emulator", "FaultConfig"]
