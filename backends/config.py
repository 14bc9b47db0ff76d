"""Load and validate warroom's TOML configuration.

The shape is `examples/reference.toml`. Every section becomes a frozen dataclass whose
attribute names are the TOML key names (`config.postgres["main"].dsn`,
`config.services[0].match`, `config.orders.cursor.table`). Validation is strict:
unknown keys, wrong types, bad identifiers, bad durations or amounts and dangling
cross-references are errors that name the file, line, key and what was expected.
All errors found are reported together (`ConfigErrors`, a `ConfigError`).

Strings may use `${VAR}` and `${VAR:-default}` (`$${` is a literal `${`). Secrets
(DSNs, Redis URLs, RPC endpoints, notification channels, routing keys, tokens) are
kept in `Secret`, whose text is masked; `.reveal()` gives the value to the adapter
that needs it. Secret values are registered with `backends.errors.register_secret`
so `redact()` scrubs them from any text.

Loading never connects to anything and imports nothing heavy.

    path = find_config(args.config)        # --config, $WARROOM_CONFIG, ./warroom.toml, XDG
    config = load_config(path)             # raises ConfigError
    print("\\n".join(config.summary()))
"""

from __future__ import annotations

import difflib
import os
import re
import string
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from backends.errors import MASK, ConfigError, register_secret
from backends.model import Severity
from backends.playbooks import (
    ACTION_NAMESPACES,
    ACTION_SINGLE,
    BUILTIN,
    CHECK_KINDS,
    Playbook,
    Step,
)

__all__ = [
    "Amount",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "ConfigNotFound",
    "Ident",
    "Secret",
    "find_config",
    "format_duration",
    "load_config",
    "load_config_text",
    "parse_amount",
    "parse_duration",
    "parse_size",
    "quote_ident",
    "validate_ident",
]

ENV_VAR = "WARROOM_CONFIG"
CONFIG_NAME = "warroom.toml"

# ---------------------------------------------------------------------------
# Value types
# ---------------------------------------------------------------------------


class Secret:
    """A secret string. str(), repr() and format() are masked; `.reveal()` gives the text.

    The value is registered with `register_secret` so `redact()` scrubs it from any text.
    With `url_parts=True` (DSNs, Redis and RPC URLs) only the parts of the URL that are
    secret are registered (password, token-like path segments, query values), so that
    `redact(url)` still shows `redis://127.0.0.1:6379/0` or `postgresql://app:********@host/db`.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str, *, url_parts: bool = False) -> None:
        self._value = str(value)
        if _URL_RE.match(self._value):
            _register_url_parts(self._value)
        if not url_parts:
            register_secret(self._value)

    def reveal(self) -> str:
        return self._value

    def display(self) -> str:
        """A safe label: a URL's scheme://host[:port] (no user, password, path or query), else the mask."""
        m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^@/\s]*@)?([^/?#\s]*)", self._value)
        if m and m.group(2):
            return f"{m.group(1)}{m.group(2)}"
        return MASK

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):  # pickling keeps the value (process pools); never printed
        return (Secret, (self._value,))


_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_IDENT_PART = r"[A-Za-z_][A-Za-z0-9_]*"
IDENT_RE = re.compile(rf"^{_IDENT_PART}(?:\.{_IDENT_PART})?$")


class Ident(str):
    """A validated SQL identifier (`name` or `schema.name`). `.quoted` is safe to splice into SQL."""

    __slots__ = ()

    @property
    def quoted(self) -> str:
        return quote_ident(self)


def validate_ident(name: str) -> Ident:
    if not isinstance(name, str) or not IDENT_RE.match(name):
        raise ValueError(
            f"invalid SQL identifier {name!r} (expected ^[A-Za-z_][A-Za-z0-9_]*$, optionally schema.table)"
        )
    return Ident(name)


def quote_ident(name: str, *, allow_schema: bool = True) -> str:
    """`schema.table` -> `"schema"."table"`; raises ValueError for anything not an identifier."""
    validate_ident(name)
    if not allow_schema and "." in name:
        raise ValueError(f"invalid SQL identifier {name!r} (expected ^[A-Za-z_][A-Za-z0-9_]*$, no schema)")
    return ".".join(f'"{part}"' for part in name.split("."))


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")


def parse_duration(value: Any) -> float:
    """'500ms', '10s', '5m', '2h', '1d', '1h30m' or a number of seconds -> seconds (float)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}")
    text = value.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    compact = text.replace(" ", "")
    if not compact:
        raise ValueError("invalid duration ''")
    for m in _DURATION_RE.finditer(compact):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(compact):
        raise ValueError(f"invalid duration {value!r}")
    return total


def format_duration(seconds: float) -> str:
    """Short human text for a duration: 0.5s -> '500ms', 600 -> '10m', 5400 -> '1h30m'."""
    if seconds < 1 and seconds > 0:
        return f"{round(seconds * 1000)}ms"
    s = round(seconds)
    if s == 0:
        return "0s"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out += f"{s // size}{unit}"
            s %= size
    return out


@dataclass(frozen=True, slots=True)
class Amount:
    """A token amount in the smallest unit, with its symbol and decimals ('5 ether' -> 5e18 wei)."""

    value: int
    symbol: str = ""
    decimals: int = 0

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value

    def __str__(self) -> str:
        if not self.symbol:
            return str(self.value)
        whole = Decimal(self.value) / (Decimal(10) ** self.decimals)
        text = format(whole.normalize(), "f") if self.decimals else str(self.value)
        return f"{text} {self.symbol}"


@dataclass(frozen=True, slots=True)
class TokenAmount:
    """A minimum in whole tokens of an ERC-20 ('1000 USDC') whose decimals are read from the
    token (`decimals()`) when the balance does not configure them: scaled once they are known."""

    units: Decimal
    symbol: str

    def scaled(self, decimals: int) -> int:
        """In the token's smallest unit (rounded up: a fraction below the unit still counts)."""
        value = self.units * (Decimal(10) ** decimals)
        return int(value.to_integral_value(rounding="ROUND_CEILING"))

    def __str__(self) -> str:
        return f"{format(self.units.normalize(), 'f')} {self.symbol}"


# unit -> (symbol, decimals of the symbol, decimals this unit represents)
_AMOUNT_UNITS: dict[str, tuple[str, int, int]] = {
    "ether": ("ETH", 18, 18),
    "eth": ("ETH", 18, 18),
    "gwei": ("ETH", 18, 9),
    "wei": ("ETH", 18, 0),
    "gas": ("GAS", 8, 8),
    "neo": ("NEO", 0, 0),
}
_AMOUNT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)?\s*$")


def parse_amount(value: Any) -> Amount:
    """'5 ether', '0.5 gwei', '1000 wei', '12.5 GAS', '3 NEO' or an integer (smallest unit)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid amount {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid amount {value!r}: negative")
        return Amount(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid amount {value!r}")
    m = _AMOUNT_RE.match(value)
    if not m:
        raise ValueError(f"invalid amount {value!r}")
    number, unit = m.group(1), m.group(2)
    if unit is None:
        if "." in number:
            raise ValueError(f"invalid amount {value!r}: a plain number is the smallest unit and must be whole")
        return Amount(int(number))
    spec = _AMOUNT_UNITS.get(unit.lower())
    if spec is None:
        raise ValueError(f"invalid amount {value!r}: unknown unit {unit!r}")
    symbol, decimals, unit_decimals = spec
    try:
        scaled = Decimal(number) * (Decimal(10) ** unit_decimals)
    except InvalidOperation:
        raise ValueError(f"invalid amount {value!r}") from None
    if scaled != scaled.to_integral_value():
        raise ValueError(f"invalid amount {value!r}: more decimals than {unit} allows")
    return Amount(int(scaled), symbol, decimals)


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3, "t": 1024**4,
               "tb": 1024**4, "tib": 1024**4}


def parse_size(value: Any) -> int:
    """'500MB', '2 GB', '512kb' or an integer number of bytes -> bytes (1 MB = 1024*1024, as Redis)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value!r}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"invalid size {value!r}")
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"invalid size {value!r}")
    return int(Decimal(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


# ---------------------------------------------------------------------------
# Models (attribute names = TOML key names)
# ---------------------------------------------------------------------------

# The console's themes and their aliases, as registered by the `themes` package (a backend
# must not import it: it is the console's; tests/test_config.py checks that they match).
THEMES = ("dark", "light", "high-contrast", "colorblind")
THEME_ALIASES = {"default": "dark", "hc": "high-contrast", "colourblind": "colorblind", "cb": "colorblind",
                 "color-blind": "colorblind", "colour-blind": "colorblind"}


def _default_state_dir() -> Path:
    try:
        import platformdirs

        return Path(platformdirs.user_state_dir("warroom"))
    except Exception:  # pragma: no cover - platformdirs is a dependency
        return Path("~/.local/state/warroom").expanduser()


@dataclass(frozen=True, slots=True, kw_only=True)
class WarroomConfig:
    name: str = "warroom"
    environment: str = ""
    refresh: float = 2.0
    timeout: float = 5.0
    operator: str = ""
    audit_path: Path | None = None  # filled at load: state_dir / "audit.jsonl" unless given
    state_dir: Path | None = None  # filled at load: platformdirs.user_state_dir("warroom") unless given
    read_only: bool = False
    theme: str = "dark"
    log_buffer: int = 10_000  # log lines kept in memory (the hub's buffer and the Logs pane)

    @property
    def production(self) -> bool:
        return self.environment.lower() in ("production", "prod")


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresConfig:
    name: str
    dsn: Secret
    pool_max: int = 2
    timeout: float = 3.0
    interval: float = 5.0
    long_query_after: float = 60.0
    terminate_after: float = 300.0
    warn_connections: int = 50
    shared: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisConfig:
    name: str
    url: Secret
    timeout: float = 2.0
    interval: float = 2.0
    max_memory: int = 500 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractConfig:
    name: str
    address: str
    abi: Path | None = None
    pausable: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceConfig:
    name: str
    address: str
    # the native coin: an Amount; a token: an Amount (smallest unit, or whole tokens scaled by
    # configured decimals) or a TokenAmount (whole tokens, scaled by the decimals() the token reports)
    minimum: Amount | TokenAmount | None = None
    token: str | None = None  # an ERC-20: a 0x address or a [[chain.X.contracts]] name; None: the native coin
    # native coin: from `symbol`, else minimum's unit, else ETH (evm). A token: from `symbol`, else
    # minimum's unit, else None (read `symbol()` from the token)
    symbol: str | None = "ETH"
    decimals: int | None = 18  # a token without `decimals`: None (read `decimals()` from the token)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainConfig:
    name: str
    kind: str = "evm"  # evm | jsonrpc
    chain_id: int | None = None
    endpoints: tuple[Secret, ...] = ()
    failover: bool = True
    failover_after: int = 1  # consecutive failures of the active endpoint before switching
    max_lag: int = 5
    max_head_age: float = 60.0
    confirmations: int = 65
    getlogs_chunk: int = 2000
    timeout: float = 5.0
    interval: float = 5.0
    head_method: str = "eth_blockNumber"
    hash_method: str | None = None  # jsonrpc: e.g. "getblockhash"
    version_method: str | None = None  # jsonrpc: e.g. "getversion"
    head_offset: int = 0  # added to head_method's result (Neo getblockcount = height + 1 -> -1)
    signer_env: str | None = None
    keystore: Path | None = None
    contracts: tuple[ContractConfig, ...] = ()
    balances: tuple[BalanceConfig, ...] = ()

    def contract(self, name: str) -> ContractConfig | None:
        return next((c for c in self.contracts if c.name == name), None)


SERVICE_ROLES = ("api", "events", "worker", "listener", "indexer", "postgres", "redis", "other")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    name: str
    kind: str  # docker | process | command | http
    compose_project: str | None = None
    compose_service: str | None = None
    container: str | None = None
    match: re.Pattern[str] | None = None
    status_command: str | None = None  # kind=command: a [[commands]] name whose exit code is health
    depends_on: tuple[str, ...] = ()
    health_url: str | None = None
    latency_warn: float = 0.5
    logs: str | None = None  # "docker" | a [[commands]] name | a path/glob (made absolute at load)
    silence_after: float | None = None
    restart: str | None = None  # "docker" | a [[commands]] name
    restart_command: str | None = None  # a [[commands]] name
    interval: float | None = None
    timeout: float | None = None
    role: str | None = None  # api | events | worker | listener | indexer | postgres | redis | other (guessed)
    playbook: str | None = None  # playbook for this service's findings

    @property
    def restart_via(self) -> str | None:
        """'docker', a [[commands]] name, or None (no restart configured)."""
        return self.restart_command or self.restart


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandConfig:
    name: str
    argv: tuple[str, ...]
    timeout: float = 30.0
    cwd: Path | None = None

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(_placeholders(self.argv))


@dataclass(frozen=True, slots=True, kw_only=True)
class DockerConfig:
    host: str = ""
    compose_command: str = "auto"  # auto | docker compose | docker-compose
    stats: bool = False
    stats_interval: float = 30.0
    timeout: float = 5.0
    interval: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HostConfig:
    cpu_warn: float = 80.0
    cpu_for: float = 300.0
    memory_warn: float = 85.0
    disk_warn: float = 80.0
    disks: tuple[str, ...] = ("/",)
    interval: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    name: str
    redis: str
    key: str
    type: str = "list"  # list | stream | zset
    thresholds: tuple[int, int, int] = (1000, 10000, 50000)
    timestamp_field: str | None = None
    dead_letter: str | None = None
    interval: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakersConfig:
    postgres: str | None = None
    table: Ident | None = None
    id_column: Ident = Ident("trigger_id")
    state_column: Ident = Ident("state")
    failures_column: Ident = Ident("failure_count")
    last_failure_column: Ident | None = Ident("last_failure_at")
    opened_at_column: Ident | None = None
    reset_timeout: float = 60.0
    redis: str | None = None
    redis_namespaces: tuple[str, ...] = ()
    interval: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OrdersCursorConfig:
    table: Ident
    key_column: Ident = Ident("name")
    key: str = "escrow"
    block_column: Ident = Ident("last_block")
    updated_column: Ident | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OrdersConfig:
    postgres: str
    table: Ident = Ident("orders")
    id_column: Ident = Ident("id")
    id_pattern: re.Pattern[str] = field(default_factory=lambda: re.compile(r"^[A-Za-z0-9_-]{1,128}$"))
    state_column: Ident = Ident("state")
    created_column: Ident = Ident("created_at")
    updated_column: Ident | None = Ident("updated_at")
    notes_column: Ident | None = None
    block_column: Ident | None = None
    tx_column: Ident | None = None
    pending_states: tuple[str, ...] = ("PENDING",)
    target_states: tuple[str, ...] = ("SETTLED", "FAILED", "CANCELLED")
    settled_state: str = "SETTLED"  # the target state when the release event is on chain
    start_block: int = 0  # first block to search for release events
    stuck_after: float = 600.0
    show: int = 50
    chain: str | None = None
    contract: str | None = None
    event: str = "EscrowReleased"
    id_encoding: str = "bytes32-utf8"  # bytes32-utf8 | uint256 | keccak
    bulk_batch: int = 500
    interval: float | None = None
    cursor: OrdersCursorConfig | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    name: str
    path: str | None = None  # file or glob; relative paths are resolved against the config file's dir
    container: str | None = None
    command: str | None = None  # a [[commands]] name
    service: str | None = None
    silence_after: float | None = None
    success: tuple[str, ...] = ()
    success_silence: float | None = None  # lines but no success marker this long -> finding (default silence_after)
    success_playbook: str | None = None  # that finding's playbook (default events-not-processed)
    playbook: str | None = None  # playbook when the source falls silent
    since: float | None = None  # history read at start (default 5m)
    error_spike: int | None = None  # errors per minute that make a finding (default 20)
    max_line: int | None = None  # characters of a line kept (default 4096)


@dataclass(frozen=True, slots=True, kw_only=True)
class LogPatternConfig:
    pattern: re.Pattern[str]
    severity: Severity = Severity.P2
    name: str | None = None
    playbook: str | None = None
    sources: tuple[str, ...] = ()  # [[logs]] / [[services]] names it applies to; empty = all
    window: float | None = None  # counting window (default 5m)
    min_count: int | None = None  # matches within the window before a finding (default 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckConfig:
    name: str
    kind: str  # http | jsonrpc | sql | command | metrics
    url: Secret | None = None
    expect_status: int = 200
    expect: str | None = None  # substring the body must contain
    latency_warn: float = 0.5
    timeout: float | None = None
    interval: float | None = None
    severity: Severity = Severity.P2
    method: str | None = None  # jsonrpc
    params: tuple[Any, ...] = ()
    postgres: str | None = None  # sql
    query: str | None = None
    command: str | None = None  # command: a [[commands]] name
    metric: str | None = None  # metrics
    warn_above: float | None = None
    crit_above: float | None = None
    warn_below: float | None = None  # e.g. a gas balance read by a command check
    crit_below: float | None = None
    path: str | None = None  # command checks: where the value is in the JSON output ("stack.0.value")
    playbook: str | None = None  # playbook of this check's findings
    headers: Mapping[str, str | Secret] = field(default_factory=dict)


ACTION_PARAM_TYPES = ("path", "identifier", "string", "text", "int", "order_id", "service", "duration")


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionConfig:
    name: str
    argv: tuple[str, ...]
    key: str | None = None
    description: str = ""
    danger: str = "confirm"  # safe | confirm | typed
    scope: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class EscalationLevel:
    name: str
    after: float = 0.0
    contacts: tuple[str, ...] = ()
    channels: tuple[Secret, ...] = ()
    provide: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PagerDutyConfig:
    routing_key: Secret
    url: str = "https://events.pagerduty.com/v2/enqueue"


@dataclass(frozen=True, slots=True, kw_only=True)
class EscalationConfig:
    ack_timeout: float = 1800.0
    levels: tuple[EscalationLevel, ...] = ()
    pagerduty: PagerDutyConfig | None = None


DEFAULT_RESPONSE = {Severity.P0: 900.0, Severity.P1: 3600.0, Severity.P2: 14400.0, Severity.P3: 86400.0}
DEFAULT_ROLES = ("Incident Commander", "Technical Lead", "Communications Lead")


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentConfig:
    roles: tuple[str, ...] = DEFAULT_ROLES
    response: Mapping[Severity, float] = field(default_factory=lambda: dict(DEFAULT_RESPONSE))


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
    actions: tuple[ActionConfig, ...] = ()
    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    incident: IncidentConfig = field(default_factory=IncidentConfig)
    playbooks: tuple[Playbook, ...] = ()  # [[playbooks]]: added to the built-ins, same id replaces one

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
            lines.append(f"breakers: redis.{b.redis} namespaces {', '.join(b.redis_namespaces)}")
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
        lines.append(f"actions: {names(f'{a.name} [{a.danger}]' for a in self.actions)}")
        e = self.escalation
        lines.append(
            f"escalation: {_plural(len(e.levels), 'level')}"
            + (f" ({', '.join(x.name for x in e.levels)})" if e.levels else "")
            + f"; ack timeout {format_duration(e.ack_timeout)}; pagerduty "
            + ("configured" if e.pagerduty else "not configured")
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


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class ConfigErrors(ConfigError):
    """Several configuration errors at once. `.errors` lists them; str() shows them all."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.message, file=first.file, line=first.line, key=first.key,
                         expected=first.expected)

    def render(self) -> str:
        if len(self.errors) == 1:
            return self.errors[0].render()
        return f"{len(self.errors)} errors in configuration:\n" + "\n".join(
            e.render() for e in self.errors
        )


class ConfigNotFound(ConfigError):
    """No config file in any of the places looked at (the message lists them)."""

    def render(self) -> str:
        return self.message + (f" (expected {self.expected})" if self.expected else "")


# ---------------------------------------------------------------------------
# Line locator: dotted key paths -> line numbers (tomllib keeps none)
# ---------------------------------------------------------------------------

Path_ = tuple[str | int, ...]

_BARE = r"[A-Za-z0-9_-]+"
_BASIC = r'"(?:[^"\\]|\\.)*"'
_LITERAL = r"'[^']*'"
_KEY = rf"(?:{_BARE}|{_BASIC}|{_LITERAL})"
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER_RE = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?")
_KEYVAL_RE = re.compile(rf"^\s*({_DOTTED})\s*=")
_KEY_TOKEN = re.compile(rf"{_BARE}|{_BASIC}|{_LITERAL}")


def _split_dotted(text: str) -> list[str]:
    out = []
    for tok in _KEY_TOKEN.findall(text):
        if tok.startswith('"'):
            try:
                tok = tomllib.loads(f"k = {tok}")["k"]
            except tomllib.TOMLDecodeError:
                tok = tok[1:-1]
        elif tok.startswith("'"):
            tok = tok[1:-1]
        out.append(tok)
    return out


def render_path(path: Path_) -> str:
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            text = seg if re.fullmatch(_BARE, seg) else f'"{seg}"'
            out += ("." if out else "") + text
    return out


class LineLocator:
    """Maps key paths (('services', 1, 'match')) to 1-based line numbers by scanning the text.

    Good enough for tables, arrays of tables, dotted keys and multi-line arrays/strings;
    an element of an array maps to the line it starts on (`steps = [\n  { text = ... },\n]`),
    keys inside an inline table to the line they are on.
    """

    def __init__(self, text: str) -> None:
        self.lines: dict[Path_, int] = {}
        self._scan(text)

    def line_of(self, path: Path_) -> int | None:
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return None

    def _note(self, path: Path_, line: int) -> None:
        self.lines.setdefault(path, line)

    def _scan(self, text: str) -> None:
        aot: dict[Path_, int] = {}
        current: Path_ = ()
        value: _ValueScan | None = None  # a value still open (multi-line array / string)
        for no, line in enumerate(text.splitlines(), start=1):
            if value is not None and value.open:
                value.feed(line, no)
                continue
            m = _HEADER_RE.match(line)
            if m and not _KEYVAL_RE.match(line):
                segs = _split_dotted(m.group(2))
                is_aot = m.group(1) == "[["
                resolved: list[str | int] = []
                for i, seg in enumerate(segs):
                    resolved.append(seg)
                    last = i == len(segs) - 1
                    key = tuple(resolved)
                    if not last and key in aot:
                        resolved.append(aot[key] - 1)
                    elif last and is_aot:
                        count = aot.get(key, 0)
                        aot[key] = count + 1
                        self._note(key, no)
                        resolved.append(count)
                    if not last:
                        self._note(tuple(resolved), no)
                current = tuple(resolved)
                self._note(current, no)
                continue
            m = _KEYVAL_RE.match(line)
            if m:
                segs = _split_dotted(m.group(1))
                for i in range(1, len(segs) + 1):
                    self._note(current + tuple(segs[:i]), no)
                value = _ValueScan(self, current + tuple(segs))
                value.feed(line[m.end():], no)


_INLINE_KEY_RE = re.compile(rf"\s*({_DOTTED})\s*=")


class _ValueScan:
    """Follows one value across lines: bracket nesting, open multi-line strings, and the
    line each array element starts on and each inline-table key is on."""

    def __init__(self, loc: LineLocator, path: Path_) -> None:
        self.loc = loc
        self.path = path
        # frames: ["a", path, element index, element started] or ["t", path, key path or None]
        self.stack: list[list[Any]] = []
        self.ml: str | None = None  # open multi-line string delimiter

    @property
    def open(self) -> bool:
        return bool(self.stack) or self.ml is not None

    def _value_path(self) -> Path_ | None:
        if not self.stack:
            return self.path
        top = self.stack[-1]
        return top[1] + (top[2],) if top[0] == "a" else top[2]

    def feed(self, text: str, no: int) -> None:
        i, n = 0, len(text)
        while i < n:
            if self.ml is not None:
                j = text.find(self.ml, i)
                if j < 0:
                    return
                i, self.ml = j + 3, None
                continue
            c = text[i]
            if c in " \t\r":
                i += 1
                continue
            if c == "#":
                return
            top = self.stack[-1] if self.stack else None
            if top is not None and top[0] == "t" and top[2] is None:
                m = _INLINE_KEY_RE.match(text, i)
                if m:
                    top[2] = top[1] + tuple(_split_dotted(m.group(1)))
                    for k in range(len(top[1]) + 1, len(top[2]) + 1):
                        self.loc._note(top[2][:k], no)
                    i = m.end()
                    continue
            if top is not None and top[0] == "a" and not top[3] and c not in ",]":
                top[3] = True
                self.loc._note(top[1] + (top[2],), no)
            if text.startswith('"""', i) or text.startswith("'''", i):
                self.ml = text[i:i + 3]
                i += 3
            elif c == '"':
                i += 1
                while i < n and text[i] != '"':
                    i += 2 if text[i] == "\\" else 1
                i += 1
            elif c == "'":
                j = text.find("'", i + 1)
                i = n if j < 0 else j + 1
            elif c in "[{":
                vp = self._value_path()
                if vp is None:  # malformed (tomllib already accepted it): follow nesting only
                    vp = self.path + ("?",)
                self.stack.append(["a", vp, 0, False] if c == "[" else ["t", vp, None])
                i += 1
            elif c in "]}":
                if self.stack:
                    self.stack.pop()
                i += 1
            elif c == ",":
                if top is not None and top[0] == "a":
                    top[2] += 1
                    top[3] = False
                elif top is not None:
                    top[2] = None
                i += 1
            else:
                i += 1


# ---------------------------------------------------------------------------
# Interpolation
# ---------------------------------------------------------------------------

_VAR_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}|\$\{([^}]*)\}?")


class _Bad:
    """Marks a value that already produced an error (so it is not reported twice)."""

    _instance: _Bad | None = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<invalid>"


BAD: Any = _Bad()


class _Invalid(Exception):
    def __init__(self, message: str, expected: str | None = None, sub: Path_ = ()) -> None:
        super().__init__(message)
        self.message = message
        self.expected = expected
        self.sub = sub


def _interpolate(value: str, env: Mapping[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        whole = m.group(0)
        if whole == "$${":
            return "${"
        if m.group(3) is not None or m.group(1) is None:
            raise _Invalid(
                f"bad variable reference {whole!r}",
                "${NAME} or ${NAME:-default} with NAME matching [A-Za-z_][A-Za-z0-9_]*",
            )
        name, default = m.group(1), m.group(2)
        if name in env and (env[name] != "" or default is None):
            if _SECRET_NAME.search(name) or name.endswith(("_KEY", "_PASS", "_PW")):
                register_secret(env[name])  # e.g. ${DB_PASSWORD} used in a key that is not a Secret
            return env[name]
        if default is not None:
            return default
        raise _Invalid(
            f"environment variable {name} is not set",
            f"{name} to be set in the environment, or a default: ${{{name}:-value}}",
        )

    return _VAR_RE.sub(repl, value)


# ---------------------------------------------------------------------------
# The loader
# ---------------------------------------------------------------------------

_REQUIRED: Any = object()
_SECTIONS = ("warroom", "keys", "postgres", "redis", "chain", "services", "commands", "docker", "host",
             "queues", "breakers", "orders", "logs", "log_patterns", "checks", "actions", "escalation",
             "incident", "playbooks")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ADDRESS_RE = re.compile(r"^(0x[0-9a-fA-F]{40}|N[1-9A-HJ-NP-Za-km-z]{33})$")
_ADDRESS_EXPECTED = "a 0x address (40 hex digits) or a Neo N3 address (N...)"
_SECRET_NAME = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|private[_-]?key|routing[_-]?key|auth)")


def _tname(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(v), type(v).__name__)


class _Loader:
    def __init__(self, text: str, filename: str, base_dir: Path, env: Mapping[str, str]) -> None:
        self.text = text
        self.filename = filename
        self.base_dir = base_dir
        self.env = env
        self.errors: list[ConfigError] = []
        self.locator = LineLocator(text)

    # -- errors ------------------------------------------------------------
    def error(self, path: Path_, message: str, expected: str | None = None) -> None:
        self.errors.append(
            ConfigError(message, file=self.filename, line=self.locator.line_of(path),
                        key=render_path(path) or None, expected=expected)
        )

    # -- interpolation over the whole tree -----------------------------------
    def interpolate(self, value: Any, path: Path_) -> Any:
        if isinstance(value, str):
            if "$" not in value:
                return value
            try:
                return _interpolate(value, self.env)
            except _Invalid as e:
                self.error(path, e.message, e.expected)
                return BAD
        if isinstance(value, dict):
            return {k: self.interpolate(v, path + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.interpolate(v, path + (i,)) for i, v in enumerate(value)]
        return value

    def table(self, data: Any, path: Path_) -> _Table | None:
        if data is BAD:
            return None
        if not isinstance(data, dict):
            self.error(path, f"expected a table, got {_tname(data)}", f"a [{render_path(path)}] table")
            return None
        return _Table(self, data, path)

    def array_of_tables(self, data: Any, path: Path_) -> list[_Table]:
        if data is None:
            return []
        if not isinstance(data, list):
            self.error(path, f"expected an array of tables, got {_tname(data)}",
                       f"[[{render_path(path)}]] entries")
            return []
        out = []
        for i, item in enumerate(data):
            t = self.table(item, path + (i,))
            if t is not None:
                out.append(t)
        return out

    def named_tables(self, data: Any, path: Path_) -> list[tuple[str, _Table]]:
        if data is None:
            return []
        head = render_path(path)
        if not isinstance(data, dict):
            self.error(path, f"expected named tables, got {_tname(data)}", f"[{head}.NAME] tables")
            return []
        out = []
        for name, item in data.items():
            if not _NAME_RE.match(name):
                self.error(path + (name,), f"bad name {name!r}", "letters, digits, '_', '-' or '.'")
                continue
            if not isinstance(item, dict):
                self.error(path + (name,), f"expected a table [{head}.{name}], got {_tname(item)}",
                           f"named tables like [{head}.main]")
                continue
            out.append((name, _Table(self, item, path + (name,))))
        return out

    def resolve_glob(self, text: str) -> str:
        """A file path or glob, relative to the config file's directory."""
        p = os.path.expanduser(text)
        return p if os.path.isabs(p) else str(self.base_dir / p)

    def resolve_path(self, text: str) -> Path:
        p = Path(text).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)


class _Table:
    def __init__(self, ld: _Loader, data: dict[str, Any], path: Path_) -> None:
        self.ld = ld
        self.data = data
        self.path = path
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        self.used.add(key)  # a key the parser asks about is a known key
        return key in self.data

    def raw(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def take(self, key: str, conv: Callable[[Any], Any], default: Any = _REQUIRED) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                exp = getattr(conv, "expected", None)
                self.ld.error(self.path, f"missing required key {key!r}", exp)
                return BAD
            return default
        value = self.data[key]
        if value is BAD:
            return BAD
        try:
            return conv(value)
        except _SkipBad:
            return BAD
        except _Invalid as e:
            self.ld.error(self.path + (key,) + e.sub, e.message, e.expected)
            return BAD

    def done(self) -> None:
        known = sorted(self.used)
        for key in self.data:
            if key not in self.used:
                hint = difflib.get_close_matches(key, known, n=1)
                msg = f"unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                self.ld.error(self.path + (key,), msg, "one of: " + ", ".join(known) if known else "no keys here")


# -- converters ----------------------------------------------------------------
# Each takes the (interpolated) TOML value and returns the model value or raises _Invalid.


def _conv(expected: str):
    def deco(fn):
        fn.expected = expected
        return fn

    return deco


def c_str(*, pattern: re.Pattern[str] | None = None, choices: Iterable[str] | None = None,
          empty: bool = False, expected: str | None = None):
    choices = tuple(choices) if choices else None
    exp = expected or (" | ".join(choices) if choices else "a string")

    @_conv(exp)
    def conv(v: Any) -> str:
        if not isinstance(v, str):
            raise _Invalid(f"expected a string, got {_tname(v)}", exp)
        if not v and not empty:
            raise _Invalid("must not be empty", exp)
        if choices and v not in choices:
            raise _Invalid(f"invalid value {v!r}", "one of: " + ", ".join(choices))
        if pattern is not None and not pattern.match(v):
            raise _Invalid(f"invalid value {v!r}", exp)
        return v

    return conv


def c_opt(conv):
    """'' (e.g. an unset ${VAR:-}) means None."""

    @_conv(getattr(conv, "expected", None) or "a value or an empty string")
    def opt(v: Any) -> Any:
        if v == "":
            return None
        return conv(v)

    return opt


def c_int(*, min: int | None = None, max: int | None = None):
    exp = "an integer" + (f" >= {min}" if min is not None else "") + (f" <= {max}" if max is not None else "")

    @_conv(exp)
    def conv(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, str) and re.fullmatch(r"\s*-?\d+\s*", v):
                v = int(v)  # from an interpolated ${VAR}
            else:
                raise _Invalid(f"expected an integer, got {_tname(v)} {v!r}", exp)
        if (min is not None and v < min) or (max is not None and v > max):
            raise _Invalid(f"{v} is out of range", exp)
        return v

    return conv


def c_number(*, min: float | None = None, max: float | None = None):
    exp = "a number" + (f" >= {min:g}" if min is not None else "") + (f" <= {max:g}" if max is not None else "")

    @_conv(exp)
    def conv(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            try:
                v = float(v) if isinstance(v, str) else None
            except ValueError:
                v = None
            if v is None:
                raise _Invalid("expected a number", exp)
        if (min is not None and v < min) or (max is not None and v > max):
            raise _Invalid(f"{v:g} is out of range", exp)
        return float(v)

    return conv


@_conv("true or false")
def c_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false", "1", "0", "yes", "no"):
        return v.lower() in ("true", "1", "yes")
    raise _Invalid(f"expected a boolean, got {_tname(v)} {v!r}", "true or false")


_DURATION_EXPECTED = 'a duration like "500ms", "10s", "5m", "2h", "1d" or a number of seconds'


@_conv(_DURATION_EXPECTED)
def c_duration(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise _Invalid(f"expected a duration, got {_tname(v)}", _DURATION_EXPECTED)
    try:
        return parse_duration(v)
    except ValueError as e:
        raise _Invalid(str(e), _DURATION_EXPECTED) from None


_AMOUNT_EXPECTED = 'an amount like "5 ether", "0.5 gwei", "1000 wei", "12.5 GAS", "3 NEO" or an integer'


@_conv(_AMOUNT_EXPECTED)
def c_amount(v: Any) -> Amount:
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise _Invalid(f"expected an amount, got {_tname(v)}", _AMOUNT_EXPECTED)
    try:
        return parse_amount(v)
    except ValueError as e:
        raise _Invalid(str(e), _AMOUNT_EXPECTED) from None


_TOKEN_AMOUNT_EXPECTED = ('an amount of the token like "1000 USDC" (its symbol, whole tokens) '
                          'or an integer in its smallest unit')
_TOKEN_AMOUNT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z][A-Za-z0-9]{0,15})\s*$")


@_conv(_TOKEN_AMOUNT_EXPECTED)
def c_token_amount(v: Any) -> Amount | TokenAmount:
    """A token balance's minimum: an integer (smallest unit) or "N SYMBOL" in whole tokens."""
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise _Invalid(f"expected an amount, got {_tname(v)}", _TOKEN_AMOUNT_EXPECTED)
    if isinstance(v, int) or re.fullmatch(r"\s*\d+\s*", v):
        n = int(v)
        if n < 0:
            raise _Invalid(f"invalid amount {v!r}: negative", _TOKEN_AMOUNT_EXPECTED)
        return Amount(n)
    m = _TOKEN_AMOUNT_RE.match(v)
    if not m:
        raise _Invalid(f"invalid amount {v!r}", _TOKEN_AMOUNT_EXPECTED)
    unit = m.group(2)
    if unit.lower() in ("ether", "eth", "gwei", "wei"):  # token balances are on EVM chains only
        raise _Invalid(f"minimum {v!r} is in ETH, the native coin, but this balance is of a token",
                       _TOKEN_AMOUNT_EXPECTED)
    return TokenAmount(Decimal(m.group(1)), unit.upper() if unit.isupper() else unit)


_SIZE_EXPECTED = 'a size like "500MB", "2GB", "512KB" or a number of bytes'


@_conv(_SIZE_EXPECTED)
def c_size(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise _Invalid(f"expected a size, got {_tname(v)}", _SIZE_EXPECTED)
    try:
        return parse_size(v)
    except ValueError as e:
        raise _Invalid(str(e), _SIZE_EXPECTED) from None


_IDENT_EXPECTED = "an SQL identifier matching ^[A-Za-z_][A-Za-z0-9_]*$, optionally schema.table"


@_conv(_IDENT_EXPECTED)
def c_ident(v: Any) -> Ident:
    if not isinstance(v, str):
        raise _Invalid(f"expected a string, got {_tname(v)}", _IDENT_EXPECTED)
    if not IDENT_RE.match(v):
        raise _Invalid(f"invalid SQL identifier {v!r}", _IDENT_EXPECTED)
    return Ident(v)


@_conv("a regular expression")
def c_regex(v: Any) -> re.Pattern[str]:
    if not isinstance(v, str):
        raise _Invalid(f"expected a string, got {_tname(v)}", "a regular expression")
    try:
        return re.compile(v)
    except re.error as e:
        raise _Invalid(f"invalid regular expression {v!r}: {e}", "a valid Python regular expression") from None


@_conv("P0, P1, P2 or P3")
def c_severity(v: Any) -> Severity:
    if not isinstance(v, str):
        raise _Invalid(f"expected a string, got {_tname(v)}", "P0, P1, P2 or P3")
    try:
        return Severity.parse(v)
    except ValueError:
        raise _Invalid(f"invalid severity {v!r}", "P0, P1, P2 or P3") from None


def c_secret(*, schemes: tuple[str, ...] | None = None, empty: bool = False, url_parts: bool = False):
    exp = ("a URL starting with " + " or ".join(f"{s}://" for s in schemes)) if schemes else "a string"

    @_conv(exp)
    def conv(v: Any) -> Secret:
        if not isinstance(v, str):
            raise _Invalid(f"expected a string, got {_tname(v)}", exp)
        if not v and not empty:
            raise _Invalid("must not be empty", exp)
        if v and schemes and not any(v.startswith(f"{s}://") for s in schemes):
            scheme = v.split("://", 1)[0] if "://" in v else None
            what = f"unsupported scheme {scheme!r}" if scheme else "not a URL"
            raise _Invalid(what + " (value hidden: it is a secret)", exp)
        return Secret(v, url_parts=url_parts)

    return conv


def c_list(conv, *, min_len: int = 0, drop_empty: bool = False, expected: str | None = None,
           allow_single: bool = False):
    exp = expected or f"an array of {getattr(conv, 'expected', 'values')}"

    @_conv(exp)
    def lst(v: Any) -> tuple[Any, ...]:
        if allow_single and isinstance(v, str):
            v = [v]  # a single value is a one-element list
        if not isinstance(v, list):
            raise _Invalid(f"expected an array, got {_tname(v)}", exp)
        out = []
        for i, item in enumerate(v):
            if drop_empty and item == "":
                continue
            if item is BAD:
                raise _SkipBad()  # already reported (interpolation)
            try:
                out.append(conv(item))
            except _Invalid as e:
                raise _Invalid(e.message, e.expected, (i,) + e.sub) from None
        if len(out) < min_len:
            raise _Invalid(f"needs at least {min_len} element(s)", exp)
        return tuple(out)

    return lst


class _SkipBad(_Invalid):
    def __init__(self) -> None:
        super().__init__("")


def _str_list(**kw):
    return c_list(c_str(**kw))


def c_path(ld: _Loader):
    @_conv("a file path")
    def conv(v: Any) -> Path:
        if not isinstance(v, str) or not v:
            raise _Invalid(f"expected a path, got {_tname(v)}", "a file path")
        return ld.resolve_path(v)

    return conv


def c_glob(ld: _Loader):
    @_conv("a file path or glob")
    def conv(v: Any) -> str:
        if not isinstance(v, str) or not v:
            raise _Invalid(f"expected a path, got {_tname(v)}", "a file path or glob")
        return ld.resolve_glob(v)

    return conv


def c_address(v: Any) -> str:
    if not isinstance(v, str) or not _ADDRESS_RE.match(v):
        shown = repr(v) if isinstance(v, str) else _tname(v)
        raise _Invalid(f"invalid address {shown}", _ADDRESS_EXPECTED)
    return v


c_address.expected = _ADDRESS_EXPECTED  # type: ignore[attr-defined]

_THEME_EXPECTED = (" | ".join(THEMES) + " (or an alias: "
                   + ", ".join(f"{a} = {n}" for a, n in THEME_ALIASES.items()) + ")")


@_conv(_THEME_EXPECTED)
def c_theme(v: Any) -> str:
    """A theme name or alias (any case) -> the canonical theme name."""
    if not isinstance(v, str):
        raise _Invalid(f"expected a string, got {_tname(v)}", _THEME_EXPECTED)
    key = v.strip().lower()
    key = THEME_ALIASES.get(key, key)
    if key not in THEMES:
        hint = difflib.get_close_matches(key, [*THEMES, *THEME_ALIASES], n=1)
        raise _Invalid(f"unknown theme {v!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                       _THEME_EXPECTED)
    return key


c_name = c_str(pattern=_NAME_RE, expected="a name of letters, digits, '_', '-' or '.'")
c_text = c_str()
c_env_name = c_str(pattern=_ENV_NAME_RE, expected="an environment variable name")


def c_url(*schemes: str):
    exp = "a URL starting with " + " or ".join(f"{s}://" for s in schemes)

    @_conv(exp)
    def conv(v: Any) -> str:
        if not isinstance(v, str) or not any(v.startswith(f"{s}://") for s in schemes):
            raise _Invalid(f"invalid URL {v!r}", exp)
        _register_url_password(v)
        return v

    return conv


def _register_url_password(url: str) -> None:
    m = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:([^@/\s]+)@", url)
    if m:
        register_secret(m.group(1))


def _register_url_parts(url: str) -> None:
    """Register the parts of a secret URL that libraries echo in errors: the password, token-like
    path segments (`/v2/<api key>`) and query values."""
    _register_url_password(url)
    m = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#\s]*([^?#\s]*)(?:\?([^#\s]*))?", url)
    if not m:
        return
    for seg in m.group(1).split("/"):
        if len(seg) >= 16:
            register_secret(seg)
    for pair in (m.group(2) or "").split("&"):
        value = pair.partition("=")[2]
        if len(value) >= 8:
            register_secret(value)


# -- sections --------------------------------------------------------------------


def _parse(ld: _Loader, data: dict[str, Any], path: Path | None) -> Config:
    root = _Table(ld, data, ())
    root.used.update(_SECTIONS)
    pr = c_path(ld)

    # [warroom]
    warroom = WarroomConfig()
    t = ld.table(root.raw("warroom"), ("warroom",)) if root.has("warroom") else None
    if t:
        warroom = WarroomConfig(
            name=t.take("name", c_text, "warroom"),
            environment=t.take("environment", c_str(empty=True), ""),
            refresh=t.take("refresh", c_duration, 2.0),
            timeout=t.take("timeout", c_duration, 5.0),
            operator=t.take("operator", c_str(empty=True), ""),
            audit_path=t.take("audit_path", c_opt(pr), None),
            state_dir=t.take("state_dir", c_opt(pr), None),
            read_only=t.take("read_only", c_bool, False),
            theme=t.take("theme", c_theme, "dark"),
            log_buffer=t.take("log_buffer", c_int(min=100, max=200_000), 10_000),
        )
        t.done()
    if warroom.state_dir is None or warroom.audit_path is None:
        state_dir = warroom.state_dir or _default_state_dir()
        audit = warroom.audit_path or (state_dir / "audit.jsonl" if isinstance(state_dir, Path) else None)
        warroom = _replace(warroom, state_dir=state_dir, audit_path=audit)

    # [keys]
    keys: dict[str, str] = {}
    t = ld.table(root.raw("keys"), ("keys",)) if root.has("keys") else None
    if t:
        for bid in list(t.data):
            v = t.take(bid, c_list(c_str(pattern=re.compile(r"^\S+$"), expected="a key like \"R\" or \"ctrl+r\""),
                                   min_len=1, allow_single=True, expected='a key or keys: "R", "R,ctrl+r" or ["R", "ctrl+r"]'))
            if v is BAD:
                continue
            if not re.match(r"^[a-z][a-z0-9_.-]*$", bid):
                ld.error(("keys", bid), f"bad binding id {bid!r}", "a binding id like restart or orders_bulk_fix (the help screen, ?, lists them)")
                continue
            keys[bid] = ",".join(k.strip() for item in v for k in item.split(",") if k.strip())
        t.done()

    # [postgres.NAME]
    postgres: dict[str, PostgresConfig] = {}
    for name, t in ld.named_tables(root.raw("postgres"), ("postgres",)):
        postgres[name] = PostgresConfig(
            name=name,
            dsn=t.take("dsn", c_secret(schemes=("postgresql", "postgres"), url_parts=True)),
            pool_max=t.take("pool_max", c_int(min=1, max=100), 2),
            timeout=t.take("timeout", c_duration, 3.0),
            interval=t.take("interval", c_duration, 5.0),
            long_query_after=t.take("long_query_after", c_duration, 60.0),
            terminate_after=t.take("terminate_after", c_duration, 300.0),
            warn_connections=t.take("warn_connections", c_int(min=1), 50),
            shared=t.take("shared", c_bool, False),
        )
        t.done()

    # [redis.NAME]
    redis: dict[str, RedisConfig] = {}
    for name, t in ld.named_tables(root.raw("redis"), ("redis",)):
        redis[name] = RedisConfig(
            name=name,
            url=t.take("url", c_secret(schemes=("redis", "rediss", "unix"), url_parts=True)),
            timeout=t.take("timeout", c_duration, 2.0),
            interval=t.take("interval", c_duration, 2.0),
            max_memory=t.take("max_memory", c_size, 500 * 1024 * 1024),
        )
        t.done()

    # [chain.NAME]
    chains: dict[str, ChainConfig] = {}
    for name, t in ld.named_tables(root.raw("chain"), ("chain",)):
        kind = t.take("kind", c_str(choices=("evm", "jsonrpc")), "evm")
        if kind == "jsonrpc":
            # a non-EVM chain's contract state and balances are read by command checks (neo-go)
            for sub, what in (("contracts", "contract state (paused)"), ("balances", "balances")):
                if t.has(sub):
                    raw = t.raw(sub)
                    at = ("chain", name, sub, 0) if isinstance(raw, list) and raw else ("chain", name, sub)
                    ld.error(at, f"[[chain.{name}.{sub}]] is read on EVM chains only; this chain is "
                                 f'kind = "jsonrpc"',
                             f'{what} through a [[checks]] kind = "command" entry (a [[commands]] running '
                             f"e.g. neo-go contract testinvokefunction, with path and warn_below / "
                             f"crit_below), pausing through [[actions]]; see examples/neo-n3.toml")
        contracts = []
        for ct in (ld.array_of_tables(t.raw("contracts"), ("chain", name, "contracts"))
                   if kind != "jsonrpc" else ()):
            contracts.append(ContractConfig(
                name=ct.take("name", c_name),
                address=ct.take("address", c_address),
                abi=ct.take("abi", c_opt(pr), None),
                pausable=ct.take("pausable", c_bool, False),
            ))
            ct.done()
        balances = []
        native = ("GAS", 8) if kind == "jsonrpc" else ("ETH", 18)
        contract_names = [c.name for c in contracts]
        for bt in (ld.array_of_tables(t.raw("balances"), ("chain", name, "balances"))
                   if kind != "jsonrpc" else ()):
            token = bt.take("token", c_opt(c_str(
                pattern=re.compile(r"^(0x[0-9a-fA-F]{40}|[A-Za-z0-9_.-]+)$"),
                expected="an ERC-20 contract: a 0x address or a [[chain.X.contracts]] name")), None)
            if token and token is not BAD and not token.startswith("0x") and token not in contract_names:
                hint = difflib.get_close_matches(token, contract_names, n=1)
                ld.error(bt.path + ("token",), f"token {token!r} is not a 0x address nor a contract of chain "
                                               f"{name}" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                         f"a 0x address or the name of a [[chain.{name}.contracts]] entry"
                         + (f" ({', '.join(contract_names)})" if contract_names else ""))
            is_token = bool(token) and token is not BAD
            minimum = bt.take("minimum", c_opt(c_token_amount if is_token else c_amount), None)
            symbol = bt.take("symbol", c_opt(c_str(pattern=re.compile(r"^[A-Za-z0-9]{1,16}$"),
                                                   expected="a token symbol like ETH or GAS")), None)
            decimals = bt.take("decimals", c_opt(c_int(min=0, max=36)), None)
            decimals = decimals if isinstance(decimals, int) else None
            if is_token:
                unit_symbol = minimum.symbol if isinstance(minimum, TokenAmount) else None
                if unit_symbol and symbol and symbol.upper() != unit_symbol.upper():
                    ld.error(bt.path + ("minimum",), f"minimum is in {unit_symbol} but symbol is {symbol}",
                             f"a minimum in {symbol}, or an integer in its smallest unit")
                symbol = symbol or unit_symbol  # None: symbol() read from the token
                if isinstance(minimum, TokenAmount) and decimals is not None:
                    minimum = Amount(minimum.scaled(decimals), symbol or minimum.symbol, decimals)
                elif isinstance(minimum, Amount) and decimals is not None and symbol:
                    minimum = Amount(minimum.value, symbol, decimals)
            else:
                unit = minimum if isinstance(minimum, Amount) and minimum.symbol else None
                if unit and symbol and symbol.upper() != unit.symbol:
                    ld.error(bt.path + ("minimum",), f"minimum is in {unit.symbol} but symbol is {symbol}",
                             f"a minimum in {symbol}, or an integer in its smallest unit")
                symbol = symbol or (unit.symbol if unit else native[0])
                decimals = decimals if decimals is not None else (unit.decimals if unit else native[1])
            balances.append(BalanceConfig(
                name=bt.take("name", c_name),
                address=bt.take("address", c_address),
                minimum=minimum,
                token=token if is_token else None,
                symbol=symbol,
                decimals=decimals,
            ))
            bt.done()
        chains[name] = ChainConfig(
            name=name,
            kind=kind,
            chain_id=t.take("chain_id", c_int(min=0), None),
            endpoints=t.take("endpoints", c_list(c_secret(schemes=("http", "https", "ws", "wss"), url_parts=True),
                                                 drop_empty=True, min_len=1,
                                                 expected="at least one http(s):// or ws(s):// RPC URL")),
            failover=t.take("failover", c_bool, True),
            failover_after=t.take("failover_after", c_int(min=1), 1),
            max_lag=t.take("max_lag", c_int(min=0), 5),
            max_head_age=t.take("max_head_age", c_duration, 60.0),
            confirmations=t.take("confirmations", c_int(min=0), 65),
            getlogs_chunk=t.take("getlogs_chunk", c_int(min=1), 2000),
            timeout=t.take("timeout", c_duration, 5.0),
            interval=t.take("interval", c_duration, 5.0),
            head_method=t.take("head_method", c_str(pattern=re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$"),
                                                    expected="a JSON-RPC method name"),
                               "getblockcount" if kind == "jsonrpc" else "eth_blockNumber"),
            hash_method=t.take("hash_method", c_opt(c_text), "getblockhash" if kind == "jsonrpc" else None),
            version_method=t.take("version_method", c_opt(c_text), None),
            head_offset=t.take("head_offset", c_int(), -1 if kind == "jsonrpc" and
                               t.data.get("head_method", "getblockcount") == "getblockcount" else 0),
            signer_env=t.take("signer_env", c_opt(c_env_name), None),
            keystore=t.take("keystore", c_opt(pr), None),
            contracts=tuple(contracts),
            balances=tuple(balances),
        )
        if chains[name].signer_env and chains[name].keystore:
            ld.error(("chain", name, "keystore"), "both signer_env and keystore are set",
                     "one of signer_env or keystore")
        _unique(ld, ("chain", name, "contracts"), [c.name for c in contracts], t.data.get("contracts"))
        _unique(ld, ("chain", name, "balances"), [b.name for b in balances], t.data.get("balances"))
        t.done()

    # [[commands]]
    commands = []
    for t in ld.array_of_tables(root.raw("commands"), ("commands",)):
        commands.append(CommandConfig(
            name=t.take("name", c_name),
            argv=t.take("argv", c_list(_c_template, min_len=1,
                                       expected='an argv array like ["pm2", "restart", "{service}"]')),
            timeout=t.take("timeout", c_duration, 30.0),
            cwd=t.take("cwd", c_opt(pr), None),
        ))
        t.done()

    # [[services]]
    services = []
    for t in ld.array_of_tables(root.raw("services"), ("services",)):
        kind = t.take("kind", c_str(choices=("docker", "process", "command", "http")))
        svc = ServiceConfig(
            name=t.take("name", c_name),
            kind=kind,
            compose_project=t.take("compose_project", c_opt(c_text), None),
            compose_service=t.take("compose_service", c_opt(c_text), None),
            container=t.take("container", c_opt(c_text), None),
            match=t.take("match", c_opt(c_regex), None),
            status_command=t.take("status_command", c_opt(c_name), None),
            depends_on=t.take("depends_on", _str_list(), ()),
            health_url=t.take("health_url", c_opt(c_url("http", "https")), None),
            latency_warn=t.take("latency_warn", c_duration, 0.5),
            logs=t.take("logs", c_opt(c_text), None),
            silence_after=t.take("silence_after", c_opt(c_duration), None),
            restart=t.take("restart", c_opt(c_name), None),
            restart_command=t.take("restart_command", c_opt(c_name), None),
            interval=t.take("interval", c_opt(c_duration), None),
            timeout=t.take("timeout", c_opt(c_duration), None),
            role=t.take("role", c_opt(c_str(choices=SERVICE_ROLES)), None),
            playbook=t.take("playbook", c_opt(c_name), None),
        )
        p = t.path
        if kind == "docker" and not (svc.container or svc.compose_service):
            ld.error(p, "a docker service needs compose_service or container",
                     'compose_service = "NAME" (with compose_project) or container = "NAME"')
        if kind == "process" and t.data.get("match") is None:
            ld.error(p, "a process service needs match", 'match = "regex on the command line"')
        if kind == "command" and not svc.status_command:
            ld.error(p, "a command service needs status_command", "status_command = a [[commands]] name")
        if kind == "http" and not svc.health_url:
            ld.error(p, "an http service needs health_url", 'health_url = "http://127.0.0.1:PORT/health"')
        if svc.restart and svc.restart_command:
            ld.error(p + ("restart_command",), "both restart and restart_command are set",
                     "one of restart or restart_command")
        if isinstance(svc.logs, str) and svc.logs != "docker" and svc.logs not in \
                {c.name for c in commands}:
            svc = _replace(svc, logs=ld.resolve_glob(svc.logs))
        services.append(svc)
        t.done()

    # [docker]
    docker = DockerConfig()
    t = ld.table(root.raw("docker"), ("docker",)) if root.has("docker") else None
    if t:
        docker = DockerConfig(
            host=t.take("host", c_str(empty=True, pattern=re.compile(r"^$|^(unix|tcp|ssh|npipe|http|https)://"),
                                      expected="empty, unix://, tcp:// or ssh://"), ""),
            compose_command=t.take("compose_command", c_str(), "auto"),
            stats=t.take("stats", c_bool, False),
            stats_interval=t.take("stats_interval", c_duration, 30.0),
            timeout=t.take("timeout", c_duration, 5.0),
            interval=t.take("interval", c_opt(c_duration), None),
        )
        t.done()

    # [host]
    host = None
    t = ld.table(root.raw("host"), ("host",)) if root.has("host") else None
    if t:
        pct = c_number(min=0, max=100)
        host = HostConfig(
            cpu_warn=t.take("cpu_warn", pct, 80.0),
            cpu_for=t.take("cpu_for", c_duration, 300.0),
            memory_warn=t.take("memory_warn", pct, 85.0),
            disk_warn=t.take("disk_warn", pct, 80.0),
            disks=t.take("disks", _str_list(), ("/",)),
            interval=t.take("interval", c_opt(c_duration), None),
        )
        t.done()

    # [[queues]]
    queues = []
    for t in ld.array_of_tables(root.raw("queues"), ("queues",)):
        thresholds = t.take("thresholds", _c_thresholds, (1000, 10000, 50000))
        q = QueueConfig(
            name=t.take("name", c_name),
            redis=t.take("redis", c_name),
            key=t.take("key", c_text),
            type=t.take("type", c_str(choices=("list", "stream", "zset")), "list"),
            thresholds=thresholds,
            timestamp_field=t.take("timestamp_field", c_opt(c_text), None),
            dead_letter=t.take("dead_letter", c_opt(c_text), None),
            interval=t.take("interval", c_opt(c_duration), None),
        )
        _ref(ld, t.path + ("redis",), q.redis, redis, "redis")
        queues.append(q)
        t.done()

    # [breakers]
    breakers = None
    t = ld.table(root.raw("breakers"), ("breakers",)) if root.has("breakers") else None
    if t:
        breakers = BreakersConfig(
            postgres=t.take("postgres", c_opt(c_name), None),
            table=t.take("table", c_opt(c_ident), None),
            id_column=t.take("id_column", c_ident, Ident("trigger_id")),
            state_column=t.take("state_column", c_ident, Ident("state")),
            failures_column=t.take("failures_column", c_ident, Ident("failure_count")),
            last_failure_column=t.take("last_failure_column", c_opt(c_ident), Ident("last_failure_at")),
            opened_at_column=t.take("opened_at_column", c_opt(c_ident), None),
            reset_timeout=t.take("reset_timeout", c_duration, 60.0),
            redis=t.take("redis", c_opt(c_name), None),
            redis_namespaces=t.take("redis_namespaces", _str_list(), ()),
            interval=t.take("interval", c_opt(c_duration), None),
        )
        if breakers.postgres and breakers.postgres is not BAD:
            _ref(ld, ("breakers", "postgres"), breakers.postgres, postgres, "postgres")
            if breakers.table is None:
                breakers = _replace(breakers, table=Ident("circuit_breaker_state"))
        if breakers.redis and breakers.redis is not BAD:
            _ref(ld, ("breakers", "redis"), breakers.redis, redis, "redis")
            if not breakers.redis_namespaces:
                ld.error(("breakers", "redis_namespaces"), "redis breakers need redis_namespaces",
                         'redis_namespaces = ["webhook"]')
        if breakers.postgres is None and breakers.redis is None:
            ld.error(("breakers",), "breakers need a postgres table or redis keys",
                     'postgres = "NAME" (with table) or redis = "NAME" (with redis_namespaces)')
        t.done()

    # [orders]
    orders = None
    t = ld.table(root.raw("orders"), ("orders",)) if root.has("orders") else None
    if t:
        cursor = None
        ct = ld.table(t.raw("cursor"), ("orders", "cursor")) if t.has("cursor") else None
        if ct:
            cursor = OrdersCursorConfig(
                table=ct.take("table", c_ident),
                key_column=ct.take("key_column", c_ident, Ident("name")),
                key=ct.take("key", c_text, "escrow"),
                block_column=ct.take("block_column", c_ident, Ident("last_block")),
                updated_column=ct.take("updated_column", c_opt(c_ident), None),
            )
            ct.done()
        orders = OrdersConfig(
            postgres=t.take("postgres", c_name),
            table=t.take("table", c_ident, Ident("orders")),
            id_column=t.take("id_column", c_ident, Ident("id")),
            id_pattern=t.take("id_pattern", c_regex, re.compile(r"^[A-Za-z0-9_-]{1,128}$")),
            state_column=t.take("state_column", c_ident, Ident("state")),
            created_column=t.take("created_column", c_ident, Ident("created_at")),
            updated_column=t.take("updated_column", c_opt(c_ident), Ident("updated_at")),
            notes_column=t.take("notes_column", c_opt(c_ident), None),
            block_column=t.take("block_column", c_opt(c_ident), None),
            tx_column=t.take("tx_column", c_opt(c_ident), None),
            pending_states=t.take("pending_states", c_list(c_text, min_len=1), ("PENDING",)),
            target_states=t.take("target_states", c_list(c_text, min_len=1), ("SETTLED", "FAILED", "CANCELLED")),
            settled_state=t.take("settled_state", c_opt(c_text), None),
            start_block=t.take("start_block", c_int(min=0), 0),
            stuck_after=t.take("stuck_after", c_duration, 600.0),
            show=t.take("show", c_int(min=1, max=10000), 50),
            chain=t.take("chain", c_opt(c_name), None),
            contract=t.take("contract", c_opt(c_name), None),
            event=t.take("event", c_str(pattern=re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$"),
                                        expected="a Solidity event name"), "EscrowReleased"),
            id_encoding=t.take("id_encoding", c_str(choices=("bytes32-utf8", "uint256", "keccak")), "bytes32-utf8"),
            bulk_batch=t.take("bulk_batch", c_int(min=1, max=100000), 500),
            interval=t.take("interval", c_opt(c_duration), None),
            cursor=cursor,
        )
        _ref(ld, ("orders", "postgres"), orders.postgres, postgres, "postgres")
        if orders.chain and orders.chain is not BAD:
            if _ref(ld, ("orders", "chain"), orders.chain, chains, "chain") and orders.contract \
                    and orders.contract is not BAD and chains[orders.chain].contract(orders.contract) is None:
                have = [c.name for c in chains[orders.chain].contracts]
                ld.error(("orders", "contract"),
                         f"contract {orders.contract!r} is not in [[chain.{orders.chain}.contracts]]",
                         "one of: " + ", ".join(have) if have else
                         f"a [[chain.{orders.chain}.contracts]] entry with that name")
        elif orders.contract and orders.contract is not BAD:
            ld.error(("orders", "contract"), "contract is set but chain is not", 'chain = "NAME" of a [chain.NAME]')
        ts = orders.target_states
        if ts is not BAD and orders.settled_state is not BAD:
            if orders.settled_state is None:
                orders = _replace(orders, settled_state="SETTLED" if "SETTLED" in ts else ts[0])
            elif orders.settled_state not in ts:
                ld.error(("orders", "settled_state"), f"{orders.settled_state!r} is not in target_states",
                         "one of: " + ", ".join(ts))
        if orders.pending_states is not BAD and orders.target_states is not BAD:
            both = set(orders.pending_states) & set(orders.target_states)
            if both:
                ld.error(("orders", "target_states"), f"states both pending and target: {', '.join(sorted(both))}",
                         "target states different from pending states")
        t.done()

    # [[logs]]
    logs = []
    for t in ld.array_of_tables(root.raw("logs"), ("logs",)):
        lg = LogConfig(
            name=t.take("name", c_name),
            path=t.take("path", c_opt(c_glob(ld)), None),
            container=t.take("container", c_opt(c_text), None),
            command=t.take("command", c_opt(c_name), None),
            service=t.take("service", c_opt(c_name), None),
            silence_after=t.take("silence_after", c_opt(c_duration), None),
            success=t.take("success", _str_list(), ()),
            success_silence=t.take("success_silence", c_opt(c_duration), None),
            success_playbook=t.take("success_playbook", c_opt(c_name), None),
            playbook=t.take("playbook", c_opt(c_name), None),
            since=t.take("since", c_opt(c_duration), None),
            error_spike=t.take("error_spike", c_opt(c_int(min=1)), None),
            max_line=t.take("max_line", c_opt(c_int(min=80, max=1_000_000)), None),
        )
        for k in ("success_silence", "success_playbook"):
            if getattr(lg, k) is not None and getattr(lg, k) is not BAD and not lg.success:
                ld.error(t.path + (k,), f"{k} without success markers",
                         'success = ["Event processed successfully"] (or remove ' + k + ")")
        given = [k for k in ("path", "container", "command") if getattr(lg, k)]
        if len(given) != 1:
            ld.error(t.path, "a log source needs exactly one of path, container or command"
                     + (f" (got {', '.join(given)})" if given else ""),
                     'path = "logs/app.log", container = "NAME" or command = a [[commands]] name')
        logs.append(lg)
        t.done()

    # [[log_patterns]]
    log_patterns = []
    for t in ld.array_of_tables(root.raw("log_patterns"), ("log_patterns",)):
        log_patterns.append(LogPatternConfig(
            pattern=t.take("pattern", c_regex),
            severity=t.take("severity", c_severity, Severity.P2),
            name=t.take("name", c_opt(c_text), None),
            playbook=t.take("playbook", c_opt(c_name), None),
            sources=t.take("sources", _str_list(), ()),
            window=t.take("window", c_opt(c_duration), None),
            min_count=t.take("min_count", c_opt(c_int(min=1)), None),
        ))
        t.done()

    # [[checks]]
    checks = []
    for t in ld.array_of_tables(root.raw("checks"), ("checks",)):
        kind = t.take("kind", c_str(choices=("http", "jsonrpc", "sql", "command", "metrics")))
        headers = {}
        ht = ld.table(t.raw("headers"), t.path + ("headers",)) if t.has("headers") else None
        if ht:
            for hname in list(ht.data):
                hv = ht.take(hname, c_str(empty=True))
                if hv is not BAD:
                    headers[hname] = Secret(hv) if _SECRET_NAME.search(hname) else hv
            ht.done()
        ck = CheckConfig(
            name=t.take("name", c_name),
            kind=kind,
            url=t.take("url", c_opt(c_secret(schemes=("http", "https", "ws", "wss"), url_parts=True)), None),
            expect_status=t.take("expect_status", c_int(min=100, max=599), 200),
            expect=t.take("expect", c_opt(c_text), None),
            latency_warn=t.take("latency_warn", c_duration, 0.5),
            timeout=t.take("timeout", c_opt(c_duration), None),
            interval=t.take("interval", c_opt(c_duration), None),
            severity=t.take("severity", c_severity, Severity.P2),
            method=t.take("method", c_opt(c_text), None),
            params=t.take("params", _c_any_list, ()),
            postgres=t.take("postgres", c_opt(c_name), None),
            query=t.take("query", c_opt(c_text), None),
            command=t.take("command", c_opt(c_name), None),
            metric=t.take("metric", c_opt(c_text), None),
            warn_above=t.take("warn_above", c_opt(c_number()), None),
            crit_above=t.take("crit_above", c_opt(c_number()), None),
            warn_below=t.take("warn_below", c_opt(c_number()), None),
            crit_below=t.take("crit_below", c_opt(c_number()), None),
            path=t.take("path", c_opt(c_text), None),
            playbook=t.take("playbook", c_opt(c_name), None),
            headers=headers,
        )
        need = {"http": ("url",), "jsonrpc": ("url", "method"), "sql": ("postgres", "query"),
                "command": ("command",), "metrics": ("url", "metric")}.get(kind if kind is not BAD else "", ())
        for k in need:
            if getattr(ck, k) is None:
                ld.error(t.path, f"a {kind} check needs {k}", f"{k} = ...")
        if ck.postgres and ck.postgres is not BAD:
            _ref(ld, t.path + ("postgres",), ck.postgres, postgres, "postgres")
        if ck.query and ck.query is not BAD and not re.match(r"(?is)^\s*(select|with|show)\b", ck.query):
            ld.error(t.path + ("query",), "a check query must be read-only", "a SELECT, WITH or SHOW statement")
        checks.append(ck)
        t.done()

    # [[actions]]
    actions = []
    for t in ld.array_of_tables(root.raw("actions"), ("actions",)):
        params: dict[str, str] = {}
        pt = ld.table(t.raw("params"), t.path + ("params",)) if t.has("params") else None
        if pt:
            for pname in list(pt.data):
                pv = pt.take(pname, c_str(choices=ACTION_PARAM_TYPES))
                if pv is BAD:
                    params[pname] = BAD  # reported; keep the name so argv is not reported too
                    continue
                if not _ENV_NAME_RE.match(pname):
                    ld.error(pt.path + (pname,), f"bad parameter name {pname!r}", "letters, digits and '_'")
                    continue
                params[pname] = pv
            pt.done()
        act = ActionConfig(
            name=t.take("name", c_name),
            argv=t.take("argv", c_list(_c_template, min_len=1, expected='an argv array like ["pg_dump", "{database}"]')),
            key=t.take("key", c_opt(c_str(pattern=re.compile(r"^\S+$"), expected='a key like "B" or "ctrl+b"')), None),
            description=t.take("description", c_str(empty=True), ""),
            danger=t.take("danger", c_str(choices=("safe", "confirm", "typed")), "confirm"),
            scope=t.take("scope", c_opt(c_text), None),
            params=params,
            timeout=t.take("timeout", c_duration, 60.0),
        )
        if act.argv is not BAD:
            missing = sorted(set(_placeholders(act.argv)) - set(params) - {"operator", "config"})
            if missing:
                ld.error(t.path + ("argv",), f"placeholders not declared in params: {', '.join(missing)}",
                         "every {name} in argv declared in params = { name = \"type\" }")
        actions.append(act)
        t.done()

    # [[playbooks]]
    playbooks: list[Playbook] = []
    step_paths: list[tuple[Path_, Step]] = []
    for t in ld.array_of_tables(root.raw("playbooks"), ("playbooks",)):
        diagnosis = _steps(ld, t, "diagnosis")
        resolution = _steps(ld, t, "resolution")
        pb = Playbook(
            id=t.take("id", c_name),
            title=t.take("title", c_text),
            severity=t.take("severity", c_severity),
            budget=t.take("budget", c_str(empty=True), ""),
            symptoms=t.take("symptoms", c_list(c_text), ()),
            diagnosis=tuple(s for _, s in diagnosis),
            resolution=tuple(s for _, s in resolution),
            escalate_to=t.take("escalate_to", c_str(empty=True), ""),
            seed=t.take("seed", c_str(empty=True), ""),
        )
        if not any(t.data.get(k) not in (None, []) for k in ("diagnosis", "resolution")):
            ld.error(t.path, "a playbook needs at least one diagnosis or resolution step",
                     "[[playbooks.diagnosis]] / [[playbooks.resolution]] entries, or "
                     'resolution = [{ text = "...", action = "service.restart", key = "r" }]')
        step_paths += diagnosis + resolution
        playbooks.append(pb)
        t.done()

    # [escalation]
    escalation = EscalationConfig()
    t = ld.table(root.raw("escalation"), ("escalation",)) if root.has("escalation") else None
    if t:
        levels = []
        for lt in ld.array_of_tables(t.raw("levels"), ("escalation", "levels")):
            levels.append(EscalationLevel(
                name=lt.take("name", c_text),
                after=lt.take("after", c_duration, 0.0),
                contacts=lt.take("contacts", _str_list(), ()),
                channels=lt.take("channels", c_list(c_secret(), drop_empty=True,
                                                    expected="apprise URLs (secret)"), ()),
                provide=lt.take("provide", _str_list(), ()),
            ))
            lt.done()
        pagerduty = None
        pt = ld.table(t.raw("pagerduty"), ("escalation", "pagerduty")) if t.has("pagerduty") else None
        if pt:
            rk = pt.take("routing_key", c_secret(empty=True))
            url = pt.take("url", c_url("https", "http"), "https://events.pagerduty.com/v2/enqueue")
            if rk is not BAD and rk:
                pagerduty = PagerDutyConfig(routing_key=rk, url=url)
            pt.done()
        escalation = EscalationConfig(
            ack_timeout=t.take("ack_timeout", c_duration, 1800.0),
            levels=tuple(levels),
            pagerduty=pagerduty,
        )
        afters = [lv.after for lv in levels if isinstance(lv.after, float)]
        if afters != sorted(afters):
            ld.error(("escalation", "levels"), "levels are not in order of `after`",
                     "levels listed from the first to be contacted to the last")
        t.done()

    # [incident]
    incident = IncidentConfig()
    t = ld.table(root.raw("incident"), ("incident",)) if root.has("incident") else None
    if t:
        response = dict(DEFAULT_RESPONSE)
        rt = ld.table(t.raw("response"), ("incident", "response")) if t.has("response") else None
        if rt:
            for sev in list(rt.data):
                if sev.upper() not in Severity.__members__:
                    rt.used.add(sev)
                    ld.error(rt.path + (sev,), f"unknown severity {sev!r}", "P0, P1, P2 or P3")
                    continue
                d = rt.take(sev, c_duration)
                if d is not BAD:
                    response[Severity[sev.upper()]] = d
            rt.done()
        incident = IncidentConfig(
            roles=t.take("roles", c_list(c_text, min_len=1), DEFAULT_ROLES),
            response=response,
        )
        t.done()

    root.done()

    # -- uniqueness and cross references --------------------------------------
    _unique(ld, ("services",), [s.name for s in services], data.get("services"))
    _unique(ld, ("commands",), [c.name for c in commands], data.get("commands"))
    _unique(ld, ("queues",), [q.name for q in queues], data.get("queues"))
    _unique(ld, ("logs",), [g.name for g in logs], data.get("logs"))
    _unique(ld, ("checks",), [c.name for c in checks], data.get("checks"))
    _unique(ld, ("actions",), [a.name for a in actions], data.get("actions"))
    _unique(ld, ("playbooks",), [p.id for p in playbooks], data.get("playbooks"), key="id",
            expected="ids unique within [[playbooks]] (an id equal to a built-in's replaces the built-in)")

    command_names = {c.name: c for c in commands if c.name is not BAD}
    service_names = {s.name for s in services if s.name is not BAD}
    log_names = {g.name for g in logs if g.name is not BAD}
    for i, s in enumerate(services):
        p: Path_ = ("services", i)
        if s.restart and s.restart is not BAD and s.restart != "docker":
            _ref(ld, p + ("restart",), s.restart, command_names, "commands", extra=("docker",))
        if s.restart == "docker" and s.kind != "docker":
            ld.error(p + ("restart",), f"restart = \"docker\" on a {s.kind} service",
                     "a [[commands]] name (docker restarts need kind = \"docker\")")
        if s.restart_command and s.restart_command is not BAD:
            _ref(ld, p + ("restart_command",), s.restart_command, command_names, "commands")
        if s.status_command and s.status_command is not BAD:
            _ref(ld, p + ("status_command",), s.status_command, command_names, "commands")
            sc = command_names.get(s.status_command)
            extra = sorted(set(_placeholders(sc.argv)) - {"service"}) if sc and sc.argv is not BAD else []
            if extra:
                ld.error(p + ("status_command",),
                         f"[[commands]] {s.status_command!r} has placeholders warroom cannot fill when it "
                         f"checks the service: {', '.join('{' + x + '}' for x in extra)}",
                         "a command whose only placeholder is {service} (filled with the service name)")
        if s.logs == "docker" and s.kind != "docker":
            ld.error(p + ("logs",), f'logs = "docker" on a {s.kind} service',
                     "a log file path/glob or a [[commands]] name")
        if s.depends_on is not BAD:
            for j, dep in enumerate(s.depends_on):
                if not _dependency_exists(dep, service_names, postgres, redis, chains):
                    ld.error(p + ("depends_on", j), f"unknown dependency {dep!r}",
                             "a service name, postgres / redis / chain, or postgres.NAME / redis.NAME / chain.NAME")
                elif dep == s.name:
                    ld.error(p + ("depends_on", j), "a service cannot depend on itself", "another service")
    _check_cycles(ld, services)
    for i, lg in enumerate(logs):
        if lg.command and lg.command is not BAD:
            _ref(ld, ("logs", i, "command"), lg.command, command_names, "commands")
        if lg.service and lg.service is not BAD and lg.service not in service_names:
            _ref(ld, ("logs", i, "service"), lg.service, service_names, "services")
    for i, lp in enumerate(log_patterns):
        if lp.sources is not BAD:
            for j, name in enumerate(lp.sources):
                if name not in log_names and name not in service_names:
                    ld.error(("log_patterns", i, "sources", j), f"unknown log source {name!r}",
                             "a [[logs]] or [[services]] name")
    for i, ck in enumerate(checks):
        if ck.command and ck.command is not BAD:
            _ref(ld, ("checks", i, "command"), ck.command, command_names, "commands")
    for i, act in enumerate(actions):
        if act.scope and act.scope is not BAD and not _scope_exists(act.scope, service_names, postgres, redis, chains):
            ld.error(("actions", i, "scope"), f"unknown scope {act.scope!r}",
                     "global, a service name, or postgres.NAME / redis.NAME / chain.NAME")
    action_names = sorted(a.name for a in actions if a.name is not BAD)
    for sp, step in step_paths:
        act = step.action
        if isinstance(act, str) and act.startswith("command.") and act[len("command."):] not in action_names:
            ld.error(sp + ("action",), f"{act!r} names no [[actions]] entry",
                     ("one of: " + ", ".join(f"command.{n}" for n in action_names)) if action_names
                     else f"an [[actions]] entry named {act[len('command.'):]!r} (none is configured)")
    playbook_ids = {p.id for p in BUILTIN} | {p.id for p in playbooks if p.id is not BAD}
    for section, items in (("services", services), ("logs", logs), ("log_patterns", log_patterns),
                           ("checks", checks)):
        for i, item in enumerate(items):
            pid = item.playbook
            if pid and pid is not BAD and pid not in playbook_ids:
                hint = difflib.get_close_matches(pid, sorted(playbook_ids), n=1)
                ld.error((section, i, "playbook"), f"{pid!r} does not name a playbook"
                         + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                         "one of: " + ", ".join(sorted(playbook_ids)) + " (built-in or [[playbooks]] id)")
    for i, lg in enumerate(logs):
        pid = lg.success_playbook
        if pid and pid is not BAD and pid not in playbook_ids:
            hint = difflib.get_close_matches(pid, sorted(playbook_ids), n=1)
            ld.error(("logs", i, "success_playbook"), f"{pid!r} does not name a playbook"
                     + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                     "one of: " + ", ".join(sorted(playbook_ids)) + " (built-in or [[playbooks]] id)")
    if any(pg.shared for pg in postgres.values() if pg.shared is not BAD) and \
            sum(1 for pg in postgres.values() if pg.shared is True) > 1:
        ld.error(("postgres",), "more than one [postgres.NAME] has shared = true", "at most one shared database")

    return Config(
        path=path, warroom=warroom, keys=keys, postgres=postgres, redis=redis, chain=chains,
        services=tuple(services), commands=tuple(commands), docker=docker, host=host,
        queues=tuple(queues), breakers=breakers, orders=orders, logs=tuple(logs),
        log_patterns=tuple(log_patterns), checks=tuple(checks), actions=tuple(actions),
        escalation=escalation, incident=incident, playbooks=tuple(playbooks),
    )


def _replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


_ACTION_ID_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_ACTION_ID_EXPECTED = ("an action id like service.restart, orders.fix, escalate or command.NAME (an [[actions]] "
                       "name); namespaces: " + ", ".join(ACTION_NAMESPACES))
_STEP_EXPECTED = 'a step table like { text = "Restart it", action = "service.restart", key = "r" }'


@_conv(_ACTION_ID_EXPECTED)
def c_action_id(v: Any) -> str:
    if not isinstance(v, str):
        raise _Invalid(f"expected a string, got {_tname(v)}", _ACTION_ID_EXPECTED)
    m = _ACTION_ID_RE.match(v)
    head = v.split(".", 1)[0]
    if not m or (m.group(1) is None and v not in ACTION_SINGLE) or (m.group(1) and head not in ACTION_NAMESPACES):
        hint = difflib.get_close_matches(head, ACTION_NAMESPACES + ACTION_SINGLE, n=1)
        raise _Invalid(f"invalid action id {v!r}" + (f" (did you mean {hint[0]!r}?)" if hint and hint[0] != head
                                                      else ""), _ACTION_ID_EXPECTED)
    return v


def _steps(ld: _Loader, t: _Table, key: str) -> list[tuple[Path_, Step]]:
    """A playbook's `diagnosis` / `resolution`: [[playbooks.KEY]] sub-tables or an array of inline tables."""
    raw = t.raw(key)
    path = t.path + (key,)
    if raw is None or raw is BAD:
        return []
    if not isinstance(raw, list):
        ld.error(path, f"expected an array of steps, got {_tname(raw)}", _STEP_EXPECTED)
        return []
    out = []
    for i, item in enumerate(raw):
        if item is BAD:
            continue
        if not isinstance(item, dict):
            ld.error(path + (i,), f"expected a step table, got {_tname(item)}", _STEP_EXPECTED)
            continue
        st = _Table(ld, item, path + (i,))
        step = Step(
            text=st.take("text", c_text),
            action=st.take("action", c_opt(c_action_id), None),
            key=st.take("key", c_opt(c_str(pattern=re.compile(r"^\S+$"), expected='a key like "r" or "ctrl+r"')),
                        None),
            check=st.take("check", c_opt(c_str(choices=CHECK_KINDS)), None),
            budget=st.take("budget", c_str(empty=True), ""),
            targets=st.take("targets", _str_list(), ()),
        )
        st.done()
        out.append((st.path, step))
    return out


@_conv("a string (an argv element; {name} placeholders allowed)")
def _c_template(v: Any) -> str:
    if not isinstance(v, str):
        raise _Invalid(f"expected a string, got {_tname(v)}", "a string")
    try:
        list(string.Formatter().parse(v))
    except ValueError as e:
        raise _Invalid(f"bad placeholder in {v!r}: {e}", "{name} placeholders; {{ and }} for braces") from None
    for _, fname, _, _ in string.Formatter().parse(v):
        if fname is not None and not _ENV_NAME_RE.match(fname):
            raise _Invalid(f"bad placeholder {{{fname}}} in {v!r}", "{name} with name of letters, digits, '_'")
    return v


@_conv("thresholds = [warn, high, critical], increasing integers")
def _c_thresholds(v: Any) -> tuple[int, int, int]:
    exp = "thresholds = [warn, high, critical], three increasing positive integers"
    if not isinstance(v, list) or len(v) != 3 or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise _Invalid(f"invalid thresholds {v!r}", exp)
    if not (0 < v[0] < v[1] < v[2]):
        raise _Invalid(f"thresholds not increasing: {v!r}", exp)
    return (v[0], v[1], v[2])


@_conv("an array")
def _c_any_list(v: Any) -> tuple[Any, ...]:
    if not isinstance(v, list):
        raise _Invalid(f"expected an array, got {_tname(v)}", "an array")
    return tuple(v)


def _ref(ld: _Loader, path: Path_, name: Any, table: Mapping[str, Any] | set[str], section: str,
         extra: tuple[str, ...] = ()) -> bool:
    if name is BAD or name is None:
        return False
    if name in table:
        return True
    have = list(extra) + sorted(table)
    what = {"redis": "[redis.NAME]", "postgres": "[postgres.NAME]", "chain": "[chain.NAME]",
            "commands": "[[commands]]", "services": "[[services]]"}[section]
    ld.error(path, f"{name!r} does not name a {what} entry",
             ("one of: " + ", ".join(have)) if have else f"a {what} entry of that name (none is configured)")
    return False


def _unique(ld: _Loader, path: Path_, names: list[Any], raw: Any, *, key: str = "name",
            expected: str = "names unique within the section") -> None:
    seen: set[Any] = set()
    for i, n in enumerate(names):
        if n is BAD:
            continue
        if n in seen:
            ld.error(path + (i, key), f"duplicate {key} {n!r}", expected)
        seen.add(n)


def _dependency_exists(dep: str, services: set[str], postgres, redis, chains) -> bool:
    if dep in services:
        return True
    kinds = {"postgres": postgres, "redis": redis, "chain": chains}
    if dep in kinds:
        return bool(kinds[dep])
    kind, _, name = dep.partition(".")
    return kind in kinds and name in kinds[kind]


def _scope_exists(scope: str, services: set[str], postgres, redis, chains) -> bool:
    return scope in ("global", "host", "docker") or _dependency_exists(scope, services, postgres, redis, chains)


def _check_cycles(ld: _Loader, services: list[ServiceConfig]) -> None:
    graph: dict[str, list[str]] = {}
    for s in services:
        if s.name is not BAD and s.depends_on is not BAD:
            graph.setdefault(s.name, [d for d in s.depends_on if d != s.name])
    state: dict[str, int] = {}

    def visit(n: str, trail: list[str]) -> None:
        state[n] = 1
        for d in graph.get(n, []):
            if d not in graph:
                continue
            if state.get(d) == 1:
                cycle = trail[trail.index(d):] + [d] if d in trail else [n, d]
                i = next(i for i, s in enumerate(services) if s.name == n)
                ld.error(("services", i, "depends_on"), "dependency cycle: " + " -> ".join(cycle),
                         "depends_on without cycles")
            elif state.get(d) is None:
                visit(d, trail + [d])
        state[n] = 2

    for n in graph:
        if state.get(n) is None:
            visit(n, [n])


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------

_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def load_config_text(
    text: str,
    filename: str = "<config>",
    *,
    env: Mapping[str, str] | None = None,
    base_dir: Path | str | None = None,
    path: Path | None = None,
) -> Config:
    """Parse and validate TOML text. Raises ConfigError (ConfigErrors when several)."""
    env = os.environ if env is None else env
    base = Path(base_dir) if base_dir is not None else (path.parent if path else Path.cwd())
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = _TOML_POS.search(msg)
        line = int(m.group(1)) if m else None
        col = int(m.group(2)) if m else None
        reason = _TOML_POS.sub("", msg)
        if "(at end of document)" in reason:
            reason = reason.replace(" (at end of document)", "")
            line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
            col = None
        where = f" at column {col}" if col is not None else ""
        raise ConfigError(f"malformed TOML: {reason}{where}", file=filename, line=line,
                          expected="valid TOML (https://toml.io)") from None
    ld = _Loader(text, filename, base, env)
    data = ld.interpolate(data, ())
    config = _parse(ld, data, path)
    if ld.errors:
        ld.errors.sort(key=lambda e: (e.line or 0))
        raise ConfigErrors(ld.errors)
    return config


def load_config(path: str | os.PathLike[str] | None = None, *,
                env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file (None: look it up with `find_config`). Raises ConfigError."""
    if path is None:
        path = find_config(None, env=env)
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(p), expected="an existing TOML file") from None
    except IsADirectoryError:
        raise ConfigError("is a directory", file=str(p), expected="a TOML file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text ({e.reason} at byte {e.start})", file=str(p),
                          expected="a UTF-8 TOML file") from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=str(p), expected="a readable TOML file") from None
    return load_config_text(text, str(p), env=env, path=p.resolve())


def config_search_path(explicit: str | os.PathLike[str] | None = None,
                       env: Mapping[str, str] | None = None) -> list[tuple[str, Path | None]]:
    """The places looked at, in order: (description, path or None when not given)."""
    env = os.environ if env is None else env
    import platformdirs

    places: list[tuple[str, Path | None]] = [
        ("--config", Path(explicit).expanduser() if explicit else None),
        (f"${ENV_VAR}", Path(env[ENV_VAR]).expanduser() if env.get(ENV_VAR) else None),
        ("./" + CONFIG_NAME, Path.cwd() / CONFIG_NAME),
        ("XDG config dir", Path(platformdirs.user_config_dir("warroom")) / CONFIG_NAME),
    ]
    return places


def find_config(explicit: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None) -> Path:
    """--config, else $WARROOM_CONFIG, else ./warroom.toml, else <XDG config>/warroom/warroom.toml."""
    places = config_search_path(explicit, env)
    for i, (what, p) in enumerate(places):
        if p is None:
            continue
        if i < 2:  # an explicit choice must exist: never fall back silently
            if not p.is_file():
                raise ConfigError(f"{what} names a file that does not exist" if not p.exists()
                                  else f"{what} is not a file", file=str(p), key=None,
                                  expected="an existing TOML file")
            return p
        if p.is_file():
            return p
    looked = "; ".join(f"{what}: {p if p else 'not set'}" for what, p in places)
    raise ConfigNotFound(f"no configuration file found (looked at {looked})",
                         expected="a config file: pass --config PATH, set $WARROOM_CONFIG, or create "
                               "./warroom.toml (start from examples/minimal.toml)")
