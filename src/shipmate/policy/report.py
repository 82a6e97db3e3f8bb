"""Scan reports: text grouped by object, JSON, SARIF 2.1.0 and JUnit XML.

Called by the CLI. Pure: findings in, text out. A secret found by a rule is only ever present
in its masked form (the rules never hand out more), in every format.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import groupby
from typing import Any
from urllib.parse import quote

from shipmate import __version__
from shipmate.policy.engine import ScanResult
from shipmate.policy.models import Finding, Rule, Severity
from shipmate.policy.rules import RULES


def escape(text: str) -> str:
    """Text for an XML element (the standard library's helper imports half of urllib)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def quoteattr(text: str) -> str:
    """A double-quoted XML attribute value."""
    body = escape(text).replace('"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    return f'"{body}"'


INFORMATION_URI = "https://shipmate.dev/rules"
_SARIF_LEVEL = {Severity.LOW: "note", Severity.MEDIUM: "warning", Severity.HIGH: "error", Severity.CRITICAL: "error"}
_SECURITY_SEVERITY = {Severity.LOW: "3.0", Severity.MEDIUM: "5.5", Severity.HIGH: "8.0", Severity.CRITICAL: "9.5"}
_COLOR = {Severity.LOW: "cyan", Severity.MEDIUM: "yellow", Severity.HIGH: "red", Severity.CRITICAL: "bold red"}


def _finding_dict(f: Finding) -> dict[str, Any]:
    return {
        "rule": f.rule, "severity": f.severity.label, "message": f.message, "resource": f.resource,
        "kind": f.kind, "name": f.name, "namespace": f.namespace, "container": f.container, "path": f.path,
        "file": f.file, "line": f.line, "remediation": f.remediation, "evidence": f.evidence,
        "fingerprint": f.fingerprint,
    }


def to_json(result: ScanResult, threshold: Severity) -> str:
    """The JSON report (keys sorted, stable):

    ```
    {"tool": {"name": "shipmate", "version": "..."},
     "summary": {"resources": N, "findings": N, "failing": N, "fail_on": "high", "suppressed": N,
                 "baselined": N, "by_severity": {"low": N, "medium": N, "high": N, "critical": N}},
     "findings": [{"rule", "severity", "message", "resource", "kind", "name", "namespace",
                   "container", "path", "file", "line", "remediation", "evidence", "fingerprint"}],
     "notices": [{"file", "line", "message"}]}
    ```

    `failing` counts findings at or above `fail_on`; `evidence` is a masked sample or null.
    """
    failing = result.failing(threshold)
    data = {
        "tool": {"name": "shipmate", "version": __version__},
        "summary": {
            "resources": result.resources, "findings": len(result.findings), "failing": len(failing),
            "fail_on": threshold.label, "suppressed": result.suppressed, "baselined": result.baselined,
            "by_severity": {s.label: sum(1 for f in result.findings if f.severity == s) for s in Severity},
        },
        "findings": [_finding_dict(f) for f in result.findings],
        "notices": [{"file": n.file, "line": n.line, "message": n.message} for n in result.notices],
    }
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def to_text(result: ScanResult, threshold: Severity, *, color: bool) -> str:
    """Findings grouped by object; markup for a terminal when `color`."""
    lines: list[str] = []

    def paint(text: str, style: str) -> str:
        return f"[{style}]{text}[/{style}]" if color else text

    def plain(text: str) -> str:
        return text.replace("[", "\\[") if color else text

    by_object = groupby(result.findings, key=lambda f: (f.file, f.resource))
    for (file, resource), group in by_object:
        items = list(group)
        lines.append(paint(plain(f"{resource}"), "bold") + plain(f"  ({file}:{min(f.line for f in items)})"))
        for f in items:
            where = f" [{f.container}]" if f.container else ""
            lines.append(f"  {paint(f.severity.label.upper().ljust(8), _COLOR[f.severity])} {f.rule} "
                         + plain(f"{f.message}{where}"))
            lines.append(plain(f"           at {f.file}:{f.line} {f.path}"))
            if f.evidence:
                lines.append(plain(f"           value {f.evidence}"))
            lines.append(plain(f"           fix: {f.remediation}"))
    failing = len(result.failing(threshold))
    counts = ", ".join(f"{sum(1 for f in result.findings if f.severity == s)} {s.label}"
                       for s in sorted(Severity, reverse=True))
    summary = (f"{result.resources} objects scanned, {len(result.findings)} findings ({counts}); "
               f"{failing} at or above {threshold.label}")
    if result.suppressed or result.baselined:
        summary += f"; {result.suppressed} suppressed, {result.baselined} in the baseline"
    lines.append(paint(plain(summary), "bold red" if failing else "bold green"))
    return "\n".join(lines) + "\n"


def _rule_descriptor(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.message},
        "fullDescription": {"text": f"{rule.message}. {rule.remediation}"},
        "help": {"text": rule.remediation, "markdown": f"**{rule.message}**\n\n{rule.remediation}"},
        "helpUri": f"{INFORMATION_URI}#{rule.id.lower()}",
        "defaultConfiguration": {"level": _SARIF_LEVEL[rule.severity]},
        "properties": {"tags": ["security", "kubernetes", rule.category],
                       "security-severity": _SECURITY_SEVERITY[rule.severity], "category": rule.category},
    }


def _artifact(file: str) -> str:
    """A file as a SARIF artifact URI: the spec of `shipmate.yaml#env`, percent-encoded."""
    return quote(file.split("#", 1)[0], safe="/")


def to_sarif(result: ScanResult, threshold: Severity) -> str:
    """A SARIF 2.1.0 log with the full rule metadata, so code-scanning UIs show it."""
    del threshold
    index = {rule.id: i for i, rule in enumerate(RULES)}
    results = []
    for f in result.findings:
        message = f"{f.resource}: {f.message}" + (f" (container {f.container})" if f.container else "")
        if f.evidence:
            message += f"; value {f.evidence}"
        results.append({
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": message},
            "locations": [{
                "physicalLocation": {"artifactLocation": {"uri": _artifact(f.file)},
                                     "region": {"startLine": max(f.line, 1)}},
                "logicalLocations": [{"name": f.path, "fullyQualifiedName": f"{f.resource}/{f.path}",
                                      "kind": "member"}],
            }],
            "partialFingerprints": {"shipmate/v1": f.fingerprint},
            "properties": {"severity": f.severity.label, "security-severity": _SECURITY_SEVERITY[f.severity]},
        })
    log = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "shipmate", "version": __version__, "semanticVersion": __version__,
                                "informationUri": INFORMATION_URI, "rules": [_rule_descriptor(r) for r in RULES]}},
            "results": results,
            "invocations": [{"executionSuccessful": True, "toolExecutionNotifications": [
                {"level": "warning" if n.message.startswith("warning:") else "note", "message": {"text": n.message},
                 "locations": [{"physicalLocation": {"artifactLocation": {"uri": _artifact(n.file)}}}]}
                for n in result.notices]}],
            "columnKind": "utf16CodeUnits",
        }],
    }
    return json.dumps(log, indent=2, sort_keys=True) + "\n"


def to_junit(result: ScanResult, threshold: Severity) -> str:
    """JUnit XML: one test case per finding (named by rule, object and path), so that `failures`
    is the number of findings at or above the threshold; findings below it are passing cases
    that say what they found in system-out."""
    cases: list[str] = []
    failures = 0
    for f in sorted(result.findings, key=lambda f: (f.resource, f.rule, f.path)):
        name = quoteattr(f"{f.rule} {f.resource} {f.path}")
        body = (f"{f.severity.label}: {f.message}" + (f" [{f.container}]" if f.container else "")
                + f" at {f.file}:{f.line} {f.path}" + (f" value {f.evidence}" if f.evidence else "")
                + f"\nfix: {f.remediation}")
        if f.severity >= threshold:
            failures += 1
            cases.append(f'    <testcase classname={quoteattr(f.resource)} name={name} file={quoteattr(f.file)} '
                         f'line="{f.line}">\n'
                         f'      <failure message={quoteattr(f.message)} '
                         f'type={quoteattr(f.severity.label)}>{escape(body)}</failure>\n'
                         f'    </testcase>')
        else:
            cases.append(f'    <testcase classname={quoteattr(f.resource)} name={name} file={quoteattr(f.file)} '
                         f'line="{f.line}">\n      <system-out>{escape(body)}</system-out>\n    </testcase>')
    if not cases:
        cases.append('    <testcase classname="shipmate.scan" name="no findings"/>')
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<testsuites name="shipmate scan" tests="{len(cases)}" failures="{failures}">\n'
            f'  <testsuite name="shipmate scan" tests="{len(cases)}" failures="{failures}" errors="0" '
            f'skipped="0">\n' + "\n".join(cases) + "\n  </testsuite>\n</testsuites>\n")


def rule_table(rules: Sequence[Rule] = RULES) -> list[dict[str, str]]:
    return [{"id": r.id, "name": r.name, "severity": r.severity.label, "category": r.category,
             "message": r.message, "remediation": r.remediation,
             "enabled": "yes" if r.default_enabled else "no (policy)"} for r in rules]
