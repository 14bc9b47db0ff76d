"""The model every layer speaks: frozen dataclasses for readings, findings and state.

Every reading carries `source` (the configured source that produced it) and `at`
(when it was taken, timezone-aware UTC). Widgets render these objects; adapters
produce them; rules turn them into findings. Nothing here does I/O.

Adding a reading type: subclass `Reading` with `@dataclass(frozen=True, slots=True,
kw_only=True)` and give every new field a default so older producers keep working.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar


def utcnow() -> datetime:
    return datetime.now(UTC)


class Severity(enum.IntEnum):
    """Finding severity. Lower value = worse (sorts worst first)."""

    P0 = 0  # critical: platform down, funds at risk
    P1 = 1  # high: degraded, significant impact
    P2 = 2  # medium
    P3 = 3  # low

    @property
    def label(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r} (expected P0, P1, P2 or P3)") from None


class Status(enum.Enum):
    """Health of one thing, as a pane colours it. Always paired with a word and a symbol."""

    OK = "ok"
    WARN = "warn"
    CRIT = "crit"
    UNKNOWN = "unknown"

    @property
    def symbol(self) -> str:
        return {"ok": "●", "warn": "▲", "crit": "✖", "unknown": "?"}[self.value]

    @property
    def word(self) -> str:
        return {"ok": "OK", "warn": "WARN", "crit": "CRIT", "unknown": "UNKNOWN"}[self.value]

    @classmethod
    def worst(cls, *statuses: Status) -> Status:
        order = [cls.CRIT, cls.UNKNOWN, cls.WARN, cls.OK]
        for s in order:
            if s in statuses:
                return s
        return cls.OK


class SourceState(enum.Enum):
    PENDING = "pending"  # never polled yet
    OK = "ok"
    DEGRADED = "degraded"  # last poll failed or timed out; readings are stale


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceStatus:
    """The monitor's view of one source."""

    name: str
    kind: str = ""
    state: SourceState = SourceState.PENDING
    reason: str = ""
    last_good: datetime | None = None
    last_attempt: datetime | None = None
    failures: int = 0  # consecutive
    interval: float = 0.0
    next_poll_in: float = 0.0
    poll_ms: float | None = None  # duration of the last successful poll

    @property
    def degraded(self) -> bool:
        return self.state is SourceState.DEGRADED


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """Base of every reading."""

    source: str
    at: datetime = field(default_factory=utcnow)


# --------------------------------------------------------------------------- services


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceReading(Reading):
    """One service: a compose service / container, a process, a pm2/systemd/k8s unit."""

    name: str
    kind: str = "docker"  # docker | process | command | http
    state: str = "unknown"  # running | exited | restarting | paused | created | dead | missing | unknown
    health: str | None = None  # healthy | unhealthy | starting | None (no healthcheck)
    status: Status = Status.UNKNOWN
    started_at: datetime | None = None
    uptime_s: float | None = None
    restarts: int | None = None
    image: str | None = None
    exit_code: int | None = None
    pid: int | None = None
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    latency_ms: float | None = None
    replicas: int | None = None
    depends_on: tuple[str, ...] = ()
    detail: str = ""
    container_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class HostReading(Reading):
    cpu_percent: float
    cpu_high_for_s: float = 0.0  # how long CPU has been above its threshold
    mem_percent: float = 0.0
    disks: tuple[tuple[str, float], ...] = ()  # (mountpoint, percent used)
    load1: float | None = None
    # the thresholds the host rule judges this reading by (None: not known to the reading)
    cpu_warn: float | None = None
    memory_warn: float | None = None
    disk_warn: float | None = None
    disk_crit: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckReading(Reading):
    """An HTTP / JSON-RPC / SQL / command check with a value and thresholds."""

    name: str
    kind: str = "http"
    ok: bool = False
    status: Status = Status.UNKNOWN
    value: Any = None
    unit: str = ""
    latency_ms: float | None = None
    http_status: int | None = None
    detail: str = ""
    history: tuple[float, ...] = ()  # recent latencies or values, oldest first


# --------------------------------------------------------------------------- postgres


@dataclass(frozen=True, slots=True, kw_only=True)
class LongQuery:
    pid: int
    duration_s: float
    state: str
    query: str  # cut short
    application: str = ""
    user: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresReading(Reading):
    reachable: bool = True
    latency_ms: float | None = None
    active_connections: int = 0
    total_connections: int = 0
    max_connections: int = 0
    long_queries: tuple[LongQuery, ...] = ()
    database_size_bytes: int | None = None
    server_version: str = ""
    # the thresholds the Postgres rule judges this reading by (None: not known to the reading)
    warn_connections: int | None = None  # active connections
    pool_warn_ratio: float | None = None  # total / max_connections
    long_query_after: float | None = None  # seconds


# --------------------------------------------------------------------------- redis / queues


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueReading(Reading):
    name: str
    key: str
    type: str = "list"  # list | stream | zset | rq | bullmq | sidekiq | celery
    depth: int = 0
    pending: int | None = None  # streams: pending entries across groups
    oldest_age_s: float | None = None
    thresholds: tuple[int, int, int] = (1_000, 10_000, 50_000)  # warn, high, critical
    status: Status = Status.OK
    history: tuple[int, ...] = ()  # depth samples, oldest first
    drain_rate: float | None = None  # jobs/s, positive = draining
    time_to_drain_s: float | None = None
    dead_letter_key: str | None = None
    dead_letter_depth: int | None = None
    # framework presets (rq, bullmq, sidekiq, celery); None where the framework keeps no such set
    failed: int | None = None  # rq failed registry, bullmq :failed, sidekiq retry set
    delayed: int | None = None  # rq scheduled registry, bullmq :delayed, sidekiq schedule set
    active: int | None = None  # rq started registry (wip), bullmq :active
    paused: bool | None = None  # bullmq: meta `paused`
    max_age_s: float | None = None  # a finding when oldest_age_s is older


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisReading(Reading):
    reachable: bool = True
    latency_ms: float | None = None
    used_memory_bytes: int = 0
    max_memory_bytes: int | None = None
    connected_clients: int | None = None
    version: str = ""


# --------------------------------------------------------------------------- breakers


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerReading(Reading):
    name: str  # trigger_id / breaker name
    state: str = "closed"  # closed | open | half-open
    failures: int = 0
    last_failure_at: datetime | None = None
    opened_at: datetime | None = None
    half_open_in_s: float | None = None  # seconds until half-open, None if not open
    backend: str = "postgres"  # postgres | redis


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakersReading(Reading):
    """All breakers of one source, plus counts (1,000 breakers are one reading)."""

    breakers: tuple[BreakerReading, ...] = ()
    total: int = 0
    open: int = 0
    half_open: int = 0


# --------------------------------------------------------------------------- orders


class Verdict(enum.Enum):
    RELEASED = "released"
    NOT_RELEASED = "not_released"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderVerdict:
    order_id: str
    verdict: Verdict
    tx_hash: str | None = None
    block: int | None = None
    confirmations: int | None = None
    final: bool = False
    checked_to_block: int | None = None
    reason: str = ""
    amount: int | None = None
    # a release seen earlier (provisional, not final) that is gone from the chain: its block and
    # the confirmations it had when last seen (the reorg was at least that deep)
    reorged_block: int | None = None
    reorg_depth: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    id: str
    state: str
    created_at: datetime | None = None
    updated_at: datetime | None = None
    age_s: float | None = None
    block_number: int | None = None
    tx_hash: str | None = None
    notes: str | None = None
    verdict: OrderVerdict | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OrdersReading(Reading):
    stuck_count: int = 0
    oldest_age_s: float | None = None
    oldest: tuple[Order, ...] = ()
    by_state_24h: Mapping[str, int] = field(default_factory=dict)
    stuck_after_s: float = 600.0
    index_ok: bool | None = None
    index_hint: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CursorReading(Reading):
    """Where an event listener is, against the chain head."""

    name: str = "listener"
    block: int | None = None
    head: int | None = None
    finalized: int | None = None
    gap_blocks: int | None = None
    gap_s: float | None = None
    updated_at: datetime | None = None


# --------------------------------------------------------------------------- chain


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointReading(Reading):
    chain: str
    url: str  # display form, credentials masked
    name: str = ""
    ok: bool = False
    active: bool = False
    pinned: bool = False
    head: int | None = None
    head_age_s: float | None = None
    lag: int | None = None  # blocks behind the best endpoint
    chain_id: int | None = None
    chain_id_ok: bool | None = None
    latency_ms: float | None = None
    error_rate: float = 0.0
    block_hash: str | None = None
    error: str = ""
    # finality (backends/sources/signers.py): the node's "safe" / "finalized" heads where it has those
    # block tags; else None and `confirmations` (the configured depth) stands for them
    safe: int | None = None
    finalized: int | None = None
    confirmations: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractReading(Reading):
    chain: str
    name: str
    address: str
    code_present: bool | None = None
    abi_fingerprint: str = ""
    paused: bool | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceReading(Reading):
    chain: str
    name: str
    address: str
    balance: int | None = None  # smallest unit
    display: str = ""  # "12.5 ETH"
    minimum: int | None = None
    decimals: int = 18
    symbol: str = "ETH"
    status: Status = Status.UNKNOWN


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainReading(Reading):
    """One chain: its endpoints, the active one, contracts and balances."""

    chain: str
    expected_chain_id: int | None = None
    active_url: str | None = None
    endpoints: tuple[EndpointReading, ...] = ()
    contracts: tuple[ContractReading, ...] = ()
    balances: tuple[BalanceReading, ...] = ()
    disagreement: str = ""  # endpoints with different block hashes at a common height
    signers: tuple[SignerReading, ...] = ()  # [[chain.X.signers]] (backends/sources/signers.py)


@dataclass(frozen=True, slots=True, kw_only=True)
class SignerReading(Reading):
    """One signing key of a chain: balance and runway, nonces, its pending transactions."""

    chain: str
    label: str
    address: str
    balance: int | None = None  # wei
    display: str = ""  # "12.5 ETH"
    min_balance: int | None = None
    spend_per_hour: int | None = None  # wei per hour over the recent window; None: not known yet
    runway_s: float | None = None  # time until min_balance (0 when below it) at that rate; None: no spend
    runway_min_s: float | None = None
    latest_nonce: int | None = None
    pending_nonce: int | None = None
    pending_count: int = 0  # transactions sent but not mined (pending - latest, or the node's pool)
    queued_count: int = 0  # transactions in the pool behind a missing nonce
    gap_nonce: int | None = None  # the first missing nonce when transactions are queued behind it
    gap_blocks: int | None = None  # blocks since pending > latest was first seen (this stretch)
    gap_after_blocks: int = 10
    oldest_pending_age_s: float | None = None
    oldest_pending_blocks: int | None = None  # blocks the oldest pending transaction is unconfirmed
    stuck_after_blocks: int = 3
    stuck_tx: str | None = None  # hash of the transaction at the next nonce (from the node's pool)
    stuck_nonce: int | None = None
    stuck_fee: str = ""  # its fees, as shown ("maxFee 2 gwei, tip 1 gwei")
    last_confirmed_age_s: float | None = None  # since warroom saw the latest nonce increase
    last_confirmed_nonce: int | None = None
    can_sign: bool = False  # a key is configured (speed up / cancel offered)
    status: Status = Status.UNKNOWN
    problem: str = ""


# --------------------------------------------------------------------------- logs


class Level(enum.IntEnum):
    TRACE = 5
    DEBUG = 10
    INFO = 20
    WARN = 30
    ERROR = 40
    FATAL = 50
    UNKNOWN = 0



@dataclass(frozen=True, slots=True, kw_only=True)
class LogLine:
    source: str
    text: str  # safe to display: cut, escaped
    level: Level = Level.UNKNOWN
    at: datetime = field(default_factory=utcnow)
    message: str = ""
    notice: bool = False  # warroom's own line about the source ("[warroom] reconnecting")
    seq: int = 0
    # Its structured fields (JSON, `PREFIX: {json}`, logfmt) are not kept: the hub holds 10,000
    # lines and a dict per line was most of their memory. `backends.sources.logs.line_fields(text)`
    # parses them when something needs them.


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSignalReading(Reading):
    """Counts for one log source."""

    name: str
    errors: tuple[int, int, int] = (0, 0, 0)  # last 1 / 5 / 15 min
    warnings: tuple[int, int, int] = (0, 0, 0)
    lines: tuple[int, int, int] = (0, 0, 0)
    success_per_min: float | None = None
    last_line_at: datetime | None = None
    silent_for_s: float | None = None
    recent_errors: tuple[str, ...] = ()
    pattern_hits: Mapping[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """Something wrong now, worst first. `key` is stable while the condition lasts."""

    key: str
    severity: Severity
    source: str
    summary: str
    evidence: tuple[str, ...] = ()
    playbook: str | None = None
    target: str | None = None  # what an action would act on ("service:api-gateway")
    since: datetime = field(default_factory=utcnow)
    at: datetime = field(default_factory=utcnow)

    def sort_key(self) -> tuple[int, datetime, str]:
        return (int(self.severity), self.since, self.key)


_R = TypeVar("_R", bound="Reading")


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """Everything the monitor knows at one moment. Widgets render from this alone."""

    at: datetime = field(default_factory=utcnow)
    sources: Mapping[str, SourceStatus] = field(default_factory=dict)
    readings: Mapping[str, tuple[Reading, ...]] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()

    def of_type(self, cls: type[_R]) -> list[_R]:
        """All readings of one type, across sources, in source order."""
        out: list[_R] = []
        for readings in self.readings.values():
            out.extend(r for r in readings if isinstance(r, cls))
        return out

    def status_of(self, source: str) -> SourceStatus | None:
        return self.sources.get(source)
