"""YAML text -> plain data plus the position of every key and value, and `${VAR}` interpolation.

Called by `shipmate.spec.loader`. Pure: takes text and an environment mapping, reads no file.
PyYAML's composer gives nodes with marks; we build the data ourselves so that every path
(`("services", "api", "replicas")`) has a line and column, duplicate keys are refused (YAML
parsers silently keep the last), and interpolation errors point at the scalar.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from shipmate.errors import Location, SpecError

Path = tuple[str | int, ...]

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_VAR = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\$\{|\$\{[^}]*\}?")


@dataclass
class Document:
    """Data read from one YAML document and where each part of it stands."""

    file: str
    data: Any
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Path) -> Location:
        """The nearest known position of `path`, walking up to its parents."""
        probe = tuple(path)
        while True:
            pos = self.positions.get(probe)
            if pos is not None:
                return Location(self.file, pos[0], pos[1])
            if not probe:
                return Location(self.file)
            probe = probe[:-1]


def format_path(path: Path) -> str:
    """`("services", "api", "ports", 0, "port")` -> `services.api.ports[0].port`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def parse(text: str, file: str, env: Mapping[str, str]) -> Document:
    """Parse one YAML document, interpolate `${VAR}` and `${VAR:-default}` from `env`.

    `$${...}` stands for a literal `${...}`. Raises SpecError with file:line:col.
    """
    try:
        nodes = list(yaml.compose_all(text, Loader=_LOADER))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(f"invalid YAML: {problem}", location=Location(file, line, col)) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", location=Location(file)) from None
    nodes = [n for n in nodes if n is not None]
    if not nodes:
        raise SpecError("the file is empty; start from `shipmate init`", location=Location(file, 1, 1))
    if len(nodes) > 1:
        start = nodes[1].start_mark
        raise SpecError("one YAML document per file, found a second one",
                        location=Location(file, start.line + 1, start.column + 1))
    doc = Document(file=file, data=None)
    doc.data = _build(nodes[0], (), doc, env)
    return doc


def _build(node: yaml.Node, path: Path, doc: Document, env: Mapping[str, str]) -> Any:
    doc.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _at(doc, key_node, path, "YAML merge keys (<<) are not supported; write the keys out")
            if not isinstance(key_node, yaml.ScalarNode):
                raise _at(doc, key_node, path, "a key must be a plain string")
            key = str(key_node.value)
            if key in out:
                raise _at(doc, key_node, (*path, key),
                          f"duplicate key {key!r}; each key may appear once in a mapping")
            child = (*path, key)
            doc.positions[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _build(value_node, child, doc, env)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), doc, env) for i, item in enumerate(node.value)]
    value = _LOADER("").construct_object(node) if node.tag != "tag:yaml.org,2002:str" else node.value
    if isinstance(value, str) and "$" in value:
        value = _interpolate(value, node, path, doc, env)
    return value


def _interpolate(text: str, node: yaml.Node, path: Path, doc: Document, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole == "$${":
            return "${"
        name = match.group(2)
        if name is None:
            raise _at(doc, node, path, f"{whole!r} is not a variable reference; write ${{NAME}} "
                      "or ${NAME:-default}, or $${ for a literal")
        if match.group(1):
            return whole[1:]
        if name in env:
            return env[name]
        default = match.group(3)
        if default is not None:
            return default
        raise _at(doc, node, path, f"environment variable {name} is not set; export it, or write "
                  f"${{{name}:-default}}")

    return _VAR.sub(replace, text)


def _at(doc: Document, node: yaml.Node, path: Path, message: str) -> SpecError:
    loc = Location(doc.file, node.start_mark.line + 1, node.start_mark.column + 1)
    return SpecError(message, location=loc, path=format_path(path))


def merge(base: Any, over: Any) -> Any:
    """Deep-merge `over` into `base`: mappings merge key by key, anything else (lists
    included) replaces, and `null` deletes the key. Neither input is changed.
    """
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out
    return over
