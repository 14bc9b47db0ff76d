"""The `warroom` command line: lazy subcommands, help without heavy imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tui import cli


def test_help_lists_every_subcommand_with_its_one_line_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name, (_module, help_text) in cli.SUBCOMMANDS.items():
        assert name in out
        assert help_text.split()[0] in out
    for opt in ("--config", "--read-only", "--kiosk", "--theme"):
        assert opt in out


def test_help_imports_neither_textual_nor_subcommand_modules():
    code = textwrap.dedent("""
        import sys
        from tui.cli import main, SUBCOMMANDS
        try:
            main(["--help"])
        except SystemExit:
            pass
        heavy = [m for m in ("textual", "web3", "docker", "asyncpg", "redis", "psutil", "apprise")
                 if m in sys.modules]
        subs = [mod for mod, _h in SUBCOMMANDS.values() if mod in sys.modules]
        print("HEAVY", heavy, "SUBS", subs)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "HEAVY [] SUBS []" in res.stdout, res.stdout


def test_missing_subcommand_module_says_not_available_and_exits_3(monkeypatch, capsys):
    monkeypatch.setitem(cli.SUBCOMMANDS, "later", ("tui.cmd_does_not_exist_yet", "a later command"))
    assert cli.main(["later"]) == 3
    assert "not available yet" in capsys.readouterr().err


def test_subcommand_is_imported_lazily_and_dispatched(tmp_path, monkeypatch, capsys):
    (tmp_path / "wr_fake_cmd.py").write_text(textwrap.dedent("""
        def add_arguments(parser):
            parser.add_argument("--json", action="store_true")
            parser.add_argument("area", nargs="?")

        def run(args):
            print("RAN", args.area, args.json, args.config)
            return 7
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.SUBCOMMANDS, "fake", ("wr_fake_cmd", "a fake command"))
    assert "wr_fake_cmd" not in sys.modules
    assert cli.main(["--config", "x.toml", "fake", "--json", "queues"]) == 7
    assert "RAN queues True x.toml" in capsys.readouterr().out
    assert cli.main(["fake", "--config", "y.toml"]) == 7
    assert "RAN None False y.toml" in capsys.readouterr().out


def test_unknown_theme_is_rejected(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--theme", "neon"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_console_script_entry_point_help_runs():
    exe = [sys.executable, "-m", "tui.cli", "--help"]
    res = subprocess.run(exe, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "orders" in res.stdout


def test_a_closed_pipe_is_not_an_error(tmp_path, monkeypatch):
    (tmp_path / "wr_pipe_cmd.py").write_text(textwrap.dedent("""
        def add_arguments(parser):
            pass

        def run(args):
            raise BrokenPipeError(32, "Broken pipe")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.SUBCOMMANDS, "pipe", ("wr_pipe_cmd", "writes to a closed pipe"))
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from tui import cli
        cli.SUBCOMMANDS["pipe"] = ("wr_pipe_cmd", "x")
        sys.exit(cli.main(["pipe"]))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "Traceback" not in res.stderr


# --------------------------------------------------------------------------- global switches


def test_global_read_only_and_kiosk_survive_the_subcommand(tmp_path):
    """`warroom --kiosk serve`: serve's own --kiosk default (False) must not reset it;
    kiosk implies read-only for every subcommand."""
    import importlib

    for sub, extra in (("serve", []), ("orders", ["stuck"]), ("drill", []), ("health", [])):
        for flag in ("--kiosk", "--read-only"):
            argv = [flag, sub, *extra]
            parser, subparsers = cli.build_parser(sub)
            importlib.import_module(cli.SUBCOMMANDS[sub][0]).add_arguments(subparsers[sub])
            args = parser.parse_args(argv)
            cli.apply_read_only(args, argv, sub)
            assert args.read_only, argv
            assert args.kiosk == (flag == "--kiosk"), argv


# --------------------------------------------------------------------------- bulk-fix: the confirmed set


@pytest.fixture(scope="module")
def orders_stack(pg, redis_server, anvil, escrow, tmp_path_factory):
    from tests.harness.stack import build_stack

    s = build_stack(pg, redis_server, anvil, escrow, tmp_path_factory.mktemp("bulkset"), name="bulkset",
                    prefix="bs")
    yield s
    s.close()


def _wr(stack, capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([*argv, "--config", str(stack.config_path)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _fresh(stack, *ids: str) -> None:
    """Only `ids` are pending and old (5 days)."""
    stack.sql("UPDATE orders SET state = 'CANCELLED' WHERE state = 'PENDING' AND created_at < now() - interval '1 day'")
    for oid in ids:
        stack.sql("INSERT INTO orders (id, state, created_at) VALUES ($1, 'PENDING', now() - interval '5 days')", oid)


def _states(stack, *ids: str) -> list[str]:
    rows = {r["id"]: r["state"] for r in stack.sql("SELECT id, state FROM orders WHERE id = ANY($1)", list(ids))}
    return [rows[i] for i in ids]


def _refusals(stack) -> list[str]:
    from backends.engine.audit import AuditLog

    return [e["summary"] for e in AuditLog(stack.audit_path).entries() if e.get("result") == "refused"]


BULK = ("orders", "bulk-fix", "--older-than", "4d", "--state", "CANCELLED", "--reason", "expired", "--all-pending")


def _token(out: str) -> str:
    import re

    return re.search(r"confirmation token: ([0-9a-f]{12})", out).group(1)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.evm
def test_bulk_fix_token_fixes_exactly_the_previewed_set(orders_stack, capsys):
    from tui.cmd_orders import set_token

    s = orders_stack
    _fresh(s, "bs-a0", "bs-a1", "bs-a2")
    code, out, err = _wr(s, capsys, *BULK)
    assert code == 0, err
    token = _token(out)
    assert token == set_token(["bs-a0", "bs-a1", "bs-a2"])
    # new stuck orders arrive meanwhile: they neither block the fix nor get fixed unseen
    for oid in ("bs-new0", "bs-new1"):
        s.sql("INSERT INTO orders (id, state, created_at) VALUES ($1, 'PENDING', now() - interval '5 days')", oid)
    code, out, err = _wr(s, capsys, *BULK, "--execute", "--confirm", token)
    assert code == 0, out + err
    assert "left out: 2 stuck order(s) that arrived after the dry-run (bs-new0, bs-new1)" in out
    assert "ok: 3 fixed" in out
    assert _states(s, "bs-a0", "bs-a1", "bs-a2") == ["CANCELLED"] * 3
    assert _states(s, "bs-new0", "bs-new1") == ["PENDING"] * 2
    from backends.engine.audit import AuditLog

    last = [e for e in AuditLog(s.audit_path).entries() if e.get("action") == "orders.bulk_fix"][-1]
    assert last["result"] == "ok" and sorted(last["after"]["fixed"]) == ["bs-a0", "bs-a1", "bs-a2"]
    # the same token again: the previewed orders are done, nothing else is touched
    code, out, err = _wr(s, capsys, *BULK, "--execute", "--confirm", token)
    assert code == 2 and "none of the 3 order(s)" in err
    assert _states(s, "bs-new0", "bs-new1") == ["PENDING"] * 2


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.evm
def test_bulk_fix_count_only_for_an_unchanged_set(orders_stack, capsys):
    s = orders_stack
    _fresh(s, "bs-c0", "bs-c1", "bs-c2")
    code, out, err = _wr(s, capsys, *BULK)
    token = _token(out)
    s.sql("INSERT INTO orders (id, state, created_at) VALUES ('bs-c3', 'PENDING', now() - interval '5 days')")
    s.sql("UPDATE orders SET state = 'SETTLED' WHERE id = 'bs-c0'")  # someone else fixed one meanwhile
    n = len(_refusals(s))
    for count in ("3", "3"):  # the count the dry-run showed, and the count of the set now: both refused
        code, out, err = _wr(s, capsys, *BULK, "--execute", "--confirm", count)
        assert code == 2, out + err
        assert "the set changed since the dry-run (1 new stuck order(s): bs-c3; 1 no longer selected: bs-c0)" in err
        assert f"--confirm {token}" in err
    assert len(_refusals(s)) == n + 2  # audited
    assert _states(s, "bs-c1", "bs-c2", "bs-c3") == ["PENDING"] * 3
    # the token: the previewed orders still pending, and only those
    code, out, err = _wr(s, capsys, *BULK, "--execute", "--confirm", token)
    assert code == 0, out + err
    assert "skipped: 1 previewed order(s) no longer selected (bs-c0)" in out and "left out: 1" in out
    assert _states(s, "bs-c0", "bs-c1", "bs-c2", "bs-c3") == ["SETTLED", "CANCELLED", "CANCELLED", "PENDING"]
    # a new dry-run: the count works again for that unchanged set
    code, out, err = _wr(s, capsys, *BULK)
    assert code == 0 and "1 order(s) PENDING" in out
    code, out, err = _wr(s, capsys, *BULK, "--execute", "--confirm", "1")
    assert code == 0, out + err
    assert _states(s, "bs-c3") == ["CANCELLED"]


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.evm
def test_bulk_fix_unknown_token_is_refused(orders_stack, capsys):
    from tui.cmd_orders import set_token

    s = orders_stack
    _fresh(s, "bs-u0", "bs-u1")
    code, out, err = _wr(s, capsys, *BULK, "--execute", "--confirm", "0123456789ab")
    assert code == 2 and "confirmation does not match" in err
    assert f"--confirm {set_token(['bs-u0', 'bs-u1'])}" in err and "--confirm 2" in err
    assert _states(s, "bs-u0", "bs-u1") == ["PENDING"] * 2


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.evm
def test_bulk_fix_prompt_binds_the_set_shown_right_above(orders_stack, capsys, monkeypatch):
    """On a terminal the count is typed under the plan just printed: that set, even when an
    older dry-run (of another set) exists."""
    import tui.cmd_orders as orders

    s = orders_stack
    _fresh(s, "bs-p0")
    assert _wr(s, capsys, *BULK)[0] == 0  # an older dry-run: {bs-p0}
    s.sql("INSERT INTO orders (id, state, created_at) VALUES ('bs-p1', 'PENDING', now() - interval '5 days')")

    async def typed(prompt):
        return "2"

    monkeypatch.setattr(orders, "is_tty", lambda *a: True)
    monkeypatch.setattr(orders, "ask", typed)
    monkeypatch.setattr("tui.headless.is_tty", lambda *a: False)
    code, out, err = _wr(s, capsys, *BULK, "--execute")
    assert code == 0, out + err
    assert _states(s, "bs-p0", "bs-p1") == ["CANCELLED", "CANCELLED"]
