"""Plan -> Kubernetes objects, hardened by default.

Called by every output format (manifests, Helm, Kustomize, ...), by the scanner and by the
Kubernetes target. Objects are plain dicts (the product of render, treated as data) and come out
in apply order (`KIND_RANK`, then name). Pure: no I/O, nothing read from the store.

What "hardened" means here: non-root uid 10001, read-only root file system with an emptyDir at
/tmp, no privilege escalation, every capability dropped, seccomp RuntimeDefault, no service
account token unless asked, probes, requests and limits, RollingUpdate 25%/0 unless set, an HPA
and a PDB where they apply, default-deny NetworkPolicy plus only the allows the plan implies,
secrets as files from the Secrets Store CSI driver or External Secrets (a plain Secret is for
dev), and config (never a secret) in ConfigMaps.

An external addon (`external: true`, a managed database) has no pods here: the egress to it is
allowed on its port to any address (it has no labels to select), and its password is still
delivered when a backup job needs it.
"""

from __future__ import annotations

from typing import Any

from shipmate import __version__
from shipmate.plan.models import (
    AddonPlan,
    BackupPlan,
    Plan,
    ProbePlan,
    ResourcesPlan,
    SecretMount,
    Workload,
)
from shipmate.render import monitoring
from shipmate.render.yamlio import dump_pyyaml

Obj = dict[str, Any]

RUN_AS = 10001
SHIPMATE_IMAGE = f"ghcr.io/shipmate/shipmate:{__version__}"
KIND_RANK = {
    "Namespace": 0, "NetworkPolicy": 1, "ServiceAccount": 2, "Role": 3, "RoleBinding": 4,
    "SecretProviderClass": 5, "ExternalSecret": 6, "Secret": 7, "ConfigMap": 8,
    "PersistentVolumeClaim": 9, "Service": 10, "Deployment": 11, "StatefulSet": 12, "DaemonSet": 13,
    "CronJob": 14, "HorizontalPodAutoscaler": 15, "PodDisruptionBudget": 16, "Ingress": 17,
    "HTTPRoute": 18, "ServiceMonitor": 19, "PrometheusRule": 20,
}
API_VERSION = {
    "Namespace": "v1", "ServiceAccount": "v1", "Secret": "v1", "ConfigMap": "v1", "Service": "v1",
    "NetworkPolicy": "networking.k8s.io/v1", "Ingress": "networking.k8s.io/v1",
    "Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1", "CronJob": "batch/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2", "PodDisruptionBudget": "policy/v1",
    "SecretProviderClass": "secrets-store.csi.x-k8s.io/v1", "ExternalSecret": "external-secrets.io/v1",
    "HTTPRoute": "gateway.networking.k8s.io/v1", "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}
CSI_DRIVER = "secrets-store.csi.k8s.io"
# Where an external addon may be: anywhere outside the cluster, on IPv4 or IPv6 (a managed
# database's endpoint may resolve to either in a dual-stack network).
ANYWHERE = ("0.0.0.0/0", "::/0")
SUPPRESS_PREFIX = "ignore.shipmate.dev/"
SINGLE_ADDON_REASON = ("a single-instance addon, protected by its backups; for high availability use a managed "
                       "database (external: true)")


# --- labels -------------------------------------------------------------------------------

def selector(plan: Plan, name: str) -> dict[str, str]:
    """Labels that select the pods of one workload; stable across versions."""
    return {"app.kubernetes.io/instance": plan.instance, "app.kubernetes.io/name": name}


def labels(plan: Plan, name: str, component: str, version: str | None = None) -> dict[str, str]:
    """The recommended labels, on every object."""
    return {
        **selector(plan, name),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "shipmate",
        "app.kubernetes.io/part-of": plan.app,
        "app.kubernetes.io/version": _label_value(version or plan.app_version),
        "shipmate.dev/environment": plan.environment,
    }


def _label_value(value: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in value)[:63]
    return cleaned.strip("-_.") or "unknown"


def _obj(kind: str, name: str, plan: Plan | None, meta_labels: dict[str, str],
         namespaced: bool = True, **body: Any) -> Obj:
    metadata: dict[str, Any] = {"name": name, "labels": dict(meta_labels)}
    if namespaced and plan is not None:
        metadata["namespace"] = plan.namespace
    return {"apiVersion": API_VERSION[kind], "kind": kind, "metadata": metadata, **body}


# --- entry point --------------------------------------------------------------------------

def render(plan: Plan) -> list[Obj]:
    """Every object of one environment, in apply order."""
    objects: list[Obj] = [_namespace(plan), *_base_network_policies(plan)]
    for workload in plan.workloads:
        objects.extend(_workload_objects(plan, workload))
    for addon in plan.addons:
        if not addon.external:
            objects.extend(_addon_objects(plan, addon))
        elif backed_up(plan, addon.name):
            objects.extend(_secret_delivery(plan, addon.name, _addon_labels(plan, addon), _password_mounts(addon)))
    if plan.backups:
        objects.append(_backup_network_policy(plan))
        objects.extend(_backup_cronjob(plan, b) for b in plan.backups)
    objects.extend(monitoring.objects(plan, labels(plan, plan.app, "monitoring")))
    return sort_objects(objects)


def sort_objects(objects: list[Obj]) -> list[Obj]:
    return sorted(objects, key=lambda o: (KIND_RANK.get(o["kind"], 99), o["metadata"].get("namespace", ""),
                                          o["metadata"]["name"]))


def _namespace(plan: Plan) -> Obj:
    ns_labels = {
        **labels(plan, plan.app, "namespace"),
        "kubernetes.io/metadata.name": plan.namespace,
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
    }
    return _obj("Namespace", plan.namespace, plan, ns_labels, namespaced=False)


# --- network policies ---------------------------------------------------------------------

def _base_network_policies(plan: Plan) -> list[Obj]:
    common = labels(plan, plan.app, "network")
    deny = _obj("NetworkPolicy", "default-deny", plan, common,
                spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    dns = _obj("NetworkPolicy", "allow-dns", plan, common, spec={
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
        }],
    })
    return [deny, dns]


def _pods(plan: Plan, name: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": selector(plan, name)}}


def _from_namespace(namespace: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def _anywhere() -> list[dict[str, Any]]:
    return [{"ipBlock": {"cidr": cidr}} for cidr in ANYWHERE]


def _tcp(ports: tuple[int, ...] | list[int]) -> list[dict[str, Any]]:
    return [{"port": p, "protocol": "TCP"} for p in sorted(set(ports))]


def _workload_network_policy(plan: Plan, w: Workload) -> Obj:
    ingress: list[dict[str, Any]] = []
    for peer in w.ingress_from:
        ingress.append({"from": [_pods(plan, peer.name)], "ports": _tcp(peer.ports)})
    if w.expose is not None:
        ingress.append({"from": [_from_namespace(plan.ingress_namespace)], "ports": _tcp([w.expose.port])})
    if w.metrics_port is not None:
        ingress.append({"from": [_from_namespace(plan.monitoring_namespace)], "ports": _tcp([w.metrics_port])})
    egress = [{"to": _anywhere() if peer.external else [_pods(plan, peer.name)], "ports": _tcp(peer.ports)}
              for peer in w.egress if peer.ports]
    spec: dict[str, Any] = {"podSelector": {"matchLabels": selector(plan, w.name)},
                            "policyTypes": ["Ingress", "Egress"], "ingress": ingress, "egress": egress}
    return _obj("NetworkPolicy", w.name, plan, labels(plan, w.name, "service", w.tag), spec=spec)


# --- workloads ----------------------------------------------------------------------------

def _workload_objects(plan: Plan, w: Workload) -> list[Obj]:
    meta = labels(plan, w.name, "service", w.tag)
    out: list[Obj] = [_workload_network_policy(plan, w)]
    if w.service_account:
        out.append(_obj("ServiceAccount", w.name, plan, meta, automountServiceAccountToken=w.automount_token))
    if w.config:
        out.append(_obj("ConfigMap", f"{w.name}-config", plan, meta, data=dict(w.config)))
    if w.config_files:
        out.append(_obj("ConfigMap", f"{w.name}-files", plan, meta,
                        data={_file_key(path): content for path, content in w.config_files}))
    out.extend(_secret_delivery(plan, w.name, meta, w.secrets))
    if w.ports:
        out.append(_service(plan, w.name, meta, [(p.name, p.port) for p in w.ports], headless=False))
        if w.kind == "StatefulSet":
            out.append(_service(plan, f"{w.name}-headless", meta, [(p.name, p.port) for p in w.ports],
                                headless=True, select=w.name))
    out.append(_controller(plan, w, meta))
    if w.autoscaling is not None and w.kind != "DaemonSet":
        out.append(_hpa(plan, w, meta))
    effective = w.autoscaling.min_replicas if w.autoscaling else w.replicas
    if w.kind != "DaemonSet" and effective > 1:
        out.append(_obj("PodDisruptionBudget", w.name, plan, meta, spec={
            "maxUnavailable": 1, "selector": {"matchLabels": selector(plan, w.name)}}))
    if w.expose is not None:
        out.append(_route(plan, w, meta))
    if w.metrics_port is not None:
        port_name = next((p.name for p in w.ports if p.port == w.metrics_port), w.ports[0].name)
        out.append(_obj("ServiceMonitor", w.name, plan, meta, spec={
            "selector": {"matchLabels": selector(plan, w.name)},
            "namespaceSelector": {"matchNames": [plan.namespace]},
            "endpoints": [{"port": port_name, "path": w.metrics_path, "interval": "30s"}],
        }))
    return out


def _file_key(path: str) -> str:
    return path.strip("/").replace("/", "_")


def _service(plan: Plan, name: str, meta: dict[str, str], ports: list[tuple[str, int]], *,
             headless: bool, select: str | None = None) -> Obj:
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "selector": selector(plan, select or name),
        "ports": [{"name": n, "port": p, "targetPort": n, "protocol": "TCP"} for n, p in ports],
    }
    if headless:
        spec["clusterIP"] = "None"
        spec["publishNotReadyAddresses"] = True
    return _obj("Service", name, plan, meta, spec=spec)


def _probe(p: ProbePlan) -> dict[str, Any]:
    out: dict[str, Any] = {
        "initialDelaySeconds": p.initial_delay_seconds, "periodSeconds": p.period_seconds,
        "timeoutSeconds": p.timeout_seconds, "failureThreshold": p.failure_threshold,
        "successThreshold": p.success_threshold,
    }
    if p.check == "http":
        out["httpGet"] = {"path": p.path, "port": p.port, "scheme": "HTTP"}
    elif p.check == "tcp":
        out["tcpSocket"] = {"port": p.port}
    else:
        out["exec"] = {"command": list(p.command)}
    return out


def _resources(r: ResourcesPlan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    requests = {k: v for k, v in (("cpu", r.requests_cpu), ("memory", r.requests_memory)) if v}
    limits = {k: v for k, v in (("cpu", r.limits_cpu), ("memory", r.limits_memory)) if v}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def container_security(uid: int = RUN_AS) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security(uid: int = RUN_AS) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _controller(plan: Plan, w: Workload, meta: dict[str, str]) -> Obj:
    env: list[dict[str, Any]] = [{"name": "APP_VERSION", "value": w.tag},
                                 {"name": "SHIPMATE_SECRETS_DIR", "value": w.secrets_dir}]
    env += [{"name": s.env, "valueFrom": {"secretKeyRef": {"name": f"{w.name}-secrets", "key": s.secret}}}
            for s in w.env_secrets]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108 - an emptyDir
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    if w.secrets:
        mounts.append({"name": "secrets", "mountPath": w.secrets_dir, "readOnly": True})
        volumes.append(_secret_volume(plan, w.name, w.secrets))
    for index, (directory, items) in enumerate(_files_by_dir(w.config_files)):
        vol = f"files-{index}"
        mounts.append({"name": vol, "mountPath": directory, "readOnly": True})
        volumes.append({"name": vol, "configMap": {"name": f"{w.name}-files", "items": items}})
    if w.kind == "StatefulSet":
        mounts.append({"name": "data", "mountPath": "/data"})
    container: dict[str, Any] = {
        "name": w.name,
        "image": w.image_ref,
        "imagePullPolicy": "IfNotPresent",
        "env": env,
        "resources": _resources(w.resources),
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }
    if w.config:
        container["envFrom"] = [{"configMapRef": {"name": f"{w.name}-config"}}]
    if w.command:
        container["command"] = list(w.command)
    if w.args:
        container["args"] = list(w.args)
    if w.ports:
        container["ports"] = [{"name": p.name, "containerPort": p.port, "protocol": "TCP"} for p in w.ports]
    for field, probe in (("livenessProbe", w.liveness), ("readinessProbe", w.readiness),
                         ("startupProbe", w.startup)):
        if probe is not None:
            container[field] = _probe(probe)
    annotations: dict[str, str] = {}
    if w.metrics_port is not None:
        annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(w.metrics_port),
                       "prometheus.io/path": w.metrics_path}
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": w.automount_token,
        "containers": [container],
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "terminationGracePeriodSeconds": w.termination_grace_seconds,
        "volumes": volumes,
    }
    if w.service_account:
        pod_spec["serviceAccountName"] = w.name
    if w.kind != "DaemonSet":
        pod_spec["topologySpreadConstraints"] = [{
            "labelSelector": {"matchLabels": selector(plan, w.name)}, "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}]
    template: dict[str, Any] = {"metadata": {"labels": dict(meta)}, "spec": pod_spec}
    if annotations:
        template["metadata"]["annotations"] = annotations
    spec: dict[str, Any] = {"selector": {"matchLabels": selector(plan, w.name)}, "template": template,
                            "revisionHistoryLimit": plan.history}
    if w.kind == "Deployment":
        if w.autoscaling is None:
            spec["replicas"] = w.replicas
        spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {
            "maxSurge": w.max_surge, "maxUnavailable": w.max_unavailable}}
        spec["progressDeadlineSeconds"] = int(plan.strategy.progress_deadline_seconds)
    elif w.kind == "StatefulSet":
        if w.autoscaling is None:
            spec["replicas"] = w.replicas
        spec["serviceName"] = f"{w.name}-headless"
        spec["podManagementPolicy"] = "OrderedReady"
        spec["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
        spec["volumeClaimTemplates"] = [_claim(meta, w.storage or "1Gi")]
    else:
        spec["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {
            "maxSurge": 0, "maxUnavailable": w.max_unavailable or 1}}
    return _obj(w.kind, w.name, plan, meta, spec=spec)


def _claim(meta: dict[str, str], size: str) -> dict[str, Any]:
    return {"metadata": {"name": "data", "labels": dict(meta)},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}}


def _files_by_dir(files: tuple[tuple[str, str], ...]) -> list[tuple[str, list[dict[str, str]]]]:
    dirs: dict[str, list[dict[str, str]]] = {}
    for path, _content in files:
        directory, _, base = path.rpartition("/")
        dirs.setdefault(directory or "/", []).append({"key": _file_key(path), "path": base})
    return sorted(dirs.items())


def _hpa(plan: Plan, w: Workload, meta: dict[str, str]) -> Obj:
    auto = w.autoscaling
    if auto is None:
        raise ValueError(f"{w.name} has no autoscaling")
    metrics = []
    for resource, target in (("cpu", auto.cpu), ("memory", auto.memory)):
        if target is not None:
            metrics.append({"type": "Resource", "resource": {
                "name": resource, "target": {"type": "Utilization", "averageUtilization": target}}})
    return _obj("HorizontalPodAutoscaler", w.name, plan, meta, spec={
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": w.kind, "name": w.name},
        "minReplicas": auto.min_replicas, "maxReplicas": auto.max_replicas, "metrics": metrics})


def _route(plan: Plan, w: Workload, meta: dict[str, str]) -> Obj:
    expose = w.expose
    if expose is None:
        raise ValueError(f"{w.name} is not exposed")
    if plan.ingress_kind == "gateway":
        spec: dict[str, Any] = {
            "parentRefs": [{"name": plan.gateway}],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": expose.path}}],
                       "backendRefs": [{"name": w.name, "port": expose.port}]}],
        }
        if expose.host:
            spec["hostnames"] = [expose.host]
        return _obj("HTTPRoute", w.name, plan, meta, spec=spec)
    rule: dict[str, Any] = {"http": {"paths": [{
        "path": expose.path, "pathType": "Prefix",
        "backend": {"service": {"name": w.name, "port": {"number": expose.port}}}}]}}
    if expose.host:
        rule["host"] = expose.host
    spec = {"ingressClassName": plan.ingress_class, "rules": [rule]}
    if expose.tls and expose.host:
        spec["tls"] = [{"hosts": [expose.host], "secretName": plan.tls_secret or f"{w.name}-tls"}]
    obj = _obj("Ingress", w.name, plan, meta, spec=spec)
    if expose.websocket:
        obj["metadata"]["annotations"] = {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
                                          "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600"}
    return obj


# --- secrets ------------------------------------------------------------------------------

def _remote(plan: Plan, secret: str) -> tuple[str, str | None]:
    for s in plan.secrets:
        if s.name == secret:
            return s.remote_key, s.remote_property
    return f"{plan.app}/{plan.environment}/{secret}", None


def _secret_delivery(plan: Plan, owner: str, meta: dict[str, str], mounts: tuple[SecretMount, ...]) -> list[Obj]:
    if not mounts:
        return []
    name = f"{owner}-secrets"
    if plan.secrets_delivery == "csi":
        objects = []
        for m in mounts:
            key, prop = _remote(plan, m.secret)
            objects.append({"objectName": m.file, "secretPath": key, "secretKey": prop or "value"}
                           if plan.secret_store == "vault" else  # noqa: S105 - a provider name
                           {"objectName": key, "objectAlias": m.file, "objectType": "secretsmanager"})
        parameters: dict[str, str] = {"objects": dump_pyyaml(objects)}
        if plan.secret_store == "vault":  # noqa: S105 - a provider name
            parameters["roleName"] = f"{plan.app}-{owner}"
        spec: dict[str, Any] = {"provider": plan.secret_store, "parameters": parameters}
        env_mounts = [m for m in mounts if m.delivery == "env"]
        if env_mounts:
            spec["secretObjects"] = [{"secretName": name, "type": "Opaque",
                                      "data": [{"objectName": m.file, "key": m.secret} for m in env_mounts]}]
        return [_obj("SecretProviderClass", name, plan, meta, spec=spec)]
    if plan.secrets_delivery == "external-secrets":
        data = []
        for m in mounts:
            key, prop = _remote(plan, m.secret)
            ref: dict[str, str] = {"key": key}
            if prop:
                ref["property"] = prop
            data.append({"secretKey": m.secret, "remoteRef": ref})
        return [_obj("ExternalSecret", name, plan, meta, spec={
            "refreshInterval": "1m",
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": plan.secret_store},
            "target": {"name": name, "creationPolicy": "Owner", "deletionPolicy": "Retain"},
            "data": data,
        })]
    secret = _obj("Secret", name, plan, meta, type="Opaque")
    secret["metadata"]["annotations"] = {
        "shipmate.dev/filled-by": "shipmate secrets (values are never written to manifests)"}
    return [secret]


def _secret_volume(plan: Plan, owner: str, mounts: tuple[SecretMount, ...]) -> dict[str, Any]:
    name = f"{owner}-secrets"
    if plan.secrets_delivery == "csi":
        return {"name": "secrets", "csi": {"driver": CSI_DRIVER, "readOnly": True,
                                           "volumeAttributes": {"secretProviderClass": name}}}
    items = [{"key": m.secret, "path": m.file, "mode": 0o400} for m in mounts if m.delivery == "file"]
    return {"name": "secrets", "secret": {"secretName": name, "defaultMode": 0o400, "items": items,
                                          "optional": False}}


# --- addons -------------------------------------------------------------------------------

# kind -> (data directory, other writable directories)
_ADDON_PATHS: dict[str, tuple[str, tuple[str, ...]]] = {
    "postgres": ("/var/lib/postgresql/data", ("/var/run/postgresql",)),
    "mysql": ("/var/lib/mysql", ("/var/run/mysqld",)),
    "redis": ("/data", ()),
    "nats": ("/data", ()),
    "rabbitmq": ("/var/lib/rabbitmq", ("/etc/rabbitmq/conf.d",)),
    "generic": ("/data", ()),
}


def addon_writable(a: AddonPlan) -> tuple[str, ...]:
    """The directories an addon writes besides its data and /tmp: its kind's, then the spec's."""
    return (*_ADDON_PATHS[a.kind][1], *a.writable)


def rabbitmq_user(a: AddonPlan) -> str:
    """The user a RabbitMQ addon creates on first start (its password is the addon's password):
    the addon's name, unless its config sets RABBITMQ_DEFAULT_USER."""
    return dict(a.config).get("RABBITMQ_DEFAULT_USER", a.name)


def backed_up(plan: Plan, addon: str) -> bool:
    return any(b.addon == addon for b in plan.backups)


def _password_mounts(a: AddonPlan) -> tuple[SecretMount, ...]:
    return (SecretMount(a.password_secret, "file", a.password_secret, ""),)


def _addon_labels(plan: Plan, a: AddonPlan) -> dict[str, str]:
    return labels(plan, a.name, "addon", a.image.rsplit(":", 1)[-1] if ":" in a.image else None)


def _addon_container(plan: Plan, a: AddonPlan, secrets_dir: str) -> dict[str, Any]:
    password = f"{secrets_dir}/{a.password_secret}"
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in a.config]
    command: list[str] | None = None
    if a.kind == "postgres":
        env += [{"name": "POSTGRES_PASSWORD_FILE", "value": password},
                {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}]
        if a.databases:
            env.append({"name": "POSTGRES_DB", "value": a.databases[0]})
    elif a.kind == "mysql":
        env.append({"name": "MYSQL_ROOT_PASSWORD_FILE", "value": password})
        if a.databases:
            env.append({"name": "MYSQL_DATABASE", "value": a.databases[0]})
    elif a.kind == "redis":
        command = ["sh", "-c", f'exec redis-server --appendonly yes --requirepass "$(cat {password})"']
    elif a.kind == "nats":
        command = ["sh", "-c", f'exec nats-server --jetstream --store_dir /data --port {a.port} '
                   f'--auth "$(cat {password})"']
    elif a.kind == "rabbitmq":
        # the image's `guest` user may only log in from localhost, so services get a user of their own
        if "RABBITMQ_DEFAULT_USER" not in dict(a.config):
            env.append({"name": "RABBITMQ_DEFAULT_USER", "value": rabbitmq_user(a)})
        command = ["sh", "-c", f'RABBITMQ_DEFAULT_PASS="$(cat {password})" exec docker-entrypoint.sh '
                   "rabbitmq-server"]
    data_dir = _ADDON_PATHS[a.kind][0]
    mounts: list[dict[str, Any]] = [{"name": "data", "mountPath": data_dir},
                                    {"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108
    mounts += [{"name": f"run-{i}", "mountPath": d} for i, d in enumerate(addon_writable(a))]
    if a.kind != "generic":
        mounts.append({"name": "secrets", "mountPath": secrets_dir, "readOnly": True})
    # liveness is slower to give up than readiness, so a busy database is taken out of traffic
    # long before it is restarted
    readiness = {"tcpSocket": {"port": a.port}, "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3,
                 "initialDelaySeconds": 5, "successThreshold": 1}
    liveness = {**readiness, "periodSeconds": 20, "failureThreshold": 6, "initialDelaySeconds": 30}
    container: dict[str, Any] = {
        "name": a.kind if a.kind != "generic" else a.name,
        "image": a.image,
        "imagePullPolicy": "IfNotPresent",
        "env": env,
        "ports": [{"name": "main", "containerPort": a.port, "protocol": "TCP"}],
        "livenessProbe": liveness,
        "readinessProbe": readiness,
        "resources": _resources(a.resources),
        "securityContext": container_security(a.run_as_user),
        "volumeMounts": sorted(mounts, key=lambda m: m["mountPath"]),
    }
    if command:
        container["command"] = command
    return container


def _addon_objects(plan: Plan, a: AddonPlan) -> list[Obj]:
    meta = _addon_labels(plan, a)
    secrets_dir = "/var/run/secrets/shipmate"
    mounts = () if a.kind == "generic" else _password_mounts(a)
    out: list[Obj] = list(_secret_delivery(plan, a.name, meta, mounts))
    out.append(_service(plan, a.name, meta, [("main", a.port)], headless=False))
    ingress: list[dict[str, Any]] = [{"from": [_pods(plan, u)], "ports": _tcp([a.port])} for u in a.users]
    if backed_up(plan, a.name):
        ingress.append({"from": [{"podSelector": {"matchLabels": {
            "app.kubernetes.io/instance": plan.instance, "app.kubernetes.io/component": "backup"}}}],
            "ports": _tcp([a.port])})
    out.append(_obj("NetworkPolicy", a.name, plan, meta, spec={
        "podSelector": {"matchLabels": selector(plan, a.name)}, "policyTypes": ["Ingress", "Egress"],
        "ingress": ingress, "egress": []}))
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    volumes += [{"name": f"run-{i}", "emptyDir": {}} for i, _ in enumerate(addon_writable(a))]
    if mounts:
        volumes.append(_secret_volume(plan, a.name, mounts))
    pod_spec = {
        "automountServiceAccountToken": False,
        "containers": [_addon_container(plan, a, secrets_dir)],
        "enableServiceLinks": False,
        "securityContext": pod_security(a.run_as_user),
        "terminationGracePeriodSeconds": 60,
        "volumes": volumes,
    }
    statefulset = _obj("StatefulSet", a.name, plan, meta, spec={
        "replicas": 1,
        "selector": {"matchLabels": selector(plan, a.name)},
        "serviceName": a.name,
        "podManagementPolicy": "OrderedReady",
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
        "revisionHistoryLimit": plan.history,
        "template": {"metadata": {"labels": dict(meta)}, "spec": pod_spec},
        "volumeClaimTemplates": [_claim(meta, a.storage)],
    })
    statefulset["metadata"]["annotations"] = {f"{SUPPRESS_PREFIX}SM501": SINGLE_ADDON_REASON}
    out.append(statefulset)
    return out


# --- backups ------------------------------------------------------------------------------

def _backup_labels(plan: Plan, name: str) -> dict[str, str]:
    return labels(plan, name, "backup", __version__)


def _backup_network_policy(plan: Plan) -> Obj:
    """Backup jobs reach the addons they back up (their pods, or anywhere for external ones) and
    object stores over HTTPS."""
    backed = [a for a in plan.addons if backed_up(plan, a.name)]
    inside = [a.port for a in backed if not a.external]
    outside = [a.port for a in backed if a.external]
    egress: list[dict[str, Any]] = []
    if inside:
        egress.append({"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/instance": plan.instance,
                                                                "app.kubernetes.io/component": "addon"}}}],
                       "ports": _tcp(inside)})
    if outside:
        egress.append({"to": _anywhere(), "ports": _tcp(outside)})
    egress.append({"ports": _tcp([443])})
    return _obj("NetworkPolicy", f"{plan.app}-backup", plan, _backup_labels(plan, f"{plan.app}-backup"), spec={
        "podSelector": {"matchLabels": {"app.kubernetes.io/instance": plan.instance,
                                        "app.kubernetes.io/component": "backup"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": egress,
    })


def _backup_cronjob(plan: Plan, b: BackupPlan) -> Obj:
    name = f"backup-{b.name}"
    meta = _backup_labels(plan, name)
    kind = {"pitr": "full", "full": "full", "logical": "logical"}[b.type]
    args = ["backup", "run", "--env", plan.environment, "--addon", b.addon, "--type", kind]
    for table in b.tables:
        args += ["--table", table]
    secret_volume = _secret_volume(plan, b.addon, (SecretMount(f"{b.addon}-password", "file",
                                                               f"{b.addon}-password", ""),))
    container = {
        "name": "backup",
        "image": SHIPMATE_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "env": [{"name": "SHIPMATE_SECRETS_DIR", "value": "/var/run/secrets/shipmate"},
                {"name": "SHIPMATE_BACKUP_STORE", "value": b.store}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "securityContext": container_security(),
        "volumeMounts": [{"name": "secrets", "mountPath": "/var/run/secrets/shipmate", "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - an emptyDir
    }
    pod = {
        "automountServiceAccountToken": False,
        "containers": [container],
        "enableServiceLinks": False,
        "restartPolicy": "OnFailure",
        "securityContext": pod_security(),
        "volumes": [secret_volume, {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}],
    }
    return _obj("CronJob", name, plan, meta, spec={
        "schedule": b.schedule,
        "concurrencyPolicy": "Forbid",
        "failedJobsHistoryLimit": 3,
        "successfulJobsHistoryLimit": 3,
        "jobTemplate": {"metadata": {"labels": dict(meta)}, "spec": {
            "backoffLimit": 2, "activeDeadlineSeconds": 6 * 3600,
            "template": {"metadata": {"labels": dict(meta)}, "spec": pod}}},
    })
