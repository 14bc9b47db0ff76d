"""Finality and reorgs on a real anvil (its own node: the test reverts the chain): a release is
provisional until final and rechecked; one that disappears in a reorg flips the order back to
not released with the block and depth, and a release-reorged finding names them; with
finality = "finalized" a release is final only below the node's finalized block."""

from __future__ import annotations

import os

import pytest

from backends.engine.rules import RuleContext, evaluate
from backends.model import Order, OrdersReading, Snapshot, Verdict
from backends.sources.evm import EvmChain
from backends.sources.jsonrpc import ChainSpec
from backends.sources.orders import ReleaseVerifier

pytestmark = [pytest.mark.evm]


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


@pytest.fixture(scope="module")
def dep(node):
    from tests.harness.evm import EscrowDeployment

    return EscrowDeployment(node)


def _chain(node, finality: str = "depth") -> EvmChain:
    return EvmChain(ChainSpec(name="t", endpoints=(node.url,), chain_id=31337, confirmations=5), finality=finality)


async def test_a_reorged_release_flips_back_with_block_and_depth(node, dep):
    ch = _chain(node)
    v = ReleaseVerifier(ch, address=dep.address)
    try:
        snap_id = node.rpc("evm_snapshot", [])
        dep.release("reorg-1", 10**15)
        node.mine(1)
        order = Order(id="reorg-1", state="PENDING", age_s=60)
        (got,) = (await v.verify([order])).values()
        assert got.verdict is Verdict.RELEASED and not got.final and "provisional" in got.reason
        block = got.block
        # the chain reorganises: the release's block is replaced by an empty fork, longer
        assert node.rpc("evm_revert", [snap_id]) is True
        node.mine(4)
        (gone,) = (await v.verify([order])).values()
        assert gone.verdict is Verdict.NOT_RELEASED
        assert gone.reorged_block == block and gone.reorg_depth == got.confirmations
        assert f"block {block}" in gone.reason and "reorged" in gone.reason
        reading = OrdersReading(source="orders", stuck_count=1, oldest_age_s=60,
                                oldest=(Order(id="reorg-1", state="PENDING", age_s=60, verdict=gone),))
        found = {f.key: f for f in evaluate(Snapshot(readings={"orders": (reading,)}), RuleContext())}
        f = found["release-reorged:orders:reorg-1"]
        assert f.playbook == "release-reorged" and f"block {block}" in f.summary
        assert f"depth ≥ {got.confirmations}" in f.summary and "stuck again" in f.summary
        # released again (re-sent) and final: the reorg is forgotten
        dep.release("reorg-1", 10**15)
        node.mine(6)
        (again,) = (await v.verify([order])).values()
        assert again.verdict is Verdict.RELEASED and again.final and again.reorged_block is None
    finally:
        await ch.aclose()


async def test_finalized_finality_uses_the_nodes_tag(node, dep):
    ch = _chain(node, finality="finalized")
    v = ReleaseVerifier(ch, address=dep.address)
    try:
        dep.release("fin-1", 10**15)
        node.mine(10)  # 10 confirmations: final by depth (5), not below anvil's finalized block
        order = Order(id="fin-1", state="PENDING", age_s=60)
        (got,) = (await v.verify([order])).values()
        assert got.verdict is Verdict.RELEASED and got.confirmations >= 10
        fin = int(node.rpc("eth_getBlockByNumber", ["finalized", False])["number"], 16)
        assert fin < got.block and not got.final and "finalized block" in got.reason
        node.mine(80)
        (later,) = (await v.verify([order])).values()
        assert later.final and "finalized block" in later.reason
        depth = ReleaseVerifier(ch, address=dep.address, confirmations=5)  # explicit depth wins
        (d,) = (await depth.verify([order])).values()
        assert d.final and "confirmations" in d.reason
    finally:
        await ch.aclose()


def test_bulk_fixes_say_how_many_wait_for_finality():
    from backends.model import OrderVerdict
    from backends.sources.orders import _finality_note

    verdicts = {
        "a": OrderVerdict(order_id="a", verdict=Verdict.RELEASED, block=10, confirmations=2, final=False),
        "b": OrderVerdict(order_id="b", verdict=Verdict.RELEASED, block=9, confirmations=70, final=True),
        "c": OrderVerdict(order_id="c", verdict=Verdict.NOT_RELEASED),
        "d": OrderVerdict(order_id="d", verdict=Verdict.RELEASED, block=11, confirmations=1, final=False),
    }
    (note,) = _finality_note(verdicts)
    assert note.startswith("2 wait for finality (released, provisional): a, d")
    assert _finality_note({"b": verdicts["b"], "c": verdicts["c"]}) == []


async def test_each_endpoint_is_asked_its_heads_in_one_round_trip(node, dep):
    """A chain poll asks each endpoint for chain id, latest, safe and finalized in one batch
    (the finality heads used to be a second request per endpoint and poll); the endpoint
    reading shows the node's own safe and finalized blocks."""
    ch = _chain(node)
    posts = []
    rpc = ch.endpoints.endpoints[0].rpc
    orig = rpc._post

    async def counting(payload, *a, **k):
        posts.append(payload)
        return await orig(payload, *a, **k)

    rpc._post = counting
    try:
        node.mine(3)
        (reading,) = await ch.poll()
        heads = [p for p in posts if isinstance(p, list) and any(c["method"] == "eth_chainId" for c in p)]
        assert len(heads) == 1 and [c["params"][0] if c["params"] else None for c in heads[0]] == [
            None, "latest", "safe", "finalized"]
        assert not any(isinstance(p, list) and [(c["params"] or [None])[0] for c in p] == ["safe", "finalized"]
                   for p in posts)
        (ep,) = reading.endpoints
        assert ep.finalized == int(node.rpc("eth_getBlockByNumber", ["finalized", False])["number"], 16)
        assert ep.safe == int(node.rpc("eth_getBlockByNumber", ["safe", False])["number"], 16)
    finally:
        rpc._post = orig
        await ch.aclose()
