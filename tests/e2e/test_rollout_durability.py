"""A rollout survives the death of shipmate at any step: the environment's supervisor is killed
with SIGKILL while a canary is at step k (one run per step), then `shipmate rollout status
--watch` starts it again; the rollout must end promoted, the processes of the killed supervisor
must be gone, and what runs (the store's instances, the router's answers) must be the release
the store says, at its replicas. The engine is slowed before each step that changes something
(SHIPMATE_ENGINE_STEP_DELAY) so that the kill lands inside the chosen step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shipmate.release.history import History
from shipmate.store.db import Store
from tests.local_support import alive, brought_down, http_get, pids_mentioning, run_cli, status_doc
from tests.support import EXAMPLES_DIR

pytestmark = pytest.mark.integration

SPEC = f"""\
version: 1
app: {{name: shop, version: 1.0.0}}
services:
  web:
    run: exec python3 {EXAMPLES_DIR / "standin" / "standin.py"}
    ports: [{{name: http, port: 8080}}]
    replicas: 2
strategies:
  canary:
    type: canary
    steps: [{{weight: 25}}, {{pause: 1s}}, {{weight: 100}}]
environments:
  dev: {{target: local, strategy: canary}}
"""
STEPS = 6  # scale new 1, weights 25, pause, scale new 2, weights 100, scale old 0


def rollout_now(state: Path) -> tuple[int, str, int]:
    store = Store.open(state)
    try:
        live = History(store).latest("dev")
        env = store.environment("dev")
    finally:
        store.close()
    assert live is not None
    assert env is not None
    return live.current, live.phase, env.supervisor_pid or 0


def test_sigkill_at_every_step_of_a_canary_converges(tmp_path: Path) -> None:
    spec = tmp_path / "shipmate.yaml"
    spec.write_text(SPEC)
    state = tmp_path / ".shipmate"
    slow = {**os.environ, "SHIPMATE_ENGINE_STEP_DELAY": "0.4"}
    with brought_down(spec, tmp_path):
        for step in range(STEPS):
            version = f"2.0.{step}"
            up = subprocess.run([sys.executable, "-m", "shipmate.cli.main", "-f", str(spec), "up", "--no-prometheus"],
                                env=slow, capture_output=True, text=True, timeout=120, check=False)
            assert up.returncode == 0, up.stderr
            before = [i["pid"] for i in status_doc(spec)["services"][0]["instances"]]
            deploy = run_cli(spec, "deploy", "--version", version, "--no-wait")
            assert deploy.returncode == 0, deploy.stderr
            deadline = time.monotonic() + 60
            while True:
                current, phase, supervisor = rollout_now(state)
                if current == step and phase != "promoted":
                    break
                assert current < step, f"missed step {step}: the rollout is at {current} ({phase})"
                assert time.monotonic() < deadline, f"the rollout never reached step {step}"
                time.sleep(0.02)
            os.kill(supervisor, signal.SIGKILL)
            time.sleep(0.2)

            watch = run_cli(spec, "rollout", "status", "--watch", timeout=180)
            assert watch.returncode == 0, f"step {step}: {watch.stderr}"
            assert "starting it again" in watch.stderr
            current, phase, supervisor = rollout_now(state)
            assert phase == "promoted", f"killed at step {step}: ended {phase}"
            assert alive(supervisor)

            doc = status_doc(spec)
            web = doc["services"][0]
            assert doc["release"] == step + 2
            assert web["version"] == version
            assert [i["version"] for i in web["instances"]] == [version, version]
            assert all(i["ready"] for i in web["instances"])
            assert not any(alive(p) for p in before), "the killed supervisor's instances were stopped"
            answers = {http_get(web["router"]["port"], "/version")[1] for _ in range(20)}
            assert all(version.encode() in a for a in answers), answers
            # no service process is left but the new instances (and their own children)
            groups = {i["pid"] for i in web["instances"]}
            stray = [p for p in pids_mentioning(tmp_path)
                     if b"standin" in Path(f"/proc/{p}/cmdline").read_bytes() and os.getpgid(p) not in groups]
            assert stray == [], f"step {step}: leftover service processes {stray}"
            down = run_cli(spec, "down")
            assert down.returncode == 0, down.stderr
