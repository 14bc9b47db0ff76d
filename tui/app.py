"""The warroom console: a small App that wires an injected engine to the screens.

The engine (monitor, actions, config, logs) is passed in; nothing here does I/O.
Snapshots arrive from the monitor on the loop, travel as a collapsing message and
are applied in one batch; nothing redraws under a modal or in a hidden pane.

Startup: given `engine_factory` instead of an engine (the `warroom` command), the first
frame is the dashboard's shell (header, pane borders and titles saying "connecting…",
footer); the panes are built and the engine is built (in a thread) after that frame,
then the engine is wired and started. Shutdown: the engine is unsubscribed and stopped
before the screens close, and snapshot/log/incident messages that are still queued
are dropped once the app is closing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from textual.app import App

import themes
from backends.model import Finding, Snapshot
from tui import heap
from tui.actionflow import ActionFlow
from tui.bindings import APP_BINDINGS
from tui.commands import WarroomCommands
from tui.incidentflow import IncidentFlow
from tui.messages import IncidentChanged, LogLinesArrived, SnapshotArrived
from tui.screens.dashboard import DashboardScreen, layout_for
from widgets.header import StatusHeader

log = logging.getLogger(__name__)


def conf(config: Any, section: str, key: str, default: Any = None) -> Any:
    """Read `config.section.key` whether the config is an object or a mapping."""
    if config is None:
        return default
    sec = config.get(section) if isinstance(config, Mapping) else getattr(config, section, None)
    if sec is None:
        return default
    val = sec.get(key, default) if isinstance(sec, Mapping) else getattr(sec, key, default)
    return default if val is None else val


class WarroomApp(IncidentFlow, ActionFlow, App[int]):
    TITLE = "warroom"
    CSS_PATH = str(themes.LAYOUT_CSS)
    BINDINGS = APP_BINDINGS
    COMMANDS = App.COMMANDS | {WarroomCommands}

    def __init__(self, engine: Any, *, config: Any = None, read_only: bool | None = None,
                 kiosk: bool = False, theme: str | None = None,
                 clock: Callable[[], datetime] | None = None,
                 keymap: Mapping[str, str] | None = None,
                 engine_factory: Callable[[], Any] | None = None) -> None:
        super().__init__()
        self.engine = engine
        # built in a thread after the first frame when no engine is given (see _boot)
        self._engine_factory = engine_factory if engine is None else None
        self.startup_error: BaseException | None = None  # the factory's error; the app exits with 2
        self._quitting = False  # set on shutdown: queued snapshots/logs/incidents are dropped
        self.heap_trim_s = heap.TRIM_EVERY_S
        self.heap_trims = 0  # trims done (tests, the soak benchmark)
        self.started_hooks: list[Callable[[], Any]] = []  # called once the engine is wired, before it starts
        self.config = config if config is not None else getattr(engine, "config", None)
        actions = getattr(engine, "actions", None)
        self.read_only = bool(read_only or kiosk or conf(self.config, "warroom", "read_only", False)
                              or getattr(actions, "read_only", False))
        if actions is not None and self.read_only:
            actions.read_only = True  # the engine refuses too, not only the UI
        self.kiosk = kiosk
        self.clock = clock or (lambda: datetime.now(UTC))
        self.theme_name = themes.resolve_name(theme or conf(self.config, "warroom", "theme", None))
        keys = _config_keys(self.config)
        keys.update(keymap or {})
        self.user_keymap: dict[str, str] = keys
        self.snapshot: Snapshot | None = None
        self.custom_bindings: list = []  # `[[actions]] key`, bound once the engine is there
        self._unsubscribe: list[Callable[[], Any]] = []
        self.dashboard: DashboardScreen | None = None
        for t in themes.all_themes():  # registered and chosen before the first style pass
            self.register_theme(t)
        self.theme = self.theme_name

    # ------------------------------------------------------------------ lifecycle

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return themes.variable_defaults()

    async def on_mount(self) -> None:
        if self.user_keymap:
            self.set_keymap(self.user_keymap)
        deferred = self.engine is None and self._engine_factory is not None
        # deferred: the first frame is the shell; the panes are built after it (see _boot)
        self.dashboard = DashboardScreen(self._make_header(), mode=layout_for(*self.size),
                                         panes=not deferred)
        await self.push_screen(self.dashboard)
        if deferred:
            return
        self._bind_engine_keys()
        if self.kiosk:  # the wall display goes on top; the dashboard never redraws under it
            await self._push_kiosk()
        self._wire_engine()

    async def on_ready(self) -> None:
        """After the first frame: build what was deferred, start polling (first polls never
        delay the first paint)."""
        if self.engine is None and self._engine_factory is not None:
            # once the first frame is written, not while it is
            self.call_after_refresh(self._start_boot)
            return
        await self._start_engine()

    def _start_boot(self) -> None:
        if not self._quitting:
            self.run_worker(self._boot(), name="boot", group="boot")

    async def _boot(self) -> None:
        """The deferred start: the engine is built in a thread while the panes mount."""
        factory, self._engine_factory = self._engine_factory, None
        building = asyncio.get_running_loop().run_in_executor(None, factory)
        if self.dashboard is not None:
            await self.dashboard.mount_panes()
        try:
            engine = await building
        except Exception as exc:  # printed by the command after the app has closed
            self.startup_error = exc
            self.exit(return_code=2)
            return
        if self._quitting:  # quit before the engine was ready: nothing was started
            return
        await self._attach_engine(engine)

    async def _attach_engine(self, engine: Any) -> None:
        self.engine = engine
        if self.config is None:
            self.config = getattr(engine, "config", None)
        actions = getattr(engine, "actions", None)
        if actions is not None and self.read_only:
            actions.read_only = True
        elif getattr(actions, "read_only", False):
            self.read_only = True
        if self.dashboard is not None:
            header = self.dashboard.header
            operator = self._operator()
            if (header.operator, header.read_only) != (operator, self.read_only):
                header.operator = operator
                header.set_read_only(self.read_only)
        self._bind_engine_keys()
        if self.kiosk:
            await self._push_kiosk()
        self._wire_engine()
        self.refresh_bindings()  # the verbs the engine's actions offer appear in the footer
        await self._start_engine()

    def _bind_engine_keys(self) -> None:
        """Keys that exist once the engine does: `[[actions]] key`; then the [keys] check."""
        if not self.kiosk:
            self.bind_custom_actions()
        self._check_keymap()
        if self.custom_bindings:
            self.refresh_bindings()

    def _check_keymap(self) -> None:
        if self.dashboard is None:
            return
        known = self.dashboard.binding_ids() | {b.id for b in self.custom_bindings if b.id}
        unknown = sorted(set(self.user_keymap) - known)
        if unknown:
            self.notify(f"[keys]: no binding with id {', '.join(unknown)} (see ? for the ids)",
                        title="config", severity="warning", timeout=10)

    async def _push_kiosk(self) -> None:
        from tui.screens.kiosk import KioskScreen

        await self.push_screen(KioskScreen(clock=self.clock))

    def _wire_engine(self) -> None:
        """Subscribe to the engine's monitor, log hub and incidents; show the first snapshot."""
        monitor = getattr(self.engine, "monitor", None)
        if monitor is not None:
            self._unsubscribe.append(monitor.subscribe(self._on_monitor_snapshot))
            self.post_message(SnapshotArrived(monitor.snapshot))  # configured sources: pending
        logs = getattr(self.engine, "logs", None)
        if logs is not None and callable(getattr(logs, "subscribe", None)):
            self._unsubscribe.append(logs.subscribe(self._on_log_lines))
        buffer = getattr(self.engine, "log_buffer", None)
        pane = self.dashboard.pane("logs") if self.dashboard is not None else None
        if isinstance(buffer, int) and buffer > 0 and hasattr(pane, "max_lines"):
            pane.max_lines = buffer  # [warroom] log_buffer (the pane is built before the engine)
        incidents = getattr(self.engine, "incidents", None)
        if incidents is not None and callable(getattr(incidents, "subscribe", None)):
            self._unsubscribe.append(incidents.subscribe(self._on_incident))
        self.wire_playbook_hints()

    async def _start_engine(self) -> None:
        started, self.started_hooks = self.started_hooks, []
        for hook in started:
            hook()
        if self._quitting:
            return
        logs = getattr(self.engine, "logs", None)
        if logs is not None and callable(getattr(logs, "recent", None)) and self.dashboard is not None:
            self.dashboard.add_log_lines(logs.recent(500))
        start = getattr(self.engine, "start", None)
        monitor = getattr(self.engine, "monitor", None)
        if callable(start):
            await start()
        elif monitor is not None and not getattr(monitor, "running", False):
            await monitor.start()
        if heap.available() and self.heap_trim_s > 0:  # a console left running for days
            self.set_interval(self.heap_trim_s, self._trim_heap, name="heap-trim")

    async def _trim_heap(self) -> None:
        """Give the C heap's free pages back to the OS (see tui/heap.py), off the loop."""
        if not self._quitting:
            await asyncio.to_thread(heap.trim)
            self.heap_trims += 1

    async def _shutdown(self) -> None:
        """Textual's shutdown closes the screens, then unmounts the app. The engine stops
        first, so no snapshot, log line or incident reaches a closing screen."""
        self._quitting = True
        self.workers.cancel_group(self, "boot")
        with contextlib.suppress(Exception):
            await self.stop_engine()
        for screen in list(self.screen_stack):  # e.g. the kiosk: stop cycling views first
            quiesce = getattr(screen, "quiesce", None)
            if callable(quiesce):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(quiesce(), 2.0)
        await super()._shutdown()

    async def on_unmount(self) -> None:
        await self.stop_engine()

    def exit(self, result: int | None = None, return_code: int = 0, message: Any = None) -> None:
        """Quit: from now on nothing the engine sends is shown (the screens are about to close)."""
        self._quitting = True
        self._unsubscribe_all()
        super().exit(result, return_code, message)

    def _unsubscribe_all(self) -> None:
        for undo in self._unsubscribe:
            if callable(undo):
                with contextlib.suppress(Exception):
                    undo()
        self._unsubscribe.clear()

    async def stop_engine(self) -> None:
        self._unsubscribe_all()
        stop = getattr(self.engine, "stop", None)
        monitor = getattr(self.engine, "monitor", None)
        if callable(stop):
            await stop()  # the engine also closes pools, clients and the log hub
        elif monitor is not None and getattr(monitor, "running", False):
            await monitor.stop()

    def _operator(self) -> str:
        operator = conf(self.config, "warroom", "operator", "")
        if not operator and self.engine is None and self._engine_factory is not None:
            from backends.audit import operator_identity  # what the engine's actions will use

            operator = operator_identity()
        return str(operator or getattr(getattr(self.engine, "actions", None), "operator", "")
                   or os.environ.get("USER", "?"))

    def _make_header(self) -> StatusHeader:
        cfg = self.config
        return StatusHeader(name=str(conf(cfg, "warroom", "name", "warroom")),
                            environment=str(conf(cfg, "warroom", "environment", "")),
                            operator=self._operator(), read_only=self.read_only, kiosk=self.kiosk,
                            id="header")

    # ------------------------------------------------------------------ data in

    def _on_monitor_snapshot(self, snapshot: Snapshot) -> None:
        if not self._quitting:
            self.post_message(SnapshotArrived(snapshot))

    def _on_log_lines(self, lines) -> None:
        if not self._quitting:
            self.post_message(LogLinesArrived(list(lines)))

    def _on_incident(self, _incident: Any) -> None:
        if not self._quitting:
            self.post_message(IncidentChanged())

    def _dashboard_live(self) -> DashboardScreen | None:
        """The dashboard while it may be updated (None once the app is closing)."""
        dashboard = self.dashboard
        if self._quitting or dashboard is None or not dashboard.is_attached:
            return None
        return dashboard

    def on_snapshot_arrived(self, message: SnapshotArrived) -> None:
        if self._quitting:
            return
        self.snapshot = message.snapshot
        dashboard = self._dashboard_live()
        stack = self.screen_stack
        if dashboard is not None and stack and stack[-1] is dashboard:
            dashboard.apply(message.snapshot)
        # else: the dashboard applies the newest snapshot when it is shown again

    def on_incident_changed(self, _message: IncidentChanged) -> None:
        dashboard = self._dashboard_live()
        if dashboard is not None:
            dashboard.show_incident()

    def on_log_lines_arrived(self, message: LogLinesArrived) -> None:
        dashboard = self._dashboard_live()
        if dashboard is not None and not self.kiosk:  # the kiosk's log view subscribes itself
            dashboard.add_log_lines(message.lines)

    # ------------------------------------------------------------------ actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.kiosk:  # no input but quit (ctrl+q) on a wall display
            from tui.screens.kiosk import kiosk_allows

            return kiosk_allows(action)
        if action == "verb" and parameters == ("incident",) and self._incidents() is not None:
            return True  # the incident screen; read-only may look, the engine refuses changes
        if action == "verb":
            return bool(parameters) and bool(self.actions_for_verb(str(parameters[0])))
        if action == "custom_action":  # `[[actions]] key`: hidden when the action may not run
            return bool(parameters) and self.custom_action_allowed(str(parameters[0]))
        return True

    # ------------------------------------------------------------------ simple keys

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        self.push_screen(HelpScreen())

    def action_history(self) -> None:
        from tui.screens.history import HistoryScreen

        self.push_screen(HistoryScreen(getattr(self.engine, "actions", None)))

    def action_redraw(self) -> None:
        self.refresh(repaint=True, layout=True)
        self.screen.refresh(repaint=True, layout=True)

    def action_refresh_all(self) -> None:
        monitor = getattr(self.engine, "monitor", None)
        if monitor is not None:
            monitor.refresh()
            self.notify("polling all sources now", timeout=2)

    def action_copy(self) -> None:
        pane = self.dashboard.focused_pane() if self.dashboard else None
        text = ""
        if callable(getattr(pane, "selected_text", None)):
            text = pane.selected_text() or ""
        if not text:
            self.notify("nothing selected to copy", severity="warning", timeout=2)
            return
        self.copy_to_clipboard(text)
        self.notify(f"copied: {text[:60]}", timeout=2)

    def open_detail(self, pane) -> None:

        item = pane.detail() if callable(getattr(pane, "detail", None)) else None
        if item is None:
            self.notify("nothing selected", severity="warning", timeout=2)
            return
        self.open_item(item)

    def open_item(self, item) -> None:
        from tui.screens.detail import DetailScreen

        if isinstance(item, Finding) and item.playbook:
            self.open_playbook(item)
            return

        self.push_screen(DetailScreen(item, self.engine))

    def go_to_pane(self, pane_id: str) -> None:
        if self.dashboard is not None and self.screen is self.dashboard:
            self.dashboard.show_pane(pane_id)


def _config_keys(config: Any) -> dict[str, str]:
    """The `[keys]` table: binding id -> "key[,key]"."""
    if config is None:
        return {}
    keys = config.get("keys") if isinstance(config, Mapping) else getattr(config, "keys", None)
    if keys is None:
        return {}
    if not isinstance(keys, Mapping):
        keys = getattr(keys, "__dict__", {}) or {}
    return {str(k): str(v) for k, v in keys.items() if v}
