"""Prometheus: series selectors, histogram quantiles, counter rates and `kind = "promql"`.

Pure helpers used by the `/metrics` scraper in `backends/sources/http.py` (`MetricsCheck`):

- `parse_selector('http_requests_total{code=~"5..",method!="GET"}')` -> name and
  label matchers (`=`, `!=`, `=~`, `!~`; regexes fully anchored, as in PromQL);
- `histogram_quantile(q, buckets)`: PromQL's own interpolation over cumulative
  `_bucket` counts (`le` upper bounds, `+Inf` last);
- `counter_delta(now, before)`: the increase of a set of counter series between two
  scrapes, a counter that went down counted as a reset (from 0), as `rate()` does.

`PromQLCheck` asks a Prometheus server's documented HTTP API (`GET /api/v1/query`,
aiohttp with a timeout and a size cap) and turns the answer into one `CheckReading`
(`kind = "promql"`) with warn/crit thresholds; the findings come from the HTTP rule.
A query error, an unreachable server, a non-numeric answer or no series at all is
UNKNOWN with the reason (never a healthy reading), unless `empty = "ok"` says that an
empty answer means fine (alert-style queries: `rate(errors[5m]) > 0.1`).

Tested against Prometheus 2.42 (Debian) scraping prometheus_client's exposition.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backends.model import CheckReading, Severity, Status

PROMQL_MAX_BODY = 4 * 1024 * 1024  # bytes of a /api/v1/query answer; bigger is a failed check
MAX_SERIES_SHOWN = 3

# --------------------------------------------------------------------------- selectors

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:.\-]*"
_SELECTOR_RE = re.compile(rf"^\s*(?P<name>{_NAME})?\s*(?:\{{(?P<body>.*)\}})?\s*$", re.S)
_MATCHER_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)', re.S)
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n", "t": "\t"}


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher of a series selector."""

    label: str
    op: str  # = != =~ !~
    value: str

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"label {self.label}: bad regular expression {self.value!r}: {exc}") from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.label, "")  # a missing label is the empty string, as in PromQL
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        hit = re.fullmatch(self.value, got) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        v = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.label}{self.op}"{v}"'


def parse_selector(text: str) -> tuple[str, tuple[Matcher, ...]]:
    """'name{a="1",b=~"x|y"}' -> ('name', matchers). Raises ValueError with the reason."""
    m = _SELECTOR_RE.match(text)
    if m is None or not (m.group("name") or m.group("body")):
        raise ValueError(f"not a series selector: {text!r} (expected name or name{{label=\"value\"}})")
    name = m.group("name") or ""
    body = m.group("body") or ""
    matchers: list[Matcher] = []
    pos = 0
    while pos < len(body) and body[pos:].strip():
        mm = _MATCHER_RE.match(body, pos)
        if mm is None:
            raise ValueError(f"bad label matcher in {text!r} at {body[pos:pos + 20]!r} "
                             '(expected label="value", label!="value", label=~"regex" or label!~"regex")')
        value = re.sub(r"\\(.)", lambda g: _UNESCAPE.get(g.group(1), "\\" + g.group(1)), mm.group(3))
        if mm.group(1) == "__name__" and mm.group(2) == "=" and not name:
            name = value
        else:
            matchers.append(Matcher(mm.group(1), mm.group(2), value))
        pos = mm.end()
    if not name:
        raise ValueError(f"series selector {text!r} has no metric name")
    return name, tuple(matchers)


def matches_all(labels: Mapping[str, str], matchers: Sequence[Matcher]) -> bool:
    return all(m.matches(labels) for m in matchers)


# --------------------------------------------------------------------------- histograms


def parse_le(v: str) -> float:
    return math.inf if v in ("+Inf", "Inf", "+inf", "inf") else float(v)


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """PromQL's histogram_quantile over cumulative bucket counts {upper bound: count}.

    NaN when there are no observations or no +Inf bucket; the upper bound of the last
    finite bucket when the rank falls in +Inf; linear interpolation inside a bucket
    (from 0 for the first bucket when its bound is positive)."""
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if math.isnan(q) or not buckets:
        return math.nan
    bounds = sorted(buckets)
    if bounds[-1] != math.inf or len(bounds) < 2:
        return math.nan
    counts: list[float] = []
    running = 0.0
    for b in bounds:  # enforce monotonicity like Prometheus (scrapes are not atomic)
        running = max(running, float(buckets[b]))
        counts.append(running)
    total = counts[-1]
    if total <= 0:
        return math.nan
    rank = q * total
    i = next(k for k, c in enumerate(counts) if c >= rank)
    if i == len(bounds) - 1:
        return bounds[-2]
    if i == 0 and bounds[0] <= 0:
        return bounds[0]
    start = 0.0 if i == 0 else bounds[i - 1]
    end = bounds[i]
    below = 0.0 if i == 0 else counts[i - 1]
    inside = counts[i] - below
    if inside <= 0:
        return end
    return start + (end - start) * ((rank - below) / inside)


# --------------------------------------------------------------------------- counters

SeriesKey = tuple[tuple[str, str], ...]


def series_key(labels: Mapping[str, str], drop: Sequence[str] = ()) -> SeriesKey:
    return tuple(sorted((k, v) for k, v in labels.items() if k not in drop))


def counter_delta(now: Mapping[Any, float], before: Mapping[Any, float]) -> float:
    """The summed increase of counter series between two scrapes. A series that went
    down restarted (counted from 0); a series that is new counts from 0 too (its first
    increments are not lost: the first 5xx of a new `code` label shows at once)."""
    total = 0.0
    for key, v in now.items():
        b = before.get(key)
        total += v if b is None or v < b else v - b
    return total


# --------------------------------------------------------------------------- kind = "promql"


@dataclass(frozen=True, slots=True)
class _Settings:
    severity: Severity = Severity.P2
    playbook: str | None = None
    target: str | None = None


def _labels_text(metric: Mapping[str, str]) -> str:
    name = metric.get("__name__", "")
    rest = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{rest}}}" if rest else (name or "{}")


def _num(v: Any) -> float:
    return float(v)  # Prometheus sends sample values as strings: "1.5", "NaN", "+Inf"


class PromQLCheck:
    """One PromQL expression against a Prometheus server's `/api/v1/query`.

    The reading's value is the worst series (`aggregate = "max"`, the default; "min",
    "sum", "avg", "count") of an instant vector, or the scalar. Thresholds as the
    other checks (warn/crit above/below)."""

    kind = "promql"

    def __init__(
        self,
        name: str,
        url: Any,
        query: str,
        *,
        warn_above: float | None = None,
        crit_above: float | None = None,
        warn_below: float | None = None,
        crit_below: float | None = None,
        aggregate: str = "max",
        empty: str = "unknown",
        timeout: float = 5.0,
        interval: float = 15.0,
        headers: Mapping[str, Any] | None = None,
        history: int = 30,
        severity: Severity = Severity.P2,
        playbook: str | None = None,
        target: str | None = None,
        unit: str = "",
    ) -> None:
        from urllib.parse import urlsplit

        from backends.engine.rules import register
        from backends.errors import register_secret
        from backends.units import display_url, reveal

        if aggregate not in ("sum", "max", "min", "avg", "count"):
            raise ValueError(f"check {name}: aggregate must be sum, max, min, avg or count")
        if empty not in ("unknown", "ok", "crit"):
            raise ValueError(f"check {name}: empty must be unknown, ok or crit")
        if not query.strip():
            raise ValueError(f"check {name}: empty PromQL query")
        p = urlsplit(reveal(url))
        if p.scheme not in ("http", "https") or not p.hostname:
            raise ValueError(f"check {name}: URL must be http(s)://host:port of Prometheus, got {display_url(url)!r}")
        if p.password:
            register_secret(p.password)
        self.name = name
        self.url = url
        self.query = query.strip()
        self.warn_above, self.crit_above = warn_above, crit_above
        self.warn_below, self.crit_below = warn_below, crit_below
        self.aggregate = aggregate
        self.empty = empty
        self.timeout = float(timeout)
        self.interval = float(interval)
        self.unit = unit
        self._headers = dict(headers or {})
        from collections import deque

        self._history: deque[float] = deque(maxlen=max(1, history))
        register("http")[(self.name, self.name)] = _Settings(severity, playbook, target)

    @property
    def api_url(self) -> str:
        from backends.sources.http import reveal

        base = reveal(self.url).rstrip("/")
        return base if base.endswith("/api/v1/query") else base + "/api/v1/query"

    def status(self, value: float) -> Status:
        if (self.crit_above is not None and value > self.crit_above) or (
                self.crit_below is not None and value < self.crit_below):
            return Status.CRIT
        if (self.warn_above is not None and value > self.warn_above) or (
                self.warn_below is not None and value < self.warn_below):
            return Status.WARN
        return Status.OK

    def threshold_text(self) -> str:
        parts = [f"{label} {v:g}" for label, v in (("warn >", self.warn_above), ("crit >", self.crit_above),
                                                  ("warn <", self.warn_below), ("crit <", self.crit_below))
                 if v is not None]
        return ", ".join(parts)

    def _reading(self, status: Status, detail: str, **kw: Any) -> CheckReading:
        return CheckReading(source=self.name, name=self.name, kind="promql", ok=status is Status.OK,
                            status=status, unit=self.unit, detail=detail, history=tuple(self._history), **kw)

    async def fetch(self) -> tuple[int, Any, float]:
        """(HTTP status, decoded JSON, latency ms) of one instant query."""
        import aiohttp

        from backends.sources.http import _loads, get_session, read_capped, reveal

        new_session: Callable[[], Any] = get_session  # untyped in backends/sources/http.py
        session = new_session()

        headers = {"Accept": "application/json", **{k: reveal(v) for k, v in self._headers.items()}}
        t_req = max(0.05, self.timeout * 0.9)
        t0 = time.perf_counter()
        async with asyncio.timeout(t_req):
            async with session.get(self.api_url, params={"query": self.query}, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=t_req)) as resp:
                body = await read_capped(resp, PROMQL_MAX_BODY)
                status = resp.status
        latency = (time.perf_counter() - t0) * 1000.0
        try:
            data = await _loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise _PromError(f"HTTP {status}: not a Prometheus API answer ({len(body)} bytes of non-JSON)") from None
        return status, data, latency

    async def poll(self) -> Sequence[CheckReading]:
        from backends.errors import redact
        from backends.sources.http import AnswerTooLarge, describe_http_error

        t_req = max(0.05, self.timeout * 0.9)
        try:
            status, data, latency = await self.fetch()
        except (AnswerTooLarge, _PromError) as exc:
            return [self._reading(Status.UNKNOWN, redact(str(exc)))]
        except Exception as exc:  # noqa: BLE001 - every failure is a reading with a reason
            return [self._reading(Status.UNKNOWN, describe_http_error(exc, self.api_url, t_req))]
        if not isinstance(data, Mapping) or data.get("status") != "success":
            err = data.get("error") if isinstance(data, Mapping) else None
            kind = data.get("errorType") if isinstance(data, Mapping) else None
            why = f"{kind}: {err}" if kind and err else (err or f"HTTP {status}, not a Prometheus API answer")
            return [self._reading(Status.UNKNOWN, redact(f"query failed: {why}"), http_status=status,
                                  latency_ms=latency)]
        return [self._judge(data.get("data") or {}, status, latency)]

    def _judge(self, data: Mapping[str, Any], http_status: int, latency: float) -> CheckReading:
        rtype = data.get("resultType")
        result = data.get("result")
        series: list[tuple[str, float]] = []
        try:
            if rtype == "scalar" and isinstance(result, list):
                series = [("scalar", _num(result[1]))]
            elif rtype == "vector" and isinstance(result, list):
                series = [(_labels_text(s.get("metric") or {}), _num(s["value"][1])) for s in result]
            else:
                return self._reading(Status.UNKNOWN, f"the query returns a {rtype or 'strange'} result; "
                                     "an instant vector or a scalar is needed", http_status=http_status,
                                     latency_ms=latency)
        except (KeyError, IndexError, TypeError, ValueError):
            return self._reading(Status.UNKNOWN, "unreadable sample in the answer", http_status=http_status,
                                 latency_ms=latency)
        series = [(k, v) for k, v in series if not math.isnan(v)]
        if not series:
            st = {"ok": Status.OK, "crit": Status.CRIT}.get(self.empty, Status.UNKNOWN)
            return self._reading(st, "no series" + (" (empty = ok)" if st is Status.OK else
                                                    " match the query"), value=None,
                                 http_status=http_status, latency_ms=latency)
        values = [v for _, v in series]
        agg = {"sum": sum(values), "max": max(values), "min": min(values),
               "avg": sum(values) / len(values), "count": float(len(values))}[self.aggregate]
        if not math.isfinite(agg):
            return self._reading(Status.UNKNOWN, f"value is {agg}", http_status=http_status, latency_ms=latency)
        self._history.append(agg)
        st = self.status(agg)
        unit = f" {self.unit}" if self.unit else ""
        detail = f"{agg:g}{unit}"
        thresholds = self.threshold_text()
        if thresholds:
            detail += f" ({thresholds})"
        if len(series) > 1:
            detail += f", {self.aggregate} of {len(series)} series"
        if self.aggregate in ("max", "min"):
            worst = [k for k, v in series if v == agg][:1]
            if worst and worst[0] not in ("scalar", "{}"):
                detail += f": {worst[0]}"
        return self._reading(st, detail, value=agg, http_status=http_status, latency_ms=latency)


class _PromError(Exception):
    pass


def promql_check_from_config(cfg: Any, *, default_interval: float = 15.0,
                             default_timeout: float = 5.0) -> PromQLCheck:
    """A PromQLCheck from a `[[checks]] kind = "promql"` entry."""
    return PromQLCheck(
        cfg.name, cfg.url, cfg.query or "",
        warn_above=cfg.warn_above, crit_above=cfg.crit_above,
        warn_below=cfg.warn_below, crit_below=cfg.crit_below,
        aggregate=getattr(cfg, "aggregate", None) or "max",
        empty=getattr(cfg, "empty", None) or "unknown",
        timeout=cfg.timeout or default_timeout, interval=cfg.interval or default_interval,
        headers=dict(getattr(cfg, "headers", {}) or {}), severity=cfg.severity,
        playbook=getattr(cfg, "playbook", None),
    )
