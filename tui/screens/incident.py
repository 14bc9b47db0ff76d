"""The incident screen: declare (from the selected finding or by hand), then run it.

With no open incident it shows the declare form (title, severity P0-P3, impact; the
finding's summary and severity prefilled). With one, it shows the incident: severity,
status, SLA clock, roles, and the live timeline (findings, actions, notes, updates,
escalations from every console). Keys: `s` next status, `a` assign a role ("IC bob"),
`n` note, `t` ETA, `m` impact, `v` severity, `k` acknowledge, `u` status update from
the template (editable), `x` resolve, `p` export the postmortem draft, `d` declare
another, `e` escalate. Every change is an engine action (audited; refused when
read-only); resolve asks for confirmation in the action modal.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static, TextArea

from backends.engine.incidents import STATUSES, Incident, status_update
from backends.errors import ActionRefused, describe_exception
from backends.model import Finding, Severity

PROMPTS = {
    "note": "note for the timeline, enter to add",
    "assign": "role and person, e.g. 'IC alice', 'TL bob', 'CL carol' (empty person: unassign)",
    "eta": "ETA, e.g. '30 minutes' or 'Unknown'",
    "impact": "impact, e.g. 'Users cannot process payments'",
    "severity": "severity P0, P1, P2 or P3",
    "title": "incident title",
    "resolve": "resolution summary, enter to resolve",
}


class IncidentScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    IncidentScreen { align: center middle; }
    #incident-dialog { width: 120; max-width: 98%; height: 92%; border: thick $primary;
                       background: $surface; padding: 0 1; }
    #incident-head { height: auto; }
    #incident-timeline { height: 1fr; }
    #incident-update { height: 12; display: none; }
    #incident-input { display: none; }
    #incident-form { height: auto; }
    #incident-form Input { margin: 0; }
    """
    BINDINGS = [
        Binding("escape", "close", "Close", id="incident_close"),
        Binding("s", "next_status", "Next status", id="incident_status"),
        Binding("a", "prompt('assign')", "Assign role", id="incident_assign"),
        Binding("n", "prompt('note')", "Note", id="incident_note"),
        Binding("t", "prompt('eta')", "ETA", id="incident_eta", show=False),
        Binding("m", "prompt('impact')", "Impact", id="incident_impact", show=False),
        Binding("v", "prompt('severity')", "Severity", id="incident_severity", show=False),
        Binding("k", "ack", "Acknowledge", id="incident_ack"),
        Binding("u", "status_update", "Status update", id="incident_update"),
        Binding("x", "prompt('resolve')", "Resolve", id="incident_resolve"),
        Binding("p", "postmortem", "Postmortem", id="incident_postmortem"),
        Binding("d", "declare_form", "Declare", id="incident_declare", show=False),
        Binding("e", "escalate", "Escalate", id="incident_escalate"),
        Binding("ctrl+s", "submit", "Send/declare", id="incident_submit", show=False),
    ]

    def __init__(self, engine: Any, *, finding: Finding | None = None, incident_id: str | None = None) -> None:
        super().__init__(id="incident-modal")
        self.engine = engine
        self.manager = engine.incidents if engine is not None else None
        self.finding = finding
        self.incident_id = incident_id
        self.mode = ""  # what the one-line input is for
        self.declaring = False
        self._unsub = None

    # ------------------------------------------------------------------ data

    @property
    def incident(self) -> Incident | None:
        if self.manager is None:
            return None
        if self.incident_id:
            return self.manager.get(self.incident_id)
        return self.manager.current()

    def compose(self) -> ComposeResult:
        with Vertical(id="incident-dialog") as box:
            box.border_title = "Incident"
            yield Static("", id="incident-head")
            with Vertical(id="incident-form"):
                yield Input(placeholder="title", id="declare-title")
                yield Input(placeholder="severity P0-P3", id="declare-severity", max_length=2)
                yield Input(placeholder="impact (optional)", id="declare-impact")
            yield DataTable(id="incident-timeline", cursor_type="row", zebra_stripes=True)
            yield TextArea("", id="incident-update")
            yield Input(id="incident-input")

    async def on_mount(self) -> None:
        if self.manager is not None and not self.manager.incidents:
            try:
                await self.manager.load()
            except Exception as exc:
                self.notify(f"incidents: {describe_exception(exc)}", severity="error")
            self._unsub = None
        if self.manager is not None:
            self._unsub = self.manager.subscribe(lambda _inc: self.call_later(self.refresh_view))
        table = self.query_one("#incident-timeline", DataTable)
        table.add_columns("time", "kind", "what", "by")
        if self.incident_id is None and self.incident is not None:
            self.incident_id = self.incident.id  # pinned: still shown (and its postmortem) once resolved
        self.declaring = self.incident is None
        self.refresh_view()
        self.set_interval(1.0, self._tick)

    def on_unmount(self) -> None:
        if self._unsub:
            self._unsub()

    def _tick(self) -> None:
        if not self.declaring:
            self._render_head()

    # ------------------------------------------------------------------ rendering

    def refresh_view(self) -> None:
        form = self.query_one("#incident-form")
        table = self.query_one("#incident-timeline", DataTable)
        box = self.query_one("#incident-dialog")
        inc = self.incident
        if self.declaring or inc is None:
            self.declaring = True
            form.display = True
            table.display = False
            box.border_subtitle = "enter: next field · ctrl+s: declare (asks first) · escape: close"
            f = self.finding
            title = self.query_one("#declare-title", Input)
            if not title.value and f is not None:
                title.value = f.summary
                self.query_one("#declare-severity", Input).value = f.severity.label
            elif not self.query_one("#declare-severity", Input).value:
                self.query_one("#declare-severity", Input).value = "P2"
            self.query_one("#incident-head", Static).update(Text(
                "Declare an incident" + (f" from: [{f.severity.label}] {f.summary}" if f else " by hand"),
                style="bold"))
            title.focus()
            return
        was_form = form.display
        form.display = False
        table.display = True
        if was_form or self.focused is None or not self.focused.display:
            table.focus()
        box.border_subtitle = ("s status · a assign · n note · k ack · u update · x resolve · p postmortem · "
                               "e escalate · escape close")
        self._render_head()
        at_end = table.cursor_row >= table.row_count - 1 if table.row_count else True
        table.clear()
        for t in inc.timeline:
            first = t.text.splitlines()[0] if t.text else ""
            more = " …" if "\n" in t.text else ""
            table.add_row(t.at.strftime("%H:%M:%S"), t.kind, first + more, t.by or "")
        if at_end and table.row_count:
            table.move_cursor(row=table.row_count - 1)

    def _render_head(self) -> None:
        inc = self.incident
        if inc is None:
            return
        sla = inc.sla()
        st = self.app.theme_variables
        crit, ok = st.get("status-crit", "red"), st.get("status-ok", "green")
        text = Text()
        text.append(f" {inc.severity.label} ", style=f"bold reverse {crit if inc.severity <= Severity.P1 else ''}")
        text.append(f" {inc.id}  {inc.title}\n", style="bold")
        text.append(f"status {inc.status.upper()}  ·  ")
        text.append(sla.text(), style=f"bold {crit if sla.breached else ok}")
        text.append(f"  ·  open {_dur(inc.duration_s())}\n")
        roles = self.manager.roles if self.manager else ()
        text.append("  ".join(f"{r}: {inc.roles.get(r, '—')}" for r in roles) + "\n", style="")
        text.append(f"impact: {inc.impact or '—'}  ·  ETA: {inc.eta}", style="dim")
        esc = inc.escalation or {}
        if esc.get("levels_sent"):
            n = self.engine.notifier if self.engine is not None else None
            names = [n.levels[i].name for i in esc["levels_sent"] if n and i < len(n.levels)]
            text.append(f"\nescalated to: {', '.join(names) or esc['levels_sent']}"
                        + (" (acknowledged)" if esc.get("acked_at") else ""), style="dim")
        self.query_one("#incident-head", Static).update(text)

    # ------------------------------------------------------------------ running actions

    def run_engine_action(self, action_id: str, *, confirm: bool = False, **params: Any) -> None:
        self.run_worker(self._run(action_id, confirm, params), group="incident")

    async def _run(self, action_id: str, confirm: bool, params: dict) -> None:
        if self.engine is None:
            self.notify(f"{action_id}: the engine is not started yet", severity="error")
            return
        actions = self.engine.actions
        try:
            plan = await actions.plan(action_id, **params)
        except ActionRefused as exc:
            self.notify(f"{action_id}: {exc.reason}", title="refused", severity="error")
            return
        except Exception as exc:
            self.notify(f"{action_id}: {describe_exception(exc)}", severity="error")
            return
        read_only = getattr(self.app, "read_only", False) or getattr(actions, "read_only", False)
        if confirm and not read_only:  # read-only: no dialog, the engine refuses (audited)
            from tui.screens.action import ActionScreen

            self.app.push_screen(ActionScreen(actions, plan), self._action_done)
            return
        try:
            result = await actions.execute(plan, confirmation=True)
        except ActionRefused as exc:
            self.notify(f"{action_id}: {exc.reason}", title="refused", severity="error")
            return
        if action_id == "incident.declare" and result.ok:
            self.incident_id = plan.params["incident_id"]
            self.declaring = False
        self.notify(result.summary, severity="information" if result.ok else "error", timeout=3)
        self.refresh_view()

    def _action_done(self, outcome: Any) -> None:
        if outcome is not None:
            plan, result = outcome
            if plan.action == "incident.declare" and result.ok:
                self.incident_id = plan.params["incident_id"]
                self.declaring = False
            self.notify(result.summary, severity="information" if result.ok else "error", timeout=3)
        self.refresh_view()

    # ------------------------------------------------------------------ keys

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if getattr(self.app, "read_only", False):  # a read-only console looks; nothing offers a change
            return action == "close"
        if action in ("close", "submit"):
            return True
        if self.declaring:
            return action in ("declare_form",) or None
        return True

    def action_close(self) -> None:
        inp = self.query_one("#incident-input", Input)
        upd = self.query_one("#incident-update", TextArea)
        if inp.display or upd.display:
            inp.display = upd.display = False
            self.mode = ""
            self.query_one("#incident-timeline").focus()
            return
        if self.declaring and self.manager is not None and self.manager.current() is not None \
                and self.incident_id is None and self.finding is None:
            self.declaring = False
            self.refresh_view()
            return
        self.app.pop_screen()

    def action_declare_form(self) -> None:
        self.declaring = True
        self.incident_id = None
        for name in ("#declare-title", "#declare-severity", "#declare-impact"):
            self.query_one(name, Input).value = ""
        self.refresh_view()

    def action_next_status(self) -> None:
        inc = self.incident
        if inc is None or not inc.open:
            return
        i = STATUSES.index(inc.status)
        if i + 1 >= len(STATUSES) - 1:
            self.notify("monitoring is the last status before resolve (x)", timeout=3)
            return
        self.run_engine_action("incident.update", incident=inc.id, op="status", value=STATUSES[i + 1])

    def action_ack(self) -> None:
        inc = self.incident
        if inc is not None:
            self.run_engine_action("incident.update", incident=inc.id, op="ack")

    def action_prompt(self, mode: str) -> None:
        if self.incident is None:
            return
        self.mode = mode
        inp = self.query_one("#incident-input", Input)
        inp.placeholder = PROMPTS.get(mode, mode)
        inp.value = ""
        inp.display = True
        inp.focus()

    def action_status_update(self) -> None:
        inc = self.incident
        if inc is None:
            return
        self.mode = "update"
        area = self.query_one("#incident-update", TextArea)
        area.text = status_update(inc)
        area.display = True
        area.focus()
        self.notify("edit the update, ctrl+s to post it, escape to cancel", timeout=4)

    def action_submit(self) -> None:
        if self.declaring:
            self._declare()
            return
        if self.mode == "update":
            inc = self.incident
            area = self.query_one("#incident-update", TextArea)
            area.display = False
            self.mode = ""
            if inc is not None:
                self.run_engine_action("incident.update", incident=inc.id, op="update", value=area.text)

    def action_postmortem(self) -> None:
        inc = self.incident
        if inc is None or self.manager is None:
            return
        try:
            path = self.manager.export_postmortem(inc.id)
        except Exception as exc:
            self.notify(f"postmortem: {describe_exception(exc)}", severity="error")
            return
        self.notify(f"postmortem draft written to {path}", timeout=6)

    def action_escalate(self) -> None:
        inc = self.incident
        if inc is None:
            return
        from tui.screens.escalate import EscalateScreen

        self.app.push_screen(EscalateScreen(self.engine, incident_id=inc.id))

    def _declare(self) -> None:
        title = self.query_one("#declare-title", Input).value.strip()
        sev = self.query_one("#declare-severity", Input).value.strip() or "P2"
        impact = self.query_one("#declare-impact", Input).value.strip()
        params: dict[str, Any] = {"title": title, "severity": sev, "impact": impact}
        if self.finding is not None:
            params["finding"] = self.finding
        # declaring pages people: the dialog shows title and severity, enter there declares
        self.run_engine_action("incident.declare", confirm=True, **params)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.declaring:  # enter goes on to the next field; on the last one it asks to declare
            order = ("declare-title", "declare-severity", "declare-impact")
            at = order.index(event.input.id) if event.input.id in order else len(order) - 1
            if at < len(order) - 1:
                self.query_one(f"#{order[at + 1]}", Input).focus()
                return
            self._declare()
            return
        inc = self.incident
        mode, value = self.mode, event.value.strip()
        inp = self.query_one("#incident-input", Input)
        inp.display = False
        self.mode = ""
        self.query_one("#incident-timeline").focus()
        if inc is None or not mode:
            return
        if mode == "assign":
            role, _, person = value.partition(" ")
            self.run_engine_action("incident.update", incident=inc.id, op="assign", role=role, value=person.strip())
        elif mode == "resolve":
            self.run_engine_action("incident.resolve", confirm=True, incident=inc.id, summary=value)
        elif mode in ("note", "eta", "impact", "severity", "title"):
            self.run_engine_action("incident.update", incident=inc.id, op=mode, value=value)


def _dur(seconds: float) -> str:
    from backends.engine.incidents import fmt_duration

    return fmt_duration(seconds)
