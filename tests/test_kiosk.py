"""Kiosk mode (wall display): tiles, staleness, alarm, view cycling, and read-only everywhere.

Pilot tests run the real WarroomApp on a real Monitor fed by FunctionSources, with a
frozen clock the test moves by hand. The engine-level test builds the full engine from
the harness stack config and checks that every registered mutating action is refused.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from backends.actions.base import ActionEngine, ActionPlan
from backends.engine.audit import AuditLog
from backends.engine.monitor import FunctionSource, Monitor
from backends.errors import ActionRefused
from backends.model import (
    BreakerReading,
    BreakersReading,
    ChainReading,
    ContractReading,
    EndpointReading,
    Finding,
    OrdersReading,
    QueueReading,
    ServiceReading,
    Severity,
    Status,
)
from tests.engines import engine_of
from tui.app import WarroomApp
from tui.screens.kiosk import (
    KioskScreen,
    build_tiles,
    digits_text,
    kiosk_allows,
    last_update,
)

T0 = datetime(2026, 11, 22, 8, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


class World:
    """What the FunctionSources return; tests change it between polls."""

    def __init__(self) -> None:
        self.services = [
            ServiceReading(source="svc", name="api-gateway", state="running", status=Status.OK),
            ServiceReading(source="svc", name="listener", state="running", status=Status.OK),
            ServiceReading(source="svc", name="worker", state="exited", status=Status.CRIT),
        ]
        self.depth = 12_345
        self.stuck = 4
        self.open_breakers = 2
        self.paused = False
        self.findings: list[Finding] = []

    async def svc(self):
        return list(self.services)

    async def redis(self):
        return [QueueReading(source="redis", name="action_jobs", key="action_jobs", depth=self.depth,
                             status=Status.CRIT if self.depth >= 10_000 else Status.OK)]

    async def breakers(self):
        bs = tuple(BreakerReading(source="pg", name=f"t{i}", state="open") for i in range(self.open_breakers))
        return [BreakersReading(source="pg", breakers=bs, total=10, open=self.open_breakers)]

    async def orders(self):
        return [OrdersReading(source="orders", stuck_count=self.stuck, oldest_age_s=900.0)]

    async def chain(self):
        ep = EndpointReading(source="chain", chain="local", url="http://127.0.0.1:1", name="primary",
                             ok=True, active=True, head=123456)
        c = ContractReading(source="chain", chain="local", name="escrow", address="0x1", paused=self.paused)
        return [ChainReading(source="chain", chain="local", endpoints=(ep,), contracts=(c,))]

    def rules(self, _snapshot):
        return list(self.findings)


def make_engine(world: World, tmp_path, *, read_only: bool = False):
    sources = [FunctionSource(n, getattr(world, n), interval=3600, timeout=2)
               for n in ("svc", "redis", "breakers", "orders", "chain")]
    monitor = Monitor(sources, rules=world.rules)
    actions = ActionEngine(AuditLog(str(tmp_path / "audit.jsonl")), read_only=read_only)
    return engine_of(monitor, actions)


async def wait_for(pilot, cond, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.02)


async def kiosk_of(app, pilot) -> KioskScreen:
    """The kiosk screen (the app shows it in kiosk mode; pushed here if the app does not)."""
    if not isinstance(app.screen, KioskScreen):
        await app.push_screen(KioskScreen(cycle_s=0, tick_s=0))
        await pilot.pause()
    assert isinstance(app.screen, KioskScreen)
    return app.screen


def tile_text(screen: KioskScreen, tile_id: str) -> tuple[str, str, str]:
    tile = screen.query_one(f"#tile-{tile_id}")
    t = tile.tile
    return t.value, f"{t.status.symbol} {t.word}", t.detail


# --------------------------------------------------------------------------- pure


def test_tiles_from_a_snapshot():
    world = World()

    async def snap():
        monitor = Monitor([FunctionSource(n, getattr(world, n)) for n in
                           ("svc", "redis", "breakers", "orders", "chain")])
        return await monitor.poll_once()

    tiles = {t.id: t for t in build_tiles(asyncio.run(snap()))}
    assert tiles["services"].value == "2" and tiles["services"].status is Status.CRIT
    assert "worker exited" in tiles["services"].detail
    assert tiles["queues"].value == "12345" and tiles["queues"].word == "BACKED UP"
    assert tiles["breakers"].value == "2" and tiles["breakers"].word == "2 OPEN"
    assert tiles["orders"].value == "4" and tiles["orders"].word == "4 STUCK"
    assert tiles["chain"].value == "123456" and tiles["chain"].status is Status.OK
    assert digits_text("12,345") == "12 345" and digits_text("") == "-"


def test_no_readings_read_unknown_not_ok():
    from backends.model import Snapshot

    for t in build_tiles(Snapshot()):
        assert t.status is Status.UNKNOWN and t.value == "-"


def test_kiosk_allows_only_quit():
    assert kiosk_allows("kiosk_quit") and kiosk_allows("screen.kiosk_quit")
    for action in ("quit", "help", "command_palette", "verb", "history", "refresh_all", "copy",
                   "help_quit", "detail", "filter"):
        assert not kiosk_allows(action)


# --------------------------------------------------------------------------- pilot


async def test_kiosk_shows_tiles_findings_and_stale(tmp_path):
    world = World()
    clock = Clock()
    engine = make_engine(world, tmp_path)
    app = WarroomApp(engine, kiosk=True, clock=clock)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await kiosk_of(app, pilot)
        await wait_for(pilot, lambda: all(n in engine.monitor.snapshot.readings for n in
                                          ("svc", "redis", "breakers", "orders", "chain")))
        # nothing wrong is said, not left blank (a blank list reads as a broken display)
        await wait_for(pilot, lambda: "NO FINDINGS" in str(screen.query_one("#kiosk-findings").render()))
        assert screen.query_one("#kiosk-findings").border_title == "Findings (0)"
        clock.at = datetime.now(UTC)  # the readings were just taken
        world.findings = [Finding(key="q", severity=Severity.P2, source="redis", summary="queue backed up")]
        engine.monitor.refresh()
        await wait_for(pilot, lambda: screen.snapshot is not None and screen.snapshot.findings)
        assert tile_text(screen, "services")[:2] == ("2", "✖ 1 NOT OK")
        assert tile_text(screen, "queues")[0] == "12345"
        assert tile_text(screen, "breakers")[:2] == ("2", "✖ 2 OPEN")
        assert tile_text(screen, "orders")[:2] == ("4", "▲ 4 STUCK")
        assert tile_text(screen, "chain")[:2] == ("123456", "● IN SYNC")
        assert "queue backed up" in str(screen.query_one("#kiosk-findings").render())
        assert screen.query_one("#tile-services").has_class("-crit")

        clock.at = last_update(screen.snapshot)
        screen.render_status()
        updated = screen.query_one("#kiosk-updated")
        assert "updated" in str(updated.render()) and not updated.has_class("-stale")
        # frozen data: 3x the refresh (2 s default) later the display says so, in crit
        clock.advance(5)
        screen.render_status()
        assert not screen.stale
        clock.advance(2)
        screen.render_status()
        assert screen.stale and updated.has_class("-stale")
        assert "STALE" in str(updated.render()) and "updated 7s ago" in str(updated.render())
        # fresh data clears it
        clock.at = datetime.now(UTC)
        engine.monitor.refresh()
        await wait_for(pilot, lambda: not screen.stale)
        screen.render_status()
        assert not updated.has_class("-stale")


async def test_kiosk_alarm_on_new_p0_p1(tmp_path):
    world = World()
    clock = Clock(datetime.now(UTC))
    engine = make_engine(world, tmp_path)
    app = WarroomApp(engine, kiosk=True, clock=clock)
    bells = []
    app.bell = lambda: bells.append(1)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await kiosk_of(app, pilot)
        screen.bell = True
        await wait_for(pilot, lambda: "svc" in engine.monitor.snapshot.readings)
        assert screen.alarms == 0
        world.findings = [Finding(key="p2", severity=Severity.P2, source="x", summary="minor")]
        engine.monitor.refresh()
        await wait_for(pilot, lambda: screen.snapshot.findings)
        assert screen.alarms == 0 and not screen.query_one("#kiosk-alarm").has_class("-on")
        world.findings.append(Finding(key="p0", severity=Severity.P0, source="chain",
                                      summary="escrow contract paused"))
        engine.monitor.refresh()
        await wait_for(pilot, lambda: screen.alarms == 1)
        banner = screen.query_one("#kiosk-alarm")
        assert banner.has_class("-on") and "escrow contract paused" in screen.alarm_text
        assert screen.flashing and bells == [1]
        # the same finding on the next poll does not ring again
        prev = engine.monitor.snapshot
        engine.monitor.refresh()
        await wait_for(pilot, lambda: engine.monitor.snapshot is not prev
                       and screen.snapshot is engine.monitor.snapshot)  # the next poll, shown
        assert screen.alarms == 1
        # the flash stops after a while; the banner stays while the P0 lasts
        clock.advance(30)
        screen.tick()
        assert not screen.flashing and not banner.has_class("-flash") and banner.has_class("-on")
        world.findings = []
        engine.monitor.refresh()
        await wait_for(pilot, lambda: not banner.has_class("-on"))


async def test_kiosk_cycles_views(tmp_path):
    world = World()
    engine = make_engine(world, tmp_path)
    app = WarroomApp(engine, kiosk=True)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await kiosk_of(app, pilot)
        assert len(screen.view_ids) >= 3
        first = screen.current_view
        pane = screen._view(first)
        await screen.next_view()
        assert screen.current_view != first
        assert not pane.is_attached  # one live pane at a time, rebuilt on each change
        assert len(screen.query(".kiosk-view")) == 1
        for _ in range(len(screen.view_ids) - 1):
            await screen.next_view()
        assert screen.current_view == first
        assert app.focused is None
    # with a short period, views change by themselves
    app = WarroomApp(make_engine(World(), tmp_path), kiosk=True)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await kiosk_of(app, pilot)
        screen.set_cycle(0.1)
        seen = {screen.current_view}
        await wait_for(pilot, lambda: seen.add(screen.current_view) or len(seen) >= 3)


async def test_kiosk_has_no_input_but_quit(tmp_path):
    engine = make_engine(World(), tmp_path, read_only=False)
    app = WarroomApp(engine, kiosk=True)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await kiosk_of(app, pilot)
        await pilot.pause()
        assert engine.actions.read_only  # the engine refuses, not only the UI
        assert app.focused is None
        assert not [w for w in screen.query("*") if w.focusable]
        enabled = {b.binding.action for b in screen.active_bindings.values() if b.enabled}
        assert enabled == {"kiosk_quit"}, enabled
        for key in ("q", "question_mark", "ctrl+p", "h", "r", "f", "e", "i", "b", "tab", "enter",
                    "slash", "1", "y", "ctrl+c"):
            await pilot.press(key)
            assert app.screen is screen, key
            assert app.is_running
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: not app.is_running)


async def test_kiosk_engine_refuses_every_mutating_action(tmp_path):
    """A kiosk app makes the engine read-only: plan() may preview, execute() refuses."""
    from backends.actions.base import Action

    class Mutating(Action):
        id = "test.mutate"
        title = "mutate"
        ran = False

        async def plan(self, **params):
            return ActionPlan(action=self.id, title=self.title, target="thing")

        async def execute(self, plan, progress):
            Mutating.ran = True
            raise AssertionError("must not run")

    engine = make_engine(World(), tmp_path, read_only=False)
    engine.actions.register(Mutating())
    app = WarroomApp(engine, kiosk=True)
    async with app.run_test(size=(120, 36)) as pilot:
        await kiosk_of(app, pilot)
        assert engine.actions.available() == []
        plan = await engine.actions.plan("test.mutate")
        with pytest.raises(ActionRefused, match="read-only"):
            await engine.actions.execute(plan, confirmation=True)
        app.request_action("test.mutate")
        await pilot.pause()
        assert not Mutating.ran and app.screen.__class__.__name__ != "ActionScreen"


async def test_kiosk_shows_open_incident_with_sla_clock(tmp_path):
    from widgets.header import IncidentInfo

    clock = Clock(datetime.now(UTC))
    engine = make_engine(World(), tmp_path)
    current: list = []
    engine.incidents = SimpleNamespace(current=lambda: current[0] if current else None)
    app = WarroomApp(engine, kiosk=True, clock=clock)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await kiosk_of(app, pilot)
        screen.render_status()
        box = screen.query_one("#kiosk-incident")
        assert "no open incident" in str(box.render())
        current.append(IncidentInfo(severity=Severity.P1, title="escrow releases stuck", id="INC-7",
                                    sla_due=clock.at + timedelta(minutes=10)))
        screen.render_status()
        text = str(box.render())
        assert "INCIDENT P1 INC-7" in text and "escrow releases stuck" in text
        assert "SLA 10m00s left" in text and box.has_class("-crit")
        clock.advance(11 * 60)
        screen.render_status()
        assert "SLA overdue 1m00s" in str(box.render())


async def test_kiosk_cycling_frees_removed_panes(tmp_path):
    """Days of cycling: a removed pane (the log tail with its rows and rendered lines) must not
    stay alive. The tail watches the app's theme; Textual drops that watcher only when the
    theme changes, so the kiosk forgets it when it removes the pane."""
    import gc
    import weakref

    from backends.sources.logs import LogHub, LogSpec
    from widgets.logs import LogTail

    log_file = tmp_path / "listener.log"
    log_file.write_text("")
    hub = LogHub([LogSpec(name="listener", path=str(log_file))])
    hub.feed("listener", [f"INFO listener line {i}" for i in range(50)])
    engine = make_engine(World(), tmp_path)
    engine.logs = hub
    app = WarroomApp(engine, kiosk=True)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await kiosk_of(app, pilot)
        screen.set_cycle(0)
        assert "logs" in screen.view_ids
        tails: list[weakref.ref] = []
        for _ in range(3 * len(screen.view_ids)):
            await screen.next_view()
            if screen.current_view == "logs":
                tail = screen._view("logs")
                assert isinstance(tail, LogTail)
                tails.append(weakref.ref(tail))
                shown = tail.renders
                del tail
                hub.feed("listener", ["ERROR event missed for order 42"])
                # the line reaches the tail and is drawn (the weak reference: no strong one kept)
                await wait_for(pilot, lambda t=tails[-1], n=shown: t() is not None and t().renders > n)
        await screen.show_view(screen.current_view)  # the same view again: still one pane
        assert len(screen.query(".kiosk-view")) == 1
        await screen.next_view()
        await pilot.pause()
        gc.collect()
        assert len(tails) == 3
        alive = [t for t in tails if t() is not None]
        assert not alive, f"{len(alive)} removed log tails still alive"
        watchers = getattr(app, "__watchers", {})
        assert all(node.is_attached for entries in watchers.values() for node, _ in entries)
        # Textual's class-level lru_cache on get_inner_outer holds live widgets' entries only
        from textual._styles_cache import StylesCache

        assert StylesCache.get_inner_outer.cache_info().currsize <= 2 * len(app.screen.query("*"))


def test_chain_tile_says_wrong_chain_not_down_for_an_endpoint_on_another_chain():
    """An endpoint answering for another chain is a config fault, not an outage: the tile
    says which endpoint and its id instead of DOWN (the newcomer's trial read it as an outage)."""
    from tests.widget_data import chain_snapshot
    from tui.screens.kiosk import chain_tile

    tile = chain_tile(chain_snapshot())
    assert tile.status is Status.CRIT and tile.word == "WRONG CHAIN", tile
    assert tile.detail.startswith("archive on chain 1"), tile
