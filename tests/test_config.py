"""Config loader: strict validation, error locations, interpolation, secrets, lookup, `warroom check`.

Pure and fast: nothing here connects to anything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import backends.config as config_mod
from backends.config import (
    Amount,
    ConfigError,
    ConfigErrors,
    Ident,
    LineLocator,
    Secret,
    find_config,
    format_duration,
    load_config,
    load_config_text,
    parse_amount,
    parse_duration,
    parse_size,
    quote_ident,
)
from backends.errors import MASK, redact
from backends.model import Severity
from tui import cmd_check

ROOT = Path(__file__).resolve().parents[1]
FILE = "cfg.toml"

BASE = """\
[warroom]
name = "test-stack"

[postgres.main]
dsn = "postgresql://warroom:pgpass-4242@127.0.0.1:5432/app"

[redis.main]
url = "redis://127.0.0.1:6379/0"
"""

REFERENCE_ENV = {
    "DATABASE_URL": "postgresql://u:refpass-9999@127.0.0.1:5432/db",
    "RPC_URL": "http://127.0.0.1:8545",
    "ESCROW_CONTRACT_ADDRESS": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
}


def load(text: str, env: dict[str, str] | None = None, **kw):
    return load_config_text(textwrap.dedent(text), FILE, env=env or {}, **kw)


def errors_of(text: str, env: dict[str, str] | None = None) -> list[ConfigError]:
    with pytest.raises(ConfigError) as info:
        load(text, env)
    exc = info.value
    return exc.errors if isinstance(exc, ConfigErrors) else [exc]


def one_error(text: str, env: dict[str, str] | None = None) -> ConfigError:
    errs = errors_of(text, env)
    assert len(errs) == 1, "\n".join(str(e) for e in errs)
    return errs[0]


def line_no(text: str, needle: str) -> int:
    """1-based line of the first line containing needle (in the dedented text)."""
    for i, line in enumerate(textwrap.dedent(text).splitlines(), start=1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in text")


def assert_error(err: ConfigError, *, line: int, key: str, expected: str, message: str = "") -> None:
    text = str(err)
    assert err.file == FILE and text.startswith(f"{FILE}:{line}:"), text
    assert err.line == line, text
    assert err.key == key and f"key {key!r}" in text, text
    assert err.expected and expected in err.expected and expected in text, text
    if message:
        assert message in err.message, text


# ---------------------------------------------------------------------------
# The examples
# ---------------------------------------------------------------------------


def test_reference_example_loads_with_env():
    cfg = load_config(ROOT / "examples" / "reference.toml", env=REFERENCE_ENV)
    assert cfg.warroom.name == "meta-aggregator" and cfg.warroom.production
    assert cfg.postgres["main"].dsn.reveal() == REFERENCE_ENV["DATABASE_URL"]
    assert cfg.redis["main"].url.reveal() == "redis://127.0.0.1:6379/0"  # default applied
    chain = cfg.chain["polygon"]
    assert [e.reveal() for e in chain.endpoints] == ["http://127.0.0.1:8545"]  # empty backup dropped
    assert chain.contract("escrow").address == REFERENCE_ENV["ESCROW_CONTRACT_ADDRESS"]
    assert chain.contract("escrow").abi == ROOT / "examples" / "artifacts" / "Escrow.json"
    assert chain.balances[0].minimum == Amount(5 * 10**17, "ETH", 18)
    assert cfg.services[0].restart_via == "docker"
    assert cfg.services[1].restart_via == "pm2-restart" and cfg.command("pm2-restart").argv[0] == "pm2"
    assert cfg.services[1].match.search("node /app/listener.js")
    assert cfg.queues[0].thresholds == (1000, 10000, 50000)
    assert cfg.breakers.table == "circuit_breaker_state" and cfg.breakers.reset_timeout == 60
    assert cfg.orders.table.quoted == '"orders"' and cfg.orders.stuck_after == 600
    assert cfg.orders.cursor.table == "listener_cursor"
    assert cfg.orders.id_pattern.match("ORD-123") and not cfg.orders.id_pattern.match("x; drop")
    assert cfg.log_patterns[0].severity is Severity.P1
    assert cfg.checks[0].latency_warn == 0.5
    assert cfg.actions[0].params == {"file": "path", "database": "identifier"}
    assert cfg.escalation.ack_timeout == 1800 and cfg.escalation.pagerduty is None
    assert cfg.incident.response[Severity.P0] == 900 and cfg.incident.response[Severity.P3] == 86400
    assert cfg.host.cpu_warn == 80 and cfg.host.cpu_for == 300 and cfg.host.memory_warn == 85


def test_minimal_example_loads_with_and_without_env():
    path = ROOT / "examples" / "minimal.toml"
    cfg = load_config(path, env={})
    assert cfg.postgres["main"].dsn.reveal() == "postgresql://127.0.0.1:5432/postgres"
    assert cfg.redis["main"].url.reveal() == "redis://127.0.0.1:6379/0"
    assert [q.name for q in cfg.queues] == ["action_jobs"]
    cfg = load_config(path, env={"DATABASE_URL": "postgresql://x:minipass-77@127.0.0.1:1/db"})
    assert cfg.postgres["main"].dsn.reveal().startswith("postgresql://x:")


def test_defaults_from_the_seeds():
    cfg = load(
        BASE
        + """
        [host]
        [[queues]]
        name = "jobs"
        redis = "main"
        key = "action_jobs"
        [breakers]
        postgres = "main"
        [orders]
        postgres = "main"
        [[checks]]
        name = "api"
        kind = "http"
        url = "http://127.0.0.1:8080/health"
        """
    )
    assert cfg.queues[0].thresholds == (1000, 10000, 50000)
    assert cfg.orders.stuck_after == 600
    assert cfg.breakers.reset_timeout == 60 and cfg.breakers.table == "circuit_breaker_state"
    assert cfg.incident.response == {Severity.P0: 900, Severity.P1: 3600, Severity.P2: 14400, Severity.P3: 86400}
    h = cfg.host
    assert (h.cpu_warn, h.cpu_for, h.memory_warn, h.disk_warn) == (80, 300, 85, 80)
    assert cfg.postgres["main"].warn_connections == 50
    assert cfg.redis["main"].max_memory == 500 * 1024 * 1024
    assert cfg.checks[0].latency_warn == 0.5
    assert cfg.warroom.refresh == 2.0 and cfg.warroom.timeout == 5.0


def test_empty_config_is_valid_and_has_no_sources():
    cfg = load("")
    assert not cfg.postgres and not cfg.redis and not cfg.services and cfg.orders is None
    assert any(line.startswith("postgres: none") for line in cfg.summary())


# ---------------------------------------------------------------------------
# Bad input: every message names file, line, key and what was expected
# ---------------------------------------------------------------------------


def test_malformed_toml_reports_line_and_column():
    text = '[warroom]\nname = "x"\nrefresh = \n'
    err = one_error(text)
    assert err.file == FILE and err.line == 3
    assert "malformed TOML" in err.message and "column" in err.message
    assert str(err).startswith(f"{FILE}:3:") and "valid TOML" in str(err)


def test_malformed_toml_unclosed_table_header():
    err = one_error('[warroom]\nname = "x"\n\n[orders\n')
    assert err.line == 4 and "malformed TOML" in str(err)


def test_unknown_top_level_key():
    text = BASE + "\n[bogus]\na = 1\n"
    err = one_error(text)
    assert_error(err, line=line_no(text, "[bogus]"), key="bogus", expected="orders", message="unknown key 'bogus'")


def test_unknown_nested_key_suggests_the_right_one():
    text = """\
    [postgres.main]
    dsn = "postgresql://127.0.0.1/db"
    timout = "3s"
    """
    err = one_error(text)
    assert_error(err, line=3, key="postgres.main.timout", expected="timeout", message="did you mean 'timeout'")


def test_unknown_key_in_array_of_tables_and_sub_tables():
    text = (
        BASE
        + """
        [[commands]]
        name = "a"
        argv = ["true"]

        [[services]]
        name = "one"
        kind = "process"
        match = "one"

        [[services]]
        name = "two"
        kind = "process"
        matchh = "two"
        match = "two"

        [orders]
        postgres = "main"

        [orders.cursor]
        table = "cursor"
        bogus = 1
        """
    )
    errs = errors_of(text)
    assert len(errs) == 2, errs
    assert_error(errs[0], line=line_no(text, "matchh"), key="services[1].matchh", expected="match")
    assert_error(errs[1], line=line_no(text, "bogus"), key="orders.cursor.bogus", expected="key_column")


def test_wrong_types():
    text = """\
    [warroom]
    name = 5
    read_only = "maybe"

    [postgres.main]
    dsn = "postgresql://127.0.0.1/db"
    pool_max = "two"
    timeout = true
    """
    errs = errors_of(text)
    assert [e.key for e in errs] == ["warroom.name", "warroom.read_only", "postgres.main.pool_max",
                                     "postgres.main.timeout"]
    assert_error(errs[0], line=2, key="warroom.name", expected="a string", message="got an integer")
    assert_error(errs[1], line=3, key="warroom.read_only", expected="true or false")
    assert_error(errs[2], line=7, key="postgres.main.pool_max", expected="an integer between 1 and 100")
    assert_error(errs[3], line=8, key="postgres.main.timeout", expected="a duration", message="got a boolean")


def test_section_of_the_wrong_shape():
    err = one_error('[services]\nname = "x"\n')
    assert_error(err, line=1, key="services", expected="[[services]] entries", message="array of tables")
    err = one_error('postgres = "postgresql://127.0.0.1/db"\n')
    assert_error(err, line=1, key="postgres", expected="[postgres.NAME] tables")


def test_missing_required_key_points_at_the_table():
    text = BASE + '\n[[queues]]\nname = "jobs"\nkey = "k"\n'
    err = one_error(text)
    assert_error(err, line=line_no(text, "[[queues]]"), key="queues[0]", expected="a name",
                 message="missing required key 'redis'")


@pytest.mark.parametrize(
    "key,section",
    [
        ("table", "[orders]\npostgres = \"main\"\n"),
        ("state_column", "[orders]\npostgres = \"main\"\n"),
        ("id_column", "[breakers]\npostgres = \"main\"\n"),
    ],
)
def test_bad_sql_identifier(key, section):
    name = section.split("]")[0].strip("[")
    text = BASE + "\n" + section + f'{key} = "orders; drop table x"\n'
    err = one_error(text)
    assert_error(err, line=line_no(text, "drop table"), key=f"{name}.{key}",
                 expected="^[A-Za-z_][A-Za-z0-9_]*$", message="invalid SQL identifier 'orders; drop table x'")


def test_bad_identifier_in_cursor_and_schema_table_ok():
    text = BASE + '\n[orders]\npostgres = "main"\ntable = "app.orders"\n[orders.cursor]\ntable = "a.b.c"\n'
    err = one_error(text)
    assert_error(err, line=line_no(text, "a.b.c"), key="orders.cursor.table", expected="schema.table")


def test_quote_ident():
    assert quote_ident("orders") == '"orders"'
    assert quote_ident("app.orders") == '"app"."orders"'
    assert Ident("x_1").quoted == '"x_1"'
    for bad in ("orders; drop table x", 'a"b', "1abc", "a.b.c", "", "a b", "a.", "ä"):
        with pytest.raises(ValueError):
            quote_ident(bad)


@pytest.mark.parametrize("value", ['"5 minutes"', '"10x"', '"-1s"', '"s"', '""', "-5", '"1h 5"'])
def test_bad_duration(value):
    text = f"[warroom]\nname = \"x\"\nrefresh = {value}\n"
    err = one_error(text)
    assert_error(err, line=3, key="warroom.refresh", expected='"500ms", "10s", "5m"')


def test_durations():
    assert parse_duration("500ms") == 0.5
    assert parse_duration("10s") == 10 and parse_duration("5m") == 300
    assert parse_duration("2h") == 7200 and parse_duration("1d") == 86400
    assert parse_duration("1h30m") == 5400 and parse_duration(7) == 7.0 and parse_duration(0.25) == 0.25
    assert parse_duration("1.5s") == 1.5 and parse_duration("0m") == 0
    assert format_duration(0.5) == "500ms" and format_duration(600) == "10m"
    assert format_duration(5400) == "1h30m" and format_duration(86400) == "1d"


def test_amounts():
    assert parse_amount("5 ether") == Amount(5 * 10**18, "ETH", 18)
    assert parse_amount("0.5 gwei") == Amount(5 * 10**8, "ETH", 18)
    assert parse_amount("1000 wei") == Amount(1000, "ETH", 18)
    assert parse_amount("12.5 GAS") == Amount(1_250_000_000, "GAS", 8)
    assert parse_amount("3 NEO") == Amount(3, "NEO", 0)
    assert parse_amount(42) == Amount(42)
    assert str(parse_amount("12.5 GAS")) == "12.5 GAS" and str(parse_amount("5 ether")) == "5 ETH"


@pytest.mark.parametrize("value,why", [
    ('"5 bananas"', "unknown unit"),
    ('"0.5 wei"', "more decimals"),
    ('"1.123456789 GAS"', "more decimals"),
    ('"0.5 NEO"', "more decimals"),
    ('"1.5"', "whole"),
    ("-1", "negative"),
    ('"ether"', "invalid amount"),
    ("1.5", "got a number"),
])
def test_bad_amount(value, why):
    text = (
        '[chain.eth]\nkind = "evm"\nendpoints = ["http://127.0.0.1:8545"]\n\n'
        '[[chain.eth.balances]]\nname = "gasbank"\n'
        'address = "0x0000000000000000000000000000000000000001"\n'
        f"minimum = {value}\n"
    )
    err = one_error(text)
    assert_error(err, line=8, key="chain.eth.balances[0].minimum", expected='"12.5 GAS"', message=why)


def test_sizes():
    assert parse_size("500MB") == 500 * 1024**2 and parse_size("2 GB") == 2 * 1024**3
    assert parse_size(1234) == 1234 and parse_size("512kb") == 512 * 1024
    text = BASE + 'max_memory = "lots"\n'
    err = one_error(text)
    assert_error(err, line=line_no(text, "max_memory"), key="redis.main.max_memory", expected='"500MB"')


def test_bad_regex_and_severity():
    text = BASE + '\n[[log_patterns]]\npattern = "(unclosed"\nseverity = "P7"\n'
    errs = errors_of(text)
    assert_error(errs[0], line=line_no(text, "unclosed"), key="log_patterns[0].pattern",
                 expected="regular expression")
    assert_error(errs[1], line=line_no(text, "P7"), key="log_patterns[0].severity", expected="P0, P1, P2 or P3")


def test_bad_enum_choice_and_url_scheme():
    text = """\
    [redis.main]
    url = "http://127.0.0.1:6379"

    [[queues]]
    name = "q"
    redis = "main"
    key = "k"
    type = "heap"
    thresholds = [10, 5, 50]
    """
    errs = errors_of(text)
    assert_error(errs[0], line=2, key="redis.main.url", expected="redis://", message="unsupported scheme")
    assert_error(errs[1], line=8, key="queues[0].type", expected="list, stream, zset")
    assert_error(errs[2], line=9, key="queues[0].thresholds", expected="increasing")


def test_several_errors_reported_together():
    text = """\
    [warroom]
    refresh = "soon"

    [postgres.main]
    dsn = "${MISSING_DSN}"

    [orders]
    postgres = "main"
    table = "x y"
    """
    with pytest.raises(ConfigErrors) as info:
        load(text)
    assert [e.line for e in info.value.errors] == [2, 5, 9]
    rendered = str(info.value)
    assert rendered.startswith("3 errors") and "MISSING_DSN" in rendered and "x y" in rendered


# ---------------------------------------------------------------------------
# Environment interpolation
# ---------------------------------------------------------------------------


def test_missing_env_var_names_the_variable_key_and_line():
    text = """\
    [postgres.main]
    dsn = "${DATABASE_URL}"

    [chain.poly]
    endpoints = ["${RPC_URL}", "${RPC_BACKUP:-}"]
    """
    errs = errors_of(text)
    assert len(errs) == 2
    assert_error(errs[0], line=2, key="postgres.main.dsn", expected="DATABASE_URL",
                 message="environment variable DATABASE_URL is not set")
    assert_error(errs[1], line=5, key="chain.poly.endpoints[0]", expected="${RPC_URL:-value}",
                 message="environment variable RPC_URL is not set")


def test_interpolation_with_defaults():
    text = """\
    [warroom]
    name = "${STACK:-fallback}-${REGION:-eu}"
    operator = "${WARROOM_OPERATOR:-}"
    environment = "$${NOT_A_VAR}"
    refresh = "${REFRESH:-3s}"

    [postgres.main]
    dsn = "postgresql://${PGUSER:-app}:${PGPASS}@127.0.0.1:${PGPORT:-5432}/db"
    pool_max = "${POOL:-4}"
    """
    cfg = load(text, env={"STACK": "prod", "PGPASS": "s3cret-pass", "REGION": ""})
    assert cfg.warroom.name == "prod-eu"  # set-but-empty uses the default
    assert cfg.warroom.operator == ""
    assert cfg.warroom.environment == "${NOT_A_VAR}"
    assert cfg.warroom.refresh == 3.0
    assert cfg.postgres["main"].dsn.reveal() == "postgresql://app:s3cret-pass@127.0.0.1:5432/db"
    assert cfg.postgres["main"].pool_max == 4
    cfg = load(text, env={"PGPASS": "x-pass-1", "REFRESH": "500ms", "POOL": "9"})
    assert cfg.warroom.refresh == 0.5 and cfg.postgres["main"].pool_max == 9


def test_set_empty_var_without_default_is_kept():
    cfg = load('[warroom]\noperator = "${OPERATOR}"\n', env={"OPERATOR": ""})
    assert cfg.warroom.operator == ""


def test_bad_variable_reference():
    err = one_error('[warroom]\nname = "${1BAD}"\n')
    assert_error(err, line=2, key="warroom.name", expected="${NAME}", message="bad variable reference")


# ---------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------


def test_secret_masking_everywhere():
    secret = "pw-that-must-not-leak-123"
    text = """\
    [postgres.main]
    dsn = "postgresql://app:${PGPASS}@127.0.0.1:5432/db"

    [escalation.pagerduty]
    routing_key = "${PD_KEY}"

    [[escalation.levels]]
    name = "dev"
    channels = ["json://127.0.0.1:9999/hook?token=${HOOK_TOKEN}"]
    """
    cfg = load(text, env={"PGPASS": secret, "PD_KEY": "routing-key-0123456789", "HOOK_TOKEN": "hook-token-xyz"})
    dsn = cfg.postgres["main"].dsn
    assert isinstance(dsn, Secret)
    assert str(dsn) == MASK and f"{dsn}" == MASK and f"{dsn:>10}".strip() == MASK and "%s" % (dsn,) == MASK  # noqa: UP031
    assert secret not in repr(dsn) and secret not in repr(cfg.postgres["main"]) and secret not in repr(cfg)
    assert dsn.reveal().endswith("@127.0.0.1:5432/db") and secret in dsn.reveal()
    assert dsn.display() == "postgresql://127.0.0.1:5432"
    rk = cfg.escalation.pagerduty.routing_key
    assert str(rk) == MASK and rk.reveal() == "routing-key-0123456789"
    summary = "\n".join(cfg.summary())
    for value in (secret, "routing-key-0123456789", "hook-token-xyz"):
        assert value not in summary and value not in repr(cfg)
        # registered: redact() scrubs it from any text
        assert value not in redact(f"error talking to backend: {value}")
    assert "pagerduty configured" in summary


def test_url_secrets_register_only_their_secret_parts():
    cfg = load(
        """\
        [postgres.main]
        dsn = "postgresql://app:dsn-pass-5150@127.0.0.1:5432/app"

        [redis.main]
        url = "redis://127.0.0.1:6390/0"

        [chain.eth]
        endpoints = ["https://rpc.example.invalid/v2/abcdefghijklmnopqrstuvwx"]
        """
    )
    # the connection address stays readable in redacted text; the password and API key never do
    assert redact("cannot reach redis://127.0.0.1:6390/0") == "cannot reach redis://127.0.0.1:6390/0"
    dsn = redact(cfg.postgres["main"].dsn.reveal())
    assert dsn == f"postgresql://app:{MASK}@127.0.0.1:5432/app"
    assert redact("auth failed: dsn-pass-5150") == f"auth failed: {MASK}"
    assert "abcdefghijklmnopqrstuvwx" not in redact("POST /v2/abcdefghijklmnopqrstuvwx: 429")
    assert cfg.chain["eth"].endpoints[0].display() == "https://rpc.example.invalid"


def test_secret_named_env_value_is_not_echoed_in_errors():
    err = one_error('[postgres.main]\ndsn = "postgresql://127.0.0.1/db"\npool_max = "${DB_PASSWORD}"\n',
                    env={"DB_PASSWORD": "hunter2-hunter2"})
    assert err.key == "postgres.main.pool_max" and "hunter2-hunter2" not in str(err)


def test_secret_is_not_echoed_in_errors():
    err = one_error('[postgres.main]\ndsn = "mysql://root:topsecret-99@127.0.0.1/db"\n')
    assert "topsecret-99" not in str(err)
    assert_error(err, line=2, key="postgres.main.dsn", expected="postgresql://")


# ---------------------------------------------------------------------------
# Cross references
# ---------------------------------------------------------------------------


def test_bad_cross_references():
    text = (
        BASE
        + """
        [chain.poly]
        endpoints = ["http://127.0.0.1:8545"]

        [[chain.poly.contracts]]
        name = "escrow"
        address = "0x0000000000000000000000000000000000000002"

        [[commands]]
        name = "pm2-restart"
        argv = ["pm2", "restart", "{service}"]

        [[services]]
        name = "listener"
        kind = "process"
        match = "listener"
        restart_command = "pm2-restrat"
        depends_on = ["postgres", "nowhere"]

        [[queues]]
        name = "jobs"
        redis = "cache"
        key = "action_jobs"

        [orders]
        postgres = "primary"
        chain = "poly"
        contract = "escrowx"

        [[actions]]
        name = "dump"
        argv = ["pg_dump", "{database}"]
        scope = "postgres.other"
        params = { database = "identifier" }
        """
    )
    errs = errors_of(text)
    got = {e.key: e for e in errs}
    assert set(got) == {
        "services[0].restart_command", "services[0].depends_on[1]", "queues[0].redis",
        "orders.postgres", "orders.contract", "actions[0].scope",
    }, [str(e) for e in errs]
    assert_error(got["services[0].restart_command"], line=line_no(text, "pm2-restrat"),
                 key="services[0].restart_command", expected="pm2-restart", message="[[commands]]")
    assert_error(got["queues[0].redis"], line=line_no(text, 'redis = "cache"'), key="queues[0].redis",
                 expected="one of: main", message="'cache' does not name a [redis.NAME]")
    assert_error(got["orders.postgres"], line=line_no(text, '"primary"'), key="orders.postgres",
                 expected="main")
    assert_error(got["orders.contract"], line=line_no(text, "escrowx"), key="orders.contract",
                 expected="escrow")
    assert_error(got["services[0].depends_on[1]"], line=line_no(text, "nowhere"),
                 key="services[0].depends_on[1]", expected="a service name")
    assert_error(got["actions[0].scope"], line=line_no(text, "postgres.other"), key="actions[0].scope",
                 expected="postgres.NAME")


def test_orders_chain_must_exist_and_restart_docker_needs_docker_kind():
    text = BASE + (
        '\n[orders]\npostgres = "main"\nchain = "mainnet"\n'
        '\n[[services]]\nname = "w"\nkind = "process"\nmatch = "w"\nrestart = "docker"\n'
    )
    errs = errors_of(text)
    assert_error(errs[0], line=line_no(text, "mainnet"), key="orders.chain", expected="[chain.NAME]")
    assert_error(errs[1], line=line_no(text, 'restart = "docker"'), key="services[0].restart",
                 expected="[[commands]] name")


def test_dependency_cycle_and_duplicates():
    text = """\
    [[services]]
    name = "a"
    kind = "process"
    match = "a"
    depends_on = ["b"]

    [[services]]
    name = "b"
    kind = "process"
    match = "b"
    depends_on = ["a"]

    [[services]]
    name = "a"
    kind = "process"
    match = "a2"
    """
    errs = errors_of(text)
    msgs = [str(e) for e in errs]
    assert any("dependency cycle" in m for m in msgs), msgs
    dup = next(e for e in errs if "duplicate" in e.message)
    assert_error(dup, line=14, key="services[2].name", expected="unique")


def test_action_placeholders_must_be_declared():
    text = '[[actions]]\nname = "x"\nargv = ["tool", "{target}"]\n'
    err = one_error(text)
    assert_error(err, line=3, key="actions[0].argv", expected="declared in params", message="target")


def test_check_sql_must_be_read_only():
    text = BASE + '\n[[checks]]\nname = "c"\nkind = "sql"\npostgres = "main"\nquery = "DELETE FROM orders"\n'  # noqa: S608
    err = one_error(text)
    assert_error(err, line=line_no(text, "DELETE"), key="checks[0].query", expected="SELECT")


def test_keys_section():
    cfg = load('[keys]\nrestart = "X"\nfix = ["f", "ctrl+f"]\norders_bulk_fix = "F,shift+f"\n')
    assert cfg.keys == {"restart": "X", "fix": "f,ctrl+f", "orders_bulk_fix": "F,shift+f"}
    err = one_error('[keys]\nrestart = 5\n')
    assert_error(err, line=2, key="keys.restart", expected="a key")
    err = one_error('[keys]\n"Orders fix" = "F"\n')
    assert_error(err, line=2, key='keys."Orders fix"', expected="orders_bulk_fix", message="bad binding id")


def test_keys_hint_names_real_binding_ids():
    """The ids the [keys] hint and the reference example use exist, and the reference's
    example key collides with no other binding."""
    from textual.binding import Binding

    import widgets
    from tui import bindings
    from tui.screens import dashboard  # noqa: F401 - the panes' modules

    found: dict[str, set[str]] = {}
    bound = list(bindings.APP_BINDINGS) + list(bindings.DASHBOARD_BINDINGS)
    for mod in __import__("pkgutil").iter_modules(widgets.__path__):
        m = __import__(f"widgets.{mod.name}", fromlist=["_"])
        for obj in vars(m).values():
            if isinstance(obj, type) and isinstance(getattr(obj, "BINDINGS", None), list):
                bound += [b for b in obj.BINDINGS if isinstance(b, Binding)]
    for b in bound:
        for k in b.key.split(","):
            found.setdefault(k.strip(), set()).add(b.id)
    ids = {b.id for b in bound}
    assert {"restart", "orders_bulk_fix"} <= ids and "orders.fix" not in ids
    text = (ROOT / "examples" / "reference.toml").read_text()
    example = next(line for line in text.splitlines() if line.lstrip("# ").startswith("restart ="))
    keys = example.split("=", 1)[1].split("#")[0].strip().strip('"').split(",")
    for k in keys:
        assert found.get(k, set()) <= {"restart"}, f"{k!r} is also bound to {found[k]}"


def test_theme_names_and_aliases():
    assert load('[warroom]\ntheme = "high-contrast"\n').warroom.theme == "high-contrast"
    assert load('[warroom]\ntheme = "hc"\n').warroom.theme == "high-contrast"
    assert load('[warroom]\ntheme = "Colourblind"\n').warroom.theme == "colorblind"
    assert load('[warroom]\ntheme = "default"\n').warroom.theme == "dark"
    err = one_error('[warroom]\ntheme = "neon"\n')
    assert_error(err, line=2, key="warroom.theme", expected="dark | light | high-contrast | colorblind",
                 message="unknown theme 'neon'")
    assert "hc = high-contrast" in err.expected
    err = one_error('[warroom]\ntheme = "ligth"\n')
    assert "did you mean 'light'" in err.message


def test_theme_names_match_the_themes_package():
    """config.py keeps its own list (backends never import the console's themes): same names."""
    import themes
    from backends import config

    assert set(config.THEMES) == set(themes.THEME_NAMES) == set(themes._SPECS)
    assert config.THEME_ALIASES == themes.ALIASES
    for name in (*config.THEMES, *config.THEME_ALIASES):
        assert themes.resolve_name(name) == load(f'[warroom]\ntheme = "{name}"\n').warroom.theme


# ---------------------------------------------------------------------------
# The line locator
# ---------------------------------------------------------------------------


def test_line_locator():
    text = textwrap.dedent(
        """\
        # comment [not.a.table]
        top = 1
        [a]
        x = 1
        s = \"\"\"
        [fake]
        y = 2
        \"\"\"
        arr = [
          "b = c",
          { z = 1 },
        ]
        after = 3
        [[b]]
        k = 1
        [[b]]
        k = 2
        [b.sub]
        m = 1
        [[b.items]]
        n = 1
        [c."quoted.key"]
        "P0" = "15m"
        d.e = 4
        """
    )
    loc = LineLocator(text)
    assert loc.line_of(("top",)) == 2
    assert loc.line_of(("a", "x")) == 4
    assert loc.line_of(("fake",)) is None and loc.line_of(("a", "y")) == 3  # falls back to the table
    assert loc.line_of(("a", "arr")) == 9 and loc.line_of(("a", "arr", 0)) == 10
    assert loc.line_of(("a", "arr", 1, "z")) == 11  # an element of a multi-line array: its own line
    assert loc.line_of(("a", "after")) == 13
    assert loc.line_of(("b", 0)) == 14 and loc.line_of(("b", 0, "k")) == 15
    assert loc.line_of(("b", 1)) == 16 and loc.line_of(("b", 1, "k")) == 17
    assert loc.line_of(("b", 1, "sub", "m")) == 19
    assert loc.line_of(("b", 1, "items", 0, "n")) == 21
    assert loc.line_of(("c", "quoted.key", "P0")) == 23
    assert loc.line_of(("c", "quoted.key", "d", "e")) == 24


def test_line_locator_multiline_arrays_of_inline_tables():
    text = textwrap.dedent(
        """\
        [[p]]
        steps = [  # comment [ not { counted
          { text = "a, b ] }", n = 1 },
          "x",

          { text = '''multi
        line''', deep = { k = [
            1,
            2,
          ] } },
        ]
        after = 1
        """
    )
    loc = LineLocator(text)
    assert loc.line_of(("p", 0, "steps")) == 2
    assert loc.line_of(("p", 0, "steps", 0)) == 3 and loc.line_of(("p", 0, "steps", 0, "n")) == 3
    assert loc.line_of(("p", 0, "steps", 1)) == 4
    assert loc.line_of(("p", 0, "steps", 2, "text")) == 6
    assert loc.line_of(("p", 0, "steps", 2, "deep", "k", 1)) == 9
    assert loc.line_of(("p", 0, "after")) == 12


# ---------------------------------------------------------------------------
# Lookup order
# ---------------------------------------------------------------------------


def _write(path: Path, name: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[warroom]\nname = "{name}"\n[host]\n')  # [host]: something to watch
    return path


@pytest.fixture
def places(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    xdg = tmp_path / "xdg"
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.delenv("WARROOM_CONFIG", raising=False)
    return {
        "explicit": tmp_path / "explicit.toml",
        "env": tmp_path / "env.toml",
        "cwd": cwd / "warroom.toml",
        "xdg": xdg / "warroom" / "warroom.toml",
    }


def test_lookup_order(places, monkeypatch):
    for name, p in places.items():
        _write(p, name)
    monkeypatch.setenv("WARROOM_CONFIG", str(places["env"]))
    assert find_config(str(places["explicit"])) == places["explicit"]
    assert find_config(None) == places["env"]
    monkeypatch.delenv("WARROOM_CONFIG")
    assert find_config(None).resolve() == places["cwd"].resolve()
    places["cwd"].unlink()
    assert find_config(None) == places["xdg"]
    assert load_config(find_config(None)).warroom.name == "xdg"


def test_lookup_explicit_or_env_missing_is_an_error(places, monkeypatch):
    _write(places["cwd"], "cwd")
    with pytest.raises(ConfigError) as info:
        find_config(str(places["explicit"]))
    assert str(places["explicit"]) in str(info.value) and "--config" in str(info.value)
    monkeypatch.setenv("WARROOM_CONFIG", str(places["env"]))
    with pytest.raises(ConfigError) as info:
        find_config(None)
    assert "$WARROOM_CONFIG" in str(info.value)


def test_lookup_nothing_found_lists_where_it_looked(places):
    with pytest.raises(ConfigError) as info:
        find_config(None)
    text = str(info.value)
    assert "no configuration file found" in text
    assert "--config: not set" in text and "$WARROOM_CONFIG: not set" in text
    assert str(places["cwd"]) in text and str(places["xdg"]) in text


def test_load_config_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert "nope.toml" in str(info.value) and "not found" in str(info.value)


# ---------------------------------------------------------------------------
# warroom check
# ---------------------------------------------------------------------------


def test_check_run_valid_and_invalid(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    good = ROOT / "examples" / "minimal.toml"
    assert cmd_check.run(argparse.Namespace(config=str(good))) == 0
    out = capsys.readouterr()
    assert "stack: minimal" in out.out and "queues: 1 (action_jobs" in out.out and out.err == ""
    bad = tmp_path / "bad.toml"
    bad.write_text('[orders]\npostgres = "main"\ntable = "orders; drop table x"\n')
    assert cmd_check.run(argparse.Namespace(config=str(bad))) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert f"{bad}:3" in out.err and "orders.table" in out.err and "orders; drop table x" in out.err
    assert f"{bad}:2" in out.err and "'main' does not name a [postgres.NAME]" in out.err


def test_check_add_arguments():
    parser = argparse.ArgumentParser()
    cmd_check.add_arguments(parser)
    assert parser.parse_args(["--config", "x.toml"]).config == "x.toml"
    assert getattr(parser.parse_args([]), "config", None) is None


def _run_check(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    full_env = {k: v for k, v in os.environ.items() if k not in ("WARROOM_CONFIG", "DATABASE_URL")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "tui.cmd_check", *args], capture_output=True, text=True,
        env=full_env, cwd=cwd or ROOT, timeout=60,
    )


def test_check_subprocess_exit_codes(tmp_path):
    ok = _run_check("--config", str(ROOT / "examples" / "reference.toml"), env=REFERENCE_ENV)
    assert ok.returncode == 0, ok.stderr
    assert "chains: 1 (polygon" in ok.stdout and "refpass-9999" not in ok.stdout + ok.stderr
    missing = _run_check("--config", str(ROOT / "examples" / "reference.toml"))
    assert missing.returncode == 2
    assert "DATABASE_URL" in missing.stderr and "reference.toml:" in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[warroom\n")
    res = _run_check("--config", str(bad))
    assert res.returncode == 2 and "malformed TOML" in res.stderr and f"{bad}:1" in res.stderr
    # no --config, nothing found anywhere
    res = _run_check(cwd=tmp_path, env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert res.returncode == 2 and "no configuration file found" in res.stderr


def test_check_imports_nothing_heavy():
    code = (
        "import json, sys\n"
        "from tui import cmd_check\n"
        f"rc = cmd_check.main(['--config', {str(ROOT / 'examples' / 'reference.toml')!r}])\n"
        # apprise is not in the list: check parses the channel URLs with it (backends.engine.semantic)
        "heavy = ['asyncpg', 'redis', 'web3', 'docker', 'textual', 'psutil', 'eth_account',\n"
        "         'prometheus_client', 'widgets']\n"
        "print(json.dumps({'rc': rc, 'loaded': [m for m in heavy if m in sys.modules]}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "WARROOM_CONFIG"}
    env.update(REFERENCE_ENV, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result == {"rc": 0, "loaded": []}


# ---------------------------------------------------------------------------
# Shapes other modules read
# ---------------------------------------------------------------------------


def test_neo_chain_jsonrpc_defaults():
    cfg = load(
        """\
        [chain.neo]
        kind = "jsonrpc"
        endpoints = ["http://127.0.0.1:10332", "${NEO_BACKUP:-}"]
        max_head_age = "2m"
        """
    )
    neo = cfg.chain["neo"]
    assert neo.head_method == "getblockcount" and neo.head_offset == -1 and neo.hash_method == "getblockhash"
    assert len(neo.endpoints) == 1 and neo.max_head_age == 120.0
    assert neo.contracts == () and neo.balances == ()


def test_jsonrpc_chain_refuses_contracts_and_balances():
    """Neo contract state and GAS balances are command checks: the EVM-only tables are an error
    at their own line, pointing at [[checks]] kind = "command"."""
    text = """\
        [chain.neo]
        kind = "jsonrpc"
        endpoints = ["http://127.0.0.1:10332"]

        [[chain.neo.contracts]]
        name = "gasbank"
        address = "0x0000000000000000000000000000000000000003"

        [[chain.neo.balances]]
        name = "platform"
        address = "NXV7ZhHiyM1aHXwpVsRZC6BwNFP2jghXAq"
        minimum = "12.5 GAS"

        [[chain.neo.balances]]
        name = "raw"
        address = "NXV7ZhHiyM1aHXwpVsRZC6BwNFP2jghXAq"
        """
    contracts, balances = errors_of(text)
    assert_error(contracts, line=line_no(text, "[[chain.neo.contracts]]"), key="chain.neo.contracts[0]",
                 expected='[[checks]] kind = "command"', message='kind = "jsonrpc"')
    assert_error(balances, line=line_no(text, "[[chain.neo.balances]]"), key="chain.neo.balances[0]",
                 expected='[[checks]] kind = "command"', message="EVM chains only")
    assert "neo-n3.toml" in balances.expected


def test_token_balances():
    head = ('[chain.eth]\nendpoints = ["http://127.0.0.1:8545"]\n'
            '[[chain.eth.contracts]]\nname = "usdc"\naddress = "0x0000000000000000000000000000000000000003"\n')
    holder = 'address = "0x0000000000000000000000000000000000000001"\n'
    cfg = load(head
               + '[[chain.eth.balances]]\nname = "a"\n' + holder + 'token = "usdc"\nminimum = "1000 USDC"\n'
               + '[[chain.eth.balances]]\nname = "b"\n' + holder
               + 'token = "0x0000000000000000000000000000000000000004"\nminimum = "2.5 DAI"\ndecimals = 18\n'
               + '[[chain.eth.balances]]\nname = "c"\n' + holder + 'token = "usdc"\nminimum = 5\n'
               + '[[chain.eth.balances]]\nname = "d"\n' + holder + 'minimum = "1 ether"\n')
    a, b, c, d = cfg.chain["eth"].balances
    assert (a.token, a.symbol, a.decimals, str(a.minimum)) == ("usdc", "USDC", None, "1000 USDC")
    assert (int(b.minimum), b.symbol, b.decimals, str(b.minimum)) == (25 * 10**17, "DAI", 18, "2.5 DAI")
    assert (int(c.minimum), c.symbol, c.decimals) == (5, None, None)  # symbol() / decimals() read on chain
    assert (d.token, d.symbol, d.decimals, int(d.minimum)) == (None, "ETH", 18, 10**18)
    # errors: unknown contract name, a native-coin minimum for a token, a symbol mismatch
    text = head + '[[chain.eth.balances]]\nname = "x"\n' + holder + 'token = "usdt"\n'
    assert_error(one_error(text), line=line_no(text, "usdt"), key="chain.eth.balances[0].token",
                 expected="[[chain.eth.contracts]] entry (usdc)", message="did you mean 'usdc'")
    text = head + '[[chain.eth.balances]]\nname = "x"\n' + holder + 'token = "usdc"\nminimum = "5 ether"\n'
    assert_error(one_error(text), line=line_no(text, "5 ether"), key="chain.eth.balances[0].minimum",
                 expected="1000 USDC", message="native coin")
    text = (head + '[[chain.eth.balances]]\nname = "x"\n' + holder
            + 'token = "usdc"\nminimum = "5 USDT"\nsymbol = "USDC"\n')
    assert_error(one_error(text), line=line_no(text, "5 USDT"), key="chain.eth.balances[0].minimum",
                 expected="a minimum in USDC", message="minimum is in USDT")


def test_bad_address_and_no_endpoints():
    text = '[chain.c]\nendpoints = ["${RPC_URL:-}"]\n[[chain.c.contracts]]\nname = "x"\naddress = "0x12"\n'
    errs = errors_of(text)
    assert_error(errs[0], line=2, key="chain.c.endpoints", expected="at least one http(s)://")
    assert_error(errs[1], line=5, key="chain.c.contracts[0].address", expected="0x address")


def test_orders_settled_state_and_paths(tmp_path):
    text = BASE + (
        '\n[orders]\npostgres = "main"\ntarget_states = ["DONE", "FAILED"]\n'
        '\n[[logs]]\nname = "listener"\npath = "logs/*.log"\n'
    )
    cfg = load_config_text(text, FILE, env={}, base_dir=tmp_path)
    assert cfg.orders.settled_state == "DONE"
    assert cfg.logs[0].path == str(tmp_path / "logs" / "*.log")
    assert cfg.warroom.audit_path is not None and cfg.warroom.audit_path.name == "audit.jsonl"
    assert cfg.audit_path == cfg.warroom.audit_path
    err = one_error(BASE + '\n[orders]\npostgres = "main"\nsettled_state = "PAID"\n')
    assert err.key == "orders.settled_state" and "SETTLED" in err.expected


def test_incident_response_keys_are_severities():
    text = '[incident]\nroles = ["IC"]\n[incident.response]\nP0 = "10m"\nP9 = "1h"\n'
    err = one_error(text)
    assert_error(err, line=5, key="incident.response.P9", expected="P0, P1, P2 or P3")
    cfg = load('[incident.response]\nP0 = "10m"\n')
    assert cfg.incident.response[Severity.P0] == 600 and cfg.incident.response[Severity.P1] == 3600


def test_load_config_none_uses_the_lookup(places):
    _write(places["xdg"], "from-xdg")
    assert load_config(None).warroom.name == "from-xdg"


def test_loading_connects_to_nothing(monkeypatch):
    import socket

    def refuse(*a, **k):
        raise AssertionError("config loading tried to open a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    cfg = load_config(ROOT / "examples" / "reference.toml", env=REFERENCE_ENV)
    assert cfg.summary()


# ---------------------------------------------------------------------------
# [[playbooks]]
# ---------------------------------------------------------------------------

PLAYBOOKS = """\
[[actions]]
name = "refill"
argv = ["/bin/echo", "refill"]
danger = "typed"

[[playbooks]]
id = "bridge-stalled"
title = "Bridge relayer stalled"
severity = "P1"
budget = "10 min"
symptoms = ["No relayed messages for 10 minutes"]
seed = "runbook 7"
escalate_to = "Bridge team"
diagnosis = [
  { text = "Relayer process", check = "services" },
  { text = "Relayer logs", check = "logs", budget = "2 min" },
]

[[playbooks.resolution]]
text = "Restart the relayer"
action = "service.restart"
key = "r"
targets = ["service:"]

[[playbooks.resolution]]
text = "Escalate"
action = "escalate"
key = "e"

[[playbooks]]
id = "gas-low"
title = "Gas bank low (our procedure)"
severity = "P1"
symptoms = ["Sponsored transactions failing"]
resolution = [{ text = "Refill from the treasury", action = "command.refill", key = "g" }]

[[services]]
name = "relayer"
kind = "process"
match = "relayer"
playbook = "bridge-stalled"

[[log_patterns]]
pattern = "relay failed"
playbook = "bridge-stalled"

[[checks]]
name = "gas"
kind = "http"
url = "http://127.0.0.1:9/gas"
playbook = "gas-low"

[[logs]]
name = "relayer"
path = "/var/log/relayer.log"
playbook = "api-down"
"""


def test_playbooks_custom_and_override_load():
    from backends.engine.playbooks import Playbook, Step

    cfg = load(PLAYBOOKS)
    assert [p.id for p in cfg.playbooks] == ["bridge-stalled", "gas-low"]
    pb = cfg.playbooks[0]
    assert isinstance(pb, Playbook) and pb.severity is Severity.P1 and pb.budget == "10 min"
    assert pb.symptoms == ("No relayed messages for 10 minutes",) and pb.seed == "runbook 7"
    assert pb.escalate_to == "Bridge team"
    assert pb.diagnosis == (Step("Relayer process", check="services"),
                            Step("Relayer logs", check="logs", budget="2 min"))
    assert pb.resolution == (Step("Restart the relayer", action="service.restart", key="r", targets=("service:",)),
                             Step("Escalate", action="escalate", key="e"))
    gas = cfg.playbooks[1]
    assert gas.budget == "" and gas.diagnosis == () and gas.escalate_to == "" and gas.seed == ""
    assert gas.resolution == (Step("Refill from the treasury", action="command.refill", key="g"),)
    assert cfg.services[0].playbook == "bridge-stalled" and cfg.checks[0].playbook == "gas-low"
    assert "playbooks: 2 (bridge-stalled, gas-low [overrides built-in])" in cfg.summary()
    assert not any(line.startswith("playbooks:") for line in load(BASE).summary())


def test_playbook_steps_unknown_keys_inline_and_sub_table():
    text = PLAYBOOKS.replace('{ text = "Relayer logs", check = "logs", budget = "2 min" }',
                             '{ text = "Relayer logs", chek = "logs" }')
    text = text.replace('targets = ["service:"]', 'target = ["service:"]')
    errs = errors_of(text)
    assert len(errs) == 2, [str(e) for e in errs]
    assert_error(errs[0], line=line_no(text, "chek"), key="playbooks[0].diagnosis[1].chek",
                 expected="one of: action, budget, check, key, targets, text", message="did you mean 'check'")
    assert_error(errs[1], line=line_no(text, "target = "), key="playbooks[0].resolution[0].target",
                 expected="targets", message="unknown key 'target'")


@pytest.mark.parametrize("old,new,needle,key,expected,message", [
    ('severity = "P1"\nbudget', 'severity = "P7"\nbudget', '"P7"', "playbooks[0].severity", "P0, P1, P2 or P3",
     "invalid severity 'P7'"),
    ('id = "gas-low"', 'id = "bridge-stalled"', 'id = "bridge-stalled"\ntitle = "Gas', "playbooks[1].id",
     "ids unique within [[playbooks]]", "duplicate id 'bridge-stalled'"),
    ('action = "command.refill"', 'action = "command.refil"', "command.refil", "playbooks[1].resolution[0].action",
     "one of: command.refill", "'command.refil' names no [[actions]] entry"),
    ('action = "escalate"', 'action = "escalat"', '"escalat"', "playbooks[0].resolution[1].action",
     "service.restart, orders.fix, escalate or command.NAME", "did you mean 'escalate'"),
    ('action = "service.restart"', 'action = "servce.restart"', "servce", "playbooks[0].resolution[0].action",
     "namespaces: service", "invalid action id 'servce.restart'"),
    ('check = "services"', 'check = "service"', 'check = "service"', "playbooks[0].diagnosis[0].check",
     "one of: services, logs", "invalid value 'service'"),
    ('key = "r"', 'key = "c r"', '"c r"', "playbooks[0].resolution[0].key", 'a key like "r"', "invalid value"),
    ('playbook = "bridge-stalled"\n\n[[log', 'playbook = "bridge-stall"\n\n[[log', '"bridge-stall"',
     "services[0].playbook", "one of: alertmanager-alert, all-breakers-open, api-down, bridge-stalled,",
     "'bridge-stall' does not name a playbook (did you mean 'bridge-stalled'?)"),
    ('playbook = "bridge-stalled"\n\n[[checks', 'playbook = "nope"\n\n[[checks', '"nope"',
     "log_patterns[0].playbook", "(built-in or [[playbooks]] id)", "'nope' does not name a playbook"),
    ('playbook = "gas-low"', 'playbook = "gas-high"', "gas-high", "checks[0].playbook", "gas-low",
     "does not name a playbook"),
    ('playbook = "api-down"', 'playbook = "api-up"', "api-up", "logs[0].playbook", "api-down",
     "does not name a playbook"),
    ('title = "Bridge relayer stalled"\n', '', "[[playbooks]]", "playbooks[0]", "a string",
     "missing required key 'title'"),
    ('seed = "runbook 7"', 'seeds = "runbook 7"', "seeds", "playbooks[0].seeds", "escalate_to",
     "unknown key 'seeds' (did you mean 'seed'?)"),
    ('symptoms = ["No relayed messages for 10 minutes"]', 'symptoms = "No relayed messages"', "symptoms = ",
     "playbooks[0].symptoms", "an array of a string", "expected an array"),
])
def test_playbook_bad_shapes(old, new, needle, key, expected, message):
    assert old in PLAYBOOKS
    text = PLAYBOOKS.replace(old, new, 1)
    err = one_error(text)
    assert_error(err, line=line_no(text, needle) if "\n" not in needle else _line_of_block(text, needle),
                 key=key, expected=expected, message=message)


def _line_of_block(text: str, block: str) -> int:
    return text[:text.index(block)].count("\n") + 1


def test_playbook_needs_steps_and_steps_must_be_tables():
    text = '[[playbooks]]\nid = "x"\ntitle = "X"\nseverity = "P2"\n'
    assert_error(one_error(text), line=1, key="playbooks[0]", expected="[[playbooks.resolution]]",
                 message="at least one diagnosis or resolution step")
    err = one_error(text + 'resolution = ["restart it"]\n')
    assert_error(err, line=5, key="playbooks[0].resolution[0]", expected="a step table like",
                 message="expected a step table, got a string")
    err = one_error(text + 'diagnosis = "look at it"\n')
    assert_error(err, line=5, key="playbooks[0].diagnosis", expected="a step table like",
                 message="expected an array of steps")
    err = one_error(text + 'resolution = [{ action = "escalate" }]\n')
    assert_error(err, line=5, key="playbooks[0].resolution[0]", expected="a string",
                 message="missing required key 'text'")
    err = one_error("[playbooks]\nid = 1\n")
    assert err.key == "playbooks" and "array of tables" in err.message


def test_playbook_command_steps_need_an_actions_entry_even_when_none_is_configured():
    text = PLAYBOOKS.replace('[[actions]]\nname = "refill"\nargv = ["/bin/echo", "refill"]\ndanger = "typed"\n', "")
    err = one_error(text)
    assert_error(err, line=line_no(text, "command.refill"), key="playbooks[1].resolution[0].action",
                 expected="an [[actions]] entry named 'refill' (none is configured)")


def test_check_summary_counts_configured_playbooks(tmp_path, capsys):
    path = tmp_path / "pb.toml"
    path.write_text(PLAYBOOKS)
    assert cmd_check.run(argparse.Namespace(config=str(path))) == 0
    out = capsys.readouterr().out
    assert "playbooks: 2 (bridge-stalled, gas-low [overrides built-in])" in out and "config OK" in out


def test_readme_playbooks_example_loads():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```toml\n[[playbooks]]") + len("```toml\n")
    block = readme[start:readme.index("```", start)]
    cfg = load(block + '\n[[services]]\nname = "relayer"\nkind = "process"\nmatch = "relayer"\n'
               'playbook = "bridge-stalled"\n')
    (pb,) = cfg.playbooks
    assert pb.id == "bridge-stalled" and len(pb.diagnosis) == 2 and pb.resolution[0].targets == ("service:",)


def test_log_buffer_default_value_and_range():
    assert load('[warroom]\nname = "x"\n').warroom.log_buffer == 10_000
    assert load('[warroom]\nlog_buffer = 50000\n').warroom.log_buffer == 50_000
    ref = load_config(ROOT / "examples" / "reference.toml", env=REFERENCE_ENV)
    assert ref.warroom.log_buffer == 10_000
    for bad in ("50", "300000"):
        err = one_error(f'[warroom]\nlog_buffer = {bad}\n')
        assert err.line == 2 and err.key == "warroom.log_buffer", str(err)
    assert one_error('[warroom]\nlog_buffer = "lots"\n').key == "warroom.log_buffer"


def test_logs_success_silence_and_playbook():
    base = '[[logs]]\nname = "p"\npath = "p.log"\nsuccess = ["done"]\n'
    lg = load(base + 'success_silence = "90s"\nsuccess_playbook = "events-not-processed"\n').logs[0]
    assert (lg.success_silence, lg.success_playbook) == (90.0, "events-not-processed")
    assert load(base).logs[0].success_silence is None
    err = one_error(base + 'success_playbook = "events-not-procesed"\n')
    assert err.key == "logs[0].success_playbook" and "did you mean 'events-not-processed'" in str(err)
    err = one_error('[[logs]]\nname = "p"\npath = "p.log"\nsuccess_silence = "1m"\n')
    assert err.line == 4 and err.key == "logs[0].success_silence" and "without success markers" in str(err)


# ---------------------------------------------------------------------------
# Limits: every duration, count, size and port has a minimum and a maximum (issue 22)
# ---------------------------------------------------------------------------

_DSN = 'dsn = "postgresql://u:limpass-7777@127.0.0.1:5432/db"\n'
_REDIS = '[redis.main]\nurl = "redis://127.0.0.1:6379/0"\n'
# section of a limit key -> (a valid config around `{kv}`, the error key's prefix)
SECTIONS = {
    "warroom": ("[warroom]\n{kv}\n[host]\n", "warroom"),
    "postgres": ("[postgres.main]\n" + _DSN + "{kv}\n", "postgres.main"),
    "redis": ("[redis.main]\nurl = \"redis://127.0.0.1:6379/0\"\n{kv}\n", "redis.main"),
    "chain": ('[chain.c]\nendpoints = ["http://127.0.0.1:8545"]\n{kv}\n', "chain.c"),
    "chain.balances": ('[chain.c]\nendpoints = ["http://127.0.0.1:8545"]\n[[chain.c.balances]]\nname = "b"\n'
                       'address = "0x0000000000000000000000000000000000000001"\n{kv}\n', "chain.c.balances[0]"),
    "services": ('[[services]]\nname = "s"\nkind = "http"\nhealth_url = "http://127.0.0.1:8080/h"\n{kv}\n',
                 "services[0]"),
    "docker": ("[docker]\n{kv}\n[host]\n", "docker"),
    "host": ("[host]\n{kv}\n", "host"),
    "queues": (_REDIS + '[[queues]]\nname = "q"\nredis = "main"\nkey = "k"\n{kv}\n', "queues[0]"),
    "breakers": ("[postgres.main]\n" + _DSN + '[breakers]\npostgres = "main"\n{kv}\n', "breakers"),
    "orders": ("[postgres.main]\n" + _DSN + '[orders]\npostgres = "main"\n{kv}\n', "orders"),
    "logs": ('[[logs]]\nname = "l"\npath = "l.log"\nsuccess = ["ok"]\n{kv}\n', "logs[0]"),
    "log_patterns": ('[[logs]]\nname = "l"\npath = "l.log"\n[[log_patterns]]\npattern = "x"\n{kv}\n',
                     "log_patterns[0]"),
    "checks": ('[[checks]]\nname = "c"\nkind = "http"\nurl = "http://127.0.0.1:8080/"\n{kv}\n', "checks[0]"),
    "commands": ('[[commands]]\nname = "c"\nargv = ["true"]\n{kv}\n[host]\n', "commands[0]"),
    "actions": ('[[actions]]\nname = "a"\nargv = ["true"]\n{kv}\n[host]\n', "actions[0]"),
    "escalation": ("[escalation]\n{kv}\n[host]\n", "escalation"),
    "escalation.levels": ('[[escalation.levels]]\nname = "l"\n{kv}\n[host]\n', "escalation.levels[0]"),
    "incident": ("[incident.response]\n{kv}\n[host]\n", "incident"),
    "alertmanager": ('[alertmanager.am]\nurl = "http://127.0.0.1:9093"\n{kv}\n', "alertmanager.am"),
}


def _limit_case(key: str, value: str) -> tuple[str, str, int]:
    """(config text, error key, line) with `key` set to the TOML `value`."""
    section, name = key.rsplit(".", 1)
    if key == "incident.response":
        section, name = "incident", "response.P0"
    template, prefix = SECTIONS[section]
    kv = f"{name.split('.')[-1]} = {value}"
    text = template.format(kv=kv)
    err_key = f"{prefix}.{name}"
    return text, err_key, line_no(text, kv)


def _toml_number(x: float) -> str:
    return repr(float(x)) if x != int(x) else str(int(x))


DURATION_KEYS = sorted(config_mod.DURATION_LIMITS)
COUNT_KEYS = sorted(set(config_mod.COUNT_LIMITS) - {"queues.thresholds"})


@pytest.mark.parametrize("key", DURATION_KEYS)
def test_every_duration_has_a_minimum_and_a_maximum(key):
    lo, hi = config_mod.DURATION_LIMITS[key]
    want = f"a duration between {format_duration(lo)} and {format_duration(hi)}"
    for at in (lo, hi):  # the bounds themselves are fine
        text, _, _ = _limit_case(key, _toml_number(at))
        assert load(text) is not None
    refused = ['"100000d"', _toml_number(hi * 2), "inf", "nan"]
    if lo > 0:
        refused += ['"0s"', "0", _toml_number(lo / 2)]
    for value in refused:
        text, err_key, line = _limit_case(key, value)
        err = one_error(text)
        assert err.key == err_key and err.line == line, str(err)
        if value != "nan" and value != "inf":
            assert err.expected == want and f"(expected {want})" in str(err), str(err)


def test_duration_refusals_read_well():
    err = one_error('[warroom]\nrefresh = 1\n[host]\ninterval = "0s"\n')
    assert str(err) == (f"{FILE}:4: key 'host.interval': '0s' is too short "
                        "(expected a duration between 500ms and 1h)")
    err = one_error('[warroom]\ntimeout = "100000d"\n')
    assert str(err) == (f"{FILE}:2: key 'warroom.timeout': '100000d' is too long "
                        "(expected a duration between 100ms and 10m)")


@pytest.mark.parametrize("key", COUNT_KEYS)
def test_every_count_has_a_minimum_and_a_maximum(key):
    lo, hi = config_mod.COUNT_LIMITS[key]
    want = f"an integer between {lo:_} and {hi:_}"
    for at in (lo, hi):
        text, _, _ = _limit_case(key, str(at))
        assert load(text) is not None
    for value in (lo - 1, hi + 1):
        text, err_key, line = _limit_case(key, str(value))
        err = one_error(text)
        assert err.key == err_key and err.line == line and err.expected == want, str(err)
        assert f"{value} is out of range" in str(err)


def test_queue_thresholds_and_sizes_have_limits():
    base = _REDIS + '[[queues]]\nname = "q"\nredis = "main"\nkey = "k"\n'
    assert load(base + "thresholds = [1, 2, 1000000000]\n").queues[0].thresholds == (1, 2, 1_000_000_000)
    err = one_error(base + "thresholds = [1, 2, 1000000001]\n")
    assert err.key == "queues[0].thresholds" and "between 1 and 1_000_000_000" in err.expected
    lo, hi = config_mod.SIZE_LIMITS["redis.max_memory"]
    assert load(_REDIS + 'max_memory = "1MB"\n').redis["main"].max_memory == lo
    assert load(_REDIS + 'max_memory = "16TB"\n').redis["main"].max_memory == hi
    for bad in ('"0"', "0", '"1KB"', '"17TB"'):
        err = one_error(_REDIS + f"max_memory = {bad}\n")
        assert err.key == "redis.main.max_memory" and err.line == 3, str(err)
        assert err.expected == "a size between 1MB and 16TB", str(err)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_numbers_refuse_nan_and_infinity(value):
    err = one_error(f"[host]\ncpu_warn = {value}\n")
    assert err.key == "host.cpu_warn" and err.line == 2 and "finite" in err.message, str(err)
    err = one_error(f'[[checks]]\nname = "m"\nkind = "metrics"\nurl = "http://127.0.0.1:9/m"\nmetric = "x"\n'
                    f"warn_above = {value}\n")
    assert err.key == "checks[0].warn_above", str(err)


# key -> (config text around {url}, error key)
PORT_KEYS = {
    "postgres dsn": ('[postgres.main]\ndsn = "postgresql://u:portpass-3131@{host}/db"\n', "postgres.main.dsn"),
    "postgres dsn, 2nd host": ('[postgres.main]\ndsn = "postgresql://u:portpass-3131@127.0.0.1:5432,{host}/db"\n',
                               "postgres.main.dsn"),
    "redis url": ('[redis.main]\nurl = "redis://:portpass-3131@{host}/0"\n', "redis.main.url"),
    "chain endpoint": ('[chain.c]\nendpoints = ["http://127.0.0.1:8545", "https://{host}/v2/k"]\n',
                       "chain.c.endpoints[1]"),
    "health_url": ('[[services]]\nname = "s"\nkind = "http"\nhealth_url = "http://{host}/h"\n',
                   "services[0].health_url"),
    "check url": ('[[checks]]\nname = "c"\nkind = "http"\nurl = "https://{host}/"\n', "checks[0].url"),
    "pagerduty url": ('[escalation.pagerduty]\nrouting_key = "rk-portpass-3131"\nurl = "https://{host}/v2"\n'
                      "[host]\n", "escalation.pagerduty.url"),
    "docker host": ('[docker]\nhost = "tcp://{host}"\n[host]\n', "docker.host"),
}


@pytest.mark.parametrize("where", sorted(PORT_KEYS))
def test_every_url_port_is_1_to_65535(where):
    template, key = PORT_KEYS[where]
    for ok in ("127.0.0.1:1", "127.0.0.1:65535", "127.0.0.1", "[::1]:8080"):
        assert load(template.format(host=ok)) is not None
    for port in (0, 65536, 99999):
        text = template.format(host=f"127.0.0.1:{port}")
        err = one_error(text)
        assert err.key == key and err.line == line_no(text, f":{port}"), str(err)
        assert f"port {port} is out of range" in err.message and err.expected == "a port between 1 and 65535"
        assert "portpass-3131" not in str(err)
    err = one_error(template.format(host="[::1]:70000"))
    assert "port 70000" in err.message


def test_limits_are_stated_in_the_reference_config():
    ref = (ROOT / "examples" / "reference.toml").read_text()
    assert config_mod.limits_comment() in ref, "paste backends.config.limits_comment() into reference.toml"
    for key in [*config_mod.DURATION_LIMITS, *config_mod.COUNT_LIMITS, *config_mod.SIZE_LIMITS]:
        assert key in config_mod.limits_comment()


# ---------------------------------------------------------------------------
# Nothing to watch; a byte order mark (issue 22)
# ---------------------------------------------------------------------------

NOTHING = [
    ("empty", ""),
    ("only comments", "# nothing here\n"),
    ("only [warroom]", '[warroom]\nname = "x"\n'),
    ("only actions and playbooks", '[[actions]]\nname = "a"\nargv = ["true"]\n[escalation]\nack_timeout = "30m"\n'),
    ("only commands and docker", '[[commands]]\nname = "c"\nargv = ["true"]\n[docker]\nstats = true\n'),
]


@pytest.mark.parametrize("name,text", NOTHING, ids=[n for n, _ in NOTHING])
def test_a_config_that_watches_nothing_is_refused(tmp_path, capsys, name, text):
    path = tmp_path / "warroom.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert not isinstance(err, ConfigErrors) and err.file == str(path)
    assert str(err).startswith(f"{path}: nothing to watch: add a section, see examples/"), str(err)
    assert "[[services]]" in err.expected
    assert load_config(path, allow_empty=True).watches == ()  # the lower level still loads it
    assert cmd_check.run(argparse.Namespace(config=str(path))) == 2
    out = capsys.readouterr()
    assert out.out == "" and "nothing to watch: add a section, see examples/" in out.err


def test_dev_null_is_nothing_to_watch():
    with pytest.raises(ConfigError, match="nothing to watch"):
        load_config(os.devnull)


@pytest.mark.parametrize("text,watches", [
    ("[host]\n", ("host",)),
    (BASE, ("postgres", "redis")),
    ('[[logs]]\nname = "l"\npath = "l.log"\n', ("logs",)),
    ('[[checks]]\nname = "c"\nkind = "http"\nurl = "http://127.0.0.1:1/"\n', ("checks",)),
])
def test_one_watching_section_is_enough(tmp_path, text, watches):
    path = tmp_path / "warroom.toml"
    path.write_text(text)
    assert load_config(path).watches == watches


def test_the_console_refuses_a_config_that_watches_nothing(tmp_path):
    """`warroom --config EMPTY` exits 2 with the reason before any screen is drawn (no false
    "no findings" all-clear); /dev/null likewise."""
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if k != "WARROOM_CONFIG"}
    env.update(PYTHONPATH=str(ROOT), XDG_STATE_HOME=str(tmp_path / "state"), TERM="dumb")
    for cfg in (str(empty), os.devnull):
        res = subprocess.run([sys.executable, "-c", "import sys; from tui.cli import main; sys.exit(main())",
                              "--config", cfg], capture_output=True, text=True, env=env, cwd=ROOT,
                             stdin=subprocess.DEVNULL, timeout=60)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "nothing to watch: add a section, see examples/" in res.stderr


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b'[warroom]\nname = "bom"\n[host]\n')
    assert load_config(path).warroom.name == "bom"
    assert cmd_check.run(argparse.Namespace(config=str(path))) == 0
    assert load("\ufeff" + BASE).postgres["main"].pool_max == 2
    err = one_error("\ufeff[warroom]\nname = \"x\"\nrefresh = \"0s\"\n")  # lines are still right
    assert err.line == 3 and err.key == "warroom.refresh"


def test_sandbox_config_passes(tmp_path):
    """The config `warroom demo` generates (sandbox/config.py) loads, watches, and respects the limits."""
    from types import SimpleNamespace

    from sandbox.config import render_config

    settings = {"ports": {"api": 18080, "webhook": 18081}, "dsn": "postgresql://app:sbx-pass@127.0.0.1:15432/app",
                "redis_url": "redis://127.0.0.1:16379/0", "chain_id": 31337,
                "rpc_urls": ["http://127.0.0.1:18545", "http://127.0.0.1:18546"],
                "escrow": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
                "arbiter": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "deploy_block": 1}
    path = tmp_path / "warroom.toml"
    path.write_text(render_config(SimpleNamespace(run_dir=str(tmp_path), settings=settings)))
    cfg = load_config(path, env={})
    assert {"postgres", "redis", "chain", "services", "orders"} <= set(cfg.watches)
