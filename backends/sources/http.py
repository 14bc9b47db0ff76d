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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from backends.engine.rules import RuleContext, register, rule, settings_table
from backends.errors import describe_exception, redact, register_secret
from backends.model import CheckReading, Finding, Severity, Status
from backends.units import display_url as display_url  # the one display_url, re-exported here
from backends.units import reveal as reveal  # the one reveal, re-exported here

if TYPE_CHECKING:
    import aiohttp

    from backends.sources.prometheus import PromQLCheck

MAX_BODY = 1024 * 1024  # bytes of a health endpoint's answer; a bigger one is a failed check
METRICS_MAX_BODY = 16 * 1024 * 1024
PARSE_IN_THREAD = 256 * 1024  # bodies bigger than this are parsed off the event loop
SEED_HEALTH_FIELDS = {"status": "healthy", "database": "connected"}  # seed 003 /api/v1/health


def _hostport(url: str) -> str:
    try:
        p = urlsplit(url)
        port = p.port or (443 if p.scheme == "https" else 80)
        return f"{p.hostname}:{port}"
    except ValueError:
        return "the server"


# --------------------------------------------------------------------------- sessions

_SESSIONS: dict[int, tuple[aiohttp.ClientSession, weakref.ref[asyncio.AbstractEventLoop]]] = {}


def get_session() -> aiohttp.ClientSession:
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


def format_size(n: int) -> str:
    """1048576 -> '1 MB', 52428800 -> '50 MB', 1536 -> '1.5 KB' (binary units, as Redis)."""
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v >= 10 or v == int(v) else f"{v:.1f} {unit}"
    return f"{n} bytes"


def too_large(size: int | None, limit: int) -> str:
    """The reason of an answer over the size cap: 'answer of 50 MB over the 1 MB limit'."""
    if size is None:
        return f"answer over the {format_size(limit)} limit (reading stopped at {format_size(limit)})"
    return f"answer of {format_size(size)} over the {format_size(limit)} limit"


async def read_capped(resp: Any, limit: int) -> bytes:
    """An aiohttp response's body, read incrementally and aborted past `limit` bytes
    (raises `AnswerTooLarge`): a 50 MB answer is never buffered. A declared
    Content-Length over the limit is refused before reading anything."""
    declared = resp.content_length
    if declared is not None and declared > limit:
        resp.close()
        raise AnswerTooLarge(declared, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await resp.content.read(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            resp.close()  # drop the connection: the rest is never read
            raise AnswerTooLarge(None, limit)
        chunks.append(chunk)
    return b"".join(chunks)


class AnswerTooLarge(Exception):
    def __init__(self, size: int | None, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(too_large(size, limit))


async def _read_body(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, at most `limit` bytes (else `AnswerTooLarge`)."""
    return await read_capped(resp, limit)


async def _loads(body: bytes) -> Any:
    """json.loads; a big body is parsed in a worker thread (off the event loop)."""
    if len(body) <= PARSE_IN_THREAD:
        return json.loads(body)
    from backends.engine.monitor import to_thread

    return await to_thread(json.loads, body)


# --------------------------------------------------------------------------- settings for rules


@dataclass(frozen=True, slots=True)
class _RuleSettings:
    severity: Severity = Severity.P2
    playbook: str | None = None
    target: str | None = None




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
        register("http")[(self.name, self.check)] = _RuleSettings(severity, playbook, target)

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

    async def _expect_problems(self, body: bytes, ctype: str) -> list[str]:
        """`expect`: a substring of the body, except a JSON array or object (`"[]"`, `"{}"`,
        `'{"paused": false}'`), which the whole JSON answer must equal: `expect = "[]"` on
        Alertmanager's /api/v2/alerts must not pass while an alert fires, and every alert
        holds `"silencedBy":[]`, so a substring test always passed."""
        want_text = self.expect_text or ""
        stripped = want_text.strip()
        if stripped[:1] in ("[", "{"):
            try:
                want = json.loads(stripped)
            except ValueError:
                want = None
            if want is not None:
                try:
                    got = await _loads(body)
                except (ValueError, UnicodeDecodeError, RecursionError):
                    kind = ctype.split(";")[0] or "unknown content type"
                    return [f"response is not JSON ({kind}, {len(body)} bytes; expected {_short(want_text)})"]
                if got == want:
                    return []
                if isinstance(got, list):
                    return [f"answer is a list of {len(got)} item(s) (expected {_short(want_text)})"]
                return [f"answer is {_short(got)} (expected {_short(want_text)})"]
        if want_text not in body.decode("utf-8", "replace"):
            return [f"body lacks {_short(want_text)}"]
        return []

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
        except AnswerTooLarge as exc:
            return [self._reading(ok=False, status=Status.CRIT, detail=str(exc))]
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
                data = await _loads(body)
            except (ValueError, UnicodeDecodeError, RecursionError):
                kind = ctype.split(";")[0] or "unknown content type"
                problems.append(f"response is not JSON ({kind}, {len(body)} bytes)")
            else:
                for path, want in self.expect_json.items():
                    found, got = _dig(data, path)
                    if not found:
                        problems.append(f"{path} missing")
                    elif got != want:
                        problems.append(f"{path} is {_short(got)} (expected {_short(want)})")
        if self.expect_text is not None:
            problems.extend(await self._expect_problems(body, ctype))
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
    filter (`labels` equality, or PromQL `matchers`: = != =~ !~), how to combine
    matching series, and thresholds (above and/or below).

    `quantile` (0 < q <= 1) reads a histogram from its `_bucket` series (summed by `le`
    over the matching series, PromQL's interpolation); `rate = True` reads a counter's
    per-second increase. Both over `window` seconds (default: since the previous
    scrape); a quantile before a second scrape is over everything since the process
    started (said in the detail), a rate waits for its second scrape."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    aggregate: str = "sum"  # sum | max | min | avg | count
    warn_above: float | None = None
    crit_above: float | None = None
    warn_below: float | None = None
    crit_below: float | None = None
    title: str | None = None
    unit: str = ""
    matchers: tuple[Any, ...] = ()  # backends.sources.prometheus.Matcher
    quantile: float | None = None
    rate: bool = False
    window: float | None = None

    def __post_init__(self) -> None:
        if self.aggregate not in ("sum", "max", "min", "avg", "count"):
            raise ValueError(f"metric {self.name}: aggregate must be sum, max, min, avg or count")
        if self.quantile is not None and not 0 < self.quantile <= 1:
            raise ValueError(f"metric {self.name}: quantile must be in (0, 1], e.g. 0.95")
        if self.quantile is not None and self.rate:
            raise ValueError(f"metric {self.name}: quantile and rate exclude each other "
                             "(a quantile is already over the window's observations)")

    @classmethod
    def from_selector(cls, selector: str, **kw: Any) -> MetricSpec:
        """MetricSpec('name{code=~"5..",method!="GET"}', ...) with PromQL matchers."""
        from backends.sources.prometheus import parse_selector

        name, matchers = parse_selector(selector)
        return cls(name, matchers=matchers, **kw)

    @property
    def sample_name(self) -> str:
        return self.name.replace(".", "_").replace("-", "_")

    @property
    def bucket_name(self) -> str:
        base = self.sample_name
        return base if base.endswith("_bucket") else base + "_bucket"

    @property
    def display(self) -> str:
        if self.title:
            return self.title
        out = self.name
        if self.labels or self.matchers:
            parts = [f'{k}="{v}"' for k, v in sorted(self.labels.items())] + [str(m) for m in self.matchers]
            out += "{" + ",".join(parts) + "}"
        if self.quantile is not None:
            out += f" p{self.quantile * 100:g}"
        elif self.rate:
            out += " rate"
        return out

    def selects(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.labels.items()) and all(
            m.matches(labels) for m in self.matchers)

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


@dataclass(slots=True)
class Collected:
    """What one scrape holds for one spec: plain values, counter series or histogram buckets."""

    values: list[float] = field(default_factory=list)
    series: dict[Any, float] = field(default_factory=dict)  # rate: series key -> counter value
    buckets: dict[Any, dict[float, float]] = field(default_factory=dict)  # quantile: series -> {le: count}
    family_type: str = ""  # the family's declared type, when the name is a family


def collect_metrics(text: str, specs: Sequence[MetricSpec]) -> list[Collected]:
    """One pass over Prometheus text format: what each spec reads (see `Collected`)."""
    from prometheus_client.parser import text_string_to_metric_families

    from backends.sources.prometheus import parse_le, series_key

    wanted: dict[str, list[int]] = {}
    for i, s in enumerate(specs):
        if s.quantile is not None:
            wanted.setdefault(s.bucket_name, []).append(i)
        elif s.rate:
            wanted.setdefault(s.sample_name, []).append(i)
            if not s.sample_name.endswith("_total"):
                wanted.setdefault(s.sample_name + "_total", []).append(i)
        else:
            wanted.setdefault(s.sample_name, []).append(i)
    out = [Collected() for _ in specs]
    families = {s.sample_name: i for i, s in enumerate(specs)}
    for family in text_string_to_metric_families(text):
        for fname in (family.name, family.name + "_total"):
            if fname in families:
                out[families[fname]].family_type = family.type
        for sample in family.samples:
            idxs = wanted.get(sample.name)
            if not idxs:
                continue
            for i in idxs:
                spec = specs[i]
                if not spec.selects(sample.labels):
                    continue
                value = float(sample.value)
                if spec.quantile is not None:
                    le = sample.labels.get("le")
                    if le is None:
                        continue
                    key = series_key(sample.labels, drop=("le",))
                    out[i].buckets.setdefault(key, {})[parse_le(le)] = value
                elif spec.rate:
                    out[i].series[series_key(sample.labels)] = value
                else:
                    out[i].values.append(value)
    return out


def _aggregate(spec: MetricSpec, vals: list[float]) -> float:
    if spec.aggregate == "max":
        return max(vals)
    if spec.aggregate == "min":
        return min(vals)
    if spec.aggregate == "avg":
        return sum(vals) / len(vals)
    if spec.aggregate == "count":
        return float(len(vals))
    return float(sum(vals))


def extract_metrics(text: str, specs: Sequence[MetricSpec]) -> list[tuple[float | None, int]]:
    """(aggregated value or None, matching series) per plain spec, from Prometheus text format."""
    out: list[tuple[float | None, int]] = []
    for spec, got in zip(specs, collect_metrics(text, specs), strict=True):
        vals = [v for v in got.values if not math.isnan(v)]
        out.append((_aggregate(spec, vals), len(vals)) if vals else (None, 0))
    return out


WAITING_FOR_SECOND_SCRAPE = "waiting for a second scrape"


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
        clock: Any = time.monotonic,
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
        self._history: dict[str, deque[float]] = {m.display: deque(maxlen=max(1, history))
                                                   for m in self.metrics}
        # per spec: earlier scrapes (monotonic time, counter series or buckets) for rates/quantiles
        self._past: dict[str, deque[tuple[float, Any]]] = {m.display: deque() for m in self.metrics}
        self._clock = clock
        for m in self.metrics:
            register("http")[(self.name, m.display)] = _RuleSettings(severity, playbook, target)

    async def _scrape(self) -> tuple[str, float]:
        import aiohttp

        url = reveal(self.url)
        headers = {"Accept": "text/plain;version=0.0.4", **{k: reveal(v) for k, v in self._headers.items()}}
        t_req = max(0.05, self.timeout * 0.9)
        t0 = time.perf_counter()
        new_session: Callable[[], Any] = get_session
        async with asyncio.timeout(t_req):
            async with new_session().get(url, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=t_req)) as resp:
                body = await _read_body(resp, METRICS_MAX_BODY)
                if resp.status != 200:
                    raise _ScrapeError(f"HTTP {resp.status} from {display_url(self.url)}")
        return body.decode("utf-8", "replace"), (time.perf_counter() - t0) * 1000.0

    def _base(self, m: MetricSpec, now: float, state: Any) -> tuple[float, Any] | None:
        """The earlier scrape to compare with (the newest one at least `window` old, else the
        oldest kept), after recording this one."""
        past = self._past[m.display]
        base: tuple[float, Any] | None = None
        if past:
            if m.window:
                older = [p for p in past if now - p[0] >= m.window]
                base = older[-1] if older else past[0]
                while len(past) > 1 and now - past[1][0] >= m.window:
                    past.popleft()  # keep one scrape older than the window, as the base
            else:
                base = past[-1]
                past.clear()
        past.append((now, state))
        return base

    def _window_text(self, m: MetricSpec, seconds: float) -> str:
        from backends.units import format_duration

        return f"over {format_duration(m.window if m.window else seconds)}"

    def _value(self, m: MetricSpec, got: Collected, now: float) -> tuple[float | None, int, str]:
        """(value or None, series, note or the reason there is no value)."""
        from backends.sources.prometheus import counter_delta, histogram_quantile

        if m.quantile is not None:
            if not got.buckets:
                hint = f"{m.bucket_name} not found"
                if got.family_type and got.family_type != "histogram":
                    hint += f" ({m.sample_name} is a {got.family_type}, not a histogram)"
                return None, 0, hint
            base = self._base(m, now, {k: dict(v) for k, v in got.buckets.items()})
            summed: dict[float, float] = {}
            if base is None:
                note = "since the process started (first scrape)"
                for b in got.buckets.values():
                    for le, c in b.items():
                        summed[le] = summed.get(le, 0.0) + c
            else:
                note = self._window_text(m, now - base[0])
                for key, b in got.buckets.items():
                    before = base[1].get(key, {})
                    reset = any(c < before.get(le, 0.0) for le, c in b.items())
                    for le, c in b.items():
                        summed[le] = summed.get(le, 0.0) + (c if reset else c - before.get(le, 0.0))
            q = histogram_quantile(m.quantile, summed)
            if math.isnan(q):
                if math.inf not in summed:
                    return None, len(got.buckets), f"{m.bucket_name} has no le='+Inf' bucket"
                return math.nan, len(got.buckets), f"no observations {note}"
            return q, len(got.buckets), note
        if m.rate:
            if not got.series:
                hint = f"{m.sample_name} not found"
                if got.family_type and got.family_type not in ("counter", "unknown", "untyped"):
                    hint += f" ({m.sample_name} is a {got.family_type}; a rate needs a counter)"
                return None, 0, hint
            base = self._base(m, now, dict(got.series))
            if base is None or now - base[0] <= 0:
                return None, len(got.series), WAITING_FOR_SECOND_SCRAPE + " (a rate needs two)"
            delta = counter_delta(got.series, base[1])
            return delta / (now - base[0]), len(got.series), "per second " + self._window_text(m, now - base[0])
        vals = [v for v in got.values if not math.isnan(v)]
        if not vals:
            hint = f"{m.sample_name} not found"
            if got.family_type == "histogram":
                hint += (f" ({m.sample_name} is a histogram: set quantile = 0.95 for its p95, "
                         f"or read {m.sample_name}_count / _sum)")
            elif got.family_type == "summary":
                hint += f" ({m.sample_name} is a summary: read {m.sample_name}_count / _sum)"
            return None, 0, hint
        return _aggregate(m, vals), len(vals), ""

    async def poll(self) -> Sequence[CheckReading]:
        url = reveal(self.url)
        t_req = max(0.05, self.timeout * 0.9)
        try:
            text, latency = await self._scrape()
            if len(text) > 256 * 1024:  # big pages parse in a thread, not on the loop
                from backends.engine.monitor import to_thread

                in_thread: Callable[..., Any] = to_thread  # untyped in backends/engine/monitor.py
                results = await in_thread(collect_metrics, text, self.metrics)
            else:
                results = collect_metrics(text, self.metrics)
        except Exception as exc:  # noqa: BLE001 - every failure is a reading with a reason
            reason = str(exc) if isinstance(exc, _ScrapeError | AnswerTooLarge) else (
                f"cannot parse metrics: {describe_exception(exc)}" if isinstance(exc, ValueError)
                else describe_http_error(exc, url, t_req))
            return [
                CheckReading(source=self.name, name=m.display, kind="metrics", ok=False,
                             status=Status.UNKNOWN, unit=m.unit, detail=reason,
                             history=tuple(self._history[m.display]))
                for m in self.metrics
            ]
        now = self._clock()
        out = []
        for m, got in zip(self.metrics, results, strict=True):
            hist = self._history[m.display]
            value, series, note = self._value(m, got, now)
            if value is None:
                out.append(CheckReading(source=self.name, name=m.display, kind="metrics", ok=False,
                                        status=Status.UNKNOWN, unit=m.unit, latency_ms=latency,
                                        http_status=200, detail=note, history=tuple(hist)))
                continue
            if math.isnan(value):  # a quantile with no observations in the window: nothing slow
                out.append(CheckReading(source=self.name, name=m.display, kind="metrics", ok=True,
                                        status=Status.OK, unit=m.unit, latency_ms=latency,
                                        http_status=200, detail=note, history=tuple(hist)))
                continue
            hist.append(value)
            st = m.status(value)
            thresholds = m.threshold_text()
            detail = f"{value:g}{(' ' + m.unit) if m.unit else ''}"
            if note:
                detail += f" {note}"
            if thresholds:
                detail += f" ({thresholds})"
            if series > 1:
                detail += (f", {m.aggregate} of {series} series" if m.quantile is None and not m.rate
                           else f", {series} series")
            out.append(CheckReading(source=self.name, name=m.display, kind="metrics", ok=st is Status.OK,
                                    status=st, value=value, unit=m.unit, latency_ms=latency,
                                    http_status=200, detail=detail, history=tuple(hist)))
        return out


class _ScrapeError(Exception):
    pass


# --------------------------------------------------------------------------- from config


def check_from_config(cfg: Any, *, default_interval: float = 10.0,
                      default_timeout: float = 5.0) -> HttpCheck | MetricsCheck | PromQLCheck:
    """An HttpCheck / MetricsCheck / PromQLCheck from a `[[checks]]` entry (kind http, metrics, promql)."""
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
        quantile = getattr(cfg, "quantile", None)
        unit = "s" if quantile is not None and cfg.metric.split("{")[0].strip().endswith("_seconds") else ""
        spec = MetricSpec.from_selector(
            cfg.metric, warn_above=cfg.warn_above, crit_above=cfg.crit_above,
            warn_below=getattr(cfg, "warn_below", None), crit_below=getattr(cfg, "crit_below", None),
            aggregate=getattr(cfg, "aggregate", None) or "sum", quantile=quantile,
            rate=bool(getattr(cfg, "rate", False)), window=getattr(cfg, "window", None), unit=unit)
        return MetricsCheck(cfg.name, cfg.url, [spec], timeout=timeout, interval=interval, headers=headers,
                            severity=cfg.severity, playbook=playbook)
    if cfg.kind == "promql":
        from backends.sources.prometheus import promql_check_from_config

        return promql_check_from_config(cfg, default_interval=interval, default_timeout=timeout)
    raise ValueError(f"check {cfg.name}: kind {cfg.kind!r} is not an HTTP check")


# --------------------------------------------------------------------------- rules


@rule(CheckReading)
def http_rules(r: CheckReading, ctx: RuleContext) -> Iterable[Finding]:
    if r.kind not in ("http", "metrics", "promql"):
        return
    s = settings_table("http", ctx).get((r.source, r.name), _RuleSettings())
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
    elif r.status is Status.UNKNOWN and r.kind in ("metrics", "promql") and not r.detail.startswith(
            WAITING_FOR_SECOND_SCRAPE):
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
