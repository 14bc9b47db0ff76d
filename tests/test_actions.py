"""The action contract and the audit trail (real files, real fsync, real flock)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os

import pytest

from backends.actions.base import (
    Action,
    ActionEngine,
    ActionPlan,
    ActionResult,
    Change,
    Danger,
    Guard,
    LocalLocks,
    Progress,
)
from backends.engine.audit import AuditLog, mask_params, operator_identity
from backends.errors import ActionRefused, register_secret


class Counter(Action):
    """Sets a value in a dict if it still has the expected old value."""

    id = "test.set"
    title = "Set value"
    danger = Danger.CONFIRM
    reason_required = True

    def __init__(self, store: dict, danger: Danger = Danger.CONFIRM):
        self.store = store
        self.danger = danger
        self.executed = 0

    async def plan(self, *, key: str, value: int, reason: str | None = None, **_) -> ActionPlan:
        if not key.isidentifier():
            raise ActionRefused(self.id, f"bad key {key!r}")
        before = self.store.get(key)
        return ActionPlan(
            action=self.id,
            title=self.title,
            target=f"store:{key}",
            changes=(Change(target=key, description=f"{key}: {before} -> {value}", before=before, after=value),),
            guard=Guard(before is not None, f"{key} exists"),
            danger=self.danger,
            params={"key": key, "value": value, "password": "hunter2"},
            reason=reason,
            reason_required=True,
            confirm_text=key,
            preview=f"{key}: {before} -> {value}",
            total=1,
        )

    async def check_guard(self, plan: ActionPlan) -> Guard:
        key = plan.params["key"]
        cur = self.store.get(key)
        return Guard(cur == plan.changes[0].before, "value unchanged since the plan", f"now {cur}")

    async def execute(self, plan: ActionPlan, progress) -> ActionResult:
        self.executed += 1
        key = plan.params["key"]
        before = self.store[key]
        self.store[key] = plan.params["value"]
        progress(Progress(1, 1, "done"))
        return ActionResult(status="ok", summary="set", before=before, after=self.store[key])


@pytest.fixture
def audit(tmp_path):
    return AuditLog(tmp_path / "audit.jsonl")


async def test_full_flow_writes_audit_entry_with_who_what_why_before_after(audit):
    store = {"a": 1}
    engine = ActionEngine(audit, operator="alice@10.0.0.5")
    action = engine.register(Counter(store))
    plan = await engine.plan("test.set", key="a", value=2, reason="  listener failure ")
    assert plan.reason == "listener failure"
    assert plan.changes[0].before == 1 and plan.changes[0].after == 2
    assert store == {"a": 1}  # planning changes nothing
    seen = []
    result = await engine.execute(plan, confirmation="yes", progress=seen.append)
    assert result.ok and store == {"a": 2} and action.executed == 1
    assert seen == [Progress(1, 1, "done")]
    [entry] = audit.tail(5)
    assert entry["operator"] == "alice@10.0.0.5"
    assert entry["action"] == "test.set" and entry["target"] == "store:a"
    assert entry["reason"] == "listener failure"
    assert entry["before"] == 1 and entry["after"] == 2
    assert entry["result"] == "ok" and entry["dry_run"] is False
    assert entry["params"]["password"] == "********"
    assert "hunter2" not in audit.path.read_text()


async def test_read_only_refuses_in_the_engine_and_audits_the_refusal(audit):
    store = {"a": 1}
    engine = ActionEngine(audit, read_only=True, operator="bob")
    action = engine.register(Counter(store))
    assert engine.available() == []
    plan = await engine.plan("test.set", key="a", value=5, reason="x")  # preview allowed
    with pytest.raises(ActionRefused, match="read-only"):
        await engine.execute(plan, confirmation="yes")
    assert store == {"a": 1} and action.executed == 0
    assert audit.tail(1)[0]["result"] == "refused"


async def test_missing_reason_and_missing_confirmation_are_refused(audit):
    store = {"a": 1}
    engine = ActionEngine(audit, operator="bob")
    engine.register(Counter(store))
    plan = await engine.plan("test.set", key="a", value=5, reason="   ")
    with pytest.raises(ActionRefused, match="reason is required"):
        await engine.execute(plan, confirmation="yes")
    plan = await engine.plan("test.set", key="a", value=5, reason="ok")
    with pytest.raises(ActionRefused, match="not confirmed"):
        await engine.execute(plan, confirmation=None)
    assert store == {"a": 1}
    assert [e["result"] for e in audit.tail(5)] == ["refused", "refused"]


async def test_typed_confirmation_must_match(audit):
    store = {"a": 1}
    engine = ActionEngine(audit, operator="bob")
    engine.register(Counter(store, danger=Danger.TYPED))
    plan = await engine.plan("test.set", key="a", value=5, reason="r")
    assert plan.expected_confirmation == "a"
    with pytest.raises(ActionRefused, match="type 'a'"):
        await engine.execute(plan, confirmation="yes")
    assert store == {"a": 1}
    result = await engine.execute(plan, confirmation="a")
    assert result.ok and store == {"a": 5}


async def test_bad_input_refused_before_anything_is_touched(audit):
    engine = ActionEngine(audit, operator="bob")
    engine.register(Counter({"a": 1}))
    with pytest.raises(ActionRefused, match="bad key"):
        await engine.plan("test.set", key="a; drop table", value=1)
    with pytest.raises(ActionRefused, match="no such action"):
        await engine.plan("nope")
    assert not audit.path.exists()


async def test_guard_rechecked_at_execution(audit):
    store = {"a": 1}
    engine = ActionEngine(audit, operator="bob")
    action = engine.register(Counter(store))
    plan = await engine.plan("test.set", key="a", value=2, reason="r")
    store["a"] = 7  # changed by someone else meanwhile
    result = await engine.execute(plan, confirmation="yes")
    assert result.status == "refused" and "guard failed" in result.summary
    assert action.executed == 0 and store["a"] == 7
    assert audit.tail(1)[0]["result"] == "refused"


async def test_failure_in_execute_is_audited_with_readable_reason(audit):
    class Boom(Counter):
        async def execute(self, plan, progress):
            raise ConnectionRefusedError(111, "Connection refused")

    engine = ActionEngine(audit, operator="bob")
    engine.register(Boom({"a": 1}))
    plan = await engine.plan("test.set", key="a", value=2, reason="r")
    result = await engine.execute(plan, confirmation="yes")
    assert result.status == "failed"
    assert result.summary == "connection refused"
    assert audit.tail(1)[0]["result"] == "failed"


async def test_a_guard_that_cannot_be_checked_refuses_audited_and_names_the_guard(audit):
    """A guard whose check raises (the database refused its query) is a refusal that says so,
    audited; not "its lock could not be taken", and never an unaudited exception."""
    class GuardDown(Counter):
        async def check_guard(self, plan):
            raise ConnectionRefusedError(111, "Connection refused")

    class GuardBug(Counter):
        async def check_guard(self, plan):
            raise KeyError("no such column")

    for cls in (GuardDown, GuardBug):
        store = {"a": 1}
        engine = ActionEngine(audit, operator="bob")
        action = engine.register(cls(store))
        plan = await engine.plan("test.set", key="a", value=2, reason="r")
        result = await engine.execute(plan, confirmation="yes")
        assert result.status == "refused", result.summary
        assert "the guard could not be checked" in result.summary and "lock" not in result.summary
        assert action.executed == 0 and store == {"a": 1}
        assert audit.tail(1)[0]["result"] == "refused"


async def test_dry_run_is_recorded_as_dry_run(audit):
    engine = ActionEngine(audit, operator="bob")
    engine.register(Counter({"a": 1}))
    plan = await engine.plan("test.set", key="a", value=2, reason="r")
    engine.record_dry_run(plan)
    e = audit.tail(1)[0]
    assert e["dry_run"] is True and e["result"] == "previewed" and e["after"] == [2]


async def test_locks_refuse_a_second_action_on_the_same_target(tmp_path, audit):
    store = {"a": 1}
    gate = asyncio.Event()
    running = asyncio.Event()

    class Slow(Counter):
        async def execute(self, plan, progress):
            running.set()  # the engine holds the target's lock while the action runs
            await gate.wait()
            return await super().execute(plan, progress)

    locks = LocalLocks(tmp_path / "locks")
    e1 = ActionEngine(audit, operator="alice", locks=locks)
    e2 = ActionEngine(AuditLog(tmp_path / "other.jsonl"), operator="bob", locks=locks)
    e1.register(Slow(store))
    e2.register(Slow(store))
    p1 = await e1.plan("test.set", key="a", value=2, reason="r")
    p2 = await e2.plan("test.set", key="a", value=3, reason="r")
    t1 = asyncio.create_task(e1.execute(p1, confirmation="yes"))
    await asyncio.wait_for(running.wait(), 5)
    with pytest.raises(ActionRefused, match="locked by alice"):
        await e2.execute(p2, confirmation="yes")
    gate.set()
    assert (await t1).ok and store["a"] == 2


def _append_many(path, n, who):
    log = AuditLog(path)
    for i in range(n):
        log.append(action="x", target=str(i), operator=who, result="ok")


def test_hash_chain_survives_concurrent_writers_and_detects_tampering(tmp_path):
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, 40, f"w{i}")) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    log = AuditLog(path)
    res = log.verify()
    assert res.ok and res.entries == 120
    assert [e["seq"] for e in log.entries()] == list(range(1, 121))
    # tamper with line 57: change the result
    lines = path.read_text().splitlines()
    entry = json.loads(lines[56])
    entry["result"] = "failed"
    lines[56] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")
    res = log.verify()
    assert not res.ok and res.first_bad_line == 57 and "modified" in res.reason
    # deleting a line breaks the chain at the next one
    lines = AuditLog(path).path.read_text().splitlines()
    del lines[10]
    path.write_text("\n".join(lines) + "\n")
    res = log.verify()
    assert not res.ok and res.first_bad_line == 11


async def test_audit_writes_never_block_the_event_loop(tmp_path):
    """The console awaits audit writes in a thread of their own: while another process
    holds the audit file's lock (or the disk is slow) the loop keeps drawing; the action
    waits for its intent entry (write-ahead: nothing is executed before it is on disk); a
    write whose caller was cancelled still lands; entries keep the order of the calls."""
    import fcntl

    from tests.test_shared import until

    log = AuditLog(tmp_path / "audit.jsonl")
    log.append(action="first")
    engine = ActionEngine(log, operator="alice")
    store = {"a": 1}
    engine.register(Counter(store))
    plan = await engine.plan("test.set", key="a", value=2, reason="r")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    holder = os.open(log.path, os.O_RDWR)  # "another warroom" holds the lock
    fcntl.flock(holder, fcntl.LOCK_EX)
    tick_task = asyncio.create_task(ticker())
    try:
        run = asyncio.create_task(engine.execute(plan, confirmation=True))
        assert await until(lambda: len(log._pending) == 1)  # it waits on its intent entry
        soon = [log.append_soon(action=f"bg{i}") for i in range(5)]
        cancelled = asyncio.create_task(log.append_async(action="caller-cancelled"))
        assert await until(lambda: len(log._pending) == 7)
        first = ticks
        assert await until(lambda: ticks >= first + 10)  # the loop runs while the writes wait on the lock
        assert not run.done() and [e["action"] for e in log.records()] == ["first"]
        assert store == {"a": 1}  # write-ahead: not executed before its intent is on disk
        cancelled.cancel()
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
    result = await asyncio.wait_for(run, 10)
    assert result.status == "ok" and store == {"a": 2}
    assert await log.flush()
    tick_task.cancel()
    assert all(f.done() and f.exception() is None for f in soon)
    records = list(log.records())
    assert [(e["action"], e.get("phase")) for e in records] == [
        ("first", None), ("test.set", "intent"), ("bg0", None), ("bg1", None), ("bg2", None), ("bg3", None),
        ("bg4", None), ("caller-cancelled", None), ("test.set", "outcome")]
    assert records[-1]["intent"] == records[1]["seq"]
    assert [e["action"] for e in log.entries()] == [
        "first", "bg0", "bg1", "bg2", "bg3", "bg4", "caller-cancelled", "test.set"]
    assert log.verify().ok


def test_audit_file_is_private_and_fsynced(tmp_path):
    log = AuditLog(tmp_path / "a" / "audit.jsonl")
    log.append(action="x")
    assert oct(os.stat(log.path).st_mode & 0o777) == "0o600"


def test_secrets_are_masked_everywhere():
    register_secret("s3cr3t-value")
    masked = mask_params(
        {
            "dsn": "postgresql://app:pw123@127.0.0.1/db",
            "api_token": "abc",
            "nested": {"routing_key": "r" * 32, "note": "used s3cr3t-value here"},
            "list": ["password=xyz"],
        }
    )
    text = json.dumps(masked)
    for leaked in ("pw123", "abc", "r" * 32, "s3cr3t-value", "xyz"):
        assert leaked not in text


def test_operator_identity():
    assert operator_identity({"WARROOM_OPERATOR": "joseph"}) == "joseph"
    ident = operator_identity({"SSH_CLIENT": "203.0.113.9 51000 22"})
    assert ident.endswith("@203.0.113.9")


async def test_cancelled_while_running_writes_the_outcome_of_its_intent(audit):
    """Quit mid-action: the intent is there and its outcome says cancelled (written inline)."""
    from tests.test_shared import until

    gate = asyncio.Event()
    started = asyncio.Event()

    class Hangs(Counter):
        async def execute(self, plan, progress):
            started.set()
            await gate.wait()

    engine = ActionEngine(audit, operator="alice")
    engine.register(Hangs({"a": 1}))
    plan = await engine.plan("test.set", key="a", value=2, reason="r")
    task = asyncio.create_task(engine.execute(plan, confirmation="yes"))
    assert await until(started.is_set)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    intent, outcome = audit.records()
    assert intent["phase"] == "intent" and (outcome["intent"], outcome["result"]) == (intent["seq"], "failed")
    assert outcome["summary"] == "cancelled while running"
    res = audit.verify()
    assert res.ok and not res.open_intents
