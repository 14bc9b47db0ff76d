"""`warroom drill`: list the fault drills, inject one into the running sandbox, undo it,
apply its playbook's fix, or report detection and recovery (`--status`).

    warroom drill                      list the drills
    warroom drill NAME                 inject NAME, then watch until warroom detects it
    warroom drill NAME --undo          remove the fault
    warroom drill NAME --fix           apply the playbook's fix through warroom's actions
    warroom drill --status             detected? recovered? how long each took

Read-only (`--read-only`, `--kiosk`, or `read_only = true` in the sandbox's config):
the list and `--status` only. Injecting a fault, `--undo` and `--fix` change the
sandbox: they are refused before anything is touched (exit 2), the refusal written to
the sandbox's audit trail; the engines built here are read-only too, so their actions
would be refused by the engine as well.
"""

from __future__ import annotations

import argparse
import sys
import time

from backends.sanitize import inert  # outside text (command output, errors, findings) printed inert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="the drill to inject (none: list the drills)")
    parser.add_argument("--undo", action="store_true", help="remove the drill's fault")
    parser.add_argument("--fix", action="store_true", help="apply the drill's playbook fix through warroom's actions")
    parser.add_argument("--status", action="store_true",
                        help="has the system recovered? time to detection and to recovery")
    parser.add_argument("--no-watch", action="store_true", help="inject and return at once (no detection wait)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="how long to watch for detection / recovery (default 30)")
    parser.add_argument("--read-only", action="store_true", default=argparse.SUPPRESS,
                        help="refuse injecting, --undo and --fix (the list and --status still work)")


def _list() -> int:
    from sandbox.drills import DRILLS

    print("Fault drills for the sandbox (`warroom demo` or `warroom demo --stack-only` first):\n")
    width = max(len(n) for n in DRILLS)
    for d in DRILLS.values():
        print(f"  {d.name:<{width}}  {d.title}: {d.does}")
        print(f"  {'':<{width}}  expect: {d.expect} [playbook {d.playbook}]")
        print(f"  {'':<{width}}  fix:    {d.fix}")
    print("\nwarroom drill NAME injects one; --undo removes it; --fix applies the fix; --status reports times.")
    return 0


def run(args: argparse.Namespace) -> int:
    from backends.errors import ActionRefused, BackendError, ConfigError
    from sandbox.stack import SandboxError

    if not args.name and not args.status:
        return _list()
    try:
        return _run(args)
    except SandboxError as exc:
        print(f"warroom drill: {inert(exc)}", file=sys.stderr)
        return 2
    except ActionRefused as exc:
        print(f"warroom drill: {exc.action}: refused: {inert(exc.reason)}", file=sys.stderr)
        return 2
    except (BackendError, ConfigError) as exc:
        print(f"warroom drill: {inert(exc)}", file=sys.stderr)
        return 2


def _sandbox_read_only(info: dict) -> bool:
    try:
        from backends.config import load_config

        return bool(load_config(info["config"]).warroom.read_only)
    except Exception:
        return False


def _refuse(info: dict, name: str, what: str) -> int:
    """A change asked of a read-only process: refused before anything is touched, audited."""
    import asyncio

    from backends.engine.readonly import READ_ONLY, refuse

    reason = f"{READ_ONLY}: {what} changes the sandbox (the list and --status still work)"

    async def write() -> None:
        from backends.config import load_config
        from backends.engine.audit import AuditLog, operator_identity

        audit = AuditLog(load_config(info["config"]).audit_path)
        await refuse(audit, f"drill.{what.split()[0].lstrip('-')}", f"drill:{name}", reason,
                     operator=operator_identity(), params={"drill": name})

    try:
        asyncio.run(write())
    except Exception:  # ActionRefused (written), or the audit could not be opened: refused all the same
        pass
    print(f"warroom drill: {name}: refused: {reason}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from sandbox import drills
    from sandbox.stack import running_sandbox

    info = running_sandbox()
    run_dir = Path(info["run_dir"])
    read_only = bool(getattr(args, "read_only", False) or getattr(args, "kiosk", False)
                     or _sandbox_read_only(info))
    info = {**info, "read_only": read_only}
    if args.status:
        return asyncio.run(_status(run_dir, info, args.timeout if args.name else 10.0, args.name))
    drill = drills.get(args.name)
    if read_only:
        what = "--undo" if args.undo else "--fix" if args.fix else "inject"
        return _refuse(info, drill.name, what)
    if args.undo:
        print(f"{drill.name}: {inert(drills.undo(run_dir, drill.name))}")
        return 0
    if args.fix:
        return asyncio.run(_fix(run_dir, info, drill.name, args.timeout))
    rec = drills.inject(run_dir, drill.name)
    print(f"injected {drill.name}: {inert(rec['detail'])}")
    print(f"  expect: {drill.expect} [playbook {drill.playbook}]")
    print(f"  fix:    {drill.fix}")
    if args.no_watch:
        return 0
    return asyncio.run(_watch_detection(run_dir, info, drill.name, args.timeout))


async def _engine(info: dict):
    import os

    from backends.config import load_config
    from backends.engine.core import build_engine
    from sandbox.stack import DEV_KEYS, OWNER_KEY_ENV

    os.environ.setdefault(OWNER_KEY_ENV, DEV_KEYS[0])  # anvil's public dev key
    config = load_config(info["config"])
    engine = build_engine(config, read_only=True if info.get("read_only") else None)
    return config, engine


async def _watch_detection(run_dir, info: dict, name: str, limit: float) -> int:
    from sandbox import drills

    config, engine = await _engine(info)
    observer = drills.DrillObserver(run_dir, config=config)
    engine.monitor.subscribe(observer.on_snapshot)
    print(f"watching for the finding (up to {limit:.0f}s)...", flush=True)
    await engine.start()
    try:
        ok = await drills.watch(engine, observer, lambda: bool(drills.read_records(run_dir)[name].get("detected_at")),
                                limit)
    finally:
        await engine.stop()
    rec = drills.read_records(run_dir)[name]
    if not ok:
        print(f"NOT detected within {limit:.0f}s")
        return 1
    print(f"detected after {rec['detected_at'] - rec['injected_at']:.1f}s: {inert(rec['finding'])}")
    return 0


async def _fix(run_dir, info: dict, name: str, limit: float) -> int:
    from sandbox import drills

    config, engine = await _engine(info)
    observer = drills.DrillObserver(run_dir, config=config)
    engine.monitor.subscribe(observer.on_snapshot)
    await engine.start()
    try:
        await _settle(engine)
        for line in await drills.apply_fix(engine, run_dir, name):
            print(inert(line), flush=True)
        ok = await drills.watch(engine, observer,
                                lambda: bool(drills.read_records(run_dir).get(name, {}).get("recovered_at")), limit)
    finally:
        await engine.stop()
    for line in drills.describe(drills.read_records(run_dir)[name]):
        print(inert(line))
    return 0 if ok else 1


async def _settle(engine, limit: float = 10.0) -> None:
    """Wait until every source has been polled once."""
    import asyncio

    from backends.model import SourceState

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        snap = engine.monitor.snapshot
        if snap.sources and all(s.state is not SourceState.PENDING for s in snap.sources.values()):
            return
        await asyncio.sleep(0.2)


async def _status(run_dir, info: dict, limit: float, only: str | None) -> int:

    from sandbox import drills

    records = drills.read_records(run_dir)
    if only:
        records = {k: v for k, v in records.items() if k == only}
    if not records:
        print("no drill injected in this sandbox (`warroom drill` lists them)")
        return 0
    todo = drills.pending(records)
    if todo:  # look at the system now: a fresh engine, polled until its readings settle
        config, engine = await _engine(info)
        observer = drills.DrillObserver(run_dir, config=config)
        engine.monitor.subscribe(observer.on_snapshot)
        await engine.start()
        try:
            await _settle(engine)
            counts = dict(engine.monitor.poll_counts)  # one more round of every source
            await drills.watch(engine, None, lambda: all(engine.monitor.poll_counts[n] > c
                                                         for n, c in counts.items()), 10.0)
            await drills.watch(engine, observer,
                               lambda: not drills.pending(drills.read_records(run_dir)), max(0.0, limit - 12))
        finally:
            await engine.stop()
        records = {k: v for k, v in drills.read_records(run_dir).items() if k in records}
    for rec in sorted(records.values(), key=lambda r: r["injected_at"]):
        for line in drills.describe(rec):
            print(inert(line))
    left = drills.pending(records)
    print("all recovered" if not left else f"not recovered: {', '.join(left)}")
    return 0 if not left else 1
