"""The release part of `make demo`: with cyber-werewolves up (dev), under generated traffic through
the api-server's router, ship v2 as a canary by roomId (live progress, analysis, promotion), then a
bad v3 that fails 30% of its requests, rolled back by the analysis on its own, and print a summary.

Usage: scripts/demo_release.py SPEC STATE_DIR. Exits 0 when the story went as told.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from shipmate.drills.load import Load


def shipmate(spec: str, state: str, *args: str, show: bool = True) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "shipmate.cli.main", "--no-color", "-f", spec, "--state-dir", state, *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if show:
        for line in (done.stdout + done.stderr).splitlines():
            print(f"  {line}", flush=True)
    return done


def step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def main() -> int:
    spec, state = sys.argv[1], sys.argv[2]
    status = json.loads(shipmate(spec, state, "status", "-o", "json", show=False).stdout)
    api = next(s for s in status["services"] if s["name"] == "api-server")
    v1 = api["version"]
    load = Load(api["router"]["port"], path="/api/rooms/demo", threads=3, rooms=50, pause=0.005)
    outcomes = []
    try:
        step(f"10. v{v1} serves; ship v1.3.0 as a canary by roomId (canary-quick: 10% -> analysis -> 50% -> "
             "analysis -> 100%), under traffic")
        started = time.monotonic()
        good = shipmate(spec, state, "deploy", "--strategy", "canary-quick", "--version", "1.3.0",
                        "-m", "v1.3.0: new lobby")
        outcomes.append(("1.3.0", "canary", good.returncode == 0, time.monotonic() - started))

        step("11. ship a bad v1.4.0 (30% of its API requests fail): the analysis rolls it back by itself")
        started = time.monotonic()
        bad = shipmate(spec, state, "deploy", "--strategy", "canary-quick", "--version", "1.4.0",
                       "--set", "services.api-server.config.FAULT_RATE=0.3", "-m", "v1.4.0: a bug")
        outcomes.append(("1.4.0", "canary", bad.returncode != 0, time.monotonic() - started))
        shipmate(spec, state, "rollout", "status")
    finally:
        load.stop()

    step("12. summary")
    history = json.loads(shipmate(spec, state, "history", "-o", "json", show=False).stdout)
    print(f"  {'release':>7}  {'version':<10} {'rollout':<12} {'current':<8} message")
    for row in reversed(history):
        versions = sorted(set(row["versions"].values()))
        print(f"  {row['release']:>7}  {', '.join(versions):<10} {row['rollout'] or 'first':<12} "
              f"{'yes' if row['current'] else '':<8} {row['message']}")
    by_version: dict[str, list[int]] = {}
    for answer in load.answers:
        counts = by_version.setdefault(answer.version or "(no version in the answer)", [0, 0])
        counts[0] += 1
        counts[1] += int(answer.status == 0 or answer.status >= 500)
    print(f"\n  traffic during the story: {len(load.answers)} requests through the api-server router, "
          f"{len(load.failed())} answered 5xx or lost")
    served = json.loads(shipmate(spec, state, "status", "-o", "json", show=False).stdout)
    now = next(s for s in served["services"] if s["name"] == "api-server")["version"]
    print(f"  api-server now serves v{now}; the bad v1.4.0's 5xx were limited to its canary share")
    told = all(ok for _, _, ok, _ in outcomes) and now == "1.3.0"
    for version, strategy, ok, seconds in outcomes:
        print(f"  v{version} ({strategy}): {'as expected' if ok else 'NOT as expected'} in {seconds:.1f}s")
    return 0 if told else 1


if __name__ == "__main__":
    sys.exit(main())
