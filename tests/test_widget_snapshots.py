"""Snapshot tests of each pane (healthy, degraded, empty) and the status header.

Fixed terminal size, frozen data and clock (tests/widget_data.py), the test theme with the
semantic status variables. Regenerate only on purpose:
`.venv/bin/pytest tests/test_widget_snapshots.py --snapshot-update`, then read the SVGs.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from backends.model import Severity, SourceState
from tests.widget_data import (
    EMPTY,
    NOW,
    PaneApp,
    breakers_snapshot,
    chain_snapshot,
    findings_snapshot,
    hint,
    orders_snapshot,
    queues_snapshot,
    services_snapshot,
)
from widgets.breakers import BreakersPane
from widgets.chain import ChainPane
from widgets.findings import FindingsPane
from widgets.header import IncidentInfo, StatusHeader
from widgets.orders import OrdersPane
from widgets.queues import QueuesPane
from widgets.services import ServicesPane

SIZE = (100, 14)

PANES = {
    "services": (ServicesPane, services_snapshot),
    "queues": (QueuesPane, queues_snapshot),
    "breakers": (BreakersPane, breakers_snapshot),
    "orders": (OrdersPane, orders_snapshot),
    "chain": (ChainPane, chain_snapshot),
    "findings": (lambda: FindingsPane(playbook_hint=hint), findings_snapshot),
}

STATES = {
    "healthy": lambda data: data(),
    "degraded": lambda data: data(SourceState.DEGRADED),
    "empty": lambda data: EMPTY,
}


@pytest.mark.parametrize("state", list(STATES))
@pytest.mark.parametrize("which", list(PANES))
def test_pane_snapshot(snap_compare, which, state):
    make, data = PANES[which]
    app = PaneApp(make(), snapshot=STATES[state](data))
    assert snap_compare(app, terminal_size=SIZE)


def test_orders_selection_snapshot(snap_compare):
    app = PaneApp(OrdersPane(), snapshot=orders_snapshot())
    assert snap_compare(app, terminal_size=SIZE, press=["space", "down", "down", "space"])


@pytest.mark.parametrize("incident", [False, True])
def test_header_snapshot(snap_compare, incident):
    inc = IncidentInfo(Severity.P1, "stuck orders", NOW + timedelta(minutes=12, seconds=4)) if incident else None
    header = StatusHeader(name="meta-aggregator", environment="production", operator="alice",
                          read_only=incident, clock=lambda: NOW, tick=0, incident=inc)

    async def run_before(pilot) -> None:
        header.show(findings_snapshot())
        await pilot.pause()

    assert snap_compare(PaneApp(header), terminal_size=(120, 2), run_before=run_before)


def _chain_with_signers():
    """The chain data plus finality heads and two signers: one stuck, one low on runway."""
    from dataclasses import replace as _replace

    from backends.model import SignerReading, Status
    from tests.widget_data import ago, chain, snap, status

    c, cursor = chain()
    eps = tuple(_replace(e, safe=e.head - 32, finalized=e.head - 64, confirmations=65) if e.head else e
                for e in c.endpoints)
    signers = (
        SignerReading(source="chain.polygon", at=ago(2), chain="polygon", label="relayer", address="0x01",
                      balance=3 * 10**18, display="3 POL", latest_nonce=1_204, pending_nonce=1_207, pending_count=3,
                      stuck_nonce=1_204, oldest_pending_blocks=9, oldest_pending_age_s=21, status=Status.CRIT),
        SignerReading(source="chain.polygon", at=ago(2), chain="polygon", label="gas-bank", address="0x02",
                      balance=40 * 10**18, display="40 POL", latest_nonce=88, pending_nonce=88, runway_s=5 * 3600,
                      runway_min_s=24 * 3600, status=Status.WARN),
    )
    c = _replace(c, endpoints=eps, signers=signers)
    return snap([status("chain.polygon", "evm"), status("orders", "orders")],
                {"chain.polygon": (c,), "orders": (cursor,)})


@pytest.mark.parametrize("size", [(160, 48), (80, 24)])
def test_chain_signers_snapshot(snap_compare, size):
    """Signer rows after their chain's endpoints, the finalized head in the head column."""
    app = PaneApp(ChainPane(), snapshot=_chain_with_signers())
    assert snap_compare(app, terminal_size=size)
