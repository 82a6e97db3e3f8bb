"""Loading a shipmate.yaml: text -> validated `AppSpec` for the base and for every environment.

Called by the CLI and by anything that needs a spec. `load_text` is pure; `load_file` is the one
function here that reads the file system. Every problem becomes one `SpecError` line:
`shipmate.yaml:12:5: services.api.replicas: Input should be greater than or equal to 0`.
Environment overrides are merged into the raw data (documented in README: mappings merge,
lists and scalars replace, null deletes) and the result is validated again, so an override that
breaks the spec is reported at the override's own line.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from pydantic import ValidationError

from shipmate.errors import SpecError
from shipmate.spec.document import Document, Path, format_path, merge, parse
from shipmate.spec.models import AppSpec

DEFAULT_FILE = "shipmate.yaml"


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec: the base, the effective spec of every environment, and its digest."""

    file: str
    base: AppSpec
    environments: Mapping[str, AppSpec]
    digest: str

    def for_env(self, env: str) -> AppSpec:
        try:
            return self.environments[env]
        except KeyError:
            known = ", ".join(sorted(self.environments))
            raise SpecError(f"no environment {env!r} in the spec; declared: {known}",
                            path="environments") from None


def load_file(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> LoadedSpec:
    """Read and validate a spec file; `env` defaults to the process environment."""
    file = os.fspath(path)
    try:
        raw = FsPath(file).read_bytes()
    except FileNotFoundError:
        raise SpecError("no such file; create one with `shipmate init` or pass -f PATH",
                        path="") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise SpecError(f"cannot read {file}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    return load_text(text, file, os.environ if env is None else env)


def load_text(text: str, file: str = DEFAULT_FILE, env: Mapping[str, str] | None = None) -> LoadedSpec:
    """Parse and validate spec text. Pure."""
    doc = parse(text, file, env or {})
    if not isinstance(doc.data, dict):
        raise SpecError("the spec must be a mapping with app, services and environments",
                        location=doc.locate(()))
    base = _validate(doc.data, doc, None)
    environments: dict[str, AppSpec] = {}
    for name, environment in base.environments.items():
        overrides = environment.overrides
        if not overrides:
            environments[name] = base
            continue
        prefix: Path = ("environments", name, "overrides")
        if "environments" in overrides or "version" in overrides:
            key = "environments" if "environments" in overrides else "version"
            raise SpecError(f"an environment cannot override {key!r}", location=doc.locate((*prefix, key)),
                            path=format_path((*prefix, key)))
        merged = merge(doc.data, overrides)
        environments[name] = _validate(merged, doc, prefix)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return LoadedSpec(file=file, base=base, environments=environments, digest=digest)


def _validate(data: dict[str, Any], doc: Document, override_prefix: Path | None) -> AppSpec:
    try:
        return AppSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, data, doc, override_prefix) from None


def validation_error(exc: ValidationError, data: Any, doc: Document, override_prefix: Path | None = None) -> SpecError:
    """One located SpecError for the first problem of a pydantic validation error on `data`,
    which was read from `doc` (with an environment's overrides merged in, when `override_prefix`)."""
    error = exc.errors(include_url=False)[0]
    ctx = error.get("ctx") or {}
    loc: tuple[Any, ...] = tuple(error["loc"])
    if error["type"] == "reference" and "loc" in ctx:
        loc = tuple(ctx["loc"])
    elif error["type"] == "reference" and "rel" in ctx:
        loc = (*_key_path(data, loc), *ctx["rel"])
    path = _key_path(data, loc)
    if error["type"] == "unknown_key":
        path = (*path, ctx["key"])
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if error["type"] == "missing":
        parent = _key_path(data, loc[:-1])
        message = f"required key {loc[-1]!r} is missing; add it"
        return SpecError(message, location=doc.locate(_file_path(parent, data, doc, override_prefix)),
                         path=format_path(parent))
    file_path = _file_path(path, data, doc, override_prefix)
    shown = format_path(file_path if override_prefix and file_path[: len(override_prefix)] == override_prefix
                        else path)
    if override_prefix is not None and file_path[: len(override_prefix)] != override_prefix:
        message += f" (in environment {override_prefix[1]!r}, after its overrides)"
    elif override_prefix is not None:
        message += _new_name_hint(doc, override_prefix, path)
    return SpecError(message, location=doc.locate(file_path), path=shown)


def _new_name_hint(doc: Document, override_prefix: Path, path: Path) -> str:
    """When an override adds a service or addon the base does not have, and that is where the
    error is, say which declared name it may have meant."""
    if len(path) < 2 or path[0] not in ("services", "addons") or not isinstance(doc.data, dict):
        return ""
    declared = doc.data.get(path[0])
    if not isinstance(declared, dict) or path[1] in declared:
        return ""
    close = difflib.get_close_matches(str(path[1]), sorted(declared), n=1, cutoff=0.6)
    what = "service" if path[0] == "services" else "addon"
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f" ({path[1]!r} is a new {what} that only this environment adds{hint})"


def _key_path(data: Any, loc: tuple[Any, ...]) -> Path:
    """Keep only the parts of a pydantic location that are real keys or indexes of the data
    (pydantic adds union members and validator names)."""
    out: list[str | int] = []
    node = data
    for part in loc:
        is_key = isinstance(node, dict) and isinstance(part, str) and part in node
        is_index = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if is_key or is_index:
            out.append(part)
            node = node[part]
    return tuple(out)


def _file_path(path: Path, data: Any, doc: Document, override_prefix: Path | None) -> Path:
    """Where in the file a merged path came from: the override when it set it, else the base."""
    if override_prefix is None:
        return path
    overrides: Any = doc.data
    for part in override_prefix:
        overrides = overrides[part]
    node = overrides
    depth = 0
    for part in path:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
            depth += 1
        else:
            break
    if depth and (depth == len(path) or not isinstance(node, dict | list)):
        return (*override_prefix, *path[:depth])
    del data
    return path
