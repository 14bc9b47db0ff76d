"""The parameters form (tui/screens/params.py): fields an action declares (`param_fields()`)
win over plan()'s signature, each value is checked with the field's validator before the
form closes (the message under the field), booleans are switches; and a real `[[actions]]`
command (params only through **kwargs) goes from the form's values to its execution.

The form tests use stand-in actions (pure widget tests); the last tests run a real program.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from textual.app import App
from textual.widgets import Input, Switch

from backends.actions.base import ActionEngine, ActionPlan, Change, Danger
from backends.actions.command import CommandAction, CommandTemplate, ParamField, validate_value
from backends.engine.audit import AuditLog
from backends.errors import ActionRefused
from tui.screens.params import BoolField, ParamsScreen, fillable


async def until(pilot, cond, limit: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


class KwargsAction:
    """Like a custom command: plan(**params), fields declared by param_fields()."""

    id = "fake.kwargs"
    title = "Kwargs action"

    def param_fields(self):
        return [
            ParamField(name="count", type="int", help="a non-negative integer", required=True,
                       validate=lambda v: validate_value("count", "int", v)),
            ParamField(name="note", type="text", default="none"),
        ]

    async def plan(self, **params: Any) -> ActionPlan:
        raise NotImplementedError


class PinLike:
    """chain.pin's signature: a bool among text fields, and **_."""

    id = "fake.pin"
    title = "Pin"

    async def plan(self, chain: str | None = None, to: str | None = None, reason: str | None = None,
                   unpin: bool = False, **_: Any) -> ActionPlan:
        raise NotImplementedError


class FormApp(App):
    def __init__(self, screen: ParamsScreen) -> None:
        super().__init__()
        self.form = screen
        self.result: Any = "not closed"

    def on_mount(self) -> None:
        def done(value):
            self.result = value

        self.push_screen(self.form, done)


def test_fillable_prefers_declared_fields_over_the_signature():
    fields = fillable(KwargsAction())
    assert [(f.name, f.type, f.default, f.required) for f in fields] == [
        ("count", "int", None, True), ("note", "text", "none", False)]
    assert [name for name, _d, _t in fields] == ["count", "note"]  # still unpacks as before


def test_fillable_keeps_bools_from_the_signature():
    fields = {f.name: f for f in fillable(PinLike())}
    assert list(fields) == ["chain", "to", "unpin"]
    assert fields["unpin"].type == "bool" and fields["unpin"].default is False
    assert fields["chain"].type == "text"


def test_fillable_accepts_plain_declarations():
    class Plain:
        id = "fake.plain"

        def param_fields(self):
            return [("service", "service", None, "a service name"), {"name": "dry", "type": "bool"}]

    fields = fillable(Plain())
    assert [(f.name, f.type, f.help) for f in fields] == [("service", "service", "a service name"),
                                                         ("dry", "bool", "")]


async def test_form_shows_the_validator_error_under_the_field_and_stays_open():
    app = FormApp(ParamsScreen(KwargsAction(), {"service": "from-pane"}, "missing value for {count}"))
    async with app.run_test(size=(100, 30)) as pilot:
        form = app.form
        await until(pilot, lambda: app.screen is form, what="form")
        count = form.query_one("#param-count", Input)
        assert app.focused is count
        assert "a non-negative integer" in count.placeholder
        # empty required field: refused in the form
        await pilot.press("enter", "enter")
        await pilot.pause()
        err = form.query_one("#param-count-error")
        assert "required" in str(err.render()) and err.display
        assert app.focused is count and app.result == "not closed"
        await pilot.press(*"-3", "enter", "enter")
        await pilot.pause()
        assert "must be a non-negative integer" in str(err.render())
        assert app.result == "not closed"
        count.value = ""
        await pilot.pause()
        assert not err.display  # typing clears the message
        await pilot.press(*"8", "enter", "enter")
        await until(pilot, lambda: app.result != "not closed", what="form closed")
    # the validator's value; the default of the untouched field; the pane's context dropped
    assert app.result == {"count": "8", "note": "none"}


async def test_form_bool_field_is_a_switch():
    app = FormApp(ParamsScreen(PinLike(), {"chain": "main"}, "pick"))
    async with app.run_test(size=(100, 30)) as pilot:
        form = app.form
        await until(pilot, lambda: app.screen is form, what="form")
        unpin = form.query_one("#param-unpin", BoolField)
        assert isinstance(unpin, Switch) and unpin.value is False
        assert form.query_one("#param-chain", Input).value == "main"
        await pilot.press("enter", "enter")  # chain -> to -> unpin
        assert app.focused is unpin
        await pilot.press("space")
        await pilot.pause()
        assert unpin.value is True
        await pilot.press("enter")  # enter on the switch: plan (it is the last field)
        await until(pilot, lambda: app.result != "not closed", what="form closed")
    assert app.result == {"chain": "main", "unpin": True}


async def test_form_escape_cancels():
    app = FormApp(ParamsScreen(KwargsAction(), {}, ""))
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.screen is app.form, what="form")
        await pilot.press("escape")
        await until(pilot, lambda: app.result != "not closed", what="closed")
    assert app.result is None


# --------------------------------------------------------------------------- real command


def _writer(tmp_path):
    """A real program that writes its argv (after the script) as JSON to argv.json."""
    script = tmp_path / "record.py"
    script.write_text("import json, sys\n"
                      "open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))\n")
    return script, tmp_path / "argv.json"


def _action(tmp_path, **kw) -> tuple[CommandAction, Any]:
    script, out = _writer(tmp_path)
    tmpl = CommandTemplate("backup-db", [sys.executable, str(script), str(out), "--file", "{file}",
                                         "--count", "{count}", "--by", "{operator}", "--config", "{config}"],
                           params={"file": "path", "count": "int"})
    action = CommandAction(tmpl, action_id="command.backup-db", title="Back up the database",
                           danger=Danger.CONFIRM, **kw)
    return action, out


async def test_command_action_declares_its_placeholders(tmp_path):
    action, _out = _action(tmp_path, operator="alice", config_path=tmp_path / "warroom.toml")
    fields = action.param_fields()
    assert [(f.name, f.type, f.required) for f in fields] == [("file", "path", True), ("count", "int", True)]
    assert fields[1].validate("8") == "8"
    with pytest.raises(ValueError, match="non-negative integer"):
        fields[1].validate("eight")
    # missing values are a refusal (so the console opens the form), never another error
    with pytest.raises(ActionRefused, match=r"missing value for \{file\}"):
        await action.plan()
    with pytest.raises(ActionRefused, match="configuration"):
        await action.plan(file="/tmp/x", count=1, config="/etc/other.toml")
    plan = await action.plan(file="/tmp/x.dump", count=3)
    assert "--by alice --config" in plan.preview and str(tmp_path / "warroom.toml") in plan.preview


async def test_command_action_without_config_path_refuses_config_placeholder(tmp_path):
    action, _out = _action(tmp_path, operator=lambda: "bob")
    with pytest.raises(ActionRefused, match="without a configuration file"):
        await action.plan(file="/tmp/x.dump", count=3)


async def test_real_command_from_the_form_values_to_execution(tmp_path):
    """backup-db-like `[[actions]]`: the plan refuses, the form asks for {file} and {count}
    (validated inline), and the filled values plan and run the real program, with {operator}
    and {config} filled by warroom."""
    config = tmp_path / "warroom.toml"
    action, out = _action(tmp_path, operator="alice", config_path=str(config))
    engine = ActionEngine(AuditLog(tmp_path / "audit.jsonl"), operator="alice")
    engine.register(action)
    with pytest.raises(ActionRefused) as refused:
        await engine.plan("command.backup-db", service="api")  # the Services pane's context
    app = FormApp(ParamsScreen(action, {"service": "api"}, refused.value.reason))
    async with app.run_test(size=(100, 30)) as pilot:
        form = app.form
        await until(pilot, lambda: app.screen is form, what="form")
        assert "unknown parameter" in str(form.query_one("#params-problem").render())
        await pilot.press(*str(tmp_path / "db.dump"), "enter")
        await pilot.press(*"many", "enter")
        await pilot.pause()
        assert "non-negative integer" in str(form.query_one("#param-count-error").render())
        form.query_one("#param-count", Input).value = "4"
        await pilot.press("enter")
        await until(pilot, lambda: app.result != "not closed", what="form closed")
    filled = app.result
    assert filled == {"file": str(tmp_path / "db.dump"), "count": "4"}
    plan = await engine.plan("command.backup-db", **filled)
    assert isinstance(plan.changes[0], Change)
    assert not out.exists()  # planning runs nothing
    result = await engine.execute(plan, confirmation=True)
    assert result.ok, result
    assert json.loads(out.read_text()) == ["--file", str(tmp_path / "db.dump"), "--count", "4",
                                           "--by", "alice", "--config", str(config)]
    entry = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
    assert entry["action"] == "command.backup-db" and entry["result"] == "ok"


async def test_console_runs_a_custom_command_through_the_form(tmp_path, monkeypatch):
    """The whole console path: request_action -> refused plan -> form -> action modal -> run."""
    from backends.engine.core import build_engine
    from tui.app import WarroomApp
    from tui.screens.action import ActionScreen

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    engine = build_engine(None, operator="alice")
    action, out = _action(tmp_path, operator=lambda: engine.actions.operator,
                          config_path=tmp_path / "warroom.toml")
    engine.actions.register(action)
    app = WarroomApp(engine, clock=lambda: datetime(2026, 3, 14, 9, 30, tzinfo=UTC))
    async with app.run_test(size=(160, 48)) as pilot:
        app.request_action("command.backup-db", {})
        await until(pilot, lambda: isinstance(app.screen, ParamsScreen), what="parameters form")
        form = app.screen
        assert [f.name for f in form.fields] == ["file", "count"]
        # the form focuses its first field on mount: wait for it, or it takes the focus back
        await until(pilot, lambda: form.query_one("#param-file", Input).has_focus, what="first field focused")
        form.query_one("#param-file", Input).value = str(tmp_path / "db.dump")
        form.query_one("#param-count", Input).value = "2"
        form.query_one("#param-count", Input).focus()
        await pilot.pause()
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="action modal")
        await pilot.press("enter")  # confirm
        await until(pilot, lambda: app.screen.state == "done", what="done")
    assert json.loads(out.read_text())[-4:] == ["--by", "alice", "--config", str(tmp_path / "warroom.toml")]
