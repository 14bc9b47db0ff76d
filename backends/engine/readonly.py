"""Read-only (and kiosk) is a property of the process, held by the engine on every path.

`--read-only`, `--kiosk` and `[warroom] read_only = true` set the ActionEngine's
`read_only`; from then on nothing this process does may change anything:

- actions: `ActionEngine.execute` refuses every mutating action (and audits the refusal);
- incidents: `IncidentManager` refuses declare / update / resolve / escalation records
  called directly (audited), and its automatic timeline feeds write nothing;
- escalation: `Notifier` sends nothing (no loop, no flush, no retry, no enqueue);
  a request to send is refused and audited;
- the audit trail: only refusals (and the console's error reports) are written. A
  preview's "dry-run" entry, an automatic failover's entry and any other write are
  dropped; a write-ahead intent is refused (`AuditUnavailable`), so even an action
  that slipped past the check above could not run; the open check at start only
  looks at a torn tail (setting it aside is a write: left to a process that may write,
  or to the first refusal written);
- drills (`warroom drill NAME | --undo | --fix`) are refused before touching the sandbox.

`enforce_read_only(engine)` installs the audit gate and the incident / notifier checks
on a built engine (called by `attach_incidents`, the last step of `build_engine`). The
check is live: `engine.actions.read_only = True` later (the console does it) applies at
once. `refuse(...)` / `refuse_soon(...)` write the refusal entry for paths outside the
ActionEngine and raise `ActionRefused`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from backends.errors import ActionRefused

if TYPE_CHECKING:
    from backends.engine.audit import Entry

log = logging.getLogger(__name__)

READ_ONLY = "warroom is read-only"
ALLOWED_RESULTS = ("refused",)  # what a read-only process may still write to the audit trail
ALLOWED_ACTIONS = ("console.error",)  # the console's crash reports: they record no change


def is_read_only(engine: Any) -> bool:
    actions = getattr(engine, "actions", None)
    return bool(getattr(engine, "read_only", False) or getattr(actions, "read_only", False))


def _allowed(fields: dict[str, Any]) -> bool:
    return fields.get("result") in ALLOWED_RESULTS or fields.get("action") in ALLOWED_ACTIONS


def _dropped(fields: dict[str, Any]) -> dict[str, Any]:
    log.debug("read-only: audit entry not written: %s %s", fields.get("action"), fields.get("result"))
    return {"seq": None, "action": fields.get("action"), "result": fields.get("result"),
            "dropped": READ_ONLY}


def guard_audit(audit: Any, read_only: Callable[[], bool]) -> None:
    """Gate an AuditLog instance's public writers (append, append_async, append_soon):
    while `read_only()`, only refusals pass; intents raise AuditUnavailable; the rest
    is dropped. Idempotent. Works on the instance every part of the engine holds."""
    if audit is None or getattr(audit, "_read_only_gate", None) is not None:
        return
    from backends.engine.audit import AuditUnavailable

    append, append_async, append_soon = audit.append, audit.append_async, audit.append_soon

    def check(fields: dict[str, Any]) -> bool:
        if not read_only() or _allowed(fields):
            return True
        if fields.get("phase") == "intent":
            raise AuditUnavailable(getattr(audit, "path", "?"), READ_ONLY)
        return False

    def gated_append(**fields: Any) -> Entry:
        entry: Entry = append(**fields) if check(fields) else _dropped(fields)
        return entry

    async def gated_append_async(**fields: Any) -> Entry:
        entry: Entry = await append_async(**fields) if check(fields) else _dropped(fields)
        return entry

    def gated_append_soon(**fields: Any) -> asyncio.Future[Entry]:
        if check(fields):
            submitted: asyncio.Future[Entry] = append_soon(**fields)
            return submitted
        fut: asyncio.Future[Entry] = asyncio.get_running_loop().create_future()
        fut.set_result(_dropped(fields))
        return fut

    audit.append, audit.append_async, audit.append_soon = gated_append, gated_append_async, gated_append_soon

    # the engine's start runs the open check, which sets a torn tail aside (a write):
    # read-only, the tail is only looked at (reported by `audit verify`, set aside by a
    # process that may write)
    open_check, open_check_async = getattr(audit, "open_check", None), getattr(audit, "open_check_async", None)
    if callable(open_check) and callable(open_check_async):
        def gated_open_check() -> Any:
            return open_check() if not read_only() else _scan_only(audit)

        async def gated_open_check_async() -> Any:
            if not read_only():
                return await open_check_async()
            return await asyncio.get_running_loop().run_in_executor(None, _scan_only, audit)

        audit.open_check, audit.open_check_async = gated_open_check, gated_open_check_async
    audit._read_only_gate = read_only


def _scan_only(audit: Any) -> Any:
    """The open check without its write: the tail as found (None when there is no file)."""
    from backends.engine.audit import AuditUnavailable, scan_tail

    path = audit.path
    if not path.exists():
        return None
    with path.open("rb") as fh:
        try:
            return scan_tail(fh.fileno())
        except AuditUnavailable as exc:
            raise AuditUnavailable(path, exc.reason) from None


def _refusal(action: str, target: str, reason: str, operator: str | None,
             params: dict[str, Any] | None) -> Entry:
    return dict(action=action, target=target, operator=operator or None, params=params or {}, dry_run=False,
                result="refused", summary=reason)


async def refuse(audit: Any, action: str, target: str = "", reason: str = READ_ONLY, *,
                 operator: str | None = None, params: dict[str, Any] | None = None) -> NoReturn:
    """Write the refusal entry (off the loop) and raise ActionRefused(action, reason)."""
    if audit is not None:
        try:
            await audit.append_async(**_refusal(action, target, reason, operator, params))
        except Exception as exc:  # the refusal stands even when it cannot be written
            log.error("the refusal of %s on %s could not be audited: %s", action, target, exc)
    raise ActionRefused(action, reason)


def refuse_soon(audit: Any, action: str, target: str = "", reason: str = READ_ONLY, *,
                operator: str | None = None, params: dict[str, Any] | None = None) -> NoReturn:
    """`refuse` from sync code: the entry is written in the background (inline without a loop)."""
    if audit is not None:
        fields = _refusal(action, target, reason, operator, params)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            try:
                audit.append(**fields)
            except Exception as exc:
                log.error("the refusal of %s on %s could not be audited: %s", action, target, exc)
        else:
            audit.append_soon(**fields)
    raise ActionRefused(action, reason)


def enforce_read_only(engine: Any) -> None:
    """Install the read-only checks on a built engine (see the module docstring)."""

    def ro() -> bool:
        return is_read_only(engine)

    guard_audit(getattr(engine, "audit", None), ro)
    for part in (getattr(engine, "incidents", None), getattr(engine, "notifier", None)):
        if part is not None:
            part.is_read_only = ro
            part.audit = getattr(engine, "audit", None)


__all__ = ["READ_ONLY", "enforce_read_only", "guard_audit", "is_read_only", "refuse", "refuse_soon"]
