"""The engine: config -> sources, actions, audit, logs. Shared by the console and the CLI.

`build_engine(config)` turns a loaded `Config` into an `Engine` holding the monitor
(every configured source), the action engine (every action those sources offer,
plus routers such as `service.restart` that pick the right backend by service
name), the audit log and the log hub. Nothing connects until `start()` or a poll:
adapters create their pools and clients lazily.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .actions import Action, ActionEngine, ActionPlan, ActionResult, Danger, LocalLocks, ProgressFn
from .audit import AuditLog, operator_identity
from .errors import ActionRefused
from .monitor import Monitor, Source
from .rules import RuleContext, make_rules

log = logging.getLogger(__name__)

DEFAULT_LOG_BUFFER = 10_000  # = backends.logs.DEFAULT_BUFFER (not imported: logs is loaded lazily)


class RouterAction(Action):
    """`service.restart` & co.: delegates planning to the backend that owns the service.

    The plan it returns names the backend's own action (e.g. `docker.restart`), so
    execution, guard re-check and audit are the backend action's.
    """

    def __init__(self, action_id: str, title: str, engine: ActionEngine, danger: Danger = Danger.CONFIRM):
        self.id = action_id
        self.title = title
        self.danger = danger
        self.engine = engine
        self.routes: dict[str, str] = {}  # service name -> backend action id

    def add(self, service: str, action_id: str) -> None:
        self.routes.setdefault(service, action_id)

    async def plan(self, *, service: str = "", **params: Any) -> ActionPlan:
        if not service:
            raise ActionRefused(self.id, "no service given")
        target = self.routes.get(service)
        if target is None:
            known = ", ".join(sorted(self.routes)) or "none"
            raise ActionRefused(self.id, f"no way to {self.title.lower()} {service!r} is configured (known: {known})")
        return await self.engine.plan(target, service=service, **params)

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:  # pragma: no cover
        raise ActionRefused(self.id, "router actions never execute themselves")


class ScaleRouter(RouterAction):
    """`service.scale`: `replicas` is in plan()'s signature so the console's form asks for it."""

    async def plan(self, *, service: str = "", replicas: Any = None, **params: Any) -> ActionPlan:
        if replicas is not None:
            params["replicas"] = replicas
        return await super().plan(service=service, **params)


@dataclass
class Engine:
    config: Any
    monitor: Monitor
    actions: ActionEngine
    audit: AuditLog
    logs: Any = None  # backends.logs.LogHub
    read_only: bool = False
    closers: list[Callable[[], Any]] = field(default_factory=list)
    parts: dict[str, Any] = field(default_factory=dict)  # built adapters by name, for the CLI and tests
    starters: list[Callable[[], Any]] = field(default_factory=list)  # shared state, incidents, notifier
    shared: Any = None  # backends.shared.SharedState when a [postgres.NAME] has shared = true
    incidents: Any = None  # backends.incidents.IncidentManager
    notifier: Any = None  # backends.notify.Notifier

    @property
    def log_buffer(self) -> int:
        """Log lines kept in memory ([warroom] log_buffer): the hub's buffer, and the Logs pane's."""
        w = getattr(self.config, "warroom", None)
        return int(getattr(w, "log_buffer", 0) or DEFAULT_LOG_BUFFER)

    async def start(self) -> None:
        for start in self.starters:
            await start()
        if self.logs is not None:
            await self.logs.start()
        await self.monitor.start()

    async def stop(self) -> None:
        """Stop polling and release every pool, client and session (idempotent)."""
        import sys

        with contextlib.suppress(Exception):
            await self.audit.flush()  # audit entries still being written
        await self.monitor.stop()
        if self.logs is not None:
            with contextlib.suppress(Exception):
                await self.logs.stop()
        closers = list(self.closers)
        for src in self.monitor.sources.values():
            closers.append(getattr(src, "aclose", None) or getattr(src, "close", None))
        for mod, fn in (("backends.http", "close_sessions"), ("backends.postgres", "close_pools"),
                        ("backends.redis", "close_clients")):
            m = sys.modules.get(mod)
            closers.append(getattr(m, fn, None) if m else None)
        for close in reversed(closers):
            if close is None:
                continue
            with contextlib.suppress(Exception):
                res = close()
                if hasattr(res, "__await__"):
                    await asyncio.wait_for(res, 5)

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


def build_engine(
    config: Any,
    *,
    read_only: bool | None = None,
    operator: str | None = None,
    sources: Iterable[Source] = (),
    with_logs: bool = True,
    password_provider: Any = None,
) -> Engine:
    """Build the engine for a loaded config. `config=None` gives an empty engine."""
    ro = bool(read_only) if read_only is not None else bool(config and config.warroom.read_only)
    op = operator or (config.warroom.operator if config and config.warroom.operator else None) or operator_identity()
    if config is not None:
        audit = AuditLog(config.audit_path)
        locks = LocalLocks(config.state_dir / "locks")
    else:
        from pathlib import Path

        import platformdirs

        state = Path(platformdirs.user_state_dir("warroom"))
        audit = AuditLog(state / "audit.jsonl")
        locks = LocalLocks(state / "locks")
    actions = ActionEngine(audit, read_only=ro, operator=op, locks=locks)
    srcs: list[Source] = list(sources)
    parts: dict[str, Any] = {}
    closers: list[Callable[[], Any]] = []
    hub = None
    if config is not None:
        _Builder(config, actions, srcs, parts, closers, password_provider).build()
        if with_logs and (config.logs or any(s.logs for s in config.services)):
            from .logs import LogHub

            hub = LogHub.from_config(config, buffer=config.warroom.log_buffer)
            parts["logs"] = hub
            srcs.append(hub)
    monitor = Monitor(srcs, rules=make_rules(RuleContext(config=config)))
    engine = Engine(config=config, monitor=monitor, actions=actions, audit=audit, logs=hub,
                    read_only=ro, closers=closers, parts=parts)
    _attach_incidents(engine)
    return engine


def _attach_incidents(engine: Engine) -> None:
    """Shared Postgres (audit mirror, advisory locks), incidents, escalation (backends/shared, incidents, notify)."""
    from .shared import attach_shared, shared_dsn

    dsn = shared_dsn(engine.config)
    if dsn:
        attach_shared(engine, dsn)
    from .incidents import attach_incidents

    attach_incidents(engine)


class _Builder:
    def __init__(self, config, actions: ActionEngine, sources: list, parts: dict, closers: list, password_provider):
        self.c = config
        self.actions = actions
        self.sources = sources
        self.parts = parts
        self.closers = closers
        self.password_provider = password_provider
        w = config.warroom
        self.interval = w.refresh
        self.timeout = w.timeout
        self.routers = {
            verb: ScaleRouter(f"service.{verb}", title, actions) if verb == "scale"
            else RouterAction(f"service.{verb}", title, actions)
            for verb, title in (("restart", "Restart"), ("stop", "Stop"), ("start", "Start"), ("scale", "Scale"))
        }

    def add(self, *srcs: Source) -> None:
        self.sources.extend(srcs)

    def act(self, *acts: Action) -> None:
        for a in acts:
            self.actions.register(a)

    def build(self) -> None:
        self.postgres()
        self.redis()
        chains = self.chains()
        self.orders(chains)
        self.services()
        self.host()
        self.checks()
        self.custom_actions()
        for r in self.routers.values():
            if r.routes:
                self.actions.register(r)

    # ------------------------------------------------------------------ sources

    def postgres(self) -> None:
        from .postgres import PostgresSource, TerminateBackend

        for name, pg in self.c.postgres.items():
            src = PostgresSource(
                f"postgres.{name}", pg.dsn, interval=pg.interval, timeout=pg.timeout, pool_max=pg.pool_max,
                long_query_after=pg.long_query_after, terminate_after=pg.terminate_after,
                warn_connections=pg.warn_connections,
            )
            self.add(src)
            self.parts[f"postgres.{name}"] = src
            self.act(TerminateBackend(src))
        b = self.c.breakers
        if b is not None and b.postgres:
            from .breakers import BreakerTable, PostgresBreakers, ResetAllBreakers, ResetBreaker

            pg = self.c.postgres[b.postgres]
            table = BreakerTable(
                table=str(b.table or "circuit_breaker_state"), id_column=str(b.id_column),
                state_column=str(b.state_column), failures_column=str(b.failures_column),
                last_failure_column=str(b.last_failure_column) if b.last_failure_column else None,
                opened_at_column=str(b.opened_at_column) if b.opened_at_column else None,
            )
            src = PostgresBreakers("breakers", pg.dsn, table=table, reset_timeout=b.reset_timeout,
                                   interval=b.interval or pg.interval, timeout=pg.timeout)
            self.add(src)
            self.parts["breakers"] = src
            self.act(ResetBreaker(src), ResetAllBreakers(src))

    def redis(self) -> None:
        from .redis import QueueSource, QueueSpec, RedisSource, RequeueDead

        for name, rc in self.c.redis.items():
            src = RedisSource(f"redis.{name}", rc.url, interval=rc.interval, timeout=rc.timeout,
                              max_memory=rc.max_memory)
            self.add(src)
            self.parts[f"redis.{name}"] = src
            queues = [q for q in self.c.queues if q.redis == name]
            if queues:
                specs = [QueueSpec(name=q.name, key=q.key, type=q.type, thresholds=q.thresholds,
                                   timestamp_field=q.timestamp_field, dead_letter=q.dead_letter) for q in queues]
                interval = min((q.interval for q in queues if q.interval), default=rc.interval)
                qs = QueueSource(f"queues.{name}", rc.url, specs, interval=interval, timeout=rc.timeout)
                self.add(qs)
                self.parts[f"queues.{name}"] = qs
                if any(q.dead_letter for q in queues):
                    self.act(RequeueDead(qs))
        b = self.c.breakers
        if b is not None and b.redis and not b.postgres:
            from .breakers import RedisBreakers, ResetAllBreakers, ResetBreaker

            rc = self.c.redis[b.redis]
            src = RedisBreakers("breakers", rc.url, b.redis_namespaces, reset_timeout=b.reset_timeout,
                                interval=b.interval or rc.interval, timeout=rc.timeout)
            self.add(src)
            self.parts["breakers"] = src
            self.act(ResetBreaker(src), ResetAllBreakers(src))

    def chains(self) -> dict[str, Any]:
        if not self.c.chain:
            return {}
        from .evm import actions_for_chains, chains_from_config

        chains = chains_from_config(self.c, audit=self.actions.audit)
        for name, chain in chains.items():
            self.add(chain)
            self.parts[f"chain.{name}"] = chain
        if chains:
            self.act(*actions_for_chains(chains, password_provider=self.password_provider))
        return chains

    def orders(self, chains: dict[str, Any]) -> None:
        if self.c.orders is None:
            return
        from .orders import OrdersBundle

        bundle = OrdersBundle.from_config(self.c, chains=chains, operator=self.actions.operator,
                                          audit=self.actions.audit)
        self.add(bundle.source)
        self.parts["orders"] = bundle
        self.act(*bundle.actions)

    def services(self) -> None:
        from .command import CommandAction, CommandTemplate

        templates = {
            c.name: CommandTemplate(c.name, c.argv, timeout=c.timeout, cwd=c.cwd) for c in self.c.commands
        }
        self.parts["commands"] = templates
        docker_svcs = [s for s in self.c.services if s.kind == "docker"]
        proc_svcs = [s for s in self.c.services if s.kind == "process"]
        if docker_svcs:
            from .docker import DockerServiceSpec, DockerSource, docker_actions

            specs = [
                DockerServiceSpec(name=s.name, project=s.compose_project, service=s.compose_service,
                                  container=s.container, depends_on=s.depends_on, role=s.role)
                for s in docker_svcs
            ]
            d = self.c.docker
            src = DockerSource("docker", specs, base_url=d.host or None, interval=d.interval or self.interval,
                               timeout=d.timeout, stats=d.stats, stats_interval=d.stats_interval)
            self.add(src)
            self.parts["docker"] = src
            q = self.c.queues[0] if self.c.queues else None  # the queue _queue_depth() reads
            drain = {"queue_name": q.name, "queue_key": q.key} if q else {}
            self.act(*docker_actions(src, queue_depth=self._queue_depth(), compose_command=d.compose_command,
                                     **drain))
            for s in docker_svcs:
                if s.restart_via in (None, "docker"):
                    for verb in ("restart", "stop", "start", "scale"):
                        self.routers[verb].add(s.name, f"docker.{verb}")
        if proc_svcs:
            from .process import ProcessRestart, ProcessSource, ProcessSpec

            specs = [ProcessSpec(name=s.name, match=s.match.pattern if s.match else None,
                                 depends_on=s.depends_on, role=s.role) for s in proc_svcs]
            src = ProcessSource("processes", specs, interval=self.interval, timeout=self.timeout)
            self.add(src)
            self.parts["processes"] = src
            restarts = {s.name: templates[s.restart_via] for s in proc_svcs
                        if s.restart_via and s.restart_via in templates}
            if restarts:
                self.act(ProcessRestart(src, commands=restarts))
                for name in restarts:
                    self.routers["restart"].add(name, "process.restart")
        cmd_svcs = [s for s in self.c.services if s.kind == "command" and s.status_command in templates]
        if cmd_svcs:
            from .cmdservice import CommandServiceSource, CommandServiceSpec

            src = CommandServiceSource([
                CommandServiceSpec(name=s.name, template=templates[s.status_command],
                                   interval=s.interval or max(self.interval, 10.0), timeout=s.timeout,
                                   depends_on=s.depends_on, role=s.role, playbook=s.playbook)
                for s in cmd_svcs
            ])
            self.add(src)
            self.parts[src.name] = src
        for s in self.c.services:
            if s.health_url:
                from .docker import role_of
                from .http import HttpCheck
                from .model import Severity
                from .rules import RuleContext

                role = role_of(s.name, RuleContext(config=self.c))
                playbook = s.playbook or {"api": "api-down", "listener": "listener-failure"}.get(role, "service-down")
                chk = HttpCheck(f"health.{s.name}", s.health_url, latency_warn=s.latency_warn,
                                interval=s.interval or self.interval, timeout=s.timeout or self.timeout,
                                severity=Severity.P0 if role == "api" else Severity.P1,
                                playbook=playbook, target=f"service:{s.name}")
                self.add(chk)
            # restarts through a command for services that are neither docker nor process
            if s.kind not in ("docker", "process") and s.restart_via in templates:
                aid = f"command.restart.{s.name}"
                self.act(CommandAction(templates[s.restart_via], action_id=aid, title=f"Restart {s.name}",
                                       fixed={"service": s.name}, scope=f"service:{s.name}"))
                self.routers["restart"].add(s.name, aid)

    def _queue_depth(self):
        """The first configured queue's depth, for the graceful shutdown's drain step."""
        if not self.c.queues:
            return None
        q = self.c.queues[0]
        url = self.c.redis[q.redis].url

        async def depth() -> int:
            from .redis import call

            cmd = {"list": "LLEN", "stream": "XLEN", "zset": "ZCARD"}[q.type]
            return int(await call(url, lambda c: c.execute_command(cmd, q.key), source=f"queue.{q.name}"))

        return depth

    def host(self) -> None:
        if self.c.host is None:
            return
        from .process import HostSource, HostThresholds

        h = self.c.host
        src = HostSource("host", disks=h.disks, thresholds=HostThresholds.from_config(h),
                         interval=h.interval or max(self.interval, 5.0), timeout=self.timeout)
        self.add(src)

    def checks(self) -> None:
        from .http import check_from_config

        for chk in self.c.checks:
            if chk.kind in ("http", "metrics"):
                self.add(check_from_config(chk, default_interval=max(self.interval, 10.0),
                                           default_timeout=self.timeout))
            elif chk.kind == "command":
                from .command import CommandCheck

                tmpl = self.parts["commands"][chk.command]
                kw = {"expect": chk.expect} if chk.expect is not None else {}
                self.add(CommandCheck(
                    chk.name, tmpl, path=chk.path, warn_above=chk.warn_above, crit_above=chk.crit_above,
                    warn_below=chk.warn_below, crit_below=chk.crit_below, severity=chk.severity,
                    playbook=chk.playbook, interval=chk.interval or max(self.interval, 10.0),
                    timeout=chk.timeout, **kw))
            elif chk.kind in ("sql", "jsonrpc"):
                from .checks import ValueCheck

                dsn = self.c.postgres[chk.postgres].dsn if chk.kind == "sql" else None
                self.add(ValueCheck(chk, dsn=dsn, interval=max(self.interval, 10.0), timeout=self.timeout))

    def custom_actions(self) -> None:
        from .command import CommandAction, CommandTemplate

        for a in self.c.actions:
            tmpl = CommandTemplate(a.name, a.argv, timeout=a.timeout, params=dict(a.params))
            self.act(CommandAction(tmpl, action_id=f"command.{a.name}", title=a.description or a.name,
                                   danger=a.danger, scope=a.scope, operator=self.actions.operator,
                                   config_path=str(self.c.path) if self.c.path else None))


def sources_by_area(engine: Engine) -> dict[str, Sequence[str]]:
    """Source names grouped by the areas `warroom health AREA` knows."""
    areas: dict[str, list[str]] = {}
    for name, src in engine.monitor.sources.items():
        kind = getattr(src, "kind", "")
        head = name.split(".")[0]
        area = {
            "postgres": "database", "redis": "queues", "queues": "queues", "breakers": "breakers",
            "chain": "chain", "orders": "orders", "docker": "services", "processes": "services",
            "health": "services", "command-services": "services", "host": "resources", "logs": "events",
        }.get(head, kind or "checks")
        areas.setdefault(area, []).append(name)
    return areas
