"""Running the rules over resources: enabling, severities, suppressions and baselines.

Called by the CLI (`shipmate scan`) and later by promotion gates and the secret-scan drill.
Pure: resources in, findings out.

Inline suppression: an annotation `ignore.shipmate.dev/<RULE>: "<reason>"` on the object (or on
its pod template) silences that rule there; a suppression without a reason is refused (the
finding stays) and said in a notice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from shipmate.policy.models import (
    DEFAULT_PRODUCTION,
    Context,
    Finding,
    Notice,
    Resource,
    Rule,
    Settings,
    Severity,
)
from shipmate.policy.rules import RULES
from shipmate.policy.workloads import as_dict, pod_spec

SUPPRESS_PREFIX = "ignore.shipmate.dev/"
MIN_REASON = 3


@dataclass(frozen=True)
class ScanResult:
    findings: tuple[Finding, ...]
    notices: tuple[Notice, ...]
    suppressed: int
    baselined: int
    resources: int

    def failing(self, threshold: Severity) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity >= threshold)


class _IndexedContext(Context):
    """A context that finds objects of a kind in an index built on first use: the cross-object
    rules ask for the ServiceAccounts, PodDisruptionBudgets, HPAs and Namespaces once per workload,
    and a walk over every object each time made large inputs quadratic."""

    def of_kind(self, *kinds: str) -> Iterator[Resource]:
        if len(kinds) != 1:
            return super().of_kind(*kinds)
        index = self._index.get("kinds")
        if index is None:
            index = {}
            for resource in self.resources:
                index.setdefault(resource.kind, []).append(resource)
            self._index["kinds"] = index
        return iter(index.get(kinds[0], ()))


def _suppressions(resource: Resource) -> dict[str, str]:
    out: dict[str, str] = {}
    sources = [resource.metadata.get("annotations")]
    pod = pod_spec(resource.obj)
    if pod is not None:
        sources.append(pod.template_metadata.get("annotations"))
    for notes in sources:
        for key, value in as_dict(notes).items():
            if str(key).startswith(SUPPRESS_PREFIX):
                out[str(key)[len(SUPPRESS_PREFIX):].upper()] = "" if value is None else str(value).strip()
    return out


def default_settings(environment: str | None = None) -> Settings:
    """The settings without a policy file: every rule at its default."""
    return Settings(rules={r.id: (r.default_enabled, r.severity) for r in RULES}, options={},
                    production=environment in DEFAULT_PRODUCTION)


def scan(resources: Sequence[Resource], settings: Settings | None = None, *, environment: str | None = None,
         baseline: Iterable[str] = ()) -> ScanResult:
    """Every finding of the enabled rules over `resources`, sorted by file, line and rule."""
    settings = settings or default_settings(environment)
    ctx = _IndexedContext(resources=tuple(resources), environment=environment, production=settings.production,
                          options=settings.options)
    rule_settings = settings.rules
    known = set(baseline)
    findings: list[Finding] = []
    notices: list[Notice] = []
    suppressed = baselined = 0
    active = [r for r in RULES if rule_settings[r.id][0]]
    by_kind: dict[str, list[Rule]] = {}
    for resource in ctx.resources:
        kind = resource.kind
        if kind not in by_kind:
            by_kind[kind] = [rule for rule in active if not rule.kinds or kind in rule.kinds]
        suppress = _suppressions(resource)
        for rule_id, reason in suppress.items():
            if len(reason) < MIN_REASON:
                notices.append(Notice(resource.source.file, f"{resource.ref}: suppression of {rule_id} has no "
                                      "reason and is ignored; write the reason as the annotation's value",
                                      resource.source.line))
        for rule in by_kind[kind]:
            severity = rule_settings[rule.id][1]
            for hit in rule.check(resource, ctx):
                if len(suppress.get(rule.id, "")) >= MIN_REASON:
                    suppressed += 1
                    continue
                message = rule.message + (f": {hit.detail}" if hit.detail else "")
                finding = Finding(
                    rule=rule.id, severity=severity, message=message, resource=resource.ref, kind=kind,
                    name=resource.name, namespace=resource.namespace, path=hit.path, container=hit.container,
                    remediation=rule.remediation, file=resource.source.file, line=resource.source.line,
                    evidence=hit.evidence)
                if finding.fingerprint in known:
                    baselined += 1
                    continue
                findings.append(finding)
    findings.sort(key=lambda f: (f.file, f.line, f.resource, -f.severity, f.rule, f.path))
    return ScanResult(tuple(findings), tuple(notices), suppressed, baselined, len(ctx.resources))
