"""The Helm chart, rendered by the real Helm engine, gives exactly the objects of every environment.

For every example and environment: write the chart, render it with `values-<env>.yaml` as
`helm install -f` would, and compare the set of objects with `kit.objects[env]`, the single source
of truth. Also: helm lint finds no errors, values.schema.json accepts every values file, the output
is deterministic and the templates really are templates. A spec written here covers what the
examples may not (StatefulSet and DaemonSet services, exec probes, Gateway API, External Secrets,
env secrets, config files, more addon kinds, writable directories of a generic addon, RabbitMQ's
user, external addons that are used and backed up, alone or beside in-cluster ones).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml

from shipmate.render import helm as helm_format
from shipmate.render.kit import Kit, build_kit
from shipmate.render.yamlio import dump
from shipmate.spec.loader import load_text
from tests.support import EXAMPLES, example_envs, example_kit

pytestmark = pytest.mark.integration

Obj = dict[str, Any]

COVERAGE_SPEC = """
version: 1
app: {name: coverage, version: "2024.10", registry: ghcr.io/acme}
services:
  web:
    ports: [{name: http, port: 8080}, {name: admin, port: 9000}]
    replicas: 2
    resources: {requests: {cpu: "1", memory: 1Gi}, limits: {cpu: "2", memory: 2Gi}}
    config: {MODE: "y", RATIO: "1e3", FLAG: true, COUNT: 1000000}
    configFiles:
      /etc/web/app.conf: "a = 1\\nb = <x & y>\\n"
      /etc/web/conf.d/extra.conf: "n\\n"
      /banner.txt: "hello"
    secrets:
      - api-key
      - {secret: token, delivery: env, env: API_TOKEN}
    calls: [store]
    uses: [db, cache, queue]
    expose: {host: web.example.com, path: /, port: admin}
    metrics: {port: admin, path: /stats}
    serviceAccount: {create: true, automountToken: true}
    command: [/bin/web]
    args: [--listen, ":8080"]
    update: {maxSurge: 1, maxUnavailable: 0}
  store:
    kind: StatefulSet
    image: docker.io/acme/store:9
    ports: [{name: grpc, port: 7000, protocol: grpc}]
    storage: 3Gi
    probes:
      startup: {exec: [cat, /tmp/ready], periodSeconds: 5}
    metrics: null
  agent:
    kind: DaemonSet
    image: docker.io/acme/agent
    version: "1.0"
    probes:
      liveness: {exec: [cat, /tmp/alive]}
      readiness: {exec: [cat, /tmp/ready]}
    resources: {requests: {cpu: 50m}, limits: {memory: 64Mi}}
    update: {maxUnavailable: 0}
    secretsDir: /run/agent
    secrets: [{secret: token, delivery: env}]
addons:
  db: {kind: mysql, databases: [app], config: {MYSQL_CHARSET: utf8mb4}}
  cache: {kind: generic, image: docker.io/acme/cache:2, port: 11211, writable: [/var/cache/app, /run/app]}
  queue: {kind: redis, external: true}
  mq: {kind: rabbitmq}
secrets:
  api-key: {external: {provider: vault, path: secret/data/coverage/api, key: key}}
  token: {set: true}
alerts:
  errorRate: 0.015
  latencyP99: 250ms
  serviceDown: 2m
  queueBacklog: {metric: rabbitmq_queue_messages_ready, threshold: 250}
slos:
  - {name: web-availability, service: web, objective: 99.95}
  - {name: store-ok, service: store, objective: 97.3}
backups:
  - {name: db-daily, addon: db, type: full, schedule: "15 1 * * *"}
  - {name: queue-dump, addon: queue, type: logical, tables: [a, b]}
environments:
  dev:
    target: local
    secretsDelivery: secret
    overrides:
      services:
        web: {replicas: 1, expose: null}
  staging:
    secretsDelivery: external-secrets
    secretStore: acme-store
    ingress: {kind: gateway, gateway: edge}
    overrides:
      services:
        web: {autoscaling: {minReplicas: 2, maxReplicas: 5, cpu: 60, memory: 70}}
      addons:
        db: {external: true}
        mq: {config: {RABBITMQ_DEFAULT_USER: broker}}
        cache: {writable: [/srv/cache]}
  production:
    cluster: {namespace: coverage}
    secretStore: aws
    ingress: {tlsSecret: wildcard-tls, className: traefik}
    overrides:
      addons:
        mq: null
      backups: []
"""


def coverage_kit() -> Kit:
    return build_kit(load_text(COVERAGE_SPEC, "coverage.yaml", {}))


def kit_of(name: str) -> Kit:
    return coverage_kit() if name == "coverage" else example_kit(name)


def all_envs() -> list[tuple[str, str]]:
    return [*example_envs(), *[("coverage", env) for env in coverage_kit().environments]]


def write_chart(kit: Kit, root: Path) -> Path:
    for path, text in helm_format.files(kit).items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return root / kit.app


def overlay_values(chart: Path, env: str) -> dict[str, Any]:
    """The values file of one environment, read as `helm install -f` reads it."""
    return helm.values_from_yaml((chart / f"values-{env}.yaml").read_text(encoding="utf-8"))


def key(obj: Obj) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def describe(objects: dict[tuple[str, str, str], Obj], k: tuple[str, str, str]) -> list[str]:
    return yaml.safe_dump(objects[k], sort_keys=True, width=10_000).splitlines()


def assert_same_objects(rendered: list[Obj], expected: list[Obj]) -> None:
    got = {key(o): o for o in rendered}
    want = {key(o): o for o in expected}
    assert len(got) == len(rendered), "the chart renders the same object twice"
    problems = [f"missing from the chart: {k}" for k in sorted(want.keys() - got.keys())]
    problems += [f"only in the chart: {k}" for k in sorted(got.keys() - want.keys())]
    for k in sorted(want.keys() & got.keys()):
        if got[k] != want[k]:
            diff = difflib.unified_diff(describe(want, k), describe(got, k), "objects.py", "helm", lineterm="")
            problems.append(f"{k} differs:\n" + "\n".join(diff))
    assert not problems, "\n\n".join(problems)


@pytest.mark.parametrize(("name", "env"), all_envs())
def test_chart_renders_exactly_the_objects_of_each_environment(name: str, env: str, tmp_path: Path) -> None:
    kit = kit_of(name)
    chart_dir = write_chart(kit, tmp_path)
    with helm.Chart.load(chart_dir) as chart:
        manifests = chart.render(values=overlay_values(chart_dir, env), name=kit.app,
                                 namespace=kit.plans[env].namespace)
    rendered = [doc for text in manifests.values() for doc in yaml.safe_load_all(text) if doc]
    assert_same_objects(rendered, kit.objects[env])


@pytest.mark.parametrize("name", [*EXAMPLES, "coverage"])
def test_helm_lint_finds_no_errors(name: str, tmp_path: Path) -> None:
    kit = kit_of(name)
    chart_dir = write_chart(kit, tmp_path)
    for env in kit.environments:
        report = helm.lint(chart_dir, overlay_values(chart_dir, env), strict=False, kube_version="v1.31.0")
        errors = [m for m in report["messages"] if m["severity"] >= 3]
        assert not errors, f"{env}: {errors}"
        assert not report["errors"], f"{env}: {report['errors']}"


@pytest.mark.parametrize("name", [*EXAMPLES, "coverage"])
def test_values_schema_accepts_every_values_file(name: str, tmp_path: Path) -> None:
    kit = kit_of(name)
    chart_dir = write_chart(kit, tmp_path)
    schema = json.loads((chart_dir / "values.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    documents = {"values.yaml": helm.values_from_yaml((chart_dir / "values.yaml").read_text(encoding="utf-8"))}
    with helm.Chart.load(chart_dir) as chart:
        for env in kit.environments:
            overlay = overlay_values(chart_dir, env)
            documents[f"values-{env}.yaml"] = overlay
            documents[f"merged values of {env}"] = chart.merge_values(overlay)
            chart.validate_schema(overlay)
    for where, document in documents.items():
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
        assert not errors, f"{where}: {errors}"


def test_schema_rejects_a_typo(tmp_path: Path) -> None:
    chart_dir = write_chart(coverage_kit(), tmp_path)
    with helm.Chart.load(chart_dir) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema({"services": {"web": {"replicaz": 3}}})


def test_base_environment_needs_no_overlay_and_others_are_minimal() -> None:
    kit = coverage_kit()
    files = helm_format.files(kit)
    assert files["coverage/values-staging.yaml"].endswith("{}\n")
    dev = yaml.safe_load(files["coverage/values-dev.yaml"])
    assert dev["services"]["web"]["expose"] is None
    assert "image" not in dev["services"]["web"]


def test_output_is_deterministic() -> None:
    for name in [*EXAMPLES, "coverage"]:
        assert helm_format.files(kit_of(name)) == helm_format.files(kit_of(name))


def test_chart_layout_and_templates_are_templates() -> None:
    kit = coverage_kit()
    files = helm_format.files(kit)
    for required in ("Chart.yaml", "values.yaml", "values.schema.json", "templates/_helpers.tpl"):
        assert f"coverage/{required}" in files
    assert {f"coverage/values-{env}.yaml" for env in kit.environments} <= files.keys()
    templates = {p: t for p, t in files.items() if "/templates/" in p}
    assert len(templates) > 5
    for path, text in templates.items():
        assert "{{" in text, f"{path} is not a template"
        for app in (*EXAMPLES, "coverage"):
            assert app not in text, f"{path} holds data of {app}"
    meta = yaml.safe_load(files["coverage/Chart.yaml"])
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "coverage"
    assert meta["version"] == "2024.10.0"
    assert meta["appVersion"] == "2024.10"


@pytest.mark.parametrize(("version", "chart_version"), [
    ("1.2.3", "1.2.3"), ("v1.2", "1.2.0"), ("3", "3.0.0"), ("1.0.0-rc.1+b5", "1.0.0-rc.1+b5"),
    ("2024-10-01_main", "0.0.0+2024-10-01.main"), ("01.2.3", "0.0.0+01.2.3"),
])
def test_chart_version_is_semver(version: str, chart_version: str) -> None:
    assert helm_format.semver(version) == chart_version


def test_values_yaml_reads_back_the_same_in_helm() -> None:
    tricky = ["y", "n", "Y", "N", "yes", "off", "~", "null", "1e3", "0o17", "0x1F", "0b1", "1_000", ".5", "1.",
              "-1", "+1", "1:20", "2024-10-01", ".inf", "3.14", "1", "5000", "1.2.3", "1Gi", "250m",
              "line one\nline two\n", "trailing  \nspace", "{{ $value }}", "a: b", "- x", "#hash", "", "=", "<<"]
    data = {"strings": tricky, "numbers": [0, 1, 2.5, 1000000, 0.015], "y": {"n": True, "off": None}}
    assert helm.values_from_yaml(dump(data)) == data
