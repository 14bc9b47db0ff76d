"""Nothing raw reaches a person: one sanitiser (backends/sanitize.py) for every text from
outside, tested on every output path with the hostile strings.

Hostile strings: an OSC window title, clear screen, OSC 52 (clipboard write), the C1
one-byte CSI (\\x9b), NUL, Rich markup and an HTML <script>. Output paths: the Logs
pane's line sanitiser (shared), `warroom incident brief` (text and JSON; an RPC node
answering errors with them, order ids from Postgres, audit entries, log lines),
`warroom orders stuck|report|bulk-fix|verify`, `warroom health` (table, JSON, stderr),
`warroom audit tail|verify`,
the CLI's error lines, escalation messages
through apprise to a local webhook and to a local SMTP server (plain text only, line
breaks kept), PagerDuty payloads, the postmortem (markdown rendered with HTML allowed:
no tag survives), and `html_text` for a web page.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backends.sanitize import (
    escape_controls,
    fence,
    html_text,
    inert,
    inert_block,
    markdown_inline,
    sanitize,
)

HOSTILE = {
    "osc-title": "\x1b]0;pwned-title\x07",
    "clear-screen": "\x1b[2J\x1b[H",
    "osc52": "\x1b]52;c;cm0gLXJmIH4=\x07",
    "c1-csi": "\x9b31mred\x9b0m",
    "nul": "nul\x00byte",
    "rich": "[bold red]FAKE ALERT[/bold red] [link=http://evil.example]click[/link]",
    "html": "<script>alert(1)</script><img src=x onerror=alert(2)>",
    "bidi": "abc\u202edcba\u2066",
    "cr": "shown\rhidden",
}
ALL = " | ".join(HOSTILE.values())


def raw_controls(text: str, *, newlines_ok: bool = True) -> list[str]:
    """Control / format characters that would reach a terminal as they are."""
    bad = []
    for ch in text:
        n = ord(ch)
        if ch == "\n" and newlines_ok:
            continue
        if n < 0x20 or 0x7F <= n <= 0x9F or ch in "\u202e\u2066\u200b\ufeff\u2028\u2029":
            bad.append(repr(ch))
    return bad


# --------------------------------------------------------------------------- the functions


@pytest.mark.parametrize("name", list(HOSTILE))
def test_every_function_leaves_no_control_character(name):
    s = HOSTILE[name]
    for fn in (inert, inert_block, sanitize, markdown_inline, html_text, escape_controls):
        out = fn(s)
        assert not raw_controls(out, newlines_ok=False), (fn.__name__, out)
    assert "\\x1b" in inert(HOSTILE["clear-screen"])  # shown escaped, not dropped
    assert inert(HOSTILE["c1-csi"]).startswith("\\x9b")
    assert inert(HOSTILE["nul"]) == "nul\\x00byte"
    assert inert(HOSTILE["bidi"]) == "abc\\u202edcba\\u2066"


def test_line_breaks_kept_only_where_they_belong():
    text = "line one\nline two\r\nline three\x1b[2J"
    assert inert(text) == "line one\\x0aline two\\x0d\\x0aline three\\x1b[2J"  # one line: a \n cannot fake a line
    assert inert_block(text) == "line one\nline two\nline three\\x1b[2J"
    assert inert(b"\xff\xfe raw \x1b") == "\\xff\\xfe raw \\x1b"  # undecodable bytes too
    assert inert("x" * 50, 10).startswith("x" * 10 + " … [cut: 50 chars]")


def test_markdown_and_html():
    md = markdown_inline(HOSTILE["html"] + " [x](javascript:alert(3)) | `code`")
    assert "<" not in md.replace("\\<", "") and "\\[x\\]" in md and "\\|" in md and "\\`code\\`" in md
    assert html_text(HOSTILE["html"]) == ("&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x "
                                          "onerror=alert(2)&gt;")
    mark, body = fence("a ```` b")
    assert mark == "`````" and body == "a ```` b"


def test_logs_pane_uses_the_shared_sanitiser():
    import backends.sanitize as shared
    import backends.sources.logs as logs

    assert logs.sanitize is shared.sanitize and logs.MAX_LINE_CHARS == shared.MAX_LINE_CHARS
    line = logs.parse_line("f", ("ERROR " + ALL).encode())
    assert not raw_controls(line.text, newlines_ok=False)


# --------------------------------------------------------------------------- the CLIs, on the real stack


class HostileRpc:
    """A JSON-RPC endpoint on 127.0.0.1 answering every call with an error carrying ALL."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                one = lambda req: {"jsonrpc": "2.0", "id": req.get("id"),  # noqa: E731
                                   "error": {"code": -32000, "message": "node says " + ALL}}
                answer = [one(r) for r in body] if isinstance(body, list) else one(body)
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def hostile(pg, redis_server, anvil, escrow, tmp_path_factory):
    from backends.engine.audit import AuditLog
    from tests.harness.stack import build_stack

    s = build_stack(pg, redis_server, anvil, escrow, tmp_path_factory.mktemp("sanitize"),
                    name="sanitize", prefix="sz")
    rpc = HostileRpc()
    # outside text in every place the brief and the orders commands read: order ids and
    # states from Postgres (no NUL: Postgres text cannot hold one), a breaker's trigger id,
    # log lines, audit entries (summaries and reasons carry RPC errors), the RPC node
    db_hostile = HOSTILE["clear-screen"] + HOSTILE["osc-title"] + HOSTILE["osc52"] + HOSTILE["c1-csi"] \
        + HOSTILE["rich"] + HOSTILE["html"]
    s.sql("INSERT INTO orders (id, state, created_at) VALUES ($1, 'PENDING', now() - interval '3 hours')",
          "sz-evil" + db_hostile)
    s.sql("INSERT INTO circuit_breaker_state VALUES ($1, 'open', 3, now())", "hook" + db_hostile)
    with s.logfile.open("a") as fh:
        fh.write("ERROR payment failed " + ALL.replace("\n", " ") + "\n")
    AuditLog(s.audit_path).append(action="orders.fix", target="order:" + db_hostile, operator="op" + ALL,
                                  result="failed", summary="RPC said " + ALL, reason="because " + ALL)
    s.hostile_rpc = rpc
    s.hostile_cfg = s.variant("hostile-rpc.toml", anvil_url=rpc.url)
    yield s
    rpc.close()
    s.close()


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    from tui import cli as tui_cli

    capsys.readouterr()
    code = tui_cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_inert(text: str, what: str) -> None:
    assert not raw_controls(text), f"{what}: raw {raw_controls(text)[:5]} in {text[-800:]!r}"
    assert "\x1b" not in text and "\x9b" not in text and "\x00" not in text and "\x07" not in text


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.evm
def test_incident_brief_prints_nothing_raw(hostile, capsys):
    code, out, err = cli(capsys, "incident", "brief", "--config", str(hostile.hostile_cfg))
    assert code == 0, err
    assert_inert(out + err, "incident brief")
    assert "\\x1b[2J" in out  # shown escaped: the operator sees something tried
    assert "DOWN:" in out and "node says" in out  # the hostile RPC's error, inert
    assert "[bold red]FAKE ALERT[/bold red]" in out  # printed as text, never as markup
    code, out, err = cli(capsys, "incident", "brief", "--json", "--config", str(hostile.hostile_cfg))
    assert code == 0 and json.loads(out)
    assert_inert(out + err, "incident brief --json")


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.evm
def test_orders_commands_print_nothing_raw(hostile, capsys, monkeypatch):
    cfg = str(hostile.config_path)
    code, out, err = cli(capsys, "orders", "stuck", "--config", cfg)
    assert code == 1 and "sz-evil" in out
    assert_inert(out + err, "orders stuck")
    # on a terminal too (rich table): markup shown as text
    monkeypatch.setattr("tui.headless.is_tty", lambda *a: True)
    code, out, err = cli(capsys, "orders", "report", "--config", cfg)
    assert code == 0
    assert_inert(out + err, "orders report")
    code, out, err = cli(capsys, "orders", "bulk-fix", "--older-than", "2h30m", "--state", "CANCELLED",
                         "--reason", "r " + HOSTILE["clear-screen"], "--all-pending", "--config", cfg)
    assert code == 0, err
    assert "sz-evil" in out and "dry-run" in out
    assert_inert(out + err, "orders bulk-fix dry-run")
    code, out, err = cli(capsys, "orders", "verify", "sz-x" + HOSTILE["clear-screen"], "--config", cfg)
    assert_inert(out + err, "orders verify (a refused id)")


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.evm
def test_health_prints_nothing_raw(hostile, capsys, monkeypatch):
    for tty in (False, True):
        monkeypatch.setattr("tui.headless.is_tty", lambda *a, tty=tty: tty)
        for argv in (["health"], ["health", "--json"], ["health", "chain"]):
            code, out, err = cli(capsys, *argv, "--config", str(hostile.hostile_cfg))
            assert code in (2, 3), (argv, err)
            assert_inert(out + err, " ".join(argv))
    assert "node says" in err


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.evm
def test_audit_tail_and_verify_print_nothing_raw(hostile, capsys, monkeypatch):
    for tty in (False, True):
        monkeypatch.setattr("tui.cmd_audit.is_tty", lambda *a, tty=tty: tty)
        for argv in (["audit", "tail"], ["audit", "tail", "--json"], ["audit", "verify"]):
            code, out, err = cli(capsys, *argv, "--config", str(hostile.config_path))
            assert code in (0, 1), (argv, err)
            assert_inert(out + err, " ".join(argv))
    code, out, err = cli(capsys, "audit", "tail", "--config", str(hostile.config_path))
    assert "RPC said" in out and "\\x1b[2J" in out


def test_cli_error_lines_are_inert(capsys):
    from backends.errors import BackendError
    from tui.headless import run_job

    async def job():
        raise BackendError("chain.x", "node says " + ALL)

    assert run_job("warroom test", job) == 3
    err = capsys.readouterr().err
    assert "node says" in err
    assert_inert(err, "run_job error line")


# --------------------------------------------------------------------------- messages


class Smtp:
    """A minimal SMTP receiver on 127.0.0.1 (EHLO, MAIL, RCPT, DATA, QUIT): keeps each message."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        f = conn.makefile("rwb")

        def say(line: str) -> None:
            f.write(line.encode() + b"\r\n")
            f.flush()

        say("220 localhost ESMTP test")
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.strip().upper()
                if cmd.startswith(b"EHLO"):
                    f.write(b"250-localhost\r\n250 8BITMIME\r\n")
                    f.flush()
                elif cmd.startswith(b"HELO") or cmd.startswith(b"MAIL") or cmd.startswith(b"RCPT") \
                        or cmd.startswith(b"RSET") or cmd.startswith(b"NOOP"):
                    say("250 ok")
                elif cmd == b"DATA":
                    say("354 go ahead")
                    data = b""
                    while True:
                        chunk = f.readline()
                        if chunk in (b".\r\n", b".\n", b""):
                            break
                        data += chunk
                    self.messages.append(data)
                    say("250 queued")
                elif cmd == b"QUIT":
                    say("221 bye")
                    return
                else:
                    say("502 not implemented")
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


async def _wait(cond, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return cond()


async def test_escalation_messages_are_inert_and_email_is_plain_text(tmp_path):
    from email import message_from_bytes

    from backends.config import load_config_text
    from backends.engine.core import build_engine
    from tests.test_notify import Receiver, free_port

    smtp = Smtp()
    port = free_port()
    rx = Receiver(port)
    await rx.start()
    text = f"""
[warroom]
name = "sanitize-notify"
state_dir = "{tmp_path / 'state'}"
operator = "alice"

[[escalation.levels]]
name = "Development team"
channels = ["json://127.0.0.1:{port}/hook/dev",
            "mailto://127.0.0.1:{smtp.port}?from=warroom@example.org&to=oncall@example.org&mode=insecure"]

[escalation.pagerduty]
routing_key = "R0UTINGKEYFORTESTS00000000000000"
url = "http://127.0.0.1:{port}/v2/enqueue"
"""
    engine = build_engine(load_config_text(text, str(tmp_path / "warroom.toml")))
    try:
        await engine.incidents.load()
        plan = await engine.actions.plan("incident.declare", title="Orders stuck " + HOSTILE["osc-title"],
                                         severity="P1")
        assert (await engine.actions.execute(plan, confirmation=True)).ok
        inc = engine.incidents.current()
        brief = "first line\nsecond line " + ALL + "\nthird line"
        plan = await engine.actions.plan("escalate", incident=inc.id, brief=brief)
        res = await engine.actions.execute(plan, confirmation=True)
        assert res.ok, res.summary
        assert await _wait(lambda: rx.hooks and rx.events and smtp.messages), (rx.hooks, rx.events, res.summary)
    finally:
        await engine.stop()
        await rx.stop()
        smtp.close()
    hook = json.dumps(rx.hooks[0]["body"], ensure_ascii=False)
    assert_inert(rx.hooks[0]["body"]["message"] + rx.hooks[0]["body"]["title"], "webhook")
    assert "second line" in hook and "\\\\x1b[2J" in hook
    pd = rx.events[0]["payload"]
    assert_inert(pd["summary"] + pd["custom_details"]["brief"], "PagerDuty")
    mail = message_from_bytes(smtp.messages[0])
    parts = [p for p in mail.walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == ["text/plain"], "never an HTML part"
    body = parts[0].get_payload(decode=True).decode()
    assert "first line\r\nsecond line" in body or "first line\nsecond line" in body  # line breaks kept
    assert "third line" in body
    assert_inert(body.replace("\r", ""), "email body")
    assert_inert(str(mail["Subject"]), "email subject")


# --------------------------------------------------------------------------- the postmortem


async def test_postmortem_is_inert_markdown(tmp_path):
    from markdown_it import MarkdownIt

    from backends.engine.incidents import IncidentManager, LocalIncidentStore, postmortem_markdown

    m = IncidentManager(LocalIncidentStore(tmp_path / "inc"), operator="op" + HOSTILE["rich"])
    inc = await m.declare("Title " + ALL, "P1", impact="impact " + HOSTILE["html"])
    await m.note(inc.id, "note " + ALL)
    await m.post_update(inc.id, "update ``` " + ALL)
    await m.resolve(inc.id, summary="fixed " + HOSTILE["html"])
    md = postmortem_markdown(m.get(inc.id))
    assert_inert(md, "postmortem")
    html = MarkdownIt("commonmark", {"html": True}).render(md)
    assert "<script" not in html and "<img" not in html  # rendered with HTML allowed: no tag survives
    assert "&lt;script&gt;" in html  # shown as text
    assert 'href="http://evil.example"' not in html
    await m.close()
