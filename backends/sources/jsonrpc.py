"""JSON-RPC endpoints of one chain: health, lag, agreement, the active endpoint, failover.

This module holds what EVM and non-EVM (Neo N3) chains share:

- `HttpRpc`: a raw JSON-RPC 2.0 client over aiohttp (imported lazily), with a timeout
  on every call; errors become `RpcError` (the node answered with an error) or
  `BackendError` (it did not answer: refused, hanging, bad HTTP).
- `EndpointSet`: several endpoints of one chain, each probed per poll for its head,
  head age, chain id, latency and error rate; the lag against the best endpoint;
  the block hash at a common height (endpoints that disagree are reported). One
  endpoint is *active*: when it fails its check `failover_after` times in a row and
  failover is on, the set switches to the next healthy endpoint (audited through
  `on_switch`). An operator can pin an endpoint (no automatic switch while pinned).
- `JsonRpcChain`: a `Source` for non-EVM chains, probing with a configured method
  (`getblockcount` for Neo N3).
- `ChainFailoverAction` / `ChainPinAction`: the operator's `chain.failover` and
  `chain.pin`, for any chain built on an `EndpointSet`.

The EVM specifics (eth_* probes, contracts, balances, pause) live in `backends/sources/evm.py`.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from backends.actions.base import (
    Action,
    ActionPlan,
    ActionResult,
    Change,
    Danger,
    Guard,
    ProgressFn,
)
from backends.clock import SYSTEM_CLOCK, Clock
from backends.engine.rules import rule
from backends.errors import ActionRefused, BackendError, describe_exception
from backends.model import ChainReading, EndpointReading, Finding, Severity, utcnow
from backends.sources.http import AnswerTooLarge, format_size, read_capped, too_large  # noqa: F401 - re-exported
from backends.units import display_url as display_url  # the one display_url, re-exported here

if TYPE_CHECKING:
    import aiohttp

# --------------------------------------------------------------------------- specs

# Bounds on what a source accepts (issue 21: a 50 MB hex balance froze the console).
DEFAULT_MAX_ANSWER = 1024 * 1024  # bytes of one HTTP answer; configurable per chain (`max_answer`)
PARSE_IN_THREAD = 256 * 1024  # answers bigger than this are parsed off the event loop
UINT256_MAX = 2**256 - 1
_MAX_NUMBER_CHARS = 2 + 64  # "0x" + 64 hex digits (78 decimal digits also fit)



@dataclass(frozen=True, slots=True, kw_only=True)
class ContractSpec:
    name: str
    address: str
    abi: tuple[dict[str, Any], ...] = ()
    pausable: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceSpec:
    """A watched balance: the native coin, or (EVM) an ERC-20 token's `balanceOf(address)`."""

    name: str
    address: str
    minimum: int | None = None  # smallest unit
    decimals: int | None = 18  # None (a token): read `decimals()` from the token
    symbol: str | None = "ETH"  # None (a token): read `symbol()` from the token
    token: str | None = None  # EVM: the ERC-20 contract address; None: the native coin
    minimum_units: Decimal | None = None  # a token minimum in whole tokens, scaled by the decimals read


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainSpec:
    """One `[chain.NAME]` section, as plain values."""

    name: str
    endpoints: tuple[str, ...]
    kind: str = "evm"  # evm | jsonrpc
    chain_id: int | None = None  # expected (EVM chain id; Neo: network magic)
    failover: bool = True
    failover_after: int = 1  # consecutive failed checks of the active endpoint before switching
    max_lag: int = 5
    max_head_age: float | None = 60.0
    confirmations: int = 65
    getlogs_chunk: int = 2000
    timeout: float = 5.0
    interval: float = 5.0
    head_method: str = "eth_blockNumber"
    hash_method: str | None = None  # jsonrpc kind: method taking a height, e.g. "getblockhash"
    version_method: str | None = None  # jsonrpc kind: e.g. "getversion" (network magic check)
    head_offset: int = 0  # jsonrpc kind: getblockcount returns height + 1 -> -1
    signer_env: str | None = None
    keystore: str | None = None
    contracts: tuple[ContractSpec, ...] = ()
    balances: tuple[BalanceSpec, ...] = ()
    max_answer: int = DEFAULT_MAX_ANSWER  # bytes of one RPC answer; more makes the source DEGRADED
    verify_quorum: int = 1  # endpoints that must agree on a verification read (eth_getLogs); 1: the active one

    @property
    def source_name(self) -> str:
        return f"chain.{self.name}"


# --------------------------------------------------------------------------- raw JSON-RPC


class RpcError(Exception):
    """The node answered with a JSON-RPC error object. Its message is text from outside:
    kept inert (control characters and ANSI escapes shown escaped, cut to 300 characters)."""

    def __init__(self, code: int | None, message: str, data: Any = None) -> None:
        self.code = code if isinstance(code, int) and not isinstance(code, bool) and abs(code) < 2**63 else None
        self.message = inert(message)
        self.data = data
        super().__init__(f"RPC error {self.code}: {self.message}")


class InvalidAnswer(ValueError):
    """The node answered, but with something that is not a valid value (a number over
    2^256, a block number going backwards, a wrong chain id): never used as a value."""



def inert(text: Any, max_chars: int = 300) -> str:
    """Text from outside (an error message, a body) made safe to show: every control
    character (an ANSI escape's ESC too) shown escaped, cut (`backends.sanitize.inert`)."""
    from backends.sanitize import inert as _inert

    return _inert(text, max_chars)


async def loads(body: bytes) -> Any:
    """json.loads, in a worker thread for a big body (CPU-heavy parsing off the loop)."""
    if len(body) <= PARSE_IN_THREAD:
        return json.loads(body)
    from backends.engine.monitor import to_thread

    return await to_thread(json.loads, body)


def _host_of(url: str) -> str:
    try:
        p = urlsplit(url)
        return f"{p.hostname}:{p.port}" if p.port else (p.hostname or url)
    except ValueError:
        return url


class HttpRpc:
    """JSON-RPC 2.0 over HTTP POST for one URL. One aiohttp session per event loop."""

    def __init__(self, url: str, *, timeout: float = 5.0, source: str = "rpc",
                 max_answer: int = DEFAULT_MAX_ANSWER) -> None:
        self.url = url
        self.timeout = timeout
        self.source = source
        self.max_answer = max_answer
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        self.no_batch = False  # set when the server refused a JSON-RPC batch

    async def _get_session(self) -> aiohttp.ClientSession:
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=16, force_close=False),
                json_serialize=json.dumps,
            )
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        s, self._session = self._session, None
        if s is not None and not s.closed:
            try:
                if self._loop is asyncio.get_running_loop():
                    await s.close()
            except Exception:
                pass

    async def _post(self, payload: Any, time_limit: float | None, max_answer: int | None = None) -> Any:
        import aiohttp

        t = self.timeout if time_limit is None else time_limit
        deadline = time.monotonic() + t
        for attempt in (1, 2):
            session = await self._get_session()
            try:
                async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                    async with session.post(
                        self.url, json=payload, headers={"Content-Type": "application/json"}
                    ) as resp:
                        if resp.status != 200:
                            head = await resp.content.read(512)
                            resp.close()
                            raise BackendError(
                                self.source,
                                f"HTTP {resp.status} from {display_url(self.url)}: {inert(head, 120)}",
                            )
                        # the whole answer within the deadline (a drip of one byte per second
                        # times out) and within the size cap (never buffered past it)
                        body = await read_capped(resp, max_answer or self.max_answer)
                break
            except AnswerTooLarge as exc:
                raise BackendError(self.source, f"{display_url(self.url)}: {exc}") from None
            except TimeoutError:
                raise BackendError(self.source, f"{display_url(self.url)} timed out after {t:g}s") from None
            except aiohttp.ClientConnectorError as exc:
                reason = ("connection refused" if isinstance(exc.os_error, ConnectionRefusedError)
                          else describe_exception(exc.os_error))
                raise BackendError(self.source, f"{reason} at {_host_of(self.url)}") from None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # a kept-alive connection the server closed: retry once on a fresh one
                if attempt == 1 and time.monotonic() < deadline:
                    continue
                raise BackendError(self.source, f"{display_url(self.url)}: {describe_exception(exc)}") from None
            except aiohttp.ClientError as exc:
                raise BackendError(self.source, f"{display_url(self.url)}: {describe_exception(exc)}") from None
            except OSError as exc:
                raise BackendError(self.source, f"{display_url(self.url)}: {describe_exception(exc)}") from None
        try:
            return await loads(body)
        except (ValueError, RecursionError):
            raise BackendError(self.source, f"{display_url(self.url)} answered with invalid JSON "
                                            f"({format_size(len(body))})") from None

    @staticmethod
    def _unwrap(reply: Any) -> Any:
        if not isinstance(reply, dict):
            raise RpcError(None, "malformed reply")
        err = reply.get("error")
        if err:
            if isinstance(err, dict):
                raise RpcError(err.get("code"), str(err.get("message", "")), err.get("data"))
            raise RpcError(None, str(err))
        return reply.get("result")

    async def call(self, method: str, params: Sequence[Any] = (), *, time_limit: float | None = None,
                   max_answer: int | None = None) -> Any:
        """One call. `max_answer` raises the size cap for a call whose answer is big by
        nature (eth_getLogs over a range of blocks)."""
        payload = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        return self._unwrap(await self._post(payload, time_limit, max_answer))

    async def _one_by_one(self, calls: Sequence[tuple[str, Sequence[Any]]], time_limit: float | None) -> list[Any]:
        async def one(m: str, p: Sequence[Any]) -> Any:
            try:
                return await self.call(m, p, time_limit=time_limit)
            except RpcError as exc:
                return exc

        return list(await asyncio.gather(*(one(m, p) for m, p in calls)))

    async def batch(
        self, calls: Sequence[tuple[str, Sequence[Any]]], *, time_limit: float | None = None
    ) -> list[Any]:
        """Several calls in one HTTP request. Returns results in order; an error item
        is returned as an `RpcError` instance (not raised)."""
        if not calls:
            return []
        ids = [next(self._ids) for _ in calls]
        payload = [
            {"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)} for i, (m, p) in zip(ids, calls, strict=True)
        ]
        if self.no_batch:
            return await self._one_by_one(calls, time_limit)
        replies = await self._post(payload, time_limit)
        if isinstance(replies, dict):  # a server without batch support answers with one error
            self.no_batch = True
            return await self._one_by_one(calls, time_limit)
        if not isinstance(replies, list):
            raise BackendError(self.source, f"{display_url(self.url)} answered a batch with "
                                            f"{type(replies).__name__} (invalid answer)")
        by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
        out: list[Any] = []
        for i in ids:
            r = by_id.get(i)
            if r is None:
                out.append(RpcError(None, "missing reply in batch"))
                continue
            try:
                out.append(self._unwrap(r))
            except RpcError as exc:
                out.append(exc)
        return out


def parse_int(value: Any, what: str = "number", *, max_chars: int = 2 + 512 + 12) -> int:
    """A JSON-RPC quantity ("0x1f", 31, "31") as a non-negative int. Its text's length is
    checked before converting it (default: up to a 2048-bit logs bloom), so a 50 MB string
    costs nothing; anything else raises `InvalidAnswer`. Values: `parse_uint`."""
    if isinstance(value, bool):
        raise InvalidAnswer(f"{what} is not a number: {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        if len(value) > max_chars:
            raise InvalidAnswer(f"{what} of {len(value):,} characters is over 2^256 (invalid answer)")
        try:
            n = int(value, 16) if value.startswith(("0x", "0X")) else int(value)
        except ValueError:
            raise InvalidAnswer(f"{what} is not a number: {inert(value, 40)!r}") from None
    else:
        raise InvalidAnswer(f"{what} is not a number: {inert(repr(value), 40)}")
    if n < 0:
        raise InvalidAnswer(f"{what} is negative: {n} (invalid answer)")
    return n


def parse_uint(value: Any, what: str = "number") -> int:
    """`parse_int` for a value (a balance, a height, a chain id): in [0, 2^256), else
    `InvalidAnswer` ("balance is over 2^256 (invalid answer)")."""
    n = parse_int(value, what, max_chars=_MAX_NUMBER_CHARS + 12)
    if n > UINT256_MAX:
        raise InvalidAnswer(f"{what} is over 2^256 (invalid answer)")
    return n


# --------------------------------------------------------------------------- endpoint set


@dataclass(frozen=True, slots=True)
class Probe:
    """What one endpoint said in one check."""

    head: int
    head_ts: float | None = None  # unix seconds of the head block
    chain_id: int | None = None
    block_hash: str | None = None  # hash of the head block (used when heights coincide)


ProbeFn = Callable[[HttpRpc], Awaitable[Probe]]
HashFn = Callable[[HttpRpc, int], Awaitable[str | None]]


@dataclass
class Endpoint:
    url: str
    name: str
    rpc: HttpRpc
    ok: bool = False
    checked: bool = False
    head: int | None = None
    head_ts: float | None = None
    chain_id: int | None = None
    latency_ms: float | None = None
    error: str = ""
    fail_streak: int = 0
    block_hash: str | None = None
    outcomes: collections.deque[bool] = field(default_factory=lambda: collections.deque(maxlen=20))
    healthy: bool = False
    problem: str = ""
    unhealthy_streak: int = 0  # consecutive checks that failed (down, wrong chain, lagging, stale)
    # the head age of a chain whose probe gives no block time (jsonrpc): observed, as the time
    # since this endpoint's height last increased (monotonic clock)
    top: int | None = None  # the height last seen
    advanced_at: float | None = None  # the set clock's monotonic() when the height last increased

    def head_age(self, now: float, now_mono: float) -> float | None:
        """Seconds since the head block (its timestamp), else since the height last increased."""
        if self.head_ts is not None:
            return now - self.head_ts
        if self.advanced_at is not None:
            return now_mono - self.advanced_at
        return None

    @property
    def display(self) -> str:
        return display_url(self.url)

    @property
    def error_rate(self) -> float:
        if not self.outcomes:
            return 0.0
        return sum(1 for o in self.outcomes if not o) / len(self.outcomes)


@dataclass(frozen=True, slots=True)
class Switch:
    chain: str
    before: str
    after: str
    reason: str
    automatic: bool
    at: Any = field(default_factory=utcnow)


class EndpointSet:
    """The endpoints of one chain and which one is active."""

    def __init__(
        self,
        chain: str,
        urls: Sequence[str],
        *,
        expected_chain_id: int | None = None,
        failover: bool = True,
        failover_after: int = 1,
        max_lag: int = 5,
        max_head_age: float | None = 60.0,
        timeout: float = 5.0,
        on_switch: Callable[[Switch], None] | None = None,
        names: Sequence[str] | None = None,
        max_answer: int = DEFAULT_MAX_ANSWER,
        clock: Clock | None = None,
    ) -> None:
        # judges head ages (block times and "height last increased"); request timeouts are real time
        self.clock: Clock = clock or SYSTEM_CLOCK
        urls = [u for u in urls if u and u.strip()]
        if not urls:
            raise ValueError(f"chain {chain!r} has no endpoints")
        self.chain = chain
        self.source = f"chain.{chain}"
        self.endpoints = [
            Endpoint(url=u, name=(names[i] if names and i < len(names) else f"rpc{i + 1}"),
                     rpc=HttpRpc(u, timeout=timeout, source=self.source, max_answer=max_answer))
            for i, u in enumerate(urls)
        ]
        self.expected_chain_id = expected_chain_id
        self.failover = failover
        self.failover_after = max(1, failover_after)
        self.max_lag = max_lag
        self.max_head_age = max_head_age
        self.timeout = timeout
        self.on_switch = on_switch
        self.active_index = 0
        self.pinned = False
        self.switches: list[Switch] = []
        self.disagreement = ""
        self.common_height: int | None = None

    # ------------------------------------------------------------------ lookup

    @property
    def active(self) -> Endpoint:
        return self.endpoints[self.active_index]

    def find(self, ref: str | int) -> int:
        """Index of an endpoint by index, name, URL or display URL."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            i = int(ref)
            if 0 <= i < len(self.endpoints):
                return i
        for i, e in enumerate(self.endpoints):
            if ref in (e.name, e.url, e.display):
                return i
        raise KeyError(ref)

    # ------------------------------------------------------------------ checks

    async def check(self, probe: ProbeFn, block_hash: HashFn | None = None) -> list[EndpointReading]:
        """Probe every endpoint concurrently, judge them, fail over if needed."""
        await asyncio.gather(*(self._probe_one(e, probe) for e in self.endpoints))
        ok = [e for e in self.endpoints if e.ok]
        best = max((e.head for e in ok if e.head is not None), default=None)
        now, now_mono = self.clock.time(), self.clock.monotonic()
        for e in self.endpoints:
            e.healthy, e.problem = self._judge(e, best, now, now_mono)
            e.unhealthy_streak = 0 if e.healthy else e.unhealthy_streak + 1
        await self._compare_hashes(ok, block_hash)
        self._maybe_failover()
        return self.readings(best)

    async def _probe_one(self, e: Endpoint, probe: ProbeFn) -> None:
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                p = await probe(e.rpc)
            if e.top is not None and p.head < e.top - self.max_lag:
                # more than max_lag blocks below what this endpoint said before: not a reorg
                # but a wrong answer (a different node behind a balancer, a reset chain). The
                # lower height is the reference from now on: a node that keeps it recovers.
                top, e.top = e.top, p.head
                raise InvalidAnswer(f"block number went backwards: {p.head:,} after {top:,} (invalid answer)")
        except (BackendError, RpcError, ValueError, TypeError, KeyError, TimeoutError) as exc:
            e.ok = False
            e.error = (
                f"timed out after {self.timeout:g}s"
                if isinstance(exc, TimeoutError)
                else (exc.reason if isinstance(exc, BackendError)
                      else str(exc) if isinstance(exc, InvalidAnswer)
                      else f"RPC error {exc.code}: {exc.message}" if isinstance(exc, RpcError)
                      else inert(describe_exception(exc), 200))
            )
            e.fail_streak += 1
            e.outcomes.append(False)
            e.latency_ms = None
        else:
            e.ok = True
            e.error = ""
            e.fail_streak = 0
            e.outcomes.append(True)
            e.head, e.head_ts, e.chain_id, e.block_hash = p.head, p.head_ts, p.chain_id, p.block_hash
            if e.top is None or p.head > e.top:
                e.advanced_at = self.clock.monotonic()
            e.top = p.head
            e.latency_ms = (time.perf_counter() - t0) * 1000.0
        e.checked = True

    def _judge(self, e: Endpoint, best: int | None, now: float, now_mono: float | None = None) -> tuple[bool, str]:
        if not e.ok:
            return False, e.error or "no answer"
        if self.expected_chain_id is not None and e.chain_id is not None and e.chain_id != self.expected_chain_id:
            return False, f"chain id {e.chain_id}, expected {self.expected_chain_id}"
        if best is not None and e.head is not None and best - e.head > self.max_lag:
            return False, f"{best - e.head} blocks behind the best endpoint"
        age = e.head_age(now, self.clock.monotonic() if now_mono is None else now_mono)
        if self.max_head_age is not None and age is not None and age > self.max_head_age:
            if e.head_ts is not None:
                return False, f"head is {age:.0f}s old"
            return False, f"head is {age:.0f}s old (height {e.head} has not increased for {age:.0f}s)"
        return True, ""

    async def _compare_hashes(self, ok: list[Endpoint], block_hash: HashFn | None) -> None:
        self.disagreement = ""
        self.common_height = None
        live = [e for e in ok if e.head is not None]
        if len(live) < 2:
            return
        common = min(e.head for e in live if e.head is not None)
        self.common_height = common
        hashes: dict[str, str | None] = {}

        async def one(e: Endpoint) -> None:
            if e.head == common and e.block_hash:
                hashes[e.name] = e.block_hash
                return
            if block_hash is None:
                return
            try:
                async with asyncio.timeout(self.timeout):
                    hashes[e.name] = await block_hash(e.rpc, common)
            except Exception:  # a failed hash lookup is not a disagreement
                pass

        await asyncio.gather(*(one(e) for e in live))
        distinct = {h for h in hashes.values() if h}
        if len(distinct) > 1:
            detail = ", ".join(f"{n}={(h or '?')[:10]}" for n, h in sorted(hashes.items()))
            self.disagreement = f"endpoints disagree on block {common}: {detail}"

    def _maybe_failover(self) -> None:
        a = self.active
        if self.pinned or not self.failover or a.healthy or a.unhealthy_streak < self.failover_after:
            return
        nxt = self.next_healthy()
        if nxt is None:
            return
        self.switch(nxt, f"automatic: {a.display} failed its check ({a.problem})", automatic=True)

    def answer_problem(self) -> str:
        """Why the last check gave no usable answer: every endpoint failed, answered with
        something invalid (too large, a number over 2^256, going backwards, bad JSON) or is
        on another chain. "" when at least one endpoint answered validly. The monitor marks
        the source DEGRADED with this reason (its readings are kept, shown stale)."""
        checked = [e for e in self.endpoints if e.checked]
        if not checked:
            return ""

        def usable(e: Endpoint) -> bool:
            wrong = (self.expected_chain_id is not None and e.chain_id is not None
                     and e.chain_id != self.expected_chain_id)
            return e.ok and not wrong

        if any(usable(e) for e in checked):
            return ""
        parts = [f"{e.name}: {e.problem or e.error or 'no answer'}" for e in checked]
        text = "; ".join(parts)
        return text if len(text) <= 300 else text[:299] + "…"

    def next_healthy(self) -> int | None:
        n = len(self.endpoints)
        for step in range(1, n):
            i = (self.active_index + step) % n
            if self.endpoints[i].healthy:
                return i
        return None

    def switch(self, index: int, reason: str, *, automatic: bool) -> Switch:
        before = self.active.display
        self.active_index = index
        sw = Switch(self.chain, before, self.active.display, reason, automatic)
        self.switches.append(sw)
        del self.switches[:-50]
        if self.on_switch is not None:
            try:
                self.on_switch(sw)
            except Exception:
                pass
        return sw

    def pin(self, index: int | None, reason: str = "") -> Switch | None:
        """Pin an endpoint as active (no automatic failover); None unpins."""
        if index is None:
            self.pinned = False
            return None
        sw = self.switch(index, reason or "pinned by operator", automatic=False) if index != self.active_index else None
        self.pinned = True
        return sw

    def readings(self, best: int | None = None) -> list[EndpointReading]:
        if best is None:
            best = max((e.head for e in self.endpoints if e.ok and e.head is not None), default=None)
        now, now_mono = self.clock.time(), self.clock.monotonic()
        out = []
        for i, e in enumerate(self.endpoints):
            out.append(
                EndpointReading(
                    source=self.source,
                    chain=self.chain,
                    url=e.display,
                    name=e.name,
                    ok=e.ok and e.healthy,
                    active=i == self.active_index,
                    pinned=self.pinned and i == self.active_index,
                    head=e.head if e.ok else None,
                    head_age_s=e.head_age(now, now_mono) if e.ok else None,
                    lag=(best - e.head) if (e.ok and best is not None and e.head is not None) else None,
                    chain_id=e.chain_id if e.ok else None,
                    chain_id_ok=(
                        None
                        if (self.expected_chain_id is None or not e.ok or e.chain_id is None)
                        else e.chain_id == self.expected_chain_id
                    ),
                    latency_ms=e.latency_ms,
                    error_rate=e.error_rate,
                    block_hash=e.block_hash if e.ok else None,
                    error=e.problem if not e.healthy else "",
                )
            )
        return out

    # ------------------------------------------------------------------ requests

    def _order(self, fallback: bool) -> list[Endpoint]:
        """The active endpoint, then (with fallback, unless pinned) the others that passed
        their last check."""
        if not fallback or self.pinned:
            return [self.active]
        others = [e for i, e in enumerate(self.endpoints) if i != self.active_index and e.healthy]
        return [self.active, *others]

    async def request(self, method: str, params: Sequence[Any] = (), *, time_limit: float | None = None,
                      fallback: bool = False, max_answer: int | None = None) -> Any:
        """One call on the active endpoint (counted in its error rate). With `fallback`, an
        endpoint that does not answer is followed by the other healthy ones (not for reads
        that must come from one node, such as a head followed by eth_getLogs)."""
        last: BackendError | None = None
        for e in self._order(fallback):
            try:
                result = await e.rpc.call(method, params, time_limit=time_limit, max_answer=max_answer)
            except RpcError:
                e.outcomes.append(True)  # the node answered
                raise
            except BackendError as exc:
                e.outcomes.append(False)
                last = exc
                continue
            e.outcomes.append(True)
            return result
        assert last is not None
        raise last

    async def request_batch(self, calls: Sequence[tuple[str, Sequence[Any]]], *,
                            time_limit: float | None = None, fallback: bool = False) -> list[Any]:
        last: BackendError | None = None
        for e in self._order(fallback):
            try:
                out = await e.rpc.batch(calls, time_limit=time_limit)
            except BackendError as exc:
                e.outcomes.append(False)
                last = exc
                continue
            e.outcomes.append(True)
            return out
        assert last is not None
        raise last

    async def aclose(self) -> None:
        for e in self.endpoints:
            await e.rpc.aclose()


def audit_switches(audit: Any, operator: str = "warroom (automatic failover)") -> Callable[[Switch], None]:
    """An `on_switch` callback that writes automatic switches to the audit trail (from a
    poll on the event loop: in the background, the disk write off the loop)."""

    def write(sw: Switch) -> None:
        if not sw.automatic or audit is None:
            return
        fields = dict(
            action="chain.failover",
            target=f"chain:{sw.chain}",
            operator=operator,
            params={"automatic": True},
            reason=sw.reason,
            before=sw.before,
            after=sw.after,
            result="ok",
            summary=f"active endpoint {sw.before} -> {sw.after}",
        )
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            audit.append(**fields)  # no loop (a script): inline
        else:
            audit.append_soon(**fields)

    return write


# --------------------------------------------------------------------------- non-EVM chains


class JsonRpcChain:
    """A non-EVM chain (Neo N3): endpoints probed with a configured head method.

    `head_method` (`getblockcount`) gives the height (+ `head_offset`); `hash_method`
    (`getblockhash`, taking a height) compares endpoints at a common height;
    `version_method` (`getversion`) gives the network magic compared with `chain_id`.
    The probe reads no block time, so the head age is observed: the time since the
    endpoint's height last increased (from the first check on), which `max_head_age` bounds
    as on EVM chains. Contract state and balances are not read here (the config refuses
    them on a jsonrpc chain): they are command checks (`neo-go contract testinvokefunction`).
    """

    kind = "jsonrpc"

    def __init__(self, spec: ChainSpec, *, audit: Any = None, clock: Clock | None = None) -> None:
        self.spec = spec
        self.name = spec.source_name
        self.interval = spec.interval
        self.timeout = spec.timeout * 2 + 1
        self.endpoints = EndpointSet(
            spec.name,
            spec.endpoints,
            expected_chain_id=spec.chain_id,
            failover=spec.failover,
            failover_after=spec.failover_after,
            max_lag=spec.max_lag,
            max_head_age=spec.max_head_age,
            timeout=spec.timeout,
            on_switch=audit_switches(audit),
            max_answer=spec.max_answer,
            clock=clock,
        )

    def answer_problem(self, readings: Sequence[Any] = ()) -> str:
        """The monitor's hook: "" when the poll gave a usable answer, else why not."""
        return self.endpoints.answer_problem()

    async def _probe(self, rpc: HttpRpc) -> Probe:
        s = self.spec
        calls: list[tuple[str, Sequence[Any]]] = [(s.head_method, [])]
        if s.version_method:
            calls.append((s.version_method, []))
        results = await rpc.batch(calls) if len(calls) > 1 else [await rpc.call(s.head_method, [])]
        for r in results:
            if isinstance(r, RpcError):
                raise r
        head = parse_uint(results[0], "block height") + s.head_offset
        chain_id = None
        if s.version_method:
            v = results[1]
            if isinstance(v, dict):
                proto = v.get("protocol") or {}
                magic = proto.get("network", v.get("network"))
                chain_id = parse_uint(magic, "network magic") if magic is not None else None
            elif v is not None:
                chain_id = parse_uint(v, "network magic")
        return Probe(head=head, chain_id=chain_id)

    async def _hash(self, rpc: HttpRpc, height: int) -> str | None:
        if not self.spec.hash_method:
            return None
        h = await rpc.call(self.spec.hash_method, [height])
        return str(h) if h is not None else None

    async def poll(self) -> list[ChainReading]:
        eps = await self.endpoints.check(self._probe, self._hash if self.spec.hash_method else None)
        return [
            ChainReading(
                source=self.name,
                chain=self.spec.name,
                expected_chain_id=self.spec.chain_id,
                active_url=self.endpoints.active.display,
                endpoints=tuple(eps),
                disagreement=self.endpoints.disagreement,
            )
        ]

    async def aclose(self) -> None:
        await self.endpoints.aclose()


# --------------------------------------------------------------------------- actions


class ChainFailoverAction(Action):
    """`chain.failover`: make the next healthy (or a named) endpoint active."""

    id = "chain.failover"
    title = "Fail over to another RPC endpoint"
    danger = Danger.CONFIRM
    description = "Switch the active RPC endpoint of a chain to the next healthy one (or the one named)."

    def __init__(self, chains: dict[str, EndpointSet]) -> None:
        self.chains = chains

    def _set(self, chain: str | None) -> EndpointSet:
        if chain is None and len(self.chains) == 1:
            return next(iter(self.chains.values()))
        if chain not in self.chains:
            raise ActionRefused(self.id, f"unknown chain {chain!r} (known: {', '.join(sorted(self.chains))})")
        return self.chains[chain]

    async def plan(self, chain: str | None = None, to: str | None = None, reason: str | None = None, **_: Any) -> ActionPlan:
        es = self._set(chain)
        if to is not None:
            try:
                idx = es.find(to)
            except KeyError:
                raise ActionRefused(self.id, f"no endpoint {to!r} on chain {es.chain}") from None
        else:
            nxt = es.next_healthy()
            if nxt is None:
                raise ActionRefused(self.id, f"no other healthy endpoint on chain {es.chain}")
            idx = nxt
        if idx == es.active_index:
            raise ActionRefused(self.id, f"{es.endpoints[idx].display} is already active")
        target = es.endpoints[idx]
        return ActionPlan(
            action=self.id,
            title=self.title,
            target=f"chain:{es.chain}",
            changes=(Change(f"chain:{es.chain}", "active endpoint", es.active.display, target.display),),
            guard=Guard(target.healthy, f"{target.display} passed its last check",
                        target.problem or ("not checked yet" if not target.checked else "")),
            danger=self.danger,
            params={"chain": es.chain, "to": target.display, "index": idx},
            reason=reason,
            preview=f"active endpoint of {es.chain}: {es.active.display} -> {target.display}",
        )

    async def check_guard(self, plan: ActionPlan) -> Guard:
        es = self._set(plan.params["chain"])
        t = es.endpoints[plan.params["index"]]
        return Guard(t.healthy, f"{t.display} passed its last check", t.problem)

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        es = self._set(plan.params["chain"])
        before = es.active.display
        was_pinned = es.pinned
        es.pinned = False
        es.switch(plan.params["index"], f"manual: {plan.reason or 'operator failover'}", automatic=False)
        es.pinned = was_pinned
        return ActionResult(status="ok", summary=f"{es.chain}: active endpoint {before} -> {es.active.display}",
                            before=before, after=es.active.display)


class ChainPinAction(ChainFailoverAction):
    """`chain.pin`: pin one endpoint as active (no automatic failover), or unpin."""

    id = "chain.pin"
    title = "Pin the active RPC endpoint"
    description = "Pin an endpoint as the active one (automatic failover stops until unpinned)."

    async def plan(self, chain: str | None = None, to: str | None = None, reason: str | None = None,
                   unpin: bool = False, **_: Any) -> ActionPlan:
        es = self._set(chain)
        if unpin:
            return ActionPlan(
                action=self.id, title="Unpin the active RPC endpoint", target=f"chain:{es.chain}",
                changes=(Change(f"chain:{es.chain}", "pinned", es.pinned, False),),
                danger=Danger.CONFIRM, params={"chain": es.chain, "unpin": True}, reason=reason,
                preview=f"automatic failover resumes on {es.chain}",
            )
        if to is None:
            idx = es.active_index
        else:
            try:
                idx = es.find(to)
            except KeyError:
                raise ActionRefused(self.id, f"no endpoint {to!r} on chain {es.chain}") from None
        t = es.endpoints[idx]
        return ActionPlan(
            action=self.id,
            title=self.title,
            target=f"chain:{es.chain}",
            changes=(Change(f"chain:{es.chain}", "active endpoint (pinned)",
                            {"active": es.active.display, "pinned": es.pinned}, {"active": t.display, "pinned": True}),),
            guard=Guard(True, "an operator may pin any endpoint", t.problem),
            danger=Danger.CONFIRM,
            params={"chain": es.chain, "to": t.display, "index": idx},
            reason=reason,
            preview=f"pin {t.display} as the active endpoint of {es.chain}"
            + (f" (warning: {t.problem})" if t.problem else ""),
        )

    async def check_guard(self, plan: ActionPlan) -> Guard:
        return plan.guard

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        es = self._set(plan.params["chain"])
        if plan.params.get("unpin"):
            es.pin(None)
            return ActionResult(status="ok", summary=f"{es.chain}: unpinned", before=True, after=False)
        before = es.active.display
        es.pin(plan.params["index"], f"manual pin: {plan.reason or 'operator'}")
        return ActionResult(status="ok", summary=f"{es.chain}: pinned {es.active.display}",
                            before=before, after=es.active.display)


# --------------------------------------------------------------------------- rules


def _hints(ctx: Any) -> dict[str, Any]:
    return getattr(ctx, "extra", None) or {}


@rule(ChainReading)
def chain_endpoint_rules(r: ChainReading, ctx: Any) -> list[Finding]:
    """RPC down / wrong chain / lag / head age / disagreement, for every chain kind."""
    out: list[Finding] = []
    eps = r.endpoints
    if not eps:
        return out
    down = [e for e in eps if e.head is None]
    if len(down) == len(eps):
        out.append(Finding(
            key=f"rpc-failure:{r.chain}", severity=Severity.P0, source=r.source,
            summary=f"all {len(eps)} RPC endpoint(s) of {r.chain} are down",
            evidence=tuple(f"{e.name} {e.url}: {e.error or 'no answer'}" for e in eps),
            playbook="rpc-failure", target=f"chain:{r.chain}",
        ))
    else:
        for e in down:
            sev = Severity.P1 if e.active else Severity.P2
            out.append(Finding(
                key=f"rpc-failure:{r.chain}:{e.name}", severity=sev, source=r.source,
                summary=f"RPC endpoint {e.name} of {r.chain} is down" + (" (active)" if e.active else ""),
                evidence=(f"{e.url}: {e.error or 'no answer'}", f"active endpoint: {r.active_url}"),
                playbook="rpc-failure", target=f"chain:{r.chain}",
            ))
    for e in eps:
        if e.chain_id_ok is False:
            out.append(Finding(
                key=f"rpc-wrong-chain:{r.chain}:{e.name}", severity=Severity.P0 if e.active else Severity.P1,
                source=r.source,
                summary=f"{e.name} of {r.chain} is on chain id {e.chain_id}, expected {r.expected_chain_id}",
                evidence=(e.url, "wrong network: check RPC_URL and the contract addresses for this network"),
                playbook="rpc-failure", target=f"chain:{r.chain}",
            ))
        if e.head is not None and e.lag is not None and e.error and "behind" in e.error:
            out.append(Finding(
                key=f"rpc-lag:{r.chain}:{e.name}", severity=Severity.P2, source=r.source,
                summary=f"{e.name} of {r.chain} is {e.lag} blocks behind the best endpoint",
                evidence=(e.url, f"head {e.head}"), playbook="rpc-failure", target=f"chain:{r.chain}",
            ))
        if e.head is not None and e.error and "old" in e.error:
            out.append(Finding(
                key=f"rpc-stale:{r.chain}:{e.name}", severity=Severity.P1 if e.active else Severity.P2,
                source=r.source, summary=f"{e.name} of {r.chain}: {e.error}",
                evidence=(e.url, f"head {e.head}"), playbook="rpc-failure", target=f"chain:{r.chain}",
            ))
    if r.disagreement:
        out.append(Finding(
            key=f"rpc-disagree:{r.chain}", severity=Severity.P1, source=r.source,
            summary=f"RPC endpoints of {r.chain} disagree", evidence=(r.disagreement,),
            playbook="rpc-failure", target=f"chain:{r.chain}",
        ))
    return out


__all__ = [
    "BalanceSpec", "ChainFailoverAction", "ChainPinAction", "ChainSpec", "ContractSpec", "Endpoint",
    "EndpointSet", "HttpRpc", "JsonRpcChain", "Probe", "RpcError", "Switch", "audit_switches",
    "display_url", "parse_int", "parse_uint",
]
