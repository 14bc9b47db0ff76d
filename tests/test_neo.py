"""Neo N3 against JSON-RPC answers shaped as Neo's documentation shows them (RpcServer plugin:
getblockcount, invokefunction, getcontractstate, and error answers), served on 127.0.0.1."""

from __future__ import annotations

import copy
from contextlib import asynccontextmanager

from backends.engine.rules import RuleContext, evaluate
from backends.model import Severity, Snapshot
from backends.sources.neo import GAS_HASH, NeoChain

BANK = "0x86df72a6b4ab5335d506294f9ce993722253b6e2"
NEO_TOKEN = "0xf61eebf573ea36593fd43aa150c055ad7906ab83"
UNKNOWN = "0x1111111111111111111111111111111111111111"

# the documented answers (docs/en-us/reference/rpc/latest-version/api/*.md), trimmed manifests
BLOCKCOUNT = {"jsonrpc": "2.0", "id": 1, "result": 991991}
INVOKE = {"jsonrpc": "2.0", "id": 1, "result": {
    "script": "DAABECcMFPqJ+ywU3w9Z3d8E9uVlF/KzSq7rDBTitlMicpPpnE8pBtU1U6u0pnLfhhTAHwwIdHJhbnNmZXIMFIOrBnmtVcBQoTrUP1k26nP16x72QWJ9W1I=",
    "state": "HALT", "gasconsumed": "999972", "exception": None,
    "stack": [{"type": "Integer", "value": "150000000"}]}}
FAULT = {"jsonrpc": "2.0", "id": 1, "result": {"script": "", "state": "FAULT", "gasconsumed": "1007390",
                                               "exception": "Called Contract Does Not Exist", "stack": []}}
STATE = {"jsonrpc": "2.0", "id": 1, "result": {
    "id": -3, "updatecounter": 0, "hash": NEO_TOKEN,
    "nef": {"magic": 860243278, "compiler": "neo-core-v3.0", "tokens": [], "script": "AP1BGvd7Zw==", "checksum": 3921333105},
    "manifest": {"name": "NeoToken", "groups": [], "supportedstandards": ["NEP-17"], "abi": {"methods": [], "events": []},
                 "permissions": [{"contract": "*", "methods": "*"}], "trusts": [], "extra": None}}}
UNKNOWN_CONTRACT = {"jsonrpc": "2.0", "id": 1, "error": {"code": -100, "message": "Unknown contract"}}


@asynccontextmanager
async def neo_node(answers: dict):
    from aiohttp import web

    seen: list = []

    async def handle(request):
        body = await request.json()
        seen.append(body)
        m = body["method"]
        a = answers[m]
        if m == "getcontractstate" and body["params"][0] == UNKNOWN:
            a = UNKNOWN_CONTRACT
        a = copy.deepcopy(a)
        a["id"] = body.get("id")
        return web.json_response(a)

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    try:
        yield f"http://127.0.0.1:{port}/", answers, seen
    finally:
        await runner.cleanup()


def findings(r):
    return {f.key: f for f in evaluate(Snapshot(readings={r.source: (r,)}), RuleContext())}


async def test_block_count_lag_gas_and_contract_state():
    a1 = {"getblockcount": BLOCKCOUNT, "invokefunction": INVOKE, "getcontractstate": STATE}
    a2 = {**a1, "getblockcount": {"jsonrpc": "2.0", "id": 1, "result": 991981}}
    async with neo_node(a1) as (u1, _x, seen), neo_node(a2) as (u2, _y, _s2):
        neo = NeoChain("neo", [u1, u2], gas_bank=BANK, gas_minimum=2.0, watch=(NEO_TOKEN, UNKNOWN), max_lag=5)
        try:
            (r,) = await neo.poll()
            assert [(e.height, e.lag) for e in r.endpoints] == [(991990, 0), (991980, 10)]
            assert r.gas == 150_000_000 and r.gas_error == ""
            inv = next(b for b in seen if b["method"] == "invokefunction")
            assert inv["params"] == [GAS_HASH, "balanceOf", [{"type": "Hash160", "value": BANK}]]
            token = next(c for c in r.contracts if c.hash == NEO_TOKEN)
            assert token.name == "NeoToken" and token.update_counter == 0 and token.checksum == 3921333105
            unknown = next(c for c in r.contracts if c.hash == UNKNOWN)
            assert unknown.error == "RPC error -100: Unknown contract"
            f = findings(r)
            assert f["neo-lag:neo:rpc2"].severity is Severity.P2
            assert f["gas-low:neo:gas-bank"].severity is Severity.P1
            assert "1.5 GAS is below its minimum 2 GAS" in f["gas-low:neo:gas-bank"].summary
            assert f[f"neo-contract:neo:{UNKNOWN}"].severity is Severity.P0

            # the contract is updated; the GAS invocation FAULTs: the balance is unknown, no gas finding
            a1["getcontractstate"] = copy.deepcopy(STATE)
            a1["getcontractstate"]["result"]["updatecounter"] = 1
            a1["invokefunction"] = FAULT
            (r2,) = await neo.poll()
            assert r2.gas is None and "FAULT" in r2.gas_error and "Does Not Exist" in r2.gas_error
            f2 = findings(r2)
            assert "gas-low:neo:gas-bank" not in f2
            assert f2[f"neo-contract-updated:neo:{NEO_TOKEN}"].severity is Severity.P1
        finally:
            await neo.aclose()


async def test_every_endpoint_down_is_an_rpc_failure():
    neo = NeoChain("neo", ["http://127.0.0.1:9/"], timeout=1.0)
    try:
        (r,) = await neo.poll()
        assert r.endpoints[0].height is None and r.endpoints[0].error
        assert findings(r)["rpc-failure:neo"].severity is Severity.P0
    finally:
        await neo.aclose()


async def test_config_builds_the_neo_source(tmp_path, monkeypatch):
    from backends.config import load_config_text
    from backends.engine.core import build_engine

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    a = {"getblockcount": BLOCKCOUNT, "invokefunction": INVOKE, "getcontractstate": STATE}
    async with neo_node(a) as (url, _a, _seen):
        cfg = load_config_text(f'[warroom]\nstate_dir = "{tmp_path}"\n[chain.neo]\nkind = "jsonrpc"\n'
                               f'endpoints = ["{url}"]\ngas_bank = "{BANK}"\ngas_minimum = 2\n'
                               f'watch_contracts = ["{NEO_TOKEN}"]\n')
        assert cfg.chain["neo"].gas_bank == BANK and cfg.chain["neo"].gas_minimum == 2.0
        engine = build_engine(cfg, with_logs=False)
        try:
            src = engine.monitor.sources["neo.neo"]
            (r,) = await src.poll()
            assert r.gas == 150_000_000 and r.gas_minimum == 200_000_000 and r.contracts[0].name == "NeoToken"
        finally:
            await engine.stop()


def test_a_neo_contract_finding_skips_the_evm_pause_step():
    from backends.engine.playbooks import PlaybookBook
    from backends.sources.neo import NeoContract, NeoReading

    r = NeoReading(source="neo.neo", chain="neo", contracts=(NeoContract(hash=UNKNOWN, error="RPC error -100"),))
    (f,) = findings(r).values()
    step = PlaybookBook().next_step(f)
    assert step is not None and step.action == "escalate"  # not chain.pause (EVM only)
