"""HTTP checks (aiohttp, imported lazily): health endpoints and Prometheus `/metrics`.

`HttpCheck` -> one `CheckReading` per poll: GET (or another method) with the expected
status, expected JSON fields (dotted paths, e.g. seed 003's `status == "healthy"`,
`database == "connected"`), an optional body substring, and a latency threshold
(seed: 0.5 s) with a short latency history for a sparkline. External dependency
pings (0x, CoinGecko) are the same kind of check.

A check that fails (refused, no answer, 500, bad JSON) is a reading of its own with
`ok=False`, `status=CRIT` and the reason in `detail` -- the check ran, the target is
down -- returned before the source's timeout (the request gets 90 % of it).

`MetricsCheck` scrapes a Prometheus text endpoint and turns named samples (label
filters, sum/max/min/avg over matching series) into `CheckReading`s with warn/crit
thresholds, using prometheus-client's parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import math
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import describe_exception, redact, register_secret
from .model import CheckReading, Finding, Severity, Status
from .rules import RuleContext, rule

MAX_BODY = 1024 * 1024  # bytes read from a health endpoint
METRICS_MAX_BODY = 16 * 1024 * 1024
SEED_HEALTH_FIELDS = {"status": "healthy", "database": "connected"}  # seed 003 /api/v1/health


def reveal(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "reveal"):
        return str(value.reveal())
    return str(value)


def display_url(url: Any) -> str:
    """scheme://host:port/path, credentials masked, query string dropped (tokens live there)."""
    plain = reveal(url)
    try:
        p = urlsplit(plain)
    except ValueError:
        return redact(plain)
    netloc = p.hostname or ""
    if p.port:
        netloc += f":{p.port}"
    if p.username:
        netloc = f"{p.username}:********@{netloc}" if p.password else f"{p.username}@{netloc}"
    return redact(f"{p.scheme}://{netloc}{p.path}" + ("?…" if p.query else ""))


def _hostport(url: str) -> str:
    try:
        p = urlsplit(url)
        port = p.port or (443 if p.scheme == "https" else 80)
        return f"{p.hostname}:{port}"
    except ValueError:
        return "the server"


# --------------------------------------------------------------------------- sessions

_SESSIONS: dict[int, tuple[Any, weakref.ref]] = {}


def get_session():
    """One shared aiohttp session per event loop (keep-alive, reconnects by itself)."""
    import aiohttp

    loop = asyncio.get_running_loop()
    entry = _SESSIONS.get(id(loop))
    if entry is not None and entry[1]() is loop and not entry[0].closed:
        return entry[0]
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64, limit_per_host=8, ttl_dns_cache=60),
        trust_env=False,
        headers={"User-Agent": "warroom-check/0.1"},
    )
    _SESSIONS[id(loop)] = (session, weakref.ref(loop))
    return session


async def close_sessions() -> None:
    loop = asyncio.get_running_loop()
    entry = _SESSIONS.pop(id(loop), None)
    if entry is not None:
        with contextlib.suppress(Exception):
            await entry[0].close()


def describe_http_error(exc: BaseException, url: str, timeout: float) -> str:
    where = _hostport(url)
    name = type(exc).__name__
    if isinstance(exc, TimeoutError | asyncio.TimeoutError) or name in ("ServerTimeoutError",
                                                                          "ConnectionTimeoutError",
                                                                          "SocketTimeoutError"):
        return f"no answer from {where} within {timeout:g}s"
    os_err = getattr(exc, "os_error", None)
    if isinstance(os_err, OSError):
        if os_err.errno == errno.ECONNREFUSED or isinstance(os_err, ConnectionRefusedError):
            return f"connection refused at {where}"
        return redact(f"cannot connect to {where}: {os_err.strerror or os_err}")
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused at {where}"
    if name == "ServerDisconnectedError":
        return f"{where} closed the connection without answering"
    if isinstance(exc, ConnectionResetError) or name == "ClientOSError":
        return f"connection to {where} reset"
    if name == "InvalidURL":
        return "invalid URL"
    if name == "TooManyRedirects":
        return "too many redirects"
    return describe_exception(exc)


async def _read_body(resp, limit: int) -> bytes:
    """The body up to `limit` bytes (StreamReader.read(n) may return less than is there)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await resp.content.read(min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------- settings for rules


@dataclass(frozen=True, slots=True)
class _RuleSettings:
    severity: Severity = Severity.P2
    playbook: str | None = None
    target: str | None = None


_RULE_SETTINGS: dict[tuple[str, str], _RuleSettings] = {}


def _dig(obj: Any, path: str) -> tuple[bool, Any]:
    for part in path.split("."):
        if isinstance(obj, Mapping) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return False, None
    return True, obj


def _short(v: Any, n: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n - 1] + "…"


# --------------------------------------------------------------------------- HTTP check


class HttpCheck:
    """One HTTP endpoint: status, JSON fields, body text, latency."""

    kind = "http"

    def __init__(
        self,
        name: str,
        url: Any,
        *,
        expect_status: int | Sequence[int] = 200,
        expect_json: Mapping[str, Any] | None = None,
        expect_text: str | None = None,
        latency_warn: float = 0.5,
        timeout: float = 5.0,
        interval: float = 10.0,
        method: str = "GET",
        headers: Mapping[str, Any] | None = None,
        history: int = 30,
        severity: Severity = Severity.P2,
        playbook: str | None = None,
        target: str | None = None,
        source: str | None = None,
    ) -> None:
        plain = reveal(url)
        p = urlsplit(plain)
        if p.scheme not in ("http", "https") or not p.hostname:
            raise ValueError(f"check {name}: URL must be http(s)://host/..., got {display_url(url)!r}")
        if p.password:
            register_secret(p.password)
        self.name = source or name
        self.check = name
        self.url = url
        self.expect_status = (expect_status,) if isinstance(expect_status, int) else tuple(expect_status)
        self.expect_json = dict(expect_json or {})
        self.expect_text = expect_text
        self.latency_warn = float(latency_warn)
        self.timeout = float(timeout)
        self.interval = float(interval)
        self.method = method.upper()
        self._headers = dict(headers or {})
        for v in self._headers.values():
            if hasattr(v, "reveal"):
                register_secret(str(v.reveal()))
        self._history: deque[float] = deque(maxlen=max(1, history))
        _RULE_SETTINGS[(self.name, self.check)] = _RuleSettings(severity, playbook, target)

    @property
    def display(self) -> str:
        return display_url(self.url)

    @property
    def request_timeout(self) -> float:
        """Leave the monitor 10 % of the poll timeout to record the failure as a reading."""
        return max(0.05, self.timeout * 0.9)

    def _reading(self, **kw: Any) -> CheckReading:
        return CheckReading(source=self.name, name=self.check, kind="http", unit="ms",
                            history=tuple(self._history), **kw)

    async def poll(self) -> Sequence[CheckReading]:
        import aiohttp

        url = reveal(self.url)
        headers = {k: reveal(v) for k, v in self._headers.items()}
        t_req = self.request_timeout
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(t_req):
                async with get_session().request(
                    self.method, url, headers=headers, allow_redirects=True,
                    timeout=aiohttp.ClientTimeout(total=t_req),
                ) as resp:
                    body = await _read_body(resp, MAX_BODY)
                    status = resp.status
                    ctype = resp.headers.get("Content-Type", "")
        except Exception as exc:  # noqa: BLE001 - every failure is a reading with a reason
            return [self._reading(ok=False, status=Status.CRIT,
                                  detail=describe_http_error(exc, url, t_req))]
        latency = (time.perf_counter() - t0) * 1000.0
        self._history.append(round(latency, 3))
        problems: list[str] = []
        value: Any = round(latency, 1)
        if status not in self.expect_status:
            problems.append(f"HTTP {status} (expected {'/'.join(map(str, self.expect_status))})")
        if self.expect_json:
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                kind = ctype.split(";")[0] or "unknown content type"
                problems.append(f"response is not JSON ({kind}, {len(body)} bytes)")
            else:
                for path, want in self.expect_json.items():
                    found, got = _dig(data, path)
                    if not found:
                        problems.append(f"{path} missing")
                    elif got != want:
                        problems.append(f"{path} is {_short(got)} (expected {_short(want)})")
        if self.expect_text is not None and self.expect_text not in body.decode("utf-8", "replace"):
            problems.append(f"body lacks {_short(self.expect_text)}")
        slow = latency > self.latency_warn * 1000.0
        if problems:
            return [self._reading(ok=False, status=Status.CRIT, value=value, latency_ms=latency,
                                  http_status=status, detail=redact("; ".join(problems)))]
        detail = f"HTTP {status} in {latency:.0f} ms"
        if slow:
            detail += f" (slower than {self.latency_warn * 1000:.0f} ms)"
        return [self._reading(ok=True, status=Status.WARN if slow else Status.OK, value=value,
                              latency_ms=latency, http_status=status, detail=detail)]


# --------------------------------------------------------------------------- Prometheus


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric to read from /metrics: sample name (dots become underscores), label
    filter, how to combine matching series, and thresholds (above and/or below)."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    aggregate: str = "sum"  # sum | max | min | avg | count
    warn_above: float | None = None
    crit_above: float | None = None
    warn_below: float | None = None
    crit_below: float | None = None
    title: str | None = None
    unit: str = ""

    def __post_init__(self) -> None:
        if self.aggregate not in ("sum", "max", "min", "avg", "count"):
            raise ValueError(f"metric {self.name}: aggregate must be sum, max, min, avg or count")

    @property
    def sample_name(self) -> str:
        return self.name.replace(".", "_").replace("-", "_")

    @property
    def display(self) -> str:
        if self.title:
            return self.title
        if self.labels:
            return self.name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items())) + "}"
        return self.name

    def status(self, value: float) -> Status:
        if (self.crit_above is not None and value > self.crit_above) or (
            self.crit_below is not None and value < self.crit_below
        ):
            return Status.CRIT
        if (self.warn_above is not None and value > self.warn_above) or (
            self.warn_below is not None and value < self.warn_below
        ):
            return Status.WARN
        return Status.OK

    def threshold_text(self) -> str:
        parts = []
        for label, v in (("warn >", self.warn_above), ("crit >", self.crit_above),
                         ("warn <", self.warn_below), ("crit <", self.crit_below)):
            if v is not None:
                parts.append(f"{label} {v:g}")
        return ", ".join(parts)


def extract_metrics(text: str, specs: Sequence[MetricSpec]) -> list[tuple[float | None, int]]:
    """(aggregated value or None, matching series) per spec, from Prometheus text format."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted: dict[str, list[int]] = {}
    for i, s in enumerate(specs):
        wanted.setdefault(s.sample_name, []).append(i)
    values: list[list[float]] = [[] for _ in specs]
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            idxs = wanted.get(sample.name)
            if not idxs:
                continue
            for i in idxs:
                spec = specs[i]
                if all(sample.labels.get(k) == v for k, v in spec.labels.items()):
                    values[i].append(float(sample.value))
    out: list[tuple[float | None, int]] = []
    for spec, vals in zip(specs, values, strict=True):
        vals = [v for v in vals if not math.isnan(v)]
        if not vals:
            out.append((None, 0))
            continue
        agg = {
            "sum": sum,
            "max": max,
            "min": min,
            "avg": lambda xs: sum(xs) / len(xs),
            "count": len,
        }[spec.aggregate](vals)
        out.append((float(agg), len(vals)))
    return out


class MetricsCheck:
    """Scrape one /metrics endpoint; one CheckReading per configured metric."""

    kind = "metrics"

    def __init__(
        self,
        name: str,
        url: Any,
        metrics: Sequence[MetricSpec],
        *,
        timeout: float = 5.0,
        interval: float = 15.0,
        headers: Mapping[str, Any] | None = None,
        history: int = 30,
        severity: Severity = Severity.P2,
        playbook: str | None = None,
        target: str | None = None,
    ) -> None:
        if not metrics:
            raise ValueError(f"check {name}: no metrics configured")
        plain = reveal(url)
        p = urlsplit(plain)
        if p.scheme not in ("http", "https") or not p.hostname:
            raise ValueError(f"check {name}: URL must be http(s)://host/..., got {display_url(url)!r}")
        self.name = name
        self.url = url
        self.metrics = tuple(metrics)
        self.timeout = float(timeout)
        self.interval = float(interval)
        self._headers = dict(headers or {})
        self._history = {m.display: deque(maxlen=max(1, history)) for m in self.metrics}
        for m in self.metrics:
            _RULE_SETTINGS[(self.name, m.display)] = _RuleSettings(severity, playbook, target)

    async def _scrape(self) -> tuple[str, float]:
        import aiohttp

        url = reveal(self.url)
        headers = {"Accept": "text/plain;version=0.0.4", **{k: reveal(v) for k, v in self._headers.items()}}
        t_req = max(0.05, self.timeout * 0.9)
        t0 = time.perf_counter()
        async with asyncio.timeout(t_req):
            async with get_session().get(url, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=t_req)) as resp:
                body = await _read_body(resp, METRICS_MAX_BODY)
                if resp.status != 200:
                    raise _ScrapeError(f"HTTP {resp.status} from {display_url(self.url)}")
        return body.decode("utf-8", "replace"), (time.perf_counter() - t0) * 1000.0

    async def poll(self) -> Sequence[CheckReading]:
        url = reveal(self.url)
        t_req = max(0.05, self.timeout * 0.9)
        try:
            text, latency = await self._scrape()
            if len(text) > 256 * 1024:  # big pages parse in a thread, not on the loop
                from .monitor import to_thread

                results = await to_thread(extract_metrics, text, self.metrics)
            else:
                results = extract_metrics(text, self.metrics)
        except Exception as exc:  # noqa: BLE001 - every failure is a reading with a reason
            reason = str(exc) if isinstance(exc, _ScrapeError) else (
                f"cannot parse metrics: {describe_exception(exc)}" if isinstance(exc, ValueError)
                else describe_http_error(exc, url, t_req))
            return [
                CheckReading(source=self.name, name=m.display, kind="metrics", ok=False,
                             status=Status.UNKNOWN, unit=m.unit, detail=reason,
                             history=tuple(self._history[m.display]))
                for m in self.metrics
            ]
        out = []
        for m, (value, series) in zip(self.metrics, results, strict=True):
            hist = self._history[m.display]
            if value is None:
                out.append(CheckReading(source=self.name, name=m.display, kind="metrics", ok=False,
                                        status=Status.UNKNOWN, unit=m.unit, latency_ms=latency,
                                        http_status=200, detail=f"{m.sample_name} not found",
                                        history=tuple(hist)))
                continue
            hist.append(value)
            st = m.status(value)
            thresholds = m.threshold_text()
            detail = f"{value:g}{(' ' + m.unit) if m.unit else ''}" + (f" ({thresholds})" if thresholds else "")
            if series > 1:
                detail += f", {m.aggregate} of {series} series"
            out.append(CheckReading(source=self.name, name=m.display, kind="metrics", ok=st is Status.OK,
                                    status=st, value=value, unit=m.unit, latency_ms=latency,
                                    http_status=200, detail=detail, history=tuple(hist)))
        return out


class _ScrapeError(Exception):
    pass


# --------------------------------------------------------------------------- from config


def check_from_config(cfg: Any, *, default_interval: float = 10.0, default_timeout: float = 5.0):
    """An HttpCheck / MetricsCheck from a `[[checks]]` entry (kind http or metrics)."""
    interval = cfg.interval or default_interval
    timeout = cfg.timeout or default_timeout
    headers = dict(getattr(cfg, "headers", {}) or {})
    playbook = getattr(cfg, "playbook", None)
    if cfg.kind == "http":
        return HttpCheck(cfg.name, cfg.url, expect_status=cfg.expect_status, expect_text=cfg.expect,
                         expect_json=getattr(cfg, "expect_json", None), latency_warn=cfg.latency_warn,
                         timeout=timeout, interval=interval, headers=headers, severity=cfg.severity,
                         playbook=playbook)
    if cfg.kind == "metrics":
        spec = MetricSpec(cfg.metric, warn_above=cfg.warn_above, crit_above=cfg.crit_above,
                          warn_below=getattr(cfg, "warn_below", None), crit_below=getattr(cfg, "crit_below", None))
        return MetricsCheck(cfg.name, cfg.url, [spec], timeout=timeout, interval=interval, headers=headers,
                            severity=cfg.severity, playbook=playbook)
    raise ValueError(f"check {cfg.name}: kind {cfg.kind!r} is not an HTTP check")


# --------------------------------------------------------------------------- rules


@rule(CheckReading)
def http_rules(r: CheckReading, ctx: RuleContext) -> Iterable[Finding]:
    if r.kind not in ("http", "metrics"):
        return
    s = _RULE_SETTINGS.get((r.source, r.name), _RuleSettings())
    key = f"check:{r.source}:{r.name}"
    target = s.target or f"check:{r.name}"
    if r.status is Status.CRIT:
        yield Finding(key=key, severity=s.severity, source=r.source,
                      summary=f"{r.name}: {r.detail or 'check failed'}",
                      evidence=_evidence(r), playbook=s.playbook, target=target)
    elif r.status is Status.WARN:
        yield Finding(key=key, severity=Severity.P3, source=r.source,
                      summary=f"{r.name}: {r.detail or 'above its warning threshold'}",
                      evidence=_evidence(r), playbook=s.playbook, target=target)
    elif r.status is Status.UNKNOWN and r.kind == "metrics":
        yield Finding(key=key, severity=Severity.P3, source=r.source,
                      summary=f"{r.name}: {r.detail or 'unknown'}", evidence=_evidence(r), target=target)


def _evidence(r: CheckReading) -> tuple[str, ...]:
    out = []
    if r.http_status is not None:
        out.append(f"HTTP status: {r.http_status}")
    if r.latency_ms is not None:
        out.append(f"latency: {r.latency_ms:.0f} ms")
    if r.history:
        out.append("recent: " + ", ".join(f"{v:g}" for v in r.history[-5:]))
    return tuple(out)
