"""The command palette: every action the engine offers now, "go to pane", and views.

Generated from the engine (`ActionEngine.available()`, so read-only lists no mutating
action) and from the dashboard's pane list.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider


class WarroomCommands(Provider):
    def _commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        from tui.screens.dashboard import PANES

        app = self.app
        out: list[tuple[str, str, Callable[[], object]]] = []
        engine = getattr(getattr(app, "engine", None), "actions", None)
        if engine is not None:
            for action in engine.available():
                if hasattr(app, "may_run") and not app.may_run(action):
                    continue
                params = app.context_for(action) if hasattr(app, "context_for") else {}
                out.append((f"Action: {action.title or action.id}",
                            action.description or action.id,
                            partial(app.request_action, action.id, params)))
        for i, spec in enumerate(PANES):
            out.append((f"Go to pane: {spec.title}", f"show and focus the {spec.title} pane (key {i + 1})",
                        partial(app.go_to_pane, spec.id)))
        out.append(("Help: keys", "every key, grouped by pane", app.action_help))
        out.append(("Action history", "actions run in this session", app.action_history))
        out.append(("Poll all sources now", "refresh every source without waiting", app.action_refresh_all))
        out.append(("Redraw the screen", "repaint everything (ctrl+l)", app.action_redraw))
        return out

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
