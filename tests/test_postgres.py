"""Postgres health and the terminate action against a real PostgreSQL (pgserver), incl. faults."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time

import pytest

from backends.actions.base import ActionEngine
from backends.engine.audit import AuditLog
from backends.engine.monitor import Monitor
from backends.engine.rules import evaluate, make_rules
from backends.errors import ActionRefused, BackendError
from backends.model import LongQuery, PostgresReading, Severity, Snapshot, SourceState
from backends.sources.postgres import (
    PostgresSource,
    TerminateBackend,
    close_pools,
    display_dsn,
    get_pool,
    quote_ident,
)

pytestmark = pytest.mark.postgres


async def wait_for(pred, within: float = 10.0, step: float = 0.02):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = await pred()
        if got:
            return got
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met within {within:.1f}s")


@pytest.fixture(scope="module")
def db(pg):
    return pg.fresh_db("pgh")


@pytest.fixture
async def pool_cleanup():
    yield
    await close_pools()


@pytest.fixture
def engine(tmp_path):
    return ActionEngine(AuditLog(tmp_path / "audit.jsonl"), operator="tester")


class Sleeper:
    """A separate (non-pool) connection running a long query we can observe and kill."""

    def __init__(self, dsn: str, sql: str = "SELECT pg_sleep(60)") -> None:
        self.dsn = dsn
        self.sql = sql
        self.con = None
        self.task = None
        self.pid = None

    async def __aenter__(self):
        import asyncpg

        self.con = await asyncpg.connect(self.dsn, server_settings={"application_name": "worker"})
        self.pid = await self.con.fetchval("SELECT pg_backend_pid()")
        self.task = asyncio.ensure_future(self.con.execute(self.sql))
        return self

    async def __aexit__(self, *exc):
        if self.task and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.con.close(), 2)
        if not self.con.is_closed():
            self.con.terminate()

    async def outcome(self, wait: float = 5.0) -> BaseException | None:
        try:
            await asyncio.wait_for(asyncio.shield(self.task), wait)
        except TimeoutError:
            return None
        except BaseException as exc:  # noqa: BLE001
            return exc
        return None


class TcpProxy:
    """127.0.0.1 TCP forwarder we can take down (dropping every connection) and bring back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.server = None
        self.writers: set = set()

    async def start(self):
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        self.server.close()
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()

    async def _conn(self, reader, writer):
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, uw}

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.transport.abort()

        await asyncio.gather(pipe(reader, uw), pipe(ur, writer))


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


# --------------------------------------------------------------------------- readings


async def test_poll_reads_health(db, pool_cleanup):
    src = PostgresSource("pg.main", db)
    (r,) = await src.poll()
    assert r.reachable and r.source == "pg.main"
    assert r.latency_ms is not None and r.latency_ms < 1000
    assert r.max_connections == 200  # the harness starts postgres with max_connections=200
    assert r.total_connections >= 1
    assert r.database_size_bytes and r.database_size_bytes > 1_000_000
    assert r.server_version
    assert r.long_queries == ()


async def test_active_connections_are_counted(pg, db, pool_cleanup):
    src = PostgresSource("pg.main", db)
    (before,) = await src.poll()
    async with Sleeper(db), Sleeper(db):
        async def two_more():
            (r,) = await src.poll()
            return r if r.active_connections >= before.active_connections + 2 else None

        r = await wait_for(two_more)
        assert r.total_connections >= before.total_connections + 2


async def test_long_queries_with_pid_duration_state_and_text_cut_and_redacted(db, pool_cleanup):
    secret_sql = ("SELECT pg_sleep(60), 'password=hunter2222' AS x, '" + "y" * 400 + "' AS filler")
    src = PostgresSource("pg.main", db, long_query_after=0.3, query_chars=80)
    async with Sleeper(db, secret_sql) as s:
        async def has_long():
            (r,) = await src.poll()
            return r if r.long_queries else None

        r = await wait_for(has_long)
        (q,) = [q for q in r.long_queries if q.pid == s.pid]
        assert q.state == "active" and q.duration_s >= 0.3
        assert q.query.startswith("SELECT pg_sleep(60)")
        assert len(q.query) <= 80 and q.query.endswith("…")
        assert "hunter2222" not in q.query
        assert q.application == "worker" and q.user == "postgres"


async def test_pool_is_shared_and_reused_not_a_connection_per_poll(pg, db, pool_cleanup):
    src = PostgresSource("pg.main", db, pool_max=2)
    for _ in range(10):
        await src.poll()
    p1 = await get_pool(db)
    p2 = await get_pool(db, max_size=5)
    assert p1 is p2 and p1.get_max_size() == 2
    dbname = db.rsplit("/", 1)[1]
    n = int(pg.psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{dbname}' "  # noqa: S608
                    "AND application_name = 'warroom'"))
    assert 1 <= n <= 2


# --------------------------------------------------------------------------- rules


def test_rules_connections_and_long_queries():
    PostgresSource("rules.pg", "postgresql://u@127.0.0.1:1/x", warn_connections=50, long_query_after=60,
                   terminate_after=300)
    ok = PostgresReading(source="rules.pg", active_connections=10, total_connections=20, max_connections=100)
    assert evaluate(Snapshot(readings={"rules.pg": (ok,)})) == []
    warn = PostgresReading(source="rules.pg", active_connections=50, total_connections=60, max_connections=100)
    (f,) = evaluate(Snapshot(readings={"rules.pg": (warn,)}))
    assert f.severity is Severity.P2 and f.playbook == "db-pool-exhausted"
    assert "50 active connections (warn at 50 of 100)" in f.summary
    full = PostgresReading(source="rules.pg", active_connections=30, total_connections=85, max_connections=100)
    (f,) = evaluate(Snapshot(readings={"rules.pg": (full,)}))
    assert f.severity is Severity.P1 and "85%" in f.summary
    long = PostgresReading(source="rules.pg", max_connections=100, long_queries=(
        LongQuery(pid=7, duration_s=90, state="active", query="SELECT slow()"),))
    (f,) = evaluate(Snapshot(readings={"rules.pg": (long,)}))
    assert f.severity is Severity.P3 and "pid 7" in f.evidence[0]
    stuck = PostgresReading(source="rules.pg", max_connections=100, long_queries=(
        LongQuery(pid=7, duration_s=400, state="active", query="SELECT slow()"),
        LongQuery(pid=8, duration_s=90, state="idle in transaction", query="UPDATE t"),))
    (f,) = evaluate(Snapshot(readings={"rules.pg": (stuck,)}))
    assert f.severity is Severity.P2 and "1 query running > 5m00s" in f.summary


def test_quote_ident():
    assert quote_ident("circuit_breaker_state") == '"circuit_breaker_state"'
    assert quote_ident("ops.orders") == '"ops"."orders"'
    for bad in ("orders; DROP TABLE x", 'a"b', "1abc", "", "a.b.c", "a b"):
        with pytest.raises(ValueError):
            quote_ident(bad)


def test_dsn_password_is_masked():
    shown = display_dsn("postgresql://app:Sup3rS3cret@127.0.0.1:5432/db")
    assert "Sup3rS3cret" not in shown and "app:" in shown and "127.0.0.1:5432/db" in shown


# --------------------------------------------------------------------------- terminate


async def test_terminate_one_backend_by_pid(db, engine, pool_cleanup):
    src = PostgresSource("pg.main", db)
    engine.register(TerminateBackend(src))
    async with Sleeper(db) as s:
        plan = await engine.plan("postgres.terminate", pid=str(s.pid), reason="stuck")
        assert plan.guard.ok and plan.total == 1
        (c,) = plan.changes
        assert c.before["pid"] == s.pid and "pg_sleep(60)" in c.before["query"]
        assert f"terminate pid {s.pid}" in plan.preview
        result = await engine.execute(plan, confirmation=True)
        assert result.status == "ok" and result.counts["terminated"] == 1
        exc = await s.outcome()
        assert exc is not None and "terminat" in str(exc)
        # idempotent: the same plan again finds nothing to do
        again = await engine.execute(plan, confirmation=True)
        assert again.status == "refused" and "guard failed" in again.summary
    entries = list(engine.audit.entries())
    assert [e["result"] for e in entries] == ["ok", "refused"]
    assert entries[0]["action"] == "postgres.terminate" and entries[0]["reason"] == "stuck"


async def test_terminate_all_older_than_rechecks_each_pid(db, engine, pool_cleanup):
    src = PostgresSource("pg.main", db, terminate_after=300)
    engine.register(TerminateBackend(src))
    async with Sleeper(db) as a, Sleeper(db) as b:
        await asyncio.sleep(0)  # both queries are sent

        async def both_running():
            plan = await engine.plan("postgres.terminate", all=True, older_than=1)
            pids = {c.before["pid"] for c in plan.changes}
            return plan if {a.pid, b.pid} <= pids else None

        plan = await wait_for(both_running)
        assert plan.danger.value == "confirm"
        assert plan.params["older_than"] == 1
        assert all(f"pid {c.before['pid']}" in plan.preview for c in plan.changes)
        none = await engine.plan("postgres.terminate", all=True, older_than=3600)
        assert none.changes == () and not none.guard.ok
        # the refusal says how long the oldest candidate has run and when it will qualify
        m = re.search(r"the oldest active query has run (\d+\.\d)s: (\d+\.\d)s to go", none.guard.description)
        assert m and float(m[1]) >= 1 and float(m[1]) + float(m[2]) == pytest.approx(3600, abs=0.11)
        # b finishes (cancelled by its client) before we execute: it must be skipped
        b.task.cancel()
        with contextlib.suppress(BaseException):
            await b.task
        result = await engine.execute(plan, confirmation=True)
        assert a.pid in result.after["terminated"]
        assert b.pid not in result.after["terminated"]
        assert result.counts["skipped"] >= 1
        assert isinstance(await a.outcome(), Exception)


async def test_terminate_refuses_bad_input_and_own_connection(db, engine, pool_cleanup):
    src = PostgresSource("pg.main", db)
    engine.register(TerminateBackend(src))
    with pytest.raises(ActionRefused, match="pid must be a number"):
        await engine.plan("postgres.terminate", pid="1; DROP TABLE x")
    with pytest.raises(ActionRefused, match="either a pid or all"):
        await engine.plan("postgres.terminate")
    with pytest.raises(ActionRefused, match="no backend with pid"):
        await engine.plan("postgres.terminate", pid=2**31 - 2)

    async def own(con):
        return await con.fetchval("SELECT pg_backend_pid()")

    own_pid = await src.run(own)
    with pytest.raises(ActionRefused, match="warroom's own connection"):
        await engine.plan("postgres.terminate", pid=own_pid)
    async with Sleeper(db, "SELECT pg_sleep(60)") as s:
        plan = await engine.plan("postgres.terminate", pid=s.pid)
        ro = ActionEngine(engine.audit, read_only=True)
        ro.register(TerminateBackend(src))
        with pytest.raises(ActionRefused, match="read-only"):
            await ro.execute(plan, confirmation=True)
        assert await s.outcome(wait=0.3) is None  # still running


# --------------------------------------------------------------------------- faults


async def test_refused_degrades_with_reason_and_p1_finding(pool_cleanup):
    port = closed_port()
    src = PostgresSource("pg.down", f"postgresql://postgres:Hunter2Secret@127.0.0.1:{port}/x", timeout=1.0)
    mon = Monitor([src], rules=make_rules())
    snap = await mon.poll_once()
    st = snap.sources["pg.down"]
    assert st.state is SourceState.DEGRADED
    # at once, not after the timeout: the reason is the refusal, not a timeout
    assert st.reason == f"connection refused at 127.0.0.1:{port}"
    (f,) = [f for f in snap.findings if f.key == "postgres:pg.down:unreachable"]
    assert f.severity is Severity.P1 and "refused" in f.summary
    assert "Hunter2Secret" not in repr(snap)


async def test_hanging_server_degrades_within_timeout(hanging_port, pool_cleanup):
    src = PostgresSource("pg.hang", f"postgresql://postgres@127.0.0.1:{hanging_port}/x", timeout=0.6)
    mon = Monitor([src], rules=make_rules())
    snap = await mon.poll_once()
    st = snap.sources["pg.hang"]
    assert st.state is SourceState.DEGRADED
    # within the timeout: had the poll overrun it, the monitor's own "timed out after ..." would be the reason
    assert st.reason.startswith(f"no answer from 127.0.0.1:{hanging_port}")


async def test_auth_failure_is_readable(pg, pool_cleanup):
    dsn = f"postgresql://nobody:Pw0rdSecret@127.0.0.1:{pg.port}/postgres"
    src = PostgresSource("pg.auth", dsn, timeout=2.0)
    with pytest.raises(BackendError) as ei:
        await src.poll()
    assert ei.value.reason.startswith("authentication failed")
    assert 'role "nobody" does not exist' in ei.value.reason
    assert "Pw0rdSecret" not in str(ei.value)
    missing = PostgresSource("pg.nodb", pg.dsn_for("no_such_db"), timeout=2.0)
    with pytest.raises(BackendError, match='database "no_such_db" does not exist'):
        await missing.poll()


async def test_service_that_comes_back_recovers_by_itself(pg, db, pool_cleanup):
    proxy = await TcpProxy(pg.port).start()
    dsn = db.replace(f":{pg.port}/", f":{proxy.port}/")
    src = PostgresSource("pg.flaky", dsn, timeout=1.0, interval=0.05)
    mon = Monitor([src], rules=make_rules(), max_backoff=0.1)
    await mon.start()
    try:
        async def state(s):
            st = mon.snapshot.sources["pg.flaky"]
            return st if st.state is s else None

        await wait_for(lambda: state(SourceState.OK))
        await proxy.stop()  # every pooled connection breaks, new ones are refused
        st = await wait_for(lambda: state(SourceState.DEGRADED))
        assert "refused" in st.reason or "closed" in st.reason or "no answer" in st.reason
        await proxy.start()  # same port
        st = await wait_for(lambda: state(SourceState.OK))
        assert st.failures == 0
        assert not any(f.key.endswith(":unreachable") for f in mon.snapshot.findings)
    finally:
        await mon.stop()
        await proxy.stop()


async def test_dead_pooled_connections_are_replaced_without_a_failed_poll(pg, db, pool_cleanup):
    src = PostgresSource("pg.main", db, pool_max=2)
    await src.poll()
    dbname = db.rsplit("/", 1)[1]
    pg.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}' "  # noqa: S608
            "AND application_name = 'warroom'")
    (r,) = await src.poll()  # retried once on a fresh connection
    assert r.reachable
