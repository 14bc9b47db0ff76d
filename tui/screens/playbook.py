"""A finding's playbook in full: symptoms, diagnosis and resolution steps, which are done
(from the audit trail since the finding appeared) and which are left, the next one
marked, each with the key that runs it. Enter on a step with an action starts it
(through the usual plan -> confirm modal); escape closes."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from backends.engine.playbooks import PlaybookBook, Step, book_for, render_step
from backends.model import Finding


def target_params(action: str, target: str | None) -> dict:
    """The parameters of `action` that a finding's target gives ("service:api" -> service="api")."""
    if not target or ":" not in target:
        return {}
    kind, _, rest = target.partition(":")
    if kind == "service" and action.split(".")[0] in ("service", "docker", "process"):
        return {"service": rest}
    if kind == "order" and action == "orders.fix":
        return {"order_id": rest}
    return {}


class PlaybookScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    PlaybookScreen { align: center middle; }
    #playbook-dialog { width: 110; max-width: 96%; height: 90%; border: thick $primary;
                       background: $surface; padding: 0 1; }
    #playbook-head { height: auto; }
    #playbook-steps { height: 1fr; }
    """
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Close", id="playbook_close"),
        Binding("enter", "run_step", "Run step", id="playbook_run"),
        Binding("n", "run_next", "Run next step", id="playbook_next"),
    ]

    def __init__(self, finding: Finding, engine: Any = None, *, book: PlaybookBook | None = None,
                 audit_entries: list[dict] | None = None) -> None:
        super().__init__(id="playbook-modal")
        self.finding = finding
        self.engine = engine
        self.book = book or book_for(engine.config if engine is not None else None)
        self._audit = audit_entries
        self.rows: list[Step] = []
        self.next: Step | None = None

    # ------------------------------------------------------------------ data

    def audit_entries(self) -> list[dict]:
        """The executed steps since the finding appeared (read off the loop on mount)."""
        return self._audit if self._audit is not None else []

    async def _load_audit(self) -> None:
        audit = self.engine.audit if self.engine is not None else None
        steps_since = getattr(audit, "steps_since", None)
        try:
            if callable(steps_since):
                self._audit = list(await steps_since(self.finding.since))
            elif audit is not None:
                import asyncio

                self._audit = list(await asyncio.to_thread(lambda: list(audit.entries())))
        except Exception as exc:
            self.notify(f"audit trail not readable: {exc}", severity="warning", timeout=5)
            self._audit = []
        if self.is_attached:
            self.refresh_steps()

    def available(self) -> list[str] | None:
        actions = self.engine.actions if self.engine is not None else None
        return [a.id for a in actions.available()] if actions is not None else None

    def done(self) -> set[str]:
        return self.book.done_actions(self.finding, self.audit_entries())

    # ------------------------------------------------------------------ UI

    def compose(self) -> ComposeResult:
        pb = self.book.get(self.finding.playbook)
        with Vertical(id="playbook-dialog") as box:
            box.border_title = f"Playbook: {pb.title}" if pb else "Playbook"
            box.border_subtitle = ("escape: close (read-only)" if getattr(self.app, "read_only", False)
                                   else "enter: run the step · escape: close")
            yield Static("", id="playbook-head")
            yield DataTable(id="playbook-steps", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        try:
            self.refresh_steps()
            self.query_one(DataTable).focus()
        except NoMatches:  # closed (or the app exiting) before it was shown
            return
        if self._audit is None:  # which steps are done: from the audit, off the loop
            self.run_worker(self._load_audit(), group="playbook-audit", exclusive=True)

    def refresh_steps(self) -> None:
        f = self.finding
        pb = self.book.get(f.playbook)
        head = self.query_one("#playbook-head", Static)
        table = self.query_one(DataTable)
        table.clear(columns=True)
        self.rows = []
        if pb is None:
            head.update(Text(f"[{f.severity.label}] {f.summary}\nNo playbook for this finding.", style="bold"))
            return
        done = self.done()
        nxt = self.book.next_step(f, done, self.available())
        actions = self.engine.actions if self.engine is not None else None
        head_text = Text()
        head_text.append(f"[{f.severity.label}] {f.summary}\n", style="bold")
        head_text.append(f"{pb.title} · {pb.severity.label} · budget {pb.budget}", style="")
        if pb.seed:
            head_text.append(f" · seed {pb.seed}", style="dim")
        for line in f.evidence[:4]:
            head_text.append(f"\n  {line}", style="dim")
        head_text.append("\nSymptoms: " + "; ".join(pb.symptoms), style="dim")
        if pb.escalate_to:
            head_text.append(f"\nEscalate to: {pb.escalate_to}", style="dim")
        head.update(head_text)
        table.add_columns("", "step", "key", "action", "budget", "state")
        ok = self.app.theme_variables.get("status-ok", "green")
        for phase, steps in (("diagnose", pb.diagnosis), ("resolve", pb.resolution)):
            for step in steps:
                is_done = bool(step.action and step.action in done)
                applies = step.applies_to(f)
                if step is nxt:
                    mark, state = Text("▶", style="bold"), Text("NEXT", style="bold reverse")
                elif is_done:
                    mark, state = Text("✔", style=f"bold {ok}"), Text("done", style=ok)
                elif not applies:
                    mark, state = Text("·", style="dim"), Text("n/a here", style="dim")
                else:
                    mark, state = Text("○"), Text("left" if step.action else phase, style="dim")
                table.add_row(mark, render_step(step, actions).text, step.key or "",
                              step.action or (step.check or ""), step.budget or "", state)
                self.rows.append(step)
        self.next = nxt
        if nxt is not None and nxt in self.rows:
            table.move_cursor(row=self.rows.index(nxt))

    def selected_step(self) -> Step | None:
        table = self.query_one(DataTable)
        if not self.rows or table.cursor_row is None or not (0 <= table.cursor_row < len(self.rows)):
            return None
        return self.rows[table.cursor_row]

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_run_step()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("run_step", "run_next") and getattr(self.app, "read_only", False):
            return False  # read-only: the playbook is shown, its steps are not offered
        return True

    def on_key(self, event: events.Key) -> None:
        """A step's key (the key column) runs that step, as it does in the Findings pane."""
        if event.key in ("enter", "escape", "q", "n", "up", "down") or getattr(self.app, "read_only", False):
            return
        for i, step in enumerate(self.rows):
            if step.key == event.key and step.action and step.applies_to(self.finding):
                event.stop()
                event.prevent_default()
                self.query_one(DataTable).move_cursor(row=i)
                self.action_run_step()
                return

    def action_run_next(self) -> None:
        if self.next is None or not self.next.action:
            self.notify("no next step with an action", timeout=3)
            return
        self.query_one(DataTable).move_cursor(row=self.rows.index(self.next))
        self.action_run_step()

    def action_run_step(self) -> None:
        step = self.selected_step()
        if step is None or not step.action:
            self.notify("this step is a check: see the pane it names", timeout=3)
            return
        if getattr(self.app, "read_only", False):
            self.notify("read-only: this console does not run steps", severity="warning", timeout=3)
            return
        params = target_params(step.action, self.finding.target)
        params.update(step.action_params())
        if step.action == "escalate" or step.action.startswith("incident."):
            opener = getattr(self.app, "open_incident_flow", None)
            if callable(opener):
                self.app.pop_screen()
                opener(step.action, self.finding)
                return
        request = getattr(self.app, "request_action", None)
        if not callable(request):
            return
        self.app.pop_screen()
        request(step.action, params)
