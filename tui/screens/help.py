"""Help: every key, generated from the bindings (app, dashboard, each pane, modals).

A key the current mode does not allow (e.g. restart in read-only) is not listed.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.bindings import (
    APP_BINDINGS,
    DASHBOARD_BINDINGS,
    MODAL_BINDINGS,
    PANE_COUNT,
    binding_key_display,
)


def help_groups(app) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """[(group title, [(keys, description, binding id)])], filtered by what is allowed now."""
    keymap = getattr(app, "user_keymap", {}) or {}

    def rows(bindings, node=None) -> list[tuple[str, str, str]]:
        out = []
        for b in bindings:
            if not isinstance(b, Binding) or not b.description:
                continue
            if node is not None:
                name, _, params = b.action.partition("(")
                args = ()
                if params:
                    try:
                        import ast

                        args = ast.literal_eval("(" + params.rstrip(")") + ",)")
                    except Exception:
                        args = ()
                try:
                    if node.check_action(name, args) is False:
                        continue
                except Exception:
                    pass
            out.append((binding_key_display(b, keymap), b.description, b.id or ""))
        return out

    groups = [("Global", rows(APP_BINDINGS, app))]
    custom = rows(list(getattr(app, "custom_bindings", None) or []), app)
    if custom:  # `[[actions]] key`
        groups.append(("Custom actions", custom))
    dash = [b for b in DASHBOARD_BINDINGS if not (b.id or "").startswith("pane_")]
    dash_rows = rows(dash)
    dash_rows.append((f"1-{PANE_COUNT}", f"Go to pane 1-{PANE_COUNT}", "pane_N"))
    groups.append(("Dashboard", dash_rows))
    board = getattr(app, "dashboard", None)
    if board is not None:
        from tui.screens.dashboard import PANES

        for spec in PANES:
            try:
                pane = board.pane(spec.id)
            except Exception:
                pane = None
            own = list(getattr(type(pane), "BINDINGS", []) or []) if pane is not None else []
            r = rows(own, pane)
            if r:
                groups.append((f"Pane: {spec.title}", r))
    groups.append(("Action dialog", rows(MODAL_BINDINGS)))
    return groups


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,question_mark", "app.pop_screen", "Close", id="help_close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog") as box:
            box.border_title = "Keys"
            box.border_subtitle = "escape: close"
            for title, rows in help_groups(self.app):
                table = Table(title=Text(title, style="bold"), title_justify="left",
                              show_header=False, box=None, pad_edge=False)
                table.add_column("key", style="bold", width=12, no_wrap=True)
                table.add_column("what", width=32)
                table.add_column("id", style="dim", no_wrap=True)
                for keys, desc, bid in rows:
                    table.add_row(keys, desc, bid)
                yield Static(table, classes="help-group")
            if getattr(self.app, "read_only", False):
                yield Static(Text("READ-ONLY: keys that change anything are not available.",
                                  style="bold"), classes="help-group")
