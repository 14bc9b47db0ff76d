"""The clock seam: where the engine and the console read the time.

Every judgement that depends on time (a finding's age and first-seen, an incident's SLA
countdown and timeline stamps, a playbook's "done since this finding appeared" and its
waits, audit timestamps, the brief's window, the rates and ages sources compute) reads
one `Clock` handed down from the `Engine` (`build_engine(config, clock=...)`), never
`time.time()` or `datetime.now()` directly.

- `SystemClock()` is the real one (the default).
- `FakeClock(start)` is for tests: it stands still until `advance(seconds)` or `set(when)`;
  `now()`, `time()` and `monotonic()` move together.

What it does not replace: the event loop's own time (`asyncio.wait_for`, `asyncio.timeout`,
`loop.time()`): timeouts on real I/O are real time. A test waits for those on a condition.
"""

from __future__ import annotations

import threading
import time as _time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What reads the time: wall time as an aware UTC datetime and as epoch seconds, and a
    monotonic counter for intervals and rates."""

    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...

    def time(self) -> float:
        """Seconds since the epoch (what `time.time()` gives): `now().timestamp()`."""
        ...

    def monotonic(self) -> float:
        """Seconds on a counter that never goes back (what `time.monotonic()` gives)."""
        ...


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return _time.time()

    def monotonic(self) -> float:
        return _time.monotonic()

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()

DEFAULT_START = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    """A clock that moves only when told (tests): `advance(seconds)` or `set(when)`.

    `now()`, `time()` and `monotonic()` advance together; the monotonic counter never goes
    back (`set` to an earlier time moves the wall time only). Thread-safe: readers in the
    audit's or a source's thread see a whole step."""

    def __init__(self, start: datetime | float | None = None, *, monotonic: float = 1000.0) -> None:
        self._lock = threading.Lock()
        self._now = _as_datetime(start) if start is not None else DEFAULT_START
        self._mono = float(monotonic)

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def time(self) -> float:
        with self._lock:
            return self._now.timestamp()

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float | timedelta) -> datetime:
        """Move the clock forward (never back) by `seconds`; returns the new now()."""
        s = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
        if s < 0:
            raise ValueError(f"a FakeClock only moves forward (advance({s}))")
        with self._lock:
            self._now += timedelta(seconds=s)
            self._mono += s
            return self._now

    def set(self, when: datetime | float) -> datetime:
        """Set the wall time (a step, as NTP does); the monotonic counter moves forward by
        the step when it is forward and stays when it is back."""
        new = _as_datetime(when)
        with self._lock:
            step = (new - self._now).total_seconds()
            self._now = new
            if step > 0:
                self._mono += step
            return self._now

    def __repr__(self) -> str:
        return f"FakeClock({self._now.isoformat()})"


def _as_datetime(value: datetime | float) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a clock's time is timezone-aware (UTC)")
        return value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), UTC)


def clock_of(obj: object) -> Clock:
    """The clock an engine (or anything with a `clock` attribute) reads, else the system's."""
    c = getattr(obj, "clock", None)
    return c if isinstance(c, Clock) else SYSTEM_CLOCK


def now_fn(clock: Clock | None) -> Callable[[], datetime]:
    """`clock.now` (the system clock's when None): for parts that take a `() -> datetime`."""
    return (clock or SYSTEM_CLOCK).now


__all__ = ["DEFAULT_START", "SYSTEM_CLOCK", "Clock", "FakeClock", "SystemClock", "clock_of", "now_fn"]
