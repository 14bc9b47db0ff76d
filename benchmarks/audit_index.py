"""The audit trail's off-loop index on a large file (issue 16).

    .venv/bin/python benchmarks/audit_index.py [--entries 1000000] [--keep PATH] [--verify]

Writes an audit file of N hash-chained, keyed entries (a realistic mix: 1 in 40 an
executed step, the rest dry-runs, refusals, console errors, failovers; timestamps over
30 days, the last hour holding a handful of steps), then measures:

- what the screens do today on the UI loop: `list(audit.entries())` (the playbook
  screen) and the old whole-file `tail(2000)` (the findings pane's hints);
- the index: its load (once, in the reader thread) and the loop's worst stall meanwhile;
- the query "steps already done since this finding appeared" (`steps_since`), its wall
  time and the CPU time it costs the loop's thread; the same after one more append
  (only the new bytes are read); `tail_async(500)` (detail screen); `entries_after`
  (a mirror's catch-up); `open_intents`;
- with --verify, `verify()` over the whole file (the CLI's `warroom audit verify`).

Prints one line per measurement; nothing is contacted but the file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.engine.audit import GENESIS, AuditLog, _canonical, entry_hash, entry_mac  # noqa: E402


def make_file(log: AuditLog, n: int, now: datetime) -> tuple[int, float]:
    """N entries written directly (no fsync per entry: this is set-up, not the write path)."""
    key = log._load_key(create=True)
    start = now - timedelta(days=30)
    span = (now - timedelta(hours=1) - start).total_seconds()
    prev = GENESIS
    recent_steps = 0
    t0 = time.perf_counter()
    with open(log.path, "wb") as fh:
        buf = []
        for i in range(1, n + 1):
            recent = i > n - 200  # the last 200 entries fall in the last hour
            if recent:
                ts = now - timedelta(hours=1) + timedelta(seconds=(i - (n - 200)) * 15)
            else:
                ts = start + timedelta(seconds=span * i / n)
            kind = i % 40
            if kind == 0:
                action, target, dry, result = "orders.fix", f"order:o-{i}", False, "ok"
            elif kind == 1:
                action, target, dry, result = "docker.restart", "service:api-gateway", False, "ok"
            elif kind < 20:
                action, target, dry, result = "orders.fix", f"order:o-{i}", True, "previewed"
            elif kind < 30:
                action, target, dry, result = "chain.failover", "chain:main", False, "refused"
            else:
                action, target, dry, result = "console.error", "screen:findings", False, "error"
            if recent and not dry and result == "ok":
                recent_steps += 1
            body = {"ts": ts.isoformat(), "operator": "bench@127.0.0.1", "host": "bench", "action": action,
                    "target": target, "params": {"state": "SETTLED", "order_id": f"o-{i}"}, "reason": "benchmark",
                    "dry_run": dry, "before": {"state": "PENDING"}, "after": {"state": "SETTLED"},
                    "result": result, "summary": f"{action} {target}", "error": None, "seq": i, "prev": prev}
            digest = entry_hash(prev, body)
            buf.append(_canonical(dict(body, hash=digest, mac=entry_mac(key, digest))) + b"\n")
            prev = digest
            if len(buf) >= 10_000:
                fh.write(b"".join(buf))
                buf.clear()
        fh.write(b"".join(buf))
    # the head anchor, as the write path leaves it
    log.append(action="bench.done", target="bench", result="ok")
    return recent_steps, time.perf_counter() - t0


class LoopLag:
    """The loop's worst stall: a ticker every 5 ms notes how late it wakes."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, loop.time() - t - 0.005)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def rss_mb() -> float:
    """The resident set now (Linux /proc), else the peak."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def timed(what: str, coro_fn, loops: int = 1):
    """Wall time and the loop thread's CPU time for `await coro_fn()`."""
    best_wall = best_cpu = float("inf")
    out = None
    for _ in range(loops):
        c0, w0 = time.thread_time(), time.perf_counter()
        out = await coro_fn()
        best_cpu = min(best_cpu, time.thread_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
    return out, best_wall, best_cpu


def line(name: str, value: str) -> None:
    print(f"{name:<58} {value}")


async def main(args: argparse.Namespace) -> int:
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="warroom-audit-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "audit.jsonl"
    now = datetime.now(UTC)
    log = AuditLog(path)
    if not path.exists() or not args.keep:
        for p in (path, log.key_path, log.head_path):
            if p.exists():
                p.unlink()
        _recent, secs = make_file(log, args.entries, now)
        line(f"write {args.entries:,} entries (set-up)", f"{secs:.1f} s")
    size = path.stat().st_size
    line("audit file", f"{size / 1e6:.0f} MB, {args.entries + 1:,} entries")
    since = now - timedelta(minutes=30)

    # what the screens do today, on the loop (blocking calls)
    t0 = time.perf_counter()
    everything = list(log.entries())
    line("today: list(audit.entries()) on the loop (playbook screen)", f"{(time.perf_counter() - t0) * 1e3:,.0f} ms")
    del everything
    import gc

    gc.collect()
    t0 = time.perf_counter()
    deque(log.entries(), maxlen=2000)
    line("today: whole-file tail(2000) on the loop (findings hints)", f"{(time.perf_counter() - t0) * 1e3:,.0f} ms")
    t0 = time.perf_counter()
    log.tail(2000)
    line("now: tail(2000) read from the end (blocking)", f"{(time.perf_counter() - t0) * 1e3:,.1f} ms")

    rss0 = rss_mb()
    with LoopLag() as lag:
        n, wall, cpu = await timed("load", log.load_index)
    line("index load in the reader thread (once)", f"{wall:.1f} s wall, loop thread CPU {cpu * 1e3:.0f} ms, "
                                                    f"{n:,} entries")
    line("  worst loop stall while it loads", f"{lag.worst * 1e3:.1f} ms")
    line("  RSS growth of the process (the index)", f"{rss_mb() - rss0:.0f} MB")

    with LoopLag() as lag:
        steps, wall, cpu = await timed("steps", lambda: log.steps_since(since), loops=20)
    line("steps_since(30 min ago): steps done since a finding appeared",
         f"{wall * 1e3:.2f} ms wall, loop CPU {cpu * 1e3:.2f} ms, {len(steps)} steps")
    steps_all, wall, cpu = await timed("steps", lambda: log.steps_since(now - timedelta(hours=2)), loops=20)
    line("steps_since(2 h ago)", f"{wall * 1e3:.2f} ms wall, loop CPU {cpu * 1e3:.2f} ms, {len(steps_all)} steps")
    steps_svc, wall, cpu = await timed("steps", lambda: log.steps_since(now - timedelta(hours=2), ["service:"]),
                                       loops=20)
    line("steps_since(2 h ago, ['service:'])", f"{wall * 1e3:.2f} ms wall, loop CPU {cpu * 1e3:.2f} ms, "
                                               f"{len(steps_svc)} steps")
    line("  worst loop stall during the queries", f"{lag.worst * 1e3:.1f} ms")
    # the same answer the slow way, from the last entries of the file
    t = since.timestamp()
    slow = [e for e in log.tail(5000) if not e.get("dry_run") and e.get("result") in ("ok", "partial")
            and datetime.fromisoformat(e["ts"]).timestamp() >= t]
    if [e["seq"] for e in slow] != [e["seq"] for e in steps]:
        print(f"MISMATCH: the index gave {len(steps)} steps, the file {len(slow)}")
        return 1

    await log.append_async(action="orders.fix", target="order:new", result="ok")
    steps2, wall, cpu = await timed("after-append", lambda: log.steps_since(since))
    line("steps_since after one more append (reads the new bytes)", f"{wall * 1e3:.2f} ms wall, loop CPU "
                                                                     f"{cpu * 1e3:.2f} ms, {len(steps2)} steps")
    _, wall, cpu = await timed("tail", lambda: log.tail_async(500), loops=5)
    line("tail_async(500) (detail screen)", f"{wall * 1e3:.1f} ms wall, loop CPU {cpu * 1e3:.2f} ms")
    after, wall, cpu = await timed("after", lambda: log.entries_after(args.entries - 100), loops=5)
    line("entries_after(seq N-100) (a mirror's catch-up)", f"{wall * 1e3:.2f} ms wall, loop CPU {cpu * 1e3:.2f} ms, "
                                                           f"{len(after)} entries")
    _, wall, cpu = await timed("intents", log.open_intents, loops=5)
    line("open_intents()", f"{wall * 1e3:.2f} ms wall, loop CPU {cpu * 1e3:.2f} ms")
    if args.verify:
        t0 = time.perf_counter()
        res = log.verify()
        line("verify() of the whole file (CLI)", f"{time.perf_counter() - t0:.1f} s, ok={res.ok}, "
                                                 f"{res.keyed:,} keyed")
    if not args.keep:
        for p in (path, log.key_path, log.head_path):
            if p.exists():
                p.unlink()
        os.rmdir(folder)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--keep", metavar="DIR", help="keep (and reuse) the file in DIR")
    ap.add_argument("--verify", action="store_true", help="also time verify() over the whole file")
    sys.exit(asyncio.run(main(ap.parse_args())))
