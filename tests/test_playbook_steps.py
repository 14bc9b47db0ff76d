"""Every step of every built-in playbook keeps its printed promise: with a finding on that
playbook (its target of the kind the step applies to), the step's key in the screen that
shows it (the playbook screen, opened with enter from the Findings pane; the Findings pane
itself for the next step) opens that step's action, planned for that finding.

The actions here are in-memory stand-ins named like the real ones (no services): this is
the key wiring. The drills in tests/test_operator_loop.py check, on the real sandbox,
that the real plan says what its step says."""

from __future__ import annotations

import pytest

from backends.actions.base import ActionPlan, Change, Guard
from backends.engine.playbooks import BUILTIN
from backends.model import Finding, Severity
from tests.test_screen_snapshots import NOW, StepAction, make_app, settle, until, wd

CASES = [(pb.id, i, step) for pb in BUILTIN for i, step in enumerate(pb.steps()) if step.action and step.key]


class Recorder(StepAction):
    """Plans anything and remembers what it was asked."""

    asked: list[tuple[str, dict]] = []

    async def plan(self, **params) -> ActionPlan:
        Recorder.asked.append((self.id, dict(params)))
        return ActionPlan(action=self.id, title=self.title, target=params.get("service") or self.id,
                          changes=(Change(target="x", description="stand-in", before="a", after="b"),),
                          guard=Guard(True, "stand-in"), danger=self.danger, params=dict(params), created_at=NOW)


def _actions() -> list[StepAction]:
    ids = sorted({s.action for pb in BUILTIN for s in pb.steps() if s.action})
    return [Recorder(a, f"stand-in {a}") for a in ids]


def _finding(pb_id: str, step) -> Finding:
    target = (step.targets[0] + "x") if step.targets else "service:api-gateway"
    pb = next(p for p in BUILTIN if p.id == pb_id)
    return Finding(key=f"test:{pb_id}", severity=pb.severity, source="test", summary=f"a {pb.title} case",
                   playbook=pb_id, target=target, since=wd.ago(60))


def test_the_table_covers_every_step_with_a_key():
    assert len(CASES) >= 30
    assert {pb for pb, _i, _s in CASES} == {pb.id for pb in BUILTIN if any(s.key for s in pb.steps())}


@pytest.mark.parametrize(("pb_id", "index", "step"), CASES, ids=[f"{p}-{i}-{s.key}" for p, i, s in CASES])
async def test_each_steps_key_opens_its_action(tmp_path, pb_id, index, step):
    from tui.screens.action import ActionScreen
    from tui.screens.escalate import EscalateScreen
    from tui.screens.incident import IncidentScreen
    from tui.screens.playbook import PlaybookScreen

    finding = _finding(pb_id, step)
    snap = wd.snap([wd.status("test", "http")], {}, (finding,))
    Recorder.asked = []
    app = make_app(tmp_path, actions=_actions(), snapshot=snap)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        pane = app.dashboard.pane("findings")
        await until(pilot, lambda: pane.cursor_key() == finding.key, what="the finding selected")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, PlaybookScreen), what="the playbook screen")
        screen = app.screen
        await until(pilot, lambda: step in screen.rows, what="the step listed")
        assert step.key in [r.key for r in screen.rows]
        await pilot.press(step.key)
        opened = (EscalateScreen, IncidentScreen) if step.action in ("escalate",) or \
            step.action.startswith("incident.") else (ActionScreen,)
        await until(pilot, lambda: isinstance(app.screen, opened), what=f"[{step.key}] {step.text} -> {step.action}")
        if isinstance(app.screen, ActionScreen):
            assert app.screen.plan.action == step.action
            asked = dict(Recorder.asked[-1][1])
            for name, value in step.action_params().items():  # the step's own params reach the plan
                assert asked.get(name) == value, (name, asked)
            if finding.target.startswith("service:") and step.action.split(".")[0] in ("service", "docker",
                                                                                       "process"):
                assert asked.get("service") == finding.target.split(":", 1)[1], asked  # the finding's service
        assert app.is_running and not app.failures, app.failures


async def test_the_next_steps_key_in_the_findings_pane_opens_it(tmp_path):
    """The pane's own promise: the key printed before the next step runs it there."""
    from tui.screens.action import ActionScreen

    finding = Finding(key="test:pool", severity=Severity.P1, source="test", summary="pool at 96 %",
                      playbook="db-pool-exhausted", target="postgres:main", since=wd.ago(60))
    Recorder.asked = []
    app = make_app(tmp_path, actions=_actions(), snapshot=wd.snap([wd.status("test", "http")], {}, (finding,)))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        pane = app.dashboard.pane("findings")
        await until(pilot, lambda: pane.next_step_text(finding.key).startswith("[k] "), what="the step line")
        await pilot.press("k")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="the plan")
        assert app.screen.plan.action == "postgres.terminate" and Recorder.asked[-1][1].get("all") is True
