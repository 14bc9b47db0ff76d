"""The poll scheduler.

Each source is polled on its own interval with its own timeout, in its own task:
a source that hangs never delays another. A poll is rescheduled only after the
previous one has finished (never two polls of one source at once, even when a
timed-out poll is still unwinding in a thread). While a source fails, its interval
backs off exponentially up to `max_backoff`; it is marked DEGRADED with the reason
and the time of its last good reading, and it recovers by itself on the next good poll.

The monitor keeps the latest readings per source and publishes a `Snapshot` to
subscribers after every poll (good or bad), with findings computed by the rules
function it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from .errors import describe_exception
from .model import Finding, Reading, Snapshot, SourceState, SourceStatus, utcnow

log = logging.getLogger(__name__)

RulesFn = Callable[[Snapshot], Sequence[Finding]]

# Blocking adapter calls (docker SDK, psutil) run here, not in the loop's small default pool:
# a hung call holds one thread, and the monitor never starts a second poll of its source.
_EXECUTOR = ThreadPoolExecutor(max_workers=32, thread_name_prefix="warroom-io")


async def to_thread(fn, /, *args, **kwargs):
    """Run a blocking call in a thread. Use this (not asyncio.to_thread) in adapters.

    When the awaiting poll is cancelled (timeout), the thread cannot be interrupted;
    this waits for it to finish before letting the cancellation through, so the
    monitor can see the poll is still running and never overlaps two polls.
    """
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    fut = loop.run_in_executor(_EXECUTOR, functools.partial(ctx.run, fn, *args, **kwargs))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await fut
        raise
Subscriber = Callable[[Snapshot], None]


@runtime_checkable
class Source(Protocol):
    """What the monitor polls. Adapters implement this."""

    name: str
    kind: str
    interval: float  # seconds between the end of one poll and the start of the next
    timeout: float  # seconds a poll may take

    async def poll(self) -> Sequence[Reading]: ...


@dataclass
class FunctionSource:
    """A source made from a coroutine function (handy for checks and tests)."""

    name: str
    fn: Callable[[], Awaitable[Sequence[Reading]]]
    interval: float = 5.0
    timeout: float = 5.0
    kind: str = "custom"

    async def poll(self) -> Sequence[Reading]:
        return await self.fn()


class Monitor:
    def __init__(
        self,
        sources: Iterable[Source],
        *,
        rules: RulesFn | None = None,
        max_backoff: float = 60.0,
        backoff_factor: float = 2.0,
    ) -> None:
        self._sources: dict[str, Source] = {}
        for s in sources:
            if s.name in self._sources:
                raise ValueError(f"duplicate source name {s.name!r}")
            self._sources[s.name] = s
        self._rules = rules
        self.max_backoff = max_backoff
        self.backoff_factor = backoff_factor
        self._status: dict[str, SourceStatus] = {
            name: SourceStatus(name=name, kind=s.kind, interval=s.interval)
            for name, s in self._sources.items()
        }
        self._readings: dict[str, tuple[Reading, ...]] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._inflight: dict[str, asyncio.Task] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._subscribers: list[Subscriber] = []
        self._snapshot = Snapshot(sources=dict(self._status))
        self._finding_since: dict[str, object] = {}
        self.poll_counts: dict[str, int] = dict.fromkeys(self._sources, 0)
        self.running = False

    # ------------------------------------------------------------------ public API

    @property
    def sources(self) -> dict[str, Source]:
        return dict(self._sources)

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    async def start(self) -> None:
        if self.running:
            return
        self.running = True
        for name in self._sources:
            self._wake[name] = asyncio.Event()
            self._tasks[name] = asyncio.create_task(self._run(name), name=f"monitor:{name}")

    async def stop(self) -> None:
        self.running = False
        tasks = list(self._tasks.values()) + list(self._inflight.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(t), 2.0) if not t.done() else None
        self._tasks.clear()
        self._inflight.clear()

    def refresh(self, name: str | None = None) -> None:
        """Poll now (all sources, or one) instead of waiting for the interval.

        A poll already in flight is not duplicated: the source polls again right
        after it finishes.
        """
        for n in [name] if name else list(self._wake):
            ev = self._wake.get(n)
            if ev is not None:
                ev.set()

    async def poll_once(self, names: Iterable[str] | None = None) -> Snapshot:
        """Poll the given sources (default all) once, concurrently, and return the snapshot.

        Used by the headless CLI. Respects each source's timeout.
        """
        wanted = list(names) if names is not None else list(self._sources)
        await asyncio.gather(*(self._poll(n) for n in wanted))
        return self._publish()

    # ------------------------------------------------------------------ internals

    async def _run(self, name: str) -> None:
        src = self._sources[name]
        wake = self._wake[name]
        while self.running:
            await self._poll(name)
            self._publish()
            delay = self._delay(name)
            self._status[name] = replace(self._status[name], next_poll_in=delay)
            wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=delay)
        del src

    def _delay(self, name: str) -> float:
        src = self._sources[name]
        failures = self._status[name].failures
        if failures <= 0:
            return src.interval
        return min(self.max_backoff, src.interval * (self.backoff_factor ** (failures - 1)))

    async def _poll(self, name: str) -> None:
        src = self._sources[name]
        # A previous poll that timed out may still be unwinding (e.g. in a thread):
        # never start a second one while it runs.
        prev = self._inflight.get(name)
        if prev is not None and not prev.done():
            await asyncio.wait({prev}, timeout=src.timeout)
            if not prev.done():
                self._mark_failed(name, f"previous poll still running after {src.timeout:g}s timeout")
                return
        started = utcnow()
        t0 = time.perf_counter()
        task = asyncio.ensure_future(src.poll())
        self._inflight[name] = task
        self.poll_counts[name] = self.poll_counts.get(name, 0) + 1
        done, _ = await asyncio.wait({task}, timeout=src.timeout)
        if not done:
            task.cancel()
            self._mark_failed(name, f"timed out after {_fmt_s(src.timeout)}", started)
            return
        self._inflight.pop(name, None)
        exc = task.exception()
        if exc is not None:
            self._mark_failed(name, describe_exception(exc), started)
            return
        readings = task.result()
        if isinstance(readings, Reading):
            readings = (readings,)
        self._readings[name] = tuple(readings or ())
        st = self._status[name]
        self._status[name] = replace(
            st,
            state=SourceState.OK,
            reason="",
            last_good=utcnow(),
            last_attempt=started,
            failures=0,
            poll_ms=(time.perf_counter() - t0) * 1000.0,
        )

    def _mark_failed(self, name: str, reason: str, started=None) -> None:
        st = self._status[name]
        self._status[name] = replace(
            st,
            state=SourceState.DEGRADED,
            reason=reason,
            last_attempt=started or utcnow(),
            failures=st.failures + 1,
        )

    def _publish(self) -> Snapshot:
        snap = Snapshot(at=utcnow(), sources=dict(self._status), readings=dict(self._readings))
        if self._rules is not None:
            try:
                findings = list(self._rules(snap))
            except Exception as exc:  # a broken rule must not stop monitoring
                log.exception("rules failed")
                from .model import Severity

                findings = [
                    Finding(
                        key="warroom:rules",
                        severity=Severity.P2,
                        source="warroom",
                        summary=f"rule evaluation failed: {describe_exception(exc)}",
                    )
                ]
            findings = self._stabilise(findings)
            snap = replace(snap, findings=tuple(sorted(findings, key=Finding.sort_key)))
        self._snapshot = snap
        for fn in list(self._subscribers):
            try:
                fn(snap)
            except Exception:
                log.exception("snapshot subscriber failed")
        return snap

    def _stabilise(self, findings: list[Finding]) -> list[Finding]:
        """Keep `since` stable for a finding whose key persists across polls."""
        out = []
        seen = {}
        for f in findings:
            since = self._finding_since.get(f.key)
            if since is None:
                since = f.since
            seen[f.key] = since
            out.append(replace(f, since=since))
        self._finding_since = seen
        return out


def _fmt_s(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:g}s"
