"""Logs benchmark: the pipeline (LogHub following a file) and the LogTail widget under tmux.

A writer process appends realistic lines (plain, JSON, logfmt, EVENT_LOG, errors) to a
file at a fixed rate. For each rate (default 200 and 10,000 lines/s, 60 s each):

- pipeline: a LogHub in this process follows the file; prints lines/s handled, CPU %
  of one core, peak RSS and the delay from write to delivery;
- widget: a tiny Textual app with just a LogTail fed by a LogHub runs inside tmux,
  wrapped by `script` so every byte it writes to the terminal is counted; prints
  lines/s shown, CPU %, peak RSS, bytes to the terminal per second (and against the
  log's own bytes), the delay until the newest line is on screen, the latency of a
  key (`p`, sent with `tmux send-keys`) until the app has handled and repainted, and
  the share of the time spent collecting garbage (runs and ms per GC generation).
  The keys (pause, then resume 0.3 s later, every `--key-every` s, default 2) count
  in the CPU figure: `--key-every 0` measures the tail alone.

Targets: 200 lines/s <= 3 % of a core, <= 2x the log's bytes to the terminal, newest
line on screen within 0.25 s; 10,000 lines/s: a key answered within 100 ms, RSS < 150 MB.

    .venv/bin/python benchmarks/logs.py                 # full run (about 5 minutes)
    .venv/bin/python benchmarks/logs.py --seconds 10    # quick run
    .venv/bin/python benchmarks/logs.py --only pipeline --rates 200
    .venv/bin/python benchmarks/logs.py --only widget --rates 200 --key-every 0
    WARROOM_BENCH_PROFILE=/tmp/tail.prof .venv/bin/python benchmarks/logs.py --only widget --rates 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_MARK = re.compile(r"seq=(\d+) ts=(\d+\.\d+)")


# --------------------------------------------------------------------------- writer


def writer_main(path: str, rate: float, seconds: float) -> None:
    """Append lines at `rate` per second for `seconds`, in 10 ms batches."""
    import datetime as dt

    shapes = [
        "{iso} INFO  order settled order_id=ord-{seq} amount=1500000 block=4412{m} seq={seq} ts={ts:.6f}",
        '{{"level":"info","time":"{iso}","msg":"Event processed successfully","orderId":"ord-{seq}","note":"seq={seq} ts={ts:.6f}"}}',
        "time={iso} level=warn msg=\"queue depth high\" queue=action_jobs depth=12{m} seq={seq} ts={ts:.6f}",
        "{iso} INFO  Listener metrics: spawned=3 failed=0 processed={seq} seq={seq} ts={ts:.6f}",
        'EVENT_LOG: {{"timestamp":"{iso}","event":"EscrowReleased","orderId":"ord-{seq}","status":"processed","m":"seq={seq} ts={ts:.6f}"}}',
        "{iso} INFO  GET /api/v1/health 200 3ms remote=127.0.0.1 ua=kube-probe/1.29 seq={seq} ts={ts:.6f}",
        "{iso} INFO  Action executed successfully action=release trigger=t-{m} seq={seq} ts={ts:.6f}",
        "{iso} ERROR Failed to acquire connection from pool after 5000ms (pool=main) seq={seq} ts={ts:.6f}",
        "{iso} INFO  rpc eth_getLogs fromBlock=0x{m:x} toBlock=0x{m:x} took=41ms seq={seq} ts={ts:.6f}",
        "{iso} DEBUG cursor at block {m} head {m} gap 0 seq={seq} ts={ts:.6f}",
    ]
    start = time.time()
    seq = 0
    with open(path, "a", buffering=1 << 16) as fh:
        while True:
            now = time.time()
            elapsed = now - start
            if elapsed >= seconds:
                break
            due = int(elapsed * rate)
            if due > seq:
                iso = dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="milliseconds")
                out = []
                while seq < due:
                    seq += 1
                    out.append(shapes[seq % len(shapes)].format(iso=iso, seq=seq, ts=now, m=seq % 997) + "\n")
                fh.write("".join(out))
                fh.flush()
            time.sleep(0.01)


def start_writer(path: str, rate: float, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--writer", path, "--rate", str(rate),
                             "--seconds", str(seconds)])


# --------------------------------------------------------------------------- pipeline


async def pipeline(rate: float, seconds: float) -> dict:
    from backends.sources.logs import LogHub, LogSpec

    tmp = tempfile.mkdtemp(prefix="wr-bench-")
    path = os.path.join(tmp, "app.log")
    Path(path).write_text("")  # noqa: ASYNC240 - set-up before measuring
    hub = LogHub([LogSpec(name="app", path=path)])
    delays: list[float] = []
    handled = [0]

    def on_lines(lines):
        handled[0] += len(lines)
        m = _MARK.search(lines[-1].text)
        if m:
            delays.append(time.time() - float(m.group(2)))

    hub.subscribe(on_lines)
    await hub.start()
    await asyncio.sleep(0.3)
    writer = start_writer(path, rate, seconds)
    c0, w0 = time.process_time(), time.monotonic()
    while writer.poll() is None:  # noqa: ASYNC110 - polling a child process
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.6)  # let the last lines in
    cpu = time.process_time() - c0
    wall = time.monotonic() - w0
    with open(path, "rb") as fh:  # noqa: ASYNC230 - after measuring
        written = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    size = os.path.getsize(path)  # noqa: ASYNC240
    await hub.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "rate": rate,
        "written": written,
        "handled": handled[0],
        "lines_per_s": handled[0] / seconds,
        "cpu_percent": 100.0 * cpu / wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "delay_p50_ms": 1000 * statistics.median(delays) if delays else None,
        "delay_max_ms": 1000 * max(delays) if delays else None,
        "log_bytes_per_s": size / seconds,
    }


# --------------------------------------------------------------------------- widget app


def app_main(path: str, seconds: float, stats_path: str) -> None:
    """The tiny Textual app run inside tmux: a LogTail fed by a LogHub following `path`."""
    import gc

    from textual.app import App, ComposeResult

    from backends.sources.logs import LogHub, LogSpec
    from widgets.logs import LogTail

    screen_delays: list[float] = []
    keys: list[tuple[float, float]] = []  # (handled, painted) wall times
    gc_stats = {"start": 0.0, "counting": False, "runs": [0, 0, 0], "seconds": [0.0, 0.0, 0.0]}

    def on_gc(phase: str, info: dict) -> None:
        # time spent collecting garbage while measuring (count, seconds per generation)
        if not gc_stats["counting"]:
            return
        if phase == "start":
            gc_stats["start"] = time.perf_counter()
        else:
            gen = info["generation"]
            gc_stats["runs"][gen] += 1
            gc_stats["seconds"][gen] += time.perf_counter() - gc_stats["start"]

    gc.callbacks.append(on_gc)

    class BenchTail(LogTail):
        def _append(self, pending):
            super()._append(pending)
            if self.following and self.rows:
                newest = self.rows[-1]
                m = _MARK.search(newest.text)
                if m:
                    ts = float(m.group(2))
                    self.call_after_refresh(lambda: screen_delays.append(time.time() - ts))

        def action_toggle_follow(self) -> None:
            handled = time.time()
            super().action_toggle_follow()
            self.call_after_refresh(lambda: keys.append((handled, time.time())))

    class BenchApp(App):
        CSS = "Screen { layout: vertical; } LogTail { border: round $primary; }" if not os.environ.get("WARROOM_BENCH_NOBORDER") else ""

        def compose(self) -> ComposeResult:
            yield BenchTail(id="tail")

        async def on_mount(self) -> None:
            tail = self.query_one(BenchTail)
            tail.focus()
            self.hub = LogHub([LogSpec(name="app", path=path)])
            self.hub.subscribe(tail.add_lines)
            await self.hub.start()
            self.c0, self.w0 = time.process_time(), time.monotonic()
            gc_stats["counting"] = True
            self.set_timer(seconds, self.finish)

        async def finish(self) -> None:
            cpu = time.process_time() - self.c0
            wall = time.monotonic() - self.w0
            gc_stats["counting"] = False
            tail = self.query_one(BenchTail)
            await self.hub.stop()
            Path(stats_path).write_text(json.dumps({  # noqa: ASYNC240 - at exit
                "cpu_percent": 100.0 * cpu / wall,
                "wall": wall,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "received": tail.received,
                "renders": tail.renders,
                "screen_delays": screen_delays,
                "keys": keys,
                "gc_runs": gc_stats["runs"],
                "gc_seconds": gc_stats["seconds"],
            }))
            self.exit()

    profile = os.environ.get("WARROOM_BENCH_PROFILE")
    if profile:
        import cProfile

        cProfile.runctx("BenchApp().run()", globals(), locals(), profile)
    else:
        BenchApp().run()


def widget(rate: float, seconds: float, *, width: int = 120, height: int = 40,
           key_every: float = 2.0) -> dict | None:
    if not shutil.which("tmux") or not shutil.which("script"):
        print("  (tmux or script not installed: widget benchmark skipped)")
        return None
    tmp = tempfile.mkdtemp(prefix="wr-bench-ui-")
    path = os.path.join(tmp, "app.log")
    Path(path).write_text("")
    stats = os.path.join(tmp, "stats.json")
    typescript = os.path.join(tmp, "typescript")
    session = f"wr-bench-{os.getpid()}-{int(rate)}"
    app_cmd = f"{sys.executable} {__file__} --app {path} --seconds {seconds + 1.5} --stats {stats}"
    inner = f"script -q -f -c {json.dumps(app_cmd)} {typescript}"
    env = dict(os.environ)
    env.pop("TMUX", None)
    subprocess.run(["tmux", "-L", session, "new-session", "-d", "-s", session, "-x", str(width), "-y", str(height),
                    inner], check=True, env=env)
    sends: list[float] = []
    try:
        time.sleep(1.5)  # app start-up
        size0 = os.path.getsize(typescript) if os.path.exists(typescript) else 0
        writer = start_writer(path, rate, seconds)
        t_start = time.monotonic()
        next_key = t_start + key_every if key_every > 0 else float("inf")
        while writer.poll() is None:
            # every `key_every` s: pause, and resume 0.3 s later (each key's latency is measured)
            if time.monotonic() >= next_key and time.monotonic() - t_start < seconds - 1:
                for _ in range(2):
                    sends.append(time.time())
                    subprocess.run(["tmux", "-L", session, "send-keys", "-t", session, "p"], check=False)
                    time.sleep(0.3)
                next_key += key_every
            time.sleep(0.02)
        t_written = time.monotonic() - t_start
        size1 = os.path.getsize(typescript)
        deadline = time.monotonic() + 30
        while not os.path.exists(stats) and time.monotonic() < deadline:
            time.sleep(0.1)
        profile = os.environ.get("WARROOM_BENCH_PROFILE")
        while profile and not os.path.exists(profile) and time.monotonic() < deadline:
            time.sleep(0.1)  # cProfile writes its file after the app exits
    finally:
        subprocess.run(["tmux", "-L", session, "kill-server"], check=False, capture_output=True)
        sock = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}" / session
        sock.unlink(missing_ok=True)
    if not os.path.exists(stats):
        print("  the app did not write its stats")
        return None
    st = json.loads(Path(stats).read_text())
    log_size = os.path.getsize(path)
    term_bps = (size1 - size0) / t_written
    keys = st["keys"]
    key_lat = [1000 * (h - s) for s, (h, _p) in zip(sends, keys, strict=False)]
    key_paint = [1000 * (p - s) for s, (_h, p) in zip(sends, keys, strict=False)]
    delays = st["screen_delays"]
    shutil.rmtree(tmp, ignore_errors=True)
    # while paused (every other key) the newest line is not shown: delays only while following
    return {
        "rate": rate,
        "lines_per_s": st["received"] / seconds,
        "cpu_percent": st["cpu_percent"],
        "peak_rss_mb": st["peak_rss_mb"],
        "renders_per_s": st["renders"] / st["wall"],
        "gc_percent": 100.0 * sum(st["gc_seconds"]) / st["wall"],
        "gc_runs_g0_g1_g2": "/".join(str(n) for n in st["gc_runs"]),
        "gc_ms_g0_g1_g2": "/".join(f"{1000 * t:.0f}" for t in st["gc_seconds"]),
        "term_bytes_per_s": term_bps,
        "log_bytes_per_s": log_size / seconds,
        "term_over_log": term_bps / max(1.0, log_size / seconds),
        "screen_delay_p50_ms": 1000 * statistics.median(delays) if delays else None,
        "screen_delay_p95_ms": 1000 * sorted(delays)[int(0.95 * (len(delays) - 1))] if delays else None,
        "screen_delay_max_ms": 1000 * max(delays) if delays else None,
        "keys_sent": len(sends),
        "keys_handled": len(keys),
        "key_handled_p50_ms": statistics.median(key_lat) if key_lat else None,
        "key_handled_max_ms": max(key_lat) if key_lat else None,
        "key_painted_p50_ms": statistics.median(key_paint) if key_paint else None,
        "key_painted_max_ms": max(key_paint) if key_paint else None,
    }


# --------------------------------------------------------------------------- main


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds per run (default 60)")
    ap.add_argument("--rates", default="200,10000", help="lines per second, comma separated")
    ap.add_argument("--only", choices=("pipeline", "widget"), default=None)
    ap.add_argument("--size", default="120x40", help="tmux window for the widget run (default 120x40)")
    ap.add_argument("--key-every", type=float, default=2.0,
                    help="seconds between pause/resume key pairs in the widget run (0: no keys; default 2)")
    ap.add_argument("--writer", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--app", help=argparse.SUPPRESS)
    ap.add_argument("--stats", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.writer:
        writer_main(args.writer, args.rate, args.seconds)
        return
    if args.app:
        app_main(args.app, args.seconds, args.stats)
        return
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    width, height = (int(x) for x in args.size.lower().split("x"))
    print(f"warroom logs benchmark: {args.seconds:g} s per run, {os.cpu_count()} CPUs")
    for rate in rates:
        if args.only in (None, "pipeline"):
            print(f"\npipeline @ {rate:,.0f} lines/s")
            r = asyncio.run(pipeline(rate, args.seconds))
            for k, v in r.items():
                print(f"  {k:22s} {_fmt(v)}")
        if args.only in (None, "widget"):
            print(f"\nwidget (LogTail in tmux {width}x{height}) @ {rate:,.0f} lines/s")
            r = widget(rate, args.seconds, width=width, height=height, key_every=args.key_every)
            if r:
                for k, v in r.items():
                    print(f"  {k:22s} {_fmt(v)}")


if __name__ == "__main__":
    main()
