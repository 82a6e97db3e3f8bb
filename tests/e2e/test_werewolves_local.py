"""cyber-werewolves on the local target, end to end: `shipmate up` brings PostgreSQL, Redis,
NATS, the three services and their routers up healthy; the scripted client plays whole games
through the routers and the WebSocket gateway; a SIGKILLed api-server instance is restarted and
ready again while games keep being played through the other one; `down` leaves no process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.local_support import alive, brought_down, http_get, pids_mentioning, run_cli, status_doc
from tests.support import EXAMPLES_DIR

pytestmark = pytest.mark.integration

APP = EXAMPLES_DIR / "cyber-werewolves"
SPEC = APP / "shipmate.yaml"


def play(doc: dict[str, Any], *extra: str) -> dict[str, Any]:
    ports = {s["name"]: s["router"]["port"] for s in doc["services"]}
    done = subprocess.run([sys.executable, "-m", "werewolves.client", "--api", f"http://127.0.0.1:{ports['api-server']}",
                           "--ws", f"ws://127.0.0.1:{ports['ws-gateway']}", "--json", "--timeout", "60", *extra],
                          cwd=APP, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def instance(doc: dict[str, Any], service: str, index: int) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in doc["services"] if s["name"] == service)["instances"][index]
    return found


def test_the_game_runs_on_the_local_target(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with brought_down(SPEC, state, state=state):
        up = run_cli(SPEC, "up", "--no-prometheus", state=state)
        assert up.returncode == 0, up.stderr
        doc = status_doc(SPEC, state=state)
        assert doc["phase"] == "ready"
        assert {a["name"]: a["ready"] for a in doc["addons"]} == {"nats": True, "postgres": True, "redis": True}
        assert {s["name"]: len(s["instances"]) for s in doc["services"]} == \
            {"agent-runtime": 1, "api-server": 2, "ws-gateway": 1}
        for service in doc["services"]:
            assert all(i["ready"] for i in service["instances"])
            code, body = http_get(service["router"]["port"], "/version")
            assert code == 200
            assert json.loads(body)["version"] == service["version"]

        first = play(doc, "--players", "6", "--seed", "1")
        assert first["winner"] in ("werewolves", "villagers")
        assert first["events"] > 5

        # every event of the game is a row in PostgreSQL: count them with the service's own secret
        query = ("import os, sys, psycopg; url = open(os.environ['SHIPMATE_SECRETS_DIR'] + '/database-url').read(); "
                 "print(psycopg.connect(url.strip()).execute("
                 "'SELECT count(*) FROM events WHERE room_id = %s', (sys.argv[1],)).fetchone()[0])")
        count = run_cli(SPEC, "exec", "api-server", "--", sys.executable, "-c", query, first["room"], state=state)
        assert count.returncode == 0, count.stderr
        assert int(count.stdout) == first["events"]

        victim = instance(doc, "api-server", 0)
        os.kill(victim["pid"], signal.SIGKILL)
        second = play(doc, "--players", "8", "--seed", "2")  # served by the other instance meanwhile
        assert second["winner"] in ("werewolves", "villagers")
        deadline = time.monotonic() + 30
        while True:
            now = instance(status_doc(SPEC, state=state), "api-server", 0)
            if now["ready"] and now["restarts"] == 1:
                break
            assert time.monotonic() < deadline, now
            time.sleep(0.2)
        assert now["pid"] != victim["pid"]
        assert not alive(victim["pid"])
        play(doc, "--players", "5", "--seed", "3")

        down = run_cli(SPEC, "down", state=state)
        assert down.returncode == 0, down.stderr
        assert pids_mentioning(state) == []
