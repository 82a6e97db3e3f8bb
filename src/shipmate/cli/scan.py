"""`shipmate scan`: the policy and secret scanner over manifests, charts, overlays and specs."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from shipmate.cli.app import Application, output_option
from shipmate.errors import CheckFailed, Location, SpecError, UsageError
from shipmate.policy import report
from shipmate.policy.engine import ScanResult, default_settings, scan
from shipmate.policy.models import Finding, Resource, Settings, Severity
from shipmate.policy.sources import Inputs, read_paths

if TYPE_CHECKING:
    from shipmate.policy.config import Policy

POLICY_FILE = "shipmate-policy.yaml"


def load_policy(path: Path) -> Policy:
    """A policy file, with errors located like the spec's."""
    from pydantic import ValidationError

    from shipmate.policy.config import Policy
    from shipmate.spec.document import parse
    from shipmate.spec.loader import validation_error

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the policy: {exc.strerror}") from None
    doc = parse(text, str(path), {})
    try:
        return Policy.model_validate(doc.data or {})
    except ValidationError as exc:
        raise validation_error(exc, doc.data, doc) from None


def _read_baseline(path: Path) -> set[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such baseline; create one with --write-baseline {path}") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"invalid baseline JSON: {exc.msg}", location=Location(str(path), exc.lineno, exc.colno)) \
            from None
    items = data.get("findings") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise SpecError("not a baseline: no findings list; write one with --write-baseline",
                        location=Location(str(path), 1, 1))
    return {str(item["fingerprint"]) for item in items if isinstance(item, dict) and "fingerprint" in item}


def _write_baseline(path: Path, result: ScanResult) -> None:
    from shipmate.files import atomic_write

    items = sorted(({"fingerprint": f.fingerprint, "rule": f.rule, "resource": f.resource, "path": f.path}
                    for f in result.findings), key=lambda d: (d["resource"], d["rule"], d["path"]))
    atomic_write(path, json.dumps({"version": 1, "findings": items}, indent=2, sort_keys=True) + "\n")


@click.command("scan")
@output_option
@click.argument("paths", nargs=-1)
@click.option("--env", "-e", "environments", multiple=True, show_envvar=True,
              help="Environment: rules per environment in the policy; which environments of a shipmate.yaml.")
@click.option("--values", "values_files", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Helm values file for charts (repeat to layer).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif", "junit"]), default=None,
              help="Report format (default: the global --output).")
@click.option("--report", "report_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the report to this file instead of stdout.")
@click.option("--fail-on", type=click.Choice(["low", "medium", "high", "critical"]), default=None, show_envvar=True,
              help="Exit 1 on findings at or above this severity (default: the policy's, else high).")
@click.option("--policy", "policy_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              show_envvar=True, help=f"Policy file (default ./{POLICY_FILE} when present).")
@click.option("--baseline", type=click.Path(path_type=Path, dir_okay=False), default=None, show_envvar=True,
              help="Ignore the findings recorded in this baseline file.")
@click.option("--write-baseline", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Record every current finding in this file (to adopt the scanner on an existing project).")
@click.option("--list-rules", is_flag=True, help="List the rules and exit.")
@click.pass_obj
def command(app: Application, paths: tuple[str, ...], environments: tuple[str, ...], values_files: tuple[Path, ...],
            fmt: str | None, report_file: Path | None, fail_on: str | None, policy_file: Path | None,
            baseline: Path | None, write_baseline: Path | None, list_rules: bool) -> None:
    """Scan Kubernetes YAML, Helm charts, Kustomize directories or a shipmate.yaml (- for stdin).

    With no PATH, scans what the spec (-f) renders."""
    if list_rules:
        rows = report.rule_table()
        if app.json or fmt == "json":
            app.print_json(rows)
        else:
            for row in rows:
                app.out.print(f"{row['id']}  {row['severity']:<8} {row['category']:<13} {row['message']}"
                              + ("" if row["enabled"] == "yes" else "  (off unless the policy turns it on)"),
                              markup=False)
        return
    if policy_file is None and Path(POLICY_FILE).is_file():
        policy_file = Path(POLICY_FILE)
    environment = environments[0] if len(environments) == 1 else None
    policy: Policy | None = None
    if policy_file is not None:
        policy = load_policy(policy_file)
        if baseline is None and policy.baseline:
            candidate = policy_file.parent / policy.baseline
            baseline = candidate if candidate.is_file() else None
    settings = _settings(policy, environment)
    targets = list(paths) or [str(app.file)]
    stdin_text = sys.stdin.read() if "-" in targets else None
    inputs: Inputs = read_paths(targets, values_files=values_files, environments=environments,
                                stdin_text=stdin_text)
    # writing a baseline records every current finding, those of an older baseline included
    known = _read_baseline(baseline) if baseline and write_baseline is None else set()
    # objects rendered from a spec are scanned with their own environment's rules (production
    # rules on prod's objects), even when one scan reads several environments
    groups: dict[str | None, list[Resource]] = {}
    for resource in inputs.resources:
        env = resource.source.file.rsplit("#", 1)[1] if resource.source.origin == "shipmate" else environment
        groups.setdefault(env, []).append(resource)
    results = [scan(group, _settings(policy, env), environment=env, baseline=known)
               for env, group in groups.items()] or [scan([], settings, environment=environment)]
    # in file order, each object's findings together, then by their own line
    placed = sorted(((f.line, _with_line(inputs, f)) for r in results for f in r.findings),
                    key=lambda p: (p[1].file, p[0], p[1].resource, p[1].line, -p[1].severity, p[1].rule, p[1].path))
    findings = [f for _, f in placed]
    result = ScanResult(
        findings=tuple(findings), notices=tuple(n for r in results for n in r.notices) + tuple(inputs.notices),
        suppressed=sum(r.suppressed for r in results), baselined=sum(r.baselined for r in results),
        resources=sum(r.resources for r in results))
    threshold = Severity.parse(fail_on) if fail_on else settings.fail_on
    if write_baseline is not None:
        _write_baseline(write_baseline, result)
        app.info(f"wrote {len(result.findings)} findings to {write_baseline}")
    form = fmt or app.output
    if form == "json":
        text = report.to_json(result, threshold)
    elif form == "sarif":
        text = report.to_sarif(result, threshold)
    elif form == "junit":
        text = report.to_junit(result, threshold)
    else:
        text = report.to_text(result, threshold, color=app.color and report_file is None and sys.stdout.isatty())
    for notice in result.notices:
        prefix = "" if notice.message.startswith("warning:") else "notice: "
        app.info(f"{prefix}{notice.file}: {notice.message}")
    if report_file is not None:
        from shipmate.files import atomic_write

        atomic_write(report_file, text)
        app.info(f"wrote {form} report to {report_file}")
    elif form == "text":
        app.out.print(text, end="", markup=app.color and sys.stdout.isatty(), highlight=False)
    else:
        click.echo(text, nl=False)
    failing = result.failing(threshold)
    if failing and write_baseline is None:
        raise CheckFailed(f"{len(failing)} finding(s) at or above {threshold.label}")


def _settings(policy: Policy | None, environment: str | None) -> Settings:
    if policy is None:
        return default_settings(environment)
    from shipmate.policy.config import effective

    return effective(policy, environment)


def _with_line(inputs: Inputs, finding: Finding) -> Finding:
    return replace(finding, line=inputs.locate(finding))
