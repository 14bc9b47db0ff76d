"""Order flow: creates orders (PENDING), releases their escrow on chain and enqueues
an action job for each, at a steady rate (default one every 2 s)."""

from __future__ import annotations

import json
import random
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sandbox.services.common import Rpc, Service, release_calldata  # noqa: E402


async def main(svc: Service) -> None:
    import asyncpg
    import redis.asyncio as aioredis

    s = svc.settings
    rpc = Rpc(svc, s["rpc_urls"])
    pool = await asyncpg.create_pool(s["dsn"], min_size=1, max_size=2,
                                     server_settings={"application_name": "order-flow"})
    r = aioredis.from_url(s["redis_url"], socket_timeout=5)
    every = float(s.get("order_every", 2.0))
    triggers = list(s["triggers"])
    arbiter = s["arbiter"]
    min_gas = int(s.get("flow_min_gas_wei", 5 * 10**16))
    async with pool.acquire() as con:
        n = int(await con.fetchval("SELECT count(*) FROM orders"))
    held = ""
    svc.info(f"Order flow started: one order every {every:g}s, releases from arbiter {arbiter}")
    try:
        while not await svc.sleep(every):
            try:
                why = await hold_reason(rpc, s, arbiter, min_gas)
            except Exception as exc:  # noqa: BLE001
                why = f"chain unavailable: {str(exc)[:120]}"
            if why:
                if why != held:
                    svc.warn(f"Holding new orders: {why}")
                held = why
                continue
            if held:
                svc.info("Resuming new orders")
                held = ""
            n += 1
            order_id = f"ord-{int(time.time()) % 100000:05d}-{n:05d}"
            amount = random.randint(1, 200) * 10**16  # 0.01 .. 2 ETH
            try:
                async with pool.acquire() as con:
                    await con.execute(
                        "INSERT INTO orders (id, state, amount, created_at, updated_at, notes) "
                        "VALUES ($1, 'PENDING', $2, now(), now(), $3)", order_id, amount, "sandbox order flow")
                tx = await rpc.call("eth_sendTransaction", [{
                    "from": arbiter, "to": s["escrow"], "gas": hex(120_000),
                    "data": release_calldata(s["selectors"]["release"], order_id, amount)}])
                trigger = triggers[n % len(triggers)]
                job = {"id": str(uuid.uuid4()), "trigger_id": trigger, "type": "order.released",
                       "order_id": order_id, "enqueued_at": time.time()}
                await r.lpush(s["queue"], json.dumps(job))
                svc.info(f"Order {order_id} created ({amount / 1e18:.2f} ETH), escrow released in {tx[:18]}…, "
                         f"job queued for {trigger}")
            except Exception as exc:  # noqa: BLE001
                svc.error(f"Order {order_id}: {str(exc)[:200]}")
    finally:
        svc.info("Order flow stopping")
        await pool.close()
        await r.aclose()
        await rpc.close()


async def hold_reason(rpc: Rpc, s: dict, arbiter: str, min_gas: int) -> str:
    paused = await rpc.call("eth_call", [{"to": s["escrow"], "data": s["selectors"]["paused"]}, "latest"])
    if paused and int(paused, 16):
        return "escrow contract is paused"
    bal = int(await rpc.call("eth_getBalance", [arbiter, "latest"]), 16)
    if bal < min_gas:
        return f"Insufficient GAS: arbiter balance {bal / 1e18:.4f} ETH"
    return ""


if __name__ == "__main__":
    Service("order-flow").run(main)
