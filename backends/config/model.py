"""The configuration model: one frozen dataclass per section (attribute names = TOML key names)."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.config.schema import DEFAULT_ALERT_SEVERITY, DEFAULT_RESPONSE, Defaults
from backends.config.types import Amount, Ident, Secret, TokenAmount
from backends.engine.playbooks import BUILTIN, Playbook
from backends.model import Severity
from backends.units import format_duration


def _default_state_dir() -> Path:
    try:
        import platformdirs

        return Path(platformdirs.user_state_dir("warroom"))
    except Exception:  # pragma: no cover - platformdirs is a dependency
        return Path("~/.local/state/warroom").expanduser()


_WARROOM = Defaults("warroom")


@dataclass(frozen=True, slots=True, kw_only=True)
class WarroomConfig:
    name: str = _WARROOM.name
    environment: str = _WARROOM.environment
    refresh: float = _WARROOM.refresh
    timeout: float = _WARROOM.timeout
    operator: str = _WARROOM.operator
    audit_path: Path | None = _WARROOM.audit_path  # filled at load: state_dir / "audit.jsonl" unless given
    state_dir: Path | None = _WARROOM.state_dir  # filled at load: platformdirs.user_state_dir("warroom") unless given
    read_only: bool = _WARROOM.read_only
    theme: str = _WARROOM.theme
    log_buffer: int = _WARROOM.log_buffer  # log lines kept in memory (the hub's buffer and the Logs pane)

    @property
    def production(self) -> bool:
        return self.environment.lower() in ("production", "prod")


_POSTGRES = Defaults("postgres")


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresConfig:
    name: str
    dsn: Secret
    pool_max: int = _POSTGRES.pool_max
    timeout: float = _POSTGRES.timeout
    interval: float = _POSTGRES.interval
    long_query_after: float = _POSTGRES.long_query_after
    terminate_after: float = _POSTGRES.terminate_after
    warn_connections: int = _POSTGRES.warn_connections
    shared: bool = _POSTGRES.shared


_REDIS = Defaults("redis")


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisConfig:
    name: str
    url: Secret
    timeout: float = _REDIS.timeout
    interval: float = _REDIS.interval
    max_memory: int = _REDIS.max_memory


_CHAIN_CONTRACTS = Defaults("chain.contracts")


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractConfig:
    name: str
    address: str
    abi: Path | None = _CHAIN_CONTRACTS.abi
    pausable: bool = _CHAIN_CONTRACTS.pausable
    roles: tuple[str, ...] = _CHAIN_CONTRACTS.roles  # AccessControl role names shown by name (besides PAUSER_ROLE, MINTER_ROLE...)
    # guardrails: Paused/Ownership/Role/Upgraded events become findings; owner, implementation
    # and admins announced here are expected (a change to anything else is P0)
    guard: bool = _CHAIN_CONTRACTS.guard
    owner: str | None = _CHAIN_CONTRACTS.owner
    implementation: str | None = _CHAIN_CONTRACTS.implementation
    admins: tuple[str, ...] = _CHAIN_CONTRACTS.admins


_CHAIN_BALANCES = Defaults("chain.balances")


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceConfig:
    name: str
    address: str
    # the native coin: an Amount; a token: an Amount (smallest unit, or whole tokens scaled by
    # configured decimals) or a TokenAmount (whole tokens, scaled by the decimals() the token reports)
    minimum: Amount | TokenAmount | None = _CHAIN_BALANCES.minimum
    token: str | None = _CHAIN_BALANCES.token  # an ERC-20: a 0x address or a [[chain.X.contracts]] name; None: the native coin
    # native coin: from `symbol`, else minimum's unit, else ETH (evm). A token: from `symbol`, else
    # minimum's unit, else None (read `symbol()` from the token)
    symbol: str | None = "ETH"
    decimals: int | None = 18  # a token without `decimals`: None (read `decimals()` from the token)


_CHAIN_SIGNERS = Defaults("chain.signers")


@dataclass(frozen=True, slots=True, kw_only=True)
class SignerConfig:
    """[[chain.NAME.signers]]: a key that signs (releases, gas), watched; with a keystore or
    key_env it can speed up / cancel its own stuck transaction."""

    label: str
    address: str
    min_balance: Amount | None = _CHAIN_SIGNERS.min_balance
    keystore: Path | None = _CHAIN_SIGNERS.keystore
    key_env: str | None = _CHAIN_SIGNERS.key_env
    stuck_after_blocks: int = _CHAIN_SIGNERS.stuck_after_blocks
    gap_after_blocks: int = _CHAIN_SIGNERS.gap_after_blocks
    runway_min: float = _CHAIN_SIGNERS.runway_min
    spend_window: float = _CHAIN_SIGNERS.spend_window
    bump_percent: float = _CHAIN_SIGNERS.bump_percent
    min_bump_percent: float = _CHAIN_SIGNERS.min_bump_percent


_CHAIN = Defaults("chain")


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainConfig:
    name: str
    kind: str = _CHAIN.kind  # evm | jsonrpc
    chain_id: int | None = _CHAIN.chain_id
    endpoints: tuple[Secret, ...] = ()
    failover: bool = _CHAIN.failover
    failover_after: int = _CHAIN.failover_after  # consecutive failures of the active endpoint before switching
    max_lag: int = _CHAIN.max_lag
    max_head_age: float = _CHAIN.max_head_age
    confirmations: int = _CHAIN.confirmations
    getlogs_chunk: int = _CHAIN.getlogs_chunk
    timeout: float = _CHAIN.timeout
    interval: float = _CHAIN.interval
    head_method: str = _CHAIN.head_method
    hash_method: str | None = _CHAIN.hash_method  # jsonrpc: e.g. "getblockhash"
    version_method: str | None = _CHAIN.version_method  # jsonrpc: e.g. "getversion"
    head_offset: int = _CHAIN.head_offset  # added to head_method's result (Neo getblockcount = height + 1 -> -1)
    signer_env: str | None = _CHAIN.signer_env
    keystore: Path | None = _CHAIN.keystore
    contracts: tuple[ContractConfig, ...] = ()
    balances: tuple[BalanceConfig, ...] = ()
    max_answer: int = _CHAIN.max_answer  # bytes of one RPC answer; a bigger one makes the source DEGRADED
    integrity_window: int = _CHAIN.integrity_window  # blocks below the listener cursor re-checked for missed releases
    verify_quorum: int = _CHAIN.verify_quorum  # endpoints that must agree on a verification read that decides a fix (2: 2 of 3)
    gas_bank: str | None = _CHAIN.gas_bank  # Neo N3: the script hash whose GAS balance is watched (invokefunction balanceOf)
    gas_minimum: float | None = _CHAIN.gas_minimum  # Neo N3: GAS below this is a finding
    watch_contracts: tuple[str, ...] = _CHAIN.watch_contracts  # Neo N3: contract script hashes read with getcontractstate
    signers: tuple[SignerConfig, ...] = ()  # [[chain.NAME.signers]] (backends/sources/signers.py)
    finality: str = _CHAIN.finality  # a release is final at: depth (confirmations) | safe | finalized (node tags)

    def contract(self, name: str) -> ContractConfig | None:
        return next((c for c in self.contracts if c.name == name), None)


_SERVICES = Defaults("services")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    name: str
    kind: str  # docker | process | command | http | pm2
    compose_project: str | None = _SERVICES.compose_project
    compose_service: str | None = _SERVICES.compose_service
    container: str | None = _SERVICES.container
    match: re.Pattern[str] | None = _SERVICES.match
    status_command: str | None = _SERVICES.status_command  # kind=command: a [[commands]] name whose exit code is health
    depends_on: tuple[str, ...] = _SERVICES.depends_on
    health_url: str | None = _SERVICES.health_url
    latency_warn: float = _SERVICES.latency_warn
    logs: str | None = _SERVICES.logs  # "docker" | a [[commands]] name | a path/glob (made absolute at load)
    silence_after: float | None = _SERVICES.silence_after
    restart: str | None = _SERVICES.restart  # "docker" | a [[commands]] name
    restart_command: str | None = _SERVICES.restart_command  # a [[commands]] name
    interval: float | None = _SERVICES.interval
    timeout: float | None = _SERVICES.timeout
    role: str | None = _SERVICES.role  # api | events | worker | listener | indexer | postgres | redis | other (guessed)
    playbook: str | None = _SERVICES.playbook  # playbook for this service's findings
    pm2_app: str | None = _SERVICES.app  # kind=pm2: pm2's name for the app (default: name)
    pm2_home: str | None = _SERVICES.pm2_home  # kind=pm2: PM2_HOME of the pm2 that runs it (default: $PM2_HOME, ~/.pm2)
    pm2_bin: str | None = _SERVICES.pm2_bin  # kind=pm2: the pm2 executable (default: pm2 on PATH)

    @property
    def restart_via(self) -> str | None:
        """'docker', a [[commands]] name, or None (no restart configured)."""
        return self.restart_command or self.restart


_COMMANDS = Defaults("commands")


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandConfig:
    name: str
    argv: tuple[str, ...]
    timeout: float = _COMMANDS.timeout
    cwd: Path | None = _COMMANDS.cwd

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(_placeholders(self.argv))


_DOCKER = Defaults("docker")


@dataclass(frozen=True, slots=True, kw_only=True)
class DockerConfig:
    host: str = _DOCKER.host
    compose_command: str = _DOCKER.compose_command  # auto | docker compose | docker-compose
    stats: bool = _DOCKER.stats
    stats_interval: float = _DOCKER.stats_interval
    timeout: float = _DOCKER.timeout
    interval: float | None = _DOCKER.interval


_HOST = Defaults("host")


@dataclass(frozen=True, slots=True, kw_only=True)
class HostConfig:
    cpu_warn: float = _HOST.cpu_warn
    cpu_for: float = _HOST.cpu_for
    memory_warn: float = _HOST.memory_warn
    disk_warn: float = _HOST.disk_warn
    disks: tuple[str, ...] = _HOST.disks
    interval: float | None = _HOST.interval


_QUEUES = Defaults("queues")


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    name: str
    redis: str
    key: str
    type: str = _QUEUES.type  # list | stream | zset | rq | bullmq | sidekiq | celery (key = the queue's own name)
    thresholds: tuple[int, int, int] = _QUEUES.thresholds
    timestamp_field: str | None = _QUEUES.timestamp_field
    dead_letter: str | None = _QUEUES.dead_letter
    interval: float | None = _QUEUES.interval
    oldest_end: str = _QUEUES.oldest_end  # list: right = consumers RPOP (oldest at -1), left = consumers LPOP
    prefix: str | None = _QUEUES.prefix  # bullmq (default "bull"), celery (kombu global_keyprefix)
    max_age: float | None = _QUEUES.max_age  # a finding when the oldest job is older
    priority_steps: tuple[int, ...] = _QUEUES.priority_steps  # celery (kombu priority_steps)


_BREAKERS = Defaults("breakers")


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakersConfig:
    postgres: str | None = _BREAKERS.postgres
    table: Ident | None = _BREAKERS.table
    id_column: Ident = _BREAKERS.id_column
    state_column: Ident = _BREAKERS.state_column
    failures_column: Ident = _BREAKERS.failures_column
    last_failure_column: Ident | None = _BREAKERS.last_failure_column
    opened_at_column: Ident | None = _BREAKERS.opened_at_column
    reset_timeout: float = _BREAKERS.reset_timeout
    redis: str | None = _BREAKERS.redis
    redis_namespaces: tuple[str, ...] = _BREAKERS.redis_namespaces
    interval: float | None = _BREAKERS.interval


_ORDERS_CURSOR = Defaults("orders.cursor")


@dataclass(frozen=True, slots=True, kw_only=True)
class OrdersCursorConfig:
    table: Ident
    key_column: Ident = _ORDERS_CURSOR.key_column
    key: str = _ORDERS_CURSOR.key
    block_column: Ident = _ORDERS_CURSOR.block_column
    updated_column: Ident | None = _ORDERS_CURSOR.updated_column


_ORDERS = Defaults("orders")


@dataclass(frozen=True, slots=True, kw_only=True)
class OrdersConfig:
    postgres: str
    table: Ident = _ORDERS.table
    id_column: Ident = _ORDERS.id_column
    id_pattern: re.Pattern[str] = _ORDERS.id_pattern
    state_column: Ident = _ORDERS.state_column
    created_column: Ident = _ORDERS.created_column
    updated_column: Ident | None = _ORDERS.updated_column
    notes_column: Ident | None = _ORDERS.notes_column
    block_column: Ident | None = _ORDERS.block_column
    tx_column: Ident | None = _ORDERS.tx_column
    pending_states: tuple[str, ...] = _ORDERS.pending_states
    target_states: tuple[str, ...] = _ORDERS.target_states
    settled_state: str = "SETTLED"  # the target state when the release event is on chain
    start_block: int = _ORDERS.start_block  # first block to search for release events
    stuck_after: float = _ORDERS.stuck_after
    show: int = _ORDERS.show
    chain: str | None = _ORDERS.chain
    contract: str | None = _ORDERS.contract
    event: str = _ORDERS.event
    id_encoding: str = _ORDERS.id_encoding  # bytes32-utf8 | uint256 | keccak
    bulk_batch: int = _ORDERS.bulk_batch
    interval: float | None = _ORDERS.interval
    cursor: OrdersCursorConfig | None = None


_LOGS = Defaults("logs")


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    name: str
    path: str | None = _LOGS.path  # file or glob; relative paths are resolved against the config file's dir
    container: str | None = _LOGS.container
    command: str | None = _LOGS.command  # a [[commands]] name
    service: str | None = _LOGS.service
    silence_after: float | None = _LOGS.silence_after
    success: tuple[str, ...] = _LOGS.success
    success_silence: float | None = _LOGS.success_silence  # lines but no success marker this long -> finding (default silence_after)
    success_playbook: str | None = _LOGS.success_playbook  # that finding's playbook (default events-not-processed)
    playbook: str | None = _LOGS.playbook  # playbook when the source falls silent
    since: float | None = _LOGS.since  # history read at start (default 5m)
    error_spike: int | None = _LOGS.error_spike  # errors per minute that make a finding (default 20)
    max_line: int | None = _LOGS.max_line  # characters of a line kept (default 4096)


_LOG_PATTERNS = Defaults("log_patterns")


@dataclass(frozen=True, slots=True, kw_only=True)
class LogPatternConfig:
    pattern: re.Pattern[str]
    severity: Severity = _LOG_PATTERNS.severity
    name: str | None = _LOG_PATTERNS.name
    playbook: str | None = _LOG_PATTERNS.playbook
    sources: tuple[str, ...] = _LOG_PATTERNS.sources  # [[logs]] / [[services]] names it applies to; empty = all
    window: float | None = _LOG_PATTERNS.window  # counting window (default 5m)
    min_count: int | None = _LOG_PATTERNS.min_count  # matches within the window before a finding (default 1)


_CHECKS = Defaults("checks")


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckConfig:
    name: str
    kind: str  # http | jsonrpc | sql | command | metrics | promql
    url: Secret | None = _CHECKS.url
    expect_status: int = _CHECKS.expect_status
    expect: str | None = _CHECKS.expect  # substring the body must contain
    latency_warn: float = _CHECKS.latency_warn
    timeout: float | None = _CHECKS.timeout
    interval: float | None = _CHECKS.interval
    severity: Severity = _CHECKS.severity
    method: str | None = _CHECKS.method  # jsonrpc
    params: tuple[Any, ...] = _CHECKS.params
    postgres: str | None = _CHECKS.postgres  # sql
    query: str | None = _CHECKS.query
    command: str | None = _CHECKS.command  # command: a [[commands]] name
    metric: str | None = _CHECKS.metric  # metrics: a name or a selector name{label="v",code=~"5.."}
    quantile: float | None = _CHECKS.quantile  # metrics: a histogram's quantile from its _bucket series (0.95)
    rate: bool = _CHECKS.rate  # metrics: a counter's per-second rate
    window: float | None = _CHECKS.window  # metrics: the rate / quantile window (default: since the last scrape)
    aggregate: str | None = _CHECKS.aggregate  # metrics (sum) / promql (max): how matching series combine
    empty: str | None = _CHECKS.empty  # promql: what an empty answer is (unknown | ok | crit)
    warn_above: float | None = _CHECKS.warn_above
    crit_above: float | None = _CHECKS.crit_above
    warn_below: float | None = _CHECKS.warn_below  # e.g. a gas balance read by a command check
    crit_below: float | None = _CHECKS.crit_below
    path: str | None = _CHECKS.path  # command checks: where the value is in the JSON output ("stack.0.value")
    playbook: str | None = _CHECKS.playbook  # playbook of this check's findings
    headers: Mapping[str, str | Secret] = field(default_factory=dict)


_ALERTMANAGER = Defaults("alertmanager")


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertmanagerConfig:
    """[alertmanager.NAME]: an Alertmanager (API v2) whose firing alerts are findings."""

    name: str
    url: Secret
    timeout: float = _ALERTMANAGER.timeout
    interval: float = _ALERTMANAGER.interval
    severity: Mapping[str, Severity] = field(default_factory=lambda: dict(DEFAULT_ALERT_SEVERITY))
    severity_label: str = _ALERTMANAGER.severity_label
    default_severity: Severity = _ALERTMANAGER.default_severity
    filter: tuple[str, ...] = _ALERTMANAGER.filter  # matchers: only these alerts ('team="chain"')
    silence_duration: float = _ALERTMANAGER.silence_duration  # default length of a silence made from warroom
    headers: Mapping[str, str | Secret] = field(default_factory=dict)


_ACTIONS = Defaults("actions")


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionConfig:
    name: str
    argv: tuple[str, ...]
    key: str | None = _ACTIONS.key
    description: str = _ACTIONS.description
    danger: str = _ACTIONS.danger  # safe | confirm | typed
    scope: str | None = _ACTIONS.scope
    params: Mapping[str, str] = field(default_factory=dict)
    timeout: float = _ACTIONS.timeout


_ESCALATION_LEVELS = Defaults("escalation.levels")


@dataclass(frozen=True, slots=True, kw_only=True)
class EscalationLevel:
    name: str
    after: float = _ESCALATION_LEVELS.after
    contacts: tuple[str, ...] = _ESCALATION_LEVELS.contacts
    channels: tuple[Secret, ...] = _ESCALATION_LEVELS.channels
    provide: tuple[str, ...] = _ESCALATION_LEVELS.provide


_ESCALATION_PAGERDUTY = Defaults("escalation.pagerduty")


@dataclass(frozen=True, slots=True, kw_only=True)
class PagerDutyConfig:
    routing_key: Secret
    url: str = _ESCALATION_PAGERDUTY.url
    change_events: bool = _ESCALATION_PAGERDUTY.change_events  # executed fixes sent as Change Events
    change_url: str = _ESCALATION_PAGERDUTY.change_url


_ESCALATION_ALERTMANAGER = Defaults("escalation.alertmanager")


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertSinkConfig:
    """`[escalation.alertmanager]`: escalations (and findings) pushed as Alertmanager alerts."""

    url: Secret
    labels: Mapping[str, str] = field(default_factory=dict)
    escalations: bool = _ESCALATION_ALERTMANAGER.escalations
    findings: Severity | None = None  # push findings of this severity or worse; None: none
    interval: float = _ESCALATION_ALERTMANAGER.interval  # re-sent while firing (endsAt = now + 4 x interval)
    timeout: float = _ESCALATION_ALERTMANAGER.timeout
    headers: Mapping[str, str | Secret] = field(default_factory=dict)


_ESCALATION = Defaults("escalation")


@dataclass(frozen=True, slots=True, kw_only=True)
class EscalationConfig:
    ack_timeout: float = _ESCALATION.ack_timeout
    levels: tuple[EscalationLevel, ...] = ()
    pagerduty: PagerDutyConfig | None = None
    alertmanager: AlertSinkConfig | None = None


_INCIDENT = Defaults("incident")


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentConfig:
    roles: tuple[str, ...] = _INCIDENT.roles
    response: Mapping[Severity, float] = field(default_factory=lambda: dict(DEFAULT_RESPONSE))


_RECORD = Defaults("record")


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordConfig:
    """[record]: the flight recorder (backends/engine/recorder.py). The console and kiosk record while set."""

    path: Path | None = _RECORD.path  # None: state_dir / "recording.sqlite"
    max_size: int = _RECORD.max_size  # bytes; the oldest batches are dropped beyond it
    max_age: float = _RECORD.max_age  # seconds; older batches are dropped


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    path: Path | None = None
    warroom: WarroomConfig = field(default_factory=WarroomConfig)
    keys: Mapping[str, str] = field(default_factory=dict)  # binding id -> "key[,key]" (Textual keymap)
    postgres: Mapping[str, PostgresConfig] = field(default_factory=dict)
    redis: Mapping[str, RedisConfig] = field(default_factory=dict)
    chain: Mapping[str, ChainConfig] = field(default_factory=dict)
    services: tuple[ServiceConfig, ...] = ()
    commands: tuple[CommandConfig, ...] = ()
    docker: DockerConfig = field(default_factory=DockerConfig)
    host: HostConfig | None = None
    queues: tuple[QueueConfig, ...] = ()
    breakers: BreakersConfig | None = None
    orders: OrdersConfig | None = None
    logs: tuple[LogConfig, ...] = ()
    log_patterns: tuple[LogPatternConfig, ...] = ()
    checks: tuple[CheckConfig, ...] = ()
    alertmanager: Mapping[str, AlertmanagerConfig] = field(default_factory=dict)
    actions: tuple[ActionConfig, ...] = ()
    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    incident: IncidentConfig = field(default_factory=IncidentConfig)
    playbooks: tuple[Playbook, ...] = ()  # [[playbooks]]: added to the built-ins, same id replaces one
    record: RecordConfig | None = None  # [record]: None when not set (nothing is recorded)

    # -- lookups ---------------------------------------------------------
    def command(self, name: str) -> CommandConfig | None:
        return next((c for c in self.commands if c.name == name), None)

    def service(self, name: str) -> ServiceConfig | None:
        return next((s for s in self.services if s.name == name), None)

    def queue(self, name: str) -> QueueConfig | None:
        return next((q for q in self.queues if q.name == name), None)

    @property
    def audit_path(self) -> Path:
        w = self.warroom
        if w.audit_path is not None:
            return w.audit_path
        return self.state_dir / "audit.jsonl"

    @property
    def state_dir(self) -> Path:
        return self.warroom.state_dir or _default_state_dir()

    @property
    def watches(self) -> tuple[str, ...]:
        """The configured sections that watch something (a source, a log, a check); () for a
        config with nothing to watch, which the console would show as a false all-clear."""
        present = {
            "postgres": self.postgres, "redis": self.redis, "chain": self.chain, "services": self.services,
            "host": self.host is not None, "queues": self.queues, "breakers": self.breakers is not None,
            "orders": self.orders is not None, "logs": self.logs, "checks": self.checks,
            "alertmanager": self.alertmanager,
        }
        return tuple(name for name, given in present.items() if given)

    # -- summary ---------------------------------------------------------
    def summary(self) -> list[str]:
        """Lines describing what is configured: counts and names, never secret values."""
        w = self.warroom
        lines = []
        if self.path is not None:
            lines.append(f"config: {self.path}")
        env = f" ({w.environment})" if w.environment else ""
        lines.append(
            f"stack: {w.name}{env}; refresh {format_duration(w.refresh)}, timeout "
            f"{format_duration(w.timeout)}; theme {w.theme}; read-only {'yes' if w.read_only else 'no'}"
        )
        lines.append(f"audit: {self.audit_path}")

        def names(items: Iterable[str]) -> str:
            items = list(items)
            return f"{len(items)} ({', '.join(items)})" if items else "none"

        lines.append(f"postgres: {names(self.postgres)}")
        lines.append(f"redis: {names(self.redis)}")
        chains = []
        for c in self.chain.values():
            bits = [c.kind]
            if c.chain_id is not None:
                bits.append(f"chain id {c.chain_id}")
            bits.append(_plural(len(c.endpoints), "endpoint"))
            if c.contracts:
                bits.append(f"contracts {', '.join(x.name for x in c.contracts)}")
            if c.balances:
                bits.append(f"balances {', '.join(x.name for x in c.balances)}")
            bits.append("signer " + ("env " + c.signer_env if c.signer_env else "keystore" if c.keystore else "none"))
            chains.append(f"{c.name} [{'; '.join(bits)}]")
        lines.append(f"chains: {names(chains)}")
        lines.append(f"services: {names(f'{s.name} [{s.kind}]' for s in self.services)}")
        lines.append(f"commands: {names(c.name for c in self.commands)}")
        lines.append(
            "queues: "
            + names(
                f"{q.name} [redis.{q.redis} {q.type}, {'/'.join(str(t) for t in q.thresholds)}]"
                for q in self.queues
            )
        )
        b = self.breakers
        if b is None:
            lines.append("breakers: none")
        elif b.postgres:
            lines.append(f"breakers: postgres.{b.postgres} table {b.table}, reset {format_duration(b.reset_timeout)}")
        else:
            nss = ", ".join(ns or '"" (none: pybreaker:*)' for ns in b.redis_namespaces)
            lines.append(f"breakers: redis.{b.redis} pybreaker namespaces {nss}")
        o = self.orders
        if o is None:
            lines.append("orders: none")
        else:
            text = f"orders: postgres.{o.postgres} table {o.table}, stuck after {format_duration(o.stuck_after)}"
            if o.chain:
                text += f", verified on chain.{o.chain}"
                if o.contract:
                    text += f" {o.contract}.{o.event}"
            if o.cursor:
                text += f", cursor {o.cursor.table}"
            lines.append(text)
        lines.append(f"logs: {names(g.name for g in self.logs)}; patterns: {len(self.log_patterns)}")
        lines.append(f"checks: {names(f'{c.name} [{c.kind}]' for c in self.checks)}")
        if self.alertmanager:
            lines.append(f"alertmanager: {names(f'{a.name} [{a.url.display()}]' for a in self.alertmanager.values())}")
        lines.append(f"actions: {names(f'{a.name} [{a.danger}]' for a in self.actions)}")
        e = self.escalation
        lines.append(
            f"escalation: {_plural(len(e.levels), 'level')}"
            + (f" ({', '.join(x.name for x in e.levels)})" if e.levels else "")
            + f"; ack timeout {format_duration(e.ack_timeout)}; pagerduty "
            + ("configured" if e.pagerduty else "not configured")
            + ("; change events on" if e.pagerduty and e.pagerduty.change_events else "")
            + (f"; alerts pushed to Alertmanager {e.alertmanager.url.display()}" if e.alertmanager else "")
        )
        resp = ", ".join(f"{s.name} {format_duration(t)}" for s, t in sorted(self.incident.response.items()))
        lines.append(f"incident: response {resp}; roles {', '.join(self.incident.roles)}")
        if self.host is not None:
            h = self.host
            lines.append(
                f"host: cpu {h.cpu_warn:g}% for {format_duration(h.cpu_for)}, memory {h.memory_warn:g}%, "
                f"disk {h.disk_warn:g}% on {', '.join(h.disks)}"
            )
        if self.keys:
            lines.append(f"keys remapped: {len(self.keys)}")
        if self.playbooks:
            builtin = {p.id for p in BUILTIN}
            lines.append("playbooks: " + names(
                f"{p.id} [overrides built-in]" if p.id in builtin else p.id for p in self.playbooks))
        return lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _placeholders(argv: Iterable[str]) -> list[str]:
    out = []
    for arg in argv:
        for _, fname, _, _ in string.Formatter().parse(arg):
            if fname is not None:
                out.append(fname)
    return out
