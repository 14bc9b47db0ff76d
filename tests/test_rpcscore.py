"""RPC endpoint scores (eRPC-like) with an injected clock: error rate, p50/p70/p95, lag vs the
best head, chain id; automatic switches only when clearly worse (error rate > 0.7, p70 > 3 s
and 3x the best, >= 16 blocks behind for 30 s), at most one per 30 s, audited, a finding;
quorum reads (2 of 3). Faults come from local aiohttp JSON-RPC proxies in front of anvil."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

import pytest

from backends.engine.audit import AuditLog
from backends.engine.rules import RuleContext, evaluate
from backends.model import Snapshot
from backends.sources.evm import EvmChain
from backends.sources.jsonrpc import ChainSpec, audit_switches
from backends.sources.rpcscore import Disagreement, Policy, RpcScorer, percentile, quorum_request


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_percentiles_nearest_rank():
    v = [float(i) for i in range(1, 11)]
    assert (percentile(v, 50), percentile(v, 70), percentile(v, 95)) == (5.0, 7.0, 10.0)
    assert percentile([], 50) is None


def test_error_rate_switch_once_per_30s_and_hysteresis():
    clock = Clock()
    s = RpcScorer("c", ["a", "b", "c"], clock=clock)
    for _ in range(10):
        s.record("a", ok=False)
        s.record("b", ok=True, latency_s=0.05, head=100, best=100)
        s.record("c", ok=False)  # bad as well: never a candidate
        clock.t += 1
    assert s.decide("a") == ("b", "error rate 1.00 > 0.7")
    s.last_switch_at = clock.t
    for _ in range(10):
        s.record("b", ok=False)
        clock.t += 1
    assert s.decide("b") is None  # within 30 s of the last switch
    clock.t += 30
    s.record("a", ok=True, latency_s=0.05)
    assert s.decide("b") is None  # a still > 0.7 in its window: no candidate (c too)


def test_error_rate_at_threshold_is_not_clearly_worse():
    clock = Clock()
    s = RpcScorer("c", ["a", "b"], clock=clock)
    for i in range(10):
        s.record("a", ok=i >= 7, latency_s=0.05)  # 0.7 exactly
        s.record("b", ok=True, latency_s=0.05)
    assert s.decide("a") is None


def test_p70_rule_needs_3s_and_3x_the_best():
    clock = Clock()
    s = RpcScorer("c", ["a", "b"], clock=clock)
    for _ in range(10):
        s.record("a", ok=True, latency_s=3.5)
        s.record("b", ok=True, latency_s=1.5)
    assert s.decide("a") is None  # > 3 s but only 2.3x the best
    s2 = RpcScorer("c", ["a", "b"], clock=clock)
    for _ in range(10):
        s2.record("a", ok=True, latency_s=3.5)
        s2.record("b", ok=True, latency_s=0.2)
    to, why = s2.decide("a")
    assert to == "b" and why.startswith("p70 3.5 s > 3 s")


def test_lag_must_last_30s():
    clock = Clock()
    s = RpcScorer("c", ["a", "b"], clock=clock)
    for _ in range(29):
        s.record("a", ok=True, latency_s=0.05, head=80, best=100)
        s.record("b", ok=True, latency_s=0.05, head=100, best=100)
        clock.t += 1
    assert s.decide("a") is None  # 20 behind for 29 s
    clock.t += 1
    s.record("a", ok=True, latency_s=0.05, head=81, best=101)
    assert s.decide("a") == ("b", "20 blocks behind the best head for 30 s")
    s.record("a", ok=True, latency_s=0.05, head=100, best=101)  # caught up: clock restarts
    assert s.decide("a") is None


# --------------------------------------------------------------------------- proxies


@asynccontextmanager
async def proxy(upstream: str):
    """A JSON-RPC proxy on 127.0.0.1 in front of `upstream`; `mode` injects faults:
    error (every call a JSON-RPC error), lag=N (latest is head - N), delay=S, logs=[] (eth_getLogs empty)."""
    import aiohttp
    from aiohttp import web

    mode: dict = {}
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def head() -> int:
        async with session.post(upstream, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"}) as r:
            return int((await r.json())["result"], 16)

    async def fix(req: dict) -> dict | None:
        if mode.get("error"):
            return {"jsonrpc": "2.0", "id": req.get("id"), "error": {"code": -32000, "message": "injected failure"}}
        if mode.get("lag") and req.get("method") == "eth_getBlockByNumber" and req["params"][0] == "latest":
            req["params"][0] = hex(max(0, await head() - mode["lag"]))
        if "logs" in mode and req.get("method") == "eth_getLogs":
            return {"jsonrpc": "2.0", "id": req.get("id"), "result": mode["logs"]}
        return None

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        if mode.get("delay"):
            await asyncio.sleep(mode["delay"])  # the injected latency (the fault), not a test wait
        reqs = body if isinstance(body, list) else [body]
        out = []
        for req in reqs:
            local = await fix(req)
            if local is None:
                async with session.post(upstream, json=req) as r:
                    local = await r.json()
            out.append(local)
        return web.json_response(out if isinstance(body, list) else out[0])

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - aiohttp has no public getter
    try:
        yield f"http://127.0.0.1:{port}/", mode
    finally:
        await runner.cleanup()
        await session.close()


def make_chain(urls, audit=None, **kw) -> tuple[EvmChain, Clock]:
    chain = EvmChain(ChainSpec(name="local", endpoints=tuple(urls), chain_id=31337, max_head_age=None,
                               failover=True, failover_after=100, timeout=3.0, **kw))
    chain.endpoints.on_switch = audit_switches(audit)
    clock = Clock()
    chain.scorer.clock = clock
    return chain, clock


def findings_of(chain: EvmChain):
    r = chain.scorer.reading("rpcscore.local", chain.endpoints.active.name)
    return {f.key: f for f in evaluate(Snapshot(readings={"rpcscore.local": (r,)}), RuleContext())}, r


@pytest.mark.evm
async def test_errors_switch_automatically_audited_and_a_finding(anvil, tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl")
    async with proxy(anvil.url) as (u1, m1), proxy(anvil.url) as (u2, _m2):
        chain, clock = make_chain([u1, u2], audit)
        try:
            await chain.poll()
            assert chain.endpoints.active.name == "rpc1"
            m1["error"] = True
            for _ in range(5):
                clock.t += 2
                await chain.poll()
            assert chain.endpoints.active.name == "rpc2"  # error rate > 0.7 (failover_after alone: 100)
            found, r = findings_of(chain)
            f = found["rpc-switched:local"]
            assert "rpc1 -> rpc2: error rate" in f.summary and f.playbook == "rpc-degraded"
            s1 = next(s for s in r.scores if s.name == "rpc1")
            assert s1.error_rate > 0.7 and s1.chain_id == 31337
            s2 = next(s for s in r.scores if s.name == "rpc2")
            assert s2.p50_ms is not None and s2.p95_ms is not None and s2.lag == 0
            await audit.flush()
            entries = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
            switches = [e for e in entries if e["action"] == "chain.failover"]
            assert len(switches) == 1 and switches[0]["params"] == {"automatic": True}
            assert switches[0]["after"] == chain.endpoints.active.display and "score" in switches[0]["reason"]
            # rpc2 fails too: no second switch within 30 s
            m1.pop("error")
            for _ in range(3):
                clock.t += 1
                await chain.poll()
            assert chain.endpoints.active.name == "rpc2"
            clock.t += 700  # the finding lasts 10 min
            assert "rpc-switched:local" not in findings_of(chain)[0]
        finally:
            await chain.aclose()


@pytest.mark.evm
async def test_lag_16_blocks_for_30s_switches(anvil):
    async with proxy(anvil.url) as (u1, m1), proxy(anvil.url) as (u2, _m2):
        chain, clock = make_chain([u1, u2])
        try:
            anvil.mine(max(0, 40 - anvil.block_number()))  # a head of at least 40
            m1["lag"] = 20
            await chain.poll()
            clock.t += 20
            await chain.poll()
            assert chain.endpoints.active.name == "rpc1", (chain.scorer.last_switch, chain.endpoints.switches)  # 20 s only
            clock.t += 11
            await chain.poll()
            assert chain.endpoints.active.name == "rpc2"
            assert "blocks behind the best head for" in chain.scorer.last_switch
        finally:
            await chain.aclose()


@pytest.mark.evm
async def test_slow_endpoint_switches_on_p70(anvil):
    async with proxy(anvil.url) as (u1, m1), proxy(anvil.url) as (u2, _m2):
        chain, clock = make_chain([u1, u2])
        chain.scorer.policy = Policy(p70_s=0.15)  # the 3 s rule, scaled down: 0.15 s and 3x the best
        try:
            m1["delay"] = 0.3
            for _ in range(5):
                clock.t += 2
                await chain.poll()
            assert chain.endpoints.active.name == "rpc2", chain.scorer.scores("rpc1")
            assert chain.scorer.last_switch.startswith("rpc1 -> rpc2: p70")
        finally:
            await chain.aclose()


@pytest.mark.evm
async def test_quorum_two_of_three_and_disagreement_finding(anvil, escrow):
    async with proxy(anvil.url) as (u1, _m1), proxy(anvil.url) as (u2, m2), proxy(anvil.url) as (u3, m3):
        chain, _clock = make_chain([u1, u2, u3], verify_quorum=2)
        try:
            await chain.poll()
            head = anvil.block_number()
            m3["logs"] = []  # one endpoint lies: 2 of 3 still agree
            logs = await chain.get_logs_chunked(escrow.address, [], escrow.deploy_block, head)
            assert logs, "the escrow has logs"
            m2["logs"] = [{"bogus": True}]  # now all three differ
            with pytest.raises(Disagreement, match="no 2 of 3 endpoints agree"):
                await quorum_request(chain.endpoints, "eth_getLogs",
                                     [{"address": escrow.address, "fromBlock": hex(escrow.deploy_block),
                                       "toBlock": hex(head)}], 2, scorer=chain.scorer)
            found, _r = findings_of(chain)
            assert "rpc-disagree:local" in found and "eth_getLogs" in found["rpc-disagree:local"].evidence[0]
        finally:
            await chain.aclose()


@pytest.mark.evm
async def test_a_verdict_on_disagreeing_endpoints_is_unknown(anvil, escrow):
    from backends.model import Order, Verdict
    from backends.sources.evm import find_event
    from backends.sources.orders import ReleaseVerifier

    oid = "quorum-1"
    escrow.release(oid, 10**15)
    anvil.mine(2)
    async with proxy(anvil.url) as (u1, _m1), proxy(anvil.url) as (u2, m2), proxy(anvil.url) as (u3, m3):
        chain, _clock = make_chain([u1, u2, u3], verify_quorum=2)
        try:
            await chain.poll()
            v = ReleaseVerifier(chain, address=escrow.address, event=find_event(escrow.abi, "EscrowReleased"),
                                confirmations=1, start_block=escrow.deploy_block)
            order = Order(id=oid, state="PENDING")
            m3["logs"] = []  # one endpoint says "not released": 2 of 3 still agree on the release
            assert (await v.verify([order]))[oid].verdict is Verdict.RELEASED
            m2["logs"] = [{"bogus": True}]  # no 2 agree: the fix is not decided on it
            got = (await v.verify([order]))[oid]
            assert got.verdict is Verdict.UNKNOWN and "agree" in got.reason
        finally:
            await chain.aclose()
