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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backends.actions.base import (
    Action,
    ActionEngine,
    ActionPlan,
    ActionResult,
    Danger,
    LocalLocks,
    ProgressFn,
)
from backends.clock import SYSTEM_CLOCK, Clock
from backends.engine.audit import AuditLog, operator_identity
from backends.engine.monitor import Monitor, Source
from backends.engine.rules import RuleContext, RuleSettings, building, make_rules, unbound_entries
from backends.errors import ActionRefused

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from backends.config import Config
    from backends.sources.docker import QueueDepthFn
    from backends.sources.evm import PasswordProvider

log = logging.getLogger(__name__)

DEFAULT_LOG_BUFFER = 10_000  # = backends.sources.logs.DEFAULT_BUFFER (not imported: logs is loaded lazily)


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
            known = ", ".join(sorted(self.routes)) or "none"
            raise ActionRefused(self.id, f"which service? ({known})", ask=True)
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
        if not service and len(self.routes) == 1:  # one scalable service: the form offers it
            only = next(iter(self.routes))
            raise ActionRefused(self.id, f"scale {only} to how many replicas?", ask=True,
                                suggest={"service": only, "replicas": 2}, focus="replicas")
        target = self.routes.get(service)
        count = _count_field(self.engine, target)
        if replicas is None or replicas == "":
            if count is not None:  # a command's own count: asked here (a backend scale asks itself)
                raise ActionRefused(self.id, f"how many {service} replicas?", ask=True,
                                    suggest={"replicas": 2}, focus="replicas")
        elif count is not None and target is not None:  # a `[[actions]]` scale command names its count itself
            keep = {k: v for k, v in params.items() if k in ("reason", "confirmation")}
            return await self.engine.plan(target, **keep, **{count: replicas})
        else:
            params["replicas"] = replicas
        return await super().plan(service=service, **params)


def _count_field(engine: ActionEngine, action_id: str | None) -> str | None:
    """The one integer field of a command scale action (`{count}`), None for backend scales."""
    if action_id is None or not action_id.startswith("command."):
        return None
    from backends.actions.command import CommandAction

    try:
        action = engine.get(action_id)
        fields = action.param_fields() if isinstance(action, CommandAction) else []
    except Exception:
        return None
    ints = [f.name for f in fields if f.type == "int"]
    return ints[0] if len(ints) == 1 and ints[0] != "replicas" else None


@dataclass
class Engine:
    config: Any
    monitor: Monitor
    actions: ActionEngine
    audit: AuditLog
    logs: Any = None  # backends.sources.logs.LogHub
    read_only: bool = False
    closers: list[Callable[[], Any]] = field(default_factory=list)
    parts: dict[str, Any] = field(default_factory=dict)  # built adapters by name, for the CLI and tests
    starters: list[Callable[[], Any]] = field(default_factory=list)  # shared state, incidents, notifier
    shared: Any = None  # backends.engine.shared.SharedState when a [postgres.NAME] has shared = true
    incidents: Any = None  # backends.engine.incidents.IncidentManager
    notifier: Any = None  # backends.actions.notify.Notifier
    # where every part reads the time (backends/clock.py): the monitor, rules, audit, incidents,
    # escalation, the brief and the sources that take a clock; the console's clock by default
    clock: Clock = SYSTEM_CLOCK

    @property
    def log_buffer(self) -> int:
        """Log lines kept in memory ([warroom] log_buffer): the hub's buffer, and the Logs pane's."""
        w = getattr(self.config, "warroom", None)
        return int(getattr(w, "log_buffer", 0) or DEFAULT_LOG_BUFFER)

    async def start(self) -> None:
        check = getattr(self.audit, "open_check_async", None)
        if callable(check):  # a torn tail is reported and set aside at open, not at the first change
            try:
                await check()
            except Exception:
                log.warning("audit trail: open check failed", exc_info=True)
        load = getattr(self.audit, "load_index", None)
        if callable(load):  # the audit index, built in its reader thread while polling starts
            self._index_task = asyncio.ensure_future(load())
            self._index_task.add_done_callback(lambda t: t.cancelled() or t.exception())
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
            close_src = getattr(src, "aclose", None) or getattr(src, "close", None)
            if close_src is not None:
                closers.append(close_src)
        for mod, fn in (("backends.sources.http", "close_sessions"), ("backends.sources.postgres", "close_pools"),
                        ("backends.sources.redis", "close_clients")):
            m = sys.modules.get(mod)
            close_mod = getattr(m, fn, None) if m else None
            if close_mod is not None:
                closers.append(close_mod)
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
    password_provider: PasswordProvider | None = None,
    clock: Clock | None = None,
) -> Engine:
    """Build the engine for a loaded config. `config=None` gives an empty engine. `clock`
    (backends/clock.py, default the system's) is where every part of it reads the time."""
    clock = clock or SYSTEM_CLOCK
    ro = bool(read_only) if read_only is not None else bool(config and config.warroom.read_only)
    op = operator or (config.warroom.operator if config and config.warroom.operator else None) or operator_identity()
    if config is not None:
        audit = AuditLog(config.audit_path, clock=clock)
        locks = LocalLocks(config.state_dir / "locks")
    else:
        from pathlib import Path

        import platformdirs

        state = Path(platformdirs.user_state_dir("warroom"))
        audit = AuditLog(state / "audit.jsonl", clock=clock)
        locks = LocalLocks(state / "locks")
    actions = ActionEngine(audit, read_only=ro, operator=op, locks=locks)
    srcs: list[Source] = list(sources)
    parts: dict[str, Any] = {}
    closers: list[Callable[[], Any]] = []
    hub = None
    settings = RuleSettings()  # this engine's rule settings: never shared with another engine
    if config is not None:
        with building(settings):
            _Builder(config, actions, srcs, parts, closers, password_provider, clock).build()
        pm2_logs = _pm2_logs(config)
        if with_logs and (config.logs or any(s.logs for s in config.services) or pm2_logs):
            from backends.sources.logs import LogHub

            hub = LogHub.from_config(_with_logs(config, pm2_logs), buffer=config.warroom.log_buffer,
                                     clock=clock.time)
            parts["logs"] = hub
            srcs.append(hub)
    for src in srcs:  # sources built by the caller (tests, scripts) keep the settings they registered
        _adopt(settings, src)
    monitor = Monitor(srcs, rules=make_rules(RuleContext(config=config, settings=settings, clock=clock)),
                      clock=clock)
    engine = Engine(config=config, monitor=monitor, actions=actions, audit=audit, logs=hub,
                    read_only=ro, closers=closers, parts=parts, clock=clock)
    _attach_incidents(engine)
    return engine


def _pm2_logs(config: Any) -> list[dict[str, Any]]:
    """Log sources for pm2 services without `logs =` of their own: the files pm2 reports."""
    if not any(getattr(s, "kind", None) == "pm2" for s in config.services):
        return []
    from backends.sources.pm2 import log_spec_entries

    return log_spec_entries(config)


def _with_logs(config: Any, extra: list[dict[str, Any]]) -> Any:
    if not extra:
        return config
    import dataclasses

    return dataclasses.replace(config, logs=(*config.logs, *extra))


def _adopt(settings: RuleSettings, src: Any) -> None:
    """A source built outside the engine's builder registered its rule settings in the
    process-wide table: the engine takes a copy of its own entries."""
    for table, entries in unbound_entries(getattr(src, "name", None)).items():
        for key, value in entries.items():
            settings.table(table).setdefault(key, value)


def _attach_incidents(engine: Engine) -> None:
    """Shared Postgres (audit mirror, advisory locks), incidents, escalation (backends/shared, incidents, notify)."""
    from backends.engine.shared import attach_shared, shared_dsn

    dsn = shared_dsn(engine.config)
    if dsn:
        attach_shared(engine, dsn)
    from backends.engine.incidents import attach_incidents

    attach_incidents(engine)


class _Builder:
    def __init__(self, config: Config, actions: ActionEngine, sources: list[Source], parts: dict[str, Any],
                 closers: list[Callable[[], Any]], password_provider: PasswordProvider | None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.c = config
        self.clock = clock  # handed to the sources that take one (rates, ages, windows)
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
        self.alertmanagers()
        self.custom_actions()
        for r in self.routers.values():
            if r.routes:
                self.actions.register(r)

    # ------------------------------------------------------------------ sources

    def postgres(self) -> None:
        from backends.sources.postgres import PostgresSource, TerminateBackend

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
            from backends.sources.breakers import (
                BreakerTable,
                PostgresBreakers,
                ResetAllBreakers,
                ResetBreaker,
            )

            pg = self.c.postgres[b.postgres]
            table = BreakerTable(
                table=str(b.table or "circuit_breaker_state"), id_column=str(b.id_column),
                state_column=str(b.state_column), failures_column=str(b.failures_column),
                last_failure_column=str(b.last_failure_column) if b.last_failure_column else None,
                opened_at_column=str(b.opened_at_column) if b.opened_at_column else None,
            )
            breakers = PostgresBreakers("breakers", pg.dsn, table=table, reset_timeout=b.reset_timeout,
                                        interval=b.interval or pg.interval, timeout=pg.timeout)
            self.add(breakers)
            self.parts["breakers"] = breakers
            self.act(ResetBreaker(breakers), ResetAllBreakers(breakers))

    def redis(self) -> None:
        from backends.sources.redis import QueueSource, QueueSpec, RedisSource, RequeueDead

        for name, rc in self.c.redis.items():
            src = RedisSource(f"redis.{name}", rc.url, interval=rc.interval, timeout=rc.timeout,
                              max_memory=rc.max_memory)
            self.add(src)
            self.parts[f"redis.{name}"] = src
            queues = [q for q in self.c.queues if q.redis == name]
            if queues:
                specs = [QueueSpec(name=q.name, key=q.key, type=q.type, thresholds=q.thresholds,
                                   timestamp_field=q.timestamp_field, dead_letter=q.dead_letter,
                                   oldest_end=q.oldest_end, prefix=q.prefix, max_age=q.max_age,
                                   priority_steps=q.priority_steps) for q in queues]
                interval = min((q.interval for q in queues if q.interval), default=rc.interval)
                qs = QueueSource(f"queues.{name}", rc.url, specs, interval=interval, timeout=rc.timeout,
                                 clock=self.clock.monotonic, wall=self.clock.time)
                self.add(qs)
                self.parts[f"queues.{name}"] = qs
                if any(q.dead_letter for q in queues):
                    self.act(RequeueDead(qs))
        b = self.c.breakers
        if b is not None and b.redis and not b.postgres:
            from backends.sources.breakers import RedisBreakers, ResetAllBreakers, ResetBreaker

            rc = self.c.redis[b.redis]
            breakers = RedisBreakers("breakers", rc.url, b.redis_namespaces, reset_timeout=b.reset_timeout,
                                     interval=b.interval or rc.interval, timeout=rc.timeout)
            self.add(breakers)
            self.parts["breakers"] = breakers
            self.act(ResetBreaker(breakers), ResetAllBreakers(breakers))

    def chains(self) -> dict[str, Any]:
        if not self.c.chain:
            return {}
        from backends.sources.evm import actions_for_chains, chains_from_config

        chains = chains_from_config(self.c, audit=self.actions.audit)
        for name, chain in chains.items():
            self.add(chain)
            self.parts[f"chain.{name}"] = chain
        if chains:
            self.act(*actions_for_chains(chains, password_provider=self.password_provider))
        from backends.sources.rpcscore import (
            score_sources,  # endpoint scores (eRPC-like) of every EVM chain
        )

        self.add(*score_sources(chains))
        from backends.sources.guardrails import (
            guard_sources,  # admin events of guard = true contracts
        )

        self.add(*guard_sources(self.c, chains))
        from backends.sources.neo import (
            neo_sources,  # Neo N3: block counts, the gas bank's GAS, contract states
        )

        self.add(*neo_sources(self.c))
        return chains

    def orders(self, chains: dict[str, Any]) -> None:
        if self.c.orders is None:
            return
        from backends.sources.orders import OrdersBundle

        bundle = OrdersBundle.from_config(self.c, chains=chains, operator=self.actions.operator,
                                          audit=self.actions.audit)
        self.add(bundle.source)
        self.parts["orders"] = bundle
        self.act(*bundle.actions)
        from backends.sources.integrity import (
            integrity_from_bundle,  # listener integrity: missed blocks + backfill
        )

        cc = self.c.chain.get(self.c.orders.chain or "")
        made = integrity_from_bundle(bundle, chain_name=self.c.orders.chain or "", operator=self.actions.operator,
                                     window=cc.integrity_window if cc is not None else 2000)
        if made is not None:
            self.add(made[0])
            self.parts["integrity"] = made[0]
            self.act(made[1])

    def services(self) -> None:
        from backends.actions.command import CommandAction, CommandTemplate

        templates = {
            c.name: CommandTemplate(c.name, c.argv, timeout=c.timeout, cwd=c.cwd) for c in self.c.commands
        }
        self.parts["commands"] = templates
        docker_svcs = [s for s in self.c.services if s.kind == "docker"]
        proc_svcs = [s for s in self.c.services if s.kind == "process"]
        if docker_svcs:
            from backends.sources.docker import DockerServiceSpec, DockerSource, docker_actions

            docker_specs = [
                DockerServiceSpec(name=s.name, project=s.compose_project, service=s.compose_service,
                                  container=s.container, depends_on=s.depends_on, role=s.role)
                for s in docker_svcs
            ]
            d = self.c.docker
            docker = DockerSource("docker", docker_specs, base_url=d.host or None,
                                  interval=d.interval or self.interval, timeout=d.timeout, stats=d.stats,
                                  stats_interval=d.stats_interval)
            self.add(docker)
            self.parts["docker"] = docker
            q = self.c.queues[0] if self.c.queues else None  # the queue _queue_depth() reads
            drain = {"queue_name": q.name, "queue_key": q.key} if q else {}
            self.act(*docker_actions(docker, queue_depth=self._queue_depth(), compose_command=d.compose_command,
                                     **drain))
            for s in docker_svcs:
                if s.restart_via in (None, "docker"):
                    for verb in ("restart", "stop", "start", "scale"):
                        self.routers[verb].add(s.name, f"docker.{verb}")
        if proc_svcs:
            from backends.sources.process import ProcessRestart, ProcessSource, ProcessSpec

            proc_specs = [ProcessSpec(name=s.name, match=s.match.pattern if s.match else None,
                                      depends_on=s.depends_on, role=s.role) for s in proc_svcs]
            processes = ProcessSource("processes", proc_specs, interval=self.interval, timeout=self.timeout)
            self.add(processes)
            self.parts["processes"] = processes
            restarts = {s.name: templates[s.restart_via] for s in proc_svcs
                        if s.restart_via and s.restart_via in templates}
            if restarts:
                self.act(ProcessRestart(processes, commands=restarts))
                for name in restarts:
                    self.routers["restart"].add(name, "process.restart")
        pm2_svcs = [s for s in self.c.services if s.kind == "pm2"]
        if pm2_svcs:  # before the command restarts below: pm2's own actions own these services
            from backends.sources.pm2 import MIN_INTERVAL, Pm2Source, pm2_actions, spec_from_config

            own = [s.interval for s in pm2_svcs if s.interval]
            pm2_src = Pm2Source([spec_from_config(s) for s in pm2_svcs], timeout=max(self.timeout, 10.0),
                                interval=min(own) if own else max(self.interval, MIN_INTERVAL))
            self.add(pm2_src)
            self.parts[pm2_src.name] = pm2_src
            self.act(*pm2_actions(pm2_src))
            for s in pm2_svcs:
                for verb in ("restart", "stop", "start"):
                    self.routers[verb].add(s.name, f"pm2.{verb}")
        cmd_svcs = [(s, templates[s.status_command]) for s in self.c.services
                    if s.kind == "command" and s.status_command is not None and s.status_command in templates]
        if cmd_svcs:
            from backends.sources.cmdservice import CommandServiceSource, CommandServiceSpec

            cmd_src = CommandServiceSource([
                CommandServiceSpec(name=s.name, template=template,
                                   interval=s.interval or max(self.interval, 10.0), timeout=s.timeout,
                                   depends_on=s.depends_on, role=s.role, playbook=s.playbook)
                for s, template in cmd_svcs
            ], clock=self.clock.monotonic)
            self.add(cmd_src)
            self.parts[cmd_src.name] = cmd_src
        for s in self.c.services:
            if s.health_url:
                from backends.engine.rules import RuleContext
                from backends.model import Severity
                from backends.sources.docker import role_of
                from backends.sources.http import HttpCheck

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

    def _queue_depth(self) -> QueueDepthFn | None:
        """The first configured queue's depth, for the graceful shutdown's drain step."""
        if not self.c.queues:
            return None
        q = self.c.queues[0]
        url = self.c.redis[q.redis].url

        async def depth() -> int:
            from backends.sources.redis import call

            reads: dict[str, Callable[[Redis], Awaitable[int]]] = {  # LLEN, XLEN, ZCARD
                "list": lambda c: c.llen(q.key), "stream": lambda c: c.xlen(q.key), "zset": lambda c: c.zcard(q.key),
            }
            return int(await call(url, reads[q.type], source=f"queue.{q.name}"))

        return depth

    def host(self) -> None:
        if self.c.host is None:
            return
        from backends.sources.process import HostSource, HostThresholds

        h = self.c.host
        src = HostSource("host", disks=h.disks, thresholds=HostThresholds.from_config(h),
                         interval=h.interval or max(self.interval, 5.0), timeout=self.timeout,
                         clock=self.clock.monotonic)
        self.add(src)

    def checks(self) -> None:
        from backends.sources.http import check_from_config

        for chk in self.c.checks:
            if chk.kind in ("http", "metrics", "promql"):
                self.add(check_from_config(chk, default_interval=max(self.interval, 10.0),
                                           default_timeout=self.timeout))
            elif chk.kind == "command":
                from backends.actions.command import CommandCheck

                tmpl = self.parts["commands"][chk.command]
                kw: dict[str, Any] = {"expect": chk.expect} if chk.expect is not None else {}
                self.add(CommandCheck(
                    chk.name, tmpl, path=chk.path, warn_above=chk.warn_above, crit_above=chk.crit_above,
                    warn_below=chk.warn_below, crit_below=chk.crit_below, severity=chk.severity,
                    playbook=chk.playbook, interval=chk.interval or max(self.interval, 10.0),
                    timeout=chk.timeout, **kw))
            elif chk.kind in ("sql", "jsonrpc"):
                from backends.sources.checks import ValueCheck

                dsn = self.c.postgres[chk.postgres or ""].dsn if chk.kind == "sql" else None  # sql: postgres is required
                self.add(ValueCheck(chk, dsn=dsn, interval=max(self.interval, 10.0), timeout=self.timeout))

    def alertmanagers(self) -> None:
        if not getattr(self.c, "alertmanager", None):
            return
        from backends.sources.alertmanager import actions_for, routers_for, source_from_config

        sources = []
        for am in self.c.alertmanager.values():
            src = source_from_config(am)
            self.add(src)
            self.parts[src.name] = src
            self.act(*actions_for(src, operator=self.actions.operator))
            sources.append(src)
        self.act(*routers_for(self.actions, sources))  # alertmanager.silence: the playbook's step

    def custom_actions(self) -> None:
        from backends.actions.command import CommandAction, CommandTemplate

        for a in self.c.actions:
            tmpl = CommandTemplate(a.name, a.argv, timeout=a.timeout, params=dict(a.params))
            self.act(CommandAction(tmpl, action_id=f"command.{a.name}", title=a.description or a.name,
                                   danger=a.danger, scope=a.scope, operator=self.actions.operator,
                                   config_path=str(self.c.path) if self.c.path else None))
            # `[[actions]] name = "scale-..."` scoped to a service is that service's `service.scale`
            # (a process or command service has no scale of its own): the playbook's scale step works
            service = (a.scope or "").removeprefix("service:")
            if a.name.startswith("scale") and service in {s.name for s in self.c.services}:
                self.routers["scale"].add(service, f"command.{a.name}")


def sources_by_area(engine: Engine) -> dict[str, list[str]]:
    """Source names grouped by the areas `warroom health AREA` knows."""
    areas: dict[str, list[str]] = {}
    for name, src in engine.monitor.sources.items():
        kind = getattr(src, "kind", "")
        head = name.split(".")[0]
        area = {
            "postgres": "database", "redis": "queues", "queues": "queues", "breakers": "breakers",
            "chain": "chain", "orders": "orders", "docker": "services", "processes": "services",
            "health": "services", "command-services": "services", "pm2": "services", "host": "resources",
            "logs": "events", "alertmanager": "alerts",
        }.get(head, kind or "checks")
        areas.setdefault(area, []).append(name)
    return areas
