"""The console fixes orders end to end, on the real harness (Postgres + anvil): `f` on a row
asks for what the pane cannot know (the target state) in the form, the modal shows the plan
and asks for the reason, and the row changes; `space` on two rows then `f` fixes both."""

from __future__ import annotations

import time

import pytest

from tests.harness.stack import build_stack

pytestmark = [pytest.mark.postgres, pytest.mark.evm]


@pytest.fixture(scope="module")
def stack(pg, redis_server, anvil, escrow, tmp_path_factory):
    s = build_stack(pg, redis_server, anvil, escrow, tmp_path_factory.mktemp("console-orders"),
                    name="console_orders", prefix="co")
    yield s
    s.close()


async def until(pilot, cond, limit: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def _sql(dsn: str, query: str, *args):
    import asyncpg

    con = await asyncpg.connect(dsn)
    try:
        return await con.fetch(query, *args)
    finally:
        await con.close()


async def _through_form(pilot, app, values: dict[str, str]) -> None:
    from tui.screens.action import ActionScreen
    from tui.screens.params import ParamsScreen

    await until(pilot, lambda: isinstance(app.screen, (ParamsScreen, ActionScreen)), what="form or modal")
    if isinstance(app.screen, ParamsScreen):
        form = app.screen
        for name, value in values.items():
            form.query_one(f"#param-{name}").value = value
        while isinstance(app.screen, ParamsScreen):
            await pilot.press("enter")
            await pilot.pause(0.05)
    await until(pilot, lambda: isinstance(app.screen, ActionScreen), what="the action modal: screen "
                f"{app.screen!r}, notices {[n.message for n in app._notifications]}")


async def _reason_and_confirm(pilot, app, reason: str) -> None:
    modal = app.screen
    await until(pilot, lambda: modal.query("#action-reason"), what="reason field")
    assert "reason" in str(modal.query_one("#action-reason").placeholder)
    modal.query_one("#action-reason").focus()
    await pilot.press(*reason)
    await pilot.press("enter")
    if modal.query("#action-confirm"):
        await pilot.press(*str(modal.plan.expected_confirmation), "enter")
    await until(pilot, lambda: modal.state == "done", what="executed")


async def test_fix_from_the_console_asks_state_then_reason(stack, monkeypatch, tmp_path):
    from backends.config import load_config
    from backends.engine.core import build_engine
    from tui.app import WarroomApp

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for oid in ("co-c1", "co-c2", "co-c3"):
        await _sql(stack.dsn, "INSERT INTO orders (id, state, created_at) VALUES ($1, 'PENDING', "
                   "now() - interval '3 hours')", oid)
    engine = build_engine(load_config(stack.config_path), operator="alice")
    app = WarroomApp(engine)
    async with app.run_test(size=(160, 48)) as pilot:
        pane = app.dashboard.pane("orders")
        await until(pilot, lambda: {"co-c1", "co-c2", "co-c3"} <= set(pane.row_keys()), limit=30, what="stuck rows")
        pane.table.focus()
        pane.table.move_cursor(row=pane.row_keys().index("co-c1"))
        await pilot.pause()
        await pilot.press("f")
        await _through_form(pilot, app, {"state": "FAILED"})
        modal = app.screen
        assert modal.plan.target == "order:co-c1" and modal.plan.reason_required
        await _reason_and_confirm(pilot, app, "refund issued")
        assert "OK" in str(modal.query_one("#action-status").render())
        await pilot.press("enter")
        [row] = await _sql(stack.dsn, "SELECT state, notes FROM orders WHERE id = 'co-c1'")
        assert row["state"] == "FAILED" and row["notes"].endswith(" by alice: refund issued]")

        # two rows selected with space, then f: one plan for both
        await until(pilot, lambda: "co-c1" not in pane.row_keys(), what="the fixed row gone")
        pane.table.focus()
        for oid in ("co-c2", "co-c3"):
            pane.table.move_cursor(row=pane.row_keys().index(oid))
            await pilot.pause()
            await pilot.press("space")
        assert set(pane.selected_ids()) == {"co-c2", "co-c3"}
        await pilot.press("f")
        await _through_form(pilot, app, {"state": "FAILED"})
        modal = app.screen
        assert modal.plan.total == 2 and len(modal.plan.changes) == 2
        await _reason_and_confirm(pilot, app, "expired")
        await pilot.press("enter")
    rows = await _sql(stack.dsn, "SELECT id, state FROM orders WHERE id = ANY($1::text[]) ORDER BY id",
                      ["co-c2", "co-c3"])
    assert [(r["id"], r["state"]) for r in rows] == [("co-c2", "FAILED"), ("co-c3", "FAILED")]
    entries = [e for e in engine.audit.tail(10) if e["action"] == "orders.fix"]
    assert [e["result"] for e in entries][-2:] == ["ok", "ok"] and entries[-1]["reason"] == "expired"


async def test_reconcile_with_nothing_released_says_so_and_opens_no_form(stack, monkeypatch, tmp_path):
    """`R` on stuck orders none of which is released on chain: the console says there is
    nothing to reconcile and what to do instead; it opens no form of raw fields (the
    newcomer got older_than / batch / operator to fill, with the refusal as an error)."""
    from backends.config import load_config
    from backends.engine.core import build_engine
    from tui.app import WarroomApp
    from tui.screens.params import ParamsScreen

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    await _sql(stack.dsn, "INSERT INTO orders (id, state, created_at) VALUES ('co-u1', 'PENDING', "
               "now() - interval '3 hours')")
    # the harness's own pending orders (one of them released on chain) step aside meanwhile
    others = [r["id"] for r in await _sql(stack.dsn, "UPDATE orders SET state = 'HELD' WHERE state = 'PENDING' "
                                                     "AND id <> 'co-u1' RETURNING id")]
    engine = build_engine(load_config(stack.config_path), operator="alice")
    app = WarroomApp(engine)
    async with app.run_test(size=(160, 48)) as pilot:
        pane = app.dashboard.pane("orders")
        await until(pilot, lambda: "co-u1" in pane.row_keys(), limit=30, what="the stuck row")
        pane.table.focus()
        await pilot.press("R")
        await until(pilot, lambda: any(n.title == "nothing to do" for n in app._notifications),
                    what=f"the notice (said: {[n.message for n in app._notifications]}, screen {app.screen!r})")
        said = next(n.message for n in app._notifications if n.title == "nothing to do")
        assert "nothing to reconcile" in said and "fix one" in said, said
        assert not isinstance(app.screen, ParamsScreen) and app.screen is app.dashboard
    await _sql(stack.dsn, "DELETE FROM orders WHERE id = 'co-u1'")
    await _sql(stack.dsn, "UPDATE orders SET state = 'PENDING' WHERE id = ANY($1::text[])", others)
