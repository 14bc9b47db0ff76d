"""`warroom health [--json] [AREA]`: one-shot health report for cron, CI and monitoring.

Polls the sources of AREA once (each with its own timeout), evaluates the rules and
prints a table (or, with `--json`, one document described by
`backends/health_schema.json`). Exit codes, as monitoring plugins expect:

- 0 OK: every source read, no finding;
- 1 WARNING: findings of severity P2 / P3 only;
- 2 CRITICAL: at least one finding of severity P0 / P1;
- 3 UNKNOWN: a source could not be read (down, timed out) and nothing is critical,
  nothing is configured for AREA, or the config could not be loaded.

The run keeps a deadline: `--timeout` (default: the longest timeout of the area's
sources). A source still polling then is UNKNOWN ("did not answer within Ns"), and
the command ends within the deadline plus a second even when something blocks its
event loop (a thread outside the loop prints what it has and exits). An unknown AREA
exits 3 with the list of areas.

Severities map P0/P1 -> critical, P2/P3 -> warn. A finding about a source that
could not be read this run (e.g. "Postgres unreachable") counts as unknown, not by
its severity: nothing was measured. Critical outranks unknown (a down source next to
a P0 from a source that was read is still critical). No Textual.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from tui.headless import (
    EXIT_CRIT,
    EXIT_OK,
    EXIT_UNKNOWN,
    EXIT_WARN,
    Exit,
    add_common,
    build,
    console,
    run_job,
)

SCHEMA_ID = "warroom.health/1"
AREAS = ("all", "quick", "services", "database", "queues", "breakers", "chain", "events", "orders", "resources",
         "alerts")
QUICK = ("services", "database", "queues", "breakers", "chain")
STATUS_OF_EXIT = {EXIT_OK: "ok", EXIT_WARN: "warn", EXIT_CRIT: "critical", EXIT_UNKNOWN: "unknown"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, timeout=None)
    # no argparse `choices`: an unknown area is UNKNOWN (exit 3, as monitoring plugins do), not 2
    parser.add_argument("area", nargs="?", default="all", metavar="AREA",
                        help=", ".join(a + (" (default)" if a == "all" else "") for a in AREAS))
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=None,
                        help="give up on sources still polling after this long; the command ends within "
                             "it plus a second (default: the longest timeout of the area's sources)")
    parser.add_argument("--json", action="store_true", help="print one JSON document (backends/health_schema.json)")
    parser.epilog = "exit codes: 0 ok, 1 warn (P2/P3 findings), 2 critical (P0/P1), 3 unknown (a source could not be read)"


def severity_status(sev: Any) -> str:
    """P0/P1 -> critical, P2/P3 -> warn."""
    return "critical" if int(sev) <= 1 else "warn"


def select(engine: Any, area: str) -> list[str]:
    from backends.engine.core import sources_by_area

    by_area = sources_by_area(engine)
    if area == "all":
        return list(engine.monitor.sources)
    wanted = QUICK if area == "quick" else (area,)
    names = [n for a in wanted for n in by_area.get(a, ())]
    if area == "events":
        # the event listener: log signals plus the listener cursor, which the orders source reads
        names += [n for n in by_area.get("orders", ()) if n not in names]
    return names


def _area_of(engine: Any) -> dict[str, str]:
    from backends.engine.core import sources_by_area

    return {n: a for a, names in sources_by_area(engine).items() for n in names}


def describe(reading: Any) -> str:
    """One short line about a reading (the table's detail column, the JSON's `detail`)."""
    from backends import model as m

    r = reading
    if isinstance(r, m.PostgresReading):
        lat = f"{r.latency_ms:.0f} ms, " if r.latency_ms is not None else ""
        return (f"{lat}{r.total_connections}/{r.max_connections} connections"
                + (f", {len(r.long_queries)} long queries" if r.long_queries else ""))
    if isinstance(r, m.RedisReading):
        lat = f"{r.latency_ms:.0f} ms, " if r.latency_ms is not None else ""
        return f"{lat}{r.used_memory_bytes / 1e6:.1f} MB used"
    if isinstance(r, m.QueueReading):
        age = f", oldest {r.oldest_age_s:.0f}s" if r.oldest_age_s is not None else ""
        dl = f", dead {r.dead_letter_depth}" if r.dead_letter_depth else ""
        failed = f", failed {r.failed}" if r.failed else ""
        return f"queue {r.name}: depth {r.depth}{age}{failed}{dl}"
    if isinstance(r, m.BreakersReading):
        return f"{r.total} breakers, {r.open} open, {r.half_open} half-open"
    if isinstance(r, m.OrdersReading):
        if not r.stuck_count:
            return "no stuck orders"
        return f"{r.stuck_count} stuck (oldest {r.oldest_age_s or 0:.0f}s)"
    if isinstance(r, m.CursorReading):
        gap = f", {r.gap_blocks} blocks behind" if r.gap_blocks is not None else ""
        return f"listener cursor {r.name}: block {r.block}, head {r.head}{gap}"
    if isinstance(r, m.ChainReading):
        ok = sum(1 for e in r.endpoints if e.ok)
        active = next((e for e in r.endpoints if e.active), None)
        head = f", head {active.head}" if active and active.head is not None else ""
        paused = [c.name for c in r.contracts if c.paused]
        return (f"chain {r.chain}: {ok}/{len(r.endpoints)} endpoints ok{head}"
                + (f", PAUSED: {', '.join(paused)}" if paused else ""))
    if isinstance(r, m.ServiceReading):
        health = f" ({r.health})" if r.health else ""
        return f"{r.name}: {r.state}{health}"
    if isinstance(r, m.HostReading):
        disks = ", ".join(f"{mnt} {pct:.0f}%" for mnt, pct in r.disks)
        return f"cpu {r.cpu_percent:.0f}%, mem {r.mem_percent:.0f}%" + (f", disk {disks}" if disks else "")
    if isinstance(r, m.CheckReading):
        val = f" {r.value}{r.unit}" if r.value is not None else ""
        return f"{r.name}:{val} {r.detail}".strip()
    if isinstance(r, m.LogSignalReading):
        text = f"log {r.name}: {r.errors[1]} errors, {r.warnings[1]} warnings in 5 min"
        if r.success_per_min is not None:
            text += f", {r.success_per_min:.1f} successes/min"
            quiet = getattr(r, "success_silent_for_s", None)
            if getattr(r, "last_success_at", None) is None:
                text += " (none since warroom started)"
            elif quiet is not None and quiet >= 60:
                text += f" (last {quiet / 60:.0f} min ago)"
        return text
    if callable(getattr(r, "describe", None)):  # readings that say themselves (Alertmanager's alerts, silences)
        return str(r.describe())
    return type(r).__name__


def log_signals(readings: Sequence[Any]) -> list[dict]:
    """The numbers of a log source's signals (the JSON's `logs`), one object per log source."""
    from backends import model as m

    out = []
    for r in readings:
        if not isinstance(r, m.LogSignalReading):
            continue
        last = getattr(r, "last_success_at", None)
        quiet = getattr(r, "success_silent_for_s", None)
        out.append({
            "name": r.name,
            "lines_5m": r.lines[1],
            "errors_5m": r.errors[1],
            "warnings_5m": r.warnings[1],
            "silent_for_s": round(r.silent_for_s, 1) if r.silent_for_s is not None else None,
            "success_per_min": round(r.success_per_min, 2) if r.success_per_min is not None else None,
            "last_success": last.isoformat() if last else None,
            "success_silent_for_s": round(quiet, 1) if quiet is not None else None,
        })
    return out


def queue_fields(readings: Sequence[Any]) -> list[dict]:
    """The numbers of a queue source's queues (the JSON's `queues`), one object per queue."""
    from backends import model as m

    def num(v: float | None) -> float | None:
        return round(v, 1) if v is not None else None

    return [{
        "name": r.name,
        "type": r.type,
        "key": r.key,
        "depth": r.depth,
        "oldest_age_s": num(r.oldest_age_s),
        "max_age_s": r.max_age_s,
        "failed": r.failed,
        "dead": r.dead_letter_depth,
        "delayed": r.delayed,
        "active": r.active,
        "pending": r.pending,
        "paused": r.paused,
        "status": r.status.value,
        "drain_rate": round(r.drain_rate, 3) if r.drain_rate is not None else None,
    } for r in readings if isinstance(r, m.QueueReading)]


def document(engine: Any, snapshot: Any, names: Sequence[str], area: str) -> dict:
    """The `--json` document (schema `warroom.health/1`)."""
    from backends.model import SourceState

    areas = _area_of(engine)
    w = getattr(engine.config, "warroom", None)
    # only the area's sources were polled, so every finding is the area's (a degraded
    # finding of a source outside the area cannot occur in a one-shot run, but is dropped)
    findings = [f for f in snapshot.findings if f.source in names or not f.key.startswith("degraded:")]
    unreadable = {n for n in names if (st := snapshot.sources.get(n)) is None or st.state is not SourceState.OK}

    def owner(f: Any) -> str:
        # "logs:stalled" is a finding of the log hub's source "logs"
        return f.source if f.source in names or ":" not in f.source else f.source.split(":", 1)[0]

    def status_of(f: Any) -> str:
        # a finding about a source that could not be read this run ("postgres unreachable")
        # says nothing measured: it is unknown, whatever its severity
        if f.key.startswith("degraded:") or owner(f) in unreadable:
            return "unknown"
        return severity_status(f.severity)

    worst_by_source: dict[str, str] = {}
    for f in findings:
        s = status_of(f)
        if s == "unknown":
            continue
        src = owner(f)
        if worst_by_source.get(src) != "critical":
            worst_by_source[src] = s
    sources = []
    for n in names:
        st = snapshot.sources.get(n)
        state = st.state.value if st else "pending"
        status = "unknown" if state != SourceState.OK.value else worst_by_source.get(n, "ok")
        entry = {
            "name": n,
            "kind": st.kind if st else "",
            "area": areas.get(n, ""),
            "state": state,
            "status": status,
            "reason": st.reason if st else "",
            "poll_ms": round(st.poll_ms, 1) if st and st.poll_ms is not None else None,
            "last_good": st.last_good.isoformat() if st and st.last_good else None,
            "detail": [describe(r) for r in snapshot.readings.get(n, ())][:50],
        }
        logs = log_signals(snapshot.readings.get(n, ()))
        if logs:
            entry["logs"] = logs[:50]
        queues = queue_fields(snapshot.readings.get(n, ()))
        if queues:
            entry["queues"] = queues[:200]
        sources.append(entry)
    fl = [{
        "key": f.key,
        "severity": f.severity.label,
        "status": status_of(f),
        "source": f.source,
        "summary": f.summary,
        "evidence": list(f.evidence),
        "playbook": f.playbook,
        "target": f.target,
        "since": f.since.isoformat(),
    } for f in findings]
    counts = {
        "critical": sum(1 for f in fl if f["status"] == "critical"),
        "warn": sum(1 for f in fl if f["status"] == "warn"),
        "unknown": sum(1 for s in sources if s["status"] == "unknown"),
        "sources": len(sources),
    }
    if not sources:  # nothing configured for this area: nothing was checked
        code = EXIT_UNKNOWN
    elif counts["critical"]:
        code = EXIT_CRIT
    elif counts["unknown"]:
        code = EXIT_UNKNOWN
    elif counts["warn"]:
        code = EXIT_WARN
    else:
        code = EXIT_OK
    doc = {
        "schema": SCHEMA_ID,
        "stack": str(getattr(w, "name", "") or "warroom"),
        "environment": str(getattr(w, "environment", "") or ""),
        "area": area,
        "at": snapshot.at.isoformat(),
        "status": STATUS_OF_EXIT[code],
        "exit_code": code,
        "counts": counts,
        "sources": sources,
        "findings": fl,
    }
    if not sources:
        doc["reason"] = f"no source is configured for area {area!r}"
    return doc


def unknown_document(area: str, reason: str) -> dict:
    from backends.model import utcnow

    return {"schema": SCHEMA_ID, "stack": "", "environment": "", "area": area, "at": utcnow().isoformat(),
            "status": "unknown", "exit_code": EXIT_UNKNOWN, "reason": reason,
            "counts": {"critical": 0, "warn": 0, "unknown": 0, "sources": 0}, "sources": [], "findings": []}


def deadline_of(engine: Any, names: Sequence[str], timeout: float | None) -> float:
    """The run's deadline in seconds: `--timeout`, else the longest timeout of the sources."""
    if timeout is not None and timeout > 0:
        return float(timeout)
    srcs = engine.monitor.sources
    return max((float(getattr(srcs[n], "timeout", 5.0)) for n in names if n in srcs), default=5.0)


async def check(engine: Any, area: str, deadline: float | None = None, *, t0: float | None = None) -> dict:
    """Poll the area's sources once (within `deadline` seconds of `t0`) and build the document."""
    from backends.engine.brief import settle_logs

    t0 = time.monotonic() if t0 is None else t0
    names = select(engine, area)
    limit = deadline_of(engine, names, deadline)

    def left() -> float:
        return limit - (time.monotonic() - t0) - 0.2  # leave time for the rules and printing

    if engine.logs is not None and engine.logs.name in names:
        await settle_logs(engine.logs, max(0.0, min(2.0, left() / 2)))
    if not names:
        snap = engine.monitor.snapshot
    else:
        snap = await engine.monitor.poll_once(names, deadline=max(0.05, left()), shown_deadline=limit)
    return document(engine, snap, names, area)


def render(doc: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    from backends.sanitize import inert

    def x(value) -> Text:  # outside text (reasons, summaries, names): inert, never markup
        return Text(inert(value or "", 2000))

    out = console()
    style = {"ok": "green", "warn": "yellow", "critical": "bold red", "unknown": "magenta"}
    word = {"ok": "OK", "warn": "WARN", "critical": "CRIT", "unknown": "UNKNOWN"}
    env = f" ({doc['environment']})" if doc["environment"] else ""
    t = Table(title=x(f"{doc['stack']}{env} — health: {doc['area']}"), title_justify="left", expand=False)
    t.add_column("source")
    t.add_column("area")
    t.add_column("status")
    t.add_column("detail", overflow="fold")
    for s in doc["sources"]:
        detail = s["reason"] if s["status"] == "unknown" and s["reason"] else "; ".join(s["detail"][:4])
        if len(s["detail"]) > 4 and s["status"] != "unknown":
            detail += f"; … {len(s['detail']) - 4} more"
        t.add_row(x(s["name"]), s["area"], Text(word[s["status"]], style=style[s["status"]]), x(detail))
    if not doc["sources"]:
        t.add_row("—", doc["area"], Text("UNKNOWN", style=style["unknown"]), "no source configured for this area")
    out.print(t)
    if doc["findings"]:
        ft = Table(title="findings (worst first)", title_justify="left")
        ft.add_column("sev")
        ft.add_column("source")
        ft.add_column("summary", overflow="fold")
        ft.add_column("playbook")
        for f in doc["findings"]:
            ft.add_row(Text(f["severity"], style=style[f["status"]]), x(f["source"]), x(f["summary"]),
                       x(f["playbook"]))
        out.print(ft)
    c = doc["counts"]
    out.print(Text(f"{word[doc['status']]}: {c['critical']} critical, {c['warn']} warning, "
                   f"{c['unknown']} unreadable of {c['sources']} source(s)", style=style[doc["status"]]))


def bad_area(area: str) -> str:
    return f"unknown area {area!r}; areas: {', '.join(AREAS)}"


def IN_PROCESS() -> bool:  # noqa: N802 - a switch tests may replace
    """True when `run()` is called inside a test runner's process (pytest), not as the command."""
    return "pytest" in sys.modules


class HardDeadline:
    """A thread outside the event loop that ends the process at the deadline plus a second,
    even when the loop is blocked (a CPU-bound parse, a call that ignores cancellation):
    with the exit code of the document already printed, else UNKNOWN (3) with a line
    saying so (and, with --json, an unknown document)."""

    def __init__(self, prog: str, area: str, as_json: bool, seconds: float, shown: float | None = None) -> None:
        self.prog, self.area, self.as_json, self.seconds = prog, area, as_json, seconds
        self.shown = seconds if shown is None else shown  # the deadline the message names
        self.code: int | None = None  # set once the result is printed
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-deadline", daemon=True)

    def start(self) -> HardDeadline:
        self._thread.start()
        return self

    def finish(self) -> None:
        self._done.set()

    def _run(self) -> None:
        if self._done.wait(self.seconds):
            return
        code = self.code
        if IN_PROCESS():  # called from a test runner: never end its process
            if code is None:
                print(f"{self.prog}: no result within {self.shown:g}s", file=sys.stderr)
            return
        try:
            if code is None:
                if self.as_json:
                    doc = unknown_document(self.area, f"no result within {self.shown:g}s")
                    os.write(1, (json.dumps(doc) + "\n").encode())
                os.write(2, f"{self.prog}: no result within {self.shown:g}s: UNKNOWN\n".encode())
            else:
                try:
                    sys.stdout.flush()
                except Exception:  # noqa: BLE001 - the main thread may hold the buffer
                    pass
        finally:
            os._exit(EXIT_UNKNOWN if code is None else code)


def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    area = args.area
    prog = "warroom health"
    if area not in AREAS:  # a usage error (no document: its `area` could not be valid)
        print(f"{prog}: {bad_area(area)}", file=sys.stderr)
        return EXIT_UNKNOWN
    try:
        engine = build(args)
    except Exit as exc:
        if args.json:
            print(json.dumps(unknown_document(area, exc.message)))
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return exc.code
    result: dict[str, Any] = {}
    limit = deadline_of(engine, select(engine, area), getattr(args, "timeout", None))
    hard = HardDeadline(prog, area, bool(args.json), max(0.5, limit + 0.9 - (time.monotonic() - t0)),
                        shown=limit).start()

    async def job() -> int:
        doc = await check(engine, area, limit, t0=t0)
        result["doc"] = doc
        if not doc["sources"] and area != "all":
            print(f"{prog}: nothing configured for area {area!r}", file=sys.stderr)
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            render(doc)
        for s in doc["sources"]:
            if s["status"] == "unknown":
                from backends.sanitize import inert

                print(inert(f"{prog}: {s['name']} cannot be read: {s['reason'] or s['state']}"), file=sys.stderr)
        sys.stdout.flush()
        hard.code = int(doc["exit_code"])  # printed: from here only the clean-up may run late
        return hard.code

    try:
        code = run_job(prog, job, engine=engine)
    finally:
        if IN_PROCESS():
            hard.finish()
        # else it stays armed: a thread stuck in a hung call would hold the interpreter's exit

    if args.json and "doc" not in result:
        print(json.dumps(unknown_document(area, "the health check did not finish")))
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warroom health", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
