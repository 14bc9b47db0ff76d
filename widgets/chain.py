"""Chain pane: per chain its RPC endpoints (active marker, head, lag, chain id check, latency,
error), whether the contract is paused, watched balances against their minimum, and the
event listener's cursor gap.

Keys: `o` fail over (to the endpoint under the cursor when it is not the active one),
`P` pause the contract, `U` unpause it, `enter` detail. Signers ([[chain.X.signers]]) are rows
after their chain's endpoints (✎ label, nonce latest/pending, pending count, balance, runway, what
waits): `x` speeds up the selected signer's stuck transaction, `C` cancels it.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static

from backends.model import (
    BalanceReading,
    ChainReading,
    ContractReading,
    CursorReading,
    EndpointReading,
    SignerReading,
    Snapshot,
    Status,
)

from .chainops import OPS_TYPES, ops_rows, score_text
from .common import Health, Row, TablePane, fmt_duration, fmt_int, fmt_ms

ACTIVE = "▶"


def fmt_amount(value: int | None, decimals: int, symbol: str) -> str:
    if value is None:
        return "-"
    v = value / (10 ** decimals) if decimals else value
    text = f"{v:,.4f}".rstrip("0").rstrip(".")
    return f"{text} {symbol}".strip()


class ChainPane(TablePane):
    """RPC endpoints per chain, contract pause state, balances, listener cursor."""

    READING_TYPES = (ChainReading, EndpointReading, ContractReading, BalanceReading, CursorReading, *OPS_TYPES)
    SOURCE_KINDS = frozenset({"evm", "jsonrpc", "chain"})
    COLUMNS = (("status", "St"), ("endpoint", "Endpoint"), ("head", "Head"), ("lag", "Lag"),
               ("chain_id", "Chain id"), ("latency", "Latency"), ("error", "Error"), ("chain", "Chain"))
    DETAIL_KIND = "endpoint"
    NOUN = "chains"
    MUTATING = frozenset({"failover", "pause", "unpause", "speed_up", "cancel_tx"})

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("o", "failover", "Fail over RPC", id="chain_failover"),
        Binding("P", "pause", "Pause contract", id="chain_pause"),
        Binding("U", "unpause", "Unpause contract", id="chain_unpause"),
        Binding("x", "speed_up", "Speed up signer tx", id="signer_speed_up"),
        Binding("C", "cancel_tx", "Cancel signer tx", id="signer_cancel"),
    ]

    DEFAULT_CSS = """
    ChainPane > .pane-extra { height: auto; max-height: 3; text-wrap: nowrap; text-overflow: ellipsis; }
    ChainPane.-empty > .pane-extra { display: none; }
    """

    def compose_extra(self) -> ComposeResult:
        yield Static("", classes="pane-extra")

    # ------------------------------------------------------------------ gathering

    @staticmethod
    def gather(readings: list) -> dict[str, dict]:
        """chain -> {"chain": ChainReading|None, "endpoints": [...], "contracts": [...], "balances": [...]}
        plus "" -> {"cursors": [...]} (cursor readings name no chain)."""
        out: dict[str, dict] = {}

        def slot(name: str) -> dict:
            return out.setdefault(name, {"chain": None, "endpoints": [], "contracts": [], "balances": []})

        cursors: list[CursorReading] = []
        for r in readings:
            if isinstance(r, ChainReading):
                s = slot(r.chain)
                s["chain"] = r
                s["endpoints"].extend(r.endpoints)
                s["contracts"].extend(r.contracts)
                s["balances"].extend(r.balances)
            elif isinstance(r, EndpointReading):
                slot(r.chain)["endpoints"].append(r)
            elif isinstance(r, ContractReading):
                slot(r.chain)["contracts"].append(r)
            elif isinstance(r, BalanceReading):
                slot(r.chain)["balances"].append(r)
            elif isinstance(r, CursorReading):
                cursors.append(r)
        for s in out.values():  # the same endpoint twice (chain reading + standalone): first wins
            seen: set[str] = set()
            unique = []
            for e in s["endpoints"]:
                if e.url not in seen:
                    seen.add(e.url)
                    unique.append(e)
            s["endpoints"] = unique
        out[""] = {"cursors": cursors}
        return out

    # ------------------------------------------------------------------ rendering

    def build_summary(self, snapshot: Snapshot, readings: list, health: Health) -> Text:
        st = self.styles_
        chains = self.gather(readings)
        text = Text()
        for name, s in chains.items():
            if not name:
                continue
            if text:
                text.append("  ")
            eps = s["endpoints"]
            up = sum(1 for e in eps if e.ok)
            status = Status.OK if eps and up == len(eps) else (Status.CRIT if not up else Status.WARN)
            text.append(f"{status.symbol} {name}", style=f"bold {st.of(status)}")
            text.append(f" {up}/{len(eps)} up")
            chain = s["chain"]
            if chain is not None and chain.disagreement:
                text.append(f" {Status.CRIT.symbol} {chain.disagreement}", style=st.crit)
        return text

    def build_rows(self, snapshot: Snapshot, readings: list, health: Health) -> list[Row]:
        st = self.styles_
        rows = []
        for name, s in self.gather(readings).items():
            if not name:
                continue
            chain = s["chain"]
            expected = chain.expected_chain_id if chain is not None else None
            for e in s["endpoints"]:
                active = e.active or (chain is not None and chain.active_url == e.url)
                status = Status.OK if e.ok else Status.CRIT
                if e.ok and (e.lag or 0) > 0:
                    status = Status.WARN
                label = e.name or e.url
                if e.chain_id_ok is True:
                    cid = Text(f"✓ {e.chain_id}", style=st.ok)
                elif e.chain_id_ok is False:
                    cid = Text(f"✖ {e.chain_id}" + (f" ≠ {expected}" if expected is not None else ""),
                               style=f"bold {st.crit}")
                else:
                    cid = Text(f"? {e.chain_id}" if e.chain_id is not None else "?", style=st.unknown)
                word = "UP" if e.ok else "DOWN"
                if e.ok and status is Status.WARN:
                    word = "LAG"
                cells = (
                    st.status_cell(status, word),
                    Text(f"{ACTIVE} {label}" if active else f"  {label}", style="bold" if active else ""),
                    Text(fmt_int(e.head) + (f" fin −{e.head - e.finalized}" if e.head is not None
                                            and e.finalized is not None else
                                            f" depth {e.confirmations}" if e.ok and e.confirmations else "")),
                    Text(fmt_int(e.lag) if e.lag is not None else "-", style=st.warn if e.lag else ""),
                    cid,
                    Text(fmt_ms(e.latency_ms)),
                    Text(e.error or score_text(readings, name, e.name), style=st.crit if e.error else ""),
                    Text(name, style="dim"),
                )
                rows.append(Row(f"{name}|{e.url}", cells, e, e.source,
                                search=f"{name} {label} {e.url} {e.error}"))
            rows += self._signer_rows(name, chain)
        return rows + ops_rows(readings, st)  # scores' switches, missed blocks, guard events, Neo N3

    def extra_text(self, snapshot: Snapshot, readings: list, health: Health) -> Text:
        """One line per chain: contract pause state and balances; then the listener cursor(s)."""
        st = self.styles_
        degraded = {s.name for s in health.degraded}
        text = Text()
        chains = self.gather(readings)
        for name, s in chains.items():
            if not name or not (s["contracts"] or s["balances"]):
                continue
            parts: list[Text] = []
            stale = False
            for c in s["contracts"]:
                stale = stale or c.source in degraded
                part = Text(f"{c.name} ")
                if c.paused is True:
                    part.append(f"{Status.CRIT.symbol} PAUSED", style=f"bold {st.crit}")
                elif c.paused is False:
                    part.append(f"{Status.OK.symbol} not paused", style=st.ok)
                else:
                    part.append(f"{Status.UNKNOWN.symbol} paused?", style=st.unknown)
                if c.code_present is False:
                    part.append(f" {Status.CRIT.symbol} no code", style=st.crit)
                parts.append(part)
            for b in s["balances"]:
                stale = stale or b.source in degraded
                part = Text(f"{b.name} ")
                part.append(f"{b.status.symbol} ", style=f"bold {st.of(b.status)}")
                part.append(b.display or fmt_amount(b.balance, b.decimals, b.symbol),
                            style=st.of(b.status) if b.status is not Status.OK else "")
                if b.minimum is not None:
                    part.append(f" (min {fmt_amount(b.minimum, b.decimals, b.symbol)})", style="dim")
                parts.append(part)
            line = Text()
            for i, part in enumerate(parts):
                if i:
                    line.append("  ·  ", style="dim")
                line.append_text(part)
            self._line(text, f"{name}: ", line, stale)
        for c in chains[""]["cursors"]:
            line = Text()
            gap = c.gap_blocks
            status = Status.UNKNOWN if gap is None else (Status.OK if gap <= 5 else Status.WARN)
            line.append(f"{status.symbol} ", style=st.of(status))
            if gap is not None:
                line.append(f"{fmt_int(gap)} blocks behind", style=f"bold {st.of(status)}" if gap > 5 else "")
            else:
                line.append(f"block {fmt_int(c.block)}, head {fmt_int(c.head)}")
            if c.gap_s is not None:
                line.append(f" ({fmt_duration(c.gap_s)})")
            self._line(text, f"{c.name} cursor: ", line, c.source in degraded)
        return text

    def _line(self, text: Text, label: str, line: Text, stale: bool) -> None:
        if text:
            text.append("\n")
        if stale:
            text.append(f"{Status.UNKNOWN.symbol} STALE {label}{line.plain}", style=self.styles_.stale)
            return
        text.append(label, style="dim")
        text.append_text(line)

    def _apply(self, snapshot: Snapshot, *, table_too: bool) -> None:
        super()._apply(snapshot, table_too=table_too)
        readings = self.readings_of(snapshot)
        self._set_text("extra", self.extra_text(snapshot, readings, self.health(snapshot, readings)))

    # ------------------------------------------------------------------ actions

    def _signer_rows(self, name: str, chain: ChainReading | None) -> list[Row]:
        """One row per signer (enter: its detail; x speed up, C cancel): the status, the label,
        `nonce latest/pending` in the head column, the pending count in the lag column, the
        balance, the runway, and what waits (the oldest pending transaction's blocks, a gap)."""
        st = self.styles_
        rows = []
        for g in (chain.signers if chain is not None else ()):
            stuck = g.oldest_pending_blocks is not None and g.oldest_pending_blocks >= g.stuck_after_blocks
            word = ("STUCK" if stuck else "GAP" if g.gap_nonce is not None else
                    "LOW" if g.status is Status.CRIT else g.status.word)
            waits = ""
            if g.pending_count:
                waits = f"nonce {g.stuck_nonce} waits {fmt_int(g.oldest_pending_blocks)} blk"
            if g.gap_nonce is not None:
                waits = f"gap at nonce {g.gap_nonce}, {g.queued_count} queued"
            runway = f"{fmt_duration(g.runway_s)} left" if g.runway_s is not None else "-"
            cells = (
                st.status_cell(g.status, word),
                Text(f"  ✎ {g.label}"),
                Text(f"n {fmt_int(g.latest_nonce)}/{fmt_int(g.pending_nonce)}"),
                Text(str(g.pending_count), style=st.of(g.status) if g.pending_count else ""),
                Text(g.display or "?"),
                Text(runway, style=st.warn if g.runway_s is not None and g.runway_min_s is not None
                     and g.runway_s < g.runway_min_s else ""),
                Text(waits or g.problem, style=st.of(g.status) if waits else "dim"),
                Text(name, style="dim"),
            )
            rows.append(Row(f"{name}|signer:{g.label}", cells, g, g.source,
                            search=f"{name} signer {g.label} {g.address}"))
        return rows

    def _signer(self) -> SignerReading | None:
        row = self.cursor_row()
        return row.item if row is not None and isinstance(row.item, SignerReading) else None

    def _signer_action(self, action_id: str) -> None:
        g = self._signer()
        if g is None:
            self.notify("Select a signer row (✎) first.", severity="warning", timeout=3)
            return
        self.request(action_id, {"chain": g.chain, "signer": g.label}, f"chain:{g.chain}:{g.label}")

    def action_speed_up(self) -> None:
        self._signer_action("signer.speed_up")

    def action_cancel_tx(self) -> None:
        self._signer_action("signer.cancel")

    def _endpoint(self) -> EndpointReading | None:
        row = self.cursor_row()
        return row.item if row is not None and isinstance(row.item, EndpointReading) else None

    def _chain_name(self) -> str | None:
        e = self._endpoint()
        if e is not None:
            return e.chain
        if self._snapshot is None:
            return None
        names = [n for n in self.gather(self.readings_of(self._snapshot)) if n]
        return names[0] if len(names) == 1 else None

    def _contract(self, chain: str) -> ContractReading | None:
        if self._snapshot is None:
            return None
        s = self.gather(self.readings_of(self._snapshot)).get(chain)
        if not s:
            return None
        pausable = [c for c in s["contracts"] if c.paused is not None]
        return (pausable or s["contracts"] or [None])[0]

    def action_failover(self) -> None:
        e = self._endpoint()
        chain = self._chain_name()
        if chain is None:
            self.app.bell()
            return
        params: dict = {"chain": chain}
        if e is not None and not e.active:
            params["to"] = e.name or e.url
        self.request("chain.failover", params, f"chain:{chain}")

    def _pause(self, action_id: str) -> None:
        chain = self._chain_name()
        if chain is None:
            self.app.bell()
            return
        c = self._contract(chain)
        params: dict = {"chain": chain}
        if c is not None:
            params["contract"] = c.name
        self.request(action_id, params, f"contract:{chain}/{c.name}" if c is not None else f"chain:{chain}")

    def action_pause(self) -> None:
        self._pause("chain.pause")

    def action_unpause(self) -> None:
        self._pause("chain.unpause")

    def action_context(self, verb: str) -> dict:
        chain = self._chain_name()
        return {"chain": chain} if chain else {}
