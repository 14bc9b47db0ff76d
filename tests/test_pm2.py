"""`[[services]] kind = "pm2"` against a real pm2 daemon (npm pm2 in .tools/node_modules, its
own PM2_HOME in a temp dir: tests/harness/pm2.py) running small node apps: state read from
`pm2 jlist` (online / stopped / errored / missing / no daemon), uptime, pm2's restart count,
CPU and memory; restart / stop / start through the action engine (guard, preview,
confirmation, audit; read-only refused in the engine); the app's log files tailed as the
service's logs; `warroom health --json services`."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from backends.config import ConfigErrors, load_config_text
from backends.engine.core import build_engine, sources_by_area
from backends.errors import ActionRefused
from backends.model import ServiceReading, Status
from backends.sources.pm2 import (
    Pm2Client,
    Pm2Source,
    Pm2Spec,
    clean,
    daemon_state,
    error_words,
    instances_of,
    parse_jlist,
    pm2_status_of,
    reading_for,
    unstable_of,
)
from tests.harness import pm2 as _pm2_harness
from tests.harness import wait_until

pm2_daemon = _pm2_harness.pm2_daemon  # the session fixture

WEB_JS = """\
let n = 0;
setInterval(() => {
  n += 1;
  console.log(JSON.stringify({level: "info", msg: "tick " + n, time: Date.now()}));
  if (n % 3 === 0) console.error(new Error("sporadic failure " + n).message);
}, 200);
"""

CRASH_JS = """\
console.error("fatal: cannot bind 127.0.0.1:1");
process.exit(3);
"""


@pytest.fixture(scope="module")
def apps(pm2_daemon):
    """web (online), idle (stopped), crashy (errored: exits 3, max 2 restarts)."""
    web = pm2_daemon.write("web.js", WEB_JS)
    crash = pm2_daemon.write("crash.js", CRASH_JS)
    for name in ("web", "idle", "crashy"):
        pm2_daemon.delete(name)
    pm2_daemon.start_app("web", web)
    pm2_daemon.start_app("idle", web)
    pm2_daemon.start_app("crashy", crash, "--max-restarts", "2")
    pm2_daemon.wait_status("web", "online")
    pm2_daemon.wait_status("idle", "online")
    pm2_daemon.run("stop", "idle", "--no-color")
    pm2_daemon.wait_status("idle", "stopped")
    pm2_daemon.wait_status("crashy", "errored")
    yield pm2_daemon
    for name in ("web", "idle", "crashy"):
        pm2_daemon.delete(name)


def _config(pm2_daemon, tmp_path, *, read_only: bool = False, extra: str = "") -> str:
    return (f'[warroom]\nstate_dir = "{tmp_path}"\noperator = "alice"\nread_only = {str(read_only).lower()}\n'
            + "".join(f'[[services]]\nname = "{n}"\nkind = "pm2"\npm2_home = "{pm2_daemon.home}"\n'
                      f'pm2_bin = "{pm2_daemon.bin}"\n' for n in ("web", "idle", "crashy"))
            + extra)


def _source(pm2_daemon, *names: str, home: str | None = None) -> Pm2Source:
    return Pm2Source([Pm2Spec(name=n, pm2_home=home or pm2_daemon.home, pm2_bin=pm2_daemon.bin) for n in names])


# --------------------------------------------------------------------------- reading


async def test_states_read_from_jlist(apps):
    readings = {r.name: r for r in await _source(apps, "web", "idle", "crashy", "ghost").poll()}
    web, idle, crashy, ghost = (readings[n] for n in ("web", "idle", "crashy", "ghost"))
    assert all(type(r) is ServiceReading and r.kind == "pm2" for r in readings.values())
    # online is up: running, OK, with pm2's pid, uptime from pm_uptime, cpu and memory from monit
    real = apps.app("web")
    assert (web.state, web.status, pm2_status_of(web)) == ("running", Status.OK, "online")
    assert web.pid == real["pid"] and web.pid > 0
    assert web.uptime_s is not None and 0 <= web.uptime_s < 600
    assert abs(web.started_at.timestamp() * 1000 - real["pm2_env"]["pm_uptime"]) < 1
    assert web.restarts == real["pm2_env"]["restart_time"]
    assert unstable_of(web) == real["pm2_env"]["unstable_restarts"]
    assert web.detail.startswith(f"pm2 online; {web.restarts} restarts")
    assert web.cpu_percent is not None and web.rss_bytes and web.rss_bytes > 1_000_000
    assert web.replicas == 1
    # stopped is stopped (never "running", never "missing")
    assert (idle.state, idle.status, pm2_status_of(idle)) == ("stopped", Status.CRIT, "stopped")
    assert idle.uptime_s is None and idle.pid is None
    # errored is down, with the exit code and the restarts pm2 made
    assert (crashy.state, crashy.status, pm2_status_of(crashy)) == ("down", Status.CRIT, "errored")
    assert crashy.exit_code == 3 and crashy.restarts == apps.app("crashy")["pm2_env"]["restart_time"] >= 1
    assert "last exit code 3" in crashy.detail
    # not known to pm2
    assert ghost.state == "missing" and "pm2 has no app named 'ghost'" in ghost.detail
    # nothing of pm2_env's environment leaks into a reading
    assert "PATH" not in repr(web)


async def test_findings_through_the_engine(apps, tmp_path):
    engine = build_engine(load_config_text(_config(apps, tmp_path)), with_logs=False)
    try:
        snap = await engine.monitor.poll_once()
        found = {f.key: f for f in snap.findings}
        assert "service-down:web" not in found
        assert found["service-down:idle"].summary == "idle is stopped"
        assert found["service-down:crashy"].summary == "crashy is down (exit code 3)"
        assert found["service-down:crashy"].target == "service:crashy"
        assert "pm2" in sources_by_area(engine)["services"]
        assert engine.monitor.sources["pm2"].interval >= 5  # each poll starts node: never faster by default
    finally:
        await engine.stop()


async def test_no_daemon_reads_down_and_never_starts_one(pm2_daemon, tmp_path):
    home = tmp_path / "nohome"
    home.mkdir()
    (r,) = await _source(pm2_daemon, "web", home=str(home)).poll()
    assert (r.state, r.status) == ("down", Status.CRIT)
    assert "pm2 daemon is not running" in r.detail and str(home) in r.detail
    assert not (home / "pm2.pid").exists() and not (home / "rpc.sock").exists()  # no daemon was spawned
    # a plan says so in its guard, and does not start one either
    src = _source(pm2_daemon, "web", home=str(home))
    from backends.sources.pm2 import Pm2Action

    plan = await Pm2Action(src, "restart").plan(service="web")
    assert not plan.guard.ok and "warroom does not start one" in plan.guard.description
    assert not (home / "pm2.pid").exists()


async def test_missing_pm2_binary_is_a_failed_poll(pm2_daemon, tmp_path):
    src = Pm2Source([Pm2Spec(name="web", pm2_home=pm2_daemon.home, pm2_bin=str(tmp_path / "no-pm2"))])
    from backends.errors import BackendError

    with pytest.raises(BackendError, match="pm2 is not installed"):
        await src.poll()


async def test_jlist_noise_before_the_json_is_parsed(pm2_daemon, tmp_path):
    """The first pm2 call under a new PM2_HOME prints the banner, '[PM2] Spawning PM2 daemon'
    (in colour) and then the JSON: that real output parses (warroom's own calls set
    PM2_DISCRETE_MODE and get no banner); the daemon it spawned is killed."""
    home = tmp_path / "fresh"
    client = Pm2Client(pm2_daemon.bin, str(home), timeout=30)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PM2_", "NO_COLOR", "FORCE_COLOR"))}
        proc = await asyncio.create_subprocess_exec(
            pm2_daemon.bin, "jlist", env={**env, "PM2_HOME": str(home), "FORCE_COLOR": "1"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _err = await asyncio.wait_for(proc.communicate(), 30)
        text = out.decode()
        assert "Spawning PM2 daemon" in text and "\x1b[" in text and not text.lstrip().startswith("[{")
        assert parse_jlist(text) == []
        assert (await client.run("jlist")).stdout.strip() == "[]"  # discrete: the JSON alone
    finally:
        await client.run("kill", timeout=30)
        pid_file = home / "pm2.pid"
        if pid_file.exists():
            from tests.harness.pm2 import _kill

            _kill(int(pid_file.read_text().strip()))
    # the long real answer with ANSI noise around it, and things that are not a list
    real = (await Pm2Client(pm2_daemon.bin, pm2_daemon.home).run("jlist")).stdout
    noisy = "\x1b[32m[PM2]\x1b[39m Spawning PM2 daemon\n[PM2] ok\n" + real + "\n\x1b[0m"
    assert [a["name"] for a in parse_jlist(noisy)] == [a["name"] for a in json.loads(real)]
    big = json.loads(real) * 500
    assert len(parse_jlist("[PM2] x\n" + json.dumps(big))) == len(big)
    for bad in ("", "[PM2] Spawning", "[1, 2]", "{}", "[PM2][ERROR] daemon not reachable"):
        with pytest.raises(ValueError, match="no process list"):
            parse_jlist(bad)


async def test_restart_loop_cluster_and_transitional_states(pm2_daemon, tmp_path):
    """pm2 waiting to restart a crashing app (exponential backoff) is a restart loop; a
    cluster-mode app is its instances (2/2 online, then 1/2 when one is stopped: WARN);
    launching / stopping are transitional (WARN, no finding)."""
    crash = pm2_daemon.write("loop.js", CRASH_JS)
    clu = pm2_daemon.write("clu.js", "setInterval(() => console.log('c'), 500);\n")
    for name in ("loop", "clu"):
        pm2_daemon.delete(name)
    try:
        pm2_daemon.start_app("loop", crash, "--exp-backoff-restart-delay", "60000")
        pm2_daemon.start_app("clu", clu, "-i", "2")
        pm2_daemon.wait_status("loop", "waiting restart")
        wait_until(lambda: [a["pm2_env"]["status"] for a in pm2_daemon.jlist() if a["name"] == "clu"]
                   == ["online", "online"], 30, "clu 2 instances online", interval=0.2)
        engine = build_engine(load_config_text(
            f'[warroom]\nstate_dir = "{tmp_path}"\n'
            + "".join(f'[[services]]\nname = "{n}"\nkind = "pm2"\npm2_home = "{pm2_daemon.home}"\n'
                      f'pm2_bin = "{pm2_daemon.bin}"\n' for n in ("loop", "clu"))), with_logs=False)
        try:
            snap = await engine.monitor.poll_once()
            r = {x.name: x for x in snap.readings["pm2"]}
            loop, cl = r["loop"], r["clu"]
            assert (loop.state, loop.status, pm2_status_of(loop)) == ("restarting", Status.WARN, "waiting restart")
            assert loop.exit_code == 3 and unstable_of(loop) >= 1
            found = {f.key: f for f in snap.findings}
            assert found["service-loop:loop"].summary.startswith("loop is restart-looping")
            ids = sorted(a["pm_id"] for a in pm2_daemon.jlist() if a["name"] == "clu")
            assert (cl.state, cl.status, cl.replicas) == ("running", Status.OK, 2)
            assert cl.detail.startswith("2/2 online") and cl.rss_bytes and cl.cpu_percent is not None
            pm2_daemon.run("stop", str(ids[1]), "--no-color")
            wait_until(lambda: [a["pm2_env"]["status"] for a in pm2_daemon.jlist() if a["name"] == "clu"]
                       == ["online", "stopped"], 30, "clu 1 of 2 stopped", interval=0.2)
            (cl,) = [x for x in await engine.monitor.sources["pm2"].poll() if x.name == "clu"]
            assert (cl.state, cl.status, cl.replicas) == ("running", Status.WARN, 1)
            assert cl.detail.startswith("1/2 online") and pm2_status_of(cl) == "online, stopped"
            # restart through the engine brings both back
            plan = await engine.actions.plan("service.restart", service="clu")
            assert f"[{ids[1]}] stopped" in plan.preview
            res = await engine.actions.execute(plan, confirmation=True)
            assert res.ok, res.summary
            (cl,) = [x for x in await engine.monitor.sources["pm2"].poll() if x.name == "clu"]
            assert (cl.state, cl.status, cl.replicas) == ("running", Status.OK, 2)
        finally:
            await engine.stop()
        # an app that died before pm2's min_uptime once, then stayed up: running with a P3
        mark = pm2_daemon.write("flaky.mark.unused", "")
        mark.unlink()
        flaky = pm2_daemon.write("flaky.js", f"const fs = require('fs');\nif (!fs.existsSync({str(mark)!r})) "
                                 f"{{ fs.writeFileSync({str(mark)!r}, '1'); process.exit(1); }}\n"
                                 "setInterval(() => {}, 1000);\n")
        pm2_daemon.delete("flaky")
        pm2_daemon.start_app("flaky", flaky)
        wait_until(lambda: (a := pm2_daemon.app("flaky")) and a["pm2_env"]["status"] == "online"
                   and a["pm2_env"]["unstable_restarts"] >= 1, 30, "flaky online after an unstable restart",
                   interval=0.2)
        src = Pm2Source([Pm2Spec(name="flaky", pm2_home=pm2_daemon.home, pm2_bin=pm2_daemon.bin)])
        (fl,) = await src.poll()
        assert fl.state == "running" and unstable_of(fl) >= 1 and "unstable" in fl.detail
        from backends.engine.rules import RuleContext
        from backends.sources.pm2 import pm2_service_rule

        (f,) = pm2_service_rule(fl, RuleContext(config=None))
        assert f.key == "pm2-unstable:flaky" and f.severity.label == "P3" and "unstable restarts" in f.summary
        # transitional words, on the real jlist entries of the live app
        entries = [a for a in pm2_daemon.jlist() if a["name"] == "clu"]
        spec = Pm2Spec(name="clu", pm2_home=pm2_daemon.home, pm2_bin=pm2_daemon.bin)
        for word, state in (("launching", "starting"), ("stopping", "stopping")):
            moved = [{**a, "pm2_env": {**a["pm2_env"], "status": word}} for a in entries]
            reading = reading_for(spec, instances_of(moved, "clu"))
            assert (reading.state, reading.status) == (state, Status.WARN)
            assert pm2_service_rule(reading, RuleContext(config=None)) == []
    finally:
        for name in ("loop", "clu", "flaky"):
            pm2_daemon.delete(name)


# --------------------------------------------------------------------------- actions


async def test_restart_stop_start_through_the_action_engine(apps, tmp_path):
    engine = build_engine(load_config_text(_config(apps, tmp_path)), with_logs=False)
    try:
        before = apps.app("web")["pm2_env"]["restart_time"]
        old_pid = apps.app("web")["pid"]
        plan = await engine.actions.plan("service.restart", service="web", reason="INC-9 listener stuck")
        assert plan.action == "pm2.restart" and plan.guard.ok and plan.target == "service:web"
        assert plan.preview.startswith("$ pm2 restart web") and f"pid {old_pid}" in plan.preview
        assert f"PM2_HOME={apps.home}" in plan.preview and f"{before} restarts" in plan.preview
        with pytest.raises(ActionRefused, match="not confirmed"):
            await engine.actions.execute(plan)
        assert apps.app("web")["pm2_env"]["restart_time"] == before  # nothing happened
        result = await engine.actions.execute(plan, confirmation=True)
        assert result.ok, result.summary
        assert apps.app("web")["pm2_env"]["restart_time"] == before + 1
        assert apps.app("web")["pid"] != old_pid and apps.status("web") == "online"
        assert f"restarts {before} -> {before + 1}" in result.summary
        # the service source sees pm2's count move
        (web,) = [r for r in await engine.monitor.sources["pm2"].poll() if r.name == "web"]
        assert web.restarts == before + 1 and web.state == "running"
        # stop, then start
        plan = await engine.actions.plan("service.stop", service="web")
        assert plan.action == "pm2.stop" and "$ pm2 stop web" in plan.preview
        assert (await engine.actions.execute(plan, confirmation=True)).ok
        assert apps.status("web") == "stopped"
        (web,) = [r for r in await engine.monitor.sources["pm2"].poll() if r.name == "web"]
        assert web.state == "stopped"
        stop_again = await engine.actions.plan("service.stop", service="web")
        assert not stop_again.guard.ok and "already stopped" in stop_again.guard.description
        plan = await engine.actions.plan("service.start", service="web")
        assert plan.guard.ok and "$ pm2 start web" in plan.preview
        assert (await engine.actions.execute(plan, confirmation=True)).ok
        assert apps.status("web") == "online"
        start_again = await engine.actions.plan("service.start", service="web")
        assert not start_again.guard.ok and "already online" in start_again.guard.description
        res = await engine.actions.execute(start_again, confirmation=True)
        assert res.status == "refused" and "already online" in res.summary
        # the audit: an intent and an outcome for each, by the operator, with the reason
        entries = [e for e in engine.audit.entries(intents=True) if str(e.get("action", "")).startswith("pm2.")]
        got = [(e["action"], e["result"]) for e in entries]
        assert got == [("pm2.restart", "refused"), ("pm2.restart", "started"), ("pm2.restart", "ok"),
                       ("pm2.stop", "started"), ("pm2.stop", "ok"), ("pm2.start", "started"), ("pm2.start", "ok"),
                       ("pm2.start", "refused")], got
        assert all(e.get("operator") == "alice" for e in entries)
        assert any(e.get("reason") == "INC-9 listener stuck" for e in entries)
        assert not any("PATH=" in json.dumps(e) for e in entries)  # the app's environment stays in pm2
    finally:
        await engine.stop()
        if apps.status("web") != "online":
            apps.run("start", "web")


async def test_read_only_refuses_in_the_engine(apps, tmp_path):
    engine = build_engine(load_config_text(_config(apps, tmp_path, read_only=True)), with_logs=False)
    try:
        before = apps.app("web")["pm2_env"]["restart_time"]
        plan = await engine.actions.plan("pm2.restart", service="web")
        with pytest.raises(ActionRefused, match="read-only"):
            await engine.actions.execute(plan, confirmation=True)
        assert apps.app("web")["pm2_env"]["restart_time"] == before and apps.status("web") == "online"
        (e,) = [e for e in engine.audit.entries() if e.get("action") == "pm2.restart"]
        assert e["result"] == "refused"
        assert not [a for a in engine.actions.available() if a.id.startswith("pm2.")]  # nor offered
    finally:
        await engine.stop()


async def test_pm2_errors_reach_a_dialog_in_words(apps):
    """pm2's own failure output (colour codes, its error prefix) becomes one plain sentence."""
    client = Pm2Client(apps.bin, apps.home)
    res = await client.run("restart", "nosuch-app", "--no-color")
    assert not res.ok
    words = error_words(res.stdout, res.stderr, "failed")
    assert words == "pm2: Process or Namespace nosuch-app not found"
    # with colour forced on, as a terminal would get it: still plain words
    colour = await asyncio.create_subprocess_exec(
        apps.bin, "restart", "nosuch-app", env={**os.environ, "PM2_HOME": apps.home, "FORCE_COLOR": "3"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(colour.communicate(), 30)
    assert "\x1b[" in (out + err).decode()
    words = error_words(out.decode(), err.decode(), "failed")
    assert words == "pm2: Process or Namespace nosuch-app not found" and "\x1b" not in words
    assert "\x1b" not in clean((out + err).decode())
    # an action that pm2 refuses: the result says pm2's words, never its table or colour
    src = _source(apps, "web")
    from backends.sources.pm2 import Pm2Action

    act = Pm2Action(src, "restart")
    plan = await act.plan(service="web")
    bad = Pm2Action(Pm2Source([Pm2Spec(name="web", app="nosuch-app", pm2_home=apps.home, pm2_bin=apps.bin)]),
                    "restart")
    result = await bad.execute(plan, lambda p: None)
    assert result.status == "failed" and result.summary == "pm2: Process or Namespace nosuch-app not found"


# --------------------------------------------------------------------------- logs


async def test_logs_are_the_files_pm2_reports(apps, tmp_path):
    engine = build_engine(load_config_text(_config(apps, tmp_path)), with_logs=True)
    hub = engine.logs
    assert hub is not None
    spec = next(s for s in hub.specs if s.name == "web")
    assert spec.service == "web" and "backends.sources.pm2" in " ".join(spec.command or ())
    await hub.start()
    try:
        deadline = time.monotonic() + 20

        async def lines_of(source: str) -> list[str]:
            while time.monotonic() < deadline:
                got = [ln.text if hasattr(ln, "text") else str(ln) for ln in hub.recent(source=source)]
                if any("tick" in g for g in got) and any("sporadic failure" in g for g in got):
                    return got
                await asyncio.sleep(0.1)
            return [str(ln) for ln in hub.recent(source=source)]

        got = await lines_of("web")
        assert any("tick" in g for g in got), got[-5:]  # stdout: pm_out_log_path
        assert any("sporadic failure" in g for g in got), got[-5:]  # stderr: pm_err_log_path
        assert not any("tail:" in g for g in got)
        errs = [ln for ln in hub.recent(source="crashy")]
        await asyncio.sleep(0)  # crashy wrote its fatal line before the test: the backlog has it
        wait_for = time.monotonic() + 10
        while not errs and time.monotonic() < wait_for:
            await asyncio.sleep(0.1)
            errs = list(hub.recent(source="crashy"))
        assert any("cannot bind" in str(getattr(ln, "text", ln)) for ln in errs)
    finally:
        await hub.stop()
        await engine.stop()


def test_log_paths_come_from_jlist(apps):
    from backends.sources.pm2 import log_paths

    real = apps.app("web")["pm2_env"]
    assert log_paths(apps.bin, apps.home, "web") == [real["pm_out_log_path"], real["pm_err_log_path"]]


# --------------------------------------------------------------------------- health, config


def test_health_json_services(apps, tmp_path, capsys):
    from tui import cli

    cfg = tmp_path / "w.toml"
    cfg.write_text(_config(apps, tmp_path))
    capsys.readouterr()
    code = cli.main(["health", "--json", "services", "--config", str(cfg)])
    doc = json.loads(capsys.readouterr().out)
    (src,) = [s for s in doc["sources"] if s["name"] == "pm2"]
    assert src["area"] == "services" and src["state"] == "ok" and src["kind"] == "pm2"
    assert set(src["detail"]) == {"web: running", "idle: stopped", "crashy: down"}
    keys = {f["key"]: f for f in doc["findings"]}
    assert keys["service-down:idle"]["summary"] == "idle is stopped"
    assert keys["service-down:crashy"]["summary"] == "crashy is down (exit code 3)"
    assert "service-down:web" not in keys
    assert code == 2 and doc["status"] == "critical"


def test_config_keys(tmp_path):
    cfg = load_config_text('[[services]]\nname = "listener"\nkind = "pm2"\napp = "seed-listener"\n'
                           'pm2_home = "/home/deploy/.pm2"\nrole = "listener"\n')
    s = cfg.services[0]
    assert (s.kind, s.pm2_app, s.pm2_home, s.pm2_bin) == ("pm2", "seed-listener", "/home/deploy/.pm2", None)
    with pytest.raises(ConfigErrors, match="pm2 app name"):
        load_config_text('[[services]]\nname = "x"\nkind = "pm2"\napp = "all"\n')
    with pytest.raises(ConfigErrors, match="another app"):
        load_config_text('[[services]]\nname = "all"\nkind = "pm2"\n')
    with pytest.raises(ConfigErrors, match='pm2_home is for kind = "pm2"'):
        load_config_text('[[services]]\nname = "x"\nkind = "process"\nmatch = "x"\npm2_home = "/x"\n')


def test_daemon_state_of_the_harness(pm2_daemon):
    ok, why = daemon_state(pm2_daemon.home)
    assert ok and str(pm2_daemon.daemon_pid) in why
