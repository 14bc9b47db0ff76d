"""A Docker engine for tests: a reachable one, or our own dockerd (root on Linux).

Our own dockerd runs with --bridge=none --iptables=false --ip6tables=false, its own
data root, exec root, unix socket and containerd namespace under a temp dir, so it
never touches /var/run/docker.sock or another engine's state. It is stopped by PID.
Images are built FROM scratch with busybox-static; containers run with network
`none` or `host` only.
"""

from __future__ import annotations

import atexit
import os
import platform
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from . import stop_process, tail, wait_until

BUSYBOX_IMAGE = "warroom-busybox:test"
LABEL = "org.warroom.test"  # every container we create carries this label
APPLETS = ["sh", "echo", "sleep", "cat", "ls", "true", "false", "env", "ps", "kill", "date",
           "mkdir", "rm", "touch", "test", "[", "grep", "printf", "head", "tail", "wc", "id",
           "hostname", "uptime", "wget", "nc", "seq", "yes", "dd", "top", "free", "tee"]
ALLOWED_NETWORKS = {"none", "host"}
SLEEP_FOREVER = ["sh", "-c", "trap 'exit 0' TERM INT; sleep 2147483647 & wait"]


def compose_labels(project: str, service: str, number: int = 1, **extra: str) -> dict:
    """The labels docker compose puts on a service's containers."""
    labels = {
        "com.docker.compose.project": project,
        "com.docker.compose.service": service,
        "com.docker.compose.container-number": str(number),
        "com.docker.compose.oneoff": "False",
    }
    labels.update(extra)
    return labels


def _is_static_elf(path: Path) -> bool:
    """True if `path` is an ELF binary without a program interpreter (statically linked)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
            return False
        endian = "<" if head[5] == 1 else ">"
        phoff = struct.unpack_from(endian + "Q", head, 0x20)[0]
        phentsize, phnum = struct.unpack_from(endian + "HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        (p_type,) = struct.unpack_from(endian + "I", table, i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def find_static_busybox() -> Path | None:
    for cand in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox") or ""):
        if cand and Path(cand).is_file() and _is_static_elf(Path(cand)):
            return Path(cand)
    return None


def healthcheck(cmd: str, interval: float = 0.2, timeout: float = 2.0, retries: int = 3,
                start_period: float = 0.0) -> dict:
    """A docker healthcheck dict running `cmd` with sh (durations in seconds)."""
    ns = 1_000_000_000
    return {"test": ["CMD-SHELL", cmd], "interval": int(interval * ns),
            "timeout": int(timeout * ns), "retries": retries,
            "start_period": int(start_period * ns)}


_healthcheck = healthcheck


class DockerEngine:
    def __init__(self) -> None:
        self.client = None
        self.base_url: str = ""
        self.owned = False  # True when we started dockerd ourselves
        self.process: subprocess.Popen | None = None
        self.tmp: Path | None = None
        self.storage_driver: str | None = None
        self.busybox_image = BUSYBOX_IMAGE
        self.startup_seconds = 0.0
        self.build_seconds = 0.0
        self._created: list[str] = []

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def env(self) -> dict:
        """Environment for a subprocess (or docker.from_env) that should use this engine."""
        return {"DOCKER_HOST": self.base_url}

    # -- start -----------------------------------------------------------
    def start(self) -> DockerEngine:
        t0 = time.monotonic()
        if not self._use_running_engine():
            self._start_dockerd()
        self.startup_seconds = time.monotonic() - t0
        t1 = time.monotonic()
        self.ensure_busybox_image()
        self.build_seconds = time.monotonic() - t1
        return self

    def _use_running_engine(self) -> bool:
        import docker

        host = os.environ.get("DOCKER_HOST", "")
        if not host and not Path("/var/run/docker.sock").exists():
            return False
        try:
            probe = docker.from_env(timeout=2)
            try:
                probe.ping()
            finally:
                probe.close()
        except Exception:  # noqa: BLE001 - not reachable: start our own
            return False
        self.client = docker.from_env(timeout=60)
        self.base_url = host or "unix:///var/run/docker.sock"
        return True

    def _start_dockerd(self) -> None:
        if platform.system() != "Linux":
            raise RuntimeError("no Docker engine reachable (DOCKER_HOST / /var/run/docker.sock)")
        if os.geteuid() != 0:
            raise RuntimeError("no Docker engine reachable, and not root: cannot start dockerd")
        dockerd = shutil.which("dockerd") or (
            "/usr/sbin/dockerd" if Path("/usr/sbin/dockerd").exists() else None)
        if dockerd is None:
            raise RuntimeError("no Docker engine reachable and dockerd is not installed "
                               "(apt-get install docker.io busybox-static; `make test` does it)")
        errors = []
        for driver in (None, "vfs"):
            try:
                self._launch(dockerd, driver)
                return
            except Exception as exc:  # noqa: BLE001 - try the next storage driver
                errors.append(f"[{driver or 'default'}] {exc}")
                self._stop_dockerd()
        raise RuntimeError("dockerd did not start: " + " | ".join(errors))

    def _launch(self, dockerd: str, driver: str | None) -> None:
        import docker

        self.tmp = Path(tempfile.mkdtemp(prefix="wrd-", dir="/tmp"))
        atexit.register(self._stop_dockerd)  # safety net if the fixture teardown never runs
        (self.tmp / "data").mkdir()
        (self.tmp / "exec").mkdir()
        (self.tmp / "daemon.json").write_text("{}\n")
        sock = self.tmp / "docker.sock"
        ns = f"warroom{os.getpid()}"
        cmd = [dockerd,
               "--bridge=none", "--iptables=false", "--ip6tables=false",
               "--ip-forward=false", "--ip-masq=false", "--userland-proxy=false",
               "--config-file", str(self.tmp / "daemon.json"),
               "--data-root", str(self.tmp / "data"),
               "--exec-root", str(self.tmp / "exec"),
               "--pidfile", str(self.tmp / "docker.pid"),
               "--host", f"unix://{sock}",
               "--containerd-namespace", ns,
               "--containerd-plugins-namespace", ns + "p"]
        if driver:
            cmd.append(f"--storage-driver={driver}")
        log = open(self.tmp / "dockerd.log", "wb")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()
        self.owned = True
        self.base_url = f"unix://{sock}"

        def up():
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd exited ({self.process.returncode}): "
                                   f"{tail(self.tmp / 'dockerd.log', 8)}")
            if not sock.exists():
                return False
            client = docker.DockerClient(base_url=self.base_url, timeout=5)
            try:
                return client.ping()
            finally:
                client.close()

        try:
            wait_until(up, 90, "dockerd", interval=0.1)
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}: {tail(self.tmp / 'dockerd.log', 8)}") from exc
        self.client = docker.DockerClient(base_url=self.base_url, timeout=60)
        self.storage_driver = self.client.info().get("Driver")

    # -- image -----------------------------------------------------------
    def ensure_busybox_image(self) -> str:
        import docker

        try:
            self.client.images.get(self.busybox_image)
            return self.busybox_image
        except docker.errors.ImageNotFound:
            pass
        busybox = find_static_busybox()
        if busybox is None:
            raise RuntimeError("no statically linked busybox (apt-get install busybox-static)")
        ctx = Path(tempfile.mkdtemp(prefix="wrd-ctx-"))
        try:
            bindir = ctx / "bin"
            bindir.mkdir()
            shutil.copy2(busybox, bindir / "busybox")
            for applet in APPLETS:
                (bindir / applet).symlink_to("busybox")
            (ctx / "tmp").mkdir()
            (ctx / "Dockerfile").write_text(
                "FROM scratch\n"
                "COPY bin /bin\n"
                "COPY tmp /tmp\n"
                "ENV PATH=/bin\n"
                'LABEL org.opencontainers.image.title="warroom-busybox"\n'
                'CMD ["/bin/sh"]\n')
            self.client.images.build(path=str(ctx), tag=self.busybox_image, rm=True,
                                     forcerm=True, network_mode="none")
        finally:
            shutil.rmtree(ctx, ignore_errors=True)
        return self.busybox_image

    # -- containers ------------------------------------------------------
    def run_container(self, name: str, labels: dict | None = None,
                      healthcheck: dict | str | None = None, command: list | str | None = None,
                      network_mode: str = "none", restart_policy: dict | str | None = None,
                      image: str | None = None, detach: bool = True, **kwargs):
        """Start a busybox container (removed at session end). Returns the SDK Container.

        `healthcheck` is a docker healthcheck dict or a shell command (checked every
        0.2 s); `restart_policy` a dict or a name ("always", "unless-stopped", ...).
        The default command sleeps until stopped and exits 0 on SIGTERM."""
        if network_mode not in ALLOWED_NETWORKS:
            raise ValueError(f"network_mode must be one of {sorted(ALLOWED_NETWORKS)}")
        if isinstance(healthcheck, str):
            healthcheck = _healthcheck(healthcheck)
        if isinstance(restart_policy, str):
            restart_policy = {"Name": restart_policy}
        all_labels = {LABEL: "1", **(labels or {})}
        container = self.client.containers.run(
            image or self.busybox_image, command if command is not None else SLEEP_FOREVER,
            name=name, labels=all_labels, healthcheck=healthcheck, network_mode=network_mode,
            restart_policy=restart_policy, detach=detach, stop_signal="SIGTERM", **kwargs)
        self._created.append(container.id)
        return container

    def wait_health(self, container, status: str = "healthy", timeout: float = 30) -> str:
        def check():
            container.reload()
            return container.attrs["State"].get("Health", {}).get("Status") == status
        wait_until(check, timeout, f"container {container.name} {status}")
        return status

    def remove_test_containers(self) -> None:
        """Remove every container this harness created (and, on our own engine, all)."""
        if self.client is None:
            return
        import docker

        ids = set(self._created)
        try:
            for c in self.client.containers.list(all=True, filters={"label": LABEL}):
                ids.add(c.id)
        except Exception:  # noqa: BLE001
            pass
        for cid in ids:
            try:
                self.client.api.remove_container(cid, force=True)
            except docker.errors.NotFound:
                pass
            except Exception:  # noqa: BLE001
                pass
        self._created.clear()

    # -- stop ------------------------------------------------------------
    def close(self) -> None:
        try:
            self.remove_test_containers()
        finally:
            if self.client is not None:
                self.client.close()
                self.client = None
            self._stop_dockerd()

    def _stop_dockerd(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=30)
            self.process = None
        if self.tmp is not None:
            self._unmount_under(self.tmp)
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    @staticmethod
    def _unmount_under(root: Path) -> None:
        prefix = str(root) + "/"
        try:
            mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        except OSError:
            return
        for mnt in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)


__all__ = ["BUSYBOX_IMAGE", "DockerEngine", "compose_labels", "healthcheck"]
