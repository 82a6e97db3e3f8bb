"""Canary analysis on hand-made counters: windows, each metric, thresholds, runs and decisions."""

from __future__ import annotations

import itertools
import math

import pytest

from shipmate.plan.models import AnalysisPlan, CheckPlan
from shipmate.release import analysis
from shipmate.release.models import Measurement, Run, Verdict
from shipmate.targets.local.traffic import VersionCounters, VersionSnapshot

ERROR_RATE = CheckPlan("error-rate", "error-rate", None, None, None, 0.05, None)
P99 = CheckPlan("p99-latency", "latency", 0.99, None, None, 0.5, None)
RATE = CheckPlan("traffic", "request-rate", None, None, None, None, 1.0)
PROMQL = CheckPlan("saturation", "promql", None, "sum(rate(x[1m]))", None, 0.8, None)
WEBHOOK = CheckPlan("qa", "webhook", None, None, "https://qa.example.com/verdict", None, None)


def served(*batches: tuple[int, int, float]) -> VersionSnapshot:
    """Counters after serving `count` requests with status `code` taking `seconds`, per batch."""
    counters = VersionCounters()
    for count, code, seconds in batches:
        for _ in range(count):
            counters.observe(code, seconds)
    return counters.snapshot()


def plan(count: int = 5, failure_limit: int = 1, inconclusive_limit: int = 1, min_requests: int = 50,
         *checks: CheckPlan) -> AnalysisPlan:
    return AnalysisPlan(interval_seconds=30.0, count=count, failure_limit=failure_limit,
                        inconclusive_limit=inconclusive_limit, min_requests=min_requests,
                        checks=checks or (ERROR_RATE,))


def test_window_subtracts_counters_codes_and_buckets() -> None:
    before = served((100, 200, 0.02), (5, 500, 0.02))
    now = served((100, 200, 0.02), (5, 500, 0.02), (50, 200, 0.3), (10, 503, 0.02))
    w = analysis.window(now, before)
    assert (w.requests, w.errors_5xx, dict(w.by_code)) == (60, 10, {200: 50, 503: 10})
    assert w.buckets[-1][1] == 60
    assert dict(w.buckets)[0.025] == 10
    assert dict(w.buckets)[0.5] == 60
    assert w.latency_sum == pytest.approx(50 * 0.3 + 10 * 0.02)
    assert analysis.window(now, None) is now


def test_window_after_a_counter_reset_is_the_new_counters() -> None:
    before = served((500, 200, 0.02))
    restarted = served((40, 200, 0.02))
    assert analysis.window(restarted, before) is restarted


def test_ten_percent_errors_over_200_requests_fails_a_5_percent_max() -> None:
    m = analysis.measure(ERROR_RATE, served((180, 200, 0.01), (20, 500, 0.01)), min_requests=50, seconds=30)
    assert m == Measurement("error-rate", "error-rate", 0.1, "fail",
                            "error rate 10.00% (20 of 200 requests) > max 5.00%")


def test_low_error_rate_passes() -> None:
    m = analysis.measure(ERROR_RATE, served((199, 200, 0.01), (1, 502, 0.01)), min_requests=50, seconds=30)
    assert (m.verdict, m.value) == ("pass", 0.005)
    assert m.detail == "error rate 0.50% (1 of 200 requests) <= max 5.00%"


def test_error_rate_at_the_threshold_passes() -> None:
    m = analysis.measure(ERROR_RATE, served((95, 200, 0.01), (5, 500, 0.01)), min_requests=50, seconds=30)
    assert (m.verdict, m.value) == ("pass", 0.05)


@pytest.mark.parametrize("min_requests", [50, 0])
def test_three_requests_is_inconclusive_even_with_no_errors(min_requests: int) -> None:
    few = served((3, 200, 0.01))
    m = analysis.measure(ERROR_RATE, few, min_requests=50, seconds=30)
    assert m.verdict == "inconclusive"
    assert m.value == 0.0
    assert "3 requests, fewer than the 50 needed" in m.detail
    # no traffic at all is never a pass, whatever min_requests says
    none = analysis.measure(ERROR_RATE, served(), min_requests=min_requests, seconds=30)
    assert (none.verdict, none.value) == ("inconclusive", None)


def test_three_failing_requests_are_inconclusive_not_failed() -> None:
    m = analysis.measure(ERROR_RATE, served((3, 500, 0.01)), min_requests=50, seconds=30)
    assert (m.verdict, m.value) == ("inconclusive", 1.0)


def test_latency_p99_interpolates_in_its_bucket() -> None:
    # 90 requests in (0.01, 0.025], 10 in (0.25, 0.5]: p99 is 9/10 of the way through (0.25, 0.5]
    w = served((90, 200, 0.02), (10, 200, 0.3))
    m = analysis.measure(P99, w, min_requests=50, seconds=30)
    assert m.value == pytest.approx(0.475)
    assert (m.verdict, m.detail) == ("pass", "p99 latency 475 ms over 100 requests <= max 500 ms")
    p50 = CheckPlan("p50", "latency", 0.5, None, None, 0.01, None)
    slow = analysis.measure(p50, w, min_requests=50, seconds=30)
    assert slow.value == pytest.approx(0.01 + 0.015 * 50 / 90)
    assert slow.verdict == "fail"
    assert slow.detail == "p50 latency 18 ms over 100 requests > max 10 ms"


def test_latency_fails_above_max_and_defaults_to_p99() -> None:
    w = served((100, 200, 0.7))
    no_quantile = CheckPlan("latency", "latency", None, None, None, 0.5, None)
    m = analysis.measure(no_quantile, w, min_requests=50, seconds=30)
    assert m.verdict == "fail"
    assert m.value == pytest.approx(0.5 + 0.5 * 0.99)
    assert m.detail.startswith("p99 latency 995 ms over 100 requests > max 500 ms")


def test_latency_without_samples_is_inconclusive() -> None:
    m = analysis.measure(P99, served(), min_requests=0, seconds=30)
    assert (m.verdict, m.value) == ("inconclusive", None)
    assert "0 samples" in m.detail
    few = analysis.measure(P99, served((10, 200, 9.0)), min_requests=50, seconds=30)
    assert few.verdict == "inconclusive"


def test_request_rate_measures_traffic_itself() -> None:
    assert analysis.measure(RATE, served((60, 200, 0.01)), min_requests=50, seconds=30).verdict == "pass"
    low = analysis.measure(RATE, served((3, 200, 0.01)), min_requests=50, seconds=30)
    assert (low.verdict, low.value) == ("fail", 0.1)
    assert low.detail == "request rate 0.1/s (3 requests in 30 s) < min 1/s"
    assert analysis.measure(RATE, served((3, 200, 0.01)), min_requests=50, seconds=0).verdict == "inconclusive"


def test_provider_checks_are_not_measured_here() -> None:
    with pytest.raises(ValueError, match="measured by its provider"):
        analysis.measure(PROMQL, served((100, 200, 0.01)), min_requests=50, seconds=30)


@pytest.mark.parametrize(
    ("check", "value", "verdict"),
    [
        (PROMQL, 0.5, "pass"),
        (PROMQL, 0.8, "pass"),
        (PROMQL, 0.81, "fail"),
        (PROMQL, None, "inconclusive"),
        (PROMQL, math.nan, "inconclusive"),
        (WEBHOOK, 1.0, "pass"),
        (WEBHOOK, 0.0, "fail"),
        (WEBHOOK, None, "inconclusive"),
        (CheckPlan("band", "promql", None, "q", None, 10.0, 2.0), 1.0, "fail"),
        (CheckPlan("band", "promql", None, "q", None, 10.0, 2.0), 5.0, "pass"),
    ],
)
def test_measure_value_applies_thresholds(check: CheckPlan, value: float | None, verdict: Verdict) -> None:
    m = analysis.measure_value(check, value)
    assert (m.check, m.metric, m.verdict) == (check.name, check.metric, verdict)


def test_evaluate_measures_every_check_and_takes_fetched_values() -> None:
    p = plan(5, 1, 1, 50, ERROR_RATE, P99, PROMQL, WEBHOOK)
    run = analysis.evaluate(p, served((200, 200, 0.02)), seconds=30, at=1000.0, fetched={"saturation": 0.2})
    assert run.at == 1000.0
    assert [(m.check, m.verdict) for m in run.measurements] == [
        ("error-rate", "pass"), ("p99-latency", "pass"), ("saturation", "pass"), ("qa", "inconclusive")]
    assert run.verdict == "inconclusive"


def _run(*verdicts: Verdict) -> Run:
    return Run(at=0.0, measurements=tuple(Measurement(f"c{i}", "error-rate", 0.0, v, v)
                                          for i, v in enumerate(verdicts)))


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        (("pass", "pass"), "pass"),
        (("pass", "inconclusive"), "inconclusive"),
        (("inconclusive", "fail"), "fail"),
        (("pass", "fail", "pass"), "fail"),
        ((), "inconclusive"),
    ],
)
def test_run_verdict(verdicts: tuple[Verdict, ...], expected: Verdict) -> None:
    assert _run(*verdicts).verdict == expected


def test_decide_examples() -> None:
    p = plan(count=3, failure_limit=1, inconclusive_limit=1)
    good, bad, unsure = _run("pass"), _run("fail"), _run("inconclusive")
    assert analysis.decide([], p).verdict == "running"
    assert analysis.decide([good, good], p).verdict == "running"
    assert analysis.decide([good, bad, good], p).verdict == "passed"
    failed = analysis.decide([bad, bad], p)
    assert failed.verdict == "failed"
    assert (failed.failed, failed.passed, failed.inconclusive, failed.count) == (2, 0, 0, 3)
    assert failed.reason.startswith("2 failed runs, more than the 1 allowed (2 of 3 runs: 0 passed, 2 failed")
    assert failed.runs == (bad, bad)
    assert analysis.decide([unsure, good, unsure], p).verdict == "inconclusive"
    assert analysis.decide([good, unsure, good], p).verdict == "passed"


def test_decide_never_passes_without_a_passing_run() -> None:
    lenient = plan(count=3, failure_limit=5, inconclusive_limit=5)
    d = analysis.decide([_run("inconclusive")] * 3, lenient)
    assert (d.verdict, d.reason) == ("inconclusive", "no run passed (3 of 3 runs: 0 passed, 0 failed, 3 inconclusive)")


def test_a_failing_canary_is_failed_with_its_numbers_in_the_reason() -> None:
    p = plan(5, 1, 1, 50, ERROR_RATE, P99)
    bad = served((180, 200, 0.02), (20, 500, 0.02))
    runs = [analysis.evaluate(p, bad, seconds=30, at=float(t)) for t in (30, 60)]
    d = analysis.decide(runs, p)
    assert d.verdict == "failed"
    assert "error-rate: error rate 10.00% (20 of 200 requests) > max 5.00%" in d.reason


@pytest.mark.parametrize(("count", "failure_limit", "inconclusive_limit"),
                         list(itertools.product([1, 3, 5], [0, 1, 2], [0, 1, 3])))
def test_decide_exhaustively(count: int, failure_limit: int, inconclusive_limit: int) -> None:
    """Every sequence of run verdicts up to `count` runs, against the rules stated in the docstring."""
    p = plan(count, failure_limit, inconclusive_limit)
    runs = {"pass": _run("pass"), "fail": _run("fail"), "inconclusive": _run("inconclusive")}
    for n in range(count + 1):
        for sequence in itertools.product(runs, repeat=n):
            d = analysis.decide([runs[v] for v in sequence], p)
            failed, unsure, good = (sequence.count(v) for v in ("fail", "inconclusive", "pass"))
            assert (d.failed, d.inconclusive, d.passed) == (failed, unsure, good)
            if failed > failure_limit:
                expected = "failed"
            elif unsure > inconclusive_limit:
                expected = "inconclusive"
            elif n < count:
                expected = "running"
            else:
                expected = "passed" if good else "inconclusive"
            assert d.verdict == expected, sequence
            if d.verdict == "passed":
                assert n >= count
                assert good >= 1
