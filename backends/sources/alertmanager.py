"""Alertmanager (API v2) as a source, and its silences as actions.

`AlertmanagerSource` polls `GET /api/v2/alerts` (every alert not resolved: firing,
silenced, inhibited) and `GET /api/v2/silences` with a timeout and a size cap.
Readings:

- one `AlertReading` per alert: its labels, annotations, `startsAt`, state and the
  silences that mute it. The rule here turns each *firing* (active, not silenced or
  inhibited) alert into a `Finding` that started when the alert did, with its severity
  mapped from the alert's `severity` label (the map is per source: `critical` P1,
  `warning` P2, `info` P3 unless configured);
- one `SilenceReading` per silence that is active or pending;
- a summary `CheckReading` (kind "alertmanager": "3 firing, 1 silenced, 2 silences")
  and one per active silence (kind "alertmanager-silence"), which the services pane
  lists beside the other checks.

An Alertmanager that cannot be read is a failed poll (the source shows DEGRADED with
the reason, and the monitor's degraded finding says so): never "no alerts".

Actions (guard, preview, confirmation, audit by the action engine, refused in
read-only by the engine):

- `alertmanager.<name>.silence`: matchers (`alertname="X",instance=~"db.*"`, or the
  fingerprint of an alert to silence exactly that one), duration, comment;
  `createdBy` is the operator. The preview lists the alerts it would mute now.
- `alertmanager.<name>.expire`: a silence by id (or a unique prefix of an active one);
  the preview shows what it silences and who made it.

Tested against Alertmanager 0.25 (Debian).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from backends.actions.base import (
    Action,
    ActionPlan,
    ActionResult,
    Change,
    Danger,
    Guard,
    ProgressFn,
)
from backends.engine.rules import RuleContext, register, rule, settings_table
from backends.errors import ActionRefused, redact, register_secret
from backends.model import CheckReading, Finding, Reading, Severity, Status, utcnow
from backends.units import reveal

MAX_BODY = 8 * 1024 * 1024  # bytes of an /api/v2/alerts or /silences answer
DEFAULT_SEVERITY_MAP: Mapping[str, Severity] = {
    "critical": Severity.P1, "page": Severity.P1, "error": Severity.P2,
    "warning": Severity.P2, "info": Severity.P3, "none": Severity.P3,
}
MIN_SILENCE, MAX_SILENCE = 60.0, 30 * 86400.0


# --------------------------------------------------------------------------- readings


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertReading(Reading):
    """One alert Alertmanager holds (not resolved)."""

    name: str  # alertname
    fingerprint: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    starts_at: datetime | None = None
    state: str = "active"  # active | suppressed | unprocessed
    silenced_by: tuple[str, ...] = ()
    inhibited_by: tuple[str, ...] = ()
    generator_url: str = ""

    @property
    def firing(self) -> bool:
        return self.state in ("active", "unprocessed") and not self.silenced_by and not self.inhibited_by

    def describe(self) -> str:
        since = f" since {self.starts_at.astimezone(UTC):%H:%M:%S} UTC" if self.starts_at else ""
        state = "firing" if self.firing else ("silenced" if self.silenced_by else
                                              "inhibited" if self.inhibited_by else self.state)
        sev = self.labels.get("severity")
        return redact(f"alert {self.name}" + (f" ({sev})" if sev else "") + f" {state}{since}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SilenceReading(Reading):
    """One silence (active or pending)."""

    id: str
    matchers: tuple[str, ...] = ()
    state: str = "active"  # active | pending | expired
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    created_by: str = ""
    comment: str = ""

    @property
    def matchers_text(self) -> str:
        return ",".join(self.matchers)

    def describe(self) -> str:
        return redact(f"silence {self.id[:8]} ({self.state}) {self.matchers_text} until {_until(self.ends_at)} "
                      f"by {self.created_by or '?'}: {self.comment}")


@dataclass(frozen=True, slots=True)
class _Settings:
    severity: Mapping[str, Severity]
    severity_label: str = "severity"
    default: Severity = Severity.P2


# --------------------------------------------------------------------------- helpers


def parse_time(text: Any) -> datetime | None:
    """RFC 3339 from Alertmanager ('2026-12-02T23:37:46.331Z', nanoseconds allowed)."""
    if not isinstance(text, str) or not text:
        return None
    s = text.strip().replace("Z", "+00:00")
    if "." in s:  # Python takes at most 6 fraction digits
        head, rest = s.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        tz = rest[len(digits):]
        s = f"{head}.{digits[:6]}{tz}"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def matcher_text(m: Mapping[str, Any]) -> str:
    """An API matcher {name, value, isRegex, isEqual} as PromQL text: name=~"value"."""
    eq = m.get("isEqual", True)
    op = ("=~" if eq else "!~") if m.get("isRegex") else ("=" if eq else "!=")
    v = str(m.get("value", "")).replace("\\", "\\\\").replace('"', '\\"')
    return f'{m.get("name", "")}{op}"{v}"'


def parse_matchers(text: str) -> list[dict[str, Any]]:
    """'alertname="X", instance=~"db.*"' (braces optional) -> API matchers. ValueError on bad input."""
    from backends.sources.prometheus import parse_selector

    body = text.strip()
    if not body:
        raise ValueError("no matchers given")
    if not body.startswith("{"):
        body = "{" + body + "}"
    _, ms = parse_selector("__x__" + body)
    out = [{"name": m.label, "value": m.value, "isRegex": m.op in ("=~", "!~"),
            "isEqual": m.op in ("=", "=~")} for m in ms]
    if not out:
        raise ValueError("no matchers given")
    if all(_matches_empty(m) for m in out):
        raise ValueError("these matchers match every alert (each matches the empty string): "
                         'name one label, e.g. alertname="HighLatency"')
    return out


def _matches_empty(m: Mapping[str, Any]) -> bool:
    import re

    v = str(m["value"])
    hit = re.fullmatch(v, "") is not None if m["isRegex"] else v == ""
    return hit if m["isEqual"] else not hit


def _labels_match(labels: Mapping[str, str], matchers: Sequence[Mapping[str, Any]]) -> bool:
    import re

    for m in matchers:
        got = labels.get(str(m["name"]), "")
        hit = re.fullmatch(str(m["value"]), got) is not None if m["isRegex"] else got == m["value"]
        if hit != bool(m["isEqual"]):
            return False
    return True


def _until(dt: datetime | None) -> str:
    if dt is None:
        return "?"
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class AlertmanagerError(Exception):
    """Alertmanager answered with an error or could not be reached (reason is safe to show)."""


class AlertmanagerClient:
    """The documented v2 API over the shared aiohttp session: timeouts and a size cap."""

    def __init__(self, url: Any, *, timeout: float = 5.0, headers: Mapping[str, Any] | None = None) -> None:
        from backends.units import display_url

        plain = reveal(url)
        p = urlsplit(plain)
        if p.scheme not in ("http", "https") or not p.hostname:
            raise ValueError(f"Alertmanager URL must be http(s)://host:port, got {display_url(url)!r}")
        if p.password:
            register_secret(p.password)
        self.url = url
        self.timeout = float(timeout)
        self._headers = dict(headers or {})

    @property
    def base(self) -> str:
        base = reveal(self.url).rstrip("/")
        return base[: -len("/api/v2")] if base.endswith("/api/v2") else base

    @property
    def display(self) -> str:
        from backends.units import display_url

        return str(display_url(self.url))

    async def request(self, method: str, path: str, *, params: Sequence[tuple[str, str]] = (),
                      body: Any = None) -> Any:
        import json

        import aiohttp

        from backends.sources.http import (
            AnswerTooLarge,
            describe_http_error,
            get_session,
            read_capped,
        )

        new_session: Callable[[], Any] = get_session  # untyped in backends/sources/http.py
        url = self.base + path
        t_req = max(0.05, self.timeout * 0.9)
        headers = {"Accept": "application/json", **{k: reveal(v) for k, v in self._headers.items()}}
        try:
            async with asyncio.timeout(t_req):
                async with new_session().request(
                        method, url, params=list(params), json=body, headers=headers,
                        timeout=aiohttp.ClientTimeout(total=t_req)) as resp:
                    raw = await read_capped(resp, MAX_BODY)
                    status = int(resp.status)
        except AnswerTooLarge as exc:
            raise AlertmanagerError(f"{method} {path}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - reported with a safe reason
            raise AlertmanagerError(str(describe_http_error(exc, url, t_req))) from None
        if status >= 400:
            text = raw[:300].decode("utf-8", "replace").strip().strip('"')
            raise AlertmanagerError(redact(f"{method} {path}: HTTP {status}" + (f": {text}" if text else "")))
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise AlertmanagerError(f"{method} {path}: HTTP {status}, not JSON ({len(raw)} bytes)") from None

    async def alerts(self, filters: Sequence[str] = ()) -> list[dict[str, Any]]:
        params = [("active", "true"), ("silenced", "true"), ("inhibited", "true"), ("unprocessed", "true")]
        params += [("filter", f) for f in filters]
        data = await self.request("GET", "/api/v2/alerts", params=params)
        if not isinstance(data, list):
            raise AlertmanagerError("GET /api/v2/alerts: not a list of alerts")
        return [a for a in data if isinstance(a, dict)]

    async def silences(self) -> list[dict[str, Any]]:
        data = await self.request("GET", "/api/v2/silences")
        if not isinstance(data, list):
            raise AlertmanagerError("GET /api/v2/silences: not a list of silences")
        return [s for s in data if isinstance(s, dict)]

    async def silence(self, silence_id: str) -> dict[str, Any]:
        data = await self.request("GET", f"/api/v2/silence/{quote(silence_id, safe='')}")
        if not isinstance(data, dict):
            raise AlertmanagerError(f"silence {silence_id}: unreadable answer")
        return data

    async def create_silence(self, silence: Mapping[str, Any]) -> str:
        data = await self.request("POST", "/api/v2/silences", body=dict(silence))
        sid = data.get("silenceID") if isinstance(data, dict) else None
        if not sid:
            raise AlertmanagerError("POST /api/v2/silences: no silenceID in the answer")
        return str(sid)

    async def expire_silence(self, silence_id: str) -> None:
        await self.request("DELETE", f"/api/v2/silence/{quote(silence_id, safe='')}")


# --------------------------------------------------------------------------- source


def alert_reading(source: str, a: Mapping[str, Any]) -> AlertReading:
    labels = {str(k): str(v) for k, v in (a.get("labels") or {}).items()}
    annotations = {str(k): str(v) for k, v in (a.get("annotations") or {}).items()}
    st = a.get("status") or {}
    return AlertReading(
        source=source, name=labels.get("alertname", "(no alertname)"), fingerprint=str(a.get("fingerprint", "")),
        labels=labels, annotations=annotations, starts_at=parse_time(a.get("startsAt")),
        state=str(st.get("state", "active")), silenced_by=tuple(str(x) for x in st.get("silencedBy") or ()),
        inhibited_by=tuple(str(x) for x in st.get("inhibitedBy") or ()),
        generator_url=str(a.get("generatorURL") or ""),
    )


def silence_reading(source: str, s: Mapping[str, Any]) -> SilenceReading:
    return SilenceReading(
        source=source, id=str(s.get("id", "")),
        matchers=tuple(matcher_text(m) for m in s.get("matchers") or () if isinstance(m, Mapping)),
        state=str((s.get("status") or {}).get("state", "")), starts_at=parse_time(s.get("startsAt")),
        ends_at=parse_time(s.get("endsAt")), created_by=str(s.get("createdBy") or ""),
        comment=str(s.get("comment") or ""),
    )


class AlertmanagerSource:
    """Polls one Alertmanager: its alerts (findings by the rule below) and silences."""

    kind = "alertmanager"

    def __init__(
        self,
        name: str,
        url: Any,
        *,
        interval: float = 15.0,
        timeout: float = 5.0,
        severity: Mapping[str, Severity] | None = None,
        severity_label: str = "severity",
        default_severity: Severity = Severity.P2,
        filters: Sequence[str] = (),
        headers: Mapping[str, Any] | None = None,
        silence_duration: float = 7200.0,
    ) -> None:
        self.name = f"alertmanager.{name}"
        self.short = name
        self.client = AlertmanagerClient(url, timeout=timeout, headers=headers)
        self.interval = float(interval)
        self.timeout = float(timeout)
        self.filters = tuple(filters)
        self.silence_duration = float(silence_duration)
        sev = {k.lower(): v for k, v in (severity or DEFAULT_SEVERITY_MAP).items()}
        register("alertmanager")[self.name] = _Settings(sev, severity_label, default_severity)
        self.last_alerts: tuple[AlertReading, ...] = ()
        self.last_silences: tuple[SilenceReading, ...] = ()

    async def poll(self) -> Sequence[Reading]:
        alerts_raw, silences_raw = await asyncio.gather(self.client.alerts(self.filters), self.client.silences())
        alerts = tuple(alert_reading(self.name, a) for a in alerts_raw)
        silences = tuple(silence_reading(self.name, s) for s in silences_raw
                         if (s.get("status") or {}).get("state") in ("active", "pending"))
        self.last_alerts, self.last_silences = alerts, silences
        firing = [a for a in alerts if a.firing]
        muted = len(alerts) - len(firing)
        active = [s for s in silences if s.state == "active"]
        bits = [f"{len(firing)} firing"]
        if muted:
            bits.append(f"{muted} silenced or inhibited")
        bits.append(f"{len(active)} silence{'s' if len(active) != 1 else ''}")
        if len(silences) > len(active):
            bits.append(f"{len(silences) - len(active)} pending")
        if firing:
            names = sorted({a.name for a in firing})
            bits.append(", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else ""))
        summary = CheckReading(source=self.name, name=f"{self.short} alerts", kind="alertmanager",
                               ok=not firing, status=Status.WARN if firing else Status.OK,
                               detail="; ".join(bits))
        rows: list[Reading] = [summary]
        for s in active:
            rows.append(CheckReading(
                source=self.name, name=f"silence {s.id[:8]}", kind="alertmanager-silence", ok=True,
                status=Status.OK, detail=redact(f"{s.matchers_text} until {_until(s.ends_at)} by "
                                               f"{s.created_by or '?'}: {s.comment}")))
        return (*rows, *alerts, *silences)


def source_from_config(cfg: Any) -> AlertmanagerSource:
    """An AlertmanagerSource from an `[alertmanager.NAME]` table."""
    return AlertmanagerSource(
        cfg.name, cfg.url, interval=cfg.interval, timeout=cfg.timeout, severity=dict(cfg.severity),
        severity_label=cfg.severity_label, default_severity=cfg.default_severity, filters=tuple(cfg.filter),
        headers=dict(cfg.headers or {}), silence_duration=cfg.silence_duration)


# --------------------------------------------------------------------------- rule


def alert_severity(r: AlertReading, ctx: RuleContext | None) -> Severity:
    s = settings_table("alertmanager", ctx).get(r.source)
    if not isinstance(s, _Settings):
        s = _Settings(DEFAULT_SEVERITY_MAP)
    value = r.labels.get(s.severity_label, "").strip().lower()
    return s.severity.get(value, s.default)


@rule(AlertReading)
def alert_rules(r: AlertReading, ctx: RuleContext) -> Iterable[Finding]:
    if not r.firing:
        return
    text = r.annotations.get("summary") or r.annotations.get("description") or r.annotations.get("message") or ""
    where = r.labels.get("instance") or r.labels.get("service") or r.labels.get("job") or ""
    summary = r.name + (f" on {where}" if where else "") + (f": {text}" if text else "")
    evidence = ["labels: " + ", ".join(f"{k}={v}" for k, v in sorted(r.labels.items()))]
    for k in ("description", "runbook_url"):
        if r.annotations.get(k) and r.annotations.get(k) != text:
            evidence.append(f"{k}: {r.annotations[k]}")
    if r.starts_at is not None:
        evidence.append(f"firing since {r.starts_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC")
    if r.generator_url:
        evidence.append(f"source: {r.generator_url}")
    evidence.append(f"fingerprint: {r.fingerprint} (silence it: alert = \"{r.fingerprint}\")")
    yield Finding(key=f"alert:{r.source}:{r.fingerprint}", severity=alert_severity(r, ctx), source=r.source,
                  summary=redact(summary)[:300], evidence=tuple(redact(e)[:300] for e in evidence),
                  playbook="alertmanager-alert", target=f"alert:{r.source}:{r.fingerprint}",
                  since=r.starts_at or utcnow())


# --------------------------------------------------------------------------- actions


class SilenceAction(Action):
    """Create a silence: matchers (or one alert's fingerprint), duration, comment."""

    mutating = True
    danger = Danger.CONFIRM

    def __init__(self, source: AlertmanagerSource, *, operator: str | Callable[[], str] = "warroom",
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.source = source
        self.id = f"alertmanager.{source.short}.silence"
        self.title = f"Silence alerts in Alertmanager {source.short}"
        self.description = "Create an Alertmanager silence (matchers, duration, comment); it expires by itself"
        self._operator = operator
        self._clock = clock

    @property
    def operator(self) -> str:
        return self._operator() if callable(self._operator) else self._operator

    async def _alerts(self) -> list[AlertReading]:
        try:
            raw = await self.source.client.alerts(self.source.filters)
        except AlertmanagerError as exc:
            raise ActionRefused(self.id, f"Alertmanager {self.source.client.display}: {exc}") from None
        return [alert_reading(self.source.name, a) for a in raw]

    async def plan(self, *, matchers: str = "", alert: str = "", duration: Any = "", comment: str = "",
                   reason: str | None = None, **_: Any) -> ActionPlan:
        from backends.units import format_duration, parse_duration

        alerts = await self._alerts()
        alert = str(alert or "").strip().rpartition(":")[2]  # a finding's target "alert:<source>:<fingerprint>"
        if alert and not matchers:
            hits = [a for a in alerts if a.fingerprint == alert or a.fingerprint.startswith(alert)]
            if len(hits) != 1:
                raise ActionRefused(self.id, f"no single alert with fingerprint {alert!r} "
                                    f"({len(hits)} match; firing: " +
                                    ", ".join(f"{a.name} {a.fingerprint}" for a in alerts[:5] if a.firing) + ")")
            api_matchers = [{"name": k, "value": v, "isRegex": False, "isEqual": True}
                            for k, v in sorted(hits[0].labels.items())]
        else:
            if not matchers.strip():
                firing = sorted({a.name for a in alerts if a.firing})
                suggest = f'alertname="{firing[0]}"' if firing else ""
                raise ActionRefused(self.id, "which alerts? matchers like alertname=\"HighLatency\"" +
                                    (f" (firing: {', '.join(firing[:5])})" if firing else ""),
                                    ask=True, suggest={"matchers": suggest} if suggest else None, focus="matchers")
            try:
                api_matchers = parse_matchers(matchers)
            except ValueError as exc:
                raise ActionRefused(self.id, str(exc), focus="matchers") from None
        try:
            seconds = parse_duration(duration) if duration not in ("", None) else self.source.silence_duration
        except ValueError as exc:
            raise ActionRefused(self.id, f"duration: {exc}", focus="duration") from None
        if not MIN_SILENCE <= seconds <= MAX_SILENCE or math.isnan(seconds):
            raise ActionRefused(self.id, f"duration {format_duration(seconds)} is out of range "
                                f"({format_duration(MIN_SILENCE)}..{format_duration(MAX_SILENCE)})",
                                focus="duration")
        text = (comment or reason or "").strip()
        if not text:
            raise ActionRefused(self.id, "a comment is required: it is what everyone who sees the silence reads",
                                ask=True, focus="comment")
        now = self._clock()
        ends = now + timedelta(seconds=seconds)
        shown = ",".join(matcher_text(m) for m in api_matchers)
        muted = [a for a in alerts if _labels_match(a.labels, api_matchers)]
        firing_now = [a for a in muted if a.firing]
        body = {"matchers": api_matchers, "startsAt": iso(now), "endsAt": iso(ends),
                "createdBy": self.operator, "comment": text}
        lines = [f"Silence in Alertmanager {self.source.short} ({self.source.client.display})",
                 f"  matchers: {shown}",
                 f"  for {format_duration(seconds)}, until {_until(ends)}",
                 f"  created by: {self.operator}", f"  comment: {text}",
                 f"  mutes now: {len(firing_now)} firing alert(s)"
                 + (f", {len(muted) - len(firing_now)} already muted" if len(muted) > len(firing_now) else "")]
        lines += [f"    - {a.name} {a.fingerprint} " + ",".join(f"{k}={v}" for k, v in sorted(a.labels.items())
                                                               if k != "alertname") for a in muted[:20]]
        notes = () if muted else ("no alert matches these matchers now: the silence mutes future ones only",)
        return ActionPlan(
            action=self.id, title=self.title, target=f"alertmanager:{self.source.short}",
            changes=(Change(target=f"alertmanager:{self.source.short}", description=f"silence {shown}",
                            before={"muted_now": [a.fingerprint for a in muted]}, after=body),),
            guard=Guard(True, f"Alertmanager {self.source.short} answered ({len(alerts)} alert(s))"),
            danger=self.danger, params={"matchers": shown, "duration": seconds, "comment": text,
                                        **({"alert": alert} if alert else {})},
            reason=reason, preview=redact("\n".join(lines)), lock_key=f"alertmanager:{self.source.short}:{shown}",
            notes=notes)

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        body = dict(plan.changes[0].after)
        try:
            sid = await self.source.client.create_silence(body)
            got = silence_reading(self.source.name, await self.source.client.silence(sid))
        except AlertmanagerError as exc:
            return ActionResult(status="failed", summary=str(exc))
        if got.state not in ("active", "pending"):
            return ActionResult(status="failed", summary=f"silence {sid} was created but is {got.state}",
                                after={"silence_id": sid, "state": got.state})
        muted = plan.changes[0].before.get("muted_now", []) if isinstance(plan.changes[0].before, dict) else []
        return ActionResult(status="ok",
                            summary=f"silence {sid} ({got.matchers_text}) until {_until(got.ends_at)}; "
                                    f"{len(muted)} alert(s) muted",
                            after={"silence_id": sid, "state": got.state, "ends_at": body["endsAt"]},
                            counts={"muted": len(muted)})


class ExpireSilenceAction(Action):
    """Expire a silence now (its alerts fire again)."""

    mutating = True
    danger = Danger.CONFIRM

    def __init__(self, source: AlertmanagerSource) -> None:
        self.source = source
        self.id = f"alertmanager.{source.short}.expire"
        self.title = f"Expire a silence in Alertmanager {source.short}"
        self.description = "Expire an Alertmanager silence: the alerts it mutes fire again"

    async def _find(self, silence: str) -> SilenceReading:
        try:
            all_s = [silence_reading(self.source.name, s) for s in await self.source.client.silences()]
        except AlertmanagerError as exc:
            raise ActionRefused(self.id, f"Alertmanager {self.source.client.display}: {exc}") from None
        live = [s for s in all_s if s.state in ("active", "pending")]
        want = silence.strip()
        if not want:
            raise ActionRefused(self.id, "which silence? (" + (", ".join(
                f"{s.id[:8]} {s.matchers_text}" for s in live[:5]) or "none active") + ")",
                ask=True, suggest={"silence": live[0].id} if len(live) == 1 else None, focus="silence")
        exact = [s for s in all_s if s.id == want]
        hits = exact or [s for s in live if s.id.startswith(want)]
        if not hits:
            raise ActionRefused(self.id, f"no active silence {want!r}", nothing=True)
        if len(hits) > 1:
            raise ActionRefused(self.id, f"{want!r} names {len(hits)} silences: give more of the id",
                                focus="silence")
        return hits[0]

    async def plan(self, *, silence: str = "", reason: str | None = None, **_: Any) -> ActionPlan:
        s = await self._find(silence)
        muted = [a for a in self.source.last_alerts if s.id in a.silenced_by]
        lines = [f"Expire silence {s.id} in Alertmanager {self.source.short}",
                 f"  matchers: {s.matchers_text}", f"  created by {s.created_by or '?'}: {s.comment}",
                 f"  state: {s.state}, until {_until(s.ends_at)}",
                 f"  alerts it mutes (last poll): {len(muted)}"]
        lines += [f"    - {a.name} {a.fingerprint}" for a in muted[:20]]
        return ActionPlan(
            action=self.id, title=self.title, target=f"silence:{s.id}",
            changes=(Change(target=f"silence:{s.id}", description=f"expire silence {s.matchers_text}",
                            before={"state": s.state, "ends_at": iso(s.ends_at) if s.ends_at else None,
                                    "created_by": s.created_by, "comment": s.comment},
                            after={"state": "expired"}),),
            guard=Guard(s.state in ("active", "pending"), f"silence {s.id[:8]} is {s.state}"),
            danger=self.danger, params={"silence": s.id}, reason=reason, preview=redact("\n".join(lines)))

    async def check_guard(self, plan: ActionPlan) -> Guard:
        sid = str(plan.params.get("silence", ""))
        try:
            s = silence_reading(self.source.name, await self.source.client.silence(sid))
        except AlertmanagerError as exc:
            return Guard(False, "Alertmanager cannot be read", str(exc))
        return Guard(s.state in ("active", "pending"), f"silence {sid[:8]} is {s.state}")

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        sid = str(plan.params["silence"])
        try:
            await self.source.client.expire_silence(sid)
            got = silence_reading(self.source.name, await self.source.client.silence(sid))
        except AlertmanagerError as exc:
            return ActionResult(status="failed", summary=str(exc))
        if got.state != "expired":
            return ActionResult(status="failed", summary=f"silence {sid} is still {got.state}")
        return ActionResult(status="ok", summary=f"silence {sid} ({got.matchers_text}) expired",
                            after={"silence_id": sid, "state": got.state})


def actions_for(source: AlertmanagerSource, *, operator: str | Callable[[], str] = "warroom") -> list[Action]:
    return [SilenceAction(source, operator=operator), ExpireSilenceAction(source)]


class SilenceRouter(Action):
    """`alertmanager.silence` / `alertmanager.expire`: the playbook's one id for "silence this
    alert", routed to the Alertmanager the alert (a finding's target `alert:<source>:<fp>`)
    or the silence came from; with one Alertmanager configured, that one. The plan it
    returns is the source's own action's (`alertmanager.<name>.silence`), so the guard,
    execution and audit are that action's."""

    mutating = True
    danger = Danger.CONFIRM

    def __init__(self, verb: str, engine: Any, sources: Sequence[AlertmanagerSource]) -> None:
        self.verb = verb
        self.id = f"alertmanager.{verb}"
        self.title = "Silence the alert in Alertmanager" if verb == "silence" else "Expire a silence in Alertmanager"
        self.description = ("Create a silence from the alert's labels (duration, comment); it ends by itself"
                            if verb == "silence" else "Expire an Alertmanager silence: its alerts fire again")
        self.engine = engine
        self.sources = {src.name: src for src in sources}

    def _source_of(self, alert: str, source: str) -> AlertmanagerSource:
        wanted = (source or "").strip() or str(alert or "").strip().rpartition(":")[0]
        if wanted:
            for src in self.sources.values():
                if wanted in (src.name, src.short):
                    return src
        if len(self.sources) == 1:
            return next(iter(self.sources.values()))
        names = ", ".join(src.short for src in self.sources.values()) or "none"
        raise ActionRefused(self.id, f"which Alertmanager? (configured: {names})", ask=True, focus="source")

    async def _route(self, alert: str, source: str, **params: Any) -> ActionPlan:
        src = self._source_of(alert, source)
        if alert:
            params["alert"] = alert
        plan: ActionPlan = await self.engine.plan(f"alertmanager.{src.short}.{self.verb}", **params)
        return plan

    async def plan(self, *, alert: str = "", matchers: str = "", duration: Any = "", comment: str = "",
                   source: str = "", reason: str | None = None, **_: Any) -> ActionPlan:
        return await self._route(alert, source, matchers=matchers, duration=duration, comment=comment,
                                 reason=reason)

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:  # pragma: no cover
        raise ActionRefused(self.id, "a router never executes itself: its plan is the source's action's")


class ExpireRouter(SilenceRouter):
    """`alertmanager.expire`: a silence, in the Alertmanager it is in."""

    async def plan(self, *, silence: str = "", source: str = "", reason: str | None = None,
                   **_: Any) -> ActionPlan:
        return await self._route("", source, silence=silence, reason=reason)


def routers_for(engine: Any, sources: Sequence[AlertmanagerSource]) -> list[Action]:
    return [SilenceRouter("silence", engine, sources), ExpireRouter("expire", engine, sources)]

