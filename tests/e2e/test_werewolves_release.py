"""Releases of cyber-werewolves on the local target under continuous load, HTTP through the
api-server's router and WebSocket clients through the ws-gateway's router (each connects with a
real player token, waits for the gateway's hello, leaves, and connects again): a rolling update,
a blue-green switch, a canary by roomId to 100% and a rollback lose no request and no connection;
a canary of a version that fails 10% of its requests is rolled back by the analysis, with the
decision and its numbers recorded."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from shipmate.drills.load import Load
from tests.local_support import brought_down, run_cli, status_doc
from tests.support import EXAMPLES_DIR

pytestmark = pytest.mark.integration

SPEC = EXAMPLES_DIR / "cyber-werewolves" / "shipmate.yaml"


def post(port: int, path: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        answer: dict[str, Any] = json.loads(response.read())
        return answer


class Sockets:
    """WebSocket clients in a thread: connect, wait for hello, close, again; every failure kept."""

    def __init__(self, port: int, room: str, token: str, clients: int = 3) -> None:
        self.url = f"ws://127.0.0.1:{port}/ws?roomId={room}&token={token}"
        self.hellos = 0
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run(clients)), daemon=True)
        self.thread.start()

    async def _run(self, clients: int) -> None:
        await asyncio.gather(*(self._client() for _ in range(clients)))

    async def _client(self) -> None:
        while not self.stopping.is_set():
            try:
                async with connect(self.url, open_timeout=10) as ws:
                    hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if hello.get("type") != "hello":
                        self.failures.append(f"first message {hello}")
                    self.hellos += 1
                    await asyncio.sleep(0.3)
            except Exception as exc:  # noqa: BLE001 - every failure is what this test counts
                self.failures.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)


def ports(state: Path) -> dict[str, int]:
    return {s["name"]: s["router"]["port"] for s in status_doc(SPEC, state=state)["services"]}


def test_werewolves_releases_under_http_and_websocket_load(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with brought_down(SPEC, state, state=state):
        up = run_cli(SPEC, "up", "--no-prometheus", state=state)
        assert up.returncode == 0, up.stderr
        routers = ports(state)
        api, ws = routers["api-server"], routers["ws-gateway"]
        room = post(api, "/api/rooms", {"name": "load"})["roomId"]
        token = post(api, f"/api/rooms/{room}/join", {"name": "watcher"})["token"]
        http = Load(api, path=f"/api/rooms/{room}", threads=3, rooms=30)
        sockets = Sockets(ws, room, token)
        try:
            time.sleep(1.0)
            for args in (("--version", "1.3.0"),
                         ("--strategy", "blue-green", "--version", "1.4.0"),
                         ("--strategy", "canary-quick", "--version", "1.5.0")):
                done = run_cli(SPEC, "deploy", *args, state=state, timeout=240)
                assert done.returncode == 0, done.stderr
            back = run_cli(SPEC, "rollback", state=state, timeout=240)
            assert back.returncode == 0, back.stderr
            time.sleep(0.5)
        finally:
            http.stop()
            sockets.stop()
        assert http.failed() == [], http.failed()[:3]
        assert [a for a in http.answers if a.status != 200] == []
        assert sockets.failures == []
        assert sockets.hellos > 20
        doc = status_doc(SPEC, state=state)
        assert {s["name"]: s["version"] for s in doc["services"]} == \
            {"agent-runtime": "1.4.0", "api-server": "1.4.0", "ws-gateway": "1.4.0"}

        bad = Load(api, path=f"/api/rooms/{room}", threads=3, rooms=30)
        try:
            done = run_cli(SPEC, "deploy", "--strategy", "canary-quick", "--version", "1.6.0",
                           "--set", "services.api-server.config.FAULT_RATE=0.1", state=state, timeout=240)
        finally:
            bad.stop()
        assert done.returncode == 1
        status = json.loads(run_cli(SPEC, "rollout", "status", "--output", "json", state=state).stdout)
        assert status["phase"] == "rolled-back"
        failed = next(d for d in status["decisions"] if d["verdict"] == "failed")
        error_rate = next(m for m in failed["runs"][-1]["measurements"] if m["check"] == "error-rate")
        assert error_rate["verdict"] == "fail"
        assert error_rate["value"] > 0.05
        assert "requests" in error_rate["detail"]
        assert [a for a in bad.answers if a.status >= 500 and a.version != "1.6.0" and a.version] == []
        assert status_doc(SPEC, state=state)["services"][1]["version"] == "1.4.0"
