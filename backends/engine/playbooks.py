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

import asyncio
import logging
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from backends.model import Finding, Severity

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Step:
    text: str
    action: str | None = None  # action id that performs it ("service.restart")
    key: str | None = None  # binding that runs it in the console
    check: str | None = None  # what warroom shows for a diagnosis step (pane / reading kind)
    budget: str = ""  # time budget from the seed ("5 min")
    targets: tuple[str, ...] = ()  # finding targets it applies to (prefixes, "service:"); empty: any
    # parameters the step gives its action (besides the finding's target), e.g. all=True
    params: tuple[tuple[str, Any], ...] = ()
    # a waiting step (no action): how long the fix before it takes to show, a duration or a
    # {placeholder} of the next step's action ("{reset_timeout}": breakers half-open by themselves)
    wait: str = ""
    # set on the action step shown while a wait runs: the wait's words and the seconds left of it
    waiting: str = ""
    wait_left: float | None = None

    def action_params(self) -> dict[str, Any]:
        return dict(self.params)

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
            Step("Terminate queries running > {terminate_after}", action="postgres.terminate", key="k",
                 params=(("all", True),)),
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
            Step("Wait for half-open ({reset_timeout}) or reset one breaker", action="breaker.reset", key="b",
                 targets=("breaker:",)),
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
            Step("Refill the gas bank", action="command.refill", key="g"),
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
        id="alertmanager-alert",
        title="Alert from Alertmanager",
        severity=Severity.P2,
        budget="as the alert's runbook says",
        symptoms=("An alert Prometheus (or another sender) fires, routed through Alertmanager",),
        diagnosis=(Step("The alert: its labels, description, runbook and source (the finding's evidence)",
                        check="checks"),),
        resolution=(
            Step("Silence it while you work on it (matchers from its labels; it ends by itself)",
                 action="alertmanager.silence", key="m", targets=("alert:",)),
            Step("Fix what the alert names, following its runbook; it resolves when its condition does"),
        ),
        seed="Alertmanager v2 (issue 18)",
    ),
    _p(
        id="contract-paused",
        title="Contract paused",
        severity=Severity.P3,
        budget="when the incident is over",
        symptoms=("A watched contract reports paused() = true", "Releases and payments are refused"),
        diagnosis=(Step("Why it was paused: the open incident, recent release events", check="chain"),),
        resolution=(
            Step("Unpause the contract once the incident is resolved", action="chain.unpause", key="U"),
        ),
        seed="002 §2; 004 §1 (after the pause)",
    ),
    # signers and finality (backends/sources/signers.py, backends/sources/finality.py; issue 19)
    _p(
        id="signer-stuck",
        title="Signer stuck behind a low-fee transaction",
        severity=Severity.P1,
        budget="10 min",
        symptoms=("Releases and payments stop confirming", "The signer's pending nonce stays above its latest",
                  "One transaction unconfirmed for several blocks (fee below the market)"),
        diagnosis=(Step("Signer: latest vs pending nonce, the oldest pending transaction and its fee", check="chain"),),
        resolution=(
            Step("Speed up the stuck transaction (same nonce, fee +20 %)", action="signer.speed_up", key="x",
                 targets=("chain:",), budget="2 min"),
            Step("Cancel it instead (0-value self-send at its nonce)", action="signer.cancel", key="C",
                 targets=("chain:",)),
        ),
        seed="issue 19 (signers); Chainlink node gas bumping",
    ),
    _p(
        id="signer-nonce-gap",
        title="Signer nonce gap",
        severity=Severity.P2,
        budget="15 min",
        symptoms=("Pending nonce above latest for many blocks", "Transactions queued behind a missing nonce"),
        diagnosis=(Step("Signer: latest, pending and queued nonces", check="chain"),),
        resolution=(
            Step("Fill the gap: cancel at the missing nonce (0-value self-send)", action="signer.cancel", key="C",
                 targets=("chain:",)),
        ),
        seed="issue 19 (signers)",
    ),
    _p(
        id="signer-runway",
        title="Signer runway low",
        severity=Severity.P1,
        budget="30 min",
        symptoms=("The signer's balance will reach its minimum soon at the recent spend rate",),
        diagnosis=(Step("Signer: balance, spend per hour, runway", check="chain"),),
        resolution=(
            Step("Refill the signer (gas bank)", action="command.refill", key="g"),
            Step("Reduce non-critical sends until it is funded"),
        ),
        seed="issue 19 (signers); 004 §3",
    ),
    _p(
        id="release-reorged",
        title="Release reorged away",
        severity=Severity.P1,
        budget="15 min",
        symptoms=("An order seen released on chain is stuck again", "Its release block is no longer in the chain"),
        diagnosis=(Step("Endpoints: latest, safe and finalized heads; the order's verdict", check="chain"),),
        resolution=(
            Step("Verify the order on chain again", action="orders.verify", key="v"),
            Step("Escalate: the release must be sent again", action="escalate", key="e"),
        ),
        seed="issue 19 (finality and reorgs)",
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
            Step("Roll back the latest deployment", action="command.rollback"),
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
            Step("Enable the TEE fallback mode", action="command.tee-fallback"),
        ),
        seed="004 §4",
    ),
    _p(
        id="missed-blocks",
        title="Listener skipped blocks",
        severity=Severity.P1,
        budget="15 min",
        symptoms=("Releases on chain below the listener cursor whose orders are still pending",
                  "Orders stuck although the listener runs and its cursor moves"),
        diagnosis=(Step("Missed block range: release events vs the orders table", check="chain"),),
        resolution=(
            Step("Backfill exactly the missed block range", action="orders.backfill", key="K"),
            Step("Escalate to the listener's owners", action="escalate", key="e"),
        ),
        seed="000 §3 (fallback event checker); issue 19",
    ),
    _p(
        id="rpc-degraded",
        title="RPC endpoint degraded",
        severity=Severity.P2,
        budget="15 min",
        symptoms=("An endpoint errs, is slow or lags the best head", "Endpoints disagree on a verification read"),
        diagnosis=(Step("Endpoint scores: error rate, p50/p70/p95, lag, chain id", check="chain"),),
        resolution=(
            Step("Fail over (or back) to the best-scored endpoint", action="chain.failover", key="o"),
            Step("Escalate to the RPC provider", action="escalate", key="e"),
        ),
        escalate_to="Infrastructure support",
        seed="004 §2; eRPC selection policy",
    ),
    _p(
        id="contract-guardrail",
        title="Contract admin change",
        severity=Severity.P0,
        budget="2 min to pause",
        symptoms=("Owner, admin role or implementation changed without announcement",
                  "A watched contract was paused or unpaused"),
        diagnosis=(Step("The event, its transaction and the role by name", check="chain"),),
        resolution=(
            Step("PAUSE the contract if the change is not yours", action="chain.pause", key="P",
                 targets=("chain:",)),  # an EVM contract (a Neo contract's pause is a [[actions]] command)
            Step("Notify the security team", action="escalate", key="e"),
            Step("Declare a P0 incident", action="incident.declare", key="i"),
        ),
        escalate_to="Security team",
        seed="002 §2; OZ Defender/Monitor sentinels",
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
        return set(self.done_at(finding, audit_entries))

    def done_at(self, finding: Finding, audit_entries: Iterable[Mapping[str, Any]]) -> dict[str, datetime]:
        """`done_actions` with when each was last done (what a waiting step counts from)."""
        since = finding.since
        done: dict[str, datetime] = {}
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
            for name in (action, step_id):
                if name not in done or done[name] < ts:
                    done[name] = ts
        return done

    def next_step(self, finding: Finding, done: Iterable[str] = frozenset(),
                  available: Iterable[str] | None = None) -> Step | None:
        """The first resolution step for this finding's target whose action is not done yet
        (and is registered, when `available` is given); else the first diagnosis step.

        A waiting step (`wait`) after a done step is not skipped: the step after it comes back
        with `waiting` set to the wait's words (the operator may wait, or act now)."""
        pb = self.get(finding.playbook)
        if pb is None:
            return None
        done = set(done)
        avail = None if available is None else {step_action_id(a) for a in available} | set(available)
        acted = False
        waiting: Step | None = None
        for step in pb.resolution:
            if not step.applies_to(finding):
                continue
            if step.wait and not step.action:
                waiting = step if acted else None
                continue
            if not step.action:
                continue
            if step.action in done:
                acted, waiting = True, None
                continue
            if avail is not None and step.action not in avail:
                continue
            if waiting is not None:
                return replace(step, waiting=waiting.text, wait=waiting.wait)
            return step
        return pb.diagnosis[0] if pb.diagnosis else None

    def progress(self, finding: Finding, done: Iterable[str] = frozenset()) -> list[StepState]:
        """Every step of the finding's playbook with done / left (the playbook screen)."""
        pb = self.get(finding.playbook)
        return progress(pb, set(done)) if pb else []


def render_step(step: Step, actions: Any = None) -> Step:
    """The step with `{name}` in its text filled from its action's `step_facts()` (the
    configured values the action really uses: "Terminate queries running > 10s"). A
    placeholder nothing fills is written as the action's default words ("the threshold")."""
    if "{" not in step.text + step.waiting + step.wait:
        return step
    facts: dict[str, Any] = {}
    if actions is not None and step.action:
        try:
            action = actions.get(step.action)
            fn = getattr(action, "step_facts", None)
            facts = dict(fn() or {}) if callable(fn) else {}
        except Exception:
            facts = {}

    class _Fallback(dict[str, Any]):
        def __missing__(self, key: str) -> str:
            return "the configured limit"

    def fill(text: str) -> str:
        try:
            return string.Formatter().vformat(text, (), _Fallback(facts))
        except (ValueError, IndexError, KeyError):
            return text

    return replace(step, text=fill(step.text), waiting=fill(step.waiting), wait=fill(step.wait))


_ROUTED = {"restart", "stop", "start", "scale"}


def step_action_id(action: str) -> str:
    """The playbook step an executed action performs: backend ids map to the router's."""
    parts = action.split(".")
    if len(parts) >= 2 and parts[0] in ("docker", "process", "command") and parts[1] in _ROUTED:
        return f"service.{parts[1]}"
    if len(parts) == 3 and parts[0] == "alertmanager" and parts[2] in ("silence", "expire"):
        return f"alertmanager.{parts[2]}"  # alertmanager.<name>.silence is the router's step
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
ACTION_NAMESPACES = ("service", "docker", "process", "command", "stack", "breaker", "chain", "incident", "alertmanager",
                     "orders", "postgres", "queue", "signer")
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
                 max_entries: int = 2000, clock: Any = None) -> None:
        self.book = book or PlaybookBook()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.audit = audit
        self.actions = actions
        self.max_entries = max_entries
        self._size = -1
        self._entries: list[dict[str, Any]] = []
        self._reload: asyncio.Task[None] | None = None  # the off-loop re-read in flight

    def entries(self) -> list[dict[str, Any]]:
        """The audit's newest entries, re-read when the file grew: on an event loop the
        re-read runs in the audit's reader thread (`tail_async`) and the hints use the
        entries read so far until it is done (one poll later at most)."""
        path = getattr(self.audit, "path", None)
        if path is None:
            return []
        try:
            size = path.stat().st_size
        except OSError:
            return []
        if size != self._size:
            tail_async = getattr(self.audit, "tail_async", None)
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is None or not callable(tail_async):
                self._entries = self.audit.tail(self.max_entries)
                self._size = size
            elif self._reload is None or self._reload.done():
                self._reload = loop.create_task(self._read(size))
        return self._entries

    async def _read(self, size: int) -> None:
        try:
            self._entries = await self.audit.tail_async(self.max_entries)
        except Exception:
            log.warning("could not read the audit trail for the playbook hints", exc_info=True)
        self._size = size

    async def ready(self) -> None:
        """Wait for a re-read in flight (tests, the first paint)."""
        if self._reload is not None:
            await asyncio.shield(self._reload)

    def available(self) -> list[str] | None:
        if self.actions is None:
            return None
        return [a.id for a in self.actions.available()]

    def step(self, finding: Finding) -> Step | None:
        if self.book.get(finding.playbook) is None:
            return None
        done_at = self.book.done_at(finding, self.entries())
        step = self.book.next_step(finding, set(done_at), self.available())
        if step is None:
            return None
        step = render_step(step, self.actions)
        if step.waiting:
            step = self._wait_left(step, done_at)
        return step

    def _wait_left(self, step: Step, done_at: Mapping[str, datetime]) -> Step:
        """The seconds left of the wait, counted from the last step done; a wait that is
        over (or has no readable length) leaves only the step to act on."""
        from backends.units import parse_duration

        try:
            length = parse_duration(step.wait)
        except ValueError:
            return replace(step, waiting="", wait="")
        last = max(done_at.values(), default=None)
        now = self.clock()
        left = length - (now - last).total_seconds() if last is not None else 0.0
        if left <= 0:
            return replace(step, waiting="", wait="")
        return replace(step, wait_left=left)

    def __call__(self, finding: Finding) -> tuple[Step, str | None] | None:
        step = self.step(finding)
        return (step, step.key) if step is not None else None
