"""Reading pod specs out of any workload kind, with the path of each part.

Called by the scanner's rules. Pure. A value such as `true` may come as the string "true" or
"yes" from a YAML 1.2 parser; `truthy` and `falsy` read both the way Kubernetes would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

WORKLOAD_KINDS = frozenset({"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController",
                            "Job", "CronJob"})
LONG_RUNNING = frozenset({"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController"})


@dataclass(frozen=True)
class PodSpec:
    spec: Obj
    path: str
    template_metadata: Obj


@dataclass(frozen=True)
class Container:
    spec: Obj
    path: str
    name: str
    init: bool


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "yes", "on", "y"}
    return value is True


def falsy(value: Any) -> bool:
    """Explicitly false (not merely unset)."""
    if isinstance(value, str):
        return value.strip().lower() in {"false", "no", "off", "n"}
    return value is False


def as_dict(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def pod_spec(obj: Obj) -> PodSpec | None:
    """The pod spec of a workload and its path, or None for other kinds."""
    kind = obj.get("kind")
    spec = as_dict(obj.get("spec"))
    if kind == "Pod":
        return PodSpec(spec, "spec", as_dict(obj.get("metadata")))
    if kind == "CronJob":
        template = as_dict(as_dict(as_dict(spec.get("jobTemplate")).get("spec")).get("template"))
        return PodSpec(as_dict(template.get("spec")), "spec.jobTemplate.spec.template.spec",
                       as_dict(template.get("metadata")))
    if kind in WORKLOAD_KINDS:
        template = as_dict(spec.get("template"))
        return PodSpec(as_dict(template.get("spec")), "spec.template.spec", as_dict(template.get("metadata")))
    return None


def containers(pod: PodSpec, *, init: bool = True) -> Iterator[Container]:
    """Every container of a pod spec (init and ephemeral ones too, when `init`)."""
    groups = ("containers", "initContainers", "ephemeralContainers") if init else ("containers",)
    for group in groups:
        for index, c in enumerate(as_list(pod.spec.get(group))):
            if isinstance(c, dict):
                yield Container(c, f"{pod.path}.{group}[{index}]", str(c.get("name", index)), group != "containers")


def security(c: Container, pod: PodSpec, key: str) -> tuple[Any, str]:
    """The effective security setting `key` (container over pod) and where it is set (or would be)."""
    csc = as_dict(c.spec.get("securityContext"))
    if key in csc and csc[key] is not None:
        return csc[key], f"{c.path}.securityContext.{key}"
    psc = as_dict(pod.spec.get("securityContext"))
    if key in psc and psc[key] is not None:
        return psc[key], f"{pod.path}.securityContext.{key}"
    return None, f"{c.path}.securityContext.{key}"


def replicas(obj: Obj) -> int:
    """Desired replicas of a Deployment/StatefulSet/ReplicaSet (1 when unset)."""
    value = as_dict(obj.get("spec")).get("replicas", 1)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


def template_labels(obj: Obj) -> dict[str, str]:
    pod = pod_spec(obj)
    if pod is None:
        return {}
    return {str(k): str(v) for k, v in as_dict(pod.template_metadata.get("labels")).items()}


def selector_matches(selector: Any, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a set of labels."""
    sel = as_dict(selector)
    match = as_dict(sel.get("matchLabels"))
    expressions = as_list(sel.get("matchExpressions"))
    if not match and not expressions:
        return False
    if any(labels.get(str(k)) != str(v) for k, v in match.items()):
        return False
    for expr in expressions:
        e = as_dict(expr)
        key, op, values = str(e.get("key")), e.get("operator"), [str(v) for v in as_list(e.get("values"))]
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True
