"""Checks of the configuration's meaning (backends/engine/semantic.py, `warroom check [--live]`).

Against the real things: the solc-compiled Escrow on the session anvil (its ABI file, release
events with order ids in each encoding), a solc-compiled AccessControl-style contract whose
revert carries a role id, apprise 2.x's own URL parser, programs looked up in a tmp PATH, and a
local aiohttp server answering JSON-RPC and JSON for the path / expect checks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import stat
import time
from pathlib import Path

import pytest

from backends.config import load_config
from backends.engine.semantic import (
    ERROR,
    NOTE,
    WARNING,
    check_config,
    classify_topic,
    static_problems,
)
from tests.harness import free_port

DSN = "postgresql://app:pw-semantic@127.0.0.1:1/orders"


def line_no(text: str, needle: str) -> int:
    for i, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in the config")


def write(tmp_path: Path, text: str, name: str = "warroom.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def orders_config(tmp_path: Path, url: str, address: str, abi: list, *, event: str = "EscrowReleased",
                  id_encoding: str = "bytes32-utf8", start_block: int = 0) -> str:
    (tmp_path / "Escrow.json").write_text(json.dumps({"abi": abi}))
    return f"""
[postgres.main]
dsn = "{DSN}"

[chain.local]
endpoints = ["{url}"]

[[chain.local.contracts]]
name = "escrow"
address = "{address}"
abi = "Escrow.json"

[orders]
postgres = "main"
chain = "local"
contract = "escrow"
event = "{event}"
id_encoding = "{id_encoding}"
start_block = {start_block}
"""


def problems_of(path: Path, *, live: bool = False, budget: float = 3.0, path_env: str | None = None):
    config = load_config(path)
    return asyncio.run(check_config(config, live=live, budget=budget, path_env=path_env))


# --------------------------------------------------------------------------- event vs ABI


def test_event_not_in_the_abi_is_an_error_naming_file_line_key(tmp_path, escrow, anvil):
    text = orders_config(tmp_path, anvil.url, escrow.address, escrow.abi, event="EscrowRelease")
    path = write(tmp_path, text)
    [p] = [p for p in problems_of(path) if p.key == "orders.event"]
    assert p.severity == ERROR and p.file == str(path) and p.line == line_no(text, "event =")
    assert "'EscrowRelease' is not in the ABI of contract 'escrow' (Escrow.json)" in p.message
    assert "did you mean 'EscrowReleased'?" in p.message
    assert "EscrowDeposited" in p.expected and "EscrowReleased" in p.expected
    assert p.render().startswith(f"{path}:{p.line}: key 'orders.event': event 'EscrowRelease'")


def test_an_event_of_the_abi_passes_and_one_without_indexed_id_does_not(tmp_path, escrow, anvil):
    path = write(tmp_path, orders_config(tmp_path, anvil.url, escrow.address, escrow.abi))
    assert [p for p in problems_of(path) if p.key == "orders.event"] == []
    path = write(tmp_path, orders_config(tmp_path, anvil.url, escrow.address, escrow.abi, event="Paused"))
    [p] = [p for p in problems_of(path) if p.key == "orders.event"]
    assert p.severity == ERROR and "Paused(address) has no indexed first argument" in p.message


def test_an_abi_file_that_cannot_be_read_is_an_error_at_its_key(tmp_path, escrow, anvil):
    text = orders_config(tmp_path, anvil.url, escrow.address, escrow.abi)
    (tmp_path / "Escrow.json").write_text('{"not": "an abi"}')
    path = write(tmp_path, text)
    config = load_config(path)
    [p] = static_problems(config)
    assert p.key == "chain.local.contracts[0].abi" and p.line == line_no(text, "abi =")
    assert p.severity == ERROR and "is not an ABI" in p.message
    (tmp_path / "Escrow.json").unlink()  # missing here: a warning (check may run off the ops box)
    [p] = static_problems(config)
    assert p.severity == WARNING and "cannot be read on this machine" in p.message


# --------------------------------------------------------------------------- id_encoding (live)


def _release_word(escrow, word: bytes) -> int:
    receipt = escrow._send(escrow.contract.functions.release(word, 1))
    return receipt["blockNumber"]


def test_id_encoding_matching_no_recent_event_says_which_would(tmp_path, escrow, anvil, capsys):
    first = anvil.block_number() + 1
    for n in (41001, 41002, 41003):  # order ids written as uint256 words
        _release_word(escrow, n.to_bytes(32, "big"))
    text = orders_config(tmp_path, anvil.url, escrow.address, escrow.abi, id_encoding="bytes32-utf8",
                         start_block=first)
    path = write(tmp_path, text)
    assert [p for p in problems_of(path) if p.key == "orders.id_encoding"] == []  # static: not asked
    t0 = time.monotonic()
    [p] = [p for p in problems_of(path, live=True) if p.key == "orders.id_encoding"]
    elapsed = time.monotonic() - t0
    assert p.severity == ERROR and p.line == line_no(text, "id_encoding =")
    assert "id_encoding 'bytes32-utf8' matches none of the 3 most recent EscrowReleased events" in p.message
    assert "3 as uint256" in p.message and "'41003'" in p.message
    assert p.expected == 'id_encoding = "uint256"'
    assert elapsed < 5, elapsed

    from tui import cmd_check

    assert cmd_check.run(argparse.Namespace(config=str(path))) == 0  # static only: passes
    assert "--live also checks" in capsys.readouterr().out
    assert cmd_check.run(argparse.Namespace(config=str(path), live=True, timeout=3.0)) == 2
    err = capsys.readouterr().err
    assert f"{path}:{p.line}: key 'orders.id_encoding': id_encoding 'bytes32-utf8' matches none" in err
    assert '(expected id_encoding = "uint256")' in err and "pw-semantic" not in err

    path = write(tmp_path, orders_config(tmp_path, anvil.url, escrow.address, escrow.abi,
                                         id_encoding="uint256", start_block=first))
    assert [p for p in problems_of(path, live=True) if p.key == "orders.id_encoding"] == []


def test_id_encoding_of_utf8_ids_passes_and_keccak_is_named(tmp_path, escrow, anvil):
    from backends.sources.evm import keccak

    first = anvil.block_number() + 1
    escrow.release("order-sem-1", 1)
    escrow.release("order-sem-2", 1)
    path = write(tmp_path, orders_config(tmp_path, anvil.url, escrow.address, escrow.abi, start_block=first))
    assert [p for p in problems_of(path, live=True) if p.key == "orders.id_encoding"] == []
    path = write(tmp_path, orders_config(tmp_path, anvil.url, escrow.address, escrow.abi,
                                         id_encoding="keccak", start_block=first))
    [p] = [p for p in problems_of(path, live=True) if p.key == "orders.id_encoding"]
    assert p.expected == 'id_encoding = "bytes32-utf8"' and "'order-sem-2'" in p.message

    first = anvil.block_number() + 1
    _release_word(escrow, keccak(b"order-hashed-1"))
    path = write(tmp_path, orders_config(tmp_path, anvil.url, escrow.address, escrow.abi, start_block=first))
    [p] = [p for p in problems_of(path, live=True) if p.key == "orders.id_encoding"]
    assert p.expected == 'id_encoding = "keccak"'


def test_id_encoding_with_no_event_is_a_note_and_an_unreachable_chain_a_warning(tmp_path, escrow, anvil):
    head = anvil.block_number()
    path = write(tmp_path, orders_config(tmp_path, anvil.url, escrow.address, escrow.abi,
                                         start_block=head + 1))
    [p] = [p for p in problems_of(path, live=True) if p.key == "orders.id_encoding"]
    assert p.severity == NOTE and "is past the chain head" in p.message
    escrow.deposit("order-sem-nothing", 1)  # a block with no release event
    path = write(tmp_path, orders_config(tmp_path, anvil.url, escrow.address, escrow.abi,
                                         start_block=head + 1))
    [p] = [p for p in problems_of(path, live=True) if p.key == "orders.id_encoding"]
    assert p.severity == NOTE and "no EscrowReleased event of contract 'escrow' in blocks" in p.message

    dead = f"http://127.0.0.1:{free_port()}"
    path = write(tmp_path, orders_config(tmp_path, dead, escrow.address, escrow.abi))
    t0 = time.monotonic()
    [p] = [p for p in problems_of(path, live=True, budget=2.0) if p.key == "orders.id_encoding"]
    assert p.severity == WARNING and "did not answer" in p.message and "not checked" in p.message
    assert time.monotonic() - t0 < 8


def test_classify_topic():
    assert classify_topic("0x" + b"abc".ljust(32, b"\0").hex()) == ("bytes32-utf8", "abc")
    assert classify_topic("0x" + (12345).to_bytes(32, "big").hex()) == ("uint256", "12345")
    assert classify_topic("0x" + "ab" * 32)[0] == "keccak"
    assert classify_topic("0x" + b"a b!".ljust(32, b"\0").hex(), re.compile(r"^[a-z]+$"))[0] == "keccak"


# --------------------------------------------------------------------------- programs on PATH


def _exe(path: Path, body: str = "#!/bin/sh\necho '{\"a\": {\"b\": [1, 2]}}'\n") -> Path:
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


PROGRAMS = """
[[checks]]
name = "gas"
kind = "command"
command = "gas-read"
path = "a.b[0]"

[[commands]]
name = "gas-read"
argv = ["gas-reader", "--json"]

[[commands]]
name = "drain"
argv = ["no-such-drainer-xyz", "--now"]

[[actions]]
name = "rotate"
argv = ["{bin}/rotate.sh"]

[[actions]]
name = "flush"
argv = ["{bin}/not-executable.sh"]
"""


def test_programs_not_on_path_are_named_with_their_users(tmp_path, capsys):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _exe(bindir / "gas-reader")
    _exe(bindir / "rotate.sh")
    (bindir / "not-executable.sh").write_text("#!/bin/sh\n")
    text = PROGRAMS.replace("{bin}", str(bindir))
    path = write(tmp_path, text)
    config = load_config(path)
    found = static_problems(config, path_env=str(bindir))
    by_key = {p.key: p for p in found}
    assert set(by_key) == {"commands[1].argv[0]", "actions[1].argv[0]"}, found
    drain = by_key["commands[1].argv[0]"]
    assert drain.severity == WARNING and drain.line == line_no(text, "no-such-drainer-xyz")
    assert "[[commands]] 'drain': program 'no-such-drainer-xyz' is not on PATH on this machine" in drain.message
    flush = by_key["actions[1].argv[0]"]
    assert "is not an executable file" in flush.message and flush.line == line_no(text, "not-executable")

    # the check's program missing: named with the check that uses it
    found = static_problems(config, path_env=str(tmp_path / "empty"))
    gas = next(p for p in found if p.key == "commands[0].argv[0]")
    assert "used by [[checks]] gas" in gas.message

    # warroom check: warnings print, exit 0; --strict fails
    from tui import cmd_check

    old = os.environ["PATH"]
    os.environ["PATH"] = str(bindir)
    try:
        assert cmd_check.run(argparse.Namespace(config=str(path))) == 0
        out = capsys.readouterr()
        assert f"{path}:{drain.line}: key 'commands[1].argv[0]': warning:" in out.err
        assert "config OK (2 warnings above)" in out.out
        assert cmd_check.run(argparse.Namespace(config=str(path), strict=True)) == 2
    finally:
        os.environ["PATH"] = old


# --------------------------------------------------------------------------- apprise channels

CHANNELS = """
[[services]]
name = "api"
kind = "http"
health_url = "http://127.0.0.1:1/health"

[escalation]
[[escalation.levels]]
name = "oncall"
channels = [
  "json://127.0.0.1:1/hook",
  "slakc://T0000/B0000/XXXXsecretXXXX",
  "mailto://",
]

[[escalation.levels]]
name = "managers"
after = "30m"
channels = ["ntfy://127.0.0.1:1/warroom", "not a url at all"]
"""


def test_channel_urls_apprise_cannot_load_are_errors_without_the_secret(tmp_path, capsys):
    import apprise

    path = write(tmp_path, CHANNELS)
    found = static_problems(load_config(path))
    by_key = {p.key: p for p in found}
    assert set(by_key) == {"escalation.levels[0].channels[1]", "escalation.levels[0].channels[2]",
                           "escalation.levels[1].channels[1]"}, found
    typo = by_key["escalation.levels[0].channels[1]"]
    assert typo.severity == ERROR and typo.line == line_no(CHANNELS, "slakc://")
    assert "scheme slakc:// is not one apprise knows (did you mean slack://?)" in typo.message
    mail = by_key["escalation.levels[0].channels[2]"]
    assert "apprise cannot load this mailto:// URL" in mail.message and mail.line == line_no(CHANNELS, '"mailto://"')
    assert "is not a URL" in by_key["escalation.levels[1].channels[1]"].message
    # the same verdicts as apprise's own parser
    assert apprise.Apprise().add("json://127.0.0.1:1/hook") and not apprise.Apprise().add("mailto://")

    from tui import cmd_check

    assert cmd_check.run(argparse.Namespace(config=str(path))) == 2
    err = capsys.readouterr().err
    assert "3 errors in configuration" in err and "XXXXsecretXXXX" not in err


# --------------------------------------------------------------------------- JSON paths (live)


class JsonServer:
    """aiohttp on 127.0.0.1, port 0, in its own thread: /rpc (JSON-RPC), /state (JSON), /html."""

    def __init__(self) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10), "aiohttp server did not start"

    def _run(self, ready) -> None:
        from aiohttp import web

        async def rpc(request):
            body = await request.json()
            result = {"status": {"height": 120, "peers": [{"id": "a"}]}}
            return web.json_response({"jsonrpc": "2.0", "id": body.get("id"), "result": result})

        async def state(request):
            return web.json_response({"paused": False, "owner": "0xabc"})

        async def html(request):
            return web.Response(text="<html>ok</html>", content_type="text/html")

        async def start():
            app = web.Application()
            app.router.add_post("/rpc", rpc)
            app.router.add_get("/state", state)
            app.router.add_get("/html", html)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]

        self.loop.run_until_complete(start())
        ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop)
        fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def json_server():
    server = JsonServer()
    yield server
    server.close()


def json_checks(url: str, dead: str, bindir: Path) -> str:
    return f"""
[[checks]]
name = "height"
kind = "jsonrpc"
url = "{url}/rpc"
method = "status"
path = "status.height"

[[checks]]
name = "peer"
kind = "jsonrpc"
url = "{url}/rpc"
method = "status"
path = "status.peers.3.id"

[[checks]]
name = "typo"
kind = "jsonrpc"
url = "{url}/rpc"
method = "status"
path = "stauts.height"

[[checks]]
name = "paused"
kind = "http"
url = "{url}/state"
expect = '{{"paused": false}}'

[[checks]]
name = "page"
kind = "http"
url = "{url}/html"
expect = '{{"ok": true}}'

[[checks]]
name = "whole"
kind = "http"
url = "{url}/state"
expect = '{{"paused": false, "owner": "0xabc"}}'

[[checks]]
name = "down"
kind = "jsonrpc"
url = "{dead}/rpc"
method = "status"
path = "status.height"

[[checks]]
name = "gas"
kind = "command"
command = "gas-read"
path = "a.c"

[[checks]]
name = "gas-ok"
kind = "command"
command = "gas-read"
path = "a.b[1]"

[[checks]]
name = "ignored"
kind = "http"
url = "{url}/state"
path = "paused"

[[commands]]
name = "gas-read"
argv = ["{bindir}/gas-reader"]
"""


def test_json_paths_and_expects_against_one_live_answer(tmp_path, json_server):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _exe(bindir / "gas-reader")
    dead = f"http://127.0.0.1:{free_port()}"
    text = json_checks(json_server.url, dead, bindir)
    path = write(tmp_path, text)
    static = {p.key: p for p in problems_of(path)}
    assert set(static) == {"checks[9].path"}  # an http check reads no path
    assert static["checks[9].path"].severity == WARNING and "it is ignored" in static["checks[9].path"].message

    t0 = time.monotonic()
    found = {p.key: p for p in problems_of(path, live=True, budget=2.0)}
    assert time.monotonic() - t0 < 8
    assert set(found) == {"checks[1].path", "checks[2].path", "checks[3].expect", "checks[4].expect",
                          "checks[6].path", "checks[7].path", "checks[9].path"}, found
    peer = found["checks[1].path"]
    assert peer.severity == ERROR and peer.line == line_no(text, 'path = "status.peers.3.id"')
    assert "status.peers is a list of 1: no element '3'" in peer.message
    typo = found["checks[2].path"]
    assert "the answer is an object with keys status: no key 'stauts'" in typo.message
    paused = found["checks[3].expect"]
    assert paused.severity == ERROR and "can never equal the answer: it also has 'owner'" in paused.message
    page = found["checks[4].expect"]
    assert "not JSON" in page.message and "text/html" in page.message
    down = found["checks[6].path"]
    assert down.severity == WARNING and "no live answer to check path against" in down.message
    gas = found["checks[7].path"]
    assert gas.severity == ERROR and "no key 'c'" in gas.message and "[[commands]] 'gas-read'" in gas.message


# --------------------------------------------------------------------------- AccessControl roles

ROLES_SOL = """
// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

contract Escrow {
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");
    bytes32 public constant BRIDGE_KEEPER_ROLE = keccak256("BRIDGE_KEEPER_ROLE");
    error AccessControlUnauthorizedAccount(address account, bytes32 neededRole);

    function pause() external view {
        revert AccessControlUnauthorizedAccount(msg.sender, PAUSER_ROLE);
    }

    function keep() external view {
        revert AccessControlUnauthorizedAccount(msg.sender, BRIDGE_KEEPER_ROLE);
    }

    function admin() external view {
        revert AccessControlUnauthorizedAccount(msg.sender, bytes32(0));
    }

    function v4() external pure {
        revert("AccessControl: account 0x70997970c51812dc3a010c7d01b50e0d17dc79c8 is missing role 0x65d7a28e3265b37a6474929f336521b332c1681b933f6cb9f3376673440d862a");
    }
}
"""


@pytest.fixture(scope="module")
def roles_contract(anvil, tmp_path_factory):
    from tests.harness.evm import EscrowDeployment
    from tests.harness.solc import compile_escrow, find_solcjs

    if find_solcjs() is None:
        from tests.harness import in_ci

        if in_ci():
            pytest.fail("CI=true and solcjs is missing")
        pytest.skip("solcjs not found")
    src = tmp_path_factory.mktemp("roles") / "Escrow.sol"
    src.write_text(ROLES_SOL)
    return EscrowDeployment(anvil, artifact=compile_escrow(src))


async def _revert_text(url: str, address: str, selector_sig: str, abi: list) -> str:
    from backends.sources.evm import decode_revert, keccak
    from backends.sources.jsonrpc import HttpRpc, RpcError

    rpc = HttpRpc(url, timeout=5, source="test")
    data = "0x" + keccak(selector_sig.encode())[:4].hex()
    try:
        await rpc.call("eth_call", [{"to": address, "data": data, "from": "0x" + "11" * 20}, "latest"])
    except RpcError as exc:
        return decode_revert(abi, exc)
    finally:
        await rpc.aclose()
    raise AssertionError("the call did not revert")


async def test_access_control_roles_are_shown_by_name_never_as_a_number(anvil, roles_contract, tmp_path):
    from backends.sources.evm import chain_spec_from_config

    digits = re.compile(r"\b\d{30,}\b")  # a 77-digit number (not the digits of a 0x word)
    abi = roles_contract.abi
    no_errors = [i for i in abi if i.get("type") != "error"]  # a trimmed ABI: OZ v5's errors are known
    for a in (abi, no_errors):
        said = await _revert_text(anvil.url, roles_contract.address, "pause()", a)
        assert said == "AccessControlUnauthorizedAccount(0x1111111111111111111111111111111111111111, PAUSER_ROLE)"
        said = await _revert_text(anvil.url, roles_contract.address, "admin()", a)
        assert said.endswith(", DEFAULT_ADMIN_ROLE)")
    said = await _revert_text(anvil.url, roles_contract.address, "keep()", abi)
    assert not digits.search(said) and re.search(r", 0x[0-9a-f]{64}\)$", said), said  # unknown: hex
    said = await _revert_text(anvil.url, roles_contract.address, "v4()", abi)
    assert said.endswith("is missing role PAUSER_ROLE"), said

    # names from config: [[chain.X.contracts]] roles
    text = f"""
[chain.local]
endpoints = ["{anvil.url}"]

[[chain.local.contracts]]
name = "bridge"
address = "{roles_contract.address}"
roles = ["BRIDGE_KEEPER_ROLE"]
"""
    chain_spec_from_config(load_config(write(tmp_path, text)), "local")
    said = await _revert_text(anvil.url, roles_contract.address, "keep()", abi)
    assert said.endswith(", BRIDGE_KEEPER_ROLE)"), said


async def test_a_check_reading_a_role_id_shows_its_name(anvil, roles_contract):
    from types import SimpleNamespace

    from backends.model import Severity
    from backends.sources.checks import ValueCheck
    from backends.sources.evm import keccak

    data = "0x" + keccak(b"PAUSER_ROLE()")[:4].hex()
    cfg = SimpleNamespace(name="pauser-role", kind="jsonrpc", url=anvil.url, method="eth_call",
                          params=({"to": roles_contract.address, "data": data}, "latest"), path=None,
                          interval=None, timeout=5.0, severity=Severity.P2, playbook=None,
                          warn_above=None, crit_above=None, warn_below=None, crit_below=None)
    check = ValueCheck(cfg)
    try:
        [r] = await check.poll()
    finally:
        await check.aclose()
    assert r.value == "PAUSER_ROLE" and r.detail == "value 'PAUSER_ROLE'"


# --------------------------------------------------------------------------- the console at start


async def test_console_start_notifies_the_problems_off_the_loop(tmp_path, escrow, anvil):
    from tests.test_app import make_engine
    from tui.app import WarroomApp

    text = orders_config(tmp_path, anvil.url, escrow.address, escrow.abi, event="EscrowRelease")
    text += '\n[[commands]]\nname = "drain"\nargv = ["no-such-drainer-xyz"]\n'
    path = write(tmp_path, text)
    config = load_config(path)
    app = WarroomApp(make_engine(tmp_path), config=config)
    app.config_check_s = 2.0
    async with app.run_test(size=(160, 48)) as pilot:
        deadline = time.monotonic() + 15
        while app.config_problems is None or not any(n.title.startswith("config:") for n in app._notifications):
            assert time.monotonic() < deadline, "no config check (and its notice) at start"
            await pilot.pause(0.05)
        notes = [n for n in app._notifications if n.title.startswith("config:")]
        assert len(notes) == 1, [n.message for n in app._notifications]
        note = notes[0]
        assert note.severity == "error" and "(1 error)" in note.title
        assert f"{path}:{line_no(text, 'event =')}: key 'orders.event'" in note.message
        assert "no-such-drainer-xyz" in note.message


async def test_an_orders_source_whose_event_is_not_in_the_abi_is_degraded_never_fine(tmp_path, escrow, anvil):
    """The same misconfiguration seen by the engine: the orders source does not poll with a
    guessed event signature (which found no release and looked healthy); it is DEGRADED
    with the reason, every poll, until the config is fixed."""
    from backends.engine.core import build_engine
    from backends.model import SourceState

    text = orders_config(tmp_path, anvil.url, escrow.address, escrow.abi, event="EscrowRelease")
    config = load_config(write(tmp_path, text.replace('[warroom]', '') + f'\n[warroom]\nstate_dir = "{tmp_path}"\n'))
    engine = build_engine(config, with_logs=False)
    try:
        snap = await engine.monitor.poll_once()
        st = snap.sources["orders"]
        assert st.state is SourceState.DEGRADED
        assert "[orders] event 'EscrowRelease' is not in the ABI of contract 'escrow'" in st.reason
        assert "EscrowReleased" in st.reason and "releases cannot be verified" in st.reason
        assert any(f.source == "orders" for f in snap.findings)  # a degraded source is a finding
    finally:
        await engine.stop()
