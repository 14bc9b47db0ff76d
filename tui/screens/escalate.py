"""Escalate: review and edit the brief, pick the level, send; see what is still pending.

The brief is filled from live state (`backends.actions.notify.incident_brief`: the incident,
error messages from the logs, affected orders, timeline, steps already attempted, RPC
endpoints) in a worker, then shown in an editor: nothing is sent before the operator
reviewed it. `[` / `]` choose the level (outside the editor; tab moves between them) (its contacts, channels and what it asks for
are shown), `ctrl+r` rebuilds the brief, `ctrl+s` sends it through the `escalate`
action (confirmation modal, audited, refused when read-only). The outbox table lists
messages not delivered yet (attempts, last error, next try); `ctrl+t` retries them now.
"""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static, TextArea

from backends.errors import ActionRefused, describe_exception


class EscalateScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    EscalateScreen { align: center middle; }
    #escalate-dialog { width: 120; max-width: 98%; height: 94%; border: thick $primary;
                       background: $surface; padding: 0 1; }
    #escalate-level { height: auto; }
    #escalate-brief { height: 1fr; min-height: 8; }
    #escalate-outbox-title { height: 1; }
    #escalate-outbox { height: 8; }
    """
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Close", id="escalate_close"),
        Binding("ctrl+s", "send", "Send", id="escalate_send"),
        Binding("ctrl+r", "rebuild", "Rebuild brief", id="escalate_rebuild"),
        Binding("ctrl+t", "retry", "Retry pending", id="escalate_retry"),
        Binding("left_square_bracket", "level(-1)", "Previous level", id="escalate_prev", key_display="["),
        Binding("right_square_bracket", "level(1)", "Next level", id="escalate_next", key_display="]"),
    ]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if getattr(self.app, "read_only", False) and action in ("send", "retry"):
            return False  # a read-only console sends nothing
        return True

    def __init__(self, engine: Any, *, incident_id: str | None = None, level: int | None = None) -> None:
        super().__init__(id="escalate-modal")
        self.engine = engine
        self.manager = engine.incidents if engine is not None else None
        self.notifier = engine.notifier if engine is not None else None
        self.incident_id = incident_id
        self.level = level if level is not None else self._default_level()
        self.brief_ready = False
        self._unsub = None

    def _default_level(self) -> int:
        inc = self.incident
        sent = (inc.escalation or {}).get("levels_sent") if inc is not None else None
        n = len(self.notifier.levels) if self.notifier else 0
        if sent and n:
            return min(max(sent) + 1, n - 1)
        return 0

    @property
    def incident(self):
        if self.manager is None:
            return None
        return self.manager.get(self.incident_id) if self.incident_id else self.manager.current()

    def compose(self) -> ComposeResult:
        with Vertical(id="escalate-dialog") as box:
            box.border_title = "Escalate"
            box.border_subtitle = ("tab: edit the brief · [ ] level · ctrl+r rebuild · ctrl+s send · "
                                   "ctrl+t retry pending · escape close")
            yield Static("", id="escalate-level")
            yield TextArea("building the brief from live state…", id="escalate-brief")
            yield Static("", id="escalate-outbox-title")
            yield DataTable(id="escalate-outbox", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one("#escalate-outbox", DataTable)
        table.add_columns("message", "to", "attempts", "next try", "last error")
        if self.notifier is not None:
            self._unsub = self.notifier.subscribe(lambda: self.call_later(self.refresh_outbox))
        self.render_level()
        self.refresh_outbox()
        self.set_interval(2.0, self.refresh_outbox)
        self.action_rebuild()
        table.focus()  # `[` / `]` choose the level; tab goes to the brief to edit it

    def on_unmount(self) -> None:
        if self._unsub:
            self._unsub()

    # ------------------------------------------------------------------ level

    def render_level(self) -> None:
        inc = self.incident
        text = Text()
        if inc is None:
            text.append("No open incident: declare one first (i).", style="bold")
        else:
            text.append(f"{inc.id} [{inc.severity.label}] {inc.title}\n", style="bold")
        n = self.notifier
        if n is None or (not n.levels and n.pagerduty is None):
            text.append("No escalation levels configured ([escalation] in the config).", style="dim")
        elif n.levels:
            lv = n.levels[self.level]
            sent = set((inc.escalation or {}).get("levels_sent") or []) if inc else set()
            text.append(f"Level {self.level + 1}/{len(n.levels)}: {lv.name}", style="bold")
            text.append(f"  (after {int(lv.after // 60)} min)" + ("  already notified" if self.level in sent else ""))
            text.append("\ncontacts: " + (", ".join(lv.contacts) or "—"))
            text.append("\nchannels: " + (", ".join(n.channels(self.level)) or "—")
                        + ("  + PagerDuty" if n.pagerduty is not None else ""))
            if lv.provide:
                text.append("\nasks for: " + "; ".join(lv.provide), style="dim")
        self.query_one("#escalate-level", Static).update(text)

    def action_level(self, step: int) -> None:
        if self.notifier is None or not self.notifier.levels:
            return
        self.level = max(0, min(len(self.notifier.levels) - 1, self.level + int(step)))
        self.render_level()

    # ------------------------------------------------------------------ brief

    def action_rebuild(self) -> None:
        self.brief_ready = False
        self.build_brief()

    @work(exclusive=True, group="brief")
    async def build_brief(self) -> None:
        from backends.actions.notify import incident_brief

        snap = getattr(self.app, "snapshot", None)
        try:
            text = await incident_brief(self.engine, self.incident, level=self.level, snapshot=snap, log_wait=0.5)
        except Exception as exc:
            text = f"(the brief could not be built: {describe_exception(exc)}; write it here)"
        self.query_one("#escalate-brief", TextArea).text = text
        self.brief_ready = True

    @property
    def brief_text(self) -> str:
        return self.query_one("#escalate-brief", TextArea).text

    # ------------------------------------------------------------------ send

    def action_send(self) -> None:
        if not self.brief_ready:
            self.notify("the brief is still being built", severity="warning", timeout=3)
            return
        self.run_worker(self._send(), group="escalate")

    async def _send(self) -> None:
        inc = self.incident
        actions = self.engine.actions if self.engine is not None else None
        if actions is None:
            return
        try:
            plan = await actions.plan("escalate", incident=inc.id if inc else None, level=self.level,
                                      brief=self.brief_text)
        except ActionRefused as exc:
            self.notify(f"escalate: {exc.reason}", title="refused", severity="error")
            return
        except Exception as exc:
            self.notify(f"escalate: {describe_exception(exc)}", severity="error")
            return
        from tui.screens.action import ActionScreen

        self.app.push_screen(ActionScreen(actions, plan), self._sent)

    def _sent(self, outcome: Any) -> None:
        if outcome is not None:
            _plan, result = outcome
            self.notify(result.summary, severity="information" if result.ok else "error", timeout=5)
        self.render_level()
        self.refresh_outbox()

    # ------------------------------------------------------------------ outbox

    def refresh_outbox(self) -> None:
        table = self.query_one("#escalate-outbox", DataTable)
        title = self.query_one("#escalate-outbox-title", Static)
        pending = self.notifier.pending() if self.notifier is not None else []
        table.clear()
        now = time.time()
        for m in pending:
            wait = "held (refused)" if m.status == "dead" else (
                "now" if m.next_attempt_at <= now else f"in {int(m.next_attempt_at - now)}s")
            table.add_row(m.id[-24:], m.label, str(m.attempts), wait, m.last_error[:60])
        if pending:
            title.update(Text(f"▲ OUTBOX: {len(pending)} message(s) not delivered yet (kept on disk, retried)",
                              style="bold"))
        elif not self._any_channel():
            title.update(Text("▲ no channel configured: nothing is sent (see examples/)", style="bold"))
        else:
            sent = self._sent_count()
            title.update(Text("● outbox empty: " + (f"{sent} message(s) delivered, none waiting" if sent
                                                    else "nothing sent yet, none waiting"), style="dim"))

    def _any_channel(self) -> bool:
        n = self.notifier
        if n is None:
            return False
        if getattr(n, "pagerduty", None) is not None:
            return True
        return any(getattr(lv, "channels", None) for lv in getattr(n, "levels", ()) or ())

    def _sent_count(self) -> int:
        fn = getattr(getattr(self.notifier, "outbox", None), "sent_ids", None)
        try:
            return len(fn()) if callable(fn) else 0
        except Exception:
            return 0

    @work(exclusive=True, group="retry")
    async def action_retry(self) -> None:
        n = self.notifier
        if n is None:
            return
        for m in n.pending():
            await n.retry(m.id)
        self.refresh_outbox()
