"""Action history: every action run (or refused after planning) in this session."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

STATUS_MARK = {"ok": ("✔", "status-ok"), "failed": ("✖", "status-crit"), "refused": ("✖", "status-crit"),
               "partial": ("▲", "status-warn"), "skipped": ("●", "status-unknown")}


class HistoryScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,h", "app.pop_screen", "Close", id="history_close")]

    def __init__(self, actions) -> None:
        super().__init__(id="history-modal")
        self.actions = actions

    def compose(self) -> ComposeResult:
        with Vertical(id="history-dialog") as box:
            box.border_title = "Action history"
            box.border_subtitle = "escape: close"
            yield DataTable(id="history-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="history-empty")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("time", "action", "target", "result", "summary", "reason")
        history = list(getattr(self.actions, "history", []) or [])
        for plan, result in reversed(history):
            mark, var = STATUS_MARK.get(result.status, ("?", "status-unknown"))
            style = self.app.theme_variables.get(var, "")
            table.add_row(result.finished_at.strftime("%H:%M:%S"), plan.action, plan.target,
                          Text(f"{mark} {result.status.upper()}", style=f"bold {style}"),
                          result.summary, plan.reason or "")
        empty = self.query_one("#history-empty", Static)
        empty.update("" if history else "No actions have run in this session.")
        empty.display = not history
        table.focus()
