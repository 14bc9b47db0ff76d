"""Contract guardrails on anvil with real contracts compiled by solcjs (OpenZeppelin-style
Ownable + AccessControl + Pausable, and an ERC-1967 proxy): Paused/Unpaused,
OwnershipTransferred, RoleGranted/RoleRevoked/RoleAdminChanged and Upgraded become findings,
P0 for owner/admin/implementation changes not announced in config, roles by name, with the tx."""

from __future__ import annotations

import json
import subprocess

import pytest

from backends.engine.rules import RuleContext, evaluate
from backends.model import Severity, Snapshot
from backends.sources.evm import EvmChain, role_id
from backends.sources.guardrails import GuardrailWatch, GuardSpec
from backends.sources.jsonrpc import ChainSpec
from tests.harness import in_ci
from tests.harness.solc import EVM_VERSION, find_solcjs

pytestmark = [pytest.mark.evm]

SOURCE = r"""
// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

contract Guarded {
    address private _owner;
    bool public paused;
    mapping(bytes32 => mapping(address => bool)) private _roles;
    mapping(bytes32 => bytes32) private _admins;
    bytes32 public constant DEFAULT_ADMIN_ROLE = 0x00;
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");

    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    event Paused(address account);
    event Unpaused(address account);
    event RoleGranted(bytes32 indexed role, address indexed account, address indexed sender);
    event RoleRevoked(bytes32 indexed role, address indexed account, address indexed sender);
    event RoleAdminChanged(bytes32 indexed role, bytes32 indexed previousAdminRole, bytes32 indexed newAdminRole);

    constructor() { _owner = msg.sender; _roles[0x00][msg.sender] = true; }
    function owner() external view returns (address) { return _owner; }
    function transferOwnership(address n) external { require(msg.sender == _owner); emit OwnershipTransferred(_owner, n); _owner = n; }
    function pause() external { paused = true; emit Paused(msg.sender); }
    function unpause() external { paused = false; emit Unpaused(msg.sender); }
    function grantRole(bytes32 r, address a) external { _roles[r][a] = true; emit RoleGranted(r, a, msg.sender); }
    function revokeRole(bytes32 r, address a) external { _roles[r][a] = false; emit RoleRevoked(r, a, msg.sender); }
    function setRoleAdmin(bytes32 r, bytes32 admin) external { emit RoleAdminChanged(r, _admins[r], admin); _admins[r] = admin; }
}

contract Proxy1967 {
    bytes32 private constant IMPL = 0x360894a13ba1a3210667c828492db98dca3e2076cc3735a920a3ca505d382bbc;
    event Upgraded(address indexed implementation);
    constructor(address impl) { _set(impl); }
    function upgradeTo(address impl) external { _set(impl); }
    function _set(address impl) private { assembly { sstore(IMPL, impl) } emit Upgraded(impl); }
    function implementation() external view returns (address a) { assembly { a := sload(IMPL) } }
}
"""


@pytest.fixture(scope="module")
def artifacts():
    solcjs = find_solcjs()
    if solcjs is None:
        if in_ci():
            pytest.fail("CI=true and solcjs is missing")
        pytest.skip("solcjs not found")
    payload = {"language": "Solidity", "sources": {"G.sol": {"content": SOURCE}},
               "settings": {"evmVersion": EVM_VERSION, "optimizer": {"enabled": True, "runs": 200},
                            "outputSelection": {"G.sol": {"*": ["abi", "evm.bytecode.object"]}}}}
    proc = subprocess.run([solcjs, "--standard-json"], input=json.dumps(payload), capture_output=True,
                          text=True, timeout=180)
    out = json.loads(proc.stdout[proc.stdout.find("{"):])  # solcjs may print before the JSON
    errors = [e for e in out.get("errors", []) if e.get("severity") == "error"]
    assert not errors, errors
    return {n: (c["abi"], "0x" + c["evm"]["bytecode"]["object"]) for n, c in out["contracts"]["G.sol"].items()}


def deploy(w3, acct, abi, code, *args):
    c = w3.eth.contract(abi=abi, bytecode=code)
    return send(w3, acct, c.constructor(*args))["contractAddress"]


def send(w3, acct, fn):
    tx = fn.build_transaction({"from": acct.address, "nonce": w3.eth.get_transaction_count(acct.address, "pending")})
    h = w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
    return w3.eth.wait_for_transaction_receipt(h, timeout=30, poll_latency=0.05)


async def test_admin_events_become_findings_with_roles_and_tx(anvil, artifacts):
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(anvil.url))
    owner = w3.eth.account.from_key(anvil.keys[0])
    friend, stranger = w3.eth.account.from_key(anvil.keys[1]).address, w3.eth.account.from_key(anvil.keys[2]).address
    g_abi, g_code = artifacts["Guarded"]
    p_abi, p_code = artifacts["Proxy1967"]
    g_addr = deploy(w3, owner, g_abi, g_code)
    impl1, impl2 = deploy(w3, owner, g_abi, g_code), deploy(w3, owner, g_abi, g_code)
    p_addr = deploy(w3, owner, p_abi, p_code, impl1)
    g, p = w3.eth.contract(address=g_addr, abi=g_abi), w3.eth.contract(address=p_addr, abi=p_abi)

    chain = EvmChain(ChainSpec(name="local", endpoints=(anvil.url,), chain_id=31337, max_head_age=None))
    watch = GuardrailWatch(chain, [GuardSpec(name="vault", address=g_addr, owner=friend, admins=(friend,)),
                                   GuardSpec(name="proxy", address=p_addr, implementation=impl1)])
    try:
        await watch.poll()  # the deployment's own events (lookback) are read once
        watch.kept.clear()
        txs = {
            "pause": send(w3, owner, g.functions.pause()),
            "grant_pauser": send(w3, owner, g.functions.grantRole(role_id("PAUSER_ROLE"), stranger)),
            "grant_admin_friend": send(w3, owner, g.functions.grantRole(b"\0" * 32, friend)),
            "grant_admin_stranger": send(w3, owner, g.functions.grantRole(b"\0" * 32, stranger)),
            "revoke": send(w3, owner, g.functions.revokeRole(role_id("PAUSER_ROLE"), stranger)),
            "admin_changed": send(w3, owner, g.functions.setRoleAdmin(role_id("PAUSER_ROLE"), role_id("MINTER_ROLE"))),
            "owner_friend": send(w3, owner, g.functions.transferOwnership(friend)),
            "upgrade": send(w3, owner, p.functions.upgradeTo(impl2)),
        }
        (r,) = await watch.poll()
        by_tx = {e.tx_hash: e for e in r.events}
        ev = {k: by_tx[t["transactionHash"].to_0x_hex()] for k, t in txs.items()}
        assert ev["pause"].event == "Paused" and ev["pause"].severity is Severity.P2
        assert ("role", "PAUSER_ROLE") in ev["grant_pauser"].args and ev["grant_pauser"].severity is Severity.P2
        assert ev["grant_admin_friend"].severity is Severity.P2  # announced in config
        assert ev["grant_admin_stranger"].severity is Severity.P0
        assert "DEFAULT_ADMIN_ROLE granted to " + stranger.lower() in ev["grant_admin_stranger"].why
        assert ev["revoke"].event == "RoleRevoked"
        assert ("new admin role", "MINTER_ROLE") in ev["admin_changed"].args and ev["admin_changed"].severity is Severity.P0
        assert ev["owner_friend"].severity is Severity.P2  # the announced owner
        assert ev["upgrade"].severity is Severity.P0 and ("implementation", impl2.lower()) in ev["upgrade"].args

        findings = evaluate(Snapshot(readings={watch.name: (r,)}), RuleContext())
        up = next(f for f in findings if f.key.startswith("guardrail:local:proxy:Upgraded"))
        assert up.severity is Severity.P0 and up.playbook == "contract-guardrail"
        assert txs["upgrade"]["transactionHash"].to_0x_hex() in up.evidence[0]
        assert "not the one announced in config" in up.summary
        (r2,) = await watch.poll()  # nothing new: the same events, no duplicates
        assert len(r2.events) == len(r.events)
        # the existing contract-exploit rule is untouched: a guard reading is all this adds
        assert not [f for f in findings if f.key.startswith("logs:pattern:")]
    finally:
        await chain.aclose()


async def test_config_builds_guard_and_score_sources(anvil, escrow, tmp_path, monkeypatch):
    from backends.config import load_config_text
    from backends.engine.core import build_engine

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    owner = escrow.owner
    cfg = load_config_text(f'[warroom]\nstate_dir = "{tmp_path}"\n[chain.local]\nendpoints = ["{anvil.url}", "{anvil.url}"]\n'
                           f'chain_id = 31337\nverify_quorum = 1\n[[chain.local.contracts]]\nname = "escrow"\n'
                           f'address = "{escrow.address}"\nguard = true\nowner = "{owner}"\n'
                           f'admins = ["{owner}"]\n')
    c = cfg.chain["local"].contracts[0]
    assert c.guard and c.owner == owner and c.admins == (owner,)
    engine = build_engine(cfg, with_logs=False)
    try:
        assert {"guardrails.local", "rpcscore.local"} <= set(engine.monitor.sources)
        (r,) = await engine.monitor.sources["guardrails.local"].poll()
        assert r.contracts == ("escrow",)
    finally:
        await engine.stop()
