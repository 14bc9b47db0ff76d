"""A cache of the code that `dataclasses` generates, kept between runs (faster start).

Python 3.11 and 3.12 compile each generated method of a dataclass (`__init__`, `__repr__`,
`__eq__`, `__hash__`, the frozen `__setattr__`/`__delattr__`) from source text with
`exec`, at import: about 1.3 ms per frozen, slotted class. The console has ~140 such
classes (its own and Textual's), ~120 of them before its first frame. Compiling is
deterministic — the same text gives the same code — so the code objects are kept in one
file and the next start only runs them.

How: `install()` puts an `exec` into the `dataclasses` module's globals. It looks the text
up in the cache (compiling on a miss, with no inherited compiler flags, as the builtin
does for `dataclasses`' own frame) and runs the code with the same globals and locals.
Nothing else calls it. The classes are the same: the same methods from the same text
(tests/test_codecache.py compares the two).

The file: `<user cache dir>/warroom/dataclass-code-<python tag>.bin`, written atomically
(mode 0600) by `save()` when new entries were compiled. It is read only when it is owned
by this user and writable by no one else (as ssh treats its files) and when its header
(format, Python's bytecode magic, the optimization level) and CRC match; otherwise it is
ignored and written anew. A text is found by its hash (BLAKE2b, 16 bytes). As for `.pyc`
files, nothing is written under PYTHONDONTWRITEBYTECODE (or `python -B`).
`WARROOM_CODE_CACHE=0` turns all of it off. Any error reading or writing it only costs the
speed-up, never the start.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import importlib.util
import marshal
import os
import stat
import sys
import tempfile
import threading
import types
import zlib
from pathlib import Path
from typing import Any

FORMAT = b"WRDC2"
MAX_ENTRIES = 5_000  # ~900 today; texts of older versions are dropped past this
SUPPORTED = ((3, 11), (3, 12), (3, 13))  # dataclasses.py there calls `exec(txt, globals, ns)`


def _header() -> bytes:
    return FORMAT + importlib.util.MAGIC_NUMBER + bytes([sys.flags.optimize])


def default_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    tag = sys.implementation.cache_tag or "python"
    return Path(base) / "warroom" / f"dataclass-code-{tag}.bin"


def _trusted(path: Path, st: os.stat_result) -> bool:
    """Ours, a regular file, and writable by nobody else; its folder likewise."""
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        return False
    try:
        parent = path.parent.stat()
    except OSError:
        return False
    return parent.st_uid == os.getuid() and not parent.st_mode & 0o022


class CodeCache:
    """Source text -> code object. The file maps a 16-byte hash of each text to that code,
    marshalled on its own: loading reads one dict of bytes, and a code is unmarshalled
    when its class is built."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.blobs: dict[bytes, bytes] = {}
        self.used: set[bytes] = set()
        self.hits = 0
        self.misses = 0
        self.problem = ""  # why the file was not used (tests, a look with a debugger)
        self._dirty = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ file
    def load(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if not _trusted(self.path, st):
                    self.problem = "not owned by this user, or writable by others: ignored"
                    return
                data = fh.read()
        except FileNotFoundError:
            return
        except OSError as exc:
            self.problem = f"cannot read: {exc.strerror or exc}"
            return
        header = _header()
        if not data.startswith(header) or len(data) < len(header) + 4:
            self.problem = "another Python or format: written anew"
            return
        crc = int.from_bytes(data[len(header):len(header) + 4], "big")
        payload = data[len(header) + 4:]
        if zlib.crc32(payload) != crc:
            self.problem = "checksum mismatch: written anew"
            return
        try:
            blobs = marshal.loads(payload)
        except (EOFError, ValueError, TypeError) as exc:
            self.problem = f"unreadable ({exc}): written anew"
            return
        if not isinstance(blobs, dict) or not all(
                isinstance(k, bytes) and isinstance(v, bytes) for k, v in blobs.items()):
            self.problem = "unexpected content: written anew"
            return
        self.blobs = blobs

    def save(self) -> bool:
        """Write the file when this run compiled something new; True if written. Past
        MAX_ENTRIES only what this run used is kept."""
        if sys.dont_write_bytecode:  # PYTHONDONTWRITEBYTECODE / -B: no compiled code is written
            return False
        with self._lock:
            if not self._dirty:
                return False
            blobs = dict(self.blobs)
            if len(blobs) > MAX_ENTRIES:
                blobs = {k: v for k, v in blobs.items() if k in self.used}
            self._dirty = False
        payload = marshal.dumps(blobs)
        data = _header() + zlib.crc32(payload).to_bytes(4, "big") + payload
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".dataclass-code-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            self.problem = f"cannot write: {exc.strerror or exc}"
            with self._lock:
                self._dirty = True
            return False
        return True

    # ------------------------------------------------------------------ exec
    def compile(self, source: str) -> types.CodeType:
        key = hashlib.blake2b(source.encode(), digest_size=16).digest()
        blob = self.blobs.get(key)
        if blob is not None:
            try:
                code = marshal.loads(blob)
            except (EOFError, ValueError, TypeError):
                code = None
            if isinstance(code, types.CodeType):
                self.hits += 1
                self.used.add(key)
                return code
        code = builtins.compile(source, "<string>", "exec", dont_inherit=True)
        with self._lock:
            self.blobs[key] = marshal.dumps(code)
            self.used.add(key)
            self._dirty = True
        self.misses += 1
        return code

    def exec(self, source: Any, globals: dict[str, Any] | None = None, locals: Any = None, /) -> None:  # noqa: A002
        if isinstance(source, str):
            source = self.compile(source)
        builtins.exec(source, globals, locals)


_installed: CodeCache | None = None


def install(path: Path | None = None) -> CodeCache | None:
    """Load the cache and route `dataclasses`' compiles through it; None when off (the
    environment says so, or a Python whose dataclasses this was not made for)."""
    global _installed
    if _installed is not None:
        return _installed
    if os.environ.get("WARROOM_CODE_CACHE", "1").strip().lower() in ("0", "off", "no", "false"):
        return None
    if sys.version_info[:2] not in SUPPORTED:
        return None
    import dataclasses

    cache = CodeCache(path or default_path())
    cache.load()
    dataclasses.exec = cache.exec  # type: ignore[attr-defined]
    _installed = cache
    return cache


def uninstall() -> None:
    global _installed
    import dataclasses

    if getattr(dataclasses, "exec", None) is not None and _installed is not None:
        del dataclasses.exec  # type: ignore[attr-defined]
    _installed = None


def save() -> bool:
    """Write what this run compiled (called off the UI loop once the console has started)."""
    return _installed.save() if _installed is not None else False


def installed() -> CodeCache | None:
    return _installed
