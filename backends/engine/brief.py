"""The escalation brief and the orders report, built from live state.

The seed's escalation protocol asks for the same things at every level: error
messages from the logs, the affected order count, the timeline of the failure, the
steps already attempted, the RPC endpoint in use. `build_brief(engine)` polls every
source once and collects exactly that into a `Brief`; `render_brief()` prints it as
plain text (for a ticket, a chat or `warroom incident brief`), `Brief.to_dict()` as
JSON. The console's incidents / escalation (backends/engine/incidents.py, notify.py) reuse it.

`orders_report(engine, hours)` is the seed's `emergency-order-fix report`: counts by
state, stuck orders and the orders fixed by hand (from the audit trail).

No Textual, no heavy imports at module level.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from backends.clock import clock_of
from backends.errors import describe_exception, redact
from backends.model import (
    ChainReading,
    CursorReading,
    Finding,
    OrdersReading,
    Snapshot,
    SourceState,
)

if TYPE_CHECKING:
    from backends.sources.postgres import Connection, Record

FIX_ACTIONS = ("orders.fix", "orders.bulk_fix", "orders.reconcile")


# --------------------------------------------------------------------------- helpers


async def settle_logs(hub: Any, wait: float = 2.0) -> None:
    """Start the log hub (if needed) and wait until every source has opened (or failed),
    so a one-shot reading sees the lines already in the files. Bounded by `wait` seconds."""
    if hub is None:
        return
    if not getattr(hub, "running", False):
        await hub.start()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            states = [s.state for s in hub.signals()]
        except Exception:
            return
        if all(s != "starting" for s in states):
            # one more follower tick so the backlog just read is ingested
            await asyncio.sleep(min(0.3, max(0.0, deadline - time.monotonic())))
            return
        await asyncio.sleep(0.05)


def parse_ts(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def audit_since(audit: Any, since: datetime) -> list[dict[str, Any]]:
    """Audit entries at or after `since` (oldest first); corrupt lines are skipped."""
    out = []
    for e in audit.entries():
        ts = parse_ts(e.get("ts"))
        if ts is not None and ts >= since:
            out.append(e)
    return out


def fixed_count(entry: Mapping[str, Any]) -> int:
    """How many orders an executed orders fix changed, from its audit entry."""
    counts = (entry.get("extra") or {}).get("counts") or {}
    fixed = counts.get("fixed")
    if isinstance(fixed, int):
        return fixed
    after = entry.get("after")
    if isinstance(after, Mapping):
        fixed_count = after.get("fixed_count")
        if isinstance(fixed_count, int):
            return fixed_count
        if isinstance(after.get("fixed"), list):
            return len(after["fixed"])
    return 1 if entry.get("result") == "ok" and entry.get("action") == "orders.fix" else 0


# --------------------------------------------------------------------------- the brief


@dataclass
class Brief:
    stack: str
    environment: str
    at: datetime
    findings: list[dict[str, Any]] = field(default_factory=list)  # timeline, oldest first
    affected_orders: int | None = None  # None: the orders could not be read / not configured
    oldest_stuck_age_s: float | None = None
    stuck_sample: list[str] = field(default_factory=list)
    listener: dict[str, Any] | None = None  # cursor against head
    errors: list[dict[str, Any]] = field(default_factory=list)  # {"source", "text"}
    attempted: list[dict[str, Any]] = field(default_factory=list)  # executed actions from the audit
    endpoints: list[dict[str, Any]] = field(default_factory=list)  # RPC endpoints in use
    unreadable: list[dict[str, Any]] = field(default_factory=list)  # sources that could not be read
    timeline: list[dict[str, Any]] = field(default_factory=list)  # {"ts", "what"}, oldest first
    window_hours: float = 24.0

    @property
    def worst(self) -> str | None:
        return min((f["severity"] for f in self.findings), default=None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["at"] = self.at.isoformat()
        d["worst"] = self.worst
        return d


def _finding_dict(f: Finding) -> dict[str, Any]:
    return {"severity": f.severity.label, "since": f.since.isoformat(), "key": f.key, "source": f.source,
            "summary": f.summary, "evidence": list(f.evidence), "playbook": f.playbook}


async def build_brief(engine: Any, *, hours: float = 24.0, snapshot: Snapshot | None = None,
                      log_wait: float = 2.0, max_errors: int = 10) -> Brief:
    """Everything an escalation needs, from one poll of every source (or `snapshot`)."""
    config = engine.config
    w = getattr(config, "warroom", None)
    if snapshot is None:
        if engine.logs is not None:
            try:
                await settle_logs(engine.logs, log_wait)
            except Exception:  # logs are one part of the brief; the rest still counts
                pass
        snapshot = await engine.monitor.poll_once()
    brief = Brief(stack=str(getattr(w, "name", "") or "warroom"), environment=str(getattr(w, "environment", "") or ""),
                  at=clock_of(engine).now(), window_hours=hours)  # the window ends at the engine's now
    brief.findings = [_finding_dict(f) for f in sorted(snapshot.findings, key=lambda f: (f.since, f.severity))]
    # affected orders
    orders = snapshot.of_type(OrdersReading)
    if orders:
        brief.affected_orders = sum(r.stuck_count for r in orders)
        ages = [r.oldest_age_s for r in orders if r.oldest_age_s is not None]
        brief.oldest_stuck_age_s = max(ages) if ages else None
        brief.stuck_sample = [o.id for r in orders for o in r.oldest][:10]
    for c in snapshot.of_type(CursorReading):
        brief.listener = {"name": c.name, "block": c.block, "head": c.head, "finalized": c.finalized,
                          "gap_blocks": c.gap_blocks, "gap_s": c.gap_s}
    # error messages from the logs
    hub = engine.logs
    if hub is not None:
        try:
            for sig in hub.signals():
                for text in sig.recent_errors[:max_errors]:
                    brief.errors.append({"source": sig.name, "text": redact(text)})
        except Exception as exc:
            brief.errors.append({"source": "logs", "text": f"logs could not be read: {describe_exception(exc)}"})
    # steps already attempted (executed actions, refusals included; dry-runs are not steps)
    since = brief.at - timedelta(hours=hours)
    for e in audit_since(engine.audit, since):
        if e.get("dry_run") or "_corrupt" in e or str(e.get("action", "")).endswith(".batch"):
            continue
        brief.attempted.append({"ts": e.get("ts"), "operator": e.get("operator"), "action": e.get("action"),
                                "target": e.get("target"), "result": e.get("result"),
                                "summary": e.get("summary"), "reason": e.get("reason")})
    # RPC endpoints in use
    for ch in snapshot.of_type(ChainReading):
        for ep in ch.endpoints:
            brief.endpoints.append({"chain": ch.chain, "url": ep.url, "name": ep.name, "active": ep.active,
                                    "ok": ep.ok, "head": ep.head, "lag": ep.lag, "latency_ms": ep.latency_ms,
                                    "error": ep.error})
    for name, st in snapshot.sources.items():
        if st.state is not SourceState.OK:
            brief.unreadable.append({"source": name, "reason": st.reason or st.state.value,
                                     "last_good": st.last_good.isoformat() if st.last_good else None})
            if name.startswith("chain.") and not any(e["chain"] == name[6:] for e in brief.endpoints):
                brief.endpoints.extend(_configured_endpoints(config, name[6:], st.reason))
    brief.timeline = _timeline(brief, orders)
    return brief


def _timeline(b: Brief, orders: Sequence[OrdersReading]) -> list[dict[str, Any]]:
    """Findings, the oldest stuck order, unreadable sources and the steps taken, oldest first."""
    events: list[tuple[datetime, str]] = []
    oldest = [(o.created_at, o) for r in orders for o in r.oldest if o.created_at is not None]
    if oldest:
        created, first = min(oldest, key=lambda co: co[0])
        events.append((created, f"oldest stuck order {first.id} created ({first.state})"))
    for f in b.findings:
        ts = parse_ts(f["since"])
        if ts is not None:
            events.append((ts, f"{f['severity']} {f['summary']}"))
    for u in b.unreadable:
        ts = parse_ts(u.get("last_good"))
        events.append((ts or b.at, f"{u['source']} cannot be read: {u['reason']}"
                       + ("" if ts else " (no good reading this run)")))
    for a in b.attempted:
        ts = parse_ts(a.get("ts"))
        if ts is not None:
            events.append((ts, f"{a['operator']}: {a['action']} {a['target']} -> {a['result']}"))
    events.sort(key=lambda e: e[0])
    return [{"ts": ts.isoformat(), "what": what} for ts, what in events]


def _configured_endpoints(config: Any, chain: str, reason: str) -> list[dict[str, Any]]:
    ch = (getattr(config, "chain", None) or {}).get(chain)
    out = []
    for ep in getattr(ch, "endpoints", ()) or ():
        url = getattr(ep, "url", ep)
        shown = url.display() if hasattr(url, "display") else redact(str(url))
        out.append({"chain": chain, "url": shown, "name": getattr(ep, "name", "") or "", "active": None,
                    "ok": False, "head": None, "lag": None, "latency_ms": None, "error": reason})
    return out


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def _hhmm(ts: Any) -> str:
    t = parse_ts(ts) if isinstance(ts, str) else ts
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if t else "?"


def render_brief(b: Brief) -> str:
    """The brief as plain text, in the order the seed's escalation protocol asks for.

    Every value from outside (log lines, error reasons, summaries, names, URLs) is made
    inert one line each (`backends.sanitize.inert`: controls shown escaped, a newline in a
    value cannot fake a line of the brief), and the whole text once more as a block."""
    from backends.sanitize import inert, inert_block

    def x(value: Any, limit: int = 500) -> str:
        return inert(value, limit)

    env = f" ({x(b.environment)})" if b.environment else ""
    lines = [f"INCIDENT BRIEF — {x(b.stack)}{env} — {_hhmm(b.at)}",
             f"worst finding: {x(b.worst) if b.worst else 'none'}; {len(b.findings)} finding(s)", ""]
    lines.append("AFFECTED ORDERS")
    if b.affected_orders is None:
        lines.append("  unknown (orders not configured or could not be read)")
    else:
        lines.append(f"  {b.affected_orders} stuck order(s), oldest {_age(b.oldest_stuck_age_s)}")
        if b.stuck_sample:
            lines.append("  oldest: " + ", ".join(x(i, 100) for i in b.stuck_sample))
    if b.listener:
        lc = b.listener
        lines.append(f"  listener cursor {x(lc['name'])}: block {x(lc['block'])}, head {x(lc['head'])}"
                     + (f", {x(lc['gap_blocks'])} blocks behind" if lc.get("gap_blocks") is not None else ""))
    lines += ["", "ERROR MESSAGES FROM LOGS"]
    lines += [f"  [{x(e['source'])}] {x(e['text'], 2000)}" for e in b.errors] or ["  none seen"]
    lines += ["", "FINDINGS (worst first)"]
    lines += [f"  {x(f['severity'])} {x(f['summary'])}" + (f" [playbook {x(f['playbook'])}]" if f.get("playbook") else "")
              for f in sorted(b.findings, key=lambda f: f["severity"])] or ["  no findings"]
    lines += ["", "TIMELINE (oldest first)"]
    lines += [f"  {_hhmm(t['ts'])} {x(t['what'])}" for t in b.timeline] or ["  nothing recorded"]
    lines += ["", f"STEPS ALREADY ATTEMPTED (last {b.window_hours:g} h, from the audit)"]
    lines += [
        f"  {_hhmm(a['ts'])} {x(a['operator'])}: {x(a['action'])} {x(a['target'])} -> {x(a['result'])}"
        + (f" ({x(a['summary'])})" if a.get("summary") else "")
        + (f" — reason: {x(a['reason'])}" if a.get("reason") else "")
        for a in b.attempted
    ] or ["  none recorded"]
    lines += ["", "RPC ENDPOINTS IN USE"]
    lines += [
        f"  {x(e['chain'])}: {x(e['url'])}" + (" [active]" if e.get("active") else "")
        + (f" head {x(e['head'])}" if e.get("head") is not None else "")
        + (f" lag {x(e['lag'])}" if e.get("lag") else "")
        + (f" {e['latency_ms']:.0f} ms" if e.get("latency_ms") is not None else "")
        + ("" if e.get("ok") else f" DOWN: {x(e.get('error') or 'not answering')}")
        for e in b.endpoints
    ] or ["  no chain configured"]
    if b.unreadable:
        lines += ["", "COULD NOT BE READ"]
        lines += [f"  {x(u['source'])}: {x(u['reason'])}" for u in b.unreadable]
    return inert_block("\n".join(lines), None)


# --------------------------------------------------------------------------- orders report


async def orders_by_state(store: Any, hours: float) -> dict[str, int]:
    """Orders created in the last `hours`, counted by state (config identifiers, quoted)."""
    sql = (f"SELECT {store.c_state}::text AS state, count(*) AS n FROM {store.t} "  # noqa: S608
           f"WHERE {store.c_created} > now() - $1::interval GROUP BY 1")

    async def q(con: Connection) -> list[Record]:
        rows: list[Record] = await con.fetch(sql, timedelta(hours=hours))
        return rows

    return {r["state"]: int(r["n"]) for r in await store.run(q)}


async def orders_report(engine: Any, hours: float = 24.0) -> dict[str, Any]:
    """Counts by state, stuck orders and the fixes done by hand in the last `hours`."""
    bundle = engine.parts.get("orders")
    if bundle is None:
        raise LookupError("no [orders] section in the config")
    store = bundle.store
    by_state = await orders_by_state(store, hours)
    stuck, oldest = await store.stuck_summary()
    now = clock_of(engine).now()
    since = now - timedelta(hours=hours)
    fixes = []
    for e in audit_since(engine.audit, since):
        if e.get("action") in FIX_ACTIONS and not e.get("dry_run") and e.get("result") in ("ok", "partial"):
            fixes.append({"ts": e.get("ts"), "operator": e.get("operator"), "action": e.get("action"),
                          "target": e.get("target"), "fixed": fixed_count(e), "reason": e.get("reason")})
    return {
        "hours": hours,
        "at": now.isoformat(),
        "by_state": dict(sorted(by_state.items())),
        "total": sum(by_state.values()),
        "stuck": stuck,
        "stuck_after_s": store.spec.stuck_after,
        "oldest_stuck_age_s": oldest,
        "fixed_by_hand": sum(f["fixed"] for f in fixes),
        "fixes": fixes,
    }


def verdict_dict(order_id: str, order: Any, verdict: Any) -> dict[str, Any]:
    """One `orders verify` result as plain data."""
    d: dict[str, Any] = {"id": order_id, "found": order is not None,
                         "state": getattr(order, "state", None)}
    if verdict is None:
        d["verdict"] = None if order is None else "unknown"
        return d
    d.update(verdict=verdict.verdict.value, final=verdict.final, tx_hash=verdict.tx_hash, block=verdict.block,
             confirmations=verdict.confirmations, checked_to_block=verdict.checked_to_block,
             reason=verdict.reason)
    return d


def stuck_dicts(orders: Iterable[Any]) -> list[dict[str, Any]]:
    return [{"id": o.id, "state": o.state, "created_at": o.created_at.isoformat() if o.created_at else None,
             "age_s": o.age_s, "block_number": o.block_number, "tx_hash": o.tx_hash} for o in orders]


__all__: Sequence[str] = ("Brief", "build_brief", "render_brief", "orders_report", "orders_by_state",
                          "settle_logs", "audit_since", "fixed_count", "verdict_dict", "stuck_dicts")
