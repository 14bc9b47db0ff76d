"""How operator intent becomes an action: verb keys, pane requests, palette entries ->
plan (with the focused pane's selection as parameters, or a form when the plan needs
more) -> the action modal -> the result. Mixed into WarroomApp.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from textual.binding import Binding
from textual.command import SimpleCommand

from backends.errors import ActionRefused, describe_exception
from tui.bindings import VERBS, verb_matches
from tui.messages import ActionFinished
from tui.textual_compat import app_keymap, normalize_keymap, own_bindings

if TYPE_CHECKING:
    from textual.app import App

    from backends.actions.base import ActionEngine
    from backends.interface import EngineLike
    from tui.screens.dashboard import DashboardScreen

    _AppBase = App[Any]  # the mixin is only ever mixed into WarroomApp (an App)
else:
    _AppBase = object


class ActionFlow(_AppBase):
    """Needs `self.engine`, `self.read_only`, `self.dashboard` and the App API."""

    # set by WarroomApp.__init__ (declared here for the type checker)
    engine: EngineLike | None
    read_only: bool
    config: Any
    dashboard: DashboardScreen | None
    custom_bindings: list

    def _action_engine(self) -> ActionEngine:
        """The engine's actions; AttributeError while there is no engine (a deferred start)."""
        engine = self.engine
        if engine is None:
            raise AttributeError("the engine is not started yet")
        return engine.actions

    def actions_for_verb(self, verb: str) -> list:
        engine = self.engine.actions if self.engine is not None else None
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

    # ------------------------------------------------------------------ [[actions]] keys

    def bind_custom_actions(self) -> list[Binding]:
        """Bind each `[[actions]] key` (app level: shown in the footer and in `?`, id
        `command_<name>`, remappable in [keys]) to its `command.<name>` action. A key the
        console already uses everywhere (global or dashboard keys, another custom action)
        is not bound; a key a pane uses is bound but the pane's key wins there. Both warn,
        like the [keys] check. Returns the bindings made."""
        engine = self.engine.actions if self.engine is not None else None
        made: list[Binding] = list(getattr(self, "custom_bindings", []) or [])
        if engine is None or made:
            return made
        keymap = app_keymap(self)
        everywhere, in_panes = self._keys_in_use(keymap)
        problems: list[str] = []
        for entry in _config_actions(self.config if self.config is not None else
                                     (self.engine.config if self.engine is not None else None)):
            name, key = _entry(entry, "name"), _entry(entry, "key")
            if not name or not key:
                continue
            action_id = f"command.{name}"
            try:
                engine.get(action_id)
            except ActionRefused:
                continue
            bid = f"command_{name}"
            keys = [k for k in normalize_keymap(self, {bid: keymap.get(bid) or str(key)})[bid].split(",") if k]
            taken = [k for k in keys if k in everywhere]
            if taken:
                problems.append(f"{name}: key {_shown(taken[0])} is already {everywhere[taken[0]]} (not bound)")
                continue
            for k in keys:
                if k in in_panes:
                    problems.append(f"{name}: key {_shown(k)} is {in_panes[k]}; the pane's key wins there")
            run = f"custom_action({action_id!r})"
            for k in keys:  # one binding per key, as Textual makes them from BINDINGS
                own_bindings(self).key_to_bindings.setdefault(k, []).append(Binding(k, run, str(name), id=bid))
                everywhere[k] = f"{name} ([[actions]])"
            made.append(Binding(",".join(keys), run, str(name), id=bid))  # for `?` and [keys]
        self.custom_bindings = made
        if problems:
            self.notify("[[actions]] key: " + "; ".join(problems), title="config", severity="warning",
                        timeout=10)
        return made

    def _keys_in_use(self, keymap: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """(key -> what uses it everywhere, key -> what uses it in one pane), keymap applied."""
        def keys_of(node) -> dict[str, str]:
            bindings = own_bindings(node).copy()
            if keymap:
                bindings.apply_keymap(dict(keymap))
            out = {}
            for key, found in bindings.key_to_bindings.items():
                b = found[0]
                out[key] = f"{b.description or b.action}" + (f" ({b.id})" if b.id else "")
            return out

        everywhere = keys_of(self)
        board = self.dashboard
        in_panes: dict[str, str] = {}
        if board is not None:
            everywhere.update(keys_of(board))
            from tui.screens.dashboard import PANES

            for spec in PANES:
                try:
                    pane = board.pane(spec.id)
                except Exception:
                    continue
                if pane is None:
                    continue
                for node in (pane, *pane.walk_children()):
                    for key, what in keys_of(node).items():
                        in_panes.setdefault(key, f"{what} in the {spec.title} pane")
        return everywhere, in_panes

    def action_custom_action(self, action_id: str) -> None:
        """A `[[actions]] key`: the action with the focused pane's context (its declared fields)."""
        try:
            action = self._action_engine().get(action_id)
        except (ActionRefused, AttributeError):
            return
        self.request_action(action_id, _fit(action, self._pane_context(action_id)))

    def custom_action_allowed(self, action_id: str) -> bool:
        engine = self.engine.actions if self.engine is not None else None
        if engine is None:
            return False
        return any(a.id == action_id and self.may_run(a) for a in engine.available())

    def on_action_requested(self, message) -> None:
        """`widgets.messages.ActionRequested(action_id, params)` from a pane."""
        message.stop()
        self.request_action(message.action_id, dict(getattr(message, "params", None) or {}))

    def request_action(self, action_id: str, params: Mapping[str, Any] | None = None) -> None:
        try:
            engine = self._action_engine()
            action = engine.get(action_id)
        except (ActionRefused, AttributeError) as exc:
            self.notify(f"{action_id}: {getattr(exc, 'reason', exc)}", severity="error")
            return
        if not self.may_run(action) or action not in engine.available():
            self.notify(f"{action_id}: refused, warroom is read-only", severity="error")
            return
        # only what the action takes: a step's target params (service=...) for a command that
        # names no service were refused as "unknown parameter(s)"
        params = _fit(action, dict(params or {}))
        self.run_worker(self._plan_and_open(action_id, params), group="plan",
                        exclusive=True)

    def _ask_params(self, action_id: str, params: dict, problem: str, *, ask: bool = False,
                    suggest: Mapping[str, Any] | None = None, focus: str | None = None) -> bool:
        """Ask for the plan's parameters (a refused plan with typeable ones); False if none.
        `ask`: only input was missing, so the form asks a question rather than shows an error;
        `suggest`: values the form opens with (the operator's own values win)."""
        from tui.screens.params import ParamsScreen, fillable

        action = self._action_engine().get(action_id)
        if not fillable(action):
            return False
        params = {**dict(suggest or {}), **params}

        def done(filled: dict | None) -> None:
            if filled is not None:
                self.run_worker(self._plan_and_open(action_id, filled, asked=True), group="plan",
                                exclusive=True)

        self.push_screen(ParamsScreen(action, params, problem, question=ask, focus=focus), done)
        return True

    async def _plan_and_open(self, action_id: str, params: dict, asked: bool = False) -> None:
        from tui.screens.action import ActionScreen

        try:
            actions = self._action_engine()
            plan = await actions.plan(action_id, **params)
        except ActionRefused as exc:
            if getattr(exc, "nothing", False):  # nothing to do in this state: a form would not change that
                self.notify(f"{action_id}: {exc.reason}", title="nothing to do", severity="warning")
                return
            if not asked and self._ask_params(action_id, params, exc.reason, ask=getattr(exc, "ask", False),
                                              suggest=getattr(exc, "suggest", None),
                                              focus=getattr(exc, "focus", None)):
                return
            self.notify(f"{action_id}: {exc.reason}", title="refused", severity="error")
            return
        except Exception as exc:  # a bug or a backend failure: the console's one report of it
            report = getattr(self, "report_failure", None)
            if callable(report):
                report(exc, f"planning {action_id}")
            else:
                self.notify(f"{action_id}: {describe_exception(exc)}", title="plan failed", severity="error")
            return
        self.push_screen(ActionScreen(actions, plan), self._action_closed)

    def _action_closed(self, outcome) -> None:
        if outcome is None:
            return
        plan, result = outcome
        self.post_message(ActionFinished(plan, result))
        self.notify(f"{plan.title}: {result.status.upper()} - {result.summary}",
                    severity="information" if result.ok else "error")
        if self.engine is not None and self.engine.monitor.running:
            self.engine.monitor.refresh()  # show the world after the change now, not at the next interval


def _fit(action, params: dict) -> dict:
    """Only the focused pane's context that the action's plan() accepts: its declared fields
    (`param_fields()`, plus reason/confirmation) when it declares them, else the keyword
    parameters of plan()."""
    declared = _declared_names(action)
    if declared is not None:
        return {k: v for k, v in params.items() if k in declared or k in PASS_THROUGH}
    try:
        sig = inspect.signature(action.plan)
    except (TypeError, ValueError):
        return params
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return params
    return {k: v for k, v in params.items() if k in sig.parameters}


PASS_THROUGH = frozenset({"reason", "confirmation"})


def _declared_names(action) -> set[str] | None:
    """The names of the fields `action` declares (`param_fields()`), None when it declares none."""
    from tui.screens.params import declared_fields

    fields = declared_fields(action)
    return None if fields is None else {str(f.name) for f in fields if f.name}


def _config_actions(config: Any) -> list:
    if config is None:
        return []
    found = config.get("actions") if isinstance(config, Mapping) else getattr(config, "actions", None)
    return list(found or ())


def _entry(entry: Any, key: str) -> Any:
    return entry.get(key) if isinstance(entry, Mapping) else getattr(entry, key, None)


def _shown(key: str) -> str:
    """How a key is written by people ("?" not "question_mark")."""
    from textual.keys import format_key

    try:
        return format_key(key)
    except Exception:
        return key
