"""Strategies as step lists: rolling budgets and invariants, blue-green, canary, recreate, rollback, abort."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipmate.plan.models import AnalysisPlan, CheckPlan, StepPlan, StrategyPlan
from shipmate.release import steps
from shipmate.release.models import Step
from tests.support import example_envs, example_spec

ANALYSIS = AnalysisPlan(interval_seconds=30.0, count=5, failure_limit=1, inconclusive_limit=1, min_requests=50,
                        checks=(CheckPlan("error-rate", "error-rate", None, None, None, 0.05, None),))


def canary(*spec_steps: StepPlan) -> StrategyPlan:
    return StrategyPlan(name="canary", type="canary", steps=spec_steps, analysis=ANALYSIS)


def lines(step_list: Sequence[Step]) -> list[str]:
    return [steps.describe(s) for s in step_list]


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable", "expected"),
    [
        (4, "25%", 0, (1, 0)),
        (10, "25%", "25%", (3, 2)),  # surge rounds up, unavailable rounds down
        (3, "25%", "25%", (1, 0)),
        (1, "25%", "25%", (1, 0)),
        (3, 0, "25%", (1, 0)),  # both round to 0: one surge instance
        (3, 0, 0, (1, 0)),
        (5, 2, 1, (2, 1)),
        (5, "100%", "100%", (5, 5)),
        (7, "0%", "50%", (0, 3)),
    ],
)
def test_budget_rounds_like_kubernetes(replicas: int, surge: int | str, unavailable: int | str,
                                       expected: tuple[int, int]) -> None:
    assert steps.budget(surge, unavailable, replicas) == expected


def test_rolling_25_percent_surge_no_unavailable() -> None:
    assert lines(steps.rolling_steps("api", 4, "v1", "v2", "25%", 0)) == [
        "scale api v2 to 1 ready instance",
        "route api: v1 75%, v2 25%",
        "scale api v1 to 3 ready instances",
        "scale api v2 to 2 ready instances",
        "route api: v1 50%, v2 50%",
        "scale api v1 to 2 ready instances",
        "scale api v2 to 3 ready instances",
        "route api: v1 25%, v2 75%",
        "scale api v1 to 1 ready instance",
        "scale api v2 to 4 ready instances",
        "route api: v1 0%, v2 100%",
        "drain and stop api v1",
    ]


def test_rolling_without_surge_goes_down_first() -> None:
    assert lines(steps.rolling_steps("api", 2, "v1", "v2", 0, 1)) == [
        "scale api v1 to 1 ready instance",
        "scale api v2 to 1 ready instance",
        "route api: v1 0%, v2 100%",
        "drain and stop api v1",
        "scale api v2 to 2 ready instances",
    ]


def test_rolling_single_replica_with_zero_budgets_surges_one() -> None:
    assert lines(steps.rolling_steps("api", 1, "v1", "v2", 0, "25%")) == [
        "scale api v2 to 1 ready instance",
        "route api: v1 0%, v2 100%",
        "drain and stop api v1",
    ]


def test_rolling_from_observed_counts() -> None:
    # the target already runs at its replicas (a blue-green kept for its scale-down delay)
    assert lines(steps.rolling_steps("api", 2, "v2", "v1", "25%", 0, old_count=2, new_count=2)) == [
        "route api: v2 0%, v1 100%",
        "drain and stop api v2",
    ]
    # more new instances than replicas: traffic first, then the extra ones go
    assert lines(steps.rolling_steps("api", 1, "v1", "v2", 1, 0, old_count=0, new_count=2)) == [
        "scale api v2 to 1 ready instance",
    ]


AMOUNT = st.one_of(st.integers(0, 6), st.sampled_from(["0%", "10%", "25%", "33%", "50%", "75%", "100%"]))


def _check_rolling(replicas: int, surge_in: int | str, unavailable_in: int | str, old_count: int,
                   new_count: int) -> None:
    surge, unavailable = steps.budget(surge_in, unavailable_in, replicas)
    out = steps.rolling_steps("svc", replicas, "old", "new", surge_in, unavailable_in,
                              old_count=old_count, new_count=new_count)
    ready = {"old": old_count, "new": new_count}
    cap, floor = replicas + surge, replicas - unavailable
    # where the start already breaks a bound, it may only get better
    cap, floor = max(cap, sum(ready.values())), min(floor, sum(ready.values()))
    total = sum(ready.values())
    routed: float | None = 100.0 * ready["new"] / total if total else None

    def share(counts: dict[str, int]) -> float | None:
        return 100.0 * counts["new"] / (counts["old"] + counts["new"]) if counts["old"] + counts["new"] else None

    for i, step in enumerate(out):
        nxt = out[i + 1] if i + 1 < len(out) else None
        if step.kind == "scale":
            assert step.service == "svc"
            assert step.replicas is not None
            assert step.version is not None
            before = ready[step.version]
            assert step.replicas != before, f"step {i} scales to the count it has"
            if step.replicas > before:  # starting: every instance counts, the new ones are not ready yet
                assert sum(ready.values()) - before + step.replicas <= cap
            else:  # draining: the instances going are no longer ready
                assert sum(ready.values()) - before + step.replicas >= floor
            ready[step.version] = step.replicas
            if step.replicas < before and share(ready) is not None:  # (None: maxUnavailable allows no instance)
                assert routed == share(ready), "traffic must leave instances before they drain"
        else:
            assert step.kind == "weights"
            weights = step.weight_map
            assert set(weights) == {"old", "new"}
            assert math.isclose(sum(weights.values()), 100.0)
            after = dict(ready)
            if nxt is not None and nxt.kind == "scale" and nxt.version and (nxt.replicas or 0) < ready[nxt.version]:
                after[nxt.version] = nxt.replicas or 0
            assert math.isclose(weights["new"], share(after) or 0.0, abs_tol=1e-9)
            for version, weight in weights.items():
                assert weight == 0 or ready[version] > 0, "traffic to a version with no ready instance"
            routed = weights["new"]
        starting = (nxt is not None and nxt.kind == "scale" and nxt.version == "new"
                    and (nxt.replicas or 0) > ready["new"])
        if (nxt is None or starting) and share(ready) is not None:
            assert routed is not None
            assert math.isclose(routed, share(ready) or 0.0), f"weights lag the instances before step {i + 1}"
    assert ready == {"old": 0, "new": replicas}
    assert routed == 100.0 or (routed is None and replicas == 0)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(replicas=st.integers(1, 20), surge=AMOUNT, unavailable=AMOUNT)
def test_rolling_invariants(replicas: int, surge: int | str, unavailable: int | str) -> None:
    _check_rolling(replicas, surge, unavailable, replicas, 0)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(replicas=st.integers(1, 20), surge=AMOUNT, unavailable=AMOUNT, old=st.integers(0, 25), new=st.integers(0, 25))
def test_rolling_invariants_from_any_start(replicas: int, surge: int | str, unavailable: int | str, old: int,
                                           new: int) -> None:
    _check_rolling(replicas, surge, unavailable, old, new)


def test_steps_for_rolling_uses_the_workloads_update_first() -> None:
    strategy = StrategyPlan(name="rolling", type="rolling", max_surge="50%", max_unavailable=0)
    by_strategy = steps.steps_for(strategy, [("api", 2)], "v1", "v2")
    assert by_strategy == steps.rolling_steps("api", 2, "v1", "v2", "50%", 0)
    by_workload = steps.steps_for(strategy, [("api", 2)], "v1", "v2", update={"api": (0, 1)})
    assert by_workload == steps.rolling_steps("api", 2, "v1", "v2", 0, 1)
    defaults = steps.steps_for(StrategyPlan(name="rolling", type="rolling"), [("api", 4)], "v1", "v2")
    assert defaults == steps.rolling_steps("api", 4, "v1", "v2", "25%", 0)


def test_rolling_moves_services_one_after_another() -> None:
    strategy = StrategyPlan(name="rolling", type="rolling")
    out = steps.steps_for(strategy, [("api", 1), ("ws", 2)], "v1", "v2")
    services = [s.service or "" for s in out]
    assert services == sorted(services)  # every api step before the first ws step
    assert out[-1] == Step.scale_to("ws", "v1", 0)


def test_blue_green() -> None:
    strategy = StrategyPlan(name="bg", type="blue-green", preview_checks=("/readyz", "/health"),
                            scale_down_delay_seconds=300.0)
    assert lines(steps.steps_for(strategy, [("api", 3), ("web", 1)], "blue", "green")) == [
        "scale api green to 3 ready instances",
        "scale web green to 1 ready instance",
        "route api: blue 100%, green 0%",
        "route web: blue 100%, green 0%",
        "smoke-test api green: /readyz, /health",
        "smoke-test web green: /readyz, /health",
        "route api: blue 0%, green 100%",
        "route web: blue 0%, green 100%",
        "wait 5m before scaling down",
        "drain and stop api blue",
        "drain and stop web blue",
    ]


def test_blue_green_without_checks_or_delay() -> None:
    strategy = StrategyPlan(name="bg", type="blue-green", scale_down_delay_seconds=0.0)
    assert [s.kind for s in steps.steps_for(strategy, [("api", 2)], "v1", "v2")] == [
        "scale", "weights", "weights", "scale"]


def test_canary_example_steps() -> None:
    strategy = canary(StepPlan(weight=5), StepPlan(analysis=True), StepPlan(weight=25), StepPlan(analysis=True),
                      StepPlan(weight=50), StepPlan(pause_seconds=300.0), StepPlan(weight=100))
    assert lines(steps.steps_for(strategy, [("api", 4)], "v1", "v2")) == [
        "scale api v2 to 1 ready instance",
        "route api: v1 95%, v2 5%",
        "analyse 5 runs every 30s (error-rate); abort after 2 failed, hold after 2 inconclusive",
        "route api: v1 75%, v2 25%",  # ceil(4 * 25%) = 1: already running
        "analyse 5 runs every 30s (error-rate); abort after 2 failed, hold after 2 inconclusive",
        "scale api v2 to 2 ready instances",
        "route api: v1 50%, v2 50%",
        "pause 5m",
        "scale api v2 to 4 ready instances",
        "route api: v1 0%, v2 100%",
        "drain and stop api v1",
    ]


@pytest.mark.parametrize(
    ("replicas", "weight", "instances"),
    [(1, 5, 1), (10, 5, 1), (10, 15, 2), (20, 5, 1), (3, 50, 2), (4, 25, 1), (10, 99, 10), (1, 0, 1)],
)
def test_canary_instances_follow_the_weight(replicas: int, weight: int, instances: int) -> None:
    out = steps.steps_for(canary(StepPlan(weight=weight), StepPlan(pause_indefinite=True)), [("api", replicas)],
                          "v1", "v2")
    assert out[0] == Step.scale_to("api", "v2", instances)
    assert out[1] == Step.route("api", (("v1", 100.0 - weight), ("v2", float(weight))))
    assert out[2] == Step.pause_for(None)


def test_canary_not_ending_at_100_still_promotes() -> None:
    out = steps.steps_for(canary(StepPlan(weight=10), StepPlan(pause_indefinite=True)), [("api", 2)], "v1", "v2")
    assert lines(out) == [
        "scale api v2 to 1 ready instance",
        "route api: v1 90%, v2 10%",
        "pause until promoted",
        "scale api v2 to 2 ready instances",
        "route api: v1 0%, v2 100%",
        "drain and stop api v1",
    ]


def test_canary_gates_after_100_run_before_the_stable_version_goes() -> None:
    out = steps.steps_for(canary(StepPlan(weight=100), StepPlan(analysis=True)), [("api", 2)], "v1", "v2")
    assert [s.kind for s in out] == ["scale", "weights", "analysis", "scale"]
    assert out[2].analysis == ANALYSIS
    assert out[-1] == Step.scale_to("api", "v1", 0)


def test_canary_with_several_services_scales_all_then_routes_all() -> None:
    out = steps.steps_for(canary(StepPlan(weight=20)), [("api", 10), ("ws", 1)], "v1", "v2")
    assert lines(out)[:4] == [
        "scale api v2 to 2 ready instances",
        "scale ws v2 to 1 ready instance",
        "route api: v1 80%, v2 20%",
        "route ws: v1 80%, v2 20%",
    ]


def test_the_two_labels_must_differ() -> None:
    with pytest.raises(ValueError, match="both versions are labelled 'v1'"):
        steps.steps_for(StrategyPlan(name="r", type="rolling"), [("api", 1)], "v1", "v1")
    with pytest.raises(ValueError, match="both versions are labelled 'v1'"):
        steps.rollback_steps([("api", 1)], "v1", "v1", fast=True)


def test_canary_analysis_step_without_analysis_is_an_error() -> None:
    strategy = StrategyPlan(name="c", type="canary", steps=(StepPlan(weight=5), StepPlan(analysis=True)))
    with pytest.raises(ValueError, match="no analysis"):
        steps.steps_for(strategy, [("api", 1)], "v1", "v2")


def test_recreate_and_initial() -> None:
    assert lines(steps.steps_for(StrategyPlan(name="recreate", type="recreate"), [("api", 2)], "v1", "v2")) == [
        "drain and stop api v1", "scale api v2 to 2 ready instances", "route api: v1 0%, v2 100%"]
    assert lines(steps.initial_steps([("api", 2), ("ws", 1)], "v1")) == [
        "scale api v1 to 2 ready instances", "scale ws v1 to 1 ready instance", "route api: v1 100%",
        "route ws: v1 100%"]


def test_fast_rollback_and_abort() -> None:
    expected = [
        "scale api v1 to 3 ready instances",
        "scale ws v1 to 1 ready instance",
        "route api: v2 0%, v1 100%",
        "route ws: v2 0%, v1 100%",
        "drain and stop api v2",
        "drain and stop ws v2",
    ]
    services = [("api", 3), ("ws", 1)]
    assert lines(steps.rollback_steps(services, current="v2", target="v1", fast=True)) == expected
    assert steps.abort_steps(services, stable="v1", new="v2") == steps.rollback_steps(services, "v2", "v1", True)


def test_slow_rollback_is_a_rolling_update() -> None:
    out = steps.rollback_steps([("api", 4)], current="v2", target="v1", fast=False)
    assert out == steps.rolling_steps("api", 4, "v2", "v1", "25%", 0)
    observed = steps.rollback_steps([("api", 2)], "v2", "v1", False, counts={"api": (2, 2)})
    assert lines(observed) == ["route api: v2 0%, v1 100%", "drain and stop api v2"]


@pytest.mark.parametrize(
    ("step", "text"),
    [
        (Step.scale_to("api", "v2", 1), "scale api v2 to 1 ready instance"),
        (Step.scale_to("api", "v2", 0), "drain and stop api v2"),
        (Step.route("api", (("v1", 66.66666666666667), ("v2", 33.333333333333336))),
         "route api: v1 66.67%, v2 33.33%"),
        (Step.pause_for(90.0), "pause 90s"),
        (Step.pause_for(None), "pause until promoted"),
        (Step.smoke_test("api", "v2", ("/readyz",)), "smoke-test api v2: /readyz"),
        (Step.wait_for(30.0), "wait 30s before scaling down"),
        (Step("analysis"), "analyse"),
    ],
)
def test_describe(step: Step, text: str) -> None:
    assert steps.describe(step) == text


@pytest.mark.parametrize(("example", "env"), example_envs())
def test_every_example_environment_has_steps_that_end_on_the_new_version(example: str, env: str) -> None:
    from shipmate.plan.plan import resolve

    plan = resolve(example_spec(example).for_env(env), env)
    services = [(w.name, w.replicas) for w in plan.workloads]
    update = {w.name: (w.max_surge, w.max_unavailable) for w in plan.workloads}
    out = steps.steps_for(plan.strategy, services, "v1", "v2", update=update)
    for name, replicas in services:
        mine = [s for s in out if s.service == name]
        assert [s for s in mine if s.kind == "scale" and s.version == "v2"][-1].replicas == replicas
        assert [s for s in mine if s.kind == "scale" and s.version == "v1"][-1].replicas == 0
        assert [s for s in mine if s.kind == "weights"][-1].weight_map == {"v1": 0.0, "v2": 100.0}
    assert all(steps.describe(s) for s in out)


def test_state_after_folds_the_done_steps_from_the_starting_world() -> None:
    from shipmate.release.models import Step
    from shipmate.release.steps import state_after

    steps = (Step.scale_to("api", "r2", 1), Step.route("api", (("r1", 75.0), ("r2", 25.0))), Step.pause_for(None),
             Step.scale_to("api", "r2", 4), Step.route("api", (("r1", 0.0), ("r2", 100.0))),
             Step.scale_to("api", "r1", 0))
    start = {"api": {"r1": 4}}, {"api": {"r1": 100.0}}
    assert state_after(steps, 0, *start) == ({"api": {"r1": 4}}, {"api": {"r1": 100.0}})
    assert state_after(steps, 3, *start) == ({"api": {"r1": 4, "r2": 1}}, {"api": {"r1": 75.0, "r2": 25.0}})
    assert state_after(steps, 6, *start) == ({"api": {"r2": 4}}, {"api": {"r2": 100.0}})
    assert start == ({"api": {"r1": 4}}, {"api": {"r1": 100.0}}), "the starting world is not changed"
