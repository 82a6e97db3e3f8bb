"""The `kustomize` format: one base and one overlay per environment.

Called through `shipmate.render.formats` (`shipmate render --format kustomize`). `kubectl
kustomize overlays/<env>` yields exactly the objects of `kit.objects[env]`, the same objects as
the `manifests` format; the integration tests hold it to that. Pure: it computes text and runs
nothing (no kustomize here), and it never re-renders a plan: `kit.objects` is the one source.

Layout and how each overlay is computed:

    base/kustomization.yaml         resources: one file per object
    base/<kind>-<name>.yaml         what the environments agree on (see below)
    overlays/<env>/kustomization.yaml
        namespace:                  the environment's namespace
        labels:                     labels every object of the environment carries with one
                                    value (metadata only: no selectors, no templates)
        images:                     name -> newName/newTag/digest of every container image
        resources:                  ../../base plus resources/<kind>-<name>.yaml, the objects
                                    only this environment has
        patches:                    patches/<kind>-<name>.yaml, JSON 6902 operations from the base
                                    object to this environment's object; patches/delete.yaml,
                                    `$patch: delete` for base objects this environment lacks

The base is what the environments agree on: the objects more than half of them have, and in
each the values more than half share. Labels, selectors and annotations on which they disagree
are left out (so the base carries no environment's identity and every overlay states its own);
any other field on which they disagree takes its most common value, the first Kubernetes
environment's on a tie, so every base object is complete. Images in every resource file carry
only their name; the tag is always the overlay's business. The environment's Namespace object is
named after the app in the base and renamed by `namespace:`.

Kustomize transformers run after `patches`, so each overlay's patches lead to the objects as
they must be *before* the namespace and image transformers, and the transformers are only used
where their effect is known exactly: `namespace:` only when every object already lives in the
environment's namespace and nothing in it is a field the namespace transformer also rewrites
(RoleBinding subjects named default, webhooks, APIServices, CRDs); `labels:` only for labels
that every object has with the same value; an `images:` entry only when every container that
carries that name ends up with the same image, and no other image matches the entry. Anything
else is a patch, so an unusual environment gets a longer overlay, never a wrong one.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from shipmate.plan.models import Plan
from shipmate.render.kit import Kit
from shipmate.render.objects import sort_objects
from shipmate.render.yamlio import dump, dump_all

Obj = dict[str, Any]
Op = dict[str, Any]
Key = tuple[str, str, str]  # apiVersion, kind, name; the environment's Namespace has name ""
Path = tuple[str | int, ...]

HEADER = "# Rendered by shipmate from shipmate.yaml; do not edit.\n"
KUSTOMIZATION = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}

# Kinds kustomize knows to be cluster-scoped (it never gives them a namespace). Deliberately a
# subset of its table: an object of another kind without a namespace makes us not use
# `namespace:`, which is always safe.
CLUSTER_SCOPED = frozenset({
    "Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
    "PriorityClass", "IngressClass", "RuntimeClass",
})
# Kinds whose other fields the namespace transformer also rewrites.
NAMESPACE_REWRITTEN = frozenset({
    "APIService", "CustomResourceDefinition", "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
})
# Open string maps that name an environment's identity: where the environments disagree on an
# entry, the base leaves it out instead of carrying one environment's value.
OPEN_MAPS = frozenset({"labels", "matchLabels", "annotations", "selector"})
CONTAINER_LISTS = ("containers", "initContainers")
_MISSING: Any = object()


def files(kit: Kit) -> dict[str, str]:
    base = _base(kit)
    out = {f"base/{path}": HEADER + dump(obj) for path, obj in base.files.items()}
    out["base/kustomization.yaml"] = HEADER + _kustomization({"resources": list(base.files)})
    for env in kit.environments:
        for path, text in _overlay(kit.plans[env], kit.objects[env], base).items():
            out[f"overlays/{env}/{path}"] = text
    return dict(sorted(out.items()))


# --- identities and neutral forms ---------------------------------------------------------

def _key(obj: Obj, plan: Plan) -> Key:
    name = obj["metadata"]["name"]
    if obj["kind"] == "Namespace" and name == plan.namespace:
        name = ""
    return obj["apiVersion"], obj["kind"], name


def split_image(ref: str) -> tuple[str, str, str]:
    """(name, tag, digest) exactly as kustomize's `image.Split` reads an image reference."""
    slash = ref.find("/")
    offset = slash if slash > 0 else 0
    search = ref[offset:]
    at, colon = search.find("@"), search.find(":")
    if colon < 0 and at < 0:
        return ref, "", ""
    if at >= 0 and (at < colon or colon < 0):
        return ref[:offset + at], "", ref[offset + at + 1:]
    if at >= 0:
        return ref[:offset + colon], ref[offset + colon + 1:offset + at], ref[offset + at + 1:]
    return ref[:offset + colon], ref[offset + colon + 1:], ""


def _join_image(name: str, tag: str, digest: str) -> str:
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


@lru_cache(maxsize=4096)
def _image_pattern(name: str) -> re.Pattern[str]:
    return re.compile(name + r"(@sha256)?(:[a-zA-Z0-9_.{}-]*)?")


def _image_matches(value: str, name: str) -> bool:
    """Whether kustomize's image transformer entry `name` rewrites `value` (its own regex)."""
    return _image_pattern(name).fullmatch(value) is not None


# kinds that never hold a container list, so the image walk can skip them (dashboards and alert
# rules are most of the bytes)
NO_CONTAINERS = frozenset({
    "ConfigMap", "Secret", "Service", "NetworkPolicy", "Namespace", "ServiceAccount", "Ingress", "HTTPRoute",
    "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "SecretProviderClass",
    "ExternalSecret",
})


def _slots(obj: Any, path: Path = ()) -> Iterator[Path]:
    """Paths of every container `image` the kustomize image transformer visits: items of any
    `containers` or `initContainers` list, at any depth."""
    if isinstance(obj, dict) and obj.get("kind") in NO_CONTAINERS:
        return iter(())
    stack: list[tuple[Any, Path]] = [(obj, path)]
    found: list[Path] = []
    while stack:
        node, at = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(v, dict | list):
                    continue
                if k in CONTAINER_LISTS and isinstance(v, list):
                    found.extend((*at, k, i, "image") for i, item in enumerate(v)
                                 if isinstance(item, dict) and isinstance(item.get("image"), str))
                stack.append((v, (*at, k)))
        else:
            stack.extend((item, (*at, i)) for i, item in enumerate(node) if isinstance(item, dict | list))
    return iter(found)


def _get(obj: Any, path: Path) -> Any:
    for part in path:
        if isinstance(obj, dict) and isinstance(part, str) and part in obj:
            obj = obj[part]
            continue
        if isinstance(obj, list) and isinstance(part, int) and part < len(obj):
            obj = obj[part]
            continue
        return _MISSING
    return obj


def _set(obj: Any, path: Path, value: Any) -> None:
    for part in path[:-1]:
        obj = obj[part]
    obj[path[-1]] = value


def _neutral(obj: Obj, plan: Plan, placeholder: str) -> Obj:
    """The form the base is voted from: no namespace, untagged images, the environment's
    Namespace named `placeholder`."""
    out: Obj = _copy(obj)
    out["metadata"].pop("namespace", None)
    if _key(obj, plan)[2] == "" and obj["kind"] == "Namespace":
        out["metadata"]["name"] = placeholder
    for slot in _slots(out):
        _set(out, slot, split_image(_get(out, slot))[0])
    return out


# --- the base -----------------------------------------------------------------------------

def _copy(value: Any) -> Any:
    """A deep copy that shares nothing (render may reuse one labels dict in several places)."""
    # a pickle round trip copies twice as fast as JSON; render shares no dict between two places
    # (objects.py copies its label dicts), so the copy shares nothing either
    return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))  # noqa: S301 - our own bytes


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _same(a: Any, b: Any) -> bool:
    """Equality that tells 1 from True and 1 from 1.0, as YAML does."""
    return a == b and _strict(a, b)


def _strict(a: Any, b: Any) -> bool:
    """Types agree all the way down (called only on values that are already ==)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return all(_strict(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return all(_strict(x, y) for x, y in zip(a, b, strict=True))
    return True


def _consensus(values: list[Any], open_map: bool = False, droppable: bool = False) -> Any:
    """What `values` (one per environment, the tie-breaking one first) agree on.

    Maps merge key by key: a key more than half of them have is kept. Lists of maps of one length
    merge item by item. Anything else takes the value more than half share; failing that, an
    entry of an open map (labels, selectors, annotations) is left out (_MISSING) and any other
    field takes the most common value, the first one's on a tie, so base objects stay complete.
    `open_map`: `values` are such maps; `droppable`: `values` are entries of one.
    """
    # `values` are the neutral copies made for this vote, so the result may take parts of them as
    # they are; plain == is enough here, since each overlay's diff restores exact types anyway
    first = values[0]
    if all(v == first for v in values[1:]):
        return first
    if all(isinstance(v, dict) for v in values):
        out: dict[str, Any] = {}
        for k in dict.fromkeys(k for v in values for k in v):
            present = [v[k] for v in values if k in v]
            if len(present) * 2 <= len(values):
                continue
            agreed = _consensus(present, open_map=k in OPEN_MAPS, droppable=open_map)
            if agreed is not _MISSING:
                out[k] = agreed
        return out
    if (all(isinstance(v, list) for v in values) and len({len(v) for v in values}) == 1
            and all(isinstance(item, dict) for v in values for item in v)):
        return [_consensus([v[i] for v in values]) for i in range(len(first))]
    counts: dict[str, int] = {}
    for v in values:
        counts[_canon(v)] = counts.get(_canon(v), 0) + 1
    best = max(counts.values())
    if best * 2 > len(values) or not droppable:
        return next(v for v in values if counts[_canon(v)] == best)
    return _MISSING


@dataclass
class Base:
    objects: dict[Key, Obj]
    files: dict[str, Obj]  # file name -> object, in apply order
    placeholder: str


def _file_names(objects: list[Obj]) -> list[str]:
    names: list[str] = []
    for obj in objects:
        stem = f"{obj['kind'].lower()}-{obj['metadata']['name']}"
        if obj["kind"] == "Namespace":
            stem = "namespace" if "namespace.yaml" not in names else stem
        name, n = f"{stem}.yaml", 1
        while name in names:
            n += 1
            name = f"{stem}-{n}.yaml"
        names.append(name)
    return names


def _base(kit: Kit) -> Base:
    taken = {o["metadata"]["name"] for env in kit.environments for o in kit.objects[env]
             if o["kind"] == "Namespace" and _key(o, kit.plans[env])[2]}
    placeholder = kit.app if kit.app not in taken else f"{kit.app}-base"
    versions: dict[Key, list[Obj]] = {}
    # Ties go to the first Kubernetes environment: the base looks like a cluster, not a laptop.
    for env in dict.fromkeys([*kit.kubernetes_environments, *kit.environments]):
        plan = kit.plans[env]
        for obj in kit.objects[env]:
            versions.setdefault(_key(obj, plan), []).append(_neutral(obj, plan, placeholder))
    total = len(kit.environments)
    objects = {key: _consensus(objs) for key, objs in versions.items() if len(objs) * 2 > total}
    ordered = sort_objects(list(objects.values()))
    by_id = {id(obj): key for key, obj in objects.items()}
    keys = [by_id[id(obj)] for obj in ordered]
    return Base(objects={k: objects[k] for k in keys},
                files=dict(zip(_file_names(ordered), ordered, strict=True)), placeholder=placeholder)


# --- one overlay --------------------------------------------------------------------------

def _uses_namespace(plan: Plan, objects: list[Obj]) -> bool:
    """Whether `namespace: <plan.namespace>` gives every object exactly its namespace."""
    for obj in objects:
        kind, meta = obj["kind"], obj["metadata"]
        if kind in NAMESPACE_REWRITTEN:
            return False
        if kind in CLUSTER_SCOPED:
            if "namespace" in meta or (kind == "Namespace" and meta["name"] != plan.namespace):
                return False
        elif meta.get("namespace") != plan.namespace:
            return False
        if kind in ("RoleBinding", "ClusterRoleBinding") and any(
                s.get("name") == "default" for s in obj.get("subjects") or []):
            return False
    return True


def _image_plan(slots: list[tuple[Obj, Path, str, str]]) -> dict[str, dict[str, str]]:
    """Kustomize `images` entries for (object, path, file name, wanted image) slots.

    A file name gets an entry when every slot with that name wants the same image; slots of
    other names keep their exact image in the file. An entry is dropped (and its slots made
    exact) if it would also catch a value it must not, so the transformer changes nothing else.
    """
    wanted: dict[str, set[str]] = {}
    for _obj, _path, name, ref in slots:
        wanted.setdefault(name, set()).add(ref)
    entries: dict[str, str] = {}
    for name, refs in wanted.items():
        if len(refs) == 1:
            ref = next(iter(refs))
            if ref != name and _join_image(*split_image(ref)) == ref:
                entries[name] = ref
    changed = True
    while changed:
        changed = False
        exact = sorted({ref for _o, _p, n, ref in slots if n not in entries})
        for name in sorted(entries):
            others = [n for n in entries if n != name]
            values = [name, entries[name]]
            if (any(_image_matches(v, o) for v in values for o in others)
                    or any(_image_matches(ref, name) for ref in exact)):
                del entries[name]
                changed = True
                break
    out: dict[str, dict[str, str]] = {}
    for name, ref in sorted(entries.items()):
        new_name, tag, digest = split_image(ref)
        entry = {"name": name}
        if new_name != name:
            entry["newName"] = new_name
        if tag:
            entry["newTag"] = tag
        if digest:
            entry["digest"] = digest
        out[name] = entry
    return out


def _want(plan: Plan, objects: list[Obj], base: Base,
          uses_namespace: bool) -> tuple[dict[Key, Obj], list[dict[str, str]]]:
    """Each object as the overlay's resources and patches must leave it, before the namespace
    and image transformers run; and the `images` entries that finish the job."""
    want: dict[Key, Obj] = {}
    slots: list[tuple[Obj, Path, str, str]] = []
    for obj in objects:
        key = _key(obj, plan)
        out: Obj = _copy(obj)
        if uses_namespace:
            out["metadata"].pop("namespace", None)
            if key[2] == "" and key in base.objects:
                out["metadata"]["name"] = base.placeholder
        for slot in _slots(out):
            ref = _get(out, slot)
            in_base = _get(base.objects.get(key), slot)
            name = in_base if isinstance(in_base, str) else split_image(ref)[0]
            slots.append((out, slot, name, ref))
        want[key] = out
    entries = _image_plan(slots)
    for out, slot, name, _ref in slots:
        if name in entries:
            _set(out, slot, name)
    return want, list(entries.values())


def _common_labels(want: dict[Key, Obj], base: Base) -> dict[str, str]:
    """Labels every object of the environment carries with one value, and which the base does
    not already carry on every object: kustomize `labels` (metadata only) sets them exactly."""
    pairs: dict[str, str] | None = None
    for obj in want.values():
        own = obj["metadata"].get("labels") or {}
        pairs = dict(own) if pairs is None else {k: v for k, v in pairs.items() if own.get(k) == v}
    return {k: v for k, v in sorted((pairs or {}).items())
            if not all((b["metadata"].get("labels") or {}).get(k) == v for b in base.objects.values())}


def _leave_labels(want: dict[Key, Obj], base: Base, pairs: dict[str, str]) -> None:
    """Give base objects the base's own value of `pairs`, so no patch repeats what `labels` sets."""
    for key, obj in want.items():
        if key not in base.objects:
            continue
        own, theirs = obj["metadata"]["labels"], base.objects[key]["metadata"].get("labels") or {}
        for k in pairs:
            if k in theirs:
                own[k] = theirs[k]
            else:
                del own[k]


def _pointer(path: Path) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def diff(old: Any, new: Any, path: Path = ()) -> list[Op]:
    """JSON 6902 operations that turn `old` into `new`."""
    if _same(old, new):
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        ops: list[Op] = [{"op": "remove", "path": _pointer((*path, k))} for k in sorted(old) if k not in new]
        for k in sorted(new):
            if k in old:
                ops += diff(old[k], new[k], (*path, k))
            else:
                ops.append({"op": "add", "path": _pointer((*path, k)), "value": new[k]})
        return ops
    if isinstance(old, list) and isinstance(new, list):
        if len(old) == len(new):
            return [op for i in range(len(old)) for op in diff(old[i], new[i], (*path, i))]
        if len(old) < len(new) and _same(old, new[:len(old)]):
            return [{"op": "add", "path": _pointer((*path, i)), "value": new[i]} for i in range(len(old), len(new))]
        if len(new) < len(old) and _same(new, old[:len(new)]):
            return [{"op": "remove", "path": _pointer((*path, i))} for i in reversed(range(len(new), len(old)))]
    return [{"op": "replace", "path": _pointer(path), "value": new}]


def _target(obj: Obj) -> dict[str, str]:
    group, _, version = obj["apiVersion"].rpartition("/")
    target = {"version": version, "kind": obj["kind"], "name": obj["metadata"]["name"].replace(".", "\\.")}
    if group:
        target["group"] = group
    return target


def _overlay(plan: Plan, objects: list[Obj], base: Base) -> dict[str, str]:
    uses_namespace = _uses_namespace(plan, objects)
    want, images = _want(plan, objects, base, uses_namespace)
    labels = _common_labels(want, base)
    _leave_labels(want, base, labels)
    out: dict[str, str] = {}
    resources = ["../../base"]
    extras = sort_objects([obj for key, obj in want.items() if key not in base.objects])
    for name, obj in zip(_file_names(extras), extras, strict=True):
        resources.append(f"resources/{name}")
        out[f"resources/{name}"] = HEADER + dump(obj)
    patches: list[dict[str, Any]] = []
    deletions: list[Obj] = []
    for (key, base_obj), name in zip(base.objects.items(), base.files, strict=True):
        if key not in want:
            deletions.append({"$patch": "delete", "apiVersion": base_obj["apiVersion"], "kind": base_obj["kind"],
                              "metadata": {"name": base_obj["metadata"]["name"]}})
            continue
        ops = diff(base_obj, want[key])
        if ops:
            patches.append({"path": f"patches/{name}", "target": _target(base_obj)})
            out[f"patches/{name}"] = HEADER + dump(ops)
    if deletions:
        patches.append({"path": "patches/delete.yaml"})
        out["patches/delete.yaml"] = HEADER + dump_all(deletions)
    body: dict[str, Any] = {}
    if uses_namespace:
        body["namespace"] = plan.namespace
    if labels:
        body["labels"] = [{"pairs": labels}]
    body["resources"] = resources
    if images:
        body["images"] = images
    if patches:
        body["patches"] = patches
    out["kustomization.yaml"] = HEADER + f"# Environment: {plan.environment}.\n" + _kustomization(body)
    return out


def _kustomization(body: dict[str, Any]) -> str:
    """A kustomization with its fields in the usual order (dump sorts keys within each)."""
    return "".join(dump({k: v}) for k, v in {**KUSTOMIZATION, **body}.items())
