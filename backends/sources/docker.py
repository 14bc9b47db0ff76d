"""Docker / Compose services: readings, actions (restart, stop, start, scale,
ordered startup, graceful shutdown) and the rules that turn them into findings.

The docker SDK is blocking and imported lazily; every call runs in a thread
(`backends.engine.monitor.to_thread`) under the client's socket timeout, which is kept
below the source's poll timeout so a hanging engine never holds a poll forever.

One poll costs ONE list call (`GET /containers/json?all=1`, filtered by the compose
project label when there is a single project). The list gives id, names, labels,
image, state and the status text; what it lacks (StartedAt, RestartCount, the exit
code, FinishedAt) comes from an inspect that is cached per container and refreshed
only when the container's state / health / status text says it changed (a restart
is seen as an uptime shorter than the cached one) or the cache is older than
`inspect_max_age`.

The engine is found like the docker CLI finds it: `base_url` (unix://, tcp://,
ssh:// through the system ssh command, or paramiko with `ssh_client="paramiko"`), a
named docker context, `DOCKER_HOST`, `DOCKER_CONTEXT` / the current context, then the
default socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import shlex
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

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
from backends.actions.command import CommandTemplate
from backends.engine.monitor import to_thread
from backends.engine.rules import (
    RuleContext,
    current_settings,
    register,
    rule,
    settings_table,
    snapshot_rule,
)
from backends.errors import ActionRefused, BackendError, redact
from backends.model import Finding, ServiceReading, Severity, Snapshot, Status, utcnow

if TYPE_CHECKING:
    import subprocess

# docker (the SDK) ships no type information: a DockerClient is an untyped object here
DockerClient = Any
_P = ParamSpec("_P")
_T = TypeVar("_T")

LABEL_PROJECT = "com.docker.compose.project"
LABEL_SERVICE = "com.docker.compose.service"
LABEL_DEPENDS = "com.docker.compose.depends_on"
LABEL_NUMBER = "com.docker.compose.container-number"
LABEL_WORKDIR = "com.docker.compose.project.working_dir"
LABEL_FILES = "com.docker.compose.project.config_files"

_NAME_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,127}$")
_NEVER = "0001-01-01T00:00:00Z"


# --------------------------------------------------------------------------- roles

# Roles decide the playbook of a finding and the graceful-shutdown order.
ROLES = ("api", "listener", "events", "worker", "indexer", "redis", "postgres", "other")


def guess_role(name: str) -> str:
    n = name.lower()
    if re.search(r"(^|[-_.])(api|gateway)([-_.]|$)|api[-_]?gateway", n):
        return "api"
    if "listener" in n:
        return "listener"
    if re.search(r"event[-_.]?processor|processor", n):
        return "events"
    if "worker" in n:
        return "worker"
    if "indexer" in n or "ponder" in n:
        return "indexer"
    if "redis" in n:
        return "redis"
    if "postgres" in n or n in ("db", "pg", "database"):
        return "postgres"
    return "other"


def role_of(name: str, ctx: RuleContext | None = None) -> str:
    roles = settings_table("roles", ctx)  # service name -> configured role
    if name in roles:
        return str(roles[name])
    cfg = getattr(ctx, "config", None) if ctx is not None else None
    for svc in getattr(cfg, "services", None) or ():
        if getattr(svc, "name", None) == name and getattr(svc, "role", None):
            return str(svc.role)
    return guess_role(name)


# --------------------------------------------------------------------------- specs and containers


@dataclass(frozen=True, slots=True)
class DockerServiceSpec:
    """One configured service: compose labels, or a container name."""

    name: str
    project: str | None = None
    service: str | None = None  # compose service; default: name
    container: str | None = None  # match by container name instead of labels
    depends_on: tuple[str, ...] = ()
    role: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "depends_on", tuple(self.depends_on or ()))

    @property
    def compose_service(self) -> str:
        return self.service or self.name


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    id: str
    name: str
    project: str | None
    service: str | None
    state: str  # running | exited | restarting | paused | created | dead | removing
    health: str | None
    status_text: str
    image: str
    labels: Mapping[str, str] = field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    restarts: int | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    error: str = ""
    has_healthcheck: bool = False

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def brief(self) -> dict[str, Any]:
        out: dict[str, Any] = {"container": self.name, "id": self.short_id, "state": self.state}
        if self.health:
            out["health"] = self.health
        if self.state != "running" and self.exit_code is not None:
            out["exit_code"] = self.exit_code
        return out


def parse_time(text: str | None) -> datetime | None:
    if not text or text.startswith("0001-01-01"):
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", text)
    if not m:
        return None
    frac = (m.group(2) or ".0")[:7]
    tz = m.group(3) or "Z"
    tz = "+00:00" if tz == "Z" else tz
    try:
        return datetime.fromisoformat(f"{m.group(1)}{frac}{tz}").astimezone(UTC)
    except ValueError:
        return None


_HEALTH_IN_STATUS = re.compile(r"\((healthy|unhealthy|health: starting)\)")
_EXIT_IN_STATUS = re.compile(r"^Exited \((-?\d+)\)")
_UP_IN_STATUS = re.compile(r"^Up (.+?)(?: \(|$)")


def health_from_status(status: str) -> str | None:
    m = _HEALTH_IN_STATUS.search(status or "")
    if not m:
        return None
    return "starting" if m.group(1) == "health: starting" else m.group(1)


def uptime_bounds(status: str) -> tuple[float, float] | None:
    """[low, high) uptime in seconds that the engine's humanised "Up ..." text stands for
    (go-units HumanDuration: seconds and minutes truncated, hours rounded)."""
    m = _UP_IN_STATUS.match(status or "")
    if not m:
        return None
    text = m.group(1).strip()
    h = 3600.0
    if text == "Less than a second":
        return 0.0, 1.0
    if text == "About a minute":
        return 60.0, 120.0
    if text == "About an hour":
        return h, 1.5 * h
    m2 = re.match(r"^(\d+) (second|minute|hour|day|week|month|year)s?$", text)
    if not m2:
        return None
    n = int(m2.group(1))
    unit = m2.group(2)
    if unit == "second":
        return float(n), n + 1.0
    if unit == "minute":
        return 60.0 * n, 60.0 * (n + 1)
    hours = {"hour": 1, "day": 24, "week": 168, "month": 720}.get(unit)
    if hours is not None:
        lo = (hours * n - 0.5) * h
        hi = (hours * (n + 1) - 0.5) * h if unit != "hour" else (n + 0.5) * h
        return lo, hi
    return 8760 * n * h, 8760 * (n + 1) * h


def uptime_upper_bound(status: str) -> float | None:
    b = uptime_bounds(status)
    return None if b is None else b[1]


def _from_list(item: Mapping[str, Any]) -> ContainerInfo:
    labels = item.get("Labels") or {}
    names = item.get("Names") or []
    name = names[0].lstrip("/") if names else item.get("Id", "")[:12]
    status = item.get("Status") or ""
    state = item.get("State") or "unknown"
    exit_code = None
    m = _EXIT_IN_STATUS.match(status)
    if m:
        exit_code = int(m.group(1))
    return ContainerInfo(
        id=item.get("Id", ""),
        name=name,
        project=labels.get(LABEL_PROJECT),
        service=labels.get(LABEL_SERVICE),
        state=state,
        health=health_from_status(status),
        status_text=status,
        image=item.get("Image") or "",
        labels=labels,
        exit_code=exit_code,
    )


def _merge_inspect(c: ContainerInfo, data: Mapping[str, Any]) -> ContainerInfo:
    st = data.get("State") or {}
    health = (st.get("Health") or {}).get("Status")
    if health == "none":
        health = None
    cfg = data.get("Config") or {}
    cfg_image = cfg.get("Image")
    test = (cfg.get("Healthcheck") or {}).get("Test") or []
    return replace(
        c,
        state=st.get("Status") or c.state,
        health=health if st.get("Health") is not None else c.health,
        started_at=parse_time(st.get("StartedAt")),
        finished_at=parse_time(st.get("FinishedAt")),
        restarts=int(data.get("RestartCount") or 0),
        exit_code=st.get("ExitCode"),
        oom_killed=bool(st.get("OOMKilled")),
        error=st.get("Error") or "",
        image=c.image or cfg_image or "",
        has_healthcheck=bool(test) and test[0] != "NONE",
    )


# --------------------------------------------------------------------------- engine connection


# The last lines `ssh` wrote to its stderr, per "user@host:port" (for the degraded reason).
SSH_STDERR: dict[str, deque[str]] = {}


def quiet_system_ssh() -> None:
    """Make docker-py's system-ssh transport safe under a full-screen console.

    docker-py starts `ssh ... docker system dial-stdio` with the console's own stderr and
    controlling terminal: ssh's warnings ("Permanently added ...") are drawn over the
    screen, a password or host-key prompt takes the keyboard, and every closed connection
    leaves a zombie. The replacement runs ssh in its own session (no terminal), in batch
    mode (never prompts: a key or agent must be set up, as for any unattended ssh), with
    its stderr read by a thread and kept for the degraded reason, and reaps it on close.
    """
    import subprocess
    import threading

    from docker.transport import sshconn

    if getattr(sshconn.SSHSocket, "_warroom_quiet", False):
        return

    # docker ships no type information: SSHSocket is an untyped (Any) base class
    class QuietSSHSocket(sshconn.SSHSocket):  # type: ignore[misc]
        _warroom_quiet = True

        def connect(self, **kwargs: Any) -> None:
            args = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                    "-o", "ServerAliveInterval=15"]
            if self.user:
                args += ["-l", self.user]
            if self.port:
                args += ["-p", self.port]
            args += ["--", self.host, "docker system dial-stdio"]
            env = dict(os.environ)
            env.pop("LD_LIBRARY_PATH", None)
            env.pop("SSL_CERT_FILE", None)
            key = f"{self.user + '@' if self.user else ''}{self.host}{':' + self.port if self.port else ''}"
            tail = SSH_STDERR.setdefault(key, deque(maxlen=5))
            self.proc = subprocess.Popen(args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, start_new_session=True)

            def drain(stream: IO[bytes] | None = self.proc.stderr) -> None:
                if stream is None:  # never: stderr is a pipe
                    return
                with contextlib.suppress(Exception):
                    for raw in iter(stream.readline, b""):
                        line = raw.decode("utf-8", "replace").strip()
                        if line:
                            tail.append(redact(line[:300]))

            threading.Thread(target=drain, name="warroom-ssh-stderr", daemon=True).start()

        def close(self) -> None:
            proc: subprocess.Popen[bytes] | None = self.proc
            if not proc:
                return
            with contextlib.suppress(Exception):
                if proc.stdin is not None and not proc.stdin.closed:
                    proc.stdin.write(b"\n\n")
                    proc.stdin.flush()
                    proc.stdin.close()
            with contextlib.suppress(Exception):
                proc.terminate()
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=2)

    sshconn.SSHSocket = QuietSSHSocket


def _ssh_stderr(where: str) -> str:
    """What ssh last said about the host of `ssh://...` (empty if nothing)."""
    target = where.removeprefix("ssh://").rstrip("/")
    tail = SSH_STDERR.get(target)
    return tail[-1] if tail else ""


def describe_docker_error(exc: BaseException, where: str, timeout: float) -> str:
    """A readable reason for a docker SDK / requests failure."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 8:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    text = " ".join(str(e) for e in chain)
    names = " ".join(type(e).__name__ for e in chain)
    explanation = getattr(exc, "explanation", None)
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if explanation and status:
        return redact(f"docker engine at {where}: {status} {explanation}")
    said = _ssh_stderr(where) if where.startswith("ssh://") else ""
    if said:
        return redact(f"docker engine at {where}: ssh: {said[:200]}")
    if "ReadTimeout" in names or "Read timed out" in text or "timed out" in text.lower() or "TimeoutError" in names:
        return f"docker engine at {where} did not answer within {timeout:g}s"
    if "FileNotFoundError" in names or "No such file or directory" in text:
        return f"docker engine unreachable: no socket at {where}"
    if "ConnectionRefused" in names or "Connection refused" in text:
        return f"docker engine unreachable: connection refused at {where}"
    if "AuthenticationException" in names or "Authentication failed" in text:
        return f"docker engine at {where}: SSH authentication failed"
    if "PermissionError" in names or "Permission denied" in text:
        return f"docker engine: permission denied on {where}"
    if "RemoteDisconnected" in names or "Connection aborted" in text or "ConnectionReset" in names:
        return f"docker engine at {where} closed the connection"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return redact(f"docker engine at {where}: {first[:200]}")


def resolve_engine(base_url: str | None = None, context: str | None = None,
                   environ: Mapping[str, str] | None = None) -> tuple[dict[str, Any], str]:
    """kwargs for `docker.DockerClient` and a description of where the engine came from."""
    env = os.environ if environ is None else environ
    if base_url:
        return {"base_url": base_url}, base_url
    if not context and env.get("DOCKER_HOST"):
        from docker.utils import kwargs_from_env

        from_env: dict[str, Any] = kwargs_from_env(environment=dict(env))
        return from_env, env["DOCKER_HOST"]
    from docker.context import ContextAPI

    name = context or env.get("DOCKER_CONTEXT")
    ctx = ContextAPI.get_context(name)
    if ctx is None:
        raise BackendError("docker", f"docker context {name!r} not found")
    host = ctx.Host
    if not host:
        return {}, "default socket"
    kw: dict[str, Any] = {"base_url": host}
    if ctx.TLSConfig is not None:
        kw["tls"] = ctx.TLSConfig
    return kw, f"{host} (context {ctx.Name})"


class DockerEngine:
    """A lazily-created docker client shared by a source and its actions.

    Created in a thread on first use; dropped after a connection failure so the
    next call reconnects (a restarted engine is picked up by itself).
    """

    def __init__(self, base_url: str | None = None, *, context: str | None = None,
                 timeout: float = 4.0, name: str = "docker", environ: Mapping[str, str] | None = None,
                 ssh_client: str = "system"):
        if ssh_client not in ("system", "paramiko"):
            raise ValueError("ssh_client must be 'system' (the ssh command) or 'paramiko'")
        self.ssh_client = ssh_client
        self.base_url = base_url or None
        self.context = context or None
        self.timeout = float(timeout)
        self.name = name
        self.environ = environ
        self.where = base_url or "docker"
        self._client: DockerClient | None = None
        self._lock = asyncio.Lock()

    def _make(self) -> DockerClient:
        import docker

        kw, where = resolve_engine(self.base_url, self.context, self.environ)
        self.where = where
        url = kw.get("base_url") or ""
        if str(url).startswith("ssh://") and self.ssh_client == "system":
            quiet_system_ssh()
        client = docker.DockerClient(
            **kw,
            version="auto",
            timeout=max(1, round(self.timeout)) if self.timeout >= 1 else self.timeout,
            use_ssh_client=str(url).startswith("ssh://") and self.ssh_client == "system",
        )
        return client

    def _ensure(self) -> DockerClient:
        if self._client is None:
            try:
                self._client = self._make()
            except BackendError:
                raise
            except Exception as exc:
                raise BackendError(self.name, describe_docker_error(exc, self.where, self.timeout)) from None
        return self._client

    def call_sync(self, fn: Callable[Concatenate[DockerClient, _P], _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """In a thread: run `fn(client, ...)`, translating errors; reconnect next time on failure."""
        client = self._ensure()
        try:
            return fn(client, *args, **kwargs)
        except Exception as exc:
            import docker.errors

            if isinstance(exc, docker.errors.NotFound):
                raise BackendError(self.name, f"not found: {getattr(exc, 'explanation', '') or exc}") from None
            if not isinstance(exc, docker.errors.APIError):
                self.close_sync()
            raise BackendError(self.name, describe_docker_error(exc, self.where, self.timeout)) from None

    async def call(self, fn: Callable[Concatenate[DockerClient, _P], _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        # partial: to_thread's ParamSpec cannot carry call_sync's own (nested) one
        return await to_thread(functools.partial(self.call_sync, fn, *args, **kwargs))

    def close_sync(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    async def close(self) -> None:
        await to_thread(self.close_sync)

    def cli_env(self) -> dict[str, str]:
        """Environment for the docker / compose CLI so it talks to the same engine."""
        env: dict[str, str] = {}
        if self.base_url:
            env["DOCKER_HOST"] = self.base_url
        elif self.context:
            env["DOCKER_CONTEXT"] = self.context
        return env


# --------------------------------------------------------------------------- the source


class DockerSource:
    """Readings of docker compose services (or containers by name), one list call per poll.

    With `services` empty and `project` given, every compose service of the project is
    discovered and read.
    """

    kind = "docker"

    def __init__(
        self,
        name: str = "docker",
        services: Sequence[DockerServiceSpec] = (),
        *,
        project: str | None = None,
        engine: DockerEngine | None = None,
        base_url: str | None = None,
        context: str | None = None,
        ssh_client: str = "system",
        interval: float = 5.0,
        timeout: float = 5.0,
        stats: bool = False,
        stats_interval: float = 30.0,
        inspect_max_age: float = 60.0,
        loop_window: float = 600.0,
        loop_restarts: int = 3,
    ) -> None:
        self.name = name
        self.specs = list(services)
        self.project = project
        self.interval = interval
        self.timeout = timeout
        self.engine = engine or DockerEngine(base_url, context=context, timeout=max(0.5, timeout * 0.8),
                                             name=name, ssh_client=ssh_client)
        self.stats_enabled = stats
        self.stats_interval = stats_interval
        self.inspect_max_age = inspect_max_age
        self.loop_window = loop_window
        self.loop_restarts = loop_restarts
        self.rule_settings = current_settings()  # its actions judge roles as its engine's rules do
        for s in self.specs:
            if not _NAME_RE.match(s.name):
                raise ValueError(f"service name {s.name!r} must match {_NAME_RE.pattern}")
            if s.role:
                register("roles")[s.name] = s.role
        # id -> (inspected at, change key, inspect data); id -> (uptime low bound, seen at) from the list
        self._inspect_cache: dict[str, tuple[float, tuple[str, str | None, Any], Mapping[str, Any]]] = {}
        self._uptime_seen: dict[str, tuple[float, float]] = {}
        self._restart_hist: dict[str, deque[tuple[float, int]]] = {}
        self._stats: dict[str, tuple[float, float | None, int | None]] = {}  # id -> (at, cpu%, mem)
        self._stats_task: asyncio.Future[None] | None = None
        self._stats_at = 0.0
        self.last_calls = 0  # engine calls made by the last poll (list + inspects)

    # ---------------------------------------------------------------- discovery

    def projects(self) -> set[str]:
        out = {s.project for s in self.specs if s.project}
        if self.project:
            out.add(self.project)
        return out

    def project_of(self, containers: Iterable[ContainerInfo] = ()) -> str | None:
        """The one compose project of this source when there is one: `project`, else the single
        project of the configured services, else the single project seen on `containers`."""
        if self.project:
            return self.project
        projects = self.projects()
        if projects:
            return next(iter(projects)) if len(projects) == 1 else None
        seen = {c.project for c in containers if c.project}
        return next(iter(seen)) if len(seen) == 1 else None

    def _filters(self) -> dict[str, Any] | None:
        projects = self.projects()
        if len(projects) == 1 and not any(s.container for s in self.specs):
            return {"label": f"{LABEL_PROJECT}={next(iter(projects))}"}
        return None

    def spec_for(self, service: str) -> DockerServiceSpec | None:
        for s in self.specs:
            if s.name == service:
                return s
        return None

    def _match(self, spec: DockerServiceSpec, c: ContainerInfo) -> bool:
        if spec.container:
            return c.name == spec.container or c.name.startswith(spec.container + "-") and c.service is None
        project = spec.project or self.project
        if project and c.project != project:
            return False
        return c.service == spec.compose_service

    def group(self, containers: Iterable[ContainerInfo]) -> dict[str, list[ContainerInfo]]:
        """Containers per service name (configured services, else discovered compose services)."""
        containers = list(containers)
        groups: dict[str, list[ContainerInfo]] = {}
        if self.specs:
            for spec in self.specs:
                groups[spec.name] = sorted((c for c in containers if self._match(spec, c)), key=_number)
            return groups
        for c in containers:
            if c.service is None or (self.project and c.project != self.project):
                continue
            groups.setdefault(c.service, []).append(c)
        for v in groups.values():
            v.sort(key=_number)
        return dict(sorted(groups.items()))

    def depends_on(self, service: str, containers: Sequence[ContainerInfo] = ()) -> tuple[str, ...]:
        spec = self.spec_for(service)
        if spec is not None and spec.depends_on:
            return tuple(spec.depends_on)
        for c in containers:
            label = c.labels.get(LABEL_DEPENDS)
            if label:
                deps = [part.split(":", 1)[0].strip() for part in label.split(",") if part.strip()]
                return tuple(d for d in deps if d)
        return ()

    # ---------------------------------------------------------------- reading the engine

    def _list_sync(self, client: DockerClient, filters: dict[str, Any] | None) -> list[Mapping[str, Any]]:
        items: list[Mapping[str, Any]] = client.api.containers(all=True, filters=filters)
        return items

    def _inspect_sync(self, client: DockerClient, cid: str) -> Mapping[str, Any]:
        data: Mapping[str, Any] = client.api.inspect_container(cid)
        return data

    def _read_sync(self, client: DockerClient, *, fresh: bool) -> list[ContainerInfo]:
        """(In a thread) list + the inspects the cache cannot answer."""
        import docker.errors

        calls = 1
        items = self._list_sync(client, self._filters())
        now_mono = time.monotonic()
        now = utcnow()
        out: list[ContainerInfo] = []
        seen_ids: set[str] = set()
        for item in items:
            c = _from_list(item)
            seen_ids.add(c.id)
            key = (c.state, c.health, (item.get("Created") or 0))
            cached = None if fresh else self._inspect_cache.get(c.id)
            bounds = uptime_bounds(c.status_text) if c.state == "running" else None
            seen = self._uptime_seen.get(c.id)
            data = None
            if cached is not None:
                at, ckey, cdata = cached
                if (ckey == key and now_mono - at < self.inspect_max_age
                        and not _restarted(c, cdata, now, bounds, seen, now_mono)):
                    data = cdata
            if data is None:
                try:
                    data = self._inspect_sync(client, c.id)
                except docker.errors.NotFound:  # removed between list and inspect
                    continue
                calls += 1
                self._inspect_cache[c.id] = (now_mono, key, data)
            if bounds is not None:
                self._uptime_seen[c.id] = (bounds[0], now_mono)
            else:
                self._uptime_seen.pop(c.id, None)
            out.append(_merge_inspect(c, data))
        for cid in list(self._inspect_cache):
            if cid not in seen_ids:
                self._inspect_cache.pop(cid, None)
                self._uptime_seen.pop(cid, None)
        self.last_calls = calls
        return out

    async def containers(self, *, fresh: bool = False) -> list[ContainerInfo]:
        """All containers of this source's services, with inspect data (`fresh`: inspect every
        container again instead of trusting the change-detecting cache)."""
        return await self.engine.call(self._read_sync, fresh=fresh)

    async def service_containers(self, service: str) -> list[ContainerInfo]:
        return self.group(await self.containers()).get(service, [])

    async def service_names(self) -> list[str]:
        if self.specs:
            return [s.name for s in self.specs]
        return list(self.group(await self.containers()))

    # ---------------------------------------------------------------- poll

    async def poll(self) -> list[ServiceReading]:
        containers = await self.containers()
        if self.stats_enabled:
            self._maybe_sample_stats(containers)
        now = utcnow()
        out = []
        for service, group in self.group(containers).items():
            out.append(self._reading(service, group, now))
        return out

    def _reading(self, service: str, group: list[ContainerInfo], now: datetime) -> ServiceReading:
        deps = self.depends_on(service, group)
        if not group:
            return ServiceReading(source=self.name, name=service, kind="docker", state="missing",
                                  status=Status.CRIT, depends_on=deps, replicas=0,
                                  detail="no container found", at=now)
        running = [c for c in group if c.state == "running"]
        if running:
            state = "running"
        elif any(c.state == "restarting" for c in group):
            state = "restarting"
        else:
            # the most recently stopped container speaks for the service
            state = max(group, key=lambda c: c.finished_at or datetime.min.replace(tzinfo=UTC)).state
        healths = [c.health for c in (running or group) if c.health]
        health = None
        for h in ("unhealthy", "starting", "healthy"):
            if h in healths:
                health = h
                break
        started = max((c.started_at for c in running if c.started_at), default=None)
        restarts = sum(c.restarts or 0 for c in group)
        last = max(group, key=lambda c: c.finished_at or datetime.min.replace(tzinfo=UTC))
        exit_code = None
        if state != "running":
            exit_code = last.exit_code
        elif last.finished_at is not None and last.exit_code not in (None, 0):
            exit_code = last.exit_code
        looping = self._track_restarts(service, restarts)
        details = []
        if len(group) > 1 or (running and len(running) != len(group)):
            details.append(f"{len(running)}/{len(group)} running")
        if looping:
            details.append(f"restart loop: {looping} restarts in {self.loop_window / 60:g}m")
        if state != "running" and last.finished_at is not None:
            details.append(f"stopped {_ago((now - last.finished_at).total_seconds())} ago")
        if last.oom_killed:
            details.append("OOM killed")
        if last.error:
            details.append(last.error[:120])
        status = _service_status(state, health, bool(looping), len(running), len(group))
        cpu = mem = None
        if self.stats_enabled:
            samples = [self._stats.get(c.id) for c in running]
            cpus = [s[1] for s in samples if s and s[1] is not None]
            mems = [s[2] for s in samples if s and s[2] is not None]
            cpu = sum(cpus) if cpus else None
            mem = sum(mems) if mems else None
        return ServiceReading(
            source=self.name,
            name=service,
            kind="docker",
            state=state,
            health=health,
            status=status,
            started_at=started,
            uptime_s=(now - started).total_seconds() if started and state == "running" else None,
            restarts=restarts,
            image=(running or group)[0].image,
            exit_code=exit_code,
            replicas=len(running),
            depends_on=deps,
            detail="; ".join(details),
            container_ids=tuple(c.short_id for c in group),
            cpu_percent=cpu,
            rss_bytes=mem,
            at=now,
        )

    def _track_restarts(self, service: str, restarts: int) -> int:
        """Restarts within the loop window, when they reach `loop_restarts` (else 0)."""
        now = time.monotonic()
        hist = self._restart_hist.setdefault(service, deque())
        if not hist or hist[-1][1] != restarts:
            hist.append((now, restarts))
        while len(hist) > 1 and now - hist[1][0] > self.loop_window:
            hist.popleft()
        if len(hist) < 2:
            return 0
        grown = hist[-1][1] - hist[0][1]
        return grown if grown >= self.loop_restarts else 0

    # ---------------------------------------------------------------- stats (optional, slow)

    def _maybe_sample_stats(self, containers: Sequence[ContainerInfo]) -> None:
        if self._stats_task is not None and not self._stats_task.done():
            return
        if time.monotonic() - self._stats_at < self.stats_interval:
            return
        self._stats_at = time.monotonic()
        ids = [c.id for c in containers if c.state == "running"]
        self._stats_task = asyncio.ensure_future(self._sample_stats(ids))

    async def _sample_stats(self, ids: Sequence[str]) -> None:
        sem = asyncio.Semaphore(4)

        async def one(cid: str) -> None:
            async with sem:
                try:
                    data = await self.engine.call(lambda cl: cl.api.stats(cid, stream=False))
                except BackendError:
                    return
                self._stats[cid] = (time.monotonic(), stats_cpu_percent(data), stats_memory(data))

        await asyncio.gather(*(one(i) for i in ids))
        for cid in list(self._stats):
            if cid not in ids:
                del self._stats[cid]

    async def sample_stats_now(self) -> None:
        containers = await self.containers(fresh=False)
        await self._sample_stats([c.id for c in containers if c.state == "running"])

    # ---------------------------------------------------------------- waiting

    async def wait_for(
        self,
        service: str,
        predicate: Callable[[list[ContainerInfo]], bool],
        timeout: float,  # noqa: ASYNC109
        every: float = 0.25,
    ) -> tuple[bool, list[ContainerInfo]]:
        deadline = time.monotonic() + timeout
        while True:
            group = await self.service_containers(service)
            if predicate(group):
                return True, group
            if time.monotonic() >= deadline:
                return False, group
            await asyncio.sleep(every)


def _number(c: ContainerInfo) -> tuple[int, str]:
    try:
        return (int(c.labels.get(LABEL_NUMBER, "0")), c.name)
    except ValueError:
        return (0, c.name)


def _restarted(c: ContainerInfo, cached: Mapping[str, Any], now: datetime,
               bounds: tuple[float, float] | None, seen: tuple[float, float] | None, now_mono: float) -> bool:
    """Has the container started again since it was inspected? Two clues, either is enough:
    its uptime text is now shorter than the previous one plus the time since (no clock
    involved), or shorter than the cached StartedAt implies (same-clock engines)."""
    if c.state != "running" or bounds is None:
        return False
    if seen is not None and bounds[1] + 0.05 < seen[0] + (now_mono - seen[1]):
        return True
    started = parse_time((cached.get("State") or {}).get("StartedAt"))
    if started is None:
        return False
    return (now - started).total_seconds() > bounds[1] + 2.0


def _service_status(state: str, health: str | None, looping: bool, running: int, total: int) -> Status:
    if state != "running":
        return Status.WARN if state in ("paused", "created") else Status.CRIT
    if health == "unhealthy" or looping:
        return Status.CRIT
    if health == "starting" or running < total:
        return Status.WARN
    return Status.OK


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def stats_cpu_percent(data: Mapping[str, Any]) -> float | None:
    try:
        cpu = data["cpu_stats"]
        pre = data["precpu_stats"]
        delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
        system = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
        ncpu = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or []) or 1
        if system <= 0 or delta < 0:
            return None
        return float(delta / system * ncpu * 100.0)
    except (KeyError, TypeError):
        return None


def stats_memory(data: Mapping[str, Any]) -> int | None:
    mem = data.get("memory_stats") or {}
    usage = mem.get("usage")
    if usage is None:
        return None
    st = mem.get("stats") or {}
    cache = st.get("inactive_file", st.get("total_inactive_file", st.get("cache", 0)))
    return int(usage - (cache or 0))


# --------------------------------------------------------------------------- ordering


def topological_order(services: Sequence[str], deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Dependencies first, otherwise in the given order. ValueError on a cycle or unknown dependency."""
    known = set(services)
    for s in services:
        for d in deps.get(s, ()):
            if d not in known:
                raise ValueError(f"{s} depends on {d}, which is not a configured service")
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(s: str, path: list[str]) -> None:
        st = state.get(s, 0)
        if st == 2:
            return
        if st == 1:
            cycle = path[path.index(s):] + [s]
            raise ValueError("dependency cycle: " + " -> ".join(cycle))
        state[s] = 1
        for d in deps.get(s, ()):
            visit(d, path + [s])
        state[s] = 2
        order.append(s)

    for s in services:
        visit(s, [])
    return order


_STARTUP_RANK = {"postgres": 0, "redis": 1, "other": 2, "api": 3, "events": 4, "worker": 5, "indexer": 6,
                 "listener": 7}
DRAIN = "@drain"
_SHUTDOWN_ROLES = ("api", "events", DRAIN, "worker", "indexer", "other", "listener", "redis", "postgres")


def shutdown_order(services: Sequence[str], ctx: RuleContext | None = None) -> list[list[str]]:
    """Seed 003 graceful shutdown: API, event processor, [drain the queue], workers, indexers,
    (other app services), Redis, Postgres. Returns steps; the drain step is `[DRAIN]`."""
    steps: list[list[str]] = []
    for r in _SHUTDOWN_ROLES:
        if r == DRAIN:
            steps.append([DRAIN])
            continue
        group = [s for s in services if role_of(s, ctx) == r]
        if group:
            steps.append(group)
    return steps


# --------------------------------------------------------------------------- actions


def _validate_service(action: str, service: Any) -> str:
    if not isinstance(service, str) or not _NAME_RE.match(service):
        raise ActionRefused(action, f"service must match {_NAME_RE.pattern}, got {str(service)[:60]!r}")
    return service


def _running(group: Sequence[ContainerInfo]) -> bool:
    return bool(group) and all(c.state == "running" for c in group)


def _ready(group: Sequence[ContainerInfo]) -> bool:
    """Running, and healthy where a healthcheck exists."""
    return _running(group) and all(c.health == "healthy" if c.has_healthcheck else True for c in group)


def _describe(group: Sequence[ContainerInfo]) -> str:
    if not group:
        return "no containers"
    return ", ".join(f"{c.name} {c.state}" + (f" ({c.health})" if c.health else "") for c in group)


class _DockerAction(Action):
    verb = ""

    def __init__(self, source: DockerSource, *, action_id: str | None = None,
                 stop_timeout: int = 10, wait_timeout: float = 60.0):
        self.source = source
        if action_id:
            self.id = action_id
        self.stop_timeout = int(stop_timeout)
        self.wait_timeout = float(wait_timeout)

    async def _known(self, service: str) -> list[ContainerInfo]:
        names = await self.source.service_names()
        if service not in names:
            raise ActionRefused(self.id, f"unknown service {service!r} (known: {', '.join(names) or 'none'})")
        return await self.source.service_containers(service)

    async def _apply(self, cid: str, verb: str) -> None:
        t = self.stop_timeout

        def go(client: DockerClient) -> None:
            if verb == "start":
                client.api.start(cid)
            elif verb == "stop":
                client.api.stop(cid, timeout=t)
            elif verb == "restart":
                client.api.restart(cid, timeout=t)
            else:  # pragma: no cover
                raise ValueError(verb)

        await self.source.engine.call(go)


class ServiceAction(_DockerAction):
    """Restart / stop / start one service's containers (plan lists each container and its state)."""

    def __init__(self, source: DockerSource, verb: str, **kw: Any):
        if verb not in ("restart", "stop", "start"):
            raise ValueError(f"verb must be restart, stop or start, not {verb!r}")
        self.verb = verb
        self.id = f"docker.{verb}"
        self.title = {"restart": "Restart service", "stop": "Stop service", "start": "Start service"}[verb]
        self.danger = Danger.SAFE if verb == "start" else Danger.CONFIRM
        self.description = f"docker {verb} of every container of a service"
        super().__init__(source, **kw)

    async def plan(self, *, service: Any = None, reason: str | None = None, **_: Any) -> ActionPlan:
        service = _validate_service(self.id, service)
        group = await self._known(service)
        changes = []
        for c in group:
            if self.verb == "start" and c.state == "running":
                desc = f"{c.name}: already running (no change)"
            elif self.verb == "stop" and c.state != "running" and c.state != "restarting":
                desc = f"{c.name}: already {c.state} (no change)"
            else:
                desc = f"{c.name}: {c.state} -> {'running' if self.verb != 'stop' else 'exited'} ({self.verb})"
            changes.append(Change(target=c.name, description=desc, before=c.brief(),
                                  after="exited" if self.verb == "stop" else "running"))
        guard = Guard(bool(group), f"{service} has containers" if group else f"no container found for {service}",
                      _describe(group))
        wait = "" if self.verb == "stop" else f", then wait up to {self.wait_timeout:g}s for running/healthy"
        return ActionPlan(
            action=self.id, title=f"{self.title} {service}", target=f"service:{service}",
            changes=tuple(changes), guard=guard, danger=self.danger,
            params={"service": service, "containers": [c.id for c in group]},
            reason=reason, total=len(group),
            preview=f"docker {self.verb} (timeout {self.stop_timeout}s) of {len(group)} container(s){wait}:\n"
                    + "\n".join(ch.description for ch in changes),
        )

    async def check_guard(self, plan: ActionPlan) -> Guard:
        group = await self.source.service_containers(plan.params["service"])
        if not group:
            return Guard(False, f"no container found for {plan.params['service']}")
        return Guard(True, f"{plan.params['service']} has containers", _describe(group))

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        service = plan.params["service"]
        planned = set(plan.params["containers"])
        before = await self.source.service_containers(service)
        group = [c for c in before if c.id in planned]
        total = len(group)
        done = 0
        details = []
        for c in group:
            if self.verb == "start" and c.state == "running":
                details.append(f"{c.name}: already running")
            elif self.verb == "stop" and c.state not in ("running", "restarting", "paused"):
                details.append(f"{c.name}: already {c.state}")
            else:
                progress(Progress(done, total, f"{self.verb} {c.name}"))
                await self._apply(c.id, self.verb)
                details.append(f"{c.name}: {self.verb} sent")
            done += 1
            progress(Progress(done, total, f"{c.name} done"))
        if self.verb == "stop":
            ok, after = await self.source.wait_for(
                service, lambda g: all(c.state != "running" for c in g if c.id in planned), self.wait_timeout)
        else:
            ok, after = await self.source.wait_for(
                service, lambda g: _ready([c for c in g if c.id in planned]), self.wait_timeout)
        state = _describe([c for c in after if c.id in planned])
        if not ok:
            return ActionResult(status="failed", summary=f"{service}: not {'stopped' if self.verb == 'stop' else 'ready'} "
                                f"after {self.wait_timeout:g}s ({state})", before=[c.brief() for c in before],
                                after=[c.brief() for c in after], details=tuple(details))
        return ActionResult(status="ok", summary=f"{service}: {self.verb} done ({state})",
                            before=[c.brief() for c in before], after=[c.brief() for c in after],
                            counts={"containers": total}, details=tuple(details))


class OrderedStartup(_DockerAction):
    """Seed 003 startup: dependencies first (topological order of depends_on), each service
    started and waited for (healthy where it has a healthcheck, else running) before the next."""

    id = "stack.startup"
    title = "Ordered startup"
    danger = Danger.CONFIRM
    description = "start the stack dependencies first, waiting for each to be healthy"

    async def _graph(self) -> tuple[list[str], dict[str, tuple[str, ...]], dict[str, list[ContainerInfo]]]:
        groups = self.source.group(await self.source.containers())
        names = list(groups)
        if not self.source.specs:  # discovered: infrastructure first among equals
            ctx = RuleContext(settings=getattr(self.source, "rule_settings", None))
            names.sort(key=lambda s: _STARTUP_RANK.get(role_of(s, ctx), 3))
        deps = {s: self.source.depends_on(s, groups[s]) for s in names}
        for s in names:  # dependencies read from compose labels may name services not configured here
            spec = self.source.spec_for(s)
            if spec is None or not spec.depends_on:
                deps[s] = tuple(d for d in deps[s] if d in groups)
        return names, deps, groups

    async def plan(self, *, services: Sequence[str] | None = None, reason: str | None = None, **_: Any) -> ActionPlan:
        names, deps, groups = await self._graph()
        wanted = names
        if services:
            for s in services:
                _validate_service(self.id, s)
                if s not in names:
                    raise ActionRefused(self.id, f"unknown service {s!r}")
            wanted = [s for s in names if s in set(services)]
        try:
            order = topological_order(names, deps)
        except ValueError as exc:
            raise ActionRefused(self.id, str(exc)) from None
        if services:  # the wanted services and everything they depend on
            need: set[str] = set()
            stack = list(wanted)
            while stack:
                s = stack.pop()
                if s not in need:
                    need.add(s)
                    stack.extend(deps.get(s, ()))
            order = [s for s in order if s in need]
        changes = []
        missing = [s for s in order if not groups.get(s)]
        for i, s in enumerate(order, 1):
            g = groups.get(s, [])
            if _ready(g):
                desc = f"{i}. {s}: already {'healthy' if any(c.has_healthcheck for c in g) else 'running'}"
            else:
                waits = "healthy" if any(c.has_healthcheck for c in g) else "running"
                desc = f"{i}. {s}: start, wait up to {self.wait_timeout:g}s for {waits}"
            if deps.get(s):
                desc += f" (after {', '.join(deps[s])})"
            changes.append(Change(target=s, description=desc, before=[c.brief() for c in g], after="running"))
        guard = Guard(not missing, "every service has a container" if not missing
                      else f"no container for {', '.join(missing)} (create it with docker compose up first)")
        project = self.source.project_of(c for g in groups.values() for c in g)
        return ActionPlan(
            action=self.id, title=self.title, target=f"stack:{project or self.source.name}",
            changes=tuple(changes), guard=guard, danger=self.danger,
            params={"order": order}, reason=reason, total=len(order),
            preview="\n".join(c.description for c in changes),
        )

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        order: list[str] = list(plan.params["order"])
        total = len(order)
        details: list[str] = []
        for i, s in enumerate(order):
            t0 = time.monotonic()
            group = await self.source.service_containers(s)
            if _ready(group):
                details.append(f"{s}: already ready")
                progress(Progress(i + 1, total, f"{s}: already ready"))
                continue
            progress(Progress(i, total, f"{s}: starting"))
            for c in group:
                if c.state != "running":
                    await self._apply(c.id, "start")
            ok, group = await self.source.wait_for(s, _ready, self.wait_timeout)
            took = time.monotonic() - t0
            if not ok:
                msg = f"{s}: not ready after {self.wait_timeout:g}s ({_describe(group)})"
                details.append(msg)
                progress(Progress(i, total, msg))
                skipped = order[i + 1:]
                return ActionResult(
                    status="partial" if i else "failed",
                    summary=msg + (f"; not started: {', '.join(skipped)}" if skipped else ""),
                    details=tuple(details), counts={"started": i, "total": total},
                )
            msg = f"{s}: {'healthy' if any(c.has_healthcheck for c in group) else 'running'} after {took:.1f}s"
            details.append(msg)
            progress(Progress(i + 1, total, msg))
        return ActionResult(status="ok", summary=f"{total} service(s) up in order: {' -> '.join(order)}",
                            details=tuple(details), counts={"started": total, "total": total})


QueueDepthFn = Callable[[], Awaitable[int]]


class GracefulShutdown(_DockerAction):
    """Seed 003 graceful shutdown: stop the API, then the event processor, wait for the
    queue to drain to 0 (with a timeout), then workers, indexers, Redis, Postgres.

    `queue_depth` is an async callable (e.g. Redis LLEN of `action_jobs`), `queue_name` the
    queue's name in the plan and progress (`queue_key` its Redis key, shown when it differs).
    When the queue does not drain in time the shutdown stops there (workers keep running so
    no job is lost) unless `on_drain_timeout="continue"`. The typed confirmation is the
    compose project (the source name when the services span several projects or none).
    """

    id = "stack.shutdown"
    title = "Graceful shutdown"
    danger = Danger.TYPED
    description = "stop the stack in the seed's order, draining the job queue"

    def __init__(self, source: DockerSource, *, queue_depth: QueueDepthFn | None = None,
                 queue_name: str = "action_jobs", queue_key: str | None = None, drain_timeout: float = 30.0,
                 on_drain_timeout: str = "abort", order: Sequence[Sequence[str]] | None = None, **kw: Any):
        super().__init__(source, **kw)
        self.queue_depth = queue_depth
        self.queue_name = queue_name
        self.queue_key = queue_key
        self.drain_timeout = float(drain_timeout)
        if on_drain_timeout not in ("abort", "continue"):
            raise ValueError("on_drain_timeout must be 'abort' or 'continue'")
        self.on_drain_timeout = on_drain_timeout
        self.order = [list(s) for s in order] if order else None

    async def plan(self, *, reason: str | None = None, **_: Any) -> ActionPlan:
        groups = self.source.group(await self.source.containers())
        names = list(groups)
        steps = self.order or shutdown_order(names, RuleContext(settings=getattr(self.source, "rule_settings", None)))
        for step in steps:
            for s in step:
                if s != DRAIN and s not in groups:
                    raise ActionRefused(self.id, f"unknown service {s!r} in the shutdown order")
        depth_now: int | str | None = None
        if self.queue_depth is not None:
            try:
                depth_now = int(await asyncio.wait_for(self.queue_depth(), timeout=5.0))
            except Exception as exc:  # shown in the plan; the guard turns red
                depth_now = f"unknown ({type(exc).__name__})"
        changes = []
        n = 0
        for step in steps:
            n += 1
            if step == [DRAIN]:
                if self.queue_depth is None:
                    changes.append(Change(target="queue", description=f"{n}. (no queue configured: no drain wait)"))
                else:
                    key = f" ({self.queue_key})" if self.queue_key and self.queue_key != self.queue_name else ""
                    changes.append(Change(
                        target=f"queue:{self.queue_name}",
                        description=f"{n}. wait up to {self.drain_timeout:g}s for {self.queue_name}{key} to drain "
                                    f"to 0 (now {depth_now})", before=depth_now, after=0))
                continue
            for s in step:
                g = groups.get(s, [])
                run = [c for c in g if c.state in ("running", "restarting", "paused")]
                desc = f"{n}. stop {s}: " + (_describe(g) if run else "already stopped (no change)")
                changes.append(Change(target=s, description=desc, before=[c.brief() for c in g], after="exited"))
        ok = not (self.queue_depth is not None and isinstance(depth_now, str))
        guard = Guard(ok, "queue depth readable" if ok else f"cannot read {self.queue_name} depth: {depth_now}")
        project = self.source.project_of(c for g in groups.values() for c in g)
        return ActionPlan(
            action=self.id, title=self.title, target=f"stack:{project or self.source.name}", changes=tuple(changes),
            guard=guard, danger=self.danger, confirm_text=project or self.source.name,
            params={"steps": steps}, reason=reason, total=len(steps),
            preview="\n".join(c.description for c in changes),
        )

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        steps: list[list[str]] = [list(s) for s in plan.params["steps"]]
        total = len(steps)
        details: list[str] = []
        for i, step in enumerate(steps):
            if step == [DRAIN]:
                if self.queue_depth is None:
                    continue
                progress(Progress(i, total, f"waiting for {self.queue_name} to drain"))
                ok, depth, took = await self._drain(progress, i, total)
                if not ok:
                    msg = f"{self.queue_name} not drained after {self.drain_timeout:g}s: {depth} job(s) left"
                    details.append(msg)
                    progress(Progress(i, total, msg))
                    if self.on_drain_timeout == "abort":
                        left = [s for st in steps[i + 1:] for s in st if s != DRAIN]
                        return ActionResult(status="partial", summary=msg + f"; still running: {', '.join(left)}",
                                            details=tuple(details), counts={"steps_done": i, "steps": total})
                    continue
                msg = f"{self.queue_name} drained (0) after {took:.1f}s"
                details.append(msg)
                progress(Progress(i + 1, total, msg))
                continue
            progress(Progress(i, total, f"stopping {', '.join(step)}"))
            await asyncio.gather(*(self._stop_service(s) for s in step))
            for s in step:
                ok, g = await self.source.wait_for(s, lambda g: all(c.state not in ("running", "restarting")
                                                                    for c in g), self.wait_timeout)
                if not ok:
                    msg = f"{s}: still running after {self.wait_timeout:g}s ({_describe(g)})"
                    details.append(msg)
                    return ActionResult(status="partial", summary=msg, details=tuple(details),
                                        counts={"steps_done": i, "steps": total})
            msg = f"stopped {', '.join(step)}"
            details.append(msg)
            progress(Progress(i + 1, total, msg))
        return ActionResult(status="ok", summary=f"stack stopped in {total} step(s)", details=tuple(details),
                            counts={"steps_done": total, "steps": total})

    async def _stop_service(self, service: str) -> None:
        for c in await self.source.service_containers(service):
            if c.state in ("running", "restarting", "paused"):
                await self._apply(c.id, "stop")

    async def _drain(self, progress: ProgressFn, i: int, total: int) -> tuple[bool, int | None, float]:
        assert self.queue_depth is not None
        t0 = time.monotonic()
        deadline = t0 + self.drain_timeout
        depth: int | None = None
        last_reported = None
        while True:
            try:
                depth = int(await asyncio.wait_for(self.queue_depth(), timeout=max(0.5, deadline - time.monotonic())))
            except (TimeoutError, Exception):
                depth = None
            if depth == 0:
                return True, 0, time.monotonic() - t0
            if depth != last_reported:
                progress(Progress(i, total, f"{self.queue_name}: {depth if depth is not None else '?'} job(s) left"))
                last_reported = depth
            if time.monotonic() >= deadline:
                return False, depth, time.monotonic() - t0
            await asyncio.sleep(0.2)


def compose_templates(env: Mapping[str, str] | None = None) -> list[tuple[str, CommandTemplate]]:
    """Candidate compose CLIs, v2 plugin first: (label, `version` probe template)."""
    return [
        ("docker compose", CommandTemplate("compose-v2-version", ["docker", "compose", "version"], timeout=10,
                                           env=env)),
        ("docker-compose", CommandTemplate("compose-v1-version", ["docker-compose", "version"], timeout=10,
                                           env=env)),
    ]


def compose_argv(command: str) -> tuple[str, ...]:
    """`[docker] compose_command` as an argv: "auto" -> (), else the command split like a shell
    would (no shell runs it), e.g. "docker compose", "docker-compose", "/opt/bin/compose"."""
    command = (command or "auto").strip()
    if command == "auto":
        return ()
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise ValueError(f"compose_command {command!r}: {exc}") from None
    if not argv:
        raise ValueError("compose_command is empty")
    return argv


async def detect_compose(env: Mapping[str, str] | None = None,
                         prefer: str | Sequence[str] = "auto") -> tuple[str, ...] | None:
    """The compose command installed here: ("docker", "compose") or ("docker-compose",), else None.

    `prefer` is `[docker] compose_command`: "auto" tries both (v2 plugin first); any other value
    is the only command tried (its `version` must succeed), e.g. "docker-compose" or a path
    (a string is split like a shell would; a sequence is the argv itself)."""
    wanted = compose_argv(prefer) if isinstance(prefer, str) else tuple(prefer)
    if wanted and " ".join(wanted) not in ("docker compose", "docker-compose"):
        esc = [a.replace("{", "{{").replace("}", "}}") for a in wanted]
        probe = CommandTemplate("compose-version", [*esc, "version"], timeout=10, env=env)
        if probe.available() is None:
            return None
        try:
            res = await probe.run()
        except BackendError:
            return None
        return wanted if res.ok else None
    for label, probe in compose_templates(env):
        if wanted and " ".join(wanted) != label:
            continue
        if probe.available() is None:
            continue
        try:
            res = await probe.run()
        except BackendError:
            continue
        if res.ok:
            return tuple(label.split())
    return None


class ScaleService(_DockerAction):
    """`docker compose up -d --scale svc=N svc` (or docker-compose v1), project dir and
    files taken from the containers' compose labels."""

    id = "docker.scale"
    title = "Scale service"
    danger = Danger.CONFIRM
    description = "set the number of containers of a compose service"

    def __init__(self, source: DockerSource, *, compose_command: str = "auto", max_replicas: int = 50,
                 timeout: float = 120.0, **kw: Any):
        super().__init__(source, **kw)
        try:
            self.compose_argv = compose_argv(compose_command)  # () = auto-detect
        except ValueError:  # unbalanced quotes: try it as written, the guard says if it runs
            self.compose_argv = tuple(compose_command.split())
        self.compose_command = " ".join(shlex.quote(a) for a in self.compose_argv) or "auto"
        self.max_replicas = max_replicas
        self.timeout = timeout

    async def _template(self, group: Sequence[ContainerInfo]) -> tuple[CommandTemplate | None, str]:
        env = self.source.engine.cli_env()
        compose = await detect_compose(env, self.compose_argv)
        if compose is None:
            if self.compose_argv:
                return None, (f"the configured compose command `{self.compose_command}` ([docker] compose_command) "
                              f"is not installed or `{self.compose_command} version` failed")
            return None, "neither `docker compose` (v2 plugin) nor `docker-compose` (v1) is installed"
        argv = [*(a.replace("{", "{{").replace("}", "}}") for a in compose), "-p", "{project}"]
        labels = group[0].labels if group else {}
        files = [f for f in (labels.get(LABEL_FILES) or "").split(",") if f]
        workdir = labels.get(LABEL_WORKDIR)
        params = {"project": "service", "scale": "scale", "service": "service"}
        values: dict[str, str] = {}
        if workdir:
            argv += ["--project-directory", "{workdir}"]
            params["workdir"] = "path"
            values["workdir"] = workdir
        for i, f in enumerate(files):
            argv += ["-f", f"{{file{i}}}"]
            params[f"file{i}"] = "path"
            values[f"file{i}"] = f
        argv += ["up", "-d", "--no-recreate", "--scale", "{scale}", "{service}"]
        return CommandTemplate("compose-scale", argv, timeout=self.timeout, env=env, params=params,
                               defaults=values), " ".join(compose)

    async def plan(self, *, service: str = "", replicas: Any = None, reason: str | None = None,
                   **_: Any) -> ActionPlan:
        # Both default to "missing" so a plan without them is refused (never a TypeError): the
        # console then opens its form with a field for each.
        if service is None or service == "":
            raise ActionRefused(self.id, "service is required")
        service = _validate_service(self.id, service)
        bounds = f"a whole number from 0 to {self.max_replicas}"
        if replicas is None or isinstance(replicas, bool) or str(replicas).strip() == "":
            raise ActionRefused(self.id, f"replicas is required ({bounds})")
        try:
            n = int(str(replicas).strip())
        except ValueError:
            raise ActionRefused(self.id, f"replicas must be {bounds}, got {str(replicas)[:20]!r}") from None
        if not 0 <= n <= self.max_replicas:
            raise ActionRefused(self.id, f"replicas must be between 0 and {self.max_replicas}, got {n}")
        group = await self._known(service)
        spec = self.source.spec_for(service)
        project = (spec.project if spec else None) or self.source.project or (group[0].project if group else None)
        compose_service = spec.compose_service if spec else service
        if not project:
            raise ActionRefused(self.id, f"{service} is not a compose service (no project)")
        template, label = await self._template(group)
        running = sum(1 for c in group if c.state == "running")
        values = {"project": project, "scale": f"{compose_service}={n}", "service": compose_service}
        if template is None:
            guard = Guard(False, label)
            cmd = self.compose_command if self.compose_argv else "docker compose"
            shown = f"{cmd} -p {project} up -d --no-recreate --scale {compose_service}={n} {compose_service}"
        else:
            argv = template.render(values)
            shown = template.display(argv)
            guard = Guard(True, f"{label} installed")
        return ActionPlan(
            action=self.id, title=f"Scale {service} to {n}", target=f"service:{service}",
            changes=(Change(target=service, description=f"{service}: {running} running -> {n}  ($ {shown})",
                            before={"running": running, "containers": [c.brief() for c in group]},
                            after={"running": n}),),
            guard=guard, danger=self.danger,
            params={"service": service, "compose_service": compose_service, "project": project, "replicas": n,
                    "argv": shown},
            reason=reason, total=1, preview=f"$ {shown}",
        )

    async def check_guard(self, plan: ActionPlan) -> Guard:
        template, label = await self._template(await self.source.service_containers(plan.params["service"]))
        return Guard(template is not None, label if template is None else f"{label} installed")

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        p = plan.params
        group = await self.source.service_containers(p["service"])
        template, _label = await self._template(group)
        if template is None:
            return ActionResult(status="refused", summary=_label)
        progress(Progress(0, 2, f"running {p['argv']}"))
        res = await template.run({"project": p["project"], "scale": f"{p['compose_service']}={p['replicas']}",
                                  "service": p["compose_service"]})
        if not res.ok:
            return ActionResult(status="failed", summary=res.summary(), details=res.tail(10))
        progress(Progress(1, 2, f"waiting for {p['replicas']} running"))
        ok, after = await self.source.wait_for(
            p["service"], lambda g: sum(1 for c in g if c.state == "running") == p["replicas"], self.wait_timeout)
        n = sum(1 for c in after if c.state == "running")
        progress(Progress(2, 2, f"{n} running"))
        return ActionResult(status="ok" if ok else "failed",
                            summary=f"{p['service']}: {n} running (wanted {p['replicas']})",
                            details=res.tail(10), after={"running": n})


def docker_actions(source: DockerSource, *, queue_depth: QueueDepthFn | None = None,
                   compose_command: str = "auto", **kw: Any) -> list[Action]:
    """Every docker action on one source, ready to register on the ActionEngine.

    `compose_command` ([docker] compose_command) goes to the scale action; `kw` (queue_name,
    queue_key, drain_timeout, ...) to the graceful shutdown."""
    return [
        ServiceAction(source, "restart"),
        ServiceAction(source, "stop"),
        ServiceAction(source, "start"),
        ScaleService(source, compose_command=compose_command),
        OrderedStartup(source),
        GracefulShutdown(source, queue_depth=queue_depth, **kw),
    ]


# --------------------------------------------------------------------------- rules

_PLAYBOOK_BY_ROLE = {"api": "api-down", "listener": "listener-failure", "events": "events-not-processed"}


def service_findings(r: ServiceReading, ctx: RuleContext) -> list[Finding]:
    """Findings for one service reading (docker or process): down / unhealthy / restart loop."""
    role = role_of(r.name, ctx)
    playbook = _PLAYBOOK_BY_ROLE.get(role, "service-down")
    sev = Severity.P0 if role == "api" else Severity.P1
    target = f"service:{r.name}"
    evidence = _evidence(r)
    looping = "restart loop" in (r.detail or "")
    out: list[Finding] = []
    if r.state in ("running",) and not looping and r.health != "unhealthy":
        if r.replicas is not None and r.detail and re.match(r"^(\d+)/(\d+) running", r.detail):
            m = re.match(r"^(\d+)/(\d+) running", r.detail)
            assert m
            if int(m.group(1)) < int(m.group(2)):
                out.append(Finding(key=f"service-partial:{r.name}", severity=Severity.P2, source=r.source,
                                   summary=f"{r.name}: only {m.group(1)} of {m.group(2)} containers running",
                                   evidence=evidence, playbook="service-down", target=target))
        return out
    if looping:
        summary = f"{r.name} is restart-looping ({r.restarts} restarts)"
        key = f"service-loop:{r.name}"
    elif r.state == "running" and r.health == "unhealthy":
        summary = f"{r.name} is unhealthy"
        key = f"service-unhealthy:{r.name}"
    elif r.state in ("paused", "created"):
        summary = f"{r.name} is {r.state}"
        key = f"service-down:{r.name}"
        sev = Severity.P1 if sev is Severity.P0 else Severity.P2
    else:
        code = f" (exit code {r.exit_code})" if r.exit_code is not None else ""
        summary = f"{r.name} is {'not running: no container/process found' if r.state == 'missing' else r.state}{code}"
        key = f"service-down:{r.name}"
    out.append(Finding(key=key, severity=sev, source=r.source, summary=summary, evidence=evidence,
                       playbook=playbook, target=target))
    return out


def _evidence(r: ServiceReading) -> tuple[str, ...]:
    ev = [f"state {r.state}" + (f", health {r.health}" if r.health else "")]
    if r.exit_code is not None:
        ev.append(f"last exit code {r.exit_code}")
    if r.restarts:
        ev.append(f"restarts {r.restarts}")
    if r.uptime_s is not None:
        ev.append(f"up {_ago(r.uptime_s)}")
    if r.image:
        ev.append(f"image {r.image}")
    if r.pid:
        ev.append(f"pid {r.pid}")
    if r.detail:
        ev.append(r.detail)
    if r.container_ids:
        ev.append("containers " + ", ".join(r.container_ids[:5]))
    return tuple(ev)


@rule(ServiceReading)
def docker_service_rule(r: ServiceReading, ctx: RuleContext) -> list[Finding]:
    if r.kind != "docker":
        return []
    return service_findings(r, ctx)


@snapshot_rule
def everything_down_rule(snap: Snapshot, ctx: RuleContext) -> list[Finding]:
    """Seed 003 P0 "system down": every service (at least two) is down."""
    services = [r for r in snap.of_type(ServiceReading) if r.kind in ("docker", "process", "command")]
    if len(services) < 2:
        return []
    down = [r for r in services if r.status is Status.CRIT]
    if len(down) != len(services):
        return []
    return [Finding(key="system-down", severity=Severity.P0, source="services",
                    summary=f"all {len(services)} services are down",
                    evidence=tuple(f"{r.name}: {r.state}" + (f" ({r.health})" if r.health else "") for r in down),
                    playbook="system-down", target="stack")]


__all__ = [
    "ContainerInfo",
    "DockerEngine",
    "DockerServiceSpec",
    "DockerSource",
    "GracefulShutdown",
    "OrderedStartup",
    "ScaleService",
    "ServiceAction",
    "compose_argv",
    "detect_compose",
    "docker_actions",
    "guess_role",
    "resolve_engine",
    "service_findings",
    "shutdown_order",
    "topological_order",
]
