"""A py-evm chain (eth-tester) served as JSON-RPC on 127.0.0.1: the sandbox's chain when
anvil is not installed.

Serves the methods the sandbox services, warroom's chain/orders adapters and the pause
action use (single and batch requests). Transactions are mined at once; an empty block
is mined every second so the head moves like a real chain's. The given dev keys are
imported (unlocked for eth_sendTransaction) and funded with 10,000 ETH each.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_CAMEL = re.compile(r"_([a-z])")


def _camel(key: str) -> str:
    return _CAMEL.sub(lambda m: m.group(1).upper(), key)


def wire(value: Any) -> Any:
    """eth-tester's Python values -> JSON-RPC wire values (hex quantities, camelCase keys)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {_camel(k): wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [wire(v) for v in value]
    return value


def _int(v: Any, default: int | None = None) -> int | None:
    if v is None:
        return default
    if isinstance(v, int):
        return v
    return int(v, 16) if str(v).startswith("0x") else int(v)


def _block_id(v: Any) -> Any:
    if v in (None, "latest", "pending", "safe", "finalized"):
        return "latest"
    if v == "earliest":
        return "earliest"
    return _int(v)


def _topics_match(topics: list, wanted: list) -> bool:
    for i, want in enumerate(wanted):
        if want is None:
            continue
        options = [w.lower() for w in (want if isinstance(want, list) else [want])]
        if i >= len(topics) or str(topics[i]).lower() not in options:
            return False
    return True


class Chain:
    def __init__(self, keys: list[str]) -> None:
        from eth_tester import EthereumTester, PyEVMBackend

        self.t = EthereumTester(PyEVMBackend())
        self.lock = threading.RLock()
        self.chain_id = int(self.t.backend.chain.chain_id)
        rich = self.t.get_accounts()[0]
        self.accounts = []
        for k in keys:
            addr = self.t.add_account(k)
            self.accounts.append(addr)
            self.t.send_transaction({"from": rich, "to": addr, "value": 10_000 * 10**18, "gas": 21_000})

    def mine_forever(self) -> None:
        while True:
            time.sleep(1.0)
            with self.lock:
                self.t.mine_blocks(1)

    def _tx(self, tx: dict) -> dict:
        out: dict[str, Any] = {}
        for k in ("from", "to", "data"):
            if tx.get(k):
                out[k] = tx[k]
        if "input" in tx and "data" not in out:
            out["data"] = tx["input"]
        for k, name in (("gas", "gas"), ("value", "value"), ("gasPrice", "gas_price"), ("nonce", "nonce"),
                        ("maxFeePerGas", "max_fee_per_gas"), ("maxPriorityFeePerGas", "max_priority_fee_per_gas")):
            if tx.get(k) is not None:
                out[name] = _int(tx[k])
        if "gas" not in out:
            out["gas"] = 3_000_000
        if "from" not in out:
            out["from"] = self.accounts[0]
        return out

    def call(self, method: str, params: list) -> Any:  # noqa: C901 - one branch per method
        t = self.t
        with self.lock:
            if method == "eth_chainId":
                return hex(self.chain_id)
            if method == "net_version":
                return str(self.chain_id)
            if method == "web3_clientVersion":
                return "warroom-sandbox/py-evm"
            if method == "eth_blockNumber":
                return hex(t.get_block_by_number("latest")["number"])
            if method == "eth_accounts":
                return self.accounts
            if method == "eth_getBlockByNumber":
                block = t.get_block_by_number(_block_id(params[0]), full_transactions=bool(params[1]))
                return wire(block)
            if method == "eth_getBlockByHash":
                return wire(t.get_block_by_hash(params[0], full_transactions=bool(params[1])))
            if method == "eth_getBalance":
                return hex(t.get_balance(params[0], _block_id(params[1] if len(params) > 1 else None)))
            if method == "eth_getCode":
                return t.get_code(params[0], _block_id(params[1] if len(params) > 1 else None))
            if method == "eth_getTransactionCount":
                return hex(t.get_nonce(params[0], _block_id(params[1] if len(params) > 1 else None)))
            if method == "eth_gasPrice":
                return hex(t.get_block_by_number("latest").get("base_fee_per_gas") or 10**9)
            if method == "eth_maxPriorityFeePerGas":
                return hex(10**9)
            if method == "eth_feeHistory":
                latest = t.get_block_by_number("latest")
                return {"oldestBlock": hex(latest["number"]), "baseFeePerGas": [hex(latest.get("base_fee_per_gas") or 10**9)] * 2,
                        "gasUsedRatio": [0.0], "reward": [[hex(10**9)]]}
            if method == "eth_estimateGas":
                return hex(t.estimate_gas(self._tx(params[0])))
            if method == "eth_call":
                return t.call(self._tx(params[0]), _block_id(params[1] if len(params) > 1 else None))
            if method == "eth_sendTransaction":
                return t.send_transaction(self._tx(params[0]))
            if method == "eth_sendRawTransaction":
                return t.send_raw_transaction(params[0])
            if method == "eth_getTransactionReceipt":
                try:
                    return wire(t.get_transaction_receipt(params[0]))
                except Exception:  # noqa: BLE001 - not found / pending
                    return None
            if method == "eth_getTransactionByHash":
                try:
                    return wire(t.get_transaction_by_hash(params[0]))
                except Exception:  # noqa: BLE001
                    return None
            if method == "eth_getLogs":
                f = params[0] if params else {}
                latest = t.get_block_by_number("latest")["number"]
                frm = _block_id(f.get("fromBlock"))
                to = _block_id(f.get("toBlock"))
                frm = latest if frm == "latest" else (0 if frm == "earliest" else frm)
                to = latest if to == "latest" else (0 if to == "earliest" else to)
                fid = t.create_log_filter(from_block=frm, to_block=to, address=f.get("address"))
                try:
                    logs = wire(list(t.get_logs(fid)))
                finally:
                    t.delete_filter(fid)
                return [lg for lg in logs if _topics_match(lg.get("topics") or [], f.get("topics") or [])]
            if method == "evm_mine":
                t.mine_blocks(1)
                return "0x0"
        raise LookupError(method)


def serve(chain: Chain, port: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                req = json.loads(body)
            except ValueError:
                self._send({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
                return
            if isinstance(req, list):
                self._send([self._one(r) for r in req])
            else:
                self._send(self._one(req))

        def _one(self, req: dict) -> dict:
            rid = req.get("id")
            try:
                result = chain.call(req.get("method", ""), list(req.get("params") or []))
                return {"jsonrpc": "2.0", "id": rid, "result": result}
            except LookupError:
                return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "method not found"}}
            except Exception as exc:  # noqa: BLE001 - a revert or a bad request
                return {"jsonrpc": "2.0", "id": rid, "error": {"code": 3 if "revert" in str(exc).lower() else -32000,
                                                                "message": str(exc)[:300]}}

        def _send(self, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(prog="devchain")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--keys", required=True, help="comma-separated dev private keys to import and fund")
    p.add_argument("--run-dir", default="", help="(only marks the process as the sandbox's)")
    args = p.parse_args()
    chain = Chain([k for k in args.keys.split(",") if k])
    threading.Thread(target=chain.mine_forever, daemon=True).start()
    print(f"py-evm chain {chain.chain_id} on 127.0.0.1:{args.port}", flush=True)
    serve(chain, args.port)


if __name__ == "__main__":
    main()
