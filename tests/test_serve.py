"""`warroom serve`: the console in a browser, and no process left behind when it goes.

- the served app's web driver exits on stdin EOF, on a broken stdout and on SIGTERM
  while blocked writing (Textual's own WebDriver keeps running in the first case);
- the server: a token per run by default (printed once, in the URL; masked in the
  access log), `--no-token` only on loopback and never with `--allow-actions`; the Host
  header checked against the bound address and the public URL, then the Origin against
  those (DNS rebinding: `Host: evil.example:PORT` + `Origin: http://evil.example:PORT`
  refused), with real websocket clients against the real server; read-only by default,
  `--allow-actions` refused in a read-only process; kills the app when its websocket goes;
- headless Chromium (Debian's `chromium`) shows the dashboard (checked from a
  screenshot taken once the app has drawn), and after the browser is gone no app
  process is left and nothing spins.

Everything binds 127.0.0.1. Chromium missing: skipped locally, fails under CI=true.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                  "--disable-extensions", "--mute-audio", "--window-size=1280,800"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "warroom.toml"
    path.write_text(f'[warroom]\nname = "served"\nrefresh = "1s"\naudit_path = "{tmp_path}/audit.jsonl"\n'
                    f'state_dir = "{tmp_path}/state"\n[host]\n')  # [host]: a config must watch something
    return path


def _wait(cond, limit: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + limit
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


def _gone(pids) -> bool:
    import psutil

    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


# --------------------------------------------------------------------------- command line


def _serve_args(**kw) -> argparse.Namespace:
    base = dict(host="127.0.0.1", port=8000, kiosk=False, allow_actions=False, token=None, no_token=False,
                theme=None, public_url=None, config=None, read_only=False)
    return argparse.Namespace(**{**base, **kw})


def test_refuses_non_loopback_without_token(capsys):
    from tui import cmd_serve

    env = os.environ.pop(cmd_serve.TOKEN_ENV, None)
    try:
        assert cmd_serve.run(_serve_args(host="0.0.0.0", no_token=True)) == 2
        assert "without a token" in capsys.readouterr().err
        # --allow-actions always needs a token, even on loopback
        assert cmd_serve.run(_serve_args(no_token=True, allow_actions=True)) == 2
        assert "--allow-actions always needs a token" in capsys.readouterr().err
        assert cmd_serve.run(_serve_args(no_token=True, token="x")) == 2
        # a read-only process (--read-only, --kiosk, read_only = true) cannot serve actions
        assert cmd_serve.run(_serve_args(allow_actions=True, read_only=True)) == 2
        assert "read-only" in capsys.readouterr().err
    finally:
        if env is not None:
            os.environ[cmd_serve.TOKEN_ENV] = env
    token, generated = cmd_serve.resolve_token(_serve_args())
    token2, _ = cmd_serve.resolve_token(_serve_args())
    assert generated and len(token) >= 20 and token != token2  # a fresh token per run
    assert cmd_serve.is_loopback("127.0.0.1") and cmd_serve.is_loopback("::1")
    assert cmd_serve.is_loopback("localhost") and not cmd_serve.is_loopback("10.0.0.1")
    assert not cmd_serve.is_loopback("example.org")


def test_app_argv_read_only_unless_allowed(tmp_path):
    from tui.cmd_serve import app_argv

    base = dict(config=str(tmp_path / "w.toml"), theme=None)
    argv = app_argv(argparse.Namespace(allow_actions=False, kiosk=False, **base))
    assert argv[:3] == [sys.executable, "-m", "tui.cli"] and "--read-only" in argv
    assert argv[argv.index("--config") + 1] == str(tmp_path / "w.toml")
    argv = app_argv(argparse.Namespace(allow_actions=True, kiosk=True, **base))
    assert "--read-only" not in argv and "--kiosk" in argv


# --------------------------------------------------------------------------- the app's driver


def _spawn_app(config: Path, driver: str) -> subprocess.Popen:
    env = dict(os.environ, TEXTUAL_DRIVER=driver, COLUMNS="120", ROWS="36")
    return subprocess.Popen([sys.executable, "-m", "tui.cli", "--read-only", "--config", str(config)],
                            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _read_until_drawn(proc: subprocess.Popen, nbytes: int = 5_000) -> None:
    """Read the app's output until its first frame (the prelude, then `nbytes` of packets)."""
    import select

    got = b""
    deadline = time.monotonic() + 30
    while b"__GANGLION__" not in got or len(got.split(b"__GANGLION__", 1)[1]) < nbytes:
        assert time.monotonic() < deadline, f"the app did not draw ({len(got)} bytes)"
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, "the app exited before drawing"
            got += chunk


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("how", ["stdin-eof", "stdout-broken"])
def test_app_exits_when_the_server_goes(config, how):
    proc = _spawn_app(config, "tui.serve_app:WarroomWebDriver")
    try:
        _read_until_drawn(proc)
        if how == "stdin-eof":
            proc.stdin.close()
            # keep reading stdout so only the stdin side is gone
            import threading

            threading.Thread(target=lambda: [None for _ in iter(lambda: proc.stdout.read(65536), b"")],
                             daemon=True).start()
        else:
            proc.stdout.close()
        _wait(lambda: proc.poll() is not None, 15, f"the app to exit after {how}")
        assert proc.returncode == 0
    finally:
        _kill(proc)


def test_textual_web_driver_alone_keeps_running_after_stdin_eof(config):
    """The bug being fixed: Textual's WebDriver ignores EOF on stdin (the server is gone)."""
    proc = _spawn_app(config, "textual.drivers.web_driver:WebDriver")
    try:
        _read_until_drawn(proc)
        import threading

        threading.Thread(target=lambda: [None for _ in iter(lambda: proc.stdout.read(65536), b"")],
                         daemon=True).start()
        proc.stdin.close()
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(6)
    finally:
        _kill(proc)


def _blocked_writing_a_pipe(pid: int, pipe) -> bool:
    """A thread of the process sleeps in the kernel's pipe write (Linux: /proc/PID/task/*/wchan);
    where the kernel hides wait channels ("0"), the pipe holds all but one write's worth."""
    import fcntl
    import termios

    shown = False
    for wchan in Path(f"/proc/{pid}/task").glob("*/wchan"):
        try:
            where = wchan.read_text().strip()
        except OSError:
            continue
        shown = shown or where not in ("", "0")
        if "pipe_write" in where:
            return True
    if shown:
        return False
    fd = pipe.fileno()
    unread = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    return unread >= fcntl.fcntl(fd, 1032) - 8192  # F_GETPIPE_SZ


def test_sigterm_ends_an_app_blocked_writing(config):
    """Nobody reads stdout: the app blocks in write(); SIGTERM still ends it."""
    proc = _spawn_app(config, "tui.serve_app:WarroomWebDriver")
    try:
        _read_until_drawn(proc, 1000)
        # ask for big redraws and never read again: the pipe fills, the app blocks in write()
        # (a resize is a full redraw even through the terminal diff; more until it blocks)
        sizes = itertools.cycle(((300, 100), (200, 60), (300, 100), (250, 80)))

        def blocked() -> bool:
            if _blocked_writing_a_pipe(proc.pid, proc.stdout):
                return True
            w, h = next(sizes)
            meta = json.dumps({"type": "resize", "width": w, "height": h}).encode()
            proc.stdin.write(b"M" + len(meta).to_bytes(4, "big") + meta)
            proc.stdin.flush()
            return False

        _wait(blocked, 15, "the app blocked writing its full stdout pipe", step=0.2)
        proc.send_signal(signal.SIGTERM)
        _wait(lambda: proc.poll() is not None, 15, "the app to exit on SIGTERM")
    finally:
        _kill(proc)


# --------------------------------------------------------------------------- the server


class Served:
    def __init__(self, config: Path, *extra: str) -> None:
        import re
        import tempfile

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="served-", suffix=".log", dir=config.parent)[1])
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tui.cli", "serve", "--config", str(config), "--host", "127.0.0.1",
                 "--port", str(self.port), *extra], cwd=ROOT, stdout=subprocess.DEVNULL,
                stderr=err, start_new_session=True)
        _wait(self._up, 20, "the server to listen")
        m = re.search(r"\?token=([A-Za-z0-9_-]+)", self.log.read_text())
        self.token = m.group(1) if m else None  # generated for this run and printed once
        self.auth = {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            assert self.proc.poll() is None, "server exited"
            return False

    def apps(self) -> list[int]:
        import psutil

        try:
            return [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        apps = self.apps()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for pid in apps:  # the apps lead their own groups
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def served(config):
    servers = []

    def start(*extra: str) -> Served:
        s = Served(config, *extra)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


DRAWN = ("Services", "Findings", "Logs")  # pane titles of the dashboard's frame at 120x36
_ANSI = re.compile(rb"\x1b\[[0-9;?<>=$]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


def _drawn(data: bytes) -> bool:
    text = _ANSI.sub(b"", data).decode("utf-8", "replace")
    return all(m in text for m in DRAWN)


async def _ws_session(url: str, *, abort: bool, headers=None) -> int:
    """A browser tab: connects, reads until the dashboard is drawn (its pane titles in what
    the app wrote), then closes or vanishes. Returns the bytes the app sent."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{url}/ws?width=120&height=36", headers=headers or {})
        data = b""
        while not _drawn(data):
            msg = await ws.receive(timeout=30)
            if msg.type == aiohttp.WSMsgType.BINARY:
                data += msg.data
            elif msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"websocket ended: {msg.type}")
        got = len(data)
        if abort:  # the browser vanishes: no close frame
            ws._response.connection.transport.abort()
        else:
            await ws.close()
        return got


@pytest.mark.parametrize("abort", [False, True], ids=["close", "abort"])
def test_disconnect_stops_the_app(served, abort):
    s = served()
    assert asyncio.run(_ws_session(s.url, abort=abort, headers=s.auth)) > 0
    apps = s.apps()
    assert apps, "no app process was started"
    _wait(lambda: _gone(apps), 15, "the app to exit after the browser went")
    assert s.proc.poll() is None  # the server keeps serving


def test_token_and_origin(served):
    import aiohttp

    s = served("--token", "s3cret")

    async def go():
        # unsafe=True: keep cookies of an IP address host, as browsers do
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            r = await session.get(f"{s.url}/")
            assert r.status == 401
            r = await session.get(f"{s.url}/?token=wrong")
            assert r.status == 401
            r = await session.get(f"{s.url}/ws")
            assert r.status == 401
            r = await session.get(f"{s.url}/?token=s3cret")
            assert r.status == 200 and "warroom_token" in r.cookies
            # the cookie now authorises the websocket; a foreign page's Origin does not
            r = await session.get(f"{s.url}/ws", headers={"Origin": "http://evil.example"})
            assert r.status == 403
            r = await session.get(f"{s.url}/static/js/textual.js")
            assert r.status == 200
        return await _ws_session(s.url, abort=False, headers={"Authorization": "Bearer s3cret",
                                                               "Origin": s.url})

    assert asyncio.run(go()) > 0


# --------------------------------------------------------------------------- headless chromium


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, [r[i:i + 3] for r in rows for i in range(0, stride, bpp)]


def drawn_fraction(png: bytes) -> tuple[float, int]:
    """Share of pixels that differ from the most common (background) colour; distinct colours."""
    from collections import Counter

    _w, _h, pixels = png_pixels(png)
    counts = Counter(pixels[::7])  # a sample is plenty
    bg, n = counts.most_common(1)[0]
    total = sum(counts.values())
    return (total - n) / total, len(counts)


class DevTools:
    """Just enough of the Chrome DevTools protocol over aiohttp's websocket client."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.n = 0

    async def call(self, method: str, **params):
        self.n += 1
        await self.ws.send_json({"id": self.n, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=30)
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg.get("result", {})


async def _browse_and_screenshot(port_file: Path, url: str, shot: Path) -> tuple[float, int, str]:
    import aiohttp

    def port() -> str:
        return port_file.read_text().strip() if port_file.exists() else ""

    deadline = time.monotonic() + 30
    while not await asyncio.to_thread(port):
        assert time.monotonic() < deadline, "chromium did not open its DevTools port"
        await asyncio.sleep(0.1)
    dt_port = int((await asyncio.to_thread(port)).split()[0])
    async with aiohttp.ClientSession() as session:
        targets = await (await session.get(f"http://127.0.0.1:{dt_port}/json")).json()
        page = next(t for t in targets if t.get("type") == "page")
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            cdp = DevTools(ws)
            assert page["url"].startswith(url), page["url"]
            best = (0.0, 0, "")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # poll screenshots until the app has drawn
                try:
                    shot_b64 = (await cdp.call("Page.captureScreenshot", format="png"))["data"]
                except AssertionError:  # not attached yet while the page loads
                    await asyncio.sleep(0.5)
                    continue
                data = base64.b64decode(shot_b64)
                # the intro splash goes once the app's first bytes arrived ("-first-byte")
                state = (await cdp.call("Runtime.evaluate", returnByValue=True, expression=(
                    "JSON.stringify({first: document.body.classList.contains('-first-byte'),"
                    " text: (document.querySelector('.xterm-rows') || document.body).innerText})"
                )))["result"]["value"]
                state = json.loads(state)
                frac, colours = drawn_fraction(data)
                if state["first"] and frac > best[0]:
                    best = (frac, colours, state["text"])
                    await asyncio.to_thread(shot.write_bytes, data)
                if state["first"] and frac > 0.05 and colours >= 4:
                    return best
                await asyncio.sleep(0.5)
            return best


def test_browser_shows_dashboard_and_leaves_nothing_behind(served, tmp_path):
    import psutil

    exe = _chromium()
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    s = served()
    profile = tmp_path / "profile"
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_CACHE_HOME=str(home / ".cache"))
    browser = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                                f"{s.url}/?token={s.token}"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    shot = tmp_path / "served.png"
    try:
        frac, colours, text = asyncio.run(_browse_and_screenshot(profile / "DevToolsActivePort",
                                                           f"{s.url}/", shot))
        apps = s.apps()
    finally:
        if browser.poll() is None:
            os.killpg(browser.pid, signal.SIGKILL)
        browser.wait()
    assert shot.exists(), "no screenshot"
    assert frac > 0.05 and colours >= 4, f"the page looks blank ({frac:.1%} drawn, {colours} colours)"
    assert apps, "the server started no app for the browser"
    # the browser is gone: the app must exit (heartbeat or close), and nothing may spin
    _wait(lambda: _gone(apps), 45, "the served app to exit after the browser went", step=0.2)
    server = psutil.Process(s.proc.pid)
    server.cpu_percent()
    time.sleep(2.0)  # measuring CPU over an interval: this is the measurement, not a wait
    assert server.cpu_percent() < 20
    assert s.apps() == []


# --------------------------------------------------------------------------- closed to the outside


async def _ws_status(url: str, headers: dict) -> int:
    """The websocket handshake's answer: 101 when it opened (then closed at once)."""
    import aiohttp

    headers = dict(headers)
    query = headers.pop("_query", "")
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(f"{url}/ws?width=80&height=24" + (f"&{query}" if query else ""),
                                          headers=headers,
                                          timeout=aiohttp.ClientWSTimeout(ws_close=5))
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await ws.close()
        return 101


def test_dns_rebinding_host_and_origin_are_refused(served):
    """The server answers only to its own addresses: Host first, then the Origin against
    those (not against the Host the client sent: under DNS rebinding both are the attacker's)."""
    s = served()
    port = s.port
    evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    cases = [
        ("rebinding: Host and Origin evil.example", {**s.auth, **evil}, 421),
        ("rebinding without the token", evil, 421),
        ("Host evil.example, Origin ours", {**s.auth, "Host": f"evil.example:{port}", "Origin": s.url}, 421),
        ("Host ours, Origin evil.example", {**s.auth, "Origin": f"http://evil.example:{port}"}, 403),
        ("Host ours, Origin on another port", {**s.auth, "Origin": f"http://127.0.0.1:{port + 1}"}, 403),
        ("Host ours, Origin null", {**s.auth, "Origin": "null"}, 403),
        ("Host ours, Origin file://", {**s.auth, "Origin": "file://"}, 403),
        ("no Host at all", {**s.auth, "Host": ""}, 421),
        ("Host ours@evil", {**s.auth, "Host": f"127.0.0.1:{port}@evil.example"}, 421),
        ("Host with a trailing dot", {**s.auth, "Host": f"localhost.:{port}"}, 421),
        ("Host ours on another port", {**s.auth, "Host": f"127.0.0.1:{port + 1}"}, 421),
        ("Origin ours.evil.example", {**s.auth, "Origin": f"http://127.0.0.1:{port}.evil.example"}, 403),
        ("Origin with a user", {**s.auth, "Origin": f"http://evil@127.0.0.1:{port}"}, 403),
        ("Origin https on our port", {**s.auth, "Origin": f"https://evil.example:{port}"}, 403),
        ("token in the query", {"Origin": s.url, "_query": f"token={s.token}"}, 101),
        ("Host ours, no token", {"Origin": s.url}, 401),
        ("Host ours, wrong token", {"Authorization": "Bearer nope", "Origin": s.url}, 401),
        ("Host 127.0.0.1, Origin ours", {**s.auth, "Origin": s.url}, 101),
        ("Host localhost, Origin localhost", {**s.auth, "Host": f"localhost:{port}",
                                              "Origin": f"http://localhost:{port}"}, 101),
        ("no Origin (not a browser), token", dict(s.auth), 101),
    ]
    got = {name: asyncio.run(_ws_status(s.url, headers)) for name, headers, _ in cases}
    assert got == {name: want for name, _, want in cases}

    async def page(headers):
        import aiohttp

        async with aiohttp.ClientSession() as session:
            r = await session.get(f"{s.url}/?token={s.token}", headers=headers)
            return r.status

    assert asyncio.run(page({"Host": f"evil.example:{port}"})) == 421  # the page too, not only /ws
    assert asyncio.run(page({})) == 200


def test_a_token_per_run_printed_once_and_never_logged(served):
    import aiohttp

    a, b = served(), served()
    assert a.token and b.token and a.token != b.token
    for s in (a, b):
        text = s.log.read_text()
        assert text.count(s.token) == 1 and f"{s.url}/?token={s.token}" in text

    async def go(s):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            assert (await session.get(f"{s.url}/")).status == 401
            assert (await session.get(f"{s.url}/ws")).status == 401
            r = await session.get(f"{s.url}/?token={s.token}")
            assert r.status == 200 and "warroom_token" in r.cookies
        return await _ws_session(s.url, abort=False, headers={**s.auth, "Origin": s.url})

    assert asyncio.run(go(a)) > 0
    assert asyncio.run(_ws_status(a.url, {"Authorization": f"Bearer {b.token}"})) == 401  # another run's
    _wait(lambda: "GET /?token=" in a.log.read_text(), 10, "the access log line")
    text = a.log.read_text()
    assert text.count(a.token) == 1 and "token=***" in text  # the request line shows it masked


def test_no_token_opt_out_on_loopback(served):
    s = served("--no-token")
    assert s.token is None
    assert "no token" in s.log.read_text()
    assert asyncio.run(_ws_status(s.url, {"Origin": s.url})) == 101
    evil = {"Host": f"evil.example:{s.port}", "Origin": f"http://evil.example:{s.port}"}
    assert asyncio.run(_ws_status(s.url, evil)) == 421  # without a token the Host check still holds


def test_read_only_process_cannot_serve_actions(config, capsys):
    from tui import cli

    for argv in (["--kiosk", "serve"], ["--read-only", "serve"]):
        code = cli.main([*argv, "--config", str(config), "--allow-actions", "--port", str(_free_port())])
        assert code == 2 and "read-only" in capsys.readouterr().err
    ro = config.with_name("ro.toml")
    ro.write_text(config.read_text().replace('refresh = "1s"', 'refresh = "1s"\nread_only = true'))
    code = cli.main(["serve", "--config", str(ro), "--allow-actions", "--port", str(_free_port())])
    assert code == 2 and "read-only" in capsys.readouterr().err


def test_allow_actions_server_needs_its_token(served):
    s = served("--allow-actions")
    assert s.token, "a token is generated for an --allow-actions server"
    assert "actions allowed" in s.log.read_text()
    assert asyncio.run(_ws_status(s.url, {"Origin": s.url})) == 401
    assert asyncio.run(_ws_status(s.url, {**s.auth, "Origin": s.url})) == 101
    evil = {"Host": f"evil.example:{s.port}", "Origin": f"http://evil.example:{s.port}"}
    assert asyncio.run(_ws_status(s.url, {**s.auth, **evil})) == 421


@pytest.mark.parametrize("port", ["0", "99999", "-1", "http"])
def test_serve_refuses_a_port_that_cannot_be(port, capsys):
    from tui import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--port", port])
    assert exited.value.code == 2
    assert "expected a port number 1-65535" in capsys.readouterr().err
