"""Waiting for a state another thread or process reaches: polled until it holds, never a sleep that orders runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def until(value: Callable[[], Any], seconds: float = 120) -> Any:
    """Polls `value` until it is truthy and returns it; fails after `seconds` (only a hung test gets there)."""
    deadline = time.monotonic() + seconds
    while not (result := value()):
        assert time.monotonic() < deadline, f"timed out after {seconds:g} s waiting for {value}"
        time.sleep(0.05)
    return result
