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
from typing import Any, ClassVar

from textual.binding import BindingType

import themes
from backends.interface import EngineLike
from backends.model import Finding, Snapshot
from tui import heap
from tui.actionflow import ActionFlow
from tui.bindings import APP_BINDINGS
from tui.commands import WarroomCommands
from tui.incidentflow import IncidentFlow
from tui.messages import IncidentChanged, LogLinesArrived, SnapshotArrived
from tui.screens.dashboard import DashboardScreen, layout_for
from tui.textual_compat import CrashGuardApp, app_shutdown, install_sparse_frames
from widgets.header import StatusHeader

log = logging.getLogger(__name__)


AUDIT_CHECK_S = 2.0
AUDIT_CHECK_TIMEOUT_S = 5.0
CONFIG_CHECK_TIMEOUT_S = 5.0  # each live call of the meaning checks at start (backends.engine.semantic)


def conf(config: Any, section: str, key: str, default: Any = None) -> Any:
    """Read `config.section.key` whether the config is an object or a mapping."""
    if config is None:
        return default
    sec = config.get(section) if isinstance(config, Mapping) else getattr(config, section, None)
    if sec is None:
        return default
    val = sec.get(key, default) if isinstance(sec, Mapping) else getattr(sec, key, default)
    return default if val is None else val


class WarroomApp(IncidentFlow, ActionFlow, CrashGuardApp):
    TITLE = "warroom"
    CSS_PATH = str(themes.LAYOUT_CSS)
    BINDINGS: ClassVar[list[BindingType]] = list(APP_BINDINGS)
    COMMANDS = CrashGuardApp.COMMANDS | {WarroomCommands}
    # set by tui.cli from --bell / --cycle, read by tui.screens.kiosk (absent: its defaults)
    kiosk_bell: bool
    kiosk_cycle: float | None

    def __init__(self, engine: EngineLike | None, *, config: Any = None, read_only: bool | None = None,
                 kiosk: bool = False, theme: str | None = None,
                 clock: Callable[[], datetime] | None = None,
                 keymap: Mapping[str, str] | None = None,
                 engine_factory: Callable[[], EngineLike] | None = None) -> None:
        super().__init__()
        install_sparse_frames()  # a frame renders only the lines it shows (tui/textual_compat.py)
        self.engine: EngineLike | None = engine
        # built in a thread after the first frame when no engine is given (see _boot)
        self._engine_factory = engine_factory if engine is None else None
        self.startup_error: BaseException | None = None  # the factory's error; the app exits with 2
        self._quitting = False  # set on shutdown: queued snapshots/logs/incidents are dropped
        self.heap_trim_s = heap.TRIM_EVERY_S
        self.audit_check_s = AUDIT_CHECK_S  # how often the console looks whether the audit can be written
        self.audit_problem: str | None = None  # why it cannot (shown in the header), None when it can
        self.config_check_s = CONFIG_CHECK_TIMEOUT_S  # 0: no meaning checks of the config file at start
        self.config_problems: list[Any] | None = None  # what they found (backends.engine.semantic.Problem)
        self._audit_checking = False
        self.heap_trims = 0  # trims done (tests, the soak benchmark)
        self.started_hooks: list[Callable[[], Any]] = []  # called once the engine is wired, before it starts
        self.config = config if config is not None else (engine.config if engine is not None else None)
        actions = engine.actions if engine is not None else None
        self.read_only = bool(read_only or kiosk or conf(self.config, "warroom", "read_only", False)
                              or (actions is not None and actions.read_only))
        if actions is not None and self.read_only:
            actions.read_only = True  # the engine refuses too, not only the UI
        self.kiosk = kiosk
        self.clock = clock or (lambda: self.engine.clock.now() if self.engine is not None else datetime.now(UTC))
        self.theme_name = themes.resolve_name(theme or conf(self.config, "warroom", "theme", None))
        keys = _config_keys(self.config)
        keys.update(keymap or {})
        self.user_keymap: dict[str, str] = keys
        self.snapshot: Snapshot | None = None
        self.custom_bindings: list = []  # `[[actions]] key`, bound once the engine is there
        self._unsubscribe: list[Callable[[], Any]] = []
        self.dashboard: DashboardScreen | None = None
        self.failures: list[tuple[str, str]] = []  # (where, what) caught by report_failure
        self._failure_shown: dict[tuple[str, str], float] = {}
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
        self.enable_crash_guard()  # from here on nothing a screen, worker or callback raises ends the app
        from tui.watchdog import install as install_watchdog  # a stalled loop is logged and shown

        install_watchdog(self)
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
        if factory is None:
            return
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

    async def _attach_engine(self, engine: EngineLike) -> None:
        self.engine = engine
        if self.config is None:
            self.config = engine.config
        if self.read_only:
            engine.actions.read_only = True
        elif engine.actions.read_only:
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
        engine = self.engine
        if engine is None:
            return
        self._unsubscribe.append(engine.monitor.subscribe(self._on_monitor_snapshot))
        self.post_message(SnapshotArrived(engine.monitor.snapshot))  # configured sources: pending
        if engine.logs is not None:
            self._unsubscribe.append(engine.logs.subscribe(self._on_log_lines))
        from widgets.logs import LogTail

        pane = self.dashboard.pane("logs") if self.dashboard is not None else None
        if engine.log_buffer > 0 and isinstance(pane, LogTail):
            pane.max_lines = engine.log_buffer  # [warroom] log_buffer (the pane is built before the engine)
        if engine.incidents is not None:
            self._unsubscribe.append(engine.incidents.subscribe(self._on_incident))
        self.wire_playbook_hints()

    async def _start_engine(self) -> None:
        started, self.started_hooks = self.started_hooks, []
        for hook in started:
            hook()
        if self._quitting:
            return
        engine = self.engine
        if engine is None:
            return
        if engine.logs is not None and self.dashboard is not None:
            self.dashboard.add_log_lines(engine.logs.recent(500))
        await engine.start()
        from backends import codecache

        if codecache.installed() is not None:  # what this start compiled (the engine too), for the next
            asyncio.get_running_loop().run_in_executor(None, codecache.save)
        if heap.available() and self.heap_trim_s > 0:  # a console left running for days
            self.set_interval(self.heap_trim_s, self._trim_heap, name="heap-trim")
        if self.audit_check_s > 0:
            self.set_interval(self.audit_check_s, self.check_audit, name="audit-check")
            self.call_later(self.check_audit)
        if self.config_check_s > 0:
            self.run_worker(self.check_config_meaning(), name="config-check", group="config-check")

    async def check_config_meaning(self) -> None:
        """`warroom check --live` at start, off the loop (static checks in a thread, every live call
        with a timeout): an event not in the ABI, an id_encoding no recent event has, a program not
        on PATH, a channel apprise cannot load, a check path the live answer lacks. Only for a config
        read from a file; what is found is one notification (file:line: key: why)."""
        from backends.config import Config

        config = self.config
        if not isinstance(config, Config) or config.path is None:
            return
        from backends.engine.semantic import ERROR, NOTE, check_config

        try:
            problems = await asyncio.wait_for(check_config(config, live=True, budget=self.config_check_s),
                                              self.config_check_s * 4 + 5)
        except Exception as exc:  # noqa: BLE001 - a check that fails must not stop the console
            log.warning("console: config checks failed: %s", exc)
            return
        self.config_problems = problems
        shown = [p for p in problems if p.severity != NOTE]
        if not shown or self._quitting:
            return
        for p in shown:
            log.warning("config: %s", p.render())
        errors = sum(1 for p in shown if p.severity == ERROR)
        text = "\n".join(p.render() for p in shown[:6])
        if len(shown) > 6:
            text += f"\n... {len(shown) - 6} more: run warroom check --live"
        self.notify(text, title=f"config: {len(shown)} problem{'s' if len(shown) != 1 else ''}"
                                f" ({errors} error{'s' if errors != 1 else ''})",
                    severity="error" if errors else "warning", timeout=30, markup=False)

    async def check_audit(self) -> None:
        """Can the audit trail be written (disk full, read-only file system, permissions)?
        Looked at off the loop, never two looks at once; the header shows it while it lasts and
        the operator is told when it starts and ends: every action is refused meanwhile (its
        write-ahead intent cannot be written), so a key that does nothing is explained."""
        if self._quitting or self._audit_checking or self.engine is None:
            return
        audit = self.engine.audit
        look = audit.write_problem_async
        self._audit_checking = True
        try:
            try:
                problem = await asyncio.wait_for(look(), AUDIT_CHECK_TIMEOUT_S)
            except TimeoutError:
                problem = f"the audit's file system did not answer in {AUDIT_CHECK_TIMEOUT_S:g}s"
        finally:
            self._audit_checking = False
        if problem == self.audit_problem or self._quitting:
            return
        before, self.audit_problem = self.audit_problem, problem
        if self.dashboard is not None:
            self.dashboard.header.set_audit_problem(problem)
        path = audit.path
        if problem:
            log.error("console: the audit trail %s cannot be written: %s", path, problem)
            self.notify(f"The audit trail {path} cannot be written: {problem}.\nEvery action is refused "
                        "until it can: nothing runs without its audit entry.",
                        title="audit", severity="error", timeout=15, markup=False)
        elif before:
            log.warning("console: the audit trail %s can be written again", path)
            self.notify(f"The audit trail {path} can be written again; actions are allowed.",
                        title="audit", timeout=8, markup=False)

    async def _trim_heap(self) -> None:
        """Give the C heap's free pages back to the OS (see tui/heap.py), off the loop."""
        if not self._quitting:
            await asyncio.to_thread(heap.trim)
            self.heap_trims += 1

    def report_failure(self, error: BaseException, where: str) -> None:
        """The one place an exception of a screen, worker, timer, callback or message handler
        ends up once the console runs: logged with its traceback, shown in words (what
        failed; whether an action was running), audited, and the console goes on."""
        from backends.errors import describe_exception

        what = describe_exception(error)
        self.failures.append((where, what))
        del self.failures[:-50]
        log.error("console: %s failed: %s", where, what, exc_info=error)
        key = (where, type(error).__name__)
        now = asyncio.get_running_loop().time()
        if now - self._failure_shown.get(key, -1e9) < 30.0:
            return  # the same failure again (e.g. every snapshot): shown and audited already
        self._failure_shown[key] = now
        running = self._action_running()
        changed = ("an action was running: see its result in the history (h)" if running
                   else "no action was running, so nothing was changed")
        with contextlib.suppress(Exception):
            self.notify(f"{where}: {what}\n{changed}; the console goes on.", title="warroom caught an error",
                        severity="error", timeout=10, markup=False)
        if self.engine is not None:
            with contextlib.suppress(Exception):
                self.engine.audit.append_soon(action="console.error", target=where, result="error",
                                  summary=f"{where} failed: {what}; {changed}", error=what)

    def _action_running(self) -> bool:
        from tui.screens.action import ActionScreen

        return any(isinstance(s, ActionScreen) and s.executing() for s in self.screen_stack)

    async def _shutdown(self) -> None:
        """Textual's shutdown closes the screens, then unmounts the app. The engine stops
        first, so no snapshot, log line or incident reaches a closing screen."""
        self._quitting = True
        self.disable_crash_guard()
        self.workers.cancel_group(self, "boot")
        with contextlib.suppress(Exception):
            await self.stop_engine()
        for screen in list(self.screen_stack):  # e.g. the kiosk: stop cycling views first
            quiesce = getattr(screen, "quiesce", None)
            if callable(quiesce):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(quiesce(), 2.0)
        await app_shutdown(self)

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
        if self.engine is not None:
            await self.engine.stop()  # the engine also closes pools, clients and the log hub

    def _operator(self) -> str:
        operator = conf(self.config, "warroom", "operator", "")
        if not operator and self.engine is None and self._engine_factory is not None:
            from backends.engine.audit import (
                operator_identity,  # what the engine's actions will use
            )

            operator = operator_identity()
        return str(operator or (self.engine.actions.operator if self.engine is not None else "")
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

    def get_driver_class(self):
        from tui.termdiff import diffing_driver  # only the cells that changed reach the terminal

        return diffing_driver(super().get_driver_class())

    def on_snapshot_arrived(self, message: SnapshotArrived) -> None:
        if self._quitting:
            return
        self.snapshot = message.snapshot
        dashboard = self._dashboard_live()
        if dashboard is not None and self._dashboard_shown(dashboard):
            dashboard.offer(message.snapshot)  # at most 1 apply a second (issue 17)
        # else (a full screen over it, e.g. the kiosk): it applies the newest one when shown again

    def _dashboard_shown(self, dashboard: DashboardScreen) -> bool:
        """The dashboard is on screen: on top, or under dialogs only (modals draw over it and
        it keeps updating under them: a pane behind a dialog never reads "just now" while old)."""
        from textual.screen import ModalScreen

        stack = self.screen_stack
        if dashboard not in stack:
            return False
        above = stack[stack.index(dashboard) + 1:]
        return all(isinstance(s, ModalScreen) for s in above)

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
            if self.read_only:  # read-only may look at an open incident; never declare one
                return self._incidents().current() is not None
            return True
        if self.read_only and action == "verb" and parameters == ("escalate",):
            return False
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

        self.push_screen(HistoryScreen(self.engine.actions if self.engine is not None else None))

    def action_redraw(self) -> None:
        """ctrl+l, and after a stall the watchdog wrote over: the terminal may not hold what
        the console last drew, so the diffing driver forgets its model and writes it all."""
        from tui.textual_compat import app_driver

        diff = getattr(app_driver(self), "termdiff", None)
        if diff is not None:
            diff.reset()
        self.refresh(repaint=True, layout=True)
        self.screen.refresh(repaint=True, layout=True)

    def action_refresh_all(self) -> None:
        if self.engine is not None:
            self.engine.monitor.refresh()
            self.notify("polling all sources now", timeout=2)

    def action_copy(self) -> None:
        pane = self.dashboard.focused_pane() if self.dashboard else None
        selected = getattr(pane, "selected_text", None)  # panes that have a selection offer it
        text = (selected() or "") if callable(selected) else ""
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
