"""Readings -> findings.

Rules are plain functions registered per reading type with `@rule(ReadingType)`;
each takes `(reading, ctx)` and yields `Finding`s. Domain modules register their
rules at import; `evaluate()` imports them (they import their heavy libraries
lazily, so this stays cheap) and runs every rule over the snapshot. A degraded
source is a finding of its own. Thresholds default to the seeds' values and come
from `RuleContext.config` when a config is loaded.

Findings carry severity P0-P3, a one-line summary, evidence lines and the id of
the playbook they point to (see `backends/playbooks.py`).
"""

from __future__ import annotations

import importlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .model import Finding, Reading, Severity, Snapshot, SourceState

log = logging.getLogger(__name__)

RuleFn = Callable[[Any, "RuleContext"], Iterable[Finding]]
_RULES: dict[type, list[RuleFn]] = defaultdict(list)
_SNAPSHOT_RULES: list[Callable[[Snapshot, RuleContext], Iterable[Finding]]] = []

# Modules that register rules. Each must import cheaply (no heavy libraries at import).
RULE_MODULES = (
    "backends.docker",
    "backends.process",
    "backends.http",
    "backends.postgres",
    "backends.redis",
    "backends.breakers",
    "backends.orders",
    "backends.evm",
    "backends.jsonrpc",
    "backends.logs",
    "backends.checks",
    "backends.cmdservice",
)
_loaded = False


@dataclass
class RuleContext:
    config: Any = None  # backends.config.Config, when loaded
    extra: dict[str, Any] = field(default_factory=dict)


def rule(*types: type) -> Callable[[RuleFn], RuleFn]:
    def deco(fn: RuleFn) -> RuleFn:
        for t in types:
            if fn not in _RULES[t]:
                _RULES[t].append(fn)
        return fn

    return deco


def snapshot_rule(fn: Callable[[Snapshot, RuleContext], Iterable[Finding]]):
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
