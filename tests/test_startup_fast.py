"""Console startup and shutdown: the first frame comes before the engine is built (the
`warroom` command builds it after the first frame), and quitting while polls fire fast
never reaches a closing screen.

Driven with Pilot against the real Monitor, ActionEngine, AuditLog and LogHub.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime

import pytest

from backends.actions.base import ActionEngine
from backends.engine.audit import AuditLog
from backends.engine.monitor import FunctionSource, Monitor
from backends.errors import BackendError
from backends.model import ServiceReading, Status
from backends.sources.logs import LogHub, LogSpec
from tests.engines import engine_of
from tui.app import WarroomApp

FROZEN = datetime(2026, 11, 22, 8, 15, 0, tzinfo=UTC)


async def _good():
    return [ServiceReading(source="docker", name="api-gateway", status=Status.OK, state="running")]


async def _bad():
    raise BackendError("postgres", "connection refused at 127.0.0.1:5432")


def fast_engine(tmp_path, *, interval: float = 0.002):
    """Sources polled every few milliseconds, and a log hub fed as fast."""
    monitor = Monitor([FunctionSource(f"docker{i}", _good, interval=interval, timeout=1, kind="docker")
                       for i in range(3)]
                      + [FunctionSource("postgres", _bad, interval=interval, timeout=1, kind="postgres")],
                      max_backoff=interval)
    log_file = tmp_path / "listener.log"
    log_file.write_text("")
    hub = LogHub([LogSpec(name="listener", path=str(log_file))])
    actions = ActionEngine(AuditLog(tmp_path / "audit.jsonl"), operator="alice")
    return engine_of(monitor, actions, logs=hub)


async def until(pilot, cond, limit: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.01)


def feeder(hub: LogHub, stop: threading.Event, loop: asyncio.AbstractEventLoop) -> threading.Thread:
    """Feed log lines into the hub (on the loop, as its readers do) until told to stop."""

    def run() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                loop.call_soon_threadsafe(hub.feed, "listener", [f"ERROR line {n}", f"INFO line {n}"])
            except RuntimeError:  # the loop closed
                return
            time.sleep(0.001)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged_errors():
    handler = Errors()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)


async def _quit_while_busy(tmp_path, how: str, deferred: bool, modal: bool = False) -> None:
    engine = fast_engine(tmp_path)
    if deferred:
        app = WarroomApp(None, engine_factory=lambda: engine, clock=lambda: FROZEN)
    else:
        app = WarroomApp(engine, clock=lambda: FROZEN)
    stop = threading.Event()
    thread = None
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: engine.monitor.running and sum(engine.monitor.poll_counts.values()) > 40,
                        what="fast polls")
            thread = feeder(engine.logs, stop, asyncio.get_running_loop())
            await until(pilot, lambda: app.dashboard.pane("logs").received > 20, what="log lines")
            if modal:  # a dialog over the dashboard: snapshots wait for the dashboard to resume
                await pilot.press("question_mark")
                await until(pilot, lambda: app.screen is not app.dashboard, what="help open")
                polls = sum(engine.monitor.poll_counts.values())  # snapshots pile up under the dialog
                await until(pilot, lambda: sum(engine.monitor.poll_counts.values()) > polls + 4,
                            what="polls under the dialog")
            if how == "q":
                await pilot.press("q")
            # else: leaving the context shuts the app down under the pilot (as snap_compare does)
    finally:
        stop.set()
        if thread is not None:
            thread.join(2)
    assert app._exception is None
    assert app.return_code in (0, None)
    assert not engine.monitor.running


@pytest.mark.parametrize("deferred", [False, True], ids=["engine", "factory"])
@pytest.mark.parametrize("how", ["q", "context-exit"])
async def test_quit_while_polls_fire_fast_is_clean(tmp_path, logged_errors, how, deferred):
    for _ in range(3):  # the race is timing-dependent: quit a few times
        await _quit_while_busy(tmp_path, how, deferred)
    assert not [r for r in logged_errors if r.levelno >= logging.ERROR], \
        [r.getMessage() for r in logged_errors]


async def test_quit_with_a_dialog_open_while_polls_fire_fast_is_clean(tmp_path, logged_errors):
    for _ in range(2):
        await _quit_while_busy(tmp_path, "context-exit", False, modal=True)
    assert not [r for r in logged_errors if r.levelno >= logging.ERROR], \
        [r.getMessage() for r in logged_errors]


# ---------------------------------------------------------------------- deferred start


class Gate:
    """An engine factory that waits (in its thread) until the test opens the gate."""

    def __init__(self, build) -> None:
        self.build = build
        self.opened = threading.Event()
        self.called = threading.Event()
        self.returned = threading.Event()
        self.thread: str | None = None

    def __call__(self):
        self.called.set()
        self.thread = threading.current_thread().name
        try:
            assert self.opened.wait(10), "gate never opened"
            return self.build()
        finally:
            self.returned.set()


def verb_keys(app) -> set[str]:
    return {k.key for k in app.screen.query("FooterKey")}


async def test_factory_first_frame_is_the_shell_then_panes_and_engine(tmp_path):
    from tests.test_app import SetValue  # a real Action (restart) on a dict

    def build():
        engine = fast_engine(tmp_path, interval=0.2)
        engine.actions.register(SetValue({"api-gateway": "running"}))
        return engine

    gate = Gate(build)
    app = WarroomApp(None, engine_factory=gate, clock=lambda: FROZEN)
    async with app.run_test(size=(160, 48)) as pilot:
        # the shell: header, every pane's border and title, the footer's keys; no engine yet
        dashboard = app.dashboard
        assert app.engine is None
        titles = [slot.border_title for slot in dashboard.query("PaneSlot")]
        assert titles == ["1 Services", "2 Findings", "3 Queues", "4 Breakers", "5 Chain",
                          "6 Stuck orders", "7 Sources", "8 Logs"]
        assert {"question_mark", "ctrl+p"} <= verb_keys(app)
        assert "r" not in verb_keys(app)  # no engine, no actions: no verb keys yet
        await until(pilot, gate.called.is_set, what="the factory called")
        assert gate.thread != threading.main_thread().name  # built off the event loop's thread
        await until(pilot, lambda: dashboard.panes_ready and dashboard.pane("sources") is not None,
                    what="panes mounted")
        assert app.engine is None  # the panes do not wait for the engine
        assert all(not slot.border_subtitle for slot in dashboard.query("PaneSlot"))

        gate.opened.set()
        await until(pilot, lambda: app.engine is not None and app.engine.monitor.running, what="engine started")
        await until(pilot, lambda: "postgres" in dashboard.pane("sources").rows, what="first poll shown")
        await until(pilot, lambda: "r" in verb_keys(app), what="the restart verb in the footer")
        assert app.focused is not None  # focus as with an engine given up front
        assert "alice" in dashboard.header.shown("left")  # the engine's operator, as when given up front
        engine = app.engine
    assert not engine.monitor.running


@pytest.mark.parametrize("size", [(80, 24), (120, 36), (160, 48)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_factory_and_engine_paths_end_on_the_same_screen(tmp_path, size):
    from tests.test_app import fixed_app

    async def picture(app) -> str:
        async with app.run_test(size=size) as pilot:
            await until(pilot, lambda: app.engine is not None and app.dashboard._snapshot is not None
                        and app.focused is not None, what="settled")
            await pilot.pause()
            await pilot.wait_for_scheduled_animations()
            await pilot.pause()
            return app.export_screenshot()

    eager = fixed_app(tmp_path)
    engine = eager.engine
    deferred = fixed_app(tmp_path)
    deferred.engine, deferred._engine_factory = None, (lambda: engine)
    assert await picture(deferred) == await picture(eager)


async def test_factory_error_exits_with_2_and_keeps_the_error(tmp_path):
    def broken():
        raise BackendError("postgres", "bad dsn")

    app = WarroomApp(None, engine_factory=broken, clock=lambda: FROZEN)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.startup_error is not None, what="the error")
        await until(pilot, lambda: app._exit, what="exit")
    assert app.return_code == 2
    assert isinstance(app.startup_error, BackendError)


async def test_quit_while_the_engine_is_still_being_built(tmp_path, logged_errors):
    engine = fast_engine(tmp_path)
    gate = Gate(lambda: engine)
    app = WarroomApp(None, engine_factory=gate, clock=lambda: FROZEN)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, gate.called.is_set, what="the factory called")
        await pilot.press("q")
        gate.opened.set()  # the engine arrives while the app closes: never attached, never started
    assert await asyncio.to_thread(gate.returned.wait, 10), "the factory never returned"
    for _ in range(5):  # let the loop run what the factory's return scheduled
        await asyncio.sleep(0)
    assert app._exception is None and app.return_code == 0
    assert app.engine is None and not engine.monitor.running
    assert not [r for r in logged_errors if r.levelno >= logging.ERROR]
