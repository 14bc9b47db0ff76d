"""Alertmanager as a sink: warroom's escalations (and, when asked, its findings) pushed as
alerts with Alertmanager's documented v2 API (`POST /api/v2/alerts`), so the routing the
fleet already has (receivers, grouping, inhibition, silences) pages people.

    [escalation.alertmanager]
    url = "http://127.0.0.1:9093"
    labels = { team = "chain", env = "prod" }   # added to every alert (routing keys)
    escalations = true                          # default
    findings = "P1"                             # also push findings of P1 or worse ("" = none)
    interval = "60s"                            # re-sent while firing

The alerts are derived from warroom's state on every push, not kept in a queue:

- one `alertname="WarroomEscalation"` alert per open incident and escalation level it was
  sent to (labels `incident`, `level`, `severity` critical|error|warning|info, `warroom`),
  annotations `summary` (the escalation title), `description` (the brief), `contacts`,
  `acknowledged` once acknowledged; `startsAt` = when the escalation started.
- one `alertname="WarroomFinding"` alert per current finding at or above `findings`
  (labels `finding`, `source`, `severity`), except findings read from an Alertmanager
  (never echoed back into the fleet).

A firing alert is re-sent every `interval` with `endsAt` = now + 4 x interval (what
Prometheus does: if warroom stops, the alerts resolve by themselves after that); an alert
that leaves the set (incident resolved, finding cleared) is sent once with `endsAt` = now,
Alertmanager's "resolved". A failed push is retried after 5 s; the error is kept
in `last_error`. A read-only console pushes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from backends.errors import describe_exception
from backends.model import Severity, utcnow

log = logging.getLogger(__name__)

PD_LIKE_SEVERITY = {Severity.P0: "critical", Severity.P1: "error", Severity.P2: "warning", Severity.P3: "info"}
LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_LABEL = 200
MAX_DESCRIPTION = 4000
RETRY = 5.0  # seconds before a failed push is tried again


def am_time(dt: datetime) -> str:
    """RFC 3339 UTC with milliseconds, as Alertmanager writes it."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _parse(t: Any) -> datetime | None:
    if not t:
        return None
    try:
        d = datetime.fromisoformat(str(t).replace("Z", "+00:00"))
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def _value(text: Any, limit: int = MAX_LABEL) -> str:
    from backends.sanitize import inert

    v = inert(text, limit)
    return v if v else "-"


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


class AlertSink:
    """Pushes the alerts derived from incidents and findings to one Alertmanager."""

    def __init__(self, cfg: Any, *, warroom: str = "warroom", clock: Any = utcnow) -> None:
        from backends.sources.alertmanager import AlertmanagerClient

        self.cfg = cfg
        self.client = AlertmanagerClient(cfg.url, timeout=float(cfg.timeout), headers=dict(cfg.headers or {}))
        self.warroom = warroom
        self.clock = clock
        self.interval = float(cfg.interval)
        self.labels = {k: _value(v) for k, v in dict(cfg.labels or {}).items() if LABEL_NAME.fullmatch(k)}
        self.findings: list[Any] = []  # the last snapshot's findings
        self.skip_sources: set[str] = set()  # Alertmanager sources: their findings are never echoed back
        self.levels: tuple[Any, ...] = ()
        self.firing: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}  # last pushed while firing
        self.resolving: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}  # to send once with endsAt now
        self.last_push = 0.0  # monotonic
        self.next_push = 0.0  # monotonic: interval after a push, RETRY after a failed one
        self.last_error = ""
        self.pushes = 0
        self._lock = asyncio.Lock()

    @property
    def display(self) -> str:
        return str(self.client.display)

    # ------------------------------------------------------------------ what should fire

    def observe(self, snapshot: Any) -> None:
        """Monitor subscriber: remember the findings (pushed on the next cycle)."""
        if self.cfg.findings is None:
            return
        self.findings = list(getattr(snapshot, "findings", ()) or ())

    def _base(self, alertname: str, severity: Severity) -> dict[str, str]:
        return {**self.labels, "alertname": alertname, "severity": PD_LIKE_SEVERITY[severity],
                "warroom": _value(self.warroom)}

    def escalation_alerts(self, incidents: Iterable[Any]) -> list[dict[str, Any]]:
        if not getattr(self.cfg, "escalations", True):
            return []
        out = []
        for inc in incidents:
            esc = getattr(inc, "escalation", None) or {}
            sent = esc.get("levels_sent") or []
            if not sent or not getattr(inc, "open", False):
                continue
            started = _parse(esc.get("started_at")) or inc.declared_at
            for idx in sorted(set(int(i) for i in sent)):
                lv = self.levels[idx] if 0 <= idx < len(self.levels) else None
                labels = {**self._base("WarroomEscalation", inc.severity), "incident": _value(inc.id),
                          "level": _value(lv.name if lv else f"level {idx}")}
                ann = {"summary": _value(esc.get("title") or inc.title, 1024),
                       "description": _value_block(esc.get("brief") or "", MAX_DESCRIPTION),
                       "incident_status": _value(inc.status)}
                if lv is not None and lv.contacts:
                    ann["contacts"] = _value(", ".join(lv.contacts), 1024)
                if esc.get("acked_at"):
                    ann["acknowledged"] = _value(f"{esc.get('acked_at')} by {esc.get('acked_by') or '?'}")
                out.append({"labels": labels, "annotations": ann, "startsAt": am_time(started)})
        return out

    def finding_alerts(self) -> list[dict[str, Any]]:
        threshold = self.cfg.findings
        if threshold is None:
            return []
        out = []
        for f in self.findings:
            if int(f.severity) > int(threshold) or f.source in self.skip_sources or str(f.key).startswith("alert:"):
                continue
            labels = {**self._base("WarroomFinding", f.severity), "finding": _value(f.key),
                      "source": _value(f.source)}
            ann = {"summary": _value(f.summary, 1024),
                   "description": _value_block("\n".join(f.evidence or ()), MAX_DESCRIPTION)}
            if f.playbook:
                ann["playbook"] = _value(f.playbook)
            if f.target:
                ann["target"] = _value(f.target)
            out.append({"labels": labels, "annotations": ann, "startsAt": am_time(f.since)})
        return out

    def desired(self, incidents: Iterable[Any]) -> list[dict[str, Any]]:
        return self.escalation_alerts(incidents) + self.finding_alerts()

    # ------------------------------------------------------------------ pushing

    def due(self) -> bool:
        return time.monotonic() >= self.next_push

    async def push(self, incidents: Iterable[Any]) -> int:
        """POST the firing alerts (endsAt = now + 4 x interval) and the ones that stopped
        (endsAt = now). Returns how many were sent; raises nothing (see `last_error`)."""
        async with self._lock:
            now = self.clock()
            want = {_key(a["labels"]): a for a in self.desired(incidents)}
            for k, a in self.firing.items():
                if k not in want:
                    self.resolving[k] = a
            for k in want:
                self.resolving.pop(k, None)
            ends = am_time(now + timedelta(seconds=4 * self.interval))
            batch = [{**a, "endsAt": ends} for a in want.values()]
            for a in self.resolving.values():
                start = _parse(a.get("startsAt")) or now
                batch.append({**a, "endsAt": am_time(max(now, start))})
            self.last_push = time.monotonic()
            self.next_push = self.last_push + self.interval
            if not batch:
                self.firing = {}
                return 0
            try:
                await self.client.request("POST", "/api/v2/alerts", body=batch)
            except Exception as exc:  # noqa: BLE001 - kept and retried on the next cycle
                self.last_error = f"Alertmanager {self.display}: {describe_exception(exc)}"
                log.warning("alert sink: %s", self.last_error)
                self.next_push = time.monotonic() + min(RETRY, self.interval)
                self.firing = {**self.firing, **want}
                return 0
            self.last_error = ""
            self.firing = want
            self.resolving = {}
            self.pushes += 1
            return len(batch)

    async def push_soon(self, incidents: Iterable[Any]) -> None:
        """One push now, bounded by the sink's timeout (the escalate action, a resolve)."""
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(float(self.cfg.timeout) + 1.0):
                await self.push(list(incidents))


def _value_block(text: Any, limit: int) -> str:
    from backends.sanitize import inert_block

    return inert_block(text, limit)


def sink_from_config(config: Any, *, warroom: str = "warroom", clock: Any = utcnow) -> AlertSink | None:
    esc = getattr(config, "escalation", None)
    cfg = getattr(esc, "alertmanager", None)
    if cfg is None:
        return None
    sink = AlertSink(cfg, warroom=warroom, clock=clock)
    sink.levels = tuple(getattr(esc, "levels", ()) or ())
    sink.skip_sources = {f"alertmanager.{n}" for n in (getattr(config, "alertmanager", None) or {})} | \
        set(getattr(config, "alertmanager", None) or {})
    return sink


__all__ = ["AlertSink", "am_time", "sink_from_config"]
