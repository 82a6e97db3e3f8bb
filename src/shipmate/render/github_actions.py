"""The `github-actions` format: one workflow, `.github/workflows/<app>-deploy.yml`, that carries a
commit from pull request to production the way the seed documents ask.

Jobs:
- on every pull request and push to main: `lint` (shipmate validate, `make lint`), `types`
  (`make types`), `tests` (`make test`), `security` (`shipmate scan` of the rendered kit and a
  Trivy dependency and secret scan, both uploaded as SARIF) and `images` (a matrix over the
  services: build, Trivy scan that fails on a fixable CRITICAL vulnerability, and on main a push
  tagged with the commit SHA);
- on main, for each Kubernetes environment in spec order: `deploy-<env>` (`shipmate deploy
  --version <sha>` then `shipmate rollout status`, behind the GitHub environment of that name,
  which is where required reviewers gate an environment whose plan requires approvals),
  `smoke-<env>` (the exposed hosts answer; only when something is exposed) and `rollback-<env>`
  (`shipmate rollback`, when that deploy or its smoke check failed, or when dispatched with
  `rollback: <env>`). An environment waits for the one it is promoted from (`promoteFrom`), else
  for the Kubernetes environment before it.

Called through `shipmate.render.formats`. Pure. It decides nothing about strategies or gates
itself: it reads them from the plans and leaves rollouts, analysis and approvals by role to the
`shipmate` commands it runs. Every third-party action is pinned (see ACTIONS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from shipmate import __version__
from shipmate.plan.models import Plan, Workload
from shipmate.render import images
from shipmate.render.kit import Kit
from shipmate.render.yamlio import dump

Obj = dict[str, Any]

PYTHON = "3.12"
RUNNER = "ubuntu-latest"
BRANCH = "main"
CI_JOBS = ("lint", "types", "tests", "security", "images")

# Pinned to release tags, except trivy-action: on 2026-03-19 its tags up to 0.34.x were
# force-pushed to credential-stealing commits, so it is pinned to the verified commit of 0.35.0.
ACTIONS = {
    "checkout": "actions/checkout@v5",
    "setup-python": "actions/setup-python@v6",
    "buildx": "docker/setup-buildx-action@v3",
    "login": "docker/login-action@v3",
    "build-push": "docker/build-push-action@v6",
    "upload-sarif": "github/codeql-action/upload-sarif@v4",
    "trivy": "aquasecurity/trivy-action@57a97c7e7821a5776cebc9bb87c984fa69cba8f1",
    "aws-credentials": "aws-actions/configure-aws-credentials@v4",
    "ecr-login": "aws-actions/amazon-ecr-login@v2",
}

SHA = "${{ github.sha }}"
ON_MAIN = f"github.ref == 'refs/heads/{BRANCH}'"
NOT_PR = "github.event_name != 'pull_request'"


@dataclass(frozen=True)
class Stage:
    """One Kubernetes environment in the pipeline."""

    env: str
    plan: Plan
    after: str | None  # the environment whose deploy and smoke checks must pass first
    smoke: tuple[tuple[str, str, int], ...]  # (service, url, first status code that fails)

    @property
    def gated(self) -> bool:
        return self.plan.approvals_required > 0


def files(kit: Kit) -> dict[str, str]:
    stages = pipeline(kit)
    return {f".github/workflows/{kit.app}-deploy.yml": _header(kit, stages) + _dump(workflow(kit, stages))}


# --- the pipeline's shape -------------------------------------------------------------------

def pipeline(kit: Kit) -> list[Stage]:
    """The Kubernetes environments in spec order, each with the environment it waits for."""
    order = list(kit.kubernetes_environments)
    stages: list[Stage] = []
    for index, env in enumerate(order):
        plan = kit.plans[env]
        earlier = order[:index]
        if plan.promote_from in earlier:
            after: str | None = plan.promote_from
        elif plan.promote_from is not None and plan.promote_from not in order:
            after = None  # promoted from a local environment: the first stage on a cluster
        else:
            after = earlier[-1] if earlier else None
        stages.append(Stage(env, plan, after, _smoke_urls(plan)))
    return stages


def _smoke_urls(plan: Plan) -> tuple[tuple[str, str, int], ...]:
    """What the smoke job requests: the liveness path where the route serves the root on the
    probe's port (it must answer 2xx/3xx), else the route's own path (anything but a 5xx shows
    that ingress, service and pod are connected)."""
    out: list[tuple[str, str, int]] = []
    for w in plan.workloads:
        expose = w.expose
        if expose is None or not expose.host:
            continue
        base = f"{'https' if expose.tls else 'http'}://{expose.host}"
        probe = w.liveness
        if expose.path == "/" and probe is not None and probe.check == "http" and probe.port == expose.port:
            out.append((w.name, base + (probe.path or "/"), 400))
        else:
            out.append((w.name, base + expose.path, 500))
    return tuple(out)


def _image_workloads(kit: Kit) -> list[Workload]:
    """One workload per distinct (service, image repository) that a deploy will need."""
    envs = kit.kubernetes_environments or kit.environments
    seen: dict[tuple[str, str], Workload] = {}
    for env in envs:
        for w in kit.plans[env].workloads:
            seen.setdefault((w.name, w.image), w)
    return [seen[key] for key in sorted(seen)]


# --- the workflow document ------------------------------------------------------------------

def workflow(kit: Kit, stages: list[Stage]) -> Obj:
    envs = [s.env for s in stages]
    dispatch: Obj = {}
    if envs:
        dispatch = {"inputs": {
            "rollback": {"description": "Roll this environment back instead of deploying (none: build and deploy)",
                         "type": "choice", "options": ["none", *envs], "default": "none", "required": True},
            "release": {"description": "Release to roll back to (empty: the one before the current)",
                        "type": "string", "default": "", "required": False},
        }}
    ci_if = "github.event_name != 'workflow_dispatch' || inputs.rollback == 'none'" if envs else None
    jobs: Obj = {
        "lint": _check_job("Format and lint", ci_if, [
            _step("Validate shipmate.yaml and every environment's plan", run="shipmate validate"),
            _make_step("lint", "checks formatting and lints the code"),
        ]),
        "types": _check_job("Type check", ci_if, [_make_step("types", "type-checks the code")]),
        "tests": _check_job("Tests", ci_if, [_make_step("test", "runs the tests")]),
        "security": _security_job(ci_if),
        "images": _images_job(kit, ci_if),
    }
    for stage in stages:
        jobs[f"deploy-{stage.env}"] = _deploy_job(kit, stage)
        if stage.smoke:
            jobs[f"smoke-{stage.env}"] = _smoke_job(stage)
        jobs[f"rollback-{stage.env}"] = _rollback_job(kit, stage)
    return {
        "name": f"{kit.app} deploy",
        "on": {
            "push": {"branches": [BRANCH]},
            "pull_request": {"branches": [BRANCH]},
            "workflow_dispatch": dispatch or None,
        },
        "permissions": {},
        "concurrency": {
            "group": "${{ github.workflow }}-${{ github.event.pull_request.number || github.run_id }}",
            "cancel-in-progress": "${{ github.event_name == 'pull_request' }}",
        },
        "env": {
            "SHIPMATE_FILE": "shipmate.yaml",
            "SHIPMATE_INSTALL": f"shipmate=={__version__}",
            "NO_COLOR": "1",
        },
        "jobs": jobs,
    }


def _step(name: str, **body: Any) -> Obj:
    return {"name": name, **body}


def _checkout() -> Obj:
    return _step("Check out", uses=ACTIONS["checkout"], **{"with": {"persist-credentials": False}})


def _shipmate() -> list[Obj]:
    return [
        _step("Set up Python", uses=ACTIONS["setup-python"], **{"with": {"python-version": PYTHON}}),
        _step("Install shipmate", run='python -m pip install --disable-pip-version-check "$SHIPMATE_INSTALL"'),
    ]


def _make_step(target: str, does: str) -> Obj:
    return _step(f"make {target}", run=(
        f"if ! make -n {target} >/dev/null 2>&1; then\n"
        f"  echo \"::error::the Makefile has no '{target}' target; add one that {does}\"\n"
        "  exit 1\n"
        "fi\n"
        f"make {target}\n"))


def _job(name: str, condition: str | None, permissions: Obj, steps: list[Obj], timeout: int, *,
         needs: list[str] | None = None, **extra: Any) -> Obj:
    """A job with its keys in the order people read them; `extra` goes before permissions."""
    job: Obj = {"name": name}
    if needs:
        job["needs"] = needs
    if condition:
        job["if"] = condition
    job["runs-on"] = RUNNER
    job.update(extra)
    job["permissions"] = permissions
    job["timeout-minutes"] = timeout
    job["steps"] = steps
    return job


def _check_job(name: str, condition: str | None, steps: list[Obj]) -> Obj:
    return _job(name, condition, {"contents": "read"}, [_checkout(), *_shipmate(), *steps], 30)


def _security_job(condition: str | None) -> Obj:
    uploaded = "${{ !cancelled() && hashFiles('%s') != '' }}"
    steps = [
        _checkout(),
        *_shipmate(),
        _step("Render the deployment kit", run='shipmate render --format all --out "$RUNNER_TEMP/kit"'),
        _step("Scan the rendered kit (plaintext secrets, hardening, policy)",
              run='shipmate scan --format sarif "$RUNNER_TEMP/kit" > shipmate-scan.sarif'),
        _step("Upload the kit scan", uses=ACTIONS["upload-sarif"], **{
            "if": uploaded % "shipmate-scan.sarif",
            "with": {"sarif_file": "shipmate-scan.sarif", "category": "shipmate-scan"}}),
        _step("Scan dependencies and the repository for secrets (fixable HIGH or CRITICAL fails)",
              uses=ACTIONS["trivy"], **{"with": {
                  "scan-type": "fs", "scan-ref": ".", "scanners": "vuln,secret", "severity": "CRITICAL,HIGH",
                  "ignore-unfixed": True, "exit-code": "1", "format": "sarif", "output": "trivy-fs.sarif",
                  "limit-severities-for-sarif": True}}),
        _step("Upload the dependency scan", uses=ACTIONS["upload-sarif"], **{
            "if": uploaded % "trivy-fs.sarif",
            "with": {"sarif_file": "trivy-fs.sarif", "category": "dependencies"}}),
    ]
    permissions = {"actions": "read", "contents": "read", "security-events": "write"}
    return _job("Security scans", condition, permissions, steps, 30)


def _images_job(kit: Kit, condition: str | None) -> Obj:
    workloads = _image_workloads(kit)
    include = []
    for w in workloads:
        b = images.build(w)
        include.append({
            "service": w.name, "image": w.image, "registry": images.registry(w.image),
            "context": b.context, "dockerfile": b.dockerfile,
            "build-args": "".join(f"{k}={v}\n" for k, v in b.args),
        })
    hosts = sorted({entry["registry"] for entry in include})
    if len(hosts) == 1:
        for entry in include:
            del entry["registry"]  # only the login steps of several registries tell them apart
    permissions: Obj = {"contents": "read"}
    if "ghcr.io" in hosts:
        permissions["packages"] = "write"
    if any(images.ecr_region(h) for h in hosts):
        permissions["id-token"] = "write"
    tag = f"${{{{ matrix.image }}}}:{SHA}"
    build: Obj = {
        "context": "${{ matrix.context }}",
        "file": "${{ matrix.dockerfile }}",
        "build-args": "${{ matrix.build-args }}",
        "tags": tag,
        "labels": f"org.opencontainers.image.revision={SHA}\n"
                  "org.opencontainers.image.source=${{ github.server_url }}/${{ github.repository }}\n",
        "cache-from": "type=gha,scope=${{ matrix.service }}",
    }
    steps: list[Obj] = [
        _checkout(),
        _step("Set up Docker Buildx", uses=ACTIONS["buildx"]),
        _step("Build", uses=ACTIONS["build-push"], **{"with": {
            **build, "load": True, "push": False, "cache-to": "type=gha,mode=max,scope=${{ matrix.service }}"}}),
        _step("Scan the image (a fixable CRITICAL vulnerability fails)", uses=ACTIONS["trivy"], **{"with": {
            "image-ref": tag, "format": "table", "exit-code": "1", "ignore-unfixed": True,
            "vuln-type": "os,library", "severity": "CRITICAL"}}),
    ]
    for host in hosts:
        steps.extend(_login_steps(host, only_for_host=len(hosts) > 1))
    steps.append(_step(f"Push {tag}", uses=ACTIONS["build-push"], **{
        "if": NOT_PR,
        "with": {**build, "push": True, "sbom": True, "provenance": "mode=max"}}))
    return _job("Image ${{ matrix.service }}", condition, permissions, steps, 60,
                strategy={"fail-fast": False, "matrix": {"include": include}})


def _login_steps(host: str, *, only_for_host: bool) -> list[Obj]:
    condition = NOT_PR + (f" && matrix.registry == '{host}'" if only_for_host else "")
    region = images.ecr_region(host)
    if region is not None:
        return [
            _step(f"AWS credentials for {host} (OIDC)", uses=ACTIONS["aws-credentials"], **{
                "if": condition,
                "with": {"role-to-assume": "${{ secrets.AWS_ROLE_ARN }}", "aws-region": region}}),
            _step(f"Log in to {host}", uses=ACTIONS["ecr-login"], **{"if": condition}),
        ]
    if host == "ghcr.io":
        creds = {"registry": host, "username": "${{ github.actor }}", "password": "${{ secrets.GITHUB_TOKEN }}"}
    elif host == images.DOCKER_HUB:
        creds = {"username": "${{ secrets.DOCKERHUB_USERNAME }}", "password": "${{ secrets.DOCKERHUB_TOKEN }}"}
    else:
        creds = {"registry": host, "username": "${{ secrets.REGISTRY_USERNAME }}",
                 "password": "${{ secrets.REGISTRY_PASSWORD }}"}
    return [_step(f"Log in to {host}", uses=ACTIONS["login"], **{"if": condition, "with": creds})]


# --- deploy, smoke, rollback ----------------------------------------------------------------

def _deploy_if() -> str:
    return (f"{ON_MAIN} && (github.event_name == 'push' || "
            "(github.event_name == 'workflow_dispatch' && inputs.rollback == 'none'))")


def _concurrency(kit: Kit, env: str) -> Obj:
    return {"group": f"{kit.app}-{env}", "cancel-in-progress": False}


def _environment(stage: Stage) -> Obj:
    environment: Obj = {"name": stage.env}
    hosts = [url for _, url, _ in stage.smoke]
    if hosts:
        scheme, _, rest = hosts[0].partition("://")
        environment["url"] = f"{scheme}://{rest.split('/', 1)[0]}"
    return environment


def _credentials(env: str) -> Obj:
    return _step("Cluster credentials", env={"KUBECONFIG_DATA": "${{ secrets.KUBECONFIG }}"}, run=(
        'if [ -z "$KUBECONFIG_DATA" ]; then\n'
        f'  echo "::error::add a KUBECONFIG secret to the GitHub environment {env}"\n'
        "  exit 1\n"
        "fi\n"
        "umask 077\n"
        "printf '%s\\n' \"$KUBECONFIG_DATA\" > \"$RUNNER_TEMP/kubeconfig\"\n"
        'echo "KUBECONFIG=$RUNNER_TEMP/kubeconfig" >> "$GITHUB_ENV"\n'))


def _deploy_minutes(plan: Plan) -> int:
    """Room for the strategy's pauses and analyses on top of its progress deadline."""
    strategy = plan.strategy
    seconds = strategy.progress_deadline_seconds + 600
    for step in strategy.steps:
        seconds += step.pause_seconds or 0
        if step.analysis and strategy.analysis is not None:
            seconds += strategy.analysis.interval_seconds * strategy.analysis.count
    if any(step.pause_indefinite for step in strategy.steps):
        return 360
    return min(360, math.ceil(seconds / 60))


def _deploy_job(kit: Kit, stage: Stage) -> Obj:
    env = stage.env
    if stage.after is None:
        needs: list[str] = list(CI_JOBS)
    else:
        previous = f"smoke-{stage.after}"
        needs = [f"deploy-{stage.after}"] + ([previous] if _has_smoke(kit, stage.after) else [])
    name = f"Deploy to {env}" + (" (approval)" if stage.gated else "")
    steps = [
        _checkout(),
        *_shipmate(),
        _credentials(env),
        _step(f"Deploy {SHA} to {env}", id="deploy", run=(
            'echo "attempted=true" >> "$GITHUB_OUTPUT"\n'
            f"shipmate deploy --env {env} --version {SHA}\n")),
        _step("Wait until the rollout is healthy", run=f"shipmate rollout status --env {env}"),
    ]
    return _job(name, _deploy_if(), {"contents": "read"}, steps, _deploy_minutes(stage.plan), needs=needs,
                environment=_environment(stage), concurrency=_concurrency(kit, env),
                outputs={"attempted": "${{ steps.deploy.outputs.attempted }}"})


def _has_smoke(kit: Kit, env: str) -> bool:
    return bool(_smoke_urls(kit.plans[env]))


SMOKE_SCRIPT = """\
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  code=$(curl --silent --output /dev/null --write-out '%{http_code}' --max-time 10 "$URL" || true)
  if [ "$code" -ge 200 ] && [ "$code" -lt "$FAIL_FROM" ]; then
    echo "$URL answered $code"
    exit 0
  fi
  echo "attempt $attempt: $URL answered ${code:-nothing}; retrying"
  sleep 6
done
echo "::error::$URL did not answer below $FAIL_FROM"
exit 1
"""


def _smoke_job(stage: Stage) -> Obj:
    steps = [_step(f"{service} answers at {url}", env={"URL": url, "FAIL_FROM": str(fail_from)}, run=SMOKE_SCRIPT)
             for service, url, fail_from in stage.smoke]
    return _job(f"Smoke checks on {stage.env}", None, {}, steps, 10, needs=[f"deploy-{stage.env}"])


def _rollback_job(kit: Kit, stage: Stage) -> Obj:
    env = stage.env
    deploy = f"needs.deploy-{env}"
    failed = f"{deploy}.result == 'failure'"
    needs = [f"deploy-{env}"]
    if stage.smoke:
        needs.append(f"smoke-{env}")
        failed = f"({failed} || needs.smoke-{env}.result == 'failure')"
    # !cancelled(), not always(): run although the deploy failed or was skipped, never after a cancel.
    condition = (f"${{{{ !cancelled() && ((github.event_name == 'workflow_dispatch' && inputs.rollback == '{env}') "
                 f"|| ({deploy}.outputs.attempted == 'true' && {failed})) }}}}")
    steps = [
        _checkout(),
        *_shipmate(),
        _credentials(env),
        _step(f"Roll {env} back", env={"RELEASE": "${{ inputs.release }}"}, run=(
            'if [ -n "$RELEASE" ]; then\n'
            f'  shipmate rollback --env {env} --release "$RELEASE"\n'
            "else\n"
            f"  shipmate rollback --env {env}\n"
            "fi\n")),
        _step("Wait until the rollout is healthy", run=f"shipmate rollout status --env {env}"),
    ]
    return _job(f"Roll back {env}", condition, {"contents": "read"}, steps, 30, needs=needs,
                environment={"name": env}, concurrency=_concurrency(kit, env))


# --- text -----------------------------------------------------------------------------------

def _header(kit: Kit, stages: list[Stage]) -> str:
    lines = [
        f"Rendered by shipmate from shipmate.yaml; do not edit. The CI/CD pipeline of {kit.app}.",
        "",
        "Pull requests: lint, types, tests, security scans, and every image built and scanned.",
        f"Push to {BRANCH}: the same, images pushed as <image>:<commit sha>, then deploys: "
        + ("; ".join(_stage_text(s) for s in stages) or "none (no Kubernetes environment)") + ".",
    ]
    if stages:
        lines += [
            "Each deploy waits until its rollout is healthy, then the exposed hosts are checked; when a",
            "deploy or its smoke check fails, that environment is rolled back. Run the workflow by",
            "hand with rollback=<env> to roll an environment back.",
            "",
            "Set up once, in Settings -> Environments:",
        ]
        for s in stages:
            context = f" (context {s.plan.context})" if s.plan.context else ""
            lines.append(f"  {s.env}: secret KUBECONFIG{context}, allowed to deploy to namespace {s.plan.namespace}")
            if s.gated:
                roles = f" ({', '.join(s.plan.approval_roles)})" if s.plan.approval_roles else ""
                lines.append(f"    and required reviewers: at least {s.plan.approvals_required}{roles}; "
                             "they approve its deploys and rollbacks")
    hosts = sorted({images.registry(w.image) for w in _image_workloads(kit)})
    secrets = []
    for host in hosts:
        if images.ecr_region(host):
            secrets.append(f"{host}: secret AWS_ROLE_ARN (a role GitHub's OIDC may assume)")
        elif host == "ghcr.io":
            secrets.append("ghcr.io: nothing, the job's GITHUB_TOKEN pushes")
        elif host == images.DOCKER_HUB:
            secrets.append("Docker Hub: secrets DOCKERHUB_USERNAME and DOCKERHUB_TOKEN")
        else:
            secrets.append(f"{host}: secrets REGISTRY_USERNAME and REGISTRY_PASSWORD")
    lines += ["Registries: " + "; ".join(secrets) + ".", "",
              "The application's own checks are `make lint`, `make types` and `make test`.",
              "Images: a service with a workdir is built from <workdir>/Dockerfile, any other from",
              "./Dockerfile with the build argument SERVICE=<service>.",
              "Actions are pinned to release tags; aquasecurity/trivy-action to the commit of 0.35.0,",
              "because its older tags were rewritten to malicious commits in March 2026."]
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


def _stage_text(stage: Stage) -> str:
    text = stage.env if stage.after is None else f"{stage.env} after {stage.after}"
    return text + (" (approval)" if stage.gated else "")


def _dump(doc: Obj) -> str:
    return dump(doc, sort_keys=False)
