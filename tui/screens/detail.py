"""Detail screens: one model object (service, order, breaker, queue, endpoint, source) in full.

Shows every field of the reading, a chart of its history where it has one, the actions
run on it this session and its entries in the audit log.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from datetime import datetime

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Sparkline, Static

from backends.sanitize import inert


def _fmt(value, name: str = "") -> str:
    """A field's value in words and units, never a Python repr."""
    from backends.model import Severity

    if value is None:
        return "-"
    if isinstance(value, Severity):
        return value.label
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    if isinstance(value, int | float) and name.endswith("_s"):
        return _seconds(float(value))
    if isinstance(value, int | float) and name.endswith("_ms"):
        return f"{float(value):,.1f} ms".replace(".0 ms", " ms")
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{_label(str(k))}: {_fmt(v, str(k))}" for k, v in value.items()) or "-"
    if isinstance(value, tuple | list | set | frozenset) and value and dataclasses.is_dataclass(next(iter(value))):
        return f"{len(value)} item(s)"
    if isinstance(value, tuple | list | set | frozenset):
        return ", ".join(_fmt(v) for v in value) or "-"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return item_name(value)
    return inert(str(value))  # text from outside (reasons, errors, log lines): controls shown escaped


def _seconds(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s".replace(".0 s", " s")
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h".replace(".0 h", " h")
    return f"{s / 86400:.1f} d".replace(".0 d", " d")


def _label(name: str) -> str:
    """A field name in words: "silent_for_s" -> "silent for", "latency_ms" -> "latency"."""
    for suffix in ("_s", "_ms"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name.replace("_", " ")


# what acts on an item of each kind (a breaker's detail does not offer to pause a contract)
ACTIONS_FOR: dict[str, tuple[str, ...]] = {
    "ServiceReading": ("service.", "docker.", "process.", "stack.", "command.restart", "command.scale"),
    "PostgresReading": ("postgres.",),
    "QueueReading": ("queue.", "command.scale"),
    "BreakerReading": ("breaker.",), "BreakersReading": ("breaker.",),
    "Order": ("orders.",), "OrdersReading": ("orders.",),
    "EndpointReading": ("chain.failover",), "ChainReading": ("chain.",), "ContractReading": ("chain.",),
    "BalanceReading": ("command.refill",),
    "SignerReading": ("signer.", "command.refill"),  # speed up / cancel its stuck transaction, refill
    "AlertReading": ("alertmanager.",), "SilenceReading": ("alertmanager.",),
    "IntegrityReading": ("orders.backfill",), "GuardReading": ("chain.pause",),
    "ScoreReading": ("chain.failover",),
}


def kind_name(item) -> str:
    """What the item is, in words: "Source", "Service", "Queue" (not SourceStatus, ServiceReading)."""
    name = type(item).__name__
    for suffix in ("Reading", "Status", "Info", "Signals"):
        name = name.removesuffix(suffix)
    words = "".join(f" {c}" if c.isupper() else c for c in name).strip()
    return words[:1] + words[1:].lower() if words else "Item"


def item_name(item) -> str:
    for attr in ("name", "id", "order_id", "key", "url", "chain"):
        v = getattr(item, attr, None)
        if v:
            return str(v)
    return type(item).__name__.removesuffix("Reading")


def fields_table(item) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("field", style="dim", no_wrap=True)
    table.add_column("value")
    if dataclasses.is_dataclass(item):
        for f in dataclasses.fields(item):
            value = getattr(item, f.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                table.add_row(_label(f.name), Text(", ".join(
                    f"{_label(g.name)}: {_fmt(getattr(value, g.name), g.name)}" for g in dataclasses.fields(value))))
            else:
                table.add_row(_label(f.name), Text(_fmt(value, f.name)))
    else:
        table.add_row("value", Text(str(item)))
    return table


class DetailScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Close", id="detail_close"),
                Binding("e", "toggle_entry", "Expand / fold", id="detail_expand")]

    def __init__(self, item, engine=None) -> None:
        super().__init__(id="detail-modal")
        self.item = item
        self.engine = engine
        self.expanded = False  # a multi-line log entry: all its lines (e)

    def action_toggle_entry(self) -> None:
        from backends.model import LogLine

        if not isinstance(self.item, LogLine):
            return
        from widgets.logs import entry_detail

        self.expanded = not self.expanded
        self.query_one("#detail-log-entry", Static).update(entry_detail(self.item, expanded=self.expanded))

    def compose(self) -> ComposeResult:
        from backends.model import LogLine

        if isinstance(self.item, LogLine):  # a log line / multi-line entry: raw, folded, `e` expands
            from widgets.logs import entry_detail

            with VerticalScroll(id="detail-dialog") as box:
                box.border_title = f"Log line: {self.item.source}"
                box.border_subtitle = "e: expand / fold · escape: close"
                yield Static(entry_detail(self.item, expanded=self.expanded), id="detail-log-entry")
            return
        name = item_name(self.item)
        with VerticalScroll(id="detail-dialog") as box:
            box.border_title = f"{kind_name(self.item)}: {name}"
            box.border_subtitle = "escape: close"
            yield Static(fields_table(self.item), id="detail-fields")
            history = getattr(self.item, "history", None)
            if history and all(isinstance(v, int | float) for v in history):
                yield Static(Text("history (oldest first)", style="bold"))
                yield Sparkline(list(history), id="detail-history")
            logs = self._logs_text(name)
            if logs is not None:
                yield Static(logs, id="detail-logs")
            yield Static(self._actions_text(name), id="detail-actions")
            yield Static(Text("\naudit trail\n  reading…\n", style="dim"), id="detail-audit")

    def on_mount(self) -> None:
        from backends.model import LogLine

        if isinstance(self.item, LogLine):
            return  # no audit trail for a log line
        self.run_worker(self._load_audit(), group="detail-audit", exclusive=True)

    async def _load_audit(self) -> None:
        """This item's audit entries, read in the audit's reader thread (never on the loop)."""
        audit = self.engine.actions.audit if self.engine is not None else None
        entries: list[dict] = []
        try:
            tail_async = getattr(audit, "tail_async", None)
            if callable(tail_async):
                entries = await tail_async(500)
            elif audit is not None:
                import asyncio

                entries = await asyncio.to_thread(audit.tail, 500)
        except Exception:
            entries = []
        if self.is_attached:
            self.query_one("#detail-audit", Static).update(self._audit_text(item_name(self.item), entries))

    def _logs_text(self, name: str) -> Text | None:
        hub = self.engine.logs if self.engine is not None else None
        if hub is None:
            return None
        recent = hub.recent
        try:
            lines = recent(12, source=name)
        except Exception:
            return None
        if not lines:
            return None
        text = Text("recent logs\n", style="bold")
        from widgets.logs import folded

        for line in lines:  # a multi-line entry (traceback): its first line and its count
            text.append(f"  {line.at:%H:%M:%S} {inert(line.text.split(chr(10), 1)[0], 400)}{folded(line)}\n")
        return text

    def _actions_text(self, name: str) -> Text:
        actions = self.engine.actions if self.engine is not None else None
        rows = [(p, r) for p, r in (actions.history if actions is not None else []) if name and name in p.target]
        text = Text("actions this session\n", style="bold")
        if not rows:
            text.append("  none\n", style="dim")
        for plan, result in rows[-10:]:
            text.append(f"  {result.finished_at:%H:%M:%S} {plan.action} {result.status.upper()}"
                        f" {result.summary}\n")
        prefixes = ACTIONS_FOR.get(type(self.item).__name__, ())
        available = [a for a in (actions.available() if actions is not None else [])
                     if prefixes and str(a.id).startswith(prefixes)]
        if available:
            text.append("available actions: ", style="bold")
            text.append(", ".join(a.title or a.id for a in available))
        return text

    def _audit_text(self, name: str, entries: list[dict]) -> Text:
        text = Text("\naudit trail\n", style="bold")
        entries = [e for e in entries if name and name in str(e.get("target", ""))]
        if not entries:
            text.append("  no entries\n", style="dim")
        for e in entries[-10:]:
            text.append(f"  {str(e.get('ts', ''))[:19]} {e.get('operator', '')} {e.get('action', '')}"
                        f" {e.get('result', '')} {inert(e.get('summary', ''), 400)}\n")
        return text
