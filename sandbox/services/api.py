"""API gateway: `/api/v1/health` (and `/health`) as in seed 003, orders, Prometheus metrics."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sandbox.services.common import Service, now_iso  # noqa: E402


async def main(svc: Service) -> None:
    import asyncpg
    import redis.asyncio as aioredis
    from aiohttp import web

    s = svc.settings
    pool = await asyncpg.create_pool(s["dsn"], min_size=1, max_size=4,
                                     server_settings={"application_name": "api-gateway"})
    r = aioredis.from_url(s["redis_url"], socket_timeout=1, socket_connect_timeout=1)
    requests = {"total": 0, "errors": 0}
    last_log = [0.0]

    async def check_db() -> str:
        try:
            async with asyncio.timeout(1.0), pool.acquire() as con:
                await con.fetchval("SELECT 1")
            return "connected"
        except Exception:  # noqa: BLE001
            return "disconnected"

    async def check_redis() -> str:
        try:
            async with asyncio.timeout(1.0):
                await r.ping()
            return "connected"
        except Exception:  # noqa: BLE001
            return "disconnected"

    async def health(request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        db, rd = await asyncio.gather(check_db(), check_redis())
        ok = db == "connected" and rd == "connected"
        requests["total"] += 1
        if not ok:
            requests["errors"] += 1
            svc.error(f"health check failed: database {db}, redis {rd}")
        elif time.monotonic() - last_log[0] > 5:
            last_log[0] = time.monotonic()
            svc.info(f"GET {request.path} 200 {(time.perf_counter() - t0) * 1000:.0f}ms")
        return web.json_response({"status": "healthy" if ok else "unhealthy", "timestamp": now_iso(),
                                  "database": db, "redis": rd}, status=200 if ok else 503)

    async def orders(request: web.Request) -> web.Response:
        requests["total"] += 1
        async with pool.acquire() as con:
            rows = await con.fetch("SELECT id, state, amount::text AS amount, created_at FROM orders "
                                   "ORDER BY created_at DESC LIMIT 20")
        return web.json_response([{**dict(x), "created_at": x["created_at"].isoformat()} for x in rows])

    async def metrics(request: web.Request) -> web.Response:
        depth = 0
        try:
            depth = int(await r.llen(s["queue"]))
        except Exception:  # noqa: BLE001
            pass
        text = (
            "# TYPE api_gateway_http_requests_total counter\n"
            f"api_gateway_http_requests_total {requests['total']}\n"
            "# TYPE api_gateway_http_errors_total counter\n"
            f"api_gateway_http_errors_total {requests['errors']}\n"
            "# TYPE event_processor_queue_depth gauge\n"
            f"event_processor_queue_depth {depth}\n"
        )
        return web.Response(text=text, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/api/v1/health", health)
    app.router.add_get("/health", health)
    app.router.add_get("/api/orders", orders)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = s["ports"]["api"]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    svc.info(f"API gateway listening on 127.0.0.1:{port}")
    while not await svc.sleep(10):
        svc.info(f"API metrics: requests={requests['total']} errors={requests['errors']}")
    await runner.cleanup()
    await pool.close()
    await r.aclose()


if __name__ == "__main__":
    Service("api-gateway").run(main)
