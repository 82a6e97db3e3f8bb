"""`shipmate plan --env ENV`: the resolved plan of one environment."""

from __future__ import annotations

import dataclasses

import click

from shipmate.cli.app import Application, output_option
from shipmate.plan.models import Plan
from shipmate.plan.plan import resolve
from shipmate.spec.values import format_duration


@click.command("plan")
@output_option
@click.option("--env", "-e", "environment", required=True, show_envvar=True, help="The environment.")
@click.pass_obj
def command(app: Application, environment: str) -> None:
    """Show what an environment resolves to: workloads, addons, secrets, strategy."""
    spec = app.load_spec()
    plan = resolve(spec.for_env(environment), environment)
    if app.json:
        app.print_json(dataclasses.asdict(plan))
        return
    for line in describe(plan):
        app.out.print(line, markup=False)


def describe(plan: Plan) -> list[str]:
    """A readable summary of a plan, one line per fact."""
    lines = [
        f"app {plan.app} {plan.app_version}, environment {plan.environment}",
        f"  target {plan.target}, namespace {plan.namespace}"
        + (f", context {plan.context}" if plan.context else ""),
        f"  strategy {plan.strategy.name} ({plan.strategy.type}), rollback {plan.rollback_strategy}, "
        f"approvals required {plan.approvals_required}",
        f"  secrets delivered by {plan.secrets_delivery} ({plan.secret_store})",
        "services:",
    ]
    for w in plan.workloads:
        scale = (f"{w.autoscaling.min_replicas}-{w.autoscaling.max_replicas} (HPA)" if w.autoscaling
                 else str(w.replicas))
        ports = ", ".join(f"{p.name}:{p.port}" for p in w.ports) or "no ports"
        lines.append(f"  {w.name}: {w.kind} {w.image_ref}, replicas {scale}, {ports}")
        r = w.resources
        lines.append(f"    resources {r.requests_cpu}/{r.requests_memory} .. {r.limits_cpu}/{r.limits_memory}; "
                     f"rolling maxSurge {w.max_surge} maxUnavailable {w.max_unavailable}")
        if w.config:
            lines.append(f"    config: {', '.join(k for k, _ in w.config)}")
        if w.secrets:
            lines.append("    secrets: " + ", ".join(
                f"{s.secret} ({'file ' + s.file if s.delivery == 'file' else 'env ' + s.env})" for s in w.secrets))
        if w.egress:
            lines.append(f"    talks to: {', '.join(p.name for p in w.egress)}")
        if w.expose:
            lines.append(f"    exposed at {w.expose.host or '*'}{w.expose.path} -> port {w.expose.port}")
    if plan.addons:
        lines.append("addons:")
        lines.extend(f"  {a.name}: {a.kind} {'external' if a.external else a.image} port {a.port}, "
                     f"used by {', '.join(a.users) or 'nobody'}" for a in plan.addons)
    if plan.strategy.steps:
        lines.append("canary steps:")
        for step in plan.strategy.steps:
            if step.weight is not None:
                lines.append(f"  weight {step.weight}%")
            elif step.pause_indefinite:
                lines.append("  pause until promoted")
            elif step.pause_seconds is not None:
                lines.append(f"  pause {format_duration(step.pause_seconds)}")
            else:
                lines.append("  analysis")
    if plan.backups:
        lines.append("backups:")
        lines.extend(f"  {b.name}: {b.type} of {b.addon} at '{b.schedule}', keep {b.retention_count}"
                     for b in plan.backups)
    return lines
