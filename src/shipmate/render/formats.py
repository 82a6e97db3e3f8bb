"""The output formats of `shipmate render`, by name, and the one function that builds them.

Each format is a module with `files(kit) -> {relative path: text}`; it is imported only when
asked for, so `shipmate render --format manifests` does not load the Helm or CI code. Pure.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from shipmate.errors import UsageError
from shipmate.render.kit import Kit

FORMATS: dict[str, str] = {
    "manifests": "shipmate.render.manifests",
    "helm": "shipmate.render.helm",
    "kustomize": "shipmate.render.kustomize",
    "argocd": "shipmate.render.argocd",
    "compose": "shipmate.render.compose",
    "github-actions": "shipmate.render.github_actions",
    "monitoring": "shipmate.render.monitoring_files",
}

FileBuilder = Callable[[Kit], dict[str, str]]


def builder(name: str) -> FileBuilder:
    """The `files` function of a format."""
    module = FORMATS.get(name)
    if module is None:
        raise UsageError(f"unknown format {name!r}; choose one of {', '.join(FORMATS)} or all")
    return cast(FileBuilder, importlib.import_module(module).files)


def build(kit: Kit, names: list[str]) -> dict[str, str]:
    """Files of the chosen formats. With one format its files are at the top; with several,
    each format's files are under a folder named after it."""
    if len(names) == 1:
        return dict(sorted(builder(names[0])(kit).items()))
    out: dict[str, str] = {}
    for name in names:
        for path, text in builder(name)(kit).items():
            out[f"{name}/{path}"] = text
    return dict(sorted(out.items()))
