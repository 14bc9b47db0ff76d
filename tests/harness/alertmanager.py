"""Alertmanager (Debian's /usr/bin/prometheus-alertmanager) on 127.0.0.1, a free port.

Its own temp storage dir, a minimal config routing everything to a receiver with no
integrations ("null"), no cluster gossip (`--cluster.listen-address=` empty), so no
network beyond loopback. Stopped by PID.

    from tests.harness import alertmanager as _alertmanager_harness
    alertmanager = _alertmanager_harness.alertmanager  # the session fixture, in the test module

    def test_x(alertmanager):
        alertmanager.url            # http://127.0.0.1:PORT
        alertmanager.post_alerts([{"labels": {...}, "annotations": {...}}])
        alertmanager.alerts()       # GET /api/v2/alerts
        alertmanager.silences()     # GET /api/v2/silences

Under CI=true a missing binary fails; locally the tests skip.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from . import free_port, in_ci, stop_process, tail, wait_until

BINARY = os.environ.get("WARROOM_ALERTMANAGER_BIN", "/usr/bin/prometheus-alertmanager")

CONFIG = """\
route:
  receiver: "null"
  group_by: ["alertname"]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: "null"
"""


def _iso(ts: float) -> str:
    """RFC 3339 with milliseconds, UTC."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


class AlertmanagerServer:
    def __init__(self, binary: str = BINARY) -> None:
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = 0
        self.tmp: Path | None = None
        self.process: subprocess.Popen | None = None
        self.startup_seconds = 0.0
        self.version = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> AlertmanagerServer:
        if not (Path(self.binary).is_file() and os.access(self.binary, os.X_OK)):
            raise FileNotFoundError(f"{self.binary} not found (apt install prometheus-alertmanager)")
        t0 = time.monotonic()
        self.tmp = Path(tempfile.mkdtemp(prefix="warroom-alertmanager-"))
        atexit.register(self.stop)
        (self.tmp / "alertmanager.yml").write_text(CONFIG)
        (self.tmp / "data").mkdir()
        self.port = free_port()
        log = open(self.tmp / "alertmanager.log", "wb")  # noqa: SIM115 - closed in stop()
        self._log = log
        cmd = [
            self.binary,
            f"--config.file={self.tmp / 'alertmanager.yml'}",
            f"--storage.path={self.tmp / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, cwd=self.tmp)

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"alertmanager exited ({self.process.returncode}): "
                                   f"{tail(self.tmp / 'alertmanager.log', 10)}")
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                return r.status == 200

        try:
            wait_until(ready, 30, "alertmanager")
        except BaseException:
            self.stop()
            raise
        status = self.get("/api/v2/status")
        self.version = str(status.get("versionInfo", {}).get("version", ""))
        self.startup_seconds = time.monotonic() - t0
        return self

    # -- the documented v2 API, for tests to set up and verify state --

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as r:
            return json.loads(r.read())

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        req = urllib.request.Request(f"{self.url}/api/v2/alerts", method="POST",
                                     data=json.dumps(alerts).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                r.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"POST /api/v2/alerts: {exc.code} {exc.read()[:300]!r}") from exc

    def alerts(self, active_only: bool = True) -> list[dict[str, Any]]:
        q = "?active=true&silenced=false&inhibited=false" if active_only else ""
        return list(self.get(f"/api/v2/alerts{q}"))

    def silences(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v2/silences"))

    def expire_all(self) -> None:
        """Expire every active silence and resolve every alert (endsAt now) - a clean slate."""
        for s in self.silences():
            if s.get("status", {}).get("state") != "expired":
                req = urllib.request.Request(f"{self.url}/api/v2/silence/{s['id']}",
                                             method="DELETE")
                with urllib.request.urlopen(req, timeout=5):
                    pass
        active = self.get("/api/v2/alerts")
        if active:
            # endsAt = now (not before startsAt, which Alertmanager rejects with 400)
            now = _iso(time.time())
            self.post_alerts([{"labels": a["labels"], "annotations": a.get("annotations", {}),
                               "startsAt": a["startsAt"], "endsAt": now} for a in active])

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)
            self.process = None
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()
            self._log = None
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


@pytest.fixture(scope="session")
def alertmanager():
    """A real Alertmanager on 127.0.0.1: .url, .post_alerts(), .alerts(), .silences()."""
    server = AlertmanagerServer()
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - any failure to start is reported the same way
        reason = f"alertmanager unavailable: {type(exc).__name__}: {exc}"
        if in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    yield server
    server.stop()
