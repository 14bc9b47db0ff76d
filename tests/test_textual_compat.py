"""Every Textual private API warroom uses is in tui/textual_compat.py, and each has a test
here that fails when a Textual upgrade changes it (the pins: textual==8.2.8)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from textual import events
from textual.app import App
from textual.binding import Binding, BindingsMap
from textual.message_pump import MessagePump
from textual.widget import Widget
from textual.widgets import Static

ROOT = Path(__file__).resolve().parent.parent
PRIVATE = re.compile(r"\btextual\._|\._bindings\b|\._keymap\b|_normalize_keymap|\._styles_cache\b|__watchers"
                     r"|_handle_exception|_dispatch_message|_flush_next_callbacks|_next_callbacks|\._border_subtitle\b")


def test_no_private_textual_use_outside_the_compat_module():
    found = []
    for folder in ("tui", "widgets", "themes"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "textual_compat.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if PRIVATE.search(code):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_message_dispatch_and_callback_flush_have_the_shapes_the_guard_wraps():
    sig = inspect.signature(MessagePump._dispatch_message)
    assert list(sig.parameters) == ["self", "message"]
    assert inspect.iscoroutinefunction(MessagePump._flush_next_callbacks)
    src = inspect.getsource(MessagePump._flush_next_callbacks)
    assert "_next_callbacks" in src and "callback._prevent" in src and "invoke(callback.callback)" in src
    from textual._callback import invoke  # noqa: F401 - the guard calls it

    cb = events.Callback(callback=lambda: None)
    assert isinstance(cb._prevent, set)


def test_app_handle_exception_and_shutdown_exist():
    assert callable(App._handle_exception) and list(inspect.signature(App._handle_exception).parameters) == [
        "self", "error"]
    assert inspect.iscoroutinefunction(App._shutdown)
    assert hasattr(App(), "_exit")


async def test_keymap_bindings_and_styles_cache_internals():
    from tui.textual_compat import (
        app_keymap,
        normalize_keymap,
        own_bindings,
        set_widget_styles_cache,
        widget_styles_cache,
    )

    class Probe(App):
        BINDINGS = [Binding("x", "bell", "Bell", id="probe_bell")]

        def compose(self):
            yield Static("hi", id="s")

    app = Probe()
    async with app.run_test() as pilot:
        app.set_keymap({"probe_bell": "y"})
        assert app_keymap(app) == {"probe_bell": "y"}
        assert normalize_keymap(app, {"probe_bell": "question_mark"})["probe_bell"] == "question_mark"
        assert isinstance(own_bindings(app), BindingsMap)
        from tui.textual_compat import app_driver

        assert app_driver(app) is not None and callable(getattr(app_driver(app), "write", None))
        static = app.query_one("#s", Static)
        cache = widget_styles_cache(static)
        assert cache is not None and callable(getattr(cache, "clear", None))
        set_widget_styles_cache(static, cache)
        assert widget_styles_cache(static) is cache
        await pilot.pause()


def test_styles_cache_memo_and_box_drawing():
    from tui.textual_compat import StylesCache, clear_styles_cache, get_box

    assert callable(getattr(StylesCache.get_inner_outer, "cache_clear", None))
    clear_styles_cache()
    assert callable(get_box)
    sig = inspect.signature(StylesCache.render_line)
    for name in ("styles", "y", "size", "content_size", "padding", "base_background", "background",
                 "render_content_line", "border_title", "border_subtitle", "opacity", "ansi_theme", "native_ansi"):
        assert name in sig.parameters, name


async def test_reactive_watchers_live_where_drop_watchers_looks():
    from tui.textual_compat import drop_watchers

    class Probe(App):
        def compose(self):
            yield Static("hi", id="s")

    app = Probe()
    async with app.run_test():
        static = app.query_one("#s", Static)
        static.watch(app, "theme", lambda *_: None, init=False)
        watchers = getattr(app, "__watchers", None)
        assert isinstance(watchers, dict) and any(node is static for node, _ in watchers.get("theme", []))
        drop_watchers([app], [static])
        assert not any(node is static for node, _ in getattr(app, "__watchers", {}).get("theme", []))


@pytest.mark.parametrize("cls", [MessagePump, Widget])
def test_names_the_shadowing_check_relies_on(cls):
    assert "_closed" in inspect.getsource(MessagePump.__init__)


async def test_a_border_subtitle_set_by_row_repaints_the_bottom_row_only():
    """The log pane's status line: the text Textual's setter would store, and only the
    bottom border row dirty (the setter repaints the whole pane)."""
    from textual.containers import Container
    from textual.geometry import Region

    from tui.textual_compat import set_border_subtitle_row

    class Boxed(App):
        CSS = "#box { border: round white; height: 8; width: 40; }"

        def compose(self):
            with Container(id="box"):
                yield Static("inside")

    app = Boxed()
    async with app.run_test(size=(60, 12)) as pilot:
        box = app.query_one("#box")
        await pilot.pause()
        assert Widget.__dict__["border_subtitle"]._internal_name == "_border_subtitle"
        box._dirty_regions.clear()
        box._repaint_regions.clear()
        set_border_subtitle_row(box, "FOLLOW · 3/3 lines")
        assert box.border_subtitle == "FOLLOW · 3/3 lines"
        assert box._dirty_regions == {Region(0, 7, 40, 1)}  # the bottom row, in the widget's own frame
        await pilot.pause()
        assert "FOLLOW · 3/3 lines" in "".join(
            seg.text for seg in app.screen._compositor.render_update(full=True).strips[7])  # the box's last row
        # no border at the bottom, or not mounted: the public setter
        plain = Static("x")
        set_border_subtitle_row(plain, "y")
        assert plain.border_subtitle == "y"


async def test_sparse_frames_paint_what_textuals_partial_update_paints():
    """The sparse partial update (tui/textual_compat.py) writes, byte for byte, what Textual's
    own writes for the same changed regions: on a screen of bordered, titled, nested panes
    with tables, a header line and a footer, for scattered regions (a clock cell and a log
    row far apart), single cells, whole rows and random sets."""
    import random

    from textual.containers import Grid, Vertical
    from textual.geometry import Region
    from textual.widgets import DataTable, Footer

    from tui.textual_compat import (
        install_sparse_frames,
        sparse_partial_update,
        textual_partial_update,
    )

    class Panes(App):
        CSS = """
        Grid { grid-size: 3 2; }
        .slot { border: round $primary; border-title-align: left; }
        Static.clock { height: 1; dock: top; }
        DataTable { height: 1fr; }
        """

        def compose(self):
            yield Static("12:00:00 UTC · header", classes="clock")
            with Grid():
                for i in range(6):
                    slot = Vertical(classes="slot")
                    slot.border_title = f"{i + 1} pane"
                    slot.border_subtitle = "FOLLOW · 10/10 lines"
                    with slot:
                        yield Static(f"summary {i} ● OK  read 2s ago")
                        table = DataTable()
                        table.add_columns("State", "Name", "Age")
                        for r in range(12):
                            table.add_row("● OK", f"row {r} of pane {i} " + "x" * (r % 5), f"{r}s")
                        yield table
            yield Footer()

    app = Panes()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        compositor = app.screen._compositor
        console = app.console
        rng = random.Random(17)
        cases = [
            [Region(150, 0, 8, 1), Region(2, 40, 100, 1)],  # the clock and a log row
            [Region(10, 5, 1, 1)],
            [Region(0, 20, 160, 1)],
            [Region(0, 0, 160, 48)],
        ]
        for _ in range(40):
            cases.append([Region(x, y, rng.randrange(1, 161 - x), rng.randrange(1, min(6, 49 - y)))
                          for x, y in ((rng.randrange(160), rng.randrange(48)) for _ in range(rng.randrange(1, 6)))])
        for regions in cases:
            compositor._dirty_regions.update(regions)
            ours = sparse_partial_update(compositor)
            compositor._dirty_regions.update(regions)
            theirs = textual_partial_update(compositor)
            assert ours.render_segments(console) == theirs.render_segments(console), regions
        assert install_sparse_frames()
