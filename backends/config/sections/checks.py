"""Parsing of [[checks]] and [alertmanager.NAME]."""

from __future__ import annotations

import re
from collections.abc import Mapping

from backends.config.base import _SECRET_NAME, BAD
from backends.config.converters import c_severity, c_str
from backends.config.crossref import _ref
from backends.config.loader import _Loader, _Table
from backends.config.model import AlertmanagerConfig, CheckConfig, PostgresConfig
from backends.config.schema import DEFAULT_ALERT_SEVERITY
from backends.config.types import Secret


def parse_checks(ld: _Loader, root: _Table, postgres: Mapping[str, PostgresConfig]) -> list[CheckConfig]:
    """[[checks]]"""
    checks = []
    for t in ld.array_of_tables(root.raw("checks"), ("checks",)):
        kind = t.take("kind")
        headers = {}
        ht = ld.table(t.raw("headers"), t.path + ("headers",)) if t.has("headers") else None
        if ht:
            for hname in list(ht.data):
                hv = ht.take(hname, c_str(empty=True))
                if hv is not BAD:
                    headers[hname] = Secret(hv) if _SECRET_NAME.search(hname) else hv
            ht.done()
        ck = CheckConfig(
            name=t.take("name"),
            kind=kind,
            url=t.take("url"),
            expect_status=t.take("expect_status"),
            expect=t.take("expect"),
            latency_warn=t.take("latency_warn"),
            timeout=t.take("timeout"),
            interval=t.take("interval"),
            severity=t.take("severity"),
            method=t.take("method"),
            params=t.take("params"),
            postgres=t.take("postgres"),
            query=t.take("query"),
            command=t.take("command"),
            metric=t.take("metric"),
            quantile=t.take("quantile"),
            rate=t.take("rate"),
            window=t.take("window"),
            aggregate=t.take("aggregate"),
            empty=t.take("empty"),
            warn_above=t.take("warn_above"),
            crit_above=t.take("crit_above"),
            warn_below=t.take("warn_below"),
            crit_below=t.take("crit_below"),
            path=t.take("path"),
            playbook=t.take("playbook"),
            headers=headers,
        )
        need = {"http": ("url",), "jsonrpc": ("url", "method"), "sql": ("postgres", "query"),
                "command": ("command",), "metrics": ("url", "metric"),
                "promql": ("url", "query")}.get(kind if kind is not BAD else "", ())
        for k in need:
            if getattr(ck, k) is None:
                ld.error(t.path, f"a {kind} check needs {k}", f"{k} = ...")
        if ck.postgres and ck.postgres is not BAD:
            _ref(ld, t.path + ("postgres",), ck.postgres, postgres, "postgres")
        if ck.kind == "metrics" and ck.metric and ck.metric is not BAD:
            from backends.sources.prometheus import parse_selector

            try:
                parse_selector(ck.metric)
            except ValueError as exc:
                ld.error(t.path + ("metric",), str(exc), 'a name or name{label="value",code=~"5.."}')
        if ck.quantile is not None and ck.rate is True:
            ld.error(t.path + ("rate",), "quantile and rate exclude each other",
                     "quantile = 0.95 for a histogram, or rate = true for a counter")
        if ck.kind != "metrics" and ck.quantile is not None:
            ld.error(t.path + ("quantile",), "quantile is for kind = \"metrics\" checks", "remove quantile")
        if ck.kind == "sql" and ck.query and ck.query is not BAD and \
                not re.match(r"(?is)^\s*(select|with|show)\b", ck.query):
            ld.error(t.path + ("query",), "a check query must be read-only", "a SELECT, WITH or SHOW statement")
        checks.append(ck)
        t.done()
    return checks


def parse_alertmanager(ld: _Loader, root: _Table) -> dict[str, AlertmanagerConfig]:
    """[alertmanager.NAME]"""
    alertmanagers: dict[str, AlertmanagerConfig] = {}
    for name, t in ld.named_tables(root.raw("alertmanager"), ("alertmanager",)):
        sev_map = dict(DEFAULT_ALERT_SEVERITY)
        st = ld.table(t.raw("severity"), t.path + ("severity",)) if t.has("severity") else None
        if st:
            for label_value in list(st.data):
                sv = st.take(label_value, c_severity)
                if sv is not BAD:
                    sev_map[label_value] = sv
            st.done()
        am_headers: dict[str, str | Secret] = {}
        ht = ld.table(t.raw("headers"), t.path + ("headers",)) if t.has("headers") else None
        if ht:
            for hname in list(ht.data):
                hv = ht.take(hname, c_str(empty=True))
                if hv is not BAD:
                    am_headers[hname] = Secret(hv) if _SECRET_NAME.search(hname) else hv
            ht.done()
        am = AlertmanagerConfig(
            name=name,
            url=t.take("url"),
            timeout=t.take("timeout"),
            interval=t.take("interval"),
            severity=sev_map,
            severity_label=t.take("severity_label"),
            default_severity=t.take("default_severity"),
            filter=t.take("filter"),
            silence_duration=t.take("silence_duration"),
            headers=am_headers,
        )
        if am.filter is not BAD:
            from backends.sources.prometheus import parse_selector

            for i, f in enumerate(am.filter):
                try:
                    parse_selector("{" + f + "}" if not f.lstrip().startswith("{") else f)
                except ValueError as exc:
                    if "no metric name" not in str(exc):
                        ld.error(t.path + ("filter", i), str(exc), 'a matcher like team="chain"')
        alertmanagers[name] = am
        t.done()
    return alertmanagers
