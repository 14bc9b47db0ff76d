"""Contract guardrails: admin events of watched contracts become findings.

For every `[[chain.X.contracts]]` with `guard = true`, `GuardrailWatch` (a monitor source)
reads the logs of the contract from the block after the last one it read up to head with one
`eth_getLogs` (topics: OpenZeppelin's Paused, Unpaused, OwnershipTransferred, RoleGranted,
RoleRevoked, RoleAdminChanged and ERC-1967's Upgraded / AdminChanged). Each event is kept for
an hour and is a finding naming the transaction and, for roles, the role by name
(`evm.role_name`: keccak of known names and DEFAULT_ADMIN_ROLE, plus configured `roles`):

- P0: a new owner, a grant of an admin role (DEFAULT_ADMIN_ROLE or *ADMIN*) or a changed role
  admin to an account not announced in config (`owner`, `admins`), an implementation
  (`Upgraded`) or proxy admin other than the configured `implementation` / `admins`;
- P2: announced changes, Paused/Unpaused, other role grants and revocations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backends.engine.rules import rule
from backends.model import Finding, Reading, Severity

EVENTS = {
    "Paused(address)": "Paused",
    "Unpaused(address)": "Unpaused",
    "OwnershipTransferred(address,address)": "OwnershipTransferred",
    "RoleGranted(bytes32,address,address)": "RoleGranted",
    "RoleRevoked(bytes32,address,address)": "RoleRevoked",
    "RoleAdminChanged(bytes32,bytes32,bytes32)": "RoleAdminChanged",
    "Upgraded(address)": "Upgraded",
    "AdminChanged(address,address)": "AdminChanged",
}
KEEP_S = 3600.0


def _topic(sig: str) -> str:
    from backends.sources.evm import keccak

    return "0x" + keccak(sig.encode()).hex()


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardEvent:
    contract: str
    address: str
    event: str
    block: int
    tx_hash: str
    log_index: int
    args: tuple[tuple[str, str], ...] = ()  # (name, shown value)
    severity: Severity = Severity.P2
    why: str = ""  # why it is P0 ("not announced in config")

    @property
    def text(self) -> str:
        shown = ", ".join(f"{k} {v}" for k, v in self.args)
        return f"{self.event}({shown})" if shown else self.event


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardReading(Reading):
    chain: str
    contracts: tuple[str, ...] = ()
    from_block: int | None = None
    to_block: int | None = None
    events: tuple[GuardEvent, ...] = ()

    def describe(self) -> str:
        """One line for `warroom health`."""
        p0 = sum(1 for e in self.events if e.severity is Severity.P0)
        return (f"guardrails {self.chain} ({', '.join(self.contracts)}): {len(self.events)} admin event(s) "
                f"in the last hour" + (f", {p0} P0" if p0 else ""))


@dataclass(frozen=True, slots=True)
class GuardSpec:
    name: str
    address: str
    owner: str | None = None
    implementation: str | None = None
    admins: tuple[str, ...] = ()


def _addr(word: str) -> str:
    return "0x" + word[-40:].lower()


def _words(data: str) -> list[str]:
    body = data[2:] if data.startswith("0x") else data
    return ["0x" + body[i:i + 64] for i in range(0, len(body), 64) if body[i:i + 64]]


def _is_admin_role(name: str | None, word: str) -> bool:
    return word == "0x" + "00" * 32 or bool(name and "ADMIN" in name)


def judge(spec: GuardSpec, lg: dict[str, Any], by_topic: dict[str, str]) -> GuardEvent | None:
    """The guard event of one log (None when it is not one of EVENTS)."""
    from backends.sources.evm import format_role, role_name
    from backends.sources.jsonrpc import parse_int

    topics = [str(t).lower() for t in lg.get("topics") or []]
    if not topics or topics[0] not in by_topic:
        return None
    ev = by_topic[topics[0]]
    words = topics[1:] + _words(str(lg.get("data") or "0x"))
    announced_admins = {a.lower() for a in spec.admins}
    sev, why = Severity.P2, ""
    args: list[tuple[str, str]] = []
    if ev in ("Paused", "Unpaused"):
        args = [("by", _addr(words[0]))] if words else []
    elif ev == "OwnershipTransferred" and len(words) >= 2:
        new = _addr(words[1])
        args = [("from", _addr(words[0])), ("to", new)]
        if not spec.owner or new != spec.owner.lower():
            sev, why = Severity.P0, f"new owner {new} is not the owner announced in config"
    elif ev in ("RoleGranted", "RoleRevoked") and len(words) >= 3:
        role, account, sender = words[0], _addr(words[1]), _addr(words[2])
        args = [("role", format_role(role)), ("account", account), ("by", sender)]
        if ev == "RoleGranted" and _is_admin_role(role_name(role), role) and account not in announced_admins:
            sev, why = Severity.P0, f"{format_role(role)} granted to {account}, not an admin announced in config"
    elif ev == "RoleAdminChanged" and len(words) >= 3:
        args = [("role", format_role(words[0])), ("previous admin role", format_role(words[1])),
                ("new admin role", format_role(words[2]))]
        sev, why = Severity.P0, "the admin role of a role changed"
    elif ev == "Upgraded" and words:
        impl = _addr(words[0])
        args = [("implementation", impl)]
        if not spec.implementation or impl != spec.implementation.lower():
            sev, why = Severity.P0, f"implementation {impl} is not the one announced in config"
    elif ev == "AdminChanged" and len(words) >= 2:
        new = _addr(words[1])
        args = [("previous admin", _addr(words[0])), ("new admin", new)]
        if new not in announced_admins:
            sev, why = Severity.P0, f"proxy admin {new} is not announced in config"
    return GuardEvent(contract=spec.name, address=spec.address, event=ev,
                      block=parse_int(lg.get("blockNumber", "0x0")), tx_hash=str(lg.get("transactionHash", "")),
                      log_index=parse_int(lg.get("logIndex", "0x0")), args=tuple(args), severity=sev, why=why)


class GuardrailWatch:
    """Monitor source: the guard events of a chain's guarded contracts."""

    kind = "chain"

    def __init__(self, chain: Any, specs: list[GuardSpec], *, start_block: int | None = None,
                 lookback: int = 1000) -> None:
        import time

        self.chain = chain  # backends.sources.evm.EvmChain
        self.specs = {s.address.lower(): s for s in specs}
        self.name = f"guardrails.{chain.spec.name}"
        self.interval = float(chain.interval)
        self.timeout = float(chain.spec.timeout) * 2 + 2
        self.next_block = start_block
        self.lookback = lookback
        self.by_topic = {_topic(sig): name for sig, name in EVENTS.items()}
        self.kept: list[tuple[float, GuardEvent]] = []
        self._time = time.monotonic

    async def poll(self) -> list[GuardReading]:
        head = await self.chain.head()
        a = self.next_block if self.next_block is not None else max(0, head - self.lookback)
        if a <= head:
            logs = await self.chain.request("eth_getLogs", [{
                "address": [s.address for s in self.specs.values()], "topics": [list(self.by_topic)],
                "fromBlock": hex(a), "toBlock": hex(head)}])
            now = self._time()
            for lg in logs or []:
                spec = self.specs.get(str(lg.get("address", "")).lower())
                ev = judge(spec, lg, self.by_topic) if spec is not None and not lg.get("removed") else None
                if ev is not None:
                    self.kept.append((now, ev))
            self.next_block = head + 1
        cutoff = self._time() - KEEP_S
        self.kept = [(t, e) for t, e in self.kept if t >= cutoff][-200:]
        return [GuardReading(source=self.name, chain=self.chain.spec.name,
                             contracts=tuple(s.name for s in self.specs.values()),
                             from_block=a, to_block=head, events=tuple(e for _t, e in self.kept))]

    async def aclose(self) -> None:
        return None


def guard_sources(config: Any, chains: dict[str, Any]) -> list[GuardrailWatch]:
    """A GuardrailWatch per EVM chain with `guard = true` contracts."""
    out: list[GuardrailWatch] = []
    for name, ch in chains.items():
        cc = (getattr(config, "chain", None) or {}).get(name)
        if cc is None or not hasattr(ch, "contracts"):
            continue
        specs = [GuardSpec(name=c.name, address=ch.contracts[c.name].address if c.name in ch.contracts else c.address,
                           owner=c.owner, implementation=c.implementation, admins=tuple(c.admins))
                 for c in cc.contracts if getattr(c, "guard", False)]
        if specs:
            out.append(GuardrailWatch(ch, specs))
    return out


@rule(GuardReading)
def guard_rules(r: GuardReading, ctx: Any) -> list[Finding]:
    out: list[Finding] = []
    for e in r.events:
        out.append(Finding(
            key=f"guardrail:{r.chain}:{e.contract}:{e.event}:{e.tx_hash}:{e.log_index}",
            severity=e.severity, source=r.source,
            summary=f"{e.contract} on {r.chain}: {e.text}" + (f" — {e.why}" if e.why else ""),
            evidence=(f"tx {e.tx_hash} in block {e.block}", f"contract {e.address}"),
            playbook="contract-guardrail",
            target=f"chain:{r.chain}",
        ))
    return out


__all__ = ["EVENTS", "GuardEvent", "GuardReading", "GuardSpec", "GuardrailWatch", "guard_rules", "guard_sources",
           "judge"]
