"""Soak: the kiosk on the sandbox for a long time, with drills; does the process stay flat?

Starts `warroom demo --stack-only` (its own state dir and ports, in its own process
group), then runs the console in kiosk mode in THIS process, headless (Textual's
`run_test`, 160x48), on the sandbox config with every source's poll interval cut to
`--refresh` seconds (a day's worth of polls goes faster), the detail views cycling
every `--cycle` seconds. Every `--drill-every` seconds it injects the next fault drill
(`warroom drill NAME --no-watch`) and undoes it half a period later.

Prints RSS, open file descriptors, threads and asyncio tasks of the kiosk process at
start (after a warm-up), every `--sample-every` seconds and at the end, plus what the
kiosk did (snapshots shown, alarms, view changes). Pass: RSS growth from the warm
start to the end < 10 MB, and the second half grows less than the first ("flat");
fds and threads back to their start level (+-2).

Diagnostics: `--objects` prints, at the start sample and every sample after it, glibc
malloc's heap (in use / free: fragmentation shows as RSS growing with "in use" flat),
pymalloc's block count and the top growing object types (gc.get_objects() histogram).
`--tracemalloc [FRAMES]` adds tracemalloc (25 frames), started at the start sample, and the
top 15 growing allocation sites since then (tracebacks grouped by the allocating line and
the innermost frame of this project that led to it). Tracing slows the kiosk (fewer
snapshots) and adds its own memory to RSS: read its figures, not RSS, in such a run.

Usage: .venv/bin/python benchmarks/soak.py [--minutes 30] [--refresh 0.5] [--drill-every 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DRILLS = ("queue-flood", "listener-crash", "breaker-storm", "rpc-outage", "api-down",
          "listener-hang", "gas-low", "pool-exhaustion")
LIMIT_MB = 10.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="how long to soak (default 30)")
    p.add_argument("--refresh", type=float, default=0.5, help="poll interval of every source (s)")
    p.add_argument("--cycle", type=float, default=5.0, help="kiosk view cycle period (s)")
    p.add_argument("--drill-every", type=float, default=60.0, help="inject a drill this often (s)")
    p.add_argument("--sample-every", type=float, default=60.0, help="print a sample this often (s)")
    p.add_argument("--engine-only", action="store_true",
                   help="diagnostic: run the engine without the kiosk (whose memory is it?)")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the start sample")
    p.add_argument("--objects", action="store_true",
                   help="diagnostic: per sample, malloc/pymalloc figures and the growing object types")
    p.add_argument("--tracemalloc", type=int, nargs="?", const=25, default=0, metavar="FRAMES",
                   help="diagnostic: --objects plus the top growing allocation sites (default 25 frames)")
    p.add_argument("--top", type=int, default=15, help="how many sites/types the diagnostics print")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- sandbox


def stop_group(proc: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM the process group of a process we started (background jobs ignore SIGINT),
    SIGKILL it if it has not exited within `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class Sandbox:
    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="warroom-soak-")
        self.env = dict(os.environ, XDG_STATE_HOME=self.tmp.name, PYTHONUNBUFFERED="1")
        self.proc: subprocess.Popen | None = None
        self.config_path = ""

    def start(self, timeout: float = 120.0) -> str:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tui.cli", "demo", "--stack-only", "--ports", "auto"],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        lines = []
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.match(r"config:\s+(\S+)", line)
            if m:
                self.config_path = m.group(1)
                # keep draining its output so the sandbox never blocks on a full pipe
                import threading

                threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
                return self.config_path
        self.stop()
        raise SystemExit("sandbox did not start:\n" + "".join(lines[-20:]))

    async def drill(self, name: str, undo: bool = False) -> int:
        argv = [sys.executable, "-m", "tui.cli", "drill", name] + (["--undo"] if undo else ["--no-watch"])
        proc = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, env=self.env,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        try:
            return await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return -1

    def stop(self) -> None:
        stop_group(self.proc, 30)
        self.tmp.cleanup()


# --------------------------------------------------------------------------- measure


PROJECT_DIRS = tuple(str(ROOT / d) + os.sep for d in ("backends", "widgets", "tui", "themes", "sandbox"))


class Tracer:
    """What grows, against the start sample (--objects, --tracemalloc).

    Always: glibc malloc's bytes in use / free in its arenas (mallinfo2), pymalloc's block
    count, and the gc object histogram diff. With `frames`: tracemalloc, started at the
    start sample (tracing from the first frame slows a busy kiosk too much to keep up with
    its polls), and the top growing allocation sites since then.
    """

    def __init__(self, top: int = 15, frames: int = 0) -> None:
        import tracemalloc

        self.tm = tracemalloc
        self.top = top
        self.frames = frames
        self.base = None
        self.base_types: dict[str, int] = {}
        self.base_mem: dict[str, float] = {}

    def _snapshot(self):
        snap = self.tm.take_snapshot()
        return snap.filter_traces((
            self.tm.Filter(False, self.tm.__file__),
            self.tm.Filter(False, "<frozen importlib._bootstrap>"),
            self.tm.Filter(False, "<frozen importlib._bootstrap_external>"),
            self.tm.Filter(False, "<unknown>"),
        ))

    def _types(self) -> dict[str, int]:
        """The gc histogram; also notes lru_cache sizes and widgets no longer in a DOM."""
        import functools
        import gc
        from collections import Counter

        gc.collect()
        objects = gc.get_objects()
        self.caches = {}
        self.detached = Counter()
        try:
            from textual.widget import Widget
        except ImportError:  # pragma: no cover
            Widget = ()  # noqa: N806
        for o in objects:
            if isinstance(o, functools._lru_cache_wrapper):
                name = f"{getattr(o, '__module__', '?')}.{getattr(o, '__qualname__', '?')}"
                self.caches[name] = self.caches.get(name, 0) + o.cache_info().currsize
            elif Widget and isinstance(o, Widget) and not o.is_attached:
                self.detached[type(o).__qualname__] += 1
        out = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)
        del objects
        return out

    @staticmethod
    def _pymalloc() -> dict[str, float]:
        """pymalloc's arenas (sys._debugmallocstats, which writes to the C stderr)."""
        out: dict[str, float] = {}
        try:
            with tempfile.TemporaryFile() as tmp:
                sys.stderr.flush()
                saved = os.dup(2)
                try:
                    os.dup2(tmp.fileno(), 2)
                    sys._debugmallocstats()
                finally:
                    os.dup2(saved, 2)
                    os.close(saved)
                tmp.seek(0)
                text = tmp.read().decode(errors="replace")
        except (AttributeError, OSError):
            return out
        for key, pattern in (("arenas", r"# arenas allocated current\s*=\s*([\d,]+)"),
                             ("in_blocks", r"# bytes in allocated blocks\s*=\s*([\d,]+)"),
                             ("avail", r"# bytes in available blocks\s*=\s*([\d,]+)"),
                             ("unused", r"unused pools \* \d+ bytes\s*=\s*([\d,]+)")):
            m = re.search(pattern, text)
            if m:
                out[key] = int(m.group(1).replace(",", "")) / (1 if key == "arenas" else 2**20)
        return out

    def _mem(self) -> dict[str, float]:
        out = {"blocks": float(sys.getallocatedblocks()), **self._pymalloc()}
        try:
            import ctypes

            class MallInfo2(ctypes.Structure):
                _fields_ = [(n, ctypes.c_size_t) for n in (
                    "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                    "uordblks", "fordblks", "keepcost")]

            libc = ctypes.CDLL("libc.so.6")
            libc.mallinfo2.restype = MallInfo2
            mi = libc.mallinfo2()
            out.update(heap=(mi.arena + mi.hblkhd) / 2**20, used=(mi.uordblks + mi.hblkhd) / 2**20,
                       free=mi.fordblks / 2**20)
        except (OSError, AttributeError):
            pass
        return out

    def _mem_line(self) -> str:
        m = self._mem()
        b = self.base_mem or m
        parts = [f"pymalloc blocks {m['blocks']:.0f} ({m['blocks'] - b['blocks']:+.0f})"]
        if "in_blocks" in m:
            parts[0] += (f", {m['arenas']:.0f} arenas ({m['arenas'] - b['arenas']:+.0f}): in blocks "
                         f"{m['in_blocks']:.1f} MB ({m['in_blocks'] - b['in_blocks']:+.1f}), free in pools "
                         f"{m['avail']:.1f} ({m['avail'] - b['avail']:+.1f}), unused pools "
                         f"{m['unused']:.1f} ({m['unused'] - b['unused']:+.1f})")
        if "heap" in m:
            parts.append(f"malloc heap {m['heap']:.1f} MB ({m['heap'] - b['heap']:+.1f}): "
                         f"in use {m['used']:.1f} ({m['used'] - b['used']:+.1f}), "
                         f"free {m['free']:.1f} ({m['free'] - b['free']:+.1f})")
        return "  " + "; ".join(parts)

    def start(self) -> str:
        self.base_types = self._types()
        self.base_caches = dict(self.caches)
        self.base_mem = self._mem()
        lines = [self._mem_line(), f"  gc objects {sum(self.base_types.values())}"]
        if self.frames:
            self.tm.start(self.frames)
            self.base = self._snapshot()
            lines.append(f"  tracemalloc started ({self.frames} frames)")
        return "\n".join(lines)

    @staticmethod
    def _key(tb) -> tuple[str, str]:
        """(allocating line, innermost project frame that led to it)."""
        alloc = f"{tb[-1].filename}:{tb[-1].lineno}"  # tracemalloc tracebacks: most recent last
        proj = next((f"{f.filename}:{f.lineno}" for f in reversed(tb)
                     if f.filename.startswith(PROJECT_DIRS)), "-")
        return alloc, proj

    def report(self) -> str:
        from collections import defaultdict

        lines = [self._mem_line()]
        types = self._types()
        if self.frames:
            snap = self._snapshot()
            cur, peak = self.tm.get_traced_memory()
            size: dict = defaultdict(int)
            count: dict = defaultdict(int)
            example: dict = {}
            for st in snap.compare_to(self.base, "traceback"):
                if st.size_diff == 0 and st.count_diff == 0:
                    continue
                k = self._key(st.traceback)
                size[k] += st.size_diff
                count[k] += st.count_diff
                if k not in example or st.size_diff > example[k][0]:
                    example[k] = (st.size_diff, st.traceback)
            total = sum(size.values())
            lines.append(f"  tracemalloc: traced {cur / 2**20:.1f} MB (peak {peak / 2**20:.1f}, own "
                         f"{self.tm.get_tracemalloc_memory() / 2**20:.1f}); growth since start "
                         f"{total / 2**20:+.2f} MB; top {self.top} growing sites:")
            for k in sorted(size, key=size.get, reverse=True)[: self.top]:
                alloc, proj = (_short(x) for x in k)
                lines.append(f"    {size[k] / 1024:+9.1f} KiB {count[k]:+7d} blocks  {alloc}  <- {proj}")
                chain = [_short(f"{f.filename}:{f.lineno}") for f in example[k][1]][-6:]
                lines.append("        " + " > ".join(chain))
        diff = {t: n - self.base_types.get(t, 0) for t, n in types.items()}
        total_types = sum(types.values())
        lines.append(f"  gc objects {total_types} ({total_types - sum(self.base_types.values()):+d}); "
                     f"top growing types:")
        for t in sorted(diff, key=diff.get, reverse=True)[: self.top]:
            if diff[t] <= 0:
                break
            lines.append(f"    {diff[t]:+8d}  {t} ({types[t]})")
        grown = {k: n - self.base_caches.get(k, 0) for k, n in self.caches.items()}
        grown = {k: d for k, d in grown.items() if d > 0}
        if grown:
            lines.append("  lru_caches that grew: " + ", ".join(
                f"{_short(k)} {self.caches[k]} ({d:+d})"
                for k, d in sorted(grown.items(), key=lambda kv: -kv[1])[: self.top]))
        if self.detached:
            lines.append("  widgets alive outside the DOM: " + ", ".join(
                f"{k} {n}" for k, n in self.detached.most_common(self.top)))
        return "\n".join(lines)


def _short(path: str) -> str:
    for prefix in (str(ROOT) + os.sep, *(p + os.sep for p in sys.path if p.endswith("site-packages"))):
        if path.startswith(prefix):
            return path[len(prefix):]
    return path.replace(sys.prefix, "~")


def sample() -> dict:
    import psutil

    p = psutil.Process()
    return {"rss_mb": p.memory_info().rss / 2**20, "fds": p.num_fds(), "threads": p.num_threads(),
            "tasks": len(asyncio.all_tasks())}


def fmt(t0: float, s: dict, extra: str = "") -> str:
    return (f"{(time.monotonic() - t0) / 60:6.1f} min  RSS {s['rss_mb']:7.1f} MB  fds {s['fds']:4d}  "
            f"threads {s['threads']:3d}  tasks {s['tasks']:4d}  {extra}")


async def soak(args: argparse.Namespace, config_path: str, sandbox: Sandbox) -> int:
    from backends.config import load_config
    from backends.engine.core import build_engine
    from sandbox.stack import DEV_KEYS, OWNER_KEY_ENV
    from tui.app import WarroomApp
    from tui.screens.kiosk import KioskScreen

    os.environ.setdefault(OWNER_KEY_ENV, DEV_KEYS[0])
    tracer = Tracer(args.top, args.tracemalloc) if args.tracemalloc or args.objects else None
    config = load_config(config_path)
    engine = build_engine(config, read_only=True)
    for src in engine.monitor.sources.values():
        with contextlib.suppress(AttributeError):
            src.interval = min(src.interval, args.refresh)
    app = WarroomApp(engine, config=config, kiosk=True)
    shown = {"snapshots": 0, "views": set()}
    engine.monitor.subscribe(lambda _s: shown.__setitem__("snapshots", shown["snapshots"] + 1))

    if args.engine_only:
        app = _EngineOnly(engine)
    async with app.run_test(size=(160, 48)) as pilot:
        if args.engine_only:
            await engine.start()
        elif not isinstance(app.screen, KioskScreen):  # older app without kiosk wiring
            await app.push_screen(KioskScreen())
        screen = app.screen
        if isinstance(screen, KioskScreen):
            screen.set_cycle(args.cycle)
        else:
            screen.alarms = 0
            screen.current_view = ""
        t0 = time.monotonic()
        print(f"kiosk up; {len(engine.monitor.sources)} sources at {args.refresh:g}s; "
              f"soaking {args.minutes:g} min", flush=True)
        first = sample()
        print(fmt(t0, first, "(first frame)"), flush=True)
        while time.monotonic() - t0 < min(args.warmup, args.minutes * 60 / 4):
            await pilot.pause(1.0)
        start = sample()
        print(fmt(t0, start, "<- start (after warm-up)"), flush=True)
        if tracer is not None:
            print(tracer.start(), flush=True)
        samples = [(time.monotonic(), start)]
        end_at = t0 + args.minutes * 60
        next_sample = time.monotonic() + args.sample_every
        next_drill = time.monotonic() + 5
        undo_at: float | None = None
        active = ""
        drills = 0
        i = 0
        while time.monotonic() < end_at:
            now = time.monotonic()
            shown["views"].add(screen.current_view)
            if undo_at is not None and now >= undo_at:
                await sandbox.drill(active, undo=True)
                undo_at = None
            if now >= next_drill and undo_at is None and now + args.drill_every / 2 < end_at:
                active = DRILLS[i % len(DRILLS)]
                i += 1
                rc = await sandbox.drill(active)
                drills += 1
                undo_at = time.monotonic() + args.drill_every / 2
                next_drill = time.monotonic() + args.drill_every
                print(f"{(time.monotonic() - t0) / 60:6.1f} min  drill {active} (rc {rc}); "
                      f"findings now {len(engine.monitor.snapshot.findings)}", flush=True)
            if now >= next_sample:
                s = sample()
                samples.append((now, s))
                print(fmt(t0, s, f"snapshots {shown['snapshots']}  alarms {screen.alarms}  "
                                 f"findings {len(engine.monitor.snapshot.findings)}"), flush=True)
                if tracer is not None:
                    print(tracer.report(), flush=True)
                next_sample = now + args.sample_every
            await pilot.pause(0.5)
        if undo_at is not None:
            await sandbox.drill(active, undo=True)
        await pilot.pause(2.0)
        end = sample()
        samples.append((time.monotonic(), end))
        print(fmt(t0, end, "<- end"), flush=True)
        if tracer is not None:
            print(tracer.report(), flush=True)
        polls = sum(engine.monitor.poll_counts.values())
        hub = getattr(engine, "logs", None)
        kept = (f"log lines kept {len(hub.buffer)}/{hub.buffer.maxlen}"
                if hub is not None and hasattr(hub, "buffer") else "no log hub")
        trims = getattr(app, "heap_trims", 0)
        per_source = polls / max(1, len(engine.monitor.poll_counts))
        watchdog = _watchdog(asyncio.get_running_loop(), 60.0)
        await app.stop_engine()  # no snapshot or log batch may arrive while the screens close
        print(f"engine stopped in {time.monotonic() - end_at:.1f}s after the end", flush=True)
    print("app closed", flush=True)
    watchdog.cancel()

    growth = end["rss_mb"] - start["rss_mb"]
    mid = samples[len(samples) // 2][1]
    first_half = mid["rss_mb"] - start["rss_mb"]
    second_half = end["rss_mb"] - mid["rss_mb"]
    print("\n== soak summary ==")
    print(f"duration {args.minutes:g} min; {drills} drills injected and undone; "
          f"{shown['snapshots']} snapshots; {polls} polls ({per_source:.0f} per source = "
          f"{per_source * 2 / 3600:.1f} h at a 2 s refresh); alarms {screen.alarms}; "
          f"views shown {len(shown['views'])}; {kept}; heap trims {trims}")
    print(f"RSS start {start['rss_mb']:.1f} MB -> end {end['rss_mb']:.1f} MB: growth {growth:+.1f} MB "
          f"(first half {first_half:+.1f}, second half {second_half:+.1f}); limit {LIMIT_MB:g} MB")
    print(f"fds {start['fds']} -> {end['fds']}; threads {start['threads']} -> {end['threads']}; "
          f"asyncio tasks {start['tasks']} -> {end['tasks']}")
    flat = second_half <= max(first_half, 0) + 2.0
    ok = (growth < LIMIT_MB and flat and abs(end["fds"] - start["fds"]) <= 2
          and end["threads"] <= start["threads"] + 2)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def _EngineOnly(engine):
    from textual.app import App

    class EngineOnly(App):
        async def stop_engine(self) -> None:
            await engine.stop()

    return EngineOnly()


def _watchdog(loop: asyncio.AbstractEventLoop, seconds: float):
    """If shutting down takes longer than `seconds`, print every pending asyncio task's stack."""
    import threading

    def dump() -> None:
        print(f"!! shutdown still running after {seconds:g}s; pending tasks:", flush=True)
        for task in list(asyncio.all_tasks(loop)):
            print(f"-- {task.get_name()}", flush=True)
            coro, depth = task.get_coro(), 0
            while coro is not None and depth < 30:  # follow the await chain down
                frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
                if frame is not None:
                    print(f"     {_short(frame.f_code.co_filename)}:{frame.f_lineno} {frame.f_code.co_name}",
                          flush=True)
                coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
                depth += 1

    timer = threading.Timer(seconds, dump)
    timer.daemon = True
    timer.start()
    return timer


def main(argv=None) -> int:
    args = parse_args(argv)
    sandbox = Sandbox()

    def terminated(signum, _frame) -> None:
        # killed by `timeout` or a CI step, or Ctrl-C (the headless app swallows the
        # KeyboardInterrupt): an exception raised here may be swallowed by whatever the
        # loop runs, so stop the sandbox (its own process group) and leave now
        print("soak: interrupted; stopping the sandbox", flush=True)
        sandbox.stop()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGINT, terminated)
    t = time.monotonic()
    try:
        config_path = sandbox.start()
        print(f"sandbox up in {time.monotonic() - t:.1f}s: {config_path}", flush=True)
        return asyncio.run(soak(args, config_path, sandbox))
    finally:
        sandbox.stop()


if __name__ == "__main__":
    sys.exit(main())
