"""`warroom replay FILE`: the console on a recording (backends/engine/replay.py), read-only.

The app is the normal console (`WarroomApp`) on a `ReplayEngine`, plus the timeline bar
(widgets/timeline.py) above the footer and the replay keys (shown in the footer):

    space  play / pause          .  step to the next recorded moment
    ]      next finding/action   [  previous finding/action
    x      speed ×1 → ×10 → ×60

The header's clock is the replay's position. No backend is contacted; every mutating
action is absent from keys and palette and refused by the engine.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from textual.binding import Binding
from textual.widgets import Footer, Input

from backends.engine.replay import ReplayEngine
from tui.app import WarroomApp
from widgets.timeline import TimelineBar

TICK_S = 0.25

REPLAY_BINDINGS: list[Binding] = [
    Binding("space", "replay_toggle", "Play/Pause", id="replay_toggle", priority=True),
    Binding("full_stop", "replay_step", "Step", id="replay_step", key_display=".", priority=True),
    Binding("right_square_bracket", "replay_next", "Next mark", id="replay_next", key_display="]",
            priority=True),
    Binding("left_square_bracket", "replay_prev", "Prev mark", id="replay_prev", key_display="[",
            priority=True),
    Binding("x", "replay_speed", "Speed", id="replay_speed", priority=True),
]
REPLAY_ACTIONS = {"replay_toggle", "replay_step", "replay_next", "replay_prev", "replay_speed"}


class ReplayApp(WarroomApp):
    BINDINGS = [*WarroomApp.BINDINGS, *REPLAY_BINDINGS]

    def __init__(self, path: str | Path, *, theme: str | None = None, tick_s: float = TICK_S) -> None:
        engine = ReplayEngine(path)
        self.replay = engine
        self.tick_s = tick_s
        super().__init__(engine, config=engine.config, read_only=True, theme=theme,
                         clock=lambda: engine.position)
        self.audit_check_s = 0  # the replay's audit is a throwaway file
        self.config_check_s = 0
        self.title = f"warroom replay {Path(path).name}"
        self._resets = self.replay.resets

    async def on_ready(self) -> None:
        # Textual calls WarroomApp's on_mount/on_ready too (every class in the MRO): not super()
        dashboard = self.dashboard
        if dashboard is not None:
            bar = TimelineBar()
            with contextlib.suppress(Exception):
                await dashboard.mount(bar, before=dashboard.query_one(Footer))
        self.replay.listeners.append(self._moved)
        self._moved()
        if self.tick_s > 0:
            self.set_interval(self.tick_s, self._tick, name="replay-tick")

    def _tick(self) -> None:
        if self.replay.playing:
            self.replay.tick(self.tick_s)

    def timeline(self) -> TimelineBar | None:
        dashboard = self.dashboard
        if dashboard is None:
            return None
        try:
            return dashboard.query_one(TimelineBar)
        except Exception:
            return None

    def _moved(self) -> None:
        if self.replay.resets != self._resets:  # rebuilt from a keyframe: its log lines come next
            self._resets = self.replay.resets
            self._reset_logs()
        bar = self.timeline()
        e = self.replay
        if bar is not None:
            bar.show(start=e.start_at, end=e.end_at, position=e.position, marks=e.marks,
                     playing=e.playing, speed=e.speed)
        header = getattr(self.dashboard, "header", None)
        with contextlib.suppress(Exception):
            header.refresh()  # type: ignore[union-attr]

    def _reset_logs(self) -> None:
        """A seek backwards: the logs pane shows the lines up to the new position only."""
        dashboard = self.dashboard
        if dashboard is None:
            return
        from widgets.logs import LogTail

        with contextlib.suppress(Exception):
            for tail in dashboard.query(LogTail):
                tail._all.clear()
                tail._pending.clear()
                tail._last_seq = 0
                tail.received = tail.errors_received = tail.dropped = tail.new_while_paused = 0
                tail._rebuild()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in REPLAY_ACTIONS:
            return not isinstance(self.focused, Input)  # typing a filter: the key is the input's
        return super().check_action(action, parameters)

    def action_replay_toggle(self) -> None:
        self.replay.toggle()

    def action_replay_step(self) -> None:
        self.replay.step()

    def action_replay_next(self) -> None:
        mark = self.replay.next_mark()
        if mark is None:
            self.notify("no finding or action after this moment", timeout=3)

    def action_replay_prev(self) -> None:
        mark = self.replay.prev_mark()
        if mark is None:
            self.notify("no finding or action before this moment", timeout=3)

    def action_replay_speed(self) -> None:
        self.replay.cycle_speed()
