"""`warroom incident brief [--json] [--hours H]`: print the escalation brief from live state.

The brief holds what the seed's escalation protocol asks every level for: error
messages from the logs, the affected order count, the timeline (findings), the steps
already attempted (executed actions from the audit trail) and the RPC endpoints in use.
Built by `backends.engine.brief` (the console's incidents reuse it). Exit 0 when the brief
was printed, 3 when the config could not be loaded; sources that cannot be read are
listed in the brief itself. No Textual.
"""

from __future__ import annotations

import argparse
import json
import sys

from tui.headless import EXIT_OK, Exit, add_common, build, run_job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, timeout=None)
    sub = parser.add_subparsers(dest="incident_command", metavar="{brief}")
    sub.required = True
    p = sub.add_parser("brief", help="print the escalation brief (logs, affected orders, timeline, steps, RPC)")
    add_common(p, timeout=90.0)
    p.add_argument("--hours", type=float, default=24.0, help="audit window for the steps attempted (default 24)")
    p.add_argument("--json", action="store_true", help="the brief as one JSON document")


def run(args: argparse.Namespace) -> int:
    prog = f"warroom incident {args.incident_command}"
    try:
        engine = build(args)
    except Exit as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return exc.code

    async def job() -> int:
        from backends.engine.brief import build_brief, render_brief

        brief = await build_brief(engine, hours=args.hours)
        if args.json:
            print(json.dumps(brief.to_dict(), indent=2, default=str))
        else:
            print(render_brief(brief))
        return EXIT_OK

    return run_job(prog, job, engine=engine, timeout=args.timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warroom incident", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
