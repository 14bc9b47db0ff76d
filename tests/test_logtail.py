"""LogTail with Pilot: lines appear, batching, pause/resume keeps everything, filters,
jump to error, search, copy, bounded buffer, theme colours, only visible rows rendered."""

from __future__ import annotations

import asyncio
import time

import pytest
from textual.app import App, ComposeResult
from textual.theme import Theme

from backends.model import Level, LogLine
from backends.sources.logs import parse_line
from widgets.logs import LogTail

SIZE = (100, 20)


class TailApp(App):
    def __init__(self, **kw) -> None:
        super().__init__()
        self.kw = kw
        self.messages: list = []

    def compose(self) -> ComposeResult:
        yield LogTail(**self.kw)

    def on_mount(self) -> None:
        self.register_theme(Theme(name="test-status", primary="#0000aa", dark=True,
                                  variables={"status-crit": "#ff0000", "status-warn": "#ffaa00",
                                             "status-ok": "#00ff00", "status-unknown": "#888888"}))
        self.theme = "test-status"
        self.query_one(LogTail).focus()

    def on_log_tail_line_copied(self, event: LogTail.LineCopied) -> None:
        self.messages.append(event)

    def on_log_tail_follow_changed(self, event: LogTail.FollowChanged) -> None:
        self.messages.append(event)


class Lines:
    def __init__(self) -> None:
        self.seq = 0

    def __call__(self, n: int, text: str = "INFO line", source: str = "api") -> list[LogLine]:
        out = []
        for _ in range(n):
            self.seq += 1
            out.append(parse_line(source, f"{text} {self.seq}", seq=self.seq))
        return out


async def settle(pilot, tail: LogTail, limit: float = 3.0) -> None:
    """Wait until the pending lines are flushed (the timer runs at most ~10x a second)."""
    deadline = time.monotonic() + limit
    while tail._pending or tail._timer is not None:
        if time.monotonic() > deadline:
            raise AssertionError("LogTail did not flush its pending lines")
        await pilot.pause(0.02)
    await pilot.pause()


def screen_text(tail: LogTail) -> list[str]:
    return [tail.render_line(y).text.rstrip() for y in range(tail.size.height)]


async def test_lines_appear_with_source_and_level():
    app = TailApp()
    mk = Lines()
    async with app.run_test(size=SIZE) as pilot:
        tail = app.query_one(LogTail)
        tail.add_lines(mk(3, "INFO hello") + mk(1, "ERROR broke", source="listener"))
        await settle(pilot, tail)
        rows = [r for r in screen_text(tail) if r]
        assert len(rows) == 4
        assert "api" in rows[0] and "INFO " in rows[0] and "hello 1" in rows[0]
        assert "listener" in rows[3] and "ERROR" in rows[3] and "broke 4" in rows[3]
        # level colour from the theme's semantic variable
        strip = tail.render_line(3)
        label = next(seg for seg in strip if seg.text.startswith("ERROR"))
        assert label.style.color.triplet.hex == "#ff0000"
        ok = next(seg for seg in tail.render_line(0) if seg.text.startswith("INFO"))
        assert ok.style.color.triplet.hex == "#00ff00"


async def test_rendering_is_batched_and_bounded_to_10_per_second():
    app = TailApp()
    mk = Lines()
    async with app.run_test(size=SIZE) as pilot:
        tail = app.query_one(LogTail)
        await pilot.pause(0.2)
        start = tail.renders
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            tail.add_lines(mk(5))  # 5 lines every ~10 ms
            await asyncio.sleep(0.01)
        await settle(pilot, tail)
        renders = tail.renders - start
        elapsed = time.monotonic() - t0
        assert 1 <= renders <= 10 * elapsed + 2, renders
        assert len(tail.rows) == mk.seq
        assert screen_text(tail)[-1].endswith(f"line {mk.seq}")


async def test_idle_tail_schedules_nothing():
    app = TailApp()
    async with app.run_test(size=SIZE) as pilot:
        tail = app.query_one(LogTail)
        tail.add_lines(Lines()(2))
        await settle(pilot, tail)
        assert tail._timer is None  # no timer runs while no line arrives


async def test_pause_keeps_everything_and_resume_catches_up():
    app = TailApp()
    mk = Lines()
    async with app.run_test(size=SIZE) as pilot:
        tail = app.query_one(LogTail)
        tail.add_lines(mk(50))
        await settle(pilot, tail)
        assert tail.following and screen_text(tail)[-1].endswith("line 50")
        await pilot.press("p")
        assert not tail.following
        before = screen_text(tail)
        tail.add_lines(mk(200))
        await settle(pilot, tail)
        assert screen_text(tail) == before  # the view stays put while paused
        assert len(tail.rows) == 250  # ... but nothing is lost
        assert tail.new_while_paused == 200 and "+200 new" in tail.status_text
        assert "PAUSED" in tail.status_text
        await pilot.press("p")
        await pilot.pause()
        assert tail.following and screen_text(tail)[-1].endswith("line 250")
        assert "FOLLOW" in tail.status_text
        assert [m.following for m in app.messages if isinstance(m, LogTail.FollowChanged)] == [False, True]


async def test_paused_view_stays_on_its_lines_while_old_ones_leave_the_buffer():
    app = TailApp(max_lines=100)
    mk = Lines()
    async with app.run_test(size=SIZE) as pilot:
        tail = app.query_one(LogTail)
        tail.add_lines(mk(100))
        await settle(pilot, tail)
        await pilot.press("p")
        first_visible = screen_text(tail)[0]
        tail.add_lines(mk(30))  # 30 old lines leave; the view shows the same lines
        await settle(pilot, tail)
        assert screen_text(tail)[0] == first_visible
        assert len(tail.rows) == 100 and tail.rows[0].text.endswith("line 31")


async def test_filters_by_regex_and_level():
    app = TailApp()
    mk = Lines()
    async with app.run_test(size=SIZE) as pilot:
        tail = app.query_one(LogTail)
        tail.add_lines(mk(5, "INFO order settled") + mk(3, "ERROR rpc timeout") + mk(2, "WARN queue depth"))
        await settle(pilot, tail)
        tail.set_filter("rpc|queue")
        assert [ln.level for ln in tail.rows] == [Level.ERROR] * 3 + [Level.WARN] * 2
        tail.set_filter(exclude="rpc")
        assert len(tail.rows) == 7
        tail.set_filter(min_level=Level.WARN)
        assert len(tail.rows) == 5
        tail.set_filter("queue", levels=[Level.ERROR])
        assert tail.rows == []
        with pytest.raises(ValueError, match="invalid regex"):
            tail.set_filter("(unclosed", strict=True)
        assert tail.rows == []  # an invalid filter changes nothing
        tail.set_filter("!rpc")  # k9s style: ! hides what matches
        assert len(tail.rows) == 7 and tail.filter_text == "!rpc"
        tail.add_lines(mk(1, "INFO weird (paren"))
        tail.flush()
        tail.set_filter("(paren")  # not a regex: matched literally, typed text never crashes
        assert [ln.text for ln in tail.rows] == ["INFO weird (paren 11"]
        tail.clear_filter()
        assert len(tail.rows) == 11
        # new lines go through the filter too
        tail.set_filter(min_level=Level.ERROR)
        tail.add_lines(mk(4, "INFO more") + mk(1, "FATAL dead"))
        await settle(pilot, tail)
        assert [ln.level for ln in tail.rows][-1] is Level.FATAL and len(tail.rows) == 4
        assert len(tail.lines) == 16  # everything is kept for when the filter changes
        # level filter on a key: all -> WARN+ -> ERROR+ -> all
        tail.clear_filter()
        await pilot.press("l")
        assert len(tail.rows) == 6 and "WARN+" in tail.status_text
        await pilot.press("l")
        assert len(tail.rows) == 4
        await pilot.press("l")
        assert len(tail.rows) == 16


async def test_jump_to_next_and_previous_error():
    app = TailApp()
    mk = Lines()
    async with app.run_test(size=SIZE) as pilot:
        tail = app.query_one(LogTail)
        lines = mk(30) + mk(1, "ERROR first") + mk(40) + mk(1, "FATAL second") + mk(40)
        tail.add_lines(lines)
        await settle(pilot, tail)
        await pilot.press("N")  # previous error from the bottom
        assert tail.current_line.text == "FATAL second 72" and not tail.following
        assert any("FATAL second 72" in row for row in screen_text(tail))  # scrolled into view
        await pilot.press("N")
        assert tail.current_line.text == "ERROR first 31"
        assert any("ERROR first 31" in row for row in screen_text(tail))
        await pilot.press("n")
        assert tail.current_line.text == "FATAL second 72"
        await pilot.press("n")  # no more errors: stays
        assert tail.current_line.text == "FATAL second 72"


async def test_search_highlights_and_jumps():
    app = TailApp()
    mk = Lines()
    async with app.run_test(size=SIZE) as pilot:
        tail = app.query_one(LogTail)
        tail.add_lines(mk(10) + mk(1, "INFO order ord-7 settled") + mk(50) + mk(1, "INFO order ord-9 settled") + mk(10))
        await settle(pilot, tail)
        assert tail.search(r"ord-\d")  # like less: the first match from the top of the screen
        assert tail.current_line.text.startswith("INFO order ord-9")
        row = next(y for y in range(tail.size.height) if "ord-9" in tail.render_line(y).text)
        hl = [seg for seg in tail.render_line(row) if seg.text == "ord-9"]
        assert hl and hl[0].style.reverse
        await pilot.press("right_square_bracket")  # wraps around to the older match
        assert tail.current_line.text.startswith("INFO order ord-7")
        assert any("ord-7" in r for r in screen_text(tail))
        await pilot.press("right_square_bracket")
        assert tail.current_line.text.startswith("INFO order ord-9")
        await pilot.press("left_square_bracket")
        assert tail.current_line.text.startswith("INFO order ord-7")
        assert not tail.search("nothing-like-this")


async def test_copy_line_uses_the_clipboard():
    app = TailApp()
    mk = Lines()
    async with app.run_test(size=SIZE) as pilot:
        tail = app.query_one(LogTail)
        tail.add_lines(mk(5) + mk(1, "ERROR copy me", source="listener") + mk(5))
        await settle(pilot, tail)
        await pilot.press("N")
        await pilot.press("y")
        assert app.clipboard == "listener ERROR copy me 6"
        copied = [m for m in app.messages if isinstance(m, LogTail.LineCopied)]
        assert copied and copied[0].line.text == "ERROR copy me 6"


async def test_cursor_keys_pause_and_end_follows():
    app = TailApp()
    mk = Lines()
    async with app.run_test(size=SIZE) as pilot:
        tail = app.query_one(LogTail)
        tail.add_lines(mk(100))
        await settle(pilot, tail)
        await pilot.press("up", "up")
        assert not tail.following and tail.current_line.text == "INFO line 98"
        await pilot.press("pageup")
        assert tail.current_line.seq < 98
        await pilot.press("end")
        assert tail.following
        await pilot.press("home")
        assert tail.current_line.seq == 1 and screen_text(tail)[0].endswith("line 1")


async def test_bounded_buffer_default_10000():
    app = TailApp()
    mk = Lines()
    async with app.run_test(size=SIZE) as pilot:
        tail = app.query_one(LogTail)
        for _ in range(5):
            tail.add_lines(mk(5_000))
            await settle(pilot, tail)
        assert len(tail.lines) == 10_000 and len(tail.rows) == 10_000
        assert tail.rows[0].seq == 15_001 and tail.received == 25_000
        assert screen_text(tail)[-1].endswith("line 25000")


async def test_only_visible_rows_are_rendered(monkeypatch):
    app = TailApp()
    mk = Lines()
    async with app.run_test(size=SIZE) as pilot:
        tail = app.query_one(LogTail)
        calls = []
        original = tail._render_row
        monkeypatch.setattr(tail, "_render_row", lambda *a, **k: calls.append(1) or original(*a, **k))
        tail.add_lines(mk(8_000))
        await settle(pilot, tail)
        await pilot.pause(0.1)
        assert 0 < len(calls) <= 4 * tail.size.height


async def test_bindings_have_ids():
    ids = {b.id for b in LogTail.BINDINGS}
    assert {"pause_follow", "next_error", "prev_error", "copy_line", "level_filter"} <= ids
    assert next(b for b in LogTail.BINDINGS if b.id == "pause_follow").key == "p"


async def test_hub_feeds_the_tail(tmp_path):
    """The engine and the widget together: a real file, followed, shown."""
    from backends.sources.logs import LogHub, LogSpec

    path = tmp_path / "app.log"
    path.write_text("")
    hub = LogHub([LogSpec(name="app", path=str(path))], poll_interval=0.02)
    app = TailApp()
    async with app.run_test(size=SIZE) as pilot:
        tail = app.query_one(LogTail)
        hub.subscribe(tail.add_lines)
        await hub.start()
        try:
            await pilot.pause(0.1)
            with open(path, "a") as fh:  # noqa: ASYNC230 - a local test file
                fh.write('{"level":"error","msg":"from the file"}\nplain line\n')
            deadline = time.monotonic() + 5
            while len([ln for ln in tail.rows if not ln.notice]) < 2:
                assert time.monotonic() < deadline, "lines never reached the tail"
                await pilot.pause(0.05)
            assert tail.rows[-2].level is Level.ERROR
            assert screen_text(tail)[len(tail.rows) - 1].endswith("plain line")
        finally:
            await hub.stop()
