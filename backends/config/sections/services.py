"""Parsing of [[commands]], [[services]], [docker] and [host]."""

from __future__ import annotations

from backends.config.base import BAD, _Invalid, _replace
from backends.config.converters import _PM2_APP, _check_port
from backends.config.loader import _Loader, _Table
from backends.config.model import CommandConfig, DockerConfig, HostConfig, ServiceConfig


def parse_commands(ld: _Loader, root: _Table) -> list[CommandConfig]:
    """[[commands]]"""
    commands = []
    for t in ld.array_of_tables(root.raw("commands"), ("commands",)):
        commands.append(CommandConfig(
            name=t.take("name"),
            argv=t.take("argv"),
            timeout=t.take("timeout"),
            cwd=t.take("cwd"),
        ))
        t.done()
    return commands


def parse_services(ld: _Loader, root: _Table, commands: list[CommandConfig]) -> list[ServiceConfig]:
    """[[services]]"""
    services = []
    for t in ld.array_of_tables(root.raw("services"), ("services",)):
        kind = t.take("kind")
        svc = ServiceConfig(
            name=t.take("name"),
            kind=kind,
            compose_project=t.take("compose_project"),
            compose_service=t.take("compose_service"),
            container=t.take("container"),
            match=t.take("match"),
            status_command=t.take("status_command"),
            depends_on=t.take("depends_on"),
            health_url=t.take("health_url"),
            latency_warn=t.take("latency_warn"),
            logs=t.take("logs"),
            silence_after=t.take("silence_after"),
            restart=t.take("restart"),
            restart_command=t.take("restart_command"),
            interval=t.take("interval"),
            timeout=t.take("timeout"),
            role=t.take("role"),
            playbook=t.take("playbook"),
            pm2_app=t.take("app"),
            pm2_home=t.take("pm2_home"),
            pm2_bin=t.take("pm2_bin"),
        )
        p = t.path
        if kind != "pm2":
            for k in ("app", "pm2_home", "pm2_bin"):
                if t.data.get(k) is not None:
                    ld.error(p + (k,), f"{k} is for kind = \"pm2\" services", f"remove {k}")
        elif svc.pm2_app is None and isinstance(svc.name, str) and not _PM2_APP.match(svc.name):
            ld.error(p + ("name",), f"pm2 would read {svc.name!r} as another app ('all' is every app, a number a "
                     "pm_id)", 'app = "the pm2 app name"')
        if kind == "pm2" and svc.pm2_home and svc.pm2_home is not BAD:
            svc = _replace(svc, pm2_home=str(ld.resolve_path(svc.pm2_home)))
        if kind == "pm2" and svc.pm2_bin and svc.pm2_bin is not BAD and ("/" in svc.pm2_bin):
            svc = _replace(svc, pm2_bin=str(ld.resolve_path(svc.pm2_bin)))
        if kind == "docker" and not (svc.container or svc.compose_service):
            ld.error(p, "a docker service needs compose_service or container",
                     'compose_service = "NAME" (with compose_project) or container = "NAME"')
        if kind == "process" and t.data.get("match") is None:
            ld.error(p, "a process service needs match", 'match = "regex on the command line"')
        if kind == "command" and not svc.status_command:
            ld.error(p, "a command service needs status_command", "status_command = a [[commands]] name")
        if kind == "http" and not svc.health_url:
            ld.error(p, "an http service needs health_url", 'health_url = "http://127.0.0.1:PORT/health"')
        if svc.restart and svc.restart_command:
            ld.error(p + ("restart_command",), "both restart and restart_command are set",
                     "one of restart or restart_command")
        if isinstance(svc.logs, str) and svc.logs != "docker" and svc.logs not in \
                {c.name for c in commands}:
            svc = _replace(svc, logs=ld.resolve_glob(svc.logs))
        services.append(svc)
        t.done()
    return services


def parse_docker(ld: _Loader, root: _Table) -> DockerConfig:
    """[docker]"""
    docker = DockerConfig()
    t = ld.table(root.raw("docker"), ("docker",)) if root.has("docker") else None
    if t:
        docker = DockerConfig(
            host=t.take("host"),
            compose_command=t.take("compose_command"),
            stats=t.take("stats"),
            stats_interval=t.take("stats_interval"),
            timeout=t.take("timeout"),
            interval=t.take("interval"),
        )
        if isinstance(docker.host, str) and docker.host:
            try:
                _check_port(docker.host)
            except _Invalid as e:
                ld.error(("docker", "host"), e.message, e.expected)
        t.done()
    return docker


def parse_host(ld: _Loader, root: _Table) -> HostConfig | None:
    """[host]"""
    host = None
    t = ld.table(root.raw("host"), ("host",)) if root.has("host") else None
    if t:
        host = HostConfig(
            cpu_warn=t.take("cpu_warn"),
            cpu_for=t.take("cpu_for"),
            memory_warn=t.take("memory_warn"),
            disk_warn=t.take("disk_warn"),
            disks=t.take("disks"),
            interval=t.take("interval"),
        )
        t.done()
    return host
