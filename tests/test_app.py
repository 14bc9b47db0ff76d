"""The console shell, driven with Pilot against a real Monitor, ActionEngine and AuditLog.

The engine stand-in is built from the real classes (FunctionSources, one of which
fails); snapshot tests use a fixed snapshot and a frozen clock.
"""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from backends.actions.base import (
    Action,
    ActionEngine,
    ActionPlan,
    ActionResult,
    Change,
    Danger,
    Guard,
    Progress,
)
from backends.engine.audit import AuditLog
from backends.engine.monitor import FunctionSource, Monitor
from backends.errors import ActionRefused, BackendError
from backends.model import (
    Finding,
    ServiceReading,
    Severity,
    Snapshot,
    SourceState,
    SourceStatus,
    Status,
)
from tests.engines import engine_of
from tui.app import WarroomApp
from tui.screens.action import ActionScreen
from tui.screens.dashboard import PANE_IDS, PaneSlot
from tui.screens.help import HelpScreen, help_groups
from tui.screens.history import HistoryScreen

FROZEN = datetime(2026, 11, 22, 8, 15, 0, tzinfo=UTC)

try:  # the panes' message (widgets contract); same name, so the same handler
    from widgets.messages import ActionRequested
except ImportError:
    from textual.message import Message

    class ActionRequested(Message):
        def __init__(self, action_id: str, params: dict) -> None:
            super().__init__()
            self.action_id = action_id
            self.params = params


class SetValue(Action):
    """A tiny mutating action on a dict: sets store[key] if it still holds the planned value."""

    mutating = True

    def __init__(self, store: dict, action_id: str = "service.restart", danger: Danger = Danger.CONFIRM,
                 reason_required: bool = False):
        self.id = action_id
        self.title = f"Test {action_id}"
        self.store = store
        self.danger = danger
        self.reason_required = reason_required
        self.executed = 0

    async def plan(self, *, service: str = "api-gateway", value: str = "restarted",
                   reason: str | None = None) -> ActionPlan:
        key = service
        if key not in self.store:
            raise ActionRefused(self.id, f"no such key {key!r}")
        before = self.store[key]
        return ActionPlan(
            action=self.id, title=self.title, target=f"service:{key}",
            changes=(Change(target=key, description=f"{key}: {before} -> {value}", before=before,
                            after=value),),
            guard=Guard(True, f"{key} exists"), danger=self.danger,
            params={"service": key, "value": value}, reason=reason,
            reason_required=self.reason_required, confirm_text=key, total=2,
        )

    async def execute(self, plan: ActionPlan, progress) -> ActionResult:
        self.executed += 1
        before = self.store[plan.params["service"]]
        progress(Progress(1, 2, "half way"))
        self.store[plan.params["service"]] = plan.params["value"]
        progress(Progress(2, 2, "done"))
        return ActionResult(status="ok", summary="value set", before=before, after=plan.params["value"])


async def _good():
    return [ServiceReading(source="docker", name="api-gateway", state="running", status=Status.OK)]


async def _bad():
    raise BackendError("postgres", "connection refused at 127.0.0.1:5432")


def make_engine(tmp_path, *, read_only: bool = False, actions: list[Action] = (),
                interval: float = 0.5):
    monitor = Monitor([FunctionSource("docker", _good, interval=interval, timeout=1, kind="docker"),
                       FunctionSource("postgres", _bad, interval=interval, timeout=1, kind="postgres")],
                      max_backoff=0.5)
    engine = ActionEngine(AuditLog(tmp_path / "audit.jsonl"), read_only=read_only, operator="alice")
    for a in actions:
        engine.register(a)
    return engine_of(monitor, engine)


async def until(pilot, cond, limit: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def sources_rows(app) -> dict[str, list[str]]:
    table = app.dashboard.pane("sources")
    out = {}
    for key in table.rows:
        out[key.value] = [str(getattr(c, "plain", c)) for c in table.get_row(key)]
    return out


async def test_shell_shows_sources_and_their_monitor_states(tmp_path):
    app = WarroomApp(make_engine(tmp_path), clock=lambda: FROZEN)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: "postgres" in sources_rows(app)
                    and "DEGRADED" in sources_rows(app)["postgres"][0]
                    and "OK" in sources_rows(app)["docker"][0], what="both sources polled")
        rows = sources_rows(app)
        assert rows["docker"][0] == "● OK" and rows["docker"][4] == "docker"
        assert rows["postgres"][0] == "✖ DEGRADED"
        assert "connection refused at 127.0.0.1:5432" in rows["postgres"][2]
        assert rows["postgres"][3] == "never"  # last good
        header = app.dashboard.header
        assert "alice" in header.shown("left") and "08:15:00" in header.shown("right")
    assert not app.engine.monitor.running  # stopped when the app closed


async def test_question_mark_opens_help_generated_from_bindings(tmp_path):
    store = {"api-gateway": "running"}
    app = WarroomApp(make_engine(tmp_path, actions=[SetValue(store)]), clock=lambda: FROZEN)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help screen")
        groups = dict(help_groups(app))
        ids = {bid for rows in groups.values() for _k, _d, bid in rows}
        assert {"help", "palette", "quit", "restart", "filter", "focus_next", "copy"} <= ids
        assert any(k == "r" and d == "Restart" for k, d, _ in groups["Global"])
        # no action for these verbs is registered: the keys do not exist
        global_ids = {bid for _k, _d, bid in groups["Global"]}
        assert "escalate" not in global_ids and "reset_breaker" not in global_ids
        # pane keys are listed under their pane
        assert any(title.startswith("Pane: ") for title in groups)
        text = " ".join(str(s.render()) for s in app.screen.query(".help-group"))
        assert "Restart" in text or app.screen.query(".help-group")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, what="help closed")


async def test_keymap_from_config_remaps_a_binding(tmp_path):
    store = {"api-gateway": "running"}
    config = {"warroom": {"name": "meta-aggregator", "environment": "staging"},
              "keys": {"restart": "R", "no_such_binding": "x"}}
    app = WarroomApp(make_engine(tmp_path, actions=[SetValue(store)]), config=config,
                     clock=lambda: FROZEN)
    notes: list[str] = []
    app.notify = lambda message, **_kw: notes.append(str(message))
    async with app.run_test(size=(160, 48)) as pilot:
        groups = dict(help_groups(app))
        assert ("R", "Restart", "restart") in groups["Global"]
        assert any("no_such_binding" in n for n in notes)
        services = app.dashboard.pane("services")  # R in the Services pane restarts its row: wait for it
        await until(pilot, lambda: services.cursor_key() is not None, what="a service row")
        await pilot.press("r")
        await pilot.pause()
        assert not isinstance(app.screen, ActionScreen)
        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="modal via remapped key")
        assert "meta-aggregator" in app.dashboard.header.shown("left")


async def test_palette_lists_actions_and_panes(tmp_path):
    from textual.command import CommandPalette

    store = {"api-gateway": "running"}
    app = WarroomApp(make_engine(tmp_path, actions=[SetValue(store)]), clock=lambda: FROZEN)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), what="palette")
        await pilot.press(*"Action")
        from textual.command import CommandList

        clist = app.screen.query_one(CommandList)
        await until(pilot, lambda: clist.option_count > 0, what="palette hits")
        prompts = [str(clist.get_option_at_index(i).prompt) for i in range(clist.option_count)]
        assert any("Test service.restart" in p for p in prompts), prompts
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="modal from palette")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, what="modal closed")
        assert store == {"api-gateway": "running"}
        # go to pane
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), what="palette")
        await pilot.press(*"go to pane sources")
        clist = app.screen.query_one(CommandList)
        await until(pilot, lambda: clist.option_count > 0, what="palette hits")
        await pilot.press("enter")
        await until(pilot, lambda: app.focused is app.dashboard.pane("sources"), what="sources focused")


async def test_read_only_has_no_mutating_key_palette_entry_or_modal_and_engine_refuses(tmp_path):
    store = {"api-gateway": "running"}
    action = SetValue(store)
    app = WarroomApp(make_engine(tmp_path, actions=[action]), read_only=True, clock=lambda: FROZEN)
    async with app.run_test(size=(160, 48)) as pilot:
        assert app.engine.actions.read_only is True
        assert app.check_action("verb", ("restart",)) is False
        ids = {bid for _g, rows in help_groups(app) for _k, _d, bid in rows}
        assert "restart" not in ids
        footer_keys = {b.binding.id for b in app.screen.active_bindings.values() if b.enabled}
        assert "restart" not in footer_keys
        await pilot.press("r")
        await pilot.pause()
        assert app.screen is app.dashboard
        from tui.commands import WarroomCommands

        titles = [t for t, _h, _c in WarroomCommands(app.screen)._commands()]
        assert not any(t.startswith("Action:") for t in titles)
        # a pane asking for the action is refused without a modal
        app.post_message(ActionRequested("service.restart", {"service": "api-gateway"}))
        await pilot.pause()
        assert app.screen is app.dashboard
        # and the engine refuses too, with an audit entry
        plan = await app.engine.actions.plan("service.restart", service="api-gateway")
        with pytest.raises(ActionRefused, match="read-only"):
            await app.engine.actions.execute(plan, confirmation=True)
        assert store == {"api-gateway": "running"} and action.executed == 0
        assert app.engine.actions.audit.tail(1)[0]["result"] == "refused"
        # a header badge says so
        assert "READ-ONLY" in app.dashboard.header.shown("right")


async def test_action_modal_plan_confirm_execute_writes_audit(tmp_path):
    store = {"api-gateway": "running"}
    action = SetValue(store, reason_required=True)
    app = WarroomApp(make_engine(tmp_path, actions=[action], interval=60), clock=lambda: FROZEN)
    async with app.run_test(size=(160, 48)) as pilot:
        services = app.dashboard.pane("services")
        await until(pilot, lambda: services.row_keys() == ["api-gateway"], what="service row")
        services.table.focus()
        await pilot.press("r")  # the services pane's own key: ActionRequested(service.restart, ...)
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="modal")
        modal = app.screen
        assert "service:api-gateway" in str(modal.query_one("#action-target").render())
        assert "✔ PASS" in str(modal.query_one("#action-guard").render())
        assert "CONFIRM" in str(modal.query_one("#action-danger").render())
        # no reason yet: the engine refuses, the modal stays open
        await pilot.press("enter")
        await until(pilot, lambda: "REFUSED" in str(modal.query_one("#action-status").render()),
                    what="refusal shown")
        assert "reason is required" in str(modal.query_one("#action-status").render())
        assert action.executed == 0
        await pilot.press(*"listener stuck")
        await pilot.press("enter")
        await until(pilot, lambda: modal.state == "done", what="executed")
        assert store == {"api-gateway": "restarted"} and action.executed == 1
        assert "✔ OK" in str(modal.query_one("#action-status").render())
        bar = modal.query_one("#action-progress")
        assert bar.progress == 2 and bar.total == 2
        polls = app.engine.monitor.poll_counts["docker"]
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is app.dashboard, what="modal closed")
        # the sources are polled again at once, so the panes show the world after the change
        await until(pilot, lambda: app.engine.monitor.poll_counts["docker"] > polls,
                    what="poll right after the action (the interval is 60 s)")
        records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
        entries = [e for e in records if e.get("phase") != "intent"]
        assert [e["result"] for e in entries] == ["refused", "ok"]
        intents = [e for e in records if e.get("phase") == "intent"]
        assert len(intents) == 1 and entries[1]["intent"] == intents[0]["seq"]  # written ahead
        assert entries[-1]["reason"] == "listener stuck" and entries[-1]["operator"] == "alice"
        assert entries[-1]["target"] == "service:api-gateway"
        # history screen lists it
        await pilot.press("h")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen), what="history")
        table = app.screen.query_one("#history-table")
        assert table.row_count == 1
        assert "service.restart" in [str(c) for c in table.get_row_at(0)]


async def test_typed_confirmation_refuses_wrong_text(tmp_path):
    store = {"api-gateway": "running"}
    action = SetValue(store, action_id="orders.fix", danger=Danger.TYPED)
    app = WarroomApp(make_engine(tmp_path, actions=[action]), clock=lambda: FROZEN)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="modal")
        modal = app.screen
        assert app.focused is modal.query_one("#action-confirm")
        await pilot.press(*"api-gatewa", "enter")
        await until(pilot, lambda: "REFUSED" in str(modal.query_one("#action-status").render()),
                    what="refusal")
        assert store == {"api-gateway": "running"} and action.executed == 0
        assert "does not match" in str(modal.query_one("#action-status").render())
        await pilot.press("y", "enter")
        await until(pilot, lambda: modal.state == "done", what="executed")
        assert store == {"api-gateway": "restarted"}
        results = [e["result"] for e in app.engine.actions.audit.tail(10)]
        assert results == ["refused", "ok"]


async def test_layout_compact_at_80x24_and_wide_at_160x48_with_live_resize(tmp_path):
    app = WarroomApp(make_engine(tmp_path), clock=lambda: FROZEN)
    async with app.run_test(size=(80, 24)) as pilot:
        board = app.dashboard
        assert board.layout_mode == "compact" and board.has_class("-compact")
        shown = [s.spec.id for s in board.query(PaneSlot) if s.display]
        assert shown == ["services"]
        assert board.query_one("#pane-tabs").display
        # every pane reachable: tab walks through all of them
        seen = []
        for _ in PANE_IDS:
            await pilot.press("tab")
            await pilot.pause()
            seen.append(board.current)
        assert set(seen) == set(PANE_IDS)
        await pilot.press("7")
        await pilot.pause()
        assert board.current == "sources"
        assert [s.spec.id for s in board.query(PaneSlot) if s.display] == ["sources"]
        await pilot.resize_terminal(160, 48)
        await until(pilot, lambda: board.layout_mode == "wide", what="wide layout")
        await pilot.pause()
        assert all(s.display for s in board.query(PaneSlot))
        assert board.query_one("#pane-tabs").region.height == 0  # hidden in the wide layout
        logs_wide = board.slot("logs").size.height
        await pilot.resize_terminal(120, 36)
        await until(pilot, lambda: board.layout_mode == "medium", what="medium layout")
        await pilot.pause()
        assert all(s.display for s in board.query(PaneSlot))
        assert board.slot("logs").size.height < logs_wide


async def test_tabs_are_built_when_a_wide_terminal_shrinks(tmp_path):
    app = WarroomApp(make_engine(tmp_path), clock=lambda: FROZEN)
    async with app.run_test(size=(160, 48)) as pilot:
        board = app.dashboard
        assert board._tabs() is None  # not built in the wide layout
        await pilot.resize_terminal(80, 24)
        await until(pilot, lambda: board.layout_mode == "compact" and board._tabs() is not None,
                    what="compact layout with tabs")
        await pilot.press("3")
        await pilot.pause()
        assert board._tabs().active == "tab-queues"
        assert [s.spec.id for s in board.query(PaneSlot) if s.display] == ["queues"]


async def test_hidden_panes_skip_redraws_and_panes_update_under_dialogs(tmp_path):
    """Hidden panes are redrawn only when shown; under a dialog the dashboard keeps
    updating (it is drawn behind the dialog: it never reads "just now" while old)."""
    app = WarroomApp(make_engine(tmp_path), clock=lambda: FROZEN)
    async with app.run_test(size=(80, 24)) as pilot:
        board = app.dashboard
        await until(pilot, lambda: app.snapshot is not None and app.snapshot.sources["docker"].state
                    is SourceState.OK, what="a poll")
        await until(pilot, lambda: board.slot("sources").dirty, what="hidden pane marked dirty")
        await pilot.press("7")
        await until(pilot, lambda: "docker" in sources_rows(app), what="sources shown on switch")
        calls = []
        original = board.apply
        board.apply = lambda snap: (calls.append(snap), original(snap))
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        await pilot.pause()
        calls.clear()  # a snapshot queued before the key press may still have been applied
        n = app.engine.monitor.poll_counts["docker"]
        await until(pilot, lambda: app.engine.monitor.poll_counts["docker"] >= n + 2, what="polls")
        await until(pilot, lambda: len(calls) >= 1, what="applied under the dialog")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is board, what="dialog closed")


async def test_copy_uses_osc52_clipboard(tmp_path):
    app = WarroomApp(make_engine(tmp_path), clock=lambda: FROZEN)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: "docker" in sources_rows(app), what="rows")
        await pilot.press("7")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert app.clipboard.startswith("docker (docker): ok")


# --------------------------------------------------------------------------- snapshots


class FixedMonitor:
    """Holds one snapshot; never polls (deterministic pictures)."""

    running = False
    sources: dict = {}

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot

    def subscribe(self, fn):
        return lambda: None

    async def start(self):
        return None

    async def stop(self):
        return None

    def refresh(self, name=None):
        return None


def fixed_app(tmp_path, theme: str = "dark", read_only: bool = False) -> WarroomApp:
    at = datetime(2026, 11, 22, 8, 14, 30, tzinfo=UTC)
    snapshot = Snapshot(
        at=at,
        sources={
            "docker": SourceStatus(name="docker", kind="docker", state=SourceState.OK, last_good=at,
                                   interval=2.0),
            "postgres": SourceStatus(name="postgres", kind="postgres", state=SourceState.DEGRADED,
                                     reason="connection refused at 127.0.0.1:5432", failures=3,
                                     last_good=datetime(2026, 11, 22, 8, 10, 2, tzinfo=UTC), interval=5.0),
            "polygon": SourceStatus(name="polygon", kind="evm", state=SourceState.PENDING, interval=5.0),
        },
        findings=(Finding(key="pg:down", severity=Severity.P1, source="postgres",
                          summary="postgres unreachable", since=at, at=at),),
    )
    actions = ActionEngine(AuditLog(tmp_path / "audit.jsonl"), operator="alice@10.0.0.5",
                           read_only=read_only)
    actions.register(SetValue({"api-gateway": "running"}))
    engine = engine_of(FixedMonitor(snapshot), actions)
    config = {"warroom": {"name": "meta-aggregator", "environment": "production"}}
    return WarroomApp(engine, config=config, theme=theme, read_only=read_only, clock=lambda: FROZEN)


async def settle(pilot, focus: bool = True) -> None:
    """Wait until the first snapshot is shown and focus (and with it the footer) is settled."""
    app = pilot.app
    await until(pilot, lambda: app.dashboard is not None and app.dashboard._snapshot is not None
                and (app.focused is not None or not focus), what="settled")
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (120, 36), (160, 48)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_shell_sizes(snap_compare, tmp_path, size):
    assert snap_compare(fixed_app(tmp_path), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("theme", ["dark", "light", "high-contrast", "colorblind"])
def test_snapshot_themes(snap_compare, tmp_path, theme):
    async def sources_focused(pilot) -> None:
        await settle(pilot)
        await pilot.press("7")
        await until(pilot, lambda: pilot.app.focused is pilot.app.dashboard.pane("sources"),
                    what="sources focused")
        await settle(pilot)

    assert snap_compare(fixed_app(tmp_path, theme=theme, read_only=(theme == "light")),
                        terminal_size=(120, 36), run_before=sources_focused)


def test_snapshot_action_modal(snap_compare, tmp_path):
    async def open_modal(pilot) -> None:
        await settle(pilot)
        pilot.app.request_action("service.restart", {"service": "api-gateway"})
        await until(pilot, lambda: isinstance(pilot.app.screen, ActionScreen), what="modal")
        await settle(pilot, focus=False)

    assert snap_compare(fixed_app(tmp_path), terminal_size=(120, 36), run_before=open_modal)


async def test_log_hub_lines_reach_the_log_tail(tmp_path):
    from backends.sources.logs import LogHub, LogSpec

    log_file = tmp_path / "listener.log"
    log_file.write_text("")
    hub = LogHub([LogSpec(name="listener", path=str(log_file))])
    engine = make_engine(tmp_path)
    engine.logs = hub
    app = WarroomApp(engine, clock=lambda: FROZEN)
    async with app.run_test(size=(160, 48)) as pilot:
        tail = app.dashboard.pane("logs")
        hub.feed("listener", ["INFO listener started", "ERROR event missed for order 42"])
        await until(pilot, lambda: tail.received >= 2, what="lines in the log tail")
        assert tail.errors_received == 1


async def test_filter_detail_and_redraw_keys(tmp_path):
    from tui.screens.detail import DetailScreen

    app = WarroomApp(make_engine(tmp_path), clock=lambda: FROZEN)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: {"docker", "postgres"} <= set(sources_rows(app)), what="rows")
        await pilot.press("7")
        await pilot.pause()
        await pilot.press("slash")
        await until(pilot, lambda: app.dashboard._filter_bar() is not None
                    and app.focused is app.dashboard._filter_bar(), what="filter bar")
        bar = app.dashboard._filter_bar()
        await pilot.press(*"post", "enter")
        await until(pilot, lambda: set(sources_rows(app)) == {"postgres"}, what="filtered")
        assert app.focused is app.dashboard.pane("sources") and not bar.display
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen), what="detail")
        assert app.screen.item.name == "postgres"
        from rich.console import Console

        from tui.screens.detail import fields_table

        console = Console(width=120, record=True, file=io.StringIO())
        console.print(fields_table(app.screen.item))
        assert "connection refused at 127.0.0.1:5432" in console.export_text()
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, what="detail closed")
        await pilot.press("ctrl+l")  # redraw: nothing breaks
        await pilot.pause()
        assert app.screen is app.dashboard


async def test_kiosk_is_read_only_and_q_does_not_quit(tmp_path):
    app = WarroomApp(make_engine(tmp_path, actions=[SetValue({"api-gateway": "x"})]), kiosk=True,
                     clock=lambda: FROZEN)
    async with app.run_test(size=(160, 48)) as pilot:
        from tui.screens.kiosk import KioskScreen

        assert app.read_only and app.engine.actions.available() == []
        assert isinstance(app.screen, KioskScreen)  # the wall display
        for key in ("q", "question_mark", "ctrl+p", "r"):
            await pilot.press(key)
            await pilot.pause()
            assert app.is_running and isinstance(app.screen, KioskScreen), key
        assert "KIOSK" in app.dashboard.header.shown("right")


async def test_no_color_is_honoured_and_theme_is_chosen(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = WarroomApp(make_engine(tmp_path), theme="high-contrast", clock=lambda: FROZEN)
    async with app.run_test(size=(80, 24)):
        assert app.no_color is True
        assert app.theme == "high-contrast"
        assert app.theme_variables["status-crit"]
    with pytest.raises(ValueError, match="unknown theme"):
        WarroomApp(make_engine(tmp_path), theme="neon")


async def test_every_global_key(tmp_path):
    """e, i, b open their actions' modals from any pane; p pauses the log tail; shift+tab,
    ctrl+r and q work; a verb with several actions asks which one."""
    from textual.command import CommandPalette

    store = {"api-gateway": "running"}
    acts = [SetValue(store, "escalate"), SetValue(store, "incident.declare"),
            SetValue(store, "breaker.reset"), SetValue(store, "breaker.reset_all")]
    app = WarroomApp(make_engine(tmp_path, actions=acts), clock=lambda: FROZEN)
    async with app.run_test(size=(160, 48)) as pilot:
        board = app.dashboard
        await pilot.press("7")  # the sources pane: it owns none of these keys
        await pilot.pause()
        for key, title in (("e", "Test escalate"), ("i", "Test incident.declare")):
            await pilot.press(key)
            await until(pilot, lambda: isinstance(app.screen, ActionScreen), what=f"modal for {key}")
            assert app.screen.plan.title == title
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is board, what="closed")
        await pilot.press("b")  # two breaker actions: choose
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), what="chooser")
        await pilot.press(*"all", "enter")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="modal for b")
        assert app.screen.plan.action == "breaker.reset_all"
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is board, what="closed")
        tail = board.pane("logs")
        assert tail.following
        await pilot.press("p")
        await until(pilot, lambda: not tail.following, what="follow paused")
        before = app.focused
        await pilot.press("shift+tab")
        await pilot.pause()
        assert app.focused is not before
        n = app.engine.monitor.poll_counts["docker"]
        await pilot.press("ctrl+r")
        await until(pilot, lambda: app.engine.monitor.poll_counts["docker"] > n, what="poll now")
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, what="quit")
    assert store == {"api-gateway": "running"}  # nothing ran: every modal was cancelled


async def test_header_shows_open_incident_with_sla_clock(tmp_path):
    from datetime import timedelta

    from widgets.header import IncidentInfo

    engine = make_engine(tmp_path)
    open_incident = IncidentInfo(severity=Severity.P1, title="escrow releases stuck",
                                 sla_due=FROZEN + timedelta(minutes=15))
    engine.incidents = SimpleNamespace(current=lambda: open_incident)
    app = WarroomApp(engine, clock=lambda: FROZEN)
    async with app.run_test(size=(160, 48)) as pilot:
        header = app.dashboard.header
        await until(pilot, lambda: "INCIDENT P1" in header.shown("left"), what="incident in header")
        assert "escrow releases stuck" in header.shown("left")
        assert "SLA 15m00s left" in header.shown("left")


async def test_real_engine_declare_incident_from_the_palette_shows_it_in_the_header(tmp_path, monkeypatch):
    """The real engine (build_engine, incidents attached, local store in tmp_path)."""
    from textual.command import CommandList, CommandPalette

    from backends.engine.core import build_engine

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    engine = build_engine(None, operator="alice", sources=[
        FunctionSource("docker", _good, interval=0.5, timeout=1, kind="docker")])
    app = WarroomApp(engine, clock=lambda: FROZEN)
    async with app.run_test(size=(160, 48)) as pilot:
        header = app.dashboard.header
        await until(pilot, lambda: "no open incident" in header.shown("left"), what="header")
        app.request_action("incident.declare", {"title": "escrow releases stuck", "severity": "P1"})
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="modal")
        assert "SAFE" in str(app.screen.query_one("#action-danger").render())
        await pilot.press("enter")
        await until(pilot, lambda: app.screen.state == "done", what="declared")
        await pilot.press("enter")
        await until(pilot, lambda: "INCIDENT P1" in header.shown("left"), what="incident in the header")
        assert "escrow releases stuck" in header.shown("left") and "SLA" in header.shown("left")
        # and the palette lists the incident actions too
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), what="palette")
        await pilot.press(*"resolve")
        clist = app.screen.query_one(CommandList)
        await until(pilot, lambda: clist.option_count > 0, what="hits")
        assert "incident" in str(clist.get_option_at_index(0).prompt).lower()
    entries = engine.audit.tail(5)
    assert any(e["action"] == "incident.declare" and e["result"] == "ok" for e in entries)


async def test_a_plan_that_needs_more_asks_for_its_parameters(tmp_path, monkeypatch):
    """`i` with nothing selected: declare needs a title, so a form asks for the plan's fields."""
    from backends.engine.core import build_engine
    from tui.screens.params import ParamsScreen

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    engine = build_engine(None, operator="alice")
    app = WarroomApp(engine, clock=lambda: FROZEN)
    async with app.run_test(size=(160, 48)) as pilot:
        app.request_action("incident.declare", {})
        await until(pilot, lambda: isinstance(app.screen, ParamsScreen), what="parameters form")
        form = app.screen
        assert "title" in str(form.query_one("#params-problem").render())
        names = [name for name, _d, _a in form.fields]
        assert "title" in names and "severity" in names and "roles" not in names
        await until(pilot, lambda: form.query_one("#param-title").has_focus, what="the first field focused")
        await pilot.press(*"listener down")
        await pilot.press("enter")  # next field
        form.query_one("#param-severity").value = "P2"
        form.query_one("#param-severity").focus()
        await pilot.pause()
        await pilot.press("end", "enter")
        while not isinstance(app.screen, ActionScreen) and isinstance(app.screen, ParamsScreen):
            await pilot.press("enter")  # through the remaining fields
            await pilot.pause()
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="modal")
        assert "listener down" in app.screen.plan.title or "listener down" in str(
            app.screen.plan.params.get("title"))
        assert app.screen.plan.params["severity"] == "P2"


class ManyChanges(SetValue):
    """A typed, reason-required action with 60 changes and a long preview (the pause of the
    contract-exploit drill and the 45 terminations of pool-exhaustion look like this)."""

    async def plan(self, **kw) -> ActionPlan:
        from dataclasses import replace

        plan = await super().plan(**kw)
        changes = tuple(Change(target=f"pid {i}", description=f"terminate pid {i}", before="active",
                               after="terminated") for i in range(60))
        return replace(plan, changes=changes, preview="\n".join(f"eth_call line {i}" for i in range(30)))


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
async def test_the_reason_confirmation_and_result_stay_on_screen(tmp_path, size):
    """At 80x24 the reason field and the typed confirmation of a long plan sat below the
    screen's edge (and enter said nothing): the changes scroll, the fields and the result
    stay visible."""
    store = {"api-gateway": "running"}
    action = ManyChanges(store, danger=Danger.TYPED, reason_required=True)
    app = WarroomApp(make_engine(tmp_path, actions=[action]), clock=lambda: FROZEN)
    async with app.run_test(size=size) as pilot:
        app.request_action("service.restart", {"service": "api-gateway"})
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="modal")
        modal = app.screen
        await pilot.pause()
        height = size[1]
        for wid in ("#action-reason", "#action-confirm", "#action-status"):
            region = modal.query_one(wid).region
            assert region.height and 0 <= region.y and region.bottom <= height, (wid, region, height)
        await pilot.press("enter")  # no reason yet: the refusal is shown where it can be read
        await until(pilot, lambda: "REFUSED" in str(modal.query_one("#action-status").render()), what="refusal")
        assert modal.query_one("#action-status").region.bottom <= height
        await pilot.press(*"drill", "enter")
        await pilot.press(*"api-gateway", "enter")
        await until(pilot, lambda: modal.state == "done", what="executed")
        await pilot.pause()
        status = modal.query_one("#action-status")
        assert "OK" in str(status.render()) and status.region.bottom <= height
        assert store["api-gateway"] == "restarted"


async def test_the_clock_and_the_snapshots_are_painted_in_one_frame_a_second(tmp_path):
    """The header's clock and the live snapshots (polls every 0.5 s) land on the app's one
    beat (widgets.common.Beat) and Textual paints them together: about one frame a second,
    not one per timer; the clock still shows the wall clock's second."""
    from widgets.common import Beat

    app = WarroomApp(make_engine(tmp_path, interval=0.5))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.dashboard
        await until(pilot, lambda: "docker" in sources_rows(app), what="the first snapshot")
        beat = Beat.of(screen)
        await until(pilot, lambda: beat.beats >= 2, what="two beats")
        frames = []
        paint = screen._compositor_refresh

        def counted():
            frames.append(time.monotonic())
            paint()

        screen._compositor_refresh = counted
        first = beat.beats
        await until(pilot, lambda: beat.beats >= first + 4, limit=10.0, what="four more beats")
        screen._compositor_refresh = paint
        assert 3 <= len(frames) <= 5, f"{len(frames)} frames in 4 beats"
        shown = screen.header.shown("right")
        assert datetime.now().astimezone().strftime("%H:%M") in shown
