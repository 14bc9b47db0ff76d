"""Queues pane: depth against thresholds, sparkline of history, drain rate, time to drain,
oldest job, dead letters.

Keys: `R` requeue the dead letters of the queue under the cursor, `enter` detail.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType

from backends.model import QueueReading, Snapshot, Status

from .common import Health, Row, TablePane, fmt_duration, fmt_int, sparkline


def compact(n: int | float | None) -> str:
    """1000 -> 1k, 12500 -> 12.5k, 2000000 -> 2M."""
    if n is None:
        return "-"
    n = float(n)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            v = n / div
            return (f"{v:.1f}".rstrip("0").rstrip(".")) + suffix
    return f"{n:g}"


def drain_text(rate: float | None) -> str:
    """Jobs/s, positive = draining: '↓12.5/s' draining, '↑3/s' growing, '0/s' flat."""
    if rate is None:
        return "-"
    if abs(rate) < 0.05:
        return "0/s"
    arrow = "↓" if rate > 0 else "↑"
    v = abs(rate)
    return f"{arrow}{v:.1f}/s" if v < 100 else f"{arrow}{v:,.0f}/s"


class QueuesPane(TablePane):
    """Job queues (Redis lists, streams, sorted sets)."""

    READING_TYPES = (QueueReading,)
    SOURCE_KINDS = frozenset({"queue", "queues", "redis"})
    COLUMNS = (("status", "St"), ("name", "Queue"), ("depth", "Depth"), ("trend", "Trend"),
               ("drain", "Drain"), ("eta", "To drain"), ("oldest", "Oldest"), ("dead", "Failed/dead"),
               ("limits", "Warn/High/Crit"))
    DETAIL_KIND = "queue"
    NOUN = "queues"
    MUTATING = frozenset({"requeue_dead"})

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("R", "requeue_dead", "Requeue dead letters", id="requeue_dead"),
    ]

    def build_summary(self, snapshot: Snapshot, readings: list, health: Health) -> Text:
        total = sum(r.depth for r in readings)
        worst = Status.worst(*(r.status for r in readings)) if readings else Status.OK
        text = Text()
        text.append(f"{len(readings)} queues", style="bold")
        text.append(f"  {fmt_int(total)} jobs")
        if worst is not Status.OK:
            text.append(f"  {worst.symbol} {worst.word}", style=f"bold {self.styles_.of(worst)}")
        dead = sum(r.dead_letter_depth or 0 for r in readings)
        if dead:
            text.append(f"  {fmt_int(dead)} dead", style=self.styles_.warn)
        failed = sum(r.failed or 0 for r in readings)
        if failed:
            text.append(f"  {fmt_int(failed)} failed", style=self.styles_.warn)
        return text

    def build_rows(self, snapshot: Snapshot, readings: list, health: Health) -> list[Row]:
        st = self.styles_
        rows: list[Row] = []
        for r in readings:
            key = r.name if r.name not in {x.key for x in rows} else f"{r.source}:{r.name}"
            warn, high, crit = (tuple(r.thresholds) + (None, None, None))[:3]
            if r.drain_rate is not None and r.drain_rate < 0 and r.depth:
                eta = "never"
            elif r.time_to_drain_s is not None:
                eta = fmt_duration(r.time_to_drain_s)
            else:
                eta = "-"
            dead = r.dead_letter_depth
            bad = [f"{fmt_int(r.failed)} failed"] if r.failed else []  # rq/bullmq/sidekiq's own failed set
            if r.dead_letter_key or dead:
                bad.append(f"{fmt_int(dead)} dead" if r.failed is not None else fmt_int(dead))
            late = r.max_age_s is not None and (r.oldest_age_s or 0) > r.max_age_s
            cells = (
                st.status_cell(r.status),
                Text(r.name, style="bold"),
                Text(fmt_int(r.depth) + (f" +{fmt_int(r.pending)}p" if r.pending else "")
                     + (" paused" if r.paused else ""),
                     style=st.of(r.status) if r.status is not Status.OK else (st.warn if r.paused else "")),
                Text(sparkline(r.history, 12), style=st.of(r.status)),
                Text(drain_text(r.drain_rate),
                     style=st.warn if (r.drain_rate or 0) < 0 and r.depth else ""),
                Text(eta),
                Text(fmt_duration(r.oldest_age_s), style=st.warn if late else ""),
                Text(" · ".join(bad) if bad else ("0 failed" if r.failed is not None else "-"),
                     style=st.warn if (dead or r.failed) else ""),
                Text(f"{compact(warn)}/{compact(high)}/{compact(crit)}", style="dim"),
            )
            rows.append(Row(key, cells, r, r.source, search=f"{r.name} {r.key} {r.type}"))
        return rows

    def _queue(self) -> QueueReading | None:
        row = self.cursor_row()
        return row.item if row is not None else None

    def action_requeue_dead(self) -> None:
        q = self._queue()
        if q is None or not q.dead_letter_key:
            self.notify("This queue has no dead-letter key.", severity="warning", timeout=3)
            return
        self.request("queue.requeue_dead", {"queue": q.name}, f"queue:{q.name}")

    def action_context(self, verb: str) -> dict:
        q = self._queue()
        return {"queue": q.name} if q is not None else {}
