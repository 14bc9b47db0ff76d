"""The poll scheduler.

Each source is polled on its own interval with its own timeout, in its own task:
a source that hangs never delays another. A poll is rescheduled only after the
previous one has finished (never two polls of one source at once, even when a
timed-out poll is still unwinding in a thread). While a source fails, its interval
backs off exponentially up to its interval x 3 (at most 15 s, never more than
`max_backoff`); it is marked DEGRADED with the reason and the time of its last good
reading, and it recovers by itself on the next good poll. Between the polls of a
failing source a cheap probe (a Redis PING, a Postgres SSLRequest, see
`backends/sources/probe.py`, or the source's own `probe()`) runs twice an interval: when the
backend answers again the source is polled at once, so it recovers within one
interval of its backend's return.

A source that answered, but with something invalid (a chain whose every endpoint
answered too much, a number over 2^256, the wrong chain id), says so through its
`answer_problem(readings)` hook: its readings are kept (shown stale) and it is
marked DEGRADED with that reason, without backing off (the backend is up).

The monitor keeps the latest readings per source and publishes a `Snapshot` to
subscribers after every poll (good or bad), with findings computed by the rules
function it was given.

Time is the engine's clock (`clock=`, backends/clock.py): a snapshot's time, a source's last
good reading and attempt, and when a finding was first seen. A finding the rules built
without a time of its own (the default) is stamped with the clock's now when it first
appears and keeps it while its key persists; one the rules dated from its evidence (an
alert's start) keeps that date. Poll durations (poll_ms) are measured real time.
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
from datetime import datetime
from typing import ParamSpec, Protocol, TypeVar, runtime_checkable

from backends.clock import SYSTEM_CLOCK, Clock
from backends.errors import describe_exception
from backends.model import Finding, Reading, Snapshot, SourceState, SourceStatus, utcnow

log = logging.getLogger(__name__)

RulesFn = Callable[[Snapshot], Sequence[Finding]]

# Blocking adapter calls (docker SDK, psutil) run here, not in the loop's small default pool:
# a hung call holds one thread, and the monitor never starts a second poll of its source.
_EXECUTOR = ThreadPoolExecutor(max_workers=32, thread_name_prefix="warroom-io")


async def to_thread(fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
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
_P = ParamSpec("_P")
_T = TypeVar("_T")


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


PUBLISH_WINDOW = 0.1  # seconds: polls ending this close together make one snapshot


class Monitor:
    def __init__(
        self,
        sources: Iterable[Source],
        *,
        rules: RulesFn | None = None,
        max_backoff: float = 60.0,
        backoff_factor: float = 2.0,
        probes: bool = True,
        clock: Clock | None = None,
        publish_window: float = PUBLISH_WINDOW,
    ) -> None:
        self.clock: Clock = clock or SYSTEM_CLOCK
        # polls that end within this many seconds of each other share one snapshot (one run
        # of the rules, one update of the console); 0: a snapshot per poll
        # (never more than a quarter of the fastest source's interval)
        self._publish_window_wanted = max(0.0, float(publish_window))
        self._publish_handle: asyncio.TimerHandle | None = None
        self.publish_count = 0
        self._sources: dict[str, Source] = {}
        for s in sources:
            if s.name in self._sources:
                raise ValueError(f"duplicate source name {s.name!r}")
            self._sources[s.name] = s
        self._rules = rules
        fastest = min((float(s.interval) for s in self._sources.values()), default=0.0)
        self.publish_window = min(self._publish_window_wanted, fastest / 4)
        self.max_backoff = max_backoff
        self.backoff_factor = backoff_factor
        self._backoff: dict[str, int] = dict.fromkeys(self._sources, 0)  # failures that back off
        self._probes: dict[str, Callable[[], Awaitable[object]] | None] = {}
        if probes:
            from backends.sources.probe import probe_for

            for name, s in self._sources.items():
                try:
                    self._probes[name] = probe_for(s)
                except Exception:  # a probe is an optimisation: never a reason not to monitor
                    log.exception("no probe for %s", name)
        self.probe_counts: dict[str, int] = dict.fromkeys(self._sources, 0)
        self._status: dict[str, SourceStatus] = {
            name: SourceStatus(name=name, kind=s.kind, interval=s.interval)
            for name, s in self._sources.items()
        }
        self._readings: dict[str, tuple[Reading, ...]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._inflight: dict[str, asyncio.Task[Sequence[Reading]]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._subscribers: list[Subscriber] = []
        self._snapshot = Snapshot(at=self.clock.now(), sources=dict(self._status))
        self._finding_since: dict[str, datetime] = {}
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
        if self._publish_handle is not None:
            self._publish_handle.cancel()
            self._publish_handle = None
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

    async def poll_once(self, names: Iterable[str] | None = None, *, deadline: float | None = None,
                        shown_deadline: float | None = None) -> Snapshot:
        """Poll the given sources (default all) once, concurrently, and return the snapshot.

        Used by the headless CLI. Respects each source's timeout; with `deadline` (seconds)
        a source still polling by then is given up on: DEGRADED "did not answer within Ns"
        (N: `shown_deadline`, the caller's whole budget, else `deadline`).
        """
        wanted = list(names) if names is not None else list(self._sources)
        if deadline is None:
            await asyncio.gather(*(self._poll(n) for n in wanted))
            return self._publish()
        tasks = {n: asyncio.ensure_future(self._poll(n)) for n in wanted}
        if tasks:
            await asyncio.wait(tasks.values(), timeout=max(0.0, deadline))
        for n, t in tasks.items():
            if t.done():
                continue
            t.cancel()
            t.add_done_callback(_consume)
            inflight = self._inflight.pop(n, None)
            if inflight is not None:
                inflight.cancel()
                inflight.add_done_callback(_consume)
            self._mark_failed(n, f"did not answer within {_fmt_s(shown_deadline or deadline)}")
        return self._publish()

    # ------------------------------------------------------------------ internals

    async def _run(self, name: str) -> None:
        src = self._sources[name]
        wake = self._wake[name]
        while self.running:
            await self._poll(name)
            self._publish_soon()
            delay = self._delay(name)
            self._status[name] = replace(self._status[name], next_poll_in=delay)
            wake.clear()
            probe = self._probes.get(name)
            if probe is None or delay <= src.interval or self._backoff[name] <= 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=delay)
                continue
            await self._wait_probing(name, probe, delay, wake)

    async def _wait_probing(self, name: str, probe: Callable[[], Awaitable[object]], delay: float,
                            wake: asyncio.Event) -> None:
        """Wait `delay` (a backed-off failing source), probing its backend twice an interval:
        return early when the probe gets an answer (the backend is back) or on refresh()."""
        src = self._sources[name]
        loop = asyncio.get_running_loop()
        end = loop.time() + delay
        step = max(0.05, min(float(src.interval) / 2, 2.5))  # twice an interval: back within one
        limit = min(float(src.timeout), max(0.2, step), 2.0)
        while self.running:
            left = end - loop.time()
            if left <= 0:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=min(step, left))
                return  # refresh(): poll now
            if end - loop.time() <= 0:
                return
            self.probe_counts[name] = self.probe_counts.get(name, 0) + 1
            try:
                async with asyncio.timeout(limit):
                    await probe()
            except asyncio.CancelledError:
                raise
            except BaseException:  # noqa: BLE001 - still down (refused, no answer): keep waiting
                continue
            return  # the backend answers: poll now

    def backoff_cap(self, name: str) -> float:
        """The longest wait between two polls of a failing source: interval x 3, at most
        15 s (never under the interval itself, never over `max_backoff`)."""
        interval = float(self._sources[name].interval)
        return min(self.max_backoff, max(interval, min(interval * 3, 15.0)))

    def _delay(self, name: str) -> float:
        src = self._sources[name]
        failures = self._backoff.get(name, 0)
        if failures <= 0:
            return src.interval
        return min(self.backoff_cap(name), src.interval * (self.backoff_factor ** (failures - 1)))

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
        started = self.clock.now()
        t0 = time.perf_counter()
        task = asyncio.ensure_future(src.poll())
        self._inflight[name] = task
        self.poll_counts[name] = self.poll_counts.get(name, 0) + 1
        done, _ = await asyncio.wait({task}, timeout=src.timeout)
        if not done:
            task.cancel()
            task.add_done_callback(_consume)  # however it ends, nobody is left to read it
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
        problem = _answer_problem(src, self._readings[name])
        if problem:  # it answered, invalidly: readings kept (shown stale), DEGRADED, no backoff
            self._mark_failed(name, problem, started, backoff=False)
            return
        self._backoff[name] = 0
        st = self._status[name]
        self._status[name] = replace(
            st,
            state=SourceState.OK,
            reason="",
            last_good=self.clock.now(),
            last_attempt=started,
            failures=0,
            poll_ms=(time.perf_counter() - t0) * 1000.0,
        )

    def _mark_failed(
        self, name: str, reason: str, started: datetime | None = None, *, backoff: bool = True
    ) -> None:
        if backoff:
            self._backoff[name] = self._backoff.get(name, 0) + 1
        else:
            self._backoff[name] = 0
        st = self._status[name]
        self._status[name] = replace(
            st,
            state=SourceState.DEGRADED,
            reason=reason,
            last_attempt=started or self.clock.now(),
            failures=st.failures + 1,
        )

    def _publish_soon(self) -> None:
        """Publish within `publish_window`: the polls that end in the meantime go with it."""
        if self.publish_window <= 0:
            self._publish()
            return
        if self._publish_handle is None:
            loop = asyncio.get_running_loop()
            self._publish_handle = loop.call_later(self.publish_window, self._publish_due)

    def _publish_due(self) -> None:
        self._publish_handle = None
        if self.running:
            self._publish()

    def _publish(self) -> Snapshot:
        if self._publish_handle is not None:  # published now: a pending one would repeat it
            self._publish_handle.cancel()
            self._publish_handle = None
        self.publish_count += 1
        snap = Snapshot(at=self.clock.now(), sources=dict(self._status), readings=dict(self._readings))
        if self._rules is not None:
            built_from = utcnow()  # real time: a finding dated inside [built_from, built_to] took the default
            try:
                findings = list(self._rules(snap))
            except Exception as exc:  # a broken rule must not stop monitoring
                log.exception("rules failed")
                from backends.model import Severity

                findings = [
                    Finding(
                        key="warroom:rules",
                        severity=Severity.P2,
                        source="warroom",
                        summary=f"rule evaluation failed: {describe_exception(exc)}",
                    )
                ]
            findings = self._stabilise(findings, snap.at, built_from, utcnow())
            snap = replace(snap, findings=tuple(sorted(findings, key=Finding.sort_key)))
        self._snapshot = snap
        for fn in list(self._subscribers):
            try:
                fn(snap)
            except Exception:
                log.exception("snapshot subscriber failed")
        return snap

    def _stabilise(self, findings: list[Finding], now: datetime | None = None,
                   built_from: datetime | None = None, built_to: datetime | None = None) -> list[Finding]:
        """Keep `since` stable for a finding whose key persists across polls. A new finding
        the rules did not date (its `since`/`at` are the default, taken while they ran:
        within [built_from, built_to]) is dated by the monitor's clock (`now`)."""
        def defaulted(t: datetime) -> bool:
            return built_from is not None and built_to is not None and built_from <= t <= built_to

        out = []
        seen = {}
        for f in findings:
            since = self._finding_since.get(f.key)
            if since is None:
                since = now if now is not None and defaulted(f.since) else f.since
            seen[f.key] = since
            at = now if now is not None and defaulted(f.at) else f.at
            out.append(replace(f, since=since, at=at))
        self._finding_since = seen
        return out


def _consume(task: asyncio.Future[_T]) -> None:
    """Read the outcome of a poll given up on (timed out), so that an exception it ends with
    later is not reported as "Task exception was never retrieved" (with a traceback)."""
    if not task.cancelled():
        exc = task.exception()
        if exc is not None:
            log.debug("a poll given up on ended with %s", describe_exception(exc))


def _answer_problem(src: Source, readings: Sequence[Reading]) -> str:
    """The source's own verdict on what it just read ("" when it is a usable answer)."""
    hook = getattr(src, "answer_problem", None)
    if hook is None:
        return ""
    try:
        return str(hook(readings) or "")
    except Exception as exc:  # a broken hook must not stop monitoring
        log.exception("answer_problem of %s failed", getattr(src, "name", src))
        return f"cannot judge the answer: {describe_exception(exc)}"


def _fmt_s(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:g}s"
