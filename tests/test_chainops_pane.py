"""The Chain pane and the detail screen show chain operations at 160x48 and 80x24: endpoint
scores (error rate, p50/p70/p95), an automatic switch, missed block ranges, contract guard
events with the role by name and the tx, Neo N3 block counts with lag, the gas bank's GAS and
watched contract states; enter on a row opens its item in the detail screen."""

from __future__ import annotations

import pytest

from backends.model import ChainReading, EndpointReading, Severity, Snapshot
from backends.sources.guardrails import GuardEvent, GuardReading
from backends.sources.integrity import GapRange, IntegrityReading
from backends.sources.neo import NeoContract, NeoEndpoint, NeoReading
from backends.sources.rpcscore import EndpointScore, ScoreReading
from tests.widget_data import PaneApp
from widgets.messages import DetailRequested

TX = "0x" + "ab" * 32


def snapshot() -> Snapshot:
    ep1 = EndpointReading(source="chain.eth", chain="eth", url="http://127.0.0.1:1", name="rpc1", ok=True,
                          head=1000, lag=0, chain_id=1, chain_id_ok=True, latency_ms=4.0)
    ep2 = EndpointReading(source="chain.eth", chain="eth", url="http://127.0.0.1:2", name="rpc2", ok=True,
                          active=True, head=1000, lag=0, chain_id=1, chain_id_ok=True, latency_ms=3.0)
    scores = (EndpointScore(name="rpc1", url=ep1.url, samples=12, error_rate=0.92, bad="error rate 0.92 > 0.7"),
              EndpointScore(name="rpc2", url=ep2.url, samples=12, error_rate=0.0, p50_ms=3.0, p70_ms=4.0,
                            p95_ms=9.0, lag=0, chain_id=1, active=True))
    return Snapshot(readings={
        "chain.eth": (ChainReading(source="chain.eth", chain="eth", endpoints=(ep1, ep2), active_url=ep2.url),),
        "rpcscore.eth": (ScoreReading(source="rpcscore.eth", chain="eth", scores=scores,
                                      last_switch="rpc1 -> rpc2: error rate 0.92 > 0.7", last_switch_age_s=12.0),),
        "integrity.orders": (IntegrityReading(source="integrity.orders", chain="eth", name="escrow", cursor=990,
                                              head=1000, gaps=(GapRange(from_block=120, to_block=131,
                                                                        order_ids=("o-1", "o-2"),
                                                                        tx_hashes=(TX, TX)),)),),
        "guardrails.eth": (GuardReading(source="guardrails.eth", chain="eth", events=(GuardEvent(
            contract="vault", address="0x1", event="RoleGranted", block=995, tx_hash=TX, log_index=3,
            args=(("role", "DEFAULT_ADMIN_ROLE"), ("account", "0x3")), severity=Severity.P0,
            why="DEFAULT_ADMIN_ROLE granted to 0x3, not an admin announced in config"),)),),
        "neo.neo": (NeoReading(source="neo.neo", chain="neo", max_lag=5, gas_bank="0x86df", gas=150_000_000,
                               gas_minimum=200_000_000,
                               endpoints=(NeoEndpoint(name="rpc1", url="http://127.0.0.1:3", height=991990, lag=0,
                                                      latency_ms=5.0),
                                          NeoEndpoint(name="rpc2", url="http://127.0.0.1:4", height=991980, lag=10)),
                               contracts=(NeoContract(hash="0xf61e", name="NeoToken", update_counter=1,
                                                      checksum=3921333105),),
                               changed=("0xf61e",)),),
    })


@pytest.mark.parametrize("size", [(160, 48), (80, 24)])
async def test_chain_pane_shows_chain_operations_and_detail(size):
    from widgets.chain import ChainPane

    got: list = []

    class App(PaneApp):
        def on_detail_requested(self, m: DetailRequested) -> None:
            got.append(m)

    pane = ChainPane()
    app = App(pane, snapshot=snapshot())
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        keys = pane.row_keys()
        assert {"eth|switch", "eth|gap|120-131", f"eth|guard|{TX}|3", "neo|neo|http://127.0.0.1:4", "neo|neo|gas",
                "neo|neo|0xf61e"} <= set(keys)

        def text(key: str, col: str) -> str:
            return pane.table.get_cell(key, col).plain

        assert text("eth|http://127.0.0.1:2", "error") == "err 0% p50 3ms p70 4ms p95 9ms"
        assert text("eth|switch", "error") == "rpc1 -> rpc2: error rate 0.92 > 0.7"
        assert text("eth|gap|120-131", "error") == "missed blocks 120-131, 2 releases unprocessed"
        assert "DEFAULT_ADMIN_ROLE" in text(f"eth|guard|{TX}|3", "error")
        assert text("neo|neo|http://127.0.0.1:4", "lag") == "10" and "LAG" in text("neo|neo|http://127.0.0.1:4", "status")
        assert text("neo|neo|gas", "error").startswith("1.5 GAS (min 2 GAS)")
        assert "UPDATED" in text("neo|neo|0xf61e", "status")
        # enter on the missed range: its item (the range with orders and txs) goes to the detail screen
        pane.table.move_cursor(row=pane.table.get_row_index("eth|gap|120-131"))
        pane.table.focus()
        await pilot.press("enter")
        await pilot.pause()
        msgs = [m for m in got if isinstance(m, DetailRequested)]
        assert msgs and isinstance(msgs[-1].item, GapRange)


@pytest.mark.parametrize("size", [(160, 48), (80, 24)])
async def test_detail_screen_shows_a_guard_event_in_full(size):
    from textual.widgets import Static

    from tui.screens.detail import DetailScreen

    ev = snapshot().readings["guardrails.eth"][0].events[0]
    app = PaneApp(Static("x"))
    async with app.run_test(size=size) as pilot:
        app.push_screen(DetailScreen(ev))
        await pilot.pause()
        shown = app.export_screenshot().replace("&#160;", " ")
        assert "RoleGranted" in shown and TX[:20] in shown and "DEFAULT_ADMIN_ROLE" in shown


def test_warroom_health_describes_each_reading():
    from tui.cmd_health import describe

    lines = {type(r).__name__: describe(r) for rs in snapshot().readings.values() for r in rs}
    assert lines["IntegrityReading"] == "listener escrow: missed blocks 120-131, 2 releases unprocessed"
    assert lines["ScoreReading"].startswith("chain eth scores: rpc1 err 92%")
    assert "1 P0" in lines["GuardReading"]
    assert lines["NeoReading"] == "neo neo: 2/2 endpoints, height 991990, gas bank 1.5 GAS, 1 contract(s)"
