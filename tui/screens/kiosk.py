"""Kiosk: the wall display. Read-only, no cursor, no input except ctrl+q (quit).

Large tiles (big digits + symbol + word) for services, queues, breakers, stuck orders
and the chain read from across a room; below them the findings, the open incident with
its SLA clock, and one detail pane that cycles every `cycle_s` seconds. The top bar
shows the clock and "updated Ns ago"; beyond 3x the refresh interval it turns into a
crit "STALE" badge, so a frozen display is obvious. A new P0/P1 finding raises an
alarm: a flashing banner, and the terminal bell when enabled.

The screen subscribes to the engine's monitor itself, so it works on any app that
carries `.engine` (and `.clock` for tests). Nothing here does I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Digits, Static

from backends.interface import EngineLike
from backends.model import (
    BreakerReading,
    BreakersReading,
    ChainReading,
    Finding,
    OrdersReading,
    QueueReading,
    ServiceReading,
    Severity,
    Snapshot,
    Status,
)
from tui.messages import SnapshotArrived
from tui.textual_compat import clear_styles_cache, drop_watchers, widget_styles_cache
from widgets.common import BEAT, Beat, BeatCall, BeatTicker
from widgets.findings import SEVERITY_SYMBOL

log = logging.getLogger(__name__)

# The only action a kiosk takes from a key. App-level actions are refused by the app's
# check_action in kiosk mode (see `kiosk_allows`).
KIOSK_ACTIONS = frozenset({"kiosk_quit"})
STALE_FACTOR = 3.0  # "updated" turns crit beyond this many refresh intervals
FLASH_S = 10.0  # how long a new P0/P1 flashes the banner
DEFAULT_CYCLE_S = 15.0
CYCLE_VIEWS = ("services", "queues", "breakers", "orders", "chain", "sources", "logs")
DIGITS_OK = set(" 0123456789+-^x:ABCDEF$()")


def kiosk_allows(action: str) -> bool:
    """Whether an action may run in kiosk mode (the app's check_action uses this)."""
    return action.rsplit(".", 1)[-1] in KIOSK_ACTIONS


# --------------------------------------------------------------------------- tiles (pure)


@dataclass(frozen=True)
class Tile:
    id: str
    title: str
    value: str  # shown with big digits; "-" when nothing is known
    status: Status
    word: str  # the status in words ("ALL UP", "2 DOWN", "PAUSED")
    detail: str = ""
    stale: bool = False


def _feeding(snapshot: Snapshot, types: tuple[type, ...]) -> list[str]:
    return [name for name, rs in snapshot.readings.items() if any(isinstance(r, types) for r in rs)]


def _stale(snapshot: Snapshot, names: Iterable[str]) -> str:
    for n in names:
        st = snapshot.sources.get(n)
        if st is not None and st.degraded:
            return f"{n}: {st.reason or 'degraded'}"
    return ""


def _finish(tile_id: str, title: str, snapshot: Snapshot, types: tuple[type, ...], value: str,
            status: Status, word: str, detail: str) -> Tile:
    stale = _stale(snapshot, _feeding(snapshot, types))
    if stale:
        status = Status.worst(status, Status.UNKNOWN)
        detail = f"STALE {stale}" + (f" · {detail}" if detail else "")
    return Tile(tile_id, title, value, status, word, detail, bool(stale))


def _none(tile_id: str, title: str, snapshot: Snapshot) -> Tile:
    waiting = any(st.last_good is None for st in snapshot.sources.values())
    return Tile(tile_id, title, "-", Status.UNKNOWN, "NO DATA",
                "waiting for the first poll" if waiting else "not configured")


def services_tile(snapshot: Snapshot) -> Tile:
    rs: list[ServiceReading] = snapshot.of_type(ServiceReading)
    if not rs:
        return _none("services", "Services", snapshot)
    up = [r for r in rs if r.status is Status.OK]
    bad = [r for r in rs if r.status is not Status.OK]
    status = Status.worst(*(r.status for r in rs))
    word = "ALL UP" if not bad else f"{len(bad)} NOT OK"
    detail = f"{len(up)} of {len(rs)} up"
    if bad:
        detail += " · " + ", ".join(f"{r.name} {r.state}" for r in bad[:3])
    return _finish("services", "Services", snapshot, (ServiceReading,), str(len(up)), status,
                   word, detail)


def queues_tile(snapshot: Snapshot) -> Tile:
    rs: list[QueueReading] = snapshot.of_type(QueueReading)
    if not rs:
        return _none("queues", "Queues", snapshot)
    total = sum(r.depth for r in rs)
    status = Status.worst(*(r.status for r in rs))
    worst = max(rs, key=lambda r: (r.status is Status.CRIT, r.status is Status.WARN, r.depth))
    word = {Status.OK: "DRAINING", Status.WARN: "BACKLOG", Status.CRIT: "BACKED UP",
            Status.UNKNOWN: "UNKNOWN"}[status]
    detail = f"{worst.name} {worst.depth:,}"
    if worst.drain_rate is not None:
        detail += f" · {worst.drain_rate:+.1f}/s"
    if worst.dead_letter_depth:
        detail += f" · dead {worst.dead_letter_depth:,}"
    return _finish("queues", "Queues (jobs)", snapshot, (QueueReading,), str(total), status, word,
                   detail)


def breakers_tile(snapshot: Snapshot) -> Tile:
    groups: list[BreakersReading] = snapshot.of_type(BreakersReading)
    singles: list[BreakerReading] = snapshot.of_type(BreakerReading)
    if not groups and not singles:
        return _none("breakers", "Breakers open", snapshot)
    total = sum(g.total or len(g.breakers) for g in groups) + len(singles)
    opened = sum(g.open for g in groups) + sum(1 for b in singles if b.state == "open")
    half = sum(g.half_open for g in groups) + sum(1 for b in singles if b.state == "half-open")
    status = Status.CRIT if opened else Status.WARN if half else Status.OK
    word = f"{opened} OPEN" if opened else f"{half} HALF-OPEN" if half else "ALL CLOSED"
    detail = f"{opened} open · {half} half-open · {total} total"
    return _finish("breakers", "Breakers open", snapshot, (BreakersReading, BreakerReading),
                   str(opened), status, word, detail)


def orders_tile(snapshot: Snapshot) -> Tile:
    rs: list[OrdersReading] = snapshot.of_type(OrdersReading)
    if not rs:
        return _none("orders", "Stuck orders", snapshot)
    stuck = sum(r.stuck_count for r in rs)
    ages = [r.oldest_age_s for r in rs if r.oldest_age_s is not None]
    oldest = max(ages) if ages else None
    status = Status.OK if stuck == 0 else Status.WARN
    if stuck and any(r.oldest_age_s and r.oldest_age_s > 6 * r.stuck_after_s for r in rs):
        status = Status.CRIT
    word = "NONE STUCK" if not stuck else f"{stuck} STUCK"
    from widgets.common import fmt_duration

    detail = f"oldest {fmt_duration(oldest)}" if stuck else "all settling"
    return _finish("orders", "Stuck orders", snapshot, (OrdersReading,), str(stuck), status, word,
                   detail)


def chain_tile(snapshot: Snapshot) -> Tile:
    rs: list[ChainReading] = snapshot.of_type(ChainReading)
    if not rs:
        return _none("chain", "Chain head", snapshot)
    statuses, notes, heads = [], [], []
    for c in rs:
        eps = c.endpoints
        ok = [e for e in eps if e.ok]
        active = next((e for e in eps if e.active), ok[0] if ok else None)
        if active is not None and active.head is not None:
            heads.append(active.head)
        paused = any(k.paused for k in c.contracts)
        bad_id = any(e.chain_id_ok is False for e in eps)
        if not ok or paused or bad_id:
            statuses.append(Status.CRIT)
        elif len(ok) < len(eps) or c.disagreement:
            statuses.append(Status.WARN)
        else:
            statuses.append(Status.OK)
        if paused:
            notes.append(f"{c.chain} CONTRACT PAUSED")
        if bad_id:  # up, but another chain: not "down" (the fix is the endpoint's config, not a restart)
            wrong = next(e for e in eps if e.chain_id_ok is False)
            notes.append(f"{wrong.name or c.chain} on chain {wrong.chain_id}" if wrong.chain_id is not None
                         else f"{c.chain} WRONG CHAIN")
        if not ok:
            notes.append(f"{c.chain} no endpoint up")
        elif len(ok) < len(eps):
            notes.append(f"{c.chain} {len(ok)}/{len(eps)} endpoints")
        else:
            notes.append(f"{c.chain} via {active.name or active.url if active else '?'}")
    status = Status.worst(*statuses)
    wrong_chain = any(e.chain_id_ok is False for c in rs for e in c.endpoints)
    word = "PAUSED" if any("PAUSED" in n for n in notes) else "WRONG CHAIN" if (
        wrong_chain and all(any(e.ok for e in c.endpoints) for c in rs)) else {
        Status.OK: "IN SYNC", Status.WARN: "DEGRADED", Status.CRIT: "DOWN",
        Status.UNKNOWN: "UNKNOWN"}[status]
    value = str(max(heads)) if heads else "-"
    return _finish("chain", "Chain head", snapshot, (ChainReading,), value, status, word,
                   " · ".join(notes))


TILE_BUILDERS: tuple[Callable[[Snapshot], Tile], ...] = (
    services_tile, queues_tile, breakers_tile, orders_tile, chain_tile)


def build_tiles(snapshot: Snapshot) -> list[Tile]:
    out = []
    for build in TILE_BUILDERS:
        try:
            out.append(build(snapshot))
        except Exception:  # one broken tile must not blank the wall
            log.exception("kiosk tile %s failed", build.__name__)
            name = build.__name__.removesuffix("_tile")
            out.append(Tile(name, name.title(), "-", Status.UNKNOWN, "ERROR", "see the log"))
    return out


def last_update(snapshot: Snapshot | None) -> datetime | None:
    """When the newest good reading arrived (the snapshot time when there are no sources)."""
    if snapshot is None:
        return None
    goods = [st.last_good for st in snapshot.sources.values() if st.last_good is not None]
    if goods:
        return max(goods)
    return snapshot.at if not snapshot.sources else None


def digits_text(value: str) -> str:
    """What `Digits` can draw: unknown characters become spaces, '-' for nothing."""
    text = "".join(c if c in DIGITS_OK else " " for c in value).strip()
    return text or "-"


# --------------------------------------------------------------------------- widgets


class KioskTile(Vertical):
    """One big tile: title, big digits, symbol + word, a detail line."""

    def __init__(self, tile_id: str, title: str) -> None:
        super().__init__(id=f"tile-{tile_id}", classes="kiosk-tile -unknown")
        self.tile_id = tile_id
        self.border_title = title
        self.tile: Tile | None = None

    def compose(self) -> ComposeResult:
        yield Digits("-", classes="tile-value")
        yield Static("", classes="tile-word")
        yield Static("", classes="tile-detail")

    def show(self, tile: Tile) -> None:
        if tile == self.tile:
            return
        self.tile = tile
        self.border_title = tile.title
        self.query_one(Digits).update(digits_text(tile.value))
        # one row each, as wide as the tile: a new word or detail repaints without a layout pass
        self.query_one(".tile-word", Static).update(f"{tile.status.symbol} {tile.word}", layout=False)
        self.query_one(".tile-detail", Static).update(Text(tile.detail, overflow="ellipsis",
                                                           no_wrap=True), layout=False)
        for s in Status:
            self.set_class(s is tile.status, f"-{s.value}")
        self.set_class(tile.stale, "-stale")


class KioskLogLines(Message):
    """Log lines for the kiosk's log view (the screen subscribes to the log hub itself)."""

    def __init__(self, lines: list) -> None:
        super().__init__()
        self.lines = lines


SEV_CLASS = {Severity.P0: "crit", Severity.P1: "crit", Severity.P2: "warn", Severity.P3: "unknown"}
SEV_STATUS = {Severity.P0: Status.CRIT, Severity.P1: Status.CRIT, Severity.P2: Status.WARN,
              Severity.P3: Status.UNKNOWN}


class KioskScreen(Screen):
    """The wall display."""

    AUTO_FOCUS = None
    BINDINGS = [Binding("ctrl+q", "kiosk_quit", "Quit", id="kiosk_quit", priority=True)]

    DEFAULT_CSS = """
    KioskScreen { layout: vertical; background: $background; }
    KioskScreen #kiosk-bar { height: 1; background: $panel; }
    KioskScreen #kiosk-title { width: 1fr; text-style: bold; }
    KioskScreen #kiosk-updated { width: auto; padding: 0 1; }
    KioskScreen #kiosk-updated.-stale { background: $status-crit; color: $background; text-style: bold; }
    KioskScreen #kiosk-clock { width: auto; padding: 0 1; text-style: bold; }
    KioskScreen #kiosk-alarm { height: 1; display: none; text-style: bold; padding: 0 1;
                               color: $status-crit; }
    KioskScreen #kiosk-alarm.-on { display: block; }
    KioskScreen #kiosk-alarm.-flash { background: $status-crit; color: $background; }
    KioskScreen #kiosk-tiles { height: 9; }
    KioskScreen .kiosk-tile { width: 1fr; height: 9; border: heavy $status-unknown;
                              border-title-style: bold; padding: 0 1; }
    KioskScreen .kiosk-tile.-ok { border: heavy $status-ok; }
    KioskScreen .kiosk-tile.-warn { border: heavy $status-warn; }
    KioskScreen .kiosk-tile.-crit { border: heavy $status-crit; }
    KioskScreen .kiosk-tile.-stale { border: dashed $status-unknown; }
    KioskScreen .tile-value { width: 1fr; height: 3; text-style: bold; }
    KioskScreen .tile-word { height: 1; text-style: bold; }
    KioskScreen .kiosk-tile.-ok .tile-word, KioskScreen .kiosk-tile.-ok .tile-value { color: $status-ok; }
    KioskScreen .kiosk-tile.-warn .tile-word, KioskScreen .kiosk-tile.-warn .tile-value { color: $status-warn; }
    KioskScreen .kiosk-tile.-crit .tile-word, KioskScreen .kiosk-tile.-crit .tile-value { color: $status-crit; }
    KioskScreen .kiosk-tile.-unknown .tile-word, KioskScreen .kiosk-tile.-unknown .tile-value { color: $status-unknown; }
    KioskScreen .tile-detail { height: 1; color: $text-muted; }
    KioskScreen #kiosk-body { height: 1fr; }
    KioskScreen #kiosk-left { width: 2fr; }
    KioskScreen #kiosk-findings { height: 1fr; border: round $panel-lighten-2; padding: 0 1; }
    KioskScreen #kiosk-incident { height: 3; border: round $panel-lighten-2; padding: 0 1; }
    KioskScreen #kiosk-incident.-crit { border: heavy $status-crit; }
    KioskScreen #kiosk-views { width: 3fr; }
    KioskScreen .kiosk-view { height: 1fr; border: round $panel-lighten-2; }
    """

    def __init__(self, engine: EngineLike | None = None, *, config: Any = None, cycle_s: float | None = None,
                 bell: bool | None = None, refresh_s: float | None = None,
                 clock: Callable[[], datetime] | None = None, tick_s: float = 1.0,
                 views: Sequence[str] = CYCLE_VIEWS) -> None:
        super().__init__(id="kiosk")
        self._engine = engine
        self._config = config
        # None: the app's `kiosk_cycle` / `kiosk_bell` (set from --cycle / --bell), else defaults
        self._cycle_arg = cycle_s
        self._bell_arg = bell
        self.cycle_s = DEFAULT_CYCLE_S if cycle_s is None else float(cycle_s)
        self.bell = bool(bell)
        self._cycle_timer: Timer | None = None
        self._swap_lock = asyncio.Lock()
        self._swaps: set[asyncio.Task] = set()
        self._pane: Widget | None = None
        self._log_unsubscribe: Callable[[], Any] | None = None
        self._refresh_s = refresh_s
        self._clock = clock
        self.tick_s = tick_s
        self.wanted_views = tuple(views)
        self.view_ids: list[str] = []
        self.current_view = ""
        self.snapshot: Snapshot | None = None
        self.mounted_at: datetime | None = None
        self.alarms = 0  # how many times the alarm went off
        self.alarm_text = ""
        self._alarm_keys: set[str] = set()
        self._flash_until: datetime | None = None
        self._unsubscribe: Callable[[], Any] | None = None
        self._shown_findings: tuple | None = None  # None: never drawn ("NO FINDINGS" is a drawing too)
        # live snapshots: at most one apply a second, a change of state at once (as the dashboard)
        from tui.screens.dashboard import SnapshotThrottle

        self._throttle = SnapshotThrottle(self, lambda snap: self.apply(snap), name="kiosk-apply",
                                          ready=lambda: self.is_attached)
        self._texts: dict[str, tuple] = {}  # the status bar's texts as last put (repaint on change only)

    # ------------------------------------------------------------------ context

    @property
    def engine(self) -> EngineLike | None:
        return self._engine if self._engine is not None else getattr(self.app, "engine", None)

    @property
    def config(self) -> Any:
        if self._config is not None:
            return self._config
        engine = self.engine
        return getattr(self.app, "config", None) or (engine.config if engine is not None else None)

    @property
    def refresh_s(self) -> float:
        if self._refresh_s is not None:
            return float(self._refresh_s)
        section = getattr(self.config, "warroom", None)
        value = getattr(section, "refresh", None) if section is not None else None
        try:
            return float(value) if value else 2.0
        except (TypeError, ValueError):
            return 2.0

    def now(self) -> datetime:
        clock = self._clock or getattr(self.app, "clock", None)
        if callable(clock):
            try:
                value = clock()
                if isinstance(value, datetime):
                    return value
            except Exception:
                pass
        return datetime.now(UTC)

    # ------------------------------------------------------------------ compose

    def compose(self) -> ComposeResult:
        with Horizontal(id="kiosk-bar"):
            yield Static(self._title(), id="kiosk-title")
            yield Static("", id="kiosk-updated")
            yield Static("", id="kiosk-clock")
        yield Static("", id="kiosk-alarm")
        with Horizontal(id="kiosk-tiles"):
            for build in TILE_BUILDERS:
                name = build.__name__.removesuffix("_tile")
                yield KioskTile(name, name.title())
        with Horizontal(id="kiosk-body"):
            with Vertical(id="kiosk-left"):
                yield Static("", id="kiosk-incident")
                yield Static("", id="kiosk-findings")
            yield Vertical(id="kiosk-views")

    def _title(self) -> str:
        sec = getattr(self.config, "warroom", None)
        name = getattr(sec, "name", None) or "warroom"
        env = getattr(sec, "environment", None) or ""
        return f" {name}" + (f" · {env}" if env else "") + " · KIOSK · READ-ONLY"

    def _view_classes(self) -> dict[str, tuple[str, type[Widget]]]:
        from tui.screens.dashboard import PANES, pane_class

        specs = {p.id: p for p in PANES}
        out = {}
        for view in self.wanted_views:
            spec = specs.get(view)
            if spec is None:
                continue
            cls = pane_class(spec)
            if cls is not None:
                out[view] = (spec.title, cls)
        return out

    def _build_view(self, view: str) -> Widget | None:
        title, cls = self._view_cls[view]
        try:
            pane = cls()
        except Exception:
            log.exception("kiosk view %s failed to build", view)
            return None
        pane.id = f"view-{view}"
        pane.border_title = title
        pane.add_class("pane", "kiosk-view")
        return pane

    async def on_mount(self) -> None:
        self.mounted_at = self.now()
        self._view_cls = self._view_classes()
        self.view_ids = list(self._view_cls)
        if self._cycle_arg is None:
            self.cycle_s = float(getattr(self.app, "kiosk_cycle", None) or DEFAULT_CYCLE_S)
        if self._bell_arg is None:
            self.bell = bool(getattr(self.app, "kiosk_bell", False))
        _unfocusable(self)
        self.set_focus(None)
        engine = self.engine
        if engine is not None:
            self._unsubscribe = engine.monitor.subscribe(self._on_monitor_snapshot)
            self.apply(engine.monitor.snapshot)
        else:
            self.render_status()
        if self.tick_s > 0:  # on the wall clock's second, with the snapshots and the tail (on_beat)
            self.ticker: BeatCall | BeatTicker
            if self.tick_s == BEAT:  # on the app's beat, in the frame of the other repaints
                self.ticker = Beat.of(self).each(self, self.tick)
            else:
                ticker = self.ticker = BeatTicker(self, self.tick_s, self.tick, name="kiosk-tick")
                ticker.start()
        logs = engine.logs if engine is not None else None
        if logs is not None and "logs" in self.view_ids:
            self._log_unsubscribe = logs.subscribe(self._on_log_lines)
        if self.view_ids:
            await self.show_view(self.view_ids[0])
        self.set_cycle(self.cycle_s)

    def set_cycle(self, seconds: float) -> None:
        """Cycle the detail views every `seconds` (0: never)."""
        self.cycle_s = float(seconds)
        if self._cycle_timer is not None:
            self._cycle_timer.stop()
            self._cycle_timer = None
        if self.cycle_s > 0 and len(self.view_ids) > 1:
            self._cycle_timer = self.set_interval(self.cycle_s, self.next_view)

    def _on_log_lines(self, lines) -> None:
        self.post_message(KioskLogLines(list(lines)))

    def on_kiosk_log_lines(self, message: KioskLogLines) -> None:
        message.stop()
        self.add_log_lines(message.lines)

    def on_descendant_focus(self, _event) -> None:
        self.set_focus(None)  # nothing on a wall display holds focus (no cursor, no keys)

    def on_unmount(self) -> None:
        for undo in (self._unsubscribe, self._log_unsubscribe):
            if undo is not None:
                undo()
        self._unsubscribe = self._log_unsubscribe = None

    # ------------------------------------------------------------------ data in

    def _on_monitor_snapshot(self, snapshot: Snapshot) -> None:
        self.post_message(SnapshotArrived(snapshot))

    def on_snapshot_arrived(self, message: SnapshotArrived) -> None:
        self.offer(message.snapshot)

    def offer(self, snapshot: Snapshot) -> None:
        """A live snapshot: applied now, or the newest one at the end of the second; a change
        of state at once (tui.screens.dashboard.SnapshotThrottle, as the dashboard does)."""
        self._throttle.offer(snapshot)

    def _put(self, widget_id: str, content: str | Text, *, auto_width: bool) -> Static:
        """Update a status-bar Static only when its text changed; a layout pass only when an
        auto-width one changes width (a clock tick or "updated 3s ago" repaints in place)."""
        text = content if isinstance(content, Text) else Text(content)
        sig = (text.plain, tuple((sp.start, sp.end, str(sp.style)) for sp in text.spans))
        widget = self.query_one(f"#{widget_id}", Static)
        old = self._texts.get(widget_id)
        if old != sig:
            self._texts[widget_id] = sig
            layout = auto_width and (old is None or cell_len(old[0]) != cell_len(sig[0]))
            widget.update(content, layout=layout)
        return widget

    def apply(self, snapshot: Snapshot) -> None:
        """Show a snapshot (the app's DashboardScreen contract)."""
        self.snapshot = snapshot
        with self.app.batch_update():
            for tile in build_tiles(snapshot):
                try:
                    self.query_one(f"#tile-{tile.id}", KioskTile).show(tile)
                except Exception:
                    log.exception("kiosk tile %s", tile.id)
            self._show_findings(snapshot.findings)
            self._check_alarm(snapshot.findings)
            if self.current_view:
                self._show_view_data(self.current_view)
            self.render_status()

    def add_log_lines(self, lines) -> None:
        if self.current_view != "logs":
            return
        pane = self._view("logs")
        add = getattr(pane, "add_lines", None)
        if add is not None:
            add(lines)

    def focused_pane(self) -> None:  # the app's DashboardScreen contract: nothing is focused
        return None

    def show_pane(self, pane_id: str) -> None:
        if pane_id in self.view_ids:
            self.call_later(self.show_view, pane_id)

    # ------------------------------------------------------------------ views

    def _view(self, view: str) -> Widget | None:
        # a direct reference, never query_one: its per-screen cache would keep every
        # removed pane alive (keys change with each DOM generation)
        return self._pane if view == self.current_view else None

    async def show_view(self, view: str) -> None:
        """Show one detail view. The pane is built fresh each time and the previous one
        removed: one live pane at a time, and nothing a pane caches or accumulates can
        grow over days of cycling."""
        if view not in self.view_ids or not self.is_attached or getattr(self.app, "_quitting", False):
            return
        # The swap runs in its own task, shielded: it is usually awaited by the cycle timer's
        # task, and stopping that timer (set_cycle, quitting) cancels it; a cancelled
        # remove_children would cancel the old pane's own task halfway through its prune,
        # and Textual's shutdown then fails on it (CancelledError).
        task = asyncio.get_running_loop().create_task(self._locked_swap(view))
        self._swaps.add(task)
        task.add_done_callback(self._swaps.discard)
        await asyncio.shield(task)

    async def _locked_swap(self, view: str) -> None:
        async with self._swap_lock:  # one swap at a time
            if not getattr(self.app, "_quitting", False) and self.is_attached:
                await self._swap_view(view)

    async def quiesce(self) -> None:
        """Before the app closes its screens: stop cycling and let a view swap in flight finish."""
        self.set_cycle(0)
        if self._swaps:
            await asyncio.gather(*list(self._swaps), return_exceptions=True)

    async def _swap_view(self, view: str) -> None:
        if view == self.current_view and self._pane is not None and self._pane.is_attached:
            self._show_view_data(view)  # already shown: a second pane would repeat its id
            return
        box = self.query_one("#kiosk-views", Vertical)
        old = list(box.children)
        pane = self._build_view(view)
        self.current_view = view
        self._pane = pane
        if pane is not None:
            await box.mount(pane)
            _unfocusable(pane)
            self.set_focus(None)
        if old:
            # Panes subscribe to the app's theme signal, whose WeakKeyDictionary value (a bound
            # method) keeps the key alive: unsubscribed, or every removed pane leaks for good.
            nodes = [n for o in old for n in (o, *o.query("*"))]
            for node in nodes:
                self.app.theme_changed_signal.unsubscribe(node)
            await box.remove_children(old)
            # A pane that watches an app reactive (`self.watch(self.app, "theme", ...)`, as the
            # log tail does) leaves (node, callback) in the app's watcher list, which Textual
            # prunes only when that reactive next changes: on a wall display, never. Each
            # removed pane (a log tail with its rows and rendered lines) would stay alive.
            drop_watchers((self.app, self), nodes)
            for node in nodes:
                # Textual 8.2.8 memoises StylesCache.get_inner_outer with a class-level
                # lru_cache(1024) whose keys hold each widget's StylesCache, and with it every
                # line it rendered: empty them, or ~1024 removed widgets' lines stay alive.
                cache = widget_styles_cache(node)
                if cache is not None and callable(getattr(cache, "clear", None)):
                    cache.clear()
            # ...and that lru_cache itself: up to 1024 entries (two styles and a removed
            # widget's StylesCache each) fill up over ~20 min of cycling; live widgets
            # recompute theirs once on their next render.
            _clear_inner_outer()  # textual_compat.clear_styles_cache, guarded
        self._show_view_data(view)
        engine = self.engine
        if view == "logs" and engine is not None and engine.logs is not None:
            self.add_log_lines(engine.logs.recent(200))

    def _show_view_data(self, view: str) -> None:
        pane = self._view(view)
        show = getattr(pane, "show", None)
        if show is not None and self.snapshot is not None:
            try:
                show(self.snapshot)
            except Exception:
                log.exception("kiosk view %s failed to show", view)

    async def next_view(self) -> None:
        if not self.view_ids:
            return
        i = self.view_ids.index(self.current_view) if self.current_view in self.view_ids else -1
        await self.show_view(self.view_ids[(i + 1) % len(self.view_ids)])

    # ------------------------------------------------------------------ findings / alarm

    def _show_findings(self, findings: Sequence[Finding]) -> None:
        now = self.now()
        key = tuple((f.key, f.severity, f.summary, int((now - f.since).total_seconds() // 60))
                    for f in findings[:30])
        if key == self._shown_findings:
            return
        self._shown_findings = key
        from widgets.common import fmt_coarse

        text = Text()
        if not findings:
            text.append(f"{Status.OK.symbol} NO FINDINGS", style="bold")
            text.stylize(self._style(Status.OK))
        for f in findings[:30]:
            st = SEV_STATUS[f.severity]
            text.append(f"{SEVERITY_SYMBOL[f.severity]} {f.severity.label} ", style=f"bold {self._style(st)}")
            text.append(f.summary)
            text.append(f"  ({fmt_coarse((now - f.since).total_seconds())})\n", style="dim")
        box = self.query_one("#kiosk-findings", Static)
        box.border_title = f"Findings ({len(findings)})"
        box.update(text)

    def _style(self, status: Status) -> str:
        try:
            return self.app.theme_variables.get(f"status-{status.value}", "")
        except Exception:
            return ""

    def _check_alarm(self, findings: Sequence[Finding]) -> None:
        urgent = [f for f in findings if f.severity <= Severity.P1]
        keys = {f.key for f in urgent}
        new = [f for f in urgent if f.key not in self._alarm_keys]
        self._alarm_keys = keys
        if new:
            self.alarms += 1
            worst = min(new, key=Finding.sort_key)
            more = f" (+{len(new) - 1} more)" if len(new) > 1 else ""
            self.alarm_text = f"{Status.CRIT.symbol} {worst.severity.label} NEW: {worst.summary}{more}"
            self._flash_until = self.now() + timedelta(seconds=FLASH_S)
            if self.bell:
                self.app.bell()
        elif not urgent:
            self.alarm_text = ""
            self._flash_until = None
        self._render_alarm()

    def _render_alarm(self) -> None:
        banner = self.query_one("#kiosk-alarm", Static)
        on = bool(self.alarm_text)
        banner.set_class(on, "-on")
        if on:
            banner.update(self.alarm_text)
        flashing = on and self._flash_until is not None and self.now() < self._flash_until
        # toggles every tick while flashing, then stays steady (still shown while urgent)
        banner.set_class(flashing and not banner.has_class("-flash"), "-flash")

    @property
    def flashing(self) -> bool:
        return self._flash_until is not None and self.now() < self._flash_until

    # ------------------------------------------------------------------ clock / staleness

    def tick(self) -> None:
        self.render_status()
        if self.alarm_text:
            self._render_alarm()

    def updated_age(self) -> float | None:
        at = last_update(self.snapshot) or None
        if at is None:
            return None
        return max(0.0, (self.now() - at).total_seconds())

    @property
    def stale(self) -> bool:
        age = self.updated_age()
        if age is None:  # nothing ever arrived: stale once we waited as long
            if self.mounted_at is None:
                return False
            age = (self.now() - self.mounted_at).total_seconds()
        return age > STALE_FACTOR * self.refresh_s

    def render_status(self) -> None:
        from widgets.common import fmt_duration

        now = self.now()
        age = self.updated_age()
        stale = self.stale
        if age is None:
            text = "waiting for the first poll"
        else:
            text = f"updated {fmt_duration(age)} ago"
        if stale:
            text = f"{Status.CRIT.symbol} STALE · {text}"
        audit = getattr(self.app, "audit_problem", None)  # the ops box's state dir full, say
        if audit:
            from widgets.header import audit_badge

            text = f"{text} · {Status.CRIT.symbol} {audit_badge(audit)}"
        updated = self._put("kiosk-updated", text, auto_width=True)
        updated.set_class(stale or bool(audit), "-stale")
        self._put("kiosk-clock", now.astimezone(UTC).strftime("%H:%M:%S UTC"), auto_width=True)
        self._render_incident(now)

    def _render_incident(self, now: datetime) -> None:
        incident = open_incident(self.engine)
        if incident is None:
            box = self._put("kiosk-incident", f"{Status.OK.symbol} no open incident", auto_width=False)
            box.set_class(False, "-crit")
            return
        from widgets.header import sla_text

        sev = getattr(incident, "severity", None)
        label = getattr(sev, "label", None) or str(sev or "?")
        title = getattr(incident, "title", "") or ""
        ident = getattr(incident, "id", "") or ""
        sla, st = sla_text(getattr(incident, "sla_due", None), now)
        text = Text()
        text.append(f"{Status.CRIT.symbol} INCIDENT {label} {ident} ", style="bold")
        text.append(title)
        if sla:
            text.append(f"  {st.symbol} {sla}", style=f"bold {self._style(st)}")
        box = self._put("kiosk-incident", text, auto_width=False)
        box.set_class(True, "-crit")

    # ------------------------------------------------------------------ keys

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return kiosk_allows(action)  # no focus moves, no copy: only quit

    async def action_kiosk_quit(self) -> None:
        self.app.exit(0)


def _unfocusable(root: Widget) -> None:
    """A wall display has no cursor and takes no focus."""
    for node in [root, *root.query("*")]:
        if isinstance(node, DataTable):
            node.show_cursor = False
        if isinstance(node, Widget):
            node.can_focus = False


def _clear_inner_outer() -> None:
    try:
        clear_styles_cache()
    except Exception:  # a Textual without it: nothing to clear
        log.debug("StylesCache.get_inner_outer not cleared", exc_info=True)


def open_incident(engine: EngineLike | None) -> Any:
    """The open incident from `engine.incidents` (hook; None while incidents are not built)."""
    incidents = engine.incidents if engine is not None else None
    if incidents is None:
        return None
    for name in ("current", "open_incident", "active"):
        fn = getattr(incidents, name, None)
        if callable(fn):
            try:
                value = fn()
            except Exception:
                log.exception("incident lookup failed")
                return None
            if hasattr(value, "__await__"):  # an async lookup cannot run here; ignore it
                value.close() if hasattr(value, "close") else None
                return None
            return value
    return None
