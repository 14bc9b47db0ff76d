"""The audit trail: append-only JSON lines, hash-chained, keyed (HMAC), fsynced.

Every entry records who (operator), when, what (action, target, parameters with
secrets masked), why (reason), whether it was a dry-run, the state before and after,
and the result.

Write-ahead: a mutating action first writes an *intent* entry (`phase: "intent"`,
result "started": who, what, the plan, the reason), fsynced, and is refused when that
cannot be written; its *outcome* entry (`intent: <seq of the intent>`) follows. An
intent without an outcome is what a crash (or a full disk after the change) leaves:
`verify()` lists it ("started, outcome unknown: check <target>").

Tamper evidence: each entry carries `hash` = sha256(prev hash + canonical body) and
`mac` = HMAC-SHA256(key, hash) with a 32-byte key kept outside the file
(`<audit file>.key`, mode 0600, created on first write). Recomputing the chain after an
edit does not give valid MACs without the key. A head anchor (`<audit file>.head`:
the last seq and hash, keyed) makes truncation of the tail visible; every 1,000th head
is also written to the log. Entries written before the key existed have no `mac`: they
are reported as unkeyed, not broken; an unkeyed entry after a keyed one is a problem.

Crash safety: a write that fails half-way (disk full) is cut back to the last whole
entry. A torn last line (a crash or power loss mid-append) is found under the lock by
the next write (or `open_check()` / `warroom audit repair`): its bytes go to
`<audit file>.torn` (one JSON line with the offset, length, sha256 and the bytes), the
file is cut back to the last whole entry and an `audit.torn_tail` entry says so; if
that cannot be done every write fails with `AuditUnavailable` and mutating actions are
refused. `verify()` reports a torn tail still in place and every one set aside.

Several warroom processes on one box may append to the same file: appends take an
exclusive `fcntl` lock, read the last entry's hash under it, and fsync before
releasing. Mirrors (e.g. a shared Postgres table) receive every entry after it is
written locally; a failing mirror never loses the local entry.

Reading: `entries()` / `tail()` give the records without the intents (what was done,
refused, previewed); `records()` gives every line. The off-loop query API
(`steps_since`, `entries_since`, `entries_after`, `tail_async`, `open_intents`) uses an
index of offsets loaded once in a reader thread and brought up to date from the
file's new bytes at each query, so "steps done since this finding appeared" costs
O(steps), not O(file).

Can it be written now: `write_problem()` (a statvfs and an access check, nothing
written) says why an entry would not fit: a read-only file system, no write
permission, less than `WRITE_MARGIN` free (or less than twice an entry that failed
for want of space, until one is written). An intent is refused on it before its write
is tried; the console shows it while it lasts (other failures show when a write fails).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import contextvars
import errno
import fcntl
import getpass
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from backends.clock import SYSTEM_CLOCK, Clock
from backends.errors import MASK, describe_exception, redact

# One audit entry as written (a JSON object: seq, ts, operator, action, target, ..., hash, mac)
# or as read back; fields vary by action, so values stay Any.
Entry = dict[str, Any]
_T = TypeVar("_T")

log = logging.getLogger(__name__)

GENESIS = "0" * 64
SECRET_KEY_WORDS = ("password", "passwd", "secret", "token", "private_key", "privatekey", "api_key",
                    "apikey", "routing_key", "authorization", "keystore_password", "credential")


def resolve_operator(override: Any = None, configured: str | Callable[[], str] | None = None) -> str:
    """Who acts: an explicit non-empty name, else the configured one (a name or a function
    returning one), else `operator_identity()`."""
    if isinstance(override, str) and override.strip():
        return override.strip()
    if callable(configured):
        return configured()
    return configured or operator_identity()


def operator_identity(env: Mapping[str, str] | None = None) -> str:
    """Who is acting: $WARROOM_OPERATOR, else the login user plus the SSH client address."""
    env = os.environ if env is None else env
    explicit = env.get("WARROOM_OPERATOR", "").strip()
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    ssh = env.get("SSH_CLIENT") or env.get("SSH_CONNECTION") or ""
    addr = ssh.split()[0] if ssh.split() else ""
    if addr:
        return f"{user}@{addr}"
    return f"{user}@{socket.gethostname()}"


def mask_params(value: Any, key: str = "") -> Any:
    """Mask secret-looking keys and Secret values, recursively; redact free text."""
    if _is_secret_obj(value):
        return MASK
    if key and any(w in key.lower().replace("-", "_") for w in SECRET_KEY_WORDS):
        return MASK if value not in (None, "") else value
    if isinstance(value, Mapping):
        return {str(k): mask_params(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_params(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


def _is_secret_obj(value: Any) -> bool:
    return type(value).__name__ == "Secret" and hasattr(value, "reveal")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def _canonical(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(prev: str, body: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev.encode() + b"\n" + _canonical(body)).hexdigest()


def entry_mac(key: bytes, digest: str) -> str:
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def _head_mac(key: bytes, head: Mapping[str, Any]) -> str:
    msg = f"head\n{head.get('seq')}\n{head.get('hash')}\n{head.get('keyed_since')}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


# The intent of the action now running in this task (its seq): entries written while it
# runs (a bulk fix's batches) name it, so `verify` can say which run they belong to.
CURRENT_INTENT: contextvars.ContextVar[int | None] = contextvars.ContextVar("warroom_audit_intent", default=None)

ANCHOR_EVERY = 1000  # every N-th head also goes to the log (an anchor outside the file)
HEAD_SIZE = 512  # the head file is one record padded to this size, rewritten in place
STEP_RESULTS = ("ok", "partial")
WRITE_MARGIN = 16 * 1024  # bytes: less free than this in the audit's file system is full
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class AuditUnavailable(Exception):
    """The audit trail cannot be written (disk full, read-only file system, permissions,
    a torn tail that cannot be set aside). Write-ahead: the action is refused."""

    def __init__(self, path: Any, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"audit trail {path}: {reason}")


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, AuditUnavailable):
        return exc.reason
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return describe_exception(exc)


def _kb(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n // 1024} KB"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(28, "No space left on device")
        view = view[n:]


def _parse_entry(raw: bytes) -> Entry | None:
    """A whole entry line: a JSON object with a hash; else None."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("hash"), str):
        return None
    return obj


def _ts_epoch(value: Any) -> float:
    try:
        ts = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return float("nan")
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.timestamp()


@dataclass(frozen=True)
class Tail:
    """The end of the file: the last whole entry (hash, seq, keyed or not) and, when the
    bytes after it are not whole entries, the offset where that torn tail starts."""

    prev: str
    seq: int
    size: int
    keyed: bool = False
    torn_offset: int | None = None

    @property
    def torn(self) -> bool:
        return self.torn_offset is not None


def scan_tail(fd: int, size: int | None = None, *, max_bad_lines: int = 16) -> Tail:
    """The last whole entry, reading backwards from the end (costs the last lines, not the file)."""
    if size is None:
        size = os.fstat(fd).st_size
    pos = size
    buf = b""
    while True:
        pieces = buf.split(b"\n")
        starts = []
        at = pos
        for p in pieces:
            starts.append(at)
            at += len(p) + 1
        torn_at = starts[-1] if pieces[-1] else None  # bytes after the last newline: a partial line
        bad = 0
        first = 0 if pos == 0 else 1  # pieces[0] may be cut at the chunk boundary
        for i in range(len(pieces) - 2, first - 1, -1):
            line = pieces[i]
            if not line.strip():
                continue
            entry = _parse_entry(line)
            if entry is not None:
                seq = entry.get("seq")
                return Tail(entry["hash"], seq if isinstance(seq, int) else 0, size, "mac" in entry, torn_at)
            torn_at = starts[i]
            bad += 1
            if bad >= max_bad_lines:
                raise AuditUnavailable("", f"the last {bad} lines are not whole entries: the end of the file is "
                                           "corrupt, not torn (see `warroom audit verify`)")
        if pos == 0:
            return Tail(GENESIS, 0, size, False, torn_at)
        step = min(65536, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf


@dataclass(frozen=True)
class Problem:
    """One finding of `verify`: kind is edited | forged | unkeyed | chain | deleted |
    reordered | duplicate | corrupt | truncated | head | key."""

    kind: str
    text: str
    line: int | None = None
    seq: int | None = None
    before: int = 0  # whole entries before it

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.text, "line": self.line, "seq": self.seq}


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int  # whole entries before the first problem (all of them when there is none)
    first_bad_line: int | None = None
    reason: str = ""
    problems: tuple[Problem, ...] = ()
    open_intents: tuple[Entry, ...] = ()  # started, outcome unknown
    torn: Entry | None = None  # a torn tail still in the file: offset, length
    set_aside: tuple[Entry, ...] = ()  # torn tails set aside earlier (their audit.torn_tail entries)
    keyed: int = 0
    unkeyed: int = 0  # written before the key existed
    head: Entry | None = None
    key: str = "none"  # present | unreadable: ... | none
    total: int = 0  # whole entries in the file

    @property
    def needs_attention(self) -> bool:
        return bool(self.open_intents or self.torn)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "entries": self.entries, "first_bad_line": self.first_bad_line, "reason": self.reason,
            "problems": [p.as_dict() for p in self.problems], "open_intents": list(self.open_intents),
            "torn": self.torn, "set_aside": list(self.set_aside), "keyed": self.keyed, "unkeyed": self.unkeyed,
            "head": self.head, "key": self.key, "total": self.total,
        }


def _intent_info(entry: Mapping[str, Any], line: int) -> dict[str, Any]:
    target = entry.get("target") or ""
    info = {"seq": entry.get("seq"), "line": line, "ts": entry.get("ts"), "operator": entry.get("operator"),
            "action": entry.get("action"), "target": target, "summary": entry.get("summary") or "",
            "run": (entry.get("extra") or {}).get("run") if isinstance(entry.get("extra"), Mapping) else None,
            "text": f"started, outcome unknown: check {target or entry.get('action')}"}
    ids = (entry.get("params") or {}).get("ids") if isinstance(entry.get("params"), Mapping) else None
    if isinstance(ids, str | list):
        info["ids"] = ids.split() if isinstance(ids, str) else list(ids)
    return info


def _log_failure(fut: asyncio.Future[Entry]) -> None:
    exc = None if fut.cancelled() else fut.exception()
    if exc is not None:
        log.warning("could not write an audit entry: %s", describe_exception(exc))


class AuditLog:
    def __init__(self, path: str | os.PathLike[str], *, mirrors: list[Callable[[Entry], None]] | None = None,
                 key_path: str | os.PathLike[str] | None = None, head_path: str | os.PathLike[str] | None = None,
                 clock: Clock | None = None):
        self.path = Path(path).expanduser()
        self.clock: Clock = clock or SYSTEM_CLOCK  # stamps entries ("ts") and set-aside records
        self.mirrors = list(mirrors or [])
        # outside the file, in its (state) directory: the HMAC key (0600) and the head anchor
        self.key_path = Path(key_path).expanduser() if key_path else self.path.with_name(self.path.name + ".key")
        self.head_path = Path(head_path).expanduser() if head_path else self.path.with_name(self.path.name + ".head")
        self.torn_path = self.path.with_name(self.path.name + ".torn")
        self._key: bytes | None = None
        self._writer: ThreadPoolExecutor | None = None  # one thread: this process's entries in order
        self._reader: ThreadPoolExecutor | None = None  # one thread: index loads and queries
        self._pending: set[asyncio.Future[Entry]] = set()
        self._index: _Index | None = None
        self._index_lock = threading.Lock()
        # the last write that failed, until one succeeds: (reason, entry bytes, for want of space)
        self.write_failure: tuple[str, int, bool] | None = None

    # ------------------------------------------------------------------ writing

    def append(self, **fields: Any) -> Entry:
        """Write one entry (locked, hash-chained, keyed, fsynced), then hand it to the mirrors.
        Blocking: on an event loop use `append_async`. Fields: see `_body`. Raises
        `AuditUnavailable` when the entry cannot be written durably."""
        entry = self._write(self._body(**fields))
        self._mirror(entry)
        return entry

    async def append_async(self, **fields: Any) -> Entry:
        """`append` with the file work (lock, read of the last hash, write, fsync: a few ms,
        longer on a busy disk) in a worker thread, so the event loop (the console) never
        waits on the disk. When it returns the entry is on disk (fsynced); it raises
        `AuditUnavailable` when it could not be written. The write goes on if the caller is
        cancelled; `flush()` waits."""
        return await asyncio.shield(self._submit(fields))

    def append_soon(self, **fields: Any) -> asyncio.Future[Entry]:
        """From sync code on the event loop (a key handler, a poll callback): the write is
        submitted now and runs in the background; a failure is logged. `flush()` (the
        engine's stop) waits for it, so quitting right after does not lose the entry."""
        fut = self._submit(fields)
        fut.add_done_callback(_log_failure)
        return fut

    async def flush(self, wait_s: float = 5.0) -> bool:
        """Wait (at most `wait_s`) for the entries still being written; True if none is left."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=wait_s)
        return not self._pending

    def _submit(self, fields: Mapping[str, Any]) -> asyncio.Future[Entry]:
        # The entry is built here, at the call: the masked values are the caller's now.
        # One thread of its own writes this process's entries in call order, never queued
        # behind other blocking work.
        body = self._body(**fields)
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warroom-audit")
        fut = asyncio.get_running_loop().run_in_executor(self._writer, self._write, body)
        self._pending.add(fut)
        fut.add_done_callback(self._written)
        return fut

    def _written(self, fut: asyncio.Future[Entry]) -> None:
        self._pending.discard(fut)
        if not fut.cancelled() and fut.exception() is None:
            self._mirror(fut.result())  # mirrors run on the loop, like after `append`

    def _body(
        self,
        *,
        action: str,
        target: str = "",
        operator: str | None = None,
        params: Mapping[str, Any] | None = None,
        reason: str | None = None,
        dry_run: bool = False,
        before: Any = None,
        after: Any = None,
        result: str = "ok",
        summary: str = "",
        error: str | None = None,
        extra: Mapping[str, Any] | None = None,
        phase: str | None = None,
        intent: int | None = None,
        plan: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ts": self.clock.now().isoformat(),
            "operator": operator or operator_identity(),
            "host": socket.gethostname(),
            "action": action,
            "target": target,
            "params": _jsonable(mask_params(dict(params or {}))),
            "reason": redact(reason) if reason else reason,
            "dry_run": bool(dry_run),
            "before": _jsonable(mask_params(before)),
            "after": _jsonable(mask_params(after)),
            "result": result,
            "summary": redact(summary),
            "error": redact(error) if error else None,
        }
        if extra:
            body["extra"] = _jsonable(mask_params(dict(extra)))
        if phase:  # "intent" (written before executing) | "outcome" (after)
            body["phase"] = phase
        if intent is not None:
            body["intent"] = int(intent)
        if plan:
            body["plan"] = _jsonable(mask_params(dict(plan)))
        return body

    # the key -----------------------------------------------------------------

    def _create_key(self) -> bytes:
        """A new key, whole or not at all: written and fsynced in a temporary file, then linked
        into place (a full disk leaves no empty key behind; a concurrent creator wins)."""
        self.key_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.key_path.with_name(f"{self.key_path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        key_hex = secrets.token_hex(32).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, key_hex + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                if self.key_path.stat().st_size == 0:
                    self.key_path.unlink()
            try:
                os.link(tmp, self.key_path)
            except FileExistsError:  # another process created it meanwhile
                return self.key_path.read_bytes()
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        _fsync_dir(self.key_path.parent)
        return key_hex

    def _load_key(self, *, create: bool) -> bytes | None:
        if self._key is not None:
            return self._key
        try:
            raw = self.key_path.read_bytes()
            if not raw and create:  # an empty key: a creation that failed half-way (an older warroom)
                raise FileNotFoundError(self.key_path)
        except FileNotFoundError:
            if not create:
                return None
            raw = self._create_key()
        key = bytes.fromhex(raw.decode("ascii", "replace").strip() or "zz")  # ValueError when garbled
        if len(key) < 16:
            raise ValueError(f"the audit key {self.key_path} is too short")
        try:
            mode = os.stat(self.key_path).st_mode & 0o777
            if mode & 0o077:
                os.chmod(self.key_path, 0o600)
                log.warning("audit key %s was readable by others (mode %o): set to 0600", self.key_path, mode)
        except OSError:
            pass
        self._key = key
        return key

    # the write ---------------------------------------------------------------

    def write_problem(self, margin: int = WRITE_MARGIN, entry_size: int = 0) -> str | None:
        """Why an entry of `entry_size` bytes could not be written now; None when it can, as
        far as a look tells (nothing is written). Blocking (statvfs, access): on a loop use
        `write_problem_async`."""
        folder = self.path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            st = os.statvfs(folder)
        except OSError as exc:
            return _os_reason(exc)
        if st.f_flag & os.ST_RDONLY:
            return "read-only file system"
        if not os.access(self.path if self.path.exists() else folder, os.W_OK):
            return "permission denied"
        failed = self.write_failure
        need = max(margin, 2 * entry_size, 2 * failed[1] if failed and failed[2] else 0)
        free = st.f_bavail * st.f_frsize
        if free < need:
            return f"no space left on device: {_kb(free)} free in {folder}"
        return None

    async def write_problem_async(self, margin: int = WRITE_MARGIN) -> str | None:
        return await asyncio.to_thread(self.write_problem, margin)

    def _write(self, body: dict[str, Any]) -> Entry:
        if body.get("phase") == "intent":  # write-ahead: refused when it cannot fit, never tried half
            problem = self.write_problem(entry_size=len(_canonical(body)))
            if problem is not None:
                raise AuditUnavailable(self.path, problem)
        try:
            entry = self._write_entry(body)
        except AuditUnavailable as exc:
            cause = exc.__cause__
            self.write_failure = (exc.reason, len(_canonical(body)),
                                  isinstance(cause, OSError) and cause.errno in NO_SPACE)
            raise
        self.write_failure = None
        return entry

    def _write_entry(self, body: dict[str, Any]) -> Entry:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            existed = self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise AuditUnavailable(self.path, _os_reason(exc)) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if not existed:
                    _fsync_dir(self.path.parent)
                try:
                    key = self._load_key(create=True)
                except (OSError, ValueError) as exc:
                    raise AuditUnavailable(self.path, f"the audit key {self.key_path} cannot be read or "
                                                      f"created: {_os_reason(exc)}") from exc
                assert key is not None
                try:
                    tail = scan_tail(fd)
                except AuditUnavailable as exc:
                    raise AuditUnavailable(self.path, exc.reason) from None
                if tail.torn:
                    self._set_aside(fd, tail, key)
                    tail = scan_tail(fd)
                return self._append_locked(fd, body, tail, key)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _append_locked(self, fd: int, body: dict[str, Any], tail: Tail, key: bytes) -> Entry:
        body = dict(body)
        body["seq"] = tail.seq + 1
        body["prev"] = tail.prev
        digest = entry_hash(tail.prev, body)
        entry = dict(body, hash=digest, mac=entry_mac(key, digest))
        data = _canonical(entry) + b"\n"
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError as exc:
            # never leave half an entry: cut the file back to the last whole one
            try:
                os.ftruncate(fd, tail.size)
                os.fsync(fd)
            except OSError:
                log.error("audit %s: could not cut a failed write back to %d bytes", self.path, tail.size)
            raise AuditUnavailable(self.path, _os_reason(exc)) from exc
        self._update_head(entry, tail, key)
        return entry

    def _set_aside(self, fd: int, tail: Tail, key: bytes) -> None:
        """Move a torn tail into the .torn file, cut the file back to the last whole entry,
        and write an entry saying so. Raises AuditUnavailable when any step fails."""
        offset = tail.torn_offset or 0
        data = os.pread(fd, tail.size - offset, offset)
        digest = hashlib.sha256(data).hexdigest()
        head = self._read_head()
        record = {"ts": self.clock.now().isoformat(), "file": str(self.path), "offset": offset,
                  "length": len(data), "sha256": digest, "after_seq": tail.seq,
                  "text": data.decode("utf-8", "replace"), "b64": base64.b64encode(data).decode()}
        try:
            tfd = os.open(self.torn_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                _write_all(tfd, json.dumps(record, sort_keys=True).encode() + b"\n")
                os.fsync(tfd)
            finally:
                os.close(tfd)
            _fsync_dir(self.torn_path.parent)
            os.ftruncate(fd, offset)
            os.fsync(fd)
        except OSError as exc:
            raise AuditUnavailable(self.path, f"a torn last line at offset {offset} ({len(data)} bytes) cannot be "
                                              f"set aside into {self.torn_path.name}: {_os_reason(exc)}; "
                                              "changes are refused until it is") from exc
        lost = isinstance(head, dict) and isinstance(head.get("seq"), int) and head["seq"] > tail.seq
        log.warning("audit %s: torn last line at offset %d (%d bytes) set aside into %s", self.path, offset,
                    len(data), self.torn_path)
        self._append_locked(fd, self._body(
            action="audit.torn_tail", target=str(self.path), operator="warroom", result="set_aside",
            summary=f"torn last line at offset {offset} ({len(data)} bytes) set aside into {self.torn_path.name}; "
                    f"the chain continues from #{tail.seq}",
            extra={"offset": offset, "length": len(data), "sha256": digest, "torn_file": str(self.torn_path),
                   "after_seq": tail.seq, "head_seq": head.get("seq") if isinstance(head, dict) else None,
                   "whole_entry_lost": lost},
        ), Tail(tail.prev, tail.seq, offset, tail.keyed), key)

    def open_check(self) -> Tail | None:
        """At open: find a torn tail and set it aside now (blocking; `open_check_async` on a
        loop). Returns the tail found, None when there is no file. Raises AuditUnavailable."""
        if not self.path.exists():
            return None
        with self.path.open("rb") as fh:
            try:
                tail = scan_tail(fh.fileno())
            except AuditUnavailable as exc:
                raise AuditUnavailable(self.path, exc.reason) from None
        if tail.torn:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
            except OSError as exc:
                raise AuditUnavailable(self.path, f"a torn last line at offset {tail.torn_offset} cannot be set "
                                                  f"aside: {_os_reason(exc)}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    key = self._load_key(create=True)
                    assert key is not None
                    now = scan_tail(fd)
                    if now.torn:
                        self._set_aside(fd, now, key)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            except (OSError, ValueError) as exc:
                raise AuditUnavailable(self.path, _os_reason(exc)) from exc
            finally:
                os.close(fd)
        return tail

    async def open_check_async(self) -> Tail | None:
        return await asyncio.get_running_loop().run_in_executor(self._writer_pool(), self.open_check)

    def _writer_pool(self) -> ThreadPoolExecutor:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warroom-audit")
        return self._writer

    # the head anchor -----------------------------------------------------------

    def _read_head(self) -> Entry | str | None:
        """The head record; None when there is none; a text when it cannot be read."""
        try:
            raw = self.head_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"cannot be read: {_os_reason(exc)}"
        try:
            head = json.loads(raw.strip() or b"null")
        except ValueError:
            return "is not valid JSON"
        return head if isinstance(head, dict) else "is not a head record"

    def _update_head(self, entry: Mapping[str, Any], tail: Tail, key: bytes) -> None:
        """Best effort: a head that lags behind the file is fine (verify checks file >= head);
        it is written after the entry is fsynced, so it never gets ahead of the file."""
        old = self._read_head()
        keyed_since = old.get("keyed_since") if isinstance(old, dict) else None
        if not isinstance(keyed_since, int):
            # no head yet: keyed from this entry on, unless the file already had keyed entries
            keyed_since = tail.seq if tail.keyed and tail.seq else entry["seq"]
        head = {"file": str(self.path), "seq": entry["seq"], "hash": entry["hash"], "ts": entry["ts"],
                "keyed_since": keyed_since}
        head["mac"] = _head_mac(key, head)
        data = json.dumps(head, sort_keys=True).encode()
        if len(data) < HEAD_SIZE - 1:
            data = data + b" " * (HEAD_SIZE - 1 - len(data))
        data += b"\n"
        try:
            fd = os.open(self.head_path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.pwrite(fd, data, 0)
                if os.fstat(fd).st_size > len(data):
                    os.ftruncate(fd, len(data))
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("audit %s: head anchor not updated: %s", self.path, _os_reason(exc))
        if entry["seq"] % ANCHOR_EVERY == 0:
            log.info("audit head %s #%d %s", self.path, entry["seq"], entry["hash"])

    def _mirror(self, entry: Entry) -> None:
        for mirror in self.mirrors:
            try:
                mirror(entry)
            except Exception:  # the local entry is the record; a mirror failure is not fatal
                pass

    # ------------------------------------------------------------------ reading

    def records(self) -> Iterator[Entry]:
        """Every line as stored (intents included); a line that is not JSON as {"_corrupt": text}."""
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            for raw in fh:
                raw = raw.strip()
                if raw:
                    try:
                        yield json.loads(raw)
                    except ValueError:
                        yield {"_corrupt": raw.decode("utf-8", "replace")}

    def entries(self, *, intents: bool = False) -> Iterator[Entry]:
        """The records of what was done, refused or previewed: without the write-ahead intents
        (each is followed by its outcome entry, which carries everything it said), unless
        `intents=True`."""
        for e in self.records():
            if intents or e.get("phase") != "intent":
                yield e

    def tail(self, n: int = 20, *, intents: bool = False) -> list[Entry]:
        """The last `n` entries (read from the end of the file: O(n), not O(file)). Blocking:
        on a loop use `tail_async`."""
        if n <= 0 or not self.path.exists():
            return []
        out: list[Entry] = []
        with self.path.open("rb") as fh:
            for raw in _lines_backwards(fh.fileno()):
                if not raw.strip():
                    continue
                try:
                    e = json.loads(raw)
                except ValueError:
                    e = {"_corrupt": raw.decode("utf-8", "replace")}
                if not intents and isinstance(e, dict) and e.get("phase") == "intent":
                    continue
                out.append(e)
                if len(out) >= n:
                    break
        out.reverse()
        return out

    # the off-loop query API ---------------------------------------------------------

    def _reader_pool(self) -> ThreadPoolExecutor:
        if self._reader is None:
            self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warroom-audit-read")
        return self._reader

    async def _off_loop(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._reader_pool(), fn)

    def index(self) -> _Index:
        """The index, brought up to date with the file (blocking: the first call reads the
        whole file once; later calls read only what was appended)."""
        with self._index_lock:
            if self._index is None:
                self._index = _Index(self.path)
            idx = self._index
        idx.refresh()
        return idx

    async def load_index(self) -> int:
        """Load (or refresh) the index in the reader thread; returns how many entries it holds.
        Call it at start so the first query does not wait for the whole file."""
        return await self._off_loop(lambda: len(self.index()))

    def steps_since_sync(self, since: datetime, target_prefixes: Iterable[str] | None = None, *,
                         results: Iterable[str] | None = STEP_RESULTS) -> list[Entry]:
        prefixes = tuple(target_prefixes) if target_prefixes is not None else None
        res = tuple(results) if results is not None else None
        return self.index().steps_since(since, prefixes, res)

    async def steps_since(self, since: datetime, target_prefixes: Iterable[str] | None = None, *,
                          results: Iterable[str] | None = STEP_RESULTS) -> list[Entry]:
        """Executed steps (not dry-runs, not intents) at or after `since`, oldest first, whose
        target starts with one of `target_prefixes` (all targets when None) and whose result
        is one of `results` (default ok / partial; None: any). Off the loop; O(steps since)."""
        prefixes = tuple(target_prefixes) if target_prefixes is not None else None
        res = tuple(results) if results is not None else None
        return await self._off_loop(lambda: self.index().steps_since(since, prefixes, res))

    def entries_since_sync(self, since: datetime, *, intents: bool = False) -> list[Entry]:
        return self.index().entries_since(since, intents)

    async def entries_since(self, since: datetime, *, intents: bool = False) -> list[Entry]:
        """Every entry at or after `since` (dry-runs and refusals too), oldest first. Off the loop."""
        return await self._off_loop(lambda: self.index().entries_since(since, intents))

    def entries_after_sync(self, seq: int, *, intents: bool = True) -> list[Entry]:
        return self.index().entries_after(seq, intents)

    async def entries_after(self, seq: int, *, intents: bool = True) -> list[Entry]:
        """Entries with a sequence number above `seq` (a mirror's catch-up). Off the loop."""
        return await self._off_loop(lambda: self.index().entries_after(seq, intents))

    async def tail_async(self, n: int = 20, *, intents: bool = False) -> list[Entry]:
        """`tail` off the loop."""
        return await self._off_loop(lambda: self.tail(n, intents=intents))

    def open_intents_sync(self) -> list[Entry]:
        return self.index().open_intents()

    async def open_intents(self) -> list[Entry]:
        """Intents with no outcome yet (a crash, a full disk after the change, or still running)."""
        return await self._off_loop(lambda: self.index().open_intents())

    # ------------------------------------------------------------------ verify

    def verify(self, *, max_problems: int = 200) -> VerifyResult:
        """Walk the file: hash chain, MACs, sequence (gaps = deletions, going back = reordering),
        the head anchor (truncation), a torn tail, the intents without an outcome."""
        key = None
        key_state = "none"
        try:
            key = self._load_key(create=False)
        except (OSError, ValueError) as exc:
            key_state = f"unreadable: {_os_reason(exc)}"
        if key is not None:
            key_state = "present"
        head_raw = self._read_head()
        problems: list[Problem] = []

        counted = 0  # whole entries read so far (the walk below updates it)

        def problem(kind: str, text: str, line: int | None = None, seq: int | None = None,
                    before: int | None = None) -> None:
            if len(problems) < max_problems:
                problems.append(Problem(kind, text, line, seq, counted if before is None else before))

        head: Entry | None = head_raw if isinstance(head_raw, dict) else None
        head_bad = isinstance(head_raw, str)
        if head_bad:
            problem("head", f"the head anchor {self.head_path.name} {head_raw}")
        if head is not None and key is not None and not hmac.compare_digest(
                str(head.get("mac", "")), _head_mac(key, head)):
            problem("head", f"the head anchor {self.head_path.name} was altered (its MAC does not match)")
            head, head_bad = None, True
        keyed_since = head.get("keyed_since") if head is not None else None
        if not isinstance(keyed_since, int):
            keyed_since = None
        if not self.path.exists():
            if head is not None and int(head.get("seq") or 0) > 0:
                problem("truncated", f"the audit file is gone: the head anchor records #{head['seq']} "
                                     f"(written {head.get('ts')})")
            ok = not problems
            return VerifyResult(ok, 0, None, problems[0].text if problems else "", tuple(problems),
                                head=head, key=key_state)

        torn: Entry | None = None
        with self.path.open("rb") as fh:
            try:
                tail = scan_tail(fh.fileno())
            except AuditUnavailable as exc:
                tail = None
                problem("corrupt", exc.reason)
            torn_at = tail.torn_offset if tail is not None and tail.torn else None
            if torn_at is not None:
                size = os.fstat(fh.fileno()).st_size
                torn = {"offset": torn_at, "length": size - torn_at,
                        "text": f"torn last line at offset {torn_at} ({size - torn_at} bytes): a crash mid-write; "
                                "the next write (or `warroom audit repair`) sets it aside into "
                                f"{self.torn_path.name}; changes are refused until then"}

            count = keyed = unkeyed = 0
            last_seq = 0
            last_hash = GENESIS
            seen_keyed = False
            missing: dict[int, int] = {}  # seq -> line where the gap was seen (still open)
            gap_ranges: list[tuple[int, int, int, int]] = []  # (from, to, line, entries before)
            intents: dict[int, Entry] = {}
            set_aside: list[Entry] = []
            mac_missing_noted = False
            offset = 0
            lineno = 0
            for raw in fh:
                lineno += 1
                start = offset
                offset += len(raw)
                if torn_at is not None and start >= torn_at:
                    break
                if not raw.strip():
                    continue
                entry = _parse_entry(raw)
                if entry is None:
                    problem("corrupt", f"line {lineno} is not a whole entry (not valid JSON)", lineno)
                    continue
                digest = entry.pop("hash")
                mac = entry.pop("mac", None)
                seq = entry.get("seq")
                seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
                label = f"#{seq}" if seq is not None else f"line {lineno}"
                counted = count
                count += 1
                if entry_hash(str(entry.get("prev", "")), entry) != digest:
                    problem("edited", f"entry {label} (line {lineno}) was modified: its hash does not match "
                                      "its content", lineno, seq)
                elif mac is None:
                    if seen_keyed or (keyed_since is not None and seq is not None and seq >= keyed_since):
                        problem("unkeyed", f"entry {label} (line {lineno}) has no MAC although entries are keyed "
                                           f"{'before it' if seen_keyed else f'from #{keyed_since}'}: rewritten "
                                           "without the key", lineno, seq)
                    else:
                        unkeyed += 1
                elif key is None:
                    seen_keyed = True
                    if not mac_missing_noted:
                        mac_missing_noted = True
                        problem("key", f"entries carry MACs but the key {self.key_path} is missing: "
                                       "they cannot be checked", lineno, seq)
                elif not hmac.compare_digest(str(mac), entry_mac(key, digest)):
                    seen_keyed = True
                    problem("forged", f"entry {label} (line {lineno}): its MAC does not match: it was rewritten "
                                      "(hash chain recomputed) without the key", lineno, seq)
                else:
                    seen_keyed = True
                    keyed += 1
                # its place in the chain
                if seq is None:
                    problem("chain", f"line {lineno} has no sequence number", lineno)
                elif seq == last_seq + 1:
                    if entry.get("prev") != last_hash:
                        problem("chain", f"entry #{seq} (line {lineno}) does not follow #{last_seq}: its prev is "
                                         "not that entry's hash (an entry was replaced or inserted)", lineno, seq)
                    last_seq, last_hash = seq, digest
                elif seq > last_seq + 1:
                    for s in range(last_seq + 1, min(seq, last_seq + 1 + 100_000)):
                        missing[s] = lineno
                    gap_ranges.append((last_seq + 1, seq - 1, lineno, count - 1))
                    last_seq, last_hash = seq, digest
                elif seq in missing:
                    del missing[seq]
                    problem("reordered", f"entry #{seq} (line {lineno}) is out of order: it comes after "
                                         f"#{last_seq} (entries were reordered)", lineno, seq)
                else:
                    problem("duplicate", f"entry #{seq} (line {lineno}) appears again after #{last_seq} "
                                         "(copied or inserted)", lineno, seq)
                # write-ahead bookkeeping
                if entry.get("phase") == "intent" and seq is not None:
                    intents[seq] = _intent_info(dict(entry, hash=digest), lineno)
                elif isinstance(entry.get("intent"), int):
                    intents.pop(entry["intent"], None)
                if entry.get("action") == "audit.torn_tail":
                    x: Entry = entry["extra"] if isinstance(entry.get("extra"), dict) else {}
                    set_aside.append({"seq": seq, "line": lineno, "ts": entry.get("ts"), **x})
            for lo, hi, line, before in gap_ranges:
                gone = [s for s in range(lo, hi + 1) if s in missing]
                if gone:
                    what = f"#{gone[0]}" if len(gone) == 1 else f"#{gone[0]}..#{gone[-1]}"
                    problem("deleted", f"{len(gone)} entr{'y' if len(gone) == 1 else 'ies'} ({what}) missing "
                                       f"before line {line} (deleted)", line, gone[0], before)
            counted = count
        if head is not None and isinstance(head.get("seq"), int):
            hs = head["seq"]
            if last_seq < hs:
                problem("truncated", f"truncated: the head anchor records #{hs} (written {head.get('ts')}) but the "
                                     f"file ends at #{last_seq}: {hs - last_seq} entr"
                                     f"{'y' if hs - last_seq == 1 else 'ies'} removed from the end")
            elif last_seq == hs and head.get("hash") != last_hash:
                problem("truncated", f"the last entry #{hs} is not the one the head anchor recorded "
                                     "(replaced or cut and rewritten)")
        elif head is None and not head_bad and key is not None and seen_keyed:
            problem("head", f"the head anchor {self.head_path.name} is missing although entries are keyed: "
                            "truncation cannot be ruled out")
        problems.sort(key=lambda p: (p.line is None, p.line or 0))
        first = problems[0] if problems else None
        return VerifyResult(
            ok=not problems and torn is None, entries=first.before if first else count, total=count,
            first_bad_line=first.line if first else None,
            reason=first.text if first else (torn["text"] if torn else ""),
            problems=tuple(problems), open_intents=tuple(intents.values()), torn=torn,
            set_aside=tuple(set_aside), keyed=keyed, unkeyed=unkeyed, head=head, key=key_state,
        )


def _lines_backwards(fd: int, chunk: int = 65536) -> Iterator[bytes]:
    """The file's lines from the last to the first (a partial last line included)."""
    pos = os.fstat(fd).st_size
    rest = b""
    while pos > 0:
        step = min(chunk, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + rest
        lines = buf.split(b"\n")
        rest = lines[0]
        yield from reversed(lines[1:])
    if rest:
        yield rest


class _Index:
    """Offsets of every whole entry, with its ts and seq, and the executed steps apart.

    Built once by reading the file (in the reader thread), then brought up to date from
    the bytes appended since (by this process or any other) at each query. A file that
    shrank or was replaced (a torn tail set aside, a rotation) is read again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._reset(None)

    def _reset(self, ident: tuple[int, int] | None) -> None:
        self.ident = ident
        self.end = 0  # bytes indexed (end of the last whole line)
        self.off = array("q")
        self.length = array("l")
        self.ts = array("d")
        self.ts_max = array("d")  # running maximum of ts: sorted, for bisect even when clocks step back
        self.seq = array("q")
        self.step_pos = array("l")  # positions (into the arrays above) of executed steps
        self.step_ts = array("d")
        self.step_max = array("d")
        self.intent_pos: dict[int, int] = {}  # open intents: seq -> position

    def __len__(self) -> int:
        return len(self.off)

    def refresh(self, chunk: int = 1 << 20) -> None:
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self._reset(None)
                return
            ident = (st.st_dev, st.st_ino)
            if ident != self.ident or st.st_size < self.end:
                self._reset(ident)
            if st.st_size == self.end:
                return
            with self.path.open("rb") as fh:
                fh.seek(self.end)
                pos = self.end
                carry = b""
                while True:
                    data = fh.read(chunk)
                    if not data:
                        break
                    data = carry + data
                    last = data.rfind(b"\n")
                    if last == -1:
                        carry = data
                        continue
                    whole, carry = data[:last + 1], data[last + 1:]
                    start = 0
                    for line in whole.split(b"\n")[:-1]:
                        n = len(line) + 1
                        self._add(line, pos + start, n)
                        start += n
                    pos += len(whole)
                self.end = pos

    def _add(self, line: bytes, off: int, n: int) -> None:
        if not line.strip():
            return
        try:
            e = json.loads(line)
        except ValueError:
            return
        if not isinstance(e, dict):
            return
        i = len(self.off)
        ts = _ts_epoch(e.get("ts"))
        seq = e.get("seq")
        self.off.append(off)
        self.length.append(n)
        self.ts.append(ts)
        known = ts if ts == ts else float("-inf")  # NaN (no readable ts) never raises the maximum
        self.ts_max.append(known if not self.ts_max or known > self.ts_max[-1] else self.ts_max[-1])
        self.seq.append(seq if isinstance(seq, int) and not isinstance(seq, bool) else -1)
        if e.get("phase") == "intent":
            if isinstance(seq, int):
                self.intent_pos[seq] = i
            return
        if isinstance(e.get("intent"), int):
            self.intent_pos.pop(e["intent"], None)
        if not e.get("dry_run") and ts == ts:  # ts == ts: not NaN
            self.step_pos.append(i)
            self.step_ts.append(ts)
            self.step_max.append(ts if not self.step_max or ts > self.step_max[-1] else self.step_max[-1])

    def _read(self, positions: Iterable[int]) -> list[Entry]:
        out = []
        with self.path.open("rb") as fh:
            fd = fh.fileno()
            for i in positions:
                raw = os.pread(fd, self.length[i], self.off[i])
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    continue
        return out

    def steps_since(self, since: datetime, prefixes: tuple[str, ...] | None,
                    results: tuple[str, ...] | None) -> list[Entry]:
        t = since.timestamp() if since.tzinfo else since.replace(tzinfo=UTC).timestamp()
        with self._lock:
            # every step at or after t sits at or after the first whose running max reaches t
            lo = bisect.bisect_left(self.step_max, t)
            positions = [self.step_pos[j] for j in range(lo, len(self.step_pos)) if self.step_ts[j] >= t]
            entries = self._read(positions)
        return [e for e in entries
                if (results is None or e.get("result") in results)
                and (prefixes is None or str(e.get("target") or "").startswith(prefixes))]

    def entries_since(self, since: datetime, intents: bool) -> list[Entry]:
        t = since.timestamp() if since.tzinfo else since.replace(tzinfo=UTC).timestamp()
        with self._lock:
            lo = bisect.bisect_left(self.ts_max, t)
            positions = [i for i in range(lo, len(self.ts)) if self.ts[i] >= t]
            entries = self._read(positions)
        return [e for e in entries if intents or e.get("phase") != "intent"]

    def entries_after(self, seq: int, intents: bool) -> list[Entry]:
        with self._lock:
            lo = bisect.bisect_right(self.seq, seq)
            while lo > 0 and self.seq[lo - 1] > seq:  # out of order (tampered): be safe
                lo -= 1
            positions = [i for i in range(lo, len(self.seq)) if self.seq[i] > seq]
            entries = self._read(positions)
        return [e for e in entries if intents or e.get("phase") != "intent"]

    def open_intents(self) -> list[Entry]:
        with self._lock:
            items = sorted(self.intent_pos.items())
            entries = self._read([i for _s, i in items])
        return [_intent_info(e, 0) for e in entries]
