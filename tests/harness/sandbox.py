"""The demo sandbox for a test module (`warroom demo --stack-only` in-process): started on
free ports with its own XDG state folder and the owner key set, stopped by PID at the end.
Under CI=true a sandbox that cannot start fails the run; locally its tests skip.

The tests' sandbox uses short windows where the demo's are the seeds' minute: breakers
half-open after 20 s (demo 60 s) and the large-release pattern counts over 30 s (demo 60 s),
so the breaker-storm and contract-exploit drills do not wait a minute each. The drills'
README figures are the demo's: set WARROOM_SANDBOX_DEMO_WINDOWS=1 to measure with those."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from tests.harness import in_ci

# the sandbox windows the tests use (seconds); the demo's default is 60 for both
TEST_WINDOWS = {"breaker_reset_timeout": 20.0, "exploit_window": 30.0}


def sandbox_windows() -> dict[str, float]:
    """The Stack's window settings for a test sandbox ({} = the demo's defaults)."""
    return {} if os.environ.get("WARROOM_SANDBOX_DEMO_WINDOWS") == "1" else dict(TEST_WINDOWS)


@contextlib.contextmanager
def running_sandbox(tmp_path_factory, label: str = "xdg-state") -> Iterator:
    from sandbox.stack import DEV_KEYS, OWNER_KEY_ENV, Stack, find_anvil

    if find_anvil() is None and in_ci():
        pytest.fail("CI=true and anvil is not installed (make tools)", pytrace=False)
    state_dir = tmp_path_factory.mktemp(label)
    saved = {k: os.environ.get(k) for k in ("XDG_STATE_HOME", OWNER_KEY_ENV)}
    os.environ["XDG_STATE_HOME"] = str(state_dir)
    os.environ[OWNER_KEY_ENV] = DEV_KEYS[0]
    stack = Stack(ports="auto", state_path=state_dir / "warroom" / "sandbox.json", **sandbox_windows())
    try:
        stack.start()
    except Exception as exc:  # noqa: BLE001 - any failure to start is reported the same way
        stack.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if in_ci():
            pytest.fail(f"CI=true and the sandbox did not start: {exc}", pytrace=False)
        pytest.skip(f"sandbox unavailable: {exc}")
    try:
        yield stack
    finally:
        stack.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
