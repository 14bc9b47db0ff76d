"""The clock seam (backends/clock.py): one clock per engine, handed to every part that reads
the time. Two engines with their own FakeClocks in one process judge ages, windows and SLA
countdowns by their own clock only; the system clock moving changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backends.clock import SYSTEM_CLOCK, Clock, FakeClock, SystemClock, clock_of
from backends.config import load_config_text
from backends.engine.core import build_engine
from backends.engine.monitor import FunctionSource, Monitor
from backends.model import Finding, Severity

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)

CONFIG = """
[warroom]
name = "clock-{n}"
state_dir = "{state}"
operator = "alice"

[incident.response]
P1 = "45m"
"""


def test_fake_clock_moves_only_when_told_and_never_back():
    c = FakeClock(T0)
    assert isinstance(c, Clock) and isinstance(SystemClock(), Clock)
    assert c.now() == T0 and c.now() == T0 and c.time() == T0.timestamp()
    m0 = c.monotonic()
    assert c.advance(90) == T0 + timedelta(seconds=90)
    assert c.time() == (T0 + timedelta(seconds=90)).timestamp() and c.monotonic() == m0 + 90
    c.advance(timedelta(minutes=1))
    assert c.now() == T0 + timedelta(seconds=150)
    with pytest.raises(ValueError):
        c.advance(-1)
    c.set(T0)  # the wall clock steps back (NTP): the monotonic counter does not
    assert c.now() == T0 and c.monotonic() == m0 + 150
    assert FakeClock(T0.timestamp()).now() == T0  # epoch seconds too
    with pytest.raises(ValueError):
        FakeClock(datetime(2026, 1, 1))  # naive: refused
    assert SYSTEM_CLOCK.now().tzinfo is UTC


def test_an_engine_reads_the_clock_it_was_given_and_the_system_one_by_default(tmp_path):
    plain = build_engine(None, with_logs=False)
    assert plain.clock is SYSTEM_CLOCK and plain.monitor.clock is SYSTEM_CLOCK
    fc = FakeClock(T0)
    config = load_config_text(CONFIG.format(n=1, state=tmp_path / "s"), str(tmp_path / "w.toml"))
    eng = build_engine(config, clock=fc)
    assert eng.clock is fc and clock_of(eng) is fc
    assert eng.monitor.clock is fc and eng.audit.clock is fc
    assert eng.incidents.clock() == T0 and eng.notifier.clock() == T0


async def test_two_engines_judge_ages_and_sla_countdowns_by_their_own_clocks(tmp_path):
    """A finding's first-seen and age, the snapshot's time, a source's last attempt, an
    incident's declared time and SLA countdown, an audit entry's time: each engine's own."""
    clocks = (FakeClock(T0), FakeClock(T0 + timedelta(days=30)))
    engines = []
    for n, clock in enumerate(clocks):
        config = load_config_text(CONFIG.format(n=n, state=tmp_path / f"s{n}"), str(tmp_path / f"w{n}.toml"))

        async def down():
            raise ConnectionRefusedError("connection refused")

        engines.append(build_engine(config, clock=clock, with_logs=False,
                                    sources=[FunctionSource("db", down, interval=60, timeout=1)]))
    a, b = engines
    ca, cb = clocks
    try:
        for eng in engines:
            await eng.incidents.load()
        snaps = [await e.monitor.poll_once() for e in engines]
        (fa,), (fb,) = (s.findings for s in snaps)
        assert fa.key == fb.key == "degraded:db"
        assert (fa.since, fb.since) == (T0, T0 + timedelta(days=30))  # first seen: by each one's clock
        assert snaps[0].at == T0 and snaps[0].sources["db"].last_attempt == T0

        ca.advance(600)  # ten minutes pass for a only
        sa, sb = [await e.monitor.poll_once() for e in engines]
        age_a = (sa.at - sa.findings[0].since).total_seconds()
        age_b = (sb.at - sb.findings[0].since).total_seconds()
        assert (age_a, age_b) == (600.0, 0.0)
        assert sa.findings[0].since == T0  # the same finding: first-seen kept

        inc_a = await a.incidents.declare("db down", Severity.P1, finding=sa.findings[0])
        inc_b = await b.incidents.declare("db down", Severity.P1, finding=sb.findings[0])
        assert inc_a.declared_at == ca.now() and inc_b.declared_at == cb.now()
        assert "respond in 45m00s" in a.incidents.header_text()
        ca.advance(20 * 60)  # the SLA counts down with a's clock only
        assert "respond in 25m00s" in a.incidents.header_text()
        assert "respond in 45m00s" in b.incidents.header_text()
        ca.advance(30 * 60)
        assert "SLA BREACHED +5m" in a.incidents.header_text()
        assert "respond in 45m00s" in b.incidents.header_text()
        cb.advance(44 * 60)
        assert "respond in 1m00s" in b.incidents.header_text()

        # audit entries are stamped by the engine's clock
        entry = a.audit.append(action="test.clock", target="db", reason="stamp")
        assert datetime.fromisoformat(entry["ts"]) == ca.now()
    finally:
        for e in engines:
            await e.stop()


def test_a_finding_dated_by_its_rule_keeps_its_date():
    """Only findings the rules left undated take the clock's now: an alert's own start stays."""
    clock = FakeClock(T0)
    started = datetime(2020, 1, 1, tzinfo=UTC)
    rules = lambda snap: [Finding(key="k", severity=Severity.P2, source="s", summary="x", since=started),  # noqa: E731
                          Finding(key="u", severity=Severity.P3, source="s", summary="y")]
    mon = Monitor([], rules=rules, clock=clock, probes=False)
    snap = mon._publish()
    got = {f.key: f.since for f in snap.findings}
    assert got == {"k": started, "u": T0}
    assert all(f.at == T0 for f in snap.findings)


async def test_the_console_reads_the_engines_clock(tmp_path):
    """The app's clock (header, SLA countdown, findings' ages, playbook waits) is the engine's
    when it is not given one; an app given a clock keeps it."""
    from tui.app import WarroomApp

    clock = FakeClock(T0)
    config = load_config_text(CONFIG.format(n=9, state=tmp_path / "s"), str(tmp_path / "w.toml"))
    eng = build_engine(config, clock=clock, with_logs=False)
    try:
        app = WarroomApp(eng)
        assert app.clock() == T0
        clock.advance(61)
        assert app.clock() == T0 + timedelta(seconds=61) == eng.clock.now()
        other = datetime(2030, 1, 1, tzinfo=UTC)
        assert WarroomApp(eng, clock=lambda: other).clock() == other
        assert WarroomApp(None).clock().tzinfo is not None  # no engine yet: the system clock, in UTC
    finally:
        await eng.stop()
