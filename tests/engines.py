"""Engines for console tests: the real `backends.engine.core.Engine` around the parts a test
builds (a monitor with function sources or a fixed snapshot, an action engine on a tmp
audit), so the console sees exactly the interface it depends on (backends.interface.EngineLike)
and nothing is probed."""

from __future__ import annotations

from typing import Any

from backends.actions.base import ActionEngine
from backends.engine.core import Engine


def engine_of(monitor: Any, actions: ActionEngine, *, config: Any = None, logs: Any = None,
              audit: Any = None, incidents: Any = None, notifier: Any = None, shared: Any = None) -> Engine:
    return Engine(config=config, monitor=monitor, actions=actions, audit=audit or actions.audit, logs=logs,
                  read_only=actions.read_only, incidents=incidents, notifier=notifier, shared=shared)
