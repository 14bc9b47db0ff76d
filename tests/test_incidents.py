"""Incident lifecycle through the engine's actions (audited), stored as JSON under state_dir:
declare from a finding, roles, status, timeline from findings / actions / notes, status
update from seed 004's template, SLA clock, resolve, postmortem draft."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from backends.actions.base import Action, ActionPlan, ActionResult, Change, Danger
from backends.config import load_config_text
from backends.engine.core import build_engine
from backends.engine.incidents import Incident, IncidentManager, LocalIncidentStore, status_update
from backends.errors import ActionRefused
from backends.model import Finding, Severity, Snapshot, utcnow

CONFIG = """
[warroom]
name = "inc-test"
state_dir = "{state}"
operator = "alice"

[incident]
roles = ["Incident Commander", "Technical Lead", "Communications Lead"]

[incident.response]
P0 = "15m"
P1 = "45m"
"""


class Touch(Action):
    id = "test.touch"
    title = "Touch"
    danger = Danger.SAFE

    async def plan(self, *, target: str = "thing", reason: str | None = None, **_) -> ActionPlan:
        return ActionPlan(action=self.id, title=self.title, target=target, danger=Danger.SAFE, reason=reason,
                          changes=(Change(target, "touch it", before=0, after=1),))

    async def execute(self, plan, progress) -> ActionResult:
        return ActionResult(status="ok", summary=f"touched {plan.target}", counts={"touched": 1})


@pytest.fixture
def engine(tmp_path):
    config = load_config_text(CONFIG.format(state=tmp_path / "state"), str(tmp_path / "warroom.toml"))
    eng = build_engine(config)
    eng.actions.register(Touch())
    return eng


async def run(engine, action, **params):
    plan = await engine.actions.plan(action, **params)
    res = await engine.actions.execute(plan, confirmation=True)
    assert res.ok, res.summary
    return plan, res


def finding(key="listener-failure:orders", sev=Severity.P1, since=None, summary="3 stuck orders released on chain"):
    return Finding(key=key, severity=sev, source="orders", summary=summary, playbook="listener-failure",
                   target="orders", since=since or utcnow())


async def test_lifecycle_from_a_finding_to_a_postmortem(engine, tmp_path):
    m: IncidentManager = engine.incidents
    await m.load()
    f = finding()
    plan, _ = await run(engine, "incident.declare", finding=f, impact="Orders are not settling")
    inc = m.current()
    assert inc.id == plan.params["incident_id"] and inc.severity is Severity.P1  # from the finding
    assert inc.title == f.summary and inc.status == "investigating"
    assert inc.response_s == 45 * 60  # from [incident.response]
    # the SLA clock runs until someone responds
    sla = inc.sla(inc.declared_at + timedelta(minutes=10))
    assert sla.left_s == pytest.approx(35 * 60) and not sla.breached and sla.text() == "respond in 35m00s"
    late = inc.sla(inc.declared_at + timedelta(minutes=50))
    assert late.breached and late.text().startswith("SLA BREACHED +5m")
    assert "P1" in m.header_text() and inc.id in m.header_text()
    # roles: the commander taking command is the response
    await run(engine, "incident.update", incident=inc.id, op="assign", role="IC", value="bob")
    await run(engine, "incident.update", incident=inc.id, op="assign", role="tl", value="carol")
    inc = m.get(inc.id)
    assert inc.roles == {"Incident Commander": "bob", "Technical Lead": "carol"}
    assert inc.acknowledged_by == "bob" and inc.sla().responded_in_s is not None
    with pytest.raises(ActionRefused, match="unknown role"):
        await engine.actions.plan("incident.update", incident=inc.id, op="assign", role="janitor", value="x")
    with pytest.raises(ActionRefused, match="status must be one of"):
        await engine.actions.plan("incident.update", incident=inc.id, op="status", value="panicking")
    # findings appear and clear on the timeline
    other = finding("service-down:listener", summary="listener is not running")
    m.observe(Snapshot(findings=(f, other)))
    await m.drain()
    m.observe(Snapshot(findings=(other,)))  # f cleared
    await m.drain()
    m.observe(Snapshot(findings=(other,)))  # nothing new: no entry
    await m.drain()
    # an action goes on the timeline with its result
    await run(engine, "test.touch", target="service:listener", reason="restart it")
    await m.drain()
    await run(engine, "incident.update", incident=inc.id, op="status", value="identified")
    await run(engine, "incident.update", incident=inc.id, op="note", value="listener lost its RPC connection")
    await run(engine, "incident.update", incident=inc.id, op="eta", value="30 minutes")
    _, res = await run(engine, "incident.update", incident=inc.id, op="update")
    await run(engine, "incident.update", incident=inc.id, op="status", value="monitoring")
    inc = m.get(inc.id)
    kinds = [t.kind for t in inc.timeline]
    assert kinds == ["declared", "role", "role", "finding", "cleared", "action", "status", "note", "note", "update",
                     "status"], kinds
    action = inc.timeline[5]
    assert action.data["result"] == "ok" and action.data["action"] == "test.touch" and action.by == "alice"
    update = inc.timeline[9].text
    for line in ("Subject: [P1] 3 stuck orders released on chain - Action Required", "Severity: High",
                 "Status: Identified", "Impact: Orders are not settling", "ETA: 30 minutes", "Next Update: "):
        assert line in update, update
    assert f"Started: {inc.declared_at.strftime('%Y-%m-%d %H:%M:%SZ')}" in update
    # resolve, then the postmortem draft
    await run(engine, "incident.resolve", incident=inc.id, summary="listener restarted, orders reconciled")
    inc = m.get(inc.id)
    assert not inc.open and inc.resolved_at and m.current() is None and m.header_text() == ""
    with pytest.raises(ActionRefused, match="resolved"):
        await engine.actions.plan("incident.resolve", incident=inc.id)
    path = m.export_postmortem(inc.id, tmp_path / "pm")
    md = path.read_text()
    for part in ("# Postmortem draft: 3 stuck orders released on chain", "## Timeline", "## Actions taken",
                 "| test.touch | service:listener | ok | touched service:listener |", "## Findings",
                 "listener is not running", "not cleared", "## Durations", "Time to respond (SLA 45m00s)",
                 "Time to resolve", "Time identified", "Time monitoring", "listener restarted, orders reconciled",
                 "Incident Commander: bob", "## Status updates written"):
        assert part in md, part
    # the acknowledgement is credited to who responded (the commander taking command), at that time
    ack = next(line for line in md.splitlines() if line.startswith("- **Acknowledged:**"))
    assert ack.endswith(" by bob") and inc.acknowledged_at.strftime("%H:%M") in ack, ack
    # every lifecycle change is in the audit trail
    actions = [e["action"] for e in engine.audit.entries() if e["result"] == "ok"]
    assert actions.count("incident.update") == 7 and "incident.declare" in actions and "incident.resolve" in actions
    # stored as JSON under state_dir; a new manager reads it back
    stored = json.loads((engine.config.state_dir / "incidents" / f"{inc.id}.json").read_text())
    assert stored["status"] == "resolved" and len(stored["timeline"]) == len(inc.timeline)
    again = IncidentManager(LocalIncidentStore(engine.config.state_dir / "incidents"), config=engine.config)
    [back] = await again.load()
    assert back.to_dict() == inc.to_dict()


async def test_declare_by_hand_and_severity_change(engine):
    m = engine.incidents
    await m.load()
    with pytest.raises(ActionRefused, match="title is required"):
        await engine.actions.plan("incident.declare", severity="P2")
    with pytest.raises(ActionRefused, match="unknown severity"):
        await engine.actions.plan("incident.declare", title="x", severity="P9")
    await run(engine, "incident.declare", title="Payment hub paused", severity="P2",
              roles={"Communications Lead": "dana"})
    inc = m.current()
    assert inc.response_s == 4 * 3600 and inc.roles == {"Communications Lead": "dana"}
    await run(engine, "incident.update", op="severity", value="P0")  # the only open incident
    inc = m.get(inc.id)
    assert inc.severity is Severity.P0 and inc.response_s == 15 * 60
    assert inc.timeline[-1].text == "severity P2 -> P0"
    assert status_update(inc).startswith("Subject: [P0] Payment hub paused - Action Required")


async def test_two_open_incidents_worst_first(engine):
    m = engine.incidents
    await m.load()
    await run(engine, "incident.declare", title="minor", severity="P3")
    await run(engine, "incident.declare", title="major", severity="P0")
    assert [i.title for i in m.open_incidents()] == ["major", "minor"]
    await run(engine, "test.touch")
    await m.drain()
    assert all(i.timeline[-1].kind == "action" for i in m.open_incidents())


def test_round_trip_of_the_document():
    inc = Incident(id="INC-1", title="t", severity=Severity.P1, declared_at=utcnow(), declared_by="a")
    inc.add("note", "token=abc123 in a note", "a")
    d = inc.to_dict()
    assert "abc123" not in json.dumps(d)  # free text is redacted
    assert Incident.from_dict(d).to_dict() == d


# --------------------------------------------------------------------------- the incident screen (Pilot)


class Host:
    """A bare App showing one screen over a real engine."""

    @staticmethod
    def make(factory):
        from textual.app import App

        class _Host(App):
            def on_mount(self) -> None:
                self.push_screen(factory())

        return _Host()


async def until(pilot, cond, within: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return True
        await pilot.pause(0.05)
    return cond()


async def test_incident_screen_declares_and_runs_the_incident(engine, tmp_path):
    from textual.widgets import DataTable, Input

    from tui.screens.action import ActionScreen
    from tui.screens.incident import IncidentScreen

    m = engine.incidents
    await m.load()
    f = finding()
    app = Host.make(lambda: IncidentScreen(engine, finding=f))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, IncidentScreen) and screen.declaring
        assert screen.query_one("#declare-title", Input).value == f.summary
        assert screen.query_one("#declare-severity", Input).value == "P1"
        await pilot.press("enter")  # enter goes to the next field, it does not declare
        assert app.focused is screen.query_one("#declare-severity", Input) and m.current() is None
        await pilot.press("ctrl+s")  # declare: the dialog shows what, enter declares
        assert await until(pilot, lambda: isinstance(app.screen, ActionScreen))
        assert "P1" in str(app.screen.plan.preview) + app.screen.plan.title and m.current() is None
        await pilot.press("enter")
        assert await until(pilot, lambda: m.current() is not None)
        await pilot.press("enter")  # close the result
        assert await until(pilot, lambda: app.screen is screen and not screen.declaring)
        inc = m.current()
        assert inc.finding["key"] == f.key
        await pilot.press("n")
        await pilot.press(*"rpc lost")
        await pilot.press("enter")
        assert await until(pilot, lambda: m.get(inc.id).timeline[-1].text == "rpc lost")
        await pilot.press("s")
        assert await until(pilot, lambda: m.get(inc.id).status == "identified")
        await pilot.press("a")
        await pilot.press(*"IC bob")
        await pilot.press("enter")
        assert await until(pilot, lambda: m.get(inc.id).roles.get("Incident Commander") == "bob")
        table = screen.query_one("#incident-timeline", DataTable)
        assert await until(pilot, lambda: table.row_count == len(m.get(inc.id).timeline))
        await pilot.press("p")
        assert await until(pilot, lambda: (m.postmortem_dir / f"{inc.id}-postmortem.md").exists())
        await pilot.press("x")
        await pilot.press(*"done")
        await pilot.press("enter")
        assert await until(pilot, lambda: isinstance(app.screen, ActionScreen))
        await pilot.press("enter")  # confirm in the action modal
        assert await until(pilot, lambda: not m.get(inc.id).open)
    entries = [e["action"] for e in engine.audit.entries()]
    assert entries.count("incident.update") == 3 and "incident.resolve" in entries


async def test_incident_screen_read_only_refuses(tmp_path):
    from tui.screens.incident import IncidentScreen

    config = load_config_text(CONFIG.format(state=tmp_path / "state"), str(tmp_path / "warroom.toml"))
    engine = build_engine(config, read_only=True)
    await engine.incidents.load()
    app = Host.make(lambda: IncidentScreen(engine))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press(*"nothing")
        await pilot.press("ctrl+s")
        assert await until(pilot, lambda: engine.audit.entries())  # the refusal is audited
        assert engine.incidents.current() is None
    assert [e["result"] for e in engine.audit.entries()] == ["refused"]


async def test_two_consoles_on_one_box_see_each_others_changes(tmp_path):
    import asyncio

    config = load_config_text(CONFIG.format(state=tmp_path / "state"), str(tmp_path / "warroom.toml"))
    a, b = build_engine(config, operator="alice"), build_engine(config, operator="bob")
    try:
        b.incidents.store.poll = 0.1
        await a.incidents.load()
        await b.incidents.load()
        seen = asyncio.Event()
        b.incidents.subscribe(lambda inc: seen.set())
        plan = await a.actions.plan("incident.declare", title="seen by bob", severity="P1")
        await a.actions.execute(plan, confirmation=True)
        await asyncio.wait_for(seen.wait(), 5)
        assert b.incidents.current() is not None and b.incidents.current().title == "seen by bob"
        assert b.incidents.current().declared_by == "alice"
    finally:
        await a.stop()
        await b.stop()


# --------------------------------------------------------------------------- wired into the console


async def test_console_keys_open_the_incident_escalate_and_playbook_screens(engine):
    from backends.engine.playbooks import PlaybookHints
    from tui.app import WarroomApp
    from tui.screens.escalate import EscalateScreen
    from tui.screens.incident import IncidentScreen
    from tui.screens.playbook import PlaybookScreen

    app = WarroomApp(engine)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        pane = app.dashboard.query("FindingsPane").first()
        assert isinstance(pane.playbook_hint, PlaybookHints)
        await pilot.press("i")
        assert await until(pilot, lambda: isinstance(app.screen, IncidentScreen))
        await pilot.press(*"db down", "ctrl+s")  # by hand: the dialog asks first
        assert await until(pilot, lambda: app.screen.__class__.__name__ == "ActionScreen")
        await pilot.press("enter")
        assert await until(pilot, lambda: engine.incidents.current() is not None)
        await pilot.press("enter")  # close the result: back on the incident
        assert await until(pilot, lambda: isinstance(app.screen, IncidentScreen))
        await pilot.press("escape")
        assert await until(pilot, lambda: app.screen is app.dashboard)
        assert await until(pilot, lambda: app.dashboard.header.incident is engine.incidents.current())
        assert app.dashboard.header.incident.sla_due is not None  # the SLA clock runs
        await pilot.press("e")
        assert await until(pilot, lambda: isinstance(app.screen, EscalateScreen))
        await pilot.press("escape")
        assert await until(pilot, lambda: app.screen is app.dashboard)
        await pilot.press("i")  # with an incident open: the incident itself
        assert await until(pilot, lambda: isinstance(app.screen, IncidentScreen) and not app.screen.declaring)
        await pilot.press("escape")
        assert await until(pilot, lambda: app.screen is app.dashboard)
        app.open_item(finding())  # enter on a finding
        assert await until(pilot, lambda: isinstance(app.screen, PlaybookScreen) and app.screen.rows)
        assert app.screen.finding.playbook == "listener-failure"
        assert app.screen.selected_step() is not None  # the cursor is on the next step


def test_postmortem_says_delivered_only_when_the_outbox_delivered():
    from datetime import UTC, datetime

    from backends.engine.incidents import Incident, TimelineEntry, postmortem_markdown
    from backends.model import Severity

    at = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    inc = Incident(id="INC-1", title="api down", severity=Severity.P1, declared_at=at, declared_by="alice")
    inc.timeline.append(TimelineEntry(at=at, kind="escalation", text="escalated to Dev", by="alice",
                                      data={"action": "escalate", "level": "Dev", "result": "queued",
                                            "messages": ["m1", "m2"]}))
    assert "pending: 2 message(s) not delivered yet" in postmortem_markdown(inc, at, delivered=set())
    assert "1 of 2 message(s) delivered, 1 pending" in postmortem_markdown(inc, at, delivered={"m1"})
    assert "delivered (2 message(s))" in postmortem_markdown(inc, at, delivered={"m1", "m2"})
    assert "| queued |" not in postmortem_markdown(inc, at, delivered=set())


def test_a_resolved_incident_has_no_running_sla_clock():
    from datetime import UTC, datetime, timedelta

    from backends.engine.incidents import Incident
    from backends.model import Severity

    at = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    inc = Incident(id="INC-1", title="api down", severity=Severity.P1, declared_at=at, declared_by="alice",
                   response_s=3600.0)
    inc.status, inc.resolved_at = "resolved", at + timedelta(minutes=5)
    text = inc.sla(at + timedelta(hours=3)).text()
    assert "respond in" not in text and "BREACHED" not in text and "resolved" in text


async def test_a_declare_takes_the_findings_start_and_the_actions_done_before_it(tmp_path, monkeypatch):
    """Paused first, declared after (the exploit drill's order): the timeline and the
    postmortem show the pause, and the finding's start is when it appeared, not the declare."""
    from datetime import UTC, datetime, timedelta

    from backends.config import load_config_text
    from backends.engine.core import build_engine
    from backends.model import Finding, Severity, Snapshot

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    text = f"""
[warroom]
state_dir = "{tmp_path / 'state'}"
operator = "alice"

[[checks]]
name = "api"
kind = "http"
url = "http://127.0.0.1:9/health"

[[actions]]
name = "noop"
argv = ["true"]
danger = "confirm"
"""
    engine = build_engine(load_config_text(text, env={}, base_dir=tmp_path, path=tmp_path / "w.toml"),
                          with_logs=False)
    try:
        since = datetime.now(UTC) - timedelta(minutes=2)
        finding = Finding(key="logs:pattern:x", severity=Severity.P0, source="logs", summary="large releases",
                          playbook="contract-exploit", since=since)
        engine.incidents.observe(Snapshot(findings=(finding,)))
        plan = await engine.actions.plan("command.noop")
        assert (await engine.actions.execute(plan, confirmation=True)).ok
        await engine.audit.flush()
        plan = await engine.actions.plan("incident.declare", title="exploit", severity="P0", finding=finding.key)
        assert (await engine.actions.execute(plan, confirmation=True)).ok
        inc = engine.incidents.current()
        assert inc.findings[finding.key]["first"].startswith(since.isoformat(timespec="seconds")[:16])
        actions = [t for t in inc.timeline if t.kind == "action"]
        assert any(t.data.get("action") == "command.noop" for t in actions), inc.timeline
        text = engine.incidents.postmortem(inc.id)
        assert "command.noop" in text and "None recorded" not in text.split("## Actions taken", 1)[1][:200]
    finally:
        await engine.stop()


async def test_every_timeline_entry_is_stamped_by_the_managers_clock(tmp_path):
    """The timeline is written by the manager's (injected) clock, not the wall clock: status,
    severity, notes and field changes included (the newcomer saw entries out of order)."""
    t0 = utcnow() - timedelta(days=3)
    now = [t0]
    m = IncidentManager(LocalIncidentStore(tmp_path / "inc"), operator="alice", clock=lambda: now[0])
    await m.load()
    inc = await m.declare("bridge stalled", "P2")
    for i, step in enumerate((lambda: m.set_status(inc.id, "identified"), lambda: m.set_severity(inc.id, "P1"),
                              lambda: m.note(inc.id, "found it"), lambda: m.set_fields(inc.id, eta="10 min")), 1):
        now[0] = t0 + timedelta(minutes=i)
        await step()
    got = [(e.kind, e.at) for e in m.get(inc.id).timeline]
    assert got == [("declared", t0)] + [(k, t0 + timedelta(minutes=i))
                                        for i, k in enumerate(("status", "severity", "note", "note"), 1)], got
