"""The shape of the configuration, declared once.

Every section, and every key of it: its converter (type, limits, choices), its default, a
one-line doc, whether it is a secret, and the example values examples/reference.toml shows.
From this:

- the loader takes each key's converter and default (`_Table.take("pool_max")`) and refuses
  keys that are not here (`_Table.done()`: "unknown key ... one of: ...");
- the model's dataclasses take their defaults (`model.py`: `pool_max: int = _PG.pool_max`);
- `describe()` lists every key (`python -m backends.config.schema`), `select()` a section's or one key,
  for `warroom check --keys [SECTION]` (with each key's type and limits: its converter's `expected`);
- tests/test_config_schema.py checks that examples/reference.toml shows every key, and only
  these, with its default or one of its examples.

Adding a key: a `Key(...)` line in its section here, the field in model.py (default
`_SECTION.key`), the `take` in sections/<group>.py, and the key in examples/reference.toml
(as a value or a `# key = value` comment). A key whose default depends on another key
(`[chain.NAME] head_method` on `kind`) states the static default here and passes the other
one to `take(key, default=...)`.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from backends.config.base import _REQUIRED, Converter, Path_, expected_of, show_of
from backends.config.converters import (
    _PM2_APP,
    _PM2_APP_EXPECTED,
    _c_any_list,
    _c_priority_steps,
    _c_record,
    _c_signer_duration,
    _c_template,
    _c_thresholds,
    _str_list,
    c_action_id,
    c_address,
    c_amount,
    c_bool,
    c_count,
    c_duration,
    c_env_name,
    c_glob,
    c_ident,
    c_int,
    c_list,
    c_name,
    c_number,
    c_opt,
    c_path,
    c_regex,
    c_secret,
    c_severity,
    c_size,
    c_str,
    c_text,
    c_theme,
    c_url,
)
from backends.config.limits import _fmt_size
from backends.config.types import Ident, parse_size
from backends.engine.playbooks import CHECK_KINDS
from backends.model import Severity
from backends.units import format_duration, parse_duration

if TYPE_CHECKING:
    from backends.config.loader import _Loader

REQUIRED: Any = _REQUIRED

# choices that the model and the sources use too
SERVICE_KINDS = ("docker", "process", "command", "http", "pm2")
SERVICE_ROLES = ("api", "events", "worker", "listener", "indexer", "postgres", "redis", "other")
# [[queues]] types: plain Redis structures, then the framework presets (backends/sources/redis.py)
QUEUE_TYPES = ("list", "stream", "zset", "rq", "bullmq", "sidekiq", "celery")
_QUEUE_PRESETS = QUEUE_TYPES[3:]
CHECK_TYPES = ("http", "jsonrpc", "sql", "command", "metrics", "promql")
ACTION_PARAM_TYPES = ("path", "identifier", "string", "text", "int", "order_id", "service", "duration")


class PerLoader:
    """A converter made for each load (paths are relative to the config file's directory)."""

    def __init__(self, make: Callable[[_Loader], Converter], expected: str) -> None:
        self.make = make
        self.expected = expected


OPT_PATH = PerLoader(lambda ld: c_opt(c_path(ld)), "a file path")
OPT_GLOB = PerLoader(lambda ld: c_opt(c_glob(ld)), "a file path or glob")


@dataclass(frozen=True, slots=True)
class Key:
    """One key of a section."""

    name: str  # as written in TOML
    conv: Converter | PerLoader | None  # None: a sub-table (`sub`) read by the section's parser
    default: Any = REQUIRED
    doc: str = ""
    secret: bool = False  # masked everywhere (a Secret), registered for redaction
    examples: tuple[Any, ...] = ()  # TOML values reference.toml shows besides the default
    sub: str | None = None  # the section of a sub-table or array of tables ("chain.contracts")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def converter(self, ld: _Loader) -> Converter:
        if self.conv is None:
            raise TypeError(f"{self.name} is a table ({self.sub}): its section's parser reads it")
        return self.conv.make(ld) if isinstance(self.conv, PerLoader) else self.conv

    @property
    def expected(self) -> str:
        exp = self.conv.expected if isinstance(self.conv, PerLoader) else expected_of(self.conv)
        if exp is not None:
            return exp
        return f"a [{self.sub}] table" if self.sub else "a value"

    @property
    def shown_default(self) -> str:
        """The default as TOML writes it ("2s", "500MB", "P2"), or (required) / (not set)."""
        if self.required:
            return "(required)"
        if self.default is None:
            return "(not set)"
        return toml_text(self.default, None if isinstance(self.conv, PerLoader) else self.conv)


@dataclass(frozen=True)
class Section:
    """A TOML table (or each table of an array / named set): its keys, in listing order."""

    path: str  # the key path with NAME parts and indexes left out: "chain.contracts"
    header: str  # as written: "[[chain.NAME.contracts]]"
    doc: str
    keys: tuple[Key, ...] = ()
    free: str | None = None  # a table of free-form keys (binding ids, headers): what they are
    _index: dict[str, Key] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for k in self.keys:
            if k.name in self._index:
                raise ValueError(f"[{self.path}] declares {k.name} twice")
            self._index[k.name] = k

    def __getitem__(self, name: str) -> Key:
        return self._index[name]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[Key]:
        return iter(self.keys)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.keys)

    def default(self, name: str) -> Any:
        return self._index[name].default


class Defaults:
    """`Defaults("postgres").pool_max`: a key's default, for the model's dataclasses."""

    def __init__(self, path: str) -> None:
        self._section = SCHEMA[path]

    def __getattr__(self, name: str) -> Any:
        try:
            default = self._section.default(name)
        except KeyError:
            raise AttributeError(f"[{self._section.path}] has no key {name!r}") from None
        if default is REQUIRED:
            raise AttributeError(f"[{self._section.path}] {name} is required: it has no default")
        return default


def S(path: str, header: str, doc: str, *keys: Key, free: str | None = None) -> Section:  # noqa: N802
    return Section(path, header, doc, keys, free)


def T(name: str, sub: str, doc: str, default: Any = None) -> Key:  # noqa: N802
    """A key that is a table or an array of tables, read by its section's parser."""
    return Key(name, None, default, doc, sub=sub)


_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEX40 = re.compile(r"^0x[0-9a-fA-F]{40}$")
_DURATION = c_duration  # a duration within DURATION_LIMITS["section.key"]
_KEY_RE = re.compile(r"^\S+$")

SECTIONS: tuple[Section, ...] = (
    S("", "(the file)", "the top level: one table or array of tables per section",
      T("warroom", "warroom", "the console itself"),
      T("keys", "keys", "key bindings remapped"),
      T("postgres", "postgres", "PostgreSQL databases watched"),
      T("redis", "redis", "Redis servers watched"),
      T("chain", "chain", "blockchains watched"),
      T("services", "services", "the backend's services"),
      T("commands", "commands", "named argv commands"),
      T("docker", "docker", "the Docker engine"),
      T("host", "host", "this host's CPU, memory and disks"),
      T("queues", "queues", "Redis queues"),
      T("breakers", "breakers", "circuit breakers"),
      T("orders", "orders", "the orders table and their releases on chain"),
      T("logs", "logs", "log sources"),
      T("log_patterns", "log_patterns", "log lines that make findings"),
      T("checks", "checks", "probes: http, jsonrpc, sql, command, metrics, promql"),
      T("alertmanager", "alertmanager", "Alertmanagers whose alerts are findings"),
      T("actions", "actions", "operator actions (argv with typed parameters)"),
      T("escalation", "escalation", "who is called, when"),
      T("incident", "incident", "incident roles and response times"),
      T("playbooks", "playbooks", "playbooks besides the built-in ones"),
      T("record", "record", "the flight recorder")),
    S("warroom", "[warroom]", "the console",
      Key("name", c_text, "warroom", "stack name shown in the header", examples=("meta-aggregator",)),
      Key("environment", c_str(empty=True), "", 'shown in the header; "production" gets a red badge',
          examples=("production",)),
      Key("refresh", c_duration("warroom.refresh"), 2.0, "default poll interval for sources without their own"),
      Key("timeout", c_duration("warroom.timeout"), 5.0, "default poll timeout"),
      Key("operator", c_str(empty=True), "", "who you are in the audit trail (default: user@ssh-client)"),
      Key("audit_path", OPT_PATH, None, "the audit trail (default: <state_dir>/audit.jsonl)"),
      Key("state_dir", OPT_PATH, None, "locks, outbox, incidents when no shared Postgres (default: the XDG state dir)"),
      Key("read_only", c_bool, False, "same as --read-only"),
      Key("theme", c_theme, "dark", "dark | light | high-contrast | colorblind (aliases: hc, cb, colourblind, default)"),
      Key("log_buffer", c_count("warroom.log_buffer"), 10_000,
          "log lines kept in memory, for the Logs pane and the hub")),
    S("keys", "[keys]", "bindings remapped by id (? lists them)", free='binding_id = "key[,key]" or ["key", ...]'),
    S("postgres", "[postgres.NAME]", "a PostgreSQL database",
      Key("dsn", c_secret(schemes=("postgresql", "postgres"), url_parts=True), doc="its DSN (secret: masked everywhere)",
          secret=True),
      Key("pool_max", c_count("postgres.pool_max"), 2, "connections in warroom's pool"),
      Key("timeout", c_duration("postgres.timeout"), 3.0, "connect / query timeout"),
      Key("interval", c_duration("postgres.interval"), 5.0, "poll interval"),
      Key("long_query_after", c_duration("postgres.long_query_after"), 60.0, "a query running longer is shown as long"),
      Key("terminate_after", c_duration("postgres.terminate_after"), 300.0, "a query running longer may be terminated"),
      Key("warn_connections", c_count("postgres.warn_connections"), 50, "connections that warn"),
      Key("shared", c_bool, False, "true: audit mirror, incidents and locks live here (at most one)")),
    S("redis", "[redis.NAME]", "a Redis server",
      Key("url", c_secret(schemes=("redis", "rediss", "unix"), url_parts=True), doc="its URL (secret)", secret=True),
      Key("timeout", c_duration("redis.timeout"), 2.0, "connect / command timeout"),
      Key("interval", c_duration("redis.interval"), 2.0, "poll interval"),
      Key("max_memory", c_size("redis.max_memory"), 500 * 1024 * 1024, "used memory that warns")),
    S("chain", "[chain.NAME]", "a blockchain, read through JSON-RPC endpoints",
      Key("kind", c_str(choices=("evm", "jsonrpc")), "evm",
          "evm | jsonrpc (non-EVM, e.g. Neo N3: no contracts / balances tables)"),
      Key("chain_id", c_count("chain.chain_id"), None, "the chain id the endpoints must report"),
      Key("endpoints", c_list(c_secret(schemes=("http", "https", "ws", "wss"), url_parts=True), drop_empty=True,
                              min_len=1, expected="at least one http(s):// or ws(s):// RPC URL"),
          doc="RPC URLs, in order of preference (secret; empty ones dropped)", secret=True),
      Key("failover", c_bool, True, "switch to the next healthy endpoint when the active one fails"),
      Key("failover_after", c_count("chain.failover_after"), 1,
          "consecutive failures of the active endpoint before switching"),
      Key("max_lag", c_count("chain.max_lag"), 5, "blocks behind the best endpoint before it is unhealthy"),
      Key("max_head_age", c_duration("chain.max_head_age"), 60.0,
          "head block older than this: stale (jsonrpc: no new height seen for this long)"),
      Key("confirmations", c_count("chain.confirmations"), 65, "blocks to finality (Ethereum 65, Polygon 200)"),
      Key("getlogs_chunk", c_count("chain.getlogs_chunk"), 2000, "eth_getLogs block range per call"),
      Key("timeout", c_duration("chain.timeout"), 5.0, "RPC call timeout"),
      Key("interval", c_duration("chain.interval"), 5.0, "poll interval"),
      Key("head_method", c_str(pattern=_ID, expected="a JSON-RPC method name"), "eth_blockNumber",
          'the height method (jsonrpc default: "getblockcount")'),
      Key("hash_method", c_opt(c_text), None, 'jsonrpc: the block hash method (default there: "getblockhash")'),
      Key("version_method", c_opt(c_text), None, 'jsonrpc: the network check method (e.g. "getversion")'),
      Key("head_offset", c_count("chain.head_offset"), 0,
          "added to the head (jsonrpc getblockcount = height + 1: -1, the default there)"),
      Key("signer_env", c_opt(c_env_name), None, "the environment variable with the fixing key (or keystore)"),
      Key("keystore", OPT_PATH, None, "an encrypted keystore; password asked at the moment of use"),
      Key("max_answer", c_size("chain.max_answer"), 1024 * 1024,
          "bytes of one RPC answer; a bigger one makes the source DEGRADED"),
      Key("integrity_window", c_count("chain.integrity_window"), 2000,
          "listener integrity: blocks below the cursor re-checked for missed releases"),
      Key("verify_quorum", c_count("chain.verify_quorum"), 1,
          "endpoints that must agree on a read that decides a fix (2 = 2 of 3)"),
      Key("gas_bank", c_opt(c_address), None, "jsonrpc (Neo N3): script hash whose GAS is read"),
      Key("gas_minimum", c_opt(c_number(min=0)), None, "jsonrpc (Neo N3): GAS below this is a finding"),
      Key("watch_contracts", _str_list(pattern=_HEX40, expected="0x script hashes"), (),
          "jsonrpc (Neo N3): contracts read with getcontractstate"),
      Key("finality", c_str(choices=("depth", "safe", "finalized")), "depth",
          "what makes a release final: depth (confirmations) | safe | finalized (node tags)"),
      T("contracts", "chain.contracts", "contracts watched (evm)", ()),
      T("balances", "chain.balances", "balances watched (evm)", ()),
      T("signers", "chain.signers", "keys that sign, watched (evm)", ())),
    S("chain.contracts", "[[chain.NAME.contracts]]", "a contract of an EVM chain",
      Key("name", c_name, doc="its name (orders.contract, balances token)"),
      Key("address", c_address, doc="its address"),
      Key("abi", OPT_PATH, None, "an ABI (JSON) or a Hardhat/Foundry artifact"),
      Key("pausable", c_bool, False, "it has paused() / pause()"),
      Key("roles", _str_list(pattern=_ID, expected="role names like OPERATOR_ROLE"), (),
          "AccessControl role names shown by name (besides PAUSER_ROLE, MINTER_ROLE...)"),
      Key("guard", c_bool, False, "guardrails: Paused/Unpaused, OwnershipTransferred, Role*, Upgraded are findings"),
      Key("owner", c_opt(c_address), None, "the announced owner: a transfer to anyone else is P0"),
      Key("implementation", c_opt(c_address), None, "a proxy's announced implementation: any other Upgraded is P0"),
      Key("admins", _str_list(pattern=_HEX40, expected="0x addresses"), (),
          "accounts announced for admin roles / proxy admin (others: P0)")),
    S("chain.balances", "[[chain.NAME.balances]]", "a balance watched: the native coin or an ERC-20 token",
      Key("name", c_name, doc="its name"),
      Key("address", c_address, doc="the account"),
      Key("token", c_opt(c_str(pattern=re.compile(r"^(0x[0-9a-fA-F]{40}|[A-Za-z0-9_.-]+)$"),
                               expected="an ERC-20 contract: a 0x address or a [[chain.X.contracts]] name")), None,
          "an ERC-20: a [[chain.NAME.contracts]] name or a 0x address (default: the native coin)"),
      Key("minimum", c_opt(c_amount), None,
          'below it is a finding: "5 ether"; a token: "1000 USDC" (whole tokens) or its smallest unit'),
      Key("symbol", c_opt(c_str(pattern=re.compile(r"^[A-Za-z0-9]{1,16}$"), expected="a token symbol like ETH or GAS")),
          None, "default: minimum's unit, else ETH (a token: its symbol())"),
      Key("decimals", c_opt(c_count("chain.balances.decimals")), None,
          "default: minimum's unit, else 18 (a token: its decimals())")),
    S("chain.signers", "[[chain.NAME.signers]]", "a key that signs: balance, runway, nonces, stuck transactions",
      Key("label", c_name, doc="its name"),
      Key("address", c_address, doc="its address"),
      Key("min_balance", c_opt(c_amount), None, "runway is measured down to this"),
      Key("keystore", OPT_PATH, None, "a keystore to speed up / cancel with (or key_env, exclusive)"),
      Key("key_env", c_opt(c_env_name), None, "the environment variable with its key (neither: watched only)"),
      Key("stuck_after_blocks", c_int(min=1, max=10_000), 3, "1..10000: the next nonce unconfirmed this long is stuck"),
      Key("gap_after_blocks", c_int(min=1, max=100_000), 10, "1..100000: pending > latest this long is a nonce gap"),
      Key("runway_min", _c_signer_duration("runway_min"), 24 * 3600.0, "1m..90d: a shorter runway is a finding"),
      Key("spend_window", _c_signer_duration("spend_window"), 3600.0, "10s..7d: spend rate window"),
      Key("bump_percent", c_number(min=1, max=1000), 20.0,
          "1..1000, not below min_bump_percent: speed up raises fees by this much"),
      Key("min_bump_percent", c_number(min=0, max=1000), 10.0, "0..1000: the node's replacement bump")),
    S("commands", "[[commands]]", "a named argv command (restart, status, logs)",
      Key("name", c_name, doc="its name"),
      Key("argv", c_list(_c_template, min_len=1, expected='an argv array like ["pm2", "restart", "{service}"]'),
          doc="the argv; {service} and other {placeholders} filled in"),
      Key("timeout", c_duration("commands.timeout"), 30.0, "a run longer is stopped"),
      Key("cwd", OPT_PATH, None, "working directory")),
    S("services", "[[services]]", "a service of the backend",
      Key("name", c_name, doc="its name"),
      Key("kind", c_str(choices=SERVICE_KINDS), doc="docker | process | command | http | pm2"),
      Key("compose_project", c_opt(c_text), None, "docker: discover by compose labels ..."),
      Key("compose_service", c_opt(c_text), None, "docker: ... the compose service"),
      Key("container", c_opt(c_text), None, "docker: ... or by container name"),
      Key("match", c_opt(c_regex), None, "process: regex on the command line"),
      Key("status_command", c_opt(c_name), None, "command: a [[commands]] name whose exit code is health"),
      Key("depends_on", _str_list(), (), "services, postgres / redis / chain or postgres.NAME ... it needs"),
      Key("health_url", c_opt(c_url("http", "https")), None, "an HTTP health endpoint (http: required)"),
      Key("latency_warn", c_duration("services.latency_warn"), 0.5, "health_url latency that warns"),
      Key("logs", c_opt(c_text), None, "docker | path/glob to files | a [[commands]] name"),
      Key("silence_after", c_opt(c_duration("services.silence_after")), None, "no log line for this long: finding"),
      Key("restart", c_opt(c_name), None, "docker | a [[commands]] name"),
      Key("restart_command", c_opt(c_name), None, "a [[commands]] name (instead of restart)"),
      Key("interval", c_opt(c_duration("services.interval")), None, "poll interval (default: refresh)"),
      Key("timeout", c_opt(c_duration("services.timeout")), None, "probe timeout (default: timeout)"),
      Key("role", c_opt(c_str(choices=SERVICE_ROLES)), None,
          "api | events | worker | listener | indexer | postgres | redis | other (default: guessed)"),
      Key("playbook", c_opt(c_name), None, "playbook for this service's findings"),
      Key("app", c_opt(c_str(pattern=_PM2_APP, expected=_PM2_APP_EXPECTED)), None,
          "pm2: pm2's name for the app (default: name)"),
      Key("pm2_home", c_opt(c_text), None, "pm2: PM2_HOME of the pm2 that runs it (default: $PM2_HOME, ~/.pm2)"),
      Key("pm2_bin", c_opt(c_text), None, "pm2: the pm2 executable (default: pm2 on PATH)")),
    S("docker", "[docker]", "the Docker engine",
      Key("host", c_str(empty=True, pattern=re.compile(r"^$|^(unix|tcp|ssh|npipe|http|https)://"),
                        expected="empty, unix://, tcp:// or ssh://"), "",
          "unix socket, tcp:// or ssh://; empty = environment / context"),
      Key("compose_command", c_str(), "auto", 'auto | "docker compose" | docker-compose'),
      Key("stats", c_bool, False, "CPU/memory per container (expensive, sampled slowly)"),
      Key("stats_interval", c_duration("docker.stats_interval"), 30.0, "stats sampling interval"),
      Key("timeout", c_duration("docker.timeout"), 5.0, "API call timeout"),
      Key("interval", c_opt(c_duration("docker.interval")), None, "poll interval (default: refresh)")),
    S("host", "[host]", "this host: CPU, memory, disks",
      Key("cpu_warn", c_number(min=0, max=100), 80.0, "CPU percent that warns, for cpu_for"),
      Key("cpu_for", c_duration("host.cpu_for"), 300.0, "how long CPU must stay above cpu_warn"),
      Key("memory_warn", c_number(min=0, max=100), 85.0, "memory percent that warns"),
      Key("disk_warn", c_number(min=0, max=100), 80.0, "disk percent that warns"),
      Key("disks", _str_list(), ("/",), "mount points watched"),
      Key("interval", c_opt(c_duration("host.interval")), None, "poll interval (default: refresh)")),
    S("queues", "[[queues]]", "a Redis queue",
      Key("name", c_name, doc="its name"),
      Key("redis", c_name, doc="the [redis.NAME] it is in"),
      Key("key", c_text, doc="its Redis key (a framework's queue: the queue's own name)"),
      Key("type", c_str(choices=QUEUE_TYPES), "list",
          "list | stream | zset, or a framework: rq | bullmq | sidekiq | celery"),
      Key("thresholds", _c_thresholds, (1000, 10000, 50000), "depths: warn, high, critical"),
      Key("timestamp_field", c_opt(c_text), None, "JSON field of a job with its enqueue time (oldest-job age)"),
      Key("dead_letter", c_opt(c_text), None, "the key of its dead-letter list"),
      Key("interval", c_opt(c_duration("queues.interval")), None, "poll interval (default: refresh)"),
      Key("oldest_end", c_str(choices=("right", "left")), "right",
          "list: right = consumers RPOP (producers LPUSH); left = consumers LPOP"),
      Key("prefix", c_opt(c_text), None, "bullmq's prefix (default bull) / celery's global_keyprefix"),
      Key("max_age", c_opt(c_duration("queues.max_age")), None, "a finding when the oldest job has waited longer"),
      Key("priority_steps", _c_priority_steps, (0, 3, 6, 9), "celery: kombu's priority_steps")),
    S("breakers", "[breakers]", "circuit breakers: a Postgres table or pybreaker's Redis keys",
      Key("postgres", c_opt(c_name), None, "the [postgres.NAME] with the table"),
      Key("table", c_opt(c_ident), None, "the table (default with postgres: circuit_breaker_state)"),
      Key("id_column", c_ident, Ident("trigger_id"), "column: the breaker's id"),
      Key("state_column", c_ident, Ident("state"), "column: its state"),
      Key("failures_column", c_ident, Ident("failure_count"), "column: its failure count"),
      Key("last_failure_column", c_opt(c_ident), Ident("last_failure_at"), "column: its last failure time"),
      Key("opened_at_column", c_opt(c_ident), None, "column: when it opened (optional)"),
      Key("reset_timeout", c_duration("breakers.reset_timeout"), 60.0, "how long an open breaker stays open"),
      Key("redis", c_opt(c_name), None, "the [redis.NAME] with pybreaker-style keys (instead of postgres)"),
      Key("redis_namespaces", _str_list(
          empty=True, pattern=re.compile(r"^(?:[A-Za-z0-9_.:-]{1,200})?$"),
          expected='a pybreaker namespace (letters, digits, _ . : -), or "" for its keys without one'), (),
          'pybreaker CircuitRedisStorage namespaces; "" = none (pybreaker:state)'),
      Key("interval", c_opt(c_duration("breakers.interval")), None, "poll interval (default: refresh)")),
    S("orders", "[orders]", "the orders table, and their releases on chain",
      Key("postgres", c_name, doc="the [postgres.NAME] with the table"),
      Key("table", c_ident, Ident("orders"), "the table"),
      Key("id_column", c_ident, Ident("id"), "column: the order id"),
      Key("id_pattern", c_regex, re.compile(r"^[A-Za-z0-9_-]{1,128}$"), "operator input must match before any query"),
      Key("state_column", c_ident, Ident("state"), "column: the state"),
      Key("created_column", c_ident, Ident("created_at"), "column: created at"),
      Key("updated_column", c_opt(c_ident), Ident("updated_at"), "column: updated at"),
      Key("notes_column", c_opt(c_ident), None, "column: notes written by fixes (optional)"),
      Key("block_column", c_opt(c_ident), None, "column: the release block (optional)"),
      Key("tx_column", c_opt(c_ident), None, "column: the release transaction (optional)"),
      Key("pending_states", c_list(c_text, min_len=1), ("PENDING",), "states of an order waiting"),
      Key("target_states", c_list(c_text, min_len=1), ("SETTLED", "FAILED", "CANCELLED"), "states a fix may set"),
      Key("settled_state", c_opt(c_text), None,
          "the target state when the release event is on chain (default: SETTLED if a target, else the first)"),
      Key("start_block", c_count("orders.start_block"), 0, "first block searched for release events"),
      Key("stuck_after", c_duration("orders.stuck_after"), 600.0, "pending longer: stuck"),
      Key("show", c_count("orders.show"), 50, "oldest N stuck orders read per poll"),
      Key("chain", c_opt(c_name), None, "the [chain.NAME] with the releases"),
      Key("contract", c_opt(c_name), None, "the [[chain.NAME.contracts]] that emits them"),
      Key("event", c_str(pattern=_ID, expected="a Solidity event name"), "EscrowReleased",
          "the release event: event(bytes32 indexed orderId, ...)"),
      Key("id_encoding", c_str(choices=("bytes32-utf8", "uint256", "keccak")), "bytes32-utf8",
          "how an order id maps to the indexed topic: bytes32-utf8 | uint256 | keccak"),
      Key("bulk_batch", c_count("orders.bulk_batch"), 500, "orders per batch of a bulk fix"),
      Key("interval", c_opt(c_duration("orders.interval")), None, "poll interval (default: refresh)"),
      T("cursor", "orders.cursor", "the listener's cursor table")),
    S("orders.cursor", "[orders.cursor]", "the listener's cursor: the last block it processed",
      Key("table", c_ident, doc="the table"),
      Key("key_column", c_ident, Ident("name"), "column: the cursor's name"),
      Key("key", c_text, "escrow", "the cursor's name"),
      Key("block_column", c_ident, Ident("last_block"), "column: the last block"),
      Key("updated_column", c_opt(c_ident), None, "column: updated at (optional)")),
    S("logs", "[[logs]]", "a log source: files, a container or a command",
      Key("name", c_name, doc="its name"),
      Key("path", OPT_GLOB, None, "a file or glob (relative: to the config file's directory)"),
      Key("container", c_opt(c_text), None, "a container's logs"),
      Key("command", c_opt(c_name), None, "a [[commands]] name whose output is the log"),
      Key("service", c_opt(c_name), None, "the [[services]] entry this log belongs to"),
      Key("silence_after", c_opt(c_duration("logs.silence_after")), None, "no line for this long: finding"),
      Key("success", _str_list(), (), "markers (substring or regex): success/min in health events"),
      Key("success_silence", c_opt(c_duration("logs.success_silence")), None,
          "lines but no marker this long: P2 finding (default: silence_after)"),
      Key("success_playbook", c_opt(c_name), None, "that finding's playbook (default: events-not-processed)"),
      Key("playbook", c_opt(c_name), None, "playbook when it falls silent"),
      Key("since", c_opt(c_duration("logs.since")), None, "history read at start (default 5m)"),
      Key("error_spike", c_opt(c_count("logs.error_spike")), None, "errors per minute that make a finding (default 20)"),
      Key("max_line", c_opt(c_count("logs.max_line")), None, "characters of a line kept (default 4096)")),
    S("log_patterns", "[[log_patterns]]", "log lines that make a finding",
      Key("pattern", c_regex, doc="a regular expression"),
      Key("severity", c_severity, Severity.P2, "the finding's severity"),
      Key("name", c_opt(c_text), None, "its name"),
      Key("playbook", c_opt(c_name), None, "the finding's playbook"),
      Key("sources", _str_list(), (), "[[logs]] / [[services]] names; default: all"),
      Key("window", c_opt(c_duration("log_patterns.window")), None, "counting window (default 5m)"),
      Key("min_count", c_opt(c_count("log_patterns.min_count")), None,
          "matches within the window before a finding (default 1)")),
    S("checks", "[[checks]]", "a probe: http, jsonrpc, sql, command, metrics or promql",
      Key("name", c_name, doc="its name"),
      Key("kind", c_str(choices=CHECK_TYPES), doc="http | jsonrpc | sql | command | metrics | promql"),
      Key("url", c_opt(c_secret(schemes=("http", "https", "ws", "wss"), url_parts=True)), None,
          "http, jsonrpc, metrics, promql: the URL (secret)", secret=True),
      Key("expect_status", c_count("checks.expect_status"), 200, "http: the status expected"),
      Key("expect", c_opt(c_text), None, "text the body must contain (a JSON value: the answer must equal it)"),
      Key("latency_warn", c_duration("checks.latency_warn"), 0.5, "latency that warns"),
      Key("timeout", c_opt(c_duration("checks.timeout")), None, "probe timeout (default: timeout)"),
      Key("interval", c_opt(c_duration("checks.interval")), None, "poll interval (default: refresh)"),
      Key("severity", c_severity, Severity.P2, "the finding's severity"),
      Key("method", c_opt(c_text), None, "jsonrpc: the method"),
      Key("params", _c_any_list, (), "jsonrpc: the params"),
      Key("postgres", c_opt(c_name), None, "sql: the [postgres.NAME]"),
      Key("query", c_opt(c_text), None, "sql: a SELECT / WITH / SHOW; promql: the query"),
      Key("command", c_opt(c_name), None, "command: a [[commands]] name"),
      Key("metric", c_opt(c_text), None, 'metrics: a name or a selector name{label="v",code=~"5.."}'),
      Key("quantile", c_opt(c_number(min=0.001, max=1)), None,
          "metrics: a histogram's quantile from its _bucket series (0.95)"),
      Key("rate", c_bool, False, "metrics: a counter's per-second rate"),
      Key("window", c_opt(c_duration("checks.window")), None,
          "metrics: the rate / quantile window (default: since the last scrape)"),
      Key("aggregate", c_opt(c_str(choices=("sum", "max", "min", "avg", "count"))), None,
          "metrics (sum) / promql (max): how matching series combine"),
      Key("empty", c_opt(c_str(choices=("unknown", "ok", "crit"))), None,
          "promql: what an empty answer is (unknown | ok | crit)"),
      Key("warn_above", c_opt(c_number()), None, "a value above warns"),
      Key("crit_above", c_opt(c_number()), None, "a value above is critical"),
      Key("warn_below", c_opt(c_number()), None, "a value below warns (e.g. a gas balance)"),
      Key("crit_below", c_opt(c_number()), None, "a value below is critical"),
      Key("path", c_opt(c_text), None, 'command checks: where the value is in the JSON output ("stack.0.value")'),
      Key("playbook", c_opt(c_name), None, "playbook of this check's findings"),
      T("headers", "checks.headers", "HTTP headers (secret-looking names are masked)", {})),
    S("checks.headers", "headers = { ... }", "HTTP headers", free="Header-Name = \"value\""),
    S("alertmanager", "[alertmanager.NAME]", "an Alertmanager (API v2): firing alerts are findings",
      Key("url", c_secret(schemes=("http", "https"), url_parts=True), doc="its URL (secret)", secret=True),
      Key("timeout", c_duration("alertmanager.timeout"), 5.0, "API call timeout"),
      Key("interval", c_duration("alertmanager.interval"), 15.0, "poll interval"),
      Key("severity_label", c_str(), "severity", "the label with the alert's severity"),
      Key("default_severity", c_severity, Severity.P2, "the severity of an alert without a known label value"),
      Key("filter", _str_list(), (), "matchers: only these alerts ('team=\"chain\"')"),
      Key("silence_duration", c_duration("alertmanager.silence_duration"), 7200.0,
          "default length of a silence made from warroom"),
      T("severity", "alertmanager.severity", "the severity label's values -> P0..P3",
        {"critical": Severity.P1, "page": Severity.P1, "error": Severity.P2,
         "warning": Severity.P2, "info": Severity.P3, "none": Severity.P3}),
      T("headers", "alertmanager.headers", "HTTP headers (secret-looking names are masked)", {})),
    S("alertmanager.severity", "severity = { ... }", "label value -> severity", free='label_value = "P0".."P3"'),
    S("alertmanager.headers", "headers = { ... }", "HTTP headers", free="Header-Name = \"value\""),
    S("actions", "[[actions]]", "an operator action: an argv with typed parameters",
      Key("name", c_name, doc="its name (command.NAME in playbooks)"),
      Key("argv", c_list(_c_template, min_len=1, expected='an argv array like ["pg_dump", "{database}"]'),
          doc="the argv; every {placeholder} declared in params"),
      Key("key", c_opt(c_str(pattern=_KEY_RE, expected='a key like "B" or "ctrl+b"')), None, "its key binding"),
      Key("description", c_str(empty=True), "", "shown in the preview"),
      Key("danger", c_str(choices=("safe", "confirm", "typed")), "confirm", "safe | confirm | typed"),
      Key("scope", c_opt(c_text), None, "global, a service, or postgres.NAME / redis.NAME / chain.NAME"),
      Key("timeout", c_duration("actions.timeout"), 60.0, "a run longer is stopped"),
      T("params", "actions.params", "its parameters: name = type", {})),
    S("actions.params", "params = { ... }", "parameter name -> type", free=" | ".join(ACTION_PARAM_TYPES)),
    S("playbooks", "[[playbooks]]", "a playbook (the same id as a built-in replaces it)",
      Key("id", c_name, doc="its id (playbook = ... elsewhere)"),
      Key("title", c_text, doc="its title"),
      Key("severity", c_severity, doc="P0..P3"),
      Key("budget", c_str(empty=True), "", 'its time budget ("30 min")'),
      Key("symptoms", c_list(c_text), (), "what the operator sees"),
      Key("escalate_to", c_str(empty=True), "", "who to escalate to"),
      Key("seed", c_str(empty=True), "", "the runbook it comes from"),
      T("diagnosis", "playbooks.diagnosis", "diagnosis steps", ()),
      T("resolution", "playbooks.resolution", "resolution steps", ())),
    *(S(f"playbooks.{part}", f"[[playbooks.{part}]]", f"a {part} step",
        Key("text", c_text, doc="what to do"),
        Key("action", c_opt(c_action_id), None, "an action id: service.restart, command.NAME, escalate ..."),
        Key("key", c_opt(c_str(pattern=_KEY_RE, expected='a key like "r" or "ctrl+r"')), None, "its key"),
        Key("check", c_opt(c_str(choices=CHECK_KINDS)), None, "the pane to look at: " + " | ".join(CHECK_KINDS)),
        Key("budget", c_str(empty=True), "", "its time budget"),
        Key("targets", _str_list(), (), "what it applies to"),
        Key("wait", c_str(empty=True), "", "what to wait for after it"))
      for part in ("diagnosis", "resolution")),
    S("escalation", "[escalation]", "who is called, when",
      Key("ack_timeout", c_duration("escalation.ack_timeout"), 1800.0, "unacknowledged this long: next level"),
      T("levels", "escalation.levels", "the levels, first contacted first", ()),
      T("pagerduty", "escalation.pagerduty", "PagerDuty Events API v2"),
      T("alertmanager", "escalation.alertmanager", "escalations (and findings) pushed as Alertmanager alerts")),
    S("escalation.levels", "[[escalation.levels]]", "a level of escalation",
      Key("name", c_text, doc="its name"),
      Key("after", c_duration("escalation.levels.after"), 0.0, "when it is contacted, after the finding"),
      Key("contacts", _str_list(), (), "who"),
      Key("channels", c_list(c_secret(), drop_empty=True, expected="apprise URLs (secret)"), (),
          "apprise URLs (secret)", secret=True),
      Key("provide", _str_list(), (), "what to give them")),
    S("escalation.pagerduty", "[escalation.pagerduty]", "PagerDuty (an empty routing_key: off)",
      Key("routing_key", c_secret(empty=True), doc="the integration's routing key (secret)", secret=True),
      Key("url", c_url("https", "http"), "https://events.pagerduty.com/v2/enqueue", "the Events API"),
      Key("change_events", c_bool, False, "executed fixes sent as Change Events"),
      Key("change_url", c_url("https", "http"), "https://events.pagerduty.com/v2/change/enqueue",
          "the Change Events API (default: next to url)")),
    S("escalation.alertmanager", "[escalation.alertmanager]", "an Alertmanager escalations are pushed to",
      Key("url", c_secret(schemes=("http", "https"), url_parts=True), doc="its URL (secret)", secret=True),
      Key("escalations", c_bool, True, "escalations pushed"),
      Key("findings", c_str(empty=True), "", 'findings of this severity or worse pushed too (P0..P3; "": none)'),
      Key("interval", c_duration("alertmanager.interval"), 60.0, "re-sent while firing (endsAt = now + 4 x interval)"),
      Key("timeout", c_duration("alertmanager.timeout"), 5.0, "API call timeout"),
      T("labels", "escalation.alertmanager.labels", "labels added to every alert", {}),
      T("headers", "escalation.alertmanager.headers", "HTTP headers (secret-looking names are masked)", {})),
    S("escalation.alertmanager.labels", "labels = { ... }", "alert labels", free="label_name = \"value\""),
    S("escalation.alertmanager.headers", "headers = { ... }", "HTTP headers", free="Header-Name = \"value\""),
    S("incident", "[incident]", "incident roles and response times",
      Key("roles", c_list(c_text, min_len=1), ("Incident Commander", "Technical Lead", "Communications Lead"),
          "the roles an incident has"),
      T("response", "incident.response", "response time per severity")),
    S("incident.response", "[incident.response]", "the response time by severity (P0..P3, any case)",
      *(Key(sev.name, c_duration("incident.response"), secs, f"{sev.name}: respond within this")
        for sev, secs in ((Severity.P0, 900.0), (Severity.P1, 3600.0), (Severity.P2, 14400.0),
                          (Severity.P3, 86400.0))),
      free="P0..P3 = a duration"),
    S("record", "[record]", "the flight recorder (warroom replay FILE); absent: nothing is recorded",
      Key("path", OPT_PATH, None, "default: <state_dir>/recording.sqlite"),
      Key("max_size", _c_record("max_size", parse_size, lambda n: _fmt_size(int(n)), "size"), 256 * 1024**2,
          "1MB..1TB: the oldest part is dropped beyond it"),
      Key("max_age", _c_record("max_age", parse_duration, format_duration, "duration"), 48 * 3600.0,
          "1m..365d: older batches are dropped")),
)



# The values examples/reference.toml shows besides the defaults (tests/test_config_schema.py:
# a value there is the key's default, one of these, or, for a key without a default, valid).
EXAMPLES: dict[str, tuple[Any, ...]] = {
    'postgres.dsn': ('${DATABASE_URL}',),
    'redis.url': ('${REDIS_URL:-redis://127.0.0.1:6379/0}',),
    'chain.endpoints': (['${RPC_URL}', '${RPC_URL_BACKUP:-}'],),
    'chain.contracts.name': ('escrow',),
    'chain.contracts.address': ('${ESCROW_CONTRACT_ADDRESS}',),
    'chain.contracts.pausable': (True,),
    'chain.contracts.guard': (True,),
    'chain.balances.name': ('arbiter', 'settlement',),
    'chain.balances.address': ('0x0000000000000000000000000000000000000001', '0x0000000000000000000000000000000000000002',),
    'services.name': ('api-gateway', 'listener',),
    'services.kind': ('docker', 'process',),
    'services.depends_on': (['postgres', 'redis'],),
    'commands.name': ('pm2-restart',),
    'commands.argv': (['pm2', 'restart', '{service}'],),
    'queues.name': ('action_jobs', 'mail',),
    'queues.redis': ('main',),
    'queues.key': ('action_jobs', 'mail',),
    'orders.postgres': ('main',),
    'orders.cursor.table': ('listener_cursor',),
    'logs.name': ('event-listener',),
    'logs.success': (['Event processed successfully'],),
    'log_patterns.pattern': ('Circuit breaker OPEN',),
    'log_patterns.severity': ('P1',),
    'checks.name': ('coingecko',),
    'checks.kind': ('http',),
    'actions.name': ('backup-db',),
    'actions.argv': (['pg_dump', '-Fc', '-f', '{file}', '{database}'],),
    'playbooks.id': ('db-disk-filling',),
    'playbooks.title': ('Database disk filling up',),
    'playbooks.severity': ('P2',),
    'playbooks.budget': ('30 min',),
    'playbooks.symptoms': (['Host disk above 80 %', 'Postgres database size growing fast'],),
    'playbooks.diagnosis.text': ('Disk use and database size', 'Long-running queries holding space',),
    'playbooks.resolution.text': ('Dump the database before anything else', 'Escalate to the infrastructure team',),
    'playbooks.resolution.budget': ('30 min',),
    'escalation.levels.name': ('Development team',),
    'escalation.levels.contacts': (['@oncall'],),
    'escalation.levels.channels': (['json://127.0.0.1:9999/hook'],),
    'escalation.levels.provide': (['Error messages from logs', 'Affected order count', 'Timeline of failure', 'Steps already attempted'],),
    'escalation.pagerduty.routing_key': ('${PD_ROUTING_KEY:-}',),
    'chain.gas_bank': ('0x...',),
    'chain.watch_contracts': (['0x...'],),
    'chain.contracts.owner': ('0x...',),
    'chain.contracts.implementation': ('0x...',),
    'chain.contracts.admins': (['0x...'],),
    'chain.signers.label': ('relayer',),
    'chain.signers.address': ('0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC',),
    'chain.balances.minimum': ('1000 USDC',),
    'queues.type': ('bullmq',),
    'breakers.redis_namespaces': (['webhook', ''],),
    'log_patterns.sources': (['event-listener'],),
    'alertmanager.url': ('http://127.0.0.1:9093',),
    'alertmanager.filter': (['team="chain"'],),
    'actions.description': ('Dump the main database',),
    'chain.contracts.roles': (['OPERATOR_ROLE'],),
    'checks.params': (['0x0000000000000000000000000000000000000001', 'latest'],),
    'checks.rate': (True,),
    'playbooks.escalate_to': ('Infrastructure team',),
    'playbooks.seed': ('003 incident 2',),
    'playbooks.diagnosis.budget': ('30 min',),
    'playbooks.diagnosis.targets': (['main'],),
    'playbooks.diagnosis.wait': ('the dump file written',),
    'playbooks.resolution.targets': (['main'],),
    'playbooks.resolution.wait': ('the dump file written',),
    'escalation.pagerduty.change_events': (True,),
    'escalation.alertmanager.url': ('http://127.0.0.1:9093',),
    'escalation.alertmanager.findings': ('P1',),
}
SECTIONS = tuple(
    Section(s.path, s.header, s.doc, tuple(
        replace(k, examples=EXAMPLES[f"{s.path}.{k.name}"]) if f"{s.path}.{k.name}" in EXAMPLES else k
        for k in s.keys), s.free)
    for s in SECTIONS)

SCHEMA: dict[str, Section] = {s.path: s for s in SECTIONS}

# the model's and the sources' names for some defaults
DEFAULT_ALERT_SEVERITY: dict[str, Severity] = dict(SCHEMA["alertmanager"].default("severity"))
DEFAULT_RESPONSE: dict[Severity, float] = {Severity[k.name]: k.default for k in SCHEMA["incident.response"]}
DEFAULT_ROLES: tuple[str, ...] = SCHEMA["incident"].default("roles")
_NAMED = ("postgres", "redis", "chain", "alertmanager")  # [section.NAME] tables


def schema_path(path: Path_) -> str:
    """('chain', 'polygon', 'signers', 0) -> 'chain.signers': indexes and NAME parts left out."""
    parts = [p for p in path if isinstance(p, str)]
    if len(parts) >= 2 and parts[0] in _NAMED:
        del parts[1]
    return ".".join(parts)


def section_of(path: Path_) -> Section | None:
    return SCHEMA.get(schema_path(path))


def _toml_str(text: str) -> str:
    if ("\\" in text or '"' in text) and "'" not in text and "\n" not in text:
        return f"'{text}'"  # a literal string: a pattern's backslashes stay as written
    return json.dumps(text, ensure_ascii=False)


def toml_text(value: Any, conv: object = None) -> str:
    """A value as it is written in TOML: through the converter's `show` when it has one (a
    duration "2s", a size "500MB"), a severity "P2", a pattern its text, a tuple an array."""
    show = show_of(conv)
    if show is not None:
        return show(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Severity):
        return f'"{value.name}"'
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, re.Pattern):
        return _toml_str(value.pattern)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_text(v)}" for k, v in value.items()) + " }"
    return str(value)


def select(query: str | None = None) -> list[tuple[Section, tuple[Key, ...]]]:
    """The sections (and keys) a query names, in the schema's order: None or "" every section;
    "chain" [chain.NAME] and its sub-tables ([[chain.NAME.contracts]] ...); "chain.contracts"
    (or "chain.polygon.contracts", "[[chain.NAME.contracts]]") that one and its own; a key
    "chain.max_answer" that key. A query that names nothing: ValueError saying what exists."""
    if not query:
        return [(s, s.keys) for s in SECTIONS if s.path]
    q = query.strip().strip("[]").strip()
    parts = tuple(p for p in q.split(".") if p)

    def with_subs(path: str) -> list[tuple[Section, tuple[Key, ...]]]:
        return [(s, s.keys) for s in SECTIONS if s.path == path or s.path.startswith(path + ".")]

    if parts and ".".join(parts) in SCHEMA:
        return with_subs(".".join(parts))
    if len(parts) >= 2:  # section.key, the section maybe with its NAME ("chain.polygon.max_answer")
        for path in dict.fromkeys((".".join(parts[:-1]), schema_path(parts[:-1]))):
            if path and path in SCHEMA and parts[-1] in SCHEMA[path]:
                key = SCHEMA[path][parts[-1]]
                return with_subs(key.sub) if key.sub else [(SCHEMA[path], (key,))]
    if parts and schema_path(parts) in SCHEMA:  # "chain.polygon"
        return with_subs(schema_path(parts))
    names = [s.path for s in SECTIONS if s.path]
    hint = difflib.get_close_matches(schema_path(parts) or q, names, n=1)
    raise ValueError(f"no section or key {query!r} in the schema"
                     + (f" (did you mean {hint[0]!r}?)" if hint else "")
                     + "; sections: " + ", ".join(names))


def describe(selection: Iterable[tuple[Section, Iterable[Key]]] | None = None, *,
             detail: bool = False) -> list[str]:
    """Every section and key (or those of `select(...)`): `key = default [secret]  # doc`
    (required keys say so), TOML-like. `detail` adds each key's type and limits (what its
    converter expects) and the sub-tables a section has, for `warroom check --keys`."""
    lines: list[str] = []
    chosen = [(s, tuple(s.keys)) for s in SECTIONS if s.path] if selection is None else selection
    for sec, keys in chosen:
        lines.append(f"{sec.header}  # {sec.doc}")
        if sec.free:
            lines.append(f"  {sec.free}")
        for k in keys:
            if k.sub:
                if detail:
                    lines.append(f"  {k.name}: {SCHEMA[k.sub].header}  # {k.doc}")
                continue
            secret = " [secret]" if k.secret else ""
            lines.append(f"  {k.name} = {k.shown_default}{secret}  # {k.doc}")
            if detail:
                lines.append(f"      {k.expected}")
    return lines


if __name__ == "__main__":  # pragma: no cover - `python -m backends.config.schema`
    print("\n".join(describe()))
