"""PostgreSQL from pgserver's bundled binaries, on 127.0.0.1:PORT and a unix socket."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from . import free_port, tail, wait_until


class PostgresServer:
    """A throwaway cluster: initdb in a temp dir, pg_ctl start, pg_ctl stop, rm -rf."""

    def __init__(self) -> None:
        self.tmp: Path | None = None
        self.pgdata: Path | None = None
        self.socket_dir: Path | None = None
        self.port: int = 0
        self.host = "127.0.0.1"
        self.user = "postgres"
        self._system_user: str | None = None
        self._bin: Path | None = None
        self.startup_seconds = 0.0
        self._own_runtime: str | None = None

    # -- lifecycle -------------------------------------------------------
    def start(self) -> PostgresServer:
        t0 = time.monotonic()
        self.tmp = Path(tempfile.mkdtemp(prefix="warroom-pg-"))
        atexit.register(self.stop)  # safety net if the fixture teardown never runs
        runtime = self.tmp / "xdg-runtime"
        runtime.mkdir(mode=0o700)
        # pgserver reads XDG_RUNTIME_DIR at import time; only set it if missing.
        if not os.environ.get("XDG_RUNTIME_DIR"):
            os.environ["XDG_RUNTIME_DIR"] = str(runtime)
            self._own_runtime = str(runtime)
        from pgserver._commands import POSTGRES_BIN_PATH

        self._bin = Path(POSTGRES_BIN_PATH)
        self.pgdata = self.tmp / "data"
        self.socket_dir = self.tmp / "sock"
        self.logdir = self.tmp / "log"
        self.pgdata.mkdir()
        self.socket_dir.mkdir()
        self.logdir.mkdir()
        self.tmp.chmod(0o755)
        if os.geteuid() == 0:
            # postgres refuses to run as root: run it as pgserver's system user.
            import pwd
            import stat

            from pgserver.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            self._system_user = "pgserver"
            ensure_user_exists(self._system_user)
            ensure_prefix_permissions(self.pgdata)
            ensure_prefix_permissions(self._bin)
            rx = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
            ensure_folder_permissions(self._bin, rx)
            ensure_folder_permissions(self._bin.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            pw = pwd.getpwnam(self._system_user)
            for p in (self.pgdata, self.socket_dir, self.logdir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self.pgdata.chmod(0o700)
        self._run("initdb", "-D", str(self.pgdata), "--auth=trust", "--encoding=utf8",
                  "-U", self.user, timeout=120)
        self.port = free_port()
        opts = (f"-h 127.0.0.1 -p {self.port} -k {self.socket_dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200")
        self._run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.logdir / "postgres.log"),
                  "-o", opts, "-w", "-t", "60", "start", timeout=90)
        wait_until(self._ready, 30, "postgres")
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        if self.pgdata is None:
            return
        try:
            if (self.pgdata / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "30",
                          "stop", timeout=40)
        except Exception:  # noqa: BLE001
            self._kill_postmaster()
        finally:
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
            if self._own_runtime and os.environ.get("XDG_RUNTIME_DIR") == self._own_runtime:
                del os.environ["XDG_RUNTIME_DIR"]
            self.pgdata = None

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError, TypeError):
            return None

    def _kill_postmaster(self) -> None:
        import signal

        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGQUIT)
        except (OSError, ValueError, IndexError):
            pass

    # -- helpers ---------------------------------------------------------
    def _run(self, exe: str, *args: str, timeout: float = 30,
             check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self._bin / exe), *args]
        kw: dict = {}
        if self._system_user:
            kw["user"] = self._system_user
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              cwd=str(self.tmp), **kw)
        if check and proc.returncode != 0:
            log = tail(self.logdir / "postgres.log") if self.tmp else ""
            raise RuntimeError(f"{exe} failed ({proc.returncode}): "
                               f"{proc.stderr.strip() or proc.stdout.strip()}\n{log}")
        return proc

    def _ready(self) -> bool:
        proc = self._run("pg_isready", "-h", self.host, "-p", str(self.port), "-t", "1",
                         check=False)
        return proc.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        proc = self._run("psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.host,
                         "-p", str(self.port), "-U", self.user, "-d", database, "-c", sql)
        return proc.stdout

    # -- public API ------------------------------------------------------
    def dsn_for(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    @property
    def socket_dsn(self) -> str:
        return f"postgresql://{self.user}@/postgres?host={self.socket_dir}&port={self.port}"

    def fresh_db(self, prefix: str = "t") -> str:
        """Create a new empty database and return its DSN."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)
