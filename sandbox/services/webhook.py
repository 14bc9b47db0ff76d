"""The webhook the action workers call (a stand-in for Telegram / REST / MCP endpoints).

Answers 200, or 500 while the drill flag `flags/webhook-down` exists."""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sandbox.services.common import Service  # noqa: E402


async def main(svc: Service) -> None:
    from aiohttp import web

    counts = {"ok": 0, "failed": 0}
    last = [time.monotonic()]

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        n = len(body.get("jobs") or [])
        if svc.flag("webhook-down"):
            counts["failed"] += n
            return web.json_response({"error": "upstream unavailable"}, status=500)
        counts["ok"] += n
        if time.monotonic() - last[0] > 10:
            last[0] = time.monotonic()
            svc.info(f"webhook: {counts['ok']} job(s) accepted, {counts['failed']} refused so far")
        return web.json_response({"ok": True, "accepted": n})

    async def health(request: web.Request) -> web.Response:
        down = svc.flag("webhook-down")
        return web.json_response({"status": "unhealthy" if down else "healthy"}, status=500 if down else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", svc.settings["ports"]["webhook"])
    await site.start()
    svc.info(f"webhook listening on 127.0.0.1:{svc.settings['ports']['webhook']}")
    await svc.stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    Service("webhook", preload=("aiohttp",)).run(main)
