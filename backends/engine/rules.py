"""Readings -> findings.

Rules are plain functions registered per reading type with `@rule(ReadingType)`;
each takes `(reading, ctx)` and yields `Finding`s. Domain modules register their
rules at import; `evaluate()` imports them (they import their heavy libraries
lazily, so this stays cheap) and runs every rule over the snapshot. A degraded
source is a finding of its own. Thresholds default to the seeds' values and come
from `RuleContext.config` when a config is loaded.

Findings carry severity P0-P3, a one-line summary, evidence lines and the id of
the playbook they point to (see `backends/engine/playbooks.py`).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from backends.clock import SYSTEM_CLOCK, Clock
from backends.model import Finding, Reading, Severity, Snapshot, SourceState

log = logging.getLogger(__name__)

RuleFn = Callable[[Any, "RuleContext"], Iterable[Finding]]
_RULES: dict[type, list[RuleFn]] = defaultdict(list)
SnapshotRule = Callable[[Snapshot, "RuleContext"], Iterable[Finding]]
_SNAPSHOT_RULES: list[SnapshotRule] = []

# Modules that register rules. Each must import cheaply (no heavy libraries at import).
RULE_MODULES = (
    "backends.sources.docker",
    "backends.sources.process",
    "backends.sources.http",
    "backends.sources.postgres",
    "backends.sources.redis",
    "backends.sources.breakers",
    "backends.sources.orders",
    "backends.sources.evm",
    "backends.sources.jsonrpc",
    "backends.sources.integrity",
    "backends.sources.rpcscore",
    "backends.sources.guardrails",
    "backends.sources.neo",
    "backends.sources.logs",
    "backends.sources.checks",
    "backends.sources.cmdservice",
    "backends.sources.alertmanager",
)
_loaded = False


class RuleSettings:
    """What the rules need to know of the sources an engine built (thresholds, severities,
    playbooks, roles), by table ("postgres", "http", ...). One per engine: a second
    engine in the same process (tests, `serve` with several tabs, replay) never changes
    the first one's judgement."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[Any, Any]] = {}

    def table(self, name: str) -> dict[Any, Any]:
        return self._tables.setdefault(name, {})


# Sources built outside an engine (scripts, unit tests) register here; an engine's
# builder sets its own RuleSettings for the sources it builds (`building`).
_UNBOUND = RuleSettings()
_BUILDING: contextvars.ContextVar[RuleSettings | None] = contextvars.ContextVar("warroom_rule_settings",
                                                                                 default=None)


@contextlib.contextmanager
def building(settings: RuleSettings) -> Iterator[RuleSettings]:
    """Sources constructed inside this block register their rule settings in `settings`."""
    token = _BUILDING.set(settings)
    try:
        yield settings
    finally:
        _BUILDING.reset(token)


def unbound_entries(source: str | None) -> dict[str, dict[Any, Any]]:
    """Entries sources built outside an engine registered for `source` (keyed by its name,
    or by (name, check))."""
    out: dict[str, dict[Any, Any]] = {}
    if not source:
        return out
    for table, entries in _UNBOUND._tables.items():
        mine = {k: v for k, v in entries.items() if k == source or (isinstance(k, tuple) and k[:1] == (source,))}
        if mine:
            out[table] = mine
    return out


def current_settings() -> RuleSettings:
    """The RuleSettings sources built now register in (an engine's while it builds them)."""
    return _BUILDING.get() or _UNBOUND


def register(table: str) -> dict[Any, Any]:
    """The table a source being built writes its rule settings to (the engine's)."""
    return (_BUILDING.get() or _UNBOUND).table(table)


@dataclass
class RuleContext:
    config: Any = None  # backends.config.Config, when loaded
    extra: dict[str, Any] = field(default_factory=dict)
    settings: RuleSettings | None = None  # the engine's; None: sources built outside an engine
    clock: Clock = SYSTEM_CLOCK  # the engine's: a rule that needs "now" asks `ctx.now()`, never the system

    def now(self) -> datetime:
        """The engine's now (aware, UTC): what a rule measures ages and windows against."""
        return self.clock.now()

    def table(self, name: str) -> dict[Any, Any]:
        """The rule settings table `name` of this engine's sources."""
        return (self.settings or _UNBOUND).table(name)


def settings_table(name: str, ctx: RuleContext | None) -> dict[Any, Any]:
    return ctx.table(name) if ctx is not None else _UNBOUND.table(name)


def rule(*types: type) -> Callable[[RuleFn], RuleFn]:
    def deco(fn: RuleFn) -> RuleFn:
        for t in types:
            if fn not in _RULES[t]:
                _RULES[t].append(fn)
        return fn

    return deco


def snapshot_rule(fn: SnapshotRule) -> SnapshotRule:
    """A rule over the whole snapshot (e.g. "all breakers open", "system down")."""
    if fn not in _SNAPSHOT_RULES:
        _SNAPSHOT_RULES.append(fn)
    return fn


def load_rule_modules() -> None:
    global _loaded
    if _loaded:
        return
    for name in RULE_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real missing dependency inside the module
                raise
    _loaded = True


def degraded_findings(snapshot: Snapshot) -> list[Finding]:
    out = []
    for name, st in snapshot.sources.items():
        if st.state is SourceState.DEGRADED:
            since = st.last_good.isoformat(timespec="seconds") if st.last_good else "never"
            out.append(
                Finding(
                    key=f"degraded:{name}",
                    severity=Severity.P2,
                    source=name,
                    summary=f"{name} cannot be read: {st.reason}",
                    evidence=(f"last good reading: {since}", f"consecutive failures: {st.failures}"),
                    playbook=None,
                )
            )
    return out


def evaluate(snapshot: Snapshot, ctx: RuleContext | None = None) -> list[Finding]:
    load_rule_modules()
    ctx = ctx or RuleContext()
    findings: list[Finding] = degraded_findings(snapshot)
    for readings in snapshot.readings.values():
        for reading in readings:
            for t in type(reading).__mro__:
                if t is Reading or t is object:
                    continue
                for fn in _RULES.get(t, ()):
                    try:
                        findings.extend(fn(reading, ctx))
                    except Exception:
                        log.exception("rule %s failed", getattr(fn, "__name__", fn))
    for fn in _SNAPSHOT_RULES:
        try:
            findings.extend(fn(snapshot, ctx))
        except Exception:
            log.exception("snapshot rule %s failed", getattr(fn, "__name__", fn))
    # one finding per key, worst severity wins
    best: dict[str, Finding] = {}
    for f in findings:
        cur = best.get(f.key)
        if cur is None or f.severity < cur.severity:
            best[f.key] = f
    return sorted(best.values(), key=Finding.sort_key)


def make_rules(ctx: RuleContext | None = None) -> Callable[[Snapshot], list[Finding]]:
    """The function the monitor calls after each poll."""
    return lambda snap: evaluate(snap, ctx)
