"""HTTP checks against real local servers on 127.0.0.1 (aiohttp.web), incl. faults."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from aiohttp import web

from backends.engine.monitor import Monitor
from backends.engine.rules import evaluate, make_rules
from backends.model import Severity, Snapshot, SourceState, Status
from backends.sources.http import (
    SEED_HEALTH_FIELDS,
    HttpCheck,
    MetricsCheck,
    MetricSpec,
    check_from_config,
    close_sessions,
    display_url,
)


class Server:
    """A tiny programmable HTTP server on 127.0.0.1 (stoppable and restartable on one port)."""

    def __init__(self) -> None:
        self.health = {"status": "healthy", "database": "connected", "redis": "connected"}
        self.status = 200
        self.delay = 0.0
        self.raw: bytes | None = None
        self.metrics = b""
        self.metrics_status = 200
        self.port = 0
        self.hits = 0
        self.runner: web.AppRunner | None = None

    async def start(self) -> Server:
        app = web.Application()
        app.router.add_get("/api/v1/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _health(self, request):
        self.hits += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.raw is not None:
            return web.Response(body=self.raw, status=self.status, content_type="text/html")
        return web.json_response(self.health, status=self.status)

    async def _metrics(self, request):
        return web.Response(body=self.metrics, status=self.metrics_status,
                            content_type="text/plain")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/health"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"


@pytest.fixture
async def server():
    s = await Server().start()
    yield s
    await s.stop()
    await close_sessions()


@pytest.fixture
async def hanging():
    """A socket that accepts connections and never answers."""
    conns = []

    async def on_conn(reader, writer):
        conns.append(writer)
        await asyncio.Event().wait()

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    yield port
    for w in conns:
        w.close()
    srv.close()
    await close_sessions()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health_check(url: str, **kw) -> HttpCheck:
    kw.setdefault("expect_json", SEED_HEALTH_FIELDS)
    kw.setdefault("timeout", 2.0)
    return HttpCheck("api-gateway", url, **kw)


async def test_healthy_endpoint_reads_ok_with_latency_history(server):
    check = health_check(server.url)
    for _ in range(3):
        (r,) = await check.poll()
    assert r.ok and r.status is Status.OK and r.kind == "http"
    assert r.http_status == 200
    assert r.latency_ms is not None and 0 < r.latency_ms < 500
    assert len(r.history) == 3 and r.history[-1] == pytest.approx(r.latency_ms, abs=0.01)
    assert "HTTP 200" in r.detail
    assert evaluate(Snapshot(readings={check.name: (r,)})) == []


async def test_history_is_bounded(server):
    check = health_check(server.url, history=4)
    for _ in range(7):
        (r,) = await check.poll()
    assert len(r.history) == 4


async def test_expected_json_field_mismatch_is_critical_and_a_finding(server):
    server.health = {"status": "healthy", "database": "disconnected"}
    check = health_check(server.url, severity=Severity.P0, playbook="api-down")
    (r,) = await check.poll()
    assert not r.ok and r.status is Status.CRIT
    assert "database is 'disconnected' (expected 'connected')" in r.detail
    (f,) = evaluate(Snapshot(readings={check.name: (r,)}))
    assert f.severity is Severity.P0 and f.playbook == "api-down"
    assert "database" in f.summary


async def test_missing_field_and_nested_paths(server):
    server.health = {"status": "healthy", "deps": {"db": {"state": "up"}}}
    check = health_check(server.url, expect_json={"deps.db.state": "up", "database": "connected"})
    (r,) = await check.poll()
    assert r.status is Status.CRIT and r.detail == "database missing"


async def test_http_500_is_critical(server):
    server.status = 500
    (r,) = await health_check(server.url).poll()
    assert r.status is Status.CRIT and r.http_status == 500
    assert "HTTP 500 (expected 200)" in r.detail


async def test_bad_json_is_critical(server):
    server.raw = b"<html>502 Bad Gateway</html>"
    (r,) = await health_check(server.url).poll()
    assert r.status is Status.CRIT
    assert "not JSON" in r.detail and "text/html" in r.detail


async def test_expected_text(server):
    check = HttpCheck("ping", server.url, expect_text="healthy")
    (r,) = await check.poll()
    assert r.ok
    server.health = {"status": "down"}
    (r,) = await check.poll()
    assert not r.ok and "body lacks 'healthy'" in r.detail


async def test_slow_answer_is_a_warning_with_p3_finding(server):
    server.delay = 0.12
    check = health_check(server.url, latency_warn=0.05)
    (r,) = await check.poll()
    assert r.ok and r.status is Status.WARN
    assert r.latency_ms >= 120
    assert "slower than 50 ms" in r.detail
    (f,) = evaluate(Snapshot(readings={check.name: (r,)}))
    assert f.severity is Severity.P3


async def test_refused_is_a_critical_reading_not_an_exception():
    port = closed_port()
    check = health_check(f"http://127.0.0.1:{port}/api/v1/health")
    (r,) = await check.poll()
    assert r.status is Status.CRIT and not r.ok
    # at once, not after the timeout: the reason is the refusal, not a timeout
    assert r.detail == f"connection refused at 127.0.0.1:{port}"
    await close_sessions()


async def test_hanging_server_reads_critical_within_the_source_timeout_through_the_monitor(hanging):
    check = health_check(f"http://127.0.0.1:{hanging}/api/v1/health", timeout=0.5, interval=60)
    mon = Monitor([check], rules=make_rules())
    snap = await mon.poll_once()
    (r,) = snap.readings[check.name]
    assert r.status is Status.CRIT
    assert r.detail == f"no answer from 127.0.0.1:{hanging} within 0.45s"
    # the check ran; its target is down. Within the 0.5 s timeout: had the poll overrun it,
    # the monitor would have given up on the source (DEGRADED "timed out after 500ms")
    assert snap.sources[check.name].state is SourceState.OK
    assert any(f.key == f"check:{check.name}:api-gateway" for f in snap.findings)


async def test_recovers_when_the_server_comes_back(server):
    check = health_check(server.url, timeout=1.0)
    (r,) = await check.poll()
    assert r.ok
    await server.stop()
    (r,) = await check.poll()
    assert r.status is Status.CRIT and "refused" in r.detail
    await server.start()  # same port
    (r,) = await check.poll()
    assert r.ok, r.detail
    server.status = 503
    (r,) = await check.poll()
    assert not r.ok
    server.status = 200
    (r,) = await check.poll()
    assert r.ok


async def test_secrets_in_url_and_headers_never_show(server):
    url = f"http://ops:s3cr3t-pass@127.0.0.1:{server.port}/api/v1/health?token=tok-abcdef123"
    check = HttpCheck("gw", url, headers={"Authorization": "Bearer tok-abcdef123"})
    assert "s3cr3t-pass" not in check.display and "tok-abcdef123" not in check.display
    await server.stop()
    (r,) = await check.poll()
    assert "s3cr3t-pass" not in r.detail and "tok-abcdef123" not in r.detail
    assert display_url("https://u:p4ssword@example.invalid:8443/x?key=1") == "https://u:********@example.invalid:8443/x?…"


def test_bad_url_is_refused_at_build_time():
    with pytest.raises(ValueError):
        HttpCheck("x", "ftp://127.0.0.1/")


# --------------------------------------------------------------------------- metrics


def exposition() -> bytes:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    reg = CollectorRegistry()
    c = Counter("api_gateway_http_requests", "requests", ["code"], registry=reg)
    c.labels("200").inc(90)
    c.labels("500").inc(10)
    g = Gauge("event_processor_queue_depth", "depth", registry=reg)
    g.set(12000)
    h = Histogram("api_gateway_http_request_duration_seconds", "latency", registry=reg,
                  buckets=(0.1, 0.5, 1.0))
    for v in (0.05, 0.2, 0.7):
        h.observe(v)
    return generate_latest(reg)


async def test_metrics_values_labels_aggregates_and_thresholds(server):
    server.metrics = exposition()
    check = MetricsCheck("gw-metrics", server.metrics_url, [
        MetricSpec("event_processor.queue_depth", warn_above=1000, crit_above=10000),
        MetricSpec("api_gateway_http_requests_total", labels={"code": "500"}, warn_above=5, crit_above=50),
        MetricSpec("api_gateway_http_requests_total", title="all requests"),
        MetricSpec("api_gateway_http_request_duration_seconds_count", warn_below=1),
        MetricSpec("nope_total"),
    ], timeout=2.0)
    depth, errors, total, count, missing = await check.poll()
    assert depth.value == 12000 and depth.status is Status.CRIT and depth.kind == "metrics"
    assert "crit > 10000" in depth.detail
    assert errors.value == 10 and errors.status is Status.WARN
    assert errors.name == 'api_gateway_http_requests_total{code="500"}'
    assert total.value == 100 and total.status is Status.OK and "sum of 2 series" in total.detail
    assert count.value == 3 and count.status is Status.OK
    assert missing.status is Status.UNKNOWN and missing.detail == "nope_total not found"
    findings = {f.key: f for f in evaluate(Snapshot(readings={check.name: (depth, errors, total, count, missing)}))}
    assert findings[f"check:gw-metrics:{depth.name}"].severity is Severity.P2
    assert findings[f"check:gw-metrics:{errors.name}"].severity is Severity.P3
    assert f"check:gw-metrics:{total.name}" not in findings
    (depth2, *_) = await check.poll()
    assert depth2.history == (12000.0, 12000.0)


async def test_metrics_endpoint_failures_are_unknown_readings(server):
    server.metrics_status = 500
    check = MetricsCheck("m", server.metrics_url, [MetricSpec("x")], timeout=1.0)
    (r,) = await check.poll()
    assert r.status is Status.UNKNOWN and "HTTP 500" in r.detail
    server.metrics_status = 200
    server.metrics = b"this is { not prometheus\n"
    (r,) = await check.poll()
    assert r.status is Status.UNKNOWN and "cannot parse metrics" in r.detail
    await server.stop()
    (r,) = await check.poll()
    assert r.status is Status.UNKNOWN and "refused" in r.detail


async def test_metrics_big_page_parses_in_a_thread(server):
    lines = ["# TYPE filler gauge"] + [f'filler{{i="{i}"}} {i}' for i in range(20000)]
    lines += ["# TYPE depth gauge", "depth 7"]
    server.metrics = ("\n".join(lines) + "\n").encode()
    check = MetricsCheck("m", server.metrics_url, [MetricSpec("depth", warn_above=5),
                                                   MetricSpec("filler", aggregate="max")], timeout=5.0)
    depth, filler = await check.poll()
    assert depth.value == 7 and depth.status is Status.WARN
    assert filler.value == 19999


async def test_check_from_config(server):
    from backends.config import CheckConfig, Secret

    cfg = CheckConfig(name="coingecko", kind="http", url=Secret(server.url), expect_status=200,
                      expect="healthy", latency_warn=0.5, severity=Severity.P1)
    check = check_from_config(cfg)
    (r,) = await check.poll()
    assert r.ok and check.interval == 10.0
    server.metrics = exposition()
    mcfg = CheckConfig(name="depth", kind="metrics", url=Secret(server.metrics_url),
                       metric="event_processor_queue_depth", warn_above=100, crit_above=50000)
    (m,) = await check_from_config(mcfg).poll()
    assert m.value == 12000 and m.status is Status.WARN
    assert json.dumps(m.value)


async def test_checks_from_config_carry_playbook_and_below_thresholds(server):
    """[[checks]] kind metrics with crit_below / warn_below and kind http with a playbook, loaded
    from TOML: the findings point at the configured playbooks."""
    from backends.config import load_config_text

    server.metrics = b"# TYPE db_pool_free gauge\ndb_pool_free 2\n"
    cfg = load_config_text(
        '[[checks]]\nname = "db-pool"\nkind = "metrics"\n'
        f'url = "{server.metrics_url}"\nmetric = "db_pool_free"\n'
        'warn_below = 10\ncrit_below = 5\nseverity = "P1"\nplaybook = "db-pool-exhausted"\n'
        '\n[[checks]]\nname = "tee"\nkind = "http"\n'
        f'url = "{server.url}"\nexpect = "healthy"\nplaybook = "tee-failure"\n')
    pool_cfg, tee_cfg = cfg.checks
    pool, tee = check_from_config(pool_cfg), check_from_config(tee_cfg)
    (m,) = await pool.poll()
    assert m.value == 2 and m.status is Status.CRIT and "crit < 5" in m.detail
    (t,) = await tee.poll()
    assert t.ok
    server.status = 500
    (t,) = await tee.poll()
    assert t.status is Status.CRIT
    fs = {f.key: f for f in evaluate(Snapshot(readings={"db-pool": (m,), "tee": (t,)}))}
    f = fs["check:db-pool:db_pool_free"]
    assert f.playbook == "db-pool-exhausted" and f.severity is Severity.P1
    assert fs["check:tee:tee"].playbook == "tee-failure"
    # between crit_below and warn_below: a warning, still with its playbook
    server.metrics = b"# TYPE db_pool_free gauge\ndb_pool_free 7\n"
    (m,) = await pool.poll()
    assert m.status is Status.WARN
    (f,) = evaluate(Snapshot(readings={"db-pool": (m,)}))
    assert f.severity is Severity.P3 and f.playbook == "db-pool-exhausted"


async def test_an_answer_over_the_size_cap_is_a_failed_check(server):
    """A 50 MB health answer is refused at its declared size (nothing of it is read)."""
    server.raw = b"x" * (50 * 1024 * 1024)
    (r,) = await health_check(server.url).poll()
    assert r.status is Status.CRIT and r.detail == "answer of 50 MB over the 1 MB limit"
    server.raw = None
    (r,) = await health_check(server.url).poll()
    assert r.status is Status.OK  # heals at once


async def test_a_streamed_answer_is_cut_at_the_cap_never_buffered():
    """50 MB streamed without a Content-Length: read incrementally, aborted at 1 MB."""
    import tracemalloc

    sent = [0]

    async def on_conn(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        chunk = b"[" * 65536
        try:
            for _ in range(800):
                writer.write(chunk)
                await writer.drain()
                sent[0] += len(chunk)
        except ConnectionError:
            pass
        writer.close()

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    tracemalloc.start()
    try:
        (r,) = await health_check(f"http://127.0.0.1:{port}/api/v1/health").poll()
        _, peak = tracemalloc.get_traced_memory()
        assert r.status is Status.CRIT and "over the 1 MB limit" in r.detail
        assert peak < 8 * 1024 * 1024, peak
        assert sent[0] < 20 * 1024 * 1024  # the rest was never sent: the connection was dropped
    finally:
        tracemalloc.stop()
        srv.close()
        await close_sessions()
