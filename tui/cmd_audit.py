"""`warroom audit tail [-n N] [--json] [--intents]`, `warroom audit verify [--json]`,
`warroom audit repair`.

`tail` prints the last N entries of the audit trail (`[warroom] audit_path`), one
line each (or the entries as JSON lines with `--json`); `--intents` shows the
write-ahead intents too. `verify` walks the file: hash chain, HMAC of each entry
(the key is `<audit file>.key`), sequence numbers (gaps: deletions; going back:
reordering), the head anchor (`<audit file>.head`: truncation), a torn last line,
and the intents with no outcome ("started, outcome unknown: check <target>").
Exit 0 intact; 1 intact but something to check (an intent with no outcome, a torn
tail not yet set aside); 2 an entry was modified, forged, removed, reordered or the
tail truncated (every problem is printed); 3 the config or the file cannot be read.
Entries written before the key existed are counted as unkeyed, not broken.
`repair` sets a torn last line aside now (into `<audit file>.torn`, with an entry
saying so) instead of at the next write. `resolve SEQ --result R --reason TEXT`
writes the outcome of an intent that has none, after checking its target by hand
(R: ok, failed, partial or unknown). Both are refused with --read-only.
Reads only the files: no source is contacted. No Textual.
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
    EXIT_WARN,
    Exit,
    add_common,
    console,
    is_tty,
    load_config,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, timeout=None)
    sub = parser.add_subparsers(dest="audit_command", metavar="{tail,verify,repair,resolve}")
    sub.required = True
    tail = sub.add_parser("tail", help="the last entries of the audit trail")
    add_common(tail, timeout=None)
    tail.add_argument("-n", "--lines", type=int, default=20, metavar="N", help="how many entries (default 20)")
    tail.add_argument("--json", action="store_true", help="the entries as JSON lines, as stored")
    tail.add_argument("--intents", action="store_true", help="show the write-ahead intents too")
    verify = sub.add_parser("verify", help="check chain, MACs, head anchor, torn tail, open intents; "
                                           "exit 0 intact, 1 to check, 2 broken")
    add_common(verify, timeout=None)
    verify.add_argument("--json", action="store_true", help="the result as one JSON document")
    repair = sub.add_parser("repair", help="set a torn last line aside now (into <audit file>.torn)")
    add_common(repair, timeout=None)
    resolve = sub.add_parser("resolve", help="write the outcome of an intent left without one, after checking")
    add_common(resolve, timeout=None)
    resolve.add_argument("seq", type=int, metavar="SEQ", help="the intent's number (from `audit verify`)")
    resolve.add_argument("--result", required=True, choices=("ok", "failed", "partial", "unknown"),
                         help="what the check of its target found")
    resolve.add_argument("--reason", required=True, help="what was checked")


def audit_log(args: argparse.Namespace) -> Any:
    from backends.engine.audit import AuditLog

    config = load_config(args)
    return AuditLog(config.audit_path)


def line(e: dict) -> str:
    """One entry on one line, inert (summaries and reasons carry outside text: RPC errors, output)."""
    from backends.sanitize import inert

    if "_corrupt" in e:
        return inert(f"(corrupt line) {e['_corrupt'][:120]}")
    mode = "dry-run" if e.get("dry_run") else (e.get("result") or "?")
    if e.get("phase") == "intent":
        mode = "intent"
    reason = f" — {e['reason']}" if e.get("reason") else ""
    summary = f": {e['summary']}" if e.get("summary") else ""
    return inert(f"#{e.get('seq', '?')} {e.get('ts', '?')[:19]}Z {e.get('operator', '?')} "
                 f"{e.get('action', '?')} {e.get('target', '')} [{mode}]{summary}{reason}", None)


def tail(args: argparse.Namespace) -> int:
    log = audit_log(args)
    n = max(0, args.lines)
    try:
        entries = log.tail(n, intents=args.intents) if n else []
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
    from backends.sanitize import inert
    log = audit_log(args)
    try:
        res = log.verify()
    except OSError as exc:
        raise Exit(EXIT_UNKNOWN, f"cannot read {log.path}: {exc.strerror or exc}") from None
    code = EXIT_CRIT if res.problems else (EXIT_WARN if res.needs_attention else EXIT_OK)
    if args.json:
        print(json.dumps({"path": str(log.path), **res.as_dict(), "exit_code": code}, default=str))
        return code
    keyed = f"{res.keyed} keyed (HMAC)" + (f", {res.unkeyed} unkeyed (written before the key existed)"
                                           if res.unkeyed else "")
    head = f"; head anchor #{res.head.get('seq')}" if res.head else ""
    if res.problems:
        where = f"at line {res.first_bad_line} of" if res.first_bad_line else "in"
        print(f"audit trail BROKEN {where} {log.path}: {res.reason} ({res.entries} entries before it are intact; "
              f"{res.total} in all: {keyed}{head})")
        if len(res.problems) > 1:
            print(f"{len(res.problems)} problems:")
        for p in res.problems:
            print(inert(f"  {p.kind}: {p.text}", None))
        shown = sorted({p.line for p in res.problems if p.line})[:5]
        for lineno in shown:
            bad = _line_text(log.path, lineno)
            if bad is not None:
                print(f"line {lineno}: {inert(bad[:2000], None)}")
    else:
        print(f"audit trail intact: {res.total} entries in {log.path} ({keyed}){head}")
    if res.torn:
        print(f"  {res.torn['text']}")
    for t in res.set_aside:
        print(f"  torn tail set aside (entry #{t.get('seq')}, {str(t.get('ts', ''))[:19]}Z): offset "
              f"{t.get('offset')}, {t.get('length')} bytes, kept in {t.get('torn_file')}"
              + ("; a whole entry was lost with it" if t.get("whole_entry_lost") else ""))
    for i in res.open_intents:
        ids = i.get("ids") or []
        listed = (": orders " + " ".join(ids[:20]) + (f" … and {len(ids) - 20} more" if len(ids) > 20 else "")
                  if ids else "")
        run = f" (part of run #{i['run']})" if i.get("run") else ""
        print(inert(f"  {i['text']}{listed} — intent #{i.get('seq')} {str(i.get('ts', ''))[:19]}Z "
                    f"{i.get('operator')} {i.get('action')}{run}", None))
    return code


def repair(args: argparse.Namespace) -> int:
    from backends.engine.audit import AuditUnavailable

    log = audit_log(args)
    if getattr(args, "read_only", False):
        raise Exit(EXIT_CRIT, "refused: read-only (repair writes to the audit trail)")
    try:
        tail = log.open_check()
    except AuditUnavailable as exc:
        raise Exit(EXIT_CRIT, f"cannot repair {log.path}: {exc.reason}") from None
    if tail is None:
        print(f"no audit file at {log.path}")
    elif tail.torn:
        print(f"torn last line at offset {tail.torn_offset} ({tail.size - (tail.torn_offset or 0)} bytes) set "
              f"aside into {log.torn_path}; the chain continues from #{tail.seq}")
    else:
        print(f"nothing to repair: {log.path} ends with a whole entry (#{tail.seq})")
    return EXIT_OK


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


def resolve(args: argparse.Namespace) -> int:
    from backends.engine.audit import AuditUnavailable, operator_identity

    if getattr(args, "read_only", False):
        raise Exit(EXIT_CRIT, "refused: read-only (resolve writes to the audit trail)")
    config = load_config(args)
    from backends.engine.audit import AuditLog

    log = AuditLog(config.audit_path)
    if not (args.reason or "").strip():
        raise Exit(EXIT_CRIT, "refused: a reason is required (--reason TEXT)")
    try:
        open_ = {i["seq"]: i for i in log.open_intents_sync()}
    except OSError as exc:
        raise Exit(EXIT_UNKNOWN, f"cannot read {log.path}: {exc.strerror or exc}") from None
    intent = open_.get(args.seq)
    if intent is None:
        raise Exit(EXIT_CRIT, f"refused: #{args.seq} is not an intent without an outcome "
                              f"(open: {', '.join(f'#{s}' for s in sorted(open_)) or 'none'})")
    operator = getattr(getattr(config, "warroom", None), "operator", None) or operator_identity()
    try:
        entry = log.append(action=intent["action"], target=intent["target"], operator=operator,
                           reason=args.reason.strip(), result=args.result, phase="outcome", intent=args.seq,
                           summary=f"outcome of #{args.seq} checked by hand: {args.result}",
                           extra={"resolved_by_hand": True})
    except AuditUnavailable as exc:
        raise Exit(EXIT_CRIT, f"cannot write to {log.path}: {exc.reason}") from None
    print(f"intent #{args.seq} ({intent['action']} {intent['target']}): outcome {args.result} "
          f"written as entry #{entry['seq']}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    try:
        if args.audit_command == "tail":
            return tail(args)
        if args.audit_command == "repair":
            return repair(args)
        if args.audit_command == "resolve":
            return resolve(args)
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
