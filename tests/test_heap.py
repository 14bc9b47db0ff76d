"""A console left running for days hands freed C-heap memory back (issue 10's soak)."""

from __future__ import annotations

import time

import psutil
import pytest

from backends.actions.base import ActionEngine
from backends.engine.audit import AuditLog
from backends.engine.monitor import FunctionSource, Monitor
from backends.model import ServiceReading, Status
from tests.engines import engine_of
from tui import heap
from tui.app import WarroomApp

pytestmark = pytest.mark.skipif(not heap.available(), reason="no malloc_trim (not glibc)")


def test_trim_returns_fragmented_free_heap_to_the_os():
    """50 MB of 1 KB objects (C heap, not pymalloc) freed except every 64th: glibc
    keeps the free chunks between the survivors; trim gives those pages back."""
    proc = psutil.Process()
    blocks = [bytes(1000) for _ in range(50_000)]
    keep = blocks[::64]  # survivors pin the heap: free() alone cannot shrink it
    del blocks
    before = proc.memory_info().rss
    assert heap.trim() is True
    after = proc.memory_info().rss
    assert before - after > 20e6, (before / 1e6, after / 1e6)
    assert len(keep) == 782


async def test_console_trims_the_heap_periodically(tmp_path):
    async def ok():
        return [ServiceReading(source="docker", name="api", state="running", status=Status.OK)]

    engine = engine_of(Monitor([FunctionSource("docker", ok, interval=0.5, timeout=1, kind="docker")]),
                       ActionEngine(AuditLog(tmp_path / "audit.jsonl"), operator="alice"))
    app = WarroomApp(engine)
    app.heap_trim_s = 0.1
    async with app.run_test(size=(80, 24)) as pilot:
        deadline = time.monotonic() + 10
        while app.heap_trims < 2 and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert app.heap_trims >= 2
