"""Prometheus (Debian's /usr/bin/prometheus) on 127.0.0.1, scraping a /metrics we serve.

The scrape target is PyPI prometheus_client's own exposition (start_http_server on
127.0.0.1, a private CollectorRegistry), so what Prometheus stores is what a real
instrumented service exports. Temp --storage.tsdb.path, scrape_interval 1s, job
"warroom-test". Stopped by PID.

    from tests.harness import prometheus as _prometheus_harness
    prometheus = _prometheus_harness.prometheus  # the session fixture, in the test module

    def test_x(prometheus):
        prometheus.url                   # http://127.0.0.1:PORT (the HTTP API)
        prometheus.target.url            # http://127.0.0.1:PORT/metrics (the exporter)
        prometheus.target.registry       # a prometheus_client CollectorRegistry
        prometheus.wait_scrapes(2)       # until two more scrapes have landed
        prometheus.query("up")           # /api/v1/query -> data.result

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
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from . import free_port, in_ci, stop_process, tail, wait_until

BINARY = os.environ.get("WARROOM_PROMETHEUS_BIN", "/usr/bin/prometheus")
JOB = "warroom-test"


class MetricsTarget:
    """prometheus_client's exposition server on 127.0.0.1 with its own registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry()
        self.port = 0
        self._server: Any = None
        self._thread: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self) -> MetricsTarget:
        from prometheus_client import start_http_server

        self.port = free_port()
        self._server, self._thread = start_http_server(self.port, addr="127.0.0.1",
                                                       registry=self.registry)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


class PrometheusServer:
    def __init__(self, binary: str = BINARY) -> None:
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = 0
        self.tmp: Path | None = None
        self.process: subprocess.Popen | None = None
        self.target = MetricsTarget()
        self.startup_seconds = 0.0
        self.version = ""
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def config(self) -> str:
        return (
            "global:\n"
            "  scrape_interval: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            f"  - job_name: {JOB}\n"
            "    scrape_interval: 1s\n"
            "    scrape_timeout: 900ms\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{self.target.port}']\n"
        )

    def start(self) -> PrometheusServer:
        if not (Path(self.binary).is_file() and os.access(self.binary, os.X_OK)):
            raise FileNotFoundError(f"{self.binary} not found (apt install prometheus)")
        t0 = time.monotonic()
        self.tmp = Path(tempfile.mkdtemp(prefix="warroom-prometheus-"))
        atexit.register(self.stop)
        self.target.start()
        (self.tmp / "prometheus.yml").write_text(self.config())
        (self.tmp / "data").mkdir()
        self.port = free_port()
        self._log = open(self.tmp / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        cmd = [
            self.binary,
            f"--config.file={self.tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.tmp / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT, cwd=self.tmp)

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self.process.returncode}): "
                                   f"{tail(self.tmp / 'prometheus.log', 10)}")
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                return r.status == 200

        try:
            wait_until(ready, 60, "prometheus")
            build = self.get("/api/v1/status/buildinfo")
            self.version = str(build.get("data", {}).get("version", ""))
            # the first scrape of our target has landed
            wait_until(lambda: self.query(f'up{{job="{JOB}"}} == 1'), 30,
                       "prometheus scraping the test target")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as r:
            return json.loads(r.read())

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r}: {body}")
        return list(body["data"]["result"])

    def scrapes(self) -> int:
        """How many samples of `up` for our job Prometheus holds in the last hour."""
        r = self.query(f'count_over_time(up{{job="{JOB}"}}[1h])')
        return int(float(r[0]["value"][1])) if r else 0

    def wait_scrapes(self, n: int = 2, timeout: float = 30) -> None:
        """Wait until `n` more scrapes of the target have been stored."""
        start = self.scrapes()
        wait_until(lambda: self.scrapes() >= start + n, timeout, f"{n} more scrapes")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=15)
            self.process = None
        self.target.stop()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


@pytest.fixture(scope="session")
def prometheus():
    """A real Prometheus on 127.0.0.1 scraping prometheus_client: .url, .target, .query()."""
    server = PrometheusServer()
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - any failure to start is reported the same way
        reason = f"prometheus unavailable: {type(exc).__name__}: {exc}"
        if in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    yield server
    server.stop()
