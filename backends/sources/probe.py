"""Cheap probes of a failing source's backend (the monitor runs them between backed-off polls).

A probe asks the backend the smallest question that needs the server itself to answer
(a TCP connect alone is not enough: the kernel accepts connections for a process that
is stopped with SIGSTOP):

- Redis: an inline `PING`; any reply line (`+PONG`, `-NOAUTH ...`, `-LOADING ...`) means
  the server is back;
- Postgres: an `SSLRequest` packet; the one-byte answer (`S` / `N`) comes from the
  server (a stopped postmaster never sends it).

`probe_for(source)` picks the probe from what the source is built on (its `dsn` or
Redis `url`, or `store.dsn` for the orders source); a source with a `probe()` method
of its own uses that. None: no probe, the source is polled on its backed-off schedule.
A probe raises when the backend does not answer; the monitor bounds it with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from backends.units import reveal

ProbeFn = Callable[[], Awaitable[object]]

_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


async def ask(address: tuple[str, int] | str, payload: bytes) -> bytes:
    """Connect (TCP host:port, or a unix socket path), send `payload`, return the first
    bytes of the answer. Raises ConnectionError when the server closes without a word."""
    if isinstance(address, str):
        reader, writer = await asyncio.open_unix_connection(address)
    else:
        reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(payload)
        await writer.drain()
        data = await reader.read(64)
        if not data:
            raise ConnectionError("closed without answering")
        return data
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


# --------------------------------------------------------------------------- Redis


def redis_address(url: str) -> tuple[str, int] | str | None:
    """host:port (or the unix socket path) of a redis:// / unix:// URL; None for TLS or
    anything else (no probe)."""
    try:
        p = urlsplit(url)
    except ValueError:
        return None
    if p.scheme == "redis":
        return (p.hostname or "127.0.0.1", p.port or 6379)
    if p.scheme == "unix":
        return unquote(p.path) or None
    return None


def redis_probe(url: str) -> ProbeFn | None:
    addr = redis_address(url)
    if addr is None:
        return None

    async def probe() -> bytes:
        data = await ask(addr, b"PING\r\n")
        if data[:1] not in (b"+", b"-"):
            raise ConnectionError(f"not a Redis answer: {data[:16]!r}")
        return data

    return probe


# --------------------------------------------------------------------------- Postgres


def _kv_dsn(dsn: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in dsn.split():
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip().strip("'")
    return out


def postgres_address(dsn: str) -> tuple[str, int] | str | None:
    """host:port, or the unix socket file, of a libpq DSN (URL or key=value); None when
    it cannot be told (several hosts, an unknown form)."""
    host = port = None
    if dsn.startswith(("postgres://", "postgresql://")):
        try:
            p = urlsplit(dsn)
            q = parse_qs(p.query)
            host = q.get("host", [None])[0] or (unquote(p.hostname) if p.hostname else None)
            port = q.get("port", [None])[0] or (p.port if p.port else None)
        except ValueError:
            return None
    elif "=" in dsn:
        kv = _kv_dsn(dsn)
        host, port = kv.get("host"), kv.get("port")
    else:
        return None
    if host and "," in host:
        return None
    try:
        port_n = int(port) if port else 5432
    except ValueError:
        return None
    if not host:
        host = "/var/run/postgresql"
    if host.startswith("/"):
        return f"{host.rstrip('/')}/.s.PGSQL.{port_n}"
    return (host, port_n)


def postgres_probe(dsn: str) -> ProbeFn | None:
    addr = postgres_address(dsn)
    if addr is None:
        return None

    async def probe() -> bytes:
        data = await ask(addr, _SSL_REQUEST)
        if data[:1] not in (b"S", b"N", b"E"):
            raise ConnectionError(f"not a Postgres answer: {data[:16]!r}")
        return data

    return probe


# --------------------------------------------------------------------------- choice


def probe_for(src: Any) -> ProbeFn | None:
    """The cheap probe of a source's backend, or None."""
    own = getattr(src, "probe", None)
    if callable(own):
        return cast(ProbeFn, own)
    dsn = getattr(src, "dsn", None)
    if dsn is None:
        dsn = getattr(getattr(src, "store", None), "dsn", None)
    if dsn is not None:
        text = reveal(dsn)
        if text:
            return postgres_probe(text)
    url = getattr(src, "url", None)
    if url is not None:
        text = reveal(url)
        if text.startswith(("redis://", "unix://")):
            return redis_probe(text)
    return None
