"""The engine built from a real config against the real harness services."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends.config import load_config_text
from backends.engine import build_engine
from backends.errors import ActionRefused
from backends.model import (
    BreakersReading,
    ChainReading,
    OrdersReading,
    PostgresReading,
    QueueReading,
    RedisReading,
    ServiceReading,
    SourceState,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.evm]

SCHEMA = """
CREATE TABLE orders (id text primary key, state text not null, amount numeric default 0,
  created_at timestamptz not null default now(), updated_at timestamptz default now(), notes text,
  block_number bigint, tx_hash text);
CREATE INDEX orders_state_created ON orders (state, created_at);
CREATE TABLE circuit_breaker_state (trigger_id text primary key, state text not null,
  failure_count int not null default 0, last_failure_at timestamptz);
INSERT INTO orders (id, state, created_at) VALUES
  ('ord-1', 'PENDING', now() - interval '2 hours'),
  ('ord-2', 'PENDING', now() - interval '30 minutes'),
  ('ord-3', 'SETTLED', now() - interval '1 hour'),
  ('ord-4', 'PENDING', now());
INSERT INTO circuit_breaker_state VALUES ('webhook-a', 'open', 7, now()), ('webhook-b', 'closed', 0, null);
"""


@pytest.fixture(scope="module")
def stack(pg, redis_server, anvil, escrow, tmp_path_factory):
    dsn = pg.fresh_db("engine")

    async def setup():
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(SCHEMA)
        finally:
            await conn.close()

    asyncio.run(setup())
    tmp = tmp_path_factory.mktemp("engine")
    abi = tmp / "Escrow.json"
    abi.write_text(json.dumps(escrow.abi))
    logfile = tmp / "listener.log"
    logfile.write_text("")
    # a real process to find by command line
    marker = f"warroom-test-listener-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", marker])
    escrow.release("ord-1", 5)
    cfg = f"""
[warroom]
name = "engine-test"
environment = "test"
refresh = "1s"
timeout = "3s"
audit_path = "{tmp / 'audit.jsonl'}"
state_dir = "{tmp / 'state'}"
operator = "tester"

[postgres.main]
dsn = "{dsn}"

[redis.main]
url = "{redis_server.url}"

[chain.local]
kind = "evm"
chain_id = {anvil.chain_id}
endpoints = ["{anvil.url}"]
confirmations = 1

[[chain.local.contracts]]
name = "escrow"
address = "{escrow.address}"
abi = "{abi}"
pausable = true

[[commands]]
name = "restart-listener"
argv = ["{sys.executable}", "-c", "import sys; print('restarted', sys.argv[1])", "{{service}}"]

[[services]]
name = "listener"
kind = "process"
match = "{marker}"
restart_command = "restart-listener"
logs = "{logfile}"

[[queues]]
name = "action_jobs"
redis = "main"
key = "engine_test_jobs"

[breakers]
postgres = "main"
table = "circuit_breaker_state"

[orders]
postgres = "main"
notes_column = "notes"
block_column = "block_number"
tx_column = "tx_hash"
chain = "local"
contract = "escrow"
stuck_after = "10m"
"""
    config = load_config_text(cfg, str(tmp / "warroom.toml"))
    yield config, proc, tmp
    proc.terminate()
    proc.wait(5)


async def test_every_configured_source_reads_ok(stack):
    config, proc, tmp = stack
    engine = build_engine(config)
    try:
        snap = await engine.monitor.poll_once()
        bad = {n: s.reason for n, s in snap.sources.items() if s.state is not SourceState.OK}
        assert bad == {}
        assert snap.of_type(PostgresReading)[0].reachable
        assert snap.of_type(RedisReading)[0].reachable
        [q] = snap.of_type(QueueReading)
        assert q.key == "engine_test_jobs" and q.depth == 0
        [b] = snap.of_type(BreakersReading)
        assert (b.total, b.open) == (2, 1)
        [o] = snap.of_type(OrdersReading)
        assert o.stuck_count == 2 and {x.id for x in o.oldest} == {"ord-1", "ord-2"}
        [c] = snap.of_type(ChainReading)
        assert c.endpoints[0].ok and c.contracts[0].paused is False
        [svc] = [r for r in snap.of_type(ServiceReading) if r.name == "listener"]
        assert svc.state == "running" and svc.pid == proc.pid
        keys = {f.key for f in snap.findings}
        assert any("breaker" in k for k in keys)
        assert any("orders" in k or "stuck" in k for k in keys)
    finally:
        await engine.stop()


async def test_actions_registered_and_routed(stack):
    config, proc, tmp = stack
    engine = build_engine(config)
    try:
        ids = {a.id for a in engine.actions.available()}
        for expected in ("orders.fix", "orders.bulk_fix", "breaker.reset", "breaker.reset_all",
                         "chain.pause", "chain.failover", "service.restart", "process.restart",
                         "postgres.terminate"):
            assert expected in ids, expected
        plan = await engine.actions.plan("service.restart", service="listener", reason="drill")
        assert plan.action == "process.restart"
        with pytest.raises(ActionRefused, match="no way to restart"):
            await engine.actions.plan("service.restart", service="nope")
        # breaker reset end to end through the engine, audited
        plan = await engine.actions.plan("breaker.reset", trigger_id="webhook-a", reason="webhook fixed")
        result = await engine.actions.execute(plan, confirmation="yes")
        assert result.ok, result.summary
        entry = engine.audit.tail(1)[0]
        assert entry["action"] == "breaker.reset" and entry["operator"] == "tester"
        assert engine.audit.verify().ok
    finally:
        await engine.stop()


async def test_read_only_engine_offers_no_mutating_action(stack):
    config, proc, tmp = stack
    engine = build_engine(config, read_only=True)
    try:
        assert all(not a.mutating for a in engine.actions.available())
        plan = await engine.actions.plan("breaker.reset", trigger_id="webhook-a", reason="x")
        with pytest.raises(ActionRefused, match="read-only"):
            await engine.actions.execute(plan, confirmation="yes")
    finally:
        await engine.stop()


def test_empty_engine_builds_without_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    engine = build_engine(None)
    assert engine.monitor.sources == {}
    assert Path(engine.audit.path).is_relative_to(tmp_path)
