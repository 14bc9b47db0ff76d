"""Parsing of [orders] and [orders.cursor]."""

from __future__ import annotations

from collections.abc import Mapping

from backends.config.base import BAD, _replace
from backends.config.crossref import _ref
from backends.config.loader import _Loader, _Table
from backends.config.model import ChainConfig, OrdersConfig, OrdersCursorConfig, PostgresConfig


def parse_orders(ld: _Loader, root: _Table, postgres: Mapping[str, PostgresConfig], chains: Mapping[str, ChainConfig]) -> OrdersConfig | None:
    """[orders]"""
    orders = None
    t = ld.table(root.raw("orders"), ("orders",)) if root.has("orders") else None
    if t:
        cursor = None
        ct = ld.table(t.raw("cursor"), ("orders", "cursor")) if t.has("cursor") else None
        if ct:
            cursor = OrdersCursorConfig(
                table=ct.take("table"),
                key_column=ct.take("key_column"),
                key=ct.take("key"),
                block_column=ct.take("block_column"),
                updated_column=ct.take("updated_column"),
            )
            ct.done()
        orders = OrdersConfig(
            postgres=t.take("postgres"),
            table=t.take("table"),
            id_column=t.take("id_column"),
            id_pattern=t.take("id_pattern"),
            state_column=t.take("state_column"),
            created_column=t.take("created_column"),
            updated_column=t.take("updated_column"),
            notes_column=t.take("notes_column"),
            block_column=t.take("block_column"),
            tx_column=t.take("tx_column"),
            pending_states=t.take("pending_states"),
            target_states=t.take("target_states"),
            settled_state=t.take("settled_state"),
            start_block=t.take("start_block"),
            stuck_after=t.take("stuck_after"),
            show=t.take("show"),
            chain=t.take("chain"),
            contract=t.take("contract"),
            event=t.take("event"),
            id_encoding=t.take("id_encoding"),
            bulk_batch=t.take("bulk_batch"),
            interval=t.take("interval"),
            cursor=cursor,
        )
        _ref(ld, ("orders", "postgres"), orders.postgres, postgres, "postgres")
        if orders.chain and orders.chain is not BAD:
            if _ref(ld, ("orders", "chain"), orders.chain, chains, "chain") and orders.contract \
                    and orders.contract is not BAD and chains[orders.chain].contract(orders.contract) is None:
                have = [c.name for c in chains[orders.chain].contracts]
                ld.error(("orders", "contract"),
                         f"contract {orders.contract!r} is not in [[chain.{orders.chain}.contracts]]",
                         "one of: " + ", ".join(have) if have else
                         f"a [[chain.{orders.chain}.contracts]] entry with that name")
        elif orders.contract and orders.contract is not BAD:
            ld.error(("orders", "contract"), "contract is set but chain is not", 'chain = "NAME" of a [chain.NAME]')
        ts = orders.target_states
        if ts is not BAD and orders.settled_state is not BAD:
            if orders.settled_state is None:
                orders = _replace(orders, settled_state="SETTLED" if "SETTLED" in ts else ts[0])
            elif orders.settled_state not in ts:
                ld.error(("orders", "settled_state"), f"{orders.settled_state!r} is not in target_states",
                         "one of: " + ", ".join(ts))
        if orders.pending_states is not BAD and orders.target_states is not BAD:
            both = set(orders.pending_states) & set(orders.target_states)
            if both:
                ld.error(("orders", "target_states"), f"states both pending and target: {', '.join(sorted(both))}",
                         "target states different from pending states")
        t.done()
    return orders
