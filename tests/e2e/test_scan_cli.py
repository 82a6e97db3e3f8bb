"""`shipmate scan` end to end: every kind of input, the policy, suppressions, baselines, exit codes
and what a person reads on stdout and stderr.

Commands run in-process through `shipmate.cli.main.main(argv)` in a temporary folder; stdin is
replaced with monkeypatch. Charts are rendered by the real Helm engine and Kustomize directories
built by the real kubectl (both runtime dependencies). The shared corpus (`../shared/corpus`,
beside the clone) gives a real chart; the examples give real specs, and everything shipmate
renders for them must scan clean in staging and prod.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipmate.cli.main import main
from shipmate.policy.leaks import mask
from shipmate.policy.rules import RULES
from tests.support import EXAMPLES_DIR, SHARED, example_envs

Result = tuple[int, str, str]
Cli = Callable[..., Result]

# a Deployment with nothing to report, and the NetworkPolicy its namespace needs
CLEAN = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny
  namespace: shop
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app.kubernetes.io/name: web, app.kubernetes.io/instance: web, app.kubernetes.io/version: "1.0.0"}
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: web
          image: ghcr.io/acme/web:1.0.0
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          resources:
            requests: {cpu: 100m, memory: 64Mi}
            limits: {cpu: 200m, memory: 128Mi}
          readinessProbe: {httpGet: {path: /readyz, port: 8080}}
          livenessProbe: {httpGet: {path: /healthz, port: 8080}, failureThreshold: 6}
"""
ROOT_LINE = CLEAN.splitlines().index("            readOnlyRootFilesystem: true") + 1
WRITABLE = CLEAN.replace("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")  # SM105, medium
WRITABLE_TEXT = f"""\
Deployment/shop/web  (web.yaml:{ROOT_LINE})
  MEDIUM   SM105 Root file system is writable: not set to true [web]
           at web.yaml:{ROOT_LINE} spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem
           fix: Set securityContext.readOnlyRootFilesystem: true and mount an emptyDir where the app writes.
2 objects scanned, 1 findings (0 critical, 0 high, 1 medium, 0 low); 0 at or above high
"""
SECRET = "ghp_" + "R8vN2kQ7wXe4Lm9pTz3b" + "Yc6Hs1Du5Fg0Ja2KqW7e"  # assembled: no token literal in the repo
DB_PASSWORD = "s3cr3t-" + "Pa55word-9f8e7d"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run `shipmate ARGS...` in-process: (exit code, stdout, stderr)."""

    def run(*argv: str) -> Result:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test in its own folder, without SHIPMATE_* or colour settings from the caller."""
    for name in list(os.environ):
        if name.startswith("SHIPMATE_") or name in {"NO_COLOR", "FORCE_COLOR"}:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def write(path: str | Path, text: str) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


def scan_json(cli: Cli, *argv: str, code: int | None = None) -> dict[str, Any]:
    """`shipmate scan ARGV --format json`, parsed (asserting the exit code when given)."""
    exit_code, out, err = cli("scan", *argv, "--format", "json")
    if code is not None:
        assert exit_code == code, err
    data: dict[str, Any] = json.loads(out)
    return data


def rows(data: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    """(rule, resource, file, line) of every finding of a JSON report."""
    return [(f["rule"], f["resource"], f["file"], f["line"]) for f in data["findings"]]


# --- inputs ---------------------------------------------------------------------------------

def test_a_hardened_manifest_scans_clean(cli: Cli) -> None:
    write("web.yaml", CLEAN)
    assert cli("scan", "web.yaml") == (
        0, "2 objects scanned, 0 findings (0 critical, 0 high, 0 medium, 0 low); 0 at or above high\n", "")


def test_text_report_names_object_rule_line_path_and_fix(cli: Cli) -> None:
    write("web.yaml", WRITABLE)
    assert cli("scan", "web.yaml") == (0, WRITABLE_TEXT, "")


def test_a_directory_is_walked_recursively_skipping_hidden_folders_and_other_files(cli: Cli) -> None:
    """A folder given directly is built when it holds a kustomization; one found while walking is
    read file by file (building every overlay of a repository would scan its bases many times)."""
    write("deploy/web.yaml", WRITABLE)
    write("deploy/jobs/cron.yml", "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly, namespace: shop}\n"
          "spec:\n  schedule: '0 1 * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n"
          "          containers:\n            - name: run\n              image: busybox:1.36\n")
    write("deploy/jobs/deeper/cm.json", json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "shop"},
         "data": {"LOG_LEVEL": "info"}}, indent=2))
    write("deploy/.git/ignored.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: hidden}\n")
    # build instructions for kustomize, not objects: neither counted nor a notice
    write("deploy/jobs/deeper/kustomization.yaml", "apiVersion: kustomize.config.k8s.io/v1beta1\n"
          "kind: Kustomization\nresources: [cm.json]\n")
    write("deploy/jobs/kustomization.yml", "resources: [cron.yml]\n")
    write("deploy/README.md", "not YAML: [\n")
    data = scan_json(cli, "deploy", code=1)  # the CronJob's container may escalate: high
    assert data["summary"]["resources"] == 4
    assert {f["file"] for f in data["findings"]} == {"deploy/web.yaml", "deploy/jobs/cron.yml"}
    assert ("SM105", "Deployment/shop/web", "deploy/web.yaml", ROOT_LINE) in rows(data)
    assert ("SM201", "CronJob/shop/nightly", "deploy/jobs/cron.yml", 12) not in rows(data)  # it has a tag
    assert ("SM104", "CronJob/shop/nightly", "deploy/jobs/cron.yml", 11) in rows(data)  # at `- name: run`
    assert data["notices"] == []


def test_stdin_is_read_for_dash(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    write("web.yaml", CLEAN)
    monkeypatch.setattr(sys, "stdin", io.StringIO(WRITABLE.replace("name: web\n  namespace", "name: api\n  namespace")))
    data = scan_json(cli, "web.yaml", "-", code=0)
    assert data["summary"]["resources"] == 4
    assert rows(data) == [("SM105", "Deployment/shop/api", "<stdin>", ROOT_LINE)]


def test_every_document_of_a_multi_document_file_is_read_at_its_own_lines(cli: Cli) -> None:
    pod = ("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  containers:\n"
           "    - name: app\n      image: {image}\n")
    text = ("# three pods, a comment and an empty document\n---\n" + pod.format(name="one", image="nginx:1.27")
            + "---\n---\n" + pod.format(name="two", image="nginx") + "...\n---\n"
            + pod.format(name="three", image="nginx:latest"))
    write("pods.yaml", text)
    data = scan_json(cli, "pods.yaml", "--fail-on", "critical", code=0)
    assert data["summary"]["resources"] == 3
    latest = [(r, line) for rule, r, _, line in rows(data) if rule == "SM201"]
    lines = text.splitlines()
    assert latest == [("Pod/shop/two", lines.index("      image: nginx") + 1),
                      ("Pod/shop/three", lines.index("      image: nginx:latest") + 1)]


def test_json_files_one_object_a_stream_of_objects_and_lists(cli: Cli) -> None:
    def pod(name: str, image: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop"},
                "spec": {"containers": [{"name": "app", "image": image}]}}

    write("one.json", json.dumps(pod("one", "nginx:1.27")))
    write("stream.json", json.dumps(pod("two", "nginx:1.27")) + "\n" + json.dumps(pod("three", "nginx")) + "\n")
    write("list.json", json.dumps({"apiVersion": "v1", "kind": "List", "items": [pod("four", "nginx:1.27"),
                                                                                 pod("five", "nginx:latest")]}))
    data = scan_json(cli, "one.json", "stream.json", "list.json", "--fail-on", "critical", code=0)
    assert data["summary"]["resources"] == 5
    assert sorted((r, file, line) for rule, r, file, line in rows(data) if rule == "SM201") == [
        ("Pod/shop/five", "list.json", 1), ("Pod/shop/three", "stream.json", 2)]


@pytest.mark.parametrize("indent", [2, 4])
def test_pretty_json_findings_are_at_their_lines(cli: Cli, monkeypatch: pytest.MonkeyPatch, indent: int) -> None:
    items = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop"},
              "spec": {"hostNetwork": True, "containers": [
                  {"name": "sidecar", "image": "busybox:1.36"},
                  {"name": "app", "image": "nginx:latest", "securityContext": {"privileged": True}}]}}
             for name in ("one", "two")]
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=indent)  # as kubectl -o json
    write("pods.json", text)
    lines = text.splitlines()

    def where(data: dict[str, Any]) -> list[tuple[str, str, str]]:
        return [(f["rule"], f["resource"], lines[f["line"] - 1].strip()) for f in data["findings"]
                if f["rule"] in ("SM103", "SM111", "SM201")]

    expected = [(rule, f"Pod/shop/{name}", line) for name in ("one", "two") for rule, line in (
        ("SM111", '"hostNetwork": true,'), ("SM201", '"image": "nginx:latest",'), ("SM103", '"privileged": true'))]
    assert sorted(where(scan_json(cli, "pods.json", code=1))) == sorted(expected)
    # the same text on stdin is read as JSON too
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert sorted(where(scan_json(cli, "-", code=1))) == sorted(expected)


def test_a_yaml_list_is_expanded_and_each_item_located(cli: Cli) -> None:
    text = """\
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: {name: web, namespace: shop}
    spec:
      type: NodePort
      ports: [{port: 80}]
  - apiVersion: apps/v1
    kind: DeploymentList
    items:
      - apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web, namespace: shop}
        spec:
          template:
            spec:
              containers:
                - name: web
                  image: ghcr.io/acme/web:latest
"""
    write("list.yaml", text)
    data = scan_json(cli, "list.yaml", "--fail-on", "critical", code=0)
    assert data["summary"]["resources"] == 2
    found = {(rule, r): line for rule, r, _, line in rows(data)}
    assert found[("SM602", "Service/shop/web")] == 8  # type: NodePort
    assert found[("SM201", "Deployment/shop/web")] == 21  # the image line


# --- Helm, Kustomize and specs ----------------------------------------------------------------

CHART_TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
  labels:
    app.kubernetes.io/name: web
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: {{ .Values.image | quote }}
          securityContext:
            privileged: {{ .Values.privileged }}
"""


@pytest.fixture
def chart(workdir: Path) -> Path:
    """A tiny chart in a directory whose name is not the chart's."""
    write("charts/web-chart/Chart.yaml", "apiVersion: v2\nname: tiny\nversion: 0.1.0\n")
    write("charts/web-chart/values.yaml", "image: ghcr.io/acme/web:1.0.0\nprivileged: false\nreplicas: 1\n")
    write("charts/web-chart/templates/deployment.yaml", CHART_TEMPLATE)
    write("charts/web-chart/templates/NOTES.txt", "Installed {{ .Release.Name }}.\n")
    return workdir / "charts" / "web-chart"


def test_a_helm_chart_is_rendered_by_helm_with_values_and_findings_point_at_the_template(
        cli: Cli, chart: Path) -> None:
    template = "charts/web-chart/templates/deployment.yaml"
    plain = scan_json(cli, "charts/web-chart", "--fail-on", "critical", code=0)
    assert plain["summary"]["resources"] == 1
    assert {f["file"] for f in plain["findings"]} == {template}
    assert not [f for f in plain["findings"] if f["rule"] == "SM103"]
    write("prod.yaml", "privileged: true\n")
    write("more.yaml", "image: ghcr.io/acme/web:latest\n")
    layered = scan_json(cli, "charts/web-chart", "--values", "prod.yaml", "--values", "more.yaml", code=1)
    found = {(rule, r): line for rule, r, _, line in rows(layered)}
    assert found[("SM103", "Deployment/release-web")] == 19  # `privileged:` in the template
    assert found[("SM201", "Deployment/release-web")] == 17  # `image:`
    # a chart found while walking a directory is rendered too, not read as raw templates
    walked = scan_json(cli, "charts", "--fail-on", "critical", code=0)
    assert rows(walked) == rows(plain)
    assert walked["notices"] == []


def test_a_chart_in_the_release_namespace_is_not_in_the_default_namespace(cli: Cli, chart: Path) -> None:
    config = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\ndata: {{}}\n"
    write(chart / "templates" / "follows.yaml", config.format(name="follows", namespace="{{ .Release.Namespace }}"))
    write(chart / "templates" / "pinned.yaml", config.format(name="pinned", namespace="default"))
    data = scan_json(cli, "charts/web-chart", "--fail-on", "critical", code=0)
    assert [(f["resource"], f["file"], f["line"]) for f in data["findings"] if f["rule"] == "SM902"] == [
        ("ConfigMap/default/pinned", "charts/web-chart/templates/pinned.yaml", 5)]


def test_a_missing_dependency_is_a_warning_and_manifests_beside_the_chart_are_read(cli: Cli, chart: Path) -> None:
    write(chart / "Chart.yaml", """\
apiVersion: v2
name: tiny
version: 0.1.0
dependencies:
  - {name: redis, version: 1.0.0, repository: https://charts.example.com, condition: redis.enabled}
  - {name: metrics, version: 1.0.0, repository: https://charts.example.com, condition: metrics.enabled}
  - {name: vendored, version: 0.1.0}
""")
    write(chart / "values.yaml", "image: ghcr.io/acme/web:1.0.0\nprivileged: false\nreplicas: 1\n"
          "redis: {enabled: true}\nmetrics: {enabled: false}\n")
    write(chart / "charts" / "vendored" / "Chart.yaml", "apiVersion: v2\nname: vendored\nversion: 0.1.0\n")
    write(chart / "charts" / "vendored" / "templates" / "sa.yaml",
          "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: vendored}\n")
    write(chart / "upstream.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: upstream, namespace: shop}\n"
          "spec: {type: NodePort, ports: [{port: 80}]}\n")
    code, out, err = cli("scan", "charts", "--fail-on", "critical")
    assert code == 0, out
    assert err == ("charts/web-chart: warning: dependencies redis are not in charts/ (run `helm dependency build`), "
                   "so what they render was NOT scanned\n")
    data = scan_json(cli, "charts/web-chart", "--fail-on", "critical", code=0)
    assert data["summary"]["resources"] == 3  # the Deployment, the sub-chart's account, upstream.yaml's Service
    assert ("SM602", "Service/shop/upstream", "charts/web-chart/upstream.yaml", 4) in rows(data)
    # a value file can turn the dependency off
    write("no-redis.yaml", "redis: {enabled: false}\n")
    assert cli("scan", "charts", "--values", "no-redis.yaml", "--fail-on", "critical")[::2] == (0, "")


def test_a_chart_that_helm_cannot_render_is_a_loud_warning(cli: Cli, chart: Path) -> None:
    write("charts/web-chart/templates/secret.yaml", '{{ required "password is required" .Values.password }}\n')
    code, out, err = cli("scan", "charts/web-chart")
    assert code == 0
    assert out == "0 objects scanned, 0 findings (0 critical, 0 high, 0 medium, 0 low); 0 at or above high\n"
    assert re.fullmatch(r"charts/web-chart: warning: Helm could not render this chart, so it was NOT scanned: "
                        r"[^\n]*password is required[^\n]*\n", err), err


def test_the_corpus_helm_chart_renders_the_same_workloads_as_its_plain_manifests(cli: Cli) -> None:
    corpus = SHARED / "corpus" / "microservices-demo"
    chart = scan_json(cli, str(corpus / "helm-chart"), code=0)
    plain = scan_json(cli, str(corpus / "kubernetes-manifests" / "adservice.yaml"), code=0)
    assert chart["summary"]["resources"] >= 30
    assert chart["notices"] == []
    templates = corpus / "helm-chart" / "templates"
    assert {Path(f["file"]).parent for f in chart["findings"]} == {templates}
    for finding in chart["findings"]:
        lines = Path(finding["file"]).read_text(encoding="utf-8").splitlines()
        assert 1 <= finding["line"] <= len(lines)
    # the chart's adservice has what the plain manifest has, but for the image (which the plain
    # manifest leaves untagged for skaffold to set) and the namespace (which the chart leaves unset)
    def adservice(data: dict[str, Any]) -> set[tuple[str, str]]:
        return {(f["rule"], f["path"]) for f in data["findings"] if f["name"] == "adservice"}

    assert adservice(plain)
    assert adservice(chart) >= {(rule, path) for rule, path in adservice(plain) if rule not in ("SM201", "SM902")}


def test_a_kustomize_directory_is_built_and_findings_point_at_the_base(cli: Cli) -> None:
    base = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: ghcr.io/acme/web:1.0.0
"""
    write("base/deployment.yaml", base)
    write("base/kustomization.yaml", "resources: [deployment.yaml]\n")
    write("overlays/prod/kustomization.yaml", """\
resources: [../../base]
namespace: shop
namePrefix: prod-
images:
  - name: ghcr.io/acme/web
    newTag: latest
patches:
  - target: {kind: Deployment, name: web}
    patch: |
      - op: add
        path: /spec/template/spec/containers/0/securityContext
        value: {privileged: true}
""")
    data = scan_json(cli, "overlays/prod", code=1)
    assert data["summary"]["resources"] == 1
    found = {rule: (r, file, line) for rule, r, file, line in rows(data)}
    assert found["SM201"] == ("Deployment/shop/prod-web", "base/deployment.yaml", 14)  # the image, retagged
    assert found["SM103"] == ("Deployment/shop/prod-web", "base/deployment.yaml", 13)  # added by the patch
    code, _, err = cli("scan", "base/kustomization.yaml")
    assert (code, err) == (0, "notice: base/kustomization.yaml: no Kubernetes object (apiVersion and kind) in this "
                              "file; skipped\n")


def test_a_broken_kustomization_is_one_error_line(cli: Cli) -> None:
    write("k/kustomization.yaml", "resources: [missing.yaml]\n")
    code, out, err = cli("scan", "k")
    assert (code, out) == (2, "")
    assert err.startswith("error: k: kustomize build failed: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize(("example", "env"), [pair for pair in example_envs() if pair[1] in ("staging", "prod")])
def test_every_example_scans_clean_in_staging_and_prod(cli: Cli, example: str, env: str) -> None:
    code, out, err = cli("-f", str(EXAMPLES_DIR / example / "shipmate.yaml"), "scan", "--env", env)
    assert code == 0, out
    assert err == ""
    assert re.fullmatch(r"\d+ objects scanned, 0 findings \(0 critical, 0 high, 0 medium, 0 low\); 0 at or above "
                        r"high(; \d+ suppressed, 0 in the baseline)?\n", out), out


def test_a_spec_path_scans_its_environments_each_with_its_own_rules(cli: Cli) -> None:
    spec = str(EXAMPLES_DIR / "cyber-werewolves" / "shipmate.yaml")
    prod = scan_json(cli, spec, "--env", "prod", code=0)
    staging = scan_json(cli, spec, "--env", "staging", code=0)
    both = scan_json(cli, spec, "--env", "staging", "--env", "prod", code=0)
    # the single-replica addons carry a reasoned suppression of the production-only rule SM501
    assert prod["summary"]["suppressed"] == 3
    assert staging["summary"]["suppressed"] == 0
    assert both["summary"]["suppressed"] == 3
    assert both["summary"]["resources"] == prod["summary"]["resources"] + staging["summary"]["resources"]
    # with SM202 on, each finding names its environment and the spec line of the service
    write("shipmate-policy.yaml", "options: {requireDigest: true}\n")
    digest = scan_json(cli, spec, "--env", "prod", code=0)
    lines = Path(spec).read_text(encoding="utf-8").splitlines()
    api = [f for f in digest["findings"] if f["resource"] == "Deployment/cyber-werewolves/api-server"]
    assert [(f["rule"], f["file"]) for f in api] == [("SM202", f"{spec}#prod")]
    assert lines[api[0]["line"] - 1] == "  api-server:"


def test_a_yaml_file_without_kubernetes_objects_is_one_notice_and_skipped(cli: Cli) -> None:
    write("values.yaml", "replicas: 2\n---\nimage: {tag: latest}\n---\n- a\n- b\n")
    write("web.yaml", WRITABLE)
    code, out, err = cli("scan", "values.yaml", "web.yaml")
    assert (code, out) == (0, WRITABLE_TEXT)
    assert err == "notice: values.yaml: no Kubernetes object (apiVersion and kind) in this file; skipped\n"


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("bad.yaml", CLEAN.replace("    matchLabels: {app: web}", "    matchLabels: {app: web"),
     "bad.yaml:20:11: invalid YAML: did not find expected ',' or '}'"),
    ("tabs.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n\tname: a\n",
     "tabs.yaml:4:1: invalid YAML: found character that cannot start any token"),
    ("bad.json", '{"apiVersion": "v1",\n "kind": }\n', "bad.json:2:10: invalid JSON: Expecting value"),
])
def test_a_broken_file_is_one_located_error_line_and_exit_2(cli: Cli, name: str, text: str, expected: str) -> None:
    write(name, text)
    code, out, err = cli("scan", name)
    assert (code, out) == (2, "")
    suffix = "; fix the file or pass only valid manifests" if "YAML" in expected else ""
    assert err == f"error: {expected}{suffix}\n"


def test_a_missing_path_is_exit_2(cli: Cli) -> None:
    assert cli("scan", "nope.yaml") == (2, "", "error: nope.yaml: no such file or directory\n")


# --- exit codes and the policy ----------------------------------------------------------------

@pytest.mark.parametrize(("fail_on", "code"), [("low", 1), ("medium", 1), ("high", 0), ("critical", 0)])
def test_fail_on_sets_the_threshold(cli: Cli, fail_on: str, code: int) -> None:
    write("web.yaml", WRITABLE)  # one medium finding
    result = cli("scan", "web.yaml", "--fail-on", fail_on)
    assert result[0] == code
    assert result[1].endswith(f"; {1 if code else 0} at or above {fail_on}\n")
    assert result[2] == ("error: 1 finding(s) at or above " + fail_on + "\n" if code else "")


@pytest.mark.parametrize(("severity", "code"), [("low", 0), ("medium", 0), ("high", 1), ("critical", 1)])
def test_the_default_threshold_is_high(cli: Cli, severity: str, code: int) -> None:
    write("shipmate-policy.yaml", f"rules:\n  SM105: {{severity: {severity}}}\n")
    write("web.yaml", WRITABLE)
    assert cli("scan", "web.yaml")[0] == code


def test_fail_on_is_read_from_the_environment(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    write("web.yaml", WRITABLE)
    monkeypatch.setenv("SHIPMATE_SCAN_FAIL_ON", "medium")
    assert cli("scan", "web.yaml")[0] == 1


def test_a_policy_disables_a_rule(cli: Cli) -> None:
    write("web.yaml", WRITABLE)
    write("shipmate-policy.yaml", "rules:\n  SM105: {enabled: false}\n")
    assert rows(scan_json(cli, "web.yaml", code=0)) == []


def test_a_policy_reranks_a_rule_and_sets_the_threshold(cli: Cli) -> None:
    write("web.yaml", WRITABLE)
    write("rules/strict.yaml", "rules:\n  SM105: {severity: critical}\n")
    code, out, err = cli("scan", "web.yaml", "--policy", "rules/strict.yaml")
    assert code == 1
    assert "  CRITICAL SM105 Root file system is writable" in out
    assert err == "error: 1 finding(s) at or above high\n"
    write("shipmate-policy.yaml", "failOn: medium\n")
    assert cli("scan", "web.yaml")[0] == 1
    assert cli("scan", "web.yaml", "--fail-on", "critical")[0] == 0  # the command line wins


def test_a_policy_has_rules_per_environment(cli: Cli) -> None:
    write("web.yaml", WRITABLE.replace("replicas: 1", "replicas: 2"))
    write("shipmate-policy.yaml", """\
production: [prod, live]
rules:
  SM502: {enabled: false}
  SM504: {enabled: false}
environments:
  dev:
    rules:
      SM105: {enabled: false}
  live:
    rules:
      SM105: {severity: high}
""")
    assert rows(scan_json(cli, "web.yaml", "--env", "dev", code=0)) == []
    assert [f["severity"] for f in scan_json(cli, "web.yaml", "--env", "staging", code=0)["findings"]] == ["medium"]
    live = scan_json(cli, "web.yaml", "--env", "live", code=1)
    # live is production: maxUnavailable is checked there, and SM105 is high
    assert sorted((f["rule"], f["severity"]) for f in live["findings"]) == [("SM105", "high"), ("SM904", "medium")]


@pytest.mark.parametrize(("policy", "expected"), [
    ("rules:\n  SM105: {enabled: false}\n  SM999: {severity: high}\n",
     "shipmate-policy.yaml:3:3: rules.SM999: unknown rule 'SM999'; `shipmate scan --list-rules` lists them"),
    ("environments:\n  dev:\n    rules:\n      sm105: {enabled: false}\n",
     "shipmate-policy.yaml:4:7: environments.dev.rules.sm105: unknown rule 'sm105'; `shipmate scan --list-rules` "
     "lists them"),
    ("rules:\n  SM105:\n    severity: urgent\n",
     "shipmate-policy.yaml:3:5: rules.SM105.severity: Input should be 'low', 'medium', 'high' or 'critical'"),
])
def test_a_bad_policy_is_one_located_error_and_exit_2(cli: Cli, policy: str, expected: str) -> None:
    write("web.yaml", WRITABLE)
    write("shipmate-policy.yaml", policy)
    assert cli("scan", "web.yaml") == (2, "", f"error: {expected}\n")


# --- suppressions and baselines -----------------------------------------------------------------

def suppressed(reason: str) -> str:
    return WRITABLE.replace("  template:\n    metadata:\n",
                            f"  template:\n    metadata:\n      annotations:\n"
                            f"        ignore.shipmate.dev/SM105: {json.dumps(reason)}\n")


def test_an_inline_suppression_with_a_reason_silences_the_rule_there(cli: Cli) -> None:
    write("web.yaml", suppressed("writes its cache to the root file system; ticket OPS-12"))
    code, out, err = cli("scan", "web.yaml")
    assert (code, err) == (0, "")
    assert out == ("2 objects scanned, 0 findings (0 critical, 0 high, 0 medium, 0 low); 0 at or above high; "
                   "1 suppressed, 0 in the baseline\n")


def test_a_suppression_without_a_reason_is_refused_with_a_notice(cli: Cli) -> None:
    write("web.yaml", suppressed(""))
    code, out, err = cli("scan", "web.yaml")
    assert code == 0
    assert "SM105 Root file system is writable" in out
    assert out.endswith("1 findings (0 critical, 0 high, 1 medium, 0 low); 0 at or above high\n")
    assert err == ("notice: web.yaml: Deployment/shop/web: suppression of SM105 has no reason and is ignored; "
                   "write the reason as the annotation's value\n")


def test_a_baseline_lets_only_new_findings_fail(cli: Cli) -> None:
    write("web.yaml", WRITABLE.replace("allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true"))
    assert cli("scan", "web.yaml")[0] == 1
    code, _, err = cli("scan", "web.yaml", "--write-baseline", ".shipmate-baseline.json")
    assert (code, err) == (0, "wrote 2 findings to .shipmate-baseline.json\n")
    recorded = json.loads(Path(".shipmate-baseline.json").read_text(encoding="utf-8"))
    assert sorted(f["rule"] for f in recorded["findings"]) == ["SM104", "SM105"]
    code, out, err = cli("scan", "web.yaml", "--baseline", ".shipmate-baseline.json", "--fail-on", "low")
    assert (code, err) == (0, "")
    assert out.endswith("0 findings (0 critical, 0 high, 0 medium, 0 low); 0 at or above low; "
                        "0 suppressed, 2 in the baseline\n")
    # a new problem on the same object fails; the recorded ones stay quiet
    write("web.yaml", Path("web.yaml").read_text(encoding="utf-8").replace(
        "            allowPrivilegeEscalation: true\n",
        "            allowPrivilegeEscalation: true\n            privileged: true\n"))
    data = scan_json(cli, "web.yaml", "--baseline", ".shipmate-baseline.json", code=1)
    assert [f["rule"] for f in data["findings"]] == ["SM103"]
    assert data["summary"]["baselined"] == 2
    # the policy can name the baseline; rewriting it records every current finding
    write("shipmate-policy.yaml", "baseline: .shipmate-baseline.json\n")
    assert cli("scan", "web.yaml")[0] == 1
    assert cli("scan", "web.yaml", "--write-baseline", ".shipmate-baseline.json")[2] == (
        "wrote 3 findings to .shipmate-baseline.json\n")
    assert cli("scan", "web.yaml")[0] == 0


@pytest.mark.parametrize(("content", "expected"), [
    (None, "error: gone.json: no such baseline; create one with --write-baseline gone.json\n"),
    ("{not json", "error: gone.json:1:2: invalid baseline JSON: Expecting property name enclosed in double quotes\n"),
    ("[]", "error: gone.json:1:1: not a baseline: no findings list; write one with --write-baseline\n"),
])
def test_a_bad_baseline_is_exit_2(cli: Cli, content: str | None, expected: str) -> None:
    write("web.yaml", WRITABLE)
    if content is not None:
        write("gone.json", content)
    assert cli("scan", "web.yaml", "--baseline", "gone.json") == (2, "", expected)


# --- rules, secrets and report files --------------------------------------------------------------

def test_list_rules_as_text(cli: Cli) -> None:
    code, out, err = cli("scan", "--list-rules")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == len(RULES) >= 45
    for line, rule in zip(lines, RULES, strict=True):
        assert re.fullmatch(rf"{rule.id}  {rule.severity.label:<8} {rule.category:<13} {re.escape(rule.message)}"
                            r"(  \(off unless the policy turns it on\))?", line), line
        assert line.endswith("(off unless the policy turns it on)") == (not rule.default_enabled)


@pytest.mark.parametrize("argv", [("-o", "json", "scan", "--list-rules"), ("scan", "--list-rules", "--format", "json")])
def test_list_rules_as_json(cli: Cli, argv: tuple[str, ...]) -> None:
    code, out, _ = cli(*argv)
    assert code == 0
    data = json.loads(out)
    assert [r["id"] for r in data] == [r.id for r in RULES]
    assert len({r["id"] for r in data}) >= 45
    assert set(data[0]) == {"id", "name", "severity", "category", "message", "remediation", "enabled"}
    assert {r["id"] for r in data if r["enabled"] != "yes"} == {"SM202"}


LEAKY = CLEAN.replace("          resources:\n", f"""\
          args: ["--db-password={DB_PASSWORD}"]
          env:
            - name: GITHUB_TOKEN
              value: {SECRET}
          resources:
""") + f"""\
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: shop}}
data:
  app.properties: |
    mode=fast
    api_token={SECRET}
"""


@pytest.mark.parametrize("fmt", ["text", "json", "sarif", "junit"])
def test_a_found_secret_is_only_ever_shown_masked(cli: Cli, fmt: str) -> None:
    write("leaky.yaml", LEAKY)
    code, out, err = cli("scan", "leaky.yaml", "--format", fmt)
    assert code == 1
    # JSON escapes the ellipsis of a masked value: read it back
    shown = json.dumps(json.loads(out), ensure_ascii=False) if fmt in ("json", "sarif") else out
    for raw in (SECRET, DB_PASSWORD, SECRET[4:], SECRET[:12], DB_PASSWORD[:10]):
        assert raw not in shown
        assert raw not in err
    assert mask(SECRET) in shown
    assert mask(DB_PASSWORD) in shown
    code, _, err = cli("scan", "leaky.yaml", "--format", fmt, "--report", "report.out")
    assert (code, err) == (1, f"wrote {fmt} report to report.out\nerror: 3 finding(s) at or above high\n")
    report = Path("report.out").read_text(encoding="utf-8")
    assert report == out


def test_secret_findings_name_the_rule_and_place(cli: Cli) -> None:
    write("leaky.yaml", LEAKY)
    data = scan_json(cli, "leaky.yaml", code=1)
    secrets = sorted((f["rule"], f["resource"], f["path"], f["evidence"]) for f in data["findings"]
                     if f["evidence"] is not None)
    assert secrets == [
        ("SM701", "Deployment/shop/web", "spec.template.spec.containers[0].env[0].value", mask(SECRET)),
        ("SM702", "ConfigMap/shop/settings", "data.app.properties", mask(SECRET)),
        ("SM706", "Deployment/shop/web", "spec.template.spec.containers[0].args", mask(DB_PASSWORD)),
    ]


@pytest.mark.parametrize("fmt", ["text", "json", "sarif", "junit"])
def test_report_writes_the_report_to_a_file(cli: Cli, fmt: str) -> None:
    write("web.yaml", WRITABLE)
    code, printed, _ = cli("scan", "web.yaml", "--format", fmt)
    assert code == 0
    code, out, err = cli("scan", "web.yaml", "--format", fmt, "--report", "out/report.txt")
    assert (code, out) == (0, "")
    assert err == f"wrote {fmt} report to out/report.txt\n"
    assert Path("out/report.txt").read_text(encoding="utf-8") == printed


def test_the_report_file_is_written_when_the_scan_fails(cli: Cli) -> None:
    write("web.yaml", WRITABLE)
    code, out, err = cli("scan", "web.yaml", "--fail-on", "medium", "--format", "json", "--report", "r.json")
    assert (code, out) == (1, "")
    assert err == "wrote json report to r.json\nerror: 1 finding(s) at or above medium\n"
    assert json.loads(Path("r.json").read_text(encoding="utf-8"))["summary"]["failing"] == 1


def test_the_default_input_is_the_spec_of_dash_f(cli: Cli, workdir: Path) -> None:
    spec = yaml.safe_load((EXAMPLES_DIR / "tianting" / "shipmate.yaml").read_text(encoding="utf-8"))
    write("shipmate.yaml", yaml.safe_dump(spec))
    data = scan_json(cli, "--env", "staging", code=0)
    assert data["summary"]["resources"] > 10
    assert data["findings"] == []
