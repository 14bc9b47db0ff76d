"""Non-EVM (Neo N3) JSON-RPC endpoints: head via getblockcount, lag, network magic,
agreement, failover; and the same logic against a real anvil node as a generic JSON-RPC server.

No Neo node is available on the test box, so a small local JSON-RPC server speaks the
three Neo N3 methods warroom uses (getblockcount, getblockhash, getversion) with the
shapes neo-go / C# neo return.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from backends.actions.base import ActionEngine
from backends.clock import FakeClock
from backends.engine.audit import AuditLog
from backends.engine.rules import evaluate
from backends.model import Severity, Snapshot
from backends.sources.jsonrpc import ChainFailoverAction, ChainSpec, HttpRpc, JsonRpcChain, RpcError

MAINNET = 860833102
TESTNET = 894710606


class NeoNode:
    """A local Neo N3-shaped JSON-RPC endpoint on 127.0.0.1."""

    def __init__(self, count: int = 1000, network: int = MAINNET, fork_at: int | None = None) -> None:
        self.count = count
        self.network = network
        self.fork_at = fork_at  # heights >= this have a different hash (a forked node)
        self.hang = False
        self.batch = True  # False: answer a batch with one error object, as some providers do
        self.runner = None
        self.url = ""

    def hash_of(self, h: int) -> str:
        tag = "f" if self.fork_at is not None and h >= self.fork_at else "0"
        return "0x" + tag * 8 + f"{h:056x}"

    async def handle(self, request):
        from aiohttp import web

        if self.hang:
            await asyncio.sleep(3600)
        body = await request.json()
        if isinstance(body, list) and not self.batch:
            return web.json_response({"jsonrpc": "2.0", "id": None,
                                      "error": {"code": -32600, "message": "batch requests are not supported"}})
        items = body if isinstance(body, list) else [body]
        out = []
        for it in items:
            m, p = it.get("method"), it.get("params") or []
            if m == "getblockcount":
                res = {"result": self.count}
            elif m == "getblockhash":
                h = int(p[0])
                res = ({"result": self.hash_of(h)} if h < self.count
                       else {"error": {"code": -100, "message": "Unknown block"}})
            elif m == "getversion":
                res = {"result": {"tcpport": 10333, "nonce": 1, "useragent": "/neo-go:0.106.0/",
                                  "protocol": {"network": self.network, "msperblock": 15000}}}
            else:
                res = {"error": {"code": -32601, "message": "Method not found"}}
            out.append({"jsonrpc": "2.0", "id": it.get("id"), **res})
        return web.json_response(out if isinstance(body, list) else out[0])

    async def start(self) -> NeoNode:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.runner.cleanup(), 2)
            self.runner = None


@contextlib.asynccontextmanager
async def neo_nodes(*nodes: NeoNode):
    for n in nodes:
        await n.start()
    try:
        yield nodes
    finally:
        for n in nodes:
            await n.stop()


def neo_chain(*urls: str, audit=None, **kw) -> JsonRpcChain:
    spec = ChainSpec(name="neo", kind="jsonrpc", endpoints=tuple(urls), chain_id=MAINNET,
                     head_method="getblockcount", head_offset=-1, hash_method="getblockhash",
                     version_method="getversion", max_head_age=None, timeout=kw.pop("timeout", 1.0), **kw)
    return JsonRpcChain(spec, audit=audit)


def findings(r):
    return {f.key: f for f in evaluate(Snapshot(readings={r.source: (r,)}))}


async def test_neo_heads_lag_and_network_magic():
    async with neo_nodes(NeoNode(1000), NeoNode(990), NeoNode(1000, network=TESTNET)) as (a, b, c):
        ch = neo_chain(a.url, b.url, c.url, max_lag=5)
        (r,) = await ch.poll()
        ea, eb, ec = r.endpoints
        assert ea.head == 999 and ea.ok and ea.active and ea.chain_id == MAINNET and ea.chain_id_ok
        assert eb.head == 989 and eb.lag == 10 and not eb.ok and "behind" in eb.error
        assert ec.chain_id == TESTNET and ec.chain_id_ok is False and not ec.ok
        fs = findings(r)
        assert "rpc-lag:neo:rpc2" in fs
        assert fs["rpc-wrong-chain:neo:rpc3"].severity is Severity.P1  # not the active one
        assert not r.disagreement
        await ch.aclose()


async def test_neo_disagreement_at_common_height():
    async with neo_nodes(NeoNode(1000), NeoNode(995, fork_at=900)) as (a, b):
        ch = neo_chain(a.url, b.url)
        (r,) = await ch.poll()
        assert r.disagreement and "block 994" in r.disagreement
        assert findings(r)["rpc-disagree:neo"].severity is Severity.P1
        await ch.aclose()


async def test_neo_failover_when_active_stops_and_all_down(tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl")
    async with neo_nodes(NeoNode(500), NeoNode(500)) as (a, b):
        ch = neo_chain(a.url, b.url, audit=audit)
        (r,) = await ch.poll()
        assert r.endpoints[0].active
        await a.stop()
        (r,) = await ch.poll()
        assert not r.endpoints[0].ok and r.endpoints[1].active and r.endpoints[1].ok
        assert await audit.flush()  # automatic switches are written in the background
        entry = audit.tail(1)[0]
        assert entry["action"] == "chain.failover" and entry["target"] == "chain:neo"
        await b.stop()
        (r,) = await ch.poll()
        assert findings(r)["rpc-failure:neo"].severity is Severity.P0
        await ch.aclose()


async def test_neo_hanging_endpoint_times_out_and_operator_fails_over(tmp_path):
    async with neo_nodes(NeoNode(10), NeoNode(10)) as (a, b):
        ch = neo_chain(a.url, b.url, timeout=0.4, failover=False)
        await ch.poll()
        a.hang = True
        t0 = time.monotonic()
        (r,) = await ch.poll()
        assert time.monotonic() - t0 < 1.5
        assert "timed out" in r.endpoints[0].error and r.endpoints[0].active  # failover is off
        eng = ActionEngine(AuditLog(tmp_path / "a.jsonl"), operator="erin")
        eng.register(ChainFailoverAction({"neo": ch.endpoints}))
        plan = await eng.plan("chain.failover", chain="neo", reason="node 1 hangs")
        assert plan.guard.ok
        res = await eng.execute(plan, confirmation="yes")
        assert res.status == "ok" and ch.endpoints.active.url == b.url
        entry = eng.audit.tail(1)[0]
        assert entry["operator"] == "erin" and entry["reason"] == "node 1 hangs"
        a.hang = False
        await ch.aclose()


async def test_endpoint_without_batch_support_still_works():
    node = NeoNode(77)
    node.batch = False
    async with neo_nodes(node):
        ch = neo_chain(node.url)
        (r,) = await ch.poll()
        e = r.endpoints[0]
        assert e.ok and e.head == 76 and e.chain_id == MAINNET
        assert ch.endpoints.endpoints[0].rpc.no_batch
        (r,) = await ch.poll()
        assert r.endpoints[0].ok
        await ch.aclose()


@pytest.mark.evm
async def test_generic_jsonrpc_against_anvil(anvil):
    """The same endpoint logic with an EVM node spoken to as plain JSON-RPC."""
    spec = ChainSpec(name="generic", kind="jsonrpc", endpoints=(anvil.url, "http://127.0.0.1:9"),
                     head_method="eth_blockNumber", max_head_age=None, timeout=1.0)
    ch = JsonRpcChain(spec)
    (r,) = await ch.poll()
    good, dead = r.endpoints
    assert good.head == anvil.block_number() and good.ok and good.active
    assert not dead.ok and "connection refused" in dead.error
    rpc = HttpRpc(anvil.url, timeout=1.0)
    with pytest.raises(RpcError):
        await rpc.call("no_such_method")
    res = await rpc.batch([("eth_chainId", []), ("no_such_method", [])])
    assert res[0] == hex(anvil.chain_id) and isinstance(res[1], RpcError)
    await rpc.aclose()
    await ch.aclose()


async def test_neo_head_age_is_observed_and_a_stalled_node_is_stale(tmp_path):
    """No block time from getblockcount: the head age is the time since the height last
    increased, so max_head_age flags a node that stops advancing and failover leaves it.
    The time between polls is the chain's FakeClock: ages are exact, nothing sleeps."""
    audit = AuditLog(tmp_path / "audit.jsonl")
    clock = FakeClock()
    async with neo_nodes(NeoNode(100), NeoNode(100)) as (a, b):
        spec = ChainSpec(name="neo", kind="jsonrpc", endpoints=(a.url, b.url), chain_id=MAINNET,
                         head_method="getblockcount", head_offset=-1, hash_method="getblockhash",
                         version_method="getversion", max_head_age=0.6, timeout=1.0)
        ch = JsonRpcChain(spec, audit=audit, clock=clock)
        (r,) = await ch.poll()
        ea, eb = r.endpoints
        assert ea.ok and ea.head_age_s == 0
        for _ in range(3):  # both advance: never stale, however long it runs
            clock.advance(0.3)
            a.count += 1
            b.count += 1
            (r,) = await ch.poll()
            assert all(e.ok for e in r.endpoints) and r.endpoints[0].head_age_s == 0
        assert not [k for k in findings(r) if k.startswith("rpc-")]
        # a stops at 102 (height), b keeps going: a is stale once its height is 0.6 s old
        t_stall = clock.monotonic()
        stale = None
        for _ in range(12):
            clock.advance(0.25)
            b.count += 1
            (r,) = await ch.poll()
            if not r.endpoints[0].ok:
                stale = r
                break
            assert r.endpoints[0].head_age_s <= 0.6  # fresh enough: still ok
        assert stale is not None, "the stalled endpoint was never reported stale"
        assert clock.monotonic() - t_stall == 0.75  # the first poll past max_head_age
        ea, eb = stale.endpoints
        assert ea.head == 102 and ea.head_age_s == 0.75 and "has not increased" in ea.error
        assert eb.ok and eb.active  # failed over to the advancing node
        f = findings(stale)["rpc-stale:neo:rpc1"]
        assert f.playbook == "rpc-failure" and "old" in f.summary
        assert await audit.flush()  # automatic switches are written in the background
        assert audit.tail(1)[0]["action"] == "chain.failover"
        # a advances again: fresh at once
        a.count = b.count
        (r,) = await ch.poll()
        assert r.endpoints[0].ok and r.endpoints[0].head_age_s < 0.3
        await ch.aclose()


async def test_neo_max_head_age_from_config():
    from backends.config import load_config_text
    from backends.sources.evm import chains_from_config

    async with neo_nodes(NeoNode(50)) as (a,):
        cfg = load_config_text(f'[chain.neo]\nkind = "jsonrpc"\nendpoints = ["{a.url}"]\n'
                               f'max_head_age = "500ms"\ntimeout = "1s"\n')
        ch = chains_from_config(cfg)["neo"]
        assert isinstance(ch, JsonRpcChain) and ch.endpoints.max_head_age == 0.5
        (r,) = await ch.poll()
        assert r.endpoints[0].ok and r.endpoints[0].head == 49
        deadline = time.monotonic() + 5  # the head stays at 49: stale once it is 500 ms old
        while r.endpoints[0].ok and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            (r,) = await ch.poll()
        assert not r.endpoints[0].ok
        assert findings(r)["rpc-stale:neo:rpc1"].severity is Severity.P1  # the active endpoint
        await ch.aclose()


async def test_neo_invalid_answers_make_the_source_degraded_not_values():
    """The monitor's view of a non-EVM chain: one valid endpoint is enough; when none
    answers validly (a height over 2^256, the wrong network, going backwards, too big an
    answer) the source is DEGRADED with the reason, and recovers on the next good poll."""
    from backends.engine.monitor import Monitor
    from backends.model import SourceState

    async with neo_nodes(NeoNode(1000), NeoNode(1000, network=TESTNET)) as (good, wrong):
        ch = neo_chain(good.url, wrong.url)
        await ch.poll()
        assert ch.answer_problem() == ""  # one of two endpoints is fine
        await ch.aclose()
        ch = neo_chain(wrong.url)
        await ch.poll()
        assert ch.answer_problem() == f"rpc1: chain id {TESTNET}, expected {MAINNET}"
        await ch.aclose()

        ch = neo_chain(good.url, interval=0.1)
        mon = Monitor([ch])
        await mon.start()
        try:
            async def until(cond, limit=5.0):
                t0 = time.monotonic()
                while not cond():
                    assert time.monotonic() - t0 < limit
                    await asyncio.sleep(0.01)

            def st():
                return mon.snapshot.sources["chain.neo"]

            await until(lambda: st().state is SourceState.OK and st().last_good)
            for bad, reason in ((2**256 + 5, "block height is over 2^256"),
                                (10, "block number went backwards: 9 after 999"),
                                ("9" * 2_000_000, "over the 1 MB limit")):
                good.count = bad
                await until(lambda reason=reason: st().state is SourceState.DEGRADED and reason in st().reason)
                good.count = 1000
                await until(lambda: st().state is SourceState.OK)
        finally:
            await mon.stop()
            await ch.aclose()
