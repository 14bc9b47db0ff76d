"""LogTail: the merged live tail of every log source.

A Line API widget (ScrollView + render_line): only the visible rows are rendered.
Lines arrive through `add_lines(lines)`, which only appends to a pending list; a
one-shot timer flushes the pending lines at most ~10 times a second (2 while lines
keep coming: each redraw scrolls the whole pane), and nothing runs while no line
arrives. A row is built once per line on screen, already joined with the pane's
border (see `_RowStylesCache`), and dropped when its line scrolls off: a following
tail shifts every row on every flush, so the cost per new row (and the objects it
leaves to the garbage collector) is what the CPU figure at 200 lines/s is made of.

Follow / pause: pausing never loses lines. New lines keep arriving in the buffer
and the counts keep going; the view stays where it is; resuming jumps to the end.
The buffer is bounded (`max_lines`, default 10,000): memory does not grow with time.

Filters: in / out by regex and by level (`set_filter`); `search()` highlights and
jumps; `n` / `N` jump to the next / previous error; `y` copies the line under the
cursor (OSC 52 through `App.copy_to_clipboard`, works over SSH).

Colours come from the theme's semantic variables ($status-crit, $status-warn,
$status-ok, $status-unknown, $text-muted), never raw colours. Call `add_lines` on the
app's event loop (from another thread use `app.call_from_thread`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.cache import FIFOCache
from textual.color import Color
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer
from textual.widget import Widget

from backends.model import Level, LogLine
from tui.textual_compat import (
    StylesCache,
    get_box,
    set_border_subtitle_row,
    set_widget_styles_cache,
    widget_styles_cache,
)
from widgets.common import BEAT, Beat, BeatCall

DEFAULT_MAX_LINES = 10_000
MIN_INTERVAL = 0.1  # at most 10 renders a second
MAX_INTERVAL = 1.0  # while lines keep coming: one redraw a second, on the beat; a first line after a lull at once
STATUS_EVERY = 0.9  # s: the status line's counts at most once per beat (a little under it: timer jitter)

_LABELS = {
    Level.FATAL: "FATAL",
    Level.ERROR: "ERROR",
    Level.WARN: "WARN ",
    Level.INFO: "INFO ",
    Level.DEBUG: "DEBUG",
    Level.TRACE: "TRACE",
    Level.UNKNOWN: "     ",
}
_LEVEL_CYCLE: tuple[Level | None, ...] = (None, Level.WARN, Level.ERROR)


class _NoCache:
    """A per-Strip memo that keeps nothing (see `_Row`)."""

    __slots__ = ()

    def get(self, _key, default=None):
        return default

    def __setitem__(self, _key, _value) -> None:
        pass


_NO_CACHE = _NoCache()


class _Row(Strip):
    """A log row as Textual's compositor gets it: a Strip without its per-strip memos.

    A Strip carries seven small caches (crop, divide, style, ...): eight objects for
    the garbage collector per row, for a row that is shown once or twice and then
    scrolls off. A row only needs the filter memo (see `seed_filters`); the other
    look-ups find nothing and compute, as for a new Strip.
    """

    __slots__ = ()

    def __init__(self, segments: list[Segment], cell_length: int) -> None:
        self._segments = segments
        self._cell_length = cell_length
        none: Any = _NO_CACHE  # stands in for each typed FIFOCache: finds nothing, keeps nothing
        self._divide_cache = self._crop_cache = self._style_cache = none
        self._line_length_cache = self._crop_extend_cache = self._offsets_cache = none
        self._filter_cache = FIFOCache(4)
        self._render_cache = None
        self._link_ids = None
        self._cell_count = None


class _RowStylesCache(StylesCache):
    """Textual's per-widget line cache, with a fast path for the log rows.

    Textual composes every content row with the widget's border, padding, tint and
    opacity on each paint (`StylesCache.render_line`: a dozen style look-ups and three
    new Strips per row). A following tail shifts every row on every flush, so that is
    paid for every visible row ~5 times a second. When the styles are plain (border
    and background only: no outline, tint, opacity, hatch or side padding), a row is
    `[left border, *content, right border]`: the border segments are computed once per
    paint and the tail builds (and keeps, while the line is on screen) the composed
    row in one Strip. Anything else takes Textual's own path, with the same result.
    """

    def __init__(self) -> None:
        super().__init__()
        # No reference to the tail: Textual's lru_cache on get_inner_outer keeps up to 1024
        # StylesCaches alive, and a removed tail (with its lines) must not stay with them.
        self._chrome: tuple | bool | None = None  # per paint; False: not plain, Textual's path
        self._filters: tuple = ((), None)  # per paint: the app's line filters and the background
        self._noop: dict[tuple, bool] = {}  # (filter, background, style) -> leaves it as it is

    def render(self, styles, size, base_background, background, render_content_line, filters, *args,
               **kwargs) -> list[Strip]:
        self._chrome = None
        self._filters = (tuple(filters), background)
        try:
            return super().render(styles, size, base_background, background, render_content_line, filters,
                                  *args, **kwargs)
        finally:
            self._chrome = None
            self._filters = ((), None)

    def seed_filters(self, row: Strip) -> None:
        """Tell a new row's filter cache that the app's line filters leave it as it is.

        Textual runs every line filter (ANSI colours to truecolor, ...) on every new row
        and keeps an equal copy. The tail's styles are truecolor: for Textual's own
        filters (style-only) the verdict per style is computed once, and a row the
        filters would not change is its own filtered row.
        """
        filters, background = self._filters
        if not filters or len(filters) > 4:
            return
        noop = self._noop
        for f in filters:
            if type(f).__module__ != "textual.filter":
                return
            for seg in row:
                key = (f, background, seg.style)
                ok = noop.get(key)
                if ok is None:
                    out = f.apply([seg], background)
                    ok = len(out) == 1 and out[0] == seg
                    if len(noop) > 512:
                        noop.clear()
                    noop[key] = ok
                if not ok:
                    return
        cache = getattr(row, "_filter_cache", None)
        if cache is not None:
            for f in filters:
                cache[(f, background)] = row

    def _make_chrome(self, styles, size: Size, content_size: Size, padding, base_background: Color,
                     background: Color, opacity: float) -> tuple | bool:
        if opacity != 1.0 or styles.text_opacity != 1.0 or styles.tint.a:
            return False
        if styles.has_rule("hatch") and styles.hatch != "none":
            return False
        if any(edge for edge, _ in styles.outline):
            return False
        _pad_top, pad_right, _pad_bottom, pad_left = padding
        if pad_left or pad_right:
            return False
        (_top, _tc), (border_right, right_color), (_bottom, _bc), (border_left, left_color) = styles.border
        inner, outer = self.get_inner_outer(base_background, background)
        edges: list[Segment | None] = []
        if border_left:
            edges.append(get_box(border_left, inner, outer, type(inner)(foreground=base_background + left_color))[1][0])
        else:
            edges.append(None)
        if border_right:
            edges.append(get_box(border_right, inner, outer, type(inner)(foreground=base_background + right_color))[1][2])
        else:
            edges.append(None)
        left, right = edges
        key = (size.width, content_size.width, left, right)
        return (styles.gutter.top, content_size.height, content_size.width, size.width, left, right, key)

    def render_line(self, styles, y, size, content_size, padding, base_background, background,
                    render_content_line, border_title, border_subtitle, opacity, ansi_theme, native_ansi) -> Strip:
        chrome = self._chrome
        if chrome is None:
            chrome = self._chrome = self._make_chrome(styles, size, content_size, padding, base_background,
                                                      background, opacity)
        if isinstance(chrome, tuple):  # False: not plain, Textual's path
            top, height, _content_width, _width, _left, _right, _key = chrome
            if 0 <= y - top < height:
                tail = getattr(render_content_line, "__self__", None)  # the tail's render_line
                row = tail._composed_line(y - top, chrome) if isinstance(tail, LogTail) else None
                if row is not None:
                    return row
        return super().render_line(styles, y, size, content_size, padding, base_background, background,
                                   render_content_line, border_title, border_subtitle, opacity, ansi_theme,
                                   native_ansi)


class LogTail(ScrollView, can_focus=True):
    """Merged tail of all log sources with source tag and level colour."""

    DEFAULT_CSS = """
    LogTail {
        height: 1fr;
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
    }
    """

    BINDINGS = [
        Binding("p", "toggle_follow", "Pause/follow", id="pause_follow"),
        Binding("n", "next_error", "Next error", id="next_error"),
        Binding("N", "prev_error", "Prev error", id="prev_error"),
        Binding("s", "search_prompt", "Search", id="log_search"),
        Binding("right_square_bracket", "next_match", "Next match", id="next_match", show=False),
        Binding("left_square_bracket", "prev_match", "Prev match", id="prev_match", show=False),
        Binding("l", "cycle_level", "Level filter", id="level_filter"),
        Binding("y", "copy_line", "Copy line", id="copy_line"),
        Binding("up", "cursor_up", "Up", id="log_cursor_up", show=False),
        Binding("down", "cursor_down", "Down", id="log_cursor_down", show=False),
        Binding("pageup", "page_up_rows", "Page up", id="log_page_up", show=False),
        Binding("pagedown", "page_down_rows", "Page down", id="log_page_down", show=False),
        Binding("home", "top", "Top", id="log_top", show=False),
        Binding("end", "follow", "Follow", id="log_follow", show=False),
    ]

    class FollowChanged(Message):
        def __init__(self, tail: LogTail, following: bool) -> None:
            super().__init__()
            self.tail = tail
            self.following = following

    class LineCopied(Message):
        def __init__(self, tail: LogTail, line: LogLine) -> None:
            super().__init__()
            self.tail = tail
            self.line = line

    def __init__(
        self,
        lines: Iterable[LogLine] = (),
        *,
        max_lines: int = DEFAULT_MAX_LINES,
        show_time: bool = True,
        tag_width: int = 14,
        min_interval: float = MIN_INTERVAL,
        max_interval: float = MAX_INTERVAL,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's parameter name
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        set_widget_styles_cache(self, _RowStylesCache())
        self.max_lines = max(1, max_lines)
        self.show_time = show_time
        self.tag_width = tag_width
        self.min_interval = min_interval
        self.max_interval = max(min_interval, max_interval)
        self._all: list[LogLine] = []
        self._rows: list[LogLine] = []
        self._pending: list[LogLine] = []
        self._timer: Timer | BeatCall | None = None
        self._last_flush = 0.0
        self._rate = 0.0  # lines/s, smoothed
        self.following = True
        self.cursor: int | None = None  # index into the filtered rows
        self.received = 0  # every line ever given, filtered or not
        self.errors_received = 0
        self.new_while_paused = 0
        self.dropped = 0  # lines that left the bounded buffer
        self.renders = 0  # flushes that changed the view (for tests / benchmarks)
        self._include: re.Pattern | None = None
        self._exclude: re.Pattern | None = None
        self._levels: frozenset[Level] | None = None
        self._min_level: Level | None = None
        self._search: re.Pattern | None = None
        self._filter_text = ""
        self._styles: dict[str, Style] | None = None
        self._combined: dict[tuple, dict[str, Style]] = {}
        # rows on screen: (id(line), width, is cursor) -> [line, Strip, chrome key, composed Strip]
        self._row_cache: dict[tuple, list] = {}
        self._base: Style = Style.null()  # the paint's base style, valid while _frame is set
        self._frame: tuple[int, int] | None = None
        self._cache_base: Style | None = None
        self._status_at = 0.0
        self._status_timer: BeatCall | None = None
        self._status_dirty = False
        self._bar_stale = False  # the scrollbar's range lags the buffer (see _set_virtual_height)
        self._time_cache: tuple[int, str] = (-1, "")
        self._tags: dict[str, str] = {}
        self._last_seq = 0  # the highest seq given (a line at or below it replaces one)
        if lines:
            self._pending.extend(lines)
            self.received += len(self._pending)

    # ------------------------------------------------------------------ feeding

    def add_lines(self, lines: Sequence[LogLine]) -> None:
        """Queue new lines; they appear at the next flush (<= ~10 per second).

        A line whose `seq` was already given is a multi-line entry that grew (the hub
        published it again when its continuation lines came): it replaces the one shown."""
        if not lines:
            return
        last = self._last_seq
        top = last
        for ln in lines:  # seqs rise: a line at or below the highest given replaces one
            q = ln.seq
            if q:
                if q <= top:
                    lines = self._replace_entries(lines)
                    if not lines:
                        return
                    break
                top = q
        self._last_seq = max(self._last_seq, top)
        self._pending.extend(lines)
        self.received += len(lines)
        self.errors_received += sum(1 for ln in lines if ln.level >= Level.ERROR)
        if len(self._pending) > 2 * self.max_lines:  # a flood while not mounted: keep it bounded
            cut = len(self._pending) - self.max_lines
            del self._pending[:cut]
            self.dropped += cut
        if not self.following:
            self.new_while_paused += len(lines)
        self._schedule()

    def _replace_entries(self, lines: Sequence[LogLine]) -> list[LogLine]:
        """Replace the lines already given (same source and seq: a multi-line entry that
        grew), also earlier in this batch; the new ones are returned, in order."""
        top = self._last_seq
        fresh: list[LogLine] = []
        changed = refilter = False
        for ln in lines:
            q = ln.seq
            if not q or q > top:
                fresh.append(ln)
                if q:
                    top = q
                continue
            old = None
            in_batch = in_rows = in_all = False
            for store in (fresh, self._pending, self._all, self._rows):
                for k in range(len(store) - 1, max(-1, len(store) - 2049), -1):
                    cur = store[k]
                    if cur.seq == q and cur.source == ln.source:
                        if old is None and store is fresh:
                            in_batch = True  # counted with the batch, as the version it has now
                        in_rows = in_rows or store is self._rows
                        in_all = in_all or store is self._all
                        old = old or cur
                        store[k] = ln
                        break
                    if cur.seq and cur.seq < q:
                        break
            if in_all and self._filtering:
                # shown before and hidden now, or the other way round: the filter again
                refilter = refilter or in_rows != self._keep(ln)
            if old is not None:
                if not in_batch:
                    self.errors_received += (ln.level >= Level.ERROR) - (old.level >= Level.ERROR)
                changed = True
        self._last_seq = max(self._last_seq, top)
        if refilter:
            self._rebuild()
        elif changed:
            self.refresh()
        return fresh

    def _schedule(self) -> None:
        if self._timer is not None or not self.is_attached:
            return
        now = time.monotonic()
        interval = self._interval()
        delay = max(0.005, self._last_flush + interval - now)  # a 0 s Timer divides by zero
        if interval >= BEAT:  # under a flood: on the app's beat, in the same frame as the clock's tick
            self._timer = Beat.of(self).once(self, delay, self._flush)
        else:
            self._timer = self.set_timer(delay, self._flush, name="logtail-flush")

    def _interval(self) -> float:
        # A line after a quiet spell shows at once. While lines keep coming, one redraw per
        # `max_interval` (each redraw rewrites the whole pane anyway, so fewer redraws mean
        # fewer bytes to the terminal and less CPU: each scroll of the tail makes Textual
        # re-arrange the whole screen's map; the newest line is on screen within ~1 s, on the beat with the clock).
        if self._rate * self.max_interval >= 1.0:
            return self.max_interval
        return self.min_interval

    def on_mount(self) -> None:
        self._show_bar(not self.following)
        # the theme signal, not a watch on app.theme: Textual keeps a watcher (and this pane
        # with all its lines) until the theme next changes, i.e. for good on a wall display
        self.app.theme_changed_signal.subscribe(self, lambda _t: self._reset_styles())
        if self._pending:
            self._schedule()

    def on_unmount(self) -> None:
        self.app.theme_changed_signal.unsubscribe(self)

    def _reset_styles(self) -> None:
        self._styles = None
        self._combined.clear()
        self._row_cache.clear()
        self.refresh()

    def flush(self) -> None:
        """Apply pending lines now (tests; normally the timer does it)."""
        if self._timer is not None:
            self._timer.stop()
        self._flush()

    def _flush(self) -> None:
        self._timer = None
        now = time.monotonic()
        pending, self._pending = self._pending, []
        elapsed = now - self._last_flush if self._last_flush else 0.0
        self._last_flush = now
        if elapsed > 0:
            inst = len(pending) / max(elapsed, self.min_interval)
            self._rate = inst if self._rate == 0 else 0.5 * self._rate + 0.5 * inst
        if not pending:
            self._rate *= 0.5
            return
        self._append(pending)

    def _append(self, pending: list[LogLine]) -> None:
        if len(pending) > self.max_lines:
            self.dropped += len(pending) - self.max_lines
            pending = pending[-self.max_lines :]
        self._all.extend(pending)
        over = len(self._all) - self.max_lines
        if over > 0:
            del self._all[:over]
            self.dropped += over
        new_rows = pending if not self._filtering else [ln for ln in pending if self._keep(ln)]
        rows = self._rows
        rows.extend(new_rows)
        removed = len(rows) - self.max_lines
        if removed > 0:
            del rows[:removed]
        else:
            removed = 0
        if self._all and rows and rows[0].seq and self._all[0].seq and rows[0].seq < self._all[0].seq:
            # filtered rows older than the oldest kept line leave too
            first = self._all[0].seq
            k = 0
            while k < len(rows) and rows[k].seq < first:
                k += 1
            del rows[:k]
            removed += k
        if self.cursor is not None and removed:
            self.cursor -= removed
            if self.cursor < 0:
                self.cursor = 0 if rows else None
        if not new_rows and not removed:
            self._update_status(throttle=True)
            return
        top = self._view_top()
        height = max(1, self.size.height)
        self._set_virtual_height(len(rows))
        if self.following:
            self.renders += 1
            self._scroll_bottom()
            self.refresh()
        else:
            # paused: the view stays on its lines; repaint only if what it shows changed
            new_top = top - removed
            if removed:
                self._scroll_y(max(0, new_top))
            first_new = len(rows) - len(new_rows)
            if new_top < 0 or first_new < max(0, new_top) + height:
                self.renders += 1
                self.refresh()
        self._update_status(throttle=True)

    # ------------------------------------------------------------------ filters

    @property
    def _filtering(self) -> bool:
        return bool(self._include or self._exclude or self._levels or self._min_level)

    def _keep(self, ln: LogLine) -> bool:
        if self._min_level is not None and ln.level < self._min_level:
            return False
        if self._levels is not None and ln.level not in self._levels:
            return False
        if self._include is not None and not (self._include.search(ln.text) or self._include.search(ln.source)):
            return False
        if self._exclude is not None and (self._exclude.search(ln.text) or self._exclude.search(ln.source)):
            return False
        return True

    def set_filter(
        self,
        include: str | None = None,
        exclude: str | None = None,
        *,
        levels: Iterable[Level] | None = None,
        min_level: Level | None = None,
        ignore_case: bool = True,
        strict: bool = False,
    ) -> None:
        """Show only lines matching `include`, hiding those matching `exclude`, of these levels.

        `include` as typed in a filter bar: a regex, `!regex` hides matching lines (as in
        k9s). Text that is not a valid regex is matched literally; with `strict=True` it
        raises ValueError (a readable reason) and nothing changes.
        """
        text = include or ""
        if include and include.startswith("!") and exclude is None:
            rest = include[1:]
            include, exclude = None, rest or None
        flags = re.IGNORECASE if ignore_case else 0

        def compile_(pattern: str | None) -> re.Pattern | None:
            if not pattern:
                return None
            try:
                return re.compile(pattern, flags)
            except re.error as err:
                if strict:
                    raise ValueError(f"invalid regex: {err}") from None
                return re.compile(re.escape(pattern), flags)

        inc, exc = compile_(include), compile_(exclude)
        self._include, self._exclude = inc, exc
        self._filter_text = text
        self._levels = frozenset(levels) if levels is not None else None
        self._min_level = min_level
        self._rebuild()

    @property
    def filter_text(self) -> str:
        """The filter as typed (the console's filter bar shows it again)."""
        return self._filter_text

    def clear_filter(self) -> None:
        self.set_filter()

    @property
    def filter_description(self) -> str:
        parts = []
        if self._include is not None:
            parts.append(f"/{self._include.pattern}/")
        if self._exclude is not None:
            parts.append(f"!/{self._exclude.pattern}/")
        if self._min_level is not None:
            parts.append(f"{self._min_level.name}+")
        if self._levels is not None:
            parts.append(",".join(sorted(lv.name for lv in self._levels)))
        return " ".join(parts)

    def _rebuild(self) -> None:
        keep_seq = self._rows[self.cursor].seq if self.cursor is not None and self.cursor < len(self._rows) else None
        self._rows = [ln for ln in self._all if self._keep(ln)] if self._filtering else list(self._all)
        self.cursor = None
        if keep_seq is not None:
            for i, ln in enumerate(self._rows):
                if ln.seq >= keep_seq:
                    self.cursor = i
                    break
        self._set_virtual_height(len(self._rows))
        if self.following or self.cursor is None:
            self._scroll_bottom()
        else:
            self._show_cursor()
        self.refresh()
        self._update_status()

    def search(self, pattern: str | None, *, ignore_case: bool = True) -> bool:
        """Highlight `pattern` and jump to its next match. Returns whether one was found."""
        self._row_cache.clear()
        if not pattern:
            self._search = None
            self.refresh()
            return False
        try:
            self._search = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        except re.error as err:
            raise ValueError(f"invalid regex: {err}") from None
        self.refresh()
        return self._jump(lambda ln: bool(self._search.search(ln.text)), forward=True, inclusive=True, wrap=True)

    # ------------------------------------------------------------------ navigation

    @property
    def rows(self) -> list[LogLine]:
        """The lines currently shown (after filters), oldest first."""
        return self._rows

    @property
    def lines(self) -> list[LogLine]:
        """Every line kept (bounded), filtered or not."""
        return self._all

    def _set_follow(self, following: bool) -> None:
        if following == self.following:
            return
        self.following = following
        self._show_bar(not following)
        if following:
            self.new_while_paused = 0
            self.cursor = None
            if self._pending:
                self.flush()
            self._scroll_bottom()
            self.refresh()
        self._update_status()
        self.post_message(self.FollowChanged(self, following))

    def _show_bar(self, show: bool) -> None:
        # Following, the scrollbar would be repainted on every flush for nothing: it is
        # hidden (its column stays reserved, so rows keep their width). An inline style,
        # not a CSS class: a class change re-applies the stylesheet to the pane and its
        # scrollbars on every pause / follow.
        self.styles.scrollbar_visibility = "visible" if show else "hidden"
        if show and self.show_vertical_scrollbar:  # hidden, it was not told (watch_scroll_y)
            self.vertical_scrollbar.position = self.scroll_y
            self._bar_stale = True  # its range too, with the status (_sync_bar)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        # ScrollView's, but a hidden scrollbar (following) is not told its position: a
        # refresh of a widget the screen does not show makes Textual re-arrange the whole
        # screen's map (every widget's geometry) before the next frame, on every flush.
        # `_show_bar` tells it when it shows again.
        if self.show_vertical_scrollbar and self.styles.scrollbar_visibility != "hidden":
            self.vertical_scrollbar.position = new_value
        if round(old_value) != round(new_value):
            self.refresh(self.size.region)

    def pause(self) -> None:
        self._set_follow(False)

    def resume(self) -> None:
        self._set_follow(True)

    def action_toggle_follow(self) -> None:
        self._set_follow(not self.following)

    def action_follow(self) -> None:
        self._set_follow(True)

    def action_top(self) -> None:
        self._set_follow(False)
        self.cursor = 0 if self._rows else None
        self._scroll_y(0)
        self.refresh()

    def _set_virtual_height(self, height: int) -> None:
        """Grow the scrollable height without a full layout on every flush.

        Assigning `virtual_size` re-lays out the whole screen (a full repaint of every
        widget). A log tail grows ~10 times a second: a layout is only needed when the
        scrollbar appears or disappears; otherwise the size is set quietly. The scrollbar
        is hidden while following (a layout shows it again with the current range); while
        paused it is told its new range with the status, at most once a second (each
        change repaints the whole bar).
        """
        size = Size(self.size.width, height)
        if size == self.virtual_size:
            return
        bar_needed = height > self.scrollable_content_region.height
        if bar_needed != self.show_vertical_scrollbar or size.width != self.virtual_size.width:
            self.virtual_size = size
            return
        self.set_reactive(LogTail.virtual_size, size)
        self._bar_stale = True

    def _sync_bar(self) -> None:
        if self._bar_stale and not self.following and self.show_vertical_scrollbar:
            self.vertical_scrollbar.window_virtual_size = self.virtual_size.height
        self._bar_stale = False

    def _scroll_bottom(self) -> None:
        self._scroll_y(self.max_scroll_y)

    def _scroll_y(self, y: float) -> None:
        # force: right after virtual_size grows the scrollbar is not "shown" yet
        self.scroll_to(y=y, animate=False, immediate=True, force=True)

    def _view_top(self) -> int:
        return int(self.scroll_offset.y)

    def _start_index(self, forward: bool) -> int:
        if self.cursor is not None:
            return self.cursor
        if forward:
            return self._view_top() - 1
        return min(len(self._rows), self._view_top() + max(1, self.size.height))

    def _jump(self, pred, *, forward: bool, inclusive: bool = False, wrap: bool = False) -> bool:
        rows = self._rows
        start = self._start_index(forward)
        if inclusive:
            start = start - 1 if forward else start + 1
        rng: Iterable[int] = range(start + 1, len(rows)) if forward else range(min(start, len(rows)) - 1, -1, -1)
        if wrap:
            import itertools

            rest = range(0, min(start + 1, len(rows))) if forward else range(len(rows) - 1, max(start, -1), -1)
            rng = itertools.chain(rng, rest)
        for i in rng:
            if pred(rows[i]):
                self._set_follow(False)
                self.cursor = i
                self._show_cursor()
                self.refresh()
                return True
        self.app.bell()
        return False

    def _show_cursor(self) -> None:
        if self.cursor is None:
            return
        top = self._view_top()
        h = max(1, self.size.height)
        if self.cursor < top or self.cursor >= top + h:
            self._scroll_y(max(0, self.cursor - h // 2))

    def action_next_error(self) -> bool:
        return self._jump(lambda ln: ln.level >= Level.ERROR, forward=True)

    def action_prev_error(self) -> bool:
        return self._jump(lambda ln: ln.level >= Level.ERROR, forward=False)

    def action_search_prompt(self) -> None:
        """`s`: ask the screen for a search pattern (the dashboard's bar); `]` / `[` then jump."""
        opener = getattr(self.screen, "open_search", None)
        if callable(opener):
            self.call_later(opener, self)

    def action_next_match(self) -> bool:
        if self._search is None:
            return False
        return self._jump(lambda ln: bool(self._search.search(ln.text)), forward=True, wrap=True)

    def action_prev_match(self) -> bool:
        if self._search is None:
            return False
        return self._jump(lambda ln: bool(self._search.search(ln.text)), forward=False, wrap=True)

    def action_cycle_level(self) -> None:
        i = _LEVEL_CYCLE.index(self._min_level) if self._min_level in _LEVEL_CYCLE else 0
        self._min_level = _LEVEL_CYCLE[(i + 1) % len(_LEVEL_CYCLE)]
        self._rebuild()

    def _move(self, delta: int) -> None:
        if not self._rows:
            return
        if self.cursor is None:
            self.cursor = min(len(self._rows) - 1, self._view_top() + max(1, self.size.height) - 1)
        self._set_follow(False)
        self.cursor = max(0, min(len(self._rows) - 1, self.cursor + delta))
        top = self._view_top()
        h = max(1, self.size.height)
        if self.cursor < top:
            self._scroll_y(self.cursor)
        elif self.cursor >= top + h:
            self._scroll_y(self.cursor - h + 1)
        self.refresh()

    def action_cursor_up(self) -> None:
        self._move(-1)

    def action_cursor_down(self) -> None:
        if self.cursor is not None and self.cursor >= len(self._rows) - 1:
            self._set_follow(True)
            return
        self._move(1)

    def action_page_up_rows(self) -> None:
        self._move(-max(1, self.size.height - 1))

    def action_page_down_rows(self) -> None:
        self._move(max(1, self.size.height - 1))

    def on_mouse_scroll_up(self, _event) -> None:
        self._set_follow(False)

    @property
    def current_line(self) -> LogLine | None:
        if self.cursor is not None and 0 <= self.cursor < len(self._rows):
            return self._rows[self.cursor]
        return self._rows[-1] if self._rows else None

    def detail(self) -> LogLine | None:
        """Enter: the line under the cursor (the newest while following), for the detail
        screen, which shows it raw and a multi-line entry in full (see `entry_detail`)."""
        return self.current_line

    def action_copy_line(self) -> None:
        line = self.current_line
        if line is None:
            self.app.bell()
            return
        self.app.copy_to_clipboard(f"{line.source} {line.text}")
        self.post_message(self.LineCopied(self, line))
        self.notify("Copied the line to the clipboard", timeout=2)

    # ------------------------------------------------------------------ status

    @property
    def status_text(self) -> str:
        state = "FOLLOW" if self.following else "PAUSED"
        parts = [state, f"{len(self._rows):,}/{len(self._all):,} lines", f"{self.errors_received:,} err"]
        if not self.following and self.new_while_paused:
            parts.append(f"+{self.new_while_paused:,} new")
        if self._filtering:
            parts.append(f"filter {self.filter_description}")
        if self._search is not None:
            parts.append(f"search /{self._search.pattern}/")
        return " · ".join(parts)

    def _update_status(self, throttle: bool = False) -> None:
        """Show the status in the border. As lines arrive at most once a second (the
        counts lag by a second at most): a border change repaints the whole pane, and a
        paused pane should cost nothing. While following, a due status goes with a flush
        (one repaint); the timer only catches up once lines stop. A change of state
        (pause, follow, filter, search) shows at once."""
        now = time.monotonic()
        if throttle and now - self._status_at < STATUS_EVERY:
            self._status_dirty = True
            if self._status_timer is None and self.is_attached:
                # on the beat: in the frame of the next flush (while following) or of the clock
                self._status_timer = Beat.of(self).once(self, self._status_at + STATUS_EVERY - now, self._status_due)
            return
        self._status_at = now
        self._status_dirty = False
        self._sync_bar()
        text = self.status_text
        if text != self.border_subtitle:
            self.border_subtitle = text
            for node in self.ancestors:  # the border the operator sees (the dashboard's pane slot)
                if isinstance(node, Widget) and getattr(node, "SHOWS_PANE_STATUS", False):
                    set_border_subtitle_row(node, text)  # its bottom row, not the whole pane
                    break

    def _status_due(self) -> None:
        self._status_timer = None
        if self._status_dirty:
            self._update_status(throttle=True)

    # ------------------------------------------------------------------ rendering

    def _color(self, variables: dict[str, str], names: Sequence[str], background: Color) -> Style:
        for n in names:
            value = variables.get(n)
            if not value:
                continue
            try:
                c = Color.parse(value)
            except Exception:
                continue
            if c.a < 1.0:
                c = background + c
            return Style(color=c.rich_color)
        return Style()

    def _get_styles(self) -> dict[str, Style]:
        if self._styles is not None:
            return self._styles
        app = self.app
        variables = getattr(app, "theme_variables", None) or app.get_css_variables()
        bg = self.styles.background if self.styles.background.a > 0 else Color.parse(variables.get("background", "#000000"))
        crit = self._color(variables, ("status-crit", "error"), bg)
        warn = self._color(variables, ("status-warn", "warning"), bg)
        ok = self._color(variables, ("status-ok", "success"), bg)
        unknown = self._color(variables, ("status-unknown", "text-muted", "foreground-muted"), bg)
        muted = self._color(variables, ("text-muted", "status-unknown"), bg)
        cursor_bg = self._color(variables, ("primary",), bg).color
        self._styles = {
            "crit": crit,
            "crit_text": crit,
            "warn": warn,
            "warn_text": warn,
            "ok": ok,
            "unknown": unknown,
            "muted": muted,
            "tag": Style(bold=True),
            "notice": muted + Style(italic=True),
            "match": Style(reverse=True),
            "cursor": Style(bgcolor=cursor_bg) if cursor_bg else Style(reverse=True),
        }
        return self._styles

    def _time(self, at: datetime) -> str:
        ts = int(at.timestamp())
        if self._time_cache[0] == ts:
            return self._time_cache[1]
        text = at.astimezone().strftime("%H:%M:%S ")
        self._time_cache = (ts, text)
        return text

    def render_lines(self, crop):
        # One paint: the base style, scroll offset and width are the same for every row.
        base = self._base = self.rich_style
        if base is not self._cache_base:
            # a new base style (theme, focus): cached rows are stale
            if base != self._cache_base:
                self._row_cache.clear()
            self._cache_base = base
        top, width = self._frame = (int(self.scroll_offset.y), self.size.width)
        try:
            return super().render_lines(crop)
        finally:
            self._base = Style.null()
            self._frame = None
            self._prune_rows(top)

    def _prune_rows(self, top: int) -> None:
        """Keep the rows of the lines on screen only.

        A row that scrolled off is not shown again while following, and a paused view
        repaints only when it scrolls. Rows kept longer would survive into Python's
        oldest GC generation and make full collections more frequent: at 200 lines/s
        that was most of the tail's GC time.
        """
        cache = self._row_cache
        height = max(1, self.size.height)
        if len(cache) <= height + 8:
            return
        visible = {id(ln) for ln in self._rows[max(0, top) : top + height]}
        for key in [k for k in cache if k[0] not in visible]:
            del cache[key]

    def _row_entry(self, index: int, width: int) -> list:
        line = self._rows[index]
        key = (id(line), width, index == self.cursor)
        entry = self._row_cache.get(key)
        if entry is None or entry[0] is not line:
            entry = self._row_cache[key] = [line, None, None, None]
        return entry

    def render_line(self, y: int) -> Strip:
        frame = self._frame
        if frame is not None:
            top, width = frame
            base = self._base
        else:
            top, width = self._view_top(), self.size.width
            base = self.rich_style
            if base != self._cache_base:
                self._row_cache.clear()
                self._cache_base = base
        index = top + y
        if index < 0 or index >= len(self._rows) or width <= 0:
            return Strip.blank(width, base)
        entry = self._row_entry(index, width)
        strip = entry[1]
        if strip is None:
            segments = self._render_row(entry[0], width, base, index == self.cursor)
            strip = entry[1] = Strip(segments, width)
        return strip

    def _composed_line(self, y: int, chrome: tuple) -> Strip | None:
        """Row `y` with its border (see `_RowStylesCache`); None: let Textual compose it."""
        frame = self._frame
        if frame is None:
            return None
        top, width = frame
        _gutter, _height, content_width, outer_width, left, right, key = chrome
        index = top + y
        if content_width != width or index < 0 or index >= len(self._rows) or width <= 0:
            return None
        entry = self._row_entry(index, width)
        if entry[2] == key:
            return entry[3]
        content = entry[1]
        segments = (list(content) if content is not None
                    else self._render_row(entry[0], width, self._base, index == self.cursor))
        if left is not None:
            segments.insert(0, left)
        if right is not None:
            segments.append(right)
        row = entry[3] = _Row(segments, outer_width)
        entry[2] = key
        widget_styles_cache(self).seed_filters(row)
        return row

    def _style_table(self, base: Style, cursor: bool) -> dict[str, Style]:
        key = (base, cursor)
        table = self._combined.get(key)
        if table is None:
            st = self._get_styles()
            table = {name: base + st[name] for name in ("crit", "warn", "ok", "muted", "notice")}
            table["base"] = base
            table["match"] = st["match"]
            if cursor:
                table = {k: (v + st["cursor"] if k != "match" else v) for k, v in table.items()}
            if len(self._combined) > 64:
                self._combined.clear()
            self._combined[key] = table
        return table

    def _render_row(self, line: LogLine, width: int, base: Style, is_cursor: bool) -> list[Segment]:
        # Few segments per row: every style change costs escape bytes on the terminal.
        tag = self._tags.get(line.source)
        if tag is None:
            if len(self._tags) > 1024:
                self._tags.clear()
            tag = self._tags[line.source] = line.source[: self.tag_width].ljust(self.tag_width) + " "
        prefix = self._time(line.at) + tag if self.show_time else tag
        lv = line.level
        label = _LABELS.get(lv, "     ") + " "
        if lv >= Level.ERROR:
            lname, tname = "crit", "crit"
        elif lv == Level.WARN:
            lname, tname = "warn", "warn"
        elif lv == Level.INFO:
            lname, tname = "ok", "base"
        elif lv in (Level.DEBUG, Level.TRACE):
            lname, tname = "muted", "muted"
        else:
            lname, tname = "base", "base"
            if line.notice:
                tname = "notice"
        room = max(0, width - len(prefix) - len(label))
        text = shown_text(line)
        if "\n" in line.text:
            more = folded(line)
            text = text[: max(0, room - len(more))] + more if len(text) + len(more) > room else text + more
        if not text.isascii():
            text = _fit_cells(text, room)
        elif len(text) > room:
            text = text[:room]  # cut at the edge (ASCII keeps width math on the fast path)
        cells = len(prefix) + len(label) + (cell_len(text) if not text.isascii() else len(text))
        pad = " " * max(0, width - cells)
        table = self._style_table(base, is_cursor)
        segs = [Segment(prefix, table["muted"])]
        if self._search is not None and text:
            segs.append(Segment(label, table[lname]))
            tstyle = table[tname]
            mstyle = tstyle + table["match"]
            pos = 0
            for m in self._search.finditer(text):
                if m.start() == m.end():
                    continue
                if m.start() > pos:
                    segs.append(Segment(text[pos : m.start()], tstyle))
                segs.append(Segment(text[m.start() : m.end()], mstyle))
                pos = m.end()
            segs.append(Segment(text[pos:] + pad, tstyle))
        elif lname == tname:
            segs.append(Segment(label + text + pad, table[lname]))
        else:
            segs.append(Segment(label, table[lname]))
            segs.append(Segment(text + pad, table[tname]))
        return segs


_PLAIN_HEAD = re.compile(
    r"\s*(?P<ts>\[?\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?\]?\s+)?"
    r"(?P<lv>\[?(?:TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|FATAL|CRITICAL|CRIT)\]?:?\s+"
    # structlog's ConsoleRenderer: `[error    ] `; winston: `error: `; Python logging: `ERROR:name:`
    r"|\[\s*(?i:trace|debug|info|notice|warn|warning|error|err|fatal|critical|crit)\s*\]\s+"
    r"|(?i:trace|debug|info|notice|http|verbose|silly|warn|warning|error|fatal|critical):\s*)?"
    r"(?:\[(?P<tag>[^\]\s]{1,64})\]:?\s*)?")
# logfmt / slog text: the pairs the pane already shows in its columns (or as the message)
_LOGFMT_PAIR = re.compile(r'(?:^|\s)([A-Za-z_@][\w.@-]*)=("(?:[^"\\]|\\.)*"|\S*)')
_LOGFMT_SHOWN = frozenset(("time", "ts", "t", "timestamp", "@timestamp", "level", "lvl", "at", "severity",
                           "msg", "message"))
_LOGFMT_HEAD = re.compile(r"[A-Za-z_][\w.]*=")


def shown_text(line: LogLine) -> str:
    """What a row shows after its time, source and level (which the pane shows once): a
    JSON line's message; a logfmt / slog line's message then its other pairs; a plain line
    (winston, structlog's console, Python logging) without its own leading timestamp,
    level word and `[source]` tag. A multi-line entry (a traceback, a stack): its first
    line (`folded`, in the row, adds how many lines it has). The raw line stays in the
    detail (enter) and the copy (y)."""
    text = line.text
    if "\n" in text:
        text = text[: text.index("\n")]
    if line.notice:
        return text
    msg = line.message
    if msg and msg != text and text.lstrip().startswith("{"):  # a JSON line: its message
        return msg
    if "=" in text and _LOGFMT_HEAD.match(text) and line.level is not Level.UNKNOWN:  # logfmt
        rest = _logfmt_rest(text, msg)
        if msg and msg != text:
            return f"{msg}  {rest}" if rest else msg
        if rest:
            return rest
    m = _PLAIN_HEAD.match(text)
    if m is None or not (m.group("ts") or m.group("lv")):
        if "\n" in line.text and msg and msg != text and text.startswith("Traceback"):
            return msg  # an uncaught exception: what it is (`ValueError: boom`)
        return text
    end = m.end()
    tag = m.group("tag")
    if tag and not (line.source.startswith(tag) or tag.startswith(line.source)):
        end = text.rfind("[", 0, m.start("tag"))  # a tag that is not the source stays
    rest = text[end:]
    return rest if rest.strip() else text


def _logfmt_rest(text: str, msg: str) -> str:
    """A logfmt line's pairs but those the row shows already (time, level, the message)."""
    keep = []
    for m in _LOGFMT_PAIR.finditer(text):
        key, value = m.group(1), m.group(2)
        if key in _LOGFMT_SHOWN:
            continue
        if key == "event" and (value == msg or value[1:-1] == msg):  # structlog's message key
            continue
        keep.append(m.group(0).strip())
    return " ".join(keep)


def folded(line: LogLine) -> str:
    """A multi-line entry's count as the row shows it after its first line ("" for one line)."""
    text = line.text
    if "\n" not in text:
        return ""
    from backends.sources.logs import entry_line_count

    return f"  [+{entry_line_count(text) - 1} lines]"


ENTRY_FOLD_LINES = 20  # a multi-line entry's lines shown in the detail before "e: expand"


def entry_detail(line: LogLine, *, expanded: bool = False, fold_at: int = ENTRY_FOLD_LINES) -> Text:
    """A log line's detail: what the pane shows, then the raw line; a multi-line entry
    (traceback, stack) folded to its first `fold_at` lines unless `expanded`."""

    from backends.sanitize import inert
    from backends.sources.logs import entry_line_count

    raw = line.text.split("\n")
    count = entry_line_count(line.text)
    text = Text()
    text.append("source   ", style="dim")
    text.append(f"{line.source}\n")
    text.append("level    ", style="dim")
    text.append(f"{line.level.name if line.level is not Level.UNKNOWN else '-'}\n")
    text.append("time     ", style="dim")
    text.append(f"{line.at.astimezone():%Y-%m-%d %H:%M:%S %Z}\n")
    text.append("message  ", style="dim")
    text.append(inert(shown_text(line), 2000) + "\n")
    if count > 1:
        text.append("lines    ", style="dim")
        text.append(f"{count} (one entry: its first line and {count - 1} continuation line(s))\n")
    text.append("\nraw\n", style="bold")
    shown = raw if expanded or len(raw) <= fold_at else raw[:fold_at]
    for part in shown:
        text.append(f"  {inert(part, 4096)}\n")
    if len(shown) < len(raw):
        text.append(f"  … {count - len(shown)} more line(s)  (e: expand)\n", style="dim")
    elif count > fold_at and expanded:
        text.append("  (e: fold)\n", style="dim")
    return text


def _fit_cells(text: str, room: int) -> str:
    if cell_len(text) <= room:
        return text
    out = []
    used = 0
    for ch in text:
        w = cell_len(ch)
        if used + w > room:
            break
        out.append(ch)
        used += w
    return "".join(out)
