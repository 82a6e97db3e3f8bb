"""`shipmate scan` reports read by the tools that consume them: SARIF validated against the
OASIS 2.1.0 schema (a copy in tests/data) with full rule metadata and results at real lines,
JUnit parsed as XML with one failure per finding at or above --fail-on, and the JSON shape that
`shipmate.policy.report.to_json` documents.

Inputs: the microservices-demo folder of the shared corpus (plain manifests, a Helm chart, a
Kustomize base and components), an example spec, and a small manifest written here with a finding
of every severity and a secret that must only ever appear masked.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jsonschema
import pytest
import yaml

from shipmate.cli.main import main
from shipmate.policy.leaks import mask
from shipmate.policy.rules import RULES
from tests.support import EXAMPLES_DIR, SHARED

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parent.parent / "data"
CORPUS = SHARED / "corpus" / "microservices-demo"
Result = tuple[int, str, str]
Cli = Callable[..., Result]

# assembled here so that no token-shaped literal sits in the repository
SECRET = "ghp_" + "R8vN2kQ7wXe4Lm9pTz3b" + "Yc6Hs1Du5Fg0Ja2KqW7e"
MASKED = mask(SECRET)

# one finding of each severity, every one on a key written in the file
MANIFEST = f"""\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny
  namespace: shop
spec:
  podSelector: {{}}
  policyTypes: [Ingress, Egress]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: leaky
  namespace: shop
  labels: {{app.kubernetes.io/name: leaky, app.kubernetes.io/instance: leaky, app.kubernetes.io/version: "1.0.0"}}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: leaky}}
  template:
    metadata:
      labels: {{app: leaky}}
    spec:
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        seccompProfile: {{type: RuntimeDefault}}
      containers:
        - name: app
          image: ghcr.io/acme/leaky:1.0.0
          imagePullPolicy: Never
          securityContext:
            privileged: true
            allowPrivilegeEscalation: true
            readOnlyRootFilesystem: false
            capabilities: {{drop: [ALL]}}
          env:
            - name: LOG_LEVEL
              value: info
            - name: GITHUB_TOKEN
              value: {SECRET}
          resources:
            requests: {{cpu: 100m, memory: 64Mi}}
            limits: {{cpu: 200m, memory: 128Mi}}
          readinessProbe: {{httpGet: {{path: /readyz, port: 8080}}}}
          livenessProbe: {{httpGet: {{path: /healthz, port: 8080}}, failureThreshold: 6}}
"""
# rule -> (severity, line of the key the finding is about)
EXPECTED = {
    "SM103": ("critical", 34),
    "SM701": ("critical", 42),
    "SM104": ("high", 35),
    "SM105": ("medium", 36),
    "SM203": ("low", 32),
}
LEVELS = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}
_URI_REFERENCE = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Run `shipmate ARGS...` in-process in an empty folder: (exit code, stdout, stderr)."""
    for name in list(os.environ):
        if name.startswith("SHIPMATE_") or name in {"NO_COLOR", "FORCE_COLOR"}:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)

    def run(*argv: str) -> Result:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "leaky.yaml"
    path.write_text(MANIFEST, encoding="utf-8")
    return path


@cache
def sarif_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((DATA / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def assert_valid_sarif(log: dict[str, Any]) -> None:
    errors = sorted(sarif_validator().iter_errors(log), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])
    assert log["version"] == "2.1.0"
    assert len(log["runs"]) == 1


def locations(log: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str, int, str]]:
    """(result, artifact URI, start line, logical path) of every result."""
    for result in log["runs"][0]["results"]:
        (location,) = result["locations"]
        physical = location["physicalLocation"]
        (logical,) = location["logicalLocations"]
        yield result, physical["artifactLocation"]["uri"], physical["region"]["startLine"], logical["name"]


def key_parts(path: str) -> list[str | int]:
    return [int(m.group(2)) if m.group(2) else m.group(1) for m in re.finditer(r"([^.\[\]]+)|\[(\d+)\]", path)]


def holds(line: str, part: str | int) -> bool:
    """Whether a line of block YAML writes key `part` (or, for an index, starts a list item)."""
    if isinstance(part, int):
        return line.lstrip().startswith("- ")
    return re.search(rf"(^|[\s{{,-])[\"']?{re.escape(part)}[\"']?\s*:", line) is not None


def deepest(obj: Any, parts: list[str | int]) -> str | int | None:
    """The last part of `parts` that exists in `obj` (the finding points there when the key it
    asks for is missing); None when not even the first does (it points at the document)."""
    found: str | int | None = None
    node = obj
    for part in parts:
        in_list = isinstance(part, int) and isinstance(node, list) and part < len(node)
        in_dict = isinstance(part, str) and isinstance(node, dict) and part in node
        if not (in_list or in_dict):
            break
        node = node[part]
        found = part
    return found


def find_object(path: Path, ref: str) -> dict[str, Any] | None:
    """The object `Kind/[namespace/]name` of a plain manifest file, parsed with PyYAML."""
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if not isinstance(doc, dict):
            continue
        meta = doc.get("metadata") or {}
        parts = [doc.get("kind"), meta.get("namespace"), meta.get("name")]
        if "/".join(str(p) for p in parts if p) == ref:
            return doc
    return None


# --- SARIF ------------------------------------------------------------------------------------

def test_sarif_of_a_small_file_has_every_severity_at_its_line_and_only_the_masked_secret(
        cli: Cli, manifest: Path) -> None:
    code, out, err = cli("scan", str(manifest), "--format", "sarif")
    assert code == 1, err  # privileged and the token are critical, escalation is high
    assert SECRET not in out
    assert SECRET not in err
    log = json.loads(out)
    assert_valid_sarif(log)
    rows = {r["ruleId"]: (r["properties"]["severity"], line, r["level"], uri)
            for r, uri, line, _ in locations(log)}
    assert {rule: (sev, line) for rule, (sev, line, _, _) in rows.items()} == EXPECTED
    assert {rule: level for rule, (_, _, level, _) in rows.items()} == {
        rule: LEVELS[sev] for rule, (sev, _) in EXPECTED.items()}
    assert {uri for *_, uri in rows.values()} == {str(manifest)}
    lines = MANIFEST.splitlines()
    for result, _, line, path in locations(log):
        assert holds(lines[line - 1], key_parts(path)[-1]), (result["ruleId"], line, path)
    (token,) = [r for r in log["runs"][0]["results"] if r["ruleId"] == "SM701"]
    assert token["message"]["text"].endswith(f"value {MASKED}")
    assert token["partialFingerprints"]["shipmate/v1"]


def test_sarif_describes_every_rule_once_and_results_point_at_their_rule(cli: Cli, manifest: Path) -> None:
    code, out, _ = cli("scan", str(manifest), "--format", "sarif", "--fail-on", "critical")
    assert code == 1
    run = json.loads(out)["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "shipmate"
    assert driver["version"]
    rules = driver["rules"]
    assert [r["id"] for r in rules] == [r.id for r in RULES]
    assert len({r["id"] for r in rules}) == len(rules) >= 45
    for descriptor, rule in zip(rules, RULES, strict=True):
        assert descriptor["name"] == rule.name
        assert descriptor["shortDescription"]["text"] == rule.message
        assert descriptor["help"]["text"] == rule.remediation
        assert rule.remediation in descriptor["help"]["markdown"]
        assert descriptor["helpUri"].startswith("https://")
        assert descriptor["defaultConfiguration"]["level"] == LEVELS[rule.severity.label]
        score = float(descriptor["properties"]["security-severity"])
        assert 0.0 < score <= 10.0
        assert rule.category in descriptor["properties"]["tags"]
    # the scores order the severities the way code scanning ranks them
    score_of = {r.severity: float(d["properties"]["security-severity"]) for r, d in zip(RULES, rules, strict=True)}
    assert sorted(score_of, key=score_of.__getitem__) == sorted(score_of)
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]


def test_sarif_of_the_corpus_is_valid_and_every_result_is_at_a_real_line(cli: Cli) -> None:
    code, out, err = cli("scan", str(CORPUS), "--format", "sarif")
    assert code == 0, err  # a hardened app: findings, none at or above high
    log = json.loads(out)
    assert_valid_sarif(log)
    results = list(locations(log))
    assert len(results) > 100
    checked_strictly = 0
    folders = set()
    for result, uri, line, path in results:
        assert _URI_REFERENCE.fullmatch(uri), uri
        file = Path(unquote(uri))
        assert file.is_file(), uri  # a file a person can open, never rendered output
        folders.add(file.relative_to(CORPUS).parts[0])
        lines = file.read_text(encoding="utf-8").splitlines()
        assert 1 <= line <= len(lines), (uri, line)
        text = lines[line - 1]
        parts = key_parts(path)
        resource = result["locations"][0]["logicalLocations"][0]["fullyQualifiedName"].removesuffix(f"/{path}")
        obj = None if "templates" in file.parts else find_object(file, resource)
        if obj is not None:
            # a plain manifest: the line writes the finding's key, or the deepest parent it has
            # (a patch that only deletes an object has none: the finding is at its document)
            part = deepest(obj, parts)
            assert part is None or holds(text, part), (uri, line, path, text)
            checked_strictly += part is not None
        else:
            # a Helm template: the line writes one of the keys on the way to the finding's
            assert any(holds(text, p) for p in parts), (uri, line, path, text)
    assert folders >= {"helm-chart", "kubernetes-manifests", "kustomize", "release"}
    assert checked_strictly > len(results) / 2


def test_sarif_of_a_spec_points_at_the_service_that_made_the_object(cli: Cli, tmp_path: Path) -> None:
    spec = EXAMPLES_DIR / "cyber-werewolves" / "shipmate.yaml"
    (tmp_path / "shipmate-policy.yaml").write_text("options: {requireDigest: true}\n", encoding="utf-8")
    code, out, err = cli("-f", str(spec), "scan", "--env", "prod", "--format", "sarif")
    assert code == 0, err  # SM202 is low
    log = json.loads(out)
    assert_valid_sarif(log)
    lines = spec.read_text(encoding="utf-8").splitlines()
    named = set()
    for result, uri, line, _ in locations(log):
        assert result["ruleId"] == "SM202"
        assert uri == str(spec)
        name = result["message"]["text"].split(":", 1)[0].rsplit("/", 1)[-1]
        key = lines[line - 1].strip().split(":", 1)[0]
        assert key == "backups" if name.startswith("backup-") else key == name, (name, line, lines[line - 1])
        named.add(key)
    assert named == {"api-server", "ws-gateway", "agent-runtime", "postgres", "redis", "nats", "backups"}


def test_sarif_notices_are_tool_notifications(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "values.yaml").write_text("replicas: 2\n", encoding="utf-8")
    code, out, err = cli("scan", "values.yaml", "--format", "sarif")
    assert code == 0
    assert err == "notice: values.yaml: no Kubernetes object (apiVersion and kind) in this file; skipped\n"
    log = json.loads(out)
    assert_valid_sarif(log)
    run = log["runs"][0]
    assert run["results"] == []
    (note,) = run["invocations"][0]["toolExecutionNotifications"]
    assert note["level"] == "note"
    assert note["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "values.yaml"


# --- JUnit ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fail_on", "failing"), [("low", 5), ("medium", 4), ("high", 3), ("critical", 2)])
def test_junit_failures_are_the_findings_at_or_above_fail_on(cli: Cli, manifest: Path, fail_on: str,
                                                             failing: int) -> None:
    code, out, err = cli("scan", str(manifest), "--format", "junit", "--fail-on", fail_on)
    assert code == 1
    assert err.endswith(f"error: {failing} finding(s) at or above {fail_on}\n")
    assert SECRET not in out
    root = ET.fromstring(out)  # noqa: S314 - our own output
    assert root.tag == "testsuites"
    (suite,) = root
    cases = suite.findall("testcase")
    failed = [c for c in cases if c.find("failure") is not None]
    assert int(root.attrib["failures"]) == int(suite.attrib["failures"]) == len(failed) == failing
    assert int(suite.attrib["tests"]) == len(cases) == len(EXPECTED)
    assert {c.attrib["name"].split()[0] for c in failed} == {
        rule for rule, (sev, _) in EXPECTED.items()
        if ["low", "medium", "high", "critical"].index(sev) >= ["low", "medium", "high", "critical"].index(fail_on)}
    for case in cases:
        assert case.attrib["classname"] == "Deployment/shop/leaky"
        assert case.attrib["file"] == str(manifest)
        rule = case.attrib["name"].split()[0]
        assert int(case.attrib["line"]) == EXPECTED[rule][1]
    token = next(c for c in cases if c.attrib["name"].startswith("SM701"))
    assert MASKED in "".join(token.itertext())


def test_junit_without_findings_is_one_passing_case(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: shop}\n"
                                      "data: {LOG_LEVEL: info}\n", encoding="utf-8")
    code, out, _ = cli("scan", "cm.yaml", "--format", "junit")
    assert code == 0
    root = ET.fromstring(out)  # noqa: S314 - our own output
    assert root.attrib == {"name": "shipmate scan", "tests": "1", "failures": "0"}
    assert [c.attrib["name"] for c in root.iter("testcase")] == ["no findings"]


# --- JSON -------------------------------------------------------------------------------------

FINDING_KEYS = {"rule", "severity", "message", "resource", "kind", "name", "namespace", "container", "path",
                "file", "line", "remediation", "evidence", "fingerprint"}


def test_json_has_the_documented_shape(cli: Cli, manifest: Path) -> None:
    code, out, _ = cli("scan", str(manifest), "--format", "json", "--fail-on", "medium")
    assert code == 1
    assert SECRET not in out
    data = json.loads(out)
    assert set(data) == {"tool", "summary", "findings", "notices"}
    assert data["tool"]["name"] == "shipmate"
    assert data["summary"] == {
        "resources": 2, "findings": 5, "failing": 4, "fail_on": "medium", "suppressed": 0, "baselined": 0,
        "by_severity": {"critical": 2, "high": 1, "medium": 1, "low": 1}}
    assert data["notices"] == []
    for finding in data["findings"]:
        assert set(finding) == FINDING_KEYS
        assert finding["resource"] == "Deployment/shop/leaky"
        assert (finding["kind"], finding["namespace"], finding["name"]) == ("Deployment", "shop", "leaky")
        assert finding["container"] == "app"
        assert finding["file"] == str(manifest)
        assert (finding["severity"], finding["line"]) == EXPECTED[finding["rule"]]
        assert re.fullmatch(r"[0-9a-f]{16}", finding["fingerprint"])
        assert finding["evidence"] == (MASKED if finding["rule"] == "SM701" else None)
    assert [f["rule"] for f in data["findings"]] == ["SM203", "SM103", "SM104", "SM105", "SM701"]  # by line
    # the output is stable: a second run is byte for byte the same
    assert cli("scan", str(manifest), "--format", "json", "--fail-on", "medium")[1] == out


def test_junit_counts_each_finding_even_when_one_rule_fires_twice_on_an_object(cli: Cli, tmp_path: Path) -> None:
    pod = yaml.safe_load(MANIFEST.split("---\n")[1])["spec"]["template"]
    pod["spec"]["containers"].append({**pod["spec"]["containers"][0], "name": "sidecar", "env": []})
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "two", "namespace": "shop"}, "spec": pod["spec"]}))
    code, out, _ = cli("scan", "pod.yaml", "--format", "junit", "--fail-on", "high")
    assert code == 1
    root = ET.fromstring(out)  # noqa: S314 - our own output
    failed = sorted(c.attrib["name"] for c in root.iter("testcase") if c.find("failure") is not None)
    assert failed == [
        "SM103 Pod/shop/two spec.containers[0].securityContext.privileged",
        "SM103 Pod/shop/two spec.containers[1].securityContext.privileged",
        "SM104 Pod/shop/two spec.containers[0].securityContext.allowPrivilegeEscalation",
        "SM104 Pod/shop/two spec.containers[1].securityContext.allowPrivilegeEscalation",
        "SM701 Pod/shop/two spec.containers[0].env[1].value",
    ]
    assert root.attrib["failures"] == "5"
