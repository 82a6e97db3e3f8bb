"""Every example that runs on a stand-in (tianting, platform-v6, security-triage, nova) comes up
on the local target with all its addons, every service answers through its router with its own
name and version, and `down` leaves no process. cyber-werewolves, which has real code, has its
own end-to-end test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.local_support import brought_down, http_get, pids_mentioning, run_cli, status_doc
from tests.support import EXAMPLES_DIR

pytestmark = pytest.mark.integration

STAND_IN_EXAMPLES = ["nova", "platform-v6", "security-triage", "tianting"]


@pytest.mark.parametrize("example", STAND_IN_EXAMPLES)
def test_example_comes_up_serves_and_goes_down(example: str, tmp_path: Path) -> None:
    spec = EXAMPLES_DIR / example / "shipmate.yaml"
    state = tmp_path / "state"
    with brought_down(spec, state, state=state):
        up = run_cli(spec, "up", "--no-prometheus", state=state)
        assert up.returncode == 0, up.stderr
        doc = status_doc(spec, state=state)
        assert doc["phase"] == "ready"
        assert doc["addons"], "every example uses at least one addon"
        assert all(a["ready"] for a in doc["addons"]), doc["addons"]
        for service in doc["services"]:
            assert service["instances"], service
            assert all(i["ready"] for i in service["instances"]), service
            port = service["router"]["port"]
            if port is None:
                continue
            code, body = http_get(port, "/version")
            assert code == 200, (service["name"], body)
            assert json.loads(body)["service"] == service["name"]
            assert json.loads(body)["version"] == service["version"]
        pids = [i["pid"] for s in doc["services"] for i in s["instances"]]
        down = run_cli(spec, "down", state=state)
        assert down.returncode == 0, down.stderr
        assert pids_mentioning(state) == []
        assert not any(Path(f"/proc/{p}").exists() and p in pids_mentioning(state) for p in pids)
    shutil.rmtree(state, ignore_errors=True)
