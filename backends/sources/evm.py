"""EVM chains: RPC endpoint health and failover, contracts, watched balances, pause/unpause.

Health polling speaks raw JSON-RPC (see `backends/sources/jsonrpc.py`, shared with non-EVM
chains); web3's stack is never imported for it. `eth_account` (slow to import) is
loaded in a worker thread only when a transaction is signed.

- `EvmChain` is a monitor `Source` producing one `ChainReading` per poll: every
  endpoint (head, head age, lag, chain id vs expected, latency, error rate, block hash
  at a common height), each contract (code present, ABI fingerprint, `paused()` where
  the ABI has it) and each watched balance against its minimum: the native coin
  (`eth_getBalance`) or an ERC-20 (`balanceOf` by `eth_call`, with the token's `decimals()` and
  `symbol()` read once unless configured). It is also the client
  the orders module uses for `eth_getLogs` (`get_logs_chunked`).
- `ContractPauseAction` is `chain.pause` / `chain.unpause`: build the transaction,
  simulate it with `eth_call` (the dry-run shown in the plan), sign with a key from the
  environment or an encrypted keystore (password asked at execution, never stored),
  send, wait for the receipt, verify that `paused()` changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.actions.base import (
    Action,
    ActionPlan,
    ActionResult,
    Change,
    Danger,
    Guard,
    Progress,
    ProgressFn,
)
from backends.engine.rules import rule
from backends.errors import ActionRefused, BackendError, describe_exception
from backends.model import BalanceReading, ChainReading, ContractReading, Finding, Severity, Status
from backends.sources.jsonrpc import (
    DEFAULT_MAX_ANSWER,
    UINT256_MAX,
    BalanceSpec,
    ChainFailoverAction,
    ChainPinAction,
    ChainSpec,
    ContractSpec,
    EndpointSet,
    HttpRpc,
    InvalidAnswer,
    Probe,
    RpcError,
    audit_switches,
    parse_int,
    parse_uint,
)
from backends.sources.signers import signer_rules  # noqa: F401  (registers the signers' rules)

if TYPE_CHECKING:
    from eth_account import Account

LOGS_MAX_ANSWER = 32 * 1024 * 1024  # the size cap of one eth_getLogs answer (parsed in a thread)

# 4-byte selectors of the OpenZeppelin Pausable interface (keccak of the signature).
SELECTORS = {"paused()": "0x5c975abb", "pause()": "0x8456cb59", "unpause()": "0x3f4ba83a"}
# ... and of the ERC-20 reads used for token balances.
ERC20_SELECTORS = {"balanceOf(address)": "0x70a08231", "decimals()": "0x313ce567", "symbol()": "0x95d89b41"}


# --------------------------------------------------------------------------- ABI helpers

AbiItem = dict[str, Any]  # one entry of a contract ABI (function, event, error), as JSON decodes it


def load_abi(path: str | os.PathLike[str]) -> tuple[AbiItem, ...]:
    """An ABI from a JSON file: a plain ABI list or a Hardhat/Foundry artifact with "abi"."""
    data = json.loads(Path(path).expanduser().read_text())
    if isinstance(data, dict) and "abi" in data:
        data = data["abi"]
    if not isinstance(data, list):
        raise ValueError(f"{path}: no ABI list found")
    return tuple(data)


def canonical_abi(abi: Sequence[AbiItem]) -> str:
    def key(item: AbiItem) -> tuple[str, str, str]:
        return (
            str(item.get("type", "")),
            str(item.get("name", "")),
            ",".join(str(i.get("type", "")) for i in item.get("inputs", []) or []),
        )

    return json.dumps(sorted(abi, key=key), sort_keys=True, separators=(",", ":"))


def abi_fingerprint(abi: Sequence[AbiItem]) -> str:
    """sha256 of the canonical ABI (entries sorted, keys sorted, no whitespace)."""
    if not abi:
        return ""
    return hashlib.sha256(canonical_abi(abi).encode()).hexdigest()


def _sig_type(inp: AbiItem) -> str:
    t: str = inp.get("type", "")
    if t.startswith("tuple"):
        inner = ",".join(_sig_type(c) for c in inp.get("components", []))
        return f"({inner}){t[5:]}"
    return t


def signature(item: AbiItem) -> str:
    return f"{item.get('name', '')}({','.join(_sig_type(i) for i in item.get('inputs', []) or [])})"


def keccak(data: bytes) -> bytes:
    from eth_hash.auto import keccak as _k

    return _k(data)


_HEX_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


def checksum_address(address: Any, key: str = "address") -> str:
    """The EIP-55 checksum form of a configured 0x address (what `eth_utils.to_checksum_address`
    returns; eth_account refuses to sign a transaction to a lowercase `to`). Raises ValueError
    naming `key` when it is not 0x + 40 hex digits, or when it is mixed case and the checksum
    does not match (a typo). Uses the module's keccak: importing eth_utils costs ~0.15 s of
    start-up and the result is the same (tests compare both)."""
    text = address if isinstance(address, str) else ""
    if not _HEX_ADDRESS.fullmatch(text):
        raise ValueError(f"{key}: {text[:60]!r} is not an address (0x and 40 hex digits)")
    body = text[2:]
    digest = keccak(body.lower().encode("ascii")).hex()
    out = "0x" + "".join(c.upper() if int(digest[i], 16) >= 8 else c.lower() for i, c in enumerate(body.lower()))
    if body != body.lower() and body != body.upper() and text != out:
        raise ValueError(f"{key}: {text} fails its EIP-55 checksum (a typo?); the checksummed form of "
                         f"these digits is {out}, all lowercase is accepted too")
    return out


def checksum_spec(spec: ChainSpec) -> ChainSpec:
    """`spec` with every contract and balance address in checksum form (EVM chains only)."""
    if spec.kind != "evm":
        return spec
    from dataclasses import replace

    contracts = tuple(
        replace(c, address=checksum_address(c.address, f"chain.{spec.name}.contracts[{i}].address ({c.name})"))
        for i, c in enumerate(spec.contracts)
    )
    balances = tuple(
        replace(b, address=checksum_address(b.address, f"chain.{spec.name}.balances[{i}].address ({b.name})"),
                token=(checksum_address(b.token, f"chain.{spec.name}.balances[{i}].token ({b.name})")
                       if b.token else None))
        for i, b in enumerate(spec.balances)
    )
    if contracts == spec.contracts and balances == spec.balances:
        return spec
    return replace(spec, contracts=contracts, balances=balances)


def has_function(abi: Sequence[AbiItem], name: str, n_inputs: int = 0) -> bool:
    return any(
        i.get("type") == "function" and i.get("name") == name and len(i.get("inputs", []) or []) == n_inputs
        for i in abi
    )


def find_event(abi: Sequence[AbiItem], name: str) -> AbiItem:
    for i in abi:
        if i.get("type") == "event" and i.get("name") == name:
            return i
    raise KeyError(f"event {name!r} not in ABI")


def event_topic(event: AbiItem | str) -> str:
    sig = event if isinstance(event, str) else signature(event)
    return "0x" + keccak(sig.encode()).hex()


# --------------------------------------------------------------------------- AccessControl roles

# OpenZeppelin AccessControl role ids are bytes32 = keccak256("NAME") (DEFAULT_ADMIN_ROLE = 0x00..00);
# shown by name wherever a role appears (a revert's argument, a check's value), never as the
# 77-digit number the word is as a uint. Names from config ([[chain.X.contracts]] roles) are added.
KNOWN_ROLES = (
    "DEFAULT_ADMIN_ROLE", "PAUSER_ROLE", "MINTER_ROLE", "UPGRADER_ROLE", "BURNER_ROLE", "ADMIN_ROLE",
    "OPERATOR_ROLE", "SNAPSHOT_ROLE", "ARBITER_ROLE", "RELAYER_ROLE", "EXECUTOR_ROLE", "PROPOSER_ROLE",
    "CANCELLER_ROLE", "GUARDIAN_ROLE", "KEEPER_ROLE", "ORACLE_ROLE", "MANAGER_ROLE", "TIMELOCK_ADMIN_ROLE",
    "URI_SETTER_ROLE", "WITHDRAWER_ROLE", "SIGNER_ROLE", "BRIDGE_ROLE", "FEE_MANAGER_ROLE",
)
_ROLE_NAMES: dict[str, str] = {}  # "0x" + 64 lowercase hex -> name


def role_id(name: str) -> str:
    """The bytes32 id of an AccessControl role name (0x + 64 hex)."""
    if name == "DEFAULT_ADMIN_ROLE":
        return "0x" + "00" * 32
    return "0x" + keccak(name.encode()).hex()


def register_role_names(names: Sequence[str]) -> None:
    """Add role names (from config) to those recognised by `role_name`."""
    for n in names:
        if n:
            _ROLE_NAMES[role_id(n)] = n


def role_name(word: Any) -> str | None:
    """The name of a role id (0x + 64 hex, or its int), None when it is no known role."""
    if not _ROLE_NAMES:
        register_role_names(KNOWN_ROLES)
    if isinstance(word, int) and not isinstance(word, bool):
        if not 0 <= word < 2**256:
            return None
        word = "0x" + word.to_bytes(32, "big").hex()
    if not isinstance(word, str):
        return None
    h = word.lower()
    h = h if h.startswith("0x") else "0x" + h
    return _ROLE_NAMES.get(h) if len(h) == 66 else None


def format_role(word: str) -> str:
    """A bytes32 role id as a person reads it: its name, else the 0x hex (never a number)."""
    h = word.lower() if word.startswith(("0x", "0X")) else "0x" + word.lower()
    return role_name(h) or h


_HEX32 = re.compile(r"\b0x[0-9a-fA-F]{64}\b")


def name_roles(text: str) -> str:
    """`text` with every 0x + 64 hex word that is a known role id replaced by the role's name
    (OpenZeppelin v4's "AccessControl: account 0x... is missing role 0x...")."""
    return _HEX32.sub(lambda m: role_name(m.group(0)) or m.group(0), text) if text else text


# Errors of OpenZeppelin v5 that a contract's ABI may leave out (a trimmed ABI file).
OZ_ERRORS: tuple[AbiItem, ...] = (
    {"type": "error", "name": "AccessControlUnauthorizedAccount",
     "inputs": [{"name": "account", "type": "address"}, {"name": "neededRole", "type": "bytes32"}]},
    {"type": "error", "name": "AccessControlBadConfirmation", "inputs": []},
    {"type": "error", "name": "OwnableUnauthorizedAccount", "inputs": [{"name": "account", "type": "address"}]},
    {"type": "error", "name": "EnforcedPause", "inputs": []},
    {"type": "error", "name": "ExpectedPause", "inputs": []},
)


def _format_word(typ: str, w: str) -> str:
    if typ == "address":
        return "0x" + w[24:]
    if typ == "bytes32":
        return format_role(w)
    if typ == "bool":
        return "true" if int(w, 16) else "false"
    if re.fullmatch(r"u?int\d*", typ):
        n = int(w, 16)
        if typ.startswith("int") and n >= 2**255:
            n -= 2**256
        return str(n)
    return "0x" + w


def decode_revert(abi: Sequence[AbiItem], exc: RpcError) -> str:
    """The revert reason, with a custom error's selector named from the ABI (or OpenZeppelin v5's
    standard errors) when possible; bytes32 role ids are shown by name."""
    data = exc.data if isinstance(exc.data, str) else ""
    if not data:
        m = re.search(r"0x[0-9a-fA-F]{8}\b", exc.message or "")
        data = m.group(0) if m else ""
    if data.startswith("0x") and len(data) >= 10:
        sel = data[:10].lower()
        for item in (*abi, *OZ_ERRORS):
            if item.get("type") == "error" and "0x" + keccak(signature(item).encode())[:4].hex() == sel:
                args = data[10:]
                words = [args[i : i + 64] for i in range(0, len(args), 64) if args[i : i + 64]]
                shown = ", ".join(
                    _format_word(str(inp.get("type", "")), w)
                    for inp, w in zip(item.get("inputs", []), words, strict=False)
                )
                return f"{signature(item).split('(')[0]}({shown})"
    return name_roles(exc.message)


def format_amount(value: int | None, decimals: int | None = 18, symbol: str | None = "ETH") -> str:
    if value is None:
        return "?"
    if not 0 <= value <= UINT256_MAX:  # never turn a huge number into text (it froze the loop)
        return "? (invalid amount)"
    if decimals is not None and not 0 <= decimals <= 77:
        decimals = None
    if decimals is None:  # a token whose decimals() could not be read: the raw amount
        return f"{value} (smallest unit) {symbol or ''}".rstrip()
    d = Decimal(value) / (Decimal(10) ** decimals)
    text = f"{d:.6f}".rstrip("0").rstrip(".") if d else "0"
    return f"{text} {symbol or ''}".rstrip()


def _words(raw: Any) -> bytes | None:
    """The bytes of an eth_call result ("0x..."); None when it is empty or not hex."""
    if not isinstance(raw, str) or not raw.startswith("0x") or len(raw) <= 2:
        return None
    try:
        return bytes.fromhex(raw[2:])
    except ValueError:
        return None


def decode_uint(raw: Any) -> int | None:
    """A uint256 returned by eth_call, or None (empty: no contract, or not that function)."""
    data = _words(raw)
    if data is None or len(data) < 32:
        return None
    return int.from_bytes(data[:32], "big")


_SYMBOL_CHARS = re.compile(r"[^A-Za-z0-9.$_-]")


def decode_symbol(raw: Any) -> str | None:
    """An ERC-20 `symbol()`: an ABI string, or a bytes32 (older tokens such as MKR). Only letters,
    digits and `.$_-` are kept (it is shown on screen), at most 16 of them."""
    data = _words(raw)
    if data is None:
        return None
    text = b""
    if len(data) >= 64:
        offset = int.from_bytes(data[:32], "big")
        if offset + 32 <= len(data):
            length = int.from_bytes(data[offset:offset + 32], "big")
            if offset + 32 + length <= len(data):
                text = data[offset + 32:offset + 32 + length]
    if not text and len(data) == 32:
        text = data.rstrip(b"\0")
    symbol = _SYMBOL_CHARS.sub("", text.decode("utf-8", "replace"))[:16]
    return symbol or None


def _balance_of_data(owner: str) -> str:
    return ERC20_SELECTORS["balanceOf(address)"] + owner[2:].lower().rjust(64, "0")


def _hex(n: int) -> str:
    return hex(n)


# --------------------------------------------------------------------------- the chain


class EvmChain:
    """An EVM chain as a monitor source and as the RPC client of other modules."""

    kind = "evm"

    def __init__(self, spec: ChainSpec, *, audit: Any = None, signers: Sequence[Any] = (),
                 finality: str = "depth") -> None:
        spec = checksum_spec(spec)  # web3 / eth_account want checksummed addresses
        self.spec = spec
        self.name = spec.source_name
        self.interval = spec.interval
        self.timeout = spec.timeout * 3 + 1  # endpoints in parallel, then hashes, then contracts
        self.endpoints = EndpointSet(
            spec.name,
            spec.endpoints,
            expected_chain_id=spec.chain_id,
            failover=spec.failover,
            failover_after=spec.failover_after,
            max_lag=spec.max_lag,
            max_head_age=spec.max_head_age,
            timeout=spec.timeout,
            on_switch=audit_switches(audit),
            max_answer=spec.max_answer,
        )
        self.contracts = {c.name: c for c in spec.contracts}
        # eRPC-like endpoint scores; an automatic switch only when the active one is clearly worse
        from backends.sources.rpcscore import RpcScorer

        self.scorer = RpcScorer(spec.name, [e.name for e in self.endpoints.endpoints])
        self._state_problems: list[str] = []  # invalid answers of the last contract/balance read
        # token address -> (decimals, symbol) read from the token; a value the node refused
        # (a revert: not implemented) is kept as None, a transport failure is asked again
        self._token_meta: dict[str, dict[str, Any]] = {}
        # signers and finality (backends/sources/signers.py)
        from backends.sources.signers import SignerWatch

        self.signer_watch: SignerWatch | None = SignerWatch(spec.name, self.name, signers) if signers else None
        self.finality = finality  # what makes a release final: "depth" (confirmations), "safe" or "finalized"
        self._no_tags: dict[str, float] = {}  # endpoint name -> monotonic time it last refused the tags
        self._tag_replies: dict[str, tuple[Any, Any]] = {}  # endpoint name -> this poll's safe, finalized

    @classmethod
    def from_config(cls, config: Any, name: str, *, audit: Any = None) -> EvmChain:
        from backends.sources.signers import signer_specs_from_config

        c = (_get(config, "chain", None) or {}).get(name)
        return cls(chain_spec_from_config(config, name), audit=audit, signers=signer_specs_from_config(config, name),
                   finality=str(_get(c, "finality", "depth") or "depth"))

    # ------------------------------------------------------------------ probes

    async def _probe(self, rpc: HttpRpc) -> Probe:
        """One batch per endpoint: chain id and latest block, and (unless the node refused
        them in the last 10 minutes) its "safe" and "finalized" blocks for `_with_finality`,
        which then needs no request of its own (one round trip per endpoint and poll)."""
        name = next((e.name for e in self.endpoints.endpoints if e.rpc is rpc), None)
        tags = name is not None and self._tags_due(name, time.monotonic())
        calls: list[tuple[str, list[Any]]] = [("eth_chainId", []), ("eth_getBlockByNumber", ["latest", False])]
        if tags:
            calls += [("eth_getBlockByNumber", ["safe", False]), ("eth_getBlockByNumber", ["finalized", False])]
        replies = await rpc.batch(calls)
        chain_id, block = replies[0], replies[1]
        if name is not None:
            self._tag_replies.pop(name, None)
            if tags and len(replies) >= 4:
                self._tag_replies[name] = (replies[2], replies[3])
        for r in (chain_id, block):
            if isinstance(r, RpcError):
                raise r
        if not isinstance(block, dict):
            raise InvalidAnswer("no latest block (invalid answer)")
        head = parse_uint(block.get("number"), "block number")
        ts = parse_uint(block.get("timestamp"), "block timestamp")
        cid = parse_uint(chain_id, "chain id")
        if head >= 2**63 or ts >= 2**40 or cid >= 2**63:  # heights, unix seconds, EIP-155 ids
            raise InvalidAnswer(f"implausible block {'number' if head >= 2**63 else 'timestamp' if ts >= 2**40 else 'chain id'}"
                                " (invalid answer)")
        h = block.get("hash")
        return Probe(head=head, head_ts=float(ts), chain_id=cid,
                     block_hash=h if isinstance(h, str) and len(h) <= 66 else None)

    @staticmethod
    async def _hash(rpc: HttpRpc, height: int) -> str | None:
        b = await rpc.call("eth_getBlockByNumber", [_hex(height), False])
        return b.get("hash") if isinstance(b, dict) else None

    def answer_problem(self, readings: Sequence[Any] = ()) -> str:
        """The monitor's hook: "" when the last poll gave usable answers, else why not (no
        endpoint answered validly, or a contract / balance read was invalid or failed)."""
        parts = [p for p in (self.endpoints.answer_problem(), *self._state_problems) if p]
        text = "; ".join(parts)
        return text if len(text) <= 300 else text[:299] + "…"

    async def poll(self) -> list[ChainReading]:
        self._state_problems = []
        eps = await self.endpoints.check(self._probe, self._hash)
        self.scorer.observe(self.endpoints.endpoints)  # scores; a switch only when the active one is clearly worse
        if self.scorer.apply(self.endpoints, enabled=self.spec.failover) is not None:
            eps = self.endpoints.readings()
        contracts: tuple[ContractReading, ...] = ()
        balances: tuple[BalanceReading, ...] = ()
        if self.spec.contracts or self.spec.balances:
            contracts, balances = await self._read_state()
        eps = await self._with_finality(eps)
        signers: tuple[Any, ...] = ()
        if self.signer_watch is not None:
            heads = [e.head for e in eps if e.ok and e.head is not None]
            signers = await self.signer_watch.read(self, max(heads) if heads else None)
        return [
            ChainReading(
                source=self.name,
                chain=self.spec.name,
                expected_chain_id=self.spec.chain_id,
                active_url=self.endpoints.active.display,
                endpoints=tuple(eps),
                contracts=contracts,
                balances=balances,
                disagreement=self.endpoints.disagreement,
                signers=signers,
            )
        ]

    def _tags_due(self, endpoint: str, now: float) -> bool:
        """Ask this endpoint for "safe" / "finalized": not within 10 minutes of a refusal."""
        return now - self._no_tags.get(endpoint, -1e9) >= 600

    async def _with_finality(self, eps: Sequence[Any]) -> list[Any]:
        """The endpoint readings with their "safe" / "finalized" heads (asked in the probe's
        batch; else one batch per endpoint that answered its check, in parallel); an endpoint
        whose node has no such tags is asked again after 10 minutes, and shows the configured
        confirmation depth."""
        from dataclasses import replace

        by_name = {e.name: e for e in self.endpoints.endpoints}
        now = time.monotonic()

        async def one(r: Any) -> Any:
            e = by_name.get(r.name)
            if e is None or not r.ok or not self._tags_due(r.name, now):
                return replace(r, confirmations=self.spec.confirmations)
            tagged = self._tag_replies.pop(r.name, None)  # asked with the probe's batch
            if tagged is not None:
                safe, fin = tagged
            else:
                try:
                    safe, fin = await asyncio.wait_for(e.rpc.batch([("eth_getBlockByNumber", ["safe", False]),
                                                                    ("eth_getBlockByNumber", ["finalized", False])]),
                                                       self.spec.timeout)
                except (TimeoutError, BackendError):
                    return replace(r, confirmations=self.spec.confirmations)
            nums = [parse_int(b["number"]) if isinstance(b, dict) and b.get("number") else None for b in (safe, fin)]
            if nums == [None, None]:
                self._no_tags[r.name] = now
            return replace(r, safe=nums[0], finalized=nums[1], confirmations=self.spec.confirmations)

        return list(await asyncio.gather(*(one(r) for r in eps)))

    async def _read_state(self) -> tuple[tuple[ContractReading, ...], tuple[BalanceReading, ...]]:
        calls: list[tuple[str, list[Any]]] = []
        for c in self.spec.contracts:
            calls.append(("eth_getCode", [c.address, "latest"]))
            if has_function(c.abi, "paused"):
                calls.append(("eth_call", [{"to": c.address, "data": SELECTORS["paused()"]}, "latest"]))
        for b in self.spec.balances:
            if b.token:
                calls.append(("eth_call", [{"to": b.token, "data": _balance_of_data(b.address)}, "latest"]))
            else:
                calls.append(("eth_getBalance", [b.address, "latest"]))
        meta_calls = self._token_meta_calls()
        calls += [call for _, _, call in meta_calls]
        error = ""
        active = self.endpoints.active
        try:
            if active.checked and not active.ok:  # it just failed its check: do not wait on it again
                raise BackendError(self.name, f"not read: {active.name} did not answer validly")
            results: list[Any] = await self.endpoints.request_batch(calls, time_limit=self.spec.timeout)
        except BackendError as exc:
            results, error = [exc] * len(calls), exc.reason
            if active.ok:  # else the endpoint's own problem is the reason already
                self._state_problems.append(f"contracts and balances: {exc.reason}")
        it = iter(results)
        contracts = []
        for c in self.spec.contracts:
            code = next(it)
            paused_r = next(it) if has_function(c.abi, "paused") else None
            present = None
            detail = ""
            paused = None
            if isinstance(code, Exception):
                detail = error or describe_exception(code)
            else:
                present = isinstance(code, str) and code not in ("0x", "0x0", "")
                if not present:
                    detail = f"no contract code at {c.address}"
            if paused_r is not None and not isinstance(paused_r, Exception) and present:
                try:
                    paused = bool(parse_uint(paused_r, "paused()")) if paused_r not in ("0x", "") else None
                except ValueError:
                    paused = None
            elif isinstance(paused_r, RpcError):
                detail = detail or f"paused() failed: {paused_r.message}"
            contracts.append(
                ContractReading(
                    source=self.name,
                    chain=self.spec.name,
                    name=c.name,
                    address=c.address,
                    code_present=present,
                    abi_fingerprint=abi_fingerprint(c.abi),
                    paused=paused,
                    detail=detail,
                )
            )
        raws = [next(it) for _ in self.spec.balances]
        for (token, what, _), raw in zip(meta_calls, it, strict=False):
            if isinstance(raw, RpcError):  # the token refused: it does not implement it
                self._token_meta.setdefault(token, {})[what] = None
            elif not isinstance(raw, Exception):
                value = decode_uint(raw) if what == "decimals" else decode_symbol(raw)
                if what == "decimals" and isinstance(value, int) and value > 77:
                    value = None  # not a plausible decimals(): 10**78 > 2**256
                self._token_meta.setdefault(token, {})[what] = value
        balances = []
        for b, raw in zip(self.spec.balances, raws, strict=True):
            balances.append(self._balance_reading(b, raw))
        return tuple(contracts), tuple(balances)

    def _token_meta_calls(self) -> list[tuple[str, str, tuple[str, list[Any]]]]:
        """decimals() / symbol() calls for the tokens whose balances do not configure them and
        whose answer is not known yet: (token, "decimals" | "symbol", call)."""
        out: list[tuple[str, str, tuple[str, list[Any]]]] = []
        seen: set[tuple[str, str]] = set()
        for b in self.spec.balances:
            if not b.token:
                continue
            known = self._token_meta.get(b.token, {})
            for what, missing in (("decimals", b.decimals is None), ("symbol", b.symbol is None)):
                if missing and what not in known and (b.token, what) not in seen:
                    seen.add((b.token, what))
                    data = ERC20_SELECTORS[f"{what}()"]
                    out.append((b.token, what, ("eth_call", [{"to": b.token, "data": data}, "latest"])))
        return out

    def _balance_reading(self, b: BalanceSpec, raw: Any) -> BalanceReading:
        meta = self._token_meta.get(b.token, {}) if b.token else {}
        decimals = b.decimals if b.decimals is not None else meta.get("decimals")
        symbol = b.symbol or meta.get("symbol") or (f"token {b.token[:8]}…" if b.token else "ETH")
        minimum = b.minimum
        if minimum is None and b.minimum_units is not None and decimals is not None:
            minimum = int((b.minimum_units * (Decimal(10) ** decimals)).to_integral_value(ROUND_CEILING))
        value = None
        problem = ""
        if isinstance(raw, Exception):
            problem = raw.message if isinstance(raw, RpcError) else describe_exception(raw)
        elif b.token:
            value = decode_uint(raw)
            if value is None:
                problem = f"balanceOf() returned nothing: no ERC-20 contract at {b.token}?"
        else:
            try:
                value = parse_uint(raw, "balance")
            except InvalidAnswer as exc:  # a number over 2^256, not a number: never a value
                problem = str(exc)
                self._state_problems.append(f"balance {b.name}: {problem}")
        if value is None:
            status = Status.UNKNOWN
        elif minimum is None and b.minimum_units is not None:
            status = Status.UNKNOWN  # the minimum is in whole tokens and decimals() is not known
            problem = "decimals() unknown: set decimals on this balance"
        elif minimum is not None and value < minimum:
            status = Status.CRIT
        elif minimum is not None and value < 2 * minimum:
            status = Status.WARN
        else:
            status = Status.OK
        display = format_amount(value, decimals, symbol)
        if problem:
            display = f"{display} ({problem})" if value is not None else f"? ({problem})"
        return BalanceReading(
            source=self.name,
            chain=self.spec.name,
            name=b.name,
            address=b.address,
            balance=value,
            display=display,
            minimum=minimum,
            decimals=decimals,  # type: ignore[arg-type]  # None: decimals() unknown, amounts shown raw
            symbol=symbol,
            status=status,
        )

    # ------------------------------------------------------------------ client calls

    async def request(self, method: str, params: Sequence[Any] = (), *, fallback: bool = False) -> Any:
        # logs over a block range are big by nature (a busy contract): their own, larger cap
        cap = max(self.spec.max_answer, LOGS_MAX_ANSWER) if method == "eth_getLogs" else None
        return await self.endpoints.request(method, params, time_limit=self.spec.timeout, fallback=fallback,
                                            max_answer=cap)

    async def head(self) -> int:
        return parse_int(await self.request("eth_blockNumber", []))

    async def block(self, ref: int | str) -> dict[str, Any] | None:
        tag = _hex(ref) if isinstance(ref, int) else ref
        b = await self.request("eth_getBlockByNumber", [tag, False])
        return b if isinstance(b, dict) else None

    async def blocks(self, refs: Sequence[int | str]) -> list[dict[str, Any] | RpcError | None]:
        """Several blocks (numbers or tags) in one batch: a block, the node's error for it
        (an unknown tag), or None (no such block yet)."""
        calls = [("eth_getBlockByNumber", [_hex(r) if isinstance(r, int) else r, False]) for r in refs]
        out = await self.endpoints.request_batch(calls, time_limit=self.spec.timeout)
        return [b if isinstance(b, (dict, RpcError)) else None for b in out]

    async def final_head(self, head: int) -> int:
        """The highest block a release counts as final at: head - confirmations + 1 (finality
        "depth"), or the node's "safe" / "finalized" block (finality "safe" / "finalized"; the
        depth where the node has no such tag)."""
        depth = head - self.spec.confirmations + 1
        if self.finality in ("safe", "finalized"):
            try:
                b = await self.block(self.finality)
                if b is not None and b.get("number"):
                    return min(head, parse_int(b["number"]))
            except RpcError:
                pass
        return depth

    async def finalized_head(self, head: int | None = None) -> int | None:
        """The node's finalized block; else head - confirmations."""
        try:
            b = await self.block("finalized")
            if b is not None:
                return parse_int(b["number"])
        except RpcError:
            pass
        if head is None:
            head = await self.head()
        return max(0, head - self.spec.confirmations)

    async def block_at_time(self, ts: float, head: int) -> int:
        """A block whose timestamp is <= `ts` (0 if none), at most one minute earlier than the
        last such block: a binary search over block timestamps, cached per minute. Used to bound `eth_getLogs` scans for orders
        that carry no block number."""
        cache: dict[int, int] = self.__dict__.setdefault("_time_cache", {})
        key = int(ts) // 60
        ts = key * 60  # searched at the start of the minute: a cached answer is never too late
        if key in cache and cache[key] <= head:
            return cache[key]

        async def ts_of(n: int) -> int:
            b = await self.block(n)
            if b is None:
                raise BackendError(self.name, f"block {n} not found")
            return parse_int(b["timestamp"])

        if await ts_of(head) <= ts:
            return head
        lo, hi = 0, head
        if await ts_of(0) > ts:
            return 0
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if await ts_of(mid) <= ts:
                lo = mid
            else:
                hi = mid - 1
        if len(cache) > 256:
            cache.clear()
        cache[key] = lo
        return lo

    async def call(self, to: str, data: str, *, sender: str | None = None, block: str = "latest",
                   fallback: bool = False) -> str:
        tx: dict[str, Any] = {"to": to, "data": data}
        if sender:
            tx["from"] = sender
        result: str = await self.request("eth_call", [tx, block], fallback=fallback)  # hex data
        return result

    async def paused(self, contract: ContractSpec, *, fallback: bool = False) -> bool:
        return bool(parse_int(await self.call(contract.address, SELECTORS["paused()"], fallback=fallback)))

    async def get_logs_chunked(
        self,
        address: str,
        topics: list[Any],
        from_block: int,
        to_block: int,
        *,
        chunk: int | None = None,
        concurrency: int = 4,
    ) -> list[dict[str, Any]]:
        """`eth_getLogs` over [from_block, to_block] in ranges of `chunk` blocks, concurrently."""
        size = max(1, chunk or self.spec.getlogs_chunk)
        ranges = [(a, min(a + size - 1, to_block)) for a in range(from_block, to_block + 1, size)]
        sem = asyncio.Semaphore(concurrency)

        async def one(a: int, b: int) -> list[dict[str, Any]]:
            async with sem:
                params = [{"address": address, "topics": topics, "fromBlock": _hex(a), "toBlock": _hex(b)}]
                if self.spec.verify_quorum > 1:  # a read that decides a fix: N endpoints must agree
                    from backends.sources.rpcscore import quorum_request

                    agreed: list[dict[str, Any]] = await quorum_request(
                        self.endpoints, "eth_getLogs", params, self.spec.verify_quorum,
                        time_limit=self.spec.timeout, scorer=self.scorer)
                    return agreed
                logs: list[dict[str, Any]] = await self.request("eth_getLogs", params)
                return logs

        parts = await asyncio.gather(*(one(a, b) for a, b in ranges))
        return [log for part in parts for log in (part or [])]

    async def cross_check_blocks(self, blocks: dict[int, str]) -> dict[int, str]:
        """Ask the other healthy endpoints for the hashes of `blocks`; return those that differ."""
        others = [e for i, e in enumerate(self.endpoints.endpoints)
                  if i != self.endpoints.active_index and e.ok and e.healthy]
        bad: dict[int, str] = {}
        if not others or not blocks:
            return bad
        nums = sorted(blocks)
        for e in others:
            try:
                res = await e.rpc.batch([("eth_getBlockByNumber", [_hex(n), False]) for n in nums])
            except BackendError:
                continue
            for n, b in zip(nums, res, strict=True):
                if isinstance(b, dict) and b.get("hash") and b["hash"] != blocks[n]:
                    bad[n] = f"{e.name} has {b['hash'][:10]}… at block {n}, active has {blocks[n][:10]}…"
                elif b is None and e.head is not None and e.head >= n:
                    bad[n] = f"{e.name} has no block {n}"
        return bad

    async def aclose(self) -> None:
        await self.endpoints.aclose()


# --------------------------------------------------------------------------- signing


async def _import_eth_account() -> type[Account]:
    """eth_account's `Account` (the import takes a while: in a worker thread)."""
    from backends.engine.monitor import to_thread

    def imp() -> type[Account]:
        import eth_account

        return eth_account.Account

    return await to_thread(imp)


def _read_json(path: str) -> Any:
    return json.loads(Path(path).expanduser().read_text())


def keystore_address(path: str) -> str:
    data = _read_json(path)
    addr: str = data.get("address", "")
    if not addr:
        raise ValueError("keystore has no address field")
    return addr if addr.startswith("0x") else "0x" + addr


PasswordProvider = Callable[[str], "Awaitable[str] | str"]


class Signer:
    """Where the signing key comes from: an environment variable or an encrypted keystore."""

    def __init__(self, *, env_name: str | None = None, keystore: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        if not env_name and not keystore:
            raise ValueError("no signer configured (signer_env or keystore)")
        self.env_name = env_name
        self.keystore = keystore
        self.env = env if env is not None else os.environ

    def describe(self) -> str:
        return f"keystore {self.keystore}" if self.keystore else f"key from ${self.env_name}"

    async def address(self) -> str:
        if self.keystore:
            return keystore_address(self.keystore)
        key = self.env.get(self.env_name or "", "")
        if not key:
            raise ActionRefused("chain.sign", f"environment variable {self.env_name} is not set")
        account = await _import_eth_account()
        address: str = account.from_key(key).address  # from_key is an untyped combomethod in eth_account
        return address

    async def sign(self, tx: dict[str, Any], password_provider: PasswordProvider | None) -> bytes:
        from backends.engine.monitor import to_thread

        account = await _import_eth_account()
        key: bytes | str
        if self.keystore:
            if password_provider is None:
                raise ActionRefused("chain.sign", "the keystore needs a password and none can be asked")
            answer = password_provider(self.keystore)
            pw: str | None
            if asyncio.iscoroutine(answer) or isinstance(answer, Awaitable):
                pw = await answer
            else:
                pw = answer
            data = _read_json(self.keystore)
            try:
                key = await to_thread(account.decrypt, data, pw)
            except ValueError:
                raise ActionRefused("chain.sign", "wrong keystore password") from None
            finally:
                pw = None  # noqa: F841  (never kept)
        else:
            key = self.env.get(self.env_name or "", "")
            if not key:
                raise ActionRefused("chain.sign", f"environment variable {self.env_name} is not set")
        signed = account.sign_transaction(tx, key)
        raw = getattr(signed, "raw_transaction", None) or signed.rawTransaction
        return bytes(raw)


# --------------------------------------------------------------------------- pause / unpause


class ContractPauseAction(Action):
    """`chain.pause` / `chain.unpause` on a Pausable contract."""

    danger = Danger.TYPED
    reason_required = True

    def __init__(
        self,
        chains: dict[str, EvmChain],
        *,
        pause: bool = True,
        password_provider: PasswordProvider | None = None,
        env: dict[str, str] | None = None,
        receipt_timeout: float = 60.0,
    ) -> None:
        self.chains = chains
        self.pause = pause
        self.id = "chain.pause" if pause else "chain.unpause"
        self.title = "Pause contract" if pause else "Unpause contract"
        self.description = ("Pause a contract (OpenZeppelin Pausable): simulate, sign, send, verify paused()."
                            if pause else "Unpause a contract: simulate, sign, send, verify paused().")
        self.password_provider = password_provider
        self.env = env
        self.receipt_timeout = receipt_timeout

    def _resolve(self, chain: str | None, contract: str | None) -> tuple[EvmChain, ContractSpec]:
        if chain is None and len(self.chains) == 1:
            ch = next(iter(self.chains.values()))
        elif chain in self.chains:
            ch = self.chains[chain]
        else:
            raise ActionRefused(self.id, f"unknown chain {chain!r}")
        if contract is None:
            pausable = [c for c in ch.spec.contracts if c.pausable]
            if len(pausable) != 1:
                raise ActionRefused(self.id, "name the contract (several or none are pausable)")
            c = pausable[0]
        elif contract in ch.contracts:
            c = ch.contracts[contract]
        else:
            raise ActionRefused(self.id, f"unknown contract {contract!r} on {ch.spec.name}")
        fn = "pause" if self.pause else "unpause"
        if not c.pausable or not has_function(c.abi, fn) or not has_function(c.abi, "paused"):
            raise ActionRefused(self.id, f"{c.name} is not pausable (no {fn}() / paused() in its ABI)")
        return ch, c

    def _signer(self, ch: EvmChain) -> Signer:
        try:
            return Signer(env_name=ch.spec.signer_env, keystore=ch.spec.keystore, env=self.env)
        except ValueError as exc:
            raise ActionRefused(self.id, str(exc)) from None

    async def _simulate(self, ch: EvmChain, c: ContractSpec, sender: str) -> tuple[bool, str]:
        data = SELECTORS["pause()" if self.pause else "unpause()"]
        try:
            out = await ch.call(c.address, data, sender=sender, fallback=True)
            return True, f"eth_call from {sender}: ok (returned {out or '0x'})"
        except RpcError as exc:
            return False, f"eth_call from {sender}: reverted: {decode_revert(c.abi, exc)}"

    async def _build_tx(self, ch: EvmChain, c: ContractSpec, sender: str) -> dict[str, Any]:
        data = SELECTORS["pause()" if self.pause else "unpause()"]
        res = await ch.endpoints.request_batch(
            [
                ("eth_getTransactionCount", [sender, "pending"]),
                ("eth_chainId", []),
                ("eth_getBlockByNumber", ["latest", False]),
                ("eth_maxPriorityFeePerGas", []),
                ("eth_estimateGas", [{"from": sender, "to": c.address, "data": data}]),
            ],
            time_limit=ch.spec.timeout,
            fallback=True,
        )
        nonce, chain_id, block, tip, gas = res
        for r in (nonce, chain_id, block):
            if isinstance(r, Exception):
                raise BackendError(ch.name, f"cannot build the transaction: {describe_exception(r)}")
        tip_v = 1_000_000_000 if isinstance(tip, Exception) else parse_int(tip)
        base = parse_int(block.get("baseFeePerGas", "0x0")) if isinstance(block, dict) else 0
        gas_v = 100_000 if isinstance(gas, Exception) else int(parse_int(gas) * 1.2) + 1
        return {
            "from": sender,
            "to": c.address,
            "data": data,
            "value": 0,
            "nonce": parse_int(nonce),
            "chainId": parse_int(chain_id),
            "gas": gas_v,
            "maxPriorityFeePerGas": tip_v,
            "maxFeePerGas": base * 2 + tip_v,
            "type": 2,
        }

    async def plan(self, chain: str | None = None, contract: str | None = None, reason: str | None = None,
                   **_: Any) -> ActionPlan:
        ch, c = self._resolve(chain, contract)
        signer = self._signer(ch)
        try:
            sender = await signer.address()
        except ValueError as exc:
            raise ActionRefused(self.id, f"signer: {exc}") from None
        current = await ch.paused(c, fallback=True)
        want = self.pause
        sim_ok, sim = await self._simulate(ch, c, sender)
        tx = await self._build_tx(ch, c, sender)
        state_ok = current != want
        guard = Guard(
            state_ok and sim_ok,
            f"contract is {'not ' if want else ''}paused and the eth_call dry-run succeeds",
            "" if state_ok and sim_ok else (f"paused() is already {current}" if not state_ok else sim),
        )
        fn = "pause()" if want else "unpause()"
        preview = "\n".join([
            f"{fn} on {c.name} at {c.address} ({ch.spec.name}, chain id {tx['chainId']})",
            f"signer: {sender} ({signer.describe()})",
            f"paused(): {current} -> {want}",
            f"tx: nonce {tx['nonce']}, gas {tx['gas']}, maxFee {tx['maxFeePerGas']} wei, tip {tx['maxPriorityFeePerGas']} wei",
            f"dry-run: {sim}",
        ])
        return ActionPlan(
            action=self.id,
            title=self.title,
            target=f"{ch.spec.name}:{c.name}",
            changes=(
                Change(f"{ch.spec.name}:{c.name}", "paused()", current, want),
                Change(f"{ch.spec.name}:{c.name}", f"transaction {fn}", None,
                       {k: v for k, v in tx.items()} | {"eth_call": sim}),
            ),
            guard=guard,
            danger=Danger.TYPED,
            confirm_text=c.name,
            params={"chain": ch.spec.name, "contract": c.name, "sender": sender, "simulation": sim},
            reason=reason,
            reason_required=True,
            preview=preview,
            notes=(sim,),
        )

    async def check_guard(self, plan: ActionPlan) -> Guard:
        ch, c = self._resolve(plan.params["chain"], plan.params["contract"])
        current = await ch.paused(c, fallback=True)
        if current == self.pause:
            return Guard(False, "contract state", f"paused() is already {current}")
        ok, sim = await self._simulate(ch, c, plan.params["sender"])
        return Guard(ok, "eth_call dry-run succeeds", "" if ok else sim)

    async def execute(self, plan: ActionPlan, progress: ProgressFn) -> ActionResult:
        ch, c = self._resolve(plan.params["chain"], plan.params["contract"])
        signer = self._signer(ch)
        progress_total = 4
        progress(_p(0, progress_total, "building transaction"))
        tx = await self._build_tx(ch, c, plan.params["sender"])
        tx.pop("from", None)
        progress(_p(1, progress_total, "signing"))
        raw = await signer.sign(tx, self.password_provider)
        progress(_p(2, progress_total, "sending"))
        try:
            tx_hash = await ch.request("eth_sendRawTransaction", ["0x" + raw.hex()], fallback=True)
        except RpcError as exc:
            return ActionResult(status="failed", summary=f"send rejected: {exc.message}", before=not self.pause)
        progress(_p(3, progress_total, f"waiting for receipt of {tx_hash}"))
        receipt = await self._wait_receipt(ch, tx_hash)
        if receipt is None:
            return ActionResult(status="failed", summary=f"no receipt for {tx_hash} after {self.receipt_timeout:g}s",
                                before=not self.pause, details=(tx_hash,))
        block = parse_int(receipt.get("blockNumber", "0x0"))
        if parse_int(receipt.get("status", "0x0")) != 1:
            return ActionResult(status="failed", summary=f"transaction {tx_hash} reverted in block {block}",
                                before=not self.pause, details=(tx_hash,))
        now = await ch.paused(c, fallback=True)
        progress(_p(4, progress_total, "verified"))
        if now != self.pause:
            return ActionResult(status="failed", summary=f"tx {tx_hash} mined in block {block} but paused() is still {now}",
                                before=not self.pause, after=now, details=(tx_hash,))
        return ActionResult(
            status="ok",
            summary=f"{c.name} {'paused' if self.pause else 'unpaused'}: tx {tx_hash} in block {block}; paused() = {now}",
            before=not self.pause,
            after={"paused": now, "tx": tx_hash, "block": block},
            details=(tx_hash,),
        )

    async def _wait_receipt(self, ch: EvmChain, tx_hash: str) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.receipt_timeout
        delay = 0.05
        while time.monotonic() < deadline:
            r = await ch.request("eth_getTransactionReceipt", [tx_hash], fallback=True)
            if isinstance(r, dict) and r.get("blockNumber"):
                return r
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)
        return None


def _p(done: int, total: int, msg: str) -> Progress:
    return Progress(done, total, msg)


def chain_actions(chains: dict[str, EvmChain], *, password_provider: PasswordProvider | None = None) -> list[Action]:
    """Every chain action for these chains: failover, pin, pause, unpause."""
    sets = {name: ch.endpoints for name, ch in chains.items()}
    return [
        ChainFailoverAction(sets),
        ChainPinAction(sets),
        ContractPauseAction(chains, pause=True, password_provider=password_provider),
        ContractPauseAction(chains, pause=False, password_provider=password_provider),
    ]


# --------------------------------------------------------------------------- config


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _seconds(v: Any, default: float | None) -> float | None:
    if v is None:
        return default
    if hasattr(v, "total_seconds"):
        seconds: float = v.total_seconds()
        return seconds
    if isinstance(v, int | float):
        return float(v)
    s = str(v).strip()
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    for u in ("ms", "s", "m", "h", "d"):
        if s.endswith(u) and s[: -len(u)].replace(".", "", 1).isdigit():
            return float(s[: -len(u)]) * units[u]
    return float(s)


def _reveal(v: Any) -> Any:
    return v.reveal() if hasattr(v, "reveal") else v


def chain_spec_from_config(config: Any, name: str) -> ChainSpec:
    """A ChainSpec from `[chain.NAME]` of a loaded `backends.config.Config` (or plain dicts)."""
    chains = _get(config, "chain", None) or _get(config, "chains", None) or {}
    c = chains[name]
    contracts = []
    for ct in _get(c, "contracts", ()) or ():
        abi = _get(ct, "abi", ())
        if isinstance(abi, str | Path):
            abi = load_abi(abi)
        register_role_names(tuple(_get(ct, "roles", ()) or ()))
        contracts.append(ContractSpec(name=_get(ct, "name"), address=str(_reveal(_get(ct, "address"))),
                                      abi=tuple(abi or ()), pausable=bool(_get(ct, "pausable", True))))
    balances = []
    by_name = {ct.name: ct.address for ct in contracts}
    for b in _get(c, "balances", ()) or ():
        token = _get(b, "token")
        token = by_name.get(token, token) if token else None  # a contract name or an address
        minimum: Any = _get(b, "minimum")
        minimum_units: Decimal | None = None
        if hasattr(minimum, "units"):  # config.TokenAmount: whole tokens, decimals read from the token
            minimum, minimum_units = None, Decimal(minimum.units)
        elif minimum is not None:
            minimum = int(getattr(minimum, "value", minimum))
        decimals = _get(b, "decimals", None if token else 18)
        symbol = _get(b, "symbol", None if token else "ETH")
        balances.append(BalanceSpec(name=_get(b, "name"), address=str(_reveal(_get(b, "address"))),
                                    minimum=minimum, minimum_units=minimum_units,
                                    decimals=int(decimals) if decimals is not None else None,
                                    symbol=str(symbol) if symbol else None, token=token))
    kind = _get(c, "kind", "evm")
    head_method = _get(c, "head_method", None) or ("eth_blockNumber" if kind == "evm" else "getblockcount")
    keystore = _get(c, "keystore")
    return checksum_spec(ChainSpec(
        name=name,
        kind=kind,
        endpoints=tuple(str(_reveal(u)) for u in (_get(c, "endpoints", ()) or ()) if _reveal(u)),
        chain_id=_get(c, "chain_id"),
        failover=bool(_get(c, "failover", True)),
        failover_after=int(_get(c, "failover_after", 1)),
        max_lag=int(_get(c, "max_lag", 5)),
        max_head_age=_seconds(_get(c, "max_head_age"), 60.0),
        confirmations=int(_get(c, "confirmations", 65)),
        getlogs_chunk=int(_get(c, "getlogs_chunk", 2000)),
        timeout=_seconds(_get(c, "timeout"), 5.0) or 5.0,
        interval=_seconds(_get(c, "interval"), 5.0) or 5.0,
        head_method=head_method,
        hash_method=_get(c, "hash_method", None),
        version_method=_get(c, "version_method", None),
        head_offset=int(_get(c, "head_offset", 0) or 0),
        signer_env=_get(c, "signer_env"),
        keystore=str(keystore) if keystore else None,
        contracts=tuple(contracts),
        balances=tuple(balances),
        max_answer=int(_get(c, "max_answer", None) or DEFAULT_MAX_ANSWER),
        verify_quorum=int(_get(c, "verify_quorum", 1) or 1),
    ))


def chains_from_config(config: Any, *, audit: Any = None) -> dict[str, Any]:
    """Every `[chain.NAME]` as a source: `EvmChain` (kind evm) or `JsonRpcChain` (kind jsonrpc)."""
    from backends.sources.jsonrpc import JsonRpcChain

    out: dict[str, Any] = {}
    for name in (_get(config, "chain", None) or {}):
        spec = chain_spec_from_config(config, name)
        if not spec.endpoints:
            continue
        if spec.kind == "evm":
            from backends.sources.signers import signer_specs_from_config

            c = (_get(config, "chain", None) or {})[name]
            out[name] = EvmChain(spec, audit=audit, signers=signer_specs_from_config(config, name),
                                 finality=str(_get(c, "finality", "depth") or "depth"))
        else:
            out[name] = JsonRpcChain(spec, audit=audit)
    return out


def actions_for_chains(chains: dict[str, Any], *,
                       password_provider: PasswordProvider | None = None) -> list[Action]:
    """Failover / pin for every chain; pause / unpause for the EVM ones."""
    evm = {n: c for n, c in chains.items() if isinstance(c, EvmChain)}
    sets = {n: c.endpoints for n, c in chains.items()}
    out: list[Action] = [ChainFailoverAction(sets), ChainPinAction(sets)]
    if evm:
        from backends.sources.signers import signer_actions

        out += [ContractPauseAction(evm, pause=True, password_provider=password_provider),
                ContractPauseAction(evm, pause=False, password_provider=password_provider)]
        out += signer_actions(evm, password_provider=password_provider)  # signer.speed_up / signer.cancel
    return out


# --------------------------------------------------------------------------- rules


@rule(ChainReading)
def chain_contract_rules(r: ChainReading, ctx: Any) -> list[Finding]:
    out: list[Finding] = []
    for c in r.contracts:
        if c.code_present is False:
            out.append(Finding(
                key=f"contract-missing:{r.chain}:{c.name}", severity=Severity.P0, source=r.source,
                summary=f"no contract code for {c.name} at {c.address} on {r.chain}",
                evidence=("deployment check failed: wrong address or wrong network?", c.detail),
                playbook="rpc-failure", target=f"{r.chain}:{c.name}",
            ))
        if c.paused:
            out.append(Finding(
                key=f"contract-paused:{r.chain}:{c.name}", severity=Severity.P3, source=r.source,
                summary=f"contract {c.name} on {r.chain} is paused",
                evidence=(f"{c.address}: paused() = true", "unpause once the incident is resolved (chain.unpause)"),
                playbook="contract-paused", target=f"{r.chain}:{c.name}",
            ))
    for b in r.balances:
        if b.balance is not None and b.minimum is not None and b.balance < b.minimum:
            out.append(Finding(
                key=f"gas-low:{r.chain}:{b.name}",
                severity=Severity.P0 if b.balance == 0 else Severity.P1,
                source=r.source,
                summary=f"{b.name} balance {b.display} is below its minimum "
                        f"{format_amount(b.minimum, b.decimals, b.symbol)} on {r.chain}",
                evidence=(b.address,), playbook="gas-low", target=f"{r.chain}:{b.name}",
            ))
    return out


__all__ = [
    "SELECTORS", "BalanceSpec", "ChainSpec", "ContractPauseAction", "ContractSpec", "EvmChain", "Signer",
    "actions_for_chains", "chains_from_config",
    "KNOWN_ROLES", "abi_fingerprint", "chain_actions", "format_role", "name_roles", "register_role_names",
    "role_id", "role_name", "chain_spec_from_config", "event_topic", "find_event",
    "format_amount", "has_function", "load_abi", "signature",
]
