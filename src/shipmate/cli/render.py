"""`shipmate render`: write the deployment kit in one format or all of them, or `--check` it."""

from __future__ import annotations

from pathlib import Path

import click

from shipmate.cli.app import Application, output_option
from shipmate.errors import CheckFailed, UsageError
from shipmate.files import check_tree, write_tree
from shipmate.render.formats import FORMATS, build
from shipmate.render.kit import build_kit


@click.command("render")
@output_option
@click.option("--env", "-e", "environments", multiple=True, show_envvar=True,
              help="Environment to render (repeat for several); default all.")
@click.option("--format", "fmt", type=click.Choice([*FORMATS, "all"]), default="manifests",
              show_default=True, show_envvar=True, help="Output format; all writes one folder per format.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("deploy"),
              show_default=True, show_envvar=True, help="Output directory.")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 with a diff if the files on disk differ.")
@click.pass_obj
def command(app: Application, environments: tuple[str, ...], fmt: str, out: Path, check: bool) -> None:
    """Render Kubernetes output (manifests, helm, kustomize, argocd, compose, github-actions,
    monitoring)."""
    spec = app.load_spec()
    kit = build_kit(spec, list(environments) or None)
    names = list(FORMATS) if fmt == "all" else [fmt]
    files = build(kit, names)
    if check:
        diff = check_tree(out, files)
        if app.json:
            app.print_json({"clean": diff.clean, "changed": diff.changed, "missing": diff.missing,
                            "stale": diff.stale})
        else:
            if diff.diff:
                click.echo(diff.diff, nl=False)
            for rel in diff.stale:
                app.info(f"stale: {out / rel} is no longer rendered")
        if not diff.clean:
            count = len(diff.changed) + len(diff.missing) + len(diff.stale)
            raise CheckFailed(f"{count} file(s) under {out} differ from the spec; run shipmate render")
        if not app.json:
            app.info(f"up to date: {len(files)} files under {out}")
        return
    try:
        written, removed = write_tree(out, files)
    except OSError as exc:
        where = exc.filename or out
        raise UsageError(f"{where}: cannot write the rendered files: {exc.strerror}; choose another --out") from None
    if app.json:
        app.print_json({"out": str(out), "files": sorted(files), "written": written, "removed": removed})
        return
    app.info(f"rendered {', '.join(names)} for {', '.join(kit.environments)}: {len(files)} files under {out} "
             f"({written} written, {removed} removed)")
