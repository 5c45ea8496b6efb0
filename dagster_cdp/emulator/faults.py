"""Fault injection: the emulator misbehaves like a real network and API do, so clients can prove they cope."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class FaultConfig:
    """How often each fault happens, per /v1 request. `FaultConfig()` injects nothing.

    The rates are probabilities of mutually exclusive outcomes, so they must add up to at most 1.
    """

    error_rate: float = 0.0
    """Answer one of `error_statuses` without applying anything (429s carry `Retry-After: 1`)."""
    error_statuses: tuple[int, ...] = (500, 502, 503, 429)
    reset_rate: float = 0.0
    """Close the connection abruptly (TCP reset) without answering and without applying."""
    apply_then_error_rate: float = 0.0
    """Apply the request fully, then answer 500: the client cannot know its calls got through."""
    delay_rate: float = 0.0
    """Handle the request, then sleep `delay_seconds` before answering, to exceed a client's read timeout."""
    delay_seconds: float = 0.0
    seed: int | None = None
    """Seed of the random draws, for reproducible runs."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "error_statuses", tuple(self.error_statuses))
        rates = {
            "error_rate": self.error_rate,
            "reset_rate": self.reset_rate,
            "apply_then_error_rate": self.apply_then_error_rate,
            "delay_rate": self.delay_rate,
        }
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"FaultConfig.{name} is {rate!r}; give a probability between 0 and 1.")
        if sum(rates.values()) > 1.0:
            raise ValueError(
                f"FaultConfig rates add up to {sum(rates.values())}; they are exclusive outcomes, keep their sum <= 1."
            )
        if self.error_rate and not self.error_statuses:
            raise ValueError("FaultConfig.error_statuses is empty; list the statuses to answer when error_rate > 0.")
        for status in self.error_statuses:
            if not isinstance(status, int) or not 400 <= status <= 599:
                raise ValueError(f"FaultConfig.error_statuses has {status!r}; use HTTP error statuses (400-599).")
        if self.delay_seconds < 0:
            raise ValueError(f"FaultConfig.delay_seconds is {self.delay_seconds!r}; use a duration >= 0.")

    @classmethod
    def from_json(cls, data: Any) -> FaultConfig:
        """Build from the JSON body of `POST /admin/faults` (statuses as a list)."""
        if not isinstance(data, dict):
            raise ValueError("The faults body must be a JSON object of FaultConfig fields.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown FaultConfig fields {unknown}; known fields are {sorted(known)}.")
        return cls(**data)


class Fault(enum.Enum):
    NONE = "none"
    ERROR = "error"
    RESET = "reset"
    APPLY_THEN_ERROR = "apply_then_error"
    DELAY = "delay"


class FaultInjector:
    """Draws the fault of each request. Not thread-safe: the emulator calls it under its lock."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._random = random.Random(config.seed)

    def draw(self) -> tuple[Fault, int]:
        """The fault to inject and, for `Fault.ERROR`, the status to answer."""
        config = self.config
        roll = self._random.random()
        for fault, rate in (
            (Fault.ERROR, config.error_rate),
            (Fault.RESET, config.reset_rate),
            (Fault.APPLY_THEN_ERROR, config.apply_then_error_rate),
            (Fault.DELAY, config.delay_rate),
        ):
            if roll < rate:
                status = self._random.choice(config.error_statuses) if fault is Fault.ERROR else 0
                return fault, status
            roll -= rate
        return Fault.NONE, 0
