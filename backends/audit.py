"""The audit trail: append-only JSON lines, each hash-chained to the previous one, fsynced.

Every entry records who (operator), when, what (action, target, parameters with
secrets masked), why (reason), whether it was a dry-run, the state before and after,
and the result. `verify()` walks the chain and reports the first broken entry.

Several warroom processes on one box may append to the same file: appends take an
exclusive `fcntl` lock, read the last entry's hash under it, and fsync before
releasing. Mirrors (e.g. a shared Postgres table) receive every entry after it is
written locally; a failing mirror never loses the local entry.
"""

from __future__ import annotations

import asyncio
import fcntl
import getpass
import hashlib
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from .errors import MASK, describe_exception, redact

log = logging.getLogger(__name__)

GENESIS = "0" * 64
SECRET_KEY_WORDS = ("password", "passwd", "secret", "token", "private_key", "privatekey", "api_key",
                    "apikey", "routing_key", "authorization", "keystore_password", "credential")


def resolve_operator(override: Any = None, configured: Any = None) -> str:
    """Who acts: an explicit non-empty name, else the configured one (a name or a function
    returning one), else `operator_identity()`."""
    if isinstance(override, str) and override.strip():
        return override.strip()
    if callable(configured):
        return configured()
    return configured or operator_identity()


def operator_identity(env: Mapping[str, str] | None = None) -> str:
    """Who is acting: $WARROOM_OPERATOR, else the login user plus the SSH client address."""
    env = os.environ if env is None else env
    explicit = env.get("WARROOM_OPERATOR", "").strip()
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    ssh = env.get("SSH_CLIENT") or env.get("SSH_CONNECTION") or ""
    addr = ssh.split()[0] if ssh.split() else ""
    if addr:
        return f"{user}@{addr}"
    return f"{user}@{socket.gethostname()}"


def mask_params(value: Any, key: str = "") -> Any:
    """Mask secret-looking keys and Secret values, recursively; redact free text."""
    if _is_secret_obj(value):
        return MASK
    if key and any(w in key.lower().replace("-", "_") for w in SECRET_KEY_WORDS):
        return MASK if value not in (None, "") else value
    if isinstance(value, Mapping):
        return {str(k): mask_params(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_params(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


def _is_secret_obj(value: Any) -> bool:
    return type(value).__name__ == "Secret" and hasattr(value, "reveal")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def _canonical(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(prev: str, body: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev.encode() + b"\n" + _canonical(body)).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_line: int | None = None
    reason: str = ""


def _log_failure(fut: asyncio.Future) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("could not write an audit entry: %s", describe_exception(fut.exception()))


class AuditLog:
    def __init__(self, path: str | os.PathLike, *, mirrors: list[Callable[[dict], None]] | None = None):
        self.path = Path(path).expanduser()
        self.mirrors = list(mirrors or [])
        self._writer: ThreadPoolExecutor | None = None  # one thread: this process's entries in order
        self._pending: set[asyncio.Future] = set()

    def append(self, **fields: Any) -> dict:
        """Write one entry (locked, hash-chained, fsynced), then hand it to the mirrors.
        Blocking: on an event loop use `append_async`. Fields: see `_body`."""
        entry = self._write(self._body(**fields))
        self._mirror(entry)
        return entry

    async def append_async(self, **fields: Any) -> dict:
        """`append` with the file work (lock, read of the last hash, write, fsync: a few ms,
        longer on a busy disk) in a worker thread, so the event loop (the console) never
        waits on the disk. The write goes on if the caller is cancelled; `flush()` waits."""
        return await asyncio.shield(self._submit(fields))

    def append_soon(self, **fields: Any) -> asyncio.Future:
        """From sync code on the event loop (a key handler, a poll callback): the write is
        submitted now and runs in the background; a failure is logged. `flush()` (the
        engine's stop) waits for it, so quitting right after does not lose the entry."""
        fut = self._submit(fields)
        fut.add_done_callback(_log_failure)
        return fut

    async def flush(self, wait_s: float = 5.0) -> bool:
        """Wait (at most `wait_s`) for the entries still being written; True if none is left."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=wait_s)
        return not self._pending

    def _submit(self, fields: Mapping[str, Any]) -> asyncio.Future:
        # The entry is built here, at the call: the masked values are the caller's now.
        # One thread of its own writes this process's entries in call order, never queued
        # behind other blocking work.
        body = self._body(**fields)
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warroom-audit")
        fut = asyncio.get_running_loop().run_in_executor(self._writer, self._write, body)
        self._pending.add(fut)
        fut.add_done_callback(self._written)
        return fut

    def _written(self, fut: asyncio.Future) -> None:
        self._pending.discard(fut)
        if not fut.cancelled() and fut.exception() is None:
            self._mirror(fut.result())  # mirrors run on the loop, like after `append`

    @staticmethod
    def _body(
        *,
        action: str,
        target: str = "",
        operator: str | None = None,
        params: Mapping[str, Any] | None = None,
        reason: str | None = None,
        dry_run: bool = False,
        before: Any = None,
        after: Any = None,
        result: str = "ok",
        summary: str = "",
        error: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ts": datetime.now(UTC).isoformat(),
            "operator": operator or operator_identity(),
            "host": socket.gethostname(),
            "action": action,
            "target": target,
            "params": _jsonable(mask_params(dict(params or {}))),
            "reason": redact(reason) if reason else reason,
            "dry_run": bool(dry_run),
            "before": _jsonable(mask_params(before)),
            "after": _jsonable(mask_params(after)),
            "result": result,
            "summary": redact(summary),
            "error": redact(error) if error else None,
        }
        if extra:
            body["extra"] = _jsonable(mask_params(dict(extra)))
        return body

    def _write(self, body: dict[str, Any]) -> dict:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            prev, seq = self._last_hash_and_seq(fd)
            body["seq"] = seq + 1
            body["prev"] = prev
            digest = entry_hash(prev, body)
            entry = dict(body, hash=digest)
            os.write(fd, _canonical(entry) + b"\n")
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return entry

    def _mirror(self, entry: dict) -> None:
        for mirror in self.mirrors:
            try:
                mirror(entry)
            except Exception:  # the local entry is the record; a mirror failure is not fatal
                pass

    @staticmethod
    def _last_hash_and_seq(fd: int) -> tuple[str, int]:
        size = os.lseek(fd, 0, os.SEEK_END)
        if size == 0:
            return GENESIS, 0
        chunk = 65536
        pos = size
        buf = b""
        while pos > 0:
            step = min(chunk, pos)
            pos -= step
            os.lseek(fd, pos, os.SEEK_SET)
            buf = os.read(fd, step) + buf
            lines = [ln for ln in buf.split(b"\n") if ln.strip()]
            if len(lines) >= 2 or (pos == 0 and lines):
                last = json.loads(lines[-1])
                return last["hash"], int(last.get("seq", 0))
        return GENESIS, 0

    def entries(self) -> Iterator[dict]:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            for raw in fh:
                raw = raw.strip()
                if raw:
                    try:
                        yield json.loads(raw)
                    except ValueError:
                        yield {"_corrupt": raw.decode("utf-8", "replace")}

    def tail(self, n: int = 20) -> list[dict]:
        from collections import deque

        return list(deque(self.entries(), maxlen=n))

    def verify(self) -> VerifyResult:
        prev = GENESIS
        count = 0
        if not self.path.exists():
            return VerifyResult(ok=True, entries=0)
        with self.path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    entry = json.loads(raw)
                except ValueError:
                    return VerifyResult(False, count, lineno, "line is not valid JSON")
                digest = entry.pop("hash", None)
                if entry.get("prev") != prev:
                    return VerifyResult(False, count, lineno, "chain broken: prev does not match the previous entry's hash")
                if entry_hash(prev, entry) != digest:
                    return VerifyResult(False, count, lineno, "entry was modified: hash does not match its content")
                prev = digest
                count += 1
        return VerifyResult(ok=True, entries=count)
