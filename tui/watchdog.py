"""The loop watchdog: a thread outside the event loop that notices when the loop stalls.

A console whose event loop is blocked (a CPU-bound parse, a blocking call that slipped
onto the loop) cannot draw anything: its clock stops and the screen keeps saying what it
said last -- a wall display reads "all OK" while nothing is watched. The loop beats
every `beat_s`; a thread checks the beat:

- the loop has not run for `stall_s` (2 s): the stall is logged with where the loop is
  stuck (the main thread's stack, as faulthandler prints it), to the `tui.watchdog`
  logger and to `<state dir>/stalls.log`;
- it lasts `show_after_s` (5 s): the top line of the terminal says so, written by the
  thread itself ("✖ STALE · console stalled for 7 s …", refreshed every second), since
  the loop cannot draw. It is written between frames only (Textual's writer thread is
  idle by then: nothing is drawn while the loop is blocked), with the cursor saved and
  restored, and only on a real terminal (never headless, never into `warroom serve`'s
  web stream);
- the loop runs again: "resumed after N s" is logged and the app is asked to redraw
  the whole screen (which removes the line the thread wrote).

`install(app)` starts one for a running Textual app (called once from its mount);
it stops by itself when the app stops running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STALL_S = 2.0  # the loop did not run for this long: log where it is stuck
SHOW_AFTER_S = 5.0  # ... for this long: the screen says the console is stalled
BEAT_S = 0.25


def main_stack(thread_id: int | None) -> str:
    """The stack of a thread (default the main thread), most recent call last."""
    ident = thread_id if thread_id is not None else threading.main_thread().ident
    frame = sys._current_frames().get(ident) if ident is not None else None  # noqa: SLF001 - what faulthandler reads
    if frame is None:
        return "  (no stack: the thread is gone)\n"
    return "".join(traceback.format_stack(frame))


class TerminalBanner:
    """Writes one line on the terminal's first row, straight to its file descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, text: str) -> None:
        try:
            width = os.get_terminal_size(self.fd).columns or 80
        except OSError:
            width = 80
        line = (" " + text).ljust(width)[:width]
        # save cursor, row 1 col 1, bold white on red, the line, reset, restore cursor
        os.write(self.fd, b"\x1b7\x1b[1;1H\x1b[0;1;97;41m" + line.encode("utf-8", "replace") + b"\x1b[0m\x1b8")


class LoopWatchdog:
    """Watches one event loop from a thread. Thresholds and the clock are injectable (tests)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        stall_s: float | None = None,  # None: the module's STALL_S / SHOW_AFTER_S / BEAT_S
        show_after_s: float | None = None,
        beat_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        thread_id: int | None = None,
        show: Callable[[str], None] | None = None,
        on_resume: Callable[[], None] | None = None,
        alive: Callable[[], bool] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.loop = loop
        self.stall_s = STALL_S if stall_s is None else stall_s
        self.show_after_s = SHOW_AFTER_S if show_after_s is None else show_after_s
        self.beat_s = BEAT_S if beat_s is None else beat_s
        self.clock = clock
        self.thread_id = thread_id
        self.show = show
        self.on_resume = on_resume
        self.alive = alive or (lambda: True)
        self.log_path = log_path
        self.last_beat = clock()
        self.stalled = False
        self.shown = False
        self.stalls = 0  # stalls seen
        self.longest_s = 0.0
        self.last_stack = ""
        self.banners: list[str] = []  # what was shown (the last few)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._shown_at = 0.0

    # ------------------------------------------------------------------ loop side

    def start(self) -> LoopWatchdog:
        """Start beating (call on the loop's thread) and start the watching thread."""
        if self.thread_id is None:
            self.thread_id = threading.get_ident()
        self.last_beat = self.clock()
        self._handle = self.loop.call_later(self.beat_s, self._beat)
        self._thread = threading.Thread(target=self._watch, name="warroom-loop-watchdog", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        self.last_beat = self.clock()
        if not self._stop.is_set():
            self._handle = self.loop.call_later(self.beat_s, self._beat)

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()

    # ------------------------------------------------------------------ thread side

    def _watch(self) -> None:
        while not self._stop.wait(min(self.beat_s, 0.25)):
            try:
                if self.loop.is_closed() or not self.alive():
                    self._stop.set()
                    return
                self.check()
            except Exception:  # the watchdog must never take the console down
                log.exception("loop watchdog failed")

    def check(self, now: float | None = None) -> None:
        """One look at the beat (the thread calls this; tests may call it with a clock)."""
        now = self.clock() if now is None else now
        lag = now - self.last_beat
        if not self.stalled:
            if lag > self.stall_s:
                self.stalled = True
                self.stalls += 1
                self.last_stack = main_stack(self.thread_id)
                self._record(f"event loop stalled for {lag:.1f}s; the main thread is at:\n{self.last_stack}")
            return
        self.longest_s = max(self.longest_s, lag)
        if lag <= self.stall_s:  # it ran again
            self.stalled = False
            self._record(f"event loop resumed after a stall of about {self.longest_s:.1f}s")
            if self.shown:
                self.shown = False
                if self.on_resume is not None:
                    try:
                        self.loop.call_soon_threadsafe(self.on_resume)
                    except RuntimeError:  # the loop is closed
                        pass
            return
        if lag > self.show_after_s and (not self.shown or now - self._shown_at >= 1.0):
            text = (f"✖ STALE · console stalled for {lag:.0f}s: this screen is not updating"
                    + (f" (see {self.log_path})" if self.log_path else ""))
            self.shown = True
            self._shown_at = now
            self.banners = [*self.banners[-9:], text]
            if self.show is not None and self.alive():
                try:
                    self.show(text)
                except OSError:
                    pass

    def _record(self, text: str) -> None:
        log.warning("%s", text)
        if self.log_path is None:
            return
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a", encoding="utf-8") as fh:
                fh.write(f"{datetime.now(UTC).isoformat(timespec='seconds')} {text}\n")
        except OSError:
            pass


# --------------------------------------------------------------------------- the console's


def _terminal_fd(app: Any) -> int | None:
    """The fd Textual draws on, when the app runs on a real terminal (not headless, not web)."""
    if getattr(app, "is_headless", True) or getattr(app, "is_web", False) or getattr(app, "is_inline", False):
        return None
    stream = sys.__stderr__  # where Textual's Linux driver writes
    if stream is None:
        return None
    try:
        fd = stream.fileno()
    except (AttributeError, ValueError, OSError):
        return None
    return fd if os.isatty(fd) else None


def _stalls_log(app: Any) -> Path | None:
    config = getattr(app, "config", None)
    w = getattr(config, "warroom", None)
    state_dir = getattr(w, "state_dir", None)
    return Path(state_dir) / "stalls.log" if state_dir else None


def install(app: Any, **kw: Any) -> LoopWatchdog | None:
    """Start a watchdog for a running Textual app (call on its loop). Returns it (also kept
    as `app.loop_watchdog`), or None when there is no running loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    fd = _terminal_fd(app)

    def redraw() -> None:
        redraw_all = getattr(app, "action_redraw", None)
        if callable(redraw_all):
            redraw_all()
        else:
            app.refresh(repaint=True, layout=True)

    kw.setdefault("show", TerminalBanner(fd) if fd is not None else None)
    kw.setdefault("on_resume", redraw)
    kw.setdefault("alive", lambda: bool(getattr(app, "is_running", True)))
    kw.setdefault("log_path", _stalls_log(app))
    dog = LoopWatchdog(loop, **kw).start()
    app.loop_watchdog = dog
    return dog
