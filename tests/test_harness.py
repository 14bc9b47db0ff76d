"""The harness itself: every real service answers a real query / command / transaction."""

from __future__ import annotations

import time

import pytest

from tests.harness.evm import DEV_ACCOUNTS, DEV_KEYS, order_id_to_bytes32, start_anvil


@pytest.mark.postgres
async def test_postgres_real_query_on_fresh_db(pg):
    import asyncpg

    dsn = pg.fresh_db()
    assert dsn.startswith("postgresql://postgres@127.0.0.1:")
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL)")
        await conn.executemany("INSERT INTO orders VALUES ($1, $2)",
                               [("o1", "pending"), ("o2", "completed"), ("o3", "pending")])
        n = await conn.fetchval("SELECT count(*) FROM orders WHERE status = $1", "pending")
        assert n == 2
    finally:
        await conn.close()
    # a second fresh db is empty and separate
    other = await asyncpg.connect(pg.fresh_db(), timeout=10)
    try:
        assert await other.fetchval("SELECT to_regclass('orders')") is None
    finally:
        await other.close()


@pytest.mark.postgres
async def test_postgres_unix_socket_dsn(pg):
    import asyncpg

    conn = await asyncpg.connect(pg.socket_dsn, timeout=10)
    try:
        assert await conn.fetchval("SELECT 41 + 1") == 42
    finally:
        await conn.close()


@pytest.mark.redis
async def test_redis_lpush_llen(redis_server):
    import redis.asyncio as aioredis

    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    redis_server.flush()
    r = aioredis.from_url(redis_server.url)
    try:
        await r.lpush("action_jobs", "a", "b", "c")
        assert await r.llen("action_jobs") == 3
        bind = (await r.config_get("bind"))["bind"]
        assert bind == "127.0.0.1"
    finally:
        await r.aclose()
    redis_server.flush()
    c = redis_server.client()
    try:
        assert c.llen("action_jobs") == 0
    finally:
        c.close()


@pytest.mark.redis
def test_redis_stop_and_start_on_same_port(redis_server):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    port = redis_server.port
    redis_server.stop()
    c = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1,
                    retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.ConnectionError):
        c.ping()
    redis_server.start()
    assert redis_server.port == port
    assert c.ping()
    c.close()


@pytest.mark.evm
def test_anvil_answers_with_dev_accounts(anvil):
    from eth_account import Account

    assert anvil.url == f"http://127.0.0.1:{anvil.port}"
    assert anvil.chain_id == 31337
    assert int(anvil.rpc("eth_chainId"), 16) == 31337
    accounts = [a.lower() for a in anvil.rpc("eth_accounts")]
    assert [a.lower() for a in DEV_ACCOUNTS] == accounts[: len(DEV_ACCOUNTS)]
    for key, addr in zip(DEV_KEYS, DEV_ACCOUNTS, strict=True):
        assert Account.from_key(key).address == addr
    before = anvil.block_number()
    anvil.mine(2)
    assert anvil.block_number() == before + 2


@pytest.mark.evm
def test_escrow_release_emits_event(escrow, anvil):
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(anvil.url))
    contract = w3.eth.contract(address=escrow.address, abi=escrow.abi)
    assert contract.functions.owner().call() == anvil.accounts[0]
    assert contract.functions.paused().call() is False

    tx = escrow.release("order-123", 1000)
    assert tx.startswith("0x") and len(tx) == 66
    receipt = w3.eth.get_transaction_receipt(tx)
    assert receipt["status"] == 1
    topic0 = Web3.keccak(text="EscrowReleased(bytes32,uint256)")
    logs = w3.eth.get_logs({"address": escrow.address, "fromBlock": receipt["blockNumber"],
                            "toBlock": receipt["blockNumber"], "topics": [topic0]})
    assert len(logs) == 1
    assert logs[0]["topics"][1] == order_id_to_bytes32("order-123")
    assert int.from_bytes(logs[0]["data"], "big") == 1000
    decoded = contract.events.EscrowReleased().process_log(logs[0])
    assert decoded["args"]["amount"] == 1000


@pytest.mark.evm
def test_escrow_pause_blocks_release_and_emits_events(escrow, anvil):
    from web3 import Web3
    from web3.exceptions import ContractLogicError

    w3 = Web3(Web3.HTTPProvider(anvil.url))
    contract = w3.eth.contract(address=escrow.address, abi=escrow.abi)
    tx = escrow.pause()
    assert contract.functions.paused().call() is True
    logs = contract.events.Paused().process_receipt(w3.eth.get_transaction_receipt(tx))
    assert logs[0]["args"]["account"] == anvil.accounts[0]
    with pytest.raises(ContractLogicError):
        contract.functions.release(order_id_to_bytes32("x"), 1).call(
            {"from": anvil.accounts[0]})
    # a stranger cannot unpause
    with pytest.raises(ContractLogicError):
        contract.functions.unpause().call({"from": anvil.accounts[1]})
    tx = escrow.unpause()
    logs = contract.events.Unpaused().process_receipt(w3.eth.get_transaction_receipt(tx))
    assert logs[0]["args"]["account"] == anvil.accounts[0]
    assert contract.functions.paused().call() is False


@pytest.mark.evm
def test_start_anvil_extra_node_with_block_time():
    node = start_anvil(block_time=0.2, chain_id=1337)
    try:
        assert node.port and node.url.startswith("http://127.0.0.1:")
        assert int(node.rpc("eth_chainId"), 16) == 1337
        first = node.block_number()
        deadline = time.monotonic() + 10
        while node.block_number() <= first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert node.block_number() > first
    finally:
        node.stop()
    assert node.process.poll() is not None


def test_order_id_to_bytes32():
    assert order_id_to_bytes32("123") == b"123" + b"\0" * 29
    assert len(order_id_to_bytes32("é")) == 32
    with pytest.raises(ValueError):
        order_id_to_bytes32("x" * 33)


@pytest.mark.docker
def test_docker_busybox_container_healthcheck_and_compose_labels(docker_engine):
    from tests.harness.docker import compose_labels

    assert docker_engine.client.ping()
    assert docker_engine.base_url.startswith(("unix://", "tcp://", "npipe://"))
    image = docker_engine.client.images.get(docker_engine.busybox_image)
    assert image.attrs["Config"]["Cmd"] == ["/bin/sh"]
    c = docker_engine.run_container(
        "wr-harness-api-gateway-1",
        labels=compose_labels("wr-harness", "api-gateway"),
        healthcheck="test -e /tmp/ready",
        command=["sh", "-c", "sleep 0.3; touch /tmp/ready; trap 'exit 0' TERM; "
                             "sleep 2147483647 & wait"])
    assert docker_engine.wait_health(c, "healthy", timeout=30) == "healthy"
    c.reload()
    assert c.status == "running"
    assert c.attrs["HostConfig"]["NetworkMode"] == "none"
    found = docker_engine.client.containers.list(
        filters={"label": ["com.docker.compose.project=wr-harness",
                           "com.docker.compose.service=api-gateway"]})
    assert [x.id for x in found] == [c.id]
    assert found[0].labels["com.docker.compose.container-number"] == "1"
    out = c.exec_run(["sh", "-c", "echo $((6 * 7))"])
    assert out.exit_code == 0 and out.output.strip() == b"42"
    c.stop(timeout=5)
    assert c.wait(timeout=10)["StatusCode"] == 0


@pytest.mark.docker
def test_docker_unhealthy_and_exit_code(docker_engine):
    c = docker_engine.run_container("wr-harness-sick", healthcheck="false")
    assert docker_engine.wait_health(c, "unhealthy", timeout=30) == "unhealthy"
    done = docker_engine.run_container("wr-harness-exit3", command=["sh", "-c", "exit 3"])
    assert done.wait(timeout=20)["StatusCode"] == 3
    with pytest.raises(ValueError):
        docker_engine.run_container("wr-harness-bridge", network_mode="bridge")


def _pid_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.postgres
def test_postgres_standalone_teardown_leaves_nothing(pg):
    from tests.harness.postgres import PostgresServer

    server = PostgresServer().start()
    pid, tmp = server.postmaster_pid(), server.tmp
    assert pid and _pid_alive(pid)
    assert server.psql("SELECT 1").strip() == "1"
    server.stop()
    assert not _pid_alive(pid)
    assert not tmp.exists()


@pytest.mark.redis
def test_redis_standalone_teardown_leaves_nothing(redis_server):
    from tests.harness import port_open
    from tests.harness.redis import RedisServer

    server = RedisServer().start()
    pid, tmp, port = server.process.pid, server.tmp, server.port
    assert port != redis_server.port and server.ping()
    server.close()
    assert not _pid_alive(pid) and not port_open(port) and not tmp.exists()


@pytest.mark.evm
def test_start_anvil_restart_on_same_port():
    node = start_anvil()
    port = node.port
    node.rpc("anvil_mine", ["0x3"])
    assert node.block_number() == 3
    node.stop()
    assert node.process.poll() is not None
    again = start_anvil(port=port)
    try:
        assert again.url == node.url
        assert again.block_number() == 0  # a fresh chain
    finally:
        again.stop()


def test_unavailable_service_fails_under_ci_and_skips_otherwise(monkeypatch):
    from tests import conftest

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and redis unavailable: .*refused"):
        conftest._unavailable("redis", ConnectionRefusedError("refused"))
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="redis unavailable: .*refused"):
        conftest._unavailable("redis", ConnectionRefusedError("refused"))
