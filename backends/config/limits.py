"""The limits of every duration, count, size and port (stated in examples/reference.toml)."""

from __future__ import annotations

from backends.units import format_duration

# -- limits ----------------------------------------------------------------------
# Every duration, count, size and port has a minimum and a maximum: a value outside is refused
# with its file, line and key (`interval = "0s"` would busy-poll, `timeout = "100000d"` never
# times out). Stated in examples/reference.toml (its "Limits" comment is `limits_comment()`;
# tests/test_config.py checks that they agree). Keys are "section.key", NAME parts left out.

_INTERVAL = (0.5, 3600.0)      # a poll: faster busy-polls the backend and the console
_TIMEOUT = (0.1, 600.0)        # a connection, request or probe
_RUN_TIMEOUT = (0.1, 86400.0)  # a [[commands]] / [[actions]] run (a pg_dump may take an hour)
_DAY, _WEEK, _MONTH = 86400.0, 7 * 86400.0, 30 * 86400.0

DURATION_LIMITS: dict[str, tuple[float, float]] = {
    "warroom.refresh": _INTERVAL,
    "postgres.interval": _INTERVAL,
    "redis.interval": _INTERVAL,
    "chain.interval": _INTERVAL,
    "services.interval": _INTERVAL,
    "docker.interval": _INTERVAL,
    "docker.stats_interval": _INTERVAL,
    "host.interval": _INTERVAL,
    "queues.interval": _INTERVAL,
    "breakers.interval": _INTERVAL,
    "orders.interval": _INTERVAL,
    "checks.interval": _INTERVAL,
    "alertmanager.interval": _INTERVAL,
    "warroom.timeout": _TIMEOUT,
    "postgres.timeout": _TIMEOUT,
    "redis.timeout": _TIMEOUT,
    "chain.timeout": _TIMEOUT,
    "services.timeout": _TIMEOUT,
    "docker.timeout": _TIMEOUT,
    "checks.timeout": _TIMEOUT,
    "alertmanager.timeout": _TIMEOUT,
    "commands.timeout": _RUN_TIMEOUT,
    "actions.timeout": _RUN_TIMEOUT,
    "services.latency_warn": (0.001, 60.0),
    "checks.latency_warn": (0.001, 60.0),
    "checks.window": (1.0, _DAY),
    "alertmanager.silence_duration": (60.0, _MONTH),
    "postgres.long_query_after": (1.0, _DAY),
    "postgres.terminate_after": (1.0, _DAY),
    "breakers.reset_timeout": (1.0, _DAY),
    "log_patterns.window": (1.0, _DAY),
    "host.cpu_for": (0.0, _DAY),
    "chain.max_head_age": (0.1, _WEEK),
    "services.silence_after": (1.0, _WEEK),
    "logs.silence_after": (1.0, _WEEK),
    "logs.success_silence": (1.0, _WEEK),
    "logs.since": (0.0, _MONTH),
    "queues.max_age": (1.0, _MONTH),
    "orders.stuck_after": (1.0, _MONTH),
    "escalation.ack_timeout": (60.0, _WEEK),
    "escalation.levels.after": (0.0, _WEEK),
    "incident.response": (60.0, _MONTH),
}

COUNT_LIMITS: dict[str, tuple[int, int]] = {
    "warroom.log_buffer": (100, 200_000),
    "postgres.pool_max": (1, 100),
    "postgres.warn_connections": (1, 100_000),
    "chain.chain_id": (1, 4_503_599_627_370_476),  # EIP-2294's largest chain id
    "chain.failover_after": (1, 100),
    "chain.max_lag": (0, 100_000),
    "chain.confirmations": (0, 100_000),
    "chain.getlogs_chunk": (1, 100_000),
    "chain.integrity_window": (0, 1_000_000),
    "chain.verify_quorum": (1, 3),
    "chain.head_offset": (-10, 10),
    "chain.balances.decimals": (0, 36),
    "queues.thresholds": (1, 1_000_000_000),
    "orders.start_block": (0, 10**12),
    "orders.show": (1, 10_000),
    "orders.bulk_batch": (1, 100_000),
    "logs.error_spike": (1, 1_000_000),
    "logs.max_line": (80, 1_000_000),
    "log_patterns.min_count": (1, 100_000),
    "checks.expect_status": (100, 599),
}

SIZE_LIMITS: dict[str, tuple[int, int]] = {
    "redis.max_memory": (1024**2, 16 * 1024**4),
    "chain.max_answer": (1024, 256 * 1024**2),
}

PORT_RANGE = (1, 65535)  # the port of every URL (dsn, url, endpoints, health_url, docker host)


def _fmt_size(n: int) -> str:
    for unit, size in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"


def _fmt_count(n: int) -> str:
    return f"{n:_}"


def limits_comment() -> str:
    """The "Limits" comment of examples/reference.toml, derived from the tables above."""
    import textwrap

    groups: dict[str, list[str]] = {}
    for key, (lo, hi) in DURATION_LIMITS.items():
        groups.setdefault(f"{format_duration(lo)}..{format_duration(hi)}", []).append(key)
    for key, (lo, hi) in COUNT_LIMITS.items():
        groups.setdefault(f"{_fmt_count(lo)}..{_fmt_count(hi)}", []).append(key)
    for key, (lo, hi) in SIZE_LIMITS.items():
        groups.setdefault(f"{_fmt_size(lo)}..{_fmt_size(hi)}", []).append(key)
    lines = ["# Limits: a value outside is refused by `warroom check` and the console (NAME parts left out).",
             "#   durations:"]
    heading = "durations"
    for rng, keys in groups.items():
        kind = "counts" if keys[0] in COUNT_LIMITS else "sizes" if keys[0] in SIZE_LIMITS else "durations"
        if kind != heading:
            lines.append(f"#   {kind}:")
            heading = kind
        lines += textwrap.wrap(", ".join(keys), width=100, initial_indent=f"#     {rng}: ",
                               subsequent_indent="#         ", break_on_hyphens=False)
    lines.append(f"#   ports: every URL's port {PORT_RANGE[0]}..{PORT_RANGE[1]}")
    return "\n".join(lines)


def _range_expected(kind: str, lo: str, hi: str) -> str:
    return f"{kind} between {lo} and {hi}"


SIGNER_LIMITS = {"runway_min": (60.0, 90 * 86400.0), "spend_window": (10.0, 7 * 86400.0)}  # 1m..90d, 10s..7d

RECORD_LIMITS = {"max_size": (1024**2, 1024**4), "max_age": (60.0, 365 * 86400.0)}  # [record]: 1MB..1TB, 1m..365d
