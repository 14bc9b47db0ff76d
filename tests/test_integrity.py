"""Listener integrity on real Postgres + anvil + the Escrow: release events below the listener
cursor whose orders are still pending are reported as missed block ranges; the backfill action
reconciles exactly that range (preview lists the orders, confirm, audit; read-only refuses)."""

from __future__ import annotations

import json
import uuid

import pytest

from backends.actions.base import ActionEngine
from backends.engine.audit import AuditLog
from backends.engine.rules import RuleContext, evaluate
from backends.errors import ActionRefused
from backends.model import Snapshot
from backends.sources.evm import EvmChain, find_event
from backends.sources.integrity import (
    BackfillAction,
    GapRange,
    ListenerIntegrity,
    _Event,
    group_gaps,
)
from backends.sources.jsonrpc import ChainSpec
from backends.sources.orders import CursorSpec, OrdersSpec, OrdersStore, ReleaseVerifier

pytestmark = [pytest.mark.postgres, pytest.mark.evm]

SCHEMA = """
DROP TABLE IF EXISTS orders;
DROP TABLE IF EXISTS listener_cursor;
CREATE TABLE orders (id text PRIMARY KEY, state text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
                     updated_at timestamptz, notes text, block_number bigint, tx_hash text);
CREATE TABLE listener_cursor (name text PRIMARY KEY, last_block bigint, updated_at timestamptz);
"""


def test_group_gaps_closes_a_range_at_a_processed_release():
    ev = [_Event(10, 0, "a", "0x1"), _Event(11, 0, "b", "0x2"), _Event(12, 0, "c", "0x3"),
          _Event(14, 0, "d", "0x4"), _Event(20, 0, "e", "0x5")]
    gaps = group_gaps(ev, {"a": "A", "b": "B", "d": "D", "e": "E"}, cursor=15)
    assert gaps == (GapRange(from_block=10, to_block=11, order_ids=("A", "B"), tx_hashes=("0x1", "0x2")),
                    GapRange(from_block=14, to_block=14, order_ids=("D",), tx_hashes=("0x4",)))
    assert gaps[0].text == "missed blocks 10-11, 2 releases unprocessed"
    assert gaps[1].text == "missed block 14, 1 release unprocessed"


@pytest.fixture
async def db(pg):
    import asyncpg

    from backends.sources.postgres import close_pools

    dsn = pg.fresh_db(f"integrity_{uuid.uuid4().hex[:6]}")
    con = await asyncpg.connect(dsn)
    await con.execute(SCHEMA)
    yield dsn, con
    await con.close()
    await close_pools()


async def test_missed_range_found_exactly_and_backfilled(db, anvil, escrow, tmp_path):
    dsn, con = db
    spec = OrdersSpec(notes_column="notes", block_column="block_number", tx_column="tx_hash",
                      cursor=CursorSpec(table="listener_cursor", key="escrow"))
    store = OrdersStore(spec, dsn)
    chain = EvmChain(ChainSpec(name="local", endpoints=(anvil.url,), chain_id=31337, max_head_age=None,
                               confirmations=2, getlogs_chunk=50))
    verifier = ReleaseVerifier(chain, address=escrow.address, event=find_event(escrow.abi, "EscrowReleased"),
                               confirmations=2, start_block=escrow.deploy_block)
    tag = uuid.uuid4().hex[:6]
    ids = [f"ig-{tag}-{i}" for i in range(5)]
    blocks = {}
    for i, oid in enumerate(ids):
        # 0 and 3 processed (settled), 1 and 2 skipped by the listener, 4 above the cursor
        await con.execute("INSERT INTO orders (id, state) VALUES ($1, $2)", oid,
                          "SETTLED" if i in (0, 3) else "PENDING")
        tx = escrow.release(oid, 10**15)
        blocks[oid] = int(anvil.rpc("eth_getTransactionReceipt", [tx])["blockNumber"], 16)
    cursor = blocks[ids[3]]
    await con.execute("INSERT INTO listener_cursor VALUES ('escrow', $1, now())", cursor)
    anvil.mine(3)  # everything final (confirmations = 2)

    src = ListenerIntegrity(store, verifier, chain_name="local", window=50)
    try:
        (r,) = await src.poll()
        assert r.cursor == cursor and r.ahead >= 1
        assert [(g.from_block, g.to_block, g.order_ids) for g in r.gaps] == [
            (blocks[ids[1]], blocks[ids[2]], (ids[1], ids[2]))]
        snap = Snapshot(readings={src.name: (r,)})
        (f,) = [f for f in evaluate(snap, RuleContext()) if f.key.startswith("missed-blocks:")]
        assert f"missed blocks {blocks[ids[1]]}-{blocks[ids[2]]}, 2 releases unprocessed" in f.summary
        assert f.playbook == "missed-blocks"

        # read-only: refused in the engine
        ro = ActionEngine(AuditLog(tmp_path / "ro.jsonl"), operator="ro", read_only=True)
        ro.register(BackfillAction({src.name: src}))
        ro_plan = await ro.plan("orders.backfill")  # a plan (the preview) changes nothing
        with pytest.raises(ActionRefused, match="read-only"):
            await ro.execute(ro_plan, confirmation="yes")

        eng = ActionEngine(AuditLog(tmp_path / "audit.jsonl"), operator="alice")
        eng.register(BackfillAction({src.name: src}, operator="alice"))
        plan = await eng.plan("orders.backfill")  # no params: the detected range, exactly
        assert plan.params["from_block"] == blocks[ids[1]] and plan.params["to_block"] == blocks[ids[2]]
        assert sorted(plan.params["ids"]) == sorted(ids[1:3])
        assert ids[1] in plan.preview and ids[2] in plan.preview and ids[4] not in plan.preview
        with pytest.raises(ActionRefused):
            await eng.execute(plan, confirmation=None)
        res = await eng.execute(plan, confirmation="yes")
        assert res.status == "ok", res.summary
        states = dict(await con.fetch("SELECT id, state FROM orders"))
        assert states[ids[1]] == states[ids[2]] == "SETTLED" and states[ids[4]] == "PENDING"
        entries = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert any(e["action"] == "orders.backfill" and e.get("result") == "ok" for e in entries)
        (r2,) = await src.poll()
        assert r2.gaps == ()
        # the Findings pane plans with the finding's words: that finding's range, not the first one
        with pytest.raises(ActionRefused, match="block 1: no pending order"):
            await eng.plan("orders.backfill", reason="P1 escrow listener: missed block 1, 1 release unprocessed")
        # a range above the cursor is refused
        with pytest.raises(ActionRefused, match="above the listener cursor"):
            await eng.plan("orders.backfill", from_block=cursor, to_block=blocks[ids[4]])
    finally:
        await chain.aclose()


async def test_poll_reads_only_the_blocks_a_reorg_can_change_and_judges_as_a_full_scan(db, anvil, escrow):
    """Between polls the window's events are kept: the next poll asks the node only for the last
    `refetch_depth` blocks and the new ones, and finds what a fresh full scan finds (a release
    skipped after the first poll included)."""
    dsn, con = db
    spec = OrdersSpec(notes_column="notes", block_column="block_number", tx_column="tx_hash",
                      cursor=CursorSpec(table="listener_cursor", key="kept"))
    store = OrdersStore(spec, dsn)
    chain = EvmChain(ChainSpec(name="local", endpoints=(anvil.url,), chain_id=31337, max_head_age=None,
                               confirmations=2, getlogs_chunk=50))
    verifier = ReleaseVerifier(chain, address=escrow.address, event=find_event(escrow.abi, "EscrowReleased"),
                               confirmations=2, start_block=escrow.deploy_block)
    tag = uuid.uuid4().hex[:6]

    async def release(oid: str, state: str) -> int:
        await con.execute("INSERT INTO orders (id, state) VALUES ($1, $2)", oid, state)
        tx = escrow.release(oid, 10**15)
        return int(anvil.rpc("eth_getTransactionReceipt", [tx])["blockNumber"], 16)

    first = await release(f"kp-{tag}-0", "PENDING")  # skipped by the listener
    await release(f"kp-{tag}-1", "SETTLED")
    anvil.mine(80)  # the first releases fall below the reorg depth
    head = int(anvil.rpc("eth_blockNumber", []), 16)
    await con.execute("INSERT INTO listener_cursor VALUES ('kept', $1, now()) "
                      "ON CONFLICT (name) DO UPDATE SET last_block = $1", head)
    src = ListenerIntegrity(store, verifier, chain_name="local", window=500)
    try:
        (r1,) = await src.poll()
        a = r1.scanned_from
        assert src.fetched == [(a, head)]  # the first poll reads the whole window
        assert [g.from_block for g in r1.gaps] == [first]

        late = await release(f"kp-{tag}-2", "PENDING")  # another one skipped, after the first poll
        anvil.mine(3)
        head2 = int(anvil.rpc("eth_blockNumber", []), 16)
        await con.execute("UPDATE listener_cursor SET last_block = $1 WHERE name = 'kept'", head2)
        (r2,) = await src.poll()
        assert src.refetch_depth == 64
        assert src.fetched == [(head - 64 + 1, head2)]  # only what a reorg can change, and the new blocks
        fresh = ListenerIntegrity(store, verifier, chain_name="local", window=500)
        (full,) = await fresh.poll()
        assert fresh.fetched == [(full.scanned_from, head2)]
        assert (r2.events, r2.processed, r2.ahead, r2.gaps) == (full.events, full.processed, full.ahead, full.gaps)
        assert [g.from_block for g in r2.gaps] == [first, late]
    finally:
        await chain.aclose()
