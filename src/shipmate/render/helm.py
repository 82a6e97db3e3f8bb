"""The `helm` format: a templated Helm chart with one values file per environment.

Called through `shipmate.render.formats` by `shipmate render --format helm`. Returns the chart's
files as text; pure: no I/O, no Helm binary, nothing read from the store.

The chart is `<app>/`:

- `templates/` hold the Kubernetes shape (see `shipmate.render.helm_templates`); they `range` over
  the services, addons and backups in the values and must give exactly the objects of
  `shipmate.render.objects` (the integration test renders them with the real Helm engine and
  compares object by object).
- `values.yaml` holds one whole environment, structured like the Plan: the first Kubernetes
  environment (else the first one). `values-<env>.yaml` is the smallest overlay over it that gives
  `<env>`: maps merge, lists and scalars replace, and `null` deletes a key, as Helm merges values.
  So `helm install <app> ./<app> -f values-<env>.yaml` deploys that environment.
- `values.schema.json` types every key; it accepts `values.yaml`, every overlay (where `null`
  marks a deletion) and every merged environment.

The alert rules and the dashboard are built by the templates from the services and the alert
settings in the values, as `shipmate.render.monitoring` builds them; only the thresholds and SLOs
are values, so an overlay does not repeat every PromQL expression with another namespace in it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from shipmate.plan.models import AddonPlan, Plan, ProbePlan, ResourcesPlan, Workload
from shipmate.render.helm_templates import TEMPLATES
from shipmate.render.kit import Kit
from shipmate.render.objects import RUN_AS, SHIPMATE_IMAGE, SINGLE_ADDON_REASON
from shipmate.render.yamlio import dump

Values = dict[str, Any]

HEADER = "# Rendered by shipmate from shipmate.yaml; do not edit.\n"


# --- entry point --------------------------------------------------------------------------

def files(kit: Kit) -> dict[str, str]:
    """The chart's files, by path relative to the output directory."""
    base_env = (kit.kubernetes_environments or kit.environments)[0]
    per_env = {env: values(kit.plans[env]) for env in kit.environments}
    base = per_env[base_env]
    plan = kit.plans[base_env]
    root = kit.app
    out: dict[str, str] = {
        f"{root}/Chart.yaml": HEADER + dump(chart_metadata(plan)),
        f"{root}/values.yaml": (HEADER + f"# The values of environment {base_env!r}; "
                                f"values-<env>.yaml turns them into another environment.\n"
                                + dump(base)),
        f"{root}/values.schema.json": json.dumps(schema(), indent=2, sort_keys=True) + "\n",
    }
    for env in kit.environments:
        delta = overlay(base, per_env[env])
        out[f"{root}/values-{env}.yaml"] = (
            HEADER + f"# helm install {kit.app} ./{kit.app} -f values-{env}.yaml\n"
            f"# Only what differs from values.yaml ({base_env}); null deletes a key.\n"
            + (dump(delta) if delta else "{}\n"))
    for name, text in TEMPLATES.items():
        out[f"{root}/templates/{name}"] = text
    return dict(sorted(out.items()))


def chart_metadata(plan: Plan) -> Values:
    """Chart.yaml: the chart is versioned with the application."""
    meta: Values = {
        "apiVersion": "v2",
        "name": plan.app,
        "description": f"{plan.app}, rendered by shipmate: one values file per environment",
        "type": "application",
        "version": semver(plan.app_version),
        "appVersion": plan.app_version,
    }
    if plan.repo:
        meta["home"] = plan.repo
    return meta


_SEMVER = re.compile(r"^v?(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?"
                     r"(-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$")


def semver(version: str) -> str:
    """A chart version (strict SemVer 2) for an application version: `1.2` -> `1.2.0`,
    `v3` -> `3.0.0`, anything else -> `0.0.0+<version, cleaned>`."""
    m = _SEMVER.match(version)
    if m:
        major, minor, patch, pre, build = m.groups()
        return f"{major}.{minor or 0}.{patch or 0}{pre or ''}{build or ''}"
    cleaned = ".".join(p for p in re.sub(r"[^0-9A-Za-z-]+", ".", version).split(".") if p)
    return f"0.0.0+{cleaned or 'unknown'}"


# --- values -------------------------------------------------------------------------------

def values(plan: Plan) -> Values:
    """The values of one environment: the Plan's data, none of the Kubernetes shape."""
    default_key = f"{plan.app}/{plan.environment}/"
    remote = {s.name: _drop_none({"key": s.remote_key, "property": s.remote_property})
              for s in plan.secrets
              if s.remote_key != default_key + s.name or s.remote_property is not None}
    image, _, tag = SHIPMATE_IMAGE.rpartition(":")
    alerts = plan.alerts
    out: Values = _drop_none({
        "app": {"name": plan.app, "version": plan.app_version},
        "environment": plan.environment,
        "namespace": plan.namespace,
        "revisionHistoryLimit": plan.history,
        "progressDeadlineSeconds": int(plan.strategy.progress_deadline_seconds),
        "runAsUser": RUN_AS,
        "singleAddonReason": SINGLE_ADDON_REASON,
        "secrets": {"delivery": plan.secrets_delivery, "store": plan.secret_store, "remote": remote},
        "ingress": {"kind": plan.ingress_kind, "className": plan.ingress_class, "gateway": plan.gateway,
                    "namespace": plan.ingress_namespace, "tlsSecret": plan.tls_secret},
        "monitoring": {
            "namespace": plan.monitoring_namespace,
            "alerts": {"errorRate": alerts.error_rate, "latencyP99Seconds": alerts.latency_p99_seconds,
                       "serviceDownFor": alerts.service_down_for,
                       "queueBacklog": None if not alerts.queue_backlog_metric or not alerts.queue_backlog_threshold
                       else {"metric": alerts.queue_backlog_metric, "threshold": alerts.queue_backlog_threshold}},
            "slos": {s.name: {"service": s.service, "objective": s.objective} for s in plan.slos},
        },
        "services": {w.name: _service(w) for w in plan.workloads},
        "addons": {a.name: _addon(a) for a in plan.addons},
        "backups": {b.name: {"addon": b.addon, "type": b.type, "schedule": b.schedule,
                             "tables": list(b.tables), "store": b.store} for b in plan.backups},
        "backupImage": {"repository": image, "tag": tag},
    })
    return out


def _service(w: Workload) -> Values:
    return {
        "kind": w.kind,
        "image": _drop_none({"repository": w.image, "tag": w.tag, "digest": w.digest}),
        "replicas": w.replicas,
        "ports": [{"name": p.name, "port": p.port} for p in w.ports],
        "probes": {k: _probe(p) for k, p in (("liveness", w.liveness), ("readiness", w.readiness),
                                                ("startup", w.startup)) if p is not None},
        "resources": _resources(w.resources),
        "autoscaling": None if w.autoscaling is None else {
            "minReplicas": w.autoscaling.min_replicas, "maxReplicas": w.autoscaling.max_replicas,
            "cpu": w.autoscaling.cpu, "memory": w.autoscaling.memory},
        "config": dict(w.config),
        "configFiles": dict(w.config_files),
        "secrets": [{"secret": s.secret, "delivery": s.delivery, "file": s.file, "env": s.env}
                    for s in w.secrets],
        "secretsDir": w.secrets_dir,
        "egress": [{"name": p.name, "ports": sorted(set(p.ports)), "external": p.external} for p in w.egress],
        "ingressFrom": [{"name": p.name, "ports": sorted(set(p.ports))} for p in w.ingress_from],
        "expose": None if w.expose is None else {
            "host": w.expose.host, "path": w.expose.path, "port": w.expose.port, "tls": w.expose.tls,
            "websocket": w.expose.websocket},
        "update": {"maxSurge": w.max_surge, "maxUnavailable": w.max_unavailable},
        "serviceAccount": {"create": w.service_account, "automountToken": w.automount_token},
        "metrics": None if w.metrics_port is None else {"port": w.metrics_port, "path": w.metrics_path},
        "storage": w.storage,
        "terminationGracePeriodSeconds": w.termination_grace_seconds,
        "command": list(w.command),
        "args": list(w.args),
    }


def _probe(p: ProbePlan) -> Values:
    out: Values = {"check": p.check, "initialDelaySeconds": p.initial_delay_seconds,
                   "periodSeconds": p.period_seconds, "timeoutSeconds": p.timeout_seconds,
                   "failureThreshold": p.failure_threshold, "successThreshold": p.success_threshold}
    if p.check == "http":
        out |= {"path": p.path, "port": p.port}
    elif p.check == "tcp":
        out["port"] = p.port
    else:
        out["command"] = list(p.command)
    return out


def _resources(r: ResourcesPlan) -> Values:
    return {"requests": {"cpu": r.requests_cpu, "memory": r.requests_memory},
            "limits": {"cpu": r.limits_cpu, "memory": r.limits_memory}}


def _addon(a: AddonPlan) -> Values:
    return {
        "kind": a.kind,
        "image": a.image,
        "port": a.port,
        "storage": a.storage,
        "databases": list(a.databases),
        "external": a.external,
        "resources": _resources(a.resources),
        "runAsUser": a.run_as_user,
        "config": dict(a.config),
        "users": list(a.users),
        "writable": list(a.writable),
    }


def _drop_none(value: Any) -> Any:
    """Values without the keys whose value is None (absent, for Helm, is the same and keeps
    overlays free of meaningless nulls)."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def overlay(base: Values, target: Values) -> Values:
    """The smallest values file that Helm merges over `base` to give `target`."""
    out: Values = {}
    for key in sorted(set(base) | set(target)):
        if key not in target:
            out[key] = None
        elif key not in base:
            out[key] = target[key]
        elif isinstance(base[key], dict) and isinstance(target[key], dict):
            inner = overlay(base[key], target[key])
            if inner:
                out[key] = inner
        elif type(base[key]) is not type(target[key]) or base[key] != target[key]:
            out[key] = target[key]
    return out


# --- schema -------------------------------------------------------------------------------

def _t(kind: str | list[str], **more: Any) -> Values:
    return {"type": kind, **more}


def _opt(inner: Values) -> Values:
    """A key an overlay may delete with null."""
    return {"anyOf": [inner, {"type": "null"}]}


def _obj(properties: dict[str, Values], extra: Values | None = None) -> Values:
    """An object of known keys, each of which an overlay may set to null (delete)."""
    out: Values = {"type": "object", "properties": {k: _opt(v) for k, v in properties.items()}}
    out["additionalProperties"] = False if extra is None else _opt(extra)
    return out


def _map(item: Values) -> Values:
    return {"type": "object", "additionalProperties": _opt(item)}


STR = _t("string")
INT = _t("integer", minimum=0)
PORT = _t("integer", minimum=0, maximum=65535)
BOOL = _t("boolean")
STRS = _t("array", items=STR)
PORTS = _t("array", items=PORT)
INT_OR_PERCENT = {"anyOf": [INT, _t("string", pattern=r"^[0-9]+%$")]}
QUANTITY = _t(["string", "number"])
NAME = _t("string", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", maxLength=63)


def schema() -> Values:
    """JSON Schema (draft 7) of values.yaml and of every overlay."""
    resources = _obj({s: _obj({"cpu": QUANTITY, "memory": QUANTITY}) for s in ("requests", "limits")})
    probe = _obj({"check": _t("string", enum=["http", "tcp", "exec"]), "path": STR, "port": PORT,
                  "command": STRS, "initialDelaySeconds": INT, "periodSeconds": INT, "timeoutSeconds": INT,
                  "failureThreshold": INT, "successThreshold": INT})
    peer = _obj({"name": NAME, "ports": PORTS, "external": BOOL})
    service = _obj({
        "kind": _t("string", enum=["Deployment", "StatefulSet", "DaemonSet"]),
        "image": _obj({"repository": STR, "tag": STR, "digest": STR}),
        "replicas": INT,
        "ports": _t("array", items=_obj({"name": STR, "port": PORT})),
        "probes": _obj({"liveness": probe, "readiness": probe, "startup": probe}),
        "resources": resources,
        "autoscaling": _obj({"minReplicas": INT, "maxReplicas": INT, "cpu": INT, "memory": INT}),
        "config": _map(STR),
        "configFiles": _map(STR),
        "secrets": _t("array", items=_obj({"secret": STR, "delivery": _t("string", enum=["file", "env"]),
                                           "file": STR, "env": STR})),
        "secretsDir": STR,
        "egress": _t("array", items=peer),
        "ingressFrom": _t("array", items=peer),
        "expose": _obj({"host": STR, "path": STR, "port": PORT, "tls": BOOL, "websocket": BOOL}),
        "update": _obj({"maxSurge": INT_OR_PERCENT, "maxUnavailable": INT_OR_PERCENT}),
        "serviceAccount": _obj({"create": BOOL, "automountToken": BOOL}),
        "metrics": _obj({"port": PORT, "path": STR}),
        "storage": STR,
        "terminationGracePeriodSeconds": INT,
        "command": STRS,
        "args": STRS,
    })
    addon = _obj({
        "kind": _t("string", enum=["postgres", "mysql", "redis", "nats", "rabbitmq", "generic"]),
        "image": STR, "port": PORT, "storage": STR, "databases": STRS, "external": BOOL,
        "resources": resources, "runAsUser": INT, "config": _map(STR), "users": _t("array", items=NAME),
        "writable": STRS,
    })
    backup = _obj({"addon": NAME, "type": _t("string", enum=["pitr", "full", "logical"]), "schedule": STR,
                   "tables": STRS, "store": STR})
    top = _obj({
        "app": _obj({"name": NAME, "version": STR}),
        "environment": NAME,
        "namespace": NAME,
        "revisionHistoryLimit": INT,
        "progressDeadlineSeconds": INT,
        "runAsUser": INT,
        "singleAddonReason": STR,
        "secrets": _obj({"delivery": _t("string", enum=["csi", "external-secrets", "secret"]),
                         "store": STR, "remote": _map(_obj({"key": STR, "property": STR}))}),
        "ingress": _obj({"kind": _t("string", enum=["ingress", "gateway"]), "className": STR,
                         "gateway": STR, "namespace": NAME, "tlsSecret": STR}),
        "monitoring": _obj({
            "namespace": NAME,
            "alerts": _obj({"errorRate": _t("number", exclusiveMinimum=0, exclusiveMaximum=1),
                            "latencyP99Seconds": _t("number", exclusiveMinimum=0), "serviceDownFor": STR,
                            "queueBacklog": _obj({"metric": STR, "threshold": _t("integer", minimum=1)})}),
            "slos": _map(_obj({"service": NAME, "objective": _t("number", exclusiveMinimum=0,
                                                                 exclusiveMaximum=100)})),
        }),
        "services": _map(service),
        "addons": _map(addon),
        "backups": _map(backup),
        "backupImage": _obj({"repository": STR, "tag": STR}),
    })
    return {"$schema": "http://json-schema.org/draft-07/schema#",
            "title": "shipmate chart values", **top}
