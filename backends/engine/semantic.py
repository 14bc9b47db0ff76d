"""Checks of a loaded configuration's meaning, beyond its syntax.

`backends.config` checks that every value has the right shape; this module checks that the
values mean something in the world the config points at:

static (no network; `warroom check` by default):
- `[orders] event` is an event of the contract's ABI (the `abi` file the contract names), and
  its first argument is indexed (the order id is read from topic 1);
- every `[[commands]]` / `[[actions]]` program (argv[0]) exists on PATH (or, with a `/`, is an
  executable file), naming the `[[checks]]` / services that use a command;
- every `[[escalation.levels]] channels` URL is one apprise can load (apprise's own parser);
- a `path` on an http check (which reads no path: it would be ignored);

live (`warroom check --live`, and the console at start, off its loop, every call with a timeout):
- `[orders] id_encoding` against a few recent release events on chain: says which encoding
  the events' order ids do decode as;
- a jsonrpc / command check's `path`, and an http check's JSON `expect`, against one live
  answer of the endpoint (a WARNING when the endpoint does not answer).

Each problem names file:line and key like `ConfigError`. Secrets (channel URLs, RPC endpoints)
never appear in a message: a channel is named by its position and scheme.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.config import (
    ActionConfig,
    CommandConfig,
    Config,
    LineLocator,
    Path_,
    Secret,
    render_path,
)
from backends.errors import MASK, describe_exception, redact

__all__ = [
    "ERROR",
    "NOTE",
    "WARNING",
    "Problem",
    "check_config",
    "classify_topic",
    "live_problems",
    "static_problems",
]

ERROR = "error"
WARNING = "warning"
NOTE = "note"

ENCODINGS = ("bytes32-utf8", "uint256", "keccak")
SAMPLE_EVENTS = 5  # release events looked at for id_encoding
SAMPLE_BLOCKS = 50_000  # how far back (blocks) they are looked for
MAX_GETLOGS_CALLS = 8


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about the configuration: `severity` error | warning | note."""

    severity: str
    message: str
    file: str | None = None
    line: int | None = None
    key: str | None = None
    expected: str | None = None

    def render(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
        parts = [where]
        if self.key:
            parts.append(f"key {self.key!r}")
        text = ": ".join(parts) + ": "
        if self.severity != ERROR:
            text += f"{self.severity}: "
        text += self.message
        if self.expected:
            text += f" (expected {self.expected})"
        return redact(text)


class _Where:
    """file:line of key paths, from the config file's text (tomllib keeps no lines)."""

    def __init__(self, config: Config, filename: str | None = None) -> None:
        self.file = filename or (str(config.path) if config.path else None)
        self.loc: LineLocator | None = None
        src = config.path
        if src is not None:
            try:
                self.loc = LineLocator(Path(src).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                self.loc = None

    def problem(self, severity: str, path: Path_, message: str, expected: str | None = None) -> Problem:
        line = self.loc.line_of(path) if self.loc is not None else None
        return Problem(severity, message, file=self.file, line=line, key=render_path(path) or None,
                       expected=expected)


# --------------------------------------------------------------------------- ABI / event


def _orders_contract(config: Config) -> tuple[Any, Any] | None:
    """(chain config, contract config) the orders verifier uses, as OrdersBundle.from_config picks it."""
    oc = config.orders
    if oc is None or not oc.chain or oc.chain not in config.chain:
        return None
    ch = config.chain[oc.chain]
    if ch.kind != "evm":
        return None
    ct = ch.contract(oc.contract) if oc.contract else (ch.contracts[0] if ch.contracts else None)
    if ct is None:
        return None
    return ch, ct


def _load_abi(path: Path) -> tuple[dict[str, Any], ...]:
    from backends.sources.evm import load_abi

    return tuple(load_abi(path))


def _event_problems(config: Config, where: _Where) -> list[Problem]:
    picked = _orders_contract(config)
    oc = config.orders
    if picked is None or oc is None:
        return []
    ch, ct = picked
    if ct.abi is None:
        return []
    ci = list(ch.contracts).index(ct)
    abi_key: Path_ = ("chain", ch.name, "contracts", ci, "abi")
    try:
        abi = _load_abi(ct.abi)
    except OSError as exc:
        # a warning, like a program not on PATH: `warroom check` may run off the ops box
        return [where.problem(WARNING, abi_key, f"the ABI of contract {ct.name!r} cannot be read on this "
                                                f"machine ({describe_exception(exc)}): orders.event not "
                                                f"checked, and the console cannot load it here",
                              "an ABI file that exists")]
    except ValueError as exc:
        return [where.problem(ERROR, abi_key, f"the ABI of contract {ct.name!r} is not an ABI: "
                                              f"{describe_exception(exc)}",
                              "a JSON ABI list or a Hardhat/Foundry artifact with \"abi\"")]
    events = [i for i in abi if i.get("type") == "event"]
    match = [e for e in events if e.get("name") == oc.event]
    if not match:
        names = sorted({str(e.get("name", "")) for e in events})
        hint = difflib.get_close_matches(oc.event, names, n=1)
        msg = (f"event {oc.event!r} is not in the ABI of contract {ct.name!r} ({ct.abi.name}); the release "
               f"of an order would never be found on chain")
        if hint:
            msg += f" (did you mean {hint[0]!r}?)"
        return [where.problem(ERROR, ("orders", "event"), msg,
                              "one of the ABI's events: " + ", ".join(names) if names else
                              "an ABI that declares the release event")]
    ev = match[0]
    inputs = ev.get("inputs") or []
    if not inputs or not inputs[0].get("indexed"):
        from backends.sources.evm import signature

        return [where.problem(ERROR, ("orders", "event"),
                              f"event {signature(ev)} has no indexed first argument; the order id is "
                              f"looked up in topic 1 of the event",
                              "an event whose first argument is the indexed order id")]
    return []


# --------------------------------------------------------------------------- programs on PATH


def _find_program(program: str, cwd: Path | None, path_env: str | None) -> str | None:
    if os.sep in program:
        p = Path(program).expanduser()
        if not p.is_absolute():
            p = (cwd or Path.cwd()) / p
        return str(p) if p.is_file() and os.access(p, os.X_OK) else None
    return shutil.which(program, path=path_env)


def _command_users(config: Config) -> dict[str, list[str]]:
    users: dict[str, list[str]] = {}

    def use(name: str | None, who: str) -> None:
        if name:
            users.setdefault(name, []).append(who)

    for chk in config.checks:
        if chk.kind == "command":
            use(chk.command, f"[[checks]] {chk.name}")
    for s in config.services:
        use(s.status_command, f"service {s.name} status")
        if s.restart_via and s.restart_via != "docker":
            use(s.restart_via, f"service {s.name} restart")
        if s.logs and config.command(s.logs) is not None:
            use(s.logs, f"service {s.name} logs")
    for lg in config.logs:
        use(lg.command, f"[[logs]] {lg.name}")
    return users


def _program_problems(config: Config, where: _Where, path_env: str | None) -> list[Problem]:
    out: list[Problem] = []
    env_path = path_env if path_env is not None else os.environ.get("PATH", os.defpath)
    users = _command_users(config)
    entries: list[tuple[str, Sequence[CommandConfig | ActionConfig]]] = [
        ("commands", config.commands), ("actions", config.actions)]
    for section, items in entries:
        for i, item in enumerate(items):
            if not item.argv:
                continue
            program = item.argv[0]
            cwd = getattr(item, "cwd", None)
            if _find_program(program, cwd, env_path) is not None:
                continue
            used = users.get(item.name, []) if section == "commands" else []
            what = f"[[{section}]] {item.name!r}: program {program!r}"
            if os.sep in program:
                msg = f"{what} is not an executable file on this machine"
            else:
                dirs = len([d for d in env_path.split(os.pathsep) if d])
                msg = f"{what} is not on PATH on this machine (none of its {dirs} directories has it)"
            if used:
                msg += "; used by " + ", ".join(used)
            # a warning: `warroom check` may run where the ops box's tools are not (CI, a laptop);
            # --strict makes it fail, the console shows it at start
            out.append(where.problem(WARNING, (section, i, "argv", 0), msg,
                                     "an installed program (an absolute path, or a name found on PATH)"))
    return out


# --------------------------------------------------------------------------- apprise channels


def _apprise_schemes() -> list[str]:
    import apprise

    out: set[str] = set()
    for s in apprise.Apprise().details().get("schemas", []):
        for k in ("protocols", "secure_protocols"):
            v = s.get(k) or ()
            out.update([v] if isinstance(v, str) else list(v))
    return sorted(out)


def _apprise_reason(url: str) -> str | None:
    """None when apprise loads `url`, else what apprise said (warning lines, URL masked)."""
    import apprise

    with apprise.LogCapture(level=logging.WARNING) as logs:  # type: ignore[no-untyped-call]
        ok = apprise.Apprise().add(url)
    if ok:
        return None
    said: list[str] = []
    for raw in str(logs.getvalue()).splitlines():
        m = re.match(r"^[\d\- :,]+ - (WARNING|ERROR) - (.*)$", raw)
        if m and m.group(1) == "WARNING":
            said.append(m.group(2).strip())
    text = "; ".join(said)
    if url and url in text:
        text = text.replace(url, MASK)
    return redact(text)


def _channel_problems(config: Config, where: _Where) -> list[Problem]:
    out: list[Problem] = []
    schemes: list[str] | None = None
    for li, level in enumerate(config.escalation.levels):
        for ci, ch in enumerate(level.channels):
            url = ch.reveal() if isinstance(ch, Secret) else str(ch)
            try:
                reason = _apprise_reason(url)
            except ImportError:
                return [where.problem(WARNING, ("escalation", "levels", li, "channels"),
                                      "apprise is not installed: channel URLs not checked")]
            if reason is None:
                continue
            m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", url)
            scheme = m.group(1).lower() if m else ""
            if schemes is None:
                schemes = _apprise_schemes()
            if not scheme:
                msg = "is not a URL (no scheme://)"
            elif scheme not in schemes:
                hint = difflib.get_close_matches(scheme, schemes, n=1)
                msg = f"scheme {scheme}:// is not one apprise knows" + (f" (did you mean {hint[0]}://?)"
                                                                      if hint else "")
            else:
                msg = f"apprise cannot load this {scheme}:// URL" + (f": {reason}" if reason else "")
            out.append(where.problem(
                ERROR, ("escalation", "levels", li, "channels", ci),
                f"channel {ci + 1} of escalation level {level.name!r} {msg}; nothing would be sent there",
                "an apprise URL (https://github.com/caronc/apprise/wiki)"))
    return out


# --------------------------------------------------------------------------- checks (static)


def _check_static_problems(config: Config, where: _Where) -> list[Problem]:
    out: list[Problem] = []
    for i, chk in enumerate(config.checks):
        if chk.path and chk.kind not in ("command", "jsonrpc"):
            out.append(where.problem(WARNING, ("checks", i, "path"),
                                     f"check {chk.name!r}: a {chk.kind} check reads no path; it is ignored",
                                     "path on command and jsonrpc checks; on an http check a JSON "
                                     "expect such as '{\"paused\": false}'"))
    return out


def static_problems(config: Config, *, filename: str | None = None,
                    path_env: str | None = None) -> list[Problem]:
    """Problems found without any network: events vs ABI, programs on PATH, apprise URLs."""
    where = _Where(config, filename)
    out: list[Problem] = []
    out += _event_problems(config, where)
    out += _program_problems(config, where, path_env)
    out += _channel_problems(config, where)
    out += _check_static_problems(config, where)
    return out


# --------------------------------------------------------------------------- id_encoding (live)


def classify_topic(topic: str, id_pattern: re.Pattern[str] | None = None) -> tuple[str, str]:
    """(the id_encoding a 32-byte topic looks like, the id it decodes to): `bytes32-utf8` for
    printable UTF-8 right-padded with zeros, `uint256` for a number under 2**128, else `keccak`
    (a hash: no id can be read back)."""
    h = topic[2:] if topic.startswith(("0x", "0X")) else topic
    raw = bytes.fromhex(h.rjust(64, "0")[-64:])
    body = raw.rstrip(b"\0")
    if body and b"\0" not in body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        if text and text.isprintable() and (id_pattern is None or id_pattern.search(text)):
            return "bytes32-utf8", text
    n = int.from_bytes(raw, "big")
    if n < 2**128:
        return "uint256", str(n)
    return "keccak", "0x" + h[:12] + "…"


async def _id_encoding_problems(config: Config, where: _Where, budget: float) -> list[Problem]:
    picked = _orders_contract(config)
    oc = config.orders
    if picked is None or oc is None:
        return []
    ch, ct = picked
    if not ch.endpoints:
        return []
    from backends.sources.evm import event_topic, find_event
    from backends.sources.jsonrpc import HttpRpc, parse_int

    event: dict[str, Any] | str = f"{oc.event}(bytes32,uint256)"
    if ct.abi is not None:
        try:
            event = find_event(_load_abi(ct.abi), oc.event)
        except (OSError, ValueError, KeyError):
            return []  # the static check says why
    topic0 = event_topic(event)
    key: Path_ = ("orders", "id_encoding")
    url = ch.endpoints[0].reveal()
    rpc = HttpRpc(url, timeout=budget, source=f"chain.{ch.name}")
    logs: list[dict[str, Any]] = []
    lo = hi = 0
    try:
        async with asyncio.timeout(budget * 3):
            head = parse_int(await rpc.call("eth_blockNumber", []))
            hi = head
            floor = max(oc.start_block, head - SAMPLE_BLOCKS)
            step = max(1, min(ch.getlogs_chunk, 10_000))
            calls = 0
            while hi >= floor and len(logs) < SAMPLE_EVENTS and calls < MAX_GETLOGS_CALLS:
                lo = max(floor, hi - step + 1)
                got = await rpc.call("eth_getLogs", [{"address": ct.address, "topics": [topic0],
                                                      "fromBlock": hex(lo), "toBlock": hex(hi)}])
                calls += 1
                if isinstance(got, list):
                    logs = [g for g in got if isinstance(g, dict)] + logs
                hi = lo - 1
            lo = max(lo, floor)
    except Exception as exc:  # noqa: BLE001 - unreachable is a warning with the reason
        return [where.problem(WARNING, key, f"chain {ch.name!r} did not answer "
                                            f"({describe_exception(exc)}); id_encoding not checked "
                                            f"against recent {oc.event} events")]
    finally:
        await rpc.aclose()
    span = f"blocks {lo}..{head}"
    if floor > head:
        return [where.problem(NOTE, key, f"start_block {oc.start_block} is past the chain head {head}; "
                                         f"id_encoding {oc.id_encoding!r} not checked against the chain")]
    if not logs:
        return [where.problem(NOTE, key, f"no {oc.event} event of contract {ct.name!r} in {span}; "
                                         f"id_encoding {oc.id_encoding!r} not checked against the chain")]
    recent = logs[-SAMPLE_EVENTS:]
    seen: dict[str, list[str]] = {}
    for lg in recent:
        topics = lg.get("topics") or []
        if len(topics) < 2:
            return [where.problem(ERROR, ("orders", "event"),
                                  f"{oc.event} events on chain carry no indexed order id (topic 1); "
                                  f"the order id cannot be matched", "an event whose order id is indexed")]
        enc, shown = classify_topic(str(topics[1]), oc.id_pattern)
        seen.setdefault(enc, []).append(shown)
    if oc.id_encoding in seen:
        return []
    best = max(seen, key=lambda e: len(seen[e]))
    examples = ", ".join(repr(s) for s in seen[best][:3])
    decoded = "; ".join(f"{len(v)} as {e}" for e, v in seen.items())
    return [where.problem(
        ERROR, key,
        f"id_encoding {oc.id_encoding!r} matches none of the {len(recent)} most recent {oc.event} events "
        f"of contract {ct.name!r} ({span}): their order ids decode {decoded} (e.g. {examples}); "
        f"settled orders would never be found", f'id_encoding = "{best}"')]


# --------------------------------------------------------------------------- JSON paths (live)


def _shape(value: Any) -> str:
    if isinstance(value, dict):
        keys = list(value)
        return "an object with keys " + ", ".join(map(str, keys[:10])) + (" ..." if len(keys) > 10 else "") \
            if keys else "an empty object"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return f"a {type(value).__name__} ({_short(value)})"


def _short(v: Any, n: int = 60) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, str) else repr(v)
    return text if len(text) <= n else text[: n - 1] + "…"


def _walk_dotted(value: Any, path: str) -> str | None:
    """Why the engine's jsonrpc `_pick(value, path)` ("a.b.0") fails, or None when it matches."""
    done: list[str] = []
    for part in path.split("."):
        if not part:
            continue
        at = ".".join(done) or "the answer"
        if isinstance(value, list | tuple):
            if not re.fullmatch(r"-?\d+", part) or not -len(value) <= int(part) < len(value):
                return f"{at} is {_shape(value)}: no element {part!r}"
            value = value[int(part)]
        elif isinstance(value, dict):
            if part not in value:
                return f"{at} is {_shape(value)}: no key {part!r}"
            value = value[part]
        else:
            return f"{at} is {_shape(value)}: no {part!r} in it"
        done.append(part)
    return None


def _walk_tokens(value: Any, path: str) -> str | None:
    """Why a command check's `read_path(value, path)` fails, or None when it matches."""
    from backends.actions.command import read_path

    try:
        read_path(value, path)
    except KeyError as exc:
        reason = str(exc.args[0]) if exc.args else str(exc)
        return f"{reason} (the output is {_shape(value)})"
    except ValueError as exc:
        return str(exc)
    return None


async def _jsonrpc_answer(url: str, method: str, params: Sequence[Any], budget: float, source: str) -> Any:
    from backends.sources.jsonrpc import HttpRpc

    rpc = HttpRpc(url, timeout=budget, source=source)
    try:
        async with asyncio.timeout(budget):
            return await rpc.call(method, list(params), time_limit=budget)
    finally:
        await rpc.aclose()


async def _http_answer(url: str, headers: Mapping[str, Any], budget: float) -> tuple[int, str, bytes]:
    import aiohttp

    hdrs = {k: (v.reveal() if isinstance(v, Secret) else str(v)) for k, v in headers.items()}
    async with asyncio.timeout(budget), aiohttp.ClientSession() as session, session.get(
        url, headers=hdrs, timeout=aiohttp.ClientTimeout(total=budget)) as resp:
        body = await resp.content.read(4 * 1024 * 1024)
        return resp.status, resp.headers.get("Content-Type", ""), body


async def _command_answer(cmd: Any, budget: float) -> Any:
    from backends.actions.command import CommandTemplate

    tmpl = CommandTemplate(cmd.name, cmd.argv, timeout=min(cmd.timeout, budget), cwd=cmd.cwd)
    if tmpl.placeholders:
        raise LookupError("its command takes placeholders")
    res = await tmpl.run(timeout=min(cmd.timeout, budget))
    if not res.ok:
        raise RuntimeError(res.summary())
    return json.loads(res.stdout)


async def _one_check_problems(i: int, chk: Any, config: Config, where: _Where, budget: float) -> list[Problem]:
    t = chk.timeout or budget
    name = chk.name
    try:
        if chk.kind == "jsonrpc" and chk.path and chk.url is not None and chk.method:
            answer = await _jsonrpc_answer(chk.url.reveal(), chk.method, chk.params, t, f"check.{name}")
            why = _walk_dotted(answer, chk.path)
            if why:
                return [where.problem(ERROR, ("checks", i, "path"),
                                      f"check {name!r}: path {chk.path!r} does not match the answer of "
                                      f"{chk.method}: {why}", "a path of the live answer (a.b.0)")]
        elif chk.kind == "command" and chk.path and chk.command:
            cmd = config.command(chk.command)
            if cmd is None:
                return []
            try:
                answer = await _command_answer(cmd, t)
            except LookupError:
                return []
            why = _walk_tokens(answer, chk.path)
            if why:
                return [where.problem(ERROR, ("checks", i, "path"),
                                      f"check {name!r}: path {chk.path!r} does not match the output of "
                                      f"[[commands]] {cmd.name!r}: {why}", "a path of its JSON output")]
        elif chk.kind == "http" and chk.url is not None and chk.expect and chk.expect.strip()[:1] in "[{":
            try:
                want = json.loads(chk.expect)
            except ValueError:
                return []
            status, ctype, body = await _http_answer(chk.url.reveal(), chk.headers, t)
            try:
                got = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                kind = ctype.split(";")[0] or "no content type"
                return [where.problem(ERROR, ("checks", i, "expect"),
                                      f"check {name!r}: expect is JSON but the endpoint answers HTTP {status} "
                                      f"{kind} that is not JSON ({len(body)} bytes); it can never pass",
                                      "a text expect (a substring), or the URL of the JSON answer")]
            why = _json_shape_mismatch(want, got)
            if why:
                return [where.problem(ERROR, ("checks", i, "expect"),
                                      f"check {name!r}: expect {_short(want)} can never equal the answer: {why}",
                                      "the whole JSON answer (every key), or a text expect")]
    except Exception as exc:  # noqa: BLE001 - an unreachable endpoint is a warning
        what = {"jsonrpc": "path", "command": "path", "http": "expect"}.get(chk.kind, "path")
        return [where.problem(WARNING, ("checks", i, what),
                              f"check {name!r}: no live answer to check {what} against "
                              f"({describe_exception(exc)})")]
    return []


def _json_shape_mismatch(want: Any, got: Any) -> str | None:
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"the answer is {_shape(got)}"
        missing = [k for k in want if k not in got]
        extra = [k for k in got if k not in want]
        if missing or extra:
            parts = []
            if missing:
                parts.append("it has no key " + ", ".join(map(repr, missing)))
            if extra:
                parts.append("it also has " + ", ".join(map(repr, extra[:8])))
            return "; ".join(parts)
        return None
    if isinstance(want, list) and not isinstance(got, list):
        return f"the answer is {_shape(got)}"
    return None


async def live_problems(config: Config, *, filename: str | None = None, budget: float = 5.0) -> list[Problem]:
    """Problems found against the live systems (each call bounded by `timeout`): the orders
    id_encoding against recent release events, JSON paths / JSON expects against one answer."""
    where = _Where(config, filename)
    jobs = [_id_encoding_problems(config, where, budget)]
    jobs += [_one_check_problems(i, chk, config, where, budget) for i, chk in enumerate(config.checks)]
    out: list[Problem] = []
    for got in await asyncio.gather(*jobs):
        out.extend(got)
    return out


async def check_config(config: Config, *, live: bool = False, filename: str | None = None,
                       budget: float = 5.0, path_env: str | None = None) -> list[Problem]:
    """Every problem found: static ones (run in a thread: apprise and file reads), then live ones."""
    out = await asyncio.to_thread(static_problems, config, filename=filename, path_env=path_env)
    if live:
        out += await live_problems(config, filename=filename, budget=budget)
    order = {ERROR: 0, WARNING: 1, NOTE: 2}
    out.sort(key=lambda p: (order.get(p.severity, 3), p.line or 0))
    return out
