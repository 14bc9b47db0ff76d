"""Load and validate warroom's TOML configuration.

The shape is `examples/reference.toml`. Every section becomes a frozen dataclass whose
attribute names are the TOML key names (`config.postgres["main"].dsn`,
`config.services[0].match`, `config.orders.cursor.table`). Validation is strict:
unknown keys, wrong types, bad identifiers, bad durations or amounts, values outside their
limits (every duration, count, size and URL port has a minimum and a maximum:
`DURATION_LIMITS`, `COUNT_LIMITS`, `SIZE_LIMITS`, `PORT_RANGE`, stated in reference.toml) and
dangling cross-references are errors that name the file, line, key and what was expected.
All errors found are reported together (`ConfigErrors`, a `ConfigError`). `load_config` also
refuses a config that watches nothing (an empty file, /dev/null): the console would show a
false all-clear. A UTF-8 byte order mark is skipped.

Strings may use `${VAR}` and `${VAR:-default}` (`$${` is a literal `${`). Secrets
(DSNs, Redis URLs, RPC endpoints, notification channels, routing keys, tokens) are
kept in `Secret`, whose text is masked; `.reveal()` gives the value to the adapter
that needs it. Secret values are registered with `backends.errors.register_secret`
so `redact()` scrubs them from any text.

Loading never connects to anything and imports nothing heavy.

    path = find_config(args.config)        # --config, $WARROOM_CONFIG, ./warroom.toml, XDG
    config = load_config(path)             # raises ConfigError
    print("
".join(config.summary()))
"""

from __future__ import annotations

from backends.config.base import (
    _ENV_NAME_RE,
    _NAME_RE,
    _REQUIRED,
    _SECRET_NAME,
    BAD,
    Path_,
    _Bad,
    _conv,
    _Invalid,
    _replace,
    _SkipBad,
    _tname,
    expected_of,
)
from backends.config.converters import (
    _ACTION_ID_EXPECTED,
    _ACTION_ID_RE,
    _ADDRESS_EXPECTED,
    _ADDRESS_RE,
    _AMOUNT_EXPECTED,
    _DURATION_EXPECTED,
    _HOST_PORT_RE,
    _IDENT_EXPECTED,
    _NETLOC_RE,
    _PM2_APP,
    _PM2_APP_EXPECTED,
    _SIZE_EXPECTED,
    _THEME_EXPECTED,
    _TOKEN_AMOUNT_EXPECTED,
    _TOKEN_AMOUNT_RE,
    _c_any_list,
    _c_priority_steps,
    _c_record,
    _c_signer_duration,
    _c_template,
    _c_thresholds,
    _check_port,
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
    c_token_amount,
    c_url,
    url_ports,
)
from backends.config.crossref import _check_cycles, _dependency_exists, _ref, _scope_exists, _unique
from backends.config.errors import ConfigErrors, ConfigNotFound
from backends.config.limits import (
    _INTERVAL,
    _RUN_TIMEOUT,
    _TIMEOUT,
    COUNT_LIMITS,
    DURATION_LIMITS,
    PORT_RANGE,
    RECORD_LIMITS,
    SIGNER_LIMITS,
    SIZE_LIMITS,
    _fmt_count,
    _fmt_size,
    _range_expected,
    limits_comment,
)
from backends.config.load import (
    _TOML_POS,
    CONFIG_NAME,
    ENV_VAR,
    NOTHING_TO_WATCH,
    WATCH_SECTIONS,
    config_search_path,
    find_config,
    load_config,
    load_config_text,
    require_watch,
)
from backends.config.loader import _VAR_RE, _interpolate, _Loader, _Table
from backends.config.locate import (
    _BARE,
    _BASIC,
    _DOTTED,
    _HEADER_RE,
    _INLINE_KEY_RE,
    _KEY,
    _KEY_TOKEN,
    _KEYVAL_RE,
    _LITERAL,
    LineLocator,
    _split_dotted,
    _ValueScan,
    render_path,
)
from backends.config.model import (
    ActionConfig,
    AlertmanagerConfig,
    AlertSinkConfig,
    BalanceConfig,
    BreakersConfig,
    ChainConfig,
    CheckConfig,
    CommandConfig,
    Config,
    ContractConfig,
    DockerConfig,
    EscalationConfig,
    EscalationLevel,
    HostConfig,
    IncidentConfig,
    LogConfig,
    LogPatternConfig,
    OrdersConfig,
    OrdersCursorConfig,
    PagerDutyConfig,
    PostgresConfig,
    QueueConfig,
    RecordConfig,
    RedisConfig,
    ServiceConfig,
    SignerConfig,
    WarroomConfig,
    _default_state_dir,
    _placeholders,
    _plural,
)
from backends.config.parse import _SECTIONS, _parse
from backends.config.schema import (
    _QUEUE_PRESETS,
    ACTION_PARAM_TYPES,
    DEFAULT_ALERT_SEVERITY,
    DEFAULT_RESPONSE,
    DEFAULT_ROLES,
    QUEUE_TYPES,
    SERVICE_ROLES,
)
from backends.config.sections.actions import _STEP_EXPECTED, _steps, parse_actions, parse_playbooks
from backends.config.sections.chain import parse_chain
from backends.config.sections.checks import parse_alertmanager, parse_checks
from backends.config.sections.escalation import parse_escalation, parse_incident, parse_record
from backends.config.sections.logs import parse_log_patterns, parse_logs
from backends.config.sections.orders import parse_orders
from backends.config.sections.queues import _check_queue, parse_breakers, parse_queues
from backends.config.sections.services import (
    parse_commands,
    parse_docker,
    parse_host,
    parse_services,
)
from backends.config.sections.stores import parse_postgres, parse_redis
from backends.config.sections.warroom import parse_keys, parse_warroom
from backends.config.types import (
    _AMOUNT_RE,
    _AMOUNT_UNITS,
    _IDENT_PART,
    _SIZE_UNITS,
    _URL_RE,
    IDENT_RE,
    THEME_ALIASES,
    THEMES,
    Amount,
    Ident,
    Secret,
    TokenAmount,
    _register_url_parts,
    _register_url_password,
    parse_amount,
    parse_size,
    quote_ident,
    validate_ident,
)
from backends.errors import ConfigError
from backends.units import format_duration, parse_duration

# Everything the single module had is importable from the package, as before (the private
# names too: tests and backends/engine/semantic.py use some).
__all__ = [
    "ACTION_PARAM_TYPES", "ActionConfig", "AlertSinkConfig", "AlertmanagerConfig", "Amount",
    "BAD", "BalanceConfig", "BreakersConfig", "CONFIG_NAME", "COUNT_LIMITS", "ChainConfig",
    "CheckConfig", "CommandConfig", "Config", "ConfigError", "ConfigErrors", "ConfigNotFound",
    "ContractConfig", "DEFAULT_ALERT_SEVERITY", "DEFAULT_RESPONSE", "DEFAULT_ROLES",
    "DURATION_LIMITS", "DockerConfig", "ENV_VAR", "EscalationConfig", "EscalationLevel",
    "HostConfig", "IDENT_RE", "Ident", "IncidentConfig", "LineLocator", "LogConfig",
    "LogPatternConfig", "NOTHING_TO_WATCH", "OrdersConfig", "OrdersCursorConfig", "PORT_RANGE",
    "PagerDutyConfig", "Path_", "PostgresConfig", "QUEUE_TYPES", "QueueConfig", "RECORD_LIMITS",
    "RecordConfig", "RedisConfig", "SERVICE_ROLES", "SIGNER_LIMITS", "SIZE_LIMITS", "Secret",
    "ServiceConfig", "SignerConfig", "THEMES", "THEME_ALIASES", "TokenAmount", "WATCH_SECTIONS",
    "WarroomConfig", "c_action_id", "c_address", "c_amount", "c_bool", "c_count", "c_duration",
    "c_env_name", "c_glob", "c_ident", "c_int", "c_list", "c_name", "c_number", "c_opt",
    "c_path", "c_regex", "c_secret", "c_severity", "c_size", "c_str", "c_text", "c_theme",
    "c_token_amount", "c_url", "config_search_path", "expected_of", "find_config",
    "format_duration", "limits_comment", "load_config", "load_config_text", "parse_actions",
    "parse_alertmanager", "parse_amount", "parse_breakers", "parse_chain", "parse_checks",
    "parse_commands", "parse_docker", "parse_duration", "parse_escalation", "parse_host",
    "parse_incident", "parse_keys", "parse_log_patterns", "parse_logs", "parse_orders",
    "parse_playbooks", "parse_postgres", "parse_queues", "parse_record", "parse_redis",
    "parse_services", "parse_size", "parse_warroom", "quote_ident", "render_path",
    "require_watch", "url_ports", "validate_ident",
]
__all__ += [
    "_ACTION_ID_EXPECTED", "_ACTION_ID_RE", "_ADDRESS_EXPECTED", "_ADDRESS_RE",
    "_AMOUNT_EXPECTED", "_AMOUNT_RE", "_AMOUNT_UNITS", "_BARE", "_BASIC", "_Bad", "_DOTTED",
    "_DURATION_EXPECTED", "_ENV_NAME_RE", "_HEADER_RE", "_HOST_PORT_RE", "_IDENT_EXPECTED",
    "_IDENT_PART", "_INLINE_KEY_RE", "_INTERVAL", "_Invalid", "_KEY", "_KEYVAL_RE",
    "_KEY_TOKEN", "_LITERAL", "_Loader", "_NAME_RE", "_NETLOC_RE", "_PM2_APP",
    "_PM2_APP_EXPECTED", "_QUEUE_PRESETS", "_REQUIRED", "_RUN_TIMEOUT", "_SECRET_NAME",
    "_SECTIONS", "_SIZE_EXPECTED", "_SIZE_UNITS", "_STEP_EXPECTED", "_SkipBad",
    "_THEME_EXPECTED", "_TIMEOUT", "_TOKEN_AMOUNT_EXPECTED", "_TOKEN_AMOUNT_RE", "_TOML_POS",
    "_Table", "_URL_RE", "_VAR_RE", "_ValueScan", "_c_any_list", "_c_priority_steps",
    "_c_record", "_c_signer_duration", "_c_template", "_c_thresholds", "_check_cycles",
    "_check_port", "_check_queue", "_conv", "_default_state_dir", "_dependency_exists",
    "_fmt_count", "_fmt_size", "_interpolate", "_parse", "_placeholders", "_plural",
    "_range_expected", "_ref", "_register_url_parts", "_register_url_password", "_replace",
    "_scope_exists", "_split_dotted", "_steps", "_str_list", "_tname", "_unique",
]
