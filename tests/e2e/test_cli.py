"""The `shipmate` command end to end: init, validate, plan, render (every format, --check), schema,
the global options, exit codes and error lines.

Commands run in-process through `shipmate.cli.main.main(argv)` (which returns the exit code) with
the working directory in a temporary folder; one test runs the installed console script in a real
subprocess. Exact lines are asserted where they are stable; where a line carries a count that
render decides (objects per environment), the expected count is computed from the same kit.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import pytest
import yaml

from shipmate.cli.main import main
from shipmate.files import MARKER
from shipmate.plan.plan import resolve
from shipmate.render.formats import FORMATS, build
from shipmate.render.kit import build_kit
from shipmate.spec.loader import load_file
from tests.support import EXAMPLES, EXAMPLES_DIR

Result = tuple[int, str, str]
Cli = Callable[..., Result]
APP = "shop"
ENVS = ("dev", "staging", "prod")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run `shipmate ARGS...` in-process: (exit code, stdout, stderr)."""

    def run(*argv: str) -> Result:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test in its own folder, with no SHIPMATE_* or colour settings from the caller, crash
    files kept inside it, and the shipmate logger restored afterwards."""
    for name in list(os.environ):
        if name.startswith("SHIPMATE_") or name in {"NO_COLOR", "FORCE_COLOR"}:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    logger = logging.getLogger("shipmate")
    saved = (logger.level, list(logger.handlers), logger.propagate)
    yield tmp_path
    logger.setLevel(saved[0])
    logger.handlers[:] = saved[1]
    logger.propagate = saved[2]


@pytest.fixture
def project(cli: Cli, workdir: Path) -> Path:
    """A folder holding the starter spec of `shipmate init --name shop`."""
    code, out, _ = cli("init", "--name", APP)
    assert (code, out) == (0, "")
    return workdir / "shipmate.yaml"


def tree(root: Path) -> set[str]:
    """Every file under `root`, relative, hidden ones included."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def validate_line(spec: Path, shown: str) -> str:
    kit = build_kit(load_file(spec))
    spec_data = load_file(spec).base
    envs = ", ".join(f"{env} ({len(kit.objects[env])} objects)" for env in kit.environments)
    return (f"ok: {shown}: {kit.app}, {len(spec_data.services)} services, {len(spec_data.addons)} addons; "
            f"environments: {envs}")


# --- init, validate, plan -------------------------------------------------------------------

def test_init_writes_a_starter_spec_that_validates(cli: Cli, workdir: Path) -> None:
    code, out, err = cli("init", "--name", APP)
    assert (code, out) == (0, "")
    assert err.splitlines() == ["wrote shipmate.yaml; next: shipmate validate, shipmate plan --env prod, "
                                "shipmate render --format all"]
    spec = workdir / "shipmate.yaml"
    assert load_file(spec).base.app.name == APP
    assert tree(workdir) == {"shipmate.yaml"}

    code, out, err = cli("validate")
    assert (code, err) == (0, "")
    assert out.splitlines() == [validate_line(spec, "shipmate.yaml")]
    assert out.startswith(f"ok: shipmate.yaml: {APP}, 1 services, 1 addons; environments: dev (")

    code, out, err = cli("--output", "json", "validate")
    assert code == 0
    summary = json.loads(out)
    assert summary["valid"] is True
    assert summary["app"] == APP
    assert summary["services"] == ["api"]
    assert summary["addons"] == ["db"]
    assert summary["environments"] == list(ENVS)


def test_init_refuses_to_overwrite_without_force(cli: Cli, project: Path) -> None:
    project.write_text(project.read_text() + "# mine\n")
    code, out, err = cli("init", "--name", APP)
    assert (code, out) == (2, "")
    assert err.splitlines() == ["error: shipmate.yaml exists; pass --force to overwrite it"]
    assert project.read_text().endswith("# mine\n")
    code, _, _ = cli("init", "--name", APP, "--force")
    assert code == 0
    assert not project.read_text().endswith("# mine\n")


def test_init_refuses_a_name_that_is_not_a_dns_label(cli: Cli, workdir: Path) -> None:
    code, out, err = cli("init", "--name", "My Shop")
    assert (code, out) == (2, "")
    assert err.splitlines() == ["error: --name 'My Shop': use lower case letters, digits and '-' (e.g. 'my-shop')"]
    assert tree(workdir) == set()


def test_plan_prints_the_resolved_environment(cli: Cli, project: Path) -> None:
    code, out, err = cli("plan", "--env", "prod")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:5] == [
        f"app {APP} 0.1.0, environment prod",
        f"  target kubernetes, namespace {APP}-prod",
        "  strategy canary (canary), rollback fast, approvals required 1",
        "  secrets delivered by csi (vault)",
        "services:",
    ]
    assert "  api: Deployment ghcr.io/example/api:0.1.0, replicas 3-10 (HPA), http:8080" in lines
    assert "    secrets: database-url (file database-url)" in lines
    assert f"    exposed at {APP}.example.com/ -> port 8080" in lines
    assert lines[lines.index("canary steps:") + 1:] == [
        "  weight 5%", "  analysis", "  weight 50%", "  analysis", "  weight 100%"]

    code, out, err = cli("plan", "--env", "dev")
    assert code == 0
    assert out.splitlines()[1] == f"  target local, namespace {APP}-dev"
    assert "  api: Deployment ghcr.io/example/api:0.1.0, replicas 2, http:8080" in out.splitlines()


def test_plan_as_json_is_the_whole_plan(cli: Cli, project: Path) -> None:
    code, out, err = cli("--output", "json", "plan", "--env", "prod")
    assert (code, err) == (0, "")
    data = json.loads(out)
    expected = resolve(load_file(project).for_env("prod"), "prod")
    assert data == json.loads(json.dumps(dataclasses.asdict(expected), default=str))
    assert data["environment"] == "prod"
    assert data["namespace"] == f"{APP}-prod"
    assert [w["name"] for w in data["workloads"]] == ["api"]
    assert data["workloads"][0]["autoscaling"]["min_replicas"] == 3


def test_output_is_also_read_from_the_environment(cli: Cli, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPMATE_OUTPUT", "json")
    code, out, _ = cli("plan", "--env", "staging")
    assert code == 0
    assert json.loads(out)["environment"] == "staging"


def test_shipmate_file_works_like_dash_f(cli: Cli, project: Path, workdir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    moved = workdir / "specs" / "app.yaml"
    moved.parent.mkdir()
    project.rename(moved)
    monkeypatch.chdir(elsewhere)

    code, out, err = cli("-f", str(moved), "validate")
    assert (code, err) == (0, "")
    assert out.splitlines() == [validate_line(moved, str(moved))]

    monkeypatch.setenv("SHIPMATE_FILE", str(moved))
    code, out_env, err = cli("validate")
    assert (code, err) == (0, "")
    assert out_env == out

    monkeypatch.setenv("SHIPMATE_FILE", str(workdir / "missing.yaml"))
    code, out, err = cli("validate")
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"error: {workdir / 'missing.yaml'}: no such file; create one with "
                                "`shipmate init` or pass -f PATH"]


def test_verbose_raises_the_log_level_and_changes_no_output(cli: Cli, project: Path) -> None:
    _, quiet, _ = cli("validate")
    logger = logging.getLogger("shipmate")
    assert logger.level == logging.WARNING
    for flag, level in (("-v", logging.INFO), ("-vv", logging.DEBUG), ("--verbose", logging.INFO)):
        code, out, err = cli(flag, "validate")
        assert (code, out, err) == (0, quiet, "")
        assert logger.level == level


# --- render ---------------------------------------------------------------------------------

def test_render_manifests_writes_one_file_per_environment(cli: Cli, project: Path, workdir: Path) -> None:
    code, out, err = cli("render", "--format", "manifests", "--out", "deploy")
    assert (code, out) == (0, "")
    assert err.splitlines() == [f"rendered manifests for {', '.join(ENVS)}: 3 files under deploy "
                                "(3 written, 0 removed)"]
    assert tree(workdir / "deploy") == {f"{env}.yaml" for env in ENVS} | {MARKER}
    kit = build_kit(load_file(project))
    for env in ENVS:
        docs = [d for d in yaml.safe_load_all((workdir / "deploy" / f"{env}.yaml").read_text()) if d]
        assert docs == kit.objects[env]

    code, out, err = cli("render", "--format", "manifests", "--out", "deploy")
    assert code == 0
    assert err.splitlines() == [f"rendered manifests for {', '.join(ENVS)}: 3 files under deploy "
                                "(0 written, 0 removed)"]

    code, out, err = cli("--output", "json", "render", "--env", "prod", "--out", "only-prod")
    assert code == 0
    assert json.loads(out) == {"out": "only-prod", "files": ["prod.yaml"], "written": 1, "removed": 0}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_render_each_format_then_check_is_clean(cli: Cli, project: Path, workdir: Path, fmt: str) -> None:
    code, out, err = cli("--output", "json", "render", "--format", fmt, "--out", "out")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report["files"], f"{fmt} rendered no files"
    assert tree(workdir / "out") == {*report["files"], MARKER}
    assert all((workdir / "out" / f).stat().st_size > 0 for f in report["files"])
    code, out, err = cli("render", "--format", fmt, "--out", "out", "--check")
    assert (code, out) == (0, "")
    assert err.splitlines() == [f"up to date: {len(report['files'])} files under out"]


def test_render_all_writes_a_folder_per_format(cli: Cli, project: Path, workdir: Path) -> None:
    code, out, err = cli("--output", "json", "render", "--format", "all", "--out", "kit")
    assert (code, err) == (0, "")
    files = json.loads(out)["files"]
    assert {f.split("/", 1)[0] for f in files} == set(FORMATS)
    assert tree(workdir / "kit") == {*files, MARKER}
    code, _, err = cli("render", "--format", "all", "--out", "kit", "--check")
    assert code == 0
    assert err.splitlines() == [f"up to date: {len(files)} files under kit"]


def test_render_check_reports_edits_missing_and_stale_files(cli: Cli, project: Path, workdir: Path) -> None:
    code, out, err = cli("render", "--check", "--out", "deploy")
    assert code == 1
    assert err.splitlines()[-1] == "error: 3 file(s) under deploy differ from the spec; run shipmate render"
    assert "+++ b/prod.yaml" in out
    assert not (workdir / "deploy").exists(), "--check wrote something"

    assert cli("render", "--out", "deploy")[0] == 0
    code, out, err = cli("render", "--check", "--out", "deploy")
    assert (code, out, err) == (0, "", "up to date: 3 files under deploy\n")

    prod = workdir / "deploy" / "prod.yaml"
    rendered = prod.read_text()
    prod.write_text(rendered.replace("maxUnavailable: 0", "maxUnavailable: 1", 1))
    code, out, err = cli("render", "--check", "--out", "deploy")
    assert code == 1
    assert err.splitlines() == ["error: 1 file(s) under deploy differ from the spec; run shipmate render"]
    assert out.startswith("--- a/prod.yaml\n+++ b/prod.yaml\n@@ ")
    removed = [line for line in out.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line for line in out.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert len(removed) == 1
    assert [line[1:].replace("1", "0") for line in removed] == [line[1:] for line in added]
    assert prod.read_text() != rendered, "--check repaired the file"

    code, out, _ = cli("--output", "json", "render", "--check", "--out", "deploy")
    assert code == 1
    assert json.loads(out) == {"clean": False, "changed": ["prod.yaml"], "missing": [], "stale": []}

    assert cli("render", "--out", "deploy")[0] == 0
    assert prod.read_text() == rendered

    # Rendering fewer environments leaves files an earlier render wrote: --check calls them stale.
    code, out, err = cli("render", "--env", "prod", "--check", "--out", "deploy")
    assert (code, out) == (1, "")
    assert err.splitlines() == ["stale: deploy/dev.yaml is no longer rendered",
                                "stale: deploy/staging.yaml is no longer rendered",
                                "error: 2 file(s) under deploy differ from the spec; run shipmate render"]
    code, _, err = cli("render", "--env", "prod", "--out", "deploy")
    assert code == 0
    assert err.splitlines() == ["rendered manifests for prod: 1 files under deploy (0 written, 2 removed)"]
    assert tree(workdir / "deploy") == {"prod.yaml", MARKER}


def test_render_never_leaves_a_half_written_file(cli: Cli, project: Path, workdir: Path) -> None:
    out_dir = workdir / "deploy"
    assert cli("render", "--out", "deploy")[0] == 0
    before = {name: (out_dir / name).read_text() for name in tree(out_dir)}
    (out_dir / "prod.yaml").write_text("half")
    assert cli("render", "--out", "deploy")[0] == 0
    assert {name: (out_dir / name).read_text() for name in tree(out_dir)} == before

    # A write that cannot land (a folder where the file goes) fails alone: its temporary file is
    # removed, and every other file holds either its old text or its new text, never a part.
    (out_dir / "staging.yaml").unlink()
    (out_dir / "staging.yaml").mkdir()
    project.write_text(project.read_text().replace("LOG_LEVEL: info", "LOG_LEVEL: debug"))
    code, out, err = cli("render", "--out", "deploy")
    assert code != 0
    assert out == ""
    assert len([line for line in err.splitlines() if line.startswith("error: ")]) == 1
    assert tree(out_dir) == set(before) - {"staging.yaml"}
    assert not [p for p in out_dir.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".prod.yaml.")]
    after = build(build_kit(load_file(project)), ["manifests"])
    assert after["prod.yaml"] != before["prod.yaml"]
    for name in tree(out_dir):
        assert (out_dir / name).read_text() in (before[name], after.get(name)), name


# --- errors and options ---------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "expected"), [
    (("validate",), ["error: shipmate.yaml: no such file; create one with `shipmate init` or pass -f PATH"]),
    (("-f", "nope.yaml", "plan", "--env", "prod"),
     ["error: nope.yaml: no such file; create one with `shipmate init` or pass -f PATH"]),
    (("render", "--out", "x"),
     ["error: shipmate.yaml: no such file; create one with `shipmate init` or pass -f PATH"]),
])
def test_a_missing_spec_is_one_error_line_and_exit_2(cli: Cli, argv: tuple[str, ...], expected: list[str]) -> None:
    code, out, err = cli(*argv)
    assert (code, out) == (2, "")
    assert err.splitlines() == expected


@pytest.mark.parametrize(("argv", "expected"), [
    (("plan", "--env", "qa"),
     ["error: environments: no environment 'qa' in the spec; declared: dev, prod, staging"]),
    (("render", "--env", "qa", "--out", "x"),
     ["error: environments: no environment 'qa' in the spec; declared: dev, prod, staging"]),
    (("render", "--format", "kubernetes"),
     [f"error: Invalid value for '--format': 'kubernetes' is not one of "
      f"{', '.join(repr(f) for f in [*FORMATS, 'all'])}.", "try: shipmate render --help"]),
    (("validate", "--strict"), ["error: No such option '--strict'.", "try: shipmate validate --help"]),
    (("--output", "yaml", "validate"),
     ["error: Invalid value for '--output' / '-o': 'yaml' is not one of 'text', 'json'.", "try: shipmate --help"]),
    (("plan",), ["error: Missing option '--env' / '-e'.", "try: shipmate plan --help"]),
    (("launch",), ["error: No such command 'launch'.", "try: shipmate --help"]),
])
def test_bad_input_is_one_error_line_and_exit_2(cli: Cli, project: Path, workdir: Path,
                                                argv: tuple[str, ...], expected: list[str]) -> None:
    code, out, err = cli(*argv)
    assert (code, out) == (2, "")
    assert err.splitlines() == expected
    assert [line for line in err.splitlines() if line.startswith("error:")] == expected[:1]
    assert tree(workdir) == {"shipmate.yaml"}


def test_a_spec_error_names_file_line_and_key(cli: Cli, project: Path) -> None:
    project.write_text(project.read_text().replace("    replicas: 2\n", "    replicas: -1\n"))
    line = next(i for i, text in enumerate(project.read_text().splitlines(), 1) if "replicas: -1" in text)
    code, out, err = cli("validate")
    assert (code, out) == (2, "")
    (only,) = err.splitlines()
    assert only.startswith(f"error: shipmate.yaml:{line}:5: services.api.replicas: ")
    assert "0" in only.rpartition(": ")[2]


def test_no_color_writes_no_escape_codes(cli: Cli, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    for argv in (("validate",), ("plan", "--env", "prod"), ("render", "--out", "d"),
                 ("render", "--out", "d", "--check"), ("plan", "--env", "qa"), ("--help",), ("plan", "--help")):
        code, out, err = cli("--no-color", *argv)
        assert code in (0, 2)
        assert "\x1b" not in out + err, argv
    monkeypatch.setenv("SHIPMATE_NO_COLOR", "1")
    code, out, err = cli("plan", "--env", "prod")
    assert code == 0
    assert "\x1b" not in out + err


def test_schema_prints_json_schema(cli: Cli, workdir: Path) -> None:
    code, out, err = cli("schema")
    assert (code, err) == (0, "")
    schema = json.loads(out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert {"app", "services", "environments"} <= set(schema["properties"])

    code, out, err = cli("schema", "--out", "schema.json")
    assert (code, out) == (0, "")
    assert err.splitlines() == ["wrote schema.json"]
    assert json.loads((workdir / "schema.json").read_text()) == schema


def test_schema_accepts_the_starter_spec_and_every_example(cli: Cli, project: Path) -> None:
    """An editor pointed at `shipmate schema` must not flag a spec that shipmate itself accepts."""
    _, out, _ = cli("schema")
    validator = jsonschema.Draft202012Validator(json.loads(out))
    specs = [project, *(EXAMPLES_DIR / name / "shipmate.yaml" for name in EXAMPLES)]
    problems = [f"{spec.parent.name}: {e.json_path}: {e.message}" for spec in specs
                for e in validator.iter_errors(yaml.safe_load(spec.read_text()))]
    assert problems == []


def test_version_and_help(cli: Cli) -> None:
    code, out, _ = cli("--version")
    assert (code, out) == (0, "shipmate, version 0.1.0\n")
    code, out, _ = cli("--help")
    assert code == 0
    for command in ("init", "validate", "schema", "plan", "render"):
        assert f"  {command} " in out
    assert "SHIPMATE_FILE" in out


# --- every example through the CLI ----------------------------------------------------------

@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_validates_and_renders_every_format(cli: Cli, workdir: Path, example: str) -> None:
    spec = EXAMPLES_DIR / example / "shipmate.yaml"
    code, out, err = cli("-f", str(spec), "validate")
    assert (code, err) == (0, "")
    assert out.splitlines() == [validate_line(spec, str(spec))]
    code, out, err = cli("-f", str(spec), "render", "--format", "all", "--out", "kit")
    assert code == 0, err
    assert cli("-f", str(spec), "render", "--format", "all", "--out", "kit", "--check")[0] == 0


# --- the installed console script -----------------------------------------------------------

def test_console_script_runs_in_a_real_process(workdir: Path) -> None:
    script = shutil.which("shipmate", path=str(Path(sys.executable).parent))
    assert script is not None, "the shipmate console script is not installed next to this Python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPMATE_")}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([script, *argv], cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=60, check=False)

    missing = run("validate")
    assert (missing.returncode, missing.stdout) == (2, "")
    assert missing.stderr.splitlines() == [
        "error: shipmate.yaml: no such file; create one with `shipmate init` or pass -f PATH"]
    assert run("init", "--name", APP).returncode == 0
    done = run("--no-color", "validate")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [validate_line(workdir / "shipmate.yaml", "shipmate.yaml")]
    rendered = run("render", "--out", "deploy")
    assert rendered.returncode == 0
    assert tree(workdir / "deploy") == {f"{env}.yaml" for env in ENVS} | {MARKER}
    (workdir / "deploy" / "dev.yaml").write_text("edited\n")
    check = run("render", "--out", "deploy", "--check")
    assert check.returncode == 1
    assert check.stdout.startswith("--- a/dev.yaml\n+++ b/dev.yaml\n")


def test_output_json_may_follow_the_command(cli: Cli, project: Path) -> None:
    for argv in (("plan", "--env", "prod", "--output", "json"), ("validate", "-o", "json")):
        code, out, err = cli(*argv)
        assert (code, err) == (0, "")
        assert isinstance(json.loads(out), dict)


def test_an_output_path_that_cannot_be_written_is_bad_input(cli: Cli, project: Path, workdir: Path) -> None:
    (workdir / "deploy" / "prod.yaml").mkdir(parents=True)
    code, out, err = cli("render", "--out", "deploy")
    assert (code, out) == (2, "")
    assert err == "error: deploy/prod.yaml: cannot write the rendered files: Is a directory; choose another --out\n"
    assert not list(workdir.glob("shipmate-crash-*"))
