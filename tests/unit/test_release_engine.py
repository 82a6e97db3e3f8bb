"""The rollout engine's decisions, with a fake clock and an in-memory target.

The target here is a double on purpose: it lets a test fail a step, stall it past the deadline
or feed the analysis chosen counters, deterministically and in milliseconds. The real local
target runs the same engine in tests/e2e (test_release_local, test_werewolves_release,
test_rollout_durability).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest

from shipmate.plan.models import Workload
from shipmate.release import models as m
from shipmate.release.builder import build
from shipmate.release.engine import Engine, Releases
from shipmate.release.labels import labels
from shipmate.release.models import Release, Rollout
from shipmate.release.planning import deploy_steps
from shipmate.targets.base import StepFailed
from shipmate.targets.local.traffic import VersionCounters, VersionSnapshot
from tests.support import example_spec


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class FakeTarget:
    """Scales and routes in memory; `fail_on` makes scaling a label raise; `stall` makes scaling
    advance the clock past any deadline; `errors` is the canary's 5xx share."""

    def __init__(self, clock: Clock, *, fail_on: str | None = None, stall: bool = False, errors: float = 0.0,
                 requests: int = 200) -> None:
        self.clock = clock
        self.fail_on = fail_on
        self.stall = stall
        self.errors = errors
        self.requests = requests
        self.instances: dict[tuple[str, str], int] = {}
        self.weights: dict[str, dict[str, float]] = {}
        self.counters: dict[tuple[str, str], VersionCounters] = {}

    async def scale(self, workload: Workload, version: str, label: str, replicas: int, *, within: float) -> None:
        if self.fail_on is not None and label.startswith(self.fail_on) and replicas:
            raise StepFailed(f"instance {workload.name}-x-1 crash-loops (3 restarts)")
        if self.stall:  # as the local target does: wait for readiness until `within`, then give up
            self.clock.now += within + 1
            raise StepFailed(f"instance {workload.name}-x-1 not ready after {within:g}s")
        self.instances[(workload.name, label)] = replicas

    def set_weights(self, service: str, weights: Mapping[str, float]) -> None:
        self.weights[service] = dict(weights)

    def traffic(self, service: str, label: str) -> VersionSnapshot | None:
        counters = self.counters.setdefault((service, label), VersionCounters())
        bad = round(self.requests * self.errors)
        for i in range(self.requests):  # every look sees another interval's worth of traffic
            counters.observe(500 if i < bad else 200, 0.01)
        return counters.snapshot()

    async def smoke(self, service: str, label: str, checks: Sequence[str]) -> list[str]:
        return []


def releases(strategy: str = "canary-quick", **sets: str) -> tuple[Release, Release]:
    spec = example_spec("cyber-werewolves").for_env("dev")
    before = build(spec, "dev", number=1, created_at=0.0, spec_digest="d", message="", author="t", git_commit=None)
    after = build(spec, "dev", number=2, created_at=1.0, spec_digest="d", message="", author="t", git_commit=None,
                  sets=[("environments.dev.strategy", strategy), *sets.items()], version="9.9.9")
    return before, after


def rollout(before: Release, after: Release, clock: Clock) -> Rollout:
    return m.start("r-1", "dev", 1, 2, after.plan.strategy, deploy_steps(before, after, after.plan.strategy), clock())


def run(engine: Engine, r: Rollout, before: Release, after: Release, clock: Clock) -> Rollout:
    async def main() -> Rollout:
        return await engine.run(r, Releases(before, after))

    return asyncio.run(main())


def engine_for(target: FakeTarget, clock: Clock, requests: list[str] | None = None,
               saved: list[Rollout] | None = None) -> Engine:
    pending = requests if requests is not None else []

    def take(_rollout_id: str) -> str:
        return pending.pop(0) if pending else ""

    return Engine(target, save=(saved.append if saved is not None else lambda _r: None), take_request=take,
                  clock=clock, tick=0.5)


@pytest.fixture(autouse=True)
def fast_sleep(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    real_sleep = asyncio.sleep

    async def sleep(seconds: float, result: object = None) -> object:
        clock.now += seconds
        await real_sleep(0)
        return result

    monkeypatch.setattr("shipmate.release.engine.asyncio.sleep", sleep)
    return clock


def test_a_healthy_canary_is_promoted_and_ends_on_the_new_labels(fast_sleep: Clock) -> None:
    before, after = releases()
    target = FakeTarget(fast_sleep)
    saved: list[Rollout] = []
    done = run(engine_for(target, fast_sleep, saved=saved), rollout(before, after, fast_sleep), before, after,
               fast_sleep)
    assert done.phase == "promoted"
    old, new = labels(before), labels(after)
    assert {k: v for k, v in target.instances.items() if v} == \
        {("api-server", new["api-server"]): 2, ("ws-gateway", new["ws-gateway"]): 1,
         ("agent-runtime", new["agent-runtime"]): 1}
    assert target.weights == {s: {old[s]: 0.0, new[s]: 100.0} for s in new}
    assert [d.verdict for d in done.decisions] == ["passed", "passed"]
    assert len(saved) >= len(done.steps), "saved after every step"


def test_a_faulty_canary_is_aborted_by_analysis_with_its_numbers(fast_sleep: Clock) -> None:
    before, after = releases()
    target = FakeTarget(fast_sleep, errors=0.10)
    done = run(engine_for(target, fast_sleep), rollout(before, after, fast_sleep), before, after, fast_sleep)
    assert done.phase == "rolled-back"
    assert done.message.startswith("analysis failed")
    failed = next(d for d in done.decisions if d.verdict == "failed")
    measurement = failed.runs[-1].measurements[0]
    assert measurement.check == "error-rate"
    assert measurement.value == pytest.approx(0.10)
    old, new = labels(before), labels(after)
    assert all(target.weights[s] == {new[s]: 0.0, old[s]: 100.0} for s in target.weights)
    assert all(target.instances[(s, new[s])] == 0 for s in old)


def test_thin_traffic_is_inconclusive_and_holds_the_rollout_for_a_person(fast_sleep: Clock) -> None:
    before, after = releases()
    target = FakeTarget(fast_sleep, requests=3)
    requests: list[str] = []
    engine = engine_for(target, fast_sleep, requests=requests)

    async def main() -> Rollout:
        task = asyncio.ensure_future(engine.run(rollout(before, after, fast_sleep), Releases(before, after)))
        for _ in range(200):
            await asyncio.sleep(0.5)
            if task.done():
                break
        assert not task.done(), "an inconclusive analysis does not end the rollout"
        requests.append("abort")
        return await task

    done = asyncio.run(main())
    held = [d for d in done.decisions if d.verdict == "inconclusive"]
    assert held
    assert held[0].runs[-1].measurements[0].verdict == "inconclusive"
    assert done.phase == "rolled-back"
    assert done.message == "aborted by a person"


def test_a_crash_looping_version_is_rolled_back_at_once(fast_sleep: Clock) -> None:
    before, after = releases(strategy="rolling")
    target = FakeTarget(fast_sleep, fail_on="9.9.9")
    started = fast_sleep.now
    done = run(engine_for(target, fast_sleep), rollout(before, after, fast_sleep), before, after, fast_sleep)
    assert done.phase == "rolled-back"
    assert "crash-loops" in done.message
    assert fast_sleep.now - started < 60, "no waiting for the progress deadline"


def test_a_stuck_step_is_aborted_at_the_progress_deadline(fast_sleep: Clock) -> None:
    before, after = releases(strategy="rolling")
    target = FakeTarget(fast_sleep, stall=True)
    r = rollout(before, after, fast_sleep)
    r = replace(r, strategy=replace(r.strategy, progress_deadline_seconds=600.0))
    engine = engine_for(target, fast_sleep)

    async def main() -> Rollout:
        return await engine.run(r, Releases(before, after))

    done = asyncio.run(main())
    assert done.phase in ("rolled-back", "failed")
    assert "progress deadline" in done.message


def test_promote_passes_an_indefinite_pause(fast_sleep: Clock) -> None:
    before, after = releases()
    r = rollout(before, after, fast_sleep)
    gated = replace(r, steps=(r.steps[0], m.Step.pause_for(None), *r.steps[1:]))
    requests: list[str] = []
    engine = engine_for(FakeTarget(fast_sleep), fast_sleep, requests=requests)

    async def main() -> Rollout:
        task = asyncio.ensure_future(engine.run(gated, Releases(before, after)))
        for _ in range(50):
            await asyncio.sleep(0.5)
        assert not task.done(), "an indefinite pause waits for a person"
        requests.append("promote-full")
        return await task

    done = asyncio.run(main())
    assert done.phase == "promoted"
    assert done.decisions == (), "promote --full skipped the analyses"


def test_a_rollback_whose_step_fails_is_failed_not_undone(fast_sleep: Clock) -> None:
    before, after = releases(strategy="rolling")
    target = FakeTarget(fast_sleep, fail_on=labels(before)["api-server"].split("-")[0])
    back = m.start("r-2", "dev", 2, 1, before.plan.strategy, deploy_steps(after, before, before.plan.strategy),
                   fast_sleep(), kind="rollback")
    done = run(engine_for(target, fast_sleep), back, after, before, fast_sleep)
    assert done.phase == "failed"
    assert "failed" in done.message

