"""Signers: the keys that release escrow and pay gas (`[[chain.NAME.signers]]`).

Read on every poll of their chain (`EvmChain.poll`, one JSON-RPC batch): balance, the
`latest` and `pending` nonces, and where the node has it (`txpool_contentFrom`, else
`txpool_content`) the signer's own pooled transactions. warroom remembers when it first
saw each state, so it knows:

- the pending count and the age (seconds and blocks) of the oldest pending transaction,
- when the latest nonce last increased (last confirmed),
- the spend rate over the recent window (balance drops; a refill starts a new window) and
  the runway: time until the balance reaches `min_balance` at that rate.

Findings (`signer_rules`): `signer-stuck` (the transaction at the next nonce unconfirmed
after `stuck_after_blocks`), `signer-nonce-gap` (pending > latest for longer than
`gap_after_blocks`, or transactions queued behind a missing nonce), `signer-runway`
(runway below `runway_min`, or the balance below `min_balance`).

Actions (`signer.speed_up`, `signer.cancel`), with the signer's keystore (password asked
at execution) or key from the environment, through the ActionEngine (read-only refuses
them there): speed up resends the transaction at the next nonce with its fees bumped by
`bump_percent` (default +20 %, as the Chainlink node does; never less than the node's
`min_bump_percent`, geth's 10 % price bump) and at least today's market fee; cancel
sends a 0-value self-send at that nonce (the first missing nonce when transactions are
queued behind a gap). The preview is the exact transaction and its maximum fee.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
from backends.errors import ActionRefused, BackendError, describe_exception
from backends.model import ChainReading, Finding, Severity, SignerReading, Status
from backends.units import format_age

if TYPE_CHECKING:
    from backends.sources.evm import EvmChain, PasswordProvider

METHOD_NOT_FOUND = -32601
GWEI = 10**9


@dataclass(frozen=True, slots=True, kw_only=True)
class SignerSpec:
    """One `[[chain.NAME.signers]]` entry, as plain values."""

    chain: str
    label: str
    address: str
    min_balance: int | None = None  # wei
    keystore: str | None = None  # encrypted keystore (password asked at execution)
    key_env: str | None = None  # or the name of an environment variable holding the key
    stuck_after_blocks: int = 3  # Chainlink's BumpThreshold
    gap_after_blocks: int = 10
    runway_min_s: float = 24 * 3600.0
    bump_percent: float = 20.0  # Chainlink's BumpPercent
    min_bump_percent: float = 10.0  # the node's minimum replacement bump (geth txpool.pricebump)
    spend_window_s: float = 3600.0

    @property
    def can_sign(self) -> bool:
        return bool(self.keystore or self.key_env)


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def signer_specs_from_config(config: Any, name: str) -> tuple[SignerSpec, ...]:
    """The signers of `[chain.NAME]` (a loaded Config or plain dicts), addresses checksummed."""
    from backends.sources.evm import checksum_address

    chains = _get(config, "chain", None) or {}
    c = chains.get(name) if isinstance(chains, dict) else None
    out = []
    for i, s in enumerate(_get(c, "signers", ()) or ()):
        label = str(_get(s, "label"))
        minimum = _get(s, "min_balance")
        if minimum is not None:
            minimum = int(getattr(minimum, "value", minimum))
        keystore = _get(s, "keystore")
        out.append(SignerSpec(
            chain=name, label=label,
            address=checksum_address(str(_get(s, "address")), f"chain.{name}.signers[{i}].address ({label})"),
            min_balance=minimum, keystore=str(keystore) if keystore else None, key_env=_get(s, "key_env"),
            stuck_after_blocks=int(_get(s, "stuck_after_blocks", 3)),
            gap_after_blocks=int(_get(s, "gap_after_blocks", 10)),
            runway_min_s=float(_get(s, "runway_min", 24 * 3600.0)),
            bump_percent=float(_get(s, "bump_percent", 20.0)),
            min_bump_percent=float(_get(s, "min_bump_percent", 10.0)),
            spend_window_s=float(_get(s, "spend_window", 3600.0)),
        ))
    return tuple(out)


# --------------------------------------------------------------------------- reading


def _int(v: Any) -> int | None:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str):
        try:
            return int(v, 16) if v.startswith(("0x", "0X")) else int(v)
        except ValueError:
            return None
    return None


def format_gwei(wei: int | None) -> str:
    if wei is None:
        return "?"
    g = wei / GWEI
    return f"{g:.4f}".rstrip("0").rstrip(".") + " gwei" if g >= 0.0001 else f"{wei} wei"


def fee_text(tx: dict[str, Any]) -> str:
    """A pooled or planned transaction's fees, as shown."""
    mf, tip, gp = _int(tx.get("maxFeePerGas")), _int(tx.get("maxPriorityFeePerGas")), _int(tx.get("gasPrice"))
    if mf is not None:
        return f"maxFee {format_gwei(mf)}, tip {format_gwei(tip)}"
    return f"gasPrice {format_gwei(gp)}"


@dataclass
class _State:
    """What warroom remembers of one signer between polls."""

    last_latest: int | None = None
    confirmed_at: float | None = None  # monotonic: when the latest nonce last increased
    pending_since: tuple[int, float, int] | None = None  # (nonce, monotonic, head) of the tx at the next nonce
    gap_since: tuple[float, int] | None = None  # (monotonic, head): pending > latest since
    history: collections.deque[tuple[float, int]] = field(default_factory=lambda: collections.deque(maxlen=2048))
    pool: dict[int, dict[str, Any]] = field(default_factory=dict)  # nonce -> pooled tx (pending + queued)


class SignerWatch:
    """Reads the signers of one chain and keeps their history (one per EvmChain)."""

    def __init__(self, chain: str, source: str, specs: Sequence[SignerSpec], *,
                 clock: Any = time.monotonic) -> None:
        self.chain = chain
        self.source = source
        self.specs = tuple(specs)
        self.by_label = {s.label: s for s in self.specs}
        self.clock = clock
        self._state: dict[str, _State] = {s.label: _State() for s in self.specs}
        self._pool_methods = ["txpool_contentFrom", "txpool_content"]  # those the node does not have are dropped
        self.last: dict[str, SignerReading] = {}

    def pooled(self, label: str, nonce: int) -> dict[str, Any] | None:
        """The signer's transaction at `nonce` in the node's pool, as last read."""
        return self._state[label].pool.get(nonce)

    def _pool_calls(self) -> list[tuple[str, list[Any]]]:
        if not self._pool_methods:
            return []
        m = self._pool_methods[0]
        if m == "txpool_contentFrom":
            return [(m, [s.address]) for s in self.specs]
        return [(m, [])]

    async def read(self, ch: EvmChain, head: int | None) -> tuple[SignerReading, ...]:
        from backends.sources.jsonrpc import RpcError

        calls: list[tuple[str, Sequence[Any]]] = []
        for s in self.specs:
            calls += [("eth_getBalance", [s.address, "latest"]), ("eth_getTransactionCount", [s.address, "latest"]),
                      ("eth_getTransactionCount", [s.address, "pending"])]
        pool_calls = self._pool_calls()
        calls += pool_calls
        try:
            res: list[Any] = await ch.endpoints.request_batch(calls, time_limit=ch.spec.timeout)
        except BackendError as exc:
            return tuple(self._unknown(s, exc.reason) for s in self.specs)
        pools: dict[str, dict[int, dict[str, Any]]] = {}
        pool_res = res[3 * len(self.specs):]
        while pool_calls and any(isinstance(r, RpcError) and r.code == METHOD_NOT_FOUND for r in pool_res):
            self._pool_methods.pop(0)  # the node has not this form: the other one (or none)
            pool_calls = self._pool_calls()
            try:
                pool_res = await ch.endpoints.request_batch(pool_calls, time_limit=ch.spec.timeout) \
                    if pool_calls else []
            except BackendError:
                pool_calls, pool_res = [], []
        if pool_calls and not any(isinstance(r, Exception) for r in pool_res):
            pools = self._parse_pools(pool_calls[0][0], pool_res)
        out = []
        for i, s in enumerate(self.specs):
            bal, lat, pen = res[3 * i: 3 * i + 3]
            problem = "; ".join(describe_exception(r) if not isinstance(r, RpcError) else r.message
                                for r in (bal, lat, pen) if isinstance(r, Exception))
            if problem:
                out.append(self._unknown(s, problem))
                continue
            out.append(self._reading(s, _int(bal), _int(lat), _int(pen), head,
                                     pools.get(s.address.lower()) if pools else None, pool_known=bool(pools)))
        self.last = {r.label: r for r in out}
        return tuple(out)

    def _parse_pools(self, method: str, results: list[Any]) -> dict[str, dict[int, dict[str, Any]]]:
        """address (lowercase) -> nonce -> tx (with "queued": True for the queued part)."""
        out: dict[str, dict[int, dict[str, Any]]] = {sp.address.lower(): {} for sp in self.specs}
        # txpool_contentFrom: one answer per signer, {pending|queued: {nonce: tx}};
        # txpool_content: one answer, {pending|queued: {address: {nonce: tx}}}
        if method == "txpool_contentFrom":
            per = [(sp.address.lower(), ans) for sp, ans in zip(self.specs, results, strict=False)]
        else:
            per = []
            ans0 = results[0] if results and isinstance(results[0], dict) else {}
            for part in ("pending", "queued"):
                section = ans0.get(part) or {}
                for a, txs in (section.items() if isinstance(section, dict) else ()):
                    if str(a).lower() in out:
                        per.append((str(a).lower(), {part: txs}))
        for addr, ans in per:
            if not isinstance(ans, dict):
                continue
            for part in ("pending", "queued"):
                txs = ans.get(part) or {}
                if not isinstance(txs, dict):
                    continue
                for n, tx in txs.items():
                    nonce = _int(n)
                    if nonce is not None and isinstance(tx, dict):
                        out[addr][nonce] = dict(tx, queued=(part == "queued"))
        return out

    def _unknown(self, s: SignerSpec, problem: str) -> SignerReading:
        prev = self.last.get(s.label)
        return SignerReading(source=self.source, chain=s.chain, label=s.label, address=s.address,
                             min_balance=s.min_balance, runway_min_s=s.runway_min_s, can_sign=s.can_sign,
                             stuck_after_blocks=s.stuck_after_blocks, gap_after_blocks=s.gap_after_blocks,
                             display=prev.display if prev else "?", status=Status.UNKNOWN, problem=problem[:200])

    def _reading(self, s: SignerSpec, bal: int | None, latest: int | None, pending: int | None, head: int | None,
                 pool: dict[int, dict[str, Any]] | None, *, pool_known: bool) -> SignerReading:
        from backends.sources.evm import format_amount

        st = self._state[s.label]
        now = self.clock()
        # last confirmed: when the latest nonce increased
        if latest is not None:
            if st.last_latest is not None and latest > st.last_latest:
                st.confirmed_at = now
            st.last_latest = latest
        if pool is not None:
            st.pool = pool
        queued = sorted(n for n, tx in st.pool.items() if tx.get("queued")) if pool is not None else []
        pooled_pending = [n for n, tx in st.pool.items() if not tx.get("queued") and latest is not None
                          and n >= latest] if pool is not None else []
        if latest is not None and pending is not None and pending > latest:
            pend_count = pending - latest
        else:
            pend_count = len(pooled_pending)
        behind = latest is not None and pend_count > 0
        gap_nonce = None
        if queued and latest is not None:
            expect = pending if pending is not None else latest
            gap_nonce = expect if queued[0] > expect else None
        # the transaction at the next nonce: since when it waits
        if behind and latest is not None:
            if st.pending_since is None or st.pending_since[0] != latest:
                st.pending_since = (latest, now, head if head is not None else 0)
            if st.gap_since is None:
                st.gap_since = (now, head if head is not None else 0)
        else:
            st.pending_since = None
            st.gap_since = None if gap_nonce is None else st.gap_since or (now, head or 0)
        if gap_nonce is not None and st.gap_since is None:
            st.gap_since = (now, head or 0)
        oldest_age = oldest_blocks = None
        stuck_tx = stuck_nonce = None
        stuck_fee = ""
        if st.pending_since is not None:
            oldest_age = now - st.pending_since[1]
            oldest_blocks = max(0, (head or 0) - st.pending_since[2]) if head is not None else None
            stuck_nonce = st.pending_since[0]
            tx = st.pool.get(stuck_nonce)
            if tx is not None:
                stuck_tx = tx.get("hash") if isinstance(tx.get("hash"), str) else None
                stuck_fee = fee_text(tx)
        gap_blocks = (max(0, (head or 0) - st.gap_since[1]) if st.gap_since is not None and head is not None
                      else None)
        # spend rate and runway
        spend = runway = None
        if bal is not None:
            if st.history and bal > st.history[-1][1]:
                st.history.clear()  # a refill: the rate is measured again from here
            st.history.append((now, bal))
            while st.history and now - st.history[0][0] > s.spend_window_s:
                st.history.popleft()
            t0, b0 = st.history[0]
            if now - t0 >= 1.0:
                per_s = max(0, b0 - bal) / (now - t0)
                spend = int(per_s * 3600)
                if per_s > 0:
                    runway = max(0.0, (bal - (s.min_balance or 0)) / per_s)
            if s.min_balance is not None and bal < s.min_balance:
                runway = 0.0
        stuck = oldest_blocks is not None and oldest_blocks >= s.stuck_after_blocks
        gap = (gap_blocks is not None and gap_blocks >= s.gap_after_blocks) or gap_nonce is not None
        low = runway is not None and runway < s.runway_min_s
        status = (Status.CRIT if stuck or (runway == 0.0) else Status.WARN if gap or low or behind else Status.OK)
        if bal is None:
            status = Status.UNKNOWN
        problem = "" if pool_known or not behind else "the node has no txpool API: pending transactions not listed"
        return SignerReading(
            source=self.source, chain=s.chain, label=s.label, address=s.address, balance=bal,
            display=format_amount(bal), min_balance=s.min_balance, spend_per_hour=spend, runway_s=runway,
            runway_min_s=s.runway_min_s, latest_nonce=latest, pending_nonce=pending, pending_count=pend_count,
            queued_count=len(queued), gap_nonce=gap_nonce, gap_blocks=gap_blocks, gap_after_blocks=s.gap_after_blocks,
            oldest_pending_age_s=oldest_age, oldest_pending_blocks=oldest_blocks,
            stuck_after_blocks=s.stuck_after_blocks, stuck_tx=stuck_tx, stuck_nonce=stuck_nonce, stuck_fee=stuck_fee,
            last_confirmed_age_s=(now - st.confirmed_at) if st.confirmed_at is not None else None,
            last_confirmed_nonce=(latest - 1) if latest else None, can_sign=s.can_sign, status=status,
            problem=problem,
        )


# --------------------------------------------------------------------------- rules


def fmt_s(seconds: float | None) -> str:
    """The age / runway text of findings: the one formatter the Chain pane uses too."""
    return format_age(seconds, none="—")


def signer_target(s: SignerReading) -> str:
    """A finding's target: `chain:<chain>:<label>` (the Findings pane gives it as chain=)."""
    return f"chain:{s.chain}:{s.label}"


@rule(ChainReading)
def signer_rules(r: ChainReading, ctx: Any) -> list[Finding]:
    out: list[Finding] = []
    for s in r.signers:
        where = f"{s.label} ({s.address}) on {s.chain}"
        if s.oldest_pending_blocks is not None and s.oldest_pending_blocks >= s.stuck_after_blocks:
            tx = f"tx {s.stuck_tx}" if s.stuck_tx else "its transaction"
            out.append(Finding(
                key=f"signer-stuck:{s.chain}:{s.label}", severity=Severity.P1, source=r.source,
                summary=f"signer {s.label} stuck: nonce {s.stuck_nonce} unconfirmed for "
                        f"{s.oldest_pending_blocks} blocks ({fmt_s(s.oldest_pending_age_s)})",
                evidence=tuple(x for x in (
                    f"{where}: latest nonce {s.latest_nonce}, pending {s.pending_nonce} ({s.pending_count} pending)",
                    f"{tx} at nonce {s.stuck_nonce}" + (f": {s.stuck_fee}" if s.stuck_fee else ""),
                    f"stuck after {s.stuck_after_blocks} blocks; every later transaction of this key waits behind it",
                    s.problem) if x),
                playbook="signer-stuck", target=signer_target(s),
            ))
        gap_long = s.gap_blocks is not None and s.gap_blocks >= s.gap_after_blocks
        if s.gap_nonce is not None or gap_long:
            if s.gap_nonce is not None:
                summary = (f"signer {s.label}: nonce gap at {s.gap_nonce}, {s.queued_count} transaction(s) "
                           "queued behind it can never be mined")
            else:
                summary = (f"signer {s.label}: pending nonce {s.pending_nonce} > latest {s.latest_nonce} "
                           f"for {s.gap_blocks} blocks")
            out.append(Finding(
                key=f"signer-nonce-gap:{s.chain}:{s.label}",
                severity=Severity.P1 if s.gap_nonce is not None else Severity.P2, source=r.source,
                summary=summary,
                evidence=(f"{where}: latest {s.latest_nonce}, pending {s.pending_nonce}, queued {s.queued_count}",
                          f"more than {s.gap_after_blocks} blocks behind is a gap"),
                playbook="signer-nonce-gap", target=signer_target(s),
            ))
        below = s.balance is not None and s.min_balance is not None and s.balance < s.min_balance
        short = s.runway_s is not None and s.runway_min_s is not None and s.runway_s < s.runway_min_s
        if below or short:
            from backends.sources.evm import format_amount

            out.append(Finding(
                key=f"signer-runway:{s.chain}:{s.label}",
                severity=Severity.P0 if s.balance == 0 else Severity.P1, source=r.source,
                summary=(f"signer {s.label} balance {s.display} is below its minimum {format_amount(s.min_balance)}"
                         if below else
                         f"signer {s.label} runway {fmt_s(s.runway_s)} (below {fmt_s(s.runway_min_s)})"),
                evidence=(f"{where}: spending {format_amount(s.spend_per_hour)} per hour over the recent window",
                          f"balance {s.display}, minimum {format_amount(s.min_balance)}"),
                playbook="signer-runway", target=signer_target(s),
            ))
    return out


# --------------------------------------------------------------------------- actions


def bumped(value: int, percent: float) -> int:
    """`value` raised by `percent` (rounded up, and by at least 1 wei)."""
    return max(value + 1, -(-value * int(round(percent * 100)) // 10000) + value)


class _SignerAction(Action):
    danger = Danger.TYPED
    reason_required = False
    cancel = False

    def __init__(self, chains: dict[str, EvmChain], *, password_provider: PasswordProvider | None = None,
                 env: dict[str, str] | None = None, receipt_timeout: float = 30.0) -> None:
        self.chains = {n: c for n, c in chains.items() if getattr(c, "signer_watch", None) is not None}
        self.password_provider = password_provider
        self.env = env
        self.receipt_timeout = receipt_timeout

    # ------------------------------------------------------------------ which signer

    def _resolve(self, chain: str | None, signer: str | None) -> tuple[EvmChain, SignerSpec]:
        for text in (chain, signer):  # "chain:label" (a finding's target) in either
            if text and ":" in text:
                chain, _, signer = text.partition(":")
        if chain is not None and chain not in self.chains:
            raise ActionRefused(self.id, f"unknown chain {chain!r} (no signers configured there)")
        chains = [self.chains[chain]] if chain else list(self.chains.values())
        cands = [(ch, s) for ch in chains for s in ch.signer_watch.specs  # type: ignore[union-attr]
                 if signer is None or s.label == signer]
        if signer is not None and not cands:
            raise ActionRefused(self.id, f"unknown signer {signer!r}")
        if len(cands) > 1:  # the one(s) with something pending
            busy = [(ch, s) for ch, s in cands
                    if (r := ch.signer_watch.last.get(s.label)) is not None  # type: ignore[union-attr]
                    and (r.pending_count or r.gap_nonce is not None)]
            cands = busy if len(busy) == 1 else cands
        if len(cands) != 1:
            names = ", ".join(f"{ch.spec.name}:{s.label}" for ch, s in cands) or "none"
            raise ActionRefused(self.id, f"name the signer (chain:label): {names}")
        return cands[0]

    def _key(self, s: SignerSpec) -> Any:
        from backends.sources.evm import Signer

        if not s.can_sign:
            raise ActionRefused(self.id, f"signer {s.label} has no keystore or key_env: it is watched, not used")
        return Signer(env_name=s.key_env, keystore=s.keystore, env=self.env)

    # ------------------------------------------------------------------ building

    async def _state(self, ch: EvmChain, s: SignerSpec) -> dict[str, Any]:
        from backends.sources.jsonrpc import parse_int

        res = await ch.endpoints.request_batch(
            [("eth_getTransactionCount", [s.address, "latest"]), ("eth_getTransactionCount", [s.address, "pending"]),
             ("eth_chainId", []), ("eth_getBlockByNumber", ["latest", False]), ("eth_maxPriorityFeePerGas", []),
             ("eth_gasPrice", [])],
            time_limit=ch.spec.timeout, fallback=True)
        for r in res[:4]:
            if isinstance(r, Exception):
                raise ActionRefused(self.id, f"cannot read the signer's state: {describe_exception(r)}")
        block = res[3] if isinstance(res[3], dict) else {}
        return {
            "latest": parse_int(res[0]), "pending": parse_int(res[1]), "chain_id": parse_int(res[2]),
            "base": parse_int(block.get("baseFeePerGas", "0x0")),
            "tip": GWEI if isinstance(res[4], Exception) else parse_int(res[4]),
            "gas_price": None if isinstance(res[5], Exception) else parse_int(res[5]),
        }

    def _nonce(self, ch: EvmChain, s: SignerSpec, st: dict[str, Any]) -> int:
        """The nonce to replace: the next one to be mined (latest), or the first missing one
        when transactions are queued behind a gap (cancel fills it)."""
        r = ch.signer_watch.last.get(s.label) if ch.signer_watch else None
        if self.cancel and r is not None and r.gap_nonce is not None and st["pending"] <= st["latest"]:
            return int(r.gap_nonce)
        return int(st["latest"])

    def _build(self, s: SignerSpec, st: dict[str, Any], nonce: int, original: dict[str, Any] | None) -> dict[str, Any]:
        pct = max(s.bump_percent, s.min_bump_percent)
        base, market_tip = st["base"], st["tip"]
        tx: dict[str, Any] = {"chainId": st["chain_id"], "nonce": nonce}
        if self.cancel or original is None:
            tx |= {"to": s.address, "value": 0, "data": "0x", "gas": 21_000}
        else:
            from backends.sources.evm import checksum_address

            to = original.get("to")
            tx |= {"to": checksum_address(to) if isinstance(to, str) and to else None,
                   "value": _int(original.get("value")) or 0,
                   "data": original.get("input") or original.get("data") or "0x",
                   "gas": _int(original.get("gas")) or 21_000}
        old_max = _int(original.get("maxFeePerGas")) if original else None
        old_tip = _int(original.get("maxPriorityFeePerGas")) if original else None
        old_gp = _int(original.get("gasPrice")) if original else None
        if original is not None and old_max is None and old_gp is not None:  # a legacy transaction
            tx |= {"gasPrice": max(bumped(old_gp, pct), st["gas_price"] or 0), "type": 0}
            return tx
        tip = max(bumped(old_tip, pct) if old_tip is not None else 0, market_tip)
        max_fee = max(bumped(old_max, pct) if old_max is not None else 0, 2 * base + tip)
        tx |= {"maxPriorityFeePerGas": tip, "maxFeePerGas": max(max_fee, tip), "type": 2}
        return tx

    async def plan(self, chain: str | None = None, signer: str | None = None, reason: str | None = None,
                   **_: Any) -> ActionPlan:
        from backends.sources.evm import format_amount

        ch, s = self._resolve(chain, signer)
        key = self._key(s)
        try:
            sender = await key.address()
        except ValueError as exc:
            raise ActionRefused(self.id, f"signer key: {exc}") from None
        if str(sender).lower() != s.address.lower():
            raise ActionRefused(self.id, f"the configured key is for {sender}, not {s.label} ({s.address})")
        st = await self._state(ch, s)
        nonce = self._nonce(ch, s, st)
        original = ch.signer_watch.pooled(s.label, nonce) if ch.signer_watch else None
        waiting = st["pending"] > nonce or (self.cancel and nonce >= st["latest"] and original is not None) \
            or (self.cancel and ch.signer_watch is not None
                and (r := ch.signer_watch.last.get(s.label)) is not None and r.gap_nonce == nonce)
        if not self.cancel and original is None:
            raise ActionRefused(self.id, f"the transaction at nonce {nonce} is not in the node's pool (no txpool "
                                         "API, or it is gone): nothing to speed up; cancel replaces it blindly")
        tx = self._build(s, st, nonce, original)
        fee_cap = tx.get("maxFeePerGas") or tx.get("gasPrice") or 0
        what = "cancel (0-value self-send)" if self.cancel else "speed up (same transaction, fees bumped)"
        pct = max(s.bump_percent, s.min_bump_percent)
        lines = [
            f"{what} of {s.label} ({s.address}) on {ch.spec.name}, chain id {st['chain_id']}",
            f"nonce {nonce}: latest {st['latest']}, pending {st['pending']}",
            ("replaces tx " + str(original.get("hash")) + f" ({fee_text(original)})") if original
            else "replaces the transaction at that nonce (not in the node's pool: its fees are unknown)",
            f"replacement: to {tx['to']}, value {tx['value']}, gas {tx['gas']}, {fee_text(tx)}"
            + (f" (+{pct:g} % over the original, at least the market fee)" if original else " (market fee)"),
            f"base fee now {format_gwei(st['base'])}; max cost {format_amount(tx['gas'] * fee_cap)}",
        ]
        guard = Guard(waiting, f"nonce {nonce} is not confirmed yet",
                      "" if waiting else f"nothing waits at nonce {nonce} (latest {st['latest']}, pending {st['pending']})")
        target = f"{ch.spec.name}:{s.label}"
        return ActionPlan(
            action=self.id, title=self.title, target=target,
            changes=(Change(target, f"transaction at nonce {nonce}", original.get("hash") if original else None,
                            dict(tx, **{"from": s.address})),),
            guard=guard, danger=Danger.TYPED, confirm_text=s.label,
            params={"chain": ch.spec.name, "signer": s.label, "nonce": nonce, "tx": tx,
                    "replaces": original.get("hash") if original else None},
            reason=reason, preview="\n".join(lines), notes=(lines[3],),
        )

    async def check_guard(self, plan: ActionPlan) -> Guard:
        ch, s = self._resolve(plan.params["chain"], plan.params["signer"])
        st = await self._state(ch, s)
        nonce = int(plan.params["nonce"])
        if st["latest"] > nonce:
            return Guard(False, f"nonce {nonce} is not confirmed yet", f"nonce {nonce} was confirmed meanwhile "
                                                                       f"(latest {st['latest']})")
        return Guard(True, f"nonce {nonce} is not confirmed yet")

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        from backends.sources.jsonrpc import RpcError, parse_int

        ch, s = self._resolve(plan.params["chain"], plan.params["signer"])
        tx = dict(plan.params["tx"])
        nonce = int(plan.params["nonce"])
        progress(Progress(0, 3, "signing"))
        raw = await self._key(s).sign(tx, self.password_provider)
        progress(Progress(1, 3, "sending"))
        try:
            tx_hash = await ch.request("eth_sendRawTransaction", ["0x" + raw.hex()], fallback=True)
        except RpcError as exc:
            return ActionResult(status="failed", summary=f"the node refused the replacement: {exc.message}",
                                before=plan.params.get("replaces"))
        progress(Progress(2, 3, f"waiting for {tx_hash} (nonce {nonce})"))
        deadline = time.monotonic() + self.receipt_timeout
        delay = 0.1
        while time.monotonic() < deadline:
            rc = await ch.request("eth_getTransactionReceipt", [tx_hash], fallback=True)
            if isinstance(rc, dict) and rc.get("blockNumber"):
                block = parse_int(rc["blockNumber"])
                progress(Progress(3, 3, "mined"))
                return ActionResult(status="ok", summary=f"{s.label} nonce {nonce}: {tx_hash} mined in block {block}",
                                    before=plan.params.get("replaces"), after={"tx": tx_hash, "block": block},
                                    details=(tx_hash,))
            latest = parse_int(await ch.request("eth_getTransactionCount", [s.address, "latest"], fallback=True))
            if latest > nonce:
                return ActionResult(status="ok", summary=f"{s.label} nonce {nonce} confirmed (by the original "
                                                         f"transaction; {tx_hash} was not needed)",
                                    before=plan.params.get("replaces"), after={"tx": tx_hash}, details=(tx_hash,))
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)
        return ActionResult(status="failed", summary=f"sent {tx_hash} at nonce {nonce}; not mined after "
                                                     f"{self.receipt_timeout:g}s (fees still too low?)",
                            before=plan.params.get("replaces"), after={"tx": tx_hash}, details=(tx_hash,))


class SignerSpeedUpAction(_SignerAction):
    id = "signer.speed_up"
    title = "Speed up signer transaction"
    description = "Resend the transaction at the signer's next nonce with its fees bumped (default +20 %)."


class SignerCancelAction(_SignerAction):
    id = "signer.cancel"
    title = "Cancel signer transaction"
    description = "Replace the transaction at the signer's next nonce (or fill a nonce gap) with a 0-value self-send."
    cancel = True


def signer_actions(chains: dict[str, Any], *, password_provider: PasswordProvider | None = None,
                   env: dict[str, str] | None = None) -> list[Action]:
    """speed up / cancel when any chain has signers."""
    if not any(getattr(c, "signer_watch", None) is not None for c in chains.values()):
        return []
    return [SignerSpeedUpAction(chains, password_provider=password_provider, env=env),
            SignerCancelAction(chains, password_provider=password_provider, env=env)]


__all__ = [
    "SignerCancelAction", "SignerSpec", "SignerSpeedUpAction", "SignerWatch", "bumped", "fee_text", "format_gwei",
    "signer_actions", "signer_rules", "signer_specs_from_config", "signer_target",
]
