"""Addons in the rendered objects: external addons (secret for backups, egress to any address),
RabbitMQ's own user, and the extra writable directories of a generic addon."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from shipmate.errors import SpecError
from shipmate.plan.plan import resolve
from shipmate.render import compose
from shipmate.render.objects import render
from shipmate.spec.loader import load_text

Obj = dict[str, Any]

SPEC = textwrap.dedent("""\
    app: {name: shop, version: 2.0.0}
    services:
      web:
        ports: [{name: http, port: 8080}]
        uses: [db, cache, queue, search]
    addons:
      db: {kind: mysql, external: true}
      cache: {kind: redis, external: true}
      queue: {kind: rabbitmq}
      search: {kind: generic, image: docker.io/acme/search:1, port: 9200, writable: [/var/cache/search, /run/search]}
      pg: {kind: postgres}
    secrets:
      db-url: {external: {provider: aws, path: shop/db, key: url}}
    backups:
      - {name: db-nightly, addon: db, type: logical}
      - {name: pg-nightly, addon: pg, type: full}
    environments:
      dev: {target: local, secretsDelivery: secret}
      staging: {secretsDelivery: external-secrets, secretStore: main-store}
      prod: {secretsDelivery: csi, secretStore: aws}
""")

ANYWHERE = [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]


def objects(env: str, text: str = SPEC) -> list[Obj]:
    return render(resolve(load_text(text, "shipmate.yaml", {}).for_env(env), env))


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def named(objs: list[Obj], name: str) -> set[str]:
    return {o["kind"] for o in objs if o["metadata"]["name"] == name}


def container(objs: list[Obj], name: str) -> Obj:
    pod = find(objs, "StatefulSet", name)["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return dict(pod["containers"][0])


# --- external addons ---------------------------------------------------------------------------

@pytest.mark.parametrize(("env", "kind"), [("dev", "Secret"), ("staging", "ExternalSecret"),
                                           ("prod", "SecretProviderClass")])
def test_backed_up_external_addon_still_gets_its_password_delivered(env: str, kind: str) -> None:
    objs = objects(env)
    assert find(objs, kind, "db-secrets")["metadata"]["labels"]["app.kubernetes.io/component"] == "addon"
    cron = find(objs, "CronJob", "backup-db-nightly")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    volume = next(v for v in cron["volumes"] if v["name"] == "secrets")
    if kind == "SecretProviderClass":
        assert volume["csi"]["volumeAttributes"]["secretProviderClass"] == "db-secrets"
    else:
        assert volume["secret"]["secretName"] == "db-secrets"
        assert volume["secret"]["items"] == [{"key": "db-password", "path": "db-password", "mode": 0o400}]


def test_external_addon_password_comes_from_the_default_remote_key() -> None:
    es = find(objects("staging"), "ExternalSecret", "db-secrets")
    assert es["spec"]["data"] == [{"secretKey": "db-password", "remoteRef": {"key": "shop/staging/db-password"}}]
    spc = find(objects("prod"), "SecretProviderClass", "db-secrets")
    assert "objectName: shop/prod/db-password" in spc["spec"]["parameters"]["objects"]


def test_external_addon_has_no_pods_service_or_policy_of_its_own() -> None:
    objs = objects("prod")
    assert named(objs, "db") == set()
    assert named(objs, "cache") == set()
    assert named(objs, "cache-secrets") == set()  # used but not backed up: nothing needs its password


def test_egress_to_an_external_addon_is_its_port_anywhere() -> None:
    egress = find(objects("prod"), "NetworkPolicy", "web")["spec"]["egress"]
    by_port = {rule["ports"][0]["port"]: rule for rule in egress}
    assert by_port[3306] == {"to": ANYWHERE, "ports": [{"port": 3306, "protocol": "TCP"}]}
    assert by_port[6379] == {"to": ANYWHERE, "ports": [{"port": 6379, "protocol": "TCP"}]}
    assert by_port[5672]["to"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/instance": "shop-prod", "app.kubernetes.io/name": "queue"}}}]
    assert len(egress) == 4


def test_backup_jobs_reach_addons_inside_and_outside_the_cluster() -> None:
    policy = find(objects("prod"), "NetworkPolicy", "shop-backup")["spec"]
    assert policy["egress"] == [
        {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "shop-prod",
                                                  "app.kubernetes.io/component": "addon"}}}],
         "ports": [{"port": 5432, "protocol": "TCP"}]},
        {"to": ANYWHERE, "ports": [{"port": 3306, "protocol": "TCP"}]},
        {"ports": [{"port": 443, "protocol": "TCP"}]},
    ]
    assert [r["from"][0] for r in find(objects("prod"), "NetworkPolicy", "pg")["spec"]["ingress"]] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "shop-prod",
                                         "app.kubernetes.io/component": "backup"}}}]


def test_backups_of_external_addons_only_allow_no_pod_rule() -> None:
    only_external = SPEC.replace("  - {name: pg-nightly, addon: pg, type: full}\n", "")
    assert only_external != SPEC
    policy = find(objects("prod", only_external), "NetworkPolicy", "shop-backup")["spec"]
    assert policy["egress"] == [{"to": ANYWHERE, "ports": [{"port": 3306, "protocol": "TCP"}]},
                                {"ports": [{"port": 443, "protocol": "TCP"}]}]


# --- RabbitMQ ----------------------------------------------------------------------------------

def test_rabbitmq_runs_with_a_user_of_its_own_and_the_password_file() -> None:
    c = container(objects("prod"), "queue")
    env = [(e["name"], e.get("value")) for e in c["env"]]
    assert env == [("RABBITMQ_DEFAULT_USER", "queue")]
    assert "RABBITMQ_DEFAULT_PASS=\"$(cat /var/run/secrets/shipmate/queue-password)\"" in c["command"][2]
    doc = compose.compose(resolve(load_text(SPEC, "shipmate.yaml", {}).for_env("dev"), "dev"))
    assert doc["services"]["queue"]["environment"] == {"RABBITMQ_DEFAULT_USER": "queue"}


def test_rabbitmq_user_from_config_is_not_set_twice() -> None:
    text = SPEC.replace("queue: {kind: rabbitmq}", "queue: {kind: rabbitmq, config: {RABBITMQ_DEFAULT_USER: app}}")
    env = [(e["name"], e.get("value")) for e in container(objects("prod", text), "queue")["env"]]
    assert env == [("RABBITMQ_DEFAULT_USER", "app")]
    doc = compose.compose(resolve(load_text(text, "shipmate.yaml", {}).for_env("dev"), "dev"))
    assert doc["services"]["queue"]["environment"]["RABBITMQ_DEFAULT_USER"] == "app"


# --- writable directories of a generic addon ---------------------------------------------------

def test_generic_addon_writable_directories_are_empty_dirs() -> None:
    objs = objects("prod")
    pod = find(objs, "StatefulSet", "search")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts == {"/data": "data", "/tmp": "tmp", "/var/cache/search": "run-0", "/run/search": "run-1"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["run-0"] == {"name": "run-0", "emptyDir": {}}
    assert volumes["run-1"] == {"name": "run-1", "emptyDir": {}}
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    postgres = {m["mountPath"] for m in container(objs, "pg")["volumeMounts"]}
    assert "/var/run/postgresql" in postgres  # the kind's own directory is still there


def test_plan_and_compose_carry_the_writable_directories() -> None:
    plan = resolve(load_text(SPEC, "shipmate.yaml", {}).for_env("dev"), "dev")
    search = next(a for a in plan.addons if a.name == "search")
    assert search.writable == ("/var/cache/search", "/run/search")
    assert {p.name: p.external for p in plan.workload("web").egress} == {
        "cache": True, "db": True, "queue": False, "search": False}
    assert compose.compose(plan)["services"]["search"]["tmpfs"] == ["/tmp", "/var/cache/search", "/run/search"]


@pytest.mark.parametrize(("writable", "message"), [
    ("[var/cache]", "must be an absolute directory path"),
    ("[/var/cache/]", "must be an absolute directory path"),
    ("[/var/../etc]", "must be an absolute directory path"),
    ("['//var']", "must be an absolute directory path"),
    ("[/]", "must be an absolute directory path"),
    ("[/tmp]", "is always writable"),
    ("[/data]", "is always writable"),
    ("[/var/cache, /var/cache]", "is listed twice"),
])
def test_writable_paths_are_checked(writable: str, message: str) -> None:
    text = SPEC.replace("writable: [/var/cache/search, /run/search]", f"writable: {writable}")
    with pytest.raises(SpecError, match=message):
        load_text(text, "shipmate.yaml", {})


def test_writable_is_only_for_generic_addons() -> None:
    text = SPEC.replace("pg: {kind: postgres}", "pg: {kind: postgres, writable: [/var/lib/extra]}")
    with pytest.raises(SpecError, match="writable is for kind: generic addons"):
        load_text(text, "shipmate.yaml", {})


def test_run_of_a_generic_addon_is_local_only() -> None:
    """`run` says how the local target runs the addon; Kubernetes and compose run the image, unchanged."""
    text = SPEC.replace("writable: [/var/cache/search, /run/search]",
                        "writable: [/var/cache/search, /run/search], run: python3 ../standin/standin.py")
    assert text != SPEC
    for env in ("dev", "prod"):
        assert objects(env, text) == objects(env)
    with_run = resolve(load_text(text, "shipmate.yaml", {}).for_env("dev"), "dev")
    assert next(a for a in with_run.addons if a.name == "search").run == "python3 ../standin/standin.py"
    assert compose.compose(with_run) == compose.compose(resolve(load_text(SPEC, "shipmate.yaml", {}).for_env("dev"),
                                                                "dev"))
