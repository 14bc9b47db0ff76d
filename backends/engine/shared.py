"""State shared by every console through one Postgres (`[postgres.NAME] shared = true`).

Three things live there:

- `warroom_audit`: a mirror of every console's local audit log (the local hash-chained
  file stays the record; the table is how every box sees every action). The mirror
  copies entries from the local file in order, by sequence number, so an entry written
  while the database was unreachable is copied on the next successful sync: nothing is
  lost and nothing is copied twice (`hash` is the primary key).
- `warroom_incidents`: incidents and their timelines (one JSON document per incident,
  changed under `SELECT ... FOR UPDATE` so two consoles never lose each other's
  changes). Every change sends `NOTIFY warroom_incidents, '<id>'`; every console
  LISTENs and reloads the incident, so all consoles show the same thing live.
- `warroom_locks`: who holds which action lock. The lock itself is a Postgres
  session advisory lock (`pg_try_advisory_lock`), taken on a connection held for the
  duration of the action, so it is released even if the console dies; the row only
  names the holder for whoever else tries ("order:o-1 is locked by alice (orders.fix)
  on box-2 since 09:12:03Z").

asyncpg is imported lazily. No Textual.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from backends.actions.base import LocalLocks, LockManager
from backends.errors import BackendError, LockHeld, describe_exception
from backends.model import utcnow

if TYPE_CHECKING:
    from backends.engine.audit import Entry
    from backends.sources.postgres import Connection

_T = TypeVar("_T")

log = logging.getLogger(__name__)

AUDIT_CHANNEL = "warroom_audit"
INCIDENT_CHANNEL = "warroom_incidents"
_SCHEMA_LOCK = 0x7761_7272_6F6F_6D00  # "warroom\0"

SCHEMA = """
CREATE TABLE IF NOT EXISTS warroom_audit (
    hash text PRIMARY KEY,
    log_id text NOT NULL,
    seq bigint NOT NULL,
    ts timestamptz NOT NULL,
    operator text,
    host text,
    action text,
    target text,
    result text,
    dry_run boolean NOT NULL DEFAULT false,
    entry jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS warroom_audit_ts ON warroom_audit (ts);
CREATE INDEX IF NOT EXISTS warroom_audit_log_seq ON warroom_audit (log_id, seq);
CREATE TABLE IF NOT EXISTS warroom_incidents (
    id text PRIMARY KEY,
    data jsonb NOT NULL,
    status text NOT NULL,
    severity text NOT NULL,
    version bigint NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS warroom_locks (
    key text PRIMARY KEY,
    holder text NOT NULL,
    host text,
    since timestamptz NOT NULL DEFAULT now()
);
"""


def lock_id(key: str) -> int:
    """A stable signed 64-bit advisory lock id for a lock key."""
    return int.from_bytes(hashlib.sha256(b"warroom-lock:" + key.encode()).digest()[:8], "big", signed=True)


def shared_dsn(config: Any) -> str | None:
    """The DSN of the `[postgres.NAME]` marked `shared = true`, if any."""
    for pg in (getattr(config, "postgres", None) or {}).values():
        if getattr(pg, "shared", False) is True:
            dsn = pg.dsn
            return dsn.reveal() if hasattr(dsn, "reveal") else str(dsn)
    return None


class SharedState:
    """One connection pool + one LISTEN connection to the shared database."""

    def __init__(self, dsn: str, *, timeout: float = 5.0, pool_max: int = 4, name: str = "shared") -> None:
        self._dsn = dsn
        self.timeout = timeout
        self.pool_max = pool_max
        self.name = name
        self._pool: Any = None
        self._pool_loop: asyncio.AbstractEventLoop | None = None
        self._schema_ready = False
        self._listen_conn: Any = None
        self._listen_task: asyncio.Task[None] | None = None
        self._subscribers: dict[str, list[Callable[[str], Any]]] = {}
        self._closing = False
        self._connect_lock: asyncio.Lock | None = None

    # ------------------------------------------------------------------ connections

    def _err(self, exc: BaseException) -> BackendError:
        return exc if isinstance(exc, BackendError) else BackendError(self.name, describe_exception(exc))

    async def pool(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._pool_loop is loop:
            return self._pool
        if self._connect_lock is None or self._pool_loop is not loop:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._pool is not None and self._pool_loop is loop:
                return self._pool
            import asyncpg

            try:
                pool = await asyncio.wait_for(
                    asyncpg.create_pool(self._dsn, min_size=0, max_size=self.pool_max,
                                        command_timeout=self.timeout), self.timeout)
            except Exception as exc:
                raise self._err(exc) from None
            self._pool, self._pool_loop = pool, loop
            self._schema_ready = False
        if not self._schema_ready and not self.read_only():
            await self.ensure_schema()  # a read-only process reads what the others created
        return self._pool

    def read_only(self) -> bool:
        """The engine it serves is read-only (checked live): it creates and copies nothing."""
        check = getattr(self, "read_only_check", None)
        return bool(check()) if callable(check) else False

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        pool = await self.pool()
        try:
            conn = await asyncio.wait_for(pool.acquire(), self.timeout)
        except Exception as exc:
            raise self._err(exc) from None
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                await pool.release(conn)

    async def ensure_schema(self) -> None:
        pool = self._pool
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            await conn.execute(SCHEMA)
        self._schema_ready = True

    async def run(self, fn: Callable[[Connection], Awaitable[_T]]) -> _T:
        """Run `await fn(conn)` on a pooled connection; errors become BackendError."""
        try:
            async with self.connection() as conn:
                return await asyncio.wait_for(fn(conn), self.timeout)
        except BackendError:
            raise
        except Exception as exc:
            raise self._err(exc) from None

    # ------------------------------------------------------------------ LISTEN / NOTIFY

    def subscribe(self, channel: str, fn: Callable[[str], Any]) -> Callable[[], None]:
        """Call `fn(payload)` for every NOTIFY on `channel` (after `start()`)."""
        self._subscribers.setdefault(channel, []).append(fn)

        def undo() -> None:
            subs = self._subscribers.get(channel, [])
            if fn in subs:
                subs.remove(fn)

        return undo

    async def start(self) -> None:
        """Open the pool, create the tables and keep a LISTEN connection (reconnecting)."""
        self._closing = False
        await self.pool()
        if self._listen_task is None or self._listen_task.done():
            ready = asyncio.Event()
            self._listen_task = asyncio.create_task(self._listen_loop(ready), name="shared:listen")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ready.wait(), self.timeout)

    def _dispatch(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        for fn in list(self._subscribers.get(channel, [])):
            try:
                res = fn(payload)
                if asyncio.iscoroutine(res):
                    asyncio.ensure_future(res)
            except Exception:  # a subscriber's failure never stops the others
                log.exception("shared subscriber failed")

    async def _listen_loop(self, ready: asyncio.Event) -> None:
        import asyncpg

        backoff = 0.5
        while not self._closing:
            conn = None
            try:
                conn = await asyncio.wait_for(asyncpg.connect(self._dsn), self.timeout)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, ev=lost: ev.set())
                for ch in (AUDIT_CHANNEL, INCIDENT_CHANNEL):
                    await conn.add_listener(ch, self._dispatch)
                self._listen_conn = conn
                ready.set()
                backoff = 0.5
                # reconnected: every subscriber reloads (it may have missed notifications)
                for ch in (AUDIT_CHANNEL, INCIDENT_CHANNEL):
                    self._dispatch(conn, 0, ch, "*")
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("shared LISTEN connection: %s", describe_exception(exc))
            finally:
                self._listen_conn = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)
            ready.set()
            if not self._closing:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    @property
    def listening(self) -> bool:
        return self._listen_conn is not None and not self._listen_conn.is_closed()

    async def close(self) -> None:
        self._closing = True
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._listen_task, 3)
            self._listen_task = None
        if self._pool is not None and self._pool_loop is asyncio.get_running_loop():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), 5)
        self._pool = None
        self._pool_loop = None

    # ------------------------------------------------------------------ audit table

    async def audit_entries(self, *, since: datetime | None = None, limit: int = 500) -> list[Entry]:
        """Entries from every console, oldest first (the last `limit`)."""

        async def q(conn: Connection) -> list[Entry]:
            if since is None:
                rows = await conn.fetch("SELECT entry FROM (SELECT entry, ts, seq FROM warroom_audit ORDER BY ts DESC, "
                                        "seq DESC LIMIT $1) t ORDER BY ts, seq", limit)
            else:
                rows = await conn.fetch("SELECT entry FROM warroom_audit WHERE ts >= $1 ORDER BY ts, seq LIMIT $2",
                                        since, limit)
            return [json.loads(r["entry"]) for r in rows]

        return await self.run(q)


# --------------------------------------------------------------------------- audit mirror


def log_id_for(path: str | os.PathLike[str]) -> str:
    """Identifies one local audit file (host + absolute path) in the shared table."""
    text = f"{socket.gethostname()}:{Path(path).expanduser().resolve()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class AuditMirror:
    """A mirror callable for `AuditLog.mirrors`: copies the local log into `warroom_audit`.

    Calling it (after every local append) wakes a background sync; the sync copies every
    local entry above the highest sequence number already in the table, in order. If the
    database is down the entries wait in the local file and go on the next sync. Without a
    running event loop (a plain script) the sync runs inline on a fresh connection.
    """

    def __init__(self, shared: SharedState, audit: Any) -> None:
        self.shared = shared
        self.audit = audit
        self.log_id = log_id_for(audit.path)
        self._mirrored_seq: int | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.last_error: str = ""

    def __call__(self, entry: Entry) -> None:
        if self.shared.read_only():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            with contextlib.suppress(Exception):
                asyncio.run(self._sync_fresh())
            return
        self._ensure_task(loop).set()

    def _ensure_task(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        """The sync task of `loop` (started if needed) and the event that wakes it."""
        if self._task is None or self._task.done() or self._loop is not loop or self._wake is None:
            self._loop = loop
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(self._wake), name="shared:audit-mirror")
        return self._wake

    async def start(self) -> None:
        self._ensure_task(asyncio.get_running_loop()).set()

    async def _run(self, wake: asyncio.Event) -> None:
        backoff = 0.5
        while True:
            await wake.wait()
            wake.clear()
            try:
                await self.sync()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = describe_exception(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                wake.set()

    def _pending(self) -> list[Entry]:
        after = self._mirrored_seq or 0
        return [e for e in self.audit.entries()
                if "_corrupt" not in e and isinstance(e.get("seq"), int) and e["seq"] > after and e.get("hash")]

    async def _insert(self, conn: Any) -> int:
        if self._mirrored_seq is None:
            self._mirrored_seq = int(await conn.fetchval(
                "SELECT coalesce(max(seq), 0) FROM warroom_audit WHERE log_id = $1", self.log_id))
        rows = self._pending()
        if not rows:
            return 0
        await conn.executemany(
            "INSERT INTO warroom_audit (hash, log_id, seq, ts, operator, host, action, target, result, dry_run, entry) "
            "VALUES ($1, $2, $3, $4::text::timestamptz, $5, $6, $7, $8, $9, $10, $11::jsonb) "
            "ON CONFLICT (hash) DO NOTHING",
            [(e["hash"], self.log_id, e["seq"], e.get("ts"), e.get("operator"), e.get("host"), e.get("action"),
              e.get("target"), e.get("result"), bool(e.get("dry_run")), json.dumps(e)) for e in rows],
        )
        self._mirrored_seq = max(e["seq"] for e in rows)
        await conn.execute("SELECT pg_notify($1, $2)", AUDIT_CHANNEL, f"{self.log_id}:{self._mirrored_seq}")
        return len(rows)

    async def sync(self) -> int:
        """Copy what the table lacks; returns how many entries were copied (none when read-only)."""
        if self.shared.read_only():
            return 0
        try:
            n = await self.shared.run(self._insert)
        except Exception as exc:
            self.last_error = describe_exception(exc)
            raise
        self.last_error = ""
        return n

    async def _sync_fresh(self) -> None:
        import asyncpg

        conn = await asyncio.wait_for(asyncpg.connect(self.shared._dsn), self.shared.timeout)
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                await conn.execute(SCHEMA)
            self._mirrored_seq = None
            await self._insert(conn)
        finally:
            await conn.close()

    async def flush(self, within: float = 5.0) -> None:
        """Sync now (used at shutdown and by tests)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sync(), within)

    async def close(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None


# --------------------------------------------------------------------------- locks


class PgLocks(LockManager):
    """One action per target across every console: Postgres session advisory locks.

    If the shared database cannot be reached the lock falls back to this box's
    `LocalLocks` (the incident may be the database itself; operators must still act).
    """

    def __init__(self, shared: SharedState, *, fallback: LockManager | None = None, host: str | None = None):
        self.shared = shared
        self.fallback = fallback
        self.host = host or socket.gethostname()

    async def holder_of(self, key: str) -> str | None:
        row = await self.shared.run(lambda c: c.fetchrow(
            "SELECT holder, host, since FROM warroom_locks WHERE key = $1", key))
        return _holder_text(row) if row else None

    async def held(self) -> list[dict[str, Any]]:
        rows = await self.shared.run(lambda c: c.fetch("SELECT key, holder, host, since FROM warroom_locks ORDER BY since"))
        return [dict(r) for r in rows]

    @contextlib.asynccontextmanager
    async def hold(self, key: str, holder: str) -> AsyncIterator[None]:
        lid = lock_id(key)
        try:
            pool = await self.shared.pool()
            conn = await asyncio.wait_for(pool.acquire(), self.shared.timeout)
        except Exception as exc:
            if self.fallback is None:
                raise LockHeld("lock", key, f"nobody can be sure: shared database unreachable "
                                            f"({describe_exception(exc)})") from None
            log.warning("shared locks unreachable (%s); using local locks", describe_exception(exc))
            async with self.fallback.hold(key, holder):
                yield
            return
        try:
            got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", lid)
            if not got:
                row = await conn.fetchrow("SELECT holder, host, since FROM warroom_locks WHERE key = $1", key)
                raise LockHeld("lock", key, _holder_text(row) if row else "another console")
            try:
                await conn.execute(
                    "INSERT INTO warroom_locks (key, holder, host, since) VALUES ($1, $2, $3, now()) "
                    "ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder, host = EXCLUDED.host, since = now()",
                    key, holder, self.host)
                yield
            finally:
                with contextlib.suppress(Exception):
                    await conn.execute("DELETE FROM warroom_locks WHERE key = $1 AND holder = $2", key, holder)
                with contextlib.suppress(Exception):
                    await conn.execute("SELECT pg_advisory_unlock($1)", lid)
        finally:
            with contextlib.suppress(Exception):
                await pool.release(conn)


def _holder_text(row: Any) -> str:
    since = row["since"]
    when = since.strftime("%H:%M:%SZ") if hasattr(since, "strftime") else str(since)
    host = f" on {row['host']}" if row["host"] else ""
    return f"{row['holder']}{host} since {when}"


# --------------------------------------------------------------------------- incidents


class PgIncidentStore:
    """Incidents as JSON documents in `warroom_incidents`, changed atomically, NOTIFY on change."""

    shared_store = True

    def __init__(self, shared: SharedState) -> None:
        self.shared = shared

    async def load_all(self) -> list[dict[str, Any]]:
        rows = await self.shared.run(lambda c: c.fetch("SELECT data FROM warroom_incidents ORDER BY updated_at"))
        return [json.loads(r["data"]) for r in rows]

    async def get(self, incident_id: str) -> dict[str, Any] | None:
        row = await self.shared.run(lambda c: c.fetchrow("SELECT data FROM warroom_incidents WHERE id = $1",
                                                         incident_id))
        return json.loads(row["data"]) if row else None

    async def update(self, incident_id: str,
                     fn: Callable[[dict[str, Any] | None], dict[str, Any] | None]) -> dict[str, Any] | None:
        """Read-modify-write under a row lock; `fn` returns the new document (None: no change)."""

        async def tx(conn: Connection) -> dict[str, Any] | None:
            async with conn.transaction():
                # serialize creation of the same id too
                await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_id("incident-row:" + incident_id))
                row = await conn.fetchrow("SELECT data FROM warroom_incidents WHERE id = $1 FOR UPDATE", incident_id)
                old = json.loads(row["data"]) if row else None
                new = fn(old)
                if new is None:
                    return old
                await conn.execute(
                    "INSERT INTO warroom_incidents (id, data, status, severity) VALUES ($1, $2::jsonb, $3, $4) "
                    "ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, status = EXCLUDED.status, "
                    "severity = EXCLUDED.severity, version = warroom_incidents.version + 1, updated_at = now()",
                    incident_id, json.dumps(new), str(new.get("status", "")), str(new.get("severity", "")))
                await conn.execute("SELECT pg_notify($1, $2)", INCIDENT_CHANNEL, incident_id)
                return new

        return await self.shared.run(tx)

    def subscribe(self, fn: Callable[[str], Any]) -> Callable[[], None]:
        return self.shared.subscribe(INCIDENT_CHANNEL, fn)

    async def close(self) -> None:
        return None


def attach_shared(engine: Any, dsn: str, *, timeout: float = 5.0) -> SharedState:
    """Wire a shared Postgres into an engine: audit mirror, advisory locks, start/stop."""
    shared = SharedState(dsn, timeout=timeout)
    mirror = AuditMirror(shared, engine.audit)
    engine.audit.mirrors.append(mirror)
    fallback = engine.actions.locks if isinstance(engine.actions.locks, LocalLocks) else None
    engine.actions.locks = PgLocks(shared, fallback=fallback)
    shared.mirror = mirror  # type: ignore[attr-defined]

    # read-only: no schema created, nothing of this box's audit copied (only refusals are
    # written there, and a read-only process writes nothing elsewhere)
    shared.read_only_check = lambda: bool(getattr(engine.actions, "read_only", False))  # type: ignore[attr-defined]

    async def start() -> None:
        try:
            await shared.start()
            if not shared.read_only():
                await mirror.start()
        except Exception as exc:  # the console still starts; locks fall back, the mirror retries
            log.warning("shared database: %s", describe_exception(exc))

    async def stop() -> None:
        await mirror.close()
        await shared.close()

    engine.starters.append(start)
    engine.closers.append(stop)
    engine.shared = shared
    return shared


__all__ = ["AUDIT_CHANNEL", "INCIDENT_CHANNEL", "AuditMirror", "PgIncidentStore", "PgLocks", "SharedState",
           "attach_shared", "lock_id", "log_id_for", "shared_dsn", "utcnow"]
