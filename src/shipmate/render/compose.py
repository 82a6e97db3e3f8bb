"""The `compose` format: `docker-compose.yml`, the whole application on one laptop.

Every service of the plan runs hardened as on Kubernetes (read-only root file system with a tmpfs
at /tmp, uid 10001, every capability dropped, no new privileges), with its config as environment
variables, its secrets as compose `secrets:` read from files under `./secrets/` (never a value
in this file), a healthcheck from its readiness probe, and `depends_on` its addons until they are
healthy. Every addon runs from its official image with a named volume and a native healthcheck
(pg_isready, mysqladmin ping, redis-cli ping, the NATS monitoring endpoint, rabbitmq-diagnostics).
Ports are published on 127.0.0.1 only, moved up to the next free port where two would clash.

The plan used is the first environment whose target is `local`, else the first environment.

Called through `shipmate.render.formats`. Pure: it never reads `./secrets` or runs docker. It
must not write a secret value, and it escapes `$` so that compose interpolates nothing.
The addon command lines follow `shipmate.render.objects` (the same password files, the same data
directories), plus what compose needs on its own: a healthcheck each, NATS's monitoring port
for its healthcheck, and a one-shot `volume-init` that gives fresh volumes to their uid, which
Kubernetes does with fsGroup and compose cannot.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from dataclasses import dataclass
from typing import Any

from shipmate.plan.models import AddonPlan, Plan, ProbePlan, ResourcesPlan, Workload
from shipmate.render import images
from shipmate.render.kit import Kit
from shipmate.render.objects import RUN_AS, rabbitmq_user
from shipmate.render.yamlio import dump
from shipmate.spec.values import cpu_millis, memory_bytes

Obj = dict[str, Any]

FILE = "docker-compose.yml"
SECRETS_DIR = "./secrets"
ADDON_SECRETS_DIR = "/var/run/secrets/shipmate"
INIT_IMAGE = "docker.io/library/busybox:1.36.1"
INIT_SERVICE = "volume-init"
NATS_MONITOR_PORT = 8222
TMP = "/tmp"  # noqa: S108 - a tmpfs inside the container, not a host path


@dataclass(frozen=True)
class _AddonKind:
    data: str  # the data directory (a named volume)
    writable: tuple[str, ...]  # other directories the process writes (tmpfs)
    volume_owned: bool  # the image already owns `data` with the addon's uid


_ADDONS: dict[str, _AddonKind] = {
    "postgres": _AddonKind("/var/lib/postgresql/data", ("/var/run/postgresql",), True),
    "mysql": _AddonKind("/var/lib/mysql", ("/var/run/mysqld",), True),
    "redis": _AddonKind("/data", (), True),
    "nats": _AddonKind("/data", (), False),
    "rabbitmq": _AddonKind("/var/lib/rabbitmq", ("/etc/rabbitmq/conf.d",), True),
    "generic": _AddonKind("/data", (), False),
}


def files(kit: Kit) -> dict[str, str]:
    env = local_environment(kit)
    plan = kit.plans[env]
    doc = compose(plan)
    return {FILE: _header(plan, doc) + dump(_escape(doc))}


def local_environment(kit: Kit) -> str:
    """The environment a laptop runs: the first with target local, else the first of all."""
    return next((e for e in kit.environments if kit.plans[e].target == "local"), kit.environments[0])


def compose(plan: Plan) -> Obj:
    """The compose document of one plan (before `$` is escaped)."""
    addons = [a for a in plan.addons if not a.external]
    ports = _host_ports(plan, addons)
    services: Obj = {}
    volumes: Obj = {}
    secrets: Obj = {}
    configs: Obj = {}
    to_init: list[tuple[str, int]] = []  # (volume, uid) that need their owner set
    for a in addons:
        services[a.name] = _addon(a, ports)
        volumes[_volume(a.name)] = {}
        if a.kind != "generic":
            secrets[a.password_secret] = {"file": f"{SECRETS_DIR}/{a.password_secret}"}
        if not _ADDONS[a.kind].volume_owned:
            to_init.append((_volume(a.name), a.run_as_user))
    healthy = {a.name: "service_healthy" if _addon_healthcheck(a) else "service_started" for a in addons}
    for w in plan.workloads:
        services[w.name] = _service(plan, w, ports, healthy)
        for m in w.file_secrets:
            secrets[m.secret] = {"file": f"{SECRETS_DIR}/{m.secret}"}
        for index, (path, content) in enumerate(w.config_files):
            configs[_config_name(w, index)] = {"content": content}
            del path
        if w.kind == "StatefulSet":
            volumes[_volume(w.name)] = {}
            to_init.append((_volume(w.name), RUN_AS))
    if to_init:
        services[INIT_SERVICE] = _volume_init(to_init)
        owners = {volume for volume, _ in to_init}
        for name, service in services.items():
            if name != INIT_SERVICE and any(v.split(":", 1)[0] in owners for v in service.get("volumes", [])):
                service.setdefault("depends_on", {})[INIT_SERVICE] = {
                    "condition": "service_completed_successfully"}
    doc: Obj = {"name": plan.app, "services": services}
    if volumes:
        doc["volumes"] = volumes
    if secrets:
        doc["secrets"] = secrets
    if configs:
        doc["configs"] = configs
    return doc


# --- services -------------------------------------------------------------------------------

def _service(plan: Plan, w: Workload, ports: dict[tuple[str, int], int], healthy: dict[str, str]) -> Obj:
    build = images.build(w)
    service: Obj = {
        "image": w.image_ref,
        "build": _build(build),
        "restart": "unless-stopped",
        "user": f"{RUN_AS}:{RUN_AS}",
        "read_only": True,
        "tmpfs": [TMP],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "environment": {**dict(w.config), "APP_VERSION": w.tag, "SHIPMATE_SECRETS_DIR": w.secrets_dir},
        "stop_grace_period": f"{w.termination_grace_seconds}s",
    }
    if w.command:
        service["entrypoint"] = list(w.command)
    if w.args:
        service["command"] = list(w.args)
    if w.ports:
        service["ports"] = [f"127.0.0.1:{ports[(w.name, p.port)]}:{p.port}" for p in w.ports]
    if w.file_secrets:
        service["secrets"] = [{"source": m.secret, "target": f"{w.secrets_dir}/{m.file}"} for m in w.file_secrets]
    if w.env_secrets:
        # A variable's value may not appear here; compose reads NAME=value lines from the file.
        service["env_file"] = [{"path": f"{SECRETS_DIR}/{m.secret}.env", "required": True} for m in w.env_secrets]
    if w.config_files:
        service["configs"] = [{"source": _config_name(w, i), "target": path}
                              for i, (path, _content) in enumerate(w.config_files)]
    if w.kind == "StatefulSet":
        service["volumes"] = [f"{_volume(w.name)}:/data"]
    probe = w.readiness or w.liveness
    if probe is not None:
        service["healthcheck"] = _healthcheck(probe, w.startup)
    depends = {peer.name: {"condition": healthy[peer.name]} for peer in w.egress if peer.name in healthy}
    if depends:
        service["depends_on"] = depends
    limits = _limits(w.resources)
    if limits:
        service["deploy"] = {"resources": {"limits": limits}}
    return service


def _build(b: images.Build) -> Obj:
    out: Obj = {"context": b.context, "dockerfile": posixpath.relpath(b.dockerfile, b.context)}
    if b.args:
        out["args"] = dict(b.args)
    return out


def _healthcheck(probe: ProbePlan, startup: ProbePlan | None) -> Obj:
    if probe.check == "exec":
        test: list[str] = ["CMD", *probe.command]
    elif probe.check == "http":
        url = f"http://127.0.0.1:{probe.port}{probe.path or '/'}"
        python = f"import urllib.request; urllib.request.urlopen({json.dumps(url)}, timeout={probe.timeout_seconds})"
        # Whichever client the image has: curl, busybox/GNU wget, or Python.
        test = ["CMD-SHELL", f"curl -fsS -o /dev/null {shlex.quote(url)} || wget -q -O /dev/null {shlex.quote(url)}"
                             f" || python3 -c {shlex.quote(python)}"]
    else:
        python = f'import socket; socket.create_connection(("127.0.0.1", {probe.port}), {probe.timeout_seconds})'
        test = ["CMD-SHELL", f"nc -z 127.0.0.1 {probe.port} || python3 -c {shlex.quote(python)}"]
    start = probe.initial_delay_seconds
    if startup is not None:
        start = max(start, startup.initial_delay_seconds + startup.period_seconds * startup.failure_threshold)
    return {"test": test, "interval": f"{probe.period_seconds}s", "timeout": f"{probe.timeout_seconds}s",
            "retries": probe.failure_threshold, "start_period": f"{start}s"}


def _limits(r: ResourcesPlan) -> Obj:
    out: Obj = {}
    if r.limits_cpu:
        millis = cpu_millis(r.limits_cpu)
        out["cpus"] = f"{millis // 1000}" if millis % 1000 == 0 else f"{millis / 1000:g}"
    if r.limits_memory:
        out["memory"] = _bytes(memory_bytes(r.limits_memory))
    return out


def _bytes(value: int) -> str:
    for unit, size in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if value % size == 0:
            return f"{value // size}{unit}"
    return f"{value}b"


def _config_name(w: Workload, index: int) -> str:
    return f"{w.name}-file-{index}"


def _volume(owner: str) -> str:
    return f"{owner}-data"


# --- addons ---------------------------------------------------------------------------------

def _addon(a: AddonPlan, ports: dict[tuple[str, int], int]) -> Obj:
    kind = _ADDONS[a.kind]
    password = f"{ADDON_SECRETS_DIR}/{a.password_secret}"
    environment: Obj = dict(a.config)
    command: list[str] | None = None
    if a.kind == "postgres":
        environment |= {"POSTGRES_PASSWORD_FILE": password, "PGDATA": f"{kind.data}/pgdata"}
        if a.databases:
            environment["POSTGRES_DB"] = a.databases[0]
    elif a.kind == "mysql":
        environment["MYSQL_ROOT_PASSWORD_FILE"] = password
        if a.databases:
            environment["MYSQL_DATABASE"] = a.databases[0]
    elif a.kind == "redis":
        command = ["sh", "-c", f'exec redis-server --port {a.port} --appendonly yes --requirepass "$(cat {password})"']
    elif a.kind == "nats":
        command = ["sh", "-c", f"exec nats-server --jetstream --store_dir {kind.data} --port {a.port} "
                               f'--http_port {NATS_MONITOR_PORT} --auth "$(cat {password})"']
    elif a.kind == "rabbitmq":
        environment["RABBITMQ_DEFAULT_USER"] = rabbitmq_user(a)
        command = ["sh", "-c", f'RABBITMQ_DEFAULT_PASS="$(cat {password})" exec docker-entrypoint.sh rabbitmq-server']
    service: Obj = {
        "image": a.image,
        "restart": "unless-stopped",
        "user": f"{a.run_as_user}:{a.run_as_user}",
        "read_only": True,
        "tmpfs": [TMP, *kind.writable, *a.writable],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "ports": [f"127.0.0.1:{ports[(a.name, a.port)]}:{a.port}"],
        "volumes": [f"{_volume(a.name)}:{kind.data}"],
    }
    if environment:
        service["environment"] = environment
    if command:
        service["command"] = command
    if a.kind != "generic":
        service["secrets"] = [{"source": a.password_secret, "target": password}]
    check = _addon_healthcheck(a)
    if check:
        service["healthcheck"] = {"test": check, "interval": "5s", "timeout": "3s", "retries": 20,
                                  "start_period": "10s"}
    limits = _limits(a.resources)
    if limits:
        service["deploy"] = {"resources": {"limits": limits}}
    return service


def _addon_healthcheck(a: AddonPlan) -> list[str] | None:
    password = f"{ADDON_SECRETS_DIR}/{a.password_secret}"
    if a.kind == "postgres":
        database = a.databases[0] if a.databases else "postgres"
        return ["CMD", "pg_isready", "-h", "127.0.0.1", "-p", str(a.port), "-U", "postgres", "-d", database]
    if a.kind == "mysql":
        return ["CMD", "mysqladmin", "ping", "-h", "127.0.0.1", "-P", str(a.port), "--silent"]
    if a.kind == "redis":
        # Without the password redis-cli still exits 0 (NOAUTH), so look for the PONG.
        return ["CMD-SHELL", f'REDISCLI_AUTH="$(cat {password})" redis-cli -p {a.port} ping | grep -q PONG']
    if a.kind == "nats":
        return ["CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{NATS_MONITOR_PORT}/healthz"]
    if a.kind == "rabbitmq":
        return ["CMD", "rabbitmq-diagnostics", "-q", "ping"]
    return None


def _volume_init(volumes: list[tuple[str, int]]) -> Obj:
    """A one-shot container that hands each fresh volume to the uid that writes it."""
    mounts = [f"{volume}:/volumes/{volume}" for volume, _ in sorted(volumes)]
    script = " && ".join(f"chown {uid}:{uid} /volumes/{volume}" for volume, uid in sorted(volumes))
    return {
        "image": INIT_IMAGE,
        "restart": "no",
        "user": "0:0",
        "read_only": True,
        "cap_drop": ["ALL"],
        "cap_add": ["CHOWN"],
        "security_opt": ["no-new-privileges:true"],
        "network_mode": "none",
        "command": ["sh", "-c", script],
        "volumes": mounts,
    }


# --- ports and text -------------------------------------------------------------------------

def _host_ports(plan: Plan, addons: list[AddonPlan]) -> dict[tuple[str, int], int]:
    """A host port per (owner, container port): the same number where free, else the next free
    one. Two passes, so a port that only one owner declares is never taken by another's move."""
    wanted = [(w.name, p.port) for w in plan.workloads for p in w.ports] + [(a.name, a.port) for a in addons]
    taken: set[int] = set()
    out: dict[tuple[str, int], int] = {}
    for key in wanted:
        if key[1] not in taken:
            out[key] = key[1]
            taken.add(key[1])
    for key in wanted:
        if key in out:
            continue
        port = key[1]
        while port in taken:
            port += 1
        out[key] = port
        taken.add(port)
    return out


def _escape(value: Any) -> Any:
    """`$` -> `$$` in every string value, so that compose passes it through unchanged."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


def _header(plan: Plan, doc: Obj) -> str:
    secrets = sorted(doc.get("secrets", {}))
    env_files = sorted({entry["path"] for s in doc["services"].values() for entry in s.get("env_file", [])})
    published = [f"{name} {port.split(':')[1]}" for name, s in sorted(doc["services"].items())
                 for port in s.get("ports", [])]
    lines = [
        f"Rendered by shipmate from shipmate.yaml; do not edit. Local development of {plan.app} "
        f"(environment {plan.environment}).",
        "Run it from the repository root: docker compose up --build (Compose 2.23 or later), or pass",
        "--project-directory <repository root> when this file lives elsewhere.",
        "Published on 127.0.0.1 only: " + (", ".join(published) or "nothing") + ".",
    ]
    if secrets or env_files:
        lines += ["", "Secrets are files that are never committed (add secrets/ to .gitignore); create them first,",
                  "each readable by the container's user (compose mounts them as they are): chmod 700 secrets,",
                  "chmod 644 secrets/*."]
        lines += [f"  {SECRETS_DIR}/{name}" for name in secrets]
        lines += [f"  {path}  (NAME=value lines)" for path in env_files]
        if any(a for a in plan.addons if not a.external and a.kind != "generic"):
            lines.append("An addon's URL secrets must carry its password file's value and its service name as the "
                         "host.")
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)
