"""Metric checks and `kind = "promql"` against a real Prometheus (Debian 2.42) scraping
PyPI prometheus_client's exposition (tests/harness/prometheus.py).

What warroom computes from /metrics (label matchers, histogram quantiles from
`_bucket`, counter rates) is held to what Prometheus itself answers for the same
series; PromQL checks ask the real server's /api/v1/query.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from backends.config import Secret, load_config_text
from backends.engine.rules import evaluate
from backends.model import Severity, Snapshot, Status
from backends.sources.http import MetricsCheck, MetricSpec, check_from_config
from backends.sources.prometheus import (
    Matcher,
    PromQLCheck,
    counter_delta,
    histogram_quantile,
    parse_selector,
)
from tests.harness import free_port
from tests.harness import prometheus as _prometheus_harness
from tests.harness.prometheus import JOB

prometheus = _prometheus_harness.prometheus  # the session fixture

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _prom_value(prometheus, promql: str) -> float:
    (r,) = prometheus.query(promql)
    return float(r["value"][1])


# --------------------------------------------------------------------------- pure parts


def test_selector_parsing_and_matching():
    name, ms = parse_selector('http_requests_total{code=~"5..", method!="OPTIONS",path!~"/health.*",job="api"}')
    assert name == "http_requests_total"
    assert [str(m) for m in ms] == ['code=~"5.."', 'method!="OPTIONS"', 'path!~"/health.*"', 'job="api"']
    ok = {"code": "503", "method": "GET", "path": "/v1/x", "job": "api"}
    assert all(m.matches(ok) for m in ms)
    assert not Matcher("code", "=~", "5..").matches({"code": "5030"})  # anchored, as PromQL
    assert Matcher("missing", "=", "").matches({})  # a missing label is ""
    assert parse_selector("event_processor.queue_depth") == ("event_processor.queue_depth", ())
    assert parse_selector('{__name__="up",job="x"}')[0] == "up"
    for bad in ('x{code="5', 'x{code=5}', "{}", 'x{a=~"("}'):
        with pytest.raises(ValueError):
            parse_selector(bad)


def test_histogram_quantile_edges_follow_promql():
    inf = math.inf
    assert math.isnan(histogram_quantile(0.95, {0.1: 0, inf: 0}))  # no observations
    assert math.isnan(histogram_quantile(0.5, {0.1: 3, 1.0: 4}))  # no +Inf bucket
    assert histogram_quantile(0.5, {0.1: 10, inf: 10}) == pytest.approx(0.05)  # from 0 in the first bucket
    assert histogram_quantile(0.99, {0.1: 1, 1.0: 1, inf: 10}) == 1.0  # in +Inf: the last finite bound
    assert histogram_quantile(0.5, {1.0: 5, 0.5: 6, inf: 10}) == pytest.approx(0.5 * 5 / 6)  # 1.0 raised to 6
    assert counter_delta({"a": 10, "b": 3}, {"a": 4, "b": 8}) == 6 + 3  # b restarted: counted from 0


# --------------------------------------------------------------------------- against Prometheus


async def test_the_erc8004_p95_check_matches_prometheus_histogram_quantile(prometheus, monkeypatch, tmp_path):
    """The example's api-p95-latency check (quantile = 0.95 of the gateway's histogram) reads
    the _bucket series and agrees with Prometheus's histogram_quantile on the same scrape;
    slow requests in the window make it CRIT with a finding."""
    from prometheus_client import Histogram

    from backends.config import load_config
    from tests.test_examples import DUMMY_ENV

    for k, v in DUMMY_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    cfg = load_config(EXAMPLES / "erc8004.toml")
    (chk,) = [c for c in cfg.checks if c.name == "api-p95-latency"]
    assert chk.quantile == 0.95 and chk.window == 300
    h = Histogram("api_gateway_http_request_duration_seconds", "gateway latency", ["route"],
                  registry=prometheus.target.registry)
    for i in range(100):
        h.labels("/v1/agents" if i % 2 else "/v1/feedback").observe(0.02 + 0.003 * i)  # 20..317 ms
    prometheus.wait_scrapes(2)
    clock = [1000.0]
    check = check_from_config(dataclasses.replace(chk, url=Secret(prometheus.target.url)))
    check._clock = lambda: clock[0]
    (r,) = await check.poll()
    want = _prom_value(prometheus, "histogram_quantile(0.95, sum by (le) "
                                   f'(api_gateway_http_request_duration_seconds_bucket{{job="{JOB}"}}))')
    assert r.value == pytest.approx(want, rel=1e-9)
    assert r.status is Status.OK and r.name == "api_gateway_http_request_duration_seconds p95"
    assert "since the process started" in r.detail and r.unit == "s"
    # 30 s later, 20 requests of 2.5-4 s: the window's p95 is over 2 s (crit)
    for i in range(20):
        h.labels("/v1/agents").observe(2.5 + 0.075 * i)
    clock[0] += 30
    (r,) = await check.poll()
    assert r.status is Status.CRIT and r.value > 2 and "over 5m" in r.detail and "crit > 2" in r.detail
    findings = {f.key: f for f in evaluate(Snapshot(readings={check.name: (r,)}))}
    f = findings["check:api-p95-latency:api_gateway_http_request_duration_seconds p95"]
    assert f.severity is Severity.P2 and "p95" in f.summary
    # no new requests for 6 minutes: nothing slow in the window, and the reading says so
    clock[0] += 360
    (r,) = await check.poll()
    (r,) = await check.poll()
    assert r.status is Status.OK and r.value is None and "no observations" in r.detail


async def test_a_histogram_named_without_quantile_says_what_to_do(prometheus):
    """The old p95 check (metric = a histogram's name, no quantile) said '... not found' for
    ever; now it says it is a histogram and how to read it."""
    from prometheus_client import Histogram

    Histogram("old_style_latency_seconds", "x", registry=prometheus.target.registry).observe(0.1)
    check = MetricsCheck("old", prometheus.target.url, [MetricSpec("old_style_latency_seconds", warn_above=0.5)])
    (r,) = await check.poll()
    assert r.status is Status.UNKNOWN
    assert "is a histogram: set quantile = 0.95" in r.detail


async def test_label_matchers_agree_with_prometheus(prometheus):
    from prometheus_client import Counter

    c = Counter("lm_requests", "requests", ["code", "method"], registry=prometheus.target.registry)
    for code, method, n in (("200", "GET", 50), ("500", "GET", 4), ("503", "POST", 3),
                            ("502", "OPTIONS", 9), ("404", "GET", 7)):
        c.labels(code, method).inc(n)
    prometheus.wait_scrapes(2)
    sel = 'lm_requests_total{code=~"5..",method!="OPTIONS"}'
    cfg = load_config_text(f'[[checks]]\nname = "errors"\nkind = "metrics"\nurl = "{prometheus.target.url}"\n'
                           f"metric = '{sel}'\nwarn_above = 5\ncrit_above = 100\n")
    (r,) = await check_from_config(cfg.checks[0]).poll()
    assert r.value == _prom_value(prometheus, f"sum({sel[:-1]},job=\"{JOB}\"}})") == 7
    assert r.status is Status.WARN and "sum of 2 series" in r.detail


async def test_counter_rate_from_two_scrapes(prometheus):
    """rate = true: the first scrape waits (no finding), then the per-second increase; a
    restarted counter (lower than before) is counted from 0."""
    from prometheus_client import Counter

    c = Counter("rt_jobs_failed", "failed jobs", ["queue"], registry=prometheus.target.registry)
    c.labels("mail").inc(10)
    clock = [0.0]
    spec = MetricSpec.from_selector('rt_jobs_failed{queue="mail"}', rate=True, warn_above=1, crit_above=5)
    check = MetricsCheck("failures", prometheus.target.url, [spec], clock=lambda: clock[0])
    (r,) = await check.poll()
    assert r.status is Status.UNKNOWN and r.detail.startswith("waiting for a second scrape")
    assert evaluate(Snapshot(readings={"failures": (r,)})) == []
    c.labels("mail").inc(60)
    clock[0] = 20.0
    (r,) = await check.poll()
    assert r.value == pytest.approx(3.0) and r.status is Status.WARN and "per second over 20s" in r.detail
    # Prometheus agrees the counter moved by 60 between those two values
    prometheus.wait_scrapes(2)
    assert _prom_value(prometheus, f'rt_jobs_failed_total{{queue="mail",job="{JOB}"}}') == 70


async def test_promql_check_against_the_server(prometheus):
    """kind = "promql": the value of the worst series, thresholds, findings; the query's own
    error, an empty answer and an unreachable server are UNKNOWN with the reason."""
    from prometheus_client import Gauge

    g = Gauge("pq_queue_depth", "depth", ["queue"], registry=prometheus.target.registry)
    g.labels("mail").set(120)
    g.labels("default").set(12000)
    prometheus.wait_scrapes(2)
    cfg = load_config_text(
        f'[[checks]]\nname = "depth"\nkind = "promql"\nurl = "{prometheus.url}"\n'
        f'query = \'pq_queue_depth{{job="{JOB}"}}\'\nwarn_above = 10000\ncrit_above = 50000\n'
        'severity = "P1"\nplaybook = "queue-overflow"\n')
    check = check_from_config(cfg.checks[0])
    assert isinstance(check, PromQLCheck)
    (r,) = await check.poll()
    assert r.kind == "promql" and r.value == 12000 and r.status is Status.WARN
    assert "max of 2 series" in r.detail and 'queue="default"' in r.detail
    (f,) = evaluate(Snapshot(readings={"depth": (r,)}))
    assert f.severity is Severity.P3 and f.playbook == "queue-overflow"
    g.labels("default").set(60000)
    prometheus.wait_scrapes(2)
    (r,) = await check.poll()
    assert r.status is Status.CRIT
    (f,) = evaluate(Snapshot(readings={"depth": (r,)}))
    assert f.severity is Severity.P1 and f.key == "check:depth:depth"
    # a scalar
    (r,) = await PromQLCheck("s", prometheus.url, "scalar(sum(pq_queue_depth))", crit_above=1).poll()
    assert r.value == 60120 and r.status is Status.CRIT
    # the query's error
    (r,) = await PromQLCheck("bad", prometheus.url, "sum(").poll()
    assert r.status is Status.UNKNOWN and r.detail.startswith("query failed: bad_data:")
    (f,) = evaluate(Snapshot(readings={"bad": (r,)}))
    assert f.severity is Severity.P3
    # nothing matches: UNKNOWN by default, OK when empty = "ok" (alert-style queries)
    (r,) = await PromQLCheck("none", prometheus.url, "pq_queue_depth > 1e9").poll()
    assert r.status is Status.UNKNOWN and "no series" in r.detail
    (r,) = await PromQLCheck("none", prometheus.url, "pq_queue_depth > 1e9", empty="ok").poll()
    assert r.status is Status.OK
    # a range vector is not a value
    (r,) = await PromQLCheck("range", prometheus.url, "pq_queue_depth[1m]").poll()
    assert r.status is Status.UNKNOWN and "matrix" in r.detail
    # nobody there
    (r,) = await PromQLCheck("gone", f"http://127.0.0.1:{free_port()}", "up", timeout=2).poll()
    assert r.status is Status.UNKNOWN and "connection refused" in r.detail


async def test_promql_answer_over_the_cap_is_refused(prometheus, monkeypatch):
    import backends.sources.prometheus as prom

    monkeypatch.setattr(prom, "PROMQL_MAX_BODY", 64)
    (r,) = await PromQLCheck("big", prometheus.url, f'up{{job="{JOB}"}}').poll()
    assert r.status is Status.UNKNOWN and "limit" in r.detail


async def test_promql_histogram_quantile_equals_the_metric_check(prometheus):
    from prometheus_client import Histogram

    h = Histogram("pqh_seconds", "x", buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=prometheus.target.registry)
    for i in range(40):
        h.observe(0.01 * i * i)
    prometheus.wait_scrapes(2)
    (mine,) = await MetricsCheck("m", prometheus.target.url, [MetricSpec("pqh_seconds", quantile=0.9)]).poll()
    (theirs,) = await PromQLCheck("p", prometheus.url,
                                  f'histogram_quantile(0.9, sum by (le) (pqh_seconds_bucket{{job="{JOB}"}}))').poll()
    assert mine.value == pytest.approx(theirs.value, rel=1e-9)


async def test_engine_builds_promql_checks(prometheus, tmp_path):
    from backends.engine.core import build_engine

    cfg = load_config_text(
        f'[warroom]\nstate_dir = "{tmp_path}"\n'
        f'[[checks]]\nname = "targets-up"\nkind = "promql"\nurl = "{prometheus.url}"\n'
        'query = "sum(up)"\ncrit_below = 1\n')
    engine = build_engine(cfg, with_logs=False)
    try:
        src = engine.monitor.sources["targets-up"]
        (r,) = await src.poll()
        assert r.status is Status.OK and r.value >= 1
    finally:
        await engine.stop()
