"""Signers on a real anvil (its own node: these tests stop mining, raise the base fee and
leave transactions in the pool, which the session node's other users must not see):
a low-fee transaction stuck behind a base-fee spike is found (pending > latest, its hash and
fee from the node's pool, blocks unconfirmed) and sped up through the ActionEngine (same
nonce, fees +20 % and at least the market; the original never mines); cancel is a 0-value
self-send at that nonce and fills a nonce gap; runway from the spend rate; read-only refuses;
the endpoint readings carry the safe / finalized heads; config parses and checks signers."""

from __future__ import annotations

import os
import time

import pytest

from backends.actions.base import ActionEngine
from backends.engine.audit import AuditLog
from backends.engine.rules import RuleContext, evaluate
from backends.errors import ActionRefused
from backends.model import Snapshot
from backends.sources.evm import EvmChain
from backends.sources.jsonrpc import ChainSpec
from backends.sources.signers import SignerSpec, SignerWatch, bumped, signer_actions

pytestmark = [pytest.mark.evm]

GWEI = 10**9


@pytest.fixture(scope="module")
def node():
    from tests.harness.evm import find_anvil, start_anvil

    if find_anvil() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("anvil not installed (npm ci --prefix .tools)")
        pytest.skip("anvil not installed")
    n = start_anvil()
    yield n
    n.stop()


def _key(i: int) -> tuple[str, str]:
    from eth_account import Account

    from sandbox.stack import DEV_KEYS

    return DEV_KEYS[i], Account.from_key(DEV_KEYS[i]).address


def _chain(node, *signers: SignerSpec) -> EvmChain:
    spec = ChainSpec(name="t", endpoints=(node.url,), chain_id=31337, confirmations=2, timeout=5.0)
    return EvmChain(spec, signers=signers)


def _send(node, key: str, **tx) -> str:
    from eth_account import Account

    acct = Account.from_key(key)
    full = {"chainId": 31337, "to": acct.address, "value": 0, "gas": 21_000, "type": 2} | tx
    raw = Account.sign_transaction(full, key).raw_transaction.to_0x_hex()
    return node.rpc("eth_sendRawTransaction", [raw])


def _stuck_tx(node, key: str, address: str, *, backlog: int = 8) -> tuple[str, int]:
    """A busy chain (room for one transfer per block, a backlog of transfers paying a higher tip
    from another key) and a transaction with a low tip: it waits while blocks are mined."""
    other_key, other = _key(0)
    node.rpc("anvil_setAutomine", [False])
    node.rpc("evm_setBlockGasLimit", [hex(30_000)])
    nonce = int(node.rpc("eth_getTransactionCount", [address, "latest"]), 16)
    h = _send(node, key, nonce=nonce, maxFeePerGas=5 * GWEI, maxPriorityFeePerGas=GWEI)
    first = int(node.rpc("eth_getTransactionCount", [other, "pending"]), 16)
    for i in range(backlog):  # fees above the stuck one (anvil orders by them), below a +20 % replacement
        _send(node, other_key, nonce=first + i, maxFeePerGas=GWEI * 55 // 10, maxPriorityFeePerGas=GWEI * 11 // 10)
    return h, nonce


def _uncongest(node) -> None:
    node.rpc("evm_setBlockGasLimit", [hex(30_000_000)])
    node.rpc("anvil_setAutomine", [True])
    node.mine(1)


async def _poll(ch: EvmChain):
    (r,) = await ch.poll()
    snap = Snapshot(readings={r.source: (r,)})
    return r, {f.key: f for f in evaluate(snap, RuleContext())}


def _engine(tmp_path, ch: EvmChain, env: dict, *, read_only: bool = False) -> ActionEngine:
    eng = ActionEngine(AuditLog(tmp_path / "audit.jsonl"), operator="sam", read_only=read_only)
    for a in signer_actions({"t": ch}, env=env):
        eng.register(a)
    return eng


def test_bump_rounds_up_and_by_at_least_one_wei():
    assert bumped(100, 20) == 120 and bumped(101, 20) == 122 and bumped(1, 20) == 2 and bumped(0, 20) == 1


async def test_stuck_transaction_found_and_sped_up(node, tmp_path):
    key, addr = _key(2)
    ch = _chain(node, SignerSpec(chain="t", label="relayer", address=addr, key_env="RELAYER_KEY",
                                 stuck_after_blocks=3))
    env = {"RELAYER_KEY": key}
    try:
        r, found = await _poll(ch)
        (s,) = r.signers
        assert s.pending_count == 0 and s.latest_nonce == s.pending_nonce and "signer-stuck:t:relayer" not in found
        stuck_hash, nonce = _stuck_tx(node, key, addr)
        node.mine(1)
        r, found = await _poll(ch)
        (s,) = r.signers
        assert s.pending_count == 1 and s.pending_nonce == nonce + 1 and s.latest_nonce == nonce
        assert s.stuck_tx == stuck_hash and "maxFee" in s.stuck_fee and s.oldest_pending_blocks == 0
        node.mine(3)
        r, found = await _poll(ch)
        (s,) = r.signers
        assert s.oldest_pending_blocks == 3 and s.oldest_pending_age_s is not None
        f = found["signer-stuck:t:relayer"]
        assert f.playbook == "signer-stuck" and f.target == "chain:t:relayer"
        assert f"nonce {nonce}" in f.summary and any(stuck_hash in e for e in f.evidence)

        eng = _engine(tmp_path, ch, env)
        # the finding's target as the Findings pane passes it (chain=<target after "chain:">)
        plan = await eng.plan("signer.speed_up", chain="t:relayer")
        assert plan.guard.ok, plan.guard
        tx = plan.params["tx"]
        orig = node.rpc("eth_getTransactionByHash", [stuck_hash])
        assert tx["nonce"] == nonce and tx["to"].lower() == orig["to"].lower() and tx["gas"] == int(orig["gas"], 16)
        assert tx["maxPriorityFeePerGas"] >= int(orig["maxPriorityFeePerGas"], 16) * 1.2
        assert tx["maxFeePerGas"] >= int(orig["maxFeePerGas"], 16) * 1.2
        base = int(node.rpc("eth_getBlockByNumber", ["latest", False])["baseFeePerGas"], 16)
        assert tx["maxFeePerGas"] >= 2 * base + tx["maxPriorityFeePerGas"]  # at least the market
        assert stuck_hash in plan.preview and f"nonce {nonce}" in plan.preview and "max cost" in plan.preview
        assert plan.expected_confirmation == "relayer"
        with pytest.raises(ActionRefused):
            await eng.execute(plan, confirmation="yes")
        node.rpc("anvil_setAutomine", [True])  # the replacement's arrival mines a block: the highest tip
        res = await eng.execute(plan, confirmation="relayer")
        assert res.status == "ok", res.summary
        assert int(node.rpc("eth_getTransactionCount", [addr, "latest"]), 16) == nonce + 1
        assert node.rpc("eth_getTransactionReceipt", [stuck_hash]) is None  # the original was replaced
        r, found = await _poll(ch)
        assert r.signers[0].pending_count == 0 and "signer-stuck:t:relayer" not in found
        assert r.signers[0].last_confirmed_age_s is not None
        text = (tmp_path / "audit.jsonl").read_text()
        assert "signer.speed_up" in text and key[2:] not in text
        # nothing pending any more: the guard is red
        again = await eng.plan("signer.cancel", signer="relayer")
        assert not again.guard.ok
    finally:
        _uncongest(node)
        await ch.aclose()


async def test_cancel_and_read_only(node, tmp_path):
    key, addr = _key(3)
    ch = _chain(node, SignerSpec(chain="t", label="ops", address=addr, key_env="OPS_KEY"),
                SignerSpec(chain="t", label="watched", address=_key(4)[1]))
    env = {"OPS_KEY": key}
    try:
        await _poll(ch)
        stuck_hash, nonce = _stuck_tx(node, key, addr)
        node.mine(1)
        await _poll(ch)
        eng = _engine(tmp_path, ch, env)
        plan = await eng.plan("signer.cancel")  # the one signer with something pending
        assert plan.target == "t:ops"
        ro = _engine(tmp_path, ch, env, read_only=True)
        with pytest.raises(ActionRefused, match="read-only"):  # the engine refuses, not only the UI
            await ro.execute(plan, confirmation="ops")
        assert int(node.rpc("eth_getTransactionCount", [addr, "pending"]), 16) == nonce + 1
        with pytest.raises(ActionRefused, match="watched, not used"):
            await eng.plan("signer.cancel", signer="watched")
        plan = await eng.plan("signer.cancel", signer="t:ops")
        tx = plan.params["tx"]
        assert tx["to"] == addr and tx["value"] == 0 and tx["data"] == "0x" and tx["nonce"] == nonce
        assert "0-value self-send" in plan.preview
        node.rpc("anvil_setAutomine", [True])
        res = await eng.execute(plan, confirmation="ops")
        assert res.status == "ok", res.summary
        rc = node.rpc("eth_getTransactionReceipt", [res.after["tx"]])
        got = node.rpc("eth_getTransactionByHash", [res.after["tx"]])
        assert rc["status"] == "0x1" and got["to"].lower() == addr.lower() and int(got["value"], 16) == 0
        assert node.rpc("eth_getTransactionReceipt", [stuck_hash]) is None
    finally:
        _uncongest(node)
        await ch.aclose()


async def test_nonce_gap_found_and_filled_by_cancel(node, tmp_path):
    key, addr = _key(1)
    ch = _chain(node, SignerSpec(chain="t", label="gappy", address=addr, key_env="G_KEY"))
    try:
        nonce = int(node.rpc("eth_getTransactionCount", [addr, "latest"]), 16)
        later = _send(node, key, nonce=nonce + 1, maxFeePerGas=50 * GWEI, maxPriorityFeePerGas=GWEI)
        node.mine(1)
        r, found = await _poll(ch)
        (s,) = r.signers
        assert s.queued_count == 1 and s.gap_nonce == nonce
        f = found["signer-nonce-gap:t:gappy"]
        assert f.playbook == "signer-nonce-gap" and f"gap at {nonce}" in f.summary
        eng = _engine(tmp_path, ch, {"G_KEY": key})
        plan = await eng.plan("signer.cancel", signer="gappy")
        assert plan.guard.ok and plan.params["nonce"] == nonce
        res = await eng.execute(plan, confirmation="gappy")
        assert res.status == "ok", res.summary

        def both_mined():
            node.mine(1)
            return node.rpc("eth_getTransactionReceipt", [later])

        deadline = time.monotonic() + 10
        while not both_mined():
            assert time.monotonic() < deadline, "the queued transaction was not mined after the gap was filled"
        r, found = await _poll(ch)
        assert r.signers[0].queued_count == 0 and "signer-nonce-gap:t:gappy" not in found
    finally:
        await ch.aclose()


async def test_runway_from_the_spend_rate(node):
    _, addr = _key(4)
    ch = _chain(node, SignerSpec(chain="t", label="bank", address=addr, min_balance=10**18, runway_min_s=3600))
    now = [1000.0]
    assert ch.signer_watch is not None
    ch.signer_watch.clock = lambda: now[0]
    try:
        node.rpc("anvil_setBalance", [addr, hex(5 * 10**18)])
        r, found = await _poll(ch)
        assert r.signers[0].runway_s is None and r.signers[0].spend_per_hour is None
        now[0] += 600
        node.rpc("anvil_setBalance", [addr, hex(4 * 10**18)])  # 1 ETH in 10 minutes
        r, found = await _poll(ch)
        s = r.signers[0]
        assert s.spend_per_hour == 6 * 10**18
        assert s.runway_s == pytest.approx(3 * 600, rel=0.01)  # 3 ETH above the minimum, at 1 ETH / 10 min
        f = found["signer-runway:t:bank"]
        assert f.playbook == "signer-runway" and "runway 30m" in f.summary
        now[0] += 60
        node.rpc("anvil_setBalance", [addr, hex(100 * 10**18)])  # a refill starts a new window
        r, found = await _poll(ch)
        assert r.signers[0].runway_s is None and "signer-runway:t:bank" not in found
        node.rpc("anvil_setBalance", [addr, hex(10**17)])
        now[0] += 60
        r, found = await _poll(ch)
        assert r.signers[0].runway_s == 0.0 and "below its minimum" in found["signer-runway:t:bank"].summary
    finally:
        node.rpc("anvil_setBalance", [addr, hex(10_000 * 10**18)])
        await ch.aclose()


async def test_endpoints_show_safe_and_finalized_heads(node):
    node.mine(80)
    ch = _chain(node)
    try:
        (r,) = await ch.poll()
        (ep,) = r.endpoints
        assert ep.head is not None and ep.safe is not None and ep.finalized is not None
        assert ep.finalized <= ep.safe <= ep.head and ep.confirmations == 2
    finally:
        await ch.aclose()


def test_watch_without_txpool_api_still_counts_pending():
    w = SignerWatch("t", "chain.t", [SignerSpec(chain="t", label="a", address="0x" + "11" * 20)])
    r = w._reading(w.specs[0], 10**18, 5, 7, 100, None, pool_known=False)
    assert r.pending_count == 2 and r.stuck_nonce == 5 and r.stuck_tx is None and "no txpool API" in r.problem


def test_config_parses_signers(tmp_path):
    from backends.config import ConfigError, load_config
    from backends.sources.signers import signer_specs_from_config

    base = """
[chain.main]
endpoints = ["http://127.0.0.1:8545"]
finality = "finalized"
[[chain.main.signers]]
label = "relayer"
address = "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc"
min_balance = "1 ether"
key_env = "RELAYER_KEY"
stuck_after_blocks = 4
runway_min = "6h"
"""
    p = tmp_path / "w.toml"
    p.write_text(base)
    cfg = load_config(p)
    (sc,) = cfg.chain["main"].signers
    assert cfg.chain["main"].finality == "finalized" and sc.runway_min == 6 * 3600
    (spec,) = signer_specs_from_config(cfg, "main")
    assert spec.address == "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC" and spec.min_balance == 10**18
    assert spec.stuck_after_blocks == 4 and spec.key_env == "RELAYER_KEY" and spec.bump_percent == 20
    p.write_text(base + "bump_percent = 5\n")
    with pytest.raises(ConfigError, match="minimum replacement bump"):
        load_config(p)
    p.write_text(base + 'keystore = "/tmp/k.json"\n')
    with pytest.raises(ConfigError, match="both keystore and key_env"):
        load_config(p)


async def test_chain_pane_shows_signers_and_finalized_head():
    from dataclasses import replace

    from backends.model import ChainReading, EndpointReading, SignerReading, Status
    from tests.test_widgets import SIZE, PaneApp, cell
    from widgets.chain import ChainPane

    ep = EndpointReading(source="chain.t", chain="t", url="http://127.0.0.1:1", name="primary", ok=True,
                         active=True, head=1000, finalized=936, safe=968, chain_id=1, chain_id_ok=True)
    sg = SignerReading(source="chain.t", chain="t", label="relayer", address="0x1", balance=10**18,
                       display="1 ETH", latest_nonce=4, pending_nonce=5, pending_count=1, oldest_pending_blocks=6,
                       stuck_nonce=4,
                       runway_s=7200.0, runway_min_s=86400.0, status=Status.CRIT)
    ep2 = replace(ep, url="http://127.0.0.1:2", name="backup", active=False, safe=None, finalized=None,
                  confirmations=65)  # a node without the tags: the configured depth
    snap = Snapshot(readings={"chain.t": (ChainReading(source="chain.t", chain="t", endpoints=(ep, ep2),
                                                       signers=(sg, replace(sg, label="bank", pending_count=0, oldest_pending_blocks=None,
                                                                            status=Status.OK))),)})
    pane = ChainPane()
    app = PaneApp(pane, snapshot=snap)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert pane.row_keys() == ["t|http://127.0.0.1:1", "t|http://127.0.0.1:2", "t|signer:relayer",
                                   "t|signer:bank"]
        assert cell(pane, "t|http://127.0.0.1:2", "head").plain == "1,000 depth 65"
        assert cell(pane, "t|http://127.0.0.1:1", "head").plain == "1,000 fin −64"
        assert cell(pane, "t|signer:relayer", "status").plain == "✖ STUCK"
        assert cell(pane, "t|signer:relayer", "endpoint").plain == "  ✎ relayer"
        assert cell(pane, "t|signer:relayer", "head").plain == "n 4/5"
        assert cell(pane, "t|signer:relayer", "lag").plain == "1"
        assert cell(pane, "t|signer:relayer", "chain_id").plain == "1 ETH"
        assert cell(pane, "t|signer:relayer", "latency").plain == "2h00m left"
        assert cell(pane, "t|signer:relayer", "error").plain == "nonce 4 waits 6 blk"
        assert cell(pane, "t|signer:bank", "status").plain == "● OK"
        # the signer row's keys: x speed up, C cancel (with the row's chain and label); enter: its detail
        await pilot.press("down", "down")
        assert pane.cursor_key() == "t|signer:relayer"
        await pilot.press("x")
        await pilot.press("C")
        await pilot.press("enter")
        await pilot.pause()
        from widgets.messages import ActionRequested, DetailRequested

        asked = [(m.action_id, m.params) for m in app.messages if isinstance(m, ActionRequested)]
        assert asked == [("signer.speed_up", {"chain": "t", "signer": "relayer"}),
                         ("signer.cancel", {"chain": "t", "signer": "relayer"})]
        detail = [m for m in app.messages if isinstance(m, DetailRequested)]
        assert detail and detail[-1].item.label == "relayer"
