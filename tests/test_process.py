"""Processes and host resources against real child processes of this test (psutil, threads)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from backends.actions.base import ActionEngine
from backends.actions.command import CommandTemplate
from backends.engine.audit import AuditLog
from backends.engine.monitor import Monitor
from backends.engine.rules import evaluate, make_rules
from backends.errors import ActionRefused
from backends.model import HostReading, ServiceReading, Severity, Snapshot, Status
from backends.sources.process import (
    HostSource,
    HostThresholds,
    ProcessRestart,
    ProcessSource,
    ProcessSpec,
    _terminate,
    find_processes,
)

PY = sys.executable
IDLE = "import signal, time\nsignal.signal(signal.SIGTERM, lambda *a: exit(0))\nwhile True: time.sleep(0.05)"
BUSY = "import time\nwhile True: sum(range(10000))"
STUBBORN = ("import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "open(sys.argv[-1], 'w').close()\nwhile True: time.sleep(0.05)")


class Children:
    """Child processes this test owns; all killed by pid at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.pids: set[int] = set()

    def spawn(self, code: str, *args: str) -> subprocess.Popen:
        p = subprocess.Popen([PY, "-c", code, *args], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        self.pids.add(p.pid)
        return p

    def adopt(self, pid: int) -> None:
        self.pids.add(pid)

    def close(self) -> None:
        for pid in self.pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def children():
    c = Children()
    yield c
    c.close()


@pytest.fixture
def marker():
    return f"wr-test-{uuid.uuid4().hex[:10]}"


async def poll_until(src, cond, within: float = 10.0):
    deadline = time.monotonic() + within
    while True:
        readings = await src.poll()
        if cond(readings):
            return readings
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s: {readings}")
        await asyncio.sleep(0.05)


def by_name(readings):
    return {r.name: r for r in readings}


# --------------------------------------------------------------------------- readings


async def test_process_found_by_cmdline_regex_with_pid_uptime_cpu_rss(children, marker):
    p = children.spawn(BUSY, "listener", marker)
    src = ProcessSource("procs", [ProcessSpec("listener", match=rf"python.* listener {marker}$")])
    # right after exec the interpreter has not mapped itself yet (a few hundred KB): wait until it has
    first = by_name(await poll_until(src, lambda rs: rs[0].state == "running" and (rs[0].rss_bytes or 0) > 1_000_000))["listener"]
    assert first.kind == "process" and first.pid == p.pid and first.status is Status.OK
    assert first.rss_bytes and first.rss_bytes > 1_000_000
    assert first.uptime_s is not None and 0 <= first.uptime_s < 60
    assert first.started_at is not None and first.replicas == 1
    assert marker in first.detail
    # the first sample of a source has no interval yet (poll_until may have polled more than
    # once while the interpreter mapped itself: ask a source that never saw the process)
    fresh = ProcessSource("procs", [ProcessSpec("listener", match=rf"python.* listener {marker}$")])
    assert by_name(await fresh.poll())["listener"].cpu_percent is None
    busy = await poll_until(src, lambda rs: (rs[0].cpu_percent or 0) > 20)
    assert busy[0].cpu_percent <= 100 * (os.cpu_count() or 1)


async def test_process_by_name_and_regex_and_missing(children, marker):
    children.spawn(IDLE, marker)
    children.spawn(IDLE, marker)
    found = await poll_until(SimpleNamespace(poll=lambda: asyncio.to_thread(find_processes, match=marker)),
                             lambda ps: len(ps) == 2 and all(p.name == ps[0].name for p in ps))
    src = ProcessSource("procs", [
        ProcessSpec("workers", match=marker, process_name=found[0].name),
        ProcessSpec("ghost", match=f"{marker}-never"),
    ])
    rs = by_name(await poll_until(src, lambda rs: by_name(rs)["workers"].replicas == 2))
    w = rs["workers"]
    assert w.state == "running" and w.detail.startswith("2 processes")
    assert w.pid == min(p.pid for p in children.procs)  # the oldest speaks for the service
    g = rs["ghost"]
    assert g.state == "missing" and g.status is Status.CRIT and g.pid is None and g.replicas == 0
    assert "no process matches" in g.detail
    # a name that does not match excludes the process even when the regex does
    other = ProcessSource("x", [ProcessSpec("w", match=marker, process_name="definitely-not-python")])
    [r] = await other.poll()
    assert r.state == "missing"


async def test_stopped_process_is_paused_and_comes_back(children, marker):
    p = children.spawn(IDLE, marker)
    src = ProcessSource("procs", [ProcessSpec("svc", match=marker)])
    await poll_until(src, lambda rs: rs[0].state == "running")
    os.kill(p.pid, signal.SIGSTOP)
    try:
        rs = await poll_until(src, lambda rs: rs[0].state == "paused")
        assert rs[0].status is Status.WARN
    finally:
        os.kill(p.pid, signal.SIGCONT)
    await poll_until(src, lambda rs: rs[0].state == "running")


def test_find_processes_excludes_ourselves(children, marker):
    children.spawn(IDLE, marker)
    deadline = time.monotonic() + 5
    while not find_processes(match=marker):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    found = find_processes(match=marker)
    assert [p.pid for p in found] == [children.procs[0].pid]
    assert all(p.pid != os.getpid() for p in find_processes(match="pytest"))


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="bad regex"):
        ProcessSource("p", [ProcessSpec("x", match="(")])
    with pytest.raises(ValueError, match="match"):
        ProcessSource("p", [ProcessSpec("x")])
    with pytest.raises(ValueError, match="service name"):
        ProcessSource("p", [ProcessSpec("x y", match="a")])


# --------------------------------------------------------------------------- rules


async def test_missing_listener_is_a_listener_failure_finding(marker):
    src = ProcessSource("procs", [ProcessSpec("listener", match=f"node .*{marker}")])
    rs = await src.poll()
    findings = evaluate(Snapshot(readings={"procs": tuple(rs)}))
    f = next(f for f in findings if f.key == "service-down:listener")
    assert f.playbook == "listener-failure" and f.severity is Severity.P1
    assert f.target == "service:listener"


def test_everything_down_is_p0_system_down():
    rs = tuple(ServiceReading(source="procs", name=n, kind="process", state="missing", status=Status.CRIT)
               for n in ("listener", "indexer"))
    findings = evaluate(Snapshot(readings={"procs": rs}))
    assert findings[0].key == "system-down" and findings[0].severity is Severity.P0
    one_up = rs[:1] + (ServiceReading(source="procs", name="indexer", kind="process", state="running",
                                      status=Status.OK),)
    assert not any(f.key == "system-down" for f in evaluate(Snapshot(readings={"procs": one_up})))


# --------------------------------------------------------------------------- restart


async def test_restart_signal_then_start_previews_pids_and_kills_stubborn_ones(children, marker, tmp_path):
    ready = tmp_path / "ready"
    stubborn = children.spawn(STUBBORN, "listener", marker, str(ready))
    src = ProcessSource("procs", [ProcessSpec("listener", match=rf"listener {marker}")])
    await poll_until(src, lambda rs: rs[0].pid == stubborn.pid and ready.exists())
    start = CommandTemplate("start-listener", [PY, "-c", IDLE, "listener", marker])
    action = ProcessRestart(src, start={"listener": start}, grace=0.5, wait_timeout=10)
    engine = ActionEngine(AuditLog(tmp_path / "audit.jsonl"), operator="bob")
    engine.register(action)
    plan = await engine.plan("process.restart", service="listener", reason="listener silent")
    assert plan.guard.ok
    assert f"SIGTERM pid {stubborn.pid}" in plan.preview and "SIGKILL after 0.5s" in plan.preview
    assert plan.params["pids"][0][0] == stubborn.pid
    assert stubborn.poll() is None  # planning touched nothing
    progress = []
    t0 = time.monotonic()
    result = await engine.execute(plan, confirmation=True, progress=progress.append)
    assert result.ok, result
    # it ignored SIGTERM and was killed (psutil reaped our child, so Popen cannot tell the signal)
    stubborn.wait(timeout=5)
    assert time.monotonic() - t0 < 8
    new_pid = result.after[0]["pid"]
    children.adopt(new_pid)
    assert new_pid != stubborn.pid
    assert any("killed (SIGKILL)" in p.message for p in progress)
    assert any(f"started pid {new_pid}" in p.message for p in progress)
    rs = await poll_until(src, lambda rs: rs[0].pid == new_pid)
    assert rs[0].state == "running"


async def test_restart_through_a_command(children, marker, tmp_path):
    old = children.spawn(IDLE, "worker", marker)
    script = tmp_path / "fake-pm2.py"
    script.write_text(
        "import os, signal, subprocess, sys\n"
        "svc, marker, old = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
        "os.kill(old, signal.SIGTERM)\n"
        f"p = subprocess.Popen([sys.executable, '-c', {IDLE!r}, svc, marker], start_new_session=True,\n"
        "                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print('restarted', svc, p.pid)\n")
    cmd = CommandTemplate("pm2-restart", [PY, str(script), "{service}", "{marker}", "{pid}"],
                          defaults={"marker": marker, "pid": old.pid}, params={"marker": "service"})
    src = ProcessSource("procs", [ProcessSpec("worker", match=rf"worker {marker}")])
    await poll_until(src, lambda rs: rs[0].pid == old.pid)
    action = ProcessRestart(src, commands={"worker": cmd}, wait_timeout=10)
    plan = await action.plan(service="worker")
    assert plan.params["mode"] == "command"
    assert f"{script} worker {marker} {old.pid}" in plan.preview
    assert f"pid {old.pid}" in plan.changes[0].description
    result = await action.execute(plan, lambda p: None)
    assert result.ok, result
    for a in result.after:
        children.adopt(a["pid"])
    old.wait(timeout=5)
    assert all(a["pid"] != old.pid for a in result.after)


async def test_restart_refusals(children, marker):
    src = ProcessSource("procs", [ProcessSpec("svc", match=marker)])
    action = ProcessRestart(src)
    with pytest.raises(ActionRefused, match="unknown process service"):
        await action.plan(service="other")
    with pytest.raises(ActionRefused, match="must match"):
        await action.plan(service="bad name!")
    with pytest.raises(ActionRefused, match="no restart command"):
        await action.plan(service="svc")
    missing = ProcessRestart(src, commands={"svc": CommandTemplate("x", ["pm2-not-installed-xyz", "restart",
                                                                         "{service}"])})
    plan = await missing.plan(service="svc")
    assert not plan.guard.ok and "not installed" in plan.guard.description


def test_terminate_never_signals_a_reused_pid(children, marker):
    p = children.spawn(IDLE, marker)
    deadline = time.monotonic() + 5
    while not find_processes(match=marker):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # same pid, different start time: a different process; it must be left alone
    assert _terminate({p.pid: 12345.0}, grace=0.1) == "no process was running"
    assert p.poll() is None
    real = find_processes(match=marker)[0]
    assert "exited on SIGTERM" in _terminate({p.pid: real.create_time}, grace=5)
    assert p.wait(timeout=5) == 0


# --------------------------------------------------------------------------- host


async def test_host_reading_is_real():
    src = HostSource("host", disks=["/", "/definitely/not/a/mount"])
    [r] = await src.poll()
    assert isinstance(r, HostReading)
    assert 0 <= r.cpu_percent <= 100 and 0 < r.mem_percent < 100
    assert r.disks[0][0] == "/" and 0 < r.disks[0][1] < 100
    assert r.disks[1] == ("/definitely/not/a/mount", -1.0)
    [r2] = await src.poll()
    assert 0 <= r2.cpu_percent <= 100


def test_cpu_above_threshold_is_tracked_and_becomes_a_finding_after_5_min():
    now = [1000.0]
    src = HostSource("host-a", clock=lambda: now[0])
    r = src.reading(95, 40, (("/", 50.0),))
    assert r.cpu_high_for_s == 0
    assert not evaluate(Snapshot(readings={"host-a": (r,)}))
    now[0] += 200
    r = src.reading(90, 40, (("/", 50.0),))
    assert r.cpu_high_for_s == 200
    assert not [f for f in evaluate(Snapshot(readings={"host-a": (r,)})) if f.key.startswith("host-cpu")]
    now[0] += 101
    r = src.reading(85, 40, (("/", 50.0),))
    assert r.cpu_high_for_s == 301
    [f] = [f for f in evaluate(Snapshot(readings={"host-a": (r,)})) if f.key.startswith("host-cpu")]
    assert f.severity is Severity.P2 and "for 5 min" in f.summary
    now[0] += 5
    r = src.reading(50, 40, (("/", 50.0),))  # dips below: the clock restarts
    assert r.cpu_high_for_s == 0
    now[0] += 5
    assert src.reading(99, 40, ()).cpu_high_for_s == 0


def test_memory_and_disk_findings_with_seed_thresholds():
    src = HostSource("host-b")
    r = src.reading(10, 86, (("/", 81.0), ("/data", 96.0), ("/ok", 50.0)))
    findings = {f.key: f for f in evaluate(Snapshot(readings={"host-b": (r,)}))}
    assert findings["host-mem:host-b"].severity is Severity.P2
    assert "85%" in findings["host-mem:host-b"].summary
    assert findings["host-disk:host-b:/"].severity is Severity.P2
    assert findings["host-disk:host-b:/data"].severity is Severity.P1
    assert "host-disk:host-b:/ok" not in findings
    calm = src.reading(10, 80, (("/", 79.0),))
    assert not evaluate(Snapshot(readings={"host-b": (calm,)}))


def test_host_thresholds_from_config():
    cfg = SimpleNamespace(host=SimpleNamespace(cpu_warn=50, cpu_for=60.0, memory_warn=70, disk_warn=60))
    t = HostThresholds.from_config(cfg)
    assert (t.cpu_warn, t.cpu_for, t.memory_warn, t.disk_warn) == (50, 60.0, 70, 60)
    assert HostThresholds.from_config({"host": None}) == HostThresholds()


# --------------------------------------------------------------------------- through the monitor


async def test_monitor_sees_a_process_go_and_come_back(children, marker):
    src = ProcessSource("procs", [ProcessSpec("listener", match=rf"listener {marker}")], interval=0.05,
                        timeout=5)
    mon = Monitor([src], rules=make_rules())
    p = children.spawn(IDLE, "listener", marker)

    async def until(cond, within=10.0):
        deadline = time.monotonic() + within
        while not cond(mon.snapshot):
            assert time.monotonic() < deadline, mon.snapshot
            await asyncio.sleep(0.02)

    await mon.start()
    try:
        await until(lambda s: any(r.state == "running" for r in s.of_type(ServiceReading)))
        os.kill(p.pid, signal.SIGTERM)
        p.wait(timeout=5)
        await until(lambda s: any(f.key == "service-down:listener" for f in s.findings))
        children.spawn(IDLE, "listener", marker)
        await until(lambda s: not any(f.key == "service-down:listener" for f in s.findings)
                    and any(r.state == "running" for r in s.of_type(ServiceReading)))
    finally:
        await mon.stop()


EXEC_ON_USR1 = ("import os, signal, sys, time\n"
                "def go(*a):\n"
                "    os.execv(sys.executable, [sys.executable, '-c', 'import time\\nwhile True: time.sleep(0.05)',"
                " sys.argv[1] + '-after'])\n"
                "signal.signal(signal.SIGUSR1, go)\nopen(sys.argv[2], 'w').close()\nwhile True: time.sleep(0.05)")


def test_scan_reads_a_command_line_until_it_is_stable_then_at_each_full_pass(children, marker, monkeypatch,
                                                                             tmp_path):
    """A scan reads /proc/PID/cmdline of a process until two reads PROC_STABLE_S apart agree
    (a child between fork and exec shows its parent's), then not again until the next full
    pass (PROC_REFRESH_S, on the injected clock): a process that exec'd into another command
    line is matched by it at the latest then."""
    from backends.sources import process

    now = [1000.0]
    monkeypatch.setattr(process, "_proc_clock", lambda: now[0])
    monkeypatch.setattr(process, "PROC_STABLE_S", 0.0)
    process._proc_full_at[0] = now[0]
    ready = tmp_path / "ready"
    p = children.spawn(EXEC_ON_USR1, marker, str(ready))
    deadline = time.monotonic() + 10
    while not ready.exists() or not [x for x in find_processes(match=marker) if x.pid == p.pid]:
        assert time.monotonic() < deadline, "the child was never matched"
        time.sleep(0.02)
    find_processes(match=marker)  # the second agreeing read: stable
    opened = []
    real_open = open
    monkeypatch.setattr(process, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k),
                        raising=False)
    assert [x.pid for x in find_processes(match=marker)] == [p.pid]
    assert f"/proc/{p.pid}/cmdline" not in opened
    os.kill(p.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while b"-after" not in Path(f"/proc/{p.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the child did not exec"
        time.sleep(0.02)
    assert find_processes(match=marker + "-after") == []  # the cached line, until the full pass
    now[0] += process.PROC_REFRESH_S
    assert [x.pid for x in find_processes(match=marker + "-after")] == [p.pid]
