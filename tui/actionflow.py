"""How operator intent becomes an action: verb keys, pane requests, palette entries ->
plan (with the focused pane's selection as parameters, or a form when the plan needs
more) -> the action modal -> the result. Mixed into WarroomApp.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from textual.command import SimpleCommand

from backends.errors import ActionRefused, describe_exception
from tui.bindings import VERBS, verb_matches
from tui.messages import ActionFinished


class ActionFlow:
    """Needs `self.engine`, `self.read_only`, `self.dashboard` and the App API."""

    def actions_for_verb(self, verb: str) -> list:
        engine = getattr(self.engine, "actions", None)
        if engine is None or verb not in VERBS:
            return []
        return [a for a in engine.available() if verb_matches(VERBS[verb], a.id)]

    def may_run(self, action) -> bool:
        return not (self.read_only and getattr(action, "mutating", True))

    def action_verb(self, verb: str) -> None:
        found = self.actions_for_verb(verb)
        params = self._pane_context(verb)
        if len(found) == 1:
            self.request_action(found[0].id, _fit(found[0], params))
        elif found:
            self.search_commands(
                [SimpleCommand(a.title or a.id, lambda a=a: self.request_action(a.id, _fit(a, params)),
                               a.description or a.id) for a in found],
                placeholder=f"{VERBS[verb].title}: which action?")

    def context_for(self, action) -> dict:
        """Parameters for `action` from the focused pane's selection (palette entries)."""
        return _fit(action, self._pane_context(action.id))

    def _pane_context(self, verb: str) -> dict:
        pane = self.dashboard.focused_pane() if self.dashboard else None
        ctx = getattr(pane, "action_context", None)
        try:
            return dict(ctx(verb) or {}) if callable(ctx) else {}
        except Exception:
            return {}

    def on_action_requested(self, message) -> None:
        """`widgets.messages.ActionRequested(action_id, params)` from a pane."""
        message.stop()
        self.request_action(message.action_id, dict(getattr(message, "params", None) or {}))

    def request_action(self, action_id: str, params: Mapping[str, Any] | None = None) -> None:
        engine = getattr(self.engine, "actions", None)
        try:
            action = engine.get(action_id)
        except (ActionRefused, AttributeError) as exc:
            self.notify(f"{action_id}: {getattr(exc, 'reason', exc)}", severity="error")
            return
        if not self.may_run(action) or action not in engine.available():
            self.notify(f"{action_id}: refused, warroom is read-only", severity="error")
            return
        self.run_worker(self._plan_and_open(action_id, dict(params or {})), group="plan",
                        exclusive=True, exit_on_error=False)

    def _ask_params(self, action_id: str, params: dict, problem: str) -> bool:
        """Ask for the plan's parameters (a refused plan with typeable ones); False if none."""
        from tui.screens.params import ParamsScreen, fillable

        action = self.engine.actions.get(action_id)
        if not fillable(action):
            return False

        def done(filled: dict | None) -> None:
            if filled is not None:
                self.run_worker(self._plan_and_open(action_id, filled, asked=True), group="plan",
                                exclusive=True, exit_on_error=False)

        self.push_screen(ParamsScreen(action, params, problem), done)
        return True

    async def _plan_and_open(self, action_id: str, params: dict, asked: bool = False) -> None:
        from tui.screens.action import ActionScreen

        try:
            plan = await self.engine.actions.plan(action_id, **params)
        except ActionRefused as exc:
            if not asked and self._ask_params(action_id, params, exc.reason):
                return
            self.notify(f"{action_id}: {exc.reason}", title="refused", severity="error")
            return
        except Exception as exc:
            self.notify(f"{action_id}: {describe_exception(exc)}", title="plan failed",
                        severity="error")
            return
        self.push_screen(ActionScreen(self.engine.actions, plan), self._action_closed)

    def _action_closed(self, outcome) -> None:
        if outcome is None:
            return
        plan, result = outcome
        self.post_message(ActionFinished(plan, result))
        self.notify(f"{plan.title}: {result.status.upper()} - {result.summary}",
                    severity="information" if result.ok else "error")
        monitor = getattr(self.engine, "monitor", None)
        if monitor is not None and getattr(monitor, "running", False):
            monitor.refresh()  # show the world after the change now, not at the next interval


def _fit(action, params: dict) -> dict:
    """Only the focused pane's context that the action's plan() accepts."""
    try:
        sig = inspect.signature(action.plan)
    except (TypeError, ValueError):
        return params
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return params
    return {k: v for k, v in params.items() if k in sig.parameters}
