"""Circuit breakers: the seed's Postgres table, or pybreaker-style Redis keys.

Postgres (seed 003): `circuit_breaker_state(trigger_id, state, failure_count,
last_failure_at)`, every name configurable, optional `opened_at`. One query per poll
returns the breakers worst first (open, then most failures) up to `show` rows, with
the total / open / half-open counts of the whole table computed in the same query.

Redis (pybreaker's CircuitRedisStorage): `<ns>:pybreaker:state`, `<ns>:pybreaker:fail_counter`,
`<ns>:pybreaker:opened_at` for each configured namespace, read with one MGET.

Time until half-open = reset timeout (default 60 s, pybreaker's) minus the time since
`opened_at` (or the last failure when there is no `opened_at`).

Actions `breaker.reset` (one, only if still open) and `breaker.reset_all` (every open
breaker, typed confirmation of the count), both through the ActionEngine (audited).
Rules: any open -> P2; all of them open -> P1 `all-breakers-open` (seed 003 incident 5).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .actions import Action, ActionPlan, ActionResult, Change, Danger, Guard, Progress, ProgressFn
from .errors import ActionRefused
from .model import BreakerReading, BreakersReading, Finding, Severity, utcnow
from .postgres import quote_ident
from .postgres import run as pg_run
from .redis import call as redis_call
from .redis import parse_timestamp
from .rules import RuleContext, rule

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


def _half_open_in(state: str, opened: datetime | None, now: datetime, reset_timeout: float) -> float | None:
    if state != "open" or opened is None:
        return None
    return max(0.0, reset_timeout - (now - opened).total_seconds())


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
        self._unchanged: dict[tuple, BreakerReading] = {}
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

    async def _run(self, fn, *, retry: bool = True):
        return await pg_run(self.dsn, fn, source=self.name, timeout=max(0.05, self.timeout * 0.9),
                            max_size=self.pool_max, retry=retry)

    def _breaker(self, r, at: datetime | None = None) -> BreakerReading:
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
        async def q(con):
            return await con.fetch(self._read_sql, self.show)

        rows = await self._run(q)
        if not rows:
            return BreakersReading(source=self.name)
        at = utcnow()
        first = rows[0]
        prev = self._unchanged
        keep: dict[tuple, BreakerReading] = {}
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

        async def q(con):
            return await con.fetch(sql, *args)

        rows = await self._run(q)
        return [self._breaker(r) for r in rows]

    async def reset(self, ids: Sequence[str]) -> list[BreakerReading]:
        sql = (f"UPDATE {self._t} SET {self._state} = 'closed', {self._fail} = 0 "  # noqa: S608
               f"WHERE {self._id}::text = ANY($1::text[]) AND {self._is_open} "
               f"RETURNING {self._cols}")

        async def q(con):
            return await con.fetch(sql, list(ids))

        rows = await self._run(q, retry=False)  # a write: never sent twice
        return [self._breaker(r) for r in rows]


# --------------------------------------------------------------------------- redis

_RESET_LUA = """
if redis.call('GET', KEYS[1]) == 'open' then
  redis.call('SET', KEYS[1], 'closed')
  redis.call('SET', KEYS[2], 0)
  return 1
end
return 0
"""


class RedisBreakers(BreakerSource):
    """pybreaker's CircuitRedisStorage keys, one namespace per breaker."""

    backend = "redis"

    def __init__(self, name: str, url: Any, namespaces: Sequence[str], *,
                 reset_timeout: float = DEFAULT_RESET_TIMEOUT, interval: float = 5.0,
                 timeout: float = 2.0) -> None:
        if not namespaces:
            raise ValueError(f"breakers {name}: redis breakers need namespaces")
        for ns in namespaces:
            if not _NS_RE.match(ns):
                raise ValueError(f"breakers {name}: invalid namespace {ns!r}")
        self.name = name
        self.url = url
        self.namespaces = tuple(namespaces)
        self.reset_timeout = float(reset_timeout)
        self.interval = interval
        self.timeout = timeout

    @staticmethod
    def keys(ns: str) -> tuple[str, str, str]:
        return (f"{ns}:pybreaker:state", f"{ns}:pybreaker:fail_counter", f"{ns}:pybreaker:opened_at")

    async def _mget(self, namespaces: Sequence[str]) -> list[BreakerReading]:
        keys: list[str] = []
        for ns in namespaces:
            keys.extend(self.keys(ns))

        async def q(client):
            pipe = client.pipeline(transaction=False)
            pipe.mget(keys)
            pipe.time()
            return await pipe.execute()

        values, (sec, usec) = await redis_call(self.url, q, source=self.name,
                                               timeout=max(0.05, self.timeout * 0.9))
        now = datetime.fromtimestamp(int(sec) + int(usec) / 1e6, UTC)
        out = []
        for i, ns in enumerate(namespaces):
            state_v, fails_v, opened_v = values[3 * i: 3 * i + 3]
            state = normalise_state(state_v) if state_v is not None else "closed"
            opened = parse_timestamp(opened_v) if opened_v is not None else None
            try:
                fails = int(fails_v or 0)
            except ValueError:
                fails = 0
            out.append(BreakerReading(
                source=self.name,
                name=ns,
                state=state,
                failures=fails,
                opened_at=opened,
                half_open_in_s=_half_open_in(state, opened, now, self.reset_timeout),
                backend="redis",
            ))
        return out

    async def read(self) -> BreakersReading:
        items = await self._mget(self.namespaces)
        items.sort(key=lambda b: (b.state != "open", -b.failures, b.name))
        return BreakersReading(
            source=self.name,
            breakers=tuple(items),
            total=len(items),
            open=sum(1 for b in items if b.state == "open"),
            half_open=sum(1 for b in items if b.state == "half-open"),
        )

    async def get(self, ids: Sequence[str] | None = None, *, only_open: bool = False) -> list[BreakerReading]:
        wanted = [ns for ns in self.namespaces if ids is None or ns in set(ids)]
        items = await self._mget(wanted) if wanted else []
        return [b for b in items if not only_open or b.state == "open"]

    async def reset(self, ids: Sequence[str]) -> list[BreakerReading]:
        ids = [i for i in ids if i in self.namespaces]

        async def q(client):
            script = client.register_script(_RESET_LUA)
            done = []
            for ns in ids:
                state_key, fail_key, _ = self.keys(ns)
                if await script(keys=[state_key, fail_key]):
                    done.append(ns)
            return done

        done = await redis_call(self.url, q, source=self.name, timeout=max(self.timeout, 5.0), retry=False)
        return await self._mget(done) if done else []


# --------------------------------------------------------------------------- actions


def _row(b: BreakerReading) -> dict:
    return {
        "id": b.name,
        "state": b.state,
        "failures": b.failures,
        "last_failure_at": b.last_failure_at.isoformat() if b.last_failure_at else None,
        "opened_at": b.opened_at.isoformat() if b.opened_at else None,
    }


def _after(b: BreakerReading) -> dict:
    return {"id": b.name, "state": "closed", "failures": 0}


class ResetBreaker(Action):
    id = "breaker.reset"
    title = "Reset circuit breaker"
    danger = Danger.CONFIRM
    description = "Close one open breaker and zero its failure count (only if it is still open)."

    def __init__(self, source: BreakerSource) -> None:
        self.source = source

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
