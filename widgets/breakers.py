"""Breakers pane: counts (open / half-open / closed of total) and the breakers, not-closed first:
state, failures, last failure, time to half-open.

Keys: `b` reset the breaker under the cursor, `B` reset all open breakers, `enter` detail.
"""

from __future__ import annotations

import heapq
from datetime import UTC, datetime
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType

from backends.model import BreakerReading, BreakersReading, Snapshot, Status

from .common import Health, Row, TablePane, age_s, fmt_coarse, fmt_duration, fmt_int

STATE_STATUS = {"open": Status.CRIT, "half-open": Status.WARN, "closed": Status.OK}
STATE_RANK = {"open": 0, "half-open": 1, "closed": 2}
MAX_CLOSED_ROWS = 50  # closed breakers beyond this are counted, not listed


_CANON = {"open": "open", "closed": "closed", "half-open": "half-open", "OPEN": "open", "CLOSED": "closed",
          "HALF_OPEN": "half-open", "half_open": "half-open", "HALF-OPEN": "half-open"}


def normal_state(state: str) -> str:
    fast = _CANON.get(state)
    if fast is not None:
        return fast
    s = (state or "").strip().lower().replace("_", "-").replace(" ", "-")
    return "half-open" if s in ("half-open", "halfopen") else s or "closed"


class BreakersPane(TablePane):
    """Circuit breakers."""

    READING_TYPES = (BreakersReading, BreakerReading)
    SOURCE_KINDS = frozenset({"breakers", "breaker"})
    COLUMNS = (("status", "State"), ("name", "Breaker"), ("failures", "Failures"),
               ("last", "Last failure"), ("half_open", "Half-open in"))
    DETAIL_KIND = "breaker"
    NOUN = "breakers"
    MUTATING = frozenset({"reset", "reset_all"})

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("b", "reset", "Reset breaker", id="reset_breaker"),
        Binding("B", "reset_all", "Reset all breakers", id="reset_all_breakers"),
    ]

    @staticmethod
    def breakers_of(readings: list) -> tuple[list[BreakerReading], int, int, int]:
        """(breakers, total, open, half_open) across every reading of the pane."""
        items: list[BreakerReading] = []
        total = opened = half = 0
        for r in readings:
            if isinstance(r, BreakersReading):
                items.extend(r.breakers)
                total += r.total or len(r.breakers)
                opened += r.open if (r.open or r.total) else sum(
                    1 for b in r.breakers if normal_state(b.state) == "open")
                half += r.half_open if (r.half_open or r.total) else sum(
                    1 for b in r.breakers if normal_state(b.state) == "half-open")
            else:
                items.append(r)
                total += 1
                s = normal_state(r.state)
                opened += s == "open"
                half += s == "half-open"
        return items, total, opened, half

    def build_summary(self, snapshot: Snapshot, readings: list, health: Health) -> Text:
        _, total, opened, half = self.breakers_of(readings)
        st = self.styles_
        text = Text()
        text.append(f"{Status.CRIT.symbol} {opened} open", style=f"bold {st.crit}" if opened else "")
        text.append("  ")
        text.append(f"{Status.WARN.symbol} {half} half-open", style=f"bold {st.warn}" if half else "")
        text.append("  ")
        text.append(f"{Status.OK.symbol} {fmt_int(max(0, total - opened - half))} closed",
                    style=st.ok if not (opened or half) else "")
        text.append(f" of {fmt_int(total)}")
        return text

    def build_rows(self, snapshot: Snapshot, readings: list, health: Health) -> list[Row]:
        st = self.styles_
        items, _, _, _ = self.breakers_of(readings)
        now = snapshot.at

        # not-closed first (by state, then most recent failure); then the most recently failed
        # closed ones, at most MAX_CLOSED_ROWS of them (1,000 breakers stay cheap)
        never = datetime.min.replace(tzinfo=UTC)
        hot: list[tuple[int, BreakerReading]] = []
        cold: list[BreakerReading] = []
        for b in items:
            rank = STATE_RANK.get(normal_state(b.state), 1)
            if rank == 2:
                cold.append(b)
            else:
                hot.append((rank, b))
        hot.sort(key=lambda rb: (rb[0], -(rb[1].last_failure_at or never).timestamp(), rb[1].name))
        cold = heapq.nlargest(MAX_CLOSED_ROWS, cold, key=lambda b: (b.last_failure_at or never, b.name))
        rows: list[Row] = []
        seen: set[str] = set()
        for b in [b for _, b in hot] + cold:
            if b.name in seen:
                continue
            seen.add(b.name)
            rows.append(self._row(b, now, st))
        return rows

    def _row(self, b: BreakerReading, now, st) -> Row:
        state = normal_state(b.state)
        half_in = "-"
        if state == "open":
            half_in = "due" if b.half_open_in_s is not None and b.half_open_in_s <= 0 else (
                fmt_duration(b.half_open_in_s) if b.half_open_in_s is not None else "?")
        last = f"{fmt_coarse(age_s(b.last_failure_at, now))} ago" if b.last_failure_at else "-"

        def cells() -> tuple[Text, ...]:
            status = STATE_STATUS.get(state, Status.UNKNOWN)
            return (
                st.status_cell(status, state.upper()),
                Text(b.name, style="bold" if state != "closed" else ""),
                Text(fmt_int(b.failures), style=st.of(status) if b.failures and state != "closed" else ""),
                Text(last),
                Text(half_in),
            )

        return Row(b.name, (), b, b.source, search=f"{b.name} {state}",
                   fingerprint=(state, b.failures, last, half_in), make=cells)

    def _breaker(self) -> BreakerReading | None:
        row = self.cursor_row()
        return row.item if row is not None else None

    def action_reset(self) -> None:
        b = self._breaker()
        if b is None:
            self.app.bell()
            return
        self.request("breaker.reset", {"trigger_id": b.name}, f"breaker:{b.name}")

    def action_reset_all(self) -> None:
        self.request("breaker.reset_all", {}, "breakers:all open")

    def action_context(self, verb: str) -> dict:
        b = self._breaker()
        return {"trigger_id": b.name} if b is not None else {}
