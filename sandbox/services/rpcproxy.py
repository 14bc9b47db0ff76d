"""The primary RPC endpoint: a forwarding JSON-RPC proxy in front of the node.

The rpc-outage drill stops it (connection refused at the primary URL); the node stays
reachable directly as the backup endpoint."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sandbox.services.common import Service  # noqa: E402


async def main(svc: Service) -> None:
    import aiohttp
    from aiohttp import web

    upstream = svc.settings["node_url"]
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            async with session.post(upstream, data=body, headers={"Content-Type": "application/json"}) as resp:
                data = await resp.read()
                return web.Response(body=data, status=resp.status, content_type="application/json")
        except Exception as exc:  # noqa: BLE001
            svc.error(f"upstream {upstream} failed: {str(exc)[:160]}")
            return web.json_response({"error": "bad gateway"}, status=502)

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = svc.settings["ports"]["rpc_primary"]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    svc.info(f"RPC proxy listening on 127.0.0.1:{port} -> {upstream}")
    await svc.stop.wait()
    await runner.cleanup()
    await session.close()


if __name__ == "__main__":
    Service("rpc-primary", preload=("aiohttp",)).run(main)
