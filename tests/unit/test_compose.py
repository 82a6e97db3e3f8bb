"""The compose format, checked for its structure (no docker needed): every service and addon is
there, no secret value is, services are hardened, they wait for healthy addons, ports are
published on 127.0.0.1 without clashes, and `$` never reaches compose's interpolation."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import yaml

from shipmate.plan.models import Plan
from shipmate.render.compose import FILE, files, local_environment
from shipmate.render.kit import Kit, build_kit
from shipmate.spec.loader import load_text
from tests.support import example_kit

Obj = dict[str, Any]

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|PRIVATE|CREDENTIAL", re.IGNORECASE)

# Every addon kind, an external addon, an env-delivered secret, a StatefulSet with exec probes,
# config files, a `$` in config, two services on one port, and no local environment.
DEMO = """\
app: {name: demo, registry: ghcr.io/acme, version: 3.1.0}
services:
  web:
    ports: [{port: 8080}, {name: admin, port: 9090}]
    command: [/app/web]
    args: [--serve]
    config: {GREETING: "costs $5", LITERAL: "$${NOT_INTERPOLATED:-x}"}
    configFiles: {/etc/web/app.toml: "price = '$5'\\n"}
    secrets:
      - {secret: api-token, delivery: env, env: API_TOKEN}
      - session-key
    uses: [db, cache, queue, bus, blob, legacy]
    resources: {limits: {cpu: 250m, memory: 300Mi}}
  api:
    ports: [{port: 8080}]
    uses: [sql]
    probes: {startup: {http: {path: /started}, periodSeconds: 5, failureThreshold: 12}}
  indexer:
    kind: StatefulSet
    storage: 5Gi
    probes: {liveness: {exec: [cat, /tmp/ok]}, readiness: {exec: [cat, /tmp/ready]}}
    metrics: null
addons:
  db: {kind: postgres, databases: [demo]}
  sql: {kind: mysql, databases: [shop]}
  cache: {kind: redis}
  queue: {kind: rabbitmq}
  bus: {kind: nats}
  blob: {kind: generic, image: "docker.io/minio/minio:RELEASE.2024-08-17T01-24-54Z", port: 9000}
  legacy: {kind: postgres, external: true}
secrets:
  api-token: {set: true}
  session-key: {generate: {}}
environments:
  staging: {}
  prod: {approvals: {required: 1}}
"""


@cache
def kit_of(text: str) -> Kit:
    return build_kit(load_text(text, env={}))


def document(kit: Kit) -> Obj:
    rendered = files(kit)
    assert list(rendered) == [FILE]
    doc = yaml.safe_load(rendered[FILE])
    assert isinstance(doc, dict)
    return doc


def plan_of(kit: Kit) -> Plan:
    return kit.plans[local_environment(kit)]


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def kits(example: str) -> list[Kit]:
    return [example_kit(example), kit_of(DEMO)]


def test_the_local_environment_is_used_else_the_first() -> None:
    assert local_environment(example_kit("cyber-werewolves")) == "dev"
    assert local_environment(kit_of(DEMO)) == "staging"
    assert document(kit_of(DEMO))["services"]["web"]["image"] == "ghcr.io/acme/web:3.1.0"


def test_every_service_and_addon_is_there(example: str) -> None:
    for kit in kits(example):
        plan = plan_of(kit)
        doc = document(kit)
        assert "version" not in doc
        assert doc["name"] == kit.app
        services = doc["services"]
        for w in plan.workloads:
            assert services[w.name]["image"] == w.image_ref
            assert "build" in services[w.name]
        for a in plan.addons:
            if a.external:
                assert a.name not in services, "an external addon runs elsewhere"
            else:
                assert services[a.name]["image"] == a.image
        extra = set(services) - {w.name for w in plan.workloads} - {a.name for a in plan.addons}
        assert extra <= {"volume-init"}


def test_no_secret_value_is_written(example: str) -> None:
    for kit in kits(example):
        plan = plan_of(kit)
        doc = document(kit)
        env_secret_names = {m.env for w in plan.workloads for m in w.env_secrets}
        for name, service in doc["services"].items():
            for key, value in service.get("environment", {}).items():
                assert key not in env_secret_names, f"{name}: secret {key} must not be in environment"
                if SECRET_NAME.search(key):
                    assert key.endswith(("_FILE", "_DIR")), f"{name}: {key} looks like a secret value"
                    assert value.startswith("/"), f"{name}: {key} must name a file or directory"
            for entry in service.get("env_file", []):
                assert entry["path"].startswith("./secrets/")
        for name, secret in doc.get("secrets", {}).items():
            assert secret == {"file": f"./secrets/{name}"}, "a secret comes from a file, never inline"


def test_env_delivered_secrets_come_from_env_files() -> None:
    web = document(kit_of(DEMO))["services"]["web"]
    assert web["env_file"] == [{"path": "./secrets/api-token.env", "required": True}]
    assert "API_TOKEN" not in web["environment"]
    assert web["secrets"] == [{"source": "session-key", "target": "/var/run/secrets/shipmate/session-key"}]


def test_services_are_hardened(example: str) -> None:
    for kit in kits(example):
        plan = plan_of(kit)
        services = document(kit)["services"]
        for w in plan.workloads:
            s = services[w.name]
            assert s["read_only"] is True
            assert "/tmp" in s["tmpfs"]
            assert s["user"] == "10001:10001"
            assert s["cap_drop"] == ["ALL"]
            assert "no-new-privileges:true" in s["security_opt"]
            assert "privileged" not in s
            assert "cap_add" not in s
        for a in plan.addons:
            if not a.external:
                s = services[a.name]
                assert s["read_only"] is True
                assert s["cap_drop"] == ["ALL"]
                assert "no-new-privileges:true" in s["security_opt"]
                assert s["user"] == f"{a.run_as_user}:{a.run_as_user}"


def test_services_wait_for_their_addons(example: str) -> None:
    for kit in kits(example):
        plan = plan_of(kit)
        services = document(kit)["services"]
        running = {a.name for a in plan.addons if not a.external}
        for w in plan.workloads:
            depends = services[w.name].get("depends_on", {})
            for peer in w.egress:
                if peer.name in running:
                    expected = "service_healthy" if "healthcheck" in services[peer.name] else "service_started"
                    assert depends[peer.name] == {"condition": expected}
            for name, dependency in depends.items():
                assert name in services
                if dependency["condition"] == "service_healthy":
                    assert "healthcheck" in services[name], f"{w.name} waits for {name}, which has no healthcheck"


def test_addons_have_native_healthchecks() -> None:
    services = document(kit_of(DEMO))["services"]
    tests = {name: " ".join(services[name]["healthcheck"]["test"]) for name in ("db", "sql", "cache", "queue", "bus")}
    assert "pg_isready" in tests["db"]
    assert "mysqladmin ping" in tests["sql"]
    assert "redis-cli" in tests["cache"]
    assert "PONG" in tests["cache"]
    assert "rabbitmq-diagnostics" in tests["queue"]
    assert "/healthz" in tests["bus"]
    assert "--http_port 8222" in services["bus"]["command"][-1]
    assert "healthcheck" not in services["blob"]
    assert services["web"]["depends_on"]["blob"] == {"condition": "service_started"}
    assert services["web"]["depends_on"]["db"] == {"condition": "service_healthy"}
    assert "legacy" not in services["web"]["depends_on"]


def test_healthchecks_follow_the_probes() -> None:
    services = document(kit_of(DEMO))["services"]
    indexer = services["indexer"]["healthcheck"]
    assert indexer["test"] == ["CMD", "cat", "/tmp/ready"]
    web = services["web"]["healthcheck"]
    assert web["test"][0] == "CMD-SHELL"
    assert "http://127.0.0.1:8080/readyz" in web["test"][1]
    assert (web["interval"], web["timeout"], web["retries"]) == ("10s", "2s", 3)
    assert services["api"]["healthcheck"]["start_period"] == "60s", "startup probe: 5s x 12"


def test_ports_are_local_and_do_not_clash(example: str) -> None:
    for kit in kits(example):
        published: list[int] = []
        for name, service in document(kit)["services"].items():
            for port in service.get("ports", []):
                ip, host, container = port.split(":")
                assert ip == "127.0.0.1", f"{name} publishes {port} beyond this machine"
                published.append(int(host))
                assert int(container) > 0
        assert len(published) == len(set(published))


def test_a_clash_moves_to_the_next_free_port() -> None:
    services = document(kit_of(DEMO))["services"]
    assert services["api"]["ports"] == ["127.0.0.1:8080:8080"], "services are taken in name order"
    assert services["web"]["ports"] == ["127.0.0.1:8081:8080", "127.0.0.1:9090:9090"]
    assert services["blob"]["ports"] == ["127.0.0.1:9000:9000"]


def test_dollar_signs_reach_the_container_unchanged(example: str) -> None:
    for kit in kits(example):
        text = files(kit)[FILE]
        for value in strings(yaml.safe_load(text)):
            assert not re.search(r"(?<!\$)\$(?:\$\$)*(?!\$)", value), f"an unescaped $ in {value!r}"
    web = document(kit_of(DEMO))["services"]["web"]
    assert web["environment"]["GREETING"] == "costs $$5"
    assert web["environment"]["LITERAL"] == "$${NOT_INTERPOLATED:-x}", "the spec's $$ is a literal $"


def test_volumes_configs_and_init(example: str) -> None:
    for kit in kits(example):
        doc = document(kit)
        volumes = set(doc.get("volumes", {}))
        for name, service in doc["services"].items():
            for mount in service.get("volumes", []):
                assert mount.split(":", 1)[0] in volumes, f"{name} mounts an undeclared volume"
            for secret in service.get("secrets", []):
                assert secret["source"] in doc["secrets"]
            for config in service.get("configs", []):
                assert config["source"] in doc["configs"]
    doc = document(kit_of(DEMO))
    init = doc["services"]["volume-init"]
    assert init["command"][-1] == ("chown 10001:10001 /volumes/blob-data && chown 1000:1000 /volumes/bus-data "
                                   "&& chown 10001:10001 /volumes/indexer-data")
    assert init["cap_add"] == ["CHOWN"]
    assert init["network_mode"] == "none"
    assert doc["services"]["indexer"]["depends_on"]["volume-init"] == {"condition": "service_completed_successfully"}
    assert "volume-init" not in doc["services"]["db"].get("depends_on", {}), "postgres owns its data directory"
    assert doc["services"]["web"]["configs"] == [{"source": "web-file-0", "target": "/etc/web/app.toml"}]
    assert doc["configs"]["web-file-0"] == {"content": "price = '$$5'\n"}


def test_commands_and_limits() -> None:
    web = document(kit_of(DEMO))["services"]["web"]
    assert web["entrypoint"] == ["/app/web"]
    assert web["command"] == ["--serve"]
    assert web["deploy"] == {"resources": {"limits": {"cpus": "0.25", "memory": "300m"}}}


def test_header_lists_the_secret_files_to_create() -> None:
    header = files(kit_of(DEMO))[FILE].split("\nname:", 1)[0]
    for name in ("./secrets/session-key", "./secrets/db-password", "./secrets/api-token.env"):
        assert name in header


def test_rendering_twice_gives_the_same_bytes(example: str) -> None:
    kit = example_kit(example)
    assert files(kit) == files(kit)
    assert files(kit_of(DEMO)) == files(kit_of(DEMO))
