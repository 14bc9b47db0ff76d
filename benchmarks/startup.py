"""Startup cost of the warroom command.

Prints:
- `warroom --help` wall time (median and max of N runs; target < 0.5 s);
- the console's time to first frame: the app is launched in a pseudo-terminal of
  160x48 (on examples/minimal.toml when it exists, else with no sources) and the
  clock stops when everything the first full frame shows (header, every pane title,
  footer) has been written to the terminal (target <= 0.5 s).

With --floor, a minimal Textual app (the same header line, eight bordered and titled
panes and a footer, nothing else) is timed the same way, in runs interleaved with the
console's: the floor this machine sets (importing Textual and drawing one frame), under
the same load. The machine is shared, so compare figures taken together.

Usage: .venv/bin/python benchmarks/startup.py [--runs N] [--config PATH] [--size 160x48] [--floor]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(rb"\x1b\[[0-9;?<>=$]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")
FRAME_MARKERS = ("1 Services", "7 Sources", "8 Logs", "Help", "Palette")


def bench_env(**extra: str) -> dict[str, str]:
    """The environment of the measured runs: bytecode is cached (outside the repo), as it is
    for an installed warroom; PYTHONDONTWRITEBYTECODE would make every run recompile ~400
    modules (about 1 s here). The user cache (the dataclass code warroom keeps between runs,
    backends/codecache.py) is one folder for all runs, as it is for an operator."""
    tmp = Path(tempfile.gettempdir())
    env = dict(os.environ, PYTHONPYCACHEPREFIX=str(tmp / "warroom-bench-pycache"),
               XDG_CACHE_HOME=str(tmp / "warroom-bench-cache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra)
    return env


def warroom_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "warroom"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("warroom")
    return [found] if found else [sys.executable, "-m", "tui.cli"]


def time_help(runs: int) -> list[float]:
    cmd = warroom_cmd() + ["--help"]
    out = []
    env = bench_env()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT, env=env)  # warm the cache
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                       env=env)
        out.append(time.perf_counter() - t0)
    return out


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


FLOOR_APP = """
from textual.app import App
from textual.binding import Binding
from textual.containers import Container
from textual.widgets import Footer, Static

TITLES = ("Services", "Findings", "Queues", "Breakers", "Chain", "Stuck orders", "Sources", "Logs")


class Floor(App):
    CSS = "#panes { layout: grid; grid-size: 3 3; } .slot { border: round $primary; }"
    BINDINGS = [Binding("question_mark", "help", "Help"), Binding("ctrl+p", "command_palette", "Palette"),
                Binding("q", "quit", "Quit")]

    def compose(self):
        yield Static(" warroom  local  op bench")
        with Container(id="panes"):
            for i, title in enumerate(TITLES):
                slot = Container(classes="slot")
                slot.border_title = f"{i + 1} {title}"
                yield slot
        yield Footer(show_command_palette=False)


Floor().run()
"""


def time_first_frame(config: str | None, cols: int, rows: int, limit: float = 20.0,
                     idle: float = 0.0, settle: float = 5.0,
                     cmd: list[str] | None = None) -> tuple[float, int, dict]:
    """Seconds from spawn to the first full frame, the bytes written until then, and,
    when `idle` > 0, the steady state over `idle` seconds after `settle` seconds:
    CPU % of one core and bytes/s written to the terminal. `cmd` replaces the console's
    command line (the floor app)."""
    if cmd is None:
        cmd = warroom_cmd() + (["--config", config] if config else [])
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    with tempfile.TemporaryDirectory() as tmp:
        env = bench_env(TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows),
                        XDG_CONFIG_HOME=tmp, XDG_STATE_HOME=tmp, HOME=tmp, WARROOM_OPERATOR="bench")
        env.pop("WARROOM_CONFIG", None)
        env.pop("NO_COLOR", None)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=tmp if not config else ROOT,
                                env=env, start_new_session=True, close_fds=True)
        os.close(slave)
        buf = b""
        seen = False
        elapsed = float("nan")
        try:
            while time.perf_counter() - t0 < limit:
                ready, _, _ = select.select([master], [], [], 0.05)
                if not ready:
                    if proc.poll() is not None:
                        break
                    continue
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                buf += chunk
                text = ANSI.sub(b"", buf).decode("utf-8", "replace")
                if all(m in text for m in FRAME_MARKERS):
                    elapsed = time.perf_counter() - t0
                    cpu_to_frame = _cpu_seconds(proc.pid)
                    seen = True
                    break
            steady: dict = {"cpu_to_frame": cpu_to_frame} if seen else {}
            if seen and idle > 0:
                _drain(master, settle)
                c0, w0 = _cpu_seconds(proc.pid), time.perf_counter()
                nbytes = _drain(master, idle)
                c1, w1 = _cpu_seconds(proc.pid), time.perf_counter()
                steady |= {"cpu_percent": 100.0 * (c1 - c0) / (w1 - w0), "bytes_per_s": nbytes / (w1 - w0),
                          "seconds": w1 - w0}
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            os.close(master)
        if not seen:
            tail = ANSI.sub(b"", buf).decode("utf-8", "replace")[-600:]
            raise RuntimeError(f"no full frame within {limit:g}s; last output:\n{tail}")
        return elapsed, len(buf), steady


def _drain(fd: int, seconds: float) -> int:
    """Read (and count) what the app writes for `seconds`."""
    end = time.perf_counter() + seconds
    total = 0
    while (left := end - time.perf_counter()) > 0:
        ready, _, _ = select.select([fd], [], [], min(left, 0.2))
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            total += len(chunk)
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--frame-runs", type=int, default=5)
    ap.add_argument("--config", default=None)
    ap.add_argument("--size", default="160x48")
    ap.add_argument("--floor", action="store_true",
                    help="also time a minimal Textual app (interleaved runs): this machine's floor")
    ap.add_argument("--idle", type=float, default=0.0,
                    help="also measure steady-state CPU and bytes/s over this many seconds (e.g. 60)")
    args = ap.parse_args()
    cols, rows = (int(x) for x in args.size.lower().split("x"))
    config = args.config
    if config is None and (ROOT / "examples" / "minimal.toml").exists():
        config = str(ROOT / "examples" / "minimal.toml")

    helps = time_help(args.runs)
    med = statistics.median(helps)
    print(f"warroom --help: median {med * 1000:.0f} ms, max {max(helps) * 1000:.0f} ms "
          f"over {args.runs} runs (target < 500 ms) {'OK' if med < 0.5 else 'SLOW'}")

    frames, floors = [], []
    floor_cmd = None
    if args.floor:
        floor_py = Path(tempfile.gettempdir()) / "warroom-bench-floor.py"
        floor_py.write_text(FLOOR_APP)
        floor_cmd = [sys.executable, str(floor_py)]
        time_first_frame(None, cols, rows, cmd=floor_cmd)
    time_first_frame(config, cols, rows, idle=0.5, settle=3.0)  # warm the bytecode and code caches
    for _ in range(args.frame_runs):
        frames.append(time_first_frame(config, cols, rows))
        if floor_cmd:
            floors.append(time_first_frame(None, cols, rows, cmd=floor_cmd))
    fmed = statistics.median(t for t, _, _ in frames)
    where = "config " + os.path.relpath(config, ROOT) if config else "no sources"
    print(f"first frame at {cols}x{rows} ({where}): "
          f"median {fmed * 1000:.0f} ms, min {min(t for t, _, _ in frames) * 1000:.0f} ms, "
          f"max {max(t for t, _, _ in frames) * 1000:.0f} ms over {args.frame_runs} runs, "
          f"{statistics.median(b for _, b, _ in frames) / 1024:.1f} KiB written "
          f"(target <= 500 ms) {'OK' if fmed <= 0.5 else 'SLOW'}")
    cpu = statistics.median(st["cpu_to_frame"] for _, _, st in frames)
    print(f"CPU time used until the first frame: median {cpu * 1000:.0f} ms "
          f"(what the first frame costs on an idle core, whatever the load)")
    if floors:
        lmed = statistics.median(t for t, _, _ in floors)
        lcpu = statistics.median(st["cpu_to_frame"] for _, _, st in floors)
        print(f"floor (a minimal Textual app: header line, 8 titled panes, footer) at {cols}x{rows}: "
              f"median {lmed * 1000:.0f} ms, CPU {lcpu * 1000:.0f} ms; the console is "
              f"{(fmed - lmed) * 1000:+.0f} ms wall, {(cpu - lcpu) * 1000:+.0f} ms CPU above it")
    if args.idle > 0:
        _, _, steady = time_first_frame(config, cols, rows, idle=args.idle)
        print(f"steady state at {cols}x{rows} ({where}) over {steady['seconds']:.0f} s: "
              f"CPU {steady['cpu_percent']:.2f} % of a core (target <= 1 %), "
              f"{steady['bytes_per_s']:.0f} bytes/s to the terminal (target <= 1024)")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
