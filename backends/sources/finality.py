"""Finality and reorgs of release verdicts.

A "released on chain" verdict is provisional until its block is final (the chain's
`finality`: a confirmation depth, or the node's "safe" / "finalized" block) and is rechecked
on every verification. `ReorgMemory` (one per `ReleaseVerifier`) remembers the provisional
releases it has seen; when a later check no longer finds one (or finds it in another block)
the release was reorged away: the verdict flips back to not released and carries the block
and depth (`OrderVerdict.reorged_block` / `reorg_depth`), and `reorg_rules` raises a
`release-reorged` finding naming them while the order stays stuck.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from backends.engine.rules import rule
from backends.model import Finding, OrdersReading, OrderVerdict, Severity, Verdict

MAX_REMEMBERED = 10_000


@dataclass(frozen=True, slots=True)
class Seen:
    block: int
    block_hash: str | None
    tx_hash: str | None
    confirmations: int


class ReorgMemory:
    """Provisional releases seen by earlier checks, and the reorged ones (bounded)."""

    def __init__(self) -> None:
        self.provisional: OrderedDict[str, Seen] = OrderedDict()
        self.reorged: OrderedDict[str, tuple[int, int, str | None]] = OrderedDict()  # id -> (block, depth, tx)

    @staticmethod
    def _put(d: OrderedDict[str, Any], k: str, v: Any) -> None:
        d[k] = v
        d.move_to_end(k)
        while len(d) > MAX_REMEMBERED:
            d.popitem(last=False)

    def apply(self, verdicts: dict[str, OrderVerdict], block_hashes: dict[str, str | None]) -> dict[str, OrderVerdict]:
        """The verdicts of one check, with reorgs marked; remembers the provisional ones."""
        out = dict(verdicts)
        for oid, v in verdicts.items():
            seen = self.provisional.get(oid)
            if v.verdict is Verdict.RELEASED:
                self.reorged.pop(oid, None)
                if seen is not None and seen.block != v.block:  # re-included elsewhere: still provisional
                    out[oid] = replace(v, reason=f"{v.reason}; was in block {seen.block} before a reorg")
                if v.final:
                    self.provisional.pop(oid, None)
                elif v.block is not None:
                    self._put(self.provisional, oid, Seen(v.block, block_hashes.get(oid), v.tx_hash,
                                                          v.confirmations or 0))
            elif v.verdict is Verdict.NOT_RELEASED:
                if seen is not None:
                    self.provisional.pop(oid, None)
                    self._put(self.reorged, oid, (seen.block, seen.confirmations, seen.tx_hash))
                gone = self.reorged.get(oid)
                if gone is not None:
                    block, depth, tx = gone
                    out[oid] = replace(v, reorged_block=block, reorg_depth=depth, tx_hash=v.tx_hash or tx,
                                       reason=f"release in block {block} (tx {tx}) is gone: reorged away "
                                              f"(a reorg of at least {depth} block(s)); {v.reason}")
        return out

    def forget(self, keep: set[str]) -> None:
        """Drop what is remembered of orders no longer stuck."""
        for d in (self.provisional, self.reorged):
            for k in [k for k in d if k not in keep]:
                del d[k]


@rule(OrdersReading)
def reorg_rules(r: OrdersReading, ctx: Any) -> list[Finding]:
    out: list[Finding] = []
    for o in r.oldest:
        v = o.verdict
        if v is None or v.reorged_block is None:
            continue
        out.append(Finding(
            key=f"release-reorged:{r.source}:{o.id}", severity=Severity.P1, source=r.source,
            summary=f"order {o.id}: its release in block {v.reorged_block} was reorged away "
                    f"(depth ≥ {v.reorg_depth}); the order is stuck again",
            evidence=(v.reason, "a release is final only at the chain's finality; this one was provisional"),
            playbook="release-reorged", target=f"order:{o.id}",
        ))
    return out


__all__ = ["ReorgMemory", "Seen", "reorg_rules"]
