"""Ask the operator for an action's parameters when its plan() needs more than the focused
pane can tell (e.g. the title and severity of an incident declared by hand, the values of a
custom `[[actions]]` command).

The fields come from the action's `param_fields()` when it declares them (name, type,
default, help and a validator: `backends.actions.command.ParamField`), else from the keyword
parameters of its `plan()` (text, numbers, untyped values and booleans; never mappings or
sequences). A declared validator runs before the form closes and its message is shown under
the field; the engine still validates everything. Booleans are switches (space toggles).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Input, Label, Static, Switch

from backends.actions.command import ParamField

SKIP = {"self", "reason"}
SKIP_TYPES = ("Mapping", "dict", "list", "tuple", "Sequence", "Iterable")
KEEP = {"reason", "confirmation"}  # passed through even when the action declares its fields


def fillable(action) -> list[ParamField]:
    """The fields a person can fill for `action`: its `param_fields()` if it declares them,
    else the typeable keyword parameters of its plan(). Each field also unpacks as
    `(name, default, type)`."""
    declared = declared_fields(action)
    if declared is not None:
        return declared
    try:
        sig = inspect.signature(action.plan)
    except (TypeError, ValueError):
        return []
    out = []
    for p in sig.parameters.values():
        if p.name in SKIP or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        ann = "" if p.annotation is p.empty else str(ann or p.annotation)
        if any(t in ann for t in SKIP_TYPES):
            continue
        default = None if p.default is p.empty else p.default
        if default is not None and not isinstance(default, str | int | float):
            continue
        out.append(ParamField(name=p.name, type=_type_of(default, ann), default=default))
    return out


def declared_fields(action) -> list[ParamField] | None:
    """The fields `action` declares (`param_fields()`, normalised), None when it declares none."""
    fn = getattr(action, "param_fields", None)
    if not callable(fn):
        return None
    try:
        fields = fn()
    except Exception:
        return None
    if fields is None:
        return None
    out = []
    for f in fields:
        if isinstance(f, ParamField):
            out.append(f)
        elif isinstance(f, Mapping):
            out.append(ParamField(**{k: v for k, v in f.items() if k in ParamField.__slots__}))
        else:  # (name, type, default, help) or shorter
            name, *rest = f
            out.append(ParamField(name=name, **dict(zip(("type", "default", "help"), rest, strict=False))))
    return out


def _type_of(default: Any, ann: str) -> str:
    if isinstance(default, bool) or ann.startswith("bool"):
        return "bool"
    if isinstance(default, int) or ann.startswith("int"):
        return "int"
    if isinstance(default, float) or ann.startswith("float"):
        return "float"
    return "text"


def convert(text: str, default: Any, ann: str) -> Any:
    text = text.strip()
    if not text:
        return default
    if isinstance(default, bool) or ann.startswith("bool"):
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


class BoolField(Switch):
    """A boolean field: space toggles, enter moves on like the text fields."""

    inherit_bindings = False
    BINDINGS = [
        Binding("space", "toggle_switch", "Toggle", show=False),
        Binding("enter", "next_field", "Next", show=False),
    ]

    def action_next_field(self) -> None:
        screen = self.screen
        if isinstance(screen, ParamsScreen):
            screen.advance(self)


class ParamsScreen(ModalScreen[dict | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="params_cancel")]
    DEFAULT_CSS = """
    ParamsScreen .param-help { color: $text-muted; }
    ParamsScreen .param-error { color: $error; text-style: bold; }
    ParamsScreen .param-error.-empty { display: none; }
    ParamsScreen BoolField { margin: 0 0 1 0; }
    """

    def __init__(self, action, params: dict, problem: str = "", *, question: bool = False,
                 focus: str | None = None) -> None:
        super().__init__(id="params-modal")
        self.action = action
        self.params = dict(params)
        self.problem = problem
        self.question = question  # the problem is only missing input: asked, not shown as an error
        self.focus_field = focus  # the field the question is about
        self.fields = fillable(action)
        self.declared = declared_fields(action) is not None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="params-dialog") as box:
            box.border_title = getattr(self.action, "title", "") or self.action.id
            box.border_subtitle = "enter: next / plan · space: toggle · escape: cancel"
            if self.problem:
                text = Text(self.problem, style="bold") if self.question else Text(f"✖ {self.problem}",
                                                                                   style="bold")
                yield Static(text, id="params-problem")
            for f in self.fields:
                label = f.name.replace("_", " ") + (" *" if f.required else "")
                yield Label(label, id=f"param-{f.name}-label")
                value = self.params.get(f.name, f.default)
                if f.type == "bool":
                    yield BoolField(value=bool(value), id=f"param-{f.name}")
                else:
                    yield Input(value="" if value is None else str(value), placeholder=f.help or f.name,
                                id=f"param-{f.name}")
                yield Static("", id=f"param-{f.name}-error", classes="param-error -empty")

    def on_mount(self) -> None:
        widgets = self.field_widgets()
        first = next(iter(widgets), None)
        if self.focus_field and any(f.name == self.focus_field for f in self.fields):
            first = self.query_one(f"#param-{self.focus_field}")
        if first is not None:
            first.focus()

    def field_widgets(self) -> list[Widget]:
        return [self.query_one(f"#param-{f.name}") for f in self.fields]

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.advance(event.input)

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        name = (event.input.id or "").removeprefix("param-")
        if any(f.name == name for f in self.fields):
            self._show_error(name, "")

    def advance(self, widget: Widget) -> None:
        """Enter on a field: the next field, or plan from the last one."""
        widgets = self.field_widgets()
        i = widgets.index(widget) if widget in widgets else len(widgets) - 1
        if i + 1 < len(widgets):
            widgets[i + 1].focus()
            return
        self.submit()

    def submit(self) -> None:
        """Validate every field (errors shown under it, the first one focused) and close."""
        out = {k: v for k, v in self.params.items()
               if not self.declared or k in KEEP or any(f.name == k for f in self.fields)}
        first_bad = None
        for f in self.fields:
            widget = self.query_one(f"#param-{f.name}")
            try:
                value = self.value_of(f, widget)
            except ValueError as exc:
                self._show_error(f.name, str(exc))
                first_bad = first_bad or widget
                continue
            self._show_error(f.name, "")
            if value is not None and value != "":
                out[f.name] = value
            else:
                out.pop(f.name, None)
        if first_bad is not None:
            first_bad.focus()
            return
        self.dismiss(out)

    @staticmethod
    def value_of(f: ParamField, widget: Widget) -> Any:
        """The value of one field for plan(); ValueError with the message to show."""
        if isinstance(widget, Switch):
            return bool(widget.value)
        assert isinstance(widget, Input)
        text = widget.value.strip()
        if not text:
            if f.required and (f.default is None or f.default == ""):
                raise ValueError(f"{f.name} is required" + (f" ({f.help})" if f.help else ""))
            return f.default
        if f.validate is not None:
            return f.validate(text)
        return convert(text, f.default, f.type)

    def _show_error(self, name: str, message: str) -> None:
        err = self.query_one(f"#param-{name}-error", Static)
        err.update(Text(f"✖ {message}") if message else "")
        err.set_class(not message, "-empty")
