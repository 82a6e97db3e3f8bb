"""From two releases to the steps that move an environment between them. Pure.

Called by `deploy` (forward, with the environment's strategy), `rollback` (back, fast or with the
strategy) and the engine (the undo steps of an abort). Only services whose label changes are
touched (`labels.py`): a release that changes api-server leaves ws-gateway's instances alone. New
services are started at once; services the new release drops are stopped at the end.

The strategy's step lists (`steps.py`) are written for one stable and one new label; services
moved together (a canary of the whole application) may each come from a different stable label, so
the lists are made with two placeholders and each step is then given its service's own labels.
"""

from __future__ import annotations

from dataclasses import replace

from shipmate.plan.models import StrategyPlan, Workload
from shipmate.release.labels import labels
from shipmate.release.models import Release, Step
from shipmate.release.steps import abort_steps, initial_steps, rollback_steps, steps_for

_OLD = "\x00old"
_NEW = "\x00new"


def replicas_of(workload: Workload) -> int:
    """How many instances a release runs of a workload: its replicas, the autoscaler's minimum when
    it autoscales, one for a DaemonSet on the local target's single node."""
    if workload.kind == "DaemonSet":
        return 1
    if workload.autoscaling is not None:
        return workload.autoscaling.min_replicas
    return workload.replicas


def moved(before: Release | None, after: Release) -> list[str]:
    """Services of `after` that exist in `before` under another label: the ones a strategy moves."""
    if before is None:
        return []
    old, new = labels(before), labels(after)
    return [s for s in after.services if s in old and old[s] != new[s]]


def added(before: Release | None, after: Release) -> list[str]:
    old = set(before.services) if before is not None else set()
    return [s for s in after.services if s not in old]


def removed(before: Release | None, after: Release) -> list[str]:
    if before is None:
        return []
    return [s for s in before.services if s not in set(after.services)]


def _bind(steps: tuple[Step, ...], old: dict[str, str], new: dict[str, str]) -> tuple[Step, ...]:
    out = []
    for step in steps:
        if step.service is None:
            out.append(step)
            continue
        names = {_OLD: old[step.service], _NEW: new[step.service]}
        out.append(replace(step, version=names.get(step.version or "", step.version),
                           weights=tuple((names.get(v, v), w) for v, w in step.weights)))
    return tuple(out)


def deploy_steps(before: Release | None, after: Release, strategy: StrategyPlan) -> tuple[Step, ...]:
    """The steps of a deploy from `before` (None: nothing runs yet) to `after` with `strategy`."""
    new = labels(after)
    start = tuple(s for name in added(before, after)
                  for s in initial_steps([(name, replicas_of(after.workload(name)))], new[name]))
    if before is None:
        return start
    old = labels(before)
    names = moved(before, after)
    services = [(s, replicas_of(after.workload(s))) for s in names]
    update = {s: (after.workload(s).max_surge, after.workload(s).max_unavailable) for s in names}
    counts = {s: (replicas_of(before.workload(s)), 0) for s in names}
    move = _bind(steps_for(strategy, services, _OLD, _NEW, update=update, counts=counts), old, new) if names else ()
    stop = tuple(Step.scale_to(s, old[s], 0) for s in removed(before, after))
    return (*start, *move, *stop)


def rollback_plan(current: Release, target: Release, *, fast: bool, strategy: StrategyPlan) -> tuple[Step, ...]:
    """Back from `current` to an earlier release `target`: fast (all traffic at once to the target's
    instances, started first where they are gone) or with the strategy, like a deploy."""
    if not fast:
        return deploy_steps(current, target, strategy)
    old, new = labels(current), labels(target)
    names = moved(current, target)
    services = [(s, replicas_of(target.workload(s))) for s in names]
    start = tuple(s for name in added(current, target)
                  for s in initial_steps([(name, replicas_of(target.workload(name)))], new[name]))
    back = _bind(rollback_steps(services, _OLD, _NEW, fast=True), old, new) if names else ()
    stop = tuple(Step.scale_to(s, old[s], 0) for s in removed(current, target))
    return (*start, *back, *stop)


def undo_plan(before: Release | None, after: Release) -> tuple[Step, ...]:
    """Undo a rollout from `before` to `after` in flight: every moved service back on its stable
    label at once, the new instances stopped, services the rollout added stopped, dropped ones
    started again."""
    new = labels(after)
    stop_added = tuple(Step.scale_to(s, new[s], 0) for s in added(before, after))
    if before is None:
        return stop_added
    old = labels(before)
    names = moved(before, after)
    services = [(s, replicas_of(before.workload(s))) for s in names]
    back = _bind(abort_steps(services, _OLD, _NEW), old, new) if names else ()
    restart = tuple(s for name in removed(before, after)
                    for s in initial_steps([(name, replicas_of(before.workload(name)))], old[name]))
    return (*restart, *back, *stop_added)


def world(release: Release) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, float]]]:
    """What runs when `release` runs alone: every service at its replicas under its label, with all
    of its traffic."""
    names = labels(release)
    instances = {s: {names[s]: replicas_of(release.workload(s))} for s in release.services}
    routes = {s: {names[s]: 100.0} for s in release.services}
    return instances, routes
