"""`shipmate init`: write a starter shipmate.yaml that validates and renders as it is."""

from __future__ import annotations

import re
from pathlib import Path

import click

from shipmate.cli.app import Application
from shipmate.errors import Conflict, UsageError
from shipmate.files import atomic_write
from shipmate.spec.loader import load_text

TEMPLATE = """\
# shipmate.yaml: one file for every environment of {name}. Reference: README.md, "The spec".
version: 1
app:
  name: {name}
  version: 0.1.0
  registry: ghcr.io/example

services:
  api:
    run: python3 -m http.server $PORT     # how the local target starts it
    ports:
      - {{name: http, port: 8080}}
    replicas: 2
    config:
      LOG_LEVEL: info
    secrets:
      - database-url                      # a file in /var/run/secrets/shipmate
    uses: [db]
    expose: {{host: {name}.example.com}}

addons:
  db: {{kind: postgres, version: "16", databases: [{dbname}]}}

secrets:
  database-url:
    from: {{addon: db, key: url}}

strategies:
  canary:
    type: canary
    steps: [{{weight: 5}}, {{analysis: true}}, {{weight: 50}}, {{analysis: true}}, {{weight: 100}}]
    analysis:
      checks:
        - {{name: errors, metric: error-rate, max: 0.05}}
        - {{name: p99, metric: latency, quantile: 0.99, max: 1.0}}

environments:
  dev:
    target: local
    secretsDelivery: secret
  staging:
    cluster: {{namespace: {name}-staging}}
  prod:
    cluster: {{namespace: {name}-prod}}
    strategy: canary
    approvals: {{required: 1}}
    promoteFrom: staging
    overrides:
      services:
        api:
          autoscaling: {{minReplicas: 3, maxReplicas: 10, cpu: 75}}
"""


@click.command("init")
@click.option("--name", default=None, help="Application name; default the directory's name.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.pass_obj
def command(app: Application, name: str | None, force: bool) -> None:
    """Write a starter shipmate.yaml (to -f PATH, default ./shipmate.yaml)."""
    target: Path = app.file
    if target.exists() and not force:
        raise Conflict(f"{target} exists; pass --force to overwrite it")
    raw = name or target.resolve().parent.name
    slug = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")[:40] or "app"
    if name is not None and slug != name:
        raise UsageError(f"--name {name!r}: use lower case letters, digits and '-' (e.g. {slug!r})")
    text = TEMPLATE.format(name=slug, dbname=slug.replace("-", "_"))
    load_text(text, str(target), {})
    atomic_write(target, text)
    app.info(f"wrote {target}; next: shipmate validate, shipmate plan --env prod, shipmate render --format all")
