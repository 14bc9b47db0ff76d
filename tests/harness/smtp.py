"""A real SMTP server on 127.0.0.1 (a free port) that keeps every message it receives.

Python 3.11's standard-library `smtpd.SMTPServer` (the full RFC 5321 server: EHLO, MAIL,
RCPT, DATA with dot-unstuffing, 8BITMIME / SMTPUTF8) run on its own asyncore loop in a
daemon thread; no new dependency. `smtpd` is gone in Python 3.12: there the fixture
uses aiosmtpd's Controller when that package is installed, else it skips (fails under
CI=true), naming the package to install.

    from tests.harness import smtp as _smtp_harness
    smtp_server = _smtp_harness.smtp_server  # the session fixture, in the test module

    def test_x(smtp_server):
        smtp_server.port; smtp_server.clear(); smtp_server.messages  # [(mailfrom, rcpttos, bytes)]
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import pytest

from . import free_port, in_ci


class SmtpServer:
    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.kind = ""
        self._lock = threading.Lock()
        self._stop: Any = None

    def _keep(self, mailfrom: str, rcpttos: list[str], data: bytes | str) -> None:
        with self._lock:
            self.messages.append((mailfrom, list(rcpttos), data if isinstance(data, bytes) else data.encode()))

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def start(self) -> SmtpServer:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                import asyncore
                import smtpd
        except ImportError:
            return self._start_aiosmtpd()
        keep = self._keep

        class _Server(smtpd.SMTPServer):
            def process_message(self, peer: Any, mailfrom: str, rcpttos: list[str], data: Any,
                                **kwargs: Any) -> None:
                keep(mailfrom, rcpttos, data)

        server = _Server((self.host, 0), None, decode_data=False)
        self.port = server.socket.getsockname()[1]
        self.kind = "python smtpd (stdlib)"
        done = threading.Event()

        def loop() -> None:
            while not done.is_set():
                asyncore.loop(timeout=0.1, count=1, map=server._map)
            server.close()

        thread = threading.Thread(target=loop, name="smtp-server", daemon=True)
        thread.start()

        def stop() -> None:
            done.set()
            thread.join(5)

        self._stop = stop
        return self

    def _start_aiosmtpd(self) -> SmtpServer:
        from aiosmtpd.controller import Controller  # type: ignore[import-not-found]

        keep = self._keep

        class _Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                keep(envelope.mail_from, envelope.rcpt_tos, envelope.original_content or envelope.content)
                return "250 OK"

        self.port = free_port()
        ctl = Controller(_Handler(), hostname=self.host, port=self.port)
        ctl.start()
        self.kind = "aiosmtpd"
        self._stop = ctl.stop
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None


@pytest.fixture(scope="session")
def smtp_server():
    server = SmtpServer()
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - any failure to start is reported the same way
        reason = (f"no SMTP server: {type(exc).__name__}: {exc} (Python >= 3.12 has no smtpd: "
                  "pip install aiosmtpd)")
        if in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    yield server
    server.stop()
