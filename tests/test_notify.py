"""Escalation through apprise to a real local HTTP receiver, PagerDuty-shaped events to a
local endpoint, the on-disk outbox (down, then up: every message exactly once),
automatic escalation of the next level, and read-only refusal."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import timedelta

import pytest

from backends.actions.notify import Notifier, Outbox
from backends.config import load_config_text
from backends.engine.core import build_engine
from backends.errors import ActionRefused


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A local aiohttp server recording every POST (webhooks and PagerDuty events)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.hooks: list[dict] = []
        self.events: list[dict] = []
        self.runner = None
        self.pd_status = 202

    async def start(self) -> None:
        from aiohttp import web

        async def hook(request):
            body = await request.json()
            self.hooks.append({"id": request.headers.get("X-Warroom-Message-Id"), "body": body,
                               "path": request.path})
            return web.json_response({"ok": True})

        async def pd(request):
            body = await request.json()
            if self.pd_status != 202:
                return web.json_response({"status": "error"}, status=self.pd_status)
            self.events.append(body)
            return web.json_response({"status": "success", "dedup_key": body.get("dedup_key")}, status=202)

        app = web.Application()
        app.router.add_post("/hook/{level}", hook)
        app.router.add_post("/v2/enqueue", pd)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


CONFIG = """
[warroom]
name = "notify-test"
state_dir = "{state}"
operator = "alice"

[escalation]
ack_timeout = "30m"

[[escalation.levels]]
name = "Development team"
after = "0m"
contacts = ["@oncall"]
channels = ["json://127.0.0.1:{port}/hook/dev"]
provide = ["Error messages from logs", "Affected order count"]

[[escalation.levels]]
name = "Infrastructure support"
after = "30m"
contacts = ["support@provider.example"]
channels = ["json://127.0.0.1:{port}/hook/infra"]

[[escalation.levels]]
name = "Database support"
after = "60m"
channels = ["json://127.0.0.1:{port}/hook/db"]

[[escalation.levels]]
name = "Emergency maintenance"
after = "90m"
channels = ["json://127.0.0.1:{port}/hook/emergency"]

[escalation.pagerduty]
routing_key = "R0UTINGKEYFORTESTS00000000000000"
url = "http://127.0.0.1:{port}/v2/enqueue"
"""


def make_engine(tmp_path, port, **kw):
    text = CONFIG.format(state=tmp_path / "state", port=port)
    config = load_config_text(text, str(tmp_path / "warroom.toml"))
    return build_engine(config, **kw)


async def wait_for(cond, within=10.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return cond()


async def run(engine, action, confirmation=True, **params):
    plan = await engine.actions.plan(action, **params)
    return await engine.actions.execute(plan, confirmation=confirmation)


async def declare(engine, **kw):
    await engine.incidents.load()
    res = await run(engine, "incident.declare", title=kw.pop("title", "Orders stuck"),
                    severity=kw.pop("severity", "P1"), **kw)
    assert res.ok, res.summary
    return engine.incidents.current()


async def test_escalation_reaches_receiver_and_pagerduty(tmp_path):
    port = free_port()
    rx = Receiver(port)
    await rx.start()
    engine = make_engine(tmp_path, port)
    try:
        inc = await declare(engine)
        res = await run(engine, "escalate", incident=inc.id, level="Development team",
                        brief="ERRORS: listener silent\nAFFECTED ORDERS: 3")
        assert res.ok and res.counts["sent"] == 2 and res.counts["pending"] == 0, res.summary
        assert len(rx.hooks) == 1
        hook = rx.hooks[0]
        assert hook["path"] == "/hook/dev"
        assert "AFFECTED ORDERS: 3" in hook["body"]["message"]
        assert hook["body"]["title"] == f"[P1] {inc.title}"
        assert hook["id"] and hook["body"].get("warroom_message_id") == hook["id"]
        [ev] = rx.events
        assert ev["event_action"] == "trigger" and ev["dedup_key"] == inc.id
        assert ev["routing_key"] == "R0UTINGKEYFORTESTS00000000000000"
        assert ev["payload"]["severity"] == "error" and ev["payload"]["summary"] == f"[P1] {inc.title}"
        assert ev["payload"]["source"].startswith("notify-test@")
        # acknowledge and resolve travel to PagerDuty with the same dedup_key
        assert (await run(engine, "incident.update", incident=inc.id, op="ack")).ok
        assert (await run(engine, "incident.resolve", incident=inc.id, summary="listener restarted")).ok
        assert [e["event_action"] for e in rx.events] == ["trigger", "acknowledge", "resolve"]
        assert {e["dedup_key"] for e in rx.events} == {inc.id}
        # the escalation is on the timeline and in the audit; the routing key is not in the audit
        inc = engine.incidents.get(inc.id)
        assert any(t.kind == "escalation" and "Development team" in t.text for t in inc.timeline)
        audit = engine.audit.path.read_text()
        assert '"action":"escalate"' in audit and "R0UTINGKEY" not in audit
        assert not engine.notifier.pending()
    finally:
        await engine.stop()
        await rx.stop()


async def test_receiver_down_then_up_gets_every_message_exactly_once(tmp_path):
    port = free_port()
    rx = Receiver(port)
    engine = make_engine(tmp_path, port)
    try:
        inc = await declare(engine)
        # the receiver is down: the action still succeeds, the messages wait in the outbox
        for i in range(3):
            res = await run(engine, "escalate", incident=inc.id, level=0, brief=f"brief number {i}")
            assert res.ok and res.counts["pending"] == 2, res.summary
        pending = engine.notifier.pending()
        assert len(pending) == 6 and all(m.attempts == 1 and m.last_error for m in pending)
        assert all("127.0.0.1" in m.label or m.label == "PagerDuty" for m in pending)
        # backoff: nothing is retried before its time
        assert await engine.notifier.flush() == (0, 0)
        # the outbox survives a restart: a new notifier on the same folder sees the same messages
        again = Notifier(engine.config, Outbox(engine.config.state_dir / "outbox"))
        assert {m.id for m in again.pending()} == {m.id for m in pending}
        # nothing on disk is a secret
        for p in (engine.config.state_dir / "outbox").iterdir():
            assert "R0UTINGKEY" not in p.read_text()
        await rx.start()
        sent, failed = await again.flush(force=True)
        assert (sent, failed) == (6, 0)
        # a second flush (the first notifier's loop, or a retry) sends nothing again
        assert await engine.notifier.flush(force=True) == (0, 0)
        assert await again.flush(force=True) == (0, 0)
        ids = [h["id"] for h in rx.hooks]
        assert len(ids) == 3 and len(set(ids)) == 3
        assert sorted(h["body"]["message"] for h in rx.hooks) == [f"brief number {i}" for i in range(3)]
        assert len(rx.events) == 3 and all(e["dedup_key"] == inc.id for e in rx.events)
        assert not engine.notifier.pending() and not again.pending()
    finally:
        await engine.stop()
        await rx.stop()


async def test_pagerduty_refusal_is_kept_as_dead_not_lost(tmp_path):
    port = free_port()
    rx = Receiver(port)
    rx.pd_status = 400
    await rx.start()
    engine = make_engine(tmp_path, port)
    try:
        inc = await declare(engine)
        res = await run(engine, "escalate", incident=inc.id, brief="brief")
        assert res.counts == {"sent": 1, "pending": 1}
        [msg] = engine.notifier.pending()
        assert msg.kind == "pagerduty" and msg.status == "dead" and "HTTP 400" in msg.last_error
        rx.pd_status = 202
        await engine.notifier.retry(msg.id)
        assert not engine.notifier.pending() and len(rx.events) == 1
    finally:
        await engine.stop()
        await rx.stop()


async def test_next_level_escalates_by_itself_without_acknowledgement(tmp_path):
    port = free_port()
    rx = Receiver(port)
    await rx.start()
    engine = make_engine(tmp_path, port)
    try:
        inc = await declare(engine, severity="P0")
        await run(engine, "escalate", incident=inc.id, level=0, brief="the reviewed brief")
        n = engine.notifier
        t0 = n.clock()
        assert await n.tick() == []  # level 2 is due after 30 min
        n.clock = lambda: t0 + timedelta(minutes=31)
        assert await n.tick() == [(inc.id, 1)]
        assert await n.tick() == []  # never twice
        await n.flush()
        assert [h["path"] for h in rx.hooks] == ["/hook/dev", "/hook/infra"]
        assert "the reviewed brief" in rx.hooks[1]["body"]["message"]
        assert "No acknowledgement" in rx.hooks[1]["body"]["message"]
        # acknowledged: no further level, whatever the time
        assert (await run(engine, "incident.update", incident=inc.id, op="ack")).ok
        n.clock = lambda: t0 + timedelta(hours=5)
        assert await n.tick() == []
        inc = engine.incidents.get(inc.id)
        assert inc.escalation["levels_sent"] == [0, 1]
        auto = [t for t in inc.timeline if t.kind == "escalation" and "automatically" in t.text]
        assert len(auto) == 1 and "Infrastructure support" in auto[0].text
    finally:
        await engine.stop()
        await rx.stop()


async def test_the_notifier_loop_retries_until_delivered(tmp_path):
    port = free_port()
    rx = Receiver(port)
    engine = make_engine(tmp_path, port)
    engine.notifier.backoff = (0.2,)
    try:
        await engine.start()
        inc = await declare(engine)
        res = await run(engine, "escalate", incident=inc.id, brief="retry me")
        assert res.counts["pending"] == 2
        await rx.start()
        assert await wait_for(lambda: not engine.notifier.pending(), 10), engine.notifier.pending()
        assert len(rx.hooks) == 1 and len(rx.events) == 1
    finally:
        await engine.stop()
        await rx.stop()


async def test_escalate_plan_refuses_bad_input(tmp_path):
    engine = make_engine(tmp_path, free_port())
    try:
        await engine.incidents.load()
        with pytest.raises(ActionRefused, match="no open incident"):
            await engine.actions.plan("escalate", brief="x")
        inc = await declare(engine)
        with pytest.raises(ActionRefused, match="brief is empty"):
            await engine.actions.plan("escalate", incident=inc.id, brief="  ")
        with pytest.raises(ActionRefused, match="no escalation level"):
            await engine.actions.plan("escalate", incident=inc.id, level="Nobody", brief="b")
        plan = await engine.actions.plan("escalate", incident=inc.id, level=1, brief="b")
        assert [c.target for c in plan.changes] == [f"json://127.0.0.1:{engine.notifier.levels[1].channels[0].display().rsplit(':', 1)[1]}", "PagerDuty"]
        assert "R0UTINGKEY" not in json.dumps([c.description for c in plan.changes]) + plan.preview
    finally:
        await engine.stop()


async def test_read_only_refuses_escalation_and_incident_changes(tmp_path):
    port = free_port()
    rw = make_engine(tmp_path, port)
    inc = await declare(rw)
    await rw.stop()
    engine = make_engine(tmp_path, port, read_only=True)
    try:
        await engine.incidents.load()
        attempts = [
            ("incident.declare", {"title": "x", "severity": "P2"}),
            ("incident.update", {"incident": inc.id, "op": "note", "value": "hello"}),
            ("incident.update", {"incident": inc.id, "op": "ack"}),
            ("incident.resolve", {"incident": inc.id}),
            ("escalate", {"incident": inc.id, "brief": "b"}),
        ]
        for action, params in attempts:
            plan = await engine.actions.plan(action, **params)  # planning is allowed: it changes nothing
            with pytest.raises(ActionRefused, match="read-only"):
                await engine.actions.execute(plan, confirmation=True)
        assert {a.id for a in engine.actions.available()}.isdisjoint(
            {"incident.declare", "incident.update", "incident.resolve", "escalate"})
        await engine.incidents.load()
        assert engine.incidents.get(inc.id).open and not engine.notifier.pending()
        refused = [e for e in engine.audit.entries() if e.get("result") == "refused"]
        assert len(refused) == len(attempts)
    finally:
        await engine.stop()


# --------------------------------------------------------------------------- the escalate screen (Pilot)


def host(factory):
    from textual.app import App

    class _Host(App):
        def on_mount(self) -> None:
            self.push_screen(factory())

    return _Host()


async def until(pilot, cond, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return True
        await pilot.pause(0.05)
    return cond()


async def test_escalate_screen_review_edit_send_and_pending(tmp_path):
    from textual.widgets import DataTable, Static, TextArea

    from tui.screens.action import ActionScreen
    from tui.screens.escalate import EscalateScreen

    port = free_port()
    rx = Receiver(port)
    await rx.start()
    engine = make_engine(tmp_path, port)
    try:
        inc = await declare(engine)
        app = host(lambda: EscalateScreen(engine, incident_id=inc.id))
        async with app.run_test(size=(120, 44)) as pilot:
            screen = app.screen
            assert await until(pilot, lambda: screen.brief_ready)
            area = screen.query_one("#escalate-brief", TextArea)
            assert f"INCIDENT {inc.id}" in area.text and "AFFECTED ORDERS" in area.text
            assert "asked for: Error messages from logs; Affected order count" in area.text
            assert "Development team" in str(screen.query_one("#escalate-level", Static).render())
            # the operator edits the brief before sending
            area.focus()
            area.move_cursor(area.document.end)
            await pilot.press("enter", *"EDITED", "space", *"LINE")
            await pilot.press("ctrl+s")
            assert await until(pilot, lambda: isinstance(app.screen, ActionScreen))
            await pilot.press("enter")
            assert await until(pilot, lambda: len(rx.hooks) == 1 and len(rx.events) == 1)
            assert rx.hooks[0]["body"]["message"].endswith("EDITED LINE")
            await pilot.press("enter")  # close the result
            assert await until(pilot, lambda: app.screen is screen)
            # the next level is one key away; with the receiver down the messages stay pending
            await rx.stop()
            table = screen.query_one("#escalate-outbox", DataTable)
            table.focus()
            await pilot.press("right_square_bracket")
            assert screen.level == 1
            assert "Infrastructure support" in str(screen.query_one("#escalate-level", Static).render())
            assert await until(pilot, lambda: screen.brief_ready)
            await pilot.press("ctrl+s")
            assert await until(pilot, lambda: isinstance(app.screen, ActionScreen))
            await pilot.press("enter")
            assert await until(pilot, lambda: len(engine.notifier.pending()) == 2)
            await pilot.press("enter")
            assert await until(pilot, lambda: app.screen is screen)
            assert await until(pilot, lambda: table.row_count == 2)
            assert "OUTBOX: 2 message(s)" in str(screen.query_one("#escalate-outbox-title", Static).render())
            # back up: retry now delivers them and the outbox empties
            await rx.start()
            await pilot.press("ctrl+t")
            assert await until(pilot, lambda: table.row_count == 0)
            assert [h["path"] for h in rx.hooks] == ["/hook/dev", "/hook/infra"]
    finally:
        await engine.stop()
        await rx.stop()


def test_email_channels_send_plain_text():
    """Email through apprise: `format=text` unless the URL chose a format; other channels untouched."""
    from backends.actions.notify import _text_format

    assert _text_format("mailto://user:pw@example.org") == "mailto://user:pw@example.org?format=text"
    assert _text_format("mailtos://example.org?to=a@b.c") == "mailtos://example.org?to=a@b.c&format=text"
    assert _text_format("mailto://example.org?format=markdown") == "mailto://example.org?format=markdown"
    assert _text_format("json://127.0.0.1:1/hook") == "json://127.0.0.1:1/hook"


async def test_read_only_notifier_never_starts_its_loop_or_sends(tmp_path):
    port = free_port()
    rx = Receiver(port)
    await rx.start()
    rw = make_engine(tmp_path, port)
    try:
        inc = await declare(rw)
        plan = await rw.actions.plan("escalate", incident=inc.id, brief="b")
        await rx.stop()  # the receiver is down: the messages stay pending in the outbox
        await rw.actions.execute(plan, confirmation=True)
        assert rw.notifier.pending()
    finally:
        await rw.stop()
    await rx.start()  # back up: a read-only process must still not send them
    engine = make_engine(tmp_path, port, read_only=True)
    try:
        await engine.start()
        assert engine.notifier._task is None
        for _ in range(3):
            assert await engine.notifier.tick() == []
        with pytest.raises(ActionRefused, match="read-only"):
            await engine.notifier.flush(force=True)
        assert rx.hooks == [] and rx.events == [] and len(engine.notifier.pending()) == 2
    finally:
        await engine.stop()
        await rx.stop()
