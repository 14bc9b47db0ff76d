"""A hostile or broken RPC endpoint never freezes the console, never passes for a value (issue 21).

A local HTTP server sits in front of the real anvil node: healthy, it forwards every
request to anvil (adding 1,000 to block numbers, so that "going backwards" can be shown);
broken, it answers in one of the bad ways below. For each bad answer the chain source
must say DEGRADED with a readable reason within its timeout, its memory must stay
bounded (a 50 MB answer is never buffered), and it must recover within two polls
after the endpoint heals. One case runs through the real console (Textual Pilot): a key
press is handled within 100 ms while the bad endpoint is being polled, and the pane
shows the reason as inert text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import tracemalloc

import pytest

from backends.engine.monitor import Monitor
from backends.engine.rules import make_rules
from backends.model import SourceState
from backends.sources.evm import EvmChain
from backends.sources.jsonrpc import BalanceSpec, ChainSpec
from tests.engines import engine_of

pytestmark = [pytest.mark.evm]

HOSTILE = "[bold red]pwned[/] \x1b[2J\x1b]0;owned\x07\x1b]52;c;ZXZpbA==\x07 \x9b31m\x00 gone"
OFFSET = 1000  # added to block numbers while healthy


async def wait_for(pred, timeout: float, step: float = 0.01) -> float:  # noqa: ASYNC109 - a polling helper
    """Wait until pred() holds; return the seconds it took."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout:.1f}s")
        await asyncio.sleep(step)
    return time.monotonic() - t0


class BadRpc:
    """A raw HTTP/1.1 server on 127.0.0.1:0 whose `mode` says how it answers."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "ok"
        self.requests = 0
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.Server | None = None
        self._session = None
        self.url = ""

    async def __aenter__(self) -> BadRpc:
        import aiohttp

        self._session = aiohttp.ClientSession()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        await self._session.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = await reader.readexactly(length)
            self.requests += 1
            await self._answer(json.loads(body), writer)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    @staticmethod
    def _head(length: int | None = None) -> bytes:
        h = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
        if length is not None:
            h += b"Content-Length: " + str(length).encode() + b"\r\n"
        return h + b"\r\n"

    async def _send(self, writer, payload: bytes) -> None:
        writer.write(self._head(len(payload)) + payload)
        await writer.drain()

    async def _forward(self, req):
        async with self._session.post(self.upstream, json=req) as resp:
            return await resp.json()

    async def _answer(self, req, writer) -> None:
        mode = self.mode
        items = req if isinstance(req, list) else [req]
        if mode == "hang":
            await asyncio.sleep(10)
        if mode == "invalid-json":
            return await self._send(writer, b'[{"jsonrpc": "2.0", "id": 1, "result": "0x1')
        if mode == "rpc-error":
            out = [{"jsonrpc": "2.0", "id": i.get("id"), "error": {"code": -32000, "message": HOSTILE}}
                   for i in items]
            return await self._send(writer, json.dumps(out if isinstance(req, list) else out[0]).encode())
        if mode == "huge-balance" and not any(i.get("method") == "eth_getBalance" for i in items):
            mode = "ok"  # the endpoint's health is fine; only the balance is 50 MB (issue 21)
        if mode in ("huge", "huge-declared", "huge-balance"):
            chunk = b"f" * 65536
            total = 50 * 1024 * 1024
            writer.write(self._head(total + 64 if mode == "huge-declared" else None)
                         + b'[{"jsonrpc": "2.0", "id": 1, "result": "0x')
            sent = 0
            while sent < total:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
            return None
        if mode == "drip":
            payload = json.dumps(await self._forward(req)).encode()
            writer.write(self._head(len(payload)))
            for b in payload:
                writer.write(bytes([b]))
                await writer.drain()
                await asyncio.sleep(1.0)
            return None
        answer = await self._forward(req)
        for item, a in zip(items, answer if isinstance(answer, list) else [answer], strict=False):
            m = item.get("method")
            res = a.get("result")
            if m == "eth_getBlockByNumber" and isinstance(res, dict):
                res["number"] = hex(int(res["number"], 16) + (0 if mode == "backwards" else OFFSET))
            elif m == "eth_chainId" and mode == "wrong-chain":
                a["result"] = "0x1"
            elif m == "eth_getBalance" and mode == "over-2^256":
                a["result"] = hex(2**256 + 12345)
        return await self._send(writer, json.dumps(answer).encode())


def make_chain(url: str, anvil, *, timeout: float = 1.0, interval: float = 0.2) -> EvmChain:
    return EvmChain(ChainSpec(name="bad", endpoints=(url,), chain_id=anvil.chain_id, timeout=timeout,
                              interval=interval, max_head_age=None,
                              balances=(BalanceSpec(name="hot-wallet", address=anvil.accounts[0]),)))


CASES = {
    # mode: what the reason must say
    "invalid-json": "invalid JSON",
    "rpc-error": "RPC error -32000: [bold red]pwned[/]",
    "hang": "timed out after 1s",
    "huge": "over the 1 MB limit",
    "huge-declared": "answer of 50 MB over the 1 MB limit",
    "huge-balance": "contracts and balances: ",  # the exact case of issue 21

    "drip": "timed out after 1s",
    "wrong-chain": "chain id 1, expected 31337",
    "over-2^256": "balance is over 2^256 (invalid answer)",
    "backwards": "block number went backwards",
}


def state(mon: Monitor):
    return mon.snapshot.sources["chain.bad"]


@pytest.mark.parametrize("mode", list(CASES))
async def test_bad_answer_degrades_with_a_reason_bounded_and_recovers(anvil, mode):
    async with BadRpc(anvil.url) as srv:
        chain = make_chain(srv.url, anvil)
        mon = Monitor([chain], rules=make_rules())
        await mon.start()
        try:
            await wait_for(lambda: state(mon).state is SourceState.OK and state(mon).last_good, 10)
            tracemalloc.start()
            try:
                srv.mode = mode
                took = await wait_for(lambda: state(mon).state is SourceState.DEGRADED, chain.timeout + 1)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            st = state(mon)
            # within its timeout (from the first poll after the fault: at most one interval later)
            assert took <= chain.interval + chain.timeout, (mode, took)
            assert CASES[mode] in st.reason, st.reason
            assert st.reason.isprintable() and "\x1b" not in st.reason and "\x9b" not in st.reason
            assert len(st.reason) <= 300
            if mode == "rpc-error":  # shown escaped: what it tried to do stays visible, inert
                assert "\\x1b[2J" in st.reason and "\\x1b]52;" in st.reason and "\\x9b" in st.reason
            assert peak < 8 * 1024 * 1024, f"{mode}: {peak / 1e6:.1f} MB traced at the peak"
            # the finding says it too; no reading of the bad answer is shown as a value
            findings = {f.key: f for f in mon.snapshot.findings}
            assert "degraded:chain.bad" in findings
            (reading,) = mon.snapshot.readings["chain.bad"]
            if mode == "huge-balance":
                assert "over the 1 MB limit" in st.reason and reading.endpoints[0].ok
                assert reading.balances[0].balance is None
            if mode == "over-2^256":
                assert reading.balances[0].balance is None and "over 2^256" in reading.balances[0].display
            # heals: recovered within two polls
            srv.mode = "ok"
            polls = mon.poll_counts["chain.bad"]
            await wait_for(lambda: state(mon).state is SourceState.OK, 2 * (chain.interval + chain.timeout) + 1)
            assert mon.poll_counts["chain.bad"] - polls <= 2
            assert state(mon).reason == ""
        finally:
            await mon.stop()
            await chain.aclose()


async def test_a_50_mb_answer_is_never_read_whole(anvil):
    """The body is read incrementally and aborted at the cap: the bad server never gets to
    send more than a few MB (socket buffers) of its 50 MB."""
    async with BadRpc(anvil.url) as srv:
        chain = make_chain(srv.url, anvil)
        srv.mode = "huge"
        t0 = time.monotonic()
        (r,) = await chain.poll()
        assert time.monotonic() - t0 < chain.spec.timeout + 0.5
        assert "over the 1 MB limit" in chain.answer_problem()
        assert r.endpoints[0].head is None
        await chain.aclose()


async def test_numbers_are_checked_before_they_are_converted():
    from backends.sources.evm import format_amount
    from backends.sources.jsonrpc import InvalidAnswer, parse_int, parse_uint

    t0 = time.perf_counter()
    with pytest.raises(InvalidAnswer, match="over 2\\^256"):
        parse_uint("0x" + "f" * 50_000_000)
    with pytest.raises(InvalidAnswer, match="over 2\\^256"):
        parse_uint(hex(2**256))
    with pytest.raises(InvalidAnswer, match="negative"):
        parse_uint(-1)
    with pytest.raises(InvalidAnswer, match="not a number"):
        parse_uint("0xzz")
    with pytest.raises(InvalidAnswer, match="not a number"):
        parse_uint(True)
    assert parse_uint(hex(2**256 - 1)) == 2**256 - 1
    assert parse_int("0x" + "1" * 512) > 2**256  # a logs bloom is 2048 bits
    assert format_amount(10**80) == "? (invalid amount)"
    assert format_amount(2**256 - 1).endswith(" ETH")
    assert time.perf_counter() - t0 < 0.5  # the 50 MB string was never converted


async def test_console_stays_responsive_and_shows_the_reason_inert(anvil, tmp_path):
    """Through the real console: while the endpoint answers 50 MB, then hostile markup,
    a key press is handled within 100 ms and the Sources pane shows the reason escaped."""
    from textual import events

    from backends.actions.base import ActionEngine
    from backends.engine.audit import AuditLog
    from tui.app import WarroomApp
    from tui.screens.help import HelpScreen

    async with BadRpc(anvil.url) as srv:
        chain = make_chain(srv.url, anvil, interval=0.1)
        mon = Monitor([chain], rules=make_rules())
        engine = engine_of(mon, ActionEngine(AuditLog(tmp_path / "a.jsonl"), operator="t"))
        app = WarroomApp(engine)
        async with app.run_test(size=(160, 48)) as pilot:
            async def until(cond, limit=10.0):
                t0 = time.monotonic()
                while not cond():
                    assert time.monotonic() - t0 < limit, "timed out"
                    await pilot.pause(0.02)

            await until(lambda: state(mon).state is SourceState.OK)
            for mode, want in (("huge", "over the 1 MB limit"), ("rpc-error", "[bold red]pwned[/]")):
                srv.mode = mode
                polls = mon.poll_counts["chain.bad"]
                await until(lambda polls=polls: mon.poll_counts["chain.bad"] > polls + 1)  # polled again and again
                took = []
                for _ in range(5):  # each key while bad answers are being read
                    # the key goes in as the terminal driver sends it (pilot.press would also
                    # wait for the whole process to be idle, bad server included)
                    t0 = time.monotonic()
                    app.post_message(events.Key("question_mark", "?"))
                    while not isinstance(app.screen, HelpScreen):
                        assert time.monotonic() - t0 < 2.0, "the key was not handled"
                        await asyncio.sleep(0.002)
                    took.append(time.monotonic() - t0)
                    await pilot.press("escape")
                    await until(lambda: not isinstance(app.screen, HelpScreen), 2.0)
                took.sort()
                print(f"{mode}: keys took {', '.join(f'{t * 1000:.0f}' for t in took)} ms")
                # a read on the loop would hold every key for the whole answer; on a loaded 2-core CI box
                # one key may wait on the scheduler, so the typical key is what is held to 100 ms
                assert took[2] < 0.1 and took[-1] < 1.0, f"{mode}: keys took {took}"
                await until(lambda want=want: state(mon).state is SourceState.DEGRADED and want in state(mon).reason)

                def row():
                    table = app.dashboard.pane("sources")
                    for key in table.rows:
                        if key.value == "chain.bad":
                            return [str(getattr(c, "plain", c)) for c in table.get_row(key)]
                    return []

                await until(lambda want=want: "DEGRADED" in " ".join(row()) and want in " ".join(row()))
                shown = " ".join(row())
                assert "\x1b" not in shown and "\x07" not in shown
            srv.mode = "ok"
            await until(lambda: state(mon).state is SourceState.OK)
        await chain.aclose()
