"""Every seed playbook is reachable from a finding the rules really produce, and the
real condition in the harness (the listener process stopped while an order's release
is on chain) leads to the listener-failure playbook whose next step is reconcile."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from backends.engine.playbooks import BUILTIN, PLAYBOOK_IDS, PlaybookBook, step_action_id
from backends.engine.rules import RuleContext, evaluate
from backends.model import (
    BalanceReading,
    BreakerReading,
    BreakersReading,
    ChainReading,
    ContractReading,
    EndpointReading,
    Finding,
    Order,
    OrdersReading,
    OrderVerdict,
    PostgresReading,
    QueueReading,
    ServiceReading,
    Severity,
    Snapshot,
    Status,
    Verdict,
    utcnow,
)


def _svc(name: str, state: str = "exited", kind: str = "docker") -> ServiceReading:
    return ServiceReading(source="docker" if kind == "docker" else "processes", name=name, kind=kind, state=state,
                          status=Status.CRIT if state != "running" else Status.OK)


def _released_order(oid: str) -> Order:
    v = OrderVerdict(order_id=oid, verdict=Verdict.RELEASED, tx_hash="0xabc", block=10, confirmations=12, final=True)
    return Order(id=oid, state="PENDING", age_s=7200, verdict=v)


def _readings_for(pid: str):
    """A constructed reading (and rule context) for which the rules produce a finding of `pid`."""
    now = utcnow()
    if pid == "listener-failure":
        return [OrdersReading(source="orders", stuck_count=1, oldest_age_s=7200, oldest=(_released_order("o-1"),))]
    if pid == "orders-stuck":
        return [OrdersReading(source="orders", stuck_count=3, oldest_age_s=7200,
                              oldest=(Order(id="o-2", state="PENDING", age_s=7200),))]
    if pid == "events-not-processed":
        from backends.sources.logs import LogSignals

        return [LogSignals(source="logs", name="event-processor", service="event-processor",
                           silence_after_s=300, silent_for_s=900, last_line_at=now - timedelta(minutes=15))]
    if pid == "api-down":
        return [_svc("api-gateway")]
    if pid == "db-pool-exhausted":
        return [PostgresReading(source="postgres.main", total_connections=95, max_connections=100,
                                active_connections=90)]
    if pid == "queue-overflow":
        return [QueueReading(source="queues.main", name="action_jobs", key="action_jobs", depth=60_000,
                             status=Status.CRIT)]
    if pid == "all-breakers-open":
        bs = tuple(BreakerReading(source="breakers", name=f"b{i}", state="open", failures=5) for i in range(3))
        return [BreakersReading(source="breakers", breakers=bs, total=3, open=3)]
    if pid == "rpc-failure":
        return [ChainReading(source="chain.polygon", chain="polygon", endpoints=(
            EndpointReading(source="chain.polygon", chain="polygon", url="http://127.0.0.1:1", name="primary",
                            error="connection refused"),
            EndpointReading(source="chain.polygon", chain="polygon", url="http://127.0.0.1:2", name="backup",
                            error="connection refused")))]
    if pid == "gas-low":
        return [ChainReading(source="chain.neo", chain="neo", balances=(
            BalanceReading(source="chain.neo", chain="neo", name="gas-bank", address="N1", balance=10,
                           minimum=1000, display="0.0000001 GAS", decimals=8, symbol="GAS"),))]
    if pid == "contract-exploit":
        from backends.sources.logs import LogSignals, PatternHit

        hit = PatternHit(pattern="large-release", severity=Severity.P0, playbook="contract-exploit",
                         count=5, window_s=60)
        return [LogSignals(source="logs", name="event-listener", hits=(hit,))]
    if pid == "contract-paused":
        return [ChainReading(source="chain.polygon", chain="polygon", contracts=(
            ContractReading(source="chain.polygon", chain="polygon", name="escrow", address="0x1", code_present=True,
                            paused=True),))]
    if pid == "payment-hub":
        from backends.sources.logs import LogSignals, PatternHit

        hit = PatternHit(pattern="payment receipt validation failed", severity=Severity.P0, playbook="payment-hub",
                         count=3, window_s=300)
        return [LogSignals(source="logs", name="platform-edge", hits=(hit,))]
    if pid == "system-down":
        return [_svc("api-gateway"), _svc("event-processor"), _svc("action-workers")]
    if pid == "tee-failure":
        from backends.model import CheckReading
        from backends.sources.http import HttpCheck

        HttpCheck("tee-signer", "http://127.0.0.1:9443/health", playbook="tee-failure", severity=Severity.P1,
                  source="health.tee-signer", target="service:tee-signer")
        return [CheckReading(source="health.tee-signer", name="tee-signer", status=Status.CRIT, http_status=503,
                             detail="HTTP 503")]
    if pid == "service-down":
        return [_svc("action-workers", state="missing", kind="process")]
    if pid == "alertmanager-alert":
        from backends.sources.alertmanager import AlertReading

        return [AlertReading(source="alertmanager.fleet", name="HighLatency", fingerprint="4f1e2d",
                             labels={"alertname": "HighLatency", "severity": "warning"})]
    if pid.startswith("signer-"):
        from backends.model import SignerReading

        s = {"signer-stuck": dict(latest_nonce=4, pending_nonce=5, pending_count=1, stuck_nonce=4,
                                  oldest_pending_blocks=5, stuck_after_blocks=3),
             "signer-nonce-gap": dict(latest_nonce=4, pending_nonce=4, queued_count=2, gap_nonce=4),
             "signer-runway": dict(balance=10**18, min_balance=5 * 10**17, runway_s=600.0,
                                   runway_min_s=3600.0)}[pid]
        return [ChainReading(source="chain.polygon", chain="polygon", signers=(
            SignerReading(source="chain.polygon", chain="polygon", label="relayer", address="0x1", **s),))]
    if pid == "release-reorged":
        v = OrderVerdict(order_id="o-9", verdict=Verdict.NOT_RELEASED, reorged_block=120, reorg_depth=2)
        return [OrdersReading(source="orders", stuck_count=1, oldest_age_s=7200,
                              oldest=(Order(id="o-9", state="PENDING", age_s=7200, verdict=v),))]
    if pid == "missed-blocks":
        from backends.sources.integrity import GapRange, IntegrityReading

        return [IntegrityReading(source="integrity.orders", chain="polygon", cursor=200, head=210, gaps=(
            GapRange(from_block=120, to_block=131, order_ids=("o-1", "o-2"), tx_hashes=("0xa", "0xb")),))]
    if pid == "rpc-degraded":
        from backends.sources.rpcscore import ScoreReading

        return [ScoreReading(source="rpcscore.polygon", chain="polygon", last_switch="rpc1 -> rpc2: error rate 0.90 > 0.7")]
    if pid == "contract-guardrail":
        from backends.sources.guardrails import GuardEvent, GuardReading

        return [GuardReading(source="guardrails.polygon", chain="polygon", events=(GuardEvent(
            contract="escrow", address="0x1", event="Upgraded", block=5, tx_hash="0xabc", log_index=0,
            args=(("implementation", "0x2"),), severity=Severity.P0, why="not announced"),))]
    raise AssertionError(f"no reading for {pid}")


EXPECTED_KEYS = {
    "listener-failure": "listener-failure:orders",
    "orders-stuck": "orders-stuck:orders",
    "events-not-processed": "logs:silence:event-processor",
    "api-down": "service-down:api-gateway",
    "db-pool-exhausted": "postgres:postgres.main:connections",
    "queue-overflow": "queue:queues.main:action_jobs:depth",
    "all-breakers-open": "breakers:breakers:all-open",
    "rpc-failure": "rpc-failure:polygon",
    "gas-low": "gas-low:neo:gas-bank",
    "contract-exploit": "logs:pattern:event-listener:large-release",
    "contract-paused": "contract-paused:polygon:escrow",
    "payment-hub": "logs:pattern:platform-edge:payment receipt validation failed",
    "system-down": "system-down",
    "tee-failure": "check:health.tee-signer:tee-signer",
    "service-down": "service-down:action-workers",
    "alertmanager-alert": "alert:alertmanager.fleet:4f1e2d",
    "missed-blocks": "missed-blocks:integrity.orders:120-131",
    "rpc-degraded": "rpc-switched:polygon",
    "contract-guardrail": "guardrail:polygon:escrow:Upgraded:0xabc:0",
    "signer-stuck": "signer-stuck:polygon:relayer",
    "signer-nonce-gap": "signer-nonce-gap:polygon:relayer",
    "signer-runway": "signer-runway:polygon:relayer",
    "release-reorged": "release-reorged:orders:o-9",
}


def test_every_builtin_playbook_has_a_case():
    assert set(EXPECTED_KEYS) == set(PLAYBOOK_IDS)
    # the seeds' thirteen procedures, the generic service-down, the paused contract's way back and
    # an alert from Alertmanager
    assert len(BUILTIN) == 16 + 4 + 3  # + the signers' three and the reorged release, missed blocks, rpc
    # degraded and contract guardrail (issue 19)


@pytest.mark.parametrize("pid", sorted(EXPECTED_KEYS))
def test_rules_lead_to_each_playbook(pid):
    readings = _readings_for(pid)
    by_source: dict[str, list] = {}
    for r in readings:
        by_source.setdefault(r.source, []).append(r)
    snap = Snapshot(readings={k: tuple(v) for k, v in by_source.items()})
    findings = {f.key: f for f in evaluate(snap, RuleContext())}
    key = EXPECTED_KEYS[pid]
    assert key in findings, sorted(findings)
    f = findings[key]
    assert f.playbook == pid
    book = PlaybookBook()
    pb = book.get(pid)
    assert pb is not None and pb.resolution and pb.seed or pid == "service-down"
    step = book.next_step(f)
    assert step is not None and (step.key or step.check), (pid, step)


def _finding(pid: str, target: str, since=None) -> Finding:
    return Finding(key=f"k:{pid}", severity=Severity.P1, source="t", summary="s", playbook=pid, target=target,
                   since=since or utcnow() - timedelta(minutes=5))


def test_next_step_fits_the_finding_and_skips_what_the_audit_says_is_done():
    book = PlaybookBook()
    svc = _finding("listener-failure", "service:listener")
    orders = _finding("listener-failure", "orders")
    assert book.next_step(svc).action == "service.restart" and book.next_step(svc).key == "r"
    assert book.next_step(orders).action == "orders.reconcile" and book.next_step(orders).key == "R"
    now = utcnow().isoformat()
    old = (utcnow() - timedelta(hours=1)).isoformat()
    audit = [
        {"ts": old, "action": "orders.reconcile", "result": "ok", "target": "orders:reconcile"},  # before the finding
        {"ts": now, "action": "process.restart", "result": "ok", "target": "service:other"},  # another service
        {"ts": now, "action": "orders.reconcile", "result": "ok", "dry_run": True},  # a preview is not a step
        {"ts": now, "action": "orders.reconcile", "result": "failed"},
    ]
    assert "orders.reconcile" not in book.done_actions(orders, audit)
    assert "service.restart" not in book.done_actions(svc, audit)
    audit += [{"ts": now, "action": "process.restart", "result": "ok", "target": "service:listener"},
              {"ts": now, "action": "orders.reconcile", "result": "ok", "target": "orders:reconcile"}]
    done = book.done_actions(svc, audit)
    assert {"service.restart", "process.restart", "orders.reconcile"} <= done
    assert book.next_step(svc, done).action == "escalate"
    assert book.next_step(orders, book.done_actions(orders, audit)).action == "escalate"
    # a step whose action is not configured here is skipped when the engine's actions are given
    gas = _finding("gas-low", "neo:gas-bank")
    assert book.next_step(gas).action == "command.refill"
    assert book.next_step(gas, available=["escalate"]).action is None  # falls back to the diagnosis step
    states = book.progress(svc, done)
    assert [s.done for s in states if s.step.action == "service.restart"] == [True]
    assert step_action_id("docker.restart") == step_action_id("command.restart.api") == "service.restart"


# --------------------------------------------------------------------------- the real thing


@pytest.fixture(scope="module")
def stack(pg, redis_server, anvil, escrow, tmp_path_factory):
    from tests.harness.stack import build_stack

    s = build_stack(pg, redis_server, anvil, escrow, tmp_path_factory.mktemp("playbooks"), name="playbooks",
                    prefix="pbk")
    yield s
    s.close()


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.evm
async def test_stopped_listener_with_releases_on_chain_leads_to_reconcile(stack):
    from backends.engine.core import build_engine

    stack.proc.terminate()  # the event listener stops; pbk-1 was released on chain meanwhile
    await asyncio.to_thread(stack.proc.wait, 10)
    engine = build_engine(stack.config, with_logs=False)
    book = PlaybookBook()
    try:
        snap = await engine.monitor.poll_once()
        findings = {f.key: f for f in snap.findings}
        listener = [f for f in snap.findings if f.playbook == "listener-failure"]
        assert {f.target for f in listener} >= {"orders", "service:listener"}, sorted(findings)
        on_chain = findings["listener-failure:orders"]
        assert "pbk-1" in " ".join(on_chain.evidence)
        available = [a.id for a in engine.actions.available()]
        step = book.next_step(on_chain, available=available)
        assert (step.action, step.key) == ("orders.reconcile", "R")
        down = next(f for f in listener if f.target == "service:listener")
        assert book.next_step(down, available=available).key == "r"
        # run the step: the order is settled, the audit says the step is done, the finding clears
        plan = await engine.actions.plan("orders.reconcile", reason="listener down; release final on chain")
        assert [c.target for c in plan.changes] == ["order:pbk-1"] or "pbk-1" in plan.preview
        res = await engine.actions.execute(plan, confirmation=True)
        assert res.status == "ok", res.summary
        done = book.done_actions(on_chain, engine.audit.entries())
        assert "orders.reconcile" in done
        assert book.next_step(on_chain, done, available).action == "escalate"
        snap = await engine.monitor.poll_once()
        assert "listener-failure:orders" not in {f.key for f in snap.findings}
    finally:
        await engine.stop()


# --------------------------------------------------------------------------- the playbook screen (Pilot)


async def test_playbook_screen_shows_done_and_left_and_runs_the_next_step():
    from textual.app import App
    from textual.widgets import DataTable

    from tui.screens.playbook import PlaybookScreen

    f = _finding("listener-failure", "service:listener")
    now = utcnow().isoformat()
    audit = [{"ts": now, "action": "process.restart", "result": "ok", "target": "service:listener"}]
    requested: list[tuple[str, dict]] = []

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(PlaybookScreen(f, audit_entries=audit))

        def request_action(self, action_id, params=None):
            requested.append((action_id, dict(params or {})))

    app = Host()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        table = screen.query_one(DataTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        pb = PlaybookBook().get("listener-failure")
        assert table.row_count == len(pb.steps())
        by_step = {r[1]: r for r in rows}
        assert by_step["Restart the listener"][0] == "✔" and by_step["Restart the listener"][5] == "done"
        nxt = by_step["Settle orders whose release is final on chain (reconcile)"]
        assert nxt[0] == "▶" and nxt[5] == "NEXT" and nxt[2] == "R"
        assert by_step["Resync the listener from the last good block"][5] == "n/a here"
        assert screen.selected_step().action == "orders.reconcile"
        await pilot.press("enter")
        await pilot.pause()
    assert requested == [("orders.reconcile", {})]


def test_hints_follow_the_audit_trail(tmp_path):
    from backends.actions.base import ActionEngine
    from backends.engine.audit import AuditLog
    from backends.engine.playbooks import PlaybookHints

    audit = AuditLog(tmp_path / "audit.jsonl")
    hints = PlaybookHints(audit=audit, actions=ActionEngine(audit))
    f = _finding("orders-stuck", "orders")
    # no action is registered on this engine: only the first diagnosis step is shown
    assert hints.step(f).check == "orders" and hints(f)[1] is None
    hints.actions = None
    assert hints(f)[1] == "R"
    audit.append(action="orders.reconcile", target="orders:reconcile", operator="t", result="ok")
    assert hints(f)[1] == "f"  # the next step: fix one order
    assert hints(_finding("no-such-playbook", "x")) is None


def test_a_waiting_step_shows_the_time_left_then_gives_way_to_the_step_after_it(tmp_path):
    """The runbook's "fix the webhook, then wait for half-open (or reset now)": after the fix
    the next step reads as a wait with the seconds left from the fix, the key of the step after
    it still shown; once the wait is over only that step is left."""
    from backends.config import load_config_text
    from backends.engine.audit import AuditLog
    from backends.engine.playbooks import PlaybookHints, book_for

    cfg = load_config_text("""
[[services]]
name = "api"
kind = "process"
match = "nothing-matches-this"

[[playbooks]]
id = "all-breakers-open"
title = "All breakers open"
severity = "P1"
resolution = [
  { text = "Restart the webhook", action = "service.restart", key = "w" },
  { text = "Wait for half-open", wait = "60s" },
  { text = "reset all open breakers now", action = "breaker.reset_all", key = "B" },
]
""", "cfg.toml", env={}, base_dir=tmp_path)
    from backends.clock import FakeClock

    f = _finding("all-breakers-open", "breakers:all")
    clock = FakeClock(f.since + timedelta(minutes=1))  # one clock for the audit's stamps and the hints
    audit = AuditLog(tmp_path / "audit.jsonl", clock=clock)
    hints = PlaybookHints(book_for(cfg), audit=audit, clock=clock.now)
    assert hints(f)[1] == "w" and not hints.step(f).waiting  # nothing done yet: no wait
    audit.append(action="service.restart", target="breakers:all", operator="t", result="ok")
    clock.advance(15)
    step, key = hints(f)
    assert key == "B" and step.waiting == "Wait for half-open" and step.wait_left == 45
    clock.advance(44.5)
    assert hints(f)[0].wait_left == pytest.approx(0.5)  # still waiting half a second before the end
    clock.advance(0.5)
    step, key = hints(f)
    assert key == "B" and not step.waiting and step.text == "reset all open breakers now"


# --------------------------------------------------------------------------- [[playbooks]] from config


def test_book_for_config_adds_and_overrides(tmp_path):
    from backends.config import load_config_text
    from backends.engine.playbooks import book_for
    from tests.test_config import PLAYBOOKS

    cfg = load_config_text(PLAYBOOKS, "cfg.toml", env={}, base_dir=tmp_path)
    book = book_for(cfg)
    assert [p.id for p in book_for(None).all()] == list(PLAYBOOK_IDS)  # no config: the built-ins
    assert {p.id for p in book.all()} == set(PLAYBOOK_IDS) | {"bridge-stalled"}
    assert book.get("bridge-stalled") is cfg.playbooks[0]
    assert book.get("gas-low") is cfg.playbooks[1] and book.get("gas-low").title == "Gas bank low (our procedure)"
    assert book.get("rpc-failure") is next(p for p in BUILTIN if p.id == "rpc-failure")
    # the rules' gas-low finding now follows the configured procedure
    (reading,) = _readings_for("gas-low")
    snap = Snapshot(readings={reading.source: (reading,)})
    f = next(f for f in evaluate(snap, RuleContext()) if f.playbook == "gas-low")
    step = book.next_step(f)
    assert (step.text, step.action, step.key) == ("Refill from the treasury", "command.refill", "g")
    assert PlaybookBook().next_step(f).text.startswith("Refill the gas bank")  # the built-in, unchanged
    # a custom playbook's steps: targets and the audit trail work as for built-ins
    relayer = _finding("bridge-stalled", "service:relayer")
    assert book.next_step(relayer).action == "service.restart"
    now = utcnow().isoformat()
    done = book.done_actions(relayer, [{"ts": now, "action": "process.restart", "result": "ok",
                                        "target": "service:relayer"}])
    assert book.next_step(relayer, done).action == "escalate"
    assert book.next_step(_finding("bridge-stalled", "orders")).action == "escalate"  # restart is for services


def test_builtin_playbooks_pass_the_config_validation():
    """A built-in copied into [[playbooks]] loads: its actions and checks are ones config accepts."""
    from backends.config import c_action_id
    from backends.engine.playbooks import CHECK_KINDS

    for pb in BUILTIN:
        for step in pb.steps():
            if step.action:
                assert c_action_id(step.action) == step.action, (pb.id, step)
            assert step.check is None or step.check in CHECK_KINDS, (pb.id, step)


def test_action_namespaces_cover_the_registered_actions():
    """Every action id the backends register has a namespace a playbook step may name."""
    import re
    from pathlib import Path

    from backends.config import c_action_id

    root = Path(__file__).resolve().parents[1] / "backends"
    heads = set()
    for path in root.rglob("*.py"):
        text = path.read_text()
        # action ids (`self.id = ...`, `action_id=...`), not message ids (`Message(id=f"change.{uuid}")`)
        heads |= set(re.findall(r'(?:(?<!Message\()\bid|action_id)\s*=\s*f?"([a-z_]+)[."{]', text))
        heads |= set(re.findall(r'RouterAction\(f?"([a-z_]+)\.', text))
    assert {"orders", "chain", "breaker", "service", "escalate", "command", "docker"} <= heads
    for head in heads:
        c_action_id(head if head == "escalate" else f"{head}.x")


@pytest.mark.parametrize("name", ["meta-aggregator.toml", "erc8004.toml", "neo-n3.toml"])
def test_engine_action_ids_are_valid_step_actions(name, monkeypatch, tmp_path):
    """The ids an engine built from each example really registers are accepted in a playbook step."""
    from backends.config import c_action_id, load_config
    from backends.engine.core import build_engine
    from tests.test_examples import DUMMY_ENV, EXAMPLES

    for k, v in DUMMY_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    engine = build_engine(load_config(EXAMPLES / name), read_only=True)
    ids = {a.id for a in engine.actions._actions.values()}
    assert ids
    for aid in ids:
        assert c_action_id(aid) == aid


async def test_playbook_screen_uses_the_engines_configured_playbooks(tmp_path):
    """Opened from the console (screen given the engine, no book): a configured override is
    what the operator sees, not the built-in."""
    from types import SimpleNamespace

    from textual.app import App
    from textual.widgets import DataTable

    from backends.config import load_config_text
    from tests.test_config import PLAYBOOKS
    from tui.screens.playbook import PlaybookScreen

    cfg = load_config_text(PLAYBOOKS, "cfg.toml", env={}, base_dir=tmp_path)
    engine = SimpleNamespace(config=cfg, audit=None, actions=None)
    f = _finding("gas-low", "balance:gas-bank")

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(PlaybookScreen(f, engine, audit_entries=[]))

    app = Host()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        texts = [str(table.get_row_at(i)[1]) for i in range(table.row_count)]
        assert "Refill from the treasury" in texts
        assert not any(t.startswith("Refill the gas bank") for t in texts)  # the built-in's step
