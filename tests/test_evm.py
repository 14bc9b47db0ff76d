"""EVM chain on real anvil nodes + the Escrow contract: health, failover, faults, pause, balances."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from decimal import Decimal

import pytest

from backends.actions.base import ActionEngine
from backends.engine.audit import AuditLog
from backends.engine.rules import evaluate
from backends.errors import ActionRefused
from backends.model import Severity, Snapshot
from backends.sources.evm import (
    ContractPauseAction,
    EvmChain,
    abi_fingerprint,
    chain_actions,
    format_amount,
)
from backends.sources.jsonrpc import BalanceSpec, ChainSpec, ContractSpec, display_url

pytestmark = [pytest.mark.evm]


def chain_of(*urls, name="local", chain_id=31337, **kw) -> EvmChain:
    kw.setdefault("max_head_age", None)
    kw.setdefault("timeout", 2.0)
    return EvmChain(ChainSpec(name=name, endpoints=tuple(urls), chain_id=chain_id, **kw))


def findings(reading):
    return {f.key: f for f in evaluate(Snapshot(readings={reading.source: (reading,)}))}


@contextlib.asynccontextmanager
async def fake_server(behaviour: str):
    """A local socket that misbehaves: 'hang' accepts and never answers; '503' answers
    HTTP 503; 'rpc-error' answers every JSON-RPC request with an error object."""

    async def handle(reader, writer):
        try:
            if behaviour == "hang":
                await asyncio.sleep(3600)
            await reader.readuntil(b"\r\n\r\n")
            if behaviour == "503":
                body = b"busy"
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\n" + body)
            else:
                body = json.dumps({"jsonrpc": "2.0", "id": 1,
                                   "error": {"code": -32005, "message": "rate limited"}}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1)


# --------------------------------------------------------------------------- health


async def test_health_contract_and_balances(anvil, escrow):
    ch = chain_of(
        anvil.url,
        contracts=(ContractSpec(name="escrow", address=escrow.address, abi=tuple(escrow.abi)),
                   ContractSpec(name="ghost", address="0x000000000000000000000000000000000000dEaD", abi=())),
        balances=(BalanceSpec(name="arbiter", address=anvil.accounts[1], minimum=10**18),
                  BalanceSpec(name="gasbank", address="0x0000000000000000000000000000000000000042",
                              minimum=5 * 10**17)),
    )
    (r,) = await ch.poll()
    (e,) = r.endpoints
    assert e.ok and e.active and e.head == anvil.block_number() and e.chain_id == 31337 and e.chain_id_ok
    assert e.latency_ms is not None and e.latency_ms > 0 and e.error_rate == 0.0
    assert e.head_age_s is not None and e.block_hash.startswith("0x")
    esc, ghost = r.contracts
    assert esc.code_present is True and esc.paused is False
    assert esc.abi_fingerprint == abi_fingerprint(escrow.abi) and len(esc.abi_fingerprint) == 64
    assert ghost.code_present is False
    arb, bank = r.balances
    assert arb.balance > 10**18 and arb.status.value == "ok" and arb.display.endswith(" ETH")
    assert bank.balance == 0 and bank.status.value == "crit"
    fs = findings(r)
    assert fs["contract-missing:local:ghost"].severity is Severity.P0
    assert fs["gas-low:local:gasbank"].playbook == "gas-low"
    assert "gas-low:local:arbiter" not in fs
    assert not [k for k in fs if k.startswith("rpc-")]
    # paused contract is reported (info)
    escrow.pause()
    (r,) = await ch.poll()
    assert r.contracts[0].paused is True
    assert findings(r)["contract-paused:local:escrow"].severity is Severity.P3
    escrow.unpause()
    await ch.aclose()


async def test_abi_fingerprint_is_canonical(escrow):
    shuffled = [dict(reversed(list(item.items()))) for item in reversed(escrow.abi)]
    assert abi_fingerprint(shuffled) == abi_fingerprint(escrow.abi)
    assert abi_fingerprint(escrow.abi[1:]) != abi_fingerprint(escrow.abi)
    assert format_amount(15 * 10**17) == "1.5 ETH" and format_amount(0) == "0 ETH"
    assert display_url("https://user:pw@eth.example/v2/Evm0nlyK3yQ7wTzPpLmNxRs") == \
        "https://user:********@eth.example/v2/***"


async def test_wrong_chain_id_is_p0():
    from tests.harness.evm import start_anvil

    node = start_anvil(chain_id=1)
    try:
        ch = chain_of(node.url, chain_id=137)
        (r,) = await ch.poll()
        e = r.endpoints[0]
        assert e.chain_id == 1 and e.chain_id_ok is False and not e.ok
        f = findings(r)["rpc-wrong-chain:local:rpc1"]
        assert f.severity is Severity.P0 and "expected 137" in f.summary
        await ch.aclose()
    finally:
        node.stop()


async def test_lag_and_disagreement_between_nodes():
    from tests.harness.evm import start_anvil

    a = start_anvil()
    b = start_anvil(extra_args=["--fork-url", a.url])  # b's block 0 is a's block 0
    try:
        a.mine(20)
        ch = chain_of(a.url, b.url, max_lag=5)
        (r,) = await ch.poll()
        ea, eb = r.endpoints
        assert ea.lag == 0 and eb.lag == 20 and not eb.ok and "behind" in eb.error
        fs = findings(r)
        assert "rpc-lag:local:rpc2" in fs
        assert not r.disagreement  # they agree at block 0
        # a different block 1 on b: the hashes at the common height differ
        b.rpc("eth_sendTransaction", [{"from": b.accounts[0], "to": b.accounts[1], "value": "0x1"}])
        b.mine(2)
        (r,) = await ch.poll()
        assert r.disagreement and "disagree on block 3" in r.disagreement
        assert findings(r)["rpc-disagree:local"].severity is Severity.P1
        await ch.aclose()
    finally:
        a.stop()
        b.stop()


# --------------------------------------------------------------------------- faults and failover


async def test_failover_when_active_node_stops(tmp_path):
    from tests.harness.evm import start_anvil

    n1 = start_anvil()
    n2 = start_anvil(extra_args=["--fork-url", n1.url])  # same chain: agrees with n1
    audit = AuditLog(tmp_path / "audit.jsonl")
    try:
        ch = EvmChain(ChainSpec(name="main", endpoints=(n1.url, n2.url), chain_id=31337,
                                max_head_age=None, timeout=2.0), audit=audit)
        (r,) = await ch.poll()
        assert [e.active for e in r.endpoints] == [True, False] and all(e.ok for e in r.endpoints)
        assert not r.disagreement
        n1.stop()
        (r,) = await ch.poll()
        e1, e2 = r.endpoints
        # the stopped node is refused at once, never waited on for its 2 s timeout: the poll's
        # own verdict says which (no wall-clock bound, which a loaded box broke)
        assert not e1.ok and "connection refused" in e1.error and "timed out" not in e1.error
        assert e2.active and e2.ok and r.active_url == display_url(n2.url)
        assert await ch.head() >= 0  # requests now go to the backup
        assert await audit.flush()  # automatic switches are written in the background
        entry = audit.tail(1)[0]
        assert entry["action"] == "chain.failover" and entry["params"]["automatic"] is True
        assert entry["before"] == display_url(n1.url) and entry["after"] == display_url(n2.url)
        assert "failed its check" in entry["reason"]
        fs = findings(r)
        assert fs["rpc-failure:main:rpc1"].severity is Severity.P2  # down, but no longer active
        n2.stop()
        (r,) = await ch.poll()
        fs = findings(r)
        assert fs["rpc-failure:main"].severity is Severity.P0 and "all 2" in fs["rpc-failure:main"].summary
        assert len(audit.tail(10)) == 1  # no switch when nothing is healthy
        await ch.aclose()
    finally:
        n1.stop()
        n2.stop()


async def test_failover_disabled_or_pinned_stays(tmp_path, anvil):
    ch = chain_of("http://127.0.0.1:9", anvil.url, failover=False)
    (r,) = await ch.poll()
    assert r.endpoints[0].active and not r.endpoints[0].ok
    assert findings(r)["rpc-failure:local:rpc1"].severity is Severity.P1  # the active one is down
    await ch.aclose()
    ch = chain_of("http://127.0.0.1:9", anvil.url, failover_after=2)
    (r,) = await ch.poll()
    assert r.endpoints[0].active  # one failed check is not enough
    (r,) = await ch.poll()
    assert r.endpoints[1].active
    await ch.aclose()


async def test_manual_failover_and_pin_are_audited(tmp_path, anvil):
    from tests.harness.evm import start_anvil

    other = start_anvil(extra_args=["--fork-url", anvil.url])
    try:
        ch = chain_of(anvil.url, other.url)
        await ch.poll()
        eng = ActionEngine(AuditLog(tmp_path / "audit.jsonl"), operator="carol")
        for a in chain_actions({"local": ch}):
            eng.register(a)
        plan = await eng.plan("chain.failover", reason="provider maintenance")
        assert plan.changes[0].before == display_url(anvil.url) and plan.changes[0].after == display_url(other.url)
        res = await eng.execute(plan, confirmation="yes")
        assert res.status == "ok" and ch.endpoints.active.url == other.url
        # pin the first one again: automatic failover stops
        plan = await eng.plan("chain.pin", to="rpc1", reason="known good")
        res = await eng.execute(plan, confirmation="yes")
        assert res.status == "ok" and ch.endpoints.pinned and ch.endpoints.active.url == anvil.url
        (r,) = await ch.poll()
        assert r.endpoints[0].pinned and r.endpoints[0].active
        with pytest.raises(ActionRefused):
            await eng.plan("chain.failover", to="nope")
        with pytest.raises(ActionRefused):
            await eng.plan("chain.pin", chain="other")
        actions = [e["action"] for e in eng.audit.tail(10)]
        assert actions == ["chain.failover", "chain.pin"]
        assert eng.audit.tail(1)[0]["operator"] == "carol"
        # pinned to a dead endpoint: no automatic switch
        other.stop()
        plan = await eng.plan("chain.pin", to="rpc2", reason="testing")
        await eng.execute(plan, confirmation="yes")
        (r,) = await ch.poll()
        assert r.endpoints[1].active and not r.endpoints[1].ok
        await ch.aclose()
    finally:
        other.stop()


@pytest.mark.parametrize("behaviour", ["hang", "503", "rpc-error"])
async def test_misbehaving_endpoint_is_down_and_failover_happens(anvil, behaviour):
    async with fake_server(behaviour) as url:
        ch = chain_of(url, anvil.url, timeout=0.5)
        t0 = time.monotonic()
        (r,) = await ch.poll()
        elapsed = time.monotonic() - t0
        bad, good = r.endpoints
        assert elapsed < 2.0
        assert not bad.ok and bad.head is None
        expected = {"hang": "timed out", "503": "HTTP 503", "rpc-error": "rate limited"}[behaviour]
        assert expected in bad.error
        assert good.ok and good.active  # failed over
        assert bad.error_rate == 1.0
        await ch.aclose()


async def test_source_poll_respects_timeout_when_everything_hangs():
    async with fake_server("hang") as url:
        ch = chain_of(url, timeout=0.3)
        t0 = time.monotonic()
        (r,) = await ch.poll()
        assert time.monotonic() - t0 < 1.5
        assert "timed out" in r.endpoints[0].error
        assert findings(r)["rpc-failure:local"].severity is Severity.P0
        await ch.aclose()


# --------------------------------------------------------------------------- pause / unpause


def pausable_chain(anvil, escrow, **kw) -> EvmChain:
    return chain_of(anvil.url, contracts=(ContractSpec(name="escrow", address=escrow.address,
                                                       abi=tuple(escrow.abi)),), **kw)


async def test_pause_and_unpause_with_env_key(anvil, escrow, tmp_path):
    ch = pausable_chain(anvil, escrow, signer_env="ESCROW_OWNER_KEY")
    env = {"ESCROW_OWNER_KEY": escrow.owner_key}
    eng = ActionEngine(AuditLog(tmp_path / "audit.jsonl"), operator="dave")
    eng.register(ContractPauseAction({"local": ch}, pause=True, env=env))
    eng.register(ContractPauseAction({"local": ch}, pause=False, env=env))
    plan = await eng.plan("chain.pause", reason="exploit suspected")
    assert plan.guard.ok, plan.guard
    assert plan.changes[0].before is False and plan.changes[0].after is True
    tx = plan.changes[1].after
    assert tx["to"] == escrow.address and tx["data"] == "0x8456cb59" and tx["chainId"] == 31337
    assert "eth_call" in tx and "ok" in tx["eth_call"] and "dry-run: eth_call" in plan.preview
    assert plan.params["sender"].lower() == escrow.owner.lower()
    with pytest.raises(ActionRefused):
        await eng.execute(plan, confirmation="yes")  # typed: the contract name
    progress = []
    res = await eng.execute(plan, confirmation="escrow", progress=progress.append)
    assert res.status == "ok", res.summary
    assert escrow.paused() is True and res.after["paused"] is True
    assert [p.done for p in progress] == [0, 1, 2, 3, 4]
    # pausing again: the guard is red
    again = await eng.plan("chain.pause", reason="twice")
    assert not again.guard.ok and "already" in again.guard.detail
    plan = await eng.plan("chain.unpause", reason="resolved")
    res = await eng.execute(plan, confirmation="escrow")
    assert res.status == "ok" and escrow.paused() is False
    text = (tmp_path / "audit.jsonl").read_text()
    assert escrow.owner_key[2:] not in text
    await ch.aclose()


async def test_pause_simulation_reverts_for_non_owner(anvil, escrow, tmp_path):
    ch = pausable_chain(anvil, escrow, signer_env="K")
    eng = ActionEngine(AuditLog(tmp_path / "audit.jsonl"))
    eng.register(ContractPauseAction({"local": ch}, pause=True, env={"K": anvil.keys[3]}))
    plan = await eng.plan("chain.pause", reason="test")
    assert not plan.guard.ok and "reverted: NotOwner(" in plan.guard.detail
    assert anvil.accounts[3].lower() in plan.guard.detail.lower()
    res = await eng.execute(plan, confirmation="escrow")
    assert res.status == "refused"
    assert escrow.paused() is False
    # no signer configured / key missing / not pausable
    with pytest.raises(ActionRefused):
        await ContractPauseAction({"local": pausable_chain(anvil, escrow)}, env={}).plan(reason="x")
    with pytest.raises(ActionRefused):
        await ContractPauseAction({"local": pausable_chain(anvil, escrow, signer_env="NOPE")}, env={}).plan(reason="x")
    plain = chain_of(anvil.url, signer_env="K", contracts=(ContractSpec(name="escrow", address=escrow.address, abi=()),))
    with pytest.raises(ActionRefused):
        await ContractPauseAction({"local": plain}, env={"K": anvil.keys[0]}).plan(contract="escrow", reason="x")
    await ch.aclose()


async def test_pause_with_encrypted_keystore(anvil, escrow, tmp_path):
    from eth_account import Account

    password = "correct horse battery staple"
    ks = tmp_path / "owner.json"
    ks.write_text(json.dumps(Account.encrypt(escrow.owner_key, password, kdf="pbkdf2", iterations=1000)))
    asked = []

    def provider(path):
        asked.append(path)
        return password

    ch = pausable_chain(anvil, escrow, keystore=str(ks))
    eng = ActionEngine(AuditLog(tmp_path / "audit.jsonl"))
    eng.register(ContractPauseAction({"local": ch}, pause=True, password_provider=provider))
    plan = await eng.plan("chain.pause", reason="drill")
    assert plan.guard.ok and not asked  # the password is asked only when signing
    res = await eng.execute(plan, confirmation="escrow")
    assert res.status == "ok" and escrow.paused() is True and asked == [str(ks)]
    escrow.unpause()
    # a wrong password is refused and nothing is sent
    eng.register(ContractPauseAction({"local": ch}, pause=True, password_provider=lambda p: "wrong"))
    plan = await eng.plan("chain.pause", reason="drill 2")
    res = await eng.execute(plan, confirmation="escrow")
    assert res.status == "refused" and "wrong keystore password" in res.summary
    assert escrow.paused() is False
    text = (tmp_path / "audit.jsonl").read_text()
    assert password not in text and "wrong" not in text.replace("wrong keystore password", "")
    await ch.aclose()


async def test_block_at_time_binary_search():
    from tests.harness.evm import start_anvil

    node = start_anvil()
    ch = chain_of(node.url)
    try:
        node.rpc("anvil_mine", ["0x64", "0x3c"])  # 100 blocks, 60 s apart
        head = await ch.head()
        ts = {n: int((await ch.block(n))["timestamp"], 16) for n in (0, 1, 50, 51, head)}
        # searched at the start of the minute: never later than the true answer, at most one
        # 60-second block earlier
        for query, true in ((ts[50] + 30, 50), (ts[51], 51)):
            got = await ch.block_at_time(query, head)
            assert got in (true - 1, true)
            assert int((await ch.block(got))["timestamp"], 16) <= query
        assert await ch.block_at_time(ts[0] - 1, head) == 0
        assert await ch.block_at_time(ts[head] + 10**6, head) == head
        # the verifier scans from the block at the orders' creation time (minus its margin)
        from datetime import UTC, datetime

        from backends.model import Order
        from backends.sources.orders import ReleaseVerifier

        seen = []

        async def spy(address, topics, a, b, **kw):
            seen.append((a, b))
            return []

        ch.get_logs_chunked = spy
        v = ReleaseVerifier(ch, address="0x" + "11" * 20, confirmations=1, time_margin_s=60)
        created = datetime.fromtimestamp(ts[50] + 90, UTC)
        out = await v.verify([Order(id="t1", state="PENDING", created_at=created)])
        assert seen[0][0] in (49, 50) and seen[0][1] == head and out["t1"].checked_to_block == head
    finally:
        await ch.aclose()
        node.stop()


async def test_pause_works_while_the_active_endpoint_is_down(anvil, escrow, tmp_path):
    """Seed 004: RPC failure and an exploit at once: pausing must not wait for failover."""
    ch = chain_of("http://127.0.0.1:9", anvil.url, failover=False, signer_env="K",
                  contracts=(ContractSpec(name="escrow", address=escrow.address, abi=tuple(escrow.abi)),))
    (r,) = await ch.poll()
    assert r.endpoints[0].active and not r.endpoints[0].ok and r.endpoints[1].ok
    eng = ActionEngine(AuditLog(tmp_path / "audit.jsonl"))
    eng.register(ContractPauseAction({"local": ch}, pause=True, env={"K": escrow.owner_key}))
    plan = await eng.plan("chain.pause", reason="exploit while rpc1 is down")
    assert plan.guard.ok
    res = await eng.execute(plan, confirmation="escrow")
    assert res.status == "ok", res.summary
    assert escrow.paused() is True
    escrow.unpause()
    # reads that must come from one node do not fall back
    from backends.errors import BackendError

    with pytest.raises(BackendError):
        await ch.head()
    await ch.aclose()


# --------------------------------------------------------------------------- ERC-20 balances

TOKEN_SOURCE = """\
// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// The ERC-20 reads warroom uses (balanceOf, decimals, symbol), mintable by anyone (tests only).
contract TestToken {
    string public symbol;
    uint8 public decimals;
    mapping(address => uint256) public balanceOf;

    constructor(string memory symbol_, uint8 decimals_) {
        symbol = symbol_;
        decimals = decimals_;
    }

    function mint(address to, uint256 amount) external {
        balanceOf[to] += amount;
    }

    function burn(address from, uint256 amount) external {
        balanceOf[from] -= amount;
    }
}
"""


def compile_token() -> dict:
    """TestToken compiled with the harness's solcjs (same settings as Escrow)."""
    import subprocess

    from tests.harness import solc

    exe = solc.find_solcjs()
    if exe is None:
        pytest.skip("solcjs not found (make tools)")
    payload = solc.standard_input(TOKEN_SOURCE)
    payload["sources"] = {"TestToken.sol": {"content": TOKEN_SOURCE}}
    payload["settings"]["outputSelection"] = {"TestToken.sol": {"TestToken": ["abi", "evm.bytecode.object"]}}
    proc = subprocess.run([exe, "--standard-json"], input=json.dumps(payload), capture_output=True,
                          text=True, timeout=180)
    out = json.loads(proc.stdout[proc.stdout.find("{"):])
    errors = [e for e in out.get("errors", []) if e.get("severity") == "error"]
    assert not errors, errors
    c = out["contracts"]["TestToken.sol"]["TestToken"]
    return {"abi": c["abi"], "bytecode": "0x" + c["evm"]["bytecode"]["object"]}


@pytest.fixture(scope="module")
def token_artifact():
    return compile_token()


class Token:
    """TestToken deployed on anvil by account 0."""

    def __init__(self, node, artifact: dict, symbol: str, decimals: int) -> None:
        from web3 import Web3

        self.w3 = Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 10}))
        self.acct = self.w3.eth.account.from_key(node.keys[0])
        self.chain_id = node.chain_id
        factory = self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        self.address = self._send(factory.constructor(symbol, decimals))["contractAddress"]
        self.contract = self.w3.eth.contract(address=self.address, abi=artifact["abi"])

    def _send(self, fn):
        tx = fn.build_transaction({"from": self.acct.address, "chainId": self.chain_id,
                                   "nonce": self.w3.eth.get_transaction_count(self.acct.address, "pending")})
        h = self.w3.eth.send_raw_transaction(self.acct.sign_transaction(tx).raw_transaction)
        receipt = self.w3.eth.wait_for_transaction_receipt(h, timeout=30, poll_latency=0.05)
        assert receipt["status"] == 1
        return receipt

    def mint(self, to: str, amount: int) -> None:
        self._send(self.contract.functions.mint(to, amount))

    def burn(self, frm: str, amount: int) -> None:
        self._send(self.contract.functions.burn(frm, amount))

    def balance(self, owner: str) -> int:
        return self.contract.functions.balanceOf(owner).call()


def test_erc20_selectors_and_symbol_decoding():
    from backends.sources.evm import ERC20_SELECTORS, decode_symbol, decode_uint, keccak

    for sig, sel in ERC20_SELECTORS.items():
        assert "0x" + keccak(sig.encode())[:4].hex() == sel
    abi_string = "0x" + (32).to_bytes(32, "big").hex() + (4).to_bytes(32, "big").hex() + b"USDC".ljust(32, b"\0").hex()
    assert decode_symbol(abi_string) == "USDC"
    assert decode_symbol("0x" + b"MKR".ljust(32, b"\0").hex()) == "MKR"  # bytes32 symbol
    markup = "0x" + (32).to_bytes(32, "big").hex() + (9).to_bytes(32, "big").hex() + b"[red]X[/]".ljust(32, b"\0").hex()
    assert decode_symbol(markup) == "redX"  # shown on screen: no markup gets through
    assert decode_symbol("0x") is None and decode_uint("0x") is None
    assert decode_uint("0x" + (6).to_bytes(32, "big").hex()) == 6


async def test_erc20_balance_reads_balance_of_with_token_decimals_and_symbol(anvil, token_artifact):
    tok = Token(anvil, token_artifact, "TST", 6)
    holder, empty = anvil.accounts[3], anvil.accounts[4]
    tok.mint(holder, 250 * 10**6)  # 250 TST
    ch = chain_of(anvil.url, balances=(
        # decimals and symbol from the token; minimum in whole tokens
        BalanceSpec(name="treasury", address=holder, token=tok.address, decimals=None, symbol=None,
                    minimum_units=Decimal(100)),
        BalanceSpec(name="hot", address=empty, token=tok.address.lower(), decimals=None, symbol=None,
                    minimum=1),
        # configured decimals / symbol win over the token's
        BalanceSpec(name="configured", address=holder, token=tok.address, decimals=2, symbol="XYZ"),
        BalanceSpec(name="native", address=holder, minimum=10**18),  # same holder, its ETH
    ))
    (r,) = await ch.poll()
    treasury, hot, configured, native = r.balances
    assert treasury.balance == 250 * 10**6 == tok.balance(holder)
    assert treasury.display == "250 TST" and treasury.symbol == "TST" and treasury.decimals == 6
    assert treasury.minimum == 100 * 10**6 and treasury.status.value == "ok"
    assert hot.balance == 0 and hot.status.value == "crit" and hot.display == "0 TST"
    assert configured.display == "2500000 XYZ" and configured.decimals == 2
    assert native.balance > 10**18 and native.symbol == "ETH" and native.balance != treasury.balance
    fs = findings(r)
    assert fs["gas-low:local:hot"].severity is Severity.P0 and "TST" in fs["gas-low:local:hot"].summary
    assert "gas-low:local:treasury" not in fs
    # the token's balance drops below the minimum (in token units): a finding naming the token
    tok.burn(holder, 200 * 10**6)  # 50 TST left
    (r,) = await ch.poll()
    assert r.balances[0].balance == 50 * 10**6 and r.balances[0].status.value == "crit"
    f = findings(r)["gas-low:local:treasury"]
    assert f.severity is Severity.P1 and f.playbook == "gas-low"
    assert f.summary == "treasury balance 50 TST is below its minimum 100 TST on local"
    await ch.aclose()


async def test_erc20_balance_from_config_by_contract_name(anvil, token_artifact, tmp_path):
    from backends.config import load_config_text
    from backends.sources.evm import chains_from_config

    tok = Token(anvil, token_artifact, "USDC", 6)
    holder = anvil.accounts[2]
    tok.mint(holder, 1500 * 10**6)
    (tmp_path / "erc20.json").write_text(json.dumps(token_artifact["abi"]))
    cfg = load_config_text(f"""
[chain.local]
endpoints = ["{anvil.url}"]
chain_id = 31337
max_head_age = "1h"

[[chain.local.contracts]]
name = "usdc"
address = "{tok.address.lower()}"
abi = "erc20.json"

[[chain.local.balances]]
name = "settlement"
address = "{holder}"
token = "usdc"
minimum = "2000 USDC"

[[chain.local.balances]]
name = "fixed"
address = "{holder}"
token = "{tok.address}"
minimum = "1000.5 USDC"
decimals = 6
""", base_dir=tmp_path)
    settlement, fixed = cfg.chain["local"].balances
    assert settlement.token == "usdc" and settlement.decimals is None and settlement.symbol == "USDC"
    assert int(fixed.minimum) == 1_000_500_000 and fixed.symbol == "USDC"
    ch = chains_from_config(cfg)["local"]
    assert ch.spec.balances[0].token == tok.address  # the contract's (checksummed) address
    (r,) = await ch.poll()
    s, fx = r.balances
    assert s.balance == 1500 * 10**6 and s.minimum == 2000 * 10**6 and s.display == "1500 USDC"
    assert fx.status.value == "warn"  # above its minimum, below twice it
    f = findings(r)["gas-low:local:settlement"]
    assert "1500 USDC" in f.summary and "2000 USDC" in f.summary
    await ch.aclose()


async def test_erc20_balance_of_an_address_without_a_token_is_unknown(anvil):
    ch = chain_of(anvil.url, balances=(
        BalanceSpec(name="ghost", address=anvil.accounts[1], token="0x000000000000000000000000000000000000dEaD",
                    decimals=None, symbol=None, minimum=1),))
    (r,) = await ch.poll()
    (b,) = r.balances
    assert b.balance is None and b.status.value == "unknown" and "no ERC-20 contract" in b.display
    assert not [k for k in findings(r) if k.startswith("gas-low")]
    await ch.aclose()
