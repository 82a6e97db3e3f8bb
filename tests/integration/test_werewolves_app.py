"""The cyber-werewolves example application as real processes against real servers.

Private PostgreSQL, Redis and NATS are started with shipmate's own local addons (from the dev
plan of the example's shipmate.yaml) under a temporary state directory; the secrets directory is
delivered the way the local target does it (`files.deliver`, a `..data` swap); the three services
run as `python -m werewolves.*` from the example's directory, as its `run:` commands say: two
api-server replicas, one ws-gateway, one agent-runtime. The scripted client plays whole games
through them. Nothing is mocked; every process is stopped in a finally, every wait is bounded.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from shipmate.plan.plan import resolve
from shipmate.targets.local import files
from shipmate.targets.local.addons import Addon, addon_for
from shipmate.targets.local.ports import free_port
from tests.support import EXAMPLES_DIR, example_spec

pytestmark = pytest.mark.integration

APP_DIR = EXAMPLES_DIR / "cyber-werewolves"
VERSION = "1.2.3-test"
PLAN = resolve(example_spec("cyber-werewolves").for_env("dev"), "dev")
# The services reread the key at most every 0.5 s; the rest is room for a busy 2-core machine.
RELOAD = 2.0
MODULES = {"api-server": "werewolves.api", "ws-gateway": "werewolves.gateway", "agent-runtime": "werewolves.agents"}


@dataclass
class Service:
    """One running instance: its process, port and log file."""

    name: str
    instance: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes] = field(repr=False)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return int(self.proc.returncode)


@dataclass
class Stack:
    urls: dict[str, str]
    secrets_dir: Path
    base_secrets: dict[str, bytes]
    logs: Path
    apis: list[Service] = field(default_factory=list)
    gateway: Service | None = None
    agents: Service | None = None

    def start(self, service: str, instance: str, **env: str) -> Service:
        """Start an instance of `service` the way shipmate's local supervisor does."""
        port = free_port()
        workload = PLAN.workload(service)
        environ = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        environ |= dict(workload.config) | {
            "PYTHONUNBUFFERED": "1", "PORT": str(port), f"PORT_{workload.ports[0].name.upper()}": str(port),
            "APP_VERSION": VERSION, "SHIPMATE_INSTANCE": instance, "SHIPMATE_SECRETS_DIR": str(self.secrets_dir),
            "SHIPMATE_CONFIG_DIR": str(self.logs / "config")} | env
        log_path = self.logs / f"{instance}.log"
        log = log_path.open("ab")
        proc = subprocess.Popen([sys.executable, "-m", MODULES[service]], cwd=APP_DIR, env=environ,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        return Service(service, instance, port, proc, log_path, log)

    def deliver(self, extra: Mapping[str, bytes]) -> None:
        files.deliver(self.secrets_dir, self.base_secrets | dict(extra))

    @property
    def services(self) -> list[Service]:
        return [*self.apis, *(s for s in (self.gateway, self.agents) if s is not None)]


def request(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback URLs we built
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"null")


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.05)


def wait_ready(service: Service, timeout: float = 20.0) -> None:
    def ready() -> bool:
        if service.proc.poll() is not None:
            raise AssertionError(f"{service.instance} exited ({service.proc.returncode}): {service.log_text()[-2000:]}")
        try:
            return request("GET", service.url("/readyz"))[0] == 200
        except OSError:
            return False

    wait_until(ready, timeout, f"{service.instance} ready")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """PostgreSQL, Redis and NATS of the dev plan, private, on free ports; their client URLs."""
    state = tmp_path_factory.mktemp("werewolves-state")
    addons: list[Addon] = [addon_for(plan, state) for plan in PLAN.addons if not plan.external]
    try:
        with concurrent.futures.ThreadPoolExecutor(len(addons)) as pool:
            list(pool.map(lambda addon: addon.start(), addons))
        yield {addon.name: addon.connection().url for addon in addons}
    finally:
        for addon in addons:
            addon.stop()


@pytest.fixture(scope="module")
def stack(servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The three services (two api-server replicas), ready."""
    root = tmp_path_factory.mktemp("werewolves")
    base = {"database-url": servers["postgres"].encode(), "redis-url": servers["redis"].encode(),
            "nats-url": servers["nats"].encode(), "agno-openai-api-key": secrets.token_hex(16).encode()}
    stack = Stack(servers, root / "secrets", base, root)
    stack.deliver({"jwt-signing-key": secrets.token_urlsafe(48).encode()})
    try:
        stack.apis = [stack.start("api-server", f"api-server-{n}") for n in (1, 2)]
        stack.gateway = stack.start("ws-gateway", "ws-gateway-1")
        stack.agents = stack.start("agent-runtime", "agent-runtime-1")
        for service in stack.services:
            wait_ready(service)
        yield stack
    finally:
        codes = {service.instance: service.stop() for service in stack.services}
    assert codes == dict.fromkeys(codes, 0), f"a graceful stop exits 0: {codes}"


def play(stack: Stack, api: Service, *args: str) -> subprocess.Popen[str]:
    assert stack.gateway is not None
    return subprocess.Popen([sys.executable, "-m", "werewolves.client", "--api", api.url(""),
                             "--ws", f"ws://127.0.0.1:{stack.gateway.port}", "--json", *args], cwd=APP_DIR,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_scripted_games_play_to_the_end_through_both_replicas(stack: Stack) -> None:
    clients = [play(stack, api, "--players", "8", "--humans", "2", "--timeout", "30") for api in stack.apis]
    results = []
    for client in clients:
        out, err = client.communicate(timeout=40)
        assert client.returncode == 0, err
        results.append(json.loads(out))

    with psycopg.connect(stack.urls["postgres"], connect_timeout=5) as conn:
        for summary in results:
            assert summary["players"] == 8
            assert summary["humans"] == 2
            assert summary["bots"] == 6
            assert summary["winner"] in ("werewolves", "villagers")
            rows = conn.execute("SELECT seq, type, payload FROM events WHERE room_id = %s ORDER BY seq",
                                (summary["room"],)).fetchall()
            assert [row[0] for row in rows] == list(range(1, summary["events"] + 1))
            types = [row[1] for row in rows]
            assert types[:3] == ["room-created", "player-joined", "player-joined"]
            assert {"game-started", "phase-changed", "player-killed", "vote-cast", "player-spoke"} <= set(types)
            assert types[-1] == "game-over"
            assert rows[-1][2]["winner"] == summary["winner"]
            assert summary["websocketEvents"] == summary["events"] - summary["after"]
            status, room = request("GET", stack.apis[1].url(f"/api/rooms/{summary['room']}"))
            assert status == 200
            assert (room["status"], room["winner"], room["members"]) == ("over", summary["winner"], 2)
            assert all("role" in p for p in room["players"])  # roles are public once it is over


def test_health_readiness_and_version_of_every_service(stack: Stack) -> None:
    for service in stack.services:
        assert request("GET", service.url("/healthz")) == (200, {"status": "ok"})
        assert request("GET", service.url("/readyz")) == (200, {"ready": True})
        assert request("GET", service.url("/version")) == (
            200, {"service": service.name, "version": VERSION, "instance": service.instance})


def test_the_api_refuses_what_the_rules_do_not_allow(stack: Stack) -> None:
    api = stack.apis[0]
    assert request("GET", api.url("/api/rooms/r-missing"))[0] == 404
    status, room = request("POST", api.url("/api/rooms"), {"name": "rules"})
    assert status == 201
    rid = room["roomId"]
    assert request("POST", api.url(f"/api/rooms/{rid}/act"), {"action": "vote", "target": "p2"}) == (
        401, {"error": "send the token from join as Authorization: Bearer <token>"})
    status, joined = request("POST", api.url(f"/api/rooms/{rid}/join"), {"name": "ann"})
    assert status == 201
    token = joined["token"]
    status, body = request("POST", api.url(f"/api/rooms/{rid}/act"), {"action": "vote", "target": "p2"}, token)
    assert (status, body["error"]) == (409, "no moves in the lobby phase")
    status, body = request("POST", api.url(f"/api/rooms/{rid}/start"), {"size": 99}, token)
    assert status == 400
    assert "size must be 4 to 12" in body["error"]
    status, other = request("POST", api.url("/api/rooms"), {})
    assert status == 201
    assert request("GET", api.url(f"/api/rooms/{other['roomId']}"), token=token)[0] == 403
    assert request("GET", api.url(f"/api/rooms/{rid}"), token="not.a.token")[0] == 401  # noqa: S106 - a bad one


def test_fault_rate_fails_the_api_not_the_probes_and_sigterm_exits_0(stack: Stack) -> None:
    faulty = stack.start("api-server", "api-server-faulty", FAULT_RATE="1")
    try:
        wait_ready(faulty)
        for path in ("/api/rooms", "/api/rooms/x/join"):
            assert request("POST", faulty.url(path), {})[0] == 500
        assert request("GET", faulty.url("/healthz"))[0] == 200
        assert request("GET", faulty.url("/readyz"))[0] == 200
        assert request("GET", faulty.url("/version"))[0] == 200
        began = time.monotonic()
        assert faulty.stop() == 0
        assert time.monotonic() - began < 5
    finally:
        faulty.stop()


def test_crash_on_start_exits_non_zero_in_every_service(stack: Stack) -> None:
    crashing = [stack.start(name, f"{name}-crash", CRASH_ON_START="true") for name in MODULES]
    try:
        for service in crashing:
            assert service.proc.wait(timeout=15) != 0
            assert "CRASH_ON_START" in service.log_text()
    finally:
        for service in crashing:
            service.stop()


def _signed_by(token: str, key: bytes) -> bool:
    head, payload, signature = token.split(".")
    digest = hmac.new(key, f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return hmac.compare_digest(base64.urlsafe_b64encode(digest).rstrip(b"=").decode(), signature)


def _ws_status(stack: Stack, room: str, token: str) -> int:
    """101 when the gateway opens the socket (and says hello), else its HTTP refusal."""
    assert stack.gateway is not None
    try:
        with connect(f"ws://127.0.0.1:{stack.gateway.port}/ws?roomId={room}&token={token}", open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "hello"
    except InvalidStatus as refused:
        return int(refused.response.status_code)
    return 101


def test_a_rotated_jwt_key_is_picked_up_without_a_restart(stack: Stack) -> None:
    api, replica = stack.apis
    status, room = request("POST", api.url("/api/rooms"), {"name": "rotation"})
    assert status == 201
    rid = room["roomId"]
    status, joined = request("POST", api.url(f"/api/rooms/{rid}/join"), {"name": "old"})
    assert status == 201
    old_token = joined["token"]
    old_key = files.read_set(stack.secrets_dir)["jwt-signing-key"]
    assert _signed_by(old_token, old_key)

    def works(token: str, service: Service) -> bool:
        return request("GET", service.url(f"/api/rooms/{rid}"), token=token)[0] == 200

    # A rotation: the new key signs, the old one stays valid for the grace period.
    new_key = secrets.token_urlsafe(48).encode()
    stack.deliver({"jwt-signing-key": new_key, "jwt-signing-key.previous": old_key})
    began = time.monotonic()
    new_token = ""

    def signs_with_new_key() -> bool:
        nonlocal new_token
        status, body = request("POST", api.url(f"/api/rooms/{rid}/join"), {"name": "new"})
        assert status == 201
        new_token = body["token"]
        return _signed_by(new_token, new_key)

    wait_until(signs_with_new_key, RELOAD, "tokens signed with the new key")
    wait_until(lambda: works(new_token, replica), RELOAD - (time.monotonic() - began),
               "the other replica accepts the new key")
    for service in stack.apis:
        assert works(old_token, service)
    assert _ws_status(stack, rid, old_token) == 101
    assert _ws_status(stack, rid, new_token) == 101

    # The grace period ends: the previous key goes away, and with it the old tokens.
    stack.deliver({"jwt-signing-key": new_key})
    began = time.monotonic()
    for service in stack.apis:
        wait_until(lambda service=service: not works(old_token, service), RELOAD - (time.monotonic() - began),
                   f"{service.instance} refuses the old token")
    assert request("GET", api.url(f"/api/rooms/{rid}"), token=old_token) == (
        401, {"error": "invalid token: bad token signature"})
    wait_until(lambda: _ws_status(stack, rid, old_token) == 401, RELOAD, "the gateway refuses the old token")
    for service in stack.apis:
        assert works(new_token, service)
    assert _ws_status(stack, rid, new_token) == 101


def test_no_secret_reaches_a_log(stack: Stack) -> None:
    values = [v.decode() for v in files.read_set(stack.secrets_dir).values()]
    values += [url.split("@")[0].rsplit(":", 1)[-1].lstrip("/") for url in stack.urls.values()]  # passwords, token
    logs = "".join(service.log_text() for service in stack.services)
    assert "ready" in logs
    for value in values:
        assert len(value) >= 16
        assert value not in logs
