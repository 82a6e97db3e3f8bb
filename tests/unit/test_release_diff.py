"""Release diffs: services, config and secret versions, rendered objects field by field, secrets masked."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from typing import Any

from shipmate.plan.models import Plan
from shipmate.plan.plan import resolve
from shipmate.release import codec
from shipmate.release.diff import Change, changed_services, diff_objects, diff_releases, format_diff, removed_services
from shipmate.release.models import Release
from shipmate.render.objects import render
from tests.support import example_spec

SECRET_OLD = "hunter2-old-value"  # noqa: S105 - a made-up value that must never be shown
SECRET_NEW = "s3cr3t-new-value"  # noqa: S105


@cache
def dev_plan() -> Plan:
    return resolve(example_spec("cyber-werewolves").for_env("dev"), "dev")


def secret(name: str, **data: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "cyber-werewolves-dev"},
            "type": "Opaque", **data}


def make(plan: Plan, number: int, version: str, extra: tuple[dict[str, Any], ...] = (), **changes: Any) -> Release:
    base = Release(number=number, environment="dev", created_at=float(number), spec_digest=f"d{number}", plan=plan,
                   versions=tuple((w.name, version) for w in plan.workloads), secret_versions=(("jwt-secret", 1),),
                   objects=(*render(plan), *extra), message="", author="ci", git_commit=None, overrides=())
    return replace(base, **changes)


def with_api(plan: Plan, **changes: Any) -> Plan:
    return replace(plan, workloads=tuple(replace(w, **changes) if w.name == "api-server" else w
                                         for w in plan.workloads))


def pair() -> tuple[Release, Release]:
    plan = dev_plan()
    api = plan.workload("api-server")
    config = (*((k, "0.1" if k == "FAULT_RATE" else v) for k, v in api.config), ("NEW_FLAG", "on"))
    plan_b = with_api(plan, tag="1.3.0", config=config, replicas=api.replicas + 1)
    a = make(plan, 1, "1.2.3", extra=(secret("jwt", data={"key": SECRET_OLD}),))
    b = make(plan_b, 2, "1.3.0", extra=(secret("jwt", data={"key": SECRET_NEW}, stringData={"pem": SECRET_NEW}),),
             secret_versions=(("jwt-secret", 2), ("db-url", 1)),
             overrides=(("services.api-server.config.FAULT_RATE", "0.1"), ("secrets.jwt-secret.value", SECRET_NEW)))
    return a, b


def test_services_config_and_secret_versions() -> None:
    a, b = pair()
    replicas = a.workload("api-server").replicas
    changes = [c for c in diff_releases(a, b) if not c.kind.startswith("object-")]
    assert changes == [
        Change("version", "agent-runtime", "1.2.3", "1.3.0"),
        Change("version", "api-server", "1.2.3", "1.3.0"),
        Change("image", "services.api-server.image", "my-registry/api-server:1.2.3", "my-registry/api-server:1.3.0"),
        Change("replicas", "services.api-server.replicas", replicas, replicas + 1),
        Change("config", "services.api-server.config.FAULT_RATE", "0", "0.1"),
        Change("config", "services.api-server.config.NEW_FLAG", None, "on"),
        Change("version", "ws-gateway", "1.2.3", "1.3.0"),
        Change("secret-version", "secrets.jwt-secret", 1, 2),
        Change("secret-version", "secrets.db-url", None, 1),
        Change("override", "services.api-server.config.FAULT_RATE", None, "0.1"),
        Change("override", "secrets.jwt-secret.value", None, "***"),
    ]


def test_object_changes_have_readable_paths() -> None:
    a, b = pair()
    objects = [c for c in diff_releases(a, b) if c.kind.startswith("object-")]
    by_path = {c.path: c for c in objects}
    image = by_path["Deployment/api-server: spec.template.spec.containers[0].image"]
    assert (image.before, image.after) == ("my-registry/api-server:1.2.3", "my-registry/api-server:1.3.0")
    assert by_path["Deployment/api-server: spec.replicas"].after == b.workload("api-server").replicas
    assert by_path["ConfigMap/api-server-config: data.FAULT_RATE"].after == "0.1"
    label = 'ConfigMap/api-server-config: metadata.labels["app.kubernetes.io/version"]'
    assert (by_path[label].before, by_path[label].after) == ("1.2.3", "1.3.0")


def test_secret_values_never_appear() -> None:
    a, b = pair()
    changes = diff_releases(a, b)
    secret_changes = [c for c in changes if c.path.startswith("Secret/jwt")]
    assert secret_changes == [
        Change("object-changed", "Secret/jwt: data.key", "***", "***"),
        Change("object-changed", "Secret/jwt: stringData", None, {"pem": "***"}),
    ]
    text = "\n".join(format_diff(changes))
    dumped = json.dumps([codec.to_json(c) for c in changes]) + repr(changes)
    for value in (SECRET_OLD, SECRET_NEW):
        assert value not in text
        assert value not in dumped
    assert "~ object          Secret/jwt: data.key: changed" in text
    assert '~ object          Secret/jwt: stringData: {"pem": "***"}' not in text
    assert '+ object          Secret/jwt: stringData: {"pem": "***"}' in text


def test_format_diff_lines() -> None:
    changes = [
        Change("version", "api-server", "1.2.3", "1.3.0"),
        Change("config", "services.api-server.config.NEW_FLAG", None, "on"),
        Change("config", "services.api-server.config.OLD", "x", None),
        Change("config", "services.api-server.config.EMPTY", "", " padded "),
        Change("replicas", "services.api-server.replicas", 1, 2),
        Change("object-added", "Deployment/worker", None, None),
        Change("object-removed", "Service/legacy", None, None),
        Change("service-added", "worker", None, "1.0.0"),
        Change("object-changed", "Deployment/api-server: spec.replicas", 1, 2),
        Change("config-file", "services.api.configFiles.app.yaml", "a: 1\n" * 40, "a: 2\n"),
    ]
    assert format_diff(changes) == [
        "~ version         api-server: 1.2.3 -> 1.3.0",
        "+ config          services.api-server.config.NEW_FLAG: on",
        "- config          services.api-server.config.OLD: x",
        '~ config          services.api-server.config.EMPTY: "" -> " padded "',
        "~ replicas        services.api-server.replicas: 1 -> 2",
        "+ object          Deployment/worker",
        "- object          Service/legacy",
        "+ service         worker: 1.0.0",
        "~ object          Deployment/api-server: spec.replicas: 1 -> 2",
        '~ config-file     services.api.configFiles.app.yaml: "' + "a: 1\\n" * 13 + 'a… -> "a: 2\\n"',
    ]


def test_objects_added_removed_and_ambiguous_names() -> None:
    one = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "a"}}
    two = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "b"}}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": "1"}}
    changed = {**cm, "data": {"k": "2"}}
    assert diff_objects([one, cm], [two, changed]) == [
        Change("object-added", "Service/b/api", None, None),
        Change("object-changed", "ConfigMap/x: data.k", "1", "2"),
        Change("object-removed", "Service/a/api", None, None),
    ]
    longer = {**cm, "spec": {"ports": [1, 2]}}
    shorter = {**cm, "spec": {"ports": [1]}}
    assert diff_objects([longer], [shorter]) == [Change("object-changed", "ConfigMap/x: spec.ports[1]", 2, None)]


def test_identical_releases_have_no_diff_and_no_changed_services() -> None:
    a, _ = pair()
    assert diff_releases(a, replace(a, number=2, message="again")) == []
    assert changed_services(a, replace(a, number=2)) == ()


def test_changed_and_removed_services() -> None:
    a, b = pair()
    assert changed_services(a, b) == ("agent-runtime", "api-server", "ws-gateway")  # every version moved
    only_api = replace(b, versions=a.versions)
    assert changed_services(a, only_api) == ("api-server",)
    assert changed_services(None, a) == a.services
    fewer = replace(a.plan, workloads=tuple(w for w in a.plan.workloads if w.name != "agent-runtime"))
    smaller = replace(a, plan=fewer)
    assert removed_services(a, smaller) == ("agent-runtime",)
    assert removed_services(None, a) == ()
    assert Change("service-removed", "agent-runtime", "1.2.3", None) in diff_releases(a, smaller)
