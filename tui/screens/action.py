"""The action modal: an ActionPlan shown in full, confirmed, executed in a worker.

Target, each change (before -> after), the guard (symbol + word, not colour alone),
the danger level, a reason field when the action asks for one, and the confirmation
the danger needs (enter; or type the target/count). The engine decides: a refusal
(wrong text, no reason, guard failed, read-only) is shown and audited by the engine.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, ProgressBar, Static

from backends.actions.base import ActionEngine, ActionPlan, ActionResult, Danger, Progress
from backends.errors import ActionRefused, describe_exception
from backends.sanitize import inert, inert_block
from tui.bindings import MODAL_BINDINGS

DANGER_TEXT = {
    Danger.SAFE: ("●", "SAFE", "status-ok"),
    Danger.CONFIRM: ("▲", "CONFIRM", "status-warn"),
    Danger.TYPED: ("✖", "DANGEROUS - TYPED CONFIRMATION", "status-crit"),
}
MAX_ROWS = 200
log = logging.getLogger(__name__)


def _short(value) -> str:
    """A before/after cell in words: mappings as `key value`, booleans yes/no, never a repr."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        text = ", ".join(f"{k} {_short(v)}" for k, v in value.items() if v not in (None, "", [], {}))
    elif isinstance(value, list | tuple):
        text = ", ".join(_short(v) for v in value)
    else:
        text = inert(str(value), 200)
    return text if len(text) <= 60 else text[:57] + "..."


def _about(plan: ActionPlan) -> tuple:
    """What the plan is about, in words, when its target is an id (the finding an incident
    is declared from): the dialog names what the operator chose."""
    finding = (plan.params or {}).get("finding")
    if not isinstance(finding, dict):
        return ()
    summary = finding.get("summary")
    if not summary:
        return ()
    sev = finding.get("severity") or ""
    return (("\nAbout   ", "dim"), (inert(f"{sev} {summary}".strip(), 200), "bold"))


def record_cancelled(actions: ActionEngine, plan: ActionPlan) -> None:
    """The audit entry of a plan shown in the modal and cancelled: a dry-run (nothing was
    changed) with result "cancelled", the same fields as `ActionEngine.record_dry_run`.
    Written in the background (the dialog closes at once; the engine's stop waits for it)."""
    if getattr(actions, "audit", None) is None:
        return
    try:
        actions.record_dry_run_soon(
            plan, result="cancelled",
            summary=f"cancelled in the console: {len(plan.changes)} change(s) not applied")
    except Exception:  # the audit trail being unwritable must not keep the dialog open
        log.warning("could not write the cancelled plan of %s to the audit trail", plan.action,
                    exc_info=True)


class ActionScreen(ModalScreen[tuple[ActionPlan, ActionResult] | None]):
    BINDINGS: ClassVar[list[BindingType]] = list(MODAL_BINDINGS)  # a copy, typed as Textual declares BINDINGS

    def __init__(self, actions: ActionEngine, plan: ActionPlan) -> None:
        super().__init__(id="action-modal")
        self.actions = actions
        self.plan = plan
        self.state = "ready"  # ready | running | done
        self.result: ActionResult | None = None
        self.attempts = 0

    def executing(self) -> bool:
        """The confirmed action is executing (the console's error report says so)."""
        return self.state == "running"

    def _var(self, name: str) -> str:
        return self.app.theme_variables.get(name, "")

    def compose(self) -> ComposeResult:
        plan = self.plan
        with Vertical(id="action-dialog") as box:
            box.border_title = plan.title or plan.action
            box.border_subtitle = "enter: confirm · escape: cancel"
            yield Static(Text.assemble(("Target  ", "dim"), (inert(plan.target), "bold"),
                                       *_about(plan)), id="action-target")
            sym, word, var = DANGER_TEXT[plan.danger]
            yield Static(Text.assemble(("Danger  ", "dim"), (f"{sym} {word}", f"bold {self._var(var)}")),
                         id="action-danger")
            g = plan.guard
            guard = Text.assemble(
                ("Guard   ", "dim"),
                ("✔ PASS  " if g.ok else "✖ FAIL  ", f"bold {self._var('status-ok' if g.ok else 'status-crit')}"),
                g.description, (f"  ({g.detail})" if g.detail else "", "dim"))
            yield Static(guard, id="action-guard")
            # what will change scrolls; the reason, the confirmation and the result never leave
            # the screen (at 80x24 they used to sit below its edge)
            with VerticalScroll(id="action-body"):
                if plan.changes:
                    table: DataTable[str] = DataTable(id="action-changes", cursor_type="none", zebra_stripes=True)
                    table.can_focus = False
                    yield table
                else:
                    yield Static(Text("no changes: nothing to do", style="dim"), id="action-changes-empty")
                notes = [plan.preview] if plan.preview else []
                notes.extend(plan.notes)
                if notes:
                    yield Static(Text(inert_block("\n".join(str(n) for n in notes), 20_000)), id="action-preview")
            if plan.reason_required:
                yield Input(value=plan.reason or "", placeholder="reason (required, goes to the audit log)",
                            id="action-reason")
            if plan.danger is Danger.TYPED:
                yield Static(Text.assemble("Type ", (str(plan.expected_confirmation), "bold reverse"),
                                           " to confirm"), id="action-typed-label")
                yield Input(placeholder=f"type {plan.expected_confirmation}", id="action-confirm")
            yield ProgressBar(total=plan.total, id="action-progress", show_eta=False)
            yield Static(self._prompt(), id="action-status")

    def _prompt(self) -> Text:
        if not self.plan.guard.ok:
            return Text("✖ guard failed: the engine will refuse this (escape to close)",
                        style=f"bold {self._var('status-crit')}")
        if self.plan.danger is Danger.TYPED:
            return Text("type the text above, then enter")
        return Text("press enter to run, escape to cancel")

    def _fit_body(self) -> None:
        """The changes and preview get what the screen has left after the fixed parts."""
        plan = self.plan
        fixed = 2 + 3 + (1 if _about(plan) else 0) + 1 + getattr(self, "_status_lines", 1)  # border, head, status
        if plan.reason_required:
            fixed += 4
        if plan.danger is Danger.TYPED:
            fixed += 5
        if self.query_one("#action-progress", ProgressBar).display:
            fixed += 1
        room = int(self.app.size.height * 0.9) - fixed
        self.query_one("#action-body").styles.max_height = max(3, room)

    def on_resize(self) -> None:
        self._fit_body()

    def on_mount(self) -> None:
        progress = self.query_one("#action-progress", ProgressBar)
        progress.display = False
        if self.plan.changes:
            table = self.query_one("#action-changes", DataTable)
            # before -> after first: a long description is cut at the right edge, never the result
            table.add_columns("target", "before", "after", "change")
            for ch in self.plan.changes[:MAX_ROWS]:
                table.add_row(inert(ch.target, 60), _short(ch.before), _short(ch.after), inert(ch.description, 400))
            if len(self.plan.changes) > MAX_ROWS:
                table.add_row("...", "", "", f"and {len(self.plan.changes) - MAX_ROWS} more")
        self._fit_body()
        first = self.query("#action-reason, #action-confirm").first() if self.query(
            "#action-reason, #action-confirm") else None
        if first is not None:
            first.focus()

    # ------------------------------------------------------------------ keys

    def action_cancel(self) -> None:
        if self.state == "running":
            self.notify("the action is running; it cannot be cancelled from here", severity="warning")
            return
        if self.result is None and self.attempts == 0:
            # shown, never tried: a dry-run entry, as `warroom orders` writes for its previews
            # (a refused or failed attempt is already in the audit trail: no second entry)
            record_cancelled(self.actions, self._plan_with_reason())
        self.dismiss((self.plan, self.result) if self.result is not None else None)

    def _plan_with_reason(self) -> ActionPlan:
        if not self.plan.reason_required or not self.query("#action-reason"):
            return self.plan
        reason = self.query_one("#action-reason", Input).value.strip()
        return replace(self.plan, reason=reason or self.plan.reason)

    def action_confirm(self) -> None:
        if self.state == "running":
            return
        if self.state == "done":  # the result is set with the state
            self.dismiss((self.plan, self.result) if self.result is not None else None)
            return
        plan = self.plan
        if plan.reason_required:
            reason = self.query_one("#action-reason", Input).value.strip()
            plan = replace(plan, reason=reason or None)
        confirmation: str | bool = True
        if plan.danger is Danger.TYPED:
            confirmation = self.query_one("#action-confirm", Input).value
        self.state = "running"
        self.query_one("#action-dialog").border_subtitle = "running: it cannot be cancelled now"
        self.attempts += 1
        self._status(Text("running...", style="bold"))
        self.execute_plan(plan, confirmation)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "action-reason" and not event.input.value.strip():
            self.action_confirm()  # the engine refuses (audited) and the dialog says why
            return
        if event.input.id == "action-reason" and self.plan.danger is Danger.TYPED:
            self.query_one("#action-confirm", Input).focus()
            return
        self.action_confirm()

    # ------------------------------------------------------------------ execution

    def _status(self, text: Text) -> None:
        self.query_one("#action-status", Static).update(text)
        lines = text.plain.count("\n") + 1
        if lines != getattr(self, "_status_lines", 1):
            self._status_lines = lines
            self._fit_body()

    def _progress(self, p: Progress) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # called from a thread
            self.app.call_from_thread(self._progress, p)
            return
        bar = self.query_one("#action-progress", ProgressBar)
        if not bar.display:
            bar.display = True
            self._fit_body()
        bar.update(total=p.total if p.total is not None else bar.total, progress=p.done)
        if p.message:
            self._status(Text(p.message))

    @work(exclusive=True, group="action")
    async def execute_plan(self, plan: ActionPlan, confirmation: str | bool) -> None:
        try:
            result = await self.actions.execute(plan, confirmation=confirmation, progress=self._progress)
        except ActionRefused as exc:
            self.state = "ready"
            self.query_one("#action-dialog").border_subtitle = "enter: confirm · escape: cancel"
            self._status(Text(f"✖ REFUSED: {exc.reason}", style=f"bold {self._var('status-crit')}"))
            return
        except Exception as exc:  # the engine audits; show it and let the operator close
            self.state = "ready"
            self.query_one("#action-dialog").border_subtitle = "enter: confirm · escape: cancel"
            self._status(Text(f"✖ FAILED: {describe_exception(exc)}", style=f"bold {self._var('status-crit')}"))
            return
        self.plan, self.result, self.state = plan, result, "done"
        bar = self.query_one("#action-progress", ProgressBar)
        if bar.display and result.ok and bar.total:  # done: full, whatever the last report said
            bar.update(progress=bar.total)
        ok = result.ok
        var = "status-ok" if ok else "status-crit"
        text = Text.assemble(("✔ " if ok else "✖ ", f"bold {self._var(var)}"),
                             (result.status.upper(), f"bold {self._var(var)}"), f"  {result.summary}")
        for line in result.details[:5]:
            text.append(f"\n  {line}")
        text.append("\n(enter or escape to close)", style="dim")
        self._status(text)
        for inp in self.query(Input):
            inp.disabled = True
        self.query_one("#action-dialog").border_subtitle = "enter/escape: close"
