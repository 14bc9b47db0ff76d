"""The action contract: guard -> plan (dry-run preview) -> confirm -> execute -> audit.

An `Action` turns validated parameters into an `ActionPlan`: the target, the exact
change (rows before/after, containers, a transaction and its eth_call result), its
guard (a precondition, shown green or red), its danger level and a preview text.
Planning never changes anything. `ActionEngine.execute` then:

1. refuses if the engine is read-only (the engine, not just the UI);
2. checks the confirmation the danger level needs (`typed`: the exact target/count);
3. takes the lock on the target (one action per target at a time, across consoles
   when a shared lock manager is configured);
4. re-checks the guard;
5. writes the *intent* entry (who, what, the plan, the reason) to the audit trail and
   waits until it is on disk (fsynced, in the audit's writer thread: the loop goes on);
   when it cannot be written (disk full, read-only file system, a torn tail that cannot
   be set aside) the action is refused and nothing is executed (write-ahead);
6. executes, reporting progress (`audit.CURRENT_INTENT` names the intent meanwhile);
7. writes the *outcome* entry (`intent: <its seq>`) whatever the outcome. When that
   cannot be written the change stands and the result says so; `warroom audit verify`
   lists the intent as "started, outcome unknown".

Refusals (read-only, confirmation, lock, guard) write one entry and no intent; when the
audit cannot take even that, the refusal stands and a warning is logged. Actions that
do not mutate (`mutating = False`) write only their result entry.

Bad operator input raises `ActionRefused` from `plan()` before anything is touched.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import enum
import fcntl
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from backends.engine.audit import (
    CURRENT_INTENT,
    AuditLog,
    AuditUnavailable,
    Entry,
    operator_identity,
)
from backends.errors import ActionRefused, LockHeld, describe_exception
from backends.model import utcnow

log = logging.getLogger(__name__)


class Danger(enum.Enum):
    SAFE = "safe"  # enter is enough (or no confirmation at all in the CLI with --execute)
    CONFIRM = "confirm"  # explicit yes
    TYPED = "typed"  # type the target or the count


@dataclass(frozen=True, slots=True)
class Guard:
    ok: bool
    description: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Change:
    """One concrete change: a row, a container, a transaction."""

    target: str
    description: str
    before: Any = None
    after: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionPlan:
    action: str
    title: str
    target: str
    changes: tuple[Change, ...] = ()
    guard: Guard = Guard(True, "no precondition")
    danger: Danger = Danger.CONFIRM
    params: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None
    reason_required: bool = False
    confirm_text: str | None = None  # what must be typed for Danger.TYPED
    can_dry_run: bool = True
    preview: str = ""
    lock_key: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    total: int | None = None  # units of work, for progress bars
    notes: tuple[str, ...] = ()

    @property
    def expected_confirmation(self) -> str | None:
        if self.danger is Danger.TYPED:
            return self.confirm_text or self.target
        return None


@dataclass(frozen=True, slots=True)
class Progress:
    done: int
    total: int | None
    message: str = ""


ProgressFn = Callable[[Progress], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionResult:
    status: str  # ok | failed | partial | skipped | refused
    summary: str
    before: Any = None
    after: Any = None
    counts: Mapping[str, int] = field(default_factory=dict)
    details: tuple[str, ...] = ()
    finished_at: datetime = field(default_factory=utcnow)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Action(abc.ABC):
    """One kind of operation. Subclasses are registered on the engine."""

    id: str = ""
    title: str = ""
    mutating: bool = True
    danger: Danger = Danger.CONFIRM
    reason_required: bool = False
    description: str = ""

    @abc.abstractmethod
    async def plan(self, **params: Any) -> ActionPlan:
        """Validate input (raise ActionRefused) and describe exactly what would change."""

    async def check_guard(self, plan: ActionPlan) -> Guard:
        """Re-check the precondition right before executing. Default: the planned guard."""
        return plan.guard

    @abc.abstractmethod
    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        """Apply the change idempotently."""


# --------------------------------------------------------------------------- locks


class LockManager(abc.ABC):
    @abc.abstractmethod
    def hold(self, key: str, holder: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the lock on `key`; raise LockHeld(action, key, holder_of_lock) if taken."""


class LocalLocks(LockManager):
    """Locks shared by the warroom processes of one box: `fcntl` locks on files in a folder."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)

    @contextlib.asynccontextmanager
    async def hold(self, key: str, holder: str) -> AsyncIterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock"
        path = self.folder / name
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = path.read_text(errors="replace").strip() or "another console"
                raise LockHeld("lock", key, other) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{holder} since {utcnow().isoformat(timespec='seconds')}".encode())
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- engine


class ActionEngine:
    def __init__(
        self,
        audit: AuditLog,
        *,
        read_only: bool = False,
        operator: str | None = None,
        locks: LockManager | None = None,
    ) -> None:
        self.audit = audit
        self.read_only = read_only
        self.operator = operator or operator_identity()
        self.locks = locks
        self._actions: dict[str, Action] = {}
        self._running: set[str] = set()
        self.history: list[tuple[ActionPlan, ActionResult]] = []
        self._listeners: list[Callable[[ActionPlan, ActionResult], None]] = []

    # registry ----------------------------------------------------------------

    def register(self, action: Action) -> Action:
        if not action.id:
            raise ValueError("action has no id")
        self._actions[action.id] = action
        return action

    def get(self, action_id: str) -> Action:
        try:
            return self._actions[action_id]
        except KeyError:
            raise ActionRefused(action_id, "no such action") from None

    def available(self) -> list[Action]:
        """Actions that may run now: none that mutate when read-only."""
        return [a for a in self._actions.values() if not (self.read_only and a.mutating)]

    def on_result(self, fn: Callable[[ActionPlan, ActionResult], None]) -> None:
        self._listeners.append(fn)

    # flow ----------------------------------------------------------------------

    async def plan(self, action_id: str, **params: Any) -> ActionPlan:
        """Build the plan (the dry-run). Allowed in read-only: it changes nothing."""
        action = self.get(action_id)
        reason = params.get("reason")
        if isinstance(reason, str):
            params["reason"] = reason.strip() or None
        plan = await action.plan(**params)
        if plan.reason is None and params.get("reason"):
            plan = replace(plan, reason=params["reason"])
        return plan

    def record_dry_run(self, plan: ActionPlan, *, result: str = "previewed", summary: str | None = None) -> Entry:
        """Write the audit entry of a preview that was shown and not executed (`result`:
        "previewed", or "cancelled" when the operator closed the modal). Blocking: on the
        console's event loop use `record_dry_run_async`."""
        return self.audit.append(**self._dry_run_fields(plan, result, summary))

    async def record_dry_run_async(self, plan: ActionPlan, *, result: str = "previewed",
                                   summary: str | None = None) -> Entry:
        """`record_dry_run` with the disk write off the event loop."""
        return await self.audit.append_async(**self._dry_run_fields(plan, result, summary))

    def record_dry_run_soon(self, plan: ActionPlan, *, result: str = "previewed",
                            summary: str | None = None) -> asyncio.Future[Entry]:
        """From a key handler (sync code on the loop): written in the background
        (`AuditLog.append_soon`); the engine's stop waits for it."""
        return self.audit.append_soon(**self._dry_run_fields(plan, result, summary))

    def _plan_fields(self, plan: ActionPlan, *, dry_run: bool) -> dict[str, Any]:
        """What every audit entry of a plan says: the action, its target, who, with what and why."""
        return dict(action=plan.action, target=plan.target, operator=self.operator, params=plan.params,
                    reason=plan.reason, dry_run=dry_run)

    def _dry_run_fields(self, plan: ActionPlan, result: str, summary: str | None) -> dict[str, Any]:
        return dict(
            **self._plan_fields(plan, dry_run=True),
            before=[c.before for c in plan.changes],
            after=[c.after for c in plan.changes],
            result=result,
            summary=summary or f"dry-run: {len(plan.changes)} change(s)",
        )

    async def execute(
        self,
        plan: ActionPlan,
        *,
        confirmation: str | bool | None = None,
        progress: ProgressFn | None = None,
    ) -> ActionResult:
        action = self.get(plan.action)
        progress = progress or (lambda p: None)
        try:
            self._check_allowed(action, plan, confirmation)
        except ActionRefused as exc:
            result = ActionResult(status="refused", summary=exc.reason)
            await self._audit(plan, result)
            raise
        if action.mutating:  # write-ahead: no lock taken, no guard run, when the intent cannot fit
            problem = await self._audit_problem()
            if problem:
                summary = f"not executed: the audit trail cannot be written ({problem})"
                log.error("%s on %s refused: %s", plan.action, plan.target, summary)
                await self._audit(plan, ActionResult(status="refused", summary=summary))
                raise ActionRefused(plan.action, summary)
        lock_key = plan.lock_key or plan.target
        if lock_key in self._running:
            result = ActionResult(status="refused", summary=f"an action on {lock_key} is already running")
            await self._audit(plan, result)
            raise ActionRefused(plan.action, result.summary)
        self._running.add(lock_key)
        intent: int | None = None
        try:
            async with self._lock(lock_key, plan):
                try:
                    guard = await action.check_guard(plan)
                except (ActionRefused, asyncio.CancelledError):
                    raise
                except Exception as exc:  # e.g. the database refused the guard's query: nothing done
                    guard = Guard(False, "the guard could not be checked", describe_exception(exc))
                if not guard.ok:
                    result = ActionResult(
                        status="refused",
                        summary=f"guard failed: {guard.description}" + (f" ({guard.detail})" if guard.detail else ""),
                    )
                else:
                    if action.mutating:
                        intent = await self._write_intent(plan)  # raises ActionRefused: nothing done
                    token = CURRENT_INTENT.set(intent)
                    try:
                        result = await action.execute(plan, progress)
                    except asyncio.CancelledError:
                        result = ActionResult(status="failed", summary="cancelled while running")
                        # written inline: a cancelled task (quit, shutdown) may not get to await
                        try:
                            self.audit.append(**self._audit_fields(plan, result, intent))
                        except AuditUnavailable as exc:
                            log.error("the outcome of %s on %s (cancelled) could not be audited: %s",
                                      plan.action, plan.target, exc.reason)
                        raise
                    except ActionRefused as exc:
                        result = ActionResult(status="refused", summary=exc.reason)
                    except Exception as exc:
                        result = ActionResult(status="failed", summary=describe_exception(exc))
                    finally:
                        CURRENT_INTENT.reset(token)
        except LockHeld as exc:
            result = ActionResult(status="refused", summary=f"{exc.target} is locked by {exc.holder}")
            await self._audit(plan, result)
            raise ActionRefused(plan.action, result.summary) from None
        except OSError as exc:
            if intent is not None:  # after the change: only the lock's release failed
                raise
            result = ActionResult(status="refused", summary=f"not executed: its lock on {lock_key} could not be "
                                  f"taken ({describe_exception(exc)})")
            await self._audit(plan, result)
            raise ActionRefused(plan.action, result.summary) from None
        finally:
            self._running.discard(lock_key)
        if not await self._audit(plan, result, intent) and intent is not None:
            result = replace(result, details=(*result.details,
                             f"the outcome could not be written to the audit trail {self.audit.path}: "
                             f"`warroom audit verify` lists intent #{intent} as started, outcome unknown"))
        self.history.append((plan, result))
        for fn in list(self._listeners):
            with contextlib.suppress(Exception):
                fn(plan, result)
        return result

    async def _write_intent(self, plan: ActionPlan) -> int:
        """The write-ahead entry; its seq. Refuses the action when it cannot be written."""
        try:
            entry = await self.audit.append_async(**self._intent_fields(plan))
        except AuditUnavailable as exc:
            summary = f"not executed: the audit trail cannot be written ({exc.reason})"
            log.error("%s on %s refused: %s", plan.action, plan.target, summary)
            raise ActionRefused(plan.action, summary) from None
        return int(entry["seq"])

    # helpers -------------------------------------------------------------------

    async def _audit_problem(self) -> str | None:
        """Why the audit trail cannot take an entry now (disk full, read-only file system,
        permissions), as far as a look tells; None when it can (or the log cannot say)."""
        look = getattr(self.audit, "write_problem_async", None)
        if not callable(look):
            return None
        try:
            return await asyncio.wait_for(look(), 5.0)
        except TimeoutError:
            return "its file system did not answer in 5s"
        except Exception as exc:  # a look that fails is not a reason to refuse; the write will tell
            log.warning("could not look whether the audit can be written: %s", describe_exception(exc))
            return None

    def _check_allowed(self, action: Action, plan: ActionPlan, confirmation: str | bool | None) -> None:
        if action.mutating and self.read_only:
            raise ActionRefused(plan.action, "warroom is read-only")
        if (plan.reason_required or action.reason_required) and not (plan.reason or "").strip():
            raise ActionRefused(plan.action, "a reason is required")
        if plan.danger is Danger.CONFIRM and confirmation not in (True, "yes", "y"):
            raise ActionRefused(plan.action, "not confirmed")
        if plan.danger is Danger.TYPED:
            expected = plan.expected_confirmation
            if not isinstance(confirmation, str) or confirmation.strip() != str(expected):
                raise ActionRefused(plan.action, f"confirmation does not match: type {expected!r}")

    @contextlib.asynccontextmanager
    async def _lock(self, key: str, plan: ActionPlan) -> AsyncIterator[None]:
        if self.locks is None:
            yield
            return
        async with self.locks.hold(key, f"{self.operator} ({plan.action})"):
            yield

    async def _audit(self, plan: ActionPlan, result: ActionResult, intent: int | None = None) -> bool:
        """The entry of an executed (or refused) action; the disk write runs off the loop.
        False (and a logged error) when it could not be written."""
        try:
            await self.audit.append_async(**self._audit_fields(plan, result, intent))
        except AuditUnavailable as exc:
            log.error("the %s of %s on %s could not be audited: %s", "outcome" if intent else "result",
                      plan.action, plan.target, exc.reason)
            return False
        return True

    def _intent_fields(self, plan: ActionPlan) -> dict[str, Any]:
        return dict(
            **self._plan_fields(plan, dry_run=False),
            before=[c.before for c in plan.changes],
            after=[c.after for c in plan.changes],
            result="started",
            summary=f"started: {plan.title or plan.action} ({len(plan.changes)} change(s))",
            phase="intent",
            plan={"title": plan.title, "danger": plan.danger.value, "total": plan.total,
                  "guard": plan.guard.description, "preview": (plan.preview or "")[:4000],
                  "changes": [{"target": c.target, "description": c.description} for c in plan.changes[:200]]},
        )

    def _audit_fields(self, plan: ActionPlan, result: ActionResult, intent: int | None = None) -> dict[str, Any]:
        return dict(
            **self._plan_fields(plan, dry_run=False),
            before=result.before if result.before is not None else [c.before for c in plan.changes],
            after=result.after,
            result=result.status,
            summary=result.summary,
            extra={"counts": dict(result.counts)} if result.counts else None,
            phase="outcome" if intent is not None else None,
            intent=intent,
        )
