"""The pure parts of the kustomize format: image references read as kustomize reads them, JSON
6902 diffs that really turn one object into the other, a neutral base, and determinism. Whether
kustomize builds the right objects is tests/integration/test_kustomize.py's job."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from shipmate.render.kustomize import diff, files, split_image
from tests.support import example_kit


@pytest.mark.parametrize(("ref", "parts"), [
    ("nginx", ("nginx", "", "")),
    ("nginx:1.27", ("nginx", "1.27", "")),
    ("my-registry/api-server:1.2.3", ("my-registry/api-server", "1.2.3", "")),
    ("localhost:5000/team/app", ("localhost:5000/team/app", "", "")),
    ("localhost:5000/team/app:v2", ("localhost:5000/team/app", "v2", "")),
    ("ghcr.io/a/b@sha256:abc", ("ghcr.io/a/b", "", "sha256:abc")),
    ("ghcr.io/a/b:1.0@sha256:abc", ("ghcr.io/a/b", "1.0", "sha256:abc")),
])
def test_split_image_reads_references_like_kustomize(ref: str, parts: tuple[str, str, str]) -> None:
    assert split_image(ref) == parts


def _unpointer(part: str) -> str:
    return part.replace("~1", "/").replace("~0", "~")


def apply(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """A small RFC 6902 applier (add, remove, replace), enough to check what diff emits."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [_unpointer(p) for p in op["path"].split("/")[1:]]
        if not parts:
            assert op["op"] == "replace"
            doc = copy.deepcopy(op["value"])
            continue
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last: Any = int(parts[-1]) if isinstance(parent, list) else parts[-1]
        if op["op"] == "remove":
            del parent[last]
        elif op["op"] == "add" and isinstance(parent, list):
            parent.insert(last, copy.deepcopy(op["value"]))
        else:
            assert op["op"] in ("add", "replace")
            if op["op"] == "replace":
                assert (last < len(parent)) if isinstance(parent, list) else (last in parent)
            parent[last] = copy.deepcopy(op["value"])
    return doc


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["a", "b", "a/b", "~x", "1"]))
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(["a", "b", "c/d", "e~f"]), inner, max_size=4)),
    max_leaves=12)
_objects = st.dictionaries(st.sampled_from(["x", "y", "z"]), _json)


@settings(max_examples=300, deadline=None)
@given(old=_objects, new=_objects)
def test_diff_turns_old_into_new(old: dict[str, Any], new: dict[str, Any]) -> None:
    result = apply(old, diff(old, new))
    assert yaml.safe_dump(result, sort_keys=True) == yaml.safe_dump(new, sort_keys=True)


def test_diff_tells_true_from_one_and_is_small() -> None:
    assert diff({"a": 1}, {"a": True}) == [{"op": "replace", "path": "/a", "value": True}]
    assert diff({"l": [1, 2]}, {"l": [1, 2, 3]}) == [{"op": "add", "path": "/l/2", "value": 3}]
    assert diff({"l": [1, 2, 3]}, {"l": [1]}) == [{"op": "remove", "path": "/l/2"}, {"op": "remove", "path": "/l/1"}]
    assert diff({"m": {"a/b": 1}}, {"m": {}}) == [{"op": "remove", "path": "/m/a~1b"}]
    assert diff({"same": [1]}, {"same": [1]}) == []


def test_files_are_deterministic(example: str) -> None:
    kit = example_kit(example)
    first = files(kit)
    assert files(kit) == first
    assert list(first) == sorted(first)


def test_base_is_neutral(example: str) -> None:
    """The base names no environment: no environment label, no namespace, no image tag."""
    kit = example_kit(example)
    tree = files(kit)
    base = [doc for rel, text in tree.items() if rel.startswith("base/") and not rel.endswith("kustomization.yaml")
            for doc in yaml.safe_load_all(text) if doc]
    assert base
    assert [d for d in base if "namespace" in d["metadata"]] == []
    if len(kit.environments) > 1:
        assert [d for d in base if "shipmate.dev/environment" in d["metadata"].get("labels", {})] == []
    assert {rel.split("/")[1] for rel in tree if rel.startswith("overlays/")} == set(kit.environments)


def test_base_objects_are_complete(example: str) -> None:
    """Where environments disagree on a field that is not a label, the base still has a value."""
    tree = files(example_kit(example))
    base = [doc for rel, text in tree.items() if rel.startswith("base/") and not rel.endswith("kustomization.yaml")
            for doc in yaml.safe_load_all(text) if doc]
    rules = [r for d in base if d["kind"] == "PrometheusRule" for g in d["spec"]["groups"] for r in g["rules"]]
    assert rules
    assert [r for r in rules if "expr" not in r] == []
    for hpa in (d for d in base if d["kind"] == "HorizontalPodAutoscaler"):
        assert {"minReplicas", "maxReplicas", "scaleTargetRef"} <= hpa["spec"].keys()
    for d in base:
        for c in _containers(d):
            assert {"name", "image"} <= c.keys()


def _containers(node: Any) -> list[Any]:
    if isinstance(node, dict):
        found = [c for k in ("containers", "initContainers") for c in node.get(k) or []]
        return found + [c for v in node.values() for c in _containers(v)]
    if isinstance(node, list):
        return [c for v in node for c in _containers(v)]
    return []


def test_every_overlay_and_patch_is_referenced(example: str) -> None:
    tree = files(example_kit(example))
    base = yaml.safe_load(tree["base/kustomization.yaml"])
    assert sorted(f"base/{r}" for r in base["resources"]) == sorted(
        rel for rel in tree if rel.startswith("base/") and rel != "base/kustomization.yaml")
    for env in example_kit(example).environments:
        overlay = yaml.safe_load(tree[f"overlays/{env}/kustomization.yaml"])
        named = {f"overlays/{env}/{p['path']}" for p in overlay.get("patches", [])}
        named |= {f"overlays/{env}/{r}" for r in overlay["resources"] if r != "../../base"}
        assert named == {rel for rel in tree if rel.startswith(f"overlays/{env}/")} - {
            f"overlays/{env}/kustomization.yaml"}
