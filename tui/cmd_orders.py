"""`warroom orders stuck|verify|fix|bulk-fix|report`: the seed's emergency-order-fix, headless.

    warroom orders stuck [--older-than 2h] [--json]
    warroom orders verify ID... [--json]
    warroom orders fix ID --state SETTLED --reason TEXT [--execute]
    warroom orders bulk-fix --older-than 4h --state SETTLED --reason TEXT
                            [--only-released | --all-pending] [--canary N] [--execute [--confirm N]]
    warroom orders report [--hours 24] [--json]

Changes are dry-runs unless `--execute`: the dry-run prints exactly what would
change and is written to the audit trail as a dry-run. A reason is required.
`--execute` goes through the same engine as the console (read-only refusal, guard
re-check, conditional updates, audit entry). A bulk fix is a typed confirmation
bound to the exact set the dry-run showed: the dry-run prints a token (a short hash of
the sorted order ids) and keeps the set under `state_dir/bulk-fix/`;
`--execute --confirm TOKEN` fixes those orders and no other: stuck orders that arrived
since are left out (said, with how many), orders no longer pending are skipped.
`--confirm N` (the count) is accepted only while the set is unchanged since the last
dry-run with the same options; otherwise it is refused with what changed. On a terminal
the count is asked for right after the plan is shown. `--read-only`, `--kiosk` (or
`read_only = true` in the config) refuse `--execute` in the engine (audited); dry-runs
still work and write nothing.

Exit codes: 0 done (or nothing to do); 1 the command worked but something is left:
stuck orders exist (`stuck`), an order is not released on chain or not found
(`verify`), an update was skipped or the run stopped part-way (`fix`, `bulk-fix`);
2 refused (read-only, no reason, bad input, confirmation missing or wrong, guard
failed) or the change failed; 3 the config, the database or the chain could not be read.
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
    ask,
    build,
    console,
    is_tty,
    progress_reporter,
    run_job,
)

PROG = "warroom orders"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, timeout=None)
    sub = parser.add_subparsers(dest="orders_command", metavar="{stuck,verify,fix,bulk-fix,report}")
    sub.required = True

    p = sub.add_parser("stuck", help="pending orders older than a threshold (exit 1 when there are some)")
    add_common(p)
    p.add_argument("--older-than", metavar="AGE", help="e.g. 30m, 2h (default: [orders] stuck_after)")
    p.add_argument("--limit", type=int, default=100, help="list at most this many (default 100)")
    p.add_argument("--json", action="store_true", help="one JSON document")

    p = sub.add_parser("verify", help="the on-chain verdict per order")
    add_common(p)
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--json", action="store_true", help="one JSON document")

    p = sub.add_parser("fix", help="set one pending order to a state (dry-run unless --execute)")
    add_common(p)
    p.add_argument("order_id", metavar="ID")
    p.add_argument("--state", required=True, help="target state, e.g. SETTLED")
    p.add_argument("--reason", help="why (required; appended to the order's notes and the audit)")
    _add_execute(p)

    p = sub.add_parser("bulk-fix", help="set every pending order older than AGE to a state (dry-run unless --execute)")
    add_common(p, timeout=None)
    p.add_argument("--older-than", metavar="AGE", required=True, help="e.g. 4h")
    p.add_argument("--state", required=True, help="target state, e.g. SETTLED")
    p.add_argument("--reason", help="why (required)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--only-released", dest="only_released", action="store_const", const=True, default=None,
                      help="only orders whose release event is final on chain (the default for SETTLED)")
    only.add_argument("--all-pending", dest="only_released", action="store_const", const=False,
                      help="every pending order, whatever the chain says")
    p.add_argument("--canary", type=int, default=0, metavar="N",
                   help="fix N orders first, re-verify them, and stop if they do not check out")
    p.add_argument("--batch", type=int, default=None, metavar="N", help="orders per transaction")
    _add_execute(p)

    p = sub.add_parser("report", help="counts by state, stuck orders, fixes by hand (from the audit)")
    add_common(p)
    p.add_argument("--hours", type=float, default=24.0, help="window (default 24)")
    p.add_argument("--json", action="store_true", help="one JSON document")


def _add_execute(p: argparse.ArgumentParser) -> None:
    p.add_argument("--execute", action="store_true", help="apply the change (default: dry-run only)")
    p.add_argument("--confirm", metavar="TEXT",
                   help="the typed confirmation a dangerous plan asks for (bulk-fix: the order count)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask on a terminal (non-typed plans)")


# --------------------------------------------------------------------------- helpers


def _bundle(engine: Any) -> Any:
    bundle = engine.parts.get("orders")
    if bundle is None:
        raise Exit(EXIT_UNKNOWN, "no [orders] section in the config")
    return bundle


def _seconds(text: str | None, what: str = "--older-than") -> float | None:
    if text is None:
        return None
    from backends.units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise Exit(EXIT_CRIT, f"{what}: {exc}") from None


def _age(seconds: float | None) -> str:
    from backends.units import format_age as fmt_age

    return fmt_age(seconds)


def _dump(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _safe(value: Any, limit: int | None = 2000) -> str:
    """Outside text (ids, states, reasons, errors from the database or the chain) made inert."""
    from backends.sanitize import inert

    return inert(value, limit)


def _text(value: Any):
    """A rich Text of outside text: inert, and never read as markup."""
    from rich.text import Text

    return Text(_safe(value))


# --------------------------------------------------------------------------- stuck / verify / report


async def stuck(engine: Any, args: argparse.Namespace) -> int:
    from backends.engine.brief import stuck_dicts

    store = _bundle(engine).store
    older = _seconds(args.older_than)
    if args.limit < 1:
        raise Exit(EXIT_CRIT, "--limit must be at least 1")
    count, oldest = await store.stuck_summary(older)
    orders = await store.stuck(limit=args.limit, older_than=older) if count else []
    threshold = older if older is not None else store.spec.stuck_after
    if args.json:
        _dump({"older_than_s": threshold, "count": count, "oldest_age_s": oldest, "orders": stuck_dicts(orders)})
    else:
        if not count:
            print(f"no orders stuck for more than {_age(threshold)}")
        else:
            from rich.table import Table

            t = Table(title=f"{count} order(s) pending for more than {_age(threshold)} "
                            f"(oldest {_age(oldest)})", title_justify="left")
            for col in ("id", "state", "created", "age"):
                t.add_column(col)
            for o in orders:
                t.add_row(_text(o.id), _text(o.state),
                          o.created_at.isoformat(timespec="seconds") if o.created_at else "?", _age(o.age_s))
            console().print(t)
            if count > len(orders):
                print(f"… and {count - len(orders)} more (--limit)")
    return EXIT_WARN if count else EXIT_OK


async def verify(engine: Any, args: argparse.Namespace) -> int:
    from backends.engine.brief import verdict_dict
    from backends.errors import ActionRefused

    bundle = _bundle(engine)
    if bundle.verifier is None:
        raise ActionRefused("orders.verify", "no chain configured for the orders ([orders] chain)")
    ids = [bundle.store.spec.check_id("orders.verify", i) for i in args.ids]
    found = await bundle.store.get_many(ids)
    verdicts = await bundle.verifier.verify(list(found.values())) if found else {}
    rows = [verdict_dict(i, found.get(i), verdicts.get(i)) for i in ids]
    if args.json:
        _dump({"orders": rows})
    else:
        from backends.sources.orders import _verdict_text

        for r in rows:
            if not r["found"]:
                print(f"{_safe(r['id'])}: no such order")
            else:
                print(f"{_safe(r['id'])} ({_safe(r['state'])}): {_safe(_verdict_text(verdicts.get(r['id'])))}")
    if any(r["verdict"] == "unknown" for r in rows):
        return EXIT_UNKNOWN
    if any(not r["found"] or r["verdict"] != "released" for r in rows):
        return EXIT_WARN
    return EXIT_OK


async def report(engine: Any, args: argparse.Namespace) -> int:
    from backends.engine.brief import orders_report

    _bundle(engine)
    if args.hours <= 0:
        raise Exit(EXIT_CRIT, "--hours must be positive")
    rep = await orders_report(engine, args.hours)
    if args.json:
        _dump(rep)
        return EXIT_OK
    from rich.table import Table

    print(f"orders created in the last {args.hours:g} h, by state")
    t = Table()
    t.add_column("state")
    t.add_column("count", justify="right")
    for state, n in rep["by_state"].items():
        t.add_row(_text(state), str(n))
    t.add_row("total", str(rep["total"]), style="bold")
    out = console()
    out.print(t)
    print(f"stuck (pending > {_age(rep['stuck_after_s'])}): {rep['stuck']}"
          + (f", oldest {_age(rep['oldest_stuck_age_s'])}" if rep["stuck"] else ""))
    print(f"fixed by hand in the last {args.hours:g} h: {rep['fixed_by_hand']} order(s) "
          f"in {len(rep['fixes'])} action(s)")
    for f in rep["fixes"]:
        print(_safe(f"  {f['ts'][:19]}Z {f['operator']} {f['action']} {f['target']}: {f['fixed']} fixed"
                    + (f" — {f['reason']}" if f.get("reason") else "")))
    return EXIT_OK


# --------------------------------------------------------------------------- fix / bulk-fix


def print_plan(plan: Any) -> None:
    """Exactly what would change: the preview, every change with before/after, the guard."""
    from backends.sanitize import inert_block

    out = console()
    out.print(_safe(f"{plan.title} — {plan.target}"), style="bold", markup=False, highlight=False)
    if plan.preview:
        print(inert_block(plan.preview))
    for c in plan.changes:
        print(_safe(f"change: {c.target}: {c.description}"))
        if c.before is not None:  # JSON: controls come out as \u escapes
            print(f"  before: {json.dumps(c.before, default=str, sort_keys=True)[:2000]}")
        if c.after is not None:
            print(f"  after:  {json.dumps(c.after, default=str, sort_keys=True)[:2000]}")
    g = plan.guard
    print(_safe(f"guard: {'OK' if g.ok else 'FAILS'}: {g.description}" + (f" ({g.detail})" if g.detail else "")))
    if plan.reason:
        print(f"reason: {_safe(plan.reason)}")


async def _confirmation(plan: Any, args: argparse.Namespace) -> str | bool | None:
    """What to hand the engine as confirmation for this plan (the engine checks it).

    Typed plans: `--confirm TEXT`, else a prompt on a terminal, else nothing (refused).
    Other plans: `--execute` is the confirmation; on a terminal we ask y/N unless `--yes`.
    """
    from backends.actions.base import Danger

    interactive = is_tty(sys.stdin) and is_tty()
    if plan.danger is Danger.TYPED:
        if args.confirm is not None:
            return args.confirm
        if interactive:
            return await ask(f"type {plan.expected_confirmation} to apply this change: ")
        return None
    if plan.danger is Danger.CONFIRM and interactive and not args.yes and args.confirm is None:
        answer = await ask("apply this change? [y/N] ")
        return answer.lower() in ("y", "yes")
    return True


def _result_code(result: Any) -> int:
    if result.status == "ok":
        return EXIT_OK
    if result.status in ("skipped", "partial"):
        return EXIT_WARN
    return EXIT_CRIT


async def change(engine: Any, args: argparse.Namespace, action: str, params: dict) -> int:
    from backends.errors import ActionRefused

    _bundle(engine)
    if not (args.reason or "").strip():
        raise ActionRefused(action, "a reason is required (--reason TEXT)")
    try:
        plan = await engine.actions.plan(action, **params)
    except ActionRefused as exc:
        if exc.reason.startswith("no pending orders"):
            print(f"nothing to do: {exc.reason}")
            return EXIT_OK
        raise
    print_plan(plan)
    bound = action == "orders.bulk_fix"
    if not args.execute:
        if bound:
            token = remember_set(engine, plan)
            print(f"confirmation token: {token} (`--execute --confirm {token}` fixes exactly these "
                  f"{len(plan.params['ids'])} order(s); stuck orders arriving meanwhile are left out)")
        if engine.actions.read_only:
            print("dry-run: nothing was changed (read-only: no audit entry written); --execute is refused")
            return EXIT_OK
        entry = await engine.actions.record_dry_run_async(plan)
        print(f"dry-run: nothing was changed (audit entry #{entry.get('seq')}); add --execute to apply")
        return EXIT_OK
    if engine.actions.read_only:
        # the engine refuses (and audits the refusal); say why before asking anything
        await engine.actions.execute(plan, confirmation=None)
    confirmation = await _confirmation(plan, args)
    if bound and args.confirm is None and isinstance(confirmation, str) \
            and confirmation.strip() == str(len(plan.params["ids"])):
        # typed at the prompt right under the plan it confirms: that set, exactly
        plan, confirmation = _narrowed(plan, list(plan.params["ids"]), set_token(plan.params["ids"])), \
            set_token(plan.params["ids"])
    elif bound:
        plan, confirmation = await bind_set(engine, plan, confirmation)
    try:
        with progress_reporter(plan.title, plan.total) as progress:
            result = await engine.actions.execute(plan, confirmation=confirmation, progress=progress)
    except ActionRefused as exc:
        if plan.expected_confirmation is not None and "confirmation" in exc.reason:
            if bound:
                token = set_token(plan.params["ids"])
                raise Exit(EXIT_CRIT, f"refused: {exc.reason} (pass --confirm {token}, the token of the "
                                      f"{len(plan.params['ids'])} order(s) shown, or --confirm "
                                      f"{len(plan.params['ids'])} after checking the dry-run)") from None
            raise Exit(EXIT_CRIT, f"refused: {exc.reason} (pass --confirm {plan.expected_confirmation} "
                                  "after checking the dry-run)") from None
        raise
    out = console()
    style = {"ok": "green", "skipped": "yellow", "partial": "yellow"}.get(result.status, "red")
    out.print(_safe(f"{result.status}: {result.summary}"), style=style, markup=False, highlight=False)
    for d in result.details:
        print(f"  {_safe(d)}")
    entry = engine.audit.tail(1)
    if entry:
        print(f"audit entry #{entry[0].get('seq')}")
    return _result_code(result)


async def fix(engine: Any, args: argparse.Namespace) -> int:
    return await change(engine, args, "orders.fix",
                        {"order_id": args.order_id, "state": args.state, "reason": args.reason})


async def bulk_fix(engine: Any, args: argparse.Namespace) -> int:
    older = _seconds(args.older_than)
    params = {"older_than": older, "state": args.state, "reason": args.reason, "canary": args.canary,
              "only_released": args.only_released}
    if args.batch is not None:
        params["batch"] = args.batch
    return await change(engine, args, "orders.bulk_fix", params)


# --------------------------------------------------------------------------- bulk-fix: the confirmed set

SNAPSHOT_KEEP_S = 7 * 86400  # dry-run sets kept this long


def set_token(ids: Any) -> str:
    """The token of a set of order ids: a short hash of the sorted ids."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(str(i) for i in ids)).encode()).hexdigest()[:12]


def _options_key(plan: Any) -> str:
    p = plan.params
    return json.dumps({"state": p.get("state"), "older_than_s": p.get("older_than_s"),
                       "only_released": p.get("only_released")}, sort_keys=True)


def _sets_dir(engine: Any):
    from pathlib import Path

    sd = getattr(engine.config, "state_dir", None)
    return Path(sd) / "bulk-fix" if sd else None


def remember_set(engine: Any, plan: Any) -> str:
    """Keep the previewed set (for `--confirm TOKEN`); its token. Read-only: kept nowhere."""
    import os
    import time

    ids = list(plan.params["ids"])
    token = set_token(ids)
    folder = _sets_dir(engine)
    if folder is None or engine.actions.read_only:
        return token
    try:
        folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for old in folder.glob("*.json"):  # prune
            if now - old.stat().st_mtime > SNAPSHOT_KEEP_S:
                old.unlink(missing_ok=True)
        tmp = folder / f".{token}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"token": token, "ids": ids, "at": now, "options": _options_key(plan),
                                   "target": plan.target}))
        os.replace(tmp, folder / f"{token}.json")
    except OSError as exc:
        print(f"note: the previewed set could not be kept ({exc.strerror or exc}); "
              "--confirm needs the set unchanged", file=sys.stderr)
    return token


def _load_set(engine: Any, token: str) -> dict | None:
    folder = _sets_dir(engine)
    if folder is None or not token.isalnum():
        return None
    try:
        return json.loads((folder / f"{token}.json").read_text())
    except (OSError, ValueError):
        return None


def _latest_set(engine: Any, plan: Any) -> dict | None:
    folder = _sets_dir(engine)
    if folder is None or not folder.is_dir():
        return None
    key, best = _options_key(plan), None
    for f in folder.glob("*.json"):
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if doc.get("options") == key and (best is None or doc.get("at", 0) > best.get("at", 0)):
            best = doc
    return best


def _changes(previewed: list[str], current: list[str]) -> tuple[list[str], list[str]]:
    """(new since the dry-run, previewed but no longer selected)."""
    before, now = set(previewed), set(current)
    return [i for i in current if i not in before], [i for i in previewed if i not in now]


def _some(ids: list[str], n: int = 5) -> str:
    return _safe(", ".join(ids[:n]) + (f" … and {len(ids) - n} more" if len(ids) > n else ""), 400)


def _narrowed(plan: Any, ids: list[str], token: str) -> Any:
    """The plan restricted to `ids` (the previewed orders still selected), confirmed by `token`."""
    from dataclasses import replace

    from backends.actions.base import Change

    st = plan.params["state"]
    c = plan.changes[0] if plan.changes else None
    before = dict(c.before) if c is not None and isinstance(c.before, dict) else {}
    before["ids"] = ids
    change = Change("orders", f"{len(ids)} orders -> {st}", before, {"state": st})
    return replace(plan, params={**plan.params, "ids": ids}, changes=(change,), total=len(ids),
                   confirm_text=token)


async def bind_set(engine: Any, plan: Any, confirmation: Any) -> tuple[Any, Any]:
    """Bind the typed confirmation to the set the operator saw. Returns (plan, confirmation)
    for the engine, which checks the confirmation against the plan's (refusals audited)."""
    from backends.engine.readonly import refuse

    ids = list(plan.params["ids"])
    current = set_token(ids)
    text = confirmation.strip() if isinstance(confirmation, str) else None
    if not text:
        return plan, confirmation
    if text == current:  # the dry-run's set, unchanged
        return _narrowed(plan, ids, current), current
    if text.isdigit():
        latest = _latest_set(engine, plan)
        if latest is not None and latest["token"] != current:
            new, gone = _changes(latest["ids"], ids)
            what = "; ".join(x for x in (
                f"{len(new)} new stuck order(s): {_some(new)}" if new else "",
                f"{len(gone)} no longer selected: {_some(gone)}" if gone else "") if x)
            await refuse(engine.audit, plan.action, plan.target,
                         f"the set changed since the dry-run ({what}); --confirm N holds only for an unchanged "
                         f"set: pass --confirm {latest['token']} to fix exactly the {len(latest['ids'])} order(s) "
                         f"previewed, or run the dry-run again", operator=engine.actions.operator)
        return plan, confirmation  # the count of an unchanged set (the engine compares it)
    snap = _load_set(engine, text)
    if snap is None:
        return plan, confirmation  # the engine refuses it: matches neither the count nor the token
    now = set(ids)
    keep = [i for i in snap["ids"] if i in now]
    new, gone = _changes(snap["ids"], ids)
    if not keep:
        await refuse(engine.audit, plan.action, plan.target,
                     f"none of the {len(snap['ids'])} order(s) of {text} is still selected "
                     f"(no longer pending or eligible); nothing to fix", operator=engine.actions.operator)
    if new:
        print(f"left out: {len(new)} stuck order(s) that arrived after the dry-run ({_some(new)}); "
              "run the dry-run again to include them")
    if gone:
        print(f"skipped: {len(gone)} previewed order(s) no longer selected ({_some(gone)})")
    print(f"fixing the {len(keep)} previewed order(s) of {text}")
    return _narrowed(plan, keep, text), text


COMMANDS = {"stuck": stuck, "verify": verify, "fix": fix, "bulk-fix": bulk_fix, "report": report}


def run(args: argparse.Namespace) -> int:
    prog = f"{PROG} {args.orders_command}"
    try:
        engine = build(args, with_logs=False)
    except Exit as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return exc.code
    fn = COMMANDS[args.orders_command]
    return run_job(prog, lambda: fn(engine, args), engine=engine, timeout=getattr(args, "timeout", None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warroom orders", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
