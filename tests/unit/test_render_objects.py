"""Plan -> Kubernetes objects: hardening, secret delivery, network policies and routes."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from shipmate.plan.plan import resolve
from shipmate.render.objects import KIND_RANK, render
from shipmate.spec.loader import load_text

SPEC = textwrap.dedent("""\
    app: {name: shop, version: 2.0.0}
    services:
      web:
        ports: [{name: http, port: 8080}]
        replicas: 3
        config: {LOG_LEVEL: info}
        configFiles: {/etc/web/app.toml: "a = 1\\n", /etc/web/b.ini: "x", /opt/c.txt: "c"}
        secrets: [db-url, {secret: api-key, delivery: env}]
        uses: [db]
        expose: {host: shop.example.com, websocket: true}
      batch:
        kind: StatefulSet
        replicas: 1
        storage: 5Gi
        ports: [{name: http, port: 9000}]
        metrics: null
        autoscaling: {minReplicas: 2, maxReplicas: 4}
      agent:
        kind: DaemonSet
        probes:
          liveness: {exec: [cat, /tmp/ok]}
          readiness: {exec: [cat, /tmp/ok]}
    addons:
      db: {kind: postgres}
    secrets:
      db-url: {from: {addon: db}}
      api-key: {external: {provider: vault, path: kv/shop/api, key: token}}
    backups:
      - {name: nightly, addon: db, type: logical, tables: [orders]}
    environments:
      dev: {secretsDelivery: secret}
      staging: {secretsDelivery: external-secrets, secretStore: main-store, ingress: {kind: gateway, gateway: gw}}
      prod: {secretsDelivery: csi}
""")


def objects(env: str) -> list[dict[str, Any]]:
    return render(resolve(load_text(SPEC, "shipmate.yaml", {}).for_env(env), env))


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def kinds(objs: list[dict[str, Any]], name: str) -> set[str]:
    return {o["kind"] for o in objs if o["metadata"]["name"] == name}


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_every_container_is_hardened(env: str) -> None:
    for obj in objects(env):
        spec = obj.get("spec", {})
        pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get(
            "template", {}).get("spec")
        if not pod:
            continue
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert set(c["resources"]) == {"requests", "limits"}
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])
            if obj["kind"] != "CronJob":
                assert "livenessProbe" in c
                assert "readinessProbe" in c


def test_services_run_as_10001_and_roll_25_0() -> None:
    web = find(objects("prod"), "Deployment", "web")
    assert web["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    assert web["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 0}
    assert web["spec"]["replicas"] == 3


def test_labels_on_every_object() -> None:
    wanted = {"name", "instance", "version", "component", "part-of", "managed-by"}
    for obj in objects("prod"):
        got = {k.removeprefix("app.kubernetes.io/") for k in obj["metadata"]["labels"] if k.startswith("app.")}
        assert wanted <= got, obj["metadata"]["name"]


def test_objects_come_in_apply_order() -> None:
    ranks = [KIND_RANK[o["kind"]] for o in objects("prod")]
    assert ranks == sorted(ranks)
    assert objects("prod")[0]["kind"] == "Namespace"


def test_hpa_replaces_replicas_and_pdb_follows_min_replicas() -> None:
    objs = objects("prod")
    batch = find(objs, "StatefulSet", "batch")
    assert "replicas" not in batch["spec"]
    assert batch["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert find(objs, "HorizontalPodAutoscaler", "batch")["spec"]["minReplicas"] == 2
    assert "PodDisruptionBudget" in kinds(objs, "batch")
    assert "PodDisruptionBudget" in kinds(objs, "web")
    assert "PodDisruptionBudget" not in kinds(objs, "agent")
    assert "Service" not in kinds(objs, "agent")
    assert find(objs, "Service", "batch-headless")["spec"]["clusterIP"] == "None"


def test_config_map_holds_config_and_files_never_secrets() -> None:
    objs = objects("prod")
    assert find(objs, "ConfigMap", "web-config")["data"] == {"LOG_LEVEL": "info"}
    files = find(objs, "ConfigMap", "web-files")["data"]
    assert files == {"etc_web_app.toml": "a = 1\n", "etc_web_b.ini": "x", "opt_c.txt": "c"}
    web = find(objs, "Deployment", "web")["spec"]["template"]["spec"]
    mounts = {m["mountPath"] for m in web["containers"][0]["volumeMounts"]}
    assert {"/etc/web", "/opt", "/var/run/secrets/shipmate"} <= mounts


def test_csi_delivery() -> None:
    objs = objects("prod")
    spc = find(objs, "SecretProviderClass", "web-secrets")
    assert spc["spec"]["provider"] == "vault"
    assert "kv/shop/api" in spc["spec"]["parameters"]["objects"]
    assert spc["spec"]["secretObjects"][0]["data"] == [{"objectName": "api-key", "key": "api-key"}]
    pod = find(objs, "Deployment", "web")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
    assert volume["csi"]["volumeAttributes"]["secretProviderClass"] == "web-secrets"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "web-secrets", "key": "api-key"}
    assert not [o for o in objs if o["kind"] == "Secret"]


def test_external_secrets_delivery() -> None:
    objs = objects("staging")
    es = find(objs, "ExternalSecret", "web-secrets")
    assert es["spec"]["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "main-store"}
    refs = {d["secretKey"]: d["remoteRef"] for d in es["spec"]["data"]}
    assert refs["api-key"] == {"key": "kv/shop/api", "property": "token"}
    assert refs["db-url"] == {"key": "shop/staging/db-url"}
    assert es["spec"]["refreshInterval"] == "1m"


def test_dev_secret_object_carries_no_data() -> None:
    secret = find(objects("dev"), "Secret", "web-secrets")
    assert "data" not in secret
    assert "stringData" not in secret


def test_network_policies_default_deny_and_implied_allows() -> None:
    objs = objects("prod")
    assert find(objs, "NetworkPolicy", "default-deny")["spec"] == {
        "podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    web = find(objs, "NetworkPolicy", "web")["spec"]
    assert web["egress"] == [{"to": [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/instance": "shop-prod", "app.kubernetes.io/name": "db"}}}],
        "ports": [{"port": 5432, "protocol": "TCP"}]}]
    sources = [rule["from"][0] for rule in web["ingress"]]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in sources
    db = find(objs, "NetworkPolicy", "db")["spec"]
    allowed = [r["from"][0]["podSelector"]["matchLabels"] for r in db["ingress"]]
    assert {"app.kubernetes.io/instance": "shop-prod", "app.kubernetes.io/name": "web"} in allowed
    assert {"app.kubernetes.io/instance": "shop-prod", "app.kubernetes.io/component": "backup"} in allowed


def test_ingress_or_gateway_route() -> None:
    ingress = find(objects("prod"), "Ingress", "web")
    assert ingress["spec"]["tls"] == [{"hosts": ["shop.example.com"], "secretName": "web-tls"}]
    assert "nginx.ingress.kubernetes.io/proxy-read-timeout" in ingress["metadata"]["annotations"]
    route = find(objects("staging"), "HTTPRoute", "web")
    assert route["spec"]["parentRefs"] == [{"name": "gw"}]
    assert route["spec"]["hostnames"] == ["shop.example.com"]


def test_backup_cronjob_and_monitoring() -> None:
    objs = objects("prod")
    cron = find(objs, "CronJob", "backup-nightly")
    args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["backup", "run", "--env", "prod", "--addon", "db", "--type", "logical", "--table", "orders"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    rules = find(objs, "PrometheusRule", "shop-alerts")["spec"]["groups"][0]["rules"]
    names = {(r["alert"], r["labels"]["service"]) for r in rules}
    assert ("HighErrorRate", "web") in names
    assert ("ServiceDown", "batch") in names
    assert ("HighErrorRate", "batch") not in names  # batch has metrics: null
    board = json.loads(find(objs, "ConfigMap", "shop-dashboard")["data"]["shop.json"])
    assert {p["title"].split(":")[0] for p in board["panels"]} == {"web"}
    assert find(objs, "ServiceMonitor", "web")["spec"]["endpoints"][0]["port"] == "http"


def test_render_is_deterministic() -> None:
    assert objects("prod") == objects("prod")
