"""Chain operations in the Chain pane (presentational; used by widgets/chain.py): endpoint scores
(error rate, p50/p70/p95), missed block ranges of the listener, contract guard events and Neo N3
(block count per endpoint with lag, the gas bank's GAS, watched contract states). Each is a row
whose item the detail screen (enter) shows in full."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from backends.model import Severity, Status
from backends.sources.guardrails import GuardReading
from backends.sources.integrity import IntegrityReading
from backends.sources.neo import NeoReading, gas_text
from backends.sources.rpcscore import ScoreReading, fmt_ms

from .common import Row, fmt_int

OPS_TYPES = (ScoreReading, IntegrityReading, GuardReading, NeoReading)


def _blank() -> Text:
    return Text("-", style="dim")


def score_text(readings: list[Any], chain: str, endpoint: str) -> str:
    """'err 0% p50 3ms p70 4ms p95 9ms' for an endpoint with a score, else ''."""
    for r in readings:
        if isinstance(r, ScoreReading) and r.chain == chain:
            for s in r.scores:
                if s.name == endpoint and s.samples:
                    text = (f"err {s.error_rate:.0%} p50 {fmt_ms(s.p50_ms)} p70 {fmt_ms(s.p70_ms)} "
                            f"p95 {fmt_ms(s.p95_ms)}")
                    return f"{text} — {s.bad}" if s.bad else text
    return ""


def ops_rows(readings: list[Any], st: Any) -> list[Row]:
    """Rows for missed block ranges, guard events, Neo endpoints, GAS and contracts."""
    rows: list[Row] = []
    for r in readings:
        if isinstance(r, ScoreReading) and r.last_switch:
            rows.append(Row(f"{r.chain}|switch", (
                st.status_cell(Status.WARN, "SWITCH"), Text("automatic switch"), _blank(), _blank(), _blank(),
                _blank(), Text(r.last_switch, style=st.warn), Text(r.chain, style="dim")), r, r.source,
                search=f"{r.chain} switch {r.last_switch}"))
        if isinstance(r, ScoreReading) and r.disagreement:
            rows.append(Row(f"{r.chain}|disagree", (
                st.status_cell(Status.CRIT, "SPLIT"), Text("quorum read"), _blank(), _blank(), _blank(),
                _blank(), Text(r.disagreement, style=st.crit), Text(r.chain, style="dim")), r, r.source,
                search=f"{r.chain} disagree {r.disagreement}"))
        if isinstance(r, IntegrityReading):
            for g in r.gaps:
                rows.append(Row(f"{r.chain}|gap|{g.from_block}-{g.to_block}", (
                    st.status_cell(Status.CRIT, "MISSED"), Text(f"listener {r.name}"), Text(fmt_int(g.from_block)),
                    Text(fmt_int(g.to_block - g.from_block + 1)), _blank(), _blank(),
                    Text(g.text, style=f"bold {st.crit}"), Text(r.chain, style="dim")), g, r.source,
                    search=f"{r.chain} missed {g.text} {' '.join(g.order_ids)}"))
        elif isinstance(r, GuardReading):
            for e in r.events:
                p0 = e.severity is Severity.P0
                rows.append(Row(f"{r.chain}|guard|{e.tx_hash}|{e.log_index}", (
                    st.status_cell(Status.CRIT if p0 else Status.WARN, "P0" if p0 else e.severity.label),
                    Text(e.contract), Text(fmt_int(e.block)), _blank(), _blank(), _blank(),
                    Text(e.text + (f" — {e.why}" if e.why else ""), style=st.crit if p0 else ""),
                    Text(r.chain, style="dim")), e, r.source,
                    search=f"{r.chain} {e.contract} {e.event} {e.tx_hash} {e.text}"))
        elif isinstance(r, NeoReading):
            for n in r.endpoints:
                lagging = n.lag is not None and n.lag >= r.max_lag
                status = Status.CRIT if n.height is None else (Status.WARN if lagging else Status.OK)
                rows.append(Row(f"{r.chain}|neo|{n.url}", (
                    st.status_cell(status, "DOWN" if n.height is None else ("LAG" if lagging else "UP")),
                    Text(f"  {n.name}"), Text(fmt_int(n.height)),
                    Text(fmt_int(n.lag) if n.lag is not None else "-", style=st.warn if n.lag else ""),
                    Text("neo n3", style="dim"), Text(fmt_ms(n.latency_ms)),
                    Text(n.error, style=st.crit if n.error else ""), Text(r.chain, style="dim")), n, r.source,
                    search=f"{r.chain} {n.name} {n.url} {n.error}"))
            if r.gas_bank:
                low = r.gas is not None and r.gas_minimum is not None and r.gas < r.gas_minimum
                status = Status.UNKNOWN if r.gas is None else (Status.CRIT if low else Status.OK)
                rows.append(Row(f"{r.chain}|neo|gas", (
                    st.status_cell(status, "GAS"), Text("gas bank"), _blank(), _blank(), _blank(), _blank(),
                    Text(f"{gas_text(r.gas)}" + (f" (min {gas_text(r.gas_minimum)})" if r.gas_minimum is not None
                                                 else "") + (f" {r.gas_error}" if r.gas_error else ""),
                         style=st.crit if low or r.gas_error else ""),
                    Text(r.chain, style="dim")), r, r.source, search=f"{r.chain} gas {r.gas_bank}"))
            for c in r.contracts:
                changed = c.hash in r.changed
                status = Status.CRIT if c.error else (Status.WARN if changed else Status.OK)
                rows.append(Row(f"{r.chain}|neo|{c.hash}", (
                    st.status_cell(status, "GONE" if c.error else ("UPDATED" if changed else "OK")),
                    Text(c.name or c.hash[:12]), _blank(), _blank(), _blank(), _blank(),
                    Text(c.error or f"updatecounter {c.update_counter}, nef checksum {c.checksum}",
                         style=st.crit if c.error else ""), Text(r.chain, style="dim")), c, r.source,
                    search=f"{r.chain} {c.name} {c.hash}"))
    return rows


__all__ = ["OPS_TYPES", "ops_rows", "score_text"]
