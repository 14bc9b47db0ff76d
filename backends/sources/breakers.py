"""Circuit breakers: the seed's Postgres table, or pybreaker-style Redis keys.

Postgres (seed 003): `circuit_breaker_state(trigger_id, state, failure_count,
last_failure_at)`, every name configurable, optional `opened_at`. One query per poll
returns the breakers worst first (open, then most failures) up to `show` rows, with
the total / open / half-open counts of the whole table computed in the same query.

Redis (PyPI pybreaker 1.4.1's CircuitRedisStorage, read as it writes them): `<ns>:pybreaker:state`,
`<ns>:pybreaker:fail_counter`, `<ns>:pybreaker:opened_at` (integer epoch seconds) for each
configured namespace, and `pybreaker:state`, ... for the namespace "" (pybreaker's keys when
its storage has no namespace), read with one MGET. A namespace without a state key is
UNKNOWN ("no breaker state under <key>", the source DEGRADED), never CLOSED; an open breaker
whose reset timeout has elapsed is half-open (pybreaker's next call is the trial). Reset
writes what pybreaker's CircuitBreaker.close() writes.

Time until half-open = reset timeout (default 60 s, pybreaker's) minus the time since
`opened_at` (Postgres: or the last failure when there is no `opened_at`).

Actions `breaker.reset` (one, only if still open) and `breaker.reset_all` (every open
breaker, typed confirmation of the count), both through the ActionEngine (audited).
Rules: any open -> P2; all of them open -> P1 `all-breakers-open` (seed 003 incident 5).
"""

from __future__ import annotations

import abc
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
from backends.config import quote_ident
from backends.engine.rules import RuleContext, rule
from backends.errors import ActionRefused, BackendError
from backends.model import BreakerReading, BreakersReading, Finding, Severity, utcnow
from backends.sources.postgres import run as pg_run
from backends.sources.redis import call as redis_call

DEFAULT_RESET_TIMEOUT = 60.0
_NS_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_ID_MAX = 256


_STATES: dict[Any, str] = {}


def normalise_state(value: Any) -> str:
    got = _STATES.get(value)
    if got is not None:
        return got
    s = str(value or "").strip().lower().replace("_", "-").replace(" ", "-")
    if s in ("halfopen", "half-open"):
        s = "half-open"
    s = s or "unknown"
    if len(_STATES) < 64:
        _STATES[value] = s
    return s


def _check_id(action: str, trigger_id: Any) -> str:
    if trigger_id is None:
        raise ActionRefused(action, "which breaker? (trigger_id)")
    tid = str(trigger_id).strip()
    if not tid or len(tid) > _ID_MAX or not tid.isprintable():
        raise ActionRefused(action, f"invalid breaker id {str(trigger_id)[:40]!r}")
    return tid


class BreakerSource(abc.ABC):
    """What the monitor polls and the actions act on."""

    name: str
    kind = "breakers"
    interval: float
    timeout: float
    reset_timeout: float
    backend: str

    async def poll(self) -> Sequence[BreakersReading]:
        return [await self.read()]

    @abc.abstractmethod
    async def read(self) -> BreakersReading: ...

    @abc.abstractmethod
    async def get(self, ids: Sequence[str] | None = None, *, only_open: bool = False) -> list[BreakerReading]:
        """The named breakers (or all), current state."""

    @abc.abstractmethod
    async def reset(self, ids: Sequence[str]) -> list[BreakerReading]:
        """Close the given breakers that are still open; return them as they are now."""

    @property
    def target_prefix(self) -> str:
        return f"breakers:{self.name}"


# --------------------------------------------------------------------------- postgres


@dataclass(frozen=True, slots=True)
class BreakerTable:
    table: str = "circuit_breaker_state"
    id_column: str = "trigger_id"
    state_column: str = "state"
    failures_column: str = "failure_count"
    last_failure_column: str | None = "last_failure_at"
    opened_at_column: str | None = None


class PostgresBreakers(BreakerSource):
    backend = "postgres"

    def __init__(self, name: str, dsn: Any, *, table: BreakerTable | None = None,
                 reset_timeout: float = DEFAULT_RESET_TIMEOUT, interval: float = 5.0, timeout: float = 3.0,
                 pool_max: int = 2, show: int = 1000) -> None:
        self.name = name
        self.dsn = dsn
        self.table = table or BreakerTable()
        self.reset_timeout = float(reset_timeout)
        self.interval = interval
        self.timeout = timeout
        self.pool_max = pool_max
        self.show = int(show)
        # Closed / half-open breakers whose row did not change keep their reading object
        # between polls (1,000 breakers: most of them never change).
        self._unchanged: dict[tuple[Any, ...], BreakerReading] = {}
        t = self.table
        try:
            self._t = quote_ident(t.table)
            self._id = quote_ident(t.id_column)
            self._state = quote_ident(t.state_column)
            self._fail = quote_ident(t.failures_column)
            self._last = quote_ident(t.last_failure_column) if t.last_failure_column else None
            self._opened = quote_ident(t.opened_at_column) if t.opened_at_column else None
        except ValueError as exc:
            raise ValueError(f"breakers {name}: {exc}") from None
        for col in (self._id, self._state, self._fail, self._last, self._opened):
            if col and "." in col:
                raise ValueError(f"breakers {name}: column names cannot have a schema: {col}")
        # Times travel as epoch seconds (float8): decoding 1,000 floats is far cheaper than
        # 1,000 datetimes, and datetimes are only built for rows that changed.
        last = f"extract(epoch FROM {self._last})::float8" if self._last else "NULL::float8"
        opened = f"extract(epoch FROM {self._opened})::float8" if self._opened else "NULL::float8"
        # Only identifiers validated and quoted above are spliced in; values are parameters.
        self._cols = (f"{self._id}::text AS id, {self._state}::text AS state, "
                      f"coalesce({self._fail}, 0)::bigint AS failures, {last} AS last_failure, "
                      f"{opened} AS opened_at, extract(epoch FROM now())::float8 AS now")
        self._is_open = f"lower({self._state}::text) = 'open'"
        self._read_sql = (
            f"SELECT {self._cols}, count(*) OVER () AS total, "  # noqa: S608
            f"count(*) FILTER (WHERE {self._is_open}) OVER () AS open, "
            f"count(*) FILTER (WHERE lower(replace({self._state}::text, '_', '-')) IN ('half-open', 'halfopen')) "
            f"OVER () AS half_open "
            f"FROM {self._t} ORDER BY ({self._is_open}) DESC, 3 DESC, 1 LIMIT $1::int"
        )

    async def _run(self, fn: Callable[[Any], Awaitable[Any]], *, retry: bool = True) -> Any:
        return await pg_run(self.dsn, fn, source=self.name, timeout=max(0.05, self.timeout * 0.9),
                            max_size=self.pool_max, retry=retry)

    def _breaker(self, r: Any, at: datetime | None = None) -> BreakerReading:
        """One row (id, state, failures, last epoch, opened epoch, now epoch) -> reading."""
        id_, state, failures, last, opened, now = r[0], normalise_state(r[1]), r[2], r[3], r[4], r[5]
        half = None
        if state == "open":
            base = opened if opened is not None else last
            if base is not None:
                half = max(0.0, self.reset_timeout - (now - base))
        return BreakerReading(
            source=self.name,
            at=at or utcnow(),
            name=id_,
            state=state,
            failures=failures or 0,
            last_failure_at=datetime.fromtimestamp(last, UTC) if last is not None else None,
            opened_at=datetime.fromtimestamp(opened, UTC) if opened is not None else None,
            half_open_in_s=half,
            backend="postgres",
        )

    async def read(self) -> BreakersReading:
        async def q(con: Any) -> Any:
            return await con.fetch(self._read_sql, self.show)

        rows = await self._run(q)
        if not rows:
            return BreakersReading(source=self.name)
        at = utcnow()
        first = rows[0]
        prev = self._unchanged
        keep: dict[tuple[Any, ...], BreakerReading] = {}
        out = []
        for r in rows:
            key = (r[0], r[1], r[2], r[3], r[4])
            b = prev.get(key)
            if b is None:
                b = self._breaker(r, at)
            if b.state != "open":
                keep[key] = b
            out.append(b)
        self._unchanged = keep
        return BreakersReading(
            source=self.name,
            at=at,
            breakers=tuple(out),
            total=int(first["total"]),
            open=int(first["open"]),
            half_open=int(first["half_open"]),
        )

    async def get(self, ids: Sequence[str] | None = None, *, only_open: bool = False) -> list[BreakerReading]:
        where = []
        args: list[Any] = []
        if ids is not None:
            args.append(list(ids))
            where.append(f"{self._id}::text = ANY($1::text[])")
        if only_open:
            where.append(self._is_open)
        sql = f"SELECT {self._cols} FROM {self._t}"  # noqa: S608
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY 1"

        async def q(con: Any) -> Any:
            return await con.fetch(sql, *args)

        rows = await self._run(q)
        return [self._breaker(r) for r in rows]

    async def reset(self, ids: Sequence[str]) -> list[BreakerReading]:
        sql = (f"UPDATE {self._t} SET {self._state} = 'closed', {self._fail} = 0 "  # noqa: S608
               f"WHERE {self._id}::text = ANY($1::text[]) AND {self._is_open} "
               f"RETURNING {self._cols}")

        async def q(con: Any) -> Any:
            return await con.fetch(sql, list(ids))

        rows = await self._run(q, retry=False)  # a write: never sent twice
        return [self._breaker(r) for r in rows]


# --------------------------------------------------------------------------- redis (pybreaker)

# PyPI pybreaker 1.4.1, CircuitRedisStorage: every key is `_namespace(key)` =
# ":".join([namespace, "pybreaker", key]), the namespace left out when it is None or "" (so
# `CircuitRedisStorage(state, redis)` writes `pybreaker:state`, `pybreaker:fail_counter`, ...).
# Values: state "closed" | "open" | "half-open"; fail_counter and success_counter integers (SETNX 0,
# INCR, SET 0); opened_at an integer of epoch seconds (calendar.timegm, set only if greater).
PYBREAKER_BASE = "pybreaker"
PYBREAKER_STATES = ("closed", "open", "half-open")  # STATE_CLOSED, STATE_OPEN, STATE_HALF_OPEN
DEFAULT_NAMESPACE_NAME = "(default)"  # the name of the breaker without a namespace (shown, reset by)
# When a namespace has no state: a bounded SCAN for the namespaces pybreaker did write there (at most
# _SCAN_ROUNDS x _SCAN_COUNT keys looked at, once a minute) to say which one was perhaps meant.
_SCAN_COUNT = 500
_SCAN_ROUNDS = 4
_HINT_TTL = 60.0

# What pybreaker's CircuitBreaker.close() writes, in its order: reset_success_counter()
# (SET success_counter 0), the state (SET state "closed"), then the new CircuitClosedState
# (notify=True) resets the failures (SET fail_counter 0). opened_at stays (pybreaker never
# deletes it). Only while the breaker is still open. KEYS: state, fail_counter, success_counter.
_RESET_LUA = """
if redis.call('GET', KEYS[1]) == 'open' then
  redis.call('SET', KEYS[3], 0)
  redis.call('SET', KEYS[1], 'closed')
  redis.call('SET', KEYS[2], 0)
  return 1
end
return 0
"""


def pybreaker_key(namespace: str, key: str) -> str:
    """The Redis key pybreaker's CircuitRedisStorage(namespace=namespace) uses for `key`."""
    return f"{namespace}:{PYBREAKER_BASE}:{key}" if namespace else f"{PYBREAKER_BASE}:{key}"


def _shown(value: Any) -> str:
    return repr(str(value)[:40])


def _stored_int(value: Any) -> int | None:
    """An integer as pybreaker reads it back (`int(value)` of a non-empty value)."""
    if value is None or value == "":
        return None
    return int(value)


def _listed(keys: Sequence[str], limit: int = 3) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


class RedisBreakers(BreakerSource):
    """pybreaker's CircuitRedisStorage keys, one namespace per breaker ("" = its keys without one).

    A namespace with no `state` key (no CircuitRedisStorage ever wrote it: a typo, another Redis
    database, flushed keys) is not a breaker: it is left out of the reading and the source is
    DEGRADED "no breaker state under <key>" (UNKNOWN in `warroom health`), never CLOSED. So is a
    value pybreaker could not read itself (a state other than closed / open / half-open, a counter
    or opened_at that is not an integer).

    A breaker stored "open" whose `reset_timeout` has elapsed since `opened_at` (or that has no
    `opened_at`) is half-open: pybreaker lets its next call through as the trial, and writes
    "half-open" only when that call starts. `reset_timeout` must be the app's CircuitBreaker's.
    """

    backend = "redis"

    def __init__(self, name: str, url: Any, namespaces: Sequence[str], *,
                 reset_timeout: float = DEFAULT_RESET_TIMEOUT, interval: float = 5.0,
                 timeout: float = 2.0) -> None:
        if not namespaces:
            raise ValueError(f'breakers {name}: redis breakers need namespaces ("" for pybreaker\'s '
                             f"keys without a namespace: pybreaker:state, ...)")
        seen: list[str] = []
        for ns in namespaces:
            if not isinstance(ns, str) or (ns and not _NS_RE.match(ns)):
                raise ValueError(f"breakers {name}: invalid namespace {ns!r} (letters, digits, _ . : -; "
                                 f'"" for pybreaker\'s keys without a namespace)')
            if ns not in seen:
                seen.append(ns)
        self.name = name
        self.url = url
        self.namespaces = tuple(seen)
        self._ns_of = {self.breaker_name(ns): ns for ns in self.namespaces}
        self.reset_timeout = float(reset_timeout)
        self.interval = interval
        self.timeout = timeout
        self._problem = ""
        self._hint: tuple[float, list[str]] | None = None  # (monotonic time, namespaces found)

    @staticmethod
    def breaker_name(ns: str) -> str:
        """A breaker is named by its namespace; the one without a namespace is "(default)"."""
        return ns or DEFAULT_NAMESPACE_NAME

    @staticmethod
    def keys(ns: str) -> tuple[str, str, str]:
        """(state, fail_counter, opened_at) keys of namespace `ns`, as pybreaker names them."""
        return (pybreaker_key(ns, "state"), pybreaker_key(ns, "fail_counter"), pybreaker_key(ns, "opened_at"))

    async def _fetch(self, namespaces: Sequence[str]) -> tuple[list[BreakerReading], str]:
        """Every namespace's breaker (state "unknown" when it cannot be read) and what is wrong."""
        keys: list[str] = []
        for ns in namespaces:
            keys.extend(self.keys(ns))

        async def q(client: Any) -> Any:
            pipe = client.pipeline(transaction=False)
            pipe.mget(keys)
            pipe.time()
            return await pipe.execute()

        values, (sec, usec) = await redis_call(self.url, q, source=self.name,
                                               timeout=max(0.05, self.timeout * 0.9))
        now_s = int(sec) + int(usec) / 1e6
        at = datetime.fromtimestamp(now_s, UTC)
        out: list[BreakerReading] = []
        missing: list[str] = []
        bad: list[str] = []
        for i, ns in enumerate(namespaces):
            state_v, fails_v, opened_v = values[3 * i: 3 * i + 3]
            state_k, fails_k, opened_k = keys[3 * i: 3 * i + 3]
            if state_v is None:
                missing.append(state_k)
                state = "unknown"
            elif state_v in PYBREAKER_STATES:
                state = str(state_v)
            else:
                bad.append(f"state {_shown(state_v)} under {state_k} (pybreaker writes closed, open or half-open)")
                state = "unknown"
            try:
                fails = _stored_int(fails_v) or 0
            except ValueError:
                bad.append(f"fail_counter {_shown(fails_v)} under {fails_k} is not an integer")
                fails = 0
            try:
                opened_epoch = _stored_int(opened_v)
            except ValueError:
                bad.append(f"opened_at {_shown(opened_v)} under {opened_k} is not an integer of epoch seconds")
                opened_epoch = None
            opened = None
            if opened_epoch is not None:
                try:
                    opened = datetime.fromtimestamp(opened_epoch, UTC)
                except (OverflowError, OSError, ValueError):
                    bad.append(f"opened_at {_shown(opened_v)} under {opened_k} is not a time")
            half_in = None
            if state == "open":
                # CircuitOpenState.before_call: still open while now < opened_at + reset_timeout,
                # else (or without opened_at) the next call is the half-open trial
                left = 0.0
                if opened is not None and opened_epoch is not None:
                    left = self.reset_timeout - (now_s - opened_epoch)
                if left > 0:
                    half_in = left
                else:
                    state = "half-open"
            out.append(BreakerReading(
                source=self.name,
                at=at,
                name=self.breaker_name(ns),
                state=state,
                failures=fails,
                opened_at=opened,
                half_open_in_s=half_in,
                backend="redis",
            ))
        problems = []
        if missing:
            problems.append(f"no breaker state under {_listed(missing)}: no pybreaker CircuitRedisStorage has "
                            f'written there (check [breakers] redis_namespaces; "" is pybreaker\'s keys '
                            f"without a namespace)")
        problems.extend(bad[:3])
        if len(bad) > 3:
            problems.append(f"... and {len(bad) - 3} more unreadable value(s)")
        return out, "; ".join(problems)

    async def _written_namespaces(self, within: float) -> list[str]:
        """Namespaces (not configured) where some pybreaker wrote its state in this Redis: a bounded
        SCAN for `*pybreaker:state`, its answer kept a minute. [] when it cannot say in time."""
        now = time.monotonic()
        if self._hint is not None and now - self._hint[0] < _HINT_TTL:
            return self._hint[1]
        if within < 0.05:
            return []

        async def q(client: Any) -> set[str]:
            found: set[str] = set()
            cursor = 0
            for _ in range(_SCAN_ROUNDS):
                cursor, keys = await client.scan(cursor, match=f"*{PYBREAKER_BASE}:state", count=_SCAN_COUNT)
                found.update(str(k) for k in keys)
                if not cursor:
                    break
            return found

        try:
            keys = await redis_call(self.url, q, source=self.name, timeout=within)
        except BackendError:
            return []
        tail = f":{PYBREAKER_BASE}:state"
        written = {"" if k == tail[1:] else k[: -len(tail)] for k in keys if k == tail[1:] or k.endswith(tail)}
        names = sorted(written - set(self.namespaces))
        self._hint = (now, names)
        return names

    async def read(self) -> BreakersReading:
        t0 = time.monotonic()
        items, problem = await self._fetch(self.namespaces)
        if problem.startswith("no breaker state under"):
            others = await self._written_namespaces(self.timeout * 0.9 - (time.monotonic() - t0))
            if others:
                shown = ", ".join(ns or '"" (no namespace)' for ns in others[:5])
                more = f" and {len(others) - 5} more" if len(others) > 5 else ""
                problem += f"; pybreaker state found under namespace(s) {shown}{more}"
        self._problem = problem
        known = [b for b in items if b.state != "unknown"]
        known.sort(key=lambda b: (b.state != "open", -b.failures, b.name))
        return BreakersReading(
            source=self.name,
            at=known[0].at if known else utcnow(),
            breakers=tuple(known),
            total=len(known),
            open=sum(1 for b in known if b.state == "open"),
            half_open=sum(1 for b in known if b.state == "half-open"),
        )

    def answer_problem(self, readings: Sequence[Any] = ()) -> str:
        """What the last read found wrong ("" when every namespace holds a breaker pybreaker can read):
        the monitor keeps the reading and marks the source DEGRADED with it."""
        return self._problem

    async def get(self, ids: Sequence[str] | None = None, *, only_open: bool = False) -> list[BreakerReading]:
        wanted = [ns for name, ns in self._ns_of.items() if ids is None or name in set(ids)]
        items = (await self._fetch(wanted))[0] if wanted else []
        return [b for b in items if not only_open or b.state == "open"]

    async def reset(self, ids: Sequence[str]) -> list[BreakerReading]:
        namespaces = [self._ns_of[i] for i in ids if i in self._ns_of]

        async def q(client: Any) -> list[str]:
            script = client.register_script(_RESET_LUA)
            done = []
            for ns in namespaces:
                keys = [pybreaker_key(ns, "state"), pybreaker_key(ns, "fail_counter"),
                        pybreaker_key(ns, "success_counter")]
                if await script(keys=keys):
                    done.append(ns)
            return done

        done = await redis_call(self.url, q, source=self.name, timeout=max(self.timeout, 5.0), retry=False)
        return (await self._fetch(done))[0] if done else []


# --------------------------------------------------------------------------- actions


def _row(b: BreakerReading) -> dict[str, Any]:
    return {
        "id": b.name,
        "state": b.state,
        "failures": b.failures,
        "last_failure_at": b.last_failure_at.isoformat() if b.last_failure_at else None,
        "opened_at": b.opened_at.isoformat() if b.opened_at else None,
    }


def _after(b: BreakerReading) -> dict[str, Any]:
    return {"id": b.name, "state": "closed", "failures": 0}


class ResetBreaker(Action):
    id = "breaker.reset"
    title = "Reset circuit breaker"
    danger = Danger.CONFIRM
    description = "Close one open breaker and zero its failure count (only if it is still open)."

    def __init__(self, source: BreakerSource) -> None:
        self.source = source

    def step_facts(self) -> dict[str, str]:
        """What a playbook step says of this action: the half-open delay of the breakers."""
        return {"reset_timeout": f"{self.source.reset_timeout:g} s"}

    async def plan(self, *, trigger_id: Any = None, name: Any = None, reason: str | None = None,
                   **_: Any) -> ActionPlan:
        tid = _check_id(self.id, trigger_id if trigger_id is not None else name)
        found = await self.source.get([tid])
        if not found:
            raise ActionRefused(self.id, f"no breaker {tid!r} in {self.source.name}")
        b = found[0]
        change = Change(target=f"breaker {tid}",
                        description=f"{tid}: {b.state}, {b.failures} failure(s) -> closed, 0 failures",
                        before=_row(b), after=_after(b))
        return ActionPlan(
            action=self.id,
            title=f"Reset breaker {tid}",
            target=f"{self.source.target_prefix}:{tid}",
            changes=(change,),
            guard=Guard(b.state == "open", f"breaker {tid} is open", f"it is {b.state}"),
            danger=self.danger,
            params={"source": self.source.name, "trigger_id": tid},
            reason=reason,
            preview=change.description,
            lock_key=f"{self.source.target_prefix}:{tid}",
            total=1,
        )

    async def check_guard(self, plan: ActionPlan) -> Guard:
        tid = plan.params["trigger_id"]
        now = await self.source.get([tid])
        state = now[0].state if now else "missing"
        return Guard(state == "open", f"breaker {tid} is open", f"it is {state}")

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        tid = plan.params["trigger_id"]
        done = await self.source.reset([tid])
        progress(Progress(1, 1, f"{tid}: {'closed' if done else 'no longer open'}"))
        if not done:
            return ActionResult(status="skipped", summary=f"breaker {tid} was no longer open", counts={"reset": 0})
        return ActionResult(status="ok", summary=f"breaker {tid} closed", after=[_row(b) for b in done],
                            counts={"reset": len(done)})


class ResetAllBreakers(Action):
    id = "breaker.reset_all"
    title = "Reset all open circuit breakers"
    danger = Danger.TYPED
    description = "Close every open breaker (type the count to confirm)."

    def __init__(self, source: BreakerSource) -> None:
        self.source = source

    def step_facts(self) -> dict[str, str]:
        """What a playbook step says of this action: the half-open delay of the breakers."""
        return {"reset_timeout": f"{self.source.reset_timeout:g} s"}

    async def plan(self, *, reason: str | None = None, **_: Any) -> ActionPlan:
        open_ = await self.source.get(only_open=True)
        changes = tuple(
            Change(target=f"breaker {b.name}",
                   description=f"{b.name}: open, {b.failures} failure(s) -> closed, 0 failures",
                   before=_row(b), after=_after(b))
            for b in open_
        )
        n = len(open_)
        return ActionPlan(
            action=self.id,
            title=f"Reset {n} open breaker(s) of {self.source.name}",
            target=f"{self.source.target_prefix}:all-open",
            changes=changes,
            guard=Guard(n > 0, f"{n} breaker(s) open"),
            danger=self.danger,
            params={"source": self.source.name, "ids": [b.name for b in open_]},
            reason=reason,
            confirm_text=str(n),
            preview="\n".join(c.description for c in changes) or "no open breaker",
            lock_key=f"{self.source.target_prefix}:all",
            total=n,
        )

    async def check_guard(self, plan: ActionPlan) -> Guard:
        still = await self.source.get(plan.params["ids"], only_open=True)
        return Guard(bool(still), f"{len(still)} of {len(plan.params['ids'])} planned breaker(s) still open")

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        ids = list(plan.params["ids"])
        done = await self.source.reset(ids)
        progress(Progress(len(ids), len(ids), f"closed {len(done)} of {len(ids)}"))
        skipped = sorted(set(ids) - {b.name for b in done})
        return ActionResult(
            status="ok" if done else "skipped",
            summary=f"closed {len(done)} breaker(s)" + (f", {len(skipped)} no longer open" if skipped else ""),
            after=[_row(b) for b in done],
            counts={"reset": len(done), "skipped": len(skipped)},
            details=tuple(f"{s}: no longer open" for s in skipped),
        )


def actions_for(source: BreakerSource) -> list[Action]:
    return [ResetBreaker(source), ResetAllBreakers(source)]


# --------------------------------------------------------------------------- rules


def _ago(dt: datetime | None, now: datetime) -> str:
    if dt is None:
        return "-"
    s = int(max(0.0, (now - dt).total_seconds()))
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


@rule(BreakersReading)
def breaker_rules(r: BreakersReading, ctx: RuleContext) -> Iterable[Finding]:
    if not r.open:
        return
    open_ = [b for b in r.breakers if b.state == "open"]
    evidence = tuple(
        f"{b.name}: {b.failures} failure(s), last failure {_ago(b.last_failure_at, r.at)}"
        + (f", half-open in {b.half_open_in_s:.0f}s" if b.half_open_in_s is not None else "")
        for b in open_[:5]
    ) + ((f"... and {r.open - 5} more",) if r.open > 5 else ())
    target = f"breakers:{r.source}"
    if r.total >= 1 and r.open >= r.total:
        yield Finding(
            key=f"breakers:{r.source}:all-open",
            severity=Severity.P1,
            source=r.source,
            summary=f"All {r.total} circuit breaker(s) open: no actions are executed",
            evidence=evidence,
            playbook="all-breakers-open",
            target=target,
        )
        return
    names = ", ".join(b.name for b in open_[:3]) + ("…" if r.open > 3 else "")
    yield Finding(
        key=f"breakers:{r.source}:open",
        severity=Severity.P2,
        source=r.source,
        summary=f"{r.open} of {r.total} circuit breaker(s) open: {names}",
        evidence=evidence,
        playbook="all-breakers-open",
        target=target,
    )
