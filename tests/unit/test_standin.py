"""The stand-in service of the examples (`examples/standin/standin.py`), and the local environments
that run it.

The stand-in runs as a real subprocess on a free port (never a standard one) with only the
environment given here; every wait is bounded and every process is ended by its finalizer, so
nothing outlives a failing test. The last tests are pure: each example whose code is not part of
this project plans a local environment where every workload and generic addon has a command and
every secret can be produced on one machine.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType

import pytest

from shipmate.plan.plan import resolve
from shipmate.targets.local import files
from shipmate.targets.local.ports import free_port
from tests.support import EXAMPLES_DIR, example_spec

STANDIN = EXAMPLES_DIR / "standin" / "standin.py"
STANDARD_PORTS = {80, 443, 3306, 4222, 5432, 5672, 6379, 8000, 8080, 9090}
# The examples that run the stand-in, and their local environment.
LOCAL_ENVIRONMENTS = {"tianting": "local", "platform-v6": "local", "security-triage": "dev", "nova": "dev"}

Start = Callable[..., "Standin"]


class Standin:
    """One running stand-in: its process, its primary port, and HTTP over one kept-alive connection."""

    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.port = port

    def get(self, path: str, port: int | None = None, method: str = "GET",
            body: bytes | None = None) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=5)
        try:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def json(self, path: str) -> dict[str, object]:
        status, text = self.get(path)
        assert status == 200, text
        data = json.loads(text)
        assert isinstance(data, dict)
        return data


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def _environment(port: int, extra: Mapping[str, str]) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PORT": str(port), **extra}


@pytest.fixture
def start(request: pytest.FixtureRequest) -> Start:
    """Start the stand-in with `env` added to a minimal environment; wait until it listens."""

    def run(env: Mapping[str, str] | None = None, *args: str, port: int | None = None) -> Standin:
        port = port or free_port()
        assert port not in STANDARD_PORTS
        proc = subprocess.Popen([sys.executable, str(STANDIN), *args], env=_environment(port, env or {}),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def end() -> None:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)

        request.addfinalizer(end)
        deadline = time.monotonic() + 10
        while not _listening(port):
            assert proc.poll() is None, proc.communicate(timeout=5)
            assert time.monotonic() < deadline, "the stand-in did not listen within 10 s"
            time.sleep(0.02)
        return Standin(proc, port)

    return run


def run_to_exit(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(STANDIN), *args], env=_environment(free_port(), env),
                          capture_output=True, text=True, timeout=10, check=False)


@pytest.fixture(scope="module")
def module() -> Iterator[ModuleType]:
    """The stand-in imported as a module, for its pure helpers."""
    spec = importlib.util.spec_from_file_location("standin", STANDIN)
    assert spec is not None
    assert spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules["standin"] = loaded  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(loaded)
        yield loaded
    finally:
        del sys.modules["standin"]


# --- what it serves ---------------------------------------------------------------------------

def test_health_version_echo_and_metrics(start: Start) -> None:
    s = start({"APP_VERSION": "1.4.2", "SHIPMATE_INSTANCE": "api-server-2"})
    assert s.get("/healthz") == (200, "ok\n")
    assert s.get("/readyz") == (200, "ok\n")
    assert s.json("/version") == {"service": "api-server", "version": "1.4.2", "instance": "api-server-2"}
    assert s.json("/rooms/7?x=1") == {"method": "GET", "path": "/rooms/7?x=1", "version": "1.4.2",
                                      "service": "api-server", "instance": "api-server-2"}
    status, text = s.get("/events", method="POST", body=b'{"kind": "vote"}')
    assert status == 200
    assert json.loads(text)["method"] == "POST"
    status, metrics = s.get("/metrics")
    assert status == 200
    # the three requests of traffic: probes and scrapes are not counted
    assert 'http_requests_total{code="200"} 3\n' in metrics
    assert "http_request_duration_seconds_count 3\n" in metrics
    assert 'standin_info{service="api-server",version="1.4.2",instance="api-server-2"} 1\n' in metrics


def test_requests_share_one_kept_alive_connection(start: Start) -> None:
    s = start()
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
    try:
        conn.request("GET", "/a")
        first = conn.getresponse()
        first.read()
        sock = conn.sock
        for path in ("/healthz", "/b", "/version"):
            conn.request("POST" if path == "/b" else "GET", path, body=b"x" * 1000 if path == "/b" else None)
            response = conn.getresponse()
            assert response.status == 200
            response.read()
            assert conn.sock is sock  # the same connection: nothing closed it
        assert first.version == 11
    finally:
        conn.close()


def test_every_declared_port_answers(start: Start) -> None:
    other = free_port()
    s = start({"PORT_GRPC": str(other), "SHIPMATE_SERVICE": "platform-api"})
    assert s.get("/healthz", port=other) == (200, "ok\n")
    status, text = s.get("/version", port=other)
    assert (status, json.loads(text)["service"]) == (200, "platform-api")


def test_readiness_waits_for_ready_delay(start: Start) -> None:
    s = start({"READY_DELAY": "30"})
    assert s.get("/readyz")[0] == 503
    assert s.get("/actuator/health/readiness")[0] == 503  # a spec's own readiness path
    assert s.get("/healthz") == (200, "ok\n")
    assert s.get("/health") == (200, "ok\n")


def test_fault_rate_one_fails_traffic_but_not_health(start: Start) -> None:
    s = start({"FAULT_RATE": "1"})
    assert s.get("/")[0] == 500
    assert s.get("/orders")[0] == 500
    assert s.get("/healthz") == (200, "ok\n")
    assert s.get("/readyz") == (200, "ok\n")
    status, metrics = s.get("/metrics")
    assert status == 200
    assert 'http_requests_total{code="500"} 2\n' in metrics
    assert 'code="200"' not in metrics


def test_latency_slows_traffic_but_not_health(start: Start) -> None:
    s = start({"LATENCY_MS": "300"})
    began = time.monotonic()
    assert s.get("/")[0] == 200
    assert time.monotonic() - began >= 0.3
    began = time.monotonic()
    assert s.get("/healthz")[0] == 200
    assert time.monotonic() - began < 0.3


def test_crash_on_start_exits_one_and_says_why() -> None:
    done = run_to_exit({"CRASH_ON_START": "true"})
    assert done.returncode == 1
    assert "CRASH_ON_START" in done.stderr


@pytest.mark.parametrize(("env", "message"), [
    ({"FAULT_RATE": "2"}, "FAULT_RATE='2' must be between 0 and 1"),
    ({"LATENCY_MS": "soon"}, "LATENCY_MS='soon' is not a number"),
    ({"PORT": "http"}, "PORT='http' is not a TCP port"),
])
def test_a_bad_setting_exits_two_and_names_it(env: dict[str, str], message: str) -> None:
    done = run_to_exit(env)
    assert done.returncode == 2
    assert message in done.stderr


def test_sigterm_stops_it_at_once_with_exit_zero(start: Start) -> None:
    s = start()
    idle = socket.create_connection(("127.0.0.1", s.port), timeout=5)  # a kept-alive client must not hold it up
    try:
        began = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(timeout=5) == 0
        assert time.monotonic() - began < 1.0
    finally:
        idle.close()
    assert not _listening(s.port)
    assert "standin: stopped" in s.proc.communicate(timeout=5)[1]


def test_secrets_lists_names_and_count_never_values(start: Start, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    values = {"database-url": b"postgresql://app:hunter2-very-secret@db/app", "jwt-signing-key": b"k" * 64}
    files.deliver(secrets, values)  # the local target's own layout: ..data and symlinks
    s = start({"SHIPMATE_SECRETS_DIR": str(secrets)})
    status, text = s.get("/secrets")
    assert status == 200
    assert json.loads(text) == {"count": 2, "names": ["database-url", "jwt-signing-key"]}
    for value in values.values():
        assert value.decode() not in text
    assert "hunter2" not in s.get("/metrics")[1]


def test_secrets_without_a_secrets_directory_is_not_found(start: Start) -> None:
    assert start().get("/secrets")[0] == 404


def test_tcp_ports_echo(start: Start) -> None:
    transport = free_port()
    s = start({"PORT_TRANSPORT": str(transport)}, "--tcp", "transport")
    with socket.create_connection(("127.0.0.1", transport), timeout=5) as sock:
        sock.sendall(b"ping\n")
        assert sock.recv(16) == b"ping\n"
    assert s.get("/healthz") == (200, "ok\n")  # the primary port is still HTTP


def test_service_names_and_probe_paths(module: ModuleType) -> None:
    assert module.service_name("api-2", None) == "api"
    assert module.service_name("api-1.2.0-0", "1.2.0") == "api"
    assert module.service_name("ws-gateway", None) == "ws-gateway"
    assert module.service_name(None, "1.0") is None
    assert [module._kind(p) for p in ("/readyz", "/ready", "/healthz", "/_cluster/health", "/", "/version")] == [
        "ready", "ready", "live", "live", None, None]


# --- the examples' local environments -----------------------------------------------------------

@pytest.mark.parametrize(("name", "env"), sorted(LOCAL_ENVIRONMENTS.items()))
def test_local_environment_runs_every_workload_with_a_command(name: str, env: str) -> None:
    loaded = example_spec(name)
    plan = resolve(loaded.for_env(env), env)
    assert plan.target == "local"
    spec_dir = EXAMPLES_DIR / name
    for workload in plan.workloads:
        assert workload.run == "python3 ../standin/standin.py", workload.name
        assert workload.replicas == 1, workload.name
        assert workload.autoscaling is None, workload.name
    for addon in plan.addons:
        assert not addon.external, addon.name
        if addon.kind == "generic":
            assert isinstance(addon.run, str), addon.name
            assert addon.run.startswith("python3 ../standin/standin.py"), addon.name
    assert (spec_dir / "../standin/standin.py").resolve() == STANDIN
    assert [(s.name, s.source) for s in plan.secrets if s.source in ("external", "set")] == []


def test_the_local_environments_are_the_first_local_ones() -> None:
    """The compose output shows the first local environment: it is the one that runs the stand-in."""
    for name, env in LOCAL_ENVIRONMENTS.items():
        environments = example_spec(name).base.environments
        assert next(e for e, spec in environments.items() if spec.target == "local") == env
