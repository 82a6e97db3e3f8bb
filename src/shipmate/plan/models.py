"""The Plan: what one environment of an application is, with every default resolved.

Frozen dataclasses, built by `shipmate.plan.plan.resolve` and read by render, the targets and
the release engine. Nothing here knows about YAML or Kubernetes objects. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SECRETS_MOUNT = "/var/run/secrets/shipmate"


@dataclass(frozen=True)
class PortPlan:
    name: str
    port: int
    protocol: str


@dataclass(frozen=True)
class ProbePlan:
    """A probe with its check resolved to a concrete port number."""

    check: Literal["http", "tcp", "exec"]
    path: str | None
    port: int | None
    command: tuple[str, ...]
    initial_delay_seconds: int
    period_seconds: int
    timeout_seconds: int
    failure_threshold: int
    success_threshold: int


@dataclass(frozen=True)
class ResourcesPlan:
    requests_cpu: str | None
    requests_memory: str | None
    limits_cpu: str | None
    limits_memory: str | None


@dataclass(frozen=True)
class AutoscalingPlan:
    min_replicas: int
    max_replicas: int
    cpu: int | None
    memory: int | None


@dataclass(frozen=True)
class SecretMount:
    """One secret a workload receives: as a file in its secrets directory, or an env var."""

    secret: str
    delivery: Literal["file", "env"]
    file: str
    env: str


@dataclass(frozen=True)
class ExposurePlan:
    host: str | None
    path: str
    port: int
    tls: bool
    websocket: bool


@dataclass(frozen=True)
class Peer:
    """Another workload this one talks to (or is talked to by), with the ports involved;
    `external` for an addon run outside the cluster (reached by address, not by pod labels)."""

    name: str
    ports: tuple[int, ...]
    external: bool = False


@dataclass(frozen=True)
class Workload:
    """One service in one environment."""

    name: str
    kind: Literal["Deployment", "StatefulSet", "DaemonSet"]
    image: str
    tag: str
    digest: str | None
    replicas: int
    ports: tuple[PortPlan, ...]
    liveness: ProbePlan | None
    readiness: ProbePlan | None
    startup: ProbePlan | None
    resources: ResourcesPlan
    autoscaling: AutoscalingPlan | None
    config: tuple[tuple[str, str], ...]
    config_files: tuple[tuple[str, str], ...]
    secrets: tuple[SecretMount, ...]
    secrets_dir: str
    egress: tuple[Peer, ...]
    ingress_from: tuple[Peer, ...]
    expose: ExposurePlan | None
    max_surge: int | str
    max_unavailable: int | str
    service_account: bool
    automount_token: bool
    metrics_port: int | None
    metrics_path: str
    storage: str | None
    termination_grace_seconds: int
    command: tuple[str, ...]
    args: tuple[str, ...]
    run: str | tuple[str, ...] | None
    workdir: str | None

    @property
    def image_ref(self) -> str:
        return f"{self.image}@{self.digest}" if self.digest else f"{self.image}:{self.tag}"

    @property
    def file_secrets(self) -> tuple[SecretMount, ...]:
        return tuple(s for s in self.secrets if s.delivery == "file")

    @property
    def env_secrets(self) -> tuple[SecretMount, ...]:
        return tuple(s for s in self.secrets if s.delivery == "env")


@dataclass(frozen=True)
class AddonPlan:
    """A piece of infrastructure: run in the cluster as a StatefulSet, or external."""

    name: str
    kind: str
    image: str
    port: int
    storage: str
    databases: tuple[str, ...]
    external: bool
    resources: ResourcesPlan
    run_as_user: int
    config: tuple[tuple[str, str], ...]
    users: tuple[str, ...]
    writable: tuple[str, ...] = ()  # more writable directories (generic addons), beyond the kind's own
    run: str | tuple[str, ...] | None = None  # generic addons: the command on the local target; not rendered

    @property
    def password_secret(self) -> str:
        return f"{self.name}-password"


@dataclass(frozen=True)
class SecretPlan:
    name: str
    source: Literal["generate", "set", "from", "external"]
    remote_key: str
    remote_property: str | None
    rotation_interval: float | None
    rotation_grace: float
    generate_type: str | None = None  # source generate: its type and length
    generate_length: int | None = None
    from_addon: str | None = None  # source from: the addon and which of its connection values
    from_key: Literal["url", "password", "username", "host"] | None = None
    external_provider: str | None = None  # source external: vault, aws, gcp or azure


@dataclass(frozen=True)
class KeysPlan:
    """Which master key wraps the environment's secrets: see `shipmate.secrets.providers`."""

    provider: Literal["local", "vault", "aws"] = "local"
    path: str | None = None
    address: str | None = None
    key: str | None = None
    mount: str = "transit"
    region: str | None = None


@dataclass(frozen=True)
class StepPlan:
    weight: int | None = None
    pause_seconds: float | None = None
    pause_indefinite: bool = False
    analysis: bool = False


@dataclass(frozen=True)
class CheckPlan:
    name: str
    metric: str
    quantile: float | None
    query: str | None
    url: str | None
    max: float | None
    min: float | None


@dataclass(frozen=True)
class AnalysisPlan:
    interval_seconds: float
    count: int
    failure_limit: int
    inconclusive_limit: int
    min_requests: int
    checks: tuple[CheckPlan, ...]


@dataclass(frozen=True)
class StrategyPlan:
    name: str
    type: Literal["rolling", "blue-green", "canary", "recreate"]
    max_surge: int | str | None = None
    max_unavailable: int | str | None = None
    steps: tuple[StepPlan, ...] = ()
    sticky_source: Literal["header", "query", "cookie"] | None = None
    sticky_name: str | None = None
    tester_header: str | None = None
    analysis: AnalysisPlan | None = None
    preview_checks: tuple[str, ...] = ()
    scale_down_delay_seconds: float = 30.0
    progress_deadline_seconds: float = 600.0


@dataclass(frozen=True)
class AlertsPlan:
    error_rate: float
    latency_p99_seconds: float
    service_down_for: str
    queue_backlog_metric: str | None
    queue_backlog_threshold: int | None


@dataclass(frozen=True)
class SloPlan:
    name: str
    service: str
    objective: float
    window: str
    latency_seconds: float | None


@dataclass(frozen=True)
class BackupPlan:
    name: str
    addon: str
    addon_kind: str
    type: str
    schedule: str
    tables: tuple[str, ...]
    retention_count: int
    retention_age_seconds: float
    rpo_seconds: float
    store: str


@dataclass(frozen=True)
class GitOpsPlan:
    repo: str
    revision: str
    path: str
    format: str
    auto_sync: bool
    prune: bool
    self_heal: bool


@dataclass(frozen=True)
class Plan:
    """Everything about one environment of one application. Deterministic: the same spec and
    environment always give an equal Plan, with every collection in a stable order."""

    app: str
    app_version: str
    team: str | None
    repo: str | None
    environment: str
    environments: tuple[str, ...]
    target: Literal["local", "kubernetes"]
    namespace: str
    context: str | None
    secrets_delivery: Literal["csi", "external-secrets", "secret"]
    secret_store: str
    ingress_kind: Literal["ingress", "gateway"]
    ingress_class: str
    gateway: str
    ingress_namespace: str
    monitoring_namespace: str
    tls_secret: str | None
    workloads: tuple[Workload, ...]
    addons: tuple[AddonPlan, ...]
    secrets: tuple[SecretPlan, ...]
    strategy: StrategyPlan
    rollback_strategy: str
    approvals_required: int
    approval_roles: tuple[str, ...]
    promote_from: str | None
    history: int
    gitops: GitOpsPlan | None
    alerts: AlertsPlan
    slos: tuple[SloPlan, ...]
    backups: tuple[BackupPlan, ...]
    extra_labels: tuple[tuple[str, str], ...] = field(default=())
    keys: KeysPlan = KeysPlan()

    @property
    def instance(self) -> str:
        return f"{self.app}-{self.environment}"

    def workload(self, name: str) -> Workload:
        for w in self.workloads:
            if w.name == name:
                return w
        raise KeyError(name)
