"""The whole file: each section parsed in turn, then the references between them checked."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from backends.config.base import BAD
from backends.config.crossref import _check_cycles, _dependency_exists, _ref, _scope_exists, _unique
from backends.config.loader import _Loader, _Table
from backends.config.model import Config, _placeholders
from backends.config.sections.actions import parse_actions, parse_playbooks
from backends.config.sections.chain import parse_chain
from backends.config.sections.checks import parse_alertmanager, parse_checks
from backends.config.sections.escalation import parse_escalation, parse_incident, parse_record
from backends.config.sections.logs import parse_log_patterns, parse_logs
from backends.config.sections.orders import parse_orders
from backends.config.sections.queues import parse_breakers, parse_queues
from backends.config.sections.services import (
    parse_commands,
    parse_docker,
    parse_host,
    parse_services,
)
from backends.config.sections.stores import parse_postgres, parse_redis
from backends.config.sections.warroom import parse_keys, parse_warroom
from backends.engine.playbooks import BUILTIN

_SECTIONS = ("warroom", "keys", "postgres", "redis", "chain", "services", "commands", "docker", "host",
             "queues", "breakers", "orders", "logs", "log_patterns", "checks", "actions", "escalation",
             "incident", "playbooks", "record")


def _parse(ld: _Loader, data: dict[str, Any], path: Path | None) -> Config:
    root = _Table(ld, data, ())
    root.used.update(_SECTIONS)
    warroom = parse_warroom(ld, root)
    keys = parse_keys(ld, root)
    postgres = parse_postgres(ld, root)
    redis = parse_redis(ld, root)
    chains = parse_chain(ld, root)
    commands = parse_commands(ld, root)
    services = parse_services(ld, root, commands)
    docker = parse_docker(ld, root)
    host = parse_host(ld, root)
    queues = parse_queues(ld, root, redis)
    breakers = parse_breakers(ld, root, postgres, redis)
    orders = parse_orders(ld, root, postgres, chains)
    logs = parse_logs(ld, root)
    log_patterns = parse_log_patterns(ld, root)
    checks = parse_checks(ld, root, postgres)
    alertmanagers = parse_alertmanager(ld, root)
    actions = parse_actions(ld, root)
    playbooks, step_paths = parse_playbooks(ld, root)
    escalation = parse_escalation(ld, root)
    incident = parse_incident(ld, root)
    record = parse_record(ld, root)

    root.done()

    # -- uniqueness and cross references --------------------------------------
    _unique(ld, ("services",), [s.name for s in services], data.get("services"))
    _unique(ld, ("commands",), [c.name for c in commands], data.get("commands"))
    _unique(ld, ("queues",), [q.name for q in queues], data.get("queues"))
    _unique(ld, ("logs",), [g.name for g in logs], data.get("logs"))
    _unique(ld, ("checks",), [c.name for c in checks], data.get("checks"))
    _unique(ld, ("actions",), [a.name for a in actions], data.get("actions"))
    _unique(ld, ("playbooks",), [p.id for p in playbooks], data.get("playbooks"), key="id",
            expected="ids unique within [[playbooks]] (an id equal to a built-in's replaces the built-in)")

    command_names = {c.name: c for c in commands if c.name is not BAD}
    service_names = {s.name for s in services if s.name is not BAD}
    log_names = {g.name for g in logs if g.name is not BAD}
    for i, s in enumerate(services):
        p = ("services", i)
        if s.restart and s.restart is not BAD and s.restart != "docker":
            _ref(ld, p + ("restart",), s.restart, command_names, "commands", extra=("docker",))
        if s.restart == "docker" and s.kind != "docker":
            ld.error(p + ("restart",), f"restart = \"docker\" on a {s.kind} service",
                     "a [[commands]] name (docker restarts need kind = \"docker\")")
        if s.restart_command and s.restart_command is not BAD:
            _ref(ld, p + ("restart_command",), s.restart_command, command_names, "commands")
        if s.status_command and s.status_command is not BAD:
            _ref(ld, p + ("status_command",), s.status_command, command_names, "commands")
            sc = command_names.get(s.status_command)
            extra = sorted(set(_placeholders(sc.argv)) - {"service"}) if sc and sc.argv is not BAD else []
            if extra:
                ld.error(p + ("status_command",),
                         f"[[commands]] {s.status_command!r} has placeholders warroom cannot fill when it "
                         f"checks the service: {', '.join('{' + x + '}' for x in extra)}",
                         "a command whose only placeholder is {service} (filled with the service name)")
        if s.logs == "docker" and s.kind != "docker":
            ld.error(p + ("logs",), f'logs = "docker" on a {s.kind} service',
                     "a log file path/glob or a [[commands]] name")
        if s.depends_on is not BAD:
            for j, dep in enumerate(s.depends_on):
                if not _dependency_exists(dep, service_names, postgres, redis, chains):
                    ld.error(p + ("depends_on", j), f"unknown dependency {dep!r}",
                             "a service name, postgres / redis / chain, or postgres.NAME / redis.NAME / chain.NAME")
                elif dep == s.name:
                    ld.error(p + ("depends_on", j), "a service cannot depend on itself", "another service")
    _check_cycles(ld, services)
    for i, lg in enumerate(logs):
        if lg.command and lg.command is not BAD:
            _ref(ld, ("logs", i, "command"), lg.command, command_names, "commands")
        if lg.service and lg.service is not BAD and lg.service not in service_names:
            _ref(ld, ("logs", i, "service"), lg.service, service_names, "services")
    for i, lp in enumerate(log_patterns):
        if lp.sources is not BAD:
            for j, name in enumerate(lp.sources):
                if name not in log_names and name not in service_names:
                    ld.error(("log_patterns", i, "sources", j), f"unknown log source {name!r}",
                             "a [[logs]] or [[services]] name")
    for i, ck in enumerate(checks):
        if ck.command and ck.command is not BAD:
            _ref(ld, ("checks", i, "command"), ck.command, command_names, "commands")
    for i, act in enumerate(actions):
        if act.scope and act.scope is not BAD and not _scope_exists(act.scope, service_names, postgres, redis, chains):
            ld.error(("actions", i, "scope"), f"unknown scope {act.scope!r}",
                     "global, a service name, or postgres.NAME / redis.NAME / chain.NAME")
    action_names = sorted(a.name for a in actions if a.name is not BAD)
    for sp, step in step_paths:
        step_action = step.action
        if (isinstance(step_action, str) and step_action.startswith("command.")
                and step_action[len("command."):] not in action_names):
            ld.error(sp + ("action",), f"{step_action!r} names no [[actions]] entry",
                     ("one of: " + ", ".join(f"command.{n}" for n in action_names)) if action_names
                     else f"an [[actions]] entry named {step_action[len('command.'):]!r} (none is configured)")
    playbook_ids = {p.id for p in BUILTIN} | {p.id for p in playbooks if p.id is not BAD}
    for section, items in (("services", services), ("logs", logs), ("log_patterns", log_patterns),
                           ("checks", checks)):
        for i, item in enumerate(items):
            pid = getattr(item, "playbook", None)
            if pid and pid is not BAD and pid not in playbook_ids:
                hint = difflib.get_close_matches(pid, sorted(playbook_ids), n=1)
                ld.error((section, i, "playbook"), f"{pid!r} does not name a playbook"
                         + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                         "one of: " + ", ".join(sorted(playbook_ids)) + " (built-in or [[playbooks]] id)")
    for i, lg in enumerate(logs):
        pid = lg.success_playbook
        if pid and pid is not BAD and pid not in playbook_ids:
            hint = difflib.get_close_matches(pid, sorted(playbook_ids), n=1)
            ld.error(("logs", i, "success_playbook"), f"{pid!r} does not name a playbook"
                     + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                     "one of: " + ", ".join(sorted(playbook_ids)) + " (built-in or [[playbooks]] id)")
    if any(pg.shared for pg in postgres.values() if pg.shared is not BAD) and \
            sum(1 for pg in postgres.values() if pg.shared is True) > 1:
        ld.error(("postgres",), "more than one [postgres.NAME] has shared = true", "at most one shared database")

    return Config(
        path=path, warroom=warroom, keys=keys, postgres=postgres, redis=redis, chain=chains,
        services=tuple(services), commands=tuple(commands), docker=docker, host=host,
        queues=tuple(queues), breakers=breakers, orders=orders, logs=tuple(logs),
        log_patterns=tuple(log_patterns), checks=tuple(checks), actions=tuple(actions),
        alertmanager=alertmanagers, escalation=escalation, incident=incident, playbooks=tuple(playbooks),
        record=record,
    )
