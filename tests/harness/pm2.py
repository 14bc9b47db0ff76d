"""A real pm2 daemon (npm pm2 in .tools/node_modules) with its own PM2_HOME in a temp dir.

The daemon is started by `pm2 ping` with PM2_HOME pointing at the temp dir (so it never
touches the user's ~/.pm2), and stopped with `pm2 kill`, then by PID (the daemon's
pm2.pid and every process it had started) whatever `pm2 kill` did.

    from tests.harness import pm2 as _pm2_harness
    pm2_daemon = _pm2_harness.pm2_daemon  # the session fixture, in the test module

    def test_x(pm2_daemon):
        pm2_daemon.home                        # its PM2_HOME
        pm2_daemon.bin                         # the pm2 executable
        pm2_daemon.start_app("web", script)    # pm2 start SCRIPT --name web (python or node)
        pm2_daemon.status("web")               # pm2_env.status from jlist
        pm2_daemon.wait_status("web", "online")

Under CI=true a missing pm2 or node fails; locally the tests skip.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from . import REPO, in_ci, wait_until

BINARY = os.environ.get("WARROOM_PM2_BIN", str(REPO / ".tools" / "node_modules" / ".bin" / "pm2"))


class Pm2Daemon:
    def __init__(self, binary: str = BINARY) -> None:
        self.bin = binary
        self.tmp: Path | None = None
        self.home = ""
        self.version = ""
        self.daemon_pid: int | None = None
        self.startup_seconds = 0.0
        self._pids: set[int] = set()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"PM2_HOME": self.home, "FORCE_COLOR": "0", "NO_COLOR": "1"})
        return env

    def run(self, *args: str, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([self.bin, *args], env=self.env(), stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise RuntimeError(f"pm2 {' '.join(args)} exited {res.returncode}: {res.stderr[-500:]}{res.stdout[-500:]}")
        return res

    def start(self) -> Pm2Daemon:
        if not (Path(self.bin).is_file() and os.access(self.bin, os.X_OK)) and shutil.which(self.bin) is None:
            raise FileNotFoundError(f"{self.bin} not found (npm install pm2 into .tools: make test installs it)")
        if shutil.which("node") is None:
            raise FileNotFoundError("node is not on PATH (pm2 needs it)")
        t0 = time.monotonic()
        self.tmp = Path(tempfile.mkdtemp(prefix="warroom-pm2-"))
        self.home = str(self.tmp / "home")
        atexit.register(self.stop)
        self.version = self.run("--version").stdout.strip().splitlines()[-1]
        self.run("ping")  # spawns the daemon under our PM2_HOME
        pid_text = wait_until(lambda: (Path(self.home) / "pm2.pid").read_text().strip(), 20, "pm2 daemon")
        self.daemon_pid = int(str(pid_text))
        self.startup_seconds = time.monotonic() - t0
        return self

    # -- apps ---------------------------------------------------------------------------

    def write(self, name: str, text: str) -> Path:
        assert self.tmp is not None
        p = self.tmp / name
        p.write_text(text)
        return p

    def start_app(self, name: str, script: Path, *extra: str) -> None:
        interpreter = ["--interpreter", "python3"] if str(script).endswith(".py") else []
        self.run("start", str(script), "--name", name, "--no-color", *interpreter, *extra)
        self._remember()

    def jlist(self) -> list[dict[str, Any]]:
        out = self.run("jlist").stdout
        start = out.find("\n[")
        return list(json.loads(out if out.lstrip().startswith("[") else out[start + 1:]))

    def app(self, name: str) -> dict[str, Any] | None:
        return next((a for a in self.jlist() if a.get("name") == name), None)

    def status(self, name: str) -> str | None:
        a = self.app(name)
        return None if a is None else str(a["pm2_env"]["status"])

    def wait_status(self, name: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
        def ok() -> dict[str, Any] | None:
            a = self.app(name)
            return a if a is not None and a["pm2_env"]["status"] in statuses else None

        got = wait_until(ok, timeout, f"pm2 app {name} {'/'.join(statuses)}", interval=0.2)
        self._remember()
        return dict(got)  # type: ignore[call-overload]

    def delete(self, name: str) -> None:
        self.run("delete", name, check=False)

    def _remember(self) -> None:
        with contextlib.suppress(Exception):
            for a in self.jlist():
                if a.get("pid"):
                    self._pids.add(int(a["pid"]))

    # -- teardown -----------------------------------------------------------------------

    def stop(self) -> None:
        if self.tmp is None:
            return
        self._remember()
        with contextlib.suppress(Exception):
            self.run("kill", timeout=30, check=False)
        for pid in [p for p in (self.daemon_pid, *self._pids) if p]:
            _kill(pid)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None


def _kill(pid: int) -> None:
    """SIGKILL a pid we started (the daemon or one of its apps) if it is still there."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def pm2_daemon():
    """A real pm2 daemon with its own PM2_HOME: .home, .bin, .start_app(), .status(), .wait_status()."""
    daemon = Pm2Daemon()
    try:
        daemon.start()
    except Exception as exc:  # noqa: BLE001 - any failure to start is reported the same way
        daemon.stop()
        reason = f"pm2 unavailable: {type(exc).__name__}: {exc}"
        if in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    yield daemon
    daemon.stop()
