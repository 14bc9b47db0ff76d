"""Shared helpers of the sandbox services: settings, logging, pid files, JSON-RPC."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Service:
    """Arguments, settings, logging, pid file and a stop event for one sandbox service."""

    def __init__(self, name: str, argv: list[str] | None = None, extra=None,
                 preload: tuple[str, ...] = ("asyncpg", "redis.asyncio", "aiohttp")) -> None:
        parser = argparse.ArgumentParser(prog=name)
        parser.add_argument("--run-dir", required=True)
        parser.add_argument("--id", default="")
        if extra is not None:
            extra(parser)
        self.args = parser.parse_args(argv)
        self.run_dir = Path(self.args.run_dir)
        self.name = name + (f"-{self.args.id}" if self.args.id else "")
        self.stop = asyncio.Event()
        pids = self.run_dir / "pids"
        pids.mkdir(exist_ok=True)
        self.pid_file = pids / f"{self.name}.pid"
        self.pid_file.write_text(str(os.getpid()))
        # import while the stack is still starting its infrastructure, at a lower priority
        # so that PostgreSQL, Redis and the chain start first
        niced = _nice(5)
        for module in preload:
            importlib.import_module(module)
        if niced and os.geteuid() == 0:
            _nice(-5)
        self.settings: dict[str, Any] = self._wait_settings()

    def _wait_settings(self, timeout: float = 120.0) -> dict[str, Any]:
        """The stack starts the services while Postgres, Redis and the chain come up (their
        imports overlap the infrastructure's start); `stack.json` appears when it is ready."""
        path = self.run_dir / "stack.json"
        parent = os.getppid()
        deadline = time.monotonic() + timeout
        while True:
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline or os.getppid() != parent or not self.run_dir.is_dir():
                self.cleanup()
                sys.exit(f"{self.name}: no stack.json in {self.run_dir}")
            time.sleep(0.05)

    def log(self, level: str, message: str) -> None:
        sys.stdout.write(f"{now_iso()} {level:<5} [{self.name}] {message}\n")
        sys.stdout.flush()

    def info(self, message: str) -> None:
        self.log("INFO", message)

    def warn(self, message: str) -> None:
        self.log("WARN", message)

    def error(self, message: str) -> None:
        self.log("ERROR", message)

    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)

    def cleanup(self) -> None:
        with contextlib.suppress(OSError):
            if self.pid_file.read_text().strip() == str(os.getpid()):
                self.pid_file.unlink()

    def flag(self, name: str) -> bool:
        """A fault flag set by a drill: `<run-dir>/flags/<name>` exists."""
        return (self.run_dir / "flags" / name).exists()

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless asked to stop; True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)
        return self.stop.is_set()

    def run(self, main) -> None:
        async def runner():
            self.install_signals()
            try:
                await main(self)
            finally:
                self.cleanup()

        try:
            asyncio.run(runner())
        except KeyboardInterrupt:  # pragma: no cover
            pass
        finally:
            self.cleanup()


def _nice(inc: int) -> bool:
    try:
        os.nice(inc)
        return True
    except OSError:
        return False


class Rpc:
    """A JSON-RPC client over several endpoints, failing over to the next one (like
    ethers' FallbackProvider): the services keep working when the primary RPC is down."""

    def __init__(self, svc: Service, urls: list[str], timeout: float = 3.0) -> None:
        self.svc = svc
        self.urls = list(urls)
        self.active = 0
        self.timeout = timeout
        self._session = None
        self._id = 0

    async def session(self):
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, method: str, params: list | None = None) -> Any:
        """Try the endpoints in order of preference (the primary first, every call)."""
        last: Exception | None = None
        for idx, url in enumerate(self.urls):
            self._id += 1
            try:
                s = await self.session()
                async with s.post(url, json={"jsonrpc": "2.0", "id": self._id, "method": method,
                                             "params": params or []}) as resp:
                    data = await resp.json(content_type=None)
            except Exception as exc:  # noqa: BLE001 - try the next endpoint
                last = exc
                continue
            if idx != self.active:
                if idx > self.active:
                    self.svc.warn(f"RPC failover: {self.urls[self.active]} failed ({_why(last)}), using {url}")
                else:
                    self.svc.info(f"RPC back on {url}")
                self.active = idx
            if "error" in data:
                raise RpcError(data["error"])
            return data.get("result")
        raise ConnectionError(f"all RPC endpoints failed: {_why(last)}")


class RpcError(Exception):
    def __init__(self, error: Any) -> None:
        self.error = error
        msg = error.get("message") if isinstance(error, dict) else str(error)
        super().__init__(msg)


def _why(exc: Exception | None) -> str:
    if exc is None:
        return "no answer"
    text = str(exc) or type(exc).__name__
    return text[:160]


def order_id_to_topic(order_id: str) -> str:
    return "0x" + order_id.encode().ljust(32, b"\0").hex()


def topic_to_order_id(topic: str) -> str:
    raw = bytes.fromhex(topic[2:] if topic.startswith("0x") else topic)
    return raw.rstrip(b"\0").decode("utf-8", errors="replace")


def release_calldata(selector: str, order_id: str, amount: int) -> str:
    return selector + order_id.encode().ljust(32, b"\0").hex() + f"{int(amount):064x}"


async def wait_receipt(rpc: Rpc, tx_hash: str, limit: float = 15.0) -> dict | None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        r = await rpc.call("eth_getTransactionReceipt", [tx_hash])
        if r:
            return r
        await asyncio.sleep(0.2)
    return None
