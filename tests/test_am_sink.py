"""Alertmanager as a sink, against a real Alertmanager (Debian's prometheus-alertmanager,
tests/harness/alertmanager.py): an escalation is pushed as a `WarroomEscalation` alert
(labels, annotations, startsAt, endsAt) and read back from its /api/v2/alerts; resolving
the incident ends it (endsAt now); findings at or above the threshold are pushed and end
when they clear; findings read from an Alertmanager are never echoed back; a read-only
console pushes nothing; Alertmanager down: the escalation still goes, the push is retried."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from backends.clock import FakeClock
from backends.config import load_config_text
from backends.engine.core import build_engine
from backends.model import Finding, Severity
from tests.harness import alertmanager as _alertmanager_harness
from tests.harness import free_port, wait_until

alertmanager = _alertmanager_harness.alertmanager  # the session fixture

RUN = uuid.uuid4().hex[:8]

CONFIG = """
[warroom]
name = "sink-test"
state_dir = "{state}"
operator = "alice"
read_only = {ro}

[[escalation.levels]]
name = "Development team"
contacts = ["@oncall"]

[[escalation.levels]]
name = "Database support"
after = "60m"

[escalation.alertmanager]
url = "{url}"
labels = {{ team = "chain", run = "{run}" }}
findings = "P1"
interval = "30s"
"""


def make_engine(tmp_path, url, read_only=False, clock=None):
    text = CONFIG.format(state=tmp_path / "state", url=url, run=RUN, ro=str(read_only).lower())
    return build_engine(load_config_text(text, str(tmp_path / "warroom.toml")), with_logs=False, clock=clock)


def ours(am, active_only=True, **labels):
    out = []
    for a in am.alerts(active_only=active_only):
        lab = a["labels"]
        if lab.get("run") == RUN and all(lab.get(k) == v for k, v in labels.items()):
            out.append(a)
    return out


def when(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def run(engine, action, **params):
    plan = await engine.actions.plan(action, **params)
    return await engine.actions.execute(plan, confirmation=True)


@pytest.fixture
def am(alertmanager):
    yield alertmanager
    alertmanager.expire_all()  # leave the shared server clean for the next module


async def test_escalation_is_pushed_as_an_alert_and_resolve_ends_it(tmp_path, am):
    # the engine's clock stands still (it starts at the real time: the real Alertmanager
    # judges startsAt/endsAt by its own clock); every time the sink writes is read off it
    clock = FakeClock(datetime.now(UTC))
    engine = make_engine(tmp_path, am.url, clock=clock)
    try:
        await engine.incidents.load()
        assert (await run(engine, "incident.declare", title="Orders <stuck>", severity="P0")).ok
        inc = engine.incidents.current()
        plan = await engine.actions.plan("escalate", incident=inc.id, brief="ERRORS: listener silent\nline 2")
        assert any(c.target.startswith("Alertmanager http://127.0.0.1:") for c in plan.changes)
        res = await engine.actions.execute(plan, confirmation=True)
        assert res.ok and "alert pushed to Alertmanager" in res.summary, res.summary
        [a] = wait_until(lambda: ours(am, incident=inc.id), 10, "the escalation alert")
        lab, ann = a["labels"], a["annotations"]
        assert lab["alertname"] == "WarroomEscalation" and lab["level"] == "Development team"
        assert lab["severity"] == "critical" and lab["team"] == "chain" and lab["warroom"].startswith("sink-test@")
        assert ann["summary"] == "[P0] Orders <stuck>" and ann["description"] == "ERRORS: listener silent\nline 2"
        assert ann["contacts"] == "@oncall" and a["status"]["state"] == "active"
        started = when(engine.incidents.get(inc.id).escalation["started_at"])
        assert abs((when(a["startsAt"]) - started).total_seconds()) < 1
        # firing: endsAt = now + 4 x interval (resolves by itself if warroom stops refreshing it)
        assert abs((when(a["endsAt"]) - clock.now()).total_seconds() - 4 * 30) < 0.001  # (ms precision)
        # the next level is a second alert (routing by level), the first keeps firing
        assert (await run(engine, "escalate", incident=inc.id, level=1, brief="still down")).ok
        wait_until(lambda: len(ours(am, incident=inc.id)) == 2, 10, "two levels")
        assert {x["labels"]["level"] for x in ours(am, incident=inc.id)} == {"Development team", "Database support"}
        # acknowledged: still firing, the annotation says who
        assert (await run(engine, "incident.update", incident=inc.id, op="ack")).ok
        wait_until(lambda: all("acknowledged" in x["annotations"] for x in ours(am, incident=inc.id)), 10, "ack")
        # resolved: endsAt now, no longer active
        t_resolve = clock.now()
        assert (await run(engine, "incident.resolve", incident=inc.id, summary="fixed")).ok
        wait_until(lambda: not ours(am, incident=inc.id), 10, "the alerts resolved")
        everything = ours(am, active_only=False, incident=inc.id)
        for x in everything:  # if Alertmanager still lists them, they ended at the resolve
            assert when(x["endsAt"]) <= t_resolve
        assert engine.notifier.sink.last_error == ""
    finally:
        await engine.stop()


async def test_findings_at_or_above_the_threshold_are_pushed_and_end_when_cleared(tmp_path, am):
    engine = make_engine(tmp_path, am.url)
    sink = engine.notifier.sink
    try:
        now = datetime.now(UTC)

        class Snap:
            findings = [
                Finding(key=f"svc:api:{RUN}", severity=Severity.P1, source="services", summary="api down",
                        evidence=("HTTP 503 from /health", "3 restarts"), playbook="restart-service",
                        since=now - timedelta(minutes=3)),
                Finding(key=f"queue:mail:{RUN}", severity=Severity.P2, source="queues", summary="mail slow"),
                Finding(key=f"alert:alertmanager.fleet:{RUN}", severity=Severity.P0, source="alertmanager.fleet",
                        summary="echo"),
            ]

        sink.observe(Snap())
        await engine.notifier.push_sink()
        [a] = wait_until(lambda: ours(am, alertname="WarroomFinding"), 10, "the finding alert")
        assert a["labels"]["finding"] == f"svc:api:{RUN}" and a["labels"]["severity"] == "error"
        assert a["labels"]["source"] == "services"
        assert a["annotations"]["summary"] == "api down" and a["annotations"]["playbook"] == "restart-service"
        assert a["annotations"]["description"] == "HTTP 503 from /health\n3 restarts"
        assert abs((when(a["startsAt"]) - Snap.findings[0].since).total_seconds()) < 1
        # the P2 is below the threshold; the one read from an Alertmanager is not echoed back
        assert len(ours(am)) == 1

        class Cleared:
            findings: list = []

        sink.observe(Cleared())
        await engine.notifier.push_sink()
        wait_until(lambda: not ours(am), 10, "the finding alert resolved")
    finally:
        await engine.stop()


async def test_read_only_pushes_nothing(tmp_path, am):
    rw = make_engine(tmp_path, "http://127.0.0.1:1")  # not pushed anywhere real
    await rw.incidents.load()
    assert (await run(rw, "incident.declare", title="x", severity="P1")).ok
    inc = rw.incidents.current()
    assert (await run(rw, "escalate", incident=inc.id, brief="b")).ok
    await rw.stop()
    engine = make_engine(tmp_path, am.url, read_only=True)
    try:
        await engine.incidents.load()
        await engine.start()
        await engine.notifier.push_sink()
        assert engine.notifier.sink.pushes == 0 and not ours(am)
    finally:
        await engine.stop()


async def test_alertmanager_down_the_escalation_still_goes_and_the_push_is_retried(tmp_path, am):
    port = free_port()
    engine = make_engine(tmp_path, f"http://127.0.0.1:{port}")
    try:
        await engine.incidents.load()
        assert (await run(engine, "incident.declare", title="down", severity="P2")).ok
        inc = engine.incidents.current()
        res = await run(engine, "escalate", incident=inc.id, brief="b")
        assert res.ok and "not pushed yet" in res.summary, res.summary
        sink = engine.notifier.sink
        assert sink.last_error.startswith(f"Alertmanager http://127.0.0.1:{port}")
        import time

        assert sink.next_push - time.monotonic() <= 5.0  # retried within 5 s, not after the 30 s interval
        # the same sink pointed at the real server: the pending alert arrives
        from backends.sources.alertmanager import AlertmanagerClient

        sink.client = AlertmanagerClient(am.url, timeout=5)
        await engine.notifier.push_sink()
        wait_until(lambda: ours(am, incident=inc.id), 10, "the retried alert")
        assert sink.last_error == ""
    finally:
        await engine.stop()


async def test_a_real_finding_from_the_monitor_reaches_alertmanager_and_ends_when_fixed(tmp_path, am):
    """The engine's own monitor: a health check that fails is a P0 finding, pushed through the
    sink's monitor subscription; the service comes up, the finding clears, the alert ends."""
    from aiohttp import web

    port = free_port()
    text = CONFIG.format(state=tmp_path / "state", url=am.url, run=RUN, ro="false") + f"""
[[services]]
name = "api-{RUN}"
kind = "http"
health_url = "http://127.0.0.1:{port}/health"
"""
    engine = build_engine(load_config_text(text, str(tmp_path / "warroom.toml")), with_logs=False)
    runner = None
    try:
        snap = await engine.monitor.poll_once()
        [f] = [f for f in snap.findings if RUN in f.key]
        assert f.severity is Severity.P0
        await engine.notifier.push_sink()
        [a] = wait_until(lambda: ours(am, alertname="WarroomFinding"), 10, "the finding alert")
        assert a["labels"]["finding"] == f.key and a["labels"]["severity"] == "critical"
        assert "connection refused" in a["annotations"]["summary"]
        app = web.Application()
        app.router.add_get("/health", lambda request: web.json_response({"status": "ok"}))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        snap = await engine.monitor.poll_once()
        assert not [f for f in snap.findings if RUN in f.key]
        await engine.notifier.push_sink()
        wait_until(lambda: not ours(am, alertname="WarroomFinding"), 10, "the finding alert resolved")
    finally:
        await engine.stop()
        if runner is not None:
            await runner.cleanup()


def test_sink_config_is_checked():
    from backends.config import ConfigError

    ok = load_config_text('[escalation.alertmanager]\nurl = "http://u:secretpw@127.0.0.1:9093"\n'
                          'labels = { team = "chain" }\n')
    sink = ok.escalation.alertmanager
    assert sink.findings is None and sink.escalations and sink.interval == 60.0 and sink.labels == {"team": "chain"}
    summary = "\n".join(ok.summary())
    assert "alerts pushed to Alertmanager http://127.0.0.1:9093" in summary and "secretpw" not in summary
    with pytest.raises(ConfigError, match="not an Alertmanager label name"):
        load_config_text('[escalation.alertmanager]\nurl = "http://127.0.0.1:9093"\nlabels = { "bad-name" = "x" }\n')
    with pytest.raises(ConfigError, match="unknown severity 'high'"):
        load_config_text('[escalation.alertmanager]\nurl = "http://127.0.0.1:9093"\nfindings = "high"\n')
    with pytest.raises(ConfigError, match="url"):
        load_config_text('[escalation.alertmanager]\nurl = "ftp://127.0.0.1:9093"\n')


async def test_the_notifier_loop_re_sends_firing_alerts_every_interval(tmp_path, am):
    text = CONFIG.format(state=tmp_path / "state", url=am.url, run=RUN, ro="false").replace(
        'interval = "30s"', 'interval = "1s"')
    engine = build_engine(load_config_text(text, str(tmp_path / "warroom.toml")), with_logs=False)
    try:
        await engine.start()
        await engine.incidents.load()
        assert (await run(engine, "incident.declare", title="loop", severity="P1")).ok
        inc = engine.incidents.current()
        assert (await run(engine, "escalate", incident=inc.id, brief="b")).ok
        [first] = wait_until(lambda: ours(am, incident=inc.id), 10, "the alert")
        ends = when(first["endsAt"])
        # refreshed by the loop: endsAt moves forward (now + 4 x 1s), the alert stays active
        # (polled without blocking the event loop the notifier runs on)
        assert await async_wait(lambda: any(when(a["endsAt"]) > ends for a in ours(am, incident=inc.id)), 10)
        assert engine.notifier.sink.pushes >= 2 and engine.notifier.sink.last_error == ""
    finally:
        await engine.stop()
    # warroom stopped: nobody refreshes it, the alert resolves by itself after 4 x interval
    wait_until(lambda: not ours(am, incident=inc.id), 15, "the alert expired")


async def async_wait(cond, within):
    import asyncio
    import time

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.1)
    return cond()
