"""Circuit breakers from the seed's Postgres table and pybreaker Redis keys; reset actions; faults."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from datetime import UTC, datetime

import pytest

from backends.actions.base import ActionEngine
from backends.engine.audit import AuditLog
from backends.engine.monitor import Monitor
from backends.engine.rules import evaluate, make_rules
from backends.errors import ActionRefused
from backends.model import BreakersReading, Severity, Snapshot, SourceState
from backends.sources.breakers import (
    BreakerTable,
    PostgresBreakers,
    RedisBreakers,
    ResetAllBreakers,
    ResetBreaker,
    actions_for,
)
from backends.sources.postgres import close_pools
from backends.sources.redis import close_clients

SEED_TABLE = """
CREATE TABLE {t} (
  trigger_id text PRIMARY KEY,
  state text NOT NULL DEFAULT 'closed',
  failure_count int NOT NULL DEFAULT 0,
  last_failure_at timestamptz
)"""


@pytest.fixture(scope="module")
def db(pg):
    dsn = pg.fresh_db("brk")
    return dsn, dsn.rsplit("/", 1)[1]


@pytest.fixture
async def table(pg, db):
    """A fresh seed-shaped table per test; yields (dsn, name, psql)."""
    dsn, dbname = db
    name = f"cbs_{uuid.uuid4().hex[:8]}"
    pg.psql(SEED_TABLE.format(t=name), dbname)

    def psql(sql: str) -> str:
        return pg.psql(sql.format(t=name), dbname)

    yield dsn, name, psql
    await close_pools()


@pytest.fixture
def engine(tmp_path):
    return ActionEngine(AuditLog(tmp_path / "audit.jsonl"), operator="tester")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_for(pred, within: float = 10.0, step: float = 0.02):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met within {within:.1f}s")


def src(dsn: str, name: str, **kw) -> PostgresBreakers:
    return PostgresBreakers("breakers", dsn, table=BreakerTable(table=name), **kw)


# --------------------------------------------------------------------------- postgres readings


@pytest.mark.postgres
async def test_reads_states_counts_and_time_to_half_open(table):
    dsn, name, psql = table
    psql("INSERT INTO {t} VALUES ('webhook', 'open', 5, now() - interval '20 seconds'),"
         " ('telegram', 'closed', 0, NULL), ('email', 'half_open', 2, now() - interval '2 minutes'),"
         " ('discord', 'OPEN', 7, now() - interval '5 minutes')")
    (r,) = await src(dsn, name).poll()
    assert isinstance(r, BreakersReading)
    assert (r.total, r.open, r.half_open) == (4, 2, 1)
    assert [b.name for b in r.breakers][:2] == ["discord", "webhook"]  # open first, most failures first
    by = {b.name: b for b in r.breakers}
    assert by["webhook"].state == "open" and by["webhook"].failures == 5
    assert 38 <= by["webhook"].half_open_in_s <= 41
    assert by["discord"].half_open_in_s == 0.0  # past the reset timeout: due
    assert by["email"].state == "half-open" and by["email"].half_open_in_s is None
    assert by["telegram"].last_failure_at is None and by["telegram"].half_open_in_s is None
    assert all(b.backend == "postgres" for b in r.breakers)


@pytest.mark.postgres
async def test_configurable_names_opened_at_and_naive_timestamps(pg, db):
    dsn, dbname = db
    schema = f"ops_{uuid.uuid4().hex[:6]}"
    pg.psql(f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.cb (name text, status text, fails int, "  # noqa: S608
            "failed_at timestamp, opened timestamptz);"
            f"INSERT INTO {schema}.cb VALUES ('a', 'open', 3, '2026-06-01 09:00:00.25', now() - interval '50 s')",
            dbname)
    t = BreakerTable(table=f"{schema}.cb", id_column="name", state_column="status", failures_column="fails",
                     last_failure_column="failed_at", opened_at_column="opened")
    try:
        (r,) = await PostgresBreakers("b", dsn, table=t, reset_timeout=120).poll()
        (b,) = r.breakers
        assert b.name == "a" and b.failures == 3
        assert b.last_failure_at is not None and b.last_failure_at.tzinfo is not None
        # a naive timestamp is read as UTC (exactly: no tolerance against this machine's clock)
        assert b.last_failure_at == datetime(2026, 6, 1, 9, 0, 0, 250000, tzinfo=UTC)
        assert 68 <= b.half_open_in_s <= 71  # from opened_at (120 - 50), not from the last failure
    finally:
        await close_pools()


def test_bad_identifiers_are_refused():
    for bad in (BreakerTable(table="x; drop table y"), BreakerTable(id_column='a"b'),
                BreakerTable(state_column="a.b")):
        with pytest.raises(ValueError):
            PostgresBreakers("b", "postgresql://u@127.0.0.1:1/x", table=bad)


@pytest.mark.postgres
async def test_one_thousand_breakers_one_query_with_limit_and_counts(table):
    dsn, name, psql = table
    psql("INSERT INTO {t} SELECT 'trigger-' || i, CASE WHEN i % 100 = 0 THEN 'open' ELSE 'closed' END, "
         "i % 7, now() - interval '1 minute' FROM generate_series(1, 1000) i")
    s = src(dsn, name, show=50)
    (r,) = await s.poll()
    assert (r.total, r.open) == (1000, 10)
    assert len(r.breakers) == 50
    assert all(b.state == "open" for b in r.breakers[:10])
    (full,) = await src(dsn, name).poll()
    assert len(full.breakers) == 1000


# --------------------------------------------------------------------------- rules


@pytest.mark.postgres
async def test_rules_some_open_p2_all_open_p1(table):
    dsn, name, psql = table
    s = src(dsn, name)
    (r,) = await s.poll()
    assert r.total == 0 and evaluate(Snapshot(readings={"breakers": (r,)})) == []
    psql("INSERT INTO {t} VALUES ('a', 'closed', 0, NULL), ('b', 'open', 5, now())")
    (r,) = await s.poll()
    (f,) = evaluate(Snapshot(readings={"breakers": (r,)}))
    assert f.severity is Severity.P2 and f.key == "breakers:breakers:open"
    assert "1 of 2 circuit breaker(s) open: b" in f.summary
    assert f.evidence[0].startswith("b: 5 failure(s), last failure")
    psql("UPDATE {t} SET state = 'open'")
    (r,) = await s.poll()
    (f,) = evaluate(Snapshot(readings={"breakers": (r,)}))
    assert f.severity is Severity.P1 and f.playbook == "all-breakers-open"
    assert f.key == "breakers:breakers:all-open" and "All 2 circuit breaker(s) open" in f.summary


# --------------------------------------------------------------------------- actions


@pytest.mark.postgres
async def test_reset_one_previews_before_after_and_is_conditional(table, engine):
    dsn, name, psql = table
    psql("INSERT INTO {t} VALUES ('webhook', 'open', 5, now()), ('telegram', 'closed', 0, NULL)")
    s = src(dsn, name)
    for a in actions_for(s):
        engine.register(a)
    plan = await engine.plan("breaker.reset", trigger_id="webhook", reason="webhook back")
    assert plan.guard.ok
    (c,) = plan.changes
    assert c.before["state"] == "open" and c.before["failures"] == 5
    assert c.after == {"id": "webhook", "state": "closed", "failures": 0}
    assert "webhook: open, 5 failure(s) -> closed, 0 failures" in plan.preview
    result = await engine.execute(plan, confirmation=True)
    assert result.status == "ok" and result.counts["reset"] == 1
    assert psql("SELECT state || ',' || failure_count FROM {t} WHERE trigger_id = 'webhook'").strip() == "closed,0"
    again = await engine.execute(plan, confirmation=True)
    assert again.status == "refused" and "guard failed" in again.summary
    closed = await engine.plan("breaker.reset", trigger_id="telegram")
    assert not closed.guard.ok and "closed" in closed.guard.detail
    with pytest.raises(ActionRefused, match="no breaker"):
        await engine.plan("breaker.reset", trigger_id="nope' OR '1'='1")
    with pytest.raises(ActionRefused, match="which breaker"):
        await engine.plan("breaker.reset")
    assert [e["result"] for e in engine.audit.entries()] == ["ok", "refused"]


@pytest.mark.postgres
async def test_reset_skips_a_breaker_that_closed_after_the_guard(table, engine):
    dsn, name, psql = table
    psql("INSERT INTO {t} VALUES ('webhook', 'open', 5, now())")
    action = ResetBreaker(src(dsn, name))
    plan = await action.plan(trigger_id="webhook")
    psql("UPDATE {t} SET state = 'half-open'")  # the service moved on between preview and execute
    result = await action.execute(plan, lambda p: None)
    assert result.status == "skipped"
    assert psql("SELECT state FROM {t}").strip() == "half-open"


@pytest.mark.postgres
async def test_reset_all_needs_the_typed_count_and_touches_only_planned_breakers(table, engine):
    dsn, name, psql = table
    psql("INSERT INTO {t} VALUES ('a', 'open', 1, now()), ('b', 'open', 2, now()), ('c', 'open', 3, now()),"
         " ('d', 'closed', 0, NULL)")
    s = src(dsn, name)
    engine.register(ResetAllBreakers(s))
    plan = await engine.plan("breaker.reset_all", reason="incident 5")
    assert plan.danger.value == "typed" and plan.expected_confirmation == "3"
    assert [c.before["id"] for c in plan.changes] == ["a", "b", "c"]
    with pytest.raises(ActionRefused, match="type '3'"):
        await engine.execute(plan, confirmation="yes")
    psql("UPDATE {t} SET state = 'open' WHERE trigger_id = 'd'")  # opened after the preview
    psql("UPDATE {t} SET state = 'closed' WHERE trigger_id = 'c'")  # closed by itself
    result = await engine.execute(plan, confirmation="3")
    assert result.status == "ok" and result.counts == {"reset": 2, "skipped": 1}
    rows = dict(line.split("|") for line in psql("SELECT trigger_id, state FROM {t}").split())
    assert rows == {"a": "closed", "b": "closed", "c": "closed", "d": "open"}
    assert [e["result"] for e in engine.audit.entries()] == ["refused", "ok"]


# --------------------------------------------------------------------------- redis (pybreaker)


@pytest.fixture
async def rb(redis_server):
    c = redis_server.client()
    ns = f"t{uuid.uuid4().hex[:6]}"
    yield c, ns
    c.close()
    await close_clients()


@pytest.mark.redis
async def test_pybreaker_redis_keys(redis_server, rb, engine):
    c, ns = rb
    now = int(time.time())
    c.set(f"{ns}.webhook:pybreaker:state", "open")
    c.set(f"{ns}.webhook:pybreaker:fail_counter", 5)
    c.set(f"{ns}.webhook:pybreaker:opened_at", now - 15)
    c.set(f"{ns}.tg:pybreaker:state", "half-open")
    s = RedisBreakers("rbreakers", redis_server.url, [f"{ns}.webhook", f"{ns}.tg", f"{ns}.new"])
    (r,) = await s.poll()
    assert (r.total, r.open, r.half_open) == (2, 1, 1)
    by = {b.name: b for b in r.breakers}
    assert by[f"{ns}.webhook"].failures == 5 and 43 <= by[f"{ns}.webhook"].half_open_in_s <= 46
    # no keys: not a breaker (never a healthy "closed"); the source says so (tests/test_pybreaker.py)
    assert f"{ns}.new" not in by and f"no breaker state under {ns}.new:pybreaker:state" in s.answer_problem()
    assert all(b.backend == "redis" for b in r.breakers)
    (f,) = evaluate(Snapshot(readings={"rbreakers": (r,)}))
    assert f.severity is Severity.P2
    for a in actions_for(s):
        engine.register(a)
    plan = await engine.plan("breaker.reset", trigger_id=f"{ns}.webhook")
    result = await engine.execute(plan, confirmation=True)
    assert result.status == "ok"
    assert c.get(f"{ns}.webhook:pybreaker:state") == b"closed"
    assert c.get(f"{ns}.webhook:pybreaker:fail_counter") == b"0"
    all_plan = await engine.plan("breaker.reset_all")
    assert all_plan.total == 0 and not all_plan.guard.ok
    with pytest.raises(ValueError):
        RedisBreakers("x", redis_server.url, ["bad ns with spaces"])


# --------------------------------------------------------------------------- faults


@pytest.mark.postgres
async def test_unreachable_postgres_breakers_degrade_and_recover(pg, table):
    dsn, name, psql = table
    port = closed_port()
    down = PostgresBreakers("breakers.down", f"postgresql://postgres:Hunter22x@127.0.0.1:{port}/x",
                            table=BreakerTable(table=name), timeout=1.0)
    mon = Monitor([down], rules=make_rules())
    snap = await mon.poll_once()
    st = snap.sources["breakers.down"]
    assert st.state is SourceState.DEGRADED and st.reason == f"connection refused at 127.0.0.1:{port}"
    assert "Hunter22x" not in repr(snap)
    # broken pooled connections (server-side kill) are replaced without a failed poll
    psql("INSERT INTO {t} VALUES ('a', 'open', 1, now())")
    s = src(dsn, name)
    await s.poll()
    psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'warroom' "
         "AND datname = current_database()")
    (r,) = await s.poll()
    assert r.open == 1


@pytest.mark.postgres
async def test_hanging_postgres_breakers_degrade_within_timeout():
    writers = []

    async def on_conn(reader, writer):
        writers.append(writer)
        await asyncio.Event().wait()

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        s = PostgresBreakers("breakers.hang", f"postgresql://postgres@127.0.0.1:{port}/x", timeout=0.5)
        mon = Monitor([s], rules=make_rules())
        snap = await mon.poll_once()
        st = snap.sources["breakers.hang"]
        # within the timeout: had the poll overrun it, the monitor's own "timed out after 500ms" would be the reason
        assert st.state is SourceState.DEGRADED and st.reason.startswith(f"no answer from 127.0.0.1:{port}")
    finally:
        for w in writers:
            w.transport.abort()
        srv.close()
        await close_pools()


@pytest.mark.redis
async def test_redis_breakers_degrade_and_come_back(redis_server, rb):
    c, ns = rb
    c.set(f"{ns}:pybreaker:state", "closed")  # a namespace without keys is DEGRADED by itself
    s = RedisBreakers("rbreakers.flaky", redis_server.url, [ns], timeout=1.0, interval=0.05)
    mon = Monitor([s], rules=make_rules(), max_backoff=0.1)
    await mon.start()
    try:
        def state(want):
            st = mon.snapshot.sources["rbreakers.flaky"]
            return st if st.state is want else None

        await wait_for(lambda: state(SourceState.OK))
        await asyncio.to_thread(redis_server.stop)
        st = await wait_for(lambda: state(SourceState.DEGRADED))
        assert "refused" in st.reason or "closed" in st.reason
        await asyncio.to_thread(redis_server.start)
        c.set(f"{ns}:pybreaker:state", "closed")  # a restarted server may have lost it
        await wait_for(lambda: state(SourceState.OK))
    finally:
        await mon.stop()
