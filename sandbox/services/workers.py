"""Action workers: drain `action_jobs` (BRPOP) and call the webhook for each trigger.

Failures count on the trigger's row of `circuit_breaker_state`; at `fail_max` the
breaker opens ("Circuit breaker OPEN") and the trigger's jobs are skipped until the
reset timeout, when one trial call (half-open) decides. Throughput is rate-limited per
process (an external endpoint's rate limit): scale the workers to drain faster.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sandbox.services.common import Service  # noqa: E402

BATCH = 100


def extra(p) -> None:
    p.add_argument("--rate", type=float, default=None, help="jobs per second (default from stack.json)")


async def main(svc: Service) -> None:
    import aiohttp
    import asyncpg
    import redis.asyncio as aioredis

    s = svc.settings
    rate = svc.args.rate or float(s.get("worker_rate", 1000))
    fail_max = int(s.get("breaker_fail_max", 5))
    reset_timeout = float(s.get("breaker_reset_timeout", 60))
    r = aioredis.from_url(s["redis_url"], socket_timeout=5)
    pool = await asyncpg.create_pool(s["dsn"], min_size=1, max_size=2,
                                     server_settings={"application_name": "action-workers"})
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
    counts = defaultdict(int)
    svc.info(f"Action worker started: queue {s['queue']}, rate limit {rate:g} jobs/s, breaker fail_max {fail_max}")
    last_report = time.monotonic()
    try:
        while not svc.stop.is_set():
            try:
                got = await r.brpop([s["queue"]], timeout=1)
            except Exception as exc:  # noqa: BLE001
                svc.error(f"Redis unavailable: {str(exc)[:160]}")
                if await svc.sleep(1):
                    break
                continue
            if got is None:
                if time.monotonic() - last_report > 10:
                    last_report = time.monotonic()
                    svc.info(f"Worker metrics: executed={counts['ok']} failed={counts['failed']} "
                             f"skipped={counts['skipped']} (queue empty)")
                continue
            jobs = [got[1]]
            more = await r.rpop(s["queue"], BATCH - 1)
            jobs.extend(more or [])
            t0 = time.monotonic()
            await process(svc, pool, http, r, jobs, counts, fail_max, reset_timeout)
            # the rate limit: this batch may not take less than len(jobs) / rate seconds
            spare = len(jobs) / rate - (time.monotonic() - t0)
            if spare > 0 and await svc.sleep(spare):
                break
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                depth = await r.llen(s["queue"])
                svc.info(f"Worker metrics: executed={counts['ok']} failed={counts['failed']} "
                         f"skipped={counts['skipped']} queue_depth={depth}")
    finally:
        svc.info("Action worker stopping")
        await http.close()
        await pool.close()
        await r.aclose()


async def process(svc, pool, http, r, raw_jobs, counts, fail_max, reset_timeout) -> None:
    s = svc.settings
    by_trigger: dict[str, list[dict]] = defaultdict(list)
    for raw in raw_jobs:
        try:
            job = json.loads(raw)
        except ValueError:
            counts["failed"] += 1
            continue
        by_trigger[str(job.get("trigger_id") or "default")].append(job)
    for trigger, jobs in by_trigger.items():
        async with pool.acquire() as con:
            row = await con.fetchrow(
                "SELECT state, failure_count, opened_at, last_failure_at FROM circuit_breaker_state "
                "WHERE trigger_id = $1", trigger)
        state = row["state"] if row else "closed"
        if state == "open":
            opened = row["opened_at"] or row["last_failure_at"]
            age = (time.time() - opened.timestamp()) if opened else reset_timeout
            if age < reset_timeout:
                counts["skipped"] += len(jobs)
                svc.warn(f"Circuit breaker OPEN for trigger {trigger}: {len(jobs)} job(s) skipped "
                         f"(half-open in {reset_timeout - age:.0f}s)")
                continue
            state = "half-open"
            svc.info(f"Circuit breaker HALF-OPEN for trigger {trigger}: trial call")
        ok, why = await call_webhook(http, s["webhook_url"], trigger, jobs)
        async with pool.acquire() as con:
            if ok:
                counts["ok"] += len(jobs)
                await con.execute(
                    "INSERT INTO circuit_breaker_state (trigger_id, state, failure_count) VALUES ($1, 'closed', 0) "
                    "ON CONFLICT (trigger_id) DO UPDATE SET state = 'closed', failure_count = 0, opened_at = NULL "
                    "WHERE circuit_breaker_state.state <> 'closed' OR circuit_breaker_state.failure_count <> 0",
                    trigger)
                svc.info(f"Action executed successfully: trigger {trigger}, {len(jobs)} job(s)")
                if state == "half-open":
                    svc.info(f"Circuit breaker CLOSED for trigger {trigger}")
            else:
                counts["failed"] += len(jobs)
                svc.error(f"Action execution failed: trigger {trigger}, {len(jobs)} job(s): {why}")
                n = await con.fetchval(
                    "INSERT INTO circuit_breaker_state (trigger_id, state, failure_count, last_failure_at) "
                    "VALUES ($1, 'closed', $2, now()) ON CONFLICT (trigger_id) DO UPDATE SET "
                    "failure_count = circuit_breaker_state.failure_count + $2, last_failure_at = now() "
                    "RETURNING failure_count", trigger, len(jobs))
                if n >= fail_max or state == "half-open":
                    opened = await con.fetchval(
                        "UPDATE circuit_breaker_state SET state = 'open', opened_at = now() "
                        "WHERE trigger_id = $1 AND (state <> 'open' OR $2) RETURNING 1", trigger, state == "half-open")
                    if opened:
                        svc.error(f"Circuit breaker OPEN for trigger {trigger} after {n} failure(s)")
                dead = s.get("dead_letter")
                if dead:
                    await r.lpush(dead, *[json.dumps(j) for j in jobs[:50]])
                    await r.ltrim(dead, 0, 999)


async def call_webhook(http, url: str, trigger: str, jobs: list[dict]) -> tuple[bool, str]:
    try:
        async with http.post(url, json={"trigger_id": trigger, "jobs": jobs}) as resp:
            if resp.status >= 400:
                return False, f"HTTP {resp.status}"
            return True, ""
    except TimeoutError:
        return False, "timeout"
    except Exception as exc:  # noqa: BLE001
        return False, str(exc)[:160] or type(exc).__name__


if __name__ == "__main__":
    Service("action-workers", extra=extra).run(main)
