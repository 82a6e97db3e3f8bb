"""Shared test helpers: the example specs and their rendered kits. Import as `from tests.support import ...`."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from shipmate.render.kit import Kit, build_kit
from shipmate.spec.loader import LoadedSpec, load_file

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "examples"
SHARED = ROOT.parent / "shared"
EXAMPLES = sorted(p.parent.name for p in EXAMPLES_DIR.glob("*/shipmate.yaml"))


@cache
def example_spec(name: str) -> LoadedSpec:
    """The loaded spec of one example (cached: specs are immutable)."""
    return load_file(EXAMPLES_DIR / name / "shipmate.yaml", env={})


@cache
def example_kit(name: str) -> Kit:
    """Every environment of one example, planned and rendered (cached)."""
    return build_kit(example_spec(name))


def example_envs() -> list[tuple[str, str]]:
    """(example, environment) for every environment of every example."""
    return [(name, env) for name in EXAMPLES for env in example_spec(name).base.environments]
