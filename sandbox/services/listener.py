"""Event listener: watches EscrowReleased from its cursor (eth_getLogs polling) and
settles the orders (seed 000: `EVENT_LOG: {...}` lines, "Event processed successfully")."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sandbox.services.common import Rpc, Service, now_iso, topic_to_order_id  # noqa: E402

CHUNK = 500


async def main(svc: Service) -> None:
    import asyncpg

    s = svc.settings
    rpc = Rpc(svc, s["rpc_urls"])
    pool = await asyncpg.create_pool(s["dsn"], min_size=1, max_size=2, server_settings={"application_name": "event-listener"})
    stats = {"spawned": 0, "succeeded": 0, "failed": 0, "panicked": 0, "timeout": 0}
    svc.info(f"Started event listener for EscrowReleased on {s['escrow']}")
    svc.info("Polling fallback enabled: eth_getLogs every 1s from the listener cursor")
    last_metrics = 0.0
    try:
        while not svc.stop.is_set():
            try:
                await poll(svc, rpc, pool, stats)
            except Exception as exc:  # noqa: BLE001 - keep listening
                stats["failed"] += 1
                svc.error(f"Listener poll failed: {str(exc)[:200]}")
            if time.monotonic() - last_metrics >= 2.0:
                last_metrics = time.monotonic()
                svc.info("Listener metrics: spawned={spawned} succeeded={succeeded} failed={failed} "
                         "panicked={panicked} timeout={timeout} active=0".format(**stats))
            if await svc.sleep(1.0):
                break
    finally:
        svc.info("Event listener stopping")
        await pool.close()
        await rpc.close()


async def poll(svc: Service, rpc: Rpc, pool, stats: dict) -> None:
    s = svc.settings
    head = int(await rpc.call("eth_blockNumber"), 16)
    async with pool.acquire() as con:
        cursor = await con.fetchval("SELECT last_block FROM listener_cursor WHERE name = $1", "escrow")
    start = (cursor if cursor is not None else s["deploy_block"] - 1) + 1
    while start <= head:
        end = min(head, start + CHUNK - 1)
        logs = await rpc.call("eth_getLogs", [{"address": s["escrow"], "fromBlock": hex(start),
                                              "toBlock": hex(end), "topics": [s["topic_released"]]}])
        skip = skip_range(svc)
        for lg in logs or []:
            topics = lg.get("topics") or []
            if len(topics) >= 2 and topics[0].lower() == s["topic_released"].lower():
                if skip and skip[0] <= int(lg["blockNumber"], 16) <= skip[1]:
                    dropped(svc, lg)  # the missed-blocks drill: this range is skipped on purpose
                    continue
                await handle(svc, pool, lg, stats)
        async with pool.acquire() as con:
            await con.execute(
                "INSERT INTO listener_cursor (name, last_block, updated_at) VALUES ($1, $2, now()) "
                "ON CONFLICT (name) DO UPDATE SET last_block = EXCLUDED.last_block, updated_at = now()",
                "escrow", end)
        start = end + 1


SKIP_FLAG = "missed-blocks"  # <run-dir>/flags/missed-blocks: {"from": a, "to": b} (the drill's skip switch)


def skip_range(svc: Service) -> tuple[int, int] | None:
    """The block range the listener skips on purpose while the flag is set, else None."""
    path = svc.run_dir / "flags" / SKIP_FLAG
    try:
        data = json.loads(path.read_text())
        return int(data["from"]), int(data["to"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def dropped(svc: Service, lg: dict) -> None:
    """Record a release the listener skipped (the drill compares warroom's range with these)."""
    order_id = topic_to_order_id(lg["topics"][1])
    block = int(lg["blockNumber"], 16)
    with open(svc.run_dir / "flags" / (SKIP_FLAG + ".dropped"), "a") as f:
        f.write(json.dumps({"block": block, "order": order_id, "tx": lg["transactionHash"]}) + "\n")
    svc.warn(f"Skipping EscrowReleased for order {order_id} in block {block} (missed-blocks drill)")


async def handle(svc: Service, pool, lg: dict, stats: dict) -> None:
    order_id = topic_to_order_id(lg["topics"][1])
    amount = int(lg["data"], 16) if lg.get("data") not in (None, "0x") else 0
    block = int(lg["blockNumber"], 16)
    entry = {"timestamp": now_iso(), "event": "EscrowReleased", "orderId": order_id,
             "amount": str(amount), "blockNumber": block, "transactionHash": lg["transactionHash"],
             "status": "received"}
    svc.info("EVENT_LOG: " + json.dumps(entry))
    stats["spawned"] += 1
    try:
        async with pool.acquire() as con, con.transaction():
            fresh = await con.fetchval(
                "INSERT INTO processed_events (tx_hash, log_index, order_id, amount, block_number, processed_at) "
                "VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT DO NOTHING RETURNING 1",
                lg["transactionHash"], int(lg["logIndex"], 16), order_id, amount, block)
            settled = await con.fetchval(
                "UPDATE orders SET state = 'SETTLED', updated_at = now(), block_number = $2, tx_hash = $3 "
                "WHERE id = $1 AND state = 'PENDING' RETURNING id", order_id, block, lg["transactionHash"])
        stats["succeeded"] += 1
        entry.update(status="processed", settled=bool(settled), duplicate=not fresh, timestamp=now_iso())
        svc.info("EVENT_LOG: " + json.dumps(entry))
        svc.info(f"Event processed successfully: order {order_id} "
                 f"{'settled' if settled else 'already settled or unknown'}")
    except Exception as exc:
        stats["failed"] += 1
        entry.update(status="failed", error=str(exc)[:200], timestamp=now_iso())
        svc.error("EVENT_LOG: " + json.dumps(entry))
        raise


if __name__ == "__main__":
    Service("event-listener").run(main)
