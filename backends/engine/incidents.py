"""Incidents: declare, assign roles, update status, keep a timeline, resolve, postmortem.

An incident is declared from a finding or by hand with a severity P0-P3; its
response time comes from `[incident.response]` (defaults from the seeds: P0 15 min,
P1 1 h, P2 4 h, P3 24 h) and drives the SLA clock in the header: time left until
someone must have responded (acknowledged or taken the Incident Commander role).
Roles come from `[incident] roles` (Incident Commander, Technical Lead,
Communications Lead). Status goes investigating -> identified -> monitoring ->
resolved.

The timeline is built as things happen: findings appearing and clearing (from the
monitor's snapshots), executed actions with their results (from the ActionEngine's
`on_result`), notes, status / severity / role changes, status updates (written from
seed 004's template: Subject / Severity / Status / Impact / Started / ETA / Next
Update) and escalations. A resolved incident exports a postmortem draft in markdown.

Every lifecycle change is an `Action` (`incident.declare`, `incident.update`,
`incident.resolve`) so the ActionEngine audits it and refuses it when read-only.

Storage: one JSON document per incident, under `state_dir/incidents/` (fcntl-locked
read-modify-write), or in the shared Postgres (`backends/shared.PgIncidentStore`)
when one is configured, where every console sees every change live.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backends.actions.base import (
    Action,
    ActionPlan,
    ActionResult,
    Change,
    Danger,
    Guard,
    ProgressFn,
)
from backends.errors import ActionRefused, redact
from backends.model import Finding, Severity, Snapshot, utcnow
from backends.units import format_age

log = logging.getLogger(__name__)

STATUSES = ("investigating", "identified", "monitoring", "resolved")
DEFAULT_RESPONSE = {Severity.P0: 900.0, Severity.P1: 3600.0, Severity.P2: 14400.0, Severity.P3: 86400.0}
DEFAULT_ROLES = ("Incident Commander", "Technical Lead", "Communications Lead")
ROLE_ALIASES = {"ic": "Incident Commander", "tl": "Technical Lead", "cl": "Communications Lead",
                "commander": "Incident Commander", "tech": "Technical Lead", "comms": "Communications Lead"}
SEVERITY_WORDS = {Severity.P0: "Critical", Severity.P1: "High", Severity.P2: "Medium", Severity.P3: "Low"}
NEXT_UPDATE = {Severity.P0: 1800.0, Severity.P1: 1800.0, Severity.P2: 7200.0, Severity.P3: 7200.0}

# An incident, a finding or a timeline entry's data as stored (JSON: the file or the shared Postgres)
Doc = dict[str, Any]


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat() if t else None


def _parse(t: Any) -> datetime | None:
    if not t:
        return None
    if isinstance(t, datetime):
        return t
    try:
        d = datetime.fromisoformat(str(t))
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def fmt_duration(seconds: float | None) -> str:
    """A duration with its sign ("-3m12s": overdue); "-" for None (backends.units.format_age)."""
    return format_age(seconds, none="-", signed=True)


def _hm(t: datetime | None) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if t else "-"


# --------------------------------------------------------------------------- model


@dataclass
class TimelineEntry:
    at: datetime
    kind: str  # declared | status | severity | role | note | ack | finding | cleared | action | update | escalation | resolved
    text: str
    by: str = ""
    data: Doc = field(default_factory=dict)

    def to_dict(self) -> Doc:
        return {"at": _iso(self.at), "kind": self.kind, "text": self.text, "by": self.by, "data": self.data}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TimelineEntry:
        return cls(at=_parse(d.get("at")) or utcnow(), kind=str(d.get("kind", "")), text=str(d.get("text", "")),
                   by=str(d.get("by", "")), data=dict(d.get("data") or {}))


@dataclass
class Incident:
    id: str
    title: str
    severity: Severity
    declared_at: datetime
    declared_by: str
    status: str = "investigating"
    roles: dict[str, str] = field(default_factory=dict)
    impact: str = ""
    eta: str = "Unknown"
    acknowledged_at: datetime | None = None
    acknowledged_by: str = ""
    resolved_at: datetime | None = None
    resolution: str = ""
    finding: Doc | None = None  # the finding it was declared from
    findings: dict[str, Doc] = field(default_factory=dict)  # key -> {summary, severity, first, cleared, playbook}
    timeline: list[TimelineEntry] = field(default_factory=list)
    escalation: Doc = field(default_factory=dict)  # started_at, levels_sent [idx], brief, acked_at
    response_s: float = 3600.0

    @property
    def open(self) -> bool:
        return self.status != "resolved"

    @property
    def response_due(self) -> datetime:
        return self.declared_at + timedelta(seconds=self.response_s)

    @property
    def sla_due(self) -> datetime | None:
        """What the header's SLA clock counts down to: None once someone responded."""
        return None if self.acknowledged_at is not None or not self.open else self.response_due

    def sla(self, now: datetime | None = None) -> SlaClock:
        now = now or utcnow()
        if self.acknowledged_at is not None:
            return SlaClock(due=self.response_due, left_s=None, breached=self.acknowledged_at > self.response_due,
                            responded_in_s=(self.acknowledged_at - self.declared_at).total_seconds())
        if not self.open and self.resolved_at is not None:  # resolved unanswered: the clock stopped then
            left = (self.response_due - self.resolved_at).total_seconds()
            return SlaClock(due=self.response_due, left_s=None, breached=left < 0, resolved_unanswered=True)
        left = (self.response_due - now).total_seconds()
        return SlaClock(due=self.response_due, left_s=left, breached=left < 0)

    def duration_s(self, now: datetime | None = None) -> float:
        end = self.resolved_at or now or utcnow()
        return (end - self.declared_at).total_seconds()

    def to_dict(self) -> Doc:
        return {
            "id": self.id, "title": self.title, "severity": self.severity.label, "status": self.status,
            "declared_at": _iso(self.declared_at), "declared_by": self.declared_by, "roles": dict(self.roles),
            "impact": self.impact, "eta": self.eta, "acknowledged_at": _iso(self.acknowledged_at),
            "acknowledged_by": self.acknowledged_by, "resolved_at": _iso(self.resolved_at),
            "resolution": self.resolution, "finding": self.finding, "findings": self.findings,
            "timeline": [t.to_dict() for t in self.timeline], "escalation": self.escalation,
            "response_s": self.response_s,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Incident:
        return cls(
            id=str(d["id"]), title=str(d.get("title", "")), severity=Severity.parse(str(d.get("severity", "P2"))),
            declared_at=_parse(d.get("declared_at")) or utcnow(), declared_by=str(d.get("declared_by", "")),
            status=str(d.get("status", "investigating")), roles=dict(d.get("roles") or {}),
            impact=str(d.get("impact") or ""), eta=str(d.get("eta") or "Unknown"),
            acknowledged_at=_parse(d.get("acknowledged_at")), acknowledged_by=str(d.get("acknowledged_by") or ""),
            resolved_at=_parse(d.get("resolved_at")), resolution=str(d.get("resolution") or ""),
            finding=d.get("finding"), findings=dict(d.get("findings") or {}),
            timeline=[TimelineEntry.from_dict(t) for t in d.get("timeline") or ()],
            escalation=dict(d.get("escalation") or {}), response_s=float(d.get("response_s") or 3600.0),
        )

    def add(self, kind: str, text: str, by: str = "", at: datetime | None = None, **data: Any) -> TimelineEntry:
        e = TimelineEntry(at=at or utcnow(), kind=kind, text=redact(text), by=by, data=data)
        self.timeline.append(e)
        return e


@dataclass(frozen=True)
class SlaClock:
    due: datetime
    left_s: float | None  # None once responded
    breached: bool
    responded_in_s: float | None = None
    resolved_unanswered: bool = False  # resolved with nobody acknowledging: no clock left

    def text(self) -> str:
        if self.resolved_unanswered:
            return "resolved without an acknowledgement" + (" (SLA breached)" if self.breached else "")
        if self.responded_in_s is not None:
            return f"responded in {fmt_duration(self.responded_in_s)}" + (" (late)" if self.breached else "")
        if self.left_s is not None and self.left_s < 0:
            return f"SLA BREACHED +{fmt_duration(-self.left_s)}"
        return f"respond in {fmt_duration(self.left_s)}"


def finding_dict(f: Finding) -> Doc:
    return {"key": f.key, "severity": f.severity.label, "summary": f.summary, "source": f.source,
            "playbook": f.playbook, "target": f.target, "since": _iso(f.since), "evidence": list(f.evidence)}


def new_incident_id(now: datetime | None = None) -> str:
    now = now or utcnow()
    return f"INC-{now.astimezone(UTC).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


# --------------------------------------------------------------------------- stores


class LocalIncidentStore:
    """One JSON file per incident under a folder; read-modify-write under an fcntl lock."""

    shared_store = False

    def __init__(self, folder: str | os.PathLike[str], *, poll: float = 1.0) -> None:
        self.folder = Path(folder).expanduser()
        self.poll = poll
        self._subs: list[Callable[[str], Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._seen: dict[str, int] = {}

    def _path(self, incident_id: str) -> Path:
        safe = "".join(ch for ch in incident_id if ch.isalnum() or ch in "-_.")
        if not safe or safe != incident_id:
            raise ValueError(f"bad incident id {incident_id!r}")
        return self.folder / f"{safe}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _read(self, path: Path) -> Doc | None:
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("unreadable incident file %s", path)
            return None
        if not isinstance(doc, dict):
            log.warning("unreadable incident file %s (not a JSON object)", path)
            return None
        return doc

    async def load_all(self) -> list[Doc]:
        if not self.folder.exists():
            return []
        out = []
        for p in sorted(self.folder.glob("*.json")):
            d = self._read(p)
            if d:
                out.append(d)
        return out

    async def get(self, incident_id: str) -> Doc | None:
        return self._read(self._path(incident_id))

    async def update(self, incident_id: str, fn: Callable[[Doc | None], Doc | None]) -> Doc | None:
        path = self._path(incident_id)
        with self._locked():
            old = self._read(path)
            new = fn(old)
            if new is None:
                return old
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, json.dumps(new, indent=1, sort_keys=True).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            return new

    def _mtimes(self) -> dict[str, int]:
        out = {}
        if self.folder.exists():
            for p in self.folder.glob("*.json"):
                with contextlib.suppress(OSError):
                    out[p.stem] = p.stat().st_mtime_ns
        return out

    def subscribe(self, fn: Callable[[str], Any]) -> Callable[[], None]:
        """Changes made by other warroom processes on this box (the files are polled)."""
        self._subs.append(fn)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None and (self._task is None or self._task.done()):
            self._seen = self._mtimes()
            self._task = loop.create_task(self._watch(), name="incidents:watch")
        return lambda: self._subs.remove(fn) if fn in self._subs else None

    async def _watch(self) -> None:
        while self._subs:
            await asyncio.sleep(self.poll)
            now = self._mtimes()
            changed = [k for k, v in now.items() if self._seen.get(k) != v]
            self._seen = now
            for iid in changed:
                for fn in list(self._subs):
                    with contextlib.suppress(Exception):
                        fn(iid)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None


# --------------------------------------------------------------------------- manager


class IncidentManager:
    """The incidents of this stack, cached, with their lifecycle operations.

    Operations are async (the store may be Postgres) and atomic per incident. Listeners
    (`subscribe`) are called with the incident after every change, local or remote.
    """

    def __init__(self, store: Any, *, config: Any = None, operator: str = "", clock: Callable[[], datetime] = utcnow):
        self.store = store
        self.config = config
        self.operator = operator
        self.clock = clock
        self.incidents: dict[str, Incident] = {}
        self._listeners: list[Callable[[Incident], Any]] = []
        self._tasks: set[asyncio.Task[object]] = set()
        self._unsub: Callable[[], None] | None = None
        self.notifier: Any = None  # backends.actions.notify.Notifier, attached by attach_incidents
        self.last_error = ""
        # read-only (backends.engine.readonly.enforce_read_only): live check, and where refusals are audited
        self.is_read_only: Callable[[], bool] = lambda: False
        self.audit: Any = None
        self.last_findings: dict[str, Finding] = {}
        self.recording_path: Any = None  # the flight recording ([record]): its section in the postmortem
        inc = getattr(config, "incident", None)
        self.roles: tuple[str, ...] = tuple(getattr(inc, "roles", None) or DEFAULT_ROLES)
        resp = dict(DEFAULT_RESPONSE)
        resp.update(getattr(inc, "response", None) or {})
        self.response: dict[Severity, float] = resp

    # ------------------------------------------------------------------ cache / events

    async def load(self) -> list[Incident]:
        docs = await self.store.load_all()
        self.incidents = {d["id"]: Incident.from_dict(d) for d in docs}
        if self._unsub is None:
            self._unsub = self.store.subscribe(self._remote_changed)
        return list(self.incidents.values())

    def subscribe(self, fn: Callable[[Incident], Any]) -> Callable[[], None]:
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def _emit(self, inc: Incident) -> None:
        for fn in list(self._listeners):
            try:
                fn(inc)
            except Exception:
                log.exception("incident listener failed")

    def _remote_changed(self, payload: str) -> None:
        self._spawn(self._reload(payload))

    async def _reload(self, incident_id: str) -> None:
        if incident_id == "*":
            for inc in await self.load():
                self._emit(inc)
            return
        d = await self.store.get(incident_id)
        if d:
            inc = Incident.from_dict(d)
            self.incidents[inc.id] = inc
            self._emit(inc)

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return
        self._tasks.add(task)

        def done(t: asyncio.Task[object]) -> None:
            self._tasks.discard(t)
            exc = None if t.cancelled() else t.exception()
            if exc is not None:
                from backends.errors import describe_exception

                self.last_error = describe_exception(exc)
                log.warning("incident update failed: %s", self.last_error)

        task.add_done_callback(done)

    async def drain(self, within: float = 5.0) -> None:
        """Wait for background timeline writes (tests, shutdown)."""
        deadline = asyncio.get_running_loop().time() + within
        while self._tasks and asyncio.get_running_loop().time() < deadline:
            await asyncio.wait(list(self._tasks), timeout=max(0.01, deadline - asyncio.get_running_loop().time()))

    async def close(self) -> None:
        await self.drain()
        if self._unsub:
            self._unsub()
            self._unsub = None
        with contextlib.suppress(Exception):
            await self.store.close()

    # ------------------------------------------------------------------ queries

    def get(self, incident_id: str) -> Incident | None:
        return self.incidents.get(incident_id)

    def open_incidents(self) -> list[Incident]:
        return sorted((i for i in self.incidents.values() if i.open), key=lambda i: (i.severity, i.declared_at))

    def current(self) -> Incident | None:
        """The worst open incident (the header shows it)."""
        o = self.open_incidents()
        return o[0] if o else None

    def resolve_id(self, incident_id: str | None) -> Incident:
        if incident_id:
            inc = self.incidents.get(str(incident_id))
            if inc is None:
                raise ActionRefused("incident", f"no incident {incident_id!r}")
            return inc
        o = self.open_incidents()
        if not o:
            raise ActionRefused("incident", "no open incident: declare one first (i)")
        return o[0]

    def role_name(self, role: str) -> str:
        r = role.strip()
        if r.lower() in ROLE_ALIASES:
            r = ROLE_ALIASES[r.lower()]
        for known in self.roles:
            if known.lower() == r.lower():
                return known
        raise ActionRefused("incident.update", f"unknown role {role!r} (known: {', '.join(self.roles)})")

    def header_text(self, now: datetime | None = None) -> str:
        inc = self.current()
        if inc is None:
            return ""
        return f"{inc.severity.label} {inc.id} {inc.status} · {inc.sla(now or self.clock()).text()}"

    # ------------------------------------------------------------------ mutation

    async def _writable(self, action: str, incident_id: str) -> None:
        """Refuse (audited) any change while the process is read-only."""
        if self.is_read_only():
            from backends.engine.readonly import refuse

            await refuse(self.audit, action, f"incident:{incident_id}", operator=self.operator)

    async def _mutate(self, incident_id: str, fn: Callable[[Incident], bool | None], *,
                      action: str = "incident.update") -> Incident:
        """Apply `fn` to the stored incident atomically; `fn` returns False for no change.
        Refused (audited) while read-only."""
        await self._writable(action, incident_id)

        def apply(doc: Doc | None) -> Doc | None:
            if doc is None:
                raise ActionRefused("incident", f"no incident {incident_id!r}")
            inc = Incident.from_dict(doc)
            if fn(inc) is False:
                return None
            return inc.to_dict()

        doc = await self.store.update(incident_id, apply)
        inc = Incident.from_dict(doc)
        self.incidents[inc.id] = inc
        self._emit(inc)
        return inc

    async def declare(self, title: str, severity: Severity | str, *, by: str | None = None,
                      finding: Finding | Mapping[str, Any] | None = None, impact: str = "",
                      roles: Mapping[str, str] | None = None, incident_id: str | None = None) -> Incident:
        sev = severity if isinstance(severity, Severity) else Severity.parse(str(severity))
        by = by or self.operator
        now = self.clock()
        iid = incident_id or new_incident_id(now)
        await self._writable("incident.declare", iid)
        fdict = finding_dict(finding) if isinstance(finding, Finding) else (dict(finding) if finding else None)
        key = (fdict or {}).get("key")
        seen = self.last_findings.get(key) if isinstance(key, str) else None
        if fdict and seen is not None:  # declared by key (the Findings pane): the finding as it is
            fdict = {**finding_dict(seen), **{k: v for k, v in fdict.items() if v}}
            fdict["since"] = _iso(seen.since)
        inc = Incident(id=iid, title=title.strip() or (fdict or {}).get("summary", "incident"), severity=sev,
                       declared_at=now, declared_by=by, impact=impact, finding=fdict,
                       response_s=float(self.response.get(sev, DEFAULT_RESPONSE[sev])))
        inc.add("declared", f"{sev.label} incident declared: {inc.title}", by, at=now,
                finding=(fdict or {}).get("key"))
        if fdict:
            inc.findings[fdict["key"]] = {"summary": fdict.get("summary"), "severity": fdict.get("severity"),
                                          "playbook": fdict.get("playbook"), "first": fdict.get("since") or _iso(now),
                                          "cleared": None}
        for role, person in (roles or {}).items():
            inc.roles[self.role_name(role)] = person
        for entry in await self._actions_before(fdict):  # what was done since the finding appeared
            when = _parse(entry.get("ts")) or now
            text = f"{entry.get('action')} {entry.get('target', '')} -> {entry.get('result')}"
            inc.add("action", text + (f": {entry.get('summary')}" if entry.get("summary") else ""),
                    str(entry.get("operator") or ""), at=when, action=entry.get("action"),
                    target=entry.get("target", ""), result=entry.get("result"), summary=entry.get("summary", ""),
                    before_declare=True)
        inc.timeline.sort(key=lambda t: t.at)

        def create(doc: Doc | None) -> Doc:
            if doc is not None:  # an idempotent re-run of the same declare
                return doc
            return inc.to_dict()

        doc = await self.store.update(iid, create)
        inc = Incident.from_dict(doc)
        self.incidents[iid] = inc
        self._emit(inc)
        return inc

    async def set_status(self, incident_id: str, status: str, *, by: str | None = None, note: str = "") -> Incident:
        status = status.strip().lower()
        if status not in STATUSES:
            raise ActionRefused("incident.update", f"unknown status {status!r} (expected {', '.join(STATUSES)})")
        if status == "resolved":
            return await self.resolve(incident_id, by=by, summary=note)
        by = by or self.operator

        def fn(inc: Incident) -> bool:
            if inc.status == status and not note:
                return False
            old = inc.status
            inc.status = status
            inc.add("status", f"status {old} -> {status}" + (f": {note}" if note else ""), by, at=self.clock(),
                    old=old, new=status)
            return True

        return await self._mutate(incident_id, fn)

    async def set_severity(self, incident_id: str, severity: Severity | str, *, by: str | None = None) -> Incident:
        sev = severity if isinstance(severity, Severity) else Severity.parse(str(severity))
        by = by or self.operator

        def fn(inc: Incident) -> bool:
            if inc.severity == sev:
                return False
            old = inc.severity
            inc.severity = sev
            inc.response_s = float(self.response.get(sev, DEFAULT_RESPONSE[sev]))
            inc.add("severity", f"severity {old.label} -> {sev.label}", by, at=self.clock(), old=old.label,
                    new=sev.label)
            return True

        return await self._mutate(incident_id, fn)

    async def assign(self, incident_id: str, role: str, person: str, *, by: str | None = None) -> Incident:
        name = self.role_name(role)
        person = person.strip()
        by = by or self.operator
        now = self.clock()

        def fn(inc: Incident) -> bool:
            if inc.roles.get(name) == person:
                return False
            if person:
                inc.roles[name] = person
                inc.add("role", f"{name}: {person}", by, at=now, role=name, person=person)
            else:
                inc.roles.pop(name, None)
                inc.add("role", f"{name}: unassigned", by, at=now, role=name, person="")
            if person and name == self.roles[0] and inc.acknowledged_at is None:
                inc.acknowledged_at, inc.acknowledged_by = now, person  # the commander taking command responds
            return True

        return await self._mutate(incident_id, fn)

    async def acknowledge(self, incident_id: str, *, by: str | None = None) -> Incident:
        by = by or self.operator
        now = self.clock()

        def fn(inc: Incident) -> bool:
            changed = False
            if inc.acknowledged_at is None:
                inc.acknowledged_at, inc.acknowledged_by = now, by
                changed = True
            if inc.escalation and not inc.escalation.get("acked_at"):
                inc.escalation["acked_at"], inc.escalation["acked_by"] = _iso(now), by
                changed = True
            if changed:
                inc.add("ack", f"acknowledged by {by}", by, at=now)
            return changed

        return await self._mutate(incident_id, fn)

    async def note(self, incident_id: str, text: str, *, by: str | None = None) -> Incident:
        text = text.strip()
        if not text:
            raise ActionRefused("incident.update", "an empty note")
        by = by or self.operator
        return await self._mutate(incident_id, lambda inc: bool(inc.add("note", text, by, at=self.clock())))

    async def set_fields(self, incident_id: str, *, impact: str | None = None, eta: str | None = None,
                         title: str | None = None, by: str | None = None) -> Incident:
        by = by or self.operator

        def fn(inc: Incident) -> bool:
            changed = []
            for name, val in (("impact", impact), ("eta", eta), ("title", title)):
                if val is not None and val.strip() != getattr(inc, name):
                    setattr(inc, name, val.strip())
                    changed.append(f"{name}: {val.strip()}")
            if not changed:
                return False
            inc.add("note", "; ".join(changed), by, at=self.clock())
            return True

        return await self._mutate(incident_id, fn)

    async def post_update(self, incident_id: str, text: str | None = None, *, by: str | None = None) -> Incident:
        """Record a status update (written from the template unless `text` is given)."""
        by = by or self.operator
        now = self.clock()

        def fn(inc: Incident) -> bool:
            body = text if text else status_update(inc, now)
            inc.add("update", body, by, at=now)
            return True

        return await self._mutate(incident_id, fn)

    async def resolve(self, incident_id: str, *, by: str | None = None, summary: str = "") -> Incident:
        by = by or self.operator
        now = self.clock()

        def fn(inc: Incident) -> bool:
            if not inc.open:
                return False
            old = inc.status
            inc.status = "resolved"
            inc.resolved_at = now
            inc.resolution = summary.strip()
            for f in inc.findings.values():
                if not f.get("cleared"):
                    f["open_at_resolve"] = True
            inc.add("resolved", f"resolved after {fmt_duration(inc.duration_s(now))}"
                    + (f": {summary.strip()}" if summary.strip() else ""), by, at=now, old=old)
            return True

        return await self._mutate(incident_id, fn, action="incident.resolve")

    async def _actions_before(self, fdict: Mapping[str, Any] | None) -> list[Doc]:
        """Executed actions in the audit since the finding appeared (e.g. the pause done before
        the declare), so the timeline and the postmortem show them."""
        since = _parse((fdict or {}).get("since"))
        steps_since = getattr(self.audit, "steps_since", None)
        if since is None or not callable(steps_since):
            return []
        try:
            entries = await steps_since(since)
        except Exception:
            return []
        return [e for e in entries if not str(e.get("action", "")).startswith(("incident.", "console."))][-50:]

    async def record_escalation(self, incident_id: str, fn: Callable[[Incident], bool | None]) -> Incident:
        return await self._mutate(incident_id, fn, action="escalate")

    # ------------------------------------------------------------------ feeds

    def on_action(self, plan: ActionPlan, result: ActionResult) -> None:
        """ActionEngine.on_result listener: every executed action goes on the open incidents' timelines."""
        if plan.action.startswith("incident.") or plan.action == "escalate":
            return  # these write their own timeline entries
        if self.is_read_only():
            return  # a read-only process writes nothing (another console records the timeline)
        open_ids = [i.id for i in self.open_incidents()]
        if not open_ids:
            return
        text = f"{plan.action} {plan.target} -> {result.status}" + (f": {result.summary}" if result.summary else "")
        data = {"action": plan.action, "target": plan.target, "result": result.status, "summary": result.summary,
                "reason": plan.reason, "counts": dict(result.counts) if result.counts else {}}
        by = self.operator
        at = result.finished_at
        for iid in open_ids:
            self._spawn(self._mutate(iid, lambda inc: bool(inc.add("action", text, by, at=at, **data))))

    def observe(self, snapshot: Snapshot) -> None:
        """Monitor subscriber: findings appearing and clearing go on the open incidents' timelines."""
        self.last_findings = {f.key: f for f in snapshot.findings}  # a declare by key finds its finding
        open_incs = self.open_incidents()
        if not open_incs or self.is_read_only():
            return
        now = snapshot.at
        current = self.last_findings
        for inc in open_incs:
            new = [k for k, f in current.items()
                   if k not in inc.findings or inc.findings[k].get("cleared")]
            gone = [k for k, v in inc.findings.items() if not v.get("cleared") and k not in current]
            if not new and not gone:
                continue
            self._spawn(self._mutate(inc.id, _findings_changer(current, new, gone, now)))

    # ------------------------------------------------------------------ postmortem

    def postmortem(self, incident_id: str, now: datetime | None = None) -> str:
        inc = self.incidents.get(incident_id)
        if inc is None:
            raise KeyError(incident_id)
        outbox = getattr(self.notifier, "outbox", None)
        try:
            delivered = set(outbox.sent_ids()) if outbox is not None else None
        except Exception:
            delivered = None
        text = postmortem_markdown(inc, now or self.clock(), delivered=delivered)
        if self.recording_path is not None:  # [record]: what the flight recorder saw (backends/engine/recorder.py)
            from backends.engine.recorder import recording_postmortem_section

            text += recording_postmortem_section(self.recording_path, inc.declared_at - timedelta(minutes=30),
                                                 inc.resolved_at)
        return text

    def export_postmortem(self, incident_id: str, folder: str | os.PathLike[str] | None = None) -> Path:
        folder = Path(folder) if folder else self.postmortem_dir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{incident_id}-postmortem.md"
        path.write_text(self.postmortem(incident_id))
        return path

    @property
    def postmortem_dir(self) -> Path:
        sd = getattr(self.config, "state_dir", None)
        return (Path(sd) if sd else Path(".")) / "postmortems"


def _findings_changer(current: Mapping[str, Finding], new: list[str], gone: list[str],
                      now: datetime) -> Callable[[Incident], bool]:
    def fn(inc: Incident) -> bool:
        changed = False
        for k in new:
            rec = inc.findings.get(k)
            if rec is not None and not rec.get("cleared"):
                continue  # another console recorded it already
            f = current[k]
            inc.findings[k] = {"summary": f.summary, "severity": f.severity.label, "playbook": f.playbook,
                               "first": _iso(f.since) if rec is None else _iso(now), "cleared": None,
                               "source": f.source}
            inc.add("finding", f"{f.severity.label} {f.summary}", "", at=now, key=k, playbook=f.playbook)
            changed = True
        for k in gone:
            rec = inc.findings.get(k)
            if rec is None or rec.get("cleared"):
                continue
            rec["cleared"] = _iso(now)
            inc.add("cleared", f"cleared: {rec.get('summary')}", "", at=now, key=k)
            changed = True
        return changed

    return fn


# --------------------------------------------------------------------------- templates


def status_update(inc: Incident, now: datetime | None = None, *, next_update_s: float | None = None) -> str:
    """Seed 004's communication template, filled in."""
    now = now or utcnow()
    nxt = next_update_s if next_update_s is not None else NEXT_UPDATE.get(inc.severity, 1800.0)
    action = " - Action Required" if inc.severity <= Severity.P1 and inc.open else ""
    status = inc.status.capitalize()
    eta = inc.eta or "Unknown"
    if not inc.open:
        eta = f"Resolved {_hm(inc.resolved_at)}"
    lines = [
        f"Subject: [{inc.severity.label}] {inc.title}{action}",
        "",
        f"Severity: {SEVERITY_WORDS[inc.severity]}",
        f"Status: {status}",
        f"Impact: {inc.impact or 'Under assessment'}",
        f"Started: {_hm(inc.declared_at)}",
        f"ETA: {eta}",
        "",
        f"Next Update: {_hm(now + timedelta(seconds=nxt))} ({fmt_duration(nxt)} or sooner)" if inc.open
        else "Next Update: none (resolved)",
    ]
    return "\n".join(lines)


def _delivery(data: Mapping[str, Any], delivered: set[str] | None) -> str:
    """An escalation's result in the postmortem: delivered only when the outbox says so."""
    ids = [str(i) for i in data.get("messages") or ()]
    if not ids:
        return "nothing sent (no channel)"
    if delivered is None:
        return f"{len(ids)} message(s) queued (delivery not known here)"
    done = sum(1 for i in ids if i in delivered)
    if done == len(ids):
        return f"delivered ({done} message(s))"
    if done == 0:
        return f"pending: {len(ids)} message(s) not delivered yet"
    return f"{done} of {len(ids)} message(s) delivered, {len(ids) - done} pending"


def postmortem_markdown(inc: Incident, now: datetime | None = None, *,
                        delivered: set[str] | None = None) -> str:
    """The postmortem draft. Every text that came from outside or from an operator (titles,
    finding summaries, action results, notes, names) is made inert for markdown
    (`backends.sanitize.markdown_inline`): no control character, HTML tag or link survives."""
    from backends.sanitize import fence
    from backends.sanitize import markdown_inline as md

    now = now or utcnow()
    out = [f"# Postmortem draft: {md(inc.title)}", ""]
    out += [
        f"- **Incident:** {md(inc.id)}",
        f"- **Severity:** {inc.severity.label} ({SEVERITY_WORDS[inc.severity]})",
        f"- **Status:** {inc.status}",
        f"- **Declared:** {_hm(inc.declared_at)} by {md(inc.declared_by)}",
        f"- **Acknowledged:** {_hm(inc.acknowledged_at)}" + (f" by {md(inc.acknowledged_by)}" if inc.acknowledged_by else ""),
        f"- **Resolved:** {_hm(inc.resolved_at)}",
        f"- **Impact:** {md(inc.impact) if inc.impact else 'TODO'}",
        "",
        "## Durations",
        "",
        "| | |",
        "|---|---|",
        f"| Time to respond (SLA {fmt_duration(inc.response_s)}) | "
        + (fmt_duration((inc.acknowledged_at - inc.declared_at).total_seconds()) if inc.acknowledged_at else "no response recorded")
        + (" (late)" if inc.acknowledged_at and inc.acknowledged_at > inc.response_due else "") + " |",
        f"| Time to resolve | {fmt_duration(inc.duration_s(now)) if inc.resolved_at else 'open for ' + fmt_duration(inc.duration_s(now))} |",
    ]
    # time in each status
    marks = [(inc.declared_at, "investigating")]
    marks += [(t.at, t.data.get("new") or "resolved") for t in inc.timeline if t.kind in ("status", "resolved")]
    end = inc.resolved_at or now
    for (t0, st), nxt in zip(marks, marks[1:] + [(end, "")], strict=False):
        if st == "resolved":
            continue
        out.append(f"| Time {st} | {fmt_duration((nxt[0] - t0).total_seconds())} |")
    out += ["", "## Roles", ""]
    out += [f"- {md(r)}: {md(inc.roles.get(r, 'unassigned'))}" for r in dict.fromkeys(list(DEFAULT_ROLES) + list(inc.roles))]
    out += ["", "## Timeline", "", "| Time (UTC) | Kind | What | Who |", "|---|---|---|---|"]
    for t in inc.timeline:
        text = md(t.text.replace("\r\n", "\n").replace("\n", " / "))
        out.append(f"| {_hm(t.at)} | {md(t.kind)} | {text} | {md(t.by) if t.by else '-'} |")
    actions = [t for t in inc.timeline if t.kind in ("action", "escalation")]
    out += ["", "## Actions taken", ""]
    if actions:
        out += ["| Time (UTC) | Action | Target | Result | Summary | By |", "|---|---|---|---|---|---|"]
        for t in actions:
            d = t.data
            result = _delivery(d, delivered) if t.kind == "escalation" else d.get("result", "")
            out.append(f"| {_hm(t.at)} | {md(d.get('action', t.kind))} | {md(d.get('target', d.get('level', '')))} | "
                       f"{md(result)} | {md(d.get('summary', t.text))} | {md(t.by) if t.by else '-'} |")
    else:
        out.append("None recorded.")
    out += ["", "## Findings", ""]
    if inc.findings:
        out += ["| Finding | Severity | First seen | Cleared | Lasted |", "|---|---|---|---|---|"]
        for k, f in inc.findings.items():
            first, cleared = _parse(f.get("first")), _parse(f.get("cleared"))
            lasted = fmt_duration(((cleared or end) - first).total_seconds()) if first else "-"
            out.append(f"| {md(f.get('summary', k))} | {md(f.get('severity', ''))} | {_hm(first)} | "
                       f"{_hm(cleared) if cleared else 'not cleared'} | {lasted} |")
    else:
        out.append("None recorded.")
    updates = [t for t in inc.timeline if t.kind == "update"]
    if updates:  # written in the console; escalation messages (above) are what was sent
        out += ["", "## Status updates written (not sent by warroom: see the escalations above)", ""]
        for t in updates:
            mark, text = fence(t.text)
            out += [f"### {_hm(t.at)} by {md(t.by) if t.by else '-'}", "", mark, text, mark, ""]
    out += ["", "## Resolution", "", md(inc.resolution) if inc.resolution else "TODO", "",
            "## Root cause", "", "TODO", "",
            "## What went well / what did not", "", "TODO", "",
            "## Follow-ups", "",
            "- [ ] Root cause identified", "- [ ] Fix implemented and tested", "- [ ] Monitoring shows normal operation",
            "- [ ] Sample of transactions verified", "- [ ] Runbook updated with what was learned", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- actions


class _IncidentAction(Action):
    danger = Danger.SAFE

    def __init__(self, manager: IncidentManager) -> None:
        self.manager = manager


class IncidentDeclare(_IncidentAction):
    id = "incident.declare"
    title = "Declare an incident"
    description = "Declare an incident (from a finding or by hand), severity P0-P3"

    async def plan(self, *, title: str = "", severity: Any = None, finding: Any = None, impact: str = "",
                   roles: Mapping[str, str] | None = None, reason: str | None = None, **_: Any) -> ActionPlan:
        fdict: Doc | None
        if isinstance(finding, Finding):
            fdict = finding_dict(finding)
        elif isinstance(finding, str) and finding:  # a finding key (the findings pane's context)
            fdict = {"key": finding, "summary": title, "severity": str(severity) if severity else None}
        else:
            fdict = dict(finding) if finding else None
        if severity is None:
            severity = (fdict or {}).get("severity") or "P2"
        try:
            sev = severity if isinstance(severity, Severity) else Severity.parse(str(severity))
        except ValueError as exc:
            raise ActionRefused(self.id, str(exc)) from None
        title = (title or (fdict or {}).get("summary") or "").strip()
        if not title:
            raise ActionRefused(self.id, "a title is required")
        for r in roles or {}:
            self.manager.role_name(r)
        iid = new_incident_id()
        resp = self.manager.response.get(sev, DEFAULT_RESPONSE[sev])
        return ActionPlan(
            action=self.id, title=self.title, target=f"incident:{iid}", danger=Danger.SAFE,
            changes=(Change(target=iid, description=f"declare {sev.label} incident: {title} "
                            f"(respond within {fmt_duration(resp)})", after={"severity": sev.label, "title": title}),),
            params={"incident_id": iid, "title": title, "severity": sev.label, "finding": fdict, "impact": impact,
                    "roles": dict(roles or {})},
            reason=reason, can_dry_run=False, preview=f"Declare {sev.label}: {title}",
        )

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        p = plan.params
        inc = await self.manager.declare(p["title"], p["severity"], finding=p.get("finding"), impact=p.get("impact", ""),
                                         roles=p.get("roles") or None, incident_id=p["incident_id"])
        return ActionResult(status="ok", summary=f"{inc.id} declared ({inc.severity.label})",
                            after={"id": inc.id, "severity": inc.severity.label, "status": inc.status})


UPDATE_OPS = ("status", "severity", "assign", "note", "ack", "impact", "eta", "title", "update")


class IncidentUpdate(_IncidentAction):
    id = "incident.update"
    title = "Update the incident"
    description = "Status, severity, roles, notes, acknowledgement, status update"

    async def plan(self, *, incident: str | None = None, op: str = "", value: Any = None, role: str = "",
                   reason: str | None = None, **_: Any) -> ActionPlan:
        inc = self.manager.resolve_id(incident)
        if not inc.open and op != "note":
            raise ActionRefused(self.id, f"{inc.id} is resolved")
        op = (op or "").strip().lower()
        if op not in UPDATE_OPS:
            raise ActionRefused(self.id, f"unknown change {op!r} (expected {', '.join(UPDATE_OPS)})")
        val = "" if value is None else str(value)
        before: Any = None
        if op == "status":
            if val.strip().lower() not in STATUSES or val.strip().lower() == "resolved":
                raise ActionRefused(self.id, f"status must be one of {', '.join(STATUSES[:-1])} (resolve to close)")
            before, desc = inc.status, f"status {inc.status} -> {val.strip().lower()}"
        elif op == "severity":
            try:
                sev = Severity.parse(val)
            except ValueError as exc:
                raise ActionRefused(self.id, str(exc)) from None
            before, desc = inc.severity.label, f"severity {inc.severity.label} -> {sev.label}"
        elif op == "assign":
            role = self.manager.role_name(role)
            before, desc = inc.roles.get(role), f"{role}: {inc.roles.get(role) or 'unassigned'} -> {val or 'unassigned'}"
        elif op == "note":
            if not val.strip():
                raise ActionRefused(self.id, "an empty note")
            desc = f"note: {val.strip()[:80]}"
        elif op == "ack":
            desc = "acknowledge (stops automatic escalation, answers the SLA clock)"
        elif op == "update":
            val = val or status_update(inc)
            desc = "post a status update"
        else:
            if not val.strip():
                raise ActionRefused(self.id, f"an empty {op}")
            before, desc = getattr(inc, op), f"{op}: {val.strip()[:80]}"
        return ActionPlan(
            action=self.id, title=f"Incident {op}", target=f"incident:{inc.id}", danger=Danger.SAFE,
            changes=(Change(target=inc.id, description=desc, before=before, after=val or None),),
            params={"incident": inc.id, "op": op, "value": val, "role": role}, reason=reason, can_dry_run=False,
            preview=desc,
        )

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        p = plan.params
        iid, op, val = p["incident"], p["op"], p["value"]
        m = self.manager
        if op == "status":
            inc = await m.set_status(iid, val)
        elif op == "severity":
            inc = await m.set_severity(iid, val)
        elif op == "assign":
            inc = await m.assign(iid, p["role"], val)
        elif op == "note":
            inc = await m.note(iid, val)
        elif op == "ack":
            inc = await m.acknowledge(iid)
            if m.notifier is not None:
                await m.notifier.pagerduty_event(inc, "acknowledge")
        elif op == "update":
            inc = await m.post_update(iid, val or None)
        else:
            inc = await m.set_fields(iid, **{op: val})
        return ActionResult(status="ok", summary=f"{inc.id}: {plan.changes[0].description}",
                            after={"status": inc.status, "severity": inc.severity.label, "roles": inc.roles})


class IncidentResolve(_IncidentAction):
    id = "incident.resolve"
    title = "Resolve the incident"
    danger = Danger.CONFIRM
    description = "Resolve: stops the SLA clock and escalation, resolves the PagerDuty incident"

    async def plan(self, *, incident: str | None = None, summary: str = "", reason: str | None = None,
                   **_: Any) -> ActionPlan:
        inc = self.manager.resolve_id(incident)
        if not inc.open:
            raise ActionRefused(self.id, f"{inc.id} is already resolved")
        still = [f.get("summary") for f in inc.findings.values() if not f.get("cleared")]
        guard = Guard(True, "no finding of the incident is still open") if not still else Guard(
            True, f"{len(still)} finding(s) still open", "; ".join(str(s) for s in still[:3]))
        return ActionPlan(
            action=self.id, title=self.title, target=f"incident:{inc.id}", danger=Danger.CONFIRM, guard=guard,
            changes=(Change(target=inc.id, description=f"resolve {inc.id} after {fmt_duration(inc.duration_s())}",
                            before=inc.status, after="resolved"),),
            params={"incident": inc.id, "summary": summary}, reason=reason, can_dry_run=False,
        )

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        inc = await self.manager.resolve(plan.params["incident"], summary=plan.params.get("summary") or "")
        if self.manager.notifier is not None:
            await self.manager.notifier.pagerduty_event(inc, "resolve")
        return ActionResult(status="ok", summary=f"{inc.id} resolved after {fmt_duration(inc.duration_s())}",
                            before="open", after="resolved")


def incident_actions(manager: IncidentManager) -> list[Action]:
    return [IncidentDeclare(manager), IncidentUpdate(manager), IncidentResolve(manager)]


# --------------------------------------------------------------------------- wiring


def attach_incidents(engine: Any) -> IncidentManager:
    """Incidents + escalation on an engine: store (shared Postgres or local JSON), actions,
    timeline feeds (snapshots, action results), the notifier's loop."""
    config = engine.config
    shared = getattr(engine, "shared", None)
    if shared is not None:
        from backends.engine.shared import PgIncidentStore

        store: Any = PgIncidentStore(shared)
    else:
        sd = getattr(config, "state_dir", None)
        if sd is None:
            import platformdirs

            sd = Path(platformdirs.user_state_dir("warroom"))
        store = LocalIncidentStore(Path(sd) / "incidents")
    from backends.clock import clock_of

    # the engine's clock: SLA timers, timeline stamps, declared/resolved times
    manager = IncidentManager(store, config=config, operator=engine.actions.operator, clock=clock_of(engine).now)
    manager.audit = getattr(engine, "audit", None)  # actions done before a declare go on its timeline
    for a in incident_actions(manager):
        engine.actions.register(a)
    engine.actions.on_result(manager.on_action)
    engine.monitor.subscribe(manager.observe)
    from backends.actions.notify import attach_notifier

    attach_notifier(engine, manager)

    async def start() -> None:
        try:
            await manager.load()
        except Exception as exc:
            from backends.errors import describe_exception

            manager.last_error = describe_exception(exc)
            log.warning("incidents could not be loaded: %s", manager.last_error)

    engine.starters.insert(len(engine.starters), start)
    engine.closers.append(manager.close)
    engine.incidents = manager
    # the last step of build_engine: read-only held by the engine on every path (audit gate,
    # incidents, notifier); see backends/engine/readonly.py
    from backends.engine.readonly import enforce_read_only

    enforce_read_only(engine)
    return manager


def plain(inc: Incident) -> Doc:
    return inc.to_dict()


__all__ = ["STATUSES", "Incident", "IncidentDeclare", "IncidentManager", "IncidentResolve", "IncidentUpdate",
           "LocalIncidentStore", "SlaClock", "TimelineEntry", "attach_incidents", "finding_dict", "fmt_duration",
           "incident_actions", "postmortem_markdown", "status_update"]
