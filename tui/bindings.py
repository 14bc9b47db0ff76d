"""Every key of the console, with an id (for `[keys]` remapping) and a description.

The footer, the help screen and the command palette are all generated from these
lists and from each pane's own `BINDINGS`. Keys that start an action are "verbs":
they look up a matching action on the engine, so in read-only mode (where
`ActionEngine.available()` lists no mutating action) they do not exist at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class Verb:
    """A key that starts an action: which engine actions it may start."""

    name: str  # binding id and action suffix
    title: str
    words: tuple[str, ...]  # all must occur in the action id


VERBS: dict[str, Verb] = {
    v.name: v
    for v in (
        Verb("restart", "Restart", ("restart",)),
        Verb("fix", "Fix", ("fix",)),
        Verb("escalate", "Escalate", ("escalate",)),
        Verb("incident", "Incident", ("incident",)),
        Verb("reset_breaker", "Reset breaker", ("breaker", "reset")),
    )
}


def verb_matches(verb: Verb, action_id: str) -> bool:
    aid = action_id.lower()
    return all(w in aid for w in verb.words)


APP_BINDINGS: list[Binding] = [
    Binding("question_mark", "help", "Help", id="help", key_display="?"),
    Binding("ctrl+p", "command_palette", "Palette", id="palette", priority=True),
    Binding("q", "quit", "Quit", id="quit"),
    Binding("ctrl+l", "redraw", "Redraw", id="redraw", show=False),
    Binding("h", "history", "History", id="history"),
    Binding("ctrl+r", "refresh_all", "Poll now", id="refresh", show=False),
    Binding("r", "verb('restart')", "Restart", id="restart"),
    Binding("f", "verb('fix')", "Fix", id="fix"),
    Binding("e", "verb('escalate')", "Escalate", id="escalate"),
    Binding("i", "verb('incident')", "Incident", id="incident"),
    Binding("b", "verb('reset_breaker')", "Reset breaker", id="reset_breaker"),
    Binding("y", "copy", "Copy", id="copy", show=False),
]

# One digit key per dashboard pane (tui.screens.dashboard.PANES; a test checks they agree).
PANE_COUNT = 8

DASHBOARD_BINDINGS: list[Binding] = [
    Binding("tab", "next_pane(1)", "Next pane", id="focus_next", show=False),
    Binding("shift+tab", "next_pane(-1)", "Previous pane", id="focus_previous", show=False),
    Binding("slash", "filter", "Filter", id="filter", key_display="/"),
    Binding("p", "pause_follow", "Pause logs", id="pause_follow", show=False),
    Binding("enter", "detail", "Detail", id="detail", show=False),
    *[
        Binding(str(n), f"go_to_pane({n - 1})", f"Pane {n}", id=f"pane_{n}", show=False)
        for n in range(1, PANE_COUNT + 1)
    ],
]

# Modal keys (kept here so help can show them too).
MODAL_BINDINGS: list[Binding] = [
    Binding("escape", "cancel", "Cancel", id="modal_cancel"),
    Binding("enter", "confirm", "Confirm", id="modal_confirm", priority=False),
]


def binding_key_display(binding: Binding, keymap: dict[str, str] | None = None) -> str:
    """The key(s) a user presses for `binding`, honouring their keymap."""
    keys = binding.key
    if keymap and binding.id and binding.id in keymap:
        keys = keymap[binding.id]
    elif binding.key_display:
        return binding.key_display
    return ",".join(key_shown(k) for k in keys.split(",") if k.strip())


def key_shown(key: str) -> str:
    """How a person writes a key ("]" for right_square_bracket, "ctrl+r", "?")."""
    from textual.keys import format_key

    key = key.strip()
    if key in ("shift+tab", "tab", "enter", "escape", "space", "up", "down", "left", "right"):
        return key
    try:
        return format_key(key)
    except Exception:
        return key
