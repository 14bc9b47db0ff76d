"""Listener integrity: proof that the event listener skipped no block.

The listener's cursor says which blocks it processed: every release event in a block at or
below the cursor must have settled its order. `ListenerIntegrity` (a monitor source) reads,
in this order (so a listener working meanwhile cannot make a false gap): the cursor, the
head, the release events on chain in [cursor - window, head], and the orders those events
name. A release in a block <= cursor whose order is still pending is a missed event; the
missed events are grouped into ranges of blocks ("missed blocks 120-131, 4 releases
unprocessed", a range ending where the next processed release lies). Events above the
cursor are the listener's ordinary backlog, counted, never a gap.

`BackfillAction` (`orders.backfill`) is the reconcile over exactly that range: it scans the
range again, lists the pending orders released in it (preview), leaves out the releases that
are not final yet, and settles the rest with the conditional update of the orders store
(guard re-checked, typed-free confirm, audited by the engine; read-only refuses it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from backends.actions.base import (
    Action,
    ActionPlan,
    ActionResult,
    Change,
    Danger,
    Guard,
    Progress,
    ProgressFn,
)
from backends.engine.rules import rule
from backends.errors import ActionRefused, BackendError
from backends.model import Finding, Reading, Severity

DEFAULT_WINDOW = 2000  # blocks below the cursor that are re-checked on every poll
# The poll keeps the window's events between polls and asks the node again only for the
# blocks a reorg can still change (the last REFETCH_MIN blocks, or 2 x the chain's
# confirmations when larger) and the new ones; every FULL_EVERY polls it reads the whole
# window again. Before, each poll re-read and decoded every release of the last 2,000
# blocks: the biggest CPU cost of the console on a busy chain.
REFETCH_MIN = 64
FULL_EVERY = 150
_RANGE = re.compile(r"missed blocks? (\d+)(?:-(\d+))?")  # "missed blocks 120-131" or "missed block 14"


def blocks_text(a: int, b: int) -> str:
    """'blocks 120-131', or 'block 14' for a range of one."""
    return f"block {a}" if a == b else f"blocks {a}-{b}"


@dataclass(frozen=True, slots=True, kw_only=True)
class GapRange:
    """Blocks whose release events the listener did not process."""

    from_block: int
    to_block: int
    order_ids: tuple[str, ...] = ()
    tx_hashes: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return len(self.order_ids)

    @property
    def text(self) -> str:
        plural = "s" if self.count != 1 else ""
        return f"missed {blocks_text(self.from_block, self.to_block)}, {self.count} release{plural} unprocessed"


@dataclass(frozen=True, slots=True, kw_only=True)
class IntegrityReading(Reading):
    """One integrity scan of a listener against the chain."""

    chain: str
    name: str = "listener"  # the cursor's key
    cursor: int | None = None
    head: int | None = None
    scanned_from: int | None = None
    scanned_to: int | None = None
    events: int = 0  # release events in the scanned range
    processed: int = 0  # of those at or below the cursor whose order is not pending
    ahead: int = 0  # events above the cursor (the listener's backlog)
    unknown: int = 0  # events naming no order in the table
    gaps: tuple[GapRange, ...] = ()
    detail: str = ""

    def describe(self) -> str:
        """One line for `warroom health`."""
        if self.cursor is None:
            return f"listener {self.name}: {self.detail or 'no cursor'}"
        if self.gaps:
            return f"listener {self.name}: " + "; ".join(g.text for g in self.gaps)
        return (f"listener {self.name}: no missed blocks in {self.scanned_from}-{self.cursor} "
                f"({self.processed} releases processed, {self.ahead} above the cursor)")


@dataclass(frozen=True, slots=True)
class _Event:
    block: int
    log_index: int
    topic: str
    tx_hash: str


def group_gaps(events: Sequence[_Event], missed: dict[str, str], cursor: int) -> tuple[GapRange, ...]:
    """Missed events (topic -> order id) grouped into ranges: a range closes at a processed
    event between two missed ones. Only events at or below `cursor` are considered."""
    out: list[GapRange] = []
    cur: list[_Event] = []

    def close() -> None:
        if cur:
            out.append(GapRange(from_block=cur[0].block, to_block=cur[-1].block,
                                order_ids=tuple(missed[e.topic] for e in cur),
                                tx_hashes=tuple(e.tx_hash for e in cur)))
            cur.clear()

    for e in sorted(events, key=lambda e: (e.block, e.log_index)):
        if e.block > cursor:
            break
        if e.topic in missed:
            cur.append(e)
        elif e.topic is not None:
            close()
    close()
    return tuple(out)


class ListenerIntegrity:
    """Monitor source: release events on chain vs the orders table, below the listener cursor."""

    kind = "chain"

    def __init__(self, store: Any, verifier: Any, *, chain_name: str, window: int = DEFAULT_WINDOW,
                 interval: float | None = None, max_orders: int = 100_000) -> None:
        self.store = store  # backends.sources.orders.OrdersStore
        self.verifier = verifier  # backends.sources.orders.ReleaseVerifier (chain, address, topic0, encoding)
        self.chain = verifier.chain
        self.chain_name = chain_name
        self.spec = store.spec
        self.name = f"integrity.{store.spec.source}"
        self.window = max(0, int(window))
        self.interval = float(interval if interval is not None else store.spec.interval)
        self.timeout = max(float(store.spec.timeout), float(self.chain.spec.timeout)) * 4 + 5
        self.max_orders = max_orders
        self.last: IntegrityReading | None = None
        # the window's events kept between polls: blocks [_kept_from, _kept_to], sorted
        self._kept: list[_Event] = []
        self._kept_from = self._kept_to = -1
        self._polls_since_full = 0
        self.fetched: list[tuple[int, int]] = []  # the ranges the last poll asked the node for

    @property
    def cursor_key(self) -> str:
        cur = self.spec.cursor
        return str(cur.key) if cur is not None else "listener"

    async def _events(self, a: int, b: int) -> list[_Event]:
        from backends.sources.jsonrpc import parse_int

        if b < a:
            return []
        logs = await self.chain.get_logs_chunked(self.verifier.address, [self.verifier.topic0], a, b)
        out = []
        for lg in logs:
            topics = lg.get("topics") or []
            if len(topics) < 2 or lg.get("removed"):
                continue
            out.append(_Event(block=parse_int(lg.get("blockNumber", "0x0")),
                              log_index=parse_int(lg.get("logIndex", "0x0")),
                              topic=str(topics[1]).lower(), tx_hash=str(lg.get("transactionHash", ""))))
        return out

    async def _pending_topics(self) -> dict[str, str]:
        """topic -> order id of every pending order (any id encoding, keccak included)."""
        from backends.sources.orders import encode_order_id

        out: dict[str, str] = {}
        for o in await self.store.candidates(0.0, self.max_orders):
            try:
                out[encode_order_id(o.id, self.verifier.id_encoding).lower()] = o.id
            except ValueError:
                continue
        return out

    async def scan(self, a: int, b: int, cursor: int) -> tuple[list[_Event], dict[str, str]]:
        """Events in [a, b] and the missed ones among them (topic -> pending order id, <= cursor)."""
        events = await self._events(a, b)
        pending = await self._pending_topics() if events else {}
        missed = {e.topic: pending[e.topic] for e in events if e.block <= cursor and e.topic in pending}
        return events, missed

    @property
    def refetch_depth(self) -> int:
        """Blocks below the head that each poll reads again (a reorg can still change them)."""
        conf = getattr(self.verifier, "confirmations", 0) or 0
        return max(REFETCH_MIN, 2 * int(conf))

    async def _window_events(self, a: int, head: int) -> list[_Event]:
        """The events of [a, head]: the kept ones below the reorg depth, the rest read anew."""
        kept_ok = (self._kept_to >= 0 and self._kept_from <= a <= self._kept_to + 1
                   and head >= self._kept_to and self._polls_since_full < FULL_EVERY)
        start = max(a, self._kept_to - self.refetch_depth + 1) if kept_ok else a
        if not kept_ok:
            self._polls_since_full = 0
        self._polls_since_full += 1
        fresh = await self._events(start, head)
        self.fetched = [(start, head)] if head >= start else []
        old = [e for e in self._kept if a <= e.block < start] if kept_ok else []
        events = old + sorted(fresh, key=lambda e: (e.block, e.log_index))
        self._kept, self._kept_from, self._kept_to = events, a, head
        return events

    async def poll(self) -> list[IntegrityReading]:
        cursor, _updated = await self.store.cursor()  # first: events below it are all processed
        head = await self.chain.head()
        if cursor is None:
            r = IntegrityReading(source=self.name, chain=self.chain_name, name=self.cursor_key, head=head,
                                 detail="no listener cursor row yet")
            self.last = r
            return [r]
        a = max(int(self.verifier.start_block or 0), cursor - self.window, 0)
        try:
            events = await self._window_events(a, head)
        except BaseException:
            self._kept_to = -1  # a failed read: the next poll reads the whole window
            raise
        pending = await self._pending_topics() if events else {}
        missed = {e.topic: pending[e.topic] for e in events if e.block <= cursor and e.topic in pending}
        below = [e for e in events if e.block <= cursor]
        gaps = group_gaps(events, missed, cursor)
        r = IntegrityReading(
            source=self.name, chain=self.chain_name, name=self.cursor_key, cursor=cursor, head=head,
            scanned_from=a, scanned_to=head, events=len(events),
            processed=len(below) - len(missed), ahead=len(events) - len(below), gaps=gaps,
        )
        self.last = r
        return [r]

    async def aclose(self) -> None:
        return None


# --------------------------------------------------------------------------- the backfill


def _int_param(action: str, name: str, v: Any) -> int | None:
    if v is None or v == "":
        return None
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v.strip())
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ActionRefused(action, f"{name} must be a whole block number >= 0, not {str(v)[:40]!r}")
    return v


class BackfillAction(Action):
    """`orders.backfill`: settle the pending orders released in exactly one missed block range."""

    id = "orders.backfill"
    title = "Backfill missed blocks"
    danger = Danger.CONFIRM
    reason_required = False
    description = ("Reconcile exactly the block range the listener skipped: the pending orders released "
                   "in it (final on chain) are settled.")

    def __init__(self, sources: dict[str, ListenerIntegrity], *, operator: Any = None) -> None:
        self.sources = sources
        self.operator = operator

    def _source(self, listener: str | None) -> ListenerIntegrity:
        if listener in self.sources:
            return self.sources[listener]
        if listener is None and len(self.sources) == 1:
            return next(iter(self.sources.values()))
        raise ActionRefused(self.id, f"which listener? ({', '.join(sorted(self.sources)) or 'none'})")

    def _range(self, src: ListenerIntegrity, from_block: Any, to_block: Any, reason: Any = None) -> tuple[int, int]:
        a = _int_param(self.id, "from_block", from_block)
        b = _int_param(self.id, "to_block", to_block)
        m = _RANGE.search(reason) if isinstance(reason, str) and a is None and b is None else None
        if m:  # the Findings pane plans the step with the finding's words: its range, exactly
            return int(m.group(1)), int(m.group(2) or m.group(1))
        if a is None and b is None:
            last = src.last
            if last is None or not last.gaps:
                raise ActionRefused(self.id, "no missed block range found by the last integrity scan",
                                    nothing=True)
            return last.gaps[0].from_block, last.gaps[0].to_block
        if a is None or b is None:
            raise ActionRefused(self.id, "give both from_block and to_block (or neither: the detected gap)")
        if b < a:
            raise ActionRefused(self.id, f"to_block {b} is below from_block {a}")
        return a, b

    async def _select(self, src: ListenerIntegrity, a: int, b: int) -> tuple[list[str], list[str], int, int]:
        """(final ids, not-final ids, cursor, finalized head) of pending orders released in [a, b]."""
        cursor, _u = await src.store.cursor()
        if cursor is None:
            raise ActionRefused(self.id, "no listener cursor row: nothing is known to be processed")
        head = await src.chain.head()
        # final as the release verifier judges it: at least its confirmations deep
        final_head = head - max(int(src.verifier.confirmations), 1) + 1
        events, missed = await src.scan(a, min(b, head), cursor)
        blocks = {e.topic: e.block for e in events}
        final = [oid for t, oid in missed.items() if blocks[t] <= final_head]
        waiting = [oid for t, oid in missed.items() if blocks[t] > final_head]
        return final, waiting, cursor, final_head

    async def plan(self, from_block: Any = None, to_block: Any = None, listener: str | None = None,
                   reason: Any = None, **_: Any) -> ActionPlan:
        src = self._source(listener)
        a, b = self._range(src, from_block, to_block, reason)
        final, waiting, cursor, final_head = await self._select(src, a, b)
        if b > cursor:
            raise ActionRefused(self.id, f"{blocks_text(a, b)} reach above the listener cursor {cursor}: the "
                                         "listener has not passed them yet")
        if not final:
            raise ActionRefused(self.id, f"{blocks_text(a, b)}: no pending order with a final release"
                                + (f" ({len(waiting)} wait for finality at block {final_head})" if waiting else ""),
                                nothing=True)
        settled = src.spec.settled_state
        shown = final[:50]
        preview = "\n".join([
            f"{blocks_text(a, b)} (listener cursor {cursor}): {len(final)} pending order(s) released on chain -> {settled}",
            "only orders still pending are changed (the rest are skipped)",
            *([f"{len(waiting)} released after the finalized block {final_head}: left out, backfill again later"]
              if waiting else []),
            "orders: " + ", ".join(shown) + (f" … and {len(final) - len(shown)} more" if len(final) > 50 else ""),
        ])
        why = str(reason).strip()[:200] if isinstance(reason, str) and reason.strip() else f"backfill {blocks_text(a, b)}"
        return ActionPlan(
            action=self.id, title=self.title, target=f"blocks:{a}-{b}",
            changes=(Change("orders", f"{len(final)} orders released in {blocks_text(a, b)} -> {settled}",
                            {"state": list(src.spec.pending_states), "ids": final}, {"state": settled}),),
            guard=Guard(True, f"{len(final)} pending order(s) with a final release in {blocks_text(a, b)}"),
            danger=self.danger, reason=why, reason_required=False,
            params={"listener": src.name, "from_block": a, "to_block": b, "ids": final},
            preview=preview, notes=tuple(f"{len(waiting)} wait for finality" for _ in [0] if waiting),
            total=len(final),
        )

    async def check_guard(self, plan: ActionPlan) -> Guard:
        src = self._source(plan.params["listener"])
        a, b = plan.params["from_block"], plan.params["to_block"]
        final, _w, _c, _f = await self._select(src, a, b)
        still = sorted(set(final) & set(plan.params["ids"]))
        ok = bool(still)
        return Guard(ok, f"{len(still)} of {len(plan.params['ids'])} planned order(s) still pending and released",
                     "" if ok else "every planned order is settled already (the listener caught up?)")

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        from backends.sources.orders import _note_suffix

        src = self._source(plan.params["listener"])
        ids = list(plan.params["ids"])
        op = self.operator() if callable(self.operator) else (self.operator or "warroom")
        suffix = _note_suffix(str(op), plan.reason or "backfill")
        progress(Progress(0, len(ids), f"settling {len(ids)} order(s)"))
        try:
            changed = await src.store.update_batch(ids, src.spec.settled_state, suffix)
        except BackendError as exc:
            return ActionResult(status="failed", summary=f"backfill failed (rolled back): {exc.reason}")
        skipped = [i for i in ids if i not in set(changed)]
        progress(Progress(len(ids), len(ids), f"{len(changed)} settled, {len(skipped)} skipped"))
        a, b = plan.params["from_block"], plan.params["to_block"]
        return ActionResult(
            status="ok" if changed else "skipped",
            summary=f"{blocks_text(a, b)}: {len(changed)} order(s) settled, {len(skipped)} skipped (no longer pending)",
            before={"state": list(src.spec.pending_states), "count": len(ids)},
            after={"state": src.spec.settled_state, "fixed": list(changed), "skipped": skipped},
            counts={"fixed": len(changed), "skipped": len(skipped)},
        )


def integrity_from_bundle(bundle: Any, *, chain_name: str, window: int = DEFAULT_WINDOW,
                          operator: Any = None) -> tuple[ListenerIntegrity, BackfillAction] | None:
    """The integrity source and backfill action for an orders bundle with a chain and a cursor."""
    if bundle.verifier is None or bundle.store.spec.cursor is None:
        return None
    src = ListenerIntegrity(bundle.store, bundle.verifier, chain_name=chain_name, window=window)
    return src, BackfillAction({src.name: src}, operator=operator)


# --------------------------------------------------------------------------- rules


@rule(IntegrityReading)
def integrity_rules(r: IntegrityReading, ctx: Any) -> list[Finding]:
    out: list[Finding] = []
    for g in r.gaps:
        out.append(Finding(
            key=f"missed-blocks:{r.source}:{g.from_block}-{g.to_block}",
            severity=Severity.P1, source=r.source,
            summary=f"{r.name} listener: {g.text}",
            evidence=(f"cursor {r.cursor}, head {r.head}; scanned {r.scanned_from}-{r.scanned_to}: "
                      f"{r.events} release(s), {r.processed} processed, {r.ahead} above the cursor",
                      "orders: " + ", ".join(g.order_ids[:5]) + (" …" if g.count > 5 else ""),
                      "tx: " + ", ".join(h[:18] for h in g.tx_hashes[:3])),
            playbook="missed-blocks", target=f"blocks:{g.from_block}-{g.to_block}",
        ))
    return out


def with_gaps(r: IntegrityReading, gaps: Sequence[GapRange]) -> IntegrityReading:
    return replace(r, gaps=tuple(gaps))


__all__ = ["BackfillAction", "DEFAULT_WINDOW", "GapRange", "IntegrityReading", "ListenerIntegrity",
           "group_gaps", "integrity_from_bundle", "integrity_rules"]
