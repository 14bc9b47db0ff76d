"""The engine's interface as the console sees it, stated once.

`EngineLike` is what tui/ and widgets/ may use of an engine: the monitor (readings and
findings), the action engine (plan/execute, guarded and audited), the audit log, the
config, the log hub, incidents, the shared state, the notifier and the clock every part of
it reads the time from (backends/clock.py; the console's clock is the engine's). `backends.engine.core.Engine`
satisfies it; tests may pass any object with these attributes. The optional parts
(logs, shared, incidents, notifier) are None when not configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from backends.actions.base import ActionEngine
    from backends.clock import Clock
    from backends.engine.audit import AuditLog
    from backends.engine.monitor import Monitor


@runtime_checkable
class EngineLike(Protocol):
    """What the console uses of an engine (see backends.engine.core.Engine)."""

    # read-only properties: an engine may hold a subclass (a replay's monitor is a Monitor
    # with no source), which a settable protocol attribute would refuse (invariance)
    @property
    def config(self) -> Any: ...

    @property
    def monitor(self) -> Monitor: ...

    @property
    def actions(self) -> ActionEngine: ...

    @property
    def audit(self) -> AuditLog: ...

    @property
    def read_only(self) -> bool: ...

    @property
    def logs(self) -> Any: ...  # backends.sources.logs.LogHub or None

    @property
    def log_buffer(self) -> int: ...  # log lines kept ([warroom] log_buffer): the hub's and the Logs pane's

    @property
    def shared(self) -> Any: ...  # backends.engine.shared.SharedState or None

    @property
    def incidents(self) -> Any: ...  # backends.engine.incidents.IncidentManager or None

    @property
    def notifier(self) -> Any: ...  # backends.actions.notify.Notifier or None

    @property
    def clock(self) -> Clock: ...  # where the engine reads the time (backends.clock.SystemClock by default)

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


__all__ = ["EngineLike"]
