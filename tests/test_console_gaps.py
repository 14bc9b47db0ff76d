"""Console gaps closed (readme_new_sections.md "Gaps found"): the keystore password asked
on the console when a chain signs (real anvil + Escrow), `--theme` aliases and a bad theme
without a traceback, 8 pane keys, configured playbooks in the findings pane's hints,
`[[actions]] key` bound (form, modal, a real command), unpin from the palette, and a
cancelled action modal's dry-run audit entry."""

from __future__ import annotations

import json
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
    path = Path(config.audit_path)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


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
