"""`[[services]] kind = "pm2"`: apps run by pm2, read from `pm2 jlist`, acted on through pm2.

- `Pm2Source` ("pm2"): one `pm2 jlist` per PM2_HOME per poll (async subprocess, its own
  process group killed at the timeout, output capped), parsed robustly (pm2 prints its
  banner, "[PM2] Spawning ..." and colour codes before the JSON on some calls). Each
  configured app becomes a `ServiceReading` with kind "pm2":

  | pm2 status                 | state        | status |
  |----------------------------|--------------|--------|
  | online                     | running      | OK     |
  | stopped                    | stopped      | CRIT   |
  | errored                    | down         | CRIT   |
  | launching                  | starting     | WARN   |
  | stopping                   | stopping     | WARN   |
  | waiting restart            | restarting   | WARN (a restart loop) |
  | one-launch-status          | exited       | WARN   |
  | (not in jlist)             | missing      | CRIT   |

  uptime from `pm2_env.pm_uptime` (the start time, ms since the epoch), pm2's own
  `restart_time` (restarts) and `unstable_restarts`, CPU % and memory from `monit`, pid,
  the last exit code, and every instance of a cluster-mode app (replicas; "2/4 online").
  pm2's own status word and unstable count are in `detail` ("pm2 online; 3 restarts
  (1 unstable)"; `pm2_status_of`, `unstable_of`). Only these fields are read: `pm2_env` also holds the app's whole environment, which
  never leaves this module.

  The monitor never starts a pm2 daemon: every pm2 command spawns one under PM2_HOME
  when none runs, so the source first checks `PM2_HOME/pm2.pid` (a live pid) and
  `rpc.sock`; without a daemon every app reads "down" with that reason.

- `Pm2Action` (`pm2.restart`, `pm2.stop`, `pm2.start`): guard (the daemon runs, the app is
  known to it, the state calls for it), preview (the exact pm2 command and the instances
  with their pid, state and restart count), confirmation, execution (`pm2 VERB NAME
  --no-color`, timeout), then it waits for the state pm2 settles in and reports it;
  the engine writes the audit entry and refuses in read-only mode. pm2's colour, spinner
  and table output never reaches a dialog: ANSI is stripped and its error line is shown
  in words ("pm2: Process or Namespace web not found").

- Logs: `log_spec_entries(config)` gives the log hub one command log source per pm2
  service that has no `logs =` of its own: `python -m backends.sources.pm2 tail ...`, which asks
  pm2 for the app's `pm_out_log_path` / `pm_err_log_path` and follows them (`tail -F`).

- `PM2_HOME` per service (`pm2_home = "/home/deploy/.pm2"`): ops boxes run pm2 under a
  specific user; `pm2_bin` names the pm2 executable (default `pm2` on PATH).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
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
from backends.actions.command import collect
from backends.engine.rules import RuleContext, register, rule
from backends.errors import ActionRefused, BackendError, redact
from backends.model import Finding, ServiceReading, Severity, Status, utcnow
from backends.sources.docker import service_findings

SOURCE_NAME = "pm2"
MAX_OUTPUT = 64 << 20  # bytes of `pm2 jlist` read at most (hundreds of apps with big envs)
DEFAULT_TIMEOUT = 10.0
ACTION_TIMEOUT = 60.0
SETTLE_TIMEOUT = 30.0
NO_ACCESS = "no permission to talk to pm2 through"
PARSE_INLINE = 64 << 10  # a jlist answer longer than this is parsed in a thread
MIN_INTERVAL = 5.0  # every poll starts node (pm2's CLI): ~0.4 s and a quarter CPU-second

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_SPINNER = re.compile(r"[\u2800-\u28ff\u25d0-\u25d3\u2580-\u259f\u2500-\u257f]")  # braille spinners, boxes
# a pm2 app name warroom will pass to pm2: not "all", not a number (pm2 reads those as
# every app / a pm_id), never an option
APP_RE = re.compile(r"^(?!all$)(?!\d+$)[A-Za-z0-9_.][A-Za-z0-9_.:@-]{0,127}$")

# pm2 status -> (state, status)
STATES: dict[str, tuple[str, Status]] = {
    "online": ("running", Status.OK),
    "stopped": ("stopped", Status.CRIT),
    "errored": ("down", Status.CRIT),
    "launching": ("starting", Status.WARN),
    "stopping": ("stopping", Status.WARN),
    "waiting restart": ("restarting", Status.WARN),
    "one-launch-status": ("exited", Status.WARN),
}
TRANSITIONAL = frozenset({"starting", "stopping", "restarting"})


# --------------------------------------------------------------------------- spec / home


@dataclass(frozen=True, slots=True)
class Pm2Spec:
    """One pm2 service: warroom's `name`, pm2's `app` name, where its pm2 lives."""

    name: str
    app: str | None = None  # pm2's name for it (default: name)
    pm2_home: str | None = None  # None: $PM2_HOME, else ~/.pm2
    pm2_bin: str = "pm2"
    depends_on: tuple[str, ...] = ()
    role: str | None = None
    playbook: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "depends_on", tuple(self.depends_on or ()))
        if not APP_RE.match(self.app_name):
            raise ValueError(f"pm2 service {self.name!r}: app name {self.app_name!r} cannot be passed to pm2 "
                             f"(must match {APP_RE.pattern}; 'all' and numbers mean other things to pm2)")

    @property
    def app_name(self) -> str:
        return self.app or self.name

    @property
    def home(self) -> str:
        return resolve_home(self.pm2_home)


def resolve_home(pm2_home: str | None) -> str:
    """pm2's own rule: PM2_HOME, else ~/.pm2."""
    if pm2_home:
        return os.path.abspath(os.path.expanduser(pm2_home))
    env = os.environ.get("PM2_HOME")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    return os.path.join(os.path.expanduser("~"), ".pm2")


def daemon_state(home: str) -> tuple[bool, str]:
    """(Blocking, tiny reads) is a pm2 daemon running for this PM2_HOME? (ok, reason)."""
    pid_file = os.path.join(home, "pm2.pid")
    try:
        with open(pid_file, encoding="ascii", errors="replace") as f:
            text = f.read(64).strip()
    except FileNotFoundError:
        return False, f"pm2 daemon is not running (no {pid_file})"
    except OSError as exc:
        return False, f"cannot read {pid_file}: {exc.strerror or exc}"
    if not text.isdigit():
        return False, f"pm2 daemon is not running ({pid_file} holds no pid)"
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False, f"pm2 daemon is not running (pid {pid} in {pid_file} is gone)"
    except PermissionError:
        pass  # alive, another user's: pm2 itself will say whether we may talk to it
    sock = os.path.join(home, "rpc.sock")
    if not os.path.exists(sock):
        return False, f"pm2 daemon pid {pid} has no rpc.sock in {home}"
    if not os.access(sock, os.R_OK | os.W_OK):
        # pm2 would try to spawn a daemon of its own here: never run it
        return False, (f"{NO_ACCESS} {sock} (pm2 daemon pid {pid} runs as another user): run warroom as that "
                       "user or give it the socket's group")
    return True, f"pm2 daemon pid {pid}"


def default_log_paths(home: str, app: str) -> tuple[str, str]:
    """Where pm2 writes an app's logs unless told otherwise (its name mangled as pm2 does)."""
    base = re.sub(r"[^a-zA-Z0-9\\.\-]", "-", app)
    return (os.path.join(home, "logs", f"{base}-out.log"), os.path.join(home, "logs", f"{base}-error.log"))


# --------------------------------------------------------------------------- running pm2


def clean(text: str) -> str:
    """pm2's output for a person: no ANSI colour, no spinner or box characters, no blank lines."""
    text = _SPINNER.sub("", _ANSI.sub("", text)).replace("\r", "\n")
    return "\n".join(ln.rstrip() for ln in text.splitlines() if ln.strip())


def error_words(stdout: str, stderr: str, fallback: str) -> str:
    """The line of pm2's output that says what went wrong, in words."""
    lines = clean(stderr).splitlines() + clean(stdout).splitlines()
    for ln in lines:
        m = re.search(r"\[PM2\]\[(?:ERROR|WARN)\]\s*(.+)", ln)
        if m:
            return "pm2: " + m.group(1).strip()
    for ln in lines:
        if re.search(r"error|not found|cannot|denied|EACCES|ENOENT|refused", ln, re.IGNORECASE):
            return "pm2: " + re.sub(r"^\[PM2\]\s*", "", ln.strip())
    useful = [ln for ln in lines if not ln.startswith(("Use --update-env", "[PM2] "))]
    return ("pm2: " + useful[-1].strip()) if useful else fallback


@dataclass(frozen=True, slots=True)
class Pm2Result:
    exit_code: int | None
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class Pm2Client:
    """Runs pm2 for one PM2_HOME: argv only (never a shell), colour off, timeout on every call."""

    def __init__(self, pm2_bin: str = "pm2", pm2_home: str | None = None, *, timeout: float = DEFAULT_TIMEOUT,
                 max_output: int = MAX_OUTPUT) -> None:
        self.pm2_bin = pm2_bin
        self.home = resolve_home(pm2_home)
        self.timeout = float(timeout)
        self.max_output = int(max_output)

    def available(self) -> str | None:
        prog = os.path.expanduser(self.pm2_bin)
        if os.sep in prog:
            return prog if os.access(prog, os.X_OK) else None
        return shutil.which(prog)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"PM2_HOME": self.home, "FORCE_COLOR": "0", "NO_COLOR": "1", "PM2_DISCRETE_MODE": "true",
                    "TERM": "dumb"})
        env.pop("PM2_SILENT", None)
        return env

    def command(self, *args: str) -> list[str]:
        return [os.path.expanduser(self.pm2_bin), *args]

    async def run(self, *args: str, timeout: float | None = None) -> Pm2Result:  # noqa: ASYNC109
        """Run `pm2 ARGS`; a timeout kills its process group. BackendError when pm2 cannot start."""
        argv = self.command(*args)
        limit = self.timeout if timeout is None else float(timeout)
        t0 = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True, env=self.environment())
        except FileNotFoundError:
            raise BackendError(SOURCE_NAME, f"{self.pm2_bin}: pm2 is not installed (command not found)") from None
        except PermissionError:
            raise BackendError(SOURCE_NAME, f"{self.pm2_bin}: permission denied") from None
        except OSError as exc:
            raise BackendError(SOURCE_NAME, f"{self.pm2_bin}: {exc.strerror or exc}") from None
        out, err, timed_out, truncated = await collect(proc, limit=limit, max_output=self.max_output)
        return Pm2Result(exit_code=None if timed_out else proc.returncode,
                         stdout=out.decode("utf-8", "replace"), stderr=err.decode("utf-8", "replace"),
                         duration=time.monotonic() - t0, timed_out=timed_out, truncated=truncated)

    async def daemon(self) -> tuple[bool, str]:
        return await asyncio.to_thread(daemon_state, self.home)  # a few tiny reads, off the loop

    async def jlist(self, timeout: float | None = None) -> list[dict[str, Any]]:  # noqa: ASYNC109
        """The daemon's process list. BackendError when pm2 cannot say (timeout, no JSON, exit code)."""
        res = await self.run("jlist", timeout=timeout)
        if res.timed_out:
            raise BackendError(SOURCE_NAME, f"pm2 jlist timed out after {res.duration:.1f}s (PM2_HOME={self.home})")
        if res.truncated:
            raise BackendError(SOURCE_NAME, f"pm2 jlist answered more than {self.max_output >> 20} MB")
        try:
            if len(res.stdout) > PARSE_INLINE:  # a big answer parses off the loop (3.6 MB: ~80 ms)
                return await asyncio.to_thread(parse_jlist, res.stdout)
            return parse_jlist(res.stdout)
        except ValueError as exc:
            if res.exit_code != 0:
                raise BackendError(SOURCE_NAME, redact(error_words(res.stdout, res.stderr,
                                                                   f"pm2 jlist exited {res.exit_code}"))) from None
            raise BackendError(SOURCE_NAME, str(exc)) from None


def parse_jlist(text: str) -> list[dict[str, Any]]:
    """The JSON array in `pm2 jlist`'s output, whatever noise comes before it (banner,
    "[PM2] Spawning PM2 daemon", ANSI codes) or after it. ValueError when there is none."""
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        with contextlib.suppress(ValueError):
            whole = json.loads(stripped)
            if _is_list(whole):
                return list(whole)
    plain = _ANSI.sub("", text)
    dec = json.JSONDecoder()
    for m in re.finditer(r"(?m)^[ \t]*\[", plain):  # a JSON array starts a line; "[PM2] ..." fails fast
        try:
            value, _end = dec.raw_decode(plain, m.end() - 1)
        except ValueError:
            continue
        if _is_list(value):
            return list(value)
    first = clean(text).splitlines()[:1]
    raise ValueError("pm2 jlist printed no process list" + (f" (it said: {first[0][:160]})" if first else ""))


def _is_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, dict) for x in value)


# --------------------------------------------------------------------------- readings


@dataclass(frozen=True, slots=True)
class Pm2Instance:
    """The fields warroom reads of one jlist entry (never its environment)."""

    name: str
    pm_id: int
    pid: int
    status: str
    started_ms: float | None
    restarts: int
    unstable_restarts: int
    cpu: float | None
    memory: int | None
    exit_code: int | None
    out_log: str | None
    err_log: str | None
    exec_mode: str

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> Pm2Instance:
        env = entry.get("pm2_env")
        env = env if isinstance(env, Mapping) else {}
        monit = entry.get("monit")
        monit = monit if isinstance(monit, Mapping) else {}
        return cls(
            name=str(entry.get("name") or env.get("name") or ""),
            pm_id=_int(entry.get("pm_id", env.get("pm_id")), -1),
            pid=_int(entry.get("pid"), 0),
            status=str(env.get("status") or "unknown"),
            started_ms=_num(env.get("pm_uptime")),
            restarts=_int(env.get("restart_time"), 0),
            unstable_restarts=_int(env.get("unstable_restarts"), 0),
            cpu=_num(monit.get("cpu")),
            memory=_int(monit.get("memory"), 0) if monit.get("memory") is not None else None,
            exit_code=_int(env.get("exit_code"), 0) if isinstance(env.get("exit_code"), (int, float)) else None,
            out_log=_path(env.get("pm_out_log_path")),
            err_log=_path(env.get("pm_err_log_path")),
            exec_mode=str(env.get("exec_mode") or ""),
        )

    def brief(self) -> dict[str, Any]:
        return {"pm_id": self.pm_id, "pid": self.pid or None, "status": self.status, "restarts": self.restarts,
                "unstable_restarts": self.unstable_restarts}


def _int(v: Any, default: int) -> int:
    if isinstance(v, bool):
        return default
    if isinstance(v, (int, float)):
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    return default


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _path(v: Any) -> str | None:
    return v if isinstance(v, str) and v and v != "/dev/null" else None


def instances_of(entries: Iterable[Mapping[str, Any]], app: str) -> list[Pm2Instance]:
    return sorted((Pm2Instance.of(e) for e in entries if (e.get("name") == app)), key=lambda i: i.pm_id)


_STATUS_IN_DETAIL = re.compile(r"(?:^|; )pm2 ([a-z ,/-]+?)(?:;|$)")
_UNSTABLE_IN_DETAIL = re.compile(r"\((\d+) unstable\)")


def pm2_status_of(r: ServiceReading) -> str | None:
    """pm2's own word(s) for a pm2 service's reading ("online", "errored", "online, stopped")."""
    m = _STATUS_IN_DETAIL.search(r.detail or "") if r.kind == "pm2" else None
    return m.group(1) if m else None


def unstable_of(r: ServiceReading) -> int:
    """pm2's unstable_restarts (summed over the app's instances) of a pm2 service's reading."""
    m = _UNSTABLE_IN_DETAIL.search(r.detail or "") if r.kind == "pm2" else None
    return int(m.group(1)) if m else 0


def reading_for(spec: Pm2Spec, instances: Sequence[Pm2Instance], *, source: str = SOURCE_NAME,
                now_ms: float | None = None) -> ServiceReading:
    """jlist's entries for one app -> its reading. `detail` carries what only pm2 knows, in
    words: "pm2 online; 3 restarts (1 unstable)" (`pm2_status_of`, `unstable_of` read it
    back), "2/4 online; ..." for a cluster."""
    at = utcnow()
    base: dict[str, Any] = dict(source=source, name=spec.name, kind="pm2", depends_on=spec.depends_on, at=at)
    if not instances:
        return ServiceReading(**base, state="missing", status=Status.CRIT, replicas=0,
                              detail=f"pm2 has no app named {spec.app_name!r} (PM2_HOME={spec.home})")
    now_ms = time.time() * 1000.0 if now_ms is None else now_ms
    states = [STATES.get(i.status, (i.status or "unknown", Status.UNKNOWN)) for i in instances]
    online = [i for i in instances if i.status == "online"]
    main = online[0] if online else instances[0]
    rank = {Status.CRIT: 0, Status.UNKNOWN: 1, Status.WARN: 2, Status.OK: 3}
    if online and len(online) == len(instances):
        state, status = "running", Status.OK
    elif online:
        state, status = "running", Status.WARN
    else:
        state, status = min(states, key=lambda s: rank[s[1]])
    started = main.started_ms if main.status == "online" else None
    uptime = max(0.0, (now_ms - started) / 1000.0) if started else None
    cpu = [i.cpu for i in online if i.cpu is not None]
    mem = [i.memory for i in online if i.memory]
    restarts = sum(i.restarts for i in instances)
    unstable = sum(i.unstable_restarts for i in instances)
    detail = [f"pm2 {', '.join(sorted({i.status for i in instances}))}"]
    if len(instances) > 1:
        detail.insert(0, f"{len(online)}/{len(instances)} online")
    detail.append(f"{restarts} restarts" + (f" ({unstable} unstable)" if unstable else ""))
    if state == "restarting":
        detail.append("restart loop: pm2 is waiting to restart it")
    # the last exit code says why it is down; a stop's exit (pm2 signalled it) says nothing
    exit_code = main.exit_code if state in ("down", "exited", "restarting") else None
    if exit_code is not None:
        detail.append(f"last exit code {exit_code}")
    return ServiceReading(
        **base, state=state, status=status, started_at=datetime.fromtimestamp(started / 1000.0, UTC) if started else None, uptime_s=uptime,
        restarts=restarts, pid=main.pid or None,
        cpu_percent=sum(cpu) if cpu else (0.0 if online else None), rss_bytes=sum(mem) if mem else None,
        replicas=len(online), exit_code=exit_code, detail="; ".join(detail))


class Pm2Source:
    """A monitor Source: every pm2 service, one `pm2 jlist` per (pm2_bin, PM2_HOME) per poll."""

    kind = "pm2"

    def __init__(self, specs: Iterable[Pm2Spec], *, name: str = SOURCE_NAME, interval: float = 5.0,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.name = name
        self.specs = list(specs)
        if not self.specs:
            raise ValueError("no pm2 service")
        seen: set[str] = set()
        for s in self.specs:
            if s.name in seen:
                raise ValueError(f"duplicate pm2 service {s.name!r}")
            seen.add(s.name)
            if s.role:
                register("roles")[s.name] = s.role
            register("service-playbooks")[s.name] = s.playbook
        self.interval = interval
        self.call_timeout = float(timeout)
        self.timeout = self.call_timeout + 5.0  # the monitor's bound: pm2's own timeout fires first
        self.clients: dict[tuple[str, str], Pm2Client] = {}
        for s in self.specs:
            key = (s.pm2_bin, s.home)
            if key not in self.clients:
                self.clients[key] = Pm2Client(s.pm2_bin, s.home, timeout=self.call_timeout)
        self.last_entries: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def spec_for(self, service: str) -> Pm2Spec | None:
        return next((s for s in self.specs if s.name == service), None)

    def client_for(self, spec: Pm2Spec) -> Pm2Client:
        return self.clients[(spec.pm2_bin, spec.home)]

    async def entries(self, client: Pm2Client) -> list[dict[str, Any]] | str:
        """jlist of one pm2, or the reason there is none: a daemon that is not running is a
        fact about the apps (all down), never a reason to start one."""
        alive, why = await client.daemon()
        if not alive and why.startswith(NO_ACCESS):
            raise BackendError(self.name, why)  # not a fact about the apps: they cannot be read
        if not alive:
            return why
        return await client.jlist()

    async def poll(self) -> Sequence[ServiceReading]:
        keys = list(self.clients)
        got = await asyncio.gather(*(self.entries(self.clients[k]) for k in keys), return_exceptions=True)
        results: dict[tuple[str, str], list[dict[str, Any]] | str | BaseException] = dict(zip(keys, got, strict=True))
        errors = [r for r in got if isinstance(r, BaseException)]
        for r in errors:
            if not isinstance(r, (BackendError, OSError)):
                raise r
        if errors and len(errors) == len(got):
            first = errors[0]
            raise first if isinstance(first, BackendError) else BackendError(self.name, str(first))
        out: list[ServiceReading] = []
        for spec in self.specs:
            key = (spec.pm2_bin, spec.home)
            res = results[key]
            base: dict[str, Any] = dict(source=self.name, name=spec.name, kind="pm2", depends_on=spec.depends_on)
            if isinstance(res, BaseException):
                reason = res.reason if isinstance(res, BackendError) else str(res)
                out.append(ServiceReading(**base, state="unknown", status=Status.UNKNOWN,
                                          detail=f"cannot read pm2: {reason}"))
            elif isinstance(res, str):
                out.append(ServiceReading(**base, state="down", status=Status.CRIT, replicas=0,
                                          detail=f"{res} (PM2_HOME={spec.home})"))
            else:
                self.last_entries[key] = res
                out.append(reading_for(spec, instances_of(res, spec.app_name), source=self.name))
        return out

    async def aclose(self) -> None:
        return None


# --------------------------------------------------------------------------- rules


@rule(ServiceReading)
def pm2_service_rule(r: ServiceReading, ctx: RuleContext) -> list[Finding]:
    if r.kind != "pm2":
        return []
    if r.state in TRANSITIONAL - {"restarting"}:
        return []  # launching / stopping: pm2 is in the middle of it; the next poll says where it went
    if r.state == "unknown":
        return [Finding(key=f"service-unknown:{r.name}", severity=Severity.P2, source=r.source,
                        summary=f"{r.name}: cannot check (pm2)", evidence=(r.detail,), target=f"service:{r.name}")]
    out = list(service_findings(r, ctx))
    unstable = unstable_of(r)
    if r.state == "running" and unstable:
        out.append(Finding(key=f"pm2-unstable:{r.name}", severity=Severity.P3, source=r.source,
                           summary=f"{r.name}: {unstable} unstable restarts in pm2 (exited before min_uptime)",
                           evidence=(r.detail, "pm2 reset <app> clears the count once it is stable"),
                           target=f"service:{r.name}"))
    return out


# --------------------------------------------------------------------------- actions

VERBS: dict[str, tuple[str, str, Danger]] = {
    # verb -> (title, state it settles in, danger)
    "restart": ("Restart", "online", Danger.CONFIRM),
    "stop": ("Stop", "stopped", Danger.CONFIRM),
    "start": ("Start", "online", Danger.CONFIRM),
}


class Pm2Action(Action):
    """`pm2 restart|stop|start NAME` for a configured pm2 service."""

    def __init__(self, source: Pm2Source, verb: str, *, timeout: float = ACTION_TIMEOUT,
                 settle_timeout: float = SETTLE_TIMEOUT) -> None:
        if verb not in VERBS:
            raise ValueError(f"unknown pm2 verb {verb!r}")
        self.source = source
        self.verb = verb
        title, self.settles_in, self.danger = VERBS[verb]
        self.id = f"pm2.{verb}"
        self.title = f"{title} pm2 app"
        self.description = f"{verb} a pm2 app through pm2"
        self.timeout = float(timeout)
        self.settle_timeout = float(settle_timeout)

    def _spec(self, service: Any) -> Pm2Spec:
        known = ", ".join(s.name for s in self.source.specs) or "none"
        if not service:
            raise ActionRefused(self.id, f"which service? ({known})", ask=True)
        spec = self.source.spec_for(service) if isinstance(service, str) else None
        if spec is None:
            raise ActionRefused(self.id, f"unknown pm2 service {str(service)[:80]!r} (known: {known})")
        return spec

    async def _look(self, spec: Pm2Spec) -> tuple[Guard, list[Pm2Instance]]:
        client = self.source.client_for(spec)
        if client.available() is None:
            return Guard(False, f"{spec.pm2_bin} is not installed"), []
        alive, why = await client.daemon()
        if not alive:
            return Guard(False, f"{why} (PM2_HOME={client.home}); warroom does not start one"), []
        try:
            entries = await client.jlist()
        except BackendError as exc:
            return Guard(False, f"cannot read pm2: {exc.reason}"), []
        inst = instances_of(entries, spec.app_name)
        if not inst:
            return Guard(False, f"pm2 has no app named {spec.app_name!r} (PM2_HOME={client.home})"), []
        statuses = {i.status for i in inst}
        if self.verb == "stop" and statuses <= {"stopped"}:
            return Guard(False, f"{spec.app_name} is already stopped"), inst
        if self.verb == "start" and statuses <= {"online"}:
            return Guard(False, f"{spec.app_name} is already online (restart it instead)"), inst
        shown = ", ".join(f"{i.pm_id}: {i.status}" for i in inst)
        return Guard(True, f"pm2 knows {spec.app_name} ({shown})"), inst

    async def plan(self, *, service: str = "", reason: str | None = None, **_: Any) -> ActionPlan:
        spec = self._spec(service)
        guard, inst = await self._look(spec)
        client = self.source.client_for(spec)
        argv = [self.verb, spec.app_name]
        shown = " ".join(["pm2", *argv])
        changes = tuple(Change(target=f"pm_id {i.pm_id}",
                               description=f"{spec.app_name}[{i.pm_id}] {i.status}"
                               + (f" pid {i.pid}" if i.pid else "") + f", {i.restarts} restarts -> {self.settles_in}",
                               before=i.brief(), after=self.settles_in) for i in inst)
        changes += (Change(target=spec.name, description=f"run: {shown}", after=self.settles_in),)
        preview = [f"$ {shown}", f"PM2_HOME={client.home}"]
        preview += [f"  [{i.pm_id}] {i.status}" + (f", pid {i.pid}" if i.pid else "") +
                    f", {i.restarts} restarts" for i in inst]
        return ActionPlan(action=self.id, title=f"{self.verb.capitalize()} {spec.name} (pm2)",
                          target=f"service:{spec.name}", changes=changes, guard=guard, danger=self.danger,
                          params={"service": spec.name, "app": spec.app_name, "argv": shown,
                                  "pm_ids": [i.pm_id for i in inst],
                                  "restarts": sum(i.restarts for i in inst)},
                          reason=reason, total=2, can_dry_run=True, preview="\n".join(preview))

    async def check_guard(self, plan: ActionPlan) -> Guard:
        spec = self._spec(plan.params.get("service"))
        guard, inst = await self._look(spec)
        if guard.ok and sorted(i.pm_id for i in inst) != sorted(plan.params.get("pm_ids") or []):
            return Guard(False, f"{spec.app_name}'s pm2 instances changed since the preview: preview again")
        return guard

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        spec = self._spec(plan.params.get("service"))
        client = self.source.client_for(spec)
        before = int(plan.params.get("restarts") or 0)
        progress(Progress(0, 2, f"running {plan.params['argv']}"))
        try:
            res = await client.run(self.verb, spec.app_name, "--no-color", timeout=self.timeout)
        except BackendError as exc:
            return ActionResult(status="failed", summary=exc.reason)
        if res.timed_out:
            return ActionResult(status="failed", summary=f"pm2 {self.verb} {spec.app_name} timed out after "
                                f"{res.duration:.0f}s (pm2 may still finish it: look at the service's state)")
        if not res.ok:
            return ActionResult(status="failed", summary=redact(error_words(
                res.stdout, res.stderr, f"pm2 {self.verb} {spec.app_name} exited {res.exit_code}")))
        progress(Progress(1, 2, f"pm2 {self.verb} {spec.app_name}: done; waiting for {self.settles_in}"))
        ok, inst = await self._settle(client, spec)
        after = [i.brief() for i in inst]
        restarts = sum(i.restarts for i in inst)
        states = ", ".join(f"[{i.pm_id}] {i.status}" for i in inst) or "no instance"
        if not ok:
            return ActionResult(status="failed", after=after, summary=f"{spec.name}: pm2 ran {self.verb} but the app "
                                f"is {states} after {self.settle_timeout:g}s (expected {self.settles_in})")
        moved = f", restarts {before} -> {restarts}" if self.verb != "stop" else ""
        return ActionResult(status="ok", summary=f"{spec.name}: {states}{moved}", after=after,
                            before={"restarts": before, "pm_ids": plan.params.get("pm_ids")})

    async def _settle(self, client: Pm2Client, spec: Pm2Spec) -> tuple[bool, list[Pm2Instance]]:
        deadline = time.monotonic() + self.settle_timeout
        inst: list[Pm2Instance] = []
        while True:
            try:
                inst = instances_of(await client.jlist(), spec.app_name)
            except BackendError:
                inst = []
            if inst and all(i.status == self.settles_in for i in inst):
                return True, inst
            if time.monotonic() >= deadline:
                return False, inst
            await asyncio.sleep(0.5)  # each look starts node


def pm2_actions(source: Pm2Source) -> list[Pm2Action]:
    return [Pm2Action(source, verb) for verb in VERBS]


# --------------------------------------------------------------------------- logs


def tail_argv(spec: Pm2Spec, *, lines: int = 50) -> list[str]:
    """The log hub's command for one pm2 service's logs (this module's `tail`)."""
    argv = [sys.executable, "-m", "backends.sources.pm2", "tail", "--app", spec.app_name, "--pm2", spec.pm2_bin,
            "--home", spec.home, "--lines", str(int(lines))]
    return argv


def log_spec_entries(config: Any) -> list[dict[str, Any]]:
    """`[[logs]]`-shaped entries (name, service, command argv) for the pm2 services that have
    no `logs =` and no `[[logs]] service =` of their own."""
    services = list(getattr(config, "services", None) or ())
    covered = {getattr(lg, "service", None) for lg in (getattr(config, "logs", None) or ())} | \
        {getattr(lg, "name", None) for lg in (getattr(config, "logs", None) or ())}
    out: list[dict[str, Any]] = []
    for s in services:
        if getattr(s, "kind", None) != "pm2" or getattr(s, "logs", None) or s.name in covered:
            continue
        spec = spec_from_config(s)
        out.append({"name": s.name, "service": s.name, "command": tail_argv(spec),
                    "silence_after": getattr(s, "silence_after", None)})
    return out


def spec_from_config(s: Any) -> Pm2Spec:
    return Pm2Spec(name=s.name, app=getattr(s, "pm2_app", None), pm2_home=getattr(s, "pm2_home", None),
                   pm2_bin=getattr(s, "pm2_bin", None) or "pm2", depends_on=tuple(s.depends_on or ()),
                   role=getattr(s, "role", None), playbook=getattr(s, "playbook", None))


def log_paths(pm2_bin: str, home: str, app: str, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """(Blocking: the tail helper's own process) the app's log files as pm2 reports them;
    pm2's default paths when no daemon runs (never starts one) or pm2 cannot say."""
    import subprocess

    paths: list[str] = []
    if daemon_state(home)[0]:
        client = Pm2Client(pm2_bin, home, timeout=timeout)
        try:
            res = subprocess.run(client.command("jlist"), stdin=subprocess.DEVNULL, capture_output=True,
                                 timeout=timeout, env=client.environment(), check=False)
            for i in instances_of(parse_jlist(res.stdout.decode("utf-8", "replace")), app):
                paths += [p for p in (i.out_log, i.err_log) if p]
        except (OSError, ValueError, subprocess.TimeoutExpired):
            paths = []
    return list(dict.fromkeys(paths)) or list(default_log_paths(home, app))


def _tail_main(args: Sequence[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m backends.sources.pm2 tail",
                                 description="follow a pm2 app's log files (out and error)")
    ap.add_argument("--app", required=True)
    ap.add_argument("--pm2", default="pm2")
    ap.add_argument("--home", default=None)
    ap.add_argument("--lines", type=int, default=50)
    ns = ap.parse_args(args)
    paths = log_paths(ns.pm2, resolve_home(ns.home), ns.app)
    tail = shutil.which("tail")
    if tail is None:
        print("tail is not installed: cannot follow " + ", ".join(paths), flush=True)
        return 1
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # tail's "cannot open" for a file pm2 has not written yet is not a log line
    os.execv(tail, [tail, "-q", "-n", str(max(0, ns.lines)), "-F", *paths])
    return 1  # pragma: no cover - execv does not return


__all__ = [
    "APP_RE",
    "Pm2Action",
    "Pm2Client",
    "Pm2Instance",
    "Pm2Result",
    "Pm2Source",
    "Pm2Spec",
    "clean",
    "daemon_state",
    "default_log_paths",
    "error_words",
    "instances_of",
    "log_spec_entries",
    "parse_jlist",
    "pm2_actions",
    "pm2_status_of",
    "reading_for",
    "resolve_home",
    "spec_from_config",
    "unstable_of",
]


if __name__ == "__main__":
    if sys.argv[1:2] == ["tail"]:
        sys.exit(_tail_main(sys.argv[2:]))
    print("usage: python -m backends.sources.pm2 tail --app NAME [--pm2 PATH] [--home PM2_HOME] [--lines N]",
          file=sys.stderr)
    sys.exit(2)
