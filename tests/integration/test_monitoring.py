"""The monitoring format, checked by the real promtool: the rules of every example and environment
load (`promtool check rules`), the generated unit tests pass (`promtool test rules`), and they
fail when the rules are wrong, so they prove something. The dashboard and the Alertmanager
routes are checked for their structure (amtool is not among the test tools).

promtool comes from the Debian package `prometheus` (`make test` installs it through
scripts/system-deps.sh).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipmate.errors import InternalError
from shipmate.render.kit import Kit, build_kit
from shipmate.render.monitoring import rule_groups
from shipmate.render.monitoring_files import exercised_service, expand_template, files
from shipmate.spec.loader import load_text
from tests.support import EXAMPLES, example_envs, example_kit

Obj = dict[str, Any]

CASES = example_envs()
CASE_IDS = [f"{example}-{env}" for example, env in CASES]

pytestmark = pytest.mark.integration

# Thresholds that differ from the examples', a service without metrics listed first, an SLO.
CUSTOM = """\
app: {name: tuned}
services:
  a-batch:
    ports: [{port: 7000, protocol: tcp}]
    metrics: null
  web: {ports: [{port: 8080}]}
alerts: {errorRate: 0.02, latencyP99: 500ms, serviceDown: 3m}
slos: [{name: web-availability, service: web, objective: 99.5}]
environments:
  prod: {cluster: {namespace: tuned}}
"""

# No service has metrics: only ServiceDown can be tested.
NO_METRICS = """\
app: {name: quiet}
services:
  worker:
    metrics: null
    probes: {liveness: {exec: [cat, /tmp/ok]}, readiness: {exec: [cat, /tmp/ok]}}
environments:
  prod: {}
"""


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: run `make system-deps` (Debian package prometheus)"
    return path


def write(root: Path, tree: dict[str, str]) -> Path:
    for rel, text in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def run(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=directory, capture_output=True, text=True, timeout=120,
                          check=False)


@cache
def kit_of(text: str) -> Kit:
    return build_kit(load_text(text, env={}))


# --- promtool -------------------------------------------------------------------------------

@pytest.mark.parametrize(("example", "env"), CASES, ids=CASE_IDS)
def test_rules_load_and_their_unit_tests_pass(example: str, env: str, tmp_path: Path) -> None:
    directory = write(tmp_path, files(example_kit(example))) / env
    checked = run(directory, "check", "rules", "prometheus-rules.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run(directory, "test", "rules", "prometheus-rules.test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.parametrize("spec", [CUSTOM, NO_METRICS], ids=["custom-thresholds", "no-metrics"])
def test_unit_tests_pass_for_other_shapes(spec: str, tmp_path: Path) -> None:
    directory = write(tmp_path, files(kit_of(spec))) / "prod"
    tested = run(directory, "test", "rules", "prometheus-rules.test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def _moved(factor: float) -> Any:
    def move(match: re.Match[str]) -> str:
        return f") > {float(match.group(1)) * factor:g}"
    return move


@pytest.mark.parametrize("example", EXAMPLES)
@pytest.mark.parametrize(("pattern", "replacement", "broken"), [
    # The tests send the threshold plus and minus one percentage point.
    (r"\) > ([0-9.]+)$", "up", "HighErrorRate fires"),  # threshold raised: no alert above it
    (r"\) > ([0-9.]+)$", "down", "HighErrorRate stays quiet"),  # lowered: an alert below it
    (r"== 1\)$", "== 0)", "ServiceDown"),  # inverted: fires when up
], ids=["threshold-up", "threshold-down", "inverted-down"])
def test_unit_tests_fail_against_wrong_rules(example: str, pattern: str, replacement: str, broken: str,
                                             tmp_path: Path) -> None:
    kit = example_kit(example)
    env = kit.environments[-1]
    rate = kit.plans[env].alerts.error_rate
    assert rate > 0.01, "below 1% the quiet test sends no 5xx at all, and no lower threshold could fire"
    tree = files(kit)
    service = exercised_service(kit.plans[env]).name
    doc = yaml.safe_load(tree[f"{env}/prometheus-rules.yaml"])
    changed = 0
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in ("HighErrorRate", "ServiceDown") and rule["labels"]["service"] == service \
                    and re.search(pattern, rule["expr"]):
                new: Any = {"up": _moved((rate + 0.02) / rate), "down": _moved((rate - 0.02) / rate)}.get(
                    replacement, replacement)
                rule["expr"] = re.sub(pattern, new, rule["expr"])
                changed += 1
    assert changed, f"no rule of {service} matched {pattern}"
    tree[f"{env}/prometheus-rules.yaml"] = yaml.safe_dump(doc)
    directory = write(tmp_path, tree) / env
    tested = run(directory, "test", "rules", "prometheus-rules.test.yaml")
    assert tested.returncode != 0, "the unit tests passed against broken rules"
    assert broken in tested.stdout + tested.stderr


# --- what the files hold --------------------------------------------------------------------

@pytest.mark.parametrize(("example", "env"), CASES, ids=CASE_IDS)
def test_rules_file_is_the_prometheus_rule_of_the_manifests(example: str, env: str) -> None:
    kit = example_kit(example)
    doc = yaml.safe_load(files(kit)[f"{env}/prometheus-rules.yaml"])
    rule = next(o for o in kit.objects[env] if o["kind"] == "PrometheusRule")
    assert doc == {"groups": rule["spec"]["groups"]}
    assert doc["groups"] == rule_groups(kit.plans[env])


@pytest.mark.parametrize(("example", "env"), CASES, ids=CASE_IDS)
def test_unit_tests_cover_both_sides_of_both_alerts(example: str, env: str) -> None:
    kit = example_kit(example)
    plan = kit.plans[env]
    doc = yaml.safe_load(files(kit)[f"{env}/prometheus-rules.test.yaml"])
    assert doc["rule_files"] == ["prometheus-rules.yaml"]
    checks = [(t["alertname"], bool(t["exp_alerts"])) for test in doc["tests"] for t in test["alert_rule_test"]]
    expected = [("ServiceDown", True), ("ServiceDown", False)]
    if any(w.metrics_port is not None for w in plan.workloads):
        expected = [("HighErrorRate", True), ("HighErrorRate", False), *expected]
    assert checks == expected
    service = exercised_service(plan)
    assert service.metrics_port is not None or all(w.metrics_port is None for w in plan.workloads)
    assert all(service.name in test["name"] for test in doc["tests"])


def test_error_rate_tests_straddle_the_spec_threshold() -> None:
    doc = yaml.safe_load(files(kit_of(CUSTOM))["prod/prometheus-rules.test.yaml"])
    names = [test["name"] for test in doc["tests"]]
    assert names[:2] == ["HighErrorRate fires for web at 3% 5xx (threshold 2%)",
                         "HighErrorRate stays quiet for web at 1% 5xx (threshold 2%)"]
    assert "up is 0" in names[2]


@pytest.mark.parametrize(("example", "env"), CASES, ids=CASE_IDS)
def test_dashboard_has_a_row_of_panels_per_service_with_metrics(example: str, env: str) -> None:
    kit = example_kit(example)
    board = json.loads(files(kit)[f"{env}/grafana-dashboard.json"])
    panels = board["panels"]
    with_metrics = [w.name for w in kit.plans[env].workloads if w.metrics_port is not None]
    for name in with_metrics:
        own = [p for p in panels if p["title"].startswith(f"{name}: ")]
        assert len(own) == 3, f"{name} needs request rate, error share and p99 panels"
        assert all(f'job="{name}"' in p["targets"][0]["expr"] for p in own)
    assert len(panels) == 3 * len(with_metrics)
    assert len({p["id"] for p in panels}) == len(panels)
    assert board["templating"]["list"][0]["name"] == "datasource"


@pytest.mark.parametrize(("example", "env"), CASES, ids=CASE_IDS)
def test_alertmanager_routes_send_each_severity_to_its_receiver(example: str, env: str) -> None:
    kit = example_kit(example)
    plan = kit.plans[env]
    config = yaml.safe_load(files(kit)[f"{env}/alertmanager-routes.yaml"])
    receivers = {r["name"] for r in config["receivers"]}
    root = config["route"]
    assert "matchers" not in root, "Alertmanager refuses matchers on the root route"

    def walk(route: Obj) -> list[Obj]:
        return [route, *(r for child in route.get("routes", []) for r in walk(child))]

    for route in walk(root):
        assert route["receiver"] in receivers
    scoped = root["routes"][0]
    assert scoped["matchers"] == [f'namespace="{plan.namespace}"']
    by_severity = {route["matchers"][0]: route["receiver"] for route in scoped["routes"]}
    assert by_severity == {'severity="critical"': f"{plan.instance}-critical",
                           'severity="warning"': f"{plan.instance}-warning"}
    severities = {rule["labels"]["severity"] for g in rule_groups(plan) for rule in g["rules"] if "alert" in rule}
    assert severities <= {"critical", "warning"}, "every alert's severity has a route"


def test_expand_knows_the_template_forms_and_refuses_others() -> None:
    labels = {"service": "web"}
    text = "{{ $value | humanizePercentage }} of {{ $labels.service }}"
    assert expand_template(text, 0.0612, labels) == "6.12% of web"
    assert expand_template("{{$value}} waiting", 12000.0, labels) == "12000 waiting"
    assert expand_template("{{ $value | humanize }}", 12000.0, labels) == "12k"
    with pytest.raises(InternalError, match="humanizeDuration"):
        expand_template("{{ $value | humanizeDuration }}", 1.0, labels)


def test_every_environment_gets_its_files(example: str) -> None:
    kit = example_kit(example)
    names = {"prometheus-rules.yaml", "prometheus-rules.test.yaml", "grafana-dashboard.json",
             "alertmanager-routes.yaml"}
    assert set(files(kit)) == {f"{env}/{name}" for env in kit.environments for name in names}


def test_rendering_twice_gives_the_same_bytes(example: str) -> None:
    kit = example_kit(example)
    assert files(kit) == files(kit)
    assert files(kit_of(CUSTOM)) == files(kit_of(CUSTOM))
