"""Queue presets (`[[queues]] type = "rq" | "bullmq" | "sidekiq" | "celery"`) against the
frameworks' real producers writing into the session Redis: PyPI rq and celery (kombu's Redis
transport), npm bullmq (node), Sidekiq's gem (ruby; Debian ruby-sidekiq). Depth, oldest-job
age, failed/dead/delayed counts, the max_age finding, one pipelined round trip, and the
`health --json` fields. Ages are measured against an injected wall clock (no sleeps)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from backends.engine.rules import evaluate
from backends.model import QueueReading, Severity, Snapshot, Status
from backends.sources.redis import KOMBU_SEP, QueueSource, QueueSpec, close_clients, get_client
from tests.harness.queues import bullmq_produce, sidekiq_produce

pytestmark = pytest.mark.redis


def db_url(redis_server, db: int) -> str:
    """A database of the session Redis of its own (Sidekiq's retry/dead/schedule and kombu's
    bindings are server-wide names), emptied first."""
    import redis

    r = redis.Redis(host="127.0.0.1", port=redis_server.port, db=db, socket_timeout=5)
    r.flushdb()
    r.close()
    return f"redis://127.0.0.1:{redis_server.port}/{db}"


@pytest.fixture
async def closing():
    yield
    await close_clients()


def by_name(readings) -> dict[str, QueueReading]:
    return {r.name: r for r in readings}


def fixed_wall(at: float):
    return lambda: at


# --------------------------------------------------------------------------- rq


def rq_produce(url: str, queue: str):
    """Enqueue with rq's own Queue: two jobs, one scheduled, one that fails in a real
    SimpleWorker (burst) into the failed registry. Returns the two waiting jobs."""
    import redis
    from rq import Queue, SimpleWorker

    conn = redis.Redis.from_url(url)
    try:
        q = Queue(queue, connection=conn)
        a = q.enqueue("builtins.len", "ab")
        b = q.enqueue("builtins.len", "abc")
        q.enqueue_in(timedelta(hours=1), "builtins.len", "later")
        broken = Queue(queue + "_broken", connection=conn)
        broken.enqueue("builtins.int", "not a number")
        SimpleWorker([broken], connection=conn).work(burst=True)
        return a, b
    finally:
        conn.close()


async def test_rq_depth_age_failed_scheduled(redis_server, closing):
    import rq

    url = db_url(redis_server, 1)
    name = f"mail{uuid.uuid4().hex[:6]}"
    a, b = rq_produce(url, name)
    now = a.enqueued_at.timestamp() + 600  # 10 minutes after the oldest job, however long producing took
    qs = QueueSource("queues.rq", url, [QueueSpec("mail", name, type="rq", max_age=300),
                                        QueueSpec("broken", name + "_broken", type="rq")], wall=fixed_wall(now))
    got = by_name(await qs.poll())
    mail, broken = got["mail"], got["broken"]
    assert rq.__version__ == "2.12.0"
    assert mail.key == f"rq:queue:{name}" and mail.type == "rq"
    assert (mail.depth, mail.delayed, mail.failed, mail.active) == (2, 1, 0, 0)
    # the oldest job is the one rq's workers take next (left end), aged from its hash's enqueued_at
    assert mail.oldest_age_s == pytest.approx(now - a.enqueued_at.timestamp(), abs=1e-4)
    assert mail.oldest_age_s > 300 and mail.status is Status.WARN
    assert (broken.depth, broken.failed, broken.oldest_age_s) == (0, 1, None)
    (age,) = [f for f in evaluate(Snapshot(readings={"queues.rq": (mail,)})) if f.key.endswith(":age")]
    assert age.severity is Severity.P2 and "oldest job waiting 10m" in age.summary and "max 5m00s" in age.summary

    # a job whose hash is gone (TTL, deleted) is skipped: the next one gives the age
    import redis as redis_mod

    r = redis_mod.Redis.from_url(url)
    r.delete(f"rq:job:{a.id}")
    r.close()
    (mail2, _) = await qs.poll()
    assert mail2.depth == 2
    assert mail2.oldest_age_s == pytest.approx(now - b.enqueued_at.timestamp(), abs=1e-4)


# --------------------------------------------------------------------------- celery


def celery_app(url: str, **transport):
    from celery import Celery

    app = Celery("warroom_presets", broker=url, set_as_current=False)
    if transport:
        app.conf.broker_transport_options = transport
    return app


async def test_celery_depth_over_priority_lists_and_opt_in_age(redis_server, closing):
    import celery

    url = db_url(redis_server, 2)
    app = celery_app(url)
    t1 = time.time() - 50
    try:
        app.send_task("mail.send", args=[1], queue="mail", headers={"sent_at": t1})
        app.send_task("mail.send", args=[2], queue="mail", priority=9, headers={"sent_at": t1 + 1})
        app.signature("mail.send", args=[3]).apply_async(queue="mail", headers={"sent_at": t1 + 2})
        app.send_task("other.job", queue="reports")
    finally:
        app.close()
    now = time.time()
    qs = QueueSource("queues.celery", url, [
        QueueSpec("mail", "mail", type="celery"),
        QueueSpec("mail_aged", "mail", type="celery", timestamp_field="headers.sent_at", max_age=30),
        QueueSpec("reports", "reports", type="celery"),
        QueueSpec("none", "nothing_here", type="celery"),
    ], wall=fixed_wall(now))
    got = by_name(await qs.poll())
    assert celery.__version__ == "5.7.0"
    raw = get_client(url)
    assert await raw.llen("mail") == 2 and await raw.llen(f"mail{KOMBU_SEP}9") == 1  # kombu's layout
    assert got["mail"].depth == 3 and got["mail"].key == "mail"
    assert got["mail"].oldest_age_s is None  # celery records no enqueue time by itself
    assert got["mail"].failed is None and got["mail"].status is Status.OK
    assert got["mail_aged"].oldest_age_s == pytest.approx(now - t1, abs=1e-3)
    assert got["mail_aged"].status is Status.WARN
    assert got["reports"].depth == 1 and got["none"].depth == 0


async def test_celery_global_keyprefix(redis_server, closing):
    url = db_url(redis_server, 3)
    app = celery_app(url, global_keyprefix="wr:")
    try:
        app.send_task("mail.send", queue="mail")
        app.send_task("mail.send", queue="mail", priority=6)
    finally:
        app.close()
    qs = QueueSource("queues.celery", url, [QueueSpec("mail", "mail", type="celery", prefix="wr:"),
                                            QueueSpec("bare", "mail", type="celery")])
    got = by_name(await qs.poll())
    assert got["mail"].key == "wr:mail" and got["mail"].depth == 2
    assert got["bare"].depth == 0


# --------------------------------------------------------------------------- bullmq


async def test_bullmq_wait_prioritized_delayed_failed_paused(redis_server, closing):
    name = f"mail{uuid.uuid4().hex[:6]}"
    out = bullmq_produce(redis_server.port, name)
    assert out["version"] == "6.7.0"
    now = time.time() + 120
    qs = QueueSource("queues.bull", redis_server.url, [
        QueueSpec("mail", name, type="bullmq", max_age=60),
        QueueSpec("broken", name + "_broken", type="bullmq"),
        QueueSpec("paused", name + "_paused", type="bullmq"),
    ], wall=fixed_wall(now))
    got = by_name(await qs.poll())
    mail = got["mail"]
    assert mail.key == f"bull:{name}:wait"
    # two in :wait, one in :prioritized; the delayed one apart
    assert (mail.depth, mail.delayed, mail.failed, mail.active, mail.paused) == (3, 1, 0, 0, False)
    # the next job out of :wait (right end) is the first added: its hash's `timestamp` (ms)
    assert mail.oldest_age_s == pytest.approx(now - out["timestamps"][0] / 1000, abs=1e-3)
    assert mail.status is Status.WARN
    assert [f.key for f in evaluate(Snapshot(readings={"q": (mail,)}))] == ["queue:queues.bull:mail:age"]
    assert (got["broken"].depth, got["broken"].failed) == (0, 1)  # failed by a real Worker
    assert (got["paused"].depth, got["paused"].paused) == (1, True)


async def test_bullmq_prefix(redis_server, closing):
    name = f"mail{uuid.uuid4().hex[:6]}"
    bullmq_produce(redis_server.port, name, prefix="wr")
    qs = QueueSource("queues.bull", redis_server.url, [QueueSpec("mail", name, type="bullmq", prefix="wr"),
                                                      QueueSpec("default_prefix", name, type="bullmq")])
    got = by_name(await qs.poll())
    assert got["mail"].key == f"wr:{name}:wait" and got["mail"].depth == 3 and got["mail"].delayed == 1
    assert got["default_prefix"].depth == 0


# --------------------------------------------------------------------------- sidekiq


async def test_sidekiq_queue_retry_dead_schedule(redis_server, closing):
    url = db_url(redis_server, 4)
    out = sidekiq_produce(url, "mail")
    assert out["version"] == "6.4.1"
    now = time.time() + 3600
    qs = QueueSource("queues.sidekiq", url, [QueueSpec("mail", "mail", type="sidekiq", max_age=1800),
                                             QueueSpec("broken", "mail_broken", type="sidekiq")],
                     wall=fixed_wall(now))
    got = by_name(await qs.poll())
    mail = got["mail"]
    assert mail.key == "queue:mail" and mail.depth == 2
    first = out["jobs"][-1]  # Sidekiq LPUSHes and BRPOPs: the first pushed is at the right end
    assert first["jid"] == out["jids"][0]
    assert mail.oldest_age_s == pytest.approx(now - first["enqueued_at"], abs=1e-3)
    # retry, dead and schedule are Sidekiq-wide sets
    assert (mail.failed, mail.dead_letter_depth, mail.dead_letter_key, mail.delayed) == (1, 1, "dead", 1)
    assert got["broken"].depth == 0 and got["broken"].failed == 1
    # the dead set is Sidekiq-wide: one finding for all the Sidekiq queues of this Redis
    findings = evaluate(Snapshot(readings={"q": tuple(got.values())}))
    assert sorted(f.key for f in findings) == ["queue:queues.sidekiq:mail:age", "queue:queues.sidekiq:sidekiq:dead"]
    (dead,) = [f for f in findings if f.key.endswith(":dead")]
    assert dead.summary == "Sidekiq: 1 job(s) in the dead set (all queues)"


# --------------------------------------------------------------------------- all together


async def test_presets_and_plain_types_in_one_round_trip(redis_server, closing):
    p = f"t{uuid.uuid4().hex[:6]}:"
    c = redis_server.client()
    c.lpush(p + "plain", json.dumps({"enqueued_at": time.time()}))
    c.set(f"rq:queue:{p}wrong", "not a list")
    c.close()
    specs = [QueueSpec("rq", p + "a", type="rq"), QueueSpec("bull", p + "b", type="bullmq"),
             QueueSpec("sk", p + "c", type="sidekiq"), QueueSpec("cel", p + "d", type="celery"),
             QueueSpec("plain", p + "plain", timestamp_field="enqueued_at", oldest_end="left"),
             QueueSpec("wrong", p + "wrong", type="rq")]
    qs = QueueSource("q", redis_server.url, specs)
    await qs.poll()
    client = get_client(redis_server.url, timeout=qs.timeout * 0.9)
    sent = []
    orig = client.pipeline

    def counting_pipeline(*a, **kw):
        pipe = orig(*a, **kw)
        real = pipe.execute

        async def execute(*ea, **ekw):
            sent.append(len(pipe.command_stack))
            return await real(*ea, **ekw)

        pipe.execute = execute
        return pipe

    client.pipeline = counting_pipeline
    try:
        got = by_name(await qs.poll())
    finally:
        client.pipeline = orig
    assert len(sent) == 1  # everything in one pipeline
    assert got["plain"].depth == 1 and got["plain"].oldest_age_s is not None
    assert all(got[n].depth == 0 and got[n].status is Status.OK for n in ("rq", "bull", "sk", "cel"))
    wrong = got["wrong"]
    assert wrong.status is Status.UNKNOWN
    (f,) = evaluate(Snapshot(readings={"q": (wrong,)}))
    assert f.summary == f"Queue wrong: key rq:queue:{p}wrong does not hold a rq queue (wrong Redis type)"


def test_spec_validation():
    with pytest.raises(ValueError, match="prefix applies to bullmq and celery"):
        QueueSpec("x", "default", type="rq", prefix="p")
    with pytest.raises(ValueError, match="timestamp_field does not apply to sidekiq"):
        QueueSpec("x", "default", type="sidekiq", timestamp_field="at")
    with pytest.raises(ValueError, match="dead_letter does not apply"):
        QueueSpec("x", "default", type="bullmq", dead_letter="d")
    with pytest.raises(ValueError, match="max_age"):
        QueueSpec("x", "default", type="rq", max_age=0)
    with pytest.raises(ValueError, match="type must be one of"):
        QueueSpec("x", "default", type="resque")
    assert QueueSpec("x", "default", type="bullmq").main_key == "bull:default:wait"
    assert QueueSpec("x", "default", type="celery", prefix="app:").preset_keys().lists == (
        "app:default", f"app:default{KOMBU_SEP}3", f"app:default{KOMBU_SEP}6", f"app:default{KOMBU_SEP}9")


# --------------------------------------------------------------------------- config -> health --json


def test_health_json_carries_per_queue_fields(redis_server, tmp_path: Path, capsys):
    from tui import cli

    url = db_url(redis_server, 5)
    import redis
    from rq import Queue

    conn = redis.Redis.from_url(url)
    try:
        Queue("default", connection=conn).enqueue("builtins.len", "ab")
        # a plain list whose consumers LPOP: producers RPUSH, the oldest job is at the head
        conn.rpush("jobs", json.dumps({"enqueued_at": time.time() - 100}), json.dumps({"enqueued_at": time.time()}))
    finally:
        conn.close()
    app = celery_app(url)
    try:
        app.send_task("mail.send", queue="celery")
    finally:
        app.close()
    cfg = tmp_path / "warroom.toml"
    cfg.write_text(f'''
[warroom]
name = "presets"

[redis.main]
url = "{url}"

[[queues]]
name = "rq-default"
redis = "main"
type = "rq"
key = "default"
max_age = "1h"

[[queues]]
name = "celery"
redis = "main"
type = "celery"
key = "celery"

[[queues]]
name = "bull-mail"
redis = "main"
type = "bullmq"
key = "mail"
prefix = "bull"

[[queues]]
name = "sk"
redis = "main"
type = "sidekiq"
key = "default"

[[queues]]
name = "plain"
redis = "main"
key = "jobs"
oldest_end = "left"
timestamp_field = "enqueued_at"
''')
    capsys.readouterr()
    code = cli.main(["health", "--json", "queues", "--config", str(cfg)])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0, doc
    (src,) = [s for s in doc["sources"] if s["name"] == "queues.main"]
    q = {x["name"]: x for x in src["queues"]}
    assert q["rq-default"]["depth"] == 1 and q["rq-default"]["type"] == "rq"
    assert q["rq-default"]["key"] == "rq:queue:default"
    assert 0 <= q["rq-default"]["oldest_age_s"] < 600 and q["rq-default"]["max_age_s"] == 3600
    assert q["rq-default"]["failed"] == 0 and q["rq-default"]["status"] == "ok"
    assert q["celery"]["depth"] == 1 and q["celery"]["oldest_age_s"] is None and q["celery"]["failed"] is None
    assert q["bull-mail"]["depth"] == 0 and q["bull-mail"]["paused"] is False
    assert q["sk"]["dead"] == 0 and q["sk"]["failed"] == 0
    assert q["plain"]["type"] == "list" and q["plain"]["depth"] == 2
    assert 100 <= q["plain"]["oldest_age_s"] < 700  # read from the head (oldest_end = "left")
    from tests.test_headless import validate

    validate(doc)


# --------------------------------------------------------------------------- config


def _errors(text: str) -> list:
    from backends.config import ConfigError, ConfigErrors, load_config_text

    with pytest.raises(ConfigError) as info:
        load_config_text(text, "warroom.toml", env={})
    exc = info.value
    return exc.errors if isinstance(exc, ConfigErrors) else [exc]


_BASE = '[redis.main]\nurl = "redis://127.0.0.1:6379/0"\n\n[[queues]]\nname = "q"\nredis = "main"\nkey = "default"\n'


def test_config_presets_and_keys_they_do_not_take():
    from backends.config import load_config_text

    cfg = load_config_text(_BASE + 'type = "bullmq"\nprefix = "jobs"\nmax_age = "15m"\n', "warroom.toml", env={})
    (q,) = cfg.queues
    assert (q.type, q.key, q.prefix, q.max_age, q.oldest_end) == ("bullmq", "default", "jobs", 900.0, "right")
    cfg = load_config_text(_BASE + 'type = "celery"\npriority_steps = [0, 5]\n'
                           'timestamp_field = "headers.sent_at"\n', "warroom.toml", env={})
    assert cfg.queues[0].priority_steps == (0, 5) and cfg.queues[0].timestamp_field == "headers.sent_at"
    assert load_config_text(_BASE + 'oldest_end = "left"\n', "warroom.toml", env={}).queues[0].oldest_end == "left"
    cases = {
        'type = "rq"\nprefix = "x"\n': ("queues[0].prefix", "prefix applies to bullmq and celery"),
        'type = "sidekiq"\ntimestamp_field = "at"\n': ("queues[0].timestamp_field", "own field"),
        'type = "rq"\ndead_letter = "d"\n': ("queues[0].dead_letter", "does not apply to a rq queue"),
        'type = "bullmq"\noldest_end = "left"\n': ("queues[0].oldest_end", "list queues only"),
        'type = "rq"\npriority_steps = [0, 3]\n': ("queues[0].priority_steps", "celery queues only"),
        'type = "celery"\npriority_steps = [0, 0]\n': ("queues[0].priority_steps", "invalid priority_steps"),
        'type = "resque"\n': ("queues[0].type", "resque"),
        'type = "rq"\nmax_age = "0s"\n': ("queues[0].max_age", "too short"),
        'oldest_end = "top"\n': ("queues[0].oldest_end", "top"),
    }
    for typ, redis_key, name in (("rq", "rq:queue:mail", "mail"), ("sidekiq", "queue:mail", "mail"),
                                 ("bullmq", "bull:mail:wait", "mail")):
        (err,) = _errors(_BASE.replace('key = "default"', f'key = "{redis_key}"') + f'type = "{typ}"\n')
        assert err.key == "queues[0].key" and "is a Redis key" in err.message and err.expected == f'key = "{name}"'
    for extra, (key, text) in cases.items():
        (err,) = _errors(_BASE + extra)
        assert err.key == key and text in str(err), (extra, str(err))
        assert err.line is not None
