"""The engine built from a real config against the real harness services."""

from __future__ import annotations

from pathlib import Path

import pytest

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
from tests.harness.stack import build_stack

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.evm]


@pytest.fixture(scope="module")
def stack(pg, redis_server, anvil, escrow, tmp_path_factory):
    s = build_stack(pg, redis_server, anvil, escrow, tmp_path_factory.mktemp("engine"), name="engine")
    yield s.config, s.proc, s.tmp
    s.close()


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
