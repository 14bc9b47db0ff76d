"""`warroom demo`: start the sandbox stack and open the console on it.

`warroom demo --stack-only` starts the stack alone, prints the path of its generated
config and keeps running until interrupted (Ctrl-C / SIGTERM / SIGHUP): for `warroom drill`,
headless commands, a second console (`warroom --config PATH`) and benchmarks.
Quitting stops everything the sandbox started.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack-only", action="store_true",
                        help="start the stack without the console; print its config path; run until interrupted")
    parser.add_argument("--ports", choices=("fixed", "auto"), default="fixed",
                        help="fixed: the sandbox's usual ports (API 18080, RPC 18546/18545, Postgres 15432, "
                             "Redis 16379, webhook 18090); auto: free ports chosen at start")
    parser.add_argument("--order-every", type=float, default=2.0, metavar="SECONDS",
                        help="the order flow's rate: one order every SECONDS (default 2)")
    parser.add_argument("--chain", choices=("auto", "anvil", "py-evm"), default="auto",
                        help="auto: anvil when installed, else an in-process py-evm chain")


def _process_age() -> float:
    """Seconds since this process started (the time from the command, not from run())."""
    try:
        import psutil

        return max(0.0, time.time() - psutil.Process().create_time())
    except Exception:  # noqa: BLE001
        return 0.0


class _Interrupted(Exception):
    pass


_ON_A_TERMINAL: list[bool] = []  # stdout/stderr were a terminal when run() started


def _on_sigterm(signum, frame):  # pragma: no cover - signal handler
    if signum == signal.SIGHUP and any(_ON_A_TERMINAL):
        _detach_terminal()  # a pipe or file (`... > log &`) still gets "sandbox stopped"
    raise _Interrupted()


def run(args: argparse.Namespace) -> int:
    t_cmd = time.monotonic() - _process_age()
    _ON_A_TERMINAL[:] = [os.isatty(1) or os.isatty(2)]
    from sandbox.stack import SandboxError, Stack

    use_anvil = {"auto": None, "anvil": True, "py-evm": False}[args.chain]
    stack = Stack(ports=args.ports, order_every=args.order_every, use_anvil=use_anvil)
    # SIGHUP: the terminal went away (ssh dropped, tmux window killed); without a handler
    # Python dies at once and redis-server outlived the demo, holding its port
    old = {sig: signal.signal(sig, _on_sigterm) for sig in (signal.SIGTERM, signal.SIGHUP)}
    if not args.stack_only:  # import the console while the stack starts (a second or two saved)
        threading.Thread(target=_preload, daemon=True).start()
    try:
        print("warroom demo: starting the sandbox (PostgreSQL, Redis, chain, services)...", flush=True)
        try:
            stack.start()
        except SandboxError as exc:
            print(f"warroom demo: {exc}", file=sys.stderr)
            return 2
        ready = time.monotonic() - t_cmd
        print(f"sandbox ready in {ready:.1f}s ({stack.chain_kind} chain; run dir {stack.run_dir})", flush=True)
        if args.stack_only:
            return _stack_only(stack, ready)
        return _console(stack, t_cmd, args)
    except (KeyboardInterrupt, _Interrupted):
        return 130
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        stack.stop()
        print("sandbox stopped: processes ended, ports freed, run dir removed", flush=True)


def _detach_terminal() -> None:
    """After a hang-up: stdout and stderr to /dev/null (writes to a hung-up terminal fail
    with EIO, which turned a clean stop into a traceback and exit status 1)."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)


def _hard_stop(stack, sig: int) -> None:
    with contextlib.suppress(Exception):
        stack.stop()
    os._exit(128 + sig)


def _preload() -> None:
    import importlib

    for name in ("tui.app", "backends.engine.core", "backends.config", "asyncpg", "redis.asyncio", "aiohttp",
                 "backends.sources.logs", "backends.sources.orders", "backends.sources.evm", "psutil"):
        with contextlib.suppress(Exception):
            importlib.import_module(name)


def _stack_only(stack, ready: float) -> int:
    from sandbox.stack import DEV_KEYS, OWNER_KEY_ENV

    print(f"config:     {stack.config_path}")
    print(f"state file: {stack.state_path}")
    print(f"logs:       {stack.run_dir / 'logs'}")
    print(f"API:        http://127.0.0.1:{stack.ports['api']}/api/v1/health")
    print("a console on it:")
    print(f"  {OWNER_KEY_ENV}={DEV_KEYS[0]} warroom --config {stack.config_path}")
    print("drills: `warroom drill` lists them; Ctrl-C stops the sandbox", flush=True)
    while True:
        time.sleep(3600)


def make_console(stack, t_cmd: float | None = None, *, read_only: bool = False, kiosk: bool = False,
                 theme: str | None = None, bell: bool = False, cycle: float | None = None):
    """(app, engine, populated): the console on a running stack. `populated` gets the
    seconds from `t_cmd` to the first snapshot in which every source has been read.
    The console's own options (`warroom --kiosk demo`, `--read-only`, `--theme`...)
    apply as they do on a real config."""
    from backends.config import load_config
    from backends.engine.core import build_engine
    from backends.model import SourceState
    from sandbox.drills import DrillObserver
    from sandbox.stack import DEV_KEYS, OWNER_KEY_ENV
    from tui.app import WarroomApp

    t_cmd = time.monotonic() if t_cmd is None else t_cmd
    os.environ.setdefault(OWNER_KEY_ENV, DEV_KEYS[0])  # anvil's public dev key: pause drills sign with it
    config = load_config(stack.config_path)
    read_only = bool(read_only or kiosk)  # the wall display never acts
    engine = build_engine(config, read_only=True if read_only else None)
    app = WarroomApp(engine, config=config, read_only=read_only, kiosk=kiosk, theme=theme)
    app.kiosk_bell, app.kiosk_cycle = bell, cycle
    populated: list[float] = []

    def on_snapshot(snap) -> None:
        if populated or not snap.sources:
            return
        if all(st.state is not SourceState.PENDING for st in snap.sources.values()):
            populated.append(time.monotonic() - t_cmd)
            with contextlib.suppress(Exception):  # the app may not be running yet
                app.notify(f"sandbox console populated {populated[0]:.1f}s after `warroom demo` "
                           "(`warroom drill` in another terminal injects a fault)", timeout=8)

    engine.monitor.subscribe(on_snapshot)
    engine.monitor.subscribe(DrillObserver(stack.run_dir, config=config).on_snapshot)
    return app, engine, populated


def _console(stack, t_cmd: float, args: argparse.Namespace) -> int:
    import asyncio

    app, engine, populated = make_console(
        stack, t_cmd, read_only=bool(getattr(args, "read_only", False)), kiosk=bool(getattr(args, "kiosk", False)),
        theme=getattr(args, "theme", None), bell=bool(getattr(args, "bell", False)), cycle=getattr(args, "cycle", None))

    ended_by: list[int] = []
    hard_stop: list[threading.Timer] = []

    def on_signal(sig: int) -> None:
        # SIGTERM / SIGHUP while the console runs: an exception raised from a plain
        # handler lands in whatever callback the loop runs and may be swallowed (the demo
        # then kept running with its whole stack after its terminal was closed). Ask the
        # app to exit; the stack stops in run()'s `finally`. If the app cannot finish
        # (a hung-up terminal), stop the stack and leave after 10 s anyway.
        if ended_by:
            return
        ended_by.append(sig)
        if sig == signal.SIGHUP:
            _detach_terminal()  # what the app and the shutdown still write goes nowhere
        app.exit(return_code=128 + sig)
        timer = threading.Timer(10.0, _hard_stop, args=(stack, sig))
        timer.daemon = True
        timer.start()
        hard_stop.append(timer)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, on_signal, sig)
        await engine.start()
        try:
            await app.run_async()
        finally:
            await engine.stop()

    asyncio.run(main())
    for timer in hard_stop:  # the app finished: run()'s `finally` stops the stack, not a second thread
        timer.cancel()
    if ended_by:
        return 128 + ended_by[0]
    if populated:
        print(f"console populated {populated[0]:.1f}s after the command "
              f"(stack ready in {stack.timings.get('ready', 0):.1f}s)")
    return int(app.return_code or 0)
