"""The web driver of a served console (`warroom serve`): notices a gone browser and exits.

textual-serve runs one app process per browser tab, talking over the process's stdin
(keys and resize packets in) and stdout (screen updates out). Textual's `WebDriver`
does not notice when that stops:

- on stdin EOF (the server went away, or closed the pipe) its input thread just ends
  and the app keeps running forever with nobody watching;
- once stdout is a broken pipe, every frame and finally the shutdown's "exit" packet
  raise `BrokenPipeError`, so the app can neither draw nor finish exiting;
- SIGTERM only posts an exit message through the event loop (`loop.add_signal_handler`),
  so an app whose loop is busy or stuck in a blocking write never handles it.

`WarroomWebDriver` fixes the three: EOF on stdin or a failed write asks the app to exit
(once), writes after that are dropped, and a watchdog thread ends the process with
`os._exit` if a clean exit has not happened within `EXIT_GRACE` seconds. SIGTERM and
SIGINT are handled by a plain signal handler (it runs even while the loop is stuck
in a blocking write) that asks for the same clean exit with the same watchdog. The
server (tui.cmd_serve) also kills the app's whole process group after a timeout.

Selected with `TEXTUAL_DRIVER=tui.serve_app:WarroomWebDriver` (set by `warroom serve`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from functools import partial
from typing import Any

from textual.drivers.web_driver import WebDriver

EXIT_GRACE = 5.0  # seconds a clean exit may take after a disconnect or SIGTERM


class WarroomWebDriver(WebDriver):
    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.warroom_app = app  # the size tui.termdiff diffs against (the browser's, as the app knows it)
        self._raw_write = self._write
        self._write = partial(self._safe_write)
        self._gone = threading.Event()
        self._exit_requested = threading.Event()
        self._app_loop: asyncio.AbstractEventLoop | None = None  # set once the app runs
        self.disconnect_reason = ""

    # ------------------------------------------------------------------ output

    def _safe_write(self, data: bytes) -> int:
        """Like os.write (the bytes written), 0 once the server is gone."""
        if self._gone.is_set():
            return 0
        try:
            return self._raw_write(data)
        except OSError as exc:  # BrokenPipeError, EPIPE, EBADF: the server is gone
            self._gone.set()
            self.request_exit(f"stdout closed ({exc.__class__.__name__})")
            return 0

    # ------------------------------------------------------------------ input

    def start_application_mode(self) -> None:
        self._app_loop = asyncio.get_running_loop()
        super().start_application_mode()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.request_exit(f"signal {signal.Signals(signum).name}")

    def run_input_thread(self) -> None:
        try:
            super().run_input_thread()
        finally:
            if not self.exit_event.is_set():  # stdin ended while the app was running
                self.request_exit("stdin closed")

    # ------------------------------------------------------------------ exit

    def request_exit(self, reason: str) -> None:
        """Ask the app to exit (once) and make sure the process ends soon after."""
        if self._exit_requested.is_set():
            return
        self._exit_requested.set()
        self.disconnect_reason = reason
        threading.Thread(target=self._watchdog, name="warroom-exit-watchdog", daemon=True).start()
        loop = self._app_loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._app.exit, 0)
            except RuntimeError:  # the loop is closing: the app is exiting anyway
                pass

    def _watchdog(self) -> None:
        """A clean exit ends the process (and this daemon thread) well before the grace."""
        threading.Event().wait(EXIT_GRACE)
        try:
            sys.stderr.write(f"warroom: {self.disconnect_reason}; the app did not exit in "
                             f"{EXIT_GRACE:g}s, ending the process\n")
            sys.stderr.flush()
        except Exception:
            pass
        os._exit(0)
