"""Shared pieces of the panes: formatting, staleness, status cells and the table pane base.

Every pane is a `TablePane` (a container): an optional notice (degraded sources, their
reason and how old the data is), a one-line summary with the age of the reading, a
`DataTable` updated cell by cell, and an empty-state line. `show(snapshot)` is cheap and
does no I/O; it touches only what changed, so a snapshot that changes nothing writes
nothing to the terminal.

Colours come only from the theme's semantic variables (`$status-ok`, `$status-warn`,
`$status-crit`, `$status-unknown`, and `status-stale` when the theme has it); every
state also has a symbol and a word (`Status.symbol` / `Status.word`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Self

from rich.cells import cell_len
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.coordinate import Coordinate
from textual.timer import Timer
from textual.widgets import DataTable, Static
from textual.widgets.data_table import ColumnKey, RowKey

from backends.model import Reading, Snapshot, SourceState, SourceStatus, Status
from backends.units import format_age

from .messages import ActionRequested, DetailRequested

HOLD_S = 3.0  # pause a focused table's refresh this long after the last cursor move
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
STALE_WORD = "STALE"

# --------------------------------------------------------------------------- formatting


def fmt_duration(seconds: float | None) -> str:
    """45s, 3m12s, 2h05m, 3d04h; "-" for None. Negative values count as 0 (backends.units.format_age)."""
    return format_age(seconds, none="-")


def fmt_coarse(seconds: float | None) -> str:
    """Minute resolution (changes at most once a minute): <1m, 12m, 3h12m, 3d04h; "-" for None."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return "<1m"
    m = s // 60
    if m < 60:
        return f"{m}m"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def ago(seconds: float | None) -> str:
    """'3m12s ago'; 'never' for None."""
    if seconds is None:
        return "never"
    return f"{fmt_duration(seconds)} ago"


def age_s(at: datetime | None, now: datetime) -> float | None:
    """Seconds from `at` to `now` (never negative), None when `at` is None."""
    if at is None:
        return None
    return max(0.0, (now - at).total_seconds())


def read_ago(age: float | None) -> str:
    """How old a (fresh) reading is, worded coarsely so a healthy pane does not repaint every
    second: 'read just now' (< 10 s), 'read 20s ago' (10 s steps), 'read 3m ago'.
    Stale readings are worded precisely by the pane ('? STALE, read 3m12s ago')."""
    if age is None:
        return "not read yet"
    if age < 10:
        return "read just now"
    if age < 60:
        return f"read {int(age // 10) * 10}s ago"
    return f"read {fmt_coarse(age)} ago"


def fmt_int(value: int | float | None) -> str:
    if value is None:
        return "-"
    return f"{int(value):,}"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.0f}s"
    if value >= 1000:
        return f"{value / 1000:.1f}s"
    return f"{value:.0f}ms"


def sparkline(values: Sequence[float], width: int = 12) -> str:
    """Unicode block sparkline of the last `width` values (scaled from 0 to the max)."""
    vals = [float(v) for v in list(values)[-width:] if v is not None]
    if not vals:
        return ""
    top = max(vals)
    if top <= 0:
        return SPARK_BLOCKS[0] * len(vals)
    n = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_BLOCKS[min(n, max(0, round(v / top * n)))] for v in vals)


def is_stale(at: datetime | None, status: SourceStatus | None, now: datetime) -> bool:
    """A reading is stale when its source is degraded or it is much older than its interval."""
    if status is not None and status.state is SourceState.DEGRADED:
        return True
    if at is None or status is None or not status.interval:
        return False
    age = age_s(at, now) or 0.0
    return age > 3 * status.interval + 10


def compile_filter(text: str) -> Callable[[str], bool] | None:
    """A case-insensitive matcher: the text as a regex, or as a substring when it is not one."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        rx = re.compile(text, re.IGNORECASE)
    except re.error:
        needle = text.lower()
        return lambda s: needle in s.lower()
    return lambda s: rx.search(s) is not None


# --------------------------------------------------------------------------- styles


class Styles:
    """Rich styles for cells, resolved from the app theme's semantic variables."""

    def __init__(self, variables: dict[str, str] | None = None) -> None:
        v = variables or {}
        self.ok = v.get("status-ok", "")
        self.warn = v.get("status-warn", "")
        self.crit = v.get("status-crit", "")
        self.unknown = v.get("status-unknown", "")
        self.stale = v.get("status-stale", "") or "dim"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Styles) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]

    def of(self, status: Status) -> str:
        return {Status.OK: self.ok, Status.WARN: self.warn, Status.CRIT: self.crit,
                Status.UNKNOWN: self.unknown}[status]

    def status_cell(self, status: Status, word: str | None = None) -> Text:
        """'● OK' in the status colour; `word` replaces the status word ('● running')."""
        return Text(f"{status.symbol} {word or status.word}", style=f"bold {self.of(status)}".strip())

    def stale_cell(self) -> Text:
        return Text(f"{Status.UNKNOWN.symbol} {STALE_WORD}", style=f"bold {self.stale}")


def status_cell(status: Status, word: str | None = None, styles: Styles | None = None) -> Text:
    return (styles or Styles()).status_cell(status, word)


# --------------------------------------------------------------------------- table


class PaneTable(DataTable):
    """A DataTable that remembers when the operator last moved its cursor."""

    DEFAULT_CSS = """
    PaneTable { height: 1fr; scrollbar-size-horizontal: 0; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self.last_move = -math.inf
        self.programmatic = 0
        self.monotonic: Callable[[], float] = time.monotonic

    def update_cell(self, row_key: Any, column_key: Any, value: Any, *, update_width: bool = False) -> None:
        """Update one cell and repaint only its row (DataTable repaints the whole table).

        A cell that needs a wider column still repaints everything (the layout changes)."""
        if update_width:
            super().update_cell(row_key, column_key, value, update_width=True)
            return
        self._row_only = True
        try:
            super().update_cell(row_key, column_key, value)
        finally:
            self._row_only = False
        self.refresh_row(self.get_row_index(row_key))

    def refresh(self, *regions: Any, **kwargs: Any) -> Self:
        if getattr(self, "_row_only", False) and not regions and not kwargs:
            return self  # update_cell's whole-table repaint; the row is refreshed instead
        return super().refresh(*regions, **kwargs)

    def watch_cursor_coordinate(self, old_coordinate: Coordinate, new_coordinate: Coordinate) -> None:
        super().watch_cursor_coordinate(old_coordinate, new_coordinate)
        if not self.programmatic and old_coordinate != new_coordinate:
            self.last_move = self.monotonic()


BEAT = 1.0  # s: background repaints (clock, snapshots, the tail under a flood) land on this grid
BEAT_OFFSET = 0.01  # s after each grid point: a whole-second clock never shows the second before


def on_beat(wait: float, grid: float = BEAT, wall: float | None = None) -> float:
    """The delay, at least `wait`, that ends just after a multiple of `grid` on the wall clock.

    The header's clock, the dashboard's snapshot throttle and the log tail's flood redraws
    each wait on their own timer; started at random phases they make three frames a second
    where one would do (each frame costs Textual a compositor pass and a terminal write
    whatever changed). Landing them on one grid lets Textual paint them together."""
    now = time.time() if wall is None else wall
    target = now + max(0.0, wait) - BEAT_OFFSET
    return max(0.005, math.ceil(target / grid - 1e-9) * grid + BEAT_OFFSET - now)


class BeatCall:
    """A callback the app's `Beat` runs on a beat (`Beat.once`, `Beat.each`); `stop()` drops it."""

    __slots__ = ("callback", "due", "owner", "stopped")

    def __init__(self, owner: Any, callback: Callable[[], object], due: float) -> None:
        self.owner = owner
        self.callback = callback
        self.due = due
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


class Beat:
    """One timer for the app's background repaints, so that they are painted in one frame.

    The header's clock, the dashboard's and kiosk's snapshot applies, the log tail under a
    flood and its status line each waited on a timer of their own. Aimed at the same point
    of the wall clock (`on_beat`) they still woke a few milliseconds apart, and Textual
    paints a frame 1/60 s after the first change: two or three frames where one would do
    (each costs a compositor pass over the changed widgets and a terminal write). Here they
    run one after the other in one callback, once a second (`BEAT`) on the wall clock's
    second. A change of state (a source down, a finding, a first log line after a lull)
    does not wait for the beat: its owner shows it at once.

    One per app (`Beat.of(widget)`); a call whose owner has left the DOM is dropped."""

    SLACK = 0.05  # s: a call due this close after a beat runs on it (timer jitter)

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls: list[BeatCall] = []
        self.each_calls: list[BeatCall] = []
        self.ticker: BeatTicker | None = None
        self.beats = 0

    @classmethod
    def of(cls, node: Any) -> Beat:
        app = node.app
        beat = getattr(app, "warroom_beat", None)
        if beat is None:
            beat = cls(app)
            app.warroom_beat = beat
        return beat

    def _ensure(self) -> None:
        if self.ticker is None:
            self.ticker = BeatTicker(self.app, BEAT, self._fire, name="beat")
            self.ticker.start()

    def once(self, owner: Any, wait: float, callback: Callable[[], object]) -> BeatCall:
        """Run `callback` on the first beat at least `wait` seconds from now."""
        call = BeatCall(owner, callback, time.monotonic() + max(0.0, wait) - self.SLACK)
        self.calls.append(call)
        self._ensure()
        return call

    def each(self, owner: Any, callback: Callable[[], object]) -> BeatCall:
        """Run `callback` on every beat until stopped or its owner leaves the DOM."""
        call = BeatCall(owner, callback, 0.0)
        self.each_calls.append(call)
        self._ensure()
        return call

    def _fire(self) -> None:
        self.beats += 1
        now = time.monotonic()
        calls, self.calls = self.calls, []
        for call in calls:
            if call.stopped or not call.owner.is_attached:
                continue
            if call.due > now:
                self.calls.append(call)
                continue
            call.stopped = True
            self._run(call)
        self.each_calls = [c for c in self.each_calls if not c.stopped and c.owner.is_attached]
        for call in list(self.each_calls):
            if not call.stopped:
                self._run(call)

    def _run(self, call: BeatCall) -> None:
        try:
            call.callback()
        except Exception as exc:  # one owner's failure does not skip the others on this beat
            guard = getattr(self.app, "crash_guard_active", None)
            if guard is None or not guard():
                raise
            self.app.report_failure(exc, "a timer or widget")


class BeatTicker:
    """Calls `callback` every `period` seconds on the wall clock's grid (`on_beat`), in the
    frame of the other background repaints.

    Textual's interval keeps the phase of its first tick: a clock whose first tick came late
    (a busy loop at startup, a suspended process) or whose monotonic clock drifted from the
    wall clock painted a frame of its own each second (the header at .15 s after the beat:
    2.6 frames a second on the sandbox instead of 1). A tick more than `SLACK` off the grid
    re-aligns the next one."""

    SLACK = 0.05  # s

    def __init__(self, owner: Any, period: float, callback: Callable[[], object], *, name: str) -> None:
        self.owner = owner
        self.period = period
        self.callback = callback
        self.name = name
        self.timer: Timer | None = None
        self.realigned = 0

    def start(self) -> None:
        self.stop()
        self.timer = self.owner.set_timer(on_beat(0.0, self.period), self._first, name=self.name)

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.stop()
            self.timer = None

    def _first(self) -> None:
        self.timer = self.owner.set_interval(self.period, self._tick, name=self.name)
        self.callback()

    def _tick(self) -> None:
        self.callback()
        off = (time.time() - BEAT_OFFSET) % self.period
        if self.SLACK < off < self.period - self.SLACK:
            self.realigned += 1
            self.start()


@dataclass
class Row:
    """One table row as a pane wants it shown."""

    key: str
    cells: tuple[Text, ...]
    item: Any = None
    source: str = ""
    stale: bool = False
    search: str = ""  # what the filter matches; default: the row's text
    # Optional fast path for big tables: when `fingerprint` (plain values) equals the last
    # one shown, the cells are not rebuilt; `make()` builds them when needed.
    fingerprint: tuple | None = None
    make: Callable[[], tuple[Text, ...]] | None = None
    kind: str = ""  # detail kind when it differs from the pane's DETAIL_KIND
    height: int = 1  # lines the row takes (a finding with its next step under it: 2)

    def ensure_cells(self) -> Row:
        if not self.cells and self.make is not None:
            self.cells = self.make()
        return self


def _sig(cell: Text) -> tuple:
    return (cell.plain, str(cell.style), tuple(cell.spans) if cell.spans else ())


_FIELDS: dict[type, tuple[str, ...]] = {}


def values_of(reading: Any) -> tuple:
    """A reading's values without its `at`, nested readings too (endpoints of a chain, the
    breakers of a breakers reading): a re-poll with equal values compares equal."""
    cls = type(reading)
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(reading) if f.name != "at")
    out = []
    for n in names:
        v = getattr(reading, n)
        if type(v) is tuple and v and isinstance(v[0], Reading):
            v = tuple(values_of(x) for x in v)
        out.append(v)
    return (cls, tuple(out))


@dataclass
class Health:
    """What a pane knows about its sources in one snapshot."""

    sources: list[SourceStatus] = field(default_factory=list)
    degraded: list[SourceStatus] = field(default_factory=list)
    pending: list[SourceStatus] = field(default_factory=list)

    def status_of(self, name: str) -> SourceStatus | None:
        for st in self.sources:
            if st.name == name:
                return st
        return None


def _needs_layout(which: str, old: tuple | None, new: tuple) -> bool:
    """Does a new text change the size of its part of the pane head (see TablePane's CSS)?

    The summary (and the chain's extra lines) is 1fr wide, one row per line (no wrap); the age is as wide as its text
    and one row high. A value change of the same shape (a count, "read 2s ago" to "read
    3s ago") repaints the part without a layout pass over the screen. The notice and the
    empty text wrap: any change re-lays them out.
    """
    if old is None or which not in ("summary", "extra", "age"):
        return True
    if which != "age":  # one row per line, no wrap
        return old[0].count("\n") != new[0].count("\n") or bool(old[0]) != bool(new[0])
    return cell_len(old[0]) != cell_len(new[0]) or bool(old[0]) != bool(new[0])


class TablePane(Vertical):
    """Base of the table panes: notice, summary, table, empty state, hold, filter, actions.

    Subclasses set READING_TYPES / SOURCE_KINDS / COLUMNS / DETAIL_KIND and implement
    `build_rows(snapshot, readings, health)` (and optionally `build_summary`).
    """

    READING_TYPES: ClassVar[tuple[type, ...]] = ()
    SOURCE_KINDS: ClassVar[frozenset[str]] = frozenset()
    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = ()
    DETAIL_KIND: ClassVar[str] = ""
    STATUS_INDEX: ClassVar[int] = 0  # the cell that says "? STALE" on a stale row
    NOUN: ClassVar[str] = "items"  # "No <noun> configured."
    MUTATING: ClassVar[frozenset[str]] = frozenset()  # binding actions hidden in read-only

    DEFAULT_CSS = """
    TablePane { height: 1fr; width: 1fr; }
    TablePane > .pane-notice { height: auto; color: $status-crit; display: none; }
    TablePane.-degraded > .pane-notice { display: block; }
    TablePane > .pane-head { height: auto; max-height: 3; }
    TablePane > .pane-head > .pane-summary { width: 1fr; height: auto; text-wrap: nowrap; text-overflow: ellipsis; }
    TablePane > .pane-head > .pane-age { width: auto; height: 1; padding: 0 0 0 1; }
    TablePane > .pane-empty { height: auto; color: $text-muted; display: none; padding: 0 1; }
    TablePane.-empty > .pane-empty { display: block; }
    TablePane.-empty > PaneTable { display: none; }
    TablePane.-stale > .pane-head { color: $text-disabled; }
    """

    def __init__(self, *, sources: Iterable[str] = (), hold_s: float = HOLD_S, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:  # noqa: A002
        super().__init__(name=name, id=id, classes=classes)
        self.hold_s = hold_s
        self.filter_text = ""
        self._matcher: Callable[[str], bool] | None = None
        self._explicit_sources = tuple(sources)
        self._known_sources: dict[str, None] = {}
        self._snapshot: Snapshot | None = None
        self._rows: dict[str, tuple] = {}
        self._items: dict[str, Row] = {}
        self._fingerprints: dict[str, tuple] = {}
        self._last_key: Any = None
        self._last_values: tuple[list, tuple] | None = None
        self._by_source: dict[str, tuple] = {}
        self._pending = False
        self._timer: Timer | None = None
        self._texts: dict[str, tuple] = {}
        self._degraded: set[str] = set()
        self._styles = Styles()
        self.update_calls = 0  # cells updated in place (tests and benchmarks read it)
        self.monotonic: Callable[[], float] = time.monotonic

    # ------------------------------------------------------------------ compose

    def compose(self) -> ComposeResult:
        yield Static("", classes="pane-notice")
        with Horizontal(classes="pane-head"):
            yield Static("", classes="pane-summary")
            yield Static("", classes="pane-age")
        yield from self.compose_extra()
        yield PaneTable()
        yield Static("", classes="pane-empty")

    def compose_extra(self) -> ComposeResult:
        """Widgets between the summary and the table (none by default)."""
        yield from ()

    def on_mount(self) -> None:
        table = self.table
        table.monotonic = lambda: self.monotonic()
        for key, label in self.COLUMNS:
            table.add_column(label, key=key)
        self._styles = Styles(getattr(self.app, "theme_variables", None))
        self.app.theme_changed_signal.subscribe(self, self._on_theme)
        if self._snapshot is None:
            self._set_text("empty", Text(f"Waiting for the first reading of {self.NOUN}…"))
            self.add_class("-empty")
        else:
            self._apply(self._snapshot, table_too=True)

    def on_unmount(self) -> None:
        # Textual prunes a removed node's subscription only on the next theme change; the
        # callback closes over the node, so until then the pane (and its rows) stays alive.
        self.app.theme_changed_signal.unsubscribe(self)

    def _on_theme(self, _theme: Any) -> None:
        styles = Styles(getattr(self.app, "theme_variables", None))
        if styles == self._styles:
            return
        self._styles = styles
        self._rows = {k: tuple(None for _ in v) for k, v in self._rows.items()}
        self._fingerprints.clear()
        self._texts.clear()
        if self._snapshot is not None:
            self._apply(self._snapshot, table_too=True)

    @property
    def table(self) -> PaneTable:
        return self.query_one(PaneTable)

    @property
    def styles_(self) -> Styles:
        return self._styles

    # ------------------------------------------------------------------ contract

    def show(self, snapshot: Snapshot) -> None:
        """Show a snapshot. The focused table holds still for `hold_s` after a cursor move."""
        self._snapshot = snapshot
        if not self.is_mounted:
            return
        key = self.inputs_key(snapshot)
        if key is not None and key == self._last_key and not self._pending:
            return  # same readings, same sources, same second: nothing can have changed
        self._last_key = key
        wait = self.hold_remaining()
        self._apply(snapshot, table_too=wait <= 0)
        if wait > 0:
            self._pending = True
            if self._timer is None:
                self._timer = self.set_timer(wait, self._release)

    def inputs_key(self, snapshot: Snapshot) -> Any:
        """What this pane's rendering depends on; a snapshot with an equal key is skipped.

        The very same reading objects (the monitor keeps a source's readings until it polls
        it again), equal statuses of the pane's sources, and the same second (ages)."""
        readings = self.readings_of(snapshot)
        now = snapshot.at
        names = set(self._explicit_sources) | set(self._known_sources) | {r.source for r in readings}
        statuses = tuple(
            (st.name, st.state, st.reason, ago(age_s(st.last_good, now)) if st.degraded else "")
            for name, st in snapshot.sources.items()
            if name in names or (st.kind and st.kind.lower() in self.SOURCE_KINDS))
        oldest = min((r.at for r in readings), default=None)
        age = ago(age_s(oldest, now)) if any(s[1] is SourceState.DEGRADED for s in statuses) else (
            read_ago(age_s(oldest, now)))
        # the very same objects as last time (the source was not polled again): same values
        last = self._last_values
        if last is not None and len(last[0]) == len(readings) and all(
                a is b for a, b in zip(last[0], readings, strict=True)):
            values = last[1]
        else:
            values = tuple(values_of(r) for r in readings)
            self._last_values = (readings, values)
        # minute-coarse ages in rows (uptime, order age, last failure) move within 10 s
        return (values, statuses, age, int(now.timestamp() // 10))

    def hold_remaining(self) -> float:
        """Seconds the table should still hold still (0 when it may refresh)."""
        table = self.table
        if not table.has_focus or self.hold_s <= 0:
            return 0.0
        return max(0.0, table.last_move + self.hold_s - self.monotonic())

    @property
    def pending(self) -> bool:
        return self._pending

    def _release(self) -> None:
        self._timer = None
        if not self._pending or self._snapshot is None:
            return
        wait = self.hold_remaining()
        if wait > 0:
            self._timer = self.set_timer(wait, self._release)
            return
        self.flush()

    def flush(self) -> None:
        """Apply the held snapshot now."""
        self._pending = False
        if self._snapshot is not None and self.is_mounted:
            self._apply(self._snapshot, table_too=True)

    def set_filter(self, text: str) -> None:
        """Show only rows matching `text` (a regex, or a substring when it is not a valid one)."""
        self.filter_text = (text or "").strip()
        self._matcher = compile_filter(self.filter_text)
        if self._snapshot is not None and self.is_mounted:
            self._apply(self._snapshot, table_too=True)

    # ------------------------------------------------------------------ subclass API

    def build_rows(self, snapshot: Snapshot, readings: list, health: Health) -> list[Row]:
        raise NotImplementedError

    def build_summary(self, snapshot: Snapshot, readings: list, health: Health) -> Text | None:
        return None

    def empty_text(self, snapshot: Snapshot, readings: list, health: Health) -> Text | None:
        """The empty-state line, or None when the pane has something to show."""
        if readings:
            return None
        if not health.sources:
            return Text(f"No {self.NOUN} configured.")
        if health.degraded:
            return Text(f"No {self.NOUN}: no reading yet (source degraded, see above).")
        return Text(f"Waiting for the first reading of {self.NOUN}…")

    def readings_of(self, snapshot: Snapshot) -> list:
        """This pane's readings, in source order (a source's tuple is filtered once)."""
        out: list = []
        types = self.READING_TYPES
        if not types:
            return out
        cache = self._by_source
        fresh: dict[str, tuple] = {}
        for name, rs in snapshot.readings.items():
            hit = cache.get(name)
            mine = hit[1] if hit is not None and hit[0] is rs else [r for r in rs if isinstance(r, types)]
            fresh[name] = (rs, mine)
            out.extend(mine)
        self._by_source = fresh
        return out

    # ------------------------------------------------------------------ apply

    def health(self, snapshot: Snapshot, readings: Sequence[Reading]) -> Health:
        names = dict.fromkeys(self._explicit_sources)
        names.update(dict.fromkeys(r.source for r in readings))
        names.update(self._known_sources)
        for name, known in snapshot.sources.items():
            if known.kind and known.kind.lower() in self.SOURCE_KINDS:
                names.setdefault(name)
        self._known_sources.update(dict.fromkeys(r.source for r in readings))
        h = Health()
        for name in names:
            st = snapshot.sources.get(name)
            if st is None:
                continue
            h.sources.append(st)
            if st.state is SourceState.DEGRADED:
                h.degraded.append(st)
            elif st.state is SourceState.PENDING:
                h.pending.append(st)
        return h

    def _apply(self, snapshot: Snapshot, *, table_too: bool) -> None:
        readings = self.readings_of(snapshot)
        health = self.health(snapshot, readings)
        now = snapshot.at
        # notice: degraded sources, their reason and the age of what is still shown
        notice = Text()
        for st in health.degraded:
            if notice:
                notice.append("\n")
            notice.append(f"{Status.CRIT.symbol} DEGRADED ", style="bold")
            notice.append(f"{st.name}: {st.reason or 'poll failed'}")
            notice.append(f" · last good {ago(age_s(st.last_good, now))}", style="dim")
        self.set_class(bool(health.degraded), "-degraded")
        self._set_text("notice", notice)
        self._degraded = degraded_names = {st.name for st in health.degraded}
        self.set_class(any(r.source in degraded_names for r in readings), "-stale")
        empty = self.empty_text(snapshot, readings, health)
        self.set_class(empty is not None, "-empty")
        self._set_text("empty", empty or Text(""))
        summary = self.build_summary(snapshot, readings, health) if empty is None else None
        if summary is None:
            summary = Text()
        elif readings and all(r.source in degraded_names for r in readings):
            summary = Text(summary.plain, style=self._styles.stale)  # stale numbers, greyed
        self._set_text("summary", summary)
        self._set_text("age", self.age_text(readings, health, now) if empty is None else Text())
        if table_too:
            self._sync_rows(self.build_rows(snapshot, readings, health) if empty is None else [])

    def age_text(self, readings: Sequence[Reading], health: Health, now: datetime) -> Text:
        """'read 3m12s ago' (the oldest reading shown); '? STALE, read …' when stale."""
        if not readings:
            return Text()
        oldest = min(r.at for r in readings)
        if any(is_stale(r.at, health.status_of(r.source), now) for r in readings):
            return Text(f"{Status.UNKNOWN.symbol} {STALE_WORD}, read {ago(age_s(oldest, now))}",
                        style=f"bold {self._styles.stale}")
        return Text(read_ago(age_s(oldest, now)), style="dim")

    def shown(self, which: str) -> str:
        """The plain text of one part of the pane: "notice", "summary", "age" or "empty"."""
        sig = self._texts.get(which)
        return sig[0] if sig else ""

    def _set_text(self, which: str, text: Text) -> None:
        sig = _sig(text)
        if self._texts.get(which) == sig:
            return
        old = self._texts.get(which)
        self._texts[which] = sig
        widget = self.query_one(f".pane-{which}", Static)
        widget.update(text, layout=_needs_layout(which, old, sig))
        if which in ("summary", "age"):
            head = self.query_one(".pane-head")
            head.display = bool(self._texts.get("summary", ("",))[0] or self._texts.get("age", ("",))[0])

    def stale_row(self, row: Row) -> Row:
        """Grey a row of a degraded source: numbers kept but never shown as current."""
        stale = self._styles.stale
        cells = tuple(self._styles.stale_cell() if i == self.STATUS_INDEX else Text(c.plain, style=stale)
                      for i, c in enumerate(row.cells))
        return Row(row.key, cells, row.item, row.source, True, row.search, row.fingerprint, row.make, row.kind,
                   row.height)

    def _sync_rows(self, rows: list[Row]) -> None:
        table = self.table
        wanted: list[Row] = []
        for row in rows:
            if self._matcher is not None and not self._matcher(
                    row.search or " ".join(c.plain for c in row.ensure_cells().cells)):
                continue
            stale = row.stale or row.source in self._degraded
            if row.fingerprint is not None:
                fp = (row.fingerprint, stale)
                if self._fingerprints.get(row.key) == fp and row.key in self._rows:
                    row.stale = stale
                    wanted.append(row)  # unchanged: cells are not rebuilt
                    continue
                self._fingerprints[row.key] = fp
            row.ensure_cells()
            if stale:
                row = self.stale_row(row)
            wanted.append(row)
        keys = [r.key for r in wanted]
        keep = set(keys)
        columns = [k for k, _ in self.COLUMNS]
        cursor_key = self.cursor_key()
        table.programmatic += 1
        try:
            for gone in [k for k in self._rows if k not in keep]:
                table.remove_row(gone)
                del self._rows[gone]
                self._items.pop(gone, None)
                self._fingerprints.pop(gone, None)
            for row in wanted:
                if not row.cells:  # unchanged fingerprint
                    self._items[row.key] = row
                    continue
                sig = tuple(_sig(c) for c in row.cells)
                old = self._rows.get(row.key)
                if old is not None and table.rows[RowKey(row.key)].height != row.height:
                    table.remove_row(row.key)  # a row's height is fixed when it is added
                    old = None
                if old is None:
                    table.add_row(*row.cells, key=row.key, height=row.height)
                elif old != sig:
                    for col, cell, before, after in zip(columns, row.cells, old, sig, strict=True):
                        if before != after:
                            # a wider text asks the table for its column's width only when the
                            # column is narrower (a full repaint and a layout): "0/s" -> "0.5/s"
                            # each poll in a column already 6 wide repaints the row alone
                            grow = before is None or (len(after[0]) > len(before[0])
                                                      and not self._fits(table, col, cell))
                            table.update_cell(row.key, col, cell, update_width=grow)
                            self.update_calls += 1
                self._rows[row.key] = sig
                self._items[row.key] = row
            current = [r.key.value for r in table.ordered_rows]
            if current != keys and keys:
                first = {id(table.get_cell(k, columns[0])): i for i, k in enumerate(keys)}
                table.sort(key=lambda values: first.get(id(values[0]), 0))
            if cursor_key is not None and cursor_key in keep:
                index = table.get_row_index(cursor_key)
                if index != table.cursor_row:  # rows above it came or went: follow the row
                    table.move_cursor(row=index, animate=False)
        finally:
            table.programmatic -= 1

    @staticmethod
    def _fits(table: DataTable, column: str, cell: Text) -> bool:
        """The one-line cell fits the column's current width (it never needs to widen it)."""
        col = table.columns.get(ColumnKey(column))
        return col is not None and "\n" not in cell.plain and cell.cell_len <= col.content_width

    # ------------------------------------------------------------------ selection

    def cursor_key(self) -> str | None:
        table = self.table
        if table.row_count == 0:
            return None
        try:
            return table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value
        except Exception:
            return None

    def cursor_row(self) -> Row | None:
        key = self.cursor_key()
        return self._items.get(key) if key is not None else None

    def row_keys(self) -> list[str]:
        return [r.key.value for r in self.table.ordered_rows if r.key.value is not None]  # all keyed

    def detail(self) -> Any:
        row = self.cursor_row()
        return row.item if row is not None else None

    def selected_text(self) -> str:
        row = self.cursor_row()
        if row is None:
            return ""
        return " ".join(c.plain for c in row.ensure_cells().cells if c.plain).strip()

    def action_context(self, verb: str) -> dict:  # noqa: ARG002 - app contract
        return {}

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value if event.row_key is not None else None
        if key is None:
            return
        row = self._items.get(key)
        kind = (row.kind if row is not None else "") or self.DETAIL_KIND
        self.post_message(DetailRequested(kind, key, row.item if row else None))
        # RowSelected keeps bubbling: the dashboard opens the detail through `detail()`.

    # ------------------------------------------------------------------ actions

    def request(self, action_id: str, params: dict | None = None, target: str = "") -> None:
        self.post_message(ActionRequested(action_id, params or {}, target))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.MUTATING and getattr(self.app, "read_only", False):
            return False
        return True


def binding(key: str, action: str, description: str, id: str, show: bool = True) -> Binding:  # noqa: A002
    return Binding(key, action, description, id=id, show=show)
