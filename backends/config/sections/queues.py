"""Parsing of [[queues]] and [breakers]."""

from __future__ import annotations

from collections.abc import Mapping

from backends.config.base import BAD, _replace
from backends.config.crossref import _ref
from backends.config.loader import _Loader, _Table
from backends.config.model import BreakersConfig, PostgresConfig, QueueConfig, RedisConfig
from backends.config.schema import _QUEUE_PRESETS
from backends.config.types import Ident


def _check_queue(ld: _Loader, t: _Table, q: QueueConfig) -> None:
    """The keys of a [[queues]] entry that its type does not take."""
    preset = q.type in _QUEUE_PRESETS
    if q.prefix is not None and q.type not in ("bullmq", "celery"):
        ld.error(t.path + ("prefix",), f"prefix applies to bullmq and celery queues, not {q.type}",
                 'bullmq: prefix = "bull" (Queue option prefix); celery: kombu\'s global_keyprefix')
    if preset and q.timestamp_field is not None and q.type != "celery":
        ld.error(t.path + ("timestamp_field",), f"a {q.type} queue's enqueue time is read from the framework's "
                 "own field", "no timestamp_field (celery only: a JSON path into the message, e.g. headers.sent_at)")
    if preset and q.dead_letter is not None:
        ld.error(t.path + ("dead_letter",), f"dead_letter does not apply to a {q.type} queue (its failed and dead "
                 "jobs are read from the framework's own sets)", "no dead_letter")
    if t.has("oldest_end") and q.type != "list":
        ld.error(t.path + ("oldest_end",), f"oldest_end applies to list queues only, not {q.type}",
                 "no oldest_end (a framework preset knows its own end)")
    if t.has("priority_steps") and q.type != "celery":
        ld.error(t.path + ("priority_steps",), f"priority_steps applies to celery queues only, not {q.type}",
                 "no priority_steps")
    # a preset's key is the queue's own name: the framework's Redis key pasted instead is a mistake
    own = {"rq": ("rq:queue:",), "sidekiq": ("queue:",),
           "bullmq": (f"{q.prefix or 'bull'}:",)}.get(q.type, ())
    if isinstance(q.key, str):
        for start in own:
            name = q.key[len(start):].removesuffix(":wait") if q.key.startswith(start) else ""
            if name:
                ld.error(t.path + ("key",), f"key {q.key!r} is a Redis key; a {q.type} queue's key is the queue's "
                         f"own name", f'key = "{name}"')


def parse_queues(ld: _Loader, root: _Table, redis: Mapping[str, RedisConfig]) -> list[QueueConfig]:
    """[[queues]]"""
    queues = []
    for t in ld.array_of_tables(root.raw("queues"), ("queues",)):
        thresholds = t.take("thresholds")
        q = QueueConfig(
            name=t.take("name"),
            redis=t.take("redis"),
            key=t.take("key"),
            type=t.take("type"),
            thresholds=thresholds,
            timestamp_field=t.take("timestamp_field"),
            dead_letter=t.take("dead_letter"),
            interval=t.take("interval"),
            oldest_end=t.take("oldest_end"),
            prefix=t.take("prefix"),
            max_age=t.take("max_age"),
            priority_steps=t.take("priority_steps"),
        )
        _ref(ld, t.path + ("redis",), q.redis, redis, "redis")
        _check_queue(ld, t, q)
        queues.append(q)
        t.done()
    return queues


def parse_breakers(ld: _Loader, root: _Table, postgres: Mapping[str, PostgresConfig], redis: Mapping[str, RedisConfig]) -> BreakersConfig | None:
    """[breakers]"""
    breakers = None
    t = ld.table(root.raw("breakers"), ("breakers",)) if root.has("breakers") else None
    if t:
        breakers = BreakersConfig(
            postgres=t.take("postgres"),
            table=t.take("table"),
            id_column=t.take("id_column"),
            state_column=t.take("state_column"),
            failures_column=t.take("failures_column"),
            last_failure_column=t.take("last_failure_column"),
            opened_at_column=t.take("opened_at_column"),
            reset_timeout=t.take("reset_timeout"),
            redis=t.take("redis"),
            # pybreaker's CircuitRedisStorage(namespace=...): "" is its keys without one (pybreaker:state)
            redis_namespaces=t.take("redis_namespaces"),
            interval=t.take("interval"),
        )
        if breakers.postgres and breakers.postgres is not BAD:
            _ref(ld, ("breakers", "postgres"), breakers.postgres, postgres, "postgres")
            if breakers.table is None:
                breakers = _replace(breakers, table=Ident("circuit_breaker_state"))
        if breakers.redis and breakers.redis is not BAD:
            _ref(ld, ("breakers", "redis"), breakers.redis, redis, "redis")
            if not breakers.redis_namespaces:
                ld.error(("breakers", "redis_namespaces"), "redis breakers need redis_namespaces: the "
                         "namespace of each pybreaker CircuitRedisStorage, \"\" for one without a namespace "
                         "(pybreaker:state, pybreaker:fail_counter, pybreaker:opened_at)",
                         'redis_namespaces = [""] (no namespace) or ["webhook"] (namespace="webhook")')
        if breakers.postgres is None and breakers.redis is None:
            ld.error(("breakers",), "breakers need a postgres table or redis keys",
                     'postgres = "NAME" (with table) or redis = "NAME" (with redis_namespaces)')
        t.done()
    return breakers
