"""Rollout strategies as explicit step lists: rolling, blue-green, canary, recreate, rollback and abort.

Called by the release engine (which runs the steps, one at a time, against a Target) and by
`deploy --dry-run` (which prints `describe` of each). Pure: this module must not do I/O, read a
clock or look at what is running; the engine passes in the counts it observed where they matter.

What the steps promise, whatever the strategy:

- a `scale` step means "exactly N ready instances of this version": scaling up waits for readiness,
  scaling down drains before it stops, and a repeated step changes nothing (so a resumed rollout
  can run the step it was killed in again);
- traffic moves to instances only once they are ready, and away from instances before they are
  drained: a weights step follows the scale step that starts instances and precedes the one that
  stops them (and the router sends a request to another version rather than refuse it), unless a
  rolling update's maxUnavailable allows no ready instance at all;
- the two labels differ: they name two sets of instances, not two image tags, so a release that
  changes only config still gets a label of its own (the engine's choice, e.g. with the release number);
- every list ends with only the target version running, at its replicas, with 100% of the traffic.

Rolling updates follow the Kubernetes Deployment controller's arithmetic: maxSurge given as a
percentage rounds up and maxUnavailable rounds down (`budget`); at every moment
`instances <= R + surge` and `ready >= R - unavailable`; the controller's sync is modelled with each
change complete (new instances ready) before the next is computed. One deliberate difference: when
both round to 0, Kubernetes allows 1 unavailable instance, shipmate allows 1 surge instance, so a
single-replica service is never left without a ready instance (both given as 0, which Kubernetes'
API refuses and the spec accepts, is the same case).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shipmate.plan.models import StrategyPlan
from shipmate.release.models import Step
from shipmate.spec.values import format_duration

# When neither the service nor the strategy says: the spec's service default (and what render writes).
DEFAULT_MAX_SURGE: int | str = "25%"
DEFAULT_MAX_UNAVAILABLE: int | str = 0

Update = Mapping[str, tuple[int | str, int | str]]
Counts = Mapping[str, tuple[int, int]]


def budget(max_surge: int | str, max_unavailable: int | str, replicas: int) -> tuple[int, int]:
    """(surge, unavailable) instances for `replicas`: percentages of surge round up, of unavailable
    round down; both 0 gives a surge of 1."""
    surge = _scaled(max_surge, replicas, round_up=True)
    unavailable = _scaled(max_unavailable, replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        surge = 1
    return surge, unavailable


def steps_for(strategy: StrategyPlan, services: Sequence[tuple[str, int]], stable: str, new: str, *,
              update: Update | None = None, counts: Counts | None = None) -> tuple[Step, ...]:
    """The steps that move `services` ((name, replicas) of the services that change) from version
    `stable` (running at its replicas) to `new` (not running), by the strategy's type.

    For a rolling update `update` gives a service's (max_surge, max_unavailable), as its Workload
    has them; without it the strategy's values apply, then shipmate's defaults (25%, 0). `counts`
    gives a service's observed (stable, new) instances when they differ from (replicas, 0)."""
    _distinct(stable, new)
    if strategy.type == "rolling":
        out: list[Step] = []
        for service, replicas in services:
            surge, unavailable = _update_of(strategy, service, update)
            old_count, new_count = (counts or {}).get(service, (replicas, 0))
            out += rolling_steps(service, replicas, stable, new, surge, unavailable,
                                 old_count=old_count, new_count=new_count)
        return tuple(out)
    if strategy.type == "blue-green":
        return _blue_green(strategy, services, stable, new)
    if strategy.type == "canary":
        return _canary(strategy, services, stable, new)
    if strategy.type == "recreate":
        return (*(Step.scale_to(s, stable, 0) for s, _ in services),
                *(Step.scale_to(s, new, r) for s, r in services),
                *(Step.route(s, ((stable, 0.0), (new, 100.0))) for s, _ in services))
    raise ValueError(f"unknown strategy type {strategy.type!r}")


def initial_steps(services: Sequence[tuple[str, int]], version: str) -> tuple[Step, ...]:
    """The first release of an environment: nothing to replace, so start every service and route to it."""
    return (*(Step.scale_to(s, version, r) for s, r in services),
            *(Step.route(s, ((version, 100.0),)) for s, _ in services))


def rolling_steps(service: str, replicas: int, old: str, new: str, max_surge: int | str,
                  max_unavailable: int | str, *, old_count: int | None = None, new_count: int = 0) -> tuple[Step, ...]:
    """Replace `old` by `new` for one service, at most `budget` instances above or below `replicas`,
    from `old_count` (default: `replicas`) and `new_count` instances. Each round of the controller
    starts new instances, then sets the weights to each version's share of the instances left after
    the round, then drains and stops old instances: traffic reaches new instances only once they
    are ready and leaves old ones before they drain."""
    _distinct(old, new)
    surge, unavailable = budget(max_surge, max_unavailable, replicas)
    n_old = replicas if old_count is None else old_count
    n_new = new_count
    out: list[Step] = []

    def share() -> float | None:
        return 100.0 * n_new / (n_old + n_new) if n_old + n_new else None

    routed = share()

    def route() -> None:
        nonlocal routed
        now = share()
        if now is not None and now != routed:
            routed = now
            out.append(Step.route(service, ((old, 100.0 - now), (new, now))))

    if n_new > replicas:
        n_new = replicas
        route()
        out.append(Step.scale_to(service, new, n_new))
    while n_old > 0 or n_new < replicas:
        up = max(0, min(replicas + surge - (n_old + n_new), replicas - n_new))
        down = max(0, min(n_old, n_old + n_new + up - (replicas - unavailable)))
        if up:
            n_new += up
            out.append(Step.scale_to(service, new, n_new))
        n_old -= down
        route()  # once the new instances are ready, before the old ones drain
        if down:
            out.append(Step.scale_to(service, old, n_old))
    return tuple(out)


def rollback_steps(services: Sequence[tuple[str, int]], current: str, target: str, fast: bool, *,
                   update: Update | None = None, counts: Counts | None = None) -> tuple[Step, ...]:
    """Steps from `current` back to `target` ((name, replicas) are the target's). `fast`: the target at
    its replicas (a no-op where its instances are still up), then all traffic to it at once, then
    `current` drained and stopped. Otherwise a rolling update, with `update` and `counts` (observed
    (current, target) instances) as for `steps_for`."""
    _distinct(current, target)
    if fast:
        return (*(Step.scale_to(s, target, r) for s, r in services),
                *(Step.route(s, ((current, 0.0), (target, 100.0))) for s, _ in services),
                *(Step.scale_to(s, current, 0) for s, _ in services))
    out: list[Step] = []
    for service, replicas in services:
        surge, unavailable = (update or {}).get(service, (DEFAULT_MAX_SURGE, DEFAULT_MAX_UNAVAILABLE))
        old_count, new_count = (counts or {}).get(service, (replicas, 0))
        out += rolling_steps(service, replicas, current, target, surge, unavailable,
                             old_count=old_count, new_count=new_count)
    return tuple(out)


def abort_steps(services: Sequence[tuple[str, int]], stable: str, new: str) -> tuple[Step, ...]:
    """Undo a rollout in flight: `stable` back at its replicas (a no-op while a canary or blue-green
    keeps it up), all traffic to it at once, `new` drained and stopped."""
    return rollback_steps(services, current=new, target=stable, fast=True)


def describe(step: Step) -> str:
    """One line a person can read, for `deploy --dry-run` and `rollout status`."""
    if step.kind == "scale":
        if step.replicas == 0:
            return f"drain and stop {step.service} {step.version}"
        noun = "instance" if step.replicas == 1 else "instances"
        return f"scale {step.service} {step.version} to {step.replicas} ready {noun}"
    if step.kind == "weights":
        split = ", ".join(f"{version} {_percent(weight)}" for version, weight in step.weights)
        return f"route {step.service}: {split}"
    if step.kind == "pause":
        return "pause until promoted" if step.seconds is None else f"pause {format_duration(step.seconds)}"
    if step.kind == "analysis":
        a = step.analysis
        if a is None:
            return "analyse"
        checks = ", ".join(c.name for c in a.checks)
        return (f"analyse {a.count} runs every {format_duration(a.interval_seconds)} ({checks}); "
                f"abort after {a.failure_limit + 1} failed, hold after {a.inconclusive_limit + 1} inconclusive")
    if step.kind == "smoke":
        return f"smoke-test {step.service} {step.version}: {', '.join(step.checks)}"
    if step.kind == "wait":
        return f"wait {format_duration(step.seconds or 0.0)} before scaling down"
    raise ValueError(f"unknown step kind {step.kind!r}")


def _blue_green(strategy: StrategyPlan, services: Sequence[tuple[str, int]], stable: str,
                new: str) -> tuple[Step, ...]:
    out = [Step.scale_to(s, new, r) for s, r in services]
    out += [Step.route(s, ((stable, 100.0), (new, 0.0))) for s, _ in services]  # the preview: no traffic yet
    if strategy.preview_checks:
        out += [Step.smoke_test(s, new, strategy.preview_checks) for s, _ in services]
    out += [Step.route(s, ((stable, 0.0), (new, 100.0))) for s, _ in services]
    if strategy.scale_down_delay_seconds > 0:
        out.append(Step.wait_for(strategy.scale_down_delay_seconds))
    out += [Step.scale_to(s, stable, 0) for s, _ in services]
    return tuple(out)


def _canary(strategy: StrategyPlan, services: Sequence[tuple[str, int]], stable: str, new: str) -> tuple[Step, ...]:
    running = {s: 0 for s, _ in services}
    out: list[Step] = []

    def weight(w: float) -> None:
        for service, replicas in services:
            wanted = replicas if w >= 100 else max(1, -(-replicas * int(w) // 100))
            if running[service] != wanted:
                running[service] = wanted
                out.append(Step.scale_to(service, new, wanted))
        pct = min(float(w), 100.0)
        out.extend(Step.route(s, ((stable, 100.0 - pct), (new, pct))) for s, _ in services)

    at_full = False
    for spec_step in strategy.steps:
        if spec_step.weight is not None:
            if not at_full:
                weight(spec_step.weight)
            at_full = at_full or spec_step.weight >= 100
        elif spec_step.pause_indefinite:
            out.append(Step.pause_for(None))
        elif spec_step.pause_seconds is not None:
            out.append(Step.pause_for(spec_step.pause_seconds))
        elif spec_step.analysis:
            if strategy.analysis is None:
                raise ValueError(f"strategy {strategy.name}: an analysis step, but no analysis")
            out.append(Step.analyse(strategy.analysis))
    if not at_full:
        weight(100)
    out += [Step.scale_to(s, stable, 0) for s, _ in services]
    return tuple(out)


def _distinct(old: str, new: str) -> None:
    if old == new:
        raise ValueError(f"both versions are labelled {old!r}: a rollout needs one label per set of instances")


def _update_of(strategy: StrategyPlan, service: str, update: Update | None) -> tuple[int | str, int | str]:
    if update and service in update:
        return update[service]
    surge = strategy.max_surge if strategy.max_surge is not None else DEFAULT_MAX_SURGE
    unavailable = strategy.max_unavailable if strategy.max_unavailable is not None else DEFAULT_MAX_UNAVAILABLE
    return surge, unavailable


def _scaled(value: int | str, total: int, *, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    text = value.strip()
    if not text.endswith("%"):
        return int(text)
    percent = int(text[:-1])
    return -(-percent * total // 100) if round_up else percent * total // 100


def _percent(weight: float) -> str:
    return f"{weight:.4g}%" if weight != int(weight) else f"{int(weight)}%"


Layout = dict[str, dict[str, int]]  # service -> version label -> instances
Routes = dict[str, dict[str, float]]  # service -> version label -> weight


def state_after(steps: Sequence[Step], count: int, instances: Mapping[str, Mapping[str, int]],
                routes: Mapping[str, Mapping[str, float]]) -> tuple[Layout, Routes]:
    """What runs once the first `count` steps are done, starting from `instances` and `routes`:
    how the engine rebuilds a rollout's world after a crash (then runs step `count` again, which
    is safe: every step is idempotent). Gates change nothing."""
    layout: Layout = {s: dict(v) for s, v in instances.items()}
    weights: Routes = {s: dict(v) for s, v in routes.items()}
    for step in steps[:count]:
        if step.kind == "scale" and step.service is not None and step.version is not None:
            versions = layout.setdefault(step.service, {})
            if step.replicas:
                versions[step.version] = step.replicas
            else:
                versions.pop(step.version, None)
        elif step.kind == "weights" and step.service is not None:
            weights[step.service] = {v: w for v, w in step.weights if w > 0}
    return layout, weights
