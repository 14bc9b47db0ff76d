"""Fault drills for the sandbox: inject a seed's emergency, see warroom find it, fix it.

Each drill names what it breaks, the finding warroom should raise (and its playbook),
and the playbook's fix. `inject()` breaks the running sandbox and records the time in
`<run-dir>/state/drills.json`; a `DrillObserver` subscribed to an engine's monitor (the
demo console, `warroom drill`, a test) records when the expected finding first
appeared (detection) and when the system recovered. `undo()` removes the fault.
`apply_fix()` runs the playbook's fix through the engine's actions (audited), the way
an operator would from the console.

Heavy libraries are imported inside functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from backends.model import (
    ChainReading,
    ContractReading,
    Finding,
    ServiceReading,
    Severity,
    Snapshot,
    SourceState,
)
from sandbox.stack import (
    OWNER,
    SandboxError,
    load_settings,
    pid_alive,
    rpc,
    service_pids,
    spawn_service,
    start_service,
    stop_service,
    wait_until,
)

EXPLOIT_AMOUNT = 5000 * 10**18
FLOOD_JOBS = 60_000


@dataclass
class Ctx:
    """The running sandbox a drill acts on."""

    run_dir: Path
    settings: dict[str, Any]

    @classmethod
    def of(cls, run_dir: str | Path) -> Ctx:
        run_dir = Path(run_dir)
        return cls(run_dir=run_dir, settings=load_settings(run_dir))

    def flag(self, name: str) -> Path:
        return self.run_dir / "flags" / name

    def redis(self):
        import redis

        return redis.Redis.from_url(self.settings["redis_url"], socket_timeout=10)

    @property
    def node(self) -> str:
        return self.settings["node_url"]

    def send(self, tx: dict, *, wait: bool = True) -> str:
        h = rpc(self.node, "eth_sendTransaction", [tx])
        if wait:
            self.wait(h)
        return h

    def wait(self, tx_hash: str) -> dict:
        receipt = wait_until(lambda: rpc(self.node, "eth_getTransactionReceipt", [tx_hash]), 20,
                             "transaction receipt")
        if int(receipt["status"], 16) != 1:
            raise SandboxError(f"transaction {tx_hash} reverted")
        return receipt

    def balance(self, address: str) -> int:
        return int(rpc(self.node, "eth_getBalance", [address, "latest"]), 16)

    def paused(self) -> bool:
        out = rpc(self.node, "eth_call", [{"to": self.settings["escrow"], "data": self.settings["selectors"]["paused"]},
                                          "latest"])
        return bool(int(out, 16)) if out and out != "0x" else False


@dataclass(frozen=True)
class Drill:
    name: str
    title: str
    does: str  # what the injection does
    expect: str  # the finding warroom should raise
    playbook: str
    fix: str  # the playbook's fix, as an operator applies it
    inject: Callable[[Ctx], str]
    undo: Callable[[Ctx], str]
    detect: Callable[[Snapshot], list[Finding]]
    recovered: Callable[[Snapshot, dict], bool]  # (snapshot, record incl. audit facts) -> recovered?
    fix_steps: tuple[tuple[str, dict], ...] = ()  # (action id, params) run through the engine
    external_fix: Callable[[Ctx], str] | None = None  # the part of the fix outside warroom (fix the webhook)
    # the fault itself is gone, checked on the sandbox (not through warroom): recovery needs it
    fault_gone: Callable[[Ctx, dict], bool] | None = None  # (sandbox, record incl. audit facts)


CLEAR_POLLS = 2  # recovered only once the finding has stayed clear for this many polls


def _process_ok(service: str) -> Callable[[Ctx, dict], bool]:
    def gone(ctx: Ctx, record: dict) -> bool:
        pid = service_pids(ctx.run_dir).get(service)
        if pid is None or not pid_alive(pid):
            return False
        try:  # a SIGSTOPped process is alive but 'T' (stopped)
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        return state not in ("T", "t", "Z")
    return gone


def _gas_ok(ctx: Ctx, record: dict) -> bool:
    return ctx.balance(ctx.settings["arbiter"]) >= 50 * 10**18


def _queue_ok(ctx: Ctx, record: dict) -> bool:
    r = ctx.redis()
    try:
        return int(r.llen(ctx.settings["queue"])) < 1000  # below the queue's first threshold
    finally:
        r.close()


def _webhook_ok(ctx: Ctx, record: dict) -> bool:
    return not ctx.flag("webhook-down").exists()


def _report_job_gone(ctx: Ctx, record: dict) -> bool:
    """The hog exits once every connection it held was terminated (the fix) or on --undo."""
    pid = service_pids(ctx.run_dir).get("report-job")
    return pid is None or not pid_alive(pid)


def _rpc_ok(ctx: Ctx, record: dict) -> bool:
    """The primary endpoint answers again, or an operator failed over since the injection."""
    return _process_ok("rpc-primary")(ctx, record) or bool(record.get("audit", {}).get("chain.failover"))


# --------------------------------------------------------------------------- finding matchers


def _by_playbook(*ids: str, max_severity: Severity = Severity.P3) -> Callable[[Snapshot], list[Finding]]:
    def match(snap: Snapshot) -> list[Finding]:
        return [f for f in snap.findings if f.playbook in ids and f.severity <= max_severity]
    return match


def _by_key(prefix: str, *, contains: str = "", suffix: str = "",
            max_severity: Severity = Severity.P3) -> Callable[[Snapshot], list[Finding]]:
    def match(snap: Snapshot) -> list[Finding]:
        return [f for f in snap.findings if f.key.startswith(prefix) and contains in f.key
                and f.key.endswith(suffix) and f.severity <= max_severity]
    return match


def _service_running(snap: Snapshot, name: str) -> bool:
    return any(r.name == name and r.state == "running" for r in snap.of_type(ServiceReading))


def _none(matcher: Callable[[Snapshot], list[Finding]], *, running: str | None = None):
    def recovered(snap: Snapshot, record: dict) -> bool:
        if matcher(snap):
            return False
        return running is None or _service_running(snap, running)
    return recovered


# --------------------------------------------------------------------------- injections


def _kill(ctx: Ctx, service: str, sig: int) -> str:
    pid = service_pids(ctx.run_dir).get(service)
    if pid is None:
        raise SandboxError(f"{service} is not running")
    os.kill(pid, sig)
    return f"sent {signal.Signals(sig).name} to {service} (pid {pid})"


def _ensure_running(ctx: Ctx, service: str) -> str:
    for name, pid in service_pids(ctx.run_dir).items():
        if name == service:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            return f"{service} running (pid {pid})"
    return f"{service} started (pid {start_service(ctx.run_dir, service)})"


def inject_listener_crash(ctx: Ctx) -> str:
    return _kill(ctx, "event-listener", signal.SIGKILL)


def inject_listener_hang(ctx: Ctx) -> str:
    return _kill(ctx, "event-listener", signal.SIGSTOP)


def inject_queue_flood(ctx: Ctx) -> str:
    r = ctx.redis()
    triggers = ctx.settings["triggers"]
    now = time.time()
    try:
        jobs = [json.dumps({"id": f"flood-{i}", "trigger_id": triggers[i % len(triggers)], "type": "flood",
                            "enqueued_at": now}) for i in range(FLOOD_JOBS)]
        pipe = r.pipeline(transaction=False)
        for i in range(0, FLOOD_JOBS, 10_000):
            pipe.lpush(ctx.settings["queue"], *jobs[i:i + 10_000])
        pipe.execute()
        depth = r.llen(ctx.settings["queue"])
    finally:
        r.close()
    return f"pushed {FLOOD_JOBS:,} jobs onto {ctx.settings['queue']} (depth now {depth:,})"


def undo_queue_flood(ctx: Ctx) -> str:
    from sandbox.ctl import scale_workers

    r = ctx.redis()
    key = ctx.settings["queue"]
    try:
        jobs = r.lrange(key, 0, -1)
        keep = [j for j in jobs if b'"type": "flood"' not in j]
        pipe = r.pipeline(transaction=True)
        pipe.delete(key)
        if keep:
            pipe.rpush(key, *keep)
        pipe.execute()
    finally:
        r.close()
    scale_workers(ctx.run_dir, 1)
    return f"removed {len(jobs) - len(keep):,} flood job(s); action workers back to 1 process"


def inject_breaker_storm(ctx: Ctx) -> str:
    ctx.flag("webhook-down").touch()
    r = ctx.redis()
    try:
        now = time.time()
        jobs = [json.dumps({"id": str(uuid.uuid4()), "trigger_id": t, "type": "storm", "enqueued_at": now})
                for t in ctx.settings["triggers"] for _ in range(8)]
        r.lpush(ctx.settings["queue"], *jobs)
    finally:
        r.close()
    return f"webhook now answers 500; pushed {len(jobs)} jobs across {len(ctx.settings['triggers'])} triggers"


def fix_webhook(ctx: Ctx) -> str:
    with contextlib.suppress(FileNotFoundError):
        ctx.flag("webhook-down").unlink()
    return "webhook answers 200 again"


def inject_rpc_outage(ctx: Ctx) -> str:
    pid = stop_service(ctx.run_dir, "rpc-primary")
    if pid is None:
        raise SandboxError("rpc-primary is not running")
    return f"stopped the primary RPC endpoint {ctx.settings['rpc_urls'][0]} (pid {pid})"


def inject_pool_exhaustion(ctx: Ctx) -> str:
    proc = spawn_service(ctx.run_dir, "hog", "--connections", "45", detach=True, log_as="report-job")
    wait_until(lambda: (ctx.run_dir / "pids" / "report-job.pid").exists() or proc.poll() is not None, 20,
               "the long-running report job")
    return f"started a report job holding 45 connections with pg_sleep queries (pid {proc.pid})"


def undo_pool_exhaustion(ctx: Ctx) -> str:
    pid = stop_service(ctx.run_dir, "report-job")
    return f"stopped the report job (pid {pid})" if pid else "no report job running"


def inject_api_down(ctx: Ctx) -> str:
    return _kill(ctx, "api-gateway", signal.SIGKILL)


def inject_gas_low(ctx: Ctx) -> str:
    s = ctx.settings
    left = 2 * 10**16
    if s.get("chain_kind") == "anvil":
        # the order flow sends from the arbiter all the time: a transfer from it could race
        # the flow's nonces; anvil sets the balance directly
        rpc(ctx.node, "anvil_setBalance", [s["arbiter"], hex(left)])
        return f"drained the arbiter (gas bank) to {ctx.balance(s['arbiter']) / 1e18:.4f} ETH"
    gas_price = int(rpc(ctx.node, "eth_gasPrice"), 16) * 2
    bal = ctx.balance(s["arbiter"])
    value = bal - 21_000 * gas_price - 2 * 10**16
    if value <= 0:
        return f"arbiter balance already low ({bal / 1e18:.4f} ETH)"
    ctx.send({"from": s["arbiter"], "to": s["funder"], "value": hex(value), "gas": hex(21_000),
              "gasPrice": hex(gas_price)})
    return f"drained the arbiter (gas bank) to {ctx.balance(s['arbiter']) / 1e18:.4f} ETH"


def undo_gas_low(ctx: Ctx) -> str:
    from sandbox.ctl import refill

    if ctx.balance(ctx.settings["arbiter"]) >= 100 * 10**18:
        return "arbiter balance is above its minimum"
    return refill(ctx.run_dir)


def inject_contract_exploit(ctx: Ctx) -> str:
    s = ctx.settings
    if ctx.paused():
        raise SandboxError("the escrow is paused: unpause it first (warroom drill contract-exploit --undo)")
    from sandbox.services.common import release_calldata

    hashes = []
    for i in range(5):
        oid = f"x-{uuid.uuid4().hex[:10]}-{i}"
        hashes.append(ctx.send({"from": OWNER, "to": s["escrow"], "gas": hex(120_000),
                                "data": release_calldata(s["selectors"]["release"], oid, EXPLOIT_AMOUNT)},
                               wait=False))
    for h in hashes:
        ctx.wait(h)
    return f"released {len(hashes)} x {EXPLOIT_AMOUNT // 10**18:,} ETH from the escrow to unknown orders"


def undo_contract_exploit(ctx: Ctx) -> str:
    if not ctx.paused():
        return "escrow is not paused"
    ctx.send({"from": OWNER, "to": ctx.settings["escrow"], "data": ctx.settings["selectors"]["unpause"],
              "gas": hex(100_000)})
    return "escrow unpaused"


MISSED_RELEASES = 3  # orders the missed-blocks drill releases inside the skipped range


def _run_sql(dsn: str, fn: Callable[[Any], Any]) -> Any:
    """Run `fn(connection)` with asyncpg in a thread of its own (callers may run a loop)."""
    import threading

    out: dict[str, Any] = {}

    def main() -> None:
        async def go() -> None:
            import asyncpg

            con = await asyncpg.connect(dsn, timeout=10)
            try:
                out["v"] = await fn(con)
            finally:
                await con.close()
        try:
            asyncio.run(go())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            out["e"] = exc

    t = threading.Thread(target=main, daemon=True)
    t.start()
    t.join(30)
    if "e" in out:
        raise out["e"]
    return out.get("v")


def _skip_flag(ctx: Ctx) -> Path:
    return ctx.flag("missed-blocks")


def dropped_releases(run_dir: str | Path) -> list[dict]:
    """The releases the sandbox listener skipped on purpose ({block, order, tx}), in order."""
    path = Path(run_dir) / "flags" / "missed-blocks.dropped"
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def inject_missed_blocks(ctx: Ctx) -> str:
    """The listener skips a block range: open it at head + 1, release MISSED_RELEASES new orders
    inside it, then close it at the last of their blocks (the listener records what it dropped)."""
    from sandbox.services.common import release_calldata

    s = ctx.settings
    flag = _skip_flag(ctx)
    flag.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (flag.parent / "missed-blocks.dropped").unlink()
    start = int(rpc(ctx.node, "eth_blockNumber"), 16) + 1
    flag.write_text(json.dumps({"from": start, "to": start + 10**9}))
    ids = [f"mb-{uuid.uuid4().hex[:10]}-{i}" for i in range(MISSED_RELEASES)]

    async def insert(con: Any) -> None:
        for oid in ids:
            await con.execute("INSERT INTO orders (id, state, amount, created_at, updated_at, notes) "
                              "VALUES ($1, 'PENDING', $2, now(), now(), 'missed-blocks drill')", oid, 10**16)

    _run_sql(s["dsn"], insert)
    hashes = [ctx.send({"from": OWNER, "to": s["escrow"], "gas": hex(120_000),
                        "data": release_calldata(s["selectors"]["release"], oid, 10**16)}, wait=False)
              for oid in ids]  # sent back to back: the listener meets the range in one poll
    blocks = [int(ctx.wait(h)["blockNumber"], 16) for h in hashes]
    flag.write_text(json.dumps({"from": start, "to": max(blocks)}))
    return (f"the listener skips blocks {start}-{max(blocks)}; {len(ids)} orders released inside it "
            f"(blocks {', '.join(map(str, blocks))})")


def undo_missed_blocks(ctx: Ctx) -> str:
    with contextlib.suppress(FileNotFoundError):
        _skip_flag(ctx).unlink()
    return "the listener skips no blocks"


# stuck-signer: a busy chain and a low-fee transaction from the owner key: it waits, and every
# later transaction of that key waits behind it. anvil fills a block while the gas used so far
# plus the next transaction's gas *limit* fits: with every transaction at a 120,000 gas limit
# and the block gas limit just under 120,000 + 21,000, one transaction fits a block (a release
# of the order flow, or a transfer of the backlog, which pays more than the stuck one). Blocks
# use far less than half their limit, so the base fee falls rather than climbs.
STUCK_TX_GAS = 120_000
STUCK_GAS_LIMIT = STUCK_TX_GAS + 21_000 - 1
STUCK_BACKLOG = 240  # the other key's transfers: about one per block (a block a second), minutes busy
_GWEI = 10**9


def _stuck_flag(ctx: Ctx) -> Path:
    return ctx.flag("stuck-signer.json")


def _raw_batch(ctx: Ctx, raws: list[str]) -> list[Any]:
    import urllib.request

    body = json.dumps([{"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction", "params": [r]}
                       for i, r in enumerate(raws)]).encode()
    req = urllib.request.Request(ctx.node, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - the sandbox node on 127.0.0.1
        answers = json.loads(resp.read())
    return [a.get("result") for a in sorted(answers, key=lambda a: a.get("id", 0))]


def inject_stuck_signer(ctx: Ctx) -> str:
    from eth_account import Account

    from sandbox.stack import DEV_KEYS

    s = ctx.settings
    if s.get("chain_kind") != "anvil":
        raise SandboxError("the stuck-signer drill needs anvil (block gas limit and pool control)")
    owner_key, other_key = DEV_KEYS[0], DEV_KEYS[3]
    other = Account.from_key(other_key).address
    rpc(ctx.node, "evm_setBlockGasLimit", [hex(STUCK_GAS_LIMIT)])
    cid = int(s["chain_id"])
    first = int(rpc(ctx.node, "eth_getTransactionCount", [other, "pending"]), 16)
    raws = [Account.sign_transaction({"chainId": cid, "nonce": first + i, "to": other, "value": 0, "gas": STUCK_TX_GAS,
                                      "type": 2, "maxFeePerGas": _GWEI * 11 // 10,
                                      "maxPriorityFeePerGas": _GWEI * 11 // 10}, other_key).raw_transaction.to_0x_hex()
            for i in range(STUCK_BACKLOG)]
    backlog = [h for h in _raw_batch(ctx, raws) if h]  # first: the low-fee one never finds a block alone
    nonce = int(rpc(ctx.node, "eth_getTransactionCount", [s["owner"], "pending"]), 16)
    low = {"chainId": cid, "nonce": nonce, "to": s["owner"], "value": 0, "gas": STUCK_TX_GAS, "type": 2,
           "maxFeePerGas": _GWEI, "maxPriorityFeePerGas": _GWEI}
    stuck = rpc(ctx.node, "eth_sendRawTransaction",
                [Account.sign_transaction(low, owner_key).raw_transaction.to_0x_hex()])
    _stuck_flag(ctx).write_text(json.dumps({"stuck": stuck, "nonce": nonce, "backlog": backlog}))
    return (f"the owner's transaction {stuck} (nonce {nonce}, 1 gwei) waits behind {len(backlog)} transfers paying "
            f"1.1 gwei (one transaction fits a block)")


def undo_stuck_signer(ctx: Ctx) -> str:
    rpc(ctx.node, "evm_setBlockGasLimit", [hex(30_000_000)])
    dropped = 0
    try:
        state = json.loads(_stuck_flag(ctx).read_text())
    except (OSError, ValueError):
        state = {}
    for h in state.get("backlog", []):
        with contextlib.suppress(Exception):
            if rpc(ctx.node, "eth_getTransactionReceipt", [h]) is None:
                rpc(ctx.node, "anvil_dropTransaction", [h])
                dropped += 1
    with contextlib.suppress(FileNotFoundError):
        _stuck_flag(ctx).unlink()
    return f"block gas limit back to 30,000,000; {dropped} backlog transfer(s) dropped"


def _signer_ok(ctx: Ctx, record: dict) -> bool:
    """The owner's key has nothing waiting (its latest nonce caught up with pending)."""
    owner = ctx.settings["owner"]
    return rpc(ctx.node, "eth_getTransactionCount", [owner, "latest"]) == \
        rpc(ctx.node, "eth_getTransactionCount", [owner, "pending"])


def _escrow_paused(snap: Snapshot, record: dict) -> bool:
    contracts = [c for ch in snap.of_type(ChainReading) for c in ch.contracts] + snap.of_type(ContractReading)
    return any(c.name == "escrow" and c.paused for c in contracts)


def _rpc_recovered(snap: Snapshot, record: dict) -> bool:
    """Recovered when no active endpoint is down, or every endpoint is not down and an
    operator failed over since the injection (the failover lives in that console)."""
    active_down = _by_key("rpc-failure:", max_severity=Severity.P1)(snap)
    if not active_down:
        return True
    all_down = [f for f in active_down if f.severity is Severity.P0]
    return not all_down and bool(record.get("audit", {}).get("chain.failover"))


# --------------------------------------------------------------------------- the drills

_LISTENER = _by_playbook("listener-failure", "orders-stuck")
_SILENCE = _by_key("logs:silence:", contains="event-listener")
_QUEUE = _by_playbook("queue-overflow")
_BREAKERS_ALL = _by_key("breakers:", suffix=":all-open")
_RPC = _by_key("rpc-failure:", max_severity=Severity.P1)
_POOL = _by_playbook("db-pool-exhausted")
_API = _by_playbook("api-down")
_GAS = _by_key("gas-low:")
_EXPLOIT = _by_key("logs:pattern:", contains="event-listener")
_STUCK = _by_key("signer-stuck:sandbox:owner")
_MISSED = _by_key("missed-blocks:")

DRILLS: dict[str, Drill] = {d.name: d for d in (
    Drill("listener-crash", "Event listener crash",
          "kills the event listener (SIGKILL) while orders keep being released on chain",
          "the listener is not running; orders stuck in PENDING while their release is on chain",
          "listener-failure",
          "restart the listener (service.restart), then reconcile what is released on chain (orders.reconcile)",
          inject_listener_crash, lambda c: _ensure_running(c, "event-listener"),
          _LISTENER, _none(_LISTENER, running="event-listener"),
          fix_steps=(("service.restart", {"service": "event-listener"}), ("orders.reconcile", {})),
          fault_gone=_process_ok("event-listener")),
    Drill("listener-hang", "Event listener hung",
          "stops the event listener (SIGSTOP): the process is alive but silent",
          "no log line from the event listener (running but no activity)",
          "listener-failure", "restart the listener (service.restart)",
          inject_listener_hang, lambda c: _ensure_running(c, "event-listener"),
          _SILENCE, _none(_LISTENER, running="event-listener"),
          fix_steps=(("service.restart", {"service": "event-listener"}),), fault_gone=_process_ok("event-listener")),
    Drill("queue-flood", "Redis queue overflow",
          f"pushes {FLOOD_JOBS:,} jobs onto action_jobs",
          "queue action_jobs over its critical depth (50,000)", "queue-overflow",
          "scale the action workers (command.scale-workers count=8) and watch the queue drain",
          inject_queue_flood, undo_queue_flood, _QUEUE, _none(_QUEUE),
          fix_steps=(("command.scale-workers", {"count": 8}),), fault_gone=_queue_ok),
    Drill("breaker-storm", "All circuit breakers open",
          "makes the webhook answer 500 while jobs keep coming",
          "every circuit breaker open: no actions are executed", "all-breakers-open",
          "fix the webhook first, then reset the open breakers (breaker.reset_all, type the count)",
          inject_breaker_storm, fix_webhook, _BREAKERS_ALL, _none(_by_key("breakers:")),
          fix_steps=(("breaker.reset_all", {}),), external_fix=fix_webhook, fault_gone=_webhook_ok),
    Drill("rpc-outage", "Primary RPC down",
          "stops the primary RPC endpoint (the proxy in front of the node)",
          "the active RPC endpoint is down", "rpc-failure",
          "fail over to the backup endpoint (chain.failover)",
          inject_rpc_outage, lambda c: _ensure_running(c, "rpc-primary"), _RPC, _rpc_recovered,
          fix_steps=(("chain.failover", {"chain": "sandbox"}),), fault_gone=_rpc_ok),
    Drill("pool-exhaustion", "Database connection pool exhausted",
          "a report job holds 45 connections with long-running pg_sleep queries",
          "connections near max_connections; long-running queries", "db-pool-exhausted",
          "terminate the long-running queries (postgres.terminate all=True)",
          inject_pool_exhaustion, undo_pool_exhaustion, _POOL, _none(_POOL),
          fix_steps=(("postgres.terminate", {"all": True, "older_than": 2}),), fault_gone=_report_job_gone),
    Drill("api-down", "API gateway down",
          "kills the API gateway (SIGKILL)", "the API gateway is not running; its health check fails",
          "api-down", "restart the API gateway (service.restart)",
          inject_api_down, lambda c: _ensure_running(c, "api-gateway"),
          _API, _none(_API, running="api-gateway"),
          fix_steps=(("service.restart", {"service": "api-gateway"}),), fault_gone=_process_ok("api-gateway")),
    Drill("gas-low", "Gas bank depleted",
          "drains the arbiter's balance (it pays every release's gas) below its minimum",
          "the arbiter balance is below its minimum (50 ETH)", "gas-low",
          "refill the gas bank (command.refill)",
          inject_gas_low, undo_gas_low, _GAS, _none(_GAS),
          fix_steps=(("command.refill", {}),), fault_gone=_gas_ok),
    Drill("contract-exploit", "Smart contract exploit suspected",
          f"a burst of {EXPLOIT_AMOUNT // 10**18:,} ETH releases to unknown orders",
          "suspicious large releases in the listener's events (P0)", "contract-exploit",
          "PAUSE the escrow (chain.pause); unpause when the incident is over",
          inject_contract_exploit, undo_contract_exploit, _EXPLOIT, _escrow_paused,
          fix_steps=(("chain.pause", {"chain": "sandbox", "contract": "escrow"}),)),
    Drill("missed-blocks", "Listener skipped blocks",
          f"the event listener skips a block range with {MISSED_RELEASES} releases in it (its cursor moves on)",
          "missed blocks <from>-<to>, N releases unprocessed (exactly the skipped range)", "missed-blocks",
          "backfill exactly that range (orders.backfill): its pending orders released on chain are settled",
          inject_missed_blocks, undo_missed_blocks, _MISSED, _none(_MISSED),
          fix_steps=(("orders.backfill", {}),)),
    Drill("stuck-signer", "Signer stuck behind a low-fee transaction",
          "a busy chain and a 1 gwei transaction from the owner key that better-paying transfers keep out",
          "the owner's transaction at its next nonce unconfirmed for 3 blocks (signer-stuck)", "signer-stuck",
          "speed up the stuck transaction (signer.speed_up: same nonce, fee +20 %)",
          inject_stuck_signer, undo_stuck_signer, _STUCK, _none(_STUCK),
          fix_steps=(("signer.speed_up", {"chain": "sandbox", "signer": "owner"}),), fault_gone=_signer_ok),
)}


def get(name: str) -> Drill:
    try:
        return DRILLS[name]
    except KeyError:
        raise SandboxError(f"unknown drill {name!r} (drills: {', '.join(DRILLS)})") from None


# --------------------------------------------------------------------------- records


def records_path(run_dir: Path) -> Path:
    return Path(run_dir) / "state" / "drills.json"


@contextlib.contextmanager
def _locked_records(run_dir: Path):
    path = records_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.read(fd, 1 << 20)
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError:
            data = {}
        box = [data]
        yield box
        out = json.dumps(box[0], indent=2).encode()
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, out)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_records(run_dir: Path) -> dict[str, dict]:
    try:
        return json.loads(records_path(run_dir).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def inject(run_dir: Path, name: str) -> dict:
    drill = get(name)
    ctx = Ctx.of(run_dir)
    record = {"name": name, "injected_at": time.time(), "detail": "injecting"}
    with _locked_records(run_dir) as box:  # the clock starts before the fault does
        box[0][name] = record
    try:
        detail = drill.inject(ctx)
    except BaseException:
        with _locked_records(run_dir) as box:
            box[0].pop(name, None)
        raise
    with _locked_records(run_dir) as box:
        box[0].setdefault(name, record)["detail"] = detail
        record = box[0][name]
    return record


def undo(run_dir: Path, name: str) -> str:
    drill = get(name)
    ctx = Ctx.of(run_dir)
    detail = drill.undo(ctx)
    with _locked_records(run_dir) as box:
        if name in box[0]:
            box[0][name]["undone_at"] = time.time()
    return detail


def _audit_facts(audit_path: Path | None, since: float) -> dict[str, float]:
    """Successful actions (not dry-runs) in the audit trail since `since`: action id -> time."""
    out: dict[str, float] = {}
    if audit_path is None:
        return out
    try:
        lines = Path(audit_path).read_text().splitlines()[-500:]
    except OSError:
        return out
    for line in lines:
        try:
            e = json.loads(line)
            ts = datetime.fromisoformat(e["ts"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if ts >= since and e.get("result") == "ok" and not e.get("dry_run"):
            out[e.get("action", "")] = ts
    return out


class DrillObserver:
    """Watches an engine's snapshots and records detection and recovery of injected drills."""

    def __init__(self, run_dir: str | Path, *, config: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.run_dir = Path(run_dir)
        self.audit_path = getattr(config, "audit_path", None) if config is not None else None
        self.clock = clock
        self._mtime = 0.0
        self._records: dict[str, dict] = {}

    def _load(self) -> dict[str, dict]:
        try:
            m = records_path(self.run_dir).stat().st_mtime
        except OSError:
            return {}
        if m != self._mtime:
            self._mtime = m
            self._records = read_records(self.run_dir)
        return self._records

    def evaluate(self, snap: Snapshot, records: dict[str, dict] | None = None) -> dict[str, dict]:
        """The updates the snapshot implies: name -> fields to set."""
        updates: dict[str, dict] = {}
        if not snap.sources or any(st.state is SourceState.PENDING for st in snap.sources.values()):
            return updates  # a fresh engine has not read everything yet: no conclusion
        now = self.clock()
        for name, rec in (records if records is not None else self._load()).items():
            drill = DRILLS.get(name)
            if drill is None or rec.get("undone_at") or rec.get("recovered_at"):
                continue
            if not rec.get("detected_at"):
                found = drill.detect(snap)
                if found:
                    worst = min(found, key=Finding.sort_key)
                    updates[name] = {"detected_at": now, "finding": f"{worst.severity.name} {worst.summary}",
                                     "finding_key": worst.key, "finding_playbook": worst.playbook}
                continue
            facts = dict(rec)
            facts["audit"] = _audit_facts(self.audit_path, rec["injected_at"])
            if not drill.recovered(snap, facts):
                if rec.get("clear_polls"):
                    updates[name] = {"clear_polls": 0}  # it came back: count again
                continue
            clear = int(rec.get("clear_polls") or 0) + 1
            if clear < CLEAR_POLLS or not self._fault_gone(drill, facts):
                updates[name] = {"clear_polls": clear}
                continue
            updates[name] = {"recovered_at": now, "clear_polls": clear}
        return updates

    def _fault_gone(self, drill: Drill, record: dict) -> bool:
        """The fault's own condition, on the sandbox (a drill without a check: True)."""
        if drill.fault_gone is None:
            return True
        try:
            return bool(drill.fault_gone(Ctx.of(self.run_dir), record))
        except Exception:  # the sandbox could not be asked: not recovered yet
            return False

    def on_snapshot(self, snap: Snapshot) -> dict[str, dict]:
        updates = self.evaluate(snap)
        if updates:
            with _locked_records(self.run_dir) as box:
                for name, fields in updates.items():
                    rec = box[0].get(name)
                    if rec is None:
                        continue
                    for k, v in fields.items():
                        if k == "clear_polls":
                            rec[k] = v  # a counter: the newest count
                        else:
                            rec.setdefault(k, v)
            self._mtime = 0.0
        return updates


# --------------------------------------------------------------------------- the fix, through the engine


async def run_action(engine: Any, action_id: str, params: dict | None = None, *, reason: str = "",
                     patience: float = 10.0) -> Any:
    """Plan and execute one action through the engine's ActionEngine (confirmed, audited).

    A plan whose guard is red (e.g. the long queries are not old enough yet) is planned
    again for up to `patience` seconds, the way an operator would look again."""
    deadline = time.monotonic() + patience
    while True:
        plan = await engine.actions.plan(action_id, reason=reason or None, **dict(params or {}))
        if plan.guard.ok or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.5)
    confirmation = plan.expected_confirmation or True
    return plan, await engine.actions.execute(plan, confirmation=confirmation)


async def apply_fix(engine: Any, run_dir: str | Path, name: str) -> list[str]:
    """The drill's playbook fix: the external part first (if any), then the engine's actions."""
    from backends.errors import ActionRefused

    drill = get(name)
    ctx = Ctx.of(run_dir)
    out = []
    if drill.external_fix is not None:
        out.append(drill.external_fix(ctx))
    for action_id, params in drill.fix_steps:
        try:
            plan, result = await run_action(engine, action_id, params, reason=f"drill {name}: {drill.fix}")
        except ActionRefused as exc:
            if action_id == "orders.reconcile":  # nothing left to reconcile: the listener caught up
                out.append(f"{action_id}: {exc.reason}")
                continue
            raise
        out.append(f"{action_id}: {result.status} - {result.summary}")
        if not result.ok and action_id != "orders.reconcile":
            raise SandboxError(f"{action_id} {result.status}: {result.summary}")
    return out


async def watch(engine: Any, observer: DrillObserver, until: Callable[[], bool], limit: float,
                interval: float = 0.5) -> bool:
    """Let the engine's monitor run (started by the caller) until `until()` or the timeout."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if until():
            return True
        await asyncio.sleep(interval)
    return until()


def describe(rec: dict, now: float | None = None) -> list[str]:
    """Lines about one drill record for `warroom drill --status`."""
    now = now or time.time()
    t0 = rec["injected_at"]
    at = datetime.fromtimestamp(t0).strftime("%H:%M:%S")
    lines = [f"{rec['name']}: injected at {at} ({now - t0:.0f}s ago): {rec.get('detail', '')}"]
    if rec.get("detected_at"):
        lines.append(f"  detected after {rec['detected_at'] - t0:.1f}s: {rec.get('finding', '')}")
    else:
        lines.append("  not detected yet")
    if rec.get("recovered_at"):
        lines.append(f"  RECOVERED after {rec['recovered_at'] - t0:.1f}s")
    elif rec.get("undone_at"):
        lines.append(f"  undone after {rec['undone_at'] - t0:.1f}s (fault removed by `--undo`)")
    else:
        lines.append("  NOT recovered")
    return lines


def pending(records: dict[str, dict]) -> Iterable[str]:
    return [n for n, r in records.items() if not r.get("recovered_at") and not r.get("undone_at")]


__all__ = ["DRILLS", "Ctx", "Drill", "DrillObserver", "apply_fix", "describe", "get", "inject", "pid_alive",
           "read_records", "run_action", "undo", "watch"]
