"""`warroom record [--config PATH] [--for DURATION] [--out FILE]`: the flight recorder, headless.

Builds a read-only engine on the config (recording never acts), records every reading,
finding, log line, action and incident event to FILE (default: `[record] path`, else
<state_dir>/recording.sqlite), redacted at write time (backends/engine/recorder.py), until DURATION
has passed or Ctrl-C / SIGTERM. Prints where it wrote and how much.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

PROG = "warroom record"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--for", dest="duration", metavar="DURATION", default=None,
                        help="stop after this long (10s, 5m, 1h; default: until Ctrl-C)")
    parser.add_argument("--out", metavar="FILE", default=None,
                        help="the recording (default: [record] path, else <state_dir>/recording.sqlite)")


def recording_path(config: Any, out: str | None) -> Path:
    if out:
        return Path(out).expanduser()
    rec = getattr(config, "record", None)
    if rec is not None and rec.path is not None:
        return Path(rec.path)
    return Path(config.state_dir) / "recording.sqlite"


def make_recorder(config: Any, path: Path) -> Any:
    from backends.engine.recorder import DEFAULT_MAX_AGE, DEFAULT_MAX_SIZE, Recorder

    rec = getattr(config, "record", None)
    return Recorder(path, config=config, max_size=rec.max_size if rec else DEFAULT_MAX_SIZE,
                    max_age=rec.max_age if rec else DEFAULT_MAX_AGE)


def run(args: argparse.Namespace) -> int:
    from backends.units import parse_duration

    duration = None
    if args.duration is not None:
        try:
            duration = parse_duration(args.duration)
        except ValueError as exc:
            print(f"{PROG}: --for: {exc}", file=sys.stderr)
            return 2
    try:
        from tui.cli import load_config

        config = load_config(args.config)
    except Exception as exc:  # config errors name file, line, key
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    path = recording_path(config, args.out)
    try:
        from tui.cli import build_engine

        engine = build_engine(config, read_only=True)
    except Exception as exc:
        from backends.errors import describe_exception

        print(f"{PROG}: cannot start: {describe_exception(exc)}", file=sys.stderr)
        return 2
    recorder = make_recorder(config, path)
    return asyncio.run(_record(engine, recorder, duration))


async def _record(engine: Any, recorder: Any, duration: float | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    recorder.attach(engine)
    print(f"{PROG}: recording to {recorder.path}" + (" (Ctrl-C stops)" if duration is None else ""),
          file=sys.stderr, flush=True)
    try:
        await engine.start()
        if duration is None:
            await stop.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)
    finally:
        with contextlib.suppress(Exception):
            await engine.stop()
        await recorder.aclose()
    size = recorder.path.stat().st_size if recorder.path.exists() else 0
    print(f"{PROG}: {recorder.records} records in {recorder.batches} batches, {size / 1024:.0f} KiB: "
          f"{recorder.path}", file=sys.stderr)
    if recorder.error:
        print(f"{PROG}: {recorder.error}", file=sys.stderr)
        return 1
    return 0
