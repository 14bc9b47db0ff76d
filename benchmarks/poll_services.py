"""Cost of one full docker poll of 30 compose containers (the services part of issue 3's
poll benchmark; queues and breakers are measured by their own scripts).

Starts 30 busybox containers (10 compose services x 3 replicas, half with a healthcheck,
network none) on the engine of the test harness (DOCKER_HOST if reachable, else its own
dockerd), then times `DockerSource.poll()` 20 times and prints the medians of wall time
and CPU time (process CPU: `time.process_time()` covers every thread; plus the CPU of
the worker thread that made the docker calls). No stats. For comparison it also times a
cold poll (list + 30 inspects) and the SDK's `containers.list(sparse=False)`.

    .venv/bin/python benchmarks/poll_services.py [--containers 30] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.engine.monitor import to_thread  # noqa: E402
from backends.sources.docker import DockerSource  # noqa: E402
from tests.harness.docker import DockerEngine, compose_labels, healthcheck  # noqa: E402


def start_containers(engine: DockerEngine, project: str, n: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    per = 3
    jobs = []
    for i in range(n):
        s, r = divmod(i, per)
        hc = healthcheck("true", interval=5.0, retries=3) if s % 2 == 0 else None
        jobs.append((f"{project}-svc{s}-{r + 1}", compose_labels(project, f"svc{s}", r + 1), hc))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda j: engine.run_container(j[0], j[1], healthcheck=j[2]), jobs))


async def measure(fn, rounds: int) -> tuple[float, float, float]:
    """Medians (ms) of wall, process CPU and worker-thread CPU over `rounds` calls."""
    walls, cpus, tcpus = [], [], []
    for _ in range(rounds):
        w0, c0 = time.perf_counter(), time.process_time()
        tcpu = await fn()
        walls.append((time.perf_counter() - w0) * 1000)
        cpus.append((time.process_time() - c0) * 1000)
        tcpus.append(tcpu * 1000)
    return statistics.median(walls), statistics.median(cpus), statistics.median(tcpus)


async def run(n: int, rounds: int) -> None:
    engine = DockerEngine().start()
    project = f"wrbench{uuid.uuid4().hex[:6]}"
    try:
        t0 = time.monotonic()
        start_containers(engine, project, n)
        print(f"engine {engine.base_url} ({'own dockerd' if engine.owned else 'running engine'}), "
              f"{n} containers started in {time.monotonic() - t0:.1f}s")
        src = DockerSource("docker", project=project, base_url=engine.base_url, timeout=10)
        readings = await src.poll()  # warm-up: client, connection pool, inspect cache
        assert sum(len(r.container_ids) for r in readings) == n, readings

        # time the thread's own CPU by wrapping the engine call
        orig = src.engine.call_sync
        thread_cpu = [0.0]

        def timed(fn, *a, **kw):
            t = time.thread_time()
            try:
                return orig(fn, *a, **kw)
            finally:
                thread_cpu[0] = time.thread_time() - t

        src.engine.call_sync = timed  # type: ignore[method-assign]

        async def steady():
            await src.poll()
            return thread_cpu[0]

        async def cold():
            src._inspect_cache.clear()
            await src.poll()
            return thread_cpu[0]

        calls = []

        async def steady_counted():
            r = await steady()
            calls.append(src.last_calls)
            return r

        wall, cpu, tcpu = await measure(steady_counted, rounds)
        print(f"docker poll, {n} containers (steady, 1 list call; engine calls per poll: "
              f"median {statistics.median(calls):g}, max {max(calls)}): "
              f"wall {wall:.1f} ms, CPU {cpu:.1f} ms (worker thread {tcpu:.1f} ms)  [median of {rounds}]")
        wall, cpu, tcpu = await measure(cold, rounds)
        print(f"docker poll, {n} containers (cold: list + {n} inspects): "
              f"wall {wall:.1f} ms, CPU {cpu:.1f} ms (worker thread {tcpu:.1f} ms)")
        client = engine.client

        async def sdk_full():
            def go():
                t0 = time.thread_time()
                client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"},
                                       sparse=False)
                return time.thread_time() - t0

            return await to_thread(go)

        wall, cpu, tcpu = await measure(sdk_full, rounds)
        print(f"for comparison, SDK containers.list(sparse=False) ({n} containers): "
              f"wall {wall:.1f} ms, CPU {cpu:.1f} ms (thread {tcpu:.1f} ms)")
        await src.engine.close()
        # the other service sources of a poll cycle, for the record
        from backends.sources.process import HostSource, ProcessSource, ProcessSpec

        procs = ProcessSource("processes", [ProcessSpec("listener", match=r"node .*listener"),
                                            ProcessSpec("worker", match=r"python .*worker")])
        host = HostSource("host")
        for label, s in (("process scan (2 services, regex on every command line)", procs), ("host", host)):
            await s.poll()

            async def once(s=s):
                await s.poll()
                return 0.0

            wall, cpu, _ = await measure(once, rounds)
            print(f"{label}: wall {wall:.1f} ms, CPU {cpu:.1f} ms")
    finally:
        api = engine.client.api
        for c in api.containers(all=True, filters={"label": f"com.docker.compose.project={project}"}):
            try:
                api.remove_container(c["Id"], force=True)
            except Exception:  # noqa: BLE001
                pass
        if engine.owned:  # our own dockerd: stop it
            engine.close()
        else:  # someone else's engine: only our containers were removed above
            engine.client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    asyncio.run(run(args.containers, args.rounds))


if __name__ == "__main__":
    main()
