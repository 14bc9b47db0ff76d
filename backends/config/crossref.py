"""Cross references between sections: names that must exist, be unique, and not form cycles."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backends.config.base import BAD, Path_
from backends.config.loader import _Loader
from backends.config.model import ServiceConfig


def _ref(ld: _Loader, path: Path_, name: Any, table: Mapping[str, Any] | set[str], section: str,
         extra: tuple[str, ...] = ()) -> bool:
    if name is BAD or name is None:
        return False
    if name in table:
        return True
    have = list(extra) + sorted(table)
    what = {"redis": "[redis.NAME]", "postgres": "[postgres.NAME]", "chain": "[chain.NAME]",
            "commands": "[[commands]]", "services": "[[services]]"}[section]
    ld.error(path, f"{name!r} does not name a {what} entry",
             ("one of: " + ", ".join(have)) if have else f"a {what} entry of that name (none is configured)")
    return False


def _unique(ld: _Loader, path: Path_, names: list[Any], raw: Any, *, key: str = "name",
            expected: str = "names unique within the section") -> None:
    seen: set[Any] = set()
    for i, n in enumerate(names):
        if n is BAD:
            continue
        if n in seen:
            ld.error(path + (i, key), f"duplicate {key} {n!r}", expected)
        seen.add(n)


def _dependency_exists(dep: str, services: set[str], postgres: Mapping[str, object],
                       redis: Mapping[str, object], chains: Mapping[str, object]) -> bool:
    """`dep` names a service, a kind configured (postgres / redis / chain) or one of its tables."""
    if dep in services:
        return True
    kinds: dict[str, Mapping[str, object]] = {"postgres": postgres, "redis": redis, "chain": chains}
    if dep in kinds:
        return bool(kinds[dep])
    kind, _, name = dep.partition(".")
    return kind in kinds and name in kinds[kind]


def _scope_exists(scope: str, services: set[str], postgres: Mapping[str, object],
                  redis: Mapping[str, object], chains: Mapping[str, object]) -> bool:
    return scope in ("global", "host", "docker") or _dependency_exists(scope, services, postgres, redis, chains)


def _check_cycles(ld: _Loader, services: list[ServiceConfig]) -> None:
    graph: dict[str, list[str]] = {}
    for s in services:
        if s.name is not BAD and s.depends_on is not BAD:
            graph.setdefault(s.name, [d for d in s.depends_on if d != s.name])
    state: dict[str, int] = {}

    def visit(n: str, trail: list[str]) -> None:
        state[n] = 1
        for d in graph.get(n, []):
            if d not in graph:
                continue
            if state.get(d) == 1:
                cycle = trail[trail.index(d):] + [d] if d in trail else [n, d]
                i = next(i for i, s in enumerate(services) if s.name == n)
                ld.error(("services", i, "depends_on"), "dependency cycle: " + " -> ".join(cycle),
                         "depends_on without cycles")
            elif state.get(d) is None:
                visit(d, trail + [d])
        state[n] = 2

    for n in graph:
        if state.get(n) is None:
            visit(n, [n])


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------
