"""From a plan Workload to what the local supervisor runs: pure."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from shipmate.errors import NotFound, SpecError
from shipmate.plan.models import Workload
from shipmate.plan.plan import resolve
from shipmate.targets.local.supervisor import Backoff, command_of, launch_spec
from tests.support import example_spec


def api_server() -> Workload:
    return resolve(example_spec("cyber-werewolves").for_env("dev"), "dev").workload("api-server")


SECRETS = {"jwt-signing-key": b"k", "database-url": b"postgres://u:p@h/db", "redis-url": b"redis://h",
           "nats-url": b"nats://h"}


def test_launch_spec_of_a_real_workload() -> None:
    w = api_server()
    spec = launch_spec(w, instance_id="api-server-0", base_dir=Path("/app"), secret_values=SECRETS)
    assert spec.argv == ("/bin/sh", "-c", "python3 -m werewolves.api")
    assert spec.workdir == Path("/app")
    assert spec.version == w.tag
    assert ("APP_VERSION", w.tag) in spec.env
    assert ("LOG_LEVEL", "info") in spec.env
    assert dict(spec.secret_files) == {"database-url": b"postgres://u:p@h/db", "jwt-signing-key": b"k",
                                       "nats-url": b"nats://h", "redis-url": b"redis://h"}
    assert spec.secret_env == ()
    assert not any(value.startswith("postgres://") for _, value in spec.env), "secrets stay out of env"
    assert spec.ports == (("http", 8080),)
    assert spec.readiness is not None
    assert spec.readiness.port == 8080
    assert spec.grace_seconds == float(w.termination_grace_seconds)
    assert "postgres://" not in repr(spec), "values are not in the repr"


def test_launch_spec_needs_every_secret_value() -> None:
    with pytest.raises(NotFound, match="no value for secret\\(s\\) jwt-signing-key"):
        launch_spec(api_server(), instance_id="a-0", base_dir=Path("/app"),
                    secret_values={k: v for k, v in SECRETS.items() if k != "jwt-signing-key"})


@pytest.mark.parametrize(
    ("run", "command", "args", "expected"),
    [
        ("python app.py", (), (), ("/bin/sh", "-c", "python app.py")),
        (("python", "app.py"), (), (), ("python", "app.py")),
        (None, ("/bin/server",), ("--fast",), ("/bin/server", "--fast")),
    ],
)
def test_command_of(run: str | tuple[str, ...] | None, command: tuple[str, ...], args: tuple[str, ...],
                    expected: tuple[str, ...]) -> None:
    assert command_of(replace(api_server(), run=run, command=command, args=args)) == expected


def test_command_is_required_locally() -> None:
    with pytest.raises(SpecError, match=r"^services\.api-server\.run: the local target needs"):
        command_of(replace(api_server(), run=None, command=(), args=()))


def test_backoff_doubles_to_its_maximum() -> None:
    assert [Backoff().delay(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
