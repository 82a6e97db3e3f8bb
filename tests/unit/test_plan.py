"""The plan: defaults, overrides, strategies and determinism, on small specs written here."""

from __future__ import annotations

import textwrap

import pytest

from shipmate.plan.plan import resolve
from shipmate.spec.loader import load_text

BASE = textwrap.dedent("""\
    app: {name: shop, version: 2.0.0, registry: ghcr.io/acme}
    services:
      web:
        ports: [{name: http, port: 8080}, {name: admin, port: 9000, protocol: tcp}]
        replicas: 2
        config: {LOG_LEVEL: info, DEBUG: false, WORKERS: 4}
        secrets: [db-url, {secret: api-key, delivery: env}]
        uses: [db]
        calls: [worker]
        expose: {host: shop.example.com}
      worker:
        image: docker.io/acme/worker:7.1
        ports: [{name: grpc, port: 7000, protocol: grpc}]
    addons:
      db: {kind: postgres, version: "16.2"}
    secrets:
      db-url: {from: {addon: db}}
      api-key: {set: true}
    strategies:
      careful:
        type: canary
        stickyKey: {header: X-User}
        steps: [{weight: 10}, {analysis: true}, {pause: indefinite}, {pause: 90s}, {weight: 100}]
        analysis: {checks: [{name: e, metric: error-rate, max: 0.01}]}
      wide:
        type: rolling
        maxSurge: 50%
        maxUnavailable: 1
    environments:
      dev: {target: local, secretsDelivery: secret}
      prod:
        cluster: {namespace: shop-live}
        strategy: careful
        overrides:
          services:
            web:
              replicas: 4
              config: {LOG_LEVEL: warn, DEBUG: null}
              secrets: [db-url]
      staging: {strategy: wide}
""")


def plan(env: str, text: str = BASE):
    return resolve(load_text(text, "shipmate.yaml", {}).for_env(env), env)


def test_images_tags_and_namespace() -> None:
    p = plan("dev")
    web, worker = p.workload("web"), p.workload("worker")
    assert web.image_ref == "ghcr.io/acme/web:2.0.0"
    assert worker.image_ref == "docker.io/acme/worker:7.1"
    assert p.namespace == "shop-dev"
    assert plan("prod").namespace == "shop-live"


def test_default_probes_follow_the_first_port_protocol() -> None:
    p = plan("dev")
    web = p.workload("web")
    assert (web.readiness.check, web.readiness.path, web.readiness.port) == ("http", "/readyz", 8080)
    assert (web.liveness.check, web.liveness.path) == ("http", "/healthz")
    worker = p.workload("worker")
    assert (worker.liveness.check, worker.liveness.port) == ("tcp", 7000)


def test_config_values_become_strings_and_sorted() -> None:
    assert plan("dev").workload("web").config == (("DEBUG", "false"), ("LOG_LEVEL", "info"), ("WORKERS", "4"))


def test_overrides_merge_maps_replace_lists_and_null_deletes() -> None:
    web = plan("prod").workload("web")
    assert web.replicas == 4
    assert web.config == (("LOG_LEVEL", "warn"), ("WORKERS", "4"))
    assert [s.secret for s in web.secrets] == ["db-url"]
    assert plan("dev").workload("web").replicas == 2


def test_secret_mounts_default_names() -> None:
    web = plan("dev").workload("web")
    by_name = {s.secret: s for s in web.secrets}
    assert by_name["db-url"].delivery == "file"
    assert by_name["db-url"].file == "db-url"
    assert by_name["api-key"].delivery == "env"
    assert by_name["api-key"].env == "API_KEY"


def test_network_peers_from_uses_and_calls() -> None:
    p = plan("dev")
    web, worker = p.workload("web"), p.workload("worker")
    assert [(e.name, e.ports) for e in web.egress] == [("db", (5432,)), ("worker", (7000,))]
    assert [(i.name, i.ports) for i in worker.ingress_from] == [("web", (7000,))]
    assert p.addons[0].users == ("web",)


def test_rolling_strategy_parameters_win_over_service_update() -> None:
    assert (plan("staging").workload("web").max_surge, plan("staging").workload("web").max_unavailable) == ("50%", 1)
    assert (plan("dev").workload("web").max_surge, plan("dev").workload("web").max_unavailable) == ("25%", 0)


def test_canary_steps_resolve_pauses() -> None:
    s = plan("prod").strategy
    assert s.type == "canary"
    assert (s.sticky_source, s.sticky_name) == ("header", "X-User")
    assert [st.weight for st in s.steps] == [10, None, None, None, 100]
    assert s.steps[1].analysis
    assert s.steps[2].pause_indefinite
    assert s.steps[3].pause_seconds == 90
    assert s.analysis is not None
    assert s.analysis.checks[0].max == 0.01


def test_addon_version_sets_the_image_tag() -> None:
    assert plan("dev").addons[0].image == "docker.io/library/postgres:16.2"


def test_plans_are_deterministic_and_frozen() -> None:
    assert plan("prod") == plan("prod")
    with pytest.raises(AttributeError):
        plan("prod").app = "other"  # type: ignore[misc]


def test_unknown_environment_is_a_spec_error() -> None:
    from shipmate.errors import SpecError

    spec = load_text(BASE, "shipmate.yaml", {})
    with pytest.raises(SpecError, match="no environment 'qa'"):
        spec.for_env("qa")


def test_a_digest_pins_the_image_and_the_version_only_labels_it() -> None:
    text = BASE.replace("image: docker.io/acme/worker:7.1",
                        "image: docker.io/acme/worker:7.1@sha256:" + "a" * 64)
    worker = plan("dev", text).workload("worker")
    assert worker.image_ref == "docker.io/acme/worker@sha256:" + "a" * 64
    assert worker.tag == "7.1"


def test_a_generic_addon_run_is_planned_as_given() -> None:
    text = BASE.replace('  db: {kind: postgres, version: "16.2"}\n',
                        '  db: {kind: postgres, version: "16.2"}\n'
                        '  vector: {kind: generic, image: acme/vector:1, port: 8000, run: python3 stub.py}\n'
                        '  cache: {kind: generic, image: acme/cache:1, port: 7000, run: [./cache, --fast]}\n')
    assert text != BASE
    by_name = {a.name: a for a in plan("dev", text).addons}
    assert by_name["vector"].run == "python3 stub.py"
    assert by_name["cache"].run == ("./cache", "--fast")
    assert by_name["db"].run is None
