"""The poll scheduler, with real asyncio timing."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from backends.errors import BackendError
from backends.model import CheckReading, SourceState
from backends.monitor import FunctionSource, Monitor, to_thread


def reading(name: str, value=1) -> CheckReading:
    return CheckReading(source=name, name=name, ok=True, value=value)


async def wait_for(pred, timeout: float = 5.0, step: float = 0.01):  # noqa: ASYNC109 - a polling helper
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met within {timeout:.1f}s")


async def test_hanging_source_degrades_within_timeout_and_does_not_delay_others():
    async def hang():
        await asyncio.Event().wait()  # never returns

    fast_polls = []

    async def fast():
        fast_polls.append(time.monotonic())
        return [reading("fast")]

    mon = Monitor(
        [
            FunctionSource("hang", hang, interval=0.05, timeout=0.3),
            FunctionSource("fast", fast, interval=0.05, timeout=1.0),
        ]
    )
    t0 = time.monotonic()
    await mon.start()
    try:
        # the fast source keeps polling while the other hangs
        await wait_for(lambda: len(fast_polls) >= 4, timeout=1.0)
        assert fast_polls[0] - t0 < 0.1
        await wait_for(lambda: mon.snapshot.sources["hang"].state is SourceState.DEGRADED, timeout=1.0)
        degraded_at = time.monotonic() - t0
        st = mon.snapshot.sources["hang"]
        assert "timed out after 300ms" in st.reason
        assert st.last_good is None
        assert 0.25 <= degraded_at < 0.8
        assert mon.snapshot.sources["fast"].state is SourceState.OK
    finally:
        await mon.stop()


async def test_failing_source_backs_off_then_recovers_by_itself():
    calls: list[float] = []
    fail_until = 4

    async def flaky():
        calls.append(time.monotonic())
        if len(calls) < fail_until:
            raise BackendError("flaky", "connection refused at 127.0.0.1:1")
        return [reading("flaky", len(calls))]

    mon = Monitor([FunctionSource("flaky", flaky, interval=0.05, timeout=1.0)], max_backoff=1.0)
    await mon.start()
    try:
        await wait_for(lambda: mon.snapshot.sources["flaky"].failures >= 1, timeout=1.0)
        st = mon.snapshot.sources["flaky"]
        assert st.state is SourceState.DEGRADED
        assert st.reason == "connection refused at 127.0.0.1:1"
        await wait_for(lambda: mon.snapshot.sources["flaky"].state is SourceState.OK, timeout=3.0)
        st = mon.snapshot.sources["flaky"]
        assert st.failures == 0 and st.reason == "" and st.last_good is not None
        assert mon.snapshot.readings["flaky"][0].value == fail_until
        # exponential backoff: gaps between failing polls grow (0.05, 0.1, 0.2)
        gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)][: fail_until - 1]
        assert gaps[1] > gaps[0] * 1.5
        assert gaps[2] > gaps[1] * 1.5
    finally:
        await mon.stop()


async def test_last_good_kept_while_degraded_and_readings_stay_for_staleness():
    n = 0

    async def once_then_fail():
        nonlocal n
        n += 1
        if n == 1:
            return [reading("s", 42)]
        raise RuntimeError("boom")

    mon = Monitor([FunctionSource("s", once_then_fail, interval=0.02, timeout=1.0)])
    await mon.start()
    try:
        await wait_for(lambda: mon.snapshot.sources["s"].state is SourceState.DEGRADED)
        st = mon.snapshot.sources["s"]
        assert st.last_good is not None
        assert st.reason == "RuntimeError: boom"
        assert mon.snapshot.readings["s"][0].value == 42  # stale reading kept, marked by state
    finally:
        await mon.stop()


async def test_never_two_polls_of_one_source_at_once_even_with_threads():
    active = 0
    max_active = 0
    lock = threading.Lock()
    release = threading.Event()

    def blocking():
        nonlocal active, max_active
        with lock:
            active += 1
            max_active = max(max_active, active)
        release.wait(0.5)  # outlives the 0.1 s timeout
        with lock:
            active -= 1
        return [reading("t")]

    async def poll():
        return await to_thread(blocking)

    mon = Monitor([FunctionSource("t", poll, interval=0.01, timeout=0.1)])
    await mon.start()
    try:
        await asyncio.sleep(1.2)
        mon.refresh()
        mon.refresh()
        await asyncio.sleep(0.3)
    finally:
        release.set()
        await mon.stop()
    assert max_active == 1


async def test_refresh_polls_now():
    polls = []

    async def src():
        polls.append(time.monotonic())
        return [reading("r")]

    mon = Monitor([FunctionSource("r", src, interval=30, timeout=1)])
    await mon.start()
    try:
        await wait_for(lambda: len(polls) == 1)
        mon.refresh("r")
        await wait_for(lambda: len(polls) == 2, timeout=1.0)
    finally:
        await mon.stop()


async def test_rules_produce_findings_with_stable_since_and_subscribers_get_snapshots():
    from backends.model import Finding, Severity

    def rules(snap):
        return [Finding(key="k", severity=Severity.P1, source="x", summary="bad")]

    seen = []

    async def src():
        return [reading("x")]

    mon = Monitor([FunctionSource("x", src, interval=0.02, timeout=1)], rules=rules)
    mon.subscribe(seen.append)
    await mon.start()
    try:
        await wait_for(lambda: len(seen) >= 3)
    finally:
        await mon.stop()
    assert all(s.findings[0].key == "k" for s in seen)
    assert len({s.findings[0].since for s in seen}) == 1


async def test_poll_once_respects_timeouts():
    async def hang():
        await asyncio.sleep(10)

    async def ok():
        return [reading("ok")]

    mon = Monitor([FunctionSource("h", hang, timeout=0.2), FunctionSource("ok", ok)])
    t0 = time.monotonic()
    snap = await mon.poll_once()
    assert time.monotonic() - t0 < 1.0
    assert snap.sources["h"].state is SourceState.DEGRADED
    assert snap.sources["ok"].state is SourceState.OK


def test_duplicate_source_names_rejected():
    async def ok():
        return []

    with pytest.raises(ValueError, match="duplicate"):
        Monitor([FunctionSource("a", ok), FunctionSource("a", ok)])
