"""A PagerDuty Events API v2 stand-in on 127.0.0.1 (aiohttp), strict about the documented schema.

The real PagerDuty is not reachable from the test box; this server answers as the
Events API v2 documentation says (PagerDuty/developer-docs docs/events-API-v2:
01-Overview "Response Codes & Retry Logic" and "Size Limits", 02-Trigger-Events
parameters, 03-Change-Events, 05-Rate-Limits; the events-v2 OpenAPI schema):

- POST /v2/enqueue (alert events) and POST /v2/change/enqueue (change events)
- 202 {"status": "success", "message": "Event processed", "dedup_key": ...}
- 400 {"status": "invalid event", "message": "Event object is invalid", "errors": [...]}
  for anything the documentation does not allow: a routing_key that is not 32
  characters, an unknown event_action, a dedup_key over 255 characters or missing on
  acknowledge/resolve, a trigger without payload.summary (<= 1024) / source /
  severity (critical|error|warning|info), a non-ISO-8601 timestamp, custom_details not
  an object, an unknown field, a body over 512 KB or not a JSON object
- 429 when throttled (`throttle(n, retry_after)`), with a Retry-After header when asked
- 500 when failing (`fail(n)`)

It also keeps the alerts PagerDuty would hold, keyed by (routing_key, dedup_key), and
applies the documented de-duplication rule: an acknowledge or resolve for a dedup_key
with no open alert is accepted (202) and then dropped - recorded in `dropped`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from . import free_port

MAX_BODY = 512 * 1024
ALERT_FIELDS = {"routing_key", "event_action", "dedup_key", "payload", "client", "client_url", "links", "images"}
PAYLOAD_FIELDS = {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}
CHANGE_FIELDS = {"routing_key", "payload", "links"}
CHANGE_PAYLOAD_FIELDS = {"summary", "source", "timestamp", "custom_details"}
SEVERITIES = {"critical", "error", "warning", "info"}
ACTIONS = {"trigger", "acknowledge", "resolve"}


def _timestamp_ok(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


def _links_errors(event: dict[str, Any], errors: list[str]) -> None:
    links = event.get("links")
    if links is None:
        return
    if not isinstance(links, list) or not all(isinstance(x, dict) and isinstance(x.get("href"), str) for x in links):
        errors.append("'links' must be an array of objects with an 'href'")


def alert_errors(event: Any) -> list[str]:
    if not isinstance(event, dict):
        return ["Event object is not a JSON object"]
    errors = [f"Unknown field '{k}'" for k in sorted(set(event) - ALERT_FIELDS)]
    rk = event.get("routing_key")
    if not isinstance(rk, str):
        errors.append("'routing_key' is missing or not a string")
    elif len(rk) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = event.get("event_action")
    if action not in ACTIONS:
        errors.append("'event_action' is missing or invalid (trigger, acknowledge or resolve)")
    dk = event.get("dedup_key")
    if dk is not None and (not isinstance(dk, str) or not dk):
        errors.append("'dedup_key' must be a non-empty string")
    elif isinstance(dk, str) and len(dk) > 255:
        errors.append("'dedup_key' is longer than 255 characters")
    if action in ("acknowledge", "resolve") and not dk:
        errors.append("'dedup_key' is required for acknowledge and resolve")
    if action == "trigger":
        p = event.get("payload")
        if not isinstance(p, dict):
            errors.append("'payload' is required for trigger events")
        else:
            errors += [f"Unknown field 'payload.{k}'" for k in sorted(set(p) - PAYLOAD_FIELDS)]
            s = p.get("summary")
            if not isinstance(s, str) or not s:
                errors.append("'payload.summary' is missing")
            elif len(s) > 1024:
                errors.append("'payload.summary' is longer than 1024 characters")
            if not isinstance(p.get("source"), str) or not p.get("source"):
                errors.append("'payload.source' is missing")
            if p.get("severity") not in SEVERITIES:
                errors.append("'payload.severity' is missing or invalid (critical, error, warning or info)")
            if "timestamp" in p and not _timestamp_ok(p["timestamp"]):
                errors.append("'payload.timestamp' is not an ISO 8601 timestamp")
            if "custom_details" in p and not isinstance(p["custom_details"], dict):
                errors.append("'payload.custom_details' must be an object")
            for k in ("component", "group", "class"):
                if k in p and not isinstance(p[k], str):
                    errors.append(f"'payload.{k}' must be a string")
    _links_errors(event, errors)
    return errors


def change_errors(event: Any) -> list[str]:
    if not isinstance(event, dict):
        return ["Event object is not a JSON object"]
    errors = [f"Unknown field '{k}'" for k in sorted(set(event) - CHANGE_FIELDS)]
    rk = event.get("routing_key")
    if not isinstance(rk, str) or len(rk) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    p = event.get("payload")
    if not isinstance(p, dict):
        errors.append("'payload' is required")
    else:
        errors += [f"Unknown field 'payload.{k}'" for k in sorted(set(p) - CHANGE_PAYLOAD_FIELDS)]
        s = p.get("summary")
        if not isinstance(s, str) or not s:
            errors.append("'payload.summary' is missing")
        elif len(s) > 1024:
            errors.append("'payload.summary' is longer than 1024 characters")
        if "timestamp" in p and not _timestamp_ok(p["timestamp"]):
            errors.append("'payload.timestamp' is not an ISO 8601 timestamp")
        if "custom_details" in p and not isinstance(p["custom_details"], dict):
            errors.append("'payload.custom_details' must be an object")
    _links_errors(event, errors)
    return errors


@dataclass
class Alert:
    dedup_key: str
    status: str  # triggered | acknowledged | resolved
    summary: str
    history: list[str] = field(default_factory=list)


class PagerDutyStandIn:
    """`await start()`; `.url` (POST alert events here), `.change_url`; then read
    `.accepted` (alert events, in arrival order), `.changes`, `.dropped`, `.rejected`
    (400s with their errors), `.throttled` (429s), `.alerts`."""

    def __init__(self) -> None:
        self.port = 0
        self.runner: web.AppRunner | None = None
        self.requests: list[tuple[str, Any]] = []  # (path, body) of every request, answered or not
        self.accepted: list[dict[str, Any]] = []
        self.changes: list[dict[str, Any]] = []
        self.dropped: list[dict[str, Any]] = []
        self.rejected: list[tuple[Any, list[str]]] = []
        self.throttled: list[dict[str, Any]] = []
        self.alerts: dict[tuple[str, str], Alert] = {}
        self._throttle_left = 0
        self._retry_after: str | None = None
        self._fail_left = 0
        self._fail_when: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/enqueue"

    @property
    def change_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/change/enqueue"

    def throttle(self, n: int, retry_after: str | None = None) -> None:
        """Answer the next `n` requests 429 (with `Retry-After: retry_after` when given)."""
        self._throttle_left, self._retry_after = n, retry_after

    def fail(self, n: int, when: Any = None) -> None:
        """Answer the next `n` requests (those `when(body)` is true for, if given) 500."""
        self._fail_left, self._fail_when = n, when

    def actions(self) -> list[str]:
        return [e["event_action"] for e in self.accepted]

    async def start(self) -> PagerDutyStandIn:
        app = web.Application(client_max_size=4 * MAX_BODY)
        app.router.add_post("/v2/enqueue", self._enqueue)
        app.router.add_post("/v2/change/enqueue", self._change)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.port = self.port or free_port()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _read(self, request: web.Request) -> tuple[Any, web.Response | None]:
        raw = await request.read()
        if len(raw) > MAX_BODY:
            self.rejected.append((None, ["payload over 512 KB"]))
            return None, web.json_response({"status": "invalid event", "message": "Event object is invalid",
                                            "errors": ["Event payload exceeds the 512 KB limit"]}, status=400)
        try:
            body = json.loads(raw)
        except ValueError:
            self.rejected.append((None, ["JSON parse error"]))
            return None, web.json_response({"status": "Unrecognized object",
                                            "message": "Event object format is unrecognized",
                                            "errors": ["JSON parse error"]}, status=400)
        self.requests.append((request.path, body))
        if self._throttle_left > 0:
            self._throttle_left -= 1
            self.throttled.append(body)
            headers = {"Retry-After": self._retry_after} if self._retry_after is not None else {}
            return body, web.json_response({"status": "throttle event", "message": "Requests for this service "
                                            "are arriving too quickly. Please retry later."},
                                           status=429, headers=headers)
        if self._fail_left > 0 and (self._fail_when is None or self._fail_when(body)):
            self._fail_left -= 1
            return body, web.json_response({"status": "error", "message": "Internal Server Error"}, status=500)
        return body, None

    def _invalid(self, body: Any, errors: list[str]) -> web.Response:
        self.rejected.append((body, errors))
        return web.json_response({"status": "invalid event", "message": "Event object is invalid",
                                  "errors": errors}, status=400)

    async def _enqueue(self, request: web.Request) -> web.Response:
        body, early = await self._read(request)
        if early is not None:
            return early
        errors = alert_errors(body)
        if errors:
            return self._invalid(body, errors)
        action, rk = body["event_action"], body["routing_key"]
        dk = body.get("dedup_key") or f"auto-{len(self.accepted)}"
        self.accepted.append(body)
        alert = self.alerts.get((rk, dk))
        if action == "trigger":
            if alert is None or alert.status == "resolved":
                alert = self.alerts[(rk, dk)] = Alert(dk, "triggered", body["payload"]["summary"])
            alert.history.append("trigger")
        elif alert is None or alert.status == "resolved":
            self.dropped.append(body)  # documented: acknowledge / resolve without an open alert is dropped
        else:
            alert.status = "acknowledged" if action == "acknowledge" else "resolved"
            alert.history.append(action)
        return web.json_response({"status": "success", "message": "Event processed", "dedup_key": dk}, status=202)

    async def _change(self, request: web.Request) -> web.Response:
        body, early = await self._read(request)
        if early is not None:
            return early
        errors = change_errors(body)
        if errors:
            return self._invalid(body, errors)
        self.changes.append(body)
        return web.json_response({"status": "success", "message": "Change event processed"}, status=202)
