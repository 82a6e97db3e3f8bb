"""Every rendered object of every example and environment is valid Kubernetes, and hardened.

Schemas, by kind:
- built-in kinds: the Kubernetes OpenAPI schemas that ship in the `kubernetes-validate` package, in
  strict mode (unknown fields rejected), for Kubernetes 1.29 and for the newest version the package
  ships. `kubernetes_validate.validate` re-reads the 1.8 MB definitions file on every call, so the
  same schema files are loaded once here and given to the same validator (Draft 2020-12 with a
  `referencing` registry); `test_cached_validator_agrees_with_kubernetes_validate` holds the two
  to the same answers.
- ServiceMonitor, PrometheusRule (monitoring.coreos.com) and Application, AppProject (argoproj.io):
  the `openAPIV3Schema` of their published CRDs (vendored in `crds/`, see its README), translated to
  JSON Schema: `x-kubernetes-*` keys dropped after use (int-or-string becomes integer|string,
  list-type set becomes uniqueItems, preserve-unknown-fields leaves an object open), `nullable`
  honoured, and every other object closed to unknown fields, which is what the API server's
  strict field validation does. CEL rules (`x-kubernetes-validations`) are not evaluated.
- SecretProviderClass, ExternalSecret and HTTPRoute: no published schema is available to the tests,
  so these are STRUCTURAL checks written here from the projects' API references (the fields, their
  types, required keys and enums that shipmate uses or could use); they are not the CRDs.

Any other API group fails the test, so a new kind needs a schema here before it can be rendered.
The objects are checked as they come back from YAML (rendered, dumped and parsed again), which is
what `kubectl apply` reads.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

from shipmate.render.formats import builder
from shipmate.render.yamlio import dump_all
from shipmate.spec.values import cpu_millis, memory_bytes
from tests.support import example_envs, example_kit

Obj = dict[str, Any]

OLDEST = "1.29.0"
NEWEST = kv_utils.latest_version()
VERSIONS = (OLDEST, NEWEST)
CASES = example_envs()
CASE_IDS = [f"{example}-{env}" for example, env in CASES]

CRD_DIR = Path(__file__).parent / "crds"
CRD_FILES = {
    ("monitoring.coreos.com", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com", "PrometheusRule"): "prometheusrule.json",
    ("argoproj.io", "Application"): "application.json",
    ("argoproj.io", "AppProject"): "appproject.json",
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "CronJob", "Job"}
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet"}
SERVICE_UID = 10001
RECOMMENDED_LABELS = ("name", "instance", "version", "component", "part-of", "managed-by")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


# --- the objects under test ----------------------------------------------------------------

@cache
def rendered(example: str, env: str) -> tuple[Obj, ...]:
    """The objects of one environment as `kubectl apply` reads them: dumped to YAML and parsed back."""
    text = dump_all(example_kit(example).objects[env])
    return tuple(doc for doc in yaml.safe_load_all(text) if doc is not None)


def name_of(obj: Obj) -> str:
    namespace = obj["metadata"].get("namespace")
    return f"{obj['kind']} {namespace + '/' if namespace else ''}{obj['metadata']['name']}"


def group_of(obj: Obj) -> str:
    api_version: str = obj["apiVersion"]
    return api_version.rpartition("/")[0]


# --- Kubernetes OpenAPI schemas (kubernetes-validate's files, loaded once) -------------------

def _schema_dir(version: str) -> Any:
    return resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"


@cache
def _definitions(version: str) -> Resource[Any]:
    return Resource.from_contents(json.loads((_schema_dir(version) / "_definitions.json").read_text()))


@cache
def k8s_validator(version: str, api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    """The strict validator of one kind, named the way kubernetes-validate names its files."""
    short = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = _schema_dir(version) / f"{kind.lower()}-{short}.json"
    if not path.is_file():
        raise LookupError(f"Kubernetes {version} has no {kind} in {api_version}")
    schema = json.loads(path.read_text())
    registry: Registry[Any] = _definitions(version) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


# --- CRD schemas -> JSON Schema -------------------------------------------------------------

_SCHEMA_MAPS = ("properties", "patternProperties")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SCHEMA_ONE = ("items", "additionalProperties", "not")


def crd_to_jsonschema(node: Any) -> Any:
    """An OpenAPI v3 structural schema (as in a CRD) as a strict JSON Schema.

    Literal values (enum, default, example) are copied untouched; only sub-schemas are translated.
    """
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key in _SCHEMA_MAPS:
            out[key] = {name: crd_to_jsonschema(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS:
            out[key] = [crd_to_jsonschema(sub) for sub in value]
        elif key in _SCHEMA_ONE and isinstance(value, dict):
            out[key] = crd_to_jsonschema(value)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        if not any(k in out for k in _SCHEMA_LISTS):
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    open_object = node.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in node
    if "properties" in node and not open_object:
        out["additionalProperties"] = False
    return out


@cache
def crd_validator(group: str, version: str, kind: str) -> jsonschema.Draft4Validator:
    data = json.loads((CRD_DIR / CRD_FILES[(group, kind)]).read_text())
    if version not in data["versions"]:
        raise LookupError(f"the published {kind} CRD serves {', '.join(data['versions'])}, not {version}")
    return jsonschema.Draft4Validator(crd_to_jsonschema(data["versions"][version]))


# --- structural checks for kinds without a published schema here ---------------------------

def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


_STR = {"type": "string"}
_NONEMPTY = {"type": "string", "minLength": 1}
_DNS_NAME = {"type": "string", "minLength": 1, "maxLength": 253,
             "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_OPEN = {"type": "object"}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}


def _structural(spec: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_closed(
        {"apiVersion": _STR, "kind": _STR, "metadata": _OPEN, "spec": spec},
        ("apiVersion", "kind", "metadata", "spec")))


# secrets-store-csi-driver, secrets-store.csi.x-k8s.io/v1 SecretProviderClassSpec.
STRUCTURAL: dict[tuple[str, str], jsonschema.Draft202012Validator] = {
    ("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass"): _structural(_closed({
        "provider": _NONEMPTY,
        "parameters": _STR_MAP,
        "secretObjects": {"type": "array", "items": _closed({
            "secretName": _DNS_NAME,
            "type": _NONEMPTY,
            "labels": _STR_MAP,
            "annotations": _STR_MAP,
            "data": {"type": "array", "items": _closed({"objectName": _NONEMPTY, "key": _NONEMPTY},
                                                      ("objectName", "key"))},
        }, ("secretName", "type", "data"))},
    }, ("provider",))),
    # External Secrets Operator, external-secrets.io/v1 ExternalSecretSpec.
    ("external-secrets.io/v1", "ExternalSecret"): _structural(_closed({
        "secretStoreRef": _closed({"name": _DNS_NAME,
                                   "kind": {"enum": ["SecretStore", "ClusterSecretStore"]}}, ("name",)),
        "target": _closed({
            "name": _DNS_NAME,
            "creationPolicy": {"enum": ["Owner", "Orphan", "Merge", "None"]},
            "deletionPolicy": {"enum": ["Delete", "Merge", "Retain"]},
            "immutable": {"type": "boolean"},
            "template": _OPEN,
        }),
        "refreshInterval": {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$|^0$"},
        "refreshPolicy": {"enum": ["CreatedOnce", "Periodic", "OnChange"]},
        "data": {"type": "array", "items": _closed({
            "secretKey": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": r"^[-._a-zA-Z0-9]+$"},
            "remoteRef": _closed({
                "key": _NONEMPTY, "property": _STR, "version": _STR,
                "conversionStrategy": {"enum": ["Default", "Unicode"]},
                "decodingStrategy": {"enum": ["Auto", "Base64", "Base64URL", "None"]},
                "metadataPolicy": {"enum": ["None", "Fetch"]},
                "nullBytePolicy": {"enum": ["Ignore", "Fail"]},
            }, ("key",)),
            "sourceRef": _OPEN,
        }, ("secretKey", "remoteRef"))},
        "dataFrom": {"type": "array", "items": _OPEN},
    })),
    # Gateway API, gateway.networking.k8s.io/v1 HTTPRouteSpec (standard channel).
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): _structural(_closed({
        "parentRefs": {"type": "array", "maxItems": 32, "items": _closed({
            "group": _STR, "kind": _NONEMPTY, "namespace": _DNS_NAME, "name": _DNS_NAME,
            "sectionName": _DNS_NAME, "port": _PORT,
        }, ("name",))},
        "hostnames": {"type": "array", "maxItems": 16, "items": {
            "type": "string", "minLength": 1, "maxLength": 253,
            "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}},
        "rules": {"type": "array", "maxItems": 16, "items": _closed({
            "name": _DNS_NAME,
            "matches": {"type": "array", "maxItems": 64, "items": _closed({
                "path": _closed({"type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
                                 "value": {"type": "string", "maxLength": 1024, "pattern": "^/"}}),
                "headers": {"type": "array", "items": _OPEN},
                "queryParams": {"type": "array", "items": _OPEN},
                "method": {"enum": ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE",
                                    "PATCH"]},
            })},
            "filters": {"type": "array", "items": _OPEN},
            # A Service backend must name its port (a CEL rule of the CRD).
            "backendRefs": {"type": "array", "maxItems": 16, "items": _closed({
                "group": _STR, "kind": _NONEMPTY, "name": _DNS_NAME, "namespace": _DNS_NAME,
                "port": _PORT, "weight": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
                "filters": {"type": "array", "items": _OPEN},
            }, ("name", "port"))},
            "timeouts": _closed({"request": _STR, "backendRequest": _STR}),
            "retry": _OPEN,
            "sessionPersistence": _OPEN,
        })},
    }, ("parentRefs", "rules"))),
}


# --- one dispatcher ------------------------------------------------------------------------

def schema_problems(obj: Obj, version: str) -> list[str]:
    """Every way `obj` breaks its schema, as `Kind ns/name: path: message` lines."""
    group = group_of(obj)
    try:
        if (obj["apiVersion"], obj["kind"]) in STRUCTURAL:
            validator: Any = STRUCTURAL[(obj["apiVersion"], obj["kind"])]
            where = "structural check"
        elif (group, obj["kind"]) in CRD_FILES:
            validator = crd_validator(group, obj["apiVersion"].rpartition("/")[2], obj["kind"])
            where = "published CRD"
        elif "." not in group or group.endswith(".k8s.io"):
            validator = k8s_validator(version, obj["apiVersion"], obj["kind"])
            where = f"Kubernetes {version}"
        else:
            return [f"{name_of(obj)}: no schema known for {obj['apiVersion']} here; add one to this test"]
    except LookupError as exc:
        return [f"{name_of(obj)}: {exc}"]
    return [f"{name_of(obj)} ({where}): {error.json_path}: {error.message[:300]}"
            for error in validator.iter_errors(obj)]


def nulls(node: Any, path: str = "$") -> list[str]:
    """Paths of null values: the strict schemas allow them, but a rendered null is always a slip."""
    if node is None:
        return [path]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in nulls(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in nulls(v, f"{path}[{i}]")]
    return []


# --- schema tests ----------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("example", "env"), CASES, ids=CASE_IDS)
def test_every_object_matches_its_schema(example: str, env: str, version: str) -> None:
    objects = rendered(example, env)
    assert objects, f"{example}/{env} rendered nothing"
    problems = [p for obj in objects for p in schema_problems(obj, version)]
    assert problems == []


@pytest.mark.parametrize(("example", "env"), CASES, ids=CASE_IDS)
def test_objects_survive_yaml_and_hold_no_nulls_or_status(example: str, env: str) -> None:
    objects = rendered(example, env)
    assert list(objects) == example_kit(example).objects[env], "YAML round trip changed an object"
    assert [f"{name_of(o)}: {p}" for o in objects for p in nulls(o)] == []
    assert [name_of(o) for o in objects if "status" in o] == []
    identities = [(o["apiVersion"].rpartition("/")[0], o["kind"], o["metadata"].get("namespace"),
                   o["metadata"]["name"]) for o in objects]
    assert len(identities) == len(set(identities)), "two objects share kind, namespace and name"


@pytest.mark.parametrize("example", sorted({example for example, _ in CASES}))
def test_argocd_objects_match_their_crds(example: str) -> None:
    kit = example_kit(example)
    files = builder("argocd")(kit)
    objects = [doc for path, text in files.items() if path.endswith((".yaml", ".yml"))
               for doc in yaml.safe_load_all(text) if isinstance(doc, dict) and "kind" in doc]
    if any(kit.plans[env].gitops is not None for env in kit.kubernetes_environments):
        assert "Application" in {o["kind"] for o in objects}
    problems = [p for obj in objects for version in VERSIONS for p in schema_problems(obj, version)]
    assert problems == []


# --- the validators themselves: they must say no -------------------------------------------

def _first(kind: str) -> Obj:
    for example, env in CASES:
        for obj in rendered(example, env):
            if obj["kind"] == kind:
                return copy.deepcopy(obj)
    raise AssertionError(f"no example renders a {kind}")


def test_cached_validator_agrees_with_kubernetes_validate() -> None:
    good = _first("Deployment")
    bad = copy.deepcopy(good)
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsRoot"] = False
    for version in VERSIONS:
        assert kubernetes_validate.validate(good, version, strict=True)
        assert schema_problems(good, version) == []
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, version, strict=True)
        assert any("runAsRoot" in p for p in schema_problems(bad, version))


def test_strict_schemas_reject_unknown_fields_and_wrong_types() -> None:
    service = _first("Service")
    service["spec"]["ports"][0]["port"] = "80"
    service["spec"]["sessionAfinity"] = "None"
    problems = schema_problems(service, NEWEST)
    assert any("'80' is not of type 'integer'" in p for p in problems)
    assert any("sessionAfinity" in p for p in problems)
    hpa = _first("Deployment") | {"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler"}
    assert schema_problems(hpa, OLDEST) == [f"{name_of(hpa)}: Kubernetes {OLDEST} has no HorizontalPodAutoscaler "
                                            "in autoscaling/v2beta2"]


def test_crd_schemas_reject_unknown_fields_and_take_int_or_string() -> None:
    monitor = _first("ServiceMonitor")
    for port in ("http", 8080):
        monitor["spec"]["endpoints"][0]["targetPort"] = port
        monitor["spec"]["endpoints"][0].pop("port", None)
        assert schema_problems(monitor, NEWEST) == []
    monitor["spec"]["endpoints"][0]["targetPort"] = [8080]
    monitor["spec"]["endpoints"][0]["scrapeEvery"] = "30s"
    problems = schema_problems(monitor, NEWEST)
    assert any("targetPort" in p for p in problems)
    assert any("scrapeEvery" in p for p in problems)
    rule = _first("PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["expr"] = {"query": "up"}
    assert schema_problems(rule, NEWEST)


def test_structural_checks_say_no() -> None:
    route: Obj = {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "api"},
        "spec": {"parentRefs": [{"name": "public"}],
                 "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                            "backendRefs": [{"name": "api", "port": 8080}]}]},
    }
    assert schema_problems(route, NEWEST) == []
    del route["spec"]["rules"][0]["backendRefs"][0]["port"]
    route["spec"]["rules"][0]["matches"][0]["path"]["type"] = "Prefix"
    assert len(schema_problems(route, NEWEST)) == 2
    external: Obj = {
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": {"name": "api"},
        "spec": {"secretStoreRef": {"kind": "ClusterSecretStore", "name": "vault"},
                 "target": {"name": "api-secrets", "creationPolicy": "Owner"},
                 "data": [{"secretKey": "jwt", "remoteRef": {"key": "app/jwt"}}]},
    }
    assert schema_problems(external, NEWEST) == []
    external["spec"]["data"][0]["remoteRef"] = {"path": "app/jwt"}
    assert len(schema_problems(external, NEWEST)) == 2
    spc: Obj = {"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
                "metadata": {"name": "api"}, "spec": {"provider": "vault", "parameters": {"roleName": 7}}}
    assert len(schema_problems(spc, NEWEST)) == 1
    unknown: Obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert "no schema known" in schema_problems(unknown, NEWEST)[0]


# --- hardening -----------------------------------------------------------------------------

def pod_template(obj: Obj) -> Obj:
    if obj["kind"] == "CronJob":
        template: Obj = obj["spec"]["jobTemplate"]["spec"]["template"]
    else:
        template = obj["spec"]["template"]
    return template


def containers(obj: Obj) -> list[Obj]:
    spec = pod_template(obj)["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def workloads(example: str, env: str) -> list[Obj]:
    return [o for o in rendered(example, env) if o["kind"] in WORKLOAD_KINDS]


def security(obj: Obj, container: Obj, key: str) -> Any:
    """A container's effective security setting: its own, else the pod's."""
    own = container.get("securityContext", {})
    if key in own:
        return own[key]
    return pod_template(obj)["spec"].get("securityContext", {}).get(key)


@pytest.mark.parametrize(("example", "env"), CASES, ids=CASE_IDS)
def test_every_container_runs_hardened(example: str, env: str) -> None:
    problems: list[str] = []
    for obj in workloads(example, env):
        pod = pod_template(obj)["spec"]
        component = obj["metadata"]["labels"].get("app.kubernetes.io/component")
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(field):
                problems.append(f"{name_of(obj)}: {field}")
        if any("hostPath" in v for v in pod.get("volumes", [])):
            problems.append(f"{name_of(obj)}: hostPath volume")
        if pod.get("automountServiceAccountToken") is not False and "serviceAccountName" not in pod:
            problems.append(f"{name_of(obj)}: mounts the default service account token")
        for c in containers(obj):
            where = f"{name_of(obj)} container {c['name']}"
            sc = c.get("securityContext", {})
            uid = security(obj, c, "runAsUser")
            checks = {
                "runAsNonRoot": security(obj, c, "runAsNonRoot") is True,
                "runAsUser is not root": isinstance(uid, int) and uid > 0,
                "readOnlyRootFilesystem": sc.get("readOnlyRootFilesystem") is True,
                "allowPrivilegeEscalation false": sc.get("allowPrivilegeEscalation") is False,
                "not privileged": sc.get("privileged") is not True,
                "capabilities drop ALL": sc.get("capabilities", {}).get("drop") == ["ALL"],
                "no added capabilities": not sc.get("capabilities", {}).get("add"),
                "seccomp RuntimeDefault": (security(obj, c, "seccompProfile") or {}).get("type") == "RuntimeDefault",
            }
            if component == "service":
                checks[f"uid {SERVICE_UID}"] = uid == SERVICE_UID
            problems += [f"{where}: not {check}" for check, ok in checks.items() if not ok]
    assert problems == []


@pytest.mark.parametrize(("example", "env"), CASES, ids=CASE_IDS)
def test_every_container_has_probes_requests_and_limits(example: str, env: str) -> None:
    problems: list[str] = []
    for obj in workloads(example, env):
        for c in containers(obj):
            where = f"{name_of(obj)} container {c['name']}"
            # Jobs run to completion; a liveness or readiness probe means nothing for them.
            if obj["kind"] in LONG_RUNNING:
                problems += [f"{where}: no {p}" for p in ("livenessProbe", "readinessProbe") if p not in c]
            resources_ = c.get("resources", {})
            for part in ("requests", "limits"):
                problems += [f"{where}: no {part}.{r}" for r in ("cpu", "memory")
                             if r not in resources_.get(part, {})]
            requests, limits = resources_.get("requests", {}), resources_.get("limits", {})
            if "cpu" in requests and "cpu" in limits and cpu_millis(requests["cpu"]) > cpu_millis(limits["cpu"]):
                problems.append(f"{where}: requests.cpu above limits.cpu")
            if ("memory" in requests and "memory" in limits
                    and memory_bytes(requests["memory"]) > memory_bytes(limits["memory"])):
                problems.append(f"{where}: requests.memory above limits.memory")
    assert problems == []


# Names whose value is a secret; a name ending in _FILE, _DIR or _PATH holds where a secret is.
SECRET_NAME = re.compile(
    r"(^|[_.-])(PASSWORD|PASSWD|PASSPHRASE|SECRET|SECRET_KEY|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY"
    r"|CLIENT_SECRET|CREDENTIALS?|DSN)$", re.IGNORECASE)
SECRET_VALUE = (
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"),
    re.compile(r"(?i)\b(password|passwd|secret|api[_-]?key|token)\b\s*[:=]\s*['\"]?[^\s'\"$<{]{4,}"),
)


def looks_secret(name: str, value: str) -> bool:
    if SECRET_NAME.search(name) and value and not value.startswith("/"):
        return True
    return any(p.search(value) for p in SECRET_VALUE)


def test_secret_detector_catches_what_it_must_and_spares_the_rest() -> None:
    assert looks_secret("DB_PASSWORD", "hunter22")
    assert looks_secret("GITHUB_TOKEN", "x")
    assert looks_secret("DATABASE_URL", "postgres://app:s3cret@db:5432/app")
    assert looks_secret("config.yaml", "db:\n  password: s3cret\n")
    assert looks_secret("LOG", "-----BEGIN RSA PRIVATE KEY-----")
    assert not looks_secret("POSTGRES_PASSWORD_FILE", "/var/run/secrets/shipmate/postgres-password")
    assert not looks_secret("SHIPMATE_SECRETS_DIR", "/var/run/secrets/shipmate")
    assert not looks_secret("MAX_TOKENS", "4096")
    assert not looks_secret("DATABASE_URL", "postgres://db:5432/app")


@pytest.mark.parametrize(("example", "env"), CASES, ids=CASE_IDS)
def test_no_secret_in_env_or_configmap(example: str, env: str) -> None:
    problems: list[str] = []
    for obj in rendered(example, env):
        if obj["kind"] in WORKLOAD_KINDS:
            for c in containers(obj):
                problems += [f"{name_of(obj)} container {c['name']}: env {e['name']} has a literal secret"
                             for e in c.get("env", []) if "value" in e and looks_secret(e["name"], str(e["value"]))]
        if obj["kind"] == "ConfigMap":
            problems += [f"{name_of(obj)}: key {key} looks like a secret"
                         for key, value in obj.get("data", {}).items() if looks_secret(key, str(value))]
        if obj["kind"] == "Secret":
            problems += [f"{name_of(obj)}: holds {field}" for field in ("data", "stringData") if obj.get(field)]
    assert problems == []


@pytest.mark.parametrize(("example", "env"), CASES, ids=CASE_IDS)
def test_recommended_labels_on_every_object(example: str, env: str) -> None:
    problems: list[str] = []
    for obj in rendered(example, env):
        carriers = [("", obj["metadata"])]
        if obj["kind"] in WORKLOAD_KINDS:
            carriers.append((" pod template", pod_template(obj)["metadata"]))
        for where, metadata in carriers:
            labels = metadata.get("labels", {})
            for label in RECOMMENDED_LABELS:
                value = labels.get(f"app.kubernetes.io/{label}")
                if not value:
                    problems.append(f"{name_of(obj)}{where}: no app.kubernetes.io/{label}")
            problems += [f"{name_of(obj)}{where}: label {k}={v!r} is not a valid label value"
                         for k, v in labels.items() if not (isinstance(v, str) and len(v) <= 63
                                                            and LABEL_VALUE.match(v))]
        if obj["metadata"]["labels"].get("app.kubernetes.io/managed-by") != "shipmate":
            problems.append(f"{name_of(obj)}: not managed-by shipmate")
    assert problems == []


def _selects(selector: Obj, labels: dict[str, str]) -> bool:
    match = selector.get("matchLabels", {})
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


@pytest.mark.parametrize(("example", "env"), CASES, ids=CASE_IDS)
def test_every_replicated_workload_has_a_disruption_budget(example: str, env: str) -> None:
    objects = rendered(example, env)
    hpa_min = {(o["metadata"]["namespace"], o["spec"]["scaleTargetRef"]["kind"], o["spec"]["scaleTargetRef"]["name"]):
               o["spec"]["minReplicas"] for o in objects if o["kind"] == "HorizontalPodAutoscaler"}
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    problems: list[str] = []
    for obj in objects:
        if obj["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        namespace = obj["metadata"]["namespace"]
        replicas = hpa_min.get((namespace, obj["kind"], obj["metadata"]["name"]), obj["spec"].get("replicas", 1))
        if replicas <= 1:
            continue
        pod_labels = pod_template(obj)["metadata"]["labels"]
        matching = [b for b in budgets if b["metadata"]["namespace"] == namespace
                    and _selects(b["spec"]["selector"], pod_labels)]
        if len(matching) != 1:
            problems.append(f"{name_of(obj)} ({replicas} replicas): {len(matching)} PodDisruptionBudgets select it")
            continue
        spec = matching[0]["spec"]
        # A budget that never allows an eviction blocks node drains; one that allows all protects nothing.
        if "maxUnavailable" in spec:
            allowed = spec["maxUnavailable"]
            if not (isinstance(allowed, int) and 1 <= allowed < replicas):
                problems.append(f"{name_of(obj)}: PDB maxUnavailable {allowed} with {replicas} replicas")
        elif not (isinstance(spec.get("minAvailable"), int) and 1 <= spec["minAvailable"] < replicas):
            problems.append(f"{name_of(obj)}: PDB minAvailable {spec.get('minAvailable')} with {replicas} replicas")
    assert problems == []


@pytest.mark.parametrize(("example", "env"), CASES, ids=CASE_IDS)
def test_default_deny_network_policy_in_every_namespace(example: str, env: str) -> None:
    objects = rendered(example, env)
    namespaces = {o["metadata"]["namespace"] for o in objects if "namespace" in o["metadata"]}
    namespaces |= {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    assert namespaces
    denied = {o["metadata"]["namespace"] for o in objects
              if o["kind"] == "NetworkPolicy"
              and not o["spec"]["podSelector"].get("matchLabels") and not o["spec"]["podSelector"].get(
                  "matchExpressions")
              and {"Ingress", "Egress"} <= set(o["spec"].get("policyTypes", []))
              and not o["spec"].get("ingress") and not o["spec"].get("egress")}
    assert sorted(namespaces - denied) == []
    selected = [o for o in objects if o["kind"] in LONG_RUNNING]
    policies = [o for o in objects if o["kind"] == "NetworkPolicy" and o["spec"]["podSelector"].get("matchLabels")]
    unselected = [name_of(w) for w in selected
                  if not any(p["metadata"]["namespace"] == w["metadata"]["namespace"]
                             and _selects(p["spec"]["podSelector"], pod_template(w)["metadata"]["labels"])
                             for p in policies)]
    assert unselected == [], "a workload with no policy of its own gets no traffic at all under default-deny"
