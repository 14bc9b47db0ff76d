"""Messages the panes post. The app turns them into actions (through the engine) or screens.

Panes never act on the world themselves: a key in a pane posts `ActionRequested`
and the app plans it, shows the modal and runs it (or refuses it in read-only).
"""

from __future__ import annotations

from typing import Any

from textual.message import Message

# Every action id a pane may request (the engine decides whether it exists).
ACTION_IDS = (
    "service.restart", "service.stop", "service.start",
    "breaker.reset", "breaker.reset_all",
    "orders.fix", "orders.bulk_fix", "orders.reconcile", "orders.verify",
    "queue.requeue_dead",
    "chain.pause", "chain.unpause", "chain.failover",
    "postgres.terminate",
    "incident.declare", "escalate",
)


class ActionRequested(Message):
    """A pane asks the app to plan (and, after confirmation, run) an action.

    `params` are the keyword arguments of the action's `plan()`; `target` names what it
    acts on ("service:api-gateway", "orders:3 selected") for the modal and the audit.
    """

    def __init__(self, action_id: str, params: dict[str, Any] | None = None, target: str = "") -> None:
        super().__init__()
        self.action_id = action_id
        self.params: dict[str, Any] = dict(params or {})
        self.target = target

    def __repr__(self) -> str:
        return f"ActionRequested({self.action_id!r}, {self.params!r}, target={self.target!r})"


class DetailRequested(Message):
    """A pane asks for the detail screen of one item (enter on a row).

    kind: "service" | "queue" | "breaker" | "order" | "endpoint" | "finding";
    key: the row key (service name, queue name, breaker name, order id, endpoint url, finding key).
    `item` is the model object itself when the pane has it.
    """

    def __init__(self, kind: str, key: str, item: Any = None) -> None:
        super().__init__()
        self.kind = kind
        self.key = key
        self.item = item

    def __repr__(self) -> str:
        return f"DetailRequested({self.kind!r}, {self.key!r})"
