"""The durable rollout engine: runs a rollout's steps against a Target, one at a time.

Called by whoever owns a target's event loop (on the local target, the environment's supervisor
process, `targets/local/runtime.py`). Every change of the rollout is handed to `save` before the
engine acts on it and after each step, so a process killed at any moment leaves a rollout that
names the step it was in; the next engine rebuilds the world as it was before that step
(`steps.state_after`) and runs the step again (steps are idempotent).

What it decides, with the numbers recorded in the rollout:
- a step that fails (instances never ready or crash-looping, a failed smoke check) or a step that
  overruns the progress deadline aborts the rollout: the undo steps (`planning.undo_plan`) put
  all traffic back on the stable instances at once and stop the new ones; an undo step that fails
  fails the rollout (terminal, for a person);
- an analysis step measures the new labels' traffic every interval (`analysis.evaluate` on the
  router counters of every moved service, summed), and records a decision after each run: failed
  aborts, inconclusive pauses for a person, passed moves on;
- a person's request (promote, promote-full, pause, resume, abort) is taken between steps and
  while a pause, a wait or an analysis waits.

It must not: touch processes, routers or the store itself (the target and `save` do), or read
the spec.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from shipmate.errors import Conflict, ShipmateError
from shipmate.plan.models import AnalysisPlan, Workload
from shipmate.release import analysis, providers
from shipmate.release import models as m
from shipmate.release.labels import labels
from shipmate.release.models import Release, Rollout, Run, Step
from shipmate.release.planning import moved, undo_plan
from shipmate.targets.base import StepFailed, Target
from shipmate.targets.local.traffic import VersionSnapshot

log = logging.getLogger(__name__)

REQUESTS = ("promote", "promote-full", "pause", "resume", "abort")


@dataclass(frozen=True)
class Releases:
    """The two releases of a rollout, and what each label of theirs runs."""

    before: Release | None
    after: Release

    def launch(self, service: str, label: str) -> tuple[Workload, str]:
        """(workload, version) of the instances of `service` under `label`."""
        for release in (self.after, self.before):
            if release is not None and service in release.services and labels(release).get(service) == label:
                return release.workload(service), release.version_of(service)
        raise StepFailed(f"no release of this rollout runs {service} as {label}")


class Engine:
    """Runs one rollout at a time against `target`; see the module docstring."""

    def __init__(self, target: Target, *, save: Callable[[Rollout], None], take_request: Callable[[str], str],
                 clock: Callable[[], float] = time.time, tick: float = 0.1, step_delay: float = 0.0,
                 prometheus_url: str | None = None) -> None:
        """`step_delay` seconds are waited before each step that changes something: drills and tests
        use it to stop the engine at a chosen step; it is 0 otherwise."""
        self.target = target
        self.step_delay = step_delay
        self.prometheus_url = prometheus_url
        self.save = save
        self.take_request = take_request
        self.clock = clock
        self.tick = tick

    async def run(self, rollout: Rollout, releases: Releases) -> Rollout:
        """Drive `rollout` to its end; returns it promoted, rolled back or failed."""
        r = rollout
        while not r.done:
            r = self._requests(r, releases)
            if r.done:
                break
            if r.hold is not None:
                await asyncio.sleep(self.tick)
                continue
            now = self.clock()
            if m.overdue(r, now):
                r = self._abort(r, releases, f"step {r.current + 1} took longer than the progress deadline "
                                f"({r.strategy.progress_deadline_seconds:g}s)")
                continue
            step = r.step
            if step is None:
                break
            try:
                r = await self._step(r, step, releases)
            except StepFailed as exc:
                r = self._failed_step(r, releases, str(exc))
        self.save(r)
        return r

    # --- one step --------------------------------------------------------------------------

    async def _step(self, r: Rollout, step: Step, releases: Releases) -> Rollout:
        """Carry out (or wait a tick in) the current step; the rollout after it."""
        if self.step_delay and step.kind in ("scale", "weights"):
            await asyncio.sleep(self.step_delay)
        if step.kind == "scale" and step.service and step.version is not None and step.replicas is not None:
            workload, version = releases.launch(step.service, step.version)
            deadline = r.step_started_at + r.strategy.progress_deadline_seconds
            try:
                await self.target.scale(workload, version, step.version, step.replicas,
                                        within=max(1.0, deadline - self.clock()))
            except StepFailed as exc:
                if self.clock() >= deadline:
                    raise StepFailed(f"the progress deadline ({r.strategy.progress_deadline_seconds:g}s) "
                                     f"passed: {exc}") from exc
                raise
        elif step.kind == "weights" and step.service:
            self.target.set_weights(step.service, step.weight_map)
        elif step.kind in ("pause", "wait"):
            waiting = m.remaining(r, self.clock())
            if waiting is None or waiting > 0:  # an indefinite pause waits for promote
                await asyncio.sleep(self.tick if waiting is None else min(self.tick, waiting))
                return r
        elif step.kind == "smoke" and step.service and step.version is not None:
            failures = await self.target.smoke(step.service, step.version, step.checks)
            if failures:
                raise StepFailed("smoke checks failed: " + "; ".join(failures))
        elif step.kind == "analysis" and step.analysis is not None:
            return await self._analyse(r, step.analysis, releases)
        r = m.advance(r, self.clock())
        self.save(r)
        return r

    async def _analyse(self, r: Rollout, plan: AnalysisPlan, releases: Releases) -> Rollout:
        """One run of the analysis: counters now, one interval (a person may step in), counters
        again; the decision so far recorded."""
        before = self._canary_traffic(releases)
        started = self.clock()
        deadline = started + plan.interval_seconds
        while self.clock() < deadline:
            await asyncio.sleep(min(self.tick, max(0.0, deadline - self.clock())))
            pending = self._requests(r, releases)
            if pending is not r:
                return pending
        after = self._canary_traffic(releases)
        now = self.clock()
        seen = after if after is not None else _EMPTY
        fetched = await providers.fetch([c for c in plan.checks if c.metric not in analysis.BUILT_IN],
                                        self._context(r, plan, releases))
        run = analysis.evaluate(plan, analysis.window(seen, before), seconds=now - started, at=now, fetched=fetched)
        runs: tuple[Run, ...] = (*m.runs_so_far(r), run)
        decision = analysis.decide(runs, plan)
        log.info("analysis of rollout %s: %s (%s)", r.id, decision.verdict, decision.reason)
        r = m.record(r, decision, now)
        self.save(r)
        if decision.verdict == "failed":
            return self._abort(r, releases, f"analysis failed: {decision.reason}")
        return r

    def _context(self, r: Rollout, plan: AnalysisPlan, releases: Releases) -> providers.Context:
        names = moved(releases.before, releases.after)
        new = labels(releases.after)
        return providers.Context(rollout=r.id, environment=r.environment,
                                 version=new[names[0]] if names else "", services=tuple(names),
                                 interval_seconds=plan.interval_seconds, prometheus_url=self.prometheus_url)

    def _canary_traffic(self, releases: Releases) -> VersionSnapshot | None:
        new = labels(releases.after)
        snaps = [s for name in moved(releases.before, releases.after)
                 if (s := self.target.traffic(name, new[name])) is not None]
        return analysis.combine(snaps)

    # --- going back ------------------------------------------------------------------------

    def _failed_step(self, r: Rollout, releases: Releases, reason: str) -> Rollout:
        if r.rolling_back or r.kind == "rollback":
            r = m.fail(r, f"step {r.current + 1} failed while rolling back: {reason}", self.clock())
            self.save(r)
            return r
        return self._abort(r, releases, f"step {r.current + 1} failed: {reason}")

    def _abort(self, r: Rollout, releases: Releases, reason: str) -> Rollout:
        log.warning("rollout %s aborted: %s", r.id, reason)
        if r.kind == "rollback":
            r = m.fail(r, reason, self.clock())
        else:
            r = m.abort(r, reason, self.clock(), undo=undo_plan(releases.before, releases.after))
        self.save(r)
        return r

    # --- a person's requests -----------------------------------------------------------------

    def _requests(self, r: Rollout, releases: Releases) -> Rollout:
        request = self.take_request(r.id)
        if not request:
            return r
        now = self.clock()
        try:
            if request == "abort":
                return self._abort(r, releases, "aborted by a person")
            if request == "promote":
                r = m.promote(r, now)
            elif request == "promote-full":
                r = m.promote(r, now, full=True)
            elif request == "pause":
                r = m.pause(r, "paused by a person", now)
            elif request == "resume":
                r = m.resume(r, now)
        except Conflict as exc:
            log.warning("request %s on rollout %s refused: %s", request, r.id, exc)
            return r
        except ShipmateError as exc:  # pragma: no cover - transitions raise Conflict only
            log.warning("request %s on rollout %s failed: %s", request, r.id, exc)
            return r
        self.save(r)
        return r


_EMPTY = VersionSnapshot(requests=0, errors_5xx=0, by_code={}, buckets=(), latency_sum=0.0, open_connections=0,
                         in_flight=0, websockets_open=0)
