"""`shipmate drill rollback`: prove that a release can be rolled back under load without losing a request.

Under generated load through the router of one service (bounded, loopback), it deploys a new
release (the current one with `-drill` added to its version), waits until it serves, rolls it
back, and reports: requests, failed requests, time to roll back (from the command to every
instance and all traffic back on the old version), and the version served before and after.
The report has the shape every drill shares (`shipmate.drills.report`); `--report FILE.html`
writes it as a page with a chart. Exit 0 only when the drill passed.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from shipmate.cli.app import Application, output_option
from shipmate.cli.local import _environment, status_of
from shipmate.errors import CheckFailed, NotFound


@click.group("drill")
def command() -> None:
    """Drills that prove recovery on a real environment."""


@command.command("rollback")
@output_option
@click.option("--env", "-e", "environment", default=None, show_envvar=True,
              help="The environment (default: dev, or the only one with target: local).")
@click.option("--service", default=None, help="The service to load (default: the first with a router).")
@click.option("--path", default="/", show_default=True, help="The path the load asks for.")
@click.option("--report", "report_file", type=click.Path(path_type=Path), default=None,
              help="Also write the report as an HTML page.")
@click.option("--settle", type=float, default=1.0, show_default=True,
              help="Seconds of load before the deploy, between deploy and rollback, and after.")
@click.pass_obj
def rollback_drill(app: Application, environment: str | None, service: str | None, path: str,
                   report_file: Path | None, settle: float) -> None:
    """Deploy a new release under load, roll it back, and report failed requests and the time it took."""
    from shipmate.cli.release import start_deploy, start_rollback, watch
    from shipmate.drills.load import Load
    from shipmate.drills.report import Check, Report, to_html, to_json, to_text
    from shipmate.files import atomic_write

    environment = _environment(app, environment)
    started = time.time()
    doc = status_of(app.state_dir, environment)
    if doc["phase"] != "ready":
        raise NotFound(f"{environment} is not up ({doc['phase']}); start it with `shipmate up --env {environment}`")
    routed = [s for s in doc["services"] if s["router"]["port"] and (service is None or s["name"] == service)]
    if not routed:
        raise NotFound(f"no service {'named ' + service + ' ' if service else ''}with a router in {environment}")
    target = routed[0]
    version_before = target["version"]
    release_before = doc["release"]
    load = Load(target["router"]["port"], path=path)
    rollback_seconds: float | None = None
    deployed = rolled_back = ""
    try:
        time.sleep(settle)
        rollout_id = start_deploy(app, environment, version=f"{version_before}-drill",
                                  message="rollback drill: a release to roll back")
        if rollout_id is None:
            raise CheckFailed("the drill's release changed nothing to roll out")
        deployed = watch(app, environment, rollout_id, 600.0, quiet=True).phase
        time.sleep(settle)
        began = time.monotonic()
        back = start_rollback(app, environment, to=release_before)
        rolled_back = watch(app, environment, back, 600.0, quiet=True).phase
        rollback_seconds = time.monotonic() - began
        time.sleep(settle)
    finally:
        load.stop()
    after = next(s for s in status_of(app.state_dir, environment)["services"] if s["name"] == target["name"])
    served = [a.version for a in load.in_order() if a.version]
    failed = load.failed()
    metrics = {
        "service": target["name"], "requests": len(load.answers), "failed_requests": len(failed),
        "rollback_seconds": round(rollback_seconds, 3) if rollback_seconds is not None else None,
        "version_before": version_before, "version_after": after["version"],
        "last_version_served": served[-1] if served else None,
    }
    checks = (
        Check("deploy", deployed == "promoted", f"the drill's release ended {deployed or 'not at all'}"),
        Check("rollback", rolled_back == "rolled-back", f"the rollback ended {rolled_back or 'not at all'}"
              + (f" in {rollback_seconds:.2f}s" if rollback_seconds is not None else "")),
        Check("no failed request", not failed, f"{len(failed)} of {len(load.answers)} requests failed"
              + (f", first: {failed[0].error or failed[0].status}" if failed else "")),
        Check("old version back", after["version"] == version_before and all(
            i["version"] == version_before for i in after["instances"]),
            f"{after['version']} serves after the rollback (was {version_before})"),
    )
    report = Report("rollback", environment, started, time.time(), metrics, checks, tuple(load.timeline()))
    if report_file is not None:
        atomic_write(report_file, to_html(report))
    if app.json:
        app.print_json(to_json(report))
    else:
        for line in to_text(report):
            app.out.print(line, markup=False)
    if not report.passed:
        raise CheckFailed(f"drill rollback on {environment} failed")
