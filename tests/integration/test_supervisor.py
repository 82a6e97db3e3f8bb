"""The local target's supervisor and file delivery, with real processes and real files.

Fake services are small Python scripts written to tmp_path. Every wait is bounded; timings are
generous enough to hold on a loaded 2-core machine.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from shipmate.errors import TemporaryError
from shipmate.plan.models import ProbePlan
from shipmate.targets.local import files
from shipmate.targets.local.supervisor import (
    REGISTRY,
    Backoff,
    LaunchSpec,
    ProcessRegistry,
    Supervisor,
    group_members,
    proc_stat,
)

pytestmark = pytest.mark.integration


# --- file delivery ----------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_delivery_layout_and_permissions(tmp_path: Path) -> None:
    target = tmp_path / "secrets"
    files.deliver(target, {"jwt-key": b"one", "db-url": b"postgres://x"})
    version = files.current_version(target)
    assert version is not None
    assert version.startswith("..")
    assert version != files.DATA
    assert os.readlink(target / files.DATA) == version
    assert os.readlink(target / "jwt-key") == "..data/jwt-key"
    assert (target / "jwt-key").read_bytes() == b"one"
    assert _mode(target) == 0o700
    assert _mode(target / version) == 0o700
    assert _mode(target / version / "jwt-key") == 0o600
    assert _mode(target / version / "db-url") == 0o600

    files.deliver(target, {"jwt-key": b"two"})
    assert (target / "jwt-key").read_bytes() == b"two"
    assert not (target / "db-url").exists()
    assert not (target / "db-url").is_symlink()
    versions = [e for e in os.listdir(target) if e.startswith("..") and e != files.DATA]
    assert versions == [files.current_version(target)], "old versions are removed after the swap"
    assert files.read_set(target) == {"jwt-key": b"two"}


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "..data", "..hidden"])
def test_delivery_rejects_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid file name"):
        files.deliver(tmp_path / "d", {name: b"x"})


def test_readers_never_see_a_mixed_set(tmp_path: Path) -> None:
    target = tmp_path / "config"
    names = ("a", "b", "c")
    size = 64 * 1024  # big enough that a torn write would show

    def content(version: int) -> bytes:
        return str(version).encode().ljust(size, b"#")

    files.deliver(target, dict.fromkeys(names, content(0)))
    stop = threading.Event()
    problems: list[str] = []
    reads = {"sets": 0, "files": 0, "vanished": 0}

    def reader() -> None:
        while not stop.is_set():
            values = files.read_set(target)
            if set(values) != set(names) or len(set(values.values())) != 1:
                problems.append(f"mixed set: { {k: v[:8] for k, v in values.items()} }")
            reads["sets"] += 1
            for name in names:  # a single file through its symlink is always whole
                try:
                    data = (target / name).read_bytes()
                except FileNotFoundError:  # resolved to a version removed meanwhile (as on Kubernetes)
                    reads["vanished"] += 1
                    continue
                if len(data) != size or data != content(int(data.split(b"#", 1)[0])):
                    problems.append(f"torn file {name}")
                reads["files"] += 1

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for version in range(1, 201):
            files.deliver(target, dict.fromkeys(names, content(version)))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert not problems, problems[:5]
    assert reads["sets"] > 20
    assert files.read_set(target) == dict.fromkeys(names, content(200))
    assert len([e for e in os.listdir(target) if e.startswith("..")]) == 2  # ..data and one version


# --- the supervisor -----------------------------------------------------------------------------

SERVICE = r'''
import http.server, json, os, signal, subprocess, sys, time

args = sys.argv[1:]
print("started", os.getpid(), time.monotonic(), flush=True)
if "--ignore-term" in args:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "--crash" in args:
    print("boom: crashing on purpose", file=sys.stderr, flush=True)
    sys.exit(3)
if "--grandchild" in args:
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    with open(os.environ["PIDS_FILE"], "a") as f:
        f.write(f"{os.getpid()} {child.pid}\n")
if "--no-port" in args:
    while True:
        time.sleep(1)
marker = os.environ.get("SICK_DIR", "")

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz" and marker and os.path.exists(f"{marker}/sick-{os.getpid()}"):
            code, body = 500, b"sick"
        elif self.path == "/env":
            code, body = 200, json.dumps(dict(os.environ)).encode()
        else:
            code, body = 200, f"ok {os.getpid()}".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''


def http_probe(path: str, *, failure_threshold: int = 3) -> ProbePlan:
    return ProbePlan(check="http", path=path, port=8080, command=(), initial_delay_seconds=0, period_seconds=1,
                     timeout_seconds=1, failure_threshold=failure_threshold, success_threshold=1)


def service(tmp_path: Path, instance: str, *flags: str, version: str = "v1", grace: float = 5.0,
            liveness: ProbePlan | None = None, **kwargs: Any) -> LaunchSpec:
    script = tmp_path / "service.py"
    if not script.exists():
        script.write_text(SERVICE, encoding="utf-8")
    env = (("PIDS_FILE", str(tmp_path / "pids")), ("SICK_DIR", str(tmp_path)), ("GREETING", "hello"))
    return LaunchSpec(id=instance, service=instance.rsplit("-", 1)[0], version=version,
                      argv=(sys.executable, str(script), *flags), workdir=tmp_path, env=env,
                      ports=(("http", 8080),), readiness=http_probe("/readyz"), liveness=liveness,
                      grace_seconds=grace, **kwargs)


def read(path: Path) -> bytes:
    return path.read_bytes()


def exists(path: Path) -> bool:
    return os.path.lexists(path)


def running(pid: int) -> bool:
    stat_ = proc_stat(pid)
    return stat_ is not None and stat_.state not in {"Z", "X"}


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        body: bytes = response.read()
        return body


async def until(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)


def run(test: Callable[[Supervisor], Coroutine[Any, Any, None]], state: Path, **kwargs: Any) -> None:
    """Run an async test body with a supervisor that is always shut down afterwards."""

    async def main() -> None:
        supervisor = Supervisor(state, **kwargs)
        try:
            await test(supervisor)
        finally:
            await supervisor.shutdown(grace=0.5)

    asyncio.run(main())


def test_instances_start_ready_with_their_environment_files_and_logs(tmp_path: Path) -> None:
    spec = service(tmp_path, "api-0", secret_files=(("jwt-key", b"s3cret-value"),),
                   config_files=(("/etc/app/app.yaml", b"debug: true\n"),),
                   secret_env=(("DATABASE_URL", b"postgres://from-env"),))

    async def body(sup: Supervisor) -> None:
        await sup.start(spec)
        await sup.start(service(tmp_path, "api-1"))
        await sup.wait_ready(["api-0", "api-1"], within=15)
        first, second = sup.observe()
        assert (first.id, first.version, first.ready, first.alive, first.restarts) == ("api-0", "v1", True, True, 0)
        assert first.port != second.port
        assert first.pid is not None
        env = json.loads(await asyncio.to_thread(get, first.port or 0, "/env"))
        assert env["PORT"] == str(first.port)
        assert env["PORT_HTTP"] == str(first.port)
        assert env["APP_VERSION"] == "v1"
        assert env["GREETING"] == "hello"
        assert env["DATABASE_URL"] == "postgres://from-env"
        assert {k: v for k, v in sup.environment("api-0").items() if k in env} == {
            k: v for k, v in env.items() if k in sup.environment("api-0")}, "what `shipmate exec` would get"
        assert "s3cret-value" not in json.dumps(env), "file secrets never go into the environment"
        secrets_dir = Path(env["SHIPMATE_SECRETS_DIR"])
        assert read(secrets_dir / "jwt-key") == b"s3cret-value"
        assert read(Path(env["SHIPMATE_CONFIG_DIR"]) / "etc/app/app.yaml") == b"debug: true\n"
        assert _mode(secrets_dir) == 0o700

        sup.update_files("api-0", secrets=[("jwt-key", b"rotated")])
        assert read(secrets_dir / "jwt-key") == b"rotated"
        assert sup.instance("api-0").pid == first.pid, "new files, same process"

        log_text = read(first.log_path).decode()
        assert f" api-0 out| started {first.pid} " in log_text
        assert any(line.startswith(f"started {first.pid}") for line in first.last_lines)
        await sup.stop("api-0")
        assert not exists(secrets_dir), "a stopped instance's secrets are removed"
        assert not running(first.pid)
        assert b"s3cret" not in read(first.log_path)

    run(body, tmp_path / "state")


def test_a_killed_instance_is_restarted_and_ready_again(tmp_path: Path) -> None:
    async def body(sup: Supervisor) -> None:
        await sup.start(service(tmp_path, "api-0"))
        await sup.wait_ready(["api-0"], within=15)
        before = sup.instance("api-0")
        assert before.pid is not None
        os.kill(before.pid, signal.SIGKILL)
        await until(lambda: sup.instance("api-0").restarts == 1, 10, "a restart")
        await sup.wait_ready(["api-0"], within=15)
        after = sup.instance("api-0")
        assert after.restarts == 1
        assert after.pid not in {None, before.pid}
        assert after.port == before.port, "an instance keeps its port across restarts"
        assert after.last_exit_code == -signal.SIGKILL
        assert after.last_reason == "killed by SIGKILL"
        assert await asyncio.to_thread(get, after.port or 0, "/") == f"ok {after.pid}".encode()

    run(body, tmp_path / "state", backoff=Backoff(initial=0.1))


def test_a_killed_shell_wrapper_is_noticed_though_its_child_holds_the_pipes(tmp_path: Path) -> None:
    """`run: python3 app.py` goes through /bin/sh -c, which forks the service as its child: when
    the shell dies, the child still holds stdout and stderr. The supervisor must see the exit at
    once, kill the rest of the group, and restart the instance."""

    async def body(sup: Supervisor) -> None:
        script = tmp_path / "service.py"
        script.write_text(SERVICE, encoding="utf-8")
        spec = replace(service(tmp_path, "api-0"), argv=("/bin/sh", "-c", f"{sys.executable} {script}; true"))
        await sup.start(spec)
        await sup.wait_ready(["api-0"], within=15)
        shell = sup.instance("api-0").pid
        assert shell is not None
        children = [p.pid for p in group_members(shell) if p.pid != shell]
        assert children, "the shell runs the service as its child"
        os.kill(shell, signal.SIGKILL)
        await until(lambda: sup.instance("api-0").restarts == 1, 10, "a restart")
        await sup.wait_ready(["api-0"], within=15)
        assert not any(running(p) for p in children), "the orphaned child was killed with its group"
        assert sup.instance("api-0").pid not in {None, shell}

    run(body, tmp_path / "state", backoff=Backoff(initial=0.1))


def test_liveness_failure_restarts_the_instance(tmp_path: Path) -> None:
    async def body(sup: Supervisor) -> None:
        await sup.start(service(tmp_path, "api-0", liveness=http_probe("/healthz", failure_threshold=2)))
        await sup.wait_ready(["api-0"], within=15)
        sick = sup.instance("api-0")
        assert sick.pid is not None
        (tmp_path / f"sick-{sick.pid}").touch()
        await until(lambda: sup.instance("api-0").restarts == 1, 15, "a restart after failed liveness")
        await sup.wait_ready(["api-0"], within=15)
        healthy = sup.instance("api-0")
        assert not running(sick.pid)
        assert healthy.pid != sick.pid
        assert healthy.alive
        assert healthy.last_reason.startswith("liveness probe failed 2 times: GET /healthz on port")
        assert "HTTP 500" in healthy.last_reason
        assert healthy.last_exit_code == -signal.SIGTERM

    run(body, tmp_path / "state", backoff=Backoff(initial=0.1))


def test_back_off_grows_between_restarts_of_a_crash_loop(tmp_path: Path) -> None:
    async def body(sup: Supervisor) -> None:
        await sup.start(service(tmp_path, "api-0", "--crash"))
        await until(lambda: sup.instance("api-0").restarts >= 5, 15, "five restarts")
        obs = sup.instance("api-0")
        assert not obs.ready
        assert obs.last_exit_code == 3
        assert "boom: crashing on purpose" in obs.last_lines
        log_lines = read(obs.log_path).decode().splitlines()
        delays = [line.rsplit(" ", 1)[1] for line in log_lines if "restarting in" in line][:5]
        assert delays == ["0.1s", "0.2s", "0.4s", "0.8s", "0.8s"]
        starts = [float(line.split()[-1]) for line in log_lines if " out| started " in line][:5]
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        for gap, delay in zip(gaps, (0.1, 0.2, 0.4, 0.8), strict=False):
            assert gap >= delay
        assert gaps[2] > gaps[0]

    run(body, tmp_path / "state", backoff=Backoff(initial=0.1, factor=2, maximum=0.8))


def test_a_crash_loop_is_reported_with_its_last_log_lines(tmp_path: Path) -> None:
    async def body(sup: Supervisor) -> None:
        await sup.start(service(tmp_path, "api-0", "--crash"))
        with pytest.raises(TemporaryError) as caught:
            await sup.wait_ready(["api-0"], within=1)
        message = str(caught.value)
        assert message.startswith("instance api-0 not ready after 1s")
        assert "exited with code 3" in message
        assert "boom: crashing on purpose" in message

    run(body, tmp_path / "state", backoff=Backoff(initial=0.1))


def test_a_command_that_cannot_start_is_retried_and_explained(tmp_path: Path) -> None:
    async def body(sup: Supervisor) -> None:
        await sup.start(replace(service(tmp_path, "api-0"), argv=(str(tmp_path / "missing-binary"),)))
        await sup.start(replace(service(tmp_path, "api-1"), workdir=tmp_path / "missing-dir"))
        await until(lambda: all(o.restarts >= 2 for o in sup.observe()), 10, "retries")
        first, second = sup.observe()
        assert first.last_reason.startswith("could not start")
        assert "missing-binary" in first.last_reason
        assert second.last_reason.endswith(f"no such working directory ({tmp_path / 'missing-dir'})")
        assert not first.ready

    run(body, tmp_path / "state", backoff=Backoff(initial=0.05))


def pids_in(path: Path) -> list[int]:
    return [int(p) for line in path.read_text(encoding="utf-8").splitlines() for p in line.split()]


def test_graceful_stop_kills_the_whole_group_after_the_grace_period(tmp_path: Path) -> None:
    async def body(sup: Supervisor) -> None:
        await sup.start(service(tmp_path, "polite-0"))
        await sup.start(service(tmp_path, "stubborn-0", "--ignore-term", "--grandchild", grace=1.5))
        await sup.wait_ready(["polite-0", "stubborn-0"], within=15)
        polite = sup.instance("polite-0").pid
        stubborn = pids_in(tmp_path / "pids")
        assert len(stubborn) == 2
        assert all(running(pid) for pid in stubborn)

        began = time.monotonic()
        await sup.stop("polite-0")
        assert time.monotonic() - began < 1.0, "a process that honours SIGTERM is not made to wait"
        assert polite is not None
        assert not running(polite)

        began = time.monotonic()
        await sup.stop("stubborn-0")
        took = time.monotonic() - began
        assert 1.5 <= took < 4.0, took
        assert not [pid for pid in stubborn if running(pid)], "the grandchild and the SIGTERM-ignorer are gone"
        assert json.loads((tmp_path / "state" / REGISTRY).read_text(encoding="utf-8"))["groups"] == []

    run(body, tmp_path / "state")


SUPERVISOR_PROCESS = r"""
import asyncio, json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from tests.integration.test_supervisor import service
from shipmate.targets.local.supervisor import Supervisor

async def main():
    tmp = Path(sys.argv[1])
    sup = Supervisor(tmp / "state")
    await sup.start(service(tmp, "api-0", "--grandchild"))
    await sup.start(service(tmp, "worker-0", "--ignore-term"))
    await sup.wait_ready(["api-0", "worker-0"], within=20)
    print(json.dumps([o.pid for o in sup.observe()]), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_recover_after_the_supervisor_was_sigkilled_leaves_nothing_running(tmp_path: Path) -> None:
    script = tmp_path / "run_supervisor.py"
    script.write_text(SUPERVISOR_PROCESS, encoding="utf-8")
    root = Path(__file__).resolve().parents[2]
    state = tmp_path / "state"
    try:
        with subprocess.Popen([sys.executable, str(script), str(tmp_path), str(root)], stdout=subprocess.PIPE,
                              text=True) as proc:
            try:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                started = sorted({*json.loads(line), *pids_in(tmp_path / "pids")})  # api, its grandchild, worker
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
        assert len(started) == 3
        assert all(running(pid) for pid in started), "the test must first leave orphans behind"

        began = time.monotonic()
        swept = Supervisor(state).recover(grace=1.0)
        assert time.monotonic() - began < 5
        assert len(swept) == 2
        assert {r.what for r in swept} == {"instance api-0", "instance worker-0"}
        assert [pid for pid in started if running(pid)] == []
        assert Supervisor(state).recover() == [], "the registry is empty after a sweep"
    finally:
        Supervisor(state).recover(grace=0)  # whatever failed above, leave nothing running


def test_recover_never_kills_a_process_whose_pid_was_recycled(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        registry = ProcessRegistry(tmp_path / "state" / REGISTRY)
        registry.spawned(stranger.pid, "instance api-0")
        data = json.loads(registry.path.read_text(encoding="utf-8"))
        data["groups"][0]["start_ticks"] -= 1  # same pid, another process: a recycled number
        registry.path.write_text(json.dumps(data), encoding="utf-8")
        assert Supervisor(tmp_path / "state").recover(grace=0.2) == []
        assert running(stranger.pid)
        assert Supervisor(tmp_path / "elsewhere").recover() == []
        assert not (tmp_path / "elsewhere").exists(), "no registry, nothing created"
    finally:
        stranger.kill()
        stranger.wait()
