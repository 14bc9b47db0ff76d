"""The operator loop through the screens, on the real sandbox: for each of the nine drills,
inject -> the finding appears in the Findings pane -> using only keys the screen shows
(the pane's number, arrows to the finding, the key printed in front of its next step,
enter in the dialogs, the text a typed confirmation asks for) the playbook's fix is
planned, confirmed and executed -> the finding clears -> `warroom drill --status` says
recovered. Keys are counted from the moment the finding is selected until the last
step's fix has run (its confirming enter; closing the last result dialog is not counted,
closing one between two steps is); the figures are printed (`pytest -s`) and are the
README's drill table.

Also here: the console survives an exception in each path it can come from (screen
callback, action plan, worker, message handler, timer), with the sandbox still up.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import pytest

from tests.test_drills import _status, sandbox  # noqa: F401 - the module's sandbox fixture

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.evm]

ORDER = ["listener-crash", "listener-hang", "api-down", "rpc-outage", "gas-low", "pool-exhaustion",
         "breaker-storm", "queue-flood", "contract-exploit", "stuck-signer"]
ORDER.append("missed-blocks")  # the listener skips a block range; [K] backfills exactly that range
# what an operator types into a form the step opens (the form names the field)
FORM_VALUES = {"queue-flood": {"replicas": "8"}}
FIGURES: dict[str, tuple[float, int, float, str]] = {}


async def until(pilot, cond, limit: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + limit
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:.0f}s waiting for {what}")
        await pilot.pause(0.1)


def console_app(config):
    from tui import cli
    from tui.app import WarroomApp

    app = None
    factory = cli.console_engine_factory(config, read_only=False, get_app=lambda: app)
    app = WarroomApp(None, config=config, engine_factory=factory)
    return app


def _settled(app) -> bool:
    from backends.model import SourceState

    snap = app.snapshot
    return bool(app.engine is not None and snap is not None and snap.sources
                and all(s.state is not SourceState.PENDING for s in snap.sources.values()))


@pytest.fixture(scope="module")
def printed():
    yield
    if FIGURES:
        print("\noperator loop on the sandbox (Findings pane, keys the screen shows):")
        print(f"  {'drill':<17} {'detected':>8} {'keys':>5} {'recovered':>9}  steps")
        for name, (det, keys, rec, steps) in FIGURES.items():
            print(f"  {name:<17} {det:7.1f}s {keys:5d} {rec:8.1f}s  {steps}")


@pytest.mark.parametrize("name", ORDER)
async def test_drill_fixed_from_the_findings_pane_with_the_keys_it_shows(sandbox, printed, name):  # noqa: F811
    from backends.config import load_config
    from sandbox import drills
    from tui.screens.action import ActionScreen
    from tui.screens.params import ParamsScreen

    run_dir = sandbox.run_dir
    drill = drills.get(name)
    config = load_config(sandbox.config_path)
    app = console_app(config)
    observer = drills.DrillObserver(run_dir, config=config)
    injected = False
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: _settled(app), 30, "every source read once")
        app.engine.monitor.subscribe(observer.on_snapshot)
        await until(pilot, lambda: not drill.detect(app.engine.monitor.snapshot), 40, f"{name}: baseline")
        try:
            await asyncio.to_thread(drills.inject, run_dir, name)
            injected = True
            t0 = time.monotonic()
            pane = app.dashboard.pane("findings")
            await until(pilot, lambda: drill.detect(app.snapshot) and any(
                f.key in pane.row_keys() for f in drill.detect(app.snapshot)), 20, f"{name}: finding shown")
            detected = time.monotonic() - t0
            await pilot.press("2")  # the Findings pane (its number is in its title)

            async def select_drill_finding() -> None:
                """Arrows to the drill's finding (the first one with a step), as an operator would:
                other findings may be shown too (a slow health check on a loaded box), and a step
                can take a poll to appear under a new finding."""
                def target() -> str | None:
                    mine = {f.key for f in drill.detect(app.snapshot)}
                    return next((k for k in pane.row_keys() if k in mine and pane.next_step_text(k)), None)

                with contextlib.suppress(AssertionError):
                    await until(pilot, lambda: target() is not None, 15, f"{name}: a step under its finding")
                for _ in range(24):
                    want = target()
                    if want is None or pane.cursor_key() == want:
                        return
                    keys_now = pane.row_keys()
                    here = keys_now.index(pane.cursor_key()) if pane.cursor_key() in keys_now else -1
                    await pilot.press("down" if here < keys_now.index(want) else "up")

            await select_drill_finding()
            keys = fixed_at_keys = 0
            steps: list[str] = []
            for _round in range(4):  # a playbook fix may take more than one step (restart, reconcile)
                if drills.read_records(run_dir)[name].get("recovered_at") or not drill.detect(app.snapshot):
                    break
                if pane.cursor_key() not in {f.key for f in drill.detect(app.snapshot)}:
                    await select_drill_finding()  # selecting is not counted (keys count from the selection)
                key_line = pane.next_step_text(pane.cursor_key()) if pane.cursor_key() in pane.row_keys() else ""
                if not key_line:
                    shown = [k for k in pane.row_keys() if k in {f.key for f in drill.detect(app.snapshot)}
                             and pane.next_step_text(k)]
                    if not shown:
                        break
                    key_line = pane.next_step_text(shown[0])
                w = re.match(r"(?P<wait>[^\[]+?) \((?P<left>[^)]+) left\), or \[", key_line)
                if w:  # a waiting step: the fix before it takes effect by itself (the time left shown)
                    from backends.units import parse_duration

                    steps.append(f"wait ({w['left']})")
                    with contextlib.suppress(AssertionError):
                        await until(pilot, lambda: drills.read_records(run_dir)[name].get("recovered_at"),
                                    parse_duration(w["left"]) + 30, f"{name}: recovery while waiting")
                    continue  # recovered, or the wait is over: the step to act on is shown alone
                m = re.match(r"\[(?P<key>[^\]]+)\] (?P<text>.+)", key_line)
                assert m, f"{name}: the step shows no key: {key_line!r}"
                shown_key, step_text = m["key"], m["text"]
                assert not step_text.lower().startswith(("escalate", "declare")), \
                    f"{name}: not recovered after {steps}; the next step is {step_text!r}"
                steps.append(f"[{shown_key}] {step_text}")
                await pilot.press(shown_key)
                keys += 1
                await until(pilot, lambda: isinstance(app.screen, ActionScreen | ParamsScreen), 15,
                            f"{name}: [{shown_key}] opened no dialog ({step_text})")
                if isinstance(app.screen, ParamsScreen):
                    form = app.screen
                    values = FORM_VALUES.get(name, {})
                    # the form opens filled, its cursor on the field it asks about: type only
                    # what differs (the value is selected: typing replaces it), then enter
                    field = (app.focused.id or "").removeprefix("param-") if app.focused else ""
                    if field in values:
                        await pilot.press(*values[field])
                        keys += 1  # typing a value: one step
                    while app.screen is form:
                        await pilot.press("enter")
                        keys += 1
                        await pilot.pause(0.1)
                    await until(pilot, lambda: isinstance(app.screen, ActionScreen), 15,
                                f"{name}: plan after form (said: {_notes(app)})")
                modal = app.screen
                assert isinstance(modal, ActionScreen)
                plan = modal.plan
                for word in _words(step_text):  # the plan says what the step says
                    assert word in (plan.title + " " + plan.target).lower(), (step_text, plan.title, plan.target)
                if not plan.guard.ok:  # e.g. the long queries not old enough yet: look again when it says
                    shown_guard = str(modal.query_one("#action-guard").render())
                    assert plan.guard.description in shown_guard, shown_guard  # the dialog says why
                    togo = re.search(r"(\d+(?:\.\d+)?)s to go", shown_guard)
                    await pilot.press("escape")
                    keys += 1
                    await until(pilot, lambda: app.screen is app.dashboard, 5, "dialog closed")
                    ready_at = time.monotonic() + (float(togo[1]) if togo else 1.0)
                    await until(pilot, lambda t=ready_at: time.monotonic() >= t, 30, "the time the dialog said")
                    continue
                if plan.reason_required:
                    if not modal.query_one("#action-reason").value.strip():
                        await pilot.press(*f"drill {name}")
                        keys += 1  # typing the reason: one step (it opens with the finding's words)
                    if plan.danger.value == "typed":
                        await pilot.press("enter")  # on to the confirmation field
                        keys += 1
                if plan.expected_confirmation and plan.danger.value == "typed":
                    await pilot.press(*str(plan.expected_confirmation))
                    keys += 1  # typing the count / target: one step
                await pilot.press("enter")
                keys += 1
                await until(pilot, lambda m=modal: m.state == "done", 60,
                            f"{name}: {plan.title} executed (status: {_status_text(modal)})")
                assert modal.result.ok, (name, modal.result.summary)
                fixed_at_keys = keys  # the fix has run: closing its result is not part of it
                await pilot.press("enter")
                keys += 1
                await until(pilot, lambda: app.screen is app.dashboard, 5, "dialog closed")
                with contextlib.suppress(AssertionError):  # the fix takes a few polls to show
                    await until(pilot, lambda: drills.read_records(run_dir)[name].get("recovered_at"), 20,
                                f"{name}: recovery after {step_text}")
            rec = await until(pilot, lambda: drills.read_records(run_dir)[name].get("recovered_at")
                              and drills.read_records(run_dir)[name], 90, f"{name}: recovery")
            recovered = rec["recovered_at"] - rec["injected_at"]
            # the finding clears (the exploit's log-pattern finding when its 60 s window has passed)
            await until(pilot, lambda: not drill.detect(app.snapshot), 75 if name == "contract-exploit" else 15,
                        f"{name}: finding cleared")
            keys = fixed_at_keys
            assert keys <= 4, f"{name}: {keys} keys from the selected finding to the fix ({steps})"
            FIGURES[name] = (detected, keys, recovered, " -> ".join(steps))
            assert app.is_running and not app.failures, app.failures
        finally:
            if injected:
                await asyncio.to_thread(drills.undo, run_dir, name)
    rc, out = await asyncio.to_thread(_status, name)
    assert rc == 0 and "RECOVERED after" in out, out


def _status_text(modal) -> str:
    try:
        return str(modal.query_one("#action-status").render())
    except Exception:
        return "?"


def _notes(app) -> str:
    return " | ".join(str(n.message) for n in app._notifications) or "nothing"


def _words(step_text: str) -> list[str]:
    """The words of a step that its plan must say too (the verb and the threshold)."""
    text = step_text.lower()
    out = []
    for verb in ("restart", "terminate", "reset", "scale", "pause", "refill", "fail over", "reconcile"):
        if verb in text:
            out.append({"fail over": "fail", "refill": "refill", "reconcile": "reconcile"}.get(verb, verb))
    m = re.search(r"> (\d+\s?(?:ms|s|m|h|min))", text)
    if m:
        out.append("> " + m.group(1).replace(" ", ""))
    return out


# --------------------------------------------------------------------------- the crash guard


async def test_an_exception_in_any_path_is_reported_and_the_console_goes_on(sandbox):  # noqa: F811
    from textual.screen import ModalScreen

    from backends.config import load_config
    from backends.model import Snapshot
    from tui.messages import SnapshotArrived

    config = load_config(sandbox.config_path)
    app = console_app(config)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: _settled(app), 30, "every source read once")

        def boom(where):
            raise RuntimeError(f"injected failure in {where}")

        # a screen's dismiss callback
        modal = ModalScreen()
        await app.push_screen(modal, lambda _r: boom("a screen callback"))
        await pilot.pause(0.1)
        modal.dismiss(None)
        await until(pilot, lambda: app.screen is app.dashboard, 5, "the modal closed")
        # a worker
        app.run_worker(_raiser("a worker"))
        # a timer callback
        app.set_timer(0.01, lambda: boom("a timer"))
        # a message handler: the dashboard's apply raises once
        original = app.dashboard.apply
        calls = {"n": 0}

        def apply_once(snapshot):
            calls["n"] += 1
            if calls["n"] == 1:
                boom("a message handler")
            return original(snapshot)

        app.dashboard.apply = apply_once
        app.post_message(SnapshotArrived(app.snapshot or Snapshot()))
        # an action's plan
        actions = app.engine.actions
        restart = actions.get("service.restart")
        original_plan = restart.plan

        async def bad_plan(**_kw):
            boom("an action plan")

        restart.plan = bad_plan
        app.request_action("service.restart", {"service": "api-gateway"})
        wheres = ("a screen callback", "a worker", "a timer", "a message handler", "an action plan")

        def reported() -> bool:
            whats = " | ".join(what for _, what in app.failures)
            return all(f"injected failure in {w}" in whats for w in wheres)

        await until(pilot, reported, 10, "failures reported")
        restart.plan = original_plan
        assert app.is_running
        # the console still answers keys and still updates
        await pilot.press("?")
        await until(pilot, lambda: type(app.screen).__name__ == "HelpScreen", 5, "help after the failures")
        await pilot.press("escape")
        before = app.snapshot.at
        await until(pilot, lambda: app.snapshot is not None and app.snapshot.at > before, 10, "a new snapshot")
        entries = [e for e in app.engine.audit.tail(200) if e.get("action") == "console.error"]
        assert entries and all(e["result"] == "error" for e in entries)
        assert any("nothing was changed" in e["summary"] for e in entries)
    # the sandbox is still up: its API answers
    import urllib.request

    def health() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{sandbox.ports['api']}/api/v1/health", timeout=5) as r:
            return r.status

    assert await asyncio.to_thread(health) == 200


async def _raiser(where):
    await asyncio.sleep(0)
    raise RuntimeError(f"injected failure in {where}")
