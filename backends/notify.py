"""Escalation: levels, channels (apprise), PagerDuty Events API v2, and a durable outbox.

Levels come from `[[escalation.levels]]` (seed 000's four: development team 0-30 min,
infrastructure 30-60 min, database, emergency maintenance). Escalating an incident to
a level sends the brief to each of the level's channels (any apprise URL) and, when
`[escalation.pagerduty]` is configured, a PagerDuty `trigger` event whose `dedup_key`
is the incident id (acknowledging / resolving the incident sends `acknowledge` /
`resolve`). Once an incident has been escalated, the next level is contacted by
itself when its `after` time passes without an acknowledgement.

Nothing is lost: every message is first written to an OUTBOX on disk
(`state_dir/outbox/`, one JSON file per message, fsynced), then sent; a failed send
is retried with backoff and stays in the outbox (the console shows what is pending)
until it goes. Each message has an idempotency key, sent as the `X-Warroom-Message-Id`
header / `warroom_message_id` field on webhooks, and recorded in `sent.jsonl` once
delivered, so a message is delivered once per outbox even across restarts. The outbox
stores no secret: channels are referenced by level and index, resolved from config
at send time.

`escalate` is an Action (audited; read-only refuses it). apprise and aiohttp are
imported lazily.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .actions import Action, ActionPlan, ActionResult, Change, Danger, Guard, ProgressFn
from .errors import ActionRefused, describe_exception, redact
from .model import Severity, utcnow

log = logging.getLogger(__name__)

BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
PD_SEVERITY = {Severity.P0: "critical", Severity.P1: "error", Severity.P2: "warning", Severity.P3: "info"}
ID_HEADER = "X-Warroom-Message-Id"


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat() if t else None


def _parse(t: Any) -> datetime | None:
    if not t:
        return None
    d = datetime.fromisoformat(str(t))
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def reveal(value: Any) -> str:
    return value.reveal() if hasattr(value, "reveal") else str(value)


def display(value: Any) -> str:
    """A channel as it may be shown: scheme://host[:port], never tokens."""
    if hasattr(value, "display"):
        return value.display()
    text = str(value)
    if "://" in text:
        scheme, rest = text.split("://", 1)
        host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
        return f"{scheme}://{host}"
    return redact(text)


# --------------------------------------------------------------------------- messages / outbox


@dataclass
class Message:
    id: str  # the idempotency key
    incident: str
    kind: str  # "apprise" | "pagerduty"
    title: str
    body: str
    level: int = -1  # index in config levels (apprise)
    level_name: str = ""
    channel: int = -1  # index in the level's channels (apprise)
    label: str = ""  # what may be shown: "json://127.0.0.1:8080" or "PagerDuty"
    event_action: str = ""  # pagerduty: trigger | acknowledge | resolve
    severity: str = "P1"
    created_at: str = ""
    attempts: int = 0
    next_attempt_at: float = 0.0  # epoch seconds
    last_error: str = ""
    status: str = "pending"  # pending | dead (a permanent refusal; kept until dropped) ; sent in sent.jsonl
    custom: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Message:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


class Outbox:
    """Messages on disk until delivered. Safe for several warroom processes on one box."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).expanduser()
        self._sent_cache: set[str] | None = None
        self._sent_size = -1

    @property
    def sent_log(self) -> Path:
        return self.folder / "sent.jsonl"

    def _path(self, mid: str) -> Path:
        safe = "".join(ch for ch in mid if ch.isalnum() or ch in "-_.")
        return self.folder / f"{safe}.msg.json"

    @contextlib.contextmanager
    def locked(self, *, blocking: bool = True):
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def sent_ids(self) -> set[str]:
        try:
            size = self.sent_log.stat().st_size
        except FileNotFoundError:
            return set()
        if self._sent_cache is not None and size == self._sent_size:
            return self._sent_cache
        ids = set()
        with self.sent_log.open() as fh:
            for line in fh:
                with contextlib.suppress(ValueError):
                    ids.add(json.loads(line)["id"])
        self._sent_cache, self._sent_size = ids, size
        return ids

    def _write(self, msg: Message) -> None:
        path = self._path(msg.id)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(msg.to_dict()).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def put(self, msg: Message) -> bool:
        """Store a message; False if it is already stored or was already delivered."""
        with self.locked():
            if msg.id in self.sent_ids() or self._path(msg.id).exists():
                return False
            if not msg.created_at:
                msg.created_at = _iso(utcnow()) or ""
            self._write(msg)
            return True

    def get(self, mid: str) -> Message | None:
        try:
            return Message.from_dict(json.loads(self._path(mid).read_text()))
        except (FileNotFoundError, ValueError):
            return None

    def pending(self) -> list[Message]:
        if not self.folder.exists():
            return []
        out = []
        for p in self.folder.glob("*.msg.json"):
            with contextlib.suppress(FileNotFoundError, ValueError):
                out.append(Message.from_dict(json.loads(p.read_text())))
        return sorted(out, key=lambda m: (m.created_at, m.id))

    def update(self, msg: Message) -> None:
        with self.locked():
            if self._path(msg.id).exists():
                self._write(msg)

    def mark_sent(self, msg: Message) -> None:
        """Record the delivery (fsynced) and remove the message from the outbox."""
        with self.locked():
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.sent_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                line = {"id": msg.id, "incident": msg.incident, "kind": msg.kind, "label": msg.label,
                        "at": _iso(utcnow()), "attempts": msg.attempts}
                os.write(fd, (json.dumps(line) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                self._path(msg.id).unlink()

    def drop(self, mid: str) -> bool:
        with self.locked():
            try:
                self._path(mid).unlink()
                return True
            except FileNotFoundError:
                return False


# --------------------------------------------------------------------------- senders


class SendError(Exception):
    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = redact(reason)
        self.permanent = permanent


def _with_id(url: str, mid: str) -> str:
    """Add the idempotency key to an apprise webhook URL (header + payload field)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("json", "jsons", "xml", "xmls", "form", "forms"):
        return url
    sep = "&" if "?" in url else "?"
    extra = f"+{ID_HEADER}={mid}"
    if scheme.startswith("json"):
        extra += f"&:warroom_message_id={mid}"
    return url + sep + extra


def _apprise_send(url: str, title: str, body: str) -> tuple[bool, str]:
    import apprise

    ap = apprise.Apprise()
    if not ap.add(url):
        return False, "apprise does not understand this channel URL"
    with apprise.LogCapture(level=logging.WARNING) as logs:
        ok = ap.notify(body=body, title=title)
        text = logs.getvalue().strip().splitlines()
    return bool(ok), redact(text[-1] if text else "")


class Notifier:
    """Builds, stores and sends escalation messages; runs the automatic escalation."""

    def __init__(self, config: Any, outbox: Outbox, *, source: str = "warroom", timeout: float = 10.0,
                 backoff: Iterable[float] = BACKOFF, clock: Callable[[], datetime] = utcnow) -> None:
        esc = getattr(config, "escalation", None)
        self.levels = tuple(getattr(esc, "levels", ()) or ())
        self.pagerduty = getattr(esc, "pagerduty", None)
        self.ack_timeout = float(getattr(esc, "ack_timeout", 1800.0) or 1800.0)
        self.outbox = outbox
        self.source = source
        self.timeout = timeout
        self.backoff = tuple(backoff)
        self.clock = clock
        self.manager: Any = None  # IncidentManager
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._flush_lock: asyncio.Lock | None = None
        self._listeners: list[Callable[[], Any]] = []
        self.last_error = ""

    # ------------------------------------------------------------------ levels

    def level_index(self, level: Any) -> int:
        if level is None or level == "":
            return 0
        if isinstance(level, int) or (isinstance(level, str) and level.strip().isdigit()):
            i = int(level)
            if 0 <= i < len(self.levels):
                return i
            raise ActionRefused("escalate", f"no escalation level {i} (there are {len(self.levels)})")
        for i, lv in enumerate(self.levels):
            if lv.name.lower() == str(level).strip().lower():
                return i
        names = ", ".join(lv.name for lv in self.levels) or "none configured"
        raise ActionRefused("escalate", f"no escalation level {level!r} (levels: {names})")

    def due_at(self, started: datetime, index: int) -> datetime:
        """When level `index` is contacted by itself after the escalation started."""
        lv = self.levels[index]
        after = float(lv.after or 0.0)
        if index > 0 and after <= 0:
            after = index * self.ack_timeout
        return started + timedelta(seconds=after)

    def channels(self, index: int) -> list[str]:
        return [display(c) for c in self.levels[index].channels] if 0 <= index < len(self.levels) else []

    # ------------------------------------------------------------------ messages

    def messages_for(self, inc: Any, index: int, title: str, body: str, *, ids: Mapping[str, str] | None = None,
                     auto: bool = False) -> list[Message]:
        """One message per channel of the level, plus a PagerDuty trigger."""
        ids = dict(ids or {})
        lv = self.levels[index] if 0 <= index < len(self.levels) else None
        out = []
        tag = "auto" if auto else "manual"
        for ci, ch in enumerate(lv.channels if lv else ()):
            key = f"ch{ci}"
            mid = ids.get(key) or f"{inc.id}.L{index}.{tag}.{key}.{uuid.uuid4().hex[:8]}"
            out.append(Message(id=mid, incident=inc.id, kind="apprise", title=title, body=body, level=index,
                               level_name=lv.name, channel=ci, label=display(ch), severity=inc.severity.label))
        if self.pagerduty is not None:
            mid = ids.get("pd") or f"{inc.id}.L{index}.{tag}.pd.{uuid.uuid4().hex[:8]}"
            out.append(Message(id=mid, incident=inc.id, kind="pagerduty", title=title, body=body, level=index,
                               level_name=lv.name if lv else "", label="PagerDuty", event_action="trigger",
                               severity=inc.severity.label,
                               custom={"level": lv.name if lv else "", "contacts": list(lv.contacts) if lv else []}))
        return out

    def enqueue(self, messages: Iterable[Message]) -> int:
        n = sum(1 for m in messages if self.outbox.put(m))
        self._changed()
        if self._wake is not None:
            self._wake.set()
        return n

    async def pagerduty_event(self, inc: Any, action: str) -> None:
        """Queue (and try) an acknowledge / resolve for the incident's PagerDuty incident."""
        if self.pagerduty is None or not inc.escalation.get("levels_sent"):
            return
        msg = Message(id=f"{inc.id}.pd.{action}", incident=inc.id, kind="pagerduty", title=inc.title,
                      body="", label="PagerDuty", event_action=action, severity=inc.severity.label)
        self.enqueue([msg])
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.flush(), self.timeout)

    def pending(self) -> list[Message]:
        return self.outbox.pending()

    def subscribe(self, fn: Callable[[], Any]) -> Callable[[], None]:
        """Called whenever the outbox changes (the escalate screen's pending list)."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def _changed(self) -> None:
        for fn in list(self._listeners):
            with contextlib.suppress(Exception):
                fn()

    # ------------------------------------------------------------------ sending

    async def _send(self, msg: Message) -> None:
        if msg.kind == "apprise":
            if not (0 <= msg.level < len(self.levels)) or not (0 <= msg.channel < len(self.levels[msg.level].channels)):
                raise SendError(f"channel {msg.label} is no longer configured", permanent=True)
            url = _with_id(reveal(self.levels[msg.level].channels[msg.channel]), msg.id)
            from .monitor import to_thread

            ok, why = await asyncio.wait_for(to_thread(_apprise_send, url, msg.title, msg.body), self.timeout + 5)
            if not ok:
                raise SendError(why or f"{msg.label} did not accept the notification")
        elif msg.kind == "pagerduty":
            await self._send_pagerduty(msg)
        else:
            raise SendError(f"unknown message kind {msg.kind!r}", permanent=True)

    def pagerduty_payload(self, msg: Message) -> dict:
        if self.pagerduty is None:
            raise SendError("PagerDuty is not configured", permanent=True)
        event: dict[str, Any] = {"routing_key": reveal(self.pagerduty.routing_key), "event_action": msg.event_action,
                                 "dedup_key": msg.incident}
        if msg.event_action == "trigger":
            sev = Severity.parse(msg.severity) if msg.severity else Severity.P1
            event["payload"] = {
                "summary": (msg.title or msg.incident)[:1024],
                "source": self.source,
                "severity": PD_SEVERITY[sev],
                "timestamp": msg.created_at or _iso(utcnow()),
                "component": "warroom",
                "custom_details": {"brief": msg.body[:8000], "message_id": msg.id, **msg.custom},
            }
            event["client"] = "warroom"
        return event

    async def _send_pagerduty(self, msg: Message) -> None:
        import aiohttp

        event = self.pagerduty_payload(msg)
        url = str(self.pagerduty.url)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as s, \
                    s.post(url, json=event, headers={ID_HEADER: msg.id}) as resp:
                text = (await resp.text())[:300]
                if resp.status in (200, 201, 202):
                    return
                permanent = 400 <= resp.status < 500 and resp.status != 429
                raise SendError(f"PagerDuty answered HTTP {resp.status}: {text}", permanent=permanent)
        except SendError:
            raise
        except Exception as exc:
            raise SendError(describe_exception(exc) or type(exc).__name__) from None

    async def flush(self, *, force: bool = False) -> tuple[int, int]:
        """Send every due message once. Returns (sent, failed). `force` ignores backoff."""
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        sent = failed = 0
        async with self._flush_lock:
            now = time.time()
            for msg in self.outbox.pending():
                if msg.status != "pending" or (not force and msg.next_attempt_at > now):
                    continue
                if msg.id in self.outbox.sent_ids():  # delivered by another process on this box
                    self.outbox.drop(msg.id)
                    continue
                msg.attempts += 1
                try:
                    await self._send(msg)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    reason = exc.reason if isinstance(exc, SendError) else describe_exception(exc)
                    msg.last_error = reason
                    if isinstance(exc, SendError) and exc.permanent:
                        msg.status = "dead"
                    delay = self.backoff[min(msg.attempts - 1, len(self.backoff) - 1)] if self.backoff else 1.0
                    msg.next_attempt_at = time.time() + delay
                    self.outbox.update(msg)
                    self.last_error = f"{msg.label}: {reason}"
                    failed += 1
                    continue
                self.outbox.mark_sent(msg)
                sent += 1
        if sent or failed:
            self._changed()
        return sent, failed

    async def retry(self, mid: str) -> None:
        """Operator: try a pending (or dead) message again now."""
        msg = self.outbox.get(mid)
        if msg is None:
            return
        msg.status, msg.next_attempt_at = "pending", 0.0
        self.outbox.update(msg)
        await self.flush()

    # ------------------------------------------------------------------ escalation

    async def escalate(self, manager: Any, incident_id: str, index: int, *, title: str, brief: str, by: str,
                       ids: Mapping[str, str] | None = None, auto: bool = False) -> tuple[Any, list[Message]]:
        """Record the escalation on the incident (atomically) and queue its messages."""
        queued: list[Message] = []
        now = self.clock()

        def fn(inc: Any) -> bool:
            esc = inc.escalation
            sent = list(esc.get("levels_sent") or [])
            if auto and (index in sent or esc.get("acked_at") or not inc.open):
                return False  # another console did it, or it was acknowledged meanwhile
            if not esc.get("started_at"):
                esc["started_at"] = now.isoformat()
            if index not in sent:
                sent.append(index)
            esc["levels_sent"] = sorted(sent)
            esc["brief"] = brief
            esc["title"] = title
            lv = self.levels[index] if 0 <= index < len(self.levels) else None
            msgs = self.messages_for(inc, index, title, brief, ids=ids, auto=auto)
            queued[:] = msgs
            labels = ", ".join(m.label for m in msgs) or "no channel"
            contacts = ", ".join(lv.contacts) if lv and lv.contacts else ""
            inc.add("escalation", (f"escalated automatically (no acknowledgement) to {lv.name if lv else index}"
                                   if auto else f"escalated to {lv.name if lv else index}")
                    + (f" ({contacts})" if contacts else "") + f" via {labels}", by, at=now,
                    action="escalate", level=lv.name if lv else str(index), result="queued",
                    summary=f"{len(msgs)} message(s)", messages=[m.id for m in msgs])
            return True

        inc = await manager.record_escalation(incident_id, fn)
        if queued:
            self.enqueue(queued)
        return inc, queued

    async def tick(self) -> list[tuple[str, int]]:
        """Contact the next level of every escalated, unacknowledged open incident whose time has come."""
        if self.manager is None or not self.levels:
            return []
        done = []
        now = self.clock()
        for inc in list(self.manager.open_incidents()):
            esc = inc.escalation or {}
            started = _parse(esc.get("started_at"))
            if started is None or esc.get("acked_at"):
                continue
            sent = set(esc.get("levels_sent") or [])
            top = max(sent) if sent else -1
            nxt = top + 1
            if nxt >= len(self.levels) or self.due_at(started, nxt) > now:
                continue
            brief = (f"No acknowledgement since {started.astimezone(UTC).strftime('%H:%M:%SZ')}: "
                     f"escalating to {self.levels[nxt].name}.\n\n" + str(esc.get("brief") or ""))
            _, msgs = await self.escalate(self.manager, inc.id, nxt, title=str(esc.get("title") or inc.title),
                                          brief=brief, by="warroom (automatic)", auto=True)
            if msgs:
                done.append((inc.id, nxt))
        return done

    # ------------------------------------------------------------------ loop

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="notify:loop")

    async def _run(self, period: float = 1.0) -> None:
        while True:
            try:
                await self.tick()
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = describe_exception(exc)
                log.warning("notifier: %s", self.last_error)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), period)
            self._wake.clear()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None


# --------------------------------------------------------------------------- the escalate action


class EscalateAction(Action):
    """Send the (reviewed) brief to an escalation level: its channels and PagerDuty."""

    id = "escalate"
    title = "Escalate"
    danger = Danger.CONFIRM
    description = "Send the brief to an escalation level (channels, PagerDuty); retried until delivered"

    def __init__(self, notifier: Notifier, manager: Any) -> None:
        self.notifier = notifier
        self.manager = manager

    async def plan(self, *, incident: str | None = None, level: Any = None, brief: str = "", title: str = "",
                   reason: str | None = None, **_: Any) -> ActionPlan:
        inc = self.manager.resolve_id(incident)
        if not inc.open:
            raise ActionRefused(self.id, f"{inc.id} is resolved")
        n = self.notifier
        if not n.levels and n.pagerduty is None:
            raise ActionRefused(self.id, "no escalation levels or PagerDuty configured ([escalation])")
        idx = n.level_index(level) if n.levels else -1
        brief = (brief or "").strip()
        if not brief:
            raise ActionRefused(self.id, "the brief is empty: review it before sending")
        title = (title or f"[{inc.severity.label}] {inc.title}").strip()
        lv = n.levels[idx] if idx >= 0 else None
        changes = [Change(target=lab, description=f"notify {lv.name if lv else 'PagerDuty'} via {lab}",
                          after="queued, retried until delivered") for lab in n.channels(idx)]
        if n.pagerduty is not None:
            changes.append(Change(target="PagerDuty", description=f"trigger, dedup_key={inc.id}",
                                  after=PD_SEVERITY[inc.severity]))
        ids = {f"ch{i}": f"{inc.id}.L{idx}.manual.ch{i}.{uuid.uuid4().hex[:8]}" for i in range(len(n.channels(idx)))}
        ids["pd"] = f"{inc.id}.L{idx}.manual.pd.{uuid.uuid4().hex[:8]}"
        contacts = ", ".join(lv.contacts) if lv and lv.contacts else "-"
        guard = Guard(bool(changes), f"{len(changes)} destination(s)" if changes else
                      f"level {lv.name if lv else '?'} has no channel and PagerDuty is not configured")
        return ActionPlan(
            action=self.id, title=f"Escalate {inc.id} to {lv.name if lv else 'PagerDuty'}", target=f"incident:{inc.id}",
            changes=tuple(changes), guard=guard, danger=Danger.CONFIRM,
            params={"incident": inc.id, "level": idx, "title": title, "brief": brief, "ids": ids},
            reason=reason, can_dry_run=False, lock_key=f"escalate:{inc.id}",
            preview=f"To: {lv.name if lv else 'PagerDuty'} (contacts: {contacts})\nSubject: {title}\n\n{brief}",
        )

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        p = plan.params
        n = self.notifier
        _, msgs = await n.escalate(self.manager, p["incident"], int(p["level"]), title=p["title"], brief=p["brief"],
                                   by=self.manager.operator, ids=p.get("ids"))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(n.flush(), n.timeout + 5)
        ids = {m.id for m in msgs}
        pending = [m for m in n.pending() if m.id in ids]
        sent = len(msgs) - len(pending)
        summary = f"{sent} of {len(msgs)} message(s) delivered"
        if pending:
            summary += f"; {len(pending)} pending in the outbox (retried with backoff): " + \
                       "; ".join(f"{m.label}: {m.last_error}" for m in pending[:3])
        return ActionResult(status="ok", summary=summary, counts={"sent": sent, "pending": len(pending)},
                            after={"messages": sorted(ids)})


async def incident_brief(engine: Any, inc: Any = None, *, level: int = 0, snapshot: Any = None,
                         hours: float = 24.0, log_wait: float = 2.0) -> str:
    """The escalation brief for an incident: who / what / since when, then the live brief
    (`backends.brief`: log errors, affected orders, timeline, steps attempted, RPC endpoints)."""
    from .brief import build_brief, render_brief

    lines: list[str] = []
    n = getattr(engine, "notifier", None)
    lv = n.levels[level] if n is not None and 0 <= level < len(n.levels) else None
    if inc is not None:
        roles = ", ".join(f"{r}: {p}" for r, p in inc.roles.items()) or "none assigned"
        lines += [f"INCIDENT {inc.id} [{inc.severity.label}] {inc.title}",
                  f"status {inc.status}; declared {inc.declared_at.strftime('%Y-%m-%d %H:%M:%SZ')} by "
                  f"{inc.declared_by}; {inc.sla().text()}",
                  f"impact: {inc.impact or 'under assessment'}; roles: {roles}"]
    if lv is not None:
        lines.append(f"for: {lv.name}" + (f" ({', '.join(lv.contacts)})" if lv.contacts else ""))
        if lv.provide:
            lines.append("asked for: " + "; ".join(lv.provide))
    try:
        brief = await build_brief(engine, hours=hours, snapshot=snapshot, log_wait=log_wait)
        body = render_brief(brief)
    except Exception as exc:  # the operator can still write the brief by hand
        body = f"(the live brief could not be built: {describe_exception(exc)})"
    if inc is not None and inc.timeline:
        body += "\n\nINCIDENT TIMELINE\n" + "\n".join(
            f"  {t.at.strftime('%H:%M:%SZ')} {t.kind}: {t.text.splitlines()[0] if t.text else ''}"
            + (f" ({t.by})" if t.by else "") for t in inc.timeline[-20:])
    return "\n".join(lines + ["", body]) if lines else body


def attach_notifier(engine: Any, manager: Any) -> Notifier:
    config = engine.config
    sd = getattr(config, "state_dir", None)
    if sd is None:
        import platformdirs

        sd = Path(platformdirs.user_state_dir("warroom"))
    w = getattr(config, "warroom", None)
    source = f"{getattr(w, 'name', '') or 'warroom'}@{socket.gethostname()}"
    notifier = Notifier(config, Outbox(Path(sd) / "outbox"), source=source)
    notifier.manager = manager
    manager.notifier = notifier
    engine.actions.register(EscalateAction(notifier, manager))
    engine.starters.append(notifier.start)
    engine.closers.append(notifier.stop)
    engine.notifier = notifier
    return notifier


__all__ = ["BACKOFF", "EscalateAction", "Message", "Notifier", "Outbox", "PD_SEVERITY", "SendError",
           "attach_notifier", "display", "incident_brief"]
