"""The flight recorder's cost: CPU overhead on the live sandbox, MB per hour, replay open time.

Starts `warroom demo --stack-only --ports auto` (benchmarks/soak.py's Sandbox: its own state
dir and ports, its own process group), then runs the console in THIS process, headless
(Textual's `run_test`, 160x48), on the sandbox config. After a warm-up it alternates phases
of `--phase` seconds without and with the recorder attached (`--rounds` of each, off first)
and reports:

- CPU: this process's CPU time (user + system, every thread: the console, the engine and the
  recorder's writer) per wall second in each phase, and the overhead of recording
  (on / off - 1; the issue's budget: <= 10 %);
- size: the recording's bytes per hour of the demo's traffic (file size over the phase's
  wall time; budget <= 5 MB/h), and its uncompressed JSON for comparison;
- replay: a 1 h recording synthesised from the snapshots and log lines captured in the
  recording phases (the real shapes, re-timed to fill an hour at the cadence seen), then
  the time to open it (`Recording` + `ReplayEngine`: index, marks, the first keyframe),
  the time until the replay console shows its first snapshot (`ReplayApp`, headless), and
  a jump to the end (budget for opening: <= 1 s).

Usage: .venv/bin/python benchmarks/record.py [--phase 60] [--rounds 2] [--warmup 20]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import resource
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.soak import Sandbox  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--phase", type=float, default=60.0, help="seconds of each phase (default 60)")
    p.add_argument("--rounds", type=int, default=2, help="phases without and with recording (default 2 each)")
    p.add_argument("--warmup", type=float, default=20.0, help="seconds before the first phase (default 20)")
    p.add_argument("--hours", type=float, default=1.0, help="length of the synthesised recording (default 1)")
    return p.parse_args(argv)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def raw_bytes(path: Path) -> tuple[int, int]:
    """(the batches' JSON, uncompressed; the batches as stored)"""
    import sqlite3
    import zlib

    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = [d for (d,) in con.execute("SELECT data FROM batch")]
    finally:
        con.close()
    return sum(len(zlib.decompress(d)) for d in rows), sum(len(d) for d in rows)


async def live(args: argparse.Namespace, config_path: str, out_dir: Path) -> dict:
    from backends.config import load_config
    from backends.engine.core import build_engine
    from backends.engine.recorder import Recorder
    from sandbox.stack import DEV_KEYS, OWNER_KEY_ENV
    from tui.app import WarroomApp

    os.environ.setdefault(OWNER_KEY_ENV, DEV_KEYS[0])
    config = load_config(config_path)
    engine = build_engine(config, read_only=True)
    app = WarroomApp(engine, config=config)
    captured: list[tuple[str, object]] = []  # what the recording phases saw: for the 1 h synthesis
    phases: list[dict] = []
    async with app.run_test(size=(160, 48)) as pilot:
        t_end = time.monotonic() + args.warmup
        while time.monotonic() < t_end:
            await pilot.pause(0.5)
        print(f"console up on the sandbox: {len(engine.monitor.sources)} sources; warm-up {args.warmup:g}s done",
              flush=True)
        for i in range(args.rounds * 2):
            recording = i % 2 == 1
            rec = None
            unsub = []
            if recording:
                rec = Recorder(out_dir / f"phase{i}.sqlite", config=config)
                rec.attach(engine)
                unsub.append(engine.monitor.subscribe(lambda s: captured.append(("snapshot", s))))
                if engine.logs is not None:
                    unsub.append(engine.logs.subscribe(lambda ls: captured.append(("log", list(ls)))))
            c0, w0 = cpu_s(), time.monotonic()
            while time.monotonic() - w0 < args.phase:
                await pilot.pause(0.5)
            c1, w1 = cpu_s(), time.monotonic()
            phase = {"recording": recording, "cpu": (c1 - c0) / (w1 - w0), "wall": w1 - w0}
            if rec is not None:
                for u in unsub:
                    u()
                rec.close()
                phase["writer_cpu"] = rec.cpu_s / (w1 - w0)
                phase["bytes"] = rec.path.stat().st_size
                phase["raw"], phase["data"] = raw_bytes(rec.path)
                phase["records"] = rec.records
            phases.append(phase)
            print(f"phase {i + 1}: {'recording' if recording else 'not recording'}: "
                  f"CPU {phase['cpu'] * 100:.1f} % of a core"
                  + (f", {phase['records']} records, {phase['bytes'] / 1024:.0f} KiB" if recording else ""),
                  flush=True)
    return {"phases": phases, "captured": captured, "config": config}


def synthesise(captured: list[tuple[str, object]], config, path: Path, hours: float) -> float:
    """A recording of `hours` from the captured snapshots and log batches, re-timed; seconds it took."""
    from backends.engine.recorder import Recorder
    from backends.model import Snapshot

    snaps = [(k, v) for k, v in captured if k in ("snapshot", "log")]
    first = next(v.at for k, v in snaps if k == "snapshot")
    last = max(v.at for k, v in snaps if k == "snapshot")
    span = max(1.0, (last - first).total_seconds())
    clock = [first]
    t0 = time.monotonic()
    rec = Recorder(path, config=config, max_age=10 * 365 * 86400.0, clock=lambda: clock[0]).start()
    start = first
    total = hours * 3600.0
    n = 0
    while (start - first).total_seconds() < total:
        off = start - first
        last_at = first
        for kind, v in snaps:
            if kind == "snapshot":
                assert isinstance(v, Snapshot)
                last_at = v.at
                at = v.at + off
                readings = {k: tuple(dataclasses.replace(r, at=r.at + off) for r in rs) for k, rs in v.readings.items()}
                clock[0] = at
                rec.on_snapshot(dataclasses.replace(v, at=at, readings=readings))
            else:
                clock[0] = last_at + off
                rec.on_log_lines([dataclasses.replace(ln, at=ln.at + off) for ln in v])  # type: ignore[union-attr]
            n += 1
            if (clock[0] - first).total_seconds() >= total:
                break
        start = first + off + timedelta(seconds=span + 2.0)
    rec.close(600)
    return time.monotonic() - t0


async def replay_figures(path: Path, small: Path) -> dict:
    """Open times of the 1 h recording (and, for the console, of a phase's recording: Textual's own start)."""
    from backends.engine.recorder import Recording
    from backends.engine.replay import ReplayEngine
    from tui.screens.replay import ReplayApp

    t0 = time.perf_counter()
    r = Recording(path)
    t_index = time.perf_counter() - t0
    r.close()
    t0 = time.perf_counter()
    engine = ReplayEngine(path)
    t_engine = time.perf_counter() - t0
    span = (engine.end_at - engine.start_at).total_seconds()
    t0 = time.perf_counter()
    engine.seek(engine.end_at)
    t_jump = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.seek(engine.start_at + (engine.end_at - engine.start_at) / 2)
    t_back = time.perf_counter() - t0
    await engine.stop()
    t_console = {}
    for name, p in (("small", small), ("hour", path)):
        t0 = time.perf_counter()
        app = ReplayApp(p, tick_s=0)
        async with app.run_test(size=(160, 48)) as pilot:
            while not (app.snapshot is not None and app.snapshot.readings and app.timeline() is not None):
                await pilot.pause(0.01)
            t_console[name] = time.perf_counter() - t0
    return {"index": t_index, "engine": t_engine, "console": t_console["hour"], "console_small": t_console["small"],
            "jump_end": t_jump, "jump_back": t_back, "span": span, "batches": len(r.batches), "marks": len(r.marks)}


def main(argv=None) -> int:
    args = parse_args(argv)
    sandbox = Sandbox()
    tmp = tempfile.TemporaryDirectory(prefix="warroom-record-bench-")
    out_dir = Path(tmp.name)
    try:
        config_path = sandbox.start()
        print(f"sandbox: {config_path}", flush=True)
        result = asyncio.run(live(args, config_path, out_dir))
    finally:
        sandbox.stop()
    phases = result["phases"]
    off = [p["cpu"] for p in phases if not p["recording"]]
    on = [p for p in phases if p["recording"]]
    cpu_off = sum(off) / len(off)
    cpu_on = sum(p["cpu"] for p in on) / len(on)
    wall_on = sum(p["wall"] for p in on)
    mb_h = sum(p["bytes"] for p in on) / wall_on * 3600 / 1e6
    data_h = sum(p["data"] for p in on) / wall_on * 3600 / 1e6
    raw_h = sum(p["raw"] for p in on) / wall_on * 3600 / 1e6
    print()
    writer = sum(p["writer_cpu"] for p in on) / len(on)
    print(f"CPU, console on the live sandbox: {cpu_off * 100:.1f} % of a core without recording, "
          f"{cpu_on * 100:.1f} % with: {(cpu_on / cpu_off - 1) * 100:+.1f} % (A/B of whole phases: the "
          f"sandbox and the shared box make this noisy)")
    print(f"CPU of the recorder's writer thread itself: {writer * 100:.2f} % of a core = "
          f"{writer / max(1e-9, cpu_on - writer) * 100:.1f} % of the console's own CPU (budget <= 10 %)")
    print(f"size, live: {data_h:.2f} MB per hour of compressed batches, the file {mb_h:.2f} MB/h "
          f"(a {args.phase:g}s phase's file, SQLite's fixed pages included); uncompressed JSON "
          f"{raw_h:.1f} MB/h (zlib: x{raw_h / data_h:.1f})")
    path = out_dir / "hour.sqlite"
    took = synthesise(result["captured"], result["config"], path, args.hours)
    size = path.stat().st_size
    small = next(p for p in sorted(out_dir.glob("phase*.sqlite")))
    fig = asyncio.run(replay_figures(path, small))
    print(f"synthesised {fig['span'] / 3600:.2f} h recording from the captured shapes in {took:.1f}s: "
          f"{size / 1e6:.2f} MB ({size / 1e6 / (fig['span'] / 3600):.2f} MB/h; budget <= 5 MB/h), "
          f"{fig['batches']} batches, {fig['marks']} marks")
    print(f"replay open: index {fig['index'] * 1000:.0f} ms, engine (first keyframe shown) "
          f"{fig['engine'] * 1000:.0f} ms, console's first snapshot {fig['console'] * 1000:.0f} ms "
          f"(budget <= 1 s; on a {args.phase:g}s recording {fig['console_small'] * 1000:.0f} ms: the console's own start); jump to the end {fig['jump_end'] * 1000:.0f} ms, back to the middle "
          f"{fig['jump_back'] * 1000:.0f} ms")
    if os.environ.get("KEEP"):
        print("kept", out_dir)
    else:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
