"""The command palette: every action the engine offers now, "go to pane", and views.

Generated from the engine (`ActionEngine.available()`, so read-only lists no mutating
action) and from the dashboard's pane list.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from tui.app import WarroomApp


class WarroomCommands(Provider):
    def _commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        from tui.screens.dashboard import PANES

        app = cast("WarroomApp", self.app)
        out: list[tuple[str, str, Callable[[], object]]] = []
        engine = getattr(getattr(app, "engine", None), "actions", None)
        if engine is not None:
            keys = _custom_keys(app)
            for action in engine.available():
                if hasattr(app, "may_run") and not app.may_run(action):
                    continue
                params = app.context_for(action) if hasattr(app, "context_for") else {}
                help_text = action.description or action.id
                if action.id in keys:  # `[[actions]] key`
                    help_text = f"{help_text} · {action.id}, key {keys[action.id]}"
                out.append((f"Action: {action.title or action.id}", help_text,
                            partial(app.request_action, action.id, params)))
                if action.id == "chain.pin":  # `unpin` is a flag of the same action
                    out.append(("Action: Unpin RPC endpoint (automatic failover)",
                                "chain.pin unpin: automatic failover resumes on the chain",
                                partial(app.request_action, action.id, {**params, "unpin": True})))
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


def _custom_keys(app) -> dict[str, str]:
    """action id -> the key(s) `[[actions]] key` bound to it (as the help shows them)."""
    from tui.bindings import binding_key_display

    out = {}
    for b in getattr(app, "custom_bindings", None) or []:
        _name, _, arg = b.action.partition("(")
        action_id = arg.rstrip(")").strip("'\"")
        if action_id:
            out[action_id] = binding_key_display(b, getattr(app, "user_keymap", None))
    return out
