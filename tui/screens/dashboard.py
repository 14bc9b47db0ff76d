"""The dashboard: header, every pane, footer; three layouts chosen by terminal size.

>= 160x48 "wide": all panes, logs tall. >= 120x36 "medium": all panes, logs shorter.
Below that "compact": one pane at a time with a pane switcher (tabs, number keys,
tab / shift+tab, the palette's "go to pane"). The layout is a CSS class on the
screen, switched on resize; no widget is rebuilt.

With `panes=False` the screen composes only its shell (header, pane borders and titles,
"connecting…" as their subtitle, footer): the cheapest full first frame.
`mount_panes()` then puts the real panes in place.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Container
from textual.dom import DOMNode
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Input, Static, Tab, Tabs

from backends.model import Snapshot
from tui.bindings import DASHBOARD_BINDINGS
from widgets.common import Beat, BeatCall
from widgets.header import StatusHeader

if TYPE_CHECKING:
    from textual import getters

    from tui.app import WarroomApp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaneSpec:
    id: str
    title: str
    module: str
    cls: str


PANES: tuple[PaneSpec, ...] = (
    PaneSpec("services", "Services", "widgets.services", "ServicesPane"),
    PaneSpec("findings", "Findings", "widgets.findings", "FindingsPane"),
    PaneSpec("queues", "Queues", "widgets.queues", "QueuesPane"),
    PaneSpec("breakers", "Breakers", "widgets.breakers", "BreakersPane"),
    PaneSpec("chain", "Chain", "widgets.chain", "ChainPane"),
    PaneSpec("orders", "Stuck orders", "widgets.orders", "OrdersPane"),
    PaneSpec("sources", "Sources", "widgets.sources", "SourcesPane"),
    PaneSpec("logs", "Logs", "widgets.logs", "LogTail"),
)
PANE_IDS = tuple(p.id for p in PANES)

WIDE = (160, 48)
APPLY_EVERY = 1.0  # s: live snapshots are shown at most this often (see DashboardScreen.offer)
MEDIUM = (120, 36)


def layout_for(width: int, height: int) -> str:
    if width >= WIDE[0] and height >= WIDE[1]:
        return "wide"
    if width >= MEDIUM[0] and height >= MEDIUM[1]:
        return "medium"
    return "compact"


def pane_class(spec: PaneSpec) -> type[Widget] | None:
    """The pane's widget class, or None while its module does not exist yet."""
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        log.info("pane %s not available: %s", spec.id, exc)
        return None
    return getattr(module, spec.cls, None)


def state_signature(snapshot: Snapshot) -> tuple:
    """What must show at once: every source's state and the findings (their ids/severity)."""
    try:
        sources = tuple((name, st.state) for name, st in snapshot.sources.items())
        findings = tuple((getattr(f, "key", None) or getattr(f, "title", ""), getattr(f, "severity", None))
                         for f in snapshot.findings)
    except Exception:  # a snapshot of another shape (tests): always urgent
        return (object(),)
    return sources, findings



class SnapshotThrottle:
    """Live snapshots shown at most once per APPLY_EVERY seconds, the newest one, on the beat
    (`Beat`: the next second of the wall clock, so it is painted in the frame of the
    clock's tick and the log tail's redraw, within 1 s after a quiet spell); a change of
    state (a source's state, the findings: `state_signature`) at once. Used by the dashboard and
    the kiosk: the monitor publishes a snapshot per finished poll (about 5 a second on the
    sandbox) and each apply walks every pane.

    `ready()` is asked when it fires: False drops the snapshot (the owner is off screen and
    applies the newest one when shown again)."""

    def __init__(self, owner: Widget, apply: Callable[[Snapshot], None], *, name: str,
                 ready: Callable[[], bool]) -> None:
        self.owner = owner
        self.apply = apply
        self.name = name
        self.ready = ready
        self.offered: Snapshot | None = None  # the newest snapshot offered, not shown yet
        self.timer: BeatCall | None = None
        self.applied_at = float("-inf")
        self.applied_sig: tuple = ()

    def offer(self, snapshot: Snapshot) -> None:
        self.offered = snapshot
        urgent = state_signature(snapshot) != self.applied_sig  # a source came up, failed, a finding
        if self.timer is not None and not urgent:
            return
        wait = self.applied_at + APPLY_EVERY - time.monotonic()
        if urgent:
            if self.timer is not None:
                self.timer.stop()
            self.fire()
        else:
            # on the app's beat: painted in the same frame as the clock and the log tail's redraw
            self.timer = Beat.of(self.owner).once(self.owner, wait, self.fire)

    def fire(self) -> None:
        self.timer = None
        snapshot, self.offered = self.offered, None
        if snapshot is None or not self.ready():
            return
        self.applied_at = time.monotonic()
        self.applied_sig = state_signature(snapshot)
        self.apply(snapshot)

class PanePlaceholder(Static):
    """Stands in for a pane whose widget is not available."""

    can_focus = True

    def show(self, snapshot: Snapshot) -> None:  # noqa: ARG002 - pane contract
        return None


class ShellFooter(Footer):
    """The shell's footer: composes its keys as it mounts, so they are in the first frame
    (Textual's footer waits for a bindings update, then recomposes: one frame later)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        ready = getattr(Footer, "_bindings_ready", None)  # textual 8.2: the flag bindings_changed sets
        if ready is not None:
            self.set_reactive(ready, True)


class PaneSlot(Container):
    """Holds one pane; carries its border, title and the layout's show/hide class. A pane
    with a status of its own (the Logs pane: FOLLOW / PAUSED, lines shown / total, filter)
    puts it in this border's subtitle (`SHOWS_PANE_STATUS`)."""

    SHOWS_PANE_STATUS = True

    def __init__(self, spec: PaneSpec, index: int, current: bool = False, connecting: bool = False) -> None:
        super().__init__(id=f"slot-{spec.id}", classes="pane-slot -current" if current else "pane-slot")
        self.spec = spec
        self.border_title = f"{index + 1} {spec.title}"
        if connecting:  # the shell: an empty slot until its pane is mounted
            self.border_subtitle = "connecting…"
        self.dirty = False

    @property
    def pane(self) -> Widget | None:
        return self.children[0] if self.children else None


class PaneTabs(Tabs, can_focus=False):
    """The pane switcher of the compact layout (clickable; keys are on the screen)."""


class DashboardScreen(Screen):
    BINDINGS: ClassVar[list[BindingType]] = list(DASHBOARD_BINDINGS)  # a copy, typed as Textual declares BINDINGS

    if TYPE_CHECKING:  # only WarroomApp (tui/app.py) pushes the dashboard: Textual's typed `app`
        app = getters.app(WarroomApp)

    def __init__(self, header: StatusHeader, mode: str = "wide", *, panes: bool = True) -> None:
        # the layout class is set before the first style pass: no restyle at startup
        super().__init__(id="dashboard", classes=f"-{mode}")
        self.header = header
        self.panes_ready = panes  # False: the shell only, until mount_panes()
        self.layout_mode = mode
        self.current = PANE_IDS[0]
        self._snapshot: Snapshot | None = None
        self._slot_list: list[PaneSlot] = []  # the slots, composed once (a query walks the whole DOM)
        # apply looked up when it fires (a wrapped or replaced apply is the one called)
        self._throttle = SnapshotThrottle(self, lambda snap: self.apply(snap), name="dashboard-apply",
                                          ready=self._may_apply)

    # ------------------------------------------------------------------ compose

    def compose(self) -> ComposeResult:
        yield self.header
        if self.layout_mode == "compact":  # built on demand: fewer widgets to style at startup
            yield self._make_tabs()
        with Container(id="panes"):
            for i, spec in enumerate(PANES):
                with PaneSlot(spec, i, current=spec.id == self.current,
                              connecting=not self.panes_ready):
                    if self.panes_ready:
                        yield self._make_pane(spec)
        yield (Footer if self.panes_ready else ShellFooter)(show_command_palette=False)

    async def mount_panes(self) -> None:
        """Mount the real panes into the shell's slots (in one batch, after the first frame)."""
        if self.panes_ready:
            return
        self.panes_ready = True
        with self.app.batch_update():
            slots = list(self.query(PaneSlot))
            for slot in slots:  # all at once: a pane that is mounted never sits next to "connecting…"
                slot.border_subtitle = ""
            for slot in slots:
                await slot.mount(self._make_pane(slot.spec))
        if self.is_current:
            self._update_auto_focus()  # as when the screen was composed with its panes
        if self._snapshot is not None:
            self.apply(self._snapshot)

    def _make_tabs(self) -> PaneTabs:
        return PaneTabs(*(Tab(f"{i + 1} {p.title}", id=f"tab-{p.id}") for i, p in enumerate(PANES)),
                        active=f"tab-{self.current}", id="pane-tabs")

    def _tabs(self) -> PaneTabs | None:
        return next(iter(self.query(PaneTabs)), None)

    def _make_pane(self, spec: PaneSpec) -> Widget:
        cls = pane_class(spec)
        if cls is None:
            return PanePlaceholder(f"{spec.title}: pane not available yet", id=spec.id,
                                   classes="pane placeholder")
        try:
            pane = cls()
        except Exception as exc:  # a broken pane must not stop the console
            log.exception("pane %s failed to build", spec.id)
            return PanePlaceholder(f"{spec.title}: {exc}", id=spec.id, classes="pane placeholder")
        pane.id = spec.id
        pane.add_class("pane")
        return pane

    def on_mount(self) -> None:
        self._set_layout(layout_for(self.app.size.width, self.app.size.height))

    def on_resize(self, event) -> None:
        self._set_layout(layout_for(event.size.width, event.size.height))

    # ------------------------------------------------------------------ layout

    def _set_layout(self, mode: str) -> None:
        if mode == self.layout_mode and self.has_class(f"-{mode}"):
            return
        self.remove_class("-wide", "-medium", "-compact")
        self.add_class(f"-{mode}")
        self.layout_mode = mode
        self._mark_current(self.current)
        if self._snapshot is not None:
            self.apply(self._snapshot)

    def _mark_current(self, pane_id: str) -> None:
        self.current = pane_id
        for slot in self.query(PaneSlot):
            want = slot.spec.id == pane_id
            if slot.has_class("-current") != want:
                slot.set_class(want, "-current")
        tabs = self._tabs()
        if tabs is None and self.layout_mode == "compact":
            self.mount(self._make_tabs(), before="#panes")
        elif tabs is not None and tabs.active != f"tab-{pane_id}":
            tabs.active = f"tab-{pane_id}"

    def binding_ids(self) -> set[str]:
        """Every binding id of the console (app, dashboard, panes, dialogs): what [keys] may remap."""
        from tui.bindings import APP_BINDINGS, MODAL_BINDINGS

        ids = {b.id for b in (*APP_BINDINGS, *DASHBOARD_BINDINGS, *MODAL_BINDINGS) if b.id}
        for slot in self.query(PaneSlot):
            pane = slot.pane
            for klass in type(pane).__mro__ if pane is not None else ():
                ids.update(b.id for b in getattr(klass, "BINDINGS", ()) or ()
                           if getattr(b, "id", None))
        return ids

    def slots(self) -> list[PaneSlot]:
        """The pane slots, in order. Composed once; cached, because `query` walks every node
        of the screen (the tables' rows too) and `apply` runs each second."""
        slots = self._slot_list
        if not slots or not all(s.is_attached for s in slots):
            slots = self._slot_list = list(self.query(PaneSlot))
        return slots

    def slot(self, pane_id: str) -> PaneSlot:
        return self.query_one(f"#slot-{pane_id}", PaneSlot)

    def pane(self, pane_id: str) -> Widget | None:
        return self.slot(pane_id).pane

    def slot_visible(self, slot: PaneSlot) -> bool:
        return self.layout_mode != "compact" or slot.spec.id == self.current

    def focused_slot(self) -> PaneSlot | None:
        node: DOMNode | None = self.focused
        while node is not None and not isinstance(node, PaneSlot):
            node = node.parent
        return node

    def focused_pane(self) -> Widget | None:
        slot = self.focused_slot()
        if slot is not None:
            return slot.pane
        return self.pane(self.current) if self.layout_mode == "compact" else None

    def show_pane(self, pane_id: str) -> None:
        """Make `pane_id` visible (compact) and focus it."""
        if pane_id not in PANE_IDS:
            return
        self._mark_current(pane_id)
        slot = self.slot(pane_id)
        if slot.dirty and self._snapshot is not None:
            self._show(slot, self._snapshot)
        target = self._focus_target(slot)
        if target is not None:
            self.call_after_refresh(target.focus)

    def _focus_target(self, slot: PaneSlot) -> Widget | None:
        pane = slot.pane
        if pane is None:
            return None
        if pane.focusable:
            return pane
        for child in pane.query("*"):
            if isinstance(child, Widget) and child.focusable:
                return child
        return None

    @on(Tabs.TabActivated, "#pane-tabs")
    def _tab_activated(self, event: Tabs.TabActivated) -> None:
        pane_id = (event.tab.id or "").removeprefix("tab-")
        if pane_id and pane_id != self.current:
            self.show_pane(pane_id)

    # ------------------------------------------------------------------ data

    def apply(self, snapshot: Snapshot) -> None:
        """Show a snapshot: visible panes now, hidden ones when they are shown."""
        self._snapshot = snapshot
        with self.app.batch_update():
            self.header.show(snapshot)
            self.show_incident()
            for slot in self.slots():
                if self.slot_visible(slot):
                    self._show(slot, snapshot)
                else:
                    slot.dirty = True

    def offer(self, snapshot: Snapshot) -> None:
        """A live snapshot: shown now, or with the newest of the next second (SnapshotThrottle)."""
        self._throttle.offer(snapshot)

    def _may_apply(self) -> bool:
        if not self.is_attached:
            return False
        shown = getattr(self.app, "_dashboard_shown", None)
        # a full screen over it: the app's newest snapshot is applied on resume
        return not (callable(shown) and not shown(self))

    def show_incident(self) -> None:
        """The open incident (engine.incidents.current()) in the header, with its SLA clock."""
        incidents = getattr(getattr(self.app, "engine", None), "incidents", None)
        current = getattr(incidents, "current", None)
        if callable(current):
            try:
                self.header.set_incident(current())
            except Exception:
                log.exception("incident lookup failed")

    def _show(self, slot: PaneSlot, snapshot: Snapshot) -> None:
        slot.dirty = False
        pane = slot.pane
        show = getattr(pane, "show", None)
        if show is None:
            return
        try:
            show(snapshot)
        except Exception:
            log.exception("pane %s failed to show a snapshot", slot.spec.id)

    def add_log_lines(self, lines) -> None:
        pane = self.pane("logs")
        add = getattr(pane, "add_lines", None)
        if add is not None:
            add(lines)

    # ------------------------------------------------------------------ actions

    def action_next_pane(self, step: int) -> None:
        if self.layout_mode != "compact":
            (self.app.action_focus_next if step > 0 else self.app.action_focus_previous)()
            return
        i = PANE_IDS.index(self.current)
        self.show_pane(PANE_IDS[(i + step) % len(PANE_IDS)])

    def action_go_to_pane(self, index: int) -> None:
        if 0 <= index < len(PANE_IDS):
            self.show_pane(PANE_IDS[index])

    async def action_filter(self) -> None:
        pane = self.focused_pane()
        if pane is None or not hasattr(pane, "set_filter"):
            self.notify("This pane has no filter.", severity="warning", timeout=3)
            return
        await self._open_bar(pane, "filter", getattr(pane, "filter_text", "") or "",
                             "filter the focused pane (enter: apply, escape: close)")

    async def open_search(self, pane: Widget) -> None:
        """The Logs pane's `s`: a regex to highlight and jump to (`]` / `[` next / previous)."""
        current = getattr(getattr(pane, "_search", None), "pattern", "") or ""
        await self._open_bar(pane, "search", current,
                             "search the logs: regex (enter: find; ] / [: next / previous match; empty: clear)")

    async def _open_bar(self, pane: Widget, mode: str, value: str, placeholder: str) -> None:
        bar = self._filter_bar()
        if bar is None:  # built on first use
            bar = Input(id="filter-bar")
            await self.mount(bar, before=self.query_one(Footer))
        bar.placeholder = placeholder
        bar.display = True
        bar.value = value
        self._filter_target = pane
        self._bar_mode = mode
        bar.focus()

    @on(Input.Submitted, "#filter-bar")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        pane = getattr(self, "_filter_target", None)
        if pane is not None and getattr(self, "_bar_mode", "filter") == "search":
            try:
                found = pane.search(event.value or None)
            except ValueError as exc:  # a bad regex: say so, keep the bar open
                self.notify(str(exc), severity="error", timeout=4)
                return
            if event.value and not found:
                self.notify(f"no line matches {event.value!r}", severity="warning", timeout=3)
        elif pane is not None:
            pane.set_filter(event.value)
        self._close_filter(pane)

    def _filter_bar(self) -> Input | None:
        return next(iter(self.query("#filter-bar").results(Input)), None)

    def _close_filter(self, pane: Widget | None) -> None:
        bar = self._filter_bar()
        if bar is not None:
            bar.display = False
        if pane is not None and pane.focusable:
            pane.focus()
        elif pane is not None:
            slot = pane.parent
            if isinstance(slot, PaneSlot):
                target = self._focus_target(slot)
                if target is not None:
                    target.focus()

    def key_escape(self) -> None:
        bar = self._filter_bar()
        if bar is not None and bar.display:
            self._close_filter(getattr(self, "_filter_target", None))

    def action_pause_follow(self) -> None:
        pane = self.pane("logs")
        for name in ("action_toggle_follow", "toggle_follow", "action_pause", "pause"):
            fn = getattr(pane, name, None)
            if callable(fn):
                fn()
                return
        if pane is not None and hasattr(pane, "follow"):
            pane.follow = not pane.follow
            self.notify(f"log follow {'on' if pane.follow else 'paused'}", timeout=2)
            return
        self.notify("The log pane is not available yet.", severity="warning", timeout=3)

    def action_detail(self) -> None:
        self.app.open_detail(self.focused_pane())

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a pane that is itself a table (panes with inner tables post DetailRequested)."""
        node = event.data_table
        if isinstance(node.parent, PaneSlot):
            self.app.open_detail(node)

    def on_detail_requested(self, message) -> None:
        """`widgets.messages.DetailRequested(kind, key, item)` from a pane."""
        message.stop()
        item = getattr(message, "item", None)
        if item is not None:
            self.app.open_item(item)
        else:
            self.notify(f"no detail for {getattr(message, 'key', '?')}", severity="warning", timeout=2)

    def on_screen_resume(self) -> None:
        self.header.render_now()  # its clock does not tick while a full screen covers it
        snapshot = getattr(self.app, "snapshot", None)
        if snapshot is not None and snapshot is not self._snapshot:
            self.apply(snapshot)
