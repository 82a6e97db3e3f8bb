"""The local target's addons, as real private servers on free ports under tmp_path.

Each test starts the machine's own binaries (PostgreSQL, MariaDB, Redis, NATS, RabbitMQ,
Prometheus), talks to them with a real client using the generated password, and stops them in a
finalizer, so nothing outlives a failing test. The machine's shared instances on the standard ports
are never used. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nats
import pika
import psycopg
import pymysql
import pytest
import redis

from shipmate.errors import UserError
from shipmate.plan.models import AddonPlan, ResourcesPlan
from shipmate.targets.local.addons import (
    Addon,
    AddonFailed,
    MissingBinary,
    Nats,
    Prometheus,
    addon_for,
)

pytestmark = pytest.mark.integration

STANDARD_PORTS = {5432, 3306, 6379, 4222, 8222, 5672, 15672, 25672, 4369, 9090}


def plan(name: str, kind: str, databases: tuple[str, ...] = (), config: tuple[tuple[str, str], ...] = ()) -> AddonPlan:
    return AddonPlan(name=name, kind=kind, image=f"{kind}:latest", port=1, storage="1Gi", databases=databases,
                     external=False, resources=ResourcesPlan(None, None, None, None), run_as_user=1000,
                     config=config, users=())


@pytest.fixture
def started(request: pytest.FixtureRequest) -> Callable[[Addon], Addon]:
    """Start an addon and stop it when the test ends, whatever happens."""

    def start(addon: Addon) -> Addon:
        request.addfinalizer(addon.stop)
        addon.start()
        assert addon.port is not None
        assert addon.port not in STANDARD_PORTS
        return addon

    return start


def assert_private(addon: Addon) -> None:
    assert stat.S_IMODE(addon.password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(addon.home.stat().st_mode) == 0o700
    connection = addon.connection()
    assert addon.password not in repr(connection)
    assert addon.password not in addon.log_file.read_text(encoding="utf-8", errors="replace")


def test_postgres_keeps_data_across_stop_and_start_and_purge_removes_it(
        tmp_path: Path, started: Callable[[Addon], Addon]) -> None:
    db = started(addon_for(plan("db", "postgres", databases=("app", "audit")), tmp_path))
    assert_private(db)
    url = db.connection().url
    assert url.startswith(f"postgresql://postgres:{db.password}@127.0.0.1:{db.port}/app")

    with psycopg.connect(url, connect_timeout=5) as conn:
        conn.execute("CREATE TABLE events (id serial PRIMARY KEY, body text)")
        conn.execute("INSERT INTO events (body) VALUES ('night falls')")
        databases = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        settings = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                                     "('wal_level', 'archive_mode', 'listen_addresses')").fetchall())
    assert {"app", "audit"} <= databases
    assert settings == {"wal_level": "replica", "archive_mode": "on", "listen_addresses": "127.0.0.1"}
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url.replace(db.password, "wrong"), connect_timeout=5).close()

    port, pid = db.port, db.pid
    db.stop()
    assert db.pid is None
    assert pid is not None
    assert not Path(f"/proc/{pid}").exists()

    again = started(addon_for(plan("db", "postgres", databases=("app", "audit")), tmp_path))  # another process
    assert again.port == port
    with psycopg.connect(again.connection().url, connect_timeout=5) as conn:
        assert conn.execute("SELECT body FROM events").fetchall() == [("night falls",)]

    again.purge()
    assert not again.home.exists()
    assert again.pid is None


def test_start_is_idempotent_and_a_second_handle_finds_the_running_server(
        tmp_path: Path, started: Callable[[Addon], Addon]) -> None:
    cache = started(addon_for(plan("cache", "redis"), tmp_path))
    pid = cache.pid
    cache.start()
    other = addon_for(plan("cache", "redis"), tmp_path)
    other.start()
    assert cache.pid == other.pid == pid
    other.stop()
    assert cache.pid is None


def test_redis_requires_the_password_and_keeps_its_append_only_file(
        tmp_path: Path, started: Callable[[Addon], Addon]) -> None:
    cache = started(addon_for(plan("cache", "redis"), tmp_path))
    assert_private(cache)
    client = redis.Redis.from_url(cache.connection().url, socket_timeout=5)
    with client:
        client.set("room:1", "werewolf")
        assert client.get("room:1") == b"werewolf"
    with socket.create_connection(("127.0.0.1", cache.port or 0), timeout=5) as anonymous:
        anonymous.sendall(b"GET room:1\r\n")
        assert anonymous.recv(4096).startswith(b"-NOAUTH")
    cache.stop()
    cache.start()
    with redis.Redis.from_url(cache.connection().url, socket_timeout=5) as client:
        assert client.get("room:1") == b"werewolf"
    assert (cache.data_dir / "appendonlydir").is_dir()


def test_nats_publishes_subscribes_and_keeps_a_jetstream_stream(
        tmp_path: Path, started: Callable[[Addon], Addon]) -> None:
    bus = started(addon_for(plan("bus", "nats"), tmp_path))
    assert isinstance(bus, Nats)
    assert_private(bus)

    async def talk() -> tuple[bytes, bytes]:
        client = await nats.connect(bus.connection().url, connect_timeout=5, allow_reconnect=False)
        try:
            sub = await client.subscribe("rooms.1")
            await client.publish("rooms.1", b"vote")
            plain = (await sub.next_msg(timeout=5)).data
            js = client.jetstream()
            await js.add_stream(name="EVENTS", subjects=["events.>"])
            await js.publish("events.room1", b"day breaks", timeout=5)
            stored = (await js.get_msg("EVENTS", 1)).data or b""
        finally:
            await client.close()
        return plain, stored

    assert asyncio.run(talk()) == (b"vote", b"day breaks")
    with urllib.request.urlopen(f"http://127.0.0.1:{bus.monitor_port}/jsz", timeout=5) as response:
        assert json.load(response)["streams"] == 1

    # Without the token the server says no.
    with socket.create_connection(("127.0.0.1", bus.port or 0), timeout=5) as sock:
        sock.recv(4096)  # INFO
        sock.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
        assert b"Authorization Violation" in sock.recv(4096)

    bus.stop()
    bus.start()

    async def stream_count() -> int:
        client = await nats.connect(bus.connection().url, connect_timeout=5, allow_reconnect=False)
        try:
            info = await client.jetstream().stream_info("EVENTS")
        finally:
            await client.close()
        return info.state.messages

    assert asyncio.run(stream_count()) == 1


def test_mariadb_sets_the_password_and_creates_the_databases(
        tmp_path: Path, started: Callable[[Addon], Addon]) -> None:
    db = started(addon_for(plan("sql", "mysql", databases=("tianting",)), tmp_path))
    assert_private(db)
    connection = db.connection()
    assert not (db.home / "secrets" / "init.sql").exists()
    with pymysql.connect(host=connection.host, port=connection.port, user=connection.username,
                         password=connection.password, database="tianting", connect_timeout=5) as conn, \
            conn.cursor() as cursor:
        cursor.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        cursor.execute("INSERT INTO t VALUES (7)")
        conn.commit()
        cursor.execute("SELECT id FROM t")
        assert cursor.fetchall() == ((7,),)
    with pytest.raises(pymysql.err.OperationalError, match="Access denied"):
        pymysql.connect(host="127.0.0.1", port=connection.port, user="root", password="wrong", connect_timeout=5)  # noqa: S106 - a wrong one on purpose


def test_rabbitmq_runs_a_private_node_with_its_own_user(tmp_path: Path, started: Callable[[Addon], Addon]) -> None:
    broker = started(addon_for(plan("queue", "rabbitmq"), tmp_path))
    assert_private(broker)
    connection = broker.connection()
    assert connection.username == "queue"
    params = pika.URLParameters(connection.url)
    params.socket_timeout = 5
    params.blocked_connection_timeout = 5
    amqp = pika.BlockingConnection(params)
    try:
        channel = amqp.channel()
        channel.queue_declare("alerts")
        channel.basic_publish("", "alerts", b"triage me")
        deadline = time.monotonic() + 5
        body = None
        while body is None and time.monotonic() < deadline:
            _, _, body = channel.basic_get("alerts", auto_ack=True)
        assert body == b"triage me"
    finally:
        amqp.close()
    epmd_pid = broker._state()["epmd_pid"]
    broker.stop()
    assert broker.pid is None
    assert not Path(f"/proc/{epmd_pid}").exists()


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"# TYPE shipmate_test_up gauge\nshipmate_test_up 1\n"
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def metrics_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _active_targets(port: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5) as response:
        return list(json.load(response)["data"]["activeTargets"])


def test_prometheus_scrapes_its_targets(tmp_path: Path, started: Callable[[Addon], Addon],
                                        metrics_server: int) -> None:
    prom = Prometheus(plan("metrics", "prometheus"), tmp_path, targets=[f"127.0.0.1:{metrics_server}"],
                      scrape_interval="1s")
    started(prom)
    deadline = time.monotonic() + 20
    health: list[str] = []
    while time.monotonic() < deadline:
        health = [t["health"] for t in _active_targets(prom.port or 0)]
        if health == ["up"]:
            break
        time.sleep(0.25)
    assert health == ["up"]

    prom.set_targets([f"127.0.0.1:{metrics_server}", f"127.0.0.1:{prom.port}/metrics"])
    deadline = time.monotonic() + 20
    while len(_active_targets(prom.port or 0)) < 2 and time.monotonic() < deadline:
        time.sleep(0.25)
    assert len(_active_targets(prom.port or 0)) == 2


def test_a_missing_binary_names_the_debian_package(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    with pytest.raises(MissingBinary) as caught:
        addon_for(plan("db", "postgres"), tmp_path, path=str(empty)).start()
    assert str(caught.value) == "db (postgres): initdb not found; install the Debian package postgresql"
    with pytest.raises(MissingBinary) as caught:
        addon_for(plan("redis", "redis"), tmp_path, path=str(empty)).start()
    assert str(caught.value) == "redis: redis-server not found; install the Debian package redis-server"
    with pytest.raises(MissingBinary, match="mariadbd not found; install the Debian package mariadb-server"):
        addon_for(plan("sql", "mysql"), tmp_path, path=str(empty)).start()
    assert not (tmp_path / "addons").exists()


def test_a_server_that_dies_while_starting_is_reported_with_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    script = fake / "redis-server"
    script.write_text("#!/bin/sh\necho 'FATAL: cannot open the data directory' >&2\nexit 1\n", encoding="utf-8")
    script.chmod(0o755)
    cache = addon_for(plan("cache", "redis"), tmp_path, path=str(fake))
    with pytest.raises(AddonFailed, match=r"exited while starting.*FATAL: cannot open the data directory"):
        cache.start(timeout=10)
    assert cache.pid is None


def test_a_generic_addon_needs_a_command_to_run_locally(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"vector \(generic\): a generic addon runs locally only with a `run` command"):
        addon_for(plan("vector", "generic"), tmp_path).start()
    assert os.listdir(tmp_path) == []


def test_a_recorded_pid_now_used_by_another_process_is_not_ours(tmp_path: Path) -> None:
    cache = addon_for(plan("cache", "redis"), tmp_path)
    cache.home.mkdir(parents=True)
    # As after a reboot: the pid recorded then now belongs to someone else (here, this test).
    (cache.home / "addon.json").write_text(json.dumps({"port": 1, "pid": os.getpid(), "pid_started": 1}),
                                           encoding="utf-8")
    assert cache.pid is None
    cache.stop()  # must not signal this process
    assert cache.pid is None


STANDIN_SPEC_DIR = Path(__file__).resolve().parents[2] / "examples" / "security-triage"


@pytest.mark.parametrize("run", ["python3 ../standin/standin.py", ("python3", "../standin/standin.py")],
                         ids=["string", "list"])
def test_a_generic_addon_with_run_starts_from_the_spec_directory_is_ready_and_stops(
        tmp_path: Path, started: Callable[[Addon], Addon], run: str | tuple[str, ...]) -> None:
    """`run` of a generic addon (what security-triage's local environment gives chromadb and kong) runs
    the stand-in from the spec's directory, with the addon's config in its environment."""
    spec = AddonPlan(name="vector", kind="generic", image="docker.io/chromadb/chroma:0.5.5", port=8000,
                     storage="1Gi", databases=(), external=False, resources=ResourcesPlan(None, None, None, None),
                     run_as_user=10001, config=(("SHIPMATE_SERVICE", "vector"),), users=(), run=run)
    vector = started(addon_for(spec, tmp_path, base_dir=STANDIN_SPEC_DIR))
    assert vector.running()
    with urllib.request.urlopen(f"http://127.0.0.1:{vector.port}/healthz", timeout=5) as response:
        assert (response.status, response.read()) == (200, b"ok\n")
    with urllib.request.urlopen(f"http://127.0.0.1:{vector.port}/version", timeout=5) as response:
        assert json.loads(response.read())["service"] == "vector"
    assert vector.connection().url == f"tcp://127.0.0.1:{vector.port}"
    pid = vector.pid
    assert pid is not None
    began = time.monotonic()
    vector.stop()
    assert time.monotonic() - began < 5
    assert vector.pid is None
    assert not Path(f"/proc/{pid}").exists()
    assert "standin: stopped" in vector.log_file.read_text(encoding="utf-8")  # SIGTERM reached it: a clean stop


def test_a_generic_addon_run_from_a_missing_directory_or_program_is_said(tmp_path: Path) -> None:
    spec = AddonPlan(name="vector", kind="generic", image="acme/vector:1", port=8000, storage="1Gi", databases=(),
                     external=False, resources=ResourcesPlan(None, None, None, None), run_as_user=10001,
                     config=(), users=(), run=("./bin/vector-stub",))
    with pytest.raises(MissingBinary, match=r"vector \(generic\): .*/bin/vector-stub is not an executable file"):
        addon_for(spec, tmp_path, base_dir=STANDIN_SPEC_DIR).start()
    with pytest.raises(UserError, match=r"vector \(generic\): no directory .*/nowhere to run `run` in"):
        addon_for(spec, tmp_path, base_dir=tmp_path / "nowhere").start()
    assert not (tmp_path / "addons").exists()
