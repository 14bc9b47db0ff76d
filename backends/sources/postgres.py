"""PostgreSQL health (asyncpg): reachability, connections, long-running queries, size.

One small pool per DSN and event loop, created lazily on first use and reused by
every module that reads the same database (orders, breakers, incidents): never a
connection per poll. Pools connect with a connect timeout, set `statement_timeout`
and `application_name = warroom` on their sessions, and replace broken connections
by themselves (a query that fails on a dead connection is retried once on a fresh one).

`PostgresSource` -> `PostgresReading`; action `postgres.terminate` ends one backend
by pid, or every backend running longer than `terminate_after` (seed 003 incident 3),
re-checking each pid right before `pg_terminate_backend($1)`.

asyncpg is imported lazily (inside functions).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from backends.actions.base import (
    Action,
    ActionPlan,
    ActionResult,
    Change,
    Danger,
    Guard,
    Progress,
    ProgressFn,
)
from backends.engine.rules import RuleContext, register, rule, settings_table, snapshot_rule
from backends.errors import ActionRefused, BackendError, describe_exception, redact, register_secret
from backends.model import Finding, LongQuery, PostgresReading, Severity, Snapshot, SourceState
from backends.units import format_age as _fmt_duration
from backends.units import (
    reveal as reveal,  # re-exported: backends.sources.orders imports it from here
)

APP_NAME = "warroom"

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _quote_ident(name: str, *, allow_schema: bool = True) -> str:
    """Validate a table/column name from config and quote it: `orders` -> `"orders"`,
    `public.orders` -> `"public"."orders"`. Raises ValueError for anything else."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"invalid SQL identifier {name!r}")
    parts = name.split(".")
    if len(parts) > (2 if allow_schema else 1) or not all(_IDENT.match(p) for p in parts):
        raise ValueError(
            f"invalid SQL identifier {name!r} (expected ^[A-Za-z_][A-Za-z0-9_]*$"
            + (", optionally schema.table)" if allow_schema else ")")
        )
    return ".".join(f'"{p}"' for p in parts)


try:  # the config module's validator is the one source of truth when present
    from backends.config import quote_ident
except ImportError:  # pragma: no cover - config.py missing
    quote_ident = _quote_ident


# --------------------------------------------------------------------------- DSNs


def display_dsn(dsn: Any) -> str:
    """A DSN safe to show: the password masked, the rest as written."""
    return redact(reveal(dsn))


def _register_dsn_secret(dsn: str) -> None:
    try:
        parts = urlsplit(dsn)
        if parts.password:
            register_secret(parts.password)
            register_secret(unquote(parts.password))
    except ValueError:
        pass
    m = re.search(r"(?i)\bpassword\s*=\s*([^\s&]+)", dsn)
    if m:
        register_secret(m.group(1))


def describe_pg_error(exc: BaseException, dsn: str = "") -> str:
    """A readable reason for an asyncpg / socket failure (no traceback, no password)."""
    where = _where(dsn)
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"no answer from {where} (timed out)" if where else "timed out"
    if isinstance(exc, ConnectionRefusedError) or "Connect call failed" in text or "refused" in text.lower():
        return f"connection refused at {where}" if where else "connection refused"
    if isinstance(exc, ConnectionResetError):
        return f"connection reset by {where}" if where else "connection reset by peer"
    if name in ("InvalidPasswordError", "InvalidAuthorizationSpecificationError"):
        return redact(f"authentication failed: {text}")
    if name == "InvalidCatalogNameError":
        return redact(text)
    if name in ("ConnectionDoesNotExistError", "InterfaceError") and "closed" in text.lower():
        return f"connection to {where} was closed" if where else "connection was closed"
    if name == "QueryCanceledError":
        return redact(f"query cancelled: {text}")
    if isinstance(exc, OSError) and exc.strerror:
        return redact(f"{exc.strerror} ({where})" if where else exc.strerror)
    return describe_exception(exc)


def _where(dsn: str) -> str:
    if not dsn:
        return ""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or ""
        if not host:
            m = re.search(r"host=([^&]+)", parts.query or "")
            host = unquote(m.group(1)) if m else "local socket"
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return ""


# --------------------------------------------------------------------------- pools


# asyncpg ships no type information (no py.typed, no stubs): its pools, connections and
# records are untyped objects; these aliases name what a value is where the type says Any.
Pool = Any
Connection = Any
Record = Any
_T = TypeVar("_T")


@dataclass
class _PoolEntry:
    pool: Pool
    loop: weakref.ref[asyncio.AbstractEventLoop]


_POOLS: dict[tuple[str], _PoolEntry] = {}


async def get_pool(
    dsn: Any,
    *,
    max_size: int = 2,
    connect_timeout: float = 3.0,
    statement_timeout: float | None = 30.0,
    command_timeout: float | None = None,
) -> Pool:
    """The shared asyncpg pool for `dsn` on the running loop (created lazily, reused by
    every caller; the first caller's settings win -- each acquire has its own timeout).

    `min_size=0`: creating the pool never connects, so it cannot fail or hang; each
    acquire connects (within `connect_timeout`) when no idle connection is left, and
    broken connections are dropped and replaced.
    """
    import asyncpg

    plain = reveal(dsn)
    _register_dsn_secret(plain)
    loop = asyncio.get_running_loop()
    key = (plain,)  # one pool per database: the first caller's settings win
    entry = _POOLS.get(key)
    if entry is not None and entry.loop() is loop and not entry.pool.is_closing():
        return entry.pool
    settings = {"application_name": APP_NAME}
    if statement_timeout:
        settings["statement_timeout"] = str(int(statement_timeout * 1000))
    pool = asyncpg.create_pool(
        plain,
        min_size=0,
        max_size=max_size,
        max_inactive_connection_lifetime=60.0,
        reset=_light_reset,
        timeout=connect_timeout,
        command_timeout=command_timeout or statement_timeout or None,
        server_settings=settings,
    )
    await pool  # with min_size=0 this opens nothing
    old = _POOLS.get(key)
    if old is not None and old.loop() is loop and not old.pool.is_closing():  # lost a race
        await pool.close()
        return old.pool
    if old is not None:
        with contextlib.suppress(Exception):
            old.pool.terminate()
    _POOLS[key] = _PoolEntry(pool, weakref.ref(loop))
    return pool


async def _light_reset(con: Connection) -> None:
    """Release without asyncpg's default reset round trip (advisory unlock, CLOSE ALL,
    UNLISTEN, RESET ALL): warroom keeps no session state, it only ends an open transaction."""
    if con.is_in_transaction():
        await con.execute("ROLLBACK")


async def close_pools() -> None:
    """Close every pool of the running loop (app shutdown, test teardown)."""
    loop = asyncio.get_running_loop()
    for key, entry in list(_POOLS.items()):
        if entry.loop() is loop or entry.loop() is None:
            _POOLS.pop(key, None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(entry.pool.close(), 2.0)
            with contextlib.suppress(Exception):
                entry.pool.terminate()


def _is_connection_error(exc: BaseException) -> bool:
    name = type(exc).__name__
    return name in {"ConnectionDoesNotExistError", "ConnectionFailureError", "InterfaceError"} or isinstance(
        exc, ConnectionResetError | BrokenPipeError
    )


@contextlib.asynccontextmanager
async def connection(
    dsn: Any,
    *,
    source: str,
    timeout: float = 3.0,  # noqa: ASYNC109 - also the connect timeout
    max_size: int = 2,
    statement_timeout: float | None = None,
) -> AsyncIterator[Connection]:
    """A pooled connection; any failure to get it becomes BackendError(source, reason)."""
    plain = reveal(dsn)
    try:
        pool = await get_pool(
            plain,
            max_size=max_size,
            connect_timeout=max(timeout, 3.0),
            statement_timeout=statement_timeout or 30.0,
        )
        con = await pool.acquire(timeout=timeout)
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError(source, describe_pg_error(exc, plain)) from None
    try:
        yield con
    except (asyncio.CancelledError, TimeoutError):
        # interrupted mid-query (a stopped server, the monitor's timeout): the connection's
        # state is unknown; close it, so that releasing it cannot hang (asyncpg's shielded
        # release then failed later: "Task exception was never retrieved")
        with contextlib.suppress(Exception):
            con.terminate()
        raise
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.release(con), timeout)


async def run(dsn: Any, fn: Callable[[Connection], Awaitable[_T]], *, source: str,
              timeout: float = 3.0,  # noqa: ASYNC109
              max_size: int = 2, statement_timeout: float | None = None, retry: bool = True) -> _T:
    """`await fn(con)` on a pooled connection within `timeout`; retried once on a fresh
    connection when the pooled one turns out to be dead (server restarted) -- unless
    `retry=False` (writes, whose outcome must be reported exactly).
    Every failure becomes BackendError(source, reason)."""
    plain = reveal(dsn)
    deadline = time.monotonic() + timeout
    for attempt in (1, 2):
        left = max(0.05, deadline - time.monotonic())
        try:
            async with asyncio.timeout(left):
                async with connection(plain, source=source, timeout=left, max_size=max_size,
                                      statement_timeout=statement_timeout) as con:
                    return await fn(con)
        except BackendError:
            raise
        except TimeoutError:
            raise BackendError(source, f"no answer from {_where(plain) or 'postgres'} within {timeout:g}s") from None
        except Exception as exc:
            if retry and attempt == 1 and _is_connection_error(exc) and time.monotonic() < deadline:
                continue
            raise BackendError(source, describe_pg_error(exc, plain)) from None
    raise BackendError(source, "unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- source

# Thresholds per source name, read by the rules (registered when a source is built).

_STATS_SQL = """
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('server_version') AS version,
       pg_database_size(current_database()) AS size,
       (SELECT count(*) FROM pg_stat_activity
         WHERE backend_type = 'client backend') AS total,
       (SELECT count(*) FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND state = 'active'
           AND pid <> pg_backend_pid()) AS active
"""

_LONG_SQL = """
SELECT pid, EXTRACT(EPOCH FROM (now() - query_start))::float8 AS duration,
       coalesce(state, '') AS state, left(coalesce(query, ''), $2::int) AS query,
       coalesce(application_name, '') AS application, coalesce(usename::text, '') AS username
  FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND state IS NOT NULL AND state <> 'idle'
   AND pid <> pg_backend_pid()
   AND query_start < now() - make_interval(secs => $1::float8)
 ORDER BY query_start
 LIMIT $3::int
"""


def _cut(text: str, n: int) -> str:
    text = " ".join((text or "").split())
    return redact(text if len(text) <= n else text[: max(0, n - 1)] + "…")


class PostgresSource:
    """Health of one configured database (`[postgres.NAME]`)."""

    kind = "postgres"

    def __init__(
        self,
        name: str,
        dsn: Any,
        *,
        interval: float = 5.0,
        timeout: float = 3.0,
        pool_max: int = 2,
        long_query_after: float = 60.0,
        terminate_after: float = 300.0,
        warn_connections: int = 50,
        pool_warn_ratio: float = 0.8,
        query_chars: int = 120,
        long_query_limit: int = 20,
    ) -> None:
        self.name = name
        self.dsn = dsn
        self.interval = interval
        self.timeout = timeout
        self.pool_max = pool_max
        self.long_query_after = long_query_after
        self.terminate_after = terminate_after
        self.warn_connections = warn_connections
        self.pool_warn_ratio = pool_warn_ratio
        self.query_chars = query_chars
        self.long_query_limit = long_query_limit
        _register_dsn_secret(reveal(dsn))
        register("postgres")[name] = self

    @property
    def display(self) -> str:
        return display_dsn(self.dsn)

    async def run(self, fn: Callable[[Connection], Awaitable[_T]], *, retry: bool = True,
                  extra_time: float = 0.0) -> _T:
        # 90 % of the poll timeout: the reason is ours ("no answer from host:port"),
        # not the monitor's generic "timed out". `extra_time`: a batch of statements on one
        # connection (the terminate action) gets more than one statement's time.
        return await run(self.dsn, fn, source=self.name, timeout=max(0.05, self.timeout * 0.9) + extra_time,
                         max_size=self.pool_max, retry=retry)

    async def poll(self) -> Sequence[PostgresReading]:
        async def read(con: Connection) -> tuple[float, Record, list[Record]]:
            t0 = time.perf_counter()
            await con.fetchval("SELECT 1")
            latency = (time.perf_counter() - t0) * 1000.0
            stats = await con.fetchrow(_STATS_SQL)
            rows = await con.fetch(_LONG_SQL, float(self.long_query_after), self.query_chars * 2,
                                   self.long_query_limit)
            return latency, stats, rows

        latency, stats, rows = await self.run(read)
        long_queries = tuple(
            LongQuery(
                pid=r["pid"],
                duration_s=float(r["duration"] or 0.0),
                state=r["state"],
                query=_cut(r["query"], self.query_chars),
                application=r["application"],
                user=r["username"],
            )
            for r in rows
        )
        return [
            PostgresReading(
                source=self.name,
                reachable=True,
                latency_ms=latency,
                active_connections=int(stats["active"]),
                total_connections=int(stats["total"]),
                max_connections=int(stats["max_connections"]),
                long_queries=long_queries,
                database_size_bytes=int(stats["size"]),
                server_version=str(stats["version"]),
                warn_connections=self.warn_connections,
                pool_warn_ratio=self.pool_warn_ratio,
                long_query_after=self.long_query_after,
            )
        ]


# --------------------------------------------------------------------------- action

_BACKEND_COLUMNS = """
SELECT pid, backend_start, EXTRACT(EPOCH FROM (now() - query_start))::float8 AS duration,
       coalesce(state, '') AS state, left(coalesce(query, ''), 400) AS query,
       coalesce(usename::text, '') AS username, coalesce(datname::text, '') AS datname,
       coalesce(application_name, '') AS application, backend_type,
       pid = pg_backend_pid() AS own
  FROM pg_stat_activity
"""

_CANDIDATE = ("backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid()"
              " AND application_name NOT LIKE 'warroom%'")
_OLDER = _CANDIDATE + " AND query_start < now() - make_interval(secs => $1::float8)"

_OLDEST_ACTIVE = ("SELECT max(EXTRACT(EPOCH FROM (now() - query_start)))::float8"  # noqa: S608 - constants
                  " FROM pg_stat_activity WHERE " + _CANDIDATE)


def _backend_row(r: Record) -> dict[str, Any]:
    return {
        "pid": r["pid"],
        "backend_start": r["backend_start"].isoformat() if r["backend_start"] else None,
        "duration_s": round(float(r["duration"] or 0.0), 1),
        "state": r["state"],
        "user": r["username"],
        "database": r["datname"],
        "application": r["application"],
        "query": _cut(r["query"], 120),
    }


class TerminateBackend(Action):
    """`pg_terminate_backend` on one pid, or on every query running longer than N."""

    id = "postgres.terminate"
    title = "Terminate Postgres backend(s)"
    danger = Danger.CONFIRM
    description = "End a stuck backend by pid, or all queries running longer than terminate_after."

    def __init__(self, source: PostgresSource) -> None:
        self.source = source

    def step_facts(self) -> dict[str, str]:
        """What a playbook step says of this action: the threshold it really uses."""
        return {"terminate_after": _fmt_duration(self.source.terminate_after)}

    async def plan(self, *, pid: Any = None, all: bool = False, older_than: Any = None,
                   reason: str | None = None, **_: Any) -> ActionPlan:
        src = self.source
        if (pid is None) == (not all):
            raise ActionRefused(self.id, "give either a pid or all=True")
        threshold = src.terminate_after
        if older_than is not None:
            try:
                threshold = float(older_than)
            except (TypeError, ValueError):
                raise ActionRefused(self.id, f"older_than must be seconds, got {older_than!r}") from None
            if threshold < 1:
                raise ActionRefused(self.id, "older_than must be at least 1 second")
        if pid is not None:
            try:
                pid_i = int(str(pid).strip())
            except ValueError:
                raise ActionRefused(self.id, f"pid must be a number, got {pid!r}") from None
            if pid_i <= 0 or pid_i > 2**31 - 1:
                raise ActionRefused(self.id, f"pid out of range: {pid_i}")

            async def read_one(con: Connection) -> list[Record]:
                found: list[Record] = await con.fetch(_BACKEND_COLUMNS + " WHERE pid = $1", pid_i)  # noqa: S608
                return found

            rows = await src.run(read_one)
            if not rows:
                raise ActionRefused(self.id, f"no backend with pid {pid_i}")
            r = rows[0]
            if r["own"] or str(r["application"]).startswith("warroom"):
                raise ActionRefused(self.id, f"pid {pid_i} is warroom's own connection")
            if r["backend_type"] != "client backend":
                raise ActionRefused(self.id, f"pid {pid_i} is a {r['backend_type']}, not a client backend")
            mode = "pid"
            target = f"postgres:{src.name}:pid:{pid_i}"
            title = f"Terminate backend {pid_i} on {src.name}"
        else:

            async def read_old(con: Connection) -> tuple[list[Record], float | None]:
                found: list[Record] = await con.fetch(
                    _BACKEND_COLUMNS + " WHERE " + _OLDER + " ORDER BY query_start", threshold)  # noqa: S608
                # none old enough: how long the oldest candidate has run (the operator is told when)
                return found, None if found else await con.fetchval(_OLDEST_ACTIVE)

            rows, oldest = await src.run(read_old)
            mode = "older"
            target = f"postgres:{src.name}:older-than:{int(threshold)}s"
            title = f"Terminate {len(rows)} backend(s) running > {_fmt_duration(threshold)} on {src.name}"
        backends = [_backend_row(r) for r in rows]
        changes = tuple(
            Change(
                target=f"pid {b['pid']}",
                description=(f"terminate pid {b['pid']} ({b['user']}@{b['database']}, {b['state']}, "
                             f"running {_fmt_duration(b['duration_s'])}): {b['query']}"),
                before=b,
                after="terminated",
            )
            for b in backends
        )
        why = (f"backend {pid} exists" if mode == "pid" else
               f"{len(backends)} backend(s) running > {_fmt_duration(threshold)}")
        if mode == "older" and not backends and oldest is not None:
            ran = max(0.0, float(oldest))
            # a stuck query younger than the threshold: say when it will qualify (look again then)
            why += f"; the oldest active query has run {ran:.1f}s: {max(0.1, threshold - ran):.1f}s to go"
        guard = Guard(bool(backends), why)
        preview = "\n".join(c.description for c in changes) or "nothing to terminate"
        return ActionPlan(
            action=self.id,
            title=title,
            target=target,
            changes=changes,
            guard=guard,
            danger=self.danger,
            params={"source": src.name, "mode": mode, "pid": pid if pid is None else int(str(pid)),
                    "older_than": threshold,
                    "pids": [[b["pid"], b["backend_start"]] for b in backends]},
            reason=reason,
            preview=preview,
            lock_key=f"postgres:{src.name}:terminate",
            total=len(backends),
        )

    def _condition(self, plan: ActionPlan) -> str:
        if plan.params["mode"] == "older":
            return _OLDER.replace("$1", "$3")
        return "backend_type = 'client backend' AND pid <> pg_backend_pid()"

    async def _still_matching(self, plan: ActionPlan) -> list[tuple[int, datetime]]:
        wanted = [(int(p), datetime.fromisoformat(s)) for p, s in plan.params["pids"] if s]
        if not wanted:
            return []
        cond = self._condition(plan)

        async def read(con: Connection) -> set[tuple[int, datetime]]:
            rows = await con.fetch(
                "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = ANY($1::int[]) "  # noqa: S608
                "AND backend_start = ANY($2::timestamptz[]) AND " + cond,
                [p for p, _ in wanted], [s for _, s in wanted],
                *([float(plan.params["older_than"])] if plan.params["mode"] == "older" else []),
            )
            return {(r["pid"], r["backend_start"]) for r in rows}

        found = await self.source.run(read)
        return [w for w in wanted if w in found]

    async def check_guard(self, plan: ActionPlan) -> Guard:
        left = await self._still_matching(plan)
        return Guard(bool(left), f"{len(left)} of {len(plan.params['pids'])} planned backend(s) still match")

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        cond = self._condition(plan)
        extra = [float(plan.params["older_than"])] if plan.params["mode"] == "older" else []
        sql = ("SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity "  # noqa: S608
               "WHERE pid = $1 AND backend_start = $2::timestamptz AND " + cond)
        terminated: list[int] = []
        skipped: list[int] = []
        failed: list[str] = []
        items = plan.params["pids"]
        todo = [(i, int(pid), datetime.fromisoformat(started)) for i, (pid, started) in enumerate(items) if started]
        skipped.extend(int(pid) for pid, started in items if not started)
        done = 0

        # One connection for the whole batch (one pool acquire, not one per pid: 45 of them took
        # over a minute on a loaded box); each pid is still re-checked by its own statement.
        async def kill_all(con: Connection) -> None:
            nonlocal done
            for i, pid, start_dt in todo:
                try:
                    ok: bool | None = await con.fetchval(sql, pid, start_dt, *extra)
                except Exception as exc:
                    if not getattr(exc, "sqlstate", None):
                        raise  # the connection failed, not this pid's statement: the rest fail below
                    done += 1  # the server refused this pid (e.g. not allowed): the others go on
                    failed.append(f"pid {pid}: {describe_pg_error(exc)}")
                    progress(_progress(i + 1, len(items), f"pid {pid}: failed"))
                    continue
                done += 1
                if ok:
                    terminated.append(pid)
                elif ok is None:
                    skipped.append(pid)
                else:
                    failed.append(f"pid {pid}: pg_terminate_backend returned false")
                progress_msg = f"pid {pid}: " + ("terminated" if ok else "skipped" if ok is None else "failed")
                progress(_progress(i + 1, len(items), progress_msg))

        if todo:
            try:
                await self.source.run(kill_all, retry=False, extra_time=0.5 * len(todo))
            except BackendError as exc:
                failed.extend(f"pid {pid}: {exc.reason}" for _, pid, _ in todo[done:])
        details = tuple(
            [f"terminated pid {p}" for p in terminated]
            + [f"skipped pid {p} (gone or no longer matching)" for p in skipped]
            + failed
        )
        counts = {"terminated": len(terminated), "skipped": len(skipped), "failed": len(failed)}
        if failed and terminated:
            status = "partial"
        elif failed:
            status = "failed"
        elif terminated:
            status = "ok"
        else:
            status = "skipped"
        return ActionResult(
            status=status,
            summary=f"terminated {len(terminated)}, skipped {len(skipped)}, failed {len(failed)}",
            after={"terminated": terminated, "skipped": skipped},
            counts=counts,
            details=details,
        )


def _progress(done: int, total: int, message: str) -> Progress:
    return Progress(done, total, message)


def actions_for(source: PostgresSource) -> list[Action]:
    return [TerminateBackend(source)]


# --------------------------------------------------------------------------- rules


def _settings(source: str, ctx: RuleContext | None = None) -> PostgresSource | None:
    return settings_table("postgres", ctx).get(source)


@rule(PostgresReading)
def postgres_rules(r: PostgresReading, ctx: RuleContext) -> Iterable[Finding]:
    s = _settings(r.source, ctx)
    warn_conn = s.warn_connections if s else 50
    ratio_warn = s.pool_warn_ratio if s else 0.8
    long_after = s.long_query_after if s else 60.0
    kill_after = s.terminate_after if s else 300.0
    target = f"postgres:{r.source}"
    if not r.reachable:
        yield Finding(key=f"postgres:{r.source}:unreachable", severity=Severity.P1, source=r.source,
                      summary=f"Postgres {r.source} is unreachable", target=target)
        return
    if r.max_connections:
        ratio = r.total_connections / r.max_connections
        evidence = (f"connections: {r.total_connections} of max_connections {r.max_connections} ({ratio:.0%})",
                    f"active: {r.active_connections} (warn at {warn_conn})")
        if ratio >= ratio_warn:
            yield Finding(key=f"postgres:{r.source}:connections", severity=Severity.P1, source=r.source,
                          summary=(f"Postgres {r.source}: connections at {ratio:.0%} of max_connections "
                                   f"({r.total_connections}/{r.max_connections})"),
                          evidence=evidence, playbook="db-pool-exhausted", target=target)
        elif r.active_connections >= warn_conn:
            yield Finding(key=f"postgres:{r.source}:connections", severity=Severity.P2, source=r.source,
                          summary=(f"Postgres {r.source}: {r.active_connections} active connections "
                                   f"(warn at {warn_conn} of {r.max_connections})"),
                          evidence=evidence, playbook="db-pool-exhausted", target=target)
    long = [q for q in r.long_queries if q.duration_s >= long_after]
    if long:
        worst = max(q.duration_s for q in long)
        over_kill = [q for q in long if q.duration_s >= kill_after]
        sev = Severity.P2 if over_kill else Severity.P3
        summary = (f"Postgres {r.source}: {len(over_kill)} quer{'y' if len(over_kill) == 1 else 'ies'} "
                   f"running > {_fmt_duration(kill_after)}" if over_kill else
                   f"Postgres {r.source}: {len(long)} quer{'y' if len(long) == 1 else 'ies'} "
                   f"running > {_fmt_duration(long_after)}")
        yield Finding(
            key=f"postgres:{r.source}:long-queries",
            severity=sev,
            source=r.source,
            summary=summary + f" (longest {_fmt_duration(worst)})",
            evidence=tuple(f"pid {q.pid} {_fmt_duration(q.duration_s)} {q.state}: {q.query}" for q in long[:5]),
            playbook="db-pool-exhausted",
            target=target,
        )


@snapshot_rule
def postgres_unreachable(snapshot: Snapshot, ctx: RuleContext) -> Iterable[Finding]:
    """A Postgres source that cannot be read is worse than a generic degraded source."""
    for name, st in snapshot.sources.items():
        if st.kind == "postgres" and st.state is SourceState.DEGRADED:
            since = st.last_good.isoformat(timespec="seconds") if st.last_good else "never"
            yield Finding(
                key=f"postgres:{name}:unreachable",
                severity=Severity.P0 if st.failures >= 3 else Severity.P1,
                source=name,
                summary=f"Postgres {name} unreachable: {st.reason}",
                evidence=(f"last good reading: {since}", f"consecutive failures: {st.failures}"),
                target=f"postgres:{name}",
            )
