"""A full warroom config against the harness services: Postgres (orders, breakers),
Redis (a queue), anvil (the Escrow contract), a real process, a log file.

Used by tests that need the whole engine (tests/test_engine.py, tests/test_headless.py):

    s = build_stack(pg, redis_server, anvil, escrow, tmp_path, name="engine", prefix="ord")
    s.config        # loaded Config
    s.config_path   # the same config written to <tmp>/warroom.toml (for the CLI)
    s.close()       # stops the process it started

Order ids are `<prefix>-1` .. `<prefix>-4`; `<prefix>-1` is released on chain. Use a
different prefix per module: the chain is shared by the session and Escrow.release
does not repeat for one order id.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE orders (id text primary key, state text not null, amount numeric default 0,
  created_at timestamptz not null default now(), updated_at timestamptz default now(), notes text,
  block_number bigint, tx_hash text);
CREATE INDEX orders_state_created ON orders (state, created_at);
CREATE TABLE circuit_breaker_state (trigger_id text primary key, state text not null,
  failure_count int not null default 0, last_failure_at timestamptz);
INSERT INTO orders (id, state, created_at) VALUES
  ('{p}-1', 'PENDING', now() - interval '2 hours'),
  ('{p}-2', 'PENDING', now() - interval '30 minutes'),
  ('{p}-3', 'SETTLED', now() - interval '1 hour'),
  ('{p}-4', 'PENDING', now());
INSERT INTO circuit_breaker_state VALUES ('webhook-a', 'open', 7, now()), ('webhook-b', 'closed', 0, null);
"""

CONFIG = """
[warroom]
name = "{name}-test"
environment = "test"
refresh = "1s"
timeout = "3s"
audit_path = "{audit}"
state_dir = "{state}"
operator = "tester"

[postgres.main]
dsn = "{dsn}"

[redis.main]
url = "{redis_url}"

[chain.local]
kind = "evm"
chain_id = {chain_id}
endpoints = ["{anvil_url}"]
confirmations = 1

[[chain.local.contracts]]
name = "escrow"
address = "{escrow_address}"
abi = "{abi}"
pausable = true

[[commands]]
name = "restart-listener"
argv = ["{python}", "-c", "import sys; print('restarted', sys.argv[1])", "{{service}}"]

[[services]]
name = "listener"
kind = "process"
match = "{marker}"
restart_command = "restart-listener"
logs = "{logfile}"

[[queues]]
name = "action_jobs"
redis = "main"
key = "{name}_test_jobs"

[breakers]
postgres = "main"
table = "circuit_breaker_state"

[orders]
postgres = "main"
notes_column = "notes"
block_column = "block_number"
tx_column = "tx_hash"
chain = "local"
contract = "escrow"
stuck_after = "10m"
"""


@dataclass
class Stack:
    config: Any
    config_text: str
    config_path: Path
    dsn: str
    tmp: Path
    proc: subprocess.Popen
    logfile: Path
    prefix: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def audit_path(self) -> Path:
        return self.tmp / "audit.jsonl"

    def variant(self, filename: str, **overrides: Any) -> Path:
        """Write a copy of the config with some template values replaced (e.g. a dead DSN)."""
        text = CONFIG.format(**{**self.values, **overrides})
        path = self.tmp / filename
        path.write_text(text)
        return path

    def sql(self, query: str, *args: Any) -> list:
        """Run one query on the stack's database (tests: set up and check rows)."""

        async def go():
            import asyncpg

            conn = await asyncpg.connect(self.dsn)
            try:
                return await conn.fetch(query, *args)
            finally:
                await conn.close()

        return asyncio.run(go())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


def build_stack(pg, redis_server, anvil, escrow, tmp: Path, *, name: str = "engine",
                prefix: str = "ord") -> Stack:
    from backends.config import load_config_text

    dsn = pg.fresh_db(name)

    async def setup():
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(SCHEMA.format(p=prefix))
        finally:
            await conn.close()

    asyncio.run(setup())
    abi = tmp / "Escrow.json"
    abi.write_text(json.dumps(escrow.abi))
    logfile = tmp / "listener.log"
    logfile.write_text("")
    # a real process to find by command line
    marker = f"warroom-test-{name}-listener-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", marker])
    escrow.release(f"{prefix}-1", 5)
    values = dict(
        name=name, audit=tmp / "audit.jsonl", state=tmp / "state", dsn=dsn, redis_url=redis_server.url,
        chain_id=anvil.chain_id, anvil_url=anvil.url, escrow_address=escrow.address, abi=abi,
        python=sys.executable, marker=marker, logfile=logfile,
    )
    text = CONFIG.format(**values)
    path = tmp / "warroom.toml"
    path.write_text(text)
    config = load_config_text(text, str(path))
    return Stack(config=config, config_text=text, config_path=path, dsn=dsn, tmp=tmp, proc=proc,
                 logfile=logfile, prefix=prefix, values=values)
