"""The poll scheduler, with real asyncio timing."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest

from backends.engine.monitor import FunctionSource, Monitor, to_thread
from backends.errors import BackendError
from backends.model import CheckReading, SourceState


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
    await mon.start()
    try:
        # the fast source keeps polling while the other hangs: several polls of it before the
        # hanging one is given up on (an order of events, not a wall-clock bound)
        await wait_for(lambda: mon.snapshot.sources["hang"].state is SourceState.DEGRADED, timeout=2.0)
        snap = mon.snapshot
        polls_during_the_hang = len(fast_polls)
        assert polls_during_the_hang >= 2
        st = snap.sources["hang"]
        assert "timed out after 300ms" in st.reason  # the timeout ended it (the source never returns)
        assert st.last_good is None
        # the monitor's own stamps: given up no earlier than its 300 ms timeout after it started
        assert (snap.at - st.last_attempt).total_seconds() >= 0.3 - 0.005
        assert snap.sources["fast"].state is SourceState.OK
        await wait_for(lambda: len(fast_polls) >= polls_during_the_hang + 2, timeout=1.0)  # and goes on
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
        # exponential backoff, capped at interval x 3: gaps between failing polls 0.05, 0.1, 0.15
        gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)][: fail_until - 1]
        assert gaps[1] > gaps[0] * 1.5
        assert 0.14 <= gaps[2] < 0.19
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
        # three polls started, each timing out while its thread still runs for 0.5 s
        await wait_for(lambda: mon.poll_counts["t"] >= 3)
        n = mon.poll_counts["t"]
        mon.refresh()
        mon.refresh()
        await wait_for(lambda: mon.poll_counts["t"] > n)  # and one more after the refreshes
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


# --------------------------------------------------------------------------- recovery as quick as detection


async def test_backoff_is_capped_at_three_intervals_and_fifteen_seconds():
    async def fail():
        raise BackendError("x", "down")

    mon = Monitor([FunctionSource("a", fail, interval=0.5), FunctionSource("b", fail, interval=10),
                   FunctionSource("c", fail, interval=30)], probes=False)
    for _ in range(12):
        for n in ("a", "b", "c"):
            mon._mark_failed(n, "down")
    assert mon._delay("a") == 1.5  # interval x 3
    assert mon._delay("b") == 15.0  # at most 15 s
    assert mon._delay("c") == 30.0  # never under the interval itself


async def test_a_probe_cuts_the_backoff_short_when_the_backend_answers():
    """Between backed-off polls the probe runs every interval; its first success polls now."""
    up = armed = False  # armed: the backend comes back at the next probe (so a probe sees it first)
    probes: list[bool] = []  # each probe: did the backend answer
    recovered_after: list[int] = []  # answered probes before each good poll

    async def poll():
        if not up:
            raise BackendError("s", "connection refused at 127.0.0.1:1")
        recovered_after.append(sum(probes))
        return [reading("s")]

    async def probe():
        nonlocal up
        up = up or armed
        probes.append(up)
        if not up:
            raise ConnectionRefusedError

    src = FunctionSource("s", poll, interval=0.2, timeout=0.5)
    src.probe = probe  # a source's own probe wins over the one probe_for would pick
    mon = Monitor([src])
    await mon.start()
    try:
        await wait_for(lambda: mon.snapshot.sources["s"].failures >= 4, timeout=5)
        assert mon._delay("s") == pytest.approx(0.6)
        await wait_for(lambda: len(probes) >= 2, timeout=3)  # probed between the polls
        armed = True
        await wait_for(lambda: mon.snapshot.sources["s"].state is SourceState.OK, timeout=3)
        # the probe's first answer polled at once: the good poll came after exactly one answered
        # probe (not after the backed-off wait, which no probe answer would precede, nor later)
        assert recovered_after[0] == 1
    finally:
        await mon.stop()


async def test_invalid_answer_hook_degrades_without_backing_off():
    class Lying(FunctionSource):
        def answer_problem(self, readings):
            return "balance is over 2^256 (invalid answer)" if readings[0].value > 10 else ""

    value = 99

    async def poll():
        return [reading("l", value)]

    src = Lying("l", poll, interval=0.05, timeout=1)
    mon = Monitor([src])
    await mon.start()
    try:
        await wait_for(lambda: mon.snapshot.sources["l"].state is SourceState.DEGRADED)
        st = mon.snapshot.sources["l"]
        assert st.reason == "balance is over 2^256 (invalid answer)" and st.last_good is None
        assert mon.snapshot.readings["l"][0].value == 99  # kept, shown stale
        assert mon._delay("l") == 0.05  # the backend answers: no backoff
        value = 1
        await wait_for(lambda: mon.snapshot.sources["l"].state is SourceState.OK)
    finally:
        await mon.stop()


async def test_poll_once_deadline_gives_up_on_a_slow_source():
    async def slow():
        await asyncio.sleep(30)

    mon = Monitor([FunctionSource("slow", slow, timeout=20)])
    t0 = time.monotonic()
    snap = await mon.poll_once(deadline=0.3, shown_deadline=1.0)
    assert time.monotonic() - t0 < 0.6
    assert snap.sources["slow"].state is SourceState.DEGRADED
    assert snap.sources["slow"].reason == "did not answer within 1s"


def _signal_tree(pid: int, sig) -> None:
    """Send `sig` to a server and all its children (a stopped Postgres: postmaster and backends)."""
    import os

    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            os.kill(p.pid, sig)


async def _timed_fault(mon: Monitor, name: str, inject, remove, *, settle_failures: int = 3) -> tuple[float, float]:
    """Inject a fault, wait for DEGRADED, let the backoff reach its cap, remove it; return
    (seconds to DEGRADED, seconds to OK after removal)."""
    await wait_for(lambda: mon.snapshot.sources[name].state is SourceState.OK, timeout=10)
    t0 = time.monotonic()
    inject()
    try:
        await wait_for(lambda: mon.snapshot.sources[name].state is SourceState.DEGRADED, timeout=10)
        detected = time.monotonic() - t0
        await wait_for(lambda: mon.snapshot.sources[name].failures >= settle_failures, timeout=20)
    finally:
        t1 = time.monotonic()
        remove()
    await wait_for(lambda: mon.snapshot.sources[name].state is SourceState.OK, timeout=20)
    return detected, time.monotonic() - t1


@pytest.mark.redis
async def test_redis_recovers_within_one_interval_after_sigstop_and_after_a_restart(redis_server):
    import os
    import signal

    from backends.sources.redis import RedisSource, close_clients

    src = RedisSource("redis.main", redis_server.url, interval=1.0, timeout=0.5)
    mon = Monitor([src])
    await mon.start()
    try:
        pid = redis_server.process.pid
        detected, recovered = await _timed_fault(mon, "redis.main", lambda: os.kill(pid, signal.SIGSTOP),
                                                 lambda: os.kill(pid, signal.SIGCONT))
        print(f"redis SIGSTOP: DEGRADED after {detected:.2f}s, OK {recovered:.2f}s after SIGCONT")
        assert detected <= src.interval + src.timeout + 0.5
        assert recovered <= src.interval + 0.5, recovered
        assert mon.probe_counts["redis.main"] > 0
        # kill and restart on the same port
        detected, recovered = await _timed_fault(mon, "redis.main", redis_server.stop, redis_server.start)
        print(f"redis restart: DEGRADED after {detected:.2f}s, OK {recovered:.2f}s after it was back")
        assert recovered <= src.interval + 0.5, recovered
    finally:
        with contextlib.suppress(ProcessLookupError, AttributeError):
            os.kill(redis_server.process.pid, signal.SIGCONT)
        await mon.stop()
        await close_clients()


@pytest.mark.postgres
async def test_postgres_recovers_within_one_interval_after_sigstop(pg):
    import signal

    from backends.sources.postgres import PostgresSource, close_pools

    src = PostgresSource("postgres.main", pg.dsn, interval=1.0, timeout=0.5)
    mon = Monitor([src])
    await mon.start()
    pid = pg.postmaster_pid()
    try:
        detected, recovered = await _timed_fault(mon, "postgres.main", lambda: _signal_tree(pid, signal.SIGSTOP),
                                                 lambda: _signal_tree(pid, signal.SIGCONT))
        print(f"postgres SIGSTOP: DEGRADED after {detected:.2f}s, OK {recovered:.2f}s after SIGCONT")
        assert detected <= src.interval + src.timeout + 0.5
        assert recovered <= src.interval + 0.5, recovered
        assert mon.probe_counts["postgres.main"] > 0
    finally:
        _signal_tree(pid, signal.SIGCONT)
        await mon.stop()
        await close_pools()


def test_probe_addresses_from_dsns_and_urls():
    from backends.sources.probe import postgres_address, probe_for, redis_address

    assert redis_address("redis://:pw@127.0.0.1:6380/0") == ("127.0.0.1", 6380)
    assert redis_address("unix:///run/redis.sock") == "/run/redis.sock"
    assert redis_address("rediss://127.0.0.1:6380/0") is None  # TLS: no probe
    assert postgres_address("postgresql://u:p@127.0.0.1:5433/db") == ("127.0.0.1", 5433)
    assert postgres_address("postgresql://u@/db?host=/tmp/pg&port=5439") == "/tmp/pg/.s.PGSQL.5439"
    assert postgres_address("host=db.internal port=6543 dbname=x") == ("db.internal", 6543)
    assert postgres_address("postgresql://u@h1:5432,h2:5432/db") is None
    assert probe_for(FunctionSource("x", lambda: None)) is None


async def test_polls_that_end_together_make_one_snapshot():
    """Sources whose polls end within the publish window (0.1 s; at most a quarter of the
    fastest interval) share one snapshot: the rules run and the console updates once, not once
    per source. A window of 0 publishes per poll."""
    async def quick():
        return [reading("q")]

    def sources():
        return [FunctionSource(n, quick, interval=30.0, timeout=1.0) for n in ("a", "b", "c")]

    mon = Monitor(sources())
    assert mon.publish_window == pytest.approx(0.1)
    seen: list = []
    mon.subscribe(seen.append)
    await mon.start()
    try:
        await wait_for(lambda: seen, timeout=5.0)
        assert set(seen[0].readings) == {"a", "b", "c"}  # all three in the first snapshot
        assert mon.publish_count == 1 and len(seen) == 1
    finally:
        await mon.stop()

    each = Monitor(sources(), publish_window=0)
    per_poll: list = []
    each.subscribe(per_poll.append)
    await each.start()
    try:
        await wait_for(lambda: len(per_poll) >= 3, timeout=5.0)
        assert [len(s.readings) for s in per_poll[:3]] == [1, 2, 3]
    finally:
        await each.stop()
    assert Monitor([FunctionSource("f", quick, interval=0.05)]).publish_window == pytest.approx(0.0125)
