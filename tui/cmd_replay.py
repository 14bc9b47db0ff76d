"""`warroom replay FILE [--dump] [--postmortem]`: a recording played in the console, read-only.

Opens the normal console on a `ReplayEngine` (backends/engine/replay.py): every pane as it was,
with a timeline bar (time, findings and actions as marks) and keys to play / pause, step,
jump to the next or previous finding or action, and change speed (x1, x10, x60). No backend
is contacted. `--dump` prints the recording as JSON lines (the schema is in
backends/engine/recorder.py); `--postmortem` prints the postmortem draft built from it.
"""

from __future__ import annotations

import argparse
import sys

PROG = "warroom replay"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a recording (warroom record, or [record] in the console)")
    parser.add_argument("--dump", action="store_true", help="print the recording as JSON lines, one per record")
    parser.add_argument("--postmortem", action="store_true",
                        help="print the postmortem draft built from the recording (markdown)")


def run(args: argparse.Namespace) -> int:
    from backends.engine.recorder import Recording, postmortem_from_recording

    try:
        recording = Recording(args.file)
    except (OSError, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if args.dump or args.postmortem:
        try:
            if args.dump:
                for line in recording.dump():
                    sys.stdout.write(line + "\n")
            else:
                sys.stdout.write(postmortem_from_recording(recording))
        finally:
            recording.close()
        return 0
    recording.close()
    if not recording.batches:
        print(f"{PROG}: {args.file} holds no record yet", file=sys.stderr)
        return 2
    from tui.screens.replay import ReplayApp

    app = ReplayApp(args.file, theme=getattr(args, "theme", None))
    app.run()
    return int(app.return_code or 0)
