"""Real queue producers for the preset tests: npm bullmq under `node`, Sidekiq's gem under `ruby`.

Each helper runs the framework's own producer code (tests/harness/producers/) against a
Redis URL and returns what the script printed (JSON). A missing `node`, `ruby`, bullmq,
its Redis client (ioredis) or the sidekiq gem fails under CI=true and skips otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from . import REPO, in_ci

PRODUCERS = Path(__file__).resolve().parent / "producers"
NODE_MODULES = REPO / ".tools" / "node_modules"


def unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def node_env() -> dict[str, str]:
    """NODE_PATH: the project's .tools/node_modules first, then any NODE_PATH already set."""
    extra = os.environ.get("NODE_PATH", "")
    return {**os.environ, "NODE_PATH": os.pathsep.join(p for p in (str(NODE_MODULES), extra) if p)}


def _run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 60.0) -> Any:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(argv[:2])} did not finish within {timeout:g}s", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv[:2])} exited {done.returncode}: {done.stderr.strip()[-2000:]}", pytrace=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        pytest.fail(f"{' '.join(argv[:2])} printed no JSON: {done.stdout[-500:]} {done.stderr[-500:]}", pytrace=False)
    return json.loads(lines[-1])


def require_node_bullmq() -> str:
    node = shutil.which("node")
    if not node:
        unavailable("node is not on PATH (BullMQ producer)")
    assert node
    for mod, why in (("bullmq", "npm bullmq is not installed in .tools/node_modules (make tools)"),
                     ("ioredis", "npm ioredis, the Redis client bullmq 6 loads (an optional peer dependency), "
                                 "is not installed in .tools/node_modules (package.json) nor on NODE_PATH")):
        probe = subprocess.run([node, "-e", f"require.resolve({mod!r})"], capture_output=True, text=True,
                               timeout=30, env=node_env())
        if probe.returncode != 0:
            unavailable(why)
    return node


def bullmq_produce(port: int, queue: str, prefix: str | None = None) -> dict[str, Any]:
    """Run tests/harness/producers/bullmq_producer.js: {"ids", "timestamps", "version"}."""
    node = require_node_bullmq()
    argv = [node, str(PRODUCERS / "bullmq_producer.js"), str(port), queue]
    if prefix:
        argv.append(prefix)
    out: dict[str, Any] = _run(argv, env=node_env())
    return out


def require_ruby_sidekiq() -> str:
    ruby = shutil.which("ruby")
    if not ruby:
        unavailable("ruby is not on PATH (Sidekiq producer; Debian ruby-sidekiq)")
    assert ruby
    probe = subprocess.run([ruby, "-e", 'require "sidekiq"'], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        unavailable(f"the sidekiq gem cannot be loaded (Debian ruby-sidekiq): {probe.stderr.strip()[-300:]}")
    return ruby


def sidekiq_produce(url: str, queue: str) -> dict[str, Any]:
    """Run tests/harness/producers/sidekiq_producer.rb: {"jids", "jobs", "version"}."""
    ruby = require_ruby_sidekiq()
    out: dict[str, Any] = _run([ruby, str(PRODUCERS / "sidekiq_producer.rb"), url, queue])
    return out
