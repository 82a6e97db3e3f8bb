"""The scanner's policy: which rules run, at which severity, per environment, and options.

Read from `shipmate-policy.yaml` (or the `policy:` section of a shipmate.yaml) by the CLI with
the spec loader's located errors. Pure model and merge; no file I/O here.

```yaml
failOn: high                     # low | medium | high | critical
production: [prod, production]   # environment names that count as production
rules:
  SM105: {enabled: false}
  SM201: {severity: high}
environments:
  dev:
    rules: {SM501: {enabled: false}}
options:
  requireDigest: false           # turns SM202 on
  allowedRegistries: [ghcr.io/acme]
  requiredLabels: [app.kubernetes.io/name]
  forbidMaxUnavailable: null     # null: only in production
baseline: .shipmate-baseline.json
```
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from shipmate.policy.models import DEFAULT_PRODUCTION, Settings, Severity
from shipmate.policy.rules import BY_ID, RULES
from shipmate.spec.models import Model

SeverityName = Literal["low", "medium", "high", "critical"]


class RuleSetting(Model):
    enabled: bool | None = None
    severity: SeverityName | None = None


class Options(Model):
    require_digest: bool = False
    allowed_registries: list[str] = Field(default_factory=list)
    required_labels: list[str] = Field(default_factory=list)
    forbid_max_unavailable: bool | None = None


def _known_rule(rule_id: str) -> str:
    if rule_id not in BY_ID:
        raise ValueError(f"unknown rule {rule_id!r}; `shipmate scan --list-rules` lists them")
    return rule_id


# a key type, so that an unknown id is reported at its own line
RuleId = Annotated[str, AfterValidator(_known_rule)]


class EnvironmentPolicy(Model):
    rules: dict[RuleId, RuleSetting] = Field(default_factory=dict)
    options: Options | None = None


class Policy(Model):
    """A whole policy file."""

    fail_on: SeverityName = "high"
    production: list[str] = Field(default_factory=lambda: list(DEFAULT_PRODUCTION))
    rules: dict[RuleId, RuleSetting] = Field(default_factory=dict)
    environments: dict[str, EnvironmentPolicy] = Field(default_factory=dict)
    options: Options = Options()
    baseline: str | None = None


def effective(policy: Policy, environment: str | None) -> Settings:
    """The settings of a scan of `environment` under `policy`: the policy's rules, then the
    environment's section over them."""
    env = policy.environments.get(environment) if environment else None
    options = env.options if env is not None and env.options is not None else policy.options
    rules: dict[str, tuple[bool, Severity]] = {}
    for rule in RULES:
        enabled, severity = rule.default_enabled, rule.severity
        if rule.id == "SM202" and options.require_digest:
            enabled = True
        for settings in (policy.rules, env.rules if env is not None else {}):
            setting = settings.get(rule.id)
            if setting is None:
                continue
            if setting.enabled is not None:
                enabled = setting.enabled
            if setting.severity is not None:
                severity = Severity.parse(setting.severity)
        rules[rule.id] = (enabled, severity)
    return Settings(rules=rules, options=options.model_dump(by_alias=True),
                    production=environment is not None and environment in policy.production,
                    fail_on=Severity.parse(policy.fail_on))
