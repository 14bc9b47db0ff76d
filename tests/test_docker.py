"""Docker / Compose services against a real dockerd (busybox containers with compose labels,
healthchecks, network none): readings, rules, actions (restart/stop/start, ordered startup,
graceful shutdown draining a real Redis list, scale), faults (no socket, hanging socket,
an engine and a container that come back) through the Monitor."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import stat
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from backends.actions.base import ActionEngine, Danger
from backends.engine.audit import AuditLog
from backends.engine.monitor import Monitor
from backends.engine.rules import evaluate, make_rules
from backends.errors import ActionRefused
from backends.model import ServiceReading, Severity, Snapshot, SourceState, Status
from backends.sources.docker import (
    DRAIN,
    DockerServiceSpec,
    DockerSource,
    GracefulShutdown,
    OrderedStartup,
    ScaleService,
    ServiceAction,
    detect_compose,
    docker_actions,
    parse_time,
    resolve_engine,
    shutdown_order,
    topological_order,
    uptime_upper_bound,
)
from tests.harness.docker import LABEL, SLEEP_FOREVER, compose_labels, healthcheck

pytestmark = pytest.mark.docker

HEALTHY = healthcheck("true", interval=0.2, retries=1)
NEVER_HEALTHY = healthcheck("false", interval=0.2, retries=1)


# --------------------------------------------------------------------------- helpers


class Stack:
    """Containers of one compose project made for one test; removed at its end."""

    def __init__(self, engine, project: str) -> None:
        self.engine = engine
        self.project = project
        self.containers = {}

    def add(self, service: str, *, number: int = 1, health=None, command=None, deps: str = "",
            start: bool = True, restart_policy=None):
        labels = compose_labels(self.project, service, number)
        if deps:
            labels["com.docker.compose.depends_on"] = deps
        name = f"{self.project}-{service}-{number}"
        if start:
            c = self.engine.run_container(name, labels, healthcheck=health, command=command,
                                          restart_policy=restart_policy)
        else:
            c = self.engine.client.containers.create(
                self.engine.busybox_image, command if command is not None else SLEEP_FOREVER, name=name,
                labels={LABEL: "1", **labels}, healthcheck=health, network_mode="none", stop_signal="SIGTERM")
        self.containers[name] = c
        return c

    def attrs(self, service: str, number: int = 1) -> dict:
        return self.engine.client.api.inspect_container(f"{self.project}-{service}-{number}")

    def state(self, service: str, number: int = 1) -> str:
        return self.attrs(service, number)["State"]["Status"]

    def source(self, **kw) -> DockerSource:
        kw.setdefault("base_url", self.engine.base_url)
        kw.setdefault("timeout", 10)
        if "services" not in kw:
            kw.setdefault("project", self.project)
        return DockerSource(kw.pop("name", "docker"), **kw)

    def close(self) -> None:
        api = self.engine.client.api
        for c in api.containers(all=True, filters={"label": f"com.docker.compose.project={self.project}"}):
            try:
                api.remove_container(c["Id"], force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass


@pytest.fixture
def stack(docker_engine):
    s = Stack(docker_engine, f"wr{uuid.uuid4().hex[:8]}")
    yield s
    s.close()


async def poll_until(src, cond, within: float = 20.0):
    deadline = time.monotonic() + within
    while True:
        readings = {r.name: r for r in await src.poll()}
        if cond(readings):
            return readings
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s: {readings}")
        await asyncio.sleep(0.1)


def audit_engine(tmp_path, *actions) -> ActionEngine:
    eng = ActionEngine(AuditLog(tmp_path / "audit.jsonl"), operator="alice")
    for a in actions:
        eng.register(a)
    return eng


# --------------------------------------------------------------------------- pure parts


def test_uptime_bounds_parse_and_orders():
    assert uptime_upper_bound("Up Less than a second") == 1
    assert uptime_upper_bound("Up 5 seconds (healthy)") == 6
    assert uptime_upper_bound("Up About a minute") == 120
    assert uptime_upper_bound("Up 3 minutes (health: starting)") == 240
    assert uptime_upper_bound("Exited (0) 2 minutes ago") is None
    t = parse_time("2026-11-22T07:27:31.335357284Z")
    assert t == datetime(2026, 11, 22, 7, 27, 31, 335357, tzinfo=UTC)
    assert parse_time("0001-01-01T00:00:00Z") is None
    deps = {"api": ["postgres", "redis"], "workers": ["redis"], "indexer": ["postgres"]}
    order = topological_order(["api", "workers", "indexer", "postgres", "redis"], deps)
    assert order.index("postgres") < order.index("api") and order.index("redis") < order.index("api")
    assert order.index("redis") < order.index("workers") and order.index("postgres") < order.index("indexer")
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        topological_order(["a", "b"], {"a": ["b"], "b": ["a"]})
    with pytest.raises(ValueError, match="not a configured service"):
        topological_order(["a"], {"a": ["zz"]})
    steps = shutdown_order(["postgres", "redis", "action-workers", "ponder-indexers", "event-processor",
                            "api-gateway"])
    assert steps == [["api-gateway"], ["event-processor"], [DRAIN], ["action-workers"], ["ponder-indexers"],
                     ["redis"], ["postgres"]]


# --------------------------------------------------------------------------- readings


async def test_readings_state_health_uptime_restarts_image_exit_code_replicas(stack):
    stack.add("postgres", health=HEALTHY)
    stack.add("api-gateway", health=NEVER_HEALTHY, deps="postgres:service_healthy:false,redis:service_started:false")
    stack.add("redis")
    stack.add("event-processor", command=["sh", "-c", "exit 3"])
    stack.add("action-workers", number=1)
    stack.add("action-workers", number=2)
    stack.add("ponder-indexers", start=False)
    src = stack.source()
    rs = await poll_until(src, lambda r: r["postgres"].health == "healthy" and r["api-gateway"].health == "unhealthy"
                          and r["event-processor"].state == "exited")
    pg = rs["postgres"]
    assert pg.kind == "docker" and pg.state == "running" and pg.status is Status.OK
    assert pg.image == "warroom-busybox:test" and pg.restarts == 0 and pg.replicas == 1
    assert pg.uptime_s is not None and 0 <= pg.uptime_s < 120 and pg.started_at is not None
    assert len(pg.container_ids) == 1 and len(pg.container_ids[0]) == 12
    api = rs["api-gateway"]
    assert api.status is Status.CRIT and api.depends_on == ("postgres", "redis")
    assert rs["redis"].health is None and rs["redis"].status is Status.OK
    ev = rs["event-processor"]
    assert ev.exit_code == 3 and ev.status is Status.CRIT and ev.uptime_s is None and ev.replicas == 0
    assert "stopped" in ev.detail
    w = rs["action-workers"]
    assert w.replicas == 2 and len(w.container_ids) == 2 and w.status is Status.OK
    idx = rs["ponder-indexers"]
    assert idx.state == "created" and idx.status is Status.WARN
    findings = {f.key: f for f in evaluate(Snapshot(readings={"docker": tuple(rs.values())}))}
    assert findings["service-unhealthy:api-gateway"].severity is Severity.P0
    assert findings["service-unhealthy:api-gateway"].playbook == "api-down"
    assert findings["service-down:event-processor"].playbook == "events-not-processed"
    assert findings["service-down:event-processor"].severity is Severity.P1
    assert "last exit code 3" in findings["service-down:event-processor"].evidence
    assert findings["service-down:ponder-indexers"].severity is Severity.P2
    assert "service-down:postgres" not in findings and "system-down" not in findings


async def test_configured_specs_by_label_and_by_container_name_with_roles(stack, docker_engine):
    stack.add("gw", health=HEALTHY)
    loose = f"{stack.project}-plain"
    docker_engine.run_container(loose, {"com.docker.compose.project": stack.project})  # removed with the stack
    src = stack.source(services=[
        DockerServiceSpec("front", project=stack.project, service="gw", role="api"),
        DockerServiceSpec("plain", container=loose, depends_on=["front"]),
        DockerServiceSpec("ghost", project=stack.project, service="nope", role="listener"),
    ])
    rs = await poll_until(src, lambda r: r["front"].health == "healthy")
    assert rs["plain"].state == "running" and rs["plain"].depends_on == ("front",)
    assert rs["ghost"].state == "missing" and rs["ghost"].status is Status.CRIT and rs["ghost"].replicas == 0
    findings = {f.key: f for f in evaluate(Snapshot(readings={"docker": tuple(rs.values())}))}
    assert findings["service-down:ghost"].playbook == "listener-failure"
    docker_engine.client.api.stop(f"{stack.project}-gw-1", timeout=2)
    rs = await poll_until(src, lambda r: r["front"].state == "exited")
    findings = {f.key: f for f in evaluate(Snapshot(readings={"docker": tuple(rs.values())}))}
    assert findings["service-down:front"].severity is Severity.P0
    assert findings["service-down:front"].playbook == "api-down"


async def test_one_list_call_per_poll_and_cached_inspects_follow_restarts(stack):
    for s in ("a", "b", "c", "d"):
        stack.add(s)
    src = stack.source()
    await src.poll()
    assert src.last_calls == 5  # list + 4 inspects the first time
    await src.poll()
    assert src.last_calls == 1  # nothing changed: the list alone
    # The list's uptime text has one-second resolution: a restart is told from it once the
    # container has been up for a couple of seconds (before that the inspect refresh,
    # `inspect_max_age`, catches it). Let "a" get there, as any real service would: wait until
    # the engine's list says it has been up for 2 s or more.
    import re

    def up_for_two_seconds() -> bool:
        rows = stack.engine.client.api.containers(filters={"name": f"{stack.project}-a-1"})
        status = rows[0]["Status"] if rows else ""
        m = re.match(r"Up (\d+) seconds", status)
        return bool(m and int(m[1]) >= 2) or "minute" in status or "hour" in status

    deadline = time.monotonic() + 20
    while not await asyncio.to_thread(up_for_two_seconds):
        assert time.monotonic() < deadline, "container a not up for 2 s within 20 s"
        await asyncio.sleep(0.1)
    before = (await src.poll())[0]
    assert src.last_calls == 1
    stack.engine.client.api.restart(f"{stack.project}-a-1", timeout=1)
    rs = await poll_until(src, lambda r: r["a"].started_at != before.started_at)
    assert rs["a"].state == "running"
    assert src.last_calls <= 2


async def test_restart_loop_is_detected(stack):
    stack.add("flappy", command=["sh", "-c", "sleep 0.2; exit 1"], restart_policy="always")
    src = stack.source(loop_restarts=2)
    rs = await poll_until(src, lambda r: "restart loop" in r["flappy"].detail, within=30)
    r = rs["flappy"]
    assert r.restarts >= 2 and r.status is Status.CRIT
    findings = {f.key: f for f in evaluate(Snapshot(readings={"docker": (r,)}))}
    f = findings["service-loop:flappy"]
    assert f.severity is Severity.P1 and "restart-looping" in f.summary and f.playbook == "service-down"


async def test_everything_down_is_p0(stack):
    stack.add("api-gateway", command=["true"])
    stack.add("worker", command=["true"])
    src = stack.source()
    rs = await poll_until(src, lambda r: all(x.state == "exited" for x in r.values()))
    findings = evaluate(Snapshot(readings={"docker": tuple(rs.values())}))
    assert findings[0].key in ("system-down", "service-down:api-gateway")
    assert any(f.key == "system-down" and f.severity is Severity.P0 for f in findings)


async def test_stats_are_sampled_on_request(stack):
    stack.add("busy", command=["sh", "-c", "while true; do :; done"])
    src = stack.source(stats=True, stats_interval=3600)
    await src.sample_stats_now()
    [r] = await src.poll()
    assert r.rss_bytes is not None and r.rss_bytes > 0
    assert r.cpu_percent is not None and r.cpu_percent >= 0


# --------------------------------------------------------------------------- actions


async def test_stop_start_restart_with_plans_and_audit(stack, tmp_path):
    stack.add("api", health=HEALTHY)
    src = stack.source()
    await poll_until(src, lambda r: r["api"].health == "healthy")
    stop, start, restart = (ServiceAction(src, v, wait_timeout=20, stop_timeout=2) for v in ("stop", "start",
                                                                                              "restart"))
    eng = audit_engine(tmp_path, stop, start, restart)
    with pytest.raises(ActionRefused, match="unknown service"):
        await eng.plan("docker.stop", service="nope")
    with pytest.raises(ActionRefused, match="must match"):
        await eng.plan("docker.stop", service="../etc")
    plan = await eng.plan("docker.stop", service="api", reason="drill")
    assert plan.target == "service:api" and plan.danger is Danger.CONFIRM and plan.guard.ok
    assert plan.changes[0].before["state"] == "running" and plan.changes[0].before["health"] == "healthy"
    assert f"{stack.project}-api-1: running -> exited (stop)" in plan.preview
    assert stack.state("api") == "running"  # a plan changes nothing
    with pytest.raises(ActionRefused, match="not confirmed"):
        await eng.execute(plan)
    progress = []
    res = await eng.execute(plan, confirmation=True, progress=progress.append)
    assert res.ok, res
    assert stack.state("api") == "exited" and progress
    again = await eng.plan("docker.stop", service="api")
    assert "already exited (no change)" in again.preview
    assert (await eng.execute(again, confirmation="yes")).ok
    plan = await eng.plan("docker.start", service="api")
    assert plan.danger is Danger.SAFE
    res = await eng.execute(plan)
    assert res.ok and "healthy" in res.summary
    started = stack.attrs("api")["State"]["StartedAt"]
    plan = await eng.plan("docker.restart", service="api")
    res = await eng.execute(plan, confirmation=True)
    assert res.ok and stack.attrs("api")["State"]["StartedAt"] != started
    records = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    entries = [e for e in records if e.get("phase") != "intent"]  # write-ahead intents aside
    assert [e["result"] for e in entries] == ["refused", "ok", "ok", "ok", "ok"]
    assert entries[1]["reason"] == "drill"


async def test_ordered_startup_waits_for_each_dependency_to_be_healthy(stack, tmp_path):
    slow_ready = ["sh", "-c", "trap 'exit 0' TERM; sleep 1; touch /tmp/ready; sleep 2147483647 & wait"]
    stack.add("postgres", health=healthcheck("test -f /tmp/ready", interval=0.2, retries=1), command=slow_ready,
              start=False)
    stack.add("redis", start=False)
    stack.add("api-gateway", health=HEALTHY, deps="postgres:service_healthy:false,redis:service_started:false",
              start=False)
    stack.add("action-workers", deps="redis:service_started:false", start=False)
    src = stack.source()
    action = OrderedStartup(src, wait_timeout=20)
    eng = audit_engine(tmp_path, action)
    plan = await eng.plan("stack.startup")
    order = plan.params["order"]
    assert order.index("postgres") < order.index("api-gateway")
    assert order.index("redis") < order.index("api-gateway") and order.index("redis") < order.index("action-workers")
    assert "wait up to 20s for healthy" in plan.preview and "(after postgres, redis)" in plan.preview
    progress = []
    res = await eng.execute(plan, confirmation=True, progress=progress.append)
    assert res.ok, res
    messages = [p.message for p in progress]
    assert messages.index("postgres: starting") < messages.index("api-gateway: starting")
    assert any(m.startswith("postgres: healthy after") for m in messages)
    # api-gateway was started only once postgres had passed its healthcheck
    pg = stack.attrs("postgres")
    healthy_at = min(parse_time(e["End"]) for e in pg["State"]["Health"]["Log"] if e["ExitCode"] == 0)
    api_started = parse_time(stack.attrs("api-gateway")["State"]["StartedAt"])
    assert api_started >= healthy_at - timedelta(milliseconds=50)
    assert parse_time(pg["State"]["StartedAt"]) + timedelta(seconds=0.9) <= api_started
    rs = await poll_until(src, lambda r: all(x.state == "running" for x in r.values()))
    assert len(rs) == 4
    # all up: a second run has nothing to do
    plan2 = await eng.plan("stack.startup")
    assert plan2.preview.count("already") == 4


async def test_ordered_startup_stops_at_a_service_that_never_gets_healthy(stack):
    stack.add("postgres", health=NEVER_HEALTHY, start=False)
    stack.add("api-gateway", deps="postgres:service_healthy:false", start=False)
    action = OrderedStartup(stack.source(), wait_timeout=1.5)
    plan = await action.plan()
    res = await action.execute(plan, lambda p: None)
    assert res.status == "failed" and "postgres: not ready after 1.5s" in res.summary
    assert "not started: api-gateway" in res.summary
    assert stack.state("api-gateway") == "created"


async def test_ordered_startup_refuses_cycles_and_missing_containers(stack):
    stack.add("a", deps="b:service_started:false", start=False)
    stack.add("b", deps="a:service_started:false", start=False)
    with pytest.raises(ActionRefused, match="cycle"):
        await OrderedStartup(stack.source()).plan()
    src = stack.source(services=[DockerServiceSpec("x", project=stack.project), DockerServiceSpec("a",
                                                                                                 project=stack.project)])
    plan = await OrderedStartup(src).plan()
    assert not plan.guard.ok and "no container for x" in plan.guard.description


@pytest.mark.redis
async def test_graceful_shutdown_drains_the_real_redis_queue_in_seed_order(stack, redis_server, tmp_path):
    import redis as redis_sync
    import redis.asyncio as aioredis

    for s in ("postgres", "redis", "api-gateway", "event-processor", "action-workers", "ponder-indexers"):
        stack.add(s)
    key = f"action_jobs:{stack.project}"
    sync = redis_sync.Redis.from_url(redis_server.url)
    sync.rpush(key, *[json.dumps({"job": i}) for i in range(40)])
    client = aioredis.Redis.from_url(redis_server.url)

    async def depth() -> int:
        return await client.llen(key)

    src = stack.source()
    api = stack.engine.client.api
    worker_states_during_drain = []
    stop_worker = threading.Event()
    popped = []

    def worker():  # the action workers: pop jobs slowly
        while not stop_worker.is_set():
            item = sync.lpop(key)
            if item is None:
                time.sleep(0.01)
                continue
            popped.append(item)
            time.sleep(0.01)

    action = GracefulShutdown(src, queue_depth=depth, queue_name=key, drain_timeout=20, stop_timeout=2)
    eng = audit_engine(tmp_path, action)
    try:
        plan = await eng.plan("stack.shutdown")
        assert plan.danger is Danger.TYPED and plan.expected_confirmation == stack.project
        lines = plan.preview.splitlines()
        assert lines[0].startswith("1. stop api-gateway: ") and lines[1].startswith("2. stop event-processor")
        assert lines[2] == f"3. wait up to 20s for {key} to drain to 0 (now 40)"
        order = [c.target for c in plan.changes]
        assert order == ["api-gateway", "event-processor", f"queue:{key}", "action-workers", "ponder-indexers",
                         "redis", "postgres"]
        with pytest.raises(ActionRefused, match="confirmation does not match"):
            await eng.execute(plan, confirmation="yes")
        assert stack.state("api-gateway") == "running"

        progress = []

        def on_progress(p):
            progress.append(p.message)
            if "job(s) left" in p.message:
                worker_states_during_drain.append(api.inspect_container(
                    f"{stack.project}-action-workers-1")["State"]["Status"])

        t = threading.Thread(target=worker, daemon=True)
        t.start()
        res = await eng.execute(plan, confirmation=stack.project, progress=on_progress)
        assert res.ok, res
        assert sync.llen(key) == 0 and len(popped) == 40
        assert worker_states_during_drain and set(worker_states_during_drain) == {"running"}
        stops = [m for m in progress if m.startswith("stopped ")]
        assert stops == ["stopped api-gateway", "stopped event-processor", "stopped action-workers",
                         "stopped ponder-indexers", "stopped redis", "stopped postgres"]
        drained = next(i for i, m in enumerate(progress) if m.startswith(f"{key} drained (0)"))
        assert progress.index("stopped event-processor") < drained < progress.index("stopped action-workers")
        for s in ("postgres", "redis", "api-gateway", "event-processor", "action-workers", "ponder-indexers"):
            assert stack.state(s) == "exited"
    finally:
        stop_worker.set()
        await client.aclose()
        sync.delete(key)
        sync.close()


@pytest.mark.redis
async def test_graceful_shutdown_stops_when_the_queue_does_not_drain(stack, redis_server):
    import redis.asyncio as aioredis

    for s in ("api-gateway", "event-processor", "action-workers", "redis"):
        stack.add(s)
    key = f"action_jobs:{stack.project}"
    client = aioredis.Redis.from_url(redis_server.url)
    await client.rpush(key, "a", "b", "c")
    try:
        action = GracefulShutdown(stack.source(), queue_depth=lambda: client.llen(key), queue_name=key,
                                  drain_timeout=1.0, stop_timeout=2)
        plan = await action.plan()
        res = await action.execute(plan, lambda p: None)
        assert res.status == "partial"
        assert f"{key} not drained after 1s: 3 job(s) left" in res.summary
        assert "still running: action-workers, redis" in res.summary
        assert stack.state("api-gateway") == "exited" and stack.state("event-processor") == "exited"
        assert stack.state("action-workers") == "running" and stack.state("redis") == "running"
    finally:
        await client.delete(key)
        await client.aclose()


async def test_scale_guard_is_red_without_compose_and_uses_v1_when_that_is_installed(stack, tmp_path,
                                                                                     monkeypatch):
    stack.add("action-workers")
    src = stack.source()
    action = ScaleService(src, wait_timeout=10)
    with pytest.raises(ActionRefused, match="between 0 and 50"):
        await action.plan(service="action-workers", replicas=500)
    with pytest.raises(ActionRefused, match="whole number"):
        await action.plan(service="action-workers", replicas="3; reboot")
    # a PATH where neither compose exists
    bare = tmp_path / "bare"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    assert await detect_compose() is None
    plan = await action.plan(service="action-workers", replicas=3)
    assert not plan.guard.ok and "neither `docker compose`" in plan.guard.description
    # docker-compose v1 installed (a recording stand-in: this box has no compose)
    record = tmp_path / "argv.txt"
    v1 = bare / "docker-compose"
    v1.write_text(f'#!/bin/sh\nif [ "$1" = version ]; then echo "docker-compose version 1.29.2"; exit 0; fi\n'
                  f'printf "%s\\n" "$@" > {record}\necho "DOCKER_HOST=$DOCKER_HOST" >> {record}\n')
    v1.chmod(v1.stat().st_mode | stat.S_IEXEC)
    assert await detect_compose() == ("docker-compose",)
    plan = await action.plan(service="action-workers", replicas=1)
    assert plan.guard.ok and "docker-compose installed" in plan.guard.description
    want = f"docker-compose -p {stack.project} up -d --no-recreate --scale action-workers=1 action-workers"
    assert want in plan.preview
    assert "1 running -> 1" in plan.changes[0].description
    res = await action.execute(plan, lambda p: None)
    assert res.ok, res
    lines = record.read_text().splitlines()
    assert lines[:-1] == ["-p", stack.project, "up", "-d", "--no-recreate", "--scale", "action-workers=1",
                          "action-workers"]
    assert lines[-1] == f"DOCKER_HOST={stack.engine.base_url}"


def test_docker_actions_bundle(stack):
    ids = {a.id for a in docker_actions(stack.source())}
    assert ids == {"docker.restart", "docker.stop", "docker.start", "docker.scale", "stack.startup",
                   "stack.shutdown"}


# --------------------------------------------------------------------------- engine discovery


async def test_engine_from_docker_host_and_from_a_docker_context(stack, tmp_path, monkeypatch):
    stack.add("svc")
    monkeypatch.setenv("DOCKER_HOST", stack.engine.base_url)
    src = DockerSource("d1", project=stack.project, timeout=10)
    [r] = await src.poll()
    assert r.state == "running" and src.engine.where == stack.engine.base_url
    # a docker context (what `docker context use` writes), no DOCKER_HOST
    monkeypatch.delenv("DOCKER_HOST")
    cfg = tmp_path / "dockercfg"
    meta = cfg / "contexts" / "meta" / hashlib.sha256(b"wrctx").hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({"Name": "wrctx", "Metadata": {},
                                                "Endpoints": {"docker": {"Host": stack.engine.base_url,
                                                                         "SkipTLSVerify": False}}}))
    (cfg / "config.json").write_text(json.dumps({"currentContext": "wrctx"}))
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg))
    kw, where = resolve_engine()
    assert kw["base_url"] == stack.engine.base_url and "context wrctx" in where
    src2 = DockerSource("d2", project=stack.project, timeout=10)
    [r2] = await src2.poll()
    assert r2.state == "running"
    src3 = DockerSource("d3", project=stack.project, context="wrctx", timeout=10)
    assert (await src3.poll())[0].state == "running"
    with pytest.raises(Exception, match="context 'nope' not found"):
        await DockerSource("d4", context="nope").poll()


class SshToDocker:
    """A real SSH server (paramiko) on 127.0.0.1 whose `docker system dial-stdio` bridges to
    the test engine's unix socket: what `ssh://` engines and contexts talk to."""

    def __init__(self, docker_socket: str, home) -> None:
        import paramiko

        self.paramiko = paramiko
        self.docker_socket = docker_socket
        self.host_key = paramiko.RSAKey.generate(2048)
        self.client_key = paramiko.RSAKey.generate(2048)
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        self.client_key.write_private_key_file(str(ssh_dir / "id_rsa"))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        (ssh_dir / "known_hosts").write_text(
            f"[127.0.0.1]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}\n")
        self.commands: list[str] = []
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._serve, conn)

    def _serve(self, conn) -> None:
        paramiko = self.paramiko
        outer = self

        class Iface(paramiko.ServerInterface):
            def get_allowed_auths(self, username):
                return "publickey"

            def check_auth_publickey(self, username, key):
                ok = key.get_base64() == outer.client_key.get_base64()
                return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

            def check_channel_request(self, kind, chanid):
                return paramiko.OPEN_SUCCEEDED if kind == "session" else \
                    paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

            def check_channel_exec_request(self, channel, command):
                outer.commands.append(command.decode())
                if command != b"docker system dial-stdio":
                    return False
                outer._spawn(outer._bridge, channel)
                return True

        transport = paramiko.Transport(conn)
        transport.add_server_key(self.host_key)
        try:
            transport.start_server(server=Iface())
        except Exception:  # noqa: BLE001 - client went away
            return
        channels = []  # keep accepted channels referenced: a collected Channel closes itself
        try:
            while not self.stop.is_set() and transport.is_active():
                ch = transport.accept(0.2)
                if ch is not None:
                    channels.append(ch)
        except Exception:  # noqa: BLE001 - the client disconnected
            pass
        transport.close()

    def _bridge(self, channel) -> None:
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        up.connect(self.docker_socket)

        def pump(src_recv, dst_send, done):
            try:
                while True:
                    data = src_recv(65536)
                    if not data:
                        break
                    dst_send(data)
            except Exception:  # noqa: BLE001 - either side went away
                pass
            try:
                done()
            except Exception:  # noqa: BLE001
                pass

        self._spawn(pump, channel.recv, up.sendall, lambda: up.shutdown(socket.SHUT_WR))
        pump(up.recv, channel.sendall, channel.close)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for t in self.threads:
            t.join(timeout=2)


async def test_ssh_engine_works_the_same_way(stack, tmp_path, monkeypatch):
    pytest.importorskip("paramiko")
    if not stack.engine.base_url.startswith("unix://"):
        pytest.skip("needs a unix-socket engine to bridge to")
    stack.add("api-gateway", health=HEALTHY)
    monkeypatch.setenv("HOME", str(tmp_path))
    server = SshToDocker(stack.engine.base_url.removeprefix("unix://"), tmp_path)
    try:
        url = f"ssh://ops@127.0.0.1:{server.port}"
        src = DockerSource("remote", project=stack.project, base_url=url, ssh_client="paramiko", timeout=10)
        rs = await poll_until(src, lambda r: r["api-gateway"].health == "healthy")
        assert rs["api-gateway"].state == "running"
        assert server.commands and set(server.commands) == {"docker system dial-stdio"}
        # actions go through the same engine
        action = ServiceAction(src, "restart", wait_timeout=20, stop_timeout=1)
        plan = await action.plan(service="api-gateway")
        assert (await action.execute(plan, lambda p: None)).ok
        await src.engine.close()
    finally:
        server.close()


async def test_ssh_auth_failure_is_readable(stack, tmp_path, monkeypatch):
    pytest.importorskip("paramiko")
    monkeypatch.setenv("HOME", str(tmp_path))
    server = SshToDocker(stack.engine.base_url.removeprefix("unix://"), tmp_path)
    import paramiko

    paramiko.RSAKey.generate(2048).write_private_key_file(str(tmp_path / ".ssh" / "id_rsa"))  # not the authorised key
    try:
        url = f"ssh://ops@127.0.0.1:{server.port}"
        snap = await Monitor([DockerSource("remote", project="x", base_url=url, ssh_client="paramiko",
                                           timeout=10)]).poll_once()
        st = snap.sources["remote"]
        assert st.state is SourceState.DEGRADED
        assert st.reason == f"docker engine at {url}: SSH authentication failed"
    finally:
        server.close()


def test_ssh_engine_uses_the_ssh_client():
    kw, where = resolve_engine("ssh://ops@127.0.0.1:1")
    assert kw == {"base_url": "ssh://ops@127.0.0.1:1"} and where == "ssh://ops@127.0.0.1:1"
    from backends.sources.docker import DockerEngine

    eng = DockerEngine("ssh://ops@127.0.0.1:1", timeout=2)
    assert eng.cli_env() == {"DOCKER_HOST": "ssh://ops@127.0.0.1:1"}


# --------------------------------------------------------------------------- faults through the monitor


async def _until(mon: Monitor, cond, within: float = 20.0):
    deadline = time.monotonic() + within
    while not cond(mon.snapshot):
        assert time.monotonic() < deadline, mon.snapshot.sources
        await asyncio.sleep(0.02)


async def test_unreachable_engine_degrades_with_a_readable_reason(tmp_path):
    src = DockerSource("docker", project="x", base_url=f"unix://{tmp_path}/missing.sock", timeout=2)
    mon = Monitor([src], rules=make_rules())
    snap = await mon.poll_once()
    st = snap.sources["docker"]
    assert st.state is SourceState.DEGRADED
    # at once, not after the timeout: the reason is the missing socket, not a timeout
    assert st.reason == f"docker engine unreachable: no socket at unix://{tmp_path}/missing.sock"
    assert any(f.key == "degraded:docker" for f in snap.findings)


async def test_refused_engine_degrades_with_a_readable_reason(tmp_path):
    path = str(tmp_path / "refuse.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)  # a socket file nobody listens on: connection refused
    try:
        snap = await Monitor([DockerSource("docker", project="x", base_url=f"unix://{path}", timeout=2)]).poll_once()
        st = snap.sources["docker"]
        assert st.state is SourceState.DEGRADED
        assert st.reason == f"docker engine unreachable: connection refused at unix://{path}"
    finally:
        dead.close()


async def test_hanging_engine_times_out_within_the_poll_timeout(tmp_path):
    path = str(tmp_path / "hang.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    accepted = []
    stop = threading.Event()

    def accept_and_say_nothing():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn)
            except TimeoutError:
                continue
            except OSError:
                return

    t = threading.Thread(target=accept_and_say_nothing, daemon=True)
    t.start()
    try:
        src = DockerSource("docker", project="x", base_url=f"unix://{path}", timeout=1.5)
        mon = Monitor([src])
        t0 = time.monotonic()
        snap = await mon.poll_once()
        took = time.monotonic() - t0
        assert took < 2.5
        st = snap.sources["docker"]
        assert st.state is SourceState.DEGRADED
        assert "did not answer" in st.reason or "timed out" in st.reason, st.reason
        assert accepted  # it really connected and waited
        snap = await mon.poll_once()  # the next poll is not blocked by the previous one
        assert snap.sources["docker"].failures == 2
    finally:
        stop.set()
        server.close()
        for c in accepted:
            c.close()
        t.join(timeout=2)


async def test_engine_and_container_that_come_back_recover_by_themselves(stack, tmp_path):
    stack.add("api-gateway", health=HEALTHY)
    link = tmp_path / "engine.sock"  # absent at first: the engine is unreachable
    real = stack.engine.base_url.removeprefix("unix://")
    if not stack.engine.base_url.startswith("unix://"):
        pytest.skip("needs a unix-socket engine")
    src = DockerSource("docker", project=stack.project, base_url=f"unix://{link}", timeout=3, interval=0.05)
    mon = Monitor([src], rules=make_rules(), max_backoff=0.2)
    await mon.start()
    try:
        await _until(mon, lambda s: s.sources["docker"].state is SourceState.DEGRADED)
        assert "no socket" in mon.snapshot.sources["docker"].reason
        os.symlink(real, link)  # the engine comes back
        await _until(mon, lambda s: s.sources["docker"].state is SourceState.OK
                     and any(r.health == "healthy" for r in s.of_type(ServiceReading)))
        stack.engine.client.api.stop(f"{stack.project}-api-gateway-1", timeout=2)  # the container goes
        await _until(mon, lambda s: any(f.key == "service-down:api-gateway" and f.severity is Severity.P0
                                        for f in s.findings))
        stack.engine.client.api.start(f"{stack.project}-api-gateway-1")  # and comes back
        await _until(mon, lambda s: not any(f.key.startswith("service-") for f in s.findings)
                     and any(r.health == "healthy" for r in s.of_type(ServiceReading)))
    finally:
        await mon.stop()


async def test_system_ssh_is_quiet_and_never_prompts(stack, tmp_path, monkeypatch, capfd):
    """The default ssh:// client is the system `ssh`: it must not write over the console
    (its stderr is read, not inherited), never prompt (batch mode, no terminal), and the
    engine reads and acts the same way through it."""
    pytest.importorskip("paramiko")
    real_ssh = shutil.which("ssh")
    if real_ssh is None:
        pytest.skip("no ssh client installed")
    if not stack.engine.base_url.startswith("unix://"):
        pytest.skip("needs a unix-socket engine to bridge to")
    stack.add("api-gateway", health=HEALTHY)
    server = SshToDocker(stack.engine.base_url.removeprefix("unix://"), tmp_path)
    # OpenSSH reads ~/.ssh from the passwd home, not $HOME: a wrapper on PATH points it at
    # the test's key and known_hosts, records its arguments and says something on stderr.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    argv_log = tmp_path / "ssh-argv"
    wrapper = bindir / "ssh"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"echo \"$@\" >> {argv_log}\n"
        "echo 'Warning: Permanently added 127.0.0.1 (RSA) to the list of known hosts.' >&2\n"
        f"exec {real_ssh} -F /dev/null -i {tmp_path / '.ssh' / 'id_rsa'} "
        f"-o UserKnownHostsFile={tmp_path / '.ssh' / 'known_hosts'} -o StrictHostKeyChecking=yes \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    try:
        url = f"ssh://ops@127.0.0.1:{server.port}"
        src = DockerSource("remote", project=stack.project, base_url=url, timeout=10)  # system ssh
        rs = await poll_until(src, lambda r: r["api-gateway"].health == "healthy")
        assert rs["api-gateway"].state == "running"
        action = ServiceAction(src, "restart", wait_timeout=20, stop_timeout=1)
        plan = await action.plan(service="api-gateway")
        assert (await action.execute(plan, lambda p: None)).ok
        await src.engine.close()
        args = argv_log.read_text()
        assert "BatchMode=yes" in args and "docker system dial-stdio" in args
        err = capfd.readouterr().err
        assert "Permanently added" not in err  # nothing reached the terminal
        from backends.sources.docker import SSH_STDERR

        assert any("Permanently added" in line for tail in SSH_STDERR.values() for line in tail)
    finally:
        server.close()


async def test_system_ssh_failure_reason_is_what_ssh_said(tmp_path):
    if shutil.which("ssh") is None:
        pytest.skip("no ssh client installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"ssh://ops@127.0.0.1:{port}"
    mon = Monitor([DockerSource("remote-down", project="x", base_url=url, timeout=5)])
    for _ in range(3):  # ssh's stderr is read by a thread: the first reason may come before it
        st = (await mon.poll_once()).sources["remote-down"]
        if "ssh: " in st.reason:
            break
    assert st.state is SourceState.DEGRADED
    assert st.reason.startswith(f"docker engine at {url}: ssh: ") and "refused" in st.reason, st.reason


# --------------------------------------------------------------------------- from the config, as the console plans


def _engine_config(stack, tmp_path, *, services: str, extra: str = "", compose_command: str = "auto"):
    from backends.config import load_config_text

    text = f"""
[warroom]
audit_path = "{tmp_path / 'audit.jsonl'}"
state_dir = "{tmp_path}"

[docker]
host = "{stack.engine.base_url}"
timeout = "10s"
compose_command = {json.dumps(compose_command)}
{services}
{extra}
"""
    return load_config_text(text, str(tmp_path / "w.toml"))


def _docker_service(stack, name: str, role: str | None = None) -> str:
    return (f'\n[[services]]\nname = "{name}"\nkind = "docker"\ncompose_project = "{stack.project}"\n'
            f'compose_service = "{name}"\n' + (f'role = "{role}"\n' if role else ""))


async def test_scale_without_replicas_is_refused_and_the_console_form_asks_for_it(stack, tmp_path):
    """Gap 3: a plan without replicas (console palette) is an ActionRefused, never a TypeError,
    and both the action and the service.scale router offer a replicas field."""
    from backends.engine.core import build_engine
    from tui.screens.params import convert, fillable

    stack.add("action-workers")
    action = ScaleService(stack.source(), wait_timeout=10)
    for params in ({"service": "action-workers"}, {"service": "action-workers", "replicas": ""},
                   {"service": "action-workers", "replicas": None}):
        with pytest.raises(ActionRefused, match=r"replicas is required \(a whole number from 0 to 50\)"):
            await action.plan(**params)
    with pytest.raises(ActionRefused, match="service is required"):
        await action.plan()
    with pytest.raises(ActionRefused, match="between 0 and 50, got -1"):
        await action.plan(service="action-workers", replicas=-1)
    with pytest.raises(ActionRefused, match="whole number"):
        await action.plan(service="action-workers", replicas="two")
    fields = {name: (default, ann) for name, default, ann in fillable(action)}
    assert set(fields) == {"service", "replicas"}
    # what the form sends back (text) plans
    plan = await action.plan(service="action-workers", replicas=convert("1", *fields["replicas"]))
    assert plan.params["replicas"] == 1 and plan.target == "service:action-workers"

    engine = build_engine(_engine_config(stack, tmp_path, services=_docker_service(stack, "action-workers")),
                          with_logs=False)
    try:
        router = engine.actions.get("service.scale")
        assert {name for name, _d, _a in fillable(router)} == {"service", "replicas"}
        with pytest.raises(ActionRefused, match="replicas is required"):
            await engine.actions.plan("service.scale", service="action-workers")
        with pytest.raises(ActionRefused, match="scale action-workers to how many replicas") as refused:
            await engine.actions.plan("service.scale")  # the one scalable service: the form offers it
        assert refused.value.ask and refused.value.suggest == {"service": "action-workers", "replicas": 2}
        plan = await engine.actions.plan("service.scale", service="action-workers", replicas="1")
        assert plan.action == "docker.scale" and plan.params["replicas"] == 1
        # the other routers keep their one field
        assert {name for name, _d, _a in fillable(engine.actions.get("service.restart"))} == {"service"}
    finally:
        await engine.stop()


def _stand_in_compose(tmp_path, record) -> str:
    """A compose command that records its argv and environment, then does what `up -d --scale
    SVC=N SVC` does to a project: create the missing containers 2..N (docker CLI, real dockerd)."""
    docker_cli = shutil.which("docker")
    assert docker_cli, "the docker CLI is needed for the stand-in compose"
    script = tmp_path / "bin dir" / "my-compose"  # a space: the config value is split like a shell would
    script.parent.mkdir()
    script.write_text(f"""#!/bin/sh
if [ "$1" = version ]; then echo "stand-in compose 2.99"; exit 0; fi
printf '%s\\n' "$@" > '{record}'
echo "DOCKER_HOST=$DOCKER_HOST" >> '{record}'
p=""; scale=""; prev=""
for a in "$@"; do
  [ "$prev" = "-p" ] && p="$a"
  [ "$prev" = "--scale" ] && scale="$a"
  prev="$a"
done
svc="${{scale%=*}}"; n="${{scale#*=}}"; i=2
while [ "$i" -le "$n" ]; do
  '{docker_cli}' run -d --name "$p-$svc-$i" --network none --label {LABEL}=1 \\
    --label com.docker.compose.project="$p" --label com.docker.compose.service="$svc" \\
    --label com.docker.compose.container-number="$i" --label com.docker.compose.oneoff=False \\
    warroom-busybox:test sh -c "trap 'exit 0' TERM; sleep 2147483647 & wait" >/dev/null || exit 1
  i=$((i+1))
done
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


async def test_configured_compose_command_is_the_one_that_scales(stack, tmp_path, monkeypatch):
    """Gap 4: [docker] compose_command reaches the scale action (no auto-detection) and is
    the command that runs; auto on this box (no compose installed) finds nothing."""
    from backends.engine.core import build_engine

    stack.add("action-workers")
    record = tmp_path / "argv.txt"
    script = _stand_in_compose(tmp_path, record)
    bare = tmp_path / "bare"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))  # no docker compose, no docker-compose
    svc = _docker_service(stack, "action-workers")

    auto = build_engine(_engine_config(stack, tmp_path, services=svc), with_logs=False)
    try:
        plan = await auto.actions.plan("service.scale", service="action-workers", replicas=2)
        assert not plan.guard.ok and "neither `docker compose`" in plan.guard.description
    finally:
        await auto.stop()

    engine = build_engine(_engine_config(stack, tmp_path, services=svc, compose_command=f'"{script}"'),
                          with_logs=False)
    try:
        plan = await engine.actions.plan("service.scale", service="action-workers", replicas=2)
        assert plan.guard.ok, plan.guard
        assert f"{script} installed" in plan.guard.description
        want = f"-p {stack.project} up -d --no-recreate --scale action-workers=2 action-workers"
        assert plan.preview.startswith("$ ") and plan.preview.endswith(want)
        assert str(script) in plan.preview.replace("'", "")
        assert "1 running -> 2" in plan.changes[0].description
        res = await engine.actions.execute(plan, confirmation=True)
        assert res.ok, res
        assert res.summary == "action-workers: 2 running (wanted 2)"
        lines = record.read_text().splitlines()
        assert lines[:-1] == ["-p", stack.project, "up", "-d", "--no-recreate", "--scale", "action-workers=2",
                              "action-workers"]
        assert lines[-1] == f"DOCKER_HOST={stack.engine.base_url}"
        assert stack.state("action-workers", 2) == "running"
    finally:
        await engine.stop()

    # a configured command that is not installed: red guard naming it (no fallback to auto)
    missing = ScaleService(stack.source(), compose_command="docker-compose")
    plan = await missing.plan(service="action-workers", replicas=1)
    assert not plan.guard.ok and "`docker-compose` ([docker] compose_command)" in plan.guard.description
    assert plan.preview.startswith("$ docker-compose -p ")


@pytest.mark.redis
async def test_shutdown_from_config_names_the_queue_confirms_the_project_and_knows_events(
        stack, redis_server, tmp_path):
    """Gap 16: the drain step names the configured [[queues]] entry (the one it waits on), the
    typed confirmation is the compose project, and role = "events" puts a service that the
    name would not give away in the event-processor step."""
    from backends.engine.core import build_engine

    for s in ("gateway", "chain-ingest", "action-workers", "redis"):
        stack.add(s)
    key = f"jobs:{stack.project}"
    services = (_docker_service(stack, "gateway", "api") + _docker_service(stack, "chain-ingest", "events")
                + _docker_service(stack, "action-workers") + _docker_service(stack, "redis"))
    extra = f"""
[redis.main]
url = "{redis_server.url}"

[[queues]]
name = "action_queue"
redis = "main"
key = "{key}"
type = "list"
"""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_server.url)
    await client.rpush(key, "a", "b")
    config = _engine_config(stack, tmp_path, services=services, extra=extra)
    assert {s.name: s.role for s in config.services}["chain-ingest"] == "events"
    engine = build_engine(config, with_logs=False)
    try:
        plan = await engine.actions.plan("stack.shutdown")
        assert plan.danger is Danger.TYPED
        assert plan.expected_confirmation == stack.project and plan.target == f"stack:{stack.project}"
        assert plan.preview.splitlines() == [
            "1. stop gateway: " + f"{stack.project}-gateway-1 running",
            "2. stop chain-ingest: " + f"{stack.project}-chain-ingest-1 running",
            f"3. wait up to 30s for action_queue ({key}) to drain to 0 (now 2)",
            "4. stop action-workers: " + f"{stack.project}-action-workers-1 running",
            "5. stop redis: " + f"{stack.project}-redis-1 running",
        ]
        assert [c.target for c in plan.changes][2] == "queue:action_queue"
        with pytest.raises(ActionRefused, match="confirmation does not match"):
            await engine.actions.execute(plan, confirmation="docker")
        assert stack.state("gateway") == "running"
    finally:
        await engine.stop()
        await client.delete(key)
        await client.aclose()


async def test_shutdown_confirmation_falls_back_to_the_containers_project(stack):
    """Services configured without compose_project: the project comes from the containers
    when they share one; the source name only when there is no single project."""
    name = f"svc{stack.project}"
    stack.add(name)
    src = DockerSource("docker", [DockerServiceSpec(name=name)], base_url=stack.engine.base_url, timeout=10)
    plan = await GracefulShutdown(src).plan()
    assert plan.expected_confirmation == stack.project
    assert src.project_of() is None  # nothing configured, no containers given
    two = DockerSource("docker", [DockerServiceSpec(name="a", project="p1"), DockerServiceSpec(name="b", project="p2")])
    assert two.project_of() is None


def test_system_down_counts_command_services_too():
    from backends.engine.rules import RuleContext
    from backends.sources.docker import everything_down_rule

    def svc(name, kind, status):
        return ServiceReading(source=kind, name=name, kind=kind, state="down" if status is Status.CRIT else "running",
                              status=status)

    down = Snapshot(readings={"x": (svc("api", "docker", Status.CRIT), svc("tee", "command", Status.CRIT))})
    assert [f.key for f in everything_down_rule(down, RuleContext())] == ["system-down"]
    one_up = Snapshot(readings={"x": (svc("api", "docker", Status.CRIT), svc("tee", "command", Status.OK))})
    assert everything_down_rule(one_up, RuleContext()) == []
