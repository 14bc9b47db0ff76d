"""Incidents through the screens: declare from a finding, open it from another pane, resolve
it (this crashed the console: a method of the incident screen was named like a bool Textual
keeps, so the dismiss callback was `False`), then the postmortem of the resolved incident;
`i` on a finding that has an open incident opens it, never declares a second one."""

from __future__ import annotations

import pytest

from tests.test_console_gaps import _config, _free_port, console_app, until


def _check_config(tmp_path):
    port = _free_port()  # nothing listens: the check fails, a finding appears
    return _config(tmp_path, f"""
[[checks]]
name = "api"
kind = "http"
url = "http://127.0.0.1:{port}/health"
interval = "1s"
timeout = "1s"
""")


@pytest.mark.parametrize("size", [(160, 48), (80, 24)])
async def test_declare_resolve_and_postmortem_from_the_screens(tmp_path, size):
    from tui.screens.incident import IncidentScreen

    app = console_app(_check_config(tmp_path))
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.engine is not None and app.snapshot is not None
                    and app.snapshot.findings, what="a finding")
        await pilot.press("2")
        pane = app.dashboard.pane("findings")
        await until(pilot, lambda: pane.cursor_key() is not None, what="finding selected")
        finding_key = pane.cursor_key()
        await pilot.press("i")  # declare from the finding: its plan, enter
        from tui.screens.action import ActionScreen

        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="declare plan")
        modal = app.screen
        await pilot.press("enter")
        await until(pilot, lambda: modal.state == "done", what="declared")
        manager = app.engine.incidents
        inc = manager.current()
        assert inc is not None and (inc.finding or {}).get("key") == finding_key
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is app.dashboard, what="back on the dashboard")
        # `i` on the same finding opens the open incident: no second one
        await pilot.press("2")
        await until(pilot, lambda: pane.cursor_key() == finding_key, what="same finding")
        await pilot.press("i")
        await until(pilot, lambda: isinstance(app.screen, IncidentScreen), what="incident screen again")
        assert app.screen.incident is not None and app.screen.incident.id == inc.id
        assert not app.screen.declaring
        assert len(manager.open_incidents()) == 1
        # from another pane too, then resolve: x, summary, enter (plan), enter (confirm), escape
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, what="dashboard")
        await pilot.press("7")
        await pilot.press("i")
        await until(pilot, lambda: isinstance(app.screen, IncidentScreen), what="incident from pane 7")
        screen = app.screen
        await pilot.press("x")
        await pilot.press(*"restarted the api")
        await pilot.press("enter")

        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="resolve plan")
        modal = app.screen
        await pilot.press("enter")
        await until(pilot, lambda: modal.state == "done", what="resolved")
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is screen, what="back on the incident")
        assert not manager.get(inc.id).open
        assert app.is_running and not app.failures, app.failures
        # the postmortem of the resolved incident
        await pilot.press("p")
        path = manager.postmortem_dir / f"{inc.id}-postmortem.md"
        await until(pilot, path.exists, what="postmortem written")
        text = path.read_text()
        assert "**Resolved:** -" not in text and "restarted the api" in text
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, what="closed")
        assert app.is_running and not app.failures, app.failures


async def test_a_resort_under_the_dialog_does_not_change_what_is_confirmed(tmp_path):
    """Two findings; the dialog is opened on the second; while it is open the findings
    re-sort (the other one becomes worse and moves up): confirm acts on the row chosen,
    the dialog names it, and afterwards the cursor is on that row again."""
    import dataclasses

    from backends.model import Severity
    from tui.messages import SnapshotArrived
    from tui.screens.action import ActionScreen

    p1, p2 = _free_port(), _free_port()
    config = _config(tmp_path, f"""
[[checks]]
name = "alpha"
kind = "http"
url = "http://127.0.0.1:{p1}/health"
interval = "1s"
timeout = "1s"

[[checks]]
name = "bravo"
kind = "http"
url = "http://127.0.0.1:{p2}/health"
interval = "1s"
timeout = "1s"
""")
    app = console_app(config)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: app.engine is not None and app.dashboard.pane("findings") is not None
                    and len(app.dashboard.pane("findings").row_keys()) >= 2, what="two findings")
        pane = app.dashboard.pane("findings")
        await pilot.press("2")
        await pilot.press("down")
        await until(pilot, lambda: pane.cursor_key() == pane.row_keys()[1], what="second row")
        chosen = pane.cursor_key()
        other = next(k for k in pane.row_keys() if k != chosen)
        await pilot.press("i")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="declare plan")
        modal = app.screen
        assert chosen.split(":")[1] in str(modal.query_one("#action-target").render())  # named in words
        # re-sort under the dialog: the chosen row moves down... and the pane keeps it
        snap = app.snapshot
        worse = [dataclasses.replace(f, severity=Severity.P0) if f.key == other else f for f in snap.findings]
        app.post_message(SnapshotArrived(dataclasses.replace(snap, findings=tuple(worse))))
        await until(pilot, lambda: pane.row_keys()[0] == other, what="re-sorted under the dialog")
        await pilot.press("enter")
        await until(pilot, lambda: modal.state == "done", what="declared")
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is app.dashboard, what="dialog closed")
        inc = app.engine.incidents.current()
        assert (inc.finding or {}).get("key") == chosen
        assert pane.cursor_key() == chosen, "the cursor is on the row the operator left"
        assert app.focused is not None and pane in app.focused.ancestors_with_self


def _shown_bindings(app) -> list[str]:
    """What the footer offers now: the descriptions of the shown, enabled bindings."""
    return sorted({b.description for _key, (_node, b, enabled, _tip) in app.screen.active_bindings.items()
                   if b.show and enabled and b.description})


MUTATING_WORDS = ("Restart", "Stop", "Start", "Fix", "Escalate", "Declare", "Incident", "Reset", "Run",
                  "Terminate", "Pause", "Unpause", "Fail over", "Scale", "Requeue", "Reconcile",
                  "Send", "Retry", "Resolve", "Acknowledge", "Assign", "Note", "Status update")


async def test_the_read_only_console_offers_no_change(tmp_path):
    """Read-only: no footer entry, palette entry, step key or dialog offers a change; `i`
    with no open incident opens nothing (the declare modal used to open)."""
    from textual.command import CommandList, CommandPalette

    from tui.screens.action import ActionScreen

    app = console_app(_check_config(tmp_path), read_only=True)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.engine is not None and app.snapshot is not None
                    and app.snapshot.findings, what="a finding")
        for pane_key in "12345678":
            await pilot.press(pane_key)
            await pilot.pause()
            offered = [d for d in _shown_bindings(app) if any(w in d for w in MUTATING_WORDS)
                       and d not in ("Pause/follow",)]  # pausing the log view changes nothing
            assert not offered, f"pane {pane_key} offers {offered}"
        await pilot.press("2")
        for key in ("i", "e", "n", "r", "f", "b"):
            await pilot.press(key)
            await pilot.pause(0.2)
            assert app.screen is app.dashboard, f"{key} opened {app.screen}"
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), what="palette")
        await pilot.press(*"restart")
        await pilot.pause(0.5)
        clist = app.screen.query_one(CommandList)
        prompts = [str(clist.get_option_at_index(i).prompt) for i in range(clist.option_count)]
        assert not [p for p in prompts if p.startswith("Action:")], prompts
        await pilot.press("escape")
        assert not isinstance(app.screen, ActionScreen)
        assert app.is_running and not app.failures, app.failures
