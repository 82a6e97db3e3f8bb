"""benchmarks/rollout: how fast a rollback puts all traffic back on the old version, and how many
requests it loses, for each strategy, on the local target.

For each strategy (rolling, blue-green, canary) a fresh project runs a two-replica stand-in
service (`examples/standin`) with `shipmate up`; under continuous keep-alive load through its
router, release 2 is deployed with the strategy, then `shipmate rollback` is timed from the
moment it is issued until the rollback rollout has ended (every instance of release 1 ready, all
traffic on it, release 2 drained and stopped), and until the last request answered by release 2.
Failed requests are counted over the whole run (deploy and rollback).

No peer runs here: Argo Rollouts and Flagger need a Kubernetes API server, which this machine
cannot run. Their rollback bounds are set by design (an abort waits for the controller's next
reconcile; Flagger's rollback needs `interval x threshold` failed checks, a minute or more by
default), so the goal is the issue's: under 1 s with 0 failed requests.

Run: `.venv/bin/python benchmarks/rollout.py` (part of `make bench`); writes its section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from results import replace_section

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "rollout"
STANDIN = ROOT / "examples" / "standin" / "standin.py"

SPEC = f"""\
version: 1
app: {{name: bench, version: 1.0.0}}
services:
  web:
    run: exec python3 {STANDIN}
    ports: [{{name: http, port: 8080}}]
    replicas: 2
strategies:
  blue-green: {{type: blue-green, scaleDownDelay: 30s}}
  canary:
    type: canary
    steps: [{{weight: 20}}, {{pause: 1s}}, {{weight: 50}}, {{pause: 1s}}, {{weight: 100}}]
environments:
  dev: {{target: local}}
"""


def shipmate(spec: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shipmate.cli.main", "-f", str(spec), *args],
                          capture_output=True, text=True, timeout=300, check=False)


def at_wait_step(spec: Path) -> bool:
    import json

    done = shipmate(spec, "rollout", "status", "-o", "json")
    if done.returncode != 0:
        return False
    rollout = json.loads(done.stdout)
    steps = rollout["steps"]
    return rollout["current"] < len(steps) and steps[rollout["current"]]["kind"] == "wait"


def measure(strategy: str, workdir: Path, *, during_delay: bool = False) -> dict[str, float | int | str]:
    from shipmate.drills.load import Load

    sys.path.insert(0, str(ROOT / "src"))
    import json

    spec = workdir / strategy / "shipmate.yaml"
    spec.parent.mkdir(parents=True)
    spec.write_text(SPEC)
    try:
        up = shipmate(spec, "up", "--no-prometheus")
        if up.returncode != 0:
            raise SystemExit(f"up failed: {up.stderr}")
        port = json.loads(shipmate(spec, "status", "-o", "json").stdout)["services"][0]["router"]["port"]
        load = Load(port, path="/play")
        try:
            time.sleep(0.5)
            deploy = shipmate(spec, "deploy", "--strategy", strategy, "--version", "2.0.0",
                              *(["--no-wait"] if during_delay else []))
            if deploy.returncode != 0:
                raise SystemExit(f"deploy failed: {deploy.stderr}")
            deadline = time.monotonic() + 60
            while during_delay and not at_wait_step(spec):
                if time.monotonic() > deadline:
                    raise SystemExit("the blue-green rollout never reached its scale-down delay")
                time.sleep(0.05)
            time.sleep(0.5)
            began = time.monotonic()
            back = shipmate(spec, "rollback")
            ended = time.monotonic()
            if back.returncode != 0:
                raise SystemExit(f"rollback failed: {back.stderr}")
            time.sleep(0.5)
        finally:
            load.stop()
        last_new = max((a.sent + a.seconds for a in load.answers if a.version == "2.0.0"), default=began)
        return {
            "strategy": strategy + (" (during the scale-down delay)" if during_delay else ""),
            "rollback_seconds": ended - began,
            "traffic_back_seconds": max(0.0, last_new - began),
            "requests": len(load.answers),
            "failed": len(load.failed()),
        }
    finally:
        shipmate(spec, "down", "--purge")


def run(args: argparse.Namespace) -> str:
    rows = []
    with tempfile.TemporaryDirectory(prefix="shipmate-bench-rollout-") as tmp:
        cases = [("rolling", False), ("blue-green", False), ("canary", False), ("blue-green", True)]
        for strategy, during in cases:
            runs = [measure(strategy, Path(tmp) / f"{strategy}-{during}-{i}", during_delay=during)
                    for i in range(args.repeat)]
            rows.append({
                "strategy": str(runs[0]["strategy"]),
                "rollback": statistics.median(float(r["rollback_seconds"]) for r in runs),
                "traffic": statistics.median(float(r["traffic_back_seconds"]) for r in runs),
                "requests": sum(int(r["requests"]) for r in runs),
                "failed": sum(int(r["failed"]) for r in runs),
            })
            print(f"{rows[-1]['strategy']}: rollback {rows[-1]['rollback']:.3f}s (command to rollout ended), "
                  f"last new-version answer {rows[-1]['traffic']:.3f}s, {rows[-1]['failed']} of "
                  f"{rows[-1]['requests']} requests failed", flush=True)
    load = os.getloadavg()[0]
    table = "\n".join(f"| {r['strategy']} | {r['rollback']:.2f} s | {r['traffic']:.2f} s | {r['requests']:,} | "
                      f"{r['failed']} |" for r in rows)
    worst = max(r["rollback"] for r in rows)
    failed = sum(int(r["failed"]) for r in rows)
    verdict = "met" if worst < 1.0 and failed == 0 else "**missed**"
    return f"""## {SECTION}

Reproduce with `.venv/bin/python benchmarks/rollout.py` (part of `make bench`); measured
{datetime.now(UTC).date()}, median of {args.repeat} run(s) per strategy.

Machine: nproc {os.cpu_count()}, {platform.system()} {platform.release()}, Python {platform.python_version()};
1-minute load average {load:.2f} after the run.

Setup: a fresh project per run with a two-replica stand-in service (`examples/standin`) behind the
local router; 4 keep-alive clients load it throughout. Release 2 is deployed with the strategy,
then `shipmate rollback` (the environment's fast rollback) is timed: *rollback* from issuing the
command until the rollback rollout ended (release 1's instances ready, all traffic on them, release
2 drained and stopped; it includes the command's own start-up, about 0.2 s of Python), and *last
new answer* until the last request answered by release 2 (traffic is back on release 1 from then).
Failed requests are counted over the deploy and the rollback. After a finished deploy the old
instances are gone and the rollback starts them again (process start and readiness included); the
last row rolls a blue-green deploy back while its old stack is still up (the scale-down delay, 30 s
here), where going back is a weight change (the rollout in progress is aborted).

No peer runs here: Argo Rollouts and Flagger need a Kubernetes API server. Their rollback is bounded
by design (the next reconcile; Flagger's `interval x threshold`, a minute or more by default).

| strategy | rollback | last new answer | requests | failed |
| --- | ---: | ---: | ---: | ---: |
{table}

Goal: rollback under 1 s with 0 failed requests: {verdict} (slowest {worst:.2f} s, {failed} failed).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3, help="runs per strategy (3)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results file to update")
    parser.add_argument("--print", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args()
    section = run(args)
    if args.print:
        print(section)
        return
    current = args.results.read_text(encoding="utf-8") if args.results.exists() else ""
    args.results.write_text(replace_section(current, SECTION, section), encoding="utf-8")
    print(f"wrote the {SECTION} section of {args.results}")


if __name__ == "__main__":
    main()
