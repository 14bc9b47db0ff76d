"""Parsing of [[logs]] and [[log_patterns]]."""

from __future__ import annotations

from backends.config.base import BAD
from backends.config.loader import _Loader, _Table
from backends.config.model import LogConfig, LogPatternConfig


def parse_logs(ld: _Loader, root: _Table) -> list[LogConfig]:
    """[[logs]]"""
    logs = []
    for t in ld.array_of_tables(root.raw("logs"), ("logs",)):
        lg = LogConfig(
            name=t.take("name"),
            path=t.take("path"),
            container=t.take("container"),
            command=t.take("command"),
            service=t.take("service"),
            silence_after=t.take("silence_after"),
            success=t.take("success"),
            success_silence=t.take("success_silence"),
            success_playbook=t.take("success_playbook"),
            playbook=t.take("playbook"),
            since=t.take("since"),
            error_spike=t.take("error_spike"),
            max_line=t.take("max_line"),
        )
        for k in ("success_silence", "success_playbook"):
            if getattr(lg, k) is not None and getattr(lg, k) is not BAD and not lg.success:
                ld.error(t.path + (k,), f"{k} without success markers",
                         'success = ["Event processed successfully"] (or remove ' + k + ")")
        given = [k for k in ("path", "container", "command") if getattr(lg, k)]
        if len(given) != 1:
            ld.error(t.path, "a log source needs exactly one of path, container or command"
                     + (f" (got {', '.join(given)})" if given else ""),
                     'path = "logs/app.log", container = "NAME" or command = a [[commands]] name')
        logs.append(lg)
        t.done()
    return logs


def parse_log_patterns(ld: _Loader, root: _Table) -> list[LogPatternConfig]:
    """[[log_patterns]]"""
    log_patterns = []
    for t in ld.array_of_tables(root.raw("log_patterns"), ("log_patterns",)):
        log_patterns.append(LogPatternConfig(
            pattern=t.take("pattern"),
            severity=t.take("severity"),
            name=t.take("name"),
            playbook=t.take("playbook"),
            sources=t.take("sources"),
            window=t.take("window"),
            min_count=t.take("min_count"),
        ))
        t.done()
    return log_patterns
