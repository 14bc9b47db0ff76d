"""Neo N3 for real: block count per endpoint with lag, the gas bank's GAS balance and the state
of watched contracts, over Neo's JSON-RPC (the RpcServer plugin's documented methods).

- `getblockcount` on every endpoint (height = count - 1); lag behind the best endpoint.
- GAS of `gas_bank` by `invokefunction` on the GAS token's `balanceOf` (Hash160 parameter);
  the stack's Integer is in 10^-8 GAS; state FAULT or an error answer makes it unknown.
- `getcontractstate` of each watched script hash: name, update counter, NEF checksum; an
  error answer ("Unknown contract") is a finding.
Rules: lag >= max_lag (P2, playbook rpc-failure), GAS below `gas_minimum` (P1; 0: P0,
playbook gas-low), a watched contract missing (P0) or updated since the first reading (P1).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from backends.engine.rules import rule
from backends.model import Finding, Reading, Severity
from backends.sources.jsonrpc import HttpRpc, RpcError

GAS_HASH = "0xd2a4cff31913016155e38e474a2c06d08be276cf"  # the native GasToken (Hash160, big endian)
GAS_DECIMALS = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class NeoEndpoint:
    name: str
    url: str
    height: int | None = None
    lag: int | None = None
    latency_ms: float | None = None
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class NeoContract:
    hash: str
    name: str = ""
    update_counter: int | None = None
    checksum: int | None = None
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class NeoReading(Reading):
    chain: str
    endpoints: tuple[NeoEndpoint, ...] = ()
    max_lag: int = 5
    gas_bank: str | None = None
    gas: int | None = None  # 10^-8 GAS
    gas_minimum: int | None = None
    gas_error: str = ""
    contracts: tuple[NeoContract, ...] = ()
    changed: tuple[str, ...] = ()  # contracts whose update counter grew since the first reading

    def describe(self) -> str:
        """One line for `warroom health`."""
        up = [e for e in self.endpoints if e.height is not None]
        best = max((e.height for e in up if e.height is not None), default=None)
        text = f"neo {self.chain}: {len(up)}/{len(self.endpoints)} endpoints" + (f", height {best}" if best else "")
        if self.gas_bank:
            text += f", gas bank {gas_text(self.gas)}"
        return text + (f", {len(self.contracts)} contract(s)" if self.contracts else "")


def _err(exc: BaseException) -> str:
    if isinstance(exc, RpcError):
        return f"RPC error {exc.code}: {exc.message}"
    reason = getattr(exc, "reason", None)
    return str(reason or exc)[:200] or type(exc).__name__


def gas_text(v: int | None) -> str:
    if v is None:
        return "?"
    return f"{v / 10**GAS_DECIMALS:,.8f}".rstrip("0").rstrip(".") + " GAS"


class NeoChain:
    """Monitor source for a Neo N3 chain (`[chain.X] kind = "jsonrpc"` with gas_bank / watch_contracts)."""

    kind = "chain"  # `warroom health chain` and the Chain pane

    def __init__(self, name: str, urls: list[str], *, gas_bank: str | None = None,
                 gas_minimum: float | None = None, watch: tuple[str, ...] = (), max_lag: int = 5,
                 timeout: float = 5.0, interval: float = 5.0) -> None:
        self.chain = name
        self.name = f"neo.{name}"
        self.rpcs = [(f"rpc{i + 1}", u, HttpRpc(u, timeout=timeout, source=self.name)) for i, u in enumerate(urls)]
        self.gas_bank = gas_bank
        self.gas_minimum = int(round(gas_minimum * 10**GAS_DECIMALS)) if gas_minimum is not None else None
        self.watch = watch
        self.max_lag = max_lag
        self.timeout = timeout * 2 + 1
        self.interval = interval
        self.first_counter: dict[str, int] = {}

    async def _count(self, name: str, url: str, rpc: HttpRpc) -> NeoEndpoint:
        t0 = time.perf_counter()
        try:
            n = await rpc.call("getblockcount", [])
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"getblockcount: not a block count: {str(n)[:40]}")
            return NeoEndpoint(name=name, url=url, height=n - 1, latency_ms=(time.perf_counter() - t0) * 1000)
        except Exception as exc:  # noqa: BLE001 - an endpoint's failure is shown, not raised
            return NeoEndpoint(name=name, url=url, error=_err(exc))

    async def _gas(self, rpc: HttpRpc) -> tuple[int | None, str]:
        if not self.gas_bank:
            return None, ""
        try:
            r = await rpc.call("invokefunction", [GAS_HASH, "balanceOf", [{"type": "Hash160", "value": self.gas_bank}]])
        except Exception as exc:  # noqa: BLE001
            return None, _err(exc)
        if not isinstance(r, dict) or r.get("state") != "HALT":
            why = r.get("exception") if isinstance(r, dict) else None
            return None, f"invokefunction balanceOf: {r.get('state') if isinstance(r, dict) else 'no result'}" + (
                f" ({str(why)[:120]})" if why else "")
        stack = r.get("stack") or []
        item = stack[0] if stack and isinstance(stack[0], dict) else {}
        if item.get("type") != "Integer":
            return None, f"balanceOf returned {item.get('type', 'nothing')}, not an Integer"
        try:
            return int(str(item.get("value"))), ""
        except ValueError:
            return None, "balanceOf: not an integer"

    async def _contract(self, rpc: HttpRpc, h: str) -> NeoContract:
        try:
            r = await rpc.call("getcontractstate", [h])
        except Exception as exc:  # noqa: BLE001
            return NeoContract(hash=h, error=_err(exc))
        if not isinstance(r, dict):
            return NeoContract(hash=h, error="getcontractstate: no result")
        m, n = r.get("manifest"), r.get("nef")
        manifest: dict[str, Any] = m if isinstance(m, dict) else {}
        nef: dict[str, Any] = n if isinstance(n, dict) else {}
        uc = r.get("updatecounter")
        ck = nef.get("checksum")
        return NeoContract(hash=str(r.get("hash") or h), name=str(manifest.get("name") or "")[:60],
                           update_counter=uc if isinstance(uc, int) else None,
                           checksum=ck if isinstance(ck, int) else None)

    async def poll(self) -> list[NeoReading]:
        eps = list(await asyncio.gather(*(self._count(n, u, r) for n, u, r in self.rpcs)))
        best = max((e.height for e in eps if e.height is not None), default=None)
        eps = [NeoEndpoint(name=e.name, url=e.url, height=e.height, latency_ms=e.latency_ms, error=e.error,
                           lag=(best - e.height) if best is not None and e.height is not None else None) for e in eps]
        up = [i for i, e in enumerate(eps) if e.height is not None]
        rpc = self.rpcs[min(up, key=lambda i: eps[i].lag or 0) if up else 0][2]
        gas, gas_error = await self._gas(rpc)
        contracts = tuple(await asyncio.gather(*(self._contract(rpc, h) for h in self.watch)))
        changed = []
        for c in contracts:
            if c.update_counter is None:
                continue
            first = self.first_counter.setdefault(c.hash, c.update_counter)
            if c.update_counter > first:
                changed.append(c.hash)
        return [NeoReading(source=self.name, chain=self.chain, endpoints=tuple(eps), max_lag=self.max_lag,
                           gas_bank=self.gas_bank, gas=gas, gas_minimum=self.gas_minimum, gas_error=gas_error,
                           contracts=contracts, changed=tuple(changed))]

    async def aclose(self) -> None:
        for _n, _u, r in self.rpcs:
            await r.aclose()


def neo_sources(config: Any) -> list[NeoChain]:
    """A NeoChain per `[chain.X] kind = "jsonrpc"` with gas_bank or watch_contracts."""
    out = []
    for name, c in (getattr(config, "chain", None) or {}).items():
        if c.kind != "jsonrpc" or not (c.gas_bank or c.watch_contracts):
            continue
        urls = [u.reveal() if hasattr(u, "reveal") else str(u) for u in c.endpoints]
        out.append(NeoChain(name, urls, gas_bank=c.gas_bank, gas_minimum=c.gas_minimum, watch=c.watch_contracts,
                            max_lag=c.max_lag, timeout=c.timeout, interval=c.interval))
    return out


@rule(NeoReading)
def neo_rules(r: NeoReading, ctx: Any) -> list[Finding]:
    out: list[Finding] = []
    for e in r.endpoints:
        if e.lag is not None and e.lag >= r.max_lag:
            out.append(Finding(key=f"neo-lag:{r.chain}:{e.name}", severity=Severity.P2, source=r.source,
                               summary=f"{r.chain}: {e.name} is {e.lag} blocks behind the best endpoint",
                               evidence=(f"getblockcount: height {e.height}",), playbook="rpc-failure",
                               target=f"chain:{r.chain}"))
    if r.endpoints and all(e.height is None for e in r.endpoints):
        out.append(Finding(key=f"rpc-failure:{r.chain}", severity=Severity.P0, source=r.source,
                           summary=f"{r.chain}: no Neo endpoint answers getblockcount",
                           evidence=tuple(f"{e.name}: {e.error}" for e in r.endpoints), playbook="rpc-failure",
                           target=f"chain:{r.chain}"))
    if r.gas is not None and r.gas_minimum is not None and r.gas < r.gas_minimum:
        out.append(Finding(key=f"gas-low:{r.chain}:gas-bank", severity=Severity.P0 if r.gas == 0 else Severity.P1,
                           source=r.source,
                           summary=f"{r.chain}: gas bank {gas_text(r.gas)} is below its minimum {gas_text(r.gas_minimum)}",
                           evidence=(f"invokefunction balanceOf({r.gas_bank}) on GAS {GAS_HASH}",),
                           playbook="gas-low", target=f"chain:{r.chain}"))
    for c in r.contracts:
        if c.error:
            out.append(Finding(key=f"neo-contract:{r.chain}:{c.hash}", severity=Severity.P0, source=r.source,
                               summary=f"{r.chain}: watched contract {c.hash} not found ({c.error})",
                               evidence=("getcontractstate failed: wrong hash, wrong network, or destroyed?",),
                               playbook="contract-guardrail", target=f"neo:{r.chain}:{c.hash}"))
        elif c.hash in r.changed:
            out.append(Finding(key=f"neo-contract-updated:{r.chain}:{c.hash}", severity=Severity.P1, source=r.source,
                               summary=f"{r.chain}: contract {c.name or c.hash} was updated "
                                       f"(updatecounter {c.update_counter})",
                               evidence=(f"nef checksum {c.checksum}",), playbook="contract-guardrail",
                               target=f"neo:{r.chain}:{c.hash}"))
    return out


__all__ = ["GAS_HASH", "NeoChain", "NeoContract", "NeoEndpoint", "NeoReading", "gas_text", "neo_rules",
           "neo_sources"]
