"""Read-only and kiosk are properties of the process, held on every path.

Three switches, each tried on everything: `--read-only`, `--kiosk` (given before the
subcommand, as `warroom --kiosk orders fix ...`), and `read_only = true` in the config.

- every subcommand, table-driven, against the real harness stack (Postgres orders and
  breakers, Redis, anvil with the Escrow contract, a real process): what only reads
  still works; every change is refused (exit 2); nothing changes (the Postgres rows, the
  process, the incidents, the outbox, the bulk-fix sets, the audit trail apart from
  refusals); each refusal is audited, once;
- every mutating action the engine registers, planned and executed through the
  ActionEngine: refused, audited; a plan that cannot be built in this state is made by
  hand (a plan that slipped past the UI): refused all the same;
- the paths around the ActionEngine: the incident manager's and the notifier's methods
  called directly (refused, audited), their automatic feeds and loop (write and send
  nothing), the audit trail itself (a dry-run's entry and a failover's entry dropped, a
  write-ahead intent refused, a refusal written);
- drills on a real sandbox: `warroom --read-only drill listener-crash --fix` (and inject,
  `--undo`) refused before the sandbox is touched: no service restarted or killed, no
  order reconciled, no drill recorded; refusals audited in the sandbox's trail.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.harness.stack import build_stack
from tui import cli

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.evm]

SWITCHES = ("--read-only", "--kiosk", "config")


def _escalation(port: int) -> str:
    return f"""
[escalation]
ack_timeout = "30m"

[[escalation.levels]]
name = "Development team"
after = "0m"
channels = ["json://127.0.0.1:{port}/hook/dev"]

[escalation.pagerduty]
routing_key = "R0UTINGKEYFORTESTS0000000000000"
url = "http://127.0.0.1:{port}/v2/enqueue"
"""


@pytest.fixture(scope="module")
def stack(pg, redis_server, anvil, escrow, tmp_path_factory):
    from tests.test_notify import free_port

    s = build_stack(pg, redis_server, anvil, escrow, tmp_path_factory.mktemp("readonly"),
                    name="readonly", prefix="ro")
    for i in range(3):
        s.sql("INSERT INTO orders (id, state, created_at) VALUES ($1, 'PENDING', now() - interval '5 days')",
              f"ro-old-{i}")
    s.rx_port = free_port()
    text = s.config_text + _escalation(s.rx_port)
    s.rw_path = s.tmp / "rw.toml"
    s.rw_path.write_text(text)
    s.ro_path = s.tmp / "ro.toml"
    s.ro_path.write_text(text.replace('operator = "tester"\n', 'operator = "tester"\nread_only = true\n', 1))
    yield s
    s.close()


def argv_for(stack, switch: str, argv: list[str]) -> list[str]:
    if switch == "config":
        return [*argv, "--config", str(stack.ro_path)]
    return [switch, *argv, "--config", str(stack.rw_path)]


def entries(stack) -> list[dict]:
    from backends.engine.audit import AuditLog

    return list(AuditLog(stack.audit_path).entries(intents=True))


def files(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_text(errors="replace") for p in sorted(folder.rglob("*"))
            if p.is_file()}


def world(stack) -> dict:
    """Everything a change could touch."""
    import psutil

    state = stack.tmp / "state"
    return {
        "orders": [tuple(r) for r in stack.sql("SELECT id, state, notes, updated_at FROM orders ORDER BY id")],
        "breakers": [tuple(r) for r in stack.sql("SELECT * FROM circuit_breaker_state ORDER BY 1")],
        "process": (stack.proc.pid, psutil.Process(stack.proc.pid).create_time()),
        "incidents": files(state / "incidents"),
        "outbox": files(state / "outbox"),
        "bulk-fix sets": files(state / "bulk-fix"),
        "postmortems": files(state / "postmortems"),
        "audit (not refusals)": [(e.get("seq"), e.get("action"), e.get("result")) for e in entries(stack)
                                 if e.get("result") != "refused"],
    }


def refusals(stack) -> list[tuple[str, str]]:
    return [(e.get("action"), e.get("target")) for e in entries(stack) if e.get("result") == "refused"]


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


# (name, argv, exit codes accepted, the action whose refusal is audited, or None: only reads)
SUBCOMMANDS = [
    ("check", ["check"], {0}, None),
    ("health", ["health", "database"], {0}, None),
    ("orders stuck", ["orders", "stuck"], {1}, None),
    ("orders verify", ["orders", "verify", "ro-1"], {0, 1}, None),
    ("orders report", ["orders", "report"], {0}, None),
    ("orders fix (dry-run)", ["orders", "fix", "ro-2", "--state", "FAILED", "--reason", "x"], {0}, None),
    ("orders fix --execute", ["orders", "fix", "ro-2", "--state", "FAILED", "--reason", "x", "--execute", "--yes"],
     {2}, "orders.fix"),
    ("orders bulk-fix (dry-run)", ["orders", "bulk-fix", "--older-than", "4d", "--state", "CANCELLED",
                                   "--reason", "x", "--all-pending"], {0}, None),
    ("orders bulk-fix --execute", ["orders", "bulk-fix", "--older-than", "4d", "--state", "CANCELLED",
                                   "--reason", "x", "--all-pending", "--execute", "--confirm", "3"],
     {2}, "orders.bulk_fix"),
    ("audit tail", ["audit", "tail"], {0}, None),
    ("audit verify", ["audit", "verify"], {0, 1}, None),
    ("audit repair", ["audit", "repair"], {2}, "-"),  # refused; not audited: writing would repair it
    ("audit resolve", ["audit", "resolve", "1", "--result", "ok", "--reason", "x"], {2}, "-"),  # an audit write
    ("incident brief", ["incident", "brief"], {0}, None),
    ("serve --allow-actions", ["serve", "--allow-actions", "--port", "1"], {2}, "serve.allow_actions"),
]


@pytest.mark.parametrize("switch", SWITCHES)
@pytest.mark.parametrize("name,argv,codes,refused", SUBCOMMANDS, ids=[c[0] for c in SUBCOMMANDS])
def test_every_subcommand_under_each_switch(stack, capsys, switch, name, argv, codes, refused):
    before, refused_before = world(stack), refusals(stack)
    code, out, err = run_cli(capsys, argv_for(stack, switch, argv))
    assert code in codes, f"{name} {switch}: exit {code}\n{out}\n{err}"
    assert world(stack) == before, f"{name} {switch} changed something"
    new = refusals(stack)[len(refused_before):]
    if refused is None:
        assert new == [], f"{name} {switch} refused something: {new}"
    else:
        assert "read-only" in err, err
        if refused != "-":
            assert [a for a, _t in new] == [refused], f"{name} {switch}: refusals audited {new}"


@pytest.mark.parametrize("switch", SWITCHES)
def test_demo_and_serve_take_the_switches(stack, switch):
    """demo's console and serve's apps get read-only (the sandbox's own tests run them)."""
    from tui.cmd_serve import app_argv

    for sub in ("demo", "serve", "drill"):
        argv = argv_for(stack, switch, [sub])
        parser, subparsers = cli.build_parser(sub)
        import importlib

        mod = importlib.import_module(cli.SUBCOMMANDS[sub][0])
        mod.add_arguments(subparsers[sub])
        args = parser.parse_args(argv)
        cli.apply_read_only(args, argv, sub)
        if switch == "config" and sub != "serve":
            continue  # demo and drill read the sandbox's own config (tested with the sandbox below)
        assert args.read_only, (sub, switch)
        if switch == "--kiosk":
            assert args.kiosk, sub  # `warroom --kiosk serve`: serve's own --kiosk default does not reset it
        if sub == "serve":
            assert "--read-only" in app_argv(args)
    assert set(cli.READ_ONLY_MEANS) == set(cli.SUBCOMMANDS)  # every subcommand says what it means


# --------------------------------------------------------------------------- the engine


def engine_for(stack, switch: str):
    """The engine a headless command builds under the switch (the CLI's own parsing)."""
    import importlib

    from tui.headless import build

    argv = argv_for(stack, switch, ["incident", "brief"])
    parser, subparsers = cli.build_parser("incident")
    importlib.import_module("tui.cmd_incident").add_arguments(subparsers["incident"])
    args = parser.parse_args(argv)
    cli.apply_read_only(args, argv, "incident")
    return build(args)


# params that plan each mutating action in the stack's state; others get a hand-made plan
PARAMS = {
    "postgres.terminate": {"all": True, "older_than": 0},
    "breaker.reset": {"trigger_id": "webhook-a"},
    "breaker.reset_all": {},
    "chain.failover": {"chain": "local"},
    "chain.pin": {"chain": "local"},
    "chain.pause": {"chain": "local", "contract": "escrow"},
    "chain.unpause": {"chain": "local", "contract": "escrow"},
    "orders.fix": {"order_id": "ro-2", "state": "FAILED", "reason": "x"},
    "orders.bulk_fix": {"older_than": 4 * 86400, "state": "CANCELLED", "reason": "x", "only_released": False},
    "orders.reconcile": {"older_than": 60, "reason": "x"},
    "orders.resync": {"block": 1, "reason": "x"},
    "process.restart": {"service": "listener"},
    "service.restart": {"service": "listener"},
    "incident.declare": {"title": "t", "severity": "P2"},
    "incident.update": {"op": "note", "value": "hello"},
    "incident.resolve": {},
    "escalate": {"brief": "b"},
}


async def _plan_or_make(engine, action_id: str):
    from backends.actions.base import ActionPlan, Change, Danger
    from backends.errors import ActionRefused

    try:
        return await engine.actions.plan(action_id, **PARAMS.get(action_id, {})), True
    except ActionRefused:
        action = engine.actions.get(action_id)
        return ActionPlan(action=action_id, title=action.title or action_id, target=f"test:{action_id}",
                          changes=(Change("x", "a change"),), danger=Danger.CONFIRM, reason="x"), False


@pytest.mark.parametrize("switch", SWITCHES)
async def test_every_mutating_action_and_every_path_around_the_engine(stack, switch):
    from backends.actions.notify import Message
    from backends.engine.audit import AuditUnavailable
    from backends.engine.core import build_engine
    from backends.errors import ActionRefused
    from tests.test_notify import Receiver

    rx = Receiver(stack.rx_port)
    await rx.start()
    from backends.config import load_config

    rw = build_engine(load_config(str(stack.rw_path)))
    try:
        await rw.incidents.load()
        inc = rw.incidents.open_incidents()[0] if rw.incidents.open_incidents() else None
        if inc is None:
            plan = await rw.actions.plan("incident.declare", title="readonly test", severity="P1")
            assert (await rw.actions.execute(plan, confirmation=True)).ok
            inc = rw.incidents.current()
        mutating = sorted(a.id for a in rw.actions.available() if a.mutating)
    finally:
        await rw.stop()
    assert {"orders.fix", "orders.bulk_fix", "process.restart", "incident.declare", "incident.update",
            "incident.resolve", "escalate", "breaker.reset_all", "chain.pause"} <= set(mutating)

    engine = engine_for(stack, switch)
    await engine.start()
    try:
        assert engine.actions.read_only
        assert not any(a.mutating for a in engine.actions.available())
        before, refused_before = await asyncio.to_thread(world, stack), len(refusals(stack))
        planned = []
        for action_id in mutating:
            plan, real = await _plan_or_make(engine, action_id)
            planned.append((action_id, real))
            with pytest.raises(ActionRefused, match="read-only"):
                await engine.actions.execute(plan, confirmation=plan.expected_confirmation or True)
        # the paths around the ActionEngine: called directly, refused, audited
        m, n = engine.incidents, engine.notifier
        await m.load()
        direct = [
            lambda: m.declare("direct", "P1"),
            lambda: m.set_status(inc.id, "identified"),
            lambda: m.set_severity(inc.id, "P0"),
            lambda: m.assign(inc.id, "ic", "mallory"),
            lambda: m.acknowledge(inc.id),
            lambda: m.note(inc.id, "direct note"),
            lambda: m.set_fields(inc.id, impact="all"),
            lambda: m.post_update(inc.id, "update"),
            lambda: m.resolve(inc.id, summary="done"),
            lambda: m.record_escalation(inc.id, lambda i: True),
            lambda: n.escalate(m, inc.id, 0, title="t", brief="b", by="x"),
            lambda: n.flush(force=True),
            lambda: n.retry("nope"),
            lambda: n.pagerduty_event(_escalated(inc), "resolve"),
        ]
        for call in direct:
            with pytest.raises(ActionRefused, match="read-only"):
                await call()
        with pytest.raises(ActionRefused, match="read-only"):
            n.enqueue([Message(id="m1", incident=inc.id, kind="apprise", title="t", body="b", level=0, channel=0)])
        await engine.audit.flush()
        # automatic feeds and loops: nothing written, nothing sent
        assert await n.tick() == [] and n._task is None
        m.observe(engine.monitor.snapshot)
        await m.drain()
        # the audit trail: a preview's entry and a failover's entry are dropped, an intent refused
        plan, _ = await _plan_or_make(engine, "orders.fix")
        entry = await engine.actions.record_dry_run_async(plan)
        assert entry["seq"] is None and entry["dropped"]
        assert engine.audit.append(action="chain.failover", target="chain:local", result="ok")["seq"] is None
        await engine.audit.append_soon(action="chain.failover", target="chain:local", result="ok")
        with pytest.raises(AuditUnavailable):
            await engine.audit.append_async(action="orders.fix", target="x", result="started", phase="intent")
        after = await asyncio.to_thread(world, stack)
        assert after == before
        new = len(refusals(stack)) - refused_before
        assert new == len(mutating) + len(direct) + 1, (new, planned)
        assert rx.hooks == [] and rx.events == []  # nothing reached a channel or PagerDuty
        assert engine.audit.append(action="x", target="y", result="refused")["seq"] is not None  # refusals: yes
    finally:
        await engine.stop()
        await rx.stop()


def _escalated(inc):
    """The incident as if escalated (PagerDuty ack/resolve apply only then)."""
    from dataclasses import replace

    return replace(inc, escalation={"levels_sent": [0]})


async def test_read_only_set_later_holds_at_once(stack):
    """The console sets `actions.read_only = True` on an engine built writable: every path follows."""
    from backends.config import load_config
    from backends.engine.core import build_engine
    from backends.errors import ActionRefused

    engine = build_engine(load_config(str(stack.rw_path)))
    try:
        await engine.incidents.load()
        engine.actions.read_only = True
        before = await asyncio.to_thread(world, stack)
        with pytest.raises(ActionRefused, match="read-only"):
            await engine.incidents.declare("later", "P2")
        plan = await engine.actions.plan("orders.fix", order_id="ro-2", state="FAILED", reason="x")
        assert (await engine.actions.record_dry_run_async(plan))["seq"] is None
        assert await asyncio.to_thread(world, stack) == before
    finally:
        await engine.stop()


# --------------------------------------------------------------------------- drills on a real sandbox


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from tests.harness.sandbox import running_sandbox

    with running_sandbox(tmp_path_factory, "xdg-state-ro") as st:
        yield st


def _sandbox_world(st) -> dict:
    from sandbox import drills
    from sandbox.stack import running_sandbox, service_pids

    info = running_sandbox()
    run_dir = Path(info["run_dir"])

    async def fixed_by_hand() -> int:
        import asyncpg

        from backends.config import load_config
        from backends.units import reveal

        conn = await asyncpg.connect(reveal(load_config(info["config"]).postgres["main"].dsn))
        try:
            return int(await conn.fetchval("SELECT count(*) FROM orders WHERE notes LIKE '%MANUAL FIX%'"))
        finally:
            await conn.close()

    return {"services": service_pids(run_dir), "drills": drills.read_records(run_dir),
            "flags": sorted(p.name for p in (run_dir / "flags").glob("*")) if (run_dir / "flags").is_dir() else [],
            "fixed by hand": asyncio.run(fixed_by_hand())}


def _sandbox_refusals() -> list[str]:
    from backends.config import load_config
    from backends.engine.audit import AuditLog
    from sandbox.stack import running_sandbox

    audit = AuditLog(load_config(running_sandbox()["config"]).audit_path)
    return [e.get("action") for e in audit.entries() if e.get("result") == "refused"]


DRILL_CASES = [
    ("inject", ["drill", "listener-crash", "--no-watch"], "drill.inject"),
    ("--fix", ["drill", "listener-crash", "--fix", "--timeout", "3"], "drill.fix"),
    ("--undo", ["drill", "queue-flood", "--undo"], "drill.undo"),
]


@pytest.mark.parametrize("switch", SWITCHES)
def test_drills_refused_before_touching_the_sandbox(sandbox, capsys, switch):
    from sandbox.stack import running_sandbox

    config = Path(running_sandbox()["config"])
    original = config.read_text()
    if switch == "config":
        config.write_text(original.replace("[warroom]\n", "[warroom]\nread_only = true\n", 1))
    try:
        before = _sandbox_world(sandbox)
        assert before["services"].get("event-listener"), before["services"]
        for name, argv, action in DRILL_CASES:
            n = len(_sandbox_refusals())
            full = argv if switch == "config" else [switch, *argv]
            code, out, err = run_cli(capsys, full)
            assert code == 2 and "read-only" in err, (name, code, out, err)
            assert _sandbox_refusals()[n:] == [action], (name, _sandbox_refusals()[n:])
            assert _sandbox_world(sandbox) == before, f"drill {name} {switch} changed the sandbox"
        # what only reads still works
        code, out, err = run_cli(capsys, [*([] if switch == "config" else [switch]), "drill"])
        assert code == 0 and "listener-crash" in out
        code, out, err = run_cli(capsys, [*([] if switch == "config" else [switch]), "drill", "--status"])
        assert code == 0 and "no drill injected" in out
    finally:
        config.write_text(original)
    assert json.dumps(_sandbox_world(sandbox)["drills"]) == "{}"


def _torn_trail(tmp_path: Path) -> bytes:
    from backends.engine.audit import AuditLog

    AuditLog(tmp_path / "audit.jsonl").append(action="x", target="y", result="ok")
    with open(tmp_path / "audit.jsonl", "ab") as fh:
        fh.write(b'{"seq": 2, "ts": "2026-')  # a crash mid-append
    return (tmp_path / "audit.jsonl").read_bytes()


async def test_read_only_start_leaves_a_torn_audit_tail_alone(tmp_path):
    """The engine's open check sets a torn tail aside (a write): read-only only looks."""
    from backends.config import load_config_text
    from backends.engine.core import build_engine

    text = (f'[warroom]\nname = "torn"\naudit_path = "{tmp_path}/audit.jsonl"\nstate_dir = "{tmp_path}/state"\n'
            "[host]\n")
    before = _torn_trail(tmp_path)
    config = load_config_text(text, str(tmp_path / "w.toml"))
    engine = build_engine(config, read_only=True)
    await engine.start()
    await engine.stop()
    assert (tmp_path / "audit.jsonl").read_bytes() == before
    assert not (tmp_path / "audit.jsonl.torn").exists()
    engine = build_engine(config)  # a process that may write sets it aside
    await engine.start()
    await engine.stop()
    assert (tmp_path / "audit.jsonl.torn").exists()
