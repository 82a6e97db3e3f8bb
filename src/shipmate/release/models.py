"""Releases and rollouts: the frozen values the release engine stores, and the pure transitions of a rollout.

A `Release` is an immutable, numbered snapshot of one environment: the resolved plan, the version of
each service, the secret versions it was built with and the rendered objects. A `Rollout` moves an
environment from one release to another through an explicit list of `Step`s (made by
`shipmate.release.steps`); the analysis of a canary produces `Measurement`s, `Run`s and `Decision`s
(made by `shipmate.release.analysis`) that the rollout keeps with the numbers behind them.

Called by the release engine (which persists every value here through `shipmate.release.codec`
before and after each step), by the CLI's `rollout status` and `history`, and by tests with plain
values. Pure: this module must not do I/O or read a clock. Every transition takes `now` as an
argument and returns a new `Rollout`; the engine stores it before acting on it.

The life of a rollout (its `phase`):

    progressing ──▶ paused (a pause step, a person, or an inconclusive analysis) ──▶ progressing ...
         │    └───▶ analysing (an analysis step) ──▶ progressing ...
         ├──▶ promoted                                 every step done
         └──▶ aborted (undo steps running) ──▶ rolled-back
                              └────────────────────▶ failed (the engine gave up)

A rollout of kind "rollback" ends "rolled-back" instead of "promoted".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from shipmate.errors import Conflict
from shipmate.plan.models import AnalysisPlan, Plan, StrategyPlan, Workload

StepKind = Literal["scale", "weights", "pause", "analysis", "smoke", "wait"]
Verdict = Literal["pass", "fail", "inconclusive"]
DecisionVerdict = Literal["running", "passed", "failed", "inconclusive"]
Phase = Literal["progressing", "paused", "analysing", "promoted", "aborted", "rolled-back", "failed"]
RolloutKind = Literal["deploy", "rollback"]

# Steps that wait for time, numbers or a person rather than change anything; `promote` skips them.
GATES: frozenset[str] = frozenset({"pause", "analysis", "smoke"})
TERMINAL: frozenset[str] = frozenset({"promoted", "rolled-back", "failed"})


@dataclass(frozen=True)
class Release:
    """One environment's immutable, numbered snapshot: what `deploy` made and `rollback` redeploys."""

    number: int
    environment: str
    created_at: float
    spec_digest: str
    plan: Plan
    versions: tuple[tuple[str, str], ...]  # (service, version), in plan order
    secret_versions: tuple[tuple[str, int], ...]  # (secret, version): references, never values
    objects: tuple[Mapping[str, Any], ...]  # the rendered Kubernetes objects, as plain data
    message: str
    author: str
    git_commit: str | None
    overrides: tuple[tuple[str, str], ...]  # the `--set PATH=VALUE` given, in order

    def version_of(self, service: str) -> str:
        """The version label this release gives `service` (KeyError if it has none)."""
        for name, version in self.versions:
            if name == service:
                return version
        raise KeyError(service)

    def workload(self, service: str) -> Workload:
        """The planned workload of `service` (KeyError if the plan has none)."""
        return self.plan.workload(service)

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(w.name for w in self.plan.workloads)


@dataclass(frozen=True)
class Step:
    """One step of a rollout. Which fields matter depends on `kind`:

    - `scale`: make exactly `replicas` ready instances of `version` of `service` (more: start them
      and wait until ready; fewer: drain, then stop). Idempotent.
    - `weights`: route `service`'s traffic by `weights`, (version, percent) summing to 100.
    - `pause`: wait `seconds`, or until promoted when `seconds` is None.
    - `analysis`: run the `analysis` plan against the new version until it decides.
    - `smoke`: request each path of `checks` from `version` of `service` (a blue-green preview).
    - `wait`: wait `seconds` (a blue-green scale-down delay: the old version stays up for a fast switch back).

    Build them with the class methods (`Step.scale_to(...)`, ...) rather than by hand.
    """

    kind: StepKind
    service: str | None = None
    version: str | None = None
    replicas: int | None = None
    weights: tuple[tuple[str, float], ...] = ()
    seconds: float | None = None
    analysis: AnalysisPlan | None = None
    checks: tuple[str, ...] = ()

    @classmethod
    def scale_to(cls, service: str, version: str, replicas: int) -> Step:
        return cls("scale", service=service, version=version, replicas=replicas)

    @classmethod
    def route(cls, service: str, weights: tuple[tuple[str, float], ...]) -> Step:
        return cls("weights", service=service, weights=weights)

    @classmethod
    def pause_for(cls, seconds: float | None) -> Step:
        return cls("pause", seconds=seconds)

    @classmethod
    def analyse(cls, plan: AnalysisPlan) -> Step:
        return cls("analysis", analysis=plan)

    @classmethod
    def smoke_test(cls, service: str, version: str, checks: tuple[str, ...]) -> Step:
        return cls("smoke", service=service, version=version, checks=checks)

    @classmethod
    def wait_for(cls, seconds: float) -> Step:
        return cls("wait", seconds=seconds)

    @property
    def weight_map(self) -> dict[str, float]:
        return dict(self.weights)


@dataclass(frozen=True)
class Measurement:
    """One check measured over one interval, with the numbers in `detail`."""

    check: str
    metric: str
    value: float | None
    verdict: Verdict
    detail: str


@dataclass(frozen=True)
class Run:
    """The measurements of one analysis interval, taken at `at`."""

    at: float
    measurements: tuple[Measurement, ...]

    @property
    def verdict(self) -> Verdict:
        """fail if any check failed; inconclusive if none failed and any was inconclusive (or none ran)."""
        verdicts = {m.verdict for m in self.measurements}
        if "fail" in verdicts:
            return "fail"
        if "inconclusive" in verdicts or not verdicts:
            return "inconclusive"
        return "pass"


@dataclass(frozen=True)
class Decision:
    """What an analysis concluded from its runs so far, with the runs and counts behind it.

    `step` and `at` are filled in by `record` (the rollout step it was about and when)."""

    verdict: DecisionVerdict
    reason: str
    runs: tuple[Run, ...]
    passed: int
    failed: int
    inconclusive: int
    count: int
    failure_limit: int
    inconclusive_limit: int
    step: int | None = None
    at: float | None = None


@dataclass(frozen=True)
class Rollout:
    """An environment on its way from release `from_release` to `to_release` (None: nothing ran before).

    `current` is the index of the step running or next; `step_started_at` when it began. `hold` says
    why a person is needed (paused by one, or an inconclusive analysis); `skip_gates` is set by a full
    promotion; `undo_from` is the index where the undo steps of an abort begin.
    """

    id: str
    environment: str
    from_release: int | None
    to_release: int
    strategy: StrategyPlan
    steps: tuple[Step, ...]
    current: int
    phase: Phase
    started_at: float
    updated_at: float
    step_started_at: float
    decisions: tuple[Decision, ...] = ()
    message: str = ""
    kind: RolloutKind = "deploy"
    hold: str | None = None
    skip_gates: bool = False
    undo_from: int | None = None

    @property
    def done(self) -> bool:
        return self.phase in TERMINAL

    @property
    def step(self) -> Step | None:
        """The step running or next, None once every step is done."""
        return self.steps[self.current] if self.current < len(self.steps) else None

    @property
    def rolling_back(self) -> bool:
        return self.undo_from is not None


def start(rollout_id: str, environment: str, from_release: int | None, to_release: int,
          strategy: StrategyPlan, steps: tuple[Step, ...], now: float, *,
          kind: RolloutKind = "deploy", message: str = "") -> Rollout:
    """A new rollout at its first step (already finished if there are no steps)."""
    first = Rollout(id=rollout_id, environment=environment, from_release=from_release, to_release=to_release,
                    strategy=strategy, steps=steps, current=0, phase="progressing", started_at=now,
                    updated_at=now, step_started_at=now, message=message, kind=kind)
    return _enter(first, 0, now)


def advance(rollout: Rollout, now: float) -> Rollout:
    """The current step is done: move to the next (over gates after a full promotion), or finish."""
    _require_active(rollout, "advance")
    return _enter(rollout, rollout.current + 1, now)


def pause(rollout: Rollout, reason: str, now: float) -> Rollout:
    """Hold the rollout for a person. The step running completes; no further step starts until `resume`."""
    _require_forward(rollout, "pause")
    return replace(rollout, hold=reason or "paused", phase="paused", updated_at=now)


def resume(rollout: Rollout, now: float) -> Rollout:
    """Lift a hold. The held step starts over: a timed pause waits its full time again, an analysis
    takes fresh runs. Conflict at an indefinite pause step, which only `promote` passes."""
    _require_forward(rollout, "resume")
    step = rollout.step
    if rollout.hold is None:
        if step is not None and step.kind == "pause" and step.seconds is None:
            raise Conflict(f"rollout {rollout.id} waits at step {rollout.current + 1} until promoted: "
                           "`shipmate rollout promote` moves it on")
        return rollout
    return replace(rollout, hold=None, phase=_phase_of(step), step_started_at=now, updated_at=now)


def promote(rollout: Rollout, now: float, *, full: bool = False) -> Rollout:
    """Pass the gate the rollout is at (a pause, an analysis or a smoke test), lifting any hold.
    `full` also passes every later gate. Conflict when not at a gate and not `full`."""
    _require_forward(rollout, "promote")
    step = rollout.step
    at_gate = step is not None and step.kind in GATES
    if not at_gate and not full:
        raise Conflict(f"rollout {rollout.id} is not waiting at a pause or analysis (step {rollout.current + 1} "
                       f"is a {step.kind if step else 'finished'} step): `promote --full` skips every later one")
    promoted = replace(rollout, hold=None, skip_gates=rollout.skip_gates or full, updated_at=now)
    if at_gate:
        return _enter(promoted, promoted.current + 1, now)
    return replace(promoted, phase=_phase_of(step))


def abort(rollout: Rollout, reason: str, now: float, *, undo: tuple[Step, ...]) -> Rollout:
    """Stop going forward and undo: the steps not yet run are replaced by `undo` (from
    `steps.abort_steps` or `steps.rollback_steps`), which run from the current index. Aborting a
    rollout already rolling back returns it unchanged."""
    _require_active(rollout, "abort")
    if rollout.rolling_back:
        return rollout
    aborted = replace(rollout, steps=rollout.steps[:rollout.current] + undo, undo_from=rollout.current,
                      message=reason, hold=None, skip_gates=False, phase="aborted", updated_at=now)
    return _enter(aborted, rollout.current, now)


def fail(rollout: Rollout, reason: str, now: float) -> Rollout:
    """The engine gave up (an undo step could not be carried out): terminal, for a person to look at."""
    if rollout.done:
        return rollout
    return replace(rollout, phase="failed", message=reason, hold=None, updated_at=now)


def record(rollout: Rollout, decision: Decision, now: float) -> Rollout:
    """Keep an analysis decision (stamped with the step and time) and act on it: passed moves past the
    analysis step; inconclusive holds the rollout for a person; failed only records (the engine then
    calls `abort` with the undo steps). A "running" decision replaces the previous running one of the
    same step, so the rollout holds every final decision plus the runs of the analysis in progress."""
    _require_active(rollout, "record a decision for")
    stamped = replace(decision, step=rollout.current, at=now)
    kept = rollout.decisions
    if kept and kept[-1].verdict == "running" and kept[-1].step == rollout.current:
        kept = kept[:-1]
    updated = replace(rollout, decisions=(*kept, stamped), updated_at=now)
    if rollout.rolling_back:
        return updated
    if decision.verdict == "passed":
        return _enter(updated, rollout.current + 1, now)
    if decision.verdict == "inconclusive":
        return replace(updated, hold=f"analysis inconclusive: {decision.reason}", phase="paused")
    if decision.verdict == "failed":
        return replace(updated, message=f"analysis failed: {decision.reason}")
    return replace(updated, phase="paused" if rollout.hold else "analysing")


def runs_so_far(rollout: Rollout) -> tuple[Run, ...]:
    """The runs of the analysis in progress at the current step (after a restart of the engine, say)."""
    if rollout.decisions:
        last = rollout.decisions[-1]
        if last.verdict == "running" and last.step == rollout.current:
            return last.runs
    return ()


def remaining(rollout: Rollout, now: float) -> float | None:
    """Seconds left in the timed pause or wait at the current step; None for any other step."""
    step = rollout.step
    if step is None or step.kind not in ("pause", "wait") or step.seconds is None:
        return None
    return max(0.0, rollout.step_started_at + step.seconds - now)


def overdue(rollout: Rollout, now: float) -> bool:
    """The current step has taken longer than the strategy's progress deadline. Pauses, waits and
    analyses keep their own time and are never overdue; neither is a held rollout."""
    step = rollout.step
    if rollout.done or step is None or rollout.hold is not None or step.kind in ("pause", "wait", "analysis"):
        return False
    return now - rollout.step_started_at > rollout.strategy.progress_deadline_seconds


def _enter(rollout: Rollout, index: int, now: float) -> Rollout:
    steps = rollout.steps
    if rollout.skip_gates and not rollout.rolling_back:
        while index < len(steps) and steps[index].kind in GATES:
            index += 1
    if index >= len(steps):
        finished: Phase = "rolled-back" if rollout.rolling_back or rollout.kind == "rollback" else "promoted"
        return replace(rollout, current=len(steps), phase=finished, hold=None, step_started_at=now, updated_at=now)
    phase: Phase = "aborted" if rollout.rolling_back else "paused" if rollout.hold else _phase_of(steps[index])
    return replace(rollout, current=index, phase=phase, step_started_at=now, updated_at=now)


def _phase_of(step: Step | None) -> Phase:
    if step is not None and step.kind == "pause":
        return "paused"
    if step is not None and step.kind == "analysis":
        return "analysing"
    return "progressing"


def _require_active(rollout: Rollout, action: str) -> None:
    if rollout.done:
        raise Conflict(f"cannot {action} rollout {rollout.id}: it has already ended ({rollout.phase})")


def _require_forward(rollout: Rollout, action: str) -> None:
    _require_active(rollout, action)
    if rollout.rolling_back:
        raise Conflict(f"cannot {action} rollout {rollout.id}: it is rolling back ({rollout.message})")
