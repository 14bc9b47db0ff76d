"""`warroom replay FILE`: the console on a recording (backends/engine/replay.py, tui/screens/replay.py).

The recording is made by the real `Recorder` from fixed model objects (tests/widget_data.py's
services, infrastructure and queues), so every time is fixed: the console's clock is the
replay's position and every pane computes ages from the snapshot's time. Pilot tests press
the keys the footer shows (space play/pause, . step, ] next mark, [ previous mark, x speed)
and check they do what it says; snapshot tests picture the replay at its start and on its
first finding at 80x24, 120x36 and 160x48. Regenerate the pictures only on purpose:
`.venv/bin/pytest tests/test_replay.py --snapshot-update`, then read the SVGs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from backends.actions.base import ActionPlan, ActionResult
from backends.engine.recorder import Recorder, Recording
from backends.engine.replay import ReplayEngine
from backends.model import Finding, Level, LogLine, Severity
from tests import widget_data as wd

ROOT = Path(__file__).resolve().parents[1]
T0 = wd.NOW - timedelta(minutes=10)
FINDING = Finding(key="queue:action_jobs:depth", severity=Severity.P2, source="queues",
                  summary="action_jobs depth 12,480 (high: >= 10,000)", playbook="queue-backlog",
                  target="queue:action_jobs", since=T0 + timedelta(seconds=120))
MARK_FINDING = T0 + timedelta(seconds=120)
MARK_ACTION = T0 + timedelta(seconds=300)
MARK_CLEARED = T0 + timedelta(seconds=480)
END = T0 + timedelta(seconds=600)


def _state(at, findings=()):
    base = wd.services_snapshot()
    q = wd.queues_snapshot()
    readings = {**{k: tuple(replace(r, at=at) for r in v) for k, v in base.readings.items()},
                **{k: tuple(replace(r, at=at) for r in v) for k, v in q.readings.items()}}
    sources = {k: replace(s, last_good=at, last_attempt=at) for k, s in {**base.sources, **q.sources}.items()}
    return replace(base, at=at, readings=readings, sources=sources, findings=tuple(findings))


def make_recording(path: Path) -> Path:
    """Ten minutes: a snapshot every 30 s, a finding from 2m to 8m, an action at 5m, log lines."""
    clock = [T0]
    rec = Recorder(path, max_age=100 * 365 * 86400.0, keyframe_every=120.0, clock=lambda: clock[0]).start()
    seq = 0
    for i in range(0, 21):
        at = T0 + timedelta(seconds=30 * i)
        clock[0] = at
        found = [replace(FINDING, at=at)] if MARK_FINDING <= at < MARK_CLEARED else []
        rec.on_snapshot(_state(at, found))
        seq += 1
        level = Level.ERROR if found else Level.INFO
        rec.on_log_lines([LogLine(source="action-workers", text=f"tick {i}: queue depth "
                                  f"{12_480 if found else 40}", level=level, at=at, seq=seq)])
        if at == MARK_ACTION:
            plan = ActionPlan(action="service.scale", title="Scale action workers", target="service:action-workers")
            rec.on_action(plan, ActionResult(status="ok", summary="scaled action-workers to 6", finished_at=at))
    rec.close()
    return path


@pytest.fixture()
def recording(tmp_path) -> Path:
    return make_recording(tmp_path / "incident.sqlite")


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# --------------------------------------------------------------------------- the engine


def test_replay_engine_is_read_only_and_contacts_nothing(recording):
    from backends.interface import EngineLike

    engine = ReplayEngine(recording)
    try:
        assert isinstance(engine, EngineLike)
        assert engine.monitor.sources == {}  # nothing to poll: no backend is contacted
        assert engine.read_only and engine.actions.read_only and engine.actions.available() == []
        assert engine.start_at == T0 and engine.end_at == END
        assert [m.kind for m in engine.marks] == ["finding", "action", "cleared"]
        assert engine.monitor.snapshot.at == T0 and engine.monitor.snapshot.findings == ()
        engine.seek(MARK_FINDING + timedelta(seconds=1))
        assert [f.key for f in engine.monitor.snapshot.findings] == [FINDING.key]
        engine.seek(T0 + timedelta(seconds=30))  # backwards: from the keyframe before it
        assert engine.monitor.snapshot.findings == ()
        assert engine.logs.recent()[-1].text == "tick 1: queue depth 40"
    finally:
        import asyncio

        asyncio.run(engine.stop())


def test_dump_is_json_lines_one_per_record(recording):
    out = subprocess.run([sys.executable, "-m", "tui.cli", "replay", str(recording), "--dump"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines[0]["t"] == "meta" and lines[0]["version"] == "1"
    kinds = [r["t"] for r in lines]
    assert kinds.count("finding") == 2 and kinds.count("action") == 1 and kinds.count("log") == 21
    assert {"snapshot", "delta"} <= set(kinds)
    action = next(r for r in lines if r["t"] == "action")
    assert action["plan"]["action"] == "service.scale" and action["result"]["status"] == "ok"
    finding = next(r for r in lines if r["t"] == "finding")
    assert finding["event"] == "appeared" and finding["finding"]["severity"] == {"$enum": "Severity.P2"}
    assert len(lines) == 1 + sum(1 for _ in Recording(recording).records())


def test_replay_of_a_missing_file_says_so(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tui.cli", "replay", str(tmp_path / "nope.sqlite")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no recording at" in out.stderr


# --------------------------------------------------------------------------- the keys


async def until(pilot, cond, limit: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def _app(recording: Path, tick_s: float = 0):
    from tui.screens.replay import ReplayApp

    return ReplayApp(recording, tick_s=tick_s)


async def _settled(pilot):
    app = pilot.app
    await until(pilot, lambda: app.dashboard is not None and app.timeline() is not None
                and app.snapshot is not None and app.snapshot.at == app.replay.position, what="replay shown")
    await pilot.pause()


async def test_footer_shows_the_replay_keys(recording):
    from tests.test_screen_snapshots import screen_text

    app = _app(recording)
    async with app.run_test(size=(160, 48)) as pilot:
        await _settled(pilot)
        footer = screen_text(app).splitlines()[-1]
        for text in ("space Play/Pause", ". Step", "] Next mark", "[ Prev mark", "x Speed"):
            assert text in footer, footer
        assert "READ-ONLY" in screen_text(app)


async def test_step_and_marks_move_the_replay(recording):
    app = _app(recording)
    async with app.run_test(size=(120, 36)) as pilot:
        await _settled(pilot)
        e = app.replay
        assert e.position == T0 and not e.playing
        await pilot.press("full_stop")  # step: the next recorded moment
        await until(pilot, lambda: e.position == T0 + timedelta(seconds=30), what="a step")
        await pilot.press("right_square_bracket")  # next mark: the finding
        await until(pilot, lambda: e.position == MARK_FINDING, what="the finding")
        await until(pilot, lambda: [f.key for f in app.snapshot.findings] == [FINDING.key], what="finding shown")
        from tests.test_screen_snapshots import screen_text

        await until(pilot, lambda: "action_jobs depth 12,480" in screen_text(app), what="the findings pane")
        await pilot.press("right_square_bracket")  # the action
        await until(pilot, lambda: e.position == MARK_ACTION, what="the action")
        assert "next ◇" in str(app.timeline().head())
        await pilot.press("left_square_bracket")  # back to the finding
        await until(pilot, lambda: e.position == MARK_FINDING, what="back to the finding")
        await pilot.press("left_square_bracket")  # nothing before: stays, says so
        await until(pilot, lambda: any("no finding or action before" in n.message for n in app._notifications),
                    what="the notice")
        assert e.position == MARK_FINDING
        await pilot.press("right_square_bracket", "right_square_bracket")
        await until(pilot, lambda: e.position == MARK_CLEARED and app.snapshot.findings == (), what="cleared")


async def test_speed_cycles_and_play_pause(recording):
    app = _app(recording, tick_s=0.05)
    async with app.run_test(size=(120, 36)) as pilot:
        await _settled(pilot)
        e = app.replay
        assert e.speed == 1
        await pilot.press("x")
        assert e.speed == 10 and "×10" in str(app.timeline().head())
        await pilot.press("x")
        assert e.speed == 60
        await pilot.press("space")  # play at x60: a recorded minute a real second
        assert e.playing and "playing" in str(app.timeline().head())
        await until(pilot, lambda: e.position >= T0 + timedelta(seconds=30), what="playing moves on")
        await pilot.press("space")
        assert not e.playing
        held = e.position
        e.tick(5.0)  # the replay clock: five real seconds pass while paused
        await pilot.pause()
        assert e.position == held, "paused: the position holds"
        await pilot.press("x")
        assert e.speed == 1
        # played to the end it stops there; play again starts over
        e.seek(END - timedelta(seconds=1))
        e.speed = 60
        await pilot.press("space")
        await until(pilot, lambda: e.position == END and not e.playing, what="the end")
        await pilot.press("space")
        assert e.playing and e.position < END


async def test_a_backward_jump_shows_the_logs_up_to_there(recording):
    app = _app(recording)
    async with app.run_test(size=(120, 36)) as pilot:
        await _settled(pilot)
        await pilot.press("right_square_bracket", "right_square_bracket")  # 5m: the action
        from widgets.logs import LogTail

        tail = app.dashboard.query_one(LogTail)
        await until(pilot, lambda: tail.lines and tail.lines[-1].text == "tick 10: queue depth 12480",
                    what="logs at 5m")
        await pilot.press("left_square_bracket")  # 2m: the finding
        await until(pilot, lambda: tail.lines and tail.lines[-1].text == "tick 4: queue depth 12480",
                    what="logs at 2m")
        assert all(not ln.text.startswith("tick 10") for ln in tail.lines)


async def test_no_mutating_action_in_a_replay(recording):
    app = _app(recording)
    async with app.run_test(size=(120, 36)) as pilot:
        await _settled(pilot)
        assert app.read_only
        for verb in ("restart", "fix", "escalate", "reset_breaker"):
            assert app.check_action(f"verb('{verb}')", (verb,)) in (False, None) or \
                not app.replay.actions.available()


async def test_postmortem_key_on_the_incident_screen_uses_the_recording(recording, tmp_path):
    """The incident screen's `p` exports the draft the recording gives (ReplayIncidents)."""
    app = _app(recording)
    async with app.run_test(size=(120, 36)) as pilot:
        await _settled(pilot)
        path = app.replay.incidents.export_postmortem("none", tmp_path / "pm") \
            if app.replay.incidents.incidents.get("none") else None
        assert path is None  # no incident in this recording: the draft comes from the recording itself
        text = app.replay.incidents.postmortem("none")
        assert "## From the flight recording" in text and "service.scale" in text


# --------------------------------------------------------------------------- pictures

SIZES = [(80, 24), (120, 36), (160, 48)]


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("where", ["start", "finding"])
def test_replay_screen(snap_compare, recording, size, where):
    from tests.test_screen_snapshots import INTERNALS, screen_text

    async def run_before(pilot) -> None:
        await _settled(pilot)
        if where == "finding":
            await pilot.press("right_square_bracket")
            await until(pilot, lambda: pilot.app.snapshot.findings != (), what="the finding")
        await _settled(pilot)
        from widgets.logs import LogTail

        tail = pilot.app.dashboard.query_one(LogTail)
        await until(pilot, lambda: len(tail.lines) == len(pilot.app.replay.logs.buffer), what="the log lines")
        tail.flush()
        tail._update_status()  # its counts lag by up to a second by design: now, for the picture
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()
        text = screen_text(pilot.app)
        found = INTERNALS.search(text)
        assert found is None, f"Python internals on screen: {found.group(0)!r}\n{text}"

    assert snap_compare(_app(recording), terminal_size=size, run_before=run_before)
