"""A new release from a spec: `--set` overrides, `--version`, the plan, the rendered objects. Pure.

Called by `deploy` (and by `up`, which records the first release of an environment). The caller
brings what needs I/O: the loaded spec, the time, who deploys, the git commit.

`--set PATH=VALUE` changes one value of the environment's effective spec for this release, like
Helm's `--set`: PATH is dotted (`services.api-server.config.FAULT_RATE`), VALUE is read as a YAML
scalar (`3` is a number, `true` a boolean, `null` deletes the key), and the result is validated
again, so a wrong path or value is a located error. `--version V` is the version of the services
being shipped: the app's version, hence every service's image tag (unless a service pins its own)
and the `APP_VERSION` of its processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import ValidationError

from shipmate.errors import UsageError
from shipmate.plan.plan import resolve
from shipmate.release.models import Release
from shipmate.render.objects import render
from shipmate.spec.models import AppSpec


def parse_set(text: str) -> tuple[str, str]:
    """`PATH=VALUE` -> (path, value text); UsageError when malformed."""
    path, sep, value = text.partition("=")
    if not sep or not path or any(not part for part in path.split(".")):
        raise UsageError(f"--set {text!r}: expected PATH=VALUE with a dotted PATH, e.g. "
                         "services.api-server.config.FAULT_RATE=0.1")
    return path, value


def apply_sets(spec: AppSpec, sets: Sequence[tuple[str, str]]) -> AppSpec:
    """The spec with each (path, value) applied in order and validated again."""
    if not sets:
        return spec
    data: dict[str, Any] = spec.model_dump(by_alias=True, exclude_unset=True, mode="json")
    for path, text in sets:
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        keys = path.split(".")
        node: Any = data
        for i, key in enumerate(keys[:-1]):
            if not isinstance(node, dict):
                raise UsageError(f"--set {path}: {'.'.join(keys[:i])} is not a map")
            node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise UsageError(f"--set {path}: {'.'.join(keys[:-1])} is not a map")
        if value is None:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    try:
        return AppSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"--set: {where}: {first['msg']}") from None


def build(spec: AppSpec, environment: str, *, number: int, created_at: float, spec_digest: str, message: str,
          author: str, git_commit: str | None, sets: Sequence[tuple[str, str]] = (),
          version: str | None = None) -> Release:
    """Release `number` of `environment` from its effective `spec`."""
    all_sets = [*sets, *([("app.version", version)] if version else [])]
    effective = apply_sets(spec, all_sets)
    plan = resolve(effective, environment)
    objects = tuple(render(plan))
    return Release(
        number=number, environment=environment, created_at=created_at, spec_digest=spec_digest, plan=plan,
        versions=tuple((w.name, w.tag) for w in plan.workloads),
        secret_versions=tuple((s.name, 1) for s in plan.secrets),
        objects=objects, message=message, author=author, git_commit=git_commit,
        overrides=tuple((p, v) for p, v in all_sets),
    )
