"""Parsing of [escalation], [incident] and [record]."""

from __future__ import annotations

import re

from backends.config.base import _SECRET_NAME, BAD
from backends.config.converters import c_duration, c_str
from backends.config.loader import _Loader, _Table
from backends.config.model import (
    AlertSinkConfig,
    EscalationConfig,
    EscalationLevel,
    IncidentConfig,
    PagerDutyConfig,
    RecordConfig,
)
from backends.config.schema import DEFAULT_RESPONSE
from backends.config.types import Secret
from backends.model import Severity


def parse_escalation(ld: _Loader, root: _Table) -> EscalationConfig:
    """[escalation]"""
    escalation = EscalationConfig()
    t = ld.table(root.raw("escalation"), ("escalation",)) if root.has("escalation") else None
    if t:
        levels = []
        for lt in ld.array_of_tables(t.raw("levels"), ("escalation", "levels")):
            levels.append(EscalationLevel(
                name=lt.take("name"),
                after=lt.take("after"),
                contacts=lt.take("contacts"),
                channels=lt.take("channels"),
                provide=lt.take("provide"),
            ))
            lt.done()
        pagerduty = None
        pt = ld.table(t.raw("pagerduty"), ("escalation", "pagerduty")) if t.has("pagerduty") else None
        if pt:
            rk = pt.take("routing_key")
            url = pt.take("url")
            change_events = pt.take("change_events")
            default_change = (url[: -len("/v2/enqueue")] + "/v2/change/enqueue"
                              if isinstance(url, str) and url.endswith("/v2/enqueue")
                              else "https://events.pagerduty.com/v2/change/enqueue")
            change_url = pt.take("change_url", default=default_change)
            if rk is not BAD and rk:
                pagerduty = PagerDutyConfig(routing_key=rk, url=url, change_events=change_events,
                                            change_url=change_url)
            pt.done()
        sink = None
        st = ld.table(t.raw("alertmanager"), ("escalation", "alertmanager")) if t.has("alertmanager") else None
        if st:
            sink_labels: dict[str, str] = {}
            sl_t = ld.table(st.raw("labels"), st.path + ("labels",)) if st.has("labels") else None
            if sl_t:
                for lname in list(sl_t.data):
                    lv_ = sl_t.take(lname, c_str())
                    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", lname):
                        ld.error(sl_t.path + (lname,), "not an Alertmanager label name", "letters, digits and _")
                    elif lv_ is not BAD:
                        sink_labels[lname] = lv_
                sl_t.done()
            sink_headers: dict[str, str | Secret] = {}
            ht = ld.table(st.raw("headers"), st.path + ("headers",)) if st.has("headers") else None
            if ht:
                for hname in list(ht.data):
                    hv = ht.take(hname, c_str(empty=True))
                    if hv is not BAD:
                        sink_headers[hname] = Secret(hv) if _SECRET_NAME.search(hname) else hv
                ht.done()
            findings_sev = st.take("findings")
            sink = AlertSinkConfig(
                url=st.take("url"),
                labels=sink_labels,
                escalations=st.take("escalations"),
                findings=(Severity.parse(findings_sev) if isinstance(findings_sev, str) and findings_sev.strip()
                          .upper() in Severity.__members__ else None),
                # the same limits as an [alertmanager.NAME] source's interval / timeout
                interval=st.take("interval"),
                timeout=st.take("timeout"),
                headers=sink_headers,
            )
            if isinstance(findings_sev, str) and findings_sev.strip() and sink.findings is None:
                ld.error(st.path + ("findings",), f"unknown severity {findings_sev!r}",
                         'P0, P1, P2 or P3 (findings of that severity or worse are pushed); "" for none')
            st.done()
        escalation = EscalationConfig(
            ack_timeout=t.take("ack_timeout"),
            levels=tuple(levels),
            pagerduty=pagerduty,
            alertmanager=sink,
        )
        afters = [lv.after for lv in levels if isinstance(lv.after, float)]
        if afters != sorted(afters):
            ld.error(("escalation", "levels"), "levels are not in order of `after`",
                     "levels listed from the first to be contacted to the last")
        t.done()
    return escalation


def parse_incident(ld: _Loader, root: _Table) -> IncidentConfig:
    """[incident]"""
    incident = IncidentConfig()
    t = ld.table(root.raw("incident"), ("incident",)) if root.has("incident") else None
    if t:
        response = dict(DEFAULT_RESPONSE)
        rt = ld.table(t.raw("response"), ("incident", "response")) if t.has("response") else None
        if rt:
            for sev in list(rt.data):
                if sev.upper() not in Severity.__members__:
                    rt.used.add(sev)
                    ld.error(rt.path + (sev,), f"unknown severity {sev!r}", "P0, P1, P2 or P3")
                    continue
                d = rt.take(sev, c_duration("incident.response"))
                if d is not BAD:
                    response[Severity[sev.upper()]] = d
            rt.done()
        incident = IncidentConfig(
            roles=t.take("roles"),
            response=response,
        )
        t.done()
    return incident


def parse_record(ld: _Loader, root: _Table) -> RecordConfig | None:
    """[record]"""
    record: RecordConfig | None = None
    t = ld.table(root.raw("record"), ("record",)) if root.has("record") else None
    if t:
        record = RecordConfig(
            path=t.take("path"),
            max_size=t.take("max_size"),
            max_age=t.take("max_age"),
        )
        t.done()
    return record
