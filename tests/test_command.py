"""Commands: typed whole-argument templates, no shell, process-group timeouts, JSON checks, actions.

Everything here runs real programs (sh, python, a missing binary)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import pytest

from backends.actions.base import ActionEngine, Danger
from backends.actions.command import (
    CommandAction,
    CommandCheck,
    CommandTemplate,
    parse_path,
    preset,
    read_path,
    validate_value,
)
from backends.engine.audit import AuditLog
from backends.engine.rules import evaluate
from backends.errors import ActionRefused, BackendError, register_secret
from backends.model import Snapshot, Status

PY = sys.executable


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); treat it as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


async def wait_gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        await asyncio.sleep(0.02)
    return not pid_alive(pid)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("type_", "good", "bad"),
    [
        ("identifier", ["orders", "_x1"], ["1abc", "a-b", "a b", "", "x;y"]),
        ("service", ["api-gateway", "event_processor.1", "redis"], ["-rf", "--help", "a b", "a/b", "a;b", "ä"]),
        ("int", ["0", "42", 7], ["-1", "1.5", "1e3", "0x10", True]),
        ("block", ["19000000", 5], ["latest", "-5"]),
        ("address", ["0x" + "aB" * 20], ["0x" + "a" * 39, "0x" + "g" * 40, "a" * 42]),
        ("path", ["/tmp/backup.dump", "rel/x y.sql"], ["-o", "a\nb", "x\x00y"]),
        ("text", ["Event listener failure", "$(touch /tmp/x); `id`"], ["-x", "two\nlines"]),
        ("scale", ["action-workers=3"], ["action-workers", "a=b", "=3"]),
    ],
)
def test_placeholder_types_accept_and_reject(type_, good, bad):
    for v in good:
        assert validate_value("p", type_, v) == str(v)
    for v in bad:
        with pytest.raises(ValueError):
            validate_value("p", type_, v)


def test_placeholders_must_be_whole_arguments_and_program_is_literal():
    with pytest.raises(ValueError, match="whole argument"):
        CommandTemplate("x", ["journalctl", "--since={since}"])
    with pytest.raises(ValueError, match="whole argument"):
        CommandTemplate("x", ["kubectl", "deployment/{service}"])
    with pytest.raises(ValueError, match="argv"):
        CommandTemplate("x", ["{program}", "arg"])
    with pytest.raises(ValueError, match="never a shell"):
        CommandTemplate("x", "pm2 restart listener")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown type"):
        CommandTemplate("x", ["echo", "{a}"], params={"a": "anything"})
    with pytest.raises(ValueError, match="not used"):
        CommandTemplate("x", ["echo", "{a}"], params={"b": "int"})
    t = CommandTemplate("x", ["kubectl", "get", "-o", "jsonpath={{.items}}", "{service}"])
    assert t.render({"service": "api"}) == ["kubectl", "get", "-o", "jsonpath={.items}", "api"]


def test_render_types_by_name_and_declared_free_text():
    t = CommandTemplate("x", ["tool", "{service}", "{pid}", "{address}", "{note}", "{reason}"],
                        params={"reason": "text"})
    argv = t.render({"service": "listener", "pid": 12, "address": "0x" + "0" * 40, "note": "abc",
                     "reason": "stuck since 2 h"})
    assert argv[1:] == ["listener", "12", "0x" + "0" * 40, "abc", "stuck since 2 h"]
    # undeclared {note} is an identifier: free text is refused there
    with pytest.raises(ActionRefused, match="identifier"):
        t.render({"service": "listener", "pid": 1, "address": "0x" + "0" * 40, "note": "two words",
                  "reason": "x"})
    with pytest.raises(ActionRefused, match="missing value for {pid}"):
        t.render({"service": "listener"})


async def test_values_are_never_interpreted_by_a_shell(tmp_path):
    marker = tmp_path / "pwned"
    t = CommandTemplate("echo", ["echo", "{msg}"], params={"msg": "text"})
    res = await t.run({"msg": f"$(touch {marker}); `touch {marker}`"})
    assert res.ok
    assert res.stdout.strip() == f"$(touch {marker}); `touch {marker}`"
    assert not marker.exists()
    # an option-looking value cannot be smuggled in
    with pytest.raises(ActionRefused):
        t.render({"msg": "--version"})


# --------------------------------------------------------------------------- running


async def test_run_captures_exit_code_and_output_with_secrets_masked():
    register_secret("s3cr3t-value-42")
    t = CommandTemplate("show", ["sh", "-c", 'echo "out $1 $API_TOKEN"; echo "password=hunter2 err" >&2; exit 3',
                                 "sh", "{service}"],
                        env={"API_TOKEN": "s3cr3t-value-42"})
    res = await t.run({"service": "api-gateway"})
    assert res.exit_code == 3 and not res.ok and not res.timed_out
    assert "out api-gateway" in res.stdout
    assert "s3cr3t-value-42" not in res.stdout and "********" in res.stdout
    assert "hunter2" not in res.stderr and "password=********" in res.stderr
    assert res.argv_display.startswith("sh -c ") and res.argv_display.endswith("api-gateway")
    assert res.duration >= 0
    assert "exit 3" in res.summary()


async def test_secret_placeholder_is_masked_in_display():
    t = CommandTemplate("login", ["tool", "--key", "{key}"], params={"key": "secret"})
    argv = t.render({"key": "abcdef123456"})
    assert argv[-1] == "abcdef123456"
    assert "abcdef123456" not in t.display(argv)


async def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    t = CommandTemplate("slow", ["sh", "-c", 'sleep 30 & echo $! > "$1"; wait', "sh", "{file}"], timeout=0.5)
    t0 = time.monotonic()
    res = await t.run({"file": str(pidfile)})
    assert res.timed_out and res.exit_code is None and not res.ok
    assert time.monotonic() - t0 < 4
    child = int(pidfile.read_text())
    assert await wait_gone(child), "the grandchild survived the timeout"
    assert "timed out" in res.summary()


async def test_cancellation_kills_the_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    t = CommandTemplate("slow", ["sh", "-c", 'sleep 30 & echo $! > "$1"; wait', "sh", "{file}"], timeout=30)
    task = asyncio.ensure_future(t.run({"file": str(pidfile)}))
    deadline = time.monotonic() + 5
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_gone(int(pidfile.read_text()))


async def test_missing_program_is_a_readable_backend_error():
    t = CommandTemplate("nope", ["warroom-no-such-binary-xyz", "{service}"])
    assert t.available() is None
    with pytest.raises(BackendError, match="warroom-no-such-binary-xyz: command not found"):
        await t.run({"service": "x"})


async def test_spawn_detaches_and_returns_pid(tmp_path):
    log = tmp_path / "out.log"
    t = CommandTemplate("bg", ["sh", "-c", "echo started; sleep 30"])
    pid = await t.spawn(log_path=str(log))
    try:
        assert os.getpgid(pid) == pid  # its own session / group
        deadline = time.monotonic() + 5
        while "started" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        os.killpg(pid, 9)
    assert await wait_gone(pid)


def test_presets_render():
    assert preset("pm2-restart").render({"service": "listener"}) == ["pm2", "restart", "listener"]
    assert preset("kubectl-rollout-restart").render({"service": "api", "namespace": "prod"}) == [
        "kubectl", "-n", "prod", "rollout", "restart", "deployment", "api"]


# --------------------------------------------------------------------------- JSON paths and checks


def test_json_paths():
    doc = {"a": {"b": [{"c": 1}, {"c": 2}]}, "items": [{"s": {"p": "Running"}}, {"s": {"p": "Failed"}}],
           "weird key": 3}
    assert parse_path("a.b[0].c") == ["a", "b", 0, "c"]
    assert read_path(doc, "a.b[1].c") == 2
    assert read_path(doc, "a.b[-1].c") == 2
    assert read_path(doc, "items[*].s.p") == ["Running", "Failed"]
    assert read_path(doc, '["weird key"]') == 3
    with pytest.raises(KeyError):
        read_path(doc, "a.x")
    with pytest.raises(KeyError):
        read_path(doc, "a.b[5]")
    with pytest.raises(ValueError):
        parse_path("a..b[")


def json_printer(doc, name="json") -> CommandTemplate:
    return CommandTemplate(name, [PY, "-c", "import sys; print(sys.argv[1])", "{doc}"],
                           params={"doc": "text"}, defaults={"doc": json.dumps(doc)})


NEO_PAUSED = {"state": "HALT", "gasconsumed": "1", "stack": [{"type": "Boolean", "value": True}]}
NEO_RUNNING = {"state": "HALT", "gasconsumed": "1", "stack": [{"type": "Boolean", "value": False}]}


async def test_command_check_expected_value_like_neo_go_is_paused():
    ok = CommandCheck("neo.paused", json_printer(NEO_RUNNING), path="stack[0].value", expect=False)
    [r] = await ok.poll()
    assert r.ok and r.status is Status.OK and r.value is False and r.kind == "command"
    bad = CommandCheck("neo.paused2", json_printer(NEO_PAUSED), path="stack[0].value", expect=False,
                       playbook="contract-exploit")
    [r2] = await bad.poll()
    assert not r2.ok and r2.status is Status.CRIT and "expected False" in r2.detail
    findings = evaluate(Snapshot(readings={"neo.paused2": (r2,)}))
    f = next(f for f in findings if f.key == "check:neo.paused2")
    assert f.playbook == "contract-exploit"


async def test_command_check_kubectl_pods_count_and_thresholds():
    pods = {"items": [{"status": {"phase": "Running", "containerStatuses": [{"restartCount": 0}]}},
                      {"status": {"phase": "CrashLoopBackOff", "containerStatuses": [{"restartCount": 7}]}},
                      {"status": {"phase": "Running", "containerStatuses": [{"restartCount": 1}]}}]}
    not_running = CommandCheck("k8s.not_running", json_printer(pods), path="items[*].status.phase",
                               count_where="Running", count_negate=True, warn_above=0, crit_above=1)
    [r] = await not_running.poll()
    assert r.value == 1 and r.status is Status.WARN
    restarts = CommandCheck("k8s.restarts", json_printer(pods),
                            path="items[*].status.containerStatuses[0].restartCount", reduce="max",
                            crit_above=5)
    [r2] = await restarts.poll()
    assert r2.value == 7 and r2.status is Status.CRIT
    running = CommandCheck("k8s.count", json_printer(pods), path="items", reduce="count", warn_below=3)
    [r3] = await running.poll()
    assert r3.value == 3 and r3.status is Status.OK
    [r4] = await running.poll()
    assert r4.history == (3.0, 3.0)


async def test_command_check_failures_become_readings():
    not_json = CommandCheck("c1", CommandTemplate("t", ["echo", "hello"]), path="a")
    [r] = await not_json.poll()
    assert r.status is Status.UNKNOWN and "not JSON" in r.detail
    missing = CommandCheck("c2", json_printer({"a": 1}), path="b.c")
    [r] = await missing.poll()
    assert r.status is Status.UNKNOWN and "no key 'b'" in r.detail
    failing = CommandCheck("c3", CommandTemplate("t", ["sh", "-c", "echo boom >&2; exit 2"]))
    [r] = await failing.poll()
    assert r.status is Status.CRIT and r.detail.startswith("exit 2") and "boom" in r.detail
    slow = CommandCheck("c4", CommandTemplate("t", ["sleep", "10"], timeout=0.3))
    [r] = await slow.poll()
    assert r.status is Status.UNKNOWN and "timed out" in r.detail
    text = CommandCheck("c5", CommandTemplate("t", ["echo", "42"]), parse="text", warn_above=10)
    [r] = await text.poll()
    assert r.value == 42 and r.status is Status.WARN
    gone = CommandCheck("c6", CommandTemplate("t", ["warroom-no-such-binary-xyz"]))
    with pytest.raises(BackendError):
        await gone.poll()


# --------------------------------------------------------------------------- actions


async def test_command_action_plan_shows_exact_argv_and_executes_with_audit(tmp_path):
    out = tmp_path / "restarted"
    t = CommandTemplate("fake-pm2", ["sh", "-c", 'echo "restart $1" > "$2"; echo done', "sh", "{service}", "{file}"])
    action = CommandAction(t, action_id="command.fake-pm2", danger="confirm", fixed={"file": str(out)})
    engine = ActionEngine(AuditLog(tmp_path / "audit.jsonl"), operator="alice")
    engine.register(action)
    plan = await engine.plan("command.fake-pm2", service="listener", reason="no logs for 10 min")
    assert plan.target == "service:listener"
    assert plan.danger is Danger.CONFIRM
    assert plan.guard.ok
    assert f"sh -c 'echo \"restart $1\" > \"$2\"; echo done' sh listener {out}" in plan.preview
    assert not out.exists()  # planning runs nothing
    progress = []
    result = await engine.execute(plan, confirmation=True, progress=progress.append)
    assert result.ok, result
    assert out.read_text().strip() == "restart listener"
    assert progress[-1].done == 1 and "exit 0" in progress[-1].message
    entries = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert entries[-1]["result"] == "ok" and entries[-1]["action"] == "command.fake-pm2"


async def test_command_action_refuses_bad_input_and_read_only(tmp_path):
    out = tmp_path / "ran"
    t = CommandTemplate("touch", ["touch", "{file}", "{service}"])
    action = CommandAction(t, action_id="command.touch", fixed={"file": str(out)})
    with pytest.raises(ActionRefused, match="service name"):
        await action.plan(service="x; rm -rf /")
    with pytest.raises(ActionRefused, match="configuration"):
        await action.plan(service="ok", file="/etc/passwd")
    with pytest.raises(ActionRefused, match="unknown parameter"):
        await action.plan(service="ok", extra="1")
    ro = ActionEngine(AuditLog(tmp_path / "audit.jsonl"), read_only=True)
    ro.register(action)
    plan = await ro.plan("command.touch", service="ok")
    with pytest.raises(ActionRefused, match="read-only"):
        await ro.execute(plan, confirmation=True)
    assert not out.exists()


async def test_command_action_guard_red_when_program_missing(tmp_path):
    action = CommandAction(CommandTemplate("pm2-restart", ["pm2-not-installed-xyz", "restart", "{service}"]))
    plan = await action.plan(service="listener")
    assert not plan.guard.ok and "not installed" in plan.guard.description
    engine = ActionEngine(AuditLog(tmp_path / "audit.jsonl"))
    engine.register(action)
    result = await engine.execute(plan, confirmation=True)
    assert result.status == "refused" and "not installed" in result.summary


async def test_command_action_failure_reports_output(tmp_path):
    action = CommandAction(CommandTemplate("bad", ["sh", "-c", "echo nope >&2; exit 4"]), danger=Danger.SAFE)
    plan = await action.plan()
    result = await action.execute(plan, lambda p: None)
    assert result.status == "failed" and "exit 4" in result.summary and "nope" in result.details


async def test_command_action_fills_operator_and_config_unless_declared(tmp_path):
    """{operator} / {config} without a params entry come from warroom (never from input);
    declared in params they are ordinary fields."""
    t = CommandTemplate("who", ["echo", "{operator}", "{config}"])
    action = CommandAction(t, operator="alice@10.0.0.7", config_path=tmp_path / "w.toml")
    assert action.param_fields() == []
    plan = await action.plan()
    assert plan.params["argv"] == f"echo alice@10.0.0.7 {tmp_path / 'w.toml'}"
    with pytest.raises(ActionRefused, match="configuration"):
        await action.plan(config="/etc/passwd")
    result = await action.execute(plan, lambda p: None)
    assert result.ok and result.details == (f"alice@10.0.0.7 {tmp_path / 'w.toml'}",)
    declared = CommandAction(CommandTemplate("who2", ["echo", "{operator}"], params={"operator": "identifier"}))
    assert [f.name for f in declared.param_fields()] == ["operator"]
    with pytest.raises(ActionRefused, match=r"missing value for \{operator\}"):
        await declared.plan()
    assert (await declared.plan(operator="bob")).params["argv"] == "echo bob"


# --------------------------------------------------------------------------- kind = "command" services


def _script(path, body: str):
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def _command_services_config(tmp_path, services: str, commands: str) -> object:
    from backends.config import load_config

    cfg = tmp_path / "warroom.toml"
    cfg.write_text(f'[warroom]\nname = "t"\nstate_dir = "{tmp_path / "state"}"\n' + commands + services)
    return load_config(cfg)


async def test_command_services_are_polled_through_the_engine(tmp_path):
    """Real scripts: exit 0 -> running, exit 1 -> down with its last line, JSON status read,
    `{service}` filled; findings through the service rules with role and playbook."""
    from backends.engine.core import build_engine, sources_by_area
    from backends.model import ServiceReading, Severity, SourceState

    ok = _script(tmp_path / "ok.sh", 'echo "checking $1"; echo "deployment \\"$1\\" successfully rolled out"')
    bad = _script(tmp_path / "bad.sh", 'echo "Waiting for rollout: 0 of 2 updated replicas are available"; exit 1')
    js = _script(tmp_path / "js.sh", 'echo \'{"status": "degraded", "version": "1.2"}\'')
    starting = _script(tmp_path / "starting.sh", 'echo \'{"state": "starting"}\'')
    commands = "".join(
        f'[[commands]]\nname = "{n}"\nargv = {argv}\ntimeout = "5s"\n'
        for n, argv in (("ok-status", f'["{ok}", "{{service}}"]'), ("bad-status", f'["{bad}"]'),
                        ("js-status", f'["{js}"]'), ("starting-status", f'["{starting}"]'),
                        ("restart", '["true", "{service}"]')))
    services = (
        '[[services]]\nname = "platform-edge"\nkind = "command"\nrole = "api"\nstatus_command = "ok-status"\n'
        'restart_command = "restart"\ninterval = "1s"\n'
        '[[services]]\nname = "tee-signer"\nkind = "command"\nstatus_command = "bad-status"\n'
        'playbook = "tee-failure"\nrestart_command = "restart"\n'
        '[[services]]\nname = "edge-api"\nkind = "command"\nrole = "api"\nstatus_command = "bad-status"\n'
        '[[services]]\nname = "health-js"\nkind = "command"\nstatus_command = "js-status"\n'
        '[[services]]\nname = "warming"\nkind = "command"\nstatus_command = "starting-status"\n'
    )
    engine = build_engine(_command_services_config(tmp_path, services, commands), with_logs=False)
    try:
        src = engine.parts["command-services"]
        assert sources_by_area(engine)["services"] == ["command-services"]
        assert src.interval == 1.0  # the shortest service interval; the others default to 10s
        snap = await engine.monitor.poll_once()
        assert snap.sources["command-services"].state is SourceState.OK
        by = {r.name: r for r in snap.of_type(ServiceReading)}
        assert set(by) == {"platform-edge", "tee-signer", "edge-api", "health-js", "warming"}
        edge = by["platform-edge"]
        assert (edge.kind, edge.state, edge.status, edge.exit_code) == ("command", "running", Status.OK, 0)
        assert edge.detail == 'deployment "platform-edge" successfully rolled out' and edge.latency_ms > 0
        tee = by["tee-signer"]
        assert (tee.state, tee.status, tee.exit_code) == ("down", Status.CRIT, 1)
        assert tee.detail == "Waiting for rollout: 0 of 2 updated replicas are available"
        assert (by["health-js"].state, by["health-js"].health, by["health-js"].status) == \
            ("running", "unhealthy", Status.CRIT)
        assert by["health-js"].detail == "status: degraded"
        assert (by["warming"].health, by["warming"].status) == ("starting", Status.WARN)
        f = {x.key: x for x in snap.findings}
        assert f["service-down:tee-signer"].playbook == "tee-failure"  # the service's playbook
        assert f["service-down:tee-signer"].severity is Severity.P1
        assert "exit code 1" in f["service-down:tee-signer"].summary
        assert f["service-down:edge-api"].severity is Severity.P0  # role api
        assert f["service-down:edge-api"].playbook == "api-down"
        assert f["service-unhealthy:health-js"].target == "service:health-js"
        assert not any(k.endswith(("platform-edge", "warming")) for k in f)
        # restart through restart_command already routes
        plan = await engine.actions.plan("service.restart", service="tee-signer")
        assert plan.action == "command.restart.tee-signer" and "true tee-signer" in plan.params["argv"]
        # services not due are not run again: their last reading stays
        ran = dict(src._ran_at)
        await engine.monitor.poll_once()
        assert src._ran_at["tee-signer"] == ran["tee-signer"]
    finally:
        await engine.stop()


async def test_a_hanging_status_command_is_bounded_by_its_timeout(tmp_path):
    """A status command that never ends: killed at its timeout, the service is unknown with
    the reason (a finding), the others are still read, and the poll ends in time."""
    from backends.engine.core import build_engine
    from backends.model import ServiceReading, SourceState

    pidfile = tmp_path / "pid"
    hang = _script(tmp_path / "hang.sh", f'echo $$ > {pidfile}; exec sleep 60')
    ok = _script(tmp_path / "ok.sh", "echo fine")
    commands = (f'[[commands]]\nname = "hang"\nargv = ["{hang}"]\ntimeout = "30s"\n'
                f'[[commands]]\nname = "ok"\nargv = ["{ok}"]\ntimeout = "5s"\n'
                '[[commands]]\nname = "gone"\nargv = ["warroom-no-such-program-xyz"]\n')
    services = ('[[services]]\nname = "stuck"\nkind = "command"\nstatus_command = "hang"\ntimeout = "1s"\n'
                '[[services]]\nname = "fine"\nkind = "command"\nstatus_command = "ok"\n'
                '[[services]]\nname = "missing"\nkind = "command"\nstatus_command = "gone"\n')
    engine = build_engine(_command_services_config(tmp_path, services, commands), with_logs=False)
    try:
        t0 = time.monotonic()
        snap = await engine.monitor.poll_once()
        took = time.monotonic() - t0
        assert took < 4.0, took
        assert snap.sources["command-services"].state is SourceState.OK
        by = {r.name: r for r in snap.of_type(ServiceReading)}
        assert (by["stuck"].state, by["stuck"].status) == ("unknown", Status.UNKNOWN)
        assert "hang timed out after 1." in by["stuck"].detail
        assert by["fine"].state == "running"
        assert by["missing"].state == "unknown" and "command not found" in by["missing"].detail
        f = {x.key: x for x in snap.findings}
        assert "cannot check stuck: hang timed out" in f["service-unknown:stuck"].summary
        assert "service-unknown:missing" in f
        assert await wait_gone(int(pidfile.read_text()))  # the process group was killed
    finally:
        await engine.stop()


def test_status_command_placeholders_other_than_service_are_refused(tmp_path):
    from backends.errors import ConfigError

    commands = '[[commands]]\nname = "st"\nargv = ["kubectl", "-n", "{namespace}", "get", "{service}"]\n'
    services = '[[services]]\nname = "edge"\nkind = "command"\nstatus_command = "st"\n'
    with pytest.raises(ConfigError, match=r"placeholders warroom cannot fill.*\{namespace\}"):
        _command_services_config(tmp_path, services, commands)
