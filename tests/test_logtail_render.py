"""LogTail's own row composition (border + content in one Strip, filters known to leave
rows as they are) gives exactly what Textual's StylesCache gives; the row cache holds
the lines on screen only; the border status follows the lines without extra repaints."""

from __future__ import annotations

import time

import pytest
from textual._styles_cache import StylesCache
from textual.app import App, ComposeResult
from textual.filter import Monochrome
from textual.geometry import Region

from tests.test_logtail import Lines, TailApp, settle
from widgets.logs import LogTail

SIZE = (100, 20)


class BorderApp(TailApp):
    CSS = "LogTail { border: round $primary; }"


class MonoApp(BorderApp):
    # a line filter that does change the rows (as NO_COLOR would)
    def on_mount(self) -> None:
        super().on_mount()
        self._filters.append(Monochrome())


class FancyApp(TailApp):
    # styles the fast path leaves to Textual (side padding, tint)
    CSS = "LogTail { border: round $primary; padding: 0 1; tint: red 10%; }"


def textual_rows(tail: LogTail) -> list:
    """The widget's rows as Textual's plain StylesCache composes them."""
    region = Region(0, 0, *tail.outer_size)
    tail._base = tail.rich_style
    tail._frame = (int(tail.scroll_offset.y), tail.size.width)
    try:
        strips = StylesCache().render_widget(tail, region)
    finally:
        tail._base = None
        tail._frame = None
    return [list(s) for s in strips]


def fast_rows(tail: LogTail) -> list:
    tail._styles_cache.clear()
    return [list(s) for s in tail.render_lines(Region(0, 0, *tail.outer_size))]


@pytest.mark.parametrize("app_class", [TailApp, BorderApp, MonoApp, FancyApp])
async def test_rows_match_textual_composition(app_class):
    app = app_class()
    mk = Lines()
    async with app.run_test(size=SIZE) as pilot:
        tail = app.query_one(LogTail)
        tail.add_lines(mk(30) + mk(1, "ERROR boom", source="listener") + mk(2, "WARN slow ünïcode 日本語")
                       + mk(3, "DEBUG detail " + "x" * 200))
        await settle(pilot, tail)
        assert fast_rows(tail) == textual_rows(tail)
        composed = any(entry[3] is not None for entry in tail._row_cache.values())
        assert composed is (app_class is not FancyApp)  # the fast path ran where it applies
        await pilot.press("N")  # a cursor row, paused: the scrollbar shows
        await pilot.pause()
        assert fast_rows(tail) == textual_rows(tail)
        tail.search("boom|slow")
        await pilot.pause()
        assert fast_rows(tail) == textual_rows(tail)
        app.theme = "textual-light"
        await pilot.pause()
        assert fast_rows(tail) == textual_rows(tail)


async def test_filters_see_the_same_rows():
    """A row seeded as its own filtered row is what the filters would have made of it."""
    app = BorderApp()
    mk = Lines()
    async with app.run_test(size=SIZE) as pilot:
        tail = app.query_one(LogTail)
        tail.add_lines(mk(25) + mk(2, "ERROR boom"))
        await settle(pilot, tail)
        filters = app.get_line_filters()
        assert filters
        background = tail.background_colors[1]
        for strip in tail.render_lines(Region(0, 0, *tail.outer_size)):
            for f in filters:
                assert list(strip) == f.apply(list(strip), background)


async def test_row_cache_keeps_the_lines_on_screen_only():
    app = BorderApp()
    mk = Lines()
    async with app.run_test(size=SIZE) as pilot:
        tail = app.query_one(LogTail)
        for _ in range(20):
            tail.add_lines(mk(50))
            tail.flush()  # not a beat's wait per step: a flood redraws once a second
            deadline = time.monotonic() + 3
            while id(tail.rows[-1]) not in {key[0] for key in tail._row_cache}:  # the new bottom row drawn
                assert time.monotonic() < deadline, "the tail did not draw its new rows"
                await pilot.pause(0.02)
        await settle(pilot, tail)
        visible = {id(ln) for ln in tail.rows[-tail.size.height:]}
        assert len(tail._row_cache) <= tail.size.height + 8
        assert {key[0] for key in tail._row_cache} <= visible


async def test_status_follows_lines_with_the_flushes():
    app = BorderApp()
    mk = Lines()
    async with app.run_test(size=SIZE) as pilot:
        tail = app.query_one(LogTail)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.5:
            tail.add_lines(mk(10))
            await pilot.pause(0.05)
        await settle(pilot, tail)
        # the counts lag by a second at most, and catch up once lines stop
        deadline = time.monotonic() + 3
        while f"{mk.seq:,}/{mk.seq:,} lines" not in str(tail.border_subtitle):
            assert time.monotonic() < deadline, tail.border_subtitle
            await pilot.pause(0.1)
        await pilot.press("p")  # a change of state shows at once
        assert "PAUSED" in str(tail.border_subtitle)


class TwoTails(App):
    CSS = "LogTail { height: 1fr; border: round $primary; }"

    def compose(self) -> ComposeResult:
        yield LogTail(id="a")
        yield LogTail(id="b")


async def test_each_tail_composes_its_own_rows():
    app = TwoTails()
    mk = Lines()
    async with app.run_test(size=SIZE) as pilot:
        a, b = app.query_one("#a", LogTail), app.query_one("#b", LogTail)
        a.add_lines(mk(20, "INFO left"))
        b.add_lines(mk(20, "ERROR right"))
        await settle(pilot, a)
        await settle(pilot, b)
        assert fast_rows(a) == textual_rows(a)
        assert fast_rows(b) == textual_rows(b)
        assert "left" in "".join(s.text for s in a.render_lines(Region(0, 0, *a.outer_size)))


@pytest.mark.parametrize("source,raw,shown", [
    ("action-workers", "2026-12-02T19:24:46.784Z INFO  [action-workers] Action executed: 1 job(s)",
     "Action executed: 1 job(s)"),
    ("api", '{"level":"info","time":"2026-12-02T19:24:46Z","msg":"GET /health 200","ms":3}', "GET /health 200"),
    ("x", "plain text without a head", "plain text without a head"),
    ("x", "2026-12-02 19:24:46,123 ERROR [worker-3] boom", "[worker-3] boom"),  # not the source: kept
    ("listener", '2026-12-02T19:24:47Z INFO  [listener] EVENT_LOG: {"event": "EscrowReleased"}',
     'EVENT_LOG: {"event": "EscrowReleased"}'),
    ("x", "2026-12-02T19:24:47Z INFO ", "2026-12-02T19:24:47Z INFO "),  # nothing after the head: all of it
])
def test_a_row_shows_time_level_and_source_once(source, raw, shown):
    """The pane shows time, source and level in their columns; the row's text is the
    message, not the raw line's own copy of them (the raw line stays in the detail)."""
    from backends.sources.logs import parse_line
    from widgets.logs import shown_text

    assert shown_text(parse_line(source, raw)) == shown
