"""Findings pane (triage): what is wrong now, worst first, with severity badge, summary, how
long it has lasted, its playbook and (with a `playbook_hint`) the next step and its key.

Keys: `n` run the next playbook step of the finding under the cursor, `e` escalate it,
`i` declare an incident for it, `enter` detail. The key shown in front of a step
(`→ [g] Refill the gas bank`) runs that step here too: on the finding under the cursor,
or, when another finding shows that key, on the first one that does (the cursor moves to
it; the plan's dialog names the target before anything runs).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType

from backends.model import Finding, Severity, Snapshot, Status
from backends.units import format_duration

from .common import Health, Row, TablePane, age_s, fmt_coarse, read_ago

SEVERITY_STATUS = {Severity.P0: Status.CRIT, Severity.P1: Status.CRIT, Severity.P2: Status.WARN,
                   Severity.P3: Status.UNKNOWN}
# a P3 is low, not unknown: its own symbol (the colour stays the theme's "unknown" one)
SEVERITY_SYMBOL = {Severity.P0: "✖", Severity.P1: "✖", Severity.P2: "▲", Severity.P3: "○"}

PlaybookHint = Callable[[Finding], "tuple[Any, str | None] | None"]

# "service:api-gateway" -> the params of the actions that act on it
TARGET_PARAMS = {"service": "service", "queue": "queue", "breaker": "trigger_id", "chain": "chain",
                 "order": "order_id", "pid": "pid", "alert": "alert", "silence": "silence"}


def step_text(step: Any) -> str:
    if step is None:
        return ""
    return str(getattr(step, "text", None) or getattr(step, "title", None) or step)


def target_params(target: str | None) -> dict:
    """Action params from a finding's target ("service:api-gateway" -> {"service": "api-gateway"})."""
    if not target or ":" not in target:
        return {}
    kind, _, name = target.partition(":")
    param = TARGET_PARAMS.get(kind.strip().lower())
    return {param: name.strip()} if param and name.strip() else {}


class FindingsPane(TablePane):
    """Findings, worst first."""

    # The next step sits under its finding (second line), so it shows however narrow the pane.
    COLUMNS = (("sev", "Sev"), ("summary", "Finding  → next step"), ("since", "For"),
               ("playbook", "Playbook"))
    DETAIL_KIND = "finding"
    NOUN = "findings"
    MUTATING = frozenset({"next_step", "escalate", "declare_incident"})

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "next_step", "Run next step", id="findings_next_step"),
        Binding("e", "escalate", "Escalate", id="escalate"),
        Binding("i", "declare_incident", "Declare incident", id="incident"),
    ]

    def __init__(self, *, playbook_hint: PlaybookHint | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.playbook_hint = playbook_hint

    # ------------------------------------------------------------------ data

    def readings_of(self, snapshot: Snapshot) -> list:
        return []

    def health(self, snapshot: Snapshot, readings) -> Health:
        h = Health()
        for st in snapshot.sources.values():
            h.sources.append(st)
            if st.degraded:
                h.degraded.append(st)
        return h

    def inputs_key(self, snapshot: Snapshot):
        def hint_key(f: Finding):
            h = self.hint(f)
            return (step_text(h[0]), h[1]) if h else None

        return (tuple((f.key, f.severity, f.summary, f.since, f.playbook, f.target, hint_key(f))
                      for f in snapshot.findings),
                tuple((st.name, st.state) for st in snapshot.sources.values()),
                read_ago(age_s(snapshot.at, self._now(snapshot))) if self.is_mounted else "",
                int(snapshot.at.timestamp() // 10))

    def _apply(self, snapshot: Snapshot, *, table_too: bool) -> None:
        health = self.health(snapshot, [])
        st = self.styles_
        findings = sorted(snapshot.findings, key=Finding.sort_key)
        notice = Text()
        if health.degraded:
            names = ", ".join(s.name for s in health.degraded)
            notice.append(f"{Status.UNKNOWN.symbol} {len(health.degraded)} source(s) degraded ({names}): "
                          "findings may be incomplete", style=st.unknown)
        self.set_class(bool(health.degraded), "-degraded")
        self._set_text("notice", notice)
        self.set_class(not findings, "-empty")
        if not findings:
            if not snapshot.sources:
                empty = Text("No findings: nothing configured to check.")
            elif all(s.state.value == "pending" for s in snapshot.sources.values()):
                empty = Text("No findings yet: waiting for the first readings…")
            else:
                empty = Text(f"{Status.OK.symbol} No findings: nothing wrong right now.", style=st.ok)
            self._set_text("empty", empty)
        else:
            self._set_text("empty", Text(""))
        summary = Text()
        if findings:
            counts: dict[Severity, int] = {}
            for f in findings:
                counts[f.severity] = counts.get(f.severity, 0) + 1
            summary.append(f"{len(findings)} finding{'s' if len(findings) != 1 else ''}", style="bold")
            for sev in sorted(counts):
                summary.append(f"  {SEVERITY_STATUS[sev].symbol} {sev.label} {counts[sev]}",
                               style=st.of(SEVERITY_STATUS[sev]))
        self._set_text("summary", summary)
        age = Text()
        if snapshot.sources:
            age = Text(read_ago(age_s(snapshot.at, self._now(snapshot))).replace("read", "checked"), style="dim")
        self._set_text("age", age)
        self._degraded = set()
        if table_too:
            self._sync_rows([self._row(f, snapshot.at) for f in findings])

    def _now(self, snapshot: Snapshot) -> datetime:
        clock = getattr(self.app, "clock", None)
        if callable(clock):
            try:
                now = clock()
                if isinstance(now, datetime):
                    return now
            except Exception:
                pass
        return snapshot.at

    def hint(self, finding: Finding) -> tuple[Any, str | None] | None:
        if self.playbook_hint is None:
            return None
        try:
            return self.playbook_hint(finding)
        except Exception:
            return None

    def _row(self, f: Finding, now: datetime) -> Row:
        st = self.styles_
        status = SEVERITY_STATUS[f.severity]
        badge = Text(f" {SEVERITY_SYMBOL[f.severity]} {f.severity.label} ", style=f"bold reverse {st.of(status)}".strip())
        summary = Text(f.summary, style="bold" if f.severity <= Severity.P1 else "")
        hint = self.hint(f)
        if hint and step_text(hint[0]):
            step, key = hint
            summary.append("\n  → ", style="dim")
            waiting = getattr(step, "waiting", "")
            if waiting:  # the fix before is taking effect: wait (the time left), or act now
                left = getattr(step, "wait_left", None)
                summary.append(f"{waiting}" + (f" ({format_duration(left)} left)" if left else "") + ", or ")
            if key:  # the key first: a long step is cut at the right, the key never
                summary.append(f"[{key}] ", style=f"bold {st.ok}".strip())
            summary.append(step_text(step))
        cells = (
            badge,
            summary,
            Text(fmt_coarse(age_s(f.since, now))),
            Text(f.playbook or "-", style="dim"),
        )
        return Row(f.key, cells, f, f.source, search=f"{f.severity.label} {f.summary} {f.source} {f.playbook or ''}",
                   height=2 if "\n" in summary.plain else 1)

    def next_step_text(self, key: str) -> str:
        """The next step shown under a finding ("" when it has none)."""
        cell = self.table.get_cell(key, "summary")
        plain = getattr(cell, "plain", str(cell))
        return plain.split("\n  → ", 1)[1] if "\n  → " in plain else ""

    # ------------------------------------------------------------------ actions

    def _finding(self) -> Finding | None:
        row = self.cursor_row()
        return row.item if row is not None else None

    def action_next_step(self) -> None:
        f = self._finding()
        hint = self.hint(f) if f is not None else None
        step = hint[0] if hint else None
        action = getattr(step, "action", None)
        if f is None or not action:
            self.notify("No next step with an action for this finding.", severity="warning", timeout=3)
            return
        self.run_step(f, step)

    def run_step(self, finding: Finding, step: Any) -> None:
        """Plan the step's action for the finding: its target's params plus the step's own."""
        params = target_params(finding.target)
        extra = getattr(step, "action_params", None)
        if callable(extra):
            params.update(extra())
        # an action that asks for a reason opens with the finding as its reason (editable)
        params.setdefault("reason", f"{finding.severity.label} {finding.summary}"[:200])
        self.request(step.action, params, finding.target or finding.key)

    def step_for_key(self, key: str) -> tuple[Finding, Any] | None:
        """(finding, step) that the pressed key runs: the cursor's finding when its step shows
        that key, else the first finding (in the pane's order) whose step does."""
        if self.app is not None and getattr(self.app, "read_only", False):
            return None
        rows = [self.cursor_row()] + [self._items.get(k) for k in self.row_keys()]
        for row in rows:
            f = getattr(row, "item", None)
            if not isinstance(f, Finding):
                continue
            hint = self.hint(f)
            if hint and hint[1] == key and getattr(hint[0], "action", None):
                return f, hint[0]
        return None

    def on_key(self, event: events.Key) -> None:
        if event.key in ("n", "enter", "up", "down", "tab", "shift+tab", "escape"):
            return
        found = self.step_for_key(event.key)
        if found is None:
            return
        event.stop()
        event.prevent_default()
        finding, step = found
        if self.cursor_key() != finding.key and finding.key in self.row_keys():
            self.table.move_cursor(row=self.table.get_row_index(finding.key), animate=False)
        self.run_step(finding, step)

    def action_escalate(self) -> None:
        f = self._finding()
        params = {"finding": f.key, "severity": f.severity.label, "summary": f.summary} if f else {}
        self.request("escalate", params, f.target or f.key if f else "")

    def action_declare_incident(self) -> None:
        f = self._finding()
        params = {"severity": f.severity.label, "title": f.summary, "finding": f.key} if f else {}
        self.request("incident.declare", params, f.target or f.key if f else "")

    def action_context(self, verb: str) -> dict:
        f = self._finding()
        if f is None:
            return {}
        if verb == "incident":
            return {"severity": f.severity.label, "title": f.summary, "finding": f.key}
        if verb == "escalate":
            return {"finding": f.key, "severity": f.severity.label, "summary": f.summary}
        return target_params(f.target)

    def selected_text(self) -> str:
        f = self._finding()
        return f"[{f.severity.label}] {f.summary}" if f else ""


def builtin_playbook_hint(book: Any = None) -> PlaybookHint:
    """A `playbook_hint` from `backends.engine.playbooks` (the seeds' procedures): next step and its key."""
    from backends.engine.playbooks import PlaybookBook

    book = book or PlaybookBook()

    def hint(finding: Finding):
        step = book.next_step(finding)
        return (step, step.key) if step is not None else None

    return hint
