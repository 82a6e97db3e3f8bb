"""Malformed specs through the real CLI: each is refused with exit code 2 and one line on stderr,
`error: <file>:<line>:<col>: <key path>: <message>`, at the exact place a person has to edit.

Table-driven. Most cases edit one line of BASE or add lines after a known line, so the expected
line and column can be read off the text.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shipmate.cli.main import main

# Line numbers of BASE, for reading the cases below:
#  1 version            5 api             9 uses          13 db-url        17 (first added line)
#  2 app                6 ports          10 addons        14 environments
#  3 name               7 - port 8080    11 db            15 dev
#  4 services           8 secrets        12 secrets       16 target
BASE = """\
version: 1
app:
  name: demo
services:
  api:
    ports:
      - {name: http, port: 8080}
    secrets: [db-url]
    uses: [db]
addons:
  db: {kind: postgres}
secrets:
  db-url: {from: {addon: db}}
environments:
  dev:
    target: local
"""

UNSET = "SHIPMATE_TEST_SURELY_UNSET"


def edit(old: str, new: str) -> str:
    """BASE with one exact piece of text replaced."""
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


def service(lines: str) -> str:
    """BASE with `lines` (indented for keys of services.api) inserted as lines 10 on."""
    return edit("    uses: [db]\n", "    uses: [db]\n" + lines)


def add(lines: str) -> str:
    """BASE with `lines` appended from line 17 (at the top level, or indented into `dev`)."""
    return BASE + lines


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    line: int
    col: int
    message: str
    path: str = ""


CASES = [
    # --- YAML syntax --------------------------------------------------------------------
    Case("tab-indentation", edit("  name: demo", "\tname: demo"), 3, 1, "indent with spaces"),
    Case("unclosed-flow-sequence", edit("name: demo", "name: [demo"), 3, 9,
         "flow sequence that starts here"),
    Case("unclosed-quote", edit("name: demo", 'name: "demo'), 3, 9, "quoted scalar that starts here"),
    Case("colon-in-plain-value", edit("name: demo", "name: demo: x"), 3, 13,
         "mapping values are not allowed"),
    Case("bad-indentation", edit("  name: demo\n", "  name: demo\n team: x\n"), 4, 2,
         "did not find expected key"),
    Case("empty-file", "", 1, 1, "the file is empty"),
    Case("comments-only", "# nothing yet\n", 1, 1, "the file is empty"),
    Case("two-documents", BASE + "---\nversion: 1\n", 18, 1, "one YAML document per file"),
    Case("top-level-list", "- app\n- services\n", 1, 1, "must be a mapping"),
    Case("control-character", edit("name: demo", "name: de\x07mo"), 3, 11, "#x0007"),
    Case("unknown-yaml-tag", edit("name: demo", "name: !Ref demo"), 3, 9, "unsupported YAML tag '!Ref'",
         "app.name"),
    Case("python-tag", edit("name: demo", "name: !!python/object:os.system demo"), 3, 9,
         "unsupported YAML tag", "app.name"),
    Case("bad-int-tag", service("    replicas: !!int many\n"), 10, 15, "'many' is not a valid int",
         "services.api.replicas"),
    Case("merge-key", edit("  db: {kind: postgres}\n", "  base: &b {kind: postgres}\n  db:\n    <<: *b\n"),
         13, 5, "merge keys (<<) are not supported", "addons.db"),
    Case("complex-key", add("? [a, b]\n: c\n"), 17, 3, "a key must be a plain string"),
    Case("recursive-alias", edit("  api:\n", "  api: &a\n    self: *a\n"), 6, 5,
         "alias refers to a collection that contains it", "services.api.self"),
    Case("nested-too-deep", add("x: " + "[" * 100 + "]" * 100 + "\n"), 17, 67, "nested more than 64 deep"),
    # --- unknown and duplicate keys -----------------------------------------------------------
    Case("unknown-top-level-key", add("servics: {}\n"), 17, 1, "did you mean 'services'?", "servics"),
    Case("unknown-service-key", service("    replica: 2\n"), 10, 5, "did you mean 'replicas'?",
         "services.api.replica"),
    Case("unknown-addon-key", edit("{kind: postgres}", "{kind: postgres, databse: [x]}"), 11, 24,
         "did you mean 'databases'?", "addons.db.databse"),
    Case("unknown-environment-key", add("    secretDelivery: csi\n"), 17, 5, "did you mean 'secretsDelivery'?",
         "environments.dev.secretDelivery"),
    Case("unknown-key-no-close-match", add("    zone: eu-1\n"), 17, 5, "known keys: approvals, cluster",
         "environments.dev.zone"),
    Case("duplicate-key", edit("  name: demo\n", "  name: demo\n  name: demo2\n"), 4, 3,
         "duplicate key 'name'", "app.name"),
    Case("duplicate-service", edit("addons:\n", "  api:\n    ports: [{port: 80}]\naddons:\n"), 10, 3,
         "duplicate key 'api'", "services.api"),
    Case("duplicate-port-name", edit("      - {name: http, port: 8080}\n",
                                     "      - {name: http, port: 8080}\n      - {name: http, port: 8081}\n"),
         8, 10, "port name 'http' is used twice", "services.api.ports[1].name"),
    Case("duplicate-backup-name", add("backups:\n  - {name: b, addon: db}\n  - {name: b, addon: db}\n"),
         19, 6, "backup name 'b' is used twice", "backups[1].name"),
    # --- missing keys ------------------------------------------------------------------------
    Case("missing-app", edit("app:\n  name: demo\n", ""), 1, 1, "required key 'app' is missing"),
    Case("missing-app-name", edit("  name: demo\n", "  team: core\n"), 2, 1, "required key 'name' is missing",
         "app"),
    Case("missing-environments", edit("environments:\n  dev:\n    target: local\n", ""), 1, 1,
         "required key 'environments' is missing"),
    Case("missing-port-number", edit("{name: http, port: 8080}", "{name: http}"), 7, 9,
         "required key 'port' is missing", "services.api.ports[0]"),
    Case("no-services", edit("services:\n  api:\n    ports:\n      - {name: http, port: 8080}\n"
                             "    secrets: [db-url]\n    uses: [db]\n", "services: {}\n"), 4, 1,
         "at least 1 item", "services"),
    Case("generic-addon-without-image",
         edit("  db: {kind: postgres}\n", "  db: {kind: postgres}\n  chroma: {kind: generic, port: 8000}\n"),
         12, 3, "a generic addon needs an image and a port", "addons.chroma"),
    Case("writable-not-absolute",
         edit("  db: {kind: postgres}\n",
              "  db: {kind: postgres}\n  chroma: {kind: generic, image: acme/chroma:1, port: 8000, "
              "writable: [/data/x, cache]}\n"),
         12, 81, "'cache' must be an absolute directory path", "addons.chroma.writable[1]"),
    Case("writable-of-a-built-in-kind", edit("{kind: postgres}", "{kind: postgres, writable: [/run/x]}"),
         11, 24, "writable is for kind: generic addons", "addons.db.writable"),
    Case("run-of-a-built-in-kind", edit("{kind: postgres}", "{kind: postgres, run: ./pg.sh}"),
         11, 24, "run is for kind: generic addons; the local target runs kind: postgres from this machine's "
         "own binaries", "addons.db.run"),
    Case("empty-run-of-a-generic-addon",
         edit("  db: {kind: postgres}\n",
              "  db: {kind: postgres}\n  chroma: {kind: generic, image: acme/chroma:1, port: 8000, run: []}\n"),
         12, 61, "run needs a command", "addons.chroma.run"),
    # --- wrong types ---------------------------------------------------------------------------
    Case("replicas-not-a-number", service("    replicas: many\n"), 10, 5, "valid integer",
         "services.api.replicas"),
    Case("replicas-fraction", service("    replicas: 2.5\n"), 10, 5, "fractional part", "services.api.replicas"),
    Case("replicas-negative", service("    replicas: -1\n"), 10, 5, "greater than or equal to 0",
         "services.api.replicas"),
    Case("ports-not-a-list", edit("    ports:\n      - {name: http, port: 8080}\n", "    ports: 8080\n"),
         6, 5, "valid list", "services.api.ports"),
    Case("service-is-null", edit("addons:\n", "  worker:\naddons:\n"), 10, 3, "valid dictionary",
         "services.worker"),
    Case("config-value-list", service("    config: {LEVELS: [a, b]}\n"), 10, 14, "valid string",
         "services.api.config.LEVELS"),
    Case("error-rate-as-percent", add("alerts:\n  errorRate: 5%\n"), 18, 3, "valid number", "alerts.errorRate"),
    Case("error-rate-above-one", add("alerts:\n  errorRate: 5\n"), 18, 3, "less than 1", "alerts.errorRate"),
    Case("spec-version", edit("version: 1", "version: 2"), 1, 1, "Input should be 1", "version"),
    Case("enum-value", service("    kind: Job\n"), 10, 5, "'Deployment', 'StatefulSet' or 'DaemonSet'",
         "services.api.kind"),
    # --- references between parts ------------------------------------------------------------
    Case("uses-unknown-addon", edit("uses: [db]", "uses: [dbx]"), 9, 12, "unknown addon 'dbx'; did you mean 'db'?",
         "services.api.uses[0]"),
    Case("calls-unknown-service", service("    calls: [apx]\n"), 10, 13,
         "unknown service 'apx'; did you mean 'api'?", "services.api.calls[0]"),
    Case("unknown-secret", edit("secrets: [db-url]", "secrets: [db-uri]"), 8, 15,
         "unknown secret 'db-uri'; did you mean 'db-url'?", "services.api.secrets[0]"),
    Case("secret-from-unknown-addon", edit("{addon: db}}", "{addon: pg}}"), 13, 19, "unknown addon 'pg'",
         "secrets.db-url.from.addon"),
    Case("unknown-strategy", add("    strategy: canary\n"), 17, 5, "unknown strategy 'canary'",
         "environments.dev.strategy"),
    Case("unknown-promote-from", add("    promoteFrom: stagin\n"), 17, 5, "unknown environment 'stagin'",
         "environments.dev.promoteFrom"),
    Case("backup-of-unknown-addon", add("backups:\n  - {name: b, addon: dbb}\n"), 18, 15,
         "unknown addon 'dbb'; did you mean 'db'?", "backups[0].addon"),
    Case("slo-of-unknown-service", add("slos:\n  - {name: s, service: apx, objective: 99}\n"), 18, 15,
         "unknown service 'apx'", "slos[0].service"),
    Case("canary-analysis-step-without-analysis",
         add("strategies:\n  c: {type: canary, steps: [{weight: 5}, {analysis: true}]}\n"), 18, 3,
         "the strategy has no analysis", "strategies.c"),
    Case("probe-on-unknown-port-name", service("    probes:\n      readiness: {http: {path: /r, port: admin}}\n"),
         11, 36, "no port named 'admin'", "services.api.probes.readiness.http.port"),
    # --- quantities, schedules, durations, percentages, ports, names --------------------------
    Case("cpu-quantity", service("    resources: {requests: {cpu: lots}}\n"), 10, 28,
         "expected a CPU quantity", "services.api.resources.requests.cpu"),
    Case("memory-quantity", service("    resources: {requests: {memory: 12XB}}\n"), 10, 28,
         "expected a memory quantity", "services.api.resources.requests.memory"),
    Case("requests-above-limits", service("    resources: {requests: {cpu: '2'}, limits: {cpu: 1}}\n"), 10, 5,
         "requests.cpu 2 is more than limits.cpu 1", "services.api.resources"),
    Case("zero-storage", edit("{kind: postgres}", "{kind: postgres, storage: 0Gi}"), 11, 24,
         "must be more than zero", "addons.db.storage"),
    Case("cron-four-fields", add("backups:\n  - {name: b, addon: db, schedule: '0 2 * *'}\n"), 18, 26,
         "cron expression of 5 fields", "backups[0].schedule"),
    Case("cron-minute-out-of-range", add("backups:\n  - {name: b, addon: db, schedule: '61 2 * * *'}\n"), 18, 26,
         "minute must be within 0-59", "backups[0].schedule"),
    Case("cron-zero-step", add("backups:\n  - {name: b, addon: db, schedule: '*/0 * * * *'}\n"), 18, 26,
         "step '0' must be a positive number", "backups[0].schedule"),
    Case("cron-range-backwards", add("backups:\n  - {name: b, addon: db, schedule: '0 5-2 * * *'}\n"), 18, 26,
         "runs backwards", "backups[0].schedule"),
    Case("duration-unit", add("alerts:\n  serviceDown: 5y\n"), 18, 3, "expected a duration", "alerts.serviceDown"),
    Case("duration-negative", add("alerts:\n  latencyP99: -5\n"), 18, 3, "cannot be negative",
         "alerts.latencyP99"),
    Case("duration-infinite", add("alerts:\n  latencyP99: .inf\n"), 18, 3, "(got inf)", "alerts.latencyP99"),
    Case("duration-in-rotation", edit("{from: {addon: db}}", "{from: {addon: db}, rotation: {interval: soon}}"),
         13, 42, "expected a duration", "secrets.db-url.rotation.interval"),
    Case("percentage-above-100", add("strategies:\n  r: {type: rolling, maxSurge: 150%}\n"), 18, 22,
         "percentage from 0% to 100%", "strategies.r.maxSurge"),
    Case("percentage-negative", add("strategies:\n  r: {type: rolling, maxUnavailable: -1}\n"), 18, 22,
         "must not be negative", "strategies.r.maxUnavailable"),
    Case("hpa-target-above-100", service("    autoscaling: {cpu: 150}\n"), 10, 19, "less than or equal to 100",
         "services.api.autoscaling.cpu"),
    Case("hpa-min-above-max", service("    autoscaling: {minReplicas: 5, maxReplicas: 2}\n"), 10, 5,
         "minReplicas 5 is more than maxReplicas 2", "services.api.autoscaling"),
    Case("port-zero", edit("port: 8080", "port: 0"), 7, 22, "greater than or equal to 1", "services.api.ports[0].port"),
    Case("port-too-big", edit("port: 8080", "port: 70000"), 7, 22, "less than or equal to 65535",
         "services.api.ports[0].port"),
    Case("addon-port-too-big", edit("{kind: postgres}", "{kind: postgres, port: 99999}"), 11, 24,
         "less than or equal to 65535", "addons.db.port"),
    Case("service-name-not-dns", edit("  api:\n", "  Api_Service:\n"),
         5, 3, "must be lower case letters, digits and '-'", "services.Api_Service"),
    Case("namespace-not-dns", add("    cluster: {namespace: My_NS}\n"), 17, 15, "name 'My_NS' must be lower case",
         "environments.dev.cluster.namespace"),
    Case("name-too-long", edit("name: demo", "name: " + "a" * 64), 3, 3, "at most 63 characters", "app.name"),
    Case("config-key-not-env-name", service("    config: {log-level: info}\n"), 10, 14,
         "not a valid environment variable name", "services.api.config.log-level"),
    Case("image-with-space", service("    image: my image\n"), 10, 5, "expected an image reference",
         "services.api.image"),
    Case("service-name-starts-with-digit", edit("  api:\n", "  1api:\n"), 5, 3, "1api", "services.1api"),
    Case("port-name-longer-than-15", edit("{name: http,", "{name: metrics-endpoint-http,"), 7, 10,
         "15", "services.api.ports[0].name"),
    Case("replicas-above-int32", service("    replicas: 99999999999\n"), 10, 5, "2147483647",
         "services.api.replicas"),
    # --- interpolation -----------------------------------------------------------------------
    Case("unset-variable", edit("name: demo", "name: ${" + UNSET + "}"), 3, 9,
         f"environment variable {UNSET} is not set", "app.name"),
    Case("malformed-variable", edit("name: demo", "name: ${APP-NAME}"), 3, 9, "is not a variable reference",
         "app.name"),
    Case("dangling-variable", edit("name: demo", "name: demo-${"), 3, 9, "'${' is not a variable reference",
         "app.name"),
    # --- semantics ---------------------------------------------------------------------------
    Case("plain-secrets-in-prod", edit("  dev:\n    target: local\n", "  prod:\n    secretsDelivery: secret\n"), 16, 5,
         "plain Secret objects are for dev only", "environments.prod.secretsDelivery"),
    Case("daemonset-autoscaling", service("    kind: DaemonSet\n    autoscaling: {cpu: 50}\n"), 11, 5,
         "a DaemonSet cannot autoscale", "services.api.autoscaling"),
    Case("no-ports-no-probes", edit("    ports:\n      - {name: http, port: 8080}\n", ""), 5, 3,
         "a service without ports needs probes.liveness and probes.readiness", "services.api"),
    Case("probe-with-two-checks", service("    probes:\n      liveness: {tcp: http, exec: [cat, /tmp/ok]}\n"), 11, 7,
         "exactly one of http, tcp or exec", "services.api.probes.liveness"),
    Case("env-field-with-file-delivery", edit("secrets: [db-url]", "secrets: [{secret: db-url, env: DB_URL}]"), 8, 15,
         "env is only for delivery: env", "services.api.secrets[0]"),
    Case("secret-two-sources", edit("{from: {addon: db}}", "{from: {addon: db}, set: true}"), 13, 3,
         "exactly one of generate, set, from or external", "secrets.db-url"),
    Case("canary-weights-go-down", add("strategies:\n  c: {type: canary, steps: [{weight: 50}, {weight: 10}]}\n"),
         18, 3, "canary weights must not go down", "strategies.c"),
    Case("step-with-two-actions", add("strategies:\n  c: {type: canary, steps: [{weight: 50, pause: 1m}]}\n"),
         18, 29, "a step is exactly one of weight, pause or analysis", "strategies.c.steps[0]"),
    # --- environment overrides: reported at the override's own line --------------------------
    Case("override-bad-value", add("    overrides:\n      services:\n        api: {replicas: -2}\n"), 19, 15,
         "greater than or equal to 0", "environments.dev.overrides.services.api.replicas"),
    Case("override-unknown-key", add("    overrides:\n      services:\n        api: {replica: 2}\n"), 19, 15,
         "did you mean 'replicas'?", "environments.dev.overrides.services.api.replica"),
    Case("override-list-item", add("    overrides:\n      services:\n        api:\n          ports: [{port: 0}]\n"),
         20, 20, "greater than or equal to 1", "environments.dev.overrides.services.api.ports[0].port"),
    Case("override-breaks-invariant",
         service("    autoscaling: {minReplicas: 2, maxReplicas: 4}\n")
         + "    overrides:\n      services:\n        api:\n          autoscaling: {minReplicas: 5}\n",
         21, 11, "minReplicas 5 is more than maxReplicas 4", "environments.dev.overrides.services.api.autoscaling"),
    Case("override-of-environments", add("    overrides:\n      environments: {}\n"), 18, 7,
         "an environment cannot override 'environments'", "environments.dev.overrides.environments"),
    Case("override-unset-variable", add("    overrides:\n      app: {name: '${" + UNSET + "}'}\n"), 18, 19,
         f"environment variable {UNSET} is not set", "environments.dev.overrides.app.name"),
    Case("override-in-second-environment",
         add("  prod:\n    cluster: {namespace: demo}\n    overrides:\n      services:\n"
             "        api: {resources: {limits: {memory: lots}}}\n"), 21, 36, "expected a memory quantity",
         "environments.prod.overrides.services.api.resources.limits.memory"),
    Case("override-deletes-used-addon", add("    overrides:\n      addons: {db: null}\n"), 9, 12,
         "unknown addon 'db'; none is declared; add it under addons (in environment 'dev', after its overrides)",
         "services.api.uses[0]"),
    Case("override-of-undeclared-service", add("    overrides:\n      services:\n        apii: {replicas: 2}\n"),
         19, 9, "'api'", "environments.dev.overrides.services.apii"),
]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No SHIPMATE_* settings from the caller, the unset variable really unset, and the shipmate
    logger (re-configured by every CLI run) restored afterwards."""
    for name in list(os.environ):
        if name.startswith("SHIPMATE_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    logger = logging.getLogger("shipmate")
    saved = (logger.level, list(logger.handlers), logger.propagate)
    yield
    logger.setLevel(saved[0])
    logger.handlers[:] = saved[1]
    logger.propagate = saved[2]


def test_base_spec_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "shipmate.yaml"
    spec.write_text(BASE, encoding="utf-8")
    assert main(["-f", str(spec), "validate"]) == 0
    assert capsys.readouterr().err == ""


def test_cases_are_distinct() -> None:
    assert len({c.id for c in CASES}) == len(CASES)
    assert len({c.text for c in CASES}) == len(CASES)
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_malformed_spec_is_one_located_error_line(case: Case, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "shipmate.yaml"
    spec.write_bytes(case.text.encode("utf-8"))

    code = main(["-f", str(spec), "validate"])
    out, err = capsys.readouterr()

    assert "Traceback" not in err
    assert "internal error" not in err
    assert code == 2, err
    assert out == ""
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    prefix = f"error: {spec}:{case.line}:{case.col}: "
    assert err.startswith(prefix), f"{err!r} does not start with {prefix!r}"
    rest = err[len(prefix):].rstrip("\n")
    if case.path:
        assert rest.startswith(f"{case.path}: "), f"key path: {rest!r}"
    assert case.message in rest, f"message: {rest!r}"


def test_backups_only_of_addons_shipmate_can_back_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "shipmate.yaml"
    spec.write_text(BASE.replace("  db: {kind: postgres}\n", "  db: {kind: postgres}\n  q: {kind: nats}\n"
                                 "  r: {kind: redis}\n")
                    + "backups:\n  - {name: b, addon: q}\n  - {name: c, addon: r, type: pitr}\n")
    assert main(["-f", str(spec), "validate"]) == 2
    assert "backups[0].addon: addon 'q' is nats: shipmate backs up postgres, mysql and redis" in capsys.readouterr().err
    spec.write_text(spec.read_text().replace("  - {name: b, addon: q}\n", ""))
    assert main(["-f", str(spec), "validate"]) == 2
    assert "backups[0].type: point-in-time recovery is for postgres" in capsys.readouterr().err
