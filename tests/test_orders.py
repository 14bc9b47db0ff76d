"""Stuck orders on real Postgres + anvil + the Escrow contract: readings, verdicts, actions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from backends.actions.base import ActionEngine
from backends.engine.audit import AuditLog
from backends.engine.rules import evaluate
from backends.errors import ActionRefused
from backends.model import Severity, Snapshot, Verdict
from backends.sources.evm import EvmChain, find_event
from backends.sources.jsonrpc import ChainSpec, ContractSpec
from backends.sources.orders import (
    CursorSpec,
    OrdersBulkFixAction,
    OrdersFixAction,
    OrdersReconcileAction,
    OrdersResyncAction,
    OrdersSource,
    OrdersSpec,
    OrdersStore,
    OrdersVerifyAction,
    ReleaseVerifier,
    encode_order_id,
)

pytestmark = [pytest.mark.postgres]

SCHEMA = """
DROP TABLE IF EXISTS orders;
DROP TABLE IF EXISTS listener_cursor;
CREATE TABLE orders (
    id text PRIMARY KEY,
    state text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz,
    notes text,
    block_number bigint,
    tx_hash text
);
CREATE INDEX orders_state_created ON orders (state, created_at);
CREATE TABLE listener_cursor (name text PRIMARY KEY, last_block bigint, updated_at timestamptz);
"""

CONFIRMATIONS = 3


@pytest.fixture(scope="module")
def orders_db(pg):
    return pg.fresh_db("orders")


@pytest.fixture
async def db(orders_db):
    import asyncpg

    from backends.sources.postgres import close_pools

    con = await asyncpg.connect(orders_db)
    await con.execute(SCHEMA)
    yield con
    await con.close()
    await close_pools()


def spec(**kw) -> OrdersSpec:
    base = dict(
        notes_column="notes", block_column="block_number", tx_column="tx_hash",
        cursor=CursorSpec(table="listener_cursor", key="escrow"), stuck_after=600.0, bulk_batch=500,
    )
    base.update(kw)
    return OrdersSpec(**base)


def uid(prefix: str = "o") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def insert(con, oid: str, state: str = "PENDING", age_s: float = 3600, block: int | None = None,
                 notes: str | None = None) -> None:
    await con.execute(
        "INSERT INTO orders (id, state, created_at, notes, block_number) VALUES ($1, $2, $3, $4, $5)",
        oid, state, datetime.now(UTC) - timedelta(seconds=age_s), notes, block,
    )


def engine(tmp_path, operator="alice") -> ActionEngine:
    return ActionEngine(AuditLog(tmp_path / "audit.jsonl"), operator=operator)


def make_chain(url: str) -> EvmChain:
    return EvmChain(ChainSpec(name="local", endpoints=(url,), chain_id=31337, max_head_age=None,
                              confirmations=CONFIRMATIONS, getlogs_chunk=50))


def make_verifier(chain: EvmChain, escrow) -> ReleaseVerifier:
    return ReleaseVerifier(chain, address=escrow.address, event=find_event(escrow.abi, "EscrowReleased"),
                           confirmations=CONFIRMATIONS, chunk=50, start_block=escrow.deploy_block)


# --------------------------------------------------------------------------- readings


async def test_readings_stuck_count_oldest_and_by_state(db, orders_db):
    for i in range(5):
        await insert(db, f"stuck-{i}", age_s=3600 + i * 60)
    await insert(db, "fresh", age_s=30)  # pending but not stuck yet
    await insert(db, "done", state="SETTLED", age_s=7200)
    await insert(db, "old", state="SETTLED", age_s=3 * 86400)  # outside 24 h
    store = OrdersStore(spec(show=3), orders_db)
    r = await OrdersSource(store).reading()
    assert r.stuck_count == 5
    assert [o.id for o in r.oldest] == ["stuck-4", "stuck-3", "stuck-2"]  # oldest first, only N
    assert 3600 + 4 * 60 - 5 < r.oldest_age_s < 3600 + 4 * 60 + 30
    assert r.by_state_24h == {"PENDING": 6, "SETTLED": 1}
    assert r.index_ok is True and r.index_hint == ""
    findings = [f for f in evaluate(Snapshot(readings={"orders": (r,)})) if f.key.startswith("orders-stuck")]
    assert findings and findings[0].playbook == "orders-stuck" and "5 order(s)" in findings[0].summary


async def test_no_index_on_large_table_is_a_finding(db, orders_db):
    await db.execute("DROP INDEX orders_state_created")
    await db.execute(
        "INSERT INTO orders (id, state, created_at) SELECT 'n' || g, 'SETTLED', now() - interval '1 day' "
        "FROM generate_series(1, 2000) g")
    await db.execute("ANALYZE orders")
    store = OrdersStore(spec(large_table_rows=1000), orders_db)
    ok, hint = await OrdersSource(store).index_status()
    assert ok is False
    assert hint.startswith("CREATE INDEX CONCURRENTLY") and '("state", "created_at")' in hint
    r = await OrdersSource(store).reading()
    f = [f for f in evaluate(Snapshot(readings={"orders": (r,)})) if f.key.startswith("orders-index")]
    assert f and hint in f[0].evidence[0]
    # a small table without the index is not worth a finding (the hint is still there)
    small = OrdersSource(OrdersStore(spec(large_table_rows=10**9), orders_db))
    assert await small.index_status() == (None, hint)
    # with the index back, the check passes
    await db.execute("CREATE INDEX orders_state_created ON orders (state, created_at)")
    assert (await OrdersSource(OrdersStore(spec(large_table_rows=1000), orders_db)).index_status())[0] is True


# --------------------------------------------------------------------------- verdicts


@pytest.mark.evm
async def test_verdicts_released_final_not_final_absent_unknown(db, orders_db, anvil, escrow):
    chain = make_chain(anvil.url)
    v = make_verifier(chain, escrow)
    final, fresh, absent, toolong = uid("fin"), uid("new"), uid("abs"), "x" * 40
    tx_final = escrow.release(final, 111)
    anvil.mine(CONFIRMATIONS + 1)
    start = anvil.block_number()
    tx_fresh = escrow.release(fresh, 222)
    for oid in (final, fresh, absent, toolong):
        await insert(db, oid)
    store = OrdersStore(spec(), orders_db)
    orders = await store.get_many([final, fresh, absent, toolong])
    verdicts = await v.verify(list(orders.values()))
    head = anvil.block_number()
    a = verdicts[final]
    assert a.verdict is Verdict.RELEASED and a.final and a.tx_hash == tx_final and a.amount == 111
    assert a.confirmations >= CONFIRMATIONS + 2
    b = verdicts[fresh]
    assert b.verdict is Verdict.RELEASED and not b.final and b.tx_hash == tx_fresh and b.confirmations == 1
    assert b.block == start + 1
    c = verdicts[absent]
    assert c.verdict is Verdict.NOT_RELEASED and c.checked_to_block == head
    assert verdicts[toolong].verdict is Verdict.UNKNOWN and "32 bytes" in verdicts[toolong].reason

    # an order whose block is beyond the node's head is never "not released"
    far = uid("far")
    await insert(db, far, block=head + 1000)
    vf = (await v.verify([await store.get(far)]))[far]
    assert vf.verdict is Verdict.UNKNOWN and "beyond the node's head" in vf.reason

    # RPC down -> unknown
    dead = make_chain("http://127.0.0.1:9")
    vd = await make_verifier(dead, escrow).verify([orders[final]])
    assert vd[final].verdict is Verdict.UNKNOWN and "RPC error" in vd[final].reason
    await chain.aclose()
    await dead.aclose()


@pytest.mark.evm
async def test_verdict_unknown_when_endpoints_disagree(anvil, escrow):
    from tests.harness.evm import start_anvil

    other = start_anvil()
    try:
        other.mine(3)
        chain = EvmChain(ChainSpec(name="split", endpoints=(anvil.url, other.url), chain_id=31337,
                                   max_head_age=None, max_lag=10**6, confirmations=CONFIRMATIONS))
        await chain.poll()
        assert chain.endpoints.disagreement
        oid = uid("dis")
        escrow.release(oid, 5)
        from backends.model import Order

        out = await make_verifier(chain, escrow).verify([Order(id=oid, state="PENDING")])
        assert out[oid].verdict is Verdict.UNKNOWN and "disagree" in out[oid].reason
        await chain.aclose()
    finally:
        other.stop()


@pytest.mark.evm
async def test_many_ids_chunked_ranges_one_getlogs_per_range(db, orders_db, anvil, escrow):
    chain = make_chain(anvil.url)
    calls = []
    orig = chain.request

    async def spy(method, params=()):
        calls.append((method, params))
        return await orig(method, params)

    chain.request = spy
    ids = [uid("m") for _ in range(12)]
    for oid in ids[:4]:
        escrow.release(oid, 1)
    anvil.mine(CONFIRMATIONS)
    for oid in ids:
        await insert(db, oid)
    store = OrdersStore(spec(), orders_db)
    v = ReleaseVerifier(chain, address=escrow.address, event="EscrowReleased(bytes32,uint256)",
                        confirmations=CONFIRMATIONS, chunk=7, start_block=escrow.deploy_block)
    out = await v.verify(list((await store.get_many(ids)).values()))
    assert sum(1 for x in out.values() if x.verdict is Verdict.RELEASED and x.final) == 4
    logs_calls = [p for m, p in calls if m == "eth_getLogs"]
    head = anvil.block_number()
    expected_ranges = len(range(escrow.deploy_block, head + 1, 7))
    assert len(logs_calls) == expected_ranges
    f = logs_calls[0][0]
    assert sorted(f["topics"][1]) == sorted(encode_order_id(i, "bytes32-utf8") for i in ids)
    assert int(f["toBlock"], 16) - int(f["fromBlock"], 16) == 6
    await chain.aclose()


@pytest.mark.evm
async def test_released_stuck_orders_raise_listener_failure(db, orders_db, anvil, escrow):
    chain = make_chain(anvil.url)
    oid = uid("lst")
    escrow.release(oid, 7)
    anvil.mine(CONFIRMATIONS)
    await insert(db, oid)
    await insert(db, uid("plain"))
    src = OrdersSource(OrdersStore(spec(), orders_db), verifier=make_verifier(chain, escrow))
    readings = await src.poll()
    r = readings[0]
    assert r.stuck_count == 2
    verdicts = {o.id: o.verdict for o in r.oldest}
    assert verdicts[oid].verdict is Verdict.RELEASED
    keys = {f.key.split(":")[0]: f for f in evaluate(Snapshot(readings={"orders": tuple(readings)}))}
    assert "orders-stuck" in keys and "listener-failure" in keys
    assert keys["listener-failure"].severity is Severity.P1 and oid in keys["listener-failure"].evidence[0]
    await chain.aclose()


# --------------------------------------------------------------------------- fix one


async def test_fix_one_plan_shows_before_after_and_executes(db, orders_db, tmp_path):
    await insert(db, "ord-1", notes="created by api")
    store = OrdersStore(spec(), orders_db)
    eng = engine(tmp_path)
    eng.register(OrdersFixAction(store, operator="alice"))
    plan = await eng.plan("orders.fix", order_id="ord-1", state="SETTLED", reason="Event listener failure")
    ch = plan.changes[0]
    assert ch.before["state"] == "PENDING" and ch.after["state"] == "SETTLED"
    assert ch.after["notes"].startswith("created by api [MANUAL FIX: ")
    assert ch.after["notes"].endswith(" by alice: Event listener failure]")
    assert plan.guard.ok
    with pytest.raises(ActionRefused):
        await eng.execute(plan, confirmation=None)  # CONFIRM needs a yes
    res = await eng.execute(plan, confirmation="yes")
    assert res.status == "ok", res.summary
    row = await db.fetchrow("SELECT state, notes, updated_at FROM orders WHERE id = 'ord-1'")
    assert row["state"] == "SETTLED" and row["updated_at"] is not None
    assert row["notes"].startswith("created by api [MANUAL FIX: 20")
    assert row["notes"].endswith(" by alice: Event listener failure]")
    entry = eng.audit.tail(1)[0]
    assert entry["action"] == "orders.fix" and entry["result"] == "ok"
    assert entry["before"]["state"] == "PENDING" and entry["after"]["state"] == "SETTLED"
    assert entry["reason"] == "Event listener failure"
    # not pending any more: a new plan's guard is red and the engine refuses
    plan2 = await eng.plan("orders.fix", order_id="ord-1", state="FAILED", reason="again")
    assert not plan2.guard.ok
    res2 = await eng.execute(plan2, confirmation="yes")
    assert res2.status == "refused"
    assert (await db.fetchval("SELECT state FROM orders WHERE id = 'ord-1'")) == "SETTLED"


async def test_plan_without_a_reason_asks_for_it_before_execution(db, orders_db, tmp_path):
    """The console plans from the pane's selection (no reason yet): the plan is shown and
    says a reason is needed; execution without one is refused and audited, nothing changes;
    the reason typed in the modal is the one written to the notes."""
    from dataclasses import replace

    await insert(db, "ord-r1", notes="n")
    store = OrdersStore(spec(), orders_db)
    eng = engine(tmp_path)
    eng.register(OrdersFixAction(store, operator="alice"))
    plan = await eng.plan("orders.fix", order_id="ord-r1", state="FAILED")
    assert plan.reason_required and plan.reason is None
    assert plan.changes[0].after["notes"].endswith(" by alice: <reason>]")
    with pytest.raises(ActionRefused, match="reason is required"):
        await eng.execute(plan, confirmation="yes")
    assert (await db.fetchval("SELECT state FROM orders WHERE id = 'ord-r1'")) == "PENDING"
    assert eng.audit.tail(1)[0]["result"] == "refused"
    res = await eng.execute(replace(plan, reason="  customer   refunded "), confirmation="yes")
    assert res.status == "ok", res.summary
    notes = await db.fetchval("SELECT notes FROM orders WHERE id = 'ord-r1'")
    assert notes.endswith(" by alice: customer refunded]")
    # bulk fix: the same
    await insert(db, "ord-r2")
    eng.register(OrdersBulkFixAction(store, operator="alice"))
    bulk = await eng.plan("orders.bulk_fix", older_than="1m", state="FAILED")
    assert bulk.reason_required and bulk.reason is None and "<reason>" in bulk.preview
    with pytest.raises(ActionRefused, match="reason is required"):
        await eng.execute(bulk, confirmation=bulk.expected_confirmation)
    assert (await db.fetchval("SELECT state FROM orders WHERE id = 'ord-r2'")) == "PENDING"
    res = await eng.execute(replace(bulk, reason="expired"), confirmation=bulk.expected_confirmation)
    assert res.status == "ok" and (await db.fetchval("SELECT state FROM orders WHERE id = 'ord-r2'")) == "FAILED"


async def test_fix_one_concurrent_change_is_skipped(db, orders_db, tmp_path):
    await insert(db, "ord-2")
    store = OrdersStore(spec(), orders_db)
    eng = engine(tmp_path)
    eng.register(OrdersFixAction(store))
    plan = await eng.plan("orders.fix", order_id="ord-2", state="SETTLED", reason="listener down")
    # the listener catches up between plan and execute (another connection)
    await db.execute("UPDATE orders SET state = 'FAILED', notes = 'by listener' WHERE id = 'ord-2'")
    res = await eng.execute(plan, confirmation="yes")
    assert res.status == "skipped" and "changed meanwhile" in res.summary
    row = await db.fetchrow("SELECT state, notes FROM orders WHERE id = 'ord-2'")
    assert row["state"] == "FAILED" and row["notes"] == "by listener"  # never overwritten
    assert eng.audit.tail(1)[0]["result"] == "skipped"


async def test_bad_input_refused_before_any_query(tmp_path):
    # a store pointing at nothing: any query would be a BackendError, not a refusal
    store = OrdersStore(spec(), "postgresql://postgres@127.0.0.1:9/none")
    fix = OrdersFixAction(store)
    bulk = OrdersBulkFixAction(store)
    resync = OrdersResyncAction(store)
    bad = [
        (fix, dict(order_id="1; DROP TABLE orders", state="SETTLED", reason="r")),
        (fix, dict(order_id="x" * 200, state="SETTLED", reason="r")),
        (fix, dict(order_id="", state="SETTLED", reason="r")),
        (fix, dict(order_id=42, state="SETTLED", reason="r")),
        (fix, dict(order_id="ok-1", state="DELETED", reason="r")),
        (fix, dict(order_id="ok-1", state="settled'; --", reason="r")),
        (fix, dict(order_id="ok-1", state="SETTLED", reason="x" * 501)),
        (bulk, dict(older_than="2 fortnights", state="FAILED", reason="r")),
        (bulk, dict(hours="abc", state="FAILED", reason="r")),
        (bulk, dict(older_than="2h", state="PENDING", reason="r")),
        (bulk, dict(older_than="2h", state="FAILED", reason="r", canary=-1)),
        (bulk, dict(older_than="2h", state="FAILED", reason="r", batch=0)),
        (bulk, dict(older_than="2h", state="SETTLED", reason="r")),  # only_released needs a chain
        (resync, dict(block=-5, reason="r")),
        (resync, dict(block="12abc", reason="r")),
        (OrdersVerifyAction(store), dict(ids=["ok", "no way"])),
    ]
    for action, params in bad:
        with pytest.raises(ActionRefused):
            await action.plan(**params)
    assert store.queries == 0


# --------------------------------------------------------------------------- bulk fix


@pytest.mark.evm
async def test_bulk_fix_only_released_final_by_default_for_settled(db, orders_db, anvil, escrow, tmp_path):
    chain = make_chain(anvil.url)
    final = [uid("bf") for _ in range(3)]
    for oid in final:
        escrow.release(oid, 1)
    anvil.mine(CONFIRMATIONS)
    not_final, absent = uid("bn"), uid("ba")
    escrow.release(not_final, 1)
    for oid in [*final, not_final, absent]:
        await insert(db, oid, age_s=3 * 3600)
    young = uid("by")
    escrow.release(young, 1)
    await insert(db, young, age_s=60)
    store = OrdersStore(spec(), orders_db)
    eng = engine(tmp_path)
    eng.register(OrdersBulkFixAction(store, verifier=make_verifier(chain, escrow), operator="bob"))
    plan = await eng.plan("orders.bulk_fix", hours=2, state="SETTLED", reason="listener outage")
    assert plan.params["only_released"] is True
    assert sorted(plan.params["ids"]) == sorted(final)
    assert plan.confirm_text == "3" and plan.total == 3
    assert "3 order(s)" in plan.preview and all(i in plan.preview for i in final)
    with pytest.raises(ActionRefused):
        await eng.execute(plan, confirmation="yes")  # typed: the count
    progress = []
    res = await eng.execute(plan, confirmation="3", progress=progress.append)
    assert res.status == "ok" and res.counts == {"fixed": 3, "skipped": 0, "failed": 0, "not_done": 0}
    states = dict(await db.fetch("SELECT id, state FROM orders"))
    assert all(states[i] == "SETTLED" for i in final)
    assert states[not_final] == states[absent] == states[young] == "PENDING"
    entry = eng.audit.tail(1)[0]
    assert entry["action"] == "orders.bulk_fix" and entry["extra"]["counts"]["fixed"] == 3
    assert sorted(entry["after"]["fixed"]) == sorted(final)
    await chain.aclose()


async def test_bulk_fix_batches_progress_and_skips(db, orders_db, tmp_path):
    ids = [f"b-{i:02d}" for i in range(10)]
    for n, oid in enumerate(ids):
        await insert(db, oid, age_s=7200 + (10 - n))  # b-00 oldest
    store = OrdersStore(spec(), orders_db)
    changed = {}

    async def hook(n, counts):
        if n == 1:  # meanwhile the listener settles one order of a later batch
            await db.execute("UPDATE orders SET state = 'SETTLED' WHERE id = 'b-07'")
            changed["done"] = True

    eng = engine(tmp_path)
    eng.register(OrdersBulkFixAction(store, after_batch=hook))
    plan = await eng.plan("orders.bulk_fix", older_than="1h", state="FAILED", reason="expired", batch=3)
    assert plan.params["ids"] == ids and plan.params["only_released"] is False
    progress = []
    res = await eng.execute(plan, confirmation="10", progress=progress.append)
    assert changed
    assert res.status == "ok"
    assert res.counts == {"fixed": 9, "skipped": 1, "failed": 0, "not_done": 0}
    assert [p.done for p in progress] == [3, 6, 9, 10]
    assert res.after["skipped"] == ["b-07"]
    rows = dict(await db.fetch("SELECT id, state FROM orders"))
    assert rows["b-07"] == "SETTLED" and sum(1 for v in rows.values() if v == "FAILED") == 9
    notes = await db.fetchval("SELECT notes FROM orders WHERE id = 'b-00'")
    assert "[MANUAL FIX: " in notes and ": expired]" in notes


@pytest.mark.evm
async def test_bulk_fix_canary_stops_at_first_mismatch(db, orders_db, anvil, escrow, tmp_path):
    chain = make_chain(anvil.url)
    good, bad = uid("cg"), uid("cb")
    escrow.release(good, 1)
    anvil.mine(CONFIRMATIONS)
    others = [uid("co") for _ in range(4)]
    for oid in others:
        escrow.release(oid, 1)
    anvil.mine(CONFIRMATIONS)
    await insert(db, good, age_s=10_000)
    await insert(db, bad, age_s=9_999)  # no release on chain: setting SETTLED is a mismatch
    for n, oid in enumerate(others):
        await insert(db, oid, age_s=9_000 - n)
    store = OrdersStore(spec(), orders_db)
    eng = engine(tmp_path)
    eng.register(OrdersBulkFixAction(store, verifier=make_verifier(chain, escrow)))
    plan = await eng.plan("orders.bulk_fix", older_than="1h", state="SETTLED", reason="canary test",
                          only_released=False, canary=2, batch=2)
    assert plan.params["ids"][:2] == [good, bad]
    res = await eng.execute(plan, confirmation="6")
    assert res.status == "partial"
    assert res.counts == {"fixed": 2, "skipped": 0, "failed": 0, "not_done": 4}
    assert "canary stopped" in res.summary and bad in res.summary
    rows = dict(await db.fetch("SELECT id, state FROM orders"))
    assert all(rows[o] == "PENDING" for o in others)  # nothing after the canary ran
    assert eng.audit.tail(1)[0]["result"] == "partial"

    # a canary that matches lets the rest run
    await db.execute("UPDATE orders SET state = 'PENDING'")
    await db.execute("DELETE FROM orders WHERE id = $1", bad)
    plan = await eng.plan("orders.bulk_fix", older_than="1h", state="SETTLED", reason="canary ok", canary=2)
    res = await eng.execute(plan, confirmation="5")
    assert res.status == "ok" and res.counts["fixed"] == 5
    await chain.aclose()


async def test_bulk_fix_postgres_down_mid_run(db, orders_db, pg, tmp_path):
    ids = [f"d-{i:02d}" for i in range(9)]
    for n, oid in enumerate(ids):
        await insert(db, oid, age_s=7200 + (10 - n))
    dbname = orders_db.rsplit("/", 1)[1]
    store = OrdersStore(spec(), orders_db)

    def kill(n, counts):
        if n == 1:  # Postgres "goes down" for this database after the first batch
            pg.psql(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS false')
            where = f"datname = '{dbname}' AND pid <> pg_backend_pid()"
            sql = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE " + where  # noqa: S608
            pg.psql(sql)

    eng = engine(tmp_path)
    eng.register(OrdersBulkFixAction(store, after_batch=kill, batch_audit=eng.audit))
    plan = await eng.plan("orders.bulk_fix", older_than="1h", state="FAILED", reason="outage", batch=3)
    try:
        res = await eng.execute(plan, confirmation="9")
    finally:
        pg.psql(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS true')
    assert res.status == "partial"
    assert res.counts == {"fixed": 3, "skipped": 0, "failed": 3, "not_done": 3}
    assert res.after["fixed"] == ids[:3] and res.after["failed"] == ids[3:6] and res.after["not_done"] == ids[6:]
    import asyncpg

    con = await asyncpg.connect(orders_db)
    try:
        rows = dict(await con.fetch("SELECT id, state FROM orders"))
    finally:
        await con.close()
    assert [rows[i] for i in ids] == ["FAILED"] * 3 + ["PENDING"] * 6  # nothing half-applied
    b1, b2, entry = eng.audit.tail(3)
    assert entry["result"] == "partial" and entry["after"]["fixed"] == ids[:3]
    assert entry["extra"]["counts"] == {"fixed": 3, "skipped": 0, "failed": 3, "not_done": 3}
    # each batch left its own entry as it went
    assert b1["action"] == "orders.bulk_fix.batch" and b1["result"] == "ok"
    assert b1["after"]["fixed"].split() == ids[:3]
    assert b2["result"] == "failed" and b2["after"]["failed"].split() == ids[3:6] and b2["error"]
    assert eng.audit.verify().ok


# --------------------------------------------------------------------------- reconcile


@pytest.mark.evm
async def test_reconcile_settles_exactly_final_releases(db, orders_db, anvil, escrow, tmp_path):
    chain = make_chain(anvil.url)
    final = [uid("rf") for _ in range(2)]
    for oid in final:
        escrow.release(oid, 1)
    anvil.mine(CONFIRMATIONS)
    pending_release, absent = uid("rp"), uid("ra")
    escrow.release(pending_release, 1)
    for oid in [*final, pending_release, absent]:
        await insert(db, oid)
    store = OrdersStore(spec(), orders_db)
    eng = engine(tmp_path)
    eng.register(OrdersReconcileAction(store, verifier=make_verifier(chain, escrow)))
    plan = await eng.plan("orders.reconcile")
    assert sorted(plan.params["ids"]) == sorted(final) and plan.params["state"] == "SETTLED"
    res = await eng.execute(plan, confirmation="yes")
    assert res.status == "ok" and res.counts["fixed"] == 2
    rows = dict(await db.fetch("SELECT id, state FROM orders"))
    assert [rows[i] for i in final] == ["SETTLED"] * 2
    assert rows[pending_release] == rows[absent] == "PENDING"
    # nothing left to reconcile
    with pytest.raises(ActionRefused):
        await eng.plan("orders.reconcile")
    await chain.aclose()


# --------------------------------------------------------------------------- cursor


@pytest.mark.evm
async def test_cursor_reading_and_resync(db, orders_db, anvil, escrow, tmp_path):
    chain = make_chain(anvil.url)
    anvil.mine(3)
    head = anvil.block_number()
    back = max(0, head - 3)
    await db.execute("INSERT INTO listener_cursor VALUES ('escrow', $1, now())", back)
    store = OrdersStore(spec(), orders_db)
    src = OrdersSource(store, chain=chain)
    cr = await src.cursor_reading()
    assert cr.block == back and cr.head >= head and cr.gap_blocks == cr.head - back
    assert cr.finalized is not None and cr.finalized <= cr.head
    assert cr.gap_s is not None and cr.gap_s >= 0
    # one batch for the head, the finalized block and the cursor's block, the same figures
    # as asking for each one
    posts = []
    rpc = chain.endpoints.active.rpc
    orig_post = rpc._post

    async def counting(payload, *a, **k):
        posts.append(payload)
        return await orig_post(payload, *a, **k)

    rpc._post = counting
    cr = await src.cursor_reading()
    rpc._post = orig_post
    assert len(posts) == 1 and [c["params"][0] for c in posts[0]] == ["latest", "finalized", hex(back)]
    head_b, cur_b = await chain.block(cr.head), await chain.block(back)
    assert cr.gap_s == int(head_b["timestamp"], 16) - int(cur_b["timestamp"], 16)
    assert cr.finalized == int((await chain.block("finalized"))["number"], 16)
    # a cursor past the node's head: no gap, no error
    await db.execute("UPDATE listener_cursor SET last_block = $1", cr.head + 50)
    ahead = await src.cursor_reading()
    assert ahead.gap_s == 0 and ahead.gap_blocks == -50 and ahead.head == cr.head
    await db.execute("UPDATE listener_cursor SET last_block = $1", back)
    # a listener far behind in time is a finding
    from backends.engine.rules import RuleContext

    fs = evaluate(Snapshot(readings={"orders": (cr,)}), RuleContext(extra={"cursor_max_gap_s": -1}))
    assert any(f.key.startswith("listener-behind") for f in fs)

    eng = engine(tmp_path)
    eng.register(OrdersResyncAction(store, chain=chain))
    plan = await eng.plan("orders.resync", block=1, reason="missed events")
    assert plan.guard.ok and plan.changes[0].before == back and plan.changes[0].after == 1
    res = await eng.execute(plan, confirmation="yes")
    assert res.status == "ok"
    assert await db.fetchval("SELECT last_block FROM listener_cursor") == 1
    # N beyond head: guard red, refused
    plan = await eng.plan("orders.resync", block=head + 10_000, reason="typo")
    assert not plan.guard.ok
    res = await eng.execute(plan, confirmation="yes")
    assert res.status == "refused"
    assert await db.fetchval("SELECT last_block FROM listener_cursor") == 1
    await chain.aclose()


@pytest.mark.evm
async def test_verify_action_is_read_only(db, orders_db, anvil, escrow, tmp_path):
    chain = make_chain(anvil.url)
    oid = uid("va")
    escrow.release(oid, 1)
    await insert(db, oid)
    eng = ActionEngine(AuditLog(tmp_path / "a.jsonl"), read_only=True)
    eng.register(OrdersVerifyAction(OrdersStore(spec(), orders_db), verifier=make_verifier(chain, escrow)))
    plan = await eng.plan("orders.verify")
    assert oid in plan.preview and "released in block" in plan.preview
    res = await eng.execute(plan)
    assert res.status == "ok"
    await chain.aclose()


def test_spec_rejects_bad_identifiers():
    with pytest.raises(ValueError):
        OrdersSpec(table="orders; drop")
    with pytest.raises(ValueError):
        OrdersSpec(state_column='state"')
    with pytest.raises(ValueError):
        OrdersSpec(cursor=CursorSpec(table="a.b.c"))
    assert OrdersSpec(table="public.orders").table == "public.orders"


def test_encode_order_id():
    assert encode_order_id("abc", "bytes32-utf8") == "0x" + b"abc".ljust(32, b"\0").hex()
    assert encode_order_id("255", "uint256") == "0x" + "00" * 31 + "ff"
    assert len(encode_order_id("abc", "keccak")) == 66
    with pytest.raises(ValueError):
        encode_order_id("é" * 20, "bytes32-utf8")
    assert ContractSpec  # re-exported spec types stay importable


@pytest.mark.evm
async def test_from_config_builds_source_verifier_and_actions(db, orders_db, anvil, escrow, tmp_path):
    from backends.config import load_config_text
    from backends.sources.evm import actions_for_chains, chains_from_config
    from backends.sources.orders import OrdersBundle
    from tests.harness.evm import ARTIFACT

    text = f"""
[postgres.main]
dsn = "{orders_db}"

[chain.local]
chain_id = 31337
endpoints = ["{anvil.url}"]
max_head_age = "1d"
confirmations = {CONFIRMATIONS}
signer_env = "ESCROW_OWNER_KEY"

[[chain.local.contracts]]
name = "escrow"
address = "{escrow.address}"
abi = "{ARTIFACT}"
pausable = true

[[chain.local.balances]]
name = "arbiter"
address = "{anvil.accounts[1]}"
minimum = "0.5 ether"

[orders]
postgres = "main"
notes_column = "notes"
block_column = "block_number"
chain = "local"
contract = "escrow"
start_block = {escrow.deploy_block}

[orders.cursor]
table = "listener_cursor"
key = "escrow"
"""
    config = load_config_text(text, env={})
    chains = chains_from_config(config)
    assert set(chains) == {"local"}
    (cr,) = await chains["local"].poll()
    assert cr.contracts[0].code_present and cr.balances[0].minimum == 5 * 10**17
    ids = [a.id for a in actions_for_chains(chains)]
    assert ids == ["chain.failover", "chain.pin", "chain.pause", "chain.unpause"]
    bundle = OrdersBundle.from_config(config, chains=chains, operator="frank")
    assert bundle.verifier is not None and bundle.store.spec.settled_state == "SETTLED"
    oid = uid("cfg")
    escrow.release(oid, 3)
    anvil.mine(CONFIRMATIONS)
    await insert(db, oid)
    await db.execute("INSERT INTO listener_cursor VALUES ('escrow', 1, now())")
    readings = await bundle.source.poll()
    assert readings[0].oldest[0].verdict.verdict is Verdict.RELEASED
    assert readings[1].block == 1 and readings[1].head >= 1
    assert [a.id for a in bundle.actions] == ["orders.verify", "orders.fix", "orders.bulk_fix",
                                              "orders.reconcile", "orders.resync"]
    await chains["local"].aclose()


@pytest.mark.evm
async def test_empty_getlogs_contradicted_by_logs_bloom_is_unknown(anvil, escrow):
    """Infura's caveat: a node may answer [] for a block whose logs it has not indexed."""
    from backends.model import Order

    chain = make_chain(anvil.url)
    oid, other = uid("blm"), uid("blx")
    escrow.release(oid, 9)
    v = make_verifier(chain, escrow)
    assert (await v.verify([Order(id=oid, state="PENDING")]))[oid].verdict is Verdict.RELEASED

    async def lying(*a, **kw):  # the node's log index lags behind its head
        return []

    chain.get_logs_chunked = lying
    out = await v.verify([Order(id=oid, state="PENDING"), Order(id=other, state="PENDING")])
    # the block's logsBloom matched, its receipts hold the release
    assert out[oid].verdict is Verdict.RELEASED and out[oid].amount == 9
    assert out[other].verdict is Verdict.NOT_RELEASED  # its topic is not in the bloom
    # receipts unreadable (a node without eth_getBlockReceipts): unknown, never "not released"
    orig = chain.endpoints.request_batch

    async def no_receipts(calls, **kw):
        if calls and calls[0][0] == "eth_getBlockReceipts":
            from backends.sources.jsonrpc import RpcError

            return [RpcError(-32601, "the method eth_getBlockReceipts does not exist") for _ in calls]
        return await orig(calls, **kw)

    chain.endpoints.request_batch = no_receipts
    out = await v.verify([Order(id=oid, state="PENDING")])
    assert out[oid].verdict is Verdict.UNKNOWN and "logsBloom" in out[oid].reason
    anvil.mine(20)  # out of the bloom window: a plain "not released up to head"
    out = await v.verify([Order(id=oid, state="PENDING")])
    assert out[oid].verdict is Verdict.NOT_RELEASED
    await chain.aclose()


async def test_cursor_without_chain_or_with_chain_down(db, orders_db):
    await db.execute("INSERT INTO listener_cursor VALUES ('escrow', 42, now())")
    store = OrdersStore(spec(), orders_db)
    readings = await OrdersSource(store).poll()
    assert readings[1].block == 42 and readings[1].head is None
    dead = make_chain("http://127.0.0.1:9")
    readings = await OrdersSource(store, chain=dead).poll()
    assert readings[1].block == 42 and readings[1].gap_blocks is None
    await dead.aclose()
