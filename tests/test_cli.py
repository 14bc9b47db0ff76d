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
