"""Log parsing against the real producers (issue 18), never lines typed by hand.

Each test starts the producer itself and follows what it writes, as warroom would:
npm winston 3.19 (colorized), npm pino 10.4 (numeric levels), PyPI structlog 26.1
(ConsoleRenderer with and without colours, JSONRenderer, LogfmtRenderer), Python's
logging (tracebacks, chained and uncaught exceptions), Node's console.error of an Error.
Go slog's text format: there is no Go toolchain here, so `SLOG_TEXT` is a Python script
writing exactly the format slog's TextHandler documents (the only stand-in, said so).

Multi-line entries: a traceback or a Node stack is one entry (counted once, one row in
the Logs pane with its line count, every line in the log detail). A line without a time
gets its arrival time and counts for the error rates.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends.model import Level, LogLine
from backends.sources.logs import LogHub, LogSpec, entry_line_count
from tests.engines import engine_of

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / ".tools" / "node_modules"
PY = sys.executable


def _need_node() -> str:
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "winston").is_dir() or not (NODE_MODULES / "pino").is_dir():
        reason = "node with winston and pino in .tools/node_modules is needed (make test installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return node


def _node_env() -> dict[str, str]:
    return {**os.environ, "NODE_PATH": str(NODE_MODULES), "FORCE_COLOR": "1"}


async def wait_for(cond, limit: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + limit
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await asyncio.sleep(0.02)


def entries(hub: LogHub, source: str = "app") -> list[LogLine]:
    return [ln for ln in hub.recent(source=source) if not ln.notice]


async def follow_producer(tmp_path: Path, argv: list[str], *, env=None, expect: int,
                          done=None) -> tuple[LogHub, bytes]:
    """Start a hub following app.log, run the producer with stdout and stderr into that
    file (as a service's log file), wait until `expect` entries are in (or `done(hub)`).
    Returns the running hub and the producer's raw bytes."""
    path = tmp_path / "app.log"
    hub = LogHub([LogSpec(name="app", path=str(path), backlog_lines=0)], poll_interval=0.02)
    await hub.start()
    await wait_for(lambda: hub.signals()[0].state == "waiting", what="the follower")
    await asyncio.to_thread(_run_to_file, argv, path, env, tmp_path)
    raw = path.read_bytes()
    await wait_for((lambda: done(hub)) if done else (lambda: len(entries(hub)) >= expect),
                   what=f"{expect} entries from the producer")
    await asyncio.sleep(0.1)  # a continuation still on its way would show now
    return hub, raw


def _run_to_file(argv: list[str], path: Path, env, cwd: Path) -> None:
    """The producer, its stdout and stderr appended to `path` (run in a thread)."""
    with open(path, "ab") as out:
        subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, timeout=60, check=False)


def levels(hub: LogHub) -> list[Level]:
    return [ln.level for ln in entries(hub)]


# --------------------------------------------------------------------------- winston

WINSTON = r"""
const winston = require('winston');
const simple = winston.createLogger({
  level: 'silly',
  format: winston.format.combine(winston.format.colorize(), winston.format.simple()),
  transports: [new winston.transports.Console()],
});
simple.error('db down', {code: 7});
simple.warn('slow query');
simple.info('hello');
simple.http('GET /');
simple.verbose('v');
simple.debug('dbg');
const stamped = winston.createLogger({
  format: winston.format.combine(winston.format.colorize({all: true}), winston.format.timestamp(),
    winston.format.printf(i => `${i.timestamp} ${i.level}: ${i.message}`)),
  transports: [new winston.transports.Console()],
});
stamped.error('with a timestamp');
stamped.warn('stamped warning');
"""


async def test_winston_colorized_levels(tmp_path):
    node = _need_node()
    (tmp_path / "w.js").write_text(WINSTON)
    hub, raw = await follow_producer(tmp_path, [node, "w.js"], env=_node_env(), expect=8)
    try:
        assert b"\x1b[31merror\x1b[39m" in raw  # the colour codes are around the level
        assert levels(hub) == [Level.ERROR, Level.WARN, Level.INFO, Level.INFO, Level.DEBUG, Level.DEBUG,
                               Level.ERROR, Level.WARN]
        lines = entries(hub)
        assert all("\x1b" not in ln.text and "\\x1b" not in ln.text for ln in lines)
        # the stamped logger's own time is used; the others get their arrival time
        assert abs(lines[6].at.timestamp() - time.time()) < 60
        from widgets.logs import shown_text

        assert shown_text(lines[0]) == 'db down {"code":7}'
        assert shown_text(lines[6]) == "with a timestamp"
        # no time of their own, counted on arrival: 2 errors, 2 warnings
        s = hub.signals()[0]
        assert s.errors[0] == 2 and s.warnings[0] == 2
    finally:
        await hub.stop()


async def test_winston_backlog_without_times_counts_at_the_file_mtime(tmp_path):
    """The file was written by winston before warroom started: its lines have no time of
    their own; they get their arrival (the file's mtime, just now) and count (they used to
    count 0 errors)."""
    node = _need_node()
    (tmp_path / "w.js").write_text(WINSTON)
    path = tmp_path / "app.log"
    _run_to_file([node, "w.js"], path, _node_env(), tmp_path)  # before the hub starts: no loop to block
    hub = LogHub([LogSpec(name="app", path=str(path), backlog_lines=50)], poll_interval=0.02)
    async with hub:
        await wait_for(lambda: len(entries(hub)) == 8, what="the backlog")
        s = hub.signals()[0]
        assert s.errors == (2, 2, 2) and s.warnings == (2, 2, 2) and s.lines[0] == 8


# --------------------------------------------------------------------------- pino

PINO = r"""
const pino = require('pino');
const log = pino({level: 'trace'});
log.trace('t'); log.debug('d'); log.info('started'); log.warn('slow');
log.error({err: new Error('rpc timeout')}, 'call failed');
log.fatal('out of memory');
"""


async def test_pino_numeric_levels_and_err_stack(tmp_path):
    node = _need_node()
    (tmp_path / "p.js").write_text(PINO)
    hub, raw = await follow_producer(tmp_path, [node, "p.js"], env=_node_env(), expect=6)
    try:
        assert b'"level":50' in raw
        # (pino's stream may write the first line last: by message, not by order)
        by_msg = {ln.message: ln.level for ln in entries(hub)}
        assert by_msg == {"t": Level.TRACE, "d": Level.DEBUG, "started": Level.INFO, "slow": Level.WARN,
                          "call failed": Level.ERROR, "out of memory": Level.FATAL}
        err = next(ln for ln in entries(hub) if ln.message == "call failed")
        assert err.message == "call failed" and "\n" not in err.text  # the stack is inside the JSON
        assert all(abs(ln.at.timestamp() - time.time()) < 60 for ln in entries(hub))
        assert hub.signals()[0].errors[0] == 2
    finally:
        await hub.stop()


# --------------------------------------------------------------------------- structlog

STRUCTLOG = r"""
import sys, structlog
mode = sys.argv[1]
procs = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso")]
if mode == "console":
    procs.append(structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback))
elif mode == "colour":
    procs.append(structlog.dev.ConsoleRenderer(colors=True))  # rich's traceback box when rich is there
elif mode == "json":
    procs += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
elif mode == "logfmt":  # Heroku's convention: the level as at=
    def at(_l, _m, ev):
        ev["at"] = ev.pop("level")
        return ev
    procs += [at, structlog.processors.format_exc_info, structlog.processors.LogfmtRenderer()]
elif mode == "logfmt-level":
    procs += [structlog.processors.LogfmtRenderer(key_order=["timestamp", "level", "event"])]
structlog.configure(processors=procs, logger_factory=structlog.PrintLoggerFactory(sys.stdout))
log = structlog.get_logger()
log.error("payment failed", order="o-1")
log.warning("slow", ms=900)
log.info("started")
log.critical("down")
if mode in ("console", "colour", "json"):
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("crashed")
log.info("after")
"""


@pytest.mark.parametrize("mode", ["console", "colour"])
async def test_structlog_console_renderer(tmp_path, mode):
    import structlog

    assert structlog.__version__.startswith("26.")
    (tmp_path / "s.py").write_text(STRUCTLOG)
    hub, raw = await follow_producer(tmp_path, [PY, "s.py", mode], expect=6,
                                     done=lambda h: any("after" in ln.text for ln in entries(h)))
    try:
        assert (b"[error    ]" in raw) == (mode == "console")
        assert (b"\x1b[" in raw) == (mode == "colour")
        got = entries(hub)
        assert [ln.level for ln in got] == [Level.ERROR, Level.WARN, Level.INFO, Level.FATAL, Level.ERROR,
                                           Level.INFO], [ln.text[:60] for ln in got]
        crash = got[4]
        produced = raw.decode().split("\n")
        start = next(i for i, t in enumerate(produced) if "crashed" in t)
        end = max(i for i, t in enumerate(produced) if "after" in t)  # (rich shows the source too)
        body = [t for t in produced[start:end] if t.strip()]
        assert entry_line_count(crash.text) == len(body) > 3  # the traceback, one entry
        assert "ZeroDivisionError: division by zero" in crash.text
        assert hub.signals()[0].errors[0] == 3  # error, critical, the exception: once each
        from widgets.logs import shown_text

        assert shown_text(got[0]).startswith("payment failed") and "order=o-1" in shown_text(got[0])
    finally:
        await hub.stop()


async def test_structlog_json_renderer(tmp_path):
    (tmp_path / "s.py").write_text(STRUCTLOG)
    hub, raw = await follow_producer(tmp_path, [PY, "s.py", "json"], expect=6)
    try:
        got = entries(hub)
        assert [ln.level for ln in got] == [Level.ERROR, Level.WARN, Level.INFO, Level.FATAL, Level.ERROR,
                                           Level.INFO]
        assert [ln.message for ln in got][:2] == ["payment failed", "slow"]
        assert all(abs(ln.at.timestamp() - time.time()) < 60 for ln in got)
    finally:
        await hub.stop()


@pytest.mark.parametrize("mode", ["logfmt", "logfmt-level"])
async def test_logfmt_at_and_level(tmp_path, mode):
    """logfmt from structlog's LogfmtRenderer: `level=error`, and Heroku's `at=error`."""
    (tmp_path / "s.py").write_text(STRUCTLOG)
    hub, raw = await follow_producer(tmp_path, [PY, "s.py", mode], expect=5)
    try:
        assert (b"at=error" in raw) == (mode == "logfmt") and (b"level=error" in raw) == (mode != "logfmt")
        got = entries(hub)
        assert [ln.level for ln in got] == [Level.ERROR, Level.WARN, Level.INFO, Level.FATAL, Level.INFO]
        assert got[0].message == "payment failed"
        from widgets.logs import shown_text

        assert shown_text(got[0]) == "payment failed  order=o-1"
        assert hub.signals()[0].errors[0] == 2
    finally:
        await hub.stop()


# --------------------------------------------------------------------------- Go slog (text)

# log/slog's TextHandler, as documented (pkg.go.dev/log/slog#TextHandler): `time=` RFC 3339
# with milliseconds, `level=` DEBUG/INFO/WARN/ERROR (with an offset: `WARN+2`), `msg=`, then
# the attributes; a value is quoted when it has a space, `=` or `"`. No Go here: a Python
# stand-in writes exactly that.
SLOG_TEXT = r"""
import datetime, sys
def q(v):
    v = str(v)
    return '"' + v.replace('\\', '\\\\').replace('"', '\\"') + '"' if (not v or any(c in v for c in ' ="')) else v
def log(level, msg, **attrs):
    t = datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")
    parts = [f"time={t}", f"level={level}", f"msg={q(msg)}"] + [f"{k}={q(v)}" for k, v in attrs.items()]
    print(" ".join(parts), flush=True)
log("INFO", "hello", count=3)
log("WARN", "disk low", free="1 GiB")
log("ERROR", "rpc failed", err="context deadline exceeded", url="http://127.0.0.1:8545")
log("WARN+2", "almost an error")
log("DEBUG-4", "very verbose")
"""


async def test_go_slog_text_format(tmp_path):
    (tmp_path / "slog.py").write_text(SLOG_TEXT)
    hub, raw = await follow_producer(tmp_path, [PY, "slog.py"], expect=5)
    try:
        assert raw.startswith(b"time=") and b" level=WARN msg=" in raw
        got = entries(hub)
        assert [ln.level for ln in got] == [Level.INFO, Level.WARN, Level.ERROR, Level.WARN, Level.DEBUG]
        assert got[2].message == "rpc failed"
        assert all(abs(ln.at.timestamp() - time.time()) < 60 for ln in got)
        from widgets.logs import shown_text

        assert shown_text(got[1]) == 'disk low  free="1 GiB"'
    finally:
        await hub.stop()


# --------------------------------------------------------------------------- Python logging

PY_LOGGING = r"""
import logging, sys
fmt = sys.argv[1]
if fmt == "default":
    logging.basicConfig(stream=sys.stdout, level=logging.INFO)
else:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("worker")
log.warning("starting")
try:
    {}["missing"]
except KeyError:
    log.exception("lookup failed")
try:
    try:
        1 / 0
    except ZeroDivisionError as exc:
        raise RuntimeError("could not settle") from exc
except RuntimeError:
    log.error("settle failed", exc_info=True)
log.error("no traceback here")
log.info("shutting down")
sys.stdout.flush()
raise ValueError("uncaught")  # after an INFO line: its own entry (after an error it would join it)
"""


@pytest.mark.parametrize("fmt", ["default", "asctime"])
async def test_python_logging_tracebacks_are_one_entry(tmp_path, fmt):
    (tmp_path / "l.py").write_text(PY_LOGGING)
    hub, raw = await follow_producer(
        tmp_path, [PY, "l.py", fmt], expect=5,
        done=lambda h: any("ValueError: uncaught" in ln.text for ln in entries(h)))
    try:
        got = entries(hub)
        produced = raw.decode().rstrip("\n").split("\n")  # the chained traceback's blank lines too
        assert len(produced) > 20
        assert [ln.level for ln in got] == [Level.WARN, Level.ERROR, Level.ERROR, Level.ERROR, Level.INFO,
                                           Level.ERROR], [ln.text[:70] for ln in got]
        assert sum(entry_line_count(ln.text) for ln in got) == len(produced)  # every line, in one entry
        lookup, settle, plain, _info, uncaught = got[1:]
        assert "lookup failed" in lookup.message and lookup.text.rstrip().endswith("KeyError: 'missing'")
        assert "The above exception was the direct cause" in settle.text
        assert settle.text.count("Traceback (most recent call last):") == 2
        assert entry_line_count(plain.text) == 1
        assert uncaught.text.startswith("Traceback") and uncaught.message == "ValueError: uncaught"
        # counted once each: 4 errors, 1 warning (not one per traceback line)
        s = hub.signals()[0]
        assert s.errors[0] == 4 and s.warnings[0] == 1 and s.lines[0] == 6
        assert s.recent_errors[0] == "ValueError: uncaught"
    finally:
        await hub.stop()


# --------------------------------------------------------------------------- Node stacks

NODE_STACK = r"""
console.log('server listening');
console.error(new Error('boom'));
const e = new TypeError('bad input'); e.code = 'E_BAD';
console.error(e);
console.log('still up');
"""


async def test_node_console_error_stack_is_one_entry(tmp_path):
    node = _need_node()
    (tmp_path / "n.js").write_text(NODE_STACK)
    hub, raw = await follow_producer(tmp_path, [node, "n.js"], env=_node_env(), expect=4,
                                     done=lambda h: any("still up" in ln.text for ln in entries(h)))
    try:
        got = entries(hub)
        produced = [t for t in raw.decode().split("\n") if t]
        assert [ln.level for ln in got] == [Level.UNKNOWN, Level.ERROR, Level.ERROR, Level.UNKNOWN], \
            [ln.text[:60] for ln in got]
        assert sum(entry_line_count(ln.text) for ln in got) == len(produced)
        boom, bad = got[1], got[2]
        assert boom.text.startswith("Error: boom\n    at ")
        assert bad.text.startswith("TypeError: bad input") and bad.text.endswith("code: 'E_BAD'\n}")
        assert hub.signals()[0].errors[0] == 2
    finally:
        await hub.stop()


async def test_a_stack_read_in_pieces_is_republished_as_one_entry(tmp_path):
    """A command source (`node ...` as the service's log command) delivers a stack over
    several reads: the entry is published again with the same seq and the pane replaces
    its row; counted once."""
    node = _need_node()
    script = tmp_path / "slow.js"
    script.write_text(r"""
const e = new Error('slow boom');
const lines = e.stack.split('\n');
let i = 0;
process.stderr.write(lines[i++] + '\n');
const t = setInterval(() => {
  if (i < lines.length) { process.stderr.write(lines[i++] + '\n'); return; }
  clearInterval(t); console.log('done');
  setTimeout(() => {}, 60000);
}, 60);
""")
    hub = LogHub([LogSpec(name="app", command=(node, str(script)), restart_delay=600)])
    published: list[LogLine] = []
    hub.subscribe(published.extend)
    async with hub:
        await wait_for(lambda: any(ln.text == "done" for ln in entries(hub)), what="the whole stack")
        got = entries(hub)
        assert [ln.level for ln in got] == [Level.ERROR, Level.UNKNOWN]
        stack = got[0]
        assert stack.text.startswith("Error: slow boom\n    at ") and entry_line_count(stack.text) > 3
        versions = [ln for ln in published if ln.seq == stack.seq]
        assert len(versions) > 1 and versions[-1] is stack  # republished as it grew
        assert hub.signals()[0].errors[0] == 1

        # the pane: one row, replaced in place, folded with its count
        from textual.app import App

        from widgets.logs import LogTail

        class One(App):
            def compose(self):
                yield LogTail(id="t")
                yield LogTail(id="u")
                yield LogTail(id="v")

        app = One()
        async with app.run_test(size=(100, 10)) as pilot:
            tail = app.query_one("#t", LogTail)
            for ln in published:
                tail.add_lines([ln])
            tail.flush()
            await pilot.pause()
            assert [ln.seq for ln in tail.rows] == [ln.seq for ln in got]
            assert tail.rows[0] is stack and tail.errors_received == 1
            row = "".join(seg.text for seg in tail.render_line(0))
            assert "slow boom" in row and f"[+{entry_line_count(stack.text) - 1} lines]" in row
            # all versions in one batch (a replay), and a filter on: still one row, counted once
            other = app.query_one("#u", LogTail)
            other.set_filter("Error: slow boom")
            other.add_lines(published)
            other.flush()
            assert [ln.seq for ln in other.lines] == [ln.seq for ln in got] and other.lines[0] is stack
            assert other.rows == [stack] and other.errors_received == 1
            # a filter only the grown entry matches (its continuation lines): shown once it grew
            third = app.query_one("#v", LogTail)
            third.set_filter("    at ")
            assert "    at " not in versions[0].text  # the first version: its first line alone
            for ln in published:
                third.add_lines([ln])
                third.flush()
            assert third.rows == [stack]


# --------------------------------------------------------------------------- detail


async def test_log_detail_shows_the_whole_entry_folded_then_expanded(tmp_path):
    (tmp_path / "l.py").write_text(PY_LOGGING)
    hub, _raw = await follow_producer(
        tmp_path, [PY, "l.py", "asctime"], expect=5,
        done=lambda h: any("ValueError: uncaught" in ln.text for ln in entries(h)))
    await hub.stop()
    settle = entries(hub)[2]
    n = entry_line_count(settle.text)
    assert n > 12

    from textual.app import App
    from textual.widgets import Static

    from tui.screens.detail import DetailScreen
    from widgets.logs import LogTail

    class Pane(App):
        def compose(self):
            yield LogTail(id="t")

    app = Pane()
    async with app.run_test(size=(120, 50)) as pilot:
        tail = app.query_one(LogTail)
        tail.add_lines(entries(hub))
        tail.flush()
        await pilot.pause()
        tail.cursor = 2
        assert tail.detail() is settle
        app.push_screen(DetailScreen(tail.detail()))
        await pilot.pause()
        screen = app.screen

        def shown() -> str:
            return str(screen.query_one("#detail-log-entry", Static).render())

        folded = shown()
        assert "settle failed" in folded and f"{n} (one entry" in folded
        if n > 20:
            assert "(e: expand)" in folded and "RuntimeError: could not settle" not in folded.split("raw")[1]
        await pilot.press("e")
        await pilot.pause()
        full = shown()
        for part in settle.text.split("\n"):
            assert part.strip() in full
        assert "RuntimeError: could not settle" in full


# --------------------------------------------------------------------------- the pane, pictured


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_folded_entries_snapshot(snap_compare, utc):
    """How the pane shows entries (a rendering picture, so its lines are fixed: the
    producers' own output, with their paths and times, is checked above): a traceback and
    a Node stack folded to one row with their count, message first for each format."""
    from tests.widget_data import NOW, PaneApp
    from widgets.logs import LogTail

    hub = LogHub([LogSpec(name=n, command=("true",)) for n in ("worker", "api", "listener", "gateway")],
                 clock=lambda: NOW.timestamp())
    hub.feed("worker", [
        "2026-11-22 07:59:40,120 WARNING worker: retrying",
        "2026-11-22 07:59:41,500 ERROR worker: settle failed",
        "Traceback (most recent call last):",
        '  File "/srv/app/settle.py", line 12, in settle',
        "    rpc.send(tx)",
        "TimeoutError: rpc timed out",
    ])
    hub.feed("api", [
        "\x1b[31merror\x1b[39m: db down {\"code\":7}",
        "TypeError: bad input",
        "    at handler (/srv/api/index.js:10:5)",
        "    at process (node:internal/process:1:1) {",
        "  code: 'E_BAD'",
        "}",
    ])
    hub.feed("listener", [
        "2026-11-22T07:59:50.000Z [error    ] event missed                   order=ord-1004",
        'time=2026-11-22T07:59:51.000Z level=WARN msg="disk low" free="1 GiB"',
    ])
    hub.feed("gateway", ['{"level":50,"time":1795334395000,"msg":"upstream 503","path":"/api"}'])
    app = PaneApp(LogTail(hub.recent()))
    assert snap_compare(app, terminal_size=(100, 9))


async def test_enter_on_the_console_logs_pane_opens_the_entry(tmp_path):
    """In the console: the Logs pane gets the hub's entries (a real logging traceback
    written to the followed file), enter opens the detail of the one under the cursor."""

    from textual.widgets import Static

    from backends.actions.base import ActionEngine
    from backends.engine.audit import AuditLog
    from backends.engine.monitor import Monitor
    from tui.app import WarroomApp
    from tui.screens.detail import DetailScreen

    (tmp_path / "l.py").write_text(PY_LOGGING)
    path = tmp_path / "app.log"
    hub = LogHub([LogSpec(name="app", path=str(path), backlog_lines=0)], poll_interval=0.02)
    engine = engine_of(Monitor([]), ActionEngine(AuditLog(tmp_path / "audit.jsonl")), logs=hub)
    app = WarroomApp(engine)
    async with app.run_test(size=(140, 44)) as pilot:  # the engine starts the hub
        await wait_for(lambda: hub.signals()[0].state == "waiting", what="the follower")
        await asyncio.to_thread(_run_to_file, [PY, "l.py", "asctime"], path, None, tmp_path)
        tail = app.dashboard.pane("logs")
        await wait_for(lambda: any("ValueError: uncaught" in ln.text for ln in tail.lines) and not tail._pending,
                       what="the entries in the pane")
        rows = [ln for ln in tail.rows if not ln.notice]  # ("[warroom] following ...")
        assert [entry_line_count(ln.text) > 1 for ln in rows] == [False, True, True, False, False, True]
        await pilot.press("8")
        await wait_for(lambda: app.focused is tail, what="the logs pane focused")
        tail.cursor = tail.rows.index(rows[1])
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, DetailScreen), what="the detail")
        assert app.screen.item is rows[1]
        body = str(app.screen.query_one("#detail-log-entry", Static).render())
        assert "lookup failed" in body and "KeyError: 'missing'" in body
        await pilot.press("escape")
    await hub.stop()


# --------------------------------------------------------------------------- lnav, the anchor

_LNAV_LEVELS = {"trace": Level.TRACE, "debug": Level.DEBUG, "info": Level.INFO, "warning": Level.WARN,
                "error": Level.ERROR, "critical": Level.FATAL, "fatal": Level.FATAL}


def _lnav_entries(path: Path, home: Path) -> list[tuple[int, Level]]:
    """(first line, level) of each message lnav makes of the file (lnav's own formats)."""
    lnav = shutil.which("lnav")
    if lnav is None:
        if os.environ.get("CI") == "true":
            pytest.fail("lnav is needed (apt install lnav)")
        pytest.skip("lnav is not installed (apt install lnav)")
    out = subprocess.run([lnav, "-n", "-c", ";SELECT log_line, log_level FROM all_logs", "-c", ":write-csv-to -",
                          str(path)], capture_output=True, text=True, timeout=30, check=True,
                         env={**os.environ, "HOME": str(home)}).stdout
    rows = [r.split(",") for r in out.strip().splitlines()[1:]]
    return [(int(n), _LNAV_LEVELS.get(lv, Level.UNKNOWN)) for n, lv in rows]


def _our_entries(hub: LogHub) -> list[tuple[int, Level]]:
    out, at = [], 0
    for ln in entries(hub):
        out.append((at, ln.level))
        at += entry_line_count(ln.text)
    return out


@pytest.mark.parametrize("producer", ["structlog-console", "python-logging"])
async def test_entries_agree_with_lnav(tmp_path, producer):
    """lnav (Debian's) reads the same file into the same entries at the same levels. The one
    deliberate difference: an uncaught exception's traceback after an INFO line is its own
    ERROR entry here (lnav folds it into the INFO message before it)."""
    if producer == "structlog-console":
        (tmp_path / "s.py").write_text(STRUCTLOG)
        argv, last = [PY, "s.py", "console"], "after"
    else:
        (tmp_path / "l.py").write_text(PY_LOGGING)
        argv, last = [PY, "l.py", "asctime"], "ValueError: uncaught"
    hub, _raw = await follow_producer(tmp_path, argv, expect=5,
                                      done=lambda h: any(last in ln.text for ln in entries(h)))
    await hub.stop()
    theirs = _lnav_entries(tmp_path / "app.log", tmp_path)
    ours = _our_entries(hub)
    if producer == "python-logging":
        uncaught = ours[-1]
        assert uncaught[1] is Level.ERROR and entries(hub)[-1].text.startswith("Traceback")
        ours = ours[:-1]
    assert ours == theirs


# --------------------------------------------------------------------------- the limits (unit)
# Fixed lines on purpose: these pin the rules' limits (gap, size), not a format.


class _Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def test_entry_limits_gap_size_and_late_upgrade():
    from backends.sources.logs import MULTILINE_GAP_S, MULTILINE_MAX_LINES

    clock = _Clock()
    hub = LogHub([LogSpec(name="app", command=("true",))], clock=clock)
    # a message without a level, then its traceback in a later read: one entry, an error, once
    hub.feed("app", ["settle failed"])
    assert hub.signals()[0].errors[0] == 0
    clock.t += 0.5
    hub.feed("app", ["Traceback (most recent call last):", '  File "x.py", line 1, in <module>', "KeyError: 'k'"])
    (entry,) = entries(hub)
    assert entry.level is Level.ERROR and entry_line_count(entry.text) == 4
    s = hub.signals()[0]
    assert s.errors[0] == 1 and s.lines[0] == 1
    # an indented line after the gap is its own entry
    clock.t += MULTILINE_GAP_S + 0.5
    hub.feed("app", ["    late indented line"])
    assert len(entries(hub)) == 2
    # a huge stack keeps MULTILINE_MAX_LINES lines and counts the rest
    hub.feed("app", ["Error: huge"] + [f"    at f{i} (x.js:{i}:1)" for i in range(MULTILINE_MAX_LINES + 50)])
    huge = entries(hub)[-1]
    assert huge.text.count("\n") == MULTILINE_MAX_LINES and huge.text.endswith("[51 more lines not kept]")  # 200 kept of 251
    assert entry_line_count(huge.text) == MULTILINE_MAX_LINES + 51
    # a Node props block ends at `}`; a line at the start that is not `}` ends it too
    hub.feed("app", ["TypeError: x", "    at y (z.js:1:1) {", "  code: 'E'", "INFO next"])
    assert entries(hub)[-2].text.endswith("code: 'E'") and entries(hub)[-1].text == "INFO next"


# --------------------------------------------------------------------------- a traceback over several reads

UNCAUGHT = ["Traceback (most recent call last):", '  File "/srv/l.py", line 16, in <module>',
            '    raise ValueError("uncaught")', "ValueError: uncaught"]


@pytest.mark.parametrize("split", [1, 2, 3])
def test_traceback_read_in_two_parts_is_remembered_by_its_exception(split):
    """An uncaught exception's traceback whose lines come in two reads (the first `split`
    lines, then the rest): the source's recent error is its exception line, not the
    "Traceback ..." it started with (it once stayed that when the first read had a
    continuation line already), and it is counted once."""
    clock = _Clock()
    hub = LogHub([LogSpec(name="app", command=("true",))], clock=clock)
    hub.feed("app", ["INFO shutting down"])
    hub.feed("app", UNCAUGHT[:split])
    clock.t += 0.1
    hub.feed("app", UNCAUGHT[split:])
    uncaught = entries(hub)[-1]
    assert uncaught.text == "\n".join(UNCAUGHT) and uncaught.message == "ValueError: uncaught"
    s = hub.signals()[0]
    assert s.recent_errors == ("ValueError: uncaught",)  # nothing left of the partial entry
    assert s.errors[0] == 1 and s.lines[0] == 2
    # the same exception again, whole this time: one recent error, seen twice
    hub.feed("app", ["INFO again"])
    hub.feed("app", UNCAUGHT)
    assert hub.signals()[0].recent_errors == ("ValueError: uncaught (×2)",)


def _append(path: Path, text: str) -> None:
    with open(path, "ab") as fh:  # one write
        fh.write(text.encode())


async def test_followed_file_traceback_in_two_writes_is_remembered_by_its_exception(tmp_path):
    """The same through a followed file: the traceback's first line and a continuation line
    are written and read, then the rest; the recent error is the exception line."""
    path = tmp_path / "app.log"
    path.write_bytes(b"")
    hub = LogHub([LogSpec(name="app", path=str(path), backlog_lines=0)], poll_interval=0.02)
    async with hub:
        await wait_for(lambda: hub.signals()[0].state == "following", what="the follower")
        await asyncio.to_thread(_append, path, "INFO shutting down\n" + "\n".join(UNCAUGHT[:2]) + "\n")
        await wait_for(lambda: (got := entries(hub)) and got[-1].text == "\n".join(UNCAUGHT[:2]),
                       what="the first part of the traceback read")
        await asyncio.to_thread(_append, path, "\n".join(UNCAUGHT[2:]) + "\n")
        await wait_for(lambda: entries(hub)[-1].text == "\n".join(UNCAUGHT), what="the rest of the traceback")
        s = hub.signals()[0]
        assert entries(hub)[-1].message == "ValueError: uncaught"
        assert s.recent_errors == ("ValueError: uncaught",) and s.errors[0] == 1
