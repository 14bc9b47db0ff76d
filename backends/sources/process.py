"""Plain processes and host resources (psutil, always in threads).

- `ProcessSource`: services that are processes, found by name and/or a regex on the
  command line (the seed's "node ... listener"); one process scan per poll for all of
  them. Reports pid, uptime, CPU (since the previous poll), RSS and state; a service
  with no matching process is `missing`.
- `HostSource`: CPU, memory, disks and load, with the seed's thresholds (CPU > 80 %
  for 5 min — the source tracks how long CPU has been above —, memory > 85 %,
  disk > 80 %).
- `ProcessRestart`: through a configured command (pm2, systemctl, a script), or
  signal-then-start: SIGTERM, wait, SIGKILL after the grace period, then the start
  command; the plan lists the pids it will signal.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
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
from backends.actions.command import CommandTemplate
from backends.engine.monitor import to_thread
from backends.engine.rules import RuleContext, register, rule, settings_table
from backends.errors import ActionRefused, BackendError
from backends.model import Finding, HostReading, ServiceReading, Severity, Status, utcnow
from backends.sources.docker import service_findings

_NAME_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """How to find one service's process: `process_name` (exact, e.g. "node") and/or
    `match` (regex searched in the command line joined by spaces)."""

    name: str
    match: str | None = None
    process_name: str | None = None
    depends_on: tuple[str, ...] = ()
    role: str | None = None
    min_count: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "depends_on", tuple(self.depends_on or ()))


@dataclass(frozen=True, slots=True)
class ProcInfo:
    pid: int
    name: str
    cmdline: str
    create_time: float
    status: str
    username: str = ""
    ppid: int = 0

    def brief(self) -> dict[str, Any]:
        return {"pid": self.pid, "cmdline": self.cmdline[:200], "started": _iso(self.create_time),
                "status": self.status}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


_ATTRS = ["pid", "name", "cmdline", "create_time", "status", "username", "ppid"]


def _compile(spec: ProcessSpec) -> re.Pattern[str] | None:
    if spec.match is None:
        return None
    try:
        return re.compile(spec.match)
    except re.error as exc:
        raise ValueError(f"service {spec.name!r}: bad regex {spec.match!r}: {exc}") from None


# (Linux) what a scan read of each process, kept while the process lives: pid -> [the
# inode of /proc/PID, comm, cmdline, the static details of a match, stable, first read]. A process's
# /proc directory gets a new inode number when the pid is reused, so (pid, inode) names
# one process. Its command line is trusted from the cache only once two reads at least
# PROC_STABLE_S apart agree ("stable"): a child seen between fork and exec still shows its
# parent's command line, and a process may retitle itself as it starts. Everything is read
# again at a full pass, every PROC_REFRESH_S. Scans run in worker threads: one at a time.
PROC_REFRESH_S = 30.0
PROC_STABLE_S = 1.0
_PROC_CACHE: dict[int, list[Any]] = {}
_PROC_LOCK = threading.Lock()
_proc_full_at = [-float("inf")]
_proc_clock: Callable[[], float] = time.monotonic


def _candidates_proc() -> list[tuple[int, str, str]] | None:
    """(Linux) (pid, comm, cmdline) from /proc: one directory read per scan; the command
    line of a process not seen before (or at a full pass) is read, no psutil objects."""
    try:
        it = os.scandir("/proc")
    except OSError:
        return None
    now = _proc_clock()
    full = now - _proc_full_at[0] >= PROC_REFRESH_S
    if full:
        _proc_full_at[0] = now
    cache = _PROC_CACHE
    seen: dict[int, list[Any]] = {}
    out = []
    with it:
        for e in it:
            name = e.name
            if not name.isdigit():
                continue
            pid = int(name)
            try:
                ino = e.inode()
            except OSError:
                continue
            entry = cache.get(pid)
            if entry is None or entry[0] != ino or not entry[4] or full:
                try:
                    with open(f"/proc/{name}/cmdline", "rb") as f:
                        raw = f.read()
                except OSError:
                    continue
                cmd = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
                if entry is not None and entry[0] == ino and entry[2] == cmd:
                    # the same command line again: stable once PROC_STABLE_S after the first read
                    if not entry[4] and now - entry[5] >= PROC_STABLE_S:
                        entry = [ino, "", cmd, None, True, entry[5]]
                else:
                    entry = [ino, "", cmd, None, False, now]
            seen[pid] = entry
            out.append((pid, entry[1], entry[2]))
    cache.clear()
    cache.update(seen)
    return out


def _comm(pid: int) -> str:
    entry = _PROC_CACHE.get(pid)
    if entry is not None and entry[1] and entry[4]:
        return str(entry[1])
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            comm = f.read().strip().decode("utf-8", "replace")
    except OSError:
        return ""
    if entry is not None:
        entry[1] = comm
    return comm


_STATIC = ["name", "cmdline", "create_time", "username", "ppid"]


def _details(pid: int) -> dict[str, Any]:
    """psutil's details of a matched process; what cannot change (name, command line, start,
    user, parent) read once per process (Linux), its status every time."""
    import psutil

    entry = _PROC_CACHE.get(pid)
    proc = psutil.Process(pid)
    if entry is None or not entry[4]:
        fresh: dict[str, Any] = proc.as_dict(_ATTRS)
        return fresh
    if entry[3] is None:
        info: dict[str, Any] = proc.as_dict(_ATTRS)
        entry[3] = {k: info.get(k) for k in _STATIC}
        return info
    return {**entry[3], "pid": pid, "status": proc.status()}


def scan(specs: Sequence[ProcessSpec], *, exclude: Sequence[int] = ()) -> dict[str, list[ProcInfo]]:
    """(Blocking) one pass over the process table; matches per spec, oldest first.

    On Linux the pass reads the /proc directory, and /proc/PID/cmdline (and /proc/PID/comm
    where a process name is asked for) of the processes it has not seen before; psutil is
    asked for details of the matches alone (their status each time, the rest once).
    """

    with _PROC_LOCK:
        return _scan(specs, exclude)


def _scan(specs: Sequence[ProcessSpec], exclude: Sequence[int]) -> dict[str, list[ProcInfo]]:
    import psutil

    pats = {s.name: _compile(s) for s in specs}
    out: dict[str, list[ProcInfo]] = {s.name: [] for s in specs}
    skip = {os.getpid(), *exclude}
    fast = _candidates_proc()
    if fast is None:
        fast = []
        for p in psutil.process_iter(["pid", "name", "cmdline"]):
            fast.append((p.info["pid"], p.info.get("name") or "", " ".join(p.info.get("cmdline") or [])))
    for pid, comm, cmd in fast:
        if pid in skip:
            continue
        cmd = cmd.replace("\n", " ").replace("\r", " ")
        if not cmd and not comm:  # a kernel thread (no command line): matched by its name, read once
            comm = _comm(pid)
        hits = []
        for s in specs:
            if s.process_name:
                if not comm:
                    comm = _comm(pid)
                name = comm
                argv0 = os.path.basename(cmd.split(" ", 1)[0]) if cmd else ""
                if s.process_name not in (name, argv0) and not (len(name) >= 15 and s.process_name.startswith(name)):
                    continue
            pat = pats[s.name]
            if pat is not None and not pat.search(cmd or comm):
                continue
            if pat is None and not s.process_name:
                continue
            hits.append(s.name)
        if not hits:
            continue
        try:
            info = _details(pid)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if not cmd:
            cmd = " ".join(info.get("cmdline") or []) or (info.get("name") or "")
        for h in hits:
            out[h].append(ProcInfo(pid=pid, name=info.get("name") or comm, cmdline=cmd,
                                   create_time=info.get("create_time") or 0.0,
                                   status=info.get("status") or "?", username=info.get("username") or "",
                                   ppid=info.get("ppid") or 0))
    for v in out.values():
        v.sort(key=lambda p: (p.create_time, p.pid))
    return out


def find_processes(*, name: str | None = None, match: str | None = None) -> list[ProcInfo]:
    """(Blocking) processes by name and/or command-line regex."""
    spec = ProcessSpec(name="_", match=match, process_name=name)
    return scan([spec])["_"]


async def find_processes_async(*, name: str | None = None, match: str | None = None) -> list[ProcInfo]:
    return await to_thread(find_processes, name=name, match=match)


def _state(status: str) -> tuple[str, Status]:
    if status in ("running", "sleeping", "disk-sleep", "idle", "waking", "waiting", "parked"):
        return "running", Status.OK
    if status in ("stopped", "tracing-stop"):
        return "paused", Status.WARN
    if status in ("zombie", "dead"):
        return "dead", Status.CRIT
    return status or "unknown", Status.UNKNOWN


class ProcessSource:
    """Readings (`ServiceReading(kind="process")`) of services that are plain processes."""

    kind = "process"

    def __init__(self, name: str = "processes", specs: Sequence[ProcessSpec] = (), *,
                 interval: float = 5.0, timeout: float = 5.0) -> None:
        self.name = name
        self.specs = list(specs)
        self.interval = interval
        self.timeout = timeout
        for s in self.specs:
            if not _NAME_RE.match(s.name):
                raise ValueError(f"service name {s.name!r} must match {_NAME_RE.pattern}")
            if not (s.match or s.process_name):
                raise ValueError(f"service {s.name!r}: give match (regex) and/or process_name")
            _compile(s)
            if s.role:
                register("roles")[s.name] = s.role
        self._procs: dict[int, Any] = {}  # pid -> psutil.Process (keeps CPU counters between polls)
        self._cpu_at: dict[int, tuple[float, float]] = {}  # pid -> (when sampled, CPU % then)

    # Polls closer together than this reuse the last CPU figure: over a few ms the kernel's
    # 10 ms tick makes psutil's ratio meaningless (a busy process read 206 % on 2 cores).
    CPU_MIN_INTERVAL = 0.5

    def _cpu_of(self, proc: Any) -> float:
        import psutil

        now = time.monotonic()
        last = self._cpu_at.get(proc.pid)
        if last is not None and now - last[0] < self.CPU_MIN_INTERVAL:
            return last[1]
        cpu = float(min(proc.cpu_percent(None), 100.0 * (psutil.cpu_count() or 1)))
        self._cpu_at[proc.pid] = (now, cpu)
        return cpu

    def spec_for(self, service: str) -> ProcessSpec | None:
        return next((s for s in self.specs if s.name == service), None)

    async def poll(self) -> list[ServiceReading]:
        return await to_thread(self._poll_sync)

    def _poll_sync(self) -> list[ServiceReading]:
        import psutil

        found = scan(self.specs)
        now = utcnow()
        out = []
        alive: set[int] = set()
        for spec in self.specs:
            procs = found[spec.name]
            if not procs:
                out.append(ServiceReading(source=self.name, name=spec.name, kind="process", state="missing",
                                          status=Status.CRIT, replicas=0, depends_on=spec.depends_on,
                                          detail=f"no process matches {self._what(spec)}", at=now))
                continue
            cpu_total: float | None = 0.0
            rss_total = 0
            first_sample = False
            for p in procs:
                alive.add(p.pid)
                proc = self._procs.get(p.pid)
                try:
                    if proc is None or proc.create_time() != p.create_time:
                        proc = psutil.Process(p.pid)
                        self._procs[p.pid] = proc
                        proc.cpu_percent(None)
                        self._cpu_at[p.pid] = (time.monotonic(), 0.0)
                        first_sample = True
                        cpu = 0.0
                    else:
                        cpu = self._cpu_of(proc)
                    rss_total += proc.memory_info().rss
                    cpu_total = (cpu_total or 0.0) + cpu
                except (psutil.NoSuchProcess, psutil.ZombieProcess):
                    continue
                except psutil.AccessDenied:
                    cpu_total = None
            main = procs[0]
            state, status = _state(main.status)
            if len(procs) < spec.min_count and status is Status.OK:
                status = Status.WARN
            uptime = max(0.0, time.time() - main.create_time)
            detail = main.cmdline[:160]
            if len(procs) > 1:
                detail = f"{len(procs)} processes; " + detail
            out.append(ServiceReading(
                source=self.name, name=spec.name, kind="process", state=state, status=status,
                started_at=datetime.fromtimestamp(main.create_time, UTC), uptime_s=uptime,
                pid=main.pid, cpu_percent=None if first_sample else cpu_total, rss_bytes=rss_total or None,
                replicas=len(procs), depends_on=spec.depends_on, detail=detail, at=now,
            ))
        for pid in list(self._procs):
            if pid not in alive:
                del self._procs[pid]
                self._cpu_at.pop(pid, None)
        return out

    @staticmethod
    def _what(spec: ProcessSpec) -> str:
        parts = []
        if spec.process_name:
            parts.append(f"name {spec.process_name!r}")
        if spec.match:
            parts.append(f"/{spec.match}/")
        return " and ".join(parts)


# --------------------------------------------------------------------------- host


def _dur(value: Any, default: float) -> float:
    if value is None:
        return default
    if hasattr(value, "total_seconds"):
        return float(value.total_seconds())
    return float(value)


@dataclass(frozen=True, slots=True)
class HostThresholds:
    cpu_warn: float = 80.0
    cpu_for: float = 300.0
    memory_warn: float = 85.0
    disk_warn: float = 80.0
    disk_crit: float = 95.0

    @classmethod
    def from_config(cls, cfg: Any) -> HostThresholds:
        host = getattr(cfg, "host", None) if cfg is not None else None
        if host is None:
            return cls()
        def get(k: str, d: Any) -> Any:
            return host.get(k, d) if isinstance(host, Mapping) else getattr(host, k, d)

        return cls(
            cpu_warn=float(get("cpu_warn", 80.0)),
            cpu_for=_dur(get("cpu_for", 300.0), 300.0),
            memory_warn=float(get("memory_warn", 85.0)),
            disk_warn=float(get("disk_warn", 80.0)),
        )




class HostSource:
    """CPU (with how long it has been above `cpu_warn`), memory, disks and load of this box."""

    kind = "host"

    def __init__(self, name: str = "host", *, disks: Sequence[str] = ("/",),
                 thresholds: HostThresholds | None = None, interval: float = 5.0, timeout: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.disks = list(disks)
        self.thresholds = thresholds or HostThresholds()
        self.interval = interval
        self.timeout = timeout
        self._clock = clock
        self._last_times = None
        self._high_since: float | None = None
        register("host")[name] = self.thresholds  # source name -> thresholds it was built with

    async def poll(self) -> list[HostReading]:
        return [await to_thread(self._poll_sync)]

    def cpu_percent(self) -> float:
        """(Blocking) busy % since the previous call (the first call samples over 0.2 s)."""
        import psutil

        if self._last_times is None:
            self._last_times = psutil.cpu_times()
            time.sleep(0.2)
        cur = psutil.cpu_times()
        pct = _busy_percent(self._last_times, cur)
        self._last_times = cur
        return pct

    def _poll_sync(self) -> HostReading:
        import psutil

        cpu = self.cpu_percent()
        return self.reading(cpu, psutil.virtual_memory().percent, self._disk_usage(), _load1())

    def reading(self, cpu: float, mem: float, disks: tuple[tuple[str, float], ...],
                load1: float | None = None) -> HostReading:
        """Build a reading from values (tracks how long CPU has stayed above the threshold)."""
        now = self._clock()
        if cpu > self.thresholds.cpu_warn:
            if self._high_since is None:
                self._high_since = now
            high_for = now - self._high_since
        else:
            self._high_since = None
            high_for = 0.0
        t = self.thresholds
        return HostReading(source=self.name, cpu_percent=round(cpu, 1), cpu_high_for_s=high_for,
                           mem_percent=round(mem, 1), disks=disks, load1=load1, cpu_warn=t.cpu_warn,
                           memory_warn=t.memory_warn, disk_warn=t.disk_warn, disk_crit=t.disk_crit)

    def _disk_usage(self) -> tuple[tuple[str, float], ...]:
        import psutil

        out = []
        for d in self.disks:
            try:
                out.append((d, float(psutil.disk_usage(d).percent)))
            except OSError:
                out.append((d, -1.0))
        return tuple(out)


def _busy_percent(a: Any, b: Any) -> float:
    """Busy CPU % between two psutil.cpu_times() samples (psutil is untyped: its scputimes are Any)."""
    ta = sum(a)
    tb = sum(b)
    idle_a = a.idle + getattr(a, "iowait", 0.0)
    idle_b = b.idle + getattr(b, "iowait", 0.0)
    total: float = tb - ta
    if total <= 0:
        return 0.0
    busy: float = total - (idle_b - idle_a)
    return max(0.0, min(100.0, busy / total * 100.0))


def _load1() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# --------------------------------------------------------------------------- restart


class ProcessRestart(Action):
    """Restart a process service through a command (pm2, systemctl, a script; `{service}`
    is filled in) or by signal-then-start (SIGTERM, wait `grace`, SIGKILL, then `start`)."""

    id = "process.restart"
    title = "Restart process"
    danger = Danger.CONFIRM
    description = "restart a process service"

    def __init__(self, source: ProcessSource, *, commands: Mapping[str, CommandTemplate] | None = None,
                 start: Mapping[str, CommandTemplate] | None = None, grace: float = 10.0,
                 wait_timeout: float = 30.0, action_id: str | None = None,
                 start_log: Mapping[str, str] | None = None) -> None:
        self.source = source
        self.commands = dict(commands or {})  # service -> restart command
        self.start = dict(start or {})  # service -> start command (signal-then-start)
        self.grace = float(grace)
        self.wait_timeout = float(wait_timeout)
        self.start_log = dict(start_log or {})
        if action_id:
            self.id = action_id

    async def plan(self, *, service: str = "", reason: str | None = None, **_: Any) -> ActionPlan:
        if not service:
            known = ", ".join(s.name for s in self.source.specs) or "none"
            raise ActionRefused(self.id, f"which service? ({known})", ask=True)
        if not isinstance(service, str) or not _NAME_RE.match(service):
            raise ActionRefused(self.id, f"service must match {_NAME_RE.pattern}")
        spec = self.source.spec_for(service)
        if spec is None:
            known = ", ".join(s.name for s in self.source.specs) or "none"
            raise ActionRefused(self.id, f"unknown process service {service!r} (known: {known})")
        procs = (await to_thread(scan, [spec]))[spec.name]
        target = f"service:{service}"
        if service in self.commands:
            tpl = self.commands[service]
            argv = tpl.render({"service": service} if "service" in tpl.placeholders else {})
            shown = tpl.display(argv)
            path = tpl.available()
            guard = Guard(path is not None, f"{tpl.program} found" if path else f"{tpl.program} is not installed")
            changes = tuple(Change(target=f"pid {p.pid}", description=f"pid {p.pid} ({p.cmdline[:80]}) restarted by "
                                   f"the command", before=p.brief()) for p in procs)
            changes += (Change(target=service, description=f"run: {shown}", after=shown),)
            return ActionPlan(action=self.id, title=f"Restart {service}", target=target, changes=changes,
                              guard=guard, danger=self.danger,
                              params={"service": service, "mode": "command", "argv": shown,
                                      "pids": [[p.pid, p.create_time] for p in procs]},
                              reason=reason, total=1, preview=f"$ {shown}\n(current pids: "
                              f"{', '.join(str(p.pid) for p in procs) or 'none'})")
        start = self.start.get(service)
        if start is None:
            raise ActionRefused(self.id, f"{service}: no restart command or start command configured")
        argv = start.render({"service": service} if "service" in start.placeholders else {})
        shown = start.display(argv)
        changes = tuple(Change(target=f"pid {p.pid}", description=f"SIGTERM pid {p.pid} ({p.cmdline[:80]}), "
                               f"SIGKILL after {self.grace:g}s", before=p.brief(), after="exited") for p in procs)
        changes += (Change(target=service, description=f"start: {shown}", after="running"),)
        path = start.available()
        guard = Guard(path is not None, f"{start.program} found" if path else f"{start.program} is not installed")
        return ActionPlan(action=self.id, title=f"Restart {service}", target=target, changes=changes, guard=guard,
                          danger=self.danger,
                          params={"service": service, "mode": "signal", "argv": shown,
                                  "pids": [[p.pid, p.create_time] for p in procs]},
                          reason=reason, total=len(procs) + 1,
                          preview="\n".join(c.description for c in changes))

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        service = plan.params["service"]
        spec = self.source.spec_for(service)
        assert spec is not None
        old = {int(pid): float(ct) for pid, ct in plan.params["pids"]}
        if plan.params["mode"] == "command":
            tpl = self.commands[service]
            progress(Progress(0, 2, f"running {plan.params['argv']}"))
            try:
                res = await tpl.run({"service": service} if "service" in tpl.placeholders else {})
            except BackendError as exc:
                return ActionResult(status="failed", summary=exc.reason)
            if not res.ok:
                return ActionResult(status="failed", summary=res.summary(), details=res.tail(10))
            progress(Progress(1, 2, res.summary()))
        else:
            total = len(old) + 1
            progress(Progress(0, total, f"SIGTERM {', '.join(map(str, old)) or '(no process)'}"))
            killed = await to_thread(_terminate, old, self.grace)
            progress(Progress(len(old), total, f"stopped: {killed}"))
            procs_now = (await to_thread(scan, [spec]))[spec.name]
            if not procs_now:
                start = self.start[service]
                pid = await start.spawn({"service": service} if "service" in start.placeholders else {},
                                        log_path=self.start_log.get(service))
                progress(Progress(total - 1, total, f"started pid {pid}"))
        ok, procs = await self._wait_new(spec, old)
        after = [p.brief() for p in procs]
        if not ok:
            return ActionResult(status="failed", summary=f"{service}: no new process after {self.wait_timeout:g}s",
                                after=after)
        return ActionResult(status="ok", summary=f"{service} restarted: pid "
                            f"{', '.join(str(p.pid) for p in procs)}", after=after,
                            before=[{"pid": p} for p in old])

    async def _wait_new(self, spec: ProcessSpec, old: Mapping[int, float]) -> tuple[bool, list[ProcInfo]]:
        deadline = time.monotonic() + self.wait_timeout
        while True:
            procs = (await to_thread(scan, [spec]))[spec.name]
            fresh = [p for p in procs if old.get(p.pid) != p.create_time]
            if fresh:
                return True, fresh
            if time.monotonic() >= deadline:
                return False, procs
            await asyncio.sleep(0.1)


def _terminate(pids: Mapping[int, float], grace: float) -> str:
    """(Blocking) SIGTERM the planned processes that are still the same ones, SIGKILL after grace."""
    import psutil

    procs = []
    for pid, ct in pids.items():
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - ct) < 0.01:  # same process, not a reused pid
                procs.append(p)
        except psutil.NoSuchProcess:
            continue
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _gone, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    if alive:
        psutil.wait_procs(alive, timeout=5)
    if not procs:
        return "no process was running"
    return f"{len(procs) - len(alive)} exited on SIGTERM" + (f", {len(alive)} killed (SIGKILL)" if alive else "")


# --------------------------------------------------------------------------- rules


@rule(ServiceReading)
def process_service_rule(r: ServiceReading, ctx: RuleContext) -> list[Finding]:
    if r.kind != "process":
        return []
    return service_findings(r, ctx)


@rule(HostReading)
def host_rule(r: HostReading, ctx: RuleContext) -> list[Finding]:
    t = settings_table("host", ctx).get(r.source) or HostThresholds.from_config(getattr(ctx, "config", None))
    out = []
    if r.cpu_percent > t.cpu_warn and r.cpu_high_for_s >= t.cpu_for:
        out.append(Finding(
            key=f"host-cpu:{r.source}", severity=Severity.P2, source=r.source,
            summary=f"CPU {r.cpu_percent:.0f}% for {r.cpu_high_for_s / 60:.0f} min (threshold {t.cpu_warn:g}% "
                    f"for {t.cpu_for / 60:g} min)",
            evidence=(f"load {r.load1:.2f}" if r.load1 is not None else "load unknown",
                      "seed 003: scale up or optimize"),
            target=f"host:{r.source}"))
    if r.mem_percent > t.memory_warn:
        out.append(Finding(
            key=f"host-mem:{r.source}", severity=Severity.P1 if r.mem_percent > 95 else Severity.P2,
            source=r.source, summary=f"memory {r.mem_percent:.0f}% used (threshold {t.memory_warn:g}%)",
            evidence=("seed 003: investigate memory leaks",), target=f"host:{r.source}"))
    for mount, pct in r.disks:
        if pct > t.disk_warn:
            out.append(Finding(
                key=f"host-disk:{r.source}:{mount}",
                severity=Severity.P1 if pct > t.disk_crit else Severity.P2, source=r.source,
                summary=f"disk {mount} {pct:.0f}% full (threshold {t.disk_warn:g}%)",
                evidence=("seed 003: clean up logs or expand storage",), target=f"host:{r.source}"))
        elif pct < 0:
            out.append(Finding(key=f"host-disk:{r.source}:{mount}", severity=Severity.P3, source=r.source,
                               summary=f"disk {mount} cannot be read", target=f"host:{r.source}"))
    return out


__all__ = [
    "HostSource",
    "HostThresholds",
    "ProcInfo",
    "ProcessRestart",
    "ProcessSource",
    "ProcessSpec",
    "find_processes",
    "find_processes_async",
    "scan",
]
