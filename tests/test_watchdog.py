"""The loop watchdog (tui/watchdog.py): a stalled event loop is logged with where it is
stuck, shown on the terminal by a thread while the loop cannot draw, and redrawn after.

The stalls are real (a callback that keeps the loop busy) and end on a condition (the
watchdog has reported), never after a fixed sleep; thresholds are shortened.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from tui.watchdog import LoopWatchdog, TerminalBanner, install


def block_the_loop_until(cond, limit: float = 10.0) -> None:
    """Hold the event loop (a CPU-bound callback) until cond() holds."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > limit:
            raise AssertionError("the watchdog did not report the stall")
        sum(range(2000))


async def until(cond, limit: float = 5.0) -> None:  # noqa: ASYNC109 - a polling helper
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < limit, "condition not met"
        await asyncio.sleep(0.01)


async def test_a_stall_is_logged_with_its_stack_shown_and_redrawn_after(tmp_path, caplog):
    shown: list[str] = []
    resumed: list[float] = []
    loop = asyncio.get_running_loop()
    dog = LoopWatchdog(loop, stall_s=0.3, show_after_s=0.6, beat_s=0.05, show=shown.append,
                       on_resume=lambda: resumed.append(time.monotonic()), log_path=tmp_path / "stalls.log")
    dog.start()
    try:
        caplog.set_level(logging.WARNING, logger="tui.watchdog")
        await asyncio.sleep(0)
        # a short pause is no stall
        t0 = time.monotonic()
        block_the_loop_until(lambda: time.monotonic() - t0 > 0.1)
        await until(lambda: dog.last_beat > t0 + 0.1)
        assert dog.stalls == 0
        # a stall: logged with where the loop is, then shown while it lasts
        block_the_loop_until(lambda: len(shown) >= 2)  # refreshed every second while it lasts
        assert dog.stalls == 1 and dog.stalled
        assert "block_the_loop_until" in dog.last_stack and "test_watchdog.py" in dog.last_stack
        assert shown[0].startswith("✖ STALE · console stalled for") and "not updating" in shown[0]
        await until(lambda: resumed)  # the loop runs again: the app is asked to redraw
        assert not dog.stalled and dog.longest_s >= 0.6
        text = (tmp_path / "stalls.log").read_text()
        assert "event loop stalled" in text and "block_the_loop_until" in text and "resumed after" in text
        assert any("event loop stalled" in r.getMessage() for r in caplog.records)
    finally:
        dog.stop()


async def test_check_with_an_injected_clock():
    now = [100.0]
    shown: list[str] = []
    dog = LoopWatchdog(asyncio.get_running_loop(), clock=lambda: now[0], show=shown.append)
    dog.last_beat = 100.0
    now[0] = 101.9
    dog.check()
    assert dog.stalls == 0
    now[0] = 102.5
    dog.check()
    assert dog.stalled and dog.stalls == 1 and not shown  # logged, not shown yet
    now[0] = 105.5
    dog.check()
    assert shown == ["✖ STALE · console stalled for 6s: this screen is not updating"]
    now[0] = 106.0
    dog.check()
    assert len(shown) == 1  # refreshed at most once a second
    now[0] = 106.6
    dog.check()
    assert len(shown) == 2 and "stalled for 7s" in shown[-1]
    dog.last_beat = 106.7  # the loop ran
    dog.check()
    assert not dog.stalled and not dog.shown


def test_terminal_banner_writes_one_line_and_restores_the_cursor():
    import pty

    master, slave = pty.openpty()
    try:
        os.set_blocking(master, False)
        TerminalBanner(slave)("✖ STALE · console stalled for 7s")
        data = b""
        t0 = time.monotonic()
        while b"\x1b8" not in data and time.monotonic() - t0 < 5:
            try:
                data += os.read(master, 4096)
            except BlockingIOError:
                time.sleep(0.01)
        assert data.startswith(b"\x1b7\x1b[1;1H") and data.endswith(b"\x1b[0m\x1b8")
        assert "✖ STALE · console stalled for 7s".encode() in data
    finally:
        os.close(master)
        os.close(slave)


async def test_the_console_installs_it_and_a_stall_shows_even_in_kiosk(tmp_path):
    """The real console (Pilot, kiosk): the app starts a watchdog at mount; a stall of its
    loop is reported and shown by the thread, and the screen is redrawn afterwards."""
    from tests.test_app import make_engine
    from tui.app import WarroomApp

    app = WarroomApp(make_engine(tmp_path), kiosk=True)
    async with app.run_test(size=(120, 36)) as pilot:
        dog = app.loop_watchdog
        assert dog is not None and dog.show is None  # headless: nothing written to a terminal
        assert app.is_running and dog.alive()
        shown: list[str] = []
        redraws: list[int] = []
        original = dog.on_resume
        dog.stall_s, dog.show_after_s, dog.show = 0.3, 0.6, shown.append
        dog.on_resume = lambda: (redraws.append(1), original())
        app.call_later(block_the_loop_until, lambda: bool(shown))
        await until(lambda: redraws)
        assert "STALE" in shown[0] and dog.stalls >= 1
        await pilot.pause()
    await until(lambda: not dog.alive())  # stops with the app


def test_install_without_a_loop_is_none():
    class App:
        pass

    assert install(App()) is None


def test_on_a_real_terminal_the_thread_writes_stale_while_the_loop_is_blocked(tmp_path):
    """The kiosk console on a pty: its loop is blocked (a callback that never yields for
    3 s); the watchdog thread writes the STALE line on the terminal while nothing else can,
    and the console draws again afterwards."""
    import pty
    import select
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "kiosk_stall.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(root)!r})\n"
        "import tui.watchdog as w\n"
        "w.STALL_S, w.SHOW_AFTER_S = 0.5, 1.0\n"
        "from tests.test_app import make_engine\n"
        "from tui.app import WarroomApp\n"
        "from pathlib import Path\n"
        f"app = WarroomApp(make_engine(Path({str(tmp_path)!r})), kiosk=True)\n"
        "def block():\n"
        "    t0 = time.monotonic()\n"
        "    while time.monotonic() - t0 < 3.0:\n"
        "        sum(range(1000))\n"
        "    app.set_timer(1.5, app.exit)\n"
        "app.call_later(lambda: app.set_timer(1.0, block))\n"
        "app.run()\n"
        "print('EXITED', getattr(app, 'loop_watchdog').stalls)\n")
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 36, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, str(script)], stdin=slave, stdout=slave, stderr=slave,
                            cwd=root, env={**os.environ, "TERM": "xterm-256color"}, start_new_session=True)
    os.close(slave)
    out = b""
    stale_at = None
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
                if stale_at is None and "✖ STALE · console stalled for".encode() in out:
                    stale_at = len(out)
            if proc.poll() is not None and not r:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        os.close(master)
    assert stale_at is not None, out[-3000:]
    assert out[stale_at - 200:stale_at].rfind(b"\x1b7\x1b[1;1H") >= 0  # at the top, cursor saved
    assert len(out) > stale_at + 1000  # the console drew again after the stall
    assert b"EXITED 1" in out, out[-2000:]
