"""The sandbox stack (`warroom demo`): it starts, its services come up, the engine reads
it, the console populates, a second start and a taken port are refused with a clear
message, and stopping it leaves no process, port or temp folder behind.

One stack for the whole module (started once; ~6 s on an idle 2-core box).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from tests.harness import in_ci

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.evm]


def _start_stack(state_dir: Path, **kw):
    from sandbox.stack import Stack, find_anvil

    if find_anvil() is None and in_ci():
        pytest.fail("CI=true and anvil is not installed (make tools)", pytrace=False)
    stack = Stack(ports="auto", state_path=state_dir / "warroom" / "sandbox.json", **kw)
    t0 = time.monotonic()
    try:
        stack.start()
    except Exception as exc:  # noqa: BLE001
        stack.stop()
        if in_ci():
            pytest.fail(f"CI=true and the sandbox did not start: {exc}", pytrace=False)
        pytest.skip(f"sandbox unavailable: {exc}")
    stack.timings["test_start"] = time.monotonic() - t0
    return stack


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("xdg-state")
    old = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(state_dir)
    stack = _start_stack(state_dir, order_every=1.0)
    print(f"\nsandbox start: {stack.timings['test_start']:.1f}s ({stack.chain_kind}); "
          + ", ".join(f"{k} {v:.1f}s" for k, v in stack.timings.items()))
    try:
        yield stack
    finally:
        stack.stop()
        if old is None:
            os.environ.pop("XDG_STATE_HOME", None)
        else:
            os.environ["XDG_STATE_HOME"] = old


def _cmdline(pid: int) -> str:
    from sandbox.stack import cmdline_of

    return cmdline_of(pid)


async def _until(predicate, limit: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + limit
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what}: not within {limit:.0f}s (last: {last!r})")


def test_services_are_up(sandbox):
    from sandbox.stack import SERVICES, port_open, service_pids

    pids = service_pids(sandbox.run_dir)
    assert set(SERVICES) <= set(pids), pids
    for key in ("postgres", "redis", "node", "rpc_primary", "api", "webhook"):
        assert port_open(sandbox.ports[key]), key
    logs = sandbox.run_dir / "logs"
    for name in SERVICES:
        assert (logs / f"{name}.log").stat().st_size > 0, name


def test_generated_config_passes_check(sandbox, capsys):
    from tui.cmd_check import main

    assert main(["--config", str(sandbox.config_path)]) == 0
    out = capsys.readouterr().out
    assert "config OK" in out and "orders: postgres.main table orders" in out


def test_state_file_lets_drills_find_the_sandbox(sandbox):
    from sandbox.stack import running_sandbox

    info = running_sandbox(sandbox.state_path)
    assert info["config"] == str(sandbox.config_path)
    assert info["pid"] == os.getpid()
    assert info["ports"]["api"] == sandbox.ports["api"]
    assert info["pids"]["event-listener"] > 0 and info["pids"]["redis"] > 0


def test_second_start_is_refused(sandbox):
    from sandbox.stack import SandboxError, Stack

    other = Stack(ports="auto", state_path=sandbox.state_path)
    try:
        with pytest.raises(SandboxError, match="already running"):
            other.start()
        assert other.run_dir is None  # refused before anything was created
    finally:
        other.stop()


def test_taken_port_is_refused(sandbox, monkeypatch, tmp_path):
    import sandbox.stack as st

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        monkeypatch.setitem(st.DEFAULT_PORTS, "api", port)
        other = st.Stack(ports="fixed", state_path=tmp_path / "other.json")
        try:
            with pytest.raises(st.SandboxError, match=rf"{port} \(API gateway\).*already in use"):
                other.start()
            assert other.run_dir is None
        finally:
            other.stop()


async def test_engine_reads_the_stack(sandbox):
    from backends.config import load_config
    from backends.engine.core import build_engine
    from backends.model import (
        BreakersReading,
        ChainReading,
        OrdersReading,
        QueueReading,
        ServiceReading,
        Severity,
    )

    engine = build_engine(load_config(sandbox.config_path), read_only=True)
    await engine.start()
    try:
        def flowing():
            snap = engine.monitor.snapshot
            orders = snap.of_type(OrdersReading)
            return orders and orders[0].by_state_24h.get("SETTLED", 0) >= 2 and snap

        snap = await _until(flowing, 30, "settled orders")
        q = snap.of_type(QueueReading)
        assert q and q[0].key == "action_jobs" and q[0].depth < 1000
        b = snap.of_type(BreakersReading)
        assert b and b[0].total == 4 and b[0].open == 0
        chain = snap.of_type(ChainReading)[0]
        assert chain.expected_chain_id == sandbox.settings["chain_id"]
        assert all(e.ok and e.head for e in chain.endpoints)
        assert chain.contracts[0].code_present and chain.contracts[0].paused is False
        assert chain.balances[0].balance > chain.balances[0].minimum
        running = {r.name for r in snap.of_type(ServiceReading) if r.state == "running"}
        assert {"api-gateway", "event-listener", "action-workers", "order-flow", "rpc-primary"} <= running
        counts = dict(engine.monitor.poll_counts)  # every source polled again: no serious finding
        await _until(lambda: all(engine.monitor.poll_counts[n] > c for n, c in counts.items()), 20,
                     "another round of polls")
        serious = [f for f in engine.monitor.snapshot.findings if f.severity <= Severity.P1]
        assert not serious, [f.summary for f in serious]
    finally:
        await engine.stop()


async def test_console_populates(sandbox):
    from sandbox.cli import make_console

    t0 = time.monotonic()
    app, engine, populated = make_console(sandbox, t0)
    await engine.start()
    try:
        async with app.run_test(size=(140, 42)) as pilot:
            await _until(lambda: populated, 15, "populated console")
            await pilot.pause()
            assert app.snapshot is not None and app.snapshot.readings
            await pilot.press("q")
    finally:
        await engine.stop()
    print(f"console populated {populated[0]:.1f}s after it was created (stack already running)")
    assert populated[0] < 15


def test_demo_console_stops_the_stack_when_its_terminal_hangs_up(sandbox, tmp_path):
    """`warroom --kiosk demo` on a terminal (a pty) that goes away (ssh dropped, tmux
    window killed): SIGHUP must end the console and stop the whole stack. The exception
    a plain handler raised was swallowed by the running app, which then kept postgres,
    redis, anvil and the services alive."""
    import contextlib
    import pty
    import re
    import select
    import signal
    import subprocess
    import sys

    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), TERM="xterm-256color",
               COLUMNS="120", LINES="40")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "--kiosk", "demo", "--ports", "auto"],
                            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
                            cwd=str(Path(__file__).resolve().parents[1]))
    os.close(slave)
    out = b""
    run_dir = None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and b"KIOSK" not in out:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    out += os.read(master, 65536)
                except OSError:
                    break
            if proc.poll() is not None:
                break
        m = re.search(rb"run dir (\S+?)\)", out)
        assert m and b"KIOSK" in out, out[-2000:]
        run_dir = m.group(1).decode()
        assert Path(run_dir).exists()
        proc.send_signal(signal.SIGHUP)
        os.close(master)  # the terminal is gone, as after a hang-up
        master = -1
        assert proc.wait(timeout=30) == 128 + signal.SIGHUP
    finally:
        if master >= 0:
            os.close(master)
        if proc.poll() is None:  # failed: leave nothing behind either
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if run_dir and Path(run_dir).exists():
            for p in os.listdir("/proc"):
                if p.isdigit() and run_dir in _cmdline(int(p)):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(p), signal.SIGKILL)
    assert not Path(run_dir).exists()
    assert not [p for p in os.listdir("/proc") if p.isdigit() and run_dir in _cmdline(int(p))]


async def test_demo_takes_the_console_options(sandbox):
    """`warroom --kiosk demo` is the wall display on the sandbox (read-only in the engine);
    `--read-only` and `--theme` apply too."""
    from sandbox.cli import make_console
    from tui.screens.kiosk import KioskScreen

    app, engine, _populated = make_console(sandbox, kiosk=True, cycle=3.0, theme="light")
    assert engine.actions.read_only and app.read_only and app.kiosk_cycle == 3.0
    assert app.theme_name == "light"
    await engine.start()
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await _until(lambda: isinstance(app.screen, KioskScreen), 10, "the kiosk")
            await pilot.pause()
    finally:
        await engine.stop()
    assert not [a.id for a in engine.actions.available() if a.mutating]
    app, engine, _ = make_console(sandbox, read_only=True)
    assert engine.actions.read_only and not app.kiosk


def test_py_evm_fallback_chain_serves_the_escrow():
    """Without anvil the sandbox serves a py-evm chain: the Escrow deploys, releases emit
    EscrowReleased, eth_getLogs filters by topic, pause works, values are JSON-RPC wire values."""
    import json

    from sandbox.services.common import order_id_to_topic, release_calldata
    from sandbox.services.devchain import Chain
    from sandbox.stack import ARBITER, ARTIFACT, DEV_KEYS, OWNER, SELECTORS, event_topic

    chain = Chain(DEV_KEYS)
    art = json.loads(ARTIFACT.read_text())

    def send(tx):
        h = chain.call("eth_sendTransaction", [tx])
        receipt = chain.call("eth_getTransactionReceipt", [h])
        assert receipt["status"] == "0x1", receipt
        return receipt

    escrow = send({"from": OWNER, "data": art["bytecode"], "gas": hex(3_000_000)})["contractAddress"]
    send({"from": OWNER, "to": escrow, "gas": hex(100_000),
          "data": SELECTORS["setArbiter"] + ARBITER[2:].lower().rjust(64, "0") + "1".rjust(64, "0")})
    send({"from": ARBITER, "to": escrow, "gas": hex(120_000),
          "data": release_calldata(SELECTORS["release"], "ord-1", 10**18)})
    topic = event_topic(art["abi"], "EscrowReleased")
    logs = chain.call("eth_getLogs", [{"address": escrow, "fromBlock": "0x0", "toBlock": "latest",
                                       "topics": [topic]}])
    assert len(logs) == 1 and logs[0]["topics"][1] == order_id_to_topic("ord-1")
    assert int(logs[0]["data"], 16) == 10**18 and logs[0]["blockNumber"].startswith("0x")
    send({"from": OWNER, "to": escrow, "data": SELECTORS["pause"], "gas": hex(100_000)})
    assert int(chain.call("eth_call", [{"to": escrow, "data": SELECTORS["paused"]}, "latest"]), 16) == 1
    block = chain.call("eth_getBlockByNumber", ["latest", False])
    assert block["number"].startswith("0x") and "timestamp" in block and "parentHash" in block
    assert int(chain.call("eth_getBalance", [ARBITER, "latest"]), 16) > 9_000 * 10**18


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_demo_stack_only_command(sandbox, tmp_path, signame):
    """`warroom demo --stack-only` as a user runs it: prints its config and state file, is
    found by `warroom drill`, and SIGTERM stops everything it started. So does SIGHUP (the
    ssh session or tmux window closed): redis-server used to outlive the demo."""
    import re
    import signal
    import subprocess
    import sys

    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "tui.cli", "demo", "--stack-only", "--ports", "auto"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=str(Path(__file__).resolve().parents[1]))
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("drills:"):
                break
        out = "".join(lines)
        assert re.search(r"sandbox ready in \d+\.\d+s", out), out
        config = re.search(r"^config:\s+(\S+)", out, re.M).group(1)
        run_dir = Path(config).parent
        assert (tmp_path / "state" / "warroom" / "sandbox.json").exists()
        status = subprocess.run([sys.executable, "-m", "tui.cli", "drill", "--status"], env=env, text=True,
                                capture_output=True, timeout=60, cwd=str(Path(__file__).resolve().parents[1]))
        assert status.returncode == 0 and "no drill injected" in status.stdout, status
    finally:
        proc.send_signal(getattr(signal, signame))
        rest, _ = proc.communicate(timeout=60)
    assert "sandbox stopped" in rest, rest
    assert proc.returncode == 130
    assert not run_dir.exists()
    mark = str(run_dir)
    assert not [p for p in os.listdir("/proc") if p.isdigit() and mark in _cmdline(int(p))]


def test_stop_leaves_nothing(sandbox):
    """Runs last: stops the module's stack and checks what is left."""
    from sandbox.stack import pid_alive, port_open, service_pids

    run_dir = sandbox.run_dir
    pids = set(service_pids(run_dir).values())
    pids |= {sandbox.redis_proc.pid, sandbox.chain_proc.pid, sandbox.postmaster_pid()}
    assert all(pids)
    t0 = time.monotonic()
    sandbox.stop()
    print(f"sandbox stop: {time.monotonic() - t0:.1f}s")
    alive = [p for p in pids if pid_alive(p)]
    assert not alive, alive
    mark = str(run_dir)
    left = [p for p in os.listdir("/proc") if p.isdigit() and mark in _cmdline(int(p))]
    assert not left, left
    still = [k for k, p in sandbox.ports.items() if port_open(p)]
    assert not still, still
    assert not run_dir.exists()
    assert not sandbox.state_path.exists()
