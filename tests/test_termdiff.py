"""tui/termdiff.py: only changed cells reach the terminal, and the terminal shows the same.

A small reference terminal (cursor moves, SGR, text, wide characters, scroll margins and
scroll up) plays both the frames as Textual writes them and what TermDiff writes
instead: the screens must be equal after every frame.
"""

from __future__ import annotations

import re

from rich.cells import cell_len, set_cell_size

from tui.termdiff import TermDiff, diffing_driver

W, H = 40, 12
_TOK = re.compile(r"\x1b\[(\d+);(\d+)H|\x1b\[(\d+);(\d+)r|\x1b\[r|\x1b\[(\d+)S|(\x1b\[[0-9;]*m)|(\n)|(\x1b[^\x1b]*)")


class Screen:
    """What a VT terminal shows (only what the console writes)."""

    def __init__(self) -> None:
        self.cells = [[(" ", "")] * W for _ in range(H)]
        self.x = self.y = 0
        self.style = ""
        self.top, self.bottom = 0, H - 1

    def feed(self, data: str) -> None:
        pos = 0
        for m in _TOK.finditer(data):
            if m.start() > pos:
                self._text(data[pos : m.start()])
            pos = m.end()
            if m.group(1):
                self.y, self.x = int(m.group(1)) - 1, int(m.group(2)) - 1
            elif m.group(3):
                self.top, self.bottom = int(m.group(3)) - 1, int(m.group(4)) - 1
                self.x = self.y = 0
            elif m.group(0) == "\x1b[r":
                self.top, self.bottom = 0, H - 1
                self.x = self.y = 0
            elif m.group(5):
                for _ in range(int(m.group(5))):
                    del self.cells[self.top]
                    self.cells.insert(self.bottom, [(" ", "")] * W)
            elif m.group(6):
                sgr = m.group(6)
                self.style = "" if sgr in ("\x1b[0m", "\x1b[m") else self.style + sgr
            elif m.group(7):
                self.y += 1
        if pos < len(data):
            self._text(data[pos:])

    def _text(self, text: str) -> None:
        row = list(self.cells[self.y])
        for ch in text:
            w = cell_len(ch)
            row[self.x] = (ch, self.style)
            if w == 2:
                row[self.x + 1] = ("", self.style)
            self.x += w
        self.cells[self.y] = row


def frame(rows: dict[int, str], style: str = "\x1b[38;5;250m", cursor=(0, 0)) -> str:
    """A frame as Textual writes one: a cursor move per row, styled text, newlines."""
    out = []
    for y, text in sorted(rows.items()):
        out.append(f"\x1b[{y + 1};1H{style}{text}\x1b[0m\n")
    return "".join(out)[:-1] + f"\x1b[{cursor[1] + 1};{cursor[0] + 1}H"


def border(text: str) -> str:
    return "│" + set_cell_size(text, W - 2) + "│"


def play(frames: list[str]) -> TermDiff:
    raw, diffed, diff = Screen(), Screen(), TermDiff((W, H))
    for f in frames:
        raw.feed(f)
        diffed.feed(diff.frame(f, (W, H)))
        assert diffed.cells == raw.cells
    return diff


def test_a_following_tail_scrolls_and_writes_only_the_new_rows():
    lines = [f"line {i} of the log" for i in range(40)]
    frames = [frame({y: border("") for y in range(H)})]
    for n in range(3, 40, 3):  # three new lines per frame, the pane is rows 2..9
        shown = lines[max(0, n - 8) : n]
        frames.append(frame({2 + i: border(t) for i, t in enumerate(shown)} | {10: border(f"{n} lines")}))
    diff = play(frames)
    assert diff.scrolls >= 8
    assert diff.bytes_out < diff.bytes_in / 2


def test_a_table_with_one_new_figure_writes_that_figure():
    rows = {y: border(f"svc-{y}  running  {y}ms") for y in range(H)}
    diff = play([frame(rows)])
    before = diff.bytes_out
    rows[5] = border("svc-5  running  7ms")
    diff2_out = TermDiff((W, H))
    diff2_out.frame(frame({y: border(f"svc-{y}  running  {y}ms") for y in range(H)}), (W, H))
    out = diff2_out.frame(frame(rows), (W, H))
    assert "7" in out and "svc-4" not in out and len(out) < 40
    assert before > 0


def test_wide_characters_styles_and_partial_rows_stay_exact():
    frames = [frame({y: border("") for y in range(H)})]
    frames.append(frame({3: border("● OK  日本語 ✓ 31337"), 4: border("▁▂▃▅")}))
    frames.append(frame({3: border("● WARN 日本 ✓ 31337")}, style="\x1b[1;38;5;179m"))
    frames.append("\x1b[4;10H\x1b[7mX\x1b[0m\x1b[1;1H")  # a partial row, as a chop
    frames.append(frame({3: border("× DOWN 本日語 ✗ 1")}))
    play(frames)


def test_unknown_sequences_pass_through_and_mode_switches_are_kept():
    diff = TermDiff((W, H))
    assert diff.frame("\x1b[?2026h", (W, H)) == "\x1b[?2026h"
    f = frame({1: border("hello")})
    diff.frame(f, (W, H))
    assert diff.frame("\x1b[2J", (W, H)) == "\x1b[2J"  # a clear: the grid is unknown again
    assert "hello" in diff.frame(f, (W, H))  # so the next frame paints in full
    assert diff.frame(f, (W, H)) == "\x1b[1;1H"  # and then nothing changed: the cursor only


def test_a_resize_forgets_the_grid():
    diff = TermDiff((W, H))
    f = frame({1: border("hello")})
    diff.frame(f, (W, H))
    assert "hello" in diff.frame(f, (W + 1, H))


def test_the_console_diffs_on_a_terminal_only():
    from textual.drivers.headless_driver import HeadlessDriver
    from textual.drivers.linux_driver import LinuxDriver

    assert diffing_driver(HeadlessDriver) is HeadlessDriver
    cls = diffing_driver(LinuxDriver)
    assert issubclass(cls, LinuxDriver) and cls is not LinuxDriver


def test_the_served_consoles_web_driver_writes_through_the_diff():
    """`warroom serve` runs the app with tui.serve_app.WarroomWebDriver: its frames go
    through the terminal diff as the terminal's do (xterm.js keeps the cells); the size
    is the app's (the browser's last resize), not a tty's."""
    from textual.drivers.web_driver import WebDriver

    from tui.serve_app import WarroomWebDriver

    cls = diffing_driver(WarroomWebDriver)
    assert cls is not WarroomWebDriver and issubclass(cls, WarroomWebDriver)
    assert issubclass(diffing_driver(WebDriver), WebDriver) and diffing_driver(WebDriver) is not WebDriver
    assert diffing_driver(object) is object
