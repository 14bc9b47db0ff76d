"""Orders benchmark: stuck query on 1,000,000 orders, on-chain verification, bulk fix.

    .venv/bin/python -m benchmarks.orders [--rows 1000000] [--stuck 10000] [--verify 1000] [--bulk 10000]

Starts its own PostgreSQL (pgserver binaries) and anvil with the test harness helpers,
prints the figures against the targets of issue 4 and stops what it started:

- the stuck query (count + oldest + the oldest 50) on ROWS orders with STUCK stuck
  (target <= 50 ms), with the index the EXPLAIN check recommends;
- verifying VERIFY stuck orders against anvil, half of them released (target <= 5 s);
- a bulk fix of BULK orders through the ActionEngine, audit entry included (target <= 3 s).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _fmt_ms(s: float) -> str:
    return f"{s * 1000:.1f} ms"


def _line(label: str, value: float, target: float) -> str:
    ok = "OK " if value <= target else "SLOW"
    shown = _fmt_ms(value) if target < 1 else f"{value:.2f} s"
    tshown = _fmt_ms(target) if target < 1 else f"{target:g} s"
    return f"  [{ok}] {label:<52} {shown:>10}   (target <= {tshown})"


SCHEMA = """
CREATE TABLE orders (
    id text PRIMARY KEY,
    state text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz,
    notes text,
    block_number bigint,
    tx_hash text
);
"""


async def bench_stuck_query(dsn: str, rows: int, stuck: int) -> list[str]:
    import asyncpg

    from backends.sources.orders import OrdersSource, OrdersSpec, OrdersStore

    con = await asyncpg.connect(dsn)
    t0 = time.perf_counter()
    await con.execute(SCHEMA)
    await con.execute(
        "INSERT INTO orders (id, state, created_at, notes) "
        "SELECT 'o' || g, CASE WHEN g % 20 = 0 THEN 'FAILED' ELSE 'SETTLED' END, "
        "now() - (g % 43200) * interval '1 minute', 'ok' FROM generate_series(1, $1) g",
        rows - stuck,
    )
    await con.execute(
        "INSERT INTO orders (id, state, created_at) "
        "SELECT 's' || g, 'PENDING', now() - interval '15 minutes' - g * interval '1 second' "
        "FROM generate_series(1, $1) g",
        stuck,
    )
    # fresh pending orders that are not stuck yet
    await con.execute(
        "INSERT INTO orders (id, state, created_at) SELECT 'f' || g, 'PENDING', now() "
        "FROM generate_series(1, 500) g")
    load_s = time.perf_counter() - t0
    store = OrdersStore(OrdersSpec(notes_column="notes", show=50), dsn, pool_max=2)
    src = OrdersSource(store)
    await con.execute("ANALYZE orders")
    ok, hint, est = await store.index_check()
    out = [f"  loaded {rows:,} orders ({stuck:,} stuck) in {load_s:.1f} s; "
           f"index usable before: {ok} -> {hint}"]
    await con.execute("CREATE INDEX orders_state_created_at_idx ON orders (state, created_at)")
    await con.execute("VACUUM ANALYZE orders")
    ok2, _, _ = await store.index_check()
    out.append(f"  after CREATE INDEX: index usable: {ok2}")
    await con.close()

    async def stuck_query() -> tuple[int, int]:
        n, _age = await store.stuck_summary()
        oldest = await store.stuck()
        return n, len(oldest)

    n, shown = await stuck_query()
    assert n == stuck and shown == 50, (n, shown)
    times = []
    for _ in range(30):
        t = time.perf_counter()
        await stuck_query()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    reading_times = []
    for _ in range(5):
        t = time.perf_counter()
        r = await src.reading()
        reading_times.append(time.perf_counter() - t)
    assert r.stuck_count == stuck
    out.append(_line(f"stuck query, {rows:,} orders / {stuck:,} stuck (median of 30)", med, 0.050))
    out.append(f"         p95 {_fmt_ms(sorted(times)[int(len(times) * 0.95) - 1])}; whole OrdersReading incl. "
               f"24 h counts by state: {_fmt_ms(statistics.median(reading_times))}")
    return out


async def bench_verify(anvil, escrow, dsn: str, count: int) -> list[str]:
    import asyncpg

    from backends.model import Verdict
    from backends.sources.evm import EvmChain, find_event, keccak
    from backends.sources.jsonrpc import ChainSpec, HttpRpc
    from backends.sources.orders import OrdersSpec, OrdersStore, ReleaseVerifier, encode_order_id

    ids = [f"v-{i:05d}" for i in range(count)]
    released = ids[::2]
    # release half of them on chain: one JSON-RPC batch of eth_sendTransaction (anvil's
    # unlocked owner account), automine off, then mined in blocks of 100 transactions
    rpc = HttpRpc(anvil.url, timeout=60)
    sel = "0x" + keccak(b"release(bytes32,uint256)")[:4].hex()
    owner = anvil.accounts[0]
    t0 = time.perf_counter()
    await rpc.call("evm_setAutomine", [False])
    for i in range(0, len(released), 100):
        calls = [("eth_sendTransaction", [{"from": owner, "to": escrow.address, "gas": "0x20000",
                                           "data": sel + encode_order_id(oid, "bytes32-utf8")[2:] + f"{7:064x}"}])
                 for oid in released[i : i + 100]]
        res = await rpc.batch(calls)
        bad = [r for r in res if isinstance(r, Exception)]
        assert not bad, bad[:1]
        await rpc.call("anvil_mine", ["0x1"])
    await rpc.call("evm_setAutomine", [True])
    await rpc.call("anvil_mine", ["0x5"])
    seed_s = time.perf_counter() - t0
    await rpc.aclose()

    con = await asyncpg.connect(dsn)
    await con.execute(SCHEMA.replace("orders", "vorders"))
    await con.executemany(
        "INSERT INTO vorders (id, state, created_at, block_number) VALUES ($1, 'PENDING', now() - interval '1 hour', $2)",
        [(oid, escrow.deploy_block) for oid in ids])
    await con.close()
    store = OrdersStore(OrdersSpec(table="vorders", block_column="block_number"), dsn)
    orders = await store.stuck(limit=count)
    chain = EvmChain(ChainSpec(name="bench", endpoints=(anvil.url,), chain_id=anvil.chain_id,
                               max_head_age=None, confirmations=3, getlogs_chunk=2000, timeout=30))
    v = ReleaseVerifier(chain, address=escrow.address, event=find_event(escrow.abi, "EscrowReleased"),
                        confirmations=3)
    t = time.perf_counter()
    verdicts = await v.verify(orders)
    el = time.perf_counter() - t
    n_rel = sum(1 for x in verdicts.values() if x.verdict is Verdict.RELEASED and x.final)
    n_not = sum(1 for x in verdicts.values() if x.verdict is Verdict.NOT_RELEASED)
    assert n_rel == len(released) and n_not == count - len(released), (n_rel, n_not)
    await chain.aclose()
    return [
        f"  released {len(released):,} orders on anvil in {seed_s:.1f} s (chain head {anvil.block_number():,})",
        _line(f"verify {count:,} stuck orders on chain ({n_rel} released, {n_not} not)", el, 5.0),
    ]


async def bench_bulk(dsn: str, count: int, tmp: Path) -> list[str]:
    import asyncpg

    from backends.actions.base import ActionEngine
    from backends.engine.audit import AuditLog
    from backends.sources.orders import OrdersBulkFixAction, OrdersSpec, OrdersStore

    con = await asyncpg.connect(dsn)
    await con.execute(SCHEMA.replace("orders", "borders"))
    await con.execute("CREATE INDEX borders_state_created ON borders (state, created_at)")
    await con.execute(
        "INSERT INTO borders (id, state, created_at, notes) SELECT 'b' || g, 'PENDING', "
        "now() - interval '3 hours' - g * interval '1 second', 'created' FROM generate_series(1, $1) g", count)
    await con.execute("VACUUM ANALYZE borders")
    await con.close()
    store = OrdersStore(OrdersSpec(table="borders", notes_column="notes", bulk_batch=500), dsn)
    audit = AuditLog(tmp / "audit.jsonl")
    eng = ActionEngine(audit, operator="bench")
    eng.register(OrdersBulkFixAction(store, batch_audit=audit))  # one entry per batch + the final one
    t = time.perf_counter()
    plan = await eng.plan("orders.bulk_fix", older_than="2h", state="FAILED", reason="benchmark")
    plan_s = time.perf_counter() - t
    batches = []
    t = time.perf_counter()
    res = await eng.execute(plan, confirmation=str(count), progress=batches.append)
    exec_s = time.perf_counter() - t
    assert res.counts["fixed"] == count, res.summary
    assert audit.verify().ok
    size = (tmp / "audit.jsonl").stat().st_size
    return [
        _line(f"bulk fix {count:,} orders, {len(batches)} batches, audited", exec_s, 3.0),
        f"         plan (select + preview): {_fmt_ms(plan_s)}; audit {len(batches) + 1} entries, {size / 1024:.0f} KiB",
    ]


async def main_async(args) -> None:
    from backends.sources.postgres import close_pools
    from tests.harness.evm import EscrowDeployment, start_anvil
    from tests.harness.postgres import PostgresServer

    pg = PostgresServer()
    anvil = None
    print("warroom orders benchmark")
    try:
        t = time.perf_counter()
        pg.start()
        print(f"  postgres up in {time.perf_counter() - t:.1f} s")
        dsn = pg.fresh_db("bench")
        for line in await bench_stuck_query(dsn, args.rows, args.stuck):
            print(line, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            for line in await bench_bulk(dsn, args.bulk, Path(tmp)):
                print(line, flush=True)
        t = time.perf_counter()
        anvil = start_anvil()
        escrow = await asyncio.to_thread(EscrowDeployment, anvil)
        print(f"  anvil + escrow up in {time.perf_counter() - t:.1f} s")
        for line in await bench_verify(anvil, escrow, dsn, args.verify):
            print(line, flush=True)
        await close_pools()
    finally:
        if anvil is not None:
            anvil.stop()
        pg.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--stuck", type=int, default=10_000)
    ap.add_argument("--verify", type=int, default=1_000)
    ap.add_argument("--bulk", type=int, default=10_000)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
