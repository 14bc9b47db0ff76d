"""Commands: argv templates with typed placeholders, never a shell.

A `CommandTemplate` is an argv list in which an element may be a placeholder
`{name}`. A placeholder is always a WHOLE argument (``"--since={x}"`` is rejected
when the template is built): its value is validated against its declared type and
passed to `asyncio.create_subprocess_exec` as one argv element, so no value can
add an argument, an option or a shell construct. Literal braces are written `{{`
and `}}`.

Running a template starts the process in its own session (process group); a
timeout or a cancellation kills the whole group. The result carries the exit
status and the captured output with secrets masked.

`CommandCheck` turns a command with JSON output into a `CheckReading` (Neo N3's
`neo-go ... isPaused`, `kubectl get pods -o json`), and `CommandAction` turns a
template into an `Action` (custom `[[actions]]`, restarts through pm2, systemctl,
kubectl) whose plan shows the exact argv.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from backends.actions.base import (
    Action,
    ActionPlan,
    ActionResult,
    Change,
    Danger,
    Guard,
    Progress,
    ProgressFn,
)
from backends.engine.rules import RuleContext, register, rule, settings_table
from backends.errors import MASK, ActionRefused, BackendError, redact, register_secret
from backends.model import CheckReading, Finding, Severity, Status
from backends.units import reveal_value

# --------------------------------------------------------------------------- placeholder types

_NO_CTRL = re.compile(r"^[^\x00-\x1f\x7f]*$")

PLACEHOLDER_TYPES: dict[str, tuple[re.Pattern[str], str]] = {
    "identifier": (re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"), "an identifier (letters, digits, _)"),
    "service": (re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,127}$"), "a service name (letters, digits, _ . -)"),
    "int": (re.compile(r"^[0-9]{1,18}$"), "a non-negative integer"),
    "block": (re.compile(r"^[0-9]{1,18}$"), "a block number"),
    "address": (re.compile(r"^0x[0-9a-fA-F]{40}$"), "an address (0x and 40 hex digits)"),
    "path": (re.compile(r"^[^\x00-\x1f\x7f-][^\x00-\x1f\x7f]{0,4095}$"), "a path"),
    "text": (re.compile(r"^[^\x00-\x1f\x7f-][^\x00-\x1f\x7f]{0,999}$"), "free text (one line)"),
    "string": (re.compile(r"^[^\x00-\x1f\x7f-][^\x00-\x1f\x7f]{0,999}$"), "a string (one line, not starting with -)"),
    "order_id": (re.compile(r"^[A-Za-z0-9_:.][A-Za-z0-9_:.-]{0,127}$"), "an order id (letters, digits, _ : . -)"),
    "duration": (re.compile(r"^(?:[0-9]{1,9}(?:\.[0-9]{1,9})?(?:ns|us|ms|s|m|h|d)){1,4}$"),
                 "a duration like 500ms, 30s, 10m, 1.5h or 1h30m"),
    "secret": (re.compile(r"^[^\x00\n\r]{1,4096}$"), "a secret"),
    "scale": (re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,127}=[0-9]{1,4}$"), "service=replicas"),
}
# A placeholder whose type is not declared gets the type named like it, else "identifier".
_DEFAULT_BY_NAME = {
    "service": "service", "unit": "service", "deployment": "service", "namespace": "service",
    "container": "service", "pid": "int", "count": "int", "replicas": "int", "block": "block",
    "address": "address", "contract": "address", "file": "path", "path": "path",
    "operator": "text", "config": "path",
}
# Placeholders an `[[actions]]` argv may use without a `params` entry: warroom fills them
# (the operator acting, the path of the configuration file); input never does.
AUTO_PLACEHOLDERS = ("operator", "config")
_PLACEHOLDER = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def placeholder_type_for(name: str, declared: Mapping[str, str]) -> str:
    t = declared.get(name) or _DEFAULT_BY_NAME.get(name) or "identifier"
    if t not in PLACEHOLDER_TYPES:
        raise ValueError(f"placeholder {{{name}}}: unknown type {t!r} (expected one of {', '.join(PLACEHOLDER_TYPES)})")
    return t


def validate_value(name: str, type_: str, value: Any) -> str:
    """Check one placeholder value; return it as the argv element. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"{{{name}}} must be {PLACEHOLDER_TYPES[type_][1]}, got a boolean")
    text = reveal_value(value)
    if isinstance(value, int) and type_ in ("int", "block"):
        text = str(value)
    pattern, what = PLACEHOLDER_TYPES[type_]
    # fullmatch: `$` alone would let a trailing newline through
    if not isinstance(text, str) or not pattern.fullmatch(text):
        shown = MASK if type_ == "secret" else repr(text)[:60]
        raise ValueError(f"{{{name}}} must be {what}, got {shown}")
    return text


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandResult:
    argv_display: str
    exit_code: int | None  # None when killed by the timeout
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def summary(self) -> str:
        if self.timed_out:
            return f"timed out after {self.duration:.1f}s: {self.argv_display}"
        return f"exit {self.exit_code} after {self.duration:.2f}s: {self.argv_display}"

    def tail(self, lines: int = 5) -> tuple[str, ...]:
        out = [ln for ln in (self.stdout + "\n" + self.stderr).splitlines() if ln.strip()]
        return tuple(out[-lines:])


@dataclass(frozen=True, slots=True)
class _Part:
    literal: str | None = None
    name: str | None = None
    type: str | None = None


class CommandTemplate:
    """An argv template with typed whole-argument placeholders.

    `params` declares placeholder types (`identifier`, `service`, `int`, `block`,
    `address`, `path`, `text` / `string` (one line, only where declared), `order_id`,
    `duration`, `secret`, `scale`); every type `[[actions]]` accepts
    (config.ACTION_PARAM_TYPES) is one of them. No value may start with `-` (an option).
    an undeclared placeholder takes the type of its name (`{service}`, `{pid}`,
    `{address}`, `{file}`...) or `identifier`. `env` values are added to the
    environment and treated as secrets in output. `defaults` fill placeholders the
    caller leaves out.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        env: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        max_output: int = 1 << 20,
    ) -> None:
        if isinstance(argv, str) or not argv:
            raise ValueError(f"command {name!r}: argv must be a non-empty list of strings (never a shell line)")
        self.name = name
        self.timeout = float(timeout)
        self.params = dict(params or {})
        self.defaults = dict(defaults or {})
        self.cwd = os.fspath(cwd) if cwd is not None else None
        self.max_output = max_output
        self._env = {str(k): str(reveal_value(v)) for k, v in (env or {}).items()}
        for v in self._env.values():
            register_secret(v)
        parts: list[_Part] = []
        for i, el in enumerate(argv):
            if not isinstance(el, str):
                raise ValueError(f"command {name!r}: argv[{i}] must be a string, got {type(el).__name__}")
            m = _PLACEHOLDER.match(el)
            if m:
                pname = m.group(1)
                parts.append(_Part(name=pname, type=placeholder_type_for(pname, self.params)))
                continue
            rest = el.replace("{{", "").replace("}}", "")
            if "{" in rest or "}" in rest:
                raise ValueError(
                    f"command {name!r}: argv[{i}] {el!r}: a placeholder must be a whole argument "
                    "(write literal braces as {{ and }})"
                )
            parts.append(_Part(literal=el.replace("{{", "{").replace("}}", "}")))
        if parts[0].literal is None:
            raise ValueError(f"command {name!r}: the program (argv[0]) cannot be a placeholder")
        self._parts = tuple(parts)
        for p in self.params:
            if p not in self.placeholders:
                raise ValueError(f"command {name!r}: declared parameter {p!r} is not used in argv")

    @property
    def program(self) -> str:
        return self._parts[0].literal or ""

    @property
    def placeholders(self) -> tuple[str, ...]:
        seen: list[str] = []
        for p in self._parts:
            if p.name and p.name not in seen:
                seen.append(p.name)
        return tuple(seen)

    def render(self, values: Mapping[str, Any] | None = None) -> list[str]:
        """The argv with every placeholder validated and substituted. Raises ActionRefused."""
        vals = {**self.defaults, **(values or {})}
        out: list[str] = []
        for p in self._parts:
            if p.literal is not None:
                out.append(p.literal)
                continue
            assert p.name is not None and p.type is not None
            if p.name not in vals or vals[p.name] is None or vals[p.name] == "":
                raise ActionRefused(f"command:{self.name}", f"missing value for {{{p.name}}}")
            try:
                out.append(validate_value(p.name, p.type, vals[p.name]))
            except ValueError as exc:
                raise ActionRefused(f"command:{self.name}", str(exc)) from None
        return out

    def display(self, argv: Sequence[str]) -> str:
        """The argv as a person reads it (shell-quoted), secrets masked."""
        shown = list(argv)
        for i, p in enumerate(self._parts):
            if p.type == "secret" and i < len(shown):
                shown[i] = MASK
        return redact(shlex.join(shown))

    def available(self) -> str | None:
        """Path of the program, or None when it is not installed."""
        prog = self.program
        if os.sep in prog:
            return prog if os.access(prog, os.X_OK) else None
        return shutil.which(prog, path=self._env.get("PATH") or os.environ.get("PATH"))

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self._env)
        return env

    async def run(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        stdin: bytes | None = None,
    ) -> CommandResult:
        """Run to completion. A timeout kills the process group and returns `timed_out=True`.

        Raises BackendError when the program cannot be started (not installed, not
        executable), ActionRefused when a placeholder value is invalid.
        """
        argv = self.render(values)
        shown = self.display(argv)
        limit = self.timeout if timeout is None else float(timeout)
        t0 = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                env=self.environment(),
                cwd=self.cwd,
            )
        except FileNotFoundError:
            raise BackendError(f"command:{self.name}", f"{argv[0]}: command not found") from None
        except PermissionError:
            raise BackendError(f"command:{self.name}", f"{argv[0]}: permission denied") from None
        except OSError as exc:
            raise BackendError(f"command:{self.name}", f"{argv[0]}: {exc.strerror or exc}") from None
        out, err, timed_out, truncated = await collect(proc, limit=limit, max_output=self.max_output,
                                                       stdin=stdin)
        duration = time.monotonic() - t0
        return CommandResult(
            argv_display=shown,
            exit_code=None if timed_out else proc.returncode,
            stdout=redact(_decode(out)),
            stderr=redact(_decode(err)),
            duration=duration,
            timed_out=timed_out,
            truncated=truncated,
        )

    async def spawn(self, values: Mapping[str, Any] | None = None, *, log_path: str | None = None) -> int:
        """Start detached (own session, output to `log_path` or /dev/null); return its pid."""
        argv = self.render(values)
        out = os.open(log_path or os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                env=self.environment(),
                cwd=self.cwd,
            )
        except FileNotFoundError:
            raise BackendError(f"command:{self.name}", f"{argv[0]}: command not found") from None
        except OSError as exc:
            raise BackendError(f"command:{self.name}", f"{argv[0]}: {exc.strerror or exc}") from None
        finally:
            os.close(out)
        # Reap it in the background so it never stays a zombie of ours.
        task = asyncio.ensure_future(proc.wait())
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
        return proc.pid

    def __repr__(self) -> str:
        return f"CommandTemplate({self.name!r}, {[p.literal if p.literal is not None else '{' + str(p.name) + '}' for p in self._parts]!r})"


_BACKGROUND: set[asyncio.Future[int]] = set()


async def collect(proc: asyncio.subprocess.Process, *, limit: float, max_output: int,
                  stdin: bytes | None = None) -> tuple[bytes, bytes, bool, bool]:
    """Wait for a started process (own session) with a deadline, keeping at most `max_output`
    bytes of each of stdout and stderr (the rest is read and dropped, so a chatty program
    neither blocks on a full pipe nor fills our memory). On the deadline, or when cancelled,
    its process group is killed. Returns (stdout, stderr, timed_out, truncated)."""
    out = bytearray()
    err = bytearray()
    truncated = False

    async def pump(stream: asyncio.StreamReader | None, buf: bytearray) -> None:
        nonlocal truncated
        if stream is None:
            return
        while True:
            chunk = await stream.read(1 << 16)
            if not chunk:
                return
            room = max_output - len(buf)
            if len(chunk) > room:
                truncated = True
            if room > 0:
                buf.extend(chunk[:room])

    async def feed() -> None:
        if proc.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if stdin:
                proc.stdin.write(stdin)
                await proc.stdin.drain()
            proc.stdin.close()

    timed_out = False
    try:
        await asyncio.wait_for(asyncio.gather(feed(), pump(proc.stdout, out), pump(proc.stderr, err),
                                              proc.wait()), timeout=limit)
    except TimeoutError:
        timed_out = True
    except asyncio.CancelledError:
        kill_group(proc.pid)
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(proc.wait(), timeout=2.0)
        raise
    finally:
        if proc.returncode is None:
            kill_group(proc.pid)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(proc.wait(), timeout=2.0)
    return bytes(out), bytes(err), timed_out, truncated


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _decode(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


# Templates users commonly need; config `[[commands]]` adds its own.
PRESETS: dict[str, dict[str, Any]] = {
    "pm2-restart": {"argv": ["pm2", "restart", "{service}"], "timeout": 30},
    "systemctl-restart": {"argv": ["systemctl", "restart", "{service}"], "timeout": 60},
    "kubectl-rollout-restart": {
        "argv": ["kubectl", "-n", "{namespace}", "rollout", "restart", "deployment", "{service}"],
        "timeout": 60,
    },
    "kubectl-get-pods": {"argv": ["kubectl", "-n", "{namespace}", "get", "pods", "-o", "json"], "timeout": 15},
    "pg-dump": {"argv": ["pg_dump", "-Fc", "-f", "{file}", "{database}"], "timeout": 3600},
}


def preset(name: str, **kw: Any) -> CommandTemplate:
    spec = {**PRESETS[name], **kw}
    return CommandTemplate(name, spec.pop("argv"), **spec)


# --------------------------------------------------------------------------- JSON paths

_PATH_TOKEN = re.compile(r"\.?([A-Za-z_$][A-Za-z0-9_$-]*)|\[(\*|-?\d+)\]|\[\"([^\"]*)\"\]")


def parse_path(path: str) -> list[str | int]:
    """`a.b[0].c`, `items[*].status.phase`, `["weird key"]` -> tokens ('*' = every element)."""
    tokens: list[str | int] = []
    pos = 0
    path = path.strip()
    if path in ("", "."):
        return tokens
    while pos < len(path):
        m = _PATH_TOKEN.match(path, pos)
        if not m or m.end() == pos:
            raise ValueError(f"bad JSON path {path!r} at {path[pos:]!r}")
        if m.group(1) is not None:
            tokens.append(m.group(1))
        elif m.group(2) is not None:
            tokens.append("*" if m.group(2) == "*" else int(m.group(2)))
        else:
            tokens.append(m.group(3))
        pos = m.end()
    return tokens


_MISSING = object()


def read_path(data: Any, path: str | Sequence[str | int]) -> Any:
    """Read a value by path; `[*]` maps over a list (the result is a list). KeyError when absent."""
    tokens = parse_path(path) if isinstance(path, str) else list(path)
    return _walk(data, tokens, path if isinstance(path, str) else "")


def _walk(cur: Any, tokens: list[str | int], shown: str) -> Any:
    for i, tok in enumerate(tokens):
        if tok == "*":
            if not isinstance(cur, list):
                raise KeyError(f"{shown}: [*] on a {type(cur).__name__}")
            return [_walk(el, tokens[i + 1 :], shown) for el in cur]
        if isinstance(tok, int):
            if not isinstance(cur, list) or not -len(cur) <= tok < len(cur):
                raise KeyError(f"{shown}: no element [{tok}]")
            cur = cur[tok]
        else:
            if not isinstance(cur, dict) or tok not in cur:
                raise KeyError(f"{shown}: no key {tok!r}")
            cur = cur[tok]
    return cur


_REDUCERS: dict[str, Callable[[list[Any]], Any]] = {
    "count": len,
    "sum": lambda v: sum(_num(x) for x in v),
    "max": lambda v: max((_num(x) for x in v), default=None),
    "min": lambda v: min((_num(x) for x in v), default=None),
    "all": lambda v: all(bool(x) for x in v),
    "any": lambda v: any(bool(x) for x in v),
    "first": lambda v: v[0] if v else None,
}


def _num(x: Any) -> float:
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, (int, float)):
        return float(x)
    return float(str(x))


# --------------------------------------------------------------------------- command checks


class CommandCheck:
    """A Source: run a command, read a value from its JSON stdout, compare with thresholds.

    - `path`: where the value is (`stack[0].value`, `items[*].status.phase`); None reads
      the whole document (or, with `parse="text"`, the stripped stdout / a number).
    - `reduce`: for `[*]` paths: count, sum, max, min, all, any, first; `count_where`
      counts the elements equal to a value (e.g. pods whose phase != "Running" with
      `count_where="Running", count_negate=True`).
    - `expect`: the value must equal this (e.g. `False` for isPaused);
      `warn_above`/`crit_above`/`warn_below`/`crit_below`: numeric thresholds.
    A non-zero exit is CRIT (with the tail of stderr), a timeout UNKNOWN; a program
    that cannot be started makes the poll fail (the source is degraded).
    """

    kind = "command"

    def __init__(
        self,
        name: str,
        template: CommandTemplate,
        *,
        values: Mapping[str, Any] | None = None,
        path: str | None = None,
        parse: str = "json",
        reduce: str | None = None,
        count_where: Any = _MISSING,
        count_negate: bool = False,
        expect: Any = _MISSING,
        warn_above: float | None = None,
        crit_above: float | None = None,
        warn_below: float | None = None,
        crit_below: float | None = None,
        unit: str = "",
        interval: float = 30.0,
        timeout: float | None = None,
        severity: Severity = Severity.P2,
        playbook: str | None = None,
        history: int = 30,
    ) -> None:
        if parse not in ("json", "text"):
            raise ValueError(f"check {name!r}: parse must be 'json' or 'text'")
        if reduce is not None and reduce not in _REDUCERS:
            raise ValueError(f"check {name!r}: reduce must be one of {', '.join(_REDUCERS)}")
        self.name = name
        self.template = template
        self.values = dict(values or {})
        template.render(self.values)  # validate now: a bad check is a config error
        self.path = path
        self._tokens = parse_path(path) if path else []
        self.parse = parse
        self.reduce = reduce
        self.count_where = count_where
        self.count_negate = count_negate
        self.expect = expect
        self.warn_above, self.crit_above = warn_above, crit_above
        self.warn_below, self.crit_below = warn_below, crit_below
        self.unit = unit
        self.interval = interval
        self.timeout = timeout if timeout is not None else template.timeout + 1.0
        self.severity = severity
        self.playbook = playbook
        self._history: deque[float] = deque(maxlen=history)
        register("command-checks")[name] = (severity, playbook)

    async def poll(self) -> list[CheckReading]:
        result = await self.template.run(self.values, timeout=min(self.template.timeout, self.timeout))
        return [self.evaluate(result)]

    def evaluate(self, result: CommandResult) -> CheckReading:
        latency = result.duration * 1000.0
        base = partial(CheckReading, source=self.name, name=self.name, kind="command", unit=self.unit,
                       latency_ms=latency)
        if result.timed_out:
            return base(ok=False, status=Status.UNKNOWN,
                                detail=f"timed out after {result.duration:.1f}s")
        if result.exit_code != 0:
            tail = " | ".join(result.tail(3))
            return base(ok=False, status=Status.CRIT,
                                detail=f"exit {result.exit_code}" + (f": {tail}" if tail else ""))
        try:
            value = self.extract(result.stdout)
        except (ValueError, KeyError, TypeError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            return base(ok=False, status=Status.UNKNOWN, detail=f"cannot read value: {reason}")
        status, detail = self.judge(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            self._history.append(float(value))
        return base(ok=status is Status.OK, status=status, value=value, detail=detail,
                            history=tuple(self._history))

    def extract(self, stdout: str) -> Any:
        if self.parse == "text":
            text = stdout.strip()
            try:
                return int(text)
            except ValueError:
                try:
                    return float(text)
                except ValueError:
                    return text
        try:
            doc = json.loads(stdout)
        except json.JSONDecodeError as exc:
            raise ValueError(f"output is not JSON ({exc.msg} at line {exc.lineno})") from None
        value = _walk(doc, self._tokens, self.path or "") if self._tokens else doc
        if self.count_where is not _MISSING:
            if not isinstance(value, list):
                raise ValueError(f"{self.path}: count_where needs a list, got {type(value).__name__}")
            hit = [v == self.count_where for v in value]
            value = sum(1 for h in hit if h != self.count_negate)
        elif self.reduce:
            if not isinstance(value, list):
                value = [value]
            value = _REDUCERS[self.reduce](value)
        return value

    def judge(self, value: Any) -> tuple[Status, str]:
        shown = f"{value}{(' ' + self.unit) if self.unit else ''}"
        if self.expect is not _MISSING:
            if value != self.expect and str(value).lower() != str(self.expect).lower():
                return Status.CRIT, f"{self.path or 'value'} = {shown}, expected {self.expect}"
            return Status.OK, f"{self.path or 'value'} = {shown}"
        try:
            num = _num(value)
        except (TypeError, ValueError):
            if any(t is not None for t in (self.warn_above, self.crit_above, self.warn_below, self.crit_below)):
                return Status.UNKNOWN, f"{self.path or 'value'} = {shown} is not a number"
            return Status.OK, f"{self.path or 'value'} = {shown}"
        if self.crit_above is not None and num > self.crit_above:
            return Status.CRIT, f"{shown} > {self.crit_above:g} (critical)"
        if self.crit_below is not None and num < self.crit_below:
            return Status.CRIT, f"{shown} < {self.crit_below:g} (critical)"
        if self.warn_above is not None and num > self.warn_above:
            return Status.WARN, f"{shown} > {self.warn_above:g}"
        if self.warn_below is not None and num < self.warn_below:
            return Status.WARN, f"{shown} < {self.warn_below:g}"
        return Status.OK, f"{self.path or 'value'} = {shown}"




@rule(CheckReading)
def command_check_rule(r: CheckReading, ctx: RuleContext) -> Iterator[Finding]:
    if r.kind != "command" or r.status is Status.OK:
        return
    sev, playbook = settings_table("command-checks", ctx).get(r.name, (Severity.P2, None))
    if r.status is Status.WARN:
        sev = Severity(min(3, int(sev) + 1))
    yield Finding(
        key=f"check:{r.name}",
        severity=sev,
        source=r.source,
        summary=f"check {r.name}: {r.detail or r.status.word}",
        evidence=tuple(x for x in (f"value: {r.value!r}" if r.value is not None else "",
                                   f"took {r.latency_ms:.0f} ms" if r.latency_ms is not None else "") if x),
        playbook=playbook,
        target=f"check:{r.name}",
    )


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True, kw_only=True)
class ParamField:
    """One value an action asks the operator for, declared by the action itself.

    Any `Action` may define `param_fields() -> Sequence[ParamField]`; a form (the
    console's parameters form) then builds its fields from these instead of guessing
    from `plan()`'s signature (which says nothing when plan() takes `**params`).

    `type`: "text", "int", "float", "bool", or a placeholder type of `PLACEHOLDER_TYPES`
    (shown as the expected form). `validate(text)` returns the value to pass to plan()
    or raises ValueError with a message the form shows next to the field; without it the
    form converts by `type`. `required`: the form refuses an empty value.

    Iterating gives `(name, default, type)`, the shape the form used before.
    """

    name: str
    type: str = "text"
    default: Any = None
    help: str = ""
    required: bool = False
    validate: Callable[[str], Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.name, self.default, self.type))


class CommandAction(Action):
    """A command as an action: custom `[[actions]]`, or a restart through pm2/systemctl/kubectl.

    `plan(**values)` validates every placeholder (ActionRefused before anything runs)
    and shows the exact argv; the guard is red when the program is not installed.
    `param_fields()` declares the placeholders an operator fills (typed, with the same
    validator), so the console's form can ask for them. `{operator}` and `{config}`,
    when not declared in `params`, are filled by warroom: the operator acting
    (`operator`: a name or a callable, else the login identity) and `config_path`.
    """

    def __init__(
        self,
        template: CommandTemplate,
        *,
        action_id: str | None = None,
        title: str | None = None,
        danger: Danger | str = Danger.CONFIRM,
        scope: str | None = None,
        reason_required: bool = False,
        description: str = "",
        fixed: Mapping[str, Any] | None = None,
        mutating: bool = True,
        operator: str | Callable[[], str] | None = None,
        config_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.template = template
        self.id = action_id or f"command.{template.name}"
        self.title = title or f"Run {template.name}"
        self.danger = Danger(danger) if isinstance(danger, str) else danger
        self.scope = scope or f"command:{template.name}"
        self.reason_required = reason_required
        self.description = description or f"runs {template.name}"
        self.fixed = dict(fixed or {})
        self.mutating = mutating
        self._operator = operator
        self.config_path = os.fspath(config_path) if config_path is not None else None

    # ------------------------------------------------------------------ fields

    def _auto(self) -> tuple[str, ...]:
        """The placeholders warroom fills ({operator}, {config} when not declared in params)."""
        return tuple(n for n in AUTO_PLACEHOLDERS
                     if n in self.template.placeholders and n not in self.template.params and n not in self.fixed)

    def param_fields(self) -> list[ParamField]:
        """The placeholders an operator types: not fixed, not secret, not filled by warroom."""
        out: list[ParamField] = []
        auto = self._auto()
        for p in self.template._parts:
            name, type_ = p.name, p.type
            if name is None or type_ is None or name in self.fixed or name in auto or type_ == "secret":
                continue
            if any(f.name == name for f in out):
                continue
            default = self.template.defaults.get(name)
            out.append(ParamField(
                name=name, type=type_, default=default, help=PLACEHOLDER_TYPES[type_][1],
                required=default is None or default == "", validate=partial(validate_value, name, type_)))
        return out

    def operator(self, override: Any = None) -> str:
        from backends.engine.audit import resolve_operator

        return resolve_operator(override, self._operator)

    # ------------------------------------------------------------------ flow

    async def plan(self, **params: Any) -> ActionPlan:
        reason = params.pop("reason", None)
        auto = self._auto()
        op_override = params.pop("operator", None) if "operator" in auto else None
        values = {k: v for k, v in params.items() if k in self.template.placeholders}
        unknown = sorted(set(params) - set(values) - {"confirmation"})
        if unknown:
            raise ActionRefused(self.id, f"unknown parameter(s): {', '.join(unknown)}")
        for k, v in values.items():
            if (self.template.params.get(k) == "secret" or k in auto
                    or (k in self.fixed and str(v) != str(self.fixed[k]))):
                raise ActionRefused(self.id, f"{{{k}}} comes from the configuration, not from input")
        values.update(self.fixed)
        if "operator" in auto:
            values["operator"] = self.operator(op_override)
        if "config" in auto:
            if not self.config_path:
                raise ActionRefused(self.id, "{config}: warroom runs without a configuration file")
            values["config"] = self.config_path
        try:
            argv = self.template.render(values)
        except ActionRefused as exc:
            raise ActionRefused(self.id, exc.reason) from None
        except (ValueError, TypeError) as exc:  # a value of an unexpected kind: still a refusal
            raise ActionRefused(self.id, str(exc)) from None
        shown = self.template.display(argv)
        guard = self._guard()
        target = self.scope
        if "service" in values:
            target = f"service:{values['service']}"
        shown_values = {k: v for k, v in values.items() if k not in self.fixed}
        return ActionPlan(
            action=self.id,
            title=self.title,
            target=target,
            changes=(Change(target=target, description=f"run: {shown}", before=None, after=shown),),
            guard=guard,
            danger=self.danger,
            params={"values": shown_values, "argv": shown},
            reason=reason,
            reason_required=self.reason_required,
            can_dry_run=True,
            preview=f"$ {shown}\n(timeout {self.template.timeout:g}s, no shell)",
            total=1,
        )

    def _guard(self) -> Guard:
        path = self.template.available()
        if path is None:
            return Guard(False, f"{self.template.program} is not installed (not on PATH)")
        return Guard(True, f"{self.template.program} found", path)

    async def check_guard(self, plan: ActionPlan) -> Guard:
        return self._guard()

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        values = dict(plan.params.get("values", {}))
        values.update(self.fixed)
        progress(Progress(0, 1, f"running {plan.params.get('argv', self.template.name)}"))
        try:
            res = await self.template.run(values)
        except BackendError as exc:
            return ActionResult(status="failed", summary=exc.reason)
        progress(Progress(1, 1, res.summary()))
        return ActionResult(
            status="ok" if res.ok else "failed",
            summary=res.summary(),
            after={"exit_code": res.exit_code, "timed_out": res.timed_out},
            details=res.tail(10),
        )


__all__ = [
    "CommandAction",
    "CommandCheck",
    "CommandResult",
    "CommandTemplate",
    "AUTO_PLACEHOLDERS",
    "PLACEHOLDER_TYPES",
    "ParamField",
    "PRESETS",
    "kill_group",
    "parse_path",
    "preset",
    "read_path",
    "validate_value",
]
