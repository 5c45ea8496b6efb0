"""Progress of a long step of a run (reading the source, sending), logged at a steady interval with its rate and,
when the total is known, the share done and the time left."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

INTERVAL_SECONDS = 5.0


class Progress:
    """Logs `<what> <done> of <total> <unit> (<share>), <rate> <unit>/s, about <eta> left` at most every
    INTERVAL_SECONDS; `total` may be a function, asked at the first line only (a step that ends sooner costs
    nothing), and may be unknown (None): then the line has the count and the rate."""

    def __init__(
        self, log: logging.Logger, what: str, unit: str, total: int | Callable[[], int | None] | None = None
    ) -> None:
        self._log, self._what, self._unit = log, what, unit
        self._total = total
        self._started = self._last = time.monotonic()

    def tick(self, done: int) -> None:
        """Logs the line if INTERVAL_SECONDS passed since the last one (or since the step began)."""
        now = time.monotonic()
        if now - self._last >= INTERVAL_SECONDS:
            self._last = now
            self._log.info(self.line(done, now - self._started))

    def line(self, done: int, elapsed: float) -> str:
        """The line for `done` after `elapsed` seconds."""
        if callable(self._total):
            self._total = self._total()
        total, unit = self._total, self._unit
        rate = done / max(elapsed, 1e-9)
        speed = f"{rate:,.0f}" if rate >= 10 else f"{rate:.2g}"
        speed += f" {unit.split()[-1]}/s"  # "rows/s" for "source rows"
        if total is None:
            return f"{self._what} {done:,} {unit}, {speed}"
        share = f"{done / total:.0%}" if total else "100%"
        left = f", about {_duration(max(total - done, 0) / rate)} left" if rate else ""
        return f"{self._what} {done:,} of {total:,} {unit} ({share}), {speed}{left}"


def _duration(seconds: float) -> str:
    """`1h05m`, `1m30s` or `12s`."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
