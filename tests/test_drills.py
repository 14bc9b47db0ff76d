"""Each fault drill, injected into a real sandbox, produces its expected finding through
the engine within 15 s; its playbook's fix, applied through the engine's actions,
makes `warroom drill --status` report recovery; the drill is undone afterwards.

One sandbox for the module; the drills run one after the other, each from a clean
baseline. Figures (detection and recovery times) are printed (`pytest -s`).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.evm]

DETECT_WITHIN = 15.0
ORDER = ["listener-crash", "listener-hang", "api-down", "rpc-outage", "gas-low", "pool-exhaustion",
         "breaker-storm", "queue-flood", "contract-exploit", "stuck-signer"]
ORDER.append("missed-blocks")  # the listener skips a block range on purpose
FIGURES: dict[str, tuple[float, float, str]] = {}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from tests.harness.sandbox import running_sandbox

    with running_sandbox(tmp_path_factory) as stack:
        try:
            yield stack
        finally:
            if FIGURES:
                print("\ndrill figures (from injection): detection / recovery after the fix")
                for name, (det, rec, finding) in FIGURES.items():
                    print(f"  {name:<17} detected {det:5.1f}s  recovered {rec:5.1f}s  [{finding}]")


async def _until(predicate, limit: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + limit
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what}: not within {limit:.0f}s (last: {last!r})")


def _status(name: str | None = None) -> tuple[int, str]:
    """`warroom drill --status` in a thread (it runs its own event loop), output captured."""
    import contextlib
    import io

    from sandbox import drills_cli

    parser = argparse.ArgumentParser()
    drills_cli.add_arguments(parser)
    args = parser.parse_args(["--status"] + ([name] if name else []))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = drills_cli.run(args)
    return rc, buf.getvalue()


@pytest.mark.parametrize("name", ORDER)
async def test_drill_detected_fixed_recovered(sandbox, name):
    from backends.config import load_config
    from backends.engine.core import build_engine
    from backends.model import SourceState
    from sandbox import drills

    run_dir: Path = sandbox.run_dir
    drill = drills.get(name)
    config = load_config(sandbox.config_path)
    engine = build_engine(config)
    observer = drills.DrillObserver(run_dir, config=config)
    engine.monitor.subscribe(observer.on_snapshot)
    await engine.start()
    injected = False
    try:
        def settled():
            snap = engine.monitor.snapshot
            return snap.sources and all(s.state is not SourceState.PENDING for s in snap.sources.values())

        await _until(settled, 20, "every source read once")
        # a clean baseline: the drill's finding is not there yet (an earlier drill has recovered)
        await _until(lambda: not drill.detect(engine.monitor.snapshot), 30, f"{name}: baseline")

        rec = await asyncio.to_thread(drills.inject, run_dir, name)
        injected = True
        rec = await _until(lambda: drills.read_records(run_dir)[name].get("detected_at") and
                           drills.read_records(run_dir)[name], DETECT_WITHIN + 5, f"{name}: detection")
        detected = rec["detected_at"] - rec["injected_at"]
        assert detected <= DETECT_WITHIN, f"{name} detected after {detected:.1f}s: {rec['finding']}"
        assert rec["finding_playbook"] == drill.playbook or name in ("listener-hang",), rec
        if name == "missed-blocks":  # warroom finds exactly the range the listener skipped
            def exact():
                dropped = drills.dropped_releases(run_dir)
                want = f"missed-blocks:integrity.orders:{min(d['block'] for d in dropped)}-" \
                       f"{max(d['block'] for d in dropped)}" if dropped else None
                got = [f for f in drill.detect(engine.monitor.snapshot) if f.key == want]
                return got and f"{len(dropped)} releases unprocessed" in got[0].summary
            await _until(exact, 20, "missed-blocks: the finding names exactly the skipped range")

        steps = await drills.apply_fix(engine, run_dir, name)
        assert steps
        rec = await _until(lambda: drills.read_records(run_dir)[name].get("recovered_at") and
                           drills.read_records(run_dir)[name], 60, f"{name}: recovery after {steps}")
        recovered = rec["recovered_at"] - rec["injected_at"]
        FIGURES[name] = (detected, recovered, rec["finding"][:70])

        rc, out = await asyncio.to_thread(_status, name)
        assert rc == 0, out
        assert f"{name}: injected" in out and "RECOVERED after" in out and "all recovered" in out
    finally:
        if injected:
            await asyncio.to_thread(drills.undo, run_dir, name)
        await engine.stop()


def test_drill_list_and_unknown_name(capsys):
    from sandbox import drills_cli
    from sandbox.drills import DRILLS

    parser = argparse.ArgumentParser()
    drills_cli.add_arguments(parser)
    assert drills_cli.run(parser.parse_args([])) == 0
    out = capsys.readouterr().out
    for name in ORDER:
        assert name in out
    assert set(ORDER) == set(DRILLS)


def test_drill_without_sandbox_says_how_to_start_one(tmp_path, monkeypatch, capsys):
    from sandbox import drills_cli

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    parser = argparse.ArgumentParser()
    drills_cli.add_arguments(parser)
    assert drills_cli.run(parser.parse_args(["api-down"])) == 2
    assert "warroom demo" in capsys.readouterr().err
