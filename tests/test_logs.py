"""Logs engine: parsers, real files followed like tail -F, a streaming command, a real
container's logs (restarted mid-stream), the signals with an injected clock, and rules."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backends.clock import FakeClock
from backends.engine.rules import evaluate
from backends.model import Level, LogSignalReading, Severity, Snapshot
from backends.sources.logs import (
    LogHub,
    LogSignals,
    LogSpec,
    PatternSpec,
    level_from,
    line_fields,
    parse_line,
    sanitize,
    specs_from_config,
)

ROOT = Path(__file__).resolve().parent.parent


async def wait_for(cond, limit: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + limit
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await asyncio.sleep(0.02)


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def texts(hub: LogHub, source: str | None = None) -> list[str]:
    return [ln.text for ln in hub.recent(source=source) if not ln.notice]


def append(path: Path, *lines: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for ln in lines:
            fh.write(ln + "\n")


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("raw", "level", "message", "has_time"),
    [
        # generic JSON
        (b'{"level":"error","msg":"boom","time":"2024-01-01T00:00:00Z"}', Level.ERROR, "boom", True),
        # pino / bunyan: numeric levels, epoch milliseconds
        (b'{"level":30,"time":1531171074631,"msg":"hello","pid":1}', Level.INFO, "hello", True),
        (b'{"level":40,"time":1531171074631,"msg":"careful"}', Level.WARN, "careful", True),
        (b'{"level":50,"time":1531171074631,"msg":"failed"}', Level.ERROR, "failed", True),
        (b'{"level":60,"time":1531171074631,"msg":"dead"}', Level.FATAL, "dead", True),
        (b'{"level":20,"msg":"dbg"}', Level.DEBUG, "dbg", False),
        # Rust tracing JSON: fields.message, nanosecond timestamps
        (b'{"timestamp":"2024-05-01T10:00:00.123456789Z","level":"WARN","fields":{"message":"slow rpc"},'
         b'"target":"listener::rpc"}', Level.WARN, "slow rpc", True),
        # structlog: event + level + ISO timestamp
        (b'{"event":"order settled","level":"info","timestamp":"2024-05-01T10:00:00.5+00:00"}',
         Level.INFO, "order settled", True),
        # winston: level + message
        (b'{"level":"error","message":"Failed to acquire connection from pool","timestamp":"2024-05-01 10:00:00"}',
         Level.ERROR, "Failed to acquire connection from pool", True),
        # GCP / severity, lvl
        (b'{"severity":"CRITICAL","message":"down"}', Level.FATAL, "down", False),
        (b'{"lvl":"warn","msg":"lvl key"}', Level.WARN, "lvl key", False),
        # zap: ts as float seconds
        (b'{"level":"info","ts":1714557600.25,"msg":"zap"}', Level.INFO, "zap", True),
        # journald (-o json): PRIORITY syslog, MESSAGE, microsecond realtime
        (b'{"PRIORITY":"3","MESSAGE":"unit failed","__REALTIME_TIMESTAMP":"1714557600000000"}',
         Level.ERROR, "unit failed", True),
        (b'{"PRIORITY":"6","MESSAGE":"started"}', Level.INFO, "started", False),
        # logfmt
        (b'time=2024-05-01T10:00:00Z level=warn msg="queue depth high" depth=12000', Level.WARN,
         "queue depth high", True),
        (b'ts=2024-05-01T10:00:00Z lvl=error msg="Circuit breaker OPEN" trigger=t1', Level.ERROR,
         "Circuit breaker OPEN", True),
        # plain text with level words
        (b"2024-05-01 10:00:00,123 ERROR Failed to acquire connection from pool", Level.ERROR, None, True),
        (b"2024-05-01T10:00:00Z WARN QUEUE_CRITICAL_DEPTH reached", Level.WARN, None, True),
        (b"[error] upstream timed out", Level.ERROR, None, False),
        (b"<warn> disk almost full", Level.WARN, None, False),
        (b"FATAL: out of memory", Level.FATAL, None, False),
        (b"CRITICAL worker died", Level.FATAL, None, False),
        (b"Error: connect ECONNREFUSED 127.0.0.1:5432", Level.ERROR, None, False),
        (b"INFO Listening for PostgreSQL NOTIFY", Level.INFO, None, False),
        (b"DEBUG cursor at 123", Level.DEBUG, None, False),
        (b"Listener metrics: spawned=3 failed=0", Level.UNKNOWN, None, False),
        (b"no errors found in the last hour", Level.UNKNOWN, None, False),
    ],
)
def test_formats(raw, level, message, has_time):
    line = parse_line("svc", raw, seq=7)
    assert line.level is level, (raw, line.level)
    assert line.source == "svc" and line.seq == 7
    if message is not None:
        assert line.message == message
    if has_time:
        assert line.at.year in (2018, 2024)
    assert line.at.tzinfo is not None


def test_json_after_prefix_event_log():
    """Seed 000 §6C: console.log('EVENT_LOG:', JSON.stringify(entry))."""
    ok = parse_line("listener", b'EVENT_LOG: {"timestamp":"2024-05-01T10:00:00Z","event":"EscrowReleased",'
                                b'"orderId":"ord-1","blockNumber":123,"status":"processed"}')
    assert line_fields(ok.text)["prefix"] == "EVENT_LOG"
    assert line_fields(ok.text)["orderId"] == "ord-1" and line_fields(ok.text)["status"] == "processed"
    assert ok.at == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert ok.level is not Level.ERROR
    bad = parse_line("listener", b'EVENT_LOG: {"event":"EscrowReleased","orderId":"ord-2","status":"failed",'
                                 b'"error":"nonce too low"}')
    assert bad.level is Level.ERROR and line_fields(bad.text)["error"] == "nonce too low"


def test_kept_lines_are_small_and_fields_still_read():
    """The hub keeps 10,000 lines for days (issue 10): a JSON line must not keep its
    parsed dict next to its text, yet `line_fields` still answers from the text."""
    import tracemalloc

    raw = ('EVENT_LOG: {"timestamp":"2024-05-01T10:00:%02dZ","event":"EscrowReleased",'
           '"orderId":"ord-%05d","blockNumber":123,"status":"processed","tx":"0x%064x"}')
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [parse_line("listener", raw % (i % 60, i, i), seq=i) for i in range(10_000)]
        per_line = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    # text (~190 chars) ~240 B + the line ~110 B + its datetime/message; the dict was ~+600 B
    assert per_line < 520, per_line
    assert line_fields(kept[42].text)["orderId"] == "ord-00042" and line_fields(kept[42].text)["prefix"] == "EVENT_LOG"
    assert line_fields(parse_line("x", b"plain text").text) == {}


def test_level_values():
    assert level_from(50) is Level.ERROR
    assert level_from("Warning") is Level.WARN
    assert level_from("3", "PRIORITY") is Level.ERROR
    assert level_from(None) is Level.UNKNOWN
    assert level_from(True) is Level.UNKNOWN
    assert level_from("nonsense") is Level.UNKNOWN


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe\xfd not utf-8 \xc3\x28",
        b"\x00\x01\x02\x1b[31mred\x1b[0m\x07\x08\x7f",
        bytes(range(256)) * 40,
        b"{" * 5000 + b"}" * 5000,
        b'{"level": "error", "msg": ' + b'"' + b"a" * 100 + b'", "nested": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        b"\xe2\x80\xae right-to-left override \xe2\x80\x8b",
        b"",
        b"\r",
    ],
    ids=["undecodable", "controls", "all-bytes", "braces", "deep-json", "bidi", "empty", "cr"],
)
def test_junk_never_crashes_and_is_escaped(raw):
    line = parse_line("junk", raw)
    assert isinstance(line.text, str)
    assert "\x1b" not in line.text and "\x00" not in line.text and "\x07" not in line.text
    assert all(ch == " " or ch.isprintable() for ch in line.text), [c for c in line.text if not c.isprintable()]
    assert len(line.text) <= 4096 + 64


def test_undecodable_bytes_are_shown_escaped():
    line = parse_line("x", b"bad \xff byte \x01 here")
    assert "\\xff" in line.text and "\\x01" in line.text


def test_megabyte_line_is_cut_and_says_so():
    raw = b"ERROR " + b"x" * 1_000_000
    t0 = time.perf_counter()
    line = parse_line("big", raw)
    assert time.perf_counter() - t0 < 0.05
    assert line.level is Level.ERROR
    assert len(line.text) < 4200
    assert "cut" in line.text and "1,000,006" in line.text
    short = sanitize(b"y" * 500, max_chars=100)
    assert short.startswith("y" * 100) and "cut" in short and len(short) < 160


# --------------------------------------------------------------------------- files


async def test_file_late_creation_and_live_lines(tmp_path):
    path = tmp_path / "late.log"
    hub = LogHub([LogSpec(name="app", path=str(path))], poll_interval=0.02)
    async with hub:
        await wait_for(lambda: hub.signals()[0].detail, what="the first look at the file")
        sig = hub.signals()[0]
        assert sig.state == "waiting" and "does not exist" in sig.detail
        append(path, "INFO first", "ERROR second")
        await wait_for(lambda: texts(hub) == ["INFO first", "ERROR second"], what="lines of the late file")
        append(path, "third")
        await wait_for(lambda: texts(hub)[-1:] == ["third"], what="appended line")
        assert hub.signals()[0].state == "following"


async def test_file_starts_at_the_end_with_a_short_backlog(tmp_path):
    path = tmp_path / "old.log"
    append(path, *[f"ERROR old {i}" for i in range(500)])
    hub = LogHub([LogSpec(name="app", path=str(path), backlog_lines=5)], poll_interval=0.02)
    async with hub:
        await wait_for(lambda: texts(hub), what="backlog")
        assert texts(hub) == [f"ERROR old {i}" for i in range(495, 500)]
        # lines without their own time get their arrival time (issue 18): the file's mtime
        # for the backlog (written just now: counted in the last minute)
        assert hub.signals()[0].errors == (5, 5, 5)
        append(path, "ERROR new")
        await wait_for(lambda: texts(hub)[-1] == "ERROR new", what="new line")
        assert hub.signals()[0].errors[0] == 6


async def test_backlog_without_times_of_an_old_file_is_not_counted(tmp_path):
    """The backlog's arrival time is the file's mtime: a file last written 20 minutes ago
    holds no error of the last 15 minutes."""
    path = tmp_path / "old.log"
    append(path, *[f"ERROR old {i}" for i in range(50)])
    old = time.time() - 1200
    os.utime(path, (old, old))
    hub = LogHub([LogSpec(name="app", path=str(path), backlog_lines=5)], poll_interval=0.02)
    async with hub:
        await wait_for(lambda: texts(hub), what="backlog")
        assert hub.signals()[0].errors == (0, 0, 0)
        assert hub.recent()[0].at.timestamp() == pytest.approx(old, abs=1)


async def test_partial_line_waits_for_its_newline(tmp_path):
    path = tmp_path / "p.log"
    path.write_text("")
    hub = LogHub([LogSpec(name="app", path=str(path))], poll_interval=0.02)
    async with hub:
        await wait_for(lambda: hub.signals()[0].state == "following", what="following the file")
        with open(path, "a") as fh:  # noqa: ASYNC230 - a local test file
            fh.write("half a li")
            fh.flush()
            await asyncio.sleep(0.1)
            assert texts(hub) == []
            fh.write("ne\n")
        await wait_for(lambda: texts(hub) == ["half a line"], what="joined line")


async def test_rotation_by_rename_reads_old_inode_to_the_end(tmp_path):
    path = tmp_path / "app.log"
    path.write_text("")
    hub = LogHub([LogSpec(name="app", path=str(path))], poll_interval=0.02)
    async with hub:
        await wait_for(lambda: hub.signals()[0].state == "following", what="following the file")
        writer = open(path, "a")  # noqa: ASYNC230, SIM115 - a writer that keeps its descriptor across the rename
        writer.write("before 1\nbefore 2\n")
        writer.flush()
        await wait_for(lambda: len(texts(hub)) == 2, what="lines before rotation")
        os.rename(path, tmp_path / "app.log.1")
        writer.write("old inode after rename\n")  # still lands in app.log.1
        writer.flush()
        writer.close()
        append(path, "new file 1", "new file 2")
        await wait_for(lambda: len(texts(hub)) == 5, what="lines after rotation")
        got = texts(hub)
        assert got[:2] == ["before 1", "before 2"]
        assert sorted(got[2:]) == sorted(["old inode after rename", "new file 1", "new file 2"])
        assert got.index("old inode after rename") < got.index("new file 1")
        notices = [ln.text for ln in hub.recent() if ln.notice]
        assert any("rotated" in n for n in notices)
        append(path, "new file 3")
        await wait_for(lambda: texts(hub)[-1] == "new file 3", what="line after rotation")
        assert len(texts(hub)) == 6  # nothing read twice


async def test_copytruncate(tmp_path):
    path = tmp_path / "app.log"
    append(path, "x" * 50)
    hub = LogHub([LogSpec(name="app", path=str(path), backlog_lines=0)], poll_interval=0.02)
    async with hub:
        await wait_for(lambda: hub.signals()[0].state == "following", what="following the file")
        append(path, "line one", "line two")
        await wait_for(lambda: texts(hub) == ["line one", "line two"], what="first lines")
        with open(path, "r+") as fh:  # noqa: ASYNC230
            fh.truncate(0)
        await wait_for(lambda: any("truncated" in ln.text for ln in hub.recent()), what="truncation notice")
        append(path, "after truncate")
        await wait_for(lambda: texts(hub)[-1] == "after truncate", what="line after truncation")
        assert texts(hub) == ["line one", "line two", "after truncate"]


async def test_deletion_and_recreation(tmp_path):
    path = tmp_path / "app.log"
    path.write_text("")
    hub = LogHub([LogSpec(name="app", path=str(path))], poll_interval=0.02)
    async with hub:
        await wait_for(lambda: hub.signals()[0].state == "following", what="following the file")
        append(path, "one")
        await wait_for(lambda: texts(hub) == ["one"], what="first line")
        path.unlink()
        await wait_for(lambda: hub.signals()[0].state == "waiting", what="waiting state")
        append(path, "two")
        await wait_for(lambda: texts(hub) == ["one", "two"], what="line of the re-created file")


async def test_glob_picks_up_new_files_and_ignores_rotated_names(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    append(logs / "a.log", "old a")
    hub = LogHub([LogSpec(name="all", path=str(logs / "*"), backlog_lines=0)], poll_interval=0.02)
    async with hub:
        await wait_for(lambda: hub.signals()[0].state == "following", what="following the file")
        append(logs / "a.log", "A1")
        append(logs / "b.log", "B1", "B2")  # a new file: read from its start
        await wait_for(lambda: sorted(texts(hub)) == ["A1", "B1", "B2"], limit=5, what="both files")
        # rotate a.log -> a.log.1 (matches the glob too): its content is not read again
        os.rename(logs / "a.log", logs / "a.log.1")
        append(logs / "a.log", "A2")
        await wait_for(lambda: "A2" in texts(hub), limit=5, what="new a.log")
        # the glob is re-listed every second: once it has been, a.log.1 is followed too
        await wait_for(lambda: hub.signals()[0].detail == "3 file(s)", limit=5, what="the glob re-listed")
        assert sorted(texts(hub)) == ["A1", "A2", "B1", "B2"]
        assert hub.signals()[0].state == "following"


async def test_long_line_in_a_file_is_bounded(tmp_path):
    path = tmp_path / "big.log"
    path.write_text("")
    hub = LogHub([LogSpec(name="big", path=str(path), max_line=200)], poll_interval=0.02)
    async with hub:
        await wait_for(lambda: hub.signals()[0].state == "following", what="following the file")
        with open(path, "ab") as fh:  # noqa: ASYNC230
            fh.write(b"ERROR " + b"z" * 3_000_000 + b"\nafter\n")
        await wait_for(lambda: texts(hub)[-1:] == ["after"], what="line after the huge one")
        big = texts(hub)[0]
        assert big.startswith("ERROR zzz") and "cut" in big and len(big) < 300


async def test_idle_file_costs_no_cpu(tmp_path):
    path = tmp_path / "idle.log"
    path.write_text("quiet\n")
    hub = LogHub([LogSpec(name="idle", path=str(path))])  # default 0.25 s polling
    async with hub:
        await wait_for(lambda: hub.signals()[0].state == "following", what="following the file")
        t0 = time.process_time()
        w0 = time.monotonic()
        await asyncio.sleep(1.5)
        cpu = (time.process_time() - t0) / (time.monotonic() - w0)
        assert cpu < 0.02, f"idle follower used {cpu:.1%} of a core"


# --------------------------------------------------------------------------- commands


async def test_streaming_command_and_restart_on_exit():
    code = "import sys\nfor i in range(3):\n    print(f'ERROR from child {i}', flush=True)\nsys.exit(3)\n"
    hub = LogHub([LogSpec(name="cmd", command=(sys.executable, "-u", "-c", code), restart_delay=0.05)])
    async with hub:
        await wait_for(lambda: len(texts(hub)) >= 6, limit=10, what="two runs of the command")
        assert texts(hub)[:3] == [f"ERROR from child {i}" for i in range(3)]
        notices = [ln.text for ln in hub.recent() if ln.notice]
        assert any("exited with code 3" in n for n in notices)
        assert hub.signals()[0].errors[0] >= 6


async def test_streaming_command_json_lines_and_stop_kills_it():
    code = ("import json, time\n"
            "for i in range(1000000):\n"
            "    print(json.dumps({'level': 'warn', 'msg': f'tick {i}'}), flush=True)\n"
            "    time.sleep(0.01)\n")
    hub = LogHub([LogSpec(name="cmd", command=(sys.executable, "-u", "-c", code))])
    await hub.start()
    await wait_for(lambda: len(texts(hub)) >= 3, what="json lines")
    follower = hub._followers[0]
    pid = follower.proc.pid
    line = hub.recent(source="cmd")[0]
    assert line.level is Level.WARN and line.message == "tick 0"
    await hub.stop()
    deadline = time.monotonic() + 2
    with pytest.raises(ProcessLookupError):
        while time.monotonic() < deadline:  # gone soon after the stop
            os.kill(pid, 0)
            await asyncio.sleep(0.02)


async def test_missing_program_is_a_state_not_a_crash():
    hub = LogHub([LogSpec(name="nope", command=("/nonexistent/warroom-no-such-binary",), restart_delay=0.05)])
    async with hub:
        await wait_for(lambda: hub.signals()[0].state == "failed", what="failed state")
        assert "cannot run" in hub.signals()[0].detail


# --------------------------------------------------------------------------- docker


@pytest.mark.docker
async def test_container_logs_follow_and_survive_a_restart(docker_engine):
    name = f"wr-logs-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    script = ("i=0; while true; do i=$((i+1)); echo \"ERROR tick $i\"; "
              "if [ $((i % 5)) -eq 0 ]; then echo 'Circuit breaker OPEN'; fi; sleep 0.1; done")
    container = docker_engine.run_container(name, command=["sh", "-c", script])
    hub = LogHub(
        [LogSpec(name="box", container=name, since=60)],
        [PatternSpec(pattern="Circuit breaker OPEN", severity=Severity.P1, playbook="all-breakers-open")],
        docker_client_factory=lambda: docker_engine.client,
    )
    async with hub:
        await wait_for(lambda: len(texts(hub)) >= 5, limit=20, what="container lines")
        assert hub.signals()[0].state == "following"
        # restart mid-stream: the counter starts over in the new run
        await asyncio.to_thread(container.restart, timeout=1)
        before = len(texts(hub))

        def restarted():
            got = texts(hub)[before:]
            return any(t == "ERROR tick 2" for t in got) and len(got) >= 3

        await wait_for(restarted, limit=30, what="lines after the restart")
        got = texts(hub)
        # no line was delivered twice across the reconnection
        ticks = [t for t in got if t.startswith("ERROR tick")]
        runs = [[]]
        for t in ticks:
            n = int(t.split()[-1])
            if runs[-1] and n <= int(runs[-1][-1].split()[-1]):
                runs.append([])
            runs[-1].append(t)
        for run in runs:
            nums = [int(t.split()[-1]) for t in run]
            assert nums == list(range(nums[0], nums[0] + len(nums))), nums
        assert len(runs) >= 2
        sig = hub.signals()[0]
        assert sig.errors[0] >= 5 and sig.pattern_hits.get("Circuit breaker OPEN", 0) >= 1
        findings = evaluate(Snapshot(readings={"logs": tuple(hub.signals())}))
        assert any(f.playbook == "all-breakers-open" for f in findings)
    await asyncio.to_thread(container.remove, force=True)


@pytest.mark.docker
async def test_missing_container_waits_then_follows(docker_engine):
    name = f"wr-logs-late-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    hub = LogHub([LogSpec(name="late", container=name)], docker_client_factory=lambda: docker_engine.client)
    async with hub:
        await wait_for(lambda: "not found" in hub.signals()[0].detail, limit=10, what="not found")
        c = docker_engine.run_container(name, command=["sh", "-c", "echo 'WARN hello'; sleep 30"])
        await wait_for(lambda: texts(hub) == ["WARN hello"], limit=20, what="line of the late container")
        assert hub.signals()[0].warnings[0] == 1
    await asyncio.to_thread(c.remove, force=True)


# --------------------------------------------------------------------------- signals


def test_exact_window_counts_with_an_injected_clock():
    clock = Clock()
    hub = LogHub([LogSpec(name="svc", path="/nonexistent/x.log")], clock=clock)
    hub.feed("svc", ["ERROR a"] * 3 + ["WARN w"] * 2 + ["INFO i"])
    clock.t += 120  # 2 minutes later
    hub.feed("svc", ["ERROR b"] * 4)
    clock.t += 400  # ~8.7 minutes after the first lines
    hub.feed("svc", ["ERROR c"])
    s = hub.signals()[0]
    assert s.errors == (1, 1, 8)
    assert s.warnings == (0, 0, 2)
    assert s.lines == (1, 1, 11)
    clock.t += 59
    assert hub.signals()[0].errors == (1, 1, 8)
    clock.t += 1  # exactly 60 s after the last error: out of the 1-minute window
    assert hub.signals()[0].errors == (0, 1, 8)
    clock.t += 900 - 520 - 60 + 1  # first batch now 901 s old
    assert hub.signals()[0].errors == (0, 0, 5)
    clock.t += 3600
    assert hub.signals()[0].errors == (0, 0, 0)
    # the ring is reused after a wrap: counts start from zero, not from stale buckets
    hub.feed("svc", ["ERROR again"])
    assert hub.signals()[0].errors == (1, 1, 1)


def test_bucket_boundaries_are_exact():
    clock = Clock(1_800_000_000.999)
    hub = LogHub([LogSpec(name="svc", path="/nonexistent/x.log")], clock=clock)
    for _ in range(900):
        hub.feed("svc", ["ERROR x"])
        clock.t += 1
    clock.t -= 1
    s = hub.signals()[0]
    assert s.errors == (60, 300, 900)
    assert s.lines == (60, 300, 900)


def test_success_markers_rate():
    clock = Clock()
    hub = LogHub([LogSpec(name="l", path="/nonexistent/x.log",
                          success=("Event processed successfully", "Action executed successfully"))], clock=clock)
    clock.t += 300
    for _ in range(10):
        hub.feed("l", ["INFO Event processed successfully", "INFO Action executed successfully", "INFO other"])
    s = hub.signals()[0]
    assert s.success_per_min == pytest.approx(20 * 60 / 300)


def test_silence_finding_points_to_the_playbook():
    clock = Clock()
    hub = LogHub([LogSpec(name="event-listener", path="/nonexistent/x.log", silence_after=300,
                          silence_playbook="listener-failure", service="listener")], clock=clock)
    hub.feed("event-listener", ["INFO Event processed successfully"])
    clock.t += 299
    assert not [f for f in evaluate(Snapshot(readings={"logs": tuple(hub.signals())}))
                if f.key.startswith("logs:silence")]
    clock.t += 2
    s = hub.signals()[0]
    assert s.silent_for_s == pytest.approx(301)
    found = [f for f in evaluate(Snapshot(readings={"logs": tuple(hub.signals())}))
             if f.key == "logs:silence:event-listener"]
    assert len(found) == 1
    f = found[0]
    assert f.playbook == "listener-failure" and f.severity is Severity.P1
    assert f.target == "service:listener" and "5m" in f.summary
    hub.feed("event-listener", ["INFO back"])
    assert not [f for f in evaluate(Snapshot(readings={"logs": tuple(hub.signals())}))
                if f.key.startswith("logs:silence")]


def test_silence_counts_from_start_when_nothing_ever_came():
    clock = Clock()
    hub = LogHub([LogSpec(name="proc", path="/nonexistent/x.log", silence_after=60,
                          silence_playbook="events-not-processed")], clock=clock)
    clock.t += 61
    fs = evaluate(Snapshot(readings={"logs": tuple(hub.signals())}))
    assert [f.playbook for f in fs if f.key == "logs:silence:proc"] == ["events-not-processed"]


def test_patterns_make_findings_with_playbooks_and_expire():
    clock = Clock()
    hub = LogHub(
        [LogSpec(name="api", path="/nonexistent/a.log"), LogSpec(name="worker", path="/nonexistent/w.log")],
        [
            PatternSpec(pattern="Circuit breaker OPEN", severity=Severity.P1, playbook="all-breakers-open"),
            PatternSpec(pattern=r"Failed to acquire connection from pool", severity=Severity.P1,
                        playbook="db-pool-exhausted", sources=("api",), min_count=2, name="pool"),
        ],
        clock=clock,
    )
    hub.feed("worker", ["WARN Circuit breaker OPEN for trigger t-1", "Failed to acquire connection from pool"] * 2)
    hub.feed("api", ["ERROR Failed to acquire connection from pool"])
    fs = {f.key: f for f in evaluate(Snapshot(readings={"logs": tuple(hub.signals())}))}
    assert fs["logs:pattern:worker:Circuit breaker OPEN"].playbook == "all-breakers-open"
    assert fs["logs:pattern:worker:Circuit breaker OPEN"].severity is Severity.P1
    assert "trigger t-1" in " ".join(fs["logs:pattern:worker:Circuit breaker OPEN"].evidence)
    assert "logs:pattern:api:pool" not in fs  # one hit, min_count 2
    assert not any(k.startswith("logs:pattern:worker:pool") for k in fs)  # not configured for worker
    hub.feed("api", ["ERROR Failed to acquire connection from pool"])
    fs = {f.key: f for f in evaluate(Snapshot(readings={"logs": tuple(hub.signals())}))}
    assert fs["logs:pattern:api:pool"].playbook == "db-pool-exhausted"
    clock.t += 301
    fs = evaluate(Snapshot(readings={"logs": tuple(hub.signals())}))
    assert not [f for f in fs if f.key.startswith("logs:pattern")]


def test_error_spike_rule():
    clock = Clock()
    hub = LogHub([LogSpec(name="api", path="/nonexistent/a.log", error_spike=10, service="api-gateway")], clock=clock)
    hub.feed("api", ["ERROR x"] * 9)
    assert not [f for f in evaluate(Snapshot(readings={"logs": tuple(hub.signals())})) if "errors" in f.key]
    hub.feed("api", ["ERROR y"] * 3)
    fs = [f for f in evaluate(Snapshot(readings={"logs": tuple(hub.signals())})) if f.key == "logs:errors:api"]
    assert len(fs) == 1 and fs[0].severity is Severity.P2 and fs[0].target == "service:api-gateway"
    hub.feed("api", ["FATAL z"] * 100)
    fs = [f for f in evaluate(Snapshot(readings={"logs": tuple(hub.signals())})) if f.key == "logs:errors:api"]
    assert fs[0].severity is Severity.P1


def test_recent_distinct_errors_for_the_brief():
    hub = LogHub([LogSpec(name="l", path="/nonexistent/x.log")], distinct_errors=3)
    hub.feed("l", [
        "ERROR order 123 failed",
        "ERROR order 456 failed",  # the same message with another number: one entry
    ])
    assert hub.signals()[0].recent_errors == ("ERROR order 456 failed (×2)",)
    hub.feed("l", ["ERROR rpc timeout", "INFO fine", "ERROR nonce too low", "ERROR pool exhausted"])
    # newest first, at most 3 distinct: the oldest distinct message left
    assert hub.signals()[0].recent_errors == ("ERROR pool exhausted", "ERROR nonce too low", "ERROR rpc timeout")
    hub.feed("l", ["ERROR rpc timeout"])
    assert hub.signals()[0].recent_errors == ("ERROR rpc timeout (×2)", "ERROR pool exhausted", "ERROR nonce too low")


def test_buffer_is_bounded_and_subscribers_get_batches():
    hub = LogHub([LogSpec(name="l", path="/nonexistent/x.log")], buffer=100)
    batches = []
    unsubscribe = hub.subscribe(batches.append)
    hub.feed("l", [f"line {i}" for i in range(250)])
    assert len(hub.buffer) == 100 and hub.recent()[0].text == "line 150"
    assert [len(b) for b in batches] == [250]
    assert [ln.seq for ln in batches[0]] == list(range(1, 251))
    unsubscribe()
    hub.feed("l", ["more"])
    assert len(batches) == 1


def test_a_failing_subscriber_does_not_stop_ingestion():
    hub = LogHub([LogSpec(name="l", path="/nonexistent/x.log")])
    hub.subscribe(lambda lines: 1 / 0)
    got = []
    hub.subscribe(got.extend)
    hub.feed("l", ["a", "b"])
    assert [ln.text for ln in got] == ["a", "b"]


def test_invalid_specs_are_refused():
    with pytest.raises(ValueError, match="exactly one"):
        LogHub([LogSpec(name="x")])
    with pytest.raises(ValueError, match="duplicate"):
        LogHub([LogSpec(name="x", path="a"), LogSpec(name="x", path="b")])
    with pytest.raises(ValueError, match="not a valid regex"):
        LogHub([LogSpec(name="x", path="a")], [PatternSpec(pattern="(unclosed")])


async def test_hub_is_a_monitor_source(tmp_path):
    from backends.engine.monitor import Monitor, Source
    from backends.engine.rules import make_rules

    path = tmp_path / "listener.log"
    clock_offset = [0.0]
    hub = LogHub(
        [LogSpec(name="listener", path=str(path), silence_after=0.3, silence_playbook="listener-failure")],
        [PatternSpec(pattern="Circuit breaker OPEN", severity=Severity.P1, playbook="all-breakers-open")],
        poll_interval=0.02, interval=0.05, clock=lambda: time.time() + clock_offset[0],
    )
    assert isinstance(hub, Source) and hub.name == "logs"
    path.write_text("")
    mon = Monitor([hub], rules=make_rules())
    await mon.start()
    try:
        await wait_for(lambda: hub.signals()[0].state == "following", what="following")
        append(path, "Circuit breaker OPEN")

        def keys():
            return {f.key for f in mon.snapshot.findings}

        await wait_for(lambda: "logs:pattern:listener:Circuit breaker OPEN" in keys(), what="pattern finding")
        await wait_for(lambda: "logs:silence:listener" in keys(), what="silence finding")
        readings = mon.snapshot.readings["logs"]
        assert all(isinstance(r, LogSignalReading) and isinstance(r, LogSignals) for r in readings)
    finally:
        await mon.stop()
        await hub.stop()


def test_specs_from_the_reference_config():
    raw = tomllib.loads((ROOT / "examples" / "reference.toml").read_text())
    specs, patterns = specs_from_config(raw)
    by = {s.name: s for s in specs}
    listener = by["event-listener"]
    assert listener.path == "logs/event-listener.log" and listener.silence_after == 300
    assert listener.success == ("Event processed successfully",)
    assert listener.service == "listener" and listener.silence_playbook == "listener-failure"
    api = by["api-gateway"]
    assert api.compose == ("erc8004", "api-gateway") and api.kind == "docker"
    assert "listener" not in by  # same file as event-listener: not followed twice
    assert patterns[0].pattern == "Circuit breaker OPEN" and patterns[0].severity is Severity.P1
    assert patterns[0].playbook == "all-breakers-open"


def test_specs_from_the_typed_config(tmp_path, monkeypatch):
    config = pytest.importorskip("backends.config")
    cfg_path = tmp_path / "warroom.toml"
    cfg_path.write_text(
        '[warroom]\nname = "t"\n'
        '[[commands]]\nname = "journal"\nargv = ["journalctl", "-f", "-o", "json", "-u", "{service}"]\n'
        '[[services]]\nname = "worker"\nkind = "process"\nmatch = "worker"\nlogs = "journal"\nsilence_after = "2m"\n'
        '[[logs]]\nname = "app"\npath = "logs/*.log"\nsilence_after = "5m"\n'
        '[[log_patterns]]\npattern = "(?i)queue_critical_depth"\nseverity = "P1"\nplaybook = "queue-overflow"\n'
        'sources = ["app"]\n'
    )
    cfg = config.load_config(cfg_path)
    hub = LogHub.from_config(cfg)
    by = {s.name: s for s in hub.specs}
    # relative to the config file's directory
    assert os.path.join(by["app"].cwd or "", by["app"].path) == str(tmp_path / "logs" / "*.log")
    assert by["worker"].command == ("journalctl", "-f", "-o", "json", "-u", "worker")
    assert by["worker"].silence_after == 120
    p = hub.patterns[0]
    assert p.sources == ("app",) and p.playbook == "queue-overflow" and p.severity is Severity.P1
    hub.feed("app", ["WARN QUEUE_CRITICAL_DEPTH 51000"])
    assert hub.signals()[0].pattern_hits == {"(?i)queue_critical_depth": 1}


# --------------------------------------------------------------------------- success markers


def _no_success(hub: LogHub) -> list:
    return [f for f in evaluate(Snapshot(readings={"logs": tuple(hub.signals())}))
            if f.key.startswith("logs:no-success")]


def test_lines_without_success_markers_make_an_events_not_processed_finding():
    clock = Clock()
    hub = LogHub([LogSpec(name="event-processor", path="/nonexistent/x.log", silence_after=300,
                          success=("Event processed successfully",), service="event-processor"),
                  LogSpec(name="plain", path="/nonexistent/y.log", silence_after=300)], clock=clock)
    hub.feed("event-processor", ["INFO Event processed successfully"])
    for _ in range(10):  # the processor keeps logging, but processes nothing
        clock.t += 30
        hub.feed("event-processor", ["INFO polling for events", "WARN retrying handler"])
        hub.feed("plain", ["INFO tick"])
    s = {x.name: x for x in hub.signals()}
    p = s["event-processor"]
    assert p.success_silent_for_s == pytest.approx(300) and p.lines_since_success == 20
    assert p.success_silence_s == 300  # silence_after by default
    assert s["plain"].success_per_min is None and s["plain"].success_silence_s is None
    [f] = _no_success(hub)
    assert f.key == "logs:no-success:event-processor" and f.severity is Severity.P2
    assert f.playbook == "events-not-processed" and f.target == "service:event-processor"
    assert "no success for 5m" in f.summary
    assert any("20 line(s) since" in e for e in f.evidence)
    assert any("'Event processed successfully'" in e for e in f.evidence)
    # no line at all is the silence rule's finding, not this one
    clock.t += 301
    keys = {f.key for f in evaluate(Snapshot(readings={"logs": tuple(hub.signals())}))}
    assert "logs:silence:event-processor" in keys and "logs:no-success:event-processor" not in keys
    # a success marker clears it
    hub.feed("event-processor", ["INFO Event processed successfully"])
    assert not _no_success(hub) and hub.signals()[0].lines_since_success == 0


def test_success_silence_and_playbook_keys_and_the_rate_floor():
    clock = Clock()
    hub = LogHub([LogSpec(name="l", path="/nonexistent/x.log", success=(r"settled id=\d+",),
                          success_silence=60, success_playbook="orders-stuck")], clock=clock)
    hub.feed("l", ["INFO settled id=12", "INFO settled id=13"])
    # two markers in the first seconds: 2/min (a rate over at least a minute), not 120/min
    assert hub.signals()[0].success_per_min == pytest.approx(2.0)
    clock.t += 59
    hub.feed("l", ["INFO waiting"])
    assert not _no_success(hub)
    clock.t += 2
    hub.feed("l", ["INFO waiting"])
    [f] = _no_success(hub)
    assert f.playbook == "orders-stuck" and "1m" in f.summary
    # nothing is reported for a source without markers, however long
    clock.t += 3600
    assert not _no_success(LogHub([LogSpec(name="x", path="/nonexistent/z.log", silence_after=60)], clock=clock))


async def test_success_markers_from_a_real_file_backlog_and_live_lines(tmp_path):
    """A real file: the backlog's timestamped markers set the rate and the last success;
    live lines without a marker then make the finding."""
    path = tmp_path / "processor.log"
    clock = FakeClock(float(int(time.time())))  # the hub's clock: a whole second, standing still
    now = clock.time()

    def ts(ago: float) -> str:
        return datetime.fromtimestamp(now - ago, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    path.write_text("".join(f"{ts(a)} INFO Event processed successfully\n" for a in (170, 140, 110, 80))
                    + f"{ts(20)} INFO polling\n")
    hub = LogHub([LogSpec(name="proc", path=str(path), success=("Event processed successfully",),
                          success_silence=60)], poll_interval=0.02, clock=clock.time)
    await hub.start()
    try:
        await wait_for(lambda: hub.signals()[0].total_lines == 5, what="backlog")
        s = hub.signals()[0]
        assert s.success_per_min == pytest.approx(4 * 60 / 170, rel=0.05)  # 4 over the ~170 s read back
        assert s.last_success_at is not None and s.last_success_at.timestamp() == now - 80
        assert s.lines_since_success == 1
        [f] = _no_success(hub)  # 80 s without a marker while the file keeps going
        assert f.playbook == "events-not-processed"
        append(path, "INFO Event processed successfully")
        await wait_for(lambda: hub.signals()[0].lines_since_success == 0 and hub.signals()[0].total_lines == 6,
                       what="live marker")
        assert not _no_success(hub)
    finally:
        await hub.stop()


def test_success_keys_from_the_typed_config(tmp_path):
    config = pytest.importorskip("backends.config")
    cfg_path = tmp_path / "warroom.toml"
    cfg_path.write_text('[[logs]]\nname = "proc"\npath = "p.log"\nsuccess = ["done"]\nsilence_after = "5m"\n'
                        'success_silence = "2m"\nsuccess_playbook = "orders-stuck"\n')
    [spec] = LogHub.from_config(config.load_config(cfg_path)).specs
    assert (spec.success, spec.success_silence, spec.success_playbook) == (("done",), 120.0, "orders-stuck")
    cfg_path.write_text('[[logs]]\nname = "proc"\npath = "p.log"\nsuccess_silence = "2m"\n')
    with pytest.raises(config.ConfigError, match="success_silence without success markers"):
        config.load_config(cfg_path)


async def test_lines_before_a_megabyte_last_line_show_at_start(tmp_path):
    """Issue 21: with a log whose last line is 1 MB, the history read at start showed none
    of the lines before it (the back-read window held only part of the long line)."""
    path = tmp_path / "big.log"
    path.write_bytes(b"".join(f"INFO line {i}\n".encode() for i in range(20)) + b"ERROR " + b"x" * 1_000_000 + b"\n")
    hub = LogHub([LogSpec(name="app", path=str(path), backlog_lines=5)], poll_interval=0.02)
    async with hub:
        await wait_for(lambda: len(texts(hub)) >= 5, what="the backlog")
        shown = texts(hub)
        assert [t for t in shown if t.startswith("INFO")] == [f"INFO line {i}" for i in range(16, 20)], shown
        assert shown[-1].startswith("ERROR x") and "cut" in shown[-1]
