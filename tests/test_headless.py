"""Headless commands against the real harness services: `warroom health`, `orders ...`,
`audit tail|verify`, `incident brief`. Every command and exit code; no Textual on these paths.

Most runs call `tui.cli.main([...])` in-process (fast); a few run the real `python -m tui.cli`
in a subprocess (piped output, no Textual in sys.modules).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.harness import free_port
from tests.harness.stack import build_stack
from tui import cli

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.evm]

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "backends" / "health_schema.json").read_text())


def validate(doc: dict) -> None:
    """Validate a `health --json` document against backends/health_schema.json."""
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)


@pytest.fixture(scope="module")
def stack(pg, redis_server, anvil, escrow, tmp_path_factory):
    s = build_stack(pg, redis_server, anvil, escrow, tmp_path_factory.mktemp("headless"),
                    name="headless", prefix="hl")
    yield s
    s.close()


def wr(stack, capsys, *argv: str, config: Path | str | None = None) -> tuple[int, str, str]:
    """Run `warroom ARGV --config ...` in-process; (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli.main([*argv, "--config", str(config or stack.config_path)])
    out = capsys.readouterr()
    return code, out.out, out.err


def add_order(stack, oid: str, age: str, state: str = "PENDING") -> None:
    from datetime import timedelta

    n, unit = age.split()
    delta = timedelta(**{unit if unit.endswith("s") else unit + "s": int(n)})
    stack.sql("INSERT INTO orders (id, state, created_at) VALUES ($1, $2, now() - $3::interval)", oid, state, delta)


def state_of(stack, oid: str) -> tuple[str, str | None]:
    [row] = stack.sql("SELECT state, notes FROM orders WHERE id = $1", oid)
    return row["state"], row["notes"]


def audit(stack) -> list[dict]:
    from backends.engine.audit import AuditLog

    return list(AuditLog(stack.audit_path).entries())


def clear_old_pending(stack) -> None:
    """Bulk-fix tests work on orders days old; earlier leftovers must not count."""
    stack.sql("UPDATE orders SET state = 'CANCELLED' WHERE state = 'PENDING' AND created_at < now() - interval '1 day'")


def dead_port() -> int:
    return free_port()


# --------------------------------------------------------------------------- no Textual


def test_headless_commands_import_no_textual(stack):
    """The real CLI in a subprocess: four commands, then no textual in sys.modules."""
    cfg = str(stack.config_path)
    code = textwrap.dedent(f"""
        import sys
        from tui.cli import main
        codes = [main(["health", "--json", "database", "--config", {cfg!r}]),
                 main(["orders", "stuck", "--json", "--config", {cfg!r}]),
                 main(["audit", "verify", "--config", {cfg!r}]),
                 main(["incident", "brief", "--config", {cfg!r}])]
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "widgets") or m == "tui.app")
        print("RESULT", codes, bad)
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    last = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT")][-1]
    assert last == "RESULT [0, 1, 0, 0] []", res.stdout[-2000:] + res.stderr[-2000:]


# --------------------------------------------------------------------------- health


def test_health_all_table_and_exit_codes_per_area(stack, capsys):
    code, out, err = wr(stack, capsys, "health")
    assert code == 2, out + err  # stuck orders are a P1 finding
    for name in ("postgres.main", "redis.main", "queues.main", "breakers", "chain.local", "orders", "processes"):
        assert name in out
    assert "CRIT" in out and "stuck" in out

    assert wr(stack, capsys, "health", "database")[0] == 0
    code, out, _ = wr(stack, capsys, "health", "breakers")
    assert code == 1 and "WARN" in out and "webhook-a" in out  # one open breaker: P2
    assert wr(stack, capsys, "health", "orders")[0] == 2
    assert wr(stack, capsys, "health", "chain")[0] == 0
    assert wr(stack, capsys, "health", "services")[0] == 0
    assert wr(stack, capsys, "health", "queues")[0] == 0
    code, out, _ = wr(stack, capsys, "health", "quick")
    assert code == 1 and "orders" not in out.split("findings")[0]


@pytest.mark.parametrize("area", ["all", "quick", "database", "breakers", "orders", "events", "resources"])
def test_health_json_is_valid_against_the_schema(stack, capsys, area):
    code, out, err = wr(stack, capsys, "health", "--json", area)
    doc = json.loads(out)
    validate(doc)
    assert doc["area"] == area and doc["exit_code"] == code
    assert doc["status"] == {0: "ok", 1: "warn", 2: "critical", 3: "unknown"}[code]
    if area == "database":
        assert code == 0 and [s["name"] for s in doc["sources"]] == ["postgres.main"]
    if area == "orders":
        assert code == 2
        assert {f["severity"] for f in doc["findings"]} <= {"P0", "P1", "P2", "P3"}
        assert any(f["status"] == "critical" and f["playbook"] == "orders-stuck" for f in doc["findings"])
    if area == "events":
        assert {"logs", "orders"} <= {s["name"] for s in doc["sources"]}
    if area == "resources":  # no host section: nothing to check is unknown, not ok
        assert code == 3 and doc["sources"] == [] and "nothing configured" in err and doc["reason"]


def test_health_unknown_when_a_source_is_down(stack, capsys):
    dead_pg = stack.variant("dead-pg.toml", dsn=f"postgresql://warroom@127.0.0.1:{dead_port()}/nope")
    code, out, err = wr(stack, capsys, "health", "--json", "database", config=dead_pg)
    doc = json.loads(out)
    validate(doc)
    assert code == 3 and doc["status"] == "unknown"
    [src] = doc["sources"]
    assert src["state"] == "degraded" and src["status"] == "unknown" and src["reason"]
    assert "postgres.main cannot be read" in err and "Traceback" not in err
    # the human table says it too
    code, out, err = wr(stack, capsys, "health", "database", config=dead_pg)
    assert code == 3 and "UNKNOWN" in out and "Traceback" not in out + err

    dead_redis = stack.variant("dead-redis.toml", redis_url=f"redis://127.0.0.1:{dead_port()}/0")
    code, out, err = wr(stack, capsys, "health", "--json", "queues", config=dead_redis)
    doc = json.loads(out)
    validate(doc)
    assert code == 3 and {s["status"] for s in doc["sources"]} == {"unknown"}


def test_a_hanging_source_is_bounded_by_timeouts(stack, capsys):
    # a port that accepts connections and never answers
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        port = srv.getsockname()[1]
        cfg = stack.variant("hang-pg.toml", dsn=f"postgresql://warroom@127.0.0.1:{port}/nope")
        code, out, err = wr(stack, capsys, "health", "--json", "database", config=cfg)
        doc = json.loads(out)
        validate(doc)
        assert code == 3
        assert doc["sources"][0]["reason"]
        # orders commands: --timeout bounds the whole command
        code, out, err = wr(stack, capsys, "orders", "stuck", "--timeout", "0.5", config=cfg)
        assert code == 3 and "timed out after 0.5s" in err and "Traceback" not in err


def test_health_config_errors_are_unknown(stack, capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[warroom]\nrefresh = 'often'\n")
    code, out, err = wr(stack, capsys, "health", "--json", config=bad)
    assert code == 3
    doc = json.loads(out)
    validate(doc)
    assert doc["status"] == "unknown" and "refresh" in doc["reason"]
    code, out, err = wr(stack, capsys, "health", config=tmp_path / "missing.toml")
    assert code == 3 and "not found" in err and "Traceback" not in err


# --------------------------------------------------------------------------- orders: reads


def test_orders_stuck(stack, capsys):
    code, out, _ = wr(stack, capsys, "orders", "stuck", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["count"] >= 2
    assert {"hl-1", "hl-2"} <= {o["id"] for o in doc["orders"]}
    assert doc["older_than_s"] == 600
    code, out, _ = wr(stack, capsys, "orders", "stuck", "--older-than", "90m")
    assert code == 1 and "hl-1" in out and "hl-2" not in out
    code, out, _ = wr(stack, capsys, "orders", "stuck", "--older-than", "30d")
    assert code == 0 and "no orders stuck" in out
    code, _, err = wr(stack, capsys, "orders", "stuck", "--older-than", "soon")
    assert code == 2 and "invalid duration" in err


def test_orders_verify(stack, capsys):
    code, out, _ = wr(stack, capsys, "orders", "verify", "hl-1")
    assert code == 0 and "released in block" in out
    code, out, _ = wr(stack, capsys, "orders", "verify", "hl-1", "hl-2", "hl-404", "--json")
    assert code == 1
    rows = {r["id"]: r for r in json.loads(out)["orders"]}
    assert rows["hl-1"]["verdict"] == "released" and rows["hl-1"]["final"] and rows["hl-1"]["tx_hash"]
    assert rows["hl-2"]["verdict"] == "not_released"
    assert rows["hl-404"]["found"] is False
    code, _, err = wr(stack, capsys, "orders", "verify", "hl-1;drop table orders")
    assert code == 2 and "does not match" in err


def test_orders_unknown_when_database_or_chain_is_down(stack, capsys):
    dead_pg = stack.variant("orders-dead-pg.toml", dsn=f"postgresql://warroom@127.0.0.1:{dead_port()}/x")
    code, out, err = wr(stack, capsys, "orders", "stuck", config=dead_pg)
    assert code == 3 and "orders cannot be read" in err and "Traceback" not in err
    dead_chain = stack.variant("orders-dead-chain.toml", anvil_url=f"http://127.0.0.1:{dead_port()}")
    code, out, err = wr(stack, capsys, "orders", "verify", "hl-1", config=dead_chain)
    assert code == 3 and "Traceback" not in out + err


# --------------------------------------------------------------------------- orders: changes


def test_fix_dry_run_changes_nothing_and_is_audited(stack, capsys):
    add_order(stack, "hl-f1", "3 hours")
    before = len(audit(stack))
    code, out, err = wr(stack, capsys, "orders", "fix", "hl-f1", "--state", "SETTLED", "--reason", "listener down")
    assert code == 0, err
    assert "state PENDING -> SETTLED" in out and "before:" in out and "after:" in out
    assert "dry-run: nothing was changed" in out
    assert state_of(stack, "hl-f1") == ("PENDING", None)
    entries = audit(stack)
    assert len(entries) == before + 1
    last = entries[-1]
    assert last["dry_run"] is True and last["action"] == "orders.fix" and last["target"] == "order:hl-f1"
    assert last["reason"] == "listener down" and last["result"] == "previewed"


def test_fix_requires_a_reason_and_a_known_state(stack, capsys):
    add_order(stack, "hl-f2", "3 hours")
    code, _, err = wr(stack, capsys, "orders", "fix", "hl-f2", "--state", "SETTLED", "--execute")
    assert code == 2 and "reason is required" in err
    code, _, err = wr(stack, capsys, "orders", "fix", "hl-f2", "--state", "GONE", "--reason", "x", "--execute")
    assert code == 2 and "not one of" in err
    assert state_of(stack, "hl-f2")[0] == "PENDING"


def test_fix_execute_changes_the_row_and_audits(stack, capsys):
    add_order(stack, "hl-f3", "3 hours")
    code, out, err = wr(stack, capsys, "orders", "fix", "hl-f3", "--state", "FAILED",
                        "--reason", "customer refunded", "--execute")
    assert code == 0, out + err
    assert "ok: order hl-f3: PENDING -> FAILED" in out
    state, notes = state_of(stack, "hl-f3")
    assert state == "FAILED" and "MANUAL FIX" in notes and "customer refunded" in notes and "tester" in notes
    last = audit(stack)[-1]
    assert (last["action"], last["dry_run"], last["result"]) == ("orders.fix", False, "ok")
    assert last["before"]["state"] == "PENDING" and last["after"]["state"] == "FAILED"
    # again: the order is no longer pending -> the guard refuses, nothing overwritten
    code, out, err = wr(stack, capsys, "orders", "fix", "hl-f3", "--state", "SETTLED",
                        "--reason", "again", "--execute")
    assert code == 2 and "guard" in out + err
    assert state_of(stack, "hl-f3")[0] == "FAILED"


def test_read_only_refuses_execute_but_allows_dry_run(stack, capsys):
    add_order(stack, "hl-ro", "3 hours")
    argv = ("orders", "fix", "hl-ro", "--state", "SETTLED", "--reason", "try")
    # --read-only before the subcommand
    code, out, err = wr(stack, capsys, "--read-only", *argv, "--execute")
    assert code == 2 and "read-only" in err
    assert state_of(stack, "hl-ro")[0] == "PENDING"
    last = audit(stack)[-1]
    assert last["result"] == "refused" and "read-only" in last["summary"] and last["dry_run"] is False
    # ... after it
    code, out, err = wr(stack, capsys, *argv, "--execute", "--read-only")
    assert code == 2 and "read-only" in err
    # a read-only config
    ro = stack.tmp / "read-only.toml"
    ro.write_text(stack.config_text.replace('operator = "tester"', 'operator = "tester"\nread_only = true'))
    code, out, err = wr(stack, capsys, *argv, "--execute", config=ro)
    assert code == 2 and "read-only" in err
    code, out, err = wr(stack, capsys, "orders", "bulk-fix", "--older-than", "1h", "--state", "FAILED",
                        "--reason", "x", "--all-pending", "--execute", "--confirm", "1", config=ro)
    assert code == 2 and "read-only" in err
    assert state_of(stack, "hl-ro")[0] == "PENDING"
    # dry-runs still work read-only
    code, out, err = wr(stack, capsys, "--read-only", *argv)
    assert code == 0 and "dry-run" in out


def test_bulk_fix_dry_run_then_typed_confirmation(stack, capsys):
    clear_old_pending(stack)
    for i in range(3):
        add_order(stack, f"hl-b{i}", "5 days")
    argv = ("orders", "bulk-fix", "--older-than", "4d", "--state", "CANCELLED", "--reason", "expired", "--all-pending")
    code, out, err = wr(stack, capsys, *argv)
    assert code == 0 and "3 order(s) PENDING older than" in out and "hl-b0" in out
    assert audit(stack)[-1]["dry_run"] is True
    # --execute without the count: refused (and audited), nothing changed
    code, out, err = wr(stack, capsys, *argv, "--execute")
    assert code == 2 and "--confirm 3" in err
    code, out, err = wr(stack, capsys, *argv, "--execute", "--confirm", "4")
    assert code == 2 and "confirmation does not match" in err
    assert all(state_of(stack, f"hl-b{i}")[0] == "PENDING" for i in range(3))
    code, out, err = wr(stack, capsys, *argv, "--execute", "--confirm", "3")
    assert code == 0, out + err
    assert "ok: 3 fixed" in out and "progress: 3/3" in out  # piped: plain progress lines
    assert all(state_of(stack, f"hl-b{i}")[0] == "CANCELLED" for i in range(3))
    last = audit(stack)[-1]
    assert (last["action"], last["result"], last["dry_run"]) == ("orders.bulk_fix", "ok", False)
    assert sorted(last["after"]["fixed"]) == ["hl-b0", "hl-b1", "hl-b2"]
    # nothing left: not an error
    code, out, err = wr(stack, capsys, *argv)
    assert code == 0 and "nothing to do" in out


def test_bulk_fix_canary_passes_then_the_rest_runs(stack, capsys):
    clear_old_pending(stack)
    for i in range(5):
        add_order(stack, f"hl-c{i}", "6 days")
    code, out, err = wr(stack, capsys, "orders", "bulk-fix", "--older-than", "5d", "--state", "FAILED",
                        "--reason", "never paid", "--all-pending", "--canary", "2", "--batch", "2",
                        "--execute", "--confirm", "5")
    assert code == 0, out + err
    assert "canary: first 2" in out and "batch 3/3" in out
    assert all(state_of(stack, f"hl-c{i}")[0] == "FAILED" for i in range(5))


def test_bulk_fix_canary_stops_when_the_chain_disagrees(stack, capsys):
    clear_old_pending(stack)
    for i in range(4):
        add_order(stack, f"hl-s{i}", "7 days")
    # SETTLED for orders with no release on chain: the canary's re-verification fails
    code, out, err = wr(stack, capsys, "orders", "bulk-fix", "--older-than", "6d", "--state", "SETTLED",
                        "--reason", "restart", "--all-pending", "--canary", "1", "--execute", "--confirm", "4")
    assert code == 1, out + err  # partial: the canary was applied, the rest not
    assert "canary stopped" in out
    states = [state_of(stack, f"hl-s{i}")[0] for i in range(4)]
    assert states.count("SETTLED") == 1 and states.count("PENDING") == 3
    last = audit(stack)[-1]
    assert last["result"] == "partial" and len(last["after"]["not_done"]) == 3


def test_bulk_fix_only_released_by_default_for_settled(stack, capsys):
    # hl-1 is released on chain (final), hl-2 is not: SETTLED picks only hl-1
    code, out, err = wr(stack, capsys, "orders", "bulk-fix", "--older-than", "10m", "--state", "SETTLED",
                        "--reason", "listener missed it")
    assert code == 0, err
    assert "ids: hl-1" in out and "hl-2" not in out.split("ids:")[1]


def test_bulk_fix_interactive_prompt_on_a_terminal(stack, capsys, monkeypatch):
    import tui.cmd_orders as orders

    clear_old_pending(stack)
    add_order(stack, "hl-t0", "8 days")
    asked = []

    async def fake_ask(prompt):
        asked.append(prompt)
        return "1"

    monkeypatch.setattr(orders, "is_tty", lambda *a: True)
    monkeypatch.setattr(orders, "ask", fake_ask)
    monkeypatch.setattr("tui.headless.is_tty", lambda *a: False)  # progress: plain lines
    code, out, err = wr(stack, capsys, "orders", "bulk-fix", "--older-than", "7d", "--state", "CANCELLED",
                        "--reason", "old", "--all-pending", "--execute")
    assert code == 0, out + err
    assert asked == ["type 1 to apply this change: "]
    assert state_of(stack, "hl-t0")[0] == "CANCELLED"


def test_orders_report_counts_and_fixes_by_hand(stack, capsys):
    add_order(stack, "hl-r1", "2 hours")
    assert wr(stack, capsys, "orders", "fix", "hl-r1", "--state", "CANCELLED", "--reason", "dup",
              "--execute")[0] == 0
    code, out, err = wr(stack, capsys, "orders", "report", "--json")
    assert code == 0, err
    rep = json.loads(out)
    rows = stack.sql("SELECT state, count(*) AS n FROM orders WHERE created_at > now() - interval '24 hours' GROUP BY 1")
    assert rep["by_state"] == {r["state"]: r["n"] for r in rows}
    assert rep["fixed_by_hand"] >= 1
    assert any(f["target"] == "order:hl-r1" and f["fixed"] == 1 for f in rep["fixes"])
    code, out, err = wr(stack, capsys, "orders", "report", "--hours", "1")
    assert code == 0 and "fixed by hand in the last 1 h" in out and "PENDING" in out


# --------------------------------------------------------------------------- audit


def test_audit_tail(stack, capsys):
    for i in range(3):  # three dry-runs: entries of our own
        assert wr(stack, capsys, "orders", "fix", "hl-2", "--state", "FAILED", "--reason", f"tail {i}")[0] == 0
    code, out, _ = wr(stack, capsys, "audit", "tail", "-n", "3")
    assert code == 0 and len(out.strip().splitlines()) == 3
    assert all("[dry-run]" in ln and "orders.fix order:hl-2" in ln for ln in out.splitlines())
    code, out, _ = wr(stack, capsys, "audit", "tail", "-n", "2", "--json")
    entries = [json.loads(ln) for ln in out.splitlines()]
    assert code == 0 and len(entries) == 2 and all("hash" in e for e in entries)
    assert entries == audit(stack)[-2:]
    # --config before the subcommand works too
    capsys.readouterr()
    assert cli.main(["--config", str(stack.config_path), "audit", "tail", "-n", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == audit(stack)[-1]


def test_audit_verify_ok_and_broken(stack, capsys):
    from backends.engine.audit import AuditLog

    code, out, _ = wr(stack, capsys, "audit", "verify")
    assert code == 0 and "intact" in out
    path = stack.tmp / "tampered.jsonl"
    log = AuditLog(path)
    for i in range(3):
        log.append(action="orders.fix", target=f"order:x{i}", reason="r", result="ok")
    cfg = stack.variant("tampered.toml", audit=path)
    code, out, _ = wr(stack, capsys, "audit", "verify", config=cfg)
    assert code == 0
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"order:x1"', '"order:x9"')
    path.write_text("\n".join(lines) + "\n")
    code, out, _ = wr(stack, capsys, "audit", "verify", config=cfg)
    assert code == 2 and "BROKEN at line 2" in out and "order:x9" in out
    code, out, _ = wr(stack, capsys, "audit", "verify", "--json", config=cfg)
    res = json.loads(out)
    assert code == 2 and res["ok"] is False and res["first_bad_line"] == 2 and res["entries"] == 1


# --------------------------------------------------------------------------- incident brief


def test_incident_brief_has_orders_errors_steps_and_endpoints(stack, capsys, anvil):
    add_order(stack, "hl-i1", "3 hours")
    assert wr(stack, capsys, "orders", "fix", "hl-i1", "--state", "FAILED", "--reason", "brief-step",
              "--execute")[0] == 0
    from datetime import UTC, datetime

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with stack.logfile.open("a") as fh:
        fh.write(f"{now} ERROR listener: websocket closed code=1006 brief-marker\n")
    [n] = [r["n"] for r in stack.sql(
        "SELECT count(*) AS n FROM orders WHERE state = 'PENDING' AND created_at < now() - interval '10 minutes'")]
    code, out, err = wr(stack, capsys, "incident", "brief")
    assert code == 0, err
    assert f"{n} stuck order(s)" in out
    assert "brief-marker" in out
    assert "orders.fix order:hl-i1 -> ok" in out and "brief-step" in out
    assert anvil.url in out and "[active]" in out
    timeline = out.split("TIMELINE")[1]
    [oldest] = [r["id"] for r in stack.sql(
        "SELECT id FROM orders WHERE state = 'PENDING' ORDER BY created_at LIMIT 1")]
    assert f"oldest stuck order {oldest} created" in timeline and "tester: orders.fix order:hl-i1 -> ok" in timeline
    code, out, err = wr(stack, capsys, "incident", "brief", "--json")
    b = json.loads(out)
    assert code == 0 and b["affected_orders"] == n
    assert any(a["target"] == "order:hl-i1" for a in b["attempted"])
    assert all(not a.get("dry_run") for a in b["attempted"])
    assert [t["ts"] for t in b["timeline"]] == sorted(t["ts"] for t in b["timeline"])
    assert b["endpoints"][0]["url"] == anvil.url and b["worst"] in ("P0", "P1")


def test_incident_brief_shows_what_is_down(stack, capsys):
    port = dead_port()
    cfg = stack.variant("brief-dead.toml", anvil_url=f"http://127.0.0.1:{port}",
                        redis_url=f"redis://127.0.0.1:{dead_port()}/0")
    code, out, err = wr(stack, capsys, "incident", "brief", config=cfg)
    assert code == 0, err
    assert f"127.0.0.1:{port} [active] DOWN: connection refused" in out
    assert "COULD NOT BE READ" in out and "redis.main" in out


# --------------------------------------------------------------------------- a real subprocess


def test_real_subprocess_bulk_fix_piped(stack):
    clear_old_pending(stack)
    for i in range(2):
        add_order(stack, f"hl-p{i}", "9 days")
    argv = [sys.executable, "-m", "tui.cli", "orders", "bulk-fix", "--older-than", "8d", "--state", "CANCELLED",
            "--reason", "piped", "--all-pending", "--execute", "--confirm", "2", "--config", str(stack.config_path)]
    res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "progress: 2/2" in res.stdout and "\x1b[" not in res.stdout  # plain when piped
    assert [state_of(stack, f"hl-p{i}")[0] for i in range(2)] == ["CANCELLED", "CANCELLED"]
    res = subprocess.run([sys.executable, "-m", "tui.cli", "health", "--json", "breakers", "--config",
                          str(stack.config_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr
    validate(json.loads(res.stdout))


def test_progress_bar_on_a_terminal(monkeypatch):
    import io

    from rich.console import Console

    from backends.actions.base import Progress
    from tui import headless

    out = io.StringIO()
    monkeypatch.setattr(headless, "is_tty", lambda *a: True)
    monkeypatch.setattr(headless, "console", lambda *a, **k: Console(file=out, force_terminal=True, width=100))
    with headless.progress_reporter("fixing", 4) as report:
        for i in range(1, 5):
            report(Progress(i, 4, f"batch {i}"))
    text = out.getvalue()
    assert "\x1b[" in text, "a bar drawn with terminal codes"  # not the plain piped lines
    assert "4/4" in text and "fixing: batch 4" in text and "progress:" not in text


def test_real_terminal_prompt_and_progress_bar(stack):
    """Under a pseudo-terminal: the typed confirmation is asked for and a progress bar drawn."""
    import os
    import pty
    import select
    import time

    clear_old_pending(stack)
    for i in range(2):
        add_order(stack, f"hl-y{i}", "10 days")
    argv = [sys.executable, "-m", "tui.cli", "orders", "bulk-fix", "--older-than", "9d", "--state", "CANCELLED",
            "--reason", "tty", "--all-pending", "--execute", "--config", str(stack.config_path)]
    pid, fd = pty.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.chdir(ROOT)
            os.execv(sys.executable, argv)
        finally:
            os._exit(127)
    out = b""
    answered = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            if not answered and b"type 2 to apply" in out:
                os.write(fd, b"2\n")
                answered = True
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    text = out.decode("utf-8", "replace")
    assert answered, text[-2000:]
    assert os.waitstatus_to_exitcode(status) == 0, text[-2000:]
    assert "2/2" in text and "progress:" not in text  # rich's bar, not the plain lines
    assert [state_of(stack, f"hl-y{i}")[0] for i in range(2)] == ["CANCELLED", "CANCELLED"]


def test_health_events_shows_success_rate_and_no_success_finding(tmp_path, capsys, monkeypatch):
    """`health events` on real log files: successes/min in the table and the JSON, and the
    events-not-processed finding when a source logs without its success marker."""
    from datetime import UTC, datetime

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    now = datetime.now(UTC).timestamp()

    def ts(ago: float) -> str:
        return datetime.fromtimestamp(now - ago, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    busy, stalled = tmp_path / "busy.log", tmp_path / "stalled.log"
    busy.write_text("".join(f"{ts(a)} INFO Event processed successfully\n" for a in range(120, 0, -10)))
    stalled.write_text(f"{ts(600)} INFO Event processed successfully\n"
                       + "".join(f"{ts(a)} INFO polling for events\n" for a in (200, 100, 30)))
    cfg = tmp_path / "warroom.toml"
    cfg.write_text(textwrap.dedent(f"""\
        [warroom]
        name = "ev"
        state_dir = "{tmp_path / 'state'}"
        [[logs]]
        name = "busy"
        path = "{busy}"
        success = ["Event processed successfully"]
        [[logs]]
        name = "stalled"
        path = "{stalled}"
        success = ["Event processed successfully"]
        success_silence = "5m"
        """))
    capsys.readouterr()
    code = cli.main(["health", "events", "--json", "--config", str(cfg)])
    doc = json.loads(capsys.readouterr().out)
    validate(doc)
    assert code == 1 and doc["status"] == "warn"
    [src] = doc["sources"]
    logs = {x["name"]: x for x in src["logs"]}
    assert logs["busy"]["success_per_min"] == pytest.approx(6.0, rel=0.1)  # 12 markers over ~2 min
    assert logs["stalled"]["success_per_min"] == 0.0 and logs["stalled"]["success_silent_for_s"] >= 590
    assert logs["stalled"]["last_success"] is not None
    [f] = doc["findings"]
    assert f["key"] == "logs:no-success:stalled" and f["severity"] == "P2"
    assert f["playbook"] == "events-not-processed"
    assert any("successes/min" in d for d in src["detail"])
    monkeypatch.setenv("COLUMNS", "220")  # one table row per line
    code = cli.main(["health", "events", "--config", str(cfg)])
    out = capsys.readouterr().out
    assert code == 1 and "0.0 successes/min (last 10 min ago)" in out
    assert "stalled logs but reports no success for 10m" in out
    row = next(ln for ln in out.splitlines() if ln.startswith("│ logs "))
    assert "WARN" in row  # the log hub's row carries its sources' findings


# --------------------------------------------------------------------------- health keeps its deadline


def test_health_unknown_area_exits_3_with_the_list_of_areas(capsys):
    capsys.readouterr()
    assert cli.main(["health", "bogus"]) == 3
    err = capsys.readouterr().err
    assert "unknown area 'bogus'" in err and "Traceback" not in err
    for area in ("all", "quick", "services", "database", "queues", "breakers", "chain", "events", "orders"):
        assert area in err
    assert cli.main(["health", "--json", "bogus"]) == 3
    out, err = capsys.readouterr()
    assert out == "" and "areas: all, quick" in err


def _hanging_rpc_config(tmp_path, srv: socket.socket, timeout: str = "1s") -> Path:
    """A chain whose only endpoint accepts connections and never answers."""
    cfg = tmp_path / "hang.toml"
    cfg.write_text(f'[chain.bad]\nendpoints = ["http://127.0.0.1:{srv.getsockname()[1]}"]\ntimeout = "{timeout}"\n')
    return cfg


def test_health_keeps_its_deadline_on_a_hanging_endpoint(tmp_path, capsys):
    import time

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)
        # the endpoint's own timeout (5 s) is longer than the command's: --timeout wins
        cfg = _hanging_rpc_config(tmp_path, srv, timeout="5s")
        t0 = time.monotonic()
        code, out, err = (cli.main(["health", "--json", "--timeout", "1", "--config", str(cfg)]),
                          *capsys.readouterr())
        took = time.monotonic() - t0
        assert code == 3 and took < 2.0, (code, took, err)
        doc = json.loads(out)
        validate(doc)
        [src] = doc["sources"]
        assert src["status"] == "unknown" and "did not answer within 1s" in src["reason"]
        # a real process, piped: ends within its timeout plus a second (and the start-up)
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "tui.cli", "health", "--timeout", "1.5", "--config", str(cfg)],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
        assert res.returncode == 3, res.stdout + res.stderr
        assert took < 1.5 + 1 + 1.0, took  # + interpreter start-up
        assert "UNKNOWN" in res.stdout and "Traceback" not in res.stderr


def test_health_hard_deadline_ends_a_blocked_loop():
    """When the loop itself is blocked (the 50 MB balance of issue 21 held it 621 s), a
    thread outside it ends the command at the deadline with UNKNOWN and a document."""
    import time

    code = textwrap.dedent("""
        import time
        from tui.cmd_health import HardDeadline
        HardDeadline("warroom health", "chain", True, 0.5).start()
        while True:  # a CPU-bound loop that never yields
            sum(range(1000))
    """)
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    took = time.monotonic() - t0
    assert res.returncode == 3 and took < 3.0, (res.returncode, took, res.stderr)
    doc = json.loads(res.stdout)
    validate(doc)
    assert doc["status"] == "unknown" and "no result within 0.5s" in doc["reason"]
    assert "UNKNOWN" in res.stderr
