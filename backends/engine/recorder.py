"""The flight recorder: every reading, finding, log line, action and incident event, redacted
at write time, in one bounded SQLite file; and its reader (replay, dump, postmortem).

Writing. `Recorder.attach(engine)` subscribes to the monitor (Snapshots), the log hub
(LogLines), the action engine (executed actions: plan + confirmation + result) and the
incident manager. The callbacks run on the event loop and only put the (immutable) objects
on a queue; a writer thread encodes them to JSON, redacts every string, compresses them in
batches and writes them to SQLite. Nothing blocks the loop. The file is bounded by
`max_size` and `max_age` (oldest batches dropped, always from a keyframe on).

Redaction happens before anything is written: every value the config holds as a secret
(`backends.config.Secret`: DSN and Redis passwords, routing keys, channel URLs, tokens),
every keystore path, every value registered with `backends.errors.register_secret`, a URL's
userinfo and its token-like query parameters, key=value pairs that look secret and bearer
tokens are masked (`********`) in every string of every record (and in dict keys).

File layout (SQLite, stdlib sqlite3; batches compressed with zlib: no zstd module is
installed in the project's environment; `meta.codec` names the codec so a later version can
switch):

    meta(key TEXT PRIMARY KEY, value TEXT)          version, codec, name, environment, started
    batch(id INTEGER PRIMARY KEY, t0 REAL, t1 REAL, n INTEGER, key INTEGER, data BLOB)
          data = codec(JSON lines, one record per line); key = 1 when it starts with a keyframe
    mark(at REAL, kind TEXT, label TEXT, batch INTEGER)   findings and actions for the timeline

Record schema (one JSON object per record; `warroom replay FILE --dump` prints them, one per
line). Every record has `t` (its kind) and `at` (ISO 8601 UTC). Encoded objects are JSON
objects with `"__": "ClassName"` and only the fields that differ from their default;
datetimes are `{"$dt": "2026-12-03T06:21:14.237Z"}` (UTC, milliseconds), floats 4 significant digits, enums `{"$enum": "Class.value"}` (`"Severity.P1"`, `"Level.ERROR"`: the
integer enums by name), tuples JSON arrays.

    meta      version, codec, name, environment, started (first record of a recording)
    snapshot  sources {name: SourceStatus}, readings {source: [Reading]}, findings [Finding]
              (a keyframe: the whole state; one at the start and one a minute)
    poll      src, status (SourceStatus), readings [Reading]    a source's readings, whole
    delta     src, status? (patch), r? [[index, patch], ...]    what changed since its last record:
              a patch is a new value, or {"$d": {field: patch}, "$-": [fields back at default]} for
              an object, {"$l": [[index, patch]]} for a list of the same length
    finding   event ("appeared" | "cleared"), finding (Finding)
    log       lines [LogLine] (`"message": true`: the same as its text)
    action    plan (ActionPlan: action, title, target, danger, params, changes, guard),
              confirmed (bool), result (ActionResult: status, summary, details, counts)
    audit     entry: the audit trail's entry (backends/engine/audit.py) without its hash chain: every
              preview, cancellation, refusal, intent and outcome, as the trail has it
    incident  incident (Incident.to_dict())
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import logging
import os
import queue
import re
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backends import model
from backends.errors import MASK, redact
from backends.units import reveal

log = logging.getLogger(__name__)

VERSION = 1
CODEC = "zlib"
KEYFRAME_EVERY_S = 60.0
FLUSH_EVERY_S = 10.0  # a batch: what a crash may lose, and what compresses together
FLUSH_RECORDS = 2000
DEFAULT_MAX_SIZE = 256 * 1024**2
DEFAULT_MAX_AGE = 48 * 3600.0

# --------------------------------------------------------------------------- redaction

# query parameters whose values are masked in URLs (?token=, ?api_key=, ?access_token=, ?sig=...)
_SECRETY = re.compile(r"(?i)(password|passwd|pwd|secret|token|api[_-]?key|apikey|key|auth|sig|signature|"
                      r"credential|session|private)")
# config keys whose (plain string) values are secrets: as backends.config names them
_SECRET_KEY = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|private[_-]?key|routing[_-]?key|auth)")
_TOKEN_USER_SCHEMES = ("http", "https", "ws", "wss")
_URL = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]{0,31}://)(?P<userinfo>[^@/\s?#]*@)?(?P<rest>[^\s\"'<>]*)")
_QUERY_PAIR = re.compile(r"(?P<k>[^&=?#\s]+)=(?P<v>[^&#\s]*)")


def _mask_url(m: re.Match[str]) -> str:
    scheme, userinfo, rest = m["scheme"], m["userinfo"], m["rest"]
    out = scheme
    if userinfo:
        user, sep, _pw = userinfo[:-1].partition(":")
        # user:password -> user:********; a lone userinfo on http(s)/ws(s) (a token as user) -> ********
        if sep:
            out += f"{user}:{MASK}@" if user else f":{MASK}@"
        elif scheme[:-3].lower() in _TOKEN_USER_SCHEMES:
            out += f"{MASK}@"
        else:
            out += userinfo
    if "?" in rest:
        head, _, query = rest.partition("?")
        query = _QUERY_PAIR.sub(lambda q: f"{q['k']}={MASK}" if _SECRETY.search(q["k"]) and q["v"] else q[0],
                                query)
        rest = f"{head}?{query}"
    return out + rest


class Redactor:
    """Masks secrets in strings: the config's secrets (found by walking it), keystore paths,
    registered secrets (`backends.errors.redact`), URL userinfo and token query values."""

    def __init__(self, config: Any = None, extra: Iterable[str] = ()) -> None:
        self.secrets: set[str] = {s for s in extra if s and len(s) >= 4}
        if config is not None:
            self.secrets |= secrets_of_config(config)
        ordered = sorted(self.secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in ordered)) if ordered else None
        self.text = functools.lru_cache(maxsize=1 << 16)(self._text)

    def _text(self, s: str) -> str:
        if self._pattern is not None:
            s = self._pattern.sub(MASK, s)
        s = redact(s)
        if "://" in s:
            s = _URL.sub(_mask_url, s)
        return s

    def value(self, v: Any) -> Any:
        """A JSON value with every string (and dict key) redacted."""
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, dict):
            return {self.text(k) if isinstance(k, str) and k not in _FIELD_NAMES else k: self.value(x)
                    for k, x in v.items()}
        if isinstance(v, list):
            return [self.value(x) for x in v]
        return v


def _field_names() -> frozenset[str]:
    names = {"t", "at", "__", "$dt", "$enum", "src", "status", "readings", "sources", "findings", "lines",
             "event", "finding", "plan", "result", "confirmed", "incident"}
    for obj in vars(model).values():
        if isinstance(obj, type) and dataclasses.is_dataclass(obj):
            names.update(f.name for f in dataclasses.fields(obj))
    return frozenset(names)


_FIELD_NAMES = _field_names()  # record and model field names: schema, never redacted as keys


def secrets_of_config(config: Any) -> set[str]:
    """Every secret value in a config: `Secret`s (and the secret parts of secret URLs), values
    of keys named like secrets, keystore paths."""
    out: set[str] = set()
    seen: set[int] = set()

    def add(s: str) -> None:
        if s and len(s) >= 4:
            out.add(s)

    def url_parts(s: str) -> None:
        m = _URL.match(s)
        if not m:
            return
        if m["userinfo"]:
            user, sep, pw = m["userinfo"][:-1].partition(":")
            if sep:
                add(pw)
            elif m["scheme"][:-3].lower() in _TOKEN_USER_SCHEMES:
                add(user)
        _, _, query = m["rest"].partition("?")
        for q in _QUERY_PAIR.finditer(query):
            if _SECRETY.search(q["k"]):
                add(q["v"])

    def walk(v: Any, key: str = "", depth: int = 0) -> None:
        if depth > 12 or v is None or isinstance(v, bool | int | float | enum.Enum):
            return
        if hasattr(v, "reveal") and callable(v.reveal):
            text = reveal(v)
            if _URL.match(text):
                url_parts(text)  # the URL itself is shown (masked); its secret parts are secrets
            else:
                add(text)
            return
        if isinstance(v, str | Path):
            text = str(v)
            if key and ("keystore" in key.lower() or (_SECRET_KEY.search(key) and not key.endswith("_env"))):
                add(text)
                if isinstance(v, Path):
                    add(v.name if len(v.name) >= 8 else "")
                    add(str(v.expanduser().resolve()) if v.is_absolute() else "")
            if isinstance(v, str) and "://" in text:
                url_parts(text)
            return
        if id(v) in seen:
            return
        seen.add(id(v))
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            for f in dataclasses.fields(v):
                walk(getattr(v, f.name, None), f.name, depth + 1)
        elif isinstance(v, Mapping):
            for k, x in v.items():
                walk(x, str(k), depth + 1)
        elif isinstance(v, list | tuple | set | frozenset):
            for x in v:
                walk(x, key, depth + 1)

    walk(config)
    return out


# --------------------------------------------------------------------------- encoding

_CLASSES: dict[str, type] = {
    name: obj for name, obj in vars(model).items()
    if isinstance(obj, type) and (dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum))
}


def _defaults(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
    return out


_DEFAULTS: dict[type, dict[str, Any]] = {}
_FIELDS: dict[type, tuple[dataclasses.Field[Any], ...]] = {}


def encode(v: Any) -> Any:
    """A model object (or anything JSON-like) as plain JSON values (see the record schema)."""
    if isinstance(v, enum.Enum):  # before int: Severity and Level are IntEnums (kept by name)
        return {"$enum": f"{type(v).__name__}.{v.name if isinstance(v, enum.IntEnum) else v.value}"}
    if isinstance(v, float):
        return _round(v)
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, datetime):
        return {"$dt": _dt(v)}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        cls = type(v)
        defaults = _DEFAULTS.get(cls)
        if defaults is None:
            defaults = _DEFAULTS[cls] = _defaults(cls)
            _FIELDS[cls] = dataclasses.fields(v)
        out: dict[str, Any] = {"__": cls.__name__}
        for f in _FIELDS[cls]:
            x = getattr(v, f.name)
            if f.name in defaults and _same(x, defaults[f.name]):
                continue
            if f.default_factory is not dataclasses.MISSING and isinstance(x, Mapping | tuple | list) and not x:
                continue
            if f.name == "message" and cls is model.LogLine and x == getattr(v, "text", None):
                out["message"] = True  # most lines: the message is the text; said once
                continue
            out[f.name] = encode(x)
        return out
    if isinstance(v, Mapping):
        return {str(k.value if isinstance(k, enum.Enum) else k): encode(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        return [encode(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    if hasattr(v, "reveal"):
        return MASK
    return str(v)


def _round(x: float) -> float:
    """4 significant digits (a latency of 8.228 ms, 1.75 s, 35.2 %), whole numbers from 10,000 up:
    what the panes show, and half of a recording's bytes otherwise."""
    if x != x or x in (float("inf"), float("-inf")):
        return x
    return float(round(x)) if abs(x) >= 10_000 else float(f"{x:.4g}")


def _dt(at: datetime) -> str:
    """ISO 8601 in UTC to the millisecond: 2026-12-03T06:21:14.237Z."""
    if at.tzinfo is None:
        return at.isoformat(timespec="milliseconds")
    return at.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


def decode(v: Any) -> Any:
    """The inverse of `encode` for model classes (unknown classes stay dicts)."""
    if isinstance(v, list):
        return tuple(decode(x) for x in v)
    if not isinstance(v, dict):
        return v
    if "$dt" in v and len(v) == 1:
        return datetime.fromisoformat(v["$dt"])
    if "$enum" in v and len(v) == 1:
        cname, _, value = str(v["$enum"]).partition(".")
        ecls = _CLASSES.get(cname)
        if ecls is not None and issubclass(ecls, enum.Enum):
            try:
                return ecls[value] if issubclass(ecls, enum.IntEnum) else ecls(value)
            except (ValueError, KeyError):
                return value
        return value
    tag = v.get("__")
    cls = _CLASSES.get(tag) if isinstance(tag, str) else None
    if cls is not None and dataclasses.is_dataclass(cls):
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: decode(x) for k, x in v.items() if k in names}
        if cls is model.LogLine and kwargs.get("message") is True:
            kwargs["message"] = kwargs.get("text", "")
        try:
            return cls(**kwargs)
        except TypeError:
            return {k: x for k, x in v.items()}
    return {k: decode(x) for k, x in v.items()}


def _iso(at: datetime | None) -> str:
    return (at or datetime.now(UTC)).astimezone(UTC).isoformat()


def _ts(at: datetime) -> float:
    return at.timestamp()


def _plan_dict(plan: Any) -> dict[str, Any]:
    danger = getattr(plan, "danger", None)
    guard = getattr(plan, "guard", None)
    return {
        "action": getattr(plan, "action", ""), "title": getattr(plan, "title", ""),
        "target": getattr(plan, "target", ""),
        "danger": getattr(danger, "value", str(danger)) if danger is not None else None,
        "params": encode(dict(getattr(plan, "params", {}) or {})),
        "reason": getattr(plan, "reason", None),
        "changes": [{"target": c.target, "description": c.description, "before": encode(c.before),
                     "after": encode(c.after)} for c in getattr(plan, "changes", ())],
        "guard": {"ok": getattr(guard, "ok", None), "description": getattr(guard, "description", "")},
        "preview": getattr(plan, "preview", ""),
    }


def _result_dict(result: Any) -> dict[str, Any]:
    return {
        "status": getattr(result, "status", ""), "summary": getattr(result, "summary", ""),
        "details": list(getattr(result, "details", ()) or ()),
        "counts": dict(getattr(result, "counts", {}) or {}),
        "finished_at": _iso(getattr(result, "finished_at", None)),
    }


# --------------------------------------------------------------------------- store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS batch(id INTEGER PRIMARY KEY, t0 REAL, t1 REAL, n INTEGER, key INTEGER, data BLOB);
CREATE TABLE IF NOT EXISTS mark(at REAL, kind TEXT, label TEXT, batch INTEGER);
CREATE INDEX IF NOT EXISTS mark_at ON mark(at);
"""


def _compress(data: bytes) -> bytes:
    return zlib.compress(data, 9)


def _decompress(data: bytes) -> bytes:
    return zlib.decompress(data)


def raw_text(path: str | os.PathLike[str]) -> str:
    """Everything a recording holds, decompressed, as text (meta, every batch's records, marks):
    what the redaction test greps."""
    con = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True)
    try:
        parts = [f"{k}={v}" for k, v in con.execute("SELECT key, value FROM meta")]
        parts += [_decompress(d).decode() for (d,) in con.execute("SELECT data FROM batch ORDER BY id")]
        parts += [f"{k} {lbl}" for k, lbl in con.execute("SELECT kind, label FROM mark")]
    finally:
        con.close()
    return "\n".join(parts)


def _patch_of(old: Any, new: Any) -> Any:
    """What turns encoded `old` into encoded `new`: `new` itself, or for two objects of one class
    `{"$d": {field: patch, ...}, "$-": [fields back at their default]}`, for two lists of one
    length `{"$l": [[index, patch], ...]}` (see `apply_patch`)."""
    if isinstance(old, dict) and isinstance(new, dict) and old.get("__") == new.get("__") and "$dt" not in new \
            and "$enum" not in new:
        d = {k: _patch_of(old.get(k), v) for k, v in new.items() if old.get(k) != v}
        gone = [k for k in old if k not in new]
        out: dict[str, Any] = {"$d": d}
        if gone:
            out["$-"] = gone
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new) and old:
        return {"$l": [[i, _patch_of(o, n)] for i, (o, n) in enumerate(zip(old, new, strict=True)) if o != n]}
    return new


def apply_patch(old: Any, patch: Any) -> Any:
    """`old` (encoded) with `patch` (from `_patch_of`) applied."""
    if isinstance(patch, dict) and "$d" in patch and isinstance(old, dict):
        out = {k: v for k, v in old.items() if k not in patch.get("$-", ())}
        for k, v in patch["$d"].items():
            out[k] = apply_patch(old.get(k), v)
        return out
    if isinstance(patch, dict) and "$l" in patch and isinstance(old, list):
        lst = list(old)
        for i, v in patch["$l"]:
            lst[i] = apply_patch(lst[i], v)
        return lst
    return patch


@dataclass
class _Item:
    kind: str
    at: datetime
    payload: Any


class Recorder:
    """Records an engine to `path`. Callbacks enqueue; a writer thread does the rest."""

    def __init__(self, path: str | os.PathLike[str], *, config: Any = None,
                 max_size: int = DEFAULT_MAX_SIZE, max_age: float = DEFAULT_MAX_AGE,
                 keyframe_every: float = KEYFRAME_EVERY_S, flush_every: float = FLUSH_EVERY_S,
                 extra_secrets: Iterable[str] = (), clock: Callable[[], datetime] = model.utcnow) -> None:
        self.path = Path(path)
        self.clock = clock  # stamps log lines, actions and incident events with when they were seen
        self.config = config
        self.max_size = max_size
        self.max_age = max_age
        self.keyframe_every = keyframe_every
        self.flush_every = flush_every
        self.redactor = Redactor(config, extra_secrets)
        self._q: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._unsub: list[Callable[[], Any]] = []
        self.records = 0  # written
        self.batches = 0
        self.error: str | None = None
        self.cpu_s = 0.0  # CPU time of the writer thread (the benchmark's figure)
        # writer-thread state
        self._last_enc: dict[str, tuple[Any, Any]] = {}  # source -> (its readings, its status), encoded
        self._last_obj: dict[str, tuple[Any, Any]] = {}  # source -> the objects last encoded
        self._findings: dict[str, model.Finding] = {}
        self._last_key = 0.0
        self._pending: list[str] = []
        self._pending_marks: list[tuple[float, str, str]] = []
        self._pending_t0: float | None = None
        self._pending_t1 = 0.0
        self._pending_key = False
        self._last_flush = time.monotonic()
        self._con: sqlite3.Connection | None = None

    # -- wiring (on the loop) -----------------------------------------------------

    def start(self) -> Recorder:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="warroom-recorder", daemon=True)
            self._thread.start()
        return self

    def attach(self, engine: Any) -> Recorder:
        """Subscribe to what the engine publishes (each part optional) and start writing."""
        self.start()
        monitor = getattr(engine, "monitor", None)
        if monitor is not None and callable(getattr(monitor, "subscribe", None)):
            self._unsub.append(monitor.subscribe(self.on_snapshot))
            snap = getattr(monitor, "snapshot", None)
            if isinstance(snap, model.Snapshot):
                self.on_snapshot(snap)
        logs = getattr(engine, "logs", None)
        if logs is not None and callable(getattr(logs, "subscribe", None)):
            self._unsub.append(logs.subscribe(self.on_log_lines))
        actions = getattr(engine, "actions", None)
        if actions is not None and isinstance(getattr(actions, "_listeners", None), list):
            actions._listeners.append(self.on_action)
            self._unsub.append(lambda: actions._listeners.remove(self.on_action)
                               if self.on_action in actions._listeners else None)
        audit = getattr(engine, "audit", None)
        mirrors = getattr(audit, "mirrors", None)
        if isinstance(mirrors, list):  # every audit entry: previews, cancellations, refusals, intents, outcomes
            mirrors.append(self.on_audit)
            self._unsub.append(lambda: mirrors.remove(self.on_audit) if self.on_audit in mirrors else None)
        incidents = getattr(engine, "incidents", None)
        if incidents is not None and callable(getattr(incidents, "subscribe", None)):
            self._unsub.append(incidents.subscribe(self.on_incident))
        return self

    def on_audit(self, entry: Mapping[str, Any]) -> None:
        self._q.put(_Item("audit", self.clock(), dict(entry)))

    def on_snapshot(self, snapshot: model.Snapshot) -> None:
        self._q.put(_Item("snapshot", snapshot.at, snapshot))

    def on_log_lines(self, lines: Iterable[model.LogLine]) -> None:
        batch = list(lines)
        if batch:
            self._q.put(_Item("log", self.clock(), batch))  # when it was seen (backlog lines are older)

    def on_action(self, plan: Any, result: Any) -> None:
        self._q.put(_Item("action", getattr(result, "finished_at", None) or self.clock(), (plan, result)))

    def on_incident(self, incident: Any) -> None:
        to_dict = getattr(incident, "to_dict", None)
        if callable(to_dict):
            self._q.put(_Item("incident", self.clock(), to_dict()))

    def close(self, timeout: float = 10.0) -> None:
        """Unsubscribe, write what is queued, close the file (blocking: call it off the loop or at exit)."""
        for undo in self._unsub:
            try:
                undo()
            except Exception:
                pass
        self._unsub.clear()
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout)
            self._thread = None

    async def aclose(self, wait_s: float = 10.0) -> None:
        """`close` in a thread (from the event loop)."""
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, self.close, wait_s)

    # -- the writer thread ------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        con = sqlite3.connect(os.fspath(self.path), check_same_thread=False, isolation_level=None)
        if new:
            con.execute("PRAGMA auto_vacuum=INCREMENTAL")
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.executescript(_SCHEMA)
        meta = {"version": str(VERSION), "codec": CODEC}
        w = getattr(self.config, "warroom", None)
        if w is not None:
            meta["name"] = self.redactor.text(str(getattr(w, "name", "")))
            meta["environment"] = self.redactor.text(str(getattr(w, "environment", "")))
        have = dict(con.execute("SELECT key, value FROM meta").fetchall())
        if "started" not in have:
            meta["started"] = _iso(None)
        con.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                        [(k, v) for k, v in meta.items() if k not in have or k in ("name", "environment")])
        return con

    def _run(self) -> None:
        try:
            self._con = self._open()
        except Exception as exc:  # noqa: BLE001 - a recorder that cannot write must not stop the console
            self.error = f"cannot open {self.path}: {exc}"
            log.error("recorder: %s", self.error)
            self._drain_forever()
            return
        cpu0 = time.thread_time()
        try:
            while True:
                self.cpu_s = time.thread_time() - cpu0
                timeout = max(0.05, self.flush_every - (time.monotonic() - self._last_flush))
                try:
                    item = self._q.get(timeout=timeout)
                except queue.Empty:
                    item = _Item("tick", self.clock(), None)
                if item is None:
                    break
                try:
                    self._handle(item)
                except Exception as exc:  # noqa: BLE001
                    log.exception("recorder: a record could not be written")
                    self.error = str(exc)
                if len(self._pending) >= FLUSH_RECORDS or time.monotonic() - self._last_flush >= self.flush_every \
                        or (self._pending_t0 is not None and self._pending_t1 - self._pending_t0 >= self.flush_every):
                    self._flush()
            self._flush()
        finally:
            self.cpu_s = time.thread_time() - cpu0
            con, self._con = self._con, None
            if con is not None:
                try:
                    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    con.close()

    def _drain_forever(self) -> None:
        while self._q.get() is not None:
            pass

    def _emit(self, record: dict[str, Any], at: datetime, *, key: bool = False,
              mark: tuple[str, str] | None = None) -> None:
        if key and self._pending:
            self._flush()
        ts = _ts(at)
        record = {"t": record.pop("t"), "at": _iso(at), **record}
        line = json.dumps(self.redactor.value(record), separators=(",", ":"), ensure_ascii=False)
        if not self._pending:
            self._pending_t0 = ts
            self._pending_key = key
        self._pending.append(line)
        self._pending_t1 = max(self._pending_t1, ts)
        if mark is not None:
            self._pending_marks.append((ts, mark[0], self.redactor.text(mark[1])))

    def _handle(self, item: _Item) -> None:
        if item.kind == "snapshot":
            self._snapshot(item.payload)
        elif item.kind == "log":
            self._emit({"t": "log", "lines": [encode(ln) for ln in item.payload]}, item.at)
        elif item.kind == "action":
            plan, result = item.payload
            res = _result_dict(result)
            self._emit({"t": "action", "plan": _plan_dict(plan), "confirmed": res["status"] not in ("refused",),
                        "result": res}, item.at,
                       mark=("action", f"{getattr(plan, 'action', '')} {getattr(plan, 'target', '')}: "
                                       f"{res['status']}"))
        elif item.kind == "audit":
            entry = {k: v for k, v in item.payload.items() if k not in ("hash", "prev", "mac")}
            mark = None
            if entry.get("result") == "refused":  # an executed action is marked by its `action` record
                mark = ("action", f"{entry.get('action', '')} {entry.get('target', '')}: refused")
            self._emit({"t": "audit", "entry": encode(entry)}, item.at, mark=mark)
        elif item.kind == "incident":
            inc = item.payload
            self._emit({"t": "incident", "incident": inc}, item.at,
                       mark=("incident", f"{inc.get('severity', '')} {inc.get('title', '')} ({inc.get('status', '')})"))

    def _snapshot(self, snap: model.Snapshot) -> None:
        now = snap.at
        key = not self._last_key or (_ts(now) - self._last_key) >= self.keyframe_every
        findings = {f.key: f for f in snap.findings}
        if key:
            self._last_key = _ts(now)
            self._emit({"t": "snapshot", "sources": encode(dict(snap.sources)),
                        "readings": {k: encode(v) for k, v in snap.readings.items()},
                        "findings": encode(snap.findings)}, now, key=True)
            self._last_enc = {name: (encode(snap.readings.get(name, ())), encode(snap.sources.get(name)))
                              for name in set(snap.readings) | set(snap.sources)}
            self._last_obj = {name: (snap.readings.get(name, ()), snap.sources.get(name))
                              for name in set(snap.readings) | set(snap.sources)}
        else:
            for name in sorted(set(snap.readings) | set(snap.sources)):
                objs = (snap.readings.get(name, ()), snap.sources.get(name))
                seen = self._last_obj.get(name)
                if seen is not None and seen[0] is objs[0] and seen[1] is objs[1]:
                    continue  # not polled since the last snapshot (the monitor keeps the same objects)
                self._last_obj[name] = objs
                new_r, new_s = encode(objs[0]), encode(objs[1])
                last = self._last_enc.get(name)
                self._last_enc[name] = (new_r, new_s)
                if last is not None and last == (new_r, new_s):
                    continue
                if last is None or len(last[0]) != len(new_r):
                    self._emit({"t": "poll", "src": name, "status": new_s, "readings": new_r}, now)
                    continue
                rec: dict[str, Any] = {"t": "delta", "src": name}
                if last[1] != new_s:
                    rec["status"] = _patch_of(last[1], new_s)
                changes = [[i, _patch_of(o, n)] for i, (o, n) in enumerate(zip(last[0], new_r, strict=True))
                           if o != n]
                if changes:
                    rec["r"] = changes
                self._emit(rec, now)
        for k, f in findings.items():
            if k not in self._findings:
                self._emit({"t": "finding", "event": "appeared", "finding": encode(f)}, now,
                           mark=("finding", f"{f.severity.label} {f.summary}"))
        for k, f in self._findings.items():
            if k not in findings:
                self._emit({"t": "finding", "event": "cleared", "finding": encode(f)}, now,
                           mark=("cleared", f"cleared: {f.summary}"))
        self._findings = findings


    def _flush(self) -> None:
        self._last_flush = time.monotonic()
        con = self._con
        if not self._pending or con is None:
            return
        data = _compress("\n".join(self._pending).encode())
        t0 = self._pending_t0 if self._pending_t0 is not None else self._pending_t1
        with con:
            cur = con.execute("INSERT INTO batch(t0, t1, n, key, data) VALUES (?, ?, ?, ?, ?)",
                              (t0, self._pending_t1, len(self._pending), int(self._pending_key), data))
            bid = cur.lastrowid
            con.executemany("INSERT INTO mark(at, kind, label, batch) VALUES (?, ?, ?, ?)",
                            [(a, k, lbl, bid) for a, k, lbl in self._pending_marks])
        self.records += len(self._pending)
        self.batches += 1
        self._pending, self._pending_marks, self._pending_t0 = [], [], None
        self._pending_t1, self._pending_key = 0.0, False
        self._bound()

    def _bound(self) -> None:
        """Drop the oldest batches: older than max_age, or beyond max_size; what remains starts
        at a keyframe."""
        con = self._con
        if con is None:
            return
        cutoff = self.clock().timestamp() - self.max_age  # the recorder's clock (the engine's)
        size = con.execute("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM batch").fetchone()[0]
        pages = con.execute("PRAGMA page_count").fetchone()[0] - con.execute("PRAGMA freelist_count").fetchone()[0]
        on_disk = pages * con.execute("PRAGMA page_size").fetchone()[0]
        # the batches' share of the file (pages are not filled to the brim): keep the file under max_size
        budget = self.max_size * 0.9 * (size / on_disk if on_disk > size > 0 else 1.0)
        rows = con.execute("SELECT id, t1, LENGTH(data), key FROM batch ORDER BY id").fetchall()
        drop_upto = 0
        for bid, t1, n, _k in rows:
            if t1 < cutoff or size > budget:
                drop_upto = bid
                size -= n
            else:
                break
        if not drop_upto:
            return
        nxt = con.execute("SELECT MIN(id) FROM batch WHERE id > ? AND key = 1", (drop_upto,)).fetchone()[0]
        if nxt is None:  # no later keyframe yet: keep the last one before
            nxt = con.execute("SELECT MAX(id) FROM batch WHERE id <= ? AND key = 1", (drop_upto,)).fetchone()[0]
            if nxt is None:
                return
        with con:
            con.execute("DELETE FROM batch WHERE id < ?", (nxt,))
            con.execute("DELETE FROM mark WHERE batch < ?", (nxt,))
        con.execute("PRAGMA incremental_vacuum")


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Mark:
    at: datetime
    kind: str  # finding | cleared | action | incident
    label: str


@dataclass(frozen=True)
class BatchInfo:
    id: int
    t0: float
    t1: float
    key: bool


@dataclass
class State:
    """What the console showed at one moment of a recording."""

    at: datetime
    snapshot: model.Snapshot
    logs: list[model.LogLine] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)


class Recording:
    """A recording opened for reading: meta, the batch index and the marks (fast: no batch is
    decompressed until asked)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no recording at {self.path}")
        self._con = sqlite3.connect(f"file:{os.fspath(self.path)}?mode=ro", uri=True, check_same_thread=False)
        try:
            self.meta: dict[str, str] = dict(self._con.execute("SELECT key, value FROM meta").fetchall())
            rows = self._con.execute("SELECT id, t0, t1, key FROM batch ORDER BY id").fetchall()
            marks = self._con.execute("SELECT at, kind, label FROM mark ORDER BY at").fetchall()
        except sqlite3.DatabaseError as exc:
            self._con.close()
            raise ValueError(f"{self.path} is not a warroom recording ({exc})") from None
        if self.meta.get("codec", CODEC) != CODEC:
            raise ValueError(f"{self.path}: unknown codec {self.meta.get('codec')!r}")
        self.batches = [BatchInfo(int(i), float(a), float(b), bool(k)) for i, a, b, k in rows]
        self.marks = [Mark(datetime.fromtimestamp(a, UTC), str(k), str(lbl)) for a, k, lbl in marks]
        # the batches holding actions or incident events (a seek reads only those before its keyframe)
        self.event_batches = {int(b) for (b,) in self._con.execute(
            "SELECT DISTINCT batch FROM mark WHERE kind IN ('action', 'incident')")}
        self._cache: dict[int, list[dict[str, Any]]] = {}

    def close(self) -> None:
        self._con.close()

    @property
    def start(self) -> datetime | None:
        return datetime.fromtimestamp(self.batches[0].t0, UTC) if self.batches else None

    @property
    def end(self) -> datetime | None:
        return datetime.fromtimestamp(max(b.t1 for b in self.batches), UTC) if self.batches else None

    def lines(self, bid: int) -> list[str]:
        """A batch's records as their JSON text (one a line)."""
        row = self._con.execute("SELECT data FROM batch WHERE id = ?", (bid,)).fetchone()
        return [line for line in (_decompress(row[0]).decode() if row else "").splitlines() if line]

    def batch(self, bid: int) -> list[dict[str, Any]]:
        got = self._cache.get(bid)
        if got is None:
            got = [json.loads(line) for line in self.lines(bid)]
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[bid] = got
        return got

    def records(self, from_batch: int | None = None) -> Iterator[dict[str, Any]]:
        """Every record in order (from a batch id on)."""
        for b in self.batches:
            if from_batch is not None and b.id < from_batch:
                continue
            yield from self.batch(b.id)

    def dump(self) -> Iterator[str]:
        """The recording as JSON lines: a meta record, then every record."""
        yield json.dumps({"t": "meta", "at": self.meta.get("started", ""), **{k: v for k, v in self.meta.items()
                                                                              if k != "started"},
                          "started": self.meta.get("started", "")}, ensure_ascii=False)
        for rec in self.records():
            yield json.dumps(rec, separators=(",", ":"), ensure_ascii=False)

    def keyframe_before(self, at: datetime) -> int | None:
        ts = at.timestamp()
        best = None
        for b in self.batches:
            if b.key and b.t0 <= ts:
                best = b.id
            if b.t0 > ts:
                break
        if best is None:
            best = next((b.id for b in self.batches if b.key), None)
        return best

    def state_at(self, at: datetime, *, log_keep: int = 2000) -> State:
        """The state at `at` (from the keyframe before it, applying records up to it)."""
        player = Player(self)
        player.seek(at, log_keep=log_keep)
        return player.state


def _rec_at(rec: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(str(rec["at"]))


def _retime(readings: tuple[Any, ...], at: datetime) -> tuple[Any, ...]:
    out = []
    for r in readings:
        try:
            out.append(dataclasses.replace(r, at=at))
        except (TypeError, ValueError):
            out.append(r)
    return tuple(out)


class Player:
    """Applies a recording's records in order to a `State`."""

    def __init__(self, recording: Recording) -> None:
        self.rec = recording
        start = recording.start or model.utcnow()
        self.state = State(at=start, snapshot=model.Snapshot(at=start))
        self._sources: dict[str, model.SourceStatus] = {}
        self._readings: dict[str, tuple[model.Reading, ...]] = {}
        self._enc: dict[str, tuple[Any, Any]] = {}  # source -> (readings, status) as recorded
        self._findings: dict[str, model.Finding] = {}
        self._queue: list[dict[str, Any]] = []
        self._next_batch = 0  # index into rec.batches
        self.log_keep = 2000

    def seek(self, at: datetime, *, log_keep: int = 2000) -> list[dict[str, Any]]:
        """Reset to the keyframe before `at` and apply up to it; the records applied."""
        self.log_keep = log_keep
        bid = self.rec.keyframe_before(at)
        self._sources, self._readings, self._findings, self._queue, self._enc = {}, {}, {}, [], {}
        self.state.logs, self.state.actions, self.state.incidents = [], [], {}
        self._next_batch = next((i for i, b in enumerate(self.rec.batches) if b.id == bid), 0)
        earlier = self.rec.batches[: self._next_batch]
        # actions and incident events before the keyframe: only the batches that hold some
        for b in earlier:
            if b.id in self.rec.event_batches:
                for line in self.rec.lines(b.id):
                    if line.startswith(('{"t":"action"', '{"t":"incident"')):
                        self._apply(json.loads(line))
        # the log lines shown: the last `log_keep` before the keyframe, read backwards
        logs: list[list[model.LogLine]] = []
        kept = 0
        for b in reversed(earlier):
            if kept >= log_keep:
                break
            for line in reversed(self.rec.lines(b.id)):
                if line.startswith('{"t":"log"'):
                    batch = [x for x in (decode(ln) for ln in json.loads(line).get("lines") or ())
                             if isinstance(x, model.LogLine)]
                    logs.append(batch)
                    kept += len(batch)
                    if kept >= log_keep:
                        break
        self.state.logs = [ln for batch in reversed(logs) for ln in batch][-log_keep:]
        return self.advance(at)

    def _fill(self) -> bool:
        if self._next_batch >= len(self.rec.batches):
            return False
        self._queue.extend(self.rec.batch(self.rec.batches[self._next_batch].id))
        self._next_batch += 1
        return True

    def peek(self) -> dict[str, Any] | None:
        while not self._queue:
            if not self._fill():
                return None
        return self._queue[0]

    def advance(self, until: datetime) -> list[dict[str, Any]]:
        """Apply every record up to `until`; the records applied."""
        done = []
        while True:
            rec = self.peek()
            if rec is None or _rec_at(rec) > until:
                break
            self._queue.pop(0)
            self._apply(rec)
            done.append(rec)
        self.state.at = until
        self._publish()
        return done

    def _apply(self, rec: Mapping[str, Any]) -> None:
        t = rec.get("t")
        if t == "snapshot":
            self._sources = {k: st for k, st in ((k, decode(v)) for k, v in (rec.get("sources") or {}).items())
                             if isinstance(st, model.SourceStatus)}
            self._readings = {k: tuple(decode(x) for x in v) for k, v in (rec.get("readings") or {}).items()}
            srcs = rec.get("sources") or {}
            rds = rec.get("readings") or {}
            self._enc = {k: (rds.get(k, []), srcs.get(k)) for k in set(srcs) | set(rds)}
            self._findings = {f.key: f for f in (decode(x) for x in rec.get("findings") or ())
                              if isinstance(f, model.Finding)}
        elif t in ("poll", "delta"):
            src = str(rec.get("src"))
            old_r, old_s = self._enc.get(src, ([], None))
            if t == "poll":
                new_r, new_s = rec.get("readings") or [], rec.get("status")
            else:
                new_r = apply_patch(old_r, {"$l": rec["r"]}) if "r" in rec else old_r
                new_s = apply_patch(old_s, rec["status"]) if "status" in rec else old_s
            self._enc[src] = (new_r, new_s)
            st = decode(new_s)
            if isinstance(st, model.SourceStatus):
                self._sources[src] = st
            if t == "poll" or "r" in rec:
                self._readings[src] = tuple(decode(x) for x in new_r)
        elif t == "touch":  # version 1 files written before deltas: same readings, newer time
            src = str(rec.get("src"))
            st = decode(rec.get("status"))
            if isinstance(st, model.SourceStatus):
                self._sources[src] = st
            if src in self._readings:
                self._readings[src] = _retime(self._readings[src], _rec_at(rec))
        elif t == "finding":
            f = decode(rec.get("finding"))
            if isinstance(f, model.Finding):
                if rec.get("event") == "cleared":
                    self._findings.pop(f.key, None)
                else:
                    self._findings[f.key] = f
        elif t == "log":
            self.state.logs.extend(x for x in (decode(ln) for ln in rec.get("lines") or ())
                                   if isinstance(x, model.LogLine))
            if len(self.state.logs) > self.log_keep:
                del self.state.logs[: len(self.state.logs) - self.log_keep]
        elif t == "action":
            self.state.actions.append(dict(rec))
        elif t == "incident":
            inc = rec.get("incident") or {}
            if isinstance(inc, dict) and inc.get("id"):
                self.state.incidents[str(inc["id"])] = inc

    def _publish(self) -> None:
        findings = tuple(sorted(self._findings.values(), key=lambda f: f.sort_key()))
        self.state.snapshot = model.Snapshot(at=self.state.at, sources=dict(self._sources),
                                             readings=dict(self._readings), findings=findings)


# --------------------------------------------------------------------------- postmortem


def _hm(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def recording_timeline(recording: Recording) -> dict[str, Any]:
    """What was seen when: findings (appeared, cleared, lasted) and actions with results."""
    seen: dict[str, dict[str, Any]] = {}
    actions: list[dict[str, Any]] = []
    incidents: dict[str, dict[str, Any]] = {}
    for rec in recording.records():
        t = rec.get("t")
        if t == "finding":
            f = decode(rec.get("finding"))
            if not isinstance(f, model.Finding):
                continue
            k = f.key
            at = _rec_at(rec)
            if rec.get("event") == "appeared":
                seen.setdefault(k, {"summary": f.summary, "severity": f.severity.label, "spans": []})
                seen[k]["spans"].append([at, None])
            elif k in seen and seen[k]["spans"] and seen[k]["spans"][-1][1] is None:
                seen[k]["spans"][-1][1] = at
        elif t == "action":
            actions.append({**rec, "at": _rec_at(rec)})
        elif t == "incident":
            inc = rec.get("incident") or {}
            if inc.get("id"):
                incidents[str(inc["id"])] = inc
    return {"findings": seen, "actions": actions, "incidents": incidents}


def postmortem_from_recording(recording: Recording, incident_id: str | None = None) -> str:
    """The postmortem draft built from a recording: the incident's own draft (when the
    recording holds one) plus what the recording saw: durations, findings with when they
    appeared and cleared, actions with their results."""
    from backends.engine.incidents import Incident, postmortem_markdown
    from backends.sanitize import markdown_inline as md

    tl = recording_timeline(recording)
    end = recording.end or model.utcnow()
    out: list[str] = []
    incs = tl["incidents"]
    doc = incs.get(incident_id) if incident_id else (list(incs.values())[-1] if incs else None)
    if doc is not None:
        out.append(postmortem_markdown(Incident.from_dict(doc), end))
    else:
        out += [f"# Postmortem draft: {md(recording.meta.get('name', 'warroom'))} (from a recording)", ""]
    out += recording_section(recording)
    return "\n".join(out) + "\n"


def recording_section(recording: Recording, since: datetime | None = None,
                      until: datetime | None = None) -> list[str]:
    """The postmortem's "From the flight recording" section: the findings seen between `since`
    and `until` (when they appeared, cleared, how long they lasted) and the actions with results."""
    from backends.sanitize import markdown_inline as md
    from backends.units import format_duration

    tl = recording_timeline(recording)
    end = recording.end or model.utcnow()
    start = recording.start or end
    lo, hi = since or start, until or end
    out = ["", "## From the flight recording", "",
           f"- **Recording:** {md(recording.path.name)}, {_hm(start)} to {_hm(end)} UTC "
           f"({format_duration((end - start).total_seconds())})", ""]
    if since is not None or until is not None:
        out += [f"- **Shown:** {_hm(lo)} to {_hm(hi)} UTC", ""]
    out += ["### What was seen when", ""]
    spans = [(f, a, c) for f in tl["findings"].values() for a, c in f["spans"] if a <= hi and (c or end) >= lo]
    if spans:
        out += ["| Finding | Severity | Appeared | Cleared | Lasted |", "|---|---|---|---|---|"]
        for f, a, c in spans:
            out.append(f"| {md(str(f['summary']))} | {md(str(f['severity']))} | {_hm(a)} | "
                       f"{_hm(c) if c else 'not cleared'} | {format_duration(((c or end) - a).total_seconds())} |")
    else:
        out.append("No finding was recorded.")
    out += ["", "### Actions and their results", ""]
    actions = [a for a in tl["actions"] if lo <= a["at"] <= hi]
    if actions:
        out += ["| Time (UTC) | Action | Target | Result | Summary |", "|---|---|---|---|---|"]
        for a in actions:
            plan, res = a.get("plan") or {}, a.get("result") or {}
            out.append(f"| {_hm(a['at'])} | {md(str(plan.get('action', '')))} | {md(str(plan.get('target', '')))} | "
                       f"{md(str(res.get('status', '')))} | {md(str(res.get('summary', '')))} |")
    else:
        out.append("No action was recorded.")
    return out


def recording_postmortem_section(path: str | os.PathLike[str], since: datetime | None = None,
                                 until: datetime | None = None) -> str:
    """`recording_section` of the recording at `path` as text ("" when it cannot be read): what the
    live console's postmortem draft appends while [record] is set."""
    try:
        recording = Recording(path)
    except (OSError, ValueError, sqlite3.Error):
        return ""
    try:
        return "\n".join(recording_section(recording, since, until)) + "\n"
    finally:
        recording.close()


__all__ = ["CODEC", "Mark", "Player", "Recorder", "Recording", "Redactor", "State", "decode", "encode",
           "postmortem_from_recording", "raw_text", "recording_postmortem_section", "recording_section", "recording_timeline", "secrets_of_config"]
