"""`warroom audit tail [-n N] [--json]` and `warroom audit verify`.

`tail` prints the last N entries of the audit trail (`[warroom] audit_path`), one
line each (or the entries as JSON lines with `--json`). `verify` walks the hash
chain: exit 0 when it is intact, 2 when an entry was modified, removed or inserted
(the first broken line is printed), 3 when the config or the file cannot be read.
Reads only the file: no source is contacted. No Textual.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tui.headless import (
    EXIT_CRIT,
    EXIT_OK,
    EXIT_UNKNOWN,
    Exit,
    add_common,
    console,
    is_tty,
    load_config,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, timeout=None)
    sub = parser.add_subparsers(dest="audit_command", metavar="{tail,verify}")
    sub.required = True
    tail = sub.add_parser("tail", help="the last entries of the audit trail")
    add_common(tail, timeout=None)
    tail.add_argument("-n", "--lines", type=int, default=20, metavar="N", help="how many entries (default 20)")
    tail.add_argument("--json", action="store_true", help="the entries as JSON lines, as stored")
    verify = sub.add_parser("verify", help="check the hash chain; exit 0 intact, 2 broken")
    add_common(verify, timeout=None)
    verify.add_argument("--json", action="store_true", help="the result as one JSON document")


def audit_log(args: argparse.Namespace) -> Any:
    from backends.audit import AuditLog

    config = load_config(args)
    return AuditLog(config.audit_path)


def line(e: dict) -> str:
    if "_corrupt" in e:
        return f"(corrupt line) {e['_corrupt'][:120]}"
    mode = "dry-run" if e.get("dry_run") else (e.get("result") or "?")
    reason = f" — {e['reason']}" if e.get("reason") else ""
    summary = f": {e['summary']}" if e.get("summary") else ""
    return (f"#{e.get('seq', '?')} {e.get('ts', '?')[:19]}Z {e.get('operator', '?')} "
            f"{e.get('action', '?')} {e.get('target', '')} [{mode}]{summary}{reason}")


def tail(args: argparse.Namespace) -> int:
    log = audit_log(args)
    n = max(0, args.lines)
    try:
        entries = log.tail(n) if n else []
    except OSError as exc:
        raise Exit(EXIT_UNKNOWN, f"cannot read {log.path}: {exc.strerror or exc}") from None
    if args.json:
        for e in entries:
            print(json.dumps(e, sort_keys=True))
        return EXIT_OK
    if not entries:
        print(f"no audit entries in {log.path}")
        return EXIT_OK
    if not is_tty():  # piped: one plain line per entry, never wrapped
        for e in entries:
            print(line(e))
        return EXIT_OK
    out = console()
    for e in entries:
        style = ("cyan" if e.get("dry_run") else
                 {"ok": "green", "failed": "red", "refused": "yellow", "partial": "yellow"}.get(e.get("result"), ""))
        out.print(line(e), style=style or None, markup=False, soft_wrap=True)
    return EXIT_OK


def verify(args: argparse.Namespace) -> int:
    log = audit_log(args)
    try:
        res = log.verify()
    except OSError as exc:
        raise Exit(EXIT_UNKNOWN, f"cannot read {log.path}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps({"path": str(log.path), "ok": res.ok, "entries": res.entries,
                          "first_bad_line": res.first_bad_line, "reason": res.reason}))
        return EXIT_OK if res.ok else EXIT_CRIT
    if res.ok:
        print(f"audit trail intact: {res.entries} entries in {log.path}")
        return EXIT_OK
    print(f"audit trail BROKEN at line {res.first_bad_line} of {log.path}: {res.reason} "
          f"({res.entries} entries before it are intact)")
    bad = _line_text(log.path, res.first_bad_line)
    if bad is not None:
        print(f"line {res.first_bad_line}: {bad[:400]}")
    return EXIT_CRIT


def _line_text(path: Any, lineno: int | None) -> str | None:
    if not lineno:
        return None
    try:
        with open(path, "rb") as fh:
            for i, raw in enumerate(fh, start=1):
                if i == lineno:
                    return raw.decode("utf-8", "replace").rstrip("\n")
    except OSError:
        return None
    return None


def run(args: argparse.Namespace) -> int:
    try:
        if args.audit_command == "tail":
            return tail(args)
        return verify(args)
    except Exit as exc:
        print(f"warroom audit: {exc.message}", file=sys.stderr)
        return exc.code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warroom audit", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
