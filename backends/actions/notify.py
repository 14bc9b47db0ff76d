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

PagerDuty (Events API v2, as documented): an acknowledge / resolve goes out only after
every earlier event of its dedup_key was accepted (202) - PagerDuty drops one that
arrives before its alert exists; 400 is a permanent refusal (kept as "dead" with
PagerDuty's errors), 429 and 5xx are retried, a Retry-After is honoured (after a 429
nothing goes to PagerDuty before it); the documented limits (routing key 32 characters,
dedup_key <= 255, summary <= 1024, body <= 512 KB) are enforced before sending, with a
clear error. With `change_events = true`, executed fixes are sent as Change Events
(`/v2/change/enqueue`). Email channels are sent as plain text (`format=text`,
`body_format=text`). `[escalation.alertmanager]` pushes escalations and findings to an
Alertmanager (backends/actions/amsink.py), driven from this notifier's loop.

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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
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
from backends.errors import ActionRefused, describe_exception, redact
from backends.model import Severity, utcnow
from backends.units import reveal

log = logging.getLogger(__name__)

BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# PagerDuty Events API v2 limits (developer-docs events-API-v2: 02-Trigger-Events, 01-Overview)
PD_ROUTING_KEY_LEN = 32
PD_DEDUP_MAX = 255
PD_SUMMARY_MAX = 1024
PD_BODY_MAX = 512 * 1024
PD_THROTTLE_WAIT = 30.0  # a 429 without Retry-After: PagerDuty suggests retrying 30 seconds apart
RETRY_AFTER_MAX = 3600.0
PD_SEVERITY = {Severity.P0: "critical", Severity.P1: "error", Severity.P2: "warning", Severity.P3: "info"}
ID_HEADER = "X-Warroom-Message-Id"


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat() if t else None


def _parse(t: Any) -> datetime | None:
    if not t:
        return None
    d = datetime.fromisoformat(str(t))
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def display(value: Any) -> str:
    """A channel as it may be shown: scheme://host[:port], never tokens."""
    if hasattr(value, "display"):
        return str(value.display())
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
    custom: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Message:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


class Outbox:
    """Messages on disk until delivered. Safe for several warroom processes on one box."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
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
    def locked(self, *, blocking: bool = True) -> Iterator[bool]:
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
    def __init__(self, reason: str, *, permanent: bool = False, retry_after: float | None = None,
                 throttled: bool = False) -> None:
        super().__init__(reason)
        self.reason = redact(reason)
        self.permanent = permanent
        self.retry_after = retry_after  # seconds the receiver asked us to wait (Retry-After)
        self.throttled = throttled  # 429: every event to this receiver waits, not only this one


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from an HTTP Retry-After header (delay-seconds or an HTTP-date), capped at an hour."""
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        secs = when.timestamp() - (time.time() if now is None else now)
    if secs != secs:  # NaN
        return None
    return max(0.0, min(secs, RETRY_AFTER_MAX))


def pagerduty_problems(pd: Any) -> list[str]:
    """What PagerDuty would refuse in `[escalation.pagerduty]`, in words (never the key itself)."""
    if pd is None:
        return []
    problems = []
    rk = reveal(pd.routing_key)
    if len(rk) != PD_ROUTING_KEY_LEN:
        problems.append(f"[escalation.pagerduty] routing_key has {len(rk)} characters; a PagerDuty Events API v2 "
                        f"integration key has {PD_ROUTING_KEY_LEN} (copy the service's Integration Key)")
    return problems


def _pd_body(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


def _cut_to(text: str, limit: int) -> str:
    """`text` within `limit` characters, the cut marked."""
    if len(text) <= limit:
        return text
    mark = " … [cut]"
    return text[: limit - len(mark)] + mark


def _pd_error_text(text: str) -> str:
    """': message: errors' from PagerDuty's error body ({"status", "message", "errors"})."""
    try:
        body = json.loads(text)
    except ValueError:
        return f": {text.strip()[:200]}" if text.strip() else ""
    if not isinstance(body, dict):
        return ""
    parts = [str(body.get("message") or body.get("status") or "")]
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        parts.append("; ".join(str(e) for e in errors[:5]))
    parts = [p for p in parts if p]
    return (": " + ": ".join(parts)) if parts else ""


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


EMAIL_SCHEMES = ("mailto", "mailtos", "email", "emails")


def _text_format(url: str) -> str:
    """Email channels send plain text (line breaks kept), never an HTML part: `format=text`
    unless the URL chose a format itself."""
    scheme = url.split("://", 1)[0].lower()
    _, sep, query = url.partition("?")
    if scheme not in EMAIL_SCHEMES or any(p.split("=", 1)[0].lower() == "format" for p in query.split("&") if p):
        return url
    return url + ("&" if sep else "?") + "format=text"


def _apprise_send(url: str, title: str, body: str) -> tuple[bool, str]:
    """One notification. The body is outside text made inert (`inert_block`) and declared
    plain text (`body_format=text`): a plugin that renders HTML or markdown gets it
    escaped by apprise, an email gets a text/plain part only."""
    import apprise

    from backends.sanitize import inert, inert_block

    ap = apprise.Apprise()
    if not ap.add(_text_format(url)):
        return False, "apprise does not understand this channel URL"
    capture: Any = apprise.LogCapture  # untyped in apprise
    with capture(level=logging.WARNING) as logs:
        ok = ap.notify(body=inert_block(body), title=inert(title, 1024), body_format=apprise.NotifyFormat.TEXT)
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
        self.engine_actions: Any = None  # the ActionEngine (to tell fixes from read-only actions)
        self.sink: Any = None  # backends.actions.amsink.AlertSink ([escalation.alertmanager])
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._flush_lock: asyncio.Lock | None = None
        self._pd_not_before = 0.0  # epoch seconds: PagerDuty's Retry-After after a 429
        self._listeners: list[Callable[[], Any]] = []
        self.last_error = ""
        # read-only (backends.engine.readonly.enforce_read_only): nothing is sent, refusals are audited
        self.is_read_only: Callable[[], bool] = lambda: False
        self.audit: Any = None
        self.operator = ""

    async def _writable(self, action: str, target: str) -> None:
        if self.is_read_only():
            from backends.engine.readonly import refuse

            await refuse(self.audit, action, target, operator=self._operator())

    def _operator(self) -> str:
        return self.operator or getattr(self.manager, "operator", "") or ""

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
        from backends.sanitize import inert, inert_block

        ids = dict(ids or {})
        title, body = inert(title, 1024), inert_block(body)  # outside text: inert in every message
        lv = self.levels[index] if 0 <= index < len(self.levels) else None
        out = []
        tag = "auto" if auto else "manual"
        for ci, ch in enumerate(lv.channels if lv else ()):
            key = f"ch{ci}"
            mid = ids.get(key) or f"{inc.id}.L{index}.{tag}.{key}.{uuid.uuid4().hex[:8]}"
            out.append(Message(id=mid, incident=inc.id, kind="apprise", title=title, body=body, level=index,
                               level_name=lv.name if lv else "", channel=ci, label=display(ch),
                               severity=inc.severity.label))
        if self.pagerduty is not None:
            mid = ids.get("pd") or f"{inc.id}.L{index}.{tag}.pd.{uuid.uuid4().hex[:8]}"
            out.append(Message(id=mid, incident=inc.id, kind="pagerduty", title=title, body=body, level=index,
                               level_name=lv.name if lv else "", label="PagerDuty", event_action="trigger",
                               severity=inc.severity.label,
                               custom={"level": lv.name if lv else "", "contacts": list(lv.contacts) if lv else []}))
        return out

    def enqueue(self, messages: Iterable[Message]) -> int:
        messages = list(messages)
        if self.is_read_only():
            from backends.engine.readonly import refuse_soon

            refuse_soon(self.audit, "escalate", ",".join(sorted({m.incident for m in messages})) or "outbox",
                        operator=self._operator())
        n = sum(1 for m in messages if self.outbox.put(m))
        self._changed()
        if self._wake is not None:
            self._wake.set()
        return n

    async def pagerduty_event(self, inc: Any, action: str) -> None:
        """Queue (and try) an acknowledge / resolve for the incident's PagerDuty incident; the
        Alertmanager sink's alerts of the incident follow at once (resolve: endsAt now)."""
        if not inc.escalation.get("levels_sent"):
            return
        if self.sink is not None and not self.is_read_only():
            await self.push_sink()
        if self.pagerduty is None:
            return
        await self._writable(f"escalate.pagerduty.{action}", f"incident:{inc.id}")
        msg = Message(id=f"{inc.id}.pd.{action}", incident=inc.id, kind="pagerduty", title=inc.title,
                      body="", label="PagerDuty", event_action=action, severity=inc.severity.label)
        self.enqueue([msg])
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.flush(), self.timeout)

    # executed fixes -> PagerDuty Change Events ([escalation.pagerduty] change_events = true)
    SKIP_CHANGE_PREFIXES = ("incident.", "console.", "escalate")

    def change_message(self, plan: Any, result: Any, *, mutating: bool = True) -> Message | None:
        """The Change Event for an executed action, or None (not configured, not a fix)."""
        pd = self.pagerduty
        if pd is None or not getattr(pd, "change_events", False) or not mutating:
            return None
        if str(plan.action).startswith(self.SKIP_CHANGE_PREFIXES) or result.status not in ("ok", "partial"):
            return None
        from backends.sanitize import inert

        open_ids = [i.id for i in self.manager.open_incidents()] if self.manager is not None else []
        summary = f"warroom: {plan.action} {plan.target} ({result.status})" + \
            (f": {inert(result.summary, 300)}" if result.summary else "")
        at = getattr(result, "finished_at", None) or utcnow()
        body = "\n".join(x for x in (f"action: {plan.action}", f"target: {plan.target}", f"result: {result.status}",
                                      f"summary: {result.summary}" if result.summary else "",
                                      f"reason: {plan.reason}" if plan.reason else "") if x)
        return Message(id=f"change.{uuid.uuid4().hex}", incident=open_ids[0] if open_ids else "", kind="pagerduty",
                       title=summary, body=body, label="PagerDuty change", event_action="change",
                       created_at=_iso(at) or "",
                       custom={"action": plan.action, "target": plan.target, "result": result.status,
                               "operator": self._operator(), "incidents": open_ids})

    def on_action(self, plan: Any, result: Any) -> None:
        """ActionEngine.on_result listener: an executed fix becomes a PagerDuty Change Event."""
        if self.is_read_only():
            return
        action = None
        with contextlib.suppress(Exception):
            action = self.engine_actions.get(plan.action) if self.engine_actions is not None else None
        msg = self.change_message(plan, result, mutating=bool(getattr(action, "mutating", True)))
        if msg is not None:
            self.enqueue([msg])

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
            from backends.engine.monitor import to_thread

            in_thread: Any = to_thread  # untyped in backends/engine/monitor.py
            ok, why = await asyncio.wait_for(in_thread(_apprise_send, url, msg.title, msg.body), self.timeout + 5)
            if not ok:
                raise SendError(why or f"{msg.label} did not accept the notification")
        elif msg.kind == "pagerduty":
            await self._send_pagerduty(msg)
        else:
            raise SendError(f"unknown message kind {msg.kind!r}", permanent=True)

    def pagerduty_payload(self, msg: Message) -> dict[str, Any]:
        """The Events API v2 body for a message, within PagerDuty's documented limits: routing key
        of 32 characters, dedup_key <= 255, summary <= 1024 (longer is cut, marked), the whole
        body <= 512 KB (the brief is cut to fit). Anything that still cannot fit is a permanent
        SendError saying which limit, never a request PagerDuty would refuse."""
        if self.pagerduty is None:
            raise SendError("PagerDuty is not configured", permanent=True)
        problems = pagerduty_problems(self.pagerduty)
        if problems:
            raise SendError("not sent: " + "; ".join(problems), permanent=True)
        from backends.sanitize import inert, inert_block

        rk = reveal(self.pagerduty.routing_key)
        if msg.event_action == "change":
            event: dict[str, Any] = {"routing_key": rk, "payload": {
                "summary": _cut_to(inert(msg.title or "warroom change", PD_SUMMARY_MAX), PD_SUMMARY_MAX),
                "source": self.source,
                "timestamp": msg.created_at or _iso(utcnow()),
                "custom_details": {"details": inert_block(msg.body, 8000), "message_id": msg.id, **msg.custom},
            }}
            return self._fit(event, ("payload", "custom_details", "details"))
        if msg.event_action not in ("trigger", "acknowledge", "resolve"):
            raise SendError(f"unknown PagerDuty event_action {msg.event_action!r}", permanent=True)
        if not msg.incident or len(msg.incident) > PD_DEDUP_MAX:
            raise SendError(f"not sent: the dedup_key ({len(msg.incident)} characters) must be 1 to "
                            f"{PD_DEDUP_MAX} characters (PagerDuty's limit)", permanent=True)
        event = {"routing_key": rk, "event_action": msg.event_action, "dedup_key": msg.incident}
        if msg.event_action == "trigger":
            sev = Severity.parse(msg.severity) if msg.severity else Severity.P1
            event["payload"] = {
                "summary": _cut_to(inert(msg.title or msg.incident, PD_SUMMARY_MAX), PD_SUMMARY_MAX),
                "source": self.source,
                "severity": PD_SEVERITY[sev],
                "timestamp": msg.created_at or _iso(utcnow()),
                "component": "warroom",
                "custom_details": {"brief": inert_block(msg.body, 8000), "message_id": msg.id, **msg.custom},
            }
            event["client"] = "warroom"
            return self._fit(event, ("payload", "custom_details", "brief"))
        return event

    @staticmethod
    def _fit(event: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
        """Cut the text at `path` until the JSON body is within PD_BODY_MAX bytes."""
        size = len(_pd_body(event))
        if size <= PD_BODY_MAX:
            return event
        holder: Any = event
        for k in path[:-1]:
            holder = holder.get(k) if isinstance(holder, dict) else None
        text = holder.get(path[-1]) if isinstance(holder, dict) else None
        if isinstance(text, str) and text:
            over = size - PD_BODY_MAX
            keep = max(0, len(text.encode()) - over - 200)
            holder[path[-1]] = text.encode()[:keep].decode(errors="ignore") + " … [cut to fit PagerDuty's 512 KB]"
            size = len(_pd_body(event))
        if size > PD_BODY_MAX:
            raise SendError(f"not sent: the PagerDuty event is {size:,} bytes; PagerDuty accepts at most "
                            f"{PD_BODY_MAX:,} (512 KB): shorten the custom details", permanent=True)
        return event

    async def _send_pagerduty(self, msg: Message) -> None:
        import aiohttp

        event = self.pagerduty_payload(msg)  # raises when PagerDuty is not configured
        pd = self.pagerduty
        url = str(pd.change_url if msg.event_action == "change" else pd.url) if pd is not None else ""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as s, \
                    s.post(url, data=_pd_body(event), headers={ID_HEADER: msg.id,
                                                               "Content-Type": "application/json"}) as resp:
                text = (await resp.text())[:600]
                if resp.status == 202 or resp.status in (200, 201):
                    return
                why = _pd_error_text(text)
                wait = parse_retry_after(resp.headers.get("Retry-After"))
                if resp.status == 429:
                    raise SendError(f"PagerDuty is throttling (HTTP 429){why}"
                                    + (f"; retrying after {wait:g}s (Retry-After)" if wait is not None else ""),
                                    retry_after=wait, throttled=True)
                if resp.status >= 500:
                    raise SendError(f"PagerDuty answered HTTP {resp.status}{why}", retry_after=wait)
                # 400 (and any other 4xx): the event is invalid; sending it again will not help
                raise SendError(f"PagerDuty refused the event (HTTP {resp.status}){why}", permanent=True)
        except SendError:
            raise
        except Exception as exc:
            raise SendError(describe_exception(exc) or type(exc).__name__) from None

    async def flush(self, *, force: bool = False) -> tuple[int, int]:
        """Send every due message once. Returns (sent, failed). `force` ignores backoff (not a
        receiver's Retry-After, and not the order of PagerDuty events).

        An acknowledge or resolve goes to PagerDuty only once every event queued before it for
        the same dedup_key (its trigger, an earlier acknowledge) was accepted (202): one queued
        while its trigger waits in backoff is held, since PagerDuty drops an acknowledge or
        resolve that arrives before the alert exists."""
        await self._writable("escalate.send", "outbox")
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        sent = failed = 0
        async with self._flush_lock:
            now = time.time()
            waiting: dict[str, Message] = {}  # dedup_key -> the earliest PagerDuty event still in the outbox
            for msg in self.outbox.pending():
                alert_event = msg.kind == "pagerduty" and msg.event_action != "change"
                before = waiting.get(msg.incident) if alert_event else None
                if alert_event and before is None and (msg.status == "pending" or msg.event_action == "trigger"):
                    # later events of this key wait for it (a refused acknowledge does not hold a resolve;
                    # a refused trigger does: PagerDuty has no alert for them)
                    waiting[msg.incident] = msg
                if msg.status != "pending":
                    continue
                if before is not None and msg.event_action != "trigger":
                    self._hold(msg, before)  # a trigger opens the alert by itself; it never waits
                    continue
                if msg.kind == "pagerduty" and now < self._pd_not_before:
                    continue  # PagerDuty throttled us: nothing to it before its Retry-After
                if not force and msg.next_attempt_at > now:
                    continue
                if msg.id in self.outbox.sent_ids():  # delivered by another process on this box
                    self.outbox.drop(msg.id)
                    if waiting.get(msg.incident) is msg:
                        del waiting[msg.incident]
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
                    if isinstance(exc, SendError) and exc.throttled:
                        delay = exc.retry_after if exc.retry_after is not None else max(delay, PD_THROTTLE_WAIT)
                        self._pd_not_before = time.time() + delay
                    elif isinstance(exc, SendError) and exc.retry_after is not None:
                        delay = max(delay, exc.retry_after)
                    msg.next_attempt_at = time.time() + delay
                    self.outbox.update(msg)
                    self.last_error = f"{msg.label}: {reason}"
                    failed += 1
                    continue
                self.outbox.mark_sent(msg)
                if waiting.get(msg.incident) is msg:
                    del waiting[msg.incident]
                sent += 1
        if sent or failed:
            self._changed()
        return sent, failed

    def _hold(self, msg: Message, before: Message) -> None:
        """`msg` waits for an earlier PagerDuty event of its dedup_key; say so in the outbox."""
        state = (f"refused: {before.last_error}; retry or drop it" if before.status == "dead"
                 else f"in backoff: {before.last_error}" if before.last_error else "not sent yet")
        why = f"waiting for the {before.event_action} {before.id} to be accepted by PagerDuty ({state})"
        if msg.last_error != why:
            msg.last_error = why
            self.outbox.update(msg)

    async def retry(self, mid: str) -> None:
        """Operator: try a pending (or dead) message again now."""
        await self._writable("escalate.retry", f"message:{mid}")
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
        await self._writable("escalate", f"incident:{incident_id}")
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
        if self.sink is not None:
            await self.push_sink()
        return inc, queued

    async def tick(self) -> list[tuple[str, int]]:
        """Contact the next level of every escalated, unacknowledged open incident whose time has come."""
        if self.manager is None or not self.levels or self.is_read_only():
            return []  # read-only: no automatic escalation from this process
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

    async def push_sink(self) -> None:
        """One push to the Alertmanager sink now (bounded by its timeout); errors in `sink.last_error`."""
        if self.sink is None or self.is_read_only():
            return
        incidents = list(self.manager.open_incidents()) if self.manager is not None else []
        await self.sink.push_soon(incidents)

    # ------------------------------------------------------------------ loop

    async def start(self) -> None:
        if self.is_read_only():
            return  # read-only: this process never sends (a console that may act does)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="notify:loop")

    async def _run(self, period: float = 1.0) -> None:
        while True:
            try:
                if not self.is_read_only():  # read-only set after the start: stop sending at once
                    await self.tick()
                    await self.flush()
                    if self.sink is not None and self.sink.due():
                        await self.push_sink()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = describe_exception(exc)
                log.warning("notifier: %s", self.last_error)
            wake = self._wake
            if wake is None:
                await asyncio.sleep(period)
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), period)
            wake.clear()

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
            problems = pagerduty_problems(n.pagerduty)
            if problems:
                changes[-1] = Change(target="PagerDuty", description="not sent: " + "; ".join(problems),
                                     after="kept in the outbox as refused")
        if n.sink is not None and getattr(n.sink.cfg, "escalations", True):
            changes.append(Change(target=f"Alertmanager {n.sink.display}",
                                  description=f"alert WarroomEscalation incident={inc.id} "
                                              f"level={lv.name if lv else idx}",
                                  after="firing until the incident is resolved"))
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
        if n.sink is not None:
            summary += (f"; Alertmanager {n.sink.display}: not pushed yet ({n.sink.last_error}), retried every "
                        f"{n.sink.interval:g}s" if n.sink.last_error else f"; alert pushed to Alertmanager {n.sink.display}")
        return ActionResult(status="ok", summary=summary, counts={"sent": sent, "pending": len(pending)},
                            after={"messages": sorted(ids)})


async def incident_brief(engine: Any, inc: Any = None, *, level: int = 0, snapshot: Any = None,
                         hours: float = 24.0, log_wait: float = 2.0) -> str:
    """The escalation brief for an incident: who / what / since when, then the live brief
    (`backends.engine.brief`: log errors, affected orders, timeline, steps attempted, RPC endpoints)."""
    from backends.engine.brief import build_brief, render_brief

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
    from backends.clock import clock_of

    clock = clock_of(engine)  # the engine's: escalation timers and message times
    notifier = Notifier(config, Outbox(Path(sd) / "outbox"), source=source, clock=clock.now)
    notifier.manager = manager
    manager.notifier = notifier
    engine.actions.register(EscalateAction(notifier, manager))
    notifier.engine_actions = engine.actions
    engine.actions.on_result(notifier.on_action)
    from backends.actions.amsink import sink_from_config

    notifier.sink = sink_from_config(config, warroom=source, clock=clock.now)
    if notifier.sink is not None:
        engine.monitor.subscribe(notifier.sink.observe)
    engine.starters.append(notifier.start)
    engine.closers.append(notifier.stop)
    engine.notifier = notifier
    return notifier


__all__ = ["BACKOFF", "EscalateAction", "Message", "Notifier", "Outbox", "PD_SEVERITY", "SendError",
           "attach_notifier", "display", "incident_brief"]
