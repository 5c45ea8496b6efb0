"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dagster_cdp.emulator import Emulator


@pytest.fixture(scope="session")
def emulator_session() -> Iterator[Emulator]:
    """One emulator for the whole session (accepts any non-empty key); use `emulator` for a clean one."""
    with Emulator() as emu:
        yield emu


@pytest.fixture
def emulator(emulator_session: Emulator) -> Emulator:
    """The session's emulator with its state, stats and faults cleared."""
    emulator_session.reset()
    return emulator_session
