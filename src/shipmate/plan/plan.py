"""AppSpec x environment -> Plan, with every default resolved.

Called by render, the CLI (`shipmate plan`) and the release engine. Pure and deterministic:
collections come out sorted by name, so equal inputs give equal plans.

Defaults decided here (documented in README, "How a plan is resolved"):
- image `<app.registry>/<service>` (or `<app>/<service>`), tag `service.version` else `app.version`;
- a service with ports and no probes gets readiness `GET /readyz` and liveness `GET /healthz` on
  its first port (a TCP check for tcp/grpc ports);
- rolling updates use the environment strategy's maxSurge/maxUnavailable when it is rolling, else
  the service's own `update` (25% / 0);
- the namespace is `cluster.namespace`, else `<app>-<environment>`.
"""

from __future__ import annotations

from shipmate.errors import SpecError
from shipmate.plan.models import (
    AddonPlan,
    AlertsPlan,
    AnalysisPlan,
    AutoscalingPlan,
    BackupPlan,
    CheckPlan,
    ExposurePlan,
    GitOpsPlan,
    KeysPlan,
    Peer,
    Plan,
    PortPlan,
    ProbePlan,
    ResourcesPlan,
    SecretMount,
    SecretPlan,
    SloPlan,
    StepPlan,
    StrategyPlan,
    Workload,
)
from shipmate.spec import models as spec
from shipmate.spec.values import parse_duration

# kind -> (image, port, uid)
ADDON_DEFAULTS: dict[str, tuple[str, int, int]] = {
    "postgres": ("docker.io/library/postgres:16.4", 5432, 999),
    "mysql": ("docker.io/library/mysql:8.4.2", 3306, 999),
    "redis": ("docker.io/library/redis:7.4.0", 6379, 999),
    "nats": ("docker.io/library/nats:2.10.20-alpine", 4222, 1000),
    "rabbitmq": ("docker.io/library/rabbitmq:3.13.7", 5672, 999),
}


def resolve(app: spec.AppSpec, environment: str) -> Plan:
    """The plan of `environment`, from the spec already merged with that environment's overrides."""
    env = app.environments.get(environment)
    if env is None:
        raise SpecError(f"no environment {environment!r}; declared: {', '.join(sorted(app.environments))}",
                        path="environments")
    strategy = _strategy(app, env.strategy)
    addons = tuple(_addon(name, app.addons[name], app) for name in sorted(app.addons))
    workloads = tuple(_workload(name, app, strategy, addons) for name in sorted(app.services))
    gitops = env.gitops
    return Plan(
        app=app.app.name,
        app_version=app.app.version,
        team=app.app.team,
        repo=app.app.repo,
        environment=environment,
        environments=tuple(app.environments),
        target=env.target,
        namespace=env.cluster.namespace or f"{app.app.name}-{environment}"[:63].rstrip("-"),
        context=env.cluster.context,
        secrets_delivery=env.secrets_delivery,
        secret_store=env.secret_store,
        ingress_kind=env.ingress.kind,
        ingress_class=env.ingress.class_name,
        gateway=env.ingress.gateway,
        ingress_namespace=env.ingress.namespace,
        monitoring_namespace=env.monitoring_namespace,
        tls_secret=env.ingress.tls_secret,
        workloads=workloads,
        addons=addons,
        secrets=tuple(_secret(name, app.secrets[name], app.app.name, environment)
                      for name in sorted(app.secrets)),
        keys=KeysPlan(provider=app.keys.provider, path=app.keys.path, address=app.keys.address, key=app.keys.key,
                      mount=app.keys.mount, region=app.keys.region),
        strategy=strategy,
        rollback_strategy=env.rollback_strategy,
        approvals_required=env.approvals.required,
        approval_roles=tuple(env.approvals.roles),
        promote_from=env.promote_from,
        history=env.history,
        gitops=None if gitops is None else GitOpsPlan(
            repo=gitops.repo, revision=gitops.revision, path=gitops.path, format=gitops.format,
            auto_sync=gitops.auto_sync, prune=gitops.prune, self_heal=gitops.self_heal),
        alerts=AlertsPlan(
            error_rate=app.alerts.error_rate,
            latency_p99_seconds=parse_duration(app.alerts.latency_p99),
            service_down_for=app.alerts.service_down,
            queue_backlog_metric=app.alerts.queue_backlog.metric if app.alerts.queue_backlog else None,
            queue_backlog_threshold=app.alerts.queue_backlog.threshold if app.alerts.queue_backlog else None,
        ),
        slos=tuple(SloPlan(name=s.name, service=s.service, objective=s.objective, window=s.window,
                           latency_seconds=parse_duration(s.latency) if s.latency else None)
                   for s in sorted(app.slos, key=lambda s: s.name)),
        backups=tuple(_backup(b, app) for b in sorted(app.backups, key=lambda b: b.name)),
    )


def _image(name: str, service: spec.Service, app: spec.AppSpec) -> tuple[str, str, str | None]:
    """(repository, tag, digest) of a service's image; a digest pins the image, the tag then
    only names the version in labels."""
    if service.image:
        reference, _, digest = service.image.partition("@")
        repo, _, tag = reference.rpartition(":") if _has_tag(reference) else (reference, "", "")
        return repo, service.version or tag or app.app.version, digest or None
    prefix = app.app.registry or app.app.name
    return f"{prefix.rstrip('/')}/{name}", service.version or app.app.version, None


def _has_tag(image: str) -> bool:
    return ":" in image.rsplit("/", 1)[-1]


def _port_number(ref: str | int | None, ports: tuple[PortPlan, ...], where: str) -> int:
    if ref is None:
        if not ports:
            raise SpecError("this check needs a port, and the service declares none", path=where)
        return ports[0].port
    if isinstance(ref, int):
        return ref
    if ref.isdigit():
        return int(ref)
    for p in ports:
        if p.name == ref:
            return p.port
    known = ", ".join(p.name for p in ports) or "none"
    raise SpecError(f"no port named {ref!r}; declared: {known}", path=where)


def _probe(probe: spec.Probe | None, default: ProbePlan | None, ports: tuple[PortPlan, ...],
           where: str) -> ProbePlan | None:
    if probe is None:
        return default
    command: tuple[str, ...] = ()
    if probe.http is not None:
        check, path, port = "http", probe.http.path, _port_number(probe.http.port, ports, where)
    elif probe.tcp is not None:
        check, path, port = "tcp", None, _port_number(probe.tcp, ports, where)
    else:
        check, path, port, command = "exec", None, None, tuple(probe.exec or ())
    return ProbePlan(check=check, path=path, port=port, command=command,  # type: ignore[arg-type]
                     initial_delay_seconds=probe.initial_delay_seconds, period_seconds=probe.period_seconds,
                     timeout_seconds=probe.timeout_seconds, failure_threshold=probe.failure_threshold,
                     success_threshold=probe.success_threshold)


def _default_probe(ports: tuple[PortPlan, ...], path: str) -> ProbePlan | None:
    if not ports:
        return None
    first = ports[0]
    if first.protocol in ("http", "websocket"):
        return ProbePlan("http", path, first.port, (), 0, 10, 2, 3, 1)
    return ProbePlan("tcp", None, first.port, (), 0, 10, 2, 3, 1)


def _resources(r: spec.Resources) -> ResourcesPlan:
    return ResourcesPlan(requests_cpu=r.requests.cpu, requests_memory=r.requests.memory,
                         limits_cpu=r.limits.cpu, limits_memory=r.limits.memory)


def _config_value(value: spec.ConfigValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _workload(name: str, app: spec.AppSpec, strategy: StrategyPlan, addons: tuple[AddonPlan, ...]) -> Workload:
    svc = app.services[name]
    where = f"services.{name}"
    ports = tuple(PortPlan(p.name, p.port, p.protocol) for p in svc.ports)
    image, tag, digest = _image(name, svc, app)
    auto = svc.autoscaling
    secrets = tuple(
        SecretMount(secret=u.secret, delivery=u.delivery, file=u.file or u.secret,
                    env=u.env or u.secret.upper().replace("-", "_"))
        for u in sorted(svc.secrets, key=lambda u: u.secret)
    )
    by_name = {a.name: a for a in addons}
    egress = [Peer(a, (by_name[a].port,), external=by_name[a].external) for a in sorted(set(svc.uses))]
    egress += [Peer(c, tuple(sorted(p.port for p in app.services[c].ports))) for c in sorted(set(svc.calls))]
    callers = sorted(other for other, o in app.services.items() if name in o.calls)
    ingress_from = tuple(Peer(c, tuple(sorted(p.port for p in ports))) for c in callers if ports)
    expose = None
    if svc.expose is not None:
        expose = ExposurePlan(host=svc.expose.host, path=svc.expose.path,
                              port=_port_number(svc.expose.port, ports, f"{where}.expose.port"),
                              tls=svc.expose.tls, websocket=svc.expose.websocket)
    metrics_port = None
    if svc.metrics is not None and ports:
        metrics_port = _port_number(svc.metrics.port, ports, f"{where}.metrics.port")
    if strategy.type == "rolling" and strategy.max_surge is not None:
        surge: int | str = strategy.max_surge
    else:
        surge = svc.update.max_surge
    if strategy.type == "rolling" and strategy.max_unavailable is not None:
        unavailable: int | str = strategy.max_unavailable
    else:
        unavailable = svc.update.max_unavailable
    return Workload(
        name=name,
        kind=svc.kind,
        image=image,
        tag=tag,
        digest=digest,
        replicas=svc.replicas,
        ports=ports,
        liveness=_probe(svc.probes.liveness, _default_probe(ports, "/healthz"), ports, f"{where}.probes.liveness"),
        readiness=_probe(svc.probes.readiness, _default_probe(ports, "/readyz"), ports,
                         f"{where}.probes.readiness"),
        startup=_probe(svc.probes.startup, None, ports, f"{where}.probes.startup"),
        resources=_resources(svc.resources),
        autoscaling=None if auto is None or not auto.enabled else AutoscalingPlan(
            auto.min_replicas, auto.max_replicas, auto.cpu, auto.memory),
        config=tuple(sorted((k, _config_value(v)) for k, v in svc.config.items())),
        config_files=tuple(sorted(svc.config_files.items())),
        secrets=secrets,
        secrets_dir=svc.secrets_dir,
        egress=tuple(egress),
        ingress_from=ingress_from,
        expose=expose,
        max_surge=surge,
        max_unavailable=unavailable,
        service_account=svc.service_account.create,
        automount_token=svc.service_account.automount_token,
        metrics_port=metrics_port,
        metrics_path=svc.metrics.path if svc.metrics else "/metrics",
        storage=svc.storage or ("1Gi" if svc.kind == "StatefulSet" else None),
        termination_grace_seconds=svc.termination_grace_seconds,
        command=tuple(svc.command or ()),
        args=tuple(svc.args or ()),
        run=tuple(svc.run) if isinstance(svc.run, list) else svc.run,
        workdir=svc.workdir,
    )


def _addon(name: str, addon: spec.Addon, app: spec.AppSpec) -> AddonPlan:
    if addon.kind == "generic":
        image, port, uid = addon.image or "", addon.port or 0, 10001
    else:
        default_image, port, uid = ADDON_DEFAULTS[addon.kind]
        image = addon.image or default_image
        if addon.version and not addon.image:
            # the NATS command needs a shell, which only the alpine variant has
            suffix = "-alpine" if addon.kind == "nats" and not addon.version.endswith("-alpine") else ""
            image = f"{default_image.rsplit(':', 1)[0]}:{addon.version}{suffix}"
        port = addon.port or port
    users = tuple(sorted(s for s, svc in app.services.items() if name in svc.uses))
    return AddonPlan(
        name=name, kind=addon.kind, image=image, port=port, storage=addon.storage,
        databases=tuple(addon.databases), external=addon.external, resources=_resources(addon.resources),
        run_as_user=uid, config=tuple(sorted((k, _config_value(v)) for k, v in addon.config.items())),
        users=users, writable=tuple(addon.writable),
        run=tuple(addon.run) if isinstance(addon.run, list) else addon.run,
    )


def _secret(name: str, secret: spec.SecretSpec, app: str, environment: str) -> SecretPlan:
    if secret.external is not None:
        source, key, prop = "external", secret.external.path, secret.external.key
    elif secret.generate is not None:
        source, key, prop = "generate", f"{app}/{environment}/{name}", None
    elif secret.from_ is not None:
        source, key, prop = "from", f"{app}/{environment}/{name}", None
    else:
        source, key, prop = "set", f"{app}/{environment}/{name}", None
    rotation = secret.rotation
    return SecretPlan(
        name=name, source=source, remote_key=key, remote_property=prop,  # type: ignore[arg-type]
        rotation_interval=parse_duration(rotation.interval) if rotation and rotation.interval else None,
        rotation_grace=parse_duration(rotation.grace) if rotation else 600.0,
        generate_type=secret.generate.type if secret.generate else None,
        generate_length=secret.generate.length if secret.generate else None,
        from_addon=secret.from_.addon if secret.from_ else None,
        from_key=secret.from_.key if secret.from_ else None,
        external_provider=secret.external.provider if secret.external else None,
    )


def _strategy(app: spec.AppSpec, name: str) -> StrategyPlan:
    if name in app.strategies:
        s = app.strategies[name]
        sticky_source = sticky_name = None
        if s.sticky_key is not None:
            for source in ("header", "query", "cookie"):
                value = getattr(s.sticky_key, source)
                if value is not None:
                    sticky_source, sticky_name = source, value
        analysis = None
        if s.analysis is not None:
            a = s.analysis
            analysis = AnalysisPlan(
                interval_seconds=parse_duration(a.interval), count=a.count, failure_limit=a.failure_limit,
                inconclusive_limit=a.inconclusive_limit, min_requests=a.min_requests,
                checks=tuple(CheckPlan(c.name, c.metric, c.quantile, c.query, c.url, c.max, c.min)
                             for c in a.checks))
        steps = tuple(
            StepPlan(weight=st.weight,
                     pause_seconds=parse_duration(st.pause) if st.pause not in (None, "indefinite") else None,
                     pause_indefinite=st.pause == "indefinite", analysis=bool(st.analysis))
            for st in s.steps)
        return StrategyPlan(
            name=name, type=s.type, max_surge=s.max_surge, max_unavailable=s.max_unavailable, steps=steps,
            sticky_source=sticky_source, sticky_name=sticky_name,  # type: ignore[arg-type]
            tester_header=s.tester_header, analysis=analysis, preview_checks=tuple(s.preview_checks),
            scale_down_delay_seconds=parse_duration(s.scale_down_delay),
            progress_deadline_seconds=parse_duration(s.progress_deadline))
    return StrategyPlan(name=name, type=name)  # type: ignore[arg-type]


def _backup(b: spec.Backup, app: spec.AppSpec) -> BackupPlan:
    return BackupPlan(name=b.name, addon=b.addon, addon_kind=app.addons[b.addon].kind, type=b.type,
                      schedule=b.schedule, tables=tuple(b.tables), retention_count=b.retention.count,
                      retention_age_seconds=parse_duration(b.retention.age), rpo_seconds=parse_duration(b.rpo),
                      store=b.store)
