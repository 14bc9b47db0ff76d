"""Typed messages of the console. Bursts collapse: a newer message replaces a queued one."""

from __future__ import annotations

from typing import Any

from textual.message import Message

from backends.model import Snapshot


class SnapshotArrived(Message):
    """The monitor published a snapshot. Only the newest queued one is ever applied."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotArrived)


class LogLinesArrived(Message):
    """New log lines from the log hub (batched by the sender)."""

    def __init__(self, lines: list[Any]) -> None:
        super().__init__()
        self.lines = lines


class GoToPane(Message):
    """Show and focus a pane (palette "go to pane", number keys, pane switcher)."""

    def __init__(self, pane: str) -> None:
        super().__init__()
        self.pane = pane


class ActionFinished(Message):
    """An action ran (or was refused) from a modal; the history screen and panes may refresh."""

    def __init__(self, plan: Any, result: Any) -> None:
        super().__init__()
        self.plan = plan
        self.result = result


class IncidentChanged(Message):
    """An incident was declared, updated or resolved; the header shows the current one."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, IncidentChanged)
