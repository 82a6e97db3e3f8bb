"""The `monitoring` format: per environment, the Prometheus rules, promtool unit tests that prove
they fire, a Grafana dashboard and an Alertmanager route tree.

Files, each under `<env>/`:
- `prometheus-rules.yaml`: a plain rules file (`promtool check rules` reads it; a Prometheus
  without the operator loads it with `rule_files:`), the same groups as the PrometheusRule object;
- `prometheus-rules.test.yaml`: `promtool test rules` input that proves, for the first service
  with metrics, that HighErrorRate fires above the spec's error rate and not below, and that
  ServiceDown fires when `up` is 0 and not when it is 1;
- `grafana-dashboard.json`: the dashboard, importable as it is;
- `alertmanager-routes.yaml`: an Alertmanager configuration whose route tree sends this
  environment's critical and warning alerts to their own receivers (empty until a person adds
  pagerduty_configs, slack_configs, ...; an empty receiver drops what it gets).

Called through `shipmate.render.formats`. Pure. It must not define alerts or queries itself: the
rules and the dashboard come from `shipmate.render.monitoring`, and the tests read the rules'
own labels, annotations and `for` durations from there, so the two cannot drift apart.
"""

from __future__ import annotations

import math
import re
from typing import Any

from shipmate.errors import InternalError
from shipmate.plan.models import Plan, Workload
from shipmate.render.kit import Kit
from shipmate.render.monitoring import dashboard, rule_groups
from shipmate.render.yamlio import dump, dump_json
from shipmate.spec.values import parse_duration

Obj = dict[str, Any]

HEADER = "# Rendered by shipmate from shipmate.yaml; do not edit. Environment: {env}.\n"
TEST_HEADER = "# Run with: promtool test rules prometheus-rules.test.yaml (from this directory).\n"
ROUTES_HEADER = ("# Alertmanager configuration for this environment. Add integrations (pagerduty_configs,\n"
                 "# slack_configs, webhook_configs, ...) to the receivers; until then they drop alerts.\n"
                 "# Check it with: amtool check-config alertmanager-routes.yaml\n")

RULES_FILE = "prometheus-rules.yaml"
SCRAPE_MINUTES = 1
REQUESTS_PER_MINUTE = 10_000
# How far above and below the threshold the tests put the error share (one percentage point).
ERROR_STEP = REQUESTS_PER_MINUTE // 100


def files(kit: Kit) -> dict[str, str]:
    out: dict[str, str] = {}
    for env in kit.environments:
        plan = kit.plans[env]
        header = HEADER.format(env=env)
        groups = rule_groups(plan)
        out[f"{env}/{RULES_FILE}"] = header + dump({"groups": groups})
        out[f"{env}/prometheus-rules.test.yaml"] = header + TEST_HEADER + dump(rule_tests(plan, groups))
        out[f"{env}/grafana-dashboard.json"] = dump_json(dashboard(plan))
        out[f"{env}/alertmanager-routes.yaml"] = header + ROUTES_HEADER + dump(alertmanager_config(plan))
    return out


# --- promtool unit tests --------------------------------------------------------------------

def exercised_service(plan: Plan) -> Workload:
    """The service the unit tests exercise: the first with metrics, else the first of all."""
    return next((w for w in plan.workloads if w.metrics_port is not None), plan.workloads[0])


def rule_tests(plan: Plan, groups: list[Obj] | None = None) -> Obj:
    """A `promtool test rules` document for the rules of `plan`."""
    groups = rule_groups(plan) if groups is None else groups
    service = exercised_service(plan)
    tests: list[Obj] = []
    errors = _find_rule(groups, "HighErrorRate", service.name)
    if errors is not None:
        threshold = plan.alerts.error_rate
        above = min(REQUESTS_PER_MINUTE, math.floor(threshold * REQUESTS_PER_MINUTE) + ERROR_STEP)
        below = max(0, math.ceil(threshold * REQUESTS_PER_MINUTE) - ERROR_STEP)
        tests.append(_error_rate_test(plan, service, errors, above, fires=True))
        tests.append(_error_rate_test(plan, service, errors, below, fires=False))
    down = _find_rule(groups, "ServiceDown", service.name)
    if down is not None:
        tests.append(_service_down_test(plan, service, down, up=0))
        tests.append(_service_down_test(plan, service, down, up=1))
    return {"rule_files": [RULES_FILE], "evaluation_interval": f"{SCRAPE_MINUTES}m", "tests": tests}


def _find_rule(groups: list[Obj], alert: str, service: str) -> Obj | None:
    for group in groups:
        for rule in group["rules"]:
            if rule.get("alert") == alert and rule.get("labels", {}).get("service") == service:
                return dict(rule)
    return None


def _series(plan: Plan, service: str, **extra: str) -> str:
    """A series name with the labels `shipmate.render.monitoring` selects on."""
    labels = {"namespace": plan.namespace, "job": service, **extra}
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return "{" + inner + "}"


def _eval_minutes(rule: Obj) -> int:
    """Long enough for a 5m rate window to fill, the rule's `for` to pass, and a margin."""
    pending = parse_duration(str(rule.get("for", "0s")))
    return math.ceil(pending / 60) + 10


def _error_rate_test(plan: Plan, w: Workload, rule: Obj, errors: int, *, fires: bool) -> Obj:
    minutes = _eval_minutes(rule)
    ok = REQUESTS_PER_MINUTE - errors
    share = errors / REQUESTS_PER_MINUTE
    expected: list[Obj] = []
    if fires:
        expected.append(_expected_alert(rule, {}, share))
    return {
        "name": f"HighErrorRate {'fires' if fires else 'stays quiet'} for {w.name} at "
                f"{_go_g(share * 100)}% 5xx (threshold {_go_g(plan.alerts.error_rate * 100)}%)",
        "interval": f"{SCRAPE_MINUTES}m",
        "input_series": [
            {"series": "http_requests_total" + _series(plan, w.name, code="500"),
             "values": f"0+{errors}x{minutes}"},
            {"series": "http_requests_total" + _series(plan, w.name, code="200"),
             "values": f"0+{ok}x{minutes}"},
        ],
        "alert_rule_test": [{"eval_time": f"{minutes}m", "alertname": "HighErrorRate", "exp_alerts": expected}],
    }


def _service_down_test(plan: Plan, w: Workload, rule: Obj, *, up: int) -> Obj:
    minutes = _eval_minutes(rule)
    series = [{"series": "up" + _series(plan, other.name), "values": f"{up if other.name == w.name else 1}x{minutes}"}
              for other in plan.workloads]
    expected: list[Obj] = []
    if up == 0:
        expected.append(_expected_alert(rule, _absent_labels(str(rule["expr"])), 1.0))
    return {
        "name": f"ServiceDown {'fires' if up == 0 else 'stays quiet'} for {w.name} when up is {up}",
        "interval": f"{SCRAPE_MINUTES}m",
        "input_series": series,
        "alert_rule_test": [{"eval_time": f"{minutes}m", "alertname": "ServiceDown", "exp_alerts": expected}],
    }


_ABSENT = re.compile(r"^absent\(\s*[A-Za-z_:][A-Za-z0-9_:]*\s*\{(?P<matchers>[^}]*)\}\s*\)$")
_EQUALS = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


def _absent_labels(expr: str) -> dict[str, str]:
    """The labels `absent()` gives its result: the equality matchers of a bare selector, and
    none at all when its argument is any other expression (such as `up{...} == 1`)."""
    match = _ABSENT.match(expr.strip())
    if match is None:
        return {}
    return dict(_EQUALS.findall(match.group("matchers")))


def _expected_alert(rule: Obj, series_labels: dict[str, str], value: float) -> Obj:
    labels = {**series_labels, **rule.get("labels", {})}
    annotations = {k: expand_template(v, value, labels) for k, v in rule.get("annotations", {}).items()}
    return {"exp_labels": labels, "exp_annotations": annotations}


_TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")


def expand_template(text: str, value: float, labels: dict[str, str]) -> str:
    """Expand the few Go template forms the rules use, as Prometheus would for this value."""

    def one(match: re.Match[str]) -> str:
        expr = re.sub(r"\s+", " ", match.group(1))
        if expr == "$value":
            return _go_g(value, precision=None)
        if expr == "$value | humanizePercentage":
            return f"{_go_g(value * 100)}%"
        if expr == "$value | humanize":
            return _humanize(value)
        if expr.startswith("$labels."):
            return labels.get(expr.removeprefix("$labels."), "")
        raise InternalError(f"monitoring_files cannot expand the template {{{{ {expr} }}}} of an alert "
                            "annotation for its promtool test; teach expand_template this form")

    return _TEMPLATE.sub(one, text)


def _go_g(value: float, precision: int | None = 4) -> str:
    """Go's %.4g (or %v when precision is None) for the values the tests produce."""
    if precision is None:
        if value == int(value) and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    return f"{value:.{precision}g}"


def _humanize(value: float) -> str:
    if value == 0 or abs(value) >= 1:
        units = ["", "k", "M", "G", "T", "P", "E", "Z", "Y"]
        index = 0
        while abs(value) >= 1000 and index < len(units) - 1:
            value /= 1000
            index += 1
        return f"{_go_g(value)}{units[index]}"
    units = ["", "m", "u", "n", "p", "f", "a", "z", "y"]
    index = 0
    while abs(value) < 1 and index < len(units) - 1:
        value *= 1000
        index += 1
    return f"{_go_g(value)}{units[index]}"


# --- Alertmanager ---------------------------------------------------------------------------

def alertmanager_config(plan: Plan) -> Obj:
    """A whole Alertmanager configuration: this environment's alerts by severity."""
    base = plan.instance
    scope = f'namespace="{plan.namespace}"'
    return {
        "route": {
            "receiver": f"{base}-default",
            "group_by": ["alertname", "namespace", "service"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [{
                "matchers": [scope],
                "receiver": f"{base}-default",
                "routes": [
                    {"matchers": ['severity="critical"'], "receiver": f"{base}-critical",
                     "group_wait": "10s", "repeat_interval": "1h"},
                    {"matchers": ['severity="warning"'], "receiver": f"{base}-warning",
                     "repeat_interval": "12h"},
                ],
            }],
        },
        "inhibit_rules": [{
            "source_matchers": ['severity="critical"', scope],
            "target_matchers": ['severity="warning"', scope],
            "equal": ["namespace", "service"],
        }],
        "receivers": [{"name": f"{base}-{kind}"} for kind in ("critical", "default", "warning")],
    }
