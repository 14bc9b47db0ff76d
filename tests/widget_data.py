"""Hand-built model objects and a tiny App for the pure pane tests (Pilot and snapshots).

Everything is frozen: the snapshot time is NOW and readings are a few seconds older, so
ages, uptimes and SLA clocks render the same on every run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from textual.app import App, ComposeResult
from textual.theme import Theme

from backends.model import (
    BalanceReading,
    BreakerReading,
    BreakersReading,
    ChainReading,
    CheckReading,
    ContractReading,
    CursorReading,
    EndpointReading,
    Finding,
    HostReading,
    LongQuery,
    Order,
    OrdersReading,
    OrderVerdict,
    PostgresReading,
    QueueReading,
    RedisReading,
    ServiceReading,
    Severity,
    Snapshot,
    SourceState,
    SourceStatus,
    Status,
    Verdict,
)

NOW = datetime(2026, 11, 22, 8, 0, 0, tzinfo=UTC)

STATUS_VARS = {"status-ok": "#50b870", "status-warn": "#e0a030", "status-crit": "#ff5f5f",
               "status-unknown": "#8a93a0", "status-stale": "#6b7280"}

TEST_THEME = Theme(
    name="widget-test", primary="#4f9bd9", secondary="#2a5d8a", accent="#e0a030",
    warning="#e0a030", error="#e0505a", success="#50b870", foreground="#dcdfe4",
    background="#15181d", surface="#1c2027", panel="#262b33", dark=True, variables=STATUS_VARS,
)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


class PaneApp(App):
    """Hosts one pane; its theme defines the semantic status variables."""

    CSS = "Screen { background: $background; }"

    def __init__(self, pane, *, read_only: bool = False, snapshot: Snapshot | None = None,
                 clock=None) -> None:
        super().__init__()
        self.pane = pane
        self.read_only = read_only
        self.initial = snapshot
        self.clock = clock or (lambda: NOW)
        self.messages: list = []

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(STATUS_VARS)

    def compose(self) -> ComposeResult:
        yield self.pane

    def on_mount(self) -> None:
        self.register_theme(TEST_THEME)
        self.theme = "widget-test"
        if self.initial is not None:
            self.pane.show(self.initial)

    def on_action_requested(self, message) -> None:
        self.messages.append(message)

    def on_detail_requested(self, message) -> None:
        self.messages.append(message)


def status(name: str, kind: str, state: SourceState = SourceState.OK, reason: str = "",
           last_good: float | None = 2, interval: float = 2.0) -> SourceStatus:
    return SourceStatus(name=name, kind=kind, state=state, reason=reason,
                        last_good=ago(last_good) if last_good is not None else None,
                        last_attempt=ago(1), failures=3 if state is SourceState.DEGRADED else 0,
                        interval=interval)


def snap(sources: list[SourceStatus], readings: dict[str, tuple], findings=(), at: datetime = NOW) -> Snapshot:
    return Snapshot(at=at, sources={s.name: s for s in sources}, readings=readings, findings=tuple(findings))


# --------------------------------------------------------------------------- services


def services(at: float = 2) -> tuple[ServiceReading, ...]:
    return (
        ServiceReading(source="docker", at=ago(at), name="api-gateway", state="running", health="healthy",
                       status=Status.OK, uptime_s=3720, restarts=0, image="reg.example.com/erc8004/api-gateway:1.4.2",
                       latency_ms=12.4, depends_on=("postgres", "redis")),
        ServiceReading(source="docker", at=ago(at), name="event-processor", state="running", health="unhealthy",
                       status=Status.CRIT, uptime_s=400, restarts=4, image="erc8004/event-processor:1.4.2",
                       depends_on=("redis", "postgres")),
        ServiceReading(source="docker", at=ago(at), name="postgres", state="running", health="healthy",
                       status=Status.OK, uptime_s=93_600, restarts=0, image="postgres:16-alpine"),
        ServiceReading(source="docker", at=ago(at), name="redis", state="running", health=None,
                       status=Status.OK, uptime_s=93_600, restarts=1, image="redis:7"),
        ServiceReading(source="docker", at=ago(at), name="action-worker", state="exited", exit_code=137,
                       status=Status.CRIT, restarts=2, image="erc8004/worker:1.4.2", depends_on=("redis",)),
    )


def infra(at: float = 2) -> dict[str, tuple]:
    return {
        "postgres.main": (PostgresReading(source="postgres.main", at=ago(at), latency_ms=3.2, active_connections=12,
                                          total_connections=58, max_connections=100, server_version="16.4",
                                          long_queries=(LongQuery(pid=4242, duration_s=412, state="active",
                                                                  query="SELECT * FROM orders"),)),),
        "redis.main": (RedisReading(source="redis.main", at=ago(at), latency_ms=0.8, used_memory_bytes=312 * 2**20,
                                    max_memory_bytes=500 * 2**20, connected_clients=14, version="7.2.4"),),
        "host": (HostReading(source="host", at=ago(at), cpu_percent=35.0, mem_percent=62.0, disks=(("/", 71.0),)),),
        "check.health": (CheckReading(source="check.health", at=ago(at), name="gateway-health", kind="http",
                                      ok=False, status=Status.CRIT, http_status=503, latency_ms=41.0,
                                      detail="HTTP 503 from /api/v1/health"),),
    }


def services_snapshot(state: SourceState = SourceState.OK) -> Snapshot:
    """The services and infrastructure readings with the rules' verdicts on them (as the
    monitor hands a pane its snapshot: rows show what the rules decided), judged by a fresh
    engine's settings (the rules' defaults)."""
    from dataclasses import replace

    from backends.engine.rules import RuleContext, RuleSettings, evaluate

    infra_sources = [status("postgres.main", "postgres"), status("redis.main", "redis"), status("host", "host"),
                     status("check.health", "http")]
    if state is SourceState.DEGRADED:
        s = snap([status("docker", "docker", state, "connection refused at /var/run/docker.sock", 192),
                  *infra_sources], {"docker": services(at=192), **infra()})
    else:
        s = snap([status("docker", "docker"), *infra_sources], {"docker": services(), **infra()})
    return replace(s, findings=tuple(evaluate(s, RuleContext(settings=RuleSettings()))))


# --------------------------------------------------------------------------- queues


def queues(at: float = 2) -> tuple[QueueReading, ...]:
    return (
        QueueReading(source="queues", at=ago(at), name="action_jobs", key="action_jobs", depth=12_480,
                     oldest_age_s=754, status=Status.WARN,
                     history=(800, 1200, 2500, 4000, 6100, 7900, 9400, 11_000, 12_480),
                     drain_rate=-14.2, dead_letter_key="action_jobs:dead", dead_letter_depth=37),
        QueueReading(source="queues", at=ago(at), name="webhooks", key="webhooks", depth=42,
                     oldest_age_s=3, status=Status.OK, history=(50, 40, 60, 45, 42), drain_rate=8.0,
                     time_to_drain_s=5, dead_letter_key="webhooks:dead", dead_letter_depth=0),
        QueueReading(source="queues", at=ago(at), name="emails", key="emails", type="stream", depth=0,
                     pending=0, status=Status.OK, history=(0, 0, 0), drain_rate=0.0),
    )


def queues_snapshot(state: SourceState = SourceState.OK) -> Snapshot:
    if state is SourceState.DEGRADED:
        return snap([status("queues", "queues", state, "timed out after 2s (redis 127.0.0.1:6379)", 75)],
                    {"queues": queues(at=75)})
    return snap([status("queues", "queues")], {"queues": queues()})


# --------------------------------------------------------------------------- breakers


def breakers(at: float = 2) -> BreakersReading:
    items = (
        BreakerReading(source="breakers", at=ago(at), name="webhook-delivery", state="closed", failures=0,
                       last_failure_at=ago(86_400 * 2)),
        BreakerReading(source="breakers", at=ago(at), name="trigger-7f3a", state="open", failures=12,
                       last_failure_at=ago(31), opened_at=ago(31), half_open_in_s=29),
        BreakerReading(source="breakers", at=ago(at), name="trigger-0b91", state="half-open", failures=5,
                       last_failure_at=ago(95)),
        BreakerReading(source="breakers", at=ago(at), name="trigger-c210", state="open", failures=7,
                       last_failure_at=ago(48), half_open_in_s=12),
        BreakerReading(source="breakers", at=ago(at), name="price-oracle", state="closed", failures=1,
                       last_failure_at=ago(3600)),
    )
    return BreakersReading(source="breakers", at=ago(at), breakers=items, total=1000, open=2, half_open=1)


def breakers_snapshot(state: SourceState = SourceState.OK) -> Snapshot:
    if state is SourceState.DEGRADED:
        return snap([status("breakers", "breakers", state,
                            "connection refused at 127.0.0.1:5432", 300)], {"breakers": (breakers(300),)})
    return snap([status("breakers", "breakers")], {"breakers": (breakers(),)})


# --------------------------------------------------------------------------- orders


def orders(at: float = 2) -> OrdersReading:
    def order(oid: str, age: float, verdict: OrderVerdict | None) -> Order:
        return Order(id=oid, state="PENDING", created_at=ago(age), age_s=age, verdict=verdict)

    oldest = (
        order("ord-1001", 3 * 3600 + 720, OrderVerdict(order_id="ord-1001", verdict=Verdict.RELEASED, final=True,
                                                       tx_hash="0x8f2c4b1e9a7d3c5b6e0f1a2b3c4d5e6f7a8b9c0d",
                                                       confirmations=480)),
        order("ord-1002", 2 * 3600 + 60, OrderVerdict(order_id="ord-1002", verdict=Verdict.RELEASED, final=False,
                                                      tx_hash="0x11aa22bb33cc44dd55ee66ff7788990011223344",
                                                      confirmations=12)),
        order("ord-1003", 5400, OrderVerdict(order_id="ord-1003", verdict=Verdict.NOT_RELEASED)),
        order("ord-1004", 1500, OrderVerdict(order_id="ord-1004", verdict=Verdict.UNKNOWN, reason="rpc down")),
        order("ord-1005", 900, None),
    )
    return OrdersReading(source="orders", at=ago(at), stuck_count=17, oldest_age_s=3 * 3600 + 720, oldest=oldest,
                         by_state_24h={"SETTLED": 3412, "PENDING": 17, "FAILED": 2}, stuck_after_s=600)


def orders_snapshot(state: SourceState = SourceState.OK) -> Snapshot:
    if state is SourceState.DEGRADED:
        return snap([status("orders", "orders", state, "connection refused at 127.0.0.1:5432", 420)],
                    {"orders": (orders(420),)})
    return snap([status("orders", "orders")], {"orders": (orders(),)})


# --------------------------------------------------------------------------- chain


def chain(at: float = 2) -> tuple:
    eps = (
        EndpointReading(source="chain.polygon", at=ago(at), chain="polygon", url="https://rpc-a.example/***",
                        name="primary", ok=True, active=True, head=64_120_455, lag=0, chain_id=137,
                        chain_id_ok=True, latency_ms=84),
        EndpointReading(source="chain.polygon", at=ago(at), chain="polygon", url="http://127.0.0.1:8545",
                        name="backup", ok=True, head=64_120_452, lag=3, chain_id=137, chain_id_ok=True,
                        latency_ms=12),
        EndpointReading(source="chain.polygon", at=ago(at), chain="polygon", url="http://127.0.0.1:8546",
                        name="archive", ok=False, chain_id=1, chain_id_ok=False, error="wrong chain id"),
    )
    contracts = (ContractReading(source="chain.polygon", at=ago(at), chain="polygon", name="escrow",
                                 address="0x5FbDB2315678afecb367f032d93F642f64180aa3", code_present=True,
                                 paused=False),)
    balances = (BalanceReading(source="chain.polygon", at=ago(at), chain="polygon", name="arbiter",
                               address="0x01", balance=412_000_000_000_000_000, display="0.412 POL",
                               minimum=500_000_000_000_000_000, symbol="POL", status=Status.WARN),)
    c = ChainReading(source="chain.polygon", at=ago(at), chain="polygon", expected_chain_id=137,
                     active_url="https://rpc-a.example/***", endpoints=eps, contracts=contracts, balances=balances)
    cursor = CursorReading(source="orders", at=ago(at), name="listener", block=64_120_300, head=64_120_455,
                           gap_blocks=155, gap_s=310)
    return c, cursor


def chain_snapshot(state: SourceState = SourceState.OK) -> Snapshot:
    if state is SourceState.DEGRADED:
        c, cursor = chain(at=130)
        return snap([status("chain.polygon", "evm", state, "all endpoints failed: timed out after 5s", 130),
                     status("orders", "orders")], {"chain.polygon": (c,), "orders": (cursor,)})
    c, cursor = chain()
    return snap([status("chain.polygon", "evm"), status("orders", "orders")],
                {"chain.polygon": (c,), "orders": (cursor,)})


# --------------------------------------------------------------------------- findings


def findings() -> tuple[Finding, ...]:
    return (
        Finding(key="queue:action_jobs:depth", severity=Severity.P2, source="queues",
                summary="action_jobs depth 12,480 (high: >= 10,000)", playbook="queue-backlog",
                target="queue:action_jobs", since=ago(754)),
        Finding(key="orders:stuck", severity=Severity.P1, source="orders",
                summary="17 orders stuck > 10m (oldest 3h12m)", playbook="stuck-orders", since=ago(1800)),
        Finding(key="service:event-processor:unhealthy", severity=Severity.P0, source="docker",
                summary="event-processor unhealthy, 4 restarts", playbook="service-down",
                target="service:event-processor", since=ago(400)),
        Finding(key="breakers:open", severity=Severity.P3, source="breakers", summary="2 breakers open",
                playbook="breakers-open", target="breaker:trigger-7f3a", since=ago(31)),
    )


def findings_snapshot(state: SourceState = SourceState.OK) -> Snapshot:
    srcs = [status("docker", "docker"), status("queues", "queues"), status("orders", "orders"),
            status("breakers", "breakers")]
    if state is SourceState.DEGRADED:
        srcs[0] = status("docker", "docker", state, "connection refused at /var/run/docker.sock", 192)
    return snap(srcs, {}, findings())


class Step:
    def __init__(self, text: str, action: str | None, key: str | None) -> None:
        self.text, self.action, self.key = text, action, key


HINTS = {
    "service-down": Step("Restart the service", "service.restart", "r"),
    "stuck-orders": Step("Verify releases on chain", "orders.verify", "v"),
    "queue-backlog": Step("Scale action workers", "service.scale", "s"),
}


def hint(finding: Finding):
    step = HINTS.get(finding.playbook or "")
    return (step, step.key) if step else None


EMPTY = Snapshot(at=NOW)
