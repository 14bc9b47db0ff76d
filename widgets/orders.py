"""Stuck orders pane: count, oldest age, counts by state over 24 h, and the oldest stuck orders
with their on-chain verdict (released ✓ final / released (n conf) / not released / unknown).

Keys: `space` select / unselect the order under the cursor, `a` select all shown / none,
`f` fix (the order under the cursor, or the selected orders: `order_ids`), `v` verify on
chain (the selected orders, else the one under the cursor: `ids`), `F` bulk fix and `R`
reconcile (both by age, as the playbook says: they never take the selection, so a plan
never silently covers more orders than the operator picked), `enter` detail.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType

from backends.model import Order, OrdersReading, OrderVerdict, Snapshot, Status, Verdict

from .common import Health, Row, TablePane, _sig, age_s, fmt_coarse, fmt_int

SELECTED = "◉"
UNSELECTED = "○"


def verdict_of(v: OrderVerdict | None) -> tuple[Status, str]:
    """(status, words) of an on-chain verdict."""
    if v is None or v.verdict is Verdict.UNKNOWN:
        return Status.UNKNOWN, f"{Status.UNKNOWN.symbol} unknown"
    if v.verdict is Verdict.RELEASED:
        if v.final:
            return Status.OK, "✓ released, final"
        conf = f"{v.confirmations} conf" if v.confirmations is not None else "not final"
        return Status.WARN, f"{Status.WARN.symbol} released ({conf})"
    return Status.CRIT, f"{Status.CRIT.symbol} not released"


def short_hash(h: str | None) -> str:
    if not h:
        return "-"
    return h if len(h) <= 14 else f"{h[:8]}…{h[-4:]}"


class OrdersPane(TablePane):
    """Stuck escrow orders, oldest first, with their on-chain verdict; multi-select."""

    READING_TYPES = (OrdersReading,)
    SOURCE_KINDS = frozenset({"orders"})
    COLUMNS = (("sel", " "), ("verdict", "On chain"), ("id", "Order"), ("state", "State"),
               ("age", "Age"), ("tx", "Release tx"))
    DETAIL_KIND = "order"
    STATUS_INDEX = 1
    NOUN = "orders"
    MUTATING = frozenset({"fix", "bulk_fix", "reconcile"})

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_select", "Select", id="orders_select"),
        Binding("a", "select_all", "Select all/none", id="orders_select_all", show=False),
        Binding("f", "fix", "Fix", id="fix"),
        Binding("F", "bulk_fix", "Bulk fix", id="orders_bulk_fix"),
        Binding("v", "verify", "Verify on chain", id="orders_verify"),
        Binding("R", "reconcile", "Reconcile", id="orders_reconcile"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.selected: dict[str, None] = {}  # insertion-ordered set of order ids

    # ------------------------------------------------------------------ rendering

    def build_summary(self, snapshot: Snapshot, readings: list, health: Health) -> Text:
        st = self.styles_
        text = Text()
        stuck = sum(r.stuck_count for r in readings)
        oldest = max((r.oldest_age_s for r in readings if r.oldest_age_s is not None), default=None)
        after = min((r.stuck_after_s for r in readings), default=600.0)
        status = Status.CRIT if stuck else Status.OK
        text.append(f"{status.symbol} {fmt_int(stuck)} stuck", style=f"bold {st.of(status)}")
        text.append(f" (> {fmt_coarse(after) if after >= 60 else f'{after:.0f}s'})", style="dim")
        if oldest is not None:
            text.append(f"  oldest {fmt_coarse(oldest)}")
        by_state: dict[str, int] = {}
        for r in readings:
            for k, n in r.by_state_24h.items():
                by_state[k] = by_state.get(k, 0) + n
        if by_state:
            text.append("  24h: ", style="dim")
            text.append(" ".join(f"{k} {fmt_int(n)}" for k, n in sorted(by_state.items(), key=lambda kv: -kv[1])))
        if self.selected:
            text.append(f"  {len(self.selected)} selected", style="bold")
        for r in readings:
            if r.index_ok is False:
                text.append(f"\n{Status.WARN.symbol} no index: {r.index_hint or 'the stuck-orders query scans'}",
                            style=st.warn)
        return text

    def _orders(self, readings: list) -> list[tuple[Order, str]]:
        out: list[tuple[Order, str]] = []
        for r in readings:
            out.extend((o, r.source) for o in r.oldest)
        return out

    def build_rows(self, snapshot: Snapshot, readings: list, health: Health) -> list[Row]:
        now = snapshot.at
        orders = self._orders(readings)
        present = {o.id for o, _ in orders}
        for gone in [k for k in self.selected if k not in present]:
            del self.selected[gone]

        def age(o: Order) -> float:
            a = o.age_s if o.age_s is not None else age_s(o.created_at, now)
            return a if a is not None else -1.0

        rows = []
        seen: set[str] = set()
        for o, source in sorted(orders, key=lambda x: -age(x[0])):
            if o.id in seen:
                continue
            seen.add(o.id)
            rows.append(self._row(o, source, age(o)))
        return rows

    def _row(self, o: Order, source: str, age: float) -> Row:
        st = self.styles_
        status, words = verdict_of(o.verdict)
        tx = o.verdict.tx_hash if o.verdict is not None and o.verdict.tx_hash else o.tx_hash
        cells = (
            self._sel_cell(o.id),
            Text(words, style=st.of(status)),
            Text(o.id, style="bold"),
            Text(o.state),
            Text(fmt_coarse(age) if age >= 0 else "-"),
            Text(short_hash(tx), style="dim"),
        )
        return Row(o.id, cells, o, source, search=f"{o.id} {o.state} {words} {tx or ''}")

    def _sel_cell(self, order_id: str) -> Text:
        if order_id in self.selected:
            return Text(SELECTED, style="bold reverse")
        return Text(UNSELECTED, style="dim")

    def _refresh_sel(self, order_id: str) -> None:
        if order_id not in self._rows:
            return
        cell = self._sel_cell(order_id)
        if self._items.get(order_id) is not None and self._items[order_id].stale:
            cell = Text(cell.plain, style=self.styles_.stale)
        sig = list(self._rows[order_id])
        if sig[0] == _sig(cell):
            return
        sig[0] = _sig(cell)
        self._rows[order_id] = tuple(sig)
        self.table.update_cell(order_id, "sel", cell)
        self.update_calls += 1

    def _refresh_summary(self) -> None:
        if self._snapshot is not None:
            self._apply(self._snapshot, table_too=False)

    # ------------------------------------------------------------------ selection

    def selected_ids(self) -> list[str]:
        """Selected order ids in the order they were selected."""
        return list(self.selected)

    def action_toggle_select(self) -> None:
        key = self.cursor_key()
        if key is None:
            return
        if key in self.selected:
            del self.selected[key]
        else:
            self.selected[key] = None
        self._refresh_sel(key)
        self._refresh_summary()

    def action_select_all(self) -> None:
        shown = self.row_keys()
        if shown and all(k in self.selected for k in shown):
            self.selected.clear()
        else:
            self.selected.update(dict.fromkeys(shown))
        for k in shown:
            self._refresh_sel(k)
        self._refresh_summary()

    def _targets(self) -> list[str]:
        if self.selected:
            return self.selected_ids()
        key = self.cursor_key()
        return [key] if key is not None else []

    # ------------------------------------------------------------------ actions

    def action_fix(self) -> None:
        ids = self._targets()
        if not ids:
            self.app.bell()
            return
        if len(ids) == 1:
            self.request("orders.fix", {"order_id": ids[0]}, f"order:{ids[0]}")
        else:
            self.request("orders.fix", {"order_ids": ids}, f"orders:{len(ids)} selected")

    def action_bulk_fix(self) -> None:
        self.request("orders.bulk_fix", {}, "orders:stuck")

    def action_verify(self) -> None:
        ids = self._targets()
        self.request("orders.verify", {"ids": ids} if ids else {},
                     f"orders:{len(ids)} selected" if len(ids) > 1 else (f"order:{ids[0]}" if ids else "orders:stuck"))

    def action_reconcile(self) -> None:
        self.request("orders.reconcile", {}, "orders:stuck")

    def action_context(self, verb: str) -> dict:
        ids = self._targets()
        if not ids:
            return {}
        return {"order_id": ids[0]} if len(ids) == 1 else {"order_ids": ids}

    def selected_text(self) -> str:
        if self.selected:
            return " ".join(self.selected_ids())
        return self.cursor_key() or ""
