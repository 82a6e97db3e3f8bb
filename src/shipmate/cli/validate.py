"""`shipmate validate`: load the spec, resolve and render every environment, report problems."""

from __future__ import annotations

import click

from shipmate.cli.app import Application, output_option
from shipmate.render.kit import build_kit


@click.command("validate")
@output_option
@click.pass_obj
def command(app: Application) -> None:
    """Check the spec: syntax, types, references, and every environment's plan."""
    spec = app.load_spec()
    kit = build_kit(spec)
    summary = {
        "valid": True,
        "file": str(app.file),
        "app": kit.app,
        "services": sorted(spec.base.services),
        "addons": sorted(spec.base.addons),
        "environments": list(kit.environments),
        "objects": {env: len(kit.objects[env]) for env in kit.environments},
    }
    if app.json:
        app.print_json(summary)
        return
    envs = ", ".join(f"{e} ({len(kit.objects[e])} objects)" for e in kit.environments)
    app.out.print(f"ok: {app.file}: {kit.app}, {len(spec.base.services)} services, "
                  f"{len(spec.base.addons)} addons; environments: {envs}", markup=False)
