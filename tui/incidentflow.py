"""Incidents in the console: `i` opens the incident screen (declare from the selected
finding, or the open incident), `e` the escalate screen (brief review, outbox), enter on
a finding its playbook; the findings pane shows each finding's next step from the
audit trail. Mixed into WarroomApp before ActionFlow (it overrides `action_verb` and
`request_action` for these cases only, when the engine has incidents attached).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from backends.model import Finding

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from backends.model import Snapshot
    from tui.actionflow import ActionFlow

    _FlowBase = ActionFlow  # mixed into WarroomApp before ActionFlow (see the overrides)
else:
    _FlowBase = object


class IncidentFlow(_FlowBase):
    """Needs `self.engine`, `self.dashboard`, `self.snapshot` and the App API."""

    snapshot: Snapshot | None  # set by WarroomApp (the last snapshot shown)
    clock: Callable[[], datetime]  # WarroomApp's (the engine's by default)

    def _incidents(self) -> Any:
        return self.engine.incidents if self.engine is not None else None

    def playbook_book(self) -> Any:
        """The built-in playbooks plus the engine config's `[[playbooks]]` (built once per engine)."""
        engine = self.engine
        cached = getattr(self, "_playbook_book", None)
        if cached is not None and cached[0] is engine:
            return cached[1]
        from backends.engine.playbooks import book_for

        book = book_for(engine.config if engine is not None else None)
        self._playbook_book = (engine, book)
        return book

    def wire_playbook_hints(self) -> None:
        """The findings pane's "next step" column: from the audit trail and the configured actions."""
        engine = self.engine
        if self.dashboard is None or engine is None:
            return
        audit = engine.audit
        from backends.engine.playbooks import PlaybookHints
        from widgets.findings import FindingsPane

        hints = PlaybookHints(book=self.playbook_book(), audit=audit,
                              actions=engine.actions, clock=self.clock)
        for pane in self.dashboard.query(FindingsPane):
            if pane.playbook_hint is None:
                pane.playbook_hint = hints

    # ------------------------------------------------------------------ overrides (ActionFlow)

    def action_verb(self, verb: str) -> None:
        if verb in ("incident", "escalate") and self._incidents() is not None:
            self.open_incident_flow("incident.declare" if verb == "incident" else "escalate",
                                    self._selected_finding())
            return
        super().action_verb(verb)

    def request_action(self, action_id: str, params: Mapping[str, Any] | None = None) -> None:
        # a pane's "escalate" (no reviewed brief yet) goes through the escalate screen
        if action_id == "escalate" and self._incidents() is not None and not (params or {}).get("brief"):
            self.open_incident_flow("escalate", self._finding_by_key((params or {}).get("finding")))
            return
        if action_id == "incident.declare" and params and params.get("finding"):
            finding = self._finding_by_key(params["finding"])
            if _incident_for(self._incidents(), finding) is not None:  # one open incident per finding
                self.open_incident_flow("incident.declare", finding)
                return
        super().request_action(action_id, params)

    # ------------------------------------------------------------------ screens

    def open_playbook(self, finding: Finding) -> None:
        from tui.screens.playbook import PlaybookScreen

        self.push_screen(PlaybookScreen(finding, self.engine, book=self.playbook_book()))

    def open_incident_flow(self, action_id: str, finding: Finding | None = None) -> None:
        """`incident.*`: the incident screen (declare from the finding when none is open);
        `escalate`: the escalate screen (the incident screen first when none is open)."""
        from tui.screens.incident import IncidentScreen

        incidents = self._incidents()
        current = incidents.current() if incidents is not None else None
        own = _incident_for(incidents, finding)
        if own is not None:  # one open incident per finding: `i` on it opens that one
            current = own
        if action_id == "escalate":
            if current is not None:
                from tui.screens.escalate import EscalateScreen

                self.push_screen(EscalateScreen(self.engine, incident_id=current.id))
                return
            self.notify("no open incident: declare it (ctrl+s), then e to escalate", timeout=5)
        if current is not None:
            self.push_screen(IncidentScreen(self.engine, incident_id=current.id))
            return
        self.push_screen(IncidentScreen(self.engine, finding=finding))

    # ------------------------------------------------------------------ selection

    def _selected_finding(self) -> Finding | None:
        pane = self.dashboard.focused_pane() if self.dashboard is not None else None
        try:
            detail = getattr(pane, "detail", None)
            item = detail() if callable(detail) else None
        except Exception:
            item = None
        return item if isinstance(item, Finding) else None

    def _finding_by_key(self, key: Any) -> Finding | None:
        if isinstance(key, Finding):
            return key
        snap = getattr(self, "snapshot", None)
        if key and snap is not None:
            found = next((f for f in snap.findings if f.key == key), None)
            if found is not None:
                return found
        return self._selected_finding()


def _incident_for(incidents: Any, finding: Finding | None) -> Any:
    """The open incident declared from (or tracking) this finding, if any."""
    if incidents is None or finding is None:
        return None
    try:
        for inc in incidents.open_incidents():
            declared = (getattr(inc, "finding", None) or {}).get("key")
            if declared == finding.key or finding.key in (getattr(inc, "findings", None) or {}):
                return inc
    except Exception:
        return None
    return None
