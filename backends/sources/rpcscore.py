"""RPC endpoints scored like eRPC: per endpoint over a sliding window, error rate, p50/p70/p95
latency, block lag behind the best head and the chain id; the active endpoint is switched
automatically only when it is clearly worse, and verification reads can need a quorum.

- `RpcScorer` keeps the samples (one per endpoint check: ok, latency, head, chain id) with an
  injected clock (tests never sleep). `decide(active)` returns a switch only when the active
  endpoint is clearly worse than a candidate: error rate > 0.7, or p70 > 3 s and 3x the best
  p70, or >= 16 blocks behind the best head for 30 s; the candidate must itself be healthy
  (hysteresis: it would not be switched away from at once), and at most one automatic
  switch happens per 30 s. `apply()` switches an `EndpointSet` (audited through its
  `on_switch`) and remembers the switch: `ScoreReading.last_switch` is a finding for 10 min.
- `quorum_request(endpoint_set, method, params, quorum)` asks every healthy endpoint and
  returns the answer that at least `quorum` of them gave; otherwise it raises `Disagreement`
  (a `BackendError`: a verdict built on it is unknown), which the scorer keeps as a finding.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from backends.engine.rules import rule
from backends.errors import BackendError
from backends.model import Finding, Reading, Severity


@dataclass(frozen=True, slots=True)
class Policy:
    window_s: float = 60.0
    max_error_rate: float = 0.7
    p70_s: float = 3.0
    p70_factor: float = 3.0
    lag_blocks: int = 16
    lag_for_s: float = 30.0
    switch_every_s: float = 30.0
    finding_for_s: float = 600.0  # an automatic switch stays a finding this long
    min_samples: int = 5  # error rate and latency judged from this many checks in the window


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointScore:
    name: str
    url: str
    samples: int = 0
    error_rate: float = 0.0
    p50_ms: float | None = None
    p70_ms: float | None = None
    p95_ms: float | None = None
    lag: int | None = None
    lagging_s: float = 0.0  # how long it has been >= lag_blocks behind
    chain_id: int | None = None
    active: bool = False
    bad: str = ""  # why it is clearly bad now ("" = fine)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoreReading(Reading):
    """The scores of one chain's endpoints, the last automatic switch and any disagreement."""

    chain: str
    scores: tuple[EndpointScore, ...] = ()
    last_switch: str = ""  # "rpc1 -> rpc2: error rate 0.90 > 0.7" while recent
    last_switch_age_s: float | None = None
    disagreement: str = ""  # a quorum read that failed ("" = none recent)

    def describe(self) -> str:
        """One line for `warroom health`."""
        parts = [f"{'*' if s.active else ''}{s.name} err {s.error_rate:.0%} p70 {fmt_ms(s.p70_ms)}"
                 + (f" lag {s.lag}" if s.lag else "") for s in self.scores]
        text = f"chain {self.chain} scores: " + (", ".join(parts) or "none yet")
        return text + (f"; switched {self.last_switch}" if self.last_switch else "")


@dataclass
class _Track:
    samples: deque[tuple[float, bool, float | None]] = field(default_factory=deque)
    lag: int | None = None
    lag_since: float | None = None
    chain_id: int | None = None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile (q in 0..100) of `values`; None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]


class RpcScorer:
    def __init__(self, chain: str, names: Sequence[str], *, policy: Policy | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.chain = chain
        self.names = list(names)
        self.policy = policy or Policy()
        self.clock = clock
        self.tracks: dict[str, _Track] = {n: _Track() for n in self.names}
        self.urls: dict[str, str] = {n: "" for n in self.names}
        self.last_switch_at: float | None = None
        self.last_switch = ""
        self.disagreement = ""
        self.disagreement_at: float | None = None

    # ------------------------------------------------------------------ samples

    def record(self, name: str, *, ok: bool, latency_s: float | None = None, head: int | None = None,
               best: int | None = None, chain_id: int | None = None) -> None:
        now = self.clock()
        t = self.tracks.setdefault(name, _Track())
        t.samples.append((now, ok, latency_s if ok else None))
        while t.samples and t.samples[0][0] < now - self.policy.window_s:
            t.samples.popleft()
        if chain_id is not None:
            t.chain_id = chain_id
        if ok and head is not None and best is not None:
            t.lag = max(0, best - head)
            if t.lag >= self.policy.lag_blocks:
                t.lag_since = t.lag_since if t.lag_since is not None else now
            else:
                t.lag_since = None

    def observe(self, readings: Sequence[Any]) -> None:
        """One sample per endpoint after an `EndpointSet.check()`: pass its `endpoints` (whether
        each answered; a reading's ok also means healthy, and a lagging endpoint did answer)."""
        best = max((r.head for r in readings if r.ok and r.head is not None), default=None)
        for r in readings:
            name = r.name or r.url
            self.urls[name] = getattr(r, "display", None) or r.url
            if name not in self.names:
                self.names.append(name)
            self.record(name, ok=r.ok, latency_s=(r.latency_ms / 1000.0) if r.latency_ms is not None else None,
                        head=r.head, best=best, chain_id=r.chain_id)

    def note_disagreement(self, text: str) -> None:
        self.disagreement, self.disagreement_at = text, self.clock()

    # ------------------------------------------------------------------ scores

    def score(self, name: str, active: str | None = None) -> EndpointScore:
        now = self.clock()
        t = self.tracks.get(name) or _Track()
        live = [s for s in t.samples if s[0] >= now - self.policy.window_s]
        errors = sum(1 for s in live if not s[1])
        lat = [s[2] * 1000.0 for s in live if s[1] and s[2] is not None]
        lagging = (now - t.lag_since) if t.lag_since is not None else 0.0
        return EndpointScore(
            name=name, url=self.urls.get(name, ""), samples=len(live),
            error_rate=(errors / len(live)) if live else 0.0,
            p50_ms=percentile(lat, 50), p70_ms=percentile(lat, 70), p95_ms=percentile(lat, 95),
            lag=t.lag, lagging_s=lagging, chain_id=t.chain_id, active=name == active,
        )

    def scores(self, active: str | None = None) -> list[EndpointScore]:
        raw = [self.score(n, active) for n in self.names]
        best_p70 = min((s.p70_ms for s in raw if s.p70_ms is not None and s.error_rate <= self.policy.max_error_rate),
                       default=None)
        return [_with_bad(s, self._why_bad(s, best_p70)) for s in raw]

    def _why_bad(self, s: EndpointScore, best_p70: float | None) -> str:
        p = self.policy
        if s.samples >= p.min_samples and s.error_rate > p.max_error_rate:
            return f"error rate {s.error_rate:.2f} > {p.max_error_rate:g}"
        if (s.p70_ms is not None and s.samples >= p.min_samples and s.p70_ms > p.p70_s * 1000 and best_p70 is not None
                and s.p70_ms >= p.p70_factor * best_p70 and s.p70_ms > best_p70):
            return f"p70 {s.p70_ms / 1000:.1f} s > {p.p70_s:g} s and {s.p70_ms / best_p70:.1f}x the best"
        if s.lag is not None and s.lag >= p.lag_blocks and s.lagging_s >= p.lag_for_s:
            return f"{s.lag} blocks behind the best head for {s.lagging_s:.0f} s"
        return ""

    # ------------------------------------------------------------------ switching

    def decide(self, active: str, *, chain_ids_ok: Callable[[EndpointScore], bool] | None = None
               ) -> tuple[str, str] | None:
        """(endpoint to switch to, reason) when the active one is clearly worse, else None."""
        now = self.clock()
        if self.last_switch_at is not None and now - self.last_switch_at < self.policy.switch_every_s:
            return None
        scores = self.scores(active)
        cur = next((s for s in scores if s.name == active), None)
        if cur is None or not cur.bad:
            return None
        ok = [s for s in scores if s.name != active and not s.bad and s.samples and s.error_rate < 0.5
              and (chain_ids_ok is None or chain_ids_ok(s))]
        if not ok:
            return None
        best = min(ok, key=lambda s: (s.error_rate, s.lag or 0, s.p70_ms if s.p70_ms is not None else 1e12))
        return best.name, cur.bad

    def apply(self, endpoints: Any, *, enabled: bool = True) -> Any:
        """Switch `endpoints` (an EndpointSet) when `decide` says so; returns the Switch or None."""
        if not enabled or getattr(endpoints, "pinned", False):
            return None
        active = endpoints.active.name
        expected = getattr(endpoints, "expected_chain_id", None)
        got = self.decide(active, chain_ids_ok=lambda s: expected is None or s.chain_id in (None, expected))
        if got is None:
            return None
        to, why = got
        idx = endpoints.find(to)
        sw = endpoints.switch(idx, f"automatic (score): {active} {why}; {to} is healthy", automatic=True)
        self.last_switch_at = self.clock()
        self.last_switch = f"{active} -> {to}: {why}"
        return sw

    def reading(self, source: str, active: str | None) -> ScoreReading:
        now = self.clock()
        age = (now - self.last_switch_at) if self.last_switch_at is not None else None
        recent = age is not None and age <= self.policy.finding_for_s
        dis_recent = self.disagreement_at is not None and now - self.disagreement_at <= self.policy.finding_for_s
        return ScoreReading(source=source, chain=self.chain, scores=tuple(self.scores(active)),
                            last_switch=self.last_switch if recent else "",
                            last_switch_age_s=age if recent else None,
                            disagreement=self.disagreement if dis_recent else "")


def _with_bad(s: EndpointScore, bad: str) -> EndpointScore:
    from dataclasses import replace

    return replace(s, bad=bad)


# --------------------------------------------------------------------------- quorum reads


class Disagreement(BackendError):
    """Endpoints gave different answers to a verification read and no quorum was reached."""


def _canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


async def quorum_request(endpoints: Any, method: str, params: Sequence[Any], quorum: int, *,
                         time_limit: float | None = None, scorer: RpcScorer | None = None) -> Any:
    """The answer of `method` that at least `quorum` endpoints agree on (every endpoint that
    is healthy is asked; the active one always). Raises Disagreement otherwise."""
    eps = [e for i, e in enumerate(endpoints.endpoints) if i == endpoints.active_index or e.healthy or e.ok]

    async def one(e: Any) -> tuple[str, Any]:
        try:
            return e.name, await e.rpc.call(method, list(params), time_limit=time_limit)
        except Exception as exc:  # noqa: BLE001 - an endpoint that fails does not vote
            return e.name, exc

    answers = await asyncio.gather(*(one(e) for e in eps))
    votes: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    for name, v in answers:
        if isinstance(v, Exception):
            continue
        k = _canon(v)
        votes.setdefault(k, []).append(name)
        values[k] = v
    if votes:
        k, names = max(votes.items(), key=lambda kv: len(kv[1]))
        if len(names) >= quorum:
            return values[k]
    groups = "; ".join(f"{'+'.join(n)} agree" for n in votes.values()) or "no endpoint answered"
    text = (f"{method}: no {quorum} of {len(eps)} endpoints agree ({groups}"
            f"{'; ' + str(sum(1 for _n, v in answers if isinstance(v, Exception))) + ' failed' if any(isinstance(v, Exception) for _n, v in answers) else ''})")
    if scorer is not None:
        scorer.note_disagreement(text)
    raise Disagreement(endpoints.source, text)


# --------------------------------------------------------------------------- rules


@rule(ScoreReading)
def score_rules(r: ScoreReading, ctx: Any) -> list[Finding]:
    out: list[Finding] = []
    if r.last_switch:
        out.append(Finding(
            key=f"rpc-switched:{r.chain}", severity=Severity.P2, source=r.source,
            summary=f"{r.chain}: active RPC endpoint switched automatically ({r.last_switch})",
            evidence=tuple(_score_line(s) for s in r.scores),
            playbook="rpc-degraded", target=f"chain:{r.chain}",
        ))
    if r.disagreement:
        out.append(Finding(
            key=f"rpc-disagree:{r.chain}", severity=Severity.P1, source=r.source,
            summary=f"{r.chain}: endpoints disagree on a verification read",
            evidence=(r.disagreement, *(_score_line(s) for s in r.scores)),
            playbook="rpc-degraded", target=f"chain:{r.chain}",
        ))
    for s in r.scores:
        if s.bad and s.active and not r.last_switch:
            out.append(Finding(
                key=f"rpc-degraded:{r.chain}:{s.name}", severity=Severity.P2, source=r.source,
                summary=f"{r.chain}: active endpoint {s.name} is degraded ({s.bad})",
                evidence=tuple(_score_line(x) for x in r.scores),
                playbook="rpc-degraded", target=f"chain:{r.chain}",
            ))
    return out


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.1f}s" if v >= 1000 else f"{v:.0f}ms"


def _score_line(s: EndpointScore) -> str:
    return (f"{'▶ ' if s.active else ''}{s.name}: err {s.error_rate:.0%}, p50 {fmt_ms(s.p50_ms)} "
            f"p70 {fmt_ms(s.p70_ms)} p95 {fmt_ms(s.p95_ms)}, lag {s.lag if s.lag is not None else '-'}, "
            f"chain id {s.chain_id if s.chain_id is not None else '?'}" + (f" — {s.bad}" if s.bad else ""))


__all__ = ["Disagreement", "EndpointScore", "Policy", "RpcScorer", "ScoreReading", "fmt_ms", "percentile",
           "quorum_request", "score_rules"]


class ScoreSource:
    """The scores of a chain's endpoints as a monitor source (the chain's poll feeds the scorer)."""

    kind = "chain"

    def __init__(self, chain: Any) -> None:
        self.chain = chain
        self.name = f"rpcscore.{chain.spec.name}"
        self.interval = float(chain.interval)
        self.timeout = 2.0

    async def poll(self) -> list[ScoreReading]:
        return [self.chain.scorer.reading(self.name, self.chain.endpoints.active.name)]


def score_sources(chains: dict[str, Any]) -> list[ScoreSource]:
    """A scores source per chain with a choice of endpoints (two or more): one endpoint has
    nothing to be compared with or switched to."""
    return [ScoreSource(c) for c in chains.values()
            if getattr(c, "scorer", None) is not None and len(c.endpoints.endpoints) > 1]
