"""Cost on a live stack: warroom next to glances and lnav, under tmux at 160x48.

Starts the sandbox (`warroom demo --stack-only --ports auto`, its own XDG_STATE_HOME
under a temp dir, its own process group, stopped with SIGTERM at the end), then runs,
for `--rounds` rounds, two cases; in each case every program runs side by side in the
same time window (so they see the same load), each in its own tmux session of
160x48 on a private tmux server (`tmux -L warroom-bench-PID`):

- live: the console (`warroom --config SANDBOX`), the kiosk (`warroom --kiosk`),
  the console served to one browser tab (`warroom serve --no-token` on loopback, a
  websocket client in this process standing in for the tab: it asks for 160x48 as
  xterm.js does and reads everything; CPU is the server's and the app's, bytes are what
  the websocket carries), glances (from a benchmark venv, `--glances`; default
  /tmp/bench-venv/bin/glances) and lnav following the sandbox's log folder;
- logs: a writer appends 200 lines/s (`--rate`) to a log file; the console on the
  sandbox config plus a `[[logs]]` entry for that file (warroom-logs), the console on the
  sandbox config alone (warroom-nolog: what the sandbox costs without the log, so the
  difference is what the log costs), the console on a config with only that log
  (warroom-tail: the console following the same file as lnav, nothing else), and lnav
  following it.

For each program: first frame (the console: every pane title and the footer written
to the terminal, from the start of the command; `--starts` (3) timed starts a round, each
alone, after one untimed start that fills the caches as an operator's first start does),
CPU % of one core of its process
(children included) over `--seconds` (default 60) after the first `--warmup` (10) s,
bytes/s written to the terminal (tmux `pipe-pane` into a file), RSS at the end.
Prints a table per case (median over the rounds, min-max) and the ratios to glances
and lnav against the targets of issue 17.

`--pyspy DIR` also samples the consoles with py-spy (`PYSPY`, default
/tmp/pyspy-venv/bin/py-spy; `--nonblocking`, 100 Hz) during the window and writes
collapsed stacks (DIR/NAME-ROUND.txt) and prints each one's top functions (own time and
with callees, % of the samples). Sampling costs the consoles a little CPU: compare the
figures of a profiled run with each other only.

Usage: .venv/bin/python benchmarks/live.py [--seconds 60] [--rounds 3] [--only live|logs] [--pyspy DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from soak import Sandbox, stop_group  # noqa: E402
from startup import ANSI, FRAME_MARKERS, bench_env, warroom_cmd  # noqa: E402

COLS, ROWS = 160, 48
KIOSK_MARKERS = ("warroom",)


@dataclass
class Run:
    name: str
    argv: list[str]
    markers: tuple[str, ...] = ()
    cwd: str = ""
    session: str = ""
    out: Path | None = None
    pid: int = 0
    t0: float = 0.0
    first_frame: float = float("nan")
    frames: list[float] = field(default_factory=list)  # every timed start of this round
    cpu0: float = 0.0
    bytes0: int = 0
    result: dict = field(default_factory=dict)
    serve: bool = False  # `warroom serve`: a server process and one websocket "tab", not tmux
    proc: subprocess.Popen | None = None
    tab: threading.Thread | None = None
    tab_stop: threading.Event = field(default_factory=threading.Event)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_tab(run: Run, port: int) -> None:
    """One browser tab of `warroom serve`: the websocket textual-serve's page opens, at
    160x48, everything it carries appended to run.out (aiohttp answers the heartbeat)."""
    import asyncio

    import aiohttp

    async def main() -> None:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as session:
            while not run.tab_stop.is_set():
                try:
                    ws = await session.ws_connect(f"ws://127.0.0.1:{port}/ws?width={COLS}&height={ROWS}",
                                                  headers={"Origin": url}, max_msg_size=0)
                    break
                except (aiohttp.ClientError, OSError):
                    if time.monotonic() > deadline:
                        return
                    await asyncio.sleep(0.1)
            else:
                return
            with open(run.out, "ab", buffering=0) as out:  # noqa: ASYNC230 - this thread's own loop
                while not run.tab_stop.is_set():
                    try:
                        msg = await ws.receive(timeout=0.5)
                    except TimeoutError:
                        continue
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        out.write(msg.data)
                    elif msg.type == aiohttp.WSMsgType.TEXT:
                        out.write(msg.data.encode())
                    elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        return
            await ws.close()

    asyncio.run(main())


def start_serve(run: Run, env: dict[str, str], tmp: Path, n: int) -> None:
    run.out = tmp / f"bench-{run.name}-{n}.out"
    run.out.write_bytes(b"")
    port = free_port()
    run.proc = subprocess.Popen([*run.argv, "--host", "127.0.0.1", "--port", str(port), "--no-token"],
                                cwd=run.cwd or ROOT, env=bench_env(**env), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run.pid = run.proc.pid
    run.t0 = time.perf_counter()
    run.tab_stop.clear()
    run.tab = threading.Thread(target=serve_tab, args=(run, port), daemon=True)
    run.tab.start()


def stop_serve(run: Run) -> None:
    run.tab_stop.set()
    if run.tab is not None:
        run.tab.join(10)
    stop_group(run.proc, 10)


def cpu_seconds(pid: int) -> float:
    """user + system of a process and its children (live ones and reaped ones)."""
    try:
        p = psutil.Process(pid)
        t = p.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for c in p.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                ct = c.cpu_times()
                total += ct.user + ct.system
        return total
    except psutil.Error:
        return float("nan")


def rss_mb(pid: int) -> float:
    try:
        p = psutil.Process(pid)
        total = p.memory_info().rss
        for c in p.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += c.memory_info().rss
        return total / 1e6
    except psutil.Error:
        return float("nan")


class Tmux:
    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.sock = f"warroom-bench-{os.getpid()}"
        self.env = env
        self.tmp = tmp

    def cmd(self, *args: str, check: bool = True) -> str:
        r = subprocess.run(["tmux", "-L", self.sock, "-f", "/dev/null", *args], env=self.env,
                           capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout.strip()

    def start(self, run: Run, env: dict[str, str], n: int) -> None:
        run.session = f"bench-{run.name}-{n}"
        run.out = self.tmp / f"{run.session}.out"
        run.out.write_bytes(b"")
        go = self.tmp / f"{run.session}.go"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        cd = f"cd {shlex.quote(run.cwd)} && " if run.cwd else ""
        inner = (f"while [ ! -e {shlex.quote(str(go))} ]; do sleep 0.01; done; {cd}"
                 f"exec env {exports} {shlex.join(run.argv)}")
        self.cmd("new-session", "-d", "-s", run.session, "-x", str(COLS), "-y", str(ROWS), "sh -c " + shlex.quote(inner))
        run.pid = int(self.cmd("display-message", "-p", "-t", run.session, "#{pane_pid}"))
        self.cmd("pipe-pane", "-o", "-t", run.session, "cat >> " + shlex.quote(str(run.out)))
        time.sleep(0.1)  # the pipe is open before the program writes
        go.touch()
        run.t0 = time.perf_counter()

    def stop(self, run: Run) -> None:
        self.cmd("kill-session", "-t", run.session, check=False)
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(run.pid)
            try:
                p.wait(10)
            except psutil.TimeoutExpired:
                p.terminate()
                try:
                    p.wait(5)
                except psutil.TimeoutExpired:
                    p.kill()

    def close(self) -> None:
        self.cmd("kill-server", check=False)


class Writer(threading.Thread):
    """Appends `rate` lines a second to `path`, in 20 batches a second."""

    def __init__(self, path: Path, rate: int) -> None:
        super().__init__(daemon=True)
        self.path, self.rate = path, rate
        self.stop_evt = threading.Event()
        self.written = 0
        self.lines = 0

    def run(self) -> None:
        levels = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "INFO", "INFO", "ERROR", "INFO", "INFO")
        per_tick = max(1, self.rate // 20)
        n = 0
        with open(self.path, "ab", buffering=0) as fh:
            next_at = time.monotonic()
            while not self.stop_evt.is_set():
                now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                chunk = []
                for _ in range(per_tick):
                    n += 1
                    chunk.append(f"{now} {levels[n % 10]} [flood] order {n} settled in block {100000 + n // 7} "
                                 f"tx 0x{n * 2654435761 % (1 << 64):016x} took {n % 97} ms\n")
                data = "".join(chunk).encode()
                fh.write(data)
                self.written += len(data)
                self.lines += per_tick
                next_at += 0.05
                self.stop_evt.wait(max(0.0, next_at - time.monotonic()))


def wait_first_frames(runs: list[Run], limit: float = 30.0) -> None:
    pending = [r for r in runs if r.markers]
    end = time.perf_counter() + limit
    while pending and time.perf_counter() < end:
        for r in list(pending):
            data = r.out.read_bytes()
            text = ANSI.sub(b"", data).decode("utf-8", "replace")
            if all(m in text for m in r.markers):
                r.first_frame = time.perf_counter() - r.t0
                pending.remove(r)
        time.sleep(0.01)


def start_pyspy(pyspy: str, out_dir: Path, run: Run, n: int, seconds: float) -> subprocess.Popen | None:
    out = out_dir / f"{run.name}-{n + 1}.txt"
    try:
        return subprocess.Popen([pyspy, "record", "--pid", str(run.pid), "--rate", "100", "--nonblocking",
                                 "--duration", str(max(1, int(seconds))), "--format", "raw", "-o", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError as exc:
        print(f"py-spy: {exc}")
        return None


def pyspy_top(path: Path, limit: int = 25) -> str:
    """The top functions of a py-spy raw (collapsed) profile: own samples and with callees."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    try:
        text = path.read_text()
    except OSError:
        return f"  (no profile: {path})"
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        samples += c
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        for f in set(frames):
            total[f] = total.get(f, 0) + c
        own[frames[-1]] = own.get(frames[-1], 0) + c
    if not samples:
        return f"  (no samples: {path})"
    lines = [f"  {samples} samples ({path.name})", "  own %   with callees %   function"]
    for f, c in sorted(own.items(), key=lambda kv: -kv[1])[:limit]:
        lines.append(f"  {100 * c / samples:5.1f}   {100 * total[f] / samples:5.1f}            {f}")
    lines.append("  with callees (top):")
    for f, c in sorted(total.items(), key=lambda kv: -kv[1])[:limit]:
        lines.append(f"  {100 * c / samples:5.1f}   {f}")
    return "\n".join(lines)


def warm_start(tmux: Tmux, run: Run, env: dict[str, str], settle: float = 4.0) -> None:
    """One untimed start, as an operator's first after an install: it fills the bytecode
    and the dataclass code cache (written once the engine is built, ~1 s after the frame)."""
    tmux.start(run, env, -1)
    wait_first_frames([run])
    time.sleep(settle)
    tmux.stop(run)


def measure_case(tmux: Tmux, runs: list[Run], env: dict[str, str], n: int, warmup: float, seconds: float,
                 writer: Writer | None = None, pyspy: str = "", pyspy_dir: Path | None = None,
                 starts: int = 1) -> None:
    try:
        # the programs with a first frame to time start one at a time (each frame timed
        # alone), then the others; the window is the same for all
        # a served console first: its app starts when the tab connects and its start-up
        # (imports, the engine, the first polls: about 1.5 s of CPU) must be over before
        # the window; it has no first frame to time
        for r in runs:
            if r.serve:
                start_serve(r, env, tmux.tmp, n)
                end = time.perf_counter() + 30
                while r.out.stat().st_size < 20_000 and time.perf_counter() < end:
                    time.sleep(0.05)
        for r in sorted(runs, key=lambda r: not r.markers):
            if r.serve:
                continue
            for _ in range(starts - 1 if r.markers else 0):  # more samples of the first frame
                tmux.start(r, env, n)
                wait_first_frames([r])
                r.frames.append(r.first_frame)
                tmux.stop(r)
            tmux.start(r, env, n)
            if r.markers:
                wait_first_frames([r])
                r.frames.append(r.first_frame)
        start = min(r.t0 for r in runs if not r.serve) if any(not r.serve for r in runs) else runs[0].t0
        time.sleep(max(0.0, start + warmup - time.perf_counter()))
        w0 = writer.written if writer else 0
        t0 = time.perf_counter()
        for r in runs:
            r.cpu0, r.bytes0 = cpu_seconds(r.pid), r.out.stat().st_size
        profilers = []
        if pyspy and pyspy_dir is not None:
            profilers = [p for r in runs if r.name.startswith("warroom")
                         if (p := start_pyspy(pyspy, pyspy_dir, r, n, seconds)) is not None]
        time.sleep(seconds)
        t1 = time.perf_counter()
        wall = t1 - t0
        for r in runs:
            cpu1, bytes1 = cpu_seconds(r.pid), r.out.stat().st_size
            alive = psutil.pid_exists(r.pid)
            r.result = {"cpu": 100.0 * (cpu1 - r.cpu0) / wall, "bps": (bytes1 - r.bytes0) / wall,
                        "rss": rss_mb(r.pid), "frame": med(r.frames), "frames": list(r.frames), "alive": alive}
        if writer:
            for r in runs:
                r.result["log_bps"] = (writer.written - w0) / wall
        for p in profilers:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.terminate()
                p.wait(5)
    finally:
        for r in runs:
            if r.serve:
                stop_serve(r)
            else:
                tmux.stop(r)


def med(values: list[float]) -> float:
    vals = [v for v in values if v == v]
    return statistics.median(vals) if vals else float("nan")


def spread(values: list[float], fmt: str) -> str:
    vals = [v for v in values if v == v]
    if not vals:
        return "-"
    if len(vals) == 1:
        return format(vals[0], fmt)
    return f"{format(statistics.median(vals), fmt)} ({format(min(vals), fmt)}-{format(max(vals), fmt)})"


def table(title: str, results: dict[str, list[dict]]) -> None:
    print(f"\n{title}")
    print(f"{'program':<16} {'first frame s':>18} {'CPU % of a core':>20} {'bytes/s to terminal':>24} {'RSS MB':>16}")
    for name, rs in results.items():
        print(f"{name:<16} {spread([f for r in rs for f in r.get('frames', [])], '.2f'):>18} {spread([r['cpu'] for r in rs], '.2f'):>20} "
              f"{spread([r['bps'] for r in rs], '.0f'):>24} {spread([r['rss'] for r in rs], '.0f'):>16}")


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="measured window per run (default 60)")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds before the window (default 10)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=int, default=200, help="lines/s of the logs case")
    ap.add_argument("--starts", type=int, default=3,
                    help="timed starts per round of each console in the live case (the first frame's samples)")
    ap.add_argument("--only", choices=("live", "logs"), default=None)
    ap.add_argument("--glances", default=os.environ.get("GLANCES", "/tmp/bench-venv/bin/glances"))
    ap.add_argument("--lnav", default=shutil.which("lnav") or "")
    ap.add_argument("--baseline", default="", metavar="DIR",
                    help="also run the console from another copy of the tree (e.g. `git archive REV | tar -x -C DIR`)"
                         " side by side: before/after in the same window")
    ap.add_argument("--pyspy", default="", metavar="DIR",
                    help="sample the consoles with py-spy during the window; profiles into DIR, top functions printed")
    args = ap.parse_args(argv)
    pyspy = os.environ.get("PYSPY", "/tmp/pyspy-venv/bin/py-spy") if args.pyspy else ""
    pyspy_dir = Path(args.pyspy).resolve() if args.pyspy else None
    if pyspy_dir is not None:
        pyspy_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(pyspy, os.X_OK):
            print(f"py-spy not found at {pyspy}: python3 -m venv /tmp/pyspy-venv && /tmp/pyspy-venv/bin/pip install py-spy")
            return 2
    if not shutil.which("tmux"):
        print("tmux not found (apt-get install tmux)")
        return 2
    glances = args.glances if os.access(args.glances, os.X_OK) else shutil.which("glances")
    lnav = args.lnav if args.lnav and os.access(args.lnav, os.X_OK) else None
    if not glances:
        print("glances not found: python3 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install glances")
    if not lnav:
        print("lnav not found: apt-get install lnav")

    sandbox = Sandbox()
    tmp = Path(tempfile.mkdtemp(prefix="warroom-live-"))
    home = tmp / "home"
    home.mkdir()
    tmux = None
    try:
        print("starting the sandbox ...", flush=True)
        config = sandbox.start()
        print(f"sandbox config: {config}", flush=True)
        logs_dir = Path(config).parent / "logs"
        flood = tmp / "flood.log"
        flood.write_bytes(b"")
        flood_config = tmp / "warroom-flood.toml"
        flood_entry = f'\n[[logs]]\nname = "flood"\npath = "{flood}"\nsilence_after = "5m"\n'
        flood_config.write_text(Path(config).read_text() + flood_entry)
        tail_config = tmp / "warroom-tail.toml"  # the console following the flood file, nothing else
        tail_config.write_text(flood_entry)
        env = bench_env(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), WARROOM_OPERATOR="bench",
                        TERM="tmux-256color")
        env.pop("WARROOM_CONFIG", None)
        env.pop("NO_COLOR", None)
        tmux_env = dict(env)
        run_env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / "cache"),
                   "XDG_STATE_HOME": str(home / "state"), "WARROOM_OPERATOR": "bench",
                   "PYTHONPYCACHEPREFIX": env["PYTHONPYCACHEPREFIX"]}
        tmux = Tmux(tmux_env, tmp)
        tmux.cmd("start-server")
        tmux.cmd("new-session", "-d", "-s", "keep", "-x", str(COLS), "-y", str(ROWS), "sleep 100000")
        wr = warroom_cmd()
        base = [sys.executable, "-m", "tui.cli"]  # run in --baseline DIR: that tree's modules first
        # warm the bytecode cache
        subprocess.run(wr + ["--help"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=False)

        live: dict[str, list[dict]] = {}
        logs: dict[str, list[dict]] = {}
        for n in range(args.rounds):
            if args.only in (None, "live"):
                runs = [Run("warroom", wr + ["--config", config], FRAME_MARKERS),
                        Run("kiosk", wr + ["--kiosk", "--config", config], KIOSK_MARKERS),
                        Run("serve", wr + ["serve", "--config", config], serve=True)]
                if args.baseline:
                    runs.append(Run("warroom-base", base + ["--config", config], FRAME_MARKERS, cwd=args.baseline))
                if glances:
                    runs.append(Run("glances", [glances, "--disable-check-update"]))
                if lnav:
                    runs.append(Run("lnav", [lnav, str(logs_dir)]))
                print(f"round {n + 1}/{args.rounds}: live ({', '.join(r.name for r in runs)} side by side) ...",
                      flush=True)
                if n == 0:
                    for r in runs:
                        if r.markers:
                            warm_start(tmux, r, run_env)
                measure_case(tmux, runs, run_env, n, args.warmup, args.seconds, None, pyspy, pyspy_dir,
                             starts=args.starts)
                for r in runs:
                    live.setdefault(r.name, []).append(r.result)
            if args.only in (None, "logs"):
                writer = Writer(flood, args.rate)
                writer.start()
                try:
                    runs = [Run("warroom-logs", wr + ["--config", str(flood_config)], FRAME_MARKERS),
                            Run("warroom-nolog", wr + ["--config", config], FRAME_MARKERS),
                            Run("warroom-tail", wr + ["--config", str(tail_config)], FRAME_MARKERS)]
                    if args.baseline:
                        runs.append(Run("warroom-logs-base", base + ["--config", str(flood_config)], FRAME_MARKERS,
                                        cwd=args.baseline))
                        runs.append(Run("warroom-tail-base", base + ["--config", str(tail_config)], FRAME_MARKERS,
                                        cwd=args.baseline))
                    if lnav:
                        runs.append(Run("lnav-logs", [lnav, str(flood)]))
                    print(f"round {n + 1}/{args.rounds}: logs at {args.rate} lines/s "
                          f"({', '.join(r.name for r in runs)} side by side) ...", flush=True)
                    measure_case(tmux, runs, run_env, n, args.warmup, args.seconds, writer, pyspy, pyspy_dir)
                finally:
                    writer.stop_evt.set()
                    writer.join()
                for r in runs:
                    logs.setdefault(r.name, []).append(r.result)
                flood.write_bytes(b"")  # the next round starts from an empty file

        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"\n{COLS}x{ROWS}, {args.rounds} round(s), {args.seconds:g} s windows after {args.warmup:g} s; "
              f"load average at the end: {load} on {os.cpu_count()} CPUs")
        if live:
            table("live sandbox (median, min-max over the rounds)", live)
        if logs:
            table(f"logs at {args.rate} lines/s into the tail (median, min-max)", logs)
            lb = med([r["log_bps"] for r in logs["warroom-logs"]])
            print(f"log bytes appended: {lb:.0f} B/s")

        print("\ntargets (issue 17):")
        for name in ("warroom", "kiosk", "serve"):
            if name not in live:
                continue
            rs = live[name]
            cpu, bps = med([r["cpu"] for r in rs]), med([r["bps"] for r in rs])
            frame = med([f for r in rs for f in r.get("frames", [])])
            if "glances" in live:
                ratios = [r["cpu"] / g["cpu"] for r, g in zip(rs, live["glances"], strict=False) if g["cpu"] > 0]
                ratio = med(ratios)
                print(f"  {name}: CPU {cpu:.2f} % = {ratio:.2f}x glances ({med([g['cpu'] for g in live['glances']]):.2f} %)"
                      f" (<= 1.0x) {verdict(ratio <= 1.0)}")
            where = "over the websocket" if name == "serve" else "to the terminal"
            print(f"  {name}: {bps:.0f} B/s {where} (<= 2000) {verdict(bps <= 2000)}")
            if name == "warroom":
                nf = sum(len(r.get("frames", [])) for r in rs)
                print(f"  {name}: first frame {frame:.2f} s under tmux, median of {nf} starts (<= 0.5) "
                      f"{verdict(frame <= 0.5)}")
            if "lnav" in live:
                print(f"  {name}: {med([r['bps'] for r in rs]) / max(1.0, med([r['bps'] for r in live['lnav']])):.2f}x "
                      f"lnav's bytes/s, {cpu / max(1e-9, med([r['cpu'] for r in live['lnav']])):.2f}x lnav's CPU "
                      "(lnav on the sandbox's logs, for reference)")
        if "warroom-logs" in logs and "lnav-logs" in logs:
            rs, ls = logs["warroom-logs"], logs["lnav-logs"]
            ratio = med([r["cpu"] / lv["cpu"] for r, lv in zip(rs, ls, strict=False) if lv["cpu"] > 0])
            print(f"  logs: warroom CPU {med([r['cpu'] for r in rs]):.2f} % = {ratio:.2f}x lnav "
                  f"({med([lv['cpu'] for lv in ls]):.2f} %) (<= 1.5x) {verdict(ratio <= 1.5)}")
            bratio = med([r["bps"] / r["log_bps"] for r in rs if r["log_bps"] > 0])
            print(f"  logs: warroom {med([r['bps'] for r in rs]):.0f} B/s = {bratio:.2f}x the log bytes "
                  f"(<= 2x) {verdict(bratio <= 2.0)}; lnav {med([lv['bps'] for lv in ls]):.0f} B/s")
            if "warroom-tail" in logs:
                ts = logs["warroom-tail"]
                tratio = med([r["cpu"] / lv["cpu"] for r, lv in zip(ts, ls, strict=False) if lv["cpu"] > 0])
                tb = med([r["bps"] / r["log_bps"] for r in ts if r["log_bps"] > 0])
                print(f"  logs: the console following only the log: CPU {med([r['cpu'] for r in ts]):.2f} % = "
                      f"{tratio:.2f}x lnav (<= 1.5x) {verdict(tratio <= 1.5)}; {med([r['bps'] for r in ts]):.0f} B/s"
                      f" = {tb:.2f}x the log bytes (<= 2x) {verdict(tb <= 2.0)}")
            if "warroom-nolog" in logs:
                ns = logs["warroom-nolog"]
                extra = [r["cpu"] - x["cpu"] for r, x in zip(rs, ns, strict=False)]
                eratio = med([(r["cpu"] - x["cpu"]) / lv["cpu"] for r, x, lv in zip(rs, ns, ls, strict=False)
                              if lv["cpu"] > 0])
                print(f"  logs: what the log adds to the console on the sandbox (warroom-logs - warroom-nolog): "
                      f"{spread(extra, '.2f')} % = {eratio:.2f}x lnav (<= 1.5x) {verdict(eratio <= 1.5)}")
        if pyspy_dir is not None:
            for prof in sorted(pyspy_dir.glob("warroom*.txt")):
                print(f"\npy-spy {prof.stem}:")
                print(pyspy_top(prof))
        dead = [f"{name} round {i + 1}" for res in (live, logs) for name, rs in res.items()
                for i, r in enumerate(rs) if not r["alive"]]
        if dead:
            print(f"  WARNING: exited before the end of its window: {', '.join(dead)}")
        return 0
    finally:
        if tmux is not None:
            tmux.close()
        sandbox.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
        sys.exit(main())
