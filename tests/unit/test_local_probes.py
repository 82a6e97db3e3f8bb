"""The probe state machine of the local target: pure, driven by a fake clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from shipmate.plan.models import ProbePlan
from shipmate.targets.local.probes import Health, Kind, Timings, begin, due, next_wakeup, observe


@dataclass
class FakeClock:
    now: float = 100.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def run(health: Health, clock: FakeClock, results: dict[Kind, list[bool]], until: float) -> list[tuple[float, Health]]:
    """Drive the machine like the prober does: wake at each due time, feed the next scripted result."""
    history = []
    while (wake := next_wakeup(health)) is not None and wake <= until:
        clock.now = max(clock.now, wake)
        for kind in due(health, clock.now):
            script = results[kind]
            ok = script.pop(0) if script else True
            health = observe(health, kind, ok, clock.now, "" if ok else f"{kind} said no")
        history.append((clock.now, health))
    return history


def test_no_probes_ready_and_alive_at_once() -> None:
    health = begin(0.0)
    assert health.started
    assert health.ready
    assert health.alive
    assert next_wakeup(health) is None
    assert due(health, 1e9) == ()


def test_readiness_waits_for_initial_delay_and_success_threshold() -> None:
    clock = FakeClock()
    health = begin(clock.now, readiness=Timings(initial_delay=5, period=2, success_threshold=2))
    assert not health.ready
    assert due(health, clock.advance(4.9)) == ()
    assert due(health, clock.advance(0.1)) == ("readiness",)
    health = observe(health, "readiness", True, clock.now)
    assert not health.ready, "one success of two"
    assert next_wakeup(health) == pytest.approx(clock.now + 2)
    assert due(health, clock.advance(1)) == ()
    health = observe(health, "readiness", True, clock.advance(1))
    assert health.ready


@pytest.mark.parametrize(
    ("script", "expected_ready"),
    [
        ([True, False, False], True),  # two failures of three: still ready
        ([True, False, False, False], False),  # three in a row: not ready
        ([True, False, False, True, False, False], True),  # a success resets the count
        ([True, False, False, False, True], True),  # back after one success (threshold 1)
    ],
)
def test_readiness_failure_threshold(script: list[bool], expected_ready: bool) -> None:
    clock = FakeClock()
    health = begin(clock.now, readiness=Timings(period=1, failure_threshold=3))
    history = run(health, clock, {"readiness": list(script)}, until=clock.now + len(script) - 1)
    final = history[-1][1]
    assert final.ready is expected_ready
    assert final.alive, "readiness never restarts anything"


def test_liveness_restarts_after_failure_threshold_only() -> None:
    clock = FakeClock()
    health = begin(clock.now, liveness=Timings(initial_delay=3, period=10, failure_threshold=3))
    history = run(health, clock, {"liveness": [False, False, True, False, False, False]}, until=clock.now + 100)
    alive = [(round(t - 100), h.alive) for t, h in history]
    assert alive == [(3, True), (13, True), (23, True), (33, True), (43, True), (53, False)]
    final = history[-1][1]
    assert not final.ready
    assert final.reason == "liveness probe failed 3 times: liveness said no"
    assert next_wakeup(final) is None, "a dead instance is not probed again"


def test_startup_gates_readiness_and_liveness() -> None:
    clock = FakeClock()
    health = begin(clock.now, startup=Timings(period=1, failure_threshold=30),
                   readiness=Timings(initial_delay=0, period=5), liveness=Timings(initial_delay=2, period=5))
    assert not health.started
    assert not health.ready
    assert due(health, clock.now) == ("startup",)
    for _ in range(3):  # failures below the threshold only delay the start
        health = observe(health, "startup", False, clock.now, "refused")
        assert health.alive
        clock.advance(1)
        assert due(health, clock.now) == ("startup",), "readiness and liveness wait for startup"
    health = observe(health, "startup", True, clock.now)
    assert health.started
    assert not health.ready
    assert set(due(health, clock.now)) == {"readiness", "liveness"}, "both run at once after startup"
    health = observe(health, "readiness", True, clock.now)
    assert health.ready
    assert due(health, clock.now) == ("liveness",)
    assert observe(health, "startup", False, clock.now) == health, "a finished startup probe is ignored"


def test_startup_failure_threshold_means_restart() -> None:
    clock = FakeClock()
    health = begin(clock.now, startup=Timings(period=1, failure_threshold=3), liveness=Timings(period=1))
    history = run(health, clock, {"startup": [False, False, False]}, until=clock.now + 10)
    final = history[-1][1]
    assert not final.alive
    assert not final.started
    assert final.reason.startswith("startup probe failed 3 times")
    assert len(history) == 3


def test_liveness_initial_delay_counts_from_process_start() -> None:
    clock = FakeClock()
    health = begin(clock.now, startup=Timings(period=1), liveness=Timings(initial_delay=10, period=1))
    health = observe(health, "startup", True, clock.advance(2))
    assert due(health, clock.now) == ()
    assert next_wakeup(health) == pytest.approx(110.0)


def test_timings_from_a_probe_plan_are_sane() -> None:
    plan = ProbePlan(check="http", path="/healthz", port=8080, command=(), initial_delay_seconds=0,
                     period_seconds=0, timeout_seconds=0, failure_threshold=0, success_threshold=0)
    assert Timings.of(plan) == Timings(initial_delay=0, period=1, timeout=1, failure_threshold=1, success_threshold=1)
