"""Canary analysis: measure checks over one interval's counters, and decide from the runs so far.

Called by the release engine at each analysis interval: it takes the router's snapshot of the new
version (through the MetricsProvider port), subtracts the previous one with `window`, measures every
check with `evaluate` (the values of promql and webhook checks come from their providers, fetched
outside this module) and asks `decide` whether the analysis is still running, passed, failed or is
inconclusive. Pure: this module must not do I/O or read a clock; `at` and `seconds` come in as
arguments.

Too little traffic is never a pass: a check measured over fewer than `min_requests` requests, or a
latency with no samples, is inconclusive, and an analysis whose runs include no passing run is
inconclusive however many runs it took.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from shipmate.plan.models import AnalysisPlan, CheckPlan
from shipmate.release.models import Decision, DecisionVerdict, Measurement, Run, Verdict
from shipmate.targets.local.traffic import VersionSnapshot

BUILT_IN = frozenset({"error-rate", "latency", "request-rate"})
DEFAULT_QUANTILE = 0.99


def window(now: VersionSnapshot, before: VersionSnapshot | None) -> VersionSnapshot:
    """What a version served between two snapshots: counters, codes and latency buckets subtracted.

    Gauges (open connections, requests in flight, websockets) are those of `now`. When a counter went
    down (the router restarted) or the buckets differ, `now` alone is the window, like Prometheus'
    `increase` after a counter reset."""
    if before is None:
        return now
    bounds_now = [bound for bound, _ in now.buckets]
    bounds_before = [bound for bound, _ in before.buckets]
    reset = (now.requests < before.requests or now.errors_5xx < before.errors_5xx
             or bounds_now != bounds_before
             or any(a < b for (_, a), (_, b) in zip(now.buckets, before.buckets, strict=True))
             or any(now.by_code.get(code, 0) < n for code, n in before.by_code.items()))
    if reset:
        return now
    codes = {code: n - before.by_code.get(code, 0) for code, n in now.by_code.items()}
    return VersionSnapshot(
        requests=now.requests - before.requests,
        errors_5xx=now.errors_5xx - before.errors_5xx,
        by_code={code: n for code, n in codes.items() if n},
        buckets=tuple((bound, a - b) for (bound, a), (_, b) in zip(now.buckets, before.buckets, strict=True)),
        latency_sum=max(0.0, now.latency_sum - before.latency_sum),
        open_connections=now.open_connections,
        in_flight=now.in_flight,
        websockets_open=now.websockets_open,
    )


def measure(check: CheckPlan, window: VersionSnapshot, *, min_requests: int, seconds: float) -> Measurement:
    """Measure a built-in check (error-rate, latency, request-rate) over one interval's `window`.

    error-rate is 5xx over requests; latency the check's quantile (default p99) from the buckets,
    interpolated like PromQL's histogram_quantile; request-rate requests per second. Fewer than
    `min_requests` requests (or latency samples) is inconclusive; request-rate is exempt, since the
    amount of traffic is what it measures."""
    requests = window.requests
    if check.metric == "error-rate":
        if requests < max(min_requests, 1):
            return _too_few(check, window.error_rate if requests else None,
                            f"error rate over {requests} requests, fewer than the {max(min_requests, 1)} "
                            "needed to judge")
        rate = window.error_rate
        return _judge(check, rate, f"error rate {_pct(rate)} ({window.errors_5xx} of {requests} requests)", _pct)
    if check.metric == "latency":
        q = check.quantile if check.quantile is not None else DEFAULT_QUANTILE
        samples = window.buckets[-1][1] if window.buckets else 0
        name = _quantile_name(q)
        if samples < max(min_requests, 1):
            return _too_few(check, None, f"{name} latency: {samples} samples, fewer than the "
                                         f"{max(min_requests, 1)} needed to judge")
        value = window.latency_quantile(q)
        return _judge(check, value, f"{name} latency {_secs(value)} over {samples} requests", _secs)
    if check.metric == "request-rate":
        if seconds <= 0:
            return _too_few(check, None, f"request rate: no interval to measure over ({seconds} s)")
        rate = requests / seconds
        return _judge(check, rate, f"request rate {rate:.3g}/s ({requests} requests in {seconds:g} s)", _rate)
    raise ValueError(f"check {check.name}: a {check.metric} check is measured by its provider (use measure_value)")


def measure_value(check: CheckPlan, value: float | None, *, detail: str = "") -> Measurement:
    """Apply a check's thresholds to a value its provider fetched (a PromQL query, a webhook).
    None or NaN is inconclusive. A check with neither max nor min (a webhook) passes on a non-zero
    value: webhook providers report 1.0 for pass and 0.0 for fail."""
    what = detail or f"{check.metric} {check.name}"
    if value is None or math.isnan(value):
        return _too_few(check, None, f"{what}: no value")
    if check.max is None and check.min is None:
        verdict: Verdict = "pass" if value else "fail"
        return Measurement(check.name, check.metric, value, verdict,
                           f"{what}: {'pass' if value else 'fail'} ({value:g})")
    return _judge(check, value, f"{what}: {value:.6g}", lambda v: f"{v:.6g}")


def evaluate(plan: AnalysisPlan, window: VersionSnapshot, *, seconds: float, at: float,
             fetched: Mapping[str, float | None] | None = None) -> Run:
    """One interval's run: every check of `plan`, built-ins over `window`, the others from `fetched`
    (by check name; a check missing from it is inconclusive)."""
    values = fetched or {}
    measurements: list[Measurement] = []
    for check in plan.checks:
        if check.metric in BUILT_IN:
            measurements.append(measure(check, window, min_requests=plan.min_requests, seconds=seconds))
        else:
            measurements.append(measure_value(check, values.get(check.name)))
    return Run(at=at, measurements=tuple(measurements))


def decide(runs: Sequence[Run], plan: AnalysisPlan) -> Decision:
    """The analysis' verdict from its runs so far.

    failed as soon as more runs failed than `failure_limit`; inconclusive as soon as more were
    inconclusive than `inconclusive_limit`; after `count` runs, passed if at least one run passed,
    inconclusive if none did; running before that."""
    verdicts = [r.verdict for r in runs]
    failed, inconclusive, passed = verdicts.count("fail"), verdicts.count("inconclusive"), verdicts.count("pass")
    tally = (f"{len(runs)} of {plan.count} runs: {passed} passed, {failed} failed, {inconclusive} inconclusive")

    def decision(verdict: DecisionVerdict, reason: str) -> Decision:
        return Decision(verdict=verdict, reason=reason, runs=tuple(runs), passed=passed,
                        failed=failed, inconclusive=inconclusive, count=plan.count,
                        failure_limit=plan.failure_limit, inconclusive_limit=plan.inconclusive_limit)

    if failed > plan.failure_limit:
        return decision("failed", f"{failed} failed runs, more than the {plan.failure_limit} allowed "
                                  f"({tally}); last failure: {_last(runs, 'fail')}")
    if inconclusive > plan.inconclusive_limit:
        return decision("inconclusive", f"{inconclusive} inconclusive runs, more than the "
                                        f"{plan.inconclusive_limit} allowed ({tally}); last: "
                                        f"{_last(runs, 'inconclusive')}")
    if len(runs) >= plan.count:
        if passed == 0:
            return decision("inconclusive", f"no run passed ({tally})")
        return decision("passed", tally)
    return decision("running", tally)


def _judge(check: CheckPlan, value: float, text: str, fmt: Callable[[float], str]) -> Measurement:
    if check.max is not None and value > check.max:
        return Measurement(check.name, check.metric, value, "fail", f"{text} > max {fmt(check.max)}")
    if check.min is not None and value < check.min:
        return Measurement(check.name, check.metric, value, "fail", f"{text} < min {fmt(check.min)}")
    bounds = [f">= min {fmt(check.min)}" if check.min is not None else "",
              f"<= max {fmt(check.max)}" if check.max is not None else ""]
    return Measurement(check.name, check.metric, value, "pass", f"{text} {' and '.join(b for b in bounds if b)}")


def _too_few(check: CheckPlan, value: float | None, text: str) -> Measurement:
    return Measurement(check.name, check.metric, value, "inconclusive", text)


def _last(runs: Sequence[Run], verdict: str) -> str:
    for run in reversed(runs):
        if run.verdict == verdict:
            return "; ".join(f"{m.check}: {m.detail}" for m in run.measurements if m.verdict == verdict)
    return ""


def _pct(value: float) -> str:
    return f"{value * 100:.2f}%"


def _secs(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.3g} s"


def _rate(value: float) -> str:
    return f"{value:.3g}/s"


def _quantile_name(q: float) -> str:
    return f"p{q * 100:g}"


def combine(snapshots: Sequence[VersionSnapshot]) -> VersionSnapshot | None:
    """One version's counters summed over several services (a canary of the whole application is
    judged on all of its traffic); None when there is nothing to sum."""
    if not snapshots:
        return None
    codes: dict[int, int] = {}
    for snap in snapshots:
        for code, n in snap.by_code.items():
            codes[code] = codes.get(code, 0) + n
    bounds = [b for b, _ in snapshots[0].buckets]
    if any([b for b, _ in s.buckets] != bounds for s in snapshots):
        raise ValueError("cannot combine latency histograms with different buckets")
    buckets = tuple((b, sum(s.buckets[i][1] for s in snapshots)) for i, b in enumerate(bounds))
    return VersionSnapshot(
        requests=sum(s.requests for s in snapshots), errors_5xx=sum(s.errors_5xx for s in snapshots),
        by_code=codes, buckets=buckets, latency_sum=sum(s.latency_sum for s in snapshots),
        open_connections=sum(s.open_connections for s in snapshots), in_flight=sum(s.in_flight for s in snapshots),
        websockets_open=sum(s.websockets_open for s in snapshots))
