"""Services pane: state, health, uptime, restarts, image, latency; in dependency order.
Below the services, one row per infrastructure reading (Postgres, Redis, the host) and per
configured check (HTTP, JSON-RPC, SQL, command, metrics).

Keys: `r` restart, `S` stop, `u` start (each posts `ActionRequested` for the service under
the cursor), `k` terminate long Postgres queries (on a Postgres row), `enter` detail.
In read-only mode the mutating keys do not exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType

from backends.model import (
    CheckReading,
    Finding,
    HostReading,
    PostgresReading,
    RedisReading,
    ServiceReading,
    Severity,
    Snapshot,
    Status,
)

from .common import Health, Row, TablePane, fmt_coarse, fmt_duration, fmt_int, fmt_ms

INFRA = (PostgresReading, RedisReading, HostReading, CheckReading)

HEALTH_STATUS = {"healthy": Status.OK, "starting": Status.WARN, "unhealthy": Status.CRIT}
STATE_STATUS = {"running": Status.OK, "restarting": Status.WARN, "paused": Status.WARN,
                "created": Status.WARN, "exited": Status.CRIT, "dead": Status.CRIT,
                "missing": Status.CRIT, "down": Status.CRIT, "stopped": Status.CRIT,
                "starting": Status.WARN, "stopping": Status.WARN, "unknown": Status.UNKNOWN}


fmt_uptime = fmt_coarse


def dependency_order(services: list[ServiceReading]) -> list[ServiceReading]:
    """Dependencies before their dependents (stable: otherwise in reading order; cycles tolerated)."""
    by_name = {s.name: s for s in services}
    out: list[ServiceReading] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(s: ServiceReading) -> None:
        if state.get(s.name):
            return
        state[s.name] = 1
        for dep in s.depends_on:
            d = by_name.get(dep)
            if d is not None and not state.get(dep):
                visit(d)
        state[s.name] = 2
        out.append(s)

    for s in services:
        visit(s)
    return out


class ServicesPane(TablePane):
    """Services, dependencies first."""

    READING_TYPES = (ServiceReading, *INFRA)
    SOURCE_KINDS = frozenset({"docker", "process", "services", "service", "compose", "pm2", "systemd",
                              "k8s", "kubernetes", "postgres", "redis", "host", "http", "metrics",
                              "command", "checks"})
    COLUMNS = (("status", "St"), ("name", "Service"), ("state", "State"), ("health", "Health"),
               ("uptime", "Up"), ("restarts", "Rst"), ("latency", "Latency"), ("image", "Image"))
    DETAIL_KIND = "service"
    NOUN = "services"
    MUTATING = frozenset({"restart", "stop", "start", "terminate_queries"})

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "restart", "Restart", id="restart"),
        Binding("S", "stop", "Stop", id="service_stop"),
        Binding("u", "start", "Start", id="service_start"),
        Binding("k", "terminate_queries", "Terminate long queries", id="postgres_terminate"),
    ]

    def inputs_key(self, snapshot: Snapshot):
        """The rows' statuses are the rules' verdicts: a finding that comes or goes (or changes
        severity) on an infrastructure target repaints, with the same readings."""
        key = super().inputs_key(snapshot)
        judged = tuple(sorted((f.target, int(f.severity)) for f in snapshot.findings
                              if f.target and f.target.split(":", 1)[0] in INFRA_TARGET.values()))
        return None if key is None else (key, judged)

    def build_summary(self, snapshot: Snapshot, readings: list, health: Health) -> Text:
        counts = {s: 0 for s in Status}
        services = [r for r in readings if isinstance(r, ServiceReading)]
        degraded = {s.name for s in health.degraded}
        stale = 0
        for r in readings:
            if r.source in degraded:
                stale += 1  # a stale status is not counted as current
                continue
            counts[r.status if isinstance(r, ServiceReading) else infra_status(r, snapshot.findings)] += 1
        text = Text()
        text.append(f"{len(services)} services", style="bold")
        if len(readings) > len(services):
            text.append(f" + {len(readings) - len(services)} infra")
        if stale:
            text.append(f"  {Status.UNKNOWN.symbol} {stale} STALE", style=f"bold {self.styles_.stale}")
        for st in (Status.CRIT, Status.WARN, Status.UNKNOWN):
            if counts[st]:
                text.append(f"  {st.symbol} {counts[st]} {st.word}", style=self.styles_.of(st))
        if not stale and not any(counts[s] for s in (Status.CRIT, Status.WARN, Status.UNKNOWN)):
            text.append(f"  {Status.OK.symbol} all {Status.OK.word}", style=self.styles_.of(Status.OK))
        return text

    def build_rows(self, snapshot: Snapshot, readings: list, health: Health) -> list[Row]:
        st = self.styles_
        rows = []
        seen: set[str] = set()
        services = [r for r in readings if isinstance(r, ServiceReading)]
        for r in dependency_order(services):
            if r.name in seen:  # the same service from two sources: first wins
                continue
            seen.add(r.name)
            state_st = STATE_STATUS.get(r.state, Status.UNKNOWN)
            health_st = HEALTH_STATUS.get(r.health or "", Status.UNKNOWN)
            uptime = r.uptime_s
            if uptime is None and r.started_at is not None and r.state == "running":
                uptime = (snapshot.at - r.started_at).total_seconds()
            restarts = r.restarts
            cells = (
                st.status_cell(r.status),
                Text(r.name, style="bold"),
                Text(r.state + (f" ({r.exit_code})" if r.exit_code not in (None, 0) and r.state != "running"
                                else ""), style=st.of(state_st) if state_st is not Status.OK else ""),
                Text(r.health or "-", style=st.of(health_st) if r.health else "dim"),
                Text(fmt_uptime(uptime) if r.state == "running" else "-"),
                Text(fmt_int(restarts), style=st.warn if restarts else ""),
                Text(fmt_ms(r.latency_ms)),
                Text(_short_image(r.image), style="dim"),
            )
            rows.append(Row(r.name, cells, r, r.source,
                            search=f"{r.name} {r.state} {r.health or ''} {r.image or ''} {r.detail}"))
        for r in readings:
            if isinstance(r, INFRA):
                rows.append(self._infra_row(r, snapshot.findings))
        return rows

    def _infra_row(self, r: PostgresReading | RedisReading | HostReading | CheckReading,
                   findings: Iterable[Finding] = ()) -> Row:
        st = self.styles_
        status = infra_status(r, findings)
        if isinstance(r, CheckReading):
            value = "" if r.value is None else f"{r.value}{(' ' + r.unit) if r.unit and r.unit != 'ms' else ''}"
            detail = r.detail or value or (f"HTTP {r.http_status}" if r.http_status else "-")
            cells = (
                st.status_cell(status),
                Text(r.name, style="bold"),
                Text("ok" if r.ok else "failing", style=st.of(status) if not r.ok else ""),
                Text(detail, style=st.of(status) if status is not Status.OK else ""),
                Text("-"),
                Text("-"),
                Text(fmt_ms(r.latency_ms)),
                Text(f"check {r.kind}", style="dim"),
            )
            return Row(f"check:{r.source}:{r.name}", cells, r, r.source, search=f"{r.name} {r.kind} {detail}",
                       kind="check")
        if isinstance(r, PostgresReading):
            kind, state, version = "postgres", ("reachable" if r.reachable else "unreachable"), r.server_version
            detail = f"{r.total_connections}/{r.max_connections or '?'} conn"
            if r.long_queries:
                longest = max(q.duration_s for q in r.long_queries)
                detail += f", {len(r.long_queries)} long ({fmt_duration(longest)})"
            latency = r.latency_ms
        elif isinstance(r, RedisReading):
            kind, state, version = "redis", ("reachable" if r.reachable else "unreachable"), r.version
            detail = fmt_bytes(r.used_memory_bytes) + (f"/{fmt_bytes(r.max_memory_bytes)}" if r.max_memory_bytes else "")
            if r.connected_clients is not None:
                detail += f", {r.connected_clients} clients"
            latency = r.latency_ms
        else:
            kind, state, version, latency = "host", "up", "", None
            detail = f"cpu {r.cpu_percent:.0f}% mem {r.mem_percent:.0f}%"
            full = [f"{m} {p:.0f}%" for m, p in r.disks]
            if full:
                detail += " disk " + " ".join(full)
        cells = (
            st.status_cell(status),
            Text(r.source, style="bold"),
            Text(state, style=st.of(status) if status is Status.CRIT else ""),
            Text(detail, style=st.of(status) if status is not Status.OK else ""),
            Text("-"),
            Text("-"),
            Text(fmt_ms(latency)),
            Text(f"{kind} {version}".strip(), style="dim"),
        )
        return Row(f"{kind}:{r.source}", cells, r, r.source, search=f"{r.source} {kind} {state} {detail}", kind=kind)

    # ------------------------------------------------------------------ actions

    def _service(self) -> ServiceReading | None:
        row = self.cursor_row()
        item = row.item if row is not None else None
        return item if isinstance(item, ServiceReading) else None

    def _request(self, action_id: str) -> None:
        svc = self._service()
        if svc is None:
            self.notify("Put the cursor on a service first.", severity="warning", timeout=3)
            return
        self.request(action_id, {"service": svc.name}, f"service:{svc.name}")

    def action_restart(self) -> None:
        self._request("service.restart")

    def action_stop(self) -> None:
        self._request("service.stop")

    def action_start(self) -> None:
        self._request("service.start")

    def action_terminate_queries(self) -> None:
        row = self.cursor_row()
        pg = row.item if row is not None else None
        if not isinstance(pg, PostgresReading):
            self.notify("Put the cursor on a Postgres row first.", severity="warning", timeout=3)
            return
        self.request("postgres.terminate", {"all": True}, f"postgres:{pg.source}")

    def action_context(self, verb: str) -> dict:
        svc = self._service()
        return {"service": svc.name} if svc is not None else {}

    def selected_text(self) -> str:
        svc = self._service()
        if svc is None:
            return ""
        return f"{svc.name} ({svc.kind}): {svc.state}" + (f" {svc.health}" if svc.health else "") + (
            f" {svc.image}" if svc.image else "")


INFRA_TARGET = {PostgresReading: "postgres", RedisReading: "redis", HostReading: "host"}


def infra_status(r: PostgresReading | RedisReading | HostReading | CheckReading,
                 findings: Iterable[Finding] = ()) -> Status:
    """The status of an infrastructure row: what the rules decided, never a threshold of
    the pane's own. The worst finding on the reading's target (`postgres:<source>`,
    `redis:<source>`, `host:<source>`) makes the row CRIT (P0/P1) or WARN (P2/P3); none is
    OK. A check carries the status its evaluation gave; a reading that could not reach its
    server is CRIT even before a rule has spoken.
    """
    if isinstance(r, CheckReading):
        return r.status
    if isinstance(r, PostgresReading | RedisReading) and not r.reachable:
        return Status.CRIT
    target = f"{INFRA_TARGET[type(r)]}:{r.source}"
    worst = min((f.severity for f in findings if f.target == target), default=None)
    if worst is None:
        return Status.OK
    return Status.CRIT if worst <= Severity.P1 else Status.WARN


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    v = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if v < 1024 or unit == "TB":
            return f"{v:.0f}{unit}" if unit in ("B", "KB") or v >= 100 else f"{v:.1f}{unit}"
        v /= 1024
    return f"{v:.0f}TB"


def _short_image(image: str | None) -> str:
    """'registry.example.com/team/api-gateway:1.4.2' -> 'api-gateway:1.4.2'; digests cut."""
    if not image:
        return "-"
    name = image.rsplit("/", 1)[-1]
    if "@sha256:" in name:
        base, _, digest = name.partition("@sha256:")
        name = f"{base}@{digest[:12]}"
    return name
