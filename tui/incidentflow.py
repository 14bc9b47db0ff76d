"""Incidents in the console: `i` opens the incident screen (declare from the selected
finding, or the open incident), `e` the escalate screen (brief review, outbox), enter on
a finding its playbook; the findings pane shows each finding's next step from the
audit trail. Mixed into WarroomApp before ActionFlow (it overrides `action_verb` and
`request_action` for these cases only, when the engine has incidents attached).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backends.model import Finding


class IncidentFlow:
    """Needs `self.engine`, `self.dashboard`, `self.snapshot` and the App API."""

    def _incidents(self) -> Any:
        return getattr(self.engine, "incidents", None)

    def playbook_book(self) -> Any:
        """The built-in playbooks plus the engine config's `[[playbooks]]` (built once per engine)."""
        engine = self.engine
        cached = getattr(self, "_playbook_book", None)
        if cached is not None and cached[0] is engine:
            return cached[1]
        from backends.playbooks import book_for

        book = book_for(getattr(engine, "config", None))
        self._playbook_book = (engine, book)
        return book

    def wire_playbook_hints(self) -> None:
        """The findings pane's "next step" column: from the audit trail and the configured actions."""
        engine = self.engine
        if self.dashboard is None or getattr(engine, "audit", None) is None:
            return
        from backends.playbooks import PlaybookHints

        hints = PlaybookHints(book=self.playbook_book(), audit=engine.audit,
                              actions=getattr(engine, "actions", None))
        for pane in self.dashboard.query("FindingsPane"):
            if getattr(pane, "playbook_hint", "missing") is None:
                pane.playbook_hint = hints

    # ------------------------------------------------------------------ overrides (ActionFlow)

    def action_verb(self, verb: str) -> None:
        if verb in ("incident", "escalate") and self._incidents() is not None:
            self.open_incident_flow("incident.declare" if verb == "incident" else "escalate",
                                    self._selected_finding())
            return
        super().action_verb(verb)  # type: ignore[misc]

    def request_action(self, action_id: str, params: Mapping[str, Any] | None = None) -> None:
        # a pane's "escalate" (no reviewed brief yet) goes through the escalate screen
        if action_id == "escalate" and self._incidents() is not None and not (params or {}).get("brief"):
            self.open_incident_flow("escalate", self._finding_by_key((params or {}).get("finding")))
            return
        super().request_action(action_id, params)  # type: ignore[misc]

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
            item = pane.detail() if callable(getattr(pane, "detail", None)) else None
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
