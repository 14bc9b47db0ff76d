"""Redis health and job queues (redis.asyncio, imported lazily).

`RedisSource` -> `RedisReading`: PING latency, used memory against the seed's 500 MB,
clients, version. `QueueSource` -> one `QueueReading` per configured queue, all read
in ONE pipelined round trip per poll:

- lists: LLEN, and LINDEX of the oldest end for the age of the oldest job (the job's
  JSON carries its enqueue time in `timestamp_field`). Default: producers LPUSH and
  consumers RPOP, so the oldest job is at index -1 (`oldest_end = "right"`).
- streams: XLEN, pending entries summed over XINFO GROUPS, and the age of the entry
  waited on longest (the oldest pending or undelivered one, found by a small Lua
  script in the same pipeline; its id is a millisecond timestamp).
- sorted sets (delayed jobs): ZCARD, and how overdue the earliest score is when
  scores are epoch timestamps.
- framework presets (`type` = rq | bullmq | sidekiq | celery, `key` = the queue's own
  name): the keys each framework's producer writes (see `PresetKeys`), their depth, the
  enqueue time of the job next in line (rq/bullmq: looked up in the job hash by a small Lua
  script in the same pipeline; Sidekiq: the job JSON's `enqueued_at`; Celery: none unless
  `timestamp_field` names one in the message), failed / dead / delayed / active counts.

`max_age` (seconds) turns an oldest job older than it into a P2 finding.

A bounded history per queue gives the sparkline, the drain rate (jobs/s, positive =
draining) and the time to drain. Thresholds default to the seed's 1,000 / 10,000 /
50,000 (warn, high, critical = QUEUE_CRITICAL_DEPTH).

Action `queue.requeue_dead` moves a dead-letter list back into its queue, one LMOVE
per job (each atomic), at most the previewed count, idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from redis.asyncio import Redis

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
from backends.engine.rules import RuleContext, register, rule, snapshot_rule
from backends.errors import ActionRefused, BackendError, describe_exception, redact, register_secret
from backends.model import (
    Finding,
    QueueReading,
    RedisReading,
    Severity,
    Snapshot,
    SourceState,
    Status,
)
from backends.units import display_url, format_age, reveal

DEFAULT_THRESHOLDS = (1_000, 10_000, 50_000)
DEFAULT_MAX_MEMORY = 500 * 1024 * 1024  # seed 003: used memory < 500 MB

_KEY_RE = re.compile(r"^[\x21-\x7e]{1,512}$")  # printable, no spaces


def _register_url_secret(url: str) -> None:
    try:
        parts = urlsplit(url)
        if parts.password:
            register_secret(parts.password)
            register_secret(unquote(parts.password))
    except ValueError:
        pass


def _where(url: str) -> str:
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return parts.path
        return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"
    except ValueError:
        return "redis"


def describe_redis_error(exc: BaseException, url: str = "") -> str:
    where = _where(url) if url else "redis"
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    low = text.lower()
    if isinstance(exc, TimeoutError | asyncio.TimeoutError) or name == "TimeoutError":
        return f"no answer from {where} (timed out)"
    if name == "AuthenticationError" or "noauth" in low or "wrongpass" in low or "invalid password" in low \
            or "invalid username-password" in low:
        return redact(f"authentication failed at {where}: {text}" if text else f"authentication failed at {where}")
    if "refused" in low or "error 111 " in low or "connect call failed" in low \
            or isinstance(exc, ConnectionRefusedError):
        return f"connection refused at {where}"
    if "closed by server" in low or "connection reset" in low or isinstance(exc, ConnectionResetError):
        return f"connection to {where} was closed"
    if name == "ConnectionError" and text:
        return redact(f"cannot connect to {where}: {text}")
    return describe_exception(exc)


# --------------------------------------------------------------------------- clients


@dataclass
class _ClientEntry:
    client: Redis
    loop: weakref.ref[asyncio.AbstractEventLoop]


_CLIENTS: dict[tuple[str, float, bool], _ClientEntry] = {}  # (url, timeout, retry) -> its client

T = TypeVar("T")


def get_client(url: Any, *, timeout: float = 2.0, retry: bool = True) -> Redis:
    """The shared redis.asyncio client for `url` on the running loop (lazy, reused).

    The client keeps a small connection pool and reconnects by itself; a command that
    fails on a dead connection is retried once on a new one.
    """
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    plain = reveal(url)
    _register_url_secret(plain)
    loop = asyncio.get_running_loop()
    key = (plain, timeout, retry)
    entry = _CLIENTS.get(key)
    if entry is not None and entry.loop() is loop:
        return entry.client
    client = aioredis.from_url(
        plain,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        encoding_errors="replace",
        retry=Retry(NoBackoff(), 1 if retry else 0),
        max_connections=8,
        client_name="warroom",
    )
    _CLIENTS[key] = _ClientEntry(client, weakref.ref(loop))
    return client


async def close_clients() -> None:
    loop = asyncio.get_running_loop()
    for key, entry in list(_CLIENTS.items()):
        if entry.loop() is loop or entry.loop() is None:
            _CLIENTS.pop(key, None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(entry.client.aclose(), 2.0)


async def call(url: Any, fn: Callable[[Redis], Awaitable[T]], *, source: str,
               timeout: float = 2.0, retry: bool = True) -> T:  # noqa: ASYNC109
    """`await fn(client)` within `timeout`; every failure becomes BackendError(source, reason).
    `retry=False` for writes: a command is never sent twice after a dropped connection."""
    plain = reveal(url)
    try:
        async with asyncio.timeout(timeout):
            return await fn(get_client(plain, timeout=timeout, retry=retry))
    except BackendError:
        raise
    except TimeoutError:
        raise BackendError(source, f"no answer from {_where(plain)} within {timeout:g}s") from None
    except Exception as exc:
        raise BackendError(source, describe_redis_error(exc, plain)) from None


# --------------------------------------------------------------------------- redis source



class RedisSource:
    """PING, memory and clients of one configured Redis (`[redis.NAME]`)."""

    kind = "redis"

    def __init__(self, name: str, url: Any, *, interval: float = 2.0, timeout: float = 2.0,
                 max_memory: int = DEFAULT_MAX_MEMORY) -> None:
        self.name = name
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self.max_memory = int(max_memory)
        _register_url_secret(reveal(url))
        register("redis")[name] = self

    @property
    def display(self) -> str:
        return display_url(self.url)

    async def poll(self) -> Sequence[RedisReading]:
        async def read(client: Redis) -> tuple[float, dict[str, Any]]:
            t0 = time.perf_counter()
            await client.ping()
            latency = (time.perf_counter() - t0) * 1000.0
            info = await client.info()
            return latency, info

        latency, info = await call(self.url, read, source=self.name, timeout=max(0.05, self.timeout * 0.9))
        server_max = int(info.get("maxmemory") or 0)
        limit = min(self.max_memory, server_max) if server_max else self.max_memory
        return [
            RedisReading(
                source=self.name,
                reachable=True,
                latency_ms=latency,
                used_memory_bytes=int(info.get("used_memory") or 0),
                max_memory_bytes=limit,
                connected_clients=_int_or_none(info.get("connected_clients")),
                version=str(info.get("redis_version") or ""),
            )
        ]


def _int_or_none(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- queues


PRESETS = ("rq", "bullmq", "sidekiq", "celery")
QUEUE_TYPES = ("list", "stream", "zset", *PRESETS)
CELERY_PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's Redis transport: PRIORITY_STEPS
KOMBU_SEP = "\x06\x16"  # kombu's Redis transport: Channel.sep (queue + sep + priority step)
_PREFIXED = ("bullmq", "celery")  # presets whose producers take a key prefix


@dataclass(frozen=True, slots=True)
class PresetKeys:
    """Where a framework keeps one queue's jobs (read from its producer's code):

    - rq 2.x: `rq:queue:<name>` list of job ids (RPUSH; workers LPOP/LMOVE from the left),
      `rq:job:<id>` hashes with `enqueued_at` (ISO 8601, UTC), `rq:failed:<name>`,
      `rq:scheduled:<name>`, `rq:wip:<name>` sorted sets (registries).
    - BullMQ: `<prefix>:<name>:wait` list of ids (LPUSH; workers RPOPLPUSH from the right),
      the legacy `:paused` list, `:prioritized`, `:delayed`, `:failed` sorted sets, `:active`
      list, `:meta` hash (`paused`), `<prefix>:<name>:<id>` hashes with `timestamp` (ms).
    - Sidekiq 6/7: `queue:<name>` list of JSON jobs (LPUSH; workers BRPOP from the right)
      with `enqueued_at` (epoch s; ms from Sidekiq 8), and the Sidekiq-wide sorted sets
      `retry`, `dead`, `schedule`.
    - Celery (kombu's Redis transport): `<prefix><name>` list of JSON messages (LPUSH; BRPOP
      from the right) plus `<name>\\x06\\x16<step>` for each non-zero priority step; no
      enqueue time unless the producer adds one (`timestamp_field`, e.g. "headers.sent_at").
    """

    lists: tuple[str, ...]  # depth = sum of LLEN (+ ZCARD of `zsets`)
    zsets: tuple[str, ...] = ()  # waiting jobs in sorted sets (bullmq :prioritized)
    oldest_end: str = "right"
    job_prefix: str | None = None  # ids in the lists -> hashes `job_prefix + id`
    job_field: str | None = None  # the hash field with the enqueue time
    failed: str | None = None  # ZCARD
    delayed: str | None = None  # ZCARD
    active: str | None = None
    active_is_list: bool = False
    dead: str | None = None  # ZCARD
    meta: str | None = None  # bullmq meta hash (paused)


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """One configured queue (`[[queues]]`). For a framework preset (`type` = rq, bullmq,
    sidekiq, celery) `key` is the queue's own name (`default`, `mail`) and `prefix` the
    framework's key prefix where it has one (BullMQ `prefix`, default "bull"; kombu's
    `global_keyprefix`)."""

    name: str
    key: str
    type: str = "list"  # list | stream | zset | rq | bullmq | sidekiq | celery
    thresholds: tuple[int, int, int] = DEFAULT_THRESHOLDS
    timestamp_field: str | None = None  # JSON field (dotted path) with the enqueue time
    oldest_end: str = "right"  # right: consumers RPOP (oldest at -1); left: consumers LPOP
    dead_letter: str | None = None
    prefix: str | None = None
    max_age: float | None = None  # seconds: a finding when the oldest job is older
    priority_steps: tuple[int, ...] = CELERY_PRIORITY_STEPS  # celery (kombu priority_steps)

    def __post_init__(self) -> None:
        if self.type not in QUEUE_TYPES:
            raise ValueError(f"queue {self.name}: type must be one of {', '.join(QUEUE_TYPES)}, not {self.type!r}")
        if self.oldest_end not in ("left", "right"):
            raise ValueError(f"queue {self.name}: oldest_end must be left or right")
        if self.prefix is not None and self.type not in _PREFIXED:
            raise ValueError(f"queue {self.name}: prefix applies to bullmq and celery only, not {self.type}")
        if self.type in PRESETS:
            if self.dead_letter is not None:
                raise ValueError(f"queue {self.name}: dead_letter does not apply to {self.type} "
                                 f"(warroom reads the framework's own failed/dead sets)")
            if self.timestamp_field is not None and self.type != "celery":
                raise ValueError(f"queue {self.name}: timestamp_field does not apply to {self.type} "
                                 f"(warroom reads the framework's own enqueue time)")
            if not self.key or not _KEY_RE.match(self.key):
                raise ValueError(f"queue {self.name}: invalid {self.type} queue name {self.key!r}")
            steps = tuple(int(x) for x in self.priority_steps)
            if not steps or any(x < 0 or x > 255 for x in steps) or len(set(steps)) != len(steps):
                raise ValueError(f"queue {self.name}: priority_steps must be distinct numbers 0..255")
            object.__setattr__(self, "priority_steps", steps)
        keys = [self.key, self.dead_letter] if self.type not in PRESETS else list(self.preset_keys().lists[:1])
        for k in keys:
            if k is not None and not _KEY_RE.match(k):
                raise ValueError(f"queue {self.name}: invalid Redis key {k!r}")
        if self.prefix is not None and (not self.prefix or not _KEY_RE.match(self.prefix)):
            raise ValueError(f"queue {self.name}: invalid prefix {self.prefix!r}")
        t = tuple(int(x) for x in self.thresholds)
        if len(t) != 3 or not (0 < t[0] <= t[1] <= t[2]):
            raise ValueError(f"queue {self.name}: thresholds must be three ascending numbers (warn, high, critical)")
        object.__setattr__(self, "thresholds", t)
        if self.dead_letter and self.dead_letter == self.key:
            raise ValueError(f"queue {self.name}: dead_letter must differ from key")
        if self.max_age is not None and not (math.isfinite(self.max_age) and self.max_age > 0):
            raise ValueError(f"queue {self.name}: max_age must be a positive number of seconds")

    @property
    def producer_end(self) -> str:
        return "LEFT" if self.oldest_end == "right" else "RIGHT"

    @property
    def main_key(self) -> str:
        """The Redis key holding the waiting jobs (a preset's derived key, else `key`)."""
        return self.preset_keys().lists[0] if self.type in PRESETS else self.key

    def preset_keys(self) -> PresetKeys:
        n = self.key
        if self.type == "rq":
            return PresetKeys(lists=(f"rq:queue:{n}",), oldest_end="left", job_prefix="rq:job:",
                              job_field="enqueued_at", failed=f"rq:failed:{n}", delayed=f"rq:scheduled:{n}",
                              active=f"rq:wip:{n}")
        if self.type == "bullmq":
            base = f"{self.prefix or 'bull'}:{n}"
            return PresetKeys(lists=(f"{base}:wait", f"{base}:paused"), zsets=(f"{base}:prioritized",),
                              job_prefix=f"{base}:", job_field="timestamp", failed=f"{base}:failed",
                              delayed=f"{base}:delayed", active=f"{base}:active", active_is_list=True,
                              meta=f"{base}:meta")
        if self.type == "sidekiq":
            return PresetKeys(lists=(f"queue:{n}",), failed="retry", delayed="schedule", dead="dead")
        if self.type == "celery":
            base = f"{self.prefix or ''}{n}"
            return PresetKeys(lists=tuple(base if step == 0 else f"{base}{KOMBU_SEP}{step}"
                                          for step in self.priority_steps))
        raise ValueError(f"queue {self.name}: {self.type} is not a framework preset")


def status_for_depth(depth: int, thresholds: tuple[int, int, int]) -> Status:
    warn, high, _crit = thresholds
    if depth >= high:
        return Status.CRIT
    if depth >= warn:
        return Status.WARN
    return Status.OK


def parse_timestamp(value: Any) -> datetime | None:
    """An enqueue time from a job: epoch seconds / milliseconds, or ISO 8601."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        s = value.strip()
        try:
            value = float(s)
        except ValueError:
            try:
                dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
            except ValueError:
                return None
            return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        if value > 1e17:  # nanoseconds
            value /= 1e9
        elif value > 1e14:  # microseconds
            value /= 1e6
        elif value > 1e11:  # milliseconds
            value /= 1e3
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _dig(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        else:
            return None
    return obj


def job_age(payload: Any, field_path: str | None, now: float | None = None) -> float | None:
    if payload is None or not field_path:
        return None
    try:
        data = json.loads(payload)
    except (TypeError, ValueError):
        return None
    ts = parse_timestamp(_dig(data, field_path))
    if ts is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, now - ts.timestamp())


@dataclass
class _History:
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=120))  # (monotonic, depth)

    def add(self, t: float, depth: int) -> None:
        self.samples.append((t, depth))

    def rate(self, window: float) -> float | None:
        """Jobs per second drained over the last `window` seconds (positive = draining)."""
        if len(self.samples) < 2:
            return None
        t_now, d_now = self.samples[-1]
        first = None
        for t, d in self.samples:
            if t_now - t <= window:
                first = (t, d)
                break
        if first is None or t_now - first[0] < 1e-3:
            first = self.samples[-2]
        dt = t_now - first[0]
        if dt <= 0:
            return None
        return (first[1] - d_now) / dt


# The entry a stream's consumers have been waiting on longest: per group the oldest
# pending entry (XPENDING summary), or else the first one not yet delivered; with no
# groups, the first entry. Returns that entry (id, fields) or nil. Redis >= 6.2.
_STREAM_OLDEST_LUA = """
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return false end
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  if am ~= bm then return am < bm end
  return as < bs
end
local groups = redis.call('XINFO', 'GROUPS', key)
local oldest = nil
if #groups == 0 then
  local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
  if first[1] then return first[1] end
  return false
end
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local cand = nil
  if tonumber(info['pending']) > 0 then
    cand = redis.call('XPENDING', key, info['name'])[2]
  else
    local nxt = redis.call('XRANGE', key, '(' .. info['last-delivered-id'], '+', 'COUNT', 1)
    if nxt[1] then cand = nxt[1][1] end
  end
  if cand and (oldest == nil or older(cand, oldest)) then oldest = cand end
end
if oldest == nil then return false end
local e = redis.call('XRANGE', key, oldest, oldest)
if e[1] then return e[1] end
return false
"""


# The enqueue times of the jobs next in line, for the presets whose lists hold job ids
# (rq, bullmq): for each of the first #KEYS - ARGV[4] keys (lists) the id at its oldest end
# (ARGV[3] = left | right), for each key after them (sorted sets) the first member; each id
# looked up in the hash ARGV[1]..id, field ARGV[2]. Ids whose hash is gone (expired,
# deleted) and BullMQ's legacy "0:" markers are skipped, at most 10 per key. Returns the
# values found (one per key at most).
_JOB_HASH_OLDEST_LUA = """
local prefix, fieldname, fromleft, nz = ARGV[1], ARGV[2], ARGV[3] == 'left', tonumber(ARGV[4])
local nl = #KEYS - nz
local out = {}
for i = 1, #KEYS do
  for j = 0, 9 do
    local id
    if i <= nl then
      if fromleft then id = redis.call('LINDEX', KEYS[i], j) else id = redis.call('LINDEX', KEYS[i], -1 - j) end
    else
      id = redis.call('ZRANGE', KEYS[i], j, j)[1]
    end
    if not id then break end
    if string.sub(id, 1, 2) ~= '0:' then
      local v = redis.call('HGET', prefix .. id, fieldname)
      if v then
        out[#out + 1] = v
        break
      end
    end
  end
end
return out
"""


class QueueSource:
    """Depth, age and drain of the configured queues of one Redis, one round trip per poll."""

    kind = "queues"

    def __init__(self, name: str, url: Any, queues: Sequence[QueueSpec], *, interval: float = 2.0,
                 timeout: float = 2.0, history: int = 120, rate_window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        names = [q.name for q in queues]
        if len(set(names)) != len(names):
            raise ValueError("queue names must be unique")
        self.name = name
        self.url = url
        self.queues = tuple(queues)
        self.interval = interval
        self.timeout = timeout
        self.rate_window = rate_window
        self.clock = clock  # the drain rate's time base (injected in tests)
        self.wall = wall  # epoch seconds the job ages are measured against (injected in tests)
        self._history = {q.name: _History(deque(maxlen=max(2, history))) for q in self.queues}
        _register_url_secret(reveal(url))

    def queue(self, name: str) -> QueueSpec:
        for q in self.queues:
            if q.name == name:
                return q
        raise KeyError(name)

    async def poll(self) -> Sequence[QueueReading]:
        plan: list[tuple[QueueSpec, str]] = []

        async def read(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for q in self.queues:
                if q.type in PRESETS:
                    self._queue_preset(pipe, q, plan)
                elif q.type == "list":
                    pipe.llen(q.key)
                    plan.append((q, "depth"))
                    if q.timestamp_field:
                        pipe.lindex(q.key, -1 if q.oldest_end == "right" else 0)
                        plan.append((q, "oldest"))
                elif q.type == "stream":
                    pipe.xlen(q.key)
                    plan.append((q, "depth"))
                    pipe.xinfo_groups(q.key)
                    plan.append((q, "groups"))
                    pipe.execute_command("EVAL", _STREAM_OLDEST_LUA, 1, q.key)
                    plan.append((q, "first"))
                else:
                    pipe.zcard(q.key)
                    plan.append((q, "depth"))
                    pipe.zrange(q.key, 0, 0, withscores=True)
                    plan.append((q, "first"))
                if q.dead_letter:
                    pipe.llen(q.dead_letter)
                    plan.append((q, "dead"))
            return list(await pipe.execute(raise_on_error=False))

        results = await call(self.url, read, source=self.name, timeout=max(0.05, self.timeout * 0.9))
        for r in results:  # connection-level failures surface as exceptions in every slot
            if isinstance(r, Exception) and not _is_response_error(r):
                raise BackendError(self.name, describe_redis_error(r, reveal(self.url)))
        now_wall = self.wall()
        now = self.clock()
        parts: dict[str, dict[str, list[Any]]] = {q.name: {} for q in self.queues}
        for (q, what), value in zip(plan, results, strict=True):
            parts[q.name].setdefault(what, []).append(value)
        out = []
        for q in self.queues:
            got = parts[q.name]
            if q.type in PRESETS:
                out.append(self._preset_reading(q, got, now, now_wall))
            else:
                out.append(self._reading(q, {k: v[0] for k, v in got.items()}, now, now_wall))
        return out

    @staticmethod
    def _queue_preset(pipe: Any, q: QueueSpec, plan: list[tuple[QueueSpec, str]]) -> None:
        """Queue the reads of one framework preset (all in the poll's one pipeline)."""
        k = q.preset_keys()
        for key in k.lists:
            pipe.llen(key)
            plan.append((q, "depth"))
        for key in k.zsets:
            pipe.zcard(key)
            plan.append((q, "depth"))
        if k.job_prefix and k.job_field:  # rq, bullmq: ids -> job hashes, in one script
            keys = (*k.lists, *k.zsets)
            pipe.execute_command("EVAL", _JOB_HASH_OLDEST_LUA, len(keys), *keys, k.job_prefix, k.job_field,
                                 k.oldest_end, len(k.zsets))
            plan.append((q, "times"))
        else:
            field_path = "enqueued_at" if q.type == "sidekiq" else q.timestamp_field
            if field_path:
                for key in k.lists:
                    pipe.lindex(key, 0 if k.oldest_end == "left" else -1)
                    plan.append((q, "oldest"))
        for what, zkey in (("failed", k.failed), ("delayed", k.delayed), ("dead", k.dead)):
            if zkey:
                pipe.zcard(zkey)
                plan.append((q, what))
        if k.active:
            (pipe.llen if k.active_is_list else pipe.zcard)(k.active)
            plan.append((q, "active"))
        if k.meta:
            pipe.hexists(k.meta, "paused")
            plan.append((q, "paused"))

    def _preset_reading(self, q: QueueSpec, got: dict[str, list[Any]], now: float,
                        now_wall: float) -> QueueReading:
        k = q.preset_keys()
        depths = got.get("depth", [])
        wrong = any(_is_response_error(v) for v in depths)
        depth = 0 if wrong else sum(int(v or 0) for v in depths)
        ages: list[float] = []
        for v in got.get("times", []):
            if isinstance(v, list):
                for raw in v:
                    ts = parse_timestamp(raw)
                    if ts is not None:
                        ages.append(max(0.0, now_wall - ts.timestamp()))
        field_path = "enqueued_at" if q.type == "sidekiq" else q.timestamp_field
        for v in got.get("oldest", []):
            if not _is_response_error(v):
                age = job_age(v, field_path, now_wall)
                if age is not None:
                    ages.append(age)
        oldest = None if wrong or not ages else max(ages)

        def count(what: str) -> int | None:
            vals = got.get(what)
            if not vals or _is_response_error(vals[0]) or vals[0] is None:
                return None
            return int(vals[0])

        paused_v = got.get("paused")
        paused = None if not paused_v or _is_response_error(paused_v[0]) else bool(paused_v[0])
        hist = self._history[q.name]
        if not wrong:
            hist.add(now, depth)
        rate = hist.rate(self.rate_window)
        return QueueReading(
            source=self.name,
            name=q.name,
            key=k.lists[0],
            type=q.type,
            depth=depth,
            oldest_age_s=oldest,
            thresholds=q.thresholds,
            status=Status.UNKNOWN if wrong else _status(depth, oldest, q),
            history=tuple(d for _, d in hist.samples),
            drain_rate=rate,
            time_to_drain_s=_time_to_drain(wrong, depth, rate),
            dead_letter_key=k.dead,
            dead_letter_depth=count("dead"),
            failed=count("failed"),
            delayed=count("delayed"),
            active=count("active"),
            paused=paused,
            max_age_s=q.max_age,
        )

    def _reading(self, q: QueueSpec, got: dict[str, Any], now: float, now_wall: float) -> QueueReading:
        depth_v = got.get("depth")
        wrong = _is_response_error(depth_v)
        depth = 0 if wrong or depth_v is None else int(depth_v)
        pending = None
        oldest = None
        if q.type == "list":
            oldest = job_age(got.get("oldest"), q.timestamp_field, now_wall) if not wrong else None
        elif q.type == "stream":
            groups = got.get("groups")
            if isinstance(groups, list):
                pending = sum(int(g.get("pending") or 0) for g in groups)
            first = got.get("first")
            if isinstance(first, list) and len(first) == 2:
                entry_id, flat = first
                fields = dict(zip(flat[::2], flat[1::2], strict=False)) if isinstance(flat, list) else {}
                if q.timestamp_field and q.timestamp_field in fields:
                    ts = parse_timestamp(fields[q.timestamp_field])
                    oldest = max(0.0, now_wall - ts.timestamp()) if ts else None
                else:
                    try:
                        oldest = max(0.0, now_wall - int(str(entry_id).split("-")[0]) / 1000.0)
                    except ValueError:
                        oldest = None
        else:
            first = got.get("first")
            if isinstance(first, list) and first:
                member, score = first[0]
                if q.timestamp_field:
                    oldest = job_age(member, q.timestamp_field, now_wall)
                else:
                    ts = parse_timestamp(float(score)) if float(score) > 1e9 else None
                    oldest = max(0.0, now_wall - ts.timestamp()) if ts else None
        dead = got.get("dead")
        dead_depth = None if dead is None or _is_response_error(dead) else int(dead)
        hist = self._history[q.name]
        if not wrong:
            hist.add(now, depth)
        rate = hist.rate(self.rate_window)
        return QueueReading(
            source=self.name,
            name=q.name,
            key=q.key,
            type=q.type,
            depth=depth,
            pending=pending,
            oldest_age_s=oldest,
            thresholds=q.thresholds,
            status=Status.UNKNOWN if wrong else _status(depth, oldest, q),
            history=tuple(d for _, d in hist.samples),
            drain_rate=rate,
            time_to_drain_s=_time_to_drain(wrong, depth, rate),
            dead_letter_key=q.dead_letter,
            dead_letter_depth=dead_depth,
            max_age_s=q.max_age,
        )


def _status(depth: int, oldest: float | None, q: QueueSpec) -> Status:
    st = status_for_depth(depth, q.thresholds)
    if q.max_age is not None and oldest is not None and oldest > q.max_age and st is Status.OK:
        return Status.WARN
    return st


def _time_to_drain(wrong: bool, depth: int, rate: float | None) -> float | None:
    if wrong:
        return None
    if depth == 0:
        return 0.0
    if rate is not None and rate > 1e-9:
        return depth / rate
    return None


def _is_response_error(v: Any) -> bool:
    return isinstance(v, Exception) and type(v).__name__ in ("ResponseError", "DataError")


# --------------------------------------------------------------------------- action


def _cut(text: Any, n: int = 120) -> str:
    s = " ".join(str(text).split())
    return redact(s if len(s) <= n else s[: n - 1] + "…")


class RequeueDead(Action):
    """Move the jobs of a dead-letter list back into its queue (LMOVE, one job at a time)."""

    id = "queue.requeue_dead"
    title = "Requeue dead-letter jobs"
    danger = Danger.CONFIRM
    description = "Move every job of a queue's dead-letter list back into the queue."
    batch = 500

    def __init__(self, source: QueueSource) -> None:
        self.source = source

    async def plan(self, *, queue: str = "", limit: Any = None, reason: str | None = None,
                   **_: Any) -> ActionPlan:
        try:
            q = self.source.queue(str(queue))
        except KeyError:
            raise ActionRefused(self.id, f"no configured queue {queue!r}") from None
        dead = q.dead_letter
        if q.type != "list" or not dead:
            raise ActionRefused(self.id, f"queue {q.name} has no dead-letter list")
        max_n = None
        if limit is not None:
            try:
                max_n = int(limit)
            except (TypeError, ValueError):
                raise ActionRefused(self.id, f"limit must be a number, got {limit!r}") from None
            if max_n <= 0:
                raise ActionRefused(self.id, "limit must be positive")

        async def read(client: Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.type(dead)
            pipe.type(q.key)
            pipe.llen(dead)
            pipe.llen(q.key)
            pipe.lrange(dead, -3, -1)
            return await pipe.execute(raise_on_error=False)

        dtype, qtype, dead_n, q_n, sample = await call(self.source.url, read, source=self.source.name,
                                                       timeout=self.source.timeout)
        if dtype not in ("list", "none"):
            raise ActionRefused(self.id, f"{q.dead_letter} is a {dtype}, not a list")
        if qtype not in ("list", "none"):
            raise ActionRefused(self.id, f"{q.key} is a {qtype}, not a list")
        dead_n = int(dead_n) if not isinstance(dead_n, Exception) else 0
        q_n = int(q_n) if not isinstance(q_n, Exception) else 0
        n = min(dead_n, max_n) if max_n else dead_n
        sample_lines = tuple(f"e.g. {_cut(s)}" for s in reversed(sample or []) if not isinstance(sample, Exception))
        change = Change(
            target=f"redis:{q.dead_letter}",
            description=f"move {n:,} job(s) from {q.dead_letter} to {q.key}",
            before={"dead_letter": dead_n, "queue": q_n},
            after={"dead_letter": dead_n - n, "queue": q_n + n},
        )
        return ActionPlan(
            action=self.id,
            title=f"Requeue {n:,} dead job(s) of {q.name}",
            target=f"queue:{self.source.name}:{q.name}",
            changes=(change,),
            guard=Guard(n > 0, f"{q.dead_letter} holds {dead_n:,} job(s)"),
            danger=self.danger,
            params={"source": self.source.name, "queue": q.name, "dead_letter": q.dead_letter,
                    "key": q.key, "count": n},
            reason=reason,
            preview=(f"{change.description}\n{q.dead_letter}: {dead_n:,} -> {dead_n - n:,}; "
                     f"{q.key}: {q_n:,} -> {q_n + n:,}" + ("\n" + "\n".join(sample_lines) if sample_lines else "")),
            lock_key=f"queue:{self.source.name}:{q.name}",
            total=n,
        )

    async def check_guard(self, plan: ActionPlan) -> Guard:
        async def read(client: Redis) -> int:
            return await client.llen(plan.params["dead_letter"])

        n = await call(self.source.url, read, source=self.source.name, timeout=self.source.timeout)
        return Guard(int(n) > 0, f"{plan.params['dead_letter']} holds {int(n):,} job(s)")

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        q = self.source.queue(plan.params["queue"])
        dead = q.dead_letter
        if not dead:  # the plan checked it (the queues are fixed at start)
            raise ActionRefused(self.id, f"queue {q.name} has no dead-letter list")
        want = int(plan.params["count"])
        moved = 0
        exhausted = False
        while moved < want and not exhausted:
            n = min(self.batch, want - moved)

            async def move(client: Redis, n: int = n) -> list[Any]:
                pipe = client.pipeline(transaction=False)
                for _ in range(n):
                    pipe.lmove(dead, q.key, "RIGHT", q.producer_end)
                return await pipe.execute(raise_on_error=False)

            res = await call(self.source.url, move, source=self.source.name,
                             timeout=max(self.source.timeout, 10.0), retry=False)
            errors = [r for r in res if isinstance(r, Exception)]
            got = sum(1 for r in res if r is not None and not isinstance(r, Exception))
            moved += got
            if errors:
                return ActionResult(status="partial" if moved else "failed",
                                    summary=f"moved {moved:,} of {want:,}: {describe_redis_error(errors[0])}",
                                    after={"moved": moved}, counts={"moved": moved})
            if got < n:
                exhausted = True
            progress(Progress(moved, want, f"moved {moved:,} of {want:,}"))
        status = "ok" if moved else "skipped"
        summary = f"moved {moved:,} job(s) from {q.dead_letter} to {q.key}"
        if exhausted and moved < want:
            summary += f" (dead-letter list emptied before {want:,})"
        return ActionResult(status=status, summary=summary, after={"moved": moved}, counts={"moved": moved})


def actions_for(source: QueueSource) -> list[Action]:
    return [RequeueDead(source)]


# --------------------------------------------------------------------------- rules


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def _fmt_s(s: float | None) -> str:
    return format_age(s, none="-")


@rule(RedisReading)
def redis_rules(r: RedisReading, ctx: RuleContext) -> Iterable[Finding]:
    limit = r.max_memory_bytes or DEFAULT_MAX_MEMORY
    if r.used_memory_bytes >= limit:
        yield Finding(
            key=f"redis:{r.source}:memory",
            severity=Severity.P2,
            source=r.source,
            summary=f"Redis {r.source} uses {_fmt_bytes(r.used_memory_bytes)} (limit {_fmt_bytes(limit)})",
            evidence=(f"used_memory: {r.used_memory_bytes:,} bytes", f"clients: {r.connected_clients}"),
            playbook="queue-overflow",
            target=f"redis:{r.source}",
        )


@rule(QueueReading)
def queue_rules(r: QueueReading, ctx: RuleContext) -> Iterable[Finding]:
    warn, high, crit = r.thresholds
    target = f"queue:{r.source}:{r.name}"
    evidence = (
        f"depth: {r.depth:,} (warn {warn:,}, high {high:,}, critical {crit:,})",
        f"drain rate: {r.drain_rate:+.1f} jobs/s" if r.drain_rate is not None else "drain rate: -",
        f"time to drain: {_fmt_s(r.time_to_drain_s)}",
        f"oldest job: {_fmt_s(r.oldest_age_s)}",
    )
    if r.status is Status.UNKNOWN and r.depth == 0:
        what = f"does not hold a {r.type} queue (wrong Redis type)" if r.type in PRESETS else f"is not a {r.type}"
        yield Finding(key=f"{target}:depth", severity=Severity.P3, source=r.source,
                      summary=f"Queue {r.name}: key {r.key} {what}", target=target)
    elif r.depth >= crit:
        yield Finding(key=f"{target}:depth", severity=Severity.P1, source=r.source,
                      summary=f"Queue {r.name} overflow: {r.depth:,} jobs (critical at {crit:,})",
                      evidence=evidence, playbook="queue-overflow", target=target)
    elif r.depth >= high:
        yield Finding(key=f"{target}:depth", severity=Severity.P2, source=r.source,
                      summary=f"Queue {r.name}: {r.depth:,} jobs (scale workers above {high:,})",
                      evidence=evidence, playbook="queue-overflow", target=target)
    elif r.depth >= warn:
        yield Finding(key=f"{target}:depth", severity=Severity.P3, source=r.source,
                      summary=f"Queue {r.name}: {r.depth:,} jobs (expected < {warn:,})",
                      evidence=evidence, playbook="queue-overflow", target=target)
    if r.max_age_s is not None and r.oldest_age_s is not None and r.oldest_age_s > r.max_age_s:
        yield Finding(key=f"{target}:age", severity=Severity.P2, source=r.source,
                      summary=(f"Queue {r.name}: oldest job waiting {format_age(r.oldest_age_s)} "
                               f"(max {format_age(r.max_age_s)})"),
                      evidence=(f"oldest job: {_fmt_s(r.oldest_age_s)} (max_age {_fmt_s(r.max_age_s)})",
                                *evidence[:3]),
                      playbook="queue-overflow", target=target)
    if r.dead_letter_depth and r.type == "sidekiq":  # Sidekiq's dead set holds every queue's: one finding
        yield Finding(key=f"queue:{r.source}:sidekiq:dead", severity=Severity.P3, source=r.source,
                      summary=f"Sidekiq: {r.dead_letter_depth:,} job(s) in the dead set (all queues)",
                      evidence=("dead set: dead (Sidekiq-wide)",
                                f"retry set: {r.failed:,}" if r.failed is not None else "retry set: -"),
                      target=f"queue:{r.source}")
    elif r.dead_letter_depth:
        yield Finding(key=f"{target}:dead", severity=Severity.P3, source=r.source,
                      summary=f"Queue {r.name}: {r.dead_letter_depth:,} job(s) in {r.dead_letter_key}",
                      evidence=(f"dead-letter list: {r.dead_letter_key}",), target=target)


@snapshot_rule
def redis_unreachable(snapshot: Snapshot, ctx: RuleContext) -> Iterable[Finding]:
    for name, st in snapshot.sources.items():
        if st.kind == "redis" and st.state is SourceState.DEGRADED:
            since = st.last_good.isoformat(timespec="seconds") if st.last_good else "never"
            yield Finding(
                key=f"redis:{name}:unreachable",
                severity=Severity.P1,
                source=name,
                summary=f"Redis {name} unreachable: {st.reason}",
                evidence=(f"last good reading: {since}", f"consecutive failures: {st.failures}"),
                target=f"redis:{name}",
            )
