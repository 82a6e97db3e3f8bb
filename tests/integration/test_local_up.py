"""`shipmate up / status / logs / exec / down` on the local target: the real command line, real
processes (a small HTTP service written to tmp_path, a real Redis addon), real routers.

Each test runs its own state directory and stops everything it started in a finally, so a failing
test leaves no process behind. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shipmate.store.db import Store
from tests.local_support import alive, brought_down, http_get, pids_mentioning, run_cli, status_doc

pytestmark = pytest.mark.integration

SERVICE = r'''
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

if os.environ.get("CRASH_ON_START") == "true":
    print("crashing on purpose at start", flush=True)
    sys.exit(4)
secrets = os.environ["SHIPMATE_SECRETS_DIR"]

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/readyz" and os.path.exists(os.environ.get("NOT_READY_FLAG", "/nonexistent")):
            code, body = 503, b"not ready"
        elif self.path == "/secret-names":
            code, body = 200, json.dumps(sorted(n for n in os.listdir(secrets) if not n.startswith(".."))).encode()
        else:
            code = 200
            body = json.dumps({"instance": os.environ["SHIPMATE_INSTANCE"], "version": os.environ["APP_VERSION"],
                               "greeting": os.environ.get("GREETING")}).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *args):
        print("served", self.path, flush=True)

print("listening on", os.environ["PORT"], flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''

SPEC = """\
version: 1
app: {{name: demo, version: 1.0.0}}
services:
  web:
    run: exec python3 web.py
    ports: [{{name: http, port: 8080}}]
    replicas: 2
    config: {{GREETING: hello, CRASH_ON_START: "{crash}", NOT_READY_FLAG: "{flag}"}}
    secrets: [redis-url, token]
    uses: [redis]
  worker:
    run: exec sleep 600
    probes:
      liveness: {{exec: [/bin/true]}}
      readiness: {{exec: [/bin/true]}}
addons:
  redis: {{kind: redis}}
secrets:
  redis-url: {{from: {{addon: redis, key: url}}}}
  token: {{generate: {{type: hex}}}}
environments:
  dev: {{target: local}}
  prod: {{cluster: {{namespace: demo}}}}
"""


def shipmate(project: Path, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return run_cli(project / "shipmate.yaml", *args, timeout=timeout)


def status(project: Path) -> dict[str, Any]:
    return status_doc(project / "shipmate.yaml")


def our_pids(project: Path) -> list[int]:
    return pids_mentioning(project)


get = http_get


def make_project(tmp_path: Path, *, crash: bool = False) -> Path:
    project = tmp_path / "demo"
    project.mkdir()
    (project / "web.py").write_text(SERVICE)
    flag = project / "not-ready"
    (project / "shipmate.yaml").write_text(SPEC.format(crash="true" if crash else "false", flag=flag))
    return project


def cleaned(project: Path) -> contextlib.AbstractContextManager[None]:
    return brought_down(project / "shipmate.yaml", project)


def test_up_status_logs_exec_down_and_data_surviving(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    with cleaned(project):
        done = shipmate(project, "up")
        assert done.returncode == 0, done.stderr
        assert "web 1.0.0: 2/2 ready" in done.stdout
        doc = status(project)
        assert set(doc) >= {"environment", "release", "services", "addons"}
        assert doc["environment"] == "dev"
        assert doc["phase"] == "ready"
        assert doc["release"] == 1
        web = next(s for s in doc["services"] if s["name"] == "web")
        assert set(web) == {"name", "version", "router", "instances"}
        assert web["version"] == "1.0.0"
        assert [i["id"][-2:] for i in web["instances"]] == ["-1", "-2"]
        assert all(re.fullmatch(r"web-[0-9a-f]{6}-[12]", i["id"]) for i in web["instances"])
        for instance in web["instances"]:
            assert set(instance) == {"id", "version", "pid", "port", "ready", "restarts"}
            assert instance["ready"]
            assert instance["restarts"] == 0
            assert alive(instance["pid"])
        worker = next(s for s in doc["services"] if s["name"] == "worker")
        assert worker["router"]["port"] is None
        assert worker["instances"][0]["ready"]
        redis = next(a for a in doc["addons"] if a["name"] == "redis")
        assert set(redis) == {"name", "kind", "port", "ready"}
        assert redis["kind"] == "redis"
        assert redis["ready"]

        # Prometheus (Debian package prometheus, installed by make) scrapes the routers' metrics
        prometheus = next(a for a in doc["addons"] if a["name"] == "prometheus")
        assert prometheus["ready"]
        routers_url = f"http://127.0.0.1:{doc['metrics']['port']}/metrics"
        deadline = time.monotonic() + 30
        while True:
            targets = {t["scrapeUrl"]: t["health"] for t in
                       json.loads(get(prometheus["port"], "/api/v1/targets")[1])["data"]["activeTargets"]}
            if targets.get(routers_url) == "up":
                break
            assert time.monotonic() < deadline, targets
            time.sleep(0.5)
        # and every instance at its metrics port (this test service serves none, so they are down)
        assert set(targets) == {routers_url, *(f"http://127.0.0.1:{i['port']}/metrics" for i in web["instances"])}

        # the router spreads requests over both instances; config arrives as env, secrets as files only
        router = web["router"]["port"]
        seen = set()
        for _ in range(20):
            code, body = get(router)
            assert code == 200
            answer = json.loads(body)
            assert answer["greeting"] == "hello"
            assert answer["version"] == "1.0.0"
            seen.add(answer["instance"])
        assert seen == {i["id"] for i in web["instances"]}
        assert json.loads(get(router, "/secret-names")[1]) == [".versions", "redis-url", "token"]

        logs = shipmate(project, "logs", "web", "-n", "200")
        assert logs.returncode == 0
        first, second = (i["id"] for i in web["instances"])
        assert f"{first} | listening on" in logs.stdout
        assert f"{second} | served /" in logs.stdout
        assert "worker" not in logs.stdout

        token_before = read_token(project)
        assert not (project / ".shipmate/local/dev/secrets").exists()  # generated values live sealed in the store
        run = shipmate(project, "exec", "web", "--", "sh", "-c",
                       'test "$(cat "$SHIPMATE_SECRETS_DIR/token")" = "$EXPECTED" && echo "$GREETING $PORT"')
        assert run.returncode == 1  # EXPECTED is unset: the comparison fails, and exec passes the code on
        run = shipmate(project, "exec", "web", "--", "sh", "-c",
                       'echo "$GREETING" && cat "$SHIPMATE_SECRETS_DIR/token"')
        assert run.returncode == 0
        assert run.stdout.split() == ["hello", token_before]

        # a second up is a no-op that says so
        again = shipmate(project, "up")
        assert again.returncode == 0
        assert "already up" in again.stderr

        pids = [i["pid"] for s in doc["services"] for i in s["instances"]]
        down = shipmate(project, "down")
        assert down.returncode == 0, down.stderr
        assert not any(alive(p) for p in pids)
        assert our_pids(project) == []
        assert status(project)["phase"] == "stopped"

        # data (the addon's, the generated secret) survives down/up; down --purge removes the addon's
        assert shipmate(project, "up").returncode == 0
        assert read_token(project) == token_before
        web_again = next(s for s in status(project)["services"] if s["name"] == "web")
        assert web_again["router"]["port"] == router  # a stable port
        purge = shipmate(project, "down", "--purge")
        assert purge.returncode == 0
        assert "removed the data of addon redis" in purge.stderr
        assert not (project / ".shipmate/local/dev/addons").exists()
        assert our_pids(project) == []


def read_token(project: Path) -> str:
    run = shipmate(project, "exec", "web", "--", "sh", "-c", 'cat "$SHIPMATE_SECRETS_DIR/token"')
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_a_sigkilled_instance_is_restarted_while_the_router_sends_it_nothing(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    with cleaned(project):
        assert shipmate(project, "up", "--no-prometheus").returncode == 0
        web = next(s for s in status(project)["services"] if s["name"] == "web")
        router, victim = web["router"]["port"], web["instances"][0]
        errors: list[str] = []
        served: list[str] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                code, body = get(router)
                if code != 200:
                    errors.append(f"{code} {body[:80]!r}")
                else:
                    served.append(json.loads(body)["instance"])

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.5)
            os.kill(victim["pid"], signal.SIGKILL)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                now = next(i for i in next(s for s in status(project)["services"] if s["name"] == "web")["instances"]
                           if i["id"] == victim["id"])
                if now["ready"] and now["restarts"] == 1 and now["pid"] != victim["pid"]:
                    break
                time.sleep(0.2)
            else:
                pytest.fail(f"{victim['id']} was not restarted and ready again: {now}")
            before = len(served)
            time.sleep(1.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
        assert errors == []
        assert victim["id"] in served[before:]  # back in the rotation once ready


def test_sigkill_of_the_supervisor_during_up_leaves_nothing_after_the_next_command(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    (project / "not-ready").touch()  # web never gets ready: up stays in its waiting phase
    with cleaned(project):
        up = subprocess.Popen([sys.executable, "-m", "shipmate.cli.main", "-f", str(project / "shipmate.yaml"),
                               "up", "--no-prometheus", "--timeout", "60"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            store = Store.open(project / ".shipmate")
            try:
                while time.monotonic() < deadline:
                    instances = store.instances("dev")
                    if len(instances) == 3 and all(i.pid for i in instances):
                        break
                    time.sleep(0.1)
                else:
                    pytest.fail("up did not start its instances")
                env = store.environment("dev")
            finally:
                store.close()
            assert env is not None
            assert env.phase == "starting"
            assert env.supervisor_pid
            started = our_pids(project)
            assert len(started) >= 4  # the supervisor, two web instances, the worker (and redis)
            os.kill(env.supervisor_pid, signal.SIGKILL)
        finally:
            up.kill()
            up.wait()
        time.sleep(0.3)
        assert our_pids(project), "the instances outlive a SIGKILLed supervisor until the next command"
        assert status(project)["phase"] == "crashed"
        # an instance that writes to the dead supervisor's log pipe may die of it on its own; the
        # worker (sleep) cannot, so at least it is left, and every one left must be stopped by down
        left = [i.instance_id for i in instances if i.pid and alive(i.pid)]
        assert any(name.startswith("worker-") for name in left), left
        down = shipmate(project, "down")
        assert down.returncode == 0, down.stderr
        for name in left:
            assert re.search(rf"stopped leftover instance {name} \(pgid \d+\)", down.stderr), down.stderr
        assert "stopped addon redis" in down.stderr
        assert our_pids(project) == []


def test_up_that_fails_says_why_and_leaves_nothing_running(tmp_path: Path) -> None:
    project = make_project(tmp_path, crash=True)
    with cleaned(project):
        done = shipmate(project, "up", "--no-prometheus", "--timeout", "6")
        assert done.returncode != 0
        assert re.search(r"instance web-[0-9a-f]{6}-[12] (crash-loops|not ready)", done.stderr), done.stderr
        assert "crashing on purpose at start" in done.stderr  # the instance's last log lines
        assert "Traceback" not in done.stderr
        assert our_pids(project) == []
        assert status(project)["phase"] == "failed"


def test_up_refuses_a_kubernetes_environment_and_an_unknown_one(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    done = shipmate(project, "up", "--env", "prod")
    assert done.returncode == 2
    assert "targets kubernetes" in done.stderr
    done = shipmate(project, "up", "--env", "nope")
    assert done.returncode == 2
    assert "no environment 'nope'" in done.stderr
    assert our_pids(project) == []
