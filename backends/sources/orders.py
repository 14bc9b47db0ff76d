"""Stuck orders: readings, on-chain verification, safe fixes, the listener cursor.

The seed's emergency-order-fix as a module (Meta Aggregator runbooks 000-002):

- `OrdersSpec` maps the orders table (validated, quoted identifiers only) and the
  pending / target states; `OrdersStore` runs the parameterised queries on the shared
  asyncpg pool of `backends/sources/postgres.py`.
- `OrdersSource` (a monitor source) reads the stuck count, the oldest age, the oldest N
  stuck orders (never the whole table), the counts by state for the last 24 h, the
  listener cursor against head / finalized head, and checks once (then every few
  minutes) with EXPLAIN that the stuck query can use an index.
- `ReleaseVerifier` finds the release event of stuck orders on chain, batched: one
  `eth_getLogs` per block range with the order ids OR-ed in topic[1]. Verdicts:
  released (tx, block, confirmations, final at the configured depth), not_released
  (checked up to the node's head, never beyond), unknown (RPC error, endpoints disagree).
- Actions: `orders.verify` (read-only), `orders.fix` (one order or the selected ones,
  reason required), `orders.bulk_fix` (by age, optionally only final releases, batches, canary),
  `orders.reconcile` (settle exactly the orders whose release is final on chain),
  `orders.resync` (rewind the listener cursor to block N <= head).

Every update is conditional: `... WHERE id = ... AND state = ANY(pending) RETURNING`;
an order that changed meanwhile is `skipped`, never overwritten. Operator input (order
id pattern, state in the allowed set, numbers) is validated before any query.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

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
from backends.engine.audit import AuditUnavailable, resolve_operator
from backends.engine.rules import rule
from backends.errors import ActionRefused, BackendError, describe_exception
from backends.model import (
    CursorReading,
    Finding,
    Order,
    OrdersReading,
    OrderVerdict,
    Reading,
    Severity,
    Verdict,
)
from backends.sources.finality import reorg_rules  # noqa: F401  (registers the reorged-release rule)
from backends.units import format_age as fmt_age
from backends.units import parse_duration

if TYPE_CHECKING:
    from backends.sources.postgres import Connection, Record

_T = TypeVar("_T")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
AUDIT_LIST_MAX = 1000  # bulk results list the fixed ids explicitly up to this many
_STATE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def qident(name: str, *, allow_schema: bool = False) -> str:
    """A config identifier, validated and double-quoted (`public.orders` -> `"public"."orders"`)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"invalid SQL identifier {name!r}")
    parts = name.split(".")
    if len(parts) > (2 if allow_schema else 1) or not all(_IDENT.match(p) for p in parts):
        raise ValueError(f"invalid SQL identifier {name!r} (expected ^[A-Za-z_][A-Za-z0-9_]*$)")
    return ".".join(f'"{p}"' for p in parts)


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True, slots=True, kw_only=True)
class CursorSpec:
    table: str = "listener_cursor"
    key_column: str = "name"
    key: str = "escrow"
    block_column: str = "last_block"
    updated_column: str | None = "updated_at"
    max_gap_s: float = 300.0  # listener behind head by more than this -> finding


@dataclass(frozen=True, slots=True, kw_only=True)
class OrdersSpec:
    """The `[orders]` mapping as plain values."""

    table: str = "orders"
    id_column: str = "id"
    id_pattern: str = r"^[A-Za-z0-9_-]{1,128}$"
    state_column: str = "state"
    created_column: str = "created_at"
    updated_column: str | None = "updated_at"
    notes_column: str | None = "notes"
    block_column: str | None = None
    tx_column: str | None = None
    pending_states: tuple[str, ...] = ("PENDING",)
    target_states: tuple[str, ...] = ("SETTLED", "FAILED", "CANCELLED")
    settled_state: str = "SETTLED"  # the target that means "released on chain"
    stuck_after: float = 600.0
    show: int = 50
    bulk_batch: int = 500
    id_encoding: str = "bytes32-utf8"  # bytes32-utf8 | uint256 | keccak
    event: str = "EscrowReleased"
    start_block: int = 0  # where verification scans from when orders carry no block number
    large_table_rows: int = 100_000  # a missing index matters from this many rows
    timeout: float = 10.0
    interval: float = 10.0
    verify_in_poll: bool = True
    source: str = "orders"
    cursor: CursorSpec | None = None

    def __post_init__(self) -> None:
        qident(self.table, allow_schema=True)
        for col in (self.id_column, self.state_column, self.created_column, self.updated_column,
                    self.notes_column, self.block_column, self.tx_column):
            if col is not None:
                qident(col)
        if self.cursor is not None:
            qident(self.cursor.table, allow_schema=True)
            for col in (self.cursor.key_column, self.cursor.block_column, self.cursor.updated_column):
                if col is not None:
                    qident(col)
        re.compile(self.id_pattern)
        if not self.pending_states:
            raise ValueError("pending_states is empty")
        if self.id_encoding not in ("bytes32-utf8", "uint256", "keccak"):
            raise ValueError(f"unknown id_encoding {self.id_encoding!r}")

    # validation of operator input ------------------------------------------------

    def check_id(self, action: str, order_id: Any) -> str:
        if not isinstance(order_id, str) or not re.fullmatch(self.id_pattern, order_id):
            shown = repr(order_id)[:60]
            raise ActionRefused(action, f"order id {shown} does not match {self.id_pattern}")
        return order_id

    def check_state(self, action: str, state: Any) -> str:
        if not isinstance(state, str) or state not in self.target_states:
            shown = repr(state)[:40]
            raise ActionRefused(action, f"state {shown} is not one of {', '.join(self.target_states)}")
        return state


# --------------------------------------------------------------------------- store


class OrdersStore:
    """The orders table (and listener cursor) on the shared asyncpg pool."""

    def __init__(self, spec: OrdersSpec, dsn: Any, *, pool_max: int = 2) -> None:
        self.spec = spec
        self.dsn = dsn
        self.pool_max = pool_max
        self.source = spec.source
        self.queries = 0  # every statement sent (tests check "refused before any query")
        self._id_type: str | None = None
        s = spec
        self.t = qident(s.table, allow_schema=True)
        self.c_id = qident(s.id_column)
        self.c_state = qident(s.state_column)
        self.c_created = qident(s.created_column)
        self.c_updated = qident(s.updated_column) if s.updated_column else None
        self.c_notes = qident(s.notes_column) if s.notes_column else None
        self.c_block = qident(s.block_column) if s.block_column else None
        self.c_tx = qident(s.tx_column) if s.tx_column else None
        cols = [f"{self.c_id}::text AS id", f"{self.c_state}::text AS state", f"{self.c_created} AS created"]
        cols.append(f"{self.c_updated} AS updated" if self.c_updated else "NULL::timestamptz AS updated")
        cols.append(f"{self.c_block}::bigint AS block" if self.c_block else "NULL::bigint AS block")
        cols.append(f"{self.c_tx}::text AS tx" if self.c_tx else "NULL::text AS tx")
        cols.append(f"{self.c_notes}::text AS notes" if self.c_notes else "NULL::text AS notes")
        self.cols = ", ".join(cols)
        # One pending state: `state = $1` lets an index on (state, created) return the oldest
        # rows in order (LIMIT stops early); `= ANY(array)` would sort every stuck row.
        self._single = len(s.pending_states) == 1
        state_cond = f"{self.c_state} = $1" if self._single else f"{self.c_state} = ANY($1)"
        self.stuck_where = f"{state_cond} AND {self.c_created} < now() - $2::interval"
        self.sql_stuck_summary = f"SELECT count(*) AS n, min({self.c_created}) AS oldest FROM {self.t} WHERE {self.stuck_where}"  # noqa: S608
        self.sql_stuck_list = (
            f"SELECT {self.cols} FROM {self.t} WHERE {self.stuck_where} "  # noqa: S608
            f"ORDER BY {self.c_created} LIMIT $3"
        )
        self.sql_by_state = (
            f"SELECT {self.c_state}::text AS state, count(*) AS n FROM {self.t} "  # noqa: S608
            f"WHERE {self.c_created} > now() - interval '24 hours' GROUP BY 1"
        )
        sets = [f"{self.c_state} = $2"]
        if self.c_updated:
            sets.append(f"{self.c_updated} = now()")
        if self.c_notes:
            sets.append(f"{self.c_notes} = COALESCE({self.c_notes}, '') || $3")
        set_sql = ", ".join(sets)
        note_arg = "$3" if self.c_notes else "$3::text IS NOT NULL AND true"
        self._cond_pending = "$4"
        self.sql_update_one = (
            f"UPDATE {self.t} SET {set_sql} WHERE {self.c_id} = $1 AND {self.c_state} = ANY($4) "  # noqa: S608
            f"{'' if self.c_notes else 'AND ' + note_arg + ' '}RETURNING {self.cols}"
        )
        self.sql_update_many = (
            f"UPDATE {self.t} SET {set_sql} WHERE {self.c_id} = ANY($1) AND {self.c_state} = ANY($4) "  # noqa: S608
            f"{'' if self.c_notes else 'AND ' + note_arg + ' '}RETURNING {self.c_id}::text AS id"
        )
        self.sql_get = f"SELECT {self.cols} FROM {self.t} WHERE {self.c_id} = $1"  # noqa: S608
        self.sql_get_many = f"SELECT {self.cols} FROM {self.t} WHERE {self.c_id} = ANY($1)"  # noqa: S608
        self.sql_candidates = (
            f"SELECT {self.cols} FROM {self.t} WHERE {self.stuck_where} "  # noqa: S608
            f"ORDER BY {self.c_created} LIMIT $3"
        )
        cur = spec.cursor
        if cur is not None:
            ct = qident(cur.table, allow_schema=True)
            ck, cb = qident(cur.key_column), qident(cur.block_column)
            cu = qident(cur.updated_column) if cur.updated_column else None
            self.sql_cursor = (
                f"SELECT {cb}::bigint AS block, {cu if cu else 'NULL::timestamptz'} AS updated "  # noqa: S608
                f"FROM {ct} WHERE {ck} = $1"
            )
            self.sql_set_cursor = (
                f"UPDATE {ct} SET {cb} = $2{', ' + cu + ' = now()' if cu else ''} WHERE {ck} = $1 "  # noqa: S608
                f"RETURNING {cb}::bigint AS block"
            )

    @property
    def pending_arg(self) -> Any:
        return self.spec.pending_states[0] if self._single else list(self.spec.pending_states)

    # ------------------------------------------------------------------ plumbing

    async def run(self, fn: Callable[[Connection], Awaitable[_T]], *, time_limit: float | None = None) -> _T:
        """`fn(con)` on a pooled connection; every failure becomes BackendError."""
        from backends.sources.postgres import run

        return await run(self.dsn, fn, source=self.source, timeout=time_limit or self.spec.timeout,
                         max_size=self.pool_max, statement_timeout=max(self.spec.timeout, 30.0))

    async def once(self, fn: Callable[[Connection], Awaitable[_T]], *, time_limit: float | None = None) -> _T:
        """Like `run` but never retried (for writes whose outcome must be reported exactly)."""
        import asyncio

        from backends.sources.postgres import connection, describe_pg_error, reveal

        t = time_limit or self.spec.timeout
        try:
            async with asyncio.timeout(t):
                async with connection(self.dsn, source=self.source, timeout=t, max_size=self.pool_max,
                                      statement_timeout=max(self.spec.timeout, 30.0)) as con:
                    return await fn(con)
        except BackendError:
            raise
        except TimeoutError:
            raise BackendError(self.source, f"no answer from postgres within {t:g}s") from None
        except Exception as exc:
            raise BackendError(self.source, describe_pg_error(exc, reveal(self.dsn))) from None

    def _count(self, n: int = 1) -> None:
        self.queries += n

    async def _id_conv(self, con: Any) -> Callable[[str], Any]:
        if self._id_type is None:
            self._count()
            self._id_type = await con.fetchval(
                "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped",
                self.t, self.spec.id_column,
            ) or "text"
        t = self._id_type
        if t in ("integer", "bigint", "smallint"):
            return int
        if t == "uuid":
            import uuid

            return uuid.UUID
        return str

    def _order(self, r: Any, now: datetime | None = None) -> Order:
        now = now or datetime.now(UTC)
        created = r["created"]
        if created is not None and created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        updated = r["updated"]
        if updated is not None and updated.tzinfo is None:
            updated = updated.replace(tzinfo=UTC)
        return Order(
            id=r["id"], state=r["state"], created_at=created, updated_at=updated,
            age_s=(now - created).total_seconds() if created else None,
            block_number=r["block"], tx_hash=r["tx"], notes=r["notes"],
        )

    # ------------------------------------------------------------------ reads

    async def stuck_summary(self, stuck_after: float | None = None) -> tuple[int, float | None]:
        age = timedelta(seconds=self.spec.stuck_after if stuck_after is None else stuck_after)

        async def q(con: Connection) -> Record:
            self._count()
            return await con.fetchrow(self.sql_stuck_summary, self.pending_arg, age)

        row = await self.run(q)
        oldest = row["oldest"]
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        return int(row["n"]), ((datetime.now(UTC) - oldest).total_seconds() if oldest else None)

    async def stuck(self, limit: int | None = None, older_than: float | None = None) -> list[Order]:
        age = timedelta(seconds=self.spec.stuck_after if older_than is None else older_than)
        lim = self.spec.show if limit is None else limit

        async def q(con: Connection) -> list[Record]:
            self._count()
            rows: list[Record] = await con.fetch(self.sql_stuck_list, self.pending_arg, age, lim)
            return rows

        rows = await self.run(q)
        now = datetime.now(UTC)
        return [self._order(r, now) for r in rows]

    async def by_state_24h(self) -> dict[str, int]:
        async def q(con: Connection) -> list[Record]:
            self._count()
            rows: list[Record] = await con.fetch(self.sql_by_state)
            return rows

        return {r["state"]: int(r["n"]) for r in await self.run(q)}

    async def get(self, order_id: str) -> Order | None:
        async def q(con: Connection) -> Record | None:
            conv = await self._id_conv(con)
            self._count()
            return await con.fetchrow(self.sql_get, conv(order_id))

        r = await self.run(q)
        return self._order(r) if r else None

    async def get_many(self, ids: Sequence[str]) -> dict[str, Order]:
        async def q(con: Connection) -> list[Record]:
            conv = await self._id_conv(con)
            self._count()
            rows: list[Record] = await con.fetch(self.sql_get_many, [conv(i) for i in ids])
            return rows

        return {r["id"]: self._order(r) for r in await self.run(q)}

    async def candidates(self, older_than: float, limit: int) -> list[Order]:
        async def q(con: Connection) -> list[Record]:
            self._count()
            rows: list[Record] = await con.fetch(self.sql_candidates, self.pending_arg,
                                                 timedelta(seconds=older_than), limit)
            return rows

        now = datetime.now(UTC)
        return [self._order(r, now) for r in await self.run(q, time_limit=max(self.spec.timeout, 30.0))]

    async def index_check(self) -> tuple[bool, str, int | None]:
        """(index usable?, CREATE INDEX hint, estimated rows). Uses EXPLAIN with seq scans
        disabled: if the plan still scans the whole table, no index can serve the query."""
        import json as _json

        async def q(con: Connection) -> tuple[Any, int | None]:  # (the EXPLAIN plan, estimated rows)
            self._count(3)
            async with con.transaction():
                await con.execute("SET LOCAL enable_seqscan = off")
                plan = await con.fetchval(
                    "EXPLAIN (FORMAT JSON) " + self.sql_stuck_list,
                    self.pending_arg, timedelta(seconds=self.spec.stuck_after), self.spec.show,
                )
            rows = await con.fetchval(
                "SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END FROM pg_class c "
                "WHERE c.oid = to_regclass($1)", self.t)
            if rows is None:
                rows = await con.fetchval("SELECT count(*) FROM (SELECT 1 FROM " + self.t  # noqa: S608
                                          + " LIMIT $1) s", self.spec.large_table_rows + 1)
            return plan, rows

        plan, rows = await self.run(q)
        if isinstance(plan, str):
            plan = _json.loads(plan)
        seq = _has_seq_scan(plan, self.spec.table.split(".")[-1])
        name = f"{self.spec.table.split('.')[-1]}_{self.spec.state_column}_{self.spec.created_column}_idx"
        hint = (
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {qident(name[:63])} ON {self.t} "
            f"({self.c_state}, {self.c_created});"
        )
        return (not seq), ("" if not seq else hint), (int(rows) if rows is not None else None)

    async def cursor(self) -> tuple[int | None, datetime | None]:
        if self.spec.cursor is None:
            raise BackendError(self.source, "no listener cursor configured")
        key = self.spec.cursor.key

        async def q(con: Connection) -> Record | None:
            self._count()
            return await con.fetchrow(self.sql_cursor, key)

        r = await self.run(q)
        if r is None:
            return None, None
        return (int(r["block"]) if r["block"] is not None else None), r["updated"]

    # ------------------------------------------------------------------ writes

    async def update_one(self, order_id: str, state: str, suffix: str) -> Order | None:
        async def q(con: Connection) -> Record | None:
            conv = await self._id_conv(con)
            self._count()
            return await con.fetchrow(self.sql_update_one, conv(order_id), state, suffix,
                                      list(self.spec.pending_states))

        r = await self.once(q)
        return self._order(r) if r else None

    async def update_batch(self, ids: Sequence[str], state: str, suffix: str) -> list[str]:
        """One transaction: the conditional update of `ids`; returns the ids changed."""

        async def q(con: Connection) -> list[str]:
            conv = await self._id_conv(con)
            self._count()
            async with con.transaction():
                rows = await con.fetch(self.sql_update_many, [conv(i) for i in ids], state, suffix,
                                       list(self.spec.pending_states))
            return [r["id"] for r in rows]

        return await self.once(q, time_limit=max(self.spec.timeout, 30.0))

    async def set_cursor(self, block: int) -> int | None:
        if self.spec.cursor is None:
            raise BackendError(self.source, "no listener cursor configured")
        key = self.spec.cursor.key

        async def q(con: Connection) -> int | None:
            self._count()
            block_now: int | None = await con.fetchval(self.sql_set_cursor, key, block)
            return block_now

        return await self.once(q)


def _has_seq_scan(plan: Any, table: str) -> bool:
    if isinstance(plan, list):
        return any(_has_seq_scan(p, table) for p in plan)
    if isinstance(plan, dict):
        if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") == table:
            return True
        return any(_has_seq_scan(v, table) for v in plan.values() if isinstance(v, dict | list))
    return False


# --------------------------------------------------------------------------- on-chain verification


def encode_order_id(order_id: str, encoding: str) -> str:
    """The indexed topic of an order id (0x + 64 hex)."""
    if encoding == "bytes32-utf8":
        raw = order_id.encode("utf-8")
        if len(raw) > 32:
            raise ValueError(f"order id {order_id!r} is longer than 32 bytes")
        return "0x" + raw.ljust(32, b"\0").hex()
    if encoding == "uint256":
        n = int(order_id)
        if n < 0 or n >= 2**256:
            raise ValueError(f"order id {order_id!r} out of uint256 range")
        return "0x" + n.to_bytes(32, "big").hex()
    if encoding == "keccak":
        from backends.sources.evm import keccak

        return "0x" + keccak(order_id.encode("utf-8")).hex()
    raise ValueError(f"unknown id encoding {encoding!r}")


class ReleaseVerifier:
    """Finds the release event of orders on chain (batched `eth_getLogs`)."""

    def __init__(
        self,
        chain: Any,  # backends.sources.evm.EvmChain
        *,
        address: str,
        event: dict[str, Any] | str = "EscrowReleased(bytes32,uint256)",
        id_encoding: str = "bytes32-utf8",
        confirmations: int | None = None,
        chunk: int | None = None,
        start_block: int = 0,
        ids_per_call: int = 500,
        time_margin_s: float = 600.0,
        bloom_window: int = 16,
    ) -> None:
        from backends.sources.evm import event_topic, signature

        self.chain = chain
        self.address = address
        self.event_name = (event["name"] if isinstance(event, dict) else event.split("(")[0])
        self.signature = signature(event) if isinstance(event, dict) else event
        self.topic0 = event_topic(event)
        self.id_encoding = id_encoding
        self.confirmations = chain.spec.confirmations if confirmations is None else confirmations
        self.chunk = chunk or chain.spec.getlogs_chunk
        self.start_block = start_block
        self.ids_per_call = ids_per_call
        self.time_margin_s = time_margin_s
        self.bloom_window = bloom_window  # recent blocks whose logsBloom backs up an empty getLogs
        # finality: the chain's (depth, or the node's safe / finalized block); explicit
        # confirmations here mean a depth. Provisional releases are remembered: one that is
        # gone at a later check was reorged away (backends/sources/finality.py)
        from backends.sources.finality import ReorgMemory

        self.finality = str(getattr(chain, "finality", "depth")) if confirmations is None else "depth"
        self.reorgs = ReorgMemory()

    async def verify(self, orders: Sequence[Order]) -> dict[str, OrderVerdict]:
        from backends.sources.jsonrpc import RpcError, parse_int

        out: dict[str, OrderVerdict] = {}
        topics: dict[str, str] = {}
        for o in orders:
            try:
                topics[o.id] = encode_order_id(o.id, self.id_encoding)
            except ValueError as exc:
                out[o.id] = OrderVerdict(order_id=o.id, verdict=Verdict.UNKNOWN, reason=str(exc))
        todo = [o for o in orders if o.id in topics]
        if not todo:
            return out

        def unknown_all(reason: str) -> dict[str, OrderVerdict]:
            for o in todo:
                out[o.id] = OrderVerdict(order_id=o.id, verdict=Verdict.UNKNOWN, reason=reason)
            return out

        if self.chain.endpoints.disagreement:
            return unknown_all(self.chain.endpoints.disagreement)
        try:
            head = await self.chain.head()
        except (BackendError, RpcError) as exc:
            return unknown_all(f"RPC error: {describe_exception(exc)}")
        # Scan from the orders' block numbers; for orders without one, from the block at
        # their creation time (minus a margin for clock skew), never before start_block.
        blocks = [o.block_number for o in todo if o.block_number is not None]
        start = max(0, min(blocks)) if blocks else None
        no_block = [o for o in todo if o.block_number is None]
        if no_block:
            created = [o.created_at for o in no_block if o.created_at is not None]
            s2 = self.start_block
            if created and len(created) == len(no_block):
                try:
                    at = await self.chain.block_at_time(min(created).timestamp() - self.time_margin_s, head)
                except (BackendError, RpcError) as exc:
                    return unknown_all(f"RPC error: {describe_exception(exc)}")
                s2 = max(s2, at)
            start = s2 if start is None else min(start, s2)
        beyond = {o.id for o in todo if o.block_number is not None and o.block_number > head}
        for oid in beyond:
            o = next(x for x in todo if x.id == oid)
            out[oid] = OrderVerdict(
                order_id=oid, verdict=Verdict.UNKNOWN, checked_to_block=head,
                reason=f"order's block {o.block_number} is beyond the node's head {head} (node behind?)",
            )
        todo = [o for o in todo if o.id not in beyond]
        if not todo:
            return out
        start = min(start, head)
        by_topic = {topics[o.id]: o.id for o in todo}
        found: dict[str, dict[str, Any]] = {}
        try:
            tlist = sorted(by_topic)
            for i in range(0, len(tlist), self.ids_per_call):
                group = tlist[i : i + self.ids_per_call]
                logs = await self.chain.get_logs_chunked(
                    self.address, [self.topic0, group], start, head, chunk=self.chunk
                )
                for log in logs:
                    if log.get("removed"):
                        continue
                    topic = (log.get("topics") or [None, None])[1]
                    log_oid = by_topic.get(topic.lower()) if isinstance(topic, str) else None
                    if log_oid is None:
                        continue
                    cur = found.get(log_oid)
                    key = (parse_int(log["blockNumber"]), parse_int(log.get("logIndex", "0x0")))
                    if cur is None or key < (parse_int(cur["blockNumber"]), parse_int(cur.get("logIndex", "0x0"))):
                        found[log_oid] = log
        except (BackendError, RpcError) as exc:
            return unknown_all(f"RPC error: {describe_exception(exc)}")
        # released logs: cross-check their blocks with the other healthy endpoints
        bad: dict[int, str] = {}
        if found:
            blocks_seen = {parse_int(lg["blockNumber"]): lg.get("blockHash", "") for lg in found.values()}
            try:
                bad = await self.chain.cross_check_blocks({n: h for n, h in blocks_seen.items() if h})
            except Exception:
                bad = {}
        # An empty eth_getLogs for blocks the node has not indexed yet is not proof: the
        # logsBloom of the most recent blocks is checked for orders that were not found, and a
        # matching block's receipts (authoritative, not the log index) settle the question.
        missing = [o for o in todo if o.id not in found]
        unresolved: dict[str, int] = {}
        if missing and self.bloom_window > 0:
            try:
                by_topic_oid = {topics[o.id]: o.id for o in missing}
                from_receipts, unresolved = await self._bloom_check(list(by_topic_oid), head, start)
            except (BackendError, RpcError) as exc:
                return unknown_all(f"RPC error: {describe_exception(exc)}")
            for t, log in from_receipts.items():
                found[by_topic_oid[t]] = log
        final_at: int | None = None  # the highest final block (node tag), None: by depth
        if self.finality != "depth" and found and hasattr(self.chain, "final_head"):
            try:
                final_at = await self.chain.final_head(head)
            except (BackendError, RpcError):
                final_at = None
        for o in todo:
            log = found.get(o.id)
            if log is None:
                bn = unresolved.get(topics[o.id])
                if bn is not None:
                    out[o.id] = OrderVerdict(
                        order_id=o.id, verdict=Verdict.UNKNOWN, checked_to_block=head, block=bn,
                        reason=f"no {self.event_name} returned, but block {bn}'s logsBloom matches "
                               "and its receipts cannot be read",
                    )
                    continue
                out[o.id] = OrderVerdict(
                    order_id=o.id, verdict=Verdict.NOT_RELEASED, checked_to_block=head,
                    reason=f"no {self.event_name} in blocks {start}..{head}",
                )
                continue
            bn = parse_int(log["blockNumber"])
            if bn in bad:
                out[o.id] = OrderVerdict(order_id=o.id, verdict=Verdict.UNKNOWN, block=bn,
                                         tx_hash=log.get("transactionHash"), reason=bad[bn])
                continue
            conf = head - bn + 1
            amount = None
            data = log.get("data") or "0x"
            if len(data) >= 66:
                try:
                    amount = int(data[2:66], 16)
                except ValueError:
                    amount = None
            if final_at is not None:
                final = bn <= final_at
                why = (f"final (block {bn} <= {self.finality} block {final_at})" if final
                       else f"provisional: {conf} confirmations, final once the {self.finality} block reaches {bn} "
                            f"(now {final_at})")
            else:
                final = conf >= self.confirmations
                why = (f"final ({conf} confirmations)" if final
                       else f"provisional: {conf} of {self.confirmations} confirmations")
            out[o.id] = OrderVerdict(
                order_id=o.id, verdict=Verdict.RELEASED, tx_hash=log.get("transactionHash"), block=bn,
                confirmations=conf, final=final, checked_to_block=head, amount=amount, reason=why,
            )
        return self.reorgs.apply(out, {oid: lg.get("blockHash") for oid, lg in found.items()})


    async def _bloom_check(self, order_topics: list[str], head: int,
                           start: int) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
        """For order topics whose release *may* be in one of the last `bloom_window` blocks
        (address, event topic and order topic all in the block's logsBloom), read those
        blocks' receipts. Returns (release logs found in receipts by topic, topics whose
        matching block's receipts could not be read -> that block)."""
        from backends.sources.jsonrpc import RpcError, parse_int

        first = max(start, head - self.bloom_window + 1)
        nums = list(range(first, head + 1))
        if not nums:
            return {}, {}
        es = self.chain.endpoints
        t = self.chain.spec.timeout
        res = await es.request_batch([("eth_getBlockByNumber", [hex(n), False]) for n in nums], time_limit=t)
        matches: dict[int, list[str]] = {}
        base = [bytes.fromhex(self.address[2:]), bytes.fromhex(self.topic0[2:])]
        for n, b in zip(nums, res, strict=True):
            if not isinstance(b, dict) or not b.get("logsBloom"):
                continue
            bloom = parse_int(b["logsBloom"])
            if not all(_in_bloom(bloom, item) for item in base):
                continue
            hit = [tp for tp in order_topics if _in_bloom(bloom, bytes.fromhex(tp[2:]))]
            if hit:
                matches[n] = hit
        if not matches:
            return {}, {}
        blocks = sorted(matches)
        receipts = await es.request_batch([("eth_getBlockReceipts", [hex(n)]) for n in blocks], time_limit=t)
        found: dict[str, dict[str, Any]] = {}
        unresolved: dict[str, int] = {}
        addr = self.address.lower()
        for n, rc in zip(blocks, receipts, strict=True):
            if isinstance(rc, RpcError) or not isinstance(rc, list):
                for tp in matches[n]:
                    unresolved.setdefault(tp, n)
                continue
            for r in rc:
                for log in (r or {}).get("logs") or []:
                    tps = [x.lower() for x in log.get("topics") or []]
                    if (str(log.get("address", "")).lower() == addr and len(tps) > 1
                            and tps[0] == self.topic0.lower() and tps[1] in matches[n]):
                        found.setdefault(tps[1], log)
        for tp in found:
            unresolved.pop(tp, None)
        return found, unresolved


def _in_bloom(bloom: int, item: bytes) -> bool:
    """Ethereum's 2048-bit bloom: three 11-bit indexes from keccak(item)."""
    from backends.sources.evm import keccak

    h = keccak(item)
    for i in (0, 2, 4):
        bit = ((h[i] << 8) | h[i + 1]) & 2047
        if not (bloom >> bit) & 1:
            return False
    return True


# --------------------------------------------------------------------------- source


class OrdersSource:
    """Monitor source: stuck orders (+ verdicts of the oldest) and the listener cursor."""

    kind = "orders"

    def __init__(
        self,
        store: OrdersStore,
        *,
        verifier: ReleaseVerifier | None = None,
        chain: Any = None,
        index_check_every: float = 600.0,
        misconfigured: str | None = None,
    ) -> None:
        self.store = store
        self.misconfigured = misconfigured  # a config that cannot work: every poll fails with it
        self.spec = store.spec
        self.name = store.spec.source
        self.interval = store.spec.interval
        self.timeout = store.spec.timeout * 2 + 5
        self.verifier = verifier
        self.chain = chain if chain is not None else (verifier.chain if verifier else None)
        self.index_check_every = index_check_every
        self._index: tuple[bool, str, int | None] | None = None
        self._index_at = 0.0

    async def index_status(self) -> tuple[bool | None, str]:
        if self._index is None or time.monotonic() - self._index_at > self.index_check_every:
            self._index = await self.store.index_check()
            self._index_at = time.monotonic()
        usable, hint, rows = self._index
        if usable:
            return True, ""
        large = rows is not None and rows >= self.spec.large_table_rows
        return (False if large else None), hint

    async def reading(self) -> OrdersReading:
        count, oldest_age = await self.store.stuck_summary()
        oldest = await self.store.stuck() if count else []
        by_state = await self.store.by_state_24h()
        try:
            index_ok, hint = await self.index_status()
        except BackendError:
            index_ok, hint = None, ""
        if oldest and self.verifier is not None and self.spec.verify_in_poll:
            verdicts = await self.verifier.verify(oldest)
            oldest = [replace(o, verdict=verdicts.get(o.id)) for o in oldest]
        return OrdersReading(
            source=self.name,
            stuck_count=count,
            oldest_age_s=oldest_age,
            oldest=tuple(oldest),
            by_state_24h=by_state,
            stuck_after_s=self.spec.stuck_after,
            index_ok=index_ok,
            index_hint=hint,
        )

    async def cursor_reading(self) -> CursorReading:
        from backends.sources.jsonrpc import RpcError, parse_int

        block, updated = await self.store.cursor()
        cur = self.spec.cursor
        name = cur.key if cur else "listener"
        if self.chain is None:
            return CursorReading(source=self.name, name=name, block=block, updated_at=updated)
        # one round trip: the head, the finalized block and the cursor's block
        refs: list[int | str] = ["latest", "finalized"] + ([block] if block is not None else [])
        head_b, fin_b, *cursor_b = await self.chain.blocks(refs)
        if isinstance(head_b, RpcError):
            raise head_b
        head = parse_int(head_b["number"]) if head_b else None
        finalized: int | None
        if isinstance(fin_b, dict) and fin_b.get("number"):
            finalized = parse_int(fin_b["number"])
        elif head is not None:  # no "finalized" tag on this node: head - confirmations, as finalized_head()
            finalized = max(0, head - self.chain.spec.confirmations)
        else:
            finalized = await self.chain.finalized_head(None)
        gap_s = None
        if block is not None and head_b is not None and head is not None:
            cb = head_b if block >= head else cursor_b[0]  # a cursor at or past the head: no gap
            if isinstance(cb, dict):
                gap_s = float(parse_int(head_b["timestamp"]) - parse_int(cb["timestamp"]))
        return CursorReading(
            source=self.name, name=name, block=block, head=head, finalized=finalized,
            gap_blocks=(head - block) if (head is not None and block is not None) else None,
            gap_s=gap_s, updated_at=updated,
        )

    async def poll(self) -> list[Reading]:
        if self.misconfigured:
            raise BackendError(self.name, self.misconfigured)
        out: list[Reading] = [await self.reading()]
        if self.spec.cursor is not None:
            from backends.sources.jsonrpc import RpcError

            try:
                out.append(await self.cursor_reading())
            except (BackendError, RpcError) as exc:
                if isinstance(exc, BackendError) and exc.source == self.name:
                    raise
                # chain down: the cursor alone is still worth showing
                block, updated = await self.store.cursor()
                out.append(CursorReading(source=self.name, name=self.spec.cursor.key, block=block,
                                         updated_at=updated))
        return out


# --------------------------------------------------------------------------- actions


def _note_suffix(operator: str, reason: str | None, at: datetime | None = None) -> str:
    ts = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    clean = " ".join(str(reason).split())
    who = " ".join(str(operator).split())
    return f" [MANUAL FIX: {ts} by {who}: {clean}]"


def _row(o: Order | None) -> dict[str, Any] | None:
    if o is None:
        return None
    return {
        "id": o.id, "state": o.state,
        "created_at": o.created_at.isoformat() if o.created_at else None,
        "updated_at": o.updated_at.isoformat() if o.updated_at else None,
        "block_number": o.block_number, "tx_hash": o.tx_hash, "notes": o.notes,
    }


def _verdict_text(v: OrderVerdict | None) -> str:
    if v is None:
        return "not verified"
    if v.verdict is Verdict.RELEASED:
        return (f"released in block {v.block} (tx {v.tx_hash}), {v.confirmations} confirmations"
                + (", final" if v.final else ", NOT final yet"))
    if v.verdict is Verdict.NOT_RELEASED:
        return f"no release event (checked up to block {v.checked_to_block})"
    return f"unknown: {v.reason}"


def _reason(action: str, reason: Any, required: bool = True) -> str | None:
    if reason is None or not str(reason).strip():
        if required:
            raise ActionRefused(action, "a reason is required")
        return None
    text = " ".join(str(reason).split())
    if len(text) > 500:
        raise ActionRefused(action, "the reason is longer than 500 characters")
    return text


def _outcome(fixed: Sequence[str], skipped: Sequence[str], failed: Sequence[str],
             not_done: Sequence[str]) -> tuple[dict[str, int], str]:
    """Counts and status of a fix over many orders: ok / skipped (nothing was pending any more) /
    partial (some fixed, some failed or not reached) / failed."""
    counts = {"fixed": len(fixed), "skipped": len(skipped), "failed": len(failed), "not_done": len(not_done)}
    if failed or not_done:
        return counts, "partial" if fixed else "failed"
    return counts, "ok" if fixed else "skipped"


class _OrdersAction(Action):
    def __init__(self, store: OrdersStore, *, verifier: ReleaseVerifier | None = None,
                 operator: str | Callable[[], str] | None = None) -> None:
        self.store = store
        self.spec = store.spec
        self.verifier = verifier
        self._operator = operator

    def operator(self, override: Any = None) -> str:
        return resolve_operator(override, self._operator)


class OrdersVerifyAction(_OrdersAction):
    """`orders.verify`: on-chain verdicts for given ids or the oldest stuck orders (read-only)."""

    id = "orders.verify"
    title = "Verify stuck orders on chain"
    mutating = False
    danger = Danger.SAFE
    description = "Look for the release event of stuck orders on chain (batched eth_getLogs)."

    async def plan(self, ids: Sequence[str] | None = None, limit: int | None = None, **_: Any) -> ActionPlan:
        if ids is not None:
            ids = [self.spec.check_id(self.id, i) for i in ids]
        if limit is not None and (not isinstance(limit, int) or limit < 1 or limit > 100_000):
            raise ActionRefused(self.id, "limit must be an integer between 1 and 100000")
        if self.verifier is None:
            raise ActionRefused(self.id, "no chain configured for the orders")
        orders = list((await self.store.get_many(ids)).values()) if ids else await self.store.stuck(limit=limit)
        verdicts = await self.verifier.verify(orders)
        lines = [f"{o.id}: {_verdict_text(verdicts.get(o.id))}" for o in orders]
        counts: dict[str, int] = {}
        for v in verdicts.values():
            k = "released_final" if v.verdict is Verdict.RELEASED and v.final else v.verdict.value
            counts[k] = counts.get(k, 0) + 1
        return ActionPlan(
            action=self.id, title=self.title, target="orders", danger=Danger.SAFE,
            params={"ids": [o.id for o in orders], "counts": counts,
                    "verdicts": {k: _verdict_text(v) for k, v in verdicts.items()}},
            preview="\n".join(lines[:200]) or "no stuck orders",
            total=len(orders),
        )

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        return ActionResult(status="ok", summary=", ".join(f"{k} {v}" for k, v in plan.params["counts"].items())
                            or "nothing to verify", counts=plan.params["counts"])


FIX_MAX_IDS = 1000  # orders.fix with order_ids: at most this many orders at once
FIX_CONFIRM_MAX = 10  # more orders than this: the operator types the count


class OrdersFixAction(_OrdersAction):
    """`orders.fix`: set one pending order (`order_id`) or a selection (`order_ids`) to a
    target state, with a reason."""

    id = "orders.fix"
    title = "Fix one order"
    danger = Danger.CONFIRM
    reason_required = True
    description = ("Set one stuck order, or the selected ones, to a target state (conditional UPDATE "
                   "per order, reason appended to notes).")

    def _check_ids(self, order_ids: Any) -> list[str]:
        if isinstance(order_ids, str | bytes) or not isinstance(order_ids, Sequence | set | frozenset):
            raise ActionRefused(self.id, f"order_ids must be a list of order ids, not {type(order_ids).__name__}")
        raw = list(order_ids)
        if len(raw) > FIX_MAX_IDS * 10:  # not worth validating one by one
            raise ActionRefused(self.id, f"{len(raw)} order ids: at most {FIX_MAX_IDS} at once")
        ids = list(dict.fromkeys(self.spec.check_id(self.id, i) for i in raw))
        if not ids:
            raise ActionRefused(self.id, "order_ids is empty")
        if len(ids) > FIX_MAX_IDS:
            raise ActionRefused(self.id, f"{len(ids)} orders: at most {FIX_MAX_IDS} at once (use orders.bulk_fix)")
        return ids

    async def plan(self, order_id: Any = None, state: Any = None, reason: Any = None,
                   operator: Any = None, *, order_ids: Sequence[str] | None = None, **_: Any) -> ActionPlan:
        # validate everything before any query
        if order_id is not None and order_ids is not None:
            raise ActionRefused(self.id, "give order_id or order_ids, not both")
        if order_id is None and order_ids is None:
            raise ActionRefused(self.id, "no order given (order_id or order_ids)")
        if order_ids is not None:
            ids = self._check_ids(order_ids)
            st = self.spec.check_state(self.id, state)
            why = _reason(self.id, reason, required=False)  # else asked for before execution
            if len(ids) > 1:
                return await self._plan_many(ids, st, why, self.operator(operator))
            order_id = ids[0]
        oid = self.spec.check_id(self.id, order_id)
        st = self.spec.check_state(self.id, state)
        why = _reason(self.id, reason, required=False)  # else asked for before execution
        op = self.operator(operator)
        row = await self.store.get(oid)
        if row is None:
            raise ActionRefused(self.id, f"no order {oid}")
        pending = row.state in self.spec.pending_states
        suffix = _note_suffix(op, why or "<reason>")
        after = self._after_row(row, st, suffix)
        notes = []
        verdict = None
        if self.verifier is not None:
            verdict = (await self.verifier.verify([row])).get(oid)
            notes.append(f"on chain: {_verdict_text(verdict)}")
            if st == self.spec.settled_state and (verdict is None or not (verdict.verdict is Verdict.RELEASED and verdict.final)):
                notes.append(f"warning: setting {st} without a final release on chain")
        preview = "\n".join([
            f"UPDATE order {oid}: state {row.state} -> {st}",
            f"notes += {suffix!r}",
            "only if the state is still one of " + ", ".join(self.spec.pending_states) + " (else skipped)",
            *notes,
        ])
        return ActionPlan(
            action=self.id, title=self.title, target=f"order:{oid}",
            changes=(Change(f"order:{oid}", f"state {row.state} -> {st}", _row(row), _row(after)),),
            guard=Guard(pending, f"order {oid} is {' / '.join(self.spec.pending_states)}",
                        "" if pending else f"it is {row.state}"),
            danger=self.danger, reason=why, reason_required=True,
            params={"order_id": oid, "state": st, "operator": op,
                    "verdict": _verdict_text(verdict) if self.verifier else None},
            preview=preview, notes=tuple(notes), total=1,
        )

    def _after_row(self, row: Order, st: str, suffix: str) -> Order:
        return replace(row, state=st, notes=(row.notes or "") + suffix if self.spec.notes_column else row.notes,
                       updated_at=datetime.now(UTC) if self.spec.updated_column else row.updated_at)

    async def _plan_many(self, ids: list[str], st: str, why: str | None, op: str) -> ActionPlan:
        """The plan for several orders: one Change per pending order; the ones that are not
        pending (or do not exist) are left out and named; none pending -> refused."""
        import hashlib

        rows = await self.store.get_many(ids)
        pending = [rows[i] for i in ids if i in rows and rows[i].state in self.spec.pending_states]
        left_out = [f"{i} ({rows[i].state})" if i in rows else f"{i} (no such order)"
                    for i in ids if i not in rows or rows[i].state not in self.spec.pending_states]

        def listed(items: list[str], n: int = 20) -> str:
            return ", ".join(items[:n]) + (f" … and {len(items) - n} more" if len(items) > n else "")

        if not pending:
            raise ActionRefused(self.id, f"none of the {len(ids)} orders is "
                                f"{' / '.join(self.spec.pending_states)}: {listed(left_out)}")
        suffix = _note_suffix(op, why or "<reason>")
        notes: list[str] = []
        if left_out:
            notes.append(f"left out, not {' / '.join(self.spec.pending_states)}: {listed(left_out)}")
        verdicts: dict[str, OrderVerdict] = {}
        if self.verifier is not None:
            verdicts = await self.verifier.verify(pending)
            notes.append("on chain: " + ", ".join(f"{k} {v}" for k, v in _verdict_counts(verdicts).items()))
            if st == self.spec.settled_state:
                unproven = [o.id for o in pending if not ((v := verdicts.get(o.id)) is not None
                                                          and v.verdict is Verdict.RELEASED and v.final)]
                if unproven:
                    notes.append(f"warning: setting {st} without a final release on chain: {listed(unproven)}")
        n = len(pending)
        changes = tuple(
            Change(f"order:{o.id}", f"state {o.state} -> {st}", _row(o), _row(self._after_row(o, st, suffix)))
            for o in pending
        )
        lines = [f"UPDATE {n} order(s) -> {st}:"]
        lines += [f"  {o.id}: {o.state} -> {st}"
                  + (f"  ({_verdict_text(verdicts.get(o.id))})" if self.verifier is not None else "")
                  for o in pending[:50]]
        if n > 50:
            lines.append(f"  … and {n - 50} more")
        lines += [
            f"notes += {suffix!r}",
            "each order only if its state is still one of " + ", ".join(self.spec.pending_states)
            + " (else skipped)",
            *notes,
        ]
        pids = [o.id for o in pending]
        head = ",".join(pids[:3]) + (f" +{n - 3} more" if n > 3 else "")
        typed = n > FIX_CONFIRM_MAX
        return ActionPlan(
            action=self.id, title=f"Fix {n} orders" if n > 1 else self.title, target=f"orders:{head}",
            lock_key="orders.fix:" + hashlib.sha256(",".join(sorted(pids)).encode()).hexdigest()[:16],
            changes=changes,
            guard=Guard(True, f"{n} order(s) {' / '.join(self.spec.pending_states)}; "
                        "each update re-checks the state"),
            danger=Danger.TYPED if typed else Danger.CONFIRM, confirm_text=str(n) if typed else None,
            reason=why, reason_required=True,
            params={"order_ids": pids, "state": st, "operator": op,
                    "left_out": left_out,
                    "verdicts": ({k: _verdict_text(v) for k, v in verdicts.items()}
                                 if self.verifier is not None else None)},
            preview="\n".join(lines), notes=tuple(notes), total=n,
        )

    async def _execute_many(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        p = plan.params
        ids: list[str] = list(p["order_ids"])
        st = p["state"]
        suffix = _note_suffix(p["operator"], _reason(self.id, plan.reason))
        before = {c.target.partition(":")[2]: c.before for c in plan.changes}
        fixed: list[str] = []
        skipped: list[str] = []
        failed: list[str] = []
        not_done: list[str] = []
        rows: dict[str, Any] = {}
        stop_reason = ""
        total = len(ids)
        for n, oid in enumerate(ids, 1):
            try:
                row = await self.store.update_one(oid, st, suffix)
            except BackendError as exc:
                failed.append(oid)
                not_done = ids[n:]
                stop_reason = f"order {oid} failed: {exc.reason}"
                progress(Progress(n - 1, total, stop_reason))
                break
            if row is None:
                skipped.append(oid)
                progress(Progress(n, total, f"order {oid}: changed meanwhile, skipped"))
            else:
                fixed.append(oid)
                rows[oid] = _row(row)
                progress(Progress(n, total, f"order {oid}: {before.get(oid, {}).get('state')} -> {row.state}"))
        if skipped:  # what the skipped ones are now (best effort: the audit says why they were skipped)
            try:
                now = await self.store.get_many(skipped)
            except BackendError:
                now = {}
            for oid in skipped:
                rows[oid] = _row(now.get(oid))
        counts, status = _outcome(fixed, skipped, failed, not_done)
        summary = f"{len(fixed)} fixed, {len(skipped)} skipped (changed meanwhile), {len(failed)} failed"
        if not_done:
            summary += f", {len(not_done)} not done"
        if stop_reason:
            summary += f" — {stop_reason}"
        return ActionResult(
            status=status, summary=summary, before=before,
            after={"state": st, "fixed_count": len(fixed), "fixed": fixed, "skipped": skipped,
                   "failed": failed, "not_done": not_done, "rows": rows},
            counts=counts, details=(stop_reason,) if stop_reason else (),
        )

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        if "order_ids" in plan.params:
            return await self._execute_many(plan, progress)
        oid, st = plan.params["order_id"], plan.params["state"]
        suffix = _note_suffix(plan.params["operator"], _reason(self.id, plan.reason))
        before = plan.changes[0].before
        row = await self.store.update_one(oid, st, suffix)
        progress(Progress(1, 1, f"order {oid}"))
        if row is None:
            try:
                now = await self.store.get(oid)
            except BackendError:
                now = None
            return ActionResult(
                status="skipped",
                summary=f"order {oid} changed meanwhile (now {now.state if now else 'unknown'}); not overwritten",
                before=before, after=_row(now), counts={"fixed": 0, "skipped": 1, "failed": 0},
            )
        return ActionResult(status="ok", summary=f"order {oid}: {before['state']} -> {row.state}",
                            before=before, after=_row(row), counts={"fixed": 1, "skipped": 0, "failed": 0})


class _BulkFixBase(_OrdersAction):
    """What `orders.bulk_fix` and `orders.reconcile` share: validation, the plan of many
    orders, batched execution with an audit entry per batch. Each defines its own `plan`."""

    def __init__(self, *a: Any, after_batch: Callable[[int, dict[str, int]], Awaitable[None] | None] | None = None,
                 max_orders: int = 100_000, batch_audit: Any = None, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.after_batch = after_batch  # hook (tests, progress UIs): after_batch(batch_no, counts)
        self.max_orders = max_orders
        # An AuditLog: write-ahead per batch: an intent naming the batch's order ids before
        # its transaction (the run stops when it cannot be written), its outcome after; a
        # run killed half-way leaves every changed order named in an entry. The engine's
        # intent and outcome for the whole run frame them (`extra.run`).
        self.batch_audit = batch_audit

    async def _batch_intent(self, plan: ActionPlan, n: int, of: int, chunk: list[str]) -> int | None:
        """The batch's intent entry (its seq). Raises AuditUnavailable: the batch is not run."""
        if self.batch_audit is None:
            return None
        from backends.engine.audit import CURRENT_INTENT

        p = plan.params
        entry = await self.batch_audit.append_async(
            action=f"{self.id}.batch", target=plan.target, operator=p["operator"],
            params={"batch": n, "of": of, "state": p["state"], "ids": " ".join(chunk)}, reason=plan.reason,
            before={"state": list(self.spec.pending_states)}, after={"state": p["state"]},
            result="started", phase="intent",
            summary=f"batch {n}/{of}: {len(chunk)} order(s) -> {p['state']} started",
            extra={"run": CURRENT_INTENT.get()},
        )
        return int(entry["seq"])

    async def _audit_batch(self, plan: ActionPlan, n: int, of: int, fixed: list[str], skipped: list[str],
                           failed: list[str], error: str = "", intent: int | None = None) -> None:
        if self.batch_audit is None:
            return
        from backends.engine.audit import CURRENT_INTENT

        p = plan.params
        try:
            await self.batch_audit.append_async(
                action=f"{self.id}.batch", target=plan.target, operator=p["operator"],
                params={"batch": n, "of": of, "state": p["state"]}, reason=plan.reason,
                before={"state": list(self.spec.pending_states)},
                after={"fixed": " ".join(fixed), "skipped": " ".join(skipped), "failed": " ".join(failed)},
                result="failed" if failed else "ok",
                summary=f"batch {n}/{of}: {len(fixed)} fixed, {len(skipped)} skipped, {len(failed)} failed",
                error=error or None, phase="outcome" if intent is not None else None, intent=intent,
                extra={"run": CURRENT_INTENT.get()},
            )
        except Exception:  # its intent names the orders; `audit verify` lists it as outcome unknown
            pass

    async def _interrupted_notes(self, window: int = 2000) -> list[str]:
        """Earlier runs (in the last `window` entries) whose outcome was never written: a
        crash or kill. Their orders are no longer pending where the batch committed, so a
        rerun does not fix them twice; the note says what to check."""
        tail_async = getattr(self.batch_audit, "tail_async", None)
        if tail_async is None:
            return []
        try:
            entries = await tail_async(window, intents=True)
        except Exception:
            return []
        closed = {e.get("intent") for e in entries if isinstance(e.get("intent"), int)}
        open_ = [e for e in entries if e.get("phase") == "intent" and e.get("seq") not in closed
                 and e.get("action") in (self.id, f"{self.id}.batch")]
        notes = []
        for e in open_:
            ids = str((e.get("params") or {}).get("ids") or "").split() if e.get("action") != self.id else []
            what = (f"batch {(e.get('params') or {}).get('batch')}: orders " + " ".join(ids[:10])
                    + (f" … and {len(ids) - 10} more" if len(ids) > 10 else "")) if ids else "run"
            notes.append(f"interrupted earlier: {what} (intent #{e.get('seq')}, {str(e.get('ts', ''))[:19]}Z, "
                         f"{e.get('operator')}) started, outcome unknown: only orders still pending are changed")
        return notes

    def _validate(self, older_than: Any, state: Any, reason: Any, canary: Any, batch: Any,
                  only_released: Any) -> tuple[float, str, str | None, int, int, bool]:
        try:
            age = parse_duration(older_than if older_than is not None else self.spec.stuck_after)
        except ValueError as exc:
            raise ActionRefused(self.id, str(exc)) from None
        if age < 0:
            raise ActionRefused(self.id, "older_than must not be negative")
        st = self.spec.check_state(self.id, state)
        why = _reason(self.id, reason, required=False)  # else asked for before execution
        if not isinstance(canary, int) or isinstance(canary, bool) or canary < 0:
            raise ActionRefused(self.id, "canary must be a whole number >= 0")
        b = self.spec.bulk_batch if batch is None else batch
        if not isinstance(b, int) or isinstance(b, bool) or not 1 <= b <= 10_000:
            raise ActionRefused(self.id, "batch must be between 1 and 10000")
        only = (st == self.spec.settled_state) if only_released is None else bool(only_released)
        if only and self.verifier is None:
            raise ActionRefused(self.id, "only_released needs a chain to verify against (none configured)")
        return age, st, why, canary, b, only

    def _make_plan(self, cands: list[Order], st: str, why: str | None, op: str, age: float, only: bool,
                   canary: int, b: int, notes: list[str]) -> ActionPlan:
        if not cands:
            raise ActionRefused(self.id, f"no pending orders older than {fmt_age(age)}"
                                + (" with a final release on chain: nothing to reconcile (verify the stuck "
                                   "orders, or fix one with a reason)" if only else ""), nothing=True)
        ids = [o.id for o in cands]
        shown = ids[:50]
        preview = "\n".join([
            f"{len(ids)} order(s) {'/'.join(self.spec.pending_states)} older than {fmt_age(age)} -> {st}",
            f"in batches of {b}, each its own transaction" + (f"; canary: first {canary}, re-verified" if canary else ""),
            "only orders still pending are changed (the rest are skipped)",
            f"notes += ' [MANUAL FIX: <ts> by {op}: {why or '<reason>'}]'",
            *notes,
            "ids: " + ", ".join(shown) + (f" … and {len(ids) - len(shown)} more" if len(ids) > len(shown) else ""),
        ])
        return ActionPlan(
            action=self.id, title=self.title, target=f"orders:{st}",
            changes=(Change("orders", f"{len(ids)} orders -> {st}",
                            {"state": list(self.spec.pending_states), "ids": ids}, {"state": st}),),
            guard=Guard(True, f"{len(ids)} order(s) selected; each update re-checks the state"),
            danger=Danger.TYPED, confirm_text=str(len(ids)), reason=why, reason_required=True,
            params={"ids": ids, "state": st, "older_than_s": age, "only_released": only,
                    "canary": canary, "batch": b, "operator": op},
            preview=preview, notes=tuple(notes), total=len(ids),
        )

    async def _reverify(self, ids: list[str], st: str) -> str | None:
        """After the canary: the rows show the target state and the chain agrees. Returns a mismatch."""
        rows = await self.store.get_many(ids)
        for oid in ids:
            r = rows.get(oid)
            if r is None or r.state != st:
                return f"order {oid}: database shows {r.state if r else 'no row'} after the fix"
        if self.verifier is None:
            return None
        verdicts = await self.verifier.verify([rows[i] for i in ids])
        for oid in ids:
            v = verdicts.get(oid)
            if st == self.spec.settled_state:
                if v is None or not (v.verdict is Verdict.RELEASED and v.final):
                    return f"order {oid}: set {st} but on chain: {_verdict_text(v)}"
            elif v is not None and v.verdict is Verdict.RELEASED:
                return f"order {oid}: set {st} but it was released on chain ({_verdict_text(v)})"
        return None

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        import inspect

        p = plan.params
        ids: list[str] = list(p["ids"])
        st, b, canary = p["state"], p["batch"], p["canary"]
        suffix = _note_suffix(p["operator"], _reason(self.id, plan.reason))
        fixed: list[str] = []
        skipped: list[str] = []
        failed: list[str] = []
        not_done: list[str] = []
        stop_reason = ""
        batches: list[list[str]] = []
        rest = ids
        if canary:
            batches.append(ids[:canary])
            rest = ids[canary:]
        batches += [rest[i : i + b] for i in range(0, len(rest), b)]
        total = len(ids)
        done = 0
        for n, chunk in enumerate(batches, 1):
            try:
                intent = await self._batch_intent(plan, n, len(batches), chunk)
            except AuditUnavailable as exc:  # write-ahead: no batch without its entry
                not_done += [i for c in batches[n - 1:] for i in c]
                stop_reason = f"stopped before batch {n}: the audit trail cannot be written ({exc.reason})"
                progress(Progress(done, total, stop_reason))
                break
            try:
                changed = await self.store.update_batch(chunk, st, suffix)
            except BackendError as exc:
                failed += chunk
                not_done += [i for c in batches[n:] for i in c]
                stop_reason = f"batch {n} failed (rolled back): {exc.reason}"
                await self._audit_batch(plan, n, len(batches), [], [], chunk, exc.reason, intent)
                progress(Progress(done, total, stop_reason))
                break
            cs = set(changed)
            fixed += [i for i in chunk if i in cs]
            skipped += [i for i in chunk if i not in cs]
            await self._audit_batch(plan, n, len(batches), [i for i in chunk if i in cs],
                                    [i for i in chunk if i not in cs], [], intent=intent)
            done += len(chunk)
            progress(Progress(done, total, f"batch {n}/{len(batches)}: {len(cs)} fixed, {len(chunk) - len(cs)} skipped"))
            if self.after_batch is not None:
                r = self.after_batch(n, {"fixed": len(fixed), "skipped": len(skipped)})
                if inspect.isawaitable(r):
                    await r
            if canary and n == 1:
                try:
                    mismatch = await self._reverify([i for i in chunk if i in cs], st)
                except BackendError as exc:
                    mismatch = f"canary could not be re-verified: {exc.reason}"
                if mismatch:
                    not_done += [i for c in batches[n:] for i in c]
                    stop_reason = f"canary stopped: {mismatch}"
                    progress(Progress(done, total, stop_reason))
                    break
        counts, status = _outcome(fixed, skipped, failed, not_done)
        summary = f"{len(fixed)} fixed, {len(skipped)} skipped, {len(failed)} failed"
        if not_done:
            summary += f", {len(not_done)} not done"
        if stop_reason:
            summary += f" — {stop_reason}"
        # The audit entry names every order: the plan's params hold all ids; the fixed ones are
        # listed too unless there are many (then: all ids except skipped / failed / not_done).
        after: dict[str, Any] = {"state": st, "fixed_count": len(fixed), "skipped": skipped,
                                 "failed": failed, "not_done": not_done}
        if len(fixed) <= AUDIT_LIST_MAX:
            after["fixed"] = fixed
        else:
            after["fixed"] = "all params.ids except skipped, failed and not_done"
        return ActionResult(
            status=status, summary=summary,
            before={"state": list(self.spec.pending_states), "count": len(ids)},
            after=after,
            counts=counts,
            details=(stop_reason,) if stop_reason else (),
        )


class OrdersBulkFixAction(_BulkFixBase):
    """`orders.bulk_fix`: pending orders older than X to a target state, in batches."""

    id = "orders.bulk_fix"
    title = "Bulk fix stuck orders"
    danger = Danger.TYPED
    reason_required = True
    description = ("Set every pending order older than X to a target state (optionally only those whose "
                   "release is final on chain), in batches, with an optional canary.")

    async def plan(self, older_than: Any = None, state: Any = None, reason: Any = None, *,
                   hours: Any = None, only_released: Any = None, canary: Any = 0, batch: Any = None,
                   operator: Any = None, **_: Any) -> ActionPlan:
        if hours is not None and older_than is None:
            try:
                older_than = float(hours) * 3600
            except (TypeError, ValueError):
                raise ActionRefused(self.id, f"hours {hours!r} is not a number") from None
        age, st, why, canary, b, only = self._validate(older_than, state, reason, canary, batch, only_released)
        op = self.operator(operator)
        cands = await self.store.candidates(age, self.max_orders)
        notes: list[str] = []
        verdicts: dict[str, OrderVerdict] = {}
        if only:
            assert self.verifier is not None  # _validate refused only_released without a chain
            verdicts = await self.verifier.verify(cands)
            keep = [o for o in cands if (v := verdicts.get(o.id)) and v.verdict is Verdict.RELEASED and v.final]
            counts = _verdict_counts(verdicts)
            notes.append("on chain: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            notes.append(f"{len(cands) - len(keep)} of {len(cands)} left out: release not final on chain")
            notes += _finality_note(verdicts)
            cands = keep
        notes += await self._interrupted_notes()
        return self._make_plan(cands, st, why, op, age, only, canary, b, notes)


def _finality_note(verdicts: dict[str, OrderVerdict]) -> list[str]:
    """How many releases wait for finality (released on chain, provisional)."""
    waiting = [v for v in verdicts.values() if v.verdict is Verdict.RELEASED and not v.final]
    if not waiting:
        return []
    return [f"{len(waiting)} wait for finality (released, provisional): " + ", ".join(v.order_id for v in waiting[:10])
            + (" …" if len(waiting) > 10 else "") + "; run again once they are final"]


def _verdict_counts(verdicts: dict[str, OrderVerdict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in verdicts.values():
        if v.verdict is Verdict.RELEASED:
            k = "released (final)" if v.final else "released (not final)"
        else:
            k = v.verdict.value.replace("_", " ")
        counts[k] = counts.get(k, 0) + 1
    return counts


class OrdersReconcileAction(_BulkFixBase):
    """`orders.reconcile`: settle exactly the stuck orders whose release event is final on chain."""

    id = "orders.reconcile"
    title = "Reconcile stuck orders with the chain"
    danger = Danger.CONFIRM
    reason_required = False
    description = "Settle exactly the pending orders whose release event is final on chain (the fallback event checker)."

    async def plan(self, older_than: Any = None, reason: Any = None, *, batch: Any = None,
                   operator: Any = None, **_: Any) -> ActionPlan:
        if self.verifier is None:
            raise ActionRefused(self.id, "no chain configured for the orders")
        given = _reason(self.id, reason, required=False) or "reconcile: release final on chain"
        age, st, why, _c, b, _o = self._validate(
            older_than, self.spec.settled_state, given, 0, batch, True)
        op = self.operator(operator)
        cands = await self.store.candidates(age, self.max_orders)
        verdicts = await self.verifier.verify(cands)
        keep = [o for o in cands if (v := verdicts.get(o.id)) and v.verdict is Verdict.RELEASED and v.final]
        notes = ["on chain: " + ", ".join(f"{k} {v}" for k, v in _verdict_counts(verdicts).items())]
        notes += _finality_note(verdicts)
        plan = self._make_plan(keep, st, why, op, age, True, 0, b, notes)
        return replace(plan, action=self.id, title=self.title, danger=Danger.CONFIRM, confirm_text=None,
                       reason_required=False, target="orders:reconcile")


class OrdersResyncAction(_OrdersAction):
    """`orders.resync`: rewind the listener cursor to block N (N <= head)."""

    id = "orders.resync"
    title = "Resync the listener from a block"
    danger = Danger.CONFIRM
    reason_required = True
    description = "Rewind the listener's cursor to block N so it re-processes events from there."

    def __init__(self, store: OrdersStore, *, chain: Any = None, **kw: Any) -> None:
        super().__init__(store, **kw)
        self.chain = chain

    async def plan(self, block: Any = None, reason: Any = None, **_: Any) -> ActionPlan:
        if isinstance(block, str) and block.strip().isdigit():
            block = int(block.strip())
        if not isinstance(block, int) or isinstance(block, bool) or block < 0:
            raise ActionRefused(self.id, f"block must be a whole number >= 0, not {block!r}"[:120])
        why = _reason(self.id, reason, required=False)  # else asked for before execution
        if self.spec.cursor is None:
            raise ActionRefused(self.id, "no listener cursor configured ([orders.cursor])")
        current, updated = await self.store.cursor()
        if current is None and updated is None:
            raise ActionRefused(self.id, f"no cursor row {self.spec.cursor.key!r}")
        head = await self.chain.head() if self.chain is not None else None
        ok = head is None or block <= head
        return ActionPlan(
            action=self.id, title=self.title, target=f"cursor:{self.spec.cursor.key}",
            changes=(Change(f"cursor:{self.spec.cursor.key}", "last processed block", current, block),),
            guard=Guard(ok, f"block {block} <= chain head" + (f" {head}" if head is not None else " (no chain)"),
                        "" if ok else f"head is {head}"),
            danger=self.danger, reason=why, reason_required=True,
            params={"block": block, "head": head, "previous": current},
            preview=f"listener cursor {self.spec.cursor.key}: {current} -> {block} (head {head})",
        )

    async def check_guard(self, plan: ActionPlan) -> Guard:
        if self.chain is None:
            return plan.guard
        head = await self.chain.head()
        n = plan.params["block"]
        return Guard(n <= head, f"block {n} <= chain head {head}", "" if n <= head else f"head is {head}")

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        n = plan.params["block"]
        got = await self.store.set_cursor(n)
        if got is None:
            key = self.spec.cursor.key if self.spec.cursor is not None else "?"
            return ActionResult(status="failed", summary=f"cursor row {key!r} is gone")
        return ActionResult(status="ok", summary=f"listener cursor {plan.params['previous']} -> {got}",
                            before=plan.params["previous"], after=got)


def orders_actions(store: OrdersStore, *, verifier: ReleaseVerifier | None = None, chain: Any = None,
                   operator: str | Callable[[], str] | None = None, audit: Any = None) -> list[Action]:
    """All orders actions. `audit` (the engine's AuditLog) adds one entry per bulk batch."""
    chain = chain if chain is not None else (verifier.chain if verifier else None)
    return [
        OrdersVerifyAction(store, verifier=verifier, operator=operator),
        OrdersFixAction(store, verifier=verifier, operator=operator),
        OrdersBulkFixAction(store, batch_audit=audit, verifier=verifier, operator=operator),
        OrdersReconcileAction(store, batch_audit=audit, verifier=verifier, operator=operator),
        OrdersResyncAction(store, chain=chain, verifier=verifier, operator=operator),
    ]


# --------------------------------------------------------------------------- config


def _g(obj: Any, key: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def orders_spec_from_config(oc: Any) -> OrdersSpec:
    """An OrdersSpec from `[orders]` of a loaded config (attribute or dict access)."""
    pat = _g(oc, "id_pattern", r"^[A-Za-z0-9_-]{1,128}$")
    cur = _g(oc, "cursor")
    targets = tuple(_g(oc, "target_states", ("SETTLED", "FAILED", "CANCELLED")))
    settled = _g(oc, "settled_state", None) or ("SETTLED" if "SETTLED" in targets else targets[0])
    def opt(v: Any) -> str | None:
        return str(v) if v else None

    return OrdersSpec(
        table=str(_g(oc, "table", "orders")),
        id_column=str(_g(oc, "id_column", "id")),
        id_pattern=pat.pattern if hasattr(pat, "pattern") else str(pat),
        state_column=str(_g(oc, "state_column", "state")),
        created_column=str(_g(oc, "created_column", "created_at")),
        updated_column=opt(_g(oc, "updated_column", "updated_at")),
        notes_column=opt(_g(oc, "notes_column")),
        block_column=opt(_g(oc, "block_column")),
        tx_column=opt(_g(oc, "tx_column")),
        pending_states=tuple(_g(oc, "pending_states", ("PENDING",))),
        target_states=targets,
        settled_state=settled,
        stuck_after=parse_duration(_g(oc, "stuck_after", 600.0)),
        show=int(_g(oc, "show", 50)),
        bulk_batch=int(_g(oc, "bulk_batch", 500)),
        id_encoding=str(_g(oc, "id_encoding", "bytes32-utf8")),
        event=str(_g(oc, "event", "EscrowReleased")),
        start_block=int(_g(oc, "start_block", 0) or 0),
        interval=parse_duration(_g(oc, "interval", None) or 10.0),
        cursor=CursorSpec(
            table=str(_g(cur, "table")),
            key_column=str(_g(cur, "key_column", "name")),
            key=str(_g(cur, "key", "escrow")),
            block_column=str(_g(cur, "block_column", "last_block")),
            updated_column=opt(_g(cur, "updated_column")),
        ) if cur is not None else None,
    )


@dataclass
class OrdersBundle:
    """What `from_config` builds: the store, the verifier (when a chain is set), the source, actions."""

    store: OrdersStore
    source: OrdersSource
    verifier: ReleaseVerifier | None = None
    actions: list[Action] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: Any, *, chains: dict[str, Any] | None = None,
                    operator: str | None = None, audit: Any = None) -> OrdersBundle:
        oc = config.orders
        if oc is None:
            raise ValueError("no [orders] section")
        spec = orders_spec_from_config(oc)
        pg = config.postgres[oc.postgres]
        spec = replace(spec, timeout=max(spec.timeout, float(getattr(pg, "timeout", 3.0))))
        store = OrdersStore(spec, pg.dsn, pool_max=int(getattr(pg, "pool_max", 2)))
        verifier = None
        misconfigured: str | None = None
        chain_name = _g(oc, "chain")
        if chain_name and chains and chain_name in chains and hasattr(chains[chain_name], "contracts"):
            ch = chains[chain_name]
            cname = _g(oc, "contract")
            contract = ch.contracts.get(cname) if cname else (ch.spec.contracts[0] if ch.spec.contracts else None)
            if contract is not None:
                from backends.sources.evm import find_event

                try:
                    event: dict[str, Any] | str = find_event(contract.abi, spec.event)
                except KeyError:
                    events = sorted({str(i.get("name")) for i in contract.abi or () if i.get("type") == "event"})
                    if events:  # an ABI that lacks it: no release could ever be found, never "all fine"
                        misconfigured = (f"[orders] event {spec.event!r} is not in the ABI of contract "
                                         f"{cname or contract.address!r} (its events: {', '.join(events)}): "
                                         "releases cannot be verified; fix the config (warroom check says where)")
                    event = f"{spec.event}(bytes32,uint256)"  # no ABI given: the escrow's usual shape
                verifier = ReleaseVerifier(ch, address=contract.address, event=event,
                                           id_encoding=spec.id_encoding, start_block=spec.start_block)
        source = OrdersSource(store, verifier=verifier,
                              chain=chains.get(chain_name) if (chains and chain_name) else None,
                              misconfigured=misconfigured)
        actions = orders_actions(store, verifier=verifier, chain=source.chain, operator=operator, audit=audit)
        return cls(store=store, source=source, verifier=verifier, actions=actions)


# --------------------------------------------------------------------------- rules


@rule(OrdersReading)
def orders_rules(r: OrdersReading, ctx: Any) -> list[Finding]:
    out: list[Finding] = []
    if r.stuck_count:
        ids = ", ".join(o.id for o in r.oldest[:5])
        out.append(Finding(
            key=f"orders-stuck:{r.source}", severity=Severity.P1, source=r.source,
            summary=f"{r.stuck_count} order(s) stuck for more than {fmt_age(r.stuck_after_s)} "
                    f"(oldest {fmt_age(r.oldest_age_s)})",
            evidence=tuple(x for x in (f"oldest: {ids}" if ids else "",
                                       "by state (24 h): " + ", ".join(f"{k} {v}" for k, v in sorted(r.by_state_24h.items())))
                           if x),
            playbook="orders-stuck", target="orders",
        ))
        released = [o for o in r.oldest if o.verdict is not None and o.verdict.verdict is Verdict.RELEASED]
        if released:
            out.append(Finding(
                key=f"listener-failure:{r.source}", severity=Severity.P1, source=r.source,
                summary=f"{len(released)} stuck order(s) are released on chain: the listener is not processing events",
                evidence=tuple(f"{o.id}: {_verdict_text(o.verdict)}" for o in released[:5]),
                playbook="listener-failure", target="orders",
            ))
    if r.index_ok is False:
        out.append(Finding(
            key=f"orders-index:{r.source}", severity=Severity.P2, source=r.source,
            summary="the stuck-orders query cannot use an index on a large table",
            evidence=(f"run: {r.index_hint}",), playbook="orders-stuck", target="orders",
        ))
    return out


@rule(CursorReading)
def cursor_rules(r: CursorReading, ctx: Any) -> list[Finding]:
    extra = getattr(ctx, "extra", None) or {}
    max_gap = float(extra.get("cursor_max_gap_s", 300.0))
    if r.gap_s is not None and r.gap_s > max_gap:
        return [Finding(
            key=f"listener-behind:{r.source}:{r.name}", severity=Severity.P1, source=r.source,
            summary=f"listener cursor {r.name} is {r.gap_blocks} blocks ({fmt_age(r.gap_s)}) behind head",
            evidence=(f"cursor {r.block}, head {r.head}, finalized {r.finalized}",),
            playbook="listener-failure", target=f"cursor:{r.name}",
        )]
    return []


__all__ = [
    "CursorSpec", "OrdersBulkFixAction", "OrdersBundle", "OrdersFixAction", "OrdersReconcileAction",
    "OrdersResyncAction", "OrdersSource", "OrdersSpec", "OrdersStore", "OrdersVerifyAction",
    "ReleaseVerifier", "encode_order_id", "orders_actions", "orders_spec_from_config", "qident",
]
