"""A sliding-window limit on requests, shared by a client's threads.

The API allows 3,000 requests per 3 seconds and may drop data past that, so the window is
enforced on the client's side with a small margin for network jitter.
"""

from __future__ import annotations

import threading
import time
from collections import deque


class RateLimiter:
    """At most `limit` request starts in any `period` seconds (plus `margin`)."""

    def __init__(self, limit: int, period: float, *, margin: float = 0.05) -> None:
        if limit < 1 or period <= 0:
            raise ValueError(f"rate limit must be at least 1 request per positive period, got {limit}/{period}s")
        self.limit = limit
        self.period = period + margin
        self._starts: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Block until one more request may start, and count it."""
        with self._lock:
            while True:
                now = time.monotonic()
                while self._starts and now - self._starts[0] >= self.period:
                    self._starts.popleft()
                if len(self._starts) < self.limit:
                    self._starts.append(now)
                    return
                time.sleep(self.period - (now - self._starts[0]))
