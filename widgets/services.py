"""Services pane: state, health, uptime, restarts, image, latency; in dependency order.

Keys: `r` restart, `S` stop, `u` start (each posts `ActionRequested` for the service under
the cursor), `enter` detail. In read-only mode the mutating keys do not exist.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding

from backends.model import ServiceReading, Snapshot, Status

from .common import Health, Row, TablePane, fmt_coarse, fmt_int, fmt_ms

HEALTH_STATUS = {"healthy": Status.OK, "starting": Status.WARN, "unhealthy": Status.CRIT}
STATE_STATUS = {"running": Status.OK, "restarting": Status.WARN, "paused": Status.WARN,
                "created": Status.WARN, "exited": Status.CRIT, "dead": Status.CRIT,
                "missing": Status.CRIT}


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

    READING_TYPES = (ServiceReading,)
    SOURCE_KINDS = frozenset({"docker", "process", "services", "service", "compose", "pm2", "systemd",
                              "k8s", "kubernetes"})
    COLUMNS = (("status", "St"), ("name", "Service"), ("state", "State"), ("health", "Health"),
               ("uptime", "Up"), ("restarts", "Rst"), ("latency", "Latency"), ("image", "Image"))
    DETAIL_KIND = "service"
    NOUN = "services"
    MUTATING = frozenset({"restart", "stop", "start"})

    BINDINGS: ClassVar[list[Binding]] = [
        Binding("r", "restart", "Restart", id="restart"),
        Binding("S", "stop", "Stop", id="service_stop"),
        Binding("u", "start", "Start", id="service_start"),
    ]

    def build_summary(self, snapshot: Snapshot, readings: list, health: Health) -> Text:
        counts = {s: 0 for s in Status}
        for r in readings:
            counts[r.status] += 1
        text = Text()
        text.append(f"{len(readings)} services", style="bold")
        for st in (Status.CRIT, Status.WARN, Status.UNKNOWN):
            if counts[st]:
                text.append(f"  {st.symbol} {counts[st]} {st.word}", style=self.styles_.of(st))
        if not any(counts[s] for s in (Status.CRIT, Status.WARN, Status.UNKNOWN)):
            text.append(f"  {Status.OK.symbol} all {Status.OK.word}", style=self.styles_.of(Status.OK))
        return text

    def build_rows(self, snapshot: Snapshot, readings: list, health: Health) -> list[Row]:
        st = self.styles_
        rows = []
        seen: set[str] = set()
        for r in dependency_order(readings):
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
        return rows

    # ------------------------------------------------------------------ actions

    def _service(self) -> ServiceReading | None:
        row = self.cursor_row()
        return row.item if row is not None else None

    def _request(self, action_id: str) -> None:
        svc = self._service()
        if svc is None:
            self.app.bell()
            return
        self.request(action_id, {"service": svc.name}, f"service:{svc.name}")

    def action_restart(self) -> None:
        self._request("service.restart")

    def action_stop(self) -> None:
        self._request("service.stop")

    def action_start(self) -> None:
        self._request("service.start")

    def action_context(self, verb: str) -> dict:
        svc = self._service()
        return {"service": svc.name} if svc is not None else {}

    def selected_text(self) -> str:
        svc = self._service()
        if svc is None:
            return ""
        return f"{svc.name} ({svc.kind}): {svc.state}" + (f" {svc.health}" if svc.health else "") + (
            f" {svc.image}" if svc.image else "")


def _short_image(image: str | None) -> str:
    """'registry.example.com/team/api-gateway:1.4.2' -> 'api-gateway:1.4.2'; digests cut."""
    if not image:
        return "-"
    name = image.rsplit("/", 1)[-1]
    if "@sha256:" in name:
        base, _, digest = name.partition("@sha256:")
        name = f"{base}@{digest[:12]}"
    return name
