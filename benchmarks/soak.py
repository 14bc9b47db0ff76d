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
    return p.parse_args(argv)


# --------------------------------------------------------------------------- sandbox


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
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.tmp.cleanup()


# --------------------------------------------------------------------------- measure


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
    from backends.engine import build_engine
    from sandbox.stack import DEV_KEYS, OWNER_KEY_ENV
    from tui.app import WarroomApp
    from tui.screens.kiosk import KioskScreen

    os.environ.setdefault(OWNER_KEY_ENV, DEV_KEYS[0])
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
                next_sample = now + args.sample_every
            await pilot.pause(0.5)
        if undo_at is not None:
            await sandbox.drill(active, undo=True)
        await pilot.pause(2.0)
        end = sample()
        samples.append((time.monotonic(), end))
        print(fmt(t0, end, "<- end"), flush=True)
        polls = sum(engine.monitor.poll_counts.values())
        per_source = polls / max(1, len(engine.monitor.poll_counts))
        await app.stop_engine()  # no snapshot or log batch may arrive while the screens close

    growth = end["rss_mb"] - start["rss_mb"]
    mid = samples[len(samples) // 2][1]
    first_half = mid["rss_mb"] - start["rss_mb"]
    second_half = end["rss_mb"] - mid["rss_mb"]
    print("\n== soak summary ==")
    print(f"duration {args.minutes:g} min; {drills} drills injected and undone; "
          f"{shown['snapshots']} snapshots; {polls} polls ({per_source:.0f} per source = "
          f"{per_source * 2 / 3600:.1f} h at a 2 s refresh); alarms {screen.alarms}; "
          f"views shown {len(shown['views'])}")
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


def main(argv=None) -> int:
    args = parse_args(argv)
    sandbox = Sandbox()
    t = time.monotonic()
    try:
        config_path = sandbox.start()
        print(f"sandbox up in {time.monotonic() - t:.1f}s: {config_path}", flush=True)
        return asyncio.run(soak(args, config_path, sandbox))
    finally:
        sandbox.stop()


if __name__ == "__main__":
    sys.exit(main())
