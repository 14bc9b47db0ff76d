"""Console gaps closed (readme_new_sections.md "Gaps found"): the keystore password asked
on the console when a chain signs (real anvil + Escrow), `--theme` aliases and a bad theme
without a traceback, 8 pane keys, configured playbooks in the findings pane's hints,
`[[actions]] key` bound (form, modal, a real command), unpin from the palette, and a
cancelled action modal's dry-run audit entry."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from tui import cli


async def until(pilot, cond, limit: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def console_app(config, **kw):
    """The app as `warroom` builds it: the engine from `cli.console_engine_factory`, built in
    a thread after the first frame, asking for passwords on this app."""
    from tui.app import WarroomApp

    app = None
    factory = cli.console_engine_factory(config, read_only=False, get_app=lambda: app)
    app = WarroomApp(None, config=config, engine_factory=factory, **kw)
    return app


def help_text(screen) -> str:
    """What the help screen shows, as text."""
    from rich.console import Console

    console = Console(width=120, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    for group in screen.query(".help-group"):
        console.print(group.content)
    console.file.close()
    return console.export_text()


def audit_entries(config) -> list[dict]:
    """The audit records (write-ahead intents left out: what was done, as `audit tail` shows)."""
    path = Path(config.audit_path)
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e.get("phase") != "intent"]


# --------------------------------------------------------------------------- keystore password


def _keystore_config(anvil, escrow, tmp_path, keystore: Path):
    from backends.config import load_config_text
    from tests.harness.evm import ARTIFACT

    text = f"""
[warroom]
operator = "alice"
state_dir = "{tmp_path / 'state'}"

[chain.local]
chain_id = 31337
endpoints = ["{anvil.url}"]
max_head_age = "1d"
keystore = "{keystore}"

[[chain.local.contracts]]
name = "escrow"
address = "{escrow.address}"
abi = "{ARTIFACT}"
pausable = true
"""
    return load_config_text(text, env={})


async def _pause_from_the_console(pilot, app):
    """Chain pane, P, reason and the typed contract name: the modal starts executing."""
    from tui.screens.action import ActionScreen

    await until(pilot, lambda: app.engine is not None and app.dashboard.pane("chain").is_mounted,
                what="engine attached")
    pane = app.dashboard.pane("chain")
    await until(pilot, lambda: pane._chain_name() == "local" and pane._contract("local") is not None,
                what="chain row with the escrow")
    app.dashboard.show_pane("chain")
    await pilot.pause()
    await pilot.press("P")
    await until(pilot, lambda: isinstance(app.screen, ActionScreen),
                what=f"the pause modal (notices {[n.message for n in app._notifications]})")
    modal = app.screen
    assert modal.plan.action == "chain.pause" and "keystore" in modal.plan.preview
    modal.query_one("#action-reason").focus()
    await pilot.press(*"exploit drill", "enter")
    await pilot.press(*"escrow", "enter")
    return modal


@pytest.mark.evm
async def test_keystore_password_is_asked_on_the_console_and_pauses(anvil, escrow, tmp_path):
    from eth_account import Account

    from tui.screens.password import PasswordScreen

    ks = tmp_path / "owner.json"
    ks.write_text(json.dumps(Account.encrypt(escrow.owner_key, "pw", kdf="pbkdf2", iterations=1000)))
    config = _keystore_config(anvil, escrow, tmp_path, ks)
    app = console_app(config)
    async with app.run_test(size=(160, 48)) as pilot:
        # a wrong password: refused at signing, nothing sent
        modal = await _pause_from_the_console(pilot, app)
        await until(pilot, lambda: isinstance(app.screen, PasswordScreen), what="password screen")
        ask = app.screen
        assert str(ks) in str(ask.query_one("#password-keystore").render())
        field = ask.query_one("#password-input")
        assert field.password is True and app.focused is field
        await pilot.press(*"wrong", "enter")
        await until(pilot, lambda: modal.state == "done", what="refusal")
        status = str(modal.query_one("#action-status").render())
        assert "REFUSED" in status and "wrong keystore password" in status
        assert escrow.paused() is False
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, what="modal closed")

        # escape on the password screen: refused, "no password given"
        modal = await _pause_from_the_console(pilot, app)
        await until(pilot, lambda: isinstance(app.screen, PasswordScreen), what="password screen")
        await pilot.press("escape")
        await until(pilot, lambda: modal.state == "done", what="refusal")
        assert "no password given" in str(modal.query_one("#action-status").render())
        assert escrow.paused() is False
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, what="modal closed")

        # the right password: paused on chain
        modal = await _pause_from_the_console(pilot, app)
        await until(pilot, lambda: isinstance(app.screen, PasswordScreen), what="password screen")
        field = app.screen.query_one("#password-input")
        await pilot.press(*"pw", "enter")
        await until(pilot, lambda: modal.state == "done", limit=60, what="executed")
        assert "OK" in str(modal.query_one("#action-status").render()), modal.query_one("#action-status").render()
        assert escrow.paused() is True
        assert field.value == ""  # not kept in the widget
    entries = [e for e in audit_entries(config) if e["action"] == "chain.pause"]
    assert [e["result"] for e in entries] == ["refused", "refused", "ok"]
    assert "wrong keystore password" in entries[0]["summary"]
    assert "no password given" in entries[1]["summary"]
    text = json.dumps(audit_entries(config))
    assert '"pw"' not in text and "wrong" not in text.replace("wrong keystore password", "")
    escrow.unpause()


# --------------------------------------------------------------------------- --theme


@pytest.mark.parametrize(("given", "canonical"), [("hc", "high-contrast"), ("CB", "colorblind"),
                                                  ("colourblind", "colorblind"), ("default", "dark"),
                                                  ("light", "light")])
def test_theme_option_takes_the_aliases_config_takes(given, canonical):
    from backends.config import THEME_ALIASES, THEMES

    parser, _ = cli.build_parser()
    assert parser.parse_args(["--theme", given]).theme == canonical
    for alias, name in THEME_ALIASES.items():  # every alias the config takes
        assert parser.parse_args(["--theme", alias]).theme == name
    assert {parser.parse_args(["--theme", n]).theme for n in THEMES} == set(THEMES)


def test_bad_theme_option_is_a_usage_error_with_a_hint(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--theme", "colorblnd"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'colorblnd'" in err and "did you mean 'colorblind'" in err
    assert "Traceback" not in err


def test_bad_theme_reaching_the_app_exits_2_without_traceback(monkeypatch, capsys, tmp_path):
    """A theme the config check let through (or a config given as a table) is said plainly."""
    from types import SimpleNamespace

    config = SimpleNamespace(warroom=SimpleNamespace(theme="neon", read_only=False, operator="alice",
                                                     name="w", environment=""))
    monkeypatch.setattr(cli, "load_config", lambda path: config)
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert "unknown theme 'neon'" in err and "Traceback" not in err


# --------------------------------------------------------------------------- pane keys


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path, body: str = ""):
    from backends.config import load_config_text

    text = f"""
[warroom]
operator = "alice"
state_dir = "{tmp_path / 'state'}"
{body}
"""
    return load_config_text(text, env={}, base_dir=tmp_path, path=tmp_path / "warroom.toml")


async def test_one_digit_key_per_pane_and_help_says_so(tmp_path):
    from tui.bindings import DASHBOARD_BINDINGS, PANE_COUNT
    from tui.screens.dashboard import PANE_IDS
    from tui.screens.help import HelpScreen, help_groups

    assert PANE_COUNT == len(PANE_IDS) == 8
    digits = sorted(b.key for b in DASHBOARD_BINDINGS if (b.id or "").startswith("pane_"))
    assert digits == [str(n) for n in range(1, 9)]
    app = console_app(_config(tmp_path))
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.engine is not None, what="engine")
        await pilot.press("8")
        await until(pilot, lambda: app.dashboard.current == PANE_IDS[7], what="pane 8")
        await pilot.press("9")  # no ninth pane: nothing happens
        await pilot.pause()
        assert app.dashboard.current == PANE_IDS[7] and app.screen is app.dashboard
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        dash = dict(help_groups(app))["Dashboard"]
        assert ("1-8", "Go to pane 1-8", "pane_N") in dash
        assert "pane_9" not in app.dashboard.binding_ids()
        text = help_text(app.screen)
        assert "1-8" in text and "1-9" not in text


# --------------------------------------------------------------------------- configured playbooks


async def test_findings_hint_follows_a_configured_playbook(tmp_path):
    port = _free_port()  # nothing listens: the health check fails, playbook api-down
    config = _config(tmp_path, f"""
[[services]]
name = "api"
kind = "http"
health_url = "http://127.0.0.1:{port}/health"

[[playbooks]]
id = "api-down"
title = "API down (our procedure)"
severity = "P1"
symptoms = ["health check refused"]
diagnosis = [{{ text = "Call the hosting vendor (runbook 12)", check = "services" }}]
""")
    app = console_app(config)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.engine is not None, what="engine")
        pane = app.dashboard.pane("findings")
        await until(pilot, lambda: app.snapshot is not None and any(
            f.playbook == "api-down" for f in app.snapshot.findings), what="the api-down finding")
        finding = next(f for f in app.snapshot.findings if f.playbook == "api-down")
        step, _key = pane.hint(finding)
        assert step.text == "Call the hosting vendor (runbook 12)"
        app.dashboard.show_pane("findings")
        await until(pilot, lambda: "Call the hosting vendor" in " ".join(
            str(c) for r in range(pane.table.row_count) for c in pane.table.get_row_at(r)),
            what="the configured step in the findings pane")
        # enter opens the same (configured) playbook
        app.open_playbook(finding)
        await pilot.pause()
        assert app.screen.book.get("api-down").title == "API down (our procedure)"


# --------------------------------------------------------------------------- [[actions]] key


BACKUP_SCRIPT = """\
import sys
from pathlib import Path

Path(sys.argv[1]).write_text(f"backup by {sys.argv[2]}\\n")
"""


async def test_custom_action_key_opens_the_form_then_the_modal_and_runs_the_command(tmp_path):
    from tui.commands import WarroomCommands
    from tui.screens.action import ActionScreen
    from tui.screens.help import help_groups
    from tui.screens.params import ParamsScreen

    script = tmp_path / "backup.py"
    script.write_text(BACKUP_SCRIPT)
    target = tmp_path / "out" / "dump.txt"
    target.parent.mkdir()
    port = _free_port()
    config = _config(tmp_path, f"""
[[services]]
name = "api"
kind = "http"
health_url = "http://127.0.0.1:{port}/health"

[[actions]]
name = "backup"
description = "Back up to FILE"
argv = ["{sys.executable}", "{script}", "{{file}}", "{{operator}}"]
params = {{ file = "path" }}
key = "B"

[[actions]]
name = "clash"
argv = ["/bin/true"]
key = "h"
""")
    app = console_app(config)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.engine is not None and app.custom_bindings, what="keys bound")
        # bound: footer, help, palette; "h" (history) is taken everywhere: not bound, warned
        assert [b.id for b in app.custom_bindings] == ["command_backup"]
        notes = " ".join(str(n.message) for n in app._notifications)
        assert "clash: key h is already History (history) (not bound)" in notes
        assert "backup: key B is Reset all breakers (reset_all_breakers) in the Breakers pane" in notes
        footer = {b.binding.id: key for key, b in app.screen.active_bindings.items()}
        assert footer.get("command_backup") == "B"
        assert ("B", "backup", "command_backup") in dict(help_groups(app))["Custom actions"]
        palette = {t: h for t, h, _c in WarroomCommands(app.screen)._commands()}
        assert "command.backup, key B" in palette["Action: Back up to FILE"]
        # the findings pane is focused on the api's finding: its context (service) is not a
        # field of backup, so it is not passed (no "unknown parameter" refusal)
        findings = app.dashboard.pane("findings")
        await until(pilot, lambda: findings.row_keys(), what="the api finding")
        app.dashboard.show_pane("findings")
        findings.table.focus()
        await pilot.pause()
        assert app._pane_context("command.backup") == {"service": "api"}
        await pilot.press("B")
        await until(pilot, lambda: isinstance(app.screen, ParamsScreen), what="the form")
        form = app.screen
        assert [f.name for f in form.fields] == ["file"]
        assert "unknown parameter" not in form.problem and "file" in form.problem
        form.query_one("#param-file").value = str(target)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="the modal")
        modal = app.screen
        assert modal.plan.action == "command.backup" and str(target) in modal.plan.params["argv"]
        await pilot.press("enter")
        await until(pilot, lambda: modal.state == "done", what="executed")
        assert "OK" in str(modal.query_one("#action-status").render())
        await pilot.press("enter")
    assert target.read_text() == "backup by alice\n"
    assert [e["result"] for e in audit_entries(config) if e["action"] == "command.backup"] == ["ok"]


async def test_custom_action_key_is_not_offered_read_only(tmp_path):
    from tui.app import WarroomApp
    from tui.screens.help import help_groups

    config = _config(tmp_path, """
[[actions]]
name = "backup"
argv = ["/bin/true"]
key = "B"
""")
    factory = cli.console_engine_factory(config, read_only=True, get_app=lambda: None)
    app = WarroomApp(None, config=config, read_only=True, engine_factory=factory)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.engine is not None and app.custom_bindings, what="keys bound")
        assert app.check_action("custom_action", ("command.backup",)) is False
        assert "Custom actions" not in dict(help_groups(app))
        footer = {b.binding.id for b in app.screen.active_bindings.values() if b.enabled}
        assert "command_backup" not in footer
        await pilot.press("B")
        await pilot.pause()
        assert app.screen is app.dashboard


# --------------------------------------------------------------------------- unpin, cancelled modal


async def _palette(pilot, app, query: str) -> list[str]:
    from textual.command import CommandList, CommandPalette

    await pilot.press("ctrl+p")
    await until(pilot, lambda: isinstance(app.screen, CommandPalette), what="palette")
    await pilot.press(*query)
    clist = app.screen.query_one(CommandList)
    await until(pilot, lambda: clist.option_count > 0, what=f"palette hits for {query!r}")
    return [str(clist.get_option_at_index(i).prompt) for i in range(clist.option_count)]


@pytest.mark.evm
async def test_unpin_from_the_palette_and_a_cancelled_modal_is_a_dry_run_entry(anvil, tmp_path):
    from tui.screens.action import ActionScreen

    config = _config(tmp_path, f"""
[chain.local]
chain_id = 31337
endpoints = ["{anvil.url}", "http://127.0.0.1:{_free_port()}"]
max_head_age = "1d"
""")
    app = console_app(config)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.engine is not None, what="engine")
        pin = app.engine.actions.get("chain.pin")
        es = pin._set("local")
        # pin from the palette, cancel once (a dry-run entry), then run it
        for run in (False, True):
            prompts = await _palette(pilot, app, "Pin the active")
            assert any("Pin the active RPC endpoint" in p for p in prompts), prompts
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="pin modal")
            modal = app.screen
            await pilot.press("enter" if run else "escape")
            if run:
                await until(pilot, lambda m=modal: m.state == "done", what="pinned")
                await pilot.press("enter")
            await until(pilot, lambda: app.screen is app.dashboard, what="modal closed")
        assert es.pinned is True
        prompts = await _palette(pilot, app, "Unpin")
        assert prompts[0].startswith("Action: Unpin RPC endpoint (automatic failover)"), prompts
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="unpin modal")
        modal = app.screen
        assert modal.plan.params == {"chain": "local", "unpin": True}
        await pilot.press("enter")
        await until(pilot, lambda: modal.state == "done", what="unpinned")
        assert es.pinned is False
    entries = [e for e in audit_entries(config) if e["action"] == "chain.pin"]
    assert [(e["result"], e["dry_run"]) for e in entries] == [("cancelled", True), ("ok", False), ("ok", False)]
    assert entries[0]["summary"] == "cancelled in the console: 1 change(s) not applied"
    assert entries[0]["target"] == "chain:local" and entries[0]["operator"] == "alice"


async def test_a_refused_attempt_then_escape_writes_no_second_entry(tmp_path):
    from tui.screens.action import ActionScreen

    config = _config(tmp_path, """
[[actions]]
name = "flush"
argv = ["/bin/true"]
danger = "typed"
key = "X"
""")
    app = console_app(config)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.engine is not None and app.custom_bindings, what="keys bound")
        await pilot.press("X")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="modal")
        modal = app.screen
        await pilot.press(*"nope", "enter")
        await until(pilot, lambda: "REFUSED" in str(modal.query_one("#action-status").render()),
                    what="refused")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, what="closed")
    assert [(e["action"], e["result"], e["dry_run"]) for e in audit_entries(config)] == [
        ("command.flush", "refused", False)]


async def test_log_buffer_setting_reaches_the_logs_pane(tmp_path, monkeypatch):
    """[warroom] log_buffer bounds the Logs pane too (it is built before the engine exists)."""
    from backends.config import load_config_text
    from tui.app import WarroomApp
    from tui.cli import console_engine_factory

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    config = load_config_text(f'[warroom]\nstate_dir = "{tmp_path / "st"}"\nlog_buffer = 500\n',
                              env={}, base_dir=tmp_path)
    app = WarroomApp(None, config=config,
                     engine_factory=console_engine_factory(config, read_only=False, get_app=lambda: app))
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.engine is not None, what="engine")
        await until(pilot, lambda: app.dashboard.pane("logs").max_lines == 500, what="buffer")


async def test_logs_search_from_the_console(tmp_path, monkeypatch):
    """`s` on the Logs pane asks for a regex; enter jumps to the first match, `]` to the next;
    a bad regex is refused and the bar stays open."""
    from backends.engine.core import build_engine
    from backends.model import Level, LogLine
    from tui.app import WarroomApp

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    app = WarroomApp(build_engine(None, operator="alice", with_logs=False))
    async with app.run_test(size=(160, 48)) as pilot:
        lines = [LogLine(source="api", text=f"line {i}" + (" boom" if i in (5, 9) else ""), level=Level.INFO, seq=i)
                 for i in range(12)]
        app.dashboard.add_log_lines(lines)
        logs = app.dashboard.pane("logs")
        await until(pilot, lambda: len(logs.rows) == 12, what="lines shown")
        logs.focus()
        await pilot.press("s")
        bar = app.dashboard.query_one("#filter-bar")
        await until(pilot, lambda: bar.display and app.focused is bar, what="search bar")
        await pilot.press(*"boom[", "enter")  # not a valid regex
        await pilot.pause()
        assert bar.display and any("invalid regex" in n.message for n in app._notifications)
        bar.value = ""
        await pilot.press(*"b..m", "enter")
        await until(pilot, lambda: not bar.display, what="bar closed")
        assert logs.rows[logs.cursor].text == "line 5 boom"
        logs.focus()
        await pilot.press("right_square_bracket")
        assert logs.rows[logs.cursor].text == "line 9 boom"
        assert len(logs.rows) == 12  # a search, not a filter


def test_a_detail_offers_only_the_actions_that_act_on_its_kind():
    """A breaker's detail lists breaker actions, not "Pause contract" or "Terminate Postgres
    backend(s)" (the newcomer saw every configured action under every item)."""
    from types import SimpleNamespace

    from backends.model import BreakerReading, QueueReading, utcnow
    from tui.screens.detail import DetailScreen

    acts = [SimpleNamespace(id=i, title=t) for i, t in (
        ("breaker.reset", "Reset one breaker"), ("breaker.reset_all", "Reset all open breakers"),
        ("chain.pause", "Pause contract"), ("postgres.terminate", "Terminate Postgres backend(s)"),
        ("queue.requeue_dead", "Requeue dead letters"), ("command.scale-workers", "Scale the workers"))]
    engine = SimpleNamespace(actions=SimpleNamespace(available=lambda: acts, history=[]))
    breaker = BreakerReading(source="breakers", at=utcnow(), name="trigger-1", state="open")
    text = DetailScreen(breaker, engine)._actions_text("trigger-1").plain
    assert "Reset one breaker" in text and "Reset all open breakers" in text
    assert "Pause contract" not in text and "Terminate Postgres" not in text and "Requeue" not in text
    queue = QueueReading(source="queues", at=utcnow(), name="action_jobs", key="action_jobs", depth=3)
    text = DetailScreen(queue, engine)._actions_text("action_jobs").plain
    assert "Requeue dead letters" in text and "Scale the workers" in text and "Reset one" not in text


async def test_a_plans_preview_keeps_its_lines(tmp_path):
    """A preview is several lines (what, where, which orders): the dialog shows them as lines,
    never as one line with escaped newlines (\\x0a); other control characters stay escaped."""
    from tui.screens.action import ActionScreen

    config = _config(tmp_path, """
[[actions]]
name = "two-lines"
argv = ["/bin/true"]
key = "X"
""")
    app = console_app(config)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.engine is not None and app.custom_bindings, what="keys bound")
        await pilot.press("X")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="modal")
        shown = str(app.screen.query_one("#action-preview").render())
        assert "\\x0a" not in shown and "\n" in shown, shown
        assert "$ /bin/true" in shown
