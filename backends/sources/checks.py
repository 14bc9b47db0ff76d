"""Extra value checks from `[[checks]]`: SQL (`kind = "sql"`) and JSON-RPC (`kind = "jsonrpc"`).

A SQL check runs the configured query (fixed text from the config file, never from
operator input; read-only transaction, statement timeout) on the shared pool and
reads the first column of the first row. A JSON-RPC check calls one method with
fixed params and reads the result (a `path` picks a field: "a.b.0"). Both compare the
value with warn/crit thresholds (above or below) and produce a `CheckReading`; a
failed check is a CRIT reading with the reason (the check ran, its target is down).
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from backends.engine.rules import RuleContext, register, rule, settings_table
from backends.errors import BackendError, describe_exception
from backends.model import CheckReading, Finding, Severity, Status

if TYPE_CHECKING:
    from backends.sources.jsonrpc import HttpRpc
    from backends.sources.postgres import Connection


def _pick(value: Any, path: str | None) -> Any:
    for part in (path or "").split("."):
        if not part:
            continue
        if isinstance(value, list | tuple):
            value = value[int(part)]
        elif isinstance(value, dict):
            value = value[part]
        else:
            raise KeyError(part)
    return value


def grade(value: Any, *, warn_above: float | None = None, crit_above: float | None = None,
          warn_below: float | None = None, crit_below: float | None = None) -> Status:
    try:
        v = float(int(value, 16)) if isinstance(value, str) and value.startswith("0x") else float(value)
    except (TypeError, ValueError):
        return Status.OK if value not in (None, False) else Status.CRIT
    if (crit_above is not None and v > crit_above) or (crit_below is not None and v < crit_below):
        return Status.CRIT
    if (warn_above is not None and v > warn_above) or (warn_below is not None and v < warn_below):
        return Status.WARN
    return Status.OK


class ValueCheck:
    """A monitor source for one sql / jsonrpc check."""

    def __init__(self, cfg: Any, *, dsn: Any = None, interval: float = 10.0, timeout: float = 5.0):
        self.cfg = cfg
        self.name = f"check.{cfg.name}"
        self.kind = cfg.kind
        self.dsn = dsn
        self.interval = cfg.interval or interval
        self.timeout = cfg.timeout or timeout
        self.history: deque[float] = deque(maxlen=30)
        self._rpc: HttpRpc | None = None
        register("checks")[(self.name, cfg.name)] = (cfg.severity, cfg.playbook)

    async def _value(self) -> Any:
        c = self.cfg
        budget = self.timeout * 0.9
        if c.kind == "sql":
            from backends.sources.postgres import run

            async def q(con: Connection) -> Any:  # a value of any column type
                async with con.transaction(readonly=True):
                    return await con.fetchval(c.query)

            return await run(self.dsn, q, source=self.name, timeout=budget, statement_timeout=budget)
        if c.kind == "jsonrpc":
            from backends.config import Secret
            from backends.sources.jsonrpc import HttpRpc

            if self._rpc is None:
                url = c.url.reveal() if isinstance(c.url, Secret) else str(c.url)
                self._rpc = HttpRpc(url, timeout=budget, source=self.name)
            result = await self._rpc.call(c.method, list(c.params), time_limit=budget)
            return _pick(result, c.path)
        raise BackendError(self.name, f"check kind {c.kind!r} is not a value check")

    async def poll(self) -> Sequence[CheckReading]:
        c = self.cfg
        t0 = time.perf_counter()
        try:
            value = await self._value()
        except Exception as exc:
            return [CheckReading(source=self.name, name=c.name, kind=c.kind, ok=False, status=Status.CRIT,
                                 detail=describe_exception(exc))]
        ms = (time.perf_counter() - t0) * 1000
        status = grade(value, warn_above=c.warn_above, crit_above=c.crit_above,
                       warn_below=c.warn_below, crit_below=c.crit_below)
        if isinstance(value, str) and value.startswith("0x"):
            from backends.sources.evm import role_name

            with contextlib.suppress(ValueError):
                # a 32-byte word that is an AccessControl role id: its name, never a 77-digit number
                value = (role_name(value) if len(value) == 66 else None) or int(value, 16)
        with contextlib.suppress(TypeError, ValueError):
            self.history.append(float(value))
        return [CheckReading(source=self.name, name=c.name, kind=c.kind, ok=status is Status.OK, status=status,
                             value=value, latency_ms=ms, history=tuple(self.history),
                             detail=f"value {value!r}")]

    async def aclose(self) -> None:
        if self._rpc is not None:
            await self._rpc.aclose()


@rule(CheckReading)
def value_check_rules(r: CheckReading, ctx: RuleContext) -> Iterable[Finding]:
    if r.kind not in ("sql", "jsonrpc"):
        return
    severity, playbook = settings_table("checks", ctx).get((r.source, r.name), (Severity.P2, None))
    if r.status is Status.CRIT:
        yield Finding(key=f"check:{r.source}", severity=severity, source=r.source,
                      summary=f"{r.name}: {r.detail or 'check failed'}", playbook=playbook,
                      target=f"check:{r.name}")
    elif r.status is Status.WARN:
        yield Finding(key=f"check:{r.source}", severity=Severity.P3, source=r.source,
                      summary=f"{r.name}: {r.detail} above its warning threshold", playbook=playbook,
                      target=f"check:{r.name}")
