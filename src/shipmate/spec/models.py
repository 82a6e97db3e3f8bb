"""The typed shape of `shipmate.yaml` (pydantic v2 models).

Keys in the file are camelCase (as in Kubernetes); attributes are snake_case. Every model
forbids unknown keys and says which known key was probably meant. Cross-references (a service
using an addon, a secret from an addon, an environment naming a strategy) are checked in
`AppSpec`'s validator, so a loaded spec is whole.

Called by `shipmate.spec.loader` (which turns validation errors into file:line:col messages),
by `shipmate.plan` and by the JSON Schema export. Pure: no I/O.
"""

from __future__ import annotations

import difflib
import posixpath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from shipmate.spec import values

# --- value types --------------------------------------------------------------------------

Name = Annotated[str, AfterValidator(lambda v: values.check_dns_label(v))]
ObjectName = Annotated[str, AfterValidator(lambda v: values.check_dns_label(v, start_letter=True))]
PortName = Annotated[str, AfterValidator(values.check_port_name)]
INT32 = 2_147_483_647
# json_schema_input_type: the JSON Schema admits what the validator admits (numbers too).
Duration = Annotated[str, BeforeValidator(lambda v: _duration(v), json_schema_input_type=str | int | float)]
Cpu = Annotated[str, BeforeValidator(lambda v: values.check_cpu(v), json_schema_input_type=str | int | float)]
Memory = Annotated[str, BeforeValidator(lambda v: values.check_memory(v), json_schema_input_type=str | int)]
IntOrPercent = Annotated[int | str, AfterValidator(values.check_int_or_percent)]
Cron = Annotated[str, AfterValidator(values.check_cron)]
Image = Annotated[str, AfterValidator(values.check_image)]
EnvName = Annotated[str, AfterValidator(values.check_env_name)]
ConfigValue = str | int | float | bool
Port = Annotated[int, Field(ge=1, le=65535)]


def _duration(value: object) -> str:
    if not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration such as 30s, 5m or 1h (got {value!r})")
    values.parse_duration(value)
    return str(value) if isinstance(value, str) else values.format_duration(float(value))


class Model(BaseModel):
    """Base of every spec model: camelCase keys, unknown keys refused with a suggestion."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="forbid",
        str_strip_whitespace=False,
    )

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        known = {f.alias or n for n, f in cls.model_fields.items()}
        names = set(cls.model_fields)
        for key in data:
            if key in known or key in names:
                continue
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
            raise PydanticCustomError(
                "unknown_key", "{message}", {"key": str(key), "message": f"unknown key {str(key)!r}{hint}"}
            )
        return data


# --- services -----------------------------------------------------------------------------

class PortSpec(Model):
    """A port a service listens on."""

    name: PortName = "http"
    port: Port
    protocol: Literal["http", "grpc", "tcp", "websocket"] = "http"


class HttpCheck(Model):
    path: str = Field(pattern=r"^/")
    port: str | int | None = None


class Probe(Model):
    """One probe: exactly one of http, tcp or exec, with Kubernetes' timings."""

    http: HttpCheck | None = None
    tcp: str | int | None = None
    exec: list[str] | None = None
    initial_delay_seconds: int = Field(default=0, ge=0)
    period_seconds: int = Field(default=10, ge=1)
    timeout_seconds: int = Field(default=2, ge=1)
    failure_threshold: int = Field(default=3, ge=1)
    success_threshold: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _one_check(self) -> Probe:
        given = [k for k in ("http", "tcp", "exec") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a probe needs exactly one of http, tcp or exec (got {given or 'none'})")
        if self.exec is not None and not self.exec:
            raise ValueError("exec needs a command, e.g. ['cat', '/tmp/healthy']")
        return self


class Probes(Model):
    liveness: Probe | None = None
    readiness: Probe | None = None
    startup: Probe | None = None


class ResourceAmounts(Model):
    cpu: Cpu | None = None
    memory: Memory | None = None


class Resources(Model):
    requests: ResourceAmounts = ResourceAmounts(cpu="100m", memory="128Mi")
    limits: ResourceAmounts = ResourceAmounts(cpu="500m", memory="512Mi")

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        r, lim = self.requests, self.limits
        if r.cpu and lim.cpu and values.cpu_millis(r.cpu) > values.cpu_millis(lim.cpu):
            raise ValueError(f"requests.cpu {r.cpu} is more than limits.cpu {lim.cpu}")
        if r.memory and lim.memory and values.memory_bytes(r.memory) > values.memory_bytes(lim.memory):
            raise ValueError(f"requests.memory {r.memory} is more than limits.memory {lim.memory}")
        return self


class Autoscaling(Model):
    enabled: bool = True
    min_replicas: int = Field(default=2, ge=1, le=INT32)
    max_replicas: int = Field(default=10, ge=1, le=INT32)
    cpu: int | None = Field(default=75, ge=1, le=100, description="target CPU utilisation, percent")
    memory: int | None = Field(default=None, ge=1, le=100, description="target memory utilisation, percent")

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas {self.min_replicas} is more than maxReplicas {self.max_replicas}")
        if self.enabled and self.cpu is None and self.memory is None:
            raise ValueError("autoscaling needs a cpu or memory target")
        return self


class SecretUse(Model):
    """How a service receives one declared secret: as a file (default) or an env var."""

    secret: Name
    delivery: Literal["file", "env"] = "file"
    env: EnvName | None = Field(default=None, description="variable name for env delivery")
    file: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$",
                             description="file name in the secrets directory; default the secret's name")

    @model_validator(mode="after")
    def _fields_match_delivery(self) -> SecretUse:
        if self.delivery == "file" and self.env is not None:
            raise ValueError("env is only for delivery: env; use file for a file name")
        if self.delivery == "env" and self.file is not None:
            raise ValueError("file is only for delivery: file")
        return self


def _secret_use(value: object) -> object:
    return {"secret": value} if isinstance(value, str) else value


class Exposure(Model):
    host: str | None = None
    path: str = Field(default="/", pattern=r"^/")
    port: str | None = None
    tls: bool = True
    websocket: bool = False


class RollingUpdate(Model):
    max_surge: IntOrPercent = "25%"
    max_unavailable: IntOrPercent = 0


class ServiceAccount(Model):
    create: bool = False
    automount_token: bool = False


class Metrics(Model):
    port: str | int | None = None
    path: str = Field(default="/metrics", pattern=r"^/")


class Service(Model):
    """One service of the application."""

    image: Image | None = Field(default=None, description="image repository; default <registry>/<name>")
    version: str | None = Field(default=None, description="image tag; default app.version")
    run: str | list[str] | None = Field(default=None, description="command on the local target")
    workdir: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    kind: Literal["Deployment", "StatefulSet", "DaemonSet"] = "Deployment"
    replicas: int = Field(default=1, ge=0, le=INT32)
    ports: list[PortSpec] = Field(default_factory=list)
    probes: Probes = Probes()
    resources: Resources = Resources()
    autoscaling: Autoscaling | None = None
    config: dict[EnvName, ConfigValue] = Field(default_factory=dict)
    config_files: dict[str, str] = Field(default_factory=dict, description="mount path -> content")
    secrets: list[Annotated[SecretUse, BeforeValidator(_secret_use, json_schema_input_type=str | SecretUse)]] = Field(
        default_factory=list, description="secret names, or {secret, delivery, env, file}")
    uses: list[Name] = Field(default_factory=list, description="addons this service connects to")
    calls: list[Name] = Field(default_factory=list, description="other services this one calls")
    expose: Exposure | None = None
    update: RollingUpdate = RollingUpdate()
    service_account: ServiceAccount = ServiceAccount()
    metrics: Metrics | None = Metrics()
    storage: Memory | None = Field(default=None, description="volume size for a StatefulSet")
    secrets_dir: str = Field(default="/var/run/secrets/shipmate", pattern=r"^/")
    termination_grace_seconds: int = Field(default=30, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Service:
        names = [p.name for p in self.ports]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise _within(("ports", i, "name"), f"port name {name!r} is used twice")
        numbers = [p.port for p in self.ports]
        for i, number in enumerate(numbers):
            if number in numbers[:i]:
                raise _within(("ports", i, "port"), f"port {number} is listed twice")
        seen: set[str] = set()
        for i, use in enumerate(self.secrets):
            if use.secret in seen:
                raise _within(("secrets", i), f"secret {use.secret!r} is listed twice")
            seen.add(use.secret)
        if not self.ports and (self.probes.liveness is None or self.probes.readiness is None):
            raise ValueError("a service without ports needs probes.liveness and probes.readiness "
                             "(e.g. exec: [cat, /tmp/healthy])")
        refs: list[tuple[tuple[str, ...], str | int | None]] = []
        for kind in ("liveness", "readiness", "startup"):
            probe = getattr(self.probes, kind)
            if probe is not None and probe.http is not None:
                refs.append((("probes", kind, "http", "port"), probe.http.port))
            if probe is not None and probe.tcp is not None:
                refs.append((("probes", kind, "tcp"), probe.tcp))
        if self.expose is not None:
            refs.append((("expose", "port"), self.expose.port))
        if self.metrics is not None and self.ports:
            refs.append((("metrics", "port"), self.metrics.port))
        for where, ref in refs:
            if ref is None and not self.ports and where[0] != "metrics":
                raise _within(where[:-1] if where[-1] == "port" else where,
                              "no port given and the service declares none")
            if isinstance(ref, str) and not ref.isdigit() and ref not in names:
                raise _within(where, f"no port named {ref!r}; declared: {', '.join(names) or 'none'}")
        for path in self.config_files:
            if not path.startswith("/") or path.endswith("/"):
                raise _within(("configFiles", path), f"config file path {path!r} must be an absolute file path")
        return self


# --- addons -------------------------------------------------------------------------------

AddonKind = Literal["postgres", "mysql", "redis", "nats", "rabbitmq", "generic"]


class Addon(Model):
    """Infrastructure a service uses: a database, cache, broker or anything else."""

    kind: AddonKind
    version: str | None = None
    image: Image | None = Field(default=None, description="required for kind: generic")
    port: Port | None = None
    storage: Memory = "1Gi"
    databases: list[str] = Field(default_factory=list)
    external: bool = Field(default=False, description="provided outside shipmate; only its secret is used")
    resources: Resources = Resources(
        requests=ResourceAmounts(cpu="100m", memory="256Mi"),
        limits=ResourceAmounts(cpu="1", memory="1Gi"),
    )
    config: dict[EnvName, ConfigValue] = Field(default_factory=dict)
    writable: list[str] = Field(
        default_factory=list,
        description="kind: generic only: more directories the image writes (besides /data and /tmp), "
                    "each an emptyDir under a read-only root file system")
    run: str | list[str] | None = Field(
        default=None,
        description="kind: generic only: the command that runs it on the local target (a string goes through "
                    "/bin/sh -c), in the spec's directory, with its config, PORT, DATA_DIR and PASSWORD_FILE in "
                    "its environment; Kubernetes runs the image instead")

    @model_validator(mode="after")
    def _consistent(self) -> Addon:
        if self.kind == "generic" and (self.image is None or self.port is None):
            raise ValueError("a generic addon needs an image and a port")
        if self.run is not None and self.kind != "generic":
            raise _within(("run",), f"run is for kind: generic addons; the local target runs kind: {self.kind} "
                                    "from this machine's own binaries")
        if self.run is not None and not (self.run.strip() if isinstance(self.run, str) else self.run):
            raise _within(("run",), "run needs a command, e.g. run: python3 ./chroma_stub.py")
        if self.writable and self.kind != "generic":
            raise _within(("writable",), f"writable is for kind: generic addons; kind: {self.kind} "
                                         "already has the directories it writes")
        seen: set[str] = set()
        for i, path in enumerate(self.writable):
            if not path.startswith("/") or path == "/" or "//" in path or posixpath.normpath(path) != path:
                raise _within(("writable", i), f"{path!r} must be an absolute directory path, "
                                               "without '..', '.', '//' or a trailing '/' (e.g. /var/cache/app)")
            if path in ("/data", "/tmp"):  # noqa: S108 - paths inside the container
                raise _within(("writable", i), f"{path} is always writable (the data volume or a /tmp emptyDir)")
            if path in seen:
                raise _within(("writable", i), f"{path} is listed twice")
            seen.add(path)
        return self


# --- secrets ------------------------------------------------------------------------------

class Generate(Model):
    type: Literal["bytes", "password", "hex", "base64", "jwt-key", "rsa", "ed25519"] = "hex"
    length: int = Field(default=32, ge=8, le=4096)


class FromAddon(Model):
    addon: Name
    key: Literal["url", "password", "username", "host"] = "url"


class External(Model):
    provider: Literal["vault", "aws", "gcp", "azure"]
    path: str = Field(min_length=1)
    key: str | None = None


class Rotation(Model):
    interval: Duration | None = None
    grace: Duration = "10m"


class Keys(Model):
    """The master key that wraps the data key of every secret version (and of every backup)."""

    provider: Literal["local", "vault", "aws"] = "local"
    path: str | None = Field(default=None, description="local: the key file (default <state dir>/keys/master.key, "
                             "or $SHIPMATE_KEY_FILE)")
    address: str | None = Field(default=None, description="vault: the server URL (default $VAULT_ADDR)")
    key: str | None = Field(default=None, description="vault: the Transit key name; aws: the KMS key id, ARN or alias")
    mount: str = Field(default="transit", description="vault: where the Transit engine is mounted")
    region: str | None = Field(default=None, description="aws: the KMS region (default from the environment)")

    @model_validator(mode="after")
    def _key_named(self) -> Keys:
        if self.provider in ("vault", "aws") and not self.key:
            raise ValueError(f"provider {self.provider} needs key: the "
                             + ("Transit key name" if self.provider == "vault" else "KMS key id, ARN or alias"))
        return self


class SecretSpec(Model):
    """A declared secret and where its value comes from: exactly one source."""

    description: str | None = None
    generate: Generate | None = None
    set: bool | None = Field(default=None, description="true: a person sets it with `secrets set`")
    from_: FromAddon | None = Field(default=None, alias="from")
    external: External | None = None
    rotation: Rotation | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretSpec:
        sources = [k for k in ("generate", "set", "from_", "external") if getattr(self, k)]
        if len(sources) != 1:
            shown = [s.rstrip("_") for s in sources] or "none"
            raise ValueError(f"a secret needs exactly one of generate, set, from or external (got {shown})")
        return self


# --- release strategies -------------------------------------------------------------------

class Check(Model):
    """One analysis check: a metric and the thresholds it must stay within."""

    name: Name
    metric: Literal["error-rate", "latency", "request-rate", "promql", "webhook"]
    quantile: float | None = Field(default=None, gt=0, lt=1)
    query: str | None = None
    url: str | None = None
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _complete(self) -> Check:
        if self.metric == "promql" and not self.query:
            raise ValueError("a promql check needs a query")
        if self.metric == "webhook" and not self.url:
            raise ValueError("a webhook check needs a url")
        if self.metric != "webhook" and self.max is None and self.min is None:
            raise ValueError("a check needs a max or a min threshold")
        return self


class Analysis(Model):
    interval: Duration = "30s"
    count: int = Field(default=5, ge=1)
    failure_limit: int = Field(default=1, ge=0)
    inconclusive_limit: int = Field(default=1, ge=0)
    min_requests: int = Field(default=50, ge=0, description="fewer requests than this is inconclusive")
    checks: list[Check] = Field(min_length=1)


class Step(Model):
    """One canary step: set a weight, pause (timed or until promoted), or run the analysis."""

    weight: int | None = Field(default=None, ge=0, le=100)
    pause: Duration | Literal["indefinite"] | None = None
    analysis: bool | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        given = [k for k in ("weight", "pause", "analysis") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a step is exactly one of weight, pause or analysis (got {given or 'none'})")
        return self


class StickyKey(Model):
    header: str | None = None
    query: str | None = None
    cookie: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> StickyKey:
        if sum(x is not None for x in (self.header, self.query, self.cookie)) != 1:
            raise ValueError("a sticky key comes from exactly one of header, query or cookie")
        return self


class Strategy(Model):
    """A release strategy: rolling, blue-green or canary."""

    type: Literal["rolling", "blue-green", "canary"]
    max_surge: IntOrPercent | None = None
    max_unavailable: IntOrPercent | None = None
    steps: list[Step] = Field(default_factory=list)
    sticky_key: StickyKey | None = None
    tester_header: str | None = None
    analysis: Analysis | None = None
    preview_checks: list[str] = Field(default_factory=list, description="smoke URLs run before a switch")
    scale_down_delay: Duration = "30s"
    progress_deadline: Duration = "600s"

    @model_validator(mode="after")
    def _fits_type(self) -> Strategy:
        if self.type == "canary":
            weights = [s.weight for s in self.steps if s.weight is not None]
            if not weights:
                raise ValueError("a canary needs steps with weights, e.g. [{weight: 5}, {weight: 100}]")
            if weights != sorted(weights):
                raise ValueError(f"canary weights must not go down (got {weights})")
            if any(s.analysis for s in self.steps) and self.analysis is None:
                raise ValueError("a canary step runs the analysis, but the strategy has no analysis")
        elif self.steps:
            raise ValueError(f"steps are only for a canary, not for {self.type}")
        return self


# --- environments -------------------------------------------------------------------------

class Cluster(Model):
    context: str | None = None
    namespace: Name | None = None


class Approvals(Model):
    required: int = Field(default=0, ge=0)
    roles: list[str] = Field(default_factory=list)


class GitOps(Model):
    repo: str = Field(min_length=1)
    revision: str = "main"
    path: str = "deploy"
    format: Literal["kustomize", "helm"] = "kustomize"
    auto_sync: bool = True
    prune: bool = True
    self_heal: bool = True


class Ingress(Model):
    kind: Literal["ingress", "gateway"] = "ingress"
    class_name: str = "nginx"
    gateway: str = Field(default="shipmate-gateway", description="parent Gateway for HTTPRoutes")
    namespace: Name = Field(default="ingress-nginx", description="namespace of the ingress controller")
    tls_secret: str | None = None


class Environment(Model):
    """One environment: where it runs and how it differs from the rest."""

    target: Literal["local", "kubernetes"] = "kubernetes"
    cluster: Cluster = Cluster()
    secrets_delivery: Literal["csi", "external-secrets", "secret"] = "csi"
    secret_store: str = Field(default="vault", description="SecretProviderClass provider or SecretStore name")
    strategy: str = "rolling"
    rollback_strategy: Literal["fast", "strategy"] = "fast"
    approvals: Approvals = Approvals()
    promote_from: Name | None = None
    ingress: Ingress = Ingress()
    gitops: GitOps | None = None
    history: int = Field(default=10, ge=1)
    monitoring_namespace: Name = Field(default="monitoring", description="where Prometheus runs")
    overrides: dict[str, Any] = Field(default_factory=dict, description="any part of the spec, merged in")


# --- observability and backups ------------------------------------------------------------

class QueueBacklog(Model):
    metric: str = Field(min_length=1)
    threshold: int = Field(ge=1)


class Alerts(Model):
    error_rate: float = Field(default=0.05, gt=0, lt=1)
    latency_p99: Duration = "1s"
    service_down: Duration = "1m"
    queue_backlog: QueueBacklog | None = None
    receivers: list[str] = Field(default_factory=list)


class Slo(Model):
    name: Name
    service: Name
    objective: float = Field(gt=0, lt=100)
    window: Duration = "30d"
    latency: Duration | None = None


class Retention(Model):
    count: int = Field(default=7, ge=1)
    age: Duration = "30d"


class Backup(Model):
    name: Name
    addon: Name
    type: Literal["pitr", "full", "logical"] = "pitr"
    schedule: Cron = "0 2 * * *"
    tables: list[str] = Field(default_factory=list)
    retention: Retention = Retention()
    rpo: Duration = "1m"
    store: str = "filesystem"


# --- the application ----------------------------------------------------------------------

class App(Model):
    name: Name
    version: str = "0.1.0"
    team: str | None = None
    description: str | None = None
    registry: str | None = Field(default=None, description="image registry prefix, e.g. ghcr.io/acme")
    repo: str | None = Field(default=None, description="git repository of the application")


BUILTIN_STRATEGIES = ("rolling", "blue-green", "recreate")


class AppSpec(Model):
    """A whole shipmate.yaml."""

    version: Literal[1] = 1
    app: App
    services: dict[ObjectName, Service] = Field(min_length=1)
    addons: dict[ObjectName, Addon] = Field(default_factory=dict)
    secrets: dict[Name, SecretSpec] = Field(default_factory=dict)
    keys: Keys = Keys()
    strategies: dict[Name, Strategy] = Field(default_factory=dict)
    environments: dict[Name, Environment] = Field(min_length=1)
    alerts: Alerts = Alerts()
    slos: list[Slo] = Field(default_factory=list)
    backups: list[Backup] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> AppSpec:
        for name, svc in self.services.items():
            for i, addon in enumerate(svc.uses):
                if addon not in self.addons:
                    raise _ref_error(("services", name, "uses", i), "addon", addon, self.addons)
            for i, other in enumerate(svc.calls):
                if other not in self.services:
                    raise _ref_error(("services", name, "calls", i), "service", other, self.services)
            for i, use in enumerate(svc.secrets):
                if use.secret not in self.secrets:
                    raise _ref_error(("services", name, "secrets", i, "secret"), "secret", use.secret,
                                     self.secrets)
            if svc.expose is not None and not svc.ports:
                raise _located(("services", name, "expose"), "an exposed service needs a port")
            if svc.kind == "DaemonSet" and svc.autoscaling is not None:
                raise _located(("services", name, "autoscaling"), "a DaemonSet cannot autoscale")
        for name, secret in self.secrets.items():
            if secret.from_ is not None and secret.from_.addon not in self.addons:
                raise _ref_error(("secrets", name, "from", "addon"), "addon", secret.from_.addon, self.addons)
        for name, env in self.environments.items():
            known = {*self.strategies, *BUILTIN_STRATEGIES}
            if env.strategy not in known:
                raise _ref_error(("environments", name, "strategy"), "strategy", env.strategy,
                                 dict.fromkeys(known))
            if env.promote_from is not None and env.promote_from not in self.environments:
                raise _ref_error(("environments", name, "promoteFrom"), "environment", env.promote_from,
                                 self.environments)
            if env.secrets_delivery == "secret" and env.target == "kubernetes" and _looks_production(name):
                raise _located(("environments", name, "secretsDelivery"),
                               "plain Secret objects are for dev only; use csi or external-secrets")
        for i, slo in enumerate(self.slos):
            if slo.service not in self.services:
                raise _ref_error(("slos", i, "service"), "service", slo.service, self.services)
        backup_names: set[str] = set()
        for i, backup in enumerate(self.backups):
            if backup.addon not in self.addons:
                raise _ref_error(("backups", i, "addon"), "addon", backup.addon, self.addons)
            kind = self.addons[backup.addon].kind
            if kind not in ("postgres", "mysql", "redis"):
                raise _located(("backups", i, "addon"), f"addon {backup.addon!r} is {kind}: shipmate backs up "
                               "postgres, mysql and redis addons; back it up with its own tools")
            if backup.type == "pitr" and kind != "postgres":
                raise _located(("backups", i, "type"), f"point-in-time recovery is for postgres; use type: "
                               f"full or logical for {kind}")
            if backup.name in backup_names:
                raise _located(("backups", i, "name"), f"backup name {backup.name!r} is used twice")
            backup_names.add(backup.name)
        slo_names = [s.name for s in self.slos]
        for i, slo in enumerate(self.slos):
            if slo_names.count(slo.name) > 1:
                raise _located(("slos", i, "name"), f"SLO name {slo.name!r} is used twice")
        return self


def _looks_production(name: str) -> bool:
    return name in {"prod", "production", "live"} or name.startswith("prod")


def _within(rel: tuple[str | int, ...], message: str) -> PydanticCustomError:
    """An error at a key path below the model that raises it, picked up by the loader."""
    return PydanticCustomError("reference", "{message}", {"message": message, "rel": list(rel)})


def _located(loc: tuple[str | int, ...], message: str) -> PydanticCustomError:
    """An error whose location is a key path given explicitly, picked up by the loader."""
    return PydanticCustomError("reference", "{message}", {"message": message, "loc": list(loc)})


def _ref_error(loc: tuple[str | int, ...], what: str, name: str, known: dict[str, Any]) -> PydanticCustomError:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    if close:
        hint = f"did you mean {close[0]!r}?"
    elif known:
        hint = f"declared: {', '.join(sorted(known))}"
    else:
        hint = f"none is declared; add it under {what}s"
    return _located(loc, f"unknown {what} {name!r}; {hint}")
