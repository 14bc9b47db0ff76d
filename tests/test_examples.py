"""The example configs for the seed systems load, pass `warroom check`, and build an
engine (without connecting) whose actions cover their playbooks' resolution steps."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

DUMMY_ENV = {
    # meta-aggregator
    "DATABASE_URL": "postgresql://app:dummy-password@127.0.0.1:5432/app",
    "RPC_URL": "http://127.0.0.1:8545",
    "RPC_URL_BACKUP": "http://127.0.0.1:8546",
    "ESCROW_CONTRACT_ADDRESS": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    "ARBITER_ADDRESS": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    # erc8004
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "COMPOSE_PROJECT": "api8004dev",
    # neo-n3
    "NEO_RPC_URL": "http://127.0.0.1:10332",
    "NEO_RPC_URL_BACKUP": "http://127.0.0.1:20332",
    "NEO_WALLET": "/srv/neo/wallet.json",
    "NEO_WALLET_CONFIG": "/srv/neo/wallet-config.yml",
    "NEO_WALLET_ADDRESS": "NNLi44dJNXtDNSBkofB48aTVYtb1zZrNEs",
    "PAUSE_REGISTRY_HASH": "0x" + "11" * 20,
    "PAYMENT_HUB_HASH": "0x" + "22" * 20,
    "GAS_BANK_HASH": "0x" + "33" * 20,
    "PLATFORM_ADDRESS": "NNLi44dJNXtDNSBkofB48aTVYtb1zZrNEs",
    "TEE_SERVICE_URL": "http://127.0.0.1:9443",
    "SUPABASE_URL": "http://127.0.0.1:54321",
    "SUPABASE_ANON_KEY": "dummy-anon-key",
}

CASES = {
    "meta-aggregator.toml": {"orders": True, "chain": "polygon", "services": {"listener", "backend"}},
    "erc8004.toml": {"queues": {"action_jobs"}, "breakers": True,
                     "services": {"postgres", "redis", "api-gateway", "event-processor", "action-workers",
                                  "ponder-indexers"}},
    "neo-n3.toml": {"chain": "neo", "services": {"platform-edge", "tee-signer"}},
}


@pytest.fixture
def env(monkeypatch, tmp_path):
    for k, v in DUMMY_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return DUMMY_ENV


@pytest.mark.parametrize("name", sorted(CASES))
def test_warroom_check_passes(env, name, capsys):
    from tui.cmd_check import main

    assert main(["--config", str(EXAMPLES / name)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "config OK" in out
    assert "dummy-password" not in out and "dummy-anon-key" not in out


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_has_the_seed_structure(env, name):
    from backends.config import load_config

    c = load_config(EXAMPLES / name)
    want = CASES[name]
    assert want["services"] <= {s.name for s in c.services}
    if "chain" in want:
        assert want["chain"] in c.chain and c.chain[want["chain"]].endpoints
    if want.get("orders"):
        assert c.orders is not None and c.orders.stuck_after == 600.0 and c.orders.event == "EscrowReleased"
    if "queues" in want:
        q = c.queue("action_jobs")
        assert q is not None and q.thresholds == (1000, 10000, 50000)
    if want.get("breakers"):
        assert c.breakers is not None and c.breakers.reset_timeout == 60.0
    assert c.escalation.levels and c.incident.response
    for s in c.services:  # every service can be restarted from the console
        assert s.restart_via, s.name


def test_neo_checks_read_contract_state_through_neo_go(env):
    from backends.config import load_config

    c = load_config(EXAMPLES / "neo-n3.toml")
    checks = {k.name: k for k in c.checks}
    assert checks["payment-hub-paused"].kind == "command" and checks["payment-hub-paused"].path == "stack[0].value"
    assert checks["gas-bank-balance"].crit_below and checks["gas-bank-balance"].playbook == "gas-low"
    assert c.chain["neo"].head_method == "getblockcount" and c.chain["neo"].kind == "jsonrpc"
    argv = {a.name: a.argv for a in c.actions}
    assert argv["pause-all"][:3] == ("neo-go", "contract", "invokefunction") and "pauseAll" in argv["pause-all"]
    assert "refill" in argv  # the gas-low playbook's command.refill


@pytest.mark.parametrize("name", sorted(CASES))
def test_engine_builds_without_connecting(env, name):
    from backends.config import load_config
    from backends.engine.core import build_engine

    engine = build_engine(load_config(EXAMPLES / name), read_only=True)
    ids = {a.id for a in engine.actions._actions.values()}
    assert engine.monitor.sources
    if name == "meta-aggregator.toml":
        assert {"orders.reconcile", "orders.fix", "chain.pause", "service.restart"} <= ids
    if name == "erc8004.toml":
        assert {"breaker.reset_all", "postgres.terminate", "service.restart", "docker.scale"} <= ids
    if name == "neo-n3.toml":
        assert {"command.refill", "command.pause-all", "chain.failover", "service.restart"} <= ids
