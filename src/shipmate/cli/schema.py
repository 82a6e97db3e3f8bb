"""`shipmate schema`: the JSON Schema of shipmate.yaml, for editors."""

from __future__ import annotations

from pathlib import Path

import click

from shipmate.cli.app import Application
from shipmate.files import atomic_write
from shipmate.render.yamlio import dump_json
from shipmate.spec.schema import json_schema


@click.command("schema")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write to this file instead of stdout.")
@click.pass_obj
def command(app: Application, out: Path | None) -> None:
    """Print the JSON Schema of shipmate.yaml (point your editor's YAML plugin at it)."""
    text = dump_json(json_schema())
    if out is None:
        click.echo(text, nl=False)
        return
    atomic_write(out, text)
    app.info(f"wrote {out}")
