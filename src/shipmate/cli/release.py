"""Release commands: `deploy`, `history`, `diff`, `rollback` and `rollout status|promote|pause|resume|abort`.

They record releases and rollouts in the store; the environment's supervisor process (started by
`up`) runs the rollouts with the engine and these commands watch it through the store. A person's
request (promote, pause, resume, abort) is left on the rollout for the engine to take.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from shipmate.cli.app import Application, output_option
from shipmate.cli.local import _environment, author, git_commit, revive
from shipmate.errors import CheckFailed, Conflict, NotFound, UsageError

if TYPE_CHECKING:
    from shipmate.release.history import History
    from shipmate.release.models import Rollout

_ENV_HELP = "The environment (default: dev, or the only one with target: local)."


@contextmanager
def _history(app: Application) -> Iterator[History]:
    from shipmate.release.history import History
    from shipmate.store.db import Store

    store = Store.open(app.state_dir)
    try:
        yield History(store)
    finally:
        store.close()


def _env(app: Application, given: str | None) -> str:
    """The environment: as given (the store, not the spec, knows whether it runs: reading the spec
    would only slow the command down), else the spec's default local environment."""
    return given if given is not None else _environment(app, None)


def _wake(app: Application, environment: str) -> None:
    from shipmate.targets.local.control import env_dir, wake

    wake(env_dir(app.state_dir, environment))


def _require_up(app: Application, environment: str) -> None:
    from shipmate.targets.local.control import env_dir, holder_pid

    revive(app, environment)
    if holder_pid(env_dir(app.state_dir, environment)) is None:
        raise NotFound(f"{environment} is not up; start it with `shipmate up --env {environment}`")


# --- deploy -------------------------------------------------------------------------------------


@click.command("deploy")
@output_option
@click.option("--env", "-e", "environment", default=None, show_envvar=True, help=_ENV_HELP)
@click.option("--version", "version", default=None,
              help="The version of the services shipped (APP_VERSION, image tag).")
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE",
              help="Override a value of the spec for this release.")
@click.option("--strategy", default=None, help="A strategy of the spec to use instead of the environment's.")
@click.option("--message", "-m", default="", help="Why: kept with the release.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the rollout ends.")
@click.option("--dry-run", is_flag=True, help="Show the release's steps and change nothing.")
@click.option("--timeout", type=float, default=1800.0, show_default=True, help="Seconds to wait with --wait.")
@click.pass_obj
def deploy(app: Application, environment: str | None, version: str | None, sets: tuple[str, ...],
           strategy: str | None, message: str, wait: bool, dry_run: bool, timeout: float) -> None:
    """Ship a new release to an environment with its strategy, and watch the rollout."""
    environment = _environment(app, environment)
    rollout_id = start_deploy(app, environment, version=version, sets=sets, strategy=strategy, message=message,
                              dry_run=dry_run)
    if rollout_id is not None and wait:
        _verdict(app, watch(app, environment, rollout_id, timeout))


def start_deploy(app: Application, environment: str, *, version: str | None = None, sets: tuple[str, ...] = (),
                 strategy: str | None = None, message: str = "", dry_run: bool = False) -> str | None:
    """Record the next release and its rollout for the supervisor to run; its id (None when there
    is nothing to roll out, or with `dry_run`, which prints the steps instead)."""
    from shipmate.release import models as m
    from shipmate.release.builder import build, parse_set
    from shipmate.release.planning import deploy_steps
    from shipmate.release.steps import describe

    loaded = app.load_spec()
    pairs = [parse_set(text) for text in sets]
    if strategy is not None:
        if strategy not in loaded.base.strategies and strategy != "rolling":
            known = ", ".join(sorted(loaded.base.strategies)) or "none"
            raise UsageError(f"--strategy {strategy}: no such strategy in the spec (declared: {known})")
        pairs.append((f"environments.{environment}.strategy", strategy))
    with _history(app) as history:
        current = history.current(environment)
        if current is None:
            raise NotFound(f"{environment} has no release yet; `shipmate up --env {environment}` records the first")
        number = history.next_number(environment)
        release = build(loaded.for_env(environment), environment, number=number, created_at=time.time(),
                        spec_digest=loaded.digest, message=message, author=author(),
                        git_commit=git_commit(app.file.absolute().parent), sets=pairs, version=version)
        steps = deploy_steps(current, release, release.plan.strategy)
        plan_strategy = release.plan.strategy
        if dry_run or not steps:
            if not steps:
                app.info(f"nothing to roll out: release {current.number} already runs this")
            else:
                app.info(f"release {number} of {environment} ({plan_strategy.name}, {plan_strategy.type}) would run:")
            for i, step in enumerate(steps, 1):
                app.out.print(f"  {i:>2}. {describe(step)}", markup=False)
            return None
        _require_up(app, environment)
        live = history.active(environment)
        if live is not None:
            raise Conflict(f"rollout {live.id} of {environment} is in progress ({live.phase}); wait for it, "
                           "or `shipmate rollout abort`")
        history.add(release, keep=release.plan.history)
        rollout = m.start(f"{environment}-{number}-{uuid.uuid4().hex[:6]}", environment, current.number, number,
                          plan_strategy, steps, time.time(), message=message)
        history.save(rollout)
    _wake(app, environment)
    app.info(f"release {number} of {environment}: rollout {rollout.id} ({plan_strategy.type}, {len(steps)} steps)")
    return rollout.id


# --- rollback -----------------------------------------------------------------------------------


@click.command("rollback")
@output_option
@click.option("--env", "-e", "environment", default=None, show_envvar=True, help=_ENV_HELP)
@click.option("--to", "to", type=int, default=None, help="The release to go back to (default: the previous one).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the rollback ends.")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds to wait with --wait.")
@click.pass_obj
def rollback(app: Application, environment: str | None, to: int | None, wait: bool, timeout: float) -> None:
    """Go back to an earlier release (config and secret versions included); a rollout in progress is aborted."""
    environment = _env(app, environment)
    rollout_id = start_rollback(app, environment, to=to)
    if wait:
        _verdict(app, watch(app, environment, rollout_id, timeout), goal="rolled-back")


def start_rollback(app: Application, environment: str, *, to: int | None = None) -> str:
    """Record a rollback (or ask the engine to abort the rollout in progress); the rollout's id."""
    from shipmate.release import models as m
    from shipmate.release.planning import rollback_plan

    _require_up(app, environment)
    with _history(app) as history:
        live = history.active(environment)
        if live is not None and to is None:
            history.request(environment, "abort")
            _wake(app, environment)
            app.info(f"aborting rollout {live.id}: traffic back to release {live.from_release}")
            return live.id
        if live is not None:
            raise Conflict(f"rollout {live.id} is in progress; `shipmate rollback` without --to aborts it")
        current = history.current(environment)
        if current is None:
            raise NotFound(f"{environment} has no release")
        target_number = to if to is not None else history.previous(environment, current.number)
        if target_number is None:
            raise NotFound(f"{environment} has no release before {current.number} to go back to")
        if target_number == current.number:
            raise UsageError(f"release {target_number} is the one running")
        target = history.get(environment, target_number)
        fast = current.plan.rollback_strategy == "fast"
        steps = rollback_plan(current, target, fast=fast, strategy=target.plan.strategy)
        rollout = m.start(f"{environment}-rollback-{target_number}-{uuid.uuid4().hex[:6]}", environment,
                          current.number, target_number, target.plan.strategy, steps, time.time(),
                          kind="rollback", message=f"rollback to release {target_number}")
        history.save(rollout)
    _wake(app, environment)
    app.info(f"rolling {environment} back from release {current.number} to {target_number} "
             f"({'fast' if fast else target.plan.strategy.type}, {len(steps)} steps)")
    return rollout.id


# --- watching ----------------------------------------------------------------------------------


def _find(history: History, environment: str, rollout_id: str) -> Rollout:
    for rollout in history.rollouts(environment):
        if rollout.id == rollout_id:
            return rollout
    raise NotFound(f"no rollout {rollout_id}")


def watch(app: Application, environment: str, rollout_id: str, timeout: float, *, quiet: bool = False) -> Rollout:
    """Print each change of a rollout (unless `quiet`) until it ends; the rollout at its end.
    CheckFailed when it has not ended within `timeout` seconds."""
    from shipmate.release.steps import describe

    deadline = time.monotonic() + timeout
    seen: tuple[Any, ...] = ()
    told = 0
    with _history(app) as history:
        while True:
            r = _find(history, environment, rollout_id)
            key = (r.current, r.phase, r.hold, len(r.decisions))
            if key != seen and not quiet:
                seen = key
                step = r.step
                where = f"step {min(r.current + 1, len(r.steps))}/{len(r.steps)}"
                line = f"  {r.phase:<11} {where}: {describe(step) if step else 'done'}"
                if r.hold:
                    line += f"  (held: {r.hold})"
                app.info(line)
                final = [d for d in r.decisions if d.verdict != "running"]
                for decision in final[told:]:
                    app.info(f"  analysis {decision.verdict}: {decision.reason}")
                told = len(final)
            if r.done:
                break
            if time.monotonic() > deadline:
                raise CheckFailed(f"rollout {r.id} has not ended after {timeout:g}s ({r.phase}); "
                                  "`shipmate rollout status` shows where it is")
            time.sleep(0.05)
    return r


def _verdict(app: Application, r: Rollout, goal: str | None = None) -> None:
    """Print a watched rollout's end (JSON with --output json); exit 1 unless it reached its goal
    (promoted for a deploy; rolled back for a rollback, or for a deploy that `rollback` aborted)."""
    if app.json:
        from shipmate.release.codec import to_json

        app.print_json(to_json(r))
    goal = goal or ("rolled-back" if r.kind == "rollback" else "promoted")
    if r.phase != goal:
        raise CheckFailed(f"rollout {r.id} ended {r.phase}: {r.message or 'see shipmate rollout status'}")
    app.info(f"rollout {r.id} {r.phase}: release {r.to_release} runs")


# --- history and diff ------------------------------------------------------------------------------


@click.command("history")
@output_option
@click.option("--env", "-e", "environment", default=None, show_envvar=True, help=_ENV_HELP)
@click.pass_obj
def history_(app: Application, environment: str | None) -> None:
    """The releases of an environment, newest first, with their rollouts' outcomes."""
    environment = _environment(app, environment)
    with _history(app) as history:
        env = history.store.environment(environment)
        current = env.release if env is not None else None
        releases = [history.get(environment, n) for n in reversed(history.numbers(environment))]
        outcome = {r.to_release: r.phase for r in history.rollouts(environment)}
    rows: list[dict[str, Any]] = [{"release": r.number, "current": r.number == current, "created": r.created_at,
             "versions": dict(r.versions), "message": r.message, "author": r.author, "gitCommit": r.git_commit,
             "overrides": [f"{p}={'***' if p.startswith('secrets.') else v}" for p, v in r.overrides],
             "rollout": outcome.get(r.number)} for r in releases]
    if app.json:
        app.print_json(rows)
        return
    for row in rows:
        versions = sorted(set(row["versions"].values()))
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["created"]))
        mark = "*" if row["current"] else " "
        app.out.print(f"{mark} {row['release']:>3}  {stamp}  {', '.join(versions):<16} "
                      f"{row['rollout'] or 'first':<12} {row['author']}: {row['message'] or '-'}", markup=False)
        if row["overrides"]:
            app.out.print(f"        --set {' --set '.join(row['overrides'])}", markup=False)


@click.command("diff")
@click.argument("first", type=int)
@click.argument("second", type=int)
@click.option("--env", "-e", "environment", default=None, show_envvar=True, help=_ENV_HELP)
@click.pass_obj
def diff(app: Application, first: int, second: int, environment: str | None) -> None:
    """What changed between two releases: images, versions, config, objects (secret values masked)."""
    from shipmate.release.diff import diff_releases, format_diff

    environment = _environment(app, environment)
    with _history(app) as history:
        changes = diff_releases(history.get(environment, first), history.get(environment, second))
    lines = format_diff(changes)
    for line in lines or [f"releases {first} and {second} are the same"]:
        app.out.print(line, markup=False)


# --- rollout control ------------------------------------------------------------------------------


@click.group("rollout")
def rollout() -> None:
    """Watch and steer the rollout in progress."""


@rollout.command("status")
@output_option
@click.option("--env", "-e", "environment", default=None, show_envvar=True, help=_ENV_HELP)
@click.option("--watch", "-w", "follow", is_flag=True, help="Follow it until it ends.")
@click.pass_obj
def rollout_status(app: Application, environment: str | None, follow: bool) -> None:
    """Where the latest rollout is: its steps, phase, decisions with their numbers."""
    from shipmate.release.codec import to_json
    from shipmate.release.steps import describe

    environment = _env(app, environment)
    revive(app, environment)
    with _history(app) as history:
        r = history.latest(environment)
    if r is None:
        raise NotFound(f"no rollout of {environment} yet")
    if follow and not r.done:
        _verdict(app, watch(app, environment, r.id, 3600.0))
        return
    if app.json:
        app.print_json(to_json(r))
        return
    out = app.out
    out.print(f"rollout {r.id}: release {r.from_release} -> {r.to_release} ({r.kind}, {r.strategy.type}), "
              f"{r.phase}" + (f", held: {r.hold}" if r.hold else ""), markup=False)
    done = min(r.current, len(r.steps))
    width = 30
    filled = round(width * done / len(r.steps)) if r.steps else width
    out.print(f"  [{'#' * filled}{'.' * (width - filled)}] {done}/{len(r.steps)} steps", markup=False)
    if r.message:
        out.print(f"  {r.message}", markup=False)
    for line in _traffic_lines(app, environment, r):
        out.print(line, markup=False)
    for i, step in enumerate(r.steps):
        mark = "x" if i < r.current else ">" if i == r.current and not r.done else " "
        out.print(f"  [{mark}] {i + 1:>2}. {describe(step)}", markup=False)
    for decision in r.decisions:
        out.print(f"  analysis at step {(decision.step or 0) + 1}: {decision.verdict} ({decision.reason})",
                  markup=False)
        for run in decision.runs[-1:]:
            for measurement in run.measurements:
                out.print(f"      {measurement.check}: {measurement.verdict}, {measurement.detail}", markup=False)


def _traffic_lines(app: Application, environment: str, r: Rollout) -> list[str]:
    """Per service: the weights the rollout has set so far, and each version's requests and 5xx
    as its router counted them (read from the environment's metrics endpoint)."""
    import urllib.request

    from shipmate.cli.local import status_of
    from shipmate.release.steps import state_after

    _layout, routes = state_after(r.steps, r.current, {}, {})
    port = status_of(app.state_dir, environment)["metrics"]["port"]
    counts: dict[tuple[str, str], list[int]] = {}
    if port:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            text = ""
        for match in _REQUESTS.finditer(text):
            slot = counts.setdefault((match["service"], match["version"]), [0, 0])
            slot[0] += int(match["n"])
            slot[1] += int(match["n"]) if match["code"].startswith("5") else 0
    lines = []
    for service, weights in sorted(routes.items()):
        shown = ", ".join(f"{label} {weight:g}%" for label, weight in weights.items())
        lines.append(f"  {service}: {shown}")
        for label in weights:
            n, errors = counts.get((service, label), [0, 0])
            if n:
                lines.append(f"      {label}: {n} requests, {errors} 5xx ({100 * errors / n:.1f}%)")
    return lines


_REQUESTS = re.compile(r'^shipmate_router_requests_total\{service="(?P<service>[^"]*)",version="(?P<version>[^"]*)",'
                       r'code="(?P<code>\d+)"\} (?P<n>\d+)$', re.MULTILINE)


def _request(app: Application, environment: str | None, request: str) -> None:
    environment = _env(app, environment)
    revive(app, environment)
    with _history(app) as history:
        live = history.request(environment, request)
    _wake(app, environment)
    app.info(f"{request} requested for rollout {live.id}")


@rollout.command("promote")
@click.option("--env", "-e", "environment", default=None, show_envvar=True, help=_ENV_HELP)
@click.option("--full", is_flag=True, help="Skip every remaining pause and analysis.")
@click.pass_obj
def rollout_promote(app: Application, environment: str | None, full: bool) -> None:
    """Move past the pause or analysis the rollout waits at."""
    _request(app, environment, "promote-full" if full else "promote")


@rollout.command("pause")
@click.option("--env", "-e", "environment", default=None, show_envvar=True, help=_ENV_HELP)
@click.pass_obj
def rollout_pause(app: Application, environment: str | None) -> None:
    """Hold the rollout after its current step."""
    _request(app, environment, "pause")


@rollout.command("resume")
@click.option("--env", "-e", "environment", default=None, show_envvar=True, help=_ENV_HELP)
@click.pass_obj
def rollout_resume(app: Application, environment: str | None) -> None:
    """Lift a hold."""
    _request(app, environment, "resume")


@rollout.command("abort")
@click.option("--env", "-e", "environment", default=None, show_envvar=True, help=_ENV_HELP)
@click.pass_obj
def rollout_abort(app: Application, environment: str | None) -> None:
    """Send all traffic back to the stable version at once and stop the new one."""
    _request(app, environment, "abort")

