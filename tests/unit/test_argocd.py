"""The argocd format: Applications and the AppProject valid against Argo CD's own CRD schemas,
one Application per Kubernetes environment, sources and sync policies as the spec says.

The schemas are the `openAPIV3Schema` of argoproj/argo-cd `manifests/crds/application-crd.yaml`
and `appproject-crd.yaml` (the corpus commit), as vendored in tests/integration/crds (see its
README), so the test needs nothing outside the repository. They are validated here with JSON
Schema Draft 7 after dropping the `x-kubernetes-*` keys, and with every object that declares
properties closed to unknown ones (what the API server's strict field validation does), so a
misspelt field fails too.
"""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from shipmate.plan.models import GitOpsPlan, Plan
from shipmate.render.argocd import application, files
from shipmate.render.kit import Kit
from tests.support import ROOT, example_kit

Obj = dict[str, Any]
CRDS = ROOT / "tests" / "integration" / "crds"


def _strict(node: Any) -> Any:
    """A CRD's OpenAPI v3 schema as Draft 7 JSON Schema: x-kubernetes-* dropped, objects closed."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: (v if k in ("enum", "default", "example", "required") else _strict(v))
           for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if "properties" in node and isinstance(node["properties"], dict):
        out["properties"] = {name: _strict(sub) for name, sub in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
            out["additionalProperties"] = False
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    return out


@cache
def validator(kind: str) -> jsonschema.Draft7Validator:
    data = json.loads((CRDS / f"{kind.lower()}.json").read_text())
    assert data["source"].startswith("argo-cd/manifests/crds/")
    schema = _strict(data["versions"]["v1alpha1"])
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def problems(obj: Obj) -> list[str]:
    return [f"{obj['kind']} {obj['metadata']['name']}: {e.json_path}: {e.message[:200]}"
            for e in validator(obj["kind"]).iter_errors(obj)]


def documents(tree: dict[str, str]) -> list[Obj]:
    return [doc for text in tree.values() for doc in yaml.safe_load_all(text) if doc]


def test_every_file_is_valid_argo_cd(example: str) -> None:
    objects = documents(files(example_kit(example)))
    assert objects
    assert {o["apiVersion"] for o in objects} == {"argoproj.io/v1alpha1"}
    assert [p for o in objects for p in problems(o)] == []


def test_the_schema_says_no() -> None:
    app = application(example_kit("cyber-werewolves").plans["prod"])
    app["spec"]["syncPolicy"]["automated"]["selfheal"] = True
    app["spec"]["syncPolicy"]["retry"]["limit"] = "5"
    del app["spec"]["destination"]
    found = "\n".join(problems(app))
    assert "'selfheal' was unexpected" in found
    assert "'5' is not of type 'integer'" in found
    assert "'destination' is a required property" in found


def test_one_application_per_kubernetes_environment(example: str) -> None:
    kit = example_kit(example)
    tree = files(kit)
    apps = {o["spec"]["destination"]["namespace"]: o for o in documents(tree) if o["kind"] == "Application"}
    assert sorted(tree) == sorted(["appproject.yaml", *(f"application-{e}.yaml" for e in kit.kubernetes_environments)])
    assert sorted(apps) == sorted(kit.plans[e].namespace for e in kit.kubernetes_environments)
    for env in kit.environments:
        if kit.plans[env].target == "local":
            assert f"application-{env}.yaml" not in tree
    for env in kit.kubernetes_environments:
        app = yaml.safe_load(tree[f"application-{env}.yaml"])
        assert app["metadata"]["name"] == f"{kit.app}-{env}"
        assert app["metadata"]["finalizers"] == ["resources-finalizer.argocd.argoproj.io"]
        assert app["metadata"]["labels"]["shipmate.dev/environment"] == env
        assert app["spec"]["project"] == kit.app
        options = app["spec"]["syncPolicy"]["syncOptions"]
        assert {"CreateNamespace=true", "ServerSideApply=true", "PruneLast=true"} <= set(options)
        assert app["spec"]["syncPolicy"]["retry"]["backoff"]["factor"] >= 2


def test_the_project_admits_exactly_its_applications(example: str) -> None:
    kit = example_kit(example)
    objects = documents(files(kit))
    [project] = [o for o in objects if o["kind"] == "AppProject"]
    apps = [o for o in objects if o["kind"] == "Application"]
    spec = project["spec"]
    assert sorted(spec["sourceRepos"]) == sorted({a["spec"]["source"]["repoURL"] for a in apps})
    assert sorted(map(json.dumps, spec["destinations"])) == sorted({json.dumps(a["spec"]["destination"]) for a in apps})
    kinds = {(o["apiVersion"].rpartition("/")[0], o["kind"]) for e in kit.kubernetes_environments
             for o in kit.objects[e]}
    allowed = {(k["group"], k["kind"]) for k in spec["clusterResourceWhitelist"] + spec["namespaceResourceWhitelist"]}
    assert allowed == kinds
    assert {"group": "", "kind": "Namespace"} in spec["clusterResourceWhitelist"]


def test_no_kubernetes_environment_no_files() -> None:
    kit = example_kit("cyber-werewolves")
    local = Kit(app=kit.app, environments=("dev",), plans={"dev": kit.plans["dev"]},
                objects={"dev": kit.objects["dev"]})
    assert files(local) == {}


# --- sources and sync policies, table-driven over one plan ---------------------------------

def _plan(gitops: GitOpsPlan | None, **changes: Any) -> Plan:
    return dataclasses.replace(example_kit("cyber-werewolves").plans["staging"], gitops=gitops, **changes)


def _gitops(**changes: Any) -> GitOpsPlan:
    base = GitOpsPlan(repo="https://git.example.com/acme/deploy", revision="v1.2.3", path="deploy",
                      format="kustomize", auto_sync=True, prune=True, self_heal=True)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(("gitops", "automated"), [
    (_gitops(), {"prune": True, "selfHeal": True}),
    (_gitops(prune=False), {"prune": False, "selfHeal": True}),
    (_gitops(self_heal=False), {"prune": True, "selfHeal": False}),
    (_gitops(prune=False, self_heal=False), {"prune": False, "selfHeal": False}),
    (_gitops(auto_sync=False), None),
    (None, None),
])
def test_automated_sync_follows_the_spec(gitops: GitOpsPlan | None, automated: Obj | None) -> None:
    app = application(_plan(gitops))
    assert app["spec"]["syncPolicy"].get("automated") == automated
    assert problems(app) == []


@pytest.mark.parametrize(("gitops", "repo", "source"), [
    (_gitops(), None, {"repoURL": "https://git.example.com/acme/deploy", "targetRevision": "v1.2.3",
                       "path": "deploy/kustomize/overlays/staging"}),
    (_gitops(path="./gitops/"), None, {"repoURL": "https://git.example.com/acme/deploy",
                                       "targetRevision": "v1.2.3", "path": "gitops/kustomize/overlays/staging"}),
    (_gitops(format="helm", path="."), None, {
        "repoURL": "https://git.example.com/acme/deploy", "targetRevision": "v1.2.3",
        "path": "helm/cyber-werewolves",
        "helm": {"releaseName": "cyber-werewolves", "valueFiles": ["values-staging.yaml"]}}),
    (None, "https://github.com/acme/app", {"repoURL": "https://github.com/acme/app", "targetRevision": "HEAD",
                                           "path": "deploy/kustomize/overlays/staging"}),
    (None, None, {"repoURL": "https://git.example.com/replace-me/cyber-werewolves.git", "targetRevision": "HEAD",
                  "path": "deploy/kustomize/overlays/staging"}),
])
def test_source_points_at_the_rendered_output(gitops: GitOpsPlan | None, repo: str | None, source: Obj) -> None:
    app = application(_plan(gitops, repo=repo))
    assert app["spec"]["source"] == source
    assert problems(app) == []


def test_fallback_says_what_to_set() -> None:
    kit = example_kit("cyber-werewolves")
    plan = _plan(None, repo=None)
    tree = files(dataclasses.replace(kit, plans={**kit.plans, "staging": plan}))
    assert "set app.repo" in tree["application-staging.yaml"]
    assert "environments.staging.gitops" in tree["application-staging.yaml"]


@pytest.mark.parametrize(("context", "destination"), [
    ("prod-eu", {"name": "prod-eu", "namespace": "cyber-werewolves-staging"}),
    (None, {"server": "https://kubernetes.default.svc", "namespace": "cyber-werewolves-staging"}),
])
def test_destination_is_the_context_or_in_cluster(context: str | None, destination: Obj) -> None:
    assert application(_plan(_gitops(), context=context))["spec"]["destination"] == destination


def test_files_are_deterministic(example: str) -> None:
    kit = example_kit(example)
    first = files(kit)
    assert files(kit) == first
    assert list(first) == sorted(first)


def test_vendored_schemas_are_argo_cd_s() -> None:
    """The vendored schemas keep the fields this format writes (a refresh must not lose them)."""
    app = json.loads((CRDS / "application.json").read_text())["versions"]["v1alpha1"]
    sync = app["properties"]["spec"]["properties"]["syncPolicy"]["properties"]
    assert {"automated", "retry", "syncOptions"} <= sync.keys()
    assert Path(CRDS / "README.md").read_text().count("argo-cd") >= 2
