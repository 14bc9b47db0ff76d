"""The replay's timeline bar: where the replay is, what happened when.

Line 1: play state, speed, the position's time, the recording's span and the next mark.
Line 2: the span as a bar: `│` is the position, marks are drawn where they happened:
`◆` a finding appeared, `◇` one cleared, `▲` an action, `●` an incident event.
Presentational: `show(...)` is given everything; it does no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.text import Text
from textual.widget import Widget

GLYPHS = {"finding": ("◆", "bold red"), "cleared": ("◇", "green"), "action": ("▲", "bold yellow"),
          "incident": ("●", "bold magenta")}
PRIORITY = {"incident": 0, "action": 1, "finding": 2, "cleared": 3}


def _hms(at: datetime | None) -> str:
    return at.strftime("%H:%M:%S") if at else "--:--:--"


class TimelineBar(Widget):
    DEFAULT_CSS = """
    TimelineBar {
        height: 2;
        background: $panel;
        padding: 0 1;
    }
    """

    def __init__(self, *, id: str | None = "timeline") -> None:
        super().__init__(id=id)
        self.start: datetime | None = None
        self.end: datetime | None = None
        self.position: datetime | None = None
        self.marks: Sequence[Any] = ()
        self.playing = False
        self.speed = 1.0

    def show(self, *, start: datetime, end: datetime, position: datetime, marks: Sequence[Any],
             playing: bool, speed: float) -> None:
        self.start, self.end, self.position = start, end, position
        self.marks, self.playing, self.speed = marks, playing, speed
        self.refresh()

    def column_of(self, at: datetime, width: int) -> int:
        if self.start is None or self.end is None or width <= 1:
            return 0
        span = (self.end - self.start).total_seconds()
        if span <= 0:
            return 0
        frac = (at - self.start).total_seconds() / span
        return max(0, min(width - 1, int(round(frac * (width - 1)))))

    def head(self) -> Text:
        state = "▶ playing" if self.playing else "⏸ paused"
        text = Text()
        text.append(f" {state} ", style="bold reverse")
        text.append(f" ×{self.speed:g}  ", style="bold")
        text.append(f"{_hms(self.position)}", style="bold")
        text.append(f"  ({_hms(self.start)} – {_hms(self.end)} UTC)", style="dim")
        pos = self.position
        nxt = next((m for m in self.marks if pos is not None and m.at > pos), None)
        if nxt is not None:
            glyph, style = GLYPHS.get(nxt.kind, ("?", ""))
            text.append("  next ", style="dim")
            text.append(f"{glyph} {_hms(nxt.at)} {nxt.label}", style=style)
        return text

    def bar(self, width: int) -> Text:
        cells: list[tuple[str, str]] = [("─", "dim")] * max(1, width)
        best: dict[int, int] = {}
        for m in self.marks:
            col = self.column_of(m.at, width)
            p = PRIORITY.get(m.kind, 9)
            if col not in best or p < best[col]:
                best[col] = p
                cells[col] = GLYPHS.get(m.kind, ("?", ""))
        if self.position is not None:
            col = self.column_of(self.position, width)
            glyph = cells[col][0]
            cells[col] = ("│" if glyph == "─" else glyph, "bold reverse")
        text = Text()
        for glyph, style in cells:
            text.append(glyph, style=style)
        return text

    def render(self) -> Text:
        width = max(1, self.content_size.width)
        head = self.head()
        head.truncate(width)
        return Text("\n").join([head, self.bar(width)])
