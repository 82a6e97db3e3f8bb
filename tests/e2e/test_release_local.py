"""The release engine on the local target, end to end, under continuous load through the router:
rolling, blue-green and canary deploys and a rollback lose no request; a canary whose version
fails 10% of its requests is aborted by the analysis and rolled back with the numbers recorded; a
sticky key keeps every room on one version through the canary's steps (a room only ever moves
from the stable version to the new one); a crash-looping version is rolled back long before the
progress deadline. The service is the examples' stand-in (it honours FAULT_RATE and CRASH_ON_START).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipmate.drills.load import Load
from tests.local_support import brought_down, run_cli, status_doc
from tests.support import EXAMPLES_DIR

pytestmark = pytest.mark.integration

# A request sent up to this long before a weight change may still be routed by the old weights
# (it was on the wire, or in the router, when the change came).
SLACK = 0.05

SPEC = f"""\
version: 1
app: {{name: shop, version: 1.0.0}}
services:
  web:
    run: exec python3 {EXAMPLES_DIR / "standin" / "standin.py"}
    ports: [{{name: http, port: 8080}}]
    replicas: 2
    config: {{FAULT_RATE: "0", CRASH_ON_START: "false"}}
strategies:
  canary:
    type: canary
    stickyKey: {{query: roomId}}
    steps: [{{weight: 20}}, {{analysis: true}}, {{weight: 50}}, {{analysis: true}}, {{weight: 100}}]
    analysis:
      interval: 1s
      count: 2
      failureLimit: 0
      minRequests: 20
      checks: [{{name: error-rate, metric: error-rate, max: 0.05}}]
  blue-green: {{type: blue-green, scaleDownDelay: 1s}}
environments:
  dev: {{target: local}}
"""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    spec = tmp_path / "shipmate.yaml"
    spec.write_text(SPEC)
    with brought_down(spec, tmp_path):
        up = run_cli(spec, "up", "--no-prometheus")
        assert up.returncode == 0, up.stderr
        yield spec


def errors(load: Load) -> list[str]:
    """Requests without an answer or not answered 200."""
    return [f"{a.room}: {a.status or a.error}" for a in load.answers if a.status != 200]


def router_port(spec: Path) -> int:
    port: int = status_doc(spec)["services"][0]["router"]["port"]
    return port


def served_versions(spec: Path) -> set[str]:
    return {i["version"] for i in status_doc(spec)["services"][0]["instances"]}


def test_rolling_deploy_then_rollback_lose_no_request(project: Path) -> None:
    load = Load(router_port(project))
    try:
        time.sleep(0.5)
        deploy = run_cli(project, "deploy", "--version", "2.0.0", "-m", "new look")
        assert deploy.returncode == 0, deploy.stderr
        assert served_versions(project) == {"2.0.0"}
        started = time.monotonic()
        back = run_cli(project, "rollback")
        took = time.monotonic() - started
        assert back.returncode == 0, back.stderr
        assert served_versions(project) == {"1.0.0"}
        time.sleep(0.5)
    finally:
        load.stop()
    assert errors(load) == []
    versions = [a.version for a in load.answers]
    assert "2.0.0" in versions
    assert versions[-1] == "1.0.0"
    assert took < 15
    history = json.loads(run_cli(project, "history", "--output", "json").stdout)
    assert [(h["release"], h["current"]) for h in history] == [(2, False), (1, True)]
    assert history[0]["message"] == "new look"


def test_blue_green_switch_loses_no_request(project: Path) -> None:
    load = Load(router_port(project))
    try:
        time.sleep(0.5)
        deploy = run_cli(project, "deploy", "--strategy", "blue-green", "--version", "2.0.0")
        assert deploy.returncode == 0, deploy.stderr
        assert served_versions(project) == {"2.0.0"}
    finally:
        load.stop()
    assert errors(load) == []
    answers = load.in_order()
    switch = next(a.sent for a in answers if a.version == "2.0.0")
    late = [a.sent - switch for a in answers if a.version == "1.0.0" and a.sent > switch + SLACK]
    assert late == [], "after the switch every request goes to the new stack"


def test_canary_is_promoted_and_keeps_every_room_on_one_side(project: Path) -> None:
    load = Load(router_port(project), rooms=60)
    try:
        time.sleep(0.5)
        deploy = run_cli(project, "deploy", "--strategy", "canary", "--version", "2.0.0", timeout=120)
        assert deploy.returncode == 0, deploy.stderr
        assert "analysis passed" in deploy.stderr
        time.sleep(1.0)
    finally:
        load.stop()
    assert errors(load) == []
    by_room: dict[str, list[tuple[float, str]]] = {}
    for a in load.in_order():
        by_room.setdefault(a.room, []).append((a.sent, a.version))
    assert all(seen[-1][1] == "2.0.0" for seen in by_room.values()), "after promotion every room is on 2.0.0"
    for room, seen in by_room.items():
        first_new = next(t for t, v in seen if v == "2.0.0")
        back = [t - first_new for t, v in seen if v == "1.0.0" and t > first_new + SLACK]
        assert back == [], f"{room} went back to the stable version after moving to the canary"
    by_room_versions = {room: [v for _, v in seen] for room, seen in by_room.items()}
    moved_early = [room for room, versions in by_room_versions.items()
                   if versions.index("2.0.0") < len(versions) * 0.5]
    assert 0 < len(moved_early) < len(by_room), "some rooms were on the canary before the others"
    early = [room for room in by_room if by_room[room][0][1] == "2.0.0"]
    assert early == [], "before the first weight step every room was on the stable version"


def test_a_canary_failing_one_request_in_ten_is_rolled_back_by_analysis(project: Path) -> None:
    load = Load(router_port(project), rooms=60)
    try:
        time.sleep(0.5)
        deploy = run_cli(project, "deploy", "--strategy", "canary", "--version", "3.0.0",
                         "--set", "services.web.config.FAULT_RATE=0.1", timeout=120)
        assert deploy.returncode == 1
        assert "ended rolled-back" in deploy.stderr
        assert served_versions(project) == {"1.0.0"}
    finally:
        load.stop()
    status = json.loads(run_cli(project, "rollout", "status", "--output", "json").stdout)
    assert status["phase"] == "rolled-back"
    failed = [d for d in status["decisions"] if d["verdict"] == "failed"]
    assert failed, status["decisions"]
    measured = failed[-1]["runs"][-1]["measurements"][0]
    assert measured["check"] == "error-rate"
    assert measured["verdict"] == "fail"
    assert measured["value"] > 0.05
    assert status["message"].startswith("analysis failed")
    assert [a for a in load.answers if a.status == 0] == []
    assert [a for a in load.answers if a.status != 200 and a.version != "3.0.0" and a.version] == []
    env = status_doc(project)
    assert env["release"] == 1


def test_a_crash_looping_version_is_rolled_back_before_the_deadline(project: Path) -> None:
    load = Load(router_port(project))
    try:
        started = time.monotonic()
        deploy = run_cli(project, "deploy", "--version", "4.0.0", "--set", "services.web.config.CRASH_ON_START=true")
        took = time.monotonic() - started
        assert deploy.returncode == 1
        assert "crash-loops" in deploy.stderr
    finally:
        load.stop()
    assert took < 60, f"rolled back after {took:.0f}s; the progress deadline is 600s"
    assert errors(load) == []
    assert served_versions(project) == {"1.0.0"}
    assert status_doc(project)["release"] == 1


def test_the_rollback_drill_reports_in_the_shared_shape(project: Path, tmp_path: Path) -> None:
    page = tmp_path / "drill.html"
    done = run_cli(project, "drill", "rollback", "--output", "json", "--report", str(page), "--settle", "0.5")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) >= {"drill", "environment", "passed", "started", "finished", "metrics", "checks"}
    assert report["drill"] == "rollback"
    assert report["passed"] is True
    metrics = report["metrics"]
    assert set(metrics) >= {"requests", "failed_requests", "rollback_seconds", "version_before", "version_after"}
    assert metrics["requests"] > 100
    assert metrics["failed_requests"] == 0
    assert metrics["version_before"] == metrics["version_after"] == "1.0.0"
    assert 0 < metrics["rollback_seconds"] < 10
    assert all(set(c) == {"name", "passed", "detail"} and c["passed"] for c in report["checks"])
    html = page.read_text()
    assert "<svg" in html
    assert "passed" in html
    assert json.loads(html.split('<script type="application/json" id="report">')[1].split("</script>")[0]) == report
