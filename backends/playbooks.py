"""The seeds' runbooks as data: symptom -> diagnosis -> resolution, with time budgets.

A finding names the playbook it points to (`Finding.playbook`). A playbook lists
diagnosis steps (checks warroom runs itself: each names the reading or source that
shows it) and resolution steps (each names the action id and the key that runs it).
Which steps are done is derived from the audit trail: a resolution step is done
when an audit entry for its action succeeded after the finding appeared.

Playbooks can be extended or overridden from config (`[[playbooks]]`, same shape):
`book_for(config)` is the built-ins plus the configured ones, a configured playbook
replacing the built-in of the same id as a whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .model import Finding, Severity


@dataclass(frozen=True, slots=True)
class Step:
    text: str
    action: str | None = None  # action id that performs it ("service.restart")
    key: str | None = None  # binding that runs it in the console
    check: str | None = None  # what warroom shows for a diagnosis step (pane / reading kind)
    budget: str = ""  # time budget from the seed ("5 min")
    targets: tuple[str, ...] = ()  # finding targets it applies to (prefixes, "service:"); empty: any

    def applies_to(self, finding: Finding) -> bool:
        if not self.targets:
            return True
        t = finding.target or ""
        return any(t.startswith(p) for p in self.targets)


@dataclass(frozen=True, slots=True)
class Playbook:
    id: str
    title: str
    severity: Severity
    budget: str  # overall time budget from the seed
    symptoms: tuple[str, ...]
    diagnosis: tuple[Step, ...]
    resolution: tuple[Step, ...]
    escalate_to: str = ""  # escalation level name hint
    seed: str = ""  # where it comes from

    def steps(self) -> tuple[Step, ...]:
        return self.diagnosis + self.resolution


def _p(**kw: Any) -> Playbook:
    return Playbook(**kw)


BUILTIN: tuple[Playbook, ...] = (
    _p(
        id="listener-failure",
        title="Event listener failure",
        severity=Severity.P1,
        budget="5 min to restart, 15 min to diagnose",
        symptoms=("No logs from the event listener for minutes", "Contract events emitted but not processed",
                  "Listener process running but no activity", "Orders stuck in PENDING while releases are on chain"),
        diagnosis=(
            Step("Is the listener process running?", check="services"),
            Step("Recent listener logs (silence, errors)", check="logs"),
            Step("Listener cursor vs chain head", check="cursor"),
            Step("Releases on chain for stuck orders", action="orders.verify", key="v", check="orders"),
        ),
        resolution=(
            Step("Restart the listener", action="service.restart", key="r", budget="5 min", targets=("service:",)),
            Step("Settle orders whose release is final on chain (reconcile)", action="orders.reconcile", key="R"),
            Step("Resync the listener from the last good block", action="orders.resync", key="ctrl+r",
                 targets=("cursor:",)),
            Step("Escalate to the development team", action="escalate", key="e", budget="30 min"),
        ),
        escalate_to="Development team",
        seed="000 §1B, §2, §6A",
    ),
    _p(
        id="orders-stuck",
        title="Orders stuck in PENDING",
        severity=Severity.P1,
        budget="15 min",
        symptoms=("Orders stuck in PENDING (should -> SETTLED)", "Frontend shows 'Processing...' indefinitely"),
        diagnosis=(
            Step("Stuck count, oldest, counts by state (24 h)", check="orders"),
            Step("Verify releases on chain", action="orders.verify", key="v", check="orders"),
            Step("Event listener health", check="services"),
        ),
        resolution=(
            Step("Reconcile: settle orders released and final on chain", action="orders.reconcile", key="R"),
            Step("Fix one order with a reason (dry-run first)", action="orders.fix", key="f"),
            Step("Bulk fix by age, only released, with a canary", action="orders.bulk_fix", key="F"),
            Step("Escalate", action="escalate", key="e"),
        ),
        escalate_to="Development team",
        seed="000 §1A, §4A; 001 emergency-order-fix",
    ),
    _p(
        id="events-not-processed",
        title="Events not being processed",
        severity=Severity.P1,
        budget="15 min",
        symptoms=("Event count not increasing", "No logs in the event processor"),
        diagnosis=(
            Step("Event processor container state", check="services"),
            Step("'Listening for PostgreSQL NOTIFY' / errors in its logs", check="logs"),
            Step("Processed events in the last 5 minutes", check="checks"),
        ),
        resolution=(
            Step("Restart the event processor", action="service.restart", key="r"),
            Step("Check the polling fallback in its logs", check="logs"),
        ),
        seed="003 incident 2",
    ),
    _p(
        id="api-down",
        title="API gateway down",
        severity=Severity.P0,
        budget="5 min",
        symptoms=("HTTP 502/503", "Health check fails"),
        diagnosis=(
            Step("Container status and last exit code", check="services"),
            Step("Last 100 log lines for the crash", check="logs"),
            Step("Dependencies: Postgres and Redis reachable", check="postgres"),
        ),
        resolution=(
            Step("Restart the API gateway", action="service.restart", key="r", budget="5 min"),
            Step("If it persists: database connectivity (see pool exhausted)", check="postgres"),
            Step("Escalate", action="escalate", key="e"),
        ),
        seed="003 incident 1",
    ),
    _p(
        id="db-pool-exhausted",
        title="Database connection pool exhausted",
        severity=Severity.P1,
        budget="15 min",
        symptoms=("'Failed to acquire connection from pool'", "500 errors"),
        diagnosis=(
            Step("Active connections vs max_connections", check="postgres"),
            Step("Long-running queries (> 1 min)", check="postgres"),
        ),
        resolution=(
            Step("Terminate queries running > 5 min", action="postgres.terminate", key="k"),
            Step("Restart API gateway and event processor", action="service.restart", key="r"),
            Step("Escalate to the database team", action="escalate", key="e"),
        ),
        escalate_to="Database support",
        seed="003 incident 3; 004 §5",
    ),
    _p(
        id="queue-overflow",
        title="Redis queue overflow",
        severity=Severity.P1,
        budget="15 min",
        symptoms=("Queue depth > 50,000", "'QUEUE_CRITICAL_DEPTH' errors"),
        diagnosis=(
            Step("Queue depth, drain rate, time to drain", check="queues"),
            Step("Action worker status and logs", check="services"),
        ),
        resolution=(
            Step("Scale action workers", action="service.scale", key="s"),
            Step("Watch the queue drain", check="queues"),
            Step("If it does not drain: worker errors", check="logs"),
        ),
        seed="003 incident 4",
    ),
    _p(
        id="all-breakers-open",
        title="All circuit breakers open",
        severity=Severity.P1,
        budget="30 min",
        symptoms=("No actions executed", "'Circuit breaker OPEN' in logs"),
        diagnosis=(
            Step("Open breakers: failures, last failure", check="breakers"),
            Step("'Action execution failed' in worker logs", check="logs"),
        ),
        resolution=(
            Step("Fix the external service first (webhook, Telegram...)"),
            Step("Wait for half-open (60 s) or reset one breaker", action="breaker.reset", key="b"),
            Step("Reset all open breakers (typed confirmation)", action="breaker.reset_all", key="B"),
        ),
        seed="003 incident 5",
    ),
    _p(
        id="rpc-failure",
        title="RPC node failure",
        severity=Severity.P0,
        budget="15 min",
        symptoms=("All RPC calls failing", "Timeouts on contract interactions", "'Network unreachable'"),
        diagnosis=(
            Step("Endpoint heads, lag, chain id, latency", check="chain"),
        ),
        resolution=(
            Step("Fail over to the backup RPC", action="chain.failover", key="o"),
            Step("Escalate to the infrastructure provider", action="escalate", key="e", budget="30-60 min"),
        ),
        escalate_to="Infrastructure support",
        seed="004 §2; 000 §3B",
    ),
    _p(
        id="gas-low",
        title="Gas bank depletion",
        severity=Severity.P0,
        budget="15 min",
        symptoms=("Transactions failing for insufficient gas", "Sponsored transactions failing"),
        diagnosis=(Step("Watched balances vs minimum", check="chain"),),
        resolution=(
            Step("Refill the gas bank (custom command action)", action="command.refill", key="g"),
            Step("Enable gas conservation: reduce non-critical operations"),
        ),
        seed="004 §3; 002 fund arbiter",
    ),
    _p(
        id="contract-exploit",
        title="Smart contract exploit suspected",
        severity=Severity.P0,
        budget="2 min to pause, 15 min to investigate",
        symptoms=("Unusual fund movements", "Unexpected contract state changes", "Security alerts"),
        diagnosis=(
            Step("Contract paused? code present?", check="chain"),
            Step("Recent release events (volume, amounts)", check="chain"),
        ),
        resolution=(
            Step("PAUSE the contract first", action="chain.pause", key="P", budget="2-5 min"),
            Step("Notify the security team", action="escalate", key="e"),
            Step("Declare a P0 incident", action="incident.declare", key="i"),
        ),
        escalate_to="Security team",
        seed="002 §2; 004 §1",
    ),
    _p(
        id="payment-hub",
        title="Payment hub disruption",
        severity=Severity.P0,
        budget="15 min",
        symptoms=("Payment receipts failing validation", "GAS transfers not processing"),
        diagnosis=(Step("Is the payment hub paused?", check="chain"), Step("Recent payment events", check="logs")),
        resolution=(
            Step("Pause new payments", action="chain.pause", key="P"),
            Step("Escalate", action="escalate", key="e"),
        ),
        seed="004 §6",
    ),
    _p(
        id="system-down",
        title="System down / complete outage",
        severity=Severity.P0,
        budget="5 min",
        symptoms=("Every service failing its health check",),
        diagnosis=(
            Step("External dependencies", check="checks"),
            Step("Our services", check="services"),
        ),
        resolution=(
            Step("Alert the team and declare a P0 incident", action="incident.declare", key="i"),
            Step("Ordered startup of the stack", action="stack.startup", key="U"),
            Step("Roll back the latest deployment (custom action)", action="command.rollback"),
            Step("Update the status page; emergency maintenance", action="escalate", key="e"),
        ),
        escalate_to="Emergency maintenance",
        seed="002 §1; 000 level 4",
    ),
    _p(
        id="tee-failure",
        title="TEE service failure",
        severity=Severity.P1,
        budget="1 h",
        symptoms=("TEE services returning errors", "Failed signature operations"),
        diagnosis=(Step("TEE service health", check="checks"),),
        resolution=(
            Step("Restart TEE services (kubectl rollout restart)", action="service.restart", key="r"),
            Step("Enable fallback mode (custom action)", action="command.tee-fallback"),
        ),
        seed="004 §4",
    ),
    _p(
        id="service-down",
        title="Service down",
        severity=Severity.P1,
        budget="5 min",
        symptoms=("A service is not running or unhealthy",),
        diagnosis=(Step("State, health, last exit code", check="services"), Step("Its recent logs", check="logs")),
        resolution=(Step("Restart it", action="service.restart", key="r"), Step("Escalate", action="escalate", key="e")),
    ),
)


class PlaybookBook:
    def __init__(self, extra: Iterable[Playbook] = ()):
        self._by_id: dict[str, Playbook] = {p.id: p for p in BUILTIN}
        for p in extra:
            self._by_id[p.id] = p

    def get(self, pid: str | None) -> Playbook | None:
        return self._by_id.get(pid or "")

    def all(self) -> list[Playbook]:
        return list(self._by_id.values())

    def done_actions(self, finding: Finding, audit_entries: Iterable[Mapping[str, Any]]) -> set[str]:
        """Action ids that succeeded (not dry-run) since the finding appeared.

        Backend actions count for the router step that plans them (`docker.restart`,
        `process.restart`, `command.restart.NAME` -> `service.restart`); a service action
        counts for a finding about a service only when it acted on that service.
        """
        since = finding.since
        done = set()
        for e in audit_entries:
            if e.get("dry_run") or e.get("result") not in ("ok", "partial"):
                continue
            try:
                ts = datetime.fromisoformat(e["ts"])
            except (KeyError, ValueError, TypeError):
                continue
            if ts < since:
                continue
            action = str(e.get("action", ""))
            step_id = step_action_id(action)
            if step_id.startswith("service.") and (finding.target or "").startswith("service:") \
                    and e.get("target") and e.get("target") != finding.target:
                continue
            done.add(action)
            done.add(step_id)
        return done

    def next_step(self, finding: Finding, done: Iterable[str] = frozenset(),
                  available: Iterable[str] | None = None) -> Step | None:
        """The first resolution step for this finding's target whose action is not done yet
        (and is registered, when `available` is given); else the first diagnosis step."""
        pb = self.get(finding.playbook)
        if pb is None:
            return None
        done = set(done)
        avail = None if available is None else {step_action_id(a) for a in available} | set(available)
        for step in pb.resolution:
            if not step.action or step.action in done or not step.applies_to(finding):
                continue
            if avail is not None and step.action not in avail:
                continue
            return step
        return pb.diagnosis[0] if pb.diagnosis else None

    def progress(self, finding: Finding, done: Iterable[str] = frozenset()) -> list[StepState]:
        """Every step of the finding's playbook with done / left (the playbook screen)."""
        pb = self.get(finding.playbook)
        return progress(pb, set(done)) if pb else []


_ROUTED = {"restart", "stop", "start", "scale"}


def step_action_id(action: str) -> str:
    """The playbook step an executed action performs: backend ids map to the router's."""
    parts = action.split(".")
    if len(parts) >= 2 and parts[0] in ("docker", "process", "command") and parts[1] in _ROUTED:
        return f"service.{parts[1]}"
    return action


@dataclass(frozen=True, slots=True)
class StepState:
    step: Step
    done: bool


def progress(pb: Playbook, done: set[str]) -> list[StepState]:
    return [StepState(s, bool(s.action and s.action in done)) for s in pb.steps()]


PLAYBOOK_IDS = tuple(p.id for p in BUILTIN)

# What a step's `action` may name (config validation): the first part of an action id.
# `escalate` is the one id without a dot; `command.NAME` is a configured [[actions]] entry.
ACTION_NAMESPACES = ("service", "docker", "process", "command", "stack", "breaker", "chain", "incident",
                     "orders", "postgres", "queue")
ACTION_SINGLE = ("escalate",)
# What a diagnosis step's `check` may name: the pane / reading that shows it.
CHECK_KINDS = ("services", "logs", "cursor", "orders", "checks", "postgres", "redis", "queues", "breakers",
               "chain", "host")


def book_for(config: Any = None) -> PlaybookBook:
    """The built-in playbooks plus the config's `[[playbooks]]` (an id equal to a built-in's replaces it)."""
    return PlaybookBook(getattr(config, "playbooks", None) or ())


class PlaybookHints:
    """`playbook_hint(finding) -> (step, key)` for the findings pane, from live state:
    steps done come from the audit trail (re-read only when the file grows), steps whose
    action is not configured (or not allowed: read-only) are skipped."""

    def __init__(self, book: PlaybookBook | None = None, audit: Any = None, actions: Any = None,
                 max_entries: int = 2000) -> None:
        self.book = book or PlaybookBook()
        self.audit = audit
        self.actions = actions
        self.max_entries = max_entries
        self._size = -1
        self._entries: list[dict] = []

    def entries(self) -> list[dict]:
        path = getattr(self.audit, "path", None)
        if path is None:
            return []
        try:
            size = path.stat().st_size
        except OSError:
            return []
        if size != self._size:
            self._entries = self.audit.tail(self.max_entries)
            self._size = size
        return self._entries

    def available(self) -> list[str] | None:
        if self.actions is None:
            return None
        return [a.id for a in self.actions.available()]

    def step(self, finding: Finding) -> Step | None:
        if self.book.get(finding.playbook) is None:
            return None
        done = self.book.done_actions(finding, self.entries())
        return self.book.next_step(finding, done, self.available())

    def __call__(self, finding: Finding) -> tuple[Step, str | None] | None:
        step = self.step(finding)
        return (step, step.key) if step is not None else None
