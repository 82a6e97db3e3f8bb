"""What changed between two releases: versions, images, config, secret versions, rendered objects.

Called by `shipmate diff N M` and `history` (through `format_diff`), and by the release engine to
find the services a new release changes (`changed_services`). Pure: this module must not do I/O.

Secret values never leave this module: in a `Secret` object every value under `data` or
`stringData` becomes "***" (a change there reads "changed"), as does the value of an override
given for a path under `secrets.`. Config values are shown: config is not secret.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from shipmate.errors import truncate
from shipmate.release.models import Release

ChangeKind = Literal[
    "version", "image", "replicas", "command", "config", "config-file", "strategy", "secret-version",
    "override", "service-added", "service-removed", "object-added", "object-removed", "object-changed",
]
MASK = "***"
_SECRET_FIELDS = frozenset({"data", "stringData"})
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_MISSING: Any = object()


@dataclass(frozen=True)
class Change:
    """One difference. `before` None: added; `after` None: removed. Values are already masked."""

    kind: ChangeKind
    path: str
    before: Any
    after: Any


def diff_releases(a: Release, b: Release) -> list[Change]:
    """Every difference from release `a` to release `b`, services first, then secrets, then objects."""
    changes: list[Change] = []
    versions_a, versions_b = dict(a.versions), dict(b.versions)
    workloads_a = {w.name: w for w in a.plan.workloads}
    workloads_b = {w.name: w for w in b.plan.workloads}
    for name in _union(workloads_a, workloads_b):
        if name not in workloads_a:
            changes.append(Change("service-added", name, None, versions_b.get(name, workloads_b[name].tag)))
            continue
        if name not in workloads_b:
            changes.append(Change("service-removed", name, versions_a.get(name, workloads_a[name].tag), None))
            continue
        wa, wb = workloads_a[name], workloads_b[name]
        where = f"services.{name}"
        changes += _pair("version", name, versions_a.get(name), versions_b.get(name))
        changes += _pair("image", f"{where}.image", wa.image_ref, wb.image_ref)
        changes += _pair("replicas", f"{where}.replicas", wa.replicas, wb.replicas)
        for field in ("command", "args", "run"):
            before, after = getattr(wa, field), getattr(wb, field)
            changes += _pair("command", f"{where}.{field}", _listed(before), _listed(after))
        changes += _keyed("config", f"{where}.config", dict(wa.config), dict(wb.config))
        changes += _keyed("config-file", f"{where}.configFiles", dict(wa.config_files), dict(wb.config_files))
    changes += _pair("strategy", "strategy", a.plan.strategy.name, b.plan.strategy.name)
    changes += _keyed("secret-version", "secrets", dict(a.secret_versions), dict(b.secret_versions))
    overrides = [c if not c.path.startswith("secrets.") else
                 Change(c.kind, c.path, _mask(c.before), _mask(c.after))
                 for c in _keyed("override", "", dict(a.overrides), dict(b.overrides))]
    changes += overrides
    changes += diff_objects(a.objects, b.objects)
    return changes


def diff_objects(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> list[Change]:
    """Objects matched by (apiVersion, kind, namespace, name): added, then changed field by field, in
    `b`'s order, then removed. A changed field's path reads `Deployment/api: spec.replicas`."""
    objects_a = {_key(o): o for o in a}
    objects_b = {_key(o): o for o in b}
    labels = _labels([*objects_a, *objects_b])
    changes: list[Change] = []
    for key, obj in objects_b.items():
        if key not in objects_a:
            changes.append(Change("object-added", labels[key], None, None))
            continue
        secret = obj.get("kind") == "Secret"
        for path, before, after in _walk(objects_a[key], obj, ""):
            if secret and _root(path) in _SECRET_FIELDS:
                before, after = _mask(before), _mask(after)
            changes.append(Change("object-changed", f"{labels[key]}: {path}", before, after))
    changes += [Change("object-removed", labels[key], None, None) for key in objects_a if key not in objects_b]
    return changes


def format_diff(changes: Sequence[Change]) -> list[str]:
    """One line per change: `+` added, `-` removed, `~` changed; masked values read "changed"."""
    lines: list[str] = []
    for c in changes:
        kind: str = "object" if c.kind.startswith("object-") else c.kind
        if c.kind in ("object-added", "object-removed", "service-added", "service-removed"):
            sign = "+" if c.kind.endswith("added") else "-"
            kind = c.kind.split("-")[0]
            shown = c.after if sign == "+" else c.before
            lines.append(f"{sign} {kind:<15} {c.path}" + (f": {_show(shown)}" if shown is not None else ""))
            continue
        if c.before is None:
            lines.append(f"+ {kind:<15} {c.path}: {_show(c.after)}")
        elif c.after is None:
            lines.append(f"- {kind:<15} {c.path}: {_show(c.before)}")
        elif c.before == MASK and c.after == MASK:
            lines.append(f"~ {kind:<15} {c.path}: changed")
        else:
            lines.append(f"~ {kind:<15} {c.path}: {_show(c.before)} -> {_show(c.after)}")
    return lines


def changed_services(before: Release | None, after: Release) -> tuple[str, ...]:
    """The services of `after` whose workload or version differ from `before` (all of them when
    there is no `before`), in plan order: the ones a rollout has to move."""
    if before is None:
        return after.services
    old = {w.name: w for w in before.plan.workloads}
    old_versions = dict(before.versions)
    new_versions = dict(after.versions)
    return tuple(w.name for w in after.plan.workloads
                 if old.get(w.name) != w or old_versions.get(w.name) != new_versions.get(w.name))


def removed_services(before: Release | None, after: Release) -> tuple[str, ...]:
    """The services of `before` that `after` no longer has: to be drained and stopped."""
    if before is None:
        return ()
    kept = set(after.services)
    return tuple(name for name in before.services if name not in kept)


def _pair(kind: ChangeKind, path: str, before: Any, after: Any) -> list[Change]:
    return [] if before == after else [Change(kind, path, before, after)]


def _keyed(kind: ChangeKind, prefix: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Change]:
    out = []
    for key in _union(a, b):
        before, after = a.get(key), b.get(key)
        if before != after:
            out.append(Change(kind, f"{prefix}.{key}" if prefix else key, before, after))
    return out


def _union(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return [*a, *(k for k in b if k not in a)]


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return (str(obj.get("apiVersion", "")), str(obj.get("kind", "")), str(meta.get("namespace") or ""),
            str(meta.get("name", "")))


def _labels(keys: Sequence[tuple[str, str, str, str]]) -> dict[tuple[str, str, str, str], str]:
    """`Kind/name`, or longer where that is ambiguous: `Kind/namespace/name`, then with the apiVersion."""
    unique = list(dict.fromkeys(keys))

    def form(key: tuple[str, str, str, str], level: int) -> str:
        api_version, kind, namespace, name = key
        return (f"{kind}/{name}", f"{kind}/{namespace}/{name}", f"{api_version} {kind}/{namespace}/{name}")[level]

    labels: dict[tuple[str, str, str, str], str] = {}
    for key in unique:
        level = 0
        while level < 2 and sum(form(other, level) == form(key, level) for other in unique) > 1:
            level += 1
        labels[key] = form(key, level)
    return labels


def _walk(a: Any, b: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """(path, before, after) of each differing leaf; a subtree only on one side is one change."""
    if a == b:
        return
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in _union(a, b):
            yield from _walk(a.get(key, _MISSING), b.get(key, _MISSING), _join(path, key))
    elif isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            yield from _walk(a[i] if i < len(a) else _MISSING, b[i] if i < len(b) else _MISSING, f"{path}[{i}]")
    else:
        yield path, None if a is _MISSING else a, None if b is _MISSING else b


def _join(path: str, key: Any) -> str:
    text = str(key)
    if _PLAIN_KEY.match(text):
        return f"{path}.{text}" if path else text
    return f"{path}[{json.dumps(text, ensure_ascii=False)}]"


def _root(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def _mask(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return MASK


def _show(value: Any) -> str:
    plain = isinstance(value, str) and value and value.strip() == value
    text = value if plain else json.dumps(value, ensure_ascii=False)
    return truncate(text.replace("\n", "\\n"), 80)
