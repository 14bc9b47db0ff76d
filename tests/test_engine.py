"""The engine built from a real config against the real harness services."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.engine.core import build_engine
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


async def test_sql_and_jsonrpc_value_checks(pg, anvil, tmp_path):
    from backends.config import load_config_text
    from backends.model import CheckReading, Status

    dsn = pg.fresh_db("checks")
    text = f"""
[warroom]
audit_path = "{tmp_path / 'audit.jsonl'}"
state_dir = "{tmp_path}"

[postgres.main]
dsn = "{dsn}"

[[checks]]
name = "numbers"
kind = "sql"
postgres = "main"
query = "SELECT count(*) FROM generate_series(1, 3)"
warn_above = 1
playbook = "orders-stuck"

[[checks]]
name = "head"
kind = "jsonrpc"
url = "{anvil.url}"
method = "eth_blockNumber"
crit_below = 1

[[checks]]
name = "down"
kind = "jsonrpc"
url = "http://127.0.0.1:9"
method = "eth_blockNumber"
"""
    engine = build_engine(load_config_text(text, str(tmp_path / "w.toml")), with_logs=False)
    try:
        anvil.mine(1)
        snap = await engine.monitor.poll_once()
        checks = {r.name: r for r in snap.of_type(CheckReading)}
        assert checks["numbers"].value == 3 and checks["numbers"].status is Status.WARN
        assert checks["head"].value >= 1 and checks["head"].status is Status.OK
        assert checks["down"].status is Status.CRIT and "refused" in checks["down"].detail
        by_key = {f.key: f for f in snap.findings}
        assert by_key["check:check.numbers"].playbook == "orders-stuck"
        assert "check:check.down" in by_key
    finally:
        await engine.stop()


def test_log_buffer_from_the_config_sizes_the_hub(tmp_path, monkeypatch):
    """[warroom] log_buffer: the hub keeps that many lines; the engine tells the UI (Logs pane)."""
    from backends.config import load_config

    log = tmp_path / "app.log"
    cfg = tmp_path / "warroom.toml"
    cfg.write_text(f'[warroom]\nstate_dir = "{tmp_path}"\nlog_buffer = 150\n'
                   f'[[logs]]\nname = "app"\npath = "{log}"\n')
    engine = build_engine(load_config(cfg))
    assert engine.log_buffer == 150 and engine.logs.buffer.maxlen == 150
    engine.logs.feed("app", [f"INFO line {i}" for i in range(400)])
    assert len(engine.logs.recent()) == 150 and engine.logs.recent()[-1].text == "INFO line 399"
    cfg.write_text(f'[warroom]\nstate_dir = "{tmp_path}"\n[[logs]]\nname = "app"\npath = "{log}"\n')
    assert build_engine(load_config(cfg)).log_buffer == 10_000
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert build_engine(None).log_buffer == 10_000


def test_two_engines_in_one_process_judge_with_their_own_settings(tmp_path):
    """Rule settings belong to the engine: a second engine built in the same process (tests,
    serve with several tabs, replay) never changes the first one's judgement."""
    from backends.config import load_config_text
    from backends.model import CheckReading, Snapshot, Status

    def engine_with(severity: str, sub: str):
        text = f"""
[warroom]
state_dir = "{tmp_path / sub}"

[[checks]]
name = "api"
kind = "http"
url = "http://127.0.0.1:9/health"
severity = "{severity}"
"""
        return build_engine(load_config_text(text, env={}, base_dir=tmp_path, path=tmp_path / f"{sub}.toml"),
                            with_logs=False)

    first = engine_with("P0", "a")
    second = engine_with("P3", "b")  # built after: must not change the first engine's rules
    source, src = next(iter(first.monitor.sources.items()))
    reading = CheckReading(source=source, name=src.check, kind="http", status=Status.CRIT,
                           detail="connection refused")
    snap = Snapshot(readings={source: (reading,)})
    judged = {}
    for name, engine in (("first", first), ("second", second)):
        findings = [f for f in engine.monitor._rules(snap) if f.key.startswith("check:")]
        assert len(findings) == 1, findings
        judged[name] = findings[0].severity.label
    assert judged == {"first": "P0", "second": "P3"}
