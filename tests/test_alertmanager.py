"""Alertmanager v2 as a source and silences as actions, against a real Alertmanager
(Debian 0.25, tests/harness/alertmanager.py): alerts are posted with its API, read
back as findings, silenced and un-silenced through the action engine, and every
change is verified on the server."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from backends.config import load_config_text
from backends.engine.audit import AuditLog
from backends.engine.core import build_engine
from backends.errors import ActionRefused
from backends.model import CheckReading, Severity, Status
from backends.sources.alertmanager import (
    AlertmanagerError,
    AlertmanagerSource,
    AlertReading,
    parse_matchers,
)
from backends.sources.http import HttpCheck
from tests.harness import alertmanager as _alertmanager_harness
from tests.harness import free_port, wait_until

alertmanager = _alertmanager_harness.alertmanager  # the session fixture


def _config(am_url: str, tmp_path, extra: str = "", read_only: bool = False):
    return load_config_text(
        f'[warroom]\nstate_dir = "{tmp_path}"\noperator = "alice"\nread_only = {str(read_only).lower()}\n'
        f'[alertmanager.fleet]\nurl = "{am_url}"\ninterval = "5s"\n{extra}')


def _alert(name: str, severity: str | None, starts_at: datetime | None = None, **labels: str) -> dict:
    lab = {"alertname": name, "run": RUN, **labels}
    if severity is not None:
        lab["severity"] = severity
    alert = {"labels": lab, "annotations": {"summary": f"{name} is happening", "description": f"{name} details"},
             "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=up"}
    if starts_at is not None:
        alert["startsAt"] = starts_at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{starts_at.microsecond // 1000:03d}Z"
    return alert


RUN = uuid.uuid4().hex[:8]  # this run's alerts carry run=RUN (the server is shared by the session)


async def _poll(engine):
    """(readings of the fleet source, findings) after one poll, judged by the engine's monitor."""
    snap = await engine.monitor.poll_once()
    return snap.readings["alertmanager.fleet"], snap.findings


@pytest.fixture
async def fleet(alertmanager, tmp_path):
    alertmanager.expire_all()
    wait_until(lambda: not alertmanager.alerts(active_only=False), 15, "a clean Alertmanager")
    engine = build_engine(_config(alertmanager.url, tmp_path,
                                  '[alertmanager.fleet.severity]\nwarning = "P1"\nnoise = "P3"\n'),
                          with_logs=False)
    yield engine
    await engine.stop()


async def test_firing_alerts_are_findings_with_mapped_severity(alertmanager, fleet):
    started = (datetime.now(UTC) - timedelta(minutes=7)).replace(microsecond=250000)  # the alert's own start
    alertmanager.post_alerts([_alert("DiskFull", "critical", started, instance="db-1:9100"),
                              _alert("HighLatency", "warning", service="api-gateway"),
                              _alert("Chatty", "noise"), _alert("NoSeverity", None)])
    wait_until(lambda: len(alertmanager.alerts()) >= 4, 10, "alerts stored")
    readings, found = await _poll(fleet)
    alerts = [r for r in readings if isinstance(r, AlertReading)]
    assert {a.name for a in alerts} == {"DiskFull", "HighLatency", "Chatty", "NoSeverity"}
    findings = {f.summary.split(" ")[0].split(":")[0]: f for f in found if f.key.startswith("alert:")}
    disk = findings["DiskFull"]
    assert disk.severity is Severity.P1  # critical -> P1 (default map)
    assert disk.summary == "DiskFull on db-1:9100: DiskFull is happening"
    assert any("instance=db-1:9100" in e for e in disk.evidence)
    assert any(e.startswith("source: http://127.0.0.1:9090/graph") for e in disk.evidence)
    posted = next(a for a in alertmanager.alerts() if a["labels"]["alertname"] == "DiskFull")
    assert disk.since == datetime.fromisoformat(posted["startsAt"].replace("Z", "+00:00")).replace(
        microsecond=disk.since.microsecond)
    assert disk.since == started  # the alert's start, not when warroom saw it (no tolerance on any clock)
    assert findings["HighLatency"].severity is Severity.P1  # warning -> P1 (configured)
    assert findings["Chatty"].severity is Severity.P3  # configured label value
    assert findings["NoSeverity"].severity is Severity.P2  # default_severity
    (summary,) = [r for r in readings if isinstance(r, CheckReading) and r.kind == "alertmanager"]
    assert summary.status is Status.WARN and summary.detail.startswith("4 firing")


async def test_expect_empty_list_fails_while_alerts_fire(alertmanager, fleet):
    """`expect = "[]"` on /api/v2/alerts: CRIT while an alert fires (it used to pass: every
    alert holds "silencedBy":[]), OK once none is active."""
    url = f"{alertmanager.url}/api/v2/alerts?active=true&silenced=false&inhibited=false"
    check = HttpCheck("no-alerts", url, expect_text="[]")
    (r,) = await check.poll()
    assert r.status is Status.OK, r.detail
    alertmanager.post_alerts([_alert("Boom", "critical")])
    wait_until(lambda: alertmanager.alerts(), 10, "alert stored")
    (r,) = await check.poll()
    assert r.status is Status.CRIT and "a list of 1 item(s) (expected '[]')" in r.detail
    alertmanager.expire_all()
    wait_until(lambda: not alertmanager.alerts(), 10, "alert resolved")
    (r,) = await check.poll()
    assert r.status is Status.OK


async def test_silence_and_expire_through_the_engine(alertmanager, fleet, tmp_path):
    alertmanager.post_alerts([_alert("QueueBacklog", "critical", queue="mail"),
                              _alert("QueueBacklog", "critical", queue="default"),
                              _alert("Other", "warning")])
    wait_until(lambda: len(alertmanager.alerts()) >= 3, 10, "alerts stored")
    await _poll(fleet)
    sid_action = "alertmanager.fleet.silence"
    plan = await fleet.actions.plan(sid_action, matchers=f'alertname="QueueBacklog",queue=~"ma.*",run="{RUN}"',
                                    duration="30m", comment="draining the mail queue", reason="INC-7")
    assert "mutes now: 1 firing alert(s)" in plan.preview and "queue=mail" in plan.preview
    assert "created by: alice" in plan.preview and "for 30m" in plan.preview
    with pytest.raises(ActionRefused, match="not confirmed"):
        await fleet.actions.execute(plan)
    assert not [s for s in alertmanager.silences() if s["status"]["state"] == "active"]
    result = await fleet.actions.execute(plan, confirmation=True)
    assert result.ok, result.summary
    sid = result.after["silence_id"]
    # on the server: active, by the operator, with the comment, for 30 minutes
    (s,) = [s for s in alertmanager.silences() if s["id"] == sid]
    assert s["status"]["state"] == "active" and s["createdBy"] == "alice" and s["comment"] == "draining the mail queue"
    span = (datetime.fromisoformat(s["endsAt"].replace("Z", "+00:00"))
            - datetime.fromisoformat(s["startsAt"].replace("Z", "+00:00"))).total_seconds()
    assert 1795 <= span <= 1805
    assert {"name": "queue", "value": "ma.*", "isRegex": True, "isEqual": True} in s["matchers"]
    wait_until(lambda: [a for a in alertmanager.get("/api/v2/alerts?silenced=true&active=false")
                        if a["labels"].get("queue") == "mail"], 10, "the mail alert silenced")
    readings, found = await _poll(fleet)
    backlog = [f for f in found if f.summary.startswith("QueueBacklog")]
    assert len(backlog) == 1 and any("queue=default" in e for e in backlog[0].evidence)
    silenced_rows = [r for r in readings if isinstance(r, CheckReading) and r.kind == "alertmanager-silence"]
    assert any(sid[:8] in r.name and "by alice: draining the mail queue" in r.detail for r in silenced_rows)
    # audited: an intent and an outcome, the operator named
    entries = [e for e in fleet.audit.entries(intents=True) if e.get("action") == sid_action]
    assert [e.get("result") for e in entries][-2:] == ["started", "ok"]
    assert all(e.get("operator") == "alice" for e in entries)
    # expire it: preview names what it mutes; the server says expired; the alert fires again
    plan = await fleet.actions.plan("alertmanager.fleet.expire", silence=sid[:8], reason="mail drained")
    assert "draining the mail queue" in plan.preview and "QueueBacklog" in plan.preview
    result = await fleet.actions.execute(plan, confirmation="yes")
    assert result.ok, result.summary
    assert alertmanager.get(f"/api/v2/silence/{sid}")["status"]["state"] == "expired"
    wait_until(lambda: len(alertmanager.alerts()) >= 3, 10, "the mail alert fires again")
    with pytest.raises(ActionRefused, match="no active silence"):
        await fleet.actions.plan("alertmanager.fleet.expire", silence=sid[:8])
    # expiring an expired silence by its full id: the guard refuses, audited
    plan2 = await fleet.actions.plan("alertmanager.fleet.expire", silence=sid)
    assert not plan2.guard.ok
    result = await fleet.actions.execute(plan2, confirmation=True)
    assert result.status == "refused" and "expired" in result.summary


async def test_silence_one_alert_by_fingerprint(alertmanager, fleet):
    alertmanager.post_alerts([_alert("Flappy", "warning", instance="a"), _alert("Flappy", "warning", instance="b")])
    wait_until(lambda: len(alertmanager.alerts()) >= 2, 10, "alerts stored")
    target = next(a for a in alertmanager.alerts() if a["labels"].get("instance") == "b")
    plan = await fleet.actions.plan("alertmanager.fleet.silence", alert=target["fingerprint"], comment="known flap")
    assert "mutes now: 1 firing alert(s)" in plan.preview
    result = await fleet.actions.execute(plan, confirmation=True)
    assert result.ok
    wait_until(lambda: [a["labels"]["instance"] for a in alertmanager.alerts()] == ["a"], 10, "only b silenced")


async def test_bad_silence_input_is_refused_before_anything(alertmanager, fleet):
    act = "alertmanager.fleet.silence"
    with pytest.raises(ActionRefused) as e:
        await fleet.actions.plan(act, comment="x")
    assert e.value.ask and e.value.focus == "matchers"
    with pytest.raises(ActionRefused, match="match every alert"):
        await fleet.actions.plan(act, matchers='alertname=~".*"', comment="x")
    with pytest.raises(ActionRefused, match="out of range"):
        await fleet.actions.plan(act, matchers='alertname="X"', duration="10s", comment="x")
    with pytest.raises(ActionRefused, match="comment is required"):
        await fleet.actions.plan(act, matchers='alertname="X"')
    with pytest.raises(ActionRefused, match="bad label matcher"):
        await fleet.actions.plan(act, matchers="alertname=X", comment="x")
    assert not [s for s in alertmanager.silences() if s["status"]["state"] != "expired"]


async def test_read_only_refuses_silences_in_the_engine(alertmanager, tmp_path):
    engine = build_engine(_config(alertmanager.url, tmp_path, read_only=True), with_logs=False)
    try:
        plan = await engine.actions.plan("alertmanager.fleet.silence", matchers='alertname="X"', comment="c")
        before = len(alertmanager.silences())
        with pytest.raises(ActionRefused, match="read-only"):
            await engine.actions.execute(plan, confirmation=True)
        assert len(alertmanager.silences()) == before
        (e,) = [e for e in engine.audit.entries() if e.get("action") == "alertmanager.fleet.silence"]
        assert e["result"] == "refused"
        assert not [a for a in engine.actions.available() if a.id.startswith("alertmanager.")]
    finally:
        await engine.stop()


async def test_unreachable_alertmanager_is_a_failed_poll_never_no_alerts():
    src = AlertmanagerSource("gone", f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(AlertmanagerError, match="connection refused"):  # at once: refused, not timed out
        await src.poll()


def test_matchers_parse_like_amtool():
    assert parse_matchers('alertname="X", instance=~"db.*",env!="dev"') == [
        {"name": "alertname", "value": "X", "isRegex": False, "isEqual": True},
        {"name": "instance", "value": "db.*", "isRegex": True, "isEqual": True},
        {"name": "env", "value": "dev", "isRegex": False, "isEqual": False}]
    assert parse_matchers('{alertname="X"}')[0]["value"] == "X"
    with pytest.raises(ValueError):
        parse_matchers('env!="prod"')  # matches every alert without env


def test_config_errors_are_clear():
    from backends.config import ConfigError

    with pytest.raises(ConfigError, match="severity"):
        load_config_text('[alertmanager.x]\nurl = "http://127.0.0.1:9093"\n[alertmanager.x.severity]\ncritical = "P9"\n')
    with pytest.raises(ConfigError, match="silence_duration"):
        load_config_text('[alertmanager.x]\nurl = "http://127.0.0.1:9093"\nsilence_duration = "10s"\n')
    cfg = load_config_text('[alertmanager.x]\nurl = "http://127.0.0.1:9093"\n')
    assert cfg.watches == ("alertmanager",)


def test_health_json_carries_alerts_and_silences(alertmanager, tmp_path, capsys):
    """`warroom health --json` on a config with [alertmanager.fleet]: a firing critical alert
    is a P1 finding (exit 2), the source's detail names the alert and the silence."""
    import json

    from tui import cli

    alertmanager.expire_all()
    wait_until(lambda: not alertmanager.alerts(active_only=False), 15, "a clean Alertmanager")
    alertmanager.post_alerts([_alert("HealthJson", "critical", instance="api-1"), _alert("Muted", "warning")])
    wait_until(lambda: len(alertmanager.alerts()) >= 2, 10, "alerts stored")
    now = time.time()
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
    import urllib.request

    req = urllib.request.Request(
        f"{alertmanager.url}/api/v2/silences", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"matchers": [{"name": "alertname", "value": "Muted", "isRegex": False, "isEqual": True}],
                         "startsAt": iso(now - 1), "endsAt": iso(now + 3600), "createdBy": "bob",
                         "comment": "maintenance"}).encode())
    with urllib.request.urlopen(req, timeout=5):
        pass
    wait_until(lambda: len(alertmanager.alerts()) == 1, 10, "Muted silenced")
    cfg = tmp_path / "w.toml"
    cfg.write_text(f'[warroom]\nstate_dir = "{tmp_path}"\n[alertmanager.fleet]\nurl = "{alertmanager.url}"\n')
    capsys.readouterr()
    code = cli.main(["health", "--json", "--config", str(cfg)])
    doc = json.loads(capsys.readouterr().out)
    assert code == 2
    (f,) = [f for f in doc["findings"] if f["key"].startswith("alert:")]
    assert f["severity"] == "P1" and f["summary"] == "HealthJson on api-1: HealthJson is happening"
    (src,) = [s for s in doc["sources"] if s["name"] == "alertmanager.fleet"]
    detail = "\n".join(src["detail"])
    assert "1 firing; 1 silenced or inhibited; 1 silence" in detail
    assert "alert HealthJson (critical) firing since" in detail and "alert Muted (warning) silenced" in detail
    assert "by bob: maintenance" in detail
    assert src["area"] == "alerts"
    # `health alerts`: only the Alertmanagers (another area holds none of them)
    code = cli.main(["health", "alerts", "--json", "--config", str(cfg)])
    doc = json.loads(capsys.readouterr().out)
    assert code == 2 and [s["name"] for s in doc["sources"]] == ["alertmanager.fleet"]
    assert cli.main(["health", "chain", "--json", "--config", str(cfg)]) == 3  # nothing configured there
    capsys.readouterr()


async def test_filter_and_severity_label_from_config(alertmanager, tmp_path):
    """filter = matchers sent as the API's filter (only this team's alerts); severity_label
    names the label that carries the severity; a finding's target silences its alert."""
    alertmanager.expire_all()
    wait_until(lambda: not alertmanager.alerts(active_only=False), 15, "a clean Alertmanager")
    alertmanager.post_alerts([_alert("ChainLag", None, team="chain", priority="page"),
                              _alert("WebSlow", "critical", team="web")])
    wait_until(lambda: len(alertmanager.alerts()) >= 2, 10, "alerts stored")
    engine = build_engine(_config(alertmanager.url, tmp_path,
                                  "filter = ['team=\"chain\"']\nseverity_label = \"priority\"\n"), with_logs=False)
    try:
        readings, found = await _poll(engine)
        assert [r.name for r in readings if isinstance(r, AlertReading)] == ["ChainLag"]
        (f,) = [f for f in found if f.key.startswith("alert:")]
        assert f.severity is Severity.P1 and f.summary.startswith("ChainLag")  # priority=page -> P1
        plan = await engine.actions.plan("alertmanager.fleet.silence", alert=f.target, comment="lagging node swapped")
        assert "mutes now: 1 firing alert(s)" in plan.preview and "ChainLag" in plan.preview
    finally:
        await engine.stop()


async def test_an_alert_is_silenced_from_the_findings_pane_with_the_key_it_shows(alertmanager, tmp_path):
    """Through the console: the alert's finding names its step "[m] Silence it…"; m opens the
    dialog with the matchers from the alert's labels and the finding as the silence's comment,
    enter creates the silence on the real server (by the operator, audited) and the finding
    goes away on the next poll: two keys."""
    from tests.test_console_gaps import console_app, until
    from tui.screens.action import ActionScreen

    alertmanager.expire_all()
    wait_until(lambda: not alertmanager.alerts(active_only=False), 15, "a clean Alertmanager")
    config = load_config_text(
        f'[warroom]\nstate_dir = "{tmp_path}"\noperator = "alice"\n'
        f'[alertmanager.fleet]\nurl = "{alertmanager.url}"\ninterval = "1s"\n')
    alertmanager.post_alerts([_alert("ReplicaLag", "critical", instance="db-2:9187")])
    wait_until(lambda: alertmanager.alerts(), 10, "alert stored")
    app = console_app(config)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.engine is not None, what="engine")
        pane = app.dashboard.pane("findings")
        await until(pilot, lambda: any(k.startswith("alert:alertmanager.fleet:") for k in pane.row_keys()),
                    what="the alert's finding")
        key = next(k for k in pane.row_keys() if k.startswith("alert:"))
        await until(pilot, lambda: pane.next_step_text(key).startswith("[m] Silence it"), what="its step")
        await pilot.press("2")
        pane.table.move_cursor(row=pane.row_keys().index(key))
        await pilot.pause()
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="the dialog")
        modal = app.screen
        assert modal.plan.action == "alertmanager.fleet.silence"
        assert 'instance="db-2:9187"' in modal.plan.preview and "mutes now: 1 firing alert(s)" in modal.plan.preview
        # the comment everyone who sees the silence reads: the finding the operator acted on
        assert "comment: P1 ReplicaLag on db-2:9187: ReplicaLag is happening" in modal.plan.preview
        await pilot.press("enter")
        await until(pilot, lambda: modal.state == "done", what="executed")
        assert modal.result.ok, modal.result.summary
        await pilot.press("enter")
        (s,) = [s for s in alertmanager.silences() if s["status"]["state"] == "active"]
        assert s["createdBy"] == "alice" and s["comment"] == "P1 ReplicaLag on db-2:9187: ReplicaLag is happening"
        await until(pilot, lambda: key not in pane.row_keys(), limit=20, what="the finding gone (silenced)")
    entries = [e for e in AuditLog(config.audit_path).entries() if e.get("action") == "alertmanager.fleet.silence"]
    assert [(e["result"], e["operator"]) for e in entries] == [("ok", "alice")]
    alertmanager.expire_all()
