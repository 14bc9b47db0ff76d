"""Parsing of [chain.NAME] with its [[contracts]], [[balances]] and [[signers]]."""

from __future__ import annotations

import difflib

from backends.config.base import BAD
from backends.config.converters import c_amount, c_opt, c_token_amount
from backends.config.crossref import _unique
from backends.config.loader import _Loader, _Table
from backends.config.model import BalanceConfig, ChainConfig, ContractConfig, SignerConfig
from backends.config.types import Amount, TokenAmount


def parse_chain(ld: _Loader, root: _Table) -> dict[str, ChainConfig]:
    """[chain.NAME]"""
    chains: dict[str, ChainConfig] = {}
    for name, t in ld.named_tables(root.raw("chain"), ("chain",)):
        kind = t.take("kind")
        if kind == "jsonrpc":
            t.exclude("signers")  # an unknown key there ([[chain.NAME.signers]] are EVM accounts)
            # a non-EVM chain's contract state and balances are read by command checks (neo-go)
            for sub, what in (("contracts", "contract state (paused)"), ("balances", "balances")):
                if t.has(sub):
                    raw = t.raw(sub)
                    at = ("chain", name, sub, 0) if isinstance(raw, list) and raw else ("chain", name, sub)
                    ld.error(at, f"[[chain.{name}.{sub}]] is read on EVM chains only; this chain is "
                                 f'kind = "jsonrpc"',
                             f'{what} through a [[checks]] kind = "command" entry (a [[commands]] running '
                             f"e.g. neo-go contract testinvokefunction, with path and warn_below / "
                             f"crit_below), pausing through [[actions]]; see examples/neo-n3.toml")
        contracts = []
        for ct in (ld.array_of_tables(t.raw("contracts"), ("chain", name, "contracts"))
                   if kind != "jsonrpc" else ()):
            contracts.append(ContractConfig(
                name=ct.take("name"),
                address=ct.take("address"),
                abi=ct.take("abi"),
                pausable=ct.take("pausable"),
                roles=ct.take("roles"),
                guard=ct.take("guard"),
                owner=ct.take("owner"),
                implementation=ct.take("implementation"),
                admins=tuple(ct.take("admins")),
            ))
            ct.done()
        balances = []
        native = ("GAS", 8) if kind == "jsonrpc" else ("ETH", 18)
        contract_names = [c.name for c in contracts]
        for bt in (ld.array_of_tables(t.raw("balances"), ("chain", name, "balances"))
                   if kind != "jsonrpc" else ()):
            token = bt.take("token")
            if token and token is not BAD and not token.startswith("0x") and token not in contract_names:
                hint = difflib.get_close_matches(token, contract_names, n=1)
                ld.error(bt.path + ("token",), f"token {token!r} is not a 0x address nor a contract of chain "
                                               f"{name}" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                         f"a 0x address or the name of a [[chain.{name}.contracts]] entry"
                         + (f" ({', '.join(contract_names)})" if contract_names else ""))
            is_token = bool(token) and token is not BAD
            minimum = bt.take("minimum", c_opt(c_token_amount if is_token else c_amount), None)
            symbol = bt.take("symbol")
            decimals = bt.take("decimals")
            decimals = decimals if isinstance(decimals, int) else None
            if is_token:
                unit_symbol = minimum.symbol if isinstance(minimum, TokenAmount) else None
                if unit_symbol and symbol and symbol.upper() != unit_symbol.upper():
                    ld.error(bt.path + ("minimum",), f"minimum is in {unit_symbol} but symbol is {symbol}",
                             f"a minimum in {symbol}, or an integer in its smallest unit")
                symbol = symbol or unit_symbol  # None: symbol() read from the token
                if isinstance(minimum, TokenAmount) and decimals is not None:
                    minimum = Amount(minimum.scaled(decimals), symbol or minimum.symbol, decimals)
                elif isinstance(minimum, Amount) and decimals is not None and symbol:
                    minimum = Amount(minimum.value, symbol, decimals)
            else:
                unit = minimum if isinstance(minimum, Amount) and minimum.symbol else None
                if unit and symbol and symbol.upper() != unit.symbol:
                    ld.error(bt.path + ("minimum",), f"minimum is in {unit.symbol} but symbol is {symbol}",
                             f"a minimum in {symbol}, or an integer in its smallest unit")
                symbol = symbol or (unit.symbol if unit else native[0])
                decimals = decimals if decimals is not None else (unit.decimals if unit else native[1])
            balances.append(BalanceConfig(
                name=bt.take("name"),
                address=bt.take("address"),
                minimum=minimum,
                token=token if is_token else None,
                symbol=symbol,
                decimals=decimals,
            ))
            bt.done()
        signers = []
        for st in (ld.array_of_tables(t.raw("signers"), ("chain", name, "signers")) if kind != "jsonrpc" else ()):
            sg = SignerConfig(
                label=st.take("label"),
                address=st.take("address"),
                min_balance=st.take("min_balance"),
                keystore=st.take("keystore"),
                key_env=st.take("key_env"),
                stuck_after_blocks=st.take("stuck_after_blocks"),
                gap_after_blocks=st.take("gap_after_blocks"),
                runway_min=st.take("runway_min"),
                spend_window=st.take("spend_window"),
                bump_percent=st.take("bump_percent"),
                min_bump_percent=st.take("min_bump_percent"),
            )
            if sg.keystore and sg.key_env:
                ld.error(st.path + ("key_env",), "both keystore and key_env are set", "one of keystore or key_env")
            if isinstance(sg.bump_percent, float) and isinstance(sg.min_bump_percent, float) \
                    and sg.bump_percent < sg.min_bump_percent:
                ld.error(st.path + ("bump_percent",), f"bump_percent {sg.bump_percent:g} is below the node's "
                         f"minimum replacement bump (min_bump_percent {sg.min_bump_percent:g}): the node would "
                         "refuse the replacement", f"at least {sg.min_bump_percent:g}")
            signers.append(sg)
            st.done()
        chains[name] = ChainConfig(
            name=name,
            kind=kind,
            chain_id=t.take("chain_id"),
            endpoints=t.take("endpoints"),
            failover=t.take("failover"),
            failover_after=t.take("failover_after"),
            max_lag=t.take("max_lag"),
            max_head_age=t.take("max_head_age"),
            confirmations=t.take("confirmations"),
            getlogs_chunk=t.take("getlogs_chunk"),
            timeout=t.take("timeout"),
            interval=t.take("interval"),
            head_method=t.take("head_method", default="getblockcount" if kind == "jsonrpc" else "eth_blockNumber"),
            hash_method=t.take("hash_method", default="getblockhash" if kind == "jsonrpc" else None),
            version_method=t.take("version_method"),
            head_offset=t.take("head_offset", default=-1 if kind == "jsonrpc" and
                               t.data.get("head_method", "getblockcount") == "getblockcount" else 0),
            signer_env=t.take("signer_env"),
            keystore=t.take("keystore"),
            contracts=tuple(contracts),
            balances=tuple(balances),
            max_answer=t.take("max_answer"),
            integrity_window=t.take("integrity_window"),
            verify_quorum=t.take("verify_quorum"),
            gas_bank=t.take("gas_bank"),
            gas_minimum=t.take("gas_minimum"),
            watch_contracts=tuple(t.take("watch_contracts")),
            signers=tuple(signers),
            finality=t.take("finality"),
        )
        _unique(ld, ("chain", name, "signers"), [x.label for x in signers], t.data.get("signers"))
        if chains[name].signer_env and chains[name].keystore:
            ld.error(("chain", name, "keystore"), "both signer_env and keystore are set",
                     "one of signer_env or keystore")
        _unique(ld, ("chain", name, "contracts"), [c.name for c in contracts], t.data.get("contracts"))
        _unique(ld, ("chain", name, "balances"), [b.name for b in balances], t.data.get("balances"))
        t.done()
    return chains
