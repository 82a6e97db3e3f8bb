"""Deterministic YAML and JSON text for rendered output.

Called by every output format. Keys are sorted (which also puts apiVersion, kind, metadata, spec
in the usual order), multi-line strings are written as literal blocks, and nothing depends on
the order of insertion, so the same objects always give the same bytes. Pure.

`dump` is shipmate's own emitter for plain data (dicts, lists, strings, numbers, booleans,
null): rendering writes megabytes of YAML, and a generic emitter spends most of its time deciding
styles. A string is written plain only when no YAML 1.1 or 1.2 reader could take it for anything
but that string; otherwise it is double-quoted (JSON's escapes are YAML's). `dump_pyyaml` is the
general emitter, kept for the one string that must match what Helm's toYaml writes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import yaml

_BASE: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_BASE):  # type: ignore[misc]
    """Safe dumper with literal blocks for multi-line strings and no aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value and not any(line != line.rstrip() for line in value.splitlines()):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def dump_pyyaml(obj: Any) -> str:
    """One YAML document, written by PyYAML (slower; its exact style)."""
    text: str = yaml.dump(obj, Dumper=_Dumper, sort_keys=True, default_flow_style=False,
                          allow_unicode=True, width=10_000, indent=2)
    return text


# Plain only: starts with a letter, '_' or '/', then letters, digits and a few safe marks, with
# single inner spaces; never `: ` or ` #`; a trailing ':' is not allowed.
_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./@%+=()~^$&*!?<>'\"\\|-]*(?:[ :][A-Za-z0-9_./@%+=()~^$&*!?<>'\"\\|-]+)*")
# Words a YAML 1.1 reader (Go's, PyYAML's) resolves to booleans or null, in any case.
_RESERVED = frozenset({"y", "yes", "n", "no", "true", "false", "on", "off", "null", "nan", "inf"})
_UNSAFE_CHARS = re.compile("[\x7f-\x9f\ud800-\udfff\ufeff\ufffe\uffff]")


@lru_cache(maxsize=65536)
def _scalar_text(value: str) -> str:
    if (_PLAIN.fullmatch(value) and value.lower() not in _RESERVED and ": " not in value
            and " #" not in value and not value.startswith(("!", "&", "*", "|", ">", "%", "@", "`", "'", '"'))
            and "<<" not in value):
        return value
    # JSON's escapes are YAML's, except that YAML needs the non-printable characters escaped too
    return _UNSAFE_CHARS.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, ensure_ascii=False))


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return _scalar_text(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        return text.replace("e", ".0e") if "e" in text and "." not in text else text
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _literal(value: str) -> bool:
    """A multi-line string that a literal block keeps exactly (one final newline or none)."""
    if "\n" not in value or value.startswith((" ", "\n")) or value.endswith("\n\n"):
        return False
    if "\r" in value or "\t" in value or _UNSAFE_CHARS.search(value):
        return False
    return not any(line != line.rstrip() or (line and ord(min(line)) < 32) for line in value.split("\n"))


def _block(value: Any, pad: str, out: list[str], ordered: bool = True) -> None:
    """Append the lines of a non-empty dict or list at indentation `pad` (keys sorted when
    `ordered`, else in the dict's own order)."""
    if isinstance(value, dict):
        for key in (sorted(value) if ordered else value):
            item = value[key]
            head = f"{pad}{_scalar_text(key) if isinstance(key, str) else _scalar(key)}:"
            if isinstance(item, dict) and item:
                out.append(head + "\n")
                _block(item, pad + "  ", out, ordered)
            elif isinstance(item, list) and item:
                out.append(head + "\n")
                _block(item, pad, out, ordered)
            else:
                out.append(f"{head} {_inline(item, pad)}\n")
        return
    for item in value:
        if (isinstance(item, dict | list)) and item:
            start = len(out)
            _block(item, pad + "  ", out, ordered)
            out[start] = pad + "- " + out[start][len(pad) + 2:]
        else:
            out.append(f"{pad}- {_inline(item, pad + '  ')}\n")


def _inline(value: Any, pad: str) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    if isinstance(value, str) and _literal(value):
        body = value[:-1] if value.endswith("\n") else value
        indent = pad + "  "
        lines = "\n".join(indent + line if line else "" for line in body.split("\n"))
        return ("|\n" if value.endswith("\n") else "|-\n") + lines
    return _scalar(value)


def dump(obj: Any, *, sort_keys: bool = True) -> str:
    """One YAML document; keys sorted unless `sort_keys` is false (a workflow reads top-down)."""
    if isinstance(obj, dict | list) and obj:
        out: list[str] = []
        _block(obj, "", out, sort_keys)
        return "".join(out)
    return _inline(obj, "") + "\n"


def dump_all(objects: Iterable[Any]) -> str:
    """A multi-document YAML stream, each document started with `---`."""
    return "".join("---\n" + dump(o) for o in objects)


def dump_json(obj: Any) -> str:
    """Indented JSON with sorted keys and a final newline."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
