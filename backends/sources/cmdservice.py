"""`[[services]] kind = "command"`: a service whose health is a command's exit code.

`CommandServiceSource` is one monitor source ("command-services") for every command
service. Each poll runs, for every service that is due (its own `interval`), the
service's `status_command` through `CommandTemplate.run` (argv, never a shell; its own
process group killed at the timeout; secrets masked in the output), at most
`MAX_CONCURRENT` at once, and turns the result into a `ServiceReading(kind="command")`:

- exit 0: state "running", status OK; non-zero: state "down", status CRIT, `exit_code`;
- stdout a JSON object with a string `status` / `state` / `health` field (a health
  endpoint printed by `curl`, a small script): an OK word ("ok", "healthy", "up",
  "ready", ...) keeps it healthy, a starting word ("starting", "pending",
  "progressing") makes it WARN (health "starting"), any other word unhealthy (CRIT);
- timed out, or the program cannot be started (not installed): state "unknown",
  status UNKNOWN, with the reason. The source itself stays readable: one broken
  service never hides the others.

`detail` is the last non-empty line of the output (stdout, else stderr) or the exit
code; `latency_ms` the command's duration. A `{service}` placeholder in the argv is
filled with the service's name.

Findings go through `service_findings` (the docker / process rules): "X is down (exit
code 1)" / "X is unhealthy", P0 for role api else P1, the role's playbook unless the
service sets `playbook`. An unknown status is a P2 "cannot check" finding.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from backends.actions.command import CommandResult, CommandTemplate
from backends.engine.rules import RuleContext, register, rule, settings_table
from backends.errors import ActionRefused, BackendError
from backends.model import Finding, ServiceReading, Severity, Status

MAX_CONCURRENT = 4  # status commands running at once
SOURCE_NAME = "command-services"

_OK_WORDS = frozenset({"ok", "okay", "healthy", "up", "running", "ready", "active", "online", "pass",
                       "passing", "green", "available", "serving", "true"})
_STARTING_WORDS = frozenset({"starting", "pending", "progressing", "initializing", "deploying", "warming"})
_JSON_KEYS = ("status", "state", "health")

# service name -> configured playbook (set by the source, read by the rule)


@dataclass(frozen=True, slots=True)
class CommandServiceSpec:
    name: str
    template: CommandTemplate
    interval: float = 10.0
    timeout: float | None = None  # None: the command's own timeout
    depends_on: tuple[str, ...] = ()
    role: str | None = None
    playbook: str | None = None

    @property
    def limit(self) -> float:
        return self.template.timeout if self.timeout is None else min(self.timeout, self.template.timeout)


class CommandServiceSource:
    """A monitor Source: runs every command service's status command at its interval."""

    kind = "command"

    def __init__(self, specs: Iterable[CommandServiceSpec], *, name: str = SOURCE_NAME,
                 max_concurrent: int = MAX_CONCURRENT, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.specs = list(specs)
        if not self.specs:
            raise ValueError("no command service")
        seen: set[str] = set()
        for s in self.specs:
            if s.name in seen:
                raise ValueError(f"duplicate command service {s.name!r}")
            seen.add(s.name)
            s.template.render(self._values(s))  # a bad placeholder is a config error, now
            register("service-playbooks")[s.name] = s.playbook
            if s.role:
                register("roles")[s.name] = s.role
        self.max_concurrent = max(1, int(max_concurrent))
        self.clock = clock
        self.interval = min(s.interval for s in self.specs)
        # a poll runs at most ceil(n / max_concurrent) rounds of commands, each bounded by
        # its timeout plus the kill's grace (2 s): the monitor must not cancel it before
        rounds = math.ceil(len(self.specs) / self.max_concurrent)
        self.timeout = rounds * (max(s.limit for s in self.specs) + 3.0) + 1.0
        self._last: dict[str, ServiceReading] = {}
        self._ran_at: dict[str, float] = {}

    @staticmethod
    def _values(spec: CommandServiceSpec) -> dict[str, Any]:
        return {"service": spec.name} if "service" in spec.template.placeholders else {}

    def due(self, now: float) -> list[CommandServiceSpec]:
        # a little slack: a poll that starts a hair early still runs the service
        return [s for s in self.specs
                if s.name not in self._ran_at or now - self._ran_at[s.name] >= s.interval - 0.05]

    async def poll(self) -> Sequence[ServiceReading]:
        now = self.clock()
        todo = self.due(now)
        sem = asyncio.Semaphore(self.max_concurrent)

        async def one(spec: CommandServiceSpec) -> None:
            async with sem:
                reading = await self.check(spec)
            self._last[spec.name] = reading
            self._ran_at[spec.name] = now

        await asyncio.gather(*(one(s) for s in todo))
        return [self._last[s.name] for s in self.specs if s.name in self._last]

    async def check(self, spec: CommandServiceSpec) -> ServiceReading:
        """Run one status command and judge it (never raises for a service's failure)."""
        base: dict[str, Any] = dict(source=self.name, name=spec.name, kind="command", depends_on=spec.depends_on)
        t0 = time.monotonic()
        try:
            result = await spec.template.run(self._values(spec), timeout=spec.limit)
        except (BackendError, ActionRefused) as exc:
            return ServiceReading(**base, state="unknown", status=Status.UNKNOWN,
                                  latency_ms=(time.monotonic() - t0) * 1000.0,
                                  detail=f"cannot run {spec.template.name}: {exc.reason}")
        return judge(result, base, spec.template.name)

    async def aclose(self) -> None:
        return None


def judge(result: CommandResult, base: dict[str, Any], command: str) -> ServiceReading:
    """A finished status command -> the service's reading."""
    latency = result.duration * 1000.0
    if result.timed_out:
        return ServiceReading(**base, state="unknown", status=Status.UNKNOWN, latency_ms=latency,
                              detail=f"{command} timed out after {result.duration:.1f}s")
    last = _last_line(result.stdout) or _last_line(result.stderr)
    if result.exit_code != 0:
        return ServiceReading(**base, state="down", status=Status.CRIT, exit_code=result.exit_code,
                              latency_ms=latency, detail=last or f"exit {result.exit_code}")
    word = _json_status(result.stdout)
    if word is None:
        return ServiceReading(**base, state="running", status=Status.OK, exit_code=0, latency_ms=latency,
                              detail=last or "exit 0")
    low = word.lower()
    if low in _OK_WORDS:
        health, status = "healthy", Status.OK
    elif low in _STARTING_WORDS:
        health, status = "starting", Status.WARN
    else:
        health, status = "unhealthy", Status.CRIT
    return ServiceReading(**base, state="running", health=health, status=status, exit_code=0,
                          latency_ms=latency, detail=f"status: {word}")


def _last_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()[:300]
    return ""


def _json_status(stdout: str) -> str | None:
    """The `status` / `state` / `health` word of a JSON object on stdout, if any."""
    text = stdout.strip()
    if not text.startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    for key in _JSON_KEYS:
        v = doc.get(key)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str) and v.strip():
            return v.strip()[:60]
    return None


def _playbook(name: str, ctx: RuleContext) -> str | None:
    playbooks = settings_table("service-playbooks", ctx)
    if playbooks.get(name):
        return str(playbooks[name])
    for svc in getattr(getattr(ctx, "config", None), "services", None) or ():
        if getattr(svc, "name", None) == name and getattr(svc, "playbook", None):
            return str(svc.playbook)
    return None


@rule(ServiceReading)
def command_service_rule(r: ServiceReading, ctx: RuleContext) -> Iterable[Finding]:
    if r.kind != "command":
        return
    if r.state == "unknown":
        yield Finding(key=f"service-unknown:{r.name}", severity=Severity.P2, source=r.source,
                      summary=f"cannot check {r.name}: {r.detail or 'status unknown'}",
                      evidence=(r.detail,) if r.detail else (), playbook=None, target=f"service:{r.name}")
        return
    from backends.sources.docker import service_findings

    playbook = _playbook(r.name, ctx)
    for f in service_findings(r, ctx):
        yield replace(f, playbook=playbook) if playbook else f


__all__ = ["CommandServiceSource", "CommandServiceSpec", "MAX_CONCURRENT", "SOURCE_NAME", "judge"]
