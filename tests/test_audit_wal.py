"""The audit trail as a write-ahead log (issue 21), its crash safety (issue 22) and its
tamper evidence and off-loop index (issue 16): real files, real fsync, real mounts
(tmpfs full / read-only), a real `warroom orders bulk-fix` killed with SIGKILL against
the session Postgres.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backends.actions.base import ActionEngine
from backends.engine.audit import GENESIS, AuditLog, entry_hash, entry_mac
from backends.errors import ActionRefused
from tests.harness import in_ci
from tests.test_actions import Counter
from tests.test_shared import until

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def small_fs(tmp_path):
    """A 64 KiB tmpfs (mounted for the test, unmounted after). Skips (fails under CI=true)
    when mounting is not permitted here."""
    where = tmp_path / "mnt"
    where.mkdir()
    res = _mount("-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(where))
    if res.returncode != 0:
        reason = f"cannot mount a tmpfs here: {res.stderr.strip() or res.returncode}"
        if in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


class Noted(Counter):
    """Counter whose params carry a large note: each audit entry is bigger than a page, so
    on a full file system the write cannot fit in the slack of the file's last page."""

    async def plan(self, **kw):
        plan = await super().plan(**kw)
        from dataclasses import replace

        return replace(plan, params={**plan.params, "note": "n" * 6000})


def _append_bytes(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def _fill(where: Path) -> Path:
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


# --------------------------------------------------------------------------- write-ahead


async def test_intent_is_on_disk_before_the_action_runs_and_the_outcome_names_it(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    store = {"a": 1}
    seen_in_execute = []

    class Peek(Counter):
        async def execute(self, plan, progress):
            seen_in_execute.extend(AuditLog(log.path).records())  # a fresh reader: it is on disk
            return await super().execute(plan, progress)

    engine = ActionEngine(log, operator="alice")
    engine.register(Peek(store))
    plan = await engine.plan("test.set", key="a", value=2, reason="why")
    result = await engine.execute(plan, confirmation="yes")
    assert result.ok and store == {"a": 2}
    [intent] = seen_in_execute
    assert (intent["phase"], intent["result"], intent["operator"], intent["reason"]) == (
        "intent", "started", "alice", "why")
    assert intent["target"] == "store:a" and intent["plan"]["changes"][0]["description"] == "a: 1 -> 2"
    assert intent["params"]["password"] == "********"
    intent_r, outcome = log.records()
    assert intent_r == intent
    assert outcome["phase"] == "outcome" and outcome["intent"] == intent["seq"] and outcome["result"] == "ok"
    assert [e["result"] for e in log.entries()] == ["ok"]  # the readers' view: what was done
    assert log.verify().ok and not log.verify().open_intents


async def test_refusals_write_one_entry_and_no_intent(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    engine = ActionEngine(log, operator="bob", read_only=True)
    engine.register(Counter({"a": 1}))
    plan = await engine.plan("test.set", key="a", value=2, reason="r")
    with pytest.raises(ActionRefused):
        await engine.execute(plan, confirmation="yes")
    assert [(e["result"], e.get("phase")) for e in log.records()] == [("refused", None)]


async def test_full_file_system_refuses_the_action_and_leaves_no_half_entry(small_fs):
    log = AuditLog(small_fs / "audit.jsonl")
    store = {"a": 1}
    engine = ActionEngine(log, operator="alice")
    action = engine.register(Noted(store))
    plan = await engine.plan("test.set", key="a", value=2, reason="r")
    assert (await engine.execute(plan, confirmation="yes")).ok  # room: it runs
    size_before = log.path.stat().st_size
    filler = _fill(small_fs)
    plan = await engine.plan("test.set", key="a", value=3, reason="r")
    with pytest.raises(ActionRefused, match="audit trail cannot be written.*no space left"):
        await engine.execute(plan, confirmation="yes")
    assert store == {"a": 2} and action.executed == 1  # not executed
    assert log.path.stat().st_size == size_before  # the partial write was cut back
    res = log.verify()
    assert res.ok and res.total == 2, res
    filler.unlink()  # space again: it runs, with its intent
    assert (await engine.execute(plan, confirmation="yes")).ok and store == {"a": 3}
    assert [e.get("phase") for e in log.records()] == ["intent", "outcome", "intent", "outcome"]
    assert log.verify().ok


def test_first_entry_on_a_full_disk_leaves_no_empty_key_behind(small_fs):
    """The key is created with the first entry: on a full disk neither is written, and once
    there is room the trail starts whole (an empty key file used to make it unusable)."""
    from backends.engine.audit import AuditUnavailable

    log = AuditLog(small_fs / "audit.jsonl")
    filler = _fill(small_fs)
    assert log.write_problem().startswith("no space left on device")
    with pytest.raises(AuditUnavailable):
        log.append(action="first")
    assert not log.key_path.exists() and not list(small_fs.glob("*.tmp"))
    filler.unlink()
    assert log.write_problem() is None
    log.append(action="first")
    assert log.verify().ok and log.verify().keyed == 1


async def test_read_only_file_system_refuses_the_action(small_fs):
    log = AuditLog(small_fs / "audit.jsonl")
    log.append(action="first")
    store = {"a": 1}
    engine = ActionEngine(log, operator="alice")
    action = engine.register(Counter(store))
    plan = await engine.plan("test.set", key="a", value=2, reason="r")
    res = _mount("-o", "remount,ro", str(small_fs))
    assert res.returncode == 0, res.stderr
    try:
        with pytest.raises(ActionRefused, match="audit trail cannot be written.*read-only file system"):
            await engine.execute(plan, confirmation="yes")
        assert store == {"a": 1} and action.executed == 0
        assert log.verify().ok  # still readable and intact
    finally:
        _mount("-o", "remount,rw", str(small_fs))
    assert (await engine.execute(plan, confirmation="yes")).ok


async def test_outcome_that_cannot_be_written_leaves_an_open_intent(small_fs):
    """Disk full after the change: the change stands, the result says so, verify lists it."""
    log = AuditLog(small_fs / "audit.jsonl")
    store = {"a": 1}
    filled: list[Path] = []

    class FillsTheDisk(Noted):
        async def execute(self, plan, progress):
            res = await super().execute(plan, progress)
            filled.append(_fill(small_fs))
            return res

    engine = ActionEngine(log, operator="alice")
    engine.register(FillsTheDisk(store))
    plan = await engine.plan("test.set", key="a", value=2, reason="r")
    result = await engine.execute(plan, confirmation="yes")
    assert result.ok and store == {"a": 2}
    assert any("outcome unknown" in d for d in result.details)
    res = log.verify()
    assert res.ok and [i["text"] for i in res.open_intents] == ["started, outcome unknown: check store:a"]
    filled[0].unlink()


# --------------------------------------------------------------------------- torn tail


async def test_torn_tail_is_reported_then_set_aside_and_the_chain_continues(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for i in range(3):
        log.append(action="x", target=str(i))
    whole = path.stat().st_size
    torn = b'{"action":"orders.fix","ts":"2026-12-'
    _append_bytes(path, torn)  # a crash mid-append
    res = AuditLog(path).verify()
    assert not res.ok and not res.problems and res.torn["offset"] == whole and res.torn["length"] == len(torn)
    store = {"a": 1}
    engine = ActionEngine(AuditLog(path), operator="alice")
    engine.register(Counter(store))
    plan = await engine.plan("test.set", key="a", value=2, reason="r")
    assert (await engine.execute(plan, confirmation="yes")).ok  # no JSONDecodeError: set aside first
    [record] = [json.loads(ln) for ln in (tmp_path / "audit.jsonl.torn").read_text().splitlines()]
    assert record["offset"] == whole and record["length"] == len(torn)
    assert record["text"] == torn.decode()
    entries = list(log.entries())
    aside = entries[3]
    assert aside["action"] == "audit.torn_tail" and aside["seq"] == 4 and aside["extra"]["offset"] == whole
    res = log.verify()
    assert res.ok and res.total == 6 and [t["offset"] for t in res.set_aside] == [whole]


async def test_torn_tail_that_cannot_be_set_aside_refuses_changes(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append(action="x")
    _append_bytes(path, b"\0\0\0\0")  # a power loss can leave NULs
    (tmp_path / "audit.jsonl.torn").mkdir()  # the .torn file cannot be written
    store = {"a": 1}
    engine = ActionEngine(AuditLog(path), operator="alice")
    action = engine.register(Counter(store))
    plan = await engine.plan("test.set", key="a", value=2, reason="r")
    with pytest.raises(ActionRefused, match="torn last line at offset .* cannot be set aside"):
        await engine.execute(plan, confirmation="yes")
    assert store == {"a": 1} and action.executed == 0
    (tmp_path / "audit.jsonl.torn").rmdir()
    assert (await engine.execute(plan, confirmation="yes")).ok
    assert AuditLog(path).verify().ok


def test_torn_whole_last_line_of_garbage_and_open_check(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append(action="x")
    with open(path, "ab") as fh:
        fh.write(b'{"not": "an entry"\n')  # newline-terminated but not an entry
    tail = AuditLog(path).open_check()
    assert tail.torn and tail.seq == 1
    assert AuditLog(path).verify().ok
    assert AuditLog(path).open_check().torn is False


# --------------------------------------------------------------------------- tamper evidence


def _lines(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def _write(path: Path, entries: list[dict]) -> None:
    path.write_text("".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in entries))


def _rechain(entries: list[dict], *, key: bytes | None = None, strip_mac: bool = False) -> list[dict]:
    """What an attacker without the key can do: recompute every hash (and renumber)."""
    prev = GENESIS
    out = []
    for i, e in enumerate(entries, 1):
        body = {k: v for k, v in e.items() if k not in ("hash", "mac")}
        body["seq"], body["prev"] = i, prev
        digest = entry_hash(prev, body)
        new = dict(body, hash=digest)
        if not strip_mac:
            new["mac"] = entry_mac(key, digest) if key else e.get("mac")
        out.append(new)
        prev = digest
    return out


@pytest.fixture
def trail(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(8):
        log.append(action="orders.fix", target=f"order:{i}", reason="r")
    assert oct(os.stat(log.key_path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(log.head_path).st_mode & 0o777) == "0o600"
    return log


def kinds(log: AuditLog) -> list[str]:
    return [p.kind for p in AuditLog(log.path).verify().problems]


def test_edit_without_recomputing_is_reported(trail):
    entries = _lines(trail.path)
    entries[2]["target"] = "order:999"
    _write(trail.path, entries)
    res = AuditLog(trail.path).verify()
    assert [p.kind for p in res.problems] == ["edited"] and res.first_bad_line == 3 and "modified" in res.reason


def test_edit_with_the_chain_recomputed_is_reported_by_the_mac(trail):
    entries = _lines(trail.path)
    entries[2]["result"] = "failed"
    _write(trail.path, _rechain(entries))  # every hash and prev valid again
    res = AuditLog(trail.path).verify()
    assert res.problems and {p.kind for p in res.problems} == {"forged", "truncated"}
    assert res.first_bad_line == 3 and "without the key" in res.reason


def test_macs_stripped_and_chain_recomputed_is_reported(trail):
    _write(trail.path, _rechain(_lines(trail.path), strip_mac=True))
    assert set(kinds(trail)) == {"unkeyed"}  # the head anchor says keyed since #1


def test_deletion_is_reported(trail):
    entries = _lines(trail.path)
    del entries[4]
    _write(trail.path, entries)
    res = AuditLog(trail.path).verify()
    assert [p.kind for p in res.problems] == ["deleted"] and "#5" in res.reason and res.first_bad_line == 5


def test_reordering_is_reported(trail):
    entries = _lines(trail.path)
    entries[3], entries[4] = entries[4], entries[3]
    _write(trail.path, entries)
    res = AuditLog(trail.path).verify()
    assert "reordered" in [p.kind for p in res.problems] and "deleted" not in [p.kind for p in res.problems]


def test_truncation_of_the_tail_is_reported(trail):
    entries = _lines(trail.path)
    _write(trail.path, entries[:5])
    res = AuditLog(trail.path).verify()
    assert [p.kind for p in res.problems] == ["truncated"] and "#8" in res.reason and "3 entries" in res.reason
    trail.path.unlink()
    assert [p.kind for p in AuditLog(trail.path).verify().problems] == ["truncated"]


def test_head_anchor_removed_or_altered_is_reported(trail):
    head = json.loads(trail.head_path.read_text())
    head["seq"] = 3
    trail.head_path.write_text(json.dumps(head))
    assert kinds(trail) == ["head"]
    trail.head_path.unlink()
    assert kinds(trail) == ["head"]


def test_old_unkeyed_files_stay_verifiable(tmp_path):
    """Entries written before the key existed: reported as unkeyed, not broken."""
    path = tmp_path / "audit.jsonl"
    prev = GENESIS
    lines = []
    for i in range(1, 4):  # the old format: hash chain only
        body = {"ts": datetime.now(UTC).isoformat(), "action": "x", "target": str(i), "seq": i, "prev": prev}
        digest = entry_hash(prev, body)
        lines.append(json.dumps(dict(body, hash=digest), sort_keys=True))
        prev = digest
    path.write_text("\n".join(lines) + "\n")
    res = AuditLog(path).verify()
    assert res.ok and (res.unkeyed, res.keyed, res.key) == (3, 0, "none")
    log = AuditLog(path)
    log.append(action="new")
    res = log.verify()
    assert res.ok and (res.unkeyed, res.keyed, res.total) == (3, 1, 4) and res.head["keyed_since"] == 4
    # an unkeyed entry after the key existed is not "old": it was rewritten
    entries = _lines(path)
    _write(path, _rechain(entries[:3]) + _rechain(entries, strip_mac=True)[3:])
    assert "unkeyed" in kinds(log)


# --------------------------------------------------------------------------- the CLI


def _config(tmp_path: Path, audit: Path) -> Path:
    cfg = tmp_path / "warroom.toml"
    cfg.write_text(f'[warroom]\naudit_path = "{audit}"\nstate_dir = "{tmp_path / "state"}"\noperator = "carol"\n\n'
                   '[postgres.main]\ndsn = "postgresql://u@127.0.0.1:1/none"\n')
    return cfg


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def test_cli_verify_lists_open_intents_torn_tails_and_resolve_closes_them(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    intent = log.append(action="orders.fix", target="order:o-1", phase="intent", result="started")
    cfg = str(_config(tmp_path, path))
    res = _cli("audit", "verify", "--config", cfg)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "intact" in res.stdout and "started, outcome unknown: check order:o-1" in res.stdout
    with open(path, "ab") as fh:
        fh.write(b'{"torn')
    res = _cli("audit", "verify", "--json", "--config", cfg)
    doc = json.loads(res.stdout)
    assert res.returncode == 1 and doc["torn"]["length"] == 6 and doc["open_intents"][0]["seq"] == intent["seq"]
    assert _cli("audit", "repair", "--read-only", "--config", cfg).returncode == 2
    res = _cli("audit", "repair", "--config", cfg)
    assert res.returncode == 0 and "set aside" in res.stdout
    res = _cli("audit", "resolve", str(intent["seq"]), "--result", "ok", "--reason", "row checked", "--config", cfg)
    assert res.returncode == 0, res.stdout + res.stderr
    res = _cli("audit", "verify", "--config", cfg)
    assert res.returncode == 0 and "outcome unknown" not in res.stdout and "torn tail set aside" in res.stdout
    entries = _lines(path)
    _write(path, entries[:1])
    res = _cli("audit", "verify", "--config", cfg)
    assert res.returncode == 2 and "truncated" in res.stdout


# --------------------------------------------------------------------------- the index


async def test_index_answers_steps_since_and_follows_other_writers(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append(action="docker.restart", target="service:api", result="ok")
    mark = datetime.now(UTC)
    log.append(action="orders.fix", target="order:1", result="ok")
    log.append(action="orders.fix", target="order:2", result="failed")
    log.append(action="orders.fix", target="order:3", dry_run=True, result="previewed")
    log.append(action="orders.fix", target="order:4", phase="intent", result="started")
    assert await log.load_index() == 5
    steps = await log.steps_since(mark)
    assert [e["target"] for e in steps] == ["order:1"]
    assert [e["target"] for e in await log.steps_since(mark, results=None)] == ["order:1", "order:2"]
    assert await log.steps_since(mark, ["service:"]) == []
    assert [e["target"] for e in await log.steps_since(mark - timedelta(hours=1), ["service:"])] == ["service:api"]
    assert [e["seq"] for e in await log.entries_after(3)] == [4, 5]
    assert [i["target"] for i in await log.open_intents()] == ["order:4"]
    assert [e["target"] for e in await log.tail_async(2)] == ["order:2", "order:3"]
    # another process appends: the next query sees it (only the new bytes are read)
    code = f"from backends.engine.audit import AuditLog; AuditLog({str(path)!r}).append(action='x', target='order:9', " \
           "phase='outcome', intent=5, result='ok')"
    await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
    assert [e["target"] for e in await log.steps_since(mark)] == ["order:1", "order:9"]
    assert await log.open_intents() == []
    # a torn tail set aside (the file shrinks): the index is rebuilt
    _append_bytes(path, b'{"torn')
    assert len(await log.entries_since(mark)) == 4
    log.append(action="y", target="order:10", result="ok")
    assert [e["target"] for e in await log.steps_since(mark)][-2:] == ["order:9", "order:10"]
    assert [e["action"] for e in await log.entries_since(mark)][-2:] == ["audit.torn_tail", "y"]


async def test_index_when_the_clock_steps_back_and_tail_matches_the_file(tmp_path):
    """Entries whose ts goes backwards (a clock stepped back, another host) are still found;
    `tail(n)` read from the end equals the last n entries read from the start, corrupt and
    partial lines included."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    now = datetime.now(UTC)
    for i, minutes in enumerate([-50, -10, -40, -5, -45]):  # out of order
        body = log._body(action="orders.fix", target=f"order:{i}", result="ok")
        body["ts"] = (now + timedelta(minutes=minutes)).isoformat()
        log._write(body)
    got = await log.steps_since(now - timedelta(minutes=42))
    assert sorted(e["target"] for e in got) == ["order:1", "order:2", "order:3"]
    _append_bytes(path, b"not json\n")
    log.append(action="after-corrupt")
    _append_bytes(path, b'{"partial')
    everything = list(AuditLog(path).entries())
    for n in (1, 2, 3, 7, 50):
        assert log.tail(n) == everything[-n:]


# --------------------------------------------------------------------------- kill -9 in a bulk fix


async def _pg_setup(dsn: str, n: int) -> None:
    import asyncpg

    con = await asyncpg.connect(dsn)
    try:
        await con.execute("CREATE TABLE orders (id text primary key, state text not null, "
                          "amount numeric default 0, created_at timestamptz not null, "
                          "updated_at timestamptz default now(), notes text)")
        for i in range(n):
            await con.execute("INSERT INTO orders (id, state, created_at) VALUES ($1, 'PENDING', "
                              "now() - interval '2 days' - $2::int * interval '1 minute')", f"wal-{i:02d}", n - i)
    finally:
        await con.close()


@pytest.mark.postgres
async def test_kill_9_in_the_middle_of_bulk_fix_then_rerun(pg, tmp_path):
    """Batch 2 commits, then the process is killed before its outcome is written: verify
    lists the run and batch 2 as started, outcome unknown (batch 2 names its orders); the
    rerun fixes the rest; nothing is fixed twice; every fixed order is named in an entry."""
    import asyncpg

    n, batch = 20, 5
    dsn = pg.fresh_db("wal")
    await _pg_setup(dsn, n)
    ids = [f"wal-{i:02d}" for i in range(n)]
    audit = tmp_path / "audit.jsonl"
    cfg = tmp_path / "warroom.toml"
    cfg.write_text(f'[warroom]\naudit_path = "{audit}"\nstate_dir = "{tmp_path / "state"}"\noperator = "dave"\n\n'
                   f'[postgres.main]\ndsn = "{dsn}"\n\n[orders]\npostgres = "main"\nnotes_column = "notes"\n'
                   'stuck_after = "10m"\n')
    argv = [sys.executable, "-m", "tui.cli", "orders", "bulk-fix", "--older-than", "1d", "--state", "CANCELLED",
            "--reason", f"wal {uuid.uuid4().hex[:6]}", "--all-pending", "--batch", str(batch), "--execute",
            "--config", str(cfg)]
    blocker = await asyncpg.connect(dsn)  # holds one order of batch 2: the run waits in Postgres
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE", ids[7])
    proc = await asyncio.create_subprocess_exec(*argv, "--confirm", str(n), cwd=ROOT, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock_fd = None
    try:
        def batch_intent(k):
            return any(e.get("phase") == "intent" and e["action"] == "orders.bulk_fix.batch"
                       and e["params"]["batch"] == k for e in AuditLog(audit).records())

        assert await until(lambda: batch_intent(2), 60), proc.returncode
        # hold the audit file's lock: the outcome of batch 2 cannot be written
        lock_fd = os.open(audit, os.O_RDWR)

        def take() -> bool:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        assert await until(take, 30)
        await tx.rollback()  # batch 2 goes on and commits

        async def committed() -> bool:
            rows = await blocker.fetch("SELECT id FROM orders WHERE state = 'CANCELLED'")
            return len(rows) == 2 * batch

        assert await until(committed, 60)
        os.kill(proc.pid, signal.SIGKILL)  # between the commit and its outcome entry
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 30)
        if lock_fd is not None:
            os.close(lock_fd)  # releases the lock
    assert proc.returncode == -signal.SIGKILL
    res = AuditLog(audit).verify()
    assert res.ok, res.problems
    opened = {i["action"]: i for i in res.open_intents}
    assert set(opened) == {"orders.bulk_fix", "orders.bulk_fix.batch"}
    assert opened["orders.bulk_fix"]["text"] == "started, outcome unknown: check orders:CANCELLED"
    assert opened["orders.bulk_fix.batch"]["ids"] == ids[5:10]
    assert opened["orders.bulk_fix.batch"]["run"] == opened["orders.bulk_fix"]["seq"]
    out = await asyncio.to_thread(_cli, "audit", "verify", "--config", str(cfg))
    assert out.returncode == 1 and out.stdout.count("started, outcome unknown: check orders:CANCELLED") == 2
    assert " ".join(ids[5:10]) in out.stdout

    # the rerun's dry-run says what was interrupted
    dry = await asyncio.to_thread(subprocess.run, argv[:-3] + ["--config", str(cfg)], cwd=ROOT,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"interrupted earlier: batch 2: orders {' '.join(ids[5:10])}" in dry.stdout
    assert f"{n - 2 * batch} order(s) PENDING" in dry.stdout
    # the rerun: only what is still pending
    rerun = await asyncio.to_thread(subprocess.run, [*argv, "--confirm", str(n - 2 * batch)], cwd=ROOT,
                                    stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    rows = {r["id"]: r for r in await blocker.fetch("SELECT id, state, notes FROM orders")}
    await blocker.close()
    assert all(rows[i]["state"] == "CANCELLED" for i in ids)
    assert all(rows[i]["notes"].count("[MANUAL FIX") == 1 for i in ids), [rows[i]["notes"] for i in ids]
    named: dict[str, int] = {}
    for e in AuditLog(audit).records():
        if e["action"] == "orders.bulk_fix.batch" and e.get("phase") == "intent":
            for oid in e["params"]["ids"].split():
                named[oid] = named.get(oid, 0) + 1
    assert sorted(named) == ids and set(named.values()) == {1}  # each order in exactly one batch intent
    res = AuditLog(audit).verify()
    assert res.ok and len(res.open_intents) == 2  # the killed run's: outcome still to be checked


# --------------------------------------------------------------------------- the console, disk full


async def test_console_shows_the_audit_cannot_be_written_and_refuses_until_it_can(small_fs, tmp_path):
    """The state dir's file system fills up under a running console: the header says so
    within a look, the notification says why, the action key is refused with nothing run
    (its intent could not be written), and when space is back it all clears by itself and
    the same key runs the action with its entries."""
    from backends.config import load_config_text
    from tests.test_console_gaps import console_app, until
    from tui.screens.action import ActionScreen

    marker = tmp_path / "ran"
    config = load_config_text(f"""
[warroom]
operator = "alice"
state_dir = "{small_fs}"

[[actions]]
name = "touch"
argv = ["/bin/sh", "-c", "echo ran >> {marker}"]
key = "T"
""", env={}, base_dir=tmp_path, path=tmp_path / "warroom.toml")
    app = console_app(config)
    app.audit_check_s = 0.1
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.engine is not None and app.custom_bindings, what="keys bound")
        header = app.dashboard.header
        assert "AUDIT" not in header.shown("right")
        filler = _fill(small_fs)
        await until(pilot, lambda: "AUDIT DISK FULL · actions refused" in header.shown("right"),
                    what="the header's audit badge")
        assert app.audit_problem.startswith("no space left on device")
        notes = " ".join(str(n.message) for n in app._notifications)
        assert "cannot be written: no space left on device" in notes and "Every action is refused" in notes
        await pilot.press("T")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="the modal")
        modal = app.screen
        await pilot.press("enter")
        await until(pilot, lambda: "REFUSED" in str(modal.query_one("#action-status").render()),
                    what="refused")
        assert "audit trail cannot be written (no space left on device" in str(
            modal.query_one("#action-status").render())
        assert not marker.exists()
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, what="closed")
        filler.unlink()
        await until(pilot, lambda: "AUDIT" not in header.shown("right"), what="the badge gone")
        assert app.audit_problem is None
        assert "can be written again" in " ".join(str(n.message) for n in app._notifications)
        await pilot.press("T")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="the modal again")
        modal = app.screen
        await pilot.press("enter")
        await until(pilot, lambda: modal.state == "done", what="executed")
        await pilot.press("enter")
    assert marker.read_text() == "ran\n"
    log = AuditLog(config.audit_path)
    assert [(e["action"], e["result"]) for e in log.entries() if e["action"] == "command.touch"] == [
        ("command.touch", "ok")]
    assert log.verify().ok and not log.verify().open_intents


async def test_wall_display_shows_the_audit_cannot_be_written(small_fs, tmp_path):
    """The kiosk (read-only, so no action to refuse) still tells the room that the ops box's
    state dir is full, in its status line, and clears it when space is back."""
    from backends.config import load_config_text
    from tests.test_console_gaps import console_app, until
    from tui.screens.kiosk import KioskScreen

    config = load_config_text(f'[warroom]\noperator = "wall"\nstate_dir = "{small_fs}"\n',
                              env={}, base_dir=tmp_path, path=tmp_path / "warroom.toml")
    app = console_app(config, kiosk=True)
    app.audit_check_s = 0.1

    def status() -> str:
        return str(app.screen.query_one("#kiosk-updated").render()) if isinstance(app.screen, KioskScreen) else ""

    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, KioskScreen) and "updated" in status(), what="kiosk")
        assert "AUDIT" not in status()
        filler = _fill(small_fs)
        await until(pilot, lambda: "✖ AUDIT DISK FULL" in status(), what="the kiosk's audit badge")
        assert app.screen.query_one("#kiosk-updated").has_class("-stale")  # shown crit
        filler.unlink()
        await until(pilot, lambda: "AUDIT" not in status(), what="the badge gone")
