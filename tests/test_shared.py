"""Many operators on one shared Postgres: two real engines (alice's and bob's boxes) on the
harness stack. Advisory locks (one action per target at a time, holder shown), the
audit mirrored into `warroom_audit`, incidents updated live through LISTEN/NOTIFY,
and `warroom audit verify` finding a tampered line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from backends.config import load_config_text
from backends.engine.core import build_engine
from backends.engine.shared import PgLocks
from backends.errors import ActionRefused
from tests.harness.stack import build_stack

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.evm]

# the restart command takes 1.5 s and starts a new listener process (found by its marker)
SLOW_RESTART = ("import sys, time, subprocess; time.sleep(1.5); "
                "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', '{marker}'], "
                "start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
                "print('restarted', sys.argv[1])")


@pytest.fixture(scope="module")
def stack(pg, redis_server, anvil, escrow, tmp_path_factory):
    s = build_stack(pg, redis_server, anvil, escrow, tmp_path_factory.mktemp("shared"), name="shared", prefix="shr")
    yield s
    s.close()
    import psutil

    for p in psutil.process_iter(["cmdline"]):  # the listeners our restarts started
        if s.values["marker"] in (p.info["cmdline"] or []) and p.pid != s.proc.pid:
            p.terminate()


def box(stack, who: str, tmp_path, *, shared: bool = True, read_only: bool = False):
    """An engine as `who` would run it on their own box: own audit file and state, same database."""
    v = stack.values
    text = stack.config_text
    if shared:
        text = text.replace("[postgres.main]\n", "[postgres.main]\nshared = true\n", 1)
    folder = tmp_path / who
    text = (text.replace(f'audit_path = "{v["audit"]}"', f'audit_path = "{folder / "audit.jsonl"}"')
            .replace(f'state_dir = "{v["state"]}"', f'state_dir = "{folder / "state"}"')
            .replace('operator = "tester"', f'operator = "{who}"')
            .replace("import sys; print('restarted', sys.argv[1])", SLOW_RESTART.format(marker=v["marker"])))
    assert "time.sleep(1.5)" in text and str(folder) in text
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "warroom.toml"
    path.write_text(text)
    config = load_config_text(text, str(path))
    return build_engine(config, with_logs=False, read_only=read_only)


async def sql(stack, query: str, *args):
    return await asyncio.to_thread(stack.sql, query, *args)


async def start_shared(engine) -> None:
    """Start the shared state, incidents and notifier without polling every source."""
    for start in engine.starters:
        await start()


async def until(cond, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        res = cond()
        if asyncio.iscoroutine(res):
            res = await res
        if res:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_same_order_cannot_be_fixed_by_two_consoles_at_once(stack, tmp_path):
    a, b = box(stack, "alice", tmp_path), box(stack, "bob", tmp_path)
    try:
        await start_shared(a)
        await start_shared(b)
        assert isinstance(a.actions.locks, PgLocks) and isinstance(b.actions.locks, PgLocks)
        plan_b = await b.actions.plan("orders.fix", order_id="shr-4", state="FAILED", reason="bob's fix")
        # alice is in the middle of an action on the order: bob is refused and told who holds it
        async with a.actions.locks.hold("order:shr-4", "alice (orders.fix)"):
            assert await b.actions.locks.holder_of("order:shr-4") is not None
            with pytest.raises(ActionRefused, match=r"order:shr-4 is locked by alice \(orders.fix\) on .* since"):
                await b.actions.execute(plan_b, confirmation=True)
        assert (await sql(stack, "SELECT state FROM orders WHERE id = 'shr-4'"))[0]["state"] == "PENDING"
        assert await a.actions.locks.holder_of("order:shr-4") is None  # the holder row went with the lock
        # both at the same time: exactly one changes the row
        plan_a = await a.actions.plan("orders.fix", order_id="shr-4", state="FAILED", reason="alice's fix")
        plan_b = await b.actions.plan("orders.fix", order_id="shr-4", state="FAILED", reason="bob's fix")
        results = await asyncio.gather(a.actions.execute(plan_a, confirmation=True),
                                       b.actions.execute(plan_b, confirmation=True), return_exceptions=True)
        oks = [r for r in results if not isinstance(r, BaseException) and r.status == "ok"]
        assert len(oks) == 1, results
        notes = (await sql(stack, "SELECT notes FROM orders WHERE id = 'shr-4'"))[0]["notes"]
        assert (notes.count("alice's fix") + notes.count("bob's fix")) == 1
    finally:
        await a.stop()
        await b.stop()


async def test_same_service_cannot_be_restarted_by_two_consoles_at_once(stack, tmp_path):
    a, b = box(stack, "alice", tmp_path), box(stack, "bob", tmp_path)
    try:
        await start_shared(a)
        await start_shared(b)
        plan_a = await a.actions.plan("service.restart", service="listener", reason="listener silent")
        plan_b = await b.actions.plan("service.restart", service="listener", reason="listener silent")
        assert plan_a.target == plan_b.target == "service:listener"
        task_a = asyncio.create_task(a.actions.execute(plan_a, confirmation=True))
        assert await until(lambda: b.actions.locks.holder_of("service:listener"))
        with pytest.raises(ActionRefused, match=r"service:listener is locked by alice \(process.restart\)"):
            await b.actions.execute(plan_b, confirmation=True)
        res_a = await task_a
        assert res_a.status == "ok", res_a.summary
        # once alice is done, bob may restart it
        res_b = await b.actions.execute(await b.actions.plan("service.restart", service="listener", reason="again"),
                                        confirmation=True)
        assert res_b.status == "ok"
        # bob's refusal is in bob's audit, with alice's name
        refused = [e for e in b.audit.entries() if e["result"] == "refused"]
        assert refused and "alice" in refused[-1]["summary"]
    finally:
        await a.stop()
        await b.stop()


async def test_audit_is_mirrored_so_every_box_sees_every_action(stack, tmp_path):
    a, b = box(stack, "alice", tmp_path), box(stack, "bob", tmp_path)
    try:
        await start_shared(a)
        await start_shared(b)
        seen: list[str] = []
        b.shared.subscribe("warroom_audit", seen.append)
        plan = await a.actions.plan("orders.fix", order_id="shr-2", state="FAILED", reason="mirror me")
        a.actions.record_dry_run(plan)
        res = await a.actions.execute(plan, confirmation=True)
        assert res.status == "ok"

        async def bob_sees_it():
            entries = await b.shared.audit_entries()
            return any(e["operator"] == "alice" and e["action"] == "orders.fix" and not e["dry_run"]
                       and e["reason"] == "mirror me" for e in entries)

        assert await until(bob_sees_it)
        assert await until(lambda: seen)  # NOTIFY reached bob's console
        # the mirrored entries are the local ones, hash for hash, in order, once each
        local = [e["hash"] for e in a.audit.entries()]
        log_id = a.shared.mirror.log_id
        rows = await sql(stack, "SELECT hash FROM warroom_audit WHERE log_id = $1 ORDER BY seq", log_id)
        assert [r["hash"] for r in rows] == local
        await a.shared.mirror.sync()
        assert len(await sql(stack, "SELECT hash FROM warroom_audit WHERE log_id = $1", log_id)) == len(local)
    finally:
        await a.stop()
        await b.stop()


async def test_entries_written_while_the_mirror_is_away_are_copied_later(stack, tmp_path):
    a = box(stack, "carol", tmp_path)
    try:
        # no event loop task yet, database not touched: entries wait in the local file
        a.audit.mirrors.clear()
        for i in range(3):
            a.audit.append(action="test.offline", target=f"t{i}", operator="carol", summary="while away")
        await start_shared(a)
        await a.shared.mirror.sync()
        rows = await sql(stack, "SELECT seq FROM warroom_audit WHERE action = 'test.offline' ORDER BY seq")
        assert [r["seq"] for r in rows] == [1, 2, 3]
    finally:
        await a.stop()


async def test_incidents_and_timelines_update_live_on_every_console(stack, tmp_path):
    a, b = box(stack, "alice", tmp_path), box(stack, "bob", tmp_path)
    try:
        await start_shared(a)
        await start_shared(b)
        changed: list[str] = []
        b.incidents.subscribe(lambda inc: changed.append(inc.id))
        plan = await a.actions.plan("incident.declare", title="Listener down", severity="P1")
        assert (await a.actions.execute(plan, confirmation=True)).ok
        iid = plan.params["incident_id"]
        assert await until(lambda: b.incidents.get(iid) is not None), "bob never saw the incident"
        assert iid in changed
        # bob takes command; alice's console shows it
        plan = await b.actions.plan("incident.update", incident=iid, op="assign", role="IC", value="bob")
        assert (await b.actions.execute(plan, confirmation=True)).ok
        assert await until(lambda: a.incidents.get(iid).roles.get("Incident Commander") == "bob")
        assert a.incidents.get(iid).acknowledged_by == "bob"
        # concurrent notes from both consoles: none is lost
        pa = await a.actions.plan("incident.update", incident=iid, op="note", value="alice: restarting")
        pb = await b.actions.plan("incident.update", incident=iid, op="note", value="bob: checking chain")
        await asyncio.gather(a.actions.execute(pa, confirmation=True), b.actions.execute(pb, confirmation=True),
                             return_exceptions=True)
        # incident.update locks the incident: one of the two may be refused; retry it
        for eng, p in ((a, pa), (b, pb)):
            if not any(t.text == p.params["value"] for t in eng.incidents.get(iid).timeline):
                await eng.actions.execute(await eng.actions.plan("incident.update", incident=iid, op="note",
                                                                 value=p.params["value"]), confirmation=True)

        def both_notes(eng):
            texts = [t.text for t in eng.incidents.get(iid).timeline]
            return "alice: restarting" in texts and "bob: checking chain" in texts

        assert await until(lambda: both_notes(a) and both_notes(b))
        row = (await sql(stack, "SELECT data, status FROM warroom_incidents WHERE id = $1", iid))[0]
        doc = json.loads(row["data"])
        assert row["status"] == "investigating" and len(doc["timeline"]) == len(a.incidents.get(iid).timeline)
        # an action on alice's box lands on the shared timeline
        plan = await a.actions.plan("orders.fix", order_id="shr-1", state="SETTLED", reason="released on chain")
        assert (await a.actions.execute(plan, confirmation=True)).status == "ok"
        await a.incidents.drain()
        assert await until(lambda: any(t.kind == "action" and "orders.fix" in t.text
                                       for t in b.incidents.get(iid).timeline))
        plan = await b.actions.plan("incident.resolve", incident=iid, summary="done")
        assert (await b.actions.execute(plan, confirmation=True)).ok
        assert await until(lambda: not a.incidents.get(iid).open)
    finally:
        await a.stop()
        await b.stop()


def test_tampered_audit_line_is_found_by_audit_verify(stack, tmp_path):
    a = box(stack, "dave", tmp_path, shared=False)
    for i in range(4):
        a.audit.append(action="orders.fix", target=f"order:x{i}", operator="dave", summary=f"fix {i}")
    cfg = tmp_path / "dave" / "warroom.toml"
    cmd = [sys.executable, "-m", "tui.cli", "audit", "verify", "--config", str(cfg)]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = a.audit.path.read_text().splitlines()
    lines[2] = lines[2].replace('"fix 2"', '"fix 2 (edited)"')
    a.audit.path.write_text("\n".join(lines) + "\n")
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "3" in (bad.stdout + bad.stderr)  # the first broken line is named
    assert a.audit.verify().first_bad_line == 3


async def test_a_read_only_console_writes_nothing_to_the_shared_database(stack, tmp_path):
    """Read-only on every path: its refusals stay in its own audit file; it creates no table
    and copies nothing into warroom_audit (the others' consoles write there)."""
    from backends.errors import ActionRefused

    ro = box(stack, "wall", tmp_path, read_only=True)
    try:
        await start_shared(ro)
        assert ro.shared.read_only()
        before = (await sql(stack, "SELECT count(*) AS n FROM warroom_audit"))[0]["n"]
        plan = await ro.actions.plan("incident.declare", title="from the wall", severity="P3")
        with pytest.raises(ActionRefused):
            await ro.actions.execute(plan, confirmation=True)
        await ro.audit.flush()
        assert any(e["result"] == "refused" for e in ro.audit.tail(5))  # audited locally
        await ro.shared.mirror.sync()
        after = (await sql(stack, "SELECT count(*) AS n FROM warroom_audit"))[0]["n"]
        assert after == before
    finally:
        await ro.stop()
