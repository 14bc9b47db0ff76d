"""The flight recorder (backends/engine/recorder.py, `warroom record`, the console's [record]).

Redaction: `warroom record` against the real services (Postgres, Redis, anvil, a local HTTP
check, a log file) with a config full of secrets (a DSN password, a Redis password, a
PagerDuty routing key, tokens in URLs' userinfo and query strings, a bearer header, an
apprise channel token, a keystore path); the raw file (every batch decompressed) and its
`--dump` are grepped for each secret. Also: the file is bounded by age and size (what is
left starts at a keyframe), the console records while [record] is set and not with
--no-record, the postmortem draft from a recording.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backends.actions.base import ActionPlan, ActionResult
from backends.clock import FakeClock
from backends.config import load_config, load_config_text
from backends.engine.recorder import Recorder, Recording, postmortem_from_recording, raw_text
from backends.model import Finding, QueueReading, Severity, Snapshot, SourceStatus, Status
from tests.harness import wait_until

ROOT = Path(__file__).resolve().parents[1]

PG_PASSWORD = "pgPassw0rd-Zq81xv"
REDIS_PASSWORD = "redisPassw0rd-Kk27"
PD_KEY = "PDROUTINGKEY0123456789abcdefABCD"  # 32 characters, as PagerDuty's
RPC_USER_TOKEN = "rpcUserinfoTok3n77"
RPC_QUERY_TOKEN = "rpcQueryTok3n-9f0e"
CHECK_TOKEN = "checkQueryTok3n-51aa"
HEADER_TOKEN = "bearerHeaderTok3n-c4d2"
CHANNEL_TOKEN = "channelTok3n-8b8b8b"
KEYSTORE_NAME = "UTC--2026-12-03--keystore-of-the-arbiter.json"
SECRETS = [PG_PASSWORD, REDIS_PASSWORD, PD_KEY, RPC_USER_TOKEN, RPC_QUERY_TOKEN, CHECK_TOKEN, HEADER_TOKEN,
           CHANNEL_TOKEN]


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = f"ok {self.path}".encode()  # echoes the token in its query: must not be recorded
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture()
def health_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def secret_config(tmp_path: Path, pg, redis_server, anvil, health_port: int) -> tuple[Path, Path]:
    keystore = tmp_path / "keys" / KEYSTORE_NAME
    keystore.parent.mkdir()
    keystore.write_text('{"address": "f39fd6e51aad88f6f4ce6ab8827279cfffb92266", "crypto": {}}')
    log = tmp_path / "app.log"
    log.write_text(
        f"2026-12-03T06:00:00Z ERROR connect failed postgresql://app:{PG_PASSWORD}@db.internal/orders\n"
        f"2026-12-03T06:00:01Z WARN retrying redis://:{REDIS_PASSWORD}@cache:6379/0\n"
        f"2026-12-03T06:00:02Z INFO paging with routing key {PD_KEY}\n"
        f"2026-12-03T06:00:03Z INFO signer loaded from {keystore}\n"
        f"2026-12-03T06:00:04Z INFO rpc https://{RPC_USER_TOKEN}@rpc.example/v3?apikey={RPC_QUERY_TOKEN}\n"
    )
    text = f"""
[warroom]
name = "secretive"
operator = "alice"
state_dir = "{tmp_path / 'state'}"
refresh = "1s"

[postgres.main]
dsn = "postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{pg.port}/postgres"
interval = "1s"

[redis.main]
url = "redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_server.port}/0"
interval = "1s"

[chain.local]
chain_id = {anvil.chain_id}
endpoints = ["http://{RPC_USER_TOKEN}@127.0.0.1:{anvil.port}/?apikey={RPC_QUERY_TOKEN}"]
max_head_age = "1d"
keystore = "{keystore}"
interval = "1s"

[[checks]]
name = "gateway"
kind = "http"
url = "http://127.0.0.1:{health_port}/health?token={CHECK_TOKEN}"
headers = {{ Authorization = "Bearer {HEADER_TOKEN}" }}
interval = "1s"

[[logs]]
name = "app"
path = "{log}"

[[escalation.levels]]
name = "dev"
after = "0m"
channels = ["json://127.0.0.1:9/hook?token={CHANNEL_TOKEN}"]

[escalation.pagerduty]
routing_key = "{PD_KEY}"

[record]
path = "{tmp_path / 'state' / 'recording.sqlite'}"
"""
    path = tmp_path / "warroom.toml"
    path.write_text(text)
    return path, keystore


def _dump(path: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "tui.cli", "replay", str(path), "--dump"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_record_redacts_every_secret_at_write_time(tmp_path, pg, redis_server, anvil, health_server):
    config_path, keystore = secret_config(tmp_path, pg, redis_server, anvil, health_server)
    load_config(config_path)  # valid
    out = tmp_path / "rec.sqlite"
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "xdg"))
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "record", "--config", str(config_path),
                             "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        def recorded() -> bool:
            if not out.exists():
                return False
            try:
                text = raw_text(out)
            except Exception:
                return False
            # every source was read (or failed, with its reason) and the log lines were kept
            return all(s in text for s in ("PostgresReading", "redis.main", "EndpointReading", "CheckReading",
                                           "signer loaded from", "routing key"))

        wait_until(recorded, 60, "the recording to hold a reading of every source and the log lines")
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "records in" in stderr and str(out) in stderr

    raw = raw_text(out)
    dump = _dump(out)
    for secret in [*SECRETS, str(keystore), KEYSTORE_NAME]:
        assert secret not in raw, f"{secret!r} is in the recording"
        assert secret not in dump, f"{secret!r} is in the dump"
    # and the file is what it says: SQLite, batches compressed (no secret in the bytes either)
    data = out.read_bytes()
    assert data.startswith(b"SQLite format 3\x00")
    for secret in SECRETS:
        assert secret.encode() not in data
    # what was masked is still readable: the URLs keep their shape, the lines their words
    assert "postgresql://app:********@db.internal/orders" in raw
    assert "routing key ********" in raw
    # the dump: one JSON object a line, the schema's kinds
    lines = [json.loads(line) for line in dump.splitlines()]
    assert lines[0]["t"] == "meta" and lines[0]["codec"] == "zlib" and lines[0]["name"] == "secretive"
    kinds = {rec["t"] for rec in lines}
    assert {"meta", "snapshot", "log"} <= kinds and kinds <= {"meta", "snapshot", "poll", "delta", "finding",
                                                             "log", "action", "audit", "incident"}
    assert all("at" in rec for rec in lines)


# --------------------------------------------------------------------------- bounds

T0 = datetime(2026, 11, 22, 8, 0, 0, tzinfo=UTC)


def _snap(at: datetime, depth: int, findings=()) -> Snapshot:
    st = SourceStatus(name="queues", kind="queues", last_good=at, last_attempt=at, interval=2.0)
    q = QueueReading(source="queues", at=at, name="action_jobs", key="action_jobs", depth=depth,
                     status=Status.WARN if depth > 1000 else Status.OK)
    return Snapshot(at=at, sources={"queues": st}, readings={"queues": (q,)}, findings=tuple(findings))


def test_old_batches_are_dropped_and_what_is_left_starts_at_a_keyframe(tmp_path):
    path = tmp_path / "r.sqlite"
    clock = FakeClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))  # max_age is counted on the recorder's clock
    now = clock.now()
    rec = Recorder(path, max_age=3600.0, keyframe_every=60.0, flush_every=3600.0, clock=clock.now).start()
    # 3 hours ago to now, a snapshot every 10 s; the writer flushes at each keyframe
    for i in range(0, 3 * 360 + 1):
        rec.on_snapshot(_snap(now - timedelta(seconds=3 * 3600 - i * 10), depth=i))
    rec.close()
    r = Recording(path)
    assert r.batches[0].key, "the recording starts at a keyframe"
    assert r.start is not None and r.start >= now - timedelta(seconds=3600 + 70)
    assert r.end is not None and r.end >= now - timedelta(seconds=11)
    first = next(r.records())
    assert first["t"] == "snapshot"


def test_the_file_stays_under_max_size(tmp_path):
    path = tmp_path / "r.sqlite"
    max_size = 1024**2
    rec = Recorder(path, max_size=max_size, max_age=10 * 365 * 86400.0, keyframe_every=30.0,
                   flush_every=3600.0).start()
    import random

    rnd = random.Random(7)
    for i in range(6000):  # incompressible detail: about 4 MB of batches
        at = T0 + timedelta(seconds=i * 5)
        snap = _snap(at, depth=i)
        q = replace(snap.readings["queues"][0], dead_letter_key="".join(rnd.choice("abcdef0123456789")
                                                                        for _ in range(600)))
        rec.on_snapshot(replace(snap, readings={"queues": (q,)}))
    rec.close()
    r = Recording(path)
    assert r.batches[0].key
    assert r.start is not None and r.start > T0 + timedelta(hours=1), "the oldest were dropped"
    assert path.stat().st_size <= max_size * 1.3  # SQLite pages and the index on top of the batches


# --------------------------------------------------------------------------- postmortem


def _plan() -> ActionPlan:
    return ActionPlan(action="service.restart", title="Restart action-workers", target="service:action-workers")


def test_postmortem_from_a_recording(tmp_path):
    path = tmp_path / "r.sqlite"
    clock = [T0]
    rec = Recorder(path, max_age=10 * 365 * 86400.0, clock=lambda: clock[0]).start()
    f = Finding(key="queue:action_jobs:depth", severity=Severity.P2, source="queues",
                summary="action_jobs depth 12,480 (high: >= 10,000)", since=T0 + timedelta(seconds=30))
    rec.on_snapshot(_snap(T0, 10))
    rec.on_snapshot(_snap(T0 + timedelta(seconds=30), 12_480, [f]))
    rec.on_action(_plan(), ActionResult(status="ok", summary="restarted 1 container",
                                        finished_at=T0 + timedelta(seconds=60)))
    rec.on_snapshot(_snap(T0 + timedelta(seconds=150), 12, []))
    rec.close()
    text = postmortem_from_recording(Recording(path))
    assert "## From the flight recording" in text
    assert "| action_jobs depth 12,480 (high: >= 10,000) | P2 | 2026-11-22 08:00:30 | 2026-11-22 08:02:30 | 2m |" \
        in text
    assert "| 2026-11-22 08:01:00 | service.restart | service:action-workers | ok | restarted 1 container |" in text
    out = subprocess.run([sys.executable, "-m", "tui.cli", "replay", str(path), "--postmortem"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == text


# --------------------------------------------------------------------------- the console records


def _redis_config(tmp_path: Path, redis_server, record: bool) -> object:
    text = f"""
[warroom]
state_dir = "{tmp_path / 'state'}"
[redis.main]
url = "{redis_server.url}"
interval = "1s"
""" + (f'[record]\npath = "{tmp_path / "console.sqlite"}"\n' if record else "")
    return load_config_text(text, env={})


async def test_the_console_records_while_record_is_set(tmp_path, redis_server):
    from backends.engine.core import build_engine
    from tui import cli
    from tui.app import WarroomApp

    config = _redis_config(tmp_path, redis_server, record=True)
    assert cli._recorder(config, None, no_record=True) is None  # --no-record
    assert cli._recorder(_redis_config(tmp_path, redis_server, record=False), None, no_record=False) is None
    engine = build_engine(config, read_only=True)
    app = WarroomApp(engine, config=config)
    app.audit_check_s = 0
    app.config_check_s = 0
    recorder = cli._recorder(config, app, no_record=False)
    assert recorder is not None and recorder.path == tmp_path / "console.sqlite"
    async with app.run_test(size=(120, 36)) as pilot:
        from backends.model import RedisReading

        deadline = time.monotonic() + 20
        while not (app.snapshot is not None and app.snapshot.of_type(RedisReading)):
            if time.monotonic() > deadline:
                raise AssertionError("the console never read Redis")
            await pilot.pause(0.05)
    await recorder.aclose()
    text = raw_text(recorder.path)
    assert "RedisReading" in text


async def test_the_live_postmortem_adds_what_the_recorder_saw(tmp_path):
    """[record] set: the incident screen's `p` (IncidentManager.postmortem) appends the recording's
    findings and actions from half an hour before the declaration on."""
    from backends.engine.incidents import IncidentManager, LocalIncidentStore

    path = tmp_path / "r.sqlite"
    clock = [T0]
    rec = Recorder(path, max_age=10 * 365 * 86400.0, clock=lambda: clock[0]).start()
    f = Finding(key="queue:action_jobs:depth", severity=Severity.P2, source="queues",
                summary="action_jobs depth 12,480 (high: >= 10,000)", since=T0 + timedelta(seconds=30))
    rec.on_snapshot(_snap(T0, 10))
    rec.on_snapshot(_snap(T0 + timedelta(seconds=30), 12_480, [f]))
    rec.on_action(_plan(), ActionResult(status="ok", summary="restarted 1 container",
                                        finished_at=T0 + timedelta(seconds=60)))
    rec.close()
    manager = IncidentManager(LocalIncidentStore(tmp_path / "incidents"), clock=lambda: T0 + timedelta(seconds=90))
    inc = await manager.declare("queue backlog", "P2", by="alice")
    assert "From the flight recording" not in manager.postmortem(inc.id)
    manager.recording_path = path
    text = manager.postmortem(inc.id)
    assert text.startswith("# Postmortem draft: queue backlog")
    assert "## From the flight recording" in text and "not cleared" in text
    assert "| 2026-11-22 08:01:00 | service.restart | service:action-workers | ok | restarted 1 container |" in text
    await manager.store.close() if hasattr(manager.store, "close") else None


async def test_actions_and_refusals_are_recorded_from_the_engine(tmp_path):
    """An executed action (plan, result) and a refused one (through the audit trail's mirror)."""
    from types import SimpleNamespace

    from backends.actions.base import Action, ActionEngine, Danger
    from backends.engine.audit import AuditLog
    from backends.errors import ActionRefused

    class Poke(Action):
        id = "test.poke"
        title = "Poke"
        danger = Danger.SAFE

        async def plan(self, **params):
            return ActionPlan(action=self.id, title="Poke the thing", target="thing", danger=Danger.SAFE)

        async def execute(self, plan, progress):
            return ActionResult(status="ok", summary="poked the thing")

    audit = AuditLog(tmp_path / "audit.jsonl")
    actions = ActionEngine(audit, operator="alice")
    actions.register(Poke())
    path = tmp_path / "r.sqlite"
    rec = Recorder(path).attach(SimpleNamespace(actions=actions, audit=audit))
    await actions.execute(await actions.plan("test.poke"), confirmation=True)
    actions.read_only = True
    with pytest.raises(ActionRefused):
        await actions.execute(await actions.plan("test.poke"), confirmation=True)
    await audit.flush()
    await rec.aclose()
    records = list(Recording(path).records())
    done = [r for r in records if r["t"] == "action"]
    assert len(done) == 1 and done[0]["plan"]["target"] == "thing" and done[0]["result"]["summary"] == "poked the thing"
    entries = [r["entry"] for r in records if r["t"] == "audit"]
    assert [e.get("result") for e in entries][-1] == "refused" and all("hash" not in e for e in entries)
    marks = Recording(path).marks
    assert [m.label for m in marks] == ["test.poke thing: ok", "test.poke thing: refused"]
