"""PagerDuty Events API v2 against a strict local stand-in (tests/harness/pagerduty.py,
built from PagerDuty's documented responses): acknowledge / resolve only after their
trigger was accepted, 429 and Retry-After honoured, documented field limits enforced
with a clear error, and executed fixes sent as Change Events."""

from __future__ import annotations

import asyncio
import time

import pytest

from backends.config import load_config_text
from backends.engine.core import build_engine
from tests.harness.pagerduty import PagerDutyStandIn

KEY = "0123456789abcdef0123456789abcdef"  # 32 characters, as PagerDuty's integration keys
assert len(KEY) == 32

CONFIG = """
[warroom]
name = "pd-test"
state_dir = "{state}"
operator = "alice"

[[escalation.levels]]
name = "Development team"
after = "0m"

[escalation.pagerduty]
routing_key = "{key}"
url = "{url}"
{extra}
"""


def make_engine(tmp_path, pd, key=KEY, extra="", **kw):
    text = CONFIG.format(state=tmp_path / "state", url=pd.url, key=key, extra=extra)
    return build_engine(load_config_text(text, str(tmp_path / "warroom.toml")), with_logs=False, **kw)


async def run(engine, action, **params):
    plan = await engine.actions.plan(action, **params)
    return await engine.actions.execute(plan, confirmation=True)


async def declare(engine, title="Orders stuck", severity="P1"):
    await engine.incidents.load()
    res = await run(engine, "incident.declare", title=title, severity=severity)
    assert res.ok, res.summary
    return engine.incidents.current()


async def wait_for(cond, within=10.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return cond()


@pytest.fixture
async def pd():
    server = await PagerDutyStandIn().start()
    yield server
    await server.stop()


async def test_ack_queued_while_the_trigger_is_in_backoff_waits_for_it(tmp_path, pd):
    """The trigger fails (500) and waits in backoff; the operator acknowledges meanwhile.
    The acknowledge must not overtake the trigger (PagerDuty would drop it: no open alert)."""
    engine = make_engine(tmp_path, pd)
    n = engine.notifier
    n.backoff = (0.3,)
    try:
        inc = await declare(engine)
        pd.fail(1, when=lambda body: body.get("event_action") == "trigger")
        res = await run(engine, "escalate", incident=inc.id, brief="listener silent")
        assert res.counts["pending"] == 1, res.summary
        assert (await run(engine, "incident.update", incident=inc.id, op="ack")).ok
        assert (await run(engine, "incident.resolve", incident=inc.id, summary="fixed")).ok
        assert pd.dropped == [], f"PagerDuty dropped {[e['event_action'] for e in pd.dropped]}"
        assert pd.actions() == []  # nothing accepted yet: the trigger is in backoff, the others wait
        held = [m for m in n.pending() if m.event_action in ("acknowledge", "resolve")]
        assert len(held) == 2 and all("waiting for" in m.last_error for m in held), [m.last_error for m in held]
        await engine.start()
        assert await wait_for(lambda: not n.pending(), 10), [(m.event_action, m.last_error) for m in n.pending()]
        assert pd.actions() == ["trigger", "acknowledge", "resolve"]
        assert pd.dropped == [] and pd.rejected == []
        assert pd.alerts[(KEY, inc.id)].history == ["trigger", "acknowledge", "resolve"]
    finally:
        await engine.stop()


async def test_429_with_retry_after_is_honoured_for_every_event(tmp_path, pd):
    engine = make_engine(tmp_path, pd)
    n = engine.notifier
    n.backoff = (0.05,)  # our own backoff is shorter than PagerDuty's Retry-After: the header wins
    try:
        inc = await declare(engine)
        pd.throttle(1, retry_after="1")
        t0 = time.time()
        res = await run(engine, "escalate", incident=inc.id, brief="b")
        assert res.counts["pending"] == 1
        [msg] = n.pending()
        assert "HTTP 429" in msg.last_error and "Retry-After" in msg.last_error
        assert msg.status == "pending" and msg.next_attempt_at >= t0 + 0.95
        # nothing goes to PagerDuty before the Retry-After, even a forced retry or another event
        assert (await run(engine, "incident.update", incident=inc.id, op="ack")).ok
        assert await n.flush(force=True) == (0, 0)
        assert len(pd.requests) == 1 and len(pd.throttled) == 1
        await engine.start()
        assert await wait_for(lambda: not n.pending(), 10)
        assert pd.actions() == ["trigger", "acknowledge"] and pd.dropped == []
        assert time.time() - t0 >= 1.0
    finally:
        await engine.stop()


async def test_429_without_retry_after_waits_pagerdutys_suggested_30s(tmp_path, pd):
    engine = make_engine(tmp_path, pd)
    n = engine.notifier
    n.backoff = (0.05,)
    try:
        inc = await declare(engine)
        pd.throttle(1)
        t0 = time.time()
        await run(engine, "escalate", incident=inc.id, brief="b")
        [msg] = n.pending()
        assert msg.next_attempt_at >= t0 + 29 and "HTTP 429" in msg.last_error
        assert await n.flush(force=True) == (0, 0) and len(pd.requests) == 1
    finally:
        await engine.stop()


async def test_5xx_is_retried_and_a_400_is_kept_dead_with_pagerdutys_errors(tmp_path, pd):
    from backends.actions.notify import parse_retry_after

    assert parse_retry_after("7") == 7.0 and parse_retry_after("junk") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: now
    assert parse_retry_after("99999") == 3600.0
    engine = make_engine(tmp_path, pd)
    n = engine.notifier
    try:
        inc = await declare(engine)
        pd.fail(1)
        await run(engine, "escalate", incident=inc.id, brief="b")
        [msg] = n.pending()
        assert msg.status == "pending" and "HTTP 500" in msg.last_error
        assert await n.flush(force=True) == (1, 0)
        # the stand-in refuses what the documentation does not allow: warroom shows PagerDuty's words
        n.pagerduty_payload = lambda m: {"routing_key": KEY, "event_action": "trigger", "dedup_key": "x",
                                         "payload": {"summary": "s", "source": "h", "severity": "fatal"}}
        await run(engine, "escalate", incident=inc.id, brief="b2")
        [dead] = n.pending()
        assert dead.status == "dead" and "HTTP 400" in dead.last_error
        assert "payload.severity" in dead.last_error and "Event object is invalid" in dead.last_error
    finally:
        await engine.stop()


async def test_a_routing_key_that_is_not_32_characters_is_a_clear_error_and_never_sent(tmp_path, pd):
    bad = KEY[:31]
    engine = make_engine(tmp_path, pd, key=bad)
    n = engine.notifier
    try:
        inc = await declare(engine)
        await run(engine, "escalate", incident=inc.id, brief="b")
        [msg] = n.pending()
        assert msg.status == "dead"
        assert "routing_key has 31 characters" in msg.last_error and "32" in msg.last_error
        assert bad not in msg.last_error and pd.requests == []
        from backends.actions.notify import pagerduty_problems

        assert pagerduty_problems(engine.config.escalation.pagerduty) == [msg.last_error.removeprefix("not sent: ")]
        # the resolve waits behind the refused trigger, saying why, instead of being dropped by PagerDuty
        assert (await run(engine, "incident.resolve", incident=inc.id, summary="x")).ok
        resolve = next(m for m in n.pending() if m.event_action == "resolve")
        assert "waiting for the trigger" in resolve.last_error and "refused" in resolve.last_error
        assert pd.requests == []
    finally:
        await engine.stop()


async def test_field_limits_summary_body_and_dedup_key(tmp_path, pd):
    from backends.actions.notify import PD_BODY_MAX, Message, SendError

    engine = make_engine(tmp_path, pd)
    n = engine.notifier
    try:
        inc = await declare(engine, title="T" * 5000)
        huge = ("an error line from the log\n" * 40_000)  # ~1 MB of brief
        await run(engine, "escalate", incident=inc.id, brief=huge)
        assert not n.pending(), [m.last_error for m in n.pending()]
        [ev] = pd.accepted
        assert len(ev["payload"]["summary"]) <= 1024 and ev["payload"]["summary"].endswith("[cut]")
        assert pd.rejected == []
        body_size = len(__import__("json").dumps(ev, ensure_ascii=False, separators=(",", ":")).encode())
        assert body_size <= PD_BODY_MAX
        # a dedup_key over 255 characters: a clear error, nothing sent
        long_id = Message(id="m1", incident="I" * 256, kind="pagerduty", title="t", body="",
                          event_action="acknowledge")
        with pytest.raises(SendError, match="dedup_key .256 characters. must be 1 to 255"):
            n.pagerduty_payload(long_id)
        # custom details that cannot be cut to fit 512 KB: a clear error
        fat = Message(id="m2", incident="INC-1", kind="pagerduty", title="t", body="", event_action="trigger",
                      custom={"blob": "x" * (PD_BODY_MAX + 10)})
        with pytest.raises(SendError, match="at most 524,288 .512 KB."):
            n.pagerduty_payload(fat)
    finally:
        await engine.stop()


async def test_executed_fixes_are_sent_as_change_events(tmp_path, pd):
    extra = 'change_events = true\n\n[[actions]]\nname = "flush-cache"\nargv = ["true"]\ndanger = "confirm"\n'
    engine = make_engine(tmp_path, pd, extra=extra)
    n = engine.notifier
    try:
        assert engine.config.escalation.pagerduty.change_url == pd.change_url  # derived from url
        inc = await declare(engine)
        res = await run(engine, "command.flush-cache", reason="cache poisoned")
        assert res.ok, res.summary
        assert await n.flush() == (1, 0)
        [ch] = pd.changes
        assert ch["routing_key"] == KEY and set(ch) <= {"routing_key", "payload", "links"}
        p = ch["payload"]
        assert p["summary"].startswith("warroom: command.flush-cache") and "(ok)" in p["summary"]
        assert p["source"].startswith("pd-test@") and p["timestamp"]
        assert p["custom_details"]["action"] == "command.flush-cache"
        assert p["custom_details"]["incidents"] == [inc.id] and p["custom_details"]["operator"] == "alice"
        assert "reason: cache poisoned" in p["custom_details"]["details"]
        # incident bookkeeping and escalations are not changes to the system
        await run(engine, "incident.update", incident=inc.id, op="note", value="hello")
        await run(engine, "escalate", incident=inc.id, brief="b")
        await n.flush()
        assert len(pd.changes) == 1 and pd.actions() == ["trigger"] and pd.rejected == []
    finally:
        await engine.stop()


async def test_change_events_are_off_unless_configured(tmp_path, pd):
    engine = make_engine(tmp_path, pd, extra='\n[[actions]]\nname = "flush-cache"\nargv = ["true"]\n')
    try:
        await declare(engine)
        assert (await run(engine, "command.flush-cache")).ok
        await engine.notifier.flush()
        assert pd.changes == [] and engine.notifier.pending() == []
    finally:
        await engine.stop()


async def test_every_event_warroom_sends_passes_the_strict_schema(tmp_path, pd):
    """trigger, acknowledge, resolve and change, through the real send path: nothing rejected."""
    engine = make_engine(tmp_path, pd, extra='change_events = true\n\n[[actions]]\nname = "x"\nargv = ["true"]\n')
    try:
        inc = await declare(engine, title="<script>alert(1)</script> \x1b[31mred\x1b[0m", severity="P0")
        await run(engine, "escalate", incident=inc.id, brief="line 1\nline 2\x07")
        await run(engine, "command.x")
        await run(engine, "incident.update", incident=inc.id, op="ack")
        await run(engine, "incident.resolve", incident=inc.id, summary="done")
        await engine.notifier.flush()
        assert pd.rejected == [] and not engine.notifier.pending()
        assert pd.actions() == ["trigger", "acknowledge", "resolve"] and len(pd.changes) == 1
        trig = pd.accepted[0]
        assert trig["payload"]["severity"] == "critical" and "\x1b" not in trig["payload"]["summary"]
        assert set(pd.accepted[1]) == {"routing_key", "event_action", "dedup_key"}
    finally:
        await engine.stop()


async def test_a_refused_acknowledge_does_not_hold_the_resolve(tmp_path, pd):
    engine = make_engine(tmp_path, pd)
    n = engine.notifier
    try:
        inc = await declare(engine)
        await run(engine, "escalate", incident=inc.id, brief="b")
        real = n.pagerduty_payload

        def bad_ack(m):
            ev = real(m)
            if m.event_action == "acknowledge":
                ev["event_action"] = "ack"  # not a documented event_action: the stand-in answers 400
            return ev

        n.pagerduty_payload = bad_ack
        await run(engine, "incident.update", incident=inc.id, op="ack")
        [dead] = n.pending()
        assert dead.status == "dead" and "HTTP 400" in dead.last_error and "event_action" in dead.last_error
        await run(engine, "incident.resolve", incident=inc.id, summary="x")
        assert pd.actions() == ["trigger", "resolve"] and pd.dropped == []
        assert [m.id for m in n.pending()] == [dead.id]
    finally:
        await engine.stop()
