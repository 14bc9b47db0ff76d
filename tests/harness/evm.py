"""anvil nodes on 127.0.0.1 and the Escrow contract deployed on them."""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import REPO, free_port, stop_process, wait_until

# anvil's default mnemonic ("test test ... junk"), accounts 0..4.
DEV_KEYS = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
]
DEV_ACCOUNTS = [
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
]

ARTIFACT = REPO / "sandbox" / "contracts" / "Escrow.json"


def order_id_to_bytes32(order_id: str) -> bytes:
    """bytes32-utf8: the order id's UTF-8 bytes, right-padded with zeros."""
    raw = order_id.encode("utf-8")
    if len(raw) > 32:
        raise ValueError(f"order id {order_id!r} is longer than 32 bytes")
    return raw.ljust(32, b"\0")


def find_anvil() -> str | None:
    for cand in (REPO / ".tools" / "node_modules" / ".bin" / "anvil",):
        if cand.exists():
            return str(cand)
    return shutil.which("anvil")


def rpc(url: str, method: str, params: list | None = None, timeout: float = 5.0):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                       "params": params or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - 127.0.0.1 only
        data = json.loads(resp.read())
    if "error" in data:
        raise RuntimeError(f"{method}: {data['error']}")
    return data["result"]


@dataclass
class AnvilNode:
    port: int
    chain_id: int
    process: subprocess.Popen
    startup_seconds: float = 0.0
    accounts: list[str] = field(default_factory=lambda: list(DEV_ACCOUNTS))
    keys: list[str] = field(default_factory=lambda: list(DEV_KEYS))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rpc(self, method: str, params: list | None = None, timeout: float = 5.0):
        return rpc(self.url, method, params, timeout)

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", [hex(blocks)])

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        stop_process(self.process, timeout=10)


def start_anvil(port: int | None = None, block_time: float | None = None,
                chain_id: int = 31337, extra_args: list[str] | None = None,
                timeout: float = 30.0) -> AnvilNode:
    """Start an anvil node on 127.0.0.1 (a free port unless given); the caller stops it."""
    exe = find_anvil()
    if exe is None:
        raise FileNotFoundError("anvil not found (run `make tools`: npm ci --prefix .tools)")
    port = port or free_port()
    cmd = [exe, "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(chain_id),
           "--silent", "--accounts", "5"]
    if block_time is not None:
        cmd += ["--block-time", str(block_time)]
    cmd += list(extra_args or [])
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    node = AnvilNode(port=port, chain_id=chain_id, process=proc)
    atexit.register(node.stop)  # safety net for nodes a test forgets to stop

    def up():
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"anvil exited ({proc.returncode}): {err.strip()[:500]}")
        return node.rpc("eth_blockNumber", timeout=1) is not None

    try:
        wait_until(up, timeout, f"anvil on port {port}")
    except BaseException:
        node.stop()
        raise
    node.startup_seconds = time.monotonic() - t0
    return node


def load_artifact(path: Path = ARTIFACT) -> dict:
    return json.loads(Path(path).read_text())


class EscrowDeployment:
    """The Escrow contract deployed on an anvil node, owned by `owner_key`."""

    def __init__(self, node: AnvilNode, owner_key: str | None = None,
                 artifact: dict | None = None) -> None:
        from web3 import Web3

        self.node = node
        self.owner_key = owner_key or node.keys[0]
        art = artifact or load_artifact()
        self.abi: list = art["abi"]
        self.bytecode: str = art["bytecode"]
        self.w3 = Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 10}))
        self.owner = self.w3.eth.account.from_key(self.owner_key).address
        factory = self.w3.eth.contract(abi=self.abi, bytecode=self.bytecode)
        receipt = self._send(factory.constructor())
        self.address: str = receipt["contractAddress"]
        self.deploy_block: int = receipt["blockNumber"]
        self.contract = self.w3.eth.contract(address=self.address, abi=self.abi)

    def _send(self, fn, key: str | None = None, value: int = 0):
        key = key or self.owner_key
        acct = self.w3.eth.account.from_key(key)
        tx = fn.build_transaction({
            "from": acct.address,
            "nonce": self.w3.eth.get_transaction_count(acct.address, "pending"),
            "chainId": self.node.chain_id,
            "value": value,
        })
        signed = acct.sign_transaction(tx)
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.05)
        if receipt["status"] != 1:
            raise RuntimeError(f"transaction {tx_hash.to_0x_hex()} reverted")
        return receipt

    def release(self, order_id: str, amount: int, key: str | None = None) -> str:
        """release(bytes32(order_id), amount); returns the tx hash (0x hex)."""
        fn = self.contract.functions.release(order_id_to_bytes32(order_id), int(amount))
        return self._send(fn, key)["transactionHash"].to_0x_hex()

    def deposit(self, order_id: str, value: int, key: str | None = None) -> str:
        fn = self.contract.functions.deposit(order_id_to_bytes32(order_id))
        return self._send(fn, key, value=value)["transactionHash"].to_0x_hex()

    def pause(self) -> str:
        return self._send(self.contract.functions.pause())["transactionHash"].to_0x_hex()

    def unpause(self) -> str:
        return self._send(self.contract.functions.unpause())["transactionHash"].to_0x_hex()

    def paused(self) -> bool:
        return bool(self.contract.functions.paused().call())

    def ensure_unpaused(self) -> None:
        if self.paused():
            self.unpause()

    def released_logs(self, from_block: int | None = None) -> list:
        """Decoded EscrowReleased logs since deployment (or `from_block`)."""
        start = self.deploy_block if from_block is None else from_block
        return self.contract.events.EscrowReleased().get_logs(from_block=start)
