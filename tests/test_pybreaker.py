"""Circuit breakers as PyPI pybreaker (1.4.1) keeps them in Redis: real `CircuitBreaker` objects
with `CircuitRedisStorage` write the state (tripped by failing calls) into the session Redis,
warroom's RedisBreakers reads it, with a namespace and with pybreaker's default keys (no
namespace); a namespace nothing wrote is UNKNOWN ("no breaker state under <key>"), never
CLOSED; the reset action writes what pybreaker's own `close()` writes; and `warroom health
--json breakers` on a config for such an app."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

pybreaker = pytest.importorskip("pybreaker")

from backends.actions.base import ActionEngine  # noqa: E402
from backends.config import ConfigError, load_config_text  # noqa: E402
from backends.engine.audit import AuditLog  # noqa: E402
from backends.engine.monitor import Monitor  # noqa: E402
from backends.engine.rules import evaluate, make_rules  # noqa: E402
from backends.model import Severity, SourceState  # noqa: E402
from backends.sources.breakers import DEFAULT_NAMESPACE_NAME, RedisBreakers, actions_for  # noqa: E402
from backends.sources.redis import close_clients  # noqa: E402

pytestmark = pytest.mark.redis

DEFAULT_DB = 11  # pybreaker's keys without a namespace are global: a database of their own


class Boom(Exception):
    pass


def fail() -> None:
    raise Boom("down")


def ok() -> str:
    return "ok"


def trip(cb, times: int) -> None:
    """`times` failing calls through the real breaker (the last one opens it at fail_max)."""
    for _ in range(times):
        with pytest.raises((Boom, pybreaker.CircuitBreakerError)):
            cb.call(fail)


async def wait_for(pred, within: float = 10.0, step: float = 0.05):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = await pred()
        if got:
            return got
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met within {within:.1f}s")


@pytest.fixture
async def app(redis_server):
    """(redis client as pybreaker's app uses it, a fresh namespace prefix, make(ns, **kw) -> CircuitBreaker)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=5)
    prefix = f"pb{uuid.uuid4().hex[:6]}"

    def make(namespace: str | None, *, client=client, **kw):
        storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=namespace)
        return pybreaker.CircuitBreaker(state_storage=storage, **kw)

    yield client, prefix, make
    for k in client.scan_iter(f"{prefix}*"):
        client.delete(k)
    client.close()
    await close_clients()


@pytest.fixture
def default_db(redis_server):
    """A client on the database where pybreaker's no-namespace keys are written (cleaned before/after)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_server.port, db=DEFAULT_DB, socket_timeout=5)
    client.flushdb()
    yield client, f"redis://127.0.0.1:{redis_server.port}/{DEFAULT_DB}"
    client.flushdb()
    client.close()


@pytest.fixture
def engine(tmp_path):
    return ActionEngine(AuditLog(tmp_path / "audit.jsonl"), operator="tester")


def pb_keys(client, namespace: str | None) -> dict[str, bytes | None]:
    base = f"{namespace}:pybreaker" if namespace else "pybreaker"
    return {k: client.get(f"{base}:{k}") for k in ("state", "fail_counter", "success_counter", "opened_at")}


# --------------------------------------------------------------------------- reading what pybreaker wrote


async def test_reads_pybreaker_breakers_with_a_namespace(redis_server, app):
    client, prefix, make = app
    payments, mail, idle = (make(f"{prefix}.payments", fail_max=3, reset_timeout=60),
                            make(f"{prefix}.mail", fail_max=5, reset_timeout=60), make(f"{prefix}.idle"))
    trip(payments, 3)  # the third failure opens it
    trip(mail, 2)  # two failures, still closed
    assert payments.current_state == "open" and mail.current_state == "closed" and idle.current_state == "closed"
    with pytest.raises(pybreaker.CircuitBreakerError, match="Timeout not elapsed"):
        payments.call(ok)  # pybreaker itself: still open
    stored = pb_keys(client, f"{prefix}.payments")
    assert stored["state"] == b"open" and stored["fail_counter"] == b"3"
    opened_epoch = int(stored["opened_at"])  # pybreaker: integer epoch seconds

    s = RedisBreakers("breakers", redis_server.url, [f"{prefix}.payments", f"{prefix}.mail", f"{prefix}.idle"],
                      reset_timeout=60)
    (r,) = await s.poll()
    assert s.answer_problem() == ""
    assert (r.total, r.open, r.half_open) == (3, 1, 0)
    by = {b.name: b for b in r.breakers}
    p = by[f"{prefix}.payments"]
    assert (p.state, p.failures, p.backend) == ("open", 3, "redis")
    assert p.opened_at == payments._state_storage.opened_at and int(p.opened_at.timestamp()) == opened_epoch
    assert 55 <= p.half_open_in_s <= 60
    assert (by[f"{prefix}.mail"].state, by[f"{prefix}.mail"].failures) == ("closed", 2)
    assert (by[f"{prefix}.idle"].state, by[f"{prefix}.idle"].failures) == ("closed", 0)
    assert r.breakers[0].name == f"{prefix}.payments"  # open first
    (f,) = evaluate_one(r)
    assert f.severity is Severity.P2 and f"{prefix}.payments" in f.summary

    mail.call(ok)  # a success: pybreaker sets fail_counter 0
    (r,) = await s.poll()
    assert {b.name: b.failures for b in r.breakers}[f"{prefix}.mail"] == 0


def evaluate_one(r):
    from backends.model import Snapshot

    return [f for f in evaluate(Snapshot(readings={r.source: (r,)})) if f.source == r.source]


async def test_reads_pybreakers_default_keys_without_a_namespace(default_db, engine):
    client, url = default_db
    storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client)  # no namespace
    cb = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60, state_storage=storage)
    assert sorted(k.decode() for k in client.keys("*")) == [
        "pybreaker:fail_counter", "pybreaker:state", "pybreaker:success_counter"]
    s = RedisBreakers("breakers", url, [""], reset_timeout=60)
    (r,) = await s.poll()
    assert s.answer_problem() == "" and [(b.name, b.state) for b in r.breakers] == [(DEFAULT_NAMESPACE_NAME, "closed")]

    trip(cb, 2)
    (r,) = await s.poll()
    (b,) = r.breakers
    assert (b.name, b.state, b.failures, r.open, r.total) == ("(default)", "open", 2, 1, 1)
    (f,) = evaluate_one(r)
    assert f.severity is Severity.P1 and f.key == "breakers:breakers:all-open"

    for a in actions_for(s):
        engine.register(a)
    plan = await engine.plan("breaker.reset", trigger_id=DEFAULT_NAMESPACE_NAME)
    assert plan.guard.ok and "(default): open, 2 failure(s) -> closed" in plan.preview
    result = await engine.execute(plan, confirmation=True)
    assert result.status == "ok"
    assert pb_keys(client, None)["state"] == b"closed" and cb.current_state == "closed" and cb.fail_counter == 0
    assert cb.call(ok) == "ok"
    # "" as a namespace is pybreaker's "no namespace" too: one breaker, the same keys
    assert RedisBreakers("b", url, ["", ""]).namespaces == ("",)


# --------------------------------------------------------------------------- nothing there: UNKNOWN


async def test_a_namespace_nothing_wrote_is_unknown_never_closed(redis_server, app):
    client, prefix, make = app
    cb = make(f"{prefix}.real", fail_max=1)
    trip(cb, 1)
    typo = f"{prefix}.paymnets"
    s = RedisBreakers("breakers", redis_server.url, [f"{prefix}.real", typo], reset_timeout=60, timeout=2.0)
    mon = Monitor([s], rules=make_rules())
    snap = await mon.poll_once()
    st = snap.sources["breakers"]
    assert st.state is SourceState.DEGRADED
    assert st.reason.startswith(f"no breaker state under {typo}:pybreaker:state")
    (r,) = snap.readings["breakers"]
    assert [b.name for b in r.breakers] == [f"{prefix}.real"] and (r.total, r.open) == (1, 1)  # kept, not CLOSED
    assert any(f.key == "degraded:breakers" and "no breaker state under" in f.summary for f in snap.findings)

    # only missing: no breaker at all, still UNKNOWN (0 closed, not 1)
    only = RedisBreakers("breakers.none", redis_server.url, [typo, ""])
    snap = await Monitor([only], rules=make_rules()).poll_once()
    st = snap.sources["breakers.none"]
    assert st.state is SourceState.DEGRADED and snap.readings["breakers.none"][0].total == 0
    assert f"no breaker state under {typo}:pybreaker:state, pybreaker:state" in st.reason

    # the app starts (CircuitRedisStorage writes its keys): a breaker, the source is OK
    make(typo)
    snap = await mon.poll_once()
    assert snap.sources["breakers"].state is SourceState.OK
    # keys gone (flushed, expired): UNKNOWN again until pybreaker writes them back on its next call
    client.delete(f"{typo}:pybreaker:state", f"{typo}:pybreaker:fail_counter")
    snap = await mon.poll_once()
    assert snap.sources["breakers"].state is SourceState.DEGRADED

    # a value pybreaker itself could not read: UNKNOWN with what is wrong
    client.set(f"{typo}:pybreaker:state", "tripped")
    with pytest.raises(ValueError, match="Unknown state 'tripped'"):
        _ = make(typo).state
    snap = await mon.poll_once()
    reason = snap.sources["breakers"].reason
    assert snap.sources["breakers"].state is SourceState.DEGRADED
    assert f"state 'tripped' under {typo}:pybreaker:state (pybreaker writes closed, open or half-open)" in reason
    assert [b.name for b in snap.readings["breakers"][0].breakers] == [f"{prefix}.real"]


async def test_unknown_namespace_names_the_namespaces_pybreaker_did_write(default_db):
    client, url = default_db
    for ns in ("payments", None):
        pybreaker.CircuitBreaker(state_storage=pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client,
                                                                              namespace=ns))
    client.set("unrelated:state", "x")
    s = RedisBreakers("breakers", url, ["paymnets"])
    snap = await Monitor([s], rules=make_rules()).poll_once()
    assert snap.sources["breakers"].reason == (
        "no breaker state under paymnets:pybreaker:state: no pybreaker CircuitRedisStorage has written there "
        '(check [breakers] redis_namespaces; "" is pybreaker\'s keys without a namespace); '
        'pybreaker state found under namespace(s) "" (no namespace), payments')


# --------------------------------------------------------------------------- half-open as pybreaker means it


async def test_open_past_reset_timeout_is_half_open_as_pybreaker_decides(redis_server, app):
    client, prefix, make = app
    ns = f"{prefix}.rpc"
    cb = make(ns, fail_max=2, reset_timeout=1)
    trip(cb, 2)
    s = RedisBreakers("breakers", redis_server.url, [ns], reset_timeout=1)

    async def half_open():
        (r,) = await s.poll()
        return r if r.half_open == 1 else None

    r = await wait_for(half_open, within=5)
    (b,) = r.breakers
    assert (b.state, b.half_open_in_s, r.open) == ("half-open", None, 0)
    assert pb_keys(client, ns)["state"] == b"open"  # pybreaker writes half-open only when the trial call starts
    assert not evaluate_one(r)  # not open any more: no finding
    assert cb.call(ok) == "ok"  # pybreaker agrees: the trial goes through, and it closes
    (r,) = await s.poll()
    assert [(b.state, b.failures) for b in r.breakers] == [("closed", 0)]
    # a stored half-open (a trial under way in another process) reads as half-open too
    cb.half_open()
    (r,) = await s.poll()
    assert r.half_open == 1 and pb_keys(client, ns)["state"] == b"half-open"


# --------------------------------------------------------------------------- reset: what pybreaker writes


async def test_reset_writes_what_pybreaker_close_writes(redis_server, app, engine):
    client, prefix, make = app
    ours, theirs = f"{prefix}.ours", f"{prefix}.theirs"
    cb_ours, cb_theirs = make(ours, fail_max=3, reset_timeout=60), make(theirs, fail_max=3, reset_timeout=60)
    trip(cb_ours, 3)
    trip(cb_theirs, 3)
    s = RedisBreakers("breakers", redis_server.url, [ours, theirs], reset_timeout=60)
    for a in actions_for(s):
        engine.register(a)
    plan = await engine.plan("breaker.reset", trigger_id=ours)
    result = await engine.execute(plan, confirmation=True)
    assert result.status == "ok" and result.counts == {"reset": 1}
    cb_theirs.close()  # pybreaker's own reset of the twin
    mine, pybreakers = pb_keys(client, ours), pb_keys(client, theirs)
    assert {k: v for k, v in mine.items() if k != "opened_at"} == \
        {k: v for k, v in pybreakers.items() if k != "opened_at"} == \
        {"state": b"closed", "fail_counter": b"0", "success_counter": b"0"}
    assert mine["opened_at"] is not None and pybreakers["opened_at"] is not None  # pybreaker keeps it
    # the app's breaker sees it closed, with no failures, and counts from zero again
    assert cb_ours.current_state == "closed" and cb_ours.fail_counter == 0 and cb_ours.call(ok) == "ok"
    trip(cb_ours, 2)
    assert cb_ours.current_state == "closed"
    trip(cb_ours, 1)
    assert cb_ours.current_state == "open"
    # reset_all: every open one (the twin is closed already), the count typed
    all_plan = await engine.plan("breaker.reset_all")
    assert all_plan.total == 1 and all_plan.confirm_text == "1"
    result = await engine.execute(all_plan, confirmation="1")
    assert result.counts == {"reset": 1, "skipped": 0} and cb_ours.current_state == "closed"
    assert [e["result"] for e in engine.audit.entries()] == ["ok", "ok"]


# --------------------------------------------------------------------------- config and `warroom health`


def test_config_namespaces_empty_is_pybreakers_default_keys(tmp_path):
    base = '[redis.main]\nurl = "redis://127.0.0.1:6379/0"\n[breakers]\nredis = "main"\n'
    cfg = load_config_text(base + 'redis_namespaces = ["", "payments"]\n')
    assert cfg.breakers.redis_namespaces == ("", "payments")
    assert 'breakers: redis.main pybreaker namespaces "" (none: pybreaker:*), payments' in cfg.summary()
    with pytest.raises(ConfigError) as e:
        load_config_text(base)
    assert 'redis_namespaces = [""] (no namespace)' in str(e.value.render())
    assert '"" for one without a namespace' in str(e.value.render())
    with pytest.raises(ConfigError) as e:
        load_config_text(base + 'redis_namespaces = ["pay ments"]\n')
    assert "or \"\" for its keys without one" in e.value.render()


def test_health_json_breakers_on_a_pybreaker_app(redis_server, default_db, tmp_path, capsys):
    """`warroom health --json breakers` on the copy-paste config of the README: one namespaced
    breaker tripped by real failing calls, the default (no namespace) one closed: exit 1 (P2);
    a namespace nothing wrote: exit 3 UNKNOWN with the reason."""
    from tui import cli

    client, url = default_db
    ns = f"pb{uuid.uuid4().hex[:6]}.payments"
    storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=ns)
    payments = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30, state_storage=storage)
    pybreaker.CircuitBreaker(state_storage=pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client))
    trip(payments, 5)

    def run(namespaces: list[str]) -> tuple[int, dict]:
        cfg = tmp_path / "warroom.toml"
        cfg.write_text(f'[warroom]\nstate_dir = "{tmp_path}"\n[redis.app]\nurl = "{url}"\n'
                       f'[breakers]\nredis = "app"\nredis_namespaces = {json.dumps(namespaces)}\n'
                       f'reset_timeout = "30s"\n')
        capsys.readouterr()
        code = cli.main(["health", "--json", "breakers", "--config", str(cfg)])
        return code, json.loads(capsys.readouterr().out)

    code, doc = run([ns, ""])
    (src,) = doc["sources"]
    assert code == 1 and src["name"] == "breakers" and src["status"] == "warn"
    assert src["detail"] == ["2 breakers, 1 open, 0 half-open"]
    (f,) = doc["findings"]
    assert f["severity"] == "P2" and f["summary"] == f"1 of 2 circuit breaker(s) open: {ns}"
    assert "5 failure(s)" in f["evidence"][0] and "half-open in" in f["evidence"][0]

    code, doc = run([ns, "", "orders"])
    (src,) = doc["sources"]
    assert code == 3 and doc["status"] == "unknown" and src["status"] == "unknown"
    assert src["reason"].startswith("no breaker state under orders:pybreaker:state")
    assert src["detail"] == ["2 breakers, 1 open, 0 half-open"]  # what could be read is still shown
