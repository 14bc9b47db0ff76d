"""Snapshot tests of the console's screens (issue 15, "Screens under test"), each at 80x24,
120x36 and 160x48: the populated dashboard (findings P0..P3, each with its playbook step and
key), the Logs pane following and paused, the kiosk, the incident screen open and resolved,
the postmortem, the escalate screen (no channel; one pending message) and every state of the
action modal (plan, running with progress, result, refused).

Everything is fixed: the app's clock, the engine's clock (the brief's window), the incidents' clock (`utcnow` of those
modules), the local time zone (UTC), the data (a `FixedMonitor` holding one snapshot, never
polling) and the actions (tiny in-memory ones; the running one waits on an asyncio.Event
the test holds). No service, no network. Regenerate only on purpose:
`.venv/bin/pytest tests/test_screen_snapshots.py --snapshot-update`, then read the SVGs.

Every pictured screen is also read as text and must show no Python internals (reprs such as
`PostgresReading(`, `Severity.`, raw dicts, `right_square`, a traceback, a bare None).
Assertion tests (not pictures): at 80x24 and 120x36 every finding's step line shows its key
in brackets ("[g]"), never cut; the action modal shows each change's before and after
(xfail: the changes table cuts them, see its reason).
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime, timedelta

import pytest
from textual.app import App, ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Markdown

import themes
from backends.actions.base import (
    Action,
    ActionEngine,
    ActionPlan,
    ActionResult,
    Change,
    Danger,
    Guard,
    Progress,
)
from backends.engine.audit import AuditLog
from backends.model import Finding, Severity, Snapshot
from tests import widget_data as wd
from tui.app import WarroomApp

NOW = wd.NOW  # the snapshot's time and the app's clock: 2026-11-22 08:00:00 UTC
SIZES = [(80, 24), (120, 36), (160, 48)]
SIZE_IDS = [f"{w}x{h}" for w, h in SIZES]


def sizes(fn):
    return pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)(fn)


class Clock:
    """A clock set by hand: the incidents' changes get distinct times, then it is put back at NOW."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


CLOCK = Clock(NOW)


class EngineClock:
    """The engine's clock (backends/clock.py's protocol) reading CLOCK: the brief's window and
    everything else the engine judges by its own clock."""

    def now(self) -> datetime:
        return CLOCK.at

    def time(self) -> float:
        return CLOCK.at.timestamp()

    def monotonic(self) -> float:
        return CLOCK.at.timestamp()


@pytest.fixture(autouse=True)
def frozen(monkeypatch):
    """The clocks the screens read besides the app's: incidents (SLA, durations, and the
    timeline entries that take `utcnow` rather than the manager's clock: status, note), the
    escalation brief, the notifier; and local time (the Logs pane shows local time)."""
    import backends.actions.notify
    import backends.engine.incidents

    CLOCK.at = NOW
    for mod in (backends.engine.incidents, backends.actions.notify):
        monkeypatch.setattr(mod, "utcnow", CLOCK)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
    CLOCK.at = NOW


# --------------------------------------------------------------------------- data


from tests.engines import engine_of  # noqa: E402
from tests.test_app import FixedMonitor  # noqa: E402 - holds one snapshot, never polls


def findings() -> tuple[Finding, ...]:
    """One finding per severity (two P1), each on a playbook whose next step has an action
    registered below, so each shows `→ [key] step`."""
    return (
        Finding(key="balance:polygon:arbiter", severity=Severity.P0, source="chain.polygon",
                summary="arbiter gas bank 0.412 POL, below the 0.5 POL minimum", playbook="gas-low",
                target="balance:arbiter", since=wd.ago(1260)),
        Finding(key="chain:polygon:endpoints", severity=Severity.P1, source="chain.polygon",
                summary="primary RPC https://rpc-a.example timed out 3 times in a row", playbook="rpc-failure",
                target="chain:polygon", since=wd.ago(340)),
        Finding(key="postgres:main:pool", severity=Severity.P1, source="postgres.main",
                summary="postgres.main pool 96/100 connections, 1 query running 6m52s",
                playbook="db-pool-exhausted", target="postgres:postgres.main", since=wd.ago(412)),
        Finding(key="queue:action_jobs:depth", severity=Severity.P2, source="queues",
                summary="action_jobs depth 12,480 (high: >= 10,000), draining -14/s",
                playbook="queue-overflow", target="queue:action_jobs", since=wd.ago(754)),
        Finding(key="breakers:open", severity=Severity.P3, source="breakers",
                summary="2 breakers open (trigger-7f3a, trigger-c210)", playbook="all-breakers-open",
                target="breaker:trigger-7f3a", since=wd.ago(31)),
    )


def populated_snapshot() -> Snapshot:
    """Every pane has data (tests/widget_data.py's frozen readings) and the findings above."""
    c, cursor = wd.chain()
    sources = [wd.status("docker", "docker"), wd.status("postgres.main", "postgres"),
               wd.status("redis.main", "redis"), wd.status("host", "host"), wd.status("check.health", "http"),
               wd.status("queues", "queues"), wd.status("breakers", "breakers"), wd.status("orders", "orders"),
               wd.status("chain.polygon", "evm")]
    readings = {"docker": wd.services(), **wd.infra(), "queues": wd.queues(), "breakers": (wd.breakers(),),
                "orders": (wd.orders(), cursor), "chain.polygon": (c,)}
    return wd.snap(sources, readings, findings())


class StepAction(Action):
    """An in-memory action named like a playbook step's (so the step shows with its key).
    `gate`: execute reports progress, then waits on it (the test holds the running state);
    `guard_ok`: the precondition as planned and as re-checked before executing."""

    mutating = True

    def __init__(self, action_id: str, title: str, *, gate: asyncio.Event | None = None,
                 guard_ok: bool = True, facts: dict | None = None) -> None:
        self.id = action_id
        self.title = title
        self.gate = gate
        self.guard_ok = guard_ok
        self.facts = facts or {}
        self.danger = Danger.CONFIRM

    def step_facts(self) -> dict:
        return dict(self.facts)

    async def plan(self, **params) -> ActionPlan:
        service = params.get("service") or "api-gateway"
        guard = (Guard(True, f"{service} exists and is not being changed by another console")
                 if self.guard_ok else
                 Guard(False, f"{service} is healthy again", detail="docker: running, healthy, 0 restarts"))
        return ActionPlan(
            action=self.id, title=self.title, target=f"service:{service}",
            changes=(Change(target=service, description=f"restart {service} (docker restart, 10s stop timeout)",
                            before="running, unhealthy", after="running"),),
            guard=guard, danger=self.danger, params={"service": service}, total=3,
            preview=f"docker restart {service}: in-flight requests to {service} fail for a few seconds",
            created_at=NOW,
        )

    async def check_guard(self, plan: ActionPlan) -> Guard:
        return plan.guard

    async def execute(self, plan: ActionPlan, progress) -> ActionResult:
        service = plan.params["service"]
        progress(Progress(1, 3, f"stopping {service} (up to 10s)"))
        if self.gate is not None:
            await self.gate.wait()
        progress(Progress(3, 3, f"{service} is running"))
        return ActionResult(status="ok", summary=f"{service} restarted; healthy after 4s",
                            before="running, unhealthy", after="running, healthy",
                            details=("container a1b2c3d4e5f6: restart count 4 -> 5",), finished_at=NOW)


def step_actions(gate: asyncio.Event | None = None, guard_ok: bool = True) -> list[Action]:
    return [
        StepAction("service.restart", "Restart service", gate=gate, guard_ok=guard_ok),
        StepAction("command.refill", "Refill the gas bank"),
        StepAction("chain.failover", "Fail over to the backup RPC"),
        StepAction("postgres.terminate", "Terminate long queries", facts={"terminate_after": "10s"}),
        StepAction("service.scale", "Scale action workers"),
        StepAction("breaker.reset", "Reset breaker", facts={"reset_timeout": "30s"}),
    ]


def make_config(tmp_path, body: str = ""):
    from backends.config import load_config_text

    text = f"""
[warroom]
name = "meta-aggregator"
environment = "production"
operator = "alice"
state_dir = "{tmp_path / 'state'}"
{body}
"""
    return load_config_text(text, env={}, base_dir=tmp_path, path=tmp_path / "warroom.toml")


def make_app(tmp_path, *, config_body: str = "", read_only: bool = False, kiosk: bool = False,
             actions: list[Action] | None = None, incidents: bool = False, logs=None,
             snapshot: Snapshot | None = None) -> WarroomApp:
    config = make_config(tmp_path, config_body)
    audit = AuditLog(tmp_path / "audit.jsonl")
    engine_actions = ActionEngine(audit, operator="alice", read_only=read_only)
    for a in (step_actions() if actions is None else actions):
        engine_actions.register(a)
    engine = engine_of(FixedMonitor(snapshot or populated_snapshot()), engine_actions, audit=audit,
                       config=config, logs=logs)
    engine.clock = EngineClock()
    if incidents:
        from backends.actions.notify import EscalateAction, Notifier, Outbox
        from backends.engine.incidents import IncidentManager, LocalIncidentStore, incident_actions

        manager = IncidentManager(LocalIncidentStore(tmp_path / "state" / "incidents"), config=config,
                                  operator="alice", clock=CLOCK)
        for a in incident_actions(manager):
            engine_actions.register(a)
        notifier = Notifier(config, Outbox(tmp_path / "state" / "outbox"), source="meta-aggregator@box",
                            clock=lambda: NOW)
        notifier.manager, manager.notifier = notifier, manager
        engine_actions.register(EscalateAction(notifier, manager))
        engine.incidents, engine.notifier = manager, notifier
    return WarroomApp(engine, config=config, read_only=read_only, kiosk=kiosk, clock=lambda: NOW)


async def until(pilot, cond, limit: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def settle(pilot, focus: bool = True) -> None:
    """Wait until the snapshot is shown (hints included) and focus is settled."""
    app = pilot.app
    await until(pilot, lambda: app.dashboard is not None and app.dashboard._snapshot is not None
                and (app.focused is not None or not focus), what="settled")
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


async def show_findings(pilot) -> None:
    await settle(pilot)
    await pilot.press("2")
    pane = pilot.app.dashboard.pane("findings")
    await until(pilot, lambda: pane.cursor_key() is not None and pilot.app.focused is not None
                and pane in pilot.app.focused.ancestors_with_self, what="findings focused")
    await settle(pilot)


INTERNALS = re.compile(r"\w+Reading\(|Severity\.|\{'|right_square|Traceback|object at 0x|<bound |\bNone\b(?! recorded)")


def screen_text(app) -> str:
    """The screen as plain text, one line per row, each text at its column (from the SVG's
    `x`: 12.2 px a cell, the width `export_screenshot` draws with)."""
    import html

    svg = app.export_screenshot()
    rows: dict[int, list[str]] = {}
    for x, line, text in re.findall(r'<text class="[^"]*" x="([0-9.]+)" y="[^"]*" textLength="[^"]*" '
                                    r'clip-path="url\(#[^"]*-line-(\d+)\)">(.*?)</text>', svg):
        row = rows.setdefault(int(line), [])
        col = round(float(x) / 12.2)
        chars = html.unescape(text).replace("\xa0", " ")
        if len(row) < col:
            row.extend(" " * (col - len(row)))
        row[col:col + len(chars)] = list(chars)
    return "\n".join("".join(rows.get(i, [])).rstrip() for i in range(max(rows, default=-1) + 1))


def checked(run_before):
    """`run_before`, then: no Python internals on the screen about to be pictured."""

    async def run(pilot) -> None:
        if run_before is not None:
            await run_before(pilot)
        text = screen_text(pilot.app)
        found = INTERNALS.search(text)
        assert found is None, f"Python internals on screen: {found.group(0)!r}\n{text}"

    return run


# --------------------------------------------------------------------------- dashboard


@sizes
def test_dashboard_populated(snap_compare, tmp_path, size):
    assert snap_compare(make_app(tmp_path), terminal_size=size, run_before=checked(show_findings))


@pytest.mark.parametrize("size", SIZES[:2], ids=SIZE_IDS[:2])
async def test_every_findings_step_line_shows_its_key(tmp_path, size):
    """At 80x24 and 120x36, each finding's step line (the second line of its row) shows the
    step's key in brackets, then the start of the step: the key is never cut."""
    app = make_app(tmp_path)
    async with app.run_test(size=size) as pilot:
        await show_findings(pilot)
        pane = app.dashboard.pane("findings")
        text = screen_text(app)
        assert not INTERNALS.search(text), INTERNALS.search(text)
        keys = pane.row_keys()
        assert len(keys) == len(findings())
        for key in keys:
            f = next(f for f in findings() if f.key == key)
            step, shown_key = pane.hint(f)
            assert shown_key, f"{key}: its step has no key"
            # the row under the cursor is on screen whole (both lines); read it there
            pane.table.move_cursor(row=pane.table.get_row_index(key), animate=False)
            await pilot.pause()
            await pilot.wait_for_scheduled_animations()
            lines = screen_text(app).splitlines()
            head = f.summary[:16]
            at = [i for i, ln in enumerate(lines) if head in ln]
            assert at, f"{key}: its summary is not on screen:\n" + "\n".join(lines)
            step_line = lines[at[0] + 1]
            first_word = step.text.split()[0]
            assert f"→ [{shown_key}] {first_word}" in step_line, f"{key}: step line {step_line!r}"


# --------------------------------------------------------------------------- logs


def log_lines():
    from backends.sources.logs import parse_line

    raw = [
        ("api-gateway", '{"level":"info","time":"2026-11-22T07:59:41Z","msg":"GET /api/v1/orders 200 in 41ms"}'),
        ("listener", "2026-11-22T07:59:42Z INFO listener: block 64120300 processed (3 events)"),
        ("event-processor", '{"level":"warn","time":"2026-11-22T07:59:44Z","msg":"retrying webhook delivery",'
                            '"attempt":3}'),
        ("event-processor", '{"level":"error","time":"2026-11-22T07:59:47Z","msg":"Action execution failed: '
                            'HTTP 503 from https://hooks.example/***","order":"ord-1003"}'),
        ("listener", "2026-11-22T07:59:50Z ERROR listener: event missed for order ord-1004 (rpc timeout)"),
        ("action-worker", "2026-11-22T07:59:52Z INFO worker: picked job 88121 from action_jobs"),
        ("api-gateway", '{"level":"info","time":"2026-11-22T07:59:55Z","msg":"GET /api/v1/health 503 in 2ms"}'),
        ("postgres", "2026-11-22 07:59:58 UTC [4242] LOG:  duration: 412000.113 ms  statement: SELECT * FROM orders"),
    ]
    return [parse_line(src, text, seq=i + 1, now=NOW) for i, (src, text) in enumerate(raw)]


def _logs_state(paused: bool):
    async def run_before(pilot) -> None:
        await settle(pilot)
        app = pilot.app
        await pilot.press("8")
        tail = app.dashboard.pane("logs")
        await until(pilot, lambda: app.focused is tail, what="logs focused")
        first, more = log_lines()[:6], log_lines()[6:]
        app.dashboard.add_log_lines(first)
        await until(pilot, lambda: len(tail.rows) == len(first), what="lines shown")
        if paused:
            await pilot.press("p")
            await until(pilot, lambda: not tail.following, what="paused")
            app.dashboard.add_log_lines(more)  # arrive while paused: counted, the view stays
            await until(pilot, lambda: tail.new_while_paused == len(more), what="counted while paused")
        else:
            app.dashboard.add_log_lines(more)
            await until(pilot, lambda: len(tail.rows) == len(first) + len(more), what="all shown")
        # the border's counts are throttled to once a second: wait until they are the current ones
        await until(pilot, lambda: tail.border_subtitle == tail.status_text, what="border status")
        await settle(pilot)

    return run_before


@sizes
@pytest.mark.parametrize("state", ["following", "paused"])
def test_logs_pane(snap_compare, tmp_path, size, state):
    assert snap_compare(make_app(tmp_path), terminal_size=size, run_before=checked(_logs_state(state == "paused")))


# --------------------------------------------------------------------------- kiosk


@sizes
def test_kiosk(snap_compare, tmp_path, size, monkeypatch):
    import tui.screens.kiosk

    # the alarm banner flashes (toggles every tick) for FLASH_S after a new P0/P1: pictured
    # steady, as it is once the flash is over (a toggling picture is not deterministic)
    monkeypatch.setattr(tui.screens.kiosk, "FLASH_S", 0.0)
    async def run_before(pilot) -> None:
        from tui.screens.kiosk import KioskScreen

        app = pilot.app
        await until(pilot, lambda: isinstance(app.screen, KioskScreen) and app.screen.snapshot is not None,
                    what="kiosk shows the snapshot")
        app.screen.set_cycle(0)  # stay on the first detail view
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()

    assert snap_compare(make_app(tmp_path, kiosk=True), terminal_size=size, run_before=checked(run_before))


# --------------------------------------------------------------------------- incidents


async def declare_incident(app, resolved: bool = False):
    """A P1 declared from the RPC finding 21 minutes ago, with a few timeline entries."""
    manager = app.engine.incidents
    clock = CLOCK
    clock.at = NOW - timedelta(minutes=21)
    f = findings()[1]
    inc = await manager.declare("Primary RPC down, releases stuck", Severity.P1, by="alice", finding=f,
                                impact="Escrow releases delayed; users see pending payments",
                                incident_id="INC-20261122-0739")
    clock.at = NOW - timedelta(minutes=19)
    await manager.acknowledge(inc.id, by="bob")
    clock.at = NOW - timedelta(minutes=18)
    await manager.assign(inc.id, "IC", "bob", by="bob")
    clock.at = NOW - timedelta(minutes=15)
    await manager.set_status(inc.id, "identified", by="bob")
    clock.at = NOW - timedelta(minutes=12)
    await manager.note(inc.id, "failed over to the backup RPC (127.0.0.1:8545); lag 3 blocks", by="alice")
    clock.at = NOW - timedelta(minutes=6)
    await manager.set_status(inc.id, "monitoring", by="bob")
    if resolved:
        clock.at = NOW - timedelta(minutes=2)
        await manager.resolve(inc.id, by="bob", summary="backup RPC serving; provider fixed the primary")
    clock.at = NOW
    return manager.get(inc.id)


def _incident_state(resolved: bool):
    async def run_before(pilot) -> None:
        from tui.screens.incident import IncidentScreen

        app = pilot.app
        await settle(pilot)
        inc = await declare_incident(app, resolved)
        app.push_screen(IncidentScreen(app.engine, incident_id=inc.id))
        def shown() -> bool:
            table = app.screen.query("#incident-timeline") if isinstance(app.screen, IncidentScreen) else ()
            return bool(table) and table.first().row_count == len(inc.timeline)

        await until(pilot, shown, what="incident shown")
        await settle(pilot)

    return run_before


@sizes
@pytest.mark.parametrize("state", ["open", "resolved"])
def test_incident_screen(snap_compare, tmp_path, size, state):
    assert snap_compare(make_app(tmp_path, incidents=True), terminal_size=size,
                        run_before=checked(_incident_state(state == "resolved")))


class MarkdownApp(App):
    """The postmortem draft as `p` on the incident screen writes it, rendered."""

    CSS = "Screen { background: $background; } VerticalScroll { padding: 0 1; }"

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        for t in themes.all_themes():
            self.register_theme(t)
        self.theme = themes.resolve_name(None)

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return themes.variable_defaults()

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(self.text, id="postmortem")


_POSTMORTEM: dict[str, str] = {}


def postmortem_text(tmp_path) -> str:
    """The file the incident screen's `p` writes for the resolved incident (its content;
    built once, the three sizes picture the same file)."""
    if "text" in _POSTMORTEM:
        return _POSTMORTEM["text"]

    async def build() -> str:
        app = make_app(tmp_path, incidents=True)
        async with app.run_test(size=(120, 36)) as pilot:
            from tui.screens.incident import IncidentScreen

            await settle(pilot)
            inc = await declare_incident(app, resolved=True)
            app.push_screen(IncidentScreen(app.engine, incident_id=inc.id))
            await until(pilot, lambda: isinstance(app.screen, IncidentScreen), what="incident screen")
            await pilot.pause()
            await pilot.press("p")
            path = app.engine.incidents.postmortem_dir / f"{inc.id}-postmortem.md"
            await until(pilot, path.exists, what="postmortem written")
            return path.read_text()

    _POSTMORTEM["text"] = asyncio.run(build())
    return _POSTMORTEM["text"]


@sizes
def test_postmortem(snap_compare, tmp_path, size):
    text = postmortem_text(tmp_path)
    assert "**Resolved:** 2026-11-22 07:58:00Z" in text and "provider fixed the primary" in text
    assert not INTERNALS.search(text)

    async def run_before(pilot) -> None:
        await until(pilot, lambda: pilot.app.query_one(Markdown).children, what="markdown rendered")
        await pilot.pause()

    assert snap_compare(MarkdownApp(text), terminal_size=size, run_before=checked(run_before))


# --------------------------------------------------------------------------- escalate


ONE_CHANNEL = """
[escalation]
ack_timeout = "30m"

[[escalation.levels]]
name = "Development team"
after = "0m"
contacts = ["@joseph", "+1-555-0123"]
channels = ["json://127.0.0.1:9/hook"]
provide = ["Error messages from logs", "Affected order count", "Steps already attempted"]

[[escalation.levels]]
name = "Infrastructure support"
after = "30m"
contacts = ["support@rpc-provider.example"]
channels = ["json://127.0.0.1:9/infra"]
"""


def _escalate_state(pending: bool):
    async def run_before(pilot) -> None:
        from backends.actions.notify import Message
        from tui.screens.escalate import EscalateScreen

        app = pilot.app
        await settle(pilot)
        inc = await declare_incident(app)
        if pending:
            app.engine.notifier.outbox.put(Message(
                id=f"{inc.id}-L0-C0-esc", incident=inc.id, kind="apprise", title=f"[P1] {inc.title}",
                body="brief", level=0, level_name="Development team", channel=0, label="json://127.0.0.1:9",
                severity="P1", created_at="2026-11-22T07:50:00Z", attempts=3, next_attempt_at=0.0,
                last_error="connection refused at 127.0.0.1:9"))
        app.push_screen(EscalateScreen(app.engine, incident_id=inc.id))
        await until(pilot, lambda: isinstance(app.screen, EscalateScreen) and app.screen.brief_ready,
                    what="brief built")
        await settle(pilot)

    return run_before


@sizes
@pytest.mark.parametrize("state", ["no_channel", "pending"])
def test_escalate_screen(snap_compare, tmp_path, size, state):
    app = make_app(tmp_path, incidents=True, config_body=ONE_CHANNEL if state == "pending" else "")
    assert snap_compare(app, terminal_size=size, run_before=checked(_escalate_state(state == "pending")))


# --------------------------------------------------------------------------- action modal


def _modal_state(state: str, gate: asyncio.Event):
    async def run_before(pilot) -> None:
        from tui.screens.action import ActionScreen

        app = pilot.app
        await settle(pilot)
        app.request_action("service.restart", {"service": "event-processor"})
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="modal")
        modal = app.screen
        await settle(pilot, focus=False)
        if state == "refused_read_only":  # the engine went read-only after the plan was shown
            app.engine.actions.read_only = True
        if state != "plan":
            if state in ("result", "refused_guard"):
                gate.set()
            await pilot.press("enter")
        if state == "running":
            from textual.widgets import ProgressBar

            bar = modal.query_one("#action-progress", ProgressBar)
            await until(pilot, lambda: modal.state == "running" and bar.display and bar.progress == 1,
                        what="running with progress")
        elif state == "result":
            await until(pilot, lambda: modal.state == "done", what="result")
        elif state == "refused_guard":
            await until(pilot, lambda: modal.state == "done" and modal.result.status == "refused",
                        what="refused by the guard")
        elif state == "refused_read_only":
            await until(pilot, lambda: modal.attempts == 1 and modal.state == "ready",
                        what="refused: read-only")
        await settle(pilot, focus=False)

    return run_before


MODAL_STATES = ["plan", "running", "result", "refused_guard", "refused_read_only"]


@sizes
@pytest.mark.parametrize("state", MODAL_STATES)
def test_action_modal(snap_compare, tmp_path, size, state):
    gate = asyncio.Event()
    app = make_app(tmp_path, actions=step_actions(gate, guard_ok=(state != "refused_guard")))
    try:
        assert snap_compare(app, terminal_size=size, run_before=checked(_modal_state(state, gate)))
    finally:
        gate.set()



@pytest.mark.parametrize("size", SIZES[:2], ids=SIZE_IDS[:2])
async def test_action_modal_shows_each_change_before_and_after(tmp_path, size):
    from tui.screens.action import ActionScreen

    app = make_app(tmp_path)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        app.request_action("service.restart", {"service": "event-processor"})
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="modal")
        await settle(pilot, focus=False)
        row = next(ln for ln in screen_text(app).splitlines() if "restart event-processor (" in ln)
        assert re.search(r"running, unhealthy\s+running\b", row), row
