"""The dataclass code cache (backends/codecache.py): classes built from cached code are
the same classes; a bad, foreign or untrusted file only costs the speed-up; and the
`warroom` command writes the cache once and then starts from it."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from backends import codecache
from backends.codecache import CodeCache

ROOT = Path(__file__).resolve().parent.parent

MODULE = '''
from __future__ import annotations
from dataclasses import dataclass, field
from typing import Any

@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    source: str
    at: float = 0.0
    tags: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

@dataclass(frozen=True, slots=True, kw_only=True)
class QueueReading(Reading):
    name: str = ""
    depth: int = 0

    @property
    def busy(self) -> bool:
        return self.depth > 10

@dataclass(order=True)
class Mutable:
    a: int
    b: str = "x"
'''


def build(namespace_name: str) -> dict:
    """The module above, executed: its classes are built now (through whatever
    `dataclasses.exec` is at this moment). Registered in sys.modules for pickle."""
    import types

    mod = types.ModuleType(namespace_name)
    sys.modules[namespace_name] = mod
    exec(compile(MODULE, f"<{namespace_name}>", "exec"), mod.__dict__)
    return mod.__dict__


@pytest.fixture
def cache_routed(monkeypatch, tmp_path):
    """dataclasses' compiles routed through a CodeCache on a file in tmp_path (restored after);
    this process may write compiled code (the suite runs under PYTHONDONTWRITEBYTECODE)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    def route(cache: CodeCache) -> CodeCache:
        monkeypatch.setattr(dataclasses, "exec", cache.exec, raising=False)
        return cache

    yield route
    for name in [n for n in sys.modules if n.startswith("cc_mod_")]:
        del sys.modules[name]


def same_behaviour(plain: dict, cached: dict) -> None:
    P, C = plain["QueueReading"], cached["QueueReading"]
    a = P(source="redis", name="action_jobs", depth=12, extra={"k": 1})
    b = C(source="redis", name="action_jobs", depth=12, extra={"k": 1})
    assert repr(a).split("(", 1)[1] == repr(b).split("(", 1)[1]
    assert [f.name for f in dataclasses.fields(P)] == [f.name for f in dataclasses.fields(C)]
    assert hash(a) == hash(b)
    assert b == C(source="redis", name="action_jobs", depth=12, extra={"other": 2})  # extra: compare=False
    assert b != C(source="redis", name="action_jobs", depth=13)
    assert b.busy and C.__slots__ == P.__slots__
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.depth = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        C("redis")  # kw_only
    assert pickle.loads(pickle.dumps(b)) == b
    assert dataclasses.replace(b, depth=1).depth == 1
    for cls in ("Reading", "QueueReading", "Mutable"):
        for meth in ("__init__", "__repr__", "__eq__", "__setattr__", "__hash__", "__lt__"):
            pm, cm = getattr(plain[cls], meth, None), getattr(cached[cls], meth, None)
            if hasattr(pm, "__code__"):
                assert pm.__code__.co_code == cm.__code__.co_code, (cls, meth)
                assert pm.__code__.co_consts == cm.__code__.co_consts, (cls, meth)
    m = cached["Mutable"](1)
    m.a = 2
    assert m < cached["Mutable"](3) and m == cached["Mutable"](2, "x")


def test_classes_from_cached_code_are_the_same_classes(cache_routed, tmp_path):
    plain = build("cc_mod_plain")
    path = tmp_path / "cache" / "code.bin"
    cold = cache_routed(CodeCache(path))
    first = build("cc_mod_cold")
    assert cold.misses > 10
    assert cold.save() and path.exists()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert not cold.save()  # nothing new: not written again

    warm = CodeCache(path)
    warm.load()
    assert warm.problem == ""
    cache_routed(warm)
    second = build("cc_mod_warm")
    assert warm.misses == 0 and warm.hits == cold.misses + cold.hits
    assert not warm.save()
    same_behaviour(plain, first)
    same_behaviour(plain, second)


def _written(cache_routed, path: Path) -> int:
    cache = cache_routed(CodeCache(path))
    build("cc_mod_write")
    assert cache.save()
    return cache.misses


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "other python", "garbage"])
def test_a_damaged_or_foreign_file_is_ignored_and_written_anew(cache_routed, tmp_path, damage):
    path = tmp_path / "code.bin"
    n = _written(cache_routed, path)
    data = bytearray(path.read_bytes())
    if damage == "flip a byte":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 3]
    elif damage == "other python":
        data[5:9] = b"\x00\x00\x0d\x0a"  # another bytecode magic
    else:
        data = bytearray(os.urandom(64))
    path.write_bytes(bytes(data))
    cache = CodeCache(path)
    cache.load()
    assert cache.problem and not cache.blobs
    cache_routed(cache)
    plain = build("cc_mod_plain")
    after = build("cc_mod_after")
    assert cache.misses == n and cache.hits >= n  # compiled once, then from memory
    same_behaviour(plain, after)
    assert cache.save()
    again = CodeCache(path)
    again.load()
    assert again.problem == "" and len(again.blobs) == n


def test_a_file_others_can_write_is_not_trusted(cache_routed, tmp_path):
    path = tmp_path / "code.bin"
    _written(cache_routed, path)
    path.chmod(0o666)
    cache = CodeCache(path)
    cache.load()
    assert "writable by others" in cache.problem and not cache.blobs
    path.chmod(0o600)
    tmp_path.chmod(0o777)
    try:
        cache = CodeCache(path)
        cache.load()
        assert "writable by others" in cache.problem
    finally:
        tmp_path.chmod(0o700)


def test_an_unwritable_cache_folder_costs_only_the_speed_up(cache_routed, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder would be")
    cache = cache_routed(CodeCache(blocker / "warroom" / "code.bin"))
    cache.load()
    plain = build("cc_mod_plain")
    built = build("cc_mod_unwritable")
    assert not cache.save() and "cannot write" in cache.problem
    same_behaviour(plain, built)


def test_off_by_environment(monkeypatch):
    monkeypatch.setenv("WARROOM_CODE_CACHE", "0")
    assert codecache.install() is None
    assert "exec" not in vars(dataclasses)


def _run(args: list[str], cache_home: Path, tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, XDG_CACHE_HOME=str(cache_home), HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path),
               XDG_STATE_HOME=str(tmp_path))
    env.pop("WARROOM_CODE_CACHE", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra)
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_command_writes_the_cache_once_then_starts_from_it(tmp_path):
    cache_home = tmp_path / "cache"
    args = ["check", "--config", str(ROOT / "examples" / "minimal.toml")]
    first = _run(args, cache_home, tmp_path)
    assert first.returncode == 0, first.stderr
    files = list((cache_home / "warroom").glob("dataclass-code-*.bin"))
    assert len(files) == 1
    written = files[0].read_bytes()
    stamp = files[0].stat().st_mtime_ns
    assert oct((cache_home / "warroom").stat().st_mode & 0o777) == "0o700"
    second = _run(args, cache_home, tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert files[0].stat().st_mtime_ns == stamp and files[0].read_bytes() == written  # all hits: nothing new
    cache = CodeCache(files[0])
    cache.load()
    assert cache.problem == "" and len(cache.blobs) > 50


def test_nothing_is_written_when_python_writes_no_bytecode(tmp_path):
    cache_home = tmp_path / "cache"
    run = _run(["check", "--config", str(ROOT / "examples" / "minimal.toml")], cache_home, tmp_path,
               PYTHONDONTWRITEBYTECODE="1")
    assert run.returncode == 0, run.stderr
    assert not list(cache_home.glob("warroom/dataclass-code-*"))


def test_the_console_writes_the_cache_once_its_engine_has_started(tmp_path):
    """Not only at exit: a console that is killed (a closed SSH session) has written it too."""
    import fcntl
    import select
    import signal
    import struct
    import termios
    import time

    cache_home = tmp_path / "cache"
    env = dict(os.environ, XDG_CACHE_HOME=str(cache_home), HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path),
               XDG_STATE_HOME=str(tmp_path), TERM="xterm-256color", WARROOM_OPERATOR="test")
    for name in ("WARROOM_CODE_CACHE", "PYTHONDONTWRITEBYTECODE", "WARROOM_CONFIG"):
        env.pop(name, None)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 48, 160, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "--config", str(ROOT / "examples" / "minimal.toml")],
                            stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env, start_new_session=True)
    os.close(slave)
    try:
        deadline = time.monotonic() + 60
        while not list(cache_home.glob("warroom/dataclass-code-*.bin")):
            assert proc.poll() is None, "the console exited"
            assert time.monotonic() < deadline, "no cache written while the console ran"
            ready, _, _ = select.select([master], [], [], 0.2)  # keep the terminal drained
            if ready:
                try:
                    os.read(master, 65536)
                except OSError:
                    break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # no exit handlers: only what it wrote while running
        proc.wait(10)
        os.close(master)
    cache = CodeCache(next(cache_home.glob("warroom/dataclass-code-*.bin")))
    cache.load()
    assert cache.problem == "" and len(cache.blobs) > 100
