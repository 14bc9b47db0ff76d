"""`python -m sandbox.ctl --run-dir DIR COMMAND`: the sandbox's own operations.

The generated config points warroom's command actions here, the way a real team's
config points them at pm2, systemctl, kubectl or a script:

    restart SERVICE       stop (SIGTERM, SIGKILL after 3 s) and start a sandbox service
    start SERVICE / stop SERVICE
    scale-workers COUNT   run COUNT action-worker processes
    refill                move ETH from the funding account to the arbiter (the gas bank)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sandbox.stack import (
    SandboxError,
    load_settings,
    restart_service,
    rpc,
    service_pids,
    start_service,
    stop_service,
    wait_until,
)

REFILL_WEI = 1000 * 10**18


def scale_workers(run_dir: Path, count: int) -> list[str]:
    if not 1 <= count <= 16:
        raise SandboxError("count must be between 1 and 16")
    wanted = ["action-workers"] + [f"action-workers-{i}" for i in range(2, count + 1)]
    running = service_pids(run_dir)
    for name in wanted:
        if name not in running:
            start_service(run_dir, name)
    for name in running:
        if name.startswith("action-workers") and name not in wanted:
            stop_service(run_dir, name)
    return wanted


def refill(run_dir: Path, amount: int = REFILL_WEI) -> str:
    s = load_settings(run_dir)
    node = s["node_url"]
    funder_balance = int(rpc(node, "eth_getBalance", [s["funder"], "latest"]), 16)
    if funder_balance < amount:
        raise SandboxError(f"the funding account holds only {funder_balance / 1e18:.2f} ETH")
    h = rpc(node, "eth_sendTransaction", [{"from": s["funder"], "to": s["arbiter"], "value": hex(amount),
                                           "gas": hex(21_000)}])
    wait_until(lambda: rpc(node, "eth_getTransactionReceipt", [h]), 20, "refill receipt")
    bal = int(rpc(node, "eth_getBalance", [s["arbiter"], "latest"]), 16)
    return f"refilled arbiter {s['arbiter']} with {amount / 1e18:g} ETH in {h}: balance {bal / 1e18:.2f} ETH"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.ctl", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, type=Path)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("restart", "start", "stop"):
        sub.add_parser(name).add_argument("service")
    sub.add_parser("scale-workers").add_argument("count", type=int)
    sub.add_parser("refill")
    sub.add_parser("heal-webhook")
    args = parser.parse_args(argv)
    run_dir: Path = args.run_dir
    try:
        if not (run_dir / "stack.json").exists():
            raise SandboxError(f"{run_dir} is not a running sandbox")
        if args.cmd == "restart":
            pid = restart_service(run_dir, args.service)
            print(f"{args.service} restarted: pid {pid}")
        elif args.cmd == "start":
            print(f"{args.service} running: pid {start_service(run_dir, args.service)}")
        elif args.cmd == "stop":
            pid = stop_service(run_dir, args.service)
            print(f"{args.service} stopped (pid {pid})" if pid else f"{args.service} was not running")
        elif args.cmd == "scale-workers":
            names = scale_workers(run_dir, args.count)
            print(f"action workers: {len(names)} process(es) running")
        elif args.cmd == "refill":
            print(refill(run_dir))
        elif args.cmd == "heal-webhook":  # the external service's own fix (its operator's restart)
            flag = run_dir / "flags" / "webhook-down"
            existed = flag.exists()
            flag.unlink(missing_ok=True)
            print("webhook answers 200 again" if existed else "webhook was healthy")
    except SandboxError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
