"""Email through apprise's mailto:// to a real SMTP server on 127.0.0.1 (tests/harness/smtp.py:
Python's smtpd): the escalation brief arrives as plain text with its line breaks, one
text/plain part, never an HTML part built from unescaped outside text (a `<script>` from
a log line arrives as text, not live markup)."""

from __future__ import annotations

import asyncio
import time
from email import message_from_bytes, policy

from backends.config import load_config_text
from backends.engine.core import build_engine
from tests.harness import smtp as _smtp_harness

smtp_server = _smtp_harness.smtp_server  # the session fixture

CONFIG = """
[warroom]
name = "mail-test"
state_dir = "{state}"
operator = "alice"

[[escalation.levels]]
name = "Development team"
channels = ["mailto://127.0.0.1:{port}?from=warroom@example.org&to=oncall@example.org&mode=insecure{extra}"]
"""

BRIEF = ("ERRORS (last 15 min): 3\n"
         "  12:01:07 listener: <script>alert('pwned')</script> in /api/orders\n"
         "  12:01:09 db: <img src=x onerror=alert(1)> & \"quoted\"\n"
         "AFFECTED ORDERS: 2\n"
         "  order 0xabc stuck 14m")


async def wait_for(cond, within=10.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return cond()


async def escalate_by_mail(tmp_path, smtp_server, extra=""):
    smtp_server.clear()
    text = CONFIG.format(state=tmp_path / "state", port=smtp_server.port, extra=extra)
    engine = build_engine(load_config_text(text, str(tmp_path / "warroom.toml")), with_logs=False)
    try:
        await engine.incidents.load()
        plan = await engine.actions.plan("incident.declare", title="Orders <b>stuck</b>", severity="P1")
        assert (await engine.actions.execute(plan, confirmation=True)).ok
        inc = engine.incidents.current()
        plan = await engine.actions.plan("escalate", incident=inc.id, brief=BRIEF)
        res = await engine.actions.execute(plan, confirmation=True)
        assert res.ok and res.counts == {"sent": 1, "pending": 0}, (res.summary, engine.notifier.pending())
        assert await wait_for(lambda: smtp_server.messages)
    finally:
        await engine.stop()
    [(mailfrom, rcpts, raw)] = smtp_server.messages
    assert mailfrom == "warroom@example.org" and rcpts == ["oncall@example.org"]
    return message_from_bytes(raw, policy=policy.default)


def leaves(mail):
    return [p for p in mail.walk() if not p.is_multipart()]


async def test_email_is_plain_text_with_its_line_breaks(tmp_path, smtp_server):
    mail = await escalate_by_mail(tmp_path, smtp_server)
    parts = leaves(mail)
    assert [p.get_content_type() for p in parts] == ["text/plain"], "one text/plain part, never HTML"
    assert not any(p.get_content_type() == "text/html" for p in mail.walk())
    body = parts[0].get_content().replace("\r\n", "\n")
    lines = body.splitlines()
    # every line of the brief is its own line (not one run-on line)
    for line in BRIEF.splitlines():
        assert line in lines, (line, lines)
    assert body.count("\n") >= BRIEF.count("\n")
    # outside text arrives as text: the characters themselves, nothing that a client renders
    assert "<script>alert('pwned')</script>" in body and "&lt;" not in body
    assert mail["Subject"] == "[P1] Orders <b>stuck</b>"


async def test_an_html_format_chosen_in_the_url_gets_escaped_markup_only(tmp_path, smtp_server):
    """format=html chosen by the operator: the HTML part is built from escaped text
    (apprise converts the declared text body), so no tag from a log line is live."""
    mail = await escalate_by_mail(tmp_path, smtp_server, extra="&format=html")
    html = [p for p in leaves(mail) if p.get_content_type() == "text/html"]
    assert html, [p.get_content_type() for p in leaves(mail)]
    text = html[0].get_content()
    assert "<script" not in text.lower() and "<img" not in text.lower()
    assert "&lt;script&gt;" in text and "&lt;img" in text
    assert text.count("<br") >= BRIEF.count("\n")  # line breaks kept as breaks


async def test_the_channel_url_gets_format_text(tmp_path):
    from backends.actions.notify import _text_format

    url = "mailto://127.0.0.1:25?from=a@b.c&to=d@e.f&mode=insecure"
    assert _text_format(url).endswith("&format=text")
