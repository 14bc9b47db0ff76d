"""Sources pane: every configured source and the monitor's view of it.

ok / degraded (with the reason and the time of the last good reading) / pending.
Each state has a symbol and a word; colour comes from the theme's `$status-*`
variables. Only cells whose text changed are updated.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual.binding import BindingType
from textual.widgets import DataTable

from backends.model import Snapshot, SourceState, SourceStatus, Status

STATE_STATUS = {
    SourceState.OK: (Status.OK, "OK"),
    SourceState.DEGRADED: (Status.CRIT, "DEGRADED"),
    SourceState.PENDING: (Status.UNKNOWN, "PENDING"),
}
EMPTY = "\x00empty"
# Fixed widths: no re-measuring (and no repaint of the whole table) when a cell changes.
COLUMNS = (("state", "State", 10), ("source", "Source", 18), ("reason", "Reason", 48),
           ("when", "Last good", 10), ("kind", "Kind", 10))


def _hms(when: datetime | None) -> str:
    return when.strftime("%H:%M:%S") if when else "never"


def _every(seconds: float) -> str:
    if not seconds:
        return ""
    return f"every {seconds:g}s" if seconds < 60 else f"every {seconds / 60:g}m"


class SourcesPane(DataTable):
    """Configured sources and their monitor state."""

    BINDINGS: ClassVar[list[BindingType]] = []  # DataTable's own keys (cursor, enter) are inherited
    DEFAULT_CSS = """
    SourcesPane { height: 1fr; scrollbar-size-horizontal: 0; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._rows: dict[str, tuple[str, ...]] = {}
        self._snapshot: Snapshot | None = None
        self._filter = ""

    def on_mount(self) -> None:
        for key, label, width in COLUMNS:
            self.add_column(label, key=key, width=width)
        self.app.theme_changed_signal.subscribe(self, self._on_theme)
        if self._snapshot is not None:  # shown before it was mounted (kiosk views)
            self.show(self._snapshot)

    def on_unmount(self) -> None:
        # Textual prunes a removed node's subscription only on the next theme change; the
        # callback closes over the node, so until then the pane (and its rows) stays alive.
        self.app.theme_changed_signal.unsubscribe(self)

    def _on_theme(self, _theme) -> None:
        if self._snapshot is not None:
            self._rows.clear()
            self.clear()
            self.show(self._snapshot)

    # ------------------------------------------------------------------ contract

    def show(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        if not self.columns:  # not mounted yet: on_mount shows it
            return
        wanted = [s for s in snapshot.sources.values() if self._filter in s.name.lower()]
        names = [s.name for s in wanted]
        empty = "no sources match the filter" if snapshot.sources else "no sources configured"
        if not wanted and EMPTY not in self._rows:
            self.add_row(Text(""), Text(empty, style="dim"), Text(""), Text(""), Text(""), key=EMPTY)
            self._rows[EMPTY] = ()
        elif wanted and EMPTY in self._rows:
            self.remove_row(EMPTY)
            del self._rows[EMPTY]
        names.append(EMPTY)
        for gone in [n for n in self._rows if n not in names]:
            self.remove_row(gone)
            del self._rows[gone]
        for status in wanted:
            cells = self._cells(status)
            texts = tuple(c.plain for c in cells)
            old = self._rows.get(status.name)
            if old is None:
                self.add_row(*cells, key=status.name)
            elif old != texts:
                for (col, _, _), cell, before, after in zip(COLUMNS, cells, old, texts, strict=True):
                    if before != after:
                        self.update_cell(status.name, col, cell)
            self._rows[status.name] = texts

    def set_filter(self, text: str) -> None:
        self._filter = text.strip().lower()
        if self._snapshot is not None:
            self.show(self._snapshot)

    def selected_text(self) -> str:
        if self._snapshot is None or not self._rows:
            return ""
        st = self.selected_status()
        if st is None:
            return ""
        return f"{st.name} ({st.kind}): {st.state.value}" + (f" - {st.reason}" if st.reason else "")

    def selected_status(self) -> SourceStatus | None:
        if self._snapshot is None or self.row_count == 0:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:
            return None
        return self._snapshot.sources.get(key) if key is not None else None

    def detail(self) -> SourceStatus | None:
        return self.selected_status()

    # ------------------------------------------------------------------ cells

    def _style(self, status: Status) -> str:
        try:
            return self.app.theme_variables.get(f"status-{status.value}", "")
        except Exception:
            return ""

    def _cells(self, st: SourceStatus) -> tuple[Text, ...]:
        status, word = STATE_STATUS[st.state]
        style = self._style(status)
        state = Text(f"{status.symbol} {word}", style=f"bold {style}".strip())
        if st.state is SourceState.OK:
            when = Text(_every(st.interval), style="dim")
        elif st.state is SourceState.DEGRADED:
            when = Text(_hms(st.last_good))
        else:
            when = Text("waiting", style="dim")
        reason = st.reason  # (failure counts live in the detail screen: a cell that never
        # stops changing would redraw the pane on every poll)
        return (state, Text(st.name, style="bold"), Text(reason, style=style if st.degraded else ""),
                when, Text(st.kind or "", style="dim"))
