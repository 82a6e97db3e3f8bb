"""The scanner's rules: one check function each, listed in `RULES` (no registration by import).

A check takes a resource and the scan context and yields `Hit`s (the path it points at, the
container, details). Severity overrides, enabling, suppressions and baselines are applied by
`shipmate.policy.engine`, not here. Pure.

Ids: SM1xx pod security, SM2xx images, SM3xx resources, SM4xx probes, SM5xx availability,
SM6xx network, SM7xx secrets, SM8xx RBAC, SM9xx API versions and conventions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from shipmate.policy import leaks
from shipmate.policy.models import Context, Hit, Resource, Rule, Severity
from shipmate.policy.workloads import (
    LONG_RUNNING,
    WORKLOAD_KINDS,
    Container,
    PodSpec,
    as_dict,
    as_list,
    containers,
    falsy,
    pod_spec,
    replicas,
    security,
    selector_matches,
    template_labels,
    truthy,
)
from shipmate.spec.values import cpu_millis, memory_bytes

W = WORKLOAD_KINDS
SCALABLE = frozenset({"Deployment", "StatefulSet", "ReplicaSet"})
ROLE_KINDS = frozenset({"Role", "ClusterRole"})
BINDING_KINDS = frozenset({"RoleBinding", "ClusterRoleBinding"})
ALLOWED_ADDED_CAPS = {"NET_BIND_SERVICE"}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
RECOMMENDED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version")

# (apiVersion, kind or "*") -> (removed in, replacement)
REMOVED_APIS: dict[tuple[str, str], tuple[str, str]] = {
    ("extensions/v1beta1", "Deployment"): ("1.16", "apps/v1"),
    ("extensions/v1beta1", "DaemonSet"): ("1.16", "apps/v1"),
    ("extensions/v1beta1", "ReplicaSet"): ("1.16", "apps/v1"),
    ("extensions/v1beta1", "NetworkPolicy"): ("1.16", "networking.k8s.io/v1"),
    ("extensions/v1beta1", "PodSecurityPolicy"): ("1.16", "nothing (use Pod Security admission)"),
    ("extensions/v1beta1", "Ingress"): ("1.22", "networking.k8s.io/v1"),
    ("apps/v1beta1", "*"): ("1.16", "apps/v1"),
    ("apps/v1beta2", "*"): ("1.16", "apps/v1"),
    ("networking.k8s.io/v1beta1", "Ingress"): ("1.22", "networking.k8s.io/v1"),
    ("networking.k8s.io/v1beta1", "IngressClass"): ("1.22", "networking.k8s.io/v1"),
    ("rbac.authorization.k8s.io/v1beta1", "*"): ("1.22", "rbac.authorization.k8s.io/v1"),
    ("rbac.authorization.k8s.io/v1alpha1", "*"): ("1.22", "rbac.authorization.k8s.io/v1"),
    ("apiextensions.k8s.io/v1beta1", "CustomResourceDefinition"): ("1.22", "apiextensions.k8s.io/v1"),
    ("apiregistration.k8s.io/v1beta1", "APIService"): ("1.22", "apiregistration.k8s.io/v1"),
    ("admissionregistration.k8s.io/v1beta1", "*"): ("1.22", "admissionregistration.k8s.io/v1"),
    ("scheduling.k8s.io/v1beta1", "PriorityClass"): ("1.22", "scheduling.k8s.io/v1"),
    ("storage.k8s.io/v1beta1", "CSIDriver"): ("1.22", "storage.k8s.io/v1"),
    ("storage.k8s.io/v1beta1", "StorageClass"): ("1.22", "storage.k8s.io/v1"),
    ("storage.k8s.io/v1beta1", "CSIStorageCapacity"): ("1.27", "storage.k8s.io/v1"),
    ("certificates.k8s.io/v1beta1", "CertificateSigningRequest"): ("1.22", "certificates.k8s.io/v1"),
    ("coordination.k8s.io/v1beta1", "Lease"): ("1.22", "coordination.k8s.io/v1"),
    ("batch/v1beta1", "CronJob"): ("1.25", "batch/v1"),
    ("discovery.k8s.io/v1beta1", "EndpointSlice"): ("1.25", "discovery.k8s.io/v1"),
    ("events.k8s.io/v1beta1", "Event"): ("1.25", "events.k8s.io/v1"),
    ("autoscaling/v2beta1", "HorizontalPodAutoscaler"): ("1.25", "autoscaling/v2"),
    ("autoscaling/v2beta2", "HorizontalPodAutoscaler"): ("1.26", "autoscaling/v2"),
    ("policy/v1beta1", "PodDisruptionBudget"): ("1.25", "policy/v1"),
    ("policy/v1beta1", "PodSecurityPolicy"): ("1.25", "nothing (use Pod Security admission)"),
    ("node.k8s.io/v1beta1", "RuntimeClass"): ("1.25", "node.k8s.io/v1"),
    ("flowcontrol.apiserver.k8s.io/v1beta1", "*"): ("1.26", "flowcontrol.apiserver.k8s.io/v1"),
    ("flowcontrol.apiserver.k8s.io/v1beta2", "*"): ("1.29", "flowcontrol.apiserver.k8s.io/v1"),
    ("flowcontrol.apiserver.k8s.io/v1beta3", "*"): ("1.32", "flowcontrol.apiserver.k8s.io/v1"),
}
NAMESPACED_KINDS = W | {"Service", "ConfigMap", "Secret", "Ingress", "ServiceAccount", "Role", "RoleBinding",
                        "PersistentVolumeClaim", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"}


# --- helpers ------------------------------------------------------------------------------

def _pod(r: Resource) -> PodSpec | None:
    return pod_spec(r.obj)


def _each_container(r: Resource, *, init: bool = True) -> Iterator[tuple[PodSpec, Container]]:
    pod = _pod(r)
    if pod is None:
        return
    for c in containers(pod, init=init):
        yield pod, c


def _sc(c: Container) -> dict[str, Any]:
    return as_dict(c.spec.get("securityContext"))


def _windows(pod: PodSpec) -> bool:
    """A Windows pod: Linux-only settings (seccomp, capabilities, allowPrivilegeEscalation,
    readOnlyRootFilesystem, ...) are forbidden there, so the rules asking for them do not apply."""
    return str(as_dict(pod.spec.get("os")).get("name", "")).lower() == "windows"


# --- SM1xx pod security -------------------------------------------------------------------

def _root_user(r: Resource, ctx: Context) -> Iterator[Hit]:
    for pod, c in _each_container(r):
        non_root, path = security(c, pod, "runAsNonRoot")
        user, _ = security(c, pod, "runAsUser")
        if truthy(non_root) or user is not None:
            continue
        yield Hit(path, "runAsNonRoot is not true and no runAsUser is set", c.name)


def _uid_zero(r: Resource, ctx: Context) -> Iterator[Hit]:
    for pod, c in _each_container(r):
        user, path = security(c, pod, "runAsUser")
        if user is not None and str(user).strip() == "0":
            yield Hit(path, "runAsUser is 0", c.name)


def _privileged(r: Resource, ctx: Context) -> Iterator[Hit]:
    for _, c in _each_container(r):
        if truthy(_sc(c).get("privileged")):
            yield Hit(f"{c.path}.securityContext.privileged", "privileged: true", c.name)


def _escalation(r: Resource, ctx: Context) -> Iterator[Hit]:
    for pod, c in _each_container(r):
        if not _windows(pod) and not falsy(_sc(c).get("allowPrivilegeEscalation")):
            yield Hit(f"{c.path}.securityContext.allowPrivilegeEscalation", "not set to false", c.name)


def _writable_root(r: Resource, ctx: Context) -> Iterator[Hit]:
    for pod, c in _each_container(r):
        if not _windows(pod) and not truthy(_sc(c).get("readOnlyRootFilesystem")):
            yield Hit(f"{c.path}.securityContext.readOnlyRootFilesystem", "not set to true", c.name)


def _caps_not_dropped(r: Resource, ctx: Context) -> Iterator[Hit]:
    for pod, c in _each_container(r):
        drop = [str(x).upper() for x in as_list(as_dict(_sc(c).get("capabilities")).get("drop"))]
        if "ALL" not in drop and not _windows(pod):
            yield Hit(f"{c.path}.securityContext.capabilities.drop", "ALL is not dropped", c.name)


def _caps_added(r: Resource, ctx: Context) -> Iterator[Hit]:
    for _, c in _each_container(r):
        added = [str(x).upper().removeprefix("CAP_") for x in as_list(as_dict(_sc(c).get("capabilities")).get("add"))]
        bad = sorted(set(added) - ALLOWED_ADDED_CAPS)
        if bad:
            yield Hit(f"{c.path}.securityContext.capabilities.add", f"adds {', '.join(bad)}", c.name)


def _seccomp(r: Resource, ctx: Context) -> Iterator[Hit]:
    pod = _pod(r)
    if pod is None or _windows(pod):
        return
    annotations = as_dict(pod.template_metadata.get("annotations"))
    pod_legacy = str(annotations.get("seccomp.security.alpha.kubernetes.io/pod", ""))
    for c in containers(pod):
        profile, path = security(c, pod, "seccompProfile")
        kind = str(as_dict(profile).get("type", ""))
        if kind in ("RuntimeDefault", "Localhost"):
            continue
        legacy = str(annotations.get(f"container.seccomp.security.alpha.kubernetes.io/{c.name}", pod_legacy))
        if not kind and (legacy in ("runtime/default", "docker/default") or legacy.startswith("localhost/")):
            continue
        yield Hit(path, "Unconfined" if kind == "Unconfined" else "no seccomp profile", c.name)


def _host_flag(flag: str) -> Any:
    def check(r: Resource, ctx: Context) -> Iterator[Hit]:
        pod = _pod(r)
        if pod is not None and truthy(pod.spec.get(flag)):
            yield Hit(f"{pod.path}.{flag}", f"{flag}: true")
    return check


def _host_path(r: Resource, ctx: Context) -> Iterator[Hit]:
    pod = _pod(r)
    if pod is None:
        return
    for i, v in enumerate(as_list(pod.spec.get("volumes"))):
        host = as_dict(v).get("hostPath")
        if host is not None:
            yield Hit(f"{pod.path}.volumes[{i}].hostPath", f"mounts {as_dict(host).get('path', '?')} from the node")


def _host_port(r: Resource, ctx: Context) -> Iterator[Hit]:
    for _, c in _each_container(r):
        for i, p in enumerate(as_list(c.spec.get("ports"))):
            port = as_dict(p).get("hostPort")
            if port not in (None, 0, "0"):
                yield Hit(f"{c.path}.ports[{i}].hostPort", f"hostPort {port}", c.name)


def _token_automount(r: Resource, ctx: Context) -> Iterator[Hit]:
    pod = _pod(r)
    if pod is None:
        return
    value = pod.spec.get("automountServiceAccountToken")
    if falsy(value):
        return
    if truthy(value):
        yield Hit(f"{pod.path}.automountServiceAccountToken", "set to true")
        return
    account = str(pod.spec.get("serviceAccountName") or pod.spec.get("serviceAccount") or "default")
    for sa in ctx.of_kind("ServiceAccount"):
        if sa.name == account and sa.namespace == r.namespace and falsy(sa.obj.get("automountServiceAccountToken")):
            return
    yield Hit(f"{pod.path}.automountServiceAccountToken",
              f"not set to false here or on service account {account!r}")


def _root_group(r: Resource, ctx: Context) -> Iterator[Hit]:
    pod = _pod(r)
    if pod is None:
        return
    psc = as_dict(pod.spec.get("securityContext"))
    if "fsGroup" in psc and str(psc["fsGroup"]).strip() == "0":
        yield Hit(f"{pod.path}.securityContext.fsGroup", "fsGroup is 0")
    for c in containers(pod):
        group, path = security(c, pod, "runAsGroup")  # a container's own runAsGroup overrides the pod's
        if group is not None and str(group).strip() == "0":
            yield Hit(path, "runAsGroup is 0", c.name)


def _proc_mount(r: Resource, ctx: Context) -> Iterator[Hit]:
    for _, c in _each_container(r):
        if str(_sc(c).get("procMount", "")) == "Unmasked":
            yield Hit(f"{c.path}.securityContext.procMount", "procMount: Unmasked", c.name)


def _unconfined_mac(r: Resource, ctx: Context) -> Iterator[Hit]:
    pod = _pod(r)
    if pod is None:
        return
    annotations = as_dict(pod.template_metadata.get("annotations"))
    for c in containers(pod):
        profile, path = security(c, pod, "appArmorProfile")
        if str(as_dict(profile).get("type", "")) == "Unconfined":
            yield Hit(path, "AppArmor Unconfined", c.name)
            continue
        key = f"container.apparmor.security.beta.kubernetes.io/{c.name}"
        if str(annotations.get(key, "")) == "unconfined":
            yield Hit(f"{pod.path.rsplit('.spec', 1)[0]}.metadata.annotations", "AppArmor unconfined", c.name)
            continue
        selinux, path = security(c, pod, "seLinuxOptions")
        if str(as_dict(selinux).get("type", "")) in ("spc_t", "unconfined_t"):
            yield Hit(path, f"SELinux type {as_dict(selinux).get('type')}", c.name)


def _sysctls(r: Resource, ctx: Context) -> Iterator[Hit]:
    pod = _pod(r)
    if pod is None:
        return
    for i, s in enumerate(as_list(as_dict(pod.spec.get("securityContext")).get("sysctls"))):
        name = str(as_dict(s).get("name", ""))
        if name.replace("/", ".") not in SAFE_SYSCTLS:  # net/ipv4/x is the same sysctl as net.ipv4.x
            yield Hit(f"{pod.path}.securityContext.sysctls[{i}]", f"sets {name}")


def _host_process(r: Resource, ctx: Context) -> Iterator[Hit]:
    pod = _pod(r)
    if pod is None:
        return
    pod_options = as_dict(as_dict(pod.spec.get("securityContext")).get("windowsOptions"))
    for c in containers(pod):
        # field by field: a container that sets only runAsUserName keeps the pod's hostProcess
        own = as_dict(_sc(c).get("windowsOptions"))
        if own.get("hostProcess") is not None:
            value, path = own["hostProcess"], f"{c.path}.securityContext.windowsOptions.hostProcess"
        else:
            value, path = pod_options.get("hostProcess"), f"{pod.path}.securityContext.windowsOptions.hostProcess"
        if truthy(value):
            yield Hit(path, "Windows hostProcess", c.name)


# --- SM2xx images -------------------------------------------------------------------------

def _image_tag(image: str) -> str | None:
    if "@" in image:
        return "@digest"
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def _latest(r: Resource, ctx: Context) -> Iterator[Hit]:
    for _, c in _each_container(r):
        image = str(c.spec.get("image", ""))
        tag = _image_tag(image)
        if tag is None or tag == "latest":
            yield Hit(f"{c.path}.image", f"{image or '(no image)'} has {'no tag' if tag is None else 'tag latest'}",
                      c.name)


def _digest(r: Resource, ctx: Context) -> Iterator[Hit]:
    for _, c in _each_container(r):
        image = str(c.spec.get("image", ""))
        if "@sha256:" not in image:
            yield Hit(f"{c.path}.image", f"{image} is not pinned by digest", c.name)


def _pull_policy(r: Resource, ctx: Context) -> Iterator[Hit]:
    for _, c in _each_container(r):
        policy = str(c.spec.get("imagePullPolicy", ""))
        tag = _image_tag(str(c.spec.get("image", "")))
        if policy == "Never":
            yield Hit(f"{c.path}.imagePullPolicy", "Never: the node's copy is used, whatever it is", c.name)
        elif (tag is None or tag == "latest") and policy not in ("", "Always"):
            yield Hit(f"{c.path}.imagePullPolicy", f"{policy} with a mutable tag", c.name)


def _full_image_name(image: str) -> str:
    """The image with its registry spelled out, as the container runtime reads it:
    `nginx:1.27` is `docker.io/library/nginx:1.27`, `bitnami/redis` is `docker.io/bitnami/redis`."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if rest else f"docker.io/library/{image}"


def _registry(r: Resource, ctx: Context) -> Iterator[Hit]:
    allowed = [str(x).rstrip("/") + "/" for x in as_list(ctx.options.get("allowedRegistries"))]
    if not allowed:
        return
    for _, c in _each_container(r):
        image = str(c.spec.get("image", ""))
        names = (image, _full_image_name(image))
        if not any(name.startswith(prefix) for prefix in allowed for name in names):
            yield Hit(f"{c.path}.image", f"{image} is not from an allowed registry", c.name)


# --- SM3xx resources ----------------------------------------------------------------------

def _resource(kind: str, resource: str) -> Any:
    def check(r: Resource, ctx: Context) -> Iterator[Hit]:
        for _, c in _each_container(r):
            value = as_dict(as_dict(c.spec.get("resources")).get(kind)).get(resource)
            if value in (None, ""):
                yield Hit(f"{c.path}.resources.{kind}.{resource}", f"no {resource} {kind[:-1]}", c.name)
    return check


def _request_over_limit(r: Resource, ctx: Context) -> Iterator[Hit]:
    for _, c in _each_container(r):
        res = as_dict(c.spec.get("resources"))
        req, lim = as_dict(res.get("requests")), as_dict(res.get("limits"))
        for name, parse in (("cpu", cpu_millis), ("memory", memory_bytes)):
            if req.get(name) is None or lim.get(name) is None:
                continue
            try:
                over = parse(str(req[name])) > parse(str(lim[name]))
            except (ValueError, ArithmeticError):
                continue
            if over:
                yield Hit(f"{c.path}.resources.requests.{name}", f"request {req[name]} > limit {lim[name]}", c.name)


# --- SM4xx probes -------------------------------------------------------------------------

def _probe(name: str) -> Any:
    def check(r: Resource, ctx: Context) -> Iterator[Hit]:
        if r.kind not in LONG_RUNNING:
            return
        for _, c in _each_container(r, init=False):
            if not c.spec.get(name):
                yield Hit(f"{c.path}.{name}", f"no {name}", c.name)
    return check


def _same_probes(r: Resource, ctx: Context) -> Iterator[Hit]:
    for _, c in _each_container(r, init=False):
        live, ready = c.spec.get("livenessProbe"), c.spec.get("readinessProbe")
        if live and ready and live == ready:
            yield Hit(f"{c.path}.livenessProbe", "liveness and readiness probes are identical", c.name)


# --- SM5xx availability -------------------------------------------------------------------

def _hpa_min(ctx: Context, r: Resource) -> int | None:
    for hpa in ctx.of_kind("HorizontalPodAutoscaler"):
        ref = as_dict(as_dict(hpa.obj.get("spec")).get("scaleTargetRef"))
        if ref.get("kind") == r.kind and ref.get("name") == r.name and hpa.namespace == r.namespace:
            try:
                return int(as_dict(hpa.obj.get("spec")).get("minReplicas", 1))
            except (TypeError, ValueError):
                return 1
    return None


def _effective_replicas(ctx: Context, r: Resource) -> int:
    hpa = _hpa_min(ctx, r)
    return hpa if hpa is not None else replicas(r.obj)


def _single_replica(r: Resource, ctx: Context) -> Iterator[Hit]:
    if ctx.production and _effective_replicas(ctx, r) < 2:
        yield Hit("spec.replicas", f"{_effective_replicas(ctx, r)} replica in a production environment")


def _no_pdb(r: Resource, ctx: Context) -> Iterator[Hit]:
    if _effective_replicas(ctx, r) < 2:
        return
    labels = template_labels(r.obj)
    for pdb in ctx.of_kind("PodDisruptionBudget"):
        if pdb.namespace == r.namespace and selector_matches(as_dict(pdb.obj.get("spec")).get("selector"), labels):
            return
    yield Hit("spec", f"{_effective_replicas(ctx, r)} replicas and no PodDisruptionBudget selects them")


def _hpa_min_below_two(r: Resource, ctx: Context) -> Iterator[Hit]:
    value = as_dict(r.obj.get("spec")).get("minReplicas", 1)
    try:
        low = int(value) < 2
    except (TypeError, ValueError):
        low = True
    if low:
        yield Hit("spec.minReplicas", f"minReplicas {value}")


def _no_spread(r: Resource, ctx: Context) -> Iterator[Hit]:
    if _effective_replicas(ctx, r) < 2:
        return
    pod = _pod(r)
    if pod is None:
        return
    if as_list(pod.spec.get("topologySpreadConstraints")):
        return
    if as_dict(as_dict(pod.spec.get("affinity")).get("podAntiAffinity")):
        return
    yield Hit(f"{pod.path}.topologySpreadConstraints", "replicas may all land on one node")


def _pdb_blocks(r: Resource, ctx: Context) -> Iterator[Hit]:
    spec = as_dict(r.obj.get("spec"))
    minimum = str(spec.get("minAvailable", "")).strip()
    if str(spec.get("maxUnavailable", "")).strip() in ("0", "0%"):
        yield Hit("spec.maxUnavailable", "maxUnavailable 0 blocks every voluntary disruption")
    elif minimum == "100%":
        yield Hit("spec.minAvailable", "minAvailable 100% blocks every voluntary disruption")
    elif minimum.isdigit():
        for workload in ctx.of_kind(*SCALABLE):
            if workload.namespace == r.namespace and selector_matches(spec.get("selector"),
                                                                      template_labels(workload.obj)):
                count = _effective_replicas(ctx, workload)
                if int(minimum) >= count:
                    yield Hit("spec.minAvailable", f"minAvailable {minimum} of {workload.ref}'s {count} "
                              "replicas blocks every voluntary disruption")
                    return


# --- SM6xx network ------------------------------------------------------------------------

def _namespaces_with_policies(ctx: Context) -> set[str]:
    cached = ctx._index.get("np")
    if cached is None:
        cached = {np.namespace or "" for np in ctx.of_kind("NetworkPolicy")}
        ctx._index["np"] = cached
    return set(cached)


def _first_workload(ctx: Context, namespace: str) -> str | None:
    key = f"first:{namespace}"
    if key not in ctx._index:
        refs = sorted(w.ref for w in ctx.resources if w.kind in W and (w.namespace or "") == namespace)
        ctx._index[key] = refs[0] if refs else None
    value = ctx._index[key]
    return str(value) if value is not None else None


def _no_network_policy(r: Resource, ctx: Context) -> Iterator[Hit]:
    if r.kind == "Namespace":
        if r.name not in _namespaces_with_policies(ctx) and _first_workload(ctx, r.name) is not None:
            yield Hit("metadata.name", f"namespace {r.name} has workloads and no NetworkPolicy")
        return
    namespace = r.namespace or ""
    if namespace in _namespaces_with_policies(ctx):
        return
    if any(ns.name == namespace for ns in ctx.of_kind("Namespace")):
        return
    if _first_workload(ctx, namespace) == r.ref:
        yield Hit("metadata.namespace", f"namespace {namespace or '(unset)'} has no NetworkPolicy")


def _service_type(kind: str) -> Any:
    def check(r: Resource, ctx: Context) -> Iterator[Hit]:
        spec = as_dict(r.obj.get("spec"))
        if str(spec.get("type", "")) != kind:
            return
        ranges = {str(x).strip() for x in as_list(spec.get("loadBalancerSourceRanges"))}
        if kind == "LoadBalancer" and ranges and not ranges & {"0.0.0.0/0", "::/0"}:
            return  # reachable only from the listed ranges, as the remediation asks
        yield Hit("spec.type", f"type {kind}")
    return check


def _ingress_tls(r: Resource, ctx: Context) -> Iterator[Hit]:
    if not as_list(as_dict(r.obj.get("spec")).get("tls")):
        yield Hit("spec.tls", "no TLS section")


def _external_ips(r: Resource, ctx: Context) -> Iterator[Hit]:
    if as_list(as_dict(r.obj.get("spec")).get("externalIPs")):
        yield Hit("spec.externalIPs", "externalIPs set")


# --- SM7xx secrets ------------------------------------------------------------------------

def _env_literals(r: Resource) -> Iterator[tuple[Container, str, str, str]]:
    for _, c in _each_container(r):
        for i, e in enumerate(as_list(c.spec.get("env"))):
            env = as_dict(e)
            if "value" in env and env.get("value") is not None and "valueFrom" not in env:
                yield c, f"{c.path}.env[{i}].value", str(env.get("name", "")), str(env["value"])


def _env_secret_value(r: Resource, ctx: Context) -> Iterator[Hit]:
    for c, path, name, value in _env_literals(r):
        token = leaks.find_token(value)
        if token is None and leaks.is_secret_name(name) and leaks.looks_random(value) \
                and not leaks.is_placeholder(value):
            token = leaks.Leak("random-looking value", leaks.mask(value))
        if token is not None:
            yield Hit(path, f"{name}: {token.kind}", c.name, token.masked)


def _env_secret_name(r: Resource, ctx: Context) -> Iterator[Hit]:
    for c, path, name, value in _env_literals(r):
        if leaks.find_token(value) is not None or (leaks.is_secret_name(name) and leaks.looks_random(value)):
            continue  # SM701 reports it
        if leaks.is_secret_name(name) and not leaks.is_placeholder(value) and len(value.strip()) >= 4:
            yield Hit(path, f"{name} has a literal value", c.name, leaks.mask(value))


def _configmap_secret(r: Resource, ctx: Context) -> Iterator[Hit]:
    for key, value in sorted(as_dict(r.obj.get("data")).items()):
        text = "" if value is None else str(value)
        leak = leaks.find_in_text(text) if "\n" in text.strip() else leaks.find_in_value(str(key), text)
        if leak is None and "\n" not in text.strip() and leaks.is_secret_name(str(key)) and leaks.looks_random(text) \
                and not leaks.is_placeholder(text):
            leak = leaks.Leak("random-looking value", leaks.mask(text))
        if leak is not None:
            yield Hit(f"data.{key}", f"{key}: {leak.kind}", None, leak.masked)


def _secret_with_data(r: Resource, ctx: Context) -> Iterator[Hit]:
    # (a service-account-token Secret as written has no data: the controller fills it in)
    for field in ("data", "stringData"):
        values = as_dict(r.obj.get(field))
        filled = sorted(k for k, v in values.items() if v not in (None, ""))
        if filled:
            yield Hit(field, f"{len(filled)} value(s) committed: {', '.join(map(str, filled[:5]))}")


def _secret_as_env(r: Resource, ctx: Context) -> Iterator[Hit]:
    for _, c in _each_container(r):
        for i, e in enumerate(as_list(c.spec.get("env"))):
            ref = as_dict(as_dict(as_dict(e).get("valueFrom")).get("secretKeyRef"))
            if ref:
                yield Hit(f"{c.path}.env[{i}].valueFrom.secretKeyRef",
                          f"{as_dict(e).get('name')} from secret {ref.get('name')}", c.name)
        for i, e in enumerate(as_list(c.spec.get("envFrom"))):
            if as_dict(e).get("secretRef"):
                yield Hit(f"{c.path}.envFrom[{i}].secretRef", "a whole secret as env vars", c.name)


def _secret_elsewhere(r: Resource, ctx: Context) -> Iterator[Hit]:
    for _, c in _each_container(r):
        for field in ("command", "args"):
            args = [str(x) for x in as_list(c.spec.get(field))]
            leak = leaks.find_in_text("\n".join(args)) if args else None
            if leak is None:
                # word by word, also inside a shell string (`sh -c "tool --password x"`)
                words = [word for arg in args for word in arg.split()]
                for i, word in enumerate(words):
                    flag, _, value = word.partition("=")
                    if value and leaks.is_secret_name(flag.lstrip("-")) and not leaks.is_placeholder(value) \
                            and len(value) >= 4:
                        leak = leaks.Leak(f"{flag} on the command line", leaks.mask(value))
                        break
                    if i + 1 < len(words) and not value and word.startswith("--") \
                            and leaks.is_secret_name(word.lstrip("-")):
                        nxt = words[i + 1]
                        if not nxt.startswith("-") and not leaks.is_placeholder(nxt) and len(nxt) >= 4:
                            leak = leaks.Leak(f"{word} on the command line", leaks.mask(nxt))
                            break
            if leak is not None:
                yield Hit(f"{c.path}.{field}", leak.kind, c.name, leak.masked)
    places = [("metadata", r.metadata)]
    pod = _pod(r)
    if pod is not None and r.kind != "Pod":
        places.append((f"{pod.path.rsplit('.spec', 1)[0]}.metadata", pod.template_metadata))
    for prefix, metadata in places:
        for field in ("annotations", "labels"):
            for key, value in sorted(as_dict(metadata.get(field)).items()):
                leak = leaks.find_token(str(value))
                if leak is not None:
                    yield Hit(f"{prefix}.{field}.{key}", leak.kind, None, leak.masked)


# --- SM8xx RBAC ---------------------------------------------------------------------------

def _rules_of(r: Resource) -> Iterator[tuple[int, dict[str, Any]]]:
    for i, rule in enumerate(as_list(r.obj.get("rules"))):
        if isinstance(rule, dict):
            yield i, rule


def _wildcard(field: str) -> Any:
    def check(r: Resource, ctx: Context) -> Iterator[Hit]:
        for i, rule in _rules_of(r):
            if "*" in [str(x) for x in as_list(rule.get(field))]:
                yield Hit(f"rules[{i}].{field}", f"{field}: ['*']")
    return check


def _cluster_admin(r: Resource, ctx: Context) -> Iterator[Hit]:
    ref = as_dict(r.obj.get("roleRef"))
    if ref.get("kind") == "ClusterRole" and ref.get("name") == "cluster-admin":
        yield Hit("roleRef.name", "binds cluster-admin")


def _covers(rule: dict[str, Any], *resources: str) -> bool:
    """The rule grants on one of `resources` (core group), wildcards included: `*` is every
    resource of its groups, subresources too; `pods/*` is every subresource of pods."""
    granted = {str(x) for x in as_list(rule.get("resources"))}
    groups = {str(x) for x in as_list(rule.get("apiGroups"))}
    if "*" in granted and groups & {"", "*"}:
        return True
    return any(res in granted or f"{res.partition('/')[0]}/*" in granted for res in resources)


def _secret_read(r: Resource, ctx: Context) -> Iterator[Hit]:
    for i, rule in _rules_of(r):
        verbs = {str(x) for x in as_list(rule.get("verbs"))}
        if not _covers(rule, "secrets") or as_list(rule.get("resourceNames")):
            continue
        broad = {"list", "watch", "*"} if r.kind == "Role" else {"get", "list", "watch", "*"}
        if verbs & broad:
            yield Hit(f"rules[{i}]", f"{', '.join(sorted(verbs & broad))} on all secrets"
                      + (" in every namespace" if r.kind == "ClusterRole" else ""))


def _escalation_verbs(r: Resource, ctx: Context) -> Iterator[Hit]:
    for i, rule in _rules_of(r):
        granted = {str(x) for x in as_list(rule.get("verbs"))}
        verbs = granted & {"escalate", "bind", "impersonate"}
        if verbs:
            yield Hit(f"rules[{i}].verbs", ", ".join(sorted(verbs)))
            continue
        resources = {str(x) for x in as_list(rule.get("resources"))}
        groups = {str(x) for x in as_list(rule.get("apiGroups"))}
        every = "*" in resources and bool(groups & {"*", "", "rbac.authorization.k8s.io"})
        if "*" in granted and (every or resources & {"roles", "clusterroles", "users", "groups", "serviceaccounts"}):
            yield Hit(f"rules[{i}].verbs", "* (escalate, bind or impersonate included)")


def _pod_exec(r: Resource, ctx: Context) -> Iterator[Hit]:
    dangerous = ("pods/exec", "pods/attach", "nodes/proxy")
    for i, rule in _rules_of(r):
        resources = {res for res in dangerous if _covers(rule, res)}
        verbs = {str(x) for x in as_list(rule.get("verbs"))}
        if resources and verbs & {"create", "get", "*"}:
            yield Hit(f"rules[{i}].resources", ", ".join(sorted(resources)))


# --- SM9xx API versions and conventions ---------------------------------------------------

def _removed_api(r: Resource, ctx: Context) -> Iterator[Hit]:
    found = REMOVED_APIS.get((r.api_version, r.kind)) or REMOVED_APIS.get((r.api_version, "*"))
    if found is not None:
        removed, replacement = found
        yield Hit("apiVersion", f"{r.api_version} {r.kind} was removed in Kubernetes {removed}; use {replacement}")


def _default_namespace(r: Resource, ctx: Context) -> Iterator[Hit]:
    if r.namespace == "default":
        yield Hit("metadata.namespace", "namespace default")


def _labels(r: Resource, ctx: Context) -> Iterator[Hit]:
    wanted = [str(x) for x in as_list(ctx.options.get("requiredLabels"))] or list(RECOMMENDED_LABELS)
    labels = as_dict(r.metadata.get("labels"))
    missing = [k for k in wanted if k not in labels]
    if missing:
        yield Hit("metadata.labels", f"missing {', '.join(missing)}")


def _max_unavailable(r: Resource, ctx: Context) -> Iterator[Hit]:
    option = ctx.options.get("forbidMaxUnavailable")
    if not (truthy(option) or (option is None and ctx.production)):
        return
    spec = as_dict(r.obj.get("spec"))
    strategy = as_dict(spec.get("strategy") or spec.get("updateStrategy"))
    if r.kind == "Deployment" and str(strategy.get("type", "RollingUpdate")) == "RollingUpdate":
        value = as_dict(strategy.get("rollingUpdate")).get("maxUnavailable", "25%")
        if str(value).strip() not in ("0", "0%"):
            path = "spec.strategy.rollingUpdate.maxUnavailable"
            yield Hit(path, f"maxUnavailable {value} (unset means 25%)")


def _recreate(r: Resource, ctx: Context) -> Iterator[Hit]:
    strategy = as_dict(as_dict(r.obj.get("spec")).get("strategy"))
    if ctx.production and str(strategy.get("type", "")) == "Recreate":
        yield Hit("spec.strategy.type", "Recreate stops every pod before starting new ones")


# --- the rule table -----------------------------------------------------------------------

def _r(rule_id: str, name: str, severity: Severity, kinds: frozenset[str] | set[str], check: Any, message: str,
       remediation: str, category: str, *, enabled: bool = True) -> Rule:
    return Rule(id=rule_id, name=name, severity=severity, message=message, remediation=remediation,
                category=category, kinds=frozenset(kinds), check=check, default_enabled=enabled)


H, M, L, C = Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.CRITICAL
POD = "pod-security"

RULES: tuple[Rule, ...] = (
    _r("SM101", "run-as-non-root", H, W, _root_user, "Container may run as root",
       "Set securityContext.runAsNonRoot: true and a runAsUser above 0 (e.g. 10001).", POD),
    _r("SM102", "run-as-uid-0", C, W, _uid_zero, "Container runs as uid 0",
       "Set runAsUser to a non-zero uid (e.g. 10001) and runAsNonRoot: true.", POD),
    _r("SM103", "privileged", C, W, _privileged, "Privileged container",
       "Remove privileged: true; grant only the capability the container needs.", POD),
    _r("SM104", "privilege-escalation", H, W, _escalation, "Privilege escalation is allowed",
       "Set securityContext.allowPrivilegeEscalation: false.", POD),
    _r("SM105", "read-only-root", M, W, _writable_root, "Root file system is writable",
       "Set securityContext.readOnlyRootFilesystem: true and mount an emptyDir where the app writes.", POD),
    _r("SM106", "drop-all-capabilities", M, W, _caps_not_dropped, "Capabilities are not all dropped",
       "Set securityContext.capabilities.drop: [ALL].", POD),
    _r("SM107", "added-capabilities", H, W, _caps_added, "Dangerous capabilities are added",
       "Remove capabilities.add; only NET_BIND_SERVICE is acceptable.", POD),
    _r("SM108", "seccomp", M, W, _seccomp, "No seccomp profile",
       "Set securityContext.seccompProfile.type: RuntimeDefault on the pod.", POD),
    _r("SM109", "host-pid", H, W, _host_flag("hostPID"), "Pod shares the node's process namespace",
       "Remove hostPID: true.", POD),
    _r("SM110", "host-ipc", H, W, _host_flag("hostIPC"), "Pod shares the node's IPC namespace",
       "Remove hostIPC: true.", POD),
    _r("SM111", "host-network", H, W, _host_flag("hostNetwork"), "Pod uses the node's network",
       "Remove hostNetwork: true; expose ports through a Service.", POD),
    _r("SM112", "host-path", H, W, _host_path, "Pod mounts a path of the node",
       "Use an emptyDir, a ConfigMap or a PersistentVolumeClaim instead of hostPath.", POD),
    _r("SM113", "host-port", M, W, _host_port, "Container binds a host port",
       "Remove hostPort; use a Service.", POD),
    _r("SM114", "service-account-token", M, W, _token_automount, "Service account token is mounted",
       "Set automountServiceAccountToken: false unless the pod calls the Kubernetes API.", POD),
    _r("SM115", "root-group", M, W, _root_group, "Pod or container runs with group 0",
       "Set runAsGroup and fsGroup to a non-zero gid.", POD),
    _r("SM116", "unmasked-proc", H, W, _proc_mount, "/proc is unmasked",
       "Remove procMount: Unmasked.", POD),
    _r("SM117", "unconfined-mac", H, W, _unconfined_mac, "AppArmor or SELinux confinement is off",
       "Use the runtime's default AppArmor profile and SELinux type.", POD),
    _r("SM118", "unsafe-sysctls", M, W, _sysctls, "Pod sets an unsafe sysctl",
       "Remove sysctls outside the safe set.", POD),
    _r("SM119", "host-process", H, W, _host_process, "Windows host process container",
       "Remove windowsOptions.hostProcess.", POD),
    _r("SM201", "image-tag", M, W, _latest, "Image has no tag or uses latest",
       "Pin a version tag (or a digest) so that every node runs the same image.", "images"),
    _r("SM202", "image-digest", L, W, _digest, "Image is not pinned by digest",
       "Reference the image as name@sha256:...", "images", enabled=False),
    _r("SM203", "pull-policy", L, W, _pull_policy, "Image pull policy can run a stale image",
       "Use imagePullPolicy: IfNotPresent with a pinned tag, or Always with a mutable one.", "images"),
    _r("SM204", "image-registry", M, W, _registry, "Image from a registry outside the allowlist",
       "Pull from an allowed registry (policy option allowedRegistries).", "images"),
    _r("SM301", "cpu-request", M, W, _resource("requests", "cpu"), "No CPU request",
       "Set resources.requests.cpu.", "resources"),
    _r("SM302", "memory-request", M, W, _resource("requests", "memory"), "No memory request",
       "Set resources.requests.memory.", "resources"),
    _r("SM303", "cpu-limit", L, W, _resource("limits", "cpu"), "No CPU limit",
       "Set resources.limits.cpu.", "resources"),
    _r("SM304", "memory-limit", M, W, _resource("limits", "memory"), "No memory limit",
       "Set resources.limits.memory.", "resources"),
    _r("SM305", "request-over-limit", M, W, _request_over_limit, "A request is larger than its limit",
       "Lower the request or raise the limit.", "resources"),
    _r("SM401", "liveness-probe", M, W, _probe("livenessProbe"), "No liveness probe",
       "Add a livenessProbe so a hung process is restarted.", "probes"),
    _r("SM402", "readiness-probe", M, W, _probe("readinessProbe"), "No readiness probe",
       "Add a readinessProbe so traffic waits until the pod is ready.", "probes"),
    _r("SM403", "identical-probes", L, W, _same_probes, "Liveness and readiness probes are identical",
       "Make liveness cheaper and more tolerant than readiness (other path or higher failureThreshold).",
       "probes"),
    _r("SM501", "single-replica", M, SCALABLE, _single_replica, "A single replica in production",
       "Run at least 2 replicas (or an HPA with minReplicas >= 2).", "availability"),
    _r("SM502", "pod-disruption-budget", M, SCALABLE, _no_pdb, "No PodDisruptionBudget for a replicated workload",
       "Add a PodDisruptionBudget (e.g. maxUnavailable: 1) selecting the pods.", "availability"),
    _r("SM503", "hpa-min-replicas", L, {"HorizontalPodAutoscaler"}, _hpa_min_below_two, "HPA can scale to one pod",
       "Set minReplicas to 2 or more.", "availability"),
    _r("SM504", "spread", L, SCALABLE, _no_spread, "Replicas are not spread across nodes",
       "Add topologySpreadConstraints or podAntiAffinity on kubernetes.io/hostname.", "availability"),
    _r("SM505", "pdb-blocks-drain", L, {"PodDisruptionBudget"}, _pdb_blocks, "PodDisruptionBudget blocks drains",
       "Allow at least one disruption (maxUnavailable: 1).", "availability"),
    _r("SM601", "network-policy", M, W | {"Namespace"}, _no_network_policy, "Namespace without NetworkPolicy",
       "Add a default-deny NetworkPolicy and allow only the traffic the app needs.", "network"),
    _r("SM602", "node-port", M, {"Service"}, _service_type("NodePort"), "Service of type NodePort",
       "Use ClusterIP behind an Ingress or Gateway.", "network"),
    _r("SM603", "load-balancer", L, {"Service"}, _service_type("LoadBalancer"), "Service of type LoadBalancer",
       "Expose through an Ingress or Gateway, or restrict loadBalancerSourceRanges.", "network"),
    _r("SM604", "ingress-tls", M, {"Ingress"}, _ingress_tls, "Ingress without TLS",
       "Add spec.tls with a certificate secret.", "network"),
    _r("SM605", "external-ips", H, {"Service"}, _external_ips, "Service sets externalIPs",
       "Remove externalIPs (they can intercept cluster traffic).", "network"),
    _r("SM701", "secret-in-env", C, W, _env_secret_value, "Plaintext secret in a container environment",
       "Move the value to a secret and deliver it as a file (shipmate secrets set NAME).", "secrets"),
    _r("SM702", "secret-in-configmap", C, {"ConfigMap"}, _configmap_secret, "Secret in a ConfigMap",
       "Move the value out of the ConfigMap into a secret delivered as a file.", "secrets"),
    _r("SM703", "secret-named-literal", H, W, _env_secret_name, "Secret-named variable with a literal value",
       "Deliver the value from a secret (file preferred) instead of a literal.", "secrets"),
    _r("SM704", "committed-secret", H, {"Secret"}, _secret_with_data, "Secret object with committed data",
       "Keep values out of manifests: use External Secrets, the CSI driver or sealed/encrypted secrets.",
       "secrets"),
    _r("SM705", "secret-as-env", L, W, _secret_as_env, "Secret delivered as an environment variable",
       "Mount the secret as a file: env vars leak into logs, crash dumps and child processes.", "secrets"),
    _r("SM706", "secret-in-args-or-metadata", H, W | {"Service", "ConfigMap", "Ingress", "Namespace"},
       _secret_elsewhere, "Secret in a command line, annotation or label",
       "Read the secret from a file instead of passing it on the command line or in metadata.", "secrets"),
    _r("SM801", "wildcard-verbs", H, ROLE_KINDS, _wildcard("verbs"), "Role grants every verb",
       "List the verbs the subject needs.", "rbac"),
    _r("SM802", "wildcard-resources", H, ROLE_KINDS, _wildcard("resources"), "Role grants every resource",
       "List the resources the subject needs.", "rbac"),
    _r("SM803", "cluster-admin", C, BINDING_KINDS, _cluster_admin, "Binding to cluster-admin",
       "Bind a role with only the permissions needed.", "rbac"),
    _r("SM804", "secret-read", H, ROLE_KINDS, _secret_read, "Role can read all secrets",
       "Limit secret access with resourceNames, or drop list/watch.", "rbac"),
    _r("SM805", "escalation-verbs", H, ROLE_KINDS, _escalation_verbs, "Role can escalate, bind or impersonate",
       "Remove escalate, bind and impersonate.", "rbac"),
    _r("SM806", "pod-exec", M, ROLE_KINDS, _pod_exec, "Role can exec into or attach to pods",
       "Remove pods/exec, pods/attach and nodes/proxy.", "rbac"),
    _r("SM901", "removed-api", H, frozenset(), _removed_api, "Deprecated or removed API version",
       "Move to the replacement apiVersion.", "api"),
    _r("SM902", "default-namespace", M, NAMESPACED_KINDS, _default_namespace, "Object in the default namespace",
       "Give every application its own namespace.", "conventions"),
    _r("SM903", "recommended-labels", L, W, _labels, "Recommended labels are missing",
       "Add app.kubernetes.io/name, instance and version labels.", "conventions"),
    _r("SM904", "max-unavailable", M, {"Deployment"}, _max_unavailable, "Rolling update may drop capacity",
       "Set strategy.rollingUpdate.maxUnavailable: 0 (and a maxSurge above 0).", "availability"),
    _r("SM905", "recreate-in-production", L, {"Deployment"}, _recreate, "Recreate strategy in production",
       "Use RollingUpdate so that the service stays up during a deploy.", "availability"),
)

BY_ID: dict[str, Rule] = {rule.id: rule for rule in RULES}
