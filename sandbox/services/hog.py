"""Pool-exhaustion drill: holds N connections busy with long `pg_sleep` queries.

Like a real report job, it fails at its first terminated query (the fix: "terminating connection due to
administrator command") and releases every connection it still holds; SIGTERM is the undo."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sandbox.services.common import Service  # noqa: E402


def extra(p) -> None:
    p.add_argument("--connections", type=int, default=30)


async def main(svc: Service) -> None:
    import asyncpg

    n = svc.args.connections
    cons = []
    for _ in range(n):
        try:
            cons.append(await asyncpg.connect(svc.settings["dsn"], server_settings={"application_name": "report-job"}))
        except Exception as exc:  # noqa: BLE001 - the pool is exhausted: that is the point
            svc.error(f"could not open a connection: {str(exc)[:160]}")
            break
    svc.warn(f"Holding {len(cons)} connection(s) with long-running queries (SELECT pg_sleep(3600))")

    async def sleep_on(con):
        try:
            await con.execute("SELECT pg_sleep(3600)")
        except Exception as exc:  # noqa: BLE001
            return str(exc)[:120]
        return "finished"

    tasks = [asyncio.ensure_future(sleep_on(c)) for c in cons]
    stop = asyncio.ensure_future(svc.stop.wait())
    pending = set(tasks)
    while pending and not svc.stop.is_set():
        done, pending = await asyncio.wait(pending | {stop}, return_when=asyncio.FIRST_COMPLETED)
        pending.discard(stop)
        ended = [t.result() for t in done if t is not stop]
        for why in ended:
            svc.warn(f"long query ended: {why}")
        if ended:
            svc.error(f"report job failed: {ended[0]}; releasing {len(pending)} other connection(s)")
            break
    for t in tasks:
        t.cancel()
    for c in cons:
        try:
            c.terminate()
        except Exception:  # noqa: BLE001
            pass
    stop.cancel()
    svc.info("released all connections")


if __name__ == "__main__":
    Service("report-job", extra=extra, preload=("asyncpg",)).run(main)
