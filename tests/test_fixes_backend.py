"""Backend fixes against the real harness services: orders.fix with a selection (Postgres),
custom action parameter types (a real command through build_engine), lowercase EVM
addresses (anvil + the Escrow contract)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backends.actions.base import ActionEngine, Danger
from backends.engine.audit import AuditLog
from backends.errors import ActionRefused
from backends.sources.orders import CursorSpec, OrdersFixAction, OrdersSpec, OrdersStore

SCHEMA = """
DROP TABLE IF EXISTS orders;
CREATE TABLE orders (
    id text PRIMARY KEY,
    state text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz,
    notes text,
    block_number bigint,
    tx_hash text
);
"""


def spec(**kw) -> OrdersSpec:
    base = dict(notes_column="notes", block_column="block_number", tx_column="tx_hash",
                cursor=CursorSpec(table="listener_cursor", key="escrow"))
    base.update(kw)
    return OrdersSpec(**base)


@pytest.fixture(scope="module")
def fix_db(pg):
    return pg.fresh_db("fixes")


@pytest.fixture
async def db(fix_db):
    import asyncpg

    from backends.sources.postgres import close_pools

    con = await asyncpg.connect(fix_db)
    await con.execute(SCHEMA)
    yield con
    await con.close()
    await close_pools()


async def insert(con, oid: str, state: str = "PENDING", notes: str | None = None) -> None:
    await con.execute("INSERT INTO orders (id, state, created_at, notes) VALUES ($1, $2, $3, $4)",
                      oid, state, datetime.now(UTC) - timedelta(hours=2), notes)


def engine(tmp_path) -> ActionEngine:
    return ActionEngine(AuditLog(tmp_path / "audit.jsonl"), operator="alice")


# --------------------------------------------------------------------------- orders.fix order_ids


@pytest.mark.postgres
async def test_fix_selection_concurrent_change_is_skipped(db, fix_db, tmp_path):
    ids = ["sel-1", "sel-2", "sel-3"]
    for oid in ids:
        await insert(db, oid, notes="api")
    store = OrdersStore(spec(), fix_db)
    eng = engine(tmp_path)
    eng.register(OrdersFixAction(store, operator="alice"))
    plan = await eng.plan("orders.fix", order_ids=[*ids, "sel-2"], state="FAILED", reason="expired quotes")
    assert plan.params["order_ids"] == ids  # duplicates removed, order kept
    assert [c.target for c in plan.changes] == [f"order:{i}" for i in ids]
    assert all(c.before["state"] == "PENDING" and c.after["state"] == "FAILED" for c in plan.changes)
    assert all(c.after["notes"].endswith(" by alice: expired quotes]") for c in plan.changes)
    assert plan.guard.ok and plan.total == 3
    assert plan.danger is Danger.CONFIRM and plan.expected_confirmation is None
    assert all(i in plan.preview for i in ids)
    # the listener settles sel-2 between plan and execute (another connection)
    await db.execute("UPDATE orders SET state = 'SETTLED', notes = 'by listener' WHERE id = 'sel-2'")
    progress = []
    res = await eng.execute(plan, confirmation="yes", progress=progress.append)
    assert res.status == "ok", res.summary
    assert res.counts == {"fixed": 2, "skipped": 1, "failed": 0, "not_done": 0}
    assert [p.done for p in progress] == [1, 2, 3] and "sel-2" in progress[1].message
    rows = {r["id"]: r for r in await db.fetch("SELECT id, state, notes FROM orders")}
    assert rows["sel-2"]["state"] == "SETTLED" and rows["sel-2"]["notes"] == "by listener"  # not overwritten
    for oid in ("sel-1", "sel-3"):
        assert rows[oid]["state"] == "FAILED"
        assert rows[oid]["notes"].startswith("api [MANUAL FIX: 20") and rows[oid]["notes"].endswith(": expired quotes]")
    entry = eng.audit.tail(1)[0]
    assert entry["action"] == "orders.fix" and entry["result"] == "ok" and entry["reason"] == "expired quotes"
    assert entry["params"]["order_ids"] == ids
    assert {k: v["state"] for k, v in entry["before"].items()} == dict.fromkeys(ids, "PENDING")
    assert entry["after"]["fixed"] == ["sel-1", "sel-3"] and entry["after"]["skipped"] == ["sel-2"]
    assert entry["after"]["rows"]["sel-1"]["state"] == "FAILED"
    assert entry["after"]["rows"]["sel-2"]["state"] == "SETTLED"  # what it is now
    assert entry["extra"]["counts"]["fixed"] == 2
    from backends.engine.brief import fixed_count

    assert fixed_count(entry) == 2
    assert eng.audit.verify().ok

    # none of them is pending any more -> refused, each id named with its state
    with pytest.raises(ActionRefused, match=r"sel-1 \(FAILED\).*sel-2 \(SETTLED\)"):
        await eng.plan("orders.fix", order_ids=ids, state="FAILED", reason="again")
    # some pending: the others are left out with a note
    await insert(db, "sel-4")
    plan = await eng.plan("orders.fix", order_ids=["sel-1", "sel-4", "nope"], state="CANCELLED", reason="r")
    assert plan.params["order_ids"] == ["sel-4"] and len(plan.changes) == 1
    assert any("sel-1 (FAILED)" in n and "nope (no such order)" in n for n in plan.notes)
    res = await eng.execute(plan, confirmation="yes")
    assert res.status == "ok" and res.counts["fixed"] == 1
    assert await db.fetchval("SELECT state FROM orders WHERE id = 'sel-4'") == "CANCELLED"


@pytest.mark.postgres
async def test_fix_selection_over_ten_orders_needs_the_count_typed(db, fix_db, tmp_path):
    ids = [f"many-{i:02d}" for i in range(12)]
    for oid in ids:
        await insert(db, oid)
    eng = engine(tmp_path)
    eng.register(OrdersFixAction(OrdersStore(spec(), fix_db)))
    plan = await eng.plan("orders.fix", order_ids=ids, state="FAILED", reason="expired")
    assert plan.danger is Danger.TYPED and plan.expected_confirmation == "12"
    with pytest.raises(ActionRefused, match="confirmation does not match"):
        await eng.execute(plan, confirmation="yes")
    assert await db.fetchval("SELECT count(*) FROM orders WHERE state = 'PENDING'") == 12
    res = await eng.execute(plan, confirmation="12")
    assert res.status == "ok" and res.counts["fixed"] == 12


@pytest.mark.postgres
async def test_fix_selection_postgres_down_mid_way(db, fix_db, pg, tmp_path):
    ids = ["pd-1", "pd-2", "pd-3"]
    for oid in ids:
        await insert(db, oid)
    dbname = fix_db.rsplit("/", 1)[1]
    eng = engine(tmp_path)
    eng.register(OrdersFixAction(OrdersStore(spec(), fix_db)))
    plan = await eng.plan("orders.fix", order_ids=ids, state="FAILED", reason="outage")

    def progress(p):
        if p.done == 1:  # Postgres "goes down" for this database after the first order
            pg.psql(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS false')
            pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "  # noqa: S608
                    f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid()")

    try:
        res = await eng.execute(plan, confirmation="yes", progress=progress)
    finally:
        pg.psql(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS true')
    assert res.status == "partial", res.summary
    assert res.counts == {"fixed": 1, "skipped": 0, "failed": 1, "not_done": 1}
    assert res.after["fixed"] == ["pd-1"] and res.after["failed"] == ["pd-2"] and res.after["not_done"] == ["pd-3"]
    assert "pd-2 failed" in res.summary
    import asyncpg

    con = await asyncpg.connect(fix_db)
    try:
        rows = dict(await con.fetch("SELECT id, state FROM orders"))
    finally:
        await con.close()
    assert [rows[i] for i in ids] == ["FAILED", "PENDING", "PENDING"]
    entry = eng.audit.tail(1)[0]
    assert entry["result"] == "partial" and entry["after"]["not_done"] == ["pd-3"]


async def test_fix_selection_bad_input_refused_before_any_query():
    store = OrdersStore(spec(), "postgresql://postgres@127.0.0.1:9/none")
    fix = OrdersFixAction(store)
    bad = [
        dict(order_ids=["ok-1", "1; DROP TABLE orders"], state="FAILED", reason="r"),
        dict(order_ids=["ok-1", 42], state="FAILED", reason="r"),
        dict(order_ids=["ok-1", "x" * 200], state="FAILED", reason="r"),
        dict(order_ids="ok-1", state="FAILED", reason="r"),  # a string is not a list
        dict(order_ids=[], state="FAILED", reason="r"),
        dict(order_ids=[f"o-{i}" for i in range(1001)], state="FAILED", reason="r"),
        dict(order_ids=["ok-1", "ok-2"], order_id="ok-1", state="FAILED", reason="r"),  # both
        dict(state="FAILED", reason="r"),  # neither
        dict(order_ids=["ok-1", "ok-2"], state="DELETED", reason="r"),
        dict(order_ids=["ok-1", "ok-2"], state="FAILED", reason="x" * 501),
    ]
    for params in bad:
        with pytest.raises(ActionRefused):
            await fix.plan(**params)
    assert store.queries == 0


# --------------------------------------------------------------------------- [[actions]] param types


def test_every_action_param_type_is_a_placeholder_type():
    from backends.actions.command import PLACEHOLDER_TYPES
    from backends.config import ACTION_PARAM_TYPES

    missing = [t for t in ACTION_PARAM_TYPES if t not in PLACEHOLDER_TYPES]
    assert missing == [], f"[[actions]] params types without a placeholder type: {missing}"


def test_new_placeholder_types_accept_and_refuse():
    from backends.actions.command import validate_value

    good = {
        "string": ["hello world", "eu-west/1", "x"],
        "order_id": ["ord-1", "0xabc:12.3", "A_b"],
        "duration": ["500ms", "10m", "2h", "30s", "1.5h", "1h30m", "1d"],
    }
    bad = {
        "string": ["-rf", "--output=/etc/passwd", "", "two\nlines", "tab\there", "x" * 1001, "ok\n"],
        "order_id": ["-x", "--all", "", "a b", "a/b", "x" * 129, "ord;1", "ord-1\n"],
        "duration": ["-5m", "5", "m", "5 m", "5min", "1..5h", "10m\n", "--timeout=1h", ""],
    }
    for t, values in good.items():
        for v in values:
            assert validate_value("p", t, v) == v
    for t, values in bad.items():
        for v in values:
            with pytest.raises(ValueError):
                validate_value("p", t, v)
    # every type that may come from input refuses a leading '-' (option injection)
    from backends.config import ACTION_PARAM_TYPES

    for t in ACTION_PARAM_TYPES:
        for v in ("-rf", "--help", "-1"):
            with pytest.raises(ValueError):
                validate_value("p", t, v)


async def test_custom_action_with_new_param_types_builds_and_runs(tmp_path):
    from backends.config import load_config_text
    from backends.engine.core import build_engine

    text = f"""
[warroom]
state_dir = "{tmp_path / 'state'}"
operator = "carol"

[[actions]]
name = "echo-all"
description = "echo every parameter type"
argv = ["/bin/echo", "{{note}}", "{{order}}", "{{wait}}", "{{file}}", "{{name}}", "{{msg}}", "{{n}}", "{{svc}}"]
params = {{ note = "string", order = "order_id", wait = "duration", file = "path", name = "identifier", msg = "text", n = "int", svc = "service" }}
danger = "confirm"
timeout = "10s"
"""
    config = load_config_text(text, env={}, base_dir=tmp_path)
    engine = build_engine(config, with_logs=False)
    try:
        values = dict(note="stuck since 10:00", order="ord-42:a", wait="1.5h", file="/tmp/x y",
                      name="db_main", msg="why not", n="3", svc="api.v2")
        plan = await engine.actions.plan("command.echo-all", **values)
        assert plan.guard.ok, plan.guard
        res = await engine.actions.execute(plan, confirmation="yes")
        assert res.status == "ok", res.summary
        out = " ".join(res.details) + str(res.after)
        assert "stuck since 10:00 ord-42:a 1.5h /tmp/x y db_main why not 3 api.v2" in out, (res, out)
        entry = engine.audit.tail(1)[0]
        assert entry["action"] == "command.echo-all" and entry["result"] == "ok"
        # option injection through any of the new types is refused before anything runs
        for key in ("note", "order", "wait"):
            with pytest.raises(ActionRefused):
                await engine.actions.plan("command.echo-all", **{**values, key: "--version"})
    finally:
        await engine.stop()


async def test_custom_action_gets_operator_and_config_from_the_engine(tmp_path):
    """{operator} and {config} are filled by warroom from the engine built on a config file."""
    from backends.config import load_config
    from backends.engine.core import build_engine

    path = tmp_path / "warroom.toml"
    path.write_text(f"""
[warroom]
state_dir = "{tmp_path / 'state'}"
operator = "carol"

[[actions]]
name = "whoami"
argv = ["/bin/echo", "{{operator}}", "{{config}}"]
danger = "safe"
""")
    engine = build_engine(load_config(path, allow_empty=True), with_logs=False)  # actions only
    try:
        plan = await engine.actions.plan("command.whoami")
        res = await engine.actions.execute(plan, confirmation=True)
        assert res.status == "ok", res.summary
        assert f"carol {path}" in " ".join(res.details) + str(res.after)
    finally:
        await engine.stop()


# --------------------------------------------------------------------------- EVM addresses


def test_checksum_address_matches_eth_utils_and_names_the_key():
    from eth_utils import to_checksum_address

    from backends.sources.evm import checksum_address, checksum_spec
    from backends.sources.jsonrpc import BalanceSpec, ChainSpec, ContractSpec

    samples = ["0x5fbdb2315678afecb367f032d93f642f64180aa3", "0x" + "ab" * 20, "0x" + "0" * 40,
               "0xF39FD6E51AAD88F6F4CE6AB8827279CFFFB92266", "0x000000000000000000000000000000000000dEaD",
               "0x" + "1234567890abcdef" * 2 + "deadbeef"]
    for a in samples:
        assert checksum_address(a) == to_checksum_address(a)
    for bad in ("0x12", "5fbdb2315678afecb367f032d93f642f64180aa3", "0x" + "g" * 40, "0x" + "a" * 41,
                "0x5fbdb2315678afecb367f032d93f642f64180aa3\n", None, 42):
        with pytest.raises(ValueError, match=r"^chain\.x\.contracts\[0\]\.address"):
            checksum_address(bad, "chain.x.contracts[0].address")
    # mixed case with a wrong checksum is a typo, not something to "fix" silently
    typo = "0x5FbDB2315678afecb367f032d93F642f64180aA3"
    with pytest.raises(ValueError, match="checksum"):
        checksum_address(typo, "k")
    spec = ChainSpec(name="x", endpoints=("http://127.0.0.1:9",),
                     contracts=(ContractSpec(name="esc", address="0x" + "ab" * 20),),
                     balances=(BalanceSpec(name="hot", address="0x" + "0" * 39 + "1"),
                               BalanceSpec(name="bad", address="0x1234")))
    with pytest.raises(ValueError, match=r"chain\.x\.balances\[1\]\.address \(bad\)"):
        checksum_spec(spec)
    # a non-EVM chain (Neo script hashes) is left alone
    neo = ChainSpec(name="n", kind="jsonrpc", endpoints=("http://127.0.0.1:9",),
                    contracts=(ContractSpec(name="c", address="0x" + "ab" * 20),))
    assert checksum_spec(neo) is neo


@pytest.mark.evm
async def test_lowercase_contract_address_reads_paused_and_pauses(anvil, escrow, tmp_path):
    from backends.config import load_config_text
    from backends.sources.evm import actions_for_chains, chains_from_config
    from tests.harness.evm import ARTIFACT

    lower = escrow.address.lower()
    assert lower != escrow.address  # the harness address is checksummed: the test means something
    text = f"""
[chain.local]
chain_id = 31337
endpoints = ["{anvil.url}"]
max_head_age = "1d"
signer_env = "ESCROW_OWNER_KEY"

[[chain.local.contracts]]
name = "escrow"
address = "{lower}"
abi = "{ARTIFACT}"
pausable = true

[[chain.local.balances]]
name = "owner"
address = "{escrow.owner.lower()}"
"""
    config = load_config_text(text, env={})
    chains = chains_from_config(config)
    ch = chains["local"]
    assert ch.contracts["escrow"].address == escrow.address
    assert ch.spec.balances[0].address == escrow.owner
    try:
        (r,) = await ch.poll()
        assert r.contracts[0].code_present and r.contracts[0].paused is False
        assert await ch.paused(ch.contracts["escrow"]) is False
        eng = ActionEngine(AuditLog(tmp_path / "audit.jsonl"), operator="dave")
        for a in actions_for_chains(chains):
            if a.id in ("chain.pause", "chain.unpause"):
                a.env = {"ESCROW_OWNER_KEY": escrow.owner_key}
            eng.register(a)
        plan = await eng.plan("chain.pause", reason="lowercase address drill")
        assert plan.guard.ok, plan.guard
        assert plan.changes[1].after["to"] == escrow.address
        res = await eng.execute(plan, confirmation="escrow")
        assert res.status == "ok", res.summary  # signing failed on a lowercase `to` before
        assert escrow.paused() is True
        (r,) = await ch.poll()
        assert r.contracts[0].paused is True
        plan = await eng.plan("chain.unpause", reason="drill over")
        res = await eng.execute(plan, confirmation="escrow")
        assert res.status == "ok", res.summary
        assert escrow.paused() is False
    finally:
        await ch.aclose()
