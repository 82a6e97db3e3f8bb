#!/usr/bin/env bash
# `make demo`: the cyber-werewolves example, rendered in every format, then brought up on this
# machine (PostgreSQL, Redis, NATS, its three services behind routers) and played, then shut down.
# Usage: scripts/demo.sh VENV_BIN OUT_DIR; KEEP=1 keeps it up until Ctrl-C.
set -euo pipefail
bin=${1:-.venv/bin}
out=${2:-.demo}
spec=examples/cyber-werewolves/shipmate.yaml
state="$out/state"
sm() { "$bin/shipmate" --no-color -f "$spec" --state-dir "$state" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. validate the spec (syntax, types, references, every environment)"
sm validate

step "2. what production resolves to"
sm plan --env prod

step "3. render every format for every environment into $out/"
if [ -d "$state" ]; then sm down --purge >/dev/null 2>&1 || true; fi
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

step "7. bring dev up on this machine: addons from local binaries, supervised services, routers"
down() { sm down >/dev/null 2>&1 && echo "  everything stopped (data kept in $state; make clean removes it)"; }
trap down EXIT
sm up
port() { sm status --output json | "$bin/python" -c "import json,sys; d=json.load(sys.stdin); \
print(next(s['router']['port'] for s in d['services'] if s['name']=='$1'))"; }
api=$(port api-server)
ws=$(port ws-gateway)

step "8. play a whole game through the api-server and ws-gateway routers (bots via NATS)"
(cd examples/cyber-werewolves && "../../$bin/python" -m werewolves.client --api "http://127.0.0.1:$api" \
  --ws "ws://127.0.0.1:$ws" --players 6 --seed 7)

step "9. what the services logged, and what the routers counted"
sm logs -n 8
curl -s "http://127.0.0.1:$(sm status --output json | "$bin/python" -c 'import json,sys; print(json.load(sys.stdin)["metrics"]["port"])')/metrics" \
  | grep -E '^shipmate_router_requests_total' | head -6 | sed 's/^/  /'

"$bin/python" scripts/demo_release.py "$spec" "$state"

step "done"
cat <<TXT
  Look at:  $out/manifests/<env>.yaml        plain manifests (kubectl apply -f)
            $out/helm/cyber-werewolves/      a Helm chart with values-<env>.yaml
            $out/kustomize/overlays/<env>    Kustomize overlays (kubectl kustomize)
            $out/argocd/                     Argo CD Applications with prune and self-heal
            $out/github-actions/             the CI/CD pipeline
            $out/monitoring/<env>/           Prometheus rules and a Grafana dashboard
            $out/compose/docker-compose.yml  local development
            $out/scan-prod.sarif             the scan of the Helm chart, for code-scanning UIs
            $state/local/dev/logs/           every instance's output (shipmate logs -f)
  Next:     .venv/bin/shipmate -f $spec --state-dir $state up   (then status, logs -f, exec, down)
TXT
if [ "${KEEP:-}" = "1" ]; then
  echo
  echo "  KEEP=1: dev stays up (api-server http://127.0.0.1:$api, ws-gateway ws://127.0.0.1:$ws); Ctrl-C stops it"
  trap 'exit 0' INT TERM
  while true; do sleep 1; done
fi
