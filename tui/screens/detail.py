"""Detail screens: one model object (service, order, breaker, queue, endpoint, source) in full.

Shows every field of the reading, a chart of its history where it has one, the actions
run on it this session and its entries in the audit log.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Sparkline, Static


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, tuple | list) and value and dataclasses.is_dataclass(value[0]):
        return f"{len(value)} item(s)"
    if isinstance(value, tuple | list):
        return ", ".join(_fmt(v) for v in value) or "-"
    return str(value)


def item_name(item) -> str:
    for attr in ("name", "id", "order_id", "key", "url", "chain"):
        v = getattr(item, attr, None)
        if v:
            return str(v)
    return type(item).__name__


def fields_table(item) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("field", style="dim", no_wrap=True)
    table.add_column("value")
    if dataclasses.is_dataclass(item):
        for f in dataclasses.fields(item):
            value = getattr(item, f.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                table.add_row(f.name, Text(", ".join(
                    f"{g.name}={_fmt(getattr(value, g.name))}" for g in dataclasses.fields(value))))
            else:
                table.add_row(f.name, _fmt(value))
    else:
        table.add_row("value", str(item))
    return table


class DetailScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Close", id="detail_close")]

    def __init__(self, item, engine=None) -> None:
        super().__init__(id="detail-modal")
        self.item = item
        self.engine = engine

    def compose(self) -> ComposeResult:
        name = item_name(self.item)
        with VerticalScroll(id="detail-dialog") as box:
            box.border_title = f"{type(self.item).__name__.removesuffix('Reading')}: {name}"
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
            yield Static(self._audit_text(name), id="detail-audit")

    def _logs_text(self, name: str) -> Text | None:
        hub = getattr(self.engine, "logs", None)
        recent = getattr(hub, "recent", None)
        if not callable(recent):
            return None
        try:
            lines = recent(12, source=name)
        except Exception:
            return None
        if not lines:
            return None
        text = Text("recent logs\n", style="bold")
        for line in lines:
            text.append(f"  {line.at:%H:%M:%S} {line.text}\n")
        return text

    def _actions_text(self, name: str) -> Text:
        actions = getattr(self.engine, "actions", None)
        rows = [(p, r) for p, r in getattr(actions, "history", []) if name and name in p.target]
        text = Text("actions this session\n", style="bold")
        if not rows:
            text.append("  none\n", style="dim")
        for plan, result in rows[-10:]:
            text.append(f"  {result.finished_at:%H:%M:%S} {plan.action} {result.status.upper()}"
                        f" {result.summary}\n")
        available = [a for a in (actions.available() if actions is not None else [])]
        if available:
            text.append("available actions: ", style="bold")
            text.append(", ".join(a.title or a.id for a in available))
        return text

    def _audit_text(self, name: str) -> Text:
        audit = getattr(getattr(self.engine, "actions", None), "audit", None)
        text = Text("\naudit trail\n", style="bold")
        entries = []
        try:
            if audit is not None and audit.path.exists():
                entries = [e for e in audit.tail(500) if name and name in str(e.get("target", ""))]
        except Exception:
            entries = []
        if not entries:
            text.append("  no entries\n", style="dim")
        for e in entries[-10:]:
            text.append(f"  {str(e.get('ts', ''))[:19]} {e.get('operator', '')} {e.get('action', '')}"
                        f" {e.get('result', '')} {e.get('summary', '')}\n")
        return text
