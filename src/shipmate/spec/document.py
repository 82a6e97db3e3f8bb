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
    values: int = 0

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
        _check_depth(text, file)
        nodes = list(yaml.compose_all(text, Loader=_LOADER))
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, text, file) from None
    except yaml.reader.ReaderError as exc:
        line, col = _byte_position(text, exc.position)
        raise SpecError(f"invalid YAML: unacceptable character #x{exc.character:04x}: {exc.reason}",
                        location=Location(file, line, col)) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {' '.join(str(exc).split())}", location=Location(file)) from None
    except UnicodeError:
        raise SpecError("not valid Unicode text (a lone surrogate?)", location=Location(file)) from None
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


MAX_DEPTH = 64
MAX_VALUES = 200_000


def _check_depth(text: str, file: str) -> None:
    """Refuse deeply nested collections before composing: the composer and `_build` recurse,
    and libyaml's composer overflows the C stack (a segfault) on tens of thousands of levels."""
    depth = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
                raise SpecError(f"collections nested more than {MAX_DEPTH} deep; a spec needs far fewer levels",
                                location=Location(file, line, col))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


# Errors about something left open (a quote, a bracket) are reported where it was opened.
_OPENED = ("while scanning a quoted scalar", "while parsing a flow sequence", "while parsing a flow mapping")


def _syntax_error(exc: yaml.MarkedYAMLError, text: str, file: str) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "invalid YAML"
    if exc.context in _OPENED and exc.context_mark is not None:
        mark = exc.context_mark
        problem = f"{problem} {exc.context} that starts here"
    elif mark is not None and _char_at(text, mark.line, mark.column) == "\t":
        problem = f"{problem} (a tab: indent with spaces, YAML does not allow tabs)"
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
    return SpecError(f"invalid YAML: {problem}", location=Location(file, line, col))


def _char_at(text: str, line: int, column: int) -> str:
    lines = text.split("\n")
    if 0 <= line < len(lines) and 0 <= column < len(lines[line]):
        return lines[line][column]
    return ""


def _byte_position(text: str, position: int) -> tuple[int, int]:
    """1-based line and column of a reader error (libyaml counts UTF-8 bytes, PyYAML characters)."""
    if _LOADER is not yaml.SafeLoader:
        before = text.encode("utf-8", "surrogatepass")[:position].decode("utf-8", "replace")
    else:
        before = text[:position]
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


def _build(node: yaml.Node, path: Path, doc: Document, env: Mapping[str, str],
           open_nodes: frozenset[int] = frozenset()) -> Any:
    doc.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    doc.values += 1
    if doc.values > MAX_VALUES:
        raise SpecError(f"the spec expands to more than {MAX_VALUES} values (YAML aliases repeating aliases?); "
                        "write it out plainly", location=doc.locate(path), path=format_path(path))
    if isinstance(node, yaml.CollectionNode):
        if id(node) in open_nodes:
            raise SpecError("this YAML alias refers to a collection that contains it; write the value out",
                            location=doc.locate(path), path=format_path(path))
        open_nodes = open_nodes | {id(node)}
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
            out[key] = _build(value_node, child, doc, env, open_nodes)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), doc, env, open_nodes) for i, item in enumerate(node.value)]
    value = _scalar(node, path, doc)
    if isinstance(value, str) and "$" in value:
        value = _interpolate(value, node, path, doc, env)
    return value


# Timestamps stay text, as in YAML 1.2 and Kubernetes: `RELEASED: 2024-01-05` is a config string.
_TEXT_TAGS = ("tag:yaml.org,2002:str", "tag:yaml.org,2002:timestamp")


def _scalar(node: yaml.Node, path: Path, doc: Document) -> Any:
    if node.tag in _TEXT_TAGS:
        return node.value
    try:
        return _LOADER("").construct_object(node)
    except yaml.constructor.ConstructorError:
        raise _at(doc, node, path, f"unsupported YAML tag {node.tag!r}; write a plain value") from None
    except (ArithmeticError, LookupError, TypeError, ValueError) as exc:  # what PyYAML's constructors raise
        kind = node.tag.rsplit(":", 1)[-1]
        raise _at(doc, node, path, f"{node.value!r} is not a valid {kind} ({exc}); "
                  "quote it if it is meant as text") from None


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
        default = match.group(3)
        if name in env and (env[name] != "" or default is None):
            return env[name]  # like a shell, ${VAR:-default} takes the default when VAR is empty
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
