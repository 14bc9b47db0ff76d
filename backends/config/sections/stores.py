"""Parsing of [postgres.NAME] and [redis.NAME]."""

from __future__ import annotations

from backends.config.loader import _Loader, _Table
from backends.config.model import PostgresConfig, RedisConfig


def parse_postgres(ld: _Loader, root: _Table) -> dict[str, PostgresConfig]:
    """[postgres.NAME]"""
    postgres: dict[str, PostgresConfig] = {}
    for name, t in ld.named_tables(root.raw("postgres"), ("postgres",)):
        postgres[name] = PostgresConfig(
            name=name,
            dsn=t.take("dsn"),
            pool_max=t.take("pool_max"),
            timeout=t.take("timeout"),
            interval=t.take("interval"),
            long_query_after=t.take("long_query_after"),
            terminate_after=t.take("terminate_after"),
            warn_connections=t.take("warn_connections"),
            shared=t.take("shared"),
        )
        t.done()
    return postgres


def parse_redis(ld: _Loader, root: _Table) -> dict[str, RedisConfig]:
    """[redis.NAME]"""
    redis: dict[str, RedisConfig] = {}
    for name, t in ld.named_tables(root.raw("redis"), ("redis",)):
        redis[name] = RedisConfig(
            name=name,
            url=t.take("url"),
            timeout=t.take("timeout"),
            interval=t.take("interval"),
            max_memory=t.take("max_memory"),
        )
        t.done()
    return redis
