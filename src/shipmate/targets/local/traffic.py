"""The local router's per-version counters, their snapshots and their Prometheus text exposition.

Called by `shipmate.targets.local.router` (which counts every request and connection), by the
release engine's analysis through `RouterSnapshot` (requests, 5xx, latency quantiles per version),
and by whatever serves `/metrics`. Pure bookkeeping: this module must not do I/O or read a clock
(the router measures durations and passes them in).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# The Prometheus client libraries' default buckets, in seconds.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class VersionSnapshot:
    """What one version served, at one moment. `buckets` are cumulative (le, count), +Inf last."""

    requests: int
    errors_5xx: int
    by_code: Mapping[int, int]
    buckets: tuple[tuple[float, int], ...]
    latency_sum: float
    open_connections: int
    in_flight: int
    websockets_open: int

    @property
    def error_rate(self) -> float:
        """5xx responses over all responses (0.0 when there were none)."""
        return self.errors_5xx / self.requests if self.requests else 0.0

    def latency_quantile(self, q: float) -> float:
        """The q-quantile of latency in seconds, interpolated in its bucket like PromQL's histogram_quantile."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        total = self.buckets[-1][1] if self.buckets else 0
        if total == 0:
            return math.nan
        rank = q * total
        lower_bound, lower_count = 0.0, 0
        for bound, count in self.buckets:
            if count >= rank:
                if math.isinf(bound):
                    return lower_bound  # like histogram_quantile: the highest finite bucket
                if count == lower_count:
                    return bound
                return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
            lower_bound, lower_count = bound, count
        return lower_bound


@dataclass(frozen=True)
class RouterSnapshot:
    """One router's counters at one moment: per version, plus requests no version could take."""

    service: str
    versions: Mapping[str, VersionSnapshot]
    unrouted: Mapping[int, int]
    client_connections: int

    def delta(self, earlier: RouterSnapshot) -> dict[str, tuple[int, int]]:
        """(requests, 5xx) per version since `earlier`: what an analysis over a window needs."""
        out: dict[str, tuple[int, int]] = {}
        for version, now in self.versions.items():
            before = earlier.versions.get(version)
            out[version] = (
                now.requests - (before.requests if before else 0),
                now.errors_5xx - (before.errors_5xx if before else 0),
            )
        return out


@dataclass
class VersionCounters:
    """Live, mutable counters of one version; only the router's event loop touches them."""

    by_code: dict[int, int] = field(default_factory=dict)
    bucket_counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    latency_sum: float = 0.0
    open_connections: int = 0
    in_flight: int = 0
    websockets_open: int = 0

    def observe(self, code: int, seconds: float) -> None:
        """Count one finished request with its status code and duration."""
        self.by_code[code] = self.by_code.get(code, 0) + 1
        self.bucket_counts[bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def snapshot(self) -> VersionSnapshot:
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*BUCKETS, math.inf), self.bucket_counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return VersionSnapshot(
            requests=sum(self.by_code.values()),
            errors_5xx=sum(n for code, n in self.by_code.items() if 500 <= code <= 599),
            by_code=dict(self.by_code),
            buckets=tuple(cumulative),
            latency_sum=self.latency_sum,
            open_connections=self.open_connections,
            in_flight=self.in_flight,
            websockets_open=self.websockets_open,
        )


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("shipmate_router_requests_total", "counter", "Requests answered, by service, version and status code."),
    ("shipmate_router_request_duration_seconds", "histogram", "Time from request head to end of response."),
    ("shipmate_router_upstream_connections", "gauge", "Open connections to instances of the version."),
    ("shipmate_router_in_flight_requests", "gauge", "Requests being served by the version."),
    ("shipmate_router_websockets_open", "gauge", "WebSocket tunnels open to the version."),
    ("shipmate_router_unrouted_requests_total", "counter", "Requests answered by the router itself (502, 503)."),
    ("shipmate_router_client_connections", "gauge", "Open client connections."),
)


def render_prometheus(snapshots: Iterable[RouterSnapshot]) -> str:
    """The Prometheus text exposition format (0.0.4) of one or more routers' snapshots."""
    routers = list(snapshots)
    samples: dict[str, list[str]] = {name: [] for name, _, _ in _FAMILIES}
    for router in routers:
        svc = _label(router.service)
        for version in sorted(router.versions):
            snap = router.versions[version]
            labels = f'service="{svc}",version="{_label(version)}"'
            for code in sorted(snap.by_code):
                samples["shipmate_router_requests_total"].append(f'{{{labels},code="{code}"}} {snap.by_code[code]}')
            hist = samples["shipmate_router_request_duration_seconds"]
            for bound, count in snap.buckets:
                hist.append(f'_bucket{{{labels},le="{_number(bound)}"}} {count}')
            hist.append(f"_sum{{{labels}}} {_number(snap.latency_sum)}")
            hist.append(f"_count{{{labels}}} {snap.buckets[-1][1]}")
            samples["shipmate_router_upstream_connections"].append(f"{{{labels}}} {snap.open_connections}")
            samples["shipmate_router_in_flight_requests"].append(f"{{{labels}}} {snap.in_flight}")
            samples["shipmate_router_websockets_open"].append(f"{{{labels}}} {snap.websockets_open}")
        for code in sorted(router.unrouted):
            samples["shipmate_router_unrouted_requests_total"].append(
                f'{{service="{svc}",code="{code}"}} {router.unrouted[code]}'
            )
        samples["shipmate_router_client_connections"].append(f'{{service="{svc}"}} {router.client_connections}')
    lines: list[str] = []
    for name, kind, help_text in _FAMILIES:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(name + sample for sample in samples[name])
    return "\n".join(lines) + "\n"
