#!/usr/bin/env bash
# `make demo`: the cyber-werewolves example, rendered in every format, with a short tour.
# Usage: scripts/demo.sh VENV_BIN OUT_DIR
set -euo pipefail
bin=${1:-.venv/bin}
out=${2:-.demo}
spec=examples/cyber-werewolves/shipmate.yaml
sm() { "$bin/shipmate" --no-color -f "$spec" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. validate the spec (syntax, types, references, every environment)"
sm validate

step "2. what production resolves to"
sm plan --env prod

step "3. render every format for every environment into $out/"
rm -rf "$out"
sm render --format all --out "$out"
find "$out" -type f ! -name '.shipmate-files' | sort | sed 's/^/  /' | head -60

step "4. the hardened Deployment of api-server in prod (excerpt)"
"$bin/python" - "$out/manifests/prod.yaml" <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc["kind"] == "Deployment" and doc["metadata"]["name"] == "api-server":
        c = doc["spec"]["template"]["spec"]["containers"][0]
        print("  image:          ", c["image"])
        print("  securityContext:", c["securityContext"])
        print("  resources:      ", c["resources"])
        print("  probes:          liveness", c["livenessProbe"]["httpGet"], "readiness", c["readinessProbe"]["httpGet"])
        print("  rolling update: ", doc["spec"]["strategy"]["rollingUpdate"])
        break
PY

step "5. is what is on disk what the spec says? (render --check)"
sm render --format all --out "$out" --check

step "6. scan what production and staging would run (policy and secret scanner)"
sm scan --env prod
sm scan --env staging
sm scan "$out/helm/cyber-werewolves" --values "$out/helm/cyber-werewolves/values-prod.yaml" --format sarif \
  --report "$out/scan-prod.sarif"

step "done"
cat <<TXT
  Look at:  $out/manifests/<env>.yaml        plain manifests (kubectl apply -f)
            $out/helm/cyber-werewolves/      a Helm chart with values-<env>.yaml
            $out/kustomize/overlays/<env>    Kustomize overlays (kubectl kustomize)
            $out/argocd/                     Argo CD Applications with prune and self-heal
            $out/github-actions/             the CI/CD pipeline
            $out/monitoring/<env>/           Prometheus rules and a Grafana dashboard
            $out/compose/docker-compose.yml  local development
            $out/scan-prod.sarif              the scan of the Helm chart, for code-scanning UIs
  Next:     .venv/bin/shipmate -f $spec plan --env staging --output json
TXT
