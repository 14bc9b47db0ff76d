"""Logs: follow files, containers and streaming commands; parse levels; count; alert.

Sources
- files, followed like `tail -F` by polling (a stat() every 0.25 s when idle, no
  inotify): a file that does not exist yet, rotation by rename (the old inode is
  read to its end, then the new file from its start), truncation (copytruncate),
  deletion and re-creation, and globs (`logs/*.log`, new files picked up);
- docker container logs, streamed in a thread (`since` a window, follow), reconnecting
  when the container stops or restarts (no line is repeated: docker timestamps);
- streaming commands (`journalctl -f -o json`, `kubectl logs -f`, `pm2 logs --raw`),
  run from an argv list (never a shell) and restarted when they exit.

Parsing turns raw bytes into `LogLine`s: JSON lines (pino, bunyan, winston,
structlog, Rust tracing, zap, journald), logfmt, a JSON object after a prefix
(`EVENT_LOG: {...}`), or plain text with level words. Undecodable bytes and control
characters are escaped (\\xNN), long lines are cut; nothing crashes the follower.

`LogHub` runs the sources, keeps a bounded buffer of recent lines and exact
per-second counts over the last 15 minutes per source, and is a monitor `Source`
("logs") whose readings (`LogSignals`) feed the rules registered below: silence,
configured patterns, error spikes, and success markers that stop (lines keep coming
but none says "Event processed successfully" for `success_silence`, default
`silence_after`: P2, playbook events-not-processed unless `success_playbook`).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob as _glob
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, BinaryIO

from backends.engine.rules import RuleContext, rule
from backends.model import Finding, Level, LogLine, LogSignalReading, Severity
from backends.sanitize import (  # the one sanitiser (shared with every output path)
    MAX_LINE_CHARS,
    sanitize,
)
from backends.units import parse_duration

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.25  # seconds between stat() calls of a followed file
WINDOW_S = 900  # 15 minutes of per-second buckets
DEFAULT_BUFFER = 10_000

# --------------------------------------------------------------------------- parsing

_LEVEL_WORDS = {
    "trace": Level.TRACE,
    "trc": Level.TRACE,
    "debug": Level.DEBUG,
    "dbg": Level.DEBUG,
    "verbose": Level.DEBUG,
    "silly": Level.DEBUG,
    "info": Level.INFO,
    "inf": Level.INFO,
    "information": Level.INFO,
    "informational": Level.INFO,
    "notice": Level.INFO,
    "log": Level.INFO,
    "http": Level.INFO,
    "warn": Level.WARN,
    "warning": Level.WARN,
    "wrn": Level.WARN,
    "error": Level.ERROR,
    "err": Level.ERROR,
    "eror": Level.ERROR,
    "fatal": Level.FATAL,
    "critical": Level.FATAL,
    "crit": Level.FATAL,
    "panic": Level.FATAL,
    "emerg": Level.FATAL,
    "emergency": Level.FATAL,
    "alert": Level.FATAL,
    "severe": Level.ERROR,
}
# Plain text: upper-case level words anywhere, any case inside brackets, or "error:" at the start.
_UPPER_LEVEL = re.compile(r"\b(FATAL|CRITICAL|CRIT|PANIC|EMERG|ALERT|ERROR|ERR|WARNING|WARN|INFO|NOTICE|DEBUG|TRACE)\b")
# `[error]`, `<warn>`, and structlog's ConsoleRenderer pads inside: `[error    ]`, `[info     ]`
_BRACKET_LEVEL = re.compile(
    r"[\[<(]\s*(fatal|critical|crit|panic|error|err|warning|warn|info|notice|debug|trace)\s*[\]>)]",
    re.IGNORECASE,
)
# At the start: winston's `error: msg` (colour codes already removed), Python logging's
# `ERROR:root:msg`, a Node error's `TypeError: msg` / `Error [ERR_X]: msg`; after a timestamp
# (winston's printf with format.timestamp()): `2026-12-03T05:55:13.190Z error: msg`
_COLON_WORDS = (r"(fatal|critical|error|warning|warn|info|notice|http|verbose|debug|silly|trace"
                r"|(?:Uncaught\s+)?[A-Z]\w*(?:Error|Exception)(?:\s*\[[^\]]{1,64}\])?)\s*:")
_COLON_LEVEL = re.compile(r"\s*" + _COLON_WORDS, re.IGNORECASE)
_TS_COLON_LEVEL = re.compile(
    r"\s*\[?\d{4}-\d{2}-\d{2}[T ][\d:.,]+(?:Z|[+-]\d{2}:?\d{2})?\]?\s+" + _COLON_WORDS, re.IGNORECASE)
_EXC_NAME = re.compile(r"(?:uncaught\s+)?\w*(?:error|exception)\b.*", re.IGNORECASE)
_KV_LEVEL = re.compile(r"\blevel\s*[=:]\s*\"?(\w+)", re.IGNORECASE)
_LEADING_TS = re.compile(
    r"^\s*\[?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)"
)
_LOGFMT = re.compile(r'([A-Za-z_][\w.\-/@]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_LEVEL_KEYS = ("level", "lvl", "severity", "levelname", "log.level", "loglevel", "PRIORITY", "priority", "@l")
_MESSAGE_KEYS = ("msg", "message", "MESSAGE", "fields.message", "event", "@m", "@mt", "log")
_TIME_KEYS = ("timestamp", "ts", "time", "@timestamp", "@t", "datetime", "date", "__REALTIME_TIMESTAMP")
_SYSLOG_PRIORITY = {0: Level.FATAL, 1: Level.FATAL, 2: Level.FATAL, 3: Level.ERROR, 4: Level.WARN,
                    5: Level.INFO, 6: Level.INFO, 7: Level.DEBUG}


def level_from(value: Any, key: str = "level") -> Level:
    """A level value from any logger (name, pino number, syslog priority) -> Level."""
    if isinstance(value, bool) or value is None:
        return Level.UNKNOWN
    if isinstance(value, str):
        v = value.strip().lower()
        if v.isdigit():
            return level_from(int(v), key)
        found = _LEVEL_WORDS.get(v)
        if found is None:
            # Go slog's offsets ("WARN+2", "DEBUG-4"), "warn1"
            found = _LEVEL_WORDS.get(v.rstrip("0123456789").rstrip("+-"), Level.UNKNOWN)
        return found
    if isinstance(value, (int, float)):
        n = int(value)
        if key.lower() in ("priority", "syslog", "syslog_priority") or (0 <= n <= 7 and key.lower() != "level"):
            return _SYSLOG_PRIORITY.get(n, Level.UNKNOWN)
        if n >= 60:
            return Level.FATAL
        if n >= 50:
            return Level.ERROR
        if n >= 40:
            return Level.WARN
        if n >= 30:
            return Level.INFO
        if n >= 20:
            return Level.DEBUG
        if n >= 10:
            return Level.TRACE
        return _SYSLOG_PRIORITY.get(n, Level.UNKNOWN)
    return Level.UNKNOWN


_FRACTION = re.compile(r"^(.*?\.\d{6})\d+(.*)$")
_TIME_CACHE: dict[str, datetime | None] = {}


def parse_time(value: Any, key: str = "time") -> datetime | None:
    """ISO 8601 text, or epoch seconds / milliseconds / microseconds -> aware UTC datetime."""
    if isinstance(value, str):
        # lines written together share their timestamp text: parse each text once
        try:
            return _TIME_CACHE[value]
        except KeyError:
            pass
        dt = _parse_time(value, key)
        if len(_TIME_CACHE) >= 256:
            _TIME_CACHE.clear()
        _TIME_CACHE[value] = dt
        return dt
    return _parse_time(value, key)


def _parse_time(value: Any, key: str) -> datetime | None:
    try:
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, str):
            v = value.strip()
            if not v:
                return None
            if v.replace(".", "", 1).isdigit():
                return _parse_time(float(v), key)
            v = v.replace(",", ".", 1) if "," in v[:26] else v
            if v.endswith(("Z", "z")):
                v = v[:-1] + "+00:00"
            # fromisoformat takes at most 6 fractional digits
            m = _FRACTION.match(v) if "." in v else None
            if m:
                v = m.group(1) + m.group(2)
            dt = datetime.fromisoformat(v)
            if dt.tzinfo is None:
                dt = dt.astimezone()  # naive: the host's local time
            return dt.astimezone(UTC)
        if isinstance(value, (int, float)):
            x = float(value)
            if key == "__REALTIME_TIMESTAMP" or x > 1e15:
                x /= 1e6
            elif x > 1e12:
                x /= 1e3
            if not (0 < x < 1e11):
                return None
            return datetime.fromtimestamp(x, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _dig(obj: Mapping[str, Any], dotted: str) -> Any:
    if dotted in obj:
        return obj[dotted]
    if "." in dotted:
        cur: Any = obj
        for part in dotted.split("."):
            if not isinstance(cur, Mapping) or part not in cur:
                return None
            cur = cur[part]
        return cur
    return None


def _from_mapping(obj: Mapping[str, Any]) -> tuple[Level, str, datetime | None]:
    level = Level.UNKNOWN
    for k in _LEVEL_KEYS:
        v = _dig(obj, k)
        if v is not None:
            if isinstance(v, Mapping):  # ECS: "log": {"level": ...}
                continue
            level = level_from(v, k)
            if level is not Level.UNKNOWN:
                break
    message = ""
    for k in _MESSAGE_KEYS:
        v = _dig(obj, k)
        if isinstance(v, str) and v:
            message = v
            break
        if isinstance(v, list) and k == "MESSAGE":  # journald: non-UTF-8 message as a byte list
            with contextlib.suppress(Exception):
                message = bytes(v).decode("utf-8", errors="backslashreplace")
                break
    at = None
    for k in _TIME_KEYS:
        v = obj.get(k)
        if v is not None and not isinstance(v, (Mapping, list)):
            at = parse_time(v, k)
            if at is not None:
                break
    if level is Level.UNKNOWN and isinstance(obj.get("error") or obj.get("err"), (str, Mapping)):
        level = Level.ERROR
    return level, message, at


def _json_object(text: str) -> tuple[str, dict[str, Any]] | None:
    """A JSON object: the whole line, or after a prefix (`EVENT_LOG: {...}`)."""
    s = text.rstrip()
    if not s.endswith("}"):
        return None
    start = s.find("{")
    if start < 0:
        return None
    if start > 200:
        return None
    try:
        obj = json.loads(s[start:])
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    return s[:start].strip().rstrip(":").strip(), obj


_NO_FIELDS: Mapping[str, Any] = MappingProxyType({})


def _logfmt(text: str) -> dict[str, str] | None:
    if "level=" not in text and "lvl=" not in text and "msg=" not in text and "at=" not in text:
        return None
    pairs = _LOGFMT.findall(text)
    if len(pairs) < 2:
        return None
    out: dict[str, str] = {}
    for k, v in pairs:
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            v = v[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[k] = v
    if not any(k in out for k in ("level", "lvl", "msg", "message", "severity")):
        # Heroku's router and friends: `at=info method=GET ...`, `at=error code=H12 ...`
        if level_from(out.get("at")) is Level.UNKNOWN:
            return None
    return out


def _parse(text: str) -> tuple[Level, str, datetime | None, Mapping[str, Any]]:
    """Level, message, time and structured fields of a sanitized line."""
    level = Level.UNKNOWN
    message = ""
    at: datetime | None = None
    fields: Mapping[str, Any] = _NO_FIELDS
    try:
        found = _json_object(text) if "{" in text else None
        if found is not None:
            prefix, obj = found
            level, message, at = _from_mapping(obj)
            fields = obj
            if prefix:
                fields = {"prefix": prefix, **obj}
                if level is Level.UNKNOWN:
                    level = _plain_level(prefix)
                if level is Level.UNKNOWN:
                    st = str(obj.get("status", "")).lower()
                    if st in ("failed", "failure", "error"):
                        level = Level.ERROR
                    elif obj.get("error"):
                        level = Level.ERROR
                if not message:
                    message = text
        else:
            kv = _logfmt(text)
            if kv is not None:
                level, message, at = _from_mapping(kv)
                if level is Level.UNKNOWN and "at" in kv:
                    level = level_from(kv["at"])
                fields = kv
            else:
                level = _plain_level(text)
        if at is None:
            m = _LEADING_TS.match(text)
            if m:
                at = parse_time(m.group(1))
    except Exception:  # pragma: no cover - defensive
        log.debug("log line parse failed", exc_info=True)
    return level, message, at, fields


def line_fields(text: str) -> Mapping[str, Any]:
    """The structured fields of a line's text (`LogLine.fields` asks this on demand)."""
    return _parse(text)[3]


def parse_line(
    source: str,
    raw: bytes | str,
    *,
    seq: int = 0,
    max_chars: int = MAX_LINE_CHARS,
    now: datetime | None = None,
) -> LogLine:
    """One raw line -> LogLine. Never raises. The parsed fields are not kept (the hub
    holds 10,000 lines): `LogLine.fields` parses them again when something reads them."""
    return _line_from_text(source, _safe_text(raw, max_chars), seq, now)


def _safe_text(raw: bytes | str, max_chars: int) -> str:
    try:
        return sanitize(raw, max_chars)
    except Exception:  # pragma: no cover - defensive: a line must never stop a follower
        return repr(raw)[:max_chars]


def _line_from_text(source: str, text: str, seq: int, now: datetime | None) -> LogLine:
    level, message, at, _fields = _parse(text)
    if level is Level.UNKNOWN and text.startswith(_TRACEBACK):
        level = Level.ERROR  # an uncaught exception's traceback, on its own
    return LogLine(
        source=source,
        text=text,
        level=level,
        at=at or now or datetime.now(UTC),
        message=message or text,
        seq=seq,
    )


def _plain_level(text: str) -> Level:
    head = text[:300]
    # a line that starts with a word: its `level:` / `SomeError:` first (winston, logging, Node)
    if ":" in head and not head[:1].isdigit():
        lv = _colon_level(_COLON_LEVEL.match(head))
        if lv is not Level.UNKNOWN:
            return lv
    if "[" in head or "<" in head or "(" in head:
        m = _BRACKET_LEVEL.search(head)
        if m:
            return _LEVEL_WORDS.get(m.group(1).lower(), Level.UNKNOWN)
    m = _UPPER_LEVEL.search(head)
    if m:
        return _LEVEL_WORDS.get(m.group(1).lower(), Level.UNKNOWN)
    if ":" in head and head[:1].isdigit():
        lv = _colon_level(_TS_COLON_LEVEL.match(head))
        if lv is not Level.UNKNOWN:
            return lv
    lower = head.lower()
    if "level" in lower:
        m = _KV_LEVEL.search(head)
        if m:
            return _LEVEL_WORDS.get(m.group(1).lower(), Level.UNKNOWN)
    return Level.UNKNOWN


def _colon_level(m: re.Match[str] | None) -> Level:
    if m is None:
        return Level.UNKNOWN
    word = m.group(1).lower()
    lv = _LEVEL_WORDS.get(word)
    if lv is not None:
        return lv
    return Level.ERROR if _EXC_NAME.fullmatch(word) else Level.UNKNOWN


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSpec:
    """One log source. Exactly one of `path` (file or glob), `container`, `command`."""

    name: str
    path: str | None = None
    container: str | None = None
    compose: tuple[str, str] | None = None  # (project, service): find the container by labels
    command: tuple[str, ...] | None = None
    silence_after: float | None = None  # seconds without a line -> finding
    silence_playbook: str | None = None
    silence_severity: Severity = Severity.P1
    success: tuple[str, ...] = ()  # success markers (substring or regex)
    # lines but no success marker for this long -> finding (None: silence_after)
    success_silence: float | None = None
    success_playbook: str | None = None  # that finding's playbook (None: events-not-processed)
    service: str | None = None  # the [[services]] entry these logs belong to
    since: float = 300.0  # docker: read this far back on start
    backlog_lines: int = 50  # files: lines shown from the end on start
    error_spike: int = 20  # errors in one minute that make a spike finding
    restart_delay: float = 1.0  # commands: first delay before a restart
    max_line: int = MAX_LINE_CHARS
    cwd: str | None = None

    @property
    def kind(self) -> str:
        if self.container or self.compose:
            return "docker"
        if self.command:
            return "command"
        return "file"

    @property
    def target(self) -> str:
        if self.compose:
            return f"compose {self.compose[0]}/{self.compose[1]}"
        if self.container:
            return f"container {self.container}"
        if self.command:
            return " ".join(self.command)
        return self.path or ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PatternSpec:
    """A configured pattern: a line matching it makes a finding pointing to a playbook."""

    pattern: str
    severity: Severity = Severity.P2
    playbook: str | None = None
    name: str = ""
    sources: tuple[str, ...] = ()  # empty: every source
    window: float = 300.0  # count hits over this many seconds (max 900)
    min_count: int = 1
    ignore_case: bool = False

    @property
    def label(self) -> str:
        return self.name or self.pattern


@dataclass(frozen=True, slots=True, kw_only=True)
class PatternHit:
    pattern: str  # label
    severity: Severity
    playbook: str | None
    count: int  # hits within the window
    window_s: float
    min_count: int = 1
    last_text: str = ""
    last_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSignals(LogSignalReading):
    """LogSignalReading plus what the rules need from the source's config."""

    kind: str = "file"
    target: str = ""
    state: str = "following"  # following | waiting | reconnecting | restarting | failed | stopped
    detail: str = ""
    service: str | None = None
    silence_after_s: float | None = None
    silence_playbook: str | None = None
    silence_severity: Severity = Severity.P1
    error_spike: int = 20
    hits: tuple[PatternHit, ...] = ()
    total_lines: int = 0
    # success markers (None / empty when the source has none)
    success_markers: tuple[str, ...] = ()
    last_success_at: datetime | None = None
    success_silent_for_s: float | None = None  # since the last success marker (or the start)
    lines_since_success: int = 0  # lines counted after the last success marker
    success_silence_s: float | None = None
    success_playbook: str | None = None


def _seconds(value: Any, default: float | None = None) -> float | None:
    if value is None or value == "":
        return default
    return parse_duration(value)


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _default_silence_playbook(name: str) -> str:
    n = name.lower()
    if "listener" in n:
        return "listener-failure"
    if "processor" in n or "event" in n:
        return "events-not-processed"
    if "api" in n or "gateway" in n:
        return "api-down"
    return "service-down"


def specs_from_config(config: Any) -> tuple[list[LogSpec], list[PatternSpec]]:
    """`[[logs]]`, `[[log_patterns]]` and the `logs =` key of `[[services]]` -> specs.

    Works on the typed config (attributes) or on the raw TOML dict (keys).
    """
    specs: list[LogSpec] = []
    names: set[str] = set()
    commands = {(_get(c, "name")): c for c in (_get(config, "commands") or [])}
    services = list(_get(config, "services") or [])
    svc_by_name = {_get(s, "name"): s for s in services}

    def playbook_for(service: str | None, explicit: Any, name: str) -> str:
        if explicit:
            return str(explicit)
        svc = svc_by_name.get(service) if service else None
        pb = _get(svc, "playbook") if svc is not None else None
        return str(pb) if pb else _default_silence_playbook(service or name)

    for entry in _get(config, "logs") or []:
        name = str(_get(entry, "name"))
        service = _get(entry, "service")
        cmd = _get(entry, "command")
        argv = _argv(cmd, commands, service)
        success = _get(entry, "success") or ()
        if isinstance(success, str):
            success = (success,)
        specs.append(
            LogSpec(
                name=name,
                path=_get(entry, "path"),
                container=_get(entry, "container"),
                command=argv,
                silence_after=_seconds(_get(entry, "silence_after")),
                silence_playbook=playbook_for(service, _get(entry, "playbook"), name),
                success=tuple(success),
                success_silence=_seconds(_get(entry, "success_silence")),
                success_playbook=_get(entry, "success_playbook"),
                service=service,
                since=_seconds(_get(entry, "since"), 300.0) or 300.0,
                error_spike=int(_get(entry, "error_spike", 20) or 20),
                max_line=int(_get(entry, "max_line", MAX_LINE_CHARS) or MAX_LINE_CHARS),
            )
        )
        names.add(name)
    covered = {s.service for s in specs if s.service} | names
    for svc in services:
        name = _get(svc, "name")
        logs = _get(svc, "logs")
        if not logs or name in covered:
            continue
        kw: dict[str, Any] = {}
        if logs == "docker":
            project, cservice = _get(svc, "compose_project"), _get(svc, "compose_service")
            if _get(svc, "container") or not (project and cservice):
                kw["container"] = _get(svc, "container") or cservice or name
            else:
                kw["compose"] = (str(project), str(cservice))
        elif logs in commands:
            kw["command"] = _argv(logs, commands, name)
        else:
            kw["path"] = str(logs)
        same = next((i for i, s in enumerate(specs) if
                     (kw.get("path") and s.path == kw["path"]) or
                     (kw.get("container") and s.container == kw["container"])), None)
        silence = _seconds(_get(svc, "silence_after"))
        if same is not None:
            # the service's logs are already a [[logs]] source: attach the service to it
            from dataclasses import replace

            s = specs[same]
            specs[same] = replace(
                s, service=s.service or name,
                silence_after=s.silence_after if s.silence_after is not None else silence,
                silence_playbook=playbook_for(s.service or name, None, s.name)
                if not s.service else s.silence_playbook,
            )
            continue
        specs.append(
            LogSpec(
                name=name,
                service=name,
                silence_after=silence,
                silence_playbook=playbook_for(name, None, name),
                **kw,
            )
        )
    patterns = []
    for p in _get(config, "log_patterns") or []:
        sev = _get(p, "severity", "P2")
        sources = _get(p, "logs") or _get(p, "sources") or _get(p, "source") or ()
        if isinstance(sources, str):
            sources = (sources,)
        pat = _get(p, "pattern")
        ignore_case = bool(_get(p, "ignore_case", False))
        if isinstance(pat, re.Pattern):
            ignore_case = ignore_case or bool(pat.flags & re.IGNORECASE)
            pat = pat.pattern
        patterns.append(
            PatternSpec(
                pattern=str(pat),
                severity=sev if isinstance(sev, Severity) else Severity.parse(str(sev)),
                playbook=_get(p, "playbook"),
                name=str(_get(p, "name") or ""),
                sources=tuple(sources),
                window=min(float(WINDOW_S), _seconds(_get(p, "window"), 300.0) or 300.0),
                min_count=int(_get(p, "min_count", 1) or 1),
                ignore_case=ignore_case,
            )
        )
    return specs, patterns


def _argv(cmd: Any, commands: Mapping[str, Any], service: str | None = None) -> tuple[str, ...] | None:
    if not cmd:
        return None
    if isinstance(cmd, (list, tuple)):
        argv = [str(a) for a in cmd]
    elif cmd in commands:
        argv = [str(a) for a in (_get(commands[cmd], "argv") or ())]
    else:
        import shlex

        argv = shlex.split(str(cmd))  # split like a shell would, but never run one
    if service:
        argv = [service if a == "{service}" else a for a in argv]
    return tuple(argv)


# --------------------------------------------------------------------------- counting


class _Ring:
    """Exact counts per second over the last `size` seconds, in O(size) memory."""

    __slots__ = ("size", "stamps", "counts")

    def __init__(self, series: int, size: int = WINDOW_S) -> None:
        self.size = size
        self.stamps = [-1] * size
        self.counts = [[0] * size for _ in range(series)]

    def add(self, sec: int, series: int, n: int = 1) -> None:
        i = sec % self.size
        if self.stamps[i] != sec:
            if self.stamps[i] > sec:  # older than the window's slot owner: too old to count
                return
            self.stamps[i] = sec
            for c in self.counts:
                c[i] = 0
        self.counts[series][i] += n

    def total(self, now_sec: int, seconds: int, series: int) -> int:
        lo = now_sec - seconds
        c = self.counts[series]
        return sum(c[i] for i, s in enumerate(self.stamps) if lo < s <= now_sec)

    def totals(self, now_sec: int, windows: Sequence[int], series: int) -> tuple[int, ...]:
        c = self.counts[series]
        out = [0] * len(windows)
        for i, s in enumerate(self.stamps):
            if s < 0 or s > now_sec:
                continue
            age = now_sec - s
            v = c[i]
            if not v:
                continue
            for j, w in enumerate(windows):
                if age < w:
                    out[j] += v
        return tuple(out)


_LINES, _ERRORS, _WARNINGS, _SUCCESS = range(4)
_WINDOWS = (60, 300, 900)


def _three(t: tuple[int, ...]) -> tuple[int, int, int]:
    return (t[0], t[1], t[2])


class _SeenError:
    """A distinct recent error of a source: how often it came, its newest text."""

    __slots__ = ("count", "text")

    def __init__(self, count: int, text: str) -> None:
        self.count = count
        self.text = text


class _SourceState:
    def __init__(self, spec: LogSpec, started: float, patterns: list[tuple[PatternSpec, re.Pattern[str]]]) -> None:
        self.spec = spec
        self.ring = _Ring(4)
        self.last_line_at: float | None = None
        self.last_success_at: float | None = None
        self.lines_since_success = 0
        self.first_counted: float | None = None  # oldest backlog line counted (rates span back to it)
        self.started = started
        self.total = 0
        self.state = "starting"
        self.detail = ""
        self.errors: OrderedDict[str, _SeenError] = OrderedDict()  # normalized -> how often, the newest text
        self.success = [
            re.compile(s if _looks_regex(s) else re.escape(s)) for s in spec.success
        ]
        self.patterns = [
            (p, rx) for p, rx in patterns if not p.sources or spec.name in p.sources or
            (spec.service and spec.service in p.sources)
        ]
        self.pattern_rings: dict[str, _Ring] = {}
        self.pattern_last: dict[str, tuple[str, float]] = {}
        # the entry that continuation lines (a traceback, a stack) would join (see _Entry)
        self.open: _Entry | None = None


def _looks_regex(s: str) -> bool:
    return any(ch in s for ch in "^$[]()|*+?\\")


_NORMALIZE = re.compile(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{8,}\b|\d+")

# --------------------------------------------------------------------------- multi-line entries
#
# A Python traceback or a Node stack is one entry: its first line and its continuation
# lines, kept as one LogLine whose text holds them joined by "\n" (each line sanitized on
# its own), counted once. Continuation lines of one source:
#   - an indented line (space, tab) or a box-drawing line (rich's traceback), or a blank
#     line inside a traceback, after an entry;
#   - "Traceback (most recent call last):" after an entry that is an error / warning or has
#     no level (logging.exception's message line), within MULTILINE_GAP_S; after an INFO or
#     DEBUG line it starts its own entry (an uncaught exception), at level ERROR;
#   - inside a traceback, the exception line that ends it (`ValueError: boom`) and the
#     chained-exception sentences; inside a Node error's `{ code: ... }` block, up to `}`.
# A continuation line more than MULTILINE_GAP_S after the entry's last line starts its own.

MULTILINE_GAP_S = 2.0  # a continuation line later than this after the entry's last line is its own
MULTILINE_MAX_LINES = 200  # lines kept per entry; the rest are counted in a last line
MULTILINE_MAX_CHARS = 32_768  # characters kept per entry

_TRACEBACK = "Traceback (most recent call last):"
_CHAINED = ("During handling of the above exception, another exception occurred:",
            "The above exception was the direct cause of the following exception:")
_EXC_LINE = re.compile(r"[A-Za-z_][\w.]*(?::.*)?")  # `ValueError: boom`, `KeyboardInterrupt`
_NOT_KEPT = re.compile(r"\n… \[(\d+) more lines? not kept\]$")
_M_LINE, _M_TRACEBACK, _M_EXC_DONE, _M_BRACE = range(4)
_CONTINUATION_FIRST = frozenset(" \t│╭╰┃")  # a line starting so may continue the line before


def _entry_mode(text: str) -> int:
    return _M_TRACEBACK if text.startswith(_TRACEBACK) else _M_LINE


class _Entry:
    """The open entry of a source: its line (as published), where it is, its mode."""

    __slots__ = ("line", "index", "mode", "last", "sec", "counted", "lines", "chars", "dropped", "blanks", "parts",
                 "remembered")

    def __init__(self, line: LogLine, index: int | None, mode: int, last: float, sec: int,
                 *, counted: bool) -> None:
        self.line = line
        self.index = index  # in the batch being ingested; None once it is in the buffer
        self.mode = mode
        self.last = last  # when its last line arrived (the hub's clock)
        self.sec = sec  # the second it was counted in
        self.counted = counted
        self.lines = 1
        self.chars = len(line.text)
        self.dropped = 0
        self.blanks = 0  # blank lines seen after the last kept one (kept if a line follows)
        self.parts: list[str | None] = []  # continuation lines not yet in `line` (None: not kept)
        # the error text it is among the source's recent errors by (None: not yet); a traceback's
        # is replaced when its exception line arrives in a later read
        self.remembered: str | None = None

    def add(self, text: str, mode: int, now: float) -> None:
        self.mode = mode
        self.last = now
        if not text or text.isspace():
            self.blanks += 1
            return
        for _ in range(self.blanks):
            self._keep("")
        self.blanks = 0
        self._keep(text)

    def _keep(self, text: str) -> None:
        if self.lines >= MULTILINE_MAX_LINES or self.chars + len(text) > MULTILINE_MAX_CHARS:
            self.dropped += 1
            self.parts.append(None)  # a change to publish (the count of lines not kept)
            return
        self.parts.append(text)
        self.lines += 1
        self.chars += len(text) + 1

    def build(self) -> LogLine:
        old = self.line
        kept = [p for p in self.parts if p is not None]
        body = old.text
        if body.endswith("not kept]"):
            m = _NOT_KEPT.search(body)
            if m:
                body = body[: m.start()]
        text = "\n".join([body, *kept]) if kept else body
        if self.dropped:
            text += f"\n… [{self.dropped} more line{'s' if self.dropped > 1 else ''} not kept]"
        self.parts = []
        level = old.level
        message = old.message
        if self.mode in (_M_TRACEBACK, _M_EXC_DONE) and level is Level.UNKNOWN:
            level = Level.ERROR
        if text.startswith(_TRACEBACK) and self.mode == _M_EXC_DONE:
            # an uncaught exception on its own: the exception line says what it is
            last = text.rstrip().rsplit("\n", 1)[-1]
            if _EXC_LINE.fullmatch(last):
                message = last
        return LogLine(source=old.source, text=text, level=level, at=old.at, message=message,
                       notice=old.notice, seq=old.seq)


def _error_text(line: LogLine) -> str:
    """What a source's recent errors show for an error entry."""
    return (line.message or line.text)[:300]


def entry_line_count(text: str) -> int:
    """How many lines a (multi-line) entry's text stands for, the lines not kept included."""
    n = text.count("\n") + 1
    if n > 1 and text.endswith("not kept]"):
        m = _NOT_KEPT.search(text)
        if m:
            n += int(m.group(1)) - 1
    return n


def _continuation(entry: _Entry, text: str) -> int | None:
    """The entry's mode after `text` joins it, or None when `text` starts its own entry."""
    mode = entry.mode
    if mode == _M_BRACE:  # the block's own lines are indented; `}` at the start closes it
        if text == "}":
            return _M_LINE
        return _M_BRACE if not text or text[0] in " \t" else None
    if not text or text.isspace():
        return mode if mode != _M_LINE or entry.lines > 1 else None
    first = text[0]
    if first in "│╭╰┃":  # rich's traceback box (structlog's ConsoleRenderer with rich installed)
        return _M_TRACEBACK if mode != _M_LINE or entry.lines > 1 or "Traceback" in text else None
    if first in " \t":
        if mode == _M_LINE and text.endswith(" {") and entry.lines > 1:
            return _M_BRACE  # a Node error's own properties after its stack: `    at x {`
        return _M_TRACEBACK if mode == _M_TRACEBACK else (mode if mode != _M_EXC_DONE else _M_TRACEBACK)
    if text.startswith(_TRACEBACK):
        if mode == _M_EXC_DONE:
            return _M_TRACEBACK
        if mode == _M_LINE and entry.lines == 1:
            lv = entry.line.level
            if lv is Level.UNKNOWN or lv >= Level.WARN:
                return _M_TRACEBACK
        return None
    if mode == _M_TRACEBACK and _EXC_LINE.fullmatch(text):
        return _M_EXC_DONE
    if mode == _M_EXC_DONE and text.startswith(_CHAINED):
        return _M_EXC_DONE
    return None


# --------------------------------------------------------------------------- followers


class _Follower:
    """Base: reads a source and hands raw lines to the hub."""

    def __init__(self, hub: LogHub, st: _SourceState) -> None:
        self.hub = hub
        self.st = st
        self.spec = st.spec
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run_safe(), name=f"logs:{self.spec.name}")

    async def _run_safe(self) -> None:
        while True:
            try:
                await self.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                from backends.errors import describe_exception

                self.st.state = "failed"
                self.st.detail = describe_exception(exc)
                log.warning("log source %s failed: %s", self.spec.name, self.st.detail)
                await asyncio.sleep(2.0)

    async def run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


class _LineSplitter:
    """Bytes -> complete lines, with a bounded partial line (a 1 MB line keeps 16 KB)."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.partial = bytearray()
        self.dropped = 0

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        start = 0
        n = len(data)
        while start < n:
            nl = data.find(b"\n", start)
            if nl < 0:
                self._append(data[start:])
                break
            self._append(data[start:nl])
            out.append(self._take())
            start = nl + 1
        return out

    def _append(self, chunk: bytes) -> None:
        room = self.keep - len(self.partial)
        if room >= len(chunk):
            self.partial += chunk
        else:
            if room > 0:
                self.partial += chunk[:room]
            self.dropped += len(chunk) - max(room, 0)

    def _take(self) -> bytes:
        line = bytes(self.partial)
        if line.endswith(b"\r"):
            line = line[:-1]
        if self.dropped:
            line = _Cut(line, self.dropped)
        self.partial = bytearray()
        self.dropped = 0
        return line

    def flush(self) -> list[bytes]:
        if self.partial or self.dropped:
            return [self._take()]
        return []


class _Cut(bytes):
    """A line whose tail was dropped while reading (length known, bytes not kept)."""

    dropped: int

    def __new__(cls, data: bytes, dropped: int) -> _Cut:
        obj = super().__new__(cls, data)
        obj.dropped = dropped
        return obj


class _FileHandle:
    def __init__(self, path: str, keep: int) -> None:
        self.path = path
        self.fh: BinaryIO | None = None
        self.ident: tuple[int, int] | None = None
        self.pos = 0
        self.split = _LineSplitter(keep)
        self.retiring: list[tuple[BinaryIO, _LineSplitter, float]] = []  # old inodes still drained

    def close(self) -> None:
        if self.fh is not None:
            with contextlib.suppress(OSError):
                self.fh.close()
        self.fh = None
        self.ident = None
        for fh, _, _ in self.retiring:
            with contextlib.suppress(OSError):
                fh.close()
        self.retiring = []


class FileFollower(_Follower):
    """tail -F by polling: late creation, rename rotation, copytruncate, delete + recreate, globs."""

    READ_CHUNK = 256 << 10  # at most 256 KB per file per tick: a huge backlog never stalls the loop
    BACKLOG_MAX = 4 << 20  # how far back the start reads to find `backlog_lines` whole lines
    RETIRE_S = 2.0  # keep draining a rotated-away inode this long (writers that still hold it)

    def __init__(self, hub: LogHub, st: _SourceState, interval: float = POLL_INTERVAL) -> None:
        super().__init__(hub, st)
        path = os.path.expanduser(self.spec.path or "")
        if self.spec.cwd and not os.path.isabs(path):
            path = os.path.join(self.spec.cwd, path)
        self.pattern = path
        self.is_glob = _glob.has_magic(path)
        self.interval = interval
        self.handles: dict[str, _FileHandle] = {}
        self.first = True
        self.keep = self.spec.max_line * 4 + 16
        self._glob_at = 0.0
        self._globbed: list[str] = []
        self._known: dict[tuple[int, int], float] = {}  # inodes already read (rotated names in a glob)
        self._behind = False

    async def run(self) -> None:
        self.st.state = "waiting"
        while True:
            self._behind = False
            await self.tick()
            self.first = False
            # a full chunk was read: more is waiting, read on without the idle pause
            await asyncio.sleep(0.005 if self._behind else self.interval)

    def _paths(self) -> list[str]:
        if not self.is_glob:
            return [self.pattern]
        now = time.monotonic()
        if self.first or now - self._glob_at >= 1.0 or not self.handles:
            self._glob_at = now
            self._globbed = sorted(p for p in _glob.glob(self.pattern) if os.path.isfile(p))
        return list(dict.fromkeys(self._globbed + list(self.handles)))

    async def tick(self) -> None:
        paths = self._paths()
        any_open = False
        for path in paths:
            h = self.handles.get(path)
            if h is None:
                h = self.handles[path] = _FileHandle(path, self.keep)
            lines = self._poll_file(h)
            if h.fh is not None:
                any_open = True
            elif self.is_glob and path not in self._globbed:
                h.close()
                self.handles.pop(path, None)
            if lines:
                await self.hub._ingest_async(self.st, lines)
        if any_open:
            self.st.state = "following"
            self.st.detail = f"{len([h for h in self.handles.values() if h.fh])} file(s)" if self.is_glob else ""
        else:
            self.st.state = "waiting"
            self.st.detail = f"no file matches {self.pattern}" if self.is_glob else f"{self.pattern} does not exist (yet)"

    def _open(self, h: _FileHandle, st: os.stat_result, from_end: bool) -> list[bytes]:
        try:
            fh = open(h.path, "rb")  # noqa: SIM115 - kept open while following
        except OSError as exc:
            self.st.detail = f"cannot open {h.path}: {exc.strerror}"
            return []
        fst = os.fstat(fh.fileno())
        h.fh = fh
        h.ident = (fst.st_dev, fst.st_ino)
        h.split = _LineSplitter(self.keep)
        h.pos = 0
        if h.ident in self._known:
            # a file we already read under another name (app.log -> app.log.1 in a glob)
            fh.seek(0, os.SEEK_END)
            h.pos = fh.tell()
            return []
        self._known[h.ident] = time.monotonic()
        if len(self._known) > 4096:
            for k in list(self._known)[:1024]:
                del self._known[k]
        if from_end:
            # show the last few lines, like tail; their counts use their own timestamps
            size = fst.st_size
            want = max(1, self.spec.backlog_lines)
            back = min(size, 256 * want)
            # a long last line (1 MB) must not hide the lines before it: read further back
            # until the window holds the lines wanted or BACKLOG_MAX bytes
            while True:
                fh.seek(size - back)
                data = fh.read(back)
                if back >= size or data.count(b"\n") > want or back >= self.BACKLOG_MAX:
                    break
                back = min(size, back * 4, self.BACKLOG_MAX)
            if back:
                h.pos = size
                lines = data.split(b"\n")
                lines = lines[1:] if back < size else lines  # first piece may be a partial line
                tail_partial = lines.pop() if lines else b""
                h.split.feed(tail_partial)
                n = self.spec.backlog_lines
                lines = [ln.rstrip(b"\r") for ln in lines][-n:] if n > 0 else []
                self.hub._note_activity(self.st, fst.st_mtime)
                if lines:
                    self.hub._ingest(self.st, lines, backlog=True, arrival=fst.st_mtime)
            return []
        return []

    def _read(self, fh: BinaryIO, split: _LineSplitter, limit: int) -> tuple[list[bytes], int]:
        data = fh.read(limit)
        if not data:
            return [], 0
        return split.feed(data), len(data)

    def _poll_file(self, h: _FileHandle) -> list[bytes]:
        out: list[bytes] = []
        # drain inodes that were rotated away
        if h.retiring:
            keep = []
            now = time.monotonic()
            for fh, split, since in h.retiring:
                lines, n = self._read(fh, split, self.READ_CHUNK)
                out.extend(lines)
                if n or now - since < self.RETIRE_S:
                    keep.append((fh, split, since if not n else now))
                else:
                    out.extend(split.flush())
                    with contextlib.suppress(OSError):
                        fh.close()
            h.retiring = keep
        try:
            st = os.stat(h.path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            self.st.detail = f"cannot stat {h.path}: {exc.strerror}"
            st = None
        if h.fh is None:
            if st is not None:
                self._open(h, st, from_end=self.first)
                if not self.first and h.fh is not None and h.pos == 0:
                    self.hub._notice(self.st, f"following {h.path}")
            else:
                return out
        elif st is None or (st.st_dev, st.st_ino) != h.ident:
            # renamed away (rotation) or deleted: finish the old inode, then switch
            lines, _ = self._drain(h.fh, h.split)
            out.extend(lines)
            h.retiring.append((h.fh, h.split, time.monotonic()))
            h.fh = None
            h.ident = None
            if st is not None:
                self.hub._notice(self.st, f"{h.path} was replaced (rotated); following the new file")
                self._open(h, st, from_end=False)
            else:
                self.hub._notice(self.st, f"{h.path} was removed; waiting for it to come back")
                return out
        if h.fh is None:
            return out
        size = st.st_size if st is not None else 0
        if size < h.pos:
            self.hub._notice(self.st, f"{h.path} was truncated; reading from the start")
            out.extend(h.split.flush())
            h.fh.seek(0)
            h.pos = 0
        if size > h.pos:
            lines, n = self._read(h.fh, h.split, self.READ_CHUNK)
            h.pos += n
            out.extend(lines)
            if h.pos < size:
                self._behind = True
        return out

    def _drain(self, fh: BinaryIO, split: _LineSplitter) -> tuple[list[bytes], int]:
        out: list[bytes] = []
        total = 0
        for _ in range(64):
            lines, n = self._read(fh, split, self.READ_CHUNK)
            out.extend(lines)
            total += n
            if not n:
                break
        return out, total

    async def stop(self) -> None:
        await super().stop()
        for h in self.handles.values():
            for line in h.split.flush():
                self.hub._ingest(self.st, [line])
            h.close()
        self.handles.clear()


class CommandFollower(_Follower):
    """A streaming command, restarted (with backoff) when it exits."""

    def __init__(self, hub: LogHub, st: _SourceState) -> None:
        super().__init__(hub, st)
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.stopping = False

    async def run(self) -> None:
        delay = self.spec.restart_delay
        argv = list(self.spec.command or ())
        if not argv:
            self.st.state = "failed"
            self.st.detail = "empty command"
            return
        while not self.stopping:
            started = time.monotonic()
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    cwd=self.spec.cwd,
                    start_new_session=True,
                )
            except OSError as exc:
                self.st.state = "failed"
                self.st.detail = f"cannot run {argv[0]}: {exc.strerror or exc}"
                self.hub._notice(self.st, self.st.detail)
            else:
                self.st.state = "following"
                self.st.detail = f"pid {self.proc.pid}"
                split = _LineSplitter(self.spec.max_line * 4 + 16)
                assert self.proc.stdout is not None
                while True:
                    data = await self.proc.stdout.read(1 << 16)
                    if not data:
                        break
                    lines = split.feed(data)
                    if lines:
                        await self.hub._ingest_async(self.st, lines)
                rest = split.flush()
                if rest:
                    self.hub._ingest(self.st, rest)
                code = await self.proc.wait()
                self.proc = None
                if self.stopping:
                    return
                self.st.state = "restarting"
                self.st.detail = f"exited with code {code}"
                self.hub._notice(self.st, f"command exited with code {code}; restarting")
            if time.monotonic() - started > 30:
                delay = self.spec.restart_delay
            await asyncio.sleep(delay)
            self.restarts += 1
            delay = min(30.0, delay * 2)

    async def stop(self) -> None:
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 2.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.wait(), 2.0)
        await super().stop()


def _docker_ts(text: bytes) -> int | None:
    """RFC3339Nano docker timestamp -> integer nanoseconds since the epoch."""
    try:
        s = text.decode("ascii")
        main, _, frac = s.rstrip("Z").partition(".")
        dt = datetime.fromisoformat(main + "+00:00")
        ns = int((frac + "000000000")[:9]) if frac else 0
        return int(dt.timestamp()) * 1_000_000_000 + ns
    except (ValueError, UnicodeDecodeError):
        return None


class DockerFollower(_Follower):
    """Streams a container's logs in a thread; reconnects when the container restarts."""

    def __init__(self, hub: LogHub, st: _SourceState, client_factory: Callable[[], Any]) -> None:
        super().__init__(hub, st)
        self.client_factory = client_factory
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream = None
        self._pending: deque[tuple[bytes, int | None]] = deque()
        self._scheduled = False
        self._lock = threading.Lock()
        self.last_ns: int | None = None
        self.reconnects = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._thread_main, name=f"logs-docker:{self.spec.name}", daemon=True)
        self._thread.start()

    # thread side -----------------------------------------------------------
    def _hand(self, lines: list[tuple[bytes, int | None]]) -> None:
        with self._lock:
            self._pending.extend(lines)
            if self._scheduled:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # loop closed at shutdown
            self._loop.call_soon_threadsafe(self._deliver)

    def _set_state(self, state: str, detail: str = "") -> None:
        def apply() -> None:
            self.st.state = state
            self.st.detail = detail

        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(apply)

    def _thread_main(self) -> None:
        from backends.errors import describe_exception

        client = None
        delay = 0.5
        first = True
        while not self._stop.is_set():
            try:
                if client is None:
                    client = self.client_factory()
                container = self._find(client)
                if self.last_ns is None:
                    since: Any = max(0.0, time.time() - self.spec.since)
                else:
                    since = self.last_ns / 1e9
                running = container.status == "running"
                if not first:
                    self.reconnects += 1
                self._set_state("following" if running else "reconnecting",
                                "" if running else f"container is {container.status}")
                stream = container.logs(stream=True, follow=True, timestamps=True, since=since)
                self._stream = stream
                split = _LineSplitter(self.spec.max_line * 4 + 48)
                got = False
                try:
                    for chunk in stream:
                        if self._stop.is_set():
                            break
                        batch: list[tuple[bytes, int | None]] = []
                        for line in split.feed(chunk):
                            ts_raw, _, rest = bytes(line).partition(b" ")
                            ns = _docker_ts(ts_raw)
                            if ns is None:
                                batch.append((line, None))
                                continue
                            if self.last_ns is not None and ns <= self.last_ns:
                                continue  # already seen before the reconnection
                            self.last_ns = ns
                            batch.append((rest if not isinstance(line, _Cut) else _Cut(rest, line.dropped), ns))
                        if batch:
                            got = True
                            self._hand(batch)
                finally:
                    self._stream = None
                    with contextlib.suppress(Exception):
                        stream.close()
                first = False
                delay = 0.5 if got else min(5.0, delay * 1.5)
                if not self._stop.is_set():
                    self._set_state("reconnecting", "log stream ended (container stopped or restarted)")
            except Exception as exc:  # NotFound, connection refused, ...
                name = type(exc).__name__
                if "Timeout" in name or "timed out" in str(exc):
                    # a quiet container: the read timed out; follow again from the last line
                    self._stop.wait(0.1)
                    continue
                detail = (f"container not found: {self.spec.target}") if name == "NotFound" else describe_exception(exc)
                self._set_state("reconnecting" if name == "NotFound" else "failed", detail)
                if name not in ("NotFound",):
                    client = None
                delay = min(5.0, max(delay, 0.5) * 1.5)
                first = False
            self._stop.wait(delay)

    def _find(self, client: Any) -> Any:  # docker.DockerClient -> Container (docker has no types)
        if self.spec.compose:
            project, service = self.spec.compose
            found = client.containers.list(all=True, filters={"label": [
                f"com.docker.compose.project={project}", f"com.docker.compose.service={service}"]})
            if not found:
                import docker

                raise docker.errors.NotFound(f"no container for compose service {project}/{service}")
            found.sort(key=lambda c: (c.status == "running", c.attrs.get("Created", "")), reverse=True)
            return found[0]
        return client.containers.get(self.spec.container)

    # loop side -------------------------------------------------------------
    def _deliver(self) -> None:
        with self._lock:
            items = [self._pending.popleft() for _ in range(min(200, len(self._pending)))]
            more = bool(self._pending)
            if not more:
                self._scheduled = False
        if more:  # a burst: the rest on the next loop turns, so the UI keeps answering
            self._loop.call_later(0.002, self._deliver)
        if not items:
            return
        now_ns = time.time() * 1e9
        live = [ln for ln, ns in items if ns is None or now_ns - ns < 5e9]
        old = [(ln, ns) for ln, ns in items if ns is not None and now_ns - ns >= 5e9]
        if old:
            self.hub._ingest(self.st, [ln for ln, _ in old], backlog=True,
                             stamps=[ns / 1e9 for _, ns in old])
        if live:
            self.hub._ingest(self.st, live)

    async def run(self) -> None:  # unused: the thread does the work
        return

    async def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        if self._thread is not None:
            from backends.engine.monitor import to_thread

            with contextlib.suppress(Exception):
                await to_thread(self._thread.join, 3.0)


# --------------------------------------------------------------------------- the hub

LinesCallback = Callable[[list[LogLine]], None]


class LogHub:
    """Runs every log source; bounded buffer, exact counts, findings. A monitor Source."""

    name = "logs"
    kind = "logs"

    def __init__(
        self,
        specs: Iterable[LogSpec],
        patterns: Iterable[PatternSpec] = (),
        *,
        buffer: int = DEFAULT_BUFFER,
        clock: Callable[[], float] = time.time,
        distinct_errors: int = 10,
        poll_interval: float = POLL_INTERVAL,
        docker_client_factory: Callable[[], Any] | None = None,
        interval: float = 2.0,
        timeout: float = 5.0,
        cwd: str | None = None,
    ) -> None:
        self.specs = list(specs)
        seen: set[str] = set()
        for s in self.specs:
            if s.name in seen:
                raise ValueError(f"duplicate log source name {s.name!r}")
            seen.add(s.name)
            if sum(bool(x) for x in (s.path, s.container or s.compose, s.command)) != 1:
                raise ValueError(f"log source {s.name!r} needs exactly one of path, container, command")
        self.patterns = list(patterns)
        compiled = []
        for p in self.patterns:
            try:
                compiled.append((p, re.compile(p.pattern, re.IGNORECASE if p.ignore_case else 0)))
            except re.error as exc:
                raise ValueError(f"log pattern {p.pattern!r} is not a valid regex: {exc}") from None
        self.clock = clock
        self.interval = interval
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.buffer: deque[LogLine] = deque(maxlen=max(1, buffer))
        self.distinct_errors = distinct_errors
        self.docker_client_factory = docker_client_factory
        self.cwd = cwd
        self._started_at = clock()
        self._states: dict[str, _SourceState] = {
            s.name: _SourceState(s, self._started_at, compiled) for s in self.specs
        }
        self._followers: list[_Follower] = []
        self._subscribers: list[LinesCallback] = []
        self._seq = 0
        self.running = False
        self.lines_total = 0

    @classmethod
    def from_config(cls, config: Any, **kw: Any) -> LogHub:
        specs, patterns = specs_from_config(config)
        base = kw.pop("cwd", None)
        if base is None:
            src = _get(config, "path") or _get(config, "source_path")
            base = os.path.dirname(os.path.abspath(str(src))) if src else None
        if base:
            specs = [s if not s.path else _with_cwd(s, base) for s in specs]
        if "docker_client_factory" not in kw:
            host = _get(_get(config, "docker"), "host")
            kw["docker_client_factory"] = _docker_factory(str(host) if host else None)
        return cls(specs, patterns, **kw)

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self.running:
            return
        self.running = True
        self._started_at = self.clock()
        for st in self._states.values():
            st.started = self._started_at
            spec = st.spec
            if spec.path:
                f: _Follower = FileFollower(self, st, self.poll_interval)
            elif spec.container or spec.compose:
                f = DockerFollower(self, st, self.docker_client_factory or _docker_factory(None))
            else:
                f = CommandFollower(self, st)
            self._followers.append(f)
            f.start()

    async def stop(self) -> None:
        self.running = False
        followers, self._followers = self._followers, []
        await asyncio.gather(*(f.stop() for f in followers), return_exceptions=True)
        for st in self._states.values():
            st.state = "stopped"

    close = stop

    async def __aenter__(self) -> LogHub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- public API

    def subscribe(self, callback: LinesCallback) -> Callable[[], None]:
        """`callback(lines)` gets every batch of new lines (on the event loop)."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def recent(self, n: int | None = None, source: str | None = None) -> list[LogLine]:
        lines = list(self.buffer) if source is None else [ln for ln in self.buffer if ln.source == source]
        return lines if n is None else lines[-n:]

    def recent_errors(self, source: str) -> tuple[str, ...]:
        st = self._states[source]
        return tuple(
            f"{e.text} (×{e.count})" if e.count > 1 else e.text for e in reversed(st.errors.values())
        )

    def feed(self, source: str, raw_lines: Iterable[bytes | str]) -> list[LogLine]:
        """Ingest lines as if the source had produced them (tests, replays)."""
        return self._ingest(self._states[source], [
            ln.encode("utf-8", "surrogateescape") if isinstance(ln, str) else ln for ln in raw_lines
        ])

    def signals(self) -> list[LogSignals]:
        now = self.clock()
        sec = int(now)
        at = datetime.fromtimestamp(now, UTC)
        out = []
        for st in self._states.values():
            lines = _three(st.ring.totals(sec, _WINDOWS, _LINES))
            errors = _three(st.ring.totals(sec, _WINDOWS, _ERRORS))
            warnings = _three(st.ring.totals(sec, _WINDOWS, _WARNINGS))
            success = None
            success_silent = None
            if st.success:
                s5 = st.ring.total(sec, 300, _SUCCESS)
                since = st.started if st.first_counted is None else min(st.started, st.first_counted)
                # a rate over at least a minute: a few markers in the first seconds are not 100/min
                span = min(300.0, max(60.0, now - since))
                success = s5 * 60.0 / span
                ref = st.last_success_at if st.last_success_at is not None else st.started
                success_silent = max(0.0, now - ref)
            spec = st.spec
            last = st.last_line_at
            silent = now - (last if last is not None else st.started)
            hits = []
            pattern_hits: dict[str, int] = {}
            for p, _rx in st.patterns:
                ring = st.pattern_rings.get(p.label)
                if ring is None:
                    continue
                n = ring.total(sec, int(p.window), 0)
                pattern_hits[p.label] = n
                text, t = st.pattern_last.get(p.label, ("", None))
                hits.append(
                    PatternHit(
                        pattern=p.label, severity=p.severity, playbook=p.playbook, count=n,
                        window_s=p.window, min_count=p.min_count, last_text=text,
                        last_at=datetime.fromtimestamp(t, UTC) if t else None,
                    )
                )
            out.append(
                LogSignals(
                    source=self.name,
                    at=at,
                    name=st.spec.name,
                    errors=errors,
                    warnings=warnings,
                    lines=lines,
                    success_per_min=success,
                    last_line_at=datetime.fromtimestamp(last, UTC) if last is not None else None,
                    silent_for_s=max(0.0, silent),
                    recent_errors=self.recent_errors(st.spec.name)[: self.distinct_errors],
                    pattern_hits=pattern_hits,
                    kind=st.spec.kind,
                    target=st.spec.target,
                    state=st.state,
                    detail=st.detail,
                    service=st.spec.service,
                    silence_after_s=st.spec.silence_after,
                    silence_playbook=st.spec.silence_playbook,
                    silence_severity=st.spec.silence_severity,
                    error_spike=st.spec.error_spike,
                    hits=tuple(hits),
                    total_lines=st.total,
                    success_markers=spec.success,
                    last_success_at=(datetime.fromtimestamp(st.last_success_at, UTC)
                                     if st.last_success_at is not None else None),
                    success_silent_for_s=success_silent,
                    lines_since_success=st.lines_since_success,
                    success_silence_s=(spec.success_silence if spec.success_silence is not None
                                       else spec.silence_after) if spec.success else None,
                    success_playbook=spec.success_playbook,
                )
            )
        return out

    async def poll(self) -> Sequence[LogSignals]:
        """Monitor Source: starts the followers on first use, returns the signals."""
        if not self.running:
            await self.start()
        return self.signals()

    # ---------------------------------------------------------------- ingestion

    def _note_activity(self, st: _SourceState, when: float) -> None:
        if st.last_line_at is None or when > st.last_line_at:
            st.last_line_at = min(when, self.clock())

    def _notice(self, st: _SourceState, text: str) -> None:
        """A line from warroom itself about the source (rotation, restart): shown, not counted."""
        self._seq += 1
        line = LogLine(source=st.spec.name, text=f"[warroom] {text}", level=Level.UNKNOWN,
                       message=text, notice=True, seq=self._seq,
                       at=datetime.fromtimestamp(self.clock(), UTC))
        self.buffer.append(line)
        self._publish([line])

    async def _ingest_async(self, st: _SourceState, raws: list[bytes], slice_: int = 50) -> None:
        """Ingest in small slices, giving the loop back between them: under a flood the UI
        still answers a key within a slice or two (and gets a short pause every 50 ms)."""
        t0 = time.perf_counter()
        n = len(raws)
        for i in range(0, n, slice_):
            self._ingest(st, raws[i : i + slice_])
            if i + slice_ < n:
                if time.perf_counter() - t0 > 0.05:
                    await asyncio.sleep(0.005)
                    t0 = time.perf_counter()
                else:
                    await asyncio.sleep(0)

    def _ingest(
        self,
        st: _SourceState,
        raws: Sequence[bytes],
        *,
        backlog: bool = False,
        stamps: Sequence[float] | None = None,
        arrival: float | None = None,
    ) -> list[LogLine]:
        """Raw lines -> entries: counted, buffered, published.

        A continuation line (see `_continuation`) joins its source's open entry instead of
        making one: the entry is counted once, when its first line arrives. An entry that
        was already published (its continuation came in a later read) is published again,
        first in the batch, with its `seq` unchanged: subscribers replace it.

        A line without a readable time gets its arrival time: now, or for a file's backlog
        `arrival` (the file's mtime, when the last line was written at the latest); it is
        counted at that time like any other line."""
        if not raws:
            return []
        now = self.clock()
        now_sec = int(now)
        now_dt = datetime.fromtimestamp(now, UTC)
        arrival_t = arrival if backlog and arrival is not None and arrival <= now else now
        arrival_dt = now_dt if arrival_t == now else datetime.fromtimestamp(arrival_t, UTC)
        spec = st.spec
        ring = st.ring
        out: list[LogLine] = []
        updates: list[LogLine] = []
        seq = self._seq
        newest = st.last_line_at
        # live lines all count in this second: add per batch, not per line
        n_err = n_warn = n_succ = n_lines = 0
        success = st.success
        patterns = st.patterns
        name, max_line = spec.name, spec.max_line
        entry = st.open
        if entry is not None and now - entry.last > MULTILINE_GAP_S:
            entry = st.open = None
        # the batch's newest entry while no continuation line came for it: no _Entry per line
        prev: LogLine | None = None
        prev_idx = prev_sec = 0
        prev_counted = False
        error, warn, cont_first = Level.ERROR, Level.WARN, _CONTINUATION_FIRST
        for i, raw in enumerate(raws):
            try:
                text = sanitize(raw, max_line)
            except Exception:  # pragma: no cover - defensive: a line must never stop a follower
                text = repr(raw)[:max_line]
            if entry is None and prev is not None and text and (
                    text[0] in cont_first or (text[0] == "T" and text.startswith(_TRACEBACK))):
                entry = _Entry(prev, prev_idx, _entry_mode(prev.text), now, prev_sec, counted=prev_counted)
            if entry is not None:
                mode = _continuation(entry, text)
                if mode is not None:
                    entry.add(text, mode, now)
                    if patterns:
                        self._match_patterns(st, text, entry.sec)
                    continue
                if entry.parts:
                    self._close_entry(st, entry, out, updates)
                entry = None
            seq += 1
            line = _line_from_text(name, text, seq, arrival_dt)
            prev = line
            prev_idx = len(out)
            out.append(line)
            if backlog:
                t = stamps[i] if stamps is not None else line.at.timestamp()
                if t > now + 5:
                    prev = None
                    continue  # from the future: shown, not counted
                sec = int(t)
                prev_sec, prev_counted = sec, False
                if now_sec - sec >= WINDOW_S:
                    continue
                prev_counted = True
                if newest is None or t > newest:
                    newest = t
                if st.first_counted is None or t < st.first_counted:
                    st.first_counted = t
                ring.add(sec, _LINES)
            else:
                t = now
                sec = prev_sec = now_sec
                prev_counted = True
                n_lines += 1
            lv = line.level
            if lv >= error:
                if backlog:
                    ring.add(sec, _ERRORS)
                else:
                    n_err += 1
                if text[0] != "T" or not text.startswith(_TRACEBACK):
                    self._remember_error(st, line)  # a traceback: when it is complete (its exception)
            elif lv == warn:
                if backlog:
                    ring.add(sec, _WARNINGS)
                else:
                    n_warn += 1
            if success:
                for rx in success:
                    if rx.search(text):
                        if backlog:
                            ring.add(sec, _SUCCESS)
                        else:
                            n_succ += 1
                        if st.last_success_at is None or t >= st.last_success_at:
                            st.last_success_at = t
                            st.lines_since_success = 0
                        break
                else:
                    st.lines_since_success += 1
            if patterns:
                self._match_patterns(st, text, sec)
        if entry is not None and entry.parts:
            self._close_entry(st, entry, out, updates)
        if entry is not None:
            entry.index = None  # `out` goes to the buffer: a later join replaces it there
            st.open = entry
        elif prev is not None:
            st.open = _Entry(prev, None, _entry_mode(prev.text), now, prev_sec, counted=prev_counted)
        elif out:
            st.open = None
        if not backlog:
            newest = now
            if n_lines:
                ring.add(now_sec, _LINES, n_lines)
            if n_err:
                ring.add(now_sec, _ERRORS, n_err)
            if n_warn:
                ring.add(now_sec, _WARNINGS, n_warn)
            if n_succ:
                ring.add(now_sec, _SUCCESS, n_succ)
        self._seq = seq
        st.total += len(out)
        self.lines_total += len(out)
        if newest is not None:
            st.last_line_at = newest
        self.buffer.extend(out)
        if updates or out:
            self._publish(updates + out if updates else out)
        return out

    def _match_patterns(self, st: _SourceState, text: str, sec: int) -> None:
        for p, rx in st.patterns:
            if rx.search(text):
                pr = st.pattern_rings.get(p.label)
                if pr is None:
                    pr = st.pattern_rings[p.label] = _Ring(1)
                pr.add(sec, 0)
                st.pattern_last[p.label] = (text[:500], float(sec))

    def _close_entry(self, st: _SourceState, entry: _Entry, out: list[LogLine], updates: list[LogLine]) -> None:
        """The entry's continuation lines so far -> its LogLine, replaced where it is."""
        old = entry.line
        new = entry.build()
        entry.line = new
        if new.level >= Level.ERROR and (old.level < Level.ERROR or old.text.startswith(_TRACEBACK)):
            # an uncaught exception: by its exception line. Its lines may come in several reads:
            # remembered by what it says so far, then by its exception line once that arrives
            if entry.remembered is None:
                entry.remembered = self._remember_error(st, new)
            elif _error_text(new) != entry.remembered:
                self._forget_error(st, entry.remembered)
                entry.remembered = self._remember_error(st, new)
        if entry.counted and old.level < Level.ERROR <= new.level:
            # "message\nTraceback ...": the entry became an error; it counts once, now
            st.ring.add(entry.sec, _ERRORS)
        if entry.index is not None and entry.index < len(out) and out[entry.index] is old:
            out[entry.index] = new
            return
        buf = self.buffer
        for k in range(1, min(len(buf), 1024) + 1):
            if buf[-k] is old:
                buf[-k] = new
                break
        updates.append(new)

    def _remember_error(self, st: _SourceState, line: LogLine) -> str:
        """The line among the source's recent errors; returns the text it is there by."""
        msg = _error_text(line)
        key = _NORMALIZE.sub("#", msg)
        entry = st.errors.pop(key, None)
        if entry is None:
            entry = _SeenError(0, msg)
        entry.count += 1
        entry.text = msg
        st.errors[key] = entry
        while len(st.errors) > self.distinct_errors:
            st.errors.popitem(last=False)
        return msg

    @staticmethod
    def _forget_error(st: _SourceState, msg: str) -> None:
        """Undo one `_remember_error` of `msg` (an entry that now says something else)."""
        key = _NORMALIZE.sub("#", msg)
        entry = st.errors.get(key)
        if entry is None:  # pushed out by newer distinct errors meanwhile
            return
        entry.count -= 1
        if entry.count <= 0:
            del st.errors[key]

    def _publish(self, lines: list[LogLine]) -> None:
        for cb in list(self._subscribers):
            try:
                cb(lines)
            except Exception:
                log.exception("log subscriber failed")


def _with_cwd(spec: LogSpec, base: str) -> LogSpec:
    from dataclasses import replace

    return replace(spec, cwd=spec.cwd or base)


def _docker_factory(base_url: str | None) -> Callable[[], Any]:
    """A docker client for log streams: a long read timeout (a quiet container is not an error)."""

    def make() -> Any:  # a docker.DockerClient (docker has no types)
        import docker  # lazy: heavy

        kw: dict[str, Any] = {"base_url": base_url} if base_url else {}
        if not base_url:
            try:
                from backends.sources.docker import resolve_engine

                kw, _where = resolve_engine(None)
            except ImportError:
                return docker.from_env(timeout=60)
        return docker.DockerClient(**kw, version="auto", timeout=60)

    return make


# --------------------------------------------------------------------------- rules


def _fmt_dur(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        m, sec = divmod(int(s), 60)
        return f"{m}m{sec:02d}s" if sec else f"{m}m"
    h, rem = divmod(int(s), 3600)
    return f"{h}h{rem // 60:02d}m"


def _target(r: LogSignalReading) -> str | None:
    svc = getattr(r, "service", None)
    return f"service:{svc}" if svc else None


@rule(LogSignalReading)
def log_silence(r: LogSignalReading, ctx: RuleContext) -> Iterable[Finding]:
    limit = getattr(r, "silence_after_s", None)
    silent = r.silent_for_s
    if not limit or silent is None or silent < limit:
        return
    last = r.last_line_at.isoformat(timespec="seconds") if r.last_line_at else "none since warroom started"
    evidence = [f"last line: {last}", f"expected a line at least every {_fmt_dur(limit)}"]
    state = getattr(r, "state", "")
    if state and state != "following":
        evidence.append(f"log source {state}: {getattr(r, 'detail', '')}".rstrip(": "))
    who = getattr(r, "service", None) or r.name
    yield Finding(
        key=f"logs:silence:{r.name}",
        severity=getattr(r, "silence_severity", Severity.P1),
        source=f"logs:{r.name}",
        summary=f"No log line from {who} for {_fmt_dur(silent)} (running but no activity?)",
        evidence=tuple(evidence),
        playbook=getattr(r, "silence_playbook", None) or _default_silence_playbook(who),
        target=_target(r),
    )


@rule(LogSignalReading)
def log_no_success(r: LogSignalReading, ctx: RuleContext) -> Iterable[Finding]:
    """Seed "event count not increasing": the source logs, but no success marker for a while.

    Only while lines keep coming (a line within the window, and lines since the last
    marker): a source that is quiet altogether is the silence rule's finding."""
    limit = getattr(r, "success_silence_s", None)
    quiet = getattr(r, "success_silent_for_s", None)
    since_lines = getattr(r, "lines_since_success", 0)
    if not limit or r.success_per_min is None or quiet is None or quiet < limit or since_lines <= 0:
        return
    if r.silent_for_s is None or r.silent_for_s >= limit:
        return
    markers = getattr(r, "success_markers", ()) or ()
    last = getattr(r, "last_success_at", None)
    evidence = [
        f"last success marker: {last.isoformat(timespec='seconds') if last else 'none since warroom started'}",
        f"{since_lines} line(s) since, {r.errors[1]} error(s) in 5 min",
        "markers: " + ", ".join(repr(m) for m in markers[:3]) + (" …" if len(markers) > 3 else ""),
    ]
    evidence += [f"error: {m[:200]}" for m in r.recent_errors[:2]]
    who = getattr(r, "service", None) or r.name
    yield Finding(
        key=f"logs:no-success:{r.name}",
        severity=Severity.P2,
        source=f"logs:{r.name}",
        summary=f"{who} logs but reports no success for {_fmt_dur(quiet)} (events not processed?)",
        evidence=tuple(evidence),
        playbook=getattr(r, "success_playbook", None) or "events-not-processed",
        target=_target(r),
    )


@rule(LogSignalReading)
def log_patterns(r: LogSignalReading, ctx: RuleContext) -> Iterable[Finding]:
    for hit in getattr(r, "hits", ()):
        if hit.count < max(1, hit.min_count):
            continue
        evidence = [f"{hit.count} line(s) in the last {_fmt_dur(hit.window_s)}"]
        if hit.last_text:
            evidence.append(f"last: {hit.last_text[:200]}")
        yield Finding(
            key=f"logs:pattern:{r.name}:{hit.pattern}",
            severity=hit.severity,
            source=f"logs:{r.name}",
            summary=f"{r.name}: \"{hit.pattern}\" in the logs ({hit.count}× in {_fmt_dur(hit.window_s)})",
            evidence=tuple(evidence),
            playbook=hit.playbook,
            target=_target(r),
        )


@rule(LogSignalReading)
def log_error_spike(r: LogSignalReading, ctx: RuleContext) -> Iterable[Finding]:
    threshold = max(1, int(getattr(r, "error_spike", 20) or 20))
    e1, e5, e15 = r.errors
    if e1 < threshold:
        return
    baseline = (e15 - e1) / 14.0  # errors per minute over the 14 minutes before
    if baseline > 0 and e1 < 3 * baseline:
        return  # steady error level, not a spike
    severity = Severity.P1 if e1 >= 10 * threshold else Severity.P2
    evidence = [f"errors: {e1} in 1 min, {e5} in 5 min, {e15} in 15 min"]
    evidence += [f"error: {m[:200]}" for m in r.recent_errors[:3]]
    yield Finding(
        key=f"logs:errors:{r.name}",
        severity=severity,
        source=f"logs:{r.name}",
        summary=f"Error spike in {r.name}: {e1} errors in the last minute",
        evidence=tuple(evidence),
        playbook=None,
        target=_target(r),
    )


__all__ = [
    "LogHub",
    "LogSpec",
    "PatternSpec",
    "PatternHit",
    "LogSignals",
    "FileFollower",
    "CommandFollower",
    "DockerFollower",
    "parse_line",
    "sanitize",
    "level_from",
    "parse_time",
    "specs_from_config",
    "MAX_LINE_CHARS",
]

