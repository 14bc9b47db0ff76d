"""Write only what changed on the terminal (issue 17).

Textual repaints a widget's whole region when it refreshes: a table with one new
latency figure rewrites every row, and the log tail, on each new line, rewrites every
row of the pane (each row moved up by one). `TermDiff` sits between Textual and the
terminal: it keeps what the terminal shows (a cell grid: character and SGR style per
cell, from what was written), parses each frame Textual writes (cursor moves, SGR
styles, text) into the grid, and writes only the cells that differ, grouped in spans.
When a run of rows is the old run moved up by k rows (the tail following its lines),
it scrolls that band on the terminal itself (DECSTBM margins + SU, as lnav and
curses do) and writes only the k new rows.

What the terminal shows ends up the same, cell for cell: anything the parser does
not model (a clear, the alternate screen, an unknown escape inside a frame) passes
through as it is and makes the grid unknown, so the following frames are written in
full where they paint until the grid is known again. Mode switches, OSC sequences
(title, clipboard) and the bell written on their own pass through untouched.

`diffing_driver(cls)` is the driver class the console runs with (a subclass of
Textual's LinuxDriver whose `write` goes through a TermDiff); any other driver (the
headless one of the tests, the web driver of `serve`) is returned as it is.
"""

from __future__ import annotations

import os
import re
import sys

from rich.cells import cell_len

_TOKEN = re.compile(r"\x1b\[(\d+);(\d+)H|(\x1b\[[0-9;:]*m)|(\n)|(\x1b[^\x1b]?[^\x1b]*)")
# written on their own, these never change what a cell shows
_SAFE_ALONE = re.compile(r"(?:\x1b\[\?[0-9;]*[hl]|\x1b\[\?[0-9;]*\$p|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
                         r"|\x1b\[[0-9;]*[ -/]*q|\x1b\[[<>=][0-9;]*[a-zA-Z]|\x07|\x1b\[\d+;\d+H)*")
_SCREEN_SWITCH = re.compile(r"\x1b\[\?(?:1049|1047|47)[hl]")
_RESET = "\x1b[0m"
_MIN_SCROLL_ROWS = 3
_GAP = 6  # equal cells between two changed spans that are rewritten rather than jumped over


class TermDiff:
    """The terminal's cells as written; `frame(data)` returns what to write instead."""

    def __init__(self, size: tuple[int, int] | None = None) -> None:
        self.width, self.height = size or (0, 0)
        self.rows: list[list | None] = []
        self.reset()
        self.frames = self.bytes_in = self.bytes_out = self.scrolls = 0

    def reset(self, size: tuple[int, int] | None = None) -> None:
        if size is not None:
            self.width, self.height = size
        self.rows = [None] * self.height  # None: not known

    # ------------------------------------------------------------------ parse

    def _parse_text(self, data, new, rows, width, height):
        x = y = -1
        style = ""
        trailing = ""
        pos = 0
        for m in _TOKEN.finditer(data):
            if m.start() > pos:
                if y < 0 or x < 0:
                    return None
                x = self._put(new, rows, y, x, style, data[pos : m.start()], width)
                if x < 0:
                    return None
                trailing = ""
            pos = m.end()
            if m.group(1) is not None:
                y, x = int(m.group(1)) - 1, int(m.group(2)) - 1
                if not (0 <= y < height and 0 <= x <= width):
                    return None
                trailing = m.group(0)
            elif m.group(3) is not None:
                sgr = m.group(3)
                style = "" if sgr in (_RESET, "\x1b[m") else style + sgr
            elif m.group(4) is not None:
                y += 1
                if y >= height:
                    return None
            else:
                return None
        if pos < len(data):
            if y < 0 or x < 0:
                return None
            if self._put(new, rows, y, x, style, data[pos:], width) < 0:
                return None
            trailing = ""
        return new, trailing

    @staticmethod
    def _put(new, rows, y, x, style, text, width) -> int:
        row = new.get(y)
        if row is None:
            old = rows[y]
            row = new[y] = list(old) if old is not None else [None] * width
        if text.isascii():
            if not text.isprintable():
                return -1
            end = x + len(text)
            if end > width:
                return -1
            row[x:end] = [(ch, style) for ch in text]
            return end
        for ch in text:
            w = cell_len(ch)
            if w == 0:
                if ch in "\r\t\b\x0b\x0c":
                    return -1
                if x > 0 and row[x - 1] is not None:  # a combining mark: part of the cell before
                    prev = row[x - 1]
                    row[x - 1] = (prev[0] + ch, prev[1])
                continue
            if x + w > width:
                return -1
            row[x] = (ch, style)
            if w == 2:
                row[x + 1] = ("", style)
            x += w
        return x

    # ------------------------------------------------------------------ diff

    def frame(self, data: str, size: tuple[int, int] | None = None) -> str:
        """What to write for `data` (a frame or any other write)."""
        self.frames += 1
        self.bytes_in += len(data)
        if size is not None and size != (self.width, self.height):
            self.reset(size)
        if not data:
            return data
        if "\x1b" in data and _SAFE_ALONE.fullmatch(data) and not _SCREEN_SWITCH.search(data):
            self.bytes_out += len(data)
            return data  # modes, titles, clipboard, bell, cursor moves: no cell changes
        parsed = self._parse_text(data, {}, self.rows, self.width, self.height) if self.height else None
        if parsed is None:
            self.reset()
            self.bytes_out += len(data)
            return data
        new, trailing = parsed
        out: list[str] = []
        if new:
            self._scroll(new, out)
            for y in sorted(new):
                self._emit_row(y, new[y], out)
        out.append(trailing)
        text = "".join(out)
        self.bytes_out += len(text)
        return text

    def _scroll(self, new: dict[int, list], out: list[str]) -> None:
        """Scroll bands of rows that moved up on the terminal (full-width rows only)."""
        rows = self.rows
        ys = sorted(y for y, row in new.items() if row != rows[y])
        i = 0
        while i < len(ys):
            j = i
            while j + 1 < len(ys) and ys[j + 1] == ys[j] + 1:
                j += 1
            top, bottom = ys[i], ys[j]
            i = j + 1
            n = bottom - top + 1
            if n < _MIN_SCROLL_ROWS:
                continue
            best_k, best = 0, 0
            for k in range(1, n - 1):
                hits = sum(1 for y in range(top, bottom - k + 1)
                           if rows[y + k] is not None and new[y] == rows[y + k])
                if hits > best:
                    best_k, best = k, hits
                if hits == n - k:
                    break
            if best_k == 0 or best < max(2, (n - best_k) // 2):
                continue
            k = best_k
            out.append(f"{_RESET}\x1b[{top + 1};{bottom + 1}r\x1b[{k}S\x1b[r")
            self.scrolls += 1
            moved = rows[top + k : bottom + 1]
            # the rows that came in at the bottom are blank (default background)
            blank = [(" ", "")] * self.width
            rows[top : bottom + 1] = moved + [list(blank) for _ in range(k)]

    def _emit_row(self, y: int, row: list, out: list[str]) -> None:
        old = self.rows[y]
        self.rows[y] = row
        width = self.width
        if old is None:
            old = [None] * width
        spans: list[list[int]] = []
        x = 0
        while x < width:
            if row[x] is not None and row[x] != old[x]:
                start = x
                last = x
                x += 1
                while x < width:
                    if row[x] is not None and row[x] != old[x]:
                        last = x
                    elif x - last > _GAP or row[x] is None:
                        break
                    x += 1
                spans.append([start, last + 1])
            else:
                x += 1
        for start, end in spans:
            while start > 0 and row[start] is not None and row[start][0] == "" and row[start - 1] is not None:
                start -= 1  # the right half of a wide character: start at its left half
            while end < width and row[end] is not None and row[end][0] == "":
                end += 1
            out.append(f"\x1b[{y + 1};{start + 1}H")
            style = None
            chunk: list[str] = []
            for cell in row[start:end]:
                if cell is None:
                    break
                ch, st = cell
                if st != style:
                    if chunk:
                        out.append("".join(chunk))
                        chunk = []
                    if style:
                        out.append(_RESET)
                    style = st
                    if st:
                        out.append(st)
                chunk.append(ch)
            if chunk:
                out.append("".join(chunk))
            if style:
                out.append(_RESET)


def _terminal_size(fd: int) -> tuple[int, int] | None:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return size.columns, size.lines


def diffing_driver(cls: type) -> type:
    """`cls` with its writes going through a TermDiff, when it is Textual's Linux driver or
    the served console's web driver (tui.serve_app: xterm.js in the browser keeps the cells
    as a terminal does; the size is the one the browser last sent, as the app knows it)."""
    if os.environ.get("WARROOM_TERMDIFF", "1") == "0":
        return cls
    from textual.drivers.web_driver import WebDriver

    bases: tuple[type, ...] = (WebDriver,)
    try:
        from textual.drivers.linux_driver import LinuxDriver

        bases += (LinuxDriver,)
    except ImportError:  # pragma: no cover - Windows
        pass
    if not (isinstance(cls, type) and issubclass(cls, bases)):
        return cls
    web = issubclass(cls, WebDriver)

    class DiffingDriver(cls):
        termdiff: TermDiff | None = None

        def write(self, data: str) -> None:
            diff = self.termdiff
            if diff is None:
                diff = self.termdiff = TermDiff()
            if web:
                app = getattr(self, "warroom_app", None)  # set by tui.serve_app.WarroomWebDriver
                size = (app.size.width, app.size.height) if app is not None else None
            else:
                try:
                    fd = sys.__stdout__.fileno() if sys.__stdout__ is not None else 1
                except (OSError, ValueError):
                    fd = 1
                size = _terminal_size(fd)
            try:
                data = diff.frame(data, size) if size else data
            except Exception:  # never lose a frame to the diff: write it as it is, start over
                diff.reset()
            super().write(data)

    DiffingDriver.__name__ = DiffingDriver.__qualname__ = f"Diffing{cls.__name__}"
    return DiffingDriver
