"""No screen, widget or app of ours shadows a Textual attribute by accident.

The incident screen once kept `self._closed = ...`-style state under a name Textual's
MessagePump uses (a method of ours named `_closed` hid behind Textual's bool
`MessagePump._closed`, so the dismiss callback given to push_screen was `False` and
resolving an incident crashed the console). This test walks every class in tui/ and
widgets/ that subclasses a Textual DOM node and fails when one of its attributes, methods
or `self.X = ...` assignments reuses a name Textual's own classes define, unless it is
a documented hook or setting meant to be overridden (compose, on_mount, BINDINGS, ...).
Textual private names may be overridden only in tui/textual_compat.py.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import textwrap
from functools import cache

import pytest
from textual.dom import DOMNode

import tui
import tui.screens
import widgets

# Public names Textual means subclasses to set or override.
HOOKS = {
    "BINDINGS", "CSS", "CSS_PATH", "DEFAULT_CSS", "COMMANDS", "TITLE", "SUB_TITLE", "COMPONENT_CLASSES",
    "AUTO_FOCUS", "DEFAULT_CLASSES", "BORDER_TITLE", "BORDER_SUBTITLE", "ALLOW_MAXIMIZE", "ENABLE_COMMAND_PALETTE",
    "COMMAND_PALETTE_BINDING", "HORIZONTAL_BREAKPOINTS", "ESCAPE_TO_MINIMIZE", "INLINE_PADDING", "MODES",
    "SCREENS", "can_focus", "can_focus_children", "compose", "render", "render_line", "render_lines",
    "get_content_width", "get_content_height", "check_action", "watch", "notify", "refresh", "focus",
    "get_theme_variable_defaults", "exit", "get_system_commands", "action_quit", "action_help_quit",
    "action_focus_next", "action_focus_previous", "action_cursor_down", "action_cursor_up",
    "action_select_cursor", "action_toggle_dark", "action_screenshot", "action_command_palette",
    "action_dismiss", "action_copy", "action_cancel", "action_confirm", "action_submit", "action_close",
    "action_scroll_up", "action_scroll_down", "action_page_up", "action_page_down", "action_scroll_home",
    "action_scroll_end", "ALLOW_SELECT", "VERTICAL_BREAKPOINTS", "NOTIFICATION_TIMEOUT",
    "CLOSE_TIMEOUT", "BINDING_GROUP_TITLE", "SUSPENDED_SCREEN_CLASS", "PAUSE_GC_ON_SCROLL",
    "get_loading_widget", "get_driver_class", "get_key_display", "get_css_variables", "pop_screen", "validate_title",
    "SCOPED_CSS", "ALLOW_IN_MAXIMIZED_VIEW",
    # public reactives / properties meant to be assigned
    "border_title", "border_subtitle", "theme", "virtual_size", "tooltip", "loading", "disabled", "title",
    "sub_title",
}
# Names of ours that reuse a Textual name on purpose (reason given).
KNOWN = {
    ("WarroomApp", "_shutdown"): "engine stop before the screens close; calls textual_compat.app_shutdown",
    ("LogTail", "_styles_cache"): "its own StylesCache subclass (row styles); visible-lines rendering",
    ("PaneTable", "update_cell"): "repaints one row, then DataTable.update_cell; same signature",
}


def _our_modules():
    for pkg in (tui, tui.screens, widgets):
        for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
            if info.name in ("tui.textual_compat",) or info.ispkg:
                continue
            yield importlib.import_module(info.name)


def _our_classes():
    seen = set()
    for mod in _our_modules():
        for _name, cls in inspect.getmembers(mod, inspect.isclass):
            if cls in seen or not issubclass(cls, DOMNode) or cls.__module__ != mod.__name__:
                continue
            seen.add(cls)
            yield cls


@cache
def _assigned(cls: type) -> frozenset[str]:
    """Names assigned as `self.X = ...` (or `self.X: T = ...`) in the class's own source."""
    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return frozenset()
    names = set()
    for node in ast.walk(ast.parse(src)):
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign | ast.AugAssign) else [])
        for t in targets:
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                names.add(t.attr)
    return frozenset(names)


def _textual_bases(cls: type) -> list[type]:
    return [b for b in cls.__mro__ if (b.__module__ or "").startswith("textual.")]


@cache
def _textual_names(base: type) -> frozenset[str]:
    return frozenset(base.__dict__) | _assigned(base)


@cache
def _machinery() -> frozenset[str]:
    """What Textual's class machinery puts in every subclass's own __dict__."""
    from textual.app import App
    from textual.screen import ModalScreen
    from textual.widget import Widget

    names: set[str] = set()
    for base in (Widget, ModalScreen, App):
        probe = type("_Probe", (base,), {"__module__": "tests.probe"})
        names |= set(probe.__dict__)
    return frozenset(names)


def _clashes(cls: type) -> list[str]:
    out = []
    bases = _textual_bases(cls)
    ours = [c for c in cls.__mro__ if c not in bases and c is not object
            and not (c.__module__ or "").startswith("textual") and c.__module__ != "tui.textual_compat"]
    for mine in ours:
        own = set(mine.__dict__) | _assigned(mine)
        for name in sorted(own):
            if name.startswith("__") or name in HOOKS or name in _machinery() or name.startswith(("on_", "watch_", "_on_", "key_")):
                continue
            if (mine.__name__, name) in KNOWN:
                continue
            for base in bases:
                if name not in _textual_names(base):
                    continue
                theirs = base.__dict__.get(name)
                ours_v = mine.__dict__.get(name)
                method_override = callable(theirs) and callable(ours_v) and not name.startswith("_") \
                    and name not in _assigned(mine)
                if method_override and (name.startswith("action_") or name in ("validate", "update", "clear")):
                    break
                if method_override:
                    out.append(f"{mine.__module__}.{mine.__name__}.{name} overrides "
                               f"{base.__module__}.{base.__name__}.{name}")
                else:
                    out.append(f"{mine.__module__}.{mine.__name__}.{name} shadows "
                               f"{base.__module__}.{base.__name__}.{name}")
                break
    return out


def test_no_class_of_ours_shadows_a_textual_name():
    found = []
    for cls in _our_classes():
        found.extend(_clashes(cls))
    assert not sorted(set(found)), "\n".join(sorted(set(found)))


def test_the_check_catches_the_incident_screen_bug():
    from textual.screen import ModalScreen

    class Broken(ModalScreen):
        def _closed(self, outcome) -> None:  # the name MessagePump keeps a bool under
            pass

    Broken.__module__ = "tests.fake"
    assert any("_closed" in c for c in _clashes(Broken))


@pytest.mark.parametrize("name", ["_closed", "_running", "_parent", "_id", "_classes"])
def test_textual_still_uses_these_private_names(name):
    """If Textual stops using one of these, the check above may miss a real clash."""
    from textual.message_pump import MessagePump
    from textual.widget import Widget

    assert any(name in _textual_names(b) for b in (MessagePump, *Widget.__mro__[:-1])), name
