"""`warroom check --keys [SECTION]`: the configuration's keys listed from backends/config/schema.py
(default, secret flag, doc, type and limits), with no config read. Pure and fast (one subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from backends.config import schema
from backends.config.loader import _Loader
from tui import cmd_check

ROOT = Path(__file__).resolve().parents[1]


def _keys(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = cmd_check.main(["--keys", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_the_listing_is_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """Every section's header and every key's line (`key = default [secret]  # doc`) followed by
    what a value must be, in the schema's order: nothing left out, nothing added."""
    rc, out, err = _keys(capsys)
    assert rc == 0 and err == ""
    expected: list[str] = []
    for sec in schema.SECTIONS:
        if not sec.path:
            continue
        expected.append(f"{sec.header}  # {sec.doc}")
        if sec.free:
            expected.append(f"  {sec.free}")
        for k in sec.keys:
            if k.sub:
                expected.append(f"  {k.name}: {schema.SCHEMA[k.sub].header}  # {k.doc}")
            else:
                expected += [f"  {k.name} = {k.shown_default}{' [secret]' if k.secret else ''}  # {k.doc}",
                             f"      {k.expected}"]
    assert out.splitlines() == expected


def test_lines_show_defaults_secrets_types_and_limits(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _keys(capsys, "postgres")
    lines = out.splitlines()
    assert rc == 0 and lines[0] == "[postgres.NAME]  # a PostgreSQL database"
    assert lines[1] == "  dsn = (required) [secret]  # its DSN (secret: masked everywhere)"
    assert lines[2] == "      a URL starting with postgresql:// or postgres://"
    assert "  pool_max = 2  # connections in warroom's pool" in lines
    assert "      an integer between 1 and 100" in lines
    timeout = lines.index('  timeout = "3s"  # connect / query timeout')  # a duration as TOML writes it
    assert lines[timeout + 1].endswith("between 100ms and 10m")
    assert not any(line.startswith("[redis") for line in lines)
    _, out, _ = _keys(capsys, "redis")
    assert '  max_memory = "500MB"  # used memory that warns' in out.splitlines()
    _, out, _ = _keys(capsys, "chain")
    assert '  chain_id = (not set)  # the chain id the endpoints must report' in out
    assert "      an integer between -10 and 10" in out  # head_offset's limits


@pytest.mark.parametrize("query", ["chain", "[chain.NAME]", "chain.polygon", " chain "])
def test_a_section_brings_its_sub_tables(capsys: pytest.CaptureFixture[str], query: str) -> None:
    rc, out, _ = _keys(capsys, query)
    headers = [line for line in out.splitlines() if line.startswith("[")]
    assert rc == 0 and [h.split("  #")[0] for h in headers] == [
        "[chain.NAME]", "[[chain.NAME.contracts]]", "[[chain.NAME.balances]]", "[[chain.NAME.signers]]"]


@pytest.mark.parametrize("query", ["chain.signers", "chain.polygon.signers", "[[chain.NAME.signers]]"])
def test_a_sub_table_alone(capsys: pytest.CaptureFixture[str], query: str) -> None:
    rc, out, _ = _keys(capsys, query)
    lines = out.splitlines()
    assert rc == 0 and lines[0].startswith("[[chain.NAME.signers]]  # ")
    assert sum(line.startswith("[") for line in lines) == 1
    assert '  runway_min = "1d"  # 1m..90d: a shorter runway is a finding' in lines


@pytest.mark.parametrize("query", ["chain.max_answer", "chain.polygon.max_answer"])
def test_one_key(capsys: pytest.CaptureFixture[str], query: str) -> None:
    rc, out, _ = _keys(capsys, query)
    assert rc == 0 and out.splitlines() == [
        "[chain.NAME]  # a blockchain, read through JSON-RPC endpoints",
        '  max_answer = "1MB"  # bytes of one RPC answer; a bigger one makes the source DEGRADED',
        '      a size like "500MB", "2GB", "512KB" or a number of bytes, between 1KB and 256MB',
    ]


@pytest.mark.parametrize("query", ["chian", "chain.polygon.nope", "services.nope", "nope.timeout"])
def test_an_unknown_section_or_key_is_refused(capsys: pytest.CaptureFixture[str], query: str) -> None:
    rc, out, err = _keys(capsys, query)
    assert rc == cmd_check.EXIT_INVALID and out == ""
    assert f"no section or key {query!r} in the schema" in err and "sections: warroom, keys, postgres" in err
    if query == "chian":
        assert "did you mean 'chain'?" in err


def test_every_default_shown_is_written_as_toml_and_converts_back() -> None:
    """The listing's defaults are TOML a config could hold: each one read by tomllib and by the
    key's converter is the key's default ("2s" -> 2.0, "500MB" -> 524288000, "P2" -> Severity.P2)."""
    ld = _Loader("", "x.toml", ROOT, {})
    wrong = []
    for sec in schema.SECTIONS:
        for k in sec.keys:
            if k.sub or k.required or k.default is None:
                continue
            value = tomllib.loads(f"v = {k.shown_default}")["v"]
            back = k.converter(ld)(value)
            if back != k.default or type(back) is not type(k.default):
                wrong.append(f"[{sec.path}] {k.name} = {k.shown_default} -> {back!r}, default {k.default!r}")
    assert wrong == []


def test_the_command_line_lists_keys_without_a_config(tmp_path: Path) -> None:
    """`warroom check --keys` through tui.cli, with no config anywhere (and a $WARROOM_CONFIG
    that does not exist): it reads none."""
    env = {k: v for k, v in os.environ.items() if k != "WARROOM_CONFIG"}
    env.update(PYTHONPATH=str(ROOT), XDG_CONFIG_HOME=str(tmp_path / "xdg"),
               WARROOM_CONFIG=str(tmp_path / "missing.toml"))
    res = subprocess.run(
        [sys.executable, "-c", "import sys; from tui.cli import main; sys.exit(main())", "check", "--keys", "record"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == schema.describe(schema.select("record"), detail=True)
    assert '  max_size = "256MB"  # 1MB..1TB: the oldest part is dropped beyond it' in res.stdout
    res = subprocess.run(
        [sys.executable, "-c", "import sys; from tui.cli import main; sys.exit(main())", "check", "--keys", "recrod"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and "did you mean 'record'?" in res.stderr
