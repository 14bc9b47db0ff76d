"""The replay engine: a recording played into the normal console, read-only, contacting nothing.

`ReplayEngine(path)` satisfies `backends.interface.EngineLike`: its monitor publishes the
recorded snapshots, its log hub the recorded log lines, its incidents the recorded incident
events; its action engine is read-only (every mutating action is refused by the engine) and
audits to a throwaway file. It has no source: nothing is polled, no backend is contacted.

The clock is the replay's: `position` moves when `tick(dt)` is called while playing (at
`speed` x real time), or by `step()`, `seek()`, `next_mark()` and `prev_mark()`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backends.actions.base import ActionEngine
from backends.clock import SYSTEM_CLOCK
from backends.config import Config, WarroomConfig
from backends.engine.audit import AuditLog
from backends.engine.incidents import Incident, IncidentManager
from backends.engine.monitor import Monitor
from backends.engine.recorder import Mark, Player, Recording, postmortem_from_recording
from backends.model import LogLine, Snapshot

SPEEDS = (1.0, 10.0, 60.0)


class ReplayMonitor(Monitor):
    """A monitor with no source: its snapshot is what the replay says it is."""

    def __init__(self) -> None:
        super().__init__([], probes=False)

    async def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.running = False

    def refresh(self, name: str | None = None) -> None:  # nothing to poll
        return None

    async def poll_once(self, names: Any = None, *, deadline: float | None = None,
                        **_kw: Any) -> Snapshot:
        return self._snapshot

    def show(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        for fn in list(self._subscribers):
            with contextlib.suppress(Exception):
                fn(snapshot)


class ReplayLogs:
    """The recorded log lines, as the console's log hub offers them."""

    def __init__(self) -> None:
        self.buffer: list[LogLine] = []
        self._subscribers: list[Callable[[Sequence[LogLine]], Any]] = []

    def subscribe(self, callback: Callable[[Sequence[LogLine]], Any]) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def recent(self, n: int | None = None, source: str | None = None) -> list[LogLine]:
        lines = self.buffer if source is None else [ln for ln in self.buffer if ln.source == source]
        return list(lines if n is None else lines[-n:])

    def publish(self, lines: Sequence[LogLine]) -> None:
        self.buffer.extend(lines)
        for fn in list(self._subscribers):
            with contextlib.suppress(Exception):
                fn(list(lines))

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class _NoStore:
    shared_store = False

    async def load_all(self) -> list[dict[str, Any]]:
        return []

    def subscribe(self, fn: Callable[[str], Any]) -> Callable[[], None]:
        return lambda: None

    async def close(self) -> None:
        return None


class ReplayIncidents(IncidentManager):
    """The recorded incidents as they were at the replay's position (read-only); `p` builds
    the postmortem draft from the recording."""

    def __init__(self, recording: Recording, config: Any) -> None:
        super().__init__(_NoStore(), config=config)
        self.recording = recording
        self.is_read_only = lambda: True

    def show(self, docs: dict[str, dict[str, Any]]) -> None:
        self.incidents = {k: Incident.from_dict(d) for k, d in docs.items()}
        for inc in list(self.incidents.values()):
            self._emit(inc)

    def postmortem(self, incident_id: str, now: datetime | None = None) -> str:
        return postmortem_from_recording(self.recording, incident_id)


class ReplayEngine:
    """EngineLike over a recording (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.recording = Recording(path)
        self._tmp = tempfile.mkdtemp(prefix="warroom-replay-")
        meta = self.recording.meta
        self.config = Config(warroom=WarroomConfig(
            name=meta.get("name") or "warroom", environment=(meta.get("environment") or "") + " replay",
            read_only=True, state_dir=Path(self._tmp), audit_path=Path(self._tmp) / "audit.jsonl"))
        self.read_only = True
        self.monitor = ReplayMonitor()
        self.audit = AuditLog(Path(self._tmp) / "audit.jsonl")
        self.actions = ActionEngine(self.audit, read_only=True, operator="replay")
        self.logs = ReplayLogs()
        self.log_buffer = self.config.warroom.log_buffer  # log lines the Logs pane keeps
        self.incidents = ReplayIncidents(self.recording, self.config)
        self.shared = None
        self.notifier = None
        self.clock = SYSTEM_CLOCK  # the console's clock (the replay's own time is `position`)
        self.player = Player(self.recording)
        self.start_at = self.recording.start or datetime.now(UTC)
        self.end_at = self.recording.end or self.start_at
        self.position = self.start_at
        self.playing = False
        self.speed = SPEEDS[0]
        self.listeners: list[Callable[[], Any]] = []  # told after every move (the timeline)
        self.resets = 0  # seeks that rebuilt the state from a keyframe
        self.seek(self.start_at)

    @property
    def marks(self) -> list[Mark]:
        return self.recording.marks

    async def start(self) -> None:
        await self.monitor.start()

    async def stop(self) -> None:
        await self.monitor.stop()
        self.playing = False
        with contextlib.suppress(Exception):
            self.recording.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    # -- the replay clock -----------------------------------------------------------

    def _show(self, applied: list[dict[str, Any]], reset: bool) -> None:
        st = self.player.state
        self.monitor.show(st.snapshot)
        if reset:
            self.resets += 1  # the console clears its Logs pane: the lines published next are all of them
            self.logs.buffer = []
            self.logs.publish(st.logs[-500:])
        else:
            lines = [ln for rec in applied if rec.get("t") == "log" for ln in self._lines(rec)]
            if lines:
                self.logs.publish(lines)
        if reset or any(rec.get("t") == "incident" for rec in applied):
            self.incidents.show(st.incidents)
        for fn in list(self.listeners):
            with contextlib.suppress(Exception):
                fn()

    @staticmethod
    def _lines(rec: dict[str, Any]) -> list[LogLine]:
        from backends.engine.recorder import decode

        return [x for x in (decode(ln) for ln in rec.get("lines") or ()) if isinstance(x, LogLine)]

    def seek(self, at: datetime) -> None:
        at = min(max(at, self.start_at), self.end_at)
        kf = self.recording.keyframe_before(at)
        kf_at = next((b.t0 for b in self.recording.batches if b.id == kf), 0.0)
        # forward, and no keyframe in between: apply the records on the way
        if self.position <= at and at != self.start_at and kf_at <= self.position.timestamp():
            applied = self.player.advance(at)
            self.position = at
            self._show(applied, reset=False)
            return
        applied = self.player.seek(at)
        self.position = at
        self._show(applied, reset=True)

    def tick(self, dt: float) -> None:
        """Real seconds passed: move on at `speed` while playing."""
        if not self.playing:
            return
        nxt = self.position + timedelta(seconds=dt * self.speed)
        if nxt >= self.end_at:
            nxt, self.playing = self.end_at, False
        self.seek(nxt)

    def toggle(self) -> None:
        if not self.playing and self.position >= self.end_at:
            self.seek(self.start_at)
        self.playing = not self.playing
        for fn in list(self.listeners):
            with contextlib.suppress(Exception):
                fn()

    def cycle_speed(self) -> float:
        i = SPEEDS.index(self.speed) if self.speed in SPEEDS else -1
        self.speed = SPEEDS[(i + 1) % len(SPEEDS)]
        for fn in list(self.listeners):
            with contextlib.suppress(Exception):
                fn()
        return self.speed

    def step(self) -> None:
        """Pause and move to the next recorded moment (the next record after the position)."""
        self.playing = False
        rec = self.player.peek()
        if rec is None:
            self.seek(self.end_at)
            return
        self.seek(max(datetime.fromisoformat(str(rec["at"])), self.position))

    def next_mark(self) -> Mark | None:
        """Pause on the next finding or action (or incident event) after the position."""
        self.playing = False
        mark = next((m for m in self.marks if m.at > self.position + timedelta(milliseconds=1)), None)
        if mark is not None:
            self.seek(mark.at)
        return mark

    def prev_mark(self) -> Mark | None:
        self.playing = False
        mark = next((m for m in reversed(self.marks) if m.at < self.position - timedelta(milliseconds=1)), None)
        if mark is not None:
            self.seek(mark.at)
        return mark


__all__ = ["SPEEDS", "ReplayEngine", "ReplayIncidents", "ReplayLogs", "ReplayMonitor"]
