"""Releases and rollouts: helpers, the rollout's transitions, and the JSON codec's exact round trip."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipmate.errors import Conflict
from shipmate.plan.models import AnalysisPlan, CheckPlan, Plan, StepPlan, StrategyPlan
from shipmate.plan.plan import resolve
from shipmate.release import analysis, codec, models, steps
from shipmate.release.codec import CodecError, from_json, to_json
from shipmate.release.models import Decision, Measurement, Release, Rollout, Run, Step
from shipmate.render.objects import render
from shipmate.targets.local.traffic import VersionCounters
from tests.support import example_envs, example_spec

ANALYSIS = AnalysisPlan(interval_seconds=30.0, count=2, failure_limit=0, inconclusive_limit=0, min_requests=50,
                        checks=(CheckPlan("error-rate", "error-rate", None, None, None, 0.05, None),))
CANARY = StrategyPlan(name="canary", type="canary", analysis=ANALYSIS, progress_deadline_seconds=600.0,
                      steps=(StepPlan(weight=10), StepPlan(analysis=True), StepPlan(pause_seconds=60.0),
                             StepPlan(weight=50), StepPlan(pause_indefinite=True), StepPlan(weight=100)))
SERVICES = [("api", 2)]
STEPS = steps.steps_for(CANARY, SERVICES, "v1", "v2")
# 0 scale v2 1 | 1 route 10% | 2 analysis | 3 pause 60s | 4 route 50% | 5 pause | 6 scale v2 2 | 7 route 100%
# 8 stop v1
UNDO = steps.abort_steps(SERVICES, "v1", "v2")


@dataclass(frozen=True)
class Example:
    plan: Plan
    objects: tuple[dict[str, Any], ...]


_EXAMPLES: dict[tuple[str, str], Example] = {}


def example(name: str, env: str) -> Example:
    key = (name, env)
    if key not in _EXAMPLES:
        plan = resolve(example_spec(name).for_env(env), env)
        _EXAMPLES[key] = Example(plan, tuple(render(plan)))
    return _EXAMPLES[key]


def release(number: int = 1, name: str = "cyber-werewolves", env: str = "dev", **changes: Any) -> Release:
    ex = example(name, env)
    base = Release(number=number, environment=env, created_at=1_700_000_000.5, spec_digest="sha256:abc",
                   plan=ex.plan, versions=tuple((w.name, "v1") for w in ex.plan.workloads),
                   secret_versions=(("jwt-secret", 1),), objects=ex.objects, message="first", author="ci",
                   git_commit=None, overrides=())
    return replace(base, **changes)


def rollout(now: float = 100.0) -> Rollout:
    return models.start("r1", "prod", 1, 2, CANARY, STEPS, now)


def decision(verdict: Literal["running", "passed", "failed", "inconclusive"], *runs: Run) -> Decision:
    return Decision(verdict, f"because {verdict}", runs, 0, 0, 0, 2, 0, 0)


# ---- Release


def test_release_helpers() -> None:
    r = release(versions=(("api-server", "v7"), ("ws-gateway", "v6")))
    assert r.version_of("api-server") == "v7"
    assert r.workload("ws-gateway").name == "ws-gateway"
    assert r.services == ("agent-runtime", "api-server", "ws-gateway")
    with pytest.raises(KeyError):
        r.version_of("agent-runtime")
    with pytest.raises(KeyError):
        r.workload("nope")


# ---- Rollout transitions


def test_a_canary_runs_to_promoted() -> None:
    r = rollout()
    assert (r.current, r.phase, r.step) == (0, "progressing", STEPS[0])
    r = models.advance(models.advance(r, 101), 102)
    assert (r.current, r.phase, r.step_started_at) == (2, "analysing", 102)
    r = models.record(r, decision("running", Run(110, ())), 110)
    assert (r.current, r.phase, len(r.decisions)) == (2, "analysing", 1)
    r = models.record(r, decision("running", Run(110, ()), Run(140, ())), 140)
    assert len(r.decisions) == 1  # the running decision of a step is replaced, not piled up
    assert len(models.runs_so_far(r)) == 2
    r = models.record(r, decision("passed"), 150)
    assert (r.current, r.phase, r.step_started_at) == (3, "paused", 150)
    assert [(d.verdict, d.step, d.at) for d in r.decisions] == [("passed", 2, 150)]
    assert models.runs_so_far(r) == ()
    assert models.remaining(r, 170) == 40
    assert models.remaining(r, 500) == 0
    r = models.advance(r, 210)
    assert r.phase == "progressing"
    r = models.advance(r, 211)
    assert (r.current, r.phase, models.remaining(r, 1e9)) == (5, "paused", None)  # until promoted
    with pytest.raises(Conflict, match="rollout promote"):
        models.resume(r, 212)
    r = models.promote(r, 300)
    assert (r.current, r.phase) == (6, "progressing")
    for t in (301, 302, 303):
        r = models.advance(r, t)
    assert (r.phase, r.current, r.step, r.done) == ("promoted", len(STEPS), None, True)
    with pytest.raises(Conflict, match="already ended"):
        models.advance(r, 304)


def test_no_steps_is_promoted_at_once() -> None:
    r = models.start("r", "dev", None, 1, CANARY, (), 5.0)
    assert r.phase == "promoted"
    assert models.start("r", "dev", 2, 1, CANARY, (), 5.0, kind="rollback").phase == "rolled-back"


def test_pause_holds_and_resume_restarts_the_step() -> None:
    r = models.advance(models.advance(rollout(), 101), 102)  # at the analysis
    held = models.pause(r, "looking at the logs", 120)
    assert (held.phase, held.hold) == ("paused", "looking at the logs")
    assert models.overdue(held, 1e9) is False
    resumed = models.resume(held, 130)
    assert (resumed.phase, resumed.hold, resumed.step_started_at) == ("analysing", None, 130)
    assert models.resume(resumed, 131) is resumed  # nothing held: nothing to do
    # a step that was running when the hold came still completes; the next one waits
    moving = models.pause(rollout(), "wait", 100.5)
    after = models.advance(moving, 101)
    assert (after.current, after.phase, after.hold) == (1, "paused", "wait")


def test_promote_passes_a_gate_and_full_passes_every_gate() -> None:
    r = models.advance(models.advance(rollout(), 101), 102)  # at the analysis
    assert models.promote(r, 103).current == 3
    with pytest.raises(Conflict, match="not waiting at a pause or analysis"):
        models.promote(rollout(), 101)
    full = models.promote(rollout(), 101, full=True)
    assert (full.current, full.skip_gates) == (0, True)
    kinds = []
    while not full.done:
        assert full.step is not None
        kinds.append(full.step.kind)
        full = models.advance(full, 102)
    assert "pause" not in kinds
    assert "analysis" not in kinds
    assert full.phase == "promoted"


def test_an_inconclusive_analysis_holds_for_a_person() -> None:
    r = models.advance(models.advance(rollout(), 101), 102)
    r = models.record(r, decision("inconclusive"), 160)
    assert (r.phase, r.current) == ("paused", 2)
    assert r.hold == "analysis inconclusive: because inconclusive"
    assert models.resume(r, 170).phase == "analysing"
    assert models.promote(r, 170).current == 3


def test_a_failed_analysis_aborts_into_the_undo_steps_then_rolled_back() -> None:
    r = models.advance(models.advance(rollout(), 101), 102)
    r = models.record(r, decision("failed"), 160)
    assert (r.phase, r.current, r.message) == ("analysing", 2, "analysis failed: because failed")
    aborted = models.abort(r, "analysis failed: 10% errors", 161, undo=UNDO)
    assert aborted.steps == (*STEPS[:2], *UNDO)
    assert (aborted.phase, aborted.current, aborted.undo_from, aborted.step) == ("aborted", 2, 2, UNDO[0])
    assert models.abort(aborted, "again", 162, undo=UNDO) is aborted
    with pytest.raises(Conflict, match="rolling back"):
        models.pause(aborted, "p", 163)
    with pytest.raises(Conflict, match="rolling back"):
        models.resume(aborted, 163)
    with pytest.raises(Conflict, match="rolling back"):
        models.promote(aborted, 163, full=True)
    for t in range(len(UNDO)):
        aborted = models.advance(aborted, 170 + t)
    assert (aborted.phase, aborted.done) == ("rolled-back", True)
    assert aborted.decisions[-1].verdict == "failed"


def test_abort_with_skip_gates_still_runs_every_undo_step_and_fail_is_terminal() -> None:
    r = models.abort(models.promote(rollout(), 101, full=True), "stop", 102, undo=(Step.pause_for(5.0), *UNDO))
    assert not r.skip_gates
    assert r.step == Step.pause_for(5.0)
    failed = models.fail(r, "router unreachable", 103)
    assert (failed.phase, failed.message, failed.done) == ("failed", "router unreachable", True)
    assert models.fail(failed, "again", 104) is failed


def test_a_rollback_rollout_ends_rolled_back() -> None:
    r = models.start("rb", "prod", 2, 1, CANARY, UNDO, 10.0, kind="rollback", message="rollback to 1")
    for t in range(len(UNDO)):
        r = models.advance(r, 11.0 + t)
    assert r.phase == "rolled-back"


def test_progress_deadline() -> None:
    r = rollout(100.0)
    assert models.overdue(r, 700.0) is False
    assert models.overdue(r, 700.5) is True
    at_pause = models.advance(models.advance(models.advance(r, 101), 102), 103)
    assert at_pause.step is not None
    assert at_pause.step.kind == "pause"
    assert models.overdue(at_pause, 1e9) is False
    assert models.overdue(replace(r, phase="promoted"), 1e9) is False


# ---- codec


FLOATS = st.floats(allow_nan=False, allow_infinity=False)
TEXT = st.text(max_size=20)
MEASUREMENTS = st.builds(Measurement, TEXT, st.sampled_from(["error-rate", "latency"]), st.none() | FLOATS,
                         st.sampled_from(["pass", "fail", "inconclusive"]), TEXT)
RUNS = st.builds(Run, FLOATS, st.lists(MEASUREMENTS, max_size=3).map(tuple))
DECISIONS = st.builds(Decision, st.sampled_from(["running", "passed", "failed", "inconclusive"]), TEXT,
                      st.lists(RUNS, max_size=3).map(tuple), st.integers(0, 9), st.integers(0, 9),
                      st.integers(0, 9), st.integers(1, 9), st.integers(0, 9), st.integers(0, 9),
                      st.none() | st.integers(0, 30), st.none() | FLOATS)
ENVS = st.sampled_from(example_envs())


@st.composite
def releases(draw: st.DrawFn) -> Release:
    name, env = draw(ENVS)
    plan = example(name, env).plan
    versions = tuple((w.name, draw(TEXT)) for w in plan.workloads)
    return release(
        number=draw(st.integers(1, 10_000)), name=name, env=env, created_at=draw(FLOATS), spec_digest=draw(TEXT),
        versions=versions, secret_versions=tuple(draw(st.lists(st.tuples(TEXT, st.integers(0, 99)), max_size=3))),
        message=draw(st.text()), author=draw(TEXT), git_commit=draw(st.none() | st.text("0123456789abcdef")),
        overrides=tuple(draw(st.lists(st.tuples(TEXT, TEXT), max_size=3))))


@st.composite
def rollouts(draw: st.DrawFn) -> Rollout:
    name, env = draw(ENVS)
    plan = example(name, env).plan
    services = [(w.name, w.replicas) for w in plan.workloads]
    strategy = plan.strategy
    if strategy.type == "canary" and any(s.analysis for s in strategy.steps) and strategy.analysis is None:
        strategy = replace(strategy, analysis=ANALYSIS)
    step_list = steps.steps_for(strategy, services, "v1", "v2" + draw(TEXT))
    r = models.start(draw(TEXT), env, draw(st.none() | st.integers(1, 9)), draw(st.integers(1, 9)), strategy,
                     step_list, draw(FLOATS), kind=draw(st.sampled_from(["deploy", "rollback"])))
    return replace(r, current=draw(st.integers(0, len(step_list))), decisions=tuple(draw(st.lists(DECISIONS,
                   max_size=3))), hold=draw(st.none() | TEXT), skip_gates=draw(st.booleans()),
                   undo_from=draw(st.none() | st.integers(0, 5)), updated_at=draw(FLOATS))


def _round_trip(value: Any) -> None:
    data = to_json(value)
    text = json.dumps(data, allow_nan=False)
    back = from_json(type(value), json.loads(text))
    assert back == value
    assert json.dumps(to_json(back), allow_nan=False) == text  # deterministic


@settings(max_examples=25, deadline=None, derandomize=True)
@given(releases())
def test_release_round_trip(r: Release) -> None:
    _round_trip(r)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(rollouts())
def test_rollout_round_trip(r: Rollout) -> None:
    _round_trip(r)


@pytest.mark.parametrize(("name", "env"), example_envs())
def test_every_example_release_round_trips(name: str, env: str) -> None:
    _round_trip(release(name=name, env=env))


def test_codec_keeps_int_or_str_and_tuples_apart() -> None:
    strategy = StrategyPlan(name="r", type="rolling", max_surge=1, max_unavailable="25%")
    data = to_json(strategy)
    assert (data["max_surge"], data["max_unavailable"]) == (1, "25%")
    assert from_json(StrategyPlan, data) == strategy
    step = Step.route("api", (("v1", 75.0), ("v2", 25.0)))
    assert to_json(step)["weights"] == [["v1", 75.0], ["v2", 25.0]]
    assert from_json(Step, to_json(step)) == step


def test_codec_writes_non_finite_floats_as_strings() -> None:
    m = Measurement("p99", "latency", math.inf, "fail", "")
    assert to_json(m)["value"] == "Infinity"
    assert from_json(Measurement, to_json(m)) == m
    nan = from_json(Measurement, to_json(replace(m, value=math.nan)))
    assert nan.value is not None
    assert math.isnan(nan.value)


def test_codec_fills_defaults_and_refuses_what_it_does_not_know() -> None:
    data = to_json(StrategyPlan(name="r", type="rolling"))
    del data["progress_deadline_seconds"]
    assert from_json(StrategyPlan, data).progress_deadline_seconds == 600.0
    with pytest.raises(CodecError, match=r"StrategyPlan: unknown field\(s\) of StrategyPlan: surprise"):
        from_json(StrategyPlan, {**data, "surprise": 1})
    with pytest.raises(CodecError, match="missing field 'name'"):
        from_json(StrategyPlan, {k: v for k, v in data.items() if k != "name"})
    with pytest.raises(CodecError, match=r"StrategyPlan.type: 'linear' is not one of"):
        from_json(StrategyPlan, {**data, "type": "linear"})
    with pytest.raises(CodecError, match=r"StrategyPlan.max_surge: 1.5 fits none of"):
        from_json(StrategyPlan, {**data, "max_surge": 1.5})
    with pytest.raises(CodecError, match=r"Step.replicas: True fits none of int \| None"):
        from_json(Step, {"kind": "scale", "replicas": True})
    with pytest.raises(CodecError, match="takes a dataclass instance"):
        to_json({"a": 1})
    with pytest.raises(CodecError, match=r"Release.objects\[0\].spec: a set is not JSON data"):
        to_json(release(objects=({"spec": {1, 2}},)))


def test_codec_of_a_real_analysis_decision() -> None:
    counters = VersionCounters()
    for code in [200] * 90 + [500] * 10:
        counters.observe(code, 0.01)
    bad = analysis.evaluate(ANALYSIS, counters.snapshot(), seconds=30, at=5.0)
    d = analysis.decide([bad], ANALYSIS)
    assert from_json(Decision, json.loads(json.dumps(to_json(d)))) == d
    assert codec.to_json(d)["runs"][0]["measurements"][0]["verdict"] == "fail"
