"""Deterministic YAML and JSON text for rendered output.

Called by every output format. Keys are sorted (which also puts apiVersion, kind, metadata, spec
in the usual order), multi-line strings are written as literal blocks, and nothing depends on
the order of insertion, so the same objects always give the same bytes. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
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


def dump(obj: Any) -> str:
    """One YAML document."""
    text: str = yaml.dump(obj, Dumper=_Dumper, sort_keys=True, default_flow_style=False,
                          allow_unicode=True, width=10_000, indent=2)
    return text


def dump_all(objects: Iterable[Any]) -> str:
    """A multi-document YAML stream, each document started with `---`."""
    return "".join("---\n" + dump(o) for o in objects)


def dump_json(obj: Any) -> str:
    """Indented JSON with sorted keys and a final newline."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
