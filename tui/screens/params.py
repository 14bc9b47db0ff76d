"""Ask the operator for an action's parameters when its plan() needs more than the focused
pane can tell (e.g. the title and severity of an incident declared by hand).

The fields come from the keyword parameters of the action's `plan()` (text, numbers and
untyped values; never mappings or sequences); the engine still validates everything.
"""

from __future__ import annotations

import inspect
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

SKIP = {"self", "reason"}
SKIP_TYPES = ("Mapping", "dict", "list", "tuple", "Sequence", "Iterable", "bool")


def fillable(action) -> list[tuple[str, Any, str]]:
    """[(name, default, annotation)] of the plan() parameters a person can type."""
    try:
        sig = inspect.signature(action.plan)
    except (TypeError, ValueError):
        return []
    out = []
    for p in sig.parameters.values():
        if p.name in SKIP or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        if any(t in str(ann) for t in SKIP_TYPES):
            continue
        default = None if p.default is p.empty else p.default
        if default is not None and not isinstance(default, str | int | float):
            continue
        out.append((p.name, default, str(ann)))
    return out


def convert(text: str, default: Any, ann: str) -> Any:
    text = text.strip()
    if not text:
        return default
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes", "y")
    if isinstance(default, int) or ann.startswith("int"):
        try:
            return int(text)
        except ValueError:
            return text  # the action refuses it with its own message
    if isinstance(default, float) or ann.startswith("float"):
        try:
            return float(text)
        except ValueError:
            return text
    return text


class ParamsScreen(ModalScreen[dict | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="params_cancel")]

    def __init__(self, action, params: dict, problem: str = "") -> None:
        super().__init__(id="params-modal")
        self.action = action
        self.params = dict(params)
        self.problem = problem
        self.fields = fillable(action)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="params-dialog") as box:
            box.border_title = getattr(self.action, "title", "") or self.action.id
            box.border_subtitle = "enter: next / plan · escape: cancel"
            if self.problem:
                yield Static(Text(f"✖ {self.problem}", style="bold"), id="params-problem")
            for name, default, _ann in self.fields:
                yield Label(name.replace("_", " "))
                value = self.params.get(name, default)
                yield Input(value="" if value is None else str(value), placeholder=name,
                            id=f"param-{name}")

    def on_mount(self) -> None:
        first = next(iter(self.query(Input)), None)
        if first is not None:
            first.focus()

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        inputs = list(self.query(Input))
        i = inputs.index(event.input)
        if i + 1 < len(inputs):
            inputs[i + 1].focus()
            return
        out = dict(self.params)
        for name, default, ann in self.fields:
            value = convert(self.query_one(f"#param-{name}", Input).value, default, ann)
            if value is not None and value != "":
                out[name] = value
        self.dismiss(out)
